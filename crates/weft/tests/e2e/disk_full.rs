//! Durable flows on a disk that fills up, through the real binary: while the store cannot
//! write, intake answers 503 (never a 202 for a message it did not store), `/health` and
//! `/metrics` say so, and dead-letter moves, retry schedules and checkpoints wait; once space
//! returns weft writes again without a restart; after a SIGKILL every message answered 202 is
//! delivered (or dead-lettered, as its flow says), and every row a poller read is delivered.

use std::collections::BTreeSet;
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use http::Method;
use sqlx::Connection;

use crate::support::*;

/// Posts `{"seq": n, "pad": …}` to `url` until `stop`; returns the seqs answered 202 and the
/// statuses seen.
fn client(
    url: String,
    base: i64,
    stop: Arc<AtomicBool>,
) -> tokio::task::JoinHandle<(Vec<i64>, Vec<u16>)> {
    tokio::spawn(async move {
        let pad = "x".repeat(2_000);
        let (mut accepted, mut statuses) = (Vec::new(), Vec::new());
        let mut seq = base;
        while !stop.load(Ordering::Relaxed) {
            let (status, _, _) =
                post_json(&url, &format!(r#"{{"seq": {seq}, "pad": "{pad}"}}"#)).await;
            if status == 202 {
                accepted.push(seq);
            }
            statuses.push(status.as_u16());
            seq += 1;
            if status != 202 {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
        (accepted, statuses)
    })
}

fn seqs(seen: &[Seen]) -> BTreeSet<i64> {
    seen.iter()
        .filter(|s| (200..300).contains(&s.status))
        .filter_map(|s| s.json()["seq"].as_i64())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_gets_503s_not_lost_messages_and_weft_resumes_when_space_returns() {
    let dir = scratch();
    let Some(disk) = TinyFs::mount(&dir.join("data"), "32m") else {
        return;
    };
    let orders = Receiver::start().await;
    orders.set_default(Reply::status(503));
    let rejects = Receiver::start().await;
    rejects.set_default(Reply::status(400));
    let rows = Receiver::start().await;
    let source = dir.join("source.db");
    let source_url = format!("sqlite://{}?mode=rwc", source.display());
    let mut db = sqlx::SqliteConnection::connect(&source_url).await.unwrap();
    sqlx::raw_sql("CREATE TABLE items (id INTEGER PRIMARY KEY, pad TEXT NOT NULL)")
        .execute(&mut db)
        .await
        .unwrap();
    let (orders_port, rejects_port) = (free_port(), free_port());
    let retry =
        "{ max_attempts: 10000, initial_backoff: 50ms, max_backoff: 200ms, max_elapsed: 1h }";
    let config = format!(
        r#"
# Off, so the disk really fills: the floor that keeps it from filling is tested below.
disk_free_limit: 0B
resources:
  sql:
    source: {{ url: "{source_url}" }}
flows:
  orders:
    delivery: durable
    input:
      http_server: {{ address: "127.0.0.1:{orders_port}" }}
    output:
      http_client: {{ url: "{orders_url}", timeout: 500ms, retry: {retry} }}
  rejects:
    delivery: durable
    input:
      http_server: {{ address: "127.0.0.1:{rejects_port}" }}
    output:
      http_client: {{ url: "{rejects_url}", timeout: 500ms }}
  rows:
    delivery: durable
    input:
      sql_poll:
        database: source
        query: SELECT id, pad FROM items WHERE id > ? ORDER BY id LIMIT 50
        watermark: {{ columns: [id], initial: [0] }}
        interval: 50ms
    output:
      http_client: {{ url: "{rows_url}", timeout: 500ms, retry: {retry} }}
"#,
        orders_url = orders.url("/orders"),
        rejects_url = rejects.url("/rejects"),
        rows_url = rows.url("/rows"),
    );
    let mut weft = Weft::start_in(dir.clone(), &config, &[], Stdio::null()).await;

    // Load on both endpoints, and rows for the poller, the whole time.
    let stop = Arc::new(AtomicBool::new(false));
    let mut clients = Vec::new();
    for c in 0..3 {
        let url = format!("http://127.0.0.1:{orders_port}/");
        clients.push(client(url, c * 1_000_000, stop.clone()));
    }
    let reject_client = client(
        format!("http://127.0.0.1:{rejects_port}/"),
        9_000_000,
        stop.clone(),
    );
    let inserter = {
        let stop = stop.clone();
        tokio::spawn(async move {
            let mut id = 0i64;
            while !stop.load(Ordering::Relaxed) {
                for _ in 0..5 {
                    id += 1;
                    sqlx::query("INSERT INTO items (id, pad) VALUES (?, ?)")
                        .bind(id)
                        .bind("y".repeat(1_000))
                        .execute(&mut db)
                        .await
                        .unwrap();
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            id
        })
    };

    tokio::time::sleep(Duration::from_millis(500)).await;
    disk.fill(256 * 1024);
    // The disk fills: the store says so, on /health and /metrics.
    let mut failing = serde_json::Value::Null;
    for _ in 0..200 {
        let (status, body) = weft.admin_json(Method::GET, "/health").await;
        if status == 503 {
            failing = body;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        failing["store"]["cause"],
        "disk full",
        "health never reported the full disk: {failing}\n{}",
        weft.stderr()
    );
    assert!(
        failing["store"]["advice"]
            .as_str()
            .unwrap()
            .contains("free space"),
        "{failing}"
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    let metrics = weft.metrics().await;
    assert!(metrics.contains("weft_store_writable 0"), "{metrics}");
    let failures: u64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("weft_store_commit_failures_total "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    assert!(failures > 0, "{metrics}");

    // Space returns: weft writes again without a restart.
    disk.free();
    let mut recovered = false;
    for _ in 0..100 {
        if weft.admin_json(Method::GET, "/health").await.0 == 200 {
            recovered = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(recovered, "health did not recover: {}", weft.stderr());
    tokio::time::sleep(Duration::from_secs(1)).await;
    stop.store(true, Ordering::Relaxed);
    let mut accepted = BTreeSet::new();
    let mut statuses = Vec::new();
    for c in clients {
        let (ok, seen) = c.await.unwrap();
        accepted.extend(ok);
        statuses.extend(seen);
    }
    let (rejected_ok, reject_statuses) = reject_client.await.unwrap();
    let inserted = inserter.await.unwrap();
    // While full: 503s; around it: 202s (and nothing else).
    let refused = statuses.iter().filter(|s| **s == 503).count();
    assert!(
        refused > 0,
        "no request was refused while the disk was full"
    );
    assert!(
        statuses
            .iter()
            .chain(&reject_statuses)
            .all(|s| *s == 202 || *s == 503),
        "{:?}",
        statuses
            .iter()
            .filter(|s| **s != 202 && **s != 503)
            .collect::<Vec<_>>()
    );
    let tail = &statuses[statuses.len().saturating_sub(20)..];
    assert!(
        tail.contains(&202),
        "no 202 after space returned: {tail:?}\n{}",
        weft.stderr()
    );

    // No drain, no goodbye: every 202 must be in the store.
    weft.kill();
    orders.set_default(Reply::status(200));
    let weft = Weft::start_in(dir.clone(), &config, &[], Stdio::null()).await;
    let all = |receiver: &Receiver, want: &BTreeSet<i64>| want.is_subset(&seqs(&receiver.seen()));
    assert!(
        eventually(Duration::from_secs(60), || all(&orders, &accepted)).await,
        "accepted but not delivered: {:?}\n{}",
        accepted
            .difference(&seqs(&orders.seen()))
            .collect::<Vec<_>>(),
        weft.stderr()
    );
    let rows_wanted: BTreeSet<i64> = (1..=inserted).collect();
    let row_ids = || -> BTreeSet<i64> {
        rows.seen()
            .iter()
            .filter_map(|s| s.json()["id"].as_i64())
            .collect()
    };
    assert!(
        eventually(Duration::from_secs(60), || rows_wanted
            .is_subset(&row_ids()))
        .await,
        "rows read but never delivered: {:?}",
        rows_wanted.difference(&row_ids()).collect::<Vec<_>>()
    );
    // Every accepted reject was dead-lettered: none lost between the failed moves.
    let mut dead = BTreeSet::new();
    for _ in 0..200 {
        let (_, body) = weft
            .admin_json(Method::GET, "/api/v1/dlq?flow=rejects&limit=100000")
            .await;
        // (The stored form may show through: `j` + the JSON.)
        dead = body
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|d| {
                let message = &d["message"];
                message["seq"].as_i64().or_else(|| {
                    serde_json::from_str::<serde_json::Value>(
                        message.as_str()?.trim_start_matches('j'),
                    )
                    .ok()?["seq"]
                        .as_i64()
                })
            })
            .collect();
        if rejected_ok.iter().all(|s| dead.contains(s)) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let missing: Vec<_> = rejected_ok.iter().filter(|s| !dead.contains(s)).collect();
    assert!(
        missing.is_empty(),
        "accepted rejects neither delivered nor dead-lettered: {missing:?}"
    );
    eprintln!(
        "disk-full test: {} orders accepted, {refused} refused with 503 ({failures} failed commits); {} rejects dead-lettered; {inserted} rows",
        accepted.len(),
        rejected_ok.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_queue_that_fills_the_disk_stops_intake_at_the_floor_and_drains_by_itself() {
    let dir = scratch();
    let Some(_disk) = TinyFs::mount(&dir.join("data"), "16m") else {
        return;
    };
    let receiver = Receiver::start().await;
    receiver.set_default(Reply::status(503));
    let port = free_port();
    // The default floor: 5 % of 16 MiB.
    let config = format!(
        r#"
flows:
  orders:
    delivery: durable
    input:
      http_server: {{ address: "127.0.0.1:{port}" }}
    output:
      http_client: {{ url: "{url}", timeout: 500ms, retry: {{ initial_backoff: 50ms, max_backoff: 200ms }} }}
"#,
        url = receiver.url("/in")
    );
    let weft = Weft::start_in(dir.clone(), &config, &[], Stdio::null()).await;
    let url = format!("http://127.0.0.1:{port}/");
    let pad = "x".repeat(32 * 1024);
    let mut accepted = BTreeSet::new();
    let mut refused = 0;
    let mut health = serde_json::Value::Null;
    // The receiver is down: the queue grows until the floor stops intake.
    for seq in 0..3_000i64 {
        let (status, _, body) =
            post_json(&url, &format!(r#"{{"seq": {seq}, "pad": "{pad}"}}"#)).await;
        match status.as_u16() {
            202 => {
                accepted.insert(seq);
            }
            503 => refused += 1,
            other => panic!("{other}: {body}"),
        }
        if refused > 0 && seq % 10 == 0 {
            let (status, body) = weft.admin_json(Method::GET, "/health").await;
            if status == 503 {
                health = body;
                break;
            }
        }
    }
    assert!(
        refused > 0,
        "the floor never stopped intake ({} accepted)",
        accepted.len()
    );
    assert!(accepted.len() > 100, "{} accepted", accepted.len());
    assert_eq!(health["store"]["cause"], "disk nearly full", "{health}");
    assert!(weft.metrics().await.contains("weft_store_low_space 1"));
    // Nothing failed to commit: the floor came first.
    assert!(
        !weft.stderr().contains("store cannot write"),
        "{}",
        weft.stderr()
    );

    // The receiver is back: delivery drains the queue, which frees room in the store, and
    // intake resumes with nobody freeing anything.
    receiver.set_default(Reply::status(200));
    let mut resumed = false;
    for _ in 0..300 {
        let (status, _, _) = post_json(&url, r#"{"seq": -1}"#).await;
        if status == 202 {
            resumed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(resumed, "intake did not resume: {}", weft.stderr());
    let delivered = || seqs(&receiver.seen());
    assert!(
        eventually(Duration::from_secs(30), || accepted.is_subset(&delivered())).await,
        "{} of {} delivered",
        delivered().len(),
        accepted.len()
    );
    assert_eq!(weft.admin_json(Method::GET, "/health").await.0, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn weft_refuses_to_start_on_a_store_it_cannot_write() {
    let dir = scratch();
    let Some(disk) = TinyFs::mount(&dir.join("data"), "1m") else {
        return;
    };
    let config = format!(
        r#"
flows:
  orders:
    delivery: durable
    input:
      http_server: {{ address: "127.0.0.1:{port}" }}
    output:
      drop: {{}}
"#,
        port = free_port()
    );
    let first = Weft::start_in(dir.clone(), &config, &[], Stdio::null()).await;
    first.terminate();
    drop(first);
    disk.fill(0);
    let mut weft = Weft::spawn_in(dir.clone(), &config, &[], Stdio::null());
    let status = weft.wait(Duration::from_secs(20)).await;
    assert!(!status.success());
    let stderr = weft.stderr();
    assert!(stderr.contains("cannot be written (disk full"), "{stderr}");
}
