//! The outbound guard: URLs built from message data cannot reach denied addresses, however the
//! host is spelt (a name is checked on the addresses it resolves to), and the cloud metadata
//! address is denied by default. A refused destination fails at once, without retries.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use axum::Router;
use http::Method;

use crate::support::*;

/// A server on 127.0.0.2 (loopback, but not the address the guard denies), counting hits.
async fn other_loopback() -> (u16, Arc<AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.2:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let hits = Arc::new(AtomicUsize::new(0));
    let count = hits.clone();
    let app = Router::new().fallback(move || {
        count.fetch_add(1, Ordering::SeqCst);
        async { "ok" }
    });
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (port, hits)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn message_built_urls_cannot_reach_denied_or_metadata_addresses() {
    let receiver = Receiver::start().await;
    let (allowed_port, allowed_hits) = other_loopback().await;
    let port = free_port();
    let weft = Weft::start(&format!(
        r#"outbound:
  deny: ["127.0.0.1", "::1"]
flows:
  callbacks:
    input:
      http_server: {{ address: "127.0.0.1:{port}", errors: detailed }}
    output:
      http_client:
        url: "{{{{ .url }}}}"
        retry: {{ max_attempts: 5, initial_backoff: 5s }}
"#
    ))
    .await;
    let send = |url: String| async move {
        let started = std::time::Instant::now();
        let (status, _, text) = post_json(
            &format!("http://127.0.0.1:{port}/"),
            &format!(r#"{{"url": "{url}"}}"#),
        )
        .await;
        (status.as_u16(), text, started.elapsed())
    };

    let (status, text, _) = send(format!("http://127.0.0.2:{allowed_port}/hook")).await;
    assert_eq!(status, 200, "{text} {}", weft.stderr());
    assert_eq!(allowed_hits.load(Ordering::SeqCst), 1);

    // Denied as a literal address, as a name that resolves to it, and the metadata service
    // (not listed, denied by default). Each fails at once: no retry can help.
    let denied_port = receiver.address.port();
    for url in [
        format!("http://127.0.0.1:{denied_port}/admin"),
        format!("http://localhost:{denied_port}/admin"),
        format!("http://[::ffff:127.0.0.1]:{denied_port}/admin"),
        "http://169.254.169.254/latest/meta-data/".to_string(),
    ] {
        let (status, text, took) = send(url.clone()).await;
        assert!(status >= 400, "{url}: {status} {text}");
        assert!(text.contains("outbound guard refused"), "{url}: {text}");
        assert!(
            took < std::time::Duration::from_secs(3),
            "{url} was retried: {took:?}"
        );
    }
    assert!(receiver.seen().is_empty(), "a denied address was reached");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_built_url_never_reaches_the_admin_endpoint_in_any_spelling() {
    let port = free_port();
    // No outbound rules at all: the admin endpoint is denied anyway.
    let weft = Weft::start(&format!(
        r#"flows:
  callbacks:
    input:
      http_server: {{ address: "127.0.0.1:{port}", errors: detailed }}
    output:
      http_client: {{ url: "{{{{ .url }}}}", retry: {{ max_attempts: 1 }} }}
"#
    ))
    .await;
    let admin = weft.admin.port();
    let pause = "/api/v1/flows/callbacks/pause";
    for host in [
        "127.0.0.1".to_string(),
        "localhost".to_string(),
        "127.1".to_string(),
        "0x7f000001".to_string(),
        "2130706433".to_string(),
        "0177.0.0.1".to_string(),
        "[::ffff:127.0.0.1]".to_string(),
        "LOCALHOST.".to_string(),
    ] {
        let url = format!("http://{host}:{admin}{pause}");
        let (status, _, text) = post_json(
            &format!("http://127.0.0.1:{port}/"),
            &format!(r#"{{"url": "{url}"}}"#),
        )
        .await;
        assert_eq!(status, 502, "{url}: {text}");
        assert!(text.contains("own admin endpoint"), "{url}: {text}");
    }
    let (_, flow) = weft
        .admin_json(Method::GET, "/api/v1/flows/callbacks")
        .await;
    assert_eq!(flow["state"], "running", "{flow}");
}
