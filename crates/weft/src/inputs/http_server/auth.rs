//! Inbound auth for `http_server`: API keys, basic auth, HMAC-signed webhooks (generic, or
//! the GitHub, Stripe, Slack, Shopify, Standard Webhooks, Paddle, Twilio, Linear and Square
//! presets) and JWT bearer tokens (see [`super::jwt`]),
//! checked before anything reaches the flow. A request that fails is answered 401 with a short
//! reason (which never repeats a secret), or 503 when weft cannot check it (a JWT key set it
//! could not fetch), and logged; nothing of it is processed. The credential (the API key header or query parameter,
//! the `Authorization` header) is kept out of the message's `%http` metadata.
//!
//! - `api_key`: a key in a `header` (default `X-Api-Key`) or `query` parameter; several `keys`
//!   may be valid at once (rotation). Compared through SHA-256 digests in constant time.
//! - `basic`: `users` by name with their (non-empty) passwords.
//! - `hmac`: the signature of the raw body (and, where the sender signs one, its timestamp),
//!   computed once and compared in constant time. The signature header (and a signed timestamp
//!   within `tolerance`, default 5 m) must be there before the body is read. Standard Webhooks
//!   senders (Svix, Clerk, Resend…) sign `webhook-id`, `webhook-timestamp` and the body with a
//!   `whsec_` secret, base64 after its prefix; their `webhook-signature` may list several
//!   signatures while a secret is rotated. Paddle signs `{ts}:{body}` (`Paddle-Signature:
//!   ts=…;h1=…`). Twilio signs the URL it calls (set as `url`: behind a proxy weft cannot
//!   know it) and the form's parameters, or the URL alone with a JSON body's hash in its
//!   `bodySHA256` parameter. Square signs its notification URL (`url`) followed by the body.
//!   Linear signs the body, which carries its signed time
//!   (`webhookTimestamp`, milliseconds). GitHub's form deliveries (`payload=<JSON>`) become the JSON they carry, and
//!   its bodies may be up to 25 MiB unless `max_body_size` says otherwise.
//! - Replays and retries: a signature is used up once its request is accepted (kept twice
//!   `tolerance`, in this process), and so is the sender's delivery id where it sends one
//!   (`X-GitHub-Delivery`, `X-Shopify-Event-Id`, `webhook-id`, `I-Twilio-Idempotency-Token`,
//!   `Linear-Delivery`, the event id of Stripe, Slack, Paddle and Square, or `delivery_id_header`; kept `delivery_ttl`, default 72 h, in
//!   the store). Either met again is answered with the first answer's status and
//!   `Idempotent-Replayed: true`, and nothing is delivered: a sender retrying after its own
//!   timeout sees success. A copy arriving while the first is being handled gets 409 with
//!   `Retry-After`; a request that failed frees both for the sender's retry; a captured
//!   request replayed past the tolerance is refused (its timestamp is too old).
//!
//! ```yaml
//! input:
//!   http_server:
//!     address: 0.0.0.0:8080
//!     path: /hooks/github
//!     auth: { hmac: { preset: github, secret: "${GH_SECRET}" } }
//! # auth: { hmac: { preset: standard_webhooks, secret: "${SVIX_SECRET}" } }   # whsec_…
//! # auth: { hmac: { preset: paddle, secret: "${PADDLE_WEBHOOK_SECRET}" } }   # pdl_ntfset_…
//! # auth: { hmac: { preset: twilio, secret: "${TWILIO_AUTH_TOKEN}", url: "https://hooks.example.com/sms" } }
//! # auth: { hmac: { preset: linear, secret: "${LINEAR_WEBHOOK_SECRET}" } }
//! # auth: { hmac: { preset: square, secret: "${SQUARE_SIGNATURE_KEY}", url: "https://hooks.example.com/square" } }
//! # auth: { api_key: { header: X-Api-Key, keys: ["${K1}", "${K2}"] } }
//! # auth: { basic: { users: { partner: "${PARTNER_PASSWORD}" } } }
//! # auth: { jwt: { jwks_url: "https://login.example.com/jwks.json",
//! #                issuer: "https://login.example.com/", audience: orders-api } }
//! # auth: { hmac: { secret: "${S}", header: X-Signature, prefix: "sha256=", encoding: hex,
//! #                 algorithm: sha256, timestamp_header: X-Timestamp, signed: "{timestamp}.{body}" } }
//! # auth: { hmac: { secret: "${S}", header: X-Sig, signed: "{header:X-Delivery-Id}.{body}" } }
//! ```

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine;
use http::HeaderMap;
use serde::Deserialize;

use crate::clients::http::HttpClient;
use crate::config::BuildError;
use crate::config::Secret;
use crate::config::units::Dur;

/// One of the ways a caller proves who it is.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[schemars(rename = "InboundAuth")]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Config {
    ApiKey(ApiKeyConfig),
    Basic(BasicConfig),
    Hmac(HmacConfig),
    Jwt(Box<super::jwt::JwtConfig>),
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[schemars(rename = "InboundApiKey")]
#[serde(deny_unknown_fields)]
pub struct ApiKeyConfig {
    /// The header that carries the key (default `X-Api-Key`).
    #[serde(default)]
    pub header: Option<String>,
    /// A query parameter that carries the key instead of a header.
    #[serde(default)]
    pub query: Option<String>,
    /// The keys that are valid.
    pub keys: Vec<Secret>,
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[schemars(rename = "InboundBasic")]
#[serde(deny_unknown_fields)]
pub struct BasicConfig {
    /// Passwords by user name.
    pub users: HashMap<String, Secret>,
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[schemars(rename = "InboundHmac")]
#[serde(deny_unknown_fields)]
pub struct HmacConfig {
    /// `github`, `stripe`, `slack`, `shopify`, `standard_webhooks`, `paddle`, `twilio`,
    /// `linear` or `square`: the sender's documented scheme. For `standard_webhooks` the secret is the `whsec_…` text the
    /// sender gives; for `twilio`, the Auth Token (or SharedKey secret).
    #[serde(default)]
    pub preset: Option<Preset>,
    pub secret: Secret,
    /// The header with the signature (generic scheme).
    #[serde(default)]
    pub header: Option<String>,
    /// Text before the signature in the header, e.g. `sha256=`.
    #[serde(default)]
    pub prefix: Option<String>,
    /// `hex` (default) or `base64`.
    #[serde(default)]
    pub encoding: Option<Encoding>,
    /// `sha256` (default), `sha512` or `sha1`.
    #[serde(default)]
    pub algorithm: Option<String>,
    /// The header with the signed timestamp (seconds since the epoch), if the sender signs one.
    #[serde(default)]
    pub timestamp_header: Option<String>,
    /// What is signed: `{body}` (default) or a layout with `{body}`, and `{timestamp}` or any
    /// request header as `{header:NAME}` (e.g. `"{header:webhook-id}.{timestamp}.{body}"`).
    #[serde(default)]
    pub signed: Option<String>,
    /// How far a signed timestamp may be from now, and how long seen signatures are kept.
    #[serde(default = "default_tolerance")]
    pub tolerance: Dur,
    /// The header with the sender's delivery id, the same on its retries of one delivery (the
    /// presets know theirs; this overrides it).
    #[serde(default)]
    pub delivery_id_header: Option<String>,
    /// How long an accepted delivery's id is remembered (in the store), so that the sender's
    /// retry is answered without delivering it again. Stripe retries for three days.
    #[serde(default = "default_delivery_ttl")]
    pub delivery_ttl: Dur,
    /// `twilio` and `square`: the URL as set up with the sender, which signs it (behind a proxy
    /// it is not the one weft sees). For Twilio without its query: the request's is added.
    #[serde(default)]
    pub url: Option<String>,
}

fn default_delivery_ttl() -> Dur {
    Dur(Duration::from_secs(72 * 3600))
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Preset {
    Github,
    Stripe,
    Slack,
    Shopify,
    StandardWebhooks,
    Paddle,
    Twilio,
    Linear,
    Square,
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Encoding {
    Hex,
    Base64,
}

fn default_tolerance() -> Dur {
    Dur(Duration::from_secs(300))
}

/// A built check.
pub enum Auth {
    ApiKey {
        header: Option<http::HeaderName>,
        query: Option<String>,
        keys: Vec<Secret>,
    },
    Basic(HashMap<String, Secret>),
    Hmac(Box<Hmac>),
    Jwt(Box<super::jwt::Jwt>),
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the keys, passwords or secret.
        f.write_str(match self {
            Auth::ApiKey { .. } => "Auth::ApiKey",
            Auth::Basic(_) => "Auth::Basic",
            Auth::Hmac(_) => "Auth::Hmac",
            Auth::Jwt(_) => "Auth::Jwt",
        })
    }
}

pub struct Hmac {
    key: ring::hmac::Key,
    scheme: Scheme,
    tolerance: Duration,
    seen: Arc<Seen>,
    delivery: DeliveryId,
    delivery_ttl: Duration,
    /// A top-level body field with the signed time in milliseconds, checked against the
    /// tolerance once the signature holds.
    body_timestamp: Option<&'static str>,
}

/// Where a sender puts the id that stays the same across its retries of one delivery.
enum DeliveryId {
    None,
    Header(http::HeaderName),
    /// A top-level field of the JSON body (Stripe's `id`, Slack's `event_id`).
    Field(&'static str),
}

/// Signatures taken (being handled) or used (accepted, with the answer's status), by their
/// bytes in base64, each until it lapses. Bounded: when full, what lapsed goes, then the
/// oldest.
#[derive(Default)]
struct Seen {
    entries: Mutex<HashMap<String, (Instant, Option<http::StatusCode>)>>,
}

/// What a valid signature says about its request.
#[derive(Debug)]
pub enum Verified {
    /// Not seen before: handle the request, then [`Signature::accept`] it.
    New(Signature),
    /// A copy of it is being handled now.
    InFlight,
    /// Accepted before, answered with this status: answer the same, deliver nothing.
    Accepted(http::StatusCode),
}

/// The most signatures remembered.
const MAX_SEEN: usize = 100_000;
/// The most `v1` signatures one Stripe header may carry (rotation needs two or three).
const MAX_CANDIDATES: usize = 8;

/// Stripe's `Stripe-Signature: t=…,v1=…[,v1=…]`, signed `{t}.{body}`, and Paddle's
/// `Paddle-Signature: ts=…;h1=…[;h1=…]`, signed `{ts}:{body}`.
struct Listed {
    header: http::HeaderName,
    separator: char,
    timestamp: &'static str,
    signature: &'static str,
    joiner: u8,
}

/// Where the signature and timestamp are, and what was signed.
enum Scheme {
    /// One header (the first of these that is there), optional prefix, hex or base64;
    /// optionally a timestamp header and a layout.
    Generic {
        header: Vec<http::HeaderName>,
        prefix: String,
        encoding: Encoding,
        timestamp: Option<http::HeaderName>,
        signed: String,
        /// Each `{header:NAME}` of the layout, as written, and the header it names.
        signed_headers: Vec<(String, http::HeaderName)>,
    },
    /// A list of `key=value` items in one header: a timestamp and hex signatures (several
    /// while a secret is rotated), signed `{timestamp}{joiner}{body}`.
    Listed(Listed),
    /// `webhook-signature: v1,<base64> [v1,<base64>…]`, signed
    /// `{webhook-id}.{webhook-timestamp}.{body}`.
    StandardWebhooks,
    /// `X-Twilio-Signature: <base64>` over the URL and the form's parameters.
    Twilio(Box<Twilio>),
}

impl Scheme {
    /// A sender's one-header scheme (the first of `headers` that is there) over `signed`,
    /// which names no other header.
    fn preset(
        headers: &[&'static str],
        prefix: &str,
        encoding: Encoding,
        timestamp: Option<&'static str>,
        signed: String,
    ) -> Scheme {
        Scheme::Generic {
            header: headers
                .iter()
                .map(|h| http::HeaderName::from_static(h))
                .collect(),
            prefix: prefix.into(),
            encoding,
            timestamp: timestamp.map(http::HeaderName::from_static),
            signed,
            signed_headers: Vec::new(),
        }
    }
}

/// Twilio signs the URL it called (with its query) followed by every form parameter, sorted
/// by name, as name and value; a JSON body is vouched for by the `bodySHA256` query parameter
/// instead. HMAC-SHA1 with the Auth Token, or HMAC-SHA256 when
/// `X-Twilio-Webhooks-Signature-Settings` says `algorithm=HMAC_SHA256` (SharedKey webhooks).
struct Twilio {
    /// The URL as set up, and the same with its default port added or dropped: Twilio's own
    /// library accepts either.
    urls: [String; 2],
    sha256: ring::hmac::Key,
}

impl Config {
    /// The largest body the sender of a preset sends, where it is more than the usual default.
    pub fn body_limit(&self) -> Option<usize> {
        match self {
            // "Payloads are capped at 25 MB" (GitHub's webhook documentation).
            Config::Hmac(HmacConfig {
                preset: Some(Preset::Github),
                ..
            }) => Some(25 << 20),
            _ => None,
        }
    }

    /// Whether the sender may post the message as a form with one `payload` field holding
    /// its JSON (GitHub, for a webhook set to `application/x-www-form-urlencoded`).
    pub fn sends_form_payload(&self) -> bool {
        matches!(
            self,
            Config::Hmac(HmacConfig {
                preset: Some(Preset::Github),
                ..
            })
        )
    }

    pub fn build(&self, http: &HttpClient) -> Result<Auth, Vec<BuildError>> {
        match self {
            Config::ApiKey(c) => {
                if c.keys.is_empty() || c.keys.iter().any(|k| k.expose().is_empty()) {
                    return Err(vec![BuildError::new(
                        "api_key.keys",
                        "list at least one key, none empty",
                    )]);
                }
                if c.header.is_some() && c.query.is_some() {
                    return Err(vec![BuildError::new(
                        "api_key.query",
                        "give `header` or `query`, not both",
                    )]);
                }
                let header = match (&c.header, &c.query) {
                    (_, Some(_)) => None,
                    (h, None) => Some(
                        http::HeaderName::from_bytes(
                            h.as_deref().unwrap_or("x-api-key").as_bytes(),
                        )
                        .map_err(|_| {
                            vec![BuildError::new("api_key.header", "not a header name")]
                        })?,
                    ),
                };
                Ok(Auth::ApiKey {
                    header,
                    query: c.query.clone(),
                    keys: c.keys.clone(),
                })
            }
            Config::Basic(c) => {
                if c.users.is_empty() {
                    return Err(vec![BuildError::new(
                        "basic.users",
                        "list at least one user",
                    )]);
                }
                if let Some(user) = c
                    .users
                    .iter()
                    .find(|(u, p)| u.is_empty() || u.contains(':') || p.expose().is_empty())
                    .map(|(u, _)| u)
                {
                    return Err(vec![BuildError::new(
                        &format!("basic.users.{user}"),
                        "a user needs a name without `:` and a non-empty password",
                    )]);
                }
                Ok(Auth::Basic(c.users.clone()))
            }
            Config::Hmac(c) => c.build().map(|h| Auth::Hmac(Box::new(h))),
            Config::Jwt(c) => c.build(http).map(|j| Auth::Jwt(Box::new(j))),
        }
    }
}

impl HmacConfig {
    fn build(&self) -> Result<Hmac, Vec<BuildError>> {
        let err = |field: &str, m: &str| vec![BuildError::new(&format!("hmac.{field}"), m)];
        if self.secret.expose().is_empty() {
            return Err(err("secret", "the secret is empty"));
        }
        let header = |name: &str| {
            http::HeaderName::from_bytes(name.as_bytes())
                .map_err(|_| err("header", "not a header name"))
        };
        let generic_fields = self.header.is_some()
            || self.prefix.is_some()
            || self.encoding.is_some()
            || self.algorithm.is_some()
            || self.timestamp_header.is_some()
            || self.signed.is_some();
        if self.url.is_some() && !matches!(self.preset, Some(Preset::Twilio | Preset::Square)) {
            return Err(err(
                "url",
                "only the twilio and square presets sign the URL",
            ));
        }
        let (algorithm, scheme) = match self.preset {
            Some(_) if generic_fields => {
                return Err(err(
                    "preset",
                    "a preset sets header, prefix, encoding, algorithm and what is signed: drop those",
                ));
            }
            Some(Preset::Square) => {
                // The notification URL, then the body: a URL has no `{` to be read as a
                // placeholder of the layout.
                let url = self
                    .url
                    .as_deref()
                    .filter(|u| {
                        u.parse::<http::Uri>()
                            .is_ok_and(|uri| uri.host().is_some() && uri.scheme().is_some())
                    })
                    .ok_or_else(|| {
                        err(
                            "url",
                            "the square preset needs the notification `url` set up with Square (it signs the URL)",
                        )
                    })?;
                (
                    ring::hmac::HMAC_SHA256,
                    Scheme::preset(
                        &["x-square-hmacsha256-signature"],
                        "",
                        Encoding::Base64,
                        None,
                        format!("{url}{{body}}"),
                    ),
                )
            }
            Some(Preset::Linear) => (
                ring::hmac::HMAC_SHA256,
                Scheme::preset(
                    &["linear-signature"],
                    "",
                    Encoding::Hex,
                    None,
                    "{body}".into(),
                ),
            ),
            Some(Preset::Github) => (
                ring::hmac::HMAC_SHA256,
                Scheme::preset(
                    &["x-hub-signature-256"],
                    "sha256=",
                    Encoding::Hex,
                    None,
                    "{body}".into(),
                ),
            ),
            Some(Preset::Slack) => (
                ring::hmac::HMAC_SHA256,
                Scheme::preset(
                    &["x-slack-signature"],
                    "v0=",
                    Encoding::Hex,
                    Some("x-slack-request-timestamp"),
                    "v0:{timestamp}:{body}".into(),
                ),
            ),
            Some(Preset::Shopify) => (
                ring::hmac::HMAC_SHA256,
                // Events deliveries send it without the `X-`.
                Scheme::preset(
                    &["x-shopify-hmac-sha256", "shopify-hmac-sha256"],
                    "",
                    Encoding::Base64,
                    None,
                    "{body}".into(),
                ),
            ),
            Some(Preset::Twilio) => {
                let Some(url) = &self.url else {
                    return Err(err(
                        "url",
                        "the twilio preset needs the `url` set up with Twilio (it signs the URL)",
                    ));
                };
                let urls = twilio_urls(url).ok_or_else(|| {
                    err(
                        "url",
                        "an http(s) URL with a host and without a query, as set up with Twilio",
                    )
                })?;
                (
                    ring::hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY,
                    Scheme::Twilio(Box::new(Twilio {
                        urls,
                        sha256: ring::hmac::Key::new(
                            ring::hmac::HMAC_SHA256,
                            self.secret.expose().as_bytes(),
                        ),
                    })),
                )
            }
            Some(Preset::Stripe) => (
                ring::hmac::HMAC_SHA256,
                Scheme::Listed(Listed {
                    header: http::HeaderName::from_static("stripe-signature"),
                    separator: ',',
                    timestamp: "t",
                    signature: "v1",
                    joiner: b'.',
                }),
            ),
            Some(Preset::Paddle) => (
                ring::hmac::HMAC_SHA256,
                Scheme::Listed(Listed {
                    header: http::HeaderName::from_static("paddle-signature"),
                    separator: ';',
                    timestamp: "ts",
                    signature: "h1",
                    joiner: b':',
                }),
            ),
            Some(Preset::StandardWebhooks) => (ring::hmac::HMAC_SHA256, Scheme::StandardWebhooks),
            None => {
                let Some(name) = &self.header else {
                    return Err(err("header", "name the signature's header, or a `preset`"));
                };
                let algorithm = match self.algorithm.as_deref().unwrap_or("sha256") {
                    "sha256" => ring::hmac::HMAC_SHA256,
                    "sha512" => ring::hmac::HMAC_SHA512,
                    "sha1" => ring::hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY,
                    _ => return Err(err("algorithm", "sha256, sha512 or sha1")),
                };
                let signed = self.signed.clone().unwrap_or_else(|| "{body}".into());
                if !signed.contains("{body}") {
                    return Err(err("signed", "the signed text must contain `{body}`"));
                }
                if signed.contains("{timestamp}") != self.timestamp_header.is_some() {
                    return Err(err(
                        "timestamp_header",
                        "a signed `{timestamp}` and `timestamp_header` go together",
                    ));
                }
                let mut signed_headers = Vec::new();
                let mut rest = signed.as_str();
                while let Some(at) = rest.find("{header:") {
                    let Some(end) = rest[at..].find('}') else {
                        return Err(err("signed", "`{header:` without its closing `}`"));
                    };
                    let token = &rest[at..at + end + 1];
                    let name = http::HeaderName::from_bytes(&token.as_bytes()[8..token.len() - 1])
                        .map_err(|_| {
                            err(
                                "signed",
                                "`{header:NAME}` needs a header name, e.g. `{header:webhook-id}`",
                            )
                        })?;
                    signed_headers.push((token.to_string(), name));
                    rest = &rest[at + end + 1..];
                }
                (
                    algorithm,
                    Scheme::Generic {
                        header: vec![header(name)?],
                        prefix: self.prefix.clone().unwrap_or_default(),
                        encoding: self.encoding.unwrap_or(Encoding::Hex),
                        timestamp: self.timestamp_header.as_deref().map(header).transpose()?,
                        signed,
                        signed_headers,
                    },
                )
            }
        };
        if self.tolerance.0.is_zero() {
            return Err(err("tolerance", "above zero"));
        }
        if self.delivery_ttl.0.is_zero() {
            return Err(err("delivery_ttl", "above zero"));
        }
        let named = |name: &'static str| DeliveryId::Header(http::HeaderName::from_static(name));
        let delivery = match (&self.delivery_id_header, self.preset) {
            (Some(name), _) => DeliveryId::Header(
                http::HeaderName::from_bytes(name.as_bytes())
                    .map_err(|_| err("delivery_id_header", "not a header name"))?,
            ),
            (None, Some(Preset::Github)) => named("x-github-delivery"),
            // Shopify's guide to duplicates names the event id; the webhook id changes.
            (None, Some(Preset::Shopify)) => named("x-shopify-event-id"),
            (None, Some(Preset::StandardWebhooks)) => named("webhook-id"),
            (None, Some(Preset::Stripe)) => DeliveryId::Field("id"),
            (None, Some(Preset::Paddle | Preset::Slack | Preset::Square)) => {
                DeliveryId::Field("event_id")
            }
            (None, Some(Preset::Twilio)) => named("i-twilio-idempotency-token"),
            (None, Some(Preset::Linear)) => named("linear-delivery"),
            (None, None) => DeliveryId::None,
        };
        let secret = self.secret.expose();
        let key = key_bytes(self.preset == Some(Preset::StandardWebhooks), secret)
            .ok_or_else(|| err("secret", STANDARD_WEBHOOKS_SECRET))?;
        Ok(Hmac {
            key: ring::hmac::Key::new(algorithm, &key),
            scheme,
            tolerance: self.tolerance.0,
            seen: Arc::default(),
            delivery,
            delivery_ttl: self.delivery_ttl.0,
            // Linear signs the time inside the body, in milliseconds.
            body_timestamp: (self.preset == Some(Preset::Linear)).then_some("webhookTimestamp"),
        })
    }
}

/// A valid signature, taken while its request is handled: [`Signature::accept`] uses it up;
/// dropped without that (the request failed), it is free again for the sender's retry.
pub struct Signature {
    key: String,
    seen: Arc<Seen>,
    keep: Duration,
    accepted: bool,
    delivery: Option<(String, Duration)>,
}

impl Signature {
    /// Uses the signature up: a copy of the request is answered `status` from now on.
    pub fn accept(mut self, status: http::StatusCode) {
        self.accepted = true;
        let mut entries = self.seen.entries.lock().unwrap_or_else(|e| e.into_inner());
        entries.insert(
            std::mem::take(&mut self.key),
            (Instant::now() + self.keep, Some(status)),
        );
    }

    /// The sender's delivery id, and how long to remember it once accepted.
    pub fn delivery(&self) -> Option<(&str, Duration)> {
        self.delivery.as_ref().map(|(id, ttl)| (id.as_str(), *ttl))
    }
}

impl Drop for Signature {
    fn drop(&mut self) {
        if !self.accepted {
            let mut entries = self.seen.entries.lock().unwrap_or_else(|e| e.into_inner());
            if entries
                .get(&self.key)
                .is_some_and(|(_, used)| used.is_none())
            {
                entries.remove(&self.key);
            }
        }
    }
}

impl std::fmt::Debug for Signature {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Signature")
    }
}

impl Seen {
    /// Takes `key` for a request being handled; what became of it when it is taken or used
    /// already.
    fn take(&self, key: &str, lapses: Instant) -> Result<(), Verified> {
        let now = Instant::now();
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((until, used)) = entries.get(key)
            && *until > now
        {
            return Err(used.map_or(Verified::InFlight, Verified::Accepted));
        }
        if entries.len() >= MAX_SEEN {
            entries.retain(|_, (until, _)| *until > now);
            if entries.len() >= MAX_SEEN {
                // Still full of live entries: the ones lapsing first go.
                let mut ends: Vec<Instant> = entries.values().map(|(until, _)| *until).collect();
                let cut = *ends.select_nth_unstable(MAX_SEEN / 10).1;
                entries.retain(|_, (until, _)| *until > cut);
            }
        }
        entries.insert(key.to_string(), (lapses, None));
        Ok(())
    }
}

/// Why a request was refused: said to the caller as it is, with its status (401, or 503 when
/// weft itself cannot check, e.g. a key set it could not fetch).
#[derive(Debug, PartialEq, Eq)]
pub struct Refused {
    pub reason: &'static str,
    pub status: http::StatusCode,
}

impl Refused {
    pub fn new(reason: &'static str) -> Refused {
        Refused {
            reason,
            status: http::StatusCode::UNAUTHORIZED,
        }
    }

    pub fn unavailable(reason: &'static str) -> Refused {
        Refused {
            reason,
            status: http::StatusCode::SERVICE_UNAVAILABLE,
        }
    }
}

/// Two byte strings compared in time that depends only on their lengths.
fn equal_tags(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

impl Auth {
    /// Signs a request as the sender of an `hmac` endpoint would ([`Hmac::sign_as_sender`]).
    pub fn sign_as_sender(
        &self,
        headers: &mut HeaderMap,
        body: &[u8],
        now: i64,
        secret: Option<&str>,
    ) -> Result<(), String> {
        match self {
            Auth::Hmac(hmac) => hmac.sign_as_sender(headers, body, now, secret),
            _ => Err("only an `hmac` endpoint's requests are signed; give this one's credentials in `headers`".into()),
        }
    }

    /// The check of what comes before the body: the whole check for keys and basic auth; for
    /// signatures, that the signature (and a signed timestamp within tolerance) is there, so
    /// no unsigned request holds a place while its body is read. A valid JWT's claims.
    pub async fn check_head(
        &self,
        headers: &HeaderMap,
        query: Option<&str>,
    ) -> Result<Option<crate::core::mapping::Value>, Refused> {
        match self {
            Auth::ApiKey {
                header,
                query: param,
                keys,
            } => {
                let given = match (header, param) {
                    (Some(h), _) => headers.get(h).map(|v| v.as_bytes().to_vec()),
                    (None, Some(p)) => query.and_then(|q| {
                        form_urlencoded::parse(q.as_bytes())
                            .find(|(k, _)| k == p)
                            .map(|(_, v)| v.as_bytes().to_vec())
                    }),
                    (None, None) => None,
                };
                let Some(given) = given else {
                    return Err(Refused::new("missing API key"));
                };
                // Every key is compared, so the time taken does not tell which one is close.
                let mut ok = false;
                for key in keys {
                    ok |= key.matches(&given);
                }
                if ok {
                    Ok(None)
                } else {
                    Err(Refused::new("invalid API key"))
                }
            }
            Auth::Basic(users) => {
                let Some(value) = headers
                    .get(http::header::AUTHORIZATION)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.split_once(' '))
                    .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("basic"))
                    .map(|(_, credentials)| credentials)
                else {
                    return Err(Refused::new("missing basic credentials"));
                };
                let decoded = base64::engine::general_purpose::STANDARD
                    .decode(value.trim())
                    .ok()
                    .and_then(|d| String::from_utf8(d).ok())
                    .ok_or(Refused::new("malformed basic credentials"))?;
                let (user, password) = decoded
                    .split_once(':')
                    .ok_or(Refused::new("malformed basic credentials"))?;
                let ok = match users.get(user) {
                    Some(expected) => expected.matches(password.as_bytes()),
                    None => {
                        // An unknown user costs the same comparison as a known one.
                        let dummy = Secret::new("\0unknown user");
                        std::hint::black_box(dummy.matches(password.as_bytes()));
                        false
                    }
                };
                if ok {
                    Ok(None)
                } else {
                    Err(Refused::new("invalid credentials"))
                }
            }
            Auth::Hmac(h) => h
                .parse(headers, chrono::Utc::now().timestamp())
                .map(|_| None),
            Auth::Jwt(j) => j.check(headers).await.map(Some),
        }
    }

    /// The check of a signature over the raw body (signatures only). A new signature is taken
    /// while the request is handled: [`Signature::accept`] it once the request is accepted.
    pub fn check_body(
        &self,
        headers: &HeaderMap,
        query: Option<&str>,
        body: &[u8],
    ) -> Result<Option<Verified>, Refused> {
        let Auth::Hmac(h) = self else {
            return Ok(None);
        };
        h.verify(headers, query, body, chrono::Utc::now().timestamp())
            .map(Some)
    }

    /// Whether accepted deliveries are remembered by the sender's delivery id, in the store.
    pub fn keeps_deliveries(&self) -> bool {
        matches!(self, Auth::Hmac(h) if !matches!(h.delivery, DeliveryId::None))
    }

    /// The header that carries the credential, kept out of the message's metadata.
    pub fn secret_header(&self) -> Option<&http::HeaderName> {
        match self {
            Auth::ApiKey { header, .. } => header.as_ref(),
            Auth::Basic(_) | Auth::Jwt(_) => Some(&http::header::AUTHORIZATION),
            Auth::Hmac(_) => None,
        }
    }

    /// The query parameter that carries the credential, kept out of the message's metadata.
    pub fn secret_query(&self) -> Option<&str> {
        match self {
            Auth::ApiKey { query, .. } => query.as_deref(),
            _ => None,
        }
    }
}

fn header_text<'h>(headers: &'h HeaderMap, name: &http::HeaderName) -> Option<&'h str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// What a signed request's headers say: candidate signatures, and the signed timestamp (and
/// message id) as written (they are signed as the text they were sent as).
struct Claimed<'h> {
    signatures: Vec<Vec<u8>>,
    timestamp: Option<&'h str>,
    id: Option<&'h str>,
}

impl Hmac {
    /// Reads the signature headers, and checks a signed timestamp against the tolerance.
    fn parse<'h>(&self, headers: &'h HeaderMap, now: i64) -> Result<Claimed<'h>, Refused> {
        let claimed = match &self.scheme {
            Scheme::Generic {
                header,
                prefix,
                encoding,
                timestamp,
                signed_headers,
                ..
            } => {
                // Checked here so that no request without them holds a place while its body
                // is read.
                if signed_headers
                    .iter()
                    .any(|(_, name)| header_text(headers, name).is_none())
                {
                    return Err(Refused::new("missing signed header"));
                }
                let value = header
                    .iter()
                    .find_map(|name| header_text(headers, name))
                    .ok_or(Refused::new("missing signature header"))?;
                let value = value
                    .trim()
                    .strip_prefix(prefix.as_str())
                    .ok_or(Refused::new("malformed signature"))?;
                let signature =
                    decode(value, *encoding).ok_or(Refused::new("malformed signature"))?;
                let timestamp = match timestamp {
                    Some(name) => Some(
                        header_text(headers, name)
                            .map(str::trim)
                            .ok_or(Refused::new("missing or malformed signature timestamp"))?,
                    ),
                    None => None,
                };
                Claimed {
                    signatures: vec![signature],
                    timestamp,
                    id: None,
                }
            }
            Scheme::Listed(listed) => {
                let value = header_text(headers, &listed.header)
                    .ok_or(Refused::new("missing signature header"))?;
                let mut timestamp = None;
                let mut signatures = Vec::new();
                for item in value.split(listed.separator) {
                    match item.trim().split_once('=') {
                        Some((key, t)) if key == listed.timestamp => timestamp = Some(t),
                        Some((key, s)) if key == listed.signature => {
                            if signatures.len() == MAX_CANDIDATES {
                                return Err(Refused::new("too many signatures"));
                            }
                            signatures.push(
                                decode(s, Encoding::Hex)
                                    .ok_or(Refused::new("malformed signature"))?,
                            );
                        }
                        _ => {}
                    }
                }
                if signatures.is_empty() {
                    return Err(Refused::new("missing signature"));
                }
                Claimed {
                    signatures,
                    timestamp: Some(
                        timestamp
                            .ok_or(Refused::new("missing or malformed signature timestamp"))?,
                    ),
                    id: None,
                }
            }
            Scheme::Twilio(_) => {
                let value = header_text(
                    headers,
                    &http::HeaderName::from_static("x-twilio-signature"),
                )
                .ok_or(Refused::new("missing signature header"))?;
                Claimed {
                    signatures: vec![
                        decode(value, Encoding::Base64)
                            .ok_or(Refused::new("malformed signature"))?,
                    ],
                    timestamp: None,
                    id: None,
                }
            }
            Scheme::StandardWebhooks => {
                let named = |name: &'static str| {
                    header_text(headers, &http::HeaderName::from_static(name)).map(str::trim)
                };
                let value =
                    named("webhook-signature").ok_or(Refused::new("missing signature header"))?;
                let id = named("webhook-id").ok_or(Refused::new("missing webhook-id"))?;
                let timestamp = named("webhook-timestamp")
                    .ok_or(Refused::new("missing or malformed signature timestamp"))?;
                // Space-separated `version,signature` pairs; only `v1` (HMAC-SHA256) is known.
                let mut signatures = Vec::new();
                for item in value.split_ascii_whitespace() {
                    let Some(("v1", signature)) = item.split_once(',') else {
                        continue;
                    };
                    if signatures.len() == MAX_CANDIDATES {
                        return Err(Refused::new("too many signatures"));
                    }
                    signatures.push(
                        decode(signature, Encoding::Base64)
                            .ok_or(Refused::new("malformed signature"))?,
                    );
                }
                if signatures.is_empty() {
                    return Err(Refused::new("missing signature"));
                }
                Claimed {
                    signatures,
                    timestamp: Some(timestamp),
                    id: Some(id),
                }
            }
        };
        if let Some(text) = claimed.timestamp {
            let ts = text
                .parse::<i64>()
                .map_err(|_| Refused::new("missing or malformed signature timestamp"))?;
            if now.abs_diff(ts) > self.tolerance.as_secs() {
                return Err(Refused::new("signature timestamp outside the tolerance"));
            }
        }
        Ok(claimed)
    }

    /// What the sender signed, for every scheme but Twilio's: the layout filled in, or the
    /// timestamp (and Standard Webhooks' id) joined to the body.
    fn signed_text(&self, headers: &HeaderMap, stamp: &str, id: &str, body: &[u8]) -> Vec<u8> {
        let mut signed = Vec::with_capacity(body.len() + 32);
        match &self.scheme {
            Scheme::Generic {
                signed: layout,
                signed_headers,
                ..
            } => {
                // One pass over the layout: a header's value is never read as a placeholder.
                let fill = |text: &str| {
                    let mut out = String::with_capacity(text.len() + 64);
                    let mut rest = text;
                    while let Some(at) = rest.find('{') {
                        out.push_str(&rest[..at]);
                        let tail = &rest[at..];
                        if let Some(after) = tail.strip_prefix("{timestamp}") {
                            out.push_str(stamp);
                            rest = after;
                        } else if let Some((token, name)) = signed_headers
                            .iter()
                            .find(|(t, _)| tail.starts_with(t.as_str()))
                        {
                            out.push_str(header_text(headers, name).unwrap_or(""));
                            rest = &tail[token.len()..];
                        } else {
                            out.push('{');
                            rest = &tail[1..];
                        }
                    }
                    out.push_str(rest);
                    out
                };
                let (before, after) = layout.split_once("{body}").unwrap_or((layout, ""));
                signed.extend_from_slice(fill(before).as_bytes());
                signed.extend_from_slice(body);
                signed.extend_from_slice(fill(after).as_bytes());
            }
            Scheme::Listed(listed) => {
                signed.extend_from_slice(stamp.as_bytes());
                signed.push(listed.joiner);
                signed.extend_from_slice(body);
            }
            Scheme::StandardWebhooks => {
                signed.extend_from_slice(id.as_bytes());
                signed.push(b'.');
                signed.extend_from_slice(stamp.as_bytes());
                signed.push(b'.');
                signed.extend_from_slice(body);
            }
            Scheme::Twilio(_) => {}
        }
        signed
    }

    /// Signs a request as its sender would, at `now`, adding the signature (and timestamp)
    /// headers: what `sign:` in a `weft test` request does; with the endpoint's secret, or
    /// another (`secret`, as the sender gives it) to test a forgery. Headers the scheme signs
    /// and the test gave (a timestamp, a `webhook-id`) are signed as given.
    pub fn sign_as_sender(
        &self,
        headers: &mut HeaderMap,
        body: &[u8],
        now: i64,
        secret: Option<&str>,
    ) -> Result<(), String> {
        if self.body_timestamp.is_some() {
            return Err("the linear preset signs a time inside the body: `sign` cannot set it; give the `Linear-Signature` header".into());
        }
        let key = match secret {
            None => self.key.clone(),
            Some(secret) => {
                let standard = matches!(self.scheme, Scheme::StandardWebhooks);
                let bytes = key_bytes(standard, secret).ok_or(STANDARD_WEBHOOKS_SECRET)?;
                ring::hmac::Key::new(self.key.algorithm(), &bytes)
            }
        };
        let set = |headers: &mut HeaderMap, name: &http::HeaderName, value: String| {
            let value = http::HeaderValue::from_str(&value).map_err(|e| e.to_string())?;
            headers.insert(name.clone(), value);
            Ok::<(), String>(())
        };
        let now = now.to_string();
        match &self.scheme {
            Scheme::Generic {
                header,
                prefix,
                encoding,
                timestamp,
                signed_headers,
                ..
            } => {
                if let Some(name) = timestamp
                    && !headers.contains_key(name)
                {
                    set(headers, name, now)?;
                }
                if let Some((_, name)) = signed_headers
                    .iter()
                    .find(|(_, name)| header_text(headers, name).is_none())
                {
                    return Err(format!("the signed header `{name}` is not among the request's `headers`"));
                }
                let stamp = timestamp
                    .as_ref()
                    .and_then(|name| header_text(headers, name))
                    .map_or("", str::trim)
                    .to_string();
                let tag = ring::hmac::sign(&key, &self.signed_text(headers, &stamp, "", body));
                set(headers, &header[0], format!("{prefix}{}", encode(tag.as_ref(), *encoding)))
            }
            Scheme::Listed(listed) => {
                let tag = ring::hmac::sign(&key, &self.signed_text(headers, &now, "", body));
                let value = format!(
                    "{}={now}{}{}={}",
                    listed.timestamp,
                    listed.separator,
                    listed.signature,
                    encode(tag.as_ref(), Encoding::Hex)
                );
                set(headers, &listed.header, value)
            }
            Scheme::StandardWebhooks => {
                let named = http::HeaderName::from_static;
                let (id_header, stamp_header) = (named("webhook-id"), named("webhook-timestamp"));
                if !headers.contains_key(&id_header) {
                    // A fresh id per signed request; a test that means a retry gives its own.
                    static SENT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
                    let n = SENT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    set(headers, &id_header, format!("msg_weft_test_{now}_{n}"))?;
                }
                if !headers.contains_key(&stamp_header) {
                    set(headers, &stamp_header, now)?;
                }
                // Read as the verifier reads them, trimmed.
                let id = header_text(headers, &id_header).map_or("", str::trim).to_string();
                let stamp = header_text(headers, &stamp_header)
                    .map_or("", str::trim)
                    .to_string();
                let tag = ring::hmac::sign(&key, &self.signed_text(headers, &stamp, &id, body));
                let value = format!("v1,{}", encode(tag.as_ref(), Encoding::Base64));
                set(headers, &named("webhook-signature"), value)
            }
            Scheme::Twilio(_) => Err("the twilio preset signs the URL Twilio calls: `sign` cannot; give the `X-Twilio-Signature` header".into()),
        }
    }

    fn verify(
        &self,
        headers: &HeaderMap,
        query: Option<&str>,
        body: &[u8],
        now: i64,
    ) -> Result<Verified, Refused> {
        let claimed = self.parse(headers, now)?;
        let stamp = claimed.timestamp.unwrap_or("");
        // A tag is computed once (Twilio: once per form of its URL), whatever the number of
        // candidate signatures.
        let tags = match &self.scheme {
            Scheme::Twilio(twilio) => twilio.tags(&self.key, headers, query, body)?,
            _ => vec![ring::hmac::sign(
                &self.key,
                &self.signed_text(headers, stamp, claimed.id.unwrap_or(""), body),
            )],
        };
        let valid = claimed
            .signatures
            .iter()
            .fold(None, |found, s| match found {
                None if tags.iter().any(|tag| equal_tags(tag.as_ref(), s)) => Some(s),
                other => other,
            });
        let Some(valid) = valid else {
            return Err(Refused::new("invalid signature"));
        };
        if let Some(field) = self.body_timestamp {
            let ms = top_level(body, field)
                .and_then(|v| v.as_i64())
                .ok_or(Refused::new("missing or malformed signature timestamp"))?;
            if (now * 1000).abs_diff(ms) > self.tolerance.as_millis() as u64 {
                return Err(Refused::new("signature timestamp outside the tolerance"));
            }
        }
        // Keyed by the decoded bytes, so a re-encoding is the same signature. Kept twice the
        // tolerance: a timestamp may be up to `tolerance` ahead of this clock.
        let key = base64::engine::general_purpose::STANDARD.encode(valid);
        let keep = self.tolerance * 2;
        if let Err(again) = self.seen.take(&key, Instant::now() + keep) {
            return Ok(again);
        }
        Ok(Verified::New(Signature {
            key,
            seen: self.seen.clone(),
            keep,
            accepted: false,
            delivery: self
                .delivery_id(headers, body)
                .map(|id| (id, self.delivery_ttl)),
        }))
    }

    /// The sender's id of this delivery, if it sends one that fits a store key.
    fn delivery_id(&self, headers: &HeaderMap, body: &[u8]) -> Option<String> {
        let id = match &self.delivery {
            DeliveryId::None => return None,
            DeliveryId::Header(name) => header_text(headers, name)?.trim().to_string(),
            DeliveryId::Field(field) => top_level_text(body, field)?,
        };
        (!id.is_empty() && id.len() <= 200 && id.bytes().all(|b| b.is_ascii_graphic()))
            .then_some(id)
    }
}

/// The URL as set up with Twilio, and the same with its default port added (or dropped, if
/// it names it); `None` unless it is an http(s) URL with a host and no query.
fn twilio_urls(url: &str) -> Option<[String; 2]> {
    let uri: http::Uri = url.parse().ok()?;
    let scheme = uri
        .scheme_str()
        .filter(|s| matches!(*s, "http" | "https"))?;
    let host = uri.host()?;
    if uri.query().is_some() || url.contains('#') {
        return None;
    }
    // The path as written: `http::Uri` gives `/` for none, which Twilio would not have signed.
    let after_authority = url
        .split_once("://")
        .map_or("", |(_, rest)| rest.find('/').map_or("", |at| &rest[at..]));
    let other = match uri.port_u16() {
        Some(_) => format!("{scheme}://{host}{after_authority}"),
        None => {
            let default = if scheme == "https" { 443 } else { 80 };
            format!("{scheme}://{host}:{default}{after_authority}")
        }
    };
    Some([url.to_string(), other])
}

impl Twilio {
    /// The tags of what Twilio would have signed for this request, one per form of the URL.
    fn tags(
        &self,
        sha1: &ring::hmac::Key,
        headers: &HeaderMap,
        query: Option<&str>,
        body: &[u8],
    ) -> Result<Vec<ring::hmac::Tag>, Refused> {
        let settings = header_text(
            headers,
            &http::HeaderName::from_static("x-twilio-webhooks-signature-settings"),
        )
        .unwrap_or("");
        let algorithm = settings
            .split(',')
            .filter_map(|part| part.split_once('='))
            .find(|(name, _)| name.trim() == "algorithm")
            .map(|(_, value)| value.trim().to_ascii_uppercase());
        let key = match algorithm.as_deref() {
            None | Some("" | "HMAC_SHA1") => sha1,
            Some("HMAC_SHA256") => &self.sha256,
            Some(_) => return Err(Refused::new("unsupported signature algorithm")),
        };
        let query = query.filter(|q| !q.is_empty());
        let body_hash = query.and_then(|q| {
            form_urlencoded::parse(q.as_bytes())
                .find(|(name, _)| name == "bodySHA256")
                .map(|(_, value)| value.into_owned())
        });
        let mut params = String::new();
        match body_hash {
            // A JSON body: the URL is signed, and its hash vouches for the body.
            Some(hash) => {
                let digest = ring::digest::digest(&ring::digest::SHA256, body);
                let hex: String = digest.as_ref().iter().map(|b| format!("{b:02x}")).collect();
                if !equal_tags(hex.as_bytes(), hash.to_ascii_lowercase().as_bytes()) {
                    return Err(Refused::new("invalid signature"));
                }
            }
            None if matches!(
                crate::core::body::kind(header_text(headers, &http::header::CONTENT_TYPE)),
                crate::core::body::Kind::Form
            ) =>
            {
                // Sorted by name; a name given several times, each distinct value in order.
                let mut sorted = std::collections::BTreeMap::<String, BTreeSet<String>>::new();
                for (name, value) in form_urlencoded::parse(body) {
                    sorted
                        .entry(name.into_owned())
                        .or_default()
                        .insert(value.into_owned());
                }
                for (name, values) in &sorted {
                    for value in values {
                        params.push_str(name);
                        params.push_str(value);
                    }
                }
            }
            None => {}
        }
        Ok(self
            .urls
            .iter()
            .map(|url| {
                let mut text = String::with_capacity(url.len() + params.len() + 64);
                text.push_str(url);
                if let Some(query) = query {
                    text.push('?');
                    text.push_str(query);
                }
                text.push_str(&params);
                ring::hmac::sign(key, text.as_bytes())
            })
            .collect())
    }
}

/// The text of one top-level field of a JSON object.
fn top_level_text(body: &[u8], field: &str) -> Option<String> {
    match top_level(body, field)? {
        serde_json::Value::String(text) => Some(text),
        _ => None,
    }
}

/// One top-level field of a JSON object, the rest of the body skipped, not built.
fn top_level(body: &[u8], field: &str) -> Option<serde_json::Value> {
    struct Find<'f>(&'f str);
    impl<'de> serde::de::Visitor<'de> for Find<'_> {
        type Value = Option<serde_json::Value>;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a JSON object")
        }
        fn visit_map<A: serde::de::MapAccess<'de>>(
            self,
            mut map: A,
        ) -> Result<Self::Value, A::Error> {
            let mut found = None;
            while let Some(key) = map.next_key::<std::borrow::Cow<'de, str>>()? {
                if key == self.0 && found.is_none() {
                    found = Some(map.next_value::<serde_json::Value>()?);
                } else {
                    map.next_value::<serde::de::IgnoredAny>()?;
                }
            }
            Ok(found)
        }
    }
    use serde::Deserializer;
    serde_json::Deserializer::from_slice(body)
        .deserialize_map(Find(field))
        .ok()
        .flatten()
}

const STANDARD_WEBHOOKS_SECRET: &str =
    "a Standard Webhooks secret is `whsec_` and base64, as the sender gives it";

/// The HMAC key of a secret as the sender gives it: a Standard Webhooks secret's bytes are the
/// base64 after its prefix; any other secret is its own bytes.
fn key_bytes(standard_webhooks: bool, secret: &str) -> Option<Vec<u8>> {
    if standard_webhooks {
        crate::clients::sign::standard_webhooks_key(secret)
    } else {
        Some(secret.as_bytes().to_vec())
    }
}

fn encode(bytes: &[u8], encoding: Encoding) -> String {
    match encoding {
        Encoding::Base64 => base64::engine::general_purpose::STANDARD.encode(bytes),
        Encoding::Hex => bytes.iter().map(|b| format!("{b:02x}")).collect(),
    }
}

fn decode(text: &str, encoding: Encoding) -> Option<Vec<u8>> {
    match encoding {
        Encoding::Base64 => base64::engine::general_purpose::STANDARD
            .decode(text.trim())
            .ok(),
        Encoding::Hex => {
            let text = text.trim();
            if !text.len().is_multiple_of(2) || text.len() > 256 {
                return None;
            }
            (0..text.len())
                .step_by(2)
                .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
                .collect()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(bytes: &[u8]) -> String {
        encode(bytes, Encoding::Hex)
    }

    fn sign(secret: &str, text: &[u8]) -> Vec<u8> {
        let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret.as_bytes());
        ring::hmac::sign(&key, text).as_ref().to_vec()
    }

    fn preset(preset: Preset, secret: &str) -> HmacConfig {
        HmacConfig {
            preset: Some(preset),
            secret: Secret::new(secret),
            header: None,
            prefix: None,
            encoding: None,
            algorithm: None,
            timestamp_header: None,
            signed: None,
            tolerance: default_tolerance(),
            delivery_id_header: None,
            delivery_ttl: default_delivery_ttl(),
            url: None,
        }
    }

    fn new(verified: Result<Verified, Refused>) -> Signature {
        match verified {
            Ok(Verified::New(signature)) => signature,
            other => panic!("not a new signature: {other:?}"),
        }
    }

    fn preset_config(preset: Preset) -> HmacConfig {
        self::preset(preset, "token")
    }

    fn hmac(yaml_preset: Preset) -> Hmac {
        preset(yaml_preset, "whsec_test").build().unwrap()
    }

    fn headers(pairs: &[(&str, String)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(
                http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        h
    }

    #[test]
    fn a_standard_webhooks_secret_is_the_base64_after_its_prefix() {
        let config = |secret: &str| preset(Preset::StandardWebhooks, secret);
        for bad in ["whsec_not base64!", "whsec_", "plain text"] {
            let errors = config(bad).build().err().expect(bad);
            assert_eq!(errors[0].field, "hmac.secret", "{bad}");
            assert!(
                bad == "whsec_" || !errors[0].message.contains(bad),
                "the secret is not repeated"
            );
        }
        // The key is the decoded bytes: a signature over them verifies.
        let h = config("whsec_c2VjcmV0IGJ5dGVz").build().unwrap();
        let body = b"{}";
        let now = 1_700_000_000;
        let tag = ring::hmac::sign(
            &ring::hmac::Key::new(ring::hmac::HMAC_SHA256, b"secret bytes"),
            format!("msg_1.{now}.{{}}").as_bytes(),
        );
        let value = format!(
            "v1,{}",
            base64::engine::general_purpose::STANDARD.encode(tag.as_ref())
        );
        let ok = headers(&[
            ("webhook-id", "msg_1".into()),
            ("webhook-timestamp", now.to_string()),
            ("webhook-signature", value),
        ]);
        let signature = new(h.verify(&ok, None, body, now));
        assert_eq!(signature.delivery().map(|(id, _)| id), Some("msg_1"));
        signature.accept(http::StatusCode::OK);
    }

    #[test]
    fn a_request_signed_as_its_sender_would_verifies_and_a_changed_body_does_not() {
        let mut generic = preset(Preset::Github, "s3cret");
        generic.preset = None;
        generic.header = Some("X-Sig".into());
        generic.prefix = Some("sha512=".into());
        generic.algorithm = Some("sha512".into());
        generic.encoding = Some(Encoding::Base64);
        generic.timestamp_header = Some("X-Sent-At".into());
        generic.signed = Some("{header:X-Delivery}.{timestamp}.{body}".into());
        let mut configs: Vec<HmacConfig> = [
            Preset::Github,
            Preset::Stripe,
            Preset::Slack,
            Preset::Shopify,
            Preset::StandardWebhooks,
            Preset::Paddle,
        ]
        .into_iter()
        .map(|p| preset(p, "whsec_c2VjcmV0IGJ5dGVz"))
        .collect();
        let mut square = preset(Preset::Square, "key");
        square.url = Some("https://hooks.example.com/square".into());
        configs.extend([generic, square]);
        let now = 1_700_000_000;
        for config in configs {
            let what = format!("{:?}", config.preset);
            let h = config.build().unwrap();
            let body = br#"{"id":"evt_1","event_id":"e1"}"#;
            let mut signed = headers(&[("x-delivery", "d-1".into())]);
            h.sign_as_sender(&mut signed, body, now, None).unwrap();
            assert!(signed.len() > 1, "{what}: {signed:?}");
            new(h.verify(&signed, None, body, now)).accept(http::StatusCode::OK);
            assert!(
                h.verify(&signed, None, br#"{"id":"evt_2"}"#, now).is_err(),
                "{what}: another body"
            );
            let mut forged = headers(&[("x-delivery", "d-1".into())]);
            h.sign_as_sender(&mut forged, body, now + 1, Some("whsec_b3RoZXIgYnl0ZXM="))
                .unwrap();
            assert!(
                matches!(h.verify(&forged, None, body, now + 1), Err(r) if r.reason == "invalid signature"),
                "{what}: another secret"
            );
        }
        for unsigned in [Preset::Twilio, Preset::Linear] {
            let mut config = preset(unsigned, "t");
            config.url =
                (unsigned == Preset::Twilio).then(|| "https://hooks.example.com/in".into());
            let error = config
                .build()
                .unwrap()
                .sign_as_sender(&mut HeaderMap::new(), b"{}", now, None)
                .unwrap_err();
            assert!(error.contains("cannot"), "{error}");
        }
    }

    #[test]
    fn a_layout_names_headers_that_exist() {
        for (layout, wrong) in [
            ("{header:bad name}.{body}", "a header name"),
            ("{header:webhook-id.{body}", "a header name"),
            ("{body}.{header:webhook-id", "closing"),
        ] {
            let config = HmacConfig {
                header: Some("x-signature".into()),
                signed: Some(layout.into()),
                ..preset(Preset::Github, "s")
            };
            let config = HmacConfig {
                preset: None,
                ..config
            };
            let errors = config.build().err().expect(layout);
            assert_eq!(errors[0].field, "hmac.signed", "{layout}");
            assert!(
                errors[0].message.contains(wrong),
                "{layout}: {}",
                errors[0].message
            );
        }
    }

    #[test]
    fn stripe_signatures_timestamps_and_replays() {
        let h = hmac(Preset::Stripe);
        let body = br#"{"id":"evt_1"}"#;
        let now = 1_700_000_000;
        let text = [format!("{now}.").as_bytes(), body].concat();
        let good = hex(&sign("whsec_test", &text));
        // Several v1 signatures (secret rotation): one valid is enough.
        let value = format!("t={now},v1={},v1={good},v0=ignored", "00".repeat(32));
        let ok = headers(&[("stripe-signature", value.clone())]);
        // Taken while handled: a copy meanwhile is in flight; failed (dropped), it is free
        // for the sender's retry; accepted, a copy gets the first answer's status.
        let first = new(h.verify(&ok, None, body, now + 10));
        // Stripe's delivery id is the event's, in the body.
        assert_eq!(first.delivery().map(|(id, _)| id), Some("evt_1"));
        assert!(matches!(
            h.verify(&ok, None, body, now + 10),
            Ok(Verified::InFlight)
        ));
        drop(first);
        new(h.verify(&ok, None, body, now + 10)).accept(http::StatusCode::ACCEPTED);
        assert!(matches!(
            h.verify(&ok, None, body, now + 10),
            Ok(Verified::Accepted(http::StatusCode::ACCEPTED))
        ));
        let refused =
            |headers: &HeaderMap, body: &[u8], now: i64| h.verify(headers, None, body, now).err();
        assert_eq!(
            refused(&ok, body, now + 301),
            Some(Refused::new("signature timestamp outside the tolerance"))
        );
        assert_eq!(
            refused(&ok, b"{\"id\":\"evt_2\"}", now),
            Some(Refused::new("invalid signature"))
        );
        assert_eq!(
            refused(
                &headers(&[("stripe-signature", format!("v1={good}"))]),
                body,
                now
            ),
            Some(Refused::new("missing or malformed signature timestamp"))
        );
        // A flood of candidates costs one HMAC, and more than a handful is refused.
        let flood = format!("t={now},{}", ["v1=00"; 9].join(","));
        assert_eq!(
            refused(&headers(&[("stripe-signature", flood)]), body, now),
            Some(Refused::new("too many signatures"))
        );
    }

    #[test]
    fn a_delivery_id_is_read_from_one_field_of_the_body() {
        for (body, id) in [
            (r#"{"object":"event","id":"evt_1"}"#, Some("evt_1")),
            (
                r#"{"data":{"id":"inner"},"id":"evt_2","x":[1,{"id":3}]}"#,
                Some("evt_2"),
            ),
            (r#"{"data":{"id":"inner"}}"#, None),
            (r#"{"id":7}"#, None),
            (r#"[{"id":"evt_3"}]"#, None),
            ("not json", None),
        ] {
            assert_eq!(
                top_level_text(body.as_bytes(), "id").as_deref(),
                id,
                "{body}"
            );
        }
        // Only ids that fit a store key are used.
        // A header named in the config wins over the preset's.
        let own = HmacConfig {
            delivery_id_header: Some("x-request-id".into()),
            ..preset(Preset::Github, "s")
        }
        .build()
        .unwrap();
        let both = headers(&[
            ("x-github-delivery", "from-github".into()),
            ("x-request-id", "ours".into()),
        ]);
        assert_eq!(own.delivery_id(&both, b"{}").as_deref(), Some("ours"));
        let h = hmac(Preset::Github);
        for (given, used) in [
            ("72d3162e-cc78-11e3-81ab-4c9367dc0958", true),
            ("", false),
            ("two words", false),
        ] {
            let headers = headers(&[("x-github-delivery", given.to_string())]);
            assert_eq!(h.delivery_id(&headers, b"{}").is_some(), used, "{given:?}");
        }
        assert_eq!(
            h.delivery_id(&headers(&[("x-github-delivery", "x".repeat(201))]), b"{}"),
            None
        );
    }

    #[test]
    fn twilio_needs_the_url_it_signs_in_both_its_forms() {
        assert_eq!(
            twilio_urls("https://hooks.example.com/sms"),
            Some([
                "https://hooks.example.com/sms".to_string(),
                "https://hooks.example.com:443/sms".to_string()
            ])
        );
        assert_eq!(
            twilio_urls("http://h.example:80"),
            Some([
                "http://h.example:80".to_string(),
                "http://h.example".to_string()
            ])
        );
        for bad in [
            "ftp://h.example/x",
            "https://h.example/x?a=1",
            "/sms",
            "not a url",
        ] {
            assert_eq!(twilio_urls(bad), None, "{bad}");
        }
        let config = |url: Option<&str>, preset| HmacConfig {
            url: url.map(str::to_string),
            ..preset_config(preset)
        };
        let field = |c: HmacConfig| c.build().err().map(|e| e[0].field.clone());
        assert_eq!(
            field(config(None, Preset::Twilio)).as_deref(),
            Some("hmac.url")
        );
        assert_eq!(
            field(config(Some("https://h.example/sms"), Preset::Github)).as_deref(),
            Some("hmac.url")
        );
        assert!(
            config(Some("https://h.example/sms"), Preset::Twilio)
                .build()
                .is_ok()
        );
    }

    #[test]
    fn hex_decoding_refuses_what_is_not_hex() {
        assert_eq!(decode("0aff", Encoding::Hex), Some(vec![0x0a, 0xff]));
        assert_eq!(decode("0af", Encoding::Hex), None);
        assert_eq!(decode("zz", Encoding::Hex), None);
        assert_eq!(decode("é0", Encoding::Hex), None);
    }
}
