//! The admin REST API (`/api/v1`): flows with state and counters, pause and resume, the tap
//! (server-sent events, and `weft tap`), dead letters across flows, and its OpenAPI document.

use std::process::Stdio;
use std::time::Duration;

use http::{Method, StatusCode};

use crate::support::*;

async fn api(weft: &Weft, method: Method, path: &str) -> (StatusCode, serde_json::Value) {
    weft.admin_json(method, path).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flows_can_be_listed_paused_tapped_and_their_dead_letters_read() {
    let receiver = Receiver::start().await;
    let (orders_port, jobs_port) = (free_port(), free_port());
    let config = format!(
        r#"
flows:
  orders:
    input:
      http_server: {{ address: "127.0.0.1:{orders_port}", path: /orders }}
    pipeline:
      - filter: exists(.id)
      - map: |
          .total = to_int!(.qty) * 10
    output:
      http_client: {{ url: "{}" }}
  jobs:
    input:
      http_server: {{ address: "127.0.0.1:{jobs_port}", path: /jobs }}
    delivery: durable
    output:
      http_client: {{ url: "{}", retry: {{ max_attempts: 1 }} }}
"#,
        receiver.url("/orders"),
        receiver.url("/jobs"),
    );
    let weft = Weft::start(&config).await;
    let orders = format!("http://127.0.0.1:{orders_port}/orders");

    let (status, flows) = api(&weft, Method::GET, "/api/v1/flows").await;
    assert_eq!(status, StatusCode::OK);
    let names: Vec<&str> = flows
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["jobs", "orders"]);
    let (_, flow) = api(&weft, Method::GET, "/api/v1/flows/orders").await;
    assert_eq!(flow["state"], "running");
    assert_eq!(flow["delivery"], "direct");
    assert_eq!(flow["input"], "input.http_server");
    assert_eq!(
        flow["stages"],
        serde_json::json!(["input", "pipeline[0].filter", "pipeline[1].map", "output"])
    );
    assert_eq!(flow["queue"], serde_json::Value::Null);

    for i in 0..3 {
        let (status, _, body) = post_json(&orders, &format!(r#"{{"id": {i}, "qty": {i}}}"#)).await;
        assert_eq!(status, StatusCode::OK, "{body}");
    }
    post_json(&orders, r#"{"qty": 1}"#).await; // filtered
    let (_, flow) = api(&weft, Method::GET, "/api/v1/flows/orders").await;
    let counters = &flow["counters"];
    assert_eq!(
        (
            &counters["received"],
            &counters["delivered"],
            &counters["filtered"],
            &counters["failed"]
        ),
        (&4.into(), &3.into(), &1.into(), &0.into()),
        "{flow:#}"
    );

    // The tap, through `weft tap`: two messages as the map step left them, then it ends.
    let tap = tokio::process::Command::new(weft_bin())
        .args([
            "tap",
            "orders",
            "--stage",
            "pipeline[1].map",
            "--limit",
            "2",
        ])
        .args(["--admin", &weft.admin.to_string()])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Sent until the tap has what it needs: it may not be listening yet.
    let sender = {
        let orders = orders.clone();
        tokio::spawn(async move {
            for i in 10.. {
                post_json(&orders, &format!(r#"{{"id": {i}, "qty": 2}}"#)).await;
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
    };
    let out = tokio::time::timeout(Duration::from_secs(20), tap.wait_with_output())
        .await
        .expect("weft tap ends after --limit messages")
        .unwrap();
    sender.abort();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<serde_json::Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    assert_eq!(lines.len(), 2, "{stdout}");
    for line in &lines {
        assert_eq!(line["stage"], "pipeline[1].map");
        assert_eq!(line["value"]["total"], 20, "{line}");
        assert!(line["id"].is_string() && line["at"].is_string());
    }
    // A stage the flow does not have is not found, naming the ones it has.
    let (status, body) = api(&weft, Method::GET, "/api/v1/flows/orders/tap?stage=nope").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(
        body["error"].as_str().unwrap().contains("pipeline[1].map"),
        "{body}"
    );
    let out = tokio::process::Command::new(weft_bin())
        .args(["tap", "nowhere", "--admin", &weft.admin.to_string()])
        .output()
        .await
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no flow `nowhere`"));

    // Paused: the endpoint refuses with 503 and Retry-After; resumed, it takes orders again.
    let (status, flow) = api(&weft, Method::POST, "/api/v1/flows/orders/pause").await;
    assert_eq!((status, &flow["state"]), (StatusCode::OK, &"paused".into()));
    let (status, headers, body) = post_json(&orders, r#"{"id": 99, "qty": 1}"#).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert!(
        body.contains("paused") && headers.contains_key("retry-after"),
        "{body}"
    );
    let (_, flow) = api(&weft, Method::POST, "/api/v1/flows/orders/resume").await;
    assert_eq!(flow["state"], "running");
    let (status, _, _) = post_json(&orders, r#"{"id": 99, "qty": 1}"#).await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = api(&weft, Method::POST, "/api/v1/flows/nowhere/pause").await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    // A durable flow: paused, it refuses; resumed, it takes the job, which the receiver
    // refuses (422): a dead letter, counted as failed.
    let jobs = format!("http://127.0.0.1:{jobs_port}/jobs");
    receiver.set_default(Reply::status(422));
    api(&weft, Method::POST, "/api/v1/flows/jobs/pause").await;
    let (status, _, _) = post_json(&jobs, r#"{"job": 1}"#).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    api(&weft, Method::POST, "/api/v1/flows/jobs/resume").await;
    let (status, _, body) = post_json(&jobs, r#"{"job": 1}"#).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    let mut dead = serde_json::Value::Null;
    let mut settled = false;
    for _ in 0..200 {
        let (_, flow) = api(&weft, Method::GET, "/api/v1/flows/jobs").await;
        if flow["queue"]["dead_letters"] == 1 && flow["queue"]["depth"] == 0 {
            assert_eq!(flow["counters"]["failed"], 1, "{flow:#}");
            settled = true;
            break;
        }
        dead = flow;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(settled, "the job was not dead-lettered: {dead:#}");
    // Dead letters of every flow, without naming one.
    let (status, all) = api(&weft, Method::GET, "/api/v1/dlq").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(all.as_array().unwrap().len(), 1, "{all:#}");
    assert_eq!(all[0]["flow"], "jobs");
    assert_eq!(all[0]["last_status"], 422);
    let id = all[0]["id"].as_str().unwrap();
    let (_, one) = api(&weft, Method::GET, &format!("/api/v1/flows/jobs/dlq/{id}")).await;
    assert!(one["history"].is_array(), "{one:#}");

    // The OpenAPI document describes every route, and weft's own OpenAPI loader reads it.
    let (status, document) = api(&weft, Method::GET, "/api/v1/openapi.json").await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        document["openapi"].as_str().unwrap().starts_with("3."),
        "{document:#}"
    );
    for path in [
        "/api/v1/flows",
        "/api/v1/flows/{flow}",
        "/api/v1/flows/{flow}/pause",
        "/api/v1/flows/{flow}/resume",
        "/api/v1/flows/{flow}/tap",
        "/api/v1/dlq",
        "/api/v1/dlq/replay",
        "/api/v1/flows/{flow}/dlq/{id}",
    ] {
        assert!(
            document["paths"][path].is_object(),
            "{path} is not documented"
        );
    }
    let file = weft.dir.join("admin-openapi.json");
    std::fs::write(&file, document.to_string()).unwrap();
    let (status, stdout, stderr) =
        weft_cmd(&["openapi", "list", file.to_str().unwrap()], &weft.dir);
    assert!(status.success(), "{stderr}");
    for operation in ["list_flows", "pause", "tap", "list_dlq", "show_dead_letter"] {
        assert!(
            stdout.contains(operation),
            "{operation} missing from:\n{stdout}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_endpoint_answers_only_its_own_names_and_origins() {
    let port = free_port();
    let token = "adm1n-t0ken";
    let weft = Weft::spawn(
        &format!(
            r#"admin: {{ token: "{token}", hosts: [weft.internal] }}
flows:
  hooks:
    input:
      http_server: {{ address: "127.0.0.1:{port}" }}
    output:
      drop: {{}}
"#
        ),
        &[],
        std::process::Stdio::null(),
    );
    let admin = weft.admin;
    let call = |method: Method, path: &'static str, headers: Vec<(&'static str, String)>| async move {
        let headers: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let (status, _, body) =
            request_with(method, &format!("http://{admin}{path}"), &headers, "").await;
        (status.as_u16(), body)
    };
    let bearer = |scheme: &str| ("authorization", format!("{scheme} {token}"));
    let ready = eventually(std::time::Duration::from_secs(20), || {
        std::net::TcpStream::connect(admin).is_ok()
    })
    .await;
    assert!(ready, "{}", weft.stderr());

    // The scheme is case-insensitive, and every name of loopback is this endpoint's.
    for (scheme, host) in [
        ("Bearer", format!("127.0.0.1:{}", admin.port())),
        ("bearer", format!("localhost:{}", admin.port())),
        ("BEARER", format!("[::1]:{}", admin.port())),
        ("Bearer", "weft.internal".to_string()),
    ] {
        let (status, body) = call(
            Method::GET,
            "/api/v1/flows",
            vec![bearer(scheme), ("host", host.clone())],
        )
        .await;
        assert_eq!(status, 200, "{scheme} {host}: {body}");
    }
    let (status, body) = call(Method::GET, "/api/v1/flows", vec![]).await;
    assert_eq!(status, 401, "{body}");
    assert!(serde_json::from_str::<serde_json::Value>(&body).unwrap()["error"].is_string());

    // A rebound name: the right token does not help.
    for host in [
        format!("attacker.example:{}", admin.port()),
        format!("127.0.0.1:{}", admin.port() + 1),
    ] {
        let (status, body) = call(
            Method::POST,
            "/api/v1/flows/hooks/pause",
            vec![bearer("Bearer"), ("host", host.clone())],
        )
        .await;
        assert_eq!(status, 421, "{host}: {body}");
    }
    // A change sent from another origin's page is refused; from the endpoint's own, taken.
    let (status, body) = call(
        Method::POST,
        "/api/v1/flows/hooks/pause",
        vec![
            bearer("Bearer"),
            ("origin", "http://attacker.example".into()),
        ],
    )
    .await;
    assert_eq!(status, 403, "{body}");
    let (status, body) = call(Method::GET, "/api/v1/flows/hooks", vec![bearer("Bearer")]).await;
    assert!(
        status == 200 && body.contains(r#""state":"running""#),
        "{body}"
    );
    let (status, body) = call(
        Method::POST,
        "/api/v1/flows/hooks/pause",
        vec![
            bearer("Bearer"),
            ("origin", format!("http://localhost:{}", admin.port())),
        ],
    )
    .await;
    assert!(
        status == 200 && body.contains(r#""state":"paused""#),
        "{body}"
    );

    // A query that does not parse is answered in JSON like every other error.
    let (status, body) = call(
        Method::GET,
        "/api/v1/flows/hooks/tap?sample=lots",
        vec![bearer("Bearer")],
    )
    .await;
    assert_eq!(status, 400, "{body}");
    let error: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert!(
        error["error"].as_str().unwrap().contains("sample"),
        "{body}"
    );
}

/// Schemathesis (PyPI) against the served OpenAPI document, every check: each constraint the
/// handlers enforce is stated, every answer is documented, and nothing crashes. A fixed seed
/// keeps the run the same each time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schemathesis_finds_nothing_wrong_with_the_admin_api() {
    if !peers_installed("schemathesis") {
        return;
    }
    let (port, dead) = (free_port(), free_port());
    let weft = Weft::start(&format!(
        r#"flows:
  orders:
    delivery: durable
    input:
      http_server: {{ address: "127.0.0.1:{port}" }}
    output:
      http_client: {{ url: "http://127.0.0.1:{dead}/gone", retry: {{ max_attempts: 1 }} }}
  ticks:
    input:
      generate: {{ interval: 1h, mapping: '.tick = true' }}
    output:
      drop: {{}}
"#
    ))
    .await;
    // A dead letter, so that the DLQ operations have something to find.
    post_json(&format!("http://127.0.0.1:{port}/"), r#"{"order": 1}"#).await;
    let dead_lettered = eventually(Duration::from_secs(10), || {
        weft.stderr().contains("dead-letter queue")
    })
    .await;
    assert!(dead_lettered, "{}", weft.stderr());
    let run = tokio::process::Command::new(peers_dir().join("venv/bin/st"))
        .args([
            "run",
            &format!("http://{}/api/v1/openapi.json", weft.admin),
            "--checks",
            "all",
            "--max-examples",
            "30",
            "--request-timeout",
            "3",
            "--seed",
            "20261204",
            "--no-color",
        ])
        // Its own files (`.schemathesis/`) go beside the test's, not into the repository.
        .current_dir(&weft.dir)
        .output()
        .await
        .unwrap();
    let report = String::from_utf8_lossy(&run.stdout);
    assert!(
        run.status.success(),
        "{report}\n{}",
        String::from_utf8_lossy(&run.stderr)
    );
    assert!(report.contains(" passed"), "{report}");
}
