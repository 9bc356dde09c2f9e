//! The dashboard under `/ui/`: the login that trades the admin token for a session cookie, the
//! headers that guard its pages, the overview's rows and rates, over plain HTTP; then the same
//! pages in headless Chromium (Debian's `chromium`, driven by `playwright-core` from the peers
//! directory), with screenshots under `target/dashboard/`.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use http::{Method, StatusCode, header};

use crate::support::*;

const TOKEN: &str = "dash-s3cret";

/// A weft with two flows behind an admin endpoint with a token: `orders`, direct, delivering
/// to one receiver; `jobs`, durable, to another, one attempt each (a refusal dead-letters it).
struct Dash {
    weft: Weft,
    orders: String,
    jobs: String,
    orders_receiver: Receiver,
    jobs_receiver: Receiver,
}

async fn start(admin: &str) -> Dash {
    let (orders_receiver, jobs_receiver) = (Receiver::start().await, Receiver::start().await);
    let (orders_port, jobs_port) = (free_port(), free_port());
    let config = format!(
        r#"
{admin}
flows:
  orders:
    input:
      http_server: {{ address: "127.0.0.1:{orders_port}", path: /orders }}
    pipeline:
      - filter: .drop != true
      - map: .seen = true
    output:
      http_client: {{ url: "{}", retry: {{ max_attempts: 1 }} }}
  jobs:
    input:
      http_server: {{ address: "127.0.0.1:{jobs_port}", path: /jobs }}
    delivery: durable
    output:
      http_client: {{ url: "{}", retry: {{ max_attempts: 1 }} }}
"#,
        orders_receiver.url("/orders"),
        jobs_receiver.url("/jobs"),
    );
    let weft = Weft::spawn(&config, &[("WEFT_ADMIN_TOKEN", TOKEN)], Stdio::null());
    let health = format!("http://{}/health", weft.admin);
    let deadline = Instant::now() + Duration::from_secs(20);
    // With a token, `/health` answers 401 without it: any answer means it listens.
    while get(&health).await.0.as_u16() == 599 {
        assert!(
            Instant::now() < deadline,
            "weft did not start:\n{}",
            weft.stderr()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Dash {
        weft,
        orders: format!("http://127.0.0.1:{orders_port}/orders"),
        jobs: format!("http://127.0.0.1:{jobs_port}/jobs"),
        orders_receiver,
        jobs_receiver,
    }
}

/// Logs in with the token: the `Cookie` header that carries the session.
async fn log_in(weft: &Weft) -> String {
    let form = [("content-type", "application/x-www-form-urlencoded")];
    let (status, headers, _) = send(
        weft,
        Method::POST,
        "/ui/login",
        &form,
        &format!("token={TOKEN}"),
    )
    .await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    let set = headers[header::SET_COOKIE].to_str().unwrap();
    set.split(';').next().unwrap().to_string()
}

async fn send(
    weft: &Weft,
    method: Method,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> (StatusCode, http::HeaderMap, String) {
    request_with(
        method,
        &format!("http://{}{path}", weft.admin),
        headers,
        body.to_string(),
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_login_trades_the_token_for_a_session_cookie_that_the_ui_and_the_api_accept() {
    let Dash {
        weft,
        orders,
        orders_receiver: receiver,
        ..
    } = start("").await;

    // Not logged in: pages send the browser to the form, the API says 401.
    let (status, headers, _) = send(&weft, Method::GET, "/ui/", &[], "").await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    assert_eq!(headers[header::LOCATION], "/ui/login");
    let (status, _, body) = send(&weft, Method::GET, "/ui/fragments/overview", &[], "").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    let (status, _, _) = send(&weft, Method::GET, "/api/v1/flows", &[], "").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, headers, form) = send(&weft, Method::GET, "/ui/login", &[], "").await;
    assert_eq!(status, StatusCode::OK);
    assert!(form.contains(r#"name="token""#), "{form}");
    let csp = headers[header::CONTENT_SECURITY_POLICY].to_str().unwrap();
    assert!(csp.starts_with("default-src 'self'"), "{csp}");
    let (status, headers, _) = send(&weft, Method::GET, "/ui/assets/app.js", &[], "").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(headers[header::CONTENT_TYPE], "text/javascript");

    // A wrong token: the form again, with why, and no cookie.
    let form = [("content-type", "application/x-www-form-urlencoded")];
    let (status, headers, page) =
        send(&weft, Method::POST, "/ui/login", &form, "token=dash-s3creT").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(page.contains("That is not the admin token."), "{page}");
    assert!(!headers.contains_key(header::SET_COOKIE));

    // The right one: a session cookie the browser cannot read from script nor send cross-site.
    let (status, headers, _) = send(
        &weft,
        Method::POST,
        "/ui/login",
        &form,
        &format!("token={TOKEN}"),
    )
    .await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    let set = headers[header::SET_COOKIE].to_str().unwrap().to_string();
    for flag in ["HttpOnly", "SameSite=Strict", "Path=/"] {
        assert!(set.contains(flag), "{set}");
    }
    assert!(!set.contains(TOKEN), "the cookie is not the token: {set}");
    let session = set.split(';').next().unwrap().to_string();
    let cookie = [("cookie", session.as_str())];

    for i in 0..5 {
        let (status, _, body) = post_json(&orders, &format!(r#"{{"n": {i}}}"#)).await;
        assert_eq!(status, StatusCode::OK, "{body}");
    }
    let (status, headers, page) = send(&weft, Method::GET, "/ui/", &cookie, "").await;
    assert_eq!(status, StatusCode::OK, "{page}");
    assert!(
        headers[header::CONTENT_SECURITY_POLICY]
            .to_str()
            .unwrap()
            .contains("default-src 'self'")
    );
    assert_eq!(headers[header::X_CONTENT_TYPE_OPTIONS], "nosniff");
    assert!(page.contains(r#"<tr data-flow="orders">"#), "{page}");
    assert!(page.contains(r#"<tr data-flow="jobs">"#), "{page}");
    assert!(!page.contains("<script>"), "no inline script: {page}");

    // The cookie works for the API too, and the rates count what was sent.
    let (status, _, body) = send(&weft, Method::GET, "/api/v1/flows/orders", &cookie, "").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    // Sampled once a second: the five show within a few seconds.
    let deadline = Instant::now() + Duration::from_secs(5);
    let (received, rates) = loop {
        let (_, _, body) = send(
            &weft,
            Method::GET,
            "/api/v1/flows/orders/rates?seconds=60",
            &cookie,
            "",
        )
        .await;
        let rates: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
        let sum: u64 = rates["received"]
            .as_array()
            .map_or(0, |a| a.iter().filter_map(|v| v.as_u64()).sum());
        if sum == 5 || Instant::now() > deadline {
            break (sum, rates);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(received, 5, "the rates count the 5 messages sent: {rates}");
    assert_eq!(rates["interval_seconds"], 1, "{rates}");
    let (status, _, body) = send(&weft, Method::GET, "/api/v1/flows/nope/rates", &cookie, "").await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");

    // A direct flow's failure stays readable: in the API, and in the overview's row.
    receiver.set_default(Reply::status(500));
    let (status, _, body) = post_json(&orders, r#"{"n": "fails"}"#).await;
    assert!(status.is_server_error(), "{status}: {body}");
    receiver.set_default(Reply::status(200));
    let (status, _, body) = send(
        &weft,
        Method::GET,
        "/api/v1/flows/orders/failures?limit=5",
        &cookie,
        "",
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let failures: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(failures.as_array().unwrap().len(), 1, "{failures}");
    assert_eq!(failures[0]["stage"], "output", "{failures}");
    assert_eq!(
        failures[0]["message_id"].as_str().unwrap().len(),
        26,
        "{failures}"
    );
    assert!(
        failures[0]["reason"].as_str().unwrap().contains("500"),
        "{failures}"
    );
    let (_, _, flow) = send(&weft, Method::GET, "/api/v1/flows/orders", &cookie, "").await;
    assert!(flow.contains(r#""last_failure":{"#), "{flow}");
    let (status, _, _) = send(
        &weft,
        Method::GET,
        "/api/v1/flows/orders/failures?limit=0",
        &cookie,
        "",
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    // Each component's counts, in the API and drawn on the flow's page.
    let (status, _, body) = send(
        &weft,
        Method::GET,
        "/api/v1/flows/orders/components",
        &cookie,
        "",
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let components: serde_json::Value = serde_json::from_str(&body).unwrap();
    let roles: Vec<(&str, &str)> = components["components"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| (c["id"].as_str().unwrap(), c["role"].as_str().unwrap()))
        .collect();
    assert_eq!(
        roles,
        [
            ("input.http_server", "input"),
            ("pipeline[0].filter", "step"),
            ("pipeline[1].map", "step"),
            ("output.http_client", "output")
        ]
    );
    let output = &components["components"][3];
    assert_eq!(
        (output["sent"].as_u64(), output["failed"].as_u64()),
        (Some(5), Some(1)),
        "{components}"
    );
    assert_eq!(components["components"][0]["received"], 6, "{components}");
    assert_eq!(components["latency"]["count"], 6, "{components}");
    assert!(
        components["latency"]["p99_ms"].as_f64().is_some(),
        "{components}"
    );
    let (status, _, page) = send(&weft, Method::GET, "/ui/flows/orders", &cookie, "").await;
    assert_eq!(status, StatusCode::OK, "{page}");
    assert!(
        page.contains(r#"data-component="output.http_client""#),
        "{page}"
    );
    assert!(page.contains("sent 5 · failed 1 (17 %)"), "{page}");
    assert!(page.contains(r#"class="box output bad""#), "{page}");
    assert!(
        page.contains("delivery failed"),
        "the recent failure: {page}"
    );
    let (status, _, _) = send(&weft, Method::GET, "/ui/flows/nope", &cookie, "").await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    let (_, _, rows) = send(&weft, Method::GET, "/ui/fragments/overview", &cookie, "").await;
    assert!(rows.contains(r#"<td class="failure"><time"#), "{rows}");

    // A change sent from another origin's page is refused even with the cookie; a rebound
    // DNS name is refused whatever it carries.
    let foreign = [
        ("cookie", session.as_str()),
        ("origin", "http://evil.example"),
    ];
    let (status, _, _) = send(
        &weft,
        Method::POST,
        "/api/v1/flows/orders/pause",
        &foreign,
        "",
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let rebound = [("cookie", session.as_str()), ("host", "evil.example")];
    let (status, _, _) = send(&weft, Method::GET, "/ui/", &rebound, "").await;
    assert_eq!(status, StatusCode::MISDIRECTED_REQUEST);

    // Logging out ends the session on the server, not only in the browser.
    let (status, headers, _) = send(&weft, Method::POST, "/ui/logout", &cookie, "").await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    assert!(
        headers[header::SET_COOKIE]
            .to_str()
            .unwrap()
            .contains("Max-Age=0")
    );
    let (status, _, _) = send(&weft, Method::GET, "/api/v1/flows", &cookie, "").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_token_the_dashboard_needs_no_login() {
    let weft = Weft::start(
        "flows:\n  idle:\n    input: { generate: { mapping: '.x = 1', interval: 1h } }\n    output: { drop: {} }\n",
    )
    .await;
    let (status, _, page) = send(&weft, Method::GET, "/ui/", &[], "").await;
    assert_eq!(status, StatusCode::OK, "{page}");
    assert!(page.contains(r#"<tr data-flow="idle">"#), "{page}");
    assert!(!page.contains("Log out"), "{page}");
    let (status, headers, _) = send(&weft, Method::GET, "/ui/login", &[], "").await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    assert_eq!(headers[header::LOCATION], "/ui/");
}

/// Debian's Chromium, or `None`, said loudly (a failure under `WEFT_REQUIRE_SERVICES=1`).
fn chromium() -> Option<PathBuf> {
    let found = ["chromium", "chromium-browser"].iter().find_map(|name| {
        let out = Command::new("sh")
            .args(["-c", &format!("command -v {name}")])
            .output()
            .ok()?;
        let path = String::from_utf8_lossy(&out.stdout).trim().to_string();
        (out.status.success() && !path.is_empty()).then(|| PathBuf::from(path))
    });
    if found.is_none() {
        let message = "chromium is not installed (apt-get install chromium): the dashboard's browser test cannot run";
        if std::env::var("WEFT_REQUIRE_SERVICES").as_deref() == Ok("1") {
            panic!("{message}");
        }
        eprintln!("\n!!!! SKIPPED: {message}\n");
    }
    found
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_chromium_the_overview_logs_in_and_shows_messages_as_they_pass() {
    let Some(browser) = chromium() else { return };
    if !peers_installed("playwright-core") {
        return;
    }
    let dash = start("").await;
    let weft = &dash.weft;
    // The orders flow's 23rd delivery is refused: a failure for the tap to mark (20 counted,
    // one after a resume, one tapped, then this one).
    let mut orders_script: Vec<Reply> = (0..22).map(|_| Reply::status(200)).collect();
    orders_script.push(Reply::status(500));
    dash.orders_receiver.script(orders_script);
    // The durable flow's first delivery is refused: a dead letter for the page to fix.
    // Then the edited one is taken; fifty refused for the bulk replay, which are then taken;
    // two refused for the rows picked.
    let mut script = vec![Reply::status(500), Reply::status(200)];
    script.extend((0..50).map(|_| Reply::status(500)));
    script.extend((0..50).map(|_| Reply::status(200)));
    script.extend((0..2).map(|_| Reply::status(500)));
    dash.jobs_receiver.script(script);
    let shots = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/dashboard");
    std::fs::create_dir_all(&shots).unwrap();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser/dashboard.cjs");
    let out = tokio::process::Command::new("node")
        .arg(&script)
        .env("NODE_PATH", peers_dir().join("node_modules"))
        .env("CHROMIUM", &browser)
        .env("WEFT_UI", format!("http://{}", weft.admin))
        .env("WEFT_TOKEN", TOKEN)
        .env("ORDERS_URL", &dash.orders)
        .env("JOBS_URL", &dash.jobs)
        .env("SHOTS", &shots)
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(120), out)
        .await
        .expect("the browser test ended within 2 minutes")
        .unwrap();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(
        out.status.success(),
        "{stdout}\n{stderr}\nweft:\n{}",
        weft.stderr()
    );
    for shot in [
        "login.png",
        "overview.png",
        "dead_letters.png",
        "tap.png",
        "flow.png",
        "config.png",
        "dead_letter.png",
        "bulk_replay.png",
        "messages.png",
    ] {
        let size = std::fs::metadata(shots.join(shot)).map_or(0, |m| m.len());
        assert!(size > 1000, "{shot}: {size} bytes\n{stdout}");
    }
    // The dead letter, edited in the page and replayed, reached the receiver as edited; each
    // of the fifty twice (refused, then replayed), and the two picked twice.
    let receiver = dash.jobs_receiver.clone();
    eventually(Duration::from_secs(10), || receiver.seen().len() >= 106).await;
    let seen = dash.jobs_receiver.seen();
    let bodies: Vec<serde_json::Value> = seen.iter().map(|s| s.json()).collect();
    assert_eq!(bodies.len(), 106, "{bodies:?}");
    assert_eq!(bodies[0]["fixed"], false, "{bodies:?}");
    assert_eq!(bodies[1]["fixed"], true, "{bodies:?}");
    for key in ["bulk", "picked"] {
        let mut numbers: Vec<u64> = bodies.iter().filter_map(|b| b[key].as_u64()).collect();
        numbers.sort_unstable();
        let each = if key == "bulk" { 50 } else { 2 };
        let twice: Vec<u64> = (0..each).flat_map(|n| [n, n]).collect();
        assert_eq!(numbers, twice, "{key}: {bodies:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_letters_are_listed_filtered_paged_and_shown_in_full() {
    let dash = start("").await;
    let weft = &dash.weft;
    let session = log_in(weft).await;
    let cookie = [("cookie", session.as_str())];
    dash.jobs_receiver.set_default(Reply::status(500));
    for n in 0..51 {
        let (status, _, body) = post_json(&dash.jobs, &format!(r#"{{"n": {n}}}"#)).await;
        assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (_, _, body) = send(
            weft,
            Method::POST,
            "/api/v1/dlq/purge?dry_run=true",
            &cookie,
            "",
        )
        .await;
        if body.contains(r#""matched":51"#) {
            break;
        }
        assert!(Instant::now() < deadline, "51 dead letters: {body}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // A page of 50, the count of all, and a link to the rest.
    let (status, _, page) = send(weft, Method::GET, "/ui/dlq?flow=jobs", &cookie, "").await;
    assert_eq!(status, StatusCode::OK, "{page}");
    assert_eq!(page.matches("<tr data-id=").count(), 50, "{page}");
    assert!(
        page.contains(r#"<span id="matching">51</span> matching"#),
        "{page}"
    );
    assert!(page.contains("Replay all matching"), "{page}");
    let next = page
        .split(r#"<a href=""#)
        .find_map(|a| {
            a.split_once(r#"" rel="next""#)
                .map(|(href, _)| href.replace("&amp;", "&").replace("&#x2f;", "/"))
        })
        .expect("a next page");
    let (status, _, rest) = send(weft, Method::GET, &next, &cookie, "").await;
    assert_eq!(status, StatusCode::OK, "{next}: {rest}");
    assert_eq!(rest.matches("<tr data-id=").count(), 1, "{rest}");
    assert!(!rest.contains(r#"rel="next""#), "{rest}");

    // Filters: by the reason's text, and a status that is none.
    let (_, _, none) = send(
        weft,
        Method::GET,
        "/ui/dlq?reason=no+such+text",
        &cookie,
        "",
    )
    .await;
    assert!(
        none.contains(r#"<span id="matching">0</span> matching"#),
        "{none}"
    );
    assert!(none.contains("No dead letters match."), "{none}");
    let (status, _, bad) = send(weft, Method::GET, "/ui/dlq?status=abc", &cookie, "").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(bad.contains("is not an HTTP status"), "{bad}");
    let (_, _, recent) = send(weft, Method::GET, "/ui/dlq?since=1h", &cookie, "").await;
    assert!(
        recent.contains(r#"<span id="matching">51</span> matching"#),
        "{recent}"
    );
    let (_, _, future) = send(
        weft,
        Method::GET,
        "/ui/dlq?since=2999-01-01T00:00:00Z",
        &cookie,
        "",
    )
    .await;
    assert!(
        future.contains(r#"<span id="matching">0</span> matching"#),
        "{future}"
    );
    let (status, _, bad) = send(weft, Method::GET, "/ui/dlq?since=yesterday", &cookie, "").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(
        bad.contains("neither an RFC 3339 time nor a duration"),
        "{bad}"
    );
    let (_, _, by_status) = send(weft, Method::GET, "/ui/dlq?status=500", &cookie, "").await;
    assert!(
        by_status.contains(r#"<span id="matching">51</span> matching"#),
        "{by_status}"
    );

    // One in full: the message, its history, what it can do.
    let href = page
        .split(r#"<a href=""#)
        .find_map(|a| {
            a.split_once('"')
                .map(|(h, _)| h)
                .filter(|h| h.contains("dlq&#x2f;jobs"))
        })
        .expect("a link to a dead letter")
        .replace("&#x2f;", "/");
    let (status, _, detail) = send(weft, Method::GET, &href, &cookie, "").await;
    assert_eq!(status, StatusCode::OK, "{detail}");
    // Workers deliver concurrently: the oldest failure is one of the first few sent.
    assert!(
        detail.contains("{\n  &quot;n&quot;: "),
        "the message, pretty: {detail}"
    );
    assert!(detail.contains("dead_lettered"), "its history: {detail}");
    assert!(detail.contains("Edit and replay"), "{detail}");
    let (status, _, _) = send(weft, Method::GET, "/ui/dlq/jobs/nope", &cookie, "").await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    // Found by id: a dead letter, in the API and the page; one being delivered, queued.
    let id = href.rsplit('/').next().unwrap().to_string();
    let (status, _, body) = send(
        weft,
        Method::GET,
        &format!("/api/v1/messages/{id}"),
        &cookie,
        "",
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let found: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        (&found[0]["place"], &found[0]["flow"]),
        (&"dead_letter".into(), &"jobs".into()),
        "{found}"
    );
    let (_, _, page) = send(
        weft,
        Method::GET,
        &format!("/ui/messages?id={id}"),
        &cookie,
        "",
    )
    .await;
    assert!(page.contains(r#"<tr data-place="dead_letter">"#), "{page}");
    let (status, _, _) = send(weft, Method::GET, "/api/v1/messages/nope", &cookie, "").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (_, _, page) = send(weft, Method::GET, "/ui/messages?id=nope", &cookie, "").await;
    assert!(page.contains(r#"id="not-found""#), "{page}");
    dash.jobs_receiver.set_default(Reply::status(200));
    dash.jobs_receiver.hold();
    let (status, _, body) = post_json(&dash.jobs, r#"{"held": true}"#).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    let held: serde_json::Value = serde_json::from_str(&body).unwrap();
    let held = held["id"].as_str().unwrap().to_string();
    let deadline = Instant::now() + Duration::from_secs(10);
    let found = loop {
        let (_, _, body) = send(
            weft,
            Method::GET,
            &format!("/api/v1/messages/{held}"),
            &cookie,
            "",
        )
        .await;
        let found: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
        if found[0]["delivering"] == true || Instant::now() > deadline {
            break found;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    dash.jobs_receiver.release();
    assert_eq!(
        (&found[0]["place"], &found[0]["delivering"]),
        (&"queued".into(), &true.into()),
        "{found}"
    );
    assert_eq!(found[0]["attempts"], 0, "{found}");

    // The 51 replayed by a job in the background: 202 at once, then followed to the end.
    let (status, headers, body) = send(
        weft,
        Method::POST,
        "/api/v1/flows/jobs/dlq/replay?background=true&status=500",
        &cookie,
        "",
    )
    .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    let job: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        (&job["matched"], &job["action"]),
        (&51.into(), &"replay".into()),
        "{job}"
    );
    assert_eq!(job["selection"], "flow=jobs&status=500", "{job}");
    let url = headers[header::LOCATION].to_str().unwrap().to_string();
    assert_eq!(url, job["url"], "{job}");
    let job = job_ended(weft, &url, &cookie).await;
    assert_eq!(
        (&job["state"], &job["done"]),
        (&"done".into(), &51.into()),
        "{job}"
    );
    let (_, _, list) = send(weft, Method::GET, "/api/v1/dlq/jobs", &cookie, "").await;
    assert!(list.contains(job["id"].as_str().unwrap()), "{list}");
    let (_, _, page) = send(weft, Method::GET, "/ui/dlq?flow=jobs", &cookie, "").await;
    assert!(page.contains(r#"<div class="job done""#), "{page}");
    assert!(page.contains("51 of 51"), "{page}");
    let receiver = dash.jobs_receiver.clone();
    assert!(
        eventually(Duration::from_secs(20), || receiver.seen().len() >= 103).await,
        "51 refused, one held, then the 51 replayed: {}",
        receiver.seen().len()
    );
    let (status, _, _) = send(
        weft,
        Method::POST,
        "/api/v1/dlq/jobs/nope/cancel",
        &cookie,
        "",
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_only_dashboard_shows_no_buttons_and_its_session_changes_nothing() {
    let dash = start("admin:\n  ui: { actions: false }\n").await;
    let weft = &dash.weft;
    let session = log_in(weft).await;
    let cookie = [("cookie", session.as_str())];
    let (status, _, page) = send(weft, Method::GET, "/ui/", &cookie, "").await;
    assert_eq!(status, StatusCode::OK, "{page}");
    assert!(page.contains(r#"<tr data-flow="orders">"#), "{page}");
    assert!(!page.contains("data-post"), "no buttons: {page}");
    let (status, _, body) = send(
        weft,
        Method::POST,
        "/api/v1/flows/orders/pause",
        &cookie,
        "",
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert!(body.contains("read-only"), "{body}");
    // The API's token still may; and the session can still log out.
    let bearer = format!("Bearer {TOKEN}");
    let (status, _, _) = send(
        weft,
        Method::POST,
        "/api/v1/flows/orders/pause",
        &[("authorization", bearer.as_str())],
        "",
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let (status, _, _) = send(weft, Method::POST, "/ui/logout", &cookie, "").await;
    assert_eq!(status, StatusCode::SEE_OTHER);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_config_is_shown_checked_and_reloaded_from_the_api_and_its_page() {
    let dash = start("").await;
    let weft = &dash.weft;
    let session = log_in(weft).await;
    let cookie = [("cookie", session.as_str())];
    let file = weft.dir.join("flows.yaml");
    let (status, _, body) = send(weft, Method::GET, "/api/v1/config", &cookie, "").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let config: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(config["files"][0], file.display().to_string(), "{config}");
    assert_eq!(config["last_reload"], serde_json::Value::Null, "{config}");

    // A check applies nothing and says where the text is wrong.
    let yaml = [
        ("content-type", "application/yaml"),
        ("cookie", session.as_str()),
    ];
    let bad = "flows:\n  x:\n    input: { stdin: {} }\n    output: { dropp: {} }\n";
    let (status, _, body) = send(weft, Method::POST, "/api/v1/config/check", &yaml, bad).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let checked: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(checked["valid"], false, "{checked}");
    assert!(
        checked["errors"][0]
            .as_str()
            .unwrap()
            .starts_with("check.yaml:4:"),
        "{checked}"
    );

    // A reload asked for by the API, of the same files: applied.
    let (status, _, _) = send(weft, Method::POST, "/api/v1/config/reload", &cookie, "").await;
    assert_eq!(status, StatusCode::ACCEPTED);
    let config = reloaded(weft, &session, true).await;
    assert_eq!(
        config["last_reload"]["trigger"], "the admin API",
        "{config}"
    );

    // A broken file: refused, with where; the flows go on.
    let good = std::fs::read_to_string(&file).unwrap();
    std::fs::write(&file, good.replace("http_client:", "http_clientt:")).unwrap();
    send(weft, Method::POST, "/api/v1/config/reload", &cookie, "").await;
    let config = reloaded(weft, &session, false).await;
    let errors = config["last_reload"]["errors"].to_string();
    assert!(errors.contains(&format!("{}:", file.display())), "{config}");
    let (status, _, _) = post_json(&dash.orders, r#"{"still": "running"}"#).await;
    assert_eq!(status, StatusCode::OK);
    let (status, _, page) = send(weft, Method::GET, "/ui/config", &cookie, "").await;
    assert_eq!(status, StatusCode::OK, "{page}");
    assert!(
        page.contains("refused; the flows go on as they were."),
        "{page}"
    );
    assert!(page.contains("http_clientt"), "{page}");
    std::fs::write(&file, good).unwrap();
}

/// A bulk dead-letter job (at `url`) once it is no longer running.
async fn job_ended(weft: &Weft, url: &str, headers: &[(&str, &str)]) -> serde_json::Value {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (_, _, body) = send(weft, Method::GET, url, headers, "").await;
        let job: serde_json::Value = serde_json::from_str(&body).unwrap();
        if job["state"] != "running" {
            return job;
        }
        assert!(Instant::now() < deadline, "{job}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The config's status once its last reload has `applied` = `want`.
async fn reloaded(weft: &Weft, session: &str, want: bool) -> serde_json::Value {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (_, _, body) = send(
            weft,
            Method::GET,
            "/api/v1/config",
            &[("cookie", session)],
            "",
        )
        .await;
        let config: serde_json::Value = serde_json::from_str(&body).unwrap();
        if config["last_reload"]["applied"] == want {
            return config;
        }
        assert!(
            Instant::now() < deadline,
            "no reload with applied = {want}: {config}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_flow_page_draws_cases_and_strategies_with_each_steps_counts_and_redacted_settings() {
    let receiver = Receiver::start().await;
    let port = free_port();
    let config = format!(
        r#"
flows:
  routed:
    input:
      http_server: {{ address: "127.0.0.1:{port}", path: /in }}
    pipeline:
      - switch:
          - check: .kind == "refund"
            processors:
              - map: .refund = true
          - processors:
              - filter: .drop != true
    output:
      fallback:
        outputs:
          - http_client:
              url: "http://weft:${{DASH_URL_PW}}@127.0.0.1:1/nowhere"
              headers: {{ X-Note: "${{DASH_NOTE}}" }}
          - http_client:
              url: "{}"
              headers: {{ Authorization: "Bearer ${{DASH_BEARER}}" }}
"#,
        receiver.url("/out")
    );
    let (bearer, password) = ("bearer-7c1d9e0f5a3b", "urlpw-0e4f8a2b6c9d");
    let weft = Weft::start_with(
        &config,
        &[
            ("DASH_BEARER", bearer),
            ("DASH_URL_PW", password),
            ("DASH_NOTE", "plain note"),
        ],
        Stdio::null(),
    )
    .await;
    let url = format!("http://127.0.0.1:{port}/in");
    for body in [
        r#"{"kind": "refund"}"#,
        r#"{"kind": "sale"}"#,
        r#"{"kind": "sale", "drop": true}"#,
    ] {
        let (status, _, answer) = post_json(&url, body).await;
        assert!(status.is_success(), "{status}: {answer}");
    }
    assert_eq!(receiver.seen().len(), 2);

    // Each step's counts, nested steps under their case, inner outputs under their strategy.
    let (status, _, body) = send(
        &weft,
        Method::GET,
        "/api/v1/flows/routed/components",
        &[],
        "",
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let components: serde_json::Value = serde_json::from_str(&body).unwrap();
    let by_id = |id: &str| {
        components["components"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["id"] == id)
            .unwrap_or_else(|| panic!("no {id} in {components}"))
            .clone()
    };
    let switch = by_id("pipeline[0].switch");
    assert_eq!(
        (&switch["received"], &switch["sent"], &switch["dropped"]),
        (&3.into(), &2.into(), &1.into()),
        "{switch}"
    );
    let map = by_id("pipeline[0].switch[0].processors[0].map");
    assert_eq!(map["parent"], "pipeline[0].switch", "{map}");
    assert_eq!(map["branch"], r#"case 0: .kind == "refund""#, "{map}");
    assert_eq!(
        (&map["received"], &map["sent"]),
        (&1.into(), &1.into()),
        "{map}"
    );
    let filter = by_id("pipeline[0].switch[1].processors[0].filter");
    assert_eq!(filter["branch"], "case 1: any other", "{filter}");
    assert_eq!(
        (&filter["received"], &filter["sent"], &filter["dropped"]),
        (&2.into(), &1.into(), &1.into()),
        "{filter}"
    );
    let fallback = by_id("output.fallback");
    assert_eq!(fallback["sent"], 2, "{fallback}");
    // Timed: each delivery, and steps that wait; a step done in place is not.
    assert_eq!(fallback["latency"]["count"], 2, "{fallback}");
    assert!(
        fallback["latency"]["p99_ms"].as_f64().unwrap() > 0.0,
        "{fallback}"
    );
    assert_eq!(map["latency"], serde_json::Value::Null, "{map}");
    let standby = by_id("output.fallback.outputs[1].http_client");
    assert_eq!(standby["parent"], "output.fallback", "{standby}");
    assert_eq!(
        standby["sent"],
        serde_json::Value::Null,
        "counted with its strategy: {standby}"
    );

    // Drawn: the lanes with their labels, the nested boxes with their counts.
    let (status, _, page) = send(&weft, Method::GET, "/ui/flows/routed", &[], "").await;
    assert_eq!(status, StatusCode::OK, "{page}");
    assert!(
        page.contains(r#"data-component="pipeline[0].switch[1].processors[0].filter""#),
        "{page}"
    );
    assert!(
        page.contains("case 0: .kind == &quot;refund&quot;"),
        "{page}"
    );
    assert!(page.contains("(2 timed)"), "the output's latency: {page}");
    assert!(
        page.contains("in 2 · out 1 · failed 0 · dropped 1"),
        "{page}"
    );
    assert!(
        page.contains(r#"data-component="output.fallback.outputs[0].http_client""#),
        "{page}"
    );

    // The settings as the flow runs them: `${…}` filled in, credentials hidden.
    let (status, _, body) = send(&weft, Method::GET, "/api/v1/flows/routed/config", &[], "").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let yaml = serde_json::from_str::<serde_json::Value>(&body).unwrap()["yaml"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(yaml.contains("Authorization: \"[redacted]\""), "{yaml}");
    assert!(
        yaml.contains("http://weft:[redacted]@127.0.0.1:1/nowhere"),
        "{yaml}"
    );
    assert!(yaml.contains("X-Note: plain note"), "{yaml}");
    assert!(yaml.contains("check: .kind == \"refund\""), "{yaml}");
    for text in [&yaml, &page] {
        assert!(!text.contains(bearer) && !text.contains(password), "{text}");
    }
    assert!(page.contains("[redacted]"), "{page}");

    // The overview says how the config was loaded.
    let (_, _, overview) = send(&weft, Method::GET, "/ui/", &[], "").await;
    assert!(
        overview.contains("1 config file · not reloaded since the start"),
        "{overview}"
    );
    assert!(
        overview.contains(r#"<small class="since">since <time"#),
        "{overview}"
    );
}

/// A store with 100,000 dead letters (written before weft starts): every page that lists or
/// counts them answers, a deep page reads from the index, and a bulk purge of a tenth runs
/// in the background while the list stays usable. The times are printed, not measured: the
/// only bound asserted is a generous one that catches a page that hangs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_thousand_dead_letters_are_paged_counted_and_purged_in_the_background() {
    const N: usize = 100_000;
    let dir = scratch();
    std::fs::create_dir_all(dir.join("data")).unwrap();
    let store = weft_store::Store::open(
        &dir.join("data").join("weft.db"),
        weft_store::Durability::Process,
    )
    .await
    .unwrap();
    let started = Instant::now();
    for chunk in 0..N / 1000 {
        let letters = (chunk * 1000..(chunk + 1) * 1000).map(|n| {
            store.bury(weft_store::DeadLetter {
                id: format!("d{n:06}"),
                flow: "jobs".into(),
                payload: format!(r#"j{{"n": {n}}}"#).into_bytes(),
                metadata: b"{}".to_vec(),
                enqueued_at_ms: 1_000_000,
                failed_at_ms: 2_000_000 + n as i64,
                attempts: 3,
                failure: weft_store::Failure {
                    reason: format!("answered 500, shard {}", n % 10),
                    last_status: Some(500),
                    response_excerpt: None,
                },
                history: Vec::new(),
            })
        });
        futures_util::future::try_join_all(letters).await.unwrap();
    }
    eprintln!("{N} dead letters written in {:?}", started.elapsed());
    let receiver = Receiver::start().await;
    let config = format!(
        "flows:\n  jobs:\n    input: {{ http_server: {{ address: \"127.0.0.1:{}\", path: /jobs }} }}\n    delivery: durable\n    output: {{ http_client: {{ url: \"{}\" }} }}\n",
        free_port(),
        receiver.url("/jobs")
    );
    let weft = Weft::start_in(dir, &config, &[], Stdio::null()).await;
    let timed = |path: &'static str| {
        let weft = &weft;
        async move {
            let at = Instant::now();
            let (status, _, body) = send(weft, Method::GET, path, &[], "").await;
            let took = at.elapsed();
            eprintln!("GET {path}: {status} in {took:?}");
            assert_eq!(status, StatusCode::OK, "{path}: {body}");
            assert!(took < Duration::from_secs(5), "{path} hung: {took:?}");
            body
        }
    };

    let first = timed("/ui/dlq").await;
    assert!(
        first.contains(r#"<span id="matching">100000</span>"#),
        "{first}"
    );
    assert_eq!(first.matches("<tr data-id=").count(), 50);
    assert!(first.contains(r#"<tr data-id="d000000">"#));
    let deep = timed("/ui/dlq?flow=jobs&after=d089999").await;
    assert!(deep.contains(r#"<tr data-id="d090000">"#), "{deep}");
    assert!(deep.contains(r#"<tr data-id="d090049">"#), "{deep}");
    assert!(deep.contains(r#"rel="next""#), "{deep}");
    let shard = timed("/ui/dlq?reason=shard+3").await;
    assert!(
        shard.contains(r#"<span id="matching">10000</span>"#),
        "{shard}"
    );
    let rows = timed("/ui/fragments/overview").await;
    assert!(rows.contains(">100000</a>"), "{rows}");
    let flow = timed("/ui/flows/jobs").await;
    assert!(flow.contains("100000 dead letters"), "{flow}");
    let found = timed("/ui/messages?id=d054321").await;
    assert!(
        found.contains(r#"<tr data-place="dead_letter">"#),
        "{found}"
    );

    // A tenth purged by a job in batches; the list answers meanwhile.
    let (status, _, body) = send(
        &weft,
        Method::POST,
        "/api/v1/dlq/purge?reason=shard%203&background=true",
        &[],
        "",
    )
    .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    let job: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(job["matched"], 10_000, "{job}");
    let url = job["url"].as_str().unwrap().to_string();
    timed("/ui/dlq?flow=jobs").await;
    let job = job_ended(&weft, &url, &[]).await;
    assert_eq!(
        (&job["state"], &job["done"]),
        (&"done".into(), &10_000.into()),
        "{job}"
    );
    eprintln!("purged 10,000 of 100,000 in the background: {job}");
    let after = timed("/ui/dlq").await;
    assert!(
        after.contains(r#"<span id="matching">90000</span>"#),
        "{after}"
    );
    let none = timed("/ui/dlq?reason=shard+3").await;
    assert!(none.contains(r#"<span id="matching">0</span>"#), "{none}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_is_found_delivered_with_a_history_and_by_its_idempotency_key() {
    let receiver = Receiver::start().await;
    let port = free_port();
    let config = format!(
        r#"
admin:
  ui: {{ history: 3 }}
flows:
  payments:
    input:
      http_server: {{ address: "127.0.0.1:{port}", idempotency: {{ ttl: 1h }} }}
    output:
      http_client: {{ url: "{}" }}
"#,
        receiver.url("/in")
    );
    let weft = Weft::start(&config).await;
    let url = format!("http://127.0.0.1:{port}/");
    let (status, _, answer) = request_with(
        Method::POST,
        &url,
        &[
            ("content-type", "application/json"),
            ("idempotency-key", "order-42"),
        ],
        r#"{"amount": 5}"#.to_string(),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    let id = serde_json::from_str::<serde_json::Value>(&answer).unwrap()["id"]
        .as_str()
        .unwrap_or_else(|| panic!("the answer names the message: {answer}"))
        .to_string();

    // By its id: delivered, and when.
    let (status, found) = weft
        .admin_json(Method::GET, &format!("/api/v1/messages/{id}"))
        .await;
    assert_eq!(status, StatusCode::OK, "{found}");
    assert_eq!(
        (&found[0]["place"], &found[0]["flow"]),
        (&"delivered".into(), &"payments".into()),
        "{found}"
    );
    // By its key: the key, answered 200, then where its message is.
    let (status, found) = weft
        .admin_json(Method::GET, "/api/v1/messages/order-42")
        .await;
    assert_eq!(status, StatusCode::OK, "{found}");
    assert_eq!(found[0]["place"], "idempotency_key", "{found}");
    assert_eq!(found[0]["status"], 200, "{found}");
    assert_eq!(found[0]["message_id"], id.as_str(), "{found}");
    assert_eq!(found[1]["place"], "delivered", "{found}");
    let (_, _, page) = send(&weft, Method::GET, "/ui/messages?id=order-42", &[], "").await;
    assert!(
        page.contains(r#"<tr data-place="idempotency_key">"#),
        "{page}"
    );
    assert!(page.contains("Idempotency-Key, answered 200"), "{page}");
    assert!(page.contains(r#"<tr data-place="delivered">"#), "{page}");

    // Only the last three are kept.
    for n in 0..3 {
        let (status, _, _) = post_json(&url, &format!(r#"{{"n": {n}}}"#)).await;
        assert_eq!(status, StatusCode::OK);
    }
    let (status, _) = weft
        .admin_json(Method::GET, &format!("/api/v1/messages/{id}"))
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (_, _, page) = send(
        &weft,
        Method::GET,
        &format!("/ui/messages?id={id}"),
        &[],
        "",
    )
    .await;
    assert!(page.contains(r#"id="not-found""#), "{page}");
    assert!(!page.contains("is off"), "{page}");
}
