//! What a reading input is handed: [`Feed`], its flow (never the topology), the shutdown signal
//! and the task tracker, with the ways to hand messages over (one at a time, with or without
//! waiting for what became of it, or a poller's page), reconnect loops and polling schedules,
//! and checkpoints.
//! Generic over the flow's processors and outputs, so the inputs name neither registry.
//!
//! A broker input of a direct flow hands each message over with [`Feed::deliver`]: it is tried
//! up to [`Redelivery::max_deliveries`] times with a growing pause, then kept in the flow's
//! dead-letter queue and acknowledged, so one message that can never be delivered neither
//! spins nor holds the broker's in-flight window for ever.

use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::flow::{Flow, FlowError, Processed};
use super::{Message, Output, Processor};
use crate::config::units::Dur;

/// What a reading input needs to hand messages to its flow.
pub struct Feed<P, O> {
    pub flow: Arc<Flow<P, O>>,
    pub shutdown: CancellationToken,
    pub tasks: TaskTracker,
}

// By hand: a derived `Clone` would ask `P` and `O` to be `Clone`, and only the `Arc` is cloned.
impl<P, O> Clone for Feed<P, O> {
    fn clone(&self) -> Self {
        Feed {
            flow: self.flow.clone(),
            shutdown: self.shutdown.clone(),
            tasks: self.tasks.clone(),
        }
    }
}

/// How long a connection-based input waits before it connects again after a failure.
const RECONNECT_DELAY: std::time::Duration = std::time::Duration::from_secs(1);

/// Whether a connection-based input's reading may be dropped at shutdown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AtShutdown {
    /// Dropped: nothing it holds waits for an acknowledgement (pub/sub).
    Cancel,
    /// Left to end by itself, so what is under way is finished and acknowledged.
    Finish,
}

/// How a broker input of a direct flow gives up on a message that keeps failing. (A durable
/// flow acknowledges a message once it is stored; its outputs' `retry` takes over from there.)
///
/// ```yaml
/// redelivery: { max_deliveries: 5, backoff: 1s, max_backoff: 30s }
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Redelivery {
    /// Deliveries in all, the first included; then the message goes to the flow's dead-letter
    /// queue (`weft dlq`) and is acknowledged. `0` tries for ever. Default `5`.
    #[serde(default = "default_max_deliveries")]
    pub max_deliveries: u32,
    /// Pause before the second delivery, doubling after each. Default `1s`.
    #[serde(default = "default_backoff")]
    pub backoff: Dur,
    /// Longest pause between deliveries. Default `30s`.
    #[serde(default = "default_max_backoff")]
    pub max_backoff: Dur,
}

impl Default for Redelivery {
    fn default() -> Self {
        Redelivery {
            max_deliveries: default_max_deliveries(),
            backoff: default_backoff(),
            max_backoff: default_max_backoff(),
        }
    }
}

impl Redelivery {
    /// The pause after the `delivered`-th delivery failed: `backoff`, doubling, at most
    /// `max_backoff` (a thousand times shorter under `weft test`).
    pub fn pause(&self, delivered: u32) -> Duration {
        let doubled = self
            .backoff
            .0
            .saturating_mul(1u32 << delivered.saturating_sub(1).min(20));
        doubled.min(self.max_backoff.0) / crate::core::retry::time_scale()
    }
}

fn default_max_deliveries() -> u32 {
    5
}

fn default_backoff() -> Dur {
    Dur(Duration::from_secs(1))
}

fn default_max_backoff() -> Dur {
    Dur(Duration::from_secs(30))
}

/// What became of a message handed over with [`Feed::deliver`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Delivered (direct) or stored (durable): acknowledge it.
    Taken,
    /// Failed `max_deliveries` times and was given up on: kept in the flow's dead-letter queue
    /// ([`GiveUp::Store`]: acknowledge it), or left to the broker's own dead-letter route
    /// ([`GiveUp::Broker`]: refuse it without requeueing).
    GivenUp,
    /// Shutdown came first: leave it unacknowledged, so the broker offers it again.
    Left,
    /// Failed ([`Feed::attempt`] only): have the broker offer it again after this pause.
    Again(Duration),
}

/// Where a message given up on goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GiveUp {
    /// The flow's dead-letter queue in weft's store.
    Store,
    /// The broker's own dead-letter mechanism (the input refuses the message).
    Broker,
}

/// How long a message waits when another one holds its dedupe key.
const BUSY_PAUSE: Duration = Duration::from_secs(1);

/// Earlier failures kept with a message until it is given up on (for ever-redelivered
/// messages, only the first ones).
const HISTORY_KEPT: usize = 20;

impl<P: Processor, O: Output> Feed<P, O> {
    /// Runs `attempt` — one connection's worth of reading — again and again until it ends by
    /// itself or shutdown comes. A failure is logged, naming the component and the server
    /// (never its credentials), and followed by a pause.
    pub async fn keep_reading<F, Fut, E>(
        &self,
        component: &str,
        server: &str,
        at_shutdown: AtShutdown,
        mut attempt: F,
    ) where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<(), E>>,
        E: std::fmt::Display,
    {
        loop {
            let ran = match at_shutdown {
                AtShutdown::Cancel => tokio::select! {
                    biased;
                    _ = self.shutdown.cancelled() => return,
                    r = attempt() => r,
                },
                AtShutdown::Finish => attempt().await,
            };
            match ran {
                Ok(()) => return,
                Err(error) => {
                    tracing::error!(flow = %self.flow.name, component, server, %error, "reading failed; connecting again");
                    tokio::select! {
                        _ = self.shutdown.cancelled() => return,
                        _ = tokio::time::sleep(RECONNECT_DELAY) => {}
                    }
                }
            }
        }
    }

    /// Runs `poll` on `schedule` until shutdown. A poll answering `Ok(true)` (more pages are
    /// waiting) is followed at once by the next; a failure is logged and counted, and the next
    /// poll starts from the last checkpoint.
    pub async fn poll_on_schedule<F, Fut>(
        &self,
        schedule: &crate::core::schedule::Schedule,
        component: &str,
        at_shutdown: AtShutdown,
        mut poll: F,
    ) where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<bool, String>>,
    {
        let mut ticker = schedule.ticker();
        loop {
            tokio::select! {
                biased;
                _ = self.shutdown.cancelled() => return,
                _ = ticker.tick() => {}
            }
            while !self.shutdown.is_cancelled() {
                // A paused flow does not poll (nor hold a page it could not hand over).
                tokio::select! {
                    biased;
                    _ = self.shutdown.cancelled() => return,
                    _ = self.flow.running() => {}
                }
                let polled = match at_shutdown {
                    AtShutdown::Cancel => tokio::select! {
                        biased;
                        _ = self.shutdown.cancelled() => return,
                        r = poll() => r,
                    },
                    AtShutdown::Finish => poll().await,
                };
                match polled {
                    Ok(true) => {}
                    Ok(false) => {
                        if let Some(polling) = self.flow.polling() {
                            polling.polled_ms.store(
                                crate::core::clock::now_ms(),
                                std::sync::atomic::Ordering::Relaxed,
                            );
                        }
                        break;
                    }
                    Err(error) => {
                        self.flow.count_rejected(&error);
                        tracing::error!(flow = %self.flow.name, component, %error, "poll ended early; the next poll starts from the last checkpoint");
                        break;
                    }
                }
            }
        }
    }

    /// Where this flow's input keeps its checkpoint: its `checkpoint_key`, else the flow name.
    fn checkpoint_key(&self) -> &str {
        self.flow
            .polling()
            .map_or(&*self.flow.name, |p| p.checkpoint_key.as_str())
    }

    /// The checkpoint this flow's input saved last, if any.
    pub async fn load_checkpoint<T: serde::de::DeserializeOwned>(
        &self,
    ) -> Result<Option<T>, String> {
        let store = self.flow.store().ok_or("the flow has no store")?;
        let stored = crate::core::checkpoint::load_stored(store, self.checkpoint_key()).await?;
        if let Some(polling) = self.flow.polling() {
            *polling.read.lock().unwrap_or_else(|p| p.into_inner()) =
                Some(stored.as_ref().map(|(_, bytes)| bytes.clone()));
        }
        let Some((saved, _)) = stored else {
            return Ok(None);
        };
        if let (Some(polling), Some(at)) = (self.flow.polling(), saved.saved_at) {
            polling
                .saved_ms
                .store(at, std::sync::atomic::Ordering::Relaxed);
        }
        serde_json::from_value(saved.value)
            .map(Some)
            .map_err(|e| format!("the saved checkpoint is unreadable: {e}"))
    }

    /// Saves this flow's input checkpoint: call it only once what it covers was accepted.
    pub async fn save_checkpoint<T: serde::Serialize>(&self, mark: &T) -> Result<(), String> {
        let store = self.flow.store().ok_or("the flow has no store")?;
        let value = serde_json::to_value(mark).map_err(|e| e.to_string())?;
        let key = self.checkpoint_key();
        let Some(polling) = self.flow.polling() else {
            crate::core::checkpoint::save(store, key, value).await?;
            return Ok(());
        };
        let read = polling
            .read
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let at = match read {
            Some(read) => {
                let (at, bytes) =
                    crate::core::checkpoint::save_over(store, key, value, read.as_deref()).await?;
                *polling.read.lock().unwrap_or_else(|p| p.into_inner()) = Some(Some(bytes));
                at
            }
            None => crate::core::checkpoint::save(store, key, value).await?,
        };
        polling
            .saved_ms
            .store(at, std::sync::atomic::Ordering::Relaxed);
        Ok(())
    }

    /// Waits for a place in flight, then processes `message` in its own task.
    /// Returns `false` if shutdown came first (the message was not accepted).
    pub async fn push(&self, message: Message) -> bool {
        if let Some(queue) = self.flow.durable() {
            tokio::select! {
                _ = self.shutdown.cancelled() => return false,
                _ = self.flow.running() => {}
            }
            // Wait for room, then for the commit: that is this input's backpressure.
            loop {
                let reservation = loop {
                    if let Some(r) = queue.reserve() {
                        break r;
                    }
                    tokio::select! {
                        _ = self.shutdown.cancelled() => return false,
                        _ = tokio::time::sleep(std::time::Duration::from_millis(50)) => {}
                    }
                };
                match queue.accept(reservation, &message).await {
                    Ok(()) => {
                        self.flow.count_received();
                        return true;
                    }
                    Err(error @ crate::core::durable::AcceptError::OrderKey(_)) => {
                        // This message can never be keyed; retrying would stall the input.
                        tracing::error!(flow = %self.flow.name, id = %message.id, %error, "message rejected");
                        self.flow.count_rejected(&error);
                        return true;
                    }
                    Err(error) => {
                        if error.is_outage() {
                            tracing::debug!(flow = %self.flow.name, %error, "could not store a message; retrying");
                        } else {
                            tracing::error!(flow = %self.flow.name, %error, "could not store a message; retrying");
                        }
                        tokio::select! {
                            _ = self.shutdown.cancelled() => return false,
                            _ = tokio::time::sleep(std::time::Duration::from_secs(1)) => {}
                        }
                    }
                }
            }
        }
        let admission = tokio::select! {
            biased;
            _ = self.shutdown.cancelled() => return false,
            a = self.flow.admit() => a,
        };
        let flow = self.flow.clone();
        self.tasks.spawn(async move {
            let id = message.id;
            match flow.process(message).await {
                Ok(Processed::Delivered(_) | Processed::Filtered) => {}
                Err(error) => tracing::error!(%id, %error, "message failed"),
            }
            drop(admission);
        });
        true
    }
}

impl<P: Processor, O: Output> Feed<P, O> {
    /// Hands one message a broker read to the flow and waits for what became of it: stored
    /// (durable), or delivered, or given up on after `redelivery.max_deliveries` (direct),
    /// offering it again in between here, after a growing pause in which it gives its place in
    /// flight back. For brokers that redeliver one message while the others go on.
    pub async fn deliver(
        &self,
        message: Message,
        redelivery: &Redelivery,
        give_up: GiveUp,
    ) -> Outcome {
        if self.flow.durable().is_some() {
            return self.stored(message).await;
        }
        self.deliver_admitted(Copies::Kept(&message), redelivery, give_up, None)
            .await
    }

    /// [`Feed::deliver`] for a message `make` makes afresh for each delivery (from the bytes
    /// a broker gave, say) instead of one kept and copied: a message taken at its first
    /// delivery is made once and never copied. Every one made carries the same id.
    pub async fn deliver_made(
        &self,
        make: impl Fn() -> Message + Send + Sync,
        redelivery: &Redelivery,
        give_up: GiveUp,
    ) -> Outcome {
        let copies = Copies::Made(&make, ulid::Ulid::new());
        self.deliver_admitted(copies, redelivery, give_up, None)
            .await
    }

    /// [`Feed::push`] for sources that cannot offer a message again (pub/sub): waits for a
    /// place in flight, then delivers the message in its own task as [`Feed::deliver`] does
    /// (offered again here, then kept in the flow's dead-letter queue). `false` if shutdown
    /// came first.
    pub async fn push_kept(&self, message: Message, redelivery: &Redelivery) -> bool {
        if self.flow.durable().is_some() {
            return self.push(message).await;
        }
        let admission = tokio::select! {
            biased;
            _ = self.shutdown.cancelled() => return false,
            a = self.flow.admit() => a,
        };
        let feed = self.clone();
        let redelivery = redelivery.clone();
        self.tasks.spawn(async move {
            feed.deliver_admitted(
                Copies::Kept(&message),
                &redelivery,
                GiveUp::Store,
                Some(admission),
            )
            .await
        });
        true
    }

    /// [`Feed::deliver`]; with `held`, every delivery and pause in that place in flight, so a
    /// source that cannot wait (pub/sub) is not read further while its messages retry.
    async fn deliver_admitted(
        &self,
        copies: Copies<'_>,
        redelivery: &Redelivery,
        give_up: GiveUp,
        held: Option<super::flow::Admission>,
    ) -> Outcome {
        if self.flow.durable().is_some() {
            return self.stored(copies.make()).await;
        }
        let first_ms = crate::core::clock::now_ms();
        let mut history = Vec::new();
        let mut delivered = 0u32;
        loop {
            delivered += 1;
            let pause = match self
                .try_once(
                    &copies,
                    delivered,
                    redelivery,
                    give_up,
                    &mut history,
                    first_ms,
                    held.is_some(),
                )
                .await
            {
                Outcome::Again(pause) => pause,
                done => return done,
            };
            tokio::select! {
                _ = self.shutdown.cancelled() => return Outcome::Left,
                _ = tokio::time::sleep(pause) => {}
            }
        }
    }

    /// Hands a page of messages a poller read to the flow and waits until each is taken:
    /// stored, in order (durable), or delivered or given up on as [`Feed::deliver`] does
    /// (direct), so one record that cannot be delivered does not stall the sync. `false` if
    /// shutdown came first, so the caller does not checkpoint past the page.
    pub async fn deliver_all(&self, messages: Vec<Message>, redelivery: &Redelivery) -> bool {
        if self.flow.durable().is_some() {
            return self
                .store_each(messages)
                .await
                .into_iter()
                .all(|taken| taken);
        }
        all_taken(
            futures_util::future::join_all(
                messages
                    .into_iter()
                    .map(|m| self.deliver(m, redelivery, GiveUp::Store)),
            )
            .await,
        )
    }

    /// [`Feed::deliver_all`] for items that `make` makes a message of for each delivery
    /// (see [`Feed::deliver_made`]).
    pub async fn deliver_all_made<T: Sync>(
        &self,
        items: &[T],
        make: impl Fn(&T) -> Message + Sync,
        redelivery: &Redelivery,
    ) -> bool {
        if self.flow.durable().is_some() {
            return self
                .store_each(items.iter().map(&make).collect())
                .await
                .into_iter()
                .all(|taken| taken);
        }
        let make = &make;
        all_taken(
            futures_util::future::join_all(
                items
                    .iter()
                    .map(|item| self.deliver_made(move || make(item), redelivery, GiveUp::Store)),
            )
            .await,
        )
    }

    /// One delivery of a message the broker has now delivered `delivered` times (its own
    /// count): [`Outcome::Again`] asks the broker to offer it again after the pause, and the
    /// delivery that reaches `redelivery.max_deliveries` gives up. For brokers that keep the
    /// count and the pause themselves (JetStream, Redis streams).
    pub async fn attempt(
        &self,
        message: Message,
        delivered: u32,
        redelivery: &Redelivery,
        give_up: GiveUp,
    ) -> Outcome {
        if self.flow.durable().is_some() {
            return self.stored(message).await;
        }
        let first_ms = crate::core::clock::now_ms();
        let mut history = Vec::new();
        self.try_once(
            &Copies::Kept(&message),
            delivered.max(1),
            redelivery,
            give_up,
            &mut history,
            first_ms,
            false,
        )
        .await
    }

    /// A durable flow takes a message by storing it; the store's queue retries it from there.
    async fn stored(&self, message: Message) -> Outcome {
        if self.push(message).await {
            Outcome::Taken
        } else {
            Outcome::Left
        }
    }

    #[allow(clippy::too_many_arguments)]
    async fn try_once(
        &self,
        copies: &Copies<'_>,
        delivered: u32,
        redelivery: &Redelivery,
        give_up: GiveUp,
        history: &mut Vec<String>,
        first_ms: i64,
        held: bool,
    ) -> Outcome {
        let (started, error) = loop {
            let admission = if held {
                None
            } else {
                Some(tokio::select! {
                    biased;
                    _ = self.shutdown.cancelled() => return Outcome::Left,
                    a = self.flow.admit() => a,
                })
            };
            let started = std::time::Instant::now();
            let result = self.flow.process(copies.make()).await;
            drop(admission);
            match result {
                Ok(_) => return Outcome::Taken,
                // Another message holds its key (dedupe): a wait, not a failed delivery.
                Err(FlowError::Busy { .. }) => {
                    tokio::select! {
                        _ = self.shutdown.cancelled() => return Outcome::Left,
                        _ = tokio::time::sleep(BUSY_PAUSE / crate::core::retry::time_scale()) => {}
                    }
                }
                Err(error) => break (started, error),
            }
        };
        if redelivery.max_deliveries != 0 && delivered >= redelivery.max_deliveries {
            let history = std::mem::take(history);
            return self
                .give_up(
                    &copies.make(),
                    delivered,
                    &error,
                    history,
                    first_ms,
                    give_up,
                )
                .await;
        }
        let pause = redelivery.pause(delivered);
        tracing::warn!(flow = %self.flow.name, id = %copies.id(), delivered, %error, "delivery failed; offering it again in {pause:?}");
        if history.len() < HISTORY_KEPT {
            history.push(crate::core::durable::attempt_note(
                crate::core::clock::now_ms(),
                delivered,
                None,
                &crate::config::secret::redact(&error.to_string()),
                started.elapsed(),
            ));
        }
        Outcome::Again(pause)
    }

    /// The last delivery failed: keep the message as a dead letter (trying the store again
    /// while it cannot write), or leave it to the broker.
    async fn give_up(
        &self,
        message: &Message,
        attempts: u32,
        error: &FlowError,
        history: Vec<String>,
        first_ms: i64,
        give_up: GiveUp,
    ) -> Outcome {
        let flow = &self.flow.name;
        if give_up == GiveUp::Broker {
            crate::core::metrics::dead_lettered(flow, error.stage());
            tracing::error!(%flow, id = %message.id, attempts, %error, "given up on; refused to the broker's dead-letter route");
            return Outcome::GivenUp;
        }
        let Some(store) = self.flow.store() else {
            // The engine opens a store for every flow whose input can give up; without one
            // the message stays with the broker.
            tracing::error!(%flow, id = %message.id, %error, "given up on, but the flow has no store for dead letters; left to the broker");
            return Outcome::Left;
        };
        let (payload, metadata) = match crate::core::durable::encode(message) {
            Ok(encoded) => encoded,
            Err(e) => (
                format!(
                    "j{}",
                    serde_json::Value::String(format!("(not storable: {e})"))
                )
                .into_bytes(),
                b"{}".to_vec(),
            ),
        };
        let letter = weft_store::DeadLetter {
            id: message.id.to_string(),
            flow: flow.to_string(),
            payload,
            metadata,
            enqueued_at_ms: first_ms,
            failed_at_ms: crate::core::clock::now_ms(),
            attempts,
            failure: crate::config::secret::redact(&error.to_string())
                .into_owned()
                .into(),
            history,
        };
        let mut wait = Duration::from_millis(100);
        loop {
            match store.bury(letter.clone()).await {
                Ok(()) => {
                    crate::core::metrics::dead_lettered(flow, error.stage());
                    tracing::error!(%flow, id = %message.id, attempts, %error, "message moved to the dead-letter queue");
                    return Outcome::GivenUp;
                }
                Err(e) => {
                    tracing::warn!(%flow, id = %message.id, error = %e, "could not keep the dead letter yet; retrying");
                }
            }
            tokio::select! {
                _ = self.shutdown.cancelled() => return Outcome::Left,
                _ = tokio::time::sleep(wait) => {}
            }
            wait = (wait * 2).min(Duration::from_secs(5));
        }
    }

    /// A durable flow's batch, stored one message after the other, in order: each message's
    /// outcome (`false`: shutdown came first, and it was not stored).
    pub async fn store_each(&self, messages: Vec<Message>) -> Vec<bool> {
        let count = messages.len();
        let mut outcomes = Vec::with_capacity(count);
        for message in messages {
            if !self.push(message).await {
                break;
            }
            outcomes.push(true);
        }
        outcomes.resize(count, false);
        outcomes
    }
}

/// Whether every message of a page was delivered or given up on (so the page may be
/// checkpointed past).
fn all_taken(outcomes: Vec<Outcome>) -> bool {
    outcomes
        .iter()
        .all(|o| matches!(o, Outcome::Taken | Outcome::GivenUp))
}

/// Where each delivery of a message gets its own copy (the flow takes it and changes it).
enum Copies<'a> {
    /// Copied from the message kept here.
    Kept(&'a Message),
    /// Made afresh, under the one id.
    Made(&'a (dyn Fn() -> Message + Send + Sync), ulid::Ulid),
}

impl Copies<'_> {
    fn make(&self) -> Message {
        match self {
            Copies::Kept(message) => (*message).clone(),
            Copies::Made(make, id) => {
                let mut message = make();
                message.id = *id;
                message
            }
        }
    }

    fn id(&self) -> ulid::Ulid {
        match self {
            Copies::Kept(message) => message.id,
            Copies::Made(_, id) => *id,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pause_between_deliveries_doubles_up_to_its_cap() {
        let r = Redelivery {
            max_deliveries: 0,
            backoff: Dur(Duration::from_millis(100)),
            max_backoff: Dur(Duration::from_millis(500)),
        };
        let pauses: Vec<u128> = (1..=6).map(|n| r.pause(n).as_millis()).collect();
        assert_eq!(pauses, [100, 200, 400, 500, 500, 500]);
        // A count far past any cap neither overflows nor panics.
        assert_eq!(r.pause(u32::MAX).as_millis(), 500);
    }
}
