//! The dead-letter queue as JSON, shared by the admin API and the `weft dlq` command, so both
//! show and select dead letters the same way.
//!
//! ```text
//! GET  /api/v1/dlq?flow=…&id=…&since=…&limit=…         list, every flow or one (oldest failure first)
//! POST /api/v1/dlq/replay?flow=…&id=…&since=…          back onto their flows' queues
//! POST /api/v1/dlq/purge?flow=…&id=…&since=…           delete
//! GET  /api/v1/flows/{flow}/dlq?id=…&since=…&limit=…   one flow's, likewise
//! GET  /api/v1/flows/{flow}/dlq/{id}                   one, with metadata and history
//! POST /api/v1/flows/{flow}/dlq/replay?id=…&since=…
//! POST /api/v1/flows/{flow}/dlq/purge?id=…&since=…
//! ```
//! `since` is an RFC 3339 time or a duration ago (`1h`); `reason` (text it contains) and
//! `status` (the last answer's) select too; a list's next page is `after=<id>` of the last one
//! shown. A replay or purge with `background=true` answers 202 at once with a job that does it
//! in batches ([`super::jobs`]).

use axum::extract::{Path, Query, State};
use axum::response::Response;
use http::StatusCode;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use weft_store::{DeadLetter, DlqFilter};

use super::jobs::{Action, JobView, Jobs, StartError};
use super::{ApiError, ErrorBody, json_response};
use crate::core::clock::now_ms;

/// A stored byte string (or a body) as JSON when it is JSON, else as text.
pub fn bytes_as_json(bytes: &[u8]) -> Value {
    serde_json::from_slice(bytes).unwrap_or_else(|_| Value::from(String::from_utf8_lossy(bytes)))
}

/// Milliseconds since the epoch as RFC 3339, as every admin answer writes a time.
pub(super) fn time(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms).map_or_else(String::new, |t| t.to_rfc3339())
}

/// A dead letter as the API and `weft dlq` show it.
#[derive(Serialize, ToSchema)]
pub struct DeadLetterView {
    pub id: String,
    pub flow: String,
    /// When it was first accepted (RFC 3339).
    pub enqueued_at: String,
    /// When it failed for good.
    pub failed_at: String,
    pub attempts: u32,
    /// Why it failed: the failing component and its error.
    pub reason: String,
    /// The destination's last HTTP status, when it answered.
    pub last_status: Option<u16>,
    /// The message (JSON, or text when it is not JSON).
    #[schema(value_type = Object)]
    pub message: Value,
    /// Shown in full only: the message's metadata.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub metadata: Option<Value>,
    /// Shown in full only: what happened to it, oldest first: every failed attempt (`at`,
    /// `attempt`, `outcome`: `retry` or `dead_lettered`, `status`, `error`, `duration_ms`)
    /// and every replay, the last failure included.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Vec<Object>>)]
    pub history: Option<Vec<Value>>,
    /// Shown in full only: the start of the last answer's body.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub response_excerpt: Option<String>,
}

impl DeadLetterView {
    /// `full` adds metadata, history and the answer's excerpt.
    pub fn of(dead: &DeadLetter, full: bool) -> DeadLetterView {
        DeadLetterView {
            id: dead.id.clone(),
            flow: dead.flow.clone(),
            enqueued_at: time(dead.enqueued_at_ms),
            failed_at: time(dead.failed_at_ms),
            attempts: dead.attempts,
            reason: dead.failure.reason.clone(),
            last_status: dead.failure.last_status,
            message: stored_message(&dead.payload),
            metadata: full.then(|| {
                let mut metadata = bytes_as_json(&dead.metadata);
                if let Value::Object(map) = &mut metadata {
                    map.remove(crate::core::durable::TRACEPARENT_KEY);
                }
                metadata
            }),
            history: full.then(|| history(dead)),
            response_excerpt: if full {
                dead.failure.response_excerpt.clone()
            } else {
                None
            },
        }
    }
}

/// A dead letter's history as JSON objects with RFC 3339 times, its last failure at the end.
/// Lines from before the history was structured are shown as `{"note": …}`.
fn history(dead: &DeadLetter) -> Vec<Value> {
    let shown = |mut entry: Value| {
        if let Some(at) = entry.get("at").and_then(Value::as_i64) {
            entry["at"] = time(at).into();
        }
        entry
    };
    let mut entries: Vec<Value> = dead
        .history
        .iter()
        .map(|line| match serde_json::from_str::<Value>(line) {
            Ok(entry @ Value::Object(_)) => shown(entry),
            _ => serde_json::json!({ "note": line }),
        })
        .collect();
    let mut last = serde_json::json!({
        "at": dead.failed_at_ms,
        "attempt": dead.attempts,
        "outcome": "dead_lettered",
        "error": dead.failure.reason,
    });
    if let Some(status) = dead.failure.last_status {
        last["status"] = status.into();
    }
    entries.push(shown(last));
    entries
}

/// A stored payload as the message arrived: its JSON, or its text (bytes that are not UTF-8
/// shown lossily).
fn stored_message(payload: &[u8]) -> Value {
    match crate::core::durable::decode_value(payload) {
        Ok(crate::core::mapping::Value::Bytes(bytes)) => {
            Value::from(String::from_utf8_lossy(&bytes))
        }
        Ok(value) => serde_json::to_value(&value).unwrap_or_else(|_| bytes_as_json(payload)),
        Err(_) => bytes_as_json(payload),
    }
}

/// One dead letter as JSON; `full` adds metadata and history.
pub fn to_json(dead: &DeadLetter, full: bool) -> Value {
    serde_json::to_value(DeadLetterView::of(dead, full)).unwrap_or_default()
}

/// Which dead letters (every given field must match).
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct Select {
    /// One flow's (`/api/v1/dlq` only; every flow's when left out).
    #[param(min_length = 1)]
    flow: Option<String>,
    /// One dead letter.
    #[param(min_length = 1)]
    id: Option<String>,
    /// Failed since: an RFC 3339 time or a duration ago (`1h`, `90m`, `2d`).
    #[param(schema_with = since_schema)]
    since: Option<String>,
    /// Failures whose reason contains this text.
    reason: Option<String>,
    /// Failures whose last answer had this HTTP status.
    #[param(minimum = 100, maximum = 599)]
    status: Option<u16>,
    /// At most this many (lists; default 100).
    #[param(minimum = 0, maximum = 100000)]
    limit: Option<u32>,
    /// The next page of a list: those after the dead letter of this id (the last one of the
    /// page before); an id not there selects none.
    #[param(min_length = 1)]
    after: Option<String>,
    /// Replay and purge: only count what matches, and do nothing.
    dry_run: Option<bool>,
    /// Replay and purge: answer 202 at once with a job that does it in batches, which
    /// `/api/v1/dlq/jobs/{id}` follows and can cancel.
    background: Option<bool>,
}

/// `since` as the document states it: what [`parse_since`] takes.
fn since_schema() -> utoipa::openapi::schema::Schema {
    use utoipa::openapi::schema::{KnownFormat, ObjectBuilder, OneOfBuilder, SchemaFormat, Type};
    OneOfBuilder::new()
        .item(
            ObjectBuilder::new()
                .schema_type(Type::String)
                .format(Some(SchemaFormat::KnownFormat(KnownFormat::DateTime))),
        )
        .item(
            ObjectBuilder::new()
                .schema_type(Type::String)
                .pattern(Some(r"^[0-9]{1,6}(ms|s|m|h|d)$")),
        )
        .description(Some(
            "An RFC 3339 time, or a duration ago (`1h`, `90m`, `2d`).",
        ))
        .into()
}

impl Select {
    fn filter(&self, flow: Option<String>) -> Result<DlqFilter, ApiError> {
        for (name, value) in [("flow", &self.flow), ("id", &self.id)] {
            if value.as_deref() == Some("") {
                return Err(ApiError::BadRequest(format!("`{name}` must not be empty")));
            }
        }
        if self.status.is_some_and(|s| !(100..=599).contains(&s)) {
            return Err(ApiError::BadRequest(
                "`status` is an HTTP status, 100 to 599".into(),
            ));
        }
        if self.limit.is_some_and(|l| l > 100_000) {
            return Err(ApiError::BadRequest("`limit` is at most 100000".into()));
        }
        let since_ms = match &self.since {
            Some(s) => Some(parse_since(s).map_err(ApiError::BadRequest)?),
            None => None,
        };
        if self.after.as_deref() == Some("") {
            return Err(ApiError::BadRequest("`after` must not be empty".into()));
        }
        Ok(DlqFilter {
            flow: flow.or_else(|| self.flow.clone()),
            id: self.id.clone(),
            since_ms,
            reason: self.reason.clone(),
            status: self.status,
            after: self.after.clone(),
            ..Default::default()
        })
    }
}

/// What a replay did; with `dry_run`, only `matched` (what it would replay).
#[derive(Serialize, ToSchema)]
struct Replayed {
    #[serde(skip_serializing_if = "Option::is_none")]
    replayed: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    matched: Option<u64>,
}

/// What a purge did; with `dry_run`, only `matched` (what it would delete).
#[derive(Serialize, ToSchema)]
struct Purged {
    #[serde(skip_serializing_if = "Option::is_none")]
    purged: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    matched: Option<u64>,
}

/// Puts dead letter `id` (of `flow`, when given) back on its flow's queue with `replacement`
/// as its message; the history's replay line keeps the message it replaced. `false` if there
/// is no such dead letter.
pub async fn replay_edited(
    store: &weft_store::Store,
    flow: Option<String>,
    id: &str,
    replacement: &Value,
) -> Result<bool, weft_store::StoreError> {
    let filter = DlqFilter {
        flow,
        id: Some(id.to_string()),
        ..Default::default()
    };
    let Some(dead) = store.dead_letters(&filter, 1).await?.into_iter().next() else {
        return Ok(false);
    };
    let now = now_ms();
    let note = serde_json::json!({
        "at": now,
        "outcome": "replayed",
        "edited": true,
        "original": stored_message(&dead.payload),
    });
    let mut payload = vec![b'j'];
    payload.extend_from_slice(replacement.to_string().as_bytes());
    store
        .replay_edited(id, &payload, &note.to_string(), now)
        .await
}

type ApiResult = Result<Response, ApiError>;

/// The store, once weft has one (a reload may open it): without, there are no dead letters.
/// And the bulk jobs running on it.
#[derive(Clone)]
struct Dlq(super::StoreCell, Jobs);

pub(super) fn routes(store: super::StoreCell, jobs: Jobs) -> OpenApiRouter {
    OpenApiRouter::new()
        .routes(routes!(list_jobs))
        .routes(routes!(show_job))
        .routes(routes!(cancel_job))
        .routes(routes!(list_all))
        .routes(routes!(replay_all))
        .routes(routes!(purge_all))
        .routes(routes!(list))
        .routes(routes!(replay))
        .routes(routes!(purge))
        .routes(routes!(show))
        .routes(routes!(replay_one))
        .with_state(Dlq(store, jobs))
}

async fn listed(store: &Dlq, filter: DlqFilter, limit: Option<u32>) -> ApiResult {
    let dead = match store.0.get() {
        Some(store) => store.dead_letters(&filter, limit.unwrap_or(100)).await?,
        None => Vec::new(),
    };
    let views: Vec<DeadLetterView> = dead.iter().map(|d| DeadLetterView::of(d, false)).collect();
    Ok(json_response(
        StatusCode::OK,
        serde_json::to_value(views).unwrap_or_default(),
    ))
}

/// Acts on the selected dead letters: how many it acted on, or with `dry_run` only how many
/// match (`(done, matched)`, one of them set).
async fn act(
    store: &Dlq,
    filter: DlqFilter,
    dry_run: Option<bool>,
    act: Action,
) -> Result<(Option<u64>, Option<u64>), ApiError> {
    let dry_run = dry_run.unwrap_or(false);
    let Some(store) = store.0.get() else {
        return Ok(if dry_run {
            (None, Some(0))
        } else {
            (Some(0), None)
        });
    };
    if dry_run {
        return Ok((None, Some(store.count_dead_letters(&filter).await?)));
    }
    let done = match act {
        Action::Replay => store.replay(filter, now_ms()).await?,
        Action::Purge => store.purge(filter).await?,
    };
    Ok((Some(done), None))
}

/// What a job selects, as a query string (the serializer is not `Send`: it stays out of the
/// handler's future).
fn selection(filter: &DlqFilter, select: &Select) -> String {
    let mut selection = form_urlencoded::Serializer::new(String::new());
    for (name, value) in [
        ("flow", &filter.flow),
        ("id", &filter.id),
        ("since", &select.since),
        ("reason", &filter.reason),
        ("after", &filter.after),
    ] {
        if let Some(value) = value {
            selection.append_pair(name, value);
        }
    }
    if let Some(status) = filter.status {
        selection.append_pair("status", &status.to_string());
    }
    selection.finish()
}

/// Starts a job doing `action` to what `filter` selects: 202 with the job.
async fn in_background(dlq: &Dlq, filter: DlqFilter, select: &Select, action: Action) -> ApiResult {
    let Some(store) = dlq.0.get() else {
        return Err(ApiError::NotFound(
            "there are no dead letters: no flow keeps a store".into(),
        ));
    };
    let selection = selection(&filter, select);
    let job = dlq
        .1
        .start(store, action, filter, selection)
        .await
        .map_err(|e| match e {
            StartError::Busy => ApiError::Busy(e.to_string()),
            StartError::Store(e) => ApiError::Store(e),
        })?;
    let mut response = json_response(
        StatusCode::ACCEPTED,
        serde_json::to_value(&job).unwrap_or_default(),
    );
    if let Ok(location) = http::HeaderValue::from_str(&job.url) {
        response
            .headers_mut()
            .insert(http::header::LOCATION, location);
    }
    Ok(response)
}

async fn replayed(store: &Dlq, filter: DlqFilter, select: &Select) -> ApiResult {
    if select.background == Some(true) && select.dry_run != Some(true) {
        return in_background(store, filter, select, Action::Replay).await;
    }
    let (replayed, matched) = act(store, filter, select.dry_run, Action::Replay).await?;
    Ok(json_response(
        StatusCode::OK,
        serde_json::to_value(Replayed { replayed, matched }).unwrap_or_default(),
    ))
}

async fn purged(store: &Dlq, filter: DlqFilter, select: &Select) -> ApiResult {
    if select.background == Some(true) && select.dry_run != Some(true) {
        return in_background(store, filter, select, Action::Purge).await;
    }
    let (purged, matched) = act(store, filter, select.dry_run, Action::Purge).await?;
    Ok(json_response(
        StatusCode::OK,
        serde_json::to_value(Purged { purged, matched }).unwrap_or_default(),
    ))
}

/// Dead letters of every flow, or of `flow`, oldest failure first.
#[utoipa::path(get, path = "/api/v1/dlq", tag = "dlq", operation_id = "list_dlq", params(Select),
    responses((status = 200, body = Vec<DeadLetterView>), (status = 400, body = ErrorBody)))]
async fn list_all(State(store): State<Dlq>, Query(select): Query<Select>) -> ApiResult {
    listed(&store, select.filter(None)?, select.limit).await
}

/// Puts the selected dead letters back on their flows' queues, attempts reset, history kept.
#[utoipa::path(post, path = "/api/v1/dlq/replay", tag = "dlq", operation_id = "replay_dlq", params(Select),
    responses((status = 200, body = Replayed), (status = 202, body = JobView), (status = 400, body = ErrorBody), (status = 429, body = ErrorBody)))]
async fn replay_all(State(store): State<Dlq>, Query(select): Query<Select>) -> ApiResult {
    replayed(&store, select.filter(None)?, &select).await
}

/// Deletes the selected dead letters.
#[utoipa::path(post, path = "/api/v1/dlq/purge", tag = "dlq", operation_id = "purge_dlq", params(Select),
    responses((status = 200, body = Purged), (status = 202, body = JobView), (status = 400, body = ErrorBody), (status = 429, body = ErrorBody)))]
async fn purge_all(State(store): State<Dlq>, Query(select): Query<Select>) -> ApiResult {
    purged(&store, select.filter(None)?, &select).await
}

/// One flow's dead letters, oldest failure first.
#[utoipa::path(get, path = "/api/v1/flows/{flow}/dlq", tag = "dlq", operation_id = "list_flow_dlq",
    params(("flow" = String, Path, description = "The flow's name"), Select),
    responses((status = 200, body = Vec<DeadLetterView>), (status = 400, body = ErrorBody)))]
async fn list(
    State(store): State<Dlq>,
    Path(flow): Path<String>,
    Query(select): Query<Select>,
) -> ApiResult {
    listed(&store, select.filter(Some(flow))?, select.limit).await
}

/// One dead letter in full: metadata, history, the start of the last answer.
#[utoipa::path(get, path = "/api/v1/flows/{flow}/dlq/{id}", tag = "dlq", operation_id = "show_dead_letter",
    params(("flow" = String, Path, description = "The flow's name"), ("id" = String, Path, description = "The dead letter's id")),
    responses((status = 200, body = DeadLetterView), (status = 404, body = ErrorBody)))]
async fn show(State(store): State<Dlq>, Path((flow, id)): Path<(String, String)>) -> ApiResult {
    let filter = DlqFilter {
        flow: Some(flow),
        id: Some(id),
        ..Default::default()
    };
    let Some(store) = store.0.get() else {
        return Err(ApiError::NotFound("no such dead letter".into()));
    };
    let dead = store.dead_letters(&filter, 1).await?;
    let dead = dead
        .first()
        .ok_or_else(|| ApiError::NotFound("no such dead letter".into()))?;
    Ok(json_response(StatusCode::OK, to_json(dead, true)))
}

/// Puts one flow's selected dead letters back on its queue.
#[utoipa::path(post, path = "/api/v1/flows/{flow}/dlq/replay", tag = "dlq", operation_id = "replay_flow_dlq",
    params(("flow" = String, Path, description = "The flow's name"), Select),
    responses((status = 200, body = Replayed), (status = 202, body = JobView), (status = 400, body = ErrorBody), (status = 429, body = ErrorBody)))]
async fn replay(
    State(store): State<Dlq>,
    Path(flow): Path<String>,
    Query(select): Query<Select>,
) -> ApiResult {
    replayed(&store, select.filter(Some(flow))?, &select).await
}

/// Deletes one flow's selected dead letters.
#[utoipa::path(post, path = "/api/v1/flows/{flow}/dlq/purge", tag = "dlq", operation_id = "purge_flow_dlq",
    params(("flow" = String, Path, description = "The flow's name"), Select),
    responses((status = 200, body = Purged), (status = 202, body = JobView), (status = 400, body = ErrorBody), (status = 429, body = ErrorBody)))]
async fn purge(
    State(store): State<Dlq>,
    Path(flow): Path<String>,
    Query(select): Query<Select>,
) -> ApiResult {
    purged(&store, select.filter(Some(flow))?, &select).await
}

/// Parses `since`: an RFC 3339 time, or a duration ago: a number of `ms`, `s`, `m`, `h` or `d`
/// such as `90m` (what the API document's pattern says).
pub fn parse_since(text: &str) -> Result<i64, String> {
    if let Ok(t) = chrono::DateTime::parse_from_rfc3339(text) {
        return Ok(t.timestamp_millis());
    }
    let digits = text.bytes().take_while(u8::is_ascii_digit).count();
    let (number, unit) = text.split_at(digits);
    let unit_ms: i64 = match unit {
        "ms" => 1,
        "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        _ => 0,
    };
    match number.parse::<i64>() {
        Ok(n) if (1..=6).contains(&digits) && unit_ms > 0 => Ok(now_ms() - n * unit_ms),
        _ => Err(format!(
            "`{text}` is neither an RFC 3339 time nor a duration like `90m` (ms, s, m, h, d)"
        )),
    }
}

/// Puts one dead letter back on its flow's queue; a JSON body replaces its message (the
/// history keeps the one it replaced), an empty body replays it as it is.
#[utoipa::path(post, path = "/api/v1/flows/{flow}/dlq/{id}/replay", tag = "dlq", operation_id = "replay_dead_letter",
    params(("flow" = String, Path, description = "The flow's name"), ("id" = String, Path, description = "The dead letter's id")),
    request_body(content = Object, description = "The message to deliver instead (optional)", content_type = "application/json"),
    responses((status = 200, body = Replayed), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn replay_one(
    State(store): State<Dlq>,
    Path((flow, id)): Path<(String, String)>,
    body: axum::body::Bytes,
) -> ApiResult {
    let missing = || ApiError::NotFound("no such dead letter".into());
    let store = store.0.get().ok_or_else(missing)?;
    let replayed = if body.iter().all(u8::is_ascii_whitespace) {
        let filter = DlqFilter {
            flow: Some(flow),
            id: Some(id),
            ..Default::default()
        };
        store.replay(filter, now_ms()).await? == 1
    } else {
        let replacement: Value = serde_json::from_slice(&body).map_err(|e| {
            ApiError::BadRequest(format!("the replacement message is not JSON: {e}"))
        })?;
        replay_edited(store, Some(flow), &id, &replacement).await?
    };
    if !replayed {
        return Err(missing());
    }
    Ok(json_response(
        StatusCode::OK,
        serde_json::to_value(Replayed {
            replayed: Some(1),
            matched: None,
        })
        .unwrap_or_default(),
    ))
}

/// The bulk jobs kept (the last 20), newest first.
#[utoipa::path(get, path = "/api/v1/dlq/jobs", tag = "dlq", operation_id = "list_dlq_jobs",
    responses((status = 200, body = Vec<JobView>)))]
async fn list_jobs(State(dlq): State<Dlq>) -> ApiResult {
    Ok(json_response(
        StatusCode::OK,
        serde_json::to_value(dlq.1.list()).unwrap_or_default(),
    ))
}

/// One bulk job: what matched when it started, what it did so far, whether it runs.
#[utoipa::path(get, path = "/api/v1/dlq/jobs/{id}", tag = "dlq", operation_id = "show_dlq_job",
    params(("id" = String, Path, description = "The job's id")),
    responses((status = 200, body = JobView), (status = 404, body = ErrorBody)))]
async fn show_job(State(dlq): State<Dlq>, Path(id): Path<String>) -> ApiResult {
    let job = dlq
        .1
        .get(&id)
        .ok_or_else(|| ApiError::NotFound("no such job".into()))?;
    Ok(json_response(
        StatusCode::OK,
        serde_json::to_value(job).unwrap_or_default(),
    ))
}

/// Stops a bulk job after the batch in progress: what it did stays done, the rest stays in
/// the dead-letter queue.
#[utoipa::path(post, path = "/api/v1/dlq/jobs/{id}/cancel", tag = "dlq", operation_id = "cancel_dlq_job",
    params(("id" = String, Path, description = "The job's id")),
    responses((status = 202, body = JobView), (status = 404, body = ErrorBody)))]
async fn cancel_job(State(dlq): State<Dlq>, Path(id): Path<String>) -> ApiResult {
    let job = dlq
        .1
        .cancel(&id)
        .ok_or_else(|| ApiError::NotFound("no such job".into()))?;
    Ok(json_response(
        StatusCode::ACCEPTED,
        serde_json::to_value(job).unwrap_or_default(),
    ))
}
