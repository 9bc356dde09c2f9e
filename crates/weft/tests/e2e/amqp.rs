//! RabbitMQ connectors against the machine's broker: a queue consumed with acks after delivery
//! (a failure requeued and delivered again, a crash's unacked message redelivered, a refused one
//! dead-lettered), and publishing with confirms to declared exchanges (an unroutable message
//! failing). Queues and exchanges are unique per test and deleted at the end.

use std::time::Duration;

use lapin::options::{
    BasicGetOptions, BasicPublishOptions, ExchangeDeleteOptions, QueueDeclareOptions,
    QueueDeleteOptions,
};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties};

use crate::support::*;

pub(crate) async fn broker() -> Option<(String, Connection, Channel)> {
    let url = std::env::var("WEFT_AMQP_URL")
        .unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".into());
    let connected = async {
        let connection = Connection::connect(&url, ConnectionProperties::default()).await?;
        let channel = connection.create_channel().await?;
        Ok::<_, lapin::Error>((connection, channel))
    };
    match connected.await {
        Ok((connection, channel)) => Some((url, connection, channel)),
        Err(e) => {
            service_missing("WEFT_AMQP_URL", &url, e);
            None
        }
    }
}

pub(crate) fn unique(what: &str) -> String {
    format!("weft.{what}.{}.{}", std::process::id(), fastrand::u32(..))
}

pub(crate) async fn publish(channel: &Channel, queue: &str, body: &str) {
    channel
        .basic_publish(
            "".into(),
            queue.into(),
            BasicPublishOptions::default(),
            body.as_bytes(),
            BasicProperties::default(),
        )
        .await
        .unwrap()
        .await
        .unwrap();
}

async fn get(channel: &Channel, queue: &str) -> Option<lapin::message::BasicGetMessage> {
    channel
        .basic_get(queue.into(), BasicGetOptions { no_ack: true })
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_queue_is_acked_after_delivery_requeued_on_failure_and_dead_lettered_when_asked() {
    let Some((url, connection, channel)) = broker().await else {
        return;
    };
    let (orders, strict, dlx, dead) = (
        unique("orders"),
        unique("strict"),
        unique("dlx"),
        unique("dead"),
    );
    let receiver = Receiver::start().await;
    receiver.script(vec![Reply::status(500)]);
    let refusing = Receiver::start().await;
    refusing.set_default(Reply::status(400));
    let config = format!(
        r#"
flows:
  orders:
    input:
      amqp:
        url: "{url}"
        queue: "{orders}"
        prefetch: 4
        declare: {{ queues: [{{ name: "{orders}", durable: false }}] }}
    output:
      http_client: {{ url: "{out}", retry: {{ max_attempts: 1 }} }}
  strict:
    input:
      amqp:
        url: "{url}"
        queue: "{strict}"
        on_failure: dead_letter
        redelivery: {{ max_deliveries: 1 }}
        declare:
          exchanges: [{{ name: "{dlx}", kind: fanout, durable: false }}]
          queues:
            - {{ name: "{strict}", durable: false, dead_letter_exchange: "{dlx}" }}
            - {{ name: "{dead}", durable: false }}
          bindings: [{{ exchange: "{dlx}", queue: "{dead}" }}]
    output:
      http_client: {{ url: "{refuse}", retry: {{ max_attempts: 1 }} }}
"#,
        out = receiver.url("/orders"),
        refuse = refusing.url("/strict"),
    );
    let dir = scratch();
    let mut weft = Weft::start_in(dir.clone(), &config, &[], std::process::Stdio::null()).await;
    // weft declares the queues (each flow its own, concurrently); publish once all exist, or a
    // message to a queue not yet declared is dropped as unroutable.
    let mut ready = false;
    for _ in 0..100 {
        let passive = QueueDeclareOptions {
            passive: true,
            ..Default::default()
        };
        let mut all = true;
        for queue in [&orders, &dead] {
            // A failed passive declare closes its channel: one probe channel per queue.
            let probe = connection.create_channel().await.unwrap();
            all &= probe
                .queue_declare(queue.as_str().into(), passive, FieldTable::default())
                .await
                .is_ok();
        }
        if all {
            ready = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(ready, "{}", weft.stderr());
    for n in 1..=3 {
        publish(&channel, &orders, &format!(r#"{{"n": {n}}}"#)).await;
    }
    publish(&channel, &strict, r#"{"bad": true}"#).await;
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
        "one failure, requeued and delivered again"
    );

    // Refused for good: dead-lettered, not requeued.
    let mut lettered = None;
    for _ in 0..50 {
        lettered = get(&channel, &dead).await;
        if lettered.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let lettered = lettered.expect("the refused message in the dead-letter queue");
    assert_eq!(lettered.delivery.data, br#"{"bad": true}"#);
    assert_eq!(refusing.seen().len(), 1);

    // Killed mid-delivery: unacked, so the broker delivers it again to the restarted weft.
    receiver.hold();
    publish(&channel, &orders, r#"{"n": 4}"#).await;
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
    drop(weft);
    for q in [&orders, &strict, &dead] {
        let _ = channel
            .queue_delete(q.as_str().into(), QueueDeleteOptions::default())
            .await;
    }
    let _ = channel
        .exchange_delete(dlx.as_str().into(), ExchangeDeleteOptions::default())
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publishing_is_confirmed_and_an_unroutable_message_fails() {
    let Some((url, _connection, channel)) = broker().await else {
        return;
    };
    let (exchange, queue) = (unique("events"), unique("created"));
    let (port, lost) = (free_port(), free_port());
    let config = format!(
        r#"
flows:
  events:
    input:
      http_server: {{ address: "127.0.0.1:{port}", errors: detailed }}
    output:
      amqp:
        url: "{url}"
        exchange: "{exchange}"
        routing_key: order.created
        declare:
          exchanges: [{{ name: "{exchange}", kind: topic, durable: false }}]
          queues: [{{ name: "{queue}", durable: false }}]
          bindings: [{{ exchange: "{exchange}", queue: "{queue}", routing_key: "order.*" }}]
  nowhere:
    input:
      http_server: {{ address: "127.0.0.1:{lost}", errors: detailed }}
    output:
      amqp: {{ url: "{url}", exchange: "{exchange}", routing_key: nobody.listens, retry: {{ max_attempts: 1 }} }}
"#
    );
    let weft = Weft::start(&config).await;
    let (status, _, body) = post_json(&format!("http://127.0.0.1:{port}/"), r#"{"id": 7}"#).await;
    assert_eq!(status, 200, "{body} {}", weft.stderr());
    let got = get(&channel, &queue).await.expect("the published message");
    assert_eq!(got.delivery.data, br#"{"id":7}"#);
    assert_eq!(
        got.delivery
            .properties
            .content_type()
            .as_ref()
            .map(|c| c.as_str()),
        Some("application/json")
    );
    assert_eq!(*got.delivery.properties.delivery_mode(), Some(2));

    let (status, _, body) = post_json(&format!("http://127.0.0.1:{lost}/"), r#"{"id": 8}"#).await;
    assert_eq!(status, 502, "{body}");
    assert!(
        body.contains("no queue takes routing key `nobody.listens`"),
        "{body}"
    );
    let _ = channel
        .queue_delete(queue.as_str().into(), QueueDeleteOptions::default())
        .await;
    let _ = channel
        .exchange_delete(exchange.as_str().into(), ExchangeDeleteOptions::default())
        .await;
}
