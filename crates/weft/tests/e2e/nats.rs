//! NATS connectors against the machine's NATS server with JetStream: a durable pull consumer
//! acknowledging after delivery (a failed message refused with a delay and delivered again, a
//! crash's unacknowledged message delivered after the ack wait), publishing with a stored
//! acknowledgement, and core subscribe/publish both ways. Streams and subjects are unique per
//! test; streams are deleted at the end.

use std::time::Duration;

use futures_util::StreamExt;

use crate::support::*;

pub(crate) async fn nats() -> Option<(String, async_nats::Client)> {
    let url = std::env::var("WEFT_NATS_URL").unwrap_or_else(|_| "nats://127.0.0.1:4222".into());
    match async_nats::connect(&url).await {
        Ok(client) => Some((url, client)),
        Err(e) => {
            service_missing("WEFT_NATS_URL", &url, e);
            None
        }
    }
}

pub(crate) fn unique(what: &str) -> String {
    format!("weft_{what}_{}_{}", std::process::id(), fastrand::u32(..))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jetstream_acks_after_delivery_naks_failures_and_publishes_with_acks() {
    let Some((url, client)) = nats().await else {
        return;
    };
    let js = async_nats::jetstream::new(client.clone());
    let (stream, subject, out_stream, out_subject) =
        (unique("S"), unique("in"), unique("OUT"), unique("out"));
    js.create_stream(async_nats::jetstream::stream::Config {
        name: out_stream.clone(),
        subjects: vec![out_subject.clone()],
        ..Default::default()
    })
    .await
    .unwrap();
    let receiver = Receiver::start().await;
    // The first delivery fails: the message is refused with a delay and comes back.
    receiver.script(vec![Reply::status(500)]);
    let port = free_port();
    let config = format!(
        r#"
flows:
  orders:
    input:
      nats_jetstream:
        url: "{url}"
        stream: "{stream}"
        create_subjects: ["{subject}"]
        redelivery: {{ backoff: 200ms }}
        ack_wait: 2s
    output:
      http_client: {{ url: "{out}", retry: {{ max_attempts: 1 }} }}
  publish:
    input:
      http_server: {{ address: "127.0.0.1:{port}" }}
    output:
      nats_jetstream: {{ url: "{url}", subject: "{out_subject}" }}
"#,
        out = receiver.url("/orders")
    );
    let dir = scratch();
    let mut weft = Weft::start_in(dir.clone(), &config, &[], std::process::Stdio::null()).await;
    // The stream is created by weft; publish once it exists.
    let mut published = false;
    for _ in 0..100 {
        if js.get_stream(&stream).await.is_ok() {
            for n in 1..=3 {
                js.publish(subject.clone(), format!(r#"{{"n": {n}}}"#).into())
                    .await
                    .unwrap()
                    .await
                    .unwrap();
            }
            published = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(published, "{}", weft.stderr());
    let ok = |r: &Receiver| r.seen().iter().filter(|s| s.status == 200).count();
    assert!(
        eventually(Duration::from_secs(10), || ok(&receiver) == 3).await,
        "{} {}",
        receiver.seen().len(),
        weft.stderr()
    );
    assert_eq!(
        receiver.seen().len(),
        4,
        "one failure, delivered again once"
    );

    // Killed mid-delivery: never acknowledged, so it comes back after the ack wait.
    receiver.hold();
    js.publish(subject.clone(), r#"{"n": 4}"#.into())
        .await
        .unwrap()
        .await
        .unwrap();
    assert!(eventually(Duration::from_secs(5), || receiver.seen().len() == 5).await);
    weft.kill();
    receiver.release();
    let weft = Weft::start_in(dir, &config, &[], std::process::Stdio::null()).await;
    assert!(
        eventually(Duration::from_secs(10), || receiver.seen().len() == 6).await,
        "{}",
        weft.stderr()
    );
    assert_eq!(receiver.seen()[5].json(), serde_json::json!({"n": 4}));

    // Publishing: 200 only once the stream stored it.
    let (status, _, body) = post_json(&format!("http://127.0.0.1:{port}/"), r#"{"id": 9}"#).await;
    assert_eq!(status, 200, "{body}");
    let mut out = js.get_stream(&out_stream).await.unwrap();
    assert_eq!(out.info().await.unwrap().state.messages, 1);
    let stored = out
        .get_last_raw_message_by_subject(&out_subject)
        .await
        .unwrap();
    assert_eq!(stored.payload.as_ref(), br#"{"id":9}"#);
    drop(weft);
    js.delete_stream(&stream).await.unwrap();
    js.delete_stream(&out_stream).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn core_nats_both_ways() {
    let Some((url, client)) = nats().await else {
        return;
    };
    let (inbound, outbound) = (unique("in"), unique("out"));
    let receiver = Receiver::start().await;
    let port = free_port();
    let config = format!(
        r#"
flows:
  listen:
    concurrency: 1
    input:
      nats: {{ url: "{url}", subject: "{inbound}.>", queue: weft }}
    pipeline:
      - map: 'if is_object(.) {{ .subject = %nats.subject }}'
    output:
      http_client: {{ url: "{out}" }}
  publish:
    input:
      http_server: {{ address: "127.0.0.1:{port}" }}
    output:
      nats: {{ url: "{url}", subject: "{outbound}" }}
"#,
        out = receiver.url("/heard")
    );
    let weft = Weft::start(&config).await;
    warm_up(&receiver, &weft, |k| {
        let (client, subject) = (client.clone(), format!("{inbound}.warmup"));
        async move {
            client
                .publish(subject, format!(r#"{{"warmup": {k}}}"#).into())
                .await
                .unwrap();
        }
    })
    .await;
    let before = receiver.seen().len();
    client
        .publish(format!("{inbound}.created"), r#"{"id": 1}"#.into())
        .await
        .unwrap();
    assert!(eventually(Duration::from_secs(5), || receiver.seen().len() > before).await);
    assert_eq!(
        receiver.seen()[before].json(),
        serde_json::json!({"id": 1, "subject": format!("{inbound}.created")})
    );

    let mut subscriber = client.subscribe(outbound.clone()).await.unwrap();
    client.flush().await.unwrap();
    let (status, _, body) = post_json(&format!("http://127.0.0.1:{port}/"), r#"{"id": 2}"#).await;
    assert_eq!(status, 200, "{body}");
    let heard = tokio::time::timeout(Duration::from_secs(5), subscriber.next())
        .await
        .expect("a message")
        .unwrap();
    assert_eq!(heard.payload.as_ref(), br#"{"id":2}"#);
}

/// A consumer made before with another ack wait is changed to the config's at start, keeping
/// its other settings (here its `max_deliver`), and still delivers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_existing_consumers_ack_wait_is_changed_to_the_configs() {
    let Some((url, client)) = nats().await else {
        return;
    };
    let js = async_nats::jetstream::new(client.clone());
    let (stream, subject) = (unique("ACKW"), unique("ackw"));
    let made = js
        .create_stream(async_nats::jetstream::stream::Config {
            name: stream.clone(),
            subjects: vec![subject.clone()],
            ..Default::default()
        })
        .await
        .unwrap();
    made.create_consumer(async_nats::jetstream::consumer::pull::Config {
        durable_name: Some("weft".into()),
        ack_policy: async_nats::jetstream::consumer::AckPolicy::Explicit,
        ack_wait: Duration::from_secs(30),
        max_deliver: 40,
        ..Default::default()
    })
    .await
    .unwrap();
    let receiver = Receiver::start().await;
    let config = format!(
        r#"
flows:
  orders:
    input:
      nats_jetstream: {{ url: "{url}", stream: "{stream}", ack_wait: 3s }}
    output:
      http_client: {{ url: "{out}" }}
"#,
        out = receiver.url("/in")
    );
    let weft = Weft::start(&config).await;
    js.publish(subject.clone(), r#"{"n": 1}"#.into())
        .await
        .unwrap()
        .await
        .unwrap();
    assert!(
        eventually(Duration::from_secs(10), || receiver.seen().len() == 1).await,
        "{}",
        weft.stderr()
    );
    let mut consumer: async_nats::jetstream::consumer::PullConsumer =
        made.get_consumer("weft").await.unwrap();
    let info = consumer.info().await.unwrap();
    assert_eq!(
        info.config.ack_wait,
        Duration::from_secs(3),
        "{}",
        weft.stderr()
    );
    assert_eq!(info.config.max_deliver, 40, "other settings kept");
    assert!(
        weft.stderr()
            .contains("ack_wait of the existing consumer changed")
    );
    js.delete_stream(&stream).await.unwrap();
}
