//! Redis, through the `redis` crate, for the `redis_streams`, `redis_list` and `redis_pubsub`
//! inputs and outputs: a connection shared by an output's sends (reconnecting by itself), and
//! connections of their own for an input's blocking reads, which would hold up everything
//! else on a shared one. Payloads that are JSON become values; anything else a string.

use redis::aio::{ConnectionManager, ConnectionManagerConfig, MultiplexedConnection};
use tokio::sync::OnceCell;

use super::tls::TlsFiles;
use crate::config::{BuildError, Secret};
use crate::core::Attempt;

/// A Redis server, by URL: `redis://[:password@]host:port[/db]`, or `rediss://` for TLS (with
/// an optional `tls:` block: a private CA, a client certificate).
pub struct Redis {
    client: redis::Client,
    /// The URL without credentials, for messages.
    shown: String,
    shared: OnceCell<ConnectionManager>,
}

/// This machine's name, for names that must differ between readers yet stay the same across
/// restarts (a consumer in a group, a processing list).
pub fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "weft".into())
}

impl Redis {
    /// Parses the URL and reads `tls`'s files; connecting waits for first use. Errors name
    /// the field (`url`, `tls.ca_file`…) and never repeat the URL, which may hold a password.
    pub fn open(url: &Secret, tls: Option<&TlsFiles>) -> Result<Redis, Vec<BuildError>> {
        let bad_url = || {
            vec![BuildError::new(
                "url",
                "not a valid redis:// or rediss:// URL",
            )]
        };
        let secure = url.expose().starts_with("rediss://");
        let client = match tls {
            None => redis::Client::open(url.expose()).map_err(|_| bad_url())?,
            Some(_) if !secure => {
                return Err(vec![BuildError::new(
                    "tls",
                    "`tls` is for a rediss:// URL; this one is redis:// (no TLS)",
                )]);
            }
            Some(files) => {
                let pem = files.load("tls")?.pem;
                let client_tls = match (pem.cert, pem.key) {
                    (Some(client_cert), Some(client_key)) => Some(redis::ClientTlsConfig {
                        client_cert,
                        client_key,
                    }),
                    _ => None,
                };
                let certificates = redis::TlsCertificates {
                    client_tls,
                    root_cert: pem.ca,
                };
                redis::Client::build_with_tls(url.expose(), certificates).map_err(|e| {
                    match e.kind() {
                        redis::ErrorKind::InvalidClientConfig => bad_url(),
                        _ => vec![BuildError::new("tls", e.to_string())],
                    }
                })?
            }
        };
        let info = client.get_connection_info();
        let shown = format!(
            "{}://{}",
            if secure { "rediss" } else { "redis" },
            info.addr()
        );
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

    /// A connection of its own, for blocking commands (`XREADGROUP BLOCK`, `BLMOVE`): no
    /// response timeout, since a blocking read answers only when its own wait is over.
    pub async fn dedicated(&self) -> Result<MultiplexedConnection, redis::RedisError> {
        let config = redis::AsyncConnectionConfig::new()
            .set_connection_timeout(Some(std::time::Duration::from_secs(10)))
            .set_response_timeout(None);
        self.client
            .get_multiplexed_async_connection_with_config(&config)
            .await
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
