//! `nats_jetstream`: publishes each message to a JetStream stream and waits for the stream's
//! acknowledgement, so a message counts as delivered only once it is stored. The subject must
//! belong to a stream (a publish nobody stores is retried, as the stream may be on its way).
//!
//! ```yaml
//! output:
//!   nats_jetstream:
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
#[schemars(rename = "NatsJetstreamOutput")]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// `nats://[user:password@]host:4222`.
    pub url: Secret,
    /// The subject to publish on; a stream must take it.
    pub subject: String,
    #[serde(default)]
    pub retry: RetryConfig,
}

pub struct NatsJetstreamOutput {
    nats: Nats,
    subject: String,
}

impl super::Spec for Config {
    type Built = NatsJetstreamOutput;

    fn retry_config(&self) -> Option<&RetryConfig> {
        Some(&self.retry)
    }

    fn build(
        &self,
        _shared: &Shared,
        _resources: &Resources,
    ) -> Result<NatsJetstreamOutput, Vec<BuildError>> {
        Ok(NatsJetstreamOutput {
            nats: Nats::open(&self.url).map_err(|e| vec![BuildError::new("url", e)])?,
            subject: self.subject.clone(),
        })
    }
}

impl crate::core::Output for NatsJetstreamOutput {
    async fn send(&self, message: &Message) -> Attempt {
        let client = match self.nats.client().await {
            Ok(c) => c,
            Err(e) => return self.nats.retry(e),
        };
        let jetstream = async_nats::jetstream::new(client);
        let ack = match jetstream
            .publish(self.subject.clone(), message.body())
            .await
        {
            Ok(ack) => ack,
            Err(e) => return self.nats.retry(e),
        };
        match ack.await {
            Ok(_) => Attempt::Delivered,
            Err(e) => self.nats.retry(e),
        }
    }

    fn reads_metadata(&self) -> bool {
        false
    }
}
