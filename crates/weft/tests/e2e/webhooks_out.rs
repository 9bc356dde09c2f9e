//! weft as a webhook gateway: `examples/webhook_gateway.yaml` run as shipped, sending one event
//! to every active endpoint of a PostgreSQL table, each request signed with its endpoint's
//! own secret and verified by the Standard Webhooks reference library (npm `standardwebhooks`);
//! an endpoint that fails is retried alone.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::sql::{exec, postgres};
use crate::support::*;

/// What the reference library makes of a request: the payload it verified, or why not.
fn verify(secret: &str, seen: &Seen) -> Result<serde_json::Value, String> {
    const VERIFY: &str = "const { Webhook } = require(process.argv[1]);
const [secret, headers, body] = process.argv.slice(2);
try {
  process.stdout.write(JSON.stringify(new Webhook(secret).verify(body, JSON.parse(headers))));
} catch (e) {
  process.stdout.write('refused: ' + e.message);
}";
    let headers: BTreeMap<&str, &str> = ["webhook-id", "webhook-timestamp", "webhook-signature"]
        .into_iter()
        .map(|name| {
            let value = seen.headers.get(name).map_or("", |v| v.to_str().unwrap());
            (name, value)
        })
        .collect();
    let out = std::process::Command::new("node")
        .arg("-e")
        .arg(VERIFY)
        .arg(peers_dir().join("node_modules/standardwebhooks"))
        .args([
            secret,
            &serde_json::to_string(&headers).unwrap(),
            &seen.body,
        ])
        .output()
        .expect("node runs");
    let text = String::from_utf8(out.stdout).unwrap();
    match serde_json::from_str(&text) {
        Ok(payload) => Ok(payload),
        Err(_) => Err(format!("{text}{}", String::from_utf8_lossy(&out.stderr))),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_gateway_example_signs_each_endpoints_webhooks_with_its_own_secret() {
    if !peers_installed("standardwebhooks (npm)") {
        return;
    }
    let Some(url) = postgres().await else {
        return;
    };
    let receiver = Receiver::start().await;
    let first = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    let (retired, current) = (
        "whsec_dGhlIG9sZCBzZWNyZXQsIHJvdGF0ZWQgYXdheQ==",
        "whsec_c2Vjb25kIGVuZHBvaW50J3MgbmV3IHNlY3JldA==",
    );
    // The example names its table, and its `weft test` makes one too: this test's is in a
    // schema of its own, found through the connection's search path.
    let schema = format!("weft_gateway_{}", std::process::id());
    exec(
        &url,
        &format!(
            "CREATE SCHEMA IF NOT EXISTS {schema};
             SET search_path TO {schema};
             CREATE TABLE webhook_endpoints (id INTEGER PRIMARY KEY, url TEXT NOT NULL,
                                             secret TEXT NOT NULL, active BOOLEAN NOT NULL);
             INSERT INTO webhook_endpoints VALUES
               (1, '{a}', '{first}', true),
               (2, '{b}', '{retired} {current}', true),
               (3, '{c}', '{first}', false);",
            a = receiver.url("/a"),
            b = receiver.url("/b"),
            c = receiver.url("/c"),
        ),
    )
    .await;
    let config = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../examples/webhook_gateway.yaml"),
    )
    .unwrap();
    let app_url = format!(
        "{url}{}options=-c%20search_path%3D{schema}",
        if url.contains('?') { '&' } else { '?' }
    );
    let address = format!("127.0.0.1:{}", free_port());
    let deliveries = format!("127.0.0.1:{}", free_port());
    let weft = Weft::start_with(
        &config,
        &[
            ("APP_DATABASE_URL", app_url.as_str()),
            ("WEFT_GATEWAY_ADDRESS", address.as_str()),
            ("WEFT_DELIVERIES_ADDRESS", deliveries.as_str()),
        ],
        std::process::Stdio::null(),
    )
    .await;

    // One endpoint fails once: only its delivery is retried, and every request carries the
    // event's id as `webhook-id`.
    receiver.script(vec![Reply::status(503)]);
    let event = serde_json::json!({"type": "invoice.paid", "data": {"invoice": "in_42"}});
    let (status, _, text) =
        post_json(&format!("http://{address}/events"), &event.to_string()).await;
    assert_eq!(status, 202, "{text}");
    let arrived = eventually(Duration::from_secs(20), || {
        let seen = receiver.seen();
        let ok = |path: &str| seen.iter().any(|s| s.path == path && s.status == 200);
        ok("/a") && ok("/b")
    })
    .await;
    assert!(arrived, "{:?} {}", receiver.seen(), weft.stderr());
    // Nothing more is on its way.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let seen = receiver.seen();
    assert!(seen.iter().all(|s| s.path != "/c"), "an inactive endpoint");
    let mut paths: Vec<_> = seen.iter().map(|s| s.path.as_str()).collect();
    paths.sort();
    assert!(
        paths == ["/a", "/a", "/b"] || paths == ["/a", "/b", "/b"],
        "the endpoint that failed once is sent to again, the other not: {paths:?}"
    );
    let ids: Vec<_> = seen
        .iter()
        .map(|s| s.headers["webhook-id"].clone())
        .collect();
    assert!(ids.windows(2).all(|w| w[0] == w[1]), "{ids:?}");

    // Each verifies with its endpoint's secret (the second's current one, while it rotates),
    // and not with another's.
    for s in &seen {
        let secret = if s.path == "/a" { first } else { current };
        assert_eq!(verify(secret, s), Ok(event.clone()), "{}", s.path);
        let other = if s.path == "/a" { current } else { first };
        let refused = verify(other, s).unwrap_err();
        assert!(refused.contains("refused"), "{refused}");
    }
    let b = seen.iter().find(|s| s.path == "/b").unwrap();
    assert_eq!(
        verify(retired, b),
        Ok(event.clone()),
        "the retired secret too"
    );

    let stderr = weft.stderr();
    for secret in [first, retired, current] {
        assert!(!stderr.contains(&secret[6..]), "a secret was printed");
    }
    exec(&url, &format!("DROP SCHEMA {schema} CASCADE")).await;
}
