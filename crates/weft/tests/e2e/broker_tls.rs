//! Redis (`rediss://`) and MQTT (`mqtts://`) over TLS, against private servers of the machine's
//! own `redis-server` and `mosquitto`, started by each test on a TLS-only port with a CA made
//! here and client certificates required: messages go both ways through weft's input and
//! output, a server whose certificate weft cannot check is refused with the reason, and a
//! `tls:` block on a plain URL is refused by `weft check` at its field.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::*;
use crate::tls::pki;

/// A server process of this test; killed when dropped.
struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `program` and waits until `port` accepts connections. `None`, said loudly (a failure
/// under `WEFT_REQUIRE_SERVICES=1`), when the machine has no such program.
async fn server(program: &str, args: &[&str], port: u16) -> Option<Server> {
    let child = match Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        // Mosquitto logs every connection; what matters shows in weft's answers.
        .stderr(Stdio::null())
        .spawn()
    {
        Ok(child) => child,
        Err(e) => {
            service_missing(program, &format!("127.0.0.1:{port}"), e);
            return None;
        }
    };
    let mut server = Server(child);
    let deadline = Instant::now() + Duration::from_secs(20);
    while tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .is_err()
    {
        if let Ok(Some(status)) = server.0.try_wait() {
            panic!("{program} exited before listening: {status}");
        }
        assert!(
            Instant::now() < deadline,
            "{program} did not listen on {port}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Some(server)
}

fn tls_block(dir: &Path) -> String {
    format!(
        "{{ ca_file: {ca}, cert_file: {cert}, key_file: {key} }}",
        ca = dir.join("ca.pem").display(),
        cert = dir.join("client.pem").display(),
        key = dir.join("client.key").display(),
    )
}

/// Runs the two-flow round trip (HTTP → output over TLS → input over TLS → receiver), then
/// the two refusals, each answered within seconds: `unknown_ca` (no `ca_file`: the public
/// roots do not know the test's CA, and the answer says it is the certificate) and
/// `no_client_cert` (the server wants one).
async fn round_trip(output: &str, input: &str, unknown_ca: &str, no_client_cert: &str) {
    let receiver = Receiver::start().await;
    let (port, bad_port, anonymous_port) = (free_port(), free_port(), free_port());
    let config = format!(
        r#"
flows:
  produce:
    input:
      http_server: {{ address: "127.0.0.1:{port}", errors: detailed }}
    output:
      {output}
  consume:
    input:
      {input}
    output:
      http_client: {{ url: "{to}" }}
  unknown_ca:
    input:
      http_server: {{ address: "127.0.0.1:{bad_port}", errors: detailed }}
    output:
      {unknown_ca}
  no_client_cert:
    input:
      http_server: {{ address: "127.0.0.1:{anonymous_port}", errors: detailed }}
    output:
      {no_client_cert}
"#,
        to = receiver.url("/in"),
    );
    let weft = Weft::start(&config).await;
    // The consumer may not be subscribed yet: what is published before that may be gone.
    let sent = warm_up(&receiver, &weft, |k| {
        let url = format!("http://127.0.0.1:{port}/");
        async move {
            post_json(&url, &format!(r#"{{"warmup": {k}}}"#)).await;
        }
    })
    .await;
    assert!(sent > 0);
    let (status, _, body) = post_json(
        &format!("http://127.0.0.1:{port}/"),
        r#"{"order": 7, "total": "19.90"}"#,
    )
    .await;
    assert_eq!(status, 200, "{body} {}", weft.stderr());
    assert!(
        eventually(Duration::from_secs(10), || receiver.seen().iter().any(
            |s| s.json() == serde_json::json!({"order": 7, "total": "19.90"})
        ))
        .await,
        "the message did not come back over TLS: {}",
        weft.stderr()
    );
    let (status, _, body) =
        post_json(&format!("http://127.0.0.1:{bad_port}/"), r#"{"order": 8}"#).await;
    assert!(status.is_server_error(), "{status} {body}");
    assert!(
        body.contains("certificate"),
        "the refusal names the certificate: {body}\n{}",
        weft.stderr()
    );
    let asked = std::time::Instant::now();
    let answered = tokio::time::timeout(
        Duration::from_secs(30),
        post_json(
            &format!("http://127.0.0.1:{anonymous_port}/"),
            r#"{"order": 9}"#,
        ),
    )
    .await;
    let (status, _, body) = answered.unwrap_or_else(|_| {
        panic!(
            "a server refusing weft's missing certificate left the caller waiting:\n{}",
            weft.stderr()
        )
    });
    assert!(status.is_server_error(), "{status} {body}");
    eprintln!(
        "refused without a client certificate in {:?}: {body}",
        asked.elapsed()
    );
    assert!(
        body.contains("CertificateRequired"),
        "the refusal says why: {body}"
    );
    assert!(
        !receiver
            .seen()
            .iter()
            .any(|s| s.json()["order"] == 8 || s.json()["order"] == 9),
        "a refused connection carried the message"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_over_tls_with_a_private_ca_and_a_client_certificate() {
    let dir = scratch();
    pki(&dir);
    let port = free_port();
    let file = |name: &str| dir.join(name).display().to_string();
    let (cert, key, ca, data) = (
        file("server.pem"),
        file("server.key"),
        file("ca.pem"),
        dir.display().to_string(),
    );
    let port_arg = port.to_string();
    let args = [
        "--port",
        "0",
        "--tls-port",
        &port_arg,
        "--bind",
        "127.0.0.1",
        "--tls-cert-file",
        &cert,
        "--tls-key-file",
        &key,
        "--tls-ca-cert-file",
        &ca,
        "--tls-auth-clients",
        "yes",
        "--save",
        "",
        "--appendonly",
        "no",
        "--dir",
        &data,
    ];
    let Some(_redis) = server("redis-server", &args, port).await else {
        return;
    };
    let url = format!("rediss://127.0.0.1:{port}");
    let tls = tls_block(&dir);
    round_trip(
        &format!("redis_list: {{ url: \"{url}\", list: orders, tls: {tls} }}"),
        &format!("redis_list: {{ url: \"{url}\", list: orders, tls: {tls} }}"),
        &format!("redis_list: {{ url: \"{url}\", list: orders, retry: {{ max_attempts: 1 }} }}"),
        &format!(
            "redis_list: {{ url: \"{url}\", list: orders, retry: {{ max_attempts: 1 }}, tls: {{ ca_file: {ca} }} }}"
        ),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt_over_tls_with_a_private_ca_and_a_client_certificate_in_both_versions() {
    let dir = scratch();
    pki(&dir);
    let port = free_port();
    let conf = dir.join("mosquitto.conf");
    let user = if unsafe { libc::geteuid() } == 0 {
        "user root\n"
    } else {
        ""
    };
    std::fs::write(
        &conf,
        format!(
            "{user}persistence false\nallow_anonymous true\nlistener {port} 127.0.0.1\n\
             cafile {ca}\ncertfile {cert}\nkeyfile {key}\nrequire_certificate true\n",
            ca = dir.join("ca.pem").display(),
            cert = dir.join("server.pem").display(),
            key = dir.join("server.key").display(),
        ),
    )
    .unwrap();
    let Some(_mosquitto) = server("mosquitto", &["-c", &conf.display().to_string()], port).await
    else {
        return;
    };
    let url = format!("mqtts://127.0.0.1:{port}");
    let tls = tls_block(&dir);
    round_trip(
        &format!("mqtt: {{ url: \"{url}\", topic: weft/tls, qos: 1, version: \"5\", tls: {tls} }}"),
        &format!("mqtt: {{ url: \"{url}\", topics: [weft/tls], qos: 1, tls: {tls} }}"),
        &format!(
            "mqtt: {{ url: \"{url}\", topic: weft/tls, qos: 1, retry: {{ max_attempts: 1 }} }}"
        ),
        &format!(
            "mqtt: {{ url: \"{url}\", topic: weft/tls, qos: 1, retry: {{ max_attempts: 1 }}, tls: {{ ca_file: {ca} }} }}",
            ca = dir.join("ca.pem").display()
        ),
    )
    .await;
}

#[test]
fn a_tls_block_on_a_plain_url_is_refused_at_its_field() {
    let dir = scratch();
    std::fs::write(
        dir.join("weft.yaml"),
        r#"flows:
  f:
    input:
      redis_list:
        url: redis://127.0.0.1:6379
        list: jobs
        tls: { ca_file: ca.pem }
    output:
      mqtt:
        url: mqtt://127.0.0.1:1883
        topic: t
        tls: { cert_file: client.pem }
"#,
    )
    .unwrap();
    let (status, out, err) = weft_cmd(&["check", "weft.yaml"], &dir);
    assert!(!status.success(), "{out}{err}");
    let said = format!("{out}{err}");
    assert!(said.contains("rediss://"), "{said}");
    assert!(said.contains("mqtts://"), "{said}");
    assert!(
        said.contains("weft.yaml:7:"),
        "the redis `tls` line is named: {said}"
    );
}
