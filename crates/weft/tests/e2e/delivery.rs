//! `http_client` delivery through the real binary: mapping and templates, retries, Retry-After,
//! failures answered 502, fan-out, and no acked message lost on SIGTERM.

use std::time::Duration;

use crate::support::*;

fn webhook_to_receiver(port: u16, receiver: &Receiver, extra: &str) -> String {
    format!(
        r#"
flows:
  hook:
    input:
      http_server: {{ address: "127.0.0.1:{port}", errors: detailed, path: /in }}
    pipeline:
      - map: |
          .user_id = to_string!(.id)
          .email = downcase!(.email)
    output:
      http_client:
        url: "{url}/users/{{{{ .user_id }}}}"
        headers:
          X-Source: weft
          X-User: "{{{{ .user_id }}}}"
        retry: {{ max_attempts: 3, initial_backoff: 50ms, max_backoff: 200ms }}
{extra}
"#,
        url = receiver.url("")
    )
}

async fn post_order(port: u16) -> (http::StatusCode, http::HeaderMap, String) {
    post_json(
        &format!("http://127.0.0.1:{port}/in"),
        r#"{"id": 1, "email": "a@b"}"#,
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mapped_message_reaches_the_receiver_with_templated_url_and_headers() {
    let receiver = Receiver::start().await;
    let port = free_port();
    let weft = Weft::start(&webhook_to_receiver(port, &receiver, "")).await;
    let (status, _, body) = post_json(
        &format!("http://127.0.0.1:{port}/in"),
        r#"{"id": 7, "email": "Ada@Example.COM"}"#,
    )
    .await;
    assert_eq!(status, 200, "{body}\n{}", weft.stderr());
    let id = serde_json::from_str::<serde_json::Value>(&body).unwrap()["id"]
        .as_str()
        .unwrap()
        .len();
    assert_eq!(id, 26, "a ULID: {body}");
    let seen = receiver.seen();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].path, "/users/7");
    assert_eq!(seen[0].headers["x-source"], "weft");
    assert_eq!(seen[0].headers["x-user"], "7");
    assert_eq!(seen[0].headers["content-type"], "application/json");
    let json = seen[0].json();
    assert_eq!(json["email"], "ada@example.com");
    assert_eq!(json["user_id"], "7");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_503_is_retried_until_the_200() {
    let receiver = Receiver::start().await;
    receiver.script(vec![Reply::status(503)]);
    let port = free_port();
    let weft = Weft::start(&webhook_to_receiver(port, &receiver, "")).await;
    let (status, _, body) = post_order(port).await;
    assert_eq!(status, 200, "{body}");
    let seen = receiver.seen();
    assert_eq!(seen.len(), 2, "one 503, then the retry");
    assert_eq!(seen[0].body, seen[1].body);
    let metrics = weft.metrics().await;
    assert!(
        metrics.contains(
            r#"weft_messages_retried_total{flow="hook",component="output.http_client"} 1"#
        ),
        "{metrics}"
    );
    assert!(
        metrics
            .contains(r#"weft_messages_sent_total{flow="hook",component="output.http_client"} 1"#),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_429_with_retry_after_is_waited_for() {
    let receiver = Receiver::start().await;
    receiver.script(vec![Reply {
        status: 429,
        headers: vec![("retry-after", "1".into())],
    }]);
    let port = free_port();
    let _weft = Weft::start(&webhook_to_receiver(port, &receiver, "")).await;
    let (status, _, body) = post_order(port).await;
    assert_eq!(status, 200, "{body}");
    let seen = receiver.seen();
    assert_eq!(seen.len(), 2);
    let gap = seen[1].at - seen[0].at;
    // Retry-After: 1 overrides max_backoff (200ms); allow scheduling slack.
    assert!(gap >= Duration::from_millis(950), "waited only {gap:?}");
    assert!(gap < Duration::from_secs(5), "waited {gap:?}");

    // The HTTP-date form (whole seconds): the start of the fourth second from now, so the wait
    // is over 3 s whatever the fraction of the current one.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let until = std::time::UNIX_EPOCH + Duration::from_secs(now + 4);
    receiver.script(vec![Reply {
        status: 429,
        headers: vec![("retry-after", httpdate::fmt_http_date(until))],
    }]);
    let (status, _, body) = post_order(port).await;
    assert_eq!(status, 200, "{body}");
    let seen = receiver.seen();
    assert_eq!(seen.len(), 4);
    let gap = seen[3].at - seen[2].at;
    assert!(gap >= Duration::from_millis(2_500), "waited only {gap:?}");
    assert!(gap < Duration::from_secs(8), "waited {gap:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_400_fails_the_message_without_retry_and_the_caller_gets_502() {
    let receiver = Receiver::start().await;
    receiver.script(vec![Reply::status(400)]);
    let port = free_port();
    let weft = Weft::start(&webhook_to_receiver(port, &receiver, "")).await;
    let (status, headers, body) = post_order(port).await;
    assert_eq!(status, 502, "{body}");
    assert_eq!(headers["content-type"], "application/problem+json");
    let error: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert!(error["detail"].as_str().unwrap().contains("400"), "{body}");
    assert!(error["id"].is_string());
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(receiver.seen().len(), 1, "a 400 is not retried");
    let metrics = weft.metrics().await;
    assert!(
        metrics.contains(
            r#"weft_messages_failed_total{flow="hook",component="output.http_client"} 1"#
        ),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_give_up_at_max_attempts_and_drop_on_counts_as_done() {
    let receiver = Receiver::start().await;
    receiver.set_default(Reply::status(500));
    let port = free_port();
    let _weft = Weft::start(&webhook_to_receiver(port, &receiver, "")).await;
    let (status, _, body) = post_order(port).await;
    assert_eq!(status, 502, "{body}");
    assert!(body.contains("gave up after 3 attempts"), "{body}");
    assert_eq!(receiver.seen().len(), 3);

    let receiver = Receiver::start().await;
    receiver.set_default(Reply::status(409));
    let port = free_port();
    let config = webhook_to_receiver(port, &receiver, "        drop_on: [409]");
    let _weft = Weft::start(&config).await;
    let (status, _, body) = post_order(port).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(receiver.seen().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redirects_fail_unless_followed() {
    let receiver = Receiver::start().await;
    let target = Receiver::start().await;
    receiver.set_default(Reply {
        status: 307,
        headers: vec![("location", target.url("/moved"))],
    });
    let port = free_port();
    let _weft = Weft::start(&webhook_to_receiver(port, &receiver, "")).await;
    let (status, _, body) = post_order(port).await;
    assert_eq!(status, 502, "{body}");
    assert!(body.contains("follow_redirects"), "{body}");
    assert!(target.seen().is_empty());

    let port = free_port();
    let _weft = Weft::start(&webhook_to_receiver(
        port,
        &receiver,
        "        follow_redirects: true",
    ))
    .await;
    let (status, _, body) = post_order(port).await;
    assert_eq!(status, 200, "{body}");
    let moved = target.seen();
    assert_eq!(
        (
            moved.len(),
            moved[0].method.as_str(),
            moved[0].path.as_str()
        ),
        (1, "POST", "/moved")
    );
    assert!(
        moved[0].headers.get("x-source").is_none(),
        "configured headers stay with the configured origin"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fan_out_delivers_to_every_output_before_the_ack() {
    let a = Receiver::start().await;
    let b = Receiver::start().await;
    let port = free_port();
    let dir = scratch();
    let file = dir.join("copy.jsonl");
    let config = format!(
        r#"
flows:
  fan:
    input: {{ http_server: {{ address: "127.0.0.1:{port}", errors: detailed }} }}
    outputs:
      - http_client: {{ url: "{a}" }}
      - http_client: {{ url: "{b}" }}
      - file: {{ path: "{file}" }}
"#,
        a = a.url("/a"),
        b = b.url("/b"),
        file = file.display()
    );
    let _weft = Weft::start(&config).await;
    let (status, _, body) = post_json(&format!("http://127.0.0.1:{port}/"), r#"{"n": 1}"#).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(a.seen().len(), 1);
    assert_eq!(b.seen().len(), 1);
    assert_eq!(std::fs::read_to_string(&file).unwrap(), "{\"n\":1}\n");

    // One output failing for good fails the message, even though the others accepted it.
    b.set_default(Reply::status(404));
    let (status, _, body) = post_json(&format!("http://127.0.0.1:{port}/"), r#"{"n": 2}"#).await;
    assert_eq!(status, 502, "{body}");
    assert!(body.contains("outputs[1].http_client"), "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_during_load_loses_no_acked_message() {
    let receiver = Receiver::start().await;
    receiver.set_delay(Duration::from_millis(20));
    let port = free_port();
    let config = format!(
        r#"
shutdown_timeout: 10s
flows:
  load:
    input: {{ http_server: {{ address: "127.0.0.1:{port}", errors: detailed }} }}
    pipeline:
      - map: .seen = true
    output:
      http_client: {{ url: "{url}" }}
"#,
        url = receiver.url("/sink")
    );
    let mut weft = Weft::start(&config).await;
    let url = format!("http://127.0.0.1:{port}/");
    let mut clients = Vec::new();
    for c in 0..16 {
        let url = url.clone();
        clients.push(tokio::spawn(async move {
            let mut acked = Vec::new();
            for i in 0..10_000 {
                let seq = c * 100_000 + i;
                let (status, _, _) = post_json(&url, &format!(r#"{{"seq": {seq}}}"#)).await;
                match status.as_u16() {
                    200 => acked.push(seq),
                    599 => break, // connection refused: the server has stopped accepting
                    _ => {}
                }
            }
            acked
        }));
    }
    tokio::time::sleep(Duration::from_millis(400)).await;
    weft.terminate();
    let mut acked = Vec::new();
    for c in clients {
        acked.extend(c.await.unwrap());
    }
    let status = weft.wait(Duration::from_secs(15)).await;
    assert!(
        status.success(),
        "weft exits 0 after draining: {status}\n{}",
        weft.stderr()
    );
    assert!(acked.len() > 10, "the load ran: {} acked", acked.len());
    let delivered: std::collections::HashSet<i64> = receiver
        .seen()
        .iter()
        .map(|s| s.json()["seq"].as_i64().unwrap())
        .collect();
    let lost: Vec<_> = acked
        .iter()
        .filter(|s| !delivered.contains(&(**s as i64)))
        .collect();
    assert!(lost.is_empty(), "acked but never delivered: {lost:?}");
}
