//! `sql`: runs a query in the middle of a pipeline — a lookup — and merges its rows into the
//! message. The database comes from `resources.sql`; parameters come from `args`, a VRL
//! expression giving an array (placeholders `$1`… for PostgreSQL, `?` for MySQL and SQLite).
//! `result` is a VRL program run on the message with the rows in `%response.rows` (an array of
//! objects by column name); by default the rows become the message. Lost connections and
//! deadlocks are retried in place; other errors fail the message.
//!
//! ```yaml
//! pipeline:
//!   - sql:
//!       database: crm                   # resources.sql.crm
//!       query: "SELECT name, tier FROM customers WHERE id = $1"
//!       args: "[.customer_id]"
//!       result: .customer = %response.rows[0]
//! ```

use std::sync::Arc;

use serde::Deserialize;

use crate::clients::Resources;
use crate::clients::Shared;
use crate::clients::sql::{Database, evaluate_args};
use crate::config::BuildError;
use crate::core::Context;
use crate::core::Step;
use crate::core::mapping::{Mapping, empty_object, insert};
use crate::core::retry::RetryConfig;
use crate::core::{Attempt, Message, StepError, Value};

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[schemars(rename = "SqlProcessor")]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The database, by its name in `resources.sql`.
    pub database: String,
    /// The query; its rows are the answer.
    pub query: String,
    /// VRL expression giving the query's parameters, as an array in placeholder order.
    #[serde(default)]
    pub args: Option<String>,
    /// VRL program merging the rows (`%response.rows`) into the message.
    #[serde(default)]
    pub result: Option<String>,
    #[serde(default)]
    pub retry: RetryConfig,
}

pub struct Sql(super::ApiStep<Lookup>);

pub struct Lookup {
    db: Arc<Database>,
    query: String,
    args: Option<Mapping>,
}

impl super::Spec for Config {
    type Built = Sql;

    fn build(&self, _shared: &Shared, resources: &Resources) -> Result<Sql, Vec<BuildError>> {
        let lookup = (|| {
            let db = resources
                .sql(&self.database)
                .map_err(|e| vec![BuildError::new("database", e)])?;
            let args = match &self.args {
                Some(source) => Some(
                    Mapping::compile(source)
                        .map_err(|d| BuildError::from_diagnostics("args", d))?,
                ),
                None => None,
            };
            Ok(Lookup {
                db,
                query: self.query.clone(),
                args,
            })
        })();
        super::ApiStep::build(lookup, &self.retry, self.result.as_deref()).map(Sql)
    }
}

impl Sql {
    async fn apply(&self, message: Message) -> Result<Option<Message>, StepError> {
        let rows = self.0.ask(|| self.0.call.rows(&message)).await?;
        let mut response = empty_object();
        insert(&mut response, "rows", rows.clone());
        self.0.merge(message, response, rows)
    }
}

impl crate::core::Processor for Sql {
    async fn process(&self, message: Message, _cx: &mut Context<'_>) -> Result<Step, StepError> {
        Ok(self.apply(message).await?.into())
    }

    fn reads_metadata(&self) -> bool {
        self.0
            .call
            .args
            .as_ref()
            .is_some_and(Mapping::reads_metadata)
            || self.0.result_reads_metadata()
    }
}

impl Lookup {
    async fn rows(&self, message: &Message) -> Result<Value, Attempt> {
        let args = evaluate_args(self.args.as_ref(), message).map_err(|reason| Attempt::Fatal {
            reason,
            response: None,
        })?;
        let rows = self
            .db
            .fetch(&self.query, &args)
            .await
            .map_err(|e| e.attempt())?;
        serde_json::from_value(serde_json::Value::Array(rows)).map_err(|e| Attempt::Fatal {
            reason: e.to_string(),
            response: None,
        })
    }
}
