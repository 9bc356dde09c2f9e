//! Redis, through the `redis` crate, for the `redis_streams`, `redis_list` and `redis_pubsub`
//! inputs and outputs: a connection shared by an output's sends (reconnecting by itself), and
//! connections of their own for an input's blocking reads, which would hold up everything
//! else on a shared one. Payloads that are JSON become values; anything else a string.

use redis::aio::{ConnectionManager, ConnectionManagerConfig, MultiplexedConnection};
use tokio::sync::OnceCell;

use super::secret::Secret;
use crate::core::{Attempt, Value};

/// A Redis server, by URL (`redis://[:password@]host:port[/db]`, `rediss://` for TLS).
pub struct Redis {
    client: redis::Client,
    /// The URL without credentials, for messages.
    shown: String,
    shared: OnceCell<ConnectionManager>,
}

impl Redis {
    /// Parses the URL; connecting waits for first use.
    pub fn open(url: &Secret) -> Result<Redis, String> {
        let client = redis::Client::open(url.expose())
            .map_err(|_| "not a valid redis:// URL".to_string())?;
        let info = client.get_connection_info();
        let shown = format!("redis://{}", info.addr());
        Ok(Redis {
            client,
            shown,
            shared: OnceCell::new(),
        })
    }

    pub fn shown(&self) -> &str {
        &self.shown
    }

    /// The connection shared by this component's commands; it reconnects by itself.
    pub async fn shared(&self) -> Result<ConnectionManager, redis::RedisError> {
        self.shared
            .get_or_try_init(|| {
                ConnectionManager::new_with_config(
                    self.client.clone(),
                    ConnectionManagerConfig::new()
                        .set_connection_timeout(Some(std::time::Duration::from_secs(10))),
                )
            })
            .await
            .cloned()
    }

    /// A connection of its own, for blocking commands (`XREADGROUP BLOCK`, `BLMOVE`).
    pub async fn dedicated(&self) -> Result<MultiplexedConnection, redis::RedisError> {
        self.client.get_multiplexed_async_connection().await
    }

    /// A connection for SUBSCRIBE.
    pub async fn pubsub(&self) -> Result<redis::aio::PubSub, redis::RedisError> {
        self.client.get_async_pubsub().await
    }

    /// What a failed command means for a delivery: a connection problem is worth retrying,
    /// a refused command (a key of the wrong type, say) is not.
    pub fn attempt(&self, e: redis::RedisError) -> Attempt {
        let reason = format!("redis {}: {e}", self.shown);
        if e.is_io_error()
            || e.is_connection_dropped()
            || e.is_connection_refusal()
            || e.is_timeout()
            || matches!(
                e.kind(),
                redis::ErrorKind::Server(
                    redis::ServerErrorKind::BusyLoading | redis::ServerErrorKind::TryAgain
                )
            )
        {
            Attempt::Retryable {
                reason,
                retry_after: None,
                response: None,
            }
        } else {
            Attempt::Fatal {
                reason,
                response: None,
            }
        }
    }
}

/// A payload as a message value: JSON when it parses, else the text (or bytes).
pub fn decode(payload: &[u8]) -> Value {
    serde_json::from_slice::<Value>(payload)
        .unwrap_or_else(|_| Value::Bytes(bytes::Bytes::copy_from_slice(payload)))
}
