//! `hmac` auth profiles: each request signed with a shared secret (algorithm, header, prefix,
//! hex or base64, and what is signed: `{body}`, `{timestamp}`, `{method}`, `{path}`).

use base64::Engine;
use http::{HeaderName, HeaderValue, Method, Uri};
use serde::Deserialize;

use super::sensitive;
use crate::config::{BuildError, Secret};

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

pub(super) struct Hmac {
    key: ring::hmac::Key,
    pub(super) header: HeaderName,
    prefix: String,
    base64: bool,
    signed: String,
    pub(super) timestamp_header: Option<HeaderName>,
}

/// What a signature covers, from the request being made.
pub struct Signed<'a> {
    pub method: &'a Method,
    pub uri: &'a Uri,
    pub body: &'a [u8],
}

impl Hmac {
    pub(super) fn sign(
        &self,
        request: &Signed<'_>,
    ) -> Result<Vec<(HeaderName, HeaderValue)>, String> {
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

impl HmacConfig {
    /// The signer, every part of the settings checked.
    pub(super) fn build(&self) -> Result<Hmac, Vec<BuildError>> {
        let err = |field: &str, message: String| vec![BuildError::new(field, message)];
        let h = self;
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
        Ok(Hmac {
            key: ring::hmac::Key::new(algorithm, h.secret.expose().as_bytes()),
            header,
            prefix: h.prefix.clone(),
            base64,
            signed: h.signed.clone(),
            timestamp_header,
        })
    }
}
