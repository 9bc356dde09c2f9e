//! The outbound HTTP client: hyper-util's pooled client over rustls (ring); HTTP/2 when a TLS
//! server offers it (ALPN), HTTP/1.1 otherwise.
//!
//! hyper-util rather than reqwest because the client layer dominates the full webhook → API
//! path (about 6 µs per request cheaper here, see `BENCH.md`). One client, and so one connection
//! pool, is shared by every output of the process.

use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use bytes::{Bytes, BytesMut};
use http::{HeaderValue, Uri};
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use hyper_rustls::{HttpsConnector, HttpsConnectorBuilder};
use hyper_util::client::legacy::connect::proxy::Tunnel;
use hyper_util::client::legacy::{Client, connect::HttpConnector};
use hyper_util::rt::TokioExecutor;
use serde::Deserialize;

use super::outbound::{Denied, Guard, Guarded};
use crate::config::BuildError;
use crate::config::units::Dur;

/// `client:` on an HTTP component: how it connects. Left out, the component shares the
/// process's one client (public roots, TLS 1.2+, 10 s to connect).
#[derive(Debug, Default, Deserialize, PartialEq, Eq, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ClientConfig {
    /// PEM file of the CA certificates to trust, instead of the public roots.
    #[serde(default)]
    pub ca_file: Option<String>,
    /// PEM file of the client certificate (chain), for mutual TLS; with `key_file`.
    #[serde(default)]
    pub cert_file: Option<String>,
    /// PEM file of the client certificate's private key.
    #[serde(default)]
    pub key_file: Option<String>,
    /// The lowest TLS version accepted: `"1.2"` (default) or `"1.3"`.
    #[serde(default)]
    pub min_tls: Option<String>,
    /// Time allowed to connect (TCP and TLS handshake aside).
    #[serde(default)]
    pub connect_timeout: Option<Dur>,
    /// Idle connections kept per host for reuse.
    #[serde(default)]
    pub pool_max_idle_per_host: Option<usize>,
    /// An HTTP proxy (`http://[user:password@]host:port`) to tunnel every connection through
    /// (HTTP CONNECT); its credentials go in `Proxy-Authorization`.
    #[serde(default)]
    pub proxy: Option<crate::config::Secret>,
}

const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// A CONNECT tunnel through `proxy` (`http://[user:password@]host:port`). Errors never repeat
/// the URL, which may hold a password.
fn tunnel(proxy: &str, connect: HttpConnector) -> Result<Tunnel<HttpConnector>, String> {
    let url = url::Url::parse(proxy).map_err(|e| format!("the proxy URL does not parse: {e}"))?;
    let mut tunnel = Tunnel::new(proxy_address(&url)?, connect);
    if !url.username().is_empty() {
        let user = percent_decode(url.username());
        let password = percent_decode(url.password().unwrap_or(""));
        let encoded =
            base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
        let value = HeaderValue::from_str(&format!("Basic {encoded}"))
            .map_err(|_| "the proxy credentials are not valid in a header".to_string())?;
        tunnel = tunnel.with_auth(value);
    }
    Ok(tunnel)
}

/// Where the proxy itself listens: its port, or its scheme's (80 for `http://`), whatever the
/// targets' scheme.
fn proxy_address(url: &url::Url) -> Result<Uri, String> {
    if url.scheme() != "http" || url.host_str().is_none() {
        return Err("the proxy must be `http://host:port` (CONNECT tunnels to any target)".into());
    }
    let port = url.port_or_known_default().unwrap_or(80);
    format!("http://{}:{port}", url.host_str().unwrap_or_default())
        .parse()
        .map_err(|_| "the proxy host is not valid".to_string())
}

fn percent_decode(text: &str) -> String {
    // In a URL's user part `+` is itself, not a space as in a form.
    form_urlencoded::parse(format!("x={}", text.replace('+', "%2B")).as_bytes())
        .next()
        .map(|(_, v)| v.into_owned())
        .unwrap_or_default()
}

fn tcp(connect_timeout: Duration) -> HttpConnector {
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    http.set_nodelay(true);
    http.set_connect_timeout(Some(connect_timeout));
    http
}

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("request timed out after {0:?}")]
    Timeout(Duration),
    #[error("{0}")]
    Connect(String),
    /// The outbound guard refused the destination: trying again would not help.
    #[error("{0}")]
    Denied(String),
}

/// Marks an answer whose body was cut short: over the size limit, broken off, or past the
/// deadline (in the answer's extensions).
#[derive(Debug, Clone, Copy)]
pub struct Truncated;

#[derive(Clone)]
pub struct HttpClient {
    inner: Inner,
    /// The outbound guard's rules, shared by every client made from this one.
    guard: Guard,
    /// Answers requests instead of the network (`weft test`), shared like the guard.
    intercept: Intercept,
}

/// What an [`Interceptor`] does with a request.
pub enum Intercepted {
    /// Answer it with this response; nothing goes out.
    Answer(Response<Bytes>),
    /// Fail it for good with this reason; nothing goes out.
    Refuse(String),
    /// Send it; the answer is shown to [`Interceptor::observe`].
    Pass,
}

/// Stands between a client and the network: `weft test` answers HTTP calls from declared or
/// recorded responses through it.
pub trait Interceptor: Send + Sync {
    /// Sees a request (method, URL, headers) and its body before it goes out.
    fn intercept(&self, request: &http::request::Parts, body: &Bytes) -> Intercepted;
    /// Sees the answer to a request it let through.
    fn observe(&self, method: &http::Method, uri: &Uri, body: &Bytes, response: &Response<Bytes>);
}

#[derive(Clone, Default)]
struct Intercept(Arc<std::sync::RwLock<Option<Arc<dyn Interceptor>>>>);

#[derive(Clone)]
enum Inner {
    Direct(Client<HttpsConnector<Guarded<HttpConnector>>, Full<Bytes>>),
    Tunneled(Client<HttpsConnector<Guarded<Tunnel<HttpConnector>>>, Full<Bytes>>),
}

impl Default for HttpClient {
    fn default() -> Self {
        Self::new()
    }
}

impl HttpClient {
    pub fn new() -> HttpClient {
        let guard = Guard::default();
        let https = HttpsConnectorBuilder::new()
            .with_provider_and_webpki_roots(rustls::crypto::ring::default_provider())
            .expect("ring supports the default protocol versions")
            .https_or_http()
            .enable_all_versions()
            .wrap_connector(Guarded::new(
                tcp(DEFAULT_CONNECT_TIMEOUT),
                guard.clone(),
                true,
            ));
        let inner = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(60))
            .build(https);
        HttpClient {
            inner: Inner::Direct(inner),
            guard,
            intercept: Intercept::default(),
        }
    }

    /// Routes every request of this client, and of every client made from it, through
    /// `interceptor` (`weft test`).
    pub fn set_interceptor(&self, interceptor: Arc<dyn Interceptor>) {
        *self.intercept.0.write().expect("intercept lock") = Some(interceptor);
    }

    /// Puts the config's `outbound` rules in force for this client and every client made from
    /// it (see [`super::outbound`]).
    pub fn set_outbound(&self, rules: super::outbound::Outbound) {
        self.guard.set(rules);
    }

    /// The shared client when `config` asks for nothing special, else a client of its own.
    /// Certificate files are read here, so `weft check` reports a missing or bad one.
    pub fn configured(
        shared: &HttpClient,
        config: &ClientConfig,
    ) -> Result<HttpClient, Vec<BuildError>> {
        if *config == ClientConfig::default() {
            return Ok(shared.clone());
        }
        let files = super::tls::TlsFiles {
            ca_file: config.ca_file.clone(),
            cert_file: config.cert_file.clone(),
            key_file: config.key_file.clone(),
        };
        let tls = files.client_config("client", config.min_tls.as_deref())?;
        let err = |field: &str, message: String| vec![BuildError::new(field, message)];
        let connect = tcp(config
            .connect_timeout
            .as_ref()
            .map_or(DEFAULT_CONNECT_TIMEOUT, |d| d.0));
        let https = HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_all_versions();
        let mut builder = Client::builder(TokioExecutor::new());
        builder.pool_idle_timeout(Duration::from_secs(60));
        if let Some(idle) = config.pool_max_idle_per_host {
            builder.pool_max_idle_per_host(idle);
        }
        let guard = shared.guard.clone();
        let inner = match &config.proxy {
            None => Inner::Direct(builder.build(https.wrap_connector(Guarded::new(
                connect,
                guard.clone(),
                true,
            )))),
            Some(proxy) => {
                let tunnel = tunnel(proxy.expose(), connect).map_err(|e| err("client.proxy", e))?;
                Inner::Tunneled(builder.build(https.wrap_connector(Guarded::new(
                    tunnel,
                    guard.clone(),
                    false,
                ))))
            }
        };
        Ok(HttpClient {
            inner,
            guard,
            intercept: shared.intercept.clone(),
        })
    }

    /// Sends `request` and reads at most `body_limit` bytes of the answer, all within `timeout`.
    pub async fn send(
        &self,
        request: Request<Full<Bytes>>,
        timeout: Duration,
        body_limit: usize,
    ) -> Result<Response<Bytes>, ClientError> {
        let interceptor = self.intercept.0.read().expect("intercept lock").clone();
        match interceptor {
            None => self.send_out(request, timeout, body_limit).await,
            // Boxed, as only `weft test` intercepts: inline, its future would size every call's.
            Some(interceptor) => {
                Box::pin(self.send_intercepted(&*interceptor, request, timeout, body_limit)).await
            }
        }
    }

    async fn send_intercepted(
        &self,
        interceptor: &dyn Interceptor,
        request: Request<Full<Bytes>>,
        timeout: Duration,
        body_limit: usize,
    ) -> Result<Response<Bytes>, ClientError> {
        let (parts, body) = request.into_parts();
        let body = body
            .collect()
            .await
            .map(|b| b.to_bytes())
            .unwrap_or_default();
        match interceptor.intercept(&parts, &body) {
            Intercepted::Answer(response) => {
                let (mut parts, body) = response.into_parts();
                if body.len() > body_limit {
                    parts.extensions.insert(Truncated);
                }
                Ok(Response::from_parts(
                    parts,
                    body.slice(..body.len().min(body_limit)),
                ))
            }
            Intercepted::Refuse(reason) => Err(ClientError::Denied(reason)),
            Intercepted::Pass => {
                let (method, uri) = (parts.method.clone(), parts.uri.clone());
                let request = Request::from_parts(parts, Full::new(body.clone()));
                let response = self.send_out(request, timeout, body_limit).await?;
                interceptor.observe(&method, &uri, &body, &response);
                Ok(response)
            }
        }
    }

    async fn send_out(
        &self,
        request: Request<Full<Bytes>>,
        timeout: Duration,
        body_limit: usize,
    ) -> Result<Response<Bytes>, ClientError> {
        let deadline = tokio::time::Instant::now() + timeout;
        let exchange = async {
            match &self.inner {
                Inner::Direct(client) => client.request(request).await,
                Inner::Tunneled(client) => client.request(request).await,
            }
        };
        let response = tokio::time::timeout_at(deadline, exchange)
            .await
            .map_err(|_| ClientError::Timeout(timeout))?
            .map_err(|e| {
                let mut text = e.to_string();
                let mut source = std::error::Error::source(&e);
                while let Some(s) = source {
                    if let Some(denied) = s.downcast_ref::<Denied>() {
                        return ClientError::Denied(denied.to_string());
                    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_proxy_without_a_port_is_reached_on_its_schemes_port() {
        let address = |text: &str| proxy_address(&url::Url::parse(text).unwrap());
        assert_eq!(
            address("http://proxy.internal").unwrap().to_string(),
            "http://proxy.internal:80/"
        );
        assert_eq!(
            address("http://u:p@[::1]:3128").unwrap().to_string(),
            "http://[::1]:3128/"
        );
        assert!(address("https://proxy.internal").is_err());
    }
}
