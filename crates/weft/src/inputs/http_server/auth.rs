//! Inbound auth for `http_server`: API keys, basic auth and HMAC-signed webhooks (generic, or
//! the GitHub, Stripe, Slack and Shopify presets), checked before anything reaches the flow.
//! A request that fails is answered 401 with a short reason (which never repeats a secret) and
//! is counted; nothing of it is processed.
//!
//! - `api_key`: a key in a `header` (default `X-Api-Key`) or `query` parameter; several `keys`
//!   may be valid at once (rotation). Compared in constant time.
//! - `basic`: `users` by name with their passwords.
//! - `hmac`: the signature of the raw body (and, where the sender signs one, its timestamp),
//!   compared in constant time. A signed timestamp older or newer than `tolerance` (default 5 m)
//!   is refused, and so is a signature already seen within `tolerance`, so a captured request
//!   cannot be replayed.
//!
//! ```yaml
//! input:
//!   http_server:
//!     address: 0.0.0.0:8080
//!     path: /hooks/github
//!     auth: { hmac: { preset: github, secret: "${GH_SECRET}" } }
//! # auth: { api_key: { header: X-Api-Key, keys: ["${K1}", "${K2}"] } }
//! # auth: { basic: { users: { partner: "${PARTNER_PASSWORD}" } } }
//! # auth: { hmac: { secret: "${S}", header: X-Signature, prefix: "sha256=", encoding: hex,
//! #                 algorithm: sha256, timestamp_header: X-Timestamp, signed: "{timestamp}.{body}" } }
//! ```

use std::collections::HashMap;
use std::time::Duration;

use base64::Engine;
use http::HeaderMap;
use serde::Deserialize;

use crate::clients::cache::Cache;
use crate::clients::secret::Secret;
use crate::config::BuildError;
use crate::config::units::Dur;
use crate::core::Value;

/// One of the ways a caller proves who it is.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Config {
    ApiKey(ApiKeyConfig),
    Basic(BasicConfig),
    Hmac(HmacConfig),
}

#[derive(Debug, Deserialize)]
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

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BasicConfig {
    /// Passwords by user name.
    pub users: HashMap<String, Secret>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HmacConfig {
    /// `github`, `stripe`, `slack` or `shopify`: the sender's documented scheme.
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
    /// What is signed: `{body}` (default) or a layout with `{timestamp}` and `{body}`.
    #[serde(default)]
    pub signed: Option<String>,
    /// How far a signed timestamp may be from now, and how long seen signatures are kept.
    #[serde(default = "default_tolerance")]
    pub tolerance: Dur,
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Preset {
    Github,
    Stripe,
    Slack,
    Shopify,
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
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
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the keys, passwords or secret.
        f.write_str(match self {
            Auth::ApiKey { .. } => "Auth::ApiKey",
            Auth::Basic(_) => "Auth::Basic",
            Auth::Hmac(_) => "Auth::Hmac",
        })
    }
}

pub struct Hmac {
    key: ring::hmac::Key,
    scheme: Scheme,
    tolerance: Duration,
    seen: Cache,
}

/// Where the signature and timestamp are, and what was signed.
enum Scheme {
    /// One header, optional prefix, hex or base64; optionally a timestamp header and a layout.
    Generic {
        header: http::HeaderName,
        prefix: String,
        encoding: Encoding,
        timestamp: Option<http::HeaderName>,
        signed: String,
    },
    /// `Stripe-Signature: t=…,v1=…[,v1=…]`, signed `{t}.{body}`.
    Stripe,
}

impl Config {
    pub fn build(&self) -> Result<Auth, Vec<BuildError>> {
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
                Ok(Auth::Basic(c.users.clone()))
            }
            Config::Hmac(c) => c.build().map(|h| Auth::Hmac(Box::new(h))),
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
        let (algorithm, scheme) = match self.preset {
            Some(_) if generic_fields => {
                return Err(err(
                    "preset",
                    "a preset sets header, prefix, encoding, algorithm and what is signed: drop those",
                ));
            }
            Some(Preset::Github) => (
                ring::hmac::HMAC_SHA256,
                Scheme::Generic {
                    header: header("x-hub-signature-256")?,
                    prefix: "sha256=".into(),
                    encoding: Encoding::Hex,
                    timestamp: None,
                    signed: "{body}".into(),
                },
            ),
            Some(Preset::Slack) => (
                ring::hmac::HMAC_SHA256,
                Scheme::Generic {
                    header: header("x-slack-signature")?,
                    prefix: "v0=".into(),
                    encoding: Encoding::Hex,
                    timestamp: Some(header("x-slack-request-timestamp")?),
                    signed: "v0:{timestamp}:{body}".into(),
                },
            ),
            Some(Preset::Shopify) => (
                ring::hmac::HMAC_SHA256,
                Scheme::Generic {
                    header: header("x-shopify-hmac-sha256")?,
                    prefix: String::new(),
                    encoding: Encoding::Base64,
                    timestamp: None,
                    signed: "{body}".into(),
                },
            ),
            Some(Preset::Stripe) => (ring::hmac::HMAC_SHA256, Scheme::Stripe),
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
                (
                    algorithm,
                    Scheme::Generic {
                        header: header(name)?,
                        prefix: self.prefix.clone().unwrap_or_default(),
                        encoding: self.encoding.unwrap_or(Encoding::Hex),
                        timestamp: self.timestamp_header.as_deref().map(header).transpose()?,
                        signed,
                    },
                )
            }
        };
        if self.tolerance.0.is_zero() {
            return Err(err("tolerance", "above zero"));
        }
        let seen = crate::clients::cache::Config {
            ttl: self.tolerance,
            max_entries: 100_000,
        }
        .build()?;
        Ok(Hmac {
            key: ring::hmac::Key::new(algorithm, self.secret.expose().as_bytes()),
            scheme,
            tolerance: self.tolerance.0,
            seen,
        })
    }
}

/// Why a request was refused: said to the caller as it is.
#[derive(Debug, PartialEq, Eq)]
pub struct Refused(pub &'static str);

/// `a == b` in time that depends only on the lengths.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

impl Auth {
    /// Whether the check needs the body (signatures); the others run before it is read.
    pub fn needs_body(&self) -> bool {
        matches!(self, Auth::Hmac(_))
    }

    /// The check of what comes before the body.
    pub fn check_head(&self, headers: &HeaderMap, query: Option<&str>) -> Result<(), Refused> {
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
                    return Err(Refused("missing API key"));
                };
                // Every key is compared, so the time taken does not tell which one is close.
                let mut ok = false;
                for key in keys {
                    ok |= same(key.expose().as_bytes(), &given);
                }
                if ok {
                    Ok(())
                } else {
                    Err(Refused("invalid API key"))
                }
            }
            Auth::Basic(users) => {
                let Some(value) = headers
                    .get(http::header::AUTHORIZATION)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.strip_prefix("Basic "))
                else {
                    return Err(Refused("missing basic credentials"));
                };
                let decoded = base64::engine::general_purpose::STANDARD
                    .decode(value.trim())
                    .ok()
                    .and_then(|d| String::from_utf8(d).ok())
                    .ok_or(Refused("malformed basic credentials"))?;
                let (user, password) = decoded
                    .split_once(':')
                    .ok_or(Refused("malformed basic credentials"))?;
                let expected = users.get(user).map(|p| p.expose().as_bytes());
                // An unknown user costs the same comparison as a known one.
                let ok = same(expected.unwrap_or(b"\0unknown user"), password.as_bytes())
                    && expected.is_some();
                if ok {
                    Ok(())
                } else {
                    Err(Refused("invalid credentials"))
                }
            }
            Auth::Hmac(_) => Ok(()),
        }
    }

    /// The check of a signature over the raw body (signatures only).
    pub fn check_body(&self, headers: &HeaderMap, body: &[u8]) -> Result<(), Refused> {
        let Auth::Hmac(h) = self else {
            return Ok(());
        };
        h.verify(headers, body, chrono::Utc::now().timestamp())
    }
}

fn header_text<'h>(headers: &'h HeaderMap, name: &http::HeaderName) -> Option<&'h str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

impl Hmac {
    fn verify(&self, headers: &HeaderMap, body: &[u8], now: i64) -> Result<(), Refused> {
        // (timestamp, candidate signatures as bytes, what was signed)
        let (timestamp, signatures, signed): (Option<i64>, Vec<Vec<u8>>, Vec<u8>) = match &self
            .scheme
        {
            Scheme::Generic {
                header,
                prefix,
                encoding,
                timestamp,
                signed,
            } => {
                let value =
                    header_text(headers, header).ok_or(Refused("missing signature header"))?;
                let value = value
                    .trim()
                    .strip_prefix(prefix.as_str())
                    .ok_or(Refused("malformed signature"))?;
                let signature = decode(value, *encoding).ok_or(Refused("malformed signature"))?;
                let ts = match timestamp {
                    Some(name) => Some(
                        header_text(headers, name)
                            .and_then(|t| t.trim().parse::<i64>().ok())
                            .ok_or(Refused("missing or malformed signature timestamp"))?,
                    ),
                    None => None,
                };
                let mut text = Vec::with_capacity(body.len() + 32);
                let layout = signed.as_str();
                let (before, after) = layout.split_once("{body}").unwrap_or((layout, ""));
                let fill = |part: &str| {
                    part.replace(
                        "{timestamp}",
                        &ts.map(|t| t.to_string()).unwrap_or_default(),
                    )
                };
                text.extend_from_slice(fill(before).as_bytes());
                text.extend_from_slice(body);
                text.extend_from_slice(fill(after).as_bytes());
                (ts, vec![signature], text)
            }
            Scheme::Stripe => {
                let value =
                    header_text(headers, &http::HeaderName::from_static("stripe-signature"))
                        .ok_or(Refused("missing signature header"))?;
                let mut ts = None;
                let mut signatures = Vec::new();
                for item in value.split(',') {
                    match item.trim().split_once('=') {
                        Some(("t", t)) => ts = t.parse::<i64>().ok(),
                        Some(("v1", s)) => signatures
                            .push(decode(s, Encoding::Hex).ok_or(Refused("malformed signature"))?),
                        _ => {}
                    }
                }
                let ts = ts.ok_or(Refused("missing or malformed signature timestamp"))?;
                if signatures.is_empty() {
                    return Err(Refused("missing signature"));
                }
                let mut text = format!("{ts}.").into_bytes();
                text.extend_from_slice(body);
                (Some(ts), signatures, text)
            }
        };
        if let Some(ts) = timestamp
            && now.abs_diff(ts) > self.tolerance.as_secs()
        {
            return Err(Refused("signature timestamp outside the tolerance"));
        }
        let valid = signatures
            .iter()
            .find(|s| ring::hmac::verify(&self.key, &signed, s).is_ok());
        let Some(valid) = valid else {
            return Err(Refused("invalid signature"));
        };
        // Replay: the same signature (so the same timestamp and body) twice within tolerance.
        let key = base64::engine::general_purpose::STANDARD.encode(valid);
        if self.seen.get(&key).is_some() {
            return Err(Refused("signature already used (replay)"));
        }
        self.seen.put(key, Value::Boolean(true));
        Ok(())
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
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }

    fn sign(secret: &str, text: &[u8]) -> Vec<u8> {
        let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret.as_bytes());
        ring::hmac::sign(&key, text).as_ref().to_vec()
    }

    fn hmac(yaml_preset: Preset) -> Hmac {
        HmacConfig {
            preset: Some(yaml_preset),
            secret: Secret::new("whsec_test"),
            header: None,
            prefix: None,
            encoding: None,
            algorithm: None,
            timestamp_header: None,
            signed: None,
            tolerance: default_tolerance(),
        }
        .build()
        .unwrap()
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
    fn stripe_signatures_timestamps_and_replays() {
        let h = hmac(Preset::Stripe);
        let body = br#"{"id":"evt_1"}"#;
        let now = 1_700_000_000;
        let text = [format!("{now}.").as_bytes(), body].concat();
        let good = hex(&sign("whsec_test", &text));
        // Several v1 signatures (secret rotation): one valid is enough.
        let value = format!("t={now},v1={},v1={good},v0=ignored", "00".repeat(32));
        let ok = headers(&[("stripe-signature", value.clone())]);
        assert_eq!(h.verify(&ok, body, now + 10), Ok(()));
        assert_eq!(
            h.verify(&ok, body, now + 10),
            Err(Refused("signature already used (replay)"))
        );
        assert_eq!(
            h.verify(&ok, body, now + 301),
            Err(Refused("signature timestamp outside the tolerance"))
        );
        assert_eq!(
            h.verify(&ok, b"{\"id\":\"evt_2\"}", now),
            Err(Refused("invalid signature"))
        );
        assert_eq!(
            h.verify(
                &headers(&[("stripe-signature", format!("v1={good}"))]),
                body,
                now
            ),
            Err(Refused("missing or malformed signature timestamp"))
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
