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
use std::sync::Arc;

use base64::Engine;
use http::{HeaderName, HeaderValue, header};
use serde::Deserialize;

use super::http::HttpClient;
use crate::config::BuildError;
use crate::config::Secret;
use weft_store::Store;

mod hmac;
mod oauth2;

use hmac::Hmac;
pub use hmac::{HmacConfig, Signed};
use oauth2::OAuth2;
pub use oauth2::{ClientAuth, OAuth2Config};

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
            Config::Hmac(h) => Kind::Hmac(Box::new(h.build()?)),
            Config::Oauth2(o) => Kind::OAuth2(Box::new(OAuth2::new(o, http)?)),
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
                let (name, value) = match &o.header {
                    Some(name) => (name.clone(), sensitive(token.expose())),
                    None => (
                        header::AUTHORIZATION,
                        sensitive(&format!("Bearer {}", token.expose())),
                    ),
                };
                let value = value.map_err(|e| AuthError::Refused {
                    profile: self.name.clone(),
                    reason: format!("the access token {e}"),
                })?;
                Credentials {
                    headers: vec![(name, value)],
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
            Kind::OAuth2(o) => vec![o.header.clone().unwrap_or(header::AUTHORIZATION)],
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
