//! Poison messages on every broker input of a direct flow, against the machine's Redis, NATS,
//! RabbitMQ and Mosquitto: a message that can never be delivered is offered again
//! `max_deliveries` times, then kept in the flow's dead-letter queue (as it arrived, with its
//! earlier failures) and acknowledged, while the good ones keep flowing; 25 of them do not stall
//! an MQTT subscription; and a replayed dead letter of a direct flow is delivered once.

use std::time::Duration;

use http::Method;
use rumqttc::QoS;

use crate::support::*;

const POISON: &str = r#"{"poison": true, "n": 0}"#;

/// One flow's dead letters, from the admin API.
async fn dead_letters(weft: &Weft, flow: &str) -> Vec<serde_json::Value> {
    let (status, list) = weft
        .admin_json(Method::GET, &format!("/api/v1/flows/{flow}/dlq"))
        .await;
    assert_eq!(status, 200, "{list}");
    list.as_array().cloned().unwrap_or_default()
}

async fn dead_letters_eventually(weft: &Weft, flow: &str, count: usize) -> Vec<serde_json::Value> {
    let mut last = Vec::new();
    for _ in 0..200 {
        last = dead_letters(weft, flow).await;
        if last.len() >= count {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(last.len(), count, "{flow}: {last:?}\n{}", weft.stderr());
    last
}

fn good_at(receiver: &Receiver, path: &str) -> Vec<serde_json::Value> {
    receiver
        .seen()
        .iter()
        .filter(|s| s.path == path && s.status == 200)
        .map(|s| s.json())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_poison_message_on_each_broker_is_dead_lettered_and_the_rest_flows() {
    let Some((redis_url, mut redis)) = crate::redis::redis().await else {
        return;
    };
    let Some((nats_url, nats)) = crate::nats::nats().await else {
        return;
    };
    let Some((amqp_url, _connection, channel)) = crate::amqp::broker().await else {
        return;
    };
    let mqtt_url = crate::mqtt::broker();
    let Some((mqtt, _)) = crate::mqtt::client(&mqtt_url).await else {
        return;
    };
    let (stream, list) = (crate::redis::key("poison"), crate::redis::key("jobs"));
    let (js_stream, js_subject) = (crate::nats::unique("POISON"), crate::nats::unique("poison"));
    let queue = crate::amqp::unique("poison");
    let topic = format!("weft/{}/{}/poison", std::process::id(), fastrand::u32(..));

    // Everything but MQTT (which keeps nothing for a subscriber not yet there) is queued
    // before weft starts: a poison message first, then three good ones.
    let js = async_nats::jetstream::new(nats.clone());
    js.create_stream(async_nats::jetstream::stream::Config {
        name: js_stream.clone(),
        subjects: vec![js_subject.clone()],
        ..Default::default()
    })
    .await
    .unwrap();
    channel
        .queue_declare(
            queue.as_str().into(),
            lapin::options::QueueDeclareOptions::default(),
            lapin::types::FieldTable::default(),
        )
        .await
        .unwrap();
    let good = |n: u32| format!(r#"{{"n": {n}}}"#);
    for body in [POISON.to_string(), good(1), good(2), good(3)] {
        redis::cmd("XADD")
            .arg(&stream)
            .arg("*")
            .arg("body")
            .arg(&body)
            .query_async::<String>(&mut redis)
            .await
            .unwrap();
        redis::cmd("LPUSH")
            .arg(&list)
            .arg(&body)
            .query_async::<i64>(&mut redis)
            .await
            .unwrap();
        js.publish(js_subject.clone(), body.clone().into())
            .await
            .unwrap()
            .await
            .unwrap();
    }
    // RabbitMQ: the poison message, and a good one its destination refuses three times.
    crate::amqp::publish(&channel, &queue, POISON).await;
    crate::amqp::publish(&channel, &queue, r#"{"n": 7}"#).await;

    let receiver = Receiver::start().await;
    let refusing = Receiver::start().await;
    refusing.script(vec![
        Reply::status(400),
        Reply::status(400),
        Reply::status(400),
    ]);
    let config = format!(
        r#"
flows:
  streams:
    input:
      redis_streams: {{ url: "{redis_url}", stream: "{stream}", group: weft, start: "0", claim_idle: 200ms, redelivery: {{ max_deliveries: 3 }} }}
    pipeline: {check}
    output:
      http_client: {{ url: "{out}/streams", retry: {{ max_attempts: 1 }} }}
  list:
    input:
      redis_list: {{ url: "{redis_url}", list: "{list}", workers: 2, redelivery: {{ max_deliveries: 3, backoff: 100ms }} }}
    pipeline: {check}
    output:
      http_client: {{ url: "{out}/list", retry: {{ max_attempts: 1 }} }}
  jetstream:
    input:
      nats_jetstream: {{ url: "{nats_url}", stream: "{js_stream}", ack_wait: 5s, redelivery: {{ max_deliveries: 3, backoff: 100ms }} }}
    pipeline: {check}
    output:
      http_client: {{ url: "{out}/jetstream", retry: {{ max_attempts: 1 }} }}
  rabbit:
    input:
      amqp: {{ url: "{amqp_url}", queue: "{queue}", redelivery: {{ max_deliveries: 3, backoff: 100ms }} }}
    pipeline: {check}
    output:
      http_client: {{ url: "{refuse}", retry: {{ max_attempts: 1 }} }}
  sensors:
    input:
      mqtt: {{ url: "{mqtt_url}", topics: ["{topic}"], client_id: "weft-poison-{id}", redelivery: {{ max_deliveries: 3, backoff: 100ms }} }}
    pipeline: {check}
    output:
      http_client: {{ url: "{out}/mqtt", retry: {{ max_attempts: 1 }} }}
"#,
        out = receiver.url("").trim_end_matches('/'),
        refuse = refusing.url("/rabbit"),
        id = fastrand::u64(..),
        check = r#"[{ map: 'assert!(.poison != true, "poisoned")' }]"#,
    );
    let dir = scratch();
    let weft = Weft::start_in(dir.clone(), &config, &[], std::process::Stdio::null()).await;

    // MQTT: once subscribed, 25 poison messages, then a good one.
    let warmups = warm_up(&receiver, &weft, |k| {
        let (mqtt, topic) = (mqtt.clone(), topic.clone());
        async move {
            mqtt.publish(
                &topic,
                QoS::AtLeastOnce,
                false,
                format!(r#"{{"warmup": {k}}}"#),
            )
            .await
            .unwrap();
        }
    })
    .await;
    for _ in 0..25 {
        mqtt.publish(&topic, QoS::AtLeastOnce, false, POISON)
            .await
            .unwrap();
    }
    mqtt.publish(&topic, QoS::AtLeastOnce, false, r#"{"n": 26}"#)
        .await
        .unwrap();

    for path in ["/streams", "/list", "/jetstream"] {
        assert!(
            eventually(Duration::from_secs(15), || good_at(&receiver, path).len()
                == 3)
            .await,
            "{path}: {:?}\n{}",
            good_at(&receiver, path),
            weft.stderr()
        );
    }
    assert!(
        eventually(Duration::from_secs(15), || good_at(&receiver, "/mqtt")
            .contains(&serde_json::json!({"n": 26})))
        .await,
        "{}",
        weft.stderr()
    );

    // Each poison message once in its flow's dead-letter queue, as it arrived, after three
    // deliveries.
    for flow in ["streams", "list", "jetstream", "rabbit"] {
        let dead = dead_letters_eventually(&weft, flow, if flow == "rabbit" { 2 } else { 1 }).await;
        let poison = dead
            .iter()
            .find(|d| d["message"] == serde_json::json!({"poison": true, "n": 0}))
            .unwrap_or_else(|| panic!("{flow}: {dead:?}"));
        assert_eq!(poison["attempts"], 3, "{flow}: {poison}");
        assert!(
            poison["reason"].as_str().unwrap().contains("poisoned"),
            "{flow}: {poison}"
        );
    }
    let sensors = dead_letters_eventually(&weft, "sensors", 25).await;
    assert!(sensors.iter().all(|d| d["attempts"] == 3));
    // Where weft itself offered it again, every delivery is in its history.
    let one = &dead_letters(&weft, "list").await[0];
    let (_, full) = weft
        .admin_json(
            Method::GET,
            &format!("/api/v1/flows/list/dlq/{}", one["id"].as_str().unwrap()),
        )
        .await;
    let outcomes: Vec<&str> = full["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["outcome"].as_str().unwrap())
        .collect();
    assert_eq!(outcomes, ["retry", "retry", "dead_lettered"], "{full}");
    // Nothing is left with the brokers.
    assert_eq!(crate::redis::pending(&mut redis, &stream).await, 0);
    let metrics = weft.metrics().await;
    assert!(
        metrics.contains(r#"weft_messages_dead_lettered_total{flow="list",stage="pipeline"} 1"#),
        "{metrics}"
    );
    let _ = warmups;

    // RabbitMQ's good message failed at its destination three times; replayed now that the
    // destination accepts, it is delivered once and leaves the dead-letter queue.
    let refused = dead_letters(&weft, "rabbit").await;
    let refused = refused
        .iter()
        .find(|d| d["message"] == serde_json::json!({"n": 7}))
        .expect("the refused message");
    let (status, body) = weft
        .admin_json(
            Method::POST,
            &format!(
                "/api/v1/flows/rabbit/dlq/replay?id={}",
                refused["id"].as_str().unwrap()
            ),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert!(
        eventually(Duration::from_secs(10), || refusing
            .seen()
            .iter()
            .filter(|s| s.status == 200)
            .count()
            == 1)
        .await,
        "{}",
        weft.stderr()
    );
    dead_letters_eventually(&weft, "rabbit", 1).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(refusing.seen().len(), 4, "three refusals, one delivery");

    drop(weft);
    let _: () = redis::cmd("DEL")
        .arg(&stream)
        .arg(&list)
        .query_async(&mut redis)
        .await
        .unwrap();
    js.delete_stream(&js_stream).await.unwrap();
    let _ = channel
        .queue_delete(queue.as_str().into(), Default::default())
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_inputs_can_give_up_to_a_dead_letter_list_or_stream_of_redis() {
    let Some((redis_url, mut redis)) = crate::redis::redis().await else {
        return;
    };
    let (stream, dead_stream) = (crate::redis::key("in"), crate::redis::key("dead"));
    let (list, dead_list) = (crate::redis::key("jobs"), crate::redis::key("deadjobs"));
    for body in [POISON, r#"{"n": 1}"#] {
        redis::cmd("XADD")
            .arg(&stream)
            .arg("*")
            .arg("body")
            .arg(body)
            .query_async::<String>(&mut redis)
            .await
            .unwrap();
        redis::cmd("LPUSH")
            .arg(&list)
            .arg(body)
            .query_async::<i64>(&mut redis)
            .await
            .unwrap();
    }
    let receiver = Receiver::start().await;
    let config = format!(
        r#"
flows:
  streams:
    input:
      redis_streams: {{ url: "{redis_url}", stream: "{stream}", group: weft, start: "0", claim_idle: 100ms, redelivery: {{ max_deliveries: 2 }}, dead_letter_stream: "{dead_stream}" }}
    pipeline: {check}
    output:
      http_client: {{ url: "{out}/streams", retry: {{ max_attempts: 1 }} }}
  list:
    input:
      redis_list: {{ url: "{redis_url}", list: "{list}", redelivery: {{ max_deliveries: 2, backoff: 50ms }}, dead_letter_list: "{dead_list}" }}
    pipeline: {check}
    output:
      http_client: {{ url: "{out}/list", retry: {{ max_attempts: 1 }} }}
"#,
        out = receiver.url("").trim_end_matches('/'),
        check = r#"[{ map: 'assert!(.poison != true, "poisoned")' }]"#,
    );
    let weft = Weft::start(&config).await;
    let mut dead_items = Vec::new();
    let mut dead_entries = 0;
    for _ in 0..100 {
        dead_items = redis::cmd("LRANGE")
            .arg(&dead_list)
            .arg(0)
            .arg(-1)
            .query_async::<Vec<String>>(&mut redis)
            .await
            .unwrap();
        dead_entries = redis::cmd("XLEN")
            .arg(&dead_stream)
            .query_async::<i64>(&mut redis)
            .await
            .unwrap();
        if !dead_items.is_empty() && dead_entries == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(dead_items, [POISON], "{}", weft.stderr());
    assert_eq!(dead_entries, 1, "{}", weft.stderr());
    let entry: redis::streams::StreamRangeReply = redis::cmd("XRANGE")
        .arg(&dead_stream)
        .arg("-")
        .arg("+")
        .query_async(&mut redis)
        .await
        .unwrap();
    let fields = &entry.ids[0].map;
    assert_eq!(
        redis::from_redis_value_ref::<String>(&fields["body"]).unwrap(),
        POISON
    );
    assert!(fields.contains_key("weft_source_id"));
    assert!(
        eventually(Duration::from_secs(5), || good_at(&receiver, "/streams")
            .len()
            == 1
            && good_at(&receiver, "/list").len() == 1)
        .await
    );
    assert_eq!(crate::redis::pending(&mut redis, &stream).await, 0);
    let _: () = redis::cmd("DEL")
        .arg(&stream)
        .arg(&dead_stream)
        .arg(&list)
        .arg(&dead_list)
        .query_async(&mut redis)
        .await
        .unwrap();
}

/// A source that keeps nothing (pub/sub) gets the same give-up path: weft offers the message
/// again itself, then keeps it as a dead letter.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pubsub_message_that_keeps_failing_is_kept_as_a_dead_letter() {
    let Some((redis_url, mut redis)) = crate::redis::redis().await else {
        return;
    };
    let channel = crate::redis::key("events");
    let receiver = Receiver::start().await;
    let config = format!(
        r#"
flows:
  events:
    input:
      redis_pubsub: {{ url: "{redis_url}", channels: ["{channel}"], redelivery: {{ max_deliveries: 2, backoff: 50ms }} }}
    pipeline: [{{ map: 'assert!(.poison != true, "poisoned")' }}]
    output:
      http_client: {{ url: "{out}", retry: {{ max_attempts: 1 }} }}
"#,
        out = receiver.url("/events"),
    );
    let weft = Weft::start(&config).await;
    // Published until the subscription is up (Redis keeps nothing for late subscribers).
    let publish = |body: &'static str| {
        let mut redis = redis.clone();
        let channel = channel.clone();
        async move {
            redis::cmd("PUBLISH")
                .arg(&channel)
                .arg(body)
                .query_async::<i64>(&mut redis)
                .await
                .unwrap();
        }
    };
    warm_up(&receiver, &weft, |_| publish(r#"{"warmup": true}"#)).await;
    publish(POISON).await;
    let dead = dead_letters_eventually(&weft, "events", 1).await;
    assert_eq!(
        dead[0]["message"],
        serde_json::json!({"poison": true, "n": 0})
    );
    assert_eq!(dead[0]["attempts"], 2);
    let _: i64 = redis::cmd("PUBLISH")
        .arg(&channel)
        .arg("{}")
        .query_async(&mut redis)
        .await
        .unwrap();
}
