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
use mock::{Answer, Exchange, HttpMocks, HttpRule, MockOutput, OutputLog, TIME_SCALE};

/// A `*_test.yaml` file.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TestFile {
    /// The flow files the tests load, relative to this file; by default the file of the same
    /// name without `_test` (`orders_test.yaml` tests `orders.yaml`).
    #[serde(default)]
    flows: Vec<String>,
    /// `${VAR}` values for the flow files, before the process environment.
    #[serde(default)]
    env: BTreeMap<String, String>,
    tests: Vec<Case>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Case {
    name: String,
    flow: String,
    /// Messages handed to the flow as its input would hand them, one at a time, in order.
    #[serde(default)]
    messages: Vec<TestMessage>,
    /// Requests to the flow's `http_server` endpoint, one at a time, in order.
    #[serde(default)]
    requests: Vec<TestRequest>,
    /// How each output answers, by its id (`output.http_client`, `outputs[1].sql`); an output
    /// left out accepts everything.
    #[serde(default)]
    outputs: BTreeMap<String, Answers>,
    /// Declared answers to HTTP calls, first match wins.
    #[serde(default)]
    http: Vec<HttpRule>,
    /// A JSON file of recorded HTTP exchanges, relative to the test file; replayed, or
    /// written by `weft test --record`.
    fixtures: Option<String>,
    #[serde(default)]
    expect: Expect,
    /// How long the test may take (default 30s).
    timeout: Option<Dur>,
}

/// One message: its `value`, or a VRL `mapping` that makes it (for values JSON cannot
/// spell, such as timestamps), and its metadata.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TestMessage {
    value: Option<Json>,
    mapping: Option<String>,
    metadata: Option<Json>,
}

impl TestMessage {
    fn build(self, i: usize) -> Result<Message, String> {
        let value = match (self.value, self.mapping) {
            (Some(value), None) => to_value(value),
            (None, Some(source)) => {
                let mapping = Mapping::compile(&source).map_err(|diagnostics| {
                    format!(
                        "message {i}: the mapping does not compile: {}",
                        joined(&diagnostics)
                    )
                })?;
                let mut value = crate::core::mapping::empty_object();
                let mut metadata = crate::core::mapping::empty_object();
                mapping
                    .run(&mut value, &mut metadata)
                    .map_err(|e| format!("message {i}: the mapping failed: {e}"))?;
                value
            }
            _ => return Err(format!("message {i}: give either `value` or `mapping`")),
        };
        let mut message = Message::new(value);
        if let Some(metadata) = self.metadata {
            message.metadata = to_value(metadata);
        }
        Ok(message)
    }
}

fn joined(diagnostics: &[crate::core::mapping::Diagnostic]) -> String {
    diagnostics
        .iter()
        .map(|d| d.message.clone())
        .collect::<Vec<_>>()
        .join("; ")
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TestRequest {
    #[serde(default = "post")]
    method: String,
    /// Path and query; by default the endpoint's path.
    path: Option<String>,
    #[serde(default)]
    headers: BTreeMap<String, String>,
    /// A string is sent as it is; anything else as JSON.
    body: Option<Json>,
    #[serde(default)]
    expect: ResponseExpect,
}

fn post() -> String {
    "POST".into()
}

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ResponseExpect {
    /// By default any 2xx.
    status: Option<u16>,
    /// The whole body (compared as JSON when it is JSON).
    body: Option<Json>,
    /// Keys the JSON body must have, with these values.
    includes: Option<Json>,
    /// A VRL condition over the JSON body (`%status`, `%headers` too).
    condition: Option<String>,
}

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Expect {
    #[serde(default)]
    outputs: BTreeMap<String, OutputExpect>,
    dlq: Option<DlqExpect>,
    /// Messages that fail for good in a direct flow (default 0).
    failed: Option<usize>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct OutputExpect {
    /// Messages accepted; by default as many as `messages` lists, when it lists any.
    count: Option<usize>,
    /// Attempts made, retries included.
    attempts: Option<usize>,
    /// Checks of the accepted messages, in the order they were accepted.
    #[serde(default)]
    messages: Vec<Check>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DlqExpect {
    /// Dead letters; by default as many as `entries` lists, when it lists any.
    count: Option<usize>,
    /// Checks of the dead letters, oldest first.
    #[serde(default)]
    entries: Vec<Check>,
}

/// Checks of one message; every one given must hold.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Check {
    /// The whole value.
    value: Option<Json>,
    /// Keys the value must have, with these values (nested objects likewise).
    includes: Option<Json>,
    /// Keys the metadata must have.
    metadata: Option<Json>,
    /// A VRL condition; `%` is the metadata (a dead letter's also has `%dlq.reason` and
    /// `%dlq.attempts`).
    condition: Option<String>,
    /// Dead letters: text the failure reason contains.
    reason: Option<String>,
    /// Dead letters: attempts made.
    attempts: Option<u32>,
}

/// One answer or a list of them.
struct Answers(Vec<Answer>);

impl<'de> Deserialize<'de> for Answers {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Form;
        impl<'de> Visitor<'de> for Form {
            type Value = Answers;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str(
                    "`accept`, `live`, `{ fail: reason }`, `{ retry: reason }`, or a list of them",
                )
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<Answers, E> {
                Answer::deserialize(s.into_deserializer()).map(|a| Answers(vec![a]))
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Answers, A::Error> {
                Answer::deserialize(de::value::MapAccessDeserializer::new(map))
                    .map(|a| Answers(vec![a]))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Answers, A::Error> {
                Vec::<Answer>::deserialize(de::value::SeqAccessDeserializer::new(seq)).map(Answers)
            }
        }
        d.deserialize_any(Form)
    }
}

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

    if !case.requests.is_empty() {
        let Input::HttpServer(mut endpoint) = input else {
            return Err(one(format!(
                "`requests` go to an `http_server` input; flow `{}` has `{input_id}`: give `messages`",
                case.flow
            )));
        };
        // The test talks plain HTTP to a port of its own.
        endpoint.tls = None;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .map_err(|e| one(format!("cannot listen on loopback: {e}")))?;
        let address = listener.local_addr().map_err(|e| one(e.to_string()))?;
        let path = endpoint.path.clone();
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
            match send(&client, address, &path, &request).await {
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

    errors.extend(mocks.unmatched().into_iter().map(|call| {
        format!("HTTP call without a mock: {call} (declare it under `http:`, or name a `fixtures` file and record it with `weft test --record`)")
    }));
    errors.extend(mocks.unmet());
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

/// Checks a durable flow's dead letters; without `expect`, there must be none.
async fn check_dead_letters(
    store: &weft_store::Store,
    flow: &str,
    expect: Option<&DlqExpect>,
) -> Vec<String> {
    let mut errors = Vec::new();
    let filter = weft_store::DlqFilter {
        flow: Some(flow.to_string()),
        ..Default::default()
    };
    let dead = match store.dead_letters(&filter, 10_000).await {
        Ok(dead) => dead,
        Err(e) => return vec![format!("dlq: cannot read the store: {e}")],
    };
    let count = match expect {
        None => Some(0),
        Some(expect) => expect
            .count
            .or((!expect.entries.is_empty()).then_some(expect.entries.len())),
    };
    if let Some(count) = count
        && count != dead.len()
    {
        errors.push(format!(
            "dlq: expected {count} dead letter(s), got {}{}",
            dead.len(),
            dead.iter()
                .map(|d| format!("\n{}", d.failure.reason))
                .collect::<String>()
        ));
    }
    for (i, check) in expect.iter().flat_map(|e| e.entries.iter()).enumerate() {
        let what = format!("dlq entry {i}");
        let Some(dead) = dead.get(i) else {
            errors.push(format!("{what}: there is none"));
            continue;
        };
        let value = durable::decode_value(&dead.payload).unwrap_or_else(Value::from);
        let mut metadata = to_value(crate::admin::dlq::bytes_as_json(&dead.metadata));
        if !matches!(metadata, Value::Object(_)) {
            metadata = crate::core::mapping::empty_object();
        }
        crate::core::mapping::insert(
            &mut metadata,
            "dlq",
            to_value(serde_json::json!({
                "reason": dead.failure.reason,
                "attempts": dead.attempts,
                "last_status": dead.failure.last_status,
            })),
        );
        let dead_letter = Some((dead.failure.reason.as_str(), dead.attempts));
        errors.extend(check_message(&what, check, &value, &metadata, dead_letter));
    }
    errors
}

fn shown_list(paths: &[PathBuf]) -> String {
    paths
        .iter()
        .map(|p| p.display().to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

async fn send(
    client: &HttpClient,
    address: std::net::SocketAddr,
    default_path: &str,
    request: &TestRequest,
) -> Result<(u16, http::HeaderMap, Bytes), String> {
    let path = request.path.as_deref().unwrap_or(default_path);
    if request.path.is_none() && path.contains('{') {
        return Err(format!(
            "the endpoint's path `{path}` has parameters: give `path`"
        ));
    }
    let method = http::Method::from_bytes(request.method.to_ascii_uppercase().as_bytes())
        .map_err(|e| format!("method: {e}"))?;
    let mut builder = Request::builder()
        .method(method)
        .uri(format!("http://{address}{path}"));
    for (name, value) in &request.headers {
        builder = builder.header(name.as_str(), value.as_str());
    }
    let has_type = request
        .headers
        .keys()
        .any(|k| k.eq_ignore_ascii_case("content-type"));
    let body = match &request.body {
        None => Bytes::new(),
        Some(Json::String(s)) => Bytes::from(s.clone()),
        Some(other) => {
            if !has_type {
                builder = builder.header("content-type", "application/json");
            }
            Bytes::from(other.to_string())
        }
    };
    let request = builder.body(Full::new(body)).map_err(|e| e.to_string())?;
    let response = client
        .send(request, Duration::from_secs(30), 16 << 20)
        .await
        .map_err(|e| e.to_string())?;
    let status = response.status().as_u16();
    let (parts, body) = response.into_parts();
    Ok((status, parts.headers, body))
}

fn check_response(
    what: &str,
    expect: &ResponseExpect,
    status: u16,
    headers: &http::HeaderMap,
    body: &Bytes,
) -> Vec<String> {
    let mut errors = Vec::new();
    let text = String::from_utf8_lossy(body);
    let json = crate::admin::dlq::bytes_as_json(body);
    match expect.status {
        Some(want) if want != status => errors.push(format!(
            "{what}: expected status {want}, got {status}: {text}"
        )),
        None if !(200..300).contains(&status) => errors.push(format!(
            "{what}: expected a 2xx status, got {status}: {text}"
        )),
        _ => {}
    }
    if let Some(want) = &expect.body
        && !same(want, &json)
    {
        errors.push(format!(
            "{what}: expected the body\n{}\ngot\n{}",
            pretty(want),
            pretty(&json)
        ));
    }
    if let Some(want) = &expect.includes
        && !includes(want, &json)
    {
        errors.push(format!(
            "{what}: the body does not include\n{}\ngot\n{}",
            pretty(want),
            pretty(&json)
        ));
    }
    if let Some(condition) = &expect.condition {
        let header_map: serde_json::Map<String, Json> = headers
            .iter()
            .filter_map(|(k, v)| Some((k.to_string(), Json::String(v.to_str().ok()?.to_string()))))
            .collect();
        let metadata = to_value(serde_json::json!({ "status": status, "headers": header_map }));
        if let Some(e) = holds(condition, &to_value(json.clone()), &metadata) {
            errors.push(format!("{what}: {e}; the body was\n{}", pretty(&json)));
        }
    }
    errors
}

fn check_message(
    what: &str,
    check: &Check,
    value: &Value,
    metadata: &Value,
    dead: Option<(&str, u32)>,
) -> Vec<String> {
    let mut errors = Vec::new();
    let json = to_json(value);
    if let Some(want) = &check.value
        && !same(want, &json)
    {
        errors.push(format!(
            "{what}: expected\n{}\ngot\n{}",
            pretty(want),
            pretty(&json)
        ));
    }
    if let Some(want) = &check.includes
        && !includes(want, &json)
    {
        errors.push(format!(
            "{what}: does not include\n{}\ngot\n{}",
            pretty(want),
            pretty(&json)
        ));
    }
    if let Some(want) = &check.metadata {
        let got = to_json(metadata);
        if !includes(want, &got) {
            errors.push(format!(
                "{what}: the metadata does not include\n{}\ngot\n{}",
                pretty(want),
                pretty(&got)
            ));
        }
    }
    if let Some(condition) = &check.condition
        && let Some(e) = holds(condition, value, metadata)
    {
        errors.push(format!("{what}: {e}; the message was\n{}", pretty(&json)));
    }
    match (dead, &check.reason, check.attempts) {
        (None, Some(_), _) | (None, _, Some(_)) => {
            errors.push(format!(
                "{what}: `reason` and `attempts` are checks of dead letters (`dlq.entries`)"
            ));
        }
        (Some((reason, attempts)), want_reason, want_attempts) => {
            if let Some(want) = want_reason
                && !reason.contains(want.as_str())
            {
                errors.push(format!(
                    "{what}: the reason does not contain `{want}`: {reason}"
                ));
            }
            if let Some(want) = want_attempts
                && want != attempts
            {
                errors.push(format!(
                    "{what}: expected {want} attempt(s), got {attempts}"
                ));
            }
        }
        _ => {}
    }
    errors
}

/// `None` when `condition` holds for the message, else why not.
fn holds(condition: &str, value: &Value, metadata: &Value) -> Option<String> {
    let mapping = match Mapping::compile(condition) {
        Ok(m) => m,
        Err(diagnostics) => {
            return Some(format!(
                "the condition `{condition}` does not compile: {}",
                joined(&diagnostics)
            ));
        }
    };
    match mapping.eval(value, metadata) {
        Ok(Value::Boolean(true)) => None,
        Ok(other) => Some(format!(
            "the condition `{condition}` gave {}",
            to_json(&other)
        )),
        Err(e) => Some(format!("the condition `{condition}` failed: {e}")),
    }
}

/// Whether `got` has everything `want` has: objects key by key (more keys allowed), arrays
/// element by element (same length), numbers by value (1 and 1.0 are equal).
fn includes(want: &Json, got: &Json) -> bool {
    match (want, got) {
        (Json::Object(w), Json::Object(g)) => w
            .iter()
            .all(|(k, v)| g.get(k).is_some_and(|gv| includes(v, gv))),
        (Json::Array(w), Json::Array(g)) => {
            w.len() == g.len() && w.iter().zip(g).all(|(a, b)| includes(a, b))
        }
        (Json::Number(a), Json::Number(b)) => a.as_f64() == b.as_f64(),
        _ => want == got,
    }
}

/// Whether two values are equal, numbers compared by value (1 and 1.0 are equal).
fn same(want: &Json, got: &Json) -> bool {
    match (want, got) {
        (Json::Object(w), Json::Object(g)) => {
            w.len() == g.len()
                && w.iter()
                    .all(|(k, v)| g.get(k).is_some_and(|gv| same(v, gv)))
        }
        (Json::Array(w), Json::Array(g)) => {
            w.len() == g.len() && w.iter().zip(g).all(|(a, b)| same(a, b))
        }
        (Json::Number(a), Json::Number(b)) => a.as_f64() == b.as_f64(),
        _ => want == got,
    }
}

fn to_value(json: Json) -> Value {
    serde_json::from_value(json).unwrap_or(Value::Null)
}

fn to_json(value: &Value) -> Json {
    serde_json::to_value(value).unwrap_or(Json::Null)
}

fn pretty(json: &Json) -> String {
    serde_json::to_string_pretty(json).unwrap_or_default()
}
