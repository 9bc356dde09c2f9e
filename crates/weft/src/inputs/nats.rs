//! `nats`: a message per NATS message on a subject (wildcards allowed), optionally as one of a
//! queue group that shares the subject's messages. Core NATS has no acknowledgement and keeps
//! nothing for a subscriber that is away; use `nats_jetstream` where every message matters.
//! The subject is in `%nats.subject`.
//!
//! ```yaml
//! input:
//!   nats:
//!     url: nats://127.0.0.1:4222
//!     subject: "orders.>"
//!     queue: weft                 # optional
//! ```

use futures_util::StreamExt;
use serde::Deserialize;

use super::{AtShutdown, Feed, Redelivery};
use crate::clients::Resources;
use crate::clients::Shared;
use crate::clients::nats::Nats;
use crate::config::BuildError;
use crate::config::Secret;
use crate::core::Message;
use crate::core::body::payload;
use crate::core::mapping::{Value, empty_object, insert};
use crate::core::{Output, Processor};

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[schemars(rename = "NatsInput")]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// `nats://[user:password@]host:4222`.
    pub url: Secret,
    /// The subject to subscribe to; `*` and `>` wildcards allowed.
    pub subject: String,
    /// A queue group: each message goes to one member.
    #[serde(default)]
    pub queue: Option<String>,
    /// How often a failing message is offered again (by weft: NATS keeps nothing) before it
    /// is dead-lettered.
    #[serde(default)]
    pub redelivery: Redelivery,
}

pub struct NatsInput {
    nats: Nats,
    subject: String,
    queue: Option<String>,
    redelivery: Redelivery,
}

impl NatsInput {
    /// Whether it reads as one of a queue group, which NATS shares the messages out among.
    pub fn has_queue_group(&self) -> bool {
        self.queue.is_some()
    }
}

impl super::Spec for Config {
    type Built = NatsInput;

    fn build(self, _shared: &Shared, _resources: &Resources) -> Result<NatsInput, Vec<BuildError>> {
        Ok(NatsInput {
            nats: Nats::open(&self.url).map_err(|e| vec![BuildError::new("url", e)])?,
            subject: self.subject,
            queue: self.queue,
            redelivery: self.redelivery,
        })
    }
}

impl NatsInput {
    async fn listen(&self, feed: &Feed<impl Processor, impl Output>) -> Result<(), String> {
        let client = self.nats.client().await.map_err(|e| e.to_string())?;
        let mut subscriber = match &self.queue {
            Some(queue) => client
                .queue_subscribe(self.subject.clone(), queue.clone())
                .await
                .map_err(|e| e.to_string())?,
            None => client
                .subscribe(self.subject.clone())
                .await
                .map_err(|e| e.to_string())?,
        };
        while let Some(received) = subscriber.next().await {
            let mut message = Message::new(payload(&received.payload));
            let mut meta = empty_object();
            insert(&mut meta, "subject", Value::from(received.subject.as_str()));
            insert(&mut message.metadata, "nats", meta);
            if !feed.push_kept(message, &self.redelivery).await {
                return Ok(());
            }
        }
        Err("the subscription ended".into())
    }
}

impl super::Source for NatsInput {
    fn uses_store(&self) -> bool {
        true // dead letters
    }

    async fn run<P: Processor, O: Output>(&self, feed: Feed<P, O>) -> std::io::Result<()> {
        feed.keep_reading("input.nats", self.nats.shown(), AtShutdown::Cancel, || {
            self.listen(&feed)
        })
        .await;
        Ok(())
    }
}
