//! The dashboard under `/ui/`: server-rendered HTML (MiniJinja templates compiled into the
//! binary, from `admin/ui/`), one small script that refreshes the live parts, no external
//! network. It reads the same data as the REST API ([`super::api`], [`super::rates`]).
//!
//! Browsers cannot put a bearer token on a navigation or an `EventSource`, so with
//! `admin.token` the login form trades the token for a session cookie (`HttpOnly`,
//! `SameSite=Strict`, `Secure` over TLS), which `/ui` and `/api/v1` accept beside the header.
//! Every page carries `Content-Security-Policy: default-src 'self'`: no inline script or style.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::State;
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use http::{HeaderMap, HeaderValue, StatusCode, header};
use serde::Serialize;

use super::Access;
use super::api::Flows;
use super::rates::Rates;

/// The cookie a logged-in browser carries.
pub const COOKIE: &str = "weft_session";
/// How long a session lasts.
const SESSION_LIFE: Duration = Duration::from_secs(12 * 3600);
/// Sessions kept at once; a new login past it ends the oldest.
const MAX_SESSIONS: usize = 256;
/// Seconds of rates a sparkline shows.
const SPARK_SECONDS: usize = 120;
/// Rows a page shows at most.
const PAGE_ROWS: u32 = 50;
/// The most of one message a page shows; the API has the rest.
const MESSAGE_SHOWN: usize = 64 * 1024;

/// The sessions of logged-in browsers, in memory: a restart logs everyone out.
#[derive(Clone, Default)]
pub struct Sessions {
    inner: Arc<Mutex<HashMap<String, Instant>>>,
}

impl Sessions {
    fn open(&self) -> String {
        let mut bytes = [0u8; 32];
        ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut bytes)
            .expect("the OS random source works");
        let id: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        let mut sessions = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        sessions.retain(|_, until| *until > now);
        if sessions.len() >= MAX_SESSIONS
            && let Some(oldest) = sessions
                .iter()
                .min_by_key(|(_, until)| **until)
                .map(|(id, _)| id.clone())
        {
            sessions.remove(&oldest);
        }
        sessions.insert(id.clone(), now + SESSION_LIFE);
        id
    }

    fn close(&self, id: &str) {
        self.inner
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(id);
    }

    /// Whether the request's cookie names a live session.
    pub fn admits(&self, headers: &HeaderMap) -> bool {
        let Some(id) = session_of(headers) else {
            return false;
        };
        let sessions = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        // Compared through the map's hashing, not byte by byte: the id is 256 random bits.
        sessions
            .get(id)
            .is_some_and(|until| *until > Instant::now())
    }
}

/// The session id a request's `Cookie` header carries.
fn session_of(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == COOKIE)
        .map(|(_, value)| value)
}

/// Paths anyone who reached the endpoint may load: the login form and the static assets.
pub fn is_public(path: &str) -> bool {
    path == "/ui/login" || path.starts_with("/ui/assets/")
}

/// Whether `path` is a page a browser navigates to (sent to the login form when not logged
/// in), rather than a fragment the page's script fetches (answered 401).
pub fn is_page(path: &str) -> bool {
    (path == "/ui" || path.starts_with("/ui/")) && !path.starts_with("/ui/fragments/")
}

/// What the pages read: the same as the API's.
#[derive(Clone)]
pub(super) struct Ui {
    pub flows: Flows,
    pub store: super::StoreCell,
    pub rates: Rates,
    pub sessions: Sessions,
    pub access: Access,
    pub metrics: metrics_exporter_prometheus::PrometheusHandle,
    pub config: Option<super::config::ConfigState>,
    pub jobs: super::jobs::Jobs,
    /// Parsed at the first page asked for: a weft nobody looks at keeps neither the parsed
    /// templates (some 140 KiB measured) nor the parser's pages resident.
    pub templates: Arc<std::sync::OnceLock<minijinja::Environment<'static>>>,
}

fn templates() -> minijinja::Environment<'static> {
    let mut env = minijinja::Environment::new();
    // Names ending in `.html` are escaped as HTML: a flow name or an error is text, never markup.
    for (name, source) in [
        ("base.html", include_str!("ui/base.html")),
        ("login.html", include_str!("ui/login.html")),
        ("overview.html", include_str!("ui/overview.html")),
        ("rows.html", include_str!("ui/rows.html")),
        ("reload.html", include_str!("ui/reload.html")),
        ("jobs.html", include_str!("ui/jobs.html")),
        ("dlq.html", include_str!("ui/dlq.html")),
        ("dead_letter.html", include_str!("ui/dead_letter.html")),
        ("tap.html", include_str!("ui/tap.html")),
        ("flow.html", include_str!("ui/flow.html")),
        ("config.html", include_str!("ui/config.html")),
        ("messages.html", include_str!("ui/messages.html")),
    ] {
        env.add_template(name, source)
            .expect("the dashboard's templates parse");
    }
    env
}

pub(super) fn routes(ui: Ui) -> Router {
    Router::new()
        .route("/ui", get(|| async { Redirect::permanent("/ui/") }))
        .route("/ui/", get(overview))
        .route("/ui/fragments/overview", get(overview_rows))
        .route("/ui/fragments/reload", get(reload_line))
        .route("/ui/fragments/jobs", get(jobs_list))
        .route("/ui/flows/{flow}", get(flow_page))
        .route("/ui/flows/{flow}/tap", get(tap_page))
        .route("/ui/config", get(config_page))
        .route("/ui/messages", get(messages_page))
        .route("/ui/dlq", get(dead_letters))
        .route("/ui/dlq/{flow}/{id}", get(dead_letter))
        .route("/ui/login", get(login_form).post(login))
        .route("/ui/logout", post(logout))
        .route(
            "/ui/assets/app.js",
            get(|| async { asset("text/javascript", include_str!("ui/app.js")) }),
        )
        .route(
            "/ui/assets/style.css",
            get(|| async { asset("text/css", include_str!("ui/style.css")) }),
        )
        .route(
            "/ui/assets/favicon.svg",
            get(|| async { asset("image/svg+xml", include_str!("ui/favicon.svg")) }),
        )
        .with_state(ui)
}

/// The headers every dashboard answer carries: no script, style or frame from anywhere else.
fn guarded(mut response: Response) -> Response {
    let headers = response.headers_mut();
    for (name, value) in [
        (
            header::CONTENT_SECURITY_POLICY,
            "default-src 'self'; frame-ancestors 'none'; form-action 'self'; base-uri 'none'",
        ),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::REFERRER_POLICY, "same-origin"),
        (header::CACHE_CONTROL, "no-store"),
    ] {
        headers.insert(name, HeaderValue::from_static(value));
    }
    response
}

fn no_such_flow() -> Response {
    guarded(
        (
            StatusCode::NOT_FOUND,
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            "no such flow",
        )
            .into_response(),
    )
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    guarded(([(header::CONTENT_TYPE, content_type)], body).into_response())
}

impl Ui {
    fn render(&self, status: StatusCode, name: &str, context: impl Serialize) -> Response {
        let html = self
            .templates
            .get_or_init(templates)
            .get_template(name)
            .and_then(|t| t.render(context));
        match html {
            Ok(html) => guarded(
                (
                    status,
                    [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
                    html,
                )
                    .into_response(),
            ),
            Err(e) => {
                tracing::error!(template = name, error = %e, "cannot render a dashboard page");
                guarded(
                    (
                        StatusCode::INTERNAL_SERVER_ERROR,
                        "the page could not be rendered; the log says why",
                    )
                        .into_response(),
                )
            }
        }
    }

    fn components(&self, flow: &crate::load::RunFlow) -> super::components::FlowComponents {
        super::components::of(flow, Some(&self.metrics))
    }

    fn flow(&self, name: &str) -> Option<Arc<crate::load::RunFlow>> {
        self.flows.read().expect("registry lock").get(name).cloned()
    }

    fn logged_in(&self, headers: &HeaderMap) -> bool {
        self.access.token.is_some() && self.sessions.admits(headers)
    }

    async fn rows(&self) -> Vec<Row> {
        let flows: Vec<_> = self
            .flows
            .read()
            .expect("registry lock")
            .values()
            .cloned()
            .collect();
        let mut rows = Vec::with_capacity(flows.len());
        for flow in flows {
            let counters = flow.counters();
            let rates = self.rates.of(&flow.name, SPARK_SECONDS);
            let queue = super::api::queue_info(&flow, &self.store).await;
            let dead_letters = queue.as_ref().map(|q| q.dead_letters);
            let queue = queue.map(|q| QueueCell {
                depth: q.depth,
                oldest: age(q.oldest_age_seconds as u64),
            });
            let per_second = |column: &dyn Fn(&super::rates::FlowRates) -> &Vec<u32>| {
                rates.as_ref().map_or(0.0, |r| recent_rate(column(r)))
            };
            rows.push(Row {
                name_q: segment(&flow.name),
                name: flow.name.to_string(),
                paused: flow.is_paused(),
                since: chrono::DateTime::<chrono::Utc>::from(flow.started_at)
                    .to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                delivery: flow.delivery(),
                received: counters.received,
                delivered: counters.delivered,
                failed: counters.failed,
                filtered: counters.filtered,
                in_flight: counters.in_flight,
                received_rate: per_second(&|r| &r.received),
                delivered_rate: per_second(&|r| &r.delivered),
                failed_rate: per_second(&|r| &r.failed),
                spark: rates.as_ref().map(Spark::of).unwrap_or_default(),
                queue,
                dead_letters,
                last_failure: flow.failures.recent(1).pop().map(|f| LastFailure {
                    short: short(&f.reason, 80),
                    at: f.at,
                    reason: f.reason,
                }),
            });
        }
        rows
    }
}

/// One flow's line in the overview.
#[derive(Serialize)]
struct Row {
    name: String,
    /// The name as a URL's path segment or query value.
    name_q: String,
    paused: bool,
    /// When it started (RFC 3339): at start-up, or at the reload that changed it.
    since: String,
    delivery: &'static str,
    received: u64,
    delivered: u64,
    failed: u64,
    filtered: u64,
    in_flight: u64,
    /// Per second, over the last ten seconds.
    received_rate: f64,
    delivered_rate: f64,
    failed_rate: f64,
    spark: Spark,
    queue: Option<QueueCell>,
    dead_letters: Option<u64>,
    last_failure: Option<LastFailure>,
}

#[derive(Serialize)]
struct LastFailure {
    at: String,
    reason: String,
    /// The reason cut for the table; the whole is its tooltip.
    short: String,
}

/// `text` cut to `max` characters, with an ellipsis when it was longer.
fn short(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text.to_string(),
    }
}

#[derive(Serialize)]
struct QueueCell {
    depth: u64,
    /// The oldest message's wait, e.g. `3m 20s`.
    oldest: String,
}

/// A sparkline: SVG polyline points of the received, delivered and failed rates over the last
/// [`SPARK_SECONDS`], on one scale, drawn in a box of [`Spark::WIDTH`] × [`Spark::HEIGHT`].
#[derive(Serialize, Default)]
struct Spark {
    received: String,
    delivered: String,
    failed: String,
    /// The scale's top, per second.
    peak: u32,
}

impl Spark {
    const WIDTH: f64 = 120.0;
    const HEIGHT: f64 = 24.0;

    fn of(rates: &super::rates::FlowRates) -> Spark {
        let peak = [&rates.received, &rates.delivered, &rates.failed]
            .iter()
            .flat_map(|c| c.iter())
            .copied()
            .max()
            .unwrap_or(0)
            .max(1);
        let line = |column: &[u32]| {
            // Right-aligned: the newest second at the right edge, whatever the history's length.
            let offset = SPARK_SECONDS.saturating_sub(column.len());
            let step = Spark::WIDTH / (SPARK_SECONDS - 1) as f64;
            column
                .iter()
                .enumerate()
                .map(|(i, v)| {
                    let x = (offset + i) as f64 * step;
                    // Half a pixel in from the edges, so a flat line stays visible.
                    let y = 0.5 + (Spark::HEIGHT - 1.0) * (1.0 - f64::from(*v) / f64::from(peak));
                    format!("{x:.1},{y:.1}")
                })
                .collect::<Vec<_>>()
                .join(" ")
        };
        Spark {
            received: line(&rates.received),
            delivered: line(&rates.delivered),
            // Drawn last, so on top: only when there is something to show, or an idle flow's
            // baseline would be red.
            failed: if rates.failed.iter().any(|n| *n > 0) {
                line(&rates.failed)
            } else {
                String::new()
            },
            peak,
        }
    }
}

/// The mean of the last ten seconds.
fn recent_rate(column: &[u32]) -> f64 {
    let last = &column[column.len().saturating_sub(10)..];
    if last.is_empty() {
        return 0.0;
    }
    let mean = last.iter().map(|v| f64::from(*v)).sum::<f64>() / last.len() as f64;
    (mean * 10.0).round() / 10.0
}

fn age(seconds: u64) -> String {
    match seconds {
        0..60 => format!("{seconds}s"),
        60..3600 => format!("{}m {}s", seconds / 60, seconds % 60),
        _ => format!("{}h {}m", seconds / 3600, seconds % 3600 / 60),
    }
}

async fn overview(State(ui): State<Ui>, headers: HeaderMap) -> Response {
    let rows = ui.rows().await;
    ui.render(
        StatusCode::OK,
        "overview.html",
        minijinja::context! {
            title => "Flows",
            version => env!("CARGO_PKG_VERSION"),
            logged_in => ui.logged_in(&headers),
            actions => ui.access.ui_actions,
            rows => rows,
            config => ui.config.as_ref().map(super::config::ConfigState::status),
        },
    )
}

impl Ui {
    /// The bulk jobs the dead-letter page shows: the last few.
    fn recent_jobs(&self) -> Vec<super::jobs::JobView> {
        let mut jobs = self.jobs.list();
        jobs.truncate(5);
        jobs
    }
}

/// The dead-letter page's bulk jobs, for the page's refresh.
async fn jobs_list(State(ui): State<Ui>) -> Response {
    ui.render(
        StatusCode::OK,
        "jobs.html",
        minijinja::context! { jobs => ui.recent_jobs(), actions => ui.access.ui_actions },
    )
}

/// The overview's line on the last reload, for the page's refresh.
async fn reload_line(State(ui): State<Ui>) -> Response {
    ui.render(
        StatusCode::OK,
        "reload.html",
        minijinja::context! { config => ui.config.as_ref().map(super::config::ConfigState::status) },
    )
}

/// The overview's table body alone, for the page's refresh.
async fn overview_rows(State(ui): State<Ui>) -> Response {
    let rows = ui.rows().await;
    ui.render(
        StatusCode::OK,
        "rows.html",
        minijinja::context! { rows => rows, actions => ui.access.ui_actions },
    )
}

async fn login_form(State(ui): State<Ui>, headers: HeaderMap) -> Response {
    if ui.access.token.is_none() || ui.sessions.admits(&headers) {
        return guarded(Redirect::to("/ui/").into_response());
    }
    ui.login_page(StatusCode::OK, None)
}

impl Ui {
    fn login_page(&self, status: StatusCode, error: Option<&str>) -> Response {
        self.render(
            status,
            "login.html",
            minijinja::context! {
                title => "Log in",
                version => env!("CARGO_PKG_VERSION"),
                logged_in => false,
                error => error,
            },
        )
    }
}

async fn login(State(ui): State<Ui>, body: axum::body::Bytes) -> Response {
    let Some(token) = &ui.access.token else {
        return guarded(Redirect::to("/ui/").into_response());
    };
    let given = form_urlencoded::parse(&body)
        .find(|(name, _)| name == "token")
        .map(|(_, value)| value.into_owned())
        .unwrap_or_default();
    if !token.matches(given.trim().as_bytes()) {
        // Slows a guesser down; the token is the admin API's whole protection.
        tokio::time::sleep(Duration::from_millis(300)).await;
        return ui.login_page(
            StatusCode::UNAUTHORIZED,
            Some("That is not the admin token."),
        );
    }
    let id = ui.sessions.open();
    let secure = if ui.access.tls { "; Secure" } else { "" };
    let cookie = format!(
        "{COOKIE}={id}; HttpOnly; SameSite=Strict; Path=/; Max-Age={}{secure}",
        SESSION_LIFE.as_secs()
    );
    let mut response = Redirect::to("/ui/").into_response();
    if let Ok(value) = HeaderValue::from_str(&cookie) {
        response.headers_mut().insert(header::SET_COOKIE, value);
    }
    guarded(response)
}

async fn logout(State(ui): State<Ui>, headers: HeaderMap) -> Response {
    if let Some(id) = session_of(&headers) {
        ui.sessions.close(id);
    }
    let mut response = Redirect::to("/ui/login").into_response();
    response.headers_mut().insert(
        header::SET_COOKIE,
        HeaderValue::from_static("weft_session=; HttpOnly; SameSite=Strict; Path=/; Max-Age=0"),
    );
    guarded(response)
}

/// The dead-letter list's filter, as the page's form sends it (empty fields match all).
#[derive(Debug, Default, serde::Deserialize, Serialize)]
struct DlqQuery {
    #[serde(default)]
    flow: String,
    #[serde(default)]
    reason: String,
    #[serde(default)]
    status: String,
    /// Failed since: an RFC 3339 time or a duration ago (`1h`), as the API takes it.
    #[serde(default)]
    since: String,
    #[serde(default, skip_serializing)]
    after: String,
}

impl DlqQuery {
    fn filter(&self) -> Result<weft_store::DlqFilter, String> {
        let given = |s: &str| (!s.trim().is_empty()).then(|| s.trim().to_string());
        let status = match given(&self.status) {
            Some(s) => Some(
                s.parse::<u16>()
                    .ok()
                    .filter(|s| (100..=599).contains(s))
                    .ok_or_else(|| format!("`{s}` is not an HTTP status (100 to 599)"))?,
            ),
            None => None,
        };
        let since_ms = match given(&self.since) {
            Some(since) => Some(super::dlq::parse_since(&since)?),
            None => None,
        };
        Ok(weft_store::DlqFilter {
            flow: given(&self.flow),
            reason: given(&self.reason),
            status,
            since_ms,
            after: given(&self.after),
            ..Default::default()
        })
    }

    /// The filter as a query string (without the page's cursor), for links and the API.
    fn query(&self, extra: &[(&str, &str)]) -> String {
        let mut query = form_urlencoded::Serializer::new(String::new());
        for (name, value) in [
            ("flow", &self.flow),
            ("reason", &self.reason),
            ("status", &self.status),
            ("since", &self.since),
        ] {
            if !value.trim().is_empty() {
                query.append_pair(name, value.trim());
            }
        }
        query.extend_pairs(extra);
        query.finish()
    }
}

/// One dead letter's line in the list.
#[derive(Serialize)]
struct DeadRow {
    id: String,
    flow: String,
    href: String,
    failed_at: String,
    attempts: u32,
    status: Option<u16>,
    reason: String,
    reason_short: String,
}

/// `text` as one segment of a URL's path or a query's value.
fn segment(text: &str) -> String {
    form_urlencoded::byte_serialize(text.as_bytes()).collect()
}

async fn dead_letters(
    State(ui): State<Ui>,
    headers: HeaderMap,
    axum::extract::Query(query): axum::extract::Query<DlqQuery>,
) -> Response {
    let mut flows: Vec<String> = ui
        .flows
        .read()
        .expect("registry lock")
        .values()
        .filter(|f| f.durable().is_some())
        .map(|f| f.name.to_string())
        .collect();
    flows.sort();
    let (mut rows, mut count, mut next, mut error) = (Vec::new(), 0, None, None);
    match (query.filter(), ui.store.get()) {
        (Err(e), _) => error = Some(e),
        (Ok(_), None) => {}
        (Ok(filter), Some(store)) => {
            let all = weft_store::DlqFilter {
                after: None,
                ..filter.clone()
            };
            let listed = store.dead_letters(&filter, PAGE_ROWS + 1).await;
            match (store.count_dead_letters(&all).await, listed) {
                (Ok(n), Ok(mut dead)) => {
                    count = n;
                    if dead.len() > PAGE_ROWS as usize {
                        dead.truncate(PAGE_ROWS as usize);
                        let last = dead.last().map_or("", |d| d.id.as_str());
                        next = Some(query.query(&[("after", last)]));
                    }
                    rows = dead
                        .iter()
                        .map(|d| DeadRow {
                            href: format!("/ui/dlq/{}/{}", segment(&d.flow), segment(&d.id)),
                            id: d.id.clone(),
                            flow: d.flow.clone(),
                            failed_at: super::dlq::DeadLetterView::of(d, false).failed_at,
                            attempts: d.attempts,
                            status: d.failure.last_status,
                            reason_short: short(&d.failure.reason, 100),
                            reason: d.failure.reason.clone(),
                        })
                        .collect();
                }
                (Err(e), _) | (_, Err(e)) => error = Some(format!("the store cannot answer: {e}")),
            }
        }
    }
    ui.render(
        if error.is_some() {
            StatusCode::BAD_REQUEST
        } else {
            StatusCode::OK
        },
        "dlq.html",
        minijinja::context! {
            title => "Dead letters",
            version => env!("CARGO_PKG_VERSION"),
            logged_in => ui.logged_in(&headers),
            actions => ui.access.ui_actions,
            flows => flows,
            filter => &query,
            error => error,
            count => count,
            rows => rows,
            next => next,
            query_bg => query.query(&[("background", "true")]),
            query_dry => query.query(&[("dry_run", "true")]),
            jobs => ui.recent_jobs(),
        },
    )
}

async fn dead_letter(
    State(ui): State<Ui>,
    headers: HeaderMap,
    axum::extract::Path((flow, id)): axum::extract::Path<(String, String)>,
) -> Response {
    let back = format!("/ui/dlq?flow={}", segment(&flow));
    let filter = weft_store::DlqFilter {
        flow: Some(flow.clone()),
        id: Some(id.clone()),
        ..Default::default()
    };
    let found = match ui.store.get() {
        Some(store) => store.dead_letters(&filter, 1).await.map(|mut d| d.pop()),
        None => Ok(None),
    };
    let (status, problem) = match &found {
        Ok(Some(_)) => (StatusCode::OK, None),
        Ok(None) => (
            StatusCode::NOT_FOUND,
            Some(
                "There is no such dead letter: replayed or purged since, or never there."
                    .to_string(),
            ),
        ),
        Err(e) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Some(format!("The store cannot answer: {e}")),
        ),
    };
    let Ok(Some(dead)) = found else {
        return ui.render(
            status,
            "dead_letter.html",
            minijinja::context! {
                title => "Dead letter",
                version => env!("CARGO_PKG_VERSION"),
                logged_in => ui.logged_in(&headers),
                problem => problem,
                back => back,
            },
        );
    };
    let view = super::dlq::DeadLetterView::of(&dead, true);
    let pretty = |v: &serde_json::Value| serde_json::to_string_pretty(v).unwrap_or_default();
    let mut message = pretty(&view.message);
    let size = message.len();
    let truncated = size > MESSAGE_SHOWN;
    if truncated {
        let mut cut = MESSAGE_SHOWN;
        while !message.is_char_boundary(cut) {
            cut -= 1;
        }
        message.truncate(cut);
    }
    let api = format!("/api/v1/flows/{}/dlq/{}", segment(&flow), segment(&id));
    ui.render(
        StatusCode::OK,
        "dead_letter.html",
        minijinja::context! {
            title => format!("Dead letter {id}"),
            version => env!("CARGO_PKG_VERSION"),
            logged_in => ui.logged_in(&headers),
            actions => ui.access.ui_actions,
            back => back,
            raw_url => &api,
            replay_url => format!("{api}/replay"),
            purge_url => format!("/api/v1/flows/{}/dlq/purge?id={}", segment(&flow), segment(&id)),
            message => message,
            truncated => truncated,
            size_kib => size.div_ceil(1024),
            metadata => view.metadata.as_ref().map(pretty),
            history => view.history.clone(),
            d => view,
        },
    )
}

async fn tap_page(
    State(ui): State<Ui>,
    headers: HeaderMap,
    axum::extract::Path(name): axum::extract::Path<String>,
) -> Response {
    let Some(flow) = ui.flow(&name) else {
        return no_such_flow();
    };
    ui.render(
        StatusCode::OK,
        "tap.html",
        minijinja::context! {
            title => format!("Tap: {name}"),
            version => env!("CARGO_PKG_VERSION"),
            logged_in => ui.logged_in(&headers),
            flow => &name,
            flow_q => segment(&name),
            stages => flow.stages(),
        },
    )
}

/// The flow page's drawing: the input, each step and the outputs left to right along the top,
/// the outputs stacked in the last column. What sits inside a step (a `switch` case's steps, a
/// `try`'s) or an output (a `fallback`'s outputs) hangs below it, indented, one labelled lane
/// per case, its boxes top to bottom in the order messages pass them.
#[derive(Serialize, Default)]
struct Graph {
    width: u32,
    height: u32,
    box_height: u32,
    boxes: Vec<GraphBox>,
    /// The lanes' labels (`case 0: .kind == "refund"`).
    labels: Vec<GraphLabel>,
    /// SVG path data, one per arrow.
    edges: Vec<String>,
}

#[derive(Serialize)]
struct GraphBox {
    id: String,
    role: &'static str,
    /// The id, cut to fit.
    label: String,
    counts: String,
    /// `p50 ≤ 2 ms · p99 ≤ 8 ms`, when it was timed.
    latency: Option<String>,
    /// It failed messages.
    bad: bool,
    x: u32,
    y: u32,
    w: u32,
}

#[derive(Serialize)]
struct GraphLabel {
    x: u32,
    y: u32,
    text: String,
    full: String,
}

impl Graph {
    const BOX_WIDTH: u32 = 220;
    const BOX_HEIGHT: u32 = 70;
    const GAP_X: u32 = 40;
    const GAP_Y: u32 = 14;
    const LABEL_HEIGHT: u32 = 22;
    const INDENT: u32 = 18;
    const PAD: u32 = 4;

    fn of(components: &super::components::FlowComponents) -> Graph {
        let all = &components.components;
        let top = |role: &str| {
            all.iter()
                .filter(move |c| c.role == role && c.parent.is_none())
                .collect::<Vec<_>>()
        };
        let line: Vec<_> = top("input").into_iter().chain(top("step")).collect();
        let outputs = top("output");
        let column = |i: usize| Self::PAD + i as u32 * (Self::BOX_WIDTH + Self::GAP_X);
        let mut graph = Graph {
            box_height: Self::BOX_HEIGHT,
            ..Graph::default()
        };
        let mut bottom = 0;
        for (i, c) in line.iter().enumerate() {
            let mut y = Self::PAD;
            graph.stack(all, c, column(i), 0, &mut y);
            bottom = bottom.max(y);
        }
        let half = Self::BOX_HEIGHT / 2;
        let arrow =
            |x1: u32, y1: u32| format!(" M{},{} L{x1},{y1} L{},{}", x1 - 6, y1 - 4, x1 - 6, y1 + 4);
        for i in 1..line.len() {
            let (x0, x1, y) = (column(i - 1) + Self::BOX_WIDTH, column(i), Self::PAD + half);
            graph
                .edges
                .push(format!("M{x0},{y} L{x1},{y}{}", arrow(x1, y)));
        }
        let last = line.len();
        let mut y = Self::PAD;
        for output in outputs {
            let y1 = y + half;
            graph.stack(all, output, column(last), 0, &mut y);
            if last > 0 {
                let (x0, x1, y0) = (
                    column(last - 1) + Self::BOX_WIDTH,
                    column(last),
                    Self::PAD + half,
                );
                let bend = x0 + Self::GAP_X / 2;
                graph.edges.push(format!(
                    "M{x0},{y0} C{bend},{y0} {bend},{y1} {x1},{y1}{}",
                    arrow(x1, y1)
                ));
            }
        }
        bottom = bottom.max(y);
        graph.width = column(last) + Self::BOX_WIDTH + Self::PAD;
        graph.height = bottom.saturating_sub(Self::GAP_Y) + Self::PAD;
        graph
    }

    /// Places `c` at (`x` indented by `depth`, `y`), then what sits inside it below, and moves
    /// `y` past it all.
    fn stack(
        &mut self,
        all: &[super::components::ComponentInfo],
        c: &super::components::ComponentInfo,
        x: u32,
        depth: u32,
        y: &mut u32,
    ) {
        let left = x + depth * Self::INDENT;
        self.boxes.push(GraphBox::of(
            c,
            left,
            *y,
            Self::BOX_WIDTH - depth * Self::INDENT,
        ));
        let mut below = *y + Self::BOX_HEIGHT;
        *y += Self::BOX_HEIGHT + Self::GAP_Y;
        let inside: Vec<_> = all
            .iter()
            .filter(|o| o.parent.as_deref() == Some(c.id.as_str()))
            .collect();
        let mut lanes: Vec<(&str, Vec<&super::components::ComponentInfo>)> = Vec::new();
        for o in inside {
            let branch = o.branch.as_deref().unwrap_or("");
            match lanes.last_mut() {
                Some((label, members)) if *label == branch => members.push(o),
                _ => lanes.push((branch, vec![o])),
            }
        }
        let rail = left + Self::INDENT / 2;
        for (label, members) in lanes {
            let inner = left + Self::INDENT;
            let text_y = *y + 14;
            self.labels.push(GraphLabel {
                x: inner,
                y: text_y,
                text: short(label, 34),
                full: label.to_string(),
            });
            self.edges.push(format!(
                "M{rail},{below} L{rail},{} L{},{}",
                text_y - 4,
                inner - 3,
                text_y - 4
            ));
            *y += Self::LABEL_HEIGHT;
            below = text_y - 4;
            for (i, m) in members.iter().enumerate() {
                let top = *y;
                if i > 0 && c.role == "step" {
                    // Messages pass a lane's steps in turn: an arrow into each after the first.
                    let ax = inner + 12;
                    self.edges.push(format!(
                        "M{ax},{} L{ax},{top} M{},{} L{ax},{top} L{},{}",
                        top - Self::GAP_Y.min(top),
                        ax - 4,
                        top - 6,
                        ax + 4,
                        top - 6
                    ));
                }
                self.stack(all, m, x, depth + 1, y);
            }
        }
    }
}

impl GraphBox {
    fn of(c: &super::components::ComponentInfo, x: u32, y: u32, w: u32) -> GraphBox {
        let share = |failed: u64, of: u64| {
            if failed > 0 && of > 0 {
                format!(" ({:.0} %)", 100.0 * failed as f64 / of as f64)
            } else {
                String::new()
            }
        };
        let counts = match c.role {
            "input" => format!(
                "received {} · unreadable {}",
                c.received.unwrap_or(0),
                c.failed.unwrap_or(0)
            ),
            "output" if c.sent.is_none() => "counted with the output above".to_string(),
            "output" => {
                let (sent, failed) = (c.sent.unwrap_or(0), c.failed.unwrap_or(0));
                format!(
                    "sent {sent} · failed {failed}{} · retried {}",
                    share(failed, sent + failed),
                    c.retried.unwrap_or(0)
                )
            }
            _ => {
                let (entered, failed) = (c.received.unwrap_or(0), c.failed.unwrap_or(0));
                let mut text = format!(
                    "in {entered} · out {} · failed {failed}{}",
                    c.sent.unwrap_or(0),
                    share(failed, entered)
                );
                match (c.dropped.unwrap_or(0), c.grouped.unwrap_or(0)) {
                    (0, 0) => {}
                    (dropped, 0) => text.push_str(&format!(" · dropped {dropped}")),
                    (_, grouped) => text.push_str(&format!(" · grouped {grouped}")),
                }
                text
            }
        };
        // The id inside a parent repeats the parent's: the box says its own part.
        let own = match &c.parent {
            Some(parent) => c.id.strip_prefix(parent.as_str()).unwrap_or(&c.id),
            None => &c.id,
        };
        let own = own.trim_start_matches('.');
        let latency = c.latency.as_ref().map(|l| {
            format!(
                "p50 ≤ {} · p99 ≤ {} ({} timed)",
                milliseconds(l.p50_ms),
                milliseconds(l.p99_ms),
                l.count
            )
        });
        GraphBox {
            id: c.id.clone(),
            role: c.role,
            label: short(own, (w as usize).saturating_sub(20) / 8),
            counts,
            latency,
            bad: c.failed.unwrap_or(0) > 0,
            x,
            y,
            w,
        }
    }
}

fn milliseconds(ms: Option<f64>) -> String {
    match ms {
        Some(ms) if ms < 1.0 => format!("{:.1} ms", ms),
        Some(ms) if ms < 1000.0 => format!("{ms:.0} ms"),
        Some(ms) => format!("{:.1} s", ms / 1000.0),
        None => "—".into(),
    }
}

async fn flow_page(
    State(ui): State<Ui>,
    headers: HeaderMap,
    axum::extract::Path(name): axum::extract::Path<String>,
) -> Response {
    let Some(flow) = ui.flow(&name) else {
        return no_such_flow();
    };
    let components = ui.components(&flow);
    let dead_letters = super::api::queue_info(&flow, &ui.store)
        .await
        .map(|q| q.dead_letters);
    ui.render(
        StatusCode::OK,
        "flow.html",
        minijinja::context! {
            title => name.clone(),
            version => env!("CARGO_PKG_VERSION"),
            logged_in => ui.logged_in(&headers),
            actions => ui.access.ui_actions,
            name => &name,
            name_q => segment(&name),
            paused => flow.is_paused(),
            delivery => flow.delivery(),
            latency => minijinja::context! {
                count => components.latency.count,
                p50 => milliseconds(components.latency.p50_ms),
                p99 => milliseconds(components.latency.p99_ms),
            },
            dead_letters => dead_letters,
            graph => Graph::of(&components),
            failures => flow.failures.recent(20),
            config => flow.effective_config(),
        },
    )
}

async fn config_page(State(ui): State<Ui>, headers: HeaderMap) -> Response {
    let status = ui.config.as_ref().map(super::config::ConfigState::status);
    ui.render(
        StatusCode::OK,
        "config.html",
        minijinja::context! {
            title => "Config",
            version => env!("CARGO_PKG_VERSION"),
            logged_in => ui.logged_in(&headers),
            actions => ui.access.ui_actions,
            status => status,
        },
    )
}

#[derive(serde::Deserialize)]
struct MessageQuery {
    #[serde(default)]
    id: String,
}

async fn messages_page(
    State(ui): State<Ui>,
    headers: HeaderMap,
    axum::extract::Query(query): axum::extract::Query<MessageQuery>,
) -> Response {
    let id = query.id.trim().to_string();
    let (found, error) = if id.is_empty() {
        (Vec::new(), None)
    } else {
        match super::api::locate(&ui.flows, &ui.store, &id).await {
            Ok(found) => (found, None),
            Err(_) => (Vec::new(), Some("the store cannot answer now")),
        }
    };
    let links: Vec<Option<String>> = found
        .iter()
        .map(|f| match (f.place, &f.message_id) {
            ("dead_letter", Some(message)) => {
                Some(format!("/ui/dlq/{}/{}", segment(&f.flow), segment(message)))
            }
            ("idempotency_key", Some(message)) => {
                Some(format!("/ui/messages?id={}", segment(message)))
            }
            _ => None,
        })
        .collect();
    ui.render(
        StatusCode::OK,
        "messages.html",
        minijinja::context! {
            title => "Find a message",
            version => env!("CARGO_PKG_VERSION"),
            logged_in => ui.logged_in(&headers),
            id => &id,
            found => found,
            links => links,
            history => ui.flows.read().expect("registry lock").values().any(|f| f.keeps_delivered()),
            error => error,
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_session_is_admitted_until_closed_and_only_by_its_cookie() {
        let sessions = Sessions::default();
        let id = sessions.open();
        assert_eq!(id.len(), 64);
        let cookie = |v: &str| {
            let mut h = HeaderMap::new();
            h.insert(header::COOKIE, HeaderValue::from_str(v).unwrap());
            h
        };
        assert!(sessions.admits(&cookie(&format!("a=b; {COOKIE}={id}"))));
        assert!(!sessions.admits(&cookie(&format!("{COOKIE}={id}x"))));
        assert!(!sessions.admits(&cookie(&format!("other={id}"))));
        sessions.close(&id);
        assert!(!sessions.admits(&cookie(&format!("{COOKIE}={id}"))));
    }

    #[test]
    fn the_oldest_session_makes_room_for_a_new_one() {
        let sessions = Sessions::default();
        let first = sessions.open();
        for _ in 1..MAX_SESSIONS {
            sessions.open();
        }
        sessions.open();
        let kept = sessions.inner.lock().unwrap();
        assert_eq!(kept.len(), MAX_SESSIONS);
        assert!(!kept.contains_key(&first));
    }

    #[test]
    fn every_page_renders_and_escapes_what_it_shows() {
        let env = templates();
        let row = Row {
            name_q: segment("<b>orders</b>"),
            name: "<b>orders</b>".into(),
            paused: false,
            since: "2026-12-05T08:00:00Z".into(),
            delivery: "durable",
            received: 3,
            delivered: 2,
            failed: 1,
            filtered: 0,
            in_flight: 0,
            received_rate: 0.3,
            delivered_rate: 0.2,
            failed_rate: 0.1,
            spark: Spark::default(),
            queue: Some(QueueCell {
                depth: 2,
                oldest: age(75),
            }),
            dead_letters: Some(1),
            last_failure: Some(LastFailure {
                at: "2026-12-05T08:10:21.032Z".into(),
                reason: "HTTP 500 <script>".into(),
                short: short("HTTP 500 <script>", 80),
            }),
        };
        let page = env
            .get_template("overview.html")
            .unwrap()
            .render(minijinja::context! { title => "Flows", version => "0", logged_in => true, rows => vec![row] })
            .unwrap();
        assert!(page.contains("&lt;b&gt;orders&lt;&#x2f;b&gt;"), "{page}");
        assert!(!page.contains("<script>"), "{page}");
        assert!(page.contains("oldest 1m 15s"), "{page}");
        assert!(page.contains(">08:10:21</time>"), "{page}");
        assert!(page.contains("Log out"), "{page}");
        let login = env
            .get_template("login.html")
            .unwrap()
            .render(minijinja::context! { title => "Log in", version => "0", logged_in => false, error => "no" })
            .unwrap();
        assert!(login.contains(r#"name="token""#), "{login}");
        assert_eq!(short("abcdef", 3), "abc…");
    }

    #[test]
    fn a_sparkline_puts_the_newest_second_at_the_right_edge_on_one_scale() {
        let rates = super::super::rates::FlowRates {
            interval_seconds: 1,
            received: vec![0, 4],
            delivered: vec![0, 2],
            failed: vec![0, 0],
        };
        let spark = Spark::of(&rates);
        assert_eq!(spark.failed, "", "no failures, no red line");
        assert_eq!(spark.peak, 4);
        assert_eq!(spark.received, "119.0,23.5 120.0,0.5");
        assert_eq!(spark.delivered, "119.0,23.5 120.0,12.0");
        assert_eq!(recent_rate(&[1, 2, 3]), 2.0);
        assert_eq!(age(200), "3m 20s");
    }
}
