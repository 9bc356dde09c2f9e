//! The store's one writer: a thread of its own holding the one connection that writes. It takes
//! every write waiting in its channel and applies them in one transaction it begins and ends
//! itself, checking after any failure whether SQLite ended the transaction on its own; while
//! writes fail it probes every second.
//!
//! Why a thread and rusqlite rather than the async driver the readers use: sqlx runs each
//! statement, and each row a statement returns, through its connection's thread, so a group of
//! N writes crossed threads several times N (a context switch each on a small machine). Here a
//! whole group costs one wake-up of this thread and one answer per write.

use super::*;

use rusqlite::config::DbConfig;
use rusqlite::types::Value as Param;
use rusqlite::{Connection, OpenFlags, params, params_from_iter};

/// Most writes one transaction takes.
const GROUP_MAX: usize = 512;

/// How often a failing writer tries a small write when nothing else asks it to write.
const PROBE_EVERY: Duration = Duration::from_secs(1);

/// How soon after a recovery a failure for the same cause counts as the same outage.
const FLAP: Duration = Duration::from_secs(10);

pub(super) enum Write {
    Enqueue {
        flow: String,
        id: String,
        payload: Vec<u8>,
        metadata: Vec<u8>,
        order_key: Option<String>,
        now_ms: i64,
        reply: oneshot::Sender<Result<i64, StoreError>>,
    },
    Claim {
        flow: String,
        now_ms: i64,
        limit: u32,
        lease_ms: i64,
        reply: oneshot::Sender<Result<Vec<Queued>, StoreError>>,
    },
    Ack {
        seq: i64,
        reply: oneshot::Sender<Result<bool, StoreError>>,
    },
    Reschedule {
        seq: i64,
        attempts: u32,
        next_attempt_ms: i64,
        note: String,
        reply: oneshot::Sender<Result<bool, StoreError>>,
    },
    DeadLetter {
        seq: i64,
        attempts: u32,
        failure: Failure,
        now_ms: i64,
        reply: oneshot::Sender<Result<bool, StoreError>>,
    },
    Bury {
        letter: DeadLetter,
        reply: oneshot::Sender<Result<bool, StoreError>>,
    },
    Replay {
        filter: DlqFilter,
        now_ms: i64,
        /// One dead letter replayed with a new payload, and the history line saying so.
        edit: Option<(Vec<u8>, String)>,
        reply: oneshot::Sender<Result<u64, StoreError>>,
    },
    Purge {
        filter: DlqFilter,
        reply: oneshot::Sender<Result<u64, StoreError>>,
    },
    KvPut {
        namespace: String,
        key: String,
        value: Vec<u8>,
        expires_at_ms: Option<i64>,
        only_if_absent_at: Option<i64>,
        reply: oneshot::Sender<Result<bool, StoreError>>,
    },
    KvClaim {
        namespace: String,
        key: String,
        holder: Vec<u8>,
        expires_at_ms: i64,
        now_ms: i64,
        reply: oneshot::Sender<Result<Option<Vec<u8>>, StoreError>>,
    },
    KvReplace {
        namespace: String,
        key: String,
        expected: Vec<u8>,
        value: Vec<u8>,
        expires_at_ms: Option<i64>,
        reply: oneshot::Sender<Result<bool, StoreError>>,
    },
    KvDelete {
        namespace: String,
        key: String,
        only_if_value: Option<Vec<u8>>,
        reply: oneshot::Sender<Result<bool, StoreError>>,
    },
    KvExpire {
        now_ms: i64,
        reply: oneshot::Sender<Result<u64, StoreError>>,
    },
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS queue (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    flow TEXT NOT NULL,
    id TEXT NOT NULL,
    payload BLOB NOT NULL,
    metadata BLOB NOT NULL,
    enqueued_at INTEGER NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt_at INTEGER NOT NULL,
    lease_until INTEGER NOT NULL DEFAULT 0,
    last_error TEXT,
    history TEXT NOT NULL DEFAULT '',
    order_key TEXT
);
CREATE INDEX IF NOT EXISTS queue_due ON queue (flow, next_attempt_at);
CREATE TABLE IF NOT EXISTS dead_letters (
    id TEXT PRIMARY KEY,
    flow TEXT NOT NULL,
    payload BLOB NOT NULL,
    metadata BLOB NOT NULL,
    enqueued_at INTEGER NOT NULL,
    failed_at INTEGER NOT NULL,
    attempts INTEGER NOT NULL,
    reason TEXT NOT NULL,
    last_status INTEGER,
    response_excerpt TEXT,
    history TEXT NOT NULL DEFAULT '',
    order_key TEXT
);
CREATE INDEX IF NOT EXISTS dead_letters_flow ON dead_letters (flow, failed_at);
-- Lists of every flow's dead letters page in this order: with 100,000 of them a page is read
-- from the index in under a millisecond, where a sort of all of them took 25 ms.
CREATE INDEX IF NOT EXISTS dead_letters_failed ON dead_letters (failed_at, id);
CREATE TABLE IF NOT EXISTS kv (
    namespace TEXT NOT NULL,
    key TEXT NOT NULL,
    value BLOB NOT NULL,
    expires_at INTEGER,
    PRIMARY KEY (namespace, key)
);
CREATE INDEX IF NOT EXISTS kv_expiry ON kv (expires_at) WHERE expires_at IS NOT NULL;
";

/// Indexes over columns that [`add_missing_columns`] may have just added. The partial index lets a
/// claim skip a message whose key has an earlier message still queued, without touching flows
/// that do not order.
const LATE_INDEXES: &str = "
CREATE INDEX IF NOT EXISTS queue_order ON queue (flow, order_key, seq) WHERE order_key IS NOT NULL;
";

/// Starts the writer's thread, which opens and checks the file (creating the schema), and
/// answers once it has: the channel to send writes to, or why the store cannot open.
pub(super) async fn start(
    path: &Path,
    durability: Durability,
    owner: bool,
    health: Arc<HealthCell>,
) -> Result<mpsc::Sender<Write>, StoreError> {
    let (writes, rx) = mpsc::channel(4 * GROUP_MAX);
    let (opened, open) = oneshot::channel();
    let thread_path = path.to_path_buf();
    let spawned = std::thread::Builder::new()
        .name("weft-store".into())
        .spawn(move || {
            batch_scheduling();
            // A runtime of the thread's own only waits for the channel and the probe's timer;
            // the writes are plain calls on this thread.
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_time()
                .build();
            let conn = runtime
                .map_err(|e| StoreError::Open {
                    path: thread_path.clone(),
                    source: Box::new(e),
                })
                .and_then(|runtime| Ok((runtime, open_checked(&thread_path, durability, owner)?)));
            let (runtime, conn) = match conn {
                Ok(opened_ok) => {
                    let _ = opened.send(Ok(()));
                    opened_ok
                }
                Err(e) => {
                    let _ = opened.send(Err(e));
                    return;
                }
            };
            let writer = Writer {
                conn: Some(conn),
                durability,
                path: thread_path,
                health,
            };
            runtime.block_on(writer.run(rx));
        });
    if let Err(e) = spawned {
        return Err(StoreError::Open {
            path: path.to_path_buf(),
            source: Box::new(e),
        });
    }
    open.await.map_err(|_| StoreError::Closed)??;
    Ok(writes)
}

/// Marks the calling thread as a batch thread for the scheduler (Linux `SCHED_BATCH`): woken,
/// it does not preempt the running thread, but waits for that thread's turn to end. Where the
/// writer shares a core with the tasks that send it writes, it would otherwise be woken by the
/// first write of each burst, preempt its sender and commit groups of a few writes, each paying
/// its own commit and two context switches; as a batch thread it commits what piled up meanwhile
/// in one transaction. Its share of the CPU is unchanged, and on a core of its own nothing
/// changes. A hint: where it is refused, the writer works as before.
fn batch_scheduling() {
    #[cfg(target_os = "linux")]
    {
        let param = libc::sched_param { sched_priority: 0 };
        // SAFETY: `param` is valid for the call; pid 0 is the calling thread.
        let refused = unsafe { libc::sched_setscheduler(0, libc::SCHED_BATCH, &param) } != 0;
        if refused {
            tracing::debug!(error = %std::io::Error::last_os_error(), "store: the writer thread stays a normal thread");
        }
    }
}

/// Opens the connection that writes, with the durability's settings.
fn connect(path: &Path, durability: Durability) -> rusqlite::Result<Connection> {
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_CREATE
            | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    conn.busy_timeout(Duration::from_secs(10))?;
    // Plans that do not depend on the values bound: otherwise a statement whose plan looked at
    // one (a claim's `LIMIT ?`) is compiled again every time the value changes, which was a
    // fifth of the writer's time.
    conn.set_db_config(DbConfig::SQLITE_DBCONFIG_ENABLE_QPSG, true)?;
    // SAFETY: the handle of a connection this thread owns, used for the call only.
    keep_wal_files(unsafe { conn.handle() });
    // These two pragmas answer with the value now in force.
    let _: String = conn.query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))?;
    let _: i64 = conn.query_row(
        &format!("PRAGMA journal_size_limit = {WAL_LIMIT}"),
        [],
        |r| r.get(0),
    )?;
    conn.execute_batch(match durability {
        Durability::Process => "PRAGMA synchronous = NORMAL",
        Durability::Power => "PRAGMA synchronous = FULL",
    })?;
    Ok(conn)
}

/// Opens the file, refuses a damaged one, and brings its schema up to date.
fn open_checked(
    path: &Path,
    durability: Durability,
    owner: bool,
) -> Result<Connection, StoreError> {
    let corrupt = |detail: String| StoreError::Corrupt {
        path: path.to_path_buf(),
        detail,
    };
    let failed = |e: rusqlite::Error| classify(error_code(&e), Box::new(e), path);
    let conn = connect(path, durability).map_err(failed)?;
    owner_only(path);
    // Read as bytes: a damaged file can hold text that is not UTF-8 where text belongs.
    let check: Vec<u8> = conn
        .query_row(
            "SELECT CAST(quick_check AS BLOB) FROM pragma_quick_check",
            [],
            |r| r.get(0),
        )
        .map_err(failed)?;
    if check != b"ok" {
        return Err(corrupt(String::from_utf8_lossy(&check).into_owned()));
    }
    let schema = conn
        .prepare("SELECT CAST(sql AS BLOB) FROM sqlite_master WHERE sql IS NOT NULL")
        .and_then(|mut s| {
            s.query_map([], |r| r.get::<_, Vec<u8>>(0))?
                .collect::<Result<Vec<_>, _>>()
        })
        .map_err(failed)?;
    if schema.iter().any(|sql| std::str::from_utf8(sql).is_err()) {
        return Err(corrupt("its schema holds text that is not UTF-8".into()));
    }
    conn.execute_batch(SCHEMA).map_err(failed)?;
    add_missing_columns(&conn).map_err(failed)?;
    conn.execute_batch(LATE_INDEXES).map_err(failed)?;
    if owner {
        let unwritable = |e: rusqlite::Error| WriteFailure::of(&e).error();
        // Leases from a previous run have no worker left.
        conn.execute(
            "UPDATE queue SET lease_until = 0 WHERE lease_until != 0",
            [],
        )
        .map_err(unwritable)?;
        // The process that delivers must be able to write: refuse to start rather than
        // answer every message with an error.
        probe(&conn).map_err(unwritable)?;
    }
    Ok(conn)
}

/// Stores made before the `order_key` columns existed get them here, before any migration.
fn add_missing_columns(conn: &Connection) -> rusqlite::Result<()> {
    for table in ["queue", "dead_letters"] {
        let has: i64 = conn.query_row(
            &format!("SELECT COUNT(*) FROM pragma_table_info('{table}') WHERE name = 'order_key'"),
            [],
            |r| r.get(0),
        )?;
        if has == 0 {
            conn.execute_batch(&format!("ALTER TABLE {table} ADD COLUMN order_key TEXT"))?;
        }
    }
    Ok(())
}

/// SQLite's extended result code of an error, if SQLite gave one.
fn error_code(e: &rusqlite::Error) -> Option<i64> {
    e.sqlite_error().map(|e| i64::from(e.extended_code))
}

/// A write of a few KiB, removed again: whether the file system takes writes at all. Run
/// outside any transaction of the writer's.
fn probe(conn: &Connection) -> rusqlite::Result<()> {
    conn.execute_batch(
        "INSERT OR REPLACE INTO kv (namespace, key, value) VALUES ('weft', 'probe', zeroblob(8192));
         DELETE FROM kv WHERE namespace = 'weft' AND key = 'probe';",
    )
}

/// The one connection that writes, and what it takes to open it again.
struct Writer {
    /// `None` after a failure left it in a state it could not be brought back from.
    conn: Option<Connection>,
    durability: Durability,
    path: PathBuf,
    health: Arc<HealthCell>,
}

impl Writer {
    async fn run(mut self, mut rx: mpsc::Receiver<Write>) {
        let mut batch = Vec::with_capacity(GROUP_MAX);
        let mut probed = tokio::time::Instant::now();
        loop {
            // While failing, find out every PROBE_EVERY whether writing works again, so that
            // `/health` recovers with no traffic, or with only claims that write nothing.
            let failing = self.health.failing_now.load(Ordering::Relaxed);
            let got = if failing {
                let next = probed + PROBE_EVERY;
                tokio::time::timeout_at(next, rx.recv_many(&mut batch, GROUP_MAX))
                    .await
                    .ok()
            } else {
                Some(rx.recv_many(&mut batch, GROUP_MAX).await)
            };
            if failing && probed.elapsed() >= PROBE_EVERY {
                self.probe();
                probed = tokio::time::Instant::now();
            }
            match got {
                Some(0) => return,
                Some(_) => self.group(&mut batch),
                None => {}
            }
        }
    }

    /// The connection, opened again if a failure made the writer drop it.
    fn connection(&mut self) -> Result<&Connection, WriteFailure> {
        if self.conn.is_none() {
            let conn = connect(&self.path, self.durability).map_err(|e| WriteFailure::of(&e))?;
            tracing::info!(path = %self.path.display(), "store: writer connection opened again");
            self.conn = Some(conn);
        }
        Ok(self.conn.as_ref().expect("just set"))
    }

    fn probe(&mut self) {
        let result = match self.connection() {
            Ok(conn) => probe(conn).map_err(|e| WriteFailure::of(&e)),
            Err(e) => Err(e),
        };
        match result {
            Ok(()) => self.succeeded(),
            Err(e) => {
                self.settle(&e);
                self.failed(&e, false);
            }
        }
    }

    /// Applies `batch` in one transaction and answers every write of it: with its result once
    /// the commit succeeded, or with the commit's error (nothing of the group stored).
    fn group(&mut self, batch: &mut Vec<Write>) {
        // While failing, only a commit that wrote something shows the disk takes writes again.
        let failing = self.health.failing_now.load(Ordering::Relaxed);
        let conn = match self.connection() {
            Ok(conn) => conn,
            Err(e) => {
                batch.drain(..).for_each(|w| fail(w, &e));
                self.failed(&e, true);
                return;
            }
        };
        let changes_before = conn.total_changes();
        if let Err(e) = conn.execute_batch("BEGIN IMMEDIATE") {
            let e = WriteFailure::of(&e);
            batch.drain(..).for_each(|w| fail(w, &e));
            self.settle(&e);
            self.failed(&e, true);
            return;
        }
        // Enqueues and acks, the bulk of the traffic, first, each kind with one prepared
        // statement; every other write in arrival order after them. Reordering is safe: a
        // claim can only see more, and an ack names a message committed by an earlier group.
        let mut enqueues = Vec::new();
        let mut acks = Vec::new();
        let mut others = Vec::new();
        for w in batch.drain(..) {
            match w {
                w @ Write::Enqueue { .. } => enqueues.push(w),
                Write::Ack { seq, reply } => acks.push((seq, reply)),
                w => others.push(w),
            }
        }
        let mut replies = Vec::with_capacity(enqueues.len() + acks.len() + others.len());
        let mut others = others.into_iter();
        // A failed statement usually fails alone (its own row, or the savepoint of its
        // write); but if it took the transaction with it, nothing before it can be committed
        // and nothing after it may run, or it would commit alone.
        let mut lost = None;
        // A write that failed alone for a reason of the disk's: the store is not healthy, even
        // if the rest of the group commits.
        let mut alone: Option<WriteFailure> = None;
        'writes: {
            if !enqueues.is_empty()
                && let Some(e) = enqueue_all(conn, enqueues, &mut replies)
            {
                if conn.is_autocommit() {
                    lost = Some(e);
                    break 'writes;
                }
                alone.get_or_insert(e);
            }
            if !acks.is_empty()
                && let Some(e) = ack_all(conn, std::mem::take(&mut acks), &mut replies)
            {
                if conn.is_autocommit() {
                    lost = Some(e);
                    break 'writes;
                }
                alone.get_or_insert(e);
            }
            for w in others.by_ref() {
                let reply = apply(conn, w);
                let error = reply.error();
                replies.push(reply);
                if let Some(e) = error {
                    if conn.is_autocommit() {
                        lost = Some(e);
                        break 'writes;
                    }
                    alone.get_or_insert(e);
                }
            }
        }
        let result = match lost {
            Some(e) => Err(e),
            None => conn
                .execute_batch("COMMIT")
                .map_err(|e| WriteFailure::of(&e)),
        };
        match result {
            // Answers go out only now: nothing is reported written before its commit.
            Ok(()) => {
                let wrote = conn.total_changes() > changes_before;
                replies.into_iter().for_each(Reply::send);
                match alone.filter(|e| e.cause != Cause::Other) {
                    Some(e) => self.failed(&e, false),
                    None if failing && wrote => self.succeeded(),
                    None => {}
                }
            }
            Err(e) => {
                replies.into_iter().for_each(|r| r.fail(&e));
                acks.into_iter()
                    .for_each(|(_, reply)| drop(reply.send(Err(e.error()))));
                others.for_each(|w| fail(w, &e));
                self.settle(&e);
                self.failed(&e, true);
            }
        }
    }

    /// After a failure: rolls back whatever is left of the transaction and makes sure the
    /// connection is back in autocommit, or drops it to be opened again. (A transaction
    /// believed open when SQLite had already ended it would turn every later group into a
    /// savepoint of a transaction that never commits.)
    fn settle(&mut self, cause: &WriteFailure) {
        let Some(conn) = self.conn.as_ref() else {
            return;
        };
        if conn.is_autocommit() {
            return;
        }
        let _ = conn.execute_batch("ROLLBACK");
        if !conn.is_autocommit() {
            tracing::warn!(path = %self.path.display(), error = %cause.detail, "store: the writer connection could not roll back; opening it again");
            self.conn = None;
        }
    }

    fn failed(&self, e: &WriteFailure, commit: bool) {
        if commit {
            self.health.failed_commits.fetch_add(1, Ordering::Relaxed);
        }
        let mut failing = self
            .health
            .failing
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if failing.as_ref().is_none_or(|f| f.cause != e.cause) {
            // A small probe can fit where real groups do not: an outage that "ended" moments
            // ago and fails again for the same cause is the same outage (same start, no new
            // ERROR line).
            let recovered = self
                .health
                .recovered
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .take();
            let since = match recovered {
                Some((at, was)) if at.elapsed() < FLAP && was.cause == e.cause => {
                    tracing::debug!(path = %self.path.display(), error = %e.detail, "store cannot write again ({})", e.cause);
                    was.since
                }
                _ => {
                    tracing::error!(
                        path = %self.path.display(),
                        error = %e.detail,
                        "store cannot write ({}): {}. Until it can, nothing new is acknowledged (HTTP intake answers 503, reading inputs wait).",
                        e.cause,
                        e.cause.advice()
                    );
                    std::time::SystemTime::now()
                }
            };
            *failing = Some(Failing {
                cause: e.cause,
                detail: e.detail.clone(),
                since,
            });
        }
        self.health.failing_now.store(true, Ordering::Relaxed);
    }

    fn succeeded(&self) {
        if !self.health.failing_now.swap(false, Ordering::Relaxed) {
            return;
        }
        let was = self
            .health
            .failing
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        let Some(was) = was else {
            return;
        };
        let mut recovered = self
            .health
            .recovered
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        // Said once per outage, not once per flap of one.
        if recovered
            .as_ref()
            .is_none_or(|(at, _)| at.elapsed() >= FLAP)
        {
            let down = was.since.elapsed().unwrap_or_default();
            tracing::warn!(
                path = %self.path.display(),
                "store writes again (it could not for {:.1} s: {})",
                down.as_secs_f64(),
                was.cause
            );
        }
        *recovered = Some((std::time::Instant::now(), was));
    }
}

/// Inserts the enqueues of a group, one execution of one prepared statement each. The first
/// that fails fails with every later one (the disk is full for all of them); those before it
/// stay in the transaction.
fn enqueue_all(
    conn: &Connection,
    writes: Vec<Write>,
    replies: &mut Vec<Reply>,
) -> Option<WriteFailure> {
    let mut writes = writes.into_iter();
    let insert = conn.prepare_cached(
        "INSERT INTO queue (flow, id, payload, metadata, enqueued_at, next_attempt_at, order_key)
         VALUES (?1, ?2, ?3, ?4, ?5, ?5, ?6)",
    );
    let failure = match insert {
        Ok(mut insert) => loop {
            let Write::Enqueue {
                flow,
                id,
                payload,
                metadata,
                order_key,
                now_ms,
                reply,
            } = writes.next()?
            else {
                unreachable!("only enqueues are batched as enqueues")
            };
            match insert.execute(params![flow, id, payload, metadata, now_ms, order_key]) {
                Ok(_) => replies.push(Reply::Seq(reply, Ok(conn.last_insert_rowid()))),
                Err(e) => {
                    let failure = WriteFailure::of(&e);
                    replies.push(Reply::Seq(reply, Err(failure.error())));
                    break failure;
                }
            }
        },
        Err(e) => WriteFailure::of(&e),
    };
    for w in writes {
        replies.push(Reply::Seq(w.into_enqueue_reply(), Err(failure.error())));
    }
    Some(failure)
}

/// Deletes the acked messages of a group, one execution of one prepared statement each; each
/// answer says whether its message was still queued.
fn ack_all(
    conn: &Connection,
    acks: Vec<(i64, oneshot::Sender<Result<bool, StoreError>>)>,
    replies: &mut Vec<Reply>,
) -> Option<WriteFailure> {
    let mut acks = acks.into_iter();
    let failure = match conn.prepare_cached("DELETE FROM queue WHERE seq = ?1") {
        Ok(mut delete) => loop {
            let (seq, reply) = acks.next()?;
            match delete.execute([seq]) {
                Ok(n) => replies.push(Reply::Done(reply, Ok(n == 1))),
                Err(e) => {
                    let failure = WriteFailure::of(&e);
                    replies.push(Reply::Done(reply, Err(failure.error())));
                    break failure;
                }
            }
        },
        Err(e) => WriteFailure::of(&e),
    };
    for (_, reply) in acks {
        replies.push(Reply::Done(reply, Err(failure.error())));
    }
    Some(failure)
}

/// Why a write failed, kept apart from the error each caller gets (errors do not clone).
#[derive(Debug, Clone)]
struct WriteFailure {
    cause: Cause,
    detail: String,
}

impl WriteFailure {
    fn of(e: &rusqlite::Error) -> WriteFailure {
        WriteFailure {
            cause: Cause::of(error_code(e)),
            detail: e.to_string(),
        }
    }

    fn error(&self) -> StoreError {
        StoreError::Unavailable {
            cause: self.cause,
            detail: self.detail.clone(),
        }
    }
}

impl Write {
    fn into_enqueue_reply(self) -> oneshot::Sender<Result<i64, StoreError>> {
        match self {
            Write::Enqueue { reply, .. } => reply,
            _ => unreachable!("only enqueues are batched as enqueues"),
        }
    }
}

/// An answer held back until the transaction commits.
enum Reply {
    Seq(
        oneshot::Sender<Result<i64, StoreError>>,
        Result<i64, StoreError>,
    ),
    Claimed(
        oneshot::Sender<Result<Vec<Queued>, StoreError>>,
        Result<Vec<Queued>, StoreError>,
    ),
    Done(
        oneshot::Sender<Result<bool, StoreError>>,
        Result<bool, StoreError>,
    ),
    Count(
        oneshot::Sender<Result<u64, StoreError>>,
        Result<u64, StoreError>,
    ),
    Value(
        oneshot::Sender<Result<Option<Vec<u8>>, StoreError>>,
        Result<Option<Vec<u8>>, StoreError>,
    ),
}

impl Reply {
    fn send(self) {
        match self {
            Reply::Seq(s, r) => drop(s.send(r)),
            Reply::Claimed(s, r) => drop(s.send(r)),
            Reply::Done(s, r) => drop(s.send(r)),
            Reply::Count(s, r) => drop(s.send(r)),
            Reply::Value(s, r) => drop(s.send(r)),
        }
    }

    /// The write's own error, if it failed alone.
    fn error(&self) -> Option<WriteFailure> {
        let failure = |e: &StoreError| match e {
            StoreError::Write(e) => WriteFailure::of(e),
            StoreError::Unavailable { cause, detail } => WriteFailure {
                cause: *cause,
                detail: detail.clone(),
            },
            other => WriteFailure {
                cause: Cause::Other,
                detail: other.to_string(),
            },
        };
        match self {
            Reply::Seq(_, Err(e))
            | Reply::Claimed(_, Err(e))
            | Reply::Done(_, Err(e))
            | Reply::Count(_, Err(e))
            | Reply::Value(_, Err(e)) => Some(failure(e)),
            _ => None,
        }
    }

    fn fail(self, failure: &WriteFailure) {
        let err = || failure.error();
        match self {
            Reply::Seq(s, _) => drop(s.send(Err(err()))),
            Reply::Claimed(s, _) => drop(s.send(Err(err()))),
            Reply::Done(s, _) => drop(s.send(Err(err()))),
            Reply::Count(s, _) => drop(s.send(Err(err()))),
            Reply::Value(s, _) => drop(s.send(Err(err()))),
        }
    }
}

fn fail(w: Write, failure: &WriteFailure) {
    let reply = match w {
        Write::Enqueue { reply, .. } => Reply::Seq(reply, Ok(0)),
        Write::Claim { reply, .. } => Reply::Claimed(reply, Ok(Vec::new())),
        Write::Ack { reply, .. }
        | Write::Reschedule { reply, .. }
        | Write::DeadLetter { reply, .. }
        | Write::Bury { reply, .. }
        | Write::KvPut { reply, .. }
        | Write::KvReplace { reply, .. }
        | Write::KvDelete { reply, .. } => Reply::Done(reply, Ok(false)),
        Write::KvClaim { reply, .. } => Reply::Value(reply, Ok(None)),
        Write::Replay { reply, .. }
        | Write::Purge { reply, .. }
        | Write::KvExpire { reply, .. } => Reply::Count(reply, Ok(0)),
    };
    reply.fail(failure);
}

/// The parameters of [`dlq_match`]'s condition, in its order.
fn filter_params(filter: &DlqFilter) -> impl Iterator<Item = Param> + '_ {
    [
        filter.flow.clone().map(Param::Text),
        filter.id.clone().map(Param::Text),
        filter.since_ms.map(Param::Integer),
        filter.reason.clone().map(Param::Text),
        filter.status.map(|s| Param::Integer(i64::from(s))),
        filter.after.clone().map(Param::Text),
        filter.until_ms.map(Param::Integer),
        filter.first.map(|n| Param::Integer(i64::from(n))),
    ]
    .into_iter()
    .flatten()
}

fn apply(conn: &Connection, w: Write) -> Reply {
    match w {
        // The writer batches these (see `Writer::group`); one alone is a batch of one.
        w @ Write::Enqueue { .. } => {
            let mut replies = Vec::with_capacity(1);
            enqueue_all(conn, vec![w], &mut replies);
            replies.pop().expect("one reply per enqueue")
        }
        Write::Ack { seq, reply } => {
            let mut replies = Vec::with_capacity(1);
            ack_all(conn, vec![(seq, reply)], &mut replies);
            replies.pop().expect("one reply per ack")
        }
        Write::Claim {
            flow,
            now_ms,
            limit,
            lease_ms,
            reply,
        } => Reply::Claimed(reply, claim(conn, &flow, now_ms, limit, lease_ms)),
        Write::Reschedule {
            seq,
            attempts,
            next_attempt_ms,
            note,
            reply,
        } => {
            let r = conn
                .prepare_cached(
                    "UPDATE queue SET attempts = ?1, next_attempt_at = ?2,
                        last_error = CASE WHEN ?3 = '' THEN last_error ELSE ?3 END,
                        history = history || CASE WHEN ?3 = '' THEN '' ELSE ?3 || char(10) END,
                        lease_until = 0
                     WHERE seq = ?4",
                )
                .and_then(|mut s| s.execute(params![attempts, next_attempt_ms, note, seq]))
                .map(|n| n == 1)
                .map_err(StoreError::from);
            Reply::Done(reply, r)
        }
        Write::DeadLetter {
            seq,
            attempts,
            failure,
            now_ms,
            reply,
        } => {
            // Two statements, one effect: a savepoint makes them all or nothing even when a
            // later write in the same group commit fails.
            let moved = savepoint(conn, "dead_letter", || {
                let inserted = conn.prepare_cached(
                    "INSERT OR REPLACE INTO dead_letters
                       (id, flow, payload, metadata, enqueued_at, failed_at, attempts, reason, last_status, response_excerpt, history, order_key)
                     SELECT id, flow, payload, metadata, enqueued_at, ?1, ?2, ?3, ?4, ?5, history, order_key FROM queue WHERE seq = ?6",
                )?
                .execute(params![
                    now_ms,
                    attempts,
                    failure.reason,
                    failure.last_status.map(i64::from),
                    failure.response_excerpt,
                    seq
                ])?;
                conn.prepare_cached("DELETE FROM queue WHERE seq = ?1")?
                    .execute([seq])?;
                Ok(inserted == 1)
            });
            Reply::Done(reply, moved)
        }
        Write::Bury { letter, reply } => {
            let history: String = letter
                .history
                .iter()
                .map(|line| format!("{}\n", line.replace('\n', " ")))
                .collect();
            let r = conn
                .prepare_cached(
                    "INSERT OR REPLACE INTO dead_letters
                       (id, flow, payload, metadata, enqueued_at, failed_at, attempts, reason, last_status, response_excerpt, history)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
                )
                .and_then(|mut s| {
                    s.execute(params![
                        letter.id,
                        letter.flow,
                        letter.payload,
                        letter.metadata,
                        letter.enqueued_at_ms,
                        letter.failed_at_ms,
                        letter.attempts,
                        letter.failure.reason,
                        letter.failure.last_status.map(i64::from),
                        letter.failure.response_excerpt,
                        history
                    ])
                })
                .map(|_| true)
                .map_err(StoreError::from);
            Reply::Done(reply, r)
        }
        Write::Replay {
            filter,
            now_ms,
            edit,
            reply,
        } => {
            let replayed = savepoint(conn, "replay", || {
                let sql = format!(
                    "INSERT INTO queue (flow, id, payload, metadata, enqueued_at, next_attempt_at, order_key, history)
                     SELECT flow, id, COALESCE(?, payload), metadata, ?, ?, order_key,
                            history
                            || json_object('at', failed_at, 'attempt', attempts, 'outcome', 'dead_lettered',
                                           'status', last_status, 'error', replace(reason, char(10), ' '))
                            || char(10)
                            || COALESCE(?, json_object('at', ?, 'outcome', 'replayed')) || char(10)
                     FROM dead_letters WHERE {} ORDER BY failed_at, id",
                    dlq_match(&filter)
                );
                let (payload, note) = edit.unzip();
                let head = [
                    payload.map_or(Param::Null, Param::Blob),
                    Param::Integer(now_ms),
                    Param::Integer(now_ms),
                    note.map_or(Param::Null, Param::Text),
                    Param::Integer(now_ms),
                ];
                let moved = conn.prepare_cached(&sql)?.execute(params_from_iter(
                    head.into_iter().chain(filter_params(&filter)),
                ))?;
                delete_dead(conn, &filter)?;
                Ok(moved as u64)
            });
            Reply::Count(reply, replayed)
        }
        Write::Purge { filter, reply } => {
            Reply::Count(reply, delete_dead(conn, &filter).map_err(StoreError::from))
        }
        Write::KvPut {
            namespace,
            key,
            value,
            expires_at_ms,
            only_if_absent_at,
            reply,
        } => {
            let r = match only_if_absent_at {
                None => conn
                    .prepare_cached(
                        "INSERT INTO kv (namespace, key, value, expires_at) VALUES (?1, ?2, ?3, ?4)
                         ON CONFLICT (namespace, key) DO UPDATE SET value = excluded.value, expires_at = excluded.expires_at",
                    )
                    .and_then(|mut s| s.execute(params![namespace, key, value, expires_at_ms]))
                    .map(|_| true),
                Some(now_ms) => conn
                    .prepare_cached(
                        "INSERT INTO kv (namespace, key, value, expires_at) VALUES (?1, ?2, ?3, ?4)
                         ON CONFLICT (namespace, key) DO UPDATE SET value = excluded.value, expires_at = excluded.expires_at
                         WHERE kv.expires_at IS NOT NULL AND kv.expires_at <= ?5",
                    )
                    .and_then(|mut s| {
                        s.execute(params![namespace, key, value, expires_at_ms, now_ms])
                    })
                    .map(|n| n == 1),
            };
            Reply::Done(reply, r.map_err(StoreError::from))
        }
        Write::KvClaim {
            namespace,
            key,
            holder,
            expires_at_ms,
            now_ms,
            reply,
        } => Reply::Value(
            reply,
            kv_claim(conn, &namespace, &key, &holder, expires_at_ms, now_ms)
                .map_err(StoreError::from),
        ),
        Write::KvReplace {
            namespace,
            key,
            expected,
            value,
            expires_at_ms,
            reply,
        } => {
            let r = conn
                .prepare_cached(
                    "UPDATE kv SET value = ?1, expires_at = ?2 WHERE namespace = ?3 AND key = ?4 AND value = ?5",
                )
                .and_then(|mut s| {
                    s.execute(params![value, expires_at_ms, namespace, key, expected])
                })
                .map(|n| n == 1)
                .map_err(StoreError::from);
            Reply::Done(reply, r)
        }
        Write::KvDelete {
            namespace,
            key,
            only_if_value,
            reply,
        } => {
            let r = conn
                .prepare_cached(
                    "DELETE FROM kv WHERE namespace = ?1 AND key = ?2 AND (?3 IS NULL OR value = ?3)",
                )
                .and_then(|mut s| s.execute(params![namespace, key, only_if_value]))
                .map(|n| n == 1)
                .map_err(StoreError::from);
            Reply::Done(reply, r)
        }
        Write::KvExpire { now_ms, reply } => {
            let r = conn
                .prepare_cached("DELETE FROM kv WHERE expires_at IS NOT NULL AND expires_at <= ?1")
                .and_then(|mut s| s.execute([now_ms]))
                .map(|n| n as u64)
                .map_err(StoreError::from);
            Reply::Count(reply, r)
        }
    }
}

fn kv_claim(
    conn: &Connection,
    namespace: &str,
    key: &str,
    holder: &[u8],
    expires_at_ms: i64,
    now_ms: i64,
) -> rusqlite::Result<Option<Vec<u8>>> {
    let taken = conn
        .prepare_cached(
            "INSERT INTO kv (namespace, key, value, expires_at) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT (namespace, key) DO UPDATE SET value = excluded.value, expires_at = excluded.expires_at
             WHERE (kv.expires_at IS NOT NULL AND kv.expires_at <= ?5) OR kv.value = excluded.value",
        )?
        .execute(params![namespace, key, holder, expires_at_ms, now_ms])?
        == 1;
    if taken {
        return Ok(None);
    }
    // Same transaction as the failed insert: the holder read here is the one that won.
    conn.prepare_cached("SELECT value FROM kv WHERE namespace = ?1 AND key = ?2")?
        .query_row(params![namespace, key], |r| r.get(0))
        .map(Some)
}

/// Runs `body` inside a savepoint: released after success, rolled back to after a failure.
fn savepoint<T>(
    conn: &Connection,
    name: &str,
    body: impl FnOnce() -> rusqlite::Result<T>,
) -> Result<T, StoreError> {
    conn.execute_batch(&format!("SAVEPOINT {name}"))?;
    let result = body();
    let end = if result.is_ok() {
        format!("RELEASE {name}")
    } else {
        format!("ROLLBACK TO {name}; RELEASE {name}")
    };
    let ended = conn.execute_batch(&end);
    match (result, ended) {
        (Ok(v), Ok(())) => Ok(v),
        (Err(e), _) | (Ok(_), Err(e)) => Err(e.into()),
    }
}

fn claim(
    conn: &Connection,
    flow: &str,
    now_ms: i64,
    limit: u32,
    lease_ms: i64,
) -> Result<Vec<Queued>, StoreError> {
    let mut update = conn.prepare_cached(
        "UPDATE queue SET lease_until = ?1 + ?2
         WHERE seq IN (SELECT seq FROM queue
                       WHERE flow = ?3 AND next_attempt_at <= ?1 AND lease_until <= ?1
                         AND (order_key IS NULL OR NOT EXISTS (
                               SELECT 1 FROM queue earlier
                               WHERE earlier.flow = ?3 AND earlier.order_key = queue.order_key
                                 AND earlier.seq < queue.seq))
                       ORDER BY next_attempt_at, seq LIMIT ?4)
         RETURNING seq, flow, id, payload, metadata, enqueued_at, attempts, last_error, history",
    )?;
    // A row that does not decode (a damaged or hand-edited file) is an error, not a panic.
    let mut claimed = update
        .query_map(params![now_ms, lease_ms, flow, limit], |r| {
            Ok(Queued {
                seq: r.get(0)?,
                flow: r.get(1)?,
                id: r.get(2)?,
                payload: r.get(3)?,
                metadata: r.get(4)?,
                enqueued_at_ms: r.get(5)?,
                attempts: r.get::<_, i64>(6)? as u32,
                last_error: r.get(7)?,
                history: split_history(&r.get::<_, String>(8)?),
            })
        })?
        .collect::<Result<Vec<_>, _>>()?;
    // RETURNING gives no order guarantee. (Due order is next attempt time, then arrival; the
    // order by (next_attempt_at, seq) walks the `queue_due` index and stops at the limit.)
    claimed.sort_by_key(|q| q.seq);
    Ok(claimed)
}

fn delete_dead(conn: &Connection, filter: &DlqFilter) -> rusqlite::Result<u64> {
    let sql = format!("DELETE FROM dead_letters WHERE {}", dlq_match(filter));
    conn.prepare_cached(&sql)?
        .execute(params_from_iter(filter_params(filter)))
        .map(|n| n as u64)
}
