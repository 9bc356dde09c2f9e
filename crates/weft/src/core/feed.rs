//! What a reading input is handed: [`Feed`], its flow (never the topology), the shutdown signal
//! and the task tracker, with the ways to hand messages over (one at a time, or a batch whose
//! acknowledgements wait for delivery), reconnect loops and polling schedules, and checkpoints.
//! Generic over the flow's processors and outputs, so the inputs name neither registry.

use std::sync::Arc;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::flow::{Flow, Processed};
use super::{Message, Output, Processor};

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

/// Where the checkpoints of polling inputs live in the store (keyed by flow).
const CHECKPOINT_NAMESPACE: &str = "checkpoint";

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
                    Ok(false) => break,
                    Err(error) => {
                        self.flow.count_rejected();
                        tracing::error!(flow = %self.flow.name, component, %error, "poll ended early; the next poll starts from the last checkpoint");
                        break;
                    }
                }
            }
        }
    }

    /// The checkpoint this flow's input saved last, if any.
    pub async fn load_checkpoint<T: serde::de::DeserializeOwned>(
        &self,
    ) -> Result<Option<T>, String> {
        let store = self.flow.store().ok_or("the flow has no store")?;
        match store
            .kv_get(
                CHECKPOINT_NAMESPACE,
                &self.flow.name,
                crate::core::clock::now_ms(),
            )
            .await
            .map_err(|e| e.to_string())?
        {
            Some(saved) => serde_json::from_slice(&saved)
                .map(Some)
                .map_err(|e| format!("the saved checkpoint is unreadable: {e}")),
            None => Ok(None),
        }
    }

    /// Saves this flow's input checkpoint: call it only once what it covers was accepted.
    pub async fn save_checkpoint<T: serde::Serialize>(&self, mark: &T) -> Result<(), String> {
        let store = self.flow.store().ok_or("the flow has no store")?;
        let text = serde_json::to_vec(mark).map_err(|e| e.to_string())?;
        store
            .kv_put(CHECKPOINT_NAMESPACE, &self.flow.name, &text, None)
            .await
            .map_err(|e| format!("could not save the checkpoint: {e}"))
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
                        self.flow.count_rejected();
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
    /// Hands a batch to the flow and waits until every message of it is taken: committed
    /// (durable) or delivered (direct). `false` if any failed or shutdown came first, so the
    /// caller does not checkpoint past the batch.
    pub async fn push_and_wait(&self, messages: Vec<Message>) -> bool {
        self.push_each_and_wait(messages)
            .await
            .into_iter()
            .all(|taken| taken)
    }

    /// [`Feed::push_and_wait`] with each message's own outcome, in order, for sources that
    /// acknowledge message by message. A message not reached before shutdown is `false`.
    pub async fn push_each_and_wait(&self, messages: Vec<Message>) -> Vec<bool> {
        let count = messages.len();
        let mut outcomes = Vec::with_capacity(count);
        if self.flow.durable().is_some() {
            for message in messages {
                if !self.push(message).await {
                    break;
                }
                outcomes.push(true);
            }
            outcomes.resize(count, false);
            return outcomes;
        }
        let mut running = Vec::with_capacity(count);
        for message in messages {
            let admission = tokio::select! {
                biased;
                _ = self.shutdown.cancelled() => break,
                a = self.flow.admit() => a,
            };
            let flow = self.flow.clone();
            running.push(self.tasks.spawn(async move {
                let id = message.id;
                let done = match flow.process(message).await {
                    Ok(_) => true,
                    Err(error) => {
                        tracing::error!(%id, %error, "message failed");
                        false
                    }
                };
                drop(admission);
                done
            }));
        }
        for task in running {
            outcomes.push(task.await.unwrap_or(false));
        }
        outcomes.resize(count, false);
        outcomes
    }
}
