//! The `http` processor: an API called mid-pipeline, its answer merged into the message, with
//! retries in place for answers that can be retried.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::response::IntoResponse;
use http::{Request, StatusCode};

use crate::support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_api_answer_is_merged_into_the_message_after_a_retry() {
    // The customer API: the first call is a 503, then it answers.
    let calls = Arc::new(AtomicU32::new(0));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let api = format!("http://{}", listener.local_addr().unwrap());
    let c = calls.clone();
    let app = Router::new().fallback(move |request: Request<Body>| {
        let c = c.clone();
        async move {
            if c.fetch_add(1, Ordering::SeqCst) == 0 {
                return StatusCode::SERVICE_UNAVAILABLE.into_response();
            }
            match request.uri().path() {
                "/customers/7" => (
                    [("content-type", "application/json")],
                    r#"{"id":7,"name":"Ada","tier":"gold"}"#,
                )
                    .into_response(),
                _ => StatusCode::NOT_FOUND.into_response(),
            }
        }
    });
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

    let receiver = Receiver::start().await;
    let port = free_port();
    let config = format!(
        r#"
flows:
  orders:
    input:
      http_server: {{ address: "127.0.0.1:{port}", errors: detailed }}
    pipeline:
      - http:
          url: "{api}/customers/{{{{ .customer_id }}}}"
          retry: {{ initial_backoff: 50ms, max_backoff: 50ms }}
          result: |
            .customer = {{ "name": %response.body.name, "tier": %response.body.tier }}
    output:
      http_client: {{ url: "{out}" }}
"#,
        out = receiver.url("/out")
    );
    let weft = Weft::start(&config).await;
    let url = format!("http://127.0.0.1:{port}/");
    let (status, _, body) = post_json(&url, r#"{"order": 1, "customer_id": 7}"#).await;
    assert_eq!(status, 200, "{body} {}", weft.stderr());
    assert_eq!(calls.load(Ordering::SeqCst), 2, "one 503, then the answer");
    assert_eq!(
        receiver.seen()[0].json(),
        serde_json::json!({"order": 1, "customer_id": 7, "customer": {"name": "Ada", "tier": "gold"}})
    );

    // A 404 is not retried: the message fails with the API's answer in the reason.
    let (status, _, body) = post_json(&url, r#"{"order": 2, "customer_id": 8}"#).await;
    assert_eq!(status, 502, "{body}");
    assert!(body.contains("answered 404"), "{body}");
    assert_eq!(calls.load(Ordering::SeqCst), 3);
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(receiver.seen().len(), 1);
}
