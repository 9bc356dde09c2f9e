//! `redis_streams`: appends each message to a Redis stream (`XADD`), as one field (`body` by
//! default) holding the message (JSON, or a string message's text). `max_len` trims the stream
//! to about that many entries as it grows (`MAXLEN ~`). The entry is written when Redis
//! answers, so an ack follows the write.
//!
//! ```yaml
//! output:
//!   redis_streams:
//!     url: redis://127.0.0.1:6379
//!     stream: orders
//!     max_len: 100000          # optional
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
#[schemars(rename = "RedisStreamsOutput")]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// `redis://[:password@]host:port[/db]`, or `rediss://` for TLS.
    pub url: Secret,
    /// For a `rediss://` URL: a private CA, a client certificate (see `clients/tls.rs`).
    #[serde(default)]
    pub tls: Option<crate::clients::tls::TlsFiles>,
    /// The stream each message is added to.
    pub stream: String,
    /// The entry's field that holds the message.
    #[serde(default = "default_field")]
    pub body_field: String,
    /// Trim the stream to about this many entries.
    #[serde(default)]
    pub max_len: Option<u64>,
    #[serde(default)]
    pub retry: RetryConfig,
}

pub fn default_field() -> String {
    "body".into()
}

pub struct RedisStreamsOutput {
    redis: Redis,
    stream: String,
    field: String,
    max_len: Option<u64>,
}

impl super::Spec for Config {
    type Built = RedisStreamsOutput;

    fn retry_config(&self) -> Option<&RetryConfig> {
        Some(&self.retry)
    }

    fn build(
        &self,
        _shared: &Shared,
        _resources: &Resources,
    ) -> Result<RedisStreamsOutput, Vec<BuildError>> {
        Ok(RedisStreamsOutput {
            redis: Redis::open(&self.url, self.tls.as_ref())?,
            stream: self.stream.clone(),
            field: self.body_field.clone(),
            max_len: self.max_len,
        })
    }
}

impl crate::core::Output for RedisStreamsOutput {
    async fn send(&self, message: &Message) -> Attempt {
        let mut conn = match self.redis.shared().await {
            Ok(c) => c,
            Err(e) => return self.redis.attempt(e),
        };
        let mut cmd = redis::cmd("XADD");
        cmd.arg(&self.stream);
        if let Some(n) = self.max_len {
            cmd.arg("MAXLEN").arg("~").arg(n);
        }
        cmd.arg("*").arg(&self.field).arg(message.body().as_ref());
        match cmd.query_async::<String>(&mut conn).await {
            Ok(_) => Attempt::Delivered,
            Err(e) => self.redis.attempt(e),
        }
    }

    fn reads_metadata(&self) -> bool {
        false
    }
}
