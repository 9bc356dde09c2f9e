//! `redis_list`: pushes each message onto a Redis list (`LPUSH`), the producing end of the
//! queue that the `redis_list` input consumes: JSON, or a string message's text.
//!
//! ```yaml
//! output:
//!   redis_list:
//!     url: redis://127.0.0.1:6379
//!     list: jobs
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
#[schemars(rename = "RedisListOutput")]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// `redis://[:password@]host:port[/db]`, or `rediss://` for TLS.
    pub url: Secret,
    /// For a `rediss://` URL: a private CA, a client certificate (see `clients/tls.rs`).
    #[serde(default)]
    pub tls: Option<crate::clients::tls::TlsFiles>,
    /// The list each message is pushed onto.
    pub list: String,
    #[serde(default)]
    pub retry: RetryConfig,
}

pub struct RedisListOutput {
    redis: Redis,
    list: String,
}

impl super::Spec for Config {
    type Built = RedisListOutput;

    fn retry_config(&self) -> Option<&RetryConfig> {
        Some(&self.retry)
    }

    fn build(
        &self,
        _shared: &Shared,
        _resources: &Resources,
    ) -> Result<RedisListOutput, Vec<BuildError>> {
        Ok(RedisListOutput {
            redis: Redis::open(&self.url, self.tls.as_ref())?,
            list: self.list.clone(),
        })
    }
}

impl crate::core::Output for RedisListOutput {
    async fn send(&self, message: &Message) -> Attempt {
        let mut conn = match self.redis.shared().await {
            Ok(c) => c,
            Err(e) => return self.redis.attempt(e),
        };
        let pushed = redis::cmd("LPUSH")
            .arg(&self.list)
            .arg(message.body().as_ref())
            .query_async::<i64>(&mut conn)
            .await;
        match pushed {
            Ok(_) => Attempt::Delivered,
            Err(e) => self.redis.attempt(e),
        }
    }

    fn reads_metadata(&self) -> bool {
        false
    }
}
