//! `weft test`: runs the `*_test.yaml` files beside flows, like unit tests of the flows.
//!
//! A test names a flow, gives it messages (straight into the pipeline) or HTTP requests (to its
//! `http_server` endpoint, served on a free loopback port), and checks what came out: the
//! messages each output accepted, the answers to the requests, the dead letters of a durable
//! flow, the messages that failed. Every output is replaced by a [`mock::MockOutput`] that
//! accepts, fails or runs the real output as the test says; every HTTP call any component makes
//! is answered by the test's declared responses or recorded fixtures ([`mock::HttpMocks`]),
//! never by the network unless the test records. Retry waits and deadlines run
//! [`mock::TIME_SCALE`] times faster (for the whole process), so a test of retries takes
//! milliseconds.
//!
//! ```yaml
//! # orders_test.yaml, beside orders.yaml
//! tests:
//!   - name: an order is mapped and posted
//!     flow: orders
//!     requests:
//!       - body: { id: 42, total: 17.5 }
//!         expect: { status: 200 }
//!     outputs:
//!       output.http_client: live          # run the real output against the mocks below
//!     http:
//!       - { method: POST, url: "https://api.example.com/orders", status: 201 }
//!     expect:
//!       outputs:
//!         output.http_client:
//!           messages:
//!             - includes: { order_id: "42" }
//! ```
//!
//! Each test loads the flow files afresh and, when the flow needs one, opens a store of its
//! own in a temporary directory: tests share nothing.

mod init;
pub mod mock;

pub use init::init;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::Request;
use http_body_util::Full;
use serde::Deserialize;
use serde::de::{self, Deserializer, IntoDeserializer, MapAccess, SeqAccess, Visitor};
use serde_json::Value as Json;
use tokio_util::sync::CancellationToken;

use crate::clients::Shared;
use crate::clients::http::HttpClient;
use crate::config::{self, units::Dur, yaml};
use crate::core::mapping::{Mapping, Value};
use crate::core::{Message, durable};
use crate::engine::{self, Assembled};
use crate::inputs::{Input, http_server};
use crate::outputs::Output;
mod check;
mod file;

use check::*;
use file::*;
use mock::{Answer, Exchange, HttpMocks, HttpRule, MockOutput, OutputLog, TIME_SCALE};

/// How `weft test` runs.
#[derive(Debug, Default, Clone)]
pub struct Options {
    /// Send HTTP calls no declared answer covers to the network and write them to the test's
    /// `fixtures` file.
    pub record: bool,
    /// Run only the tests whose name contains this.
    pub filter: Option<String>,
}

/// What a run came to.
#[derive(Debug, Default)]
pub struct Summary {
    pub passed: usize,
    pub failed: usize,
    pub filtered_out: usize,
}

/// The `*_test.yaml` files `paths` name: directories are searched, a flow file stands for its
/// test file beside it.
pub fn discover(paths: &[PathBuf]) -> Result<Vec<PathBuf>, String> {
    let default = [PathBuf::from(".")];
    let paths = if paths.is_empty() {
        &default[..]
    } else {
        paths
    };
    let mut found = Vec::new();
    for path in paths {
        if path.is_dir() {
            walk(path, &mut found).map_err(|e| format!("{}: {e}", path.display()))?;
        } else if is_test_file(path) {
            found.push(path.clone());
        } else if path.is_file() {
            let test = test_file_of(path);
            if !test.is_file() {
                return Err(format!(
                    "{} has no test: expected {}",
                    path.display(),
                    test.display()
                ));
            }
            found.push(test);
        } else {
            return Err(format!("{}: no such file or directory", path.display()));
        }
    }
    let mut seen = std::collections::HashSet::new();
    found.retain(|path| seen.insert(path.canonicalize().unwrap_or_else(|_| path.clone())));
    Ok(found)
}

fn is_test_file(path: &Path) -> bool {
    path.file_name()
        .and_then(|n| n.to_str())
        .is_some_and(|n| n.ends_with("_test.yaml") || n.ends_with("_test.yml"))
}

/// `orders.yaml` → `orders_test.yaml`.
pub fn test_file_of(flow: &Path) -> PathBuf {
    let stem = flow
        .file_stem()
        .and_then(|s| s.to_str())
        .unwrap_or_default();
    let ext = flow.extension().and_then(|s| s.to_str()).unwrap_or("yaml");
    flow.with_file_name(format!("{stem}_test.{ext}"))
}

fn walk(dir: &Path, found: &mut Vec<PathBuf>) -> std::io::Result<()> {
    let mut entries = std::fs::read_dir(dir)?
        .map(|e| e.map(|e| e.path()))
        .collect::<Result<Vec<_>, _>>()?;
    entries.sort();
    for path in entries {
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default();
        if path.is_dir() {
            if !name.starts_with('.') && !matches!(name, "target" | "node_modules") {
                walk(&path, found)?;
            }
        } else if is_test_file(&path) {
            found.push(path);
        }
    }
    Ok(())
}

/// Runs every test of `files`, writing a `cargo test`-like report to `out`.
pub async fn run(
    files: &[PathBuf],
    options: &Options,
    out: &mut dyn Write,
) -> std::io::Result<Summary> {
    crate::core::retry::set_time_scale(TIME_SCALE);
    let start = Instant::now();
    let mut summary = Summary::default();
    let mut failures: Vec<(String, Vec<String>)> = Vec::new();
    let mut recordings = Vec::new();
    for file in files {
        let shown = file.display().to_string();
        let parsed = match read(file) {
            Ok(parsed) => parsed,
            Err(error) => {
                writeln!(out, "\nerror: {error}")?;
                summary.failed += 1;
                failures.push((shown, vec![error]));
                continue;
            }
        };
        let dir = file.parent().unwrap_or(Path::new(".")).to_path_buf();
        let flows: Vec<PathBuf> = if parsed.flows.is_empty() {
            let name = file
                .file_name()
                .and_then(|n| n.to_str())
                .unwrap_or_default();
            vec![dir.join(name.replacen("_test.", ".", 1))]
        } else {
            parsed.flows.iter().map(|f| dir.join(f)).collect()
        };
        let setting = Setting {
            dir,
            flows,
            env: parsed.env,
        };
        let cases: Vec<Case> = parsed
            .tests
            .into_iter()
            .filter(|case| {
                let keep = options
                    .filter
                    .as_deref()
                    .is_none_or(|f| case.name.contains(f));
                summary.filtered_out += usize::from(!keep);
                keep
            })
            .collect();
        writeln!(out, "\nrunning {} test(s) from {shown}", cases.len())?;
        for case in cases {
            let label = format!("{} › {}", case.flow, case.name);
            write!(out, "test {label} ... ")?;
            out.flush()?;
            let started = Instant::now();
            let limit = case
                .timeout
                .as_ref()
                .map_or(Duration::from_secs(30), |d| d.0);
            let result = match tokio::time::timeout(
                limit,
                run_case(&setting, case, options, &mut recordings),
            )
            .await
            {
                Ok(result) => result,
                Err(_) => Err(vec![format!(
                    "timed out after {limit:?} (is a message waiting for a group that never closes, or for a retry?)"
                )]),
            };
            let took = started.elapsed().as_millis();
            match result {
                Ok(()) => {
                    summary.passed += 1;
                    writeln!(out, "ok ({took} ms)")?;
                }
                Err(errors) => {
                    summary.failed += 1;
                    writeln!(out, "FAILED ({took} ms)")?;
                    failures.push((format!("{shown}: {label}"), errors));
                }
            }
        }
    }
    // Tests sharing a fixture file each add their exchanges to it, in the order they ran.
    let mut files_written: BTreeMap<PathBuf, Vec<Exchange>> = BTreeMap::new();
    for (path, exchanges) in recordings {
        files_written.entry(path).or_default().extend(exchanges);
    }
    for (path, exchanges) in files_written {
        let text = serde_json::to_string_pretty(&exchanges).unwrap_or_default();
        match std::fs::write(&path, text + "\n") {
            Ok(()) => writeln!(
                out,
                "recorded {} exchange(s) in {}",
                exchanges.len(),
                path.display()
            )?,
            Err(e) => {
                summary.failed += 1;
                failures.push((
                    path.display().to_string(),
                    vec![format!("cannot write the fixtures: {e}")],
                ));
            }
        }
    }
    if !failures.is_empty() {
        writeln!(out, "\nfailures:")?;
        for (label, errors) in &failures {
            writeln!(out, "\n---- {label} ----")?;
            for error in errors {
                for (i, line) in error.lines().enumerate() {
                    let lead = if i == 0 { "  - " } else { "    " };
                    writeln!(out, "{lead}{line}")?;
                }
            }
        }
    }
    let verdict = if summary.failed == 0 { "ok" } else { "FAILED" };
    writeln!(
        out,
        "\ntest result: {verdict}. {} passed; {} failed; {} filtered out; finished in {:.2}s",
        summary.passed,
        summary.failed,
        summary.filtered_out,
        start.elapsed().as_secs_f64()
    )?;
    Ok(summary)
}

/// Where a file's tests find their flows.
struct Setting {
    dir: PathBuf,
    flows: Vec<PathBuf>,
    env: BTreeMap<String, String>,
}

fn read(file: &Path) -> Result<TestFile, String> {
    let shown = file.display();
    let text = std::fs::read_to_string(file).map_err(|e| format!("{shown}: cannot read: {e}"))?;
    let root = yaml::parse(&text)
        .map_err(|e| format!("{shown}:{}:{}: {}", e.loc.line, e.loc.col, e.message))?;
    config::de::from_node::<TestFile>(&root).map_err(|e| {
        let loc = e.loc.unwrap_or_default();
        let mut text = format!("{shown}:{}:{}: ", loc.line, loc.col);
        if !e.path.is_empty() {
            let _ = write!(text, "field `{}`: ", e.path.join("."));
        }
        text.push_str(&e.message);
        if let Some(s) = e.suggestion {
            let _ = write!(text, " (did you mean `{s}`?)");
        }
        text
    })
}

/// A temporary directory removed when dropped.
struct Scratch(PathBuf);

impl Scratch {
    fn new() -> std::io::Result<Scratch> {
        use std::sync::atomic::{AtomicU64, Ordering};
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let path = std::env::temp_dir().join(format!(
            "weft-test-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&path)?;
        Ok(Scratch(path))
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Runs one test; exchanges recorded for its fixture file are added to `recordings`.
async fn run_case(
    setting: &Setting,
    mut case: Case,
    options: &Options,
    recordings: &mut Vec<(PathBuf, Vec<Exchange>)>,
) -> Result<(), Vec<String>> {
    let one = |e: String| vec![e];
    let fixtures = case.fixtures.as_ref().map(|f| setting.dir.join(f));
    let recorded = match (&fixtures, options.record) {
        (Some(path), false) => {
            let text = std::fs::read(path).map_err(|e| {
                one(format!(
                    "fixtures {}: {e} (record them with `weft test --record`)",
                    path.display()
                ))
            })?;
            serde_json::from_slice::<Vec<Exchange>>(&text)
                .map_err(|e| one(format!("fixtures {}: {e}", path.display())))?
        }
        _ => Vec::new(),
    };
    let mocks = Arc::new(HttpMocks::new(
        std::mem::take(&mut case.http),
        recorded,
        options.record && fixtures.is_some(),
    ));
    let shared = Shared::default();
    shared.http.set_interceptor(mocks.clone());
    let lookup = |name: &str| {
        setting
            .env
            .get(name)
            .cloned()
            .or_else(|| std::env::var(name).ok())
    };
    let loaded = crate::load::load_with(&setting.flows, &lookup, &shared)
        .map_err(|errors| errors.iter().map(ToString::to_string).collect::<Vec<_>>())?;
    let names: Vec<String> = loaded.flows.iter().map(|f| f.name.clone()).collect();
    let resources = loaded.resources;
    for (name, statements) in &case.setup.sql {
        let db = resources
            .sql(name)
            .map_err(|e| one(format!("setup.sql.{name}: {e}")))?;
        for statement in statements {
            db.execute_all(statement, &[Vec::new()], None)
                .await
                .map_err(|e| one(format!("setup.sql.{name}: {e}")))?;
        }
    }
    let mut spec = loaded
        .flows
        .into_iter()
        .find(|f| f.name == case.flow)
        .ok_or_else(|| {
            one(format!(
                "no flow `{}` in {}; there are: {}",
                case.flow,
                shown_list(&setting.flows),
                names.join(", ")
            ))
        })?;

    let ids: Vec<String> = spec.outputs.iter().map(|(id, ..)| id.clone()).collect();
    let unknown: Vec<String> = case
        .outputs
        .keys()
        .chain(case.expect.outputs.keys())
        .filter(|id| !ids.contains(id))
        .map(|id| {
            format!(
                "flow `{}` has no output `{id}`; its outputs are: {}",
                case.flow,
                ids.join(", ")
            )
        })
        .collect();
    if !unknown.is_empty() {
        return Err(unknown);
    }
    let mut logs = BTreeMap::new();
    spec.outputs = std::mem::take(&mut spec.outputs)
        .into_iter()
        .map(|(id, real, retry)| {
            let log = Arc::new(OutputLog::default());
            logs.insert(id.clone(), log.clone());
            let answers = case.outputs.remove(&id).map(|a| a.0).unwrap_or_default();
            let mock = MockOutput::new(answers, real, log);
            (id, Output::Mock(Box::new(mock)), retry)
        })
        .collect();

    let scratch;
    let store = if spec.needs_store() || resources.wants_store() {
        scratch = Scratch::new().map_err(|e| one(format!("temporary store: {e}")))?;
        let store = weft_store::Store::open_owner(
            &scratch.0.join("weft.db"),
            weft_store::Durability::Process,
        )
        .await
        .map_err(|e| one(format!("temporary store: {e}")))?;
        resources.attach_store(&store);
        Some(store)
    } else {
        None
    };
    let gathers = spec.processors.iter().any(|(_, p)| p.gathers());
    let Assembled {
        flow,
        input,
        input_id,
        workers,
    } = engine::assemble(spec, store.as_ref())
        .await
        .map_err(|e| one(e.to_string()))?;
    let stop = CancellationToken::new();
    let _stop_at_end = stop.clone().drop_guard();
    let mut errors = Vec::new();
    let mut failed = Vec::new();

    let durable_workers = flow
        .durable()
        .is_some()
        .then(|| tokio::spawn(durable::work(flow.clone(), workers, stop.clone())));
    let messages = case
        .messages
        .into_iter()
        .enumerate()
        .map(|(i, m)| m.build(i))
        .collect::<Result<Vec<_>, _>>()
        .map_err(one)?
        .into_iter();
    if flow.durable().is_some() {
        let feed = crate::core::feed::Feed {
            flow: flow.clone(),
            shutdown: stop.clone(),
            tasks: tokio_util::task::TaskTracker::new(),
        };
        for message in messages {
            feed.push(message).await;
        }
    } else if gathers {
        // A group waits for its members: they go in together.
        let all = futures_util::future::join_all(messages.map(|m| flow.process(m))).await;
        failed.extend(
            all.into_iter()
                .filter_map(Result::err)
                .map(|e| e.to_string()),
        );
    } else {
        for message in messages {
            if let Err(e) = flow.process(message).await {
                failed.push(e.to_string());
            }
        }
    }

    if let Some(polls) = case.polls {
        let feed = crate::core::feed::Feed {
            flow: flow.clone(),
            shutdown: stop.clone(),
            tasks: tokio_util::task::TaskTracker::new(),
        };
        for n in 1..=polls {
            match input.poll_once(&feed).await {
                None => {
                    return Err(one(format!(
                        "`polls` run a polling input (`http_poll`, `sql_poll`, `directory`, `s3`); flow `{}` has `{input_id}`",
                        case.flow
                    )));
                }
                Some(Err(e)) => errors.push(format!("poll {n}: {e}")),
                Some(Ok(())) => {}
            }
        }
    }

    if !case.requests.is_empty() {
        let Input::HttpServer(mut endpoint) = input else {
            return Err(one(format!(
                "`requests` go to an `http_server` input; flow `{}` has `{input_id}`: give `messages`",
                case.flow
            )));
        };
        // The test talks plain HTTP to a port of its own, and hears why a request failed.
        endpoint.tls = None;
        endpoint.errors = http_server::Errors::Detailed;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .map_err(|e| one(format!("cannot listen on loopback: {e}")))?;
        let address = listener.local_addr().map_err(|e| one(e.to_string()))?;
        let path = endpoint.path.clone();
        let auth = endpoint.auth();
        // The server stops after the requests; a durable flow's workers go on delivering.
        let server_stop = stop.child_token();
        let server = tokio::spawn(http_server::serve(
            listener,
            vec![(*endpoint, flow.clone())],
            server_stop.clone(),
        ));
        let client = HttpClient::new();
        for (i, request) in case.requests.into_iter().enumerate() {
            let what = format!(
                "request {i} ({} {})",
                request.method,
                request.path.as_deref().unwrap_or(&path)
            );
            match send(&client, address, &path, &request, auth.as_deref()).await {
                Ok((status, headers, body)) => {
                    errors.extend(check_response(
                        &what,
                        &request.expect,
                        status,
                        &headers,
                        &body,
                    ));
                }
                Err(e) => errors.push(format!("{what}: {e}")),
            }
        }
        server_stop.cancel();
        let _ = server.await;
    }

    if let Some(queue) = flow.durable() {
        while !queue.is_drained().await {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    stop.cancel();
    if let Some(workers) = durable_workers {
        let _ = workers.await;
    }

    for (name, checks) in &case.expect.sql {
        errors.extend(check_database(&resources, name, checks).await);
    }
    errors.extend(mocks.unmatched().into_iter().map(|call| {
        format!("HTTP call without a mock: {call} (declare it under `http:`, or name a `fixtures` file and record it with `weft test --record`)")
    }));
    errors.extend(mocks.unmet());
    if let Some(want) = &case.expect.checkpoint {
        let saved = match (flow.polling(), &store) {
            (Some(polling), Some(store)) => {
                crate::core::checkpoint::load(store, &polling.checkpoint_key)
                    .await
                    .map_err(one)?
                    .map(|saved| saved.value)
            }
            _ => None,
        };
        match saved {
            Some(got) if same(want, &got) => {}
            Some(got) => errors.push(format!(
                "expected the checkpoint {}, got {}",
                pretty(want),
                pretty(&got)
            )),
            None => errors.push(format!(
                "expected the checkpoint {}, but none was saved (does the input have a `watermark`?)",
                pretty(want)
            )),
        }
    }
    match case.expect.failed {
        Some(n) if n != failed.len() => errors.push(format!(
            "expected {n} failed message(s), got {}{}",
            failed.len(),
            failed.iter().map(|f| format!("\n{f}")).collect::<String>()
        )),
        Some(_) => {}
        None => errors.extend(failed.iter().map(|f| format!("a message failed: {f}"))),
    }
    for (id, expect) in &case.expect.outputs {
        let log = &logs[id];
        let accepted = log.accepted();
        let count = expect
            .count
            .or((!expect.messages.is_empty()).then_some(expect.messages.len()));
        if let Some(count) = count
            && count != accepted.len()
        {
            errors.push(format!(
                "output `{id}`: expected {count} message(s), got {}{}",
                accepted.len(),
                accepted
                    .iter()
                    .map(|m| format!("\n{}", pretty(&to_json(&m.value))))
                    .collect::<String>()
            ));
        }
        if let Some(attempts) = expect.attempts
            && attempts != log.attempts()
        {
            errors.push(format!(
                "output `{id}`: expected {attempts} attempt(s), got {}",
                log.attempts()
            ));
        }
        for (i, check) in expect.messages.iter().enumerate() {
            let what = format!("output `{id}`, message {i}");
            match accepted.get(i) {
                Some(message) => errors.extend(check_message(
                    &what,
                    check,
                    &message.value,
                    &message.metadata,
                    None,
                )),
                None => errors.push(format!("{what}: there is none")),
            }
        }
    }
    if flow.durable().is_some() {
        if case.expect.failed.is_some() {
            errors.push(format!(
                "flow `{}` is durable: a message that fails is dead-lettered; expect `dlq` instead of `failed`",
                case.flow
            ));
        }
        if let Some(store) = &store {
            errors.extend(check_dead_letters(store, &case.flow, case.expect.dlq.as_ref()).await);
            let dead = store
                .count_dead_letters(&weft_store::DlqFilter {
                    flow: Some(case.flow.clone()),
                    ..Default::default()
                })
                .await
                .unwrap_or(0);
            // A message the queue refused (its ordering key could not be computed) is counted
            // as failed without a dead letter.
            let refused = flow.counters().failed.saturating_sub(dead);
            if refused > 0 {
                errors.push(format!(
                    "{refused} message(s) were refused by the queue (their `ordering.by_key` could not be computed)"
                ));
            }
        }
    } else if case.expect.dlq.is_some() {
        errors.push(format!(
            "flow `{}` is not durable: a message that fails is answered or logged, not dead-lettered (expect `failed` instead)",
            case.flow
        ));
    }

    if let Some(path) = fixtures
        && options.record
    {
        recordings.push((path, mocks.recorded()));
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(errors)
    }
}

/// The most rows a failed `expect.sql` check shows.
const ROWS_SHOWN: usize = 20;

/// Runs each of `checks` on database `name` and says how its rows differ from the expected.
async fn check_database(
    resources: &crate::clients::Resources,
    name: &str,
    checks: &[SqlExpect],
) -> Vec<String> {
    let db = match resources.sql(name) {
        Ok(db) => db,
        Err(e) => return vec![format!("expect.sql.{name}: {e}")],
    };
    let mut errors = Vec::new();
    for check in checks {
        let what = format!("expect.sql.{name} `{}`", check.query);
        if check.rows.is_none() && check.count.is_none() {
            errors.push(format!(
                "{what}: give `rows` or `count`: a query alone checks nothing"
            ));
            continue;
        }
        let rows = match db.fetch(&check.query, &[]).await {
            Ok(rows) => rows,
            Err(e) => {
                errors.push(format!("{what}: {e}"));
                continue;
            }
        };
        // At most the first rows: enough to see what is there.
        let shown = || {
            let mut text: String = rows
                .iter()
                .take(ROWS_SHOWN)
                .map(|r| format!("\n{}", serde_json::to_string(r).unwrap_or_default()))
                .collect();
            if rows.len() > ROWS_SHOWN {
                text.push_str(&format!("\n… and {} more", rows.len() - ROWS_SHOWN));
            }
            text
        };
        // How many: as `rows` lists, else `count`.
        let expected = check
            .rows
            .as_ref()
            .map_or(check.count, |want| Some(want.len()));
        if let Some(n) = expected
            && n != rows.len()
        {
            errors.push(format!(
                "{what}: expected {n} row(s), got {}{}",
                rows.len(),
                shown()
            ));
        } else if let Some(want) = &check.rows {
            // Row by row: which differ, and how.
            let json = |v: &Json| serde_json::to_string(v).unwrap_or_default();
            errors.extend(
                want.iter()
                    .zip(&rows)
                    .enumerate()
                    .filter(|(_, (w, g))| !same(w, g))
                    .map(|(i, (w, g))| {
                        format!("{what}: row {i}: expected {}, got {}", json(w), json(g))
                    }),
            );
        }
    }
    errors
}
