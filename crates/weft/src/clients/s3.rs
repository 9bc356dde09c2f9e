//! S3 and the stores that speak its API (MinIO, Ceph, Cloudflare R2, rclone), for the `s3`
//! input and output. `rusty-s3` signs each request (AWS Signature V4, as a presigned URL: the
//! signature travels in the query); weft's own HTTP client sends it, so S3 calls go through
//! the outbound guard, the `client:` TLS settings, and any rate limit or circuit breaker named,
//! like every other API call, on the one HTTP stack and the one crypto provider.
//!
//! Credentials are `credentials:` in the config, else the `AWS_ACCESS_KEY_ID`,
//! `AWS_SECRET_ACCESS_KEY` (and `AWS_SESSION_TOKEN`) variables, read once at start: temporary
//! credentials are not renewed (an expired token fails with `ExpiredToken` until a restart). An error the store answers is
//! shown by its code and message only: S3's error documents can repeat the access key and the
//! request as signed.

use std::time::Duration;

use bytes::Bytes;
use http::{HeaderName, HeaderValue, Method, Response};
use rusty_s3::{Bucket, S3Action, UrlStyle};
use serde::Deserialize;

use super::call::CallSettings;
use super::request::{Parts, RequestSpec, attempt_of, attempt_of_status, cut_short};
use super::{Resources, Shared};
use crate::config::{BuildError, Secret};
use crate::core::{Attempt, Value};

/// `credentials:` of an S3 component.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct S3Credentials {
    /// The access key id.
    pub access_key_id: String,
    /// The secret access key.
    pub secret_access_key: Secret,
    /// A session token, for temporary credentials.
    #[serde(default)]
    pub session_token: Option<Secret>,
}

/// Where the bucket is, as an S3 component's config holds it (`call_config!`'s `s3` fields).
pub struct Settings<'a> {
    pub bucket: &'a str,
    pub region: Option<&'a str>,
    pub endpoint: Option<&'a str>,
    pub path_style: Option<bool>,
    pub credentials: Option<&'a S3Credentials>,
    pub call: CallSettings<'a>,
}

/// The [`Settings`] of a config that `call_config!` wrote with the `s3` flag.
macro_rules! s3_settings {
    ($config:expr) => {
        $crate::clients::s3::Settings {
            bucket: &$config.bucket,
            region: $config.region.as_deref(),
            endpoint: $config.endpoint.as_deref(),
            path_style: $config.path_style,
            credentials: $config.credentials.as_ref(),
            call: $config.call(),
        }
    };
}

pub(crate) use s3_settings;

/// How long a signed request stays valid: it goes out at once, but may wait for a rate limit.
const SIGNED_FOR: Duration = Duration::from_secs(15 * 60);

/// The most of an answer read for anything but an object (a listing page of 1,000 keys is
/// about 300 KB).
const ANSWER_LIMIT: usize = 4 << 20;

/// The most parts S3 takes in one upload.
const MAX_PARTS: usize = 10_000;

/// One bucket, reached with one set of credentials.
pub struct S3 {
    bucket: Bucket,
    credentials: Option<rusty_s3::Credentials>,
    spec: RequestSpec,
}

/// An object as a listing shows it.
pub struct Listed {
    pub key: String,
    pub size: u64,
    pub last_modified: Option<String>,
    pub etag: Option<String>,
}

/// Why an object could not be read.
pub enum GetError {
    /// There is no such object (any more).
    Missing,
    /// It is no longer the version asked for (`If-Match` failed).
    Changed,
    /// Worth trying again later (no answer, a 5xx, `SlowDown`), as a reason to show.
    Again(String),
    /// Refused for good, as a reason to show.
    Failed(String),
}

/// The status the store answered with, if it answered.
fn status(attempt: &Attempt) -> Option<u16> {
    match attempt {
        Attempt::Fatal {
            response: Some(answer),
            ..
        }
        | Attempt::Retryable {
            response: Some(answer),
            ..
        } => Some(answer.status),
        _ => None,
    }
}

/// What is not a 2xx answer, or no answer: the reason, as an attempt.
fn reason(attempt: Attempt) -> String {
    match attempt {
        Attempt::Retryable { reason, .. }
        | Attempt::Fatal { reason, .. }
        | Attempt::Drop { reason } => reason,
        Attempt::Delivered => String::new(),
    }
}

impl S3 {
    /// Checks the settings; credentials missing everywhere is a config error.
    pub fn build(
        shared: &Shared,
        resources: &Resources,
        settings: Settings<'_>,
    ) -> Result<S3, Vec<BuildError>> {
        let mut errors = Vec::new();
        let region = settings.region.unwrap_or("us-east-1");
        let endpoint = settings
            .endpoint
            .map(str::to_string)
            .unwrap_or_else(|| format!("https://s3.{region}.amazonaws.com"));
        let style = match settings.path_style {
            Some(true) => UrlStyle::Path,
            Some(false) => UrlStyle::VirtualHost,
            // Most S3-compatible servers have no DNS name per bucket.
            None if settings.endpoint.is_some() => UrlStyle::Path,
            None => UrlStyle::VirtualHost,
        };
        let bucket = match url::Url::parse(&endpoint) {
            Ok(url) if matches!(url.scheme(), "http" | "https") && url.host().is_some() => {
                Bucket::new(url, style, settings.bucket.to_string(), region.to_string())
                    .map_err(|e| errors.push(BuildError::new("bucket", e.to_string())))
                    .ok()
            }
            _ => {
                errors.push(BuildError::new(
                    "endpoint",
                    format!("`{endpoint}` is not an http:// or https:// URL"),
                ));
                None
            }
        };
        let credentials = match settings.credentials {
            Some(c) => Some(match &c.session_token {
                Some(token) => rusty_s3::Credentials::new_with_token(
                    c.access_key_id.clone(),
                    c.secret_access_key.expose(),
                    token.expose(),
                ),
                None => rusty_s3::Credentials::new(
                    c.access_key_id.clone(),
                    c.secret_access_key.expose(),
                ),
            }),
            None => rusty_s3::Credentials::from_env(),
        };
        if credentials.is_none() {
            errors.push(BuildError::new(
                "credentials",
                "none given, and AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY are not set",
            ));
        }
        if let Some(c) = &credentials {
            // Kept out of every text weft shows, like any secret of the config.
            crate::config::secret::learn_secret(c.secret());
            if let Some(token) = c.token() {
                crate::config::secret::learn_secret(token);
            }
        }
        let spec = RequestSpec::build(
            &shared.http,
            resources,
            Parts {
                url: &endpoint,
                method: "GET",
                auth: None,
                call: settings.call,
            },
        )
        .map_err(|e| errors.extend(e))
        .ok();
        match (bucket, spec) {
            (Some(bucket), Some(spec)) if errors.is_empty() => Ok(S3 {
                bucket,
                credentials,
                spec,
            }),
            _ => Err(errors),
        }
    }

    /// The bucket's name.
    pub fn bucket(&self) -> &str {
        self.bucket.name()
    }

    /// `s3://bucket/key`, as messages show an object.
    pub fn shown(&self, key: &str) -> String {
        format!("s3://{}/{key}", self.bucket.name())
    }

    /// Whether a configured header reads the message's metadata.
    pub fn reads_metadata(&self) -> bool {
        self.spec.reads_metadata()
    }

    /// One signed exchange that must end in a whole 2xx answer.
    #[allow(clippy::too_many_arguments)]
    async fn call(
        &self,
        method: Method,
        url: url::Url,
        key: &str,
        message: (&Value, &Value),
        body: Bytes,
        content_type: Option<&str>,
        extra: &[(HeaderName, HeaderValue)],
        limit: usize,
    ) -> Result<Response<Bytes>, Attempt> {
        let shown = self.shown(key);
        let uri: http::Uri = url.as_str().parse().map_err(|_| Attempt::Fatal {
            reason: format!("{shown}: the key makes no valid URL"),
            response: None,
        })?;
        // hyper sends no length for an empty body, and S3 answers a PUT or POST without one
        // with 411.
        let mut with_length;
        let extra = if body.is_empty() && (method == Method::PUT || method == Method::POST) {
            with_length = extra.to_vec();
            with_length.push((http::header::CONTENT_LENGTH, HeaderValue::from_static("0")));
            &with_length[..]
        } else {
            extra
        };
        let response = self
            .spec
            .exchange_with(
                &uri,
                &method,
                message.0,
                message.1,
                body,
                content_type,
                true,
                limit,
                extra,
            )
            .await
            .map_err(|e| attempt_of(e, &method, &shown))?;
        if !response.status().is_success() {
            return Err(attempt_of_status(&plain_error(response), &method, &shown));
        }
        match cut_short(&response, &method, || shown.clone()) {
            Some(failed) => Err(failed),
            None => Ok(response),
        }
    }

    /// Writes `body` under `key`; bodies over `part_size` go up as a multipart upload.
    pub async fn put(
        &self,
        key: &str,
        body: Bytes,
        content_type: &str,
        part_size: usize,
        message: (&Value, &Value),
    ) -> Result<(), Attempt> {
        if body.len() > part_size {
            return self
                .put_in_parts(key, body, content_type, part_size, message)
                .await;
        }
        let url = self
            .bucket
            .put_object(self.credentials.as_ref(), key)
            .sign(SIGNED_FOR);
        self.call(
            Method::PUT,
            url,
            key,
            message,
            body,
            Some(content_type),
            &[],
            ANSWER_LIMIT,
        )
        .await
        .map(|_| ())
    }

    async fn put_in_parts(
        &self,
        key: &str,
        body: Bytes,
        content_type: &str,
        part_size: usize,
        message: (&Value, &Value),
    ) -> Result<(), Attempt> {
        if body.len().div_ceil(part_size) > MAX_PARTS {
            return Err(Attempt::Fatal {
                reason: format!(
                    "{}: {} bytes make more than {MAX_PARTS} parts of part_size; raise it",
                    self.shown(key),
                    body.len()
                ),
                response: None,
            });
        }
        let credentials = self.credentials.as_ref();
        let url = self
            .bucket
            .create_multipart_upload(credentials, key)
            .sign(SIGNED_FOR);
        // The type is given when the upload is made: the parts carry bytes only.
        let extra = [(
            http::header::CONTENT_TYPE,
            HeaderValue::from_str(content_type).map_err(|_| Attempt::Fatal {
                reason: format!("content type `{content_type}` is not valid in a header"),
                response: None,
            })?,
        )];
        let extra = if self.spec.sets_content_type() {
            &[][..]
        } else {
            &extra[..]
        };
        let answer = self
            .call(
                Method::POST,
                url,
                key,
                message,
                Bytes::new(),
                None,
                extra,
                ANSWER_LIMIT,
            )
            .await?;
        // Read leniently: S3-compatible stores differ in namespaces and extra fields.
        let upload_id = std::str::from_utf8(answer.body())
            .ok()
            .and_then(|text| tag(text, "UploadId"))
            .filter(|id| !id.is_empty())
            .ok_or_else(|| Attempt::Retryable {
                reason: format!(
                    "{}: the store's answer to a new upload did not parse",
                    self.shown(key)
                ),
                retry_after: None,
                response: None,
            })?;
        let upload_id = upload_id.as_str();
        let uploaded = async {
            let mut etags = Vec::new();
            for (i, part) in body.chunks(part_size).enumerate() {
                // At most MAX_PARTS, checked above.
                let number = u16::try_from(i + 1).unwrap_or(u16::MAX);
                let url = self
                    .bucket
                    .upload_part(credentials, key, number, upload_id)
                    .sign(SIGNED_FOR);
                let answer = self
                    .call(
                        Method::PUT,
                        url,
                        key,
                        message,
                        body.slice_ref(part),
                        None,
                        &[],
                        ANSWER_LIMIT,
                    )
                    .await?;
                let etag = answer
                    .headers()
                    .get(http::header::ETAG)
                    .and_then(|v| v.to_str().ok())
                    .ok_or_else(|| Attempt::Retryable {
                        reason: format!(
                            "{}: part {number} was answered without an ETag",
                            self.shown(key)
                        ),
                        retry_after: None,
                        response: None,
                    })?;
                etags.push(etag.to_string());
            }
            let complete = self.bucket.complete_multipart_upload(
                credentials,
                key,
                upload_id,
                etags.iter().map(String::as_str),
            );
            let url = complete.sign(SIGNED_FOR);
            let xml = complete.body();
            let answer = self
                .call(
                    Method::POST,
                    url,
                    key,
                    message,
                    Bytes::from(xml),
                    Some("application/xml"),
                    &[],
                    ANSWER_LIMIT,
                )
                .await?;
            // S3 may answer 200 and then an error in the body, once the parts were joined.
            let text = String::from_utf8_lossy(answer.body());
            if text.contains("<Error>") {
                return Err(Attempt::Retryable {
                    reason: format!(
                        "{}: joining the parts failed: {}",
                        self.shown(key),
                        error_text(&text)
                    ),
                    retry_after: None,
                    response: None,
                });
            }
            Ok(())
        }
        .await;
        if uploaded.is_err() {
            // Parts left behind are billed until a lifecycle rule clears them: give them up.
            let url = self
                .bucket
                .abort_multipart_upload(credentials, key, upload_id)
                .sign(SIGNED_FOR);
            if let Err(e) = self
                .call(
                    Method::DELETE,
                    url,
                    key,
                    message,
                    Bytes::new(),
                    None,
                    &[],
                    ANSWER_LIMIT,
                )
                .await
            {
                tracing::warn!(object = %self.shown(key), error = %reason(e), "could not abort an unfinished upload");
            }
        }
        uploaded
    }

    /// Every object under `prefix`, page by page.
    pub async fn list(&self, prefix: &str) -> Result<Vec<Listed>, String> {
        let mut listed = Vec::new();
        let mut token: Option<String> = None;
        let none = Value::Null;
        loop {
            let mut action = self.bucket.list_objects_v2(self.credentials.as_ref());
            if !prefix.is_empty() {
                action.with_prefix(prefix);
            }
            if let Some(token) = &token {
                action.with_continuation_token(token.as_str());
            }
            let url = action.sign(SIGNED_FOR);
            let answer = self
                .call(
                    Method::GET,
                    url,
                    prefix,
                    (&none, &none),
                    Bytes::new(),
                    None,
                    &[],
                    ANSWER_LIMIT,
                )
                .await
                .map_err(reason)?;
            let page = std::str::from_utf8(answer.body())
                .ok()
                .and_then(|text| rusty_s3::actions::ListObjectsV2::parse_response(text).ok())
                .ok_or_else(|| format!("{}: the listing did not parse", self.shown(prefix)))?;
            listed.extend(page.contents.into_iter().map(|o| Listed {
                key: o.key,
                size: o.size.unwrap_or(0),
                last_modified: o.last_modified,
                etag: o.etag,
            }));
            match page.next_continuation_token {
                Some(next) if Some(&next) != token.as_ref() => token = Some(next),
                _ => return Ok(listed),
            }
        }
    }

    /// One exchange that carries no message: `If-Match: etag` when given.
    async fn conditional(
        &self,
        method: Method,
        url: url::Url,
        key: &str,
        etag: Option<&str>,
        limit: usize,
    ) -> Result<Response<Bytes>, Attempt> {
        let extra: Vec<_> = etag
            .and_then(|e| HeaderValue::from_str(e).ok())
            .map(|value| (http::header::IF_MATCH, value))
            .into_iter()
            .collect();
        let none = Value::Null;
        self.call(
            method,
            url,
            key,
            (&none, &none),
            Bytes::new(),
            None,
            &extra,
            limit,
        )
        .await
    }

    /// The object's bytes (at most `limit`) and content type, if it is still `etag`.
    pub async fn get(
        &self,
        key: &str,
        etag: Option<&str>,
        limit: usize,
    ) -> Result<(Bytes, Option<String>), GetError> {
        let url = self
            .bucket
            .get_object(self.credentials.as_ref(), key)
            .sign(SIGNED_FOR);
        match self.conditional(Method::GET, url, key, etag, limit).await {
            Ok(answer) => {
                let content_type = answer
                    .headers()
                    .get(http::header::CONTENT_TYPE)
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_string);
                Ok((answer.into_body(), content_type))
            }
            Err(e) => Err(match status(&e) {
                Some(404) => GetError::Missing,
                Some(412) => GetError::Changed,
                _ if matches!(e, Attempt::Retryable { .. }) => GetError::Again(reason(e)),
                _ => GetError::Failed(reason(e)),
            }),
        }
    }

    /// Deletes the object (S3 answers 204 whether or not it was there); with `etag`, only
    /// while it is that version (one written again meanwhile is left, and `Ok`).
    pub async fn delete(&self, key: &str, etag: Option<&str>) -> Result<(), String> {
        match self.delete_once(key, etag).await {
            // A store that does not do conditional deletes (S3 itself did not until 2024).
            Err((Some(501), _)) if etag.is_some() => self.delete_once(key, None).await,
            done => done,
        }
        .map_err(|(_, reason)| reason)
    }

    async fn delete_once(
        &self,
        key: &str,
        etag: Option<&str>,
    ) -> Result<(), (Option<u16>, String)> {
        let url = self
            .bucket
            .delete_object(self.credentials.as_ref(), key)
            .sign(SIGNED_FOR);
        match self
            .conditional(Method::DELETE, url, key, etag, ANSWER_LIMIT)
            .await
        {
            Ok(_) => Ok(()),
            Err(e) if status(&e) == Some(412) => Ok(()),
            Err(e) => Err((status(&e), reason(e))),
        }
    }

    /// Copies `from` to `to` inside the bucket, on the store's side; with `etag`, only while
    /// `from` is that version (`Ok(false)` when it was written again meanwhile).
    pub async fn copy(&self, from: &str, to: &str, etag: Option<&str>) -> Result<bool, String> {
        let source = format!(
            "/{}/{}",
            self.bucket.name(),
            percent_encoding::utf8_percent_encode(from, KEY)
        );
        let mut headers = vec![("x-amz-copy-source", source)];
        if let Some(etag) = etag {
            headers.push(("x-amz-copy-source-if-match", etag.to_string()));
        }
        let mut action = self.bucket.put_object(self.credentials.as_ref(), to);
        let mut extra = Vec::new();
        for (name, value) in headers {
            // Signed with the request, as S3 wants every `x-amz-` header.
            action.headers_mut().insert(name, value.clone());
            extra.push((
                HeaderName::from_static(name),
                HeaderValue::from_str(&value).map_err(|e| e.to_string())?,
            ));
        }
        let url = action.sign(SIGNED_FOR);
        let none = Value::Null;
        let answer = match self
            .call(
                Method::PUT,
                url,
                to,
                (&none, &none),
                Bytes::new(),
                None,
                &extra,
                ANSWER_LIMIT,
            )
            .await
        {
            Ok(answer) => answer,
            Err(e) if status(&e) == Some(412) => return Ok(false),
            Err(e) => return Err(reason(e)),
        };
        // Like joining parts, a copy can fail after its 200.
        let text = String::from_utf8_lossy(answer.body());
        if text.contains("<Error>") {
            return Err(format!(
                "{}: the copy failed: {}",
                self.shown(to),
                error_text(&text)
            ));
        }
        Ok(true)
    }
}

/// What a key's characters become in `x-amz-copy-source`: all but the unreserved and `/`.
const KEY: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~')
    .remove(b'/');

/// The text of the first `<name>` element of an S3 answer, unescaped.
fn tag(xml: &str, name: &str) -> Option<String> {
    let open = format!("<{name}>");
    let start = xml.find(&open)? + open.len();
    let end = start + xml[start..].find(&format!("</{name}>"))?;
    let text = xml[start..end].trim();
    Some(quick_xml::escape::unescape(text).map_or_else(|_| text.to_string(), |t| t.into_owned()))
}

/// The text of an S3 `<Error>` document: its code and message, nothing else.
fn error_text(xml: &str) -> String {
    match (tag(xml, "Code"), tag(xml, "Message")) {
        (Some(code), Some(message)) => format!("{code}: {message}"),
        (Some(code), None) => code,
        (None, Some(message)) => message,
        (None, None) => "no reason given".to_string(),
    }
}

/// The answer with its body cut down to the error's code and message.
fn plain_error(response: Response<Bytes>) -> Response<Bytes> {
    let (parts, body) = response.into_parts();
    let text = String::from_utf8_lossy(&body);
    let shown = if text.trim().is_empty() {
        String::new()
    } else {
        error_text(&text)
    };
    Response::from_parts(parts, Bytes::from(shown))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_error_document_shows_its_code_and_message_only() {
        let xml = "<?xml version=\"1.0\"?><Error><Code>SignatureDoesNotMatch</Code><Message>The request signature we calculated does not match</Message><AWSAccessKeyId>AKIDEXAMPLE</AWSAccessKeyId><StringToSign>AWS4-HMAC-SHA256…</StringToSign></Error>";
        let text = error_text(xml);
        assert_eq!(
            text,
            "SignatureDoesNotMatch: The request signature we calculated does not match"
        );
        assert!(!text.contains("AKIDEXAMPLE"));
        assert_eq!(error_text("<html>502</html>"), "no reason given");
    }
}
