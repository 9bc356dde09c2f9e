//! Delivered once: the `dedupe` processor and `Idempotency-Key` on `http_server`, in direct and
//! durable flows, across restarts, and with keys given back when delivery fails.

use std::process::Stdio;
use std::time::Duration;

use http::Method;

use crate::support::*;

fn dedupe_flow(port: u16, url: &str, delivery: &str) -> String {
    format!(
        r#"
flows:
  events:
    delivery: {delivery}
    input:
      http_server: {{ address: "127.0.0.1:{port}" }}
    pipeline:
      - dedupe: {{ key: .event_id, ttl: 1h }}
    output:
      http_client:
        url: "{url}"
        retry: {{ max_attempts: 3, initial_backoff: 50ms, max_backoff: 50ms }}
        fail_on: [400]
"#
    )
}

fn delivered_ids(receiver: &Receiver) -> Vec<String> {
    receiver
        .seen()
        .iter()
        .filter(|s| s.status == 200)
        .map(|s| {
            s.json()["event_id"]
                .as_str()
                .unwrap_or_default()
                .to_string()
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dedupe_drops_repeats_gives_keys_back_on_failure_and_remembers_across_restarts() {
    let receiver = Receiver::start().await;
    let port = free_port();
    let dir = scratch();
    let config = dedupe_flow(port, &receiver.url("/in"), "direct");
    let mut weft = Weft::start_in(dir.clone(), &config, &[], Stdio::null()).await;
    let url = format!("http://127.0.0.1:{port}/");

    let (status, _, body) = post_json(&url, r#"{"event_id": "a", "n": 1}"#).await;
    assert_eq!(status, 200, "{body}");
    let (status, _, body) = post_json(&url, r#"{"event_id": "a", "n": 2}"#).await;
    assert_eq!(status, 200, "{body}");
    assert!(
        body.contains(r#""filtered":true"#),
        "a repeat is dropped: {body}"
    );
    assert_eq!(post_json(&url, r#"{"event_id": "b"}"#).await.0, 200);
    assert_eq!(delivered_ids(&receiver), ["a", "b"]);

    // Delivery of `c` fails for good: its key is given back, so the sender's resend goes out.
    receiver.script(vec![Reply::status(400)]);
    assert_eq!(post_json(&url, r#"{"event_id": "c"}"#).await.0, 502);
    assert_eq!(post_json(&url, r#"{"event_id": "c"}"#).await.0, 200);
    assert_eq!(delivered_ids(&receiver), ["a", "b", "c"]);

    // A key without a value is an error, not a shared empty key.
    let (status, _, body) = post_json(&url, r#"{"other": 1}"#).await;
    assert_eq!(status, 422, "{body}");
    assert!(body.contains("dedupe key"), "{body}");

    // Keys live in the store: a restarted weft still knows `a`.
    weft.terminate();
    weft.wait(Duration::from_secs(10)).await;
    let _weft = Weft::start_in(dir, &config, &[], Stdio::null()).await;
    let (_, _, body) = post_json(&url, r#"{"event_id": "a", "n": 3}"#).await;
    assert!(body.contains(r#""filtered":true"#), "{body}");
    assert_eq!(delivered_ids(&receiver), ["a", "b", "c"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_repeat_waits_for_the_first_and_is_delivered_when_the_first_fails() {
    let receiver = Receiver::start().await;
    let port = free_port();
    let _weft = Weft::start(&dedupe_flow(port, &receiver.url("/in"), "direct")).await;
    let url = format!("http://127.0.0.1:{port}/");
    let post = |body: &'static str| {
        let url = url.clone();
        tokio::spawn(async move { post_json(&url, body).await })
    };

    // The first is held at the receiver and then refused for good; the repeat, meanwhile
    // waiting on it, must not be acknowledged as a duplicate but delivered.
    receiver.script(vec![Reply::status(400)]);
    receiver.hold();
    let first = post(r#"{"event_id": "e", "n": 1}"#);
    assert!(eventually(Duration::from_secs(5), || receiver.seen().len() == 1).await);
    let repeat = post(r#"{"event_id": "e", "n": 2}"#);
    tokio::time::sleep(Duration::from_millis(300)).await;
    receiver.release();
    assert_eq!(first.await.unwrap().0, 502);
    let (status, _, body) = repeat.await.unwrap();
    assert_eq!(status, 200, "{body}");
    assert!(!body.contains("filtered"), "{body}");
    assert_eq!(delivered_ids(&receiver), ["e"]);

    // A repeat that waits longer than the first takes is told to come back (409), not dropped.
    receiver.hold();
    let first = post(r#"{"event_id": "f"}"#);
    assert!(eventually(Duration::from_secs(5), || receiver.seen().len() == 3).await);
    let (status, headers, body) = post_json(&url, r#"{"event_id": "f"}"#).await;
    assert_eq!(status, 409, "{body}");
    assert_eq!(headers["retry-after"], "1");
    receiver.release();
    assert_eq!(first.await.unwrap().0, 200);
    let (_, _, body) = post_json(&url, r#"{"event_id": "f"}"#).await;
    assert!(body.contains(r#""filtered":true"#), "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_caller_hanging_up_does_not_cancel_the_delivery_or_strand_its_key() {
    use tokio::io::AsyncWriteExt;
    let receiver = Receiver::start().await;
    let port = free_port();
    let _weft = Weft::start(&dedupe_flow(port, &receiver.url("/in"), "direct")).await;
    receiver.hold();
    let body = r#"{"event_id": "gone"}"#;
    let mut socket = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    let request = format!(
        "POST / HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    );
    socket.write_all(request.as_bytes()).await.unwrap();
    assert!(eventually(Duration::from_secs(5), || receiver.seen().len() == 1).await);
    drop(socket);
    tokio::time::sleep(Duration::from_millis(200)).await;
    receiver.release();
    // The delivery went through and its key is settled: the sender's retry is a duplicate.
    let url = format!("http://127.0.0.1:{port}/");
    assert!(
        eventually(Duration::from_secs(5), || receiver.seen().len() == 1).await,
        "delivered once"
    );
    let (status, _, body) = post_json(&url, body).await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains(r#""filtered":true"#), "{body}");
    assert_eq!(receiver.seen().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn durable_dedupe_gives_the_key_back_when_a_message_dead_letters() {
    let receiver = Receiver::start().await;
    receiver.script(vec![Reply::status(400)]);
    let port = free_port();
    let weft = Weft::start(&dedupe_flow(port, &receiver.url("/in"), "durable")).await;
    let url = format!("http://127.0.0.1:{port}/");
    assert_eq!(post_json(&url, r#"{"event_id": "d"}"#).await.0, 202);
    weft.metric_eventually("weft_dead_letters{flow=\"events\"} 1")
        .await
        .unwrap();
    // The dead-lettered message no longer holds `d`: the sender's resend is delivered.
    assert_eq!(post_json(&url, r#"{"event_id": "d"}"#).await.0, 202);
    assert!(
        eventually(Duration::from_secs(10), || delivered_ids(&receiver)
            == ["d"])
        .await,
        "{}",
        weft.stderr()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn durable_dedupe_lets_its_own_retries_through_and_drops_repeats() {
    let receiver = Receiver::start().await;
    // The first delivery attempt fails: the retry runs the pipeline again and must pass dedupe.
    receiver.script(vec![Reply::status(503)]);
    let port = free_port();
    let weft = Weft::start(&dedupe_flow(port, &receiver.url("/in"), "durable")).await;
    let url = format!("http://127.0.0.1:{port}/");
    for body in [
        r#"{"event_id": "x"}"#,
        r#"{"event_id": "x"}"#,
        r#"{"event_id": "y"}"#,
    ] {
        assert_eq!(post_json(&url, body).await.0, 202);
    }
    assert!(
        eventually(Duration::from_secs(10), || {
            let mut ids = delivered_ids(&receiver);
            ids.sort();
            ids == ["x", "y"]
        })
        .await,
        "{:?} {}",
        delivered_ids(&receiver),
        weft.stderr()
    );
    weft.metric_eventually("weft_messages_filtered_total{flow=\"events\"} 1")
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut ids = delivered_ids(&receiver);
    ids.sort();
    assert_eq!(ids, ["x", "y"], "the repeat of x is never delivered");
}

fn keyed_flow(port: u16, url: &str, delivery: &str) -> String {
    format!(
        r#"
flows:
  payments:
    delivery: {delivery}
    input:
      http_server:
        address: "127.0.0.1:{port}"
        idempotency: {{ ttl: 1h }}
    pipeline:
      - map: .amount = to_int!(.amount)
    output:
      http_client:
        url: "{url}"
        timeout: 5s
        retry: {{ max_attempts: 1 }}
"#
    )
}

async fn post_keyed(
    url: &str,
    key: &str,
    body: &str,
) -> (http::StatusCode, http::HeaderMap, String) {
    request_with(
        Method::POST,
        url,
        &[
            ("content-type", "application/json"),
            ("idempotency-key", key),
        ],
        body.to_string(),
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idempotency_key_replays_the_first_answer_and_delivers_once() {
    let receiver = Receiver::start().await;
    let port = free_port();
    let weft = Weft::start(&keyed_flow(port, &receiver.url("/in"), "direct")).await;
    let url = format!("http://127.0.0.1:{port}/");

    let (status, headers, first) = post_keyed(&url, "k1", r#"{"amount": "5"}"#).await;
    assert_eq!(status, 200, "{first}");
    assert!(headers.get("idempotent-replayed").is_none());
    let (status, headers, again) = post_keyed(&url, "k1", r#"{"amount": "5"}"#).await;
    assert_eq!((status.as_u16(), again.as_str()), (200, first.as_str()));
    assert_eq!(headers["idempotent-replayed"], "true");
    assert_eq!(receiver.seen().len(), 1, "delivered once");

    // The same key for a different request is refused.
    let (status, _, body) = post_keyed(&url, "k1", r#"{"amount": "6"}"#).await;
    assert_eq!(status, 422, "{body}");

    // A failed delivery (502) is not kept: the client's retry is processed.
    receiver.script(vec![Reply::status(500)]);
    assert_eq!(post_keyed(&url, "k2", r#"{"amount": 7}"#).await.0, 502);
    let (status, headers, _) = post_keyed(&url, "k2", r#"{"amount": 7}"#).await;
    assert_eq!(status, 200);
    assert!(headers.get("idempotent-replayed").is_none());
    assert_eq!(receiver.seen().len(), 3);

    // A repeat while the first is still being delivered: 409, try again later.
    receiver.hold();
    let first = tokio::spawn({
        let url = url.clone();
        async move { post_keyed(&url, "k3", r#"{"amount": 3}"#).await }
    });
    assert!(eventually(Duration::from_secs(5), || receiver.seen().len() == 4).await);
    let (status, headers, body) = post_keyed(&url, "k3", r#"{"amount": 3}"#).await;
    assert_eq!(status, 409, "{body}");
    assert_eq!(headers["retry-after"], "1");
    receiver.release();
    assert_eq!(first.await.unwrap().0, 200);
    assert_eq!(post_keyed(&url, "k3", r#"{"amount": 3}"#).await.0, 200);

    // A request the pipeline rejects (422) would be rejected again: the answer is kept.
    let (status, _, rejected) = post_keyed(&url, "k4", r#"{"amount": "x"}"#).await;
    assert_eq!(status, 422, "{rejected}");
    let (status, headers, again) = post_keyed(&url, "k4", r#"{"amount": "x"}"#).await;
    assert_eq!((status.as_u16(), again.as_str()), (422, rejected.as_str()));
    assert_eq!(headers["idempotent-replayed"], "true");

    // Without the header a request is simply processed; a malformed key is a 400.
    assert_eq!(post_json(&url, r#"{"amount": 1}"#).await.0, 200);
    assert_eq!(post_keyed(&url, "", "{}").await.0, 400);
    assert_eq!(receiver.seen().len(), 5, "{}", weft.stderr());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idempotency_key_on_a_durable_flow_stores_once_and_survives_a_restart() {
    let receiver = Receiver::start().await;
    let port = free_port();
    let dir = scratch();
    let config = keyed_flow(port, &receiver.url("/in"), "durable");
    let mut weft = Weft::start_in(dir.clone(), &config, &[], Stdio::null()).await;
    let url = format!("http://127.0.0.1:{port}/");
    let (status, _, first) = post_keyed(&url, "order-9", r#"{"amount": 9}"#).await;
    assert_eq!(status, 202, "{first}");
    let (status, _, again) = post_keyed(&url, "order-9", r#"{"amount": 9}"#).await;
    assert_eq!(
        (status.as_u16(), again.as_str()),
        (202, first.as_str()),
        "same id"
    );
    assert!(eventually(Duration::from_secs(10), || receiver.seen().len() == 1).await);

    weft.terminate();
    weft.wait(Duration::from_secs(10)).await;
    let weft = Weft::start_in(dir, &config, &[], Stdio::null()).await;
    let (status, headers, after) = post_keyed(&url, "order-9", r#"{"amount": 9}"#).await;
    assert_eq!((status.as_u16(), after.as_str()), (202, first.as_str()));
    assert_eq!(headers["idempotent-replayed"], "true");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(receiver.seen().len(), 1, "{}", weft.stderr());
}
