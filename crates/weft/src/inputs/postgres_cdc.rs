//! `postgres_cdc`: every row inserted, updated or deleted in the tables of a PostgreSQL
//! publication, as a message, read from a logical replication slot (`pgoutput`, built into
//! PostgreSQL 10 and later, `TRUNCATE` from 11; the server needs `wal_level = logical`).
//!
//! ```yaml
//! input:
//!   postgres_cdc:
//!     database: crm                      # resources.sql.crm, a postgres:// URL
//!     slot: weft_orders                  # made if missing
//!     publication: weft_orders           # made for `tables` if missing
//!     tables: [public.orders, public.customers]
//! ```
//!
//! Each message is `{ "op": "insert" | "update" | "delete", "schema", "table", "before",
//! "after" }`: `after` is the new row; `before` the old one's key for a delete (and for an
//! update that changed the key; `null` for other updates), or the whole old row when the table
//! has `REPLICA IDENTITY FULL`. Column values are as `sql_poll` gives them. A large value an update
//! left unchanged is not sent by PostgreSQL and is left out of `after`. A `TRUNCATE` is one
//! message `{ "op": "truncate", "tables": [...] }`. Metadata: `%cdc_op`, `%cdc_schema`,
//! `%cdc_table`, `%cdc_lsn` (the transaction's commit LSN), `%cdc_xid`, `%cdc_commit_time`.
//!
//! Changes arrive per transaction, in commit order. The slot is told a transaction is done
//! (and may let its WAL go) only once every message of it was delivered, dead-lettered or,
//! in a durable flow, stored; after a crash PostgreSQL sends the transactions since then
//! again, so the input is at least once (`%cdc_lsn` and the row's key make an idempotency
//! key). A slot keeps WAL on the server while weft is away: drop the slot
//! (`SELECT pg_drop_replication_slot('weft_orders')`) when the flow is retired. A
//! transaction's messages are delivered side by side, as many as the flow's `concurrency`
//! allows (`concurrency: 1` keeps commit order within it too). On a cluster, one node at a
//! time reads the slot.
//!
//! The login is the URL's (password, MD5 or SCRAM-SHA-256, whose server proof is checked); it
//! needs the `REPLICATION`
//! attribute, and to make the publication, `CREATE` on the database and ownership of the
//! tables. `sslmode=require` (or
//! `verify-full`, the same here: the certificate is always checked, against the public roots
//! or `sslrootcert`) connects over TLS; `prefer`, the default, uses TLS when the server offers
//! it (and still checks the certificate), plain text otherwise; `disable` never.

use std::time::Duration;

use serde::Deserialize;
use serde_json::Value as Json;

use super::{AtShutdown, Feed, Redelivery};
use crate::clients::pg_replication::{Connection, Event, Stream, Target, ident, literal, lsn_text};
use crate::clients::sql::Driver;
use crate::clients::{Resources, Shared};
use crate::config::BuildError;
use crate::core::Message;
use crate::core::mapping::{Value, insert};
use crate::core::{Output, Processor};

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[schemars(rename = "PostgresCdcInput")]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The database, by its name in `resources.sql` (PostgreSQL).
    pub database: String,
    /// The logical replication slot that keeps the position (letters, digits, `_`).
    pub slot: String,
    /// The publication whose tables are read.
    pub publication: String,
    /// The tables (`schema.table`) of the publication weft makes when it is missing.
    #[serde(default)]
    pub tables: Vec<String>,
    /// Make the slot and the publication when they are missing. Default true.
    #[serde(default = "yes")]
    pub create: bool,
    /// Direct flows: how often a message whose delivery fails is offered again before it is
    /// dead-lettered.
    #[serde(default)]
    pub redelivery: Redelivery,
}

fn yes() -> bool {
    true
}

pub struct PostgresCdc {
    target: Target,
    slot: String,
    publication: String,
    tables: Vec<String>,
    create: bool,
    redelivery: Redelivery,
}

const COMPONENT: &str = "input.postgres_cdc";

/// How often the server hears from weft while it waits or delivers (PostgreSQL drops a
/// replication connection silent for `wal_sender_timeout`, 60 s by default).
const STATUS_EVERY: Duration = Duration::from_secs(10);

/// The most messages of one transaction handed to the flow at once.
const WINDOW: usize = 1024;

impl super::Spec for Config {
    type Built = PostgresCdc;

    fn build(
        self,
        _shared: &Shared,
        resources: &Resources,
    ) -> Result<PostgresCdc, Vec<BuildError>> {
        let mut errors = Vec::new();
        let target = match resources.sql(&self.database) {
            Ok(db) if db.driver() == Driver::Postgres => match Target::from_url(db.url()) {
                Ok(target) => Some(target),
                Err(e) => {
                    errors.push(BuildError::new(
                        "database",
                        format!("`{}`: {e}", self.database),
                    ));
                    None
                }
            },
            Ok(_) => {
                errors.push(BuildError::new(
                    "database",
                    format!("`{}` is not a PostgreSQL database", self.database),
                ));
                None
            }
            Err(e) => {
                errors.push(BuildError::new("database", e));
                None
            }
        };
        let plain = |name: &str| {
            !name.is_empty()
                && name.len() <= 63
                && name
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
        };
        if !plain(&self.slot) {
            errors.push(BuildError::new(
                "slot",
                "a slot name is lower-case letters, digits and `_`, at most 63",
            ));
        }
        if self.publication.is_empty() {
            errors.push(BuildError::new("publication", "is empty"));
        }
        for (i, table) in self.tables.iter().enumerate() {
            if table.split('.').count() > 2 || table.split('.').any(str::is_empty) {
                errors.push(BuildError::new(
                    &format!("tables[{i}]"),
                    format!("`{table}` is not `table` or `schema.table`"),
                ));
            }
        }
        match target {
            Some(target) if errors.is_empty() => Ok(PostgresCdc {
                target,
                slot: self.slot,
                publication: self.publication,
                tables: self.tables,
                create: self.create,
                redelivery: self.redelivery,
            }),
            _ => Err(errors),
        }
    }
}

/// What a transaction's messages share.
#[derive(Clone, Copy)]
struct Transaction {
    lsn: u64,
    xid: u32,
    commit_time: Option<chrono::DateTime<chrono::Utc>>,
}

impl PostgresCdc {
    /// Makes the publication and the slot if they are missing (and `create` allows).
    async fn prepare(&self, connection: &mut Connection) -> Result<(), String> {
        let shown = |e: crate::clients::pg_replication::PgError| e.to_string();
        let exists = connection
            .query(&format!(
                "SELECT 1 FROM pg_publication WHERE pubname = {}",
                literal(&self.publication)
            ))
            .await
            .map_err(shown)?;
        if exists.is_empty() {
            if self.tables.is_empty() {
                return Err(format!(
                    "publication `{}` does not exist: list `tables` for weft to make it, or make it (CREATE PUBLICATION … FOR TABLE …)",
                    self.publication
                ));
            }
            let tables: Vec<String> = self
                .tables
                .iter()
                .map(|t| t.split('.').map(ident).collect::<Vec<_>>().join("."))
                .collect();
            connection
                .query(&format!(
                    "CREATE PUBLICATION {} FOR TABLE {}",
                    ident(&self.publication),
                    tables.join(", ")
                ))
                .await
                .map_err(shown)?;
            tracing::info!(component = COMPONENT, publication = %self.publication, tables = ?self.tables, "publication made");
        }
        let slot = connection
            .query(&format!(
                "SELECT 1 FROM pg_replication_slots WHERE slot_name = {}",
                literal(&self.slot)
            ))
            .await
            .map_err(shown)?;
        if slot.is_empty() {
            connection
                .query(&format!(
                    "CREATE_REPLICATION_SLOT {} LOGICAL pgoutput NOEXPORT_SNAPSHOT",
                    ident(&self.slot)
                ))
                .await
                .map_err(shown)?;
            tracing::info!(component = COMPONENT, slot = %self.slot, "replication slot made; changes from now on are read");
        }
        Ok(())
    }

    /// One connection's worth of reading: until it fails, or shutdown.
    async fn session(&self, feed: &Feed<impl Processor, impl Output>) -> Result<(), String> {
        let mut connection = Connection::open(&self.target)
            .await
            .map_err(|e| e.to_string())?;
        if self.create {
            self.prepare(&mut connection).await?;
        }
        let mut stream = connection
            .start(&self.slot, &self.publication, 0)
            .await
            .map_err(|e| e.to_string())?;
        tracing::info!(flow = %feed.flow.name, component = COMPONENT, slot = %self.slot, "reading changes");
        // Nothing confirmed yet this session: 0 leaves the slot where it is.
        let mut confirmed = 0u64;
        let mut transaction: Option<Transaction> = None;
        let mut pending: Vec<Change> = Vec::new();
        loop {
            let event = tokio::select! {
                biased;
                _ = feed.shutdown.cancelled() => return Ok(()),
                event = stream.next(STATUS_EVERY) => event.map_err(|e| e.to_string())?,
            };
            match event {
                None => stream.confirm(confirmed).await.map_err(|e| e.to_string())?,
                Some(Event::Keepalive { end, reply }) => {
                    // Between transactions everything sent was delivered: the slot may move on
                    // past changes to other tables, or WAL would pile up on the server.
                    if transaction.is_none() {
                        confirmed = confirmed.max(end);
                    }
                    if reply {
                        stream.confirm(confirmed).await.map_err(|e| e.to_string())?;
                    }
                }
                Some(Event::Begin {
                    lsn,
                    xid,
                    commit_time,
                }) => {
                    transaction = Some(Transaction {
                        lsn,
                        xid,
                        commit_time,
                    });
                }
                Some(Event::Change {
                    op,
                    schema,
                    table,
                    before,
                    after,
                }) => {
                    let value = serde_json::json!({
                        "op": op, "schema": schema, "table": table,
                        "before": before, "after": after,
                    });
                    pending.push(Change {
                        value,
                        op,
                        table: Some((schema, table)),
                        transaction,
                    });
                }
                Some(Event::Truncate { tables }) => {
                    let value = serde_json::json!({ "op": "truncate", "tables": tables });
                    pending.push(Change {
                        value,
                        op: "truncate",
                        table: None,
                        transaction,
                    });
                }
                Some(Event::Commit { end }) => {
                    if !self
                        .hand_over(feed, &mut stream, &mut pending, confirmed)
                        .await?
                    {
                        return Ok(());
                    }
                    transaction = None;
                    confirmed = end;
                    stream.confirm(confirmed).await.map_err(|e| e.to_string())?;
                    continue;
                }
            }
            if pending.len() >= WINDOW
                && !self
                    .hand_over(feed, &mut stream, &mut pending, confirmed)
                    .await?
            {
                return Ok(());
            }
        }
    }

    /// Delivers `pending`, telling the server meanwhile that weft is alive (and still at
    /// `confirmed`). `false` if shutdown came first: nothing of the transaction is confirmed,
    /// and PostgreSQL sends it again at the next start.
    async fn hand_over(
        &self,
        feed: &Feed<impl Processor, impl Output>,
        stream: &mut Stream,
        pending: &mut Vec<Change>,
        confirmed: u64,
    ) -> Result<bool, String> {
        if pending.is_empty() {
            return Ok(true);
        }
        let changes = std::mem::take(pending);
        let delivery = feed.deliver_all_made(&changes, Change::message, &self.redelivery);
        tokio::pin!(delivery);
        let mut tick =
            tokio::time::interval_at(tokio::time::Instant::now() + STATUS_EVERY, STATUS_EVERY);
        loop {
            tokio::select! {
                taken = &mut delivery => return Ok(taken),
                _ = tick.tick() => stream.confirm(confirmed).await.map_err(|e| e.to_string())?,
            }
        }
    }
}

/// A change read, kept until its transaction is delivered.
struct Change {
    value: Json,
    op: &'static str,
    /// Schema and table.
    table: Option<(String, String)>,
    transaction: Option<Transaction>,
}

impl Change {
    /// The change as a message, with its metadata (made for each delivery, so none is
    /// copied).
    fn message(&self) -> Message {
        use serde::Deserialize as _;
        let value = Value::deserialize(&self.value).unwrap_or(Value::Null);
        let mut message = Message::new(value);
        let m = &mut message.metadata;
        insert(m, "cdc_op", Value::from(self.op));
        if let Some((schema, table)) = &self.table {
            insert(m, "cdc_schema", Value::from(schema.as_str()));
            insert(m, "cdc_table", Value::from(table.as_str()));
        }
        if let Some(t) = &self.transaction {
            insert(m, "cdc_lsn", Value::from(lsn_text(t.lsn)));
            insert(m, "cdc_xid", Value::from(i64::from(t.xid)));
            if let Some(time) = t.commit_time {
                insert(m, "cdc_commit_time", Value::from(time));
            }
        }
        message
    }
}

impl super::Source for PostgresCdc {
    fn uses_store(&self) -> bool {
        true // dead letters
    }

    async fn run<P: Processor, O: Output>(&self, feed: Feed<P, O>) -> std::io::Result<()> {
        // Finish: a transaction under way is delivered before the stop (or left unconfirmed,
        // to be sent again); waiting for the next one ends at shutdown.
        feed.keep_reading(COMPONENT, &self.target.shown(), AtShutdown::Finish, || {
            self.session(&feed)
        })
        .await;
        Ok(())
    }
}
