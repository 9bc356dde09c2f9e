//! The dead-letter queue as JSON, shared by the admin API (`/api/v1/flows/{flow}/dlq…`) and
//! the `weft dlq` command, so both show and select dead letters the same way.
//!
//! ```text
//! GET  /api/v1/flows/{flow}/dlq?id=…&since=…&limit=…   list (oldest failure first)
//! GET  /api/v1/flows/{flow}/dlq/{id}                   one, with metadata and history
//! POST /api/v1/flows/{flow}/dlq/replay?id=…&since=…    back onto the flow's queue
//! POST /api/v1/flows/{flow}/dlq/purge?id=…&since=…     delete
//! ```
//! `since` is an RFC 3339 time or a duration ago (`1h`).

use axum::Router;
use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use http::{StatusCode, header};
use serde::Deserialize;
use serde_json::{Value, json};
use weft_store::{DeadLetter, DlqFilter, Store};

use crate::core::durable::now_ms;

/// A stored byte string as JSON when it is JSON, else as text.
fn bytes_as_json(bytes: &[u8]) -> Value {
    serde_json::from_slice(bytes).unwrap_or_else(|_| Value::from(String::from_utf8_lossy(bytes)))
}

fn time(ms: i64) -> Value {
    chrono::DateTime::from_timestamp_millis(ms).map_or(Value::Null, |t| Value::from(t.to_rfc3339()))
}

/// One dead letter as JSON; `full` adds metadata and history.
pub fn to_json(dead: &DeadLetter, full: bool) -> Value {
    let mut v = json!({
        "id": dead.id,
        "flow": dead.flow,
        "enqueued_at": time(dead.enqueued_at_ms),
        "failed_at": time(dead.failed_at_ms),
        "attempts": dead.attempts,
        "reason": dead.failure.reason,
        "last_status": dead.failure.last_status,
        "message": bytes_as_json(&dead.payload),
    });
    if full {
        v["metadata"] = bytes_as_json(&dead.metadata);
        v["history"] = json!(dead.history);
        v["response_excerpt"] = json!(dead.failure.response_excerpt);
    }
    v
}

/// Parses `since`: an RFC 3339 time, or a duration ago such as `90m`.
pub fn parse_since(text: &str) -> Result<i64, String> {
    if let Ok(t) = chrono::DateTime::parse_from_rfc3339(text) {
        return Ok(t.timestamp_millis());
    }
    humantime::parse_duration(text)
        .map(|d| now_ms() - d.as_millis() as i64)
        .map_err(|_| format!("`{text}` is neither an RFC 3339 time nor a duration like `1h`"))
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
struct Select {
    id: Option<String>,
    since: Option<String>,
    limit: Option<u32>,
}

impl Select {
    fn filter(&self, flow: String) -> Result<DlqFilter, String> {
        let since_ms = match &self.since {
            Some(s) => Some(parse_since(s)?),
            None => None,
        };
        Ok(DlqFilter {
            flow: Some(flow),
            id: self.id.clone(),
            since_ms,
        })
    }
}

fn json_response(status: StatusCode, body: Value) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

/// Why an API call failed, as the HTTP answer it becomes.
enum ApiError {
    BadRequest(String),
    NotFound,
    Store(weft_store::StoreError),
}

impl From<weft_store::StoreError> for ApiError {
    fn from(e: weft_store::StoreError) -> Self {
        ApiError::Store(e)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, message) = match self {
            ApiError::BadRequest(m) => (StatusCode::BAD_REQUEST, m),
            ApiError::NotFound => (StatusCode::NOT_FOUND, "no such dead letter".into()),
            ApiError::Store(e) => (StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
        };
        json_response(status, json!({ "error": message }))
    }
}

type ApiResult = Result<Response, ApiError>;

pub fn router(store: Store) -> Router {
    Router::new()
        .route("/api/v1/flows/{flow}/dlq", get(list))
        .route("/api/v1/flows/{flow}/dlq/replay", post(replay))
        .route("/api/v1/flows/{flow}/dlq/purge", post(purge))
        .route("/api/v1/flows/{flow}/dlq/{id}", get(show))
        .with_state(store)
}

async fn list(
    State(store): State<Store>,
    Path(flow): Path<String>,
    Query(select): Query<Select>,
) -> ApiResult {
    let filter = select.filter(flow).map_err(ApiError::BadRequest)?;
    let dead = store
        .dead_letters(&filter, select.limit.unwrap_or(100))
        .await?;
    Ok(json_response(
        StatusCode::OK,
        Value::Array(dead.iter().map(|d| to_json(d, false)).collect()),
    ))
}

async fn show(State(store): State<Store>, Path((flow, id)): Path<(String, String)>) -> ApiResult {
    let filter = DlqFilter {
        flow: Some(flow),
        id: Some(id),
        since_ms: None,
    };
    let dead = store.dead_letters(&filter, 1).await?;
    let dead = dead.first().ok_or(ApiError::NotFound)?;
    Ok(json_response(StatusCode::OK, to_json(dead, true)))
}

async fn replay(
    State(store): State<Store>,
    Path(flow): Path<String>,
    Query(select): Query<Select>,
) -> ApiResult {
    let filter = select.filter(flow).map_err(ApiError::BadRequest)?;
    let n = store.replay(filter, now_ms()).await?;
    Ok(json_response(StatusCode::OK, json!({ "replayed": n })))
}

async fn purge(
    State(store): State<Store>,
    Path(flow): Path<String>,
    Query(select): Query<Select>,
) -> ApiResult {
    let filter = select.filter(flow).map_err(ApiError::BadRequest)?;
    let n = store.purge(filter).await?;
    Ok(json_response(StatusCode::OK, json!({ "purged": n })))
}
