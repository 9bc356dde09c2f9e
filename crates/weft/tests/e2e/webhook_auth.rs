//! Inbound auth on `http_server`: signatures made by each sender's own library (GitHub's
//! `@octokit/webhooks-methods`, the Node SDKs of Stripe, Shopify, Paddle, Twilio and Linear,
//! Slack's Python SDK, the Standard Webhooks reference library), a generic scheme, API keys
//! and basic auth. A refused request is answered 401 and never
//! reaches the flow; a delivery accepted before is answered again as a success and not
//! delivered twice.

use base64::Engine;
use http::Method;

use crate::support::*;

fn hmac_sha256(secret: &str, text: &[u8]) -> Vec<u8> {
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret.as_bytes());
    ring::hmac::sign(&key, text).as_ref().to_vec()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// What `program` printed, run by Node in the peers' directory (so it finds their modules),
/// its arguments from `process.argv[1]` on.
fn node(program: &str, args: &[&str]) -> String {
    peer_program(
        std::process::Command::new("node").arg("-e").arg(program),
        args,
    )
}

/// What `program` printed, run by the peers' Python, its arguments from `sys.argv[1]` on.
fn python(program: &str, args: &[&str]) -> String {
    let python = peers_dir().join("venv/bin/python");
    peer_program(
        std::process::Command::new(python).arg("-c").arg(program),
        args,
    )
}

fn peer_program(command: &mut std::process::Command, args: &[&str]) -> String {
    let out = command
        .current_dir(peers_dir())
        .args(args)
        .output()
        .expect("the peer's runtime runs");
    assert!(
        out.status.success(),
        "{}: run crates/weft/tests/peers/install.sh if a module is missing",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// `X-Hub-Signature-256` as GitHub's own `@octokit/webhooks-methods` signs `body`.
fn github_signature(secret: &str, body: &str) -> String {
    node(
        "import('@octokit/webhooks-methods').then(async ({ sign }) => {
  const [secret, body] = process.argv.slice(1);
  process.stdout.write(await sign(secret, body));
});",
        &[secret, body],
    )
}

/// `Stripe-Signature` as Stripe's Node library makes it for a test event.
fn stripe_header(secret: &str, at: i64, body: &str) -> String {
    node(
        "const Stripe = require('stripe');
const [secret, at, payload] = process.argv.slice(1);
process.stdout.write(new Stripe('sk_test_weft').webhooks.generateTestHeaderString({
  payload, secret, timestamp: Number(at),
}));",
        &[secret, &at.to_string(), body],
    )
}

/// `X-Shopify-Hmac-Sha256` and the body it signs, as Shopify's own `@shopify/shopify-api`
/// makes a Shopify-signed request of `json` (its test helper, which writes the body as
/// `JSON.stringify` does).
fn shopify_signed(secret: &str, json: &str) -> (String, String) {
    let out = node(
        "require('@shopify/shopify-api/adapters/node');
const { setUpValidRequest, RequestType } = require('@shopify/shopify-api/test-helpers');
const [apiSecretKey, json] = process.argv.slice(1);
setUpValidRequest(
  { type: RequestType.Extension, store: 'weft-test', apiSecretKey, body: JSON.parse(json) },
  new Request('https://weft.test/'),
).then(async (signed) => process.stdout.write(JSON.stringify({
  hmac: signed.headers.get('x-shopify-hmac-sha256'), body: await signed.text(),
})));",
        &[secret, json],
    );
    let out: serde_json::Value = serde_json::from_str(&out).unwrap();
    (
        out["hmac"].as_str().unwrap().to_string(),
        out["body"].as_str().unwrap().to_string(),
    )
}

/// `X-Slack-Signature` as Slack's Python SDK (`slack_sdk`) computes it.
fn slack_signature(secret: &str, at: &str, body: &str) -> String {
    python(
        "import sys
from slack_sdk.signature import SignatureVerifier
secret, at, body = sys.argv[1:]
print(SignatureVerifier(secret).generate_signature(timestamp=at, body=body), end='')",
        &[secret, at, body],
    )
}

/// One flow per endpoint, all on one port, each delivering to the receiver under its own path.
fn config(port: u16, receiver: &Receiver, endpoints: &[(&str, &str)]) -> String {
    let mut flows = String::from("flows:\n");
    for (name, auth) in endpoints {
        flows.push_str(&format!(
            r#"  {name}:
    input:
      http_server: {{ address: "127.0.0.1:{port}", path: /{name}, auth: {auth} }}
    output:
      http_client: {{ url: "{out}", retry: {{ max_attempts: 1 }} }}
"#,
            out = receiver.url(&format!("/{name}"))
        ));
    }
    flows
}

/// weft with one flow, `name`, whose endpoint checks `auth` and delivers to a new receiver;
/// and the endpoint's URL.
async fn one_endpoint(name: &str, auth: &str) -> (Receiver, Weft, String) {
    let receiver = Receiver::start().await;
    let port = free_port();
    let weft = Weft::start(&config(port, &receiver, &[(name, auth)])).await;
    (receiver, weft, format!("http://127.0.0.1:{port}/{name}"))
}

async fn post(url: &str, headers: &[(&str, &str)], body: &str) -> (u16, String) {
    let (status, _, text) = post_full(url, headers, body).await;
    (status, text)
}

async fn post_full(
    url: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> (u16, http::HeaderMap, String) {
    let mut all = vec![("content-type", "application/json")];
    all.extend_from_slice(headers);
    let (status, headers, text) = request_with(Method::POST, url, &all, body.to_string()).await;
    (status.as_u16(), headers, text)
}

/// A success given again for a delivery accepted before (nothing delivered).
fn replayed(status: u16, headers: &http::HeaderMap) -> bool {
    status / 100 == 2
        && headers
            .get("idempotent-replayed")
            .and_then(|v| v.to_str().ok())
            == Some("true")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signed_webhooks_from_each_preset_are_verified_and_replays_answered() {
    if !peers_installed("the senders' signing libraries (npm, PyPI)") {
        return;
    }
    let receiver = Receiver::start().await;
    let port = free_port();
    let secret = "s3cr3t-for-tests";
    let weft = Weft::start(&config(
        port,
        &receiver,
        &[
            ("github", &format!(r#"{{ hmac: {{ preset: github, secret: "{secret}" }} }}"#)),
            (
                "stripe",
                &format!(r#"{{ hmac: {{ preset: stripe, secret: "{secret}", tolerance: 2s }} }}"#),
            ),
            ("slack", &format!(r#"{{ hmac: {{ preset: slack, secret: "{secret}" }} }}"#)),
            ("shopify", &format!(r#"{{ hmac: {{ preset: shopify, secret: "{secret}" }} }}"#)),
            (
                "generic",
                &format!(
                    r#"{{ hmac: {{ secret: "{secret}", header: X-Signature, prefix: "sha512=", algorithm: sha512, encoding: base64, timestamp_header: X-Timestamp, signed: "{{timestamp}}.{{body}}" }} }}"#
                ),
            ),
            (
                "layout",
                &format!(
                    r#"{{ hmac: {{ secret: "{secret}", header: X-Sig, timestamp_header: X-Sent-At, signed: "{{header:X-Delivery}}:{{timestamp}}:{{header:x-account}}:{{body}}" }} }}"#
                ),
            ),
        ],
    ))
    .await;
    let url = |path: &str| format!("http://127.0.0.1:{port}/{path}");
    let body = r#"{"action": "opened", "number": 7}"#;

    // GitHub: X-Hub-Signature-256 = "sha256=" + hex HMAC-SHA256 of the raw body. The first
    // delivery fails downstream: GitHub's redelivery (same body, signature and delivery id) is
    // handled, and only then is the delivery used up: a copy after that is answered as a
    // success and not delivered.
    let github = github_signature(secret, body);
    assert_eq!(
        github,
        format!("sha256={}", hex(&hmac_sha256(secret, body.as_bytes())))
    );
    let delivery = [
        ("x-hub-signature-256", github.as_str()),
        ("x-github-delivery", "72d3162e-cc78-11e3-81ab-4c9367dc0958"),
    ];
    receiver.script(vec![Reply::status(500)]);
    let (status, text) = post(&url("github"), &delivery, body).await;
    assert_eq!(status, 502, "{text} {}", weft.stderr());
    let (status, text) = post(&url("github"), &delivery, body).await;
    assert_eq!(status, 200, "{text} {}", weft.stderr());
    let (status, headers, text) = post_full(&url("github"), &delivery, body).await;
    assert!(replayed(status, &headers), "{status} {headers:?} {text}");
    let tampered = body.replace('7', "8");
    let (status, text) = post(
        &url("github"),
        &[("x-hub-signature-256", &github)],
        &tampered,
    )
    .await;
    assert_eq!(
        (status, text.contains("invalid signature")),
        (401, true),
        "{text}"
    );
    let other = github_signature("not-our-secret", body);
    let (status, text) = post(&url("github"), &[("x-hub-signature-256", &other)], body).await;
    assert_eq!(
        (status, text.contains("invalid signature")),
        (401, true),
        "{text}"
    );
    let (status, text) = post(&url("github"), &[], body).await;
    assert_eq!(
        (status, text.contains("missing signature")),
        (401, true),
        "{text}"
    );

    // GitHub's form deliveries: `payload=<the event's JSON>`, signed as sent; the flow gets
    // the JSON.
    let event = r#"{"zen": "Keep it logically awesome.", "hook_id": 1}"#;
    let form = form_urlencoded::Serializer::new(String::new())
        .append_pair("payload", event)
        .finish();
    let signed = github_signature(secret, &form);
    let (status, _, text) = request_with(
        Method::POST,
        &url("github"),
        &[
            ("content-type", "application/x-www-form-urlencoded"),
            ("x-hub-signature-256", &signed),
        ],
        form,
    )
    .await;
    assert_eq!(status, 200, "{text}");
    let arrived = receiver.seen().last().unwrap().json();
    assert_eq!(
        arrived,
        serde_json::from_str::<serde_json::Value>(event).unwrap()
    );

    // GitHub sends up to 25 MB: its preset accepts more than the usual 1 MiB, others do not.
    let push = format!(r#"{{"ref": "main", "pad": "{}"}}"#, "x".repeat(1_200_000));
    let signed = format!("sha256={}", hex(&hmac_sha256(secret, push.as_bytes())));
    let (status, text) = post(&url("github"), &[("x-hub-signature-256", &signed)], &push).await;
    assert_eq!(status, 200, "{text}");
    let ts = now().to_string();
    let (status, text) = post(
        &url("slack"),
        &[
            ("x-slack-signature", &format!("v0={}", "00".repeat(32))),
            ("x-slack-request-timestamp", &ts),
        ],
        &push,
    )
    .await;
    assert_eq!(status, 413, "{text}");

    // Stripe: Stripe-Signature: t=<unix>,v1=<hex HMAC-SHA256 of "<t>.<body>">.
    let t = now();
    let event = r#"{"id": "evt_1NG8Du2eZvKYlo2CUI79vXWy", "type": "invoice.paid"}"#;
    let stripe = stripe_header(secret, t, event);
    let (status, text) = post(&url("stripe"), &[("stripe-signature", &stripe)], event).await;
    assert_eq!(status, 200, "{text}");
    // Stripe's retry of an event signs it anew: the event id says it is the same delivery.
    let again = stripe_header(secret, t + 1, event);
    let (status, headers, text) =
        post_full(&url("stripe"), &[("stripe-signature", &again)], event).await;
    assert!(replayed(status, &headers), "{status} {headers:?} {text}");
    // While Stripe rolls a secret it signs with both: one valid `v1` is enough.
    let rolled = r#"{"id": "evt_1NG8Du2eZvKYlo2CRolled", "type": "invoice.paid"}"#;
    let at = now();
    let old = stripe_header("whsec_rolled_away", at, rolled);
    let both = format!(
        "{old},{}",
        stripe_header(secret, at, rolled).split_once(',').unwrap().1
    );
    let (status, text) = post(&url("stripe"), &[("stripe-signature", &both)], rolled).await;
    assert_eq!(status, 200, "{both}: {text}");
    // Captured and sent again past the tolerance (2 s here): refused, not answered as a replay.
    tokio::time::sleep(std::time::Duration::from_millis(3500)).await;
    let (status, text) = post(&url("stripe"), &[("stripe-signature", &stripe)], event).await;
    assert_eq!((status, text.contains("tolerance")), (401, true), "{text}");
    // Ten minutes old: outside the tolerance, even if correctly signed.
    let stale = stripe_header(secret, t - 600, body);
    let (status, text) = post(&url("stripe"), &[("stripe-signature", &stale)], body).await;
    assert_eq!((status, text.contains("tolerance")), (401, true), "{text}");

    // Slack: X-Slack-Signature = "v0=" + hex HMAC-SHA256 of "v0:<timestamp>:<body>".
    let ts = now().to_string();
    let slack = slack_signature(secret, &ts, body);
    let (status, text) = post(
        &url("slack"),
        &[
            ("x-slack-signature", &slack),
            ("x-slack-request-timestamp", &ts),
        ],
        body,
    )
    .await;
    assert_eq!(status, 200, "{text}");
    // Refused: signed with another secret; correctly signed ten minutes ago; no timestamp.
    let old = (now() - 600).to_string();
    for (what, signature, at, needle) in [
        (
            "another secret",
            slack_signature("not-our-secret", &ts, body),
            ts.as_str(),
            "invalid signature",
        ),
        (
            "stale",
            slack_signature(secret, &old, body),
            old.as_str(),
            "tolerance",
        ),
    ] {
        let (status, text) = post(
            &url("slack"),
            &[
                ("x-slack-signature", &signature),
                ("x-slack-request-timestamp", at),
            ],
            body,
        )
        .await;
        assert_eq!(
            (status, text.contains(needle)),
            (401, true),
            "{what}: {text}"
        );
    }
    let (status, text) = post(&url("slack"), &[("x-slack-signature", &slack)], body).await;
    assert_eq!((status, text.contains("timestamp")), (401, true), "{text}");

    // Shopify: X-Shopify-Hmac-Sha256 = base64 HMAC-SHA256 of the raw body, as its SDK signs.
    let (shopify, order) = shopify_signed(
        secret,
        r#"{"id": 820982911946154500, "email": "jon@example.com"}"#,
    );
    let (status, text) = post(
        &url("shopify"),
        &[("x-shopify-hmac-sha256", &shopify)],
        &order,
    )
    .await;
    assert_eq!(status, 200, "{text}");
    // Events deliveries name the header without the `X-`.
    let (shopify, event) = shopify_signed(secret, r#"{"topic": "orders/create"}"#);
    let (status, text) = post(
        &url("shopify"),
        &[("shopify-hmac-sha256", &shopify)],
        &event,
    )
    .await;
    assert_eq!(status, 200, "{text}");
    let (status, text) = post(
        &url("shopify"),
        &[("shopify-hmac-sha256", &shopify)],
        &event.replace("create", "delete"),
    )
    .await;
    assert_eq!(
        (status, text.contains("invalid signature")),
        (401, true),
        "{text}"
    );

    // Generic: SHA-512, base64, over "<timestamp>.<body>".
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA512, secret.as_bytes());
    let ts = now().to_string();
    let generic = format!(
        "sha512={}",
        base64::engine::general_purpose::STANDARD
            .encode(ring::hmac::sign(&key, format!("{ts}.{body}").as_bytes()))
    );
    let (status, text) = post(
        &url("generic"),
        &[("x-signature", &generic), ("x-timestamp", &ts)],
        body,
    )
    .await;
    assert_eq!(status, 200, "{text}");

    // A layout naming other headers: each is signed as sent, and must be there.
    let ts = now().to_string();
    let layout = hex(&hmac_sha256(
        secret,
        format!("d-42:{ts}:acct-7:{body}").as_bytes(),
    ));
    let signed_headers = [
        ("x-sig", layout.as_str()),
        ("x-sent-at", ts.as_str()),
        ("x-delivery", "d-42"),
        ("x-account", "acct-7"),
    ];
    let (status, text) = post(&url("layout"), &signed_headers, body).await;
    assert_eq!(status, 200, "{text}");
    let (status, text) = post(&url("layout"), &signed_headers[..3], body).await;
    assert_eq!(
        (status, text.contains("missing signed header")),
        (401, true),
        "{text}"
    );
    // A value that looks like a placeholder is signed as it is, not filled in.
    let (status, text) = post(
        &url("layout"),
        &[
            ("x-sig", layout.as_str()),
            ("x-sent-at", ts.as_str()),
            ("x-delivery", "{header:x-account}"),
            ("x-account", "acct-7"),
        ],
        body,
    )
    .await;
    assert_eq!(
        (status, text.contains("invalid signature")),
        (401, true),
        "{text}"
    );

    // Only the requests that passed reached the flows (GitHub's twice: failed, redelivered).
    let mut paths: Vec<String> = receiver.seen().iter().map(|s| s.path.clone()).collect();
    paths.sort();
    assert_eq!(
        paths,
        [
            "/generic", "/github", "/github", "/github", "/github", "/layout", "/shopify",
            "/shopify", "/slack", "/stripe", "/stripe"
        ]
    );
    assert!(!weft.stderr().contains(secret), "a secret was printed");
}

/// The `webhook-signature` value the Standard Webhooks reference library (npm
/// `standardwebhooks`) gives for a message signed with `secret`.
fn standard_webhooks_signature(secret: &str, id: &str, at: i64, body: &str) -> String {
    node(
        "const { Webhook } = require('standardwebhooks');
const [secret, id, at, body] = process.argv.slice(1);
process.stdout.write(new Webhook(secret).sign(id, new Date(Number(at) * 1000), body));",
        &[secret, id, &at.to_string(), body],
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn standard_webhooks_signed_by_the_reference_library_are_verified() {
    if !peers_installed("standardwebhooks (npm)") {
        return;
    }
    // Secrets as Svix and the others hand them out: `whsec_` and base64.
    let secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    let retired = "whsec_dGhlIG9sZCBzZWNyZXQsIHJvdGF0ZWQgYXdheQ==";
    let (receiver, weft, url) = one_endpoint(
        "svix",
        &format!(r#"{{ hmac: {{ preset: standard_webhooks, secret: "{secret}" }} }}"#),
    )
    .await;
    let body = r#"{"type": "user.created", "data": {"id": "user_29w83sxmDNGwOuEthce5gg56FcC"}}"#;
    let send = |id: &str, at: i64, signature: &str| {
        let (id, at, signature, url) = (
            id.to_string(),
            at.to_string(),
            signature.to_string(),
            url.clone(),
        );
        async move {
            post_full(
                &url,
                &[
                    ("webhook-id", &id),
                    ("webhook-timestamp", &at),
                    ("webhook-signature", &signature),
                ],
                body,
            )
            .await
        }
    };

    // One timestamp for the signature and its header (signing takes a node start-up).
    let at = now();
    let signed = standard_webhooks_signature(secret, "msg_1", at, body);
    assert!(signed.starts_with("v1,"), "{signed}");
    let (status, _, text) = send("msg_1", at, &signed).await;
    assert_eq!(status, 200, "{text} {}", weft.stderr());
    // The same delivery again (a copy, or a replay within the tolerance) is answered as a
    // success and not delivered.
    let (status, headers, text) = send("msg_1", at, &signed).await;
    assert!(replayed(status, &headers), "{status} {headers:?} {text}");

    // The sender gives up waiting (the receiver is slow) and retries, signing anew: while the
    // first is still being handled the retry is told to come back; after it, it is answered
    // as a success. The message arrives once.
    receiver.hold();
    let at = now();
    let first = standard_webhooks_signature(secret, "msg_7", at, body);
    let timed_out = tokio::time::timeout(
        std::time::Duration::from_millis(500),
        send("msg_7", at, &first),
    )
    .await;
    assert!(timed_out.is_err(), "the receiver holds the first delivery");
    let retry = standard_webhooks_signature(secret, "msg_7", at + 1, body);
    let (status, headers, text) = send("msg_7", at + 1, &retry).await;
    assert_eq!(status, 409, "{text}");
    assert!(headers.contains_key("retry-after"), "{headers:?}");
    receiver.release();
    assert!(
        eventually(std::time::Duration::from_secs(10), || receiver.seen().len()
            == 2)
        .await,
        "the first delivery goes through"
    );
    let mut answered = (0, http::HeaderMap::new(), String::new());
    for _ in 0..50 {
        answered = send("msg_7", at + 1, &retry).await;
        if answered.0 != 409 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let (status, headers, text) = answered;
    assert!(replayed(status, &headers), "{status} {headers:?} {text}");

    // While the sender rotates its secret it signs with both, and may add versions weft does
    // not know: one valid `v1` among them is enough.
    let at = now();
    let both = format!(
        "v1a,c29tZXRoaW5nIGVsc2U= {} {}",
        standard_webhooks_signature(retired, "msg_2", at, body),
        standard_webhooks_signature(secret, "msg_2", at, body)
    );
    let (status, _, text) = send("msg_2", at, &both).await;
    assert_eq!(status, 200, "{text}");

    // Refused: only the retired secret; a signature of another message id; a correct one ten
    // minutes old (outside the default tolerance); no `webhook-id`.
    let at = now();
    let only_retired = standard_webhooks_signature(retired, "msg_3", at, body);
    let (status, _, text) = send("msg_3", at, &only_retired).await;
    assert_eq!(
        (status, text.contains("invalid signature")),
        (401, true),
        "{text}"
    );
    let other_id = standard_webhooks_signature(secret, "msg_4", at, body);
    let (status, _, text) = send("msg_5", at, &other_id).await;
    assert_eq!(
        (status, text.contains("invalid signature")),
        (401, true),
        "{text}"
    );
    let old = now() - 600;
    let stale = standard_webhooks_signature(secret, "msg_6", old, body);
    let (status, _, text) = send("msg_6", old, &stale).await;
    assert_eq!((status, text.contains("tolerance")), (401, true), "{text}");
    let (status, text) = post(
        &url,
        &[
            ("webhook-timestamp", &now().to_string()),
            ("webhook-signature", &signed),
        ],
        body,
    )
    .await;
    assert_eq!((status, text.contains("webhook-id")), (401, true), "{text}");

    assert_eq!(
        receiver.seen().len(),
        3,
        "only the three valid deliveries arrive, each once"
    );
    // Refusals are counted, by reason, in the metrics and the flow's counters.
    for needle in [
        r#"weft_auth_refused_total{flow="svix",reason="invalid signature"} 2"#,
        r#"weft_auth_refused_total{flow="svix",reason="signature timestamp outside the tolerance"} 1"#,
        r#"weft_auth_refused_total{flow="svix",reason="missing webhook-id"} 1"#,
    ] {
        weft.metric_eventually(needle).await.unwrap();
    }
    let (_, flow) = weft.admin_json(Method::GET, "/api/v1/flows/svix").await;
    assert_eq!(
        (&flow["counters"]["refused"], &flow["counters"]["received"]),
        (&serde_json::json!(4), &serde_json::json!(3)),
        "{flow:#}"
    );
    let sent: serde_json::Value = serde_json::from_str(body).unwrap();
    assert!(receiver.seen().iter().all(|s| s.json() == sent));
    assert!(
        !weft.stderr().contains("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"),
        "a secret was printed"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_keys_and_basic_auth() {
    let receiver = Receiver::start().await;
    let port = free_port();
    let weft = Weft::start(&config(
        port,
        &receiver,
        &[
            (
                "keyed",
                r#"{ api_key: { header: X-Api-Key, keys: ["old-key", "new-key"] } }"#,
            ),
            ("query", r#"{ api_key: { query: token, keys: ["q-key"] } }"#),
            ("basic", r#"{ basic: { users: { partner: "pa55" } } }"#),
        ],
    ))
    .await;
    let url = |path: &str| format!("http://127.0.0.1:{port}/{path}");
    for key in ["old-key", "new-key"] {
        let (status, text) = post(&url("keyed"), &[("x-api-key", key)], "{}").await;
        assert_eq!(status, 200, "{text} {}", weft.stderr());
    }
    let (status, text) = post(&url("keyed"), &[("x-api-key", "new-kez")], "{}").await;
    assert_eq!(
        (status, text.contains("invalid API key")),
        (401, true),
        "{text}"
    );
    let (status, _) = post(&url("keyed"), &[], "{}").await;
    assert_eq!(status, 401);
    let (status, _) = post(&format!("{}?token=q-key", url("query")), &[], "{}").await;
    assert_eq!(status, 200);
    let (status, _) = post(&format!("{}?token=nope", url("query")), &[], "{}").await;
    assert_eq!(status, 401);

    let basic = |user: &str, password: &str| {
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
        )
    };
    let (status, _) = post(
        &url("basic"),
        &[("authorization", &basic("partner", "pa55"))],
        "{}",
    )
    .await;
    assert_eq!(status, 200);
    let (status, headers, _) = request_with(
        Method::POST,
        &url("basic"),
        &[("authorization", &basic("partner", "wrong"))],
        "{}",
    )
    .await;
    assert_eq!(status.as_u16(), 401);
    assert!(headers.get("www-authenticate").is_some());
    let (status, _) = post(
        &url("basic"),
        &[("authorization", &basic("stranger", "pa55"))],
        "{}",
    )
    .await;
    assert_eq!(status, 401);
    assert_eq!(
        receiver.seen().len(),
        4,
        "refused requests never reach the flow"
    );
}

/// What Paddle's Node SDK (`@paddle/paddle-node-sdk`, its webhook verifier) says of
/// `signature` (a `Paddle-Signature` value) for `body` and `secret`.
fn paddle_accepts(secret: &str, signature: &str, body: &str) -> bool {
    node(
        "const { Paddle } = require('@paddle/paddle-node-sdk');
const [secret, signature, body] = process.argv.slice(1);
new Paddle('test_api_key').webhooks.isSignatureValid(body, secret, signature)
  .then((ok) => process.stdout.write(String(ok)), (e) => process.stdout.write(String(e)));",
        &[secret, signature, body],
    ) == "true"
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paddle_signatures_are_verified_as_paddles_sdk_verifies_them() {
    if !peers_installed("@paddle/paddle-node-sdk (npm)") {
        return;
    }
    let secret = "pdl_ntfset_01gkpjp8bkm3tm53kdgkx6sms7_6h3qd3uFSi9YCD3OLYAShQI90XTI6vEu";
    let (receiver, weft, url) = one_endpoint(
        "paddle",
        &format!(r#"{{ hmac: {{ preset: paddle, secret: "{secret}" }} }}"#),
    )
    .await;
    let event = |id: &str| {
        format!(
            r#"{{"event_id": "{id}", "event_type": "transaction.completed", "data": {{"id": "txn_01hv8wptq8987qeep44cyrewp9"}}}}"#
        )
    };
    // Paddle-Signature: ts=<unix>;h1=<hex HMAC-SHA256 of "<ts>:<body>">, the secret as text.
    let sign = |at: i64, body: &str, key: &str| {
        format!(
            "ts={at};h1={}",
            hex(&hmac_sha256(key, format!("{at}:{body}").as_bytes()))
        )
    };
    let send = |signature: String, body: String| {
        let url = url.clone();
        async move { post_full(&url, &[("paddle-signature", &signature)], &body).await }
    };

    let first = event("evt_01hv8x2acma2gz1he8mkpk4k4a");
    let at = now();
    let signed = sign(at, &first, secret);
    assert!(
        paddle_accepts(secret, &signed, &first),
        "Paddle's SDK agrees"
    );
    let (status, _, text) = send(signed, first.clone()).await;
    assert_eq!(status, 200, "{text} {}", weft.stderr());
    // Paddle's retry signs anew; the event id says it is the same delivery.
    let (status, headers, text) = send(sign(at + 1, &first, secret), first.clone()).await;
    assert!(replayed(status, &headers), "{status} {headers:?} {text}");

    // While a secret is rotated Paddle sends an `h1` for each: one valid is enough.
    let second = event("evt_01hv8x3f2c7gq0ybcw4m6t9x8d");
    let at = now();
    let old = sign(at, &second, "pdl_ntfset_retired");
    let both = format!(
        "{old};h1={}",
        sign(at, &second, secret).rsplit_once("h1=").unwrap().1
    );
    assert!(
        paddle_accepts(secret, &both, &second),
        "Paddle's SDK agrees"
    );
    let (status, _, text) = send(both, second.clone()).await;
    assert_eq!(status, 200, "{text}");

    // Refused, by the SDK and by weft: tampered, another secret, no signature; and, by weft, a
    // correct one ten minutes old.
    let third = event("evt_01hv8x4k1m2n3p4q5r6s7t8v9w");
    let at = now();
    let good = sign(at, &third, secret);
    let tampered = third.replace("completed", "refunded");
    assert!(!paddle_accepts(secret, &good, &tampered));
    let (status, _, text) = send(good.clone(), tampered).await;
    assert_eq!(
        (status, text.contains("invalid signature")),
        (401, true),
        "{text}"
    );
    let wrong = sign(at, &third, "pdl_ntfset_not_ours");
    assert!(!paddle_accepts(secret, &wrong, &third));
    let (status, _, text) = send(wrong, third.clone()).await;
    assert_eq!(
        (status, text.contains("invalid signature")),
        (401, true),
        "{text}"
    );
    let (status, _, text) = send(format!("ts={at}"), third.clone()).await;
    assert_eq!(
        (status, text.contains("missing signature")),
        (401, true),
        "{text}"
    );
    let stale = sign(at - 600, &third, secret);
    let (status, _, text) = send(stale, third.clone()).await;
    assert_eq!((status, text.contains("tolerance")), (401, true), "{text}");

    let ids: Vec<_> = receiver
        .seen()
        .iter()
        .map(|s| s.json()["event_id"].clone())
        .collect();
    assert_eq!(
        ids,
        [
            "evt_01hv8x2acma2gz1he8mkpk4k4a",
            "evt_01hv8x3f2c7gq0ybcw4m6t9x8d"
        ],
        "each valid event once"
    );
    assert!(!weft.stderr().contains(secret), "a secret was printed");
}

/// The `X-Twilio-Signature` Twilio's Node library (`twilio`) computes for a request to `url`
/// with these form `params` (none for a JSON body, whose hash is in the URL).
fn twilio_signature(token: &str, url: &str, params: &serde_json::Value, algorithm: &str) -> String {
    node(
        "const twilio = require('twilio');
const [token, url, params, algorithm] = process.argv.slice(1);
process.stdout.write(twilio.getExpectedTwilioSignature(token, url, JSON.parse(params), algorithm));",
        &[token, url, &params.to_string(), algorithm],
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twilio_requests_signed_by_twilios_library_are_verified() {
    if !peers_installed("twilio (npm)") {
        return;
    }
    let token = "12345abcdef67890fedcba0987654321";
    // Twilio calls the public URL; a proxy hands the request to weft on another address.
    let public = "https://hooks.example.com/twilio/sms";
    let (receiver, weft, local) = one_endpoint(
        "twilio",
        &format!(r#"{{ hmac: {{ preset: twilio, secret: "{token}", url: "{public}" }} }}"#),
    )
    .await;
    let send =
        |query: &str, headers: Vec<(&'static str, String)>, content_type: &str, body: String| {
            let (url, content_type) = (format!("{local}{query}"), content_type.to_string());
            async move {
                let mut all: Vec<(&str, &str)> = vec![("content-type", content_type.as_str())];
                all.extend(headers.iter().map(|(k, v)| (*k, v.as_str())));
                let (status, headers, text) = request_with(Method::POST, &url, &all, body).await;
                (status.as_u16(), headers, text)
            }
        };
    let form = "application/x-www-form-urlencoded";
    let sms = serde_json::json!({
        "MessageSid": "SM0123456789abcdef0123456789abcdef",
        "From": "+14155550100",
        "To": "+14155550199",
        "Body": "Hello & welcome: 5 + 5 = 10?",
    });
    let encoded = |params: &serde_json::Value| {
        let mut out = form_urlencoded::Serializer::new(String::new());
        for (k, v) in params.as_object().unwrap() {
            out.append_pair(k, v.as_str().unwrap());
        }
        out.finish()
    };
    let with_query = format!("{public}?tenant=acme");
    let signature = twilio_signature(token, &with_query, &sms, "HMAC_SHA1");
    let idempotency = "AC123-SM0123456789abcdef0123456789abcdef";
    let headers = |signature: &str| {
        vec![
            ("x-twilio-signature", signature.to_string()),
            ("i-twilio-idempotency-token", idempotency.to_string()),
        ]
    };
    let (status, _, text) = send("?tenant=acme", headers(&signature), form, encoded(&sms)).await;
    assert_eq!(status, 200, "{text} {}", weft.stderr());
    // Twilio's retry after its timeout: answered as a success, not delivered again.
    let (status, answer, text) =
        send("?tenant=acme", headers(&signature), form, encoded(&sms)).await;
    assert!(replayed(status, &answer), "{status} {answer:?} {text}");

    // SharedKey webhooks sign with HMAC-SHA256 and say so; the URL with its default port is
    // the same URL.
    let second = serde_json::json!({"MessageSid": "SM2", "Body": "again"});
    let signature = twilio_signature(
        token,
        "https://hooks.example.com:443/twilio/sms",
        &second,
        "HMAC_SHA256",
    );
    let mut sha256 = vec![("x-twilio-signature", signature)];
    sha256.push((
        "x-twilio-webhooks-signature-settings",
        "key=webhooks_sharedkey_1,algorithm=HMAC_SHA256".into(),
    ));
    let (status, _, text) = send("", sha256, form, encoded(&second)).await;
    assert_eq!(status, 200, "{text}");

    // A JSON body: its SHA-256 is a query parameter of the signed URL.
    let json = r#"{"event": "call.completed", "CallSid": "CA1"}"#;
    let hash: String = ring::digest::digest(&ring::digest::SHA256, json.as_bytes())
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let query = format!("?bodySHA256={hash}");
    let signature = twilio_signature(
        token,
        &format!("{public}{query}"),
        &serde_json::json!({}),
        "HMAC_SHA1",
    );
    let signed = vec![("x-twilio-signature", signature.clone())];
    let (status, _, text) = send(&query, signed.clone(), "application/json", json.into()).await;
    assert_eq!(status, 200, "{text}");
    // The same signature over another body: its hash does not match.
    let other = json.replace("CA1", "CA2");
    let (status, _, text) = send(&query, signed, "application/json", other).await;
    assert_eq!(
        (status, text.contains("invalid signature")),
        (401, true),
        "{text}"
    );

    // Refused: a changed parameter, a signature for another URL, another token, none.
    let mut changed = sms.clone();
    changed["Body"] = "Send me money".into();
    let original = twilio_signature(token, &with_query, &sms, "HMAC_SHA1");
    let other_url = twilio_signature(
        token,
        "https://evil.example.com/twilio/sms?tenant=acme",
        &sms,
        "HMAC_SHA1",
    );
    let other_token = twilio_signature(
        "ffffffffffffffffffffffffffffffff",
        &with_query,
        &sms,
        "HMAC_SHA1",
    );
    for (what, signature, body) in [
        ("a changed parameter", original.as_str(), encoded(&changed)),
        ("another URL", other_url.as_str(), encoded(&sms)),
        ("another token", other_token.as_str(), encoded(&sms)),
    ] {
        let (status, _, text) = send(
            "?tenant=acme",
            vec![("x-twilio-signature", signature.to_string())],
            form,
            body,
        )
        .await;
        assert_eq!(
            (status, text.contains("invalid signature")),
            (401, true),
            "{what}: {text}"
        );
    }
    let (status, _, text) = send("?tenant=acme", vec![], form, encoded(&sms)).await;
    assert_eq!(
        (status, text.contains("missing signature")),
        (401, true),
        "{text}"
    );

    let seen = receiver.seen();
    assert_eq!(seen.len(), 3, "each valid request once");
    assert_eq!(seen[0].json(), sms, "the form arrives as its fields");
    assert!(!weft.stderr().contains(token), "a secret was printed");
}

/// What Linear's SDK (`@linear/sdk`, `LinearWebhookClient.verify`) says of `signature` (a
/// `Linear-Signature` value) for `body` and `secret`: `true`, or why not.
fn linear_verifies(secret: &str, signature: &str, body: &str) -> String {
    node(
        "import('@linear/sdk/webhooks').then(({ LinearWebhookClient }) => {
  const [secret, signature, body] = process.argv.slice(1);
  try {
    process.stdout.write(String(new LinearWebhookClient(secret).verify(Buffer.from(body), signature)));
  } catch (e) {
    process.stdout.write('refused: ' + e.message);
  }
});",
        &[secret, signature, body],
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn linear_signatures_are_verified_as_linears_sdk_verifies_them() {
    if !peers_installed("@linear/sdk (npm)") {
        return;
    }
    let secret = "lin_wh_3b0cd95e1a7f2c4d8e6f9a0b1c2d3e4f";
    let (receiver, weft, url) = one_endpoint(
        "linear",
        &format!(r#"{{ hmac: {{ preset: linear, secret: "{secret}" }} }}"#),
    )
    .await;
    let event = |issue: &str, at_ms: i64| {
        format!(
            r#"{{"action": "create", "type": "Issue", "data": {{"id": "{issue}", "title": "Fix the login page"}}, "webhookTimestamp": {at_ms}}}"#
        )
    };
    // Linear-Signature: hex HMAC-SHA256 of the raw body, which carries the signed time.
    let sign = |body: &str, key: &str| hex(&hmac_sha256(key, body.as_bytes()));
    let send = |signature: String, delivery: &str, body: String| {
        let (url, delivery) = (url.clone(), delivery.to_string());
        async move {
            post_full(
                &url,
                &[
                    ("linear-signature", &signature),
                    ("linear-delivery", &delivery),
                ],
                &body,
            )
            .await
        }
    };

    let first = event("2f5b1e4c", now() * 1000);
    let signature = sign(&first, secret);
    assert_eq!(linear_verifies(secret, &signature, &first), "true");
    let delivery = "b7d1c6a0-1f2e-4c3d-9a8b-7e6f5d4c3b2a";
    let (status, _, text) = send(signature.clone(), delivery, first.clone()).await;
    assert_eq!(status, 200, "{text} {}", weft.stderr());
    // Linear's retry of the same delivery, re-sent with a new time: answered, not delivered.
    let retry = event("2f5b1e4c", now() * 1000 + 5);
    let (status, headers, text) = send(sign(&retry, secret), delivery, retry).await;
    assert!(replayed(status, &headers), "{status} {headers:?} {text}");

    // Refused by the SDK and by weft: another secret; a body changed after signing; a body
    // signed ten minutes ago.
    let second = event("9c8d7e6f", now() * 1000);
    let wrong = sign(&second, "lin_wh_not_ours");
    assert!(linear_verifies(secret, &wrong, &second).starts_with("refused"));
    let (status, _, text) = send(wrong, "d-2", second.clone()).await;
    assert_eq!(
        (status, text.contains("invalid signature")),
        (401, true),
        "{text}"
    );
    let good = sign(&second, secret);
    let changed = second.replace("Fix the login page", "Delete everything");
    assert!(linear_verifies(secret, &good, &changed).starts_with("refused"));
    let (status, _, text) = send(good, "d-3", changed).await;
    assert_eq!(
        (status, text.contains("invalid signature")),
        (401, true),
        "{text}"
    );
    let stale = event("9c8d7e6f", (now() - 600) * 1000);
    let signed = sign(&stale, secret);
    assert!(linear_verifies(secret, &signed, &stale).starts_with("refused"));
    let (status, _, text) = send(signed, "d-4", stale).await;
    assert_eq!((status, text.contains("tolerance")), (401, true), "{text}");

    let seen = receiver.seen();
    assert_eq!(seen.len(), 1, "the valid event once");
    assert_eq!(seen[0].json()["data"]["id"], "2f5b1e4c");
    assert!(!weft.stderr().contains(secret), "a secret was printed");
}

/// What Square's SDK (`square`, `WebhooksHelper.verifySignature`) says of `signature` for
/// `body` sent to `url`.
fn square_accepts(key: &str, url: &str, signature: &str, body: &str) -> bool {
    node(
        "const { WebhooksHelper } = require('square');
const [signatureKey, notificationUrl, signatureHeader, requestBody] = process.argv.slice(1);
WebhooksHelper.verifySignature({ requestBody, signatureHeader, signatureKey, notificationUrl })
  .then((ok) => process.stdout.write(String(ok)), (e) => process.stdout.write(String(e)));",
        &[key, url, signature, body],
    ) == "true"
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn square_signatures_are_verified_as_squares_sdk_verifies_them() {
    if !peers_installed("square (npm)") {
        return;
    }
    let key = "sq0wss-Wq3pFJ4v0cH1NHfXy2ODeA";
    let public = "https://hooks.example.com/square/payments";
    let (receiver, weft, url) = one_endpoint(
        "square",
        &format!(r#"{{ hmac: {{ preset: square, secret: "{key}", url: "{public}" }} }}"#),
    )
    .await;
    // x-square-hmacsha256-signature: base64 HMAC-SHA256 of the notification URL and the body.
    let sign = |key: &str, notification: &str, body: &str| {
        base64::engine::general_purpose::STANDARD
            .encode(hmac_sha256(key, format!("{notification}{body}").as_bytes()))
    };
    let event = r#"{"merchant_id": "6SSW7HV8K2ST5", "type": "payment.created", "event_id": "13b867cf-db3d-4b1c-90b6-2f32a9d78124", "data": {"id": "KkAkhdMsgzn59SM8A89WgKwekxLZY"}}"#;
    let signature = sign(key, public, event);
    assert!(
        square_accepts(key, public, &signature, event),
        "Square's SDK agrees"
    );
    let send = |signature: String, body: String| {
        let url = url.clone();
        async move {
            post_full(
                &url,
                &[("x-square-hmacsha256-signature", &signature)],
                &body,
            )
            .await
        }
    };
    let (status, _, text) = send(signature.clone(), event.into()).await;
    assert_eq!(status, 200, "{text} {}", weft.stderr());
    let (status, headers, text) = send(signature, event.into()).await;
    assert!(replayed(status, &headers), "{status} {headers:?} {text}");

    // Refused by the SDK and by weft: signed for another URL, with another key, tampered.
    let other_url = sign(key, "https://evil.example.com/square/payments", event);
    assert!(!square_accepts(key, public, &other_url, event));
    let other_key = sign("sq0wss-not-ours", public, event);
    assert!(!square_accepts(key, public, &other_key, event));
    let tampered = event.replace("payment.created", "refund.created");
    let good = sign(key, public, event);
    assert!(!square_accepts(key, public, &good, &tampered));
    for (what, signature, body) in [
        ("another URL", other_url, event.to_string()),
        ("another key", other_key, event.to_string()),
        ("tampered", good, tampered),
    ] {
        let (status, _, text) = send(signature, body).await;
        assert_eq!(
            (status, text.contains("invalid signature")),
            (401, true),
            "{what}: {text}"
        );
    }
    assert_eq!(receiver.seen().len(), 1, "the valid event once");
    assert!(!weft.stderr().contains(key), "a secret was printed");
}
