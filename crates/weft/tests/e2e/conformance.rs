//! One conformance scenario for every ack-based broker connector, run broker → `map` → broker
//! against the real servers of this machine: each message comes out intact (and mapped), the
//! flow's metrics count them, a weft killed mid-flow and started again loses nothing (a
//! message may come out twice, never zero times), and a stop drains what is under way.

use std::collections::BTreeSet;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use redis::AsyncCommands;

use crate::support::*;

/// What the scenario needs of a broker: how the flow reads and writes it, how the test puts
/// messages in and reads what came out.
struct Case<P, C> {
    name: &'static str,
    input: String,
    output: String,
    produce: P,
    collect: C,
}

fn value_of(metrics: &str, name: &str, flow: &str) -> f64 {
    metrics
        .lines()
        .filter(|l| l.starts_with(&format!("{name}{{")) && l.contains(&format!("flow=\"{flow}\"")))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

async fn run<P, PF, C, CF>(case: Case<P, C>)
where
    P: Fn(Vec<String>) -> PF,
    PF: Future<Output = ()>,
    C: Fn() -> CF,
    CF: Future<Output = Vec<serde_json::Value>>,
{
    let name = case.name;
    let config = format!(
        r#"
flows:
  copy:
    input:
{input}
    pipeline:
      - map: .copied = true
    output:
{output}
"#,
        input = case.input,
        output = case.output
    );
    let numbers = |values: &[serde_json::Value]| -> BTreeSet<i64> {
        values.iter().filter_map(|v| v["n"].as_i64()).collect()
    };
    let dir = scratch();
    let mut weft = Weft::start_in(dir.clone(), &config, &[], std::process::Stdio::null()).await;
    // Until the input is reading (a subscription may not exist yet), a warm-up goes round.
    let mut ready = false;
    for k in 0..100 {
        (case.produce)(vec![format!(r#"{{"warmup": {k}}}"#)]).await;
        tokio::time::sleep(Duration::from_millis(100)).await;
        if !(case.collect)().await.is_empty() {
            ready = true;
            break;
        }
    }
    assert!(ready, "{name}: nothing came out: {}", weft.stderr());

    // Intact and mapped.
    let body = |n: i64| format!(r#"{{"n": {n}, "text": "naïve \"quoted\" {n}"}}"#);
    (case.produce)((0..50).map(body).collect()).await;
    let mut out = Vec::new();
    for _ in 0..100 {
        out = (case.collect)().await;
        if numbers(&out).len() == 50 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(numbers(&out).len(), 50, "{name}: {}", weft.stderr());
    for v in out.iter().filter(|v| v.get("n").is_some()) {
        let n = v["n"].as_i64().unwrap();
        assert_eq!(
            v,
            &serde_json::json!({"n": n, "text": format!("naïve \"quoted\" {n}"), "copied": true}),
            "{name}"
        );
    }
    let metrics = weft.metrics().await;
    assert!(
        value_of(&metrics, "weft_messages_received_total", "copy") >= 50.0
            && value_of(&metrics, "weft_messages_sent_total", "copy") >= 50.0,
        "{name}: {metrics}"
    );

    // Killed mid-flow, started again: nothing is lost.
    (case.produce)((50..250).map(body).collect()).await;
    // Killed once the second batch is on its way through (a message or more of it out).
    for _ in 0..400 {
        if numbers(&(case.collect)().await).len() > 50 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    weft.kill();
    let mut weft = Weft::start_in(dir, &config, &[], std::process::Stdio::null()).await;
    for _ in 0..200 {
        out = (case.collect)().await;
        if numbers(&out).len() == 250 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let missing: Vec<i64> = (0..250).filter(|n| !numbers(&out).contains(n)).collect();
    assert!(
        missing.is_empty(),
        "{name}: lost {missing:?}: {}",
        weft.stderr()
    );

    // A stop drains and ends cleanly.
    (case.produce)((250..260).map(body).collect()).await;
    weft.terminate();
    let status = weft.wait(Duration::from_secs(15)).await;
    assert!(status.success(), "{name}: {status}: {}", weft.stderr());
}

fn parse(bytes: &[u8]) -> Option<serde_json::Value> {
    serde_json::from_slice(bytes).ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_streams_and_lists() {
    let url = std::env::var("WEFT_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    let conn = match redis::Client::open(url.as_str()) {
        Ok(c) => c.get_multiplexed_async_connection().await,
        Err(e) => Err(e),
    };
    let conn = match conn {
        Ok(c) => c,
        Err(e) => return service_missing("WEFT_REDIS_URL", &url, e),
    };
    let id = format!("{}:{}", std::process::id(), fastrand::u32(..));
    let (source, target) = (format!("weft:c:in:{id}"), format!("weft:c:out:{id}"));
    run(Case {
        name: "redis_streams",
        input: format!(
            r#"      redis_streams: {{ url: "{url}", stream: "{source}", group: g, start: "0" }}"#
        ),
        output: format!(r#"      redis_streams: {{ url: "{url}", stream: "{target}" }}"#),
        produce: |bodies: Vec<String>| {
            let (mut conn, source) = (conn.clone(), source.clone());
            async move {
                for b in bodies {
                    let _: String = conn.xadd(&source, "*", &[("body", b)]).await.unwrap();
                }
            }
        },
        collect: || {
            let (mut conn, target) = (conn.clone(), target.clone());
            async move {
                let entries: redis::streams::StreamRangeReply =
                    conn.xrange_all(&target).await.unwrap();
                entries
                    .ids
                    .iter()
                    .filter_map(|e| {
                        let body: Vec<u8> =
                            redis::from_redis_value(e.map.get("body")?.clone()).ok()?;
                        parse(&body)
                    })
                    .collect()
            }
        },
    })
    .await;
    let _: i64 = conn.clone().del(&[&source, &target]).await.unwrap();

    let (source, target) = (format!("weft:c:jobs:{id}"), format!("weft:c:done:{id}"));
    run(Case {
        name: "redis_list",
        input: format!(r#"      redis_list: {{ url: "{url}", list: "{source}" }}"#),
        output: format!(r#"      redis_list: {{ url: "{url}", list: "{target}" }}"#),
        produce: |bodies: Vec<String>| {
            let (mut conn, source) = (conn.clone(), source.clone());
            async move {
                for b in bodies {
                    let _: i64 = conn.lpush(&source, b).await.unwrap();
                }
            }
        },
        collect: || {
            let (mut conn, target) = (conn.clone(), target.clone());
            async move {
                let items: Vec<Vec<u8>> = conn.lrange(&target, 0, -1).await.unwrap();
                items.iter().filter_map(|b| parse(b)).collect()
            }
        },
    })
    .await;
    let _: i64 = conn.clone().del(&[&source, &target]).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_jetstream() {
    let url = std::env::var("WEFT_NATS_URL").unwrap_or_else(|_| "nats://127.0.0.1:4222".into());
    let client = match async_nats::connect(&url).await {
        Ok(c) => c,
        Err(e) => return service_missing("WEFT_NATS_URL", &url, e),
    };
    let js = async_nats::jetstream::new(client);
    let id = format!("{}_{}", std::process::id(), fastrand::u32(..));
    let (source, target) = (format!("CIN_{id}"), format!("COUT_{id}"));
    for (stream, subject) in [
        (&source, format!("cin.{id}")),
        (&target, format!("cout.{id}")),
    ] {
        js.create_stream(async_nats::jetstream::stream::Config {
            name: stream.clone(),
            subjects: vec![subject],
            ..Default::default()
        })
        .await
        .unwrap();
    }
    run(Case {
        name: "nats_jetstream",
        input: format!(
            r#"      nats_jetstream: {{ url: "{url}", stream: "{source}", ack_wait: 2s }}"#
        ),
        output: format!(r#"      nats_jetstream: {{ url: "{url}", subject: "cout.{id}" }}"#),
        produce: |bodies: Vec<String>| {
            let (js, subject) = (js.clone(), format!("cin.{id}"));
            async move {
                for b in bodies {
                    js.publish(subject.clone(), b.into())
                        .await
                        .unwrap()
                        .await
                        .unwrap();
                }
            }
        },
        collect: || {
            let (js, target) = (js.clone(), target.clone());
            async move {
                let mut stream = js.get_stream(&target).await.unwrap();
                let last = stream.info().await.unwrap().state.last_sequence;
                let mut out = Vec::new();
                for seq in 1..=last {
                    if let Ok(m) = stream.get_raw_message(seq).await
                        && let Some(v) = parse(&m.payload)
                    {
                        out.push(v);
                    }
                }
                out
            }
        },
    })
    .await;
    js.delete_stream(&source).await.unwrap();
    js.delete_stream(&target).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rabbitmq() {
    use lapin::options::{
        BasicGetOptions, BasicPublishOptions, QueueDeclareOptions, QueueDeleteOptions,
    };
    let url = std::env::var("WEFT_AMQP_URL")
        .unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".into());
    let connection =
        match lapin::Connection::connect(&url, lapin::ConnectionProperties::default()).await {
            Ok(c) => c,
            Err(e) => return service_missing("WEFT_AMQP_URL", &url, e),
        };
    let channel = connection.create_channel().await.unwrap();
    let id = format!("{}.{}", std::process::id(), fastrand::u32(..));
    let (source, target) = (format!("weft.c.in.{id}"), format!("weft.c.out.{id}"));
    for q in [&source, &target] {
        channel
            .queue_declare(
                q.as_str().into(),
                QueueDeclareOptions::default(),
                lapin::types::FieldTable::default(),
            )
            .await
            .unwrap();
    }
    let seen: Arc<Mutex<Vec<serde_json::Value>>> = Arc::default();
    run(Case {
        name: "amqp",
        input: format!(r#"      amqp: {{ url: "{url}", queue: "{source}", prefetch: 8 }}"#),
        output: format!(r#"      amqp: {{ url: "{url}", routing_key: "{target}" }}"#),
        produce: |bodies: Vec<String>| {
            let (channel, source) = (channel.clone(), source.clone());
            async move {
                for b in bodies {
                    channel
                        .basic_publish(
                            "".into(),
                            source.as_str().into(),
                            BasicPublishOptions::default(),
                            b.as_bytes(),
                            lapin::BasicProperties::default(),
                        )
                        .await
                        .unwrap();
                }
            }
        },
        collect: || {
            let (channel, target, seen) = (channel.clone(), target.clone(), seen.clone());
            async move {
                while let Some(m) = channel
                    .basic_get(target.as_str().into(), BasicGetOptions { no_ack: true })
                    .await
                    .unwrap()
                {
                    if let Some(v) = parse(&m.delivery.data) {
                        seen.lock().unwrap().push(v);
                    }
                }
                seen.lock().unwrap().clone()
            }
        },
    })
    .await;
    for q in [&source, &target] {
        let _ = channel
            .queue_delete(q.as_str().into(), QueueDeleteOptions::default())
            .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt() {
    use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
    let url = std::env::var("WEFT_MQTT_URL").unwrap_or_else(|_| "mqtt://127.0.0.1:1883".into());
    let parsed = url::Url::parse(&url).unwrap();
    let mut options = MqttOptions::new(
        format!("weft-conformance-{}", fastrand::u64(..)),
        parsed.host_str().unwrap(),
        parsed.port().unwrap_or(1883),
    );
    options.set_inflight(1000);
    let (client, mut events) = AsyncClient::new(options, 1024);
    match tokio::time::timeout(Duration::from_secs(5), events.poll()).await {
        Ok(Ok(_)) => {}
        Ok(Err(e)) => return service_missing("WEFT_MQTT_URL", &url, e),
        Err(_) => return service_missing("WEFT_MQTT_URL", &url, "no answer within 5s"),
    }
    let id = format!("{}/{}", std::process::id(), fastrand::u32(..));
    let (source, target) = (format!("weft/c/in/{id}"), format!("weft/c/out/{id}"));
    let seen: Arc<Mutex<Vec<serde_json::Value>>> = Arc::default();
    let s = seen.clone();
    tokio::spawn(async move {
        while let Ok(event) = events.poll().await {
            if let Event::Incoming(Packet::Publish(p)) = event
                && let Some(v) = parse(&p.payload)
            {
                s.lock().unwrap().push(v);
            }
        }
    });
    client
        .subscribe(target.clone(), QoS::AtLeastOnce)
        .await
        .unwrap();
    run(Case {
        name: "mqtt",
        input: format!(
            r#"      mqtt: {{ url: "{url}", topics: ["{source}"], client_id: "weft-c-{}" }}"#,
            fastrand::u64(..)
        ),
        output: format!(r#"      mqtt: {{ url: "{url}", topic: "{target}", qos: 1 }}"#),
        produce: |bodies: Vec<String>| {
            let (client, source) = (client.clone(), source.clone());
            async move {
                for b in bodies {
                    client
                        .publish(&source, QoS::AtLeastOnce, false, b)
                        .await
                        .unwrap();
                }
            }
        },
        collect: || {
            let seen = seen.clone();
            async move { seen.lock().unwrap().clone() }
        },
    })
    .await;
}
