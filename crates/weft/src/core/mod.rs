//! The engine core: messages, the flow runtime, retries, mapping and telemetry.
//!
//! Nothing in here knows a connector. Components plug in through the [`Processor`] and [`Output`]
//! traits (inputs only call [`flow::Flow`]); the registries in `inputs`, `processors` and
//! `outputs` are the only places that list them.

pub mod body;
pub mod checkpoint;
pub mod clock;
pub mod durable;
pub mod failures;
pub mod feed;
pub mod flow;
pub mod history;
pub mod mapping;
pub mod message;
pub mod metrics;
pub mod retry;
pub mod schedule;
pub mod tap;
pub mod template;
#[cfg(test)]
mod tests;
pub mod timings;
pub mod trace;
pub mod xml;

use std::future::Future;

use weft_store::Store;

pub use mapping::{MappingError, Value};
pub use message::Message;
pub use retry::{Attempt, Fault};

/// What a pipeline step may use besides the message itself.
pub struct Context<'a> {
    pub flow: &'a str,
    /// The store, when the flow has one (it has when any of its components needs it).
    pub store: Option<&'a Store>,
    /// What the message picked up on its way, settled once it is delivered or failed.
    pub trail: &'a mut Trail,
    /// Where each step's result is shown to listeners (`weft tap`), when the flow has one.
    pub tap: Option<&'a tap::Tap>,
    /// A part of a split message: what became of its sibling parts.
    pub split: Option<std::sync::Arc<SplitParts>>,
    /// Whether any step or output of the flow reads metadata: steps that add some (`split`)
    /// skip it when nothing would read it.
    pub reads_metadata: bool,
}

/// The parts of one split message as they go on: how many were dropped on purpose on their
/// way (a filter), so that an `aggregate` gathering them completes without waiting for them.
#[derive(Debug)]
pub struct SplitParts {
    dropped: tokio::sync::watch::Sender<usize>,
}

impl Default for SplitParts {
    fn default() -> Self {
        SplitParts {
            dropped: tokio::sync::watch::channel(0).0,
        }
    }
}

impl SplitParts {
    /// A part was dropped before it reached a group.
    pub fn drop_one(&self) {
        self.dropped.send_modify(|n| *n += 1);
    }

    /// How many parts were dropped so far.
    pub fn dropped(&self) -> usize {
        *self.dropped.borrow()
    }

    /// Changes as parts are dropped.
    pub fn watch(&self) -> tokio::sync::watch::Receiver<usize> {
        self.dropped.subscribe()
    }
}

/// What a message picks up in the pipeline that must be settled after its delivery.
#[derive(Default)]
pub struct Trail {
    /// Keys taken in the store for this message; the flow gives them back if the message fails,
    /// so that its resend is not mistaken for a duplicate.
    pub claims: Vec<Claim>,
    /// Groups (`aggregate`) whose message this one carries on: told how it fared.
    pub groups: Vec<Group>,
    /// Groups this message was taken into: it is done when their message is.
    pub joined: Vec<Joined>,
}

impl Trail {
    /// Takes on the trails of a message's parts, each list grown once.
    pub fn extend(&mut self, others: Vec<Trail>) {
        self.claims
            .reserve(others.iter().map(|t| t.claims.len()).sum());
        self.groups
            .reserve(others.iter().map(|t| t.groups.len()).sum());
        self.joined
            .reserve(others.iter().map(|t| t.joined.len()).sum());
        for other in others {
            self.claims.extend(other.claims);
            self.groups.extend(other.groups);
            self.joined.extend(other.joined);
        }
    }

    /// Tells the groups this message carried how their message fared.
    pub fn settle_groups(&mut self, outcome: &GroupOutcome) {
        for group in self.groups.drain(..) {
            group.settle(outcome.clone());
        }
    }

    /// How the groups this message was taken into fared: the first that did not deliver, or
    /// `None` when all did. A group whose carrier vanished (shutdown) counts as a retry.
    pub async fn joined_outcome(&mut self) -> Option<GroupOutcome> {
        let mut worst = None;
        for joined in self.joined.drain(..) {
            match joined.outcome().await {
                GroupOutcome::Delivered => {}
                other => {
                    worst.get_or_insert(other);
                }
            }
        }
        worst
    }
}

/// How a group's message fared, told to every message of the group.
#[derive(Debug, Clone, PartialEq)]
pub enum GroupOutcome {
    Delivered,
    Retry(std::time::Duration),
    Failed(String),
}

/// The carrier's side of a group: settled once, after its message's delivery.
#[derive(Clone)]
pub struct Group(std::sync::Arc<tokio::sync::watch::Sender<Option<GroupOutcome>>>);

impl Group {
    #[allow(clippy::new_without_default)]
    pub fn new() -> Group {
        Group(std::sync::Arc::new(tokio::sync::watch::Sender::new(None)))
    }

    /// A member's wait for the outcome.
    pub fn joined(&self) -> Joined {
        Joined(self.0.subscribe())
    }

    pub fn settle(&self, outcome: GroupOutcome) {
        self.0.send_replace(Some(outcome));
    }
}

/// A member's side of a group.
pub struct Joined(tokio::sync::watch::Receiver<Option<GroupOutcome>>);

impl Joined {
    pub async fn outcome(mut self) -> GroupOutcome {
        match self.0.wait_for(Option::is_some).await {
            Ok(outcome) => outcome.clone().unwrap_or(GroupOutcome::Delivered),
            Err(_) => GroupOutcome::Retry(std::time::Duration::from_secs(1)),
        }
    }
}

/// A path below a step, joined to the step's own: `pipeline[0].try` and `[1].map` give
/// `pipeline[0].try[1].map`; `pipeline[1].enrich` and `processors[0].http` give
/// `pipeline[1].enrich.processors[0].http`.
pub fn step_path(step: &str, below: &str) -> String {
    if below.is_empty() {
        step.to_string()
    } else if below.starts_with('[') || step.is_empty() {
        format!("{step}{below}")
    } else {
        format!("{step}.{below}")
    }
}

/// What a pipeline step made of a message.
#[derive(Debug)]
pub enum Step {
    /// Passed on, possibly rewritten.
    One(Message),
    /// Several messages, each going through the rest of the pipeline on its own (`split`).
    Many(Vec<Message>),
    /// Dropped on purpose (a filter said no).
    Dropped,
    /// Taken into a group (`aggregate`), recorded in the trail.
    Absorbed,
}

impl Step {
    pub fn from_messages(mut messages: Vec<Message>) -> Step {
        match messages.len() {
            0 => Step::Dropped,
            1 => messages.pop().map_or(Step::Dropped, Step::One),
            _ => Step::Many(messages),
        }
    }
}

impl From<Option<Message>> for Step {
    fn from(message: Option<Message>) -> Step {
        message.map_or(Step::Dropped, Step::One)
    }
}

/// A store key held by one message while it is in flight (value `p:<id>`); the flow settles it
/// (`d:<id>`, kept until `expires_at_ms`) once the message is handled, or releases it when the
/// message fails.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claim {
    pub namespace: String,
    pub key: String,
    pub expires_at_ms: i64,
    /// The id of the message that took it: a part of a split message holds its key by its own
    /// id, not by the id of the input message it came from.
    pub holder: ulid::Ulid,
}

impl Claim {
    /// The value of a key held by message `id` while it is in flight.
    pub fn pending(id: impl std::fmt::Display) -> String {
        format!("p:{id}")
    }

    /// The value of a key whose message `id` was handled.
    pub fn settled(id: impl std::fmt::Display) -> String {
        format!("d:{id}")
    }
}

/// Why a pipeline step did not pass a message on.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StepError {
    /// The message failed (a mapping error, a bad key): it will fail again the same way.
    #[error(transparent)]
    Failed(#[from] MappingError),
    /// A call to another system gave up (an `http`, `sql`, `soap`… step).
    #[error(transparent)]
    Call(#[from] retry::GaveUp),
    /// A step inside this one failed (`try`, `switch`, `enrich`…): its path below this step,
    /// its own message and what kind of failure it was.
    #[error("{at}: {reason}")]
    Inside {
        at: String,
        reason: MappingError,
        fault: retry::Fault,
    },
    /// Not now: another message holds what this one needs; try again shortly.
    #[error("{0}")]
    Busy(String),
    /// Not now: the store the step keeps its state in cannot be written or reached (a full
    /// disk, the cluster's NATS down); try again later.
    #[error("{0}")]
    Unavailable(String),
}

/// A pipeline step: keeps, rewrites, drops, splits or gathers messages.
pub trait Processor: Send + Sync + 'static {
    /// `Err` fails the message. The whole step, whatever [`Processor::process_now`] would
    /// say: the flow calls it once `process_now` handed the message back.
    fn process(
        &self,
        message: Message,
        cx: &mut Context<'_>,
    ) -> impl Future<Output = Result<Step, StepError>> + Send;

    /// The step's work done in place, when it never waits ([`Immediate`] steps): the flow then
    /// runs it without a future. `Later` hands the message back for [`Processor::process`].
    fn process_now(&self, message: Message, cx: &mut Context<'_>) -> Now {
        let _ = cx;
        Now::Later(message)
    }

    /// Whether any program of this step reads message metadata (`%…`).
    fn reads_metadata(&self) -> bool;

    /// Whether this step runs only on messages a step before it failed (`catch`).
    fn catches(&self) -> bool {
        false
    }
}

/// What [`Processor::process_now`] did.
pub enum Now {
    Done(Result<Step, StepError>),
    /// The step waits on something: run [`Processor::process`].
    Later(Message),
}

/// A step that never waits (`map`, `filter`, `split`…): it is a [`Processor`] whose work is
/// done in place, without a future of its own to allocate or move.
pub trait Immediate: Send + Sync + 'static {
    /// `Err` fails the message.
    fn step(&self, message: Message) -> Result<Step, StepError>;

    /// Whether any program of this step reads message metadata (`%…`).
    fn reads_metadata(&self) -> bool;
}

impl<T: Immediate> Processor for T {
    async fn process(&self, message: Message, _cx: &mut Context<'_>) -> Result<Step, StepError> {
        self.step(message)
    }

    fn process_now(&self, message: Message, _cx: &mut Context<'_>) -> Now {
        Now::Done(self.step(message))
    }

    fn reads_metadata(&self) -> bool {
        Immediate::reads_metadata(self)
    }
}

/// A destination. One call is one delivery attempt; the retry stack in [`retry`] decides what
/// happens next, so an output never sleeps or loops on its own.
pub trait Output: Send + Sync + 'static {
    fn send(&self, message: &Message) -> impl Future<Output = Attempt> + Send;

    /// Whether any template of this output reads message metadata (`%…`).
    fn reads_metadata(&self) -> bool;
}

/// Whether `text` matches `pattern`, where `*` stands for any run of characters.
pub fn glob(pattern: &str, text: &str) -> bool {
    let mut parts = pattern.split('*');
    let first = parts.next().unwrap_or_default();
    let Some(mut rest) = text.strip_prefix(first) else {
        return false;
    };
    let parts: Vec<&str> = parts.collect();
    let Some((last, middle)) = parts.split_last() else {
        return rest.is_empty();
    };
    for part in middle {
        match rest.find(part) {
            Some(at) => rest = &rest[at + part.len()..],
            None => return false,
        }
    }
    rest.len() >= last.len() && rest.ends_with(last)
}
