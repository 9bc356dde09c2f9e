//! `http_server` through the real binary: request/reply, filters, and every refusal.

use std::time::Duration;

use http::Method;

use crate::support::*;

fn endpoint(port: u16, extra: &str, pipeline: &str, output: &str) -> String {
    format!(
        r#"
flows:
  api:
    concurrency: 2
    input:
      http_server:
        address: "127.0.0.1:{port}"
        path: /api
{extra}
    pipeline:
{pipeline}
    output:
{output}
"#
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_reply_returns_the_mapped_body() {
    let port = free_port();
    let config = endpoint(
        port,
        "        response: pipeline\n        methods: [POST, PUT]",
        "      - map: |\n          .greeting = \"hello \" + string!(.name)\n          .method = %http.method\n          del(.name)",
        "      drop: {}",
    );
    let _weft = Weft::start(&config).await;
    let (status, headers, body) = request(
        Method::PUT,
        &format!("http://127.0.0.1:{port}/api"),
        Some("application/json"),
        r#"{"name": "Ada"}"#,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(headers["content-type"], "application/json");
    let json: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        json,
        serde_json::json!({"greeting": "hello Ada", "method": "PUT"})
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_filter_drops_and_the_caller_still_gets_200() {
    let receiver = Receiver::start().await;
    let port = free_port();
    let output = format!("      http_client: {{ url: \"{}\" }}", receiver.url("/"));
    let config = endpoint(port, "", "      - filter: .keep == true", &output);
    let weft = Weft::start(&config).await;
    let url = format!("http://127.0.0.1:{port}/api");
    let (status, _, body) = post_json(&url, r#"{"keep": false}"#).await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains(r#""filtered":true"#), "{body}");
    let (status, _, _) = post_json(&url, r#"{"keep": true}"#).await;
    assert_eq!(status, 200);
    let seen = receiver.seen();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].json()["keep"], true);
    let metrics = weft.metrics().await;
    assert!(
        metrics.contains(r#"weft_messages_filtered_total{flow="api"} 1"#),
        "{metrics}"
    );
    assert!(
        metrics.contains(
            r#"weft_messages_received_total{flow="api",component="input.http_server"} 2"#
        ),
        "{metrics}"
    );
    assert!(
        metrics.contains("weft_processing_seconds_bucket"),
        "{metrics}"
    );
    assert!(metrics.contains("weft_in_flight_messages"), "{metrics}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_refused_with_the_right_status() {
    let port = free_port();
    let config = endpoint(
        port,
        "        max_body_size: 100B",
        "      - map: .n = to_int!(.n)",
        "      drop: {}",
    );
    let _weft = Weft::start(&config).await;
    let url = format!("http://127.0.0.1:{port}/api");

    let (status, _, body) = post_json(&url, r#"{"n": 1,,}"#).await;
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("invalid JSON at line 1 column 9"), "{body}");

    let big = format!(r#"{{"n": "{}"}}"#, "x".repeat(200));
    let (status, _, body) = post_json(&url, &big).await;
    assert_eq!(status, 413, "{body}");

    let (status, headers, _) = request(Method::GET, &url, None, "").await;
    assert_eq!(status, 405);
    assert_eq!(headers["allow"], "POST");

    let (status, _, _) = post_json(&format!("http://127.0.0.1:{port}/elsewhere"), "{}").await;
    assert_eq!(status, 404);

    // A mapping that fails on this message: 422 with VRL's message (not where it failed inside
    // weft), not a crash.
    let (status, _, body) = post_json(&url, r#"{"n": "seven"}"#).await;
    assert_eq!(status, 422, "{body}");
    assert!(body.contains(r#"Invalid integer \"seven\""#), "{body}");
    assert!(!body.contains("pipeline[0]"), "{body}");

    // Forms and text arrive as structured values.
    let (status, _, _) = request(
        Method::POST,
        &url,
        Some("application/x-www-form-urlencoded"),
        "n=5",
    )
    .await;
    assert_eq!(status, 200);

    // Still alive after all that.
    let (status, _, _) = post_json(&url, r#"{"n": 3}"#).await;
    assert_eq!(status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_saturated_flow_answers_503_with_retry_after() {
    let receiver = Receiver::start().await;
    receiver.hold();
    let port = free_port();
    let output = format!("      http_client: {{ url: \"{}\" }}", receiver.url("/"));
    let config = endpoint(port, "", "      []", &output).replace("    pipeline:\n      []\n", "");
    let _weft = Weft::start(&config).await;
    let url = format!("http://127.0.0.1:{port}/api");
    // concurrency is 2: two slow requests fill the flow.
    let slow: Vec<_> = (0..2)
        .map(|_| {
            let url = url.clone();
            tokio::spawn(async move { post_json(&url, "{}").await.0 })
        })
        .collect();
    assert!(eventually(Duration::from_secs(5), || receiver.seen().len() == 2).await);
    let (status, headers, body) = post_json(&url, "{}").await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(headers["retry-after"], "1");
    receiver.release();
    for s in slow {
        assert_eq!(s.await.unwrap(), 200);
    }
}
