//! The speed regression guard: instructions per message, counted by valgrind's callgrind.
//!
//! A count of instructions is the same for the same binary and input whatever else the machine
//! is doing, so unlike a timing it can fail CI. Each scenario runs in a child process (this
//! test binary again, told what to do by `WEFT_GUARD_SCENARIO`) under callgrind twice, with
//! `FEW` and `MANY` messages; the difference over `MANY - FEW` is the work per message, with
//! start-up (VRL's compiler, the runtime, the store's schema) cancelled out.
//!
//! The counts are of this test build (the dev profile): an optimized build of the whole graph
//! would cost CI several minutes on two cores. They measure how much work a message causes,
//! not how fast a release binary does it; `crates/weft-bench` and `cargo bench` do that.
//!
//! `instructions.txt` beside this file holds the reference per scenario. A count more than
//! `TOLERANCE` above it fails; after a change that is worth its cost, write the new counts
//! with `WEFT_BLESS=1 cargo test -p weft --test e2e instructions` and say why in the commit.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::Request;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use weft::clients::Shared;
use weft::core::Message;
use weft::core::mapping::Value;
use weft::load::FlowSpec;

use crate::support::{Receiver, free_port, scratch};

/// How far above its reference a count may go.
const TOLERANCE: f64 = 0.10;
const FEW: u64 = 10;
const MANY: u64 = 110;

/// The 303-byte order of `BENCH.md`.
const BODY: &str = r#"{"id":12345,"first":"Ada","last":"Lovelace","email":"Ada.Lovelace@Example.COM","company":"Analytical Engines Ltd","street":"12 St James's Square","city":"London","zip":"SW1Y 4JH","country":"GB","phone":"+44 20 7946 0018","tags":["vip","newsletter","early-adopter"],"notes":"first programmer; prefers email","x":1}"#;

/// `BENCH.md`'s mapping.
const MAP: &str = "      - map: |\n          .order_id = to_string!(.id)\n          .name = string!(.first) + \" \" + string!(.last)\n          .email = downcase!(.email)";

/// Each scenario: its pipeline (YAML list items, for the in-process ones).
const SCENARIOS: &[(&str, &str)] = &[
    ("map", MAP),
    ("filter", "      - filter: .country == \"GB\""),
    (
        "switch",
        "      - switch:\n          - check: .country == \"DE\"\n            processors: [ { map: .region = \"eu\" } ]\n          - check: .country == \"US\"\n            processors: [ { map: .region = \"us\" } ]\n          - processors: [ { map: .region = \"other\" } ]",
    ),
    (
        "split_aggregate",
        "      - split: .items\n      - map: .seen = true\n      - aggregate: { correlate: split, period: 10s }",
    ),
    ("durable", MAP),
    ("http_round_trip", MAP),
];

#[test]
fn per_message_work_stays_within_its_reference() {
    if let Ok(scenario) = std::env::var("WEFT_GUARD_SCENARIO") {
        let messages = std::env::var("WEFT_GUARD_MESSAGES")
            .unwrap()
            .parse()
            .unwrap();
        return child(&scenario, messages);
    }
    if Command::new("valgrind").arg("--version").output().is_err() {
        assert!(
            std::env::var("WEFT_REQUIRE_SERVICES").as_deref() != Ok("1"),
            "valgrind is required for the instruction guard"
        );
        eprintln!("SKIPPED: valgrind is not installed; the instruction guard did not run");
        return;
    }
    let reference_file = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/e2e/instructions.txt");
    let reference = read_reference(&reference_file);
    let dir = scratch();
    let mut measured = BTreeMap::new();
    for (scenario, _) in SCENARIOS {
        // The two runs of a scenario at once: one per core.
        let (few, many) = std::thread::scope(|s| {
            let few = s.spawn(|| instructions(&dir, scenario, FEW));
            let many = s.spawn(|| instructions(&dir, scenario, MANY));
            (few.join().unwrap(), many.join().unwrap())
        });
        measured.insert(
            scenario.to_string(),
            many.saturating_sub(few) / (MANY - FEW),
        );
    }
    let report: Vec<String> = measured
        .iter()
        .map(|(scenario, count)| match reference.get(scenario) {
            Some(&was) => format!(
                "{scenario}: {count} instructions per message ({:+.1} % against {was})",
                (*count as f64 / was as f64 - 1.0) * 100.0
            ),
            None => format!("{scenario}: {count} instructions per message (no reference)"),
        })
        .collect();
    eprintln!("{}", report.join("\n"));
    if std::env::var("WEFT_BLESS").as_deref() == Ok("1") {
        let text: String = measured
            .iter()
            .map(|(scenario, count)| format!("{scenario} {count}\n"))
            .collect();
        std::fs::write(&reference_file, format!("{HEADER}{text}")).unwrap();
        return;
    }
    let grown: Vec<&String> = measured
        .iter()
        .filter(|(scenario, count)| {
            reference
                .get(*scenario)
                .is_none_or(|&was| **count as f64 > was as f64 * (1.0 + TOLERANCE))
        })
        .map(|(scenario, _)| scenario)
        .collect();
    assert!(
        grown.is_empty(),
        "more work per message than the reference allows (+{:.0} %) in {grown:?}:\n{}\nIf the cost is worth it, run `WEFT_BLESS=1 cargo test -p weft --test e2e instructions` and say why in the commit message.",
        TOLERANCE * 100.0,
        report.join("\n")
    );
}

const HEADER: &str = "# Instructions per message, test build, counted by callgrind: see instructions.rs.\n# Written by `WEFT_BLESS=1 cargo test -p weft --test e2e instructions`.\n";

fn read_reference(path: &Path) -> BTreeMap<String, u64> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (name, count) = l.split_once(' ')?;
            Some((name.to_string(), count.trim().parse().ok()?))
        })
        .collect()
}

/// Instructions of one child run of `scenario` with `messages` messages, all threads.
fn instructions(dir: &Path, scenario: &str, messages: u64) -> u64 {
    let out = dir.join(format!("callgrind.{scenario}.{messages}"));
    let run = Command::new("valgrind")
        .arg("--tool=callgrind")
        // The metrics recorder calibrates its clock for a while at start: a count that depends
        // on time, not on the work; left out.
        .arg("--toggle-collect=*quanta::Calibration::calibrate*")
        .arg("--collect-atstart=yes")
        .arg(format!("--callgrind-out-file={}", out.display()))
        .arg(std::env::current_exe().unwrap())
        .args([
            "instructions::per_message_work_stays_within_its_reference",
            "--exact",
            "--test-threads=1",
        ])
        .env("WEFT_GUARD_SCENARIO", scenario)
        .env("WEFT_GUARD_MESSAGES", messages.to_string())
        .env("WEFT_GUARD_DIR", dir.join(format!("{scenario}.{messages}")))
        .env("WEFT_LOG", "error")
        .output()
        .unwrap();
    assert!(
        run.status.success(),
        "{scenario} with {messages} messages failed under callgrind:\n{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let text = std::fs::read_to_string(&out).unwrap();
    text.lines()
        .find_map(|l| {
            l.strip_prefix("summary:")
                .or_else(|| l.strip_prefix("totals:"))
        })
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("no total in {}", out.display()))
}

/// The child: `messages` messages through `scenario`, on one thread.
fn child(scenario: &str, messages: u64) {
    let pipeline = SCENARIOS
        .iter()
        .find(|(name, _)| *name == scenario)
        .map(|(_, pipeline)| *pipeline)
        .unwrap_or_else(|| panic!("no scenario {scenario}"));
    let dir = PathBuf::from(std::env::var("WEFT_GUARD_DIR").unwrap());
    std::fs::create_dir_all(&dir).unwrap();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        match scenario {
            "durable" => durable(pipeline, &dir, messages).await,
            "http_round_trip" => http_round_trip(pipeline, &dir, messages).await,
            _ => in_process(scenario, pipeline, messages).await,
        }
    });
}

fn order(n: u64) -> serde_json::Value {
    let mut order: serde_json::Value = serde_json::from_str(BODY).unwrap();
    order["country"] = ["GB", "DE", "US", "FR"][n as usize % 4].into();
    order
}

/// The flow `weft run` would build from `pipeline` between `input` and `output`.
fn spec(input: &str, pipeline: &str, output: &str, durable: bool) -> FlowSpec {
    let delivery = if durable {
        "    delivery: durable\n"
    } else {
        ""
    };
    let text = format!(
        "flows:\n  guard:\n{delivery}    input: {input}\n    pipeline:\n{pipeline}\n    output: {output}\n"
    );
    weft::load::load_str("guard.yaml", &text, &|_| None, &Shared::default())
        .unwrap_or_else(|e| panic!("{e:?}"))
        .flows
        .remove(0)
}

async fn in_process(scenario: &str, pipeline: &str, messages: u64) {
    let spec = spec("{ stdin: {} }", pipeline, "{ drop: {} }", false);
    let flow = weft::engine::assemble(spec, None).await.unwrap().flow;
    for n in 0..messages {
        let value = if scenario == "split_aggregate" {
            let parts: Vec<_> = (0..10)
                .map(|i| serde_json::json!({"sku": format!("sku-{i}"), "n": i}))
                .collect();
            serde_json::json!({"id": n, "items": parts})
        } else {
            order(n)
        };
        let value: Value = serde_json::from_value(value).unwrap();
        flow.process(Message::new(value)).await.unwrap();
    }
}

/// Accepted into the store one by one, then delivered by the flow's workers.
async fn durable(pipeline: &str, dir: &Path, messages: u64) {
    let store = weft_store::Store::open_owner(&dir.join("weft.db"), Default::default())
        .await
        .unwrap();
    let spec = spec("{ stdin: {} }", pipeline, "{ drop: {} }", true);
    let assembled = weft::engine::assemble(spec, Some(&store)).await.unwrap();
    let flow = assembled.flow;
    let queue = flow.durable().unwrap().clone();
    for n in 0..messages {
        let value: Value = serde_json::from_value(order(n)).unwrap();
        let place = queue.reserve().unwrap();
        queue.accept(place, &Message::new(value)).await.unwrap();
    }
    let stop = tokio_util::sync::CancellationToken::new();
    let workers = tokio::spawn(weft::core::durable::work(
        flow.clone(),
        assembled.workers,
        stop.clone(),
    ));
    while flow.counters().delivered < messages {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    stop.cancel();
    workers.await.unwrap();
}

/// `http_server → map → http_client`, answered after delivery, one client connection.
async fn http_round_trip(pipeline: &str, dir: &Path, messages: u64) {
    let receiver = Receiver::start().await;
    let port = free_port();
    let spec = spec(
        &format!("{{ http_server: {{ address: \"127.0.0.1:{port}\", path: /in }} }}"),
        pipeline,
        &format!("{{ http_client: {{ url: \"{}\" }} }}", receiver.url("/out")),
        false,
    );
    let mut loaded =
        weft::load::load_str("guard.yaml", "flows: {}", &|_| None, &Shared::default()).unwrap();
    loaded.flows.push(spec);
    let options = weft::engine::Options {
        admin_address: format!("127.0.0.1:{}", free_port()).parse().unwrap(),
        admin_token: None,
        admin_tls: None,
        admin_hosts: Vec::new(),
        admin_ui_actions: true,
        admin_history: 0,
        config: None,
        data_dir: dir.to_path_buf(),
        reloads: None,
        started: None,
    };
    let shutdown = tokio_util::sync::CancellationToken::new();
    let engine = tokio::spawn(weft::engine::run(loaded, options, shutdown.clone()));
    // Listening: a bare connect costs next to nothing, however often it is tried.
    while tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .is_err()
    {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let url = format!("http://127.0.0.1:{port}/in");
    let body = Bytes::from(BODY);
    for _ in 0..messages {
        let request = Request::post(&url)
            .header("content-type", "application/json")
            .body(Full::new(body.clone()))
            .unwrap();
        let response = client.request(request).await.unwrap();
        let status = response.status();
        response.into_body().collect().await.unwrap();
        assert_eq!(status, 200);
    }
    assert_eq!(receiver.seen().len() as u64, messages);
    shutdown.cancel();
    let _ = tokio::time::timeout(Duration::from_secs(10), engine).await;
}
