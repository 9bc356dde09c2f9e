//! `Idempotency-Key` for server inputs: a request repeated with the same key within `ttl` gets
//! the first request's answer again, and its message is delivered once.
//!
//! The protocol, kept in the store under `idempotency/<flow>`:
//! - The first request with a key takes it with a *pending* record (the request's fingerprint:
//!   method, path, query and body) and is processed.
//! - Its answer is then stored with the key when it is final — a success (2xx) or a failure the
//!   same request would meet again (422) — and replayed to every repeat (with
//!   `Idempotent-Replayed: true`). Any other answer (502, 503, …) gives the key back, so the
//!   client's retry is processed.
//! - A repeat while the first is still in progress gets `409` + `Retry-After`; the same key with a
//!   different request gets `422`. A pending record outlives a crash by at most [`PENDING_TTL`].
//!
//! ```yaml
//! input:
//!   http_server:
//!     address: 0.0.0.0:8080
//!     idempotency:
//!       header: Idempotency-Key   # default
//!       ttl: 24h                  # default
//! ```

use std::time::Duration;

use axum::body::Body;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use http::{HeaderName, HeaderValue, StatusCode, header};
use serde::{Deserialize, Serialize};
use weft_store::{Store, StoreError};

use crate::config::BuildError;
use crate::config::units::Dur;
use crate::core::clock::now_ms;

use crate::server::problem::Problem;

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[schemars(rename = "IdempotencyConfig")]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The request header that carries the key.
    #[serde(default = "default_header")]
    pub header: String,
    /// How long an answer is kept for repeats.
    #[serde(default = "default_ttl")]
    pub ttl: Dur,
}

fn default_header() -> String {
    "Idempotency-Key".into()
}
fn default_ttl() -> Dur {
    Dur(Duration::from_secs(24 * 3600))
}

/// How long a key taken by a request that never finished (the process died) stays taken.
pub const PENDING_TTL: Duration = Duration::from_secs(600);
/// The longest key accepted.
const MAX_KEY: usize = 255;

impl Config {
    pub fn build(&self) -> Result<Idempotency, Vec<BuildError>> {
        let mut errors = Vec::new();
        let header = HeaderName::from_bytes(self.header.as_bytes())
            .map_err(|_| {
                errors.push(BuildError::new(
                    "idempotency.header",
                    format!("`{}` is not a valid header name", self.header),
                ))
            })
            .ok();
        if self.ttl.0.is_zero() {
            errors.push(BuildError::new("idempotency.ttl", "ttl must be above zero"));
        }
        match header {
            Some(header) if errors.is_empty() => Ok(Idempotency {
                header,
                ttl_ms: self.ttl.0.as_millis().min(i64::MAX as u128) as i64,
            }),
            _ => Err(errors),
        }
    }
}

#[derive(Debug, Clone)]
pub struct Idempotency {
    header: HeaderName,
    ttl_ms: i64,
}

/// What a key's record says. Stored as this JSON, a newline, then the answer's body bytes.
#[derive(Debug, Serialize, Deserialize, schemars::JsonSchema)]
struct Record {
    fingerprint: String,
    /// `None` while the first request is in progress.
    status: Option<u16>,
    #[serde(default)]
    content_type: Option<String>,
    /// Unique per request while it is in progress, so that a request only ever finishes or
    /// gives back its own record (never a later request's, after its own lapsed).
    #[serde(default)]
    holder: Option<String>,
}

fn encode(record: &Record, body: &[u8]) -> Vec<u8> {
    let mut out = serde_json::to_vec(record).expect("a record always serializes");
    out.push(b'\n');
    out.extend_from_slice(body);
    out
}

fn decode(stored: &[u8]) -> Option<(Record, &[u8])> {
    let split = stored.iter().position(|b| *b == b'\n')?;
    let record = serde_json::from_slice(&stored[..split]).ok()?;
    Some((record, &stored[split + 1..]))
}

/// What to do with a request.
pub enum Begin {
    /// No key given: process as usual.
    Unkeyed,
    /// The first request with this key: process it, then hand the answer to [`Ticket::finish`].
    First(Ticket),
    /// A repeat: answer with this, process nothing.
    Answer(Response),
}

#[derive(Debug, thiserror::Error)]
pub enum IdempotencyError {
    #[error("the {header} header must be 1 to {MAX_KEY} visible ASCII characters")]
    BadKey { header: HeaderName },
    #[error("idempotency: {0}")]
    Store(#[from] StoreError),
}

impl Idempotency {
    /// Looks the request's key up, taking it if it is new.
    pub async fn begin(
        &self,
        store: &Store,
        flow: &str,
        parts: &http::request::Parts,
        body: &Bytes,
    ) -> Result<Begin, IdempotencyError> {
        let Some(value) = parts.headers.get(&self.header) else {
            return Ok(Begin::Unkeyed);
        };
        let key = value
            .to_str()
            .ok()
            .filter(|k| !k.is_empty() && k.len() <= MAX_KEY)
            .ok_or_else(|| IdempotencyError::BadKey {
                header: self.header.clone(),
            })?
            .to_string();
        claim(
            store,
            format!("idempotency/{flow}"),
            key,
            fingerprint(parts, body),
            self.ttl_ms,
            Keep::SuccessOrUnprocessable,
            "A request with this Idempotency-Key is still in progress",
        )
        .await
    }
}

/// What `flow` keeps for an `Idempotency-Key` (or a signed sender's delivery id): the answer's
/// status (none while the first request is in progress) and the message id the answer named.
pub struct KeyRecord {
    pub status: Option<u16>,
    pub message_id: Option<String>,
}

/// Looks `key` up among `flow`'s idempotency keys and sender delivery ids, for the admin API.
pub async fn lookup(store: &Store, flow: &str, key: &str) -> Result<Option<KeyRecord>, StoreError> {
    for namespace in [format!("idempotency/{flow}"), format!("deliveries/{flow}")] {
        let Some(stored) = store.kv_get(&namespace, key, now_ms()).await? else {
            continue;
        };
        let Some((record, body)) = decode(&stored) else {
            continue;
        };
        // weft's own answers name the message: `{"id": "01J…", …}`.
        let message_id = serde_json::from_slice::<serde_json::Value>(body)
            .ok()
            .and_then(|answer| answer.get("id")?.as_str().map(str::to_string));
        return Ok(Some(KeyRecord {
            status: record.status,
            message_id,
        }));
    }
    Ok(None)
}

/// Looks up a sender's delivery id (verified by its signature), taking it if it is new. Only
/// a success is kept: a delivery that failed is handled again when the sender retries it.
pub async fn begin_delivery(
    store: &Store,
    flow: &str,
    id: &str,
    ttl: Duration,
) -> Result<Begin, IdempotencyError> {
    // The signature vouches for the request: no fingerprint to compare.
    claim(
        store,
        format!("deliveries/{flow}"),
        id.to_string(),
        String::new(),
        ttl.as_millis().min(i64::MAX as u128) as i64,
        Keep::Success,
        DELIVERY_IN_PROGRESS,
    )
    .await
}

/// The answer to a copy of a delivery that is being handled.
pub const DELIVERY_IN_PROGRESS: &str = "A copy of this delivery is still being handled";

/// Which answers are final, kept for repeats.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Keep {
    Success,
    /// Also 422: the same request would meet the same refusal.
    SuccessOrUnprocessable,
}

async fn claim(
    store: &Store,
    namespace: String,
    key: String,
    fingerprint: String,
    ttl_ms: i64,
    keep: Keep,
    busy: &'static str,
) -> Result<Begin, IdempotencyError> {
    let pending = encode(
        &Record {
            fingerprint: fingerprint.clone(),
            status: None,
            content_type: None,
            holder: Some(ulid::Ulid::new().to_string()),
        },
        b"",
    );
    let now = now_ms();
    let expires = now + PENDING_TTL.as_millis() as i64;
    let holder = store
        .kv_claim(&namespace, &key, &pending, expires, now)
        .await?;
    let Some(stored) = holder else {
        return Ok(Begin::First(Ticket {
            store: store.clone(),
            namespace,
            key,
            fingerprint,
            pending,
            ttl_ms,
            keep,
            finished: false,
        }));
    };
    if let Some((record, body)) = decode(&stored) {
        return Ok(Begin::Answer(if record.fingerprint != fingerprint {
            Problem::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "idempotency-key-reused",
                "This Idempotency-Key was used for a different request",
            )
            .into_response()
        } else if let Some(status) = record.status {
            replay(status, record.content_type.as_deref(), body)
        } else {
            in_progress(busy)
        }));
    }
    Ok(Begin::Answer(in_progress(busy)))
}

pub fn in_progress(title: &'static str) -> Response {
    Problem::new(StatusCode::CONFLICT, "idempotency-key-in-use", title)
        .retry_after(Duration::from_secs(1))
        .into_response()
}

pub fn replay(status: u16, content_type: Option<&str>, body: &[u8]) -> Response {
    let mut answer = Response::new(Body::from(body.to_vec()));
    *answer.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::OK);
    if let Some(value) = content_type.and_then(|c| HeaderValue::from_str(c).ok()) {
        answer.headers_mut().insert(header::CONTENT_TYPE, value);
    }
    answer.headers_mut().insert(
        HeaderName::from_static("idempotent-replayed"),
        HeaderValue::from_static("true"),
    );
    answer
}

fn fingerprint(parts: &http::request::Parts, body: &Bytes) -> String {
    let mut digest = ring::digest::Context::new(&ring::digest::SHA256);
    for part in [
        parts.method.as_str().as_bytes(),
        parts.uri.path().as_bytes(),
        parts.uri.query().unwrap_or("").as_bytes(),
    ] {
        digest.update(&(part.len() as u64).to_be_bytes());
        digest.update(part);
    }
    digest.update(body);
    digest
        .finish()
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// A key held by the request being processed.
pub struct Ticket {
    store: Store,
    namespace: String,
    key: String,
    fingerprint: String,
    pending: Vec<u8>,
    ttl_ms: i64,
    keep: Keep,
    finished: bool,
}

impl Ticket {
    /// Keeps a final answer for repeats, or gives the key back; returns the answer unchanged.
    pub async fn finish(mut self, answer: Response) -> Response {
        self.finished = true;
        let status = answer.status();
        let fin = status.is_success()
            || (self.keep == Keep::SuccessOrUnprocessable
                && status == StatusCode::UNPROCESSABLE_ENTITY);
        if !fin {
            self.give_back().await;
            return answer;
        }
        let (parts, body) = answer.into_parts();
        // Our own answers are in memory already; the limit only guards against surprises.
        let body = match axum::body::to_bytes(body, 16 << 20).await {
            Ok(body) => body,
            Err(e) => {
                tracing::warn!(key = self.key, error = %e, "answer not kept for idempotent repeats");
                self.give_back().await;
                return Response::from_parts(parts, Body::empty());
            }
        };
        let record = Record {
            fingerprint: std::mem::take(&mut self.fingerprint),
            status: Some(status.as_u16()),
            content_type: parts
                .headers
                .get(header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string),
            holder: None,
        };
        let expires = now_ms().saturating_add(self.ttl_ms);
        let kept = self
            .store
            .kv_replace(
                &self.namespace,
                &self.key,
                &self.pending,
                &encode(&record, &body),
                Some(expires),
            )
            .await;
        match kept {
            Ok(true) => {}
            // Our pending record lapsed (PENDING_TTL) and another request may hold the key
            // now: its record is left alone.
            Ok(false) => {
                tracing::warn!(
                    key = self.key,
                    "answer not kept: the key lapsed while the request ran"
                )
            }
            // The message was handled; a repeat after this may be handled again (at least once).
            Err(e) => {
                tracing::warn!(key = self.key, error = %e, "answer not kept for idempotent repeats")
            }
        }
        Response::from_parts(parts, Body::from(body))
    }

    async fn give_back(&self) {
        if let Err(e) = self
            .store
            .kv_delete(&self.namespace, &self.key, Some(&self.pending))
            .await
        {
            tracing::warn!(key = self.key, error = %e, "could not release an idempotency key; repeats get 409 until it lapses");
        }
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        // The request never got to processing (its task failed): give the key back now rather
        // than after PENDING_TTL.
        if !self.finished {
            let ticket = Ticket {
                store: self.store.clone(),
                namespace: std::mem::take(&mut self.namespace),
                key: std::mem::take(&mut self.key),
                fingerprint: String::new(),
                pending: std::mem::take(&mut self.pending),
                ttl_ms: self.ttl_ms,
                keep: self.keep,
                finished: true,
            };
            if let Ok(runtime) = tokio::runtime::Handle::try_current() {
                runtime.spawn(async move { ticket.give_back().await });
            }
        }
    }
}
