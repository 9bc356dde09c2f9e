//! The flows API under `/api/v1`: each flow's state and counters, pause and resume, and the tap
//! (a server-sent-events stream of the messages passing a stage). Documented by `utoipa` from
//! these handlers; the document is served at `/api/v1/openapi.json`.
//!
//! ```text
//! GET  /api/v1/flows                          every flow
//! GET  /api/v1/flows/{flow}                   one
//! GET  /api/v1/flows/{flow}/rates?seconds=…   per-second counts, the last five minutes
//! GET  /api/v1/flows/{flow}/failures?limit=…  the recent failures, newest first
//! GET  /api/v1/flows/{flow}/components        each component's counts, the flow's latency
//! GET  /api/v1/flows/{flow}/config            its settings as YAML, credentials redacted
//! GET  /api/v1/messages/{id}                  where a message is: queued, dead letter, failed
//! POST /api/v1/flows/{flow}/pause             inputs take nothing in, delivery waits
//! POST /api/v1/flows/{flow}/resume
//! GET  /api/v1/flows/{flow}/tap?stage=…&sample=…&limit=…   text/event-stream
//! ```

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use http::StatusCode;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::dlq::time;
use super::{ApiError, json_response};
use crate::core::flow::Counters;
use crate::load::RunFlow;

/// The flows the API shows, by name; the engine replaces them on a reload.
pub type Flows = Arc<std::sync::RwLock<BTreeMap<String, Arc<RunFlow>>>>;

#[derive(Clone)]
struct ApiState {
    flows: Flows,
    store: super::StoreCell,
    rates: super::rates::Rates,
    /// The recorder's exposition, which per-component counts are read back from.
    metrics: Option<metrics_exporter_prometheus::PrometheusHandle>,
}

/// A flow as the API shows it.
#[derive(Serialize, ToSchema)]
pub struct FlowInfo {
    pub name: String,
    /// `running` or `paused`.
    pub state: String,
    /// The input's id, e.g. `input.http_server`.
    pub input: String,
    pub outputs: Vec<String>,
    /// `direct` or `durable`.
    pub delivery: String,
    /// What a tap can listen to: `input`, each step's id, `output`.
    pub stages: Vec<String>,
    pub counters: Counters,
    /// When this version of the flow started (a reload that changes a flow restarts it).
    pub started_at: String,
    /// Durable flows: what the store holds for the flow.
    pub queue: Option<QueueInfo>,
    /// Polling flows with a watermark: where they are.
    pub checkpoint: Option<CheckpointInfo>,
    /// The flow's last failure since it started, if any (`…/failures` lists the recent ones).
    pub last_failure: Option<crate::core::failures::RecentFailure>,
}

/// A polling flow's watermark (`weft checkpoint` shows and changes it).
#[derive(Serialize, ToSchema)]
pub struct CheckpointInfo {
    /// Where it is kept in the store (`checkpoint_key`).
    pub key: String,
    /// The watermark the next poll starts after; null before any was saved.
    #[schema(value_type = Object)]
    pub value: serde_json::Value,
    /// When it was saved (RFC 3339).
    pub saved_at: Option<String>,
    /// When the last poll ended without a failure (RFC 3339).
    pub last_poll_at: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct QueueInfo {
    /// Messages waiting for delivery (or being delivered).
    pub depth: u64,
    /// Their size in the store (payload and metadata).
    pub bytes: u64,
    /// How long the oldest of them has waited; 0 when the queue is empty.
    pub oldest_age_seconds: f64,
    /// Messages per second leaving the queue (delivered, dropped or dead-lettered) over the
    /// last minute. Below the intake rate, the backlog grows.
    pub drain_per_second: f64,
    /// The bounds at which intake is refused (HTTP 429) or waits: `max_queued`.
    pub max_queued: u64,
    /// `max_queued_bytes`.
    pub max_queued_bytes: u64,
    /// Dead letters.
    pub dead_letters: u64,
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct TapQuery {
    /// The stage to listen to (see the flow's `stages`); every stage when left out.
    #[param(min_length = 1)]
    stage: Option<String>,
    /// The share of messages sent, in (0, 1]; default 1.
    #[param(exclusive_minimum = 0, maximum = 1)]
    sample: Option<f64>,
    /// Messages sent before the stream ends; default 100, at most 100000.
    #[param(minimum = 0, maximum = 100000)]
    limit: Option<usize>,
}

pub(super) fn routes(
    flows: Flows,
    store: super::StoreCell,
    rates: super::rates::Rates,
    metrics: Option<metrics_exporter_prometheus::PrometheusHandle>,
) -> OpenApiRouter {
    OpenApiRouter::new()
        .routes(routes!(list_flows))
        .routes(routes!(get_flow))
        .routes(routes!(flow_rates))
        .routes(routes!(flow_failures))
        .routes(routes!(flow_components))
        .routes(routes!(flow_config))
        .routes(routes!(find_message))
        .routes(routes!(pause))
        .routes(routes!(resume))
        .routes(routes!(tap))
        .with_state(ApiState {
            flows,
            store,
            rates,
            metrics,
        })
}

impl ApiState {
    fn flow(&self, name: &str) -> Result<Arc<RunFlow>, ApiError> {
        self.flows
            .read()
            .expect("registry lock")
            .get(name)
            .cloned()
            .ok_or_else(|| ApiError::NotFound(format!("no flow `{name}`")))
    }

    fn all(&self) -> Vec<Arc<RunFlow>> {
        self.flows
            .read()
            .expect("registry lock")
            .values()
            .cloned()
            .collect()
    }

    async fn info(&self, flow: &RunFlow) -> FlowInfo {
        let queue = queue_info(flow, &self.store).await;
        FlowInfo {
            name: flow.name.to_string(),
            state: if flow.is_paused() {
                "paused"
            } else {
                "running"
            }
            .into(),
            input: flow.input_id.clone(),
            outputs: flow.output_ids(),
            delivery: flow.delivery().into(),
            stages: flow.stages(),
            counters: flow.counters(),
            started_at: chrono::DateTime::<chrono::Utc>::from(flow.started_at).to_rfc3339(),
            queue,
            checkpoint: self.checkpoint(flow).await,
            last_failure: flow.failures.recent(1).pop(),
        }
    }
}

/// A durable flow's queue: what the store holds for it, and its bounds.
pub(super) async fn queue_info(flow: &RunFlow, store: &super::StoreCell) -> Option<QueueInfo> {
    let (queue, store) = (flow.durable()?, store.get()?);
    let depth = store.depth(&flow.name).await.unwrap_or_default();
    let oldest_age_seconds = depth.oldest_enqueued_at_ms.map_or(0.0, |t| {
        (crate::core::clock::now_ms() - t).max(0) as f64 / 1000.0
    });
    let filter = weft_store::DlqFilter {
        flow: Some(flow.name.to_string()),
        ..Default::default()
    };
    let dead_letters = store.count_dead_letters(&filter).await.unwrap_or(0);
    Some(QueueInfo {
        depth: depth.messages,
        bytes: depth.bytes,
        oldest_age_seconds,
        drain_per_second: queue.drain_rate(),
        max_queued: queue.limits().max_messages,
        max_queued_bytes: queue.limits().max_bytes,
        dead_letters,
    })
}

impl ApiState {
    async fn checkpoint(&self, flow: &RunFlow) -> Option<CheckpointInfo> {
        use std::sync::atomic::Ordering;
        let polling = flow.polling()?;
        let saved = match self.store.get() {
            Some(store) => crate::core::checkpoint::load(store, &polling.checkpoint_key)
                .await
                .ok()
                .flatten(),
            None => None,
        };
        let time = |ms: i64| {
            (ms > 0).then(|| {
                chrono::DateTime::from_timestamp_millis(ms)
                    .map(|t| t.to_rfc3339())
                    .unwrap_or_default()
            })
        };
        Some(CheckpointInfo {
            key: polling.checkpoint_key.clone(),
            value: saved
                .as_ref()
                .map_or(serde_json::Value::Null, |s| s.value.clone()),
            saved_at: saved.and_then(|s| s.saved_at).and_then(time),
            last_poll_at: time(polling.polled_ms.load(Ordering::Relaxed)),
        })
    }
}

fn ok<T: Serialize>(body: &T) -> Response {
    json_response(
        StatusCode::OK,
        serde_json::to_value(body).unwrap_or_default(),
    )
}

/// Every flow, with its state and counters.
#[utoipa::path(get, path = "/api/v1/flows", tag = "flows",
    responses((status = 200, body = Vec<FlowInfo>)))]
async fn list_flows(State(api): State<ApiState>) -> Response {
    let mut out = Vec::new();
    for flow in api.all() {
        out.push(api.info(&flow).await);
    }
    ok(&out)
}

/// One flow.
#[utoipa::path(get, path = "/api/v1/flows/{flow}", tag = "flows",
    params(("flow" = String, Path, description = "The flow's name")),
    responses((status = 200, body = FlowInfo), (status = 404, body = super::ErrorBody)))]
async fn get_flow(
    State(api): State<ApiState>,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    let flow = api.flow(&name)?;
    Ok(ok(&api.info(&flow).await))
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct RatesQuery {
    /// How many of the last seconds; default and most 300 (five minutes are kept).
    #[param(minimum = 1, maximum = 300)]
    seconds: Option<usize>,
}

/// A flow's rates over the last minutes: messages received, delivered and failed in each
/// second, oldest first (sampled in process once a second; fewer values just after the flow
/// started).
#[utoipa::path(get, path = "/api/v1/flows/{flow}/rates", tag = "flows",
    params(("flow" = String, Path, description = "The flow's name"), RatesQuery),
    responses(
        (status = 200, body = super::rates::FlowRates),
        (status = 400, body = super::ErrorBody),
        (status = 404, body = super::ErrorBody)))]
async fn flow_rates(
    State(api): State<ApiState>,
    Path(name): Path<String>,
    Query(query): Query<RatesQuery>,
) -> Result<Response, ApiError> {
    api.flow(&name)?;
    let seconds = query.seconds.unwrap_or(super::rates::KEPT);
    if !(1..=super::rates::KEPT).contains(&seconds) {
        return Err(ApiError::BadRequest(format!(
            "`seconds` is between 1 and {}",
            super::rates::KEPT
        )));
    }
    let rates = api
        .rates
        .of(&name, seconds)
        .unwrap_or(super::rates::FlowRates {
            interval_seconds: 1,
            received: Vec::new(),
            delivered: Vec::new(),
            failed: Vec::new(),
        });
    Ok(ok(&rates))
}

/// A flow's components in the order messages pass them (input, steps, outputs) with what the
/// metrics counted for each, and the flow's latency from intake to delivery.
#[utoipa::path(get, path = "/api/v1/flows/{flow}/components", tag = "flows",
    params(("flow" = String, Path, description = "The flow's name")),
    responses(
        (status = 200, body = super::components::FlowComponents),
        (status = 404, body = super::ErrorBody)))]
async fn flow_components(
    State(api): State<ApiState>,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    let flow = api.flow(&name)?;
    Ok(ok(&super::components::of(&flow, api.metrics.as_ref())))
}

/// A flow's settings as it runs them.
#[derive(Serialize, ToSchema)]
pub struct FlowConfig {
    /// YAML, after `${…}` substitution, with each credential (a secret field's value, a setting
    /// named like a password, token or key, a URL's password) written `[redacted]`.
    pub yaml: String,
}

/// A flow's effective settings: what it runs with, credentials redacted.
#[utoipa::path(get, path = "/api/v1/flows/{flow}/config", tag = "flows",
    params(("flow" = String, Path, description = "The flow's name")),
    responses(
        (status = 200, body = FlowConfig),
        (status = 404, body = super::ErrorBody)))]
async fn flow_config(
    State(api): State<ApiState>,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    let flow = api.flow(&name)?;
    Ok(ok(&FlowConfig {
        yaml: flow.effective_config().to_string(),
    }))
}

/// Where a message was found.
#[derive(Serialize, ToSchema)]
pub struct Found {
    /// `queued` (a durable flow's, waiting or being delivered), `dead_letter`, `failed` (a
    /// recent failure kept in memory, direct flows included), `delivered` (among the last
    /// delivered, with `admin.ui.history`), or `idempotency_key` (what was asked for is a
    /// key an `http_server` input keeps: its message is then looked up as well).
    pub place: &'static str,
    pub flow: String,
    /// RFC 3339: when it was accepted (`queued`), failed for good (`dead_letter`), failed
    /// (`failed`) or was delivered (`delivered`); for a key, when its message was accepted.
    pub at: String,
    /// `queued`, `dead_letter`: the attempts made.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub attempts: Option<u32>,
    /// `queued`: when the next attempt is due (RFC 3339).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_attempt_at: Option<String>,
    /// `queued`: a worker is delivering it now.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub delivering: Option<bool>,
    /// The message's id; for an `idempotency_key`, the id of the message its first request
    /// made (whose places follow), none when the answer named none.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message_id: Option<String>,
    /// `idempotency_key`: the HTTP status answered to the key's first request (none while it
    /// is in progress); `dead_letter`: the last answer's status.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    /// The last error, or why it failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// Where a message is now, by its id (what `http_server` answered with) or the
/// `Idempotency-Key` it was sent with: in a durable flow's queue (attempts, next try), among
/// the dead letters, among the recent failures any flow keeps in memory, or among the last
/// delivered (with `admin.ui.history`). 404 when none has it.
#[utoipa::path(get, path = "/api/v1/messages/{id}", tag = "flows",
    params(("id" = String, Path, description = "The message's id")),
    responses((status = 200, body = Vec<Found>), (status = 404, body = super::ErrorBody)))]
async fn find_message(
    State(api): State<ApiState>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let found = locate(&api.flows, &api.store, &id).await?;
    if found.is_empty() {
        return Err(ApiError::NotFound(format!(
            "no message or Idempotency-Key `{id}` is queued, dead-lettered, among the recent failures or the delivered ones kept"
        )));
    }
    Ok(ok(&found))
}

/// Every place message `id` is found, queue first; when `id` is an idempotency key a flow
/// keeps, that key, then every place of the message it made.
pub(super) async fn locate(
    flows: &Flows,
    store: &super::StoreCell,
    id: &str,
) -> Result<Vec<Found>, ApiError> {
    let mut found = locate_id(flows, store, id).await?;
    let Some(kv) = store.get() else {
        return Ok(found);
    };
    let names: Vec<String> = flows
        .read()
        .expect("registry lock")
        .keys()
        .cloned()
        .collect();
    for flow in names {
        let Some(key) = crate::inputs::http_server::idempotency::lookup(kv, &flow, id).await?
        else {
            continue;
        };
        let accepted = key
            .message_id
            .as_deref()
            .and_then(|m| m.parse::<ulid::Ulid>().ok())
            .map_or_else(String::new, |m| time(m.timestamp_ms() as i64));
        found.push(Found {
            status: key.status,
            ..Found::new("idempotency_key", flow, accepted, key.message_id.clone())
        });
        if let Some(message) = key.message_id.filter(|m| m != id) {
            found.extend(Box::pin(locate_id(flows, store, &message)).await?);
        }
    }
    Ok(found)
}

impl Found {
    /// Message `id` found at `place` of `flow` at `at`, with nothing else to say yet.
    fn new(place: &'static str, flow: String, at: String, id: Option<String>) -> Found {
        Found {
            place,
            flow,
            at,
            attempts: None,
            next_attempt_at: None,
            delivering: None,
            message_id: id,
            status: None,
            reason: None,
        }
    }
}

/// Every place message `id` is found, queue first.
async fn locate_id(
    flows: &Flows,
    store: &super::StoreCell,
    id: &str,
) -> Result<Vec<Found>, ApiError> {
    let here = |place, flow, at| Found::new(place, flow, at, Some(id.to_string()));
    let mut found = Vec::new();
    if let Some(store) = store.get() {
        if let Some(waiting) = store.find_queued(id).await? {
            let now = crate::core::clock::now_ms();
            found.push(Found {
                attempts: Some(waiting.attempts),
                next_attempt_at: Some(time(waiting.next_attempt_at_ms)),
                delivering: Some(waiting.leased_until_ms.is_some_and(|until| until > now)),
                reason: waiting.last_error,
                ..here("queued", waiting.flow, time(waiting.enqueued_at_ms))
            });
        }
        let filter = weft_store::DlqFilter {
            id: Some(id.to_string()),
            ..Default::default()
        };
        for dead in store.dead_letters(&filter, 10).await? {
            found.push(Found {
                attempts: Some(dead.attempts),
                status: dead.failure.last_status,
                reason: Some(dead.failure.reason),
                ..here("dead_letter", dead.flow, time(dead.failed_at_ms))
            });
        }
    }
    let flows: Vec<_> = flows
        .read()
        .expect("registry lock")
        .values()
        .cloned()
        .collect();
    for flow in flows {
        for failure in flow.failures.recent(crate::core::failures::KEPT) {
            if failure.message_id.as_deref() == Some(id) {
                found.push(Found {
                    reason: Some(format!("{}: {}", failure.stage, failure.reason)),
                    ..here("failed", flow.name.to_string(), failure.at)
                });
            }
        }
        if let Some(at) = id
            .parse::<ulid::Ulid>()
            .ok()
            .and_then(|ulid| flow.delivered_at(ulid))
        {
            found.push(here("delivered", flow.name.to_string(), time(at)));
        }
    }
    Ok(found)
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct FailuresQuery {
    /// How many, newest first; default and most 50 (the last 50 are kept).
    #[param(minimum = 1, maximum = 50)]
    limit: Option<usize>,
}

/// A flow's recent failures, newest first: when, which message, where (`input`, `pipeline`,
/// `output`) and why. Kept in memory, the last 50 since the flow started; for direct flows
/// too, which have no dead letters.
#[utoipa::path(get, path = "/api/v1/flows/{flow}/failures", tag = "flows",
    params(("flow" = String, Path, description = "The flow's name"), FailuresQuery),
    responses(
        (status = 200, body = Vec<crate::core::failures::RecentFailure>),
        (status = 400, body = super::ErrorBody),
        (status = 404, body = super::ErrorBody)))]
async fn flow_failures(
    State(api): State<ApiState>,
    Path(name): Path<String>,
    Query(query): Query<FailuresQuery>,
) -> Result<Response, ApiError> {
    let flow = api.flow(&name)?;
    let kept = crate::core::failures::KEPT;
    let limit = query.limit.unwrap_or(kept);
    if !(1..=kept).contains(&limit) {
        return Err(ApiError::BadRequest(format!(
            "`limit` is between 1 and {kept}"
        )));
    }
    Ok(ok(&flow.failures.recent(limit)))
}

/// Pauses a flow: its inputs take nothing in (`http_server` answers 503 with `Retry-After`,
/// reading inputs wait) and a durable flow's delivery waits; messages in flight finish.
#[utoipa::path(post, path = "/api/v1/flows/{flow}/pause", tag = "flows",
    params(("flow" = String, Path, description = "The flow's name")),
    responses((status = 200, body = FlowInfo), (status = 404, body = super::ErrorBody)))]
async fn pause(
    State(api): State<ApiState>,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    let flow = api.flow(&name)?;
    if flow.pause() {
        tracing::info!(flow = %flow.name, "paused");
    }
    Ok(ok(&api.info(&flow).await))
}

/// Resumes a paused flow.
#[utoipa::path(post, path = "/api/v1/flows/{flow}/resume", tag = "flows",
    params(("flow" = String, Path, description = "The flow's name")),
    responses((status = 200, body = FlowInfo), (status = 404, body = super::ErrorBody)))]
async fn resume(
    State(api): State<ApiState>,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    let flow = api.flow(&name)?;
    if flow.resume() {
        tracing::info!(flow = %flow.name, "resumed");
    }
    Ok(ok(&api.info(&flow).await))
}

/// The messages passing a stage of a flow, as server-sent events (`event: message`, the data
/// one JSON object), until `limit` were sent. A listener that reads too slowly misses messages;
/// the flow never waits for it.
#[utoipa::path(get, path = "/api/v1/flows/{flow}/tap", tag = "flows",
    params(("flow" = String, Path, description = "The flow's name"), TapQuery),
    responses(
        (status = 200, description = "A stream of tapped messages", content_type = "text/event-stream", body = crate::core::tap::Tapped),
        (status = 400, body = super::ErrorBody),
        (status = 404, description = "No such flow, or no such stage of it", body = super::ErrorBody)))]
async fn tap(
    State(api): State<ApiState>,
    Path(name): Path<String>,
    Query(query): Query<TapQuery>,
) -> Result<Response, ApiError> {
    let flow = api.flow(&name)?;
    if let Some(stage) = &query.stage {
        let stages = flow.stages();
        if !stages.contains(stage) {
            return Err(ApiError::NotFound(format!(
                "flow `{name}` has no stage `{stage}`; its stages are: {}",
                stages.join(", ")
            )));
        }
    }
    let sample = query.sample.unwrap_or(1.0);
    if !(sample > 0.0 && sample <= 1.0) {
        return Err(ApiError::BadRequest(
            "`sample` is a share of the messages, in (0, 1]".into(),
        ));
    }
    let limit = query.limit.unwrap_or(100);
    if limit > 100_000 {
        return Err(ApiError::BadRequest(
            "`limit` is at most 100000 messages".into(),
        ));
    }
    let receiver = flow.tap.listen(query.stage, sample, 256);
    let events =
        futures_util::stream::unfold((receiver, limit), |(mut receiver, left)| async move {
            if left == 0 {
                return None;
            }
            let tapped = receiver.recv().await?;
            let event = Event::default()
                .event("message")
                .data(serde_json::to_string(&tapped).unwrap_or_default());
            Some((Ok::<_, Infallible>(event), (receiver, left - 1)))
        });
    Ok(Sse::new(events)
        .keep_alive(KeepAlive::default())
        .into_response())
}
