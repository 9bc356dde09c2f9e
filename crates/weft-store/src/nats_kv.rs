//! A cluster node's store: every `kv_*` operation on a NATS JetStream KV bucket that all nodes
//! share; the queues and dead letters on JetStream too ([`NatsQueues`]) or, without them, on
//! the node's own store.
//!
//! What the nodes share through it: polling inputs' checkpoints, `dedupe` keys,
//! `Idempotency-Key` records, OAuth 2.0 tokens. Each conditional write is one compare-and-set
//! on the entry's revision, so two nodes can never both win a key, and a node that read a value
//! before another node changed it fails its write instead of overwriting it.
//!
//! Expiry keeps the trait's contract (time is a parameter): the expiry travels in the value
//! (eight bytes, big-endian milliseconds, then the value), and an expired entry reads as absent
//! until [`Backend::kv_expire`] removes it. Keys and namespaces are escaped into the characters
//! a KV key may hold (`namespace.key`, each prefixed with `v` so neither is ever empty).
//!
//! A key is removed by deleting its one message by sequence (its revision), not by writing a
//! delete marker: that is as conditional as a compare-and-set (a key written since has another
//! revision, and the delete finds nothing), and leaves nothing behind, so a bucket of dedupe
//! keys does not grow by a marker per key ever seen.

use super::*;

use async_nats::jetstream::kv;
use bytes::Bytes;

/// No expiry, as stored.
const NEVER: i64 = i64::MAX;

/// Compare-and-set attempts before a write gives up: each retry means another node wrote the
/// same key in between, so this many is contention no caller should wait out.
const CAS_TRIES: u32 = 64;

/// A store whose key/value operations go to a shared JetStream KV bucket; see the module doc.
pub struct NatsKv {
    local: Option<Store>,
    queues: Option<Arc<NatsQueues>>,
    kv: kv::Store,
}

/// A queue or dead-letter operation: on the cluster's queues, else on the local store; on a
/// store that has key/value only, it fails.
macro_rules! local {
    ($self:ident, $method:ident($($arg:expr),*)) => {
        match (&$self.queues, &$self.local) {
            (Some(queues), _) => Box::pin(queues.$method($($arg),*)),
            (None, Some(local)) => local.$method($($arg),*),
            (None, None) => Box::pin(std::future::ready(Err(StoreError::Cluster(
                "this store holds the cluster's key/value only (no queues, no dead letters)".into(),
            )))),
        }
    };
}

impl NatsKv {
    /// Key/value on `bucket`, everything else on `local`.
    pub fn new(local: Store, bucket: kv::Store) -> NatsKv {
        NatsKv {
            local: Some(local),
            queues: None,
            kv: bucket,
        }
    }

    /// The same with the queues and dead letters on the cluster's JetStream as well.
    pub fn with_queues(mut self, queues: Arc<NatsQueues>) -> NatsKv {
        self.queues = Some(queues);
        self
    }

    /// Key/value on `bucket` and nothing else (for tools that read or set shared state, such
    /// as `weft checkpoint` on a cluster).
    pub fn kv_only(bucket: kv::Store) -> NatsKv {
        NatsKv {
            local: None,
            queues: None,
            kv: bucket,
        }
    }

    /// The live entry of a key: `(revision, expiry, value)`, or the revision a deleted or
    /// expired one left (to write over it by compare-and-set).
    async fn read(&self, key: &str) -> Result<Entry, StoreError> {
        let entry = self.kv.entry(key).await.map_err(remote)?;
        Ok(match entry {
            Some(e) if e.operation == kv::Operation::Put => {
                let (expires, value) = split(&e.value);
                Entry::Live {
                    revision: e.revision,
                    expires,
                    value,
                }
            }
            Some(e) => Entry::Gone(Some(e.revision)),
            None => Entry::Gone(None),
        })
    }

    /// Removes the key's message of `revision`: `false` when it is not there any more (the key
    /// was written or removed since).
    async fn remove(&self, revision: u64) -> Result<bool, StoreError> {
        use async_nats::jetstream::stream::DeleteMessageErrorKind;
        match self.kv.stream.delete_message(revision).await {
            Ok(deleted) => Ok(deleted),
            Err(e) if matches!(e.kind(), DeleteMessageErrorKind::JetStream(_)) => Ok(false),
            Err(e) => Err(remote(e)),
        }
    }

    /// The compare-and-set loop of the conditional writes: reads `key` (its live value at
    /// `now_ms`; with `None`, expired or not), and `decide` answers at once (`Err`) or names
    /// the value to write over what was read (`Ok`); `written` is the answer once that write
    /// wins. Someone writing in between makes it read and decide again.
    async fn compare_and_set<T>(
        &self,
        key: &str,
        now_ms: Option<i64>,
        mut decide: impl FnMut(Option<Bytes>) -> Result<Bytes, T>,
        written: T,
    ) -> Result<T, StoreError> {
        for _ in 0..CAS_TRIES {
            let (revision, live) = self.read(key).await?.at(now_ms);
            let value = match decide(live) {
                Ok(value) => value,
                Err(answer) => return Ok(answer),
            };
            if self.write_over(key, revision, value).await? {
                return Ok(written);
            }
        }
        Err(contended(key))
    }

    /// Writes `value` over what was read: `false` when someone wrote in between.
    async fn write_over(
        &self,
        key: &str,
        previous: Option<u64>,
        value: Bytes,
    ) -> Result<bool, StoreError> {
        match previous {
            Some(revision) => match self.kv.update(key, value, revision).await {
                Ok(_) => Ok(true),
                Err(e) if e.kind() == kv::UpdateErrorKind::WrongLastRevision => Ok(false),
                Err(e) => Err(remote(e)),
            },
            None => match self.kv.create(key, value).await {
                Ok(_) => Ok(true),
                Err(e) if e.kind() == kv::CreateErrorKind::AlreadyExists => Ok(false),
                Err(e) => Err(remote(e)),
            },
        }
    }
}

/// Opens KV bucket `bucket`, creating it (unless `create` is `None`) with one value per key,
/// entries forgotten after `max_age` (zero: kept) and `replicas` copies. It creates the
/// bucket's stream itself: the client's own bucket creation first reads the account's info,
/// which servers before 2.10 send in a shape it cannot read. Deleting a message by sequence
/// is allowed (see the module doc).
pub async fn open_bucket(
    js: &async_nats::jetstream::Context,
    bucket: &str,
    description: &str,
    create: Option<(Duration, usize)>,
) -> Result<kv::Store, String> {
    use async_nats::jetstream::stream;
    let found = js.get_key_value(bucket).await;
    let Some((max_age, replicas)) = create else {
        return found.map_err(|e| format!("bucket {bucket}: {e}"));
    };
    if let Ok(store) = found {
        return Ok(store);
    }
    let config = stream::Config {
        name: format!("KV_{bucket}"),
        description: Some(description.into()),
        subjects: vec![format!("$KV.{bucket}.>")],
        max_messages_per_subject: 1,
        max_age,
        storage: stream::StorageType::File,
        allow_rollup: true,
        deny_delete: false,
        allow_direct: true,
        discard: stream::DiscardPolicy::New,
        num_replicas: replicas.max(1),
        ..Default::default()
    };
    match js.create_stream(config).await {
        Ok(_) => {}
        // Another node created it first.
        Err(e)
            if matches!(e.kind(), async_nats::jetstream::context::CreateStreamErrorKind::JetStream(j)
                if j.error_code() == async_nats::jetstream::ErrorCode::STREAM_NAME_EXIST) => {}
        Err(e) => return Err(e.to_string()),
    }
    js.get_key_value(bucket).await.map_err(|e| e.to_string())
}

enum Entry {
    Live {
        revision: u64,
        expires: i64,
        value: Bytes,
    },
    /// Absent, with the revision of its delete marker if it has one.
    Gone(Option<u64>),
}

impl Entry {
    /// The revision to write over and the live value at `now_ms` (an expired one is absent).
    fn at(self, now_ms: Option<i64>) -> (Option<u64>, Option<Bytes>) {
        match self {
            Entry::Live {
                revision,
                expires,
                value,
            } if now_ms.is_none_or(|now| expires > now) => (Some(revision), Some(value)),
            Entry::Live { revision, .. } => (Some(revision), None),
            Entry::Gone(revision) => (revision, None),
        }
    }
}

/// A NATS operation that failed: nothing of it is stored, and it can be tried again.
pub(crate) fn remote(e: impl std::fmt::Display) -> StoreError {
    StoreError::Unavailable {
        cause: Cause::Unreachable,
        detail: e.to_string(),
    }
}

fn contended(key: &str) -> StoreError {
    StoreError::Cluster(format!(
        "key {key}: {CAS_TRIES} writes in a row lost to other writers"
    ))
}

fn join(expires_at_ms: Option<i64>, value: &[u8]) -> Bytes {
    let mut out = Vec::with_capacity(8 + value.len());
    out.extend_from_slice(&expires_at_ms.unwrap_or(NEVER).to_be_bytes());
    out.extend_from_slice(value);
    out.into()
}

fn split(stored: &Bytes) -> (i64, Bytes) {
    match stored.get(..8) {
        Some(head) => (
            i64::from_be_bytes(head.try_into().expect("eight bytes")),
            stored.slice(8..),
        ),
        // Not written by weft: a value without expiry.
        None => (NEVER, stored.clone()),
    }
}

/// `text` as a KV key token (for keys of other buckets too, such as leases named by flow).
pub fn key_token(text: &str) -> String {
    escape(text)
}

/// The text of a token [`key_token`] made.
pub fn token_text(token: &str) -> Option<String> {
    unescape(token)
}

/// `text` in the characters a KV key token may hold: letters, digits, `-`, `_` and `/` as
/// they are, any other byte as `=` and two hex digits; `v` first, so no token is empty.
fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 1);
    out.push('v');
    for byte in text.bytes() {
        match byte {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'_' | b'/' => out.push(byte as char),
            other => out.push_str(&format!("={other:02X}")),
        }
    }
    out
}

fn unescape(token: &str) -> Option<String> {
    let token = token.strip_prefix('v')?;
    let mut bytes = Vec::with_capacity(token.len());
    let mut rest = token.as_bytes();
    while let Some((&first, tail)) = rest.split_first() {
        if first == b'=' {
            let hex = std::str::from_utf8(tail.get(..2)?).ok()?;
            bytes.push(u8::from_str_radix(hex, 16).ok()?);
            rest = &tail[2..];
        } else {
            bytes.push(first);
            rest = tail;
        }
    }
    String::from_utf8(bytes).ok()
}

fn key_of(namespace: &str, key: &str) -> String {
    format!("{}.{}", escape(namespace), escape(key))
}

impl Backend for NatsKv {
    fn health(&self) -> Health {
        self.local.as_ref().map(|l| l.health()).unwrap_or_default()
    }

    fn watch_free_space(&self, limit: Option<u64>) {
        if let Some(local) = &self.local {
            local.watch_free_space(limit)
        }
    }

    fn enqueue<'a>(
        &'a self,
        flow: &'a str,
        id: &'a str,
        payload: &'a [u8],
        metadata: &'a [u8],
        order_key: Option<&'a str>,
        now_ms: i64,
    ) -> BoxFuture<'a, Result<i64, StoreError>> {
        local!(
            self,
            enqueue(flow, id, payload, metadata, order_key, now_ms)
        )
    }

    fn declare_ordered(&self, flow: &str, partitions: u32) {
        if let Some(queues) = &self.queues {
            queues.declare_ordered(flow, partitions)
        }
    }

    fn claim<'a>(
        &'a self,
        flow: &'a str,
        now_ms: i64,
        limit: u32,
        lease: Duration,
    ) -> BoxFuture<'a, Result<Vec<Queued>, StoreError>> {
        local!(self, claim(flow, now_ms, limit, lease))
    }

    fn ack<'a>(&'a self, seq: i64) -> BoxFuture<'a, Result<bool, StoreError>> {
        local!(self, ack(seq))
    }

    fn reschedule<'a>(
        &'a self,
        seq: i64,
        attempts: u32,
        next_attempt_ms: i64,
        note: &'a str,
    ) -> BoxFuture<'a, Result<bool, StoreError>> {
        local!(self, reschedule(seq, attempts, next_attempt_ms, note))
    }

    fn dead_letter<'a>(
        &'a self,
        seq: i64,
        attempts: u32,
        failure: Failure,
        now_ms: i64,
    ) -> BoxFuture<'a, Result<bool, StoreError>> {
        local!(self, dead_letter(seq, attempts, failure, now_ms))
    }

    fn bury<'a>(&'a self, letter: DeadLetter) -> BoxFuture<'a, Result<(), StoreError>> {
        local!(self, bury(letter))
    }

    fn replay<'a>(
        &'a self,
        filter: DlqFilter,
        now_ms: i64,
    ) -> BoxFuture<'a, Result<u64, StoreError>> {
        local!(self, replay(filter, now_ms))
    }

    fn replay_edited<'a>(
        &'a self,
        id: &'a str,
        payload: &'a [u8],
        note: &'a str,
        now_ms: i64,
    ) -> BoxFuture<'a, Result<bool, StoreError>> {
        local!(self, replay_edited(id, payload, note, now_ms))
    }

    fn purge<'a>(&'a self, filter: DlqFilter) -> BoxFuture<'a, Result<u64, StoreError>> {
        local!(self, purge(filter))
    }

    fn kv_put<'a>(
        &'a self,
        namespace: &'a str,
        key: &'a str,
        value: &'a [u8],
        expires_at_ms: Option<i64>,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(async move {
            self.kv
                .put(key_of(namespace, key), join(expires_at_ms, value))
                .await
                .map(drop)
                .map_err(remote)
        })
    }

    fn kv_put_if_absent<'a>(
        &'a self,
        namespace: &'a str,
        key: &'a str,
        value: &'a [u8],
        expires_at_ms: Option<i64>,
        now_ms: i64,
    ) -> BoxFuture<'a, Result<bool, StoreError>> {
        Box::pin(async move {
            let key = key_of(namespace, key);
            let decide = |live: Option<Bytes>| match live {
                Some(_) => Err(false),
                None => Ok(join(expires_at_ms, value)),
            };
            self.compare_and_set(&key, Some(now_ms), decide, true).await
        })
    }

    fn kv_claim<'a>(
        &'a self,
        namespace: &'a str,
        key: &'a str,
        holder: &'a [u8],
        expires_at_ms: i64,
        now_ms: i64,
    ) -> BoxFuture<'a, Result<Option<Vec<u8>>, StoreError>> {
        Box::pin(async move {
            let key = key_of(namespace, key);
            let decide = |live: Option<Bytes>| match live {
                Some(other) if other.as_ref() != holder => Err(Some(other.to_vec())),
                _ => Ok(join(Some(expires_at_ms), holder)),
            };
            self.compare_and_set(&key, Some(now_ms), decide, None).await
        })
    }

    fn kv_replace<'a>(
        &'a self,
        namespace: &'a str,
        key: &'a str,
        expected: &'a [u8],
        value: &'a [u8],
        expires_at_ms: Option<i64>,
    ) -> BoxFuture<'a, Result<bool, StoreError>> {
        Box::pin(async move {
            let key = key_of(namespace, key);
            let decide = |live: Option<Bytes>| match live {
                Some(live) if live.as_ref() == expected => Ok(join(expires_at_ms, value)),
                _ => Err(false),
            };
            self.compare_and_set(&key, None, decide, true).await
        })
    }

    fn kv_delete<'a>(
        &'a self,
        namespace: &'a str,
        key: &'a str,
        only_if_value: Option<&'a [u8]>,
    ) -> BoxFuture<'a, Result<bool, StoreError>> {
        Box::pin(async move {
            let key = key_of(namespace, key);
            for _ in 0..CAS_TRIES {
                let (revision, live) = self.read(&key).await?.at(None);
                let Some(live) = live else {
                    return Ok(false);
                };
                if only_if_value.is_some_and(|only| only != live.as_ref()) {
                    return Ok(false);
                }
                let Some(revision) = revision else {
                    return Ok(false);
                };
                if self.remove(revision).await? {
                    return Ok(true);
                }
                // Written in between: look again.
            }
            Err(contended(&key))
        })
    }

    fn kv_expire<'a>(&'a self, now_ms: i64) -> BoxFuture<'a, Result<u64, StoreError>> {
        Box::pin(async move {
            let mut expired = Vec::new();
            self.each_entry(|entry| {
                if split(&entry.value).0 <= now_ms {
                    expired.push(entry.revision);
                }
            })
            .await?;
            let mut swept = 0;
            for revision in expired {
                // Written again since: it is not expired any more, and is not removed.
                if self.remove(revision).await? {
                    swept += 1;
                }
            }
            Ok(swept)
        })
    }

    fn kv_get<'a>(
        &'a self,
        namespace: &'a str,
        key: &'a str,
        now_ms: i64,
    ) -> BoxFuture<'a, Result<Option<Vec<u8>>, StoreError>> {
        Box::pin(async move {
            let (_, live) = self.read(&key_of(namespace, key)).await?.at(Some(now_ms));
            Ok(live.map(|v| v.to_vec()))
        })
    }

    fn kv_list<'a>(
        &'a self,
        namespace: &'a str,
        now_ms: i64,
        limit: u32,
    ) -> BoxFuture<'a, Result<Vec<KeyValue>, StoreError>> {
        Box::pin(async move {
            let prefix = format!("{}.", escape(namespace));
            let mut out: Vec<KeyValue> = Vec::new();
            self.each_entry(|entry| {
                if let Some(key) = entry.key.strip_prefix(&prefix).and_then(unescape) {
                    let (expires, value) = split(&entry.value);
                    if expires > now_ms {
                        out.push((key, value.to_vec()));
                    }
                }
            })
            .await?;
            out.sort();
            out.truncate(limit as usize);
            Ok(out)
        })
    }

    fn depth<'a>(&'a self, flow: &'a str) -> BoxFuture<'a, Result<Depth, StoreError>> {
        local!(self, depth(flow))
    }

    fn find_queued<'a>(
        &'a self,
        id: &'a str,
    ) -> BoxFuture<'a, Result<Option<Waiting>, StoreError>> {
        local!(self, find_queued(id))
    }

    fn count_dead_letters<'a>(
        &'a self,
        filter: &'a DlqFilter,
    ) -> BoxFuture<'a, Result<u64, StoreError>> {
        local!(self, count_dead_letters(filter))
    }

    fn dead_letters<'a>(
        &'a self,
        filter: &'a DlqFilter,
        limit: u32,
    ) -> BoxFuture<'a, Result<Vec<DeadLetter>, StoreError>> {
        local!(self, dead_letters(filter, limit))
    }
}

impl NatsKv {
    /// Hands every live entry of the bucket to `each`, in one pass over its last values (not a
    /// request per key, and not all of them in memory at once): for listing and sweeping, not
    /// for the hot path.
    async fn each_entry(&self, mut each: impl FnMut(kv::Entry)) -> Result<(), StoreError> {
        use futures_util::StreamExt;
        let mut stream = self.kv.stream.clone();
        if stream.info().await.map_err(remote)?.state.messages == 0 {
            return Ok(());
        }
        let mut watch = self.kv.watch_with_history(">").await.map_err(remote)?;
        loop {
            let next = tokio::time::timeout(Duration::from_secs(10), watch.next())
                .await
                .map_err(|_| remote("reading the bucket's entries timed out"))?;
            let Some(entry) = next else {
                return Ok(());
            };
            let entry = entry.map_err(remote)?;
            // The entries left after this one: none, and the pass has seen every key.
            let last = entry.delta == 0;
            if entry.operation == kv::Operation::Put {
                each(entry);
            }
            if last {
                return Ok(());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escaped_keys_are_valid_and_read_back() {
        for text in ["", "a", "orders.v1", "ä ö/=x*>", "key-1_2", "..."] {
            let token = escape(text);
            assert!(
                token
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_/=".contains(&b)),
                "{token}"
            );
            assert_eq!(unescape(&token).as_deref(), Some(text));
        }
        assert_eq!(unescape("x"), None, "not a token of ours");
    }

    #[test]
    fn values_carry_their_expiry() {
        let stored = join(Some(42), b"v");
        assert_eq!(split(&stored), (42, Bytes::from_static(b"v")));
        assert_eq!(split(&join(None, b"")).0, NEVER);
    }
}
