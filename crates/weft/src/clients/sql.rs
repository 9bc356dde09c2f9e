//! SQL databases — PostgreSQL, MySQL/MariaDB and SQLite — through sqlx, for the `sql` output, the
//! `sql` processor and the `sql_poll` input. A database is a resource (`resources.sql.NAME`):
//! one connection pool, shared by every component that names it, opened on first use (so
//! `weft check` needs no database).
//!
//! Values cross as JSON. Parameters are bound by the driver's own rules: PostgreSQL states each
//! parameter's type when the statement is prepared, and a value is converted to it (an RFC 3339
//! string for a `timestamptz`, a number for a `numeric`, an object for `jsonb`); MySQL and
//! SQLite take values by their JSON type and convert them themselves (MySQL reads a time
//! without an offset: `2024-05-01 10:00:00`, as weft writes the times it reads from MySQL).
//! Rows come back as objects by column name: numbers, strings, booleans, JSON columns as
//! values, times as text, `numeric`/`decimal` as numbers (as text beyond what a double holds
//! exactly), MySQL `BIGINT UNSIGNED` as a number (as text above 2^63-1, which a JSON number
//! would turn into a float).
//!
//! Binary columns (`bytea`, `BLOB`, `BINARY`, `VARBINARY`) come as base64 text, which keeps
//! every byte (`decode_base64(.photo)` in a mapping gives them back). The other way, a
//! PostgreSQL `bytea` parameter, and a MySQL binary column written by the `sql` output's
//! `table:`, take base64 text; in hand-written MySQL SQL, say `FROM_BASE64(?)`.
//!
//! ```yaml
//! resources:
//!   sql:
//!     crm: { url: "postgres://weft:${PGPASSWORD}@db.internal/crm", max_connections: 8 }
//!     shop: { url: "mysql://root@127.0.0.1/shop" }
//!     local: { url: "sqlite://./data/local.db?mode=rwc" }
//! ```

use std::str::FromStr;
use std::sync::Arc;
use std::sync::OnceLock;
use std::time::Duration;

use rust_decimal::prelude::ToPrimitive;
use serde::Deserialize;
use serde_json::Value as Json;
use sqlx::error::DatabaseError;
use sqlx::mysql::{MySqlConnectOptions, MySqlPool, MySqlPoolOptions};
use sqlx::postgres::{PgArguments, PgConnectOptions, PgPool, PgPoolOptions, PgRow};
use sqlx::sqlite::{SqliteConnectOptions, SqlitePool, SqlitePoolOptions};
use sqlx::{Arguments, Column, Executor, Row, SqlSafeStr, Statement, TypeInfo, ValueRef};

use crate::config::BuildError;
use crate::config::Secret;
use crate::config::units::Dur;

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[schemars(rename = "SqlDatabase")]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// `postgres://user:password@host:5432/db`, `mysql://user:password@host:3306/db` or
    /// `sqlite://path/to.db` (`?mode=rwc` creates the file).
    pub url: Secret,
    /// Connections kept open at most.
    #[serde(default = "default_max_connections")]
    pub max_connections: u32,
    /// How long to wait for a connection.
    #[serde(default = "default_connect_timeout")]
    pub connect_timeout: Dur,
}

fn default_max_connections() -> u32 {
    4
}
fn default_connect_timeout() -> Dur {
    Dur(Duration::from_secs(10))
}

/// Which database a URL names, for the SQL a component writes for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Driver {
    Postgres,
    MySql,
    Sqlite,
}

enum Options {
    Postgres(PgConnectOptions),
    MySql(MySqlConnectOptions),
    Sqlite(SqliteConnectOptions),
}

enum Pool {
    Postgres(PgPool),
    MySql(MySqlPool),
    Sqlite(SqlitePool),
}

/// A database resource.
pub struct Database {
    name: String,
    /// The configured URL, for a connection sqlx cannot make (`postgres_cdc`'s replication).
    url: crate::config::Secret,
    options: Options,
    max_connections: u32,
    connect_timeout: Duration,
    pool: OnceLock<Pool>,
    /// MySQL: each table's column types, asked for once (`information_schema`).
    column_types: tokio::sync::Mutex<std::collections::HashMap<String, Arc<ColumnTypes>>>,
}

/// A table's columns and their types (lower case), as the database states them.
type ColumnTypes = std::collections::HashMap<String, String>;

/// Where a statement's parameters go, in order: the columns of a table (the `sql` output's
/// `columns` mode). Values are then converted for each column's type, and a value that does
/// not fit is reported by its column's name.
#[derive(Debug, Clone)]
pub struct Columns {
    pub table: String,
    pub names: Vec<String>,
}

/// A failed statement: worth retrying (connection lost, deadlock, pool exhausted) or not
/// (a constraint, a syntax error, a value of the wrong type).
#[derive(Debug, Clone, thiserror::Error)]
pub enum SqlError {
    #[error("database `{db}`: {reason}")]
    Transient { db: String, reason: String },
    #[error("database `{db}`: {reason}")]
    Permanent { db: String, reason: String },
}

impl SqlError {
    pub fn is_transient(&self) -> bool {
        matches!(self, SqlError::Transient { .. })
    }

    pub fn attempt(self) -> crate::core::Attempt {
        let transient = self.is_transient();
        let reason = self.to_string();
        if transient {
            crate::core::Attempt::Retryable {
                reason,
                retry_after: None,
                response: None,
            }
        } else {
            crate::core::Attempt::Fatal {
                reason,
                response: None,
            }
        }
    }
}

impl Config {
    pub fn build(&self, name: &str) -> Result<Database, Vec<BuildError>> {
        let err = |m: String| vec![BuildError::new("url", m)];
        let url = self.url.expose();
        // sqlx's own messages can quote the URL; these name the scheme only.
        let options = if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Options::Postgres(
                PgConnectOptions::from_str(url)
                    .map_err(|_| err("not a valid postgres:// URL".into()))?,
            )
        } else if url.starts_with("mysql://") || url.starts_with("mariadb://") {
            let url = url.replacen("mariadb://", "mysql://", 1);
            Options::MySql(
                MySqlConnectOptions::from_str(&url)
                    .map_err(|_| err("not a valid mysql:// URL".into()))?,
            )
        } else if url.starts_with("sqlite:") {
            Options::Sqlite(
                SqliteConnectOptions::from_str(url)
                    .map_err(|_| err("not a valid sqlite:// URL".into()))?,
            )
        } else {
            return Err(err(
                "the URL must start with postgres://, mysql:// or sqlite://".into(),
            ));
        };
        if self.max_connections == 0 {
            return Err(vec![BuildError::new(
                "max_connections",
                "at least 1 connection is needed",
            )]);
        }
        Ok(Database {
            name: name.to_string(),
            url: self.url.clone(),
            options,
            max_connections: self.max_connections,
            connect_timeout: self.connect_timeout.0,
            pool: OnceLock::new(),
            column_types: Default::default(),
        })
    }
}

/// What sqlx's error means for a retry.
fn classify(db: &str, e: sqlx::Error) -> SqlError {
    let transient = match &e {
        sqlx::Error::Io(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed
        | sqlx::Error::Protocol(_)
        | sqlx::Error::Tls(_) => true,
        sqlx::Error::Database(d) => {
            if let Some(my) = d.try_downcast_ref::<sqlx::mysql::MySqlDatabaseError>() {
                // Lock wait timeout, deadlock, too many connections, server shutting down.
                matches!(my.number(), 1205 | 1213 | 1040 | 1053)
            } else if let Some(lite) = d.try_downcast_ref::<sqlx::sqlite::SqliteError>() {
                // SQLITE_BUSY and SQLITE_LOCKED, with their extended codes.
                let code: i64 = lite.code().and_then(|c| c.parse().ok()).unwrap_or(0);
                matches!(code & 0xff, 5 | 6)
            } else {
                // PostgreSQL SQLSTATE classes 08 (connection), 40 (deadlock, serialization),
                // 53 (resources), 57 (shutdown).
                let code = d.code().map(|c| c.into_owned()).unwrap_or_default();
                ["08", "40", "53", "57"]
                    .iter()
                    .any(|class| code.starts_with(class))
            }
        }
        _ => false,
    };
    let reason = match &e {
        sqlx::Error::Database(d) => match d.code() {
            Some(code) => format!("{} (code {code})", d.message()),
            None => d.message().to_string(),
        },
        other => other.to_string(),
    };
    if transient {
        SqlError::Transient {
            db: db.to_string(),
            reason,
        }
    } else {
        SqlError::Permanent {
            db: db.to_string(),
            reason,
        }
    }
}

/// One transaction of [`loose_query`]s (MySQL and SQLite bind alike; sqlx has no generic
/// `rows_affected`, hence a macro rather than a function).
macro_rules! loose_batch {
    ($db:ty, $pool:expr, $sql:expr, $batch:expr, $fail:expr) => {{
        let mut tx = $pool.begin().await.map_err($fail)?;
        let mut affected = 0;
        for args in $batch {
            affected += loose_query::<$db, _>($sql, args)
                .execute(&mut *tx)
                .await
                .map_err($fail)?
                .rows_affected();
        }
        tx.commit().await.map_err($fail)?;
        affected
    }};
}

impl Database {
    /// The configured URL (it holds the password: never show it).
    pub fn url(&self) -> &str {
        self.url.expose()
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn driver(&self) -> Driver {
        match self.options {
            Options::Postgres(_) => Driver::Postgres,
            Options::MySql(_) => Driver::MySql,
            Options::Sqlite(_) => Driver::Sqlite,
        }
    }

    /// The `n`th (1-based) parameter placeholder in this database's SQL.
    pub fn placeholder(&self, n: usize) -> String {
        match self.driver() {
            Driver::Postgres => format!("${n}"),
            Driver::MySql | Driver::Sqlite => "?".into(),
        }
    }

    fn pool(&self) -> &Pool {
        self.pool.get_or_init(|| match &self.options {
            Options::Postgres(o) => Pool::Postgres(
                PgPoolOptions::new()
                    .max_connections(self.max_connections)
                    .acquire_timeout(self.connect_timeout)
                    .connect_lazy_with(o.clone()),
            ),
            Options::MySql(o) => Pool::MySql(
                MySqlPoolOptions::new()
                    .max_connections(self.max_connections)
                    .acquire_timeout(self.connect_timeout)
                    .connect_lazy_with(o.clone()),
            ),
            Options::Sqlite(o) => Pool::Sqlite(
                SqlitePoolOptions::new()
                    .max_connections(self.max_connections)
                    .acquire_timeout(self.connect_timeout)
                    .connect_lazy_with(o.clone()),
            ),
        })
    }

    /// With no connection open, one direct connection first: a database that is down then
    /// answers at once with its reason (connection refused, name not resolved, TLS), where
    /// the pool would try again until its acquire timeout and report only that it timed out.
    async fn ready(&self) -> Result<(), SqlError> {
        use sqlx::Connection;
        let db = self.name.as_str();
        let open = match self.pool() {
            Pool::Postgres(p) => p.size(),
            Pool::MySql(p) => p.size(),
            // A file: nothing to be down.
            Pool::Sqlite(_) => return Ok(()),
        };
        if open > 0 {
            return Ok(());
        }
        let probe = async {
            match &self.options {
                Options::Postgres(o) => sqlx::PgConnection::connect_with(o).await?.close().await,
                Options::MySql(o) => sqlx::MySqlConnection::connect_with(o).await?.close().await,
                Options::Sqlite(_) => Ok(()),
            }
        };
        match tokio::time::timeout(self.connect_timeout, probe).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(match classify(db, e) {
                SqlError::Transient { db, reason } => SqlError::Transient {
                    db,
                    reason: format!("cannot connect: {reason}"),
                },
                SqlError::Permanent { db, reason } => SqlError::Permanent {
                    db,
                    reason: format!("cannot connect: {reason}"),
                },
            }),
            Err(_) => Err(SqlError::Transient {
                db: db.to_string(),
                reason: format!(
                    "cannot connect: no answer within {:?}",
                    self.connect_timeout
                ),
            }),
        }
    }

    /// A listener on PostgreSQL `channels` (LISTEN/NOTIFY), on a connection of its own.
    pub async fn listen(
        &self,
        channels: &[String],
    ) -> Result<sqlx::postgres::PgListener, SqlError> {
        let db = self.name.as_str();
        let Pool::Postgres(pool) = self.pool() else {
            return Err(SqlError::Permanent {
                db: db.to_string(),
                reason: "LISTEN needs a PostgreSQL database".into(),
            });
        };
        let mut listener = sqlx::postgres::PgListener::connect_with(pool)
            .await
            .map_err(|e| classify(db, e))?;
        listener
            .listen_all(channels.iter().map(String::as_str))
            .await
            .map_err(|e| classify(db, e))?;
        Ok(listener)
    }

    /// Runs a query and returns its rows as objects.
    pub async fn fetch(&self, sql: &str, args: &[Json]) -> Result<Vec<Json>, SqlError> {
        self.ready().await?;
        let db = self.name.as_str();
        let fail = |e| classify(db, e);
        match self.pool() {
            Pool::Postgres(pool) => {
                let mut conn = pool.acquire().await.map_err(fail)?;
                let statement = conn.prepare(sql_str(sql)).await.map_err(fail)?;
                let arguments = pg_arguments(db, &statement, args, &[])?;
                let rows = statement
                    .query_with(arguments)
                    .fetch_all(&mut *conn)
                    .await
                    .map_err(fail)?;
                rows.iter().map(|r| pg_row(db, r)).collect()
            }
            Pool::MySql(pool) => {
                let rows = loose_query::<sqlx::MySql, _>(sql, args)
                    .fetch_all(pool)
                    .await
                    .map_err(fail)?;
                rows.iter().map(|r| my_row(db, r)).collect()
            }
            Pool::Sqlite(pool) => {
                let rows = loose_query::<sqlx::Sqlite, _>(sql, args)
                    .fetch_all(pool)
                    .await
                    .map_err(fail)?;
                rows.iter().map(|r| lite_row(db, r)).collect()
            }
        }
    }

    /// Runs `sql` once per argument list, all in one transaction: every row is written or none.
    pub async fn execute_all(
        &self,
        sql: &str,
        batch: &[Vec<Json>],
        columns: Option<&Columns>,
    ) -> Result<u64, SqlError> {
        self.ready().await?;
        let db = self.name.as_str();
        let fail = |e| classify(db, e);
        let names = columns.map_or(&[][..], |c| c.names.as_slice());
        Ok(match self.pool() {
            Pool::Postgres(pool) => {
                let mut tx = pool.begin().await.map_err(fail)?;
                let statement = (&mut *tx).prepare(sql_str(sql)).await.map_err(fail)?;
                let mut affected = 0;
                for args in batch {
                    let arguments = pg_arguments(db, &statement, args, names)?;
                    affected += statement
                        .query_with(arguments)
                        .execute(&mut *tx)
                        .await
                        .map_err(fail)?
                        .rows_affected();
                }
                tx.commit().await.map_err(fail)?;
                affected
            }
            Pool::MySql(pool) => match columns {
                Some(columns) => {
                    let types = self.mysql_types(pool, &columns.table).await;
                    let fitted: Vec<Vec<Loose>> = batch
                        .iter()
                        .map(|row| {
                            row.iter()
                                .zip(&columns.names)
                                .map(|(value, name)| match types.get(&name.to_lowercase()) {
                                    Some(kind) => {
                                        my_fit(kind, value).map_err(|why| SqlError::Permanent {
                                            db: db.to_string(),
                                            reason: format!("column `{name}`: {why}"),
                                        })
                                    }
                                    None => Ok(Loose::Value(value.clone())),
                                })
                                .collect()
                        })
                        .collect::<Result<_, _>>()?;
                    loose_batch!(sqlx::MySql, pool, sql, &fitted, fail)
                }
                None => loose_batch!(sqlx::MySql, pool, sql, batch, fail),
            },
            Pool::Sqlite(pool) => loose_batch!(sqlx::Sqlite, pool, sql, batch, fail),
        })
    }

    /// A MySQL table's column types, asked for on first use. A table the question fails for
    /// gets no conversions (the insert itself then says what is wrong), and is asked again.
    async fn mysql_types(&self, pool: &MySqlPool, table: &str) -> Arc<ColumnTypes> {
        let mut known = self.column_types.lock().await;
        if let Some(types) = known.get(table) {
            return types.clone();
        }
        let (schema, name) = match table.split_once('.') {
            Some((schema, name)) => (Some(schema.trim_matches('`')), name),
            None => (None, table),
        };
        let asked: Result<Vec<(String, String)>, sqlx::Error> = sqlx::query_as(
            "SELECT CAST(COLUMN_NAME AS CHAR), CAST(DATA_TYPE AS CHAR) FROM information_schema.COLUMNS
             WHERE TABLE_SCHEMA = COALESCE(?, DATABASE()) AND TABLE_NAME = ?",
        )
        .bind(schema)
        .bind(name.trim_matches('`'))
        .fetch_all(pool)
        .await;
        match asked {
            Ok(rows) if !rows.is_empty() => {
                let types: Arc<ColumnTypes> = Arc::new(
                    rows.into_iter()
                        .map(|(c, t)| (c.to_lowercase(), t.to_lowercase()))
                        .collect(),
                );
                known.insert(table.to_string(), types.clone());
                types
            }
            _ => Arc::default(),
        }
    }
}

/// A value as a MySQL column of type `kind` takes it: an RFC 3339 time (a VRL timestamp
/// arrives as one) written as the `YYYY-MM-DD hh:mm:ss.ffffff` in UTC that `DATETIME` and
/// `TIMESTAMP` read, or its own date (in its offset) for `DATE`; base64 text as its bytes for
/// a binary column (as weft reads them). Anything else as it is.
fn my_fit(kind: &str, value: &Json) -> Result<Loose, String> {
    let Json::String(text) = value else {
        return Ok(Loose::Value(value.clone()));
    };
    if matches!(
        kind,
        "blob" | "tinyblob" | "mediumblob" | "longblob" | "binary" | "varbinary"
    ) {
        return from_base64(kind, text).map(Loose::Bytes);
    }
    let Ok(time) = chrono::DateTime::parse_from_rfc3339(text) else {
        return Ok(Loose::Value(value.clone()));
    };
    Ok(Loose::Value(match kind {
        "datetime" | "timestamp" => {
            Json::String(time.naive_utc().format("%Y-%m-%d %H:%M:%S%.6f").to_string())
        }
        // The date the time names where it was written, not in UTC.
        "date" => Json::String(time.date_naive().format("%Y-%m-%d").to_string()),
        _ => value.clone(),
    }))
}

/// Binary columns travel as base64 text (standard alphabet, padded), as JSON has no bytes.
pub(crate) fn to_base64(bytes: &[u8]) -> Json {
    use base64::Engine;
    Json::String(base64::engine::general_purpose::STANDARD.encode(bytes))
}

fn from_base64(kind: &str, text: &str) -> Result<Vec<u8>, String> {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD
        .decode(text)
        .map_err(|_| {
            format!(
                "a `{}` column takes base64 text (`encode_base64(...)` in a mapping)",
                kind.to_uppercase()
            )
        })
}

/// A message's parameters, evaluated by `args`.
pub fn evaluate_args(
    args: Option<&crate::core::mapping::Mapping>,
    message: &crate::core::Message,
) -> Result<Vec<Json>, String> {
    let Some(args) = args else {
        return Ok(Vec::new());
    };
    match args
        .eval(&message.value, &message.metadata)
        .map_err(|e| format!("args: {e}"))?
    {
        crate::core::Value::Array(items) => items
            .iter()
            .map(|v| serde_json::to_value(v).map_err(|e| format!("args: {e}")))
            .collect(),
        other => Err(format!(
            "args must give an array of parameters, not {}",
            other.kind_str()
        )),
    }
}

/// SQL from the config: written by whoever runs weft, values only ever bound as parameters.
fn sql_str(sql: &str) -> sqlx::SqlStr {
    sqlx::AssertSqlSafe(sql).into_sql_str()
}

/// A parameter for a query bound by its JSON type: a value, or bytes (base64 text decoded for
/// a binary column).
pub enum Loose {
    Value(Json),
    Bytes(Vec<u8>),
}

/// What [`loose_query`] binds: a JSON value, or a [`Loose`].
trait AsLoose {
    fn as_loose(&self) -> Result<&Json, &[u8]>;
}

impl AsLoose for Json {
    fn as_loose(&self) -> Result<&Json, &[u8]> {
        Ok(self)
    }
}

impl AsLoose for Loose {
    fn as_loose(&self) -> Result<&Json, &[u8]> {
        match self {
            Loose::Value(v) => Ok(v),
            Loose::Bytes(b) => Err(b),
        }
    }
}

/// A query whose arguments are bound by their JSON type (MySQL and SQLite convert them).
fn loose_query<'q, DB, A: AsLoose>(
    sql: &str,
    args: &[A],
) -> sqlx::query::Query<'q, DB, <DB as sqlx::Database>::Arguments>
where
    DB: sqlx::Database,
    Option<String>: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
    bool: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
    i64: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
    f64: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
    String: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
    Vec<u8>: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
{
    let mut query = sqlx::query::<DB>(sql_str(sql));
    for arg in args {
        let arg = match arg.as_loose() {
            Ok(value) => value,
            Err(bytes) => {
                query = query.bind(bytes.to_vec());
                continue;
            }
        };
        query = match arg {
            Json::Null => query.bind(None::<String>),
            Json::Bool(b) => query.bind(*b),
            Json::Number(n) => match n.as_i64() {
                Some(i) => query.bind(i),
                None => query.bind(n.as_f64().unwrap_or(f64::NAN)),
            },
            Json::String(s) => query.bind(s.clone()),
            other => query.bind(other.to_string()),
        };
    }
    query
}

/// A parameter's value as the text PostgreSQL would read.
fn text_of(value: &Json) -> String {
    match value {
        Json::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Arguments for a prepared PostgreSQL statement, each converted to the type the server
/// stated for its parameter.
fn pg_arguments(
    db: &str,
    statement: &sqlx::postgres::PgStatement,
    args: &[Json],
    names: &[String],
) -> Result<PgArguments, SqlError> {
    let types: Vec<String> = match statement.parameters() {
        Some(sqlx::Either::Left(types)) => types.iter().map(|t| t.name().to_string()).collect(),
        _ => Vec::new(),
    };
    if types.len() != args.len() {
        return Err(SqlError::Permanent {
            db: db.to_string(),
            reason: format!(
                "the statement takes {} parameter(s), {} given",
                types.len(),
                args.len()
            ),
        });
    }
    let mut arguments = PgArguments::default();
    for (i, (value, kind)) in args.iter().zip(&types).enumerate() {
        let wrong = |why: String| SqlError::Permanent {
            db: db.to_string(),
            reason: match names.get(i) {
                Some(column) => format!("column `{column}`: {why}"),
                None => format!("parameter ${}: {why}", i + 1),
            },
        };
        let added = if value.is_null() {
            pg_null(&mut arguments, kind)
        } else {
            pg_add(&mut arguments, kind, value).map_err(wrong)?
        };
        added.map_err(|e| wrong(e.to_string()))?;
    }
    Ok(arguments)
}

type AddResult = Result<(), sqlx::error::BoxDynError>;

fn pg_null(a: &mut PgArguments, kind: &str) -> AddResult {
    match kind {
        "BOOL" => a.add(None::<bool>),
        "INT2" => a.add(None::<i16>),
        "INT4" => a.add(None::<i32>),
        "INT8" => a.add(None::<i64>),
        "FLOAT4" => a.add(None::<f32>),
        "FLOAT8" => a.add(None::<f64>),
        "NUMERIC" => a.add(None::<rust_decimal::Decimal>),
        "JSON" | "JSONB" => a.add(None::<sqlx::types::Json<Json>>),
        "TIMESTAMPTZ" => a.add(None::<chrono::DateTime<chrono::Utc>>),
        "TIMESTAMP" => a.add(None::<chrono::NaiveDateTime>),
        "DATE" => a.add(None::<chrono::NaiveDate>),
        "UUID" => a.add(None::<uuid::Uuid>),
        "BYTEA" => a.add(None::<Vec<u8>>),
        _ => a.add(None::<String>),
    }
}

fn pg_add(a: &mut PgArguments, kind: &str, value: &Json) -> Result<AddResult, String> {
    let text = text_of(value);
    let number = || {
        value
            .as_f64()
            .or_else(|| text.parse().ok())
            .ok_or_else(|| format!("`{kind}` needs a number"))
    };
    let integer = || {
        value
            .as_i64()
            .or_else(|| text.parse().ok())
            .ok_or_else(|| format!("`{kind}` needs an integer"))
    };
    Ok(match kind {
        "BOOL" => a.add(match (value, text.as_str()) {
            (Json::Bool(b), _) => *b,
            (_, "true" | "t" | "1") => true,
            (_, "false" | "f" | "0") => false,
            _ => return Err(format!("`{kind}` needs true or false")),
        }),
        "INT2" => a.add(i16::try_from(integer()?).map_err(|_| "out of range for int2")?),
        "INT4" => a.add(i32::try_from(integer()?).map_err(|_| "out of range for int4")?),
        "INT8" => a.add(integer()?),
        "FLOAT4" => a.add(number()? as f32),
        "FLOAT8" => a.add(number()?),
        "NUMERIC" => a.add(
            rust_decimal::Decimal::from_str_exact(&text)
                .or_else(|_| rust_decimal::Decimal::from_scientific(&text))
                .map_err(|_| format!("`{kind}` needs a number"))?,
        ),
        "JSON" | "JSONB" => a.add(sqlx::types::Json(value.clone())),
        "TIMESTAMPTZ" => a.add(
            chrono::DateTime::parse_from_rfc3339(&text)
                .map_err(|_| format!("`{kind}` needs an RFC 3339 time"))?
                .with_timezone(&chrono::Utc),
        ),
        "TIMESTAMP" => a.add(
            chrono::NaiveDateTime::from_str(&text)
                .or_else(|_| chrono::DateTime::parse_from_rfc3339(&text).map(|t| t.naive_utc()))
                .map_err(|_| format!("`{kind}` needs a time like 2024-05-01T12:00:00"))?,
        ),
        "DATE" => a.add(
            chrono::NaiveDate::from_str(&text)
                .map_err(|_| format!("`{kind}` needs a date like 2024-05-01"))?,
        ),
        "UUID" => a.add(uuid::Uuid::from_str(&text).map_err(|_| format!("`{kind}` needs a UUID"))?),
        "BYTEA" => a.add(from_base64(kind, &text)?),
        // `CHAR` is how sqlx names `char(n)` (bpchar); `"CHAR"` is the one-byte `"char"`.
        "TEXT" | "VARCHAR" | "BPCHAR" | "CHAR" | "\"CHAR\"" | "NAME" | "CITEXT" | "XML"
        | "UNKNOWN" => a.add(text),
        other => {
            return Err(format!(
                "weft cannot send a `{other}`; take it as text in the query (`$1::text`, say) and convert it there"
            ));
        }
    })
}

/// A number as JSON: an integer when it is one, a double when that holds it exactly, else text.
pub(crate) fn decimal(d: rust_decimal::Decimal) -> Json {
    if d.fract().is_zero()
        && let Some(i) = d.to_i64()
    {
        return Json::from(i);
    }
    match d.to_f64() {
        Some(f) if rust_decimal::Decimal::from_str(&f.to_string()).ok() == Some(d.normalize()) => {
            Json::from(f)
        }
        _ => Json::String(d.to_string()),
    }
}

fn unreadable(db: &str, column: &str, kind: &str, e: impl std::fmt::Display) -> SqlError {
    SqlError::Permanent {
        db: db.to_string(),
        reason: format!(
            "column `{column}` ({kind}) cannot be read: {e}; cast it to text in the query"
        ),
    }
}

/// A row as an object by column name: NULL as null, any other value as `decode` reads it
/// (given the type name `kind` tells, the column's or, for SQLite, the value's own).
fn row_object<R>(
    db: &str,
    row: &R,
    kind: impl Fn(&R, usize) -> String,
    decode: impl Fn(&R, usize, &str) -> Result<Json, sqlx::Error>,
) -> Result<Json, SqlError>
where
    R: Row,
    usize: sqlx::ColumnIndex<R>,
{
    let mut object = serde_json::Map::new();
    for (i, column) in row.columns().iter().enumerate() {
        let kind = kind(row, i);
        let raw = row
            .try_get_raw(i)
            .map_err(|e| unreadable(db, column.name(), &kind, e))?;
        let value = if raw.is_null() {
            Json::Null
        } else {
            decode(row, i, &kind).map_err(|e| unreadable(db, column.name(), &kind, e))?
        };
        object.insert(column.name().to_string(), value);
    }
    Ok(Json::Object(object))
}

fn pg_row(db: &str, row: &PgRow) -> Result<Json, SqlError> {
    let kind = |row: &PgRow, i: usize| row.columns()[i].type_info().name().to_string();
    row_object(db, row, kind, |row, i, kind| match kind {
        "BOOL" => row.try_get::<bool, _>(i).map(Json::from),
        "INT2" => row.try_get::<i16, _>(i).map(Json::from),
        "INT4" => row.try_get::<i32, _>(i).map(Json::from),
        "INT8" => row.try_get::<i64, _>(i).map(Json::from),
        "FLOAT4" => row.try_get::<f32, _>(i).map(|f| Json::from(f as f64)),
        "FLOAT8" => row.try_get::<f64, _>(i).map(Json::from),
        "NUMERIC" => row.try_get::<rust_decimal::Decimal, _>(i).map(decimal),
        "JSON" | "JSONB" => row.try_get::<sqlx::types::Json<Json>, _>(i).map(|j| j.0),
        "TIMESTAMPTZ" => row
            .try_get::<chrono::DateTime<chrono::Utc>, _>(i)
            .map(|t| Json::from(t.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true))),
        "TIMESTAMP" => row
            .try_get::<chrono::NaiveDateTime, _>(i)
            .map(|t| Json::from(t.format("%Y-%m-%dT%H:%M:%S%.f").to_string())),
        "DATE" => row
            .try_get::<chrono::NaiveDate, _>(i)
            .map(|d| Json::from(d.to_string())),
        "TIME" => row
            .try_get::<chrono::NaiveTime, _>(i)
            .map(|t| Json::from(t.to_string())),
        "UUID" => row
            .try_get::<uuid::Uuid, _>(i)
            .map(|u| Json::from(u.to_string())),
        "BYTEA" => row.try_get::<Vec<u8>, _>(i).map(|b| to_base64(&b)),
        _ => row.try_get::<String, _>(i).map(Json::from),
    })
}

fn my_row(db: &str, row: &sqlx::mysql::MySqlRow) -> Result<Json, SqlError> {
    let kind =
        |row: &sqlx::mysql::MySqlRow, i: usize| row.columns()[i].type_info().name().to_string();
    row_object(db, row, kind, |row, i, kind| match kind {
        "BOOLEAN" => row.try_get::<bool, _>(i).map(Json::from),
        // Above i64's range as text: a JSON number that large would come back a float.
        k if k.ends_with("UNSIGNED") => row.try_get::<u64, _>(i).map(|n| match i64::try_from(n) {
            Ok(n) => Json::from(n),
            Err(_) => Json::String(n.to_string()),
        }),
        "TINYINT" | "SMALLINT" | "MEDIUMINT" | "INT" | "BIGINT" | "YEAR" => {
            row.try_get::<i64, _>(i).map(Json::from)
        }
        "FLOAT" => row.try_get::<f32, _>(i).map(|f| Json::from(f as f64)),
        "DOUBLE" => row.try_get::<f64, _>(i).map(Json::from),
        "DECIMAL" => row.try_get::<rust_decimal::Decimal, _>(i).map(decimal),
        "JSON" => row.try_get::<sqlx::types::Json<Json>, _>(i).map(|j| j.0),
        // In UTC (sqlx's session time zone), written as MySQL reads it back.
        "TIMESTAMP" => row
            .try_get::<chrono::DateTime<chrono::Utc>, _>(i)
            .map(|t| Json::from(t.naive_utc().format("%Y-%m-%d %H:%M:%S%.f").to_string())),
        "DATETIME" => row
            .try_get::<chrono::NaiveDateTime, _>(i)
            .map(|t| Json::from(t.format("%Y-%m-%d %H:%M:%S%.f").to_string())),
        "DATE" => row
            .try_get::<chrono::NaiveDate, _>(i)
            .map(|d| Json::from(d.to_string())),
        "TIME" => row
            .try_get::<chrono::NaiveTime, _>(i)
            .map(|t| Json::from(t.to_string())),
        "BLOB" | "TINYBLOB" | "MEDIUMBLOB" | "LONGBLOB" | "BINARY" | "VARBINARY" => {
            row.try_get::<Vec<u8>, _>(i).map(|b| to_base64(&b))
        }
        _ => row.try_get::<String, _>(i).map(Json::from),
    })
}

fn lite_row(db: &str, row: &sqlx::sqlite::SqliteRow) -> Result<Json, SqlError> {
    // SQLite types values, not columns: read what this value is.
    let kind = |row: &sqlx::sqlite::SqliteRow, i: usize| {
        row.try_get_raw(i)
            .map(|raw| raw.type_info().name().to_string())
            .unwrap_or_default()
    };
    row_object(db, row, kind, |row, i, kind| match kind {
        "INTEGER" => row.try_get_unchecked::<i64, _>(i).map(Json::from),
        "REAL" => row.try_get_unchecked::<f64, _>(i).map(Json::from),
        "BLOB" => row
            .try_get_unchecked::<Vec<u8>, _>(i)
            .map(|b| to_base64(&b)),
        _ => row.try_get_unchecked::<String, _>(i).map(Json::from),
    })
}
