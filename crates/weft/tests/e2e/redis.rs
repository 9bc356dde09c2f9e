//! Redis connectors against the machine's Redis: a stream read by a consumer group with acks
//! after delivery (a failed entry read again, a crash's entries read at restart), a list as a
//! reliable queue, pub/sub both ways, and XADD / LPUSH outputs. Keys are unique per test and
//! deleted at the end.

use std::time::Duration;

use redis::AsyncCommands;

use crate::support::*;

pub(crate) async fn redis() -> Option<(String, redis::aio::MultiplexedConnection)> {
    let url = std::env::var("WEFT_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    let connected = async {
        let client = redis::Client::open(url.as_str())?;
        let mut conn = client.get_multiplexed_async_connection().await?;
        redis::cmd("PING").query_async::<String>(&mut conn).await?;
        Ok::<_, redis::RedisError>(conn)
    };
    match connected.await {
        Ok(conn) => Some((url, conn)),
        Err(e) => {
            service_missing("WEFT_REDIS_URL", &url, e);
            None
        }
    }
}

pub(crate) fn key(what: &str) -> String {
    format!("weft:{what}:{}:{}", std::process::id(), fastrand::u32(..))
}

pub(crate) async fn pending(conn: &mut redis::aio::MultiplexedConnection, stream: &str) -> i64 {
    let summary: redis::Value = redis::cmd("XPENDING")
        .arg(stream)
        .arg("weft")
        .query_async(conn)
        .await
        .unwrap();
    match summary {
        redis::Value::Array(items) => match items.first() {
            Some(redis::Value::Int(n)) => *n,
            _ => 0,
        },
        _ => 0,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_is_acked_after_delivery_and_what_failed_or_crashed_is_read_again() {
    let Some((url, mut conn)) = redis().await else {
        return;
    };
    let stream = key("orders");
    for body in [r#"{"n": 1}"#, r#"{"n": 2}"#] {
        let _: String = conn.xadd(&stream, "*", &[("body", body)]).await.unwrap();
    }
    let _: String = conn
        .xadd(&stream, "*", &[("n", "3"), ("kind", "fields")])
        .await
        .unwrap();
    let receiver = Receiver::start().await;
    // The first delivery fails: its entry stays pending and is read again after claim_idle.
    receiver.script(vec![Reply::status(500)]);
    let config = format!(
        r#"
flows:
  orders:
    input:
      redis_streams: {{ url: "{url}", stream: "{stream}", group: weft, start: "0", claim_idle: 300ms }}
    output:
      http_client: {{ url: "{out}", retry: {{ max_attempts: 1 }} }}
"#,
        out = receiver.url("/orders")
    );
    let dir = scratch();
    let mut weft = Weft::start_in(dir.clone(), &config, &[], std::process::Stdio::null()).await;
    let delivered = |receiver: &Receiver| -> Vec<serde_json::Value> {
        receiver
            .seen()
            .iter()
            .filter(|s| s.status == 200)
            .map(|s| s.json())
            .collect()
    };
    assert!(
        eventually(Duration::from_secs(10), || delivered(&receiver).len() == 3).await,
        "{:?} {}",
        receiver.seen().len(),
        weft.stderr()
    );
    let mut got = delivered(&receiver);
    got.sort_by_key(|v| v["n"].as_i64().unwrap_or(3));
    assert_eq!(
        got,
        [
            serde_json::json!({"n": 1}),
            serde_json::json!({"n": 2}),
            serde_json::json!({"n": 3, "kind": "fields"}),
        ]
    );
    assert_eq!(receiver.seen().len(), 4, "one failure, read again once");
    let mut acked = false;
    for _ in 0..50 {
        if pending(&mut conn, &stream).await == 0 {
            acked = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(acked, "every delivered entry is acknowledged");

    // Killed while a delivery is under way: the entry stays pending and the restarted
    // consumer reads it first.
    receiver.hold();
    let _: String = conn
        .xadd(&stream, "*", &[("body", r#"{"n": 4}"#)])
        .await
        .unwrap();
    assert!(
        eventually(Duration::from_secs(5), || receiver.seen().len() == 5).await,
        "{}",
        weft.stderr()
    );
    weft.kill();
    receiver.release();
    assert_eq!(pending(&mut conn, &stream).await, 1);
    let weft = Weft::start_in(dir, &config, &[], std::process::Stdio::null()).await;
    assert!(
        eventually(Duration::from_secs(10), || receiver.seen().len() == 6).await,
        "{}",
        weft.stderr()
    );
    assert_eq!(receiver.seen()[5].json(), serde_json::json!({"n": 4}));
    let mut acked = false;
    for _ in 0..50 {
        if pending(&mut conn, &stream).await == 0 {
            acked = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(acked, "{}", weft.stderr());
    let _: i64 = conn.del(&stream).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_list_is_a_reliable_queue_and_outputs_write_streams_and_lists() {
    let Some((url, mut conn)) = redis().await else {
        return;
    };
    let (jobs, out_stream, out_list) = (key("jobs"), key("out"), key("outlist"));
    for job in [r#"{"job": 1}"#, r#"{"job": 2}"#, "plain"] {
        let _: i64 = conn.lpush(&jobs, job).await.unwrap();
    }
    let receiver = Receiver::start().await;
    receiver.script(vec![Reply::status(500)]);
    let port = free_port();
    let config = format!(
        r#"
flows:
  jobs:
    input:
      redis_list: {{ url: "{url}", list: "{jobs}", workers: 2 }}
    output:
      http_client: {{ url: "{out}", retry: {{ max_attempts: 1 }} }}
  orders:
    input:
      http_server: {{ address: "127.0.0.1:{port}" }}
    outputs:
      - redis_streams: {{ url: "{url}", stream: "{out_stream}", max_len: 1000 }}
      - redis_list: {{ url: "{url}", list: "{out_list}" }}
"#,
        out = receiver.url("/jobs")
    );
    let weft = Weft::start(&config).await;
    let ok = |receiver: &Receiver| receiver.seen().iter().filter(|s| s.status == 200).count();
    assert!(
        eventually(Duration::from_secs(10), || ok(&receiver) == 3).await,
        "{} {}",
        receiver.seen().len(),
        weft.stderr()
    );
    let mut bodies: Vec<String> = receiver
        .seen()
        .iter()
        .filter(|s| s.status == 200)
        .map(|s| s.body.clone())
        .collect();
    bodies.sort();
    assert_eq!(bodies, ["plain", r#"{"job":1}"#, r#"{"job":2}"#]);
    // A delivered item leaves the processing list with the worker's next read.
    let processing = format!("{jobs}:processing");
    let mut lengths = (-1, -1);
    for _ in 0..50 {
        let processing: i64 = conn.llen(&processing).await.unwrap();
        let left: i64 = conn.llen(&jobs).await.unwrap();
        lengths = (processing, left);
        if lengths == (0, 0) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(lengths, (0, 0));

    let (status, _, body) =
        post_json(&format!("http://127.0.0.1:{port}/"), r#"{"order": 7}"#).await;
    assert_eq!(status, 200, "{body}");
    let entries: redis::streams::StreamRangeReply = conn.xrange_all(&out_stream).await.unwrap();
    let body: String = redis::from_redis_value(entries.ids[0].map["body"].clone()).unwrap();
    assert_eq!(body, r#"{"order":7}"#);
    let listed: Vec<String> = conn.lrange(&out_list, 0, -1).await.unwrap();
    assert_eq!(listed, [r#"{"order":7}"#]);
    let _: i64 = conn.del(&[&out_stream, &out_list]).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pubsub_both_ways() {
    let Some((url, mut conn)) = redis().await else {
        return;
    };
    let (inbound, outbound) = (key("in"), key("out"));
    let receiver = Receiver::start().await;
    let port = free_port();
    let config = format!(
        r#"
flows:
  listen:
    concurrency: 1
    input:
      redis_pubsub: {{ url: "{url}", channels: ["{inbound}"] }}
    pipeline:
      - map: 'if is_object(.) {{ .channel = %redis.channel }}'
    output:
      http_client: {{ url: "{out}" }}
  publish:
    input:
      http_server: {{ address: "127.0.0.1:{port}" }}
    output:
      redis_pubsub: {{ url: "{url}", channel: "{outbound}" }}
"#,
        out = receiver.url("/heard")
    );
    let weft = Weft::start(&config).await;
    // Publish until the subscription is up (Redis keeps nothing for late subscribers).
    warm_up(&receiver, &weft, |k| {
        let (mut conn, inbound) = (conn.clone(), inbound.clone());
        async move {
            let _: i64 = conn
                .publish(&inbound, format!(r#"{{"warmup": {k}}}"#))
                .await
                .unwrap();
        }
    })
    .await;
    let before = receiver.seen().len();
    let _: i64 = conn.publish(&inbound, r#"{"id": 1}"#).await.unwrap();
    assert!(eventually(Duration::from_secs(5), || receiver.seen().len() > before).await);
    assert_eq!(
        receiver.seen()[before].json(),
        serde_json::json!({"id": 1, "channel": inbound})
    );

    // weft publishes what it receives.
    let client = redis::Client::open(url.as_str()).unwrap();
    let mut subscriber = client.get_async_pubsub().await.unwrap();
    subscriber.subscribe(&outbound).await.unwrap();
    let (status, _, body) = post_json(&format!("http://127.0.0.1:{port}/"), r#"{"id": 2}"#).await;
    assert_eq!(status, 200, "{body}");
    use futures_util::StreamExt;
    let heard = tokio::time::timeout(Duration::from_secs(5), subscriber.on_message().next())
        .await
        .expect("a publication")
        .unwrap();
    assert_eq!(heard.get_payload_bytes(), br#"{"id":2}"#);
}
