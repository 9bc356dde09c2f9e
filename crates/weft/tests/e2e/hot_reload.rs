//! Hot reload under load: a changed config file (or SIGHUP) restarts only the flows that
//! changed, an invalid one is refused while the old flows go on, and no accepted message is
//! lost.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use http::{Method, StatusCode};

use crate::support::*;

async fn flow_info(weft: &Weft, name: &str) -> serde_json::Value {
    let (status, flow) = weft
        .admin_json(Method::GET, &format!("/api/v1/flows/{name}"))
        .await;
    assert_eq!(status, StatusCode::OK, "{flow}");
    flow
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_changed_flows_restart_and_no_accepted_message_is_lost() {
    let receiver = Receiver::start().await;
    let (orders_port, extra_port) = (free_port(), free_port());
    let dir = scratch();
    let tag = dir.join("tag.txt");
    std::fs::write(&tag, "first").unwrap();
    let config = |version: u32, extra: bool| {
        let extra = if extra {
            format!(
                "  extra:\n    input: {{ http_server: {{ address: \"127.0.0.1:{extra_port}\" }} }}\n    output: {{ drop: {{}} }}\n"
            )
        } else {
            String::new()
        };
        format!(
            r#"
flows:
  orders:
    input:
      http_server: {{ address: "127.0.0.1:{orders_port}", path: /orders }}
    pipeline:
      - map: |
          .version = {version}
          .tag = "${{file:{tag}}}"
    output:
      http_client: {{ url: "{orders_url}" }}
  ticks:
    input:
      generate: {{ mapping: ".tick = true", interval: 20ms }}
    output:
      http_client: {{ url: "{ticks_url}" }}
{extra}"#,
            tag = tag.display(),
            orders_url = receiver.url("/orders"),
            ticks_url = receiver.url("/ticks"),
        )
    };
    let weft = Weft::start_in(
        dir.clone(),
        &config(1, false),
        &[],
        std::process::Stdio::null(),
    )
    .await;
    let orders_before = flow_info(&weft, "orders").await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let ticks_before = flow_info(&weft, "ticks").await;
    assert!(ticks_before["counters"]["received"].as_u64().unwrap() > 0);

    // Four senders post numbered orders until told to stop; every answer is kept.
    let stop = Arc::new(AtomicBool::new(false));
    let url = format!("http://127.0.0.1:{orders_port}/orders");
    let senders: Vec<_> = (0..4u64)
        .map(|sender| {
            let (stop, url) = (stop.clone(), url.clone());
            tokio::spawn(async move {
                let mut answers = Vec::new();
                let mut n = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let seq = sender * 1_000_000 + n;
                    let (status, _, body) = post_json(&url, &format!(r#"{{"seq": {seq}}}"#)).await;
                    answers.push((seq, status, body));
                    n += 1;
                }
                answers
            })
        })
        .collect();
    let versions_seen = |receiver: &Receiver| -> BTreeSet<(i64, String)> {
        receiver
            .seen()
            .iter()
            .filter(|s| s.path == "/orders")
            .map(|s| {
                let v = s.json();
                (
                    v["version"].as_i64().unwrap(),
                    v["tag"].as_str().unwrap().to_string(),
                )
            })
            .collect()
    };
    tokio::time::sleep(Duration::from_millis(300)).await;

    // 1. The file changes: `orders` restarts with the new mapping; `ticks` is untouched.
    std::fs::write(dir.join("flows.yaml"), config(2, false)).unwrap();
    assert!(
        eventually(Duration::from_secs(10), || versions_seen(&receiver)
            .contains(&(2, "first".into())))
        .await,
        "the new mapping never ran:\n{}",
        weft.stderr()
    );

    // 2. An invalid config is refused, logged, and the running flows go on.
    std::fs::write(
        dir.join("flows.yaml"),
        config(3, false).replace("- map:", "- mapp:"),
    )
    .unwrap();
    assert!(
        eventually(Duration::from_secs(10), || weft
            .stderr()
            .contains("config reload refused"))
        .await,
        "{}",
        weft.stderr()
    );
    assert!(
        weft.stderr().contains("did you mean `map`"),
        "{}",
        weft.stderr()
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!versions_seen(&receiver).iter().any(|(v, _)| *v == 3));

    // 3. A valid file again, with a flow more: it starts, on a port of its own.
    std::fs::write(dir.join("flows.yaml"), config(2, true)).unwrap();
    let extra = format!("http://127.0.0.1:{extra_port}/");
    let mut answered = false;
    for _ in 0..200 {
        if post_json(&extra, "{}").await.0 == StatusCode::OK {
            answered = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        answered,
        "the added flow never answered:\n{}",
        weft.stderr()
    );

    // 4. SIGHUP reads the files again, the secret file the poller does not watch included.
    std::fs::write(&tag, "second").unwrap();
    let pid = weft.child.id().to_string();
    assert!(
        std::process::Command::new("kill")
            .args(["-HUP", &pid])
            .status()
            .unwrap()
            .success()
    );
    assert!(
        eventually(Duration::from_secs(10), || versions_seen(&receiver)
            .contains(&(2, "second".into())))
        .await,
        "{}",
        weft.stderr()
    );

    tokio::time::sleep(Duration::from_millis(200)).await;
    stop.store(true, Ordering::Relaxed);
    let mut answers = Vec::new();
    for sender in senders {
        answers.extend(sender.await.unwrap());
    }
    // Every request was answered 200 through the reloads, and every one answered 200 reached
    // the receiver.
    let refused: Vec<_> = answers
        .iter()
        .filter(|(_, s, _)| *s != StatusCode::OK)
        .collect();
    assert!(
        refused.is_empty(),
        "{} of {} refused, e.g. {:?}",
        refused.len(),
        answers.len(),
        refused.first()
    );
    assert!(answers.len() > 100, "too little load: {}", answers.len());
    let delivered: BTreeSet<u64> = receiver
        .seen()
        .iter()
        .filter(|s| s.path == "/orders")
        .map(|s| s.json()["seq"].as_u64().unwrap())
        .collect();
    let lost: Vec<u64> = answers
        .iter()
        .map(|(seq, ..)| *seq)
        .filter(|seq| !delivered.contains(seq))
        .collect();
    assert!(
        lost.is_empty(),
        "{} accepted orders never delivered: {lost:?}",
        lost.len()
    );

    // `orders` is a new flow; `ticks` ran all along: same start, its counters kept counting.
    let orders_after = flow_info(&weft, "orders").await;
    assert_ne!(orders_after["started_at"], orders_before["started_at"]);
    let ticks_after = flow_info(&weft, "ticks").await;
    assert_eq!(ticks_after["started_at"], ticks_before["started_at"]);
    assert!(
        ticks_after["counters"]["received"].as_u64()
            > ticks_before["counters"]["received"].as_u64(),
        "{ticks_before} → {ticks_after}"
    );
    let stderr = weft.stderr();
    assert!(stderr.contains("config reloaded"), "{stderr}");
    let (status, _, _) = request(
        Method::GET,
        &format!("http://{}/api/v1/flows/extra", weft.admin),
        None,
        "",
    )
    .await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_that_cannot_serve_keeps_the_old_flow_and_a_changed_flow_stays_paused() {
    let (port, taken) = (
        free_port(),
        std::net::TcpListener::bind("127.0.0.1:0").unwrap(),
    );
    let taken_port = taken.local_addr().unwrap().port();
    let config = |port: u16, step: &str| {
        format!(
            "flows:\n  hooks:\n    input: {{ http_server: {{ address: \"127.0.0.1:{port}\" }} }}\n    pipeline: [ {{ map: '{step}' }} ]\n    output: {{ drop: {{}} }}\n"
        )
    };
    let dir = scratch();
    let weft = Weft::start_in(
        dir.clone(),
        &config(port, ".a = 1"),
        &[],
        std::process::Stdio::null(),
    )
    .await;
    let url = format!("http://127.0.0.1:{port}/");
    let api = format!("http://{}/api/v1/flows/hooks", weft.admin);
    request(Method::POST, &format!("{api}/pause"), None, "").await;

    // Moving to a port another process holds: the old version goes on where it was.
    std::fs::write(dir.join("flows.yaml"), config(taken_port, ".a = 1")).unwrap();
    assert!(
        eventually(Duration::from_secs(10), || weft
            .stderr()
            .contains("flow not reloaded"))
        .await,
        "{}",
        weft.stderr()
    );
    let (status, _, body) = post_json(&url, "{}").await;
    assert_eq!(
        status,
        StatusCode::SERVICE_UNAVAILABLE,
        "still paused, still here: {body}"
    );

    // A change it can serve: the new version starts paused, as the old one was.
    let started_before = flow_info(&weft, "hooks").await["started_at"].clone();
    std::fs::write(dir.join("flows.yaml"), config(port, ".a = 2")).unwrap();
    let mut restarted = false;
    for _ in 0..200 {
        if flow_info(&weft, "hooks").await["started_at"] != started_before {
            restarted = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(restarted, "{}", weft.stderr());
    assert_eq!(flow_info(&weft, "hooks").await["state"], "paused");
    assert_eq!(
        post_json(&url, "{}").await.0,
        StatusCode::SERVICE_UNAVAILABLE
    );
    request(Method::POST, &format!("{api}/resume"), None, "").await;
    assert_eq!(post_json(&url, "{}").await.0, StatusCode::OK);
    drop(taken);
}
