//! The SQLite backend: one file in WAL mode; one writer task that group-commits every waiting
//! write in one transaction it begins and ends itself (checking after any failure whether
//! SQLite ended the transaction on its own), readers on a small read-only pool, a probe write
//! every second while writes fail, and the free-space floor.

use super::*;

use sqlx::sqlite::{
    SqliteConnectOptions, SqliteConnection, SqliteJournalMode, SqlitePool, SqlitePoolOptions,
    SqliteSynchronous,
};
use sqlx::{Connection, Row};
use tokio::sync::{mpsc, oneshot};

/// The WHERE condition for a [`DlqFilter`], with a `?` only for the fields given (so that the
/// flow index and the id key are usable); bind them with `bind_filter!` in the same order.
fn dlq_match(filter: &DlqFilter) -> String {
    let mut conditions = Vec::new();
    if filter.flow.is_some() {
        conditions.push("flow = ?");
    }
    if filter.id.is_some() {
        conditions.push("id = ?");
    }
    if filter.since_ms.is_some() {
        conditions.push("failed_at >= ?");
    }
    if filter.reason.is_some() {
        conditions.push("instr(reason, ?) > 0");
    }
    if filter.status.is_some() {
        conditions.push("last_status = ?");
    }
    if conditions.is_empty() {
        "1".into()
    } else {
        conditions.join(" AND ")
    }
}

macro_rules! bind_filter {
    ($query:expr, $filter:expr) => {{
        let mut query = $query;
        if let Some(flow) = &$filter.flow {
            query = query.bind(flow.clone());
        }
        if let Some(id) = &$filter.id {
            query = query.bind(id.clone());
        }
        if let Some(since) = $filter.since_ms {
            query = query.bind(since);
        }
        if let Some(reason) = &$filter.reason {
            query = query.bind(reason.clone());
        }
        if let Some(status) = $filter.status {
            query = query.bind(i64::from(status));
        }
        query
    }};
}

/// Most writes one transaction takes.
const GROUP_MAX: usize = 512;

enum Write {
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

/// The SQLite backend: one writer task that group-commits, readers on a small read-only pool.
#[derive(Clone)]
pub(crate) struct Sqlite {
    writes: mpsc::Sender<Write>,
    reads: SqlitePool,
    health: Arc<HealthCell>,
    /// Held for the life of an owner's handles; the OS releases it if the process dies.
    _lock: Option<Arc<std::fs::File>>,
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

/// Stores made before the `order_key` columns existed get them here, before any migration.
async fn add_missing_columns(conn: &mut SqliteConnection) -> Result<(), sqlx::Error> {
    for table in ["queue", "dead_letters"] {
        let has: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
            "SELECT COUNT(*) FROM pragma_table_info('{table}') WHERE name = 'order_key'"
        )))
        .fetch_one(&mut *conn)
        .await?;
        if has == 0 {
            sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
                "ALTER TABLE {table} ADD COLUMN order_key TEXT"
            )))
            .execute(&mut *conn)
            .await?;
        }
    }
    Ok(())
}

impl Backend for Sqlite {
    fn health(&self) -> Health {
        Health {
            failing: self
                .health
                .failing
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone(),
            failed_commits: self.health.failed_commits.load(Ordering::Relaxed),
            low_space: self
                .health
                .low_space
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone(),
        }
    }

    fn watch_free_space(&self, limit: Option<u64>) {
        let health = Arc::downgrade(&self.health);
        let reads = self.reads.clone();
        let dir = self
            .health
            .path
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
            .unwrap_or(Path::new("."))
            .to_path_buf();
        tokio::spawn(async move {
            loop {
                let Some(health) = health.upgrade() else {
                    return;
                };
                match room(&dir, &reads).await {
                    Ok((available, total)) => {
                        let floor = limit.unwrap_or((total / 20).min(64 << 20));
                        health.floor.store(floor, Ordering::Relaxed);
                        health
                            .room
                            .store(available.min(i64::MAX as u64) as i64, Ordering::Relaxed);
                        health.measured(available, floor);
                    }
                    Err(e) => {
                        // No measure, no estimate: never refuse on a guess.
                        health.room.store(i64::MAX, Ordering::Relaxed);
                        tracing::debug!(path = %health.path.display(), error = %e, "store: cannot read the free space")
                    }
                }
                drop(health);
                tokio::time::sleep(SPACE_EVERY).await;
            }
        });
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
        Box::pin(async move {
            let low_space = |available: u64, limit: u64| StoreError::Unavailable {
                cause: Cause::LowSpace,
                detail: format!(
                    "{} KiB left for the store, under the floor of {} KiB",
                    available / 1024,
                    limit / 1024
                ),
            };
            if self.health.low_now.load(Ordering::Relaxed)
                && let Some(low) = self.health().low_space
            {
                return Err(low_space(low.available, low.limit));
            }
            // Between measures, what this message will take (in the log, then in the file) is
            // counted against the last one: a refusal here lasts until the next measure, which
            // decides whether the store is low on space (see `HealthCell::measured`).
            let floor = self.health.floor.load(Ordering::Relaxed);
            if floor > 0 {
                let size = 2 * (payload.len() + metadata.len() + id.len() + 64) as i64;
                let room = self.health.room.fetch_sub(size, Ordering::Relaxed) - size;
                if room < floor as i64 {
                    self.health.room.fetch_add(size, Ordering::Relaxed);
                    self.health.estimate_refused.store(true, Ordering::Relaxed);
                    return Err(low_space(room.max(0) as u64, floor));
                }
            }
            self.write(|reply| Write::Enqueue {
                flow: flow.into(),
                id: id.into(),
                payload: payload.into(),
                metadata: metadata.into(),
                order_key: order_key.map(Into::into),
                now_ms,
                reply,
            })
            .await
        })
    }

    fn claim<'a>(
        &'a self,
        flow: &'a str,
        now_ms: i64,
        limit: u32,
        lease: Duration,
    ) -> BoxFuture<'a, Result<Vec<Queued>, StoreError>> {
        Box::pin(async move {
            self.write(|reply| Write::Claim {
                flow: flow.into(),
                now_ms,
                limit,
                lease_ms: lease.as_millis() as i64,
                reply,
            })
            .await
        })
    }

    fn ack<'a>(&'a self, seq: i64) -> BoxFuture<'a, Result<bool, StoreError>> {
        Box::pin(async move { self.write(|reply| Write::Ack { seq, reply }).await })
    }

    fn reschedule<'a>(
        &'a self,
        seq: i64,
        attempts: u32,
        next_attempt_ms: i64,
        note: &'a str,
    ) -> BoxFuture<'a, Result<bool, StoreError>> {
        Box::pin(async move {
            self.write(|reply| Write::Reschedule {
                seq,
                attempts,
                next_attempt_ms,
                note: note.replace('\n', " "),
                reply,
            })
            .await
        })
    }

    fn dead_letter<'a>(
        &'a self,
        seq: i64,
        attempts: u32,
        failure: Failure,
        now_ms: i64,
    ) -> BoxFuture<'a, Result<bool, StoreError>> {
        Box::pin(async move {
            let mut failure = failure;
            if let Some(excerpt) = &mut failure.response_excerpt {
                truncate(excerpt, EXCERPT_MAX);
            }
            self.write(|reply| Write::DeadLetter {
                seq,
                attempts,
                failure,
                now_ms,
                reply,
            })
            .await
        })
    }

    fn bury<'a>(&'a self, letter: DeadLetter) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(async move {
            let mut letter = letter;
            if let Some(excerpt) = &mut letter.failure.response_excerpt {
                truncate(excerpt, EXCERPT_MAX);
            }
            self.write(|reply| Write::Bury { letter, reply })
                .await
                .map(|_| ())
        })
    }

    fn replay<'a>(
        &'a self,
        filter: DlqFilter,
        now_ms: i64,
    ) -> BoxFuture<'a, Result<u64, StoreError>> {
        Box::pin(async move {
            self.write(|reply| Write::Replay {
                filter,
                now_ms,
                edit: None,
                reply,
            })
            .await
        })
    }

    fn replay_edited<'a>(
        &'a self,
        id: &'a str,
        payload: &'a [u8],
        note: &'a str,
        now_ms: i64,
    ) -> BoxFuture<'a, Result<bool, StoreError>> {
        Box::pin(async move {
            let filter = DlqFilter {
                id: Some(id.into()),
                ..Default::default()
            };
            let edit = Some((payload.to_vec(), note.replace('\n', " ")));
            self.write(|reply| Write::Replay {
                filter,
                now_ms,
                edit,
                reply,
            })
            .await
            .map(|n| n == 1)
        })
    }

    fn purge<'a>(&'a self, filter: DlqFilter) -> BoxFuture<'a, Result<u64, StoreError>> {
        Box::pin(async move { self.write(|reply| Write::Purge { filter, reply }).await })
    }

    fn kv_put<'a>(
        &'a self,
        namespace: &'a str,
        key: &'a str,
        value: &'a [u8],
        expires_at_ms: Option<i64>,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(async move {
            self.write(|reply| Write::KvPut {
                namespace: namespace.into(),
                key: key.into(),
                value: value.into(),
                expires_at_ms,
                only_if_absent_at: None,
                reply,
            })
            .await
            .map(|_| ())
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
            self.write(|reply| Write::KvPut {
                namespace: namespace.into(),
                key: key.into(),
                value: value.into(),
                expires_at_ms,
                only_if_absent_at: Some(now_ms),
                reply,
            })
            .await
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
            self.write(|reply| Write::KvClaim {
                namespace: namespace.into(),
                key: key.into(),
                holder: holder.into(),
                expires_at_ms,
                now_ms,
                reply,
            })
            .await
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
            self.write(|reply| Write::KvReplace {
                namespace: namespace.into(),
                key: key.into(),
                expected: expected.into(),
                value: value.into(),
                expires_at_ms,
                reply,
            })
            .await
        })
    }

    fn kv_delete<'a>(
        &'a self,
        namespace: &'a str,
        key: &'a str,
        only_if_value: Option<&'a [u8]>,
    ) -> BoxFuture<'a, Result<bool, StoreError>> {
        Box::pin(async move {
            self.write(|reply| Write::KvDelete {
                namespace: namespace.into(),
                key: key.into(),
                only_if_value: only_if_value.map(Into::into),
                reply,
            })
            .await
        })
    }

    fn kv_expire<'a>(&'a self, now_ms: i64) -> BoxFuture<'a, Result<u64, StoreError>> {
        Box::pin(async move { self.write(|reply| Write::KvExpire { now_ms, reply }).await })
    }

    fn kv_get<'a>(
        &'a self,
        namespace: &'a str,
        key: &'a str,
        now_ms: i64,
    ) -> BoxFuture<'a, Result<Option<Vec<u8>>, StoreError>> {
        Box::pin(async move {
            Ok(sqlx::query_scalar(
                "SELECT value FROM kv WHERE namespace = ? AND key = ? AND (expires_at IS NULL OR expires_at > ?)",
            )
            .bind(namespace)
            .bind(key)
            .bind(now_ms)
            .fetch_optional(&self.reads)
            .await?)
        })
    }

    fn kv_list<'a>(
        &'a self,
        namespace: &'a str,
        now_ms: i64,
        limit: u32,
    ) -> BoxFuture<'a, Result<Vec<KeyValue>, StoreError>> {
        Box::pin(async move {
            let rows = sqlx::query(
                "SELECT key, value FROM kv WHERE namespace = ? AND (expires_at IS NULL OR expires_at > ?)
                 ORDER BY key LIMIT ?",
            )
            .bind(namespace)
            .bind(now_ms)
            .bind(limit)
            .fetch_all(&self.reads)
            .await?;
            rows.iter()
                .map(|r| Ok((r.try_get::<String, _>(0)?, r.try_get::<Vec<u8>, _>(1)?)))
                .collect()
        })
    }

    fn depth<'a>(&'a self, flow: &'a str) -> BoxFuture<'a, Result<Depth, StoreError>> {
        Box::pin(async move {
            let row = sqlx::query(
                "SELECT COUNT(*), COALESCE(SUM(LENGTH(payload) + LENGTH(metadata)), 0), MIN(enqueued_at) FROM queue WHERE flow = ?",
            )
            .bind(flow)
            .fetch_one(&self.reads)
            .await?;
            Ok(Depth {
                messages: row.try_get::<i64, _>(0)? as u64,
                bytes: row.try_get::<i64, _>(1)? as u64,
                oldest_enqueued_at_ms: row.try_get(2)?,
            })
        })
    }

    fn count_dead_letters<'a>(
        &'a self,
        filter: &'a DlqFilter,
    ) -> BoxFuture<'a, Result<u64, StoreError>> {
        Box::pin(async move {
            let sql = format!(
                "SELECT COUNT(*) FROM dead_letters WHERE {}",
                dlq_match(filter)
            );
            let n: i64 = bind_filter!(sqlx::query_scalar(sqlx::AssertSqlSafe(sql)), filter)
                .fetch_one(&self.reads)
                .await?;
            Ok(n as u64)
        })
    }

    fn dead_letters<'a>(
        &'a self,
        filter: &'a DlqFilter,
        limit: u32,
    ) -> BoxFuture<'a, Result<Vec<DeadLetter>, StoreError>> {
        Box::pin(async move {
            let sql = format!(
                "SELECT id, flow, payload, metadata, enqueued_at, failed_at, attempts, reason, last_status, response_excerpt, history
                 FROM dead_letters WHERE {} ORDER BY failed_at, id LIMIT ?",
                dlq_match(filter)
            );
            let rows = bind_filter!(sqlx::query(sqlx::AssertSqlSafe(sql)), filter)
                .bind(limit)
                .fetch_all(&self.reads)
                .await?;
            // A row that does not decode (a damaged or hand-edited file) is an error, not a panic.
            rows.into_iter()
                .map(|r| -> Result<DeadLetter, StoreError> {
                    Ok(DeadLetter {
                        id: r.try_get(0)?,
                        flow: r.try_get(1)?,
                        payload: r.try_get(2)?,
                        metadata: r.try_get(3)?,
                        enqueued_at_ms: r.try_get(4)?,
                        failed_at_ms: r.try_get(5)?,
                        attempts: r.try_get::<i64, _>(6)? as u32,
                        failure: Failure {
                            reason: r.try_get(7)?,
                            last_status: r.try_get::<Option<i64>, _>(8)?.map(|s| s as u16),
                            response_excerpt: r.try_get(9)?,
                        },
                        history: split_history(&r.try_get::<String, _>(10)?),
                    })
                })
                .collect()
        })
    }
}

impl Sqlite {
    pub(crate) async fn open_as(
        path: &Path,
        durability: Durability,
        owner: bool,
    ) -> Result<Sqlite, StoreError> {
        let lock = if owner {
            let lock_path = path.with_extension("db.lock");
            let file = std::fs::OpenOptions::new()
                .create(true)
                .truncate(false)
                .write(true)
                .open(&lock_path)
                .map_err(|e| StoreError::Locked {
                    path: lock_path.clone(),
                    detail: e.to_string(),
                })?;
            file.try_lock().map_err(|_| StoreError::Locked {
                path: lock_path.clone(),
                detail: "another weft process delivers from this store".into(),
            })?;
            Some(Arc::new(file))
        } else {
            None
        };
        let open_err = |source| StoreError::Open {
            path: path.to_path_buf(),
            source,
        };
        let corrupt = |detail: String| StoreError::Corrupt {
            path: path.to_path_buf(),
            detail,
        };
        let options = SqliteConnectOptions::from_str("sqlite:")
            .map_err(open_err)?
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(match durability {
                Durability::Process => SqliteSynchronous::Normal,
                Durability::Power => SqliteSynchronous::Full,
            })
            .busy_timeout(Duration::from_secs(10));
        let mut writer = SqliteConnection::connect_with(&options)
            .await
            .map_err(|e| classify(e, path))?;
        owner_only(path);
        let check: String = sqlx::query_scalar("PRAGMA quick_check")
            .fetch_one(&mut writer)
            .await
            .map_err(|e| classify(e, path))?;
        if check != "ok" {
            return Err(corrupt(check));
        }
        // quick_check reads the schema's text as bytes; sqlx panics on a declared type or a
        // name that is not UTF-8 (found by the `store` fuzz target), so read it as bytes first.
        let schema: Vec<Vec<u8>> =
            sqlx::query_scalar("SELECT CAST(sql AS BLOB) FROM sqlite_master WHERE sql IS NOT NULL")
                .fetch_all(&mut writer)
                .await
                .map_err(|e| classify(e, path))?;
        if schema.iter().any(|sql| std::str::from_utf8(sql).is_err()) {
            return Err(corrupt("its schema holds text that is not UTF-8".into()));
        }
        sqlx::raw_sql(SCHEMA)
            .execute(&mut writer)
            .await
            .map_err(|e| classify(e, path))?;
        add_missing_columns(&mut writer)
            .await
            .map_err(|e| classify(e, path))?;
        sqlx::raw_sql(LATE_INDEXES)
            .execute(&mut writer)
            .await
            .map_err(|e| classify(e, path))?;
        if owner {
            // Leases from a previous run have no worker left.
            sqlx::query("UPDATE queue SET lease_until = 0 WHERE lease_until != 0")
                .execute(&mut writer)
                .await
                .map_err(|e| unavailable(&e))?;
            // The process that delivers must be able to write: refuse to start rather than
            // answer every message with an error.
            probe(&mut writer).await.map_err(|e| unavailable(&e))?;
        }
        let reads = SqlitePoolOptions::new()
            .max_connections(4)
            .connect_with(options.clone().read_only(true))
            .await
            .map_err(open_err)?;
        let (writes, rx) = mpsc::channel(4 * GROUP_MAX);
        let health = Arc::new(HealthCell::new(path));
        let writer = Writer {
            conn: Some(writer),
            options,
            path: path.to_path_buf(),
            health: health.clone(),
        };
        tokio::spawn(writer.run(rx));
        Ok(Sqlite {
            writes,
            reads,
            health,
            _lock: lock,
        })
    }

    async fn write<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<Result<T, StoreError>>) -> Write,
    ) -> Result<T, StoreError> {
        let (reply, answer) = oneshot::channel();
        self.writes
            .send(make(reply))
            .await
            .map_err(|_| StoreError::Closed)?;
        answer.await.map_err(|_| StoreError::Closed)?
    }
}

fn split_history(text: &str) -> Vec<String> {
    text.lines()
        .filter(|l| !l.is_empty())
        .map(str::to_string)
        .collect()
}

fn truncate(text: &mut String, max: usize) {
    if text.len() > max {
        let mut cut = max;
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
        text.truncate(cut);
    }
}

/// Makes the store's files readable by their owner only: they hold messages and may hold
/// tokens. (SQLite gives its -wal and -shm files the database file's mode.) A file system
/// that has no modes keeps its own.
fn owner_only(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    let mut files = vec![path.to_path_buf()];
    for suffix in ["-wal", "-shm"] {
        let mut name = path.as_os_str().to_owned();
        name.push(suffix);
        files.push(name.into());
    }
    for file in files.iter().filter(|f| f.exists()) {
        let _ = std::fs::set_permissions(file, std::fs::Permissions::from_mode(0o600));
    }
}

/// Tells a damaged file from other open errors: SQLite's "corrupt" (11), "not a database" (26)
/// and a short read (522, a file cut off in the middle of a page) all mean the file is damaged.
fn classify(e: sqlx::Error, path: &Path) -> StoreError {
    let text = e.to_string();
    let damaged = Cause::of(&e) == Cause::Damaged
        || sqlite_code(&e) == Some(522)
        || text.contains("not a database")
        || text.contains("malformed")
        || text.contains("corrupt");
    if damaged {
        StoreError::Corrupt {
            path: path.to_path_buf(),
            detail: text,
        }
    } else if let cause @ (Cause::DiskFull | Cause::ReadOnly) = Cause::of(&e) {
        // Opening can already need room (the WAL index): say so as a write would.
        StoreError::Unavailable {
            cause,
            detail: text,
        }
    } else {
        StoreError::Open {
            path: path.to_path_buf(),
            source: e,
        }
    }
}

/// SQLite's (extended) result code of a database error.
pub(crate) fn sqlite_code(e: &sqlx::Error) -> Option<i64> {
    e.as_database_error()?.code()?.parse().ok()
}

/// Bytes the store can still use in `dir` (free on its file system, for an unprivileged
/// user, plus free pages inside the store file), and the file system's size.
async fn room(dir: &Path, reads: &SqlitePool) -> Result<(u64, u64), String> {
    let (free, total) = {
        let dir = dir.to_path_buf();
        tokio::task::spawn_blocking(move || statvfs(&dir))
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| e.to_string())?
    };
    let row = sqlx::query(
        "SELECT freelist_count, page_size FROM pragma_freelist_count, pragma_page_size",
    )
    .fetch_one(reads)
    .await
    .map_err(|e| e.to_string())?;
    let pages: i64 = row.try_get(0).map_err(|e| e.to_string())?;
    let page_size: i64 = row.try_get(1).map_err(|e| e.to_string())?;
    let inside = (pages.max(0) as u64).saturating_mul(page_size.max(0) as u64);
    Ok((free.saturating_add(inside), total))
}

fn statvfs(dir: &Path) -> std::io::Result<(u64, u64)> {
    use std::os::unix::ffi::OsStrExt;
    let path = std::ffi::CString::new(dir.as_os_str().as_bytes())
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
    let mut out = std::mem::MaybeUninit::<libc::statvfs>::uninit();
    // SAFETY: `path` is a valid C string and `out` a buffer of the right type, which
    // statvfs fills completely when it returns 0.
    if unsafe { libc::statvfs(path.as_ptr(), out.as_mut_ptr()) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: filled by the successful call above.
    let out = unsafe { out.assume_init() };
    // The field types differ between platforms (u32 or u64).
    #[allow(clippy::unnecessary_cast)]
    let (block, free, total) = (
        out.f_frsize as u64,
        out.f_bavail as u64,
        out.f_blocks as u64,
    );
    Ok((free.saturating_mul(block), total.saturating_mul(block)))
}

/// How often the free space is measured (a `statvfs` and a pragma: cheap).
const SPACE_EVERY: Duration = Duration::from_millis(250);

/// How often a failing writer tries a small write when nothing else asks it to write.
const PROBE_EVERY: Duration = Duration::from_secs(1);

/// The one connection that writes, and what it takes to open it again.
struct Writer {
    /// `None` after a failure left it in a state it could not be brought back from.
    conn: Option<SqliteConnection>,
    options: SqliteConnectOptions,
    path: PathBuf,
    health: Arc<HealthCell>,
}

/// A store error for a write that was not committed.
fn unavailable(e: &sqlx::Error) -> StoreError {
    WriteFailure::of(e).error()
}

/// A write of a few KiB, removed again: whether the file system takes writes at all. Run
/// outside any transaction of the writer's.
async fn probe(conn: &mut SqliteConnection) -> Result<(), sqlx::Error> {
    sqlx::raw_sql(
        "INSERT OR REPLACE INTO kv (namespace, key, value) VALUES ('weft', 'probe', zeroblob(8192));
         DELETE FROM kv WHERE namespace = 'weft' AND key = 'probe';",
    )
    .execute(conn)
    .await
    .map(|_| ())
}

/// What the writer learns from the connection's own state (the SQLite C API, through the
/// handle sqlx lends).
struct State {
    in_transaction: bool,
    /// Rows changed by this connection since it was opened.
    changes: i64,
}

async fn state(conn: &mut SqliteConnection) -> Result<State, sqlx::Error> {
    let mut handle = conn.lock_handle().await?;
    let raw = handle.as_raw_handle().as_ptr();
    // SAFETY: the locked handle gives exclusive use of a live connection while it is held;
    // both calls only read the connection's state.
    let (autocommit, changes) = unsafe {
        (
            libsqlite3_sys::sqlite3_get_autocommit(raw),
            libsqlite3_sys::sqlite3_total_changes64(raw),
        )
    };
    Ok(State {
        in_transaction: autocommit == 0,
        changes,
    })
}

/// Whether `conn` is inside a transaction. SQLite may end a transaction on its own when a
/// statement fails (a full disk, an I/O error, no memory), after which every statement would
/// commit alone: the writer must know, not assume.
async fn in_transaction(conn: &mut SqliteConnection) -> Option<bool> {
    state(conn).await.ok().map(|s| s.in_transaction)
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
                self.probe().await;
                probed = tokio::time::Instant::now();
            }
            match got {
                Some(0) => return,
                Some(_) => self.group(&mut batch).await,
                None => {}
            }
        }
    }

    /// The connection, opened again if a failure made the writer drop it.
    async fn connection(&mut self) -> Result<&mut SqliteConnection, WriteFailure> {
        if self.conn.is_none() {
            let conn = SqliteConnection::connect_with(&self.options)
                .await
                .map_err(|e| WriteFailure::of(&e))?;
            tracing::info!(path = %self.path.display(), "store: writer connection opened again");
            self.conn = Some(conn);
        }
        Ok(self.conn.as_mut().expect("just set"))
    }

    async fn probe(&mut self) {
        let result = match self.connection().await {
            Ok(conn) => probe(conn).await.map_err(|e| WriteFailure::of(&e)),
            Err(e) => Err(e),
        };
        match result {
            Ok(()) => self.succeeded(),
            Err(e) => {
                self.settle(&e).await;
                self.failed(&e, false);
            }
        }
    }

    /// Applies `batch` in one transaction and answers every write of it: with its result once
    /// the commit succeeded, or with the commit's error (nothing of the group stored).
    async fn group(&mut self, batch: &mut Vec<Write>) {
        // While failing, only a commit that wrote something shows the disk takes writes again.
        let failing = self.health.failing_now.load(Ordering::Relaxed);
        let conn = match self.connection().await {
            Ok(conn) => conn,
            Err(e) => {
                batch.drain(..).for_each(|w| fail(w, &e));
                self.failed(&e, true);
                return;
            }
        };
        let changes_before = match failing {
            true => state(conn).await.map_or(i64::MAX, |s| s.changes),
            false => 0,
        };
        if let Err(e) = sqlx::raw_sql("BEGIN IMMEDIATE").execute(&mut *conn).await {
            let e = WriteFailure::of(&e);
            batch.drain(..).for_each(|w| fail(w, &e));
            self.settle(&e).await;
            self.failed(&e, true);
            return;
        }
        // Enqueues and acks, the bulk of the traffic, go in one statement each per group;
        // every other write in arrival order after them. Reordering is safe: a claim can only
        // see more, and an ack names a message committed by an earlier group.
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
        // A failed statement usually fails alone (the savepoint of its write, or its chunk of
        // enqueues or acks); but if it took the transaction with it, nothing before it can be
        // committed and nothing after it may run, or it would commit alone.
        let mut lost = None;
        // A write that failed alone for a reason of the disk's: the store is not healthy, even
        // if the rest of the group commits.
        let mut alone: Option<WriteFailure> = None;
        'writes: {
            if !enqueues.is_empty()
                && let Some(e) = enqueue_all(conn, enqueues, &mut replies).await
            {
                if in_transaction(conn).await != Some(true) {
                    lost = Some(e);
                    break 'writes;
                }
                alone.get_or_insert(e);
            }
            if !acks.is_empty()
                && let Some(e) = ack_all(conn, std::mem::take(&mut acks), &mut replies).await
            {
                if in_transaction(conn).await != Some(true) {
                    lost = Some(e);
                    break 'writes;
                }
                alone.get_or_insert(e);
            }
            for w in others.by_ref() {
                let reply = apply(conn, w).await;
                let error = reply.error();
                replies.push(reply);
                if let Some(e) = error {
                    if in_transaction(conn).await != Some(true) {
                        lost = Some(e);
                        break 'writes;
                    }
                    alone.get_or_insert(e);
                }
            }
        }
        let result = match lost {
            Some(e) => Err(e),
            None => sqlx::raw_sql("COMMIT")
                .execute(&mut *conn)
                .await
                .map(|_| ())
                .map_err(|e| WriteFailure::of(&e)),
        };
        match result {
            // Answers go out only now: nothing is reported written before its commit.
            Ok(()) => {
                replies.into_iter().for_each(Reply::send);
                match alone.filter(|e| e.cause != Cause::Other) {
                    Some(e) => self.failed(&e, false),
                    None if failing
                        && state(conn).await.is_ok_and(|s| s.changes > changes_before) =>
                    {
                        self.succeeded()
                    }
                    None => {}
                }
            }
            Err(e) => {
                replies.into_iter().for_each(|r| r.fail(&e));
                acks.into_iter()
                    .for_each(|(_, reply)| drop(reply.send(Err(e.error()))));
                others.for_each(|w| fail(w, &e));
                self.settle(&e).await;
                self.failed(&e, true);
            }
        }
    }

    /// After a failure: rolls back whatever is left of the transaction and makes sure the
    /// connection is back in autocommit, or drops it to be opened again. (A transaction
    /// believed open when SQLite had already ended it would turn every later group into a
    /// savepoint of a transaction that never commits.)
    async fn settle(&mut self, cause: &WriteFailure) {
        let Some(conn) = self.conn.as_mut() else {
            return;
        };
        if in_transaction(conn).await == Some(false) {
            return;
        }
        let _ = sqlx::raw_sql("ROLLBACK").execute(&mut *conn).await;
        if in_transaction(conn).await != Some(false) {
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

/// How soon after a recovery a failure for the same cause counts as the same outage.
const FLAP: Duration = Duration::from_secs(10);

/// Rows per multi-row statement; well under SQLite's limit of 32766 bound parameters.
const ROWS_PER_STATEMENT: usize = 256;

/// Inserts every enqueue of a group with one statement per [`ROWS_PER_STATEMENT`]; they
/// succeed or fail together.
async fn enqueue_all(
    tx: &mut SqliteConnection,
    writes: Vec<Write>,
    replies: &mut Vec<Reply>,
) -> Option<WriteFailure> {
    let mut writes = writes.into_iter().peekable();
    while writes.peek().is_some() {
        let chunk: Vec<Write> = writes.by_ref().take(ROWS_PER_STATEMENT).collect();
        let mut sql = String::from(
            "INSERT INTO queue (flow, id, payload, metadata, enqueued_at, next_attempt_at, order_key) VALUES ",
        );
        for i in 0..chunk.len() {
            sql.push_str(if i == 0 {
                "(?, ?, ?, ?, ?, ?, ?)"
            } else {
                ", (?, ?, ?, ?, ?, ?, ?)"
            });
        }
        let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
        for w in &chunk {
            if let Write::Enqueue {
                flow,
                id,
                payload,
                metadata,
                order_key,
                now_ms,
                ..
            } = w
            {
                query = query
                    .bind(flow.as_str())
                    .bind(id.as_str())
                    .bind(payload.as_slice())
                    .bind(metadata.as_slice())
                    .bind(*now_ms)
                    .bind(*now_ms)
                    .bind(order_key.as_deref());
            }
        }
        let inserted = query.execute(&mut *tx).await;
        let n = chunk.len() as i64;
        match inserted {
            Ok(done) => {
                for (i, w) in chunk.into_iter().enumerate() {
                    // One writer and AUTOINCREMENT: the rows of one statement get consecutive
                    // numbers in the order of their VALUES, ending at the last insert rowid.
                    replies.push(Reply::Seq(
                        w.into_enqueue_reply(),
                        Ok(done.last_insert_rowid() - n + 1 + i as i64),
                    ));
                }
            }
            Err(e) => {
                // The rest of the group's enqueues fail with this chunk.
                let failure = WriteFailure::of(&e);
                for w in chunk.into_iter().chain(writes) {
                    replies.push(Reply::Seq(w.into_enqueue_reply(), Err(failure.error())));
                }
                return Some(failure);
            }
        }
    }
    None
}

/// Deletes every acked message of a group with one statement per [`ROWS_PER_STATEMENT`].
async fn ack_all(
    tx: &mut SqliteConnection,
    acks: Vec<(i64, oneshot::Sender<Result<bool, StoreError>>)>,
    replies: &mut Vec<Reply>,
) -> Option<WriteFailure> {
    let mut acks = acks.into_iter().peekable();
    while acks.peek().is_some() {
        let chunk: Vec<_> = acks.by_ref().take(ROWS_PER_STATEMENT).collect();
        let marks = vec!["?"; chunk.len()].join(", ");
        let sql = format!("DELETE FROM queue WHERE seq IN ({marks}) RETURNING seq");
        let mut query = sqlx::query_scalar::<_, i64>(sqlx::AssertSqlSafe(sql));
        for (seq, _) in &chunk {
            query = query.bind(*seq);
        }
        match query.fetch_all(&mut *tx).await {
            Ok(rows) => {
                let gone: HashSet<i64> = rows.into_iter().collect();
                for (seq, reply) in chunk {
                    replies.push(Reply::Done(reply, Ok(gone.contains(&seq))));
                }
            }
            Err(e) => {
                let failure = WriteFailure::of(&e);
                for (_, reply) in chunk.into_iter().chain(acks) {
                    replies.push(Reply::Done(reply, Err(failure.error())));
                }
                return Some(failure);
            }
        }
    }
    None
}

/// Why a write failed, kept apart from the error each caller gets (sqlx's errors do not clone).
#[derive(Debug, Clone)]
struct WriteFailure {
    cause: Cause,
    detail: String,
}

impl WriteFailure {
    fn of(e: &sqlx::Error) -> WriteFailure {
        WriteFailure {
            cause: Cause::of(e),
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
            StoreError::Sql(e) => WriteFailure::of(e),
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

async fn apply(tx: &mut SqliteConnection, w: Write) -> Reply {
    match w {
        // The writer batches these (see `writer_loop`); one alone is a batch of one.
        w @ Write::Enqueue { .. } => {
            let mut replies = Vec::with_capacity(1);
            enqueue_all(tx, vec![w], &mut replies).await;
            replies.pop().expect("one reply per enqueue")
        }
        Write::Ack { seq, reply } => {
            let mut replies = Vec::with_capacity(1);
            ack_all(tx, vec![(seq, reply)], &mut replies).await;
            replies.pop().expect("one reply per ack")
        }
        Write::Claim {
            flow,
            now_ms,
            limit,
            lease_ms,
            reply,
        } => Reply::Claimed(reply, claim(tx, &flow, now_ms, limit, lease_ms).await),
        Write::Reschedule {
            seq,
            attempts,
            next_attempt_ms,
            note,
            reply,
        } => {
            let r = sqlx::query(
                "UPDATE queue SET attempts = ?1, next_attempt_at = ?2,
                        last_error = CASE WHEN ?3 = '' THEN last_error ELSE ?3 END,
                        history = history || CASE WHEN ?3 = '' THEN '' ELSE ?3 || char(10) END,
                        lease_until = 0
                 WHERE seq = ?4",
            )
            .bind(attempts)
            .bind(next_attempt_ms)
            .bind(note)
            .bind(seq)
            .execute(&mut *tx)
            .await
            .map(|d| d.rows_affected() == 1)
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
            let moved = async {
                // Two statements, one effect: a savepoint makes them all or nothing even when a
                // later write in the same group commit fails.
                sqlx::query("SAVEPOINT dead_letter")
                    .execute(&mut *tx)
                    .await?;
                let inserted = sqlx::query(
                    "INSERT OR REPLACE INTO dead_letters
                       (id, flow, payload, metadata, enqueued_at, failed_at, attempts, reason, last_status, response_excerpt, history, order_key)
                     SELECT id, flow, payload, metadata, enqueued_at, ?, ?, ?, ?, ?, history, order_key FROM queue WHERE seq = ?",
                )
                .bind(now_ms)
                .bind(attempts)
                .bind(&failure.reason)
                .bind(failure.last_status.map(i64::from))
                .bind(&failure.response_excerpt)
                .bind(seq)
                .execute(&mut *tx)
                .await?;
                sqlx::query("DELETE FROM queue WHERE seq = ?")
                    .bind(seq)
                    .execute(&mut *tx)
                    .await?;
                Ok(inserted.rows_affected() == 1)
            };
            let result = moved.await;
            Reply::Done(reply, finish_savepoint(tx, "dead_letter", result).await)
        }
        Write::Bury { letter, reply } => {
            let history: String = letter
                .history
                .iter()
                .map(|line| format!("{}\n", line.replace('\n', " ")))
                .collect();
            let r = sqlx::query(
                "INSERT OR REPLACE INTO dead_letters
                   (id, flow, payload, metadata, enqueued_at, failed_at, attempts, reason, last_status, response_excerpt, history)
                 VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            )
            .bind(&letter.id)
            .bind(&letter.flow)
            .bind(&letter.payload)
            .bind(&letter.metadata)
            .bind(letter.enqueued_at_ms)
            .bind(letter.failed_at_ms)
            .bind(letter.attempts)
            .bind(&letter.failure.reason)
            .bind(letter.failure.last_status.map(i64::from))
            .bind(&letter.failure.response_excerpt)
            .bind(history)
            .execute(&mut *tx)
            .await
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
            let replayed = async {
                sqlx::query("SAVEPOINT replay").execute(&mut *tx).await?;
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
                let moved = bind_filter!(
                    sqlx::query(sqlx::AssertSqlSafe(sql))
                        .bind(payload)
                        .bind(now_ms)
                        .bind(now_ms)
                        .bind(note)
                        .bind(now_ms),
                    filter
                )
                .execute(&mut *tx)
                .await?;
                delete_dead(tx, &filter).await?;
                Ok(moved.rows_affected())
            };
            let result = replayed.await;
            Reply::Count(reply, finish_savepoint(tx, "replay", result).await)
        }
        Write::Purge { filter, reply } => Reply::Count(reply, delete_dead(tx, &filter).await),
        Write::KvPut {
            namespace,
            key,
            value,
            expires_at_ms,
            only_if_absent_at,
            reply,
        } => {
            let r = match only_if_absent_at {
                None => sqlx::query(
                    "INSERT INTO kv (namespace, key, value, expires_at) VALUES (?, ?, ?, ?)
                     ON CONFLICT (namespace, key) DO UPDATE SET value = excluded.value, expires_at = excluded.expires_at",
                )
                .bind(namespace)
                .bind(key)
                .bind(value)
                .bind(expires_at_ms)
                .execute(&mut *tx)
                .await
                .map(|_| true),
                Some(now_ms) => sqlx::query(
                    "INSERT INTO kv (namespace, key, value, expires_at) VALUES (?1, ?2, ?3, ?4)
                     ON CONFLICT (namespace, key) DO UPDATE SET value = excluded.value, expires_at = excluded.expires_at
                     WHERE kv.expires_at IS NOT NULL AND kv.expires_at <= ?5",
                )
                .bind(namespace)
                .bind(key)
                .bind(value)
                .bind(expires_at_ms)
                .bind(now_ms)
                .execute(&mut *tx)
                .await
                .map(|d| d.rows_affected() == 1),
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
            kv_claim(tx, &namespace, &key, &holder, expires_at_ms, now_ms).await,
        ),
        Write::KvReplace {
            namespace,
            key,
            expected,
            value,
            expires_at_ms,
            reply,
        } => {
            let r = sqlx::query(
                "UPDATE kv SET value = ?1, expires_at = ?2 WHERE namespace = ?3 AND key = ?4 AND value = ?5",
            )
            .bind(value)
            .bind(expires_at_ms)
            .bind(namespace)
            .bind(key)
            .bind(expected)
            .execute(&mut *tx)
            .await
            .map(|d| d.rows_affected() == 1)
            .map_err(StoreError::from);
            Reply::Done(reply, r)
        }
        Write::KvDelete {
            namespace,
            key,
            only_if_value,
            reply,
        } => {
            let r = sqlx::query(
                "DELETE FROM kv WHERE namespace = ?1 AND key = ?2 AND (?3 IS NULL OR value = ?3)",
            )
            .bind(namespace)
            .bind(key)
            .bind(only_if_value)
            .execute(&mut *tx)
            .await
            .map(|d| d.rows_affected() == 1)
            .map_err(StoreError::from);
            Reply::Done(reply, r)
        }
        Write::KvExpire { now_ms, reply } => {
            let r = sqlx::query("DELETE FROM kv WHERE expires_at IS NOT NULL AND expires_at <= ?")
                .bind(now_ms)
                .execute(&mut *tx)
                .await
                .map(|d| d.rows_affected())
                .map_err(StoreError::from);
            Reply::Count(reply, r)
        }
    }
}

async fn kv_claim(
    tx: &mut SqliteConnection,
    namespace: &str,
    key: &str,
    holder: &[u8],
    expires_at_ms: i64,
    now_ms: i64,
) -> Result<Option<Vec<u8>>, StoreError> {
    let taken = sqlx::query(
        "INSERT INTO kv (namespace, key, value, expires_at) VALUES (?1, ?2, ?3, ?4)
         ON CONFLICT (namespace, key) DO UPDATE SET value = excluded.value, expires_at = excluded.expires_at
         WHERE (kv.expires_at IS NOT NULL AND kv.expires_at <= ?5) OR kv.value = excluded.value",
    )
    .bind(namespace)
    .bind(key)
    .bind(holder)
    .bind(expires_at_ms)
    .bind(now_ms)
    .execute(&mut *tx)
    .await?
    .rows_affected()
        == 1;
    if taken {
        return Ok(None);
    }
    // Same transaction as the failed insert: the holder read here is the one that won.
    Ok(Some(
        sqlx::query_scalar("SELECT value FROM kv WHERE namespace = ? AND key = ?")
            .bind(namespace)
            .bind(key)
            .fetch_one(&mut *tx)
            .await?,
    ))
}

/// Releases a savepoint after success, or rolls back to it after a failure.
async fn finish_savepoint<T>(
    tx: &mut SqliteConnection,
    name: &str,
    result: Result<T, StoreError>,
) -> Result<T, StoreError> {
    let end = if result.is_ok() {
        format!("RELEASE {name}")
    } else {
        format!("ROLLBACK TO {name}; RELEASE {name}")
    };
    let ended = sqlx::raw_sql(sqlx::AssertSqlSafe(end))
        .execute(&mut *tx)
        .await;
    match (result, ended) {
        (Ok(v), Ok(_)) => Ok(v),
        (Err(e), _) => Err(e),
        (Ok(_), Err(e)) => Err(e.into()),
    }
}

async fn claim(
    tx: &mut SqliteConnection,
    flow: &str,
    now_ms: i64,
    limit: u32,
    lease_ms: i64,
) -> Result<Vec<Queued>, StoreError> {
    let rows = sqlx::query(
        "UPDATE queue SET lease_until = ?1 + ?2
         WHERE seq IN (SELECT seq FROM queue
                       WHERE flow = ?3 AND next_attempt_at <= ?1 AND lease_until <= ?1
                         AND (order_key IS NULL OR NOT EXISTS (
                               SELECT 1 FROM queue earlier
                               WHERE earlier.flow = ?3 AND earlier.order_key = queue.order_key
                                 AND earlier.seq < queue.seq))
                       ORDER BY next_attempt_at, seq LIMIT ?4)
         RETURNING seq, flow, id, payload, metadata, enqueued_at, attempts, last_error, history",
    )
    .bind(now_ms)
    .bind(lease_ms)
    .bind(flow)
    .bind(limit)
    .fetch_all(&mut *tx)
    .await?;
    let mut claimed = rows
        .into_iter()
        .map(|r| -> Result<Queued, StoreError> {
            Ok(Queued {
                seq: r.try_get(0)?,
                flow: r.try_get(1)?,
                id: r.try_get(2)?,
                payload: r.try_get(3)?,
                metadata: r.try_get(4)?,
                enqueued_at_ms: r.try_get(5)?,
                attempts: r.try_get::<i64, _>(6)? as u32,
                last_error: r.try_get(7)?,
                history: split_history(&r.try_get::<String, _>(8)?),
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    // RETURNING gives no order guarantee. (Due order is next attempt time, then arrival; the
    // order by (next_attempt_at, seq) walks the `queue_due` index and stops at the limit.)
    claimed.sort_by_key(|q| q.seq);
    Ok(claimed)
}

async fn delete_dead(tx: &mut SqliteConnection, filter: &DlqFilter) -> Result<u64, StoreError> {
    let sql = format!("DELETE FROM dead_letters WHERE {}", dlq_match(filter));
    Ok(bind_filter!(sqlx::query(sqlx::AssertSqlSafe(sql)), filter)
        .execute(&mut *tx)
        .await?
        .rows_affected())
}
