//! The request every HTTP component configures the same way: a URL and header values with
//! `{{ VRL }}` parts, a method, a timeout, an auth profile, a rate limit and a circuit breaker.
//! [`RequestSpec`] builds them once and makes one exchange at a time: it asks the target's
//! circuit, waits for the rate limit, adds the credentials (to the configured origin only),
//! sends, tells the circuit how it went, and after a 401 renews OAuth 2.0 credentials and sends
//! once more. What an answer means is the component's business.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderName, HeaderValue, Method, Request, Response, StatusCode, Uri, header};
use http_body_util::Full;

use super::Resources;
use super::auth::{AuthError, AuthProfile, Credentials, Signed};
use super::call::CallSettings;
use super::circuit::Breaker;
use super::http::{ClientError, HttpClient};
use super::rate_limit::RateLimit;
use crate::config::BuildError;
use crate::config::secret::redact_url;
use crate::core::retry::Answer;
use crate::core::template::{Escape, Template};
use crate::core::{Attempt, Value};

/// The configured parts, as the component's config struct holds them.
pub struct Parts<'a> {
    pub url: &'a str,
    pub method: &'a str,
    pub auth: Option<&'a str>,
    pub call: CallSettings<'a>,
}

pub struct RequestSpec {
    client: HttpClient,
    url: Template,
    /// The parsed URL when the template has no placeholders.
    fixed_uri: Option<Uri>,
    pub method: Method,
    headers: Vec<(HeaderName, Option<HeaderValue>, Template)>,
    has_content_type: bool,
    pub timeout: Duration,
    auth: Option<Arc<AuthProfile>>,
    /// The one origin (scheme, host, port) credentials are sent to: fixed in the URL template,
    /// so that no message can send them elsewhere.
    auth_origin: Option<String>,
    rate_limit: Option<RateLimit>,
    breaker: Option<Breaker>,
}

/// `scheme://authority` of a URI.
pub fn origin(uri: &Uri) -> String {
    match (uri.scheme_str(), uri.authority()) {
        (Some(scheme), Some(authority)) => format!("{scheme}://{authority}"),
        _ => String::new(),
    }
}

/// The origin a URL template fixes: its text up to the first `{{` must hold the scheme, the
/// host and the `/` that ends them.
fn fixed_origin(template: &str) -> Option<String> {
    let literal = template.split("{{").next().unwrap_or("");
    let rest = literal
        .strip_prefix("https://")
        .map(|r| ("https", r))
        .or_else(|| literal.strip_prefix("http://").map(|r| ("http", r)))?;
    let ends_authority = rest.1.find(['/', '?', '#']).or_else(|| {
        // A URL without placeholders needs no `/` after its host.
        (!template.contains("{{")).then_some(rest.1.len())
    })?;
    let uri: Uri = format!("{}://{}/", rest.0, &rest.1[..ends_authority])
        .parse()
        .ok()?;
    uri.host()?;
    Some(origin(&uri))
}

#[derive(Debug, thiserror::Error)]
pub enum ExchangeError {
    /// The request could not be made from this message (a template failed, a bad header).
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Auth(#[from] AuthError),
    #[error(transparent)]
    Transport(#[from] ClientError),
    #[error(
        "circuit breaker `{breaker}`: the circuit to {} is open; next try in {wait:?}",
        redact_url(target)
    )]
    CircuitOpen {
        breaker: String,
        target: String,
        wait: Duration,
    },
}

impl RequestSpec {
    pub fn build(
        client: &HttpClient,
        resources: &Resources,
        parts: Parts<'_>,
    ) -> Result<RequestSpec, Vec<BuildError>> {
        let mut errors = Vec::new();
        let client = HttpClient::configured(client, parts.call.client)
            .map_err(|e| errors.extend(e))
            .ok();
        let url = Template::parse(parts.url, Escape::Url)
            .map_err(|d| errors.extend(BuildError::from_diagnostics("url", d)))
            .ok();
        let mut fixed_uri = None;
        if let Some(Some(fixed)) = url.as_ref().map(Template::as_static) {
            match check_uri(fixed) {
                Ok(uri) => fixed_uri = Some(uri),
                Err(e) => errors.push(BuildError::new("url", e)),
            }
        }
        let method = Method::from_bytes(parts.method.to_ascii_uppercase().as_bytes())
            .map_err(|_| {
                errors.push(BuildError::new(
                    "method",
                    format!("invalid HTTP method `{}`", parts.method),
                ))
            })
            .ok();
        let mut headers = Vec::new();
        for (name, value) in parts.call.headers {
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
        let auth = match parts.auth.map(|name| resources.auth(name)) {
            None => None,
            Some(Ok(profile)) => Some(profile),
            Some(Err(e)) => {
                errors.push(BuildError::new("auth", e));
                None
            }
        };
        let auth_origin = fixed_origin(parts.url);
        if parts.auth.is_some() && auth_origin.is_none() {
            errors.push(BuildError::new(
                "url",
                "with `auth`, the URL must start with a fixed scheme and host (`https://api.example.com/{{ … }}`), so that no message can send the credentials elsewhere",
            ));
        }
        let rate_limit = match parts.call.rate_limit.map(|n| resources.rate_limit(n)) {
            None => None,
            Some(Ok(limit)) => Some(limit),
            Some(Err(e)) => {
                errors.push(BuildError::new("rate_limit", e));
                None
            }
        };
        let breaker = match parts
            .call
            .circuit_breaker
            .map(|n| resources.circuit_breaker(n))
        {
            None => None,
            Some(Ok(b)) => Some(b),
            Some(Err(e)) => {
                errors.push(BuildError::new("circuit_breaker", e));
                None
            }
        };
        match (url, method, client) {
            (Some(url), Some(method), Some(client)) if errors.is_empty() => Ok(RequestSpec {
                client,
                url,
                fixed_uri,
                method,
                has_content_type: headers.iter().any(|(n, _, _)| n == header::CONTENT_TYPE),
                headers,
                timeout: parts.call.timeout,
                auth,
                auth_origin,
                rate_limit,
                breaker,
            }),
            _ => Err(errors),
        }
    }

    /// Sends the credentials of `profile` (one built here rather than named in
    /// `resources.auth`), to the URL's fixed origin only.
    pub fn with_auth(mut self, profile: Arc<AuthProfile>) -> Result<RequestSpec, String> {
        if self.auth_origin.is_none() {
            return Err("with credentials, the URL must start with a fixed scheme and host".into());
        }
        self.auth = Some(profile);
        Ok(self)
    }

    /// Whether a configured header sets the `Content-Type`.
    pub fn sets_content_type(&self) -> bool {
        self.has_content_type
    }

    /// Whether a URL or header template reads metadata.
    pub fn reads_metadata(&self) -> bool {
        self.url.reads_metadata() || self.headers.iter().any(|(_, _, t)| t.reads_metadata())
    }

    /// The URL for this message.
    pub fn uri(&self, value: &Value, metadata: &Value) -> Result<Uri, String> {
        match &self.fixed_uri {
            Some(uri) => Ok(uri.clone()),
            None => {
                let url = self
                    .url
                    .render(value, metadata)
                    .map_err(|e| format!("url: {e}"))?;
                check_uri(&url)
            }
        }
    }

    /// One exchange with `uri`. The configured headers go only when `configured_origin` (never
    /// to another origin a redirect pointed at); credentials only to the origin the URL
    /// template fixes. `content_type` is sent unless a configured header sets one.
    #[allow(clippy::too_many_arguments)]
    pub async fn exchange(
        &self,
        uri: &Uri,
        method: &Method,
        value: &Value,
        metadata: &Value,
        body: Bytes,
        content_type: Option<&str>,
        configured_origin: bool,
        response_limit: usize,
    ) -> Result<Response<Bytes>, ExchangeError> {
        self.exchange_with(
            uri,
            method,
            value,
            metadata,
            body,
            content_type,
            configured_origin,
            response_limit,
            &[],
        )
        .await
    }

    /// One call for `message` to `uri` (the configured origin) that must succeed: a whole 2xx
    /// answer, or the attempt's failure — no answer, a status judged by the usual classes
    /// ([`attempt_of_status`]), or a body cut short.
    #[allow(clippy::too_many_arguments)]
    pub async fn success(
        &self,
        uri: &Uri,
        method: &Method,
        message: (&Value, &Value),
        body: Bytes,
        content_type: Option<&str>,
        response_limit: usize,
        extra: &[(HeaderName, HeaderValue)],
    ) -> Result<Response<Bytes>, Attempt> {
        let response = self
            .exchange_with(
                uri,
                method,
                message.0,
                message.1,
                body,
                content_type,
                true,
                response_limit,
                extra,
            )
            .await
            .map_err(|e| attempt_of(e, method, &self.shown(uri)))?;
        if !response.status().is_success() {
            return Err(attempt_of_status(&response, method, &self.shown(uri)));
        }
        match cut_short(&response, method, || self.shown(uri)) {
            Some(failed) => Err(failed),
            None => Ok(response),
        }
    }

    /// [`RequestSpec::exchange`] with headers of this message's own (e.g. OpenAPI header
    /// parameters), sent after the configured ones.
    #[allow(clippy::too_many_arguments)]
    pub async fn exchange_with(
        &self,
        uri: &Uri,
        method: &Method,
        value: &Value,
        metadata: &Value,
        body: Bytes,
        content_type: Option<&str>,
        configured_origin: bool,
        response_limit: usize,
        extra: &[(HeaderName, HeaderValue)],
    ) -> Result<Response<Bytes>, ExchangeError> {
        // Only a circuit, credentials or a per-target limit need the origin; a plain call does
        // not pay for it.
        let target = if self.breaker.is_some()
            || self.auth.is_some()
            || self.rate_limit.as_ref().is_some_and(RateLimit::per_target)
        {
            origin(uri)
        } else {
            String::new()
        };
        let to_auth_origin = self.auth_origin.as_deref() == Some(target.as_str());
        let mut renewed = false;
        loop {
            if let Some(breaker) = &self.breaker {
                breaker
                    .admit(&target)
                    .map_err(|wait| ExchangeError::CircuitOpen {
                        breaker: breaker.name().to_string(),
                        target: target.clone(),
                        wait,
                    })?;
            }
            // The futures of what only some calls configure are boxed: held inline they would
            // size every call's future, which is copied whole into its box once per message.
            if let Some(limit) = &self.rate_limit {
                Box::pin(limit.wait(&target)).await;
            }
            let credentials = match (&self.auth, configured_origin && to_auth_origin) {
                (Some(auth), true) => Some(
                    Box::pin(auth.credentials(&Signed {
                        method,
                        uri,
                        body: &body,
                    }))
                    .await?,
                ),
                _ => None,
            };
            let request = self
                .request(
                    uri,
                    method,
                    value,
                    metadata,
                    body.clone(),
                    content_type,
                    configured_origin,
                    credentials.as_ref(),
                    extra,
                )
                .map_err(ExchangeError::Invalid)?;
            let sent = self
                .client
                .send(request, self.timeout, response_limit)
                .await;
            if let Some(breaker) = &self.breaker {
                let failed = match &sent {
                    Err(_) => true,
                    Ok(r) => {
                        let code = r.status().as_u16();
                        r.status().is_server_error() || code == 408 || code == 429
                    }
                };
                breaker.record(&target, failed);
            }
            let response = sent?;
            if response.status() == StatusCode::UNAUTHORIZED
                && !renewed
                && let (Some(auth), Some(used)) = (&self.auth, &credentials)
                && Box::pin(auth.refused(used)).await
            {
                renewed = true;
                continue;
            }
            return Ok(response);
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn request(
        &self,
        uri: &Uri,
        method: &Method,
        value: &Value,
        metadata: &Value,
        body: Bytes,
        content_type: Option<&str>,
        with_headers: bool,
        credentials: Option<&Credentials>,
        extra: &[(HeaderName, HeaderValue)],
    ) -> Result<Request<Full<Bytes>>, String> {
        let mut uri = uri.clone();
        for (name, key) in credentials.map_or(&[][..], |c| &c.query[..]) {
            uri = with_query(&without_query(&uri, name), name, key.expose())?;
        }
        let mut builder = Request::builder().method(method.clone()).uri(uri);
        for (name, value) in credentials.map_or(&[][..], |c| &c.headers[..]) {
            builder = builder.header(name, value.clone());
        }
        let headers = if with_headers { &self.headers[..] } else { &[] };
        for (name, fixed, template) in headers {
            let header_value = match fixed {
                Some(v) => v.clone(),
                None => {
                    let text = template
                        .render(value, metadata)
                        .map_err(|e| format!("header `{name}`: {e}"))?;
                    HeaderValue::from_str(&text).map_err(|_| {
                        format!("header `{name}`: value has characters HTTP does not allow")
                    })?
                }
            };
            builder = builder.header(name, header_value);
        }
        for (name, header_value) in extra {
            builder = builder.header(name, header_value.clone());
        }
        if let Some(traceparent) = crate::core::trace::outbound_traceparent()
            && let Ok(value) = HeaderValue::from_str(&traceparent)
            && let Some(headers) = builder.headers_mut()
        {
            // Replaces one the config set: a request carries one trace context.
            headers.insert(crate::core::trace::TRACEPARENT, value);
        }
        if !self.has_content_type
            && !body.is_empty()
            && let Some(content_type) = content_type
        {
            builder = builder.header(header::CONTENT_TYPE, content_type);
        }
        builder.body(Full::new(body)).map_err(|e| e.to_string())
    }
}

/// What a failed exchange means for an attempt: a refused auth or an unusable request fails
/// for good; no answer, an open circuit or an auth server that is down are worth retrying.
pub fn attempt_of(error: ExchangeError, method: &Method, shown: &str) -> Attempt {
    match error {
        ExchangeError::Invalid(reason) => Attempt::Fatal {
            reason,
            response: None,
        },
        ExchangeError::Auth(e @ AuthError::Refused { .. }) => Attempt::Fatal {
            reason: e.to_string(),
            response: None,
        },
        e @ ExchangeError::CircuitOpen { wait, .. } => Attempt::Retryable {
            reason: e.to_string(),
            retry_after: Some(wait),
            response: None,
        },
        e @ ExchangeError::Auth(AuthError::Unavailable { .. }) => Attempt::Retryable {
            reason: e.to_string(),
            retry_after: None,
            response: None,
        },
        ExchangeError::Transport(e @ ClientError::Denied(_)) => Attempt::Fatal {
            reason: format!("{method} {shown}: {e}"),
            response: None,
        },
        ExchangeError::Transport(e) => Attempt::Retryable {
            reason: format!("{method} {shown}: {e}"),
            retry_after: None,
            response: None,
        },
    }
}

/// What an answer other than 2xx means for an attempt, by the usual classes: 408, 429 and 5xx
/// (but 501) are retried (honouring `Retry-After`), anything else fails for good.
pub fn attempt_of_status(response: &Response<Bytes>, method: &Method, shown: &str) -> Attempt {
    let status = response.status();
    let code = status.as_u16();
    let body = response.body();
    let excerpt = String::from_utf8_lossy(&body[..body.len().min(RESPONSE_EXCERPT)]).into_owned();
    let reason = format!("{method} {shown} answered {status}: {excerpt}");
    let answer = Some(Answer {
        status: code,
        excerpt,
    });
    if code == 408 || code == 429 || (status.is_server_error() && code != 501) {
        Attempt::Retryable {
            reason,
            retry_after: retry_after(
                response.headers().get(header::RETRY_AFTER),
                std::time::SystemTime::now(),
            ),
            response: answer,
        }
    } else {
        Attempt::Fatal {
            reason,
            response: answer,
        }
    }
}

/// An answer whose body was cut short (over the size limit, or broken off): worth a retry,
/// since a connection that broke off mid-answer usually does not again.
pub fn cut_short(
    response: &Response<Bytes>,
    method: &Method,
    shown: impl FnOnce() -> String,
) -> Option<Attempt> {
    response
        .extensions()
        .get::<super::http::Truncated>()
        .map(|_| Attempt::Retryable {
            reason: format!(
                "{method} {}: the answer was cut short (over the size limit, or broken off)",
                shown()
            ),
            retry_after: None,
            response: None,
        })
}

/// The most of an answer's body put in a failure reason.
const RESPONSE_EXCERPT: usize = 512;

/// A `Retry-After` value (seconds or an HTTP date) as a wait from `now`. Seconds with a
/// fraction (`2.0`, Shopify's) are read too, though RFC 9110 writes whole ones.
pub fn retry_after(value: Option<&HeaderValue>, now: std::time::SystemTime) -> Option<Duration> {
    let text = value?.to_str().ok()?.trim();
    if let Ok(seconds) = text.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    if text.bytes().all(|b| b.is_ascii_digit() || b == b'.')
        && let Ok(seconds) = text.parse::<f64>()
    {
        return Duration::try_from_secs_f64(seconds).ok();
    }
    let when = httpdate::parse_http_date(text).ok()?;
    Some(when.duration_since(now).unwrap_or(Duration::ZERO))
}

impl RequestSpec {
    /// `uri` as it may be shown in errors and logs: without the auth profile's query key.
    pub fn shown(&self, uri: &Uri) -> String {
        let mut shown = uri.clone();
        for name in self
            .auth
            .as_ref()
            .map(|a| a.query_params())
            .unwrap_or_default()
        {
            shown = without_query(&shown, name);
        }
        redact_url(&shown.to_string())
    }
}

/// `uri` without any `name=…` in its query.
pub fn without_query(uri: &Uri, name: &str) -> Uri {
    let Some(query) = uri.query() else {
        return uri.clone();
    };
    // The other pairs stay exactly as they were written (delimiters, encodings).
    let kept: Vec<&str> = query
        .split('&')
        .filter(|pair| {
            let key = pair.split('=').next().unwrap_or("");
            form_urlencoded::parse(key.as_bytes())
                .next()
                .is_none_or(|(k, _)| k != name)
        })
        .collect();
    if kept.len() == query.split('&').count() {
        return uri.clone();
    }
    let path = uri.path();
    let path_and_query = if kept.is_empty() {
        path.to_string()
    } else {
        format!("{path}?{}", kept.join("&"))
    };
    let mut parts = uri.clone().into_parts();
    match path_and_query.parse() {
        Ok(pq) => {
            parts.path_and_query = Some(pq);
            Uri::from_parts(parts).unwrap_or_else(|_| uri.clone())
        }
        Err(_) => uri.clone(),
    }
}

/// `uri` with `name=value` added to its query (the caller reports the URI without it).
pub fn with_query(uri: &Uri, name: &str, value: &str) -> Result<Uri, String> {
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
            .map_err(|_| format!("`{name}` does not fit in a URL"))?,
    );
    Uri::from_parts(parts).map_err(|_| format!("`{name}` does not fit in a URL"))
}

pub fn check_uri(text: &str) -> Result<Uri, String> {
    let uri: Uri = text
        .parse()
        .map_err(|e| format!("invalid URL `{}`: {e}", redact_url(text)))?;
    match uri.scheme_str() {
        Some("http" | "https") if uri.host().is_some() => Ok(uri),
        _ => Err(format!(
            "invalid URL `{}`: it needs http:// or https:// and a host",
            redact_url(text)
        )),
    }
}
