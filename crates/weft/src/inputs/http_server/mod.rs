//! `http_server`: receives webhooks, or serves a REST endpoint whose answer is the flow's result.
//!
//! In a flow with `delivery: durable` the caller gets `202 {"id": …}` once the message is
//! committed to the store (`429` + `Retry-After` when the flow's queue is full).
//!
//! With `response: ack` (default) the caller gets `200 {"id": …}` only after every output
//! accepted the message (also when a filter dropped it on purpose), and `502` with the reason when
//! delivery failed for good. With `response: pipeline` the caller gets the message as the
//! pipeline left it (`204` if it was dropped), so a flow is an API endpoint.
//!
//! With `auth` (see [`auth`]: API keys, basic auth, HMAC-signed webhooks with presets for
//! GitHub, Stripe, Slack and Shopify, JWT bearer tokens), a request that does not prove itself
//! is answered `401` (`503` when its JWT cannot be checked: no key set) and never reaches the
//! flow. `tls` serves HTTPS (mutual TLS with `client_ca_file`) and `limits` bounds what a
//! client may hold; see [`crate::server`].
//!
//! Refusals: `503` + `Retry-After` when the flow is at its concurrency limit (nothing is queued
//! without bound), `413` over `max_body_size`, `400` for a body that does not parse (with the
//! position), `405` for a method not listed, `404` for any other path, `408` when the body is not
//! read within `read_timeout`, `422` when a processor fails on the message (or a durable flow's
//! ordering key is null), `409` + `Retry-After` when a message with the same dedupe key is still
//! being delivered, `431` for too many or too large headers (`limits`). With `idempotency`, see
//! [`idempotency`] for its `409`, `422` and `400`.
//!
//! Bodies by content type (`core::body`): JSON (also without a content type), forms (an object
//! of strings; a "form" starting with `{` or `[` is JSON, as `curl -d` sends it), XML (DTDs
//! refused), CSV (an array of records), multipart forms (fields; files as `{ filename,
//! content_type, content }`) and anything else as a string.
//! Method, path, query and headers are in the metadata: `%http.method`, `%http.path`,
//! `%http.query`, `%http.headers.<lowercase name>` (built only for flows whose programs read `%`).
//! Several flows may share one address with different paths.
//!
//! ```yaml
//! input:
//!   http_server:
//!     address: 0.0.0.0:8080
//!     path: /hooks/orders
//!     methods: [POST]
//!     max_body_size: 1MiB
//!     response: ack           # or pipeline
//!     auth: { hmac: { preset: github, secret: "${GH_SECRET}" } }
//! ```

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use bytes::Bytes;
use http::{HeaderValue, Method, Request, StatusCode, header};
use http_body_util::{BodyExt, Limited};
use serde::Deserialize;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::BuildError;
use crate::config::units::{Dur, Size};
use crate::core::durable::{AcceptError, Reservation};
use crate::core::flow::{Admission, Flow, FlowError, Processed};
use crate::core::mapping::{Value, empty_object, insert};
use crate::core::{Message, Output, Processor, body};
use crate::server::Limits;
use crate::server::tls::{Tls, TlsConfig};

pub mod auth;
pub mod idempotency;
pub mod jwt;

use crate::clients::Resources;
use crate::clients::Shared;
use crate::core::feed::Feed;
use idempotency::{Begin, Idempotency};

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[schemars(rename = "HttpServerInput")]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// `host:port` to listen on.
    pub address: String,
    /// Path to serve, e.g. `/hooks/orders`.
    #[serde(default = "default_path")]
    pub path: String,
    /// Methods accepted on the path.
    #[serde(default = "default_methods")]
    pub methods: Vec<String>,
    /// Largest body accepted.
    #[serde(default = "default_max_body")]
    pub max_body_size: Size,
    /// Time allowed to receive the body.
    #[serde(default = "default_read_timeout")]
    pub read_timeout: Dur,
    /// `ack` (answer `{"id"}` after delivery) or `pipeline` (answer with the result).
    #[serde(default)]
    pub response: ResponseMode,
    /// Repeats of a request with the same `Idempotency-Key` get the first answer; see
    /// [`idempotency`].
    #[serde(default)]
    pub idempotency: Option<idempotency::Config>,
    /// How callers prove who they are; see [`auth`].
    #[serde(default)]
    pub auth: Option<auth::Config>,
    /// Serve HTTPS (and optionally require client certificates); see [`crate::server::tls`].
    #[serde(default)]
    pub tls: Option<TlsConfig>,
    /// Connection limits of the address (shared by every flow on it); see [`Limits`].
    #[serde(default)]
    pub limits: Limits,
}

#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ResponseMode {
    #[default]
    Ack,
    Pipeline,
}

fn default_path() -> String {
    "/".into()
}
fn default_methods() -> Vec<String> {
    vec!["POST".into()]
}
fn default_max_body() -> Size {
    Size(1 << 20)
}
fn default_read_timeout() -> Dur {
    Dur(Duration::from_secs(30))
}

/// A validated endpoint, waiting for its flow.
#[derive(Debug, Clone)]
pub struct Endpoint {
    pub address: SocketAddr,
    pub path: String,
    methods: Vec<Method>,
    max_body_size: usize,
    read_timeout: Duration,
    response: ResponseMode,
    idempotency: Option<Idempotency>,
    auth: Option<Arc<auth::Auth>>,
    pub tls: Option<Arc<Tls>>,
    pub limits: Limits,
}

impl super::Spec for Config {
    type Built = Endpoint;

    fn build(self, shared: &Shared, _resources: &Resources) -> Result<Endpoint, Vec<BuildError>> {
        let http = &shared.http;
        let mut errors = Vec::new();
        let address = self
            .address
            .parse::<SocketAddr>()
            .map_err(|_| {
                errors.push(BuildError::new(
                    "address",
                    format!(
                        "`{}` is not a `host:port` address like 127.0.0.1:8080",
                        self.address
                    ),
                ))
            })
            .ok();
        if !self.path.starts_with('/') {
            errors.push(BuildError::new("path", "path must start with `/`"));
        } else if self.path.contains(['{', '}'])
            || self.path.split('/').any(|seg| seg.starts_with([':', '*']))
        {
            // The router would read these as parameters or wildcards, which flows do not offer.
            errors.push(BuildError::new(
                "path",
                "path parameters and wildcards (`{id}`, `:id`, `*rest`) are not supported; give a fixed path",
            ));
        }
        let mut methods = Vec::new();
        for (i, m) in self.methods.iter().enumerate() {
            match Method::from_bytes(m.to_ascii_uppercase().as_bytes()) {
                Ok(m) => methods.push(m),
                Err(_) => errors.push(BuildError::new(
                    &format!("methods.{i}"),
                    format!("invalid HTTP method `{m}`"),
                )),
            }
        }
        if methods.is_empty() && errors.is_empty() {
            errors.push(BuildError::new("methods", "list at least one method"));
        }
        let idempotency = match self.idempotency.as_ref().map(idempotency::Config::build) {
            None => None,
            Some(Ok(i)) => Some(i),
            Some(Err(e)) => {
                errors.extend(e);
                None
            }
        };
        let auth = match self.auth.as_ref().map(|a| a.build(http)) {
            None => None,
            Some(Ok(a)) => Some(Arc::new(a)),
            Some(Err(e)) => {
                errors.extend(e.into_iter().map(|mut e| {
                    e.field = format!("auth.{}", e.field);
                    e
                }));
                None
            }
        };
        let tls = match self.tls.as_ref().map(TlsConfig::load) {
            None => None,
            Some(Ok(tls)) => Some(Arc::new(tls)),
            Some(Err(e)) => {
                errors.extend(e);
                None
            }
        };
        errors.extend(self.limits.check().into_iter().map(|mut e| {
            e.field = format!("limits.{}", e.field);
            e
        }));
        match address {
            Some(address) if errors.is_empty() => Ok(Endpoint {
                auth,
                tls,
                limits: self.limits.clone(),
                address,
                path: self.path.clone(),
                methods,
                max_body_size: self.max_body_size.0 as usize,
                read_timeout: self.read_timeout.0,
                response: self.response,
                idempotency,
            }),
            _ => Err(errors),
        }
    }
}

impl Endpoint {
    /// Whether the caller is answered with the pipeline's result (`response: pipeline`).
    pub fn replies_with_pipeline(&self) -> bool {
        self.response == ResponseMode::Pipeline
    }
}

impl super::Source for Endpoint {
    /// Whether the endpoint keeps idempotency keys (in the store).
    fn uses_store(&self) -> bool {
        self.idempotency.is_some()
    }

    /// Never called: the engine serves every endpoint of an address together ([`serve`]).
    async fn run<P: Processor, O: Output>(&self, _feed: Feed<P, O>) -> std::io::Result<()> {
        Err(std::io::Error::other(
            "http_server endpoints are served by address, not run one by one",
        ))
    }
}

struct Route<P, O> {
    endpoint: Endpoint,
    flow: Arc<Flow<P, O>>,
    allow: HeaderValue,
    /// Messages being handed to the flow; waited for at shutdown.
    work: TaskTracker,
}

/// The endpoints one address serves. A reload replaces them whole ([`Table::set`]); a request
/// already in progress finishes with the flow it started with.
#[derive(Clone)]
pub struct Table {
    router: Arc<std::sync::RwLock<Router>>,
    /// Messages being handed to the flows; waited for when the address stops.
    work: TaskTracker,
}

impl Table {
    pub fn new<P: Processor, O: Output>(endpoints: Vec<(Endpoint, Arc<Flow<P, O>>)>) -> Table {
        let work = TaskTracker::new();
        Table {
            router: Arc::new(std::sync::RwLock::new(routes(endpoints, &work))),
            work,
        }
    }

    /// Serves these endpoints from the next request on.
    pub fn set<P: Processor, O: Output>(&self, endpoints: Vec<(Endpoint, Arc<Flow<P, O>>)>) {
        let router = routes(endpoints, &self.work);
        *self.router.write().expect("routing table lock") = router;
    }
}

fn routes<P: Processor, O: Output>(
    endpoints: Vec<(Endpoint, Arc<Flow<P, O>>)>,
    work: &TaskTracker,
) -> Router {
    let mut router = Router::new();
    for (endpoint, flow) in endpoints {
        let allow = endpoint
            .methods
            .iter()
            .map(Method::as_str)
            .collect::<Vec<_>>()
            .join(", ");
        let path = endpoint.path.clone();
        let route = Arc::new(Route {
            allow: HeaderValue::from_str(&allow).unwrap_or(HeaderValue::from_static("POST")),
            endpoint,
            flow,
            work: work.clone(),
        });
        router = router.route(
            &path,
            any(move |request: Request<Body>| handle(route.clone(), request)),
        );
    }
    router.fallback(|| async { error(StatusCode::NOT_FOUND, "no flow listens on this path", None) })
}

/// Serves every endpoint that shares one address until `shutdown`, then finishes the requests
/// in flight (their callers get their real answer) and returns.
pub async fn serve<P: Processor, O: Output>(
    listener: tokio::net::TcpListener,
    endpoints: Vec<(Endpoint, Arc<Flow<P, O>>)>,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    // Flows sharing an address share its TLS and limits (the config loader checks they agree).
    let (tls, limits) = endpoints
        .first()
        .map(|(e, _)| (e.tls.clone(), e.limits.clone()))
        .unwrap_or_default();
    serve_table(listener, Table::new(endpoints), tls, limits, shutdown).await
}

/// [`serve`] from a table the caller may change while it runs.
pub async fn serve_table(
    listener: tokio::net::TcpListener,
    table: Table,
    tls: Option<Arc<Tls>>,
    limits: Limits,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let address = listener.local_addr()?;
    let current = table.router.clone();
    let router = Router::new().fallback(move |request: Request<Body>| {
        let mut router = current.read().expect("routing table lock").clone();
        async move {
            match tower_service::Service::call(&mut router, request).await {
                Ok(response) => response,
                Err(never) => match never {},
            }
        }
    });
    if let Some(tls) = &tls {
        tokio::spawn(
            tls.clone()
                .watch(format!("http_server {address}"), shutdown.clone()),
        );
    }
    crate::server::serve(listener, router, tls, limits, shutdown).await;
    // Messages whose callers hung up are still finishing.
    table.work.close();
    table.work.wait().await;
    Ok(())
}

fn error(status: StatusCode, message: &str, id: Option<&str>) -> Response {
    let mut body = serde_json::json!({ "error": message });
    if let Some(id) = id {
        body["id"] = id.into();
    }
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

async fn handle<P: Processor, O: Output>(
    route: Arc<Route<P, O>>,
    request: Request<Body>,
) -> Response {
    let mut signature = None;
    let response = answer(&route, request, &mut signature).await;
    // A signature counts as used once its request was accepted: a sender retrying after a
    // failure (GitHub and Shopify resend the same signature) is not taken for a replay.
    if let Some(signature) = signature
        && response.status().is_success()
    {
        signature.accept();
    }
    response
}

async fn answer<P: Processor, O: Output>(
    route: &Arc<Route<P, O>>,
    request: Request<Body>,
    signature: &mut Option<auth::Signature>,
) -> Response {
    let route = route.clone();
    let endpoint = &route.endpoint;
    if !endpoint.methods.contains(request.method()) {
        let mut response = error(
            StatusCode::METHOD_NOT_ALLOWED,
            &format!("method {} is not allowed here", request.method()),
            None,
        );
        response
            .headers_mut()
            .insert(header::ALLOW, route.allow.clone());
        return response;
    }
    let claims = match &endpoint.auth {
        Some(auth) => match auth
            .check_head(request.headers(), request.uri().query())
            .await
        {
            Ok(claims) => claims,
            Err(refused) => return unauthorized(&route, auth, refused),
        },
        None => None,
    };
    let too_large = || {
        error(
            StatusCode::PAYLOAD_TOO_LARGE,
            &format!(
                "body is larger than max_body_size ({} bytes)",
                endpoint.max_body_size
            ),
            None,
        )
    };
    let declared = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<usize>().ok());
    if declared.is_some_and(|len| len > endpoint.max_body_size) {
        return too_large();
    }
    if route.flow.is_paused() {
        return retry_later(
            StatusCode::SERVICE_UNAVAILABLE,
            "flow is paused; retry later",
        );
    }
    // Durable flows are bounded by their store queue (a place is reserved before the body is
    // read), direct flows by their concurrency; both by the requests in progress.
    let durable = route.flow.durable();
    let reservation = match durable.map(|queue| queue.reserve()) {
        Some(None) => {
            return retry_later(
                StatusCode::TOO_MANY_REQUESTS,
                "flow queue is full (max_queued / max_queued_bytes); retry later",
            );
        }
        Some(Some(reservation)) => Some(reservation),
        None => None,
    };
    let Some(admission) = route.flow.try_admit() else {
        return retry_later(
            StatusCode::SERVICE_UNAVAILABLE,
            "flow is at its concurrency limit; retry later",
        );
    };
    let (parts, body) = request.into_parts();
    let read = tokio::time::timeout(
        endpoint.read_timeout,
        Limited::new(body, endpoint.max_body_size).collect(),
    )
    .await;
    let bytes = match read {
        Err(_) => {
            return error(
                StatusCode::REQUEST_TIMEOUT,
                "body not received within read_timeout",
                None,
            );
        }
        Ok(Err(e))
            if e.downcast_ref::<http_body_util::LengthLimitError>()
                .is_some() =>
        {
            return too_large();
        }
        Ok(Err(e)) => {
            return error(
                StatusCode::BAD_REQUEST,
                &format!("could not read body: {e}"),
                None,
            );
        }
        Ok(Ok(collected)) => collected.to_bytes(),
    };
    if let Some(auth) = &endpoint.auth {
        match auth.check_body(&parts.headers, &bytes) {
            Ok(seen) => *signature = seen,
            Err(refused) => return unauthorized(&route, auth, refused),
        }
    }
    let ticket = match (&endpoint.idempotency, route.flow.store()) {
        (Some(idempotency), Some(store)) => {
            match idempotency
                .begin(store, &route.flow.name, &parts, &bytes)
                .await
            {
                Ok(Begin::Unkeyed) => None,
                Ok(Begin::First(ticket)) => Some(ticket),
                Ok(Begin::Answer(answer)) => return answer,
                Err(e @ idempotency::IdempotencyError::BadKey { .. }) => {
                    return error(StatusCode::BAD_REQUEST, &e.to_string(), None);
                }
                Err(e) => {
                    tracing::error!(error = %e, "idempotency key lookup failed; the caller was answered 503");
                    return retry_later(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "the store is unavailable; retry later",
                    );
                }
            }
        }
        _ => None,
    };
    let content_type = parts
        .headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok());
    let value = match body::decode(content_type, bytes) {
        Ok(v) => v,
        Err(message) => {
            route.flow.count_rejected();
            let refused = error(StatusCode::BAD_REQUEST, &message, None);
            return match ticket {
                Some(ticket) => ticket.finish(refused).await,
                None => refused,
            };
        }
    };
    let mut message = Message::new(value);
    if route.flow.reads_metadata() {
        message.metadata = metadata(&parts, endpoint.auth.as_deref(), claims);
    }
    message.traceparent = parts
        .headers
        .get("traceparent")
        .and_then(|v| v.to_str().ok())
        .filter(|tp| crate::core::trace::parse_traceparent(tp).is_some())
        .map(Into::into);
    if route.flow.store().is_none() {
        // Nothing to settle: a caller hanging up may cancel the delivery, which it never saw
        // acknowledged (at least once still holds).
        return respond(&route, message, reservation, admission).await;
    }
    // In a task of its own: a caller that hangs up drops this handler, and must not cancel a
    // delivery half done, whose outcome still settles or gives back its keys.
    let handed = route.work.spawn({
        let route = route.clone();
        async move {
            let answer = respond(&route, message, reservation, admission).await;
            match ticket {
                Some(ticket) => ticket.finish(answer).await,
                None => answer,
            }
        }
    });
    handed.await.unwrap_or_else(|e| {
        tracing::error!(error = %e, "a request's task failed");
        error(StatusCode::INTERNAL_SERVER_ERROR, "internal error", None)
    })
}

/// 401 with the short reason (basic auth and JWT also say how to authenticate), or 503 when
/// weft could not check.
fn unauthorized<P: Processor, O: Output>(
    route: &Route<P, O>,
    auth: &auth::Auth,
    refused: auth::Refused,
) -> Response {
    tracing::warn!(flow = %route.flow.name, reason = refused.reason, "request refused by auth");
    if refused.status != StatusCode::UNAUTHORIZED {
        return retry_later(refused.status, refused.reason);
    }
    let mut response = error(refused.status, refused.reason, None);
    let challenge = match auth {
        auth::Auth::Basic(_) => Some("Basic realm=\"weft\""),
        auth::Auth::Jwt(_) => Some("Bearer realm=\"weft\""),
        _ => None,
    };
    if let Some(challenge) = challenge {
        response.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static(challenge),
        );
    }
    response
}

fn retry_later(status: StatusCode, message: &str) -> Response {
    let mut response = error(status, message, None);
    response
        .headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    response
}

/// Hands the message to the flow and answers the caller: once it is stored (durable), or once
/// it is delivered (direct).
async fn respond<P: Processor, O: Output>(
    route: &Route<P, O>,
    message: Message,
    reservation: Option<Reservation>,
    admission: Admission,
) -> Response {
    let endpoint = &route.endpoint;
    let id = message.id.to_string();
    if let (Some(queue), Some(reservation)) = (route.flow.durable(), reservation) {
        let accepted = queue.accept(reservation, &message).await;
        drop(admission);
        return match accepted {
            Ok(()) => {
                route.flow.count_received();
                (
                    StatusCode::ACCEPTED,
                    [(header::CONTENT_TYPE, "application/json")],
                    format!(r#"{{"id":"{id}"}}"#),
                )
                    .into_response()
            }
            Err(e @ AcceptError::OrderKey(_)) => {
                route.flow.count_rejected();
                error(StatusCode::UNPROCESSABLE_ENTITY, &e.to_string(), None)
            }
            Err(e) => {
                if e.is_outage() {
                    tracing::debug!(%id, error = %e, "could not store the message; the caller was answered 503");
                } else {
                    tracing::error!(%id, error = %e, "could not store the message; the caller was answered 503");
                }
                retry_later(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "the store is unavailable; retry later",
                )
            }
        };
    }
    let result = route.flow.process(message).await;
    drop(admission);
    match (result, endpoint.response) {
        (Ok(Processed::Delivered(_)), ResponseMode::Ack) => ack(&id, false),
        (Ok(Processed::Filtered), ResponseMode::Ack) => ack(&id, true),
        (Ok(Processed::Delivered(mut messages)), ResponseMode::Pipeline) => {
            // One message answers as itself; the parts of a split one as a JSON array.
            let m = match messages.len() {
                0 => return StatusCode::NO_CONTENT.into_response(),
                1 => messages.remove(0),
                _ => Message::new(crate::core::Value::Array(
                    messages.into_iter().map(|m| m.value).collect(),
                )),
            };
            let content_type = if m.is_json() {
                "application/json"
            } else {
                "text/plain; charset=utf-8"
            };
            (
                StatusCode::OK,
                [(header::CONTENT_TYPE, content_type)],
                m.body(),
            )
                .into_response()
        }
        (Ok(Processed::Filtered), ResponseMode::Pipeline) => StatusCode::NO_CONTENT.into_response(),
        (Err(e @ FlowError::Processing { .. }), _) => {
            tracing::warn!(%id, error = %e, "message failed in the pipeline");
            error(StatusCode::UNPROCESSABLE_ENTITY, &e.to_string(), Some(&id))
        }
        (Err(e @ FlowError::Busy { .. }), _) => {
            let mut answer = error(StatusCode::CONFLICT, &e.to_string(), Some(&id));
            answer
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            answer
        }
        (Err(e @ FlowError::Delivery { .. }), _) => {
            tracing::error!(%id, error = %e, "delivery failed; the caller was answered 502");
            error(StatusCode::BAD_GATEWAY, &e.to_string(), Some(&id))
        }
    }
}

fn ack(id: &str, filtered: bool) -> Response {
    let body = if filtered {
        format!(r#"{{"id":"{id}","filtered":true}}"#)
    } else {
        format!(r#"{{"id":"{id}"}}"#)
    };
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/json")],
        body,
    )
        .into_response()
}

/// `%http`; the credential `auth` checked (its header or query parameter) is left out.
fn metadata(
    parts: &http::request::Parts,
    auth: Option<&auth::Auth>,
    claims: Option<Value>,
) -> Value {
    let hidden = auth.and_then(auth::Auth::secret_header);
    let mut headers = BTreeMap::new();
    for (name, value) in &parts.headers {
        if Some(name) == hidden {
            continue;
        }
        headers.insert(
            name.as_str().into(),
            Value::Bytes(Bytes::copy_from_slice(value.as_bytes())),
        );
    }
    let mut http = empty_object();
    insert(&mut http, "method", Value::from(parts.method.as_str()));
    insert(&mut http, "path", Value::from(parts.uri.path()));
    let query = parts.uri.query().unwrap_or("");
    let query = match auth.and_then(auth::Auth::secret_query) {
        Some(secret) => form_urlencoded::Serializer::new(String::new())
            .extend_pairs(form_urlencoded::parse(query.as_bytes()).filter(|(k, _)| k != secret))
            .finish(),
        None => query.to_string(),
    };
    insert(&mut http, "query", Value::from(query));
    insert(
        &mut http,
        "headers",
        Value::Object(headers.into_iter().collect()),
    );
    let mut meta = empty_object();
    insert(&mut meta, "http", http);
    if let Some(claims) = claims {
        insert(&mut meta, "jwt", claims);
    }
    meta
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::inputs::Spec as _;

    fn config(path: &str) -> Config {
        Config {
            address: "127.0.0.1:0".into(),
            path: path.into(),
            methods: default_methods(),
            max_body_size: default_max_body(),
            read_timeout: default_read_timeout(),
            response: ResponseMode::Ack,
            idempotency: None,
            auth: None,
            tls: None,
            limits: Limits::default(),
        }
    }

    #[test]
    fn paths_the_router_would_reject_are_config_errors() {
        assert!(
            config("/hooks/orders")
                .build(&Shared::default(), &Resources::default())
                .is_ok()
        );
        for bad in ["/hooks/{id}", "/hooks/:id", "/files/*rest", "hooks"] {
            assert!(
                config(bad)
                    .build(&Shared::default(), &Resources::default())
                    .is_err(),
                "{bad}"
            );
        }
    }
}
