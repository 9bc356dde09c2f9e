//! The outbound HTTP client: hyper-util's pooled client over rustls (ring), HTTP/1.1.
//!
//! hyper-util rather than reqwest because the client layer dominates the full webhook → API
//! path (about 6 µs per request cheaper here, see `BENCH.md`). One client, and so one connection
//! pool, is shared by every output of the process.

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use hyper_rustls::{HttpsConnector, HttpsConnectorBuilder};
use hyper_util::client::legacy::{Client, connect::HttpConnector};
use hyper_util::rt::TokioExecutor;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("request timed out after {0:?}")]
    Timeout(Duration),
    #[error("{0}")]
    Connect(String),
}

/// Marks an answer whose body was cut short: over the size limit, broken off, or past the
/// deadline (in the answer's extensions).
#[derive(Debug, Clone, Copy)]
pub struct Truncated;

#[derive(Clone)]
pub struct HttpClient {
    inner: Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
}

impl Default for HttpClient {
    fn default() -> Self {
        Self::new()
    }
}

impl HttpClient {
    pub fn new() -> HttpClient {
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_nodelay(true);
        http.set_connect_timeout(Some(Duration::from_secs(10)));
        let https = HttpsConnectorBuilder::new()
            .with_provider_and_webpki_roots(rustls::crypto::ring::default_provider())
            .expect("ring supports the default protocol versions")
            .https_or_http()
            .enable_http1()
            .wrap_connector(http);
        let inner = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(60))
            .build(https);
        HttpClient { inner }
    }

    /// Sends `request` and reads at most `body_limit` bytes of the answer, all within `timeout`.
    pub async fn send(
        &self,
        request: Request<Full<Bytes>>,
        timeout: Duration,
        body_limit: usize,
    ) -> Result<Response<Bytes>, ClientError> {
        let deadline = tokio::time::Instant::now() + timeout;
        let response = tokio::time::timeout_at(deadline, self.inner.request(request))
            .await
            .map_err(|_| ClientError::Timeout(timeout))?
            .map_err(|e| {
                let mut text = e.to_string();
                let mut source = std::error::Error::source(&e);
                while let Some(s) = source {
                    text = format!("{text}: {s}");
                    source = s.source();
                }
                ClientError::Connect(text)
            })?;
        // The status decides whether the request worked. The body is read only for error
        // messages: at most `body_limit` bytes, and a body that breaks off or runs past the
        // deadline is cut short rather than turning a delivered 2xx into a retry (a duplicate).
        let (mut parts, mut body) = response.into_parts();
        let mut kept = BytesMut::new();
        let read = async {
            loop {
                match body.frame().await {
                    None => return true,
                    Some(Err(_)) => return false,
                    Some(Ok(frame)) => {
                        if let Ok(data) = frame.into_data() {
                            let room = body_limit - kept.len();
                            kept.extend_from_slice(&data[..data.len().min(room)]);
                            if data.len() > room {
                                return false;
                            }
                        }
                    }
                }
            }
        };
        let whole = tokio::time::timeout_at(deadline, read)
            .await
            .unwrap_or(false);
        if !whole {
            parts.extensions.insert(Truncated);
        }
        Ok(Response::from_parts(parts, kept.freeze()))
    }
}
