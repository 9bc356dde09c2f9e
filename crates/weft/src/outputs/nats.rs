//! `nats`: publishes each message on a NATS subject (core NATS): JSON, or a string message's
//! text. Core NATS keeps nothing for subscribers that are away; the message counts as
//! delivered once the server has it (the connection is flushed). Use `nats_jetstream` for a
//! stored, acknowledged publish.
//!
//! ```yaml
//! output:
//!   nats:
//!     url: nats://127.0.0.1:4222
//!     subject: orders.created
//! ```

use serde::Deserialize;

use crate::clients::Resources;
use crate::clients::Shared;
use crate::clients::nats::Nats;
use crate::config::BuildError;
use crate::config::Secret;
use crate::core::retry::RetryConfig;
use crate::core::{Attempt, Message};

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[schemars(rename = "NatsOutput")]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// `nats://[user:password@]host:4222`.
    pub url: Secret,
    /// The subject to publish on.
    pub subject: String,
    #[serde(default)]
    pub retry: RetryConfig,
}

pub struct NatsOutput {
    nats: Nats,
    subject: String,
}

impl super::Spec for Config {
    type Built = NatsOutput;

    fn retry_config(&self) -> Option<&RetryConfig> {
        Some(&self.retry)
    }

    fn build(
        &self,
        _shared: &Shared,
        _resources: &Resources,
    ) -> Result<NatsOutput, Vec<BuildError>> {
        Ok(NatsOutput {
            nats: Nats::open(&self.url).map_err(|e| vec![BuildError::new("url", e)])?,
            subject: self.subject.clone(),
        })
    }
}

impl crate::core::Output for NatsOutput {
    async fn send(&self, message: &Message) -> Attempt {
        let client = match self.nats.client().await {
            Ok(c) => c,
            Err(e) => return self.nats.retry(e),
        };
        if let Err(e) = client.publish(self.subject.clone(), message.body()).await {
            return self.nats.retry(e);
        }
        match tokio::time::timeout(std::time::Duration::from_secs(10), client.flush()).await {
            Ok(Ok(())) => Attempt::Delivered,
            Ok(Err(e)) => self.nats.retry(e),
            Err(_) => self
                .nats
                .retry("the server did not take the message within 10s"),
        }
    }

    fn reads_metadata(&self) -> bool {
        false
    }
}
