//! Runs one flow in direct mode: input → processors → every output, in the caller's task.
//!
//! Invariants:
//! - A message is reported delivered only after every output accepted it (or dropped it by a
//!   configured status class). Inputs ack on that report and on nothing else.
//! - At most `concurrency` messages are in flight per flow. [`Flow::try_admit`] lets a server
//!   input refuse (503) instead of queueing; [`Flow::admit`] lets a reading input wait.
//! - Fan-out delivers to all outputs concurrently; the message fails if any output fails for
//!   good (the caller retries, so the other outputs may see it twice: at-least-once).
//! - A message split into parts is delivered when every part is; a message taken into a group
//!   (`aggregate`) when the group's message is. Parts of one message run the rest of the
//!   pipeline concurrently, inside the message's one place in flight.
//! - A failed step marks the message failed and skips the steps after it up to a `catch`
//!   ([`Processor::catches`]); a message still failed at the end fails.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use ulid::Ulid;
use weft_store::Store;

use super::durable::DurableQueue;
use super::mapping::{empty_object, insert};
use super::metrics::{ComponentMetrics, FlowMetrics};
use super::retry::{Answer, Decision, Delivered, Fault, GaveUp, RetryPolicy, deliver};
use super::tap::Tap;
use super::{
    Attempt, Claim, Context, GroupOutcome, MappingError, Message, Now, Output, Processor, Step,
    StepError, Trail, Value,
};

pub struct ProcessorSlot<P> {
    pub id: String,
    pub processor: P,
    /// What the step made of the messages it was given, for the admin API and the dashboard.
    pub counts: StepCounts,
    /// How long it took, when it waited (an API call, a query): steps done in place are not
    /// timed.
    pub timings: super::timings::Timings,
}

impl<P> ProcessorSlot<P> {
    pub fn new(id: String, processor: P) -> Self {
        ProcessorSlot {
            id,
            processor,
            counts: StepCounts::default(),
            timings: Default::default(),
        }
    }
}

/// A step's outcomes since the flow started. A message that goes on as one costs one relaxed
/// add, the other outcomes one each; what went in is their sum, not a counter of its own.
#[derive(Default)]
pub struct StepCounts {
    passed: AtomicU64,
    split: AtomicU64,
    parts: AtomicU64,
    dropped: AtomicU64,
    grouped: AtomicU64,
    failed: AtomicU64,
}

/// A step's counts at one moment.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct StepTally {
    /// Messages the step finished with (those still inside it are not counted yet).
    pub entered: u64,
    /// Messages it handed on: one per message that went on, each part of a split one.
    pub emitted: u64,
    /// Messages it dropped on purpose (`filter`, `abort`, a `dedupe` repeat).
    pub dropped: u64,
    /// Messages it took into a group (`aggregate`).
    pub grouped: u64,
    pub failed: u64,
}

impl StepCounts {
    fn count(&self, outcome: &Result<Step, StepError>) {
        let (counter, by) = match outcome {
            Ok(Step::One(_)) => (&self.passed, 1),
            Ok(Step::Many(parts)) => {
                self.split.fetch_add(1, Ordering::Relaxed);
                (&self.parts, parts.len() as u64)
            }
            Ok(Step::Dropped) => (&self.dropped, 1),
            Ok(Step::Absorbed) => (&self.grouped, 1),
            // Waiting for the message that holds its key (or for the store) is no failure: it
            // is tried again.
            Err(StepError::Busy(_) | StepError::Unavailable(_)) => return,
            Err(_) => (&self.failed, 1),
        };
        counter.fetch_add(by, Ordering::Relaxed);
    }

    pub fn tally(&self) -> StepTally {
        let load = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let (passed, split, dropped, grouped, failed) = (
            load(&self.passed),
            load(&self.split),
            load(&self.dropped),
            load(&self.grouped),
            load(&self.failed),
        );
        StepTally {
            entered: passed + split + dropped + grouped + failed,
            emitted: passed + load(&self.parts),
            dropped,
            grouped,
            failed,
        }
    }
}

pub struct OutputSlot<O> {
    pub id: String,
    pub output: O,
    pub retry: RetryPolicy,
    pub metrics: ComponentMetrics,
    /// How long a delivery took: every attempt and wait of a direct one, the attempt of a
    /// durable one (with several outputs, the slowest's).
    pub timings: super::timings::Timings,
}

impl<O> OutputSlot<O> {
    pub fn new(id: String, output: O, retry: RetryPolicy, metrics: ComponentMetrics) -> Self {
        OutputSlot {
            id,
            output,
            retry,
            metrics,
            timings: Default::default(),
        }
    }
}

/// What became of a message.
#[derive(Debug)]
pub enum Processed {
    /// Every output accepted what the pipeline made of it: one message, its parts (`split`),
    /// or none when it was taken into a group whose message was delivered.
    Delivered(Vec<Message>),
    /// A processor dropped it on purpose.
    Filtered,
}

#[derive(Debug, thiserror::Error)]
pub enum FlowError {
    #[error("flow `{flow}`, {component}: {reason}")]
    Processing {
        flow: Arc<str>,
        component: String,
        reason: String,
        fault: Fault,
    },
    #[error("flow `{flow}`, {component}: {reason}")]
    Busy {
        flow: Arc<str>,
        component: String,
        reason: String,
        /// Waiting for the store, not for another message.
        store: bool,
    },
    #[error("flow `{flow}`, {component}: delivery failed: {reason}")]
    Delivery {
        flow: Arc<str>,
        component: String,
        reason: String,
        fault: Fault,
    },
}

impl FlowError {
    /// Where the message failed, as the dead-letter counter names it.
    pub fn stage(&self) -> &'static str {
        match self {
            FlowError::Processing { .. } | FlowError::Busy { .. } => "pipeline",
            FlowError::Delivery { .. } => "output",
        }
    }
}

/// What one durable delivery attempt of a whole message came to.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    Delivered,
    Retry {
        wait: Duration,
        reason: String,
        /// The retried output's last HTTP status, when it answered.
        status: Option<u16>,
    },
    Failed {
        reason: String,
        /// The failing output's last answer, when it got one.
        response: Option<Answer>,
    },
}

impl Verdict {
    /// The verdict of several messages that stand or fall together: a failure fails them all,
    /// else a retry retries them all after the longest wait.
    pub fn and(self, other: Verdict) -> Verdict {
        match (self, other) {
            (f @ Verdict::Failed { .. }, _) | (_, f @ Verdict::Failed { .. }) => f,
            (
                Verdict::Retry {
                    wait: a,
                    reason,
                    status,
                },
                Verdict::Retry { wait: b, .. },
            ) if a >= b => Verdict::Retry {
                wait: a,
                reason,
                status,
            },
            (Verdict::Retry { .. }, r @ Verdict::Retry { .. }) => r,
            (r @ Verdict::Retry { .. }, _) | (_, r @ Verdict::Retry { .. }) => r,
            (Verdict::Delivered, Verdict::Delivered) => Verdict::Delivered,
        }
    }

    pub fn group_outcome(&self) -> GroupOutcome {
        match self {
            Verdict::Delivered => GroupOutcome::Delivered,
            Verdict::Retry { wait, .. } => GroupOutcome::Retry(*wait),
            Verdict::Failed { reason, .. } => GroupOutcome::Failed(reason.clone()),
        }
    }

    pub fn from_group(outcome: GroupOutcome) -> Verdict {
        match outcome {
            GroupOutcome::Delivered => Verdict::Delivered,
            GroupOutcome::Retry(wait) => Verdict::Retry {
                wait,
                reason: "the group this message is in was not delivered yet".into(),
                status: None,
            },
            GroupOutcome::Failed(reason) => Verdict::Failed {
                reason: format!("the group this message is in failed: {reason}"),
                response: None,
            },
        }
    }
}

/// A step that failed for a message: which one, and why.
pub struct Failure {
    pub component: String,
    pub error: StepError,
}

impl Failure {
    /// The failure as seen from outside a nested list of steps: one error naming the step.
    fn nested(self) -> StepError {
        match self.error {
            StepError::Failed(reason) => StepError::Inside {
                at: self.component,
                reason,
                fault: Fault::Invalid,
            },
            StepError::Call(gave_up) => StepError::Inside {
                at: self.component,
                reason: MappingError(gave_up.reason),
                fault: gave_up.fault,
            },
            StepError::Inside { at, reason, fault } => StepError::Inside {
                at: super::step_path(&self.component, &at),
                reason,
                fault,
            },
            busy => busy,
        }
    }

    /// The failing step's whole path, its own message and the kind of failure.
    fn located(&self) -> (String, String, Fault) {
        match &self.error {
            StepError::Inside { at, reason, fault } => (
                super::step_path(&self.component, at),
                reason.0.clone(),
                *fault,
            ),
            StepError::Failed(reason) => (self.component.clone(), reason.0.clone(), Fault::Invalid),
            StepError::Call(gave_up) => (
                self.component.clone(),
                gave_up.reason.clone(),
                gave_up.fault,
            ),
            StepError::Busy(reason) => (self.component.clone(), reason.clone(), Fault::Upstream),
            StepError::Unavailable(reason) => (
                self.component.clone(),
                reason.clone(),
                Fault::Unavailable { retry_after: None },
            ),
        }
    }
}

type Ran = Vec<Result<Message, Failure>>;

/// Runs `message` through `steps`. A failed step marks the message failed and the steps after
/// it are skipped up to a `catch`, which gets the message as it was before the failing step,
/// with `%error`. Parts of a split message run the rest concurrently, each with its own trail.
fn run<'a, 'b: 'a, P: Processor>(
    steps: &'a [ProcessorSlot<P>],
    mut message: Message,
    mut failed: Option<Failure>,
    cx: &'a mut Context<'b>,
) -> Pin<Box<dyn Future<Output = Ran> + Send + 'a>> {
    Box::pin(async move {
        for (i, slot) in steps.iter().enumerate() {
            if failed.is_some() != slot.processor.catches() {
                continue;
            }
            if let Some(f) = failed.take() {
                let (component, reason, _) = f.located();
                let mut error = empty_object();
                insert(&mut error, "component", Value::from(component));
                insert(&mut error, "reason", Value::from(reason));
                insert(&mut message.metadata, "error", error);
            }
            // A catch further on needs the message as it was, should this step fail.
            let kept = steps[i + 1..]
                .iter()
                .any(|s| s.processor.catches())
                .then(|| message.clone());
            let groups_before = cx.trail.groups.len();
            let step = crate::core::trace::step_span("step", &slot.id);
            let outcome = match step.in_scope(|| slot.processor.process_now(message, cx)) {
                Now::Done(outcome) => outcome,
                Now::Later(message) => {
                    let start = Instant::now();
                    let outcome =
                        tracing::Instrument::instrument(slot.processor.process(message, cx), step)
                            .await;
                    slot.timings.record(start.elapsed());
                    outcome
                }
            };
            slot.counts.count(&outcome);
            match outcome {
                Ok(Step::One(next)) => {
                    message = next;
                    if let Some(tap) = cx.tap {
                        tap.observe(&slot.id, &message);
                    }
                }
                Ok(Step::Dropped | Step::Absorbed) => return Vec::new(),
                Ok(Step::Many(parts)) => {
                    return split(&slot.id, &steps[i + 1..], parts, cx).await;
                }
                Err(error) => {
                    let failure = Failure {
                        component: slot.id.clone(),
                        error,
                    };
                    match kept {
                        Some(before)
                            if !matches!(
                                failure.error,
                                StepError::Busy(_) | StepError::Unavailable(_)
                            ) =>
                        {
                            // The message goes on as it was: groups the failed step took on
                            // (an aggregate inside a try) will not be delivered by it.
                            let lost = GroupOutcome::Failed(failure.error.to_string());
                            for group in cx.trail.groups.drain(groups_before..) {
                                group.settle(lost.clone());
                            }
                            message = before;
                            failed = Some(failure);
                        }
                        _ => return vec![Err(failure)],
                    }
                }
            }
        }
        match failed {
            Some(failure) => vec![Err(failure)],
            None => vec![Ok(message)],
        }
    })
}

/// Runs the parts `step` made of a message through the steps after it (`rest`), concurrently,
/// each with a trail of its own that the message's trail then takes on.
///
/// A part whose way through `rest` needs no waiting (every step done in place, an `aggregate`
/// joining a group another part opened) is run in place, without a future of its own. A part
/// that waits gets one from that step on, polled once at once: the step it waits in (the
/// `aggregate` that opens the group) is then set up before the next part comes to it.
fn split<'a, 'b: 'a, P: Processor>(
    step: &'a str,
    rest: &'a [ProcessorSlot<P>],
    parts: Vec<Message>,
    cx: &'a mut Context<'b>,
) -> Pin<Box<dyn Future<Output = Ran> + Send + 'a>> {
    Box::pin(async move {
        if let Some(tap) = cx.tap {
            for part in &parts {
                tap.observe(step, part);
            }
        }
        let (flow, store, tap, reads_metadata) = (cx.flow, cx.store, cx.tap, cx.reads_metadata);
        // In place, a failure ends a part's way: a `catch` after it needs `run`'s bookkeeping.
        let in_place = !rest.iter().any(|s| s.processor.catches());
        let siblings = Arc::new(crate::core::SplitParts::default());
        let mut trails: Vec<Trail> = parts.iter().map(|_| Trail::default()).collect();
        let mut ran: Vec<Ran> = Vec::with_capacity(parts.len());
        let mut waiting = Vec::new();
        for (part, trail) in parts.into_iter().zip(trails.iter_mut()) {
            let mut cx = Context {
                flow,
                store,
                trail,
                tap,
                split: Some(siblings.clone()),
                reads_metadata,
            };
            let pending = if in_place {
                match run_now(rest, part, &mut cx) {
                    Walked::Done(done) => {
                        part_done(&done, cx.trail, &siblings);
                        ran.push(done);
                        continue;
                    }
                    Walked::Waits(at, span, part) => Pending::Step(at, span, part),
                    Walked::Parts(at, parts) => Pending::Parts(at, parts),
                }
            } else {
                Pending::Run(part)
            };
            let siblings = siblings.clone();
            let mut later: Pin<Box<dyn Future<Output = Ran> + Send + '_>> = Box::pin(async move {
                let done = match pending {
                    Pending::Run(part) => run(rest, part, None, &mut cx).await,
                    Pending::Step(at, span, part) => resume(rest, at, span, part, &mut cx).await,
                    Pending::Parts(at, parts) => {
                        split(&rest[at].id, &rest[at + 1..], parts, &mut cx).await
                    }
                };
                part_done(&done, cx.trail, &siblings);
                done
            });
            let place = ran.len();
            ran.push(Vec::new());
            match std::future::poll_fn(|task| std::task::Poll::Ready(later.as_mut().poll(task)))
                .await
            {
                std::task::Poll::Ready(done) => ran[place] = done,
                std::task::Poll::Pending => waiting.push((place, later)),
            }
        }
        let (places, futures): (Vec<usize>, Vec<_>) = waiting.into_iter().unzip();
        let done = futures_util::future::join_all(futures).await;
        for (place, done) in places.into_iter().zip(done) {
            ran[place] = done;
        }
        cx.trail.extend(trails);
        ran.into_iter().flatten().collect()
    })
}

/// A part whose way ended with nothing out of it and no group taking it was dropped on
/// purpose: a group gathering the parts need not wait for it.
fn part_done(ran: &Ran, trail: &Trail, siblings: &crate::core::SplitParts) {
    if ran.is_empty() && trail.joined.is_empty() {
        siblings.drop_one();
    }
}

/// Where a part's way goes on, in a future of its own.
enum Pending {
    /// All of `run`, from the first step (a `catch` follows: [`run_now`] was not used).
    Run(Message),
    /// At step `at`, which [`run_now`] found waiting: its `process`, in its span.
    Step(usize, tracing::Span, Message),
    /// After step `at`, which split the part again, with its parts.
    Parts(usize, Vec<Message>),
}

/// What [`run_now`] came to.
enum Walked {
    Done(Ran),
    /// Step `at` waits: its span and the message, given back.
    Waits(usize, tracing::Span, Message),
    /// Step `at` split the message.
    Parts(usize, Vec<Message>),
}

/// Goes on where [`run_now`] stopped: step `at`'s waiting half, then `run` for the steps after
/// it. The step's in-place half already turned the message down, so it is not asked again.
async fn resume<P: Processor>(
    steps: &[ProcessorSlot<P>],
    at: usize,
    span: tracing::Span,
    message: Message,
    cx: &mut Context<'_>,
) -> Ran {
    let slot = &steps[at];
    let start = Instant::now();
    let outcome = tracing::Instrument::instrument(slot.processor.process(message, cx), span).await;
    slot.timings.record(start.elapsed());
    slot.counts.count(&outcome);
    match outcome {
        Ok(Step::One(next)) => {
            if let Some(tap) = cx.tap {
                tap.observe(&slot.id, &next);
            }
            run(&steps[at + 1..], next, None, cx).await
        }
        Ok(Step::Dropped | Step::Absorbed) => Vec::new(),
        Ok(Step::Many(parts)) => split(&slot.id, &steps[at + 1..], parts, cx).await,
        Err(error) => vec![Err(Failure {
            component: slot.id.clone(),
            error,
        })],
    }
}

/// `run` for steps none of which is a `catch`, in place, up to the first step that waits.
fn run_now<P: Processor>(
    steps: &[ProcessorSlot<P>],
    mut message: Message,
    cx: &mut Context<'_>,
) -> Walked {
    for (i, slot) in steps.iter().enumerate() {
        let step = crate::core::trace::step_span("step", &slot.id);
        let outcome = match step.in_scope(|| slot.processor.process_now(message, cx)) {
            Now::Done(outcome) => outcome,
            Now::Later(message) => return Walked::Waits(i, step, message),
        };
        slot.counts.count(&outcome);
        match outcome {
            Ok(Step::One(next)) => {
                message = next;
                if let Some(tap) = cx.tap {
                    tap.observe(&slot.id, &message);
                }
            }
            Ok(Step::Dropped | Step::Absorbed) => return Walked::Done(Vec::new()),
            Ok(Step::Many(parts)) => return Walked::Parts(i, parts),
            Err(error) => {
                return Walked::Done(vec![Err(Failure {
                    component: slot.id.clone(),
                    error,
                })]);
            }
        }
    }
    Walked::Done(vec![Ok(message)])
}

/// Runs a nested list of steps (inside `switch`, `try`, `catch`, `enrich`): what they made of
/// the message, or the first failure, naming the step.
pub fn run_nested<'a, 'b: 'a, P: Processor>(
    steps: &'a [ProcessorSlot<P>],
    message: Message,
    cx: &'a mut Context<'b>,
) -> Pin<Box<dyn Future<Output = Result<Vec<Message>, StepError>> + Send + 'a>> {
    Box::pin(async move {
        let mut out = Vec::new();
        for result in run(steps, message, None, cx).await {
            match result {
                Ok(m) => out.push(m),
                Err(failure) => return Err(failure.nested()),
            }
        }
        Ok(out)
    })
}

pub struct Flow<P, O> {
    pub name: Arc<str>,
    /// The input's id (`input.http_server`).
    pub input_id: String,
    processors: Vec<ProcessorSlot<P>>,
    outputs: Vec<OutputSlot<O>>,
    limit: Arc<Semaphore>,
    concurrency: u32,
    reads_metadata: bool,
    durable: Option<Arc<DurableQueue>>,
    store: Option<Store>,
    metrics: FlowMetrics,
    stats: FlowStats,
    /// The last failures, for the API and the dashboard.
    pub failures: super::failures::Failures,
    /// Copies of messages for listeners (`weft tap`).
    pub tap: Tap,
    /// `true` while paused (admin API): inputs take nothing in, delivery workers wait.
    paused: tokio::sync::watch::Sender<bool>,
    pub started_at: std::time::SystemTime,
    /// `log_level` on the flow: its messages get a span, for the level filter.
    log_level: Option<tracing::level_filters::LevelFilter>,
    /// A polling input's: where its checkpoint is kept, when and what it polled last.
    polling: Option<Polling>,
    /// Its settings as YAML, credentials redacted, for the dashboard.
    effective_config: String,
    /// Its last delivered messages, when `admin.ui.history` asks (set once, at start).
    delivered: std::sync::OnceLock<super::history::Delivered>,
}

/// A polling flow's checkpoint key, and when its checkpoint was saved and its last poll ended
/// (milliseconds since the epoch; 0: not yet), for the admin API and `/metrics`.
pub struct Polling {
    pub checkpoint_key: String,
    pub saved_ms: std::sync::atomic::AtomicI64,
    pub polled_ms: std::sync::atomic::AtomicI64,
    /// The checkpoint as this input last read or wrote it (`Some(None)`: there was none), which
    /// its next save must find still there; `None` before the first read.
    pub read: std::sync::Mutex<Option<Option<Vec<u8>>>>,
}

/// What a flow has done since it started, for the admin API (the Prometheus metrics say the
/// same, but cannot be read back).
#[derive(Default)]
struct FlowStats {
    received: AtomicU64,
    delivered: AtomicU64,
    filtered: AtomicU64,
    failed: AtomicU64,
    refused: AtomicU64,
}

/// A flow's counters at one moment.
#[derive(Debug, Default, Clone, Copy, serde::Serialize, utoipa::ToSchema)]
pub struct Counters {
    /// Messages taken in.
    pub received: u64,
    /// Messages every output accepted.
    pub delivered: u64,
    /// Messages a step dropped on purpose.
    pub filtered: u64,
    /// Messages that failed for good (in a durable flow: dead-lettered).
    pub failed: u64,
    /// Messages in the pipeline or with the outputs now.
    pub in_flight: u64,
    /// Requests the input's `auth` refused (not messages: nothing of them was taken in).
    pub refused: u64,
}

/// A place in the flow's concurrency budget, held while a message is in flight.
pub struct Admission {
    _permit: OwnedSemaphorePermit,
    metrics: FlowMetrics,
}

impl Drop for Admission {
    fn drop(&mut self) {
        self.metrics.in_flight.decrement(1.0);
    }
}

impl<P: Processor, O: Output> Flow<P, O> {
    pub fn new(
        name: Arc<str>,
        input_id: &str,
        concurrency: u32,
        processors: Vec<ProcessorSlot<P>>,
        outputs: Vec<OutputSlot<O>>,
        durable: Option<Arc<DurableQueue>>,
        store: Option<Store>,
    ) -> Self {
        let reads_metadata = processors.iter().any(|p| p.processor.reads_metadata())
            || outputs.iter().any(|o| o.output.reads_metadata())
            || durable.as_ref().is_some_and(|q| q.reads_metadata());
        Flow {
            durable,
            store,
            reads_metadata,
            metrics: FlowMetrics::new(&name, input_id),
            input_id: input_id.to_string(),
            name,
            processors,
            outputs,
            limit: Arc::new(Semaphore::new(concurrency.max(1) as usize)),
            concurrency: concurrency.max(1),
            stats: FlowStats::default(),
            failures: Default::default(),
            tap: Tap::default(),
            paused: tokio::sync::watch::channel(false).0,
            started_at: std::time::SystemTime::now(),
            log_level: None,
            polling: None,
            effective_config: String::new(),
            delivered: std::sync::OnceLock::new(),
        }
    }

    /// Keeps the ids of the last `kept` messages delivered (none when 0), for look-ups.
    pub fn keep_delivered(&self, kept: u32) {
        if kept > 0 {
            let _ = self.delivered.set(super::history::Delivered::new(kept));
        }
    }

    /// Whether it keeps its last delivered messages.
    pub fn keeps_delivered(&self) -> bool {
        self.delivered.get().is_some()
    }

    /// When message `id` was delivered (ms since the epoch), if the flow keeps a history and
    /// it is in it.
    pub fn delivered_at(&self, id: Ulid) -> Option<i64> {
        self.delivered.get()?.find(id)
    }

    /// Gives the flow its settings as the dashboard shows them (credentials redacted).
    pub fn with_effective_config(mut self, yaml: String) -> Self {
        self.effective_config = yaml;
        self
    }

    /// The flow's settings as YAML, credentials redacted; empty when not given.
    pub fn effective_config(&self) -> &str {
        &self.effective_config
    }

    /// Marks the flow as polling, its checkpoint kept under `checkpoint_key`.
    pub fn with_checkpoint_key(mut self, checkpoint_key: Option<String>) -> Self {
        self.polling = checkpoint_key.map(|checkpoint_key| Polling {
            checkpoint_key,
            saved_ms: Default::default(),
            polled_ms: Default::default(),
            read: Default::default(),
        });
        self
    }

    /// Where the flow's polling input keeps its checkpoint, and when it saved it and polled.
    pub fn polling(&self) -> Option<&Polling> {
        self.polling.as_ref()
    }

    /// Gives the flow a log level of its own (`log_level`).
    pub fn with_log_level(mut self, level: Option<tracing::level_filters::LevelFilter>) -> Self {
        self.log_level = level;
        self
    }

    pub fn log_level(&self) -> Option<tracing::level_filters::LevelFilter> {
        self.log_level
    }

    /// The span `message` is handled in (none when neither export nor a flow log level wants
    /// one).
    pub fn span(&self, message: &Message) -> tracing::Span {
        crate::core::trace::message_span(&self.name, self.log_level.is_some(), message)
    }

    /// The stages a tap can listen to, in order: `input`, each step, `output`.
    pub fn stages(&self) -> Vec<String> {
        std::iter::once("input".to_string())
            .chain(self.processors.iter().map(|p| p.id.clone()))
            .chain(std::iter::once("output".to_string()))
            .collect()
    }

    /// `durable` or `direct`, as the config says it.
    pub fn delivery(&self) -> &'static str {
        if self.durable.is_some() {
            "durable"
        } else {
            "direct"
        }
    }

    /// The pipeline's steps, in order.
    pub fn steps(&self) -> &[ProcessorSlot<P>] {
        &self.processors
    }

    /// The outputs, in order.
    pub fn outputs(&self) -> &[OutputSlot<O>] {
        &self.outputs
    }

    /// The output ids, in order.
    pub fn output_ids(&self) -> Vec<String> {
        self.outputs.iter().map(|o| o.id.clone()).collect()
    }

    pub fn counters(&self) -> Counters {
        let load = |c: &AtomicU64| c.load(Ordering::Relaxed);
        Counters {
            received: load(&self.stats.received),
            delivered: load(&self.stats.delivered),
            filtered: load(&self.stats.filtered),
            failed: load(&self.stats.failed),
            in_flight: u64::from(self.concurrency)
                .saturating_sub(self.limit.available_permits() as u64),
            refused: load(&self.stats.refused),
        }
    }

    /// Counts message `id`, which every output accepted (durable delivery counts here).
    pub fn count_delivered(&self, id: Ulid) {
        self.stats.delivered.fetch_add(1, Ordering::Relaxed);
        if let Some(delivered) = self.delivered.get() {
            delivered.record(id, super::clock::now_ms());
        }
    }

    /// Counts a message that failed for good (durable: dead-lettered).
    pub fn count_failed(&self) {
        self.stats.failed.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a request the input's `auth` refused, with why.
    pub fn count_refused(&self, reason: &'static str) {
        self.stats.refused.fetch_add(1, Ordering::Relaxed);
        super::metrics::auth_refused(&self.name, reason);
    }

    /// Pauses the flow: `true` if it was running.
    pub fn pause(&self) -> bool {
        !self.paused.send_replace(true)
    }

    /// Resumes the flow: `true` if it was paused.
    pub fn resume(&self) -> bool {
        self.paused.send_replace(false)
    }

    pub fn is_paused(&self) -> bool {
        *self.paused.borrow()
    }

    /// Returns once the flow is not paused.
    pub async fn running(&self) {
        let mut paused = self.paused.subscribe();
        let _ = paused.wait_for(|paused| !paused).await;
    }

    fn admitted(&self, permit: OwnedSemaphorePermit) -> Admission {
        self.metrics.in_flight.increment(1.0);
        Admission {
            _permit: permit,
            metrics: self.metrics.clone(),
        }
    }

    /// The flow's store queue when its delivery is `durable`: inputs then enqueue and ack, and
    /// delivery workers ([`super::durable::work`]) take it from there.
    pub fn durable(&self) -> Option<&Arc<DurableQueue>> {
        self.durable.as_ref()
    }

    /// Whether anything in the flow reads metadata; inputs skip building it when not.
    pub fn reads_metadata(&self) -> bool {
        self.reads_metadata
    }

    /// A place in flight now, or `None` when the flow is saturated (or paused).
    pub fn try_admit(&self) -> Option<Admission> {
        if self.is_paused() {
            return None;
        }
        let permit = self.limit.clone().try_acquire_owned().ok()?;
        Some(self.admitted(permit))
    }

    /// Waits for a place in flight (and, while paused, for the flow to resume).
    pub async fn admit(&self) -> Admission {
        self.running().await;
        let permit = self
            .limit
            .clone()
            .acquire_owned()
            .await
            .expect("the flow semaphore is never closed");
        self.admitted(permit)
    }

    /// Counts a message that the input could not turn into a message (e.g. a bad JSON line),
    /// and keeps why.
    pub fn count_rejected(&self, reason: impl std::fmt::Display) {
        self.metrics.failed.increment(1);
        self.fail(None, "input", reason.to_string());
    }

    /// Counts a message that failed for good, and keeps when and why for the API and the
    /// dashboard ([`Flow::failures`]).
    pub fn fail(&self, message: Option<Ulid>, stage: &str, reason: String) {
        self.count_failed();
        if let Some(id) = message {
            self.tap.mark(id, stage, "failed", Some(&reason));
        }
        self.failures.record(message, stage, reason);
    }

    /// The store, when the flow has one (durable delivery, dedupe, idempotency keys).
    pub fn store(&self) -> Option<&Store> {
        self.store.as_ref()
    }

    /// Runs the pipeline: what it made of the message (none when a processor dropped it on
    /// purpose or it was taken into a group). What the message picked up on the way (store
    /// keys, groups) is added to `trail`.
    pub async fn transform(
        &self,
        message: Message,
        trail: &mut Trail,
    ) -> Result<Vec<Message>, FlowError> {
        let joined_before = trail.joined.len();
        let id = message.id;
        self.tap.observe("input", &message);
        let mut cx = Context {
            flow: &self.name,
            store: self.store.as_ref(),
            trail,
            tap: Some(&self.tap),
            split: None,
            reads_metadata: self.reads_metadata,
        };
        let mut out = Vec::new();
        for result in run(&self.processors, message, None, &mut cx).await {
            match result {
                Ok(m) => out.push(m),
                Err(
                    failure @ Failure {
                        error: StepError::Failed(_) | StepError::Inside { .. } | StepError::Call(_),
                        ..
                    },
                ) => {
                    self.metrics.failed.increment(1);
                    let (component, reason, fault) = failure.located();
                    return Err(FlowError::Processing {
                        flow: self.name.clone(),
                        component,
                        reason,
                        fault,
                    });
                }
                Err(Failure {
                    component,
                    error: error @ (StepError::Busy(_) | StepError::Unavailable(_)),
                }) => {
                    let store = matches!(error, StepError::Unavailable(_));
                    return Err(FlowError::Busy {
                        flow: self.name.clone(),
                        component,
                        reason: error.to_string(),
                        store,
                    });
                }
            }
        }
        if out.is_empty() && cx.trail.joined.len() == joined_before {
            self.metrics.filtered.increment(1);
            self.stats.filtered.fetch_add(1, Ordering::Relaxed);
            self.tap.mark(id, "pipeline", "filtered", None);
        }
        Ok(out)
    }

    /// Gives back the store keys a failed message took, so that its resend is processed rather
    /// than dropped as a duplicate. Only keys the message still holds are removed.
    pub async fn release(&self, claims: Vec<Claim>, id: Ulid) {
        let Some(store) = self.store.as_ref().filter(|_| !claims.is_empty()) else {
            return;
        };
        for claim in claims {
            let holder = Claim::pending(claim.holder);
            if let Err(e) = store
                .kv_delete(&claim.namespace, &claim.key, Some(holder.as_bytes()))
                .await
            {
                tracing::warn!(flow = %self.name, %id, key = claim.key, error = %e, "could not release a dedupe key; a resend waits until it lapses");
            }
        }
    }

    /// Marks the store keys of a handled message as done, so that repeats are dropped for the
    /// rest of their TTL. Called before the input or the queue acks the message.
    pub async fn settle(&self, claims: Vec<Claim>, id: Ulid) {
        let Some(store) = self.store.as_ref().filter(|_| !claims.is_empty()) else {
            return;
        };
        for claim in claims {
            let (pending, settled) = (Claim::pending(claim.holder), Claim::settled(claim.holder));
            if let Err(e) = store
                .kv_replace(
                    &claim.namespace,
                    &claim.key,
                    pending.as_bytes(),
                    settled.as_bytes(),
                    Some(claim.expires_at_ms),
                )
                .await
            {
                tracing::warn!(flow = %self.name, %id, key = claim.key, error = %e, "could not record a dedupe key as done; a repeat may be delivered again");
            }
        }
    }

    /// Counts a message taken in by the input.
    pub fn count_received(&self) {
        self.metrics.received.increment(1);
        self.stats.received.fetch_add(1, Ordering::Relaxed);
    }

    /// Direct delivery: the pipeline, then every output with in-memory retries.
    pub fn process(
        &self,
        message: Message,
    ) -> impl Future<Output = Result<Processed, FlowError>> + Send + '_ {
        use tracing::Instrument;
        let span = self.span(&message);
        let caller = message.traceparent.clone();
        crate::core::trace::with_caller(caller, self.process_in_span(message).instrument(span))
    }

    async fn process_in_span(&self, message: Message) -> Result<Processed, FlowError> {
        let start = Instant::now();
        self.count_received();
        let id = message.id;
        let mut trail = Trail::default();
        // What only some messages wait for (dedupe claims, a group's outcome) is awaited in a
        // box: inline, those futures would size every message's, which is copied into a box.
        let messages = match self.transform(message, &mut trail).await {
            Ok(messages) => messages,
            Err(e) => {
                trail.settle_groups(&GroupOutcome::Failed(e.to_string()));
                if !trail.claims.is_empty() {
                    Box::pin(self.release(trail.claims, id)).await;
                }
                self.fail(Some(id), e.stage(), e.to_string());
                return Err(e);
            }
        };
        let mut result = match messages.as_slice() {
            [] => Ok(()),
            [one] => self.deliver_all(one).await,
            many => futures_util::future::join_all(many.iter().map(|m| self.deliver_all(m)))
                .await
                .into_iter()
                .find(Result::is_err)
                .unwrap_or(Ok(())),
        };
        trail.settle_groups(&match &result {
            Ok(()) => GroupOutcome::Delivered,
            Err(e) => GroupOutcome::Failed(e.to_string()),
        });
        let absorbed = !trail.joined.is_empty();
        let joined = if absorbed {
            Box::pin(trail.joined_outcome()).await
        } else {
            None
        };
        if let Some(outcome) = joined
            && result.is_ok()
        {
            result = Err(FlowError::Delivery {
                flow: self.name.clone(),
                fault: Fault::Upstream,
                component: "aggregate".into(),
                reason: match outcome {
                    GroupOutcome::Failed(reason) => format!("its group failed: {reason}"),
                    _ => "its group was not delivered (weft is stopping)".into(),
                },
            });
        }
        self.metrics.latency.record(start.elapsed().as_secs_f64());
        if result.is_ok() {
            if !trail.claims.is_empty() {
                Box::pin(self.settle(trail.claims, id)).await;
            }
            if !messages.is_empty() || absorbed {
                self.count_delivered(id);
            }
        } else {
            if !trail.claims.is_empty() {
                Box::pin(self.release(trail.claims, id)).await;
            }
            if let Err(e) = &result {
                self.fail(Some(id), e.stage(), e.to_string());
            }
        }
        result?;
        Ok(if messages.is_empty() && !absorbed {
            Processed::Filtered
        } else {
            Processed::Delivered(messages)
        })
    }

    /// One message to every output.
    async fn deliver_all(&self, message: &Message) -> Result<(), FlowError> {
        self.tap.observe("output", message);
        match self.outputs.as_slice() {
            [single] => self.deliver_one(single, message).await,
            many => futures_util::future::join_all(
                many.iter().map(|slot| self.deliver_one(slot, message)),
            )
            .await
            .into_iter()
            .find(Result::is_err)
            .unwrap_or(Ok(())),
        }
    }

    /// Durable delivery: one attempt at every output, judged by each output's retry policy with
    /// the persisted attempt count. The verdict covers the whole message: a failure for good at
    /// any output fails it; otherwise a retry anywhere retries it (outputs that already accepted
    /// it see it again: at-least-once), after the longest wait asked for.
    pub async fn attempt(&self, message: &Message, attempts: u32, elapsed: Duration) -> Verdict {
        let start = Instant::now();
        self.tap.observe("output", message);
        let outcomes = futures_util::future::join_all(self.outputs.iter().map(|slot| async move {
            let span = crate::core::trace::step_span("output", &slot.id);
            let outcome = tracing::Instrument::instrument(slot.output.send(message), span).await;
            let decision = slot
                .retry
                .decide(attempts, elapsed, &outcome, fastrand::f64());
            match &decision {
                Decision::Done => slot.metrics.sent.increment(1),
                Decision::Drop(_) => slot.metrics.dropped.increment(1),
                Decision::RetryIn(_) => slot.metrics.retried.increment(1),
                Decision::Fail(_) => slot.metrics.failed.increment(1),
            }
            (slot, outcome, decision)
        }))
        .await;
        let took = start.elapsed();
        self.metrics.latency.record(took.as_secs_f64());
        // The attempt as a whole, for each output: no clock read per output (with several,
        // each is timed as the slowest of them).
        for slot in &self.outputs {
            slot.timings.record(took);
        }
        let mut failed = None;
        let mut retry: Option<(Duration, String, Option<u16>)> = None;
        for (slot, outcome, decision) in outcomes {
            match decision {
                Decision::Fail(reason) => {
                    let response = match outcome {
                        Attempt::Fatal { response, .. } | Attempt::Retryable { response, .. } => {
                            response
                        }
                        _ => None,
                    };
                    failed.get_or_insert_with(|| (format!("{}: {reason}", slot.id), response));
                }
                Decision::RetryIn(wait) => {
                    let (reason, status) = match outcome {
                        Attempt::Retryable {
                            reason, response, ..
                        } => (reason, response.map(|r| r.status)),
                        _ => (String::new(), None),
                    };
                    tracing::warn!(flow = %self.name, component = slot.id, id = %message.id, attempt = attempts, ?wait, error = %reason, "delivery failed; retry scheduled");
                    if retry.as_ref().is_none_or(|(longest, ..)| wait > *longest) {
                        retry = Some((wait, format!("{}: {reason}", slot.id), status));
                    }
                }
                Decision::Done | Decision::Drop(_) => {}
            }
        }
        match (failed, retry) {
            (Some((reason, response)), _) => Verdict::Failed { reason, response },
            (None, Some((wait, reason, status))) => Verdict::Retry {
                wait,
                reason,
                status,
            },
            (None, None) => Verdict::Delivered,
        }
    }

    async fn deliver_one(&self, slot: &OutputSlot<O>, message: &Message) -> Result<(), FlowError> {
        let span = crate::core::trace::step_span("output", &slot.id);
        match tracing::Instrument::instrument(deliver(slot, message), span).await {
            Ok(Delivered::Accepted | Delivered::Dropped) => Ok(()),
            Err(GaveUp { reason, fault }) => Err(FlowError::Delivery {
                flow: self.name.clone(),
                component: slot.id.clone(),
                reason,
                fault,
            }),
        }
    }
}
