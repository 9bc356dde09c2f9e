//! Auth profiles (`resources.auth.NAME`), named by any HTTP component with `auth: NAME`.
//!
//! Kinds: `basic`, `bearer`, `api_key` (a header or a query parameter), `headers` (any fixed
//! set), `hmac` (each request signed with a shared secret: algorithm, header, prefix, hex or
//! base64, and what is signed — `{body}`, `{timestamp}`, `{method}`, `{path}`), and `oauth2` — the client-credentials grant, or the refresh-token grant when a
//! `refresh_token` is given. An OAuth 2.0 token is fetched on first use, cached in memory and
//! fetched again shortly before it expires (a tenth of its lifetime, at most a minute, early);
//! concurrent requests wait for one fetch. A 401 answer drops the token it was sent with, and the
//! request is sent once more with a fresh one. (A refresh token the server rotates is kept in
//! memory only: after a restart the configured one is used again, so a server that revokes
//! rotated-out tokens needs a fresh `refresh_token` in the config.)
//!
//! Credentials go only to the origin the component's URL fixes (its scheme and host must be
//! literal text, not a `{{ }}` part; never across a redirect or to another host's page), header
//! values are marked sensitive, and every secret is a [`Secret`]: it never appears in logs,
//! errors or metrics. A query-parameter key is left out of the URLs weft reports.
//!
//! ```yaml
//! resources:
//!   auth:
//!     crm:
//!       oauth2:
//!         token_url: https://login.example.com/oauth/token
//!         client_id: ${CRM_CLIENT_ID}
//!         client_secret: ${CRM_CLIENT_SECRET}
//!         scopes: [contacts.write]
//!         client_auth: basic          # or `body` (client_id/client_secret in the form)
//!     github: { bearer: "${GITHUB_TOKEN}" }
//!     legacy: { basic: { username: weft, password: "${LEGACY_PASSWORD}" } }
//!     maps: { api_key: { query: key, value: "${MAPS_KEY}" } }   # or `header: X-Api-Key`
//!     partner: { headers: { X-Partner-Id: "42", X-Partner-Key: "${PARTNER_KEY}" } }
//!     signed:
//!       hmac:
//!         secret: "${SIGNING_KEY}"
//!         header: X-Signature
//!         prefix: "sha256="
//!         signed: "{timestamp}.{body}"
//!         timestamp_header: X-Timestamp
//! ```

use std::collections::BTreeMap;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use base64::Engine;
use bytes::Bytes;
use http::{HeaderName, HeaderValue, Method, Request, Uri, header};
use http_body_util::Full;
use serde::Deserialize;
use tokio::sync::Mutex;

use super::http::HttpClient;
use crate::config::BuildError;
use crate::config::Secret;
use weft_store::Store;

/// One profile, by kind.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[schemars(rename = "AuthProfile")]
#[serde(rename_all = "snake_case")]
pub enum Config {
    Basic(BasicConfig),
    Bearer(Secret),
    ApiKey(ApiKeyConfig),
    Headers(BTreeMap<String, Secret>),
    Oauth2(OAuth2Config),
    Hmac(HmacConfig),
}

/// Request signing with a shared secret.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HmacConfig {
    pub secret: Secret,
    /// `sha256` (default), `sha512` or `sha1`.
    #[serde(default = "default_hmac_algorithm")]
    pub algorithm: String,
    /// The header that carries the signature.
    pub header: String,
    /// Written before the signature, e.g. `sha256=`.
    #[serde(default)]
    pub prefix: String,
    /// `hex` (default) or `base64`.
    #[serde(default = "default_hmac_encoding")]
    pub encoding: String,
    /// What is signed: `{body}`, `{timestamp}`, `{method}` and `{path}` (with its query) in any
    /// text, e.g. `"{timestamp}.{body}"`.
    #[serde(default = "default_hmac_signed")]
    pub signed: String,
    /// Send the signing time (Unix seconds) in this header.
    #[serde(default)]
    pub timestamp_header: Option<String>,
}

fn default_hmac_algorithm() -> String {
    "sha256".into()
}
fn default_hmac_encoding() -> String {
    "hex".into()
}
fn default_hmac_signed() -> String {
    "{body}".into()
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct BasicConfig {
    pub username: String,
    pub password: Secret,
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ApiKeyConfig {
    /// Send the key in this header…
    #[serde(default)]
    pub header: Option<String>,
    /// …or in this query parameter.
    #[serde(default)]
    pub query: Option<String>,
    pub value: Secret,
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct OAuth2Config {
    /// The authorization server's token endpoint.
    pub token_url: String,
    pub client_id: String,
    #[serde(default)]
    pub client_secret: Option<Secret>,
    #[serde(default)]
    pub scopes: Vec<String>,
    /// Sent as `audience` when given (some servers want it).
    #[serde(default)]
    pub audience: Option<String>,
    /// Use the refresh-token grant with this token instead of client credentials.
    #[serde(default)]
    pub refresh_token: Option<Secret>,
    /// How the client authenticates to the token endpoint.
    #[serde(default)]
    pub client_auth: ClientAuth,
}

#[derive(Debug, Default, Clone, Copy, Deserialize, PartialEq, Eq, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ClientAuth {
    /// HTTP Basic with the client id and secret (RFC 6749 §2.3.1).
    #[default]
    Basic,
    /// `client_id` and `client_secret` in the form body.
    Body,
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum AuthError {
    /// The token endpoint could not be reached or failed (5xx): try again later.
    #[error("auth `{profile}`: {reason}")]
    Unavailable { profile: String, reason: String },
    /// The token endpoint refused the credentials: retrying will not help.
    #[error("auth `{profile}`: {reason}")]
    Refused { profile: String, reason: String },
}

/// A built profile.
pub struct AuthProfile {
    name: String,
    kind: Kind,
}

enum Kind {
    Headers(Vec<(HeaderName, HeaderValue)>),
    Query {
        name: String,
        value: Secret,
    },
    OAuth2(Box<OAuth2>),
    Hmac(Box<Hmac>),
    /// Several profiles on one request (an OpenAPI requirement naming several schemes).
    All(Vec<Arc<AuthProfile>>),
}

struct Hmac {
    key: ring::hmac::Key,
    header: HeaderName,
    prefix: String,
    base64: bool,
    signed: String,
    timestamp_header: Option<HeaderName>,
}

/// What a signature covers, from the request being made.
pub struct Signed<'a> {
    pub method: &'a Method,
    pub uri: &'a Uri,
    pub body: &'a [u8],
}

impl Hmac {
    fn sign(&self, request: &Signed<'_>) -> Result<Vec<(HeaderName, HeaderValue)>, String> {
        let timestamp = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs())
            .to_string();
        let path = request
            .uri
            .path_and_query()
            .map_or("/", |p| p.as_str())
            .to_string();
        // Placeholders are replaced in one pass, so a body holding `{path}` stays as it is.
        let mut message = Vec::with_capacity(request.body.len() + self.signed.len());
        let mut rest = self.signed.as_str();
        while let Some(open) = rest.find('{') {
            message.extend_from_slice(&rest.as_bytes()[..open]);
            let after = &rest[open..];
            let (part, len): (&[u8], usize) = if after.starts_with("{body}") {
                (request.body, 6)
            } else if after.starts_with("{timestamp}") {
                (timestamp.as_bytes(), 11)
            } else if after.starts_with("{method}") {
                (request.method.as_str().as_bytes(), 8)
            } else if after.starts_with("{path}") {
                (path.as_bytes(), 6)
            } else {
                (b"{", 1)
            };
            message.extend_from_slice(part);
            rest = &after[len..];
        }
        message.extend_from_slice(rest.as_bytes());
        let tag = ring::hmac::sign(&self.key, &message);
        let encoded = if self.base64 {
            base64::engine::general_purpose::STANDARD.encode(tag.as_ref())
        } else {
            tag.as_ref().iter().map(|b| format!("{b:02x}")).collect()
        };
        let mut headers = vec![(
            self.header.clone(),
            sensitive(&format!("{}{encoded}", self.prefix))?,
        )];
        if let Some(name) = &self.timestamp_header {
            headers.push((
                name.clone(),
                HeaderValue::from_str(&timestamp).map_err(|e| e.to_string())?,
            ));
        }
        Ok(headers)
    }
}

/// What one request carries.
pub struct Credentials {
    pub headers: Vec<(HeaderName, HeaderValue)>,
    /// Query parameters to add (name, value).
    pub query: Vec<(String, Secret)>,
    /// The OAuth 2.0 access tokens used, to drop them if they are refused.
    tokens: Vec<Secret>,
}

fn sensitive(value: &str) -> Result<HeaderValue, String> {
    let mut v = HeaderValue::from_str(value)
        .map_err(|_| "has characters HTTP does not allow".to_string())?;
    v.set_sensitive(true);
    Ok(v)
}

impl Config {
    pub fn build(&self, name: &str, http: &HttpClient) -> Result<AuthProfile, Vec<BuildError>> {
        let err = |field: &str, message: String| vec![BuildError::new(field, message)];
        let kind = match self {
            Config::Basic(b) => {
                let pair = format!("{}:{}", b.username, b.password.expose());
                let encoded = base64::engine::general_purpose::STANDARD.encode(pair);
                let value = sensitive(&format!("Basic {encoded}"))
                    .map_err(|e| err("basic.password", format!("the credentials {e}")))?;
                Kind::Headers(vec![(header::AUTHORIZATION, value)])
            }
            Config::Bearer(token) => {
                let value = sensitive(&format!("Bearer {}", token.expose()))
                    .map_err(|e| err("bearer", format!("the token {e}")))?;
                Kind::Headers(vec![(header::AUTHORIZATION, value)])
            }
            Config::ApiKey(k) => match (&k.header, &k.query) {
                (Some(h), None) => {
                    let name = HeaderName::from_bytes(h.as_bytes()).map_err(|_| {
                        err(
                            "api_key.header",
                            format!("`{h}` is not a valid header name"),
                        )
                    })?;
                    let value = sensitive(k.value.expose())
                        .map_err(|e| err("api_key.value", format!("the key {e}")))?;
                    Kind::Headers(vec![(name, value)])
                }
                (None, Some(q)) if !q.is_empty() => Kind::Query {
                    name: q.clone(),
                    value: k.value.clone(),
                },
                _ => {
                    return Err(err(
                        "api_key",
                        "give either `header: NAME` or `query: NAME`".into(),
                    ));
                }
            },
            Config::Headers(map) => {
                let mut headers = Vec::new();
                for (h, v) in map {
                    let field = format!("headers.{h}");
                    let name = HeaderName::from_bytes(h.as_bytes())
                        .map_err(|_| err(&field, format!("`{h}` is not a valid header name")))?;
                    let value =
                        sensitive(v.expose()).map_err(|e| err(&field, format!("the value {e}")))?;
                    headers.push((name, value));
                }
                Kind::Headers(headers)
            }
            Config::Hmac(h) => {
                let algorithm = match h.algorithm.to_ascii_lowercase().as_str() {
                    "sha256" => ring::hmac::HMAC_SHA256,
                    "sha512" => ring::hmac::HMAC_SHA512,
                    "sha1" => ring::hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY,
                    other => {
                        return Err(err(
                            "hmac.algorithm",
                            format!("`{other}`: use sha256, sha512 or sha1"),
                        ));
                    }
                };
                let base64 = match h.encoding.as_str() {
                    "hex" => false,
                    "base64" => true,
                    other => {
                        return Err(err(
                            "hmac.encoding",
                            format!("`{other}`: use hex or base64"),
                        ));
                    }
                };
                let header = HeaderName::from_bytes(h.header.as_bytes()).map_err(|_| {
                    err(
                        "hmac.header",
                        format!("`{}` is not a valid header name", h.header),
                    )
                })?;
                let timestamp_header = match &h.timestamp_header {
                    None => None,
                    Some(t) => Some(HeaderName::from_bytes(t.as_bytes()).map_err(|_| {
                        err(
                            "hmac.timestamp_header",
                            format!("`{t}` is not a valid header name"),
                        )
                    })?),
                };
                sensitive(&format!("{}0", h.prefix))
                    .map_err(|e| err("hmac.prefix", format!("the prefix {e}")))?;
                let mut rest = h.signed.as_str();
                while let Some(open) = rest.find('{') {
                    let after = &rest[open..];
                    let Some(close) = after.find('}') else { break };
                    let name = &after[1..close];
                    if !["body", "timestamp", "method", "path"].contains(&name) {
                        return Err(err(
                            "hmac.signed",
                            format!(
                                "unknown part `{{{name}}}`; use {{body}}, {{timestamp}}, {{method}} or {{path}}"
                            ),
                        ));
                    }
                    rest = &after[close + 1..];
                }
                Kind::Hmac(Box::new(Hmac {
                    key: ring::hmac::Key::new(algorithm, h.secret.expose().as_bytes()),
                    header,
                    prefix: h.prefix.clone(),
                    base64,
                    signed: h.signed.clone(),
                    timestamp_header,
                }))
            }
            Config::Oauth2(o) => {
                let token_url: Uri = o
                    .token_url
                    .parse()
                    .ok()
                    .filter(|u: &Uri| {
                        matches!(u.scheme_str(), Some("http" | "https")) && u.host().is_some()
                    })
                    .ok_or_else(|| {
                        err(
                            "oauth2.token_url",
                            format!("`{}` is not an http(s) URL", o.token_url),
                        )
                    })?;
                Kind::OAuth2(Box::new(OAuth2 {
                    http: http.clone(),
                    token_url,
                    client_id: o.client_id.clone(),
                    client_secret: o.client_secret.clone(),
                    scopes: o.scopes.join(" "),
                    audience: o.audience.clone(),
                    // A public client (no secret) can only name itself in the body.
                    client_auth: if o.client_secret.is_none() {
                        ClientAuth::Body
                    } else {
                        o.client_auth
                    },
                    identity: identity(o),
                    refresh_grant: o.refresh_token.is_some(),
                    store: OnceLock::new(),
                    cache: Mutex::new(Cache {
                        token: None,
                        failed: None,
                        refresh_token: o.refresh_token.clone(),
                        restored: false,
                    }),
                }))
            }
        };
        Ok(AuthProfile {
            name: name.to_string(),
            kind,
        })
    }
}

impl AuthProfile {
    /// The credentials for the next request (fetching an OAuth 2.0 token if none is fresh).
    pub async fn credentials(&self, request: &Signed<'_>) -> Result<Credentials, AuthError> {
        Ok(match &self.kind {
            Kind::Hmac(h) => Credentials {
                headers: h.sign(request).map_err(|reason| AuthError::Refused {
                    profile: self.name.clone(),
                    reason,
                })?,
                query: Vec::new(),
                tokens: Vec::new(),
            },
            Kind::Headers(headers) => Credentials {
                headers: headers.clone(),
                query: Vec::new(),
                tokens: Vec::new(),
            },
            Kind::Query { name, value } => Credentials {
                headers: Vec::new(),
                query: vec![(name.clone(), value.clone())],
                tokens: Vec::new(),
            },
            Kind::OAuth2(o) => {
                let token = o.token(&self.name).await?;
                let value = sensitive(&format!("Bearer {}", token.expose())).map_err(|e| {
                    AuthError::Refused {
                        profile: self.name.clone(),
                        reason: format!("the access token {e}"),
                    }
                })?;
                Credentials {
                    headers: vec![(header::AUTHORIZATION, value)],
                    query: Vec::new(),
                    tokens: vec![token],
                }
            }
            Kind::All(profiles) => {
                let mut all = Credentials {
                    headers: Vec::new(),
                    query: Vec::new(),
                    tokens: Vec::new(),
                };
                for profile in profiles {
                    // Boxed: a profile may hold profiles, so the future is recursive.
                    let one = Box::pin(profile.credentials(request)).await?;
                    all.headers.extend(one.headers);
                    all.query.extend(one.query);
                    all.tokens.extend(one.tokens);
                }
                all
            }
        })
    }

    /// Whether this profile keeps something only the store can carry across restarts: a
    /// refresh token that the server may rotate.
    pub fn wants_store(&self) -> bool {
        match &self.kind {
            Kind::OAuth2(o) => o.refresh_grant,
            Kind::All(profiles) => profiles.iter().any(|p| p.wants_store()),
            _ => false,
        }
    }

    /// Keeps this profile's tokens in `store` from now on (OAuth 2.0 profiles).
    pub fn attach_store(&self, store: &Store) {
        if let Kind::OAuth2(o) = &self.kind {
            let _ = o.store.set(store.clone());
        }
    }

    /// Several profiles applied together, under one name. Refused when two would set the same
    /// header, or when a signature would not cover a key added to the query after it.
    pub fn all(name: String, profiles: Vec<Arc<AuthProfile>>) -> Result<AuthProfile, String> {
        let mut seen: Vec<(HeaderName, &str)> = Vec::new();
        for profile in &profiles {
            for header in profile.header_names() {
                if let Some((_, other)) = seen.iter().find(|(h, _)| *h == header) {
                    return Err(format!(
                        "auth profiles `{other}` and `{}` both set `{header}`",
                        profile.name
                    ));
                }
                seen.push((header, &profile.name));
            }
        }
        let signs = profiles.iter().any(|p| matches!(p.kind, Kind::Hmac(_)));
        if signs && profiles.iter().any(|p| !p.query_params().is_empty()) {
            return Err(
                "an HMAC-signed request cannot also carry a query key: the signature would not cover it"
                    .into(),
            );
        }
        Ok(AuthProfile {
            name,
            kind: Kind::All(profiles),
        })
    }

    /// The headers this profile sets.
    fn header_names(&self) -> Vec<HeaderName> {
        match &self.kind {
            Kind::Headers(headers) => headers.iter().map(|(n, _)| n.clone()).collect(),
            Kind::Query { .. } => Vec::new(),
            Kind::OAuth2(_) => vec![header::AUTHORIZATION],
            Kind::Hmac(h) => std::iter::once(h.header.clone())
                .chain(h.timestamp_header.clone())
                .collect(),
            Kind::All(profiles) => profiles.iter().flat_map(|p| p.header_names()).collect(),
        }
    }

    /// The query parameters that carry keys (query API keys).
    pub fn query_params(&self) -> Vec<&str> {
        match &self.kind {
            Kind::Query { name, .. } => vec![name],
            Kind::All(profiles) => profiles.iter().flat_map(|p| p.query_params()).collect(),
            _ => Vec::new(),
        }
    }

    /// The server answered 401 to `used`: whether a retry with fresh credentials makes sense
    /// (only for OAuth 2.0, whose cached token is dropped here).
    pub async fn refused(&self, used: &Credentials) -> bool {
        match &self.kind {
            Kind::OAuth2(o) if !used.tokens.is_empty() => {
                for token in &used.tokens {
                    o.drop_token(&self.name, token).await;
                }
                true
            }
            Kind::All(profiles) => {
                let mut any = false;
                for profile in profiles {
                    any |= Box::pin(profile.refused(used)).await;
                }
                any
            }
            _ => false,
        }
    }
}

struct Token {
    access: Secret,
    /// When to fetch a new one (shortly before it expires).
    renew_at: Instant,
}

struct Cache {
    token: Option<Token>,
    /// The last failed fetch, remembered for [`FAILURE_MEMORY`].
    failed: Option<(Instant, AuthError)>,
    /// The current refresh token (a server may rotate it with every use).
    refresh_token: Option<Secret>,
    /// Whether the store was consulted for a token saved by an earlier run.
    restored: bool,
}

struct OAuth2 {
    http: HttpClient,
    token_url: Uri,
    client_id: String,
    client_secret: Option<Secret>,
    scopes: String,
    audience: Option<String>,
    client_auth: ClientAuth,
    /// A digest of everything that makes a token (endpoint, client and its secret, scopes,
    /// audience, the configured refresh token): a saved token is used only by the same configuration.
    identity: String,
    /// The refresh-token grant (else client credentials).
    refresh_grant: bool,
    /// Where tokens are kept across restarts, when the engine has a store.
    store: OnceLock<Store>,
    /// Held across a fetch, so concurrent requests wait for one fetch instead of each making one.
    cache: Mutex<Cache>,
}

/// The store namespace of saved tokens (keyed by profile name).
const STORE_NAMESPACE: &str = "oauth2";

fn identity(o: &OAuth2Config) -> String {
    let mut context = ring::digest::Context::new(&ring::digest::SHA256);
    for part in [
        o.token_url.as_str(),
        o.client_id.as_str(),
        &o.scopes.join(" "),
        o.audience.as_deref().unwrap_or(""),
        o.refresh_token.as_ref().map_or("", |t| t.expose()),
        o.client_secret.as_ref().map_or("", |t| t.expose()),
    ] {
        context.update(part.as_bytes());
        context.update(&[0]);
    }
    context
        .finish()
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// A token as saved in the store.
#[derive(serde::Serialize, Deserialize, schemars::JsonSchema)]
struct Saved {
    identity: String,
    access: String,
    expires_at_ms: i64,
    refresh: Option<String>,
}

/// Lifetime assumed when the server does not say (`expires_in` absent); a 401 renews earlier.
const DEFAULT_LIFETIME: Duration = Duration::from_secs(3600);
const TOKEN_TIMEOUT: Duration = Duration::from_secs(30);
/// Bounds on a token's lifetime as the server states it (0 would mean a fetch per request, a
/// huge value an overflow).
const MIN_LIFETIME: Duration = Duration::from_secs(1);
const MAX_LIFETIME: Duration = Duration::from_secs(365 * 24 * 3600);
/// How long before its expiry a token is renewed.
fn early(lifetime: Duration) -> Duration {
    (lifetime / 10).min(Duration::from_secs(60))
}

/// How long a failed fetch answers for the requests behind it.
const FAILURE_MEMORY: Duration = Duration::from_secs(2);

impl OAuth2 {
    async fn token(&self, profile: &str) -> Result<Secret, AuthError> {
        let mut cache = self.cache.lock().await;
        if !cache.restored {
            cache.restored = true;
            self.restore(profile, &mut cache).await;
        }
        if let Some(t) = &cache.token
            && Instant::now() < t.renew_at
        {
            return Ok(t.access.clone());
        }
        // A fetch that just failed is not repeated by every request waiting behind it.
        if let Some((at, error)) = &cache.failed
            && at.elapsed() < FAILURE_MEMORY
        {
            return Err(error.clone());
        }
        let (access, lifetime, rotated) =
            match self.fetch(profile, cache.refresh_token.as_ref()).await {
                Ok(fetched) => fetched,
                Err(e) => {
                    cache.failed = Some((Instant::now(), e.clone()));
                    return Err(e);
                }
            };
        cache.failed = None;
        let lifetime = lifetime.clamp(MIN_LIFETIME, MAX_LIFETIME);
        cache.token = Some(Token {
            access: access.clone(),
            renew_at: Instant::now() + (lifetime - early(lifetime)),
        });
        // Only a refresh grant's answer replaces the refresh token: a client-credentials answer
        // that carries one (some servers send it) must not switch the grant.
        if let Some(rotated) = rotated
            && cache.refresh_token.is_some()
        {
            cache.refresh_token = Some(rotated);
        }
        self.save(profile, &access, lifetime, cache.refresh_token.as_ref())
            .await;
        Ok(access)
    }

    /// Takes up the token (and the rotated refresh token) an earlier run saved, if it was
    /// made by this same configuration. A store that cannot be read costs one fetch, no more.
    async fn restore(&self, profile: &str, cache: &mut Cache) {
        let Some(store) = self.store.get() else {
            return;
        };
        let saved = match store.kv_get(STORE_NAMESPACE, profile, 0).await {
            Ok(Some(bytes)) => serde_json::from_slice::<Saved>(&bytes).ok(),
            Ok(None) => None,
            Err(e) => {
                tracing::warn!(profile, error = %e, "could not read the saved OAuth 2.0 token");
                None
            }
        };
        let Some(saved) = saved.filter(|s| s.identity == self.identity) else {
            return;
        };
        if let (Some(refresh), Some(_)) = (saved.refresh, &cache.refresh_token) {
            cache.refresh_token = Some(Secret::new(refresh));
        }
        let left = saved.expires_at_ms - crate::core::durable::now_ms();
        if left > 0 {
            let left = Duration::from_millis(left as u64);
            if left > early(left) {
                cache.token = Some(Token {
                    access: Secret::new(saved.access),
                    renew_at: Instant::now() + (left - early(left)),
                });
            }
        }
        tracing::debug!(profile, "OAuth 2.0 token taken up from the store");
    }

    async fn save(
        &self,
        profile: &str,
        access: &Secret,
        lifetime: Duration,
        refresh: Option<&Secret>,
    ) {
        let Some(store) = self.store.get() else {
            return;
        };
        let saved = Saved {
            identity: self.identity.clone(),
            access: access.expose().to_string(),
            expires_at_ms: crate::core::durable::now_ms() + lifetime.as_millis() as i64,
            refresh: refresh.map(|r| r.expose().to_string()),
        };
        let bytes = serde_json::to_vec(&saved).unwrap_or_default();
        if let Err(e) = store.kv_put(STORE_NAMESPACE, profile, &bytes, None).await {
            // The token works meanwhile; a rotated refresh token not saved is lost at restart.
            tracing::warn!(profile, error = %e, "could not save the OAuth 2.0 token");
        }
    }

    async fn drop_token(&self, profile: &str, used: &Secret) {
        let mut cache = self.cache.lock().await;
        // Only if nobody replaced it meanwhile: many requests refused at once renew once.
        if cache.token.as_ref().is_some_and(|t| &t.access == used) {
            cache.token = None;
            // Saved as spent too, so a restart before the renewal does not offer it again.
            self.save(
                profile,
                &Secret::new(""),
                Duration::ZERO,
                cache.refresh_token.as_ref(),
            )
            .await;
        }
    }

    /// The token request (built apart from `fetch`: the form serializer is not `Send`).
    fn token_request(
        &self,
        refresh_token: Option<&Secret>,
    ) -> Result<Request<Full<Bytes>>, String> {
        let mut form = form_urlencoded::Serializer::new(String::new());
        match refresh_token {
            Some(rt) => form
                .append_pair("grant_type", "refresh_token")
                .append_pair("refresh_token", rt.expose()),
            None => form.append_pair("grant_type", "client_credentials"),
        };
        if !self.scopes.is_empty() {
            form.append_pair("scope", &self.scopes);
        }
        if let Some(audience) = &self.audience {
            form.append_pair("audience", audience);
        }
        let mut request = Request::builder()
            .method(Method::POST)
            .uri(self.token_url.clone())
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .header(header::ACCEPT, "application/json");
        match (self.client_auth, &self.client_secret) {
            (ClientAuth::Basic, Some(secret)) => {
                // RFC 6749 §2.3.1: both parts form-encoded before the Basic encoding.
                let enc =
                    |s: &str| form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>();
                let pair = format!("{}:{}", enc(&self.client_id), enc(secret.expose()));
                let value = base64::engine::general_purpose::STANDARD.encode(pair);
                let value = sensitive(&format!("Basic {value}"))
                    .map_err(|e| format!("the client credentials {e}"))?;
                request = request.header(header::AUTHORIZATION, value);
            }
            (_, secret) => {
                form.append_pair("client_id", &self.client_id);
                if let Some(secret) = secret {
                    form.append_pair("client_secret", secret.expose());
                }
            }
        }
        request
            .body(Full::new(Bytes::from(form.finish())))
            .map_err(|e| e.to_string())
    }

    async fn fetch(
        &self,
        profile: &str,
        refresh_token: Option<&Secret>,
    ) -> Result<(Secret, Duration, Option<Secret>), AuthError> {
        let unavailable = |reason: String| AuthError::Unavailable {
            profile: profile.to_string(),
            reason,
        };
        let refused = |reason: String| AuthError::Refused {
            profile: profile.to_string(),
            reason,
        };
        let request = self.token_request(refresh_token).map_err(refused)?;
        let response = self
            .http
            .send(request, TOKEN_TIMEOUT, 64 * 1024)
            .await
            .map_err(|e| unavailable(format!("token endpoint {}: {e}", self.token_url)))?;
        let status = response.status();
        // Only the standard error fields (RFC 6749 §5.2): some servers echo the request, and
        // with it the secrets, in their error pages.
        let excerpt = || match serde_json::from_slice::<serde_json::Value>(response.body()) {
            Ok(v) => {
                let field = |k: &str| v.get(k).and_then(|x| x.as_str()).unwrap_or("");
                let text = format!("{} {}", field("error"), field("error_description"));
                let text = text.trim();
                if text.is_empty() {
                    "(no error code)".to_string()
                } else {
                    text.chars().take(200).collect()
                }
            }
            Err(_) => format!("(a {} byte body that is not JSON)", response.body().len()),
        };
        if !status.is_success() {
            let reason = format!(
                "token endpoint {} answered {status}: {}",
                self.token_url,
                excerpt()
            );
            return Err(
                if status.is_server_error() || status.as_u16() == 429 || status.as_u16() == 408 {
                    unavailable(reason)
                } else {
                    refused(reason)
                },
            );
        }
        let body: serde_json::Value = serde_json::from_slice(response.body()).map_err(|e| {
            unavailable(format!(
                "token endpoint {} answered with unreadable JSON: {e}",
                self.token_url
            ))
        })?;
        let access = body
            .get("access_token")
            .and_then(|t| t.as_str())
            .filter(|t| !t.is_empty())
            .ok_or_else(|| {
                refused(format!(
                    "token endpoint {} answered without an access_token",
                    self.token_url
                ))
            })?;
        // Some servers send `expires_in` as a string.
        let lifetime = match body.get("expires_in") {
            Some(serde_json::Value::Number(n)) => n.as_u64(),
            Some(serde_json::Value::String(s)) => s.parse().ok(),
            _ => None,
        }
        .map_or(DEFAULT_LIFETIME, Duration::from_secs);
        let rotated = body
            .get("refresh_token")
            .and_then(|t| t.as_str())
            .map(Secret::new);
        tracing::debug!(profile, lifetime = ?lifetime, "OAuth 2.0 token fetched");
        Ok((Secret::new(access), lifetime, rotated))
    }
}
