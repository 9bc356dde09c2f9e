//! Sink connectors: weft taking webhooks and writing each, through the `map` of `BENCH.md`, to a
//! connector (`http_server` → `map` → output, answering after the write), against a hand-written
//! server doing the same work with the same guarantee (it answers 200 only once the sink
//! confirmed the write), one after the other in the same run.
//!
//! `weft-bench sinks [--seconds S] [--rounds R] [--connections C] [--only s3,sftp,kafka,smtp]`
//! starts the sinks on CPU 0 with the load generator:
//! - `s3`: `rclone serve s3` (from the test peers, or `WEFT_RCLONE`); one object per message,
//!   put in one request under a random key;
//! - `sftp`: `rclone serve sftp` (password login, a pinned ed25519 host key); one file per
//!   message, written under a dot-name, synced and renamed into place, as weft does, over one
//!   SSH connection;
//! - `kafka`: librdkafka's mock cluster (in this process), a 4-partition topic; an idempotent
//!   producer with `acks=all`, one record per message, answered on its delivery report;
//! - `smtp`: a minimal SMTP server in this process that takes every mail; one mail per message
//!   (addressed to the mapped e-mail, a subject and a text body made from the message) over
//!   lettre's pooled transport, as weft's.
//!
//! Each contender gets a fresh bucket, directory or topic (the SMTP server counts every mail,
//! and a contender's are those it counted during its run); after its run the sink is counted,
//! and a sink holding fewer items than were answered 200 is reported, so a fast answer without
//! the write shows. The figures are requests/s, p99 and the server's CPU µs per request, and
//! their medians as ratios over `--rounds` rounds.
//!
//! `weft-bench write --sink S --target T --address A` is the hand-written server itself.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::{Context, bail};
use axum::Router;
use axum::body::Body;
use axum::response::IntoResponse;
use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Full};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

use crate::connectors::{self, KEY_ID, SECRET, SFTP_USER};
use crate::{Killed, binaries, cpu_seconds, free_port, map_order, median, pinned};

pub const ALL: [&str; 4] = ["s3", "sftp", "kafka", "smtp"];

/// The mail made of a mapped message, by weft's flow and by the hand-written server alike.
const FROM: &str = "bench@example.com";

/// One sink, as the hand-written server writes to it.
// One per process: its size does not matter.
#[allow(clippy::large_enum_variant)]
enum Writer {
    S3 {
        client: connectors::Http,
        bucket: rusty_s3::Bucket,
        credentials: rusty_s3::Credentials,
    },
    Sftp {
        _ssh: russh::client::Handle<connectors::Pinned>,
        sftp: russh_sftp::client::SftpSession,
        dir: String,
    },
    Kafka {
        producer: rdkafka::producer::FutureProducer,
        topic: String,
    },
    Smtp(lettre::AsyncSmtpTransport<lettre::Tokio1Executor>),
}

impl Writer {
    async fn open(sink: &str, target: &str) -> anyhow::Result<Writer> {
        Ok(match sink {
            "s3" => {
                let (endpoint, name) = target.rsplit_once('/').context("endpoint/bucket")?;
                Writer::S3 {
                    client: connectors::http(),
                    bucket: rusty_s3::Bucket::new(
                        endpoint.parse()?,
                        rusty_s3::UrlStyle::Path,
                        name.to_string(),
                        "us-east-1".to_string(),
                    )?,
                    credentials: rusty_s3::Credentials::new(KEY_ID, SECRET),
                }
            }
            "sftp" => {
                let mut parts = target.split(' ');
                let (port, fingerprint, dir) = (
                    parts.next().context("port")?.parse::<u16>()?,
                    parts.next().context("fingerprint")?.to_string(),
                    parts.next().context("dir")?.to_string(),
                );
                let (ssh, sftp) = connectors::sftp_session(port, fingerprint).await?;
                Writer::Sftp {
                    _ssh: ssh,
                    sftp,
                    dir,
                }
            }
            "kafka" => {
                let (brokers, topic) = target.split_once(' ').context("brokers topic")?;
                Writer::Kafka {
                    producer: rdkafka::ClientConfig::new()
                        .set("bootstrap.servers", brokers)
                        .set("acks", "all")
                        .set("enable.idempotence", "true")
                        .create()?,
                    topic: topic.to_string(),
                }
            }
            "smtp" => {
                let (host, port) = target.rsplit_once(':').context("host:port")?;
                Writer::Smtp(
                    lettre::AsyncSmtpTransport::<lettre::Tokio1Executor>::builder_dangerous(host)
                        .port(port.parse()?)
                        .build(),
                )
            }
            other => bail!("unknown sink `{other}`"),
        })
    }

    /// Writes one mapped message; `Ok` once the sink confirmed it.
    async fn write(&self, value: &serde_json::Value) -> anyhow::Result<()> {
        use lettre::AsyncTransport as _;
        use rusty_s3::S3Action as _;
        let name = format!("{:032x}.json", fastrand::u128(..));
        match self {
            Writer::S3 {
                client,
                bucket,
                credentials,
            } => {
                let url = bucket
                    .put_object(Some(credentials), &name)
                    .sign(Duration::from_secs(600));
                let request = Request::put(url.as_str())
                    .header(http::header::CONTENT_TYPE, "application/json")
                    .body(Full::new(Bytes::from(serde_json::to_vec(value)?)))?;
                let response = client.request(request).await?;
                let status = response.status();
                response.into_body().collect().await?;
                if !status.is_success() {
                    bail!("S3 answered {status}");
                }
            }
            Writer::Sftp { sftp, dir, .. } => {
                use russh_sftp::protocol::OpenFlags;
                let temp = format!("{dir}/.{name}.{:016x}.part", fastrand::u64(..));
                let flags = OpenFlags::CREATE | OpenFlags::EXCLUDE | OpenFlags::WRITE;
                let mut file = sftp.open_with_flags(temp.as_str(), flags).await?;
                file.write_all(&serde_json::to_vec(value)?).await?;
                file.sync_all().await?;
                file.shutdown().await?;
                sftp.rename(temp, format!("{dir}/{name}")).await?;
            }
            Writer::Kafka { producer, topic } => {
                let payload = serde_json::to_vec(value)?;
                let record = rdkafka::producer::FutureRecord::<(), [u8]>::to(topic)
                    .payload(payload.as_slice());
                producer
                    .send(record, Duration::from_secs(30))
                    .await
                    .map_err(|(e, _)| e)?;
            }
            Writer::Smtp(transport) => {
                let text = |k: &str| value[k].as_str().unwrap_or_default();
                let mail = lettre::Message::builder()
                    .from(FROM.parse()?)
                    .to(text("email").parse()?)
                    .subject(format!("Order {}", text("order_id")))
                    .body(format!(
                        "Hello {}, your order {} is on its way.",
                        text("name"),
                        text("order_id")
                    ))?;
                transport.send(mail).await?;
            }
        }
        Ok(())
    }
}

/// The hand-written server: parses, maps, writes, and answers 200 once the write is confirmed.
pub async fn serve(sink: &str, target: &str, address: SocketAddr) -> anyhow::Result<()> {
    let writer = Arc::new(Writer::open(sink, target).await?);
    let app = Router::new().fallback(move |request: Request<Body>| {
        let writer = writer.clone();
        async move {
            let Ok(body) = request.into_body().collect().await else {
                return StatusCode::BAD_REQUEST.into_response();
            };
            let Ok(mut value) = serde_json::from_slice::<serde_json::Value>(&body.to_bytes())
            else {
                return StatusCode::BAD_REQUEST.into_response();
            };
            map_order(&mut value);
            match writer.write(&value).await {
                Ok(()) => StatusCode::OK.into_response(),
                Err(e) => {
                    eprintln!("write: {e}");
                    StatusCode::BAD_GATEWAY.into_response()
                }
            }
        }
    });
    axum::serve(tokio::net::TcpListener::bind(address).await?, app).await?;
    Ok(())
}

/// An SMTP server that takes every mail and counts it: the least a server can do, so that the
/// figures are the client's.
async fn smtp_server(listener: tokio::net::TcpListener, count: Arc<AtomicU64>) {
    while let Ok((stream, _)) = listener.accept().await {
        let count = count.clone();
        tokio::spawn(async move {
            let (read, mut write) = stream.into_split();
            let mut lines = BufReader::new(read);
            let mut line = String::new();
            write.write_all(b"220 bench ESMTP\r\n").await?;
            loop {
                line.clear();
                if lines.read_line(&mut line).await? == 0 {
                    return anyhow::Ok(());
                }
                let verb = line.get(..4).unwrap_or_default().to_ascii_uppercase();
                let answer: &[u8] = match verb.as_str() {
                    "EHLO" => b"250-bench\r\n250 8BITMIME\r\n",
                    "DATA" => {
                        write.write_all(b"354 go on\r\n").await?;
                        loop {
                            line.clear();
                            if lines.read_line(&mut line).await? == 0 {
                                return Ok(());
                            }
                            if line == ".\r\n" {
                                break;
                            }
                        }
                        count.fetch_add(1, Ordering::Relaxed);
                        b"250 taken\r\n"
                    }
                    "QUIT" => {
                        write.write_all(b"221 bye\r\n").await?;
                        return Ok(());
                    }
                    "HELO" | "MAIL" | "RCPT" | "RSET" | "NOOP" => b"250 ok\r\n",
                    _ => b"502 not here\r\n",
                };
                write.write_all(answer).await?;
            }
        });
    }
}

/// The sinks that run, shared by all contenders.
struct Sinks {
    s3: Option<(Killed, u16, PathBuf)>,
    sftp: Option<connectors::SftpServer>,
    kafka: Option<connectors::Kafka>,
    smtp: Option<(u16, Arc<AtomicU64>)>,
}

/// Where one contender writes, made fresh for it.
struct Prepared {
    /// weft's output, one line of YAML.
    output: String,
    /// What the hand-written server is given as `--target`.
    target: String,
}

/// The bucket, directory or topic of the contender `tag`.
fn place(tag: &str) -> String {
    format!("t{}", tag.replace(|c: char| !c.is_ascii_alphanumeric(), ""))
}

fn prepare(sink: &str, tag: &str, sinks: &Sinks) -> anyhow::Result<Prepared> {
    let name = place(tag);
    Ok(match sink {
        "s3" => {
            let (_, port, data) = sinks.s3.as_ref().context("no S3 server")?;
            std::fs::create_dir_all(data.join(&name))?;
            Prepared {
                output: format!(
                    "s3: {{ bucket: {name}, endpoint: \"http://127.0.0.1:{port}\", credentials: {{ access_key_id: {KEY_ID}, secret_access_key: {SECRET} }}, key: \"{{{{ uuid_v4() }}}}.json\" }}"
                ),
                target: format!("http://127.0.0.1:{port}/{name}"),
            }
        }
        "sftp" => {
            let server = sinks.sftp.as_ref().context("no SFTP server")?;
            std::fs::create_dir_all(server.data.join(&name))?;
            Prepared {
                output: format!(
                    "sftp: {{ server: {{ url: \"sftp://{SFTP_USER}@127.0.0.1:{}\", password: {SECRET}, host_key: \"{}\" }}, path: \"/{name}/{{{{ uuid_v4() }}}}.json\" }}",
                    server.port, server.fingerprint
                ),
                target: format!("{} {} /{name}", server.port, server.fingerprint),
            }
        }
        "kafka" => {
            let kafka = sinks.kafka.as_ref().context("no Kafka mock cluster")?;
            kafka
                .cluster
                .create_topic(&name, connectors::KAFKA_PARTITIONS, 1)?;
            let brokers = kafka.cluster.bootstrap_servers();
            Prepared {
                output: format!("kafka: {{ brokers: [\"{brokers}\"], topic: {name} }}"),
                target: format!("{brokers} {name}"),
            }
        }
        "smtp" => {
            let (port, _) = sinks.smtp.as_ref().context("no SMTP server")?;
            Prepared {
                output: format!(
                    "smtp: {{ url: \"smtp://127.0.0.1:{port}\", security: none, from: {FROM}, to: \"{{{{ .email }}}}\", subject: \"Order {{{{ .order_id }}}}\", text: \"Hello {{{{ .name }}}}, your order {{{{ .order_id }}}} is on its way.\" }}"
                ),
                target: format!("127.0.0.1:{port}"),
            }
        }
        other => bail!("unknown sink `{other}`"),
    })
}

/// How many items the sink holds for the contender `tag`.
fn held(sink: &str, tag: &str, sinks: &Sinks) -> anyhow::Result<u64> {
    let name = place(tag);
    let files = |dir: &Path| -> anyhow::Result<u64> {
        Ok(std::fs::read_dir(dir)?
            .filter_map(Result::ok)
            .filter(|e| !e.file_name().to_string_lossy().starts_with('.'))
            .count() as u64)
    };
    Ok(match sink {
        "s3" => files(&sinks.s3.as_ref().context("no S3")?.2.join(&name))?,
        "sftp" => files(&sinks.sftp.as_ref().context("no SFTP")?.data.join(&name))?,
        "kafka" => {
            use rdkafka::consumer::Consumer as _;
            let kafka = sinks.kafka.as_ref().context("no Kafka")?;
            let consumer: rdkafka::consumer::BaseConsumer = rdkafka::ClientConfig::new()
                .set("bootstrap.servers", kafka.cluster.bootstrap_servers())
                .create()?;
            let mut total = 0;
            for partition in 0..connectors::KAFKA_PARTITIONS {
                // A fresh topic: its records are those below the high watermark (the mock
                // cluster drops old segments, which moves the low one).
                let (_, high) =
                    consumer.fetch_watermarks(&name, partition, Duration::from_secs(10))?;
                total += high as u64;
            }
            total
        }
        "smtp" => sinks
            .smtp
            .as_ref()
            .context("no SMTP")?
            .1
            .load(Ordering::Relaxed),
        other => bail!("unknown sink `{other}`"),
    })
}

struct Measured {
    rps: f64,
    p99_ms: f64,
    cpu_us: f64,
    /// Answered 200 (warm-up included).
    answered: u64,
}

fn measure(
    me: &Path,
    url: &str,
    pid: u32,
    seconds: f64,
    connections: usize,
) -> anyhow::Result<Measured> {
    let warm_up = crate::run_load(me, url, connections, 2.0)?;
    let cpu_before = cpu_seconds(pid)?;
    let result = crate::run_load(me, url, connections, seconds)?;
    let cpu = cpu_seconds(pid)? - cpu_before;
    Ok(Measured {
        rps: result.requests as f64 / seconds,
        p99_ms: result.p99_us as f64 / 1000.0,
        cpu_us: cpu * 1e6 / result.requests.max(1) as f64,
        answered: warm_up.requests + result.requests,
    })
}

pub fn orchestrate(
    seconds: f64,
    rounds: usize,
    connections: usize,
    only: Option<String>,
    weft: Option<PathBuf>,
) -> anyhow::Result<()> {
    let (me, weft) = binaries(weft)?;
    let chosen = crate::chosen(only.as_deref(), &ALL, "sink")?;
    let _ = Command::new("taskset")
        .args(["-acp", "0", &std::process::id().to_string()])
        .stdout(std::process::Stdio::null())
        .status();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    let dir = std::env::temp_dir().join(format!("weft-bench-sinks-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let rclone = connectors::rclone();
    if rclone.is_none() && (chosen.contains(&"s3") || chosen.contains(&"sftp")) {
        println!(
            "s3 and sftp skipped: no rclone (run crates/weft/tests/peers/install.sh, or set WEFT_RCLONE)"
        );
    }
    let sinks = Sinks {
        s3: match &rclone {
            Some(rclone) if chosen.contains(&"s3") => {
                let data = dir.join("s3");
                std::fs::create_dir_all(&data)?;
                let (server, port) = connectors::start_s3(&rt, rclone, &data)?;
                Some((server, port, data))
            }
            _ => None,
        },
        sftp: match &rclone {
            Some(rclone) if chosen.contains(&"sftp") => {
                Some(connectors::SftpServer::start(&rt, rclone, &dir)?)
            }
            _ => None,
        },
        kafka: if chosen.contains(&"kafka") {
            Some(connectors::Kafka::start()?)
        } else {
            None
        },
        smtp: if chosen.contains(&"smtp") {
            let listener = rt.block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))?;
            let port = listener.local_addr()?.port();
            let count = Arc::new(AtomicU64::new(0));
            rt.spawn(smtp_server(listener, count.clone()));
            Some((port, count))
        } else {
            None
        },
    };
    println!(
        "{connections} connections, {seconds}s per run after a 2s warm-up, {rounds} rounds; load and sinks on CPU 0, the server under test on CPU 1; baseline = a hand-written server doing the same writes"
    );
    println!(
        "{:<6} {:<9} {:>9} {:>8} {:>11} {:>9}",
        "sink", "server", "req/s", "p99 ms", "CPU µs/req", "held"
    );
    let mut summary = Vec::new();
    for sink in chosen {
        let runs = match sink {
            "s3" => sinks.s3.is_some(),
            "sftp" => sinks.sftp.is_some(),
            _ => true,
        };
        if !runs {
            continue;
        }
        let (mut rates, mut cpus, mut p99s) = (Vec::new(), Vec::new(), Vec::new());
        for round in 0..rounds {
            let mut pair = Vec::new();
            for contender in ["baseline", "weft"] {
                let tag = format!("{}x{round}{}", std::process::id(), &contender[..1]);
                let prepared = prepare(sink, &tag, &sinks)?;
                let before = held(sink, &tag, &sinks)?;
                let address = format!("127.0.0.1:{}", free_port()?);
                let mut server = if contender == "baseline" {
                    let mut c = pinned("1", &me);
                    c.args(["write", "--sink", sink, "--target", &prepared.target])
                        .args(["--address", &address]);
                    c
                } else {
                    let flow = crate::mapping_flow(
                        "",
                        &format!(r#"http_server: {{ address: "{address}", path: /orders }}"#),
                        &prepared.output,
                    );
                    crate::weft_command(&weft, &dir, &tag, &flow)?
                };
                let server = Killed(server.spawn()?);
                rt.block_on(crate::wait_ready(&address))?;
                let m = measure(
                    &me,
                    &format!("http://{address}/orders"),
                    server.0.id(),
                    seconds,
                    connections,
                )?;
                drop(server);
                let now = held(sink, &tag, &sinks)? - before;
                println!(
                    "{:<6} {:<9} {:>9.0} {:>8.2} {:>11.1} {:>9}",
                    sink, contender, m.rps, m.p99_ms, m.cpu_us, now
                );
                if now < m.answered {
                    println!(
                        "  {sink} {contender}: the sink holds {now} of {} answered 200",
                        m.answered
                    );
                }
                pair.push(m);
            }
            rates.push(pair[1].rps / pair[0].rps);
            cpus.push(pair[1].cpu_us / pair[0].cpu_us);
            p99s.push(pair[1].p99_ms / pair[0].p99_ms);
        }
        summary.push((sink, median(rates), median(p99s), median(cpus)));
    }
    println!("weft/baseline, median of {rounds} rounds (goal: throughput >= 0.8x):");
    for (sink, rate, p99, cpu) in summary {
        println!("  {sink:<6} throughput {rate:.2}x, p99 {p99:.2}x, CPU/req {cpu:.2}x");
    }
    drop(sinks);
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}
