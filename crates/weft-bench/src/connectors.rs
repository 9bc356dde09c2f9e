//! Source connectors: weft reading N items from a connector through the `map` of `BENCH.md` to
//! the receiver, against a hand-written reader doing the same work with the same guarantee
//! (the item is cleared away — a file deleted (locally or over SFTP), an object deleted, a transaction confirmed to the
//! slot — only after the receiver took it), one after the other in the same run.
//!
//! `weft-bench connectors [--messages N] [--rounds R] [--only directory,s3,sftp,postgres_cdc,kafka]`
//! prepares N items (the 303-byte body of `BENCH.md`): N files in a fresh directory; N objects
//! in a bucket of `rclone serve s3` (from the test peers, `target/peers/venv/bin/rclone`, or
//! `WEFT_RCLONE`); N files in a directory of `rclone serve sftp` (password login, a pinned
//! ed25519 host key); N rows inserted in transactions of 1,000 into a private PostgreSQL started
//! with `wal_level = logical` (the machine's server programs, under `/usr/lib/postgresql`);
//! N records in a 4-partition topic of librdkafka's mock cluster (in this process).
//! It starts the reader pinned to CPU 1 and times it from the first item the receiver took to
//! the N-th. A connector whose server is missing is skipped with a message.
//!
//! The readers take files and objects one at a time (so does weft: a file's messages are
//! delivered before the next file is taken), and a transaction's rows or a topic's records side
//! by side, as many as weft's default flow concurrency.
//!
//! `weft-bench read --connector C --source S --target URL` is the hand-written reader itself.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use bytes::Bytes;
use futures_util::StreamExt;
use http::{Method, Request, header};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::{Client, connect::HttpConnector};
use hyper_util::rt::TokioExecutor;
use rusty_s3::S3Action;

use crate::{BODY, Killed, binaries, cpu_seconds, free_port, map_order, median, pinned};

pub const ALL: [&str; 5] = ["directory", "s3", "sftp", "postgres_cdc", "kafka"];

pub(crate) const KEY_ID: &str = "benchkey";
pub(crate) const SFTP_USER: &str = "bench";
pub(crate) const SECRET: &str = "bench-secret-0123456789";
/// Rows delivered side by side by the CDC reader: weft's default flow concurrency.
const CDC_CONCURRENCY: usize = 256;
const ROWS_PER_TRANSACTION: u64 = 1000;

pub(crate) type Http = Client<HttpConnector, Full<Bytes>>;

pub(crate) fn http() -> Http {
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    Client::builder(TokioExecutor::new()).build(connector)
}

/// The body mapped as `BENCH.md` maps it, posted to `target`; `Ok` once it answered 2xx.
async fn post(client: &Http, target: &http::Uri, body: &[u8]) -> anyhow::Result<()> {
    let mut value: serde_json::Value = serde_json::from_slice(body)?;
    map_order(&mut value);
    let request = Request::post(target.clone())
        .header(header::CONTENT_TYPE, "application/json")
        .body(Full::new(Bytes::from(serde_json::to_vec(&value)?)))?;
    let response = client.request(request).await?;
    let ok = response.status().is_success();
    response.into_body().collect().await?;
    if !ok {
        bail!("the receiver refused");
    }
    Ok(())
}

/// The hand-written readers.
pub async fn read(connector: &str, source: &str, target: &str) -> anyhow::Result<()> {
    let target: http::Uri = target.parse()?;
    let client = http();
    match connector {
        "directory" => read_directory(Path::new(source), &client, &target).await,
        "s3" => read_s3(source, &client, &target).await,
        "sftp" => read_sftp(source, &client, &target).await,
        "postgres_cdc" => read_cdc(source, &client, &target).await,
        "kafka" => read_kafka(source, &client, &target).await,
        other => bail!("unknown connector `{other}`"),
    }
}

/// Lists the directory, oldest first; reads, posts and deletes each file in turn.
async fn read_directory(dir: &Path, client: &Http, target: &http::Uri) -> anyhow::Result<()> {
    loop {
        let mut files = Vec::new();
        let mut entries = tokio::fs::read_dir(dir).await?;
        while let Some(entry) = entries.next_entry().await? {
            let meta = entry.metadata().await?;
            if meta.is_file() {
                files.push((meta.modified()?, entry.path()));
            }
        }
        files.sort();
        for (_, path) in &files {
            let body = tokio::fs::read(path).await?;
            post(client, target, &body).await?;
            tokio::fs::remove_file(path).await?;
        }
        if files.is_empty() {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// `http://127.0.0.1:PORT/bucket`: lists it, then gets, posts and deletes each object in turn.
async fn read_s3(source: &str, client: &Http, target: &http::Uri) -> anyhow::Result<()> {
    let (endpoint, name) = source.rsplit_once('/').context("endpoint/bucket")?;
    let bucket = rusty_s3::Bucket::new(
        endpoint.parse()?,
        rusty_s3::UrlStyle::Path,
        name.to_string(),
        "us-east-1".to_string(),
    )?;
    let credentials = rusty_s3::Credentials::new(KEY_ID, SECRET);
    let signed = Duration::from_secs(600);
    let send = |method: Method, url: url::Url| {
        let request = Request::builder()
            .method(method)
            .uri(url.as_str())
            .body(Full::new(Bytes::new()));
        async move {
            let response = client.request(request?).await?;
            let status = response.status();
            let body = response.into_body().collect().await?.to_bytes();
            if !status.is_success() {
                bail!("S3 answered {status}");
            }
            anyhow::Ok(body)
        }
    };
    loop {
        let mut keys = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let mut list = bucket.list_objects_v2(Some(&credentials));
            if let Some(token) = &token {
                list.with_continuation_token(token.as_str());
            }
            let page = send(Method::GET, list.sign(signed)).await?;
            let page =
                rusty_s3::actions::ListObjectsV2::parse_response(std::str::from_utf8(&page)?)?;
            let mut objects = page.contents;
            objects.sort_by(|a, b| {
                a.last_modified
                    .cmp(&b.last_modified)
                    .then(a.key.cmp(&b.key))
            });
            keys.extend(objects.into_iter().map(|o| o.key));
            match page.next_continuation_token {
                Some(next) => token = Some(next),
                None => break,
            }
        }
        for key in &keys {
            let body = send(
                Method::GET,
                bucket.get_object(Some(&credentials), key).sign(signed),
            )
            .await?;
            post(client, target, &body).await?;
            send(
                Method::DELETE,
                bucket.delete_object(Some(&credentials), key).sign(signed),
            )
            .await?;
        }
        if keys.is_empty() {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// `PORT FINGERPRINT DIR`: logs in by password, the host key checked; lists the directory,
/// oldest first, then reads, posts and removes each file in turn.
async fn read_sftp(source: &str, client: &Http, target: &http::Uri) -> anyhow::Result<()> {
    let mut parts = source.split(' ');
    let (port, fingerprint, dir) = (
        parts.next().context("port")?.parse::<u16>()?,
        parts.next().context("fingerprint")?.to_string(),
        parts.next().context("dir")?.to_string(),
    );
    let (_ssh, sftp) = sftp_session(port, fingerprint).await?;
    loop {
        let mut files: Vec<(u32, String)> = sftp
            .read_dir(dir.as_str())
            .await?
            .filter(|e| e.metadata().is_regular())
            .map(|e| (e.metadata().mtime.unwrap_or(0), e.file_name()))
            .collect();
        files.sort();
        for (_, name) in &files {
            let path = format!("{dir}/{name}");
            let body = sftp.read(path.as_str()).await?;
            post(client, target, &body).await?;
            sftp.remove_file(path).await?;
        }
        if files.is_empty() {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// An SFTP session on `127.0.0.1:port`, logged in by password, the host key checked; and the
/// SSH connection it runs on, which must be kept.
pub(crate) async fn sftp_session(
    port: u16,
    fingerprint: String,
) -> anyhow::Result<(
    russh::client::Handle<Pinned>,
    russh_sftp::client::SftpSession,
)> {
    let config = std::sync::Arc::new(russh::client::Config::default());
    let mut ssh = russh::client::connect(config, ("127.0.0.1", port), Pinned(fingerprint)).await?;
    if !ssh
        .authenticate_password(SFTP_USER, SECRET)
        .await?
        .success()
    {
        bail!("the SFTP server refused the login");
    }
    let channel = ssh.channel_open_session().await?;
    channel.request_subsystem(true, "sftp").await?;
    let sftp = russh_sftp::client::SftpSession::new(channel.into_stream()).await?;
    Ok((ssh, sftp))
}

/// Accepts the one host key whose fingerprint it was given.
pub(crate) struct Pinned(String);

impl russh::client::Handler for Pinned {
    type Error = russh::Error;

    async fn check_server_key(
        &mut self,
        key: &russh::keys::PublicKeyOrCertificate,
    ) -> Result<bool, Self::Error> {
        let data = match key {
            russh::keys::PublicKeyOrCertificate::PublicKey { key, .. } => key.key_data(),
            russh::keys::PublicKeyOrCertificate::Certificate(c) => c.public_key(),
        };
        Ok(data.fingerprint(russh::keys::HashAlg::Sha256).to_string() == self.0)
    }
}

/// `BROKERS TOPIC GROUP`: reads the topic in a consumer group, posts records side by side
/// (as many as weft's default flow concurrency), and stores a partition's offset only past
/// records all posted; stored offsets are committed every second, as weft's input does.
async fn read_kafka(source: &str, client: &Http, target: &http::Uri) -> anyhow::Result<()> {
    use rdkafka::Message as _;
    use rdkafka::consumer::{Consumer, StreamConsumer};
    use std::collections::{BTreeSet, HashMap};
    use std::sync::{Arc, Mutex};
    let mut parts = source.split(' ');
    let (brokers, topic, group) = (
        parts.next().context("brokers")?,
        parts.next().context("topic")?,
        parts.next().context("group")?,
    );
    let consumer: Arc<StreamConsumer> = Arc::new(
        rdkafka::ClientConfig::new()
            .set("bootstrap.servers", brokers)
            .set("group.id", group)
            .set("enable.auto.offset.store", "false")
            .set("auto.commit.interval.ms", "1000")
            .set("auto.offset.reset", "earliest")
            .create()?,
    );
    consumer.subscribe(&[topic])?;
    // Per partition: the offsets under way, and the highest one read.
    type Partitions = HashMap<i32, (BTreeSet<i64>, i64)>;
    let under_way: Arc<Mutex<Partitions>> = Arc::default();
    let room = Arc::new(tokio::sync::Semaphore::new(CDC_CONCURRENCY));
    let (client, target) = (Arc::new(client.clone()), Arc::new(target.clone()));
    loop {
        let permit = room.clone().acquire_owned().await?;
        let record = consumer.recv().await?;
        let (partition, offset) = (record.partition(), record.offset());
        let body = record.payload().unwrap_or_default().to_vec();
        drop(record);
        {
            let mut all = under_way.lock().unwrap();
            let p = all.entry(partition).or_default();
            p.0.insert(offset);
            p.1 = p.1.max(offset);
        }
        let (consumer, under_way, client, target) = (
            consumer.clone(),
            under_way.clone(),
            client.clone(),
            target.clone(),
        );
        let topic = topic.to_string();
        tokio::spawn(async move {
            if let Err(e) = post(&client, &target, &body).await {
                eprintln!("kafka reader: {e}");
                std::process::exit(1);
            }
            drop(permit);
            let mut all = under_way.lock().unwrap();
            let p = all.get_mut(&partition).expect("taken");
            p.0.remove(&offset);
            let through = p.0.first().map_or(p.1, |oldest| oldest - 1);
            let _ = consumer.store_offset(&topic, partition, through);
        });
    }
}

/// `URL SLOT PUBLICATION`: reads the slot; posts each transaction's rows side by side, then
/// confirms the transaction.
async fn read_cdc(source: &str, client: &Http, target: &http::Uri) -> anyhow::Result<()> {
    use weft::clients::pg_replication::{Connection, Event, Target};
    let mut parts = source.split(' ');
    let (url, slot, publication) = (
        parts.next().context("url")?,
        parts.next().context("slot")?,
        parts.next().context("publication")?,
    );
    let target_db = Target::from_url(url).map_err(anyhow::Error::msg)?;
    let connection = Connection::open(&target_db).await?;
    let mut stream = connection.start(slot, publication, 0).await?;
    let mut rows: Vec<Vec<u8>> = Vec::new();
    let (mut confirmed, mut open) = (0u64, false);
    loop {
        match stream.next(Duration::from_secs(10)).await? {
            Some(Event::Change { after, .. }) => {
                let after = after.context("an insert has its row")?;
                rows.push(
                    after["body"]
                        .as_str()
                        .map(|s| s.as_bytes().to_vec())
                        .unwrap_or_else(|| serde_json::to_vec(&after["body"]).unwrap_or_default()),
                );
            }
            Some(Event::Commit { end }) => {
                let posted: Vec<anyhow::Result<()>> = futures_util::stream::iter(rows.drain(..))
                    .map(|body| async move { post(client, target, &body).await })
                    .buffer_unordered(CDC_CONCURRENCY)
                    .collect()
                    .await;
                posted.into_iter().collect::<anyhow::Result<()>>()?;
                confirmed = end;
                open = false;
                stream.confirm(end).await?;
            }
            Some(Event::Begin { .. }) => open = true,
            Some(Event::Keepalive { end, reply }) => {
                if !open {
                    confirmed = confirmed.max(end);
                }
                if reply {
                    stream.confirm(confirmed).await?;
                }
            }
            None => stream.confirm(confirmed).await?,
            Some(Event::Truncate { .. }) => {}
        }
    }
}

/// A PostgreSQL of the bench's own with `wal_level = logical`; stopped when dropped.
struct PrivatePostgres {
    _server: Killed,
    port: u16,
    psql: PathBuf,
}

impl PrivatePostgres {
    fn start(dir: &Path) -> anyhow::Result<PrivatePostgres> {
        // The newest installed.
        let bin = std::fs::read_dir("/usr/lib/postgresql")?
            .filter_map(|e| e.ok().map(|e| e.path().join("bin")))
            .filter(|bin| bin.join("initdb").exists())
            .max_by_key(|bin| {
                bin.parent()
                    .and_then(|v| v.file_name()?.to_str()?.parse::<u32>().ok())
            })
            .context("no PostgreSQL server programs under /usr/lib/postgresql")?;
        let data = dir.join("pgdata");
        std::fs::create_dir_all(&data)?;
        let root = Command::new("id")
            .arg("-u")
            .output()
            .is_ok_and(|o| o.stdout.starts_with(b"0\n"));
        let as_postgres = |program: &Path| {
            if root {
                let mut c = Command::new("runuser");
                c.args(["-u", "postgres", "--"]).arg(program);
                c
            } else {
                Command::new(program)
            }
        };
        if root {
            Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(dir)
                .status()?;
        }
        let init = as_postgres(&bin.join("initdb"))
            .args(["-A", "trust", "-U", "postgres", "--no-sync", "-D"])
            .arg(&data)
            .stdout(Stdio::null())
            .status()?;
        if !init.success() {
            bail!("initdb failed");
        }
        let port = free_port()?;
        let server = Killed(
            as_postgres(&bin.join("postgres"))
                .arg("-D")
                .arg(&data)
                .args(["-p", &port.to_string()])
                .args(["-c", "listen_addresses=127.0.0.1"])
                .args(["-c", "unix_socket_directories="])
                .args(["-c", "wal_level=logical"])
                .args(["-c", "max_replication_slots=8"])
                .args(["-c", "max_wal_senders=8"])
                .args(["-c", "fsync=off"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()?,
        );
        let pg = PrivatePostgres {
            _server: server,
            port,
            psql: bin.join("psql"),
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while pg.sql("SELECT 1").is_err() {
            if Instant::now() > deadline {
                bail!("the private PostgreSQL did not start");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Ok(pg)
    }

    fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    fn sql(&self, sql: &str) -> anyhow::Result<()> {
        let out = Command::new(&self.psql)
            .arg(self.url())
            .args(["-v", "ON_ERROR_STOP=1", "-q", "-c", sql])
            .stdout(Stdio::null())
            .output()?;
        if !out.status.success() {
            bail!("psql: {}", String::from_utf8_lossy(&out.stderr));
        }
        Ok(())
    }
}

/// The servers the connectors read from, those that run.
#[derive(Clone, Copy)]
struct Servers<'a> {
    /// The S3 server's data directory and port.
    s3: Option<(&'a Path, u16)>,
    sftp: Option<&'a SftpServer>,
    pg: Option<&'a PrivatePostgres>,
    kafka: Option<&'a Kafka>,
}

/// Where one contender reads from, made fresh for it.
struct Prepared {
    /// weft's input, one line of YAML.
    input: String,
    /// What the hand-written reader is given as `--source`.
    source: String,
    resources: String,
}

fn prepare(
    connector: &str,
    n: u64,
    dir: &Path,
    tag: &str,
    servers: &Servers<'_>,
) -> anyhow::Result<Prepared> {
    let Servers {
        s3,
        sftp,
        pg,
        kafka,
    } = *servers;
    let write_files = |into: &Path| -> anyhow::Result<()> {
        std::fs::create_dir_all(into)?;
        for i in 0..n {
            std::fs::write(into.join(format!("{i:08}.json")), BODY)?;
        }
        Ok(())
    };
    Ok(match connector {
        "directory" => {
            let inbox = dir.join(format!("inbox-{tag}"));
            write_files(&inbox)?;
            Prepared {
                input: format!(
                    "directory: {{ path: \"{}\", interval: 100ms, min_age: 0s }}",
                    inbox.display()
                ),
                source: inbox.display().to_string(),
                resources: String::new(),
            }
        }
        "s3" => {
            let (data, port) = s3.context("no S3 server")?;
            let bucket = format!("b{}", tag.replace(|c: char| !c.is_ascii_alphanumeric(), ""));
            write_files(&data.join(&bucket))?;
            Prepared {
                input: format!(
                    "s3: {{ bucket: {bucket}, endpoint: \"http://127.0.0.1:{port}\", credentials: {{ access_key_id: {KEY_ID}, secret_access_key: {SECRET} }}, interval: 100ms }}"
                ),
                source: format!("http://127.0.0.1:{port}/{bucket}"),
                resources: String::new(),
            }
        }
        "sftp" => {
            let server = sftp.context("no SFTP server")?;
            let inbox = format!(
                "inbox-{}",
                tag.replace(|c: char| !c.is_ascii_alphanumeric(), "")
            );
            write_files(&server.data.join(&inbox))?;
            Prepared {
                input: format!(
                    "sftp: {{ server: {{ url: \"sftp://{SFTP_USER}@127.0.0.1:{}\", password: {SECRET}, host_key: \"{}\" }}, path: /{inbox}, interval: 100ms, min_age: 0s }}",
                    server.port, server.fingerprint
                ),
                source: format!("{} {} /{inbox}", server.port, server.fingerprint),
                resources: String::new(),
            }
        }
        "postgres_cdc" => {
            let pg = pg.context("no PostgreSQL with wal_level = logical")?;
            let name = format!("t{}", tag.replace(|c: char| !c.is_ascii_alphanumeric(), ""));
            // One statement per call: psql runs several in one transaction, and a slot cannot
            // be made in one that wrote.
            pg.sql(&format!(
                "CREATE TABLE {name} (id bigint PRIMARY KEY, body jsonb)"
            ))?;
            pg.sql(&format!("CREATE PUBLICATION {name} FOR TABLE {name}"))?;
            pg.sql(&format!(
                "SELECT pg_create_logical_replication_slot('{name}', 'pgoutput')"
            ))?;
            let mut at = 0;
            while at < n {
                let to = (at + ROWS_PER_TRANSACTION).min(n);
                pg.sql(&format!(
                    "INSERT INTO {name} SELECT g, '{}'::jsonb FROM generate_series({}, {}) g",
                    BODY.replace('\'', "''"),
                    at + 1,
                    to
                ))?;
                at = to;
            }
            Prepared {
                input: format!(
                    "postgres_cdc: {{ database: db, slot: {name}, publication: {name}, create: false }}"
                ),
                source: format!("{} {name} {name}", pg.url()),
                resources: format!("resources:\n  sql:\n    db: {{ url: \"{}\" }}\n", pg.url()),
            }
        }
        "kafka" => {
            let kafka = kafka.context("no Kafka mock cluster")?;
            let name = format!("t{}", tag.replace(|c: char| !c.is_ascii_alphanumeric(), ""));
            kafka.fill(&name, n)?;
            let brokers = kafka.cluster.bootstrap_servers();
            Prepared {
                input: format!(
                    "kafka: {{ brokers: [\"{brokers}\"], topics: [{name}], group: {name} }}"
                ),
                source: format!("{brokers} {name} {name}"),
                resources: String::new(),
            }
        }
        other => bail!("unknown connector `{other}`"),
    })
}

/// librdkafka's mock cluster (one broker, in this process), and a producer to fill it.
pub(crate) struct Kafka {
    pub(crate) cluster:
        rdkafka::mocking::MockCluster<'static, rdkafka::producer::DefaultProducerContext>,
    producer: rdkafka::producer::BaseProducer,
}

/// Partitions of each topic: records are read side by side across them.
pub(crate) const KAFKA_PARTITIONS: i32 = 4;

impl Kafka {
    pub(crate) fn start() -> anyhow::Result<Kafka> {
        let cluster = rdkafka::mocking::MockCluster::new(1)?;
        let producer = rdkafka::ClientConfig::new()
            .set("bootstrap.servers", cluster.bootstrap_servers())
            .set("linger.ms", "5")
            .create()?;
        Ok(Kafka { cluster, producer })
    }

    /// A topic of `n` records of the body.
    fn fill(&self, topic: &str, n: u64) -> anyhow::Result<()> {
        use rdkafka::producer::{BaseRecord, Producer};
        self.cluster.create_topic(topic, KAFKA_PARTITIONS, 1)?;
        for i in 0..n {
            let key = i.to_string();
            let mut record = BaseRecord::to(topic).payload(BODY).key(key.as_str());
            // A full queue is drained, then the record is sent again.
            while let Err((e, back)) = self.producer.send(record) {
                if e.rdkafka_error_code() != Some(rdkafka::types::RDKafkaErrorCode::QueueFull) {
                    bail!("{e}");
                }
                self.producer.poll(Duration::from_millis(10));
                record = back;
            }
        }
        self.producer.flush(Duration::from_secs(60))?;
        Ok(())
    }
}

struct Read {
    rate: f64,
    cpu_us: f64,
}

/// Starts a reader and measures it from the receiver's first new item to its N-th.
fn measure(
    rt: &tokio::runtime::Runtime,
    mut reader: Command,
    receiver: &str,
    n: u64,
    what: &str,
) -> anyhow::Result<Read> {
    let before = crate::receiver_count(rt, receiver);
    let process = Killed(reader.stdout(Stdio::null()).spawn()?);
    let pid = process.0.id();
    let give_up = Instant::now() + Duration::from_secs(300);
    let (first, started, cpu_at_first) = loop {
        let now = crate::receiver_count(rt, receiver);
        if now > before {
            break (now, Instant::now(), cpu_seconds(pid)?);
        }
        if Instant::now() > give_up {
            bail!("{what}: nothing was read within 300s");
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    let done = loop {
        let now = crate::receiver_count(rt, receiver);
        if now >= before + n {
            break now;
        }
        if Instant::now() > give_up {
            bail!("{what}: only {} of {n} read within 300s", now - before);
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let elapsed = started.elapsed().as_secs_f64();
    let cpu = cpu_seconds(pid)? - cpu_at_first;
    drop(process);
    let items = (done - first) as f64;
    Ok(Read {
        rate: items / elapsed,
        cpu_us: cpu * 1e6 / items.max(1.0),
    })
}

/// `rclone serve sftp` over a directory, with a host key made here.
pub(crate) struct SftpServer {
    _process: Killed,
    pub(crate) port: u16,
    pub(crate) fingerprint: String,
    pub(crate) data: PathBuf,
}

impl SftpServer {
    pub(crate) fn start(
        rt: &tokio::runtime::Runtime,
        rclone: &Path,
        dir: &Path,
    ) -> anyhow::Result<SftpServer> {
        use russh::keys::ssh_key::{LineEnding, private::Ed25519Keypair};
        let data = dir.join("sftp");
        std::fs::create_dir_all(&data)?;
        let host = russh::keys::PrivateKey::from(Ed25519Keypair::from_seed(&[1; 32]));
        let key_file = dir.join("sftp_host_key");
        std::fs::write(&key_file, host.to_openssh(LineEnding::LF)?.as_bytes())?;
        let port = free_port()?;
        let process = Killed(
            pinned("0", rclone)
                .args(["serve", "sftp", "--user", SFTP_USER, "--pass", SECRET])
                .args(["--addr", &format!("127.0.0.1:{port}")])
                .arg("--key")
                .arg(&key_file)
                .args(["--dir-cache-time", "10ms"])
                .arg(&data)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()?,
        );
        rt.block_on(crate::wait_ready(&format!("127.0.0.1:{port}")))?;
        Ok(SftpServer {
            _process: process,
            port,
            fingerprint: host.fingerprint(russh::keys::HashAlg::Sha256).to_string(),
            data,
        })
    }
}

/// `rclone serve s3` over `data` (each bucket a directory in it), on CPU 0; and its port.
pub(crate) fn start_s3(
    rt: &tokio::runtime::Runtime,
    rclone: &Path,
    data: &Path,
) -> anyhow::Result<(Killed, u16)> {
    let port = free_port()?;
    let server = Killed(
        pinned("0", rclone)
            .args(["serve", "s3", "--auth-key", &format!("{KEY_ID},{SECRET}")])
            .args(["--addr", &format!("127.0.0.1:{port}"), "--etag-hash", "MD5"])
            // Each run's bucket is a directory made after the server started.
            .args(["--dir-cache-time", "10ms"])
            .arg(data)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?,
    );
    rt.block_on(crate::wait_ready(&format!("127.0.0.1:{port}")))?;
    Ok((server, port))
}

/// `target/peers/venv/bin/rclone` from the peers, or `WEFT_RCLONE`.
pub(crate) fn rclone() -> Option<PathBuf> {
    std::env::var_os("WEFT_RCLONE")
        .map(PathBuf::from)
        .or_else(|| Some(PathBuf::from("target/peers/venv/bin/rclone")))
        .filter(|p| p.exists())
}

pub fn orchestrate(
    messages: u64,
    rounds: usize,
    only: Option<String>,
    weft: Option<PathBuf>,
) -> anyhow::Result<()> {
    let (me, weft) = binaries(weft)?;
    let connectors = crate::chosen(only.as_deref(), &ALL, "connector")?;
    let _ = Command::new("taskset")
        .args(["-acp", "0", &std::process::id().to_string()])
        .stdout(Stdio::null())
        .status();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    let dir = std::env::temp_dir().join(format!("weft-bench-connectors-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let (_receiver, receiver) = crate::start_receiver(&me, &rt)?;
    let target = format!("http://{receiver}/in");
    // The servers, on CPU 0 with the orchestrator.
    let s3_data = dir.join("s3");
    std::fs::create_dir_all(&s3_data)?;
    let s3 = match rclone() {
        Some(rclone) if connectors.contains(&"s3") => Some(start_s3(&rt, &rclone, &s3_data)?),
        _ => None,
    };
    let sftp = match rclone() {
        Some(rclone) if connectors.contains(&"sftp") => {
            Some(SftpServer::start(&rt, &rclone, &dir)?)
        }
        _ => None,
    };
    let kafka = if connectors.contains(&"kafka") {
        Some(Kafka::start()?)
    } else {
        None
    };
    let pg = if connectors.contains(&"postgres_cdc") {
        match PrivatePostgres::start(&dir.join("pg")) {
            Ok(pg) => Some(pg),
            Err(e) => {
                println!("postgres_cdc skipped: {e}");
                None
            }
        }
    } else {
        None
    };
    for (name, missing) in [("s3", s3.is_none()), ("sftp", sftp.is_none())] {
        if missing && connectors.contains(&name) {
            println!(
                "{name} skipped: no rclone (run crates/weft/tests/peers/install.sh, or set WEFT_RCLONE)"
            );
        }
    }
    println!(
        "{messages} items of {} bytes per run, {rounds} rounds, reader pinned to CPU 1; baseline = a hand-written reader doing the same work",
        BODY.len()
    );
    println!(
        "{:<13} {:<9} {:>9} {:>12}",
        "connector", "reader", "items/s", "CPU µs/item"
    );
    let mut summary = Vec::new();
    for connector in connectors {
        if (connector == "s3" && s3.is_none())
            || (connector == "sftp" && sftp.is_none())
            || (connector == "postgres_cdc" && pg.is_none())
        {
            continue;
        }
        let (mut rates, mut cpus) = (Vec::new(), Vec::new());
        for round in 0..rounds {
            let mut pair = Vec::new();
            for contender in ["baseline", "weft"] {
                let tag = format!("{}x{round}{}", std::process::id(), &contender[..1]);
                let prepared = prepare(
                    connector,
                    messages,
                    &dir,
                    &tag,
                    &Servers {
                        s3: s3.as_ref().map(|(_, port)| (s3_data.as_path(), *port)),
                        sftp: sftp.as_ref(),
                        pg: pg.as_ref(),
                        kafka: kafka.as_ref(),
                    },
                )?;
                let reader = if contender == "baseline" {
                    let mut c = pinned("1", &me);
                    c.args(["read", "--connector", connector]).args([
                        "--source",
                        &prepared.source,
                        "--target",
                        &target,
                    ]);
                    c
                } else {
                    let mut flow = crate::mapping_flow(
                        "",
                        &prepared.input,
                        &format!("http_client: {{ url: \"{target}\" }}"),
                    );
                    if connector == "postgres_cdc" {
                        // The change's row holds the body (the reader takes it out too).
                        flow = flow.replacen(
                            "    pipeline:\n",
                            "    pipeline:\n      - map: . = .after.body\n",
                            1,
                        );
                    }
                    crate::weft_command(
                        &weft,
                        &dir,
                        &tag,
                        &format!("{}{flow}", prepared.resources),
                    )?
                };
                let result = measure(&rt, reader, &receiver, messages, connector)?;
                println!(
                    "{:<13} {:<9} {:>9.0} {:>12.1}",
                    connector, contender, result.rate, result.cpu_us
                );
                pair.push(result);
            }
            rates.push(pair[1].rate / pair[0].rate);
            cpus.push(pair[1].cpu_us / pair[0].cpu_us);
        }
        summary.push((connector, median(rates), median(cpus)));
    }
    println!("weft/baseline, median of {rounds} rounds (goal: throughput >= 0.8x):");
    for (connector, rate, cpu) in summary {
        println!("  {connector:<13} throughput {rate:.2}x, CPU/item {cpu:.2}x");
    }
    drop(pg);
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}
