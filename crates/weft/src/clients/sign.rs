//! Outgoing webhook signatures (`sign` on `http_client`), so weft can send webhooks to its
//! user's own customers the way Svix does, verifiable by any Standard Webhooks library:
//!
//! - `webhook-id`: the message's id, the same on every retry (a receiver dedupes by it), or
//!   what `id` makes of the message (`"{{ %event_id }}"`: the id of the event it carries);
//! - `webhook-timestamp`: when this attempt is made (Unix seconds);
//! - `webhook-signature`: `v1,<base64 HMAC-SHA256 of "{id}.{timestamp}.{body}">`, one per secret
//!   while a secret is rotated (several secrets separated by spaces).
//!
//! A secret is the `whsec_…` text (base64 after the prefix). It is the same for every endpoint
//! (`secret`), or each endpoint's own, read from a `resources.sql` database when a request is
//! sent (`secret_from`, kept `cache` long): it never travels in the message, so no tap, log or
//! dead letter shows it.
//!
//! ```yaml
//! output:
//!   http_client:
//!     url: "{{ %endpoint.url }}"
//!     sign:
//!       standard_webhooks:
//!         secret_from:
//!           database: app                  # resources.sql.app
//!           query: "SELECT secret FROM webhook_endpoints WHERE id = $1"
//!           args: "[%endpoint.id]"
//! #       secret: "${WEBHOOK_SECRET}"      # or one secret for every endpoint
//! ```

use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use http::{HeaderName, HeaderValue};
use serde::Deserialize;

use super::Resources;
use super::cache::Cache;
use super::sql::{Database, evaluate_args};
use crate::config::units::Dur;
use crate::config::{BuildError, Secret};
use crate::core::mapping::Mapping;
use crate::core::template::{Escape, Template};
use crate::core::{Attempt, Message};

/// How requests are signed.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[schemars(rename = "SignConfig")]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Config {
    /// The Standard Webhooks scheme (Svix, and its libraries in every language).
    StandardWebhooks(StandardWebhooksConfig),
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct StandardWebhooksConfig {
    /// The `webhook-id`, with `{{ expression }}` parts; default the message's id. It must stay
    /// the same on every retry of one delivery.
    #[serde(default)]
    pub id: Option<String>,
    /// The `whsec_…` secret of every endpoint; several, separated by spaces, while rotating.
    #[serde(default)]
    pub secret: Option<Secret>,
    /// Each endpoint's own secret, read from a database when a request is sent.
    #[serde(default)]
    pub secret_from: Option<SecretLookup>,
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SecretLookup {
    /// A database of `resources.sql`.
    pub database: String,
    /// A query giving one row with a `secret` column, e.g.
    /// `SELECT secret FROM webhook_endpoints WHERE id = $1`.
    pub query: String,
    /// VRL expression giving the query's parameters, e.g. `[%endpoint.id]`.
    pub args: String,
    /// How long a secret read is used before it is read again.
    #[serde(default = "default_cache")]
    pub cache: Dur,
}

fn default_cache() -> Dur {
    Dur(Duration::from_secs(60))
}

/// The most endpoints whose secrets are kept at once.
const MAX_CACHED: usize = 10_000;

/// The key of a Standard Webhooks secret: the base64 after `whsec_` (the prefix is optional,
/// as in the reference libraries).
pub fn standard_webhooks_key(secret: &str) -> Option<Vec<u8>> {
    base64::engine::general_purpose::STANDARD
        .decode(secret.strip_prefix("whsec_").unwrap_or(secret))
        .ok()
        .filter(|k| !k.is_empty())
}

/// Every key of a space-separated list of secrets.
fn keys(secrets: &str) -> Option<KeySet> {
    let keys: Vec<_> = secrets
        .split_ascii_whitespace()
        .map(|s| {
            standard_webhooks_key(s).map(|k| ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &k))
        })
        .collect::<Option<_>>()?;
    (!keys.is_empty()).then(|| keys.into())
}

pub struct Signer {
    keys: Keys,
    id: Option<Template>,
}

/// The keys of one endpoint's secrets (several while rotating).
type KeySet = Arc<[ring::hmac::Key]>;

enum Keys {
    Fixed(KeySet),
    Lookup(Box<Lookup>),
}

struct Lookup {
    db: Arc<Database>,
    query: String,
    args: Mapping,
    /// By the query's parameters (as JSON).
    cached: Cache<KeySet>,
}

impl Config {
    pub fn build(&self, resources: &Resources) -> Result<Signer, Vec<BuildError>> {
        let Config::StandardWebhooks(c) = self;
        let field = |f: &str| format!("sign.standard_webhooks.{f}");
        let keys = match (&c.secret, &c.secret_from) {
            (Some(secret), None) => Keys::Fixed(keys(secret.expose()).ok_or_else(|| {
                vec![BuildError::new(
                    &field("secret"),
                    "a Standard Webhooks secret is `whsec_` and base64 (several separated by spaces)",
                )]
            })?),
            (None, Some(from)) => {
                let mut errors = Vec::new();
                let db = resources
                    .sql(&from.database)
                    .map_err(|e| errors.push(BuildError::new(&field("secret_from.database"), e)))
                    .ok();
                let args = Mapping::compile(&from.args)
                    .map_err(|d| {
                        errors.extend(BuildError::from_diagnostics(&field("secret_from.args"), d))
                    })
                    .ok();
                if from.cache.0.is_zero() {
                    errors.push(BuildError::new(
                        &field("secret_from.cache"),
                        "above zero (a secret read on every request would cost a query each)",
                    ));
                }
                match (db, args) {
                    (Some(db), Some(args)) if errors.is_empty() => Keys::Lookup(Box::new(Lookup {
                        db,
                        query: from.query.clone(),
                        args,
                        cached: Cache::new(from.cache.0, MAX_CACHED),
                    })),
                    _ => return Err(errors),
                }
            }
            _ => {
                return Err(vec![BuildError::new(
                    "sign.standard_webhooks",
                    "give `secret` (every endpoint's) or `secret_from` (each endpoint's own)",
                )]);
            }
        };
        let id =
            c.id.as_deref()
                .map(|id| Template::parse(id, Escape::None))
                .transpose()
                .map_err(|d| BuildError::from_diagnostics(&field("id"), d))?;
        Ok(Signer { keys, id })
    }
}

impl Signer {
    /// Whether the secret lookup reads metadata.
    pub fn reads_metadata(&self) -> bool {
        self.id.as_ref().is_some_and(Template::reads_metadata)
            || match &self.keys {
                Keys::Fixed(_) => false,
                Keys::Lookup(lookup) => lookup.args.reads_metadata(),
            }
    }

    /// The headers that sign `body`, sent for `message` now.
    pub async fn headers(
        &self,
        message: &Message,
        body: &[u8],
    ) -> Result<Vec<(HeaderName, HeaderValue)>, Attempt> {
        let keys = match &self.keys {
            Keys::Fixed(keys) => keys.clone(),
            Keys::Lookup(lookup) => lookup.keys(message).await?,
        };
        let id = match &self.id {
            None => message.id.to_string(),
            Some(template) => template
                .render(&message.value, &message.metadata)
                .ok()
                .filter(|id| {
                    !id.is_empty() && id.len() <= 256 && id.bytes().all(|b| b.is_ascii_graphic())
                })
                .ok_or_else(|| Attempt::Fatal {
                    reason: "sign: `id` did not give 1 to 256 visible ASCII characters".into(),
                    response: None,
                })?,
        };
        let timestamp = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs())
            .to_string();
        let mut signed = Vec::with_capacity(id.len() + timestamp.len() + body.len() + 2);
        signed.extend_from_slice(id.as_bytes());
        signed.push(b'.');
        signed.extend_from_slice(timestamp.as_bytes());
        signed.push(b'.');
        signed.extend_from_slice(body);
        let signatures: Vec<String> = keys
            .iter()
            .map(|key| {
                let tag = ring::hmac::sign(key, &signed);
                format!(
                    "v1,{}",
                    base64::engine::general_purpose::STANDARD.encode(tag.as_ref())
                )
            })
            .collect();
        let value = |text: String| {
            HeaderValue::try_from(text).expect("ids, digits and base64 are header text")
        };
        let mut signature = value(signatures.join(" "));
        signature.set_sensitive(true);
        Ok(vec![
            (HeaderName::from_static("webhook-id"), value(id)),
            (
                HeaderName::from_static("webhook-timestamp"),
                value(timestamp),
            ),
            (HeaderName::from_static("webhook-signature"), signature),
        ])
    }
}

impl Lookup {
    async fn keys(&self, message: &Message) -> Result<KeySet, Attempt> {
        let fatal = |reason: String| Attempt::Fatal {
            reason: format!("sign: {reason}"),
            response: None,
        };
        let args = evaluate_args(Some(&self.args), message).map_err(fatal)?;
        let by = serde_json::to_string(&args).unwrap_or_default();
        if let Some(keys) = self.cached.get(&by) {
            return Ok(keys);
        }
        let rows = self
            .db
            .fetch(&self.query, &args)
            .await
            .map_err(|e| e.attempt())?;
        // The value is never put in a reason: it is the secret, or near it.
        let keys = match rows.as_slice() {
            [row] => match row.get("secret").and_then(|s| s.as_str()) {
                Some(secret) => keys(secret).ok_or_else(|| {
                    fatal(format!(
                        "the `secret` found for {by} is not `whsec_` and base64"
                    ))
                })?,
                None => {
                    return Err(fatal(format!(
                        "the row found for {by} has no text column `secret`"
                    )));
                }
            },
            [] => return Err(fatal(format!("no secret found for {by}"))),
            _ => return Err(fatal(format!("several secrets found for {by}"))),
        };
        self.cached.put(by, keys.clone());
        Ok(keys)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_secret_is_the_base64_after_its_prefix_and_several_rotate() {
        assert_eq!(
            standard_webhooks_key("whsec_c2VjcmV0").as_deref(),
            Some(&b"secret"[..])
        );
        assert_eq!(
            standard_webhooks_key("c2VjcmV0").as_deref(),
            Some(&b"secret"[..])
        );
        assert_eq!(standard_webhooks_key("whsec_"), None);
        assert_eq!(standard_webhooks_key("whsec_not base64!"), None);
        assert_eq!(keys("whsec_c2VjcmV0 whsec_b2xk").map(|k| k.len()), Some(2));
        assert!(keys("whsec_c2VjcmV0 nope!").is_none());
        assert!(keys("  ").is_none());
    }

    #[test]
    fn one_secret_or_a_lookup_is_given() {
        let config = |secret: Option<&str>| {
            Config::StandardWebhooks(StandardWebhooksConfig {
                id: None,
                secret: secret.map(Secret::new),
                secret_from: None,
            })
        };
        let errors = config(None).build(&Resources::default()).err().unwrap();
        assert_eq!(errors[0].field, "sign.standard_webhooks");
        let errors = config(Some("plain"))
            .build(&Resources::default())
            .err()
            .unwrap();
        assert_eq!(errors[0].field, "sign.standard_webhooks.secret");
        assert!(
            !errors[0].message.contains("plain"),
            "the secret is not repeated"
        );
        assert!(
            config(Some("whsec_c2VjcmV0"))
                .build(&Resources::default())
                .is_ok()
        );
    }
}
