//! `weft-bench cluster`: durable flows on several nodes of a cluster that share one NATS
//! JetStream server, measured against one node in the same run.
//!
//! Two measures, each alternated over `--rounds` rounds:
//! - **Scaling** (latency-bound): a receiver that answers after 50 ms, a durable flow with 16
//!   deliveries at once per node, `--messages` messages posted over 32 connections spread over
//!   the nodes; the rate is messages over the time until the receiver had them all. With 1, 2
//!   and 3 nodes (goals: 2 nodes ≥ 1.8×, 3 nodes ≥ 2.6× the rate of one).
//! - **One node, CPU-bound**: the durable flow of `weft-bench run` (receiver answering at once)
//!   on a single node whose queue is on JetStream, against the same node on its SQLite store
//!   (goal: end to end ≥ 0.6×).
//!
//! The NATS server is the PyPI one the peers script installs (`target/peers/venv/bin`), or
//! `nats-server` on the path, or `--nats PATH`; it runs on a port and a store directory of the
//! run's own.

use super::*;

/// Deliveries at once per node, and the receiver's answer time, of the scaling measure.
const PER_NODE: u32 = 16;
const RECEIVER_DELAY: Duration = Duration::from_millis(50);
/// Connections posting the scaling measure's messages.
const POSTERS: usize = 32;

pub fn orchestrate(
    messages: usize,
    rounds: usize,
    seconds: f64,
    weft: Option<PathBuf>,
    nats: Option<PathBuf>,
) -> anyhow::Result<()> {
    let (me, weft) = binaries(weft)?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let dir = std::env::temp_dir().join(format!("weft-bench-cluster-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    let (_nats, nats_url) = start_nats(nats, &dir, &rt)?;

    let slow_address = format!("127.0.0.1:{}", free_port()?);
    let _slow = Killed(
        pinned("0", &me)
            .args(["receiver", "--address", &slow_address])
            .args(["--delay-ms", &RECEIVER_DELAY.as_millis().to_string()])
            .spawn()?,
    );
    rt.block_on(wait_ready(&slow_address))?;

    println!(
        "scaling: {messages} messages over {POSTERS} connections, a receiver answering after {} ms, {PER_NODE} deliveries at once per node",
        RECEIVER_DELAY.as_millis()
    );
    println!(
        "{:<8} {:>6} {:>12} {:>10}",
        "nodes", "round", "messages/s", "seconds"
    );
    let mut rates: Vec<Vec<f64>> = vec![Vec::new(); 3];
    for round in 0..rounds {
        for nodes in 1..=3 {
            let name = format!("scale_{round}_{nodes}");
            let mut running = Vec::new();
            let mut urls = Vec::new();
            for node in 0..nodes {
                let address = format!("127.0.0.1:{}", free_port()?);
                let flow = node_flow(
                    &nats_url,
                    &name,
                    &format!("n{node}"),
                    &address,
                    &format!("http://{slow_address}/sink"),
                    PER_NODE,
                );
                let tag = format!("{name}_{node}");
                // Every node on CPU 1 (a latency-bound flow needs little of it), the receiver
                // on CPU 0.
                running.push(Killed(weft_command(&weft, &dir, &tag, &flow)?.spawn()?));
                rt.block_on(wait_ready(&address))?;
                urls.push(format!("http://{address}/orders"));
            }
            let before = receiver_count(&rt, &slow_address);
            let started = Instant::now();
            let accepted = rt.block_on(post_all(&urls, messages))?;
            let give_up = Instant::now() + Duration::from_secs(300);
            while receiver_count(&rt, &slow_address) - before < accepted as u64 {
                if Instant::now() > give_up {
                    bail!("{nodes} node(s): the receiver did not get all {accepted} messages");
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            let elapsed = started.elapsed().as_secs_f64();
            let rate = accepted as f64 / elapsed;
            println!("{nodes:<8} {round:>6} {rate:>12.0} {elapsed:>10.2}");
            rates[nodes - 1].push(rate);
            drop(running);
        }
    }
    let ratio = |n: usize| median((0..rounds).map(|r| rates[n - 1][r] / rates[0][r]).collect());
    let scaling = (ratio(2), ratio(3));

    // One node, CPU-bound: its queue on JetStream against its queue in SQLite.
    let (receiver, receiver_addr) = start_receiver(&me, &rt)?;
    let upstream = format!("http://{receiver_addr}/sink");
    let mut servers = Vec::new();
    for (tag, cluster) in [("sqlite", false), ("jetstream", true)] {
        let address = format!("127.0.0.1:{}", free_port()?);
        let mut flow = mapping_flow(
            "    delivery: durable\n    concurrency: 64\n    max_queued: 2000000\n    max_queued_bytes: 2GiB\n",
            &format!(r#"http_server: {{ address: "{address}", path: /orders }}"#),
            &format!(r#"http_client: {{ url: "{upstream}" }}"#),
        );
        if cluster {
            flow = format!(
                "cluster:\n  nats: {{ url: \"{nats_url}\" }}\n  name: one_node\n  node: solo\n{flow}"
            );
        }
        let process = Killed(weft_command(&weft, &dir, tag, &flow)?.spawn()?);
        rt.block_on(wait_ready(&address))?;
        servers.push((tag, address, process));
    }
    println!(
        "one node, durable, 64 connections, {seconds}s per run after a 3s warm-up; load on CPU 0, weft and the receiver on CPU 1, NATS unpinned"
    );
    println!(
        "{:<10} {:>9} {:>11} {:>11} {:>8} {:>8} {:>11}",
        "queue", "req/s", "delivered/s", "end-to-end", "p50 ms", "p99 ms", "CPU µs/req"
    );
    let mut results: Vec<Vec<Measured>> = servers.iter().map(|_| Vec::new()).collect();
    for _ in 0..rounds {
        for (i, (tag, address, process)) in servers.iter().enumerate() {
            let m = measure(
                &me,
                &format!("http://{address}/orders"),
                process.0.id(),
                seconds,
                64,
                &rt,
                &receiver_addr,
            )?;
            println!(
                "{:<10} {:>9.0} {:>11.0} {:>11.0} {:>8.2} {:>8.2} {:>11.1}",
                tag, m.rps, m.delivered, m.end_to_end, m.p50_ms, m.p99_ms, m.cpu_us
            );
            results[i].push(m);
            settle(&rt, &receiver_addr);
        }
    }
    drop(servers);
    drop(receiver);
    let one_node = |f: fn(&Measured) -> f64| {
        median(
            (0..rounds)
                .map(|r| f(&results[1][r]) / f(&results[0][r]))
                .collect(),
        )
    };
    println!(
        "scaling, median of {rounds}: 2 nodes {:.2}x (goal >= 1.8), 3 nodes {:.2}x (goal >= 2.6) the rate of one",
        scaling.0, scaling.1
    );
    println!(
        "one node, JetStream/SQLite queue, median of {rounds}: intake (202) {:.2}x, end to end {:.2}x (goal >= 0.6)",
        one_node(|m| m.rps),
        one_node(|m| m.end_to_end)
    );
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

/// A durable flow on node `node` of cluster `name`: the mapping of `BENCH.md`, `workers`
/// deliveries at once.
fn node_flow(
    nats: &str,
    name: &str,
    node: &str,
    address: &str,
    upstream: &str,
    workers: u32,
) -> String {
    let flow = mapping_flow(
        &format!(
            "    delivery: durable\n    concurrency: {workers}\n    max_queued: 2000000\n    max_queued_bytes: 2GiB\n"
        ),
        &format!(r#"http_server: {{ address: "{address}", path: /orders }}"#),
        &format!(r#"http_client: {{ url: "{upstream}" }}"#),
    );
    format!("cluster:\n  nats: {{ url: \"{nats}\" }}\n  name: {name}\n  node: {node}\n{flow}")
}

/// Waits until the receiver's count stops moving (a backlog delivered).
fn settle(rt: &tokio::runtime::Runtime, receiver: &str) {
    let mut last = receiver_count(rt, receiver);
    for _ in 0..240 {
        std::thread::sleep(Duration::from_millis(500));
        let now = receiver_count(rt, receiver);
        if now == last {
            return;
        }
        last = now;
    }
}

/// A NATS server with JetStream on a port of its own; its URL.
fn start_nats(
    given: Option<PathBuf>,
    dir: &std::path::Path,
    rt: &tokio::runtime::Runtime,
) -> anyhow::Result<(Killed, String)> {
    let binary = given
        .or_else(|| {
            let current = PathBuf::from("target/peers/venv/bin/nats-server");
            current.exists().then_some(current)
        })
        .unwrap_or_else(|| PathBuf::from("nats-server"));
    let port = free_port()?;
    let process = Command::new(&binary)
        .args(["-js", "-a", "127.0.0.1", "-p", &port.to_string(), "-sd"])
        .arg(dir.join("nats"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .with_context(|| format!("starting {} (pass --nats PATH)", binary.display()))?;
    let address = format!("127.0.0.1:{port}");
    rt.block_on(wait_ready(&address))?;
    Ok((Killed(process), format!("nats://{address}")))
}

/// Posts `messages` copies of `BODY` over [`POSTERS`] connections, each to one of `urls` in
/// turn; how many were accepted (202).
async fn post_all(urls: &[String], messages: usize) -> anyhow::Result<usize> {
    let next = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for c in 0..POSTERS {
        let uri: http::Uri = urls[c % urls.len()].parse()?;
        let next = next.clone();
        tasks.push(tokio::spawn(async move {
            let authority = uri.authority().context("host:port")?.to_string();
            let stream = tokio::net::TcpStream::connect(&authority).await?;
            stream.set_nodelay(true)?;
            let (mut sender, conn) =
                hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
            tokio::spawn(conn);
            let mut accepted = 0usize;
            while (next.fetch_add(1, Ordering::Relaxed) as usize) < messages {
                let request = Request::post(uri.clone())
                    .header(header::HOST, &authority)
                    .header(header::CONTENT_TYPE, "application/json")
                    .body(Full::new(Bytes::from_static(BODY.as_bytes())))?;
                sender.ready().await?;
                let response = sender.send_request(request).await?;
                if response.status() == StatusCode::ACCEPTED {
                    accepted += 1;
                }
                response.into_body().collect().await?;
            }
            anyhow::Ok(accepted)
        }));
    }
    let mut accepted = 0;
    for task in tasks {
        accepted += task.await??;
    }
    Ok(accepted)
}
