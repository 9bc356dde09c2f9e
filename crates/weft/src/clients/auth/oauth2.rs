//! `oauth2` auth profiles: the client-credentials or refresh-token grant, the token cached in
//! memory (and in the store's key/value table when the engine has one, so a restart neither
//! fetches a token it still holds nor loses a rotated refresh token), fetched again shortly
//! before it expires, one fetch for every concurrent request.
//!
//! Several processes may share the store (the nodes of a cluster share its key/value). Before
//! fetching, a profile looks at the saved token first and takes it up when another process
//! saved a fresher one. With the refresh-token grant only one process refreshes at a time (it
//! claims `oauth2-refresh/<profile>` while it does), because a server that rotates refresh
//! tokens refuses the old one: the others wait and take up what it saved. A token refused with
//! 401 is marked spent in the store only if the store still holds that token.

use std::sync::OnceLock;
use std::time::{Duration, Instant};

use base64::Engine;
use bytes::Bytes;
use http::{Method, Request, Uri, header};
use http_body_util::Full;
use serde::Deserialize;
use tokio::sync::Mutex;
use weft_store::Store;

use super::{AuthError, sensitive};
use crate::clients::http::HttpClient;
use crate::config::{BuildError, Secret};

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
    /// The header the access token is sent in, bare, instead of `Authorization: Bearer
    /// <token>` (Amazon's Selling Partner API wants `x-amz-access-token`).
    #[serde(default)]
    pub header: Option<String>,
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
    /// The saved token as this process last read or wrote it.
    saved: Option<Vec<u8>>,
}

pub(super) struct OAuth2 {
    http: HttpClient,
    token_url: Uri,
    client_id: String,
    client_secret: Option<Secret>,
    scopes: String,
    audience: Option<String>,
    client_auth: ClientAuth,
    /// Where the token goes: `Authorization` with `Bearer `, or a header of its own, bare.
    pub(super) header: Option<http::HeaderName>,
    /// A digest of everything that makes a token (endpoint, client and its secret, scopes,
    /// audience, the configured refresh token): a saved token is used only by the same configuration.
    identity: String,
    /// The refresh-token grant (else client credentials).
    pub(super) refresh_grant: bool,
    /// Where tokens are kept across restarts, when the engine has a store.
    pub(super) store: OnceLock<Store>,
    /// Held across a fetch, so concurrent requests wait for one fetch instead of each making one.
    cache: Mutex<Cache>,
}

/// The store namespace of saved tokens (keyed by profile name).
const STORE_NAMESPACE: &str = "oauth2";
/// Who is refreshing a profile's token now (keyed by profile name).
const REFRESH_NAMESPACE: &str = "oauth2-refresh";

/// [`OAuth2::refresh_turn`]'s answer.
enum Turn {
    /// This process refreshes; the holder it claimed the turn as.
    Ours(String),
    /// Another process refreshed meanwhile: its token.
    Taken(Secret),
    /// No store to share a turn through, or the client-credentials grant.
    Alone,
}

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
    pub(super) fn new(o: &OAuth2Config, http: &HttpClient) -> Result<OAuth2, Vec<BuildError>> {
        let err = |field: &str, message: String| vec![BuildError::new(field, message)];
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
                    format!(
                        "`{}` is not an http(s) URL",
                        crate::config::secret::redact_url(&o.token_url)
                    ),
                )
            })?;
        let header = o
            .header
            .as_deref()
            .map(|name| {
                http::HeaderName::from_bytes(name.as_bytes())
                    .map_err(|_| err("oauth2.header", format!("`{name}` is not a header name")))
            })
            .transpose()?;
        Ok(OAuth2 {
            http: http.clone(),
            token_url,
            header,
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
                saved: None,
            }),
        })
    }

    pub(super) async fn token(&self, profile: &str) -> Result<Secret, AuthError> {
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
        // Another process sharing the store may have renewed it already.
        if let Some(access) = self.fresher(profile, &mut cache).await {
            return Ok(access);
        }
        let turn = match self.refresh_turn(profile, &mut cache).await {
            Turn::Taken(access) => return Ok(access),
            Turn::Ours(holder) => {
                // Another process may have saved its refresh (and ended its turn) between the
                // look above and this turn: its refresh token is the one that works now.
                if let Some(access) = self.fresher(profile, &mut cache).await {
                    self.end_turn(profile, Some(holder)).await;
                    return Ok(access);
                }
                Some(holder)
            }
            Turn::Alone => None,
        };
        let fetched = self.fetch(profile, cache.refresh_token.as_ref()).await;
        let (access, lifetime, rotated) = match fetched {
            Ok(fetched) => fetched,
            Err(e) => {
                self.end_turn(profile, turn).await;
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
        cache.saved = self
            .save(profile, &access, lifetime, cache.refresh_token.as_ref())
            .await;
        self.end_turn(profile, turn).await;
        Ok(access)
    }

    /// The saved token, taken up when it is good for longer than this process's own.
    async fn fresher(&self, profile: &str, cache: &mut Cache) -> Option<Secret> {
        self.store.get()?;
        self.restore(profile, cache).await;
        cache
            .token
            .as_ref()
            .filter(|t| Instant::now() < t.renew_at)
            .map(|t| t.access.clone())
    }

    /// With the refresh-token grant and a store: this process's turn to refresh, or the token
    /// another process refreshed meanwhile. Waits at most the token request's timeout for the
    /// other; a store that cannot be reached leaves each process on its own.
    async fn refresh_turn(&self, profile: &str, cache: &mut Cache) -> Turn {
        let Some(store) = self.store.get().filter(|_| self.refresh_grant) else {
            return Turn::Alone;
        };
        let holder = format!("{}-{}", std::process::id(), crate::core::clock::now_ms());
        let deadline = Instant::now() + TOKEN_TIMEOUT;
        while Instant::now() < deadline {
            let now = crate::core::clock::now_ms();
            // Longer than a fetch may take, so that the turn does not lapse during one.
            let until = now + 2 * TOKEN_TIMEOUT.as_millis() as i64;
            match store
                .kv_claim(REFRESH_NAMESPACE, profile, holder.as_bytes(), until, now)
                .await
            {
                Ok(None) => return Turn::Ours(holder),
                Ok(Some(_)) => {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    if let Some(access) = self.fresher(profile, cache).await {
                        return Turn::Taken(access);
                    }
                }
                Err(e) => {
                    tracing::warn!(profile, error = %e, "could not take the turn to refresh the OAuth 2.0 token; refreshing without it");
                    return Turn::Alone;
                }
            }
        }
        tracing::warn!(
            profile,
            "another process held the turn to refresh the OAuth 2.0 token for too long; refreshing without it"
        );
        Turn::Alone
    }

    async fn end_turn(&self, profile: &str, turn: Option<String>) {
        if let (Some(store), Some(holder)) = (self.store.get(), turn) {
            let _ = store
                .kv_delete(REFRESH_NAMESPACE, profile, Some(holder.as_bytes()))
                .await;
        }
    }

    /// Takes up the token (and the rotated refresh token) an earlier run saved, if it was
    /// made by this same configuration. A store that cannot be read costs one fetch, no more.
    async fn restore(&self, profile: &str, cache: &mut Cache) {
        let Some(store) = self.store.get() else {
            return;
        };
        let saved = match store.kv_get(STORE_NAMESPACE, profile, 0).await {
            Ok(Some(bytes)) => serde_json::from_slice::<Saved>(&bytes)
                .ok()
                .map(|saved| (saved, bytes)),
            Ok(None) => None,
            Err(e) => {
                tracing::warn!(profile, error = %e, "could not read the saved OAuth 2.0 token");
                None
            }
        };
        let Some((saved, bytes)) = saved.filter(|(s, _)| s.identity == self.identity) else {
            return;
        };
        if cache.saved.as_ref() == Some(&bytes) {
            // What this process wrote or took up last: nothing new.
            return;
        }
        cache.saved = Some(bytes);
        if let (Some(refresh), Some(_)) = (saved.refresh, &cache.refresh_token) {
            cache.refresh_token = Some(Secret::new(refresh));
        }
        let left = saved.expires_at_ms - crate::core::clock::now_ms();
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

    /// Saves a token; returns the bytes saved.
    async fn save(
        &self,
        profile: &str,
        access: &Secret,
        lifetime: Duration,
        refresh: Option<&Secret>,
    ) -> Option<Vec<u8>> {
        let store = self.store.get()?;
        let saved = Saved {
            identity: self.identity.clone(),
            access: access.expose().to_string(),
            expires_at_ms: crate::core::clock::now_ms() + lifetime.as_millis() as i64,
            refresh: refresh.map(|r| r.expose().to_string()),
        };
        let bytes = serde_json::to_vec(&saved).unwrap_or_default();
        match store.kv_put(STORE_NAMESPACE, profile, &bytes, None).await {
            Ok(()) => Some(bytes),
            Err(e) => {
                // The token works meanwhile; a rotated refresh token not saved is lost at restart.
                tracing::warn!(profile, error = %e, "could not save the OAuth 2.0 token");
                None
            }
        }
    }

    pub(super) async fn drop_token(&self, profile: &str, used: &Secret) {
        let mut cache = self.cache.lock().await;
        // Only if nobody replaced it meanwhile: many requests refused at once renew once.
        if cache.token.as_ref().is_some_and(|t| &t.access == used) {
            cache.token = None;
            // Saved as spent too, so a restart before the renewal does not offer it again; but
            // only over the token this process saved or took up (another process sharing the
            // store may have saved a newer one, and its refresh token with it).
            if let (Some(store), Some(read)) = (self.store.get(), cache.saved.clone()) {
                let spent = Saved {
                    identity: self.identity.clone(),
                    access: String::new(),
                    expires_at_ms: 0,
                    refresh: cache.refresh_token.as_ref().map(|r| r.expose().to_string()),
                };
                let bytes = serde_json::to_vec(&spent).unwrap_or_default();
                if let Ok(true) = store
                    .kv_replace(STORE_NAMESPACE, profile, &read, &bytes, None)
                    .await
                {
                    cache.saved = Some(bytes);
                }
            }
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
