//! The `kafka` output and input against librdkafka's mock cluster (three brokers in this test
//! process, on loopback; weft runs as its own process): records written with a key and
//! headers by the idempotent producer and read back by a consumer group, each once, with
//! their `%kafka` metadata; a clean stop; the conformance scenario (weft SIGKILLed while a
//! partition's messages are being delivered loses none of them after a restart, since offsets
//! are committed only past delivered messages); config errors at their fields.

use std::process::Stdio;
use std::time::Duration;

use rdkafka::ClientConfig;
use rdkafka::mocking::MockCluster;
use rdkafka::producer::{FutureProducer, FutureRecord};

use crate::support::*;

fn cluster(
    topic: &str,
    partitions: i32,
) -> MockCluster<'static, rdkafka::producer::DefaultProducerContext> {
    let cluster = MockCluster::new(3).expect("librdkafka's mock cluster");
    cluster.create_topic(topic, partitions, 3).unwrap();
    cluster
}

/// Writes `(key, value)` records to `topic`, each confirmed.
async fn produce(brokers: &str, topic: &str, records: &[(String, String)]) {
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()
        .unwrap();
    for (key, value) in records {
        producer
            .send(
                FutureRecord::to(topic).payload(value).key(key),
                Duration::from_secs(10),
            )
            .await
            .map_err(|(e, _)| e)
            .unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_go_through_kafka_and_come_back_once_each() {
    let cluster = cluster("orders", 3);
    let brokers = cluster.bootstrap_servers();
    let receiver = Receiver::start().await;
    let port = free_port();
    let config = format!(
        r#"
flows:
  produce:
    input:
      http_server: {{ address: "127.0.0.1:{port}", errors: detailed }}
    output:
      kafka:
        brokers: [{brokers}]
        topic: orders
        key: "{{{{ .id }}}}"
        headers: {{ source: weft, id: "{{{{ .id }}}}" }}
        compression: lz4
  consume:
    input:
      kafka:
        brokers: [{brokers}]
        topics: [orders]
        group: weft-test
        # The mock cluster rebalances a group that had members only after a session timeout
        # (less a second), even when they left; a broker would take the newcomer at once.
        session_timeout: 6s
    pipeline:
      - map: |
          . = {{ "id": .id, "key": %kafka.key, "topic": %kafka.topic, "source": %kafka.headers.source, "offset": %kafka.offset }}
    output:
      http_client: {{ url: "{to}" }}
"#,
        to = receiver.url("/orders"),
    );
    let mut weft = Weft::start(&config).await;
    let url = format!("http://127.0.0.1:{port}/");
    for id in 1..=6 {
        let (status, _, body) = post_json(&url, &format!(r#"{{"id": {id}}}"#)).await;
        assert!(status.is_success(), "{status} {body}\n{}", weft.stderr());
    }
    let seen = || {
        let mut seen: Vec<serde_json::Value> = receiver.seen().iter().map(|s| s.json()).collect();
        seen.sort_by_key(|v| v["id"].as_i64());
        seen
    };
    assert!(
        eventually(Duration::from_secs(30), || seen().len() >= 6).await,
        "{:?}\n{}",
        seen(),
        weft.stderr()
    );
    let first = &seen()[0];
    assert_eq!(first["id"], 1);
    assert_eq!(first["key"], "1");
    assert_eq!(first["topic"], "orders");
    assert_eq!(first["source"], "weft");
    assert!(first["offset"].is_i64(), "{first}");
    tokio::time::sleep(Duration::from_secs(1)).await;
    let ids: Vec<i64> = seen().iter().map(|v| v["id"].as_i64().unwrap()).collect();
    assert_eq!(ids, [1, 2, 3, 4, 5, 6], "each record once");

    // A clean stop: what was delivered is committed, and weft ends with success.
    weft.terminate();
    let status = weft.wait(Duration::from_secs(20)).await;
    assert!(status.success(), "{status:?}\n{}", weft.stderr());
    // Read again by the same group, nothing comes twice.
    let again = format!(
        r#"
flows:
  consume:
    input:
      kafka: {{ brokers: [{brokers}], topics: [orders], group: weft-test, session_timeout: 6s }}
    output:
      http_client: {{ url: "{to}" }}
"#,
        to = receiver.url("/again"),
    );
    let weft = Weft::start(&again).await;
    // A seventh record, written now: the group reads it, and only it.
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        .create()
        .unwrap();
    producer
        .send(
            FutureRecord::<(), _>::to("orders").payload(r#"{"id": 7}"#),
            Duration::from_secs(10),
        )
        .await
        .map_err(|(e, _)| e)
        .unwrap();
    assert!(
        eventually(Duration::from_secs(30), || seen().len() >= 7).await,
        "{}",
        weft.stderr()
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    let again: Vec<i64> = seen()[6..]
        .iter()
        .map(|v| v["id"].as_i64().unwrap())
        .collect();
    assert_eq!(again, [7], "committed at the stop\n{}", weft.stderr());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_record_is_lost_when_weft_is_killed_while_they_are_delivered() {
    let cluster = cluster("batch", 1);
    let brokers = cluster.bootstrap_servers();
    let records: Vec<(String, String)> = (1..=60)
        .map(|n| (n.to_string(), format!(r#"{{"n": {n}}}"#)))
        .collect();
    produce(&brokers, "batch", &records).await;
    let receiver = Receiver::start().await;
    receiver.set_delay(Duration::from_millis(40));
    let config = format!(
        r#"
flows:
  batch:
    input:
      kafka: {{ brokers: [{brokers}], topics: [batch], group: conformance, commit_interval: 100ms, session_timeout: 6s, max_in_flight: 3 }}
    concurrency: 4
    output:
      http_client: {{ url: "{to}" }}
"#,
        to = receiver.url("/in"),
    );
    // Three under way at most.
    let run_dir = scratch();
    let mut weft = Weft::start_in(run_dir.clone(), &config, &[], Stdio::null()).await;
    kill_mid_way(&mut weft, &receiver, Duration::from_secs(30), 60).await;
    // After the restart the receiver holds its answers for 12s: with three under way for
    // over 10s the partition is paused (what was fetched ahead is kept), then resumed.
    receiver.hold();
    let weft = Weft::start_in(run_dir, &config, &[], Stdio::null()).await;
    tokio::time::sleep(Duration::from_secs(12)).await;
    receiver.release();
    all_arrive(&receiver, "/n", 60, Duration::from_secs(60), &weft).await;
}

#[test]
fn kafka_config_errors_are_named_at_their_fields() {
    let dir = scratch();
    std::fs::write(
        dir.join("weft.yaml"),
        "flows:\n  f:\n    input:\n      kafka:\n        brokers: [\"ssl://k:9093\"]\n        topics: []\n        group: g\n    output:\n      kafka:\n        brokers: [k:9092]\n        topic: \"{{ .x\"\n",
    )
    .unwrap();
    let (status, out, err) = weft_cmd(&["check", "weft.yaml"], &dir);
    let said = format!("{out}{err}");
    assert!(!status.success(), "{said}");
    assert!(said.contains("plaintext only"), "{said}");
    assert!(said.contains("name at least one topic"), "{said}");
    assert!(said.contains("weft.yaml:5:"), "brokers located: {said}");
    assert!(
        said.contains("weft.yaml:11:"),
        "the topic's template located: {said}"
    );
}

/// The conformance scenario (`support::an_output_loses_nothing_to_a_kill`) for the output:
/// every message becomes a record even when weft is killed half-way.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_record_is_lost_when_weft_is_killed_while_writing() {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    use rdkafka::{Message as _, Offset, TopicPartitionList};
    let cluster = cluster("out", 2);
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", cluster.bootstrap_servers())
        .set("group.id", "check")
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    let mut partitions = TopicPartitionList::new();
    for p in 0..2 {
        partitions
            .add_partition_offset("out", p, Offset::Beginning)
            .unwrap();
    }
    consumer.assign(&partitions).unwrap();
    let seen = std::sync::Mutex::new(std::collections::BTreeSet::new());
    let output = format!(
        r#"kafka: {{ brokers: [{}], topic: out }}"#,
        cluster.bootstrap_servers()
    );
    an_output_loses_nothing_to_a_kill(&output, || {
        let mut seen = seen.lock().unwrap();
        while let Some(Ok(record)) = consumer.poll(Duration::from_millis(10)) {
            let n = record
                .payload()
                .and_then(|p| serde_json::from_slice::<serde_json::Value>(p).ok())
                .and_then(|v| v["n"].as_i64());
            seen.extend(n);
        }
        seen.clone()
    })
    .await;
}

/// A record whose delivery keeps failing is offered again under one id (each delivery makes
/// its message afresh from the record) and then kept as a dead letter under that id, with its
/// body and its `%kafka` metadata.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_that_keeps_failing_is_dead_lettered_under_one_id() {
    let cluster = cluster("bad", 1);
    let brokers = cluster.bootstrap_servers();
    produce(&brokers, "bad", &[("k1".into(), r#"{"n": 1}"#.into())]).await;
    let receiver = Receiver::start().await;
    receiver.set_default(Reply::status(500));
    let config = format!(
        r#"
flows:
  bad:
    input:
      kafka: {{ brokers: [{brokers}], topics: [bad], group: bad, session_timeout: 6s, redelivery: {{ max_deliveries: 3, backoff: 50ms }} }}
    output:
      http_client: {{ url: "{to}", retry: {{ max_attempts: 1 }} }}
"#,
        to = receiver.url("/in"),
    );
    let dir = scratch();
    let mut weft = Weft::start_in(dir.clone(), &config, &[], Stdio::null()).await;
    assert!(
        eventually(Duration::from_secs(30), || weft
            .stderr()
            .contains("moved to the dead-letter queue"))
        .await,
        "{}",
        weft.stderr()
    );
    weft.kill();
    assert_eq!(receiver.seen().len(), 3, "three deliveries");
    let data = dir.join("data");
    let data = data.to_str().unwrap();
    let (status, listed, err) = weft_cmd(&["dlq", "list", "--data-dir", data], &dir);
    assert!(status.success(), "{err}");
    let letter: serde_json::Value = serde_json::from_str(listed.trim()).unwrap();
    let id = letter["id"].as_str().unwrap().to_string();
    assert_eq!(letter["attempts"], 3, "{listed}");
    // Every delivery's warning names the one id the dead letter has.
    let log = weft.stderr();
    let warned = log
        .lines()
        .filter(|l| l.contains("offering it again"))
        .collect::<Vec<_>>();
    assert_eq!(warned.len(), 2, "{log}");
    assert!(warned.iter().all(|l| l.contains(&id)), "{id}\n{log}");
    let (status, shown, err) = weft_cmd(&["dlq", "show", "--id", &id, "--data-dir", data], &dir);
    assert!(status.success(), "{err}");
    assert!(shown.contains(r#""n": 1"#), "{shown}");
    assert!(shown.contains(r#""key": "k1""#), "{shown}");
    assert!(shown.contains(r#""topic": "bad""#), "{shown}");
}
