//! Load harness: weft against the physical limit, measured in the same run.
//!
//! `cargo build --release -p weft -p weft-bench && target/release/weft-bench` runs, one after the
//! other against the same local receiver:
//! (a) `baseline`: a minimal axum server that parses the JSON body, does the mapping by hand with
//!     serde_json, forwards it with hyper-util's client and answers after the receiver did;
//! (b) weft with the equivalent flow (`http_server` → `map` → `http_client`).
//! The load generator (64 keep-alive connections, a 303-byte JSON body) runs on CPU 0; the server
//! under test and the receiver on CPU 1 (`../shared/BENCH.md`). The two servers are measured in
//! alternation for `--rounds` rounds (default 3, `--seconds` 8 each); it prints requests/s,
//! deliveries/s during the load, the end-to-end rate (accepted messages over the time until the
//! receiver had them all, which for durable mode includes draining its backlog), p50, p99, server
//! CPU µs per request and RSS for every run, and the median ratios.
//!
//! The same binary is every process of the run: `weft-bench receiver|baseline|load` are the
//! parts, `weft-bench` alone orchestrates them.
//!
//! `weft-bench soak --minutes 10` keeps weft (direct, the same flow) under that load for the
//! given time and samples its RSS after every `--interval` seconds (default 30): memory under
//! load should be flat, every sample after the first minute within ±10 % of their median.
//!
//! `weft-bench layout --map MAP` writes the list of functions the release binary is laid out by,
//! which keeps its resident machine code small (see [`layout`]).
//!
//! `weft-bench brokers` measures the broker connectors the same way: weft copying broker →
//! `map` → broker against a hand-written client doing the same copy (see [`brokers`]).
//!
//! `weft-bench connectors` measures the source connectors (`directory`, `s3`, `sftp`,
//! `postgres_cdc`, `kafka`): weft reading into the receiver against a hand-written reader doing the
//! same (see [`connectors`]).
//!
//! `weft-bench sinks` measures the sink connectors (`s3`, `sftp`, `kafka`, `smtp`): weft taking
//! webhooks and writing each to the connector against a hand-written server doing the same
//! (see [`sinks`]).
//!
//! `weft-bench cluster` measures durable flows on 1, 2 and 3 nodes of a cluster sharing one
//! NATS JetStream, and one node's queue on JetStream against its queue in SQLite (see
//! [`cluster`]).

mod brokers;
mod cluster;
mod connectors;
mod layout;
mod sinks;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use axum::Router;
use axum::body::Body;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use http::{Request, StatusCode, header};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::{Client, connect::HttpConnector};
use hyper_util::rt::{TokioExecutor, TokioIo};

/// The request body: 303 bytes, as in `BENCH.md`.
const BODY: &str = r#"{"id":12345,"first":"Ada","last":"Lovelace","email":"Ada.Lovelace@Example.COM","company":"Analytical Engines Ltd","street":"12 St James's Square","city":"London","zip":"SW1Y 4JH","country":"GB","phone":"+44 20 7946 0018","tags":["vip","newsletter","early-adopter"],"notes":"first programmer; prefers email","x":1}"#;

/// A flow `bench`: `input` → the mapping of `BENCH.md` → `output` (one-line YAML each), with
/// `settings` (indented flow keys) before them. The baselines do the mapping by hand.
fn mapping_flow(settings: &str, input: &str, output: &str) -> String {
    format!(
        r#"flows:
  bench:
{settings}    input:
      {input}
    pipeline:
      - map: |
          .order_id = to_string!(.id)
          .name = string!(.first) + " " + string!(.last)
          .email = downcase!(.email)
    output:
      {output}
"#
    )
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let arg = |name: &str| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .cloned()
    };
    let runtime = || {
        tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .expect("tokio starts")
    };
    match args.first().map(String::as_str) {
        Some("receiver") => runtime().block_on(receiver(
            arg("--address").context("--address")?.parse()?,
            Duration::from_millis(arg("--delay-ms").map_or(Ok(0), |d| d.parse())?),
        )),
        Some("cluster") => cluster::orchestrate(
            arg("--messages").map_or(Ok(3000), |n| n.parse())?,
            arg("--rounds").map_or(Ok(3), |c| c.parse())?,
            arg("--seconds").map_or(Ok(8.0), |s| s.parse())?,
            arg("--weft").map(PathBuf::from),
            arg("--nats").map(PathBuf::from),
        ),
        Some("baseline") => runtime().block_on(baseline(
            arg("--address").context("--address")?.parse()?,
            arg("--upstream").context("--upstream")?,
        )),
        Some("brokers") => brokers::orchestrate(
            arg("--messages").map_or(Ok(20_000), |n| n.parse())?,
            arg("--rounds").map_or(Ok(3), |c| c.parse())?,
            arg("--only"),
            arg("--weft").map(PathBuf::from),
        ),
        Some("connectors") => connectors::orchestrate(
            arg("--messages").map_or(Ok(5_000), |n| n.parse())?,
            arg("--rounds").map_or(Ok(3), |c| c.parse())?,
            arg("--only"),
            arg("--weft").map(PathBuf::from),
        ),
        Some("sinks") => sinks::orchestrate(
            arg("--seconds").map_or(Ok(5.0), |s| s.parse())?,
            arg("--rounds").map_or(Ok(3), |c| c.parse())?,
            arg("--connections").map_or(Ok(64), |c| c.parse())?,
            arg("--only"),
            arg("--weft").map(PathBuf::from),
        ),
        Some("write") => runtime().block_on(sinks::serve(
            &arg("--sink").context("--sink")?,
            &arg("--target").context("--target")?,
            arg("--address").context("--address")?.parse()?,
        )),
        Some("read") => runtime().block_on(connectors::read(
            &arg("--connector").context("--connector")?,
            &arg("--source").context("--source")?,
            &arg("--target").context("--target")?,
        )),
        Some("soak") => soak(
            arg("--minutes").map_or(Ok(10.0), |m| m.parse())?,
            arg("--interval").map_or(Ok(30.0), |s| s.parse())?,
            arg("--connections").map_or(Ok(64), |c| c.parse())?,
            arg("--weft").map(PathBuf::from),
        ),
        Some("layout") => {
            let (_, weft) = binaries(arg("--weft").map(PathBuf::from))?;
            layout::write(
                weft,
                arg("--map")
                    .map(PathBuf::from)
                    .context("--map: the linker map of the same build (WEFT_LINK_MAP)")?,
                arg("--out").map_or_else(
                    || PathBuf::from("crates/weft/link/hot-functions.txt"),
                    PathBuf::from,
                ),
                arg("--seconds").map_or(Ok(5.0), |s| s.parse())?,
            )
        }
        Some("copy") => runtime().block_on(brokers::copy(
            &arg("--broker").context("--broker")?,
            &arg("--source").context("--source")?,
            &arg("--target").context("--target")?,
        )),
        Some("load") => {
            let result = runtime().block_on(load(
                arg("--url").context("--url")?,
                arg("--connections").map_or(Ok(64), |c| c.parse())?,
                Duration::from_secs_f64(arg("--seconds").map_or(Ok(10.0), |s| s.parse())?),
            ))?;
            println!("{} {} {}", result.requests, result.p50_us, result.p99_us);
            Ok(())
        }
        None | Some("run") | Some("--seconds" | "--connections" | "--rounds" | "--weft") => {
            orchestrate(
                arg("--seconds").map_or(Ok(8.0), |s| s.parse())?,
                arg("--connections").map_or(Ok(64), |c| c.parse())?,
                arg("--rounds").map_or(Ok(3), |c| c.parse())?,
                arg("--weft").map(PathBuf::from),
            )
        }
        Some(other) => {
            bail!(
                "unknown command `{other}`; use run, cluster, brokers, connectors, sinks, soak, layout, receiver, baseline, load, copy, read or write"
            )
        }
    }
}

/// Answers 200 to everything (after `delay`) and counts; `GET /count` tells how many it took.
async fn receiver(address: SocketAddr, delay: Duration) -> anyhow::Result<()> {
    let count = Arc::new(AtomicU64::new(0));
    let app = Router::new().fallback(move |request: Request<Body>| {
        let count = count.clone();
        async move {
            if request.uri().path() == "/count" {
                return count.load(Ordering::Relaxed).to_string().into_response();
            }
            let _ = request.into_body().collect().await;
            if !delay.is_zero() {
                tokio::time::sleep(delay).await;
            }
            count.fetch_add(1, Ordering::Relaxed);
            StatusCode::OK.into_response()
        }
    });
    axum::serve(tokio::net::TcpListener::bind(address).await?, app).await?;
    Ok(())
}

/// The physical limit: the same mapping by hand, forwarded with hyper-util, reply after delivery.
async fn baseline(address: SocketAddr, upstream: String) -> anyhow::Result<()> {
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    let client: Client<HttpConnector, Full<Bytes>> =
        Client::builder(TokioExecutor::new()).build(connector);
    let upstream: http::Uri = upstream.parse()?;
    let app = Router::new().fallback(move |request: Request<Body>| {
        let client = client.clone();
        let upstream = upstream.clone();
        async move { forward(client, upstream, request).await }
    });
    axum::serve(tokio::net::TcpListener::bind(address).await?, app).await?;
    Ok(())
}

async fn forward(
    client: Client<HttpConnector, Full<Bytes>>,
    upstream: http::Uri,
    request: Request<Body>,
) -> Response {
    let Ok(body) = request.into_body().collect().await else {
        return StatusCode::BAD_REQUEST.into_response();
    };
    let Ok(mut value) = serde_json::from_slice::<serde_json::Value>(&body.to_bytes()) else {
        return StatusCode::BAD_REQUEST.into_response();
    };
    map_order(&mut value);
    let out = Request::post(upstream)
        .header(header::CONTENT_TYPE, "application/json")
        .body(Full::new(Bytes::from(
            serde_json::to_vec(&value).unwrap_or_default(),
        )))
        .expect("static request parts are valid");
    match client.request(out).await {
        Ok(r) if r.status().is_success() => {
            let _ = r.into_body().collect().await;
            (
                [(header::CONTENT_TYPE, "application/json")],
                r#"{"id":"01JBASELINE0000000000000000"}"#,
            )
                .into_response()
        }
        _ => StatusCode::BAD_GATEWAY.into_response(),
    }
}

/// The mapping of `BENCH.md`, by hand.
fn map_order(value: &mut serde_json::Value) {
    let text = |v: &serde_json::Value, k: &str| v[k].as_str().unwrap_or_default().to_string();
    let order_id = value["id"].to_string();
    let name = format!("{} {}", text(value, "first"), text(value, "last"));
    let email = text(value, "email").to_lowercase();
    value["order_id"] = order_id.into();
    value["name"] = name.into();
    value["email"] = email.into();
}

struct LoadResult {
    requests: u64,
    p50_us: u64,
    p99_us: u64,
}

/// `connections` keep-alive connections, each posting `BODY` in a loop for `duration`.
async fn load(url: String, connections: usize, duration: Duration) -> anyhow::Result<LoadResult> {
    let uri: http::Uri = url.parse()?;
    let authority = uri.authority().context("url has host:port")?.to_string();
    let deadline = Instant::now() + duration;
    let mut tasks = Vec::new();
    for _ in 0..connections {
        let authority = authority.clone();
        let uri = uri.clone();
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::with_capacity(1 << 16);
            let mut errors = 0u64;
            let stream = tokio::net::TcpStream::connect(&authority).await?;
            stream.set_nodelay(true)?;
            let (mut sender, conn) =
                hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
            tokio::spawn(conn);
            while Instant::now() < deadline {
                let request = Request::post(uri.clone())
                    .header(header::HOST, &authority)
                    .header(header::CONTENT_TYPE, "application/json")
                    .body(Full::new(Bytes::from_static(BODY.as_bytes())))?;
                let start = Instant::now();
                sender.ready().await?;
                let response = sender.send_request(request).await?;
                let ok = response.status().is_success();
                response.into_body().collect().await?;
                if ok {
                    latencies.push(start.elapsed().as_micros() as u32);
                } else {
                    errors += 1;
                }
            }
            anyhow::Ok((latencies, errors))
        }));
    }
    let mut all = Vec::new();
    let mut errors = 0;
    for t in tasks {
        let (latencies, e) = t.await??;
        all.extend(latencies);
        errors += e;
    }
    if errors > 0 {
        eprintln!("load: {errors} requests did not get 200");
    }
    all.sort_unstable();
    let pct = |p: f64| {
        all.get(((all.len() as f64 * p) as usize).min(all.len().saturating_sub(1)))
            .copied()
            .unwrap_or(0) as u64
    };
    Ok(LoadResult {
        requests: all.len() as u64,
        p50_us: pct(0.50),
        p99_us: pct(0.99),
    })
}

/// The names `--only` lists (comma-separated), each one of `all`; all of them without it.
fn chosen(
    only: Option<&str>,
    all: &[&'static str],
    what: &str,
) -> anyhow::Result<Vec<&'static str>> {
    let Some(list) = only else {
        return Ok(all.to_vec());
    };
    list.split(',')
        .map(|name| {
            all.iter()
                .find(|n| **n == name.trim())
                .copied()
                .with_context(|| format!("unknown {what} `{name}`; one of {all:?}"))
        })
        .collect()
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

fn pinned(cpu: &str, program: &std::path::Path) -> Command {
    let mut c = Command::new("taskset");
    c.arg("-c").arg(cpu).arg(program);
    c
}

struct Killed(Child);
impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// utime + stime of a process, in seconds.
fn cpu_seconds(pid: u32) -> anyhow::Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let after = &stat[stat.rfind(')').context("stat format")? + 2..];
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks: f64 = fields[11].parse::<f64>()? + fields[12].parse::<f64>()?;
    Ok(ticks / 100.0)
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

async fn wait_ready(address: &str) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(20);
    while tokio::net::TcpStream::connect(address).await.is_err() {
        if Instant::now() > deadline {
            bail!("{address} did not come up");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(())
}

struct Measured {
    rps: f64,
    /// Requests the receiver took per second in the same window (delivery, not just intake).
    delivered: f64,
    /// End to end: every accepted request (warm-up included) over the time from the start of
    /// the warm-up until the receiver had them all. Equal to `rps` for direct delivery; for
    /// durable delivery it includes draining the backlog that intake built up.
    end_to_end: f64,
    p50_ms: f64,
    p99_ms: f64,
    cpu_us: f64,
    rss_idle_mib: f64,
    rss_peak_mib: f64,
}

fn receiver_count(rt: &tokio::runtime::Runtime, receiver: &str) -> u64 {
    get_text(rt, receiver, "/count")
        .and_then(|text| text.trim().parse().ok())
        .unwrap_or(0)
}

/// The body of `GET path` from `address`, if it answered.
fn get_text(rt: &tokio::runtime::Runtime, address: &str, path: &str) -> Option<String> {
    rt.block_on(async {
        let stream = tokio::net::TcpStream::connect(address).await.ok()?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .ok()?;
        tokio::spawn(conn);
        let request = Request::get(path)
            .header(header::HOST, address)
            .body(Full::new(Bytes::new()))
            .ok()?;
        let body = sender
            .send_request(request)
            .await
            .ok()?
            .into_body()
            .collect()
            .await
            .ok()?;
        Some(String::from_utf8_lossy(&body.to_bytes()).into_owned())
    })
}

#[allow(clippy::too_many_arguments)]
fn measure(
    me: &std::path::Path,
    url: &str,
    server_pid: u32,
    seconds: f64,
    connections: usize,
    rt: &tokio::runtime::Runtime,
    receiver: &str,
) -> anyhow::Result<Measured> {
    let run_load = |secs: f64| run_load(me, url, connections, secs);
    let rss_idle = rss_kib(server_pid);
    let started = Instant::now();
    let received_at_start = receiver_count(rt, receiver);
    let warm_up = run_load(3.0)?;
    let cpu_before = cpu_seconds(server_pid)?;
    let delivered_before = receiver_count(rt, receiver);
    let result = run_load(seconds)?;
    let delivered = receiver_count(rt, receiver) - delivered_before;
    let cpu = cpu_seconds(server_pid)? - cpu_before;
    let rss_peak = rss_kib(server_pid);
    let accepted = warm_up.requests + result.requests;
    let give_up = Instant::now() + Duration::from_secs(120);
    let mut received = receiver_count(rt, receiver) - received_at_start;
    while received < accepted && Instant::now() < give_up {
        std::thread::sleep(Duration::from_millis(20));
        received = receiver_count(rt, receiver) - received_at_start;
    }
    let end_to_end = received.min(accepted) as f64 / started.elapsed().as_secs_f64();
    Ok(Measured {
        rps: result.requests as f64 / seconds,
        delivered: delivered as f64 / seconds,
        end_to_end,
        p50_ms: result.p50_us as f64 / 1000.0,
        p99_ms: result.p99_us as f64 / 1000.0,
        cpu_us: cpu * 1e6 / result.requests.max(1) as f64,
        rss_idle_mib: rss_idle as f64 / 1024.0,
        rss_peak_mib: rss_peak as f64 / 1024.0,
    })
}

/// One run of the load generator, on CPU 0.
fn run_load(
    me: &std::path::Path,
    url: &str,
    connections: usize,
    seconds: f64,
) -> anyhow::Result<LoadResult> {
    let out = pinned("0", me)
        .args([
            "load",
            "--url",
            url,
            "--connections",
            &connections.to_string(),
            "--seconds",
            &seconds.to_string(),
        ])
        .stderr(Stdio::inherit())
        .output()?;
    let text = String::from_utf8(out.stdout)?;
    let mut parts = text.split_whitespace().map(|p| p.parse::<u64>());
    Ok(LoadResult {
        requests: parts.next().context("load output")??,
        p50_us: parts.next().context("load output")??,
        p99_us: parts.next().context("load output")??,
    })
}

/// The receiver, on CPU 1, answering; and its address.
fn start_receiver(
    me: &std::path::Path,
    rt: &tokio::runtime::Runtime,
) -> anyhow::Result<(Killed, String)> {
    let address = format!("127.0.0.1:{}", free_port()?);
    let receiver = Killed(
        pinned("1", me)
            .args(["receiver", "--address", &address])
            .spawn()?,
    );
    rt.block_on(wait_ready(&address))?;
    Ok((receiver, address))
}

/// weft running `flow`, written to `DIR/TAG.yaml`, on CPU 1, with an admin port of its own and
/// `DIR/TAG` as its data directory.
fn weft_command(
    weft: &std::path::Path,
    dir: &std::path::Path,
    tag: &str,
    flow: &str,
) -> anyhow::Result<Command> {
    let config = dir.join(format!("{tag}.yaml"));
    std::fs::write(&config, flow)?;
    let admin = format!("127.0.0.1:{}", free_port()?);
    let mut c = pinned("1", weft);
    c.arg("run")
        .arg(&config)
        .args(["--admin-address", &admin])
        .arg("--data-dir")
        .arg(dir.join(tag))
        .env("WEFT_LOG", "warn");
    Ok(c)
}

/// This binary, and the weft binary beside it (or the one given).
fn binaries(weft: Option<PathBuf>) -> anyhow::Result<(PathBuf, PathBuf)> {
    let me = std::env::current_exe()?;
    let weft = weft.unwrap_or_else(|| me.with_file_name("weft"));
    if !weft.exists() {
        bail!(
            "{} not found: run `cargo build --release -p weft -p weft-bench` first, or pass --weft PATH",
            weft.display()
        );
    }
    Ok((me, weft))
}

fn orchestrate(
    seconds: f64,
    connections: usize,
    rounds: usize,
    weft: Option<PathBuf>,
) -> anyhow::Result<()> {
    let (me, weft) = binaries(weft)?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let load_before = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();

    let (receiver, receiver_addr) = start_receiver(&me, &rt)?;
    let upstream = format!("http://{receiver_addr}/sink");

    let base_addr = format!("127.0.0.1:{}", free_port()?);
    let base = Killed(
        pinned("1", &me)
            .args(["baseline", "--address", &base_addr, "--upstream", &upstream])
            .spawn()?,
    );
    rt.block_on(wait_ready(&base_addr))?;

    let dir = std::env::temp_dir().join(format!("weft-bench-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    // weft in three modes; each is its own process, pinned like the baseline.
    let modes = [
        ("weft", ""),
        ("durable", "durability: process\n"),
        ("dur-power", "durability: power\n"),
    ];
    let mut servers = vec![("baseline", base_addr.clone(), base)];
    for (name, top) in modes {
        let address = format!("127.0.0.1:{}", free_port()?);
        let mut flow = mapping_flow(
            "    concurrency: 4096\n",
            &format!(r#"http_server: {{ address: "{address}", path: /orders }}"#),
            &format!(r#"http_client: {{ url: "{upstream}" }}"#),
        );
        // A durable flow's queue is bounded larger than a run fills: intake outruns delivery
        // (the backlog is what durable mode is for), and with the default 100,000 the queue
        // filled late in a run, after which only as many requests were accepted as were
        // delivered (the rest got 429): the intake figure measured the bound and the delivery
        // rate as much as intake, the more so the faster intake was.
        if name != "weft" {
            flow = flow
                .replace(
                    "    concurrency: 4096\n",
                    "    delivery: durable\n    concurrency: 64\n    max_queued: 2000000\n    max_queued_bytes: 2GiB\n",
                )
                .replace("flows:\n", &format!("{top}flows:\n"));
        }
        let process = Killed(weft_command(&weft, &dir, name, &flow)?.spawn()?);
        rt.block_on(wait_ready(&address))?;
        servers.push((name, address, process));
    }

    // Alternate the servers so that drift on a shared machine hits all alike.
    println!(
        "{connections} connections, {seconds}s per run after a 3s warm-up, {rounds} rounds; load on CPU 0, servers and receiver on CPU 1"
    );
    println!(
        "{:<10} {:>9} {:>11} {:>11} {:>8} {:>8} {:>11} {:>9} {:>9}",
        "server",
        "req/s",
        "delivered/s",
        "end-to-end",
        "p50 ms",
        "p99 ms",
        "CPU µs/req",
        "idle MiB",
        "peak MiB"
    );
    let mut results: Vec<Vec<Measured>> = servers.iter().map(|_| Vec::new()).collect();
    for _ in 0..rounds {
        for (i, (name, address, process)) in servers.iter().enumerate() {
            let m = measure(
                &me,
                &format!("http://{address}/orders"),
                process.0.id(),
                seconds,
                connections,
                &rt,
                &receiver_addr,
            )?;
            println!(
                "{:<10} {:>9.0} {:>11.0} {:>11.0} {:>8.2} {:>8.2} {:>11.1} {:>9.1} {:>9.1}",
                name,
                m.rps,
                m.delivered,
                m.end_to_end,
                m.p50_ms,
                m.p99_ms,
                m.cpu_us,
                m.rss_idle_mib,
                m.rss_peak_mib
            );
            results[i].push(m);
            // A durable server may still be delivering its backlog: let it finish, so it does
            // not take CPU from the next server's run.
            let mut last = receiver_count(&rt, &receiver_addr);
            for _ in 0..120 {
                std::thread::sleep(Duration::from_millis(500));
                let now = receiver_count(&rt, &receiver_addr);
                if now == last {
                    break;
                }
                last = now;
            }
        }
    }
    drop(servers);
    drop(receiver);
    let load_after = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let median_ratio = |i: usize, f: fn(&Measured) -> f64, base: usize| {
        let mut v: Vec<f64> = (0..rounds)
            .map(|r| f(&results[i][r]) / f(&results[base][r]))
            .collect();
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    println!(
        "weft/baseline, median of {rounds}: throughput {:.2}x (goal >= 0.9), p99 {:.2}x (goal <= 1.3), CPU/req {:.2}x (goal <= 1.15)",
        median_ratio(1, |m| m.rps, 0),
        median_ratio(1, |m| m.p99_ms, 0),
        median_ratio(1, |m| m.cpu_us, 0)
    );
    println!(
        "durable/direct, median of {rounds}: intake (202) {:.2}x (goal >= 0.85), delivered during load {:.2}x, end to end {:.2}x (goal >= 0.7); with durability: power intake {:.2}x, delivered during load {:.2}x, end to end {:.2}x",
        median_ratio(2, |m| m.rps, 1),
        median_ratio(2, |m| m.delivered, 1),
        median_ratio(2, |m| m.end_to_end, 1),
        median_ratio(3, |m| m.rps, 1),
        median_ratio(3, |m| m.delivered, 1),
        median_ratio(3, |m| m.end_to_end, 1)
    );
    println!(
        "loadavg before: {}loadavg after:  {}",
        load_before, load_after
    );
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

/// Loads one weft for `minutes`, sampling throughput, p99 and RSS after every `interval`
/// seconds of load; the verdict is on the samples after the first minute (warm-up: buffers,
/// pools and allocator arenas reach their working size).
fn soak(
    minutes: f64,
    interval: f64,
    connections: usize,
    weft: Option<PathBuf>,
) -> anyhow::Result<()> {
    let (me, weft) = binaries(weft)?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let (_receiver, receiver_addr) = start_receiver(&me, &rt)?;
    let dir = std::env::temp_dir().join(format!("weft-soak-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    let address = format!("127.0.0.1:{}", free_port()?);
    let flow = mapping_flow(
        "    concurrency: 4096\n",
        &format!(r#"http_server: {{ address: "{address}", path: /orders }}"#),
        &format!(r#"http_client: {{ url: "http://{receiver_addr}/sink" }}"#),
    );
    let server = Killed(weft_command(&weft, &dir, "weft", &flow)?.spawn()?);
    rt.block_on(wait_ready(&address))?;
    let pid = server.0.id();
    std::thread::sleep(Duration::from_secs(1));
    let idle_before = rss_kib(pid);
    println!(
        "soak: {minutes} min of {connections} connections, RSS sampled every {interval}s; idle before: {:.1} MiB",
        idle_before as f64 / 1024.0
    );
    println!(
        "{:>8} {:>9} {:>8} {:>9}",
        "minute", "req/s", "p99 ms", "RSS MiB"
    );
    let url = format!("http://{address}/orders");
    let started = Instant::now();
    let mut samples: Vec<(f64, u64)> = Vec::new();
    while started.elapsed().as_secs_f64() < minutes * 60.0 {
        let load = run_load(&me, &url, connections, interval)?;
        let rss = rss_kib(pid);
        let minute = started.elapsed().as_secs_f64() / 60.0;
        println!(
            "{:>8.1} {:>9.0} {:>8.2} {:>9.1}",
            minute,
            load.requests as f64 / interval,
            load.p99_us as f64 / 1000.0,
            rss as f64 / 1024.0
        );
        samples.push((minute, rss));
    }
    std::thread::sleep(Duration::from_secs(2));
    let idle_after = rss_kib(pid);
    drop(server);
    let _ = std::fs::remove_dir_all(&dir);
    let steady: Vec<f64> = samples
        .iter()
        .filter(|(minute, _)| *minute > 1.0)
        .map(|(_, rss)| *rss as f64 / 1024.0)
        .collect();
    if steady.is_empty() {
        bail!("no samples after the first minute: soak longer than a minute");
    }
    let median = median(steady.clone());
    let worst = steady
        .iter()
        .map(|rss| (rss - median).abs() / median)
        .fold(0.0, f64::max);
    println!(
        "RSS after the first minute: median {median:.1} MiB, min {:.1}, max {:.1}, furthest sample {:.1} % from the median (goal <= 10 %); idle after the load: {:.1} MiB",
        steady.iter().copied().fold(f64::INFINITY, f64::min),
        steady.iter().copied().fold(0.0, f64::max),
        worst * 100.0,
        idle_after as f64 / 1024.0
    );
    Ok(())
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}
