//! The store's group commit as durable intake and delivery use it: each iteration enqueues
//! `BATCH` messages from concurrent tasks (they share commits), claims them and acks each,
//! on a SQLite file in `durability: process` mode. Compare commits by running the same file
//! on both (`cargo bench -p weft-store --bench commit`); an iteration is `BATCH` messages.
//! 2026-12-03, three alternating runs each on an idle 2-core VM: 4.02 ms per 256 messages
//! (≈ 15.7 µs each) before the writer checked SQLite's transaction state itself, 4.06 ms
//! after (medians; 1.01×, within the runs' spread of ±10 %).

use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use weft_store::{Durability, Store};

const BATCH: usize = 256;
/// About the size of the 303-byte order of `BENCH.md`, with its `j` tag.
const PAYLOAD: &[u8] = &[b'x'; 304];

fn commit(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let dir = std::env::temp_dir().join(format!("weft-store-bench-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let store = runtime
        .block_on(Store::open_owner(&dir.join("weft.db"), Durability::Process))
        .unwrap();
    let mut group = c.benchmark_group("store");
    group.throughput(Throughput::Elements(BATCH as u64));
    group.bench_function("enqueue_claim_ack", |b| {
        b.iter(|| {
            runtime.block_on(async {
                let tasks: Vec<_> = (0..BATCH)
                    .map(|i| {
                        let store = store.clone();
                        tokio::spawn(async move {
                            let id = i.to_string();
                            store
                                .enqueue("f", &id, PAYLOAD, b"{}", None, 1)
                                .await
                                .unwrap()
                        })
                    })
                    .collect();
                for t in tasks {
                    t.await.unwrap();
                }
                let claimed = store
                    .claim("f", 2, BATCH as u32, Duration::from_secs(60))
                    .await
                    .unwrap();
                let acks: Vec<_> = claimed
                    .into_iter()
                    .map(|q| {
                        let store = store.clone();
                        tokio::spawn(async move { store.ack(q.seq).await.unwrap() })
                    })
                    .collect();
                for a in acks {
                    assert!(a.await.unwrap());
                }
            })
        })
    });
    group.finish();
}

criterion_group!(benches, commit);
criterion_main!(benches);
