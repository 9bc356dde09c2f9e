//! `http_client`: sends each message to an HTTP API.
//!
//! The body is the message: JSON (a string message as its raw text), or what `format` says —
//! `form`, `multipart`, `xml`, `csv`, `text` (see `core::body`; a `Content-Type` header given in
//! `headers` chooses the format too). The URL and header
//! values may hold `{{ VRL expression }}` parts evaluated per message. What a status means:
//!
//! | status | default |
//! |---|---|
//! | 2xx | delivered |
//! | 408, 429, 5xx except 501 | retried (honouring `Retry-After`, seconds or HTTP-date) |
//! | 3xx | failed, unless `follow_redirects: true` |
//! | other 4xx, 501 | failed, no retry |
//! | refused connection, timeout | retried |
//!
//! With `follow_redirects: true`, a redirect to another origin is sent without the configured
//! headers, so credentials stay with the host they were meant for.
//!
//! `retry_on`, `fail_on` and `drop_on` move statuses between classes (`drop` = count the
//! message as done without delivering it, e.g. a 409 for a record that already exists).
//!
//! `sign: { standard_webhooks: … }` signs each request the way Standard Webhooks receivers
//! verify, so weft can send webhooks to its users' own customers (see `clients::sign`).
//!
//! `auth: NAME` sends the credentials of a profile from `resources.auth` (see
//! `clients::auth`; an OAuth 2.0 token refused with 401 is renewed and the request sent once
//! more), and `rate_limit: NAME` waits for a slot of a limit from `resources.rate_limits`,
//! shared with every component that names it. `circuit_breaker: NAME` stops calling a target
//! that keeps failing for a while (`resources.circuit_breakers`; the delivery is retried after).
//!
//! ```yaml
//! output:
//!   http_client:
//!     url: "https://crm.example.com/api/contacts/{{ .contact_id }}"
//!     method: PUT
//!     headers:
//!       X-Request-Id: "{{ .id }}"
//!     timeout: 10s
//!     auth: crm                    # resources.auth.crm
//!     rate_limit: crm              # resources.rate_limits.crm
//!     circuit_breaker: crm         # resources.circuit_breakers.crm
//!     client: { ca_file: /etc/weft/crm-ca.pem, min_tls: "1.3" }   # optional
//!     drop_on: [409]
//!     format: json                 # or form, multipart, xml, csv, text
//!     retry: { max_attempts: 8, initial_backoff: 200ms, max_backoff: 30s, max_elapsed: 5m }
//! ```

use std::time::{Duration, SystemTime};

use http::{Method, StatusCode, header};
use serde::Deserialize;

use crate::clients::Resources;
use crate::clients::Shared;
use crate::clients::auth::AuthError;
use crate::clients::http::ClientError;
use crate::clients::request::{ExchangeError, Parts, RequestSpec, check_uri, retry_after};
use crate::config::BuildError;
use crate::config::units::Dur;
use crate::core::body::Encoding;
use crate::core::retry::Answer;
use crate::core::retry::RetryConfig;
use crate::core::{Attempt, Message};

/// The most of an answer kept, for error messages.
const RESPONSE_LIMIT: usize = 64 * 1024;
const MAX_REDIRECTS: usize = 10;

crate::clients::call::call_config! {
    #[derive(Debug, Deserialize, schemars::JsonSchema)]
    #[schemars(rename = "HttpClientOutput")]
    #[serde(deny_unknown_fields)]
    pub struct Config {
        /// Destination; may contain `{{ expression }}` parts.
        pub url: String,
        /// Follow 3xx answers (up to 10). Off by default: a redirected POST must not turn into a
        /// GET whose 200 would count as delivered.
        #[serde(default)]
        pub follow_redirects: bool,
        /// Statuses to retry besides the defaults, e.g. `[404]` or `["4xx"]`.
        #[serde(default)]
        pub retry_on: Vec<StatusSpec>,
        /// Statuses that fail the message at once.
        #[serde(default)]
        pub fail_on: Vec<StatusSpec>,
        /// Statuses that count the message as done without delivering it.
        #[serde(default)]
        pub drop_on: Vec<StatusSpec>,
        /// Sign each request for the receiver to verify: `standard_webhooks` (see
        /// `clients::sign`).
        #[serde(default)]
        pub sign: Option<crate::clients::sign::Config>,
    }
    with { method, format, auth, retry }
}

fn default_method() -> String {
    "POST".into()
}

fn default_timeout() -> Dur {
    Dur(Duration::from_secs(30))
}

/// A status (`409`), a class (`"4xx"`) or a range (`"500-503"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StatusSpec {
    low: u16,
    high: u16,
}

impl StatusSpec {
    fn matches(&self, status: u16) -> bool {
        (self.low..=self.high).contains(&status)
    }

    fn parse(s: &str) -> Result<StatusSpec, String> {
        let s = s.trim();
        let bad = || {
            format!(
                "invalid status `{s}`: write a code (`409`), a class (`\"4xx\"`) or a range (`\"500-503\"`)"
            )
        };
        if let Some(class) = s.strip_suffix("xx").or_else(|| s.strip_suffix("XX")) {
            let digit: u16 = class.parse().map_err(|_| bad())?;
            if !(1..=5).contains(&digit) {
                return Err(bad());
            }
            return Ok(StatusSpec {
                low: digit * 100,
                high: digit * 100 + 99,
            });
        }
        let (low, high) = match s.split_once('-') {
            Some((a, b)) => (a.trim().parse(), b.trim().parse()),
            None => (s.parse(), s.parse()),
        };
        match (low, high) {
            (Ok(low), Ok(high)) if (100..=599).contains(&low) && low <= high && high <= 599 => {
                Ok(StatusSpec { low, high })
            }
            _ => Err(bad()),
        }
    }
}

impl schemars::JsonSchema for StatusSpec {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "StatusSpec".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "type": ["integer", "string"],
            "description": "An HTTP status (`404`) or a range (`500-599`).",
            "pattern": "^[1-5][0-9][0-9](\\s*-\\s*[1-5][0-9][0-9])?$"
        })
    }
}

impl<'de> Deserialize<'de> for StatusSpec {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        // Integers arrive as strings too: the config deserializer coerces scalars.
        let text = String::deserialize(d)?;
        StatusSpec::parse(&text).map_err(serde::de::Error::custom)
    }
}

impl super::Spec for Config {
    type Built = HttpClientOutput;

    fn retry_config(&self) -> Option<&RetryConfig> {
        Some(&self.retry)
    }

    fn build(
        &self,
        shared: &Shared,
        resources: &Resources,
    ) -> Result<HttpClientOutput, Vec<BuildError>> {
        let client = &shared.http;
        let spec = RequestSpec::build(
            client,
            resources,
            Parts {
                url: &self.url,
                method: &self.method,
                auth: self.auth.as_deref(),
                call: self.call(),
            },
        )?;
        let encoding = Encoding::configured(self.format, &self.headers)
            .map_err(|e| vec![BuildError::new("format", e)])?;
        let signer = self
            .sign
            .as_ref()
            .map(|sign| sign.build(resources))
            .transpose()?;
        Ok(HttpClientOutput {
            spec,
            encoding,
            signer,
            follow_redirects: self.follow_redirects,
            retry_on: self.retry_on.clone(),
            fail_on: self.fail_on.clone(),
            drop_on: self.drop_on.clone(),
        })
    }
}

pub struct HttpClientOutput {
    spec: RequestSpec,
    encoding: Encoding,
    signer: Option<crate::clients::sign::Signer>,
    follow_redirects: bool,
    retry_on: Vec<StatusSpec>,
    fail_on: Vec<StatusSpec>,
    drop_on: Vec<StatusSpec>,
}

enum Class {
    Success,
    Retry,
    Fail,
    Drop,
    Redirect,
}

impl HttpClientOutput {
    fn classify(&self, status: StatusCode) -> Class {
        let code = status.as_u16();
        let listed = |specs: &[StatusSpec]| specs.iter().any(|s| s.matches(code));
        if listed(&self.drop_on) {
            Class::Drop
        } else if listed(&self.fail_on) {
            Class::Fail
        } else if listed(&self.retry_on) {
            Class::Retry
        } else if status.is_success() {
            Class::Success
        } else if status.is_redirection() {
            Class::Redirect
        } else if code == 408 || code == 429 || (status.is_server_error() && code != 501) {
            Class::Retry
        } else {
            Class::Fail
        }
    }
}

impl crate::core::Output for HttpClientOutput {
    async fn send(&self, message: &Message) -> Attempt {
        let mut uri = match self.spec.uri(&message.value, &message.metadata) {
            Ok(uri) => uri,
            Err(reason) => {
                return Attempt::Fatal {
                    reason,
                    response: None,
                };
            }
        };
        let (body, content_type) = match self.encoding.encode(&message.value) {
            Ok(encoded) => encoded,
            Err(reason) => {
                return Attempt::Fatal {
                    reason,
                    response: None,
                };
            }
        };
        let signature = match &self.signer {
            // Boxed: a key lookup's future would otherwise size every send's (see `exchange_with`).
            Some(signer) => match Box::pin(signer.headers(message, &body)).await {
                Ok(headers) => headers,
                Err(failed) => return failed,
            },
            None => Vec::new(),
        };
        let origin = (uri.scheme().cloned(), uri.authority().cloned());
        let mut method = self.spec.method.clone();
        for _ in 0..=MAX_REDIRECTS {
            let same_origin =
                uri.scheme() == origin.0.as_ref() && uri.authority() == origin.1.as_ref();
            // Only failures show the URL: built then, not on every request.
            let shown = || self.spec.shown(&uri);
            let exchanged = self
                .spec
                .exchange_with(
                    &uri,
                    &method,
                    &message.value,
                    &message.metadata,
                    body.clone(),
                    Some(&content_type),
                    same_origin,
                    RESPONSE_LIMIT,
                    &signature,
                )
                .await;
            let response = match exchanged {
                Ok(r) => r,
                Err(ExchangeError::Invalid(reason)) => {
                    return Attempt::Fatal {
                        reason,
                        response: None,
                    };
                }
                Err(ExchangeError::Auth(e @ AuthError::Refused { .. })) => {
                    return Attempt::Fatal {
                        reason: e.to_string(),
                        response: None,
                    };
                }
                Err(ExchangeError::Auth(e @ AuthError::Unavailable { .. })) => {
                    return Attempt::Retryable {
                        reason: e.to_string(),
                        retry_after: None,
                        response: None,
                    };
                }
                Err(e @ ExchangeError::CircuitOpen { wait, .. }) => {
                    return Attempt::Retryable {
                        reason: e.to_string(),
                        retry_after: Some(wait),
                        response: None,
                    };
                }
                Err(ExchangeError::Transport(e @ ClientError::Denied(_))) => {
                    return Attempt::Fatal {
                        reason: format!("{method} {}: {e}", shown()),
                        response: None,
                    };
                }
                Err(ExchangeError::Transport(e)) => {
                    return Attempt::Retryable {
                        reason: format!("{method} {}: {e}", shown()),
                        retry_after: None,
                        response: None,
                    };
                }
            };
            let status = response.status();
            let answer = || {
                Some(Answer {
                    status: status.as_u16(),
                    excerpt: String::from_utf8_lossy(response.body()).into_owned(),
                })
            };
            let reason = || {
                let body =
                    String::from_utf8_lossy(&response.body()[..response.body().len().min(512)])
                        .into_owned();
                format!("{method} {} answered {status}: {body}", shown())
            };
            match self.classify(status) {
                Class::Success => return Attempt::Delivered,
                Class::Drop => return Attempt::Drop { reason: reason() },
                Class::Fail => {
                    return Attempt::Fatal {
                        reason: reason(),
                        response: answer(),
                    };
                }
                Class::Retry => {
                    return Attempt::Retryable {
                        reason: reason(),
                        retry_after: retry_after(
                            response.headers().get(header::RETRY_AFTER),
                            SystemTime::now(),
                        ),
                        response: answer(),
                    };
                }
                Class::Redirect if !self.follow_redirects => {
                    return Attempt::Fatal {
                        reason: format!(
                            "{} (redirects are not followed; set follow_redirects: true)",
                            reason()
                        ),
                        response: answer(),
                    };
                }
                Class::Redirect => {
                    let Some(next) = response
                        .headers()
                        .get(header::LOCATION)
                        .and_then(|l| l.to_str().ok())
                        .and_then(|l| url::Url::parse(&uri.to_string()).ok()?.join(l).ok())
                        .and_then(|u| check_uri(u.as_str()).ok())
                    else {
                        return Attempt::Fatal {
                            reason: format!("{} without a usable Location", reason()),
                            response: answer(),
                        };
                    };
                    if status == StatusCode::SEE_OTHER {
                        method = Method::GET;
                    }
                    uri = next;
                }
            }
        }
        Attempt::Fatal {
            reason: format!("more than {MAX_REDIRECTS} redirects"),
            response: None,
        }
    }

    fn reads_metadata(&self) -> bool {
        self.spec.reads_metadata() || self.signer.as_ref().is_some_and(|s| s.reads_metadata())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::outputs::Spec as _;
    use http::HeaderValue;

    #[test]
    fn retry_after_reads_both_forms() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000_000);
        let v = HeaderValue::from_static("7");
        assert_eq!(retry_after(Some(&v), now), Some(Duration::from_secs(7)));
        let date = httpdate::fmt_http_date(now + Duration::from_secs(30));
        let v = HeaderValue::from_str(&date).unwrap();
        assert_eq!(retry_after(Some(&v), now), Some(Duration::from_secs(30)));
        let past =
            HeaderValue::from_str(&httpdate::fmt_http_date(now - Duration::from_secs(30))).unwrap();
        assert_eq!(retry_after(Some(&past), now), Some(Duration::ZERO));
        assert_eq!(
            retry_after(Some(&HeaderValue::from_static("soon")), now),
            None
        );
        // Shopify writes a fraction.
        let v = HeaderValue::from_static("2.0");
        assert_eq!(retry_after(Some(&v), now), Some(Duration::from_secs(2)));
        let v = HeaderValue::from_static("0.25");
        assert_eq!(retry_after(Some(&v), now), Some(Duration::from_millis(250)));
        for bad in ["-1.5", "1e3", "NaN", "inf", "."] {
            let v = HeaderValue::from_static(bad);
            assert_eq!(retry_after(Some(&v), now), None, "{bad}");
        }
    }

    #[test]
    fn status_specs_parse() {
        assert!(StatusSpec::parse("4xx").unwrap().matches(404));
        assert!(StatusSpec::parse("500-503").unwrap().matches(502));
        assert!(!StatusSpec::parse("409").unwrap().matches(410));
        assert!(StatusSpec::parse("7xx").is_err());
        assert!(StatusSpec::parse("abc").is_err());
    }

    #[test]
    fn default_classes() {
        let out = Config {
            url: "http://127.0.0.1:1/".into(),
            method: "post".into(),
            headers: Default::default(),
            timeout: default_timeout(),
            retry: Default::default(),
            follow_redirects: false,
            retry_on: vec![],
            fail_on: vec![],
            drop_on: vec![StatusSpec::parse("409").unwrap()],
            sign: None,
            auth: None,
            rate_limit: None,
            circuit_breaker: None,
            client: Default::default(),
            format: None,
        }
        .build(&Shared::default(), &Resources::default())
        .ok()
        .unwrap();
        let class = |c: u16| out.classify(StatusCode::from_u16(c).unwrap());
        assert!(matches!(class(200), Class::Success));
        assert!(matches!(class(503), Class::Retry));
        assert!(matches!(class(429), Class::Retry));
        assert!(matches!(class(408), Class::Retry));
        assert!(matches!(class(501), Class::Fail));
        assert!(matches!(class(400), Class::Fail));
        assert!(matches!(class(409), Class::Drop));
        assert!(matches!(class(302), Class::Redirect));
    }
}
