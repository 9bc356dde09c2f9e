//! `http_poll`: calls an API on a schedule, follows its pages, and turns the records of every
//! page into messages — incrementally, when a `watermark` is set.
//!
//! Each poll starts from `url` (its `{{ VRL }}` parts see the current watermark as
//! `%watermark`), then follows the pages by one `pagination` mode:
//!
//! | mode | next page |
//! |---|---|
//! | `cursor: { from: <VRL>, param: cursor }` | `param=<what the expression gives>` on the first URL |
//! | `page: { param: page, start: 1 }` | `param=start`, `start+1`, … |
//! | `offset: { param: offset, limit_param: limit, limit: 100 }` | `offset=0`, `100`, … (and `limit=100`) |
//! | `link_header: true` | the `Link: <…>; rel="next"` URL |
//! | `next_url: <VRL>` | the URL the expression finds in the body |
//!
//! Paging ends when there is no next cursor or URL, when a page has no records (page and offset
//! modes), when the `stop` condition (VRL over the body) is true, or after `max_pages`.
//! `records` is a VRL expression over the body giving the page's array of records (default: the
//! body when it is an array, else the body as one record).
//!
//! **GraphQL**: with `graphql: { query, variables }` each page is a POST of the query document;
//! `errors` in an answer fail the page, and Relay-style paging passes the cursor as a variable:
//! `pagination: { cursor: { from: .data.orders.pageInfo.endCursor, variable: after },
//! stop: '!bool!(.data.orders.pageInfo.hasNextPage)' }`.
//!
//! **Search APIs** that take their filter in a JSON body (HubSpot's CRM search, Elasticsearch):
//! `body` is a VRL expression giving that body (it sees `%watermark`), POSTed unless `method`
//! says PUT or PATCH; a cursor with `variable` goes into the body's top-level field of that
//! name (HubSpot: `after`):
//! `body: '{"filterGroups": [{"filters": [{"propertyName": "lastmodifieddate", "operator": "GT",
//! "value": %watermark}]}], "sorts": ["lastmodifieddate"], "limit": 100}'`,
//! `pagination: { cursor: { from: .paging.next.after, variable: after } }`.
//!
//! **Incremental sync**: with `watermark`, the greatest `value` (a VRL expression over each
//! record, e.g. its `updated_at`) seen is kept as a checkpoint in the store and offered to the
//! next poll's URL, `body` and GraphQL variables as `%watermark`. It is committed after each
//! page, and only once every message of the page was accepted (committed to the queue, or delivered in a direct flow): a crash
//! re-reads at most one page and never skips one. For that, the API must return records in
//! watermark order. Pages are JSON, XML or CSV (by their content type, see `core::body`).
//!
//! A page request that fails is tried again as `retry` says (429, 503 and other 5xx, 408, no
//! answer; a `Retry-After` is honoured), resuming at that page; one that fails for good ends
//! the poll without a checkpoint, and the next poll starts again from the last one. In a
//! direct flow a record whose delivery keeps failing is offered again as `redelivery` says,
//! then kept in the flow's dead-letter queue, and the sync moves on. A paused flow does not
//! poll.
//!
//! ```yaml
//! input:
//!   http_poll:
//!     url: "https://api.example.com/orders?updated_since={{ %watermark }}"
//!     interval: 1m                    # or cron: "*/5 * * * *"
//!     auth: shop                      # resources.auth.shop
//!     records: .orders
//!     pagination: { cursor: { from: .next_cursor, param: cursor } }
//!     watermark: { value: .updated_at, initial: "1970-01-01T00:00:00Z" }
//!     retry: { max_attempts: 8, max_elapsed: 10m }
//! ```

use std::time::Duration;

use http::{HeaderMap, Uri, header};
use serde::Deserialize;

use super::{AtShutdown, Feed, Redelivery};
use crate::clients::Resources;
use crate::clients::Shared;
use crate::clients::request::{
    Parts, RequestSpec, attempt_of, attempt_of_status, check_uri, cut_short, origin, with_query,
};
use crate::config::BuildError;
use crate::config::units::Dur;
use crate::core::mapping::{Mapping, empty_object, insert, to_text};
use crate::core::retry::{Decision, RetryPolicy};
use crate::core::schedule::Schedule;
use crate::core::{Message, Value, body};
use crate::core::{Output, Processor};

crate::clients::call::call_config! {
    #[derive(Debug, Deserialize, schemars::JsonSchema)]
    #[schemars(rename = "HttpPollInput")]
    #[serde(deny_unknown_fields)]
    pub struct Config {
        /// The first page's URL; may contain `{{ expression }}` parts (`%watermark`).
        pub url: String,
        /// Time between polls; the first is made at once. Default 1m when no `cron` is given.
        #[serde(default)]
        pub interval: Option<Dur>,
        /// A cron schedule instead of `interval`.
        #[serde(default)]
        pub cron: Option<String>,
        /// VRL over the body giving the page's records (an array).
        #[serde(default)]
        pub records: Option<String>,
        #[serde(default)]
        pub pagination: Option<PaginationConfig>,
        #[serde(default)]
        pub watermark: Option<WatermarkConfig>,
        /// Poll a GraphQL API: the query is POSTed; `errors` in an answer fail the page.
        #[serde(default)]
        pub graphql: Option<GraphqlPollConfig>,
        /// VRL giving a JSON body for each page's request (it sees `%watermark`), POSTed
        /// unless `method` says PUT or PATCH: a search API's filter.
        #[serde(default)]
        pub body: Option<String>,
        /// The most pages one poll follows.
        #[serde(default = "default_max_pages")]
        pub max_pages: u32,
        /// The largest page body read.
        #[serde(default = "default_max_body")]
        pub max_body_size: crate::config::units::Size,
        /// Direct flows: how often a record whose delivery fails is offered again before it is
        /// dead-lettered.
        #[serde(default)]
        pub redelivery: Redelivery,
        /// Where the watermark is kept in the store (default: the flow's name). Set it to keep the
        /// watermark when the flow is renamed (`weft checkpoint list` shows the keys in use).
        #[serde(default)]
        pub checkpoint_key: Option<String>,
    }
    with { method, auth, retry }
}

/// How one poll follows the pages of an answer: by cursor, page number, offset, the `Link`
/// header or a URL the body gives, up to `max_pages`.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PaginationConfig {
    /// The next page is asked for with a cursor the body gives.
    #[serde(default)]
    pub cursor: Option<CursorConfig>,
    /// The next page is asked for by its number.
    #[serde(default)]
    pub page: Option<PageConfig>,
    /// The next page is asked for by the offset of its first record.
    #[serde(default)]
    pub offset: Option<OffsetConfig>,
    /// The next page is the `rel="next"` URL of the answer's `Link` header (RFC 8288).
    #[serde(default)]
    pub link_header: bool,
    /// VRL over the body giving the next page's URL.
    #[serde(default)]
    pub next_url: Option<String>,
    /// VRL condition over the body: `true` ends the paging.
    #[serde(default)]
    pub stop: Option<String>,
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CursorConfig {
    /// VRL over the body giving the next cursor; null or empty ends the paging.
    pub from: String,
    /// The query parameter that carries it.
    #[serde(default = "default_cursor_param")]
    pub param: String,
    /// With `graphql`: the variable that carries it instead (Relay: `after`); with `body`: the
    /// body's top-level field that does (HubSpot: `after`).
    #[serde(default)]
    pub variable: Option<String>,
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct GraphqlPollConfig {
    /// The query document, sent as a POST with `{"query", "variables"}`.
    pub query: String,
    /// A VRL expression giving the variables object (it sees `%watermark`).
    #[serde(default)]
    pub variables: Option<String>,
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PageConfig {
    /// The query parameter that carries the page number.
    #[serde(default = "default_page_param")]
    pub param: String,
    /// The first page's number.
    #[serde(default = "default_page_start")]
    pub start: u64,
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct OffsetConfig {
    /// The query parameter that carries the offset.
    #[serde(default = "default_offset_param")]
    pub param: String,
    /// Page size.
    pub limit: u64,
    /// The query parameter for the page size, if the API wants one.
    #[serde(default)]
    pub limit_param: Option<String>,
}

/// Incremental sync: the highest value seen is kept (in the store, across restarts) and
/// offered to the next poll's URL, `body` and variables as `%watermark`, so each poll asks
/// only for what changed.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[schemars(rename = "HttpPollWatermark")]
#[serde(deny_unknown_fields)]
pub struct WatermarkConfig {
    /// VRL over each record giving its watermark value (a timestamp, a number or a string).
    pub value: String,
    /// The watermark before anything was read.
    #[serde(default)]
    pub initial: Option<serde_json::Value>,
}

fn default_method() -> String {
    "GET".into()
}
fn default_timeout() -> Dur {
    Dur(Duration::from_secs(30))
}
fn default_max_pages() -> u32 {
    1000
}
fn default_max_body() -> crate::config::units::Size {
    crate::config::units::Size(16 << 20)
}
fn default_cursor_param() -> String {
    "cursor".into()
}
fn default_page_param() -> String {
    "page".into()
}
fn default_page_start() -> u64 {
    1
}
fn default_offset_param() -> String {
    "offset".into()
}

enum Paging {
    None,
    Cursor {
        from: Mapping,
        param: String,
        /// Carried in this GraphQL variable instead of a query parameter.
        variable: Option<String>,
    },
    Page {
        param: String,
        start: u64,
    },
    Offset {
        param: String,
        limit: u64,
        limit_param: Option<String>,
    },
    LinkHeader,
    NextUrl(Mapping),
}

pub struct HttpPoll {
    spec: RequestSpec,
    /// The query document and the variables expression, when polling GraphQL.
    graphql: Option<(String, Option<Mapping>)>,
    /// The JSON body expression, when polling a search API.
    body: Option<Mapping>,
    schedule: Schedule,
    records: Option<Mapping>,
    paging: Paging,
    stop: Option<Mapping>,
    watermark: Option<(Mapping, Value)>,
    max_pages: u32,
    max_body: usize,
    retry: RetryPolicy,
    redelivery: Redelivery,
    checkpoint_key: Option<String>,
}

fn compile(field: &str, source: &str, errors: &mut Vec<BuildError>) -> Option<Mapping> {
    Mapping::compile(source)
        .map_err(|d| errors.extend(BuildError::from_diagnostics(field, d)))
        .ok()
}

impl super::Spec for Config {
    type Built = HttpPoll;

    fn build(self, shared: &Shared, resources: &Resources) -> Result<HttpPoll, Vec<BuildError>> {
        let client = &shared.http;
        let mut errors = Vec::new();
        let spec = RequestSpec::build(
            client,
            resources,
            Parts {
                url: &self.url,
                method: if self.graphql.is_some()
                    || (self.body.is_some()
                        && !["PUT", "PATCH"]
                            .iter()
                            .any(|m| self.method.eq_ignore_ascii_case(m)))
                {
                    "POST"
                } else {
                    &self.method
                },
                auth: self.auth.as_deref(),
                call: self.call(),
            },
        )
        .map_err(|e| errors.extend(e))
        .ok();
        let schedule = Schedule::from_config(
            self.interval.as_ref(),
            self.cron.as_deref(),
            Duration::from_secs(60),
        )
        .map_err(|e| errors.extend(e))
        .ok();
        let records = self
            .records
            .as_deref()
            .and_then(|r| compile("records", r, &mut errors));
        let mut paging = Paging::None;
        let mut stop = None;
        if let Some(p) = &self.pagination {
            let modes = [
                p.cursor.is_some(),
                p.page.is_some(),
                p.offset.is_some(),
                p.link_header,
                p.next_url.is_some(),
            ];
            if modes.iter().filter(|m| **m).count() > 1 {
                errors.push(BuildError::new(
                    "pagination",
                    "give one pagination mode: cursor, page, offset, link_header or next_url",
                ));
            }
            if let Some(c) = &p.cursor
                && let Some(from) = compile("pagination.cursor.from", &c.from, &mut errors)
            {
                if c.variable.is_some() && self.graphql.is_none() && self.body.is_none() {
                    errors.push(BuildError::new(
                        "pagination.cursor.variable",
                        "a cursor variable needs `graphql` or `body`; use `param` for a query parameter",
                    ));
                }
                paging = Paging::Cursor {
                    from,
                    param: c.param.clone(),
                    variable: c.variable.clone(),
                };
            } else if let Some(pg) = &p.page {
                paging = Paging::Page {
                    param: pg.param.clone(),
                    start: pg.start,
                };
            } else if let Some(o) = &p.offset {
                if o.limit == 0 {
                    errors.push(BuildError::new(
                        "pagination.offset.limit",
                        "limit must be above zero",
                    ));
                }
                paging = Paging::Offset {
                    param: o.param.clone(),
                    limit: o.limit,
                    limit_param: o.limit_param.clone(),
                };
            } else if p.link_header {
                paging = Paging::LinkHeader;
            } else if let Some(n) = &p.next_url
                && let Some(next) = compile("pagination.next_url", n, &mut errors)
            {
                paging = Paging::NextUrl(next);
            }
            stop = p
                .stop
                .as_deref()
                .and_then(|s| compile("pagination.stop", s, &mut errors));
        }
        let watermark = self.watermark.as_ref().and_then(|w| {
            let value = compile("watermark.value", &w.value, &mut errors)?;
            let initial = w
                .initial
                .as_ref()
                .and_then(|v| serde_json::from_value::<Value>(v.clone()).ok())
                .unwrap_or(Value::Null);
            Some((value, initial))
        });
        let graphql = self.graphql.as_ref().map(|g| {
            let variables = g
                .variables
                .as_deref()
                .and_then(|v| compile("graphql.variables", v, &mut errors));
            (g.query.clone(), variables)
        });
        if self.body.is_some()
            && !["GET", "POST", "PUT", "PATCH"]
                .iter()
                .any(|m| self.method.eq_ignore_ascii_case(m))
        {
            errors.push(BuildError::new(
                "method",
                "a `body` goes with POST (the default), PUT or PATCH",
            ));
        }
        if self.graphql.is_some() && self.body.is_some() {
            errors.push(BuildError::new(
                "body",
                "give `graphql` or `body`, not both: a GraphQL poll's body is its query",
            ));
        }
        let body = self
            .body
            .as_deref()
            .and_then(|b| compile("body", b, &mut errors));
        if self.max_pages == 0 {
            errors.push(BuildError::new("max_pages", "max_pages must be above zero"));
        }
        match (spec, schedule) {
            (Some(spec), Some(schedule)) if errors.is_empty() => Ok(HttpPoll {
                spec,
                graphql,
                body,
                schedule,
                records,
                paging,
                stop,
                watermark,
                max_pages: self.max_pages,
                max_body: self.max_body_size.0 as usize,
                retry: self.retry.policy(false),
                redelivery: self.redelivery,
                checkpoint_key: self.checkpoint_key,
            }),
            _ => Err(errors),
        }
    }
}

/// Whether `a` comes after `b` as a watermark: numbers by value, timestamps (or RFC 3339
/// strings, as a saved timestamp reloads) by time, anything else by its text.
fn later(a: &Value, b: &Value) -> bool {
    // CSV and XML pages give every value as text: a number in text compares as a number.
    fn number(v: &Value) -> Option<f64> {
        match v {
            Value::Integer(i) => Some(*i as f64),
            Value::Float(f) => Some(f.into_inner()),
            // Text of either kind VRL has (`Bytes`, or `String` from JSON and CSV).
            v => v.to_str()?.trim().parse().ok(),
        }
    }
    fn time(v: &Value) -> Option<chrono::DateTime<chrono::Utc>> {
        match v {
            Value::Timestamp(t) => Some(*t),
            v => chrono::DateTime::parse_from_rfc3339(v.to_str()?)
                .ok()
                .map(|t| t.with_timezone(&chrono::Utc)),
        }
    }
    match (a, b) {
        (Value::Null, _) => false,
        (_, Value::Null) => true,
        _ => match (number(a), number(b), time(a), time(b)) {
            (Some(x), Some(y), _, _) => x > y,
            (_, _, Some(x), Some(y)) => x > y,
            _ => to_text(a) > to_text(b),
        },
    }
}

fn next_link(headers: &HeaderMap) -> Option<String> {
    // `<https://…?page=2>; rel="next", <…>; rel="last"`
    for value in headers.get_all(header::LINK) {
        let Ok(text) = value.to_str() else { continue };
        for link in text.split(',') {
            let mut parts = link.split(';');
            let target = parts.next()?.trim();
            let is_next = parts.any(|p| {
                let p = p.trim().to_ascii_lowercase();
                p == "rel=\"next\"" || p == "rel=next"
            });
            if is_next {
                return target
                    .strip_prefix('<')
                    .and_then(|t| t.strip_suffix('>'))
                    .map(str::to_string);
            }
        }
    }
    None
}

impl HttpPoll {
    /// Where the watermark is kept, when there is one.
    pub fn checkpoint_key(&self, flow: &str) -> Option<String> {
        crate::core::checkpoint::key(
            self.watermark.is_some(),
            self.checkpoint_key.as_deref(),
            flow,
        )
    }

    /// One page request, tried again as `retry` says (honouring `Retry-After`); the answer
    /// once it is a 2xx with its whole body, or why it failed for good.
    #[allow(clippy::too_many_arguments)]
    async fn fetch_page(
        &self,
        feed: &Feed<impl Processor, impl Output>,
        uri: &Uri,
        shown: &str,
        metadata: &Value,
        request_body: bytes::Bytes,
        content_type: Option<&str>,
        same_origin: bool,
    ) -> Result<http::Response<bytes::Bytes>, String> {
        let method = &self.spec.method;
        let started = std::time::Instant::now();
        let mut attempts = 0;
        loop {
            attempts += 1;
            let answer = self
                .spec
                .exchange(
                    uri,
                    method,
                    &empty_object(),
                    metadata,
                    request_body.clone(),
                    content_type,
                    same_origin,
                    self.max_body,
                )
                .await;
            let attempt = match answer {
                Ok(response) if response.status().is_success() => {
                    match cut_short(&response, method, || shown.to_string()) {
                        Some(attempt) => attempt,
                        None => return Ok(response),
                    }
                }
                Ok(response) => attempt_of_status(&response, method, shown),
                Err(e) => attempt_of(e, method, shown),
            };
            match self
                .retry
                .decide(attempts, started.elapsed(), &attempt, fastrand::f64())
            {
                Decision::RetryIn(wait) => {
                    let error = match &attempt {
                        crate::core::Attempt::Retryable { reason, .. } => reason.as_str(),
                        _ => "",
                    };
                    tracing::warn!(flow = %feed.flow.name, component = "input.http_poll", attempt = attempts, ?wait, error, "page request failed; trying it again");
                    tokio::select! {
                        _ = feed.shutdown.cancelled() => return Err("weft is stopping".into()),
                        _ = tokio::time::sleep(wait) => {}
                    }
                }
                Decision::Fail(reason) | Decision::Drop(reason) => return Err(reason),
                Decision::Done => unreachable!("a failed page is never done"),
            }
        }
    }

    async fn load_watermark(
        &self,
        feed: &Feed<impl Processor, impl Output>,
    ) -> Result<Value, String> {
        match &self.watermark {
            None => Ok(Value::Null),
            Some((_, initial)) => Ok(feed.load_checkpoint().await?.unwrap_or(initial.clone())),
        }
    }

    /// One poll, as its schedule would make it.
    pub async fn poll_once(&self, feed: &Feed<impl Processor, impl Output>) -> Result<(), String> {
        self.poll(feed).await
    }

    /// One poll: every page from the first, until paging ends or a page fails.
    async fn poll(&self, feed: &Feed<impl Processor, impl Output>) -> Result<(), String> {
        let mut watermark = self.load_watermark(feed).await?;
        let mut metadata = empty_object();
        insert(&mut metadata, "watermark", watermark.clone());
        let first = self.spec.uri(&empty_object(), &metadata)?;
        let mut next: Option<(Uri, Option<String>)> = Some((
            match &self.paging {
                Paging::Page { param, start } => with_query(&first, param, &start.to_string())?,
                Paging::Offset {
                    param,
                    limit,
                    limit_param,
                } => {
                    let uri = with_query(&first, param, "0")?;
                    match limit_param {
                        Some(lp) => with_query(&uri, lp, &limit.to_string())?,
                        None => uri,
                    }
                }
                _ => first.clone(),
            },
            None,
        ));
        let mut page_number = 0u64;
        let mut seen = std::collections::HashSet::new();
        while let Some((uri, cursor)) = next.take() {
            let shown = self.spec.shown(&uri);
            if page_number >= u64::from(self.max_pages) {
                tracing::warn!(flow = %feed.flow.name, max_pages = self.max_pages, "max_pages reached; this poll stops here");
                break;
            }
            // A cursor or link that comes back would page forever.
            if !seen.insert((uri.to_string(), cursor.clone())) {
                return Err(format!(
                    "the API pointed back to a page already read ({shown})"
                ));
            }
            page_number += 1;
            // A cursor that travels in the body: a GraphQL variable, or a field of `body`.
            let carried = match (&self.paging, &cursor) {
                (
                    Paging::Cursor {
                        variable: Some(name),
                        ..
                    },
                    Some(c),
                ) => Some((name.as_str(), Value::from(c.as_str()))),
                _ => None,
            };
            let json = match (&self.graphql, &self.body) {
                (Some((query, variables)), _) => {
                    let mut vars = match variables {
                        Some(expr) => expr
                            .eval(&empty_object(), &metadata)
                            .map_err(|e| format!("graphql.variables: {e}"))?,
                        None => empty_object(),
                    };
                    if let Some((name, c)) = carried {
                        insert(&mut vars, name, c);
                    }
                    Some(serde_json::json!({ "query": query, "variables": vars }).to_string())
                }
                (None, Some(expr)) => {
                    let mut body = expr
                        .eval(&empty_object(), &metadata)
                        .map_err(|e| format!("body: {e}"))?;
                    if let Some((name, c)) = carried {
                        if !matches!(body, Value::Object(_)) {
                            return Err(format!(
                                "body: a cursor goes into the body's `{name}`, but the body is not an object"
                            ));
                        }
                        insert(&mut body, name, c);
                    }
                    Some(serde_json::to_string(&body).map_err(|e| format!("body: {e}"))?)
                }
                (None, None) => None,
            };
            let (request_body, content_type) = match json {
                Some(json) => (bytes::Bytes::from(json), Some("application/json")),
                None => (bytes::Bytes::new(), None),
            };
            // A paused flow reads no further page until it resumes.
            feed.flow.running().await;
            let response = self
                .fetch_page(
                    feed,
                    &uri,
                    &shown,
                    &metadata,
                    request_body,
                    content_type,
                    origin(&uri) == origin(&first),
                )
                .await?;
            let content_type = response
                .headers()
                .get(header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok());
            // Many APIs label JSON loosely (`text/plain`, `text/json`…): other types are read as
            // JSON before giving up.
            let body = match body::kind(content_type) {
                body::Kind::Text => body::decode(None, response.body().clone()).map_err(|e| {
                    format!(
                        "{shown}: the page is {} and not JSON ({e})",
                        content_type.unwrap_or("?")
                    )
                })?,
                _ => body::decode(content_type, response.body().clone())
                    .map_err(|e| format!("{shown}: {e}"))?,
            };
            if self.graphql.is_some()
                && let Value::Object(answer) = &body
                && let Some(Value::Array(errors)) = answer.get("errors")
                && !errors.is_empty()
            {
                let messages: Vec<String> = errors
                    .iter()
                    .map(|e| match e {
                        Value::Object(o) => o.get("message").map(to_text).unwrap_or_default(),
                        other => to_text(other),
                    })
                    .collect();
                return Err(format!("{shown}: GraphQL errors: {}", messages.join("; ")));
            }
            let records = match &self.records {
                Some(expr) => expr
                    .eval(&body, &empty_object())
                    .map_err(|e| format!("records: {e}"))?,
                None => body.clone(),
            };
            let records = match records {
                Value::Array(items) => items,
                Value::Null => Vec::new(),
                one => vec![one],
            };
            let count = records.len();
            let mut page_mark = watermark.clone();
            if let Some((value, _)) = &self.watermark {
                for record in &records {
                    let mark = value
                        .eval(record, &empty_object())
                        .map_err(|e| format!("watermark: {e}"))?;
                    if later(&mark, &page_mark) {
                        page_mark = mark;
                    }
                }
            }
            let messages = records.into_iter().map(Message::new).collect();
            if !feed.deliver_all(messages, &self.redelivery).await {
                return Err(format!(
                    "a message of page {page_number} ({shown}) was not accepted"
                ));
            }
            if later(&page_mark, &watermark) {
                feed.save_checkpoint(&page_mark).await?;
                watermark = page_mark;
            }
            if let Some(stop) = &self.stop
                && matches!(stop.eval(&body, &empty_object()), Ok(Value::Boolean(true)))
            {
                break;
            }
            next = match &self.paging {
                Paging::None => None,
                Paging::Cursor {
                    from,
                    param,
                    variable,
                } => {
                    match from
                        .eval(&body, &empty_object())
                        .map_err(|e| format!("cursor: {e}"))?
                    {
                        Value::Null => None,
                        cursor => {
                            let text = to_text(&cursor);
                            match (text.is_empty(), variable) {
                                (true, _) => None,
                                (false, Some(_)) => Some((first.clone(), Some(text))),
                                (false, None) => Some((with_query(&first, param, &text)?, None)),
                            }
                        }
                    }
                }
                Paging::Page { param, start } if count > 0 => Some((
                    with_query(&first, param, &(start + page_number).to_string())?,
                    None,
                )),
                Paging::Offset {
                    param,
                    limit,
                    limit_param,
                } if count > 0 => {
                    let uri = with_query(&first, param, &(limit * page_number).to_string())?;
                    let uri = match limit_param {
                        Some(lp) => with_query(&uri, lp, &limit.to_string())?,
                        None => uri,
                    };
                    Some((uri, None))
                }
                Paging::Page { .. } | Paging::Offset { .. } => None,
                Paging::LinkHeader => next_link(response.headers())
                    .map(|link| resolve(&uri, &link).map(|u| (u, None)))
                    .transpose()?,
                Paging::NextUrl(expr) => {
                    match expr
                        .eval(&body, &empty_object())
                        .map_err(|e| format!("next_url: {e}"))?
                    {
                        Value::Null => None,
                        url => {
                            let text = to_text(&url);
                            (!text.is_empty())
                                .then(|| resolve(&uri, &text).map(|u| (u, None)))
                                .transpose()?
                        }
                    }
                }
            };
        }
        Ok(())
    }
}

impl super::Source for HttpPoll {
    fn uses_store(&self) -> bool {
        true // the watermark, dead letters
    }

    async fn run<P: Processor, O: Output>(&self, feed: Feed<P, O>) -> std::io::Result<()> {
        // A poll follows its pages itself; one under way at shutdown is dropped (its pages may
        // each wait for a whole request timeout), and resumes from the last checkpoint.
        feed.poll_on_schedule(
            &self.schedule,
            "input.http_poll",
            AtShutdown::Cancel,
            || async { self.poll(&feed).await.map(|()| false) },
        )
        .await;
        Ok(())
    }
}

/// A next-page link, possibly relative to the page it came from.
fn resolve(base: &Uri, link: &str) -> Result<Uri, String> {
    let joined = url::Url::parse(&base.to_string())
        .and_then(|b| b.join(link))
        .map_err(|e| format!("next page `{link}`: {e}"))?;
    check_uri(joined.as_str())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_next_link_and_orders_watermarks() {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::LINK,
            r#"<https://a.example/x?page=1>; rel="prev", <https://a.example/x?page=3>; rel="next""#
                .parse()
                .unwrap(),
        );
        assert_eq!(
            next_link(&headers).as_deref(),
            Some("https://a.example/x?page=3")
        );
        assert!(later(&Value::Integer(10), &Value::Integer(9)));
        // Numbers and times in text (CSV, XML, a reloaded checkpoint) by value, not as text.
        assert!(later(&Value::from("10"), &Value::from("9")));
        assert!(later(&Value::from("10"), &Value::Integer(9)));
        assert!(!later(
            &Value::from("2026-01-01T01:00:00+02:00"),
            &Value::from("2026-01-01T00:00:00Z")
        ));
        assert!(!later(&Value::Integer(9), &Value::Integer(10)));
        assert!(later(
            &Value::from("2026-01-02"),
            &Value::from("2026-01-01")
        ));
        assert!(later(&Value::from("a"), &Value::Null));
        let t =
            |s: &str| Value::Timestamp(chrono::DateTime::parse_from_rfc3339(s).unwrap().to_utc());
        assert!(later(
            &t("2026-01-02T00:00:00Z"),
            &Value::from("2026-01-01T23:00:00+00:00")
        ));
        assert!(!later(
            &Value::from("2026-01-01T00:00:00Z"),
            &t("2026-01-01T00:00:00Z")
        ));
    }
}
