//! The SQLite backend: one file in WAL mode; one writer on a thread of its own that
//! group-commits every waiting write ([`writer`]), readers on a small read-only pool, and the
//! free-space floor.

use super::*;

use sqlx::Row;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions};
use tokio::sync::{mpsc, oneshot};

mod writer;

use writer::Write;

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
    if filter.after.is_some() {
        conditions.push(
            "(failed_at, id) > (SELECT failed_at, id FROM dead_letters WHERE id = ? LIMIT 1)",
        );
    }
    if filter.until_ms.is_some() {
        conditions.push("failed_at <= ?");
    }
    let all = if conditions.is_empty() {
        "1".into()
    } else {
        conditions.join(" AND ")
    };
    match filter.first {
        // The same rows for the INSERT and the DELETE of a replay: the order is total (the id
        // is the key) and nothing else writes between them.
        Some(_) => format!(
            "id IN (SELECT id FROM dead_letters WHERE {all} ORDER BY failed_at, id LIMIT ?)"
        ),
        None => all,
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
        if let Some(after) = &$filter.after {
            query = query.bind(after.clone());
        }
        if let Some(until) = $filter.until_ms {
            query = query.bind(until);
        }
        if let Some(first) = $filter.first {
            query = query.bind(i64::from(first));
        }
        query
    }};
}

/// The SQLite backend: one writer thread that group-commits, readers on a small read-only pool.
#[derive(Clone)]
pub(crate) struct Sqlite {
    writes: mpsc::Sender<Write>,
    reads: SqlitePool,
    health: Arc<HealthCell>,
    /// Held for the life of an owner's handles; the OS releases it if the process dies.
    _lock: Option<Arc<std::fs::File>>,
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

    fn find_queued<'a>(
        &'a self,
        id: &'a str,
    ) -> BoxFuture<'a, Result<Option<crate::Waiting>, StoreError>> {
        Box::pin(async move {
            // No index on `id`: one would cost every enqueue a second B-tree insert, for a
            // look-up an operator makes now and then over a bounded queue.
            let row = sqlx::query(
                "SELECT flow, id, enqueued_at, attempts, next_attempt_at, lease_until, last_error
                 FROM queue WHERE id = ? LIMIT 1",
            )
            .bind(id)
            .fetch_optional(&self.reads)
            .await?;
            let Some(r) = row else {
                return Ok(None);
            };
            let lease: i64 = r.try_get(5)?;
            Ok(Some(crate::Waiting {
                flow: r.try_get(0)?,
                id: r.try_get(1)?,
                enqueued_at_ms: r.try_get(2)?,
                attempts: r.try_get::<i64, _>(3)? as u32,
                next_attempt_at_ms: r.try_get(4)?,
                leased_until_ms: (lease > 0).then_some(lease),
                last_error: r.try_get(6)?,
            }))
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
        let health = Arc::new(HealthCell::new(path));
        let writes = writer::start(path, durability, owner, health.clone()).await?;
        // Readers open once the writer has made the file (and its schema) and set WAL mode.
        let reads = SqlitePoolOptions::new()
            .max_connections(4)
            .after_connect(|conn, _| {
                Box::pin(async move {
                    keep_wal_files(conn.lock_handle().await?.as_raw_handle().as_ptr());
                    Ok(())
                })
            })
            .connect_with(
                SqliteConnectOptions::new()
                    .filename(path)
                    .journal_mode(SqliteJournalMode::Wal)
                    .pragma("journal_size_limit", WAL_LIMIT.to_string())
                    .busy_timeout(Duration::from_secs(10))
                    .read_only(true),
            )
            .await
            .map_err(|e| StoreError::Open {
                path: path.to_path_buf(),
                source: Box::new(e),
            })?;
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

/// The size the WAL is cut back to after a checkpoint, and to nothing when the last
/// connection closes (SQLite's `journal_size_limit`).
const WAL_LIMIT: i64 = 64 << 20;

/// Keeps the WAL and its index (`-wal`, `-shm`) when the last connection closes instead of
/// deleting them: a store opened again on a full disk (`weft dlq` after weft stopped) would
/// otherwise need room to make them again, and fail. Every connection says so, since whichever
/// closes last decides.
fn keep_wal_files(db: *mut libsqlite3_sys::sqlite3) {
    let mut keep: std::ffi::c_int = 1;
    // SAFETY: `db` is a live connection that only the caller uses during the call; this file
    // control reads the one int it is given.
    unsafe {
        libsqlite3_sys::sqlite3_file_control(
            db,
            c"main".as_ptr(),
            libsqlite3_sys::SQLITE_FCNTL_PERSIST_WAL,
            (&raw mut keep).cast(),
        );
    }
}

/// Tells a damaged file from other open errors: SQLite's "corrupt" (11), "not a database" (26)
/// and a short read (522, a file cut off in the middle of a page) all mean the file is damaged.
fn classify(
    code: Option<i64>,
    e: Box<dyn std::error::Error + Send + Sync>,
    path: &Path,
) -> StoreError {
    let text = e.to_string();
    let damaged = Cause::of(code) == Cause::Damaged
        || code == Some(522)
        || text.contains("not a database")
        || text.contains("malformed")
        || text.contains("corrupt");
    if damaged {
        StoreError::Corrupt {
            path: path.to_path_buf(),
            detail: text,
        }
    } else if let cause @ (Cause::DiskFull | Cause::ReadOnly) = Cause::of(code) {
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
