//! weft's durable store: one queue per flow, the dead-letter queue, and key/value with TTL.
//!
//! Invariants, first:
//! - A write call returns only after its transaction committed. With [`Durability::Process`]
//!   the commit survives a killed process (SQLite WAL, `synchronous=NORMAL`); with
//!   [`Durability::Power`] it was also fsynced (`synchronous=FULL`).
//! - Writes are **group-committed**: one writer, on a thread of its own, takes every write
//!   waiting in its channel and applies them in one transaction, so concurrent producers share
//!   one commit (and one fsync) instead of paying one each. A write that fails fails alone (a
//!   savepoint where it has several statements), except that the first enqueue (or ack) of a
//!   group that fails takes the group's later ones with it; the rest of the group commits.
//!   The writer is a batch thread for the scheduler: on a core shared with its producers it
//!   runs when their turn ends, so what piled up meanwhile is one group.
//! - A queued message is never removed except by [`Backend::ack`] (delivered) or
//!   [`Backend::dead_letter`] (moved, in the same transaction, to the DLQ). A claim only leases
//!   it; a lease that is not acked in time (a crashed worker) lapses and the message is claimed
//!   again: at-least-once.
//! - Time is a parameter (`now_ms`, Unix milliseconds), never read inside, so schedules are
//!   persisted data and tests are deterministic.
//! - One process delivers from a store at a time ([`Store::open_owner`] holds an exclusive lock
//!   on `weft.db.lock`), and only it releases leases left by a previous run. Tools that inspect
//!   or edit the dead-letter queue open it with [`Store::open`] beside a running weft.
//!
//! The API speaks of flows, ids, leases and keys, not of SQL, so that a second backend (NATS
//! JetStream, for several nodes) can implement the same operations: this file holds the
//! contract ([`Backend`], its types, [`Store`]); `sqlite.rs` (and its `writer`) the embedded default, one SQLite
//! file, inspectable with the `sqlite3` tool; `nats_kv.rs` a cluster node's store, whose
//! key/value operations go to a JetStream KV bucket all nodes share, and `nats_queue.rs` its
//! queues and dead letters, on JetStream streams all nodes share.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

mod nats_kv;
mod nats_queue;
mod sqlite;

pub use nats_kv::{NatsKv, key_token, open_bucket, token_text};
pub use nats_queue::{NatsQueues, QueueLag};
use sqlite::Sqlite;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error(
        "store {path}: {detail} (the file is damaged or is not a weft store; move it aside to start empty)"
    )]
    Corrupt { path: PathBuf, detail: String },
    #[error("store {path}: {source}")]
    Open {
        path: PathBuf,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// A read failed.
    #[error("store: {0}")]
    Sql(#[from] sqlx::Error),
    /// A write failed alone (the rest of its group committed).
    #[error("store: {0}")]
    Write(#[from] rusqlite::Error),
    #[error("store is closed")]
    Closed,
    /// The cluster's shared store (NATS JetStream) refused or could not be reached.
    #[error("cluster store: {0}")]
    Cluster(String),
    /// A message larger than the store takes in one piece (NATS' `max_payload`).
    #[error(
        "a message of {bytes} bytes is larger than the cluster's NATS takes ({max} bytes, its max_payload)"
    )]
    TooLarge { bytes: usize, max: usize },
    #[error("store lock {path}: {detail}")]
    Locked { path: PathBuf, detail: String },
    /// A write was not committed because the store cannot write now: nothing of it is stored.
    /// The store keeps trying and writes again by itself once the cause is gone.
    #[error("store cannot write ({cause}): {detail}")]
    Unavailable { cause: Cause, detail: String },
}

/// Why the store cannot write, as an operator would act on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cause {
    /// The file system holding the store is full.
    DiskFull,
    /// The file system or the file is read-only.
    ReadOnly,
    /// The operating system reported an I/O error.
    Io,
    /// Another process held the write lock for longer than the busy timeout.
    Busy,
    /// The file is damaged.
    Damaged,
    /// Anything else SQLite refused.
    Other,
    /// Less free space than the store's floor ([`Backend::watch_free_space`]): new messages are
    /// refused so that delivery, which also writes, can go on and drain the queue.
    LowSpace,
    /// The cluster's NATS server cannot be reached (or refused the operation).
    Unreachable,
}

impl Cause {
    /// What an operator can do about it.
    pub fn advice(self) -> &'static str {
        match self {
            Cause::DiskFull => {
                "free space on the file system holding the data directory; weft writes again by itself once there is room"
            }
            Cause::ReadOnly => {
                "make the data directory writable again; weft writes again by itself once it can"
            }
            Cause::Io => {
                "check the disk holding the data directory (kernel log); weft retries by itself"
            }
            Cause::Busy => {
                "another process holds the store's write lock (a long `weft dlq` command?); weft retries by itself"
            }
            Cause::Damaged => {
                "the store file is damaged: stop weft, move the file aside and restart (messages in it are lost)"
            }
            Cause::Other => "weft retries by itself; if it persists, report it",
            Cause::LowSpace => {
                "free space on the file system holding the data directory (or lower `disk_free_limit`); delivery goes on meanwhile and intake resumes by itself"
            }
            Cause::Unreachable => {
                "check that the cluster's NATS server is up and reachable; weft connects again by itself"
            }
        }
    }

    /// The cause of SQLite's (extended) result code.
    fn of(code: Option<i64>) -> Cause {
        let Some(code) = code else {
            return Cause::Other;
        };
        // SQLITE_IOERR_SHMSIZE: the WAL index could not grow, "usually out of space".
        if code == 4874 {
            return Cause::DiskFull;
        }
        // Extended codes keep the primary code in their low byte.
        match code & 0xff {
            13 => Cause::DiskFull,
            8 => Cause::ReadOnly,
            10 => Cause::Io,
            5 | 6 => Cause::Busy,
            11 | 26 => Cause::Damaged,
            _ => Cause::Other,
        }
    }
}

impl std::fmt::Display for Cause {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Cause::DiskFull => "disk full",
            Cause::ReadOnly => "read-only",
            Cause::Io => "I/O error",
            Cause::Busy => "busy",
            Cause::Damaged => "damaged",
            Cause::Other => "write failed",
            Cause::LowSpace => "disk nearly full",
            Cause::Unreachable => "cluster store unreachable",
        })
    }
}

/// Whether the store is writing, as `/health` and the admin API report it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Health {
    /// Set while writes fail: since when, why.
    pub failing: Option<Failing>,
    /// Groups of writes whose commit failed since the store was opened (each answered with
    /// an error, none of them stored).
    pub failed_commits: u64,
    /// Set while free space is under the floor: new messages are refused meanwhile.
    pub low_space: Option<LowSpace>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LowSpace {
    /// Bytes the store can still use: free on the file system plus free pages in its file.
    pub available: u64,
    /// The floor.
    pub limit: u64,
    pub since: std::time::SystemTime,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failing {
    pub cause: Cause,
    pub detail: String,
    pub since: std::time::SystemTime,
}

/// The writer's health, shared with every handle.
#[derive(Default)]
struct HealthCell {
    failing: std::sync::Mutex<Option<Failing>>,
    failing_now: std::sync::atomic::AtomicBool,
    failed_commits: std::sync::atomic::AtomicU64,
    low_space: std::sync::Mutex<Option<LowSpace>>,
    low_now: std::sync::atomic::AtomicBool,
    /// Between two measures of the free space: the last measure less what was enqueued
    /// since (twice: the log, then the file), so a burst cannot overshoot the floor.
    room: std::sync::atomic::AtomicI64,
    floor: std::sync::atomic::AtomicU64,
    path: PathBuf,
    /// An enqueue was refused on the estimate since the last measure.
    estimate_refused: std::sync::atomic::AtomicBool,
    /// The last outage that ended, and when: see `sqlite::writer`'s `FLAP`.
    recovered: std::sync::Mutex<Option<(std::time::Instant, Failing)>>,
}

impl HealthCell {
    fn new(path: &Path) -> HealthCell {
        HealthCell {
            room: std::sync::atomic::AtomicI64::new(i64::MAX),
            path: path.to_path_buf(),
            ..Default::default()
        }
    }

    /// Enters the low-space state (and says so, once).
    fn low(&self, available: u64, floor: u64) {
        let mut low = self.low_space.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(state) = low.as_mut() {
            state.available = available;
            return;
        }
        tracing::error!(
            path = %self.path.display(),
            "store has {} KiB left, under its floor of {} KiB: new messages are refused (HTTP intake answers 503, reading inputs wait) while delivery goes on. {}",
            available / 1024,
            floor / 1024,
            Cause::LowSpace.advice()
        );
        *low = Some(LowSpace {
            available,
            limit: floor,
            since: std::time::SystemTime::now(),
        });
        self.low_now.store(true, Ordering::Relaxed);
    }

    /// Leaves it once there is a quarter of the floor more than the floor, so that it does
    /// not flap at the edge.
    fn measured(&self, available: u64, floor: u64) {
        // Intake refused on the estimate while the measure is inside the band that would not
        // clear a low state: it is one (or intake would creep towards the floor for ever,
        // each measure letting a little more in).
        let refused = self.estimate_refused.swap(false, Ordering::Relaxed);
        if available < floor || (refused && available < floor.saturating_add(floor / 4)) {
            return self.low(available, floor);
        }
        let mut low = self.low_space.lock().unwrap_or_else(|p| p.into_inner());
        match low.as_mut() {
            Some(state) if available >= floor.saturating_add(floor / 4) => {
                let down = state.since.elapsed().unwrap_or_default();
                tracing::warn!(
                    path = %self.path.display(),
                    "store has {} KiB free again: new messages are accepted (they were refused for {:.1} s)",
                    available / 1024,
                    down.as_secs_f64()
                );
                *low = None;
                self.low_now.store(false, Ordering::Relaxed);
            }
            Some(state) => state.available = available,
            None => {}
        }
    }
}

/// How much a committed write survives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Durability {
    /// Survives the process being killed; the last commits may be lost on power loss.
    #[default]
    Process,
    /// Survives power loss: every commit is fsynced before it returns.
    Power,
}

/// A message taken from a flow's queue for delivery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Queued {
    pub seq: i64,
    pub flow: String,
    pub id: String,
    pub payload: Vec<u8>,
    pub metadata: Vec<u8>,
    pub enqueued_at_ms: i64,
    /// Delivery attempts made so far.
    pub attempts: u32,
    pub last_error: Option<String>,
    /// Earlier failures, oldest first, kept across replays: one line each (see [`DeadLetter`]).
    pub history: Vec<String>,
}

/// Why a message was given up on.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Failure {
    pub reason: String,
    pub last_status: Option<u16>,
    /// A bounded excerpt of the last response.
    pub response_excerpt: Option<String>,
}

impl From<String> for Failure {
    fn from(reason: String) -> Failure {
        Failure {
            reason,
            ..Default::default()
        }
    }
}

/// A message given up on. Its `history` holds one line per earlier event, oldest first: the
/// notes of failed attempts ([`Backend::reschedule`], [`Backend::bury`]) as the engine wrote
/// them, and for every replay two lines the store writes, JSON objects like the engine's:
/// `{"at": ms, "attempt": n, "outcome": "dead_lettered", "status": 400, "error": "…"}` (the
/// failure the replay undid) and `{"at": ms, "outcome": "replayed"}`. The last failure itself
/// is in `attempts`, `failed_at_ms` and `failure`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadLetter {
    pub id: String,
    pub flow: String,
    pub payload: Vec<u8>,
    pub metadata: Vec<u8>,
    pub enqueued_at_ms: i64,
    pub failed_at_ms: i64,
    pub attempts: u32,
    pub failure: Failure,
    pub history: Vec<String>,
}

/// Which dead letters an operation applies to; empty fields match everything.
#[derive(Debug, Clone, Default)]
pub struct DlqFilter {
    pub flow: Option<String>,
    pub id: Option<String>,
    pub since_ms: Option<i64>,
    /// Failures whose reason contains this text.
    pub reason: Option<String>,
    /// Failures whose last answer had this status.
    pub status: Option<u16>,
    /// Only those after the dead letter of this id in a listing's order (failed at, then id):
    /// the next page's cursor. An id not there selects none.
    pub after: Option<String>,
    /// Failures at or before this time.
    pub until_ms: Option<i64>,
    /// Only the first this many of those matching, in a listing's order: a bulk replay or
    /// purge done in batches, each batch one transaction.
    pub first: Option<u32>,
}

/// A queued message, as a look-up by id shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Waiting {
    pub flow: String,
    pub id: String,
    pub enqueued_at_ms: i64,
    /// Attempts made so far.
    pub attempts: u32,
    pub next_attempt_at_ms: i64,
    /// A worker holds it now (being delivered).
    pub leased_until_ms: Option<i64>,
    pub last_error: Option<String>,
}

/// How much a flow has waiting.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Depth {
    pub messages: u64,
    pub bytes: u64,
    pub oldest_enqueued_at_ms: Option<i64>,
}

/// Longest excerpt of a response kept with a dead letter.
pub const EXCERPT_MAX: usize = 2048;

/// A key and its value, as [`Backend::kv_list`] gives them.
pub type KeyValue = (String, Vec<u8>);

/// A boxed future, as the methods of [`Backend`] return (it is used as a trait object).
pub type BoxFuture<'a, T> = std::pin::Pin<Box<dyn std::future::Future<Output = T> + Send + 'a>>;

/// What a durable store does: per-flow queues with leases and retry times, the dead-letter
/// queue, and a key/value table with expiry. SQLite ([`Store::open`]) is the first backend;
/// another implements this trait and passes the conformance suite in `tests/store.rs`. Time is
/// always a parameter (`now_ms`), never read from a clock.
pub trait Backend: Send + Sync + 'static {
    /// Whether writes are committing now, and how many groups failed so far.
    fn health(&self) -> Health;

    /// Keeps a floor of free space: while what the store can still use (free space on its file
    /// system plus free pages inside its file) is under `limit`, [`Backend::enqueue`] refuses
    /// with [`Cause::LowSpace`] and every other write goes on, so delivery can drain the queue
    /// (deleting a row needs room in the log too: a queue that filled the disk could never
    /// drain). `None` is 5 % of the file system, at most 64 MiB; `Some(0)` turns it off.
    /// Measured every [`SPACE_EVERY`] for as long as a handle to the store lives, and
    /// estimated in between from what was enqueued.
    fn watch_free_space(&self, limit: Option<u64>);

    /// Appends a message to `flow`'s queue, due now. Returns its sequence number. Messages
    /// with the same `order_key` are claimed one at a time, in the order they were enqueued: a
    /// message is not claimed while an earlier one with its key is still queued (leased, or
    /// waiting for a retry).
    fn enqueue<'a>(
        &'a self,
        flow: &'a str,
        id: &'a str,
        payload: &'a [u8],
        metadata: &'a [u8],
        order_key: Option<&'a str>,
        now_ms: i64,
    ) -> BoxFuture<'a, Result<i64, StoreError>>;

    /// Says that `flow`'s messages carry ordering keys, spread over `partitions` where the
    /// backend partitions them (the cluster's queues); before the flow's first operation. A
    /// backend that orders every key on its own (SQLite) needs nothing.
    fn declare_ordered(&self, flow: &str, partitions: u32) {
        let _ = (flow, partitions);
    }

    /// Leases up to `limit` due messages of `flow` for `lease`: earliest due first, then by
    /// arrival; returned in arrival order.
    fn claim<'a>(
        &'a self,
        flow: &'a str,
        now_ms: i64,
        limit: u32,
        lease: Duration,
    ) -> BoxFuture<'a, Result<Vec<Queued>, StoreError>>;

    /// The message was delivered: remove it. `false` if it was not queued.
    fn ack<'a>(&'a self, seq: i64) -> BoxFuture<'a, Result<bool, StoreError>>;

    /// Records a failed attempt and when to try next; releases the lease. `note` (one line; its
    /// newlines become spaces) is appended to the message's history and kept as its last
    /// error; an empty one (a wait that was no attempt) leaves the history as it is.
    fn reschedule<'a>(
        &'a self,
        seq: i64,
        attempts: u32,
        next_attempt_ms: i64,
        note: &'a str,
    ) -> BoxFuture<'a, Result<bool, StoreError>>;

    /// Moves a queued message to the dead-letter queue, in one transaction.
    fn dead_letter<'a>(
        &'a self,
        seq: i64,
        attempts: u32,
        failure: Failure,
        now_ms: i64,
    ) -> BoxFuture<'a, Result<bool, StoreError>>;

    /// Writes a dead letter for a message that was never queued: a direct flow's reading input
    /// gave up on it. A dead letter with the same id is replaced; replaying it queues it on
    /// its flow like any other.
    fn bury<'a>(&'a self, letter: DeadLetter) -> BoxFuture<'a, Result<(), StoreError>>;

    /// Puts matching dead letters back on their flows' queues with attempts reset and their
    /// failure kept in the history. Returns how many.
    fn replay<'a>(
        &'a self,
        filter: DlqFilter,
        now_ms: i64,
    ) -> BoxFuture<'a, Result<u64, StoreError>>;

    /// Puts dead letter `id` back on its flow's queue as [`Backend::replay`] does, with
    /// `payload` in place of its own and `note` (one line, which should keep what was
    /// replaced) as the history's replay line. `false` if there is no such dead letter.
    fn replay_edited<'a>(
        &'a self,
        id: &'a str,
        payload: &'a [u8],
        note: &'a str,
        now_ms: i64,
    ) -> BoxFuture<'a, Result<bool, StoreError>>;

    /// Deletes matching dead letters. Returns how many.
    fn purge<'a>(&'a self, filter: DlqFilter) -> BoxFuture<'a, Result<u64, StoreError>>;

    /// Sets `key` in `namespace`, with an optional expiry.
    fn kv_put<'a>(
        &'a self,
        namespace: &'a str,
        key: &'a str,
        value: &'a [u8],
        expires_at_ms: Option<i64>,
    ) -> BoxFuture<'a, Result<(), StoreError>>;

    /// Sets `key` only if it is absent (or expired) at `now_ms`; `true` if it was set. The
    /// building block of dedupe: the first writer of a key wins.
    fn kv_put_if_absent<'a>(
        &'a self,
        namespace: &'a str,
        key: &'a str,
        value: &'a [u8],
        expires_at_ms: Option<i64>,
        now_ms: i64,
    ) -> BoxFuture<'a, Result<bool, StoreError>>;

    /// Takes `key` for `holder` unless someone else holds it: sets it when it is absent,
    /// expired at `now_ms`, or already `holder`'s (then only its expiry moves). Returns `None`
    /// when `holder` has it now, or the other holder's value. One write, so two claimants can
    /// never both win, and a loser always learns who won.
    fn kv_claim<'a>(
        &'a self,
        namespace: &'a str,
        key: &'a str,
        holder: &'a [u8],
        expires_at_ms: i64,
        now_ms: i64,
    ) -> BoxFuture<'a, Result<Option<Vec<u8>>, StoreError>>;

    /// Sets `key` to `value` only if its value is `expected` now; `true` if it was replaced.
    fn kv_replace<'a>(
        &'a self,
        namespace: &'a str,
        key: &'a str,
        expected: &'a [u8],
        value: &'a [u8],
        expires_at_ms: Option<i64>,
    ) -> BoxFuture<'a, Result<bool, StoreError>>;

    /// Removes `key`, only if its value is `only_if_value` when given (so that a holder
    /// releases only what it still holds). `true` if it was removed.
    fn kv_delete<'a>(
        &'a self,
        namespace: &'a str,
        key: &'a str,
        only_if_value: Option<&'a [u8]>,
    ) -> BoxFuture<'a, Result<bool, StoreError>>;

    /// Deletes every key that expired by `now_ms`; returns how many. Expired keys already read
    /// as absent; this only gives their space back.
    fn kv_expire<'a>(&'a self, now_ms: i64) -> BoxFuture<'a, Result<u64, StoreError>>;

    /// The value of `key` unless it expired by `now_ms`.
    fn kv_get<'a>(
        &'a self,
        namespace: &'a str,
        key: &'a str,
        now_ms: i64,
    ) -> BoxFuture<'a, Result<Option<Vec<u8>>, StoreError>>;

    /// Every key of `namespace` not expired by `now_ms`, with its value, by key; at most
    /// `limit`.
    fn kv_list<'a>(
        &'a self,
        namespace: &'a str,
        now_ms: i64,
        limit: u32,
    ) -> BoxFuture<'a, Result<Vec<KeyValue>, StoreError>>;

    /// Messages waiting in `flow`'s queue, their bytes and the oldest one's age.
    fn depth<'a>(&'a self, flow: &'a str) -> BoxFuture<'a, Result<Depth, StoreError>>;

    /// The queued message of this id, if one is (in any flow): where it is in its retries.
    /// For the admin's look-up, not a hot path: it may read the whole queue.
    fn find_queued<'a>(&'a self, id: &'a str)
    -> BoxFuture<'a, Result<Option<Waiting>, StoreError>>;

    /// How many dead letters match `filter`.
    fn count_dead_letters<'a>(
        &'a self,
        filter: &'a DlqFilter,
    ) -> BoxFuture<'a, Result<u64, StoreError>>;

    /// Dead letters matching `filter`, oldest failure first, at most `limit`.
    fn dead_letters<'a>(
        &'a self,
        filter: &'a DlqFilter,
        limit: u32,
    ) -> BoxFuture<'a, Result<Vec<DeadLetter>, StoreError>>;
}

/// A handle to the store; cheap to clone, shared by every flow. Its operations are those of
/// [`Backend`], reached through `Deref`.
#[derive(Clone)]
pub struct Store(Arc<dyn Backend>);

impl std::ops::Deref for Store {
    type Target = dyn Backend;

    fn deref(&self) -> &Self::Target {
        &*self.0
    }
}

impl Store {
    /// Opens (creating if needed) the SQLite store file at `path`. A damaged file is an error,
    /// never silently replaced.
    pub async fn open(path: &Path, durability: Durability) -> Result<Store, StoreError> {
        Sqlite::open_as(path, durability, false)
            .await
            .map(Store::of)
    }

    /// Opens the SQLite store as the one process that delivers from it: takes an exclusive lock
    /// on `<path>.lock` (a second `weft run` on the same data is refused) and releases the
    /// leases a previous run left, since no worker of that run is left to finish them. Tools
    /// that only inspect or edit the DLQ use [`Store::open`], which leaves leases alone.
    pub async fn open_owner(path: &Path, durability: Durability) -> Result<Store, StoreError> {
        Sqlite::open_as(path, durability, true).await.map(Store::of)
    }

    /// A store on any backend.
    pub fn of(backend: impl Backend) -> Store {
        Store(Arc::new(backend))
    }
}
