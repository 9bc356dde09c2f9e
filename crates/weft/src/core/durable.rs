//! Durable delivery: the input acks once the message is committed to the store; delivery
//! workers take it from there, through the pipeline and outputs, and survive restarts.
//!
//! Invariants:
//! - [`DurableQueue::accept`] returns only after the store committed the message; inputs ack on
//!   that and nothing else.
//! - A message leaves the store only by `ack` (delivered, filtered or dropped by a status class)
//!   or by moving to the dead-letter queue (failed for good, or a pipeline error). A worker that
//!   dies mid-delivery leaves a lease that lapses, so the message is delivered again.
//! - The retry schedule (attempts, next attempt time, last error) lives in the store, so a
//!   restart resumes it rather than starting over.
//! - The queue is bounded by message count and bytes; a full queue refuses (HTTP 429) or makes
//!   reading inputs wait, instead of growing.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use metrics::Gauge;
use tokio::sync::{Notify, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use weft_store::{Failure, Queued, Store, StoreError};

use super::clock::Clock;
use super::flow::{Flow, FlowError, Verdict};
use super::mapping::{Mapping, MappingError, Value, empty_object, insert};
use super::{GroupOutcome, Message, Output, Processor, Trail};

/// How long a claimed message stays reserved for one worker. Only matters when a worker dies
/// without a restart of the process (a restart clears every lease).
const LEASE: Duration = Duration::from_secs(600);
/// How often an idle worker looks for retries that came due.
const IDLE_POLL: Duration = Duration::from_millis(200);

/// How long a message waits when a step is busy (another message holds its dedupe key).
const BUSY_WAIT: Duration = Duration::from_secs(1);

/// Requests a durable flow's `http_server` reads and commits at once.
pub const INTAKE_LIMIT: u32 = 1024;

/// Longest an input waits for the store to commit a message before answering it with an error.
pub const ACCEPT_TIMEOUT: Duration = Duration::from_secs(10);

/// A place held in the queue for one message; given back if the message is not committed.
pub struct Reservation {
    queue: Arc<DurableQueue>,
    committed: bool,
}

impl Drop for Reservation {
    fn drop(&mut self) {
        if !self.committed {
            self.queue.release(0);
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum AcceptError {
    #[error("cannot encode the message: {0}")]
    Encode(serde_json::Error),
    #[error("the store did not commit within {ACCEPT_TIMEOUT:?}")]
    Timeout,
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("ordering key: {0}")]
    OrderKey(MappingError),
}

/// A stored payload is tagged: `j` + JSON, or `b` + the raw bytes of a binary string value,
/// which JSON could only carry lossily.
fn encode_value(value: &Value) -> Result<Vec<u8>, AcceptError> {
    if let Value::Bytes(bytes) = value
        && std::str::from_utf8(bytes).is_err()
    {
        let mut out = Vec::with_capacity(bytes.len() + 1);
        out.push(b'b');
        out.extend_from_slice(bytes);
        return Ok(out);
    }
    let mut out = vec![b'j'];
    serde_json::to_writer(&mut out, value).map_err(AcceptError::Encode)?;
    Ok(out)
}

/// A message as the store keeps it: its tagged payload, and its metadata as JSON with the
/// caller's trace context under a key of weft's own.
pub fn encode(message: &Message) -> Result<(Vec<u8>, Vec<u8>), AcceptError> {
    Ok((encode_value(&message.value)?, encode_metadata(message)?))
}

/// A JSON body as the store keeps it, as it was sent (see [`DurableQueue::accept_json`]).
fn encode_json(json: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(json.len() + 1);
    out.push(b'j');
    out.extend_from_slice(json);
    out
}

fn encode_metadata(message: &Message) -> Result<Vec<u8>, AcceptError> {
    match &message.traceparent {
        Some(traceparent) if matches!(message.metadata, Value::Object(_)) => {
            let mut metadata = message.metadata.clone();
            insert(
                &mut metadata,
                TRACEPARENT_KEY,
                Value::from(traceparent.as_ref()),
            );
            serde_json::to_vec(&metadata)
        }
        _ => serde_json::to_vec(&message.metadata),
    }
    .map_err(AcceptError::Encode)
}

/// A stored payload back as a value (raw bytes or JSON, as it was stored).
pub fn decode_value(stored: &[u8]) -> Result<Value, String> {
    match stored.split_first() {
        Some((b'b', raw)) => Ok(Value::Bytes(bytes::Bytes::copy_from_slice(raw))),
        Some((b'j', json)) => serde_json::from_slice(json).map_err(|e| e.to_string()),
        _ => Err("unknown payload encoding".into()),
    }
}

impl AcceptError {
    /// The store cannot write now (disk full, read-only…): it logs that once itself, so each
    /// refused message need not.
    pub fn is_outage(&self) -> bool {
        matches!(self, AcceptError::Store(StoreError::Unavailable { .. }))
    }
}

/// Per-flow bounds of the store queue.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_messages: u64,
    pub max_bytes: u64,
}

pub struct DurableQueue {
    store: Store,
    flow: Arc<str>,
    limits: Limits,
    order_by: Option<Mapping>,
    messages: AtomicU64,
    bytes: AtomicU64,
    wake: Notify,
    depth: Gauge,
    dead: Gauge,
    /// Messages that left the queue (delivered, dropped or dead-lettered) since the start,
    /// and samples of it over the last [`RATE_WINDOW`], for the drain rate.
    left: AtomicU64,
    samples: std::sync::Mutex<std::collections::VecDeque<(std::time::Instant, u64)>>,
    /// The time written to and compared with the store's.
    clock: Clock,
}

/// How far back the drain rate looks.
const RATE_WINDOW: Duration = Duration::from_secs(60);

impl DurableQueue {
    /// Opens `flow`'s queue, counting what a previous run left in it. With `order_by`, messages
    /// sharing its key are delivered one at a time, in the order they were accepted.
    pub async fn open(
        store: Store,
        flow: Arc<str>,
        limits: Limits,
        order_by: Option<Mapping>,
    ) -> Result<Self, StoreError> {
        let depth = store.depth(&flow).await?;
        let queue = DurableQueue {
            depth: metrics::gauge!("weft_queue_messages", "flow" => flow.to_string()),
            dead: metrics::gauge!("weft_dead_letters", "flow" => flow.to_string()),
            store,
            flow,
            limits,
            order_by,
            messages: AtomicU64::new(depth.messages),
            bytes: AtomicU64::new(depth.bytes),
            wake: Notify::new(),
            left: AtomicU64::new(0),
            samples: Default::default(),
            clock: Clock::default(),
        };
        queue.depth.set(depth.messages as f64);
        queue.count_dead().await;
        Ok(queue)
    }

    /// The queue on `clock` instead of the wall clock.
    #[cfg(test)]
    pub(crate) fn with_clock(mut self, clock: Clock) -> Self {
        self.clock = clock;
        self
    }

    /// Whether the ordering key reads metadata.
    pub fn reads_metadata(&self) -> bool {
        self.order_by.as_ref().is_some_and(Mapping::reads_metadata)
    }

    async fn count_dead(&self) {
        let filter = weft_store::DlqFilter {
            flow: Some(self.flow.to_string()),
            ..Default::default()
        };
        if let Ok(n) = self.store.count_dead_letters(&filter).await {
            self.dead.set(n as f64);
        }
    }

    /// Whether the store holds nothing more for this flow (asked of the store itself, not of
    /// this process's counters).
    pub async fn is_drained(&self) -> bool {
        self.store
            .depth(&self.flow)
            .await
            .is_ok_and(|d| d.messages == 0)
    }

    /// Takes a place in the queue for one message, or `None` when the queue is full. Taken
    /// before the body is read, so concurrent requests cannot overshoot `max_queued`.
    pub fn reserve(self: &Arc<Self>) -> Option<Reservation> {
        let limit = self.limits.max_messages;
        self.messages
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
                (n < limit).then_some(n + 1)
            })
            .ok()?;
        if self.bytes.load(Ordering::Relaxed) >= self.limits.max_bytes {
            self.release(0);
            return None;
        }
        Some(Reservation {
            queue: self.clone(),
            committed: false,
        })
    }

    fn release(&self, bytes: u64) {
        let _ = self
            .messages
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
                Some(n.saturating_sub(1))
            });
        let _ = self
            .bytes
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
                Some(n.saturating_sub(bytes))
            });
    }

    /// Commits `message` to the store in the place `reservation` holds; the input may ack once
    /// this returns `Ok`. A store that does not answer within [`ACCEPT_TIMEOUT`] is an error.
    pub async fn accept(
        &self,
        reservation: Reservation,
        message: &Message,
    ) -> Result<(), AcceptError> {
        let order_key = match &self.order_by {
            Some(by) => Some(
                by.key(&message.value, &message.metadata)
                    .map_err(AcceptError::OrderKey)?,
            ),
            None => None,
        };
        let (payload, metadata) = encode(message)?;
        self.commit(reservation, message, payload, metadata, order_key)
            .await
    }

    /// Whether [`DurableQueue::accept_json`] may be used: nothing at intake reads the value
    /// (no ordering key).
    pub fn takes_json(&self) -> bool {
        self.order_by.is_none()
    }

    /// [`DurableQueue::accept`] for a message whose value is the JSON `json` (checked by
    /// `body::check_json`; `message.value` is not read): stored as it was sent, and parsed
    /// once, when it is delivered, instead of parsed here and written out again. Only when
    /// [`DurableQueue::takes_json`].
    pub async fn accept_json(
        &self,
        reservation: Reservation,
        message: &Message,
        json: &[u8],
    ) -> Result<(), AcceptError> {
        debug_assert!(self.takes_json());
        let metadata = encode_metadata(message)?;
        self.commit(reservation, message, encode_json(json), metadata, None)
            .await
    }

    async fn commit(
        &self,
        mut reservation: Reservation,
        message: &Message,
        payload: Vec<u8>,
        metadata: Vec<u8>,
        order_key: Option<String>,
    ) -> Result<(), AcceptError> {
        let size = (payload.len() + metadata.len()) as u64;
        let id = message.id.to_string();
        let enqueue = self.store.enqueue(
            &self.flow,
            &id,
            &payload,
            &metadata,
            order_key.as_deref(),
            self.clock.now_ms(),
        );
        tokio::time::timeout(ACCEPT_TIMEOUT, enqueue)
            .await
            .map_err(|_| AcceptError::Timeout)??;
        reservation.committed = true;
        self.bytes.fetch_add(size, Ordering::Relaxed);
        self.depth.increment(1.0);
        self.wake.notify_one();
        Ok(())
    }

    fn left(&self, entry: &Queued) {
        self.release((entry.payload.len() + entry.metadata.len()) as u64);
        self.depth.decrement(1.0);
        self.left.fetch_add(1, Ordering::Relaxed);
    }

    /// The queue's bounds.
    pub fn limits(&self) -> Limits {
        self.limits
    }

    /// Messages per second that left the queue over the last minute (fewer seconds just
    /// after the start).
    pub fn drain_rate(&self) -> f64 {
        let samples = self.samples.lock().unwrap_or_else(|p| p.into_inner());
        match (samples.front(), samples.back()) {
            (Some((t0, n0)), Some((t1, n1))) if t1 > t0 => {
                (n1 - n0) as f64 / t1.duration_since(*t0).as_secs_f64()
            }
            _ => 0.0,
        }
    }

    fn sample_rate(&self) -> f64 {
        let now = std::time::Instant::now();
        {
            let mut samples = self.samples.lock().unwrap_or_else(|p| p.into_inner());
            samples.push_back((now, self.left.load(Ordering::Relaxed)));
            while samples
                .front()
                .is_some_and(|(t, _)| now.duration_since(*t) > RATE_WINDOW)
            {
                samples.pop_front();
            }
        }
        self.drain_rate()
    }

    async fn dead_letter(
        &self,
        entry: &Queued,
        attempts: u32,
        failure: Failure,
        stage: &'static str,
        stop: &CancellationToken,
    ) {
        // What the store keeps is read back by people and tools: no credential of a URL.
        let mut failure = failure;
        if let std::borrow::Cow::Owned(clean) = crate::config::secret::redact(&failure.reason) {
            failure.reason = clean;
        }
        tracing::error!(flow = %self.flow, id = entry.id, attempts, reason = %failure.reason, "message moved to the dead-letter queue");
        let moved = self
            .persist(entry, "move it to the dead-letter queue", stop, || {
                self.store
                    .dead_letter(entry.seq, attempts, failure.clone(), self.clock.now_ms())
            })
            .await;
        // `Some(false)`: already gone (another process replayed or purged it).
        if moved == Some(true) {
            self.left(entry);
            self.dead.increment(1.0);
            super::metrics::dead_lettered(&self.flow, stage);
        }
    }

    async fn ack(&self, entry: &Queued, stop: &CancellationToken) {
        if let Some(true) = self
            .persist(entry, "ack it", stop, || self.store.ack(entry.seq))
            .await
        {
            self.left(entry);
        }
    }

    async fn reschedule(
        &self,
        entry: &Queued,
        attempts: u32,
        next_ms: i64,
        reason: &str,
        stop: &CancellationToken,
    ) -> bool {
        let reason = crate::config::secret::redact(reason);
        self.persist(entry, "record its retry", stop, || {
            self.store.reschedule(entry.seq, attempts, next_ms, &reason)
        })
        .await
        .is_some()
    }

    /// A store write that settles a delivery (ack, retry schedule, dead-letter move), tried
    /// again while the store cannot write: a full disk delays the verdict rather than leaving
    /// the message leased for [`LEASE`]. `None` if it gave up (another error, or shutdown);
    /// the message stays queued and is delivered again (a restart releases its lease).
    async fn persist<T, F>(
        &self,
        entry: &Queued,
        what: &str,
        stop: &CancellationToken,
        mut write: impl FnMut() -> F,
    ) -> Option<T>
    where
        F: Future<Output = Result<T, StoreError>>,
    {
        let mut wait = Duration::from_millis(100);
        let started = std::time::Instant::now();
        loop {
            let error = match write().await {
                Ok(done) => return Some(done),
                Err(error) => error,
            };
            // Past half the lease another worker may claim the message again: a verdict
            // written late would then overwrite that worker's, so leave it to the lease.
            if !matches!(error, StoreError::Unavailable { .. })
                || stop.is_cancelled()
                || started.elapsed() > LEASE / 2
            {
                tracing::error!(flow = %self.flow, id = entry.id, %error, "could not {what}; the message will be delivered again");
                return None;
            }
            // The store reports the outage itself, once.
            tracing::debug!(flow = %self.flow, id = entry.id, %error, "could not {what} yet; retrying");
            tokio::select! {
                _ = stop.cancelled() => return None,
                _ = tokio::time::sleep(wait) => {}
            }
            wait = (wait * 2).min(Duration::from_secs(5));
        }
    }
}

fn decode(entry: &Queued) -> Result<Message, String> {
    let value =
        decode_value(&entry.payload).map_err(|e| format!("stored message is unreadable: {e}"))?;
    let metadata = if entry.metadata.is_empty() {
        empty_object()
    } else {
        serde_json::from_slice(&entry.metadata)
            .map_err(|e| format!("stored metadata is unreadable: {e}"))?
    };
    let mut message = Message::new(value);
    message.metadata = metadata;
    // Read back from JSON, the trace context is a string of either kind VRL has.
    if let Value::Object(map) = &mut message.metadata
        && let Some(traceparent) = map.remove(TRACEPARENT_KEY)
    {
        message.traceparent = traceparent.to_str_lossy().map(|t| t.as_ref().into());
    }
    if let Ok(id) = entry.id.parse() {
        message.id = id;
    }
    Ok(message)
}

/// Where a stored message keeps the `traceparent` it came with.
pub const TRACEPARENT_KEY: &str = "weft_traceparent";

/// Re-reads the queue's depth from the store now and then: replays from `weft dlq` or another
/// process change it behind this process's counters. Also keeps the age gauge current.
pub async fn upkeep(queue: Arc<DurableQueue>, stop: CancellationToken) {
    let age = metrics::gauge!("weft_queue_oldest_age_seconds", "flow" => queue.flow.to_string());
    let rate = metrics::gauge!("weft_queue_drain_per_second", "flow" => queue.flow.to_string());
    let bytes = metrics::gauge!("weft_queue_bytes", "flow" => queue.flow.to_string());
    queue.sample_rate();
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(Duration::from_secs(2)) => {}
        }
        rate.set(queue.sample_rate());
        if let Ok(depth) = queue.store.depth(&queue.flow).await {
            queue.messages.store(depth.messages, Ordering::Relaxed);
            queue.bytes.store(depth.bytes, Ordering::Relaxed);
            queue.depth.set(depth.messages as f64);
            bytes.set(depth.bytes as f64);
            let oldest = depth
                .oldest_enqueued_at_ms
                .map_or(0, |t| (queue.clock.now_ms() - t).max(0));
            age.set(oldest as f64 / 1000.0);
            if depth.messages > 0 {
                queue.wake.notify_one();
            }
        }
        queue.count_dead().await;
    }
}

/// Delivers the flow's queue with up to `workers` messages in flight until `shutdown`: claims
/// as many due messages as there are free workers in one store call, hands each to a task, and
/// finishes the ones in hand before returning.
pub async fn work<P: Processor, O: Output>(
    flow: Arc<Flow<P, O>>,
    workers: u32,
    shutdown: CancellationToken,
) {
    let Some(queue) = flow.durable().cloned() else {
        return;
    };
    let slots = Arc::new(Semaphore::new(workers.max(1) as usize));
    let tasks = TaskTracker::new();
    while !shutdown.is_cancelled() {
        // A paused flow keeps its queue; delivery picks up where it stopped on resume.
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = flow.running() => {}
        }
        let first = tokio::select! {
            _ = shutdown.cancelled() => break,
            permit = slots.clone().acquire_owned() => permit.expect("the semaphore is never closed"),
        };
        let mut permits = vec![first];
        while let Ok(permit) = slots.clone().try_acquire_owned() {
            permits.push(permit);
        }
        let claimed = match queue
            .store
            .claim(
                &queue.flow,
                queue.clock.now_ms(),
                permits.len() as u32,
                LEASE,
            )
            .await
        {
            Ok(claimed) => claimed,
            Err(e) => {
                // The store reports an outage itself, once; anything else is news.
                if matches!(e, StoreError::Unavailable { .. }) {
                    tracing::debug!(flow = %queue.flow, error = %e, "cannot claim from the store queue; retrying");
                } else {
                    tracing::error!(flow = %queue.flow, error = %e, "cannot read the store queue; retrying");
                }
                drop(permits);
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        if claimed.is_empty() {
            drop(permits);
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = queue.wake.notified() => {}
                _ = tokio::time::sleep(IDLE_POLL) => {}
            }
            continue;
        }
        for (entry, permit) in claimed.into_iter().zip(permits) {
            let flow = flow.clone();
            let queue = queue.clone();
            let stop = shutdown.clone();
            tasks.spawn(async move {
                deliver(&flow, &queue, entry, &stop).await;
                drop(permit);
            });
        }
    }
    tasks.close();
    tasks.wait().await;
}

async fn deliver<P: Processor, O: Output>(
    flow: &Flow<P, O>,
    queue: &Arc<DurableQueue>,
    entry: Queued,
    stop: &CancellationToken,
) {
    let attempts = entry.attempts + 1;
    let message = match decode(&entry) {
        Ok(m) => m,
        Err(reason) => {
            flow.fail(entry.id.parse().ok(), "input", reason.clone());
            return queue
                .dead_letter(&entry, attempts, reason.into(), "unreadable", stop)
                .await;
        }
    };
    let span = flow.span(&message);
    let caller = message.traceparent.clone();
    crate::core::trace::with_caller(
        caller,
        tracing::Instrument::instrument(
            deliver_message(flow, queue, entry, message, attempts, stop),
            span,
        ),
    )
    .await;
}

/// One delivery attempt of a stored message (in its span).
async fn deliver_message<P: Processor, O: Output>(
    flow: &Flow<P, O>,
    queue: &Arc<DurableQueue>,
    entry: Queued,
    message: Message,
    attempts: u32,
    stop: &CancellationToken,
) {
    let id = message.id;
    let started = std::time::Instant::now();
    // A retry runs the pipeline again: a dedupe key this message took on an earlier attempt is
    // still its own, so it passes. Keys are given back only when the message dead-letters.
    let mut trail = Trail::default();
    let messages = match flow.transform(message, &mut trail).await {
        Ok(messages) => messages,
        Err(e @ FlowError::Busy { .. }) => {
            // Not a failed attempt: the message waits for the one holding its key.
            trail.settle_groups(&GroupOutcome::Retry(BUSY_WAIT));
            flow.release(trail.claims, id).await;
            let next = queue.clock.now_ms() + BUSY_WAIT.as_millis() as i64;
            tracing::debug!(flow = %flow.name, %id, error = %e, "waiting for the message holding its key");
            queue
                .reschedule(&entry, entry.attempts, next, "", stop)
                .await;
            return;
        }
        Err(e) => {
            let reason = e.to_string();
            trail.settle_groups(&GroupOutcome::Failed(reason.clone()));
            flow.release(trail.claims, id).await;
            flow.fail(Some(id), e.stage(), reason.clone());
            return queue
                .dead_letter(&entry, attempts, reason.into(), e.stage(), stop)
                .await;
        }
    };
    let elapsed = Duration::from_millis(
        queue
            .clock
            .now_ms()
            .saturating_sub(entry.enqueued_at_ms)
            .max(0) as u64,
    );
    let mut verdict = futures_util::future::join_all(
        messages
            .iter()
            .map(|message| flow.attempt(message, attempts, elapsed)),
    )
    .await
    .into_iter()
    .fold(Verdict::Delivered, Verdict::and);
    // The groups this message carries fare as it does; a message taken into a group, as the
    // group's message does (retried with it, or dead-lettered with it).
    trail.settle_groups(&verdict.group_outcome());
    // A message dropped on purpose was counted as filtered, not delivered.
    let delivered_any = !messages.is_empty() || !trail.joined.is_empty();
    if let Some(outcome) = trail.joined_outcome().await {
        verdict = verdict.and(Verdict::from_group(outcome));
    }
    match verdict {
        Verdict::Delivered => {
            flow.settle(trail.claims, id).await;
            if delivered_any {
                flow.count_delivered(id);
            }
            queue.ack(&entry, stop).await
        }
        Verdict::Failed { reason, response } => {
            flow.fail(Some(id), "output", reason.clone());
            let failure = Failure {
                reason,
                last_status: response.as_ref().map(|r| r.status),
                response_excerpt: response.map(|r| r.excerpt),
            };
            flow.release(trail.claims, id).await;
            queue
                .dead_letter(&entry, attempts, failure, "output", stop)
                .await
        }
        Verdict::Retry {
            wait,
            reason,
            status,
        } => {
            let now = queue.clock.now_ms();
            let next = now.saturating_add(i64::try_from(wait.as_millis()).unwrap_or(i64::MAX));
            let note = attempt_note(now, attempts, status, &reason, started.elapsed());
            if queue.reschedule(&entry, attempts, next, &note, stop).await && wait < IDLE_POLL {
                // An idle worker looks again only every IDLE_POLL: wake one when it is due.
                let queue = queue.clone();
                tokio::spawn(async move {
                    tokio::time::sleep(wait).await;
                    queue.wake.notify_one();
                });
            }
        }
    }
}

/// A failed attempt that will be retried, as a line of the message's history (the format
/// `weft_store::DeadLetter` describes; `admin::dlq` shows it).
pub fn attempt_note(
    at_ms: i64,
    attempt: u32,
    status: Option<u16>,
    error: &str,
    took: Duration,
) -> String {
    let mut note = serde_json::json!({
        "at": at_ms,
        "attempt": attempt,
        "outcome": "retry",
        "error": error,
        "duration_ms": u64::try_from(took.as_millis()).unwrap_or(u64::MAX),
    });
    if let Some(status) = status {
        note["status"] = status.into();
    }
    note.to_string()
}

/// How often a direct flow looks for replayed dead letters.
const REPLAY_POLL: Duration = Duration::from_secs(1);

/// Delivers what `weft dlq replay` put back on a direct flow's store queue. A direct flow has
/// no delivery workers, so its replayed dead letters are claimed here, one at a time, and go
/// through the pipeline as a direct message does (its outputs' retries included); one that
/// fails again goes back to the dead-letter queue with its history.
pub async fn replays<P: Processor, O: Output>(flow: Arc<Flow<P, O>>, shutdown: CancellationToken) {
    let Some(store) = flow.store().cloned() else {
        return;
    };
    let clock = Clock::default();
    while !shutdown.is_cancelled() {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = flow.running() => {}
        }
        // A read first: a claim is a write, and replays are rare.
        let waiting = store
            .depth(&flow.name)
            .await
            .is_ok_and(|depth| depth.messages > 0);
        let claimed = if waiting {
            store
                .claim(&flow.name, clock.now_ms(), 1, LEASE)
                .await
                .unwrap_or_else(|e| {
                    tracing::debug!(flow = %flow.name, error = %e, "cannot claim a replayed message yet");
                    Vec::new()
                })
        } else {
            Vec::new()
        };
        if claimed.is_empty() {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(REPLAY_POLL) => {}
            }
        }
        for entry in claimed {
            redeliver(&flow, &store, entry, &clock).await;
        }
    }
}

/// One replayed message of a direct flow: delivered and acked, or dead-lettered again. A store
/// write that fails leaves it leased; it is delivered again when the lease runs out.
async fn redeliver<P: Processor, O: Output>(
    flow: &Flow<P, O>,
    store: &Store,
    entry: Queued,
    clock: &Clock,
) {
    let attempts = entry.attempts + 1;
    let (failure, stage) = match decode(&entry) {
        Ok(message) => {
            let admission = flow.admit().await;
            let result = flow.process(message).await;
            drop(admission);
            match result {
                Ok(_) => {
                    if let Err(e) = store.ack(entry.seq).await {
                        tracing::error!(flow = %flow.name, id = entry.id, error = %e, "could not ack a replayed message; it will be delivered again");
                    }
                    return;
                }
                Err(e) => (Failure::from(e.to_string()), e.stage()),
            }
        }
        Err(reason) => (Failure::from(reason), "unreadable"),
    };
    tracing::error!(flow = %flow.name, id = entry.id, attempts, reason = %failure.reason, "replayed message failed again; moved to the dead-letter queue");
    match store
        .dead_letter(entry.seq, attempts, failure, clock.now_ms())
        .await
    {
        Ok(_) => super::metrics::dead_lettered(&flow.name, stage),
        Err(e) => {
            tracing::error!(flow = %flow.name, id = entry.id, error = %e, "could not move a replayed message to the dead-letter queue; it will be delivered again")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stored_message_keeps_its_callers_trace_context() {
        let mut message = Message::new(Value::from("x"));
        message.traceparent =
            Some("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".into());
        let (payload, metadata) = encode(&message).unwrap();
        let entry = Queued {
            seq: 1,
            flow: "f".into(),
            id: message.id.to_string(),
            payload,
            metadata,
            enqueued_at_ms: 0,
            attempts: 0,
            last_error: None,
            history: Vec::new(),
        };
        let stored = decode(&entry).unwrap();
        assert_eq!(stored.traceparent, message.traceparent);
        assert_eq!(
            stored.metadata, message.metadata,
            "the key of weft's own is gone"
        );
    }
}
