//! `redis_pubsub`: a message per publication on the given Redis channels (`SUBSCRIBE`; a
//! channel with `*`, `?` or `[` is a pattern, `PSUBSCRIBE`). JSON payloads become values, any
//! other a string; the channel is in `%redis.channel`. Redis keeps nothing for a subscriber
//! that is away, so what is published while weft is down or reconnecting is lost; use
//! `redis_streams` or `redis_list` where every message matters.
//!
//! ```yaml
//! input:
//!   redis_pubsub:
//!     url: redis://127.0.0.1:6379
//!     channels: [orders.created, "audit.*"]
//! ```

use futures_util::StreamExt;
use serde::Deserialize;

use super::{AtShutdown, Feed, Redelivery};
use crate::clients::Resources;
use crate::clients::Shared;
use crate::clients::redis::Redis;
use crate::config::BuildError;
use crate::config::Secret;
use crate::core::Message;
use crate::core::body::payload;
use crate::core::mapping::{Value, empty_object, insert};
use crate::core::{Output, Processor};

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[schemars(rename = "RedisPubsubInput")]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// `redis://[:password@]host:port[/db]`, or `rediss://` for TLS.
    pub url: Secret,
    /// For a `rediss://` URL: a private CA, a client certificate (see `clients/tls.rs`).
    #[serde(default)]
    pub tls: Option<crate::clients::tls::TlsFiles>,
    /// Channels, or patterns of them.
    pub channels: Vec<String>,
    /// How often a failing message is offered again (by weft: the source keeps nothing)
    /// before it is dead-lettered.
    #[serde(default)]
    pub redelivery: Redelivery,
}

pub struct RedisPubsub {
    redis: Redis,
    channels: Vec<String>,
    redelivery: Redelivery,
}

impl super::Spec for Config {
    type Built = RedisPubsub;

    fn build(
        self,
        _shared: &Shared,
        _resources: &Resources,
    ) -> Result<RedisPubsub, Vec<BuildError>> {
        let redis = Redis::open(&self.url, self.tls.as_ref())?;
        if self.channels.is_empty() {
            return Err(vec![BuildError::new(
                "channels",
                "name at least one channel",
            )]);
        }
        Ok(RedisPubsub {
            redis,
            channels: self.channels,
            redelivery: self.redelivery,
        })
    }
}

impl RedisPubsub {
    async fn listen(
        &self,
        feed: &Feed<impl Processor, impl Output>,
    ) -> Result<(), redis::RedisError> {
        let mut pubsub = self.redis.pubsub().await?;
        for channel in &self.channels {
            if channel.contains(['*', '?', '[']) {
                pubsub.psubscribe(channel).await?;
            } else {
                pubsub.subscribe(channel).await?;
            }
        }
        let mut messages = pubsub.on_message();
        while let Some(published) = messages.next().await {
            let mut message = Message::new(payload(published.get_payload_bytes()));
            let mut meta = empty_object();
            insert(
                &mut meta,
                "channel",
                Value::from(published.get_channel_name()),
            );
            insert(&mut message.metadata, "redis", meta);
            if !feed.push_kept(message, &self.redelivery).await {
                return Ok(());
            }
        }
        Err(redis::RedisError::from(std::io::Error::new(
            std::io::ErrorKind::ConnectionAborted,
            "the server closed the subscription",
        )))
    }
}

impl super::Source for RedisPubsub {
    fn uses_store(&self) -> bool {
        true // dead letters
    }

    async fn run<P: Processor, O: Output>(&self, feed: Feed<P, O>) -> std::io::Result<()> {
        // Publications missed while reconnecting are gone: Redis keeps none.
        feed.keep_reading(
            "input.redis_pubsub",
            self.redis.shown(),
            AtShutdown::Cancel,
            || self.listen(&feed),
        )
        .await;
        Ok(())
    }
}
