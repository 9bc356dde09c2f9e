//! Client TLS options against real TLS servers made in the test: a private CA (`ca_file`),
//! mutual TLS (`cert_file` / `key_file`), the lowest TLS version (`min_tls`), an HTTP proxy,
//! and HTTP/2 when the server offers it.

use std::convert::Infallible;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use bytes::Bytes;
use http_body_util::Full;
use hyper_util::rt::TokioIo;
use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

use crate::support::*;

pub(crate) struct Pki {
    ca: CertificateDer<'static>,
    server: (CertificateDer<'static>, PrivateKeyDer<'static>),
}

/// A CA, a server certificate for 127.0.0.1 and a client certificate, written as PEM files
/// into `dir`: `ca.pem`, `server.pem` and `server.key`, `client.pem` and `client.key`.
pub(crate) fn pki(dir: &Path) -> Pki {
    let ca_key = KeyPair::generate().unwrap();
    // Each with a name of its own: OpenSSL (Redis, Mosquitto) takes a certificate whose
    // subject is its issuer's for a self-signed one.
    let named = |mut params: CertificateParams, name: &str| {
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name);
        params
    };
    let mut ca_params = named(
        CertificateParams::new(Vec::<String>::new()).unwrap(),
        "weft test CA",
    );
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = ca_params.self_signed(&ca_key).unwrap();
    std::fs::write(dir.join("ca.pem"), ca.pem()).unwrap();
    let issuer = Issuer::new(ca_params, ca_key);
    let server_key = KeyPair::generate().unwrap();
    let server = named(
        CertificateParams::new(vec!["127.0.0.1".to_string()]).unwrap(),
        "127.0.0.1",
    )
    .signed_by(&server_key, &issuer)
    .unwrap();
    let client_key = KeyPair::generate().unwrap();
    let client = named(
        CertificateParams::new(vec!["weft".to_string()]).unwrap(),
        "weft",
    )
    .signed_by(&client_key, &issuer)
    .unwrap();
    std::fs::write(dir.join("client.pem"), client.pem()).unwrap();
    std::fs::write(dir.join("client.key"), client_key.serialize_pem()).unwrap();
    std::fs::write(dir.join("server.pem"), server.pem()).unwrap();
    std::fs::write(dir.join("server.key"), server_key.serialize_pem()).unwrap();
    Pki {
        ca: ca.der().clone(),
        server: (
            server.der().clone(),
            PrivatePkcs8KeyDer::from(server_key.serialize_der()).into(),
        ),
    }
}

/// A TLS server answering 200 to everything; returns its port and a request counter. The
/// TLS 1.3 one offers HTTP/2 (ALPN) and counts HTTP/2 requests in the second counter.
async fn tls_server(
    pki: &Pki,
    require_client_cert: bool,
    tls13: bool,
) -> (u16, Arc<AtomicU32>, Arc<AtomicU32>) {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let versions: &[&'static rustls::SupportedProtocolVersion] = if tls13 {
        &[&rustls::version::TLS13, &rustls::version::TLS12]
    } else {
        &[&rustls::version::TLS12]
    };
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(versions)
        .unwrap();
    let builder = if require_client_cert {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(pki.ca.clone()).unwrap();
        let verifier =
            rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .unwrap();
        builder.with_client_cert_verifier(verifier)
    } else {
        builder.with_no_client_auth()
    };
    let mut config = builder
        .with_single_cert(vec![pki.server.0.clone()], pki.server.1.clone_key())
        .unwrap();
    if tls13 {
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    }
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let served = Arc::new(AtomicU32::new(0));
    let h2 = Arc::new(AtomicU32::new(0));
    let count = served.clone();
    let count_h2 = h2.clone();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let acceptor = acceptor.clone();
            let count = count.clone();
            let count_h2 = count_h2.clone();
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(stream).await else {
                    return;
                };
                let offered_h2 = tls.get_ref().1.alpn_protocol() == Some(b"h2");
                let service = hyper::service::service_fn(move |request: hyper::Request<_>| {
                    count.fetch_add(1, Ordering::SeqCst);
                    if request.version() == http::Version::HTTP_2 {
                        count_h2.fetch_add(1, Ordering::SeqCst);
                    }
                    async {
                        Ok::<_, Infallible>(hyper::Response::new(Full::new(Bytes::from("ok"))))
                    }
                });
                if offered_h2 {
                    let _ = hyper::server::conn::http2::Builder::new(
                        hyper_util::rt::TokioExecutor::new(),
                    )
                    .serve_connection(TokioIo::new(tls), service)
                    .await;
                } else {
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(tls), service)
                        .await;
                }
            });
        }
    });
    (port, served, h2)
}

fn flow(port: u16, target: u16, client: &str) -> String {
    format!(
        r#"
flows:
  secure:
    input:
      http_server: {{ address: "127.0.0.1:{port}", errors: detailed }}
    output:
      http_client:
        url: "https://127.0.0.1:{target}/in"
        retry: {{ max_attempts: 1 }}
        client: {client}
"#
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_private_ca_and_mutual_tls_and_the_lowest_version_are_honoured() {
    let dir = scratch();
    let pki = pki(&dir);
    let (mtls, served, served_h2) = tls_server(&pki, true, true).await;
    let (tls12_only, served12, _) = tls_server(&pki, false, false).await;
    let ca = dir.join("ca.pem").display().to_string();
    let cert = dir.join("client.pem").display().to_string();
    let key = dir.join("client.key").display().to_string();

    let cases = [
        // (target, client settings, delivered?, what the failure says)
        (
            mtls,
            format!("{{ ca_file: \"{ca}\", cert_file: \"{cert}\", key_file: \"{key}\" }}"),
            true,
            "",
        ),
        (mtls, format!("{{ ca_file: \"{ca}\" }}"), false, ""),
        (
            tls12_only,
            "{ connect_timeout: 2s }".to_string(),
            false,
            "UnknownIssuer",
        ),
        (tls12_only, format!("{{ ca_file: \"{ca}\" }}"), true, ""),
        (
            tls12_only,
            format!("{{ ca_file: \"{ca}\", min_tls: \"1.3\" }}"),
            false,
            "",
        ),
    ];
    for (target, client, delivered, says) in cases {
        let port = free_port();
        let weft = Weft::start(&flow(port, target, &client)).await;
        let (status, _, body) = post_json(&format!("http://127.0.0.1:{port}/"), "{}").await;
        assert_eq!(
            status == 200,
            delivered,
            "{client}: {status} {body} {}",
            weft.stderr()
        );
        assert!(body.contains(says), "{client}: {body}");
    }
    assert_eq!(
        served.load(Ordering::SeqCst),
        1,
        "only the client with a certificate got in"
    );
    assert_eq!(
        served_h2.load(Ordering::SeqCst),
        1,
        "HTTP/2, since the server offered it"
    );
    assert_eq!(
        served12.load(Ordering::SeqCst),
        1,
        "only TLS 1.2 with the CA got in"
    );

    // Bad settings are config errors, with the field.
    let file = dir.join("bad.yaml");
    std::fs::write(
        &file,
        flow(1, 2, "{ ca_file: /nonexistent/ca.pem, min_tls: \"1.1\" }"),
    )
    .unwrap();
    let (status, _, stderr) = weft_cmd(&["check", "bad.yaml"], &dir);
    assert!(!status.success());
    assert!(stderr.contains("field `client.min_tls`"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_tunnel_through_an_http_proxy_with_its_credentials() {
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
    // A CONNECT proxy that records what it was asked.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let proxy = listener.local_addr().unwrap();
    let asked: Arc<std::sync::Mutex<Vec<String>>> = Arc::default();
    let log = asked.clone();
    tokio::spawn(async move {
        loop {
            let Ok((client, _)) = listener.accept().await else {
                continue;
            };
            let log = log.clone();
            tokio::spawn(async move {
                let mut client = BufReader::new(client);
                let mut head = String::new();
                loop {
                    let mut line = String::new();
                    if client.read_line(&mut line).await.unwrap_or(0) == 0 {
                        return;
                    }
                    if line == "\r\n" {
                        break;
                    }
                    head.push_str(&line);
                }
                log.lock().unwrap().push(head.clone());
                let target = head.split_whitespace().nth(1).unwrap_or("").to_string();
                let Ok(mut upstream) = tokio::net::TcpStream::connect(&target).await else {
                    return;
                };
                let mut client = client.into_inner();
                client
                    .write_all(b"HTTP/1.1 200 Connection established\r\n\r\n")
                    .await
                    .unwrap();
                let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
            });
        }
    });
    let receiver = Receiver::start().await;
    let port = free_port();
    let config = format!(
        r#"
flows:
  proxied:
    input:
      http_server: {{ address: "127.0.0.1:{port}", errors: detailed }}
    output:
      http_client:
        url: "{url}"
        client: {{ proxy: "http://weft:p%40ss+1@{proxy}" }}
"#,
        url = receiver.url("/in")
    );
    let weft = Weft::start(&config).await;
    let (status, _, body) = post_json(&format!("http://127.0.0.1:{port}/"), "{}").await;
    assert_eq!(status, 200, "{body} {}", weft.stderr());
    assert_eq!(receiver.seen().len(), 1);
    let asked = asked.lock().unwrap().clone();
    assert_eq!(asked.len(), 1, "{asked:?}");
    assert!(
        asked[0].starts_with(&format!("CONNECT {} HTTP/1.1", receiver.address)),
        "{asked:?}"
    );
    // base64("weft:p@ss+1")
    assert!(
        asked[0].contains("Proxy-Authorization: Basic d2VmdDpwQHNzKzE="),
        "{asked:?}"
    );
    assert!(!weft.stderr().contains("p@ss"));
}
