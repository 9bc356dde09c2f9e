//! Per-message cost of pipeline steps through weft's flow runtime (`Flow::process`, output
//! `drop`) against hand-written Rust doing the same work on `serde_json` values, in one run:
//! `map`, `filter`, `switch` and `split` + `aggregate` (scatter-gather of 10 parts).
//!
//! `cargo bench -p weft --bench pipeline`; the ratio per step is weft's time over the
//! baseline's. Each iteration handles `BATCH` messages, so per-message figures are the
//! reported time divided by `BATCH` (criterion prints elements/s).

use std::sync::Arc;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use serde_json::{Value as Json, json};
use weft::clients::Shared;
use weft::core::Message;
use weft::core::flow::{Flow, OutputSlot, ProcessorSlot};
use weft::core::mapping::Value;
use weft::core::metrics::ComponentMetrics;
use weft::outputs::Output;
use weft::processors::Processor;

/// The 303-byte order of `BENCH.md`.
const BODY: &str = r#"{"id":12345,"first":"Ada","last":"Lovelace","email":"Ada.Lovelace@Example.COM","company":"Analytical Engines Ltd","street":"12 St James's Square","city":"London","zip":"SW1Y 4JH","country":"GB","phone":"+44 20 7946 0018","tags":["vip","newsletter","early-adopter"],"notes":"first programmer; prefers email","x":1}"#;

const BATCH: usize = 100;

/// A flow of `pipeline` (YAML list items) into `drop`, built as `weft run` builds it.
fn flow(pipeline: &str) -> Flow<Processor, Output> {
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
            .map(|(id, processor)| ProcessorSlot { id, processor })
            .collect(),
        spec.outputs
            .into_iter()
            .map(|(id, output, retry)| OutputSlot {
                metrics: ComponentMetrics::new(&name, &id),
                id,
                output,
                retry,
            })
            .collect(),
        None,
        None,
    )
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

    let mut group = c.benchmark_group("pipeline");
    group.throughput(Throughput::Elements(BATCH as u64));

    let map = flow(
        "      - map: |\n          .order_id = to_string!(.id)\n          .name = string!(.first) + \" \" + string!(.last)\n          .email = downcase!(.email)",
    );
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

    // Scatter-gather: 10 parts out, each touched, all back in order.
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
    let gather = flow(
        "      - split: .items\n      - map: .seen = true\n      - aggregate: { correlate: split, period: 10s }",
    );
    group.bench_function(BenchmarkId::new("split_aggregate", "weft"), |b| {
        b.iter(|| run(&gather, &split_messages))
    });
    group.bench_function(BenchmarkId::new("split_aggregate", "baseline"), |b| {
        b.iter(|| {
            for v in &split_inputs {
                let v = v.clone();
                let items = v["items"].as_array().cloned().unwrap_or_default();
                let count = items.len();
                let mut scattered: Vec<(usize, Json)> = items
                    .into_iter()
                    .enumerate()
                    .map(|(index, mut part)| {
                        part["seen"] = true.into();
                        (index, part)
                    })
                    .collect();
                scattered.sort_by_key(|(i, _)| *i);
                let gathered: Vec<Json> = scattered.into_iter().map(|(_, p)| p).collect();
                std::hint::black_box((gathered, count));
            }
        })
    });
    group.finish();
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
