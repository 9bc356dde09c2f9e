//! NATS, through the official `async-nats` client, for the `nats` and `nats_jetstream` inputs
//! and outputs: one connection per component, opened on first use and kept up by the client
//! (it reconnects and resubscribes by itself). Payloads that are JSON become values; anything
//! else a string.

use tokio::sync::OnceCell;

use crate::config::Secret;
use crate::core::Attempt;

/// A NATS server, by URL (`nats://[user:password@]host:4222`, several comma-separated).
pub struct Nats {
    url: Secret,
    /// The URL without credentials, for messages.
    shown: String,
    client: OnceCell<async_nats::Client>,
}

impl Nats {
    pub fn open(url: &Secret) -> Result<Nats, String> {
        let mut shown = Vec::new();
        for server in url.expose().split(',') {
            let address: async_nats::ServerAddr = server
                .trim()
                .parse()
                .map_err(|_| "not a valid nats:// URL".to_string())?;
            shown.push(format!("nats://{}:{}", address.host(), address.port()));
        }
        Ok(Nats {
            url: url.clone(),
            shown: shown.join(","),
            client: OnceCell::new(),
        })
    }

    pub fn shown(&self) -> &str {
        &self.shown
    }

    pub async fn client(&self) -> Result<async_nats::Client, async_nats::ConnectError> {
        self.client
            .get_or_try_init(|| {
                async_nats::ConnectOptions::new()
                    .retry_on_initial_connect()
                    .connect(self.url.expose())
            })
            .await
            .cloned()
    }

    /// A failed publish: NATS errors are about the connection or a missing responder (no
    /// stream for the subject yet), all worth retrying.
    pub fn retry(&self, e: impl std::fmt::Display) -> Attempt {
        Attempt::Retryable {
            reason: format!("nats {}: {e}", self.shown),
            retry_after: None,
            response: None,
        }
    }
}
