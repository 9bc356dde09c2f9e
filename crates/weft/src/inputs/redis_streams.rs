//! `redis_streams`: reads a Redis stream as a member of a consumer group (`XREADGROUP`) and
//! acknowledges each entry (`XACK`) only once its message was delivered (or, in a durable flow,
//! committed). A batch's acknowledgements go out in one round trip with the next read. An
//! entry whose message failed stays pending and is read again after `claim_idle`; so are the
//! entries of a consumer that died (`XAUTOCLAIM`), and at start this consumer first reads what
//! it had taken and not acknowledged. The delivery that reaches
//! `redelivery.max_deliveries` (the group's own count) keeps the message in the flow's
//! dead-letter queue — or, with `dead_letter_stream`, adds the entry's fields to that stream
//! (with `weft_source_id`, the entry's ID) — and acknowledges the entry (here `claim_idle` is
//! the pause between deliveries, not `redelivery.backoff`). The group is created if it
//! does not exist (`start: $` reads only new entries, `start: "0"` the whole stream).
//!
//! Set `claim_idle` above the longest one delivery can take (the outputs' `retry.max_elapsed`
//! in a direct flow): an entry pending longer than that is taken over by another consumer of
//! the group, and delivered twice. In a direct flow the entries of one read (`batch`) are
//! delivered together and the next read waits for them, so an `aggregate` step groups within
//! one read: for larger groups raise `batch`, or make the flow durable.
//!
//! The message is the entry's `body` field (JSON when it parses, else text) or, for an entry
//! without one, the entry's fields as an object; the entry ID is in `%redis.id`.
//!
//! ```yaml
//! input:
//!   redis_streams:
//!     url: redis://127.0.0.1:6379
//!     stream: orders
//!     group: weft
//!     consumer: weft-1             # default: the host name
//!     claim_idle: 1m               # pending this long → read again
//!     redelivery: { max_deliveries: 5 }
//! ```

use std::collections::HashMap;
use std::time::Duration;

use redis::streams::{StreamAutoClaimReply, StreamId, StreamReadReply};
use serde::Deserialize;

use super::{AtShutdown, Feed, GiveUp, Outcome, Redelivery};
use crate::clients::Resources;
use crate::clients::Shared;
use crate::clients::redis::Redis;
use crate::config::BuildError;
use crate::config::Secret;
use crate::config::units::Dur;
use crate::core::Message;
use crate::core::body::payload;
use crate::core::mapping::{ObjectMap, Value, empty_object, insert};
use crate::core::{Output, Processor};

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[schemars(rename = "RedisStreamsInput")]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// `redis://[:password@]host:port[/db]`, or `rediss://` for TLS.
    pub url: Secret,
    /// For a `rediss://` URL: a private CA, a client certificate (see `clients/tls.rs`).
    #[serde(default)]
    pub tls: Option<crate::clients::tls::TlsFiles>,
    /// The stream to read.
    pub stream: String,
    /// The consumer group this flow reads as (created if missing); entries are acknowledged
    /// to it after delivery.
    pub group: String,
    /// This reader's name in the group (default: the host name); keep it stable across
    /// restarts, and different between readers.
    #[serde(default = "default_consumer")]
    pub consumer: String,
    /// Where a group created here starts: `$` (new entries) or `0` (the whole stream).
    #[serde(default = "default_start")]
    pub start: String,
    /// The most entries read at once.
    #[serde(default = "default_batch")]
    pub batch: usize,
    /// How long an entry stays pending (failed, or taken by a consumer that died) before it
    /// is read again.
    #[serde(default = "default_claim_idle")]
    pub claim_idle: Dur,
    /// The entry's field holding the message.
    #[serde(default = "default_body_field")]
    pub body_field: String,
    /// How often a failing message is read again before it is dead-lettered.
    #[serde(default)]
    pub redelivery: Redelivery,
    /// A stream to add given-up entries to (their fields, and `weft_source_id`), instead of
    /// weft's dead-letter queue.
    #[serde(default)]
    pub dead_letter_stream: Option<String>,
}

fn default_body_field() -> String {
    "body".into()
}
fn default_consumer() -> String {
    crate::clients::redis::host_name()
}
fn default_start() -> String {
    "$".into()
}
fn default_batch() -> usize {
    100
}
fn default_claim_idle() -> Dur {
    Dur(Duration::from_secs(60))
}

pub struct RedisStreams {
    redis: Redis,
    config: Config,
}

/// How long one read waits for new entries (so shutdown and claims are looked at between).
const BLOCK_MS: usize = 1000;

impl super::Spec for Config {
    type Built = RedisStreams;

    fn build(
        self,
        _shared: &Shared,
        _resources: &Resources,
    ) -> Result<RedisStreams, Vec<BuildError>> {
        let redis = Redis::open(&self.url, self.tls.as_ref())?;
        if self.batch == 0 {
            return Err(vec![BuildError::new("batch", "at least 1")]);
        }
        if self.claim_idle.0 < Duration::from_millis(100) {
            return Err(vec![BuildError::new(
                "claim_idle",
                "at least 100ms, or a failing entry would be offered again at once, forever",
            )]);
        }
        Ok(RedisStreams {
            redis,
            config: self,
        })
    }
}

impl RedisStreams {
    /// Reads and delivers until shutdown or a failed command. `acks` holds the IDs of entries
    /// handled and not yet acknowledged: their `XACK` goes out in one round trip with the next
    /// read, and what a failed connection did not send is sent on the next one.
    async fn consume(
        &self,
        feed: &Feed<impl Processor, impl Output>,
        acks: &std::sync::Mutex<Vec<String>>,
    ) -> Result<(), redis::RedisError> {
        let mut pending = std::mem::take(&mut *acks.lock().unwrap_or_else(|e| e.into_inner()));
        let result = self.consume_with(feed, &mut pending).await;
        *acks.lock().unwrap_or_else(|e| e.into_inner()) = pending;
        result
    }

    async fn consume_with(
        &self,
        feed: &Feed<impl Processor, impl Output>,
        acks: &mut Vec<String>,
    ) -> Result<(), redis::RedisError> {
        let c = &self.config;
        // A failed entry stays pending and is read again after `claim_idle`, whatever
        // `backoff` says: that is the pause a retry's log line and history name.
        let redelivery = Redelivery {
            backoff: c.claim_idle,
            max_backoff: c.claim_idle,
            ..c.redelivery.clone()
        };
        let mut conn = self.redis.dedicated().await?;
        let created: redis::RedisResult<()> = redis::cmd("XGROUP")
            .arg("CREATE")
            .arg(&c.stream)
            .arg(&c.group)
            .arg(&c.start)
            .arg("MKSTREAM")
            .query_async(&mut conn)
            .await;
        if let Err(e) = created
            && e.code() != Some("BUSYGROUP")
        {
            return Err(e);
        }
        // What this consumer took before and did not acknowledge (a crash, a failure), read
        // once, page by page from this ID; then only claims bring failures back.
        let mut own_pending = Some("0".to_string());
        let mut last_claim = tokio::time::Instant::now();
        // Where the next claim starts; past `0-0` while a sweep of the pending list goes on.
        let mut claim_from = "0-0".to_string();
        loop {
            if feed.shutdown.is_cancelled() {
                if !acks.is_empty() {
                    self.ack(acks).query_async::<i64>(&mut conn).await?;
                    acks.clear();
                }
                return Ok(());
            }
            // Entries read before (pending, or claimed): their delivery counts are asked for.
            let mut again = true;
            let entries = if let Some(after) = &own_pending {
                let mut read = redis::cmd("XREADGROUP");
                read.arg("GROUP")
                    .arg(&c.group)
                    .arg(&c.consumer)
                    .arg("COUNT")
                    .arg(c.batch)
                    .arg("STREAMS")
                    .arg(&c.stream)
                    .arg(after);
                let reply: StreamReadReply = self.read(&mut conn, acks, read).await?;
                let entries = entries_of(reply);
                own_pending = entries.last().map(|e| e.id.clone());
                if entries.is_empty() {
                    continue;
                }
                entries
            } else if claim_from != "0-0" || last_claim.elapsed() >= c.claim_idle.0 {
                last_claim = tokio::time::Instant::now();
                let mut claim = redis::cmd("XAUTOCLAIM");
                claim
                    .arg(&c.stream)
                    .arg(&c.group)
                    .arg(&c.consumer)
                    .arg(c.claim_idle.0.as_millis() as u64)
                    .arg(&claim_from)
                    .arg("COUNT")
                    .arg(c.batch);
                let reply: StreamAutoClaimReply = self.read(&mut conn, acks, claim).await?;
                claim_from = reply.next_stream_id;
                if reply.claimed.is_empty() {
                    continue;
                }
                reply.claimed
            } else {
                let mut read = redis::cmd("XREADGROUP");
                read.arg("GROUP")
                    .arg(&c.group)
                    .arg(&c.consumer)
                    .arg("COUNT")
                    .arg(c.batch)
                    .arg("BLOCK")
                    .arg(BLOCK_MS)
                    .arg("STREAMS")
                    .arg(&c.stream)
                    .arg(">");
                let reply: Option<StreamReadReply> = self.read(&mut conn, acks, read).await?;
                again = false;
                match reply.map(entries_of) {
                    Some(entries) if !entries.is_empty() => entries,
                    _ => continue,
                }
            };
            // An entry trimmed from the stream while pending comes back without fields:
            // nothing is left to deliver, so it is acknowledged away.
            let (entries, gone): (Vec<StreamId>, Vec<StreamId>) =
                entries.into_iter().partition(|e| !e.map.is_empty());
            acks.extend(gone.into_iter().map(|e| e.id));
            let counts = if again {
                self.delivery_counts(&mut conn, &entries).await?
            } else {
                HashMap::new()
            };
            let ids: Vec<String> = entries.iter().map(|e| e.id.clone()).collect();
            // Kept as they came, for the dead-letter stream.
            let raw: Vec<HashMap<String, redis::Value>> = if c.dead_letter_stream.is_some() {
                entries.iter().map(|e| e.map.clone()).collect()
            } else {
                Vec::new()
            };
            let give_up = if c.dead_letter_stream.is_some() {
                GiveUp::Broker
            } else {
                GiveUp::Store
            };
            let outcomes: Vec<Outcome> = if feed.flow.durable().is_some() {
                // Stored one after the other, in stream order.
                let messages = entries.into_iter().map(|e| self.message(e)).collect();
                let stored = feed.store_each(messages).await;
                stored
                    .into_iter()
                    .map(|taken| if taken { Outcome::Taken } else { Outcome::Left })
                    .collect()
            } else {
                let attempts = entries.into_iter().map(|e| {
                    let delivered = counts.get(&e.id).copied().unwrap_or(1);
                    feed.attempt(self.message(e), delivered, &redelivery, give_up)
                });
                futures_util::future::join_all(attempts).await
            };
            if let Some(dead) = &c.dead_letter_stream {
                for ((id, outcome), fields) in ids.iter().zip(&outcomes).zip(&raw) {
                    if *outcome != Outcome::GivenUp {
                        continue;
                    }
                    let mut add = redis::cmd("XADD");
                    add.arg(dead).arg("*").arg("weft_source_id").arg(id);
                    for (name, value) in fields {
                        if let Ok(bytes) = redis::from_redis_value_ref::<Vec<u8>>(value) {
                            add.arg(name).arg(bytes);
                        }
                    }
                    add.query_async::<String>(&mut conn).await?;
                }
            }
            // Failed ones stay pending, to be claimed again after `claim_idle`.
            acks.extend(
                ids.into_iter()
                    .zip(&outcomes)
                    .filter(|(_, o)| matches!(o, Outcome::Taken | Outcome::GivenUp))
                    .map(|(id, _)| id),
            );
        }
    }

    /// `XACK` of `ids`.
    fn ack(&self, ids: &[String]) -> redis::Cmd {
        let mut cmd = redis::cmd("XACK");
        cmd.arg(&self.config.stream)
            .arg(&self.config.group)
            .arg(ids);
        cmd
    }

    /// Runs `read`, preceded in the same round trip by the `XACK` of `acks` (Redis runs the
    /// two in order, so a claim never takes an entry just acknowledged).
    async fn read<T: redis::FromRedisValue>(
        &self,
        conn: &mut (impl redis::aio::ConnectionLike + Send),
        acks: &mut Vec<String>,
        read: redis::Cmd,
    ) -> Result<T, redis::RedisError> {
        let mut pipe = redis::pipe();
        if !acks.is_empty() {
            pipe.add_command(self.ack(acks)).ignore();
        }
        pipe.add_command(read);
        let (reply,): (T,) = pipe.query_async(conn).await?;
        acks.clear();
        Ok(reply)
    }

    /// How many times the group has delivered each of `entries` (read before, so pending).
    async fn delivery_counts(
        &self,
        conn: &mut (impl redis::aio::ConnectionLike + Send),
        entries: &[StreamId],
    ) -> Result<HashMap<String, u32>, redis::RedisError> {
        if entries.is_empty() {
            return Ok(HashMap::new());
        }
        let c = &self.config;
        // One exact question per entry, in one round trip: a range could hold other pending
        // entries and be cut short by its count.
        let mut asked = redis::pipe();
        for entry in entries {
            asked
                .cmd("XPENDING")
                .arg(&c.stream)
                .arg(&c.group)
                .arg(&entry.id)
                .arg(&entry.id)
                .arg(1)
                .arg(&c.consumer);
        }
        let answers: Vec<Vec<(String, String, u64, u64)>> = asked.query_async(conn).await?;
        Ok(answers
            .into_iter()
            .flatten()
            .map(|(id, _, _, count)| (id, u32::try_from(count).unwrap_or(u32::MAX)))
            .collect())
    }

    fn message(&self, entry: StreamId) -> Message {
        let StreamId { id, map, .. } = entry;
        let fields: HashMap<String, Vec<u8>> = map
            .into_iter()
            .filter_map(|(k, v)| redis::from_redis_value::<Vec<u8>>(v).ok().map(|v| (k, v)))
            .collect();
        let value = match fields.get(&self.config.body_field) {
            Some(body) => payload(body),
            None => {
                let mut object = ObjectMap::new();
                for (k, v) in fields {
                    object.insert(k.into(), payload(&v));
                }
                Value::Object(object)
            }
        };
        let mut message = Message::new(value);
        let mut meta = empty_object();
        insert(&mut meta, "id", Value::from(id));
        insert(&mut message.metadata, "redis", meta);
        message
    }
}

impl super::Source for RedisStreams {
    fn uses_store(&self) -> bool {
        self.config.dead_letter_stream.is_none()
    }

    async fn run<P: Processor, O: Output>(&self, feed: Feed<P, O>) -> std::io::Result<()> {
        // Not cancelled from outside: a batch under way is finished and acknowledged (the
        // reads block 1 s at most and look at shutdown in between).
        let acks = std::sync::Mutex::new(Vec::new());
        feed.keep_reading(
            "input.redis_streams",
            self.redis.shown(),
            AtShutdown::Finish,
            || self.consume(&feed, &acks),
        )
        .await;
        Ok(())
    }
}

fn entries_of(reply: StreamReadReply) -> Vec<StreamId> {
    reply.keys.into_iter().flat_map(|k| k.ids).collect()
}
