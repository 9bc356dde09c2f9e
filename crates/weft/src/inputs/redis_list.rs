//! `redis_list`: a Redis list as a reliable work queue. Each item is moved atomically to a
//! processing list (`BLMOVE`) while its message is delivered, then removed from it (`LREM`,
//! sent in one round trip with the worker's next `BLMOVE`; at shutdown, on its own). A message
//! that failed is offered to the flow again after a pause, up to `redelivery.max_deliveries`
//! times (its worker waits meanwhile; the others go on), then kept in the flow's dead-letter
//! queue and removed — or, with `dead_letter_list`, moved to that list (as it was) instead.
//! Items a crash left in the processing list are queued again at the next start. The queue
//! is read from its right end, so producers `LPUSH` (as the `redis_list` output does).
//!
//! ```yaml
//! input:
//!   redis_list:
//!     url: redis://127.0.0.1:6379
//!     list: jobs
//!     processing_list: jobs:processing   # default: <list>:processing:<host name>
//!     workers: 4                         # items in flight at once
//!     redelivery: { max_deliveries: 5, backoff: 1s }
//! ```
//!
//! Every Redis component speaks TLS with a `rediss://` URL; `tls:` adds a private CA or a
//! client certificate: `tls: { ca_file: ca.pem, cert_file: client.pem, key_file: client.key }`.

use std::time::Duration;

use serde::Deserialize;

use super::{Feed, GiveUp, Outcome, Redelivery};
use crate::clients::Resources;
use crate::clients::Shared;
use crate::clients::redis::Redis;
use crate::config::BuildError;
use crate::config::Secret;
use crate::core::Message;
use crate::core::body::payload;
use crate::core::{Output, Processor};

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[schemars(rename = "RedisListInput")]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// `redis://[:password@]host:port[/db]`, or `rediss://` for TLS.
    pub url: Secret,
    /// For a `rediss://` URL: a private CA, a client certificate (see `clients/tls.rs`).
    #[serde(default)]
    pub tls: Option<crate::clients::tls::TlsFiles>,
    /// The list to take messages from.
    pub list: String,
    /// Where items wait while they are delivered (default `<list>:processing:<host name>`);
    /// one per reader, since a reader starting up queues again what its list holds.
    #[serde(default)]
    pub processing_list: Option<String>,
    /// Items in flight at once, each on a connection of its own.
    #[serde(default = "default_workers")]
    pub workers: usize,
    /// How often a failing message is offered again before it is dead-lettered.
    #[serde(default)]
    pub redelivery: Redelivery,
    /// A list of Redis to move given-up items to (`LPUSH`, as they were), instead of weft's
    /// dead-letter queue.
    #[serde(default)]
    pub dead_letter_list: Option<String>,
}

fn default_workers() -> usize {
    4
}

pub struct RedisList {
    redis: Redis,
    list: String,
    processing: String,
    workers: usize,
    redelivery: Redelivery,
    dead_letter_list: Option<String>,
}

/// How long one `BLMOVE` waits (so shutdown is looked at between).
const BLOCK_SECONDS: f64 = 1.0;
/// The pause after Redis failed, before reading again.
const FAILURE_PAUSE: Duration = Duration::from_millis(500);

impl super::Spec for Config {
    type Built = RedisList;

    fn build(self, _shared: &Shared, _resources: &Resources) -> Result<RedisList, Vec<BuildError>> {
        let redis = Redis::open(&self.url, self.tls.as_ref())?;
        if self.workers == 0 {
            return Err(vec![BuildError::new("workers", "at least 1")]);
        }
        Ok(RedisList {
            redis,
            processing: self.processing_list.clone().unwrap_or_else(|| {
                format!(
                    "{}:processing:{}",
                    self.list,
                    crate::clients::redis::host_name()
                )
            }),
            list: self.list,
            workers: self.workers,
            redelivery: self.redelivery,
            dead_letter_list: self.dead_letter_list,
        })
    }
}

impl RedisList {
    fn failed(&self, feed: &Feed<impl Processor, impl Output>, e: &redis::RedisError) {
        tracing::error!(flow = %feed.flow.name, component = "input.redis_list", redis = self.redis.shown(), error = %e, "reading failed; trying again");
    }

    /// Moves every item of the processing list back to the queue's reading end.
    async fn recover(&self) -> Result<(), redis::RedisError> {
        let mut conn = self.redis.shared().await?;
        loop {
            let moved: Option<Vec<u8>> = redis::cmd("LMOVE")
                .arg(&self.processing)
                .arg(&self.list)
                .arg("LEFT")
                .arg("RIGHT")
                .query_async(&mut conn)
                .await?;
            if moved.is_none() {
                return Ok(());
            }
        }
    }

    async fn work(&self, feed: &Feed<impl Processor, impl Output>) {
        // A delivered item still in the processing list: it is removed in one round trip
        // with the next read (Redis runs the two in order), after a reconnection too.
        let mut delivered = None;
        loop {
            // Not cancelled from outside: an item under way is finished and removed (`BLMOVE`
            // waits 1 s at most and shutdown is looked at in between).
            match self.take(feed, &mut delivered).await {
                Ok(()) => return,
                Err(e) => {
                    self.failed(feed, &e);
                    tokio::select! {
                        _ = feed.shutdown.cancelled() => return,
                        _ = tokio::time::sleep(FAILURE_PAUSE) => {}
                    }
                }
            }
        }
    }

    async fn take(
        &self,
        feed: &Feed<impl Processor, impl Output>,
        delivered: &mut Option<Vec<u8>>,
    ) -> Result<(), redis::RedisError> {
        let mut blocking = self.redis.dedicated().await?;
        loop {
            if feed.shutdown.is_cancelled() {
                if let Some(item) = delivered {
                    self.remove(item).query_async::<()>(&mut blocking).await?;
                }
                return Ok(());
            }
            let mut read = redis::pipe();
            if let Some(item) = delivered.as_deref() {
                read.add_command(self.remove(item)).ignore();
            }
            read.cmd("BLMOVE")
                .arg(&self.list)
                .arg(&self.processing)
                .arg("RIGHT")
                .arg("LEFT")
                .arg(BLOCK_SECONDS);
            let (item,): (Option<Vec<u8>>,) = read.query_async(&mut blocking).await?;
            *delivered = None;
            let Some(item) = item else { continue };
            let message = Message::new(payload(&item));
            let give_up = if self.dead_letter_list.is_some() {
                GiveUp::Broker
            } else {
                GiveUp::Store
            };
            match feed.deliver(message, &self.redelivery, give_up).await {
                Outcome::GivenUp if let Some(dead) = &self.dead_letter_list => {
                    redis::pipe()
                        .atomic()
                        .add_command(self.remove(&item))
                        .cmd("LPUSH")
                        .arg(dead)
                        .arg(&item)
                        .query_async::<()>(&mut blocking)
                        .await?;
                }
                Outcome::Taken | Outcome::GivenUp => *delivered = Some(item),
                // Shutdown: left in the processing list, queued again at the next start.
                Outcome::Left | Outcome::Again(_) => return Ok(()),
            }
        }
    }

    /// `LREM` of one copy of `item` from the processing list.
    fn remove(&self, item: &[u8]) -> redis::Cmd {
        let mut cmd = redis::cmd("LREM");
        cmd.arg(&self.processing).arg(1).arg(item);
        cmd
    }
}

impl super::Source for RedisList {
    fn uses_store(&self) -> bool {
        self.dead_letter_list.is_none()
    }

    async fn run<P: Processor, O: Output>(&self, feed: Feed<P, O>) -> std::io::Result<()> {
        // What a crash left behind goes first, back onto the queue's reading end.
        loop {
            match self.recover().await {
                Ok(()) => break,
                Err(e) => {
                    self.failed(&feed, &e);
                    tokio::select! {
                        _ = feed.shutdown.cancelled() => return Ok(()),
                        _ = tokio::time::sleep(FAILURE_PAUSE) => {}
                    }
                }
            }
        }
        let workers = (0..self.workers).map(|_| self.work(&feed));
        futures_util::future::join_all(workers).await;
        Ok(())
    }
}
