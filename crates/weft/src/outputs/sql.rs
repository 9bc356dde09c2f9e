//! `sql`: writes each message to a database from `resources.sql` — an insert, an upsert, or a
//! statement of your own — with parameters from VRL. Messages that arrive together are written
//! in one transaction (up to `batch.count`, waiting up to `batch.period` for more; by default
//! only what is already waiting, so a lone message is not delayed). A batch that fails for a
//! reason other than the connection is written again one message per transaction, so one bad
//! row fails only its own message. Lost connections, deadlocks and timeouts are retried;
//! constraint and type errors fail the message.
//!
//! ```yaml
//! output:
//!   sql:
//!     database: crm                    # resources.sql.crm
//!     table: contacts
//!     columns: { id: .id, email: downcase!(.email), seen_at: now() }
//!     upsert_on: [id]                  # ON CONFLICT (id) DO UPDATE / ON DUPLICATE KEY UPDATE
//!     batch: { count: 200, period: 5ms }
//! # or a statement of your own, placeholders as the database writes them ($1 or ?):
//! #   query: "UPDATE contacts SET email = $2 WHERE id = $1"
//! #   args: "[.id, .email]"
//! ```
//!
//! A binary column (`bytea`; with `table:`, a MySQL `BLOB`/`VARBINARY`) takes base64 text, as
//! `sql_poll` and the `sql` processor give it (`encode_base64(.bytes)` makes it); in a MySQL
//! statement of your own, write `FROM_BASE64(?)`.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Deserialize;
use serde_json::Value as Json;
use tokio::sync::{mpsc, oneshot};

use crate::clients::Resources;
use crate::clients::Shared;
use crate::clients::sql::{Database, Driver, SqlError, evaluate_args};
use crate::config::BuildError;
use crate::config::units::Dur;
use crate::core::mapping::Mapping;
use crate::core::retry::RetryConfig;
use crate::core::{Attempt, Message};

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[schemars(rename = "SqlOutput")]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The database, by its name in `resources.sql`.
    pub database: String,
    /// A statement of your own (with `args`), instead of `table`.
    #[serde(default)]
    pub query: Option<String>,
    /// VRL expression giving the statement's parameters, as an array in placeholder order.
    #[serde(default)]
    pub args: Option<String>,
    /// The table to insert into (with `columns`).
    #[serde(default)]
    pub table: Option<String>,
    /// Column → VRL expression giving its value.
    #[serde(default)]
    pub columns: BTreeMap<String, String>,
    /// Upsert: when a row with the same values of these columns exists, update the others.
    #[serde(default)]
    pub upsert_on: Vec<String>,
    #[serde(default)]
    pub batch: BatchConfig,
    #[serde(default)]
    pub retry: RetryConfig,
}

/// Messages written together, in one transaction.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct BatchConfig {
    /// The most messages in one transaction.
    #[serde(default = "default_batch_count")]
    pub count: usize,
    /// How long the first message of a batch waits for more.
    #[serde(default)]
    pub period: Dur,
}

impl Default for BatchConfig {
    fn default() -> Self {
        BatchConfig {
            count: default_batch_count(),
            period: Dur(Duration::ZERO),
        }
    }
}

fn default_batch_count() -> usize {
    100
}

/// A table or column name: letters, digits and `_`, optionally `schema.table`.
fn identifier(name: &str) -> bool {
    !name.is_empty()
        && name.split('.').count() <= 2
        && name.split('.').all(|part| {
            part.chars()
                .next()
                .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
                && part.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        })
}

fn quoted(driver: Driver, name: &str) -> String {
    let q = if driver == Driver::MySql { '`' } else { '"' };
    name.split('.')
        .map(|part| format!("{q}{part}{q}"))
        .collect::<Vec<_>>()
        .join(".")
}

/// The insert (or upsert) statement for `table` and `columns`, as `driver` writes it.
fn insert_statement(db: &Database, table: &str, columns: &[&str], upsert_on: &[String]) -> String {
    let driver = db.driver();
    let names: Vec<String> = columns.iter().map(|c| quoted(driver, c)).collect();
    let marks: Vec<String> = (1..=columns.len()).map(|n| db.placeholder(n)).collect();
    let mut sql = format!(
        "INSERT INTO {} ({}) VALUES ({})",
        quoted(driver, table),
        names.join(", "),
        marks.join(", ")
    );
    if upsert_on.is_empty() {
        return sql;
    }
    let updated: Vec<&&str> = columns
        .iter()
        .filter(|c| !upsert_on.iter().any(|k| k == **c))
        .collect();
    match driver {
        Driver::MySql => {
            // With nothing else to update, a no-op update keeps the existing row.
            let sets: Vec<String> = if updated.is_empty() {
                let key = quoted(driver, &upsert_on[0]);
                vec![format!("{key} = {key}")]
            } else {
                updated
                    .iter()
                    .map(|c| {
                        let c = quoted(driver, c);
                        format!("{c} = VALUES({c})")
                    })
                    .collect()
            };
            sql.push_str(&format!(" ON DUPLICATE KEY UPDATE {}", sets.join(", ")));
        }
        Driver::Postgres | Driver::Sqlite => {
            let keys: Vec<String> = upsert_on.iter().map(|k| quoted(driver, k)).collect();
            if updated.is_empty() {
                sql.push_str(&format!(" ON CONFLICT ({}) DO NOTHING", keys.join(", ")));
            } else {
                let sets: Vec<String> = updated
                    .iter()
                    .map(|c| {
                        let c = quoted(driver, c);
                        format!("{c} = EXCLUDED.{c}")
                    })
                    .collect();
                sql.push_str(&format!(
                    " ON CONFLICT ({}) DO UPDATE SET {}",
                    keys.join(", "),
                    sets.join(", ")
                ));
            }
        }
    }
    sql
}

/// How a message becomes the statement's parameters.
enum Args {
    /// One expression giving the array.
    Array(Option<Box<Mapping>>),
    /// One expression per column.
    Columns(Vec<(String, Mapping)>),
}

type Reply = oneshot::Sender<Result<(), SqlError>>;
/// Where a message's parameters go to be written, with where the outcome comes back.
type Batcher = mpsc::Sender<(Vec<Json>, Reply)>;

pub struct SqlOutput {
    db: Arc<Database>,
    sql: Arc<str>,
    /// `columns` mode: the table and columns the parameters go to.
    columns: Option<Arc<crate::clients::sql::Columns>>,
    args: Args,
    batch_count: usize,
    batch_period: Duration,
    /// Started on first use (it needs the runtime, which `weft check` does not start), and
    /// again should it have stopped.
    batcher: Mutex<Option<Batcher>>,
}

impl super::Spec for Config {
    type Built = SqlOutput;

    fn retry_config(&self) -> Option<&RetryConfig> {
        Some(&self.retry)
    }

    fn build(&self, _shared: &Shared, resources: &Resources) -> Result<SqlOutput, Vec<BuildError>> {
        let err = |field: &str, m: String| vec![BuildError::new(field, m)];
        let db = resources
            .sql(&self.database)
            .map_err(|e| err("database", e))?;
        let mut errors = Vec::new();
        let compile = |field: &str, source: &str, errors: &mut Vec<BuildError>| {
            Mapping::compile(source)
                .map_err(|d| errors.extend(BuildError::from_diagnostics(field, d)))
                .ok()
        };
        let mut target = None;
        let (sql, args) = match (&self.query, &self.table) {
            (Some(_), Some(_)) => {
                return Err(err("query", "give `query` or `table`, not both".into()));
            }
            (None, None) => {
                return Err(err(
                    "table",
                    "give `table` with `columns`, or a `query` with `args`".into(),
                ));
            }
            (Some(query), None) => {
                if !self.columns.is_empty() || !self.upsert_on.is_empty() {
                    return Err(err(
                        "columns",
                        "`columns` and `upsert_on` go with `table`, not `query`".into(),
                    ));
                }
                let args = self
                    .args
                    .as_deref()
                    .and_then(|a| compile("args", a, &mut errors));
                (query.clone(), Args::Array(args.map(Box::new)))
            }
            (None, Some(table)) => {
                if !identifier(table) {
                    return Err(err(
                        "table",
                        format!("`{table}` is not a plain table name (letters, digits, _)"),
                    ));
                }
                if self.args.is_some() {
                    return Err(err(
                        "args",
                        "`args` goes with `query`; with `table` give `columns`".into(),
                    ));
                }
                if self.columns.is_empty() {
                    return Err(err("columns", "name at least one column".into()));
                }
                let mut mappings = Vec::new();
                for (column, source) in &self.columns {
                    if !identifier(column) || column.contains('.') {
                        errors.push(BuildError::new(
                            &format!("columns.{column}"),
                            "not a plain column name (letters, digits, _)",
                        ));
                        continue;
                    }
                    if let Some(m) = compile(&format!("columns.{column}"), source, &mut errors) {
                        mappings.push((column.clone(), m));
                    }
                }
                for key in &self.upsert_on {
                    if !self.columns.contains_key(key) {
                        errors.push(BuildError::new(
                            "upsert_on",
                            format!("`{key}` is not one of `columns`"),
                        ));
                    }
                }
                let names: Vec<&str> = self.columns.keys().map(String::as_str).collect();
                target = Some(Arc::new(crate::clients::sql::Columns {
                    table: table.clone(),
                    names: names.iter().map(|n| n.to_string()).collect(),
                }));
                (
                    insert_statement(&db, table, &names, &self.upsert_on),
                    Args::Columns(mappings),
                )
            }
        };
        if self.batch.count == 0 {
            errors.push(BuildError::new("batch.count", "at least 1"));
        }
        if !errors.is_empty() {
            return Err(errors);
        }
        Ok(SqlOutput {
            db,
            sql: sql.into(),
            columns: target,
            args,
            batch_count: self.batch.count,
            batch_period: self.batch.period.0,
            batcher: Mutex::new(None),
        })
    }
}

impl SqlOutput {
    fn parameters(&self, message: &Message) -> Result<Vec<Json>, String> {
        match &self.args {
            Args::Array(m) => evaluate_args(m.as_deref(), message),
            Args::Columns(ms) => ms
                .iter()
                .map(|(column, m)| {
                    let v = m
                        .eval(&message.value, &message.metadata)
                        .map_err(|e| format!("columns.{column}: {e}"))?;
                    serde_json::to_value(v).map_err(|e| format!("columns.{column}: {e}"))
                })
                .collect(),
        }
    }

    fn batcher(&self) -> Batcher {
        let mut batcher = self.batcher.lock().unwrap_or_else(|e| e.into_inner());
        match &*batcher {
            Some(tx) if !tx.is_closed() => tx.clone(),
            _ => {
                let (tx, rx) = mpsc::channel(self.batch_count * 2);
                tokio::spawn(write_batches(
                    self.db.clone(),
                    self.sql.clone(),
                    self.columns.clone(),
                    rx,
                    self.batch_count,
                    self.batch_period,
                ));
                *batcher = Some(tx.clone());
                tx
            }
        }
    }

    fn writer_stopped(&self) -> Attempt {
        Attempt::Retryable {
            reason: format!("database `{}`: the SQL writer stopped", self.db.name()),
            retry_after: None,
            response: None,
        }
    }
}

impl crate::core::Output for SqlOutput {
    async fn send(&self, message: &Message) -> Attempt {
        let params = match self.parameters(message) {
            Ok(p) => p,
            Err(reason) => {
                return Attempt::Fatal {
                    reason,
                    response: None,
                };
            }
        };
        let (reply, answer) = oneshot::channel();
        if self.batcher().send((params, reply)).await.is_err() {
            return self.writer_stopped();
        }
        match answer.await {
            Ok(Ok(())) => Attempt::Delivered,
            Ok(Err(e)) => e.attempt(),
            Err(_) => self.writer_stopped(),
        }
    }

    fn reads_metadata(&self) -> bool {
        match &self.args {
            Args::Array(m) => m.as_deref().is_some_and(Mapping::reads_metadata),
            Args::Columns(ms) => ms.iter().any(|(_, m)| m.reads_metadata()),
        }
    }
}

/// Takes what is waiting (and, with a period, what comes soon after) and writes it in one
/// transaction; a batch refused for a reason of its data is written again row by row.
async fn write_batches(
    db: Arc<Database>,
    sql: Arc<str>,
    columns: Option<Arc<crate::clients::sql::Columns>>,
    mut rx: mpsc::Receiver<(Vec<Json>, Reply)>,
    count: usize,
    period: Duration,
) {
    while let Some(first) = rx.recv().await {
        let mut batch = vec![first];
        let deadline = tokio::time::Instant::now() + period;
        while batch.len() < count {
            match rx.try_recv() {
                Ok(item) => batch.push(item),
                Err(_) if period.is_zero() => break,
                Err(_) => match tokio::time::timeout_at(deadline, rx.recv()).await {
                    Ok(Some(item)) => batch.push(item),
                    _ => break,
                },
            }
        }
        let rows: Vec<Vec<Json>> = batch.iter().map(|(params, _)| params.clone()).collect();
        let columns = columns.as_deref();
        match db.execute_all(&sql, &rows, columns).await {
            Ok(_) => {
                for (_, reply) in batch {
                    let _ = reply.send(Ok(()));
                }
            }
            Err(e) if batch.len() > 1 && !e.is_transient() => {
                for (params, reply) in batch {
                    let _ = reply.send(db.execute_all(&sql, &[params], columns).await.map(|_| ()));
                }
            }
            Err(e) => {
                for (_, reply) in batch {
                    let _ = reply.send(Err(e.clone()));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Secret;

    fn db(url: &str) -> Database {
        crate::clients::sql::Config {
            url: Secret::new(url),
            max_connections: 1,
            connect_timeout: Dur(Duration::from_secs(1)),
        }
        .build("db")
        .ok()
        .unwrap()
    }

    #[test]
    fn inserts_and_upserts_are_written_as_each_database_reads_them() {
        let columns = ["email", "id", "seen_at"];
        let upsert = vec!["id".to_string()];
        assert_eq!(
            insert_statement(&db("postgres://u@h/d"), "crm.contacts", &columns, &upsert),
            r#"INSERT INTO "crm"."contacts" ("email", "id", "seen_at") VALUES ($1, $2, $3) ON CONFLICT ("id") DO UPDATE SET "email" = EXCLUDED."email", "seen_at" = EXCLUDED."seen_at""#
        );
        assert_eq!(
            insert_statement(&db("mysql://u@h/d"), "contacts", &columns, &upsert),
            "INSERT INTO `contacts` (`email`, `id`, `seen_at`) VALUES (?, ?, ?) ON DUPLICATE KEY UPDATE `email` = VALUES(`email`), `seen_at` = VALUES(`seen_at`)"
        );
        assert_eq!(
            insert_statement(&db("sqlite://x.db"), "t", &["id"], &upsert),
            r#"INSERT INTO "t" ("id") VALUES (?) ON CONFLICT ("id") DO NOTHING"#
        );
        assert_eq!(
            insert_statement(&db("mysql://u@h/d"), "t", &["id"], &upsert),
            "INSERT INTO `t` (`id`) VALUES (?) ON DUPLICATE KEY UPDATE `id` = `id`"
        );
        assert_eq!(
            insert_statement(&db("postgres://u@h/d"), "t", &["a"], &[]),
            r#"INSERT INTO "t" ("a") VALUES ($1)"#
        );
        for bad in ["", "a b", "t;drop", "a.b.c", "1t", "t\"x"] {
            assert!(!identifier(bad), "{bad}");
        }
        assert!(identifier("crm.contacts_2"));
    }
}
