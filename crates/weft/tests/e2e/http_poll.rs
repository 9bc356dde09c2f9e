//! `http_poll` against a real local API: paging by cursor, by `Link` header and by page number,
//! and a watermark that survives a restart and drives the next request.

use std::collections::HashMap;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::response::{IntoResponse, Response};
use http::Request;

use crate::support::*;

/// A paged API. Every request's path and query is recorded.
#[derive(Clone, Default)]
struct Api {
    requests: Arc<Mutex<Vec<String>>>,
    /// Records for `/changes`: (updated_at, id).
    changes: Arc<Mutex<Vec<(u64, String)>>>,
    base: Arc<Mutex<String>>,
    /// When each `/limited` request came.
    limited: Arc<Mutex<Vec<std::time::Instant>>>,
}

impl Api {
    async fn start() -> Api {
        let api = Api::default();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        *api.base.lock().unwrap() = format!("http://{}", listener.local_addr().unwrap());
        let a = api.clone();
        let app = Router::new().fallback(move |request: Request<Body>| {
            let a = a.clone();
            async move { a.handle(request) }
        });
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        api
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base.lock().unwrap())
    }

    fn requests(&self) -> Vec<String> {
        self.requests.lock().unwrap().clone()
    }

    fn handle(&self, request: Request<Body>) -> Response {
        let uri = request.uri().clone();
        self.requests.lock().unwrap().push(uri.to_string());
        let query: HashMap<String, String> = uri
            .query()
            .map(|q| form_urlencoded::parse(q.as_bytes()).into_owned().collect())
            .unwrap_or_default();
        let json = |v: serde_json::Value| {
            ([("content-type", "application/json")], v.to_string()).into_response()
        };
        match uri.path() {
            "/cursor" => json(match query.get("cursor").map(String::as_str) {
                None => serde_json::json!({"items": [{"n": 1}, {"n": 2}, {"n": 3}], "next": "b"}),
                Some("b") => serde_json::json!({"items": [{"n": 4}, {"n": 5}], "next": "c"}),
                _ => serde_json::json!({"items": [{"n": 6}], "next": null}),
            }),
            "/link" => {
                let page: u64 = query.get("page").and_then(|p| p.parse().ok()).unwrap_or(1);
                let mut response =
                    json(serde_json::json!([{"n": page * 10}, {"n": page * 10 + 1}]));
                if page < 3 {
                    let next = format!(
                        "<{}>; rel=\"next\"",
                        self.url(&format!("/link?page={}", page + 1))
                    );
                    response.headers_mut().insert("link", next.parse().unwrap());
                }
                response
            }
            "/pages" => {
                let page: u64 = query["page"].parse().unwrap();
                let items: Vec<_> = if page <= 3 {
                    vec![serde_json::json!({"n": page})]
                } else {
                    vec![]
                };
                json(serde_json::json!({"data": items}))
            }
            "/offset" => {
                let offset: u64 = query["offset"].parse().unwrap();
                assert_eq!(query["limit"], "2");
                let items: Vec<_> = (offset..offset + 2)
                    .map(|n| serde_json::json!({"n": n}))
                    .collect();
                json(serde_json::json!({"data": items, "last": offset >= 2}))
            }
            "/csv" => (
                [("content-type", "text/csv")],
                "n,name\n1,Ada\n2,\"Grace, H.\"\n",
            )
                .into_response(),
            // Rate limited at first: 429 with `Retry-After: 2`, then the records.
            "/limited" => {
                let mut seen = self.limited.lock().unwrap();
                seen.push(std::time::Instant::now());
                if seen.len() == 1 {
                    (
                        http::StatusCode::TOO_MANY_REQUESTS,
                        [("retry-after", "2")],
                        "slow down",
                    )
                        .into_response()
                } else {
                    json(serde_json::json!([{"n": 1}, {"n": 2}]))
                }
            }
            // A record the flow cannot deliver in the middle of the first page.
            "/poison" => json(match query.get("cursor").map(String::as_str) {
                None => serde_json::json!({
                    "items": [{"n": 1}, {"n": 2, "bad": true}, {"n": 3}],
                    "next": "b"
                }),
                _ => serde_json::json!({"items": [{"n": 4}], "next": null}),
            }),
            "/loop" => json(serde_json::json!({"items": [{"n": 1}], "next": "same"})),
            "/hop" => {
                let mut response = json(serde_json::json!([{"n": 1}]));
                let other = query.get("to").cloned().unwrap_or_default();
                response
                    .headers_mut()
                    .insert("link", format!("<{other}>; rel=\"next\"").parse().unwrap());
                response
            }
            "/changes" => {
                let since: u64 = query["since"].parse().unwrap();
                let mut rows: Vec<_> = self
                    .changes
                    .lock()
                    .unwrap()
                    .iter()
                    .filter(|(t, _)| *t > since)
                    .map(|(t, id)| serde_json::json!({"updated_at": t, "id": id}))
                    .collect();
                rows.truncate(2);
                json(serde_json::json!({"rows": rows}))
            }
            _ => http::StatusCode::NOT_FOUND.into_response(),
        }
    }
}

fn poll_flow(port: u16, url: &str, receiver: &str, extra: &str, interval: &str) -> String {
    format!(
        r#"
admin: {{ address: "127.0.0.1:{port}" }}
flows:
  poll:
    concurrency: 1
    input:
      http_poll:
        url: "{url}"
        interval: {interval}
{extra}
    output:
      http_client: {{ url: "{receiver}" }}
"#
    )
}

fn numbers(receiver: &Receiver) -> Vec<i64> {
    receiver
        .seen()
        .iter()
        .map(|s| s.json()["n"].as_i64().unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pages_are_followed_by_cursor_by_link_header_and_by_page_number() {
    let api = Api::start().await;
    let cases = [
        (
            "/cursor",
            "        records: .items\n        pagination: { cursor: { from: .next, param: cursor } }",
            vec![1, 2, 3, 4, 5, 6],
            vec!["/cursor", "/cursor?cursor=b", "/cursor?cursor=c"],
        ),
        (
            "/link",
            "        pagination: { link_header: true }",
            vec![10, 11, 20, 21, 30, 31],
            vec!["/link", "/link?page=2", "/link?page=3"],
        ),
        (
            "/pages",
            "        records: .data\n        pagination: { page: { param: page, start: 1 } }",
            vec![1, 2, 3],
            vec![
                "/pages?page=1",
                "/pages?page=2",
                "/pages?page=3",
                "/pages?page=4",
            ],
        ),
    ];
    for (path, extra, expected, requests) in cases {
        api.requests.lock().unwrap().clear();
        let receiver = Receiver::start().await;
        let config = poll_flow(
            free_port(),
            &api.url(path),
            &receiver.url("/in"),
            extra,
            "1h",
        );
        let weft = Weft::start(&config).await;
        assert!(
            eventually(Duration::from_secs(10), || receiver.seen().len()
                == expected.len())
            .await,
            "{path}: {:?} {}",
            numbers(&receiver),
            weft.stderr()
        );
        assert_eq!(numbers(&receiver), expected, "{path}");
        assert_eq!(api.requests(), requests, "{path}");
    }
}

/// A HubSpot-shaped search API: `POST` with the filter in a JSON body, records `n` = 1..=5
/// (`updated` = 100 n) after the filter's value, two a page, the next page by the body's
/// `after`. Each request's method and body is kept.
async fn search_api() -> (String, Arc<Mutex<Vec<(String, serde_json::Value)>>>) {
    let seen: Arc<Mutex<Vec<(String, serde_json::Value)>>> = Arc::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let kept = seen.clone();
    let app = Router::new().fallback(move |request: Request<Body>| {
        let kept = kept.clone();
        async move {
            use http_body_util::BodyExt;
            let method = request.method().to_string();
            let bytes = request.into_body().collect().await.unwrap().to_bytes();
            let body: serde_json::Value = serde_json::from_slice(&bytes).unwrap_or_default();
            kept.lock().unwrap().push((method, body.clone()));
            let since = body["filterGroups"][0]["filters"][0]["value"]
                .as_u64()
                .unwrap_or(u64::MAX);
            let after: usize = body["after"].as_str().map_or(0, |a| a.parse().unwrap());
            let matching: Vec<u64> = (1..=5u64).filter(|n| n * 100 > since).collect();
            let page: Vec<_> = matching
                .iter()
                .skip(after)
                .take(2)
                .map(|n| serde_json::json!({"n": n, "updated": n * 100}))
                .collect();
            let mut answer = serde_json::json!({ "results": page });
            if after + 2 < matching.len() {
                answer["paging"] = serde_json::json!({"next": {"after": (after + 2).to_string()}});
            }
            ([("content-type", "application/json")], answer.to_string()).into_response()
        }
    });
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (base, seen)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_search_api_is_polled_with_a_json_body_that_carries_the_watermark_and_the_cursor() {
    let (base, seen) = search_api().await;
    let receiver = Receiver::start().await;
    let extra = r#"        body: '{"filterGroups": [{"filters": [{"propertyName": "updated", "operator": "GT", "value": %watermark}]}], "limit": 2}'
        records: .results
        pagination: { cursor: { from: .paging.next.after, variable: after } }
        watermark: { value: .updated, initial: 0 }"#;
    let config = poll_flow(
        free_port(),
        &format!("{base}/crm/v3/objects/contacts/search"),
        &receiver.url("/in"),
        extra,
        "300ms",
    );
    let weft = Weft::start(&config).await;
    assert!(
        eventually(Duration::from_secs(10), || seen.lock().unwrap().len() >= 4).await,
        "{:?} {}",
        seen.lock().unwrap(),
        weft.stderr()
    );
    assert_eq!(numbers(&receiver), [1, 2, 3, 4, 5]);
    let seen = seen.lock().unwrap().clone();
    // Three pages of the first poll, the cursor in the body; the next poll from the watermark.
    let asked: Vec<(&str, Option<u64>, Option<&str>)> = seen
        .iter()
        .take(4)
        .map(|(method, body)| {
            (
                method.as_str(),
                body["filterGroups"][0]["filters"][0]["value"].as_u64(),
                body["after"].as_str(),
            )
        })
        .collect();
    assert_eq!(
        asked,
        [
            ("POST", Some(0), None),
            ("POST", Some(0), Some("2")),
            ("POST", Some(0), Some("4")),
            ("POST", Some(500), None),
        ],
        "{seen:?}"
    );
    assert_eq!(seen[0].1["limit"], 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watermark_survives_a_restart_and_drives_the_next_request() {
    let api = Api::start().await;
    *api.changes.lock().unwrap() = vec![(100, "a".into()), (200, "b".into()), (300, "c".into())];
    let receiver = Receiver::start().await;
    let dir = scratch();
    let extra = "        records: .rows\n        pagination: { next_url: 'if length!(.rows) == 0 { null } else { \"?since=\" + to_string!(.rows[-1].updated_at) }' }\n        watermark: { value: .updated_at, initial: 0 }";
    let config = poll_flow(
        free_port(),
        &api.url("/changes?since={{ %watermark }}"),
        &receiver.url("/in"),
        extra,
        "300ms",
    );
    let ids = |r: &Receiver| -> Vec<String> {
        r.seen()
            .iter()
            .map(|s| s.json()["id"].as_str().unwrap().to_string())
            .collect()
    };
    let mut weft = Weft::start_in(dir.clone(), &config, &[], Stdio::null()).await;
    assert!(
        eventually(Duration::from_secs(10), || ids(&receiver).len() == 3).await,
        "{:?} {}",
        api.requests(),
        weft.stderr()
    );
    // Two pages (the API gives two rows at most), then later polls start from 300.
    assert!(
        eventually(Duration::from_secs(5), || api
            .requests()
            .iter()
            .any(|r| r == "/changes?since=300"))
        .await,
        "{:?}",
        api.requests()
    );
    api.changes.lock().unwrap().push((400, "d".into()));
    assert!(eventually(Duration::from_secs(5), || ids(&receiver).len() == 4).await);
    // A request from 400 is made only once 400 is saved: after it, a kill loses nothing.
    assert!(
        eventually(Duration::from_secs(5), || api
            .requests()
            .iter()
            .any(|r| r == "/changes?since=400"))
        .await,
        "{:?}",
        api.requests()
    );

    weft.kill();
    api.requests.lock().unwrap().clear();
    let weft = Weft::start_in(dir, &config, &[], Stdio::null()).await;
    assert!(
        eventually(Duration::from_secs(5), || !api.requests().is_empty()).await,
        "{}",
        weft.stderr()
    );
    assert_eq!(
        api.requests()[0],
        "/changes?since=400",
        "{:?}",
        api.requests()
    );
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert_eq!(ids(&receiver), ["a", "b", "c", "d"], "nothing read twice");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credentials_stay_with_their_host_and_a_page_loop_is_stopped() {
    let api = Api::start().await;
    let other = Receiver::start().await;
    let receiver = Receiver::start().await;
    let hop = format!("/hop?to={}", other.url("/elsewhere"));
    let extra = "        auth: token\n        pagination: { link_header: true }";
    let config = format!(
        "resources:\n  auth:\n    token: {{ bearer: sekret }}\n{}",
        poll_flow(
            free_port(),
            &api.url(&hop),
            &receiver.url("/in"),
            extra,
            "1h"
        )
    );
    let weft = Weft::start(&config).await;
    assert!(
        eventually(Duration::from_secs(10), || !other.seen().is_empty()).await,
        "{}",
        weft.stderr()
    );
    assert!(
        other.seen()[0].headers.get("authorization").is_none(),
        "the token went to another host"
    );

    // A cursor that comes back ends the poll with an error instead of paging forever.
    let extra =
        "        records: .items\n        pagination: { cursor: { from: .next, param: cursor } }";
    let config = poll_flow(
        free_port(),
        &api.url("/loop"),
        &receiver.url("/in"),
        extra,
        "1h",
    );
    let weft = Weft::start(&config).await;
    assert!(
        eventually(Duration::from_secs(10), || weft
            .stderr()
            .contains("pointed back to a page already read"))
        .await,
        "{}",
        weft.stderr()
    );

    // With `auth`, a URL whose host a message could choose is refused at load.
    let (status, _, stderr) = weft_cmd_check(
        "resources:\n  auth:\n    t: { bearer: x }\nflows:\n  f:\n    input: { stdin: {} }\n    output:\n      http_client: { url: \"{{ .callback }}\", auth: t }\n",
    );
    assert!(!status.success());
    assert!(
        stderr.contains("must start with a fixed scheme and host"),
        "{stderr}"
    );
}

fn weft_cmd_check(config: &str) -> (std::process::ExitStatus, String, String) {
    let dir = scratch();
    std::fs::write(dir.join("f.yaml"), config).unwrap();
    weft_cmd(&["check", "f.yaml"], &dir)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn csv_pages_and_xml_or_csv_requests_become_records() {
    let api = Api::start().await;
    let receiver = Receiver::start().await;
    let config = poll_flow(
        free_port(),
        &api.url("/csv"),
        &receiver.url("/in"),
        "",
        "1h",
    );
    let weft = Weft::start(&config).await;
    assert!(
        eventually(Duration::from_secs(10), || receiver.seen().len() == 2).await,
        "{}",
        weft.stderr()
    );
    let rows: Vec<_> = receiver.seen().iter().map(|s| s.json()).collect();
    assert_eq!(
        rows,
        [
            serde_json::json!({"n": "1", "name": "Ada"}),
            serde_json::json!({"n": "2", "name": "Grace, H."})
        ]
    );

    // The same codecs on an http_server: XML and CSV bodies are structured values.
    let port = free_port();
    let config = format!(
        "flows:\n  in:\n    input:\n      http_server: {{ address: \"127.0.0.1:{port}\" }}\n    output:\n      http_client: {{ url: \"{}\" }}\n",
        receiver.url("/posted")
    );
    let _weft = Weft::start(&config).await;
    let url = format!("http://127.0.0.1:{port}/");
    let (status, _, body) = request(
        http::Method::POST,
        &url,
        Some("application/xml"),
        r#"<order id="9"><item>a</item><item>b</item></order>"#,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        receiver.seen()[2].json(),
        serde_json::json!({"order": {"@id": "9", "item": ["a", "b"]}})
    );
    let (status, _, body) = request(
        http::Method::POST,
        &url,
        Some("application/xml"),
        r#"<!DOCTYPE x [<!ENTITY a "b">]><x>&a;</x>"#,
    )
    .await;
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("DTD"), "{body}");
    let (status, _, _) = request(http::Method::POST, &url, Some("text/csv"), "a,b\n1,2\n").await;
    assert_eq!(status, 200);
    assert_eq!(
        receiver.seen()[3].json(),
        serde_json::json!([{"a": "1", "b": "2"}])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rate_limited_page_is_retried_after_its_retry_after() {
    let api = Api::start().await;
    let receiver = Receiver::start().await;
    let config = poll_flow(
        free_port(),
        &api.url("/limited"),
        &receiver.url("/in"),
        "",
        "1h",
    );
    let weft = Weft::start(&config).await;
    assert!(
        eventually(Duration::from_secs(10), || receiver.seen().len() == 2).await,
        "{:?} {}",
        api.requests(),
        weft.stderr()
    );
    assert_eq!(numbers(&receiver), [1, 2]);
    let times = api.limited.lock().unwrap().clone();
    assert_eq!(times.len(), 2, "one 429, then the page, in the same poll");
    let waited = times[1] - times[0];
    assert!(
        waited >= Duration::from_millis(1900) && waited < Duration::from_secs(4),
        "Retry-After: 2 honoured: {waited:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_poison_record_is_dead_lettered_the_sync_moves_on_and_pause_stops_polling() {
    let api = Api::start().await;
    let receiver = Receiver::start().await;
    let config = format!(
        r#"
flows:
  poll:
    concurrency: 1
    input:
      http_poll:
        url: "{url}"
        interval: 200ms
        records: .items
        pagination: {{ cursor: {{ from: .next, param: cursor }} }}
        redelivery: {{ max_deliveries: 2, backoff: 50ms }}
    pipeline:
      - map: 'assert!(.bad != true, "a bad record")'
    output:
      http_client: {{ url: "{out}" }}
"#,
        url = api.url("/poison"),
        out = receiver.url("/in"),
    );
    let weft = Weft::start(&config).await;
    // Every poll reads both pages: 1, 3 and 4 arrive each time; 2 never does.
    assert!(
        eventually(Duration::from_secs(10), || numbers(&receiver).contains(&4)).await,
        "{:?} {}",
        api.requests(),
        weft.stderr()
    );
    assert!(!numbers(&receiver).contains(&2));
    let (_, dead) = weft
        .admin_json(http::Method::GET, "/api/v1/flows/poll/dlq")
        .await;
    let dead = dead.as_array().unwrap();
    assert!(!dead.is_empty(), "{}", weft.stderr());
    assert_eq!(dead[0]["message"], serde_json::json!({"n": 2, "bad": true}));
    assert_eq!(dead[0]["attempts"], 2);

    // Paused: no request at all until it resumes.
    let (status, _) = weft
        .admin_json(http::Method::POST, "/api/v1/flows/poll/pause")
        .await;
    assert_eq!(status, 200);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = api.requests().len();
    tokio::time::sleep(Duration::from_millis(1000)).await;
    assert_eq!(api.requests().len(), before, "{:?}", api.requests());
    let (status, _) = weft
        .admin_json(http::Method::POST, "/api/v1/flows/poll/resume")
        .await;
    assert_eq!(status, 200);
    assert!(
        eventually(Duration::from_secs(5), || api.requests().len() > before).await,
        "polling resumes"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_watermark_is_shown_kept_across_a_rename_and_reset_to_import_again() {
    let api = Api::start().await;
    *api.changes.lock().unwrap() = vec![(100, "a".into()), (200, "b".into()), (300, "c".into())];
    let receiver = Receiver::start().await;
    let dir = scratch();
    let flow = |name: &str| {
        format!(
            r#"
flows:
  {name}:
    concurrency: 1
    input:
      http_poll:
        url: "{url}"
        interval: 200ms
        records: .rows
        pagination: {{ next_url: 'if length!(.rows) == 0 {{ null }} else {{ "?since=" + to_string!(.rows[-1].updated_at) }}' }}
        watermark: {{ value: .updated_at, initial: 0 }}
        checkpoint_key: orders_sync
    output:
      http_client: {{ url: "{out}" }}
"#,
            url = api.url("/changes?since={{ %watermark }}"),
            out = receiver.url("/in"),
        )
    };
    let ids = |r: &Receiver| -> Vec<String> {
        r.seen()
            .iter()
            .map(|s| s.json()["id"].as_str().unwrap().to_string())
            .collect()
    };
    let mut weft = Weft::start_in(dir.clone(), &flow("sync"), &[], Stdio::null()).await;
    assert!(
        eventually(Duration::from_secs(10), || ids(&receiver).len() == 3).await,
        "{}",
        weft.stderr()
    );
    // Shown by the API and on /metrics.
    let mut shown = serde_json::Value::Null;
    for _ in 0..100 {
        shown = weft
            .admin_json(http::Method::GET, "/api/v1/flows/sync")
            .await
            .1;
        if shown["checkpoint"]["value"] == 300 && shown["checkpoint"]["last_poll_at"].is_string() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let checkpoint = &shown["checkpoint"];
    assert_eq!(checkpoint["key"], "orders_sync", "{shown}");
    assert_eq!(checkpoint["value"], 300, "{shown}");
    assert!(
        checkpoint["saved_at"].as_str().unwrap().contains('T'),
        "{shown}"
    );
    weft.metric_eventually(r#"weft_checkpoint_age_seconds{flow="sync"}"#)
        .await
        .unwrap();
    weft.kill();

    // The CLI lists it; renamed, the flow keeps its place by its checkpoint_key.
    let data = dir.join("data");
    let data = data.to_str().unwrap();
    let (status, stdout, stderr) = weft_cmd(&["checkpoint", "list", "--data-dir", data], &dir);
    assert!(status.success(), "{stderr}");
    let listed: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
    assert_eq!(
        (&listed["key"], &listed["value"]),
        (&"orders_sync".into(), &300.into())
    );
    api.requests.lock().unwrap().clear();
    let weft = Weft::start_in(dir.clone(), &flow("sync_renamed"), &[], Stdio::null()).await;
    assert!(eventually(Duration::from_secs(5), || !api.requests().is_empty()).await);
    assert_eq!(
        api.requests()[0],
        "/changes?since=300",
        "{:?}",
        api.requests()
    );

    // Reset while it runs: the next poll imports everything again.
    let (status, stdout, stderr) = weft_cmd(
        &["checkpoint", "reset", "orders_sync", "--data-dir", data],
        &dir,
    );
    assert!(status.success(), "{stderr}");
    assert!(stdout.contains("reset `orders_sync`"), "{stdout}");
    assert!(
        eventually(Duration::from_secs(10), || ids(&receiver).len() == 6).await,
        "{:?} {}",
        api.requests(),
        weft.stderr()
    );
    assert_eq!(ids(&receiver)[3..], ["a", "b", "c"]);
    let (status, _, stderr) = weft_cmd(
        &["checkpoint", "show", "nothing_here", "--data-dir", data],
        &dir,
    );
    assert!(
        !status.success() && stderr.contains("no checkpoint `nothing_here`"),
        "{stderr}"
    );
}
