//! Broker copies: weft (broker → `map` → broker) against a hand-written client doing the same
//! copy with the same guarantee (the source message is acknowledged only after the target broker
//! took the copy), measured one after the other in the same run against this machine's servers.
//!
//! `weft-bench brokers [--messages N] [--rounds R] [--only redis_streams,amqp,…]` preloads N
//! messages (the 303-byte body of `BENCH.md`) into a fresh source (a stream, list or queue), starts
//! the copier pinned to CPU 1 and times it from the first copy seen in the target until the
//! N-th. MQTT keeps nothing for a subscriber that is not there yet, so for it the orchestrator
//! publishes while the copier runs, keeping at most `WINDOW` messages ahead of the target.
//! Per run it prints messages/s and the copier's CPU µs per message (utime + stime from
//! `/proc`), and at the end the median weft/baseline ratios per broker.
//!
//! `weft-bench copy --broker B --source S --target T` is the baseline copier itself.

use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use futures_util::StreamExt;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, BasicQosOptions,
    ConfirmSelectOptions, QueueDeclareOptions, QueueDeleteOptions,
};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Connection, ConnectionProperties};
use redis::AsyncCommands;
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};

use crate::{BODY, Killed, binaries, cpu_seconds, map_order, median, pinned, weft_command};

pub const ALL: [&str; 5] = [
    "redis_streams",
    "redis_list",
    "nats_jetstream",
    "amqp",
    "mqtt",
];

/// How far the MQTT publisher may run ahead of the target (Mosquitto queues 1,000 per client).
const WINDOW: u64 = 500;
/// Messages the AMQP copiers may hold unacknowledged; the same for weft and the baseline.
const PREFETCH: u16 = 64;
/// The `redis_list` readers running at once; the same for weft and the baseline.
const LIST_WORKERS: usize = 4;

fn url(var: &str, default: &str) -> String {
    std::env::var(var).unwrap_or_else(|_| default.into())
}
fn redis_url() -> String {
    url("WEFT_REDIS_URL", "redis://127.0.0.1:6379")
}
fn nats_url() -> String {
    url("WEFT_NATS_URL", "nats://127.0.0.1:4222")
}
fn amqp_url() -> String {
    url("WEFT_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/%2f")
}
fn mqtt_url() -> String {
    url("WEFT_MQTT_URL", "mqtt://127.0.0.1:1883")
}

fn mqtt_options(client_id: &str, clean: bool) -> anyhow::Result<MqttOptions> {
    let url = mqtt_url();
    let rest = url
        .strip_prefix("mqtt://")
        .context("WEFT_MQTT_URL is mqtt://host:port")?
        .trim_end_matches('/');
    let (host, port) = rest.rsplit_once(':').unwrap_or((rest, "1883"));
    let mut options = MqttOptions::new(client_id, host, port.parse()?);
    options.set_clean_session(clean);
    options.set_inflight(1000);
    options.set_keep_alive(Duration::from_secs(30));
    Ok(options)
}

/// The mapping of `BENCH.md` on a message body; `None` for a body that is not a JSON object.
fn mapped(body: &[u8]) -> Option<Vec<u8>> {
    let mut value: serde_json::Value = serde_json::from_slice(body).ok()?;
    map_order(&mut value);
    serde_json::to_vec(&value).ok()
}

/// The baseline copier: runs until killed.
pub async fn copy(broker: &str, source: &str, target: &str) -> anyhow::Result<()> {
    match broker {
        "redis_streams" => copy_redis_streams(source, target).await,
        "redis_list" => copy_redis_list(source, target).await,
        "nats_jetstream" => copy_jetstream(source, target).await,
        "amqp" => copy_amqp(source, target).await,
        "mqtt" => copy_mqtt(source, target).await,
        other => bail!("unknown broker `{other}`; one of {ALL:?}"),
    }
}

/// Reads a batch with `XREADGROUP`, appends the copies in one pipeline, then `XACK`s the batch.
async fn copy_redis_streams(source: &str, target: &str) -> anyhow::Result<()> {
    let client = redis::Client::open(redis_url())?;
    let config = redis::AsyncConnectionConfig::new().set_response_timeout(None);
    let mut read = client
        .get_multiplexed_async_connection_with_config(&config)
        .await?;
    let mut write = client.get_multiplexed_async_connection().await?;
    loop {
        let reply: redis::streams::StreamReadReply = read
            .xread_options(
                &[source],
                &[">"],
                &redis::streams::StreamReadOptions::default()
                    .group("bench", "baseline")
                    .count(100)
                    .block(1000),
            )
            .await?;
        let Some(key) = reply.keys.into_iter().next() else {
            continue;
        };
        let mut copies = redis::pipe();
        let mut ids = Vec::with_capacity(key.ids.len());
        for entry in key.ids {
            if let Some(redis::Value::BulkString(body)) = entry.map.get("body")
                && let Some(out) = mapped(body)
            {
                copies.xadd(target, "*", &[("body", out)]).ignore();
            }
            ids.push(entry.id);
        }
        copies.query_async::<()>(&mut write).await?;
        let _: u64 = write.xack(source, "bench", &ids).await?;
    }
}

/// `LIST_WORKERS` loops of `BLMOVE` to a processing list, `LPUSH` of the copy, `LREM`.
async fn copy_redis_list(source: &str, target: &str) -> anyhow::Result<()> {
    let client = redis::Client::open(redis_url())?;
    let config = redis::AsyncConnectionConfig::new().set_response_timeout(None);
    let mut workers = Vec::new();
    for _ in 0..LIST_WORKERS {
        // No response timeout: BLMOVE waits up to a second.
        let mut conn = client
            .get_multiplexed_async_connection_with_config(&config)
            .await?;
        let (source, target) = (source.to_string(), target.to_string());
        let processing = format!("{source}:processing:baseline");
        workers.push(tokio::spawn(async move {
            loop {
                let item: Option<Vec<u8>> = redis::cmd("BLMOVE")
                    .arg(&source)
                    .arg(&processing)
                    .arg("RIGHT")
                    .arg("LEFT")
                    .arg(1)
                    .query_async(&mut conn)
                    .await?;
                let Some(item) = item else { continue };
                if let Some(out) = mapped(&item) {
                    let _: u64 = conn.lpush(&target, out).await?;
                }
                let _: u64 = conn.lrem(&processing, 1, item).await?;
            }
            #[allow(unreachable_code)]
            anyhow::Ok(())
        }));
    }
    for w in workers {
        w.await??;
    }
    Ok(())
}

/// A durable pull consumer; each message is published to the target subject, and acked once
/// the stream acknowledged the copy; up to 100 at a time.
async fn copy_jetstream(source: &str, target: &str) -> anyhow::Result<()> {
    use async_nats::jetstream;
    let js = jetstream::new(async_nats::connect(nats_url()).await?);
    let stream = js.get_stream(source).await?;
    let consumer = stream
        .get_or_create_consumer(
            "baseline",
            jetstream::consumer::pull::Config {
                durable_name: Some("baseline".into()),
                ack_policy: jetstream::consumer::AckPolicy::Explicit,
                ..Default::default()
            },
        )
        .await?;
    let subject = format!("{target}.copied");
    consumer
        .messages()
        .await?
        .for_each_concurrent(100, |message| {
            let (js, subject) = (js.clone(), subject.clone());
            async move {
                let Ok(message) = message else { return };
                let Some(out) = mapped(&message.payload) else {
                    return;
                };
                let stored = match js.publish(subject, out.into()).await {
                    Ok(ack) => ack.await.is_ok(),
                    Err(_) => false,
                };
                if stored {
                    let _ = message.ack().await;
                }
            }
        })
        .await;
    bail!("the consumer ended")
}

/// `basic_consume` with `PREFETCH`; each delivery is published with a confirm and acked after it.
async fn copy_amqp(source: &str, target: &str) -> anyhow::Result<()> {
    let connection = Connection::connect(&amqp_url(), ConnectionProperties::default()).await?;
    let consume = connection.create_channel().await?;
    let publish = connection.create_channel().await?;
    publish
        .confirm_select(ConfirmSelectOptions::default())
        .await?;
    consume
        .basic_qos(PREFETCH, BasicQosOptions::default())
        .await?;
    let mut deliveries = consume
        .basic_consume(
            source.into(),
            "baseline".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await?;
    while let Some(delivery) = deliveries.next().await {
        let delivery = delivery?;
        let (publish, target) = (publish.clone(), target.to_string());
        tokio::spawn(async move {
            let Some(out) = mapped(&delivery.data) else {
                return;
            };
            let confirmed = match publish
                .basic_publish(
                    "".into(),
                    target.as_str().into(),
                    BasicPublishOptions::default(),
                    &out,
                    BasicProperties::default()
                        .with_delivery_mode(2)
                        .with_content_type("application/json".into()),
                )
                .await
            {
                Ok(confirm) => matches!(confirm.await, Ok(c) if c.is_ack()),
                Err(_) => false,
            };
            if confirmed {
                let _ = delivery.ack(BasicAckOptions::default()).await;
            }
        });
    }
    bail!("the consumer ended")
}

/// QoS 1 in a persistent session with manual acks: each message is published QoS 1 to the
/// target and acked when the broker's PUBACK for the copy comes (Mosquitto answers in order).
async fn copy_mqtt(source: &str, target: &str) -> anyhow::Result<()> {
    let mut options = mqtt_options("weft-bench-baseline", false)?;
    options.set_manual_acks(true);
    let (client, mut events) = AsyncClient::new(options, 1024);
    client.subscribe(source, QoS::AtLeastOnce).await?;
    let mut waiting = std::collections::VecDeque::new();
    loop {
        match events.poll().await? {
            Event::Incoming(Packet::Publish(p)) => {
                if let Some(out) = mapped(&p.payload) {
                    client.publish(target, QoS::AtLeastOnce, false, out).await?;
                    waiting.push_back(p);
                } else {
                    client.ack(&p).await?;
                }
            }
            Event::Incoming(Packet::PubAck(_)) => {
                if let Some(p) = waiting.pop_front() {
                    client.ack(&p).await?;
                }
            }
            _ => {}
        }
    }
}

/// One broker's fresh source and target for one run: created, filled and counted by the
/// orchestrator.
struct Run {
    broker: &'static str,
    source: String,
    target: String,
    /// For `mqtt`, the client ids whose persistent sessions are cleared afterwards.
    sessions: Vec<String>,
}

async fn redis_connection() -> anyhow::Result<redis::aio::MultiplexedConnection> {
    Ok(redis::Client::open(redis_url())?
        .get_multiplexed_async_connection()
        .await?)
}

async fn jetstream() -> anyhow::Result<async_nats::jetstream::Context> {
    Ok(async_nats::jetstream::new(
        async_nats::connect(nats_url()).await?,
    ))
}

async fn amqp_channel() -> anyhow::Result<(Connection, lapin::Channel)> {
    let c = Connection::connect(&amqp_url(), ConnectionProperties::default()).await?;
    let channel = c.create_channel().await?;
    Ok((c, channel))
}

impl Run {
    async fn create(broker: &'static str, tag: &str) -> anyhow::Result<Run> {
        let (source, target) = match broker {
            "redis_streams" | "redis_list" => (
                format!("weft-bench:{tag}:in"),
                format!("weft-bench:{tag}:out"),
            ),
            "nats_jetstream" => (format!("BENCH_IN_{tag}"), format!("BENCH_OUT_{tag}")),
            "amqp" => (
                format!("weft-bench.{tag}.in"),
                format!("weft-bench.{tag}.out"),
            ),
            "mqtt" => (
                format!("weft-bench/{tag}/in"),
                format!("weft-bench/{tag}/out"),
            ),
            other => bail!("unknown broker `{other}`; one of {ALL:?}"),
        };
        let run = Run {
            broker,
            source,
            target,
            sessions: vec![format!("weft-bench-{tag}"), "weft-bench-baseline".into()],
        };
        match broker {
            "redis_streams" => {
                let () = redis_connection()
                    .await?
                    .xgroup_create_mkstream(&run.source, "bench", "0")
                    .await?;
            }
            "nats_jetstream" => {
                let js = jetstream().await?;
                for name in [&run.source, &run.target] {
                    js.create_stream(async_nats::jetstream::stream::Config {
                        name: name.clone(),
                        subjects: vec![format!("{name}.>")],
                        ..Default::default()
                    })
                    .await?;
                }
            }
            "amqp" => {
                let (_c, channel) = amqp_channel().await?;
                for q in [&run.source, &run.target] {
                    channel
                        .queue_declare(
                            q.as_str().into(),
                            QueueDeclareOptions {
                                durable: true,
                                ..Default::default()
                            },
                            FieldTable::default(),
                        )
                        .await?;
                }
            }
            _ => {}
        }
        Ok(run)
    }

    /// The flow that makes weft do this run's copy.
    fn flow(&self, tag: &str) -> String {
        let (s, t) = (&self.source, &self.target);
        let (input, output) = match self.broker {
            "redis_streams" => (
                format!(
                    r#"redis_streams: {{ url: "{}", stream: "{s}", group: bench, consumer: weft }}"#,
                    redis_url()
                ),
                format!(
                    r#"redis_streams: {{ url: "{}", stream: "{t}" }}"#,
                    redis_url()
                ),
            ),
            "redis_list" => (
                format!(
                    r#"redis_list: {{ url: "{}", list: "{s}", workers: {LIST_WORKERS} }}"#,
                    redis_url()
                ),
                format!(r#"redis_list: {{ url: "{}", list: "{t}" }}"#, redis_url()),
            ),
            "nats_jetstream" => (
                format!(
                    r#"nats_jetstream: {{ url: "{}", stream: "{s}", consumer: weft }}"#,
                    nats_url()
                ),
                format!(
                    r#"nats_jetstream: {{ url: "{}", subject: "{t}.copied" }}"#,
                    nats_url()
                ),
            ),
            "amqp" => (
                format!(
                    r#"amqp: {{ url: "{}", queue: "{s}", prefetch: {PREFETCH} }}"#,
                    amqp_url()
                ),
                format!(r#"amqp: {{ url: "{}", routing_key: "{t}" }}"#, amqp_url()),
            ),
            _ => (
                format!(
                    r#"mqtt: {{ url: "{}", topics: ["{s}"], client_id: "weft-bench-{tag}" }}"#,
                    mqtt_url()
                ),
                format!(r#"mqtt: {{ url: "{}", topic: "{t}", qos: 1 }}"#, mqtt_url()),
            ),
        };
        crate::mapping_flow("", &input, &output)
    }

    /// Puts `n` messages in the source before the copier starts (not for MQTT).
    async fn preload(&self, n: u64) -> anyhow::Result<()> {
        const CHUNK: u64 = 1000;
        let chunks = (0..n)
            .step_by(CHUNK as usize)
            .map(|s| (s + CHUNK).min(n) - s);
        match self.broker {
            "redis_streams" | "redis_list" => {
                let mut r = redis_connection().await?;
                for size in chunks {
                    let mut pipe = redis::pipe();
                    for _ in 0..size {
                        if self.broker == "redis_list" {
                            pipe.lpush(&self.source, BODY).ignore();
                        } else {
                            pipe.xadd(&self.source, "*", &[("body", BODY)]).ignore();
                        }
                    }
                    pipe.query_async::<()>(&mut r).await?;
                }
            }
            "nats_jetstream" => {
                let js = jetstream().await?;
                for size in chunks {
                    let mut acks = Vec::new();
                    for _ in 0..size {
                        acks.push(
                            js.publish(format!("{}.new", self.source), BODY.into())
                                .await?,
                        );
                    }
                    for ack in acks {
                        ack.await?;
                    }
                }
            }
            "amqp" => {
                let (_c, channel) = amqp_channel().await?;
                channel
                    .confirm_select(ConfirmSelectOptions::default())
                    .await?;
                for size in chunks {
                    let mut confirms = Vec::new();
                    for _ in 0..size {
                        confirms.push(
                            channel
                                .basic_publish(
                                    "".into(),
                                    self.source.as_str().into(),
                                    BasicPublishOptions::default(),
                                    BODY.as_bytes(),
                                    BasicProperties::default().with_delivery_mode(2),
                                )
                                .await?,
                        );
                    }
                    for confirm in confirms {
                        confirm.await?;
                    }
                }
            }
            _ => {}
        }
        Ok(())
    }

    /// How many copies the target holds (MQTT: how many the peer heard).
    async fn count(&self, heard: &AtomicU64) -> anyhow::Result<u64> {
        Ok(match self.broker {
            "redis_streams" => redis_connection().await?.xlen(&self.target).await?,
            "redis_list" => redis_connection().await?.llen(&self.target).await?,
            "nats_jetstream" => {
                jetstream()
                    .await?
                    .get_stream(&self.target)
                    .await?
                    .info()
                    .await?
                    .state
                    .messages
            }
            "amqp" => {
                let (c, channel) = amqp_channel().await?;
                let q = channel
                    .queue_declare(
                        self.target.as_str().into(),
                        QueueDeclareOptions {
                            passive: true,
                            ..Default::default()
                        },
                        FieldTable::default(),
                    )
                    .await?;
                let _ = c.close(200, "counted".into()).await;
                q.message_count() as u64
            }
            _ => heard.load(Ordering::Relaxed),
        })
    }

    async fn remove(&self) -> anyhow::Result<()> {
        match self.broker {
            "redis_streams" | "redis_list" => {
                let mut r = redis_connection().await?;
                let mut keys: Vec<String> = r.keys(format!("{}:processing:*", self.source)).await?;
                keys.extend([self.source.clone(), self.target.clone()]);
                let _: u64 = r.del(keys).await?;
            }
            "nats_jetstream" => {
                let js = jetstream().await?;
                js.delete_stream(&self.source).await?;
                js.delete_stream(&self.target).await?;
            }
            "amqp" => {
                let (_c, channel) = amqp_channel().await?;
                for q in [&self.source, &self.target] {
                    channel
                        .queue_delete(q.as_str().into(), QueueDeleteOptions::default())
                        .await?;
                }
            }
            _ => {
                // A clean-session connect under the same id ends the persistent session.
                for id in &self.sessions {
                    let (client, mut events) = AsyncClient::new(mqtt_options(id, true)?, 10);
                    let _ = tokio::time::timeout(Duration::from_secs(2), events.poll()).await;
                    let _ = client.disconnect().await;
                    let _ = tokio::time::timeout(Duration::from_secs(1), events.poll()).await;
                }
            }
        }
        Ok(())
    }
}

/// Counts what arrives on the MQTT target, and publishes to the source.
struct MqttPeer {
    client: AsyncClient,
    heard: Arc<AtomicU64>,
}

impl MqttPeer {
    async fn start(run: &Run, tag: &str) -> anyhow::Result<MqttPeer> {
        let (client, mut events) =
            AsyncClient::new(mqtt_options(&format!("weft-bench-peer-{tag}"), true)?, 4096);
        let heard = Arc::new(AtomicU64::new(0));
        let h = heard.clone();
        tokio::spawn(async move {
            while let Ok(event) = events.poll().await {
                if let Event::Incoming(Packet::Publish(_)) = event {
                    h.fetch_add(1, Ordering::Relaxed);
                }
            }
        });
        client.subscribe(&run.target, QoS::AtLeastOnce).await?;
        Ok(MqttPeer { client, heard })
    }

    /// Publishes until a copy comes out: the copier's subscription is then in place.
    async fn wait_for_subscription(&self, run: &Run) -> anyhow::Result<()> {
        let give_up = Instant::now() + Duration::from_secs(30);
        while self.heard.load(Ordering::Relaxed) == 0 {
            if Instant::now() > give_up {
                bail!("mqtt: no copy came out within 30s");
            }
            self.client
                .publish(&run.source, QoS::AtLeastOnce, false, BODY)
                .await?;
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
        Ok(())
    }

    /// Publishes `n` messages, never more than `WINDOW` ahead of the target.
    fn produce(&self, run: &Run, n: u64) -> tokio::task::JoinHandle<anyhow::Result<()>> {
        let (client, heard, source) = (self.client.clone(), self.heard.clone(), run.source.clone());
        let start = heard.load(Ordering::Relaxed);
        tokio::spawn(async move {
            for sent in 0..n {
                while sent >= heard.load(Ordering::Relaxed) - start + WINDOW {
                    tokio::time::sleep(Duration::from_micros(200)).await;
                }
                client
                    .publish(&source, QoS::AtLeastOnce, false, BODY)
                    .await?;
            }
            Ok(())
        })
    }
}

struct Copied {
    rate: f64,
    cpu_us: f64,
}

/// Starts a copier, waits until the target holds `n` copies more than before, and measures the
/// rate and the copier's CPU from the first copy to the last.
async fn measure(
    run: &Run,
    mut copier: std::process::Command,
    n: u64,
    tag: &str,
) -> anyhow::Result<Copied> {
    let peer = if run.broker == "mqtt" {
        Some(MqttPeer::start(run, tag).await?)
    } else {
        run.preload(n).await?;
        None
    };
    let nobody = AtomicU64::new(0);
    let heard = peer.as_ref().map_or(&nobody, |p| &p.heard);
    let process = Killed(copier.stdout(Stdio::null()).spawn()?);
    let pid = process.0.id();
    if let Some(peer) = &peer {
        peer.wait_for_subscription(run).await?;
    }
    let before = run.count(heard).await?;
    let producing = peer.as_ref().map(|p| p.produce(run, n));
    let give_up = Instant::now() + Duration::from_secs(180);
    let (first, started, cpu_at_first) = loop {
        let now = run.count(heard).await?;
        if now > before {
            break (now, Instant::now(), cpu_seconds(pid)?);
        }
        if Instant::now() > give_up {
            bail!("{}: nothing was copied within 180s", run.broker);
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    let done = loop {
        let now = run.count(heard).await?;
        if now >= before + n {
            break now;
        }
        if Instant::now() > give_up {
            bail!(
                "{}: only {} of {n} copied within 180s",
                run.broker,
                now - before
            );
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    let elapsed = started.elapsed().as_secs_f64();
    let cpu = cpu_seconds(pid)? - cpu_at_first;
    if let Some(p) = producing {
        p.await??;
    }
    drop(process);
    let copies = (done - first) as f64;
    Ok(Copied {
        rate: copies / elapsed,
        cpu_us: cpu * 1e6 / copies.max(1.0),
    })
}

pub fn orchestrate(
    messages: u64,
    rounds: usize,
    only: Option<String>,
    weft: Option<PathBuf>,
) -> anyhow::Result<()> {
    let (me, weft) = binaries(weft)?;
    let brokers = crate::chosen(only.as_deref(), &ALL, "broker")?;
    // The orchestrator (preloading, counting, the MQTT publisher) stays off the copier's CPU.
    let _ = std::process::Command::new("taskset")
        .args(["-acp", "0", &std::process::id().to_string()])
        .stdout(Stdio::null())
        .status();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    let dir = std::env::temp_dir().join(format!("weft-bench-brokers-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let load_before = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!(
        "{messages} messages of {} bytes per run, {rounds} rounds, copier pinned to CPU 1; baseline = a hand-written client doing the same copy",
        BODY.len()
    );
    println!(
        "{:<15} {:<9} {:>11} {:>12}",
        "broker", "copier", "messages/s", "CPU µs/msg"
    );
    let mut summary = Vec::new();
    for broker in brokers {
        let (mut rates, mut cpus) = (Vec::new(), Vec::new());
        for round in 0..rounds {
            let mut pair = Vec::new();
            for contender in ["baseline", "weft"] {
                let tag = format!("{}x{round}{}", std::process::id(), &contender[..1]);
                let result = rt.block_on(async {
                    let run = Run::create(broker, &tag).await?;
                    let copier = if contender == "baseline" {
                        let mut c = pinned("1", &me);
                        c.args(["copy", "--broker", broker]).args([
                            "--source",
                            &run.source,
                            "--target",
                            &run.target,
                        ]);
                        c
                    } else {
                        weft_command(&weft, &dir, &tag, &run.flow(&tag))?
                    };
                    let measured = measure(&run, copier, messages, &tag).await;
                    run.remove().await?;
                    measured
                })?;
                println!(
                    "{:<15} {:<9} {:>11.0} {:>12.1}",
                    broker, contender, result.rate, result.cpu_us
                );
                pair.push(result);
            }
            rates.push(pair[1].rate / pair[0].rate);
            cpus.push(pair[1].cpu_us / pair[0].cpu_us);
        }
        summary.push((broker, median(rates), median(cpus)));
    }
    println!("weft/baseline, median of {rounds} rounds (goal: throughput >= 0.8x):");
    for (broker, rate, cpu) in summary {
        println!("  {broker:<15} throughput {rate:.2}x, CPU/msg {cpu:.2}x");
    }
    let load_after = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!("loadavg before: {load_before}loadavg after:  {load_after}");
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}
