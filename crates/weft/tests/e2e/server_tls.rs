//! weft's servers over TLS: `http_server` with client certificates (mutual TLS) accepted and
//! refused, certificates reloaded when their files change and on SIGHUP (a broken file keeps
//! the one in use), the admin endpoint over HTTPS, and the connection limits (header count and
//! size, a slow client's headers, connections at once).

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::support::*;

struct Ca {
    der: CertificateDer<'static>,
    issuer: Issuer<'static, KeyPair>,
}

fn ca(name: &str) -> Ca {
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, name);
    let cert = params.self_signed(&key).unwrap();
    Ca {
        der: cert.der().clone(),
        issuer: Issuer::new(params, key),
    }
}

/// A certificate for `names` signed by `ca`: its DER, PEM and key PEM.
fn leaf(ca: &Ca, names: &[&str]) -> (CertificateDer<'static>, String, String, KeyPair) {
    let key = KeyPair::generate().unwrap();
    let cert = CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
        .unwrap()
        .signed_by(&key, &ca.issuer)
        .unwrap();
    (cert.der().clone(), cert.pem(), key.serialize_pem(), key)
}

/// Writes the server's certificate and key the way a certificate manager does: each to a new
/// file, renamed over the old.
fn install(dir: &Path, cert_pem: &str, key_pem: &str) {
    for (name, text) in [("server.key", key_pem), ("server.pem", cert_pem)] {
        let tmp = dir.join(format!("{name}.new"));
        std::fs::write(&tmp, text).unwrap();
        std::fs::rename(&tmp, dir.join(name)).unwrap();
    }
}

type ClientCert = (Vec<CertificateDer<'static>>, PrivateKeyDer<'static>);

/// One HTTPS request; the status and the certificate the server presented.
async fn https(
    port: u16,
    ca: &CertificateDer<'static>,
    client: Option<&ClientCert>,
    method: &str,
    path: &str,
) -> Result<(u16, CertificateDer<'static>), String> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca.clone()).unwrap();
    let builder = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots);
    let config = match client {
        Some((chain, key)) => builder
            .with_client_auth_cert(chain.clone(), key.clone_key())
            .unwrap(),
        None => builder.with_no_client_auth(),
    };
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .map_err(|e| e.to_string())?;
    let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(ServerName::try_from("127.0.0.1").unwrap(), tcp)
        .await
        .map_err(|e| format!("handshake: {e}"))?;
    let served = tls.get_ref().1.peer_certificates().unwrap()[0].clone();
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(connection);
    let request = http::Request::builder()
        .method(method)
        .uri(path)
        .header("host", format!("127.0.0.1:{port}"))
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from_static(br#"{"over": "tls"}"#)))
        .unwrap();
    let response = sender
        .send_request(request)
        .await
        .map_err(|e| format!("request: {e}"))?;
    let status = response.status().as_u16();
    let _ = response.into_body().collect().await;
    Ok((status, served))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutual_tls_accepts_known_clients_and_certificates_reload() {
    let dir = scratch();
    let ours = ca("weft test CA");
    let rogue = ca("someone else");
    let (first, cert_pem, key_pem, _) = leaf(&ours, &["127.0.0.1"]);
    install(&dir, &cert_pem, &key_pem);
    std::fs::write(
        dir.join("clients.pem"),
        pem_of(&ours.der), // client certificates must chain to our CA
    )
    .unwrap();
    let client_of = |ca: &Ca| -> ClientCert {
        let (der, _, _, key) = leaf(ca, &["partner"]);
        (
            vec![der],
            PrivatePkcs8KeyDer::from(key.serialize_der()).into(),
        )
    };
    let (partner, stranger) = (client_of(&ours), client_of(&rogue));
    let receiver = Receiver::start().await;
    let port = free_port();
    let d = dir.display();
    let config = format!(
        r#"admin:
  tls: {{ cert_file: "{d}/server.pem", key_file: "{d}/server.key" }}
flows:
  secure:
    input:
      http_server:
        address: "127.0.0.1:{port}"
        tls: {{ cert_file: "{d}/server.pem", key_file: "{d}/server.key", client_ca_file: "{d}/clients.pem" }}
    output:
      http_client: {{ url: "{out}" }}
"#,
        out = receiver.url("/in")
    );
    let mut weft = Weft::spawn_in(dir.clone(), &config, &[], std::process::Stdio::null());
    let admin_port = weft.admin.port();
    let ready = eventually(Duration::from_secs(20), || {
        std::fs::read_to_string(dir.join("stderr.log"))
            .unwrap_or_default()
            .contains("admin endpoint")
    })
    .await;
    assert!(ready, "{}", weft.stderr());

    // The admin endpoint answers over HTTPS, without a client certificate.
    let (status, _) = https(admin_port, &ours.der, None, "GET", "/health")
        .await
        .unwrap();
    assert_eq!(status, 200);

    // A client with a certificate from our CA gets through; one without, or with a stranger's,
    // never gets past the handshake, and nothing of theirs reaches the flow.
    let (status, served) = https(port, &ours.der, Some(&partner), "POST", "/")
        .await
        .unwrap();
    assert_eq!((status, served), (200, first.clone()), "{}", weft.stderr());
    assert!(https(port, &ours.der, None, "POST", "/").await.is_err());
    assert!(
        https(port, &ours.der, Some(&stranger), "POST", "/")
            .await
            .is_err()
    );
    assert_eq!(receiver.seen().len(), 1);

    // The certificate is renewed on disk: new connections get the new one.
    let (second, cert_pem, key_pem, _) = leaf(&ours, &["127.0.0.1"]);
    install(&dir, &cert_pem, &key_pem);
    let mut renewed = false;
    for _ in 0..50 {
        let (_, served) = https(port, &ours.der, Some(&partner), "POST", "/")
            .await
            .unwrap();
        if served == second {
            renewed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(
        renewed,
        "the new certificate was not served: {}",
        weft.stderr()
    );

    // A broken file is reported and the certificate in use is kept.
    let failures = |w: &Weft| w.stderr().matches("TLS files did not load").count();
    let failed = failures(&weft);
    std::fs::write(dir.join("server.pem"), "not a certificate").unwrap();
    let reported = eventually(Duration::from_secs(10), || failures(&weft) > failed).await;
    assert!(reported, "{}", weft.stderr());
    let (status, served) = https(port, &ours.der, Some(&partner), "POST", "/")
        .await
        .unwrap();
    assert_eq!((status, served), (200, second));

    // SIGHUP reads the files again, changed or not, and weft keeps running. The good files go
    // back first, and the watchers' own reloads of them are let settle, so only SIGHUP can
    // log another.
    let reloads = |w: &Weft| w.stderr().matches("TLS certificate reloaded").count();
    let settled = reloads(&weft);
    install(&dir, &cert_pem, &key_pem);
    assert!(eventually(Duration::from_secs(10), || reloads(&weft) > settled).await);
    tokio::time::sleep(Duration::from_secs(3)).await;
    let before = reloads(&weft);
    let hup = std::process::Command::new("kill")
        .args(["-HUP", &weft.child.id().to_string()])
        .status()
        .unwrap();
    assert!(hup.success());
    let reloaded = eventually(Duration::from_secs(5), || reloads(&weft) > before).await;
    assert!(reloaded, "{}", weft.stderr());
    assert!(
        weft.child.try_wait().unwrap().is_none(),
        "SIGHUP stopped weft"
    );
    let (status, _) = https(port, &ours.der, Some(&partner), "POST", "/")
        .await
        .unwrap();
    assert_eq!(status, 200);
    weft.kill();
}

fn pem_of(der: &CertificateDer<'_>) -> String {
    use base64::Engine;
    let text = base64::engine::general_purpose::STANDARD.encode(der.as_ref());
    let lines: Vec<&str> = text
        .as_bytes()
        .chunks(64)
        .map(|c| std::str::from_utf8(c).unwrap())
        .collect();
    format!(
        "-----BEGIN CERTIFICATE-----\n{}\n-----END CERTIFICATE-----\n",
        lines.join("\n")
    )
}

/// Sends raw bytes on a new connection and reads what comes back until the server closes or
/// `wait` passes.
async fn raw(port: u16, bytes: &[u8], wait: Duration) -> String {
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    stream.write_all(bytes).await.unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(wait, stream.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_limits_protect_the_server() {
    let receiver = Receiver::start().await;
    let port = free_port();
    let weft = Weft::start(&format!(
        r#"flows:
  limited:
    input:
      http_server:
        address: "127.0.0.1:{port}"
        limits: {{ max_connections: 2, max_headers: 20, max_header_size: 8KiB, header_timeout: 2s }}
    output:
      http_client: {{ url: "{out}" }}
"#,
        out = receiver.url("/in")
    ))
    .await;
    let body = r#"{"a":1}"#;
    let request = |extra: &str| {
        format!(
            "POST / HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n{extra}\r\n{body}",
            body.len()
        )
    };
    let ok = raw(port, request("").as_bytes(), Duration::from_secs(5)).await;
    assert!(ok.starts_with("HTTP/1.1 200"), "{ok}");

    let many: String = (0..30).map(|i| format!("x-h{i}: v\r\n")).collect();
    let answer = raw(port, request(&many).as_bytes(), Duration::from_secs(5)).await;
    assert!(answer.starts_with("HTTP/1.1 431"), "30 headers: {answer}");
    let big = format!("x-big: {}\r\n", "a".repeat(10_000));
    let answer = raw(port, request(&big).as_bytes(), Duration::from_secs(5)).await;
    assert!(answer.starts_with("HTTP/1.1 431"), "10 kB header: {answer}");

    // A client that starts its headers and stalls is cut off after `header_timeout`.
    let started = std::time::Instant::now();
    let answer = raw(
        port,
        b"POST / HTTP/1.1\r\nhost: x\r\n",
        Duration::from_secs(5),
    )
    .await;
    assert!(
        started.elapsed() < Duration::from_secs(4) && !answer.starts_with("HTTP/1.1 2"),
        "a stalled client held its connection: {answer}"
    );

    // Two idle connections take both places: a third waits until one goes (well within the
    // header timeout, which would free them too).
    let idle_a = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    let idle_b = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let third = tokio::spawn(raw(
        port,
        request("").into_bytes().leak(),
        Duration::from_secs(8),
    ));
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        receiver.seen().len(),
        1,
        "a third connection was served while two held both places"
    );
    drop(idle_a);
    let answer = third.await.unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    drop(idle_b);
    assert_eq!(receiver.seen().len(), 2, "{}", weft.stderr());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_stops_reading_loses_its_connection() {
    let port = free_port();
    let weft = Weft::start(&format!(
        r#"flows:
  echo:
    input:
      http_server:
        address: "127.0.0.1:{port}"
        response: pipeline
        max_body_size: 16MiB
        limits: {{ max_connections: 1, write_timeout: 1s, header_timeout: 2s }}
    output: {{ drop: {{}} }}
"#
    ))
    .await;
    // A request whose 8 MB answer (the echoed message) the client never reads, on a socket
    // with a small receive buffer: it holds the only connection place until the write stalls
    // for `write_timeout`.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let mut stalled = socket.connect(([127, 0, 0, 1], port).into()).await.unwrap();
    let body = format!(r#"{{"s": "{}"}}"#, "a".repeat(8 << 20));
    let head = format!(
        "POST / HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
        body.len()
    );
    stalled.write_all(head.as_bytes()).await.unwrap();
    stalled.write_all(body.as_bytes()).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;

    let started = std::time::Instant::now();
    let small = "POST / HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: 2\r\nconnection: close\r\n\r\n{}";
    let answer = raw(port, small.as_bytes(), Duration::from_secs(10)).await;
    assert!(
        answer.starts_with("HTTP/1.1 200"),
        "{answer} {}",
        weft.stderr()
    );
    assert!(
        started.elapsed() < Duration::from_secs(6),
        "the stalled client held its place for {:?}",
        started.elapsed()
    );
    drop(stalled);
}
