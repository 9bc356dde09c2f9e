//! Per-message cost of pipeline steps through weft's flow runtime (`Flow::process`, output
//! `drop`) against hand-written Rust doing the same work on `serde_json` values, in one run:
//! `map`, `filter`, `switch` and `split` + `aggregate` (scatter-gather of 10 parts).
//!
//! `cargo bench -p weft --bench pipeline`; the ratio per step is weft's time over the
//! baseline's. Each iteration handles `BATCH` messages, so per-message figures are the
//! reported time divided by `BATCH` (criterion prints elements/s).
//!
//! `map` and `split_aggregate` start from values already in memory: the step alone. Their
//! `_json` twins take the 303-byte JSON body in and serialize what comes out, as an input and
//! an output do, on both sides: the per-message work of a pipeline, measured the way
//! `BENCH.md` compares mapping engines (JSON in, JSON out).
//!
//! Both sides allocate with mimalloc, the allocator the `weft` binary ships with: measured on
//! the system allocator, a third of either side's instructions were glibc's `malloc`/`free`.

use std::sync::Arc;

use bytes::Bytes;
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use serde_json::{Value as Json, json};
use weft::clients::Shared;
use weft::core::Message;
use weft::core::body::decode;
use weft::core::flow::{Flow, OutputSlot, ProcessorSlot};
use weft::core::mapping::Value;
use weft::core::metrics::ComponentMetrics;
use weft::outputs::Output;
use weft::processors::Processor;

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// The 303-byte order of `BENCH.md`.
const BODY: &str = r#"{"id":12345,"first":"Ada","last":"Lovelace","email":"Ada.Lovelace@Example.COM","company":"Analytical Engines Ltd","street":"12 St James's Square","city":"London","zip":"SW1Y 4JH","country":"GB","phone":"+44 20 7946 0018","tags":["vip","newsletter","early-adopter"],"notes":"first programmer; prefers email","x":1}"#;

const BATCH: usize = 100;

/// Scatter-gather: 10 parts out, each touched, all back in order.
const SCATTER_GATHER: &str = "      - split: .items\n      - map: .seen = true\n      - aggregate: { correlate: split, period: 10s }";

/// `BENCH.md`'s mapping, as a pipeline.
const MAPPING: &str = "      - map: |\n          .order_id = to_string!(.id)\n          .name = string!(.first) + \" \" + string!(.last)\n          .email = downcase!(.email)";

/// A flow of `pipeline` (YAML list items) into `drop`, built as `weft run` builds it.
fn flow(pipeline: &str) -> Flow<Processor, Output> {
    build(pipeline, |output| output)
}

/// The same flow into an output that serializes each message as a sending output would.
fn json_flow(pipeline: &str) -> Flow<Processor, Serialize> {
    build(pipeline, |_| Serialize)
}

fn build<O: weft::core::Output>(
    pipeline: &str,
    output: impl Fn(Output) -> O,
) -> Flow<Processor, O> {
    let text = format!(
        "flows:\n  bench:\n    input: {{ stdin: {{}} }}\n    pipeline:\n{pipeline}\n    output: {{ drop: {{}} }}\n"
    );
    let loaded = weft::load::load_str("bench.yaml", &text, &|_| None, &Shared::default())
        .unwrap_or_else(|e| panic!("{e:?}"));
    let spec = loaded.flows.into_iter().next().expect("one flow");
    let name: Arc<str> = "bench".into();
    Flow::new(
        name.clone(),
        "input.stdin",
        4096,
        spec.processors
            .into_iter()
            .map(|(id, processor)| ProcessorSlot::new(id, processor))
            .collect(),
        spec.outputs
            .into_iter()
            .map(|(id, out, retry)| {
                let metrics = ComponentMetrics::new(&name, &id);
                OutputSlot::new(id, output(out), retry, metrics)
            })
            .collect(),
        None,
        None,
    )
}

/// Serializes the message it is given (`Message::body`, what `http_client` sends) and drops it.
struct Serialize;

impl weft::core::Output for Serialize {
    async fn send(&self, message: &Message) -> weft::core::Attempt {
        std::hint::black_box(message.body());
        weft::core::Attempt::Delivered
    }

    fn reads_metadata(&self) -> bool {
        false
    }
}

fn order(country: &str) -> Json {
    let mut v: Json = serde_json::from_str(BODY).unwrap();
    v["country"] = country.into();
    v
}

fn text(v: &Json, k: &str) -> String {
    v[k].as_str().unwrap_or_default().to_string()
}

/// `BENCH.md`'s mapping, by hand.
fn map_by_hand(v: &mut Json) {
    let order_id = v["id"].to_string();
    let name = format!("{} {}", text(v, "first"), text(v, "last"));
    let email = text(v, "email").to_lowercase();
    v["order_id"] = order_id.into();
    v["name"] = name.into();
    v["email"] = email.into();
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let countries = ["GB", "DE", "US", "FR"];
    let inputs: Vec<Json> = (0..BATCH).map(|i| order(countries[i % 4])).collect();
    let messages: Vec<Value> = inputs
        .iter()
        .map(|j| serde_json::from_value(j.clone()).unwrap())
        .collect();
    let run = |flow: &Flow<Processor, Output>, values: &[Value]| {
        rt.block_on(async {
            for v in values {
                std::hint::black_box(flow.process(Message::new(v.clone())).await.is_ok());
            }
        })
    };

    // As an input does: the body decoded as its content type says, straight into a value.
    let run_json = |flow: &Flow<Processor, Serialize>, bodies: &[Bytes]| {
        rt.block_on(async {
            for body in bodies {
                let value = decode(Some("application/json"), body.clone()).unwrap();
                std::hint::black_box(flow.process(Message::new(value)).await.is_ok());
            }
        })
    };

    let mut group = c.benchmark_group("pipeline");
    group.throughput(Throughput::Elements(BATCH as u64));

    let map = flow(MAPPING);
    group.bench_function(BenchmarkId::new("map", "weft"), |b| {
        b.iter(|| run(&map, &messages))
    });
    group.bench_function(BenchmarkId::new("map", "baseline"), |b| {
        b.iter(|| {
            for v in &inputs {
                let mut v = v.clone();
                map_by_hand(&mut v);
                std::hint::black_box(v);
            }
        })
    });

    let bodies: Vec<Bytes> = inputs
        .iter()
        .map(|j| Bytes::from(serde_json::to_vec(j).unwrap()))
        .collect();
    let map_json = json_flow(MAPPING);
    group.bench_function(BenchmarkId::new("map_json", "weft"), |b| {
        b.iter(|| run_json(&map_json, &bodies))
    });
    group.bench_function(BenchmarkId::new("map_json", "baseline"), |b| {
        b.iter(|| {
            for body in &bodies {
                let mut v: Json = serde_json::from_slice(body).unwrap();
                map_by_hand(&mut v);
                std::hint::black_box(serde_json::to_vec(&v).unwrap());
            }
        })
    });

    let filter = flow("      - filter: .country == \"GB\"");
    group.bench_function(BenchmarkId::new("filter", "weft"), |b| {
        b.iter(|| run(&filter, &messages))
    });
    group.bench_function(BenchmarkId::new("filter", "baseline"), |b| {
        b.iter(|| {
            for v in &inputs {
                let v = v.clone();
                std::hint::black_box((v["country"] == "GB").then_some(v));
            }
        })
    });

    let switch = flow(
        "      - switch:\n          - check: .country == \"DE\"\n            processors: [ { map: .region = \"eu\" } ]\n          - check: .country == \"US\"\n            processors: [ { map: .region = \"us\" } ]\n          - processors: [ { map: .region = \"other\" } ]",
    );
    group.bench_function(BenchmarkId::new("switch", "weft"), |b| {
        b.iter(|| run(&switch, &messages))
    });
    group.bench_function(BenchmarkId::new("switch", "baseline"), |b| {
        b.iter(|| {
            for v in &inputs {
                let mut v = v.clone();
                let region = match v["country"].as_str() {
                    Some("DE") => "eu",
                    Some("US") => "us",
                    _ => "other",
                };
                v["region"] = region.into();
                std::hint::black_box(v);
            }
        })
    });

    let parts: Vec<Json> = (0..10)
        .map(|i| json!({"sku": format!("sku-{i}"), "n": i}))
        .collect();
    let split_inputs: Vec<Json> = (0..BATCH)
        .map(|i| json!({"id": i, "items": parts}))
        .collect();
    let split_messages: Vec<Value> = split_inputs
        .iter()
        .map(|j| serde_json::from_value(j.clone()).unwrap())
        .collect();
    let gather = flow(SCATTER_GATHER);
    group.bench_function(BenchmarkId::new("split_aggregate", "weft"), |b| {
        b.iter(|| run(&gather, &split_messages))
    });
    group.bench_function(BenchmarkId::new("split_aggregate", "baseline"), |b| {
        b.iter(|| {
            for v in &split_inputs {
                std::hint::black_box(scatter_gather(v.clone()));
            }
        })
    });
    let split_bodies: Vec<Bytes> = split_inputs
        .iter()
        .map(|j| Bytes::from(serde_json::to_vec(j).unwrap()))
        .collect();
    let gather_json = json_flow(SCATTER_GATHER);
    group.bench_function(BenchmarkId::new("split_aggregate_json", "weft"), |b| {
        b.iter(|| run_json(&gather_json, &split_bodies))
    });
    group.bench_function(BenchmarkId::new("split_aggregate_json", "baseline"), |b| {
        b.iter(|| {
            for body in &split_bodies {
                let v: Json = serde_json::from_slice(body).unwrap();
                std::hint::black_box(serde_json::to_vec(&scatter_gather(v)).unwrap());
            }
        })
    });
    group.finish();
}

/// The scatter-gather by hand: every item touched, all back in their order.
fn scatter_gather(mut v: Json) -> Json {
    let items = match v["items"].take() {
        Json::Array(items) => items,
        _ => Vec::new(),
    };
    let mut scattered: Vec<(usize, Json)> = items
        .into_iter()
        .enumerate()
        .map(|(index, mut part)| {
            part["seen"] = true.into();
            (index, part)
        })
        .collect();
    scattered.sort_by_key(|(i, _)| *i);
    Json::Array(scattered.into_iter().map(|(_, p)| p).collect())
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(20)
        .warm_up_time(std::time::Duration::from_millis(500))
        .measurement_time(std::time::Duration::from_secs(2));
    targets = bench
}
criterion_main!(benches);
