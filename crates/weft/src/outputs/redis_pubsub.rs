//! `redis_pubsub`: publishes each message on a Redis channel (`PUBLISH`): JSON, or a string
//! message's text. Redis keeps nothing for subscribers that are away; a message counts as
//! delivered once Redis took it, whoever was listening.
//!
//! ```yaml
//! output:
//!   redis_pubsub:
//!     url: redis://127.0.0.1:6379
//!     channel: orders.created
//! ```

use serde::Deserialize;

use crate::clients::Resources;
use crate::clients::Shared;
use crate::clients::redis::Redis;
use crate::config::BuildError;
use crate::config::Secret;
use crate::core::retry::RetryConfig;
use crate::core::{Attempt, Message};

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[schemars(rename = "RedisPubsubOutput")]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// `redis://[:password@]host:port[/db]`, or `rediss://` for TLS.
    pub url: Secret,
    /// For a `rediss://` URL: a private CA, a client certificate (see `clients/tls.rs`).
    #[serde(default)]
    pub tls: Option<crate::clients::tls::TlsFiles>,
    /// The channel to publish on.
    pub channel: String,
    #[serde(default)]
    pub retry: RetryConfig,
}

pub struct RedisPubsubOutput {
    redis: Redis,
    channel: String,
}

impl super::Spec for Config {
    type Built = RedisPubsubOutput;

    fn retry_config(&self) -> Option<&RetryConfig> {
        Some(&self.retry)
    }

    fn build(
        &self,
        _shared: &Shared,
        _resources: &Resources,
    ) -> Result<RedisPubsubOutput, Vec<BuildError>> {
        Ok(RedisPubsubOutput {
            redis: Redis::open(&self.url, self.tls.as_ref())?,
            channel: self.channel.clone(),
        })
    }
}

impl crate::core::Output for RedisPubsubOutput {
    async fn send(&self, message: &Message) -> Attempt {
        let mut conn = match self.redis.shared().await {
            Ok(c) => c,
            Err(e) => return self.redis.attempt(e),
        };
        let published = redis::cmd("PUBLISH")
            .arg(&self.channel)
            .arg(message.body().as_ref())
            .query_async::<i64>(&mut conn)
            .await;
        match published {
            Ok(_) => Attempt::Delivered,
            Err(e) => self.redis.attempt(e),
        }
    }

    fn reads_metadata(&self) -> bool {
        false
    }
}
