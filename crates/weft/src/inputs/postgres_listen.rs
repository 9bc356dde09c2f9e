//! `postgres_listen`: a message per PostgreSQL notification (`LISTEN` / `NOTIFY`) on the given
//! channels. A JSON payload becomes the message's value, any other payload a string; the
//! channel is in `%postgres.channel`. A lost connection is opened again by itself.
//!
//! PostgreSQL keeps no notification for a listener that is not connected: what is sent while
//! weft is down or reconnecting is gone. Where every change matters, pair it with `sql_poll`
//! (the notification as a wake-up, the table as the record) or poll alone.
//!
//! ```yaml
//! input:
//!   postgres_listen:
//!     database: crm                   # resources.sql.crm, a postgres:// URL
//!     channels: [contact_changed]
//! ```

use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;

use super::{Feed, Redelivery};
use crate::clients::Resources;
use crate::clients::Shared;
use crate::clients::sql::{Database, Driver};
use crate::config::BuildError;
use crate::core::Message;
use crate::core::mapping::{Value, empty_object, insert};
use crate::core::{Output, Processor};

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[schemars(rename = "PostgresListenInput")]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The database, by its name in `resources.sql` (PostgreSQL).
    pub database: String,
    /// The channels to listen on.
    pub channels: Vec<String>,
    /// How often a failing message is offered again (by weft: the source keeps nothing)
    /// before it is dead-lettered.
    #[serde(default)]
    pub redelivery: Redelivery,
}

pub struct PostgresListen {
    db: Arc<Database>,
    channels: Vec<String>,
    redelivery: Redelivery,
}

/// How long to wait before connecting again after a failure.
const RECONNECT_DELAY: Duration = Duration::from_secs(1);

impl super::Spec for Config {
    type Built = PostgresListen;

    fn build(
        self,
        _shared: &Shared,
        resources: &Resources,
    ) -> Result<PostgresListen, Vec<BuildError>> {
        let db = resources
            .sql(&self.database)
            .map_err(|e| vec![BuildError::new("database", e)])?;
        if db.driver() != Driver::Postgres {
            return Err(vec![BuildError::new(
                "database",
                format!("`{}` is not a PostgreSQL database", self.database),
            )]);
        }
        if self.channels.is_empty() {
            return Err(vec![BuildError::new(
                "channels",
                "name at least one channel",
            )]);
        }
        Ok(PostgresListen {
            db,
            channels: self.channels.clone(),
            redelivery: self.redelivery,
        })
    }
}

impl super::Source for PostgresListen {
    fn uses_store(&self) -> bool {
        true // dead letters
    }

    async fn run<P: Processor, O: Output>(&self, feed: Feed<P, O>) -> std::io::Result<()> {
        let component = "input.postgres_listen";
        loop {
            let listening = tokio::select! {
                biased;
                _ = feed.shutdown.cancelled() => return Ok(()),
                l = self.db.listen(&self.channels) => l,
            };
            let mut listener = match listening {
                Ok(l) => l,
                Err(error) => {
                    tracing::error!(flow = %feed.flow.name, component, %error, "cannot listen; trying again");
                    tokio::select! {
                        _ = feed.shutdown.cancelled() => return Ok(()),
                        _ = tokio::time::sleep(RECONNECT_DELAY) => continue,
                    }
                }
            };
            tracing::info!(flow = %feed.flow.name, component, channels = ?self.channels, "listening");
            loop {
                let received = tokio::select! {
                    biased;
                    _ = feed.shutdown.cancelled() => return Ok(()),
                    n = listener.try_recv() => n,
                };
                match received {
                    Ok(Some(notification)) => {
                        let payload = notification.payload();
                        let value = serde_json::from_str::<Value>(payload)
                            .unwrap_or_else(|_| Value::from(payload));
                        let mut message = Message::new(value);
                        let mut postgres = empty_object();
                        insert(
                            &mut postgres,
                            "channel",
                            Value::from(notification.channel()),
                        );
                        insert(&mut message.metadata, "postgres", postgres);
                        if !feed.push_kept(message, &self.redelivery).await {
                            return Ok(());
                        }
                    }
                    Ok(None) => {
                        tracing::warn!(flow = %feed.flow.name, component, "connection lost; notifications sent until it is back are lost");
                    }
                    Err(error) => {
                        tracing::error!(flow = %feed.flow.name, component, %error, "listening failed; connecting again");
                        break;
                    }
                }
            }
        }
    }
}
