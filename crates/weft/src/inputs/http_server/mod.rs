//! `http_server`: receives webhooks, or serves a REST endpoint whose answer is the flow's result.
//!
//! In a flow with `delivery: durable` the caller gets `202 {"id": …}` once the message is
//! committed to the store (`429` + `Retry-After` when the flow's queue is full).
//!
//! With `response: ack` (default) the caller gets `200 {"id": …}` only after every output
//! accepted the message (also when a filter dropped it on purpose). With `response: pipeline`
//! the caller gets the message as the pipeline left it (`204` if it was dropped), so a flow is an
//! API endpoint: `%response.status` and `%response.headers.<name>` set by the pipeline are the
//! answer's status and headers, and the body is JSON, the string as it is, or XML when the flow
//! set an XML `Content-Type`.
//!
//! Paths take parameters: `/customers/{id}` puts the segment in `%http.params.id`, a final
//! `{*rest}` the rest of the path. Several flows may share one address with different paths, or
//! one path with different methods (`GET /items/{id}` in one flow, `PUT` in another); overlaps
//! are config errors. A request without a body (`GET`, `HEAD`, `DELETE`, `OPTIONS`) is an empty
//! message, and what it asks is in the metadata: `%http.method`, `%http.path`,
//! `%http.params`, `%http.query`, `%http.headers.<lowercase name>` (built only for flows whose
//! programs read `%`). `HEAD` is served by the path's `GET` flow unless one serves it.
//!
//! With `auth` (see [`auth`]: API keys, basic auth, HMAC-signed webhooks with presets for
//! GitHub, Stripe, Slack, Shopify, Standard Webhooks, Paddle, Twilio, Linear and Square, JWT
//! bearer tokens), a request that does not prove itself
//! is answered `401` (`503` when its JWT cannot be checked: no key set) and never reaches the
//! flow. `tls` serves HTTPS (mutual TLS with `client_ca_file`) and `limits` bounds what a
//! client may hold; see [`crate::server`].
//!
//! Every refusal and failure is `application/problem+json` (RFC 9457; see [`crate::server::problem`]): `type`
//! `urn:weft:problem:<kind>`, `title`, `status`, `detail` where it is about the caller's own
//! request, and the message `id`. What lies behind weft (an upstream's URL or answer, the
//! failing step) is not told unless the endpoint says `errors: detailed`.
//!
//! | status | kind | when |
//! |---|---|---|
//! | 400 | `invalid-body`, `unreadable-body`, `invalid-idempotency-key`, `invalid-host`, `invalid-path` | the body does not parse as its content type says (with the position), or does not unpack; an HTTP/1.1 request without one valid `Host` |
//! | 401 | `unauthorized` | `auth` refused the request |
//! | 404 | `not-found` | no flow serves the path |
//! | 405 | `method-not-allowed` | no flow serves the method on the path (`Allow` lists those that do) |
//! | 408 | `body-timeout` | the body did not arrive within `read_timeout` |
//! | 409 | `in-progress`, `idempotency-key-in-use` | a message with the same dedupe or idempotency key is still being delivered (`Retry-After`) |
//! | 413 | `payload-too-large` | over `max_body_size`, as sent or once unpacked (a `Content-Encoding: gzip` bomb); a durable flow's message over a cluster's NATS `max_payload` |
//! | 415 | `unsupported-encoding` | a `Content-Encoding` other than `gzip`, `deflate`, `br` (`Accept-Encoding` lists those) |
//! | 422 | `invalid-message` | the pipeline refused the message: an `assert`'s own message, a program error on its data, a schema it does not fit |
//! | 429 | `queue-full` | a durable flow's queue is full (`Retry-After`) |
//! | 502 | `upstream-failed` | a system the flow calls refused or failed the message for good |
//! | 503 | `upstream-unavailable`, `overloaded`, `flow-paused`, `store-unavailable`, `auth-unavailable` | worth retrying later (`Retry-After`): an upstream down or its circuit open, the flow at its concurrency limit or paused, the store unwritable |
//! | 431 | | too many or too large headers (`limits`) |
//!
//! With `idempotency`, see [`idempotency`].
//!
//! Bodies by content type (`core::body`): JSON (also without a content type), forms (an object
//! of strings; a "form" starting with `{` or `[` is JSON, as `curl -d` sends it), XML (DTDs
//! refused), CSV (an array of records), multipart forms (fields; files as `{ filename,
//! content_type, content }`) and anything else as a string (bytes, kept exactly: a binary body
//! answered by `response: pipeline` goes back as `application/octet-stream`). Compressed
//! bodies are unpacked first; signatures are checked on the body as sent.
//!
//! ```yaml
//! input:
//!   http_server:
//!     address: 0.0.0.0:8080
//!     path: /customers/{id}
//!     methods: [GET]
//!     response: pipeline      # or ack (default)
//!     errors: brief           # or detailed: failures say what failed, where
//!     auth: { api_key: { header: X-Api-Key, keys: ["${API_KEY}"] } }
//! # pipeline:
//! #   - map: |
//! #       %response.status = 404
//! #       %response.headers.Location = "/customers/" + string!(%http.params.id)
//! ```

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::FromRequestParts;
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
use crate::server::problem::Problem;
use auth::Verified;
use idempotency::{Begin, Idempotency};

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[schemars(rename = "HttpServerInput")]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// `host:port` to listen on.
    pub address: String,
    /// Path to serve, e.g. `/hooks/orders`. `{name}` takes one segment into
    /// `%http.params.name` (`/customers/{id}`), a final `{*name}` the rest of the path
    /// (`/files/{*rest}`). Several flows may serve one address with different paths, or one
    /// path with different methods; a fixed segment wins over a parameter, a parameter over a
    /// wildcard.
    #[serde(default = "default_path")]
    pub path: String,
    /// Methods accepted on the path. A flow serving `GET` also answers `HEAD` (without the body)
    /// unless another flow on the path serves `HEAD`.
    #[serde(default = "default_methods")]
    pub methods: Vec<String>,
    /// Largest body accepted: 1 MiB unless set, or what the sender of an `auth` preset sends
    /// at most (`github`: 25 MiB).
    #[serde(default)]
    pub max_body_size: Option<Size>,
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
    /// What a failure answer tells the caller: `brief` (default) says what was wrong with its
    /// own request and nothing of the systems behind weft; `detailed` adds the whole reason and
    /// the failing step, for internal callers. See [`crate::server::problem`].
    #[serde(default)]
    pub errors: Errors,
}

#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Errors {
    #[default]
    Brief,
    Detailed,
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
/// Largest body accepted when neither `max_body_size` nor an `auth` preset says.
const DEFAULT_MAX_BODY: usize = 1 << 20;
fn default_read_timeout() -> Dur {
    Dur(Duration::from_secs(30))
}

/// A validated endpoint, waiting for its flow.
#[derive(Debug, Clone)]
pub struct Endpoint {
    pub address: SocketAddr,
    pub path: String,
    /// The path's parameters, in order.
    params: Vec<String>,
    methods: Vec<Method>,
    max_body_size: usize,
    read_timeout: Duration,
    response: ResponseMode,
    idempotency: Option<Idempotency>,
    auth: Option<Arc<auth::Auth>>,
    /// A form body's one `payload` field is the JSON message (GitHub's form deliveries).
    form_payload: bool,
    pub tls: Option<Arc<Tls>>,
    pub limits: Limits,
    pub errors: Errors,
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
        if let Err(e) = check_path(&self.path) {
            errors.push(BuildError::new("path", e));
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
                params: param_names(&self.path),
                path: self.path.clone(),
                methods,
                max_body_size: self.max_body_size.map_or_else(
                    || {
                        self.auth
                            .as_ref()
                            .and_then(auth::Config::body_limit)
                            .unwrap_or(DEFAULT_MAX_BODY)
                    },
                    |size| size.0 as usize,
                ),
                read_timeout: self.read_timeout.0,
                response: self.response,
                form_payload: self
                    .auth
                    .as_ref()
                    .is_some_and(auth::Config::sends_form_payload),
                idempotency,
                errors: self.errors,
            }),
            _ => Err(errors),
        }
    }
}

/// Why `path` cannot be served, if it cannot: the router's own syntax, checked here so that a
/// bad path is a config error rather than a refusal at start.
fn check_path(path: &str) -> Result<(), String> {
    if !path.starts_with('/') {
        return Err("path must start with `/`".into());
    }
    if path.split('/').any(|seg| seg.starts_with([':', '*'])) {
        return Err(
            "write a parameter as `{id}` and a wildcard as `{*rest}` (`:id` and `*rest` are other routers' spelling)".into(),
        );
    }
    matchit::Router::new()
        .insert(path, ())
        .map_err(|e| match e {
            matchit::InsertError::InvalidCatchAll => {
                "a wildcard `{*name}` may only end the path".to_string()
            }
            matchit::InsertError::InvalidParamSegment => {
                "a segment may hold one parameter, after any fixed text (`/v{version}`, not `/{a}-{b}`)".to_string()
            }
            _ => format!("`{path}` is not a valid route: parameters are `{{name}}` (letters, digits, `_`); a literal brace is doubled"),
        })
}

/// Where the routes of one address overlap: two flows serving the same path (parameters named
/// alike or not) with a method in common, or paths the router cannot tell apart. Routes are
/// `(path, methods, flow)`.
pub fn route_conflicts(routes: &[(&str, &[Method], &str)]) -> Vec<(usize, String)> {
    let mut conflicts = Vec::new();
    let mut router = matchit::Router::new();
    for (i, (path, methods, flow)) in routes.iter().enumerate() {
        let shape = route_shape(path);
        let same = routes[..i]
            .iter()
            .find(|(p, m, _)| route_shape(p) == shape && m.iter().any(|m| methods.contains(m)));
        if let Some((p, m, other)) = same {
            let common = methods
                .iter()
                .filter(|x| m.contains(x))
                .map(Method::as_str)
                .collect::<Vec<_>>()
                .join(", ");
            conflicts.push((i, format!("flow `{other}` already serves {common} {p}")));
            continue;
        }
        let known = routes[..i].iter().any(|(p, ..)| route_shape(p) == shape);
        if known {
            continue;
        }
        if let Err(matchit::InsertError::Conflict { with }) = router.insert(*path, *flow) {
            let other = router.at(&with).map(|m| *m.value).unwrap_or_default();
            conflicts.push((
                i,
                format!(
                    "{path} overlaps flow `{other}`'s {with}: the router cannot tell them apart"
                ),
            ));
        }
    }
    conflicts
}

/// The names of a path's parameters, in order (`/a/{id}/{*rest}` → `id`, `rest`).
fn param_names(path: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut rest = path;
    while let Some(start) = rest.find('{') {
        if rest[start + 1..].starts_with('{') {
            rest = &rest[start + 2..];
            continue;
        }
        let Some(end) = rest[start..].find('}') else {
            break;
        };
        names.push(
            rest[start + 1..start + end]
                .trim_start_matches('*')
                .to_string(),
        );
        rest = &rest[start + end + 1..];
    }
    names
}

/// A path with its parameters' names left out: `/a/{id}` and `/a/{key}` are one route (a
/// doubled brace is a literal one).
fn route_shape(path: &str) -> String {
    let mut shape = String::with_capacity(path.len());
    let mut in_param = false;
    let mut chars = path.chars().peekable();
    while let Some(c) = chars.next() {
        if !in_param && matches!(c, '{' | '}') && chars.peek() == Some(&c) {
            chars.next();
            shape.push(c);
            shape.push(c);
            continue;
        }
        match c {
            '{' if !in_param => {
                in_param = true;
                shape.push('{');
            }
            '}' if in_param => {
                in_param = false;
                shape.push('}');
            }
            '*' if in_param => shape.push('*'),
            _ if in_param => {}
            c => shape.push(c),
        }
    }
    shape
}

impl Endpoint {
    /// The endpoint's inbound auth, for `weft test` to sign requests as their sender would.
    pub fn auth(&self) -> Option<Arc<auth::Auth>> {
        self.auth.clone()
    }

    /// Whether the caller is answered with the pipeline's result (`response: pipeline`).
    pub fn replies_with_pipeline(&self) -> bool {
        self.response == ResponseMode::Pipeline
    }

    /// The methods the endpoint serves.
    pub fn methods(&self) -> &[Method] {
        &self.methods
    }
}

impl super::Source for Endpoint {
    /// Whether the endpoint keeps idempotency keys or senders' delivery ids (in the store).
    fn uses_store(&self) -> bool {
        self.idempotency.is_some() || self.auth.as_ref().is_some_and(|a| a.keeps_deliveries())
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
    /// Messages being handed to the flow; waited for at shutdown.
    work: TaskTracker,
}

type RouteOf<P, O> = Arc<Route<P, O>>;

/// The flows serving one path, by method.
struct Path<P, O> {
    routes: Vec<Arc<Route<P, O>>>,
    /// Every method served here, for `405`'s `Allow`.
    allow: HeaderValue,
}

impl<P, O> Path<P, O> {
    /// The flow serving `method`; `HEAD` goes to a `GET` flow unless one serves `HEAD` itself.
    fn route(&self, method: &Method) -> Option<&Arc<Route<P, O>>> {
        let serves = |m: &Method| self.routes.iter().find(|r| r.endpoint.methods.contains(m));
        serves(method).or_else(|| (method == Method::HEAD).then(|| serves(&Method::GET))?)
    }
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
    let mut paths: Vec<(String, Vec<RouteOf<P, O>>)> = Vec::new();
    for (endpoint, flow) in endpoints {
        let path = endpoint.path.clone();
        let route = Arc::new(Route {
            endpoint,
            flow,
            work: work.clone(),
        });
        // `/items/{id}` and `/items/{key}` are one path to the router; each flow reads the
        // parameters by its own names.
        match paths
            .iter_mut()
            .find(|(p, _)| route_shape(p) == route_shape(&path))
        {
            Some((_, routes)) => routes.push(route),
            None => paths.push((path, vec![route])),
        }
    }
    let mut router = Router::new();
    for (path, routes) in paths {
        let mut allow: Vec<&Method> = routes.iter().flat_map(|r| &r.endpoint.methods).collect();
        if allow.contains(&&Method::GET) && !allow.contains(&&Method::HEAD) {
            allow.push(&Method::HEAD);
        }
        let allow = allow
            .iter()
            .map(|m| m.as_str())
            .collect::<Vec<_>>()
            .join(", ");
        let served = Arc::new(Path {
            allow: HeaderValue::from_str(&allow).unwrap_or(HeaderValue::from_static("POST")),
            routes,
        });
        router = router.route(
            &path,
            any(move |request: Request<Body>| handle(served.clone(), request)),
        );
    }
    // Stated here, once: a request does not box the handlers again.
    router
        .fallback(|| async {
            Problem::new(
                StatusCode::NOT_FOUND,
                "not-found",
                "No flow listens on this path",
            )
            .into_response()
        })
        .with_state(())
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
    let router = crate::server::Routes::Swappable(table.router.clone());
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

async fn handle<P: Processor, O: Output>(
    path: Arc<Path<P, O>>,
    request: Request<Body>,
) -> Response {
    let Some(route) = path.route(request.method()) else {
        let mut response = Problem::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "method-not-allowed",
            "This method is not allowed here",
        )
        .detail(format!("method {} is not allowed here", request.method()))
        .into_response();
        response
            .headers_mut()
            .insert(header::ALLOW, path.allow.clone());
        return response;
    };
    let mut signature = None;
    let response = answer(route, request, &mut signature).await;
    // A signature counts as used once its request was accepted: a sender retrying after a
    // failure (GitHub and Shopify resend the same signature) is not taken for a replay.
    if let Some(signature) = signature
        && response.status().is_success()
    {
        signature.accept(response.status());
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
    // What only some endpoints wait for (a key lookup, a store) is awaited in a box: inline,
    // those futures would size every request's, which is copied whole into its box.
    let claims = match &endpoint.auth {
        Some(auth) => {
            match Box::pin(auth.check_head(request.headers(), request.uri().query())).await {
                Ok(claims) => claims,
                Err(refused) => return unauthorized(&route, auth, refused),
            }
        }
        None => None,
    };
    let too_large = || {
        Problem::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload-too-large",
            "The body is larger than this endpoint accepts",
        )
        .detail(format!(
            "body is larger than max_body_size ({} bytes)",
            endpoint.max_body_size
        ))
        .into_response()
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
            "flow-paused",
            "The flow is paused; retry later",
        );
    }
    // Durable flows are bounded by their store queue (a place is reserved before the body is
    // read), direct flows by their concurrency; both by the requests in progress.
    let durable = route.flow.durable();
    let reservation = match durable.map(|queue| queue.reserve()) {
        Some(None) => {
            return retry_later(
                StatusCode::TOO_MANY_REQUESTS,
                "queue-full",
                "The flow's queue is full; retry later",
            );
        }
        Some(Some(reservation)) => Some(reservation),
        None => None,
    };
    let Some(admission) = route.flow.try_admit() else {
        return retry_later(
            StatusCode::SERVICE_UNAVAILABLE,
            "overloaded",
            "The flow is at its concurrency limit; retry later",
        );
    };
    let (mut parts, body) = request.into_parts();
    // A fixed path (every webhook) has nothing to read.
    let params = if endpoint.params.is_empty() {
        Vec::new()
    } else {
        match path_params(endpoint, &mut parts).await {
            Ok(params) => params,
            Err(refused) => return refused,
        }
    };
    let read = tokio::time::timeout(
        endpoint.read_timeout,
        Limited::new(body, endpoint.max_body_size).collect(),
    )
    .await;
    let bytes = match read {
        Err(_) => {
            return Problem::new(
                StatusCode::REQUEST_TIMEOUT,
                "body-timeout",
                "The body was not received within read_timeout",
            )
            .into_response();
        }
        Ok(Err(e))
            if e.downcast_ref::<http_body_util::LengthLimitError>()
                .is_some() =>
        {
            return too_large();
        }
        Ok(Err(e)) => {
            return Problem::new(
                StatusCode::BAD_REQUEST,
                "unreadable-body",
                "The body could not be read",
            )
            .detail(e.to_string())
            .into_response();
        }
        Ok(Ok(collected)) => collected.to_bytes(),
    };
    // A signature is over the body as it was sent; what it says is read unpacked.
    // Several header lines are one list (RFC 9110 §5.3).
    let encoding: Vec<&str> = parts
        .headers
        .get_all(header::CONTENT_ENCODING)
        .iter()
        .map(|v| v.to_str().unwrap_or("(not text)"))
        .collect();
    let encoding = (!encoding.is_empty()).then(|| encoding.join(", "));
    if let Some(auth) = &endpoint.auth {
        match auth.check_body(&parts.headers, parts.uri.query(), &bytes) {
            Ok(None) => {}
            Ok(Some(Verified::New(valid))) => *signature = Some(valid),
            // The sender's retry of what was accepted: its answer again, nothing delivered.
            Ok(Some(Verified::Accepted(status))) => {
                return idempotency::replay(status.as_u16(), None, b"");
            }
            Ok(Some(Verified::InFlight)) => {
                return idempotency::in_progress(idempotency::DELIVERY_IN_PROGRESS);
            }
            Err(refused) => return unauthorized(&route, auth, refused),
        }
    }
    let delivery = signature.as_ref().and_then(auth::Signature::delivery);
    let ticket = match (delivery, &endpoint.idempotency, route.flow.store()) {
        (Some((id, ttl)), _, Some(store)) => {
            match Box::pin(idempotency::begin_delivery(
                store,
                &route.flow.name,
                id,
                ttl,
            ))
            .await
            {
                Ok(Begin::First(ticket)) => Some(ticket),
                Ok(Begin::Answer(answer)) => return answer,
                Ok(Begin::Unkeyed) => None,
                Err(e) => {
                    tracing::error!(error = %e, "delivery id lookup failed; the caller was answered 503");
                    return store_unavailable();
                }
            }
        }
        (_, Some(idempotency), Some(store)) => {
            match Box::pin(idempotency.begin(store, &route.flow.name, &parts, &bytes)).await {
                Ok(Begin::Unkeyed) => None,
                Ok(Begin::First(ticket)) => Some(ticket),
                Ok(Begin::Answer(answer)) => return answer,
                Err(e @ idempotency::IdempotencyError::BadKey { .. }) => {
                    return Problem::new(
                        StatusCode::BAD_REQUEST,
                        "invalid-idempotency-key",
                        "The Idempotency-Key is not valid",
                    )
                    .detail(e.to_string())
                    .into_response();
                }
                Err(e) => {
                    tracing::error!(error = %e, "idempotency key lookup failed; the caller was answered 503");
                    return store_unavailable();
                }
            }
        }
        _ => None,
    };
    let bytes = match encoding {
        None => bytes,
        Some(encoding) => match body::unpack(&encoding, bytes, endpoint.max_body_size) {
            Ok(bytes) => bytes,
            Err(body::Unpacked::TooLarge(_)) => return too_large(),
            Err(e @ body::Unpacked::Unsupported(_)) => {
                let mut refused = Problem::new(
                    StatusCode::UNSUPPORTED_MEDIA_TYPE,
                    "unsupported-encoding",
                    "The body's Content-Encoding is not supported",
                )
                .detail(e.to_string())
                .into_response();
                refused.headers_mut().insert(
                    header::ACCEPT_ENCODING,
                    HeaderValue::from_static("gzip, deflate, br"),
                );
                return refused;
            }
            Err(e @ body::Unpacked::Corrupt(..)) => return invalid_body(e.to_string()),
        },
    };
    let content_type = parts
        .headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok());
    // A request without a body (a `GET`, a `DELETE`) is an empty message: what it asks is in
    // `%http`.
    let bodiless = bytes.is_empty()
        && matches!(
            parts.method,
            Method::GET | Method::HEAD | Method::DELETE | Method::OPTIONS
        );
    // A durable flow stores a JSON body as it was sent, checked but not parsed: it is parsed
    // when delivered, and parsing it here as well, then writing it out again, held intake
    // 13 % under its rate now (docs/performance.md).
    let as_sent = match durable {
        Some(queue) if !bodiless && queue.takes_json() => {
            let kind = body::kind(content_type);
            (body::reads_as_json(kind, &bytes)
                && !(endpoint.form_payload && kind == body::Kind::Form))
                .then(|| bytes.clone())
        }
        _ => None,
    };
    let decoded = if bodiless {
        Ok(empty_object())
    } else if let Some(json) = &as_sent {
        body::check_json(json).map(|()| Value::Null)
    } else {
        body::decode(content_type, bytes)
    };
    let decoded = match decoded {
        Ok(Value::Object(fields))
            if endpoint.form_payload
                && fields.len() == 1
                && matches!(body::kind(content_type), body::Kind::Form) =>
        {
            match fields.get("payload").and_then(Value::as_bytes) {
                Some(json) => body::decode(Some("application/json"), json.clone()),
                None => Ok(Value::Object(fields)),
            }
        }
        other => other,
    };
    let value = match decoded {
        Ok(v) => v,
        Err(message) => {
            route.flow.count_rejected(&message);
            let refused = invalid_body(message);
            return match ticket {
                Some(ticket) => Box::pin(ticket.finish(refused)).await,
                None => refused,
            };
        }
    };
    let mut message = Message::new(value);
    if route.flow.reads_metadata() {
        message.metadata = metadata(&parts, &params, endpoint.auth.as_deref(), claims);
    }
    message.traceparent = parts
        .headers
        .get(crate::core::trace::TRACEPARENT)
        .and_then(|v| v.to_str().ok())
        .filter(|tp| crate::core::trace::parse_traceparent(tp).is_some())
        .map(Into::into);
    if route.flow.store().is_none() {
        // Nothing to settle: a caller hanging up may cancel the delivery, which it never saw
        // acknowledged (at least once still holds).
        return respond(&route, message, as_sent, reservation, admission).await;
    }
    // In a task of its own: a caller that hangs up drops this handler, and must not cancel a
    // delivery half done, whose outcome still settles or gives back its keys.
    let handed = route.work.spawn({
        let route = route.clone();
        async move {
            let answer = respond(&route, message, as_sent, reservation, admission).await;
            match ticket {
                Some(ticket) => ticket.finish(answer).await,
                None => answer,
            }
        }
    });
    handed.await.unwrap_or_else(|e| {
        tracing::error!(error = %e, "a request's task failed");
        Problem::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "Internal error",
        )
        .into_response()
    })
}

/// The path's parameters, each under the name the endpoint's own path gives it.
async fn path_params(
    endpoint: &Endpoint,
    parts: &mut http::request::Parts,
) -> Result<Vec<(String, String)>, Response> {
    match axum::extract::RawPathParams::from_request_parts(parts, &()).await {
        Ok(params) => Ok(endpoint
            .params
            .iter()
            .zip(params.iter())
            .map(|(name, (_, value))| (name.clone(), value.to_string()))
            .collect()),
        Err(e) => Err(Problem::new(
            StatusCode::BAD_REQUEST,
            "invalid-path",
            "The path's parameters could not be read",
        )
        .detail(e.body_text())
        .into_response()),
    }
}

/// A body that does not parse (or unpack) as its headers say.
fn invalid_body(detail: String) -> Response {
    Problem::new(
        StatusCode::BAD_REQUEST,
        "invalid-body",
        "The body does not parse as its content type says",
    )
    .detail(detail)
    .into_response()
}

/// 401 with the short reason (basic auth and JWT also say how to authenticate), or 503 when
/// weft could not check.
fn unauthorized<P: Processor, O: Output>(
    route: &Route<P, O>,
    auth: &auth::Auth,
    refused: auth::Refused,
) -> Response {
    tracing::warn!(flow = %route.flow.name, reason = refused.reason, "request refused by auth");
    route.flow.count_refused(refused.reason);
    if refused.status != StatusCode::UNAUTHORIZED {
        return Problem::new(
            refused.status,
            "auth-unavailable",
            "The request's credentials cannot be checked now; retry later",
        )
        .detail(refused.reason)
        .retry_after(Duration::from_secs(1))
        .into_response();
    }
    let mut response = Problem::new(
        refused.status,
        "unauthorized",
        "The request did not prove who sent it",
    )
    .detail(refused.reason)
    .into_response();
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

fn retry_later(status: StatusCode, kind: &'static str, title: &'static str) -> Response {
    Problem::new(status, kind, title)
        .retry_after(Duration::from_secs(1))
        .into_response()
}

fn store_unavailable() -> Response {
    retry_later(
        StatusCode::SERVICE_UNAVAILABLE,
        "store-unavailable",
        "The store is unavailable; retry later",
    )
}

/// Hands the message to the flow and answers the caller: once it is stored (durable), or once
/// it is delivered (direct). A durable flow's message may come `as_sent`: its value is that
/// JSON, not parsed yet.
async fn respond<P: Processor, O: Output>(
    route: &Route<P, O>,
    message: Message,
    as_sent: Option<Bytes>,
    reservation: Option<Reservation>,
    admission: Admission,
) -> Response {
    let endpoint = &route.endpoint;
    let id = message.id.to_string();
    if let (Some(queue), Some(reservation)) = (route.flow.durable(), reservation) {
        let accepted = match &as_sent {
            Some(json) => queue.accept_json(reservation, &message, json).await,
            None => queue.accept(reservation, &message).await,
        };
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
            Err(e @ AcceptError::Store(weft_store::StoreError::TooLarge { .. })) => {
                route.flow.count_rejected(&e);
                Problem::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "payload-too-large",
                    "The message is larger than the cluster's queue takes",
                )
                .detail(e.to_string())
                .id(&id)
                .into_response()
            }
            Err(e @ AcceptError::OrderKey(_)) => {
                route.flow.count_rejected(&e);
                Problem::new(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "invalid-message",
                    "The message was refused by the flow",
                )
                .detail(e.to_string())
                .id(&id)
                .into_response()
            }
            Err(e) => {
                if e.is_outage() {
                    tracing::debug!(%id, error = %e, "could not store the message; the caller was answered 503");
                } else {
                    tracing::error!(%id, error = %e, "could not store the message; the caller was answered 503");
                }
                store_unavailable()
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
            reply(m, &id)
        }
        (Ok(Processed::Filtered), ResponseMode::Pipeline) => StatusCode::NO_CONTENT.into_response(),
        (Err(e), _) => failed(&e, &id, endpoint.errors == Errors::Detailed),
    }
}

/// The answer to a message that failed in the flow; the log line has the whole reason.
fn failed(e: &FlowError, id: &str, detailed: bool) -> Response {
    let (component, reason, fault) = match e {
        FlowError::Busy { store: true, .. } => return store_unavailable(),
        FlowError::Busy {
            component, reason, ..
        } => {
            let problem = Problem::new(
                StatusCode::CONFLICT,
                "in-progress",
                "A message with the same key is still being delivered; retry later",
            )
            .id(id)
            .retry_after(Duration::from_secs(1));
            let problem = if detailed {
                problem.detail(reason.as_str()).component(component)
            } else {
                problem
            };
            return problem.into_response();
        }
        FlowError::Processing {
            component,
            reason,
            fault,
            ..
        }
        | FlowError::Delivery {
            component,
            reason,
            fault,
            ..
        } => (component, reason, *fault),
    };
    let problem = Problem::failed(fault, reason, component, detailed).id(id);
    match fault {
        crate::core::Fault::Invalid => {
            tracing::warn!(%id, error = %e, "message failed in the pipeline; the caller was answered 422");
        }
        _ => tracing::error!(%id, error = %e, "message failed; the caller was answered 502 or 503"),
    }
    problem.into_response()
}

/// The pipeline's answer: `%response.status` and `%response.headers` as the flow set them, the
/// message as the body, encoded as its `Content-Type` says (XML, JSON; a string as it is).
fn reply(message: Message, id: &str) -> Response {
    let invalid = |why: String| {
        tracing::error!(%id, "the flow's %response is not an answer: {why}; the caller was answered 500");
        Problem::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "invalid-response",
            "The flow set an answer that cannot be sent",
        )
        .id(id)
        .into_response()
    };
    let set = match &message.metadata {
        Value::Object(meta) => meta.get("response"),
        _ => None,
    };
    let mut status = StatusCode::OK;
    let mut headers = http::HeaderMap::new();
    if let Some(set) = set {
        let Value::Object(set) = set else {
            return invalid("`%response` must be an object".into());
        };
        match set.get("status") {
            None | Some(Value::Null) => {}
            Some(Value::Integer(n)) => match u16::try_from(*n)
                .ok()
                .filter(|n| (200..=599).contains(n))
                .and_then(|n| StatusCode::from_u16(n).ok())
            {
                Some(s) => status = s,
                None => return invalid(format!("`%response.status` {n} is not 200 to 599")),
            },
            Some(other) => {
                return invalid(format!(
                    "`%response.status` must be an integer, not {}",
                    other.kind_str()
                ));
            }
        }
        match set.get("headers") {
            None | Some(Value::Null) => {}
            Some(Value::Object(set)) => {
                for (name, value) in set {
                    let Ok(name) = http::HeaderName::from_bytes(name.as_bytes()) else {
                        return invalid(format!("`{name}` is not a header name"));
                    };
                    // What the server itself frames the answer with is not the flow's to set.
                    if matches!(
                        name,
                        header::CONTENT_LENGTH | header::TRANSFER_ENCODING | header::CONNECTION
                    ) {
                        continue;
                    }
                    let values = match value {
                        Value::Array(items) => items.iter().collect(),
                        one => vec![one],
                    };
                    for value in values {
                        let text = match value {
                            Value::Bytes(b) => HeaderValue::from_maybe_shared(b.clone()),
                            Value::Integer(n) => Ok(HeaderValue::from(*n)),
                            other => HeaderValue::from_str(&crate::core::mapping::to_text(other)),
                        };
                        match text {
                            Ok(v) => {
                                headers.append(name.clone(), v);
                            }
                            Err(_) => {
                                return invalid(format!(
                                    "the value of header `{name}` is not valid in a header"
                                ));
                            }
                        }
                    }
                }
            }
            Some(_) => return invalid("`%response.headers` must be an object".into()),
        }
    }
    if status == StatusCode::NO_CONTENT || status == StatusCode::NOT_MODIFIED {
        let mut response = status.into_response();
        *response.headers_mut() = headers;
        return response;
    }
    let declared = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let body = match (&declared, message.is_json()) {
        (Some(declared), true) if body::kind(Some(declared)) == body::Kind::Xml => {
            match crate::core::xml::write(&message.value) {
                Ok(xml) => Bytes::from(xml),
                Err(e) => return invalid(format!("the message cannot be written as XML: {e}")),
            }
        }
        _ => message.body(),
    };
    if declared.is_none() {
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static(match &message.value {
                _ if message.is_json() => "application/json",
                Value::Bytes(b) if std::str::from_utf8(b).is_err() => "application/octet-stream",
                _ => "text/plain; charset=utf-8",
            }),
        );
    }
    let mut response = (status, body).into_response();
    response.headers_mut().extend(headers);
    response
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
    params: &[(String, String)],
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
        "params",
        Value::Object(
            params
                .iter()
                .map(|(k, v)| (k.as_str().into(), Value::from(v.as_str())))
                .collect(),
        ),
    );
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
            max_body_size: None,
            read_timeout: default_read_timeout(),
            response: ResponseMode::Ack,
            idempotency: None,
            auth: None,
            tls: None,
            limits: Limits::default(),
            errors: Errors::Brief,
        }
    }

    #[test]
    fn paths_the_router_would_reject_are_config_errors() {
        for good in [
            "/hooks/orders",
            "/customers/{id}",
            "/files/{*rest}",
            "/v{version}/items",
        ] {
            assert!(
                config(good)
                    .build(&Shared::default(), &Resources::default())
                    .is_ok(),
                "{good}"
            );
        }
        for bad in [
            "/hooks/:id",
            "/files/*rest",
            "hooks",
            "/files/{*rest}/more",
            "/{a}-{b}",
            "/x/{id",
        ] {
            assert!(
                config(bad)
                    .build(&Shared::default(), &Resources::default())
                    .is_err(),
                "{bad}"
            );
        }
    }

    #[test]
    fn overlapping_routes_are_found() {
        let (get, post) = ([Method::GET], [Method::POST]);
        let routes = [
            ("/items/{id}", &get[..], "read"),
            ("/items/{key}", &post[..], "write"),
            ("/items/new", &get[..], "form"),
            ("/items/{name}", &get[..], "again"),
            ("/items/{*rest}", &get[..], "files"),
        ];
        let found = route_conflicts(&routes);
        assert_eq!(found.len(), 2, "{found:?}");
        assert_eq!(found[0].0, 3);
        assert!(
            found[0]
                .1
                .contains("flow `read` already serves GET /items/{id}"),
            "{found:?}"
        );
        assert_eq!(route_shape("/a/{{x}}/{id}"), "/a/{{x}}/{}");
        assert_ne!(route_shape("/a/{{x}}"), route_shape("/a/{{y}}"));
        // A wildcard beside a parameter: the router cannot choose between them.
        assert_eq!(found[1].0, 4);
        assert!(found[1].1.contains("overlaps flow `read`"), "{found:?}");
    }
}
