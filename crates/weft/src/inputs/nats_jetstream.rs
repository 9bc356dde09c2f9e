//! `nats_jetstream`: reads a JetStream stream through a durable pull consumer, acknowledging
//! each message only once it was delivered (or, in a durable flow, committed). It keeps one
//! continuous pull (the next batch is asked for while half of one is still on its way, with
//! idle heartbeats as a watchdog) and up to `batch` messages at work at once. A message whose
//! delivery failed is refused with a delay (`redelivery.backoff`, doubling), so JetStream
//! offers it again then while the others go on; the delivery that reaches
//! `redelivery.max_deliveries` (JetStream's own count) keeps it in the flow's dead-letter queue
//! and terminates it (`term`, which JetStream announces as an advisory). One never acknowledged
//! (weft stopped or crashed) comes back after the consumer's ack wait; a long delivery tells
//! JetStream it is still at work, so it is not offered twice meanwhile.
//! The consumer is created if it does not exist; the stream must exist, or is created with
//! `create_subjects`. The subject is in `%nats.subject`.
//!
//! ```yaml
//! input:
//!   nats_jetstream:
//!     url: nats://127.0.0.1:4222
//!     stream: ORDERS
//!     consumer: weft                 # durable name
//!     create_subjects: ["orders.>"]  # create the stream if it is missing
//!     redelivery: { max_deliveries: 5, backoff: 5s }
//! ```

use std::time::Duration;

use async_nats::jetstream::{self, AckKind, consumer::pull};
use futures_util::{FutureExt, StreamExt};
use serde::Deserialize;

use super::{AtShutdown, Feed, GiveUp, Outcome, Redelivery};
use crate::clients::Resources;
use crate::clients::Shared;
use crate::clients::nats::Nats;
use crate::config::BuildError;
use crate::config::Secret;
use crate::config::units::Dur;
use crate::core::Message;
use crate::core::body::payload;
use crate::core::mapping::{Value, empty_object, insert};
use crate::core::{Output, Processor};

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[schemars(rename = "NatsJetstreamInput")]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// `nats://[user:password@]host:4222`.
    pub url: Secret,
    /// The stream to read.
    pub stream: String,
    /// The durable consumer's name; keep it stable across restarts.
    #[serde(default = "default_consumer")]
    pub consumer: String,
    /// Subjects for the stream, when weft should create it.
    #[serde(default)]
    pub create_subjects: Vec<String>,
    /// The most messages pulled at once, and at work at once.
    #[serde(default = "default_batch")]
    pub batch: usize,
    /// How often a failing message is offered again before it is dead-lettered.
    #[serde(default)]
    pub redelivery: Redelivery,
    /// How long JetStream waits for an acknowledgement before offering a message again. An
    /// existing consumer with another ack wait is updated to this one at start (its other
    /// settings kept); a server that refuses the update is reported, and the consumer's own
    /// ack wait used.
    #[serde(default = "default_ack_wait")]
    pub ack_wait: Dur,
}

fn default_consumer() -> String {
    "weft".into()
}
fn default_batch() -> usize {
    100
}
fn default_ack_wait() -> Dur {
    Dur(Duration::from_secs(60))
}

pub struct NatsJetstream {
    nats: Nats,
    config: Config,
}

/// How long one pull request of the continuous pull stays open on the server.
const PULL_EXPIRES: Duration = Duration::from_secs(30);
/// How often the server says a pull request is alive while it has nothing to send; two missed
/// end the read, and it connects again.
const HEARTBEAT: Duration = Duration::from_secs(5);

impl super::Spec for Config {
    type Built = NatsJetstream;

    fn build(
        self,
        _shared: &Shared,
        _resources: &Resources,
    ) -> Result<NatsJetstream, Vec<BuildError>> {
        let nats = Nats::open(&self.url).map_err(|e| vec![BuildError::new("url", e)])?;
        if self.batch == 0 {
            return Err(vec![BuildError::new("batch", "at least 1")]);
        }
        Ok(NatsJetstream { nats, config: self })
    }
}

impl NatsJetstream {
    /// The consumer with the config's `ack_wait`: an existing consumer made with another is
    /// updated, keeping every other setting (the server changes an ack wait in place). If the
    /// server refuses, that is said, and the consumer is used as it is.
    async fn apply_ack_wait(
        &self,
        stream: &jetstream::stream::Stream,
        consumer: jetstream::consumer::PullConsumer,
        flow: &str,
    ) -> jetstream::consumer::PullConsumer {
        use jetstream::consumer::FromConsumer;
        let (had, wanted) = (
            consumer.cached_info().config.ack_wait,
            self.config.ack_wait.0,
        );
        if had == wanted {
            return consumer;
        }
        let component = "input.nats_jetstream";
        let name = &self.config.consumer;
        let updated =
            match pull::Config::try_from_consumer_config(consumer.cached_info().config.clone()) {
                Ok(config) => stream
                    .create_consumer(pull::Config {
                        ack_wait: wanted,
                        ..config
                    })
                    .await
                    .map_err(|e| e.to_string()),
                Err(e) => Err(e.to_string()),
            };
        match updated {
            Ok(updated) => {
                tracing::info!(flow, component, consumer = %name, from = ?had, to = ?wanted, "ack_wait of the existing consumer changed to the config's");
                updated
            }
            Err(error) => {
                tracing::warn!(flow, component, consumer = %name, kept = ?had, config = ?wanted, %error, "the server refused to change the consumer's ack_wait: the consumer's own is used (delete the consumer to make it anew)");
                consumer
            }
        }
    }

    async fn consume(&self, feed: &Feed<impl Processor, impl Output>) -> Result<(), String> {
        let c = &self.config;
        let client = self.nats.client().await.map_err(|e| e.to_string())?;
        let context = jetstream::new(client);
        let stream = if c.create_subjects.is_empty() {
            context
                .get_stream(&c.stream)
                .await
                .map_err(|e| e.to_string())?
        } else {
            context
                .get_or_create_stream(jetstream::stream::Config {
                    name: c.stream.clone(),
                    subjects: c.create_subjects.clone(),
                    ..Default::default()
                })
                .await
                .map_err(|e| e.to_string())?
        };
        let consumer: jetstream::consumer::PullConsumer = stream
            .get_or_create_consumer(
                &c.consumer,
                pull::Config {
                    durable_name: Some(c.consumer.clone()),
                    ack_policy: jetstream::consumer::AckPolicy::Explicit,
                    ack_wait: c.ack_wait.0,
                    ..Default::default()
                },
            )
            .await
            .map_err(|e| e.to_string())?;
        let consumer = self
            .apply_ack_wait(&stream, consumer, &feed.flow.name)
            .await;
        // The consumer's own: the config's, unless the server refused to change it.
        let ack_wait = consumer.cached_info().config.ack_wait;
        // One continuous pull: the client asks for more while half a batch is still on its
        // way, and a missed idle heartbeat (the server or the consumer gone) ends the read.
        let mut messages = consumer
            .stream()
            .max_messages_per_batch(c.batch)
            .expires(PULL_EXPIRES)
            .heartbeat(HEARTBEAT)
            .messages()
            .await
            .map_err(|e| e.to_string())?;
        // Each message acknowledged as soon as its own delivery ends; at most `batch` at work,
        // and the stream is not read (so nothing more is pulled) while they are.
        let mut working = futures_util::stream::FuturesUnordered::new();
        let ended = loop {
            tokio::select! {
                biased;
                Some(acked) = working.next() => {
                    if let Err(e) = acked {
                        break Err(format!("acknowledging: {e}"));
                    }
                }
                _ = feed.shutdown.cancelled() => break Ok(()),
                next = messages.next(), if working.len() < c.batch => match next {
                    Some(Ok(m)) => working.push(handle(feed, m, &c.redelivery, ack_wait)),
                    Some(Err(e)) => break Err(e.to_string()),
                    None => break Err("the consumer's message stream ended".into()),
                },
            }
        };
        // What is at work is finished and acknowledged; what was pulled and not started goes
        // back at once, for this or another consumer, instead of after the ack wait.
        while let Some(acked) = working.next().await {
            acked.map_err(|e| format!("acknowledging: {e}"))?;
        }
        while let Some(Some(Ok(m))) = messages.next().now_or_never() {
            let _ = m.ack_with(AckKind::Nak(None)).await;
        }
        ended
    }
}

/// Hands `m` to the flow and acknowledges it by what became of it.
async fn handle(
    feed: &Feed<impl Processor, impl Output>,
    m: jetstream::Message,
    redelivery: &Redelivery,
    ack_wait: Duration,
) -> Result<(), async_nats::Error> {
    let mut message = Message::new(payload(&m.payload));
    let mut meta = empty_object();
    insert(&mut meta, "subject", Value::from(m.subject.as_str()));
    insert(&mut message.metadata, "nats", meta);
    let delivered = m.info().map_or(1, |info| info.delivered.max(1) as u32);
    let attempt = feed.attempt(message, delivered, redelivery, GiveUp::Store);
    let outcome = working(attempt, &m, ack_wait).await;
    m.ack_with(match outcome {
        Outcome::Taken => AckKind::Ack,
        Outcome::GivenUp => AckKind::Term,
        Outcome::Again(pause) => AckKind::Nak(Some(pause)),
        // Shutdown: to another consumer at once.
        Outcome::Left => AckKind::Nak(None),
    })
    .await
}

/// Waits for `attempt`, telling JetStream every half `ack_wait` that `message` is still being
/// worked on, so it is not offered again meanwhile.
async fn working(
    attempt: impl Future<Output = Outcome>,
    message: &jetstream::Message,
    ack_wait: Duration,
) -> Outcome {
    let mut attempt = std::pin::pin!(attempt);
    let every = (ack_wait / 2).max(Duration::from_millis(100));
    loop {
        tokio::select! {
            outcome = &mut attempt => return outcome,
            _ = tokio::time::sleep(every) => {
                let _ = message.ack_with(AckKind::Progress).await;
            }
        }
    }
}

impl super::Source for NatsJetstream {
    fn uses_store(&self) -> bool {
        true // dead letters
    }

    async fn run<P: Processor, O: Output>(&self, feed: Feed<P, O>) -> std::io::Result<()> {
        // Not cancelled from outside: the messages at work are finished and acknowledged.
        feed.keep_reading(
            "input.nats_jetstream",
            self.nats.shown(),
            AtShutdown::Finish,
            || self.consume(&feed),
        )
        .await;
        Ok(())
    }
}
