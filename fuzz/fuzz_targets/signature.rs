//! Inbound auth header parsing on arbitrary headers and bodies: the Stripe, GitHub, Slack and
//! Shopify signature schemes, a generic timestamped scheme, basic auth, API keys and JWT
//! bearer tokens. Each must refuse cleanly, never panic.
#![no_main]

use std::sync::LazyLock;
use std::task::{Context, Poll, Waker};

use http::{HeaderMap, HeaderName, HeaderValue};
use libfuzzer_sys::fuzz_target;
use weft::inputs::http_server::auth::{Auth, Config};

const SECRET: &str = "a-fuzzing-secret-of-at-least-32-bytes";

static CHECKS: LazyLock<Vec<Auth>> = LazyLock::new(|| {
    let client = weft::clients::http::HttpClient::new();
    [
        "hmac: { preset: stripe, secret: S }",
        "hmac: { preset: github, secret: S }",
        "hmac: { preset: slack, secret: S }",
        "hmac: { preset: shopify, secret: S }",
        "hmac: { secret: S, header: X-Sig, prefix: 'v1=', encoding: base64, algorithm: sha512, timestamp_header: X-Ts, signed: '{timestamp}:{body}' }",
        "basic: { users: { u: S } }",
        "api_key: { query: key, keys: [S, T] }",
        "jwt: { secret: S }",
    ]
    .iter()
    .map(|yaml| {
        let yaml = yaml.replace(" S", &format!(" \"{SECRET}\"")).replace(" T]", " other]");
        let node = weft::config::yaml::parse(&yaml).expect("the fuzz configs parse");
        let config: Config = weft::config::de::from_node(&node).expect("the fuzz configs are valid");
        config.build(&client).expect("the fuzz configs build")
    })
    .collect()
});

/// The headers a scheme reads, each given a piece of the input.
const NAMES: &[&str] = &[
    "stripe-signature",
    "x-hub-signature-256",
    "x-slack-signature",
    "x-slack-request-timestamp",
    "x-shopify-hmac-sha256",
    "x-sig",
    "x-ts",
    "authorization",
];

/// Polls a future that never waits (none of these checks does I/O) to its end.
fn now<F: Future>(future: F) -> F::Output {
    let mut future = std::pin::pin!(future);
    match future
        .as_mut()
        .poll(&mut Context::from_waker(Waker::noop()))
    {
        Poll::Ready(out) => out,
        Poll::Pending => panic!("an auth check without a key set waited"),
    }
}

fuzz_target!(|data: &[u8]| {
    // Pieces split at 0xff: one per header, then the query, then the body.
    let mut pieces = data.split(|b| *b == 0xff);
    let mut headers = HeaderMap::new();
    for name in NAMES {
        if let Some(value) = pieces.next()
            && let Ok(value) = HeaderValue::from_bytes(value)
        {
            headers.insert(HeaderName::from_static(name), value);
        }
    }
    let query = pieces.next().map(String::from_utf8_lossy);
    let body = pieces.next().unwrap_or_default();
    for auth in CHECKS.iter() {
        if now(auth.check_head(&headers, query.as_deref())).is_ok() {
            let _ = auth.check_body(&headers, body);
        }
    }
});
