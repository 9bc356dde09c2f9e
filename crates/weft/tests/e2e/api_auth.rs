//! Calling other people's APIs: auth profiles (basic, bearer, API key, OAuth 2.0 with a cached,
//! renewed token), shared rate limits and circuit breakers, against real local servers.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::response::{IntoResponse, Response};
use http::{Request, StatusCode};
use http_body_util::BodyExt;

use crate::support::*;

/// An authorization server and an API that accepts only its current token.
#[derive(Clone, Default)]
pub struct OAuthServer {
    /// Token requests received, refused ones included.
    pub issued: Arc<AtomicU32>,
    current: Arc<Mutex<Option<String>>>,
    /// Statuses the API answered, in order.
    answers: Arc<Mutex<Vec<u16>>>,
    /// What the token endpoint granted (form bodies).
    pub grants: Arc<Mutex<Vec<String>>>,
    /// The API refuses every token.
    reject_all: Arc<std::sync::atomic::AtomicBool>,
}

impl OAuthServer {
    pub async fn start(lifetime_secs: u64) -> (OAuthServer, String) {
        let server = OAuthServer::default();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let s = server.clone();
        let app = Router::new().fallback(move |request: Request<Body>| {
            let s = s.clone();
            async move { s.handle(request, lifetime_secs).await }
        });
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        (server, base)
    }

    async fn handle(&self, request: Request<Body>, lifetime: u64) -> Response {
        let (parts, body) = request.into_parts();
        let body = String::from_utf8_lossy(&body.collect().await.unwrap().to_bytes()).into_owned();
        let authorization = parts
            .headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string();
        if parts.uri.path() == "/token" {
            let form: std::collections::HashMap<String, String> =
                form_urlencoded::parse(body.as_bytes())
                    .into_owned()
                    .collect();
            // client_secret_basic: base64("weft-client:s3cr%2Fet") for the secret `s3cr/et`;
            // or client_secret_post, in the form.
            let basic = authorization == "Basic d2VmdC1jbGllbnQ6czNjciUyRmV0";
            let post = form.get("client_id").map(String::as_str) == Some("weft-client")
                && form.get("client_secret").map(String::as_str) == Some("s3cr/et");
            if !basic && !post {
                // Some servers echo what they were sent; weft must not pass it on.
                let echo = r#"{"error":"invalid_client","echo":"s3cr/et"}"#;
                return (StatusCode::UNAUTHORIZED, echo).into_response();
            }
            let n = self.issued.fetch_add(1, Ordering::SeqCst) + 1;
            let mut extra = String::new();
            if form.get("grant_type").map(String::as_str) == Some("refresh_token") {
                // Rotation: each refresh token works once and is replaced.
                let expected = format!("rt-{}", n - 1);
                if form.get("refresh_token") != Some(&expected) {
                    return (StatusCode::BAD_REQUEST, r#"{"error":"invalid_grant"}"#)
                        .into_response();
                }
                extra = format!(r#","refresh_token":"rt-{n}""#);
            }
            self.grants.lock().unwrap().push(body);
            let token = format!("token-{n}");
            *self.current.lock().unwrap() = Some(token.clone());
            return (
                [("content-type", "application/json")],
                format!(
                    r#"{{"access_token":"{token}","token_type":"Bearer","expires_in":{lifetime}{extra}}}"#
                ),
            )
                .into_response();
        }
        let current = self.current.lock().unwrap().clone();
        // `/amz` wants the bare token in a header of its own, as Amazon's SP-API does.
        let presented = if parts.uri.path() == "/amz" {
            let own = parts.headers.get("x-amz-access-token");
            (authorization.is_empty())
                .then(|| own.and_then(|v| v.to_str().ok()).map(str::to_string))
                .flatten()
        } else {
            authorization.strip_prefix("Bearer ").map(str::to_string)
        };
        let ok = current.is_some_and(|t| presented == Some(t))
            && !self.reject_all.load(Ordering::SeqCst);
        let status = if ok { 200 } else { 401 };
        self.answers.lock().unwrap().push(status);
        StatusCode::from_u16(status).unwrap().into_response()
    }

    /// The server forgets the token it issued (revoked, or rotated on its side).
    fn revoke(&self) {
        *self.current.lock().unwrap() = None;
    }
}

fn oauth_flow(port: u16, base: &str, secret: &str) -> String {
    format!(
        r#"
resources:
  auth:
    crm:
      oauth2:
        token_url: "{base}/token"
        client_id: weft-client
        client_secret: "{secret}"
        scopes: [contacts.read, contacts.write]
flows:
  sync:
    input:
      http_server: {{ address: "127.0.0.1:{port}", errors: detailed }}
    output:
      http_client:
        url: "{base}/api"
        auth: crm
        retry: {{ max_attempts: 1 }}
"#
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oauth2_tokens_are_cached_renewed_before_expiry_and_once_after_a_401() {
    let (server, base) = OAuthServer::start(2).await;
    let port = free_port();
    let weft = Weft::start_with(
        &oauth_flow(port, &base, "${CRM_SECRET}"),
        &[("CRM_SECRET", "s3cr/et")],
        std::process::Stdio::null(),
    )
    .await;
    let url = format!("http://127.0.0.1:{port}/");
    for _ in 0..3 {
        assert_eq!(post_json(&url, "{}").await.0, 200, "{}", weft.stderr());
    }
    assert_eq!(
        server.issued.load(Ordering::SeqCst),
        1,
        "one token for three calls"
    );
    let grant = server.grants.lock().unwrap()[0].clone();
    assert!(grant.contains("grant_type=client_credentials"), "{grant}");
    assert!(
        grant.contains("scope=contacts.read+contacts.write"),
        "{grant}"
    );

    // Refused with 401: one renewal, the same request once more, delivered.
    server.revoke();
    assert_eq!(post_json(&url, "{}").await.0, 200);
    assert_eq!(server.issued.load(Ordering::SeqCst), 2);
    assert_eq!(*server.answers.lock().unwrap(), [200, 200, 200, 401, 200]);

    // A token is renewed before it expires: no request is sent with a stale one.
    tokio::time::sleep(Duration::from_millis(2_100)).await;
    assert_eq!(post_json(&url, "{}").await.0, 200);
    assert_eq!(server.issued.load(Ordering::SeqCst), 3);
    assert_eq!(server.answers.lock().unwrap().len(), 6);

    // A 401 that a fresh token does not cure fails the message: one renewal, no loop.
    server.reject_all.store(true, Ordering::SeqCst);
    let (status, _, body) = post_json(&url, "{}").await;
    assert_eq!(status, 502, "{body}");
    assert!(body.contains("401"), "{body}");
    assert_eq!(server.issued.load(Ordering::SeqCst), 4);
    assert_eq!(server.answers.lock().unwrap().len(), 8);
    assert!(!weft.stderr().contains("s3cr/et"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_refresh_token_grant_follows_rotation_with_the_client_in_the_body_and_the_token_in_a_header_of_its_own()
 {
    let (server, base) = OAuthServer::start(60).await;
    let port = free_port();
    let config = format!(
        r#"
resources:
  auth:
    crm:
      oauth2:
        token_url: "{base}/token"
        client_id: weft-client
        client_secret: "s3cr/et"
        client_auth: body
        refresh_token: rt-0
        header: x-amz-access-token
flows:
  sync:
    input:
      http_server: {{ address: "127.0.0.1:{port}", errors: detailed }}
    output:
      http_client: {{ url: "{base}/amz", auth: crm, retry: {{ max_attempts: 1 }} }}
"#
    );
    let weft = Weft::start(&config).await;
    let url = format!("http://127.0.0.1:{port}/");
    assert_eq!(post_json(&url, "{}").await.0, 200, "{}", weft.stderr());
    // Revoked: the renewal must use the rotated refresh token (rt-1), not the configured one.
    server.revoke();
    assert_eq!(post_json(&url, "{}").await.0, 200, "{}", weft.stderr());
    let grants = server.grants.lock().unwrap().clone();
    assert_eq!(grants.len(), 2);
    assert!(
        grants[0].contains("grant_type=refresh_token&refresh_token=rt-0"),
        "{grants:?}"
    );
    assert!(grants[1].contains("refresh_token=rt-1"), "{grants:?}");
    assert!(grants[1].contains("client_id=weft-client"), "{grants:?}");
    // Both deliveries presented the token bare in its header (`/amz` refuses it elsewhere),
    // the second after a 401 and a renewal.
    assert_eq!(*server.answers.lock().unwrap(), [200, 401, 200]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_and_rotated_refresh_tokens_survive_a_restart_in_the_store() {
    let (server, base) = OAuthServer::start(3600).await;
    let port = free_port();
    let config = format!(
        r#"
resources:
  auth:
    crm:
      oauth2:
        token_url: "{base}/token"
        client_id: weft-client
        client_secret: "s3cr/et"
        refresh_token: rt-0
flows:
  sync:
    input:
      http_server: {{ address: "127.0.0.1:{port}", errors: detailed }}
    output:
      http_client: {{ url: "{base}/api", auth: crm, retry: {{ max_attempts: 1 }} }}
"#
    );
    let dir = scratch();
    let url = format!("http://127.0.0.1:{port}/");
    let mut weft = Weft::start_in(dir.clone(), &config, &[], std::process::Stdio::null()).await;
    assert_eq!(post_json(&url, "{}").await.0, 200, "{}", weft.stderr());
    weft.terminate();
    weft.wait(std::time::Duration::from_secs(10)).await;

    // Restarted: the saved token is still good, so no fetch at all.
    let mut weft = Weft::start_in(dir.clone(), &config, &[], std::process::Stdio::null()).await;
    assert_eq!(post_json(&url, "{}").await.0, 200, "{}", weft.stderr());
    assert_eq!(server.grants.lock().unwrap().len(), 1);
    // Revoked: the renewal uses rt-1, the refresh token the first run was given (rt-0 is spent).
    server.revoke();
    assert_eq!(post_json(&url, "{}").await.0, 200, "{}", weft.stderr());
    weft.terminate();
    weft.wait(std::time::Duration::from_secs(10)).await;
    let grants = server.grants.lock().unwrap().clone();
    assert_eq!(grants.len(), 2, "{grants:?}");
    assert!(grants[1].contains("refresh_token=rt-1"), "{grants:?}");

    // Once more after a restart, from rt-2; and a token in the store is not in any log.
    server.revoke();
    let weft = Weft::start_in(dir.clone(), &config, &[], std::process::Stdio::null()).await;
    assert_eq!(post_json(&url, "{}").await.0, 200, "{}", weft.stderr());
    let grants = server.grants.lock().unwrap().clone();
    assert!(grants[2].contains("refresh_token=rt-2"), "{grants:?}");
    assert!(!weft.stderr().contains("token-"), "{}", weft.stderr());

    // A new refresh token in the config (the user authorized again) wins over the saved one.
    drop(weft);
    server.revoke();
    let reauthorized = config.replace("refresh_token: rt-0", "refresh_token: rt-3");
    let weft = Weft::start_in(dir, &reauthorized, &[], std::process::Stdio::null()).await;
    assert_eq!(post_json(&url, "{}").await.0, 200, "{}", weft.stderr());
    let grants = server.grants.lock().unwrap().clone();
    assert!(grants[3].contains("refresh_token=rt-3"), "{grants:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_client_credentials_fail_clearly_without_showing_the_secret() {
    let (server, base) = OAuthServer::start(60).await;
    let port = free_port();
    let secret = "wr0ng-but-secret-value";
    let weft = Weft::start(&oauth_flow(port, &base, secret)).await;
    let (status, _, body) = post_json(&format!("http://127.0.0.1:{port}/"), "{}").await;
    assert_eq!(status, 502, "{body}");
    assert!(body.contains("auth `crm`: token endpoint"), "{body}");
    assert!(body.contains("401"), "{body}");
    assert!(body.contains("invalid_client"), "{body}");
    // The server echoed a secret in its error page: only the standard fields are shown.
    assert!(!body.contains("s3cr/et"), "{body}");
    assert!(!body.contains(secret), "{body}");
    assert!(!weft.stderr().contains(secret), "{}", weft.stderr());
    assert_eq!(
        server.answers.lock().unwrap().len(),
        0,
        "the API was never called"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn static_profiles_send_their_credentials_and_keep_them_out_of_errors() {
    let receiver = Receiver::start().await;
    let port = free_port();
    let config = format!(
        r#"
resources:
  auth:
    basic: {{ basic: {{ username: weft, password: "${{PW}}" }} }}
    bearer: {{ bearer: "${{TOKEN}}" }}
    header_key: {{ api_key: {{ header: X-Api-Key, value: "${{KEY}}" }} }}
    query_key: {{ api_key: {{ query: key, value: "${{KEY}}" }} }}
    fixed: {{ headers: {{ X-Partner: "${{KEY}}" }} }}
flows:
  out:
    input:
      http_server: {{ address: "127.0.0.1:{port}", errors: detailed }}
    outputs:
      - http_client: {{ url: "{basic}", auth: basic }}
      - http_client: {{ url: "{bearer}", auth: bearer }}
      - http_client: {{ url: "{header}", auth: header_key }}
      - http_client: {{ url: "{query}", auth: query_key, fail_on: [400] }}
      - http_client: {{ url: "{fixed}", auth: fixed }}
  keyed:
    input:
      http_server: {{ address: "127.0.0.1:{port}", errors: detailed, path: /keyed }}
    output:
      http_client: {{ url: "{query}", auth: query_key, retry: {{ max_attempts: 1 }} }}
"#,
        basic = receiver.url("/basic"),
        bearer = receiver.url("/bearer"),
        header = receiver.url("/header"),
        query = receiver.url("/query?page=1"),
        fixed = receiver.url("/fixed"),
    );
    let env = [("PW", "pa55word"), ("TOKEN", "tok-123"), ("KEY", "k3y/+=")];
    let weft = Weft::start_with(&config, &env, std::process::Stdio::null()).await;
    let url = format!("http://127.0.0.1:{port}/");
    assert_eq!(post_json(&url, "{}").await.0, 200, "{}", weft.stderr());
    let seen = receiver.seen();
    let at = |path: &str| {
        seen.iter()
            .find(|s| s.path.starts_with(path))
            .unwrap()
            .clone()
    };
    assert_eq!(
        at("/basic").headers["authorization"],
        "Basic d2VmdDpwYTU1d29yZA=="
    );
    assert_eq!(at("/bearer").headers["authorization"], "Bearer tok-123");
    assert_eq!(at("/header").headers["x-api-key"], "k3y/+=");
    assert_eq!(at("/query").path, "/query?page=1&key=k3y%2F%2B%3D");
    assert_eq!(at("/fixed").headers["x-partner"], "k3y/+=");

    // A failure reports the URL without the key in its query.
    receiver.set_default(Reply::status(500));
    let (status, _, body) = post_json(&format!("{url}keyed"), "{}").await;
    assert_eq!(status, 502, "{body}");
    assert!(body.contains("/query?page=1 answered 500"), "{body}");
    assert!(!body.contains("k3y"), "{body}");
    for secret in ["pa55word", "tok-123", "k3y"] {
        assert!(
            !weft.stderr().contains(secret),
            "{secret} in {}",
            weft.stderr()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rate_limit_is_shared_by_every_component_that_names_it() {
    let receiver = Receiver::start().await;
    let (a, b) = (free_port(), free_port());
    let config = format!(
        r#"
resources:
  rate_limits:
    api: {{ requests: 10, per: 1s, burst: 1 }}
flows:
  a:
    input:
      http_server: {{ address: "127.0.0.1:{a}", errors: detailed }}
    output:
      http_client: {{ url: "{url}", rate_limit: api }}
  b:
    input:
      http_server: {{ address: "127.0.0.1:{b}", errors: detailed }}
    output:
      http_client: {{ url: "{url}", rate_limit: api }}
"#,
        url = receiver.url("/limited")
    );
    let _weft = Weft::start(&config).await;
    let start = Instant::now();
    let mut calls = Vec::new();
    for i in 0..16 {
        let port = if i % 2 == 0 { a } else { b };
        calls.push(tokio::spawn(async move {
            post_json(&format!("http://127.0.0.1:{port}/"), "{}")
                .await
                .0
        }));
    }
    for call in calls {
        assert_eq!(call.await.unwrap(), 200);
    }
    let seen = receiver.seen();
    assert_eq!(seen.len(), 16);
    let span = seen.last().unwrap().at - seen.first().unwrap().at;
    // 16 requests at 10/s with no burst: 15 gaps of 100 ms. Asserted generously.
    assert!(span >= Duration::from_millis(1_200), "{span:?}");
    assert!(start.elapsed() < Duration::from_secs(10));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_circuit_opens_after_consecutive_failures_and_recovers_after_a_probe() {
    let receiver = Receiver::start().await;
    receiver.set_default(Reply::status(503));
    let port = free_port();
    let config = format!(
        r#"
resources:
  circuit_breakers:
    api: {{ failures: 3, open_for: 1s }}
flows:
  calls:
    input:
      http_server: {{ address: "127.0.0.1:{port}", errors: detailed }}
    output:
      http_client: {{ url: "{url}", circuit_breaker: api, retry: {{ max_attempts: 1 }} }}
"#,
        url = receiver.url("/flaky")
    );
    let weft = Weft::start(&config).await;
    let url = format!("http://127.0.0.1:{port}/");
    for _ in 0..3 {
        assert_eq!(
            post_json(&url, "{}").await.0,
            503,
            "the target said it is unavailable"
        );
    }
    assert_eq!(receiver.seen().len(), 3);
    // Open: refused at once, without calling the target, and the caller told when to retry.
    let (status, headers, body) = post_json(&url, "{}").await;
    assert_eq!(status, 503, "{body}");
    assert!(headers.contains_key("retry-after"), "{headers:?}");
    assert!(body.contains("circuit to http://127.0.0.1"), "{body}");
    assert_eq!(receiver.seen().len(), 3);
    let target = format!("http://{}", receiver.address);
    weft.metric_eventually(&format!(
        "weft_circuit_state{{breaker=\"api\",target=\"{target}\"}} 1"
    ))
    .await
    .unwrap();

    // After open_for, one probe goes through; its success closes the circuit.
    receiver.set_default(Reply::status(200));
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    assert_eq!(post_json(&url, "{}").await.0, 200);
    assert_eq!(post_json(&url, "{}").await.0, 200);
    assert_eq!(receiver.seen().len(), 5);
    weft.metric_eventually(&format!(
        "weft_circuit_state{{breaker=\"api\",target=\"{target}\"}} 0"
    ))
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hmac_profiles_sign_each_request_over_its_body_and_timestamp() {
    let receiver = Receiver::start().await;
    let port = free_port();
    let config = format!(
        r#"
resources:
  auth:
    signed:
      hmac:
        secret: "${{SIGNING_KEY}}"
        header: X-Signature
        prefix: "sha256="
        signed: "{{timestamp}}.{{method}}.{{path}}.{{body}}"
        timestamp_header: X-Timestamp
    signed_b64:
      hmac: {{ secret: "${{SIGNING_KEY}}", algorithm: sha512, header: X-Sig, encoding: base64 }}
flows:
  out:
    input:
      http_server: {{ address: "127.0.0.1:{port}", errors: detailed }}
    outputs:
      - http_client: {{ url: "{a}", auth: signed }}
      - http_client: {{ url: "{b}", auth: signed_b64 }}
"#,
        a = receiver.url("/hooks?x=1"),
        b = receiver.url("/b64")
    );
    let weft = Weft::start_with(
        &config,
        &[("SIGNING_KEY", "s3cret")],
        std::process::Stdio::null(),
    )
    .await;
    let body = r#"{"event":"paid","note":"{path}"}"#;
    assert_eq!(
        post_json(&format!("http://127.0.0.1:{port}/"), body)
            .await
            .0,
        200,
        "{}",
        weft.stderr()
    );
    let seen = receiver.seen();
    let hooks = seen.iter().find(|s| s.path.starts_with("/hooks")).unwrap();
    let timestamp = hooks.headers["x-timestamp"].to_str().unwrap();
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, b"s3cret");
    let signed = format!("{timestamp}.POST./hooks?x=1.{}", hooks.body);
    let expected: String = ring::hmac::sign(&key, signed.as_bytes())
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    assert_eq!(hooks.headers["x-signature"], format!("sha256={expected}"));

    use base64::Engine;
    let b64 = seen.iter().find(|s| s.path == "/b64").unwrap();
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA512, b"s3cret");
    let expected = base64::engine::general_purpose::STANDARD
        .encode(ring::hmac::sign(&key, b64.body.as_bytes()).as_ref());
    assert_eq!(b64.headers["x-sig"], expected.as_str());
    assert!(!weft.stderr().contains("s3cret"));
}
