//! `sql_poll`: runs a query on a schedule and makes a message of each row (an object by column
//! name). With a `watermark`, it reads incrementally: the query takes the watermark's values as
//! its parameters — write it so rows sharing a timestamp are neither skipped nor read twice,
//! `WHERE (updated_at, id) > ($1, $2) ORDER BY updated_at, id LIMIT 500` — and after a page's
//! messages were all accepted, the last row's values of those columns are saved in the store as
//! the next poll's parameters. A page that came back full is followed at once by the next; an
//! empty one waits for the schedule. A crash re-reads at most the page in flight. In a direct
//! flow a row whose delivery keeps failing is offered again as `redelivery` says, then kept in
//! the flow's dead-letter queue, and the sync moves on. A paused flow does not poll.
//!
//! ```yaml
//! input:
//!   sql_poll:
//!     database: crm                   # resources.sql.crm
//!     query: |
//!       SELECT id, email, updated_at FROM contacts
//!       WHERE (updated_at, id) > ($1, $2) ORDER BY updated_at, id LIMIT 500
//!     watermark:
//!       columns: [updated_at, id]
//!       initial: ["1970-01-01T00:00:00Z", 0]
//!     interval: 30s                   # or cron: "*/5 * * * *"
//! ```
//!
//! Binary columns (`bytea`, `BLOB`, `VARBINARY`) come as base64 text, every byte kept
//! (`decode_base64!(.photo)` gives them back); a MySQL `BIGINT UNSIGNED` above 2^63-1 comes as
//! text, which a JSON number would round (as a watermark, compare it as
//! `id > CAST(? AS UNSIGNED)`, or MySQL compares the text as a double).

use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use serde_json::Value as Json;

use super::{AtShutdown, Feed, Redelivery};
use crate::clients::Resources;
use crate::clients::Shared;
use crate::clients::sql::Database;
use crate::config::BuildError;
use crate::config::units::Dur;
use crate::core::Message;
use crate::core::schedule::Schedule;
use crate::core::{Output, Processor};

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[schemars(rename = "SqlPollInput")]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The database, by its name in `resources.sql`.
    pub database: String,
    /// The query; with a `watermark`, its parameters are the watermark's values in order.
    pub query: String,
    #[serde(default)]
    pub watermark: Option<WatermarkConfig>,
    /// Time between polls; the first is made at once. Default 1m when no `cron` is given.
    #[serde(default)]
    pub interval: Option<Dur>,
    /// A cron schedule instead of `interval`.
    #[serde(default)]
    pub cron: Option<String>,
    /// Direct flows: how often a row whose delivery fails is offered again before it is
    /// dead-lettered.
    #[serde(default)]
    pub redelivery: Redelivery,
    /// Where the watermark is kept in the store (default: the flow's name). Set it to keep the
    /// watermark when the flow is renamed (`weft checkpoint list` shows the keys in use).
    #[serde(default)]
    pub checkpoint_key: Option<String>,
}

/// Incremental sync: the last row's values of these columns are kept (in the store, across
/// restarts) and bound as the next poll's query parameters, so each poll reads only newer rows.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[schemars(rename = "SqlPollWatermark")]
#[serde(deny_unknown_fields)]
pub struct WatermarkConfig {
    /// The columns whose values in the last row read are the next poll's parameters.
    pub columns: Vec<String>,
    /// Their values for the very first poll.
    pub initial: Vec<Json>,
}

pub struct SqlPoll {
    db: Arc<Database>,
    query: String,
    redelivery: Redelivery,
    checkpoint_key: Option<String>,
    watermark: Option<(Vec<String>, Vec<Json>)>,
    schedule: Schedule,
}

impl super::Spec for Config {
    type Built = SqlPoll;

    fn build(self, _shared: &Shared, resources: &Resources) -> Result<SqlPoll, Vec<BuildError>> {
        let mut errors = Vec::new();
        let db = resources
            .sql(&self.database)
            .map_err(|e| errors.push(BuildError::new("database", e)))
            .ok();
        let schedule = Schedule::from_config(
            self.interval.as_ref(),
            self.cron.as_deref(),
            Duration::from_secs(60),
        )
        .map_err(|e| errors.extend(e))
        .ok();
        if let Some(w) = &self.watermark {
            if w.columns.is_empty() {
                errors.push(BuildError::new("watermark.columns", "name at least one"));
            }
            if w.columns.len() != w.initial.len() {
                errors.push(BuildError::new(
                    "watermark.initial",
                    format!(
                        "one initial value per column: {} column(s), {} value(s)",
                        w.columns.len(),
                        w.initial.len()
                    ),
                ));
            }
        }
        match (db, schedule) {
            (Some(db), Some(schedule)) if errors.is_empty() => Ok(SqlPoll {
                db,
                query: self.query.clone(),
                redelivery: self.redelivery.clone(),
                checkpoint_key: self.checkpoint_key.clone(),
                watermark: self
                    .watermark
                    .as_ref()
                    .map(|w| (w.columns.clone(), w.initial.clone())),
                schedule,
            }),
            _ => Err(errors),
        }
    }
}

impl SqlPoll {
    /// Where the watermark is kept, when there is one.
    pub fn checkpoint_key(&self, flow: &str) -> Option<String> {
        crate::core::checkpoint::key(
            self.watermark.is_some(),
            self.checkpoint_key.as_deref(),
            flow,
        )
    }

    /// Every page, one after the other, as one scheduled poll reads them.
    pub async fn poll_once(&self, feed: &Feed<impl Processor, impl Output>) -> Result<(), String> {
        while self.poll(feed).await? {}
        Ok(())
    }

    /// One page: its rows handed to the flow and, once all are accepted, the checkpoint moved
    /// past them. `true` when the watermark moved (so another page may follow at once); a
    /// query without a watermark reads everything in one go.
    async fn poll(&self, feed: &Feed<impl Processor, impl Output>) -> Result<bool, String> {
        let params = match &self.watermark {
            None => Vec::new(),
            Some((_, initial)) => feed.load_checkpoint().await?.unwrap_or(initial.clone()),
        };
        let rows = self
            .db
            .fetch(&self.query, &params)
            .await
            .map_err(|e| e.to_string())?;
        let Some(last) = rows.last() else {
            return Ok(false);
        };
        let mark = match &self.watermark {
            None => None,
            Some((columns, _)) => Some(
                columns
                    .iter()
                    .map(|c| {
                        last.get(c).cloned().ok_or_else(|| {
                            format!("the rows have no column `{c}` named in watermark.columns")
                        })
                    })
                    .collect::<Result<Vec<Json>, String>>()?,
            ),
        };
        let count = rows.len();
        let messages = rows
            .into_iter()
            .map(|row| serde_json::from_value(row).map(Message::new))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| e.to_string())?;
        if !feed.deliver_all(messages, &self.redelivery).await {
            return Err(format!("a message of {count} row(s) was not accepted"));
        }
        match mark {
            Some(mark) if mark == params => {
                // The query gave back rows at its own watermark (`>=` where `>` was meant?):
                // read again only on schedule, not in a loop.
                tracing::warn!(flow = %feed.flow.name, component = "input.sql_poll", "the last row's watermark equals the query's parameters; compare with `>` so a page moves it");
                Ok(false)
            }
            Some(mark) => {
                feed.save_checkpoint(&mark).await?;
                Ok(true)
            }
            None => Ok(false),
        }
    }
}

impl super::Source for SqlPoll {
    fn uses_store(&self) -> bool {
        true // the watermark, dead letters
    }

    async fn run<P: Processor, O: Output>(&self, feed: Feed<P, O>) -> std::io::Result<()> {
        // Not cancelled from outside: a page under way is finished and checkpointed.
        feed.poll_on_schedule(&self.schedule, "input.sql_poll", AtShutdown::Finish, || {
            self.poll(&feed)
        })
        .await;
        Ok(())
    }
}
