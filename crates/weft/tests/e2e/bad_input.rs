//! Hostile and broken requests against a running weft: malformed and truncated JSON and XML,
//! an XML entity bomb, 10,000-deep nesting, invalid UTF-8, a 100 MB body (declared and
//! streamed), wrong, missing and replayed signatures, an expired JWT and one "signed" with
//! `none`. Each gets a clear 4xx, weft stays up, and every request it accepted is delivered.

use std::time::Duration;

use base64::Engine;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::support::*;

/// Sends one request as raw bytes (so bodies need not be UTF-8) and returns the status and
/// the whole answer.
async fn send(port: u16, path: &str, headers: &[(&str, &str)], body: &[u8]) -> (u16, String) {
    let (status, answer) = send_bytes(port, path, headers, body).await;
    (status, String::from_utf8_lossy(&answer).into_owned())
}

/// [`send`], with the answer as bytes.
async fn send_bytes(
    port: u16,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> (u16, Vec<u8>) {
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    let mut head = format!(
        "POST {path} HTTP/1.1\r\nhost: weft\r\nconnection: close\r\ncontent-length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes()).await.unwrap();
    stream.write_all(body).await.unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut answer))
        .await
        .expect("weft answered within 10 s")
        .unwrap();
    let status = String::from_utf8_lossy(answer.get(9..12).unwrap_or_default())
        .parse()
        .unwrap_or_else(|_| panic!("not an HTTP answer: {:?}", String::from_utf8_lossy(&answer)));
    (status, answer)
}

/// Streams `total` bytes at weft (declared up front, or chunked) while reading its answer, as a
/// client that does not stop when refused would.
async fn flood(port: u16, total: usize, declared: bool) -> String {
    let stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    let (mut read, mut write) = stream.into_split();
    let reader = tokio::spawn(async move {
        let mut answer = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(20), read.read_to_end(&mut answer)).await;
        String::from_utf8_lossy(&answer).into_owned()
    });
    let framing = if declared {
        format!("content-length: {total}")
    } else {
        "transfer-encoding: chunked".to_string()
    };
    let head = format!(
        "POST /json HTTP/1.1\r\nhost: weft\r\ncontent-type: application/json\r\n{framing}\r\n\r\n"
    );
    let chunk = vec![b' '; 64 * 1024];
    let mut sent = 0;
    if write.write_all(head.as_bytes()).await.is_ok() {
        while sent < total {
            let piece = if declared {
                write.write_all(&chunk).await
            } else {
                let framed =
                    [format!("{:x}\r\n", chunk.len()).as_bytes(), &chunk, b"\r\n"].concat();
                write.write_all(&framed).await
            };
            if piece.is_err() {
                break;
            }
            sent += chunk.len();
        }
    }
    drop(write);
    let answer = reader.await.unwrap();
    assert!(
        sent < total,
        "weft read all {total} bytes instead of refusing early"
    );
    answer
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_requests_get_4xx_and_weft_keeps_every_accepted_message() {
    let receiver = Receiver::start().await;
    let port = free_port();
    let secret = "a-webhook-secret-for-the-bad-input-suite";
    let mut weft = Weft::start(&format!(
        r#"flows:
  any:
    input: {{ http_server: {{ address: "127.0.0.1:{port}", path: /json }} }}
    output: {{ http_client: {{ url: "{out}" }} }}
  signed:
    input:
      http_server: {{ address: "127.0.0.1:{port}", path: /signed, auth: {{ hmac: {{ preset: github, secret: "{secret}" }} }} }}
    output: {{ http_client: {{ url: "{out}" }} }}
  bearer:
    input:
      http_server: {{ address: "127.0.0.1:{port}", path: /bearer, auth: {{ jwt: {{ secret: "{secret}" }} }} }}
    output: {{ http_client: {{ url: "{out}" }} }}
"#,
        out = receiver.url("/in")
    ))
    .await;
    let json = [("content-type", "application/json")];
    let xml = [("content-type", "application/xml")];
    let mut accepted = 0;

    let deep_json = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
    let deep_xml = format!("{}{}", "<a>".repeat(10_000), "</a>".repeat(10_000));
    let bomb = r#"<?xml version="1.0"?>
<!DOCTYPE lolz [
 <!ENTITY lol "lol">
 <!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
 <!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">
 <!ENTITY lol4 "&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;">
 <!ENTITY lol9 "&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;">
]>
<lolz>&lol9;</lolz>"#;
    // What is sent, its headers, the body, and a word the answer must give as the reason.
    type Case<'a> = (&'a str, &'a [(&'a str, &'a str)], Vec<u8>, &'a str);
    let bad: Vec<Case> = vec![
        ("malformed JSON", &json, b"{\"a\": 1,, }".to_vec(), "JSON"),
        ("truncated JSON", &json, b"{\"a\": [1, 2".to_vec(), "JSON"),
        (
            "10,000-deep JSON",
            &json,
            deep_json.into_bytes(),
            "recursion",
        ),
        (
            "invalid UTF-8 in JSON",
            &json,
            b"{\"a\": \"\xff\xfe\"}".to_vec(),
            "unicode",
        ),
        ("malformed XML", &xml, b"<a><b></a>".to_vec(), "XML"),
        ("truncated XML", &xml, b"<a><b>text</b>".to_vec(), "XML"),
        ("XML entity bomb", &xml, bomb.as_bytes().to_vec(), "DTD"),
        ("10,000-deep XML", &xml, deep_xml.into_bytes(), "deeper"),
        (
            "invalid UTF-8 in XML",
            &xml,
            b"<a>\xff</a>".to_vec(),
            "utf-8",
        ),
    ];
    for (what, headers, body, needle) in &bad {
        let (status, answer) = send(port, "/json", headers, body).await;
        assert_eq!(status, 400, "{what}: {answer}");
        assert!(
            answer.to_lowercase().contains(&needle.to_lowercase()),
            "{what}: the answer does not say why: {answer}"
        );
    }

    // 100 MB against the 1 MiB default: refused from the declared length without reading, or
    // after 1 MiB when the body is streamed without one.
    for declared in [true, false] {
        let answer = flood(port, 100 << 20, declared).await;
        assert!(
            answer.starts_with("HTTP/1.1 413"),
            "100 MB (declared: {declared}): {answer:?}"
        );
    }

    // Signatures: missing, wrong, then a good one, then the same again (a replay, answered
    // as the first was, and not delivered).
    let body = br#"{"event": "push"}"#;
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret.as_bytes());
    let good = format!("sha256={}", hex(ring::hmac::sign(&key, body).as_ref()));
    let wrong = format!("sha256={}", hex(&[0u8; 32]));
    let signed = |sig: &str| {
        [
            ("content-type", "application/json"),
            ("x-hub-signature-256", sig),
        ]
        .map(|(k, v)| (k, v.to_string()))
    };
    for (what, sig, status, needle) in [
        ("missing signature", None, 401, "missing signature"),
        ("wrong signature", Some(&wrong), 401, "invalid signature"),
        ("signed", Some(&good), 200, "id"),
        (
            "replayed signature",
            Some(&good),
            200,
            "idempotent-replayed: true",
        ),
    ] {
        let headers = match sig {
            Some(sig) => signed(sig).to_vec(),
            None => vec![("content-type", "application/json".to_string())],
        };
        let headers: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let (got, answer) = send(port, "/signed", &headers, body).await;
        assert_eq!(got, status, "{what}: {answer}");
        assert!(answer.to_lowercase().contains(needle), "{what}: {answer}");
        if got == 200 && !answer.to_lowercase().contains("idempotent-replayed") {
            accepted += 1;
        }
    }

    // JWTs: expired, and one claiming `alg: none` with no signature; then a good one.
    let b64 = |b: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let hs256 = |exp: u64| {
        let signed = format!(
            "{}.{}",
            b64(br#"{"alg":"HS256","typ":"JWT"}"#),
            b64(format!(r#"{{"sub":"x","exp":{exp}}}"#).as_bytes())
        );
        format!(
            "{signed}.{}",
            b64(ring::hmac::sign(&key, signed.as_bytes()).as_ref())
        )
    };
    let none = format!(
        "{}.{}.",
        b64(br#"{"alg":"none","typ":"JWT"}"#),
        b64(format!(r#"{{"sub":"x","exp":{}}}"#, now + 600).as_bytes())
    );
    for (what, token, status, needle) in [
        ("expired JWT", hs256(now - 3600), 401, "expired"),
        ("alg none JWT", none, 401, "algorithm"),
        ("good JWT", hs256(now + 600), 200, "id"),
    ] {
        let bearer = format!("Bearer {token}");
        let headers = [
            ("content-type", "application/json"),
            ("authorization", bearer.as_str()),
        ];
        let (got, answer) = send(port, "/bearer", &headers, b"{}").await;
        assert_eq!(got, status, "{what}: {answer}");
        assert!(answer.contains(needle), "{what}: {answer}");
        if got == 200 {
            accepted += 1;
        }
    }

    // Still up, still serving, and every accepted request was delivered (and nothing else).
    assert!(weft.child.try_wait().unwrap().is_none(), "weft died");
    let (status, answer) = send(port, "/json", &json, br#"{"still": "here"}"#).await;
    assert_eq!(status, 200, "{answer}");
    accepted += 1;
    assert_eq!(receiver.seen().len(), accepted, "{}", weft.stderr());
    weft.kill();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http_1_1_request_without_one_valid_host_is_refused_400() {
    let port = free_port();
    let weft = Weft::start(&format!(
        r#"flows:
  hooks:
    input:
      http_server: {{ address: "127.0.0.1:{port}" }}
    output:
      drop: {{}}
"#
    ))
    .await;
    let ask = |head: &'static str| async move {
        let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .unwrap();
        let request = format!("{head}connection: close\r\ncontent-length: 2\r\n\r\n{{}}");
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut answer = Vec::new();
        tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut answer))
            .await
            .expect("answered")
            .unwrap();
        String::from_utf8_lossy(&answer).into_owned()
    };
    for head in [
        "POST / HTTP/1.1\r\n",
        "POST / HTTP/1.1\r\nhost: a.example\r\nhost: b.example\r\n",
        "POST / HTTP/1.1\r\nhost: a b\r\n",
        "POST / HTTP/1.1\r\nhost: user@a.example\r\n",
    ] {
        let answer = ask(head).await;
        assert!(answer.starts_with("HTTP/1.1 400"), "{head:?}: {answer}");
        assert!(answer.contains("urn:weft:problem:invalid-host"), "{answer}");
    }
    for head in [
        "POST / HTTP/1.1\r\nhost: 127.0.0.1:1\r\n",
        "POST / HTTP/1.0\r\n",
    ] {
        let answer = ask(head).await;
        assert!(
            answer.starts_with("HTTP/1.1 200") || answer.starts_with("HTTP/1.0 200"),
            "{head:?}: {answer} {}",
            weft.stderr()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compressed_bodies_are_unpacked_within_the_body_limit_and_bytes_stay_bytes() {
    use std::io::Write;
    let receiver = Receiver::start().await;
    let (port, echo) = (free_port(), free_port());
    let weft = Weft::start(&format!(
        r#"flows:
  hooks:
    input:
      http_server: {{ address: "127.0.0.1:{port}", max_body_size: 64KiB }}
    output:
      http_client: {{ url: "{out}" }}
  echo:
    input:
      http_server: {{ address: "127.0.0.1:{echo}", response: pipeline }}
    output:
      drop: {{}}
"#,
        out = receiver.url("/in")
    ))
    .await;
    let gzip = |data: &[u8]| {
        let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        encoder.write_all(data).unwrap();
        encoder.finish().unwrap()
    };
    let json = br#"{"order": 7}"#;
    let packed = gzip(json);
    let (status, answer) = send(
        port,
        "/",
        &[
            ("content-type", "application/json"),
            ("content-encoding", "gzip"),
        ],
        &packed,
    )
    .await;
    assert_eq!(status, 200, "{answer} {}", weft.stderr());
    assert_eq!(receiver.seen()[0].json(), serde_json::json!({"order": 7}));

    // 16 MB of spaces (valid JSON padding) in about 16 KB, under the limit as sent: refused
    // at the 64 KiB limit of what it unpacks to.
    let bomb = gzip(&vec![b' '; 16 << 20]);
    assert!(bomb.len() < 64 * 1024, "{}", bomb.len());
    let (status, answer) = send(port, "/", &[("content-encoding", "gzip")], &bomb).await;
    assert_eq!(status, 413, "{answer}");
    let (status, answer) = send(port, "/", &[("content-encoding", "zstd")], json).await;
    assert_eq!(status, 415, "{answer}");
    assert!(
        answer
            .to_ascii_lowercase()
            .contains("accept-encoding: gzip, deflate, br"),
        "{answer}"
    );
    let (status, answer) = send(port, "/", &[("content-encoding", "gzip")], json).await;
    assert_eq!(status, 400, "not gzip at all: {answer}");
    assert_eq!(receiver.seen().len(), 1, "nothing refused was delivered");

    // Binary bodies are bytes, not text: echoed back exactly.
    let binary = [0xff, 0x00, 0x80, b'a', 0xc3];
    let (status, answer) = send_bytes(
        echo,
        "/",
        &[("content-type", "application/octet-stream")],
        &binary,
    )
    .await;
    assert_eq!(status, 200);
    assert!(answer.ends_with(&binary), "{answer:?}");
    assert!(
        String::from_utf8_lossy(&answer).contains("content-type: application/octet-stream"),
        "{}",
        String::from_utf8_lossy(&answer)
    );
}
