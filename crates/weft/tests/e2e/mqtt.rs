//! MQTT connectors against the machine's Mosquitto: QoS 1 in a persistent session, acked after
//! delivery (a failure offered again, messages sent while weft was stopped delivered after it
//! starts again), and publishing with QoS 1 to a templated topic. Topics are unique per test.

use std::time::Duration;

use rumqttc::{AsyncClient, Event, EventLoop, MqttOptions, Packet, QoS};

use crate::support::*;

/// A test client with its event loop polled in the background; incoming publishes on the
/// channel.
pub(crate) async fn client(
    url: &str,
) -> Option<(
    AsyncClient,
    tokio::sync::mpsc::UnboundedReceiver<rumqttc::Publish>,
)> {
    let parsed = url::Url::parse(url).unwrap();
    let options = MqttOptions::new(
        format!("weft-test-{}", fastrand::u64(..)),
        parsed.host_str().unwrap(),
        parsed.port().unwrap_or(1883),
    );
    let (client, mut events): (AsyncClient, EventLoop) = AsyncClient::new(options, 64);
    // The first event tells whether the broker is there.
    match tokio::time::timeout(Duration::from_secs(5), events.poll()).await {
        Ok(Ok(_)) => {}
        Ok(Err(e)) => {
            service_missing("WEFT_MQTT_URL", url, e);
            return None;
        }
        Err(_) => {
            service_missing("WEFT_MQTT_URL", url, "no answer within 5s");
            return None;
        }
    }
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok(event) = events.poll().await {
            if let Event::Incoming(Packet::Publish(p)) = event {
                let _ = tx.send(p);
            }
        }
    });
    Some((client, rx))
}

pub(crate) fn broker() -> String {
    std::env::var("WEFT_MQTT_URL").unwrap_or_else(|_| "mqtt://127.0.0.1:1883".into())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_persistent_session_acks_after_delivery_and_keeps_what_came_while_away() {
    persistent_session("3.1.1").await;
}

/// Under MQTT 5 a session ends with the connection unless it asks for an expiry interval: the
/// readings published while weft is stopped show that weft asked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt_5_keeps_the_session_too() {
    persistent_session("5").await;
}

async fn persistent_session(version: &str) {
    let url = broker();
    let Some((publisher, _)) = client(&url).await else {
        return;
    };
    let topic = format!("weft/{}/{}/readings", std::process::id(), fastrand::u32(..));
    let receiver = Receiver::start().await;
    receiver.script(vec![Reply::status(500)]);
    let config = format!(
        r#"
flows:
  readings:
    input:
      mqtt: {{ url: "{url}", topics: ["{topic}"], client_id: "weft-e2e-{id}", version: "{version}" }}
    pipeline:
      - map: 'if is_object(.) {{ .topic = %mqtt.topic }}'
    output:
      http_client: {{ url: "{out}", retry: {{ max_attempts: 1 }} }}
"#,
        id = fastrand::u64(..),
        out = receiver.url("/readings")
    );
    let dir = scratch();
    let mut weft = Weft::start_in(dir.clone(), &config, &[], std::process::Stdio::null()).await;
    // Publish until the subscription is up; then three readings.
    let warmups = warm_up(&receiver, &weft, |k| {
        let (publisher, topic) = (publisher.clone(), topic.clone());
        async move {
            publisher
                .publish(
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
    // The first delivery failed: that message is offered again and arrives. A warm-up
    // published before the subscription was up is not the broker's to keep; every one from
    // the first that reached weft on must arrive.
    let ok = |r: &Receiver| r.seen().iter().filter(|s| s.status == 200).count();
    let warmup = |s: &Seen| s.json()["warmup"].as_u64().map(|k| k as usize);
    let all_from_the_first = |r: &Receiver| {
        let seen = r.seen();
        let Some(first) = seen.iter().filter_map(warmup).min() else {
            return false;
        };
        let mut ok: Vec<usize> = seen
            .iter()
            .filter(|s| s.status == 200)
            .filter_map(warmup)
            .collect();
        ok.sort_unstable();
        ok.dedup();
        ok == (first..warmups).collect::<Vec<_>>()
    };
    assert!(
        eventually(Duration::from_secs(10), || all_from_the_first(&receiver)).await,
        "{} warmups, seen {:?}\n{}",
        warmups,
        receiver
            .seen()
            .iter()
            .map(|s| (s.status, s.body.clone()))
            .collect::<Vec<_>>(),
        weft.stderr()
    );
    let warmups = ok(&receiver);
    for reading in 1..=3 {
        publisher
            .publish(
                &topic,
                QoS::AtLeastOnce,
                false,
                format!(r#"{{"reading": {reading}}}"#),
            )
            .await
            .unwrap();
    }
    assert!(
        eventually(Duration::from_secs(10), || ok(&receiver) == warmups + 3).await,
        "{}",
        weft.stderr()
    );

    // Stopped: the broker keeps the session and what is published meanwhile.
    weft.terminate();
    weft.wait(Duration::from_secs(10)).await;
    for reading in 4..=5 {
        publisher
            .publish(
                &topic,
                QoS::AtLeastOnce,
                false,
                format!(r#"{{"reading": {reading}}}"#),
            )
            .await
            .unwrap();
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let weft = Weft::start_in(dir, &config, &[], std::process::Stdio::null()).await;
    assert!(
        eventually(Duration::from_secs(10), || ok(&receiver) == warmups + 5).await,
        "{}",
        weft.stderr()
    );
    // Messages are delivered concurrently (up to the flow's `concurrency`), so in any order.
    let mut readings: Vec<i64> = receiver
        .seen()
        .iter()
        .filter(|s| s.status == 200)
        .filter_map(|s| s.json()["reading"].as_i64())
        .collect();
    readings.sort_unstable();
    assert_eq!(readings, [1, 2, 3, 4, 5]);
    assert!(
        receiver
            .seen()
            .iter()
            .all(|s| s.json()["topic"] == serde_json::json!(topic))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publishing_with_qos_1_to_a_templated_topic() {
    publishing("3.1.1").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publishing_with_mqtt_5() {
    publishing("5").await;
}

async fn publishing(version: &str) {
    let url = broker();
    let Some((subscriber, mut heard)) = client(&url).await else {
        return;
    };
    let base = format!("weft/{}/{}", std::process::id(), fastrand::u32(..));
    subscriber
        .subscribe(format!("{base}/+/commands"), QoS::AtLeastOnce)
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let port = free_port();
    let config = format!(
        r#"
flows:
  commands:
    input:
      http_server: {{ address: "127.0.0.1:{port}", errors: detailed }}
    output:
      mqtt: {{ url: "{url}", topic: "{base}/{{{{ .device }}}}/commands", qos: 1, version: "{version}" }}
"#
    );
    let weft = Weft::start(&config).await;
    let (status, _, body) = post_json(
        &format!("http://127.0.0.1:{port}/"),
        r#"{"device": "d7", "cmd": "reboot"}"#,
    )
    .await;
    assert_eq!(status, 200, "{body} {}", weft.stderr());
    let publish = tokio::time::timeout(Duration::from_secs(5), heard.recv())
        .await
        .expect("a publication")
        .unwrap();
    assert_eq!(publish.topic, format!("{base}/d7/commands"));
    // A topic a message cannot be published to fails it for good, naming why.
    let (status, _, body) = post_json(
        &format!("http://127.0.0.1:{port}/"),
        r#"{"device": "all/#", "cmd": "reboot"}"#,
    )
    .await;
    assert_eq!(status, 502, "{body}");
    assert!(body.contains("wildcards"), "{body}");
    assert_eq!(
        serde_json::from_slice::<serde_json::Value>(&publish.payload).unwrap(),
        serde_json::json!({"device": "d7", "cmd": "reboot"})
    );
}
