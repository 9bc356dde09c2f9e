//! `http_client`: sends each message to an HTTP API.
//!
//! The body is the message (JSON, or the raw text of a string message). The URL and header
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
//! `auth: NAME` sends the credentials of a profile from `resources.auth` (see
//! `clients::auth`; an OAuth 2.0 token refused with 401 is renewed and the request sent once
//! more), and `rate_limit: NAME` waits for a slot of a limit from `resources.rate_limits`,
//! shared with every component that names it.
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
//!     drop_on: [409]
//!     retry: { max_attempts: 8, initial_backoff: 200ms, max_backoff: 30s, max_elapsed: 5m }
//! ```

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::{HeaderName, HeaderValue, Method, Request, StatusCode, Uri, header};
use http_body_util::Full;
use serde::Deserialize;

use crate::clients::Resources;
use crate::clients::auth::{AuthError, AuthProfile, Credentials};
use crate::clients::http::{ClientError, HttpClient};
use crate::clients::rate_limit::RateLimit;
use crate::config::BuildError;
use crate::config::units::Dur;
use crate::core::retry::{Answer, RetryConfig};
use crate::core::template::{Escape, Template};
use crate::core::{Attempt, Message};

/// The most of an answer kept, for error messages.
const RESPONSE_LIMIT: usize = 64 * 1024;
const MAX_REDIRECTS: usize = 10;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Destination; may contain `{{ expression }}` parts.
    pub url: String,
    /// HTTP method.
    #[serde(default = "default_method")]
    pub method: String,
    /// Request headers; values may contain `{{ expression }}` parts.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// Time for one attempt, connection to last byte of the answer.
    #[serde(default = "default_timeout")]
    pub timeout: Dur,
    #[serde(default)]
    pub retry: RetryConfig,
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
    /// An auth profile from `resources.auth`.
    #[serde(default)]
    pub auth: Option<String>,
    /// A rate limit from `resources.rate_limits`, shared with every component that names it.
    #[serde(default)]
    pub rate_limit: Option<String>,
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

impl<'de> Deserialize<'de> for StatusSpec {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        // Integers arrive as strings too: the config deserializer coerces scalars.
        let text = String::deserialize(d)?;
        StatusSpec::parse(&text).map_err(serde::de::Error::custom)
    }
}

impl Config {
    pub fn build(
        &self,
        client: &HttpClient,
        resources: &Resources,
    ) -> Result<HttpClientOutput, Vec<BuildError>> {
        let mut errors = Vec::new();
        let auth = match self.auth.as_deref().map(|name| resources.auth(name)) {
            None => None,
            Some(Ok(profile)) => Some(profile),
            Some(Err(e)) => {
                errors.push(BuildError::new("auth", e));
                None
            }
        };
        let rate_limit = match self.rate_limit.as_deref().map(|n| resources.rate_limit(n)) {
            None => None,
            Some(Ok(limit)) => Some(limit),
            Some(Err(e)) => {
                errors.push(BuildError::new("rate_limit", e));
                None
            }
        };
        let url = Template::parse(&self.url, Escape::Url)
            .map_err(|d| errors.extend(BuildError::from_diagnostics("url", d)))
            .ok();
        let mut fixed_uri = None;
        if let Some(Some(fixed)) = url.as_ref().map(Template::as_static) {
            match check_uri(fixed) {
                Ok(uri) => fixed_uri = Some(uri),
                Err(e) => errors.push(BuildError::new("url", e)),
            }
        }
        let method = Method::from_bytes(self.method.to_ascii_uppercase().as_bytes())
            .map_err(|_| {
                errors.push(BuildError::new(
                    "method",
                    format!("invalid HTTP method `{}`", self.method),
                ))
            })
            .ok();
        let mut headers = Vec::new();
        for (name, value) in &self.headers {
            let field = format!("headers.{name}");
            let Ok(header_name) = HeaderName::from_bytes(name.as_bytes()) else {
                errors.push(BuildError::new(
                    &field,
                    format!("invalid header name `{name}`"),
                ));
                continue;
            };
            match Template::parse(value, Escape::None) {
                Ok(t) => {
                    let fixed = match t.as_static().map(HeaderValue::from_str) {
                        Some(Ok(v)) => Some(v),
                        Some(Err(_)) => {
                            errors.push(BuildError::new(
                                &field,
                                "header value has characters HTTP does not allow",
                            ));
                            continue;
                        }
                        None => None,
                    };
                    headers.push((header_name, fixed, t));
                }
                Err(d) => errors.extend(BuildError::from_diagnostics(&field, d)),
            }
        }
        if !errors.is_empty() {
            return Err(errors);
        }
        let has_content_type = headers.iter().any(|(n, _, _)| n == header::CONTENT_TYPE);
        Ok(HttpClientOutput {
            client: client.clone(),
            url: url.expect("no errors"),
            fixed_uri,
            method: method.expect("no errors"),
            headers,
            has_content_type,
            timeout: self.timeout.0,
            follow_redirects: self.follow_redirects,
            retry_on: self.retry_on.clone(),
            fail_on: self.fail_on.clone(),
            drop_on: self.drop_on.clone(),
            auth,
            rate_limit,
        })
    }
}

/// `uri` with `name=value` added to its query (the caller reports the URI without it).
fn with_query(uri: &Uri, name: &str, value: &str) -> Result<Uri, String> {
    let pair: String = form_urlencoded::Serializer::new(String::new())
        .append_pair(name, value)
        .finish();
    let path = uri.path();
    let path_and_query = match uri.query() {
        Some(q) if !q.is_empty() => format!("{path}?{q}&{pair}"),
        _ => format!("{path}?{pair}"),
    };
    let mut parts = uri.clone().into_parts();
    parts.path_and_query = Some(
        path_and_query
            .parse()
            .map_err(|_| "the API key does not fit in a URL".to_string())?,
    );
    Uri::from_parts(parts).map_err(|_| "the API key does not fit in a URL".to_string())
}

fn check_uri(text: &str) -> Result<Uri, String> {
    let uri: Uri = text
        .parse()
        .map_err(|e| format!("invalid URL `{text}`: {e}"))?;
    match uri.scheme_str() {
        Some("http" | "https") if uri.host().is_some() => Ok(uri),
        _ => Err(format!(
            "invalid URL `{text}`: it needs http:// or https:// and a host"
        )),
    }
}

pub struct HttpClientOutput {
    client: HttpClient,
    url: Template,
    /// The parsed URL when the template has no placeholders.
    fixed_uri: Option<Uri>,
    method: Method,
    headers: Vec<(HeaderName, Option<HeaderValue>, Template)>,
    has_content_type: bool,
    timeout: Duration,
    follow_redirects: bool,
    retry_on: Vec<StatusSpec>,
    fail_on: Vec<StatusSpec>,
    drop_on: Vec<StatusSpec>,
    auth: Option<Arc<AuthProfile>>,
    rate_limit: Option<RateLimit>,
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

    fn request(
        &self,
        uri: Uri,
        method: Method,
        message: &Message,
        body: Bytes,
        with_headers: bool,
        credentials: Option<&Credentials>,
    ) -> Result<Request<Full<Bytes>>, String> {
        let uri = match credentials.and_then(|c| c.query.as_ref()) {
            Some((name, value)) => with_query(&uri, name, value.expose())?,
            None => uri,
        };
        let mut builder = Request::builder().method(method).uri(uri);
        for (name, value) in credentials.map_or(&[][..], |c| &c.headers[..]) {
            builder = builder.header(name, value.clone());
        }
        let headers = if with_headers { &self.headers[..] } else { &[] };
        for (name, fixed, template) in headers {
            let value = match fixed {
                Some(v) => v.clone(),
                None => {
                    let text = template
                        .render(&message.value, &message.metadata)
                        .map_err(|e| format!("header `{name}`: {e}"))?;
                    HeaderValue::from_str(&text).map_err(|_| {
                        format!("header `{name}`: value has characters HTTP does not allow")
                    })?
                }
            };
            builder = builder.header(name, value);
        }
        if !self.has_content_type && !body.is_empty() {
            let content_type = if message.is_json() {
                "application/json"
            } else {
                "text/plain; charset=utf-8"
            };
            builder = builder.header(header::CONTENT_TYPE, content_type);
        }
        builder.body(Full::new(body)).map_err(|e| e.to_string())
    }

    pub fn reads_metadata(&self) -> bool {
        self.url.reads_metadata() || self.headers.iter().any(|(_, _, t)| t.reads_metadata())
    }

    pub async fn send(&self, message: &Message) -> Attempt {
        let mut uri = match &self.fixed_uri {
            Some(uri) => uri.clone(),
            None => match self.url.render(&message.value, &message.metadata) {
                Err(e) => {
                    return Attempt::Fatal {
                        reason: format!("url: {e}"),
                        response: None,
                    };
                }
                Ok(url) => match check_uri(&url) {
                    Ok(uri) => uri,
                    Err(reason) => {
                        return Attempt::Fatal {
                            reason,
                            response: None,
                        };
                    }
                },
            },
        };
        let body = message.body();
        let origin = (uri.scheme().cloned(), uri.authority().cloned());
        let mut method = self.method.clone();
        // One more request with fresh credentials after a 401, once.
        let mut renewed = false;
        let mut hops = 0;
        while hops <= MAX_REDIRECTS {
            // Configured headers and credentials go only to the configured origin.
            let same_origin =
                uri.scheme() == origin.0.as_ref() && uri.authority() == origin.1.as_ref();
            if let Some(limit) = &self.rate_limit {
                limit.wait().await;
            }
            let credentials = match (&self.auth, same_origin) {
                (Some(auth), true) => match auth.credentials().await {
                    Ok(c) => Some(c),
                    Err(e @ AuthError::Unavailable { .. }) => {
                        return Attempt::Retryable {
                            reason: e.to_string(),
                            retry_after: None,
                            response: None,
                        };
                    }
                    Err(e @ AuthError::Refused { .. }) => {
                        return Attempt::Fatal {
                            reason: e.to_string(),
                            response: None,
                        };
                    }
                },
                _ => None,
            };
            let request = match self.request(
                uri.clone(),
                method.clone(),
                message,
                body.clone(),
                same_origin,
                credentials.as_ref(),
            ) {
                Ok(r) => r,
                Err(reason) => {
                    return Attempt::Fatal {
                        reason,
                        response: None,
                    };
                }
            };
            let response = match self
                .client
                .send(request, self.timeout, RESPONSE_LIMIT)
                .await
            {
                Ok(r) => r,
                Err(e @ (ClientError::Timeout(_) | ClientError::Connect(_))) => {
                    return Attempt::Retryable {
                        reason: format!("{method} {uri}: {e}"),
                        retry_after: None,
                        response: None,
                    };
                }
            };
            let status = response.status();
            if status == StatusCode::UNAUTHORIZED
                && !renewed
                && let (Some(auth), Some(used)) = (&self.auth, &credentials)
                && auth.refused(used).await
            {
                renewed = true;
                continue;
            }
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
                format!("{method} {uri} answered {status}: {body}")
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
                    hops += 1;
                }
            }
        }
        Attempt::Fatal {
            reason: format!("more than {MAX_REDIRECTS} redirects"),
            response: None,
        }
    }
}

/// `Retry-After` as a wait: delay-seconds or an HTTP-date (a date in the past means now).
pub fn retry_after(value: Option<&HeaderValue>, now: SystemTime) -> Option<Duration> {
    let text = value?.to_str().ok()?.trim();
    if let Ok(seconds) = text.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let when = httpdate::parse_http_date(text).ok()?;
    Some(when.duration_since(now).unwrap_or(Duration::ZERO))
}

#[cfg(test)]
mod tests {
    use super::*;

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
            headers: BTreeMap::new(),
            timeout: default_timeout(),
            retry: RetryConfig::default(),
            follow_redirects: false,
            retry_on: vec![],
            fail_on: vec![],
            drop_on: vec![StatusSpec::parse("409").unwrap()],
            auth: None,
            rate_limit: None,
        }
        .build(&HttpClient::new(), &Resources::default())
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
