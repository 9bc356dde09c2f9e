//! Several `weft run` nodes on one NATS JetStream server of the test's own: a poller runs on
//! one node at a time, moves within the lease time when its node is SIGKILLed, and goes on
//! from the watermark the dead node saved; `weft cluster status` shows who runs what.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::response::IntoResponse;
use http::Request;

use crate::support::*;

/// A changes API: records `n` = 1, 2, … (their `updated_at` is `n`), two per page after
/// `since`; each request is kept with the node that made it (`node=` in its query).
#[derive(Clone, Default)]
struct Changes {
    records: Arc<Mutex<u64>>,
    requests: Arc<Mutex<Vec<(Instant, String, u64)>>>,
}

impl Changes {
    async fn start() -> (Changes, String) {
        let api = Changes::default();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let a = api.clone();
        let app = Router::new().fallback(move |request: Request<Body>| {
            let a = a.clone();
            async move {
                let query: HashMap<String, String> = request
                    .uri()
                    .query()
                    .map(|q| form_urlencoded::parse(q.as_bytes()).into_owned().collect())
                    .unwrap_or_default();
                let since: u64 = query["since"].parse().unwrap();
                a.requests
                    .lock()
                    .unwrap()
                    .push((Instant::now(), query["node"].clone(), since));
                let last = *a.records.lock().unwrap();
                let rows: Vec<_> = (since + 1..=last)
                    .take(2)
                    .map(|n| serde_json::json!({"id": n, "updated_at": n}))
                    .collect();
                (
                    [("content-type", "application/json")],
                    serde_json::json!({ "rows": rows }).to_string(),
                )
                    .into_response()
            }
        });
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        (api, base)
    }

    /// The nodes that polled in the last `window`.
    fn pollers(&self, window: Duration) -> HashSet<String> {
        let now = Instant::now();
        self.requests
            .lock()
            .unwrap()
            .iter()
            .filter(|(at, ..)| now.duration_since(*at) < window)
            .map(|(_, node, _)| node.clone())
            .collect()
    }
}

fn config(nats: &str, api: &str, receiver: &str) -> String {
    format!(
        r#"
cluster:
  nats: {{ url: "{nats}" }}
  name: poll_test
  lease_ttl: 2s
flows:
  poll:
    concurrency: 1
    input:
      http_poll:
        url: "{api}/changes?node=${{NODE}}&since={{{{ %watermark }}}}"
        interval: 200ms
        records: .rows
        pagination: {{ next_url: 'if length!(.rows) == 0 {{ null }} else {{ "?node=${{NODE}}&since=" + to_string!(.rows[-1].updated_at) }}' }}
        watermark: {{ value: .updated_at, initial: 0 }}
    output:
      http_client: {{ url: "{receiver}" }}
"#
    )
}

/// `weft cluster status --json` of cluster `name` on the NATS at `url`.
fn cluster_status(url: &str, name: &str) -> serde_json::Value {
    let (status, out, err) = weft_cmd(
        &["cluster", "status", "--nats", url, "--name", name, "--json"],
        &scratch(),
    );
    assert!(status.success(), "{err}");
    serde_json::from_str(&out).unwrap()
}

async fn node(config: &str, name: &str) -> Weft {
    Weft::start_with(
        config,
        &[("NODE", name), ("WEFT_NODE", name)],
        Stdio::null(),
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_poller_runs_on_one_node_and_moves_with_its_watermark_when_that_node_dies() {
    a_poller_moves_when_its_node_dies(true).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_on_a_current_nats_server() {
    a_poller_moves_when_its_node_dies(false).await
}

async fn a_poller_moves_when_its_node_dies(debian: bool) {
    let Some(nats) = NatsServer::start(debian).await else {
        return;
    };
    let (api, base) = Changes::start().await;
    let receiver = Receiver::start().await;
    let config = config(&nats.url, &base, &receiver.url("/in"));
    // New records all along: 25 a second.
    let appending = Arc::new(AtomicBool::new(true));
    tokio::spawn({
        let (records, appending) = (api.records.clone(), appending.clone());
        async move {
            while appending.load(Ordering::Relaxed) {
                *records.lock().unwrap() += 1;
                tokio::time::sleep(Duration::from_millis(40)).await;
            }
        }
    });
    let mut nodes = BTreeMap::new();
    for name in ["n1", "n2", "n3"] {
        nodes.insert(name.to_string(), node(&config, name).await);
    }
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let pollers = api.pollers(Duration::from_millis(1500));
    assert_eq!(pollers.len(), 1, "one node polls: {pollers:?}");
    let leader = pollers.into_iter().next().unwrap();
    for (name, node) in &nodes {
        let held = if *name == leader { 1 } else { 0 };
        node.metric_eventually(&format!("weft_cluster_lease_held{{flow=\"poll\"}} {held}"))
            .await
            .unwrap_or_else(|m| panic!("{name}: {m}"));
        node.metric_eventually("weft_cluster_nodes 3")
            .await
            .unwrap_or_else(|m| panic!("{name}: {m}"));
    }

    let shown = cluster_status(&nats.url, "poll_test");
    let out = shown.to_string();
    let names: Vec<&str> = shown["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["node"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["n1", "n2", "n3"], "{out}");
    assert_eq!(
        shown["leases"],
        serde_json::json!([["input.poll", leader]]),
        "{out}"
    );

    // Every node's admin API tells the same.
    for (name, node) in &nodes {
        let (status, shown) = node.admin_json(http::Method::GET, "/api/v1/cluster").await;
        assert_eq!(status, http::StatusCode::OK, "{shown}");
        assert_eq!(shown["node"], name.as_str());
        let runs: Vec<(String, serde_json::Value)> = shown["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|n| (n["node"].as_str().unwrap().to_string(), n["runs"].clone()))
            .collect();
        let want: Vec<(String, serde_json::Value)> = ["n1", "n2", "n3"]
            .iter()
            .map(|n| {
                let runs = if *n == leader { vec!["poll"] } else { vec![] };
                (n.to_string(), serde_json::json!(runs))
            })
            .collect();
        assert_eq!(runs, want, "{shown}");
    }

    // SIGKILL the node that polls, three times over, the dead node coming back each time: the
    // lease is never released, it has to lapse.
    let mut leader = leader;
    let mut kills = 0;
    for round in 0..3 {
        nodes.get_mut(&leader).unwrap().kill();
        kills += 1;
        let killed = Instant::now();
        let first_after = || {
            api.requests
                .lock()
                .unwrap()
                .iter()
                .find(|(at, node, _)| *at > killed && *node != leader)
                .cloned()
        };
        assert!(
            eventually(Duration::from_secs(10), || first_after().is_some()).await,
            "round {round}: no node took the poller over: {}",
            nodes.values().map(Weft::stderr).collect::<String>()
        );
        let (at, successor, since) = first_after().unwrap();
        let takeover = at.duration_since(killed);
        eprintln!("round {round}: takeover after {takeover:?} by {successor}, from since={since}");
        // Five thirds of the lease time (2 s) at most from the kill, and slack for a loaded
        // machine.
        assert!(takeover < Duration::from_secs(5), "{takeover:?}");
        assert!(since > 0, "the new node goes on from the saved watermark");
        // The dead node comes back, and stands by.
        let dead = std::mem::replace(&mut leader, successor.clone());
        nodes.insert(dead.clone(), node(&config, &dead).await);
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let pollers = api.pollers(Duration::from_millis(1000));
        assert_eq!(
            pollers,
            HashSet::from([successor]),
            "round {round}: one node polls again"
        );
    }

    appending.store(false, Ordering::Relaxed);
    let last = *api.records.lock().unwrap();
    let delivered = || -> Vec<u64> {
        receiver
            .seen()
            .iter()
            .map(|s| s.json()["id"].as_u64().unwrap())
            .collect()
    };
    assert!(
        eventually(Duration::from_secs(10), || {
            let got: HashSet<u64> = delivered().into_iter().collect();
            (1..=last).all(|n| got.contains(&n))
        })
        .await,
        "every record delivered"
    );
    let all = delivered();
    let unique: HashSet<u64> = all.iter().copied().collect();
    let duplicates = all.len() - unique.len();
    eprintln!(
        "{} records, {} deliveries, {duplicates} duplicates",
        last,
        all.len()
    );
    // At most the page each dead node had delivered without saving its watermark yet.
    assert!(
        duplicates <= 2 * kills,
        "{duplicates} duplicates after {kills} kills"
    );

    // The watermark is the cluster's: `weft checkpoint` reads it from NATS.
    let (status, out, err) = weft_cmd(
        &[
            "checkpoint",
            "show",
            "poll",
            "--cluster",
            &nats.url,
            "--cluster-name",
            "poll_test",
        ],
        &scratch(),
    );
    assert!(status.success(), "{err}");
    let shown: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(shown["value"], serde_json::json!(last), "{out}");
}

#[tokio::test]
async fn a_bad_partition_count_and_a_bad_cluster_name_are_refused_at_their_fields() {
    let dir = scratch();
    let path = dir.join("flows.yaml");
    std::fs::write(
        &path,
        "cluster:\n  nats: { url: \"nats://127.0.0.1:4222\" }\nflows:\n  orders:\n    delivery: durable\n    ordering: { by_key: .customer, partitions: 0 }\n    input:\n      http_server: { address: \"127.0.0.1:1\", path: /orders }\n    output:\n      stdout: {}\n",
    )
    .unwrap();
    let (status, _, err) = weft_cmd(&["check", path.to_str().unwrap()], &dir);
    assert!(!status.success());
    assert!(
        err.contains("flows.yaml:6:48")
            && err.contains("field `ordering.partitions`: from 1 to 1024"),
        "{err}"
    );

    std::fs::write(
        &path,
        "cluster:\n  nats: { url: \"nats://127.0.0.1:4222\" }\n  name: \"a b\"\nflows:\n  f:\n    input:\n      generate: { mapping: \"{}\", count: 1 }\n    output:\n      drop: {}\n",
    )
    .unwrap();
    let (status, _, err) = weft_cmd(&["check", path.to_str().unwrap()], &dir);
    assert!(!status.success());
    assert!(
        err.contains("flows.yaml:3:9") && err.contains("cluster.name"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dedupe_key_taken_on_one_node_is_a_repeat_on_another() {
    let Some(nats) = NatsServer::start(true).await else {
        return;
    };
    let receiver = Receiver::start().await;
    let node = |port: u16, name: &str| {
        let config = format!(
            r#"
cluster:
  nats: {{ url: "{}" }}
  name: dedupe_test
  node: {name}
flows:
  events:
    input:
      http_server: {{ address: "127.0.0.1:{port}" }}
    pipeline:
      - dedupe: {{ key: .event_id, ttl: 1h }}
    output:
      http_client: {{ url: "{}" }}
"#,
            nats.url,
            receiver.url("/in")
        );
        async move { Weft::start(&config).await }
    };
    let (a, b) = (free_port(), free_port());
    let _first = node(a, "a").await;
    let _second = node(b, "b").await;
    let send = |port: u16, id: &str| {
        let body = format!(r#"{{"event_id": "{id}"}}"#);
        async move { post_json(&format!("http://127.0.0.1:{port}/"), &body).await }
    };
    let (status, _, body) = send(a, "e1").await;
    assert_eq!(status, 200, "{body}");
    let (status, _, body) = send(b, "e1").await;
    assert_eq!(status, 200, "{body}");
    assert!(
        body.contains(r#""filtered":true"#),
        "a repeat on node b: {body}"
    );
    let (status, _, body) = send(b, "e2").await;
    assert!(status == 200 && !body.contains("filtered"), "{body}");
    let (_, _, body) = send(a, "e2").await;
    assert!(
        body.contains(r#""filtered":true"#),
        "a repeat on node a: {body}"
    );
    let ids: Vec<String> = receiver
        .seen()
        .iter()
        .map(|s| s.json()["event_id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(ids, ["e1", "e2"], "each event delivered once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_node_keeps_to_its_share_of_a_rate_limit() {
    let Some(nats) = NatsServer::start(true).await else {
        return;
    };
    let receiver = Receiver::start().await;
    let node = |port: u16, name: &str| {
        let config = format!(
            r#"
cluster:
  nats: {{ url: "{}" }}
  name: rate_test
  node: {name}
  lease_ttl: 2s
resources:
  rate_limits:
    api: {{ requests: 2, per: 1h }}
flows:
  calls:
    input:
      http_server: {{ address: "127.0.0.1:{port}" }}
    output:
      http_client: {{ url: "{}", rate_limit: api }}
"#,
            nats.url,
            receiver.url("/in")
        );
        async move { Weft::start(&config).await }
    };
    let port = free_port();
    let first = node(port, "a").await;
    let mut second = node(free_port(), "b").await;
    assert!(
        eventually(Duration::from_secs(10), || first
            .stderr()
            .contains("2 node(s) alive"))
        .await,
        "{}",
        first.stderr()
    );
    let url = format!("http://127.0.0.1:{port}/");
    let (status, _, body) = post_json(&url, "{}").await;
    assert_eq!(status, 200, "{body}");
    // Two an hour for the cluster: one for each of its two nodes, so a second call waits.
    let waited = tokio::time::timeout(Duration::from_millis(1500), post_json(&url, "{}")).await;
    assert!(
        waited.is_err(),
        "a second call on node a waits for its slot"
    );
    assert_eq!(receiver.seen().len(), 1);

    second.kill();
    assert!(
        eventually(Duration::from_secs(10), || first
            .stderr()
            .contains("1 node(s) alive"))
        .await,
        "{}",
        first.stderr()
    );
    let (status, _, body) = post_json(&url, "{}").await;
    assert_eq!(
        status, 200,
        "alone again, node a has the whole limit: {body}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_take_turns_to_refresh_a_rotating_oauth_token_and_share_it() {
    let Some(nats) = NatsServer::start(true).await else {
        return;
    };
    // Tokens live a second; each refresh token works once; the API takes only the newest token.
    let (server, base) = crate::api_auth::OAuthServer::start(1).await;
    let node = |port: u16, name: &str| {
        let config = format!(
            r#"
cluster:
  nats: {{ url: "{}" }}
  name: oauth_test
  node: {name}
resources:
  auth:
    crm:
      oauth2:
        token_url: "{base}/token"
        client_id: weft-client
        client_secret: "s3cr/et"
        client_auth: body
        refresh_token: rt-0
flows:
  sync:
    input:
      http_server: {{ address: "127.0.0.1:{port}", errors: detailed }}
    output:
      http_client: {{ url: "{base}/api", auth: crm, retry: {{ max_attempts: 1 }} }}
"#,
            nats.url
        );
        async move { Weft::start(&config).await }
    };
    let (a, b) = (free_port(), free_port());
    let first = node(a, "a").await;
    let second = node(b, "b").await;
    let mut statuses = Vec::new();
    for i in 0..24 {
        let port = if i % 2 == 0 { a } else { b };
        let (status, _, body) = post_json(&format!("http://127.0.0.1:{port}/"), "{}").await;
        statuses.push((status.as_u16(), body));
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    let failed: Vec<_> = statuses.iter().filter(|(s, _)| *s != 200).collect();
    assert!(
        failed.is_empty(),
        "{failed:?}\n{}\n{}",
        first.stderr(),
        second.stderr()
    );
    let granted = server.grants.lock().unwrap().len();
    let asked = server.issued.load(std::sync::atomic::Ordering::SeqCst) as usize;
    assert_eq!(asked, granted, "no refresh token was used twice");
    assert!(
        granted >= 3,
        "the token was refreshed along the way: {granted}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nats_outage_stops_the_poller_and_it_resumes_from_its_watermark() {
    let Some(mut nats) = NatsServer::start(true).await else {
        return;
    };
    let (api, base) = Changes::start().await;
    let receiver = Receiver::start().await;
    let (events, other) = (free_port(), free_port());
    // Beside the poller, a webhook deduplicated by the cluster's keys.
    let config = |port: u16| {
        format!(
            "{}  events:\n    input:\n      http_server: {{ address: \"127.0.0.1:{port}\" }}\n    pipeline:\n      - dedupe: {{ key: .event_id, ttl: 1h }}\n    output:\n      drop: {{}}\n",
            config(&nats.url, &base, &receiver.url("/in"))
        )
    };
    let event = |id: &'static str| async move {
        post_json(
            &format!("http://127.0.0.1:{events}/"),
            &format!(r#"{{"event_id": "{id}"}}"#),
        )
        .await
        .0
    };
    *api.records.lock().unwrap() = 40;
    let _a = node(&config(events), "n1").await;
    let _b = node(&config(other), "n2").await;
    assert_eq!(event("e1").await, 200);
    assert!(
        eventually(Duration::from_secs(10), || receiver.seen().len() == 40).await,
        "the first 40 records"
    );

    // No node can prove it holds the lease: within two thirds of the lease time, nobody polls.
    nats.kill();
    assert!(
        eventually(Duration::from_secs(5), || api
            .pollers(Duration::from_millis(1000))
            .is_empty())
        .await,
        "polling stopped while NATS is down"
    );
    *api.records.lock().unwrap() = 60;
    // The webhook cannot check its key: 503, try again later (within NATS's request timeout).
    let asked = Instant::now();
    assert_eq!(event("e2").await, 503);
    assert!(
        asked.elapsed() < Duration::from_secs(5),
        "{:?}",
        asked.elapsed()
    );
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(api.pollers(Duration::from_millis(1500)).is_empty());

    // Back: a node polls again, from the watermark the cluster kept.
    let back = Instant::now();
    nats.restart().await;
    assert!(
        eventually(Duration::from_secs(20), || receiver.seen().len() >= 60).await,
        "polling resumed after the outage: {} delivered",
        receiver.seen().len()
    );
    let resumed = api
        .requests
        .lock()
        .unwrap()
        .iter()
        .find(|(at, ..)| *at > back)
        .cloned()
        .unwrap();
    eprintln!(
        "polling resumed {:?} after NATS came back, from since={}",
        resumed.0.duration_since(back),
        resumed.2
    );
    assert_eq!(resumed.2, 40, "from the watermark saved before the outage");
    let ids: Vec<u64> = receiver
        .seen()
        .iter()
        .map(|s| s.json()["id"].as_u64().unwrap())
        .collect();
    assert_eq!(
        ids,
        (1..=60).collect::<Vec<_>>(),
        "each record once, in order"
    );
    assert_eq!(event("e2").await, 200, "the webhook takes it now");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_finite_input_runs_once_in_the_cluster_and_a_node_with_another_lease_time_is_refused() {
    let Some(nats) = NatsServer::start(true).await else {
        return;
    };
    let receiver = Receiver::start().await;
    let config = |ttl: &str| {
        format!(
            r#"
cluster:
  nats: {{ url: "{}" }}
  name: once_test
  lease_ttl: {ttl}
flows:
  seed:
    input:
      generate: {{ mapping: '.n = 1', interval: 50ms, count: 3 }}
    output:
      http_client: {{ url: "{}" }}
"#,
            nats.url,
            receiver.url("/in")
        )
    };
    let a = Weft::spawn(&config("2s"), &[("WEFT_NODE", "a")], Stdio::null());
    let b = Weft::spawn(&config("2s"), &[("WEFT_NODE", "b")], Stdio::null());
    // Three messages, from one node; the other stands by and never runs it (not after a lease
    // time either: the lease is marked done).
    assert!(eventually(Duration::from_secs(10), || receiver.seen().len() >= 3).await);
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(receiver.seen().len(), 3, "{}\n{}", a.stderr(), b.stderr());

    let mut other = Weft::spawn(&config("5s"), &[("WEFT_NODE", "c")], Stdio::null());
    let status = other.wait(Duration::from_secs(10)).await;
    assert!(!status.success());
    assert!(
        other.stderr().contains(
            "runs with lease_ttl 2000 ms (its first node set it) and this node has 5000 ms"
        ),
        "{}",
        other.stderr()
    );
}

/// A durable flow on a node of cluster `queue_test`: accepts on `port`, delivers to `receiver`
/// with the node's name in a header.
fn durable_node(nats: &str, port: u16, receiver: &str, name: &str) -> String {
    format!(
        r#"
cluster:
  nats: {{ url: "{nats}" }}
  name: queue_test
  node: {name}
  lease_ttl: 2s
flows:
  orders:
    delivery: durable
    concurrency: 4
    input:
      http_server: {{ address: "127.0.0.1:{port}", max_body_size: 8MiB }}
    output:
      http_client:
        url: "{receiver}"
        headers: {{ x-node: {name} }}
        timeout: 500ms
        retry: {{ max_attempts: 100, initial_backoff: 50ms, max_backoff: 200ms, max_elapsed: 10m }}
"#
    )
}

/// The `seq`s the receiver took with a 2xx, each once per delivery.
fn delivered_seqs(receiver: &Receiver) -> Vec<i64> {
    receiver
        .seen()
        .iter()
        .filter(|s| (200..300).contains(&s.status))
        .filter_map(|s| serde_json::from_str::<serde_json::Value>(&s.body).ok()?["seq"].as_i64())
        .collect()
}

/// Three nodes share one durable flow's queue on JetStream while clients post to all of them
/// and one node after another is SIGKILLed and restarted: every message a node accepted is
/// delivered (by whichever node), retries of a failing receiver included.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn durable_messages_are_shared_and_none_is_lost_when_nodes_are_killed_under_load() {
    let Some(nats) = NatsServer::start(true).await else {
        return;
    };
    let receiver = Receiver::start().await;
    // Failing at first: the first messages go through retries, across kills.
    receiver.set_default(Reply::status(503));
    let ports = [free_port(), free_port(), free_port()];
    let names = ["n1", "n2", "n3"];
    let configs: Vec<String> = (0..3)
        .map(|i| durable_node(&nats.url, ports[i], &receiver.url("/in"), names[i]))
        .collect();
    let dirs: Vec<_> = (0..3).map(|_| scratch()).collect();
    let mut nodes = Vec::new();
    for i in 0..3 {
        nodes.push(Weft::start_in(dirs[i].clone(), &configs[i], &[], Stdio::null()).await);
    }
    let loading = Arc::new(AtomicBool::new(true));
    let mut clients = Vec::new();
    for c in 0..4i64 {
        let loading = loading.clone();
        clients.push(tokio::spawn(async move {
            let mut accepted = Vec::new();
            let mut i = 0i64;
            while loading.load(Ordering::Relaxed) {
                let seq = c * 1_000_000 + i;
                let port = ports[(i as usize + c as usize) % 3];
                let (status, _, _) = post_json(
                    &format!("http://127.0.0.1:{port}/"),
                    &format!(r#"{{"seq": {seq}}}"#),
                )
                .await;
                if status == 202 {
                    accepted.push(seq);
                }
                i += 1;
            }
            accepted
        }));
    }
    let mut rng = fastrand::Rng::with_seed(22);
    for round in 0..6 {
        if round == 2 {
            receiver.set_default(Reply::status(200));
        }
        tokio::time::sleep(Duration::from_millis(rng.u64(600..1500))).await;
        let victim = round % 3;
        nodes[victim].kill();
        tokio::time::sleep(Duration::from_millis(300)).await;
        nodes[victim] =
            Weft::start_in(dirs[victim].clone(), &configs[victim], &[], Stdio::null()).await;
    }
    loading.store(false, Ordering::Relaxed);
    let mut accepted = HashSet::new();
    for c in clients {
        accepted.extend(c.await.unwrap());
    }
    let all_there = eventually(Duration::from_secs(60), || {
        let delivered: HashSet<i64> = delivered_seqs(&receiver).into_iter().collect();
        accepted.is_subset(&delivered)
    })
    .await;
    let delivered = delivered_seqs(&receiver);
    let unique: HashSet<i64> = delivered.iter().copied().collect();
    let missing: Vec<_> = accepted.difference(&unique).take(20).collect();
    assert!(
        all_there,
        "{} accepted, {} never delivered (first: {missing:?})\n{}",
        accepted.len(),
        accepted.difference(&unique).count(),
        nodes[0].stderr()
    );
    assert!(accepted.len() > 100, "the load ran: {}", accepted.len());
    let by_node: HashSet<String> = receiver
        .seen()
        .iter()
        .filter_map(|s| Some(s.headers.get("x-node")?.to_str().ok()?.to_string()))
        .collect();
    assert_eq!(by_node.len(), 3, "every node delivered: {by_node:?}");
    eprintln!(
        "cluster crash test: {} accepted, {} delivered, {} duplicate deliveries, 6 kills",
        accepted.len(),
        unique.len(),
        delivered.len() - unique.len()
    );
}

/// A message given up on by one node is a dead letter every node lists, and replaying it from
/// another node's admin API delivers it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_letter_from_one_node_is_listed_and_replayed_on_another() {
    let Some(nats) = NatsServer::start(false).await else {
        return;
    };
    let receiver = Receiver::start().await;
    receiver.set_default(Reply::status(400));
    let (pa, pb) = (free_port(), free_port());
    let a = Weft::start(&durable_node(&nats.url, pa, &receiver.url("/in"), "a")).await;
    let b = Weft::start(&durable_node(&nats.url, pb, &receiver.url("/in"), "b")).await;
    let (status, _, body) = post_json(&format!("http://127.0.0.1:{pa}/"), r#"{"seq": 7}"#).await;
    assert_eq!(status, 202, "{body}");
    b.metric_eventually(r#"weft_dead_letters{flow="orders"} 1"#)
        .await
        .unwrap_or_else(|m| panic!("{m}\n{}", b.stderr()));
    let (status, list) = b
        .admin_json(http::Method::GET, "/api/v1/flows/orders/dlq")
        .await;
    assert_eq!(status, 200, "{list}");
    assert_eq!(list.as_array().unwrap().len(), 1, "{list}");
    assert_eq!(list[0]["last_status"], 400, "{list}");
    // The CLI reads the same dead letters from NATS, beside no node's data directory.
    let (status, out, err) = weft_cmd(
        &[
            "dlq",
            "list",
            "--cluster",
            &nats.url,
            "--cluster-name",
            "queue_test",
        ],
        &scratch(),
    );
    assert!(status.success(), "{err}");
    assert_eq!(out.lines().count(), 1, "{out}");
    assert!(out.contains(r#""flow":"orders""#), "{out}");
    // Where the shared queue stands, from the CLI and any node's admin API.
    let shown = cluster_status(&nats.url, "queue_test");
    let out = shown.to_string();
    assert_eq!(
        shown["queues"],
        serde_json::json!([{"flow": "orders", "waiting": 0, "in_delivery": 0, "retries": 0, "dead_letters": 1}]),
        "{out}"
    );
    let (_, info) = a.admin_json(http::Method::GET, "/api/v1/cluster").await;
    assert_eq!(info["queues"], shown["queues"], "{info}");

    receiver.set_default(Reply::status(200));
    let (status, replayed) = b
        .admin_json(http::Method::POST, "/api/v1/flows/orders/dlq/replay")
        .await;
    assert!(status.is_success(), "{replayed}");
    assert!(
        eventually(Duration::from_secs(10), || delivered_seqs(&receiver) == [7]).await,
        "replayed and delivered once: {:?}",
        receiver.seen().iter().map(|s| s.status).collect::<Vec<_>>()
    );
    a.metric_eventually(r#"weft_dead_letters{flow="orders"} 0"#)
        .await
        .unwrap();

    // A body bigger than a NATS message (1 MiB) travels through the object store, intact.
    let pad = "x".repeat(3 << 20);
    let big = format!(r#"{{"seq": 8, "pad": "{pad}"}}"#);
    let (status, _, body) = post_json(&format!("http://127.0.0.1:{pb}/"), &big).await;
    assert_eq!(status, 202, "{body}");
    assert!(
        eventually(Duration::from_secs(10), || delivered_seqs(&receiver)
            == [7, 8])
        .await,
        "the big one delivered"
    );
    let seen = receiver.seen();
    let delivered = seen.last().unwrap().json();
    assert_eq!(delivered["pad"].as_str().map(str::len), Some(3 << 20));
}

/// A flow ordered by key on two nodes: each customer's messages arrive in the order they were
/// accepted, through retries of a failing receiver and through the SIGKILL of a node mid-way.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ordering_by_key_holds_across_nodes_retries_and_a_takeover() {
    let Some(nats) = NatsServer::start(true).await else {
        return;
    };
    let receiver = Receiver::start().await;
    receiver.script(vec![Reply::status(503); 12]);
    let ports = [free_port(), free_port()];
    let config = |i: usize| {
        format!(
            r#"
cluster:
  nats: {{ url: "{}" }}
  name: order_test
  node: n{i}
  lease_ttl: 2s
flows:
  orders:
    delivery: durable
    concurrency: 8
    ordering: {{ by_key: .customer, partitions: 4 }}
    input:
      http_server: {{ address: "127.0.0.1:{}" }}
    output:
      http_client:
        url: "{}"
        timeout: 5s
        retry: {{ max_attempts: 100, initial_backoff: 50ms, max_backoff: 200ms, max_elapsed: 10m }}
"#,
            nats.url,
            ports[i],
            receiver.url("/in")
        )
    };
    let dirs = [scratch(), scratch()];
    let mut nodes = [
        Weft::start_in(dirs[0].clone(), &config(0), &[], Stdio::null()).await,
        Weft::start_in(dirs[1].clone(), &config(1), &[], Stdio::null()).await,
    ];
    let mut accepted: BTreeMap<String, Vec<i64>> = BTreeMap::new();
    for seq in 0..240i64 {
        if seq == 120 {
            nodes[0].kill();
        }
        let customer = format!("c{}", seq % 6);
        let port = if seq >= 120 {
            ports[1]
        } else {
            ports[(seq % 2) as usize]
        };
        let body = format!(r#"{{"customer": "{customer}", "seq": {seq}}}"#);
        let (status, _, body) = post_json(&format!("http://127.0.0.1:{port}/"), &body).await;
        assert_eq!(status, 202, "{body}");
        accepted.entry(customer).or_default().push(seq);
        if seq % 20 == 0 {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    nodes[0] = Weft::start_in(dirs[0].clone(), &config(0), &[], Stdio::null()).await;
    let total: usize = accepted.values().map(Vec::len).sum();
    let delivered_by_customer = || {
        let mut by: BTreeMap<String, Vec<i64>> = BTreeMap::new();
        for s in receiver.seen() {
            if !(200..300).contains(&s.status) {
                continue;
            }
            let v = s.json();
            let seq = v["seq"].as_i64().unwrap();
            let list = by
                .entry(v["customer"].as_str().unwrap().to_string())
                .or_default();
            // The order of first arrivals: a repeat (a redelivery after the kill, or an
            // attempt weft stopped waiting for that reached the receiver late) is no new
            // message.
            if !list.contains(&seq) {
                list.push(seq);
            }
        }
        by
    };
    let all_there = eventually(Duration::from_secs(60), || {
        delivered_by_customer()
            .values()
            .map(Vec::len)
            .sum::<usize>()
            >= total
    })
    .await;
    let delivered = delivered_by_customer();
    assert!(all_there, "{total} accepted, delivered: {delivered:?}");
    assert_eq!(
        delivered, accepted,
        "each customer's messages in the order accepted"
    );
    let refused = receiver.seen().iter().filter(|s| s.status == 503).count();
    assert_eq!(refused, 12, "the receiver's failures were retried");
}

/// One endpoint's long outage holds up nothing else: messages whose receiver is down wait for
/// their retries (on the cluster's retry stream, holding no delivery slot) while the flow's
/// other messages, posted after them, are delivered at once; and a full queue answers 429.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_outage_of_some_messages_does_not_stall_the_others_and_a_full_queue_says_429() {
    let Some(nats) = NatsServer::start(true).await else {
        return;
    };
    // Answers 503 to messages marked `down`, 200 to the rest, counting both.
    let seen: Arc<Mutex<Vec<(i64, u16)>>> = Arc::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let receiver = format!("http://{}/in", listener.local_addr().unwrap());
    let app = Router::new().fallback({
        let seen = seen.clone();
        move |request: Request<Body>| {
            let seen = seen.clone();
            async move {
                use http_body_util::BodyExt;
                let body = request.into_body().collect().await.unwrap().to_bytes();
                let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
                let status = if v["down"] == true { 503 } else { 200 };
                seen.lock()
                    .unwrap()
                    .push((v["seq"].as_i64().unwrap(), status));
                http::StatusCode::from_u16(status).unwrap()
            }
        }
    });
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    let node = |name: &str, port: u16, max_queued: u32| {
        format!(
            r#"
cluster:
  nats: {{ url: "{}" }}
  name: outage_test
  node: {name}
flows:
  orders:
    delivery: durable
    concurrency: 4
    max_queued: {max_queued}
    input:
      http_server: {{ address: "127.0.0.1:{port}" }}
    output:
      http_client:
        url: "{receiver}"
        retry: {{ max_attempts: 1000, initial_backoff: 2s, max_backoff: 30s, max_elapsed: 1h }}
"#,
            nats.url
        )
    };
    let ports = [free_port(), free_port()];
    let _a = Weft::start(&node("a", ports[0], 10_000)).await;
    let _b = Weft::start(&node("b", ports[1], 10_000)).await;
    let post = |port: u16, seq: i64, down: bool| {
        let body = format!(r#"{{"seq": {seq}, "down": {down}}}"#);
        async move {
            post_json(&format!("http://127.0.0.1:{port}/"), &body)
                .await
                .0
        }
    };
    // Twenty messages whose endpoint is down, more than both nodes' workers, then a hundred.
    for seq in 0..20 {
        assert_eq!(post(ports[seq as usize % 2], seq, true).await, 202);
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let started = Instant::now();
    for seq in 100..200 {
        assert_eq!(post(ports[seq as usize % 2], seq, false).await, 202);
    }
    let delivered = || {
        seen.lock()
            .unwrap()
            .iter()
            .filter(|(seq, status)| *seq >= 100 && *status == 200)
            .count()
    };
    assert!(
        eventually(Duration::from_secs(10), || delivered() >= 100).await,
        "{} of 100 delivered while the other endpoint is down",
        delivered()
    );
    let took = started.elapsed();
    let retried = seen
        .lock()
        .unwrap()
        .iter()
        .filter(|(seq, status)| *seq < 20 && *status == 503)
        .count();
    assert!(
        retried >= 20,
        "the down ones were tried and wait for their retry: {retried}"
    );
    eprintln!("100 messages delivered in {took:?} while 20 others wait out an outage");

    // A node whose queue holds at most 25 (the 20 waiting count) refuses beyond it with 429.
    let port = free_port();
    let _c = Weft::start(&node("c", port, 25)).await;
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let mut statuses = Vec::new();
    for seq in 300..320 {
        statuses.push(post(port, seq, true).await.as_u16());
    }
    assert!(
        statuses.contains(&429),
        "a full queue refuses: {statuses:?}"
    );
    assert!(statuses.contains(&202), "until it is full: {statuses:?}");
}

/// A node joins a NATS that serves TLS only and requires a client certificate, with
/// `cluster.nats.{ca, cert, key}`; without its certificate it is refused at start, saying why.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_joins_a_nats_that_requires_tls_and_a_client_certificate() {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
    let dir = scratch();
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca_params, ca_key);
    let signed = |name: &str, file: &str| {
        let key = KeyPair::generate().unwrap();
        let cert = CertificateParams::new(vec![name.to_string()])
            .unwrap()
            .signed_by(&key, &issuer)
            .unwrap();
        std::fs::write(dir.join(format!("{file}.pem")), cert.pem()).unwrap();
        std::fs::write(dir.join(format!("{file}.key")), key.serialize_pem()).unwrap();
    };
    std::fs::write(dir.join("ca.pem"), ca.pem()).unwrap();
    signed("127.0.0.1", "server");
    signed("weft", "client");
    let Some(nats) = NatsServer::start_tls(
        true,
        &dir.join("server.pem"),
        &dir.join("server.key"),
        &dir.join("ca.pem"),
    )
    .await
    else {
        return;
    };
    let receiver = Receiver::start().await;
    let config = |identity: &str| {
        format!(
            r#"
cluster:
  nats: {{ url: "{}", ca: "{}"{identity} }}
  name: tls_test
flows:
  once:
    input:
      generate: {{ mapping: '.n = 1', interval: 200ms }}
    output:
      http_client: {{ url: "{}" }}
"#,
            nats.url,
            dir.join("ca.pem").display(),
            receiver.url("/in")
        )
    };
    let identity = format!(
        r#", cert: "{}", key: "{}""#,
        dir.join("client.pem").display(),
        dir.join("client.key").display()
    );
    let node = Weft::start(&config(&identity)).await;
    assert!(
        eventually(Duration::from_secs(10), || !receiver.seen().is_empty()).await,
        "the node joined over TLS and ran its input:\n{}",
        node.stderr()
    );
    let (status, info) = node.admin_json(http::Method::GET, "/api/v1/cluster").await;
    assert_eq!(status, 200, "{info}");
    assert_eq!(info["cluster"], "tls_test");

    let mut refused = Weft::spawn(&config(""), &[], Stdio::null());
    let exited = refused.child.wait().unwrap();
    assert!(!exited.success());
    let err = refused.stderr();
    assert!(
        err.contains("cluster: cannot connect to NATS at") && err.contains("BadCertificate"),
        "{err}"
    );
}
