//! The fuzz harnesses: one function per parser of untrusted input, each taking arbitrary
//! bytes and returning nothing. The cargo-fuzz targets in `fuzz/` call them under libFuzzer;
//! the tests below run each over its committed seeds and mutations of them, so CI keeps a
//! short smoke run of every target without a sanitizer build. Errors are fine; a panic, a
//! hang or unbounded memory is a finding.

use std::sync::LazyLock;
use std::task::{Context, Poll, Waker};

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue};

use crate::core::mapping::{Mapping, empty_object, insert};
use crate::inputs::http_server::auth::{Auth, Config as AuthConfig};

/// A harness: arbitrary bytes in, nothing out.
pub type Harness = fn(&[u8]);

/// Every harness, by the name of its fuzz target and seed folder.
pub const TARGETS: &[(&str, Harness)] = &[
    ("config", config),
    ("body", body),
    ("signature", signature),
    ("mapping", mapping),
    ("openapi", openapi),
    ("store", store),
];

/// The config loader on arbitrary text: YAML parsing, `${VAR}` substitution, typed
/// deserialization with locations, and every component's build.
pub fn config(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    // No environment: a `${VAR}` is defaulted or an error. Files named in the text (`${file:}`,
    // TLS files) are read, but only regular files of a bounded size.
    let lookup = |_: &str| None;
    let shared = crate::clients::Shared::default();
    let _ = crate::load::load_str("fuzz.yaml", &text, &lookup, &shared);
}

const CONTENT_TYPES: &[Option<&str>] = &[
    Some("application/json"),
    Some("application/xml"),
    Some("application/x-www-form-urlencoded"),
    Some("text/csv"),
    Some("multipart/form-data; boundary=XyZ"),
    Some("text/plain"),
    Some("application/problem+json"),
    Some("application/soap+xml"),
    None,
];

/// Request body decoding by content type (JSON, XML, forms, CSV, multipart, text); the first
/// byte picks the type.
pub fn body(data: &[u8]) {
    let Some((&which, body)) = data.split_first() else {
        return;
    };
    let content_type = CONTENT_TYPES[which as usize % CONTENT_TYPES.len()];
    let _ = crate::core::body::decode(content_type, Bytes::copy_from_slice(body));
}

const SECRET: &str = "a-fuzzing-secret-of-at-least-32-bytes";

static CHECKS: LazyLock<Vec<Auth>> = LazyLock::new(|| {
    let client = crate::clients::http::HttpClient::new();
    [
        "hmac: { preset: stripe, secret: S }",
        "hmac: { preset: github, secret: S }",
        "hmac: { preset: slack, secret: S }",
        "hmac: { preset: shopify, secret: S }",
        "hmac: { preset: paddle, secret: S }",
        "hmac: { preset: linear, secret: S }",
        "hmac: { preset: twilio, secret: S, url: 'https://hooks.example.com/sms' }",
        "hmac: { secret: S, header: X-Sig, prefix: 'v1=', encoding: base64, algorithm: sha512, timestamp_header: X-Ts, signed: '{timestamp}:{body}' }",
        "basic: { users: { u: S } }",
        "api_key: { query: key, keys: [S, T] }",
        "jwt: { secret: S }",
    ]
    .iter()
    .map(|yaml| {
        let yaml = yaml
            .replace(" S", &format!(" \"{SECRET}\""))
            .replace(" T]", " other]");
        let node = crate::config::yaml::parse(&yaml).expect("the fuzz configs parse");
        let config: AuthConfig =
            crate::config::de::from_node(&node).expect("the fuzz configs are valid");
        config.build(&client).expect("the fuzz configs build")
    })
    .collect()
});

/// The headers a scheme reads, each given a piece of the input.
const AUTH_HEADERS: &[&str] = &[
    "stripe-signature",
    "x-hub-signature-256",
    "x-slack-signature",
    "x-slack-request-timestamp",
    "x-shopify-hmac-sha256",
    "paddle-signature",
    "linear-signature",
    "x-twilio-signature",
    "x-twilio-webhooks-signature-settings",
    "content-type",
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

/// Inbound auth on arbitrary headers, query and body: the Stripe, GitHub, Slack, Shopify,
/// Paddle, Twilio and Linear signature schemes, a generic timestamped one, basic auth, API keys and JWT bearer tokens.
/// The input is split at 0xff: one piece per header, then the query, then the body.
pub fn signature(data: &[u8]) {
    let mut pieces = data.split(|b| *b == 0xff);
    let mut headers = HeaderMap::new();
    for name in AUTH_HEADERS {
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
            let _ = auth.check_body(&headers, query.as_deref(), body);
        }
    }
}

static PROGRAMS: LazyLock<Vec<Mapping>> = LazyLock::new(|| {
    [
        ".copy = .; .n = length(.)",
        ".parsed = parse_json(string(.raw) ?? \"\") ?? null",
        ".parts = split(string(.raw) ?? \"\", \",\")",
        ".lower = downcase(string(.raw) ?? \"\"); .up = upcase(.lower)",
        ".flat = flatten(object(.doc) ?? {})",
        ".merged = merge(object(.doc) ?? {}, {\"k\": .raw})",
        ".json = encode_json(.doc)",
        ".i = to_int(.raw) ?? 0; .f = to_float(.raw) ?? 0.0",
        ".keys = keys(object(.doc) ?? {})",
        "if exists(.doc.items) { .count = length(array(.doc.items) ?? []) }",
        ".b64 = encode_base64(string(.raw) ?? \"\"); .back = decode_base64(.b64) ?? null",
    ]
    .iter()
    .map(|p| Mapping::compile(p).unwrap_or_else(|e| panic!("`{p}` does not compile: {e:?}")))
    .collect()
});

/// VRL over arbitrary input: typical programs on any message (arbitrary JSON, arbitrary
/// strings), or (when the first byte is a multiple of 4) the input compiled as a program and
/// run on a small message.
pub fn mapping(data: &[u8]) {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let raw = String::from_utf8_lossy(rest).into_owned();
    let mut message = empty_object();
    insert(&mut message, "raw", raw.clone().into());
    if let Ok(doc) = serde_json::from_slice::<serde_json::Value>(rest)
        && let Ok(doc) = serde_json::from_value(doc)
    {
        insert(&mut message, "doc", doc);
    }
    if mode % 4 == 0 {
        if raw.len() <= 4096
            && let Ok(program) = Mapping::compile(&raw)
        {
            let mut value = message.clone();
            let _ = program.run(&mut value, &mut empty_object());
        }
        return;
    }
    for program in PROGRAMS.iter() {
        let mut value = message.clone();
        let _ = program.run(&mut value, &mut empty_object());
    }
}

/// An OpenAPI document (JSON or YAML) loaded into operations: `$ref`s inlined (cycles and
/// size bounded), parameters, bodies and responses compiled into JSON Schema validators.
pub fn openapi(data: &[u8]) {
    let _ = crate::clients::openapi::Spec::parse("fuzz.yaml", &String::from_utf8_lossy(data));
}

static STORE_RUNTIME: LazyLock<tokio::runtime::Runtime> = LazyLock::new(|| {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime")
});

/// The store's own file on open: arbitrary bytes as `weft.db`, opened as `weft dlq` would,
/// then read and written. A damaged file must be refused with an error, never crash weft.
pub fn store(data: &[u8]) {
    use weft_store::{Durability, Store};
    let dir = std::env::temp_dir().join(format!("weft-fuzz-store-{}", std::process::id()));
    let _ = std::fs::create_dir_all(&dir);
    let path = dir.join("weft.db");
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
    }
    if std::fs::write(&path, data).is_err() {
        return;
    }
    STORE_RUNTIME.block_on(async {
        let Ok(store) = Store::open(&path, Durability::Process).await else {
            return;
        };
        let _ = store.depth("f").await;
        let _ = store
            .dead_letters(&weft_store::DlqFilter::default(), 10)
            .await;
        let _ = store.kv_get("oauth2", "k", 0).await;
        let _ = store
            .claim("f", 1 << 50, 10, std::time::Duration::from_secs(1))
            .await;
        let _ = store.enqueue("f", "id", b"j{}", b"{}", None, 1).await;
        let _ = store.replay(weft_store::DlqFilter::default(), 1).await;
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each target over its seeds and, per seed, mutations of it (bytes flipped, cut, spliced
    /// with another seed): the smoke run CI keeps. The fuzzer proper runs by hand
    /// (`fuzz/README.md`).
    #[test]
    fn every_fuzz_target_survives_its_seeds_and_their_mutations() {
        let seeds_root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/seeds");
        let mut rng = fastrand::Rng::with_seed(0x5eed);
        for (name, target) in TARGETS {
            let dir = seeds_root.join(name);
            let mut seeds: Vec<Vec<u8>> = std::fs::read_dir(&dir)
                .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
                .map(|e| std::fs::read(e.unwrap().path()).unwrap())
                .collect();
            assert!(!seeds.is_empty(), "no seeds for the `{name}` target");
            seeds.sort();
            if *name == "store" {
                // The seed is a real store: the harness gets past the open. (Opened from a
                // copy: opening writes to the file.)
                let path =
                    std::env::temp_dir().join(format!("weft-fuzz-seed-{}.db", std::process::id()));
                std::fs::copy(dir.join("weft.db"), &path).unwrap();
                let opened = STORE_RUNTIME.block_on(weft_store::Store::open(
                    &path,
                    weft_store::Durability::Process,
                ));
                assert!(opened.is_ok(), "{:?}", opened.err());
                drop(opened);
                for suffix in ["", "-wal", "-shm"] {
                    let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
                }
            }
            let rounds = if *name == "store" { 20 } else { 200 };
            for seed in &seeds {
                target(seed);
                for _ in 0..rounds / seeds.len().max(1) {
                    target(&mutate(&mut rng, seed, &seeds));
                }
            }
        }
    }

    fn mutate(rng: &mut fastrand::Rng, seed: &[u8], all: &[Vec<u8>]) -> Vec<u8> {
        let mut out = seed.to_vec();
        for _ in 0..rng.usize(1..8) {
            match rng.u8(0..4) {
                0 if !out.is_empty() => {
                    let i = rng.usize(..out.len());
                    out[i] = rng.u8(..);
                }
                1 if !out.is_empty() => {
                    let i = rng.usize(..out.len());
                    out.truncate(i);
                }
                2 => {
                    let other = &all[rng.usize(..all.len())];
                    if !other.is_empty() {
                        let from = rng.usize(..other.len());
                        let at = rng.usize(..=out.len());
                        let end = (from + rng.usize(1..64)).min(other.len());
                        out.splice(at..at, other[from..end].iter().copied());
                    }
                }
                _ => {
                    let at = rng.usize(..=out.len());
                    out.insert(at, *b"{}[]<>\"':,&=\n\xff".get(rng.usize(..14)).unwrap());
                }
            }
        }
        out
    }
}
