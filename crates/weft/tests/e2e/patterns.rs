//! Integration patterns inside a pipeline, through `weft run` with real HTTP receivers:
//! `switch`, `split` and `aggregate` (scatter-gather, a window that closes on time, groups by
//! key), `try`/`catch`, `enrich` with a cache, `throttle`, `delay` and `template`.

use std::time::{Duration, Instant};

use serde_json::json;

use crate::support::*;

/// A flow from `http_server` on a fresh port through `pipeline` to the receiver.
fn flow(name: &str, port: u16, pipeline: &str, out: &str) -> String {
    format!(
        r#"
  {name}:
    input:
      http_server: {{ address: "127.0.0.1:{port}", errors: detailed, path: /in }}
    pipeline:
{pipeline}
    output:
      http_client: {{ url: "{out}", retry: {{ max_attempts: 1 }} }}
"#
    )
}

fn bodies(receiver: &Receiver, path: &str) -> Vec<serde_json::Value> {
    receiver
        .seen()
        .iter()
        .filter(|s| s.path == path)
        .map(Seen::json)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn switch_routes_by_content_with_fall_through_and_a_default() {
    let receiver = Receiver::start().await;
    let port = free_port();
    let config = format!(
        "flows:{}",
        flow(
            "route",
            port,
            r#"      - switch:
          - check: .type == "order"
            processors:
              - map: .kind = "sale"
          - check: .type == "refund"
            processors:
              - map: .amount = 0 - int!(.amount)
            continue: true
          - processors:
              - map: .audited = true"#,
            &receiver.url("/out"),
        )
    );
    let weft = Weft::start(&config).await;
    let url = format!("http://127.0.0.1:{port}/in");
    for body in [
        r#"{"type": "order", "amount": 5}"#,
        r#"{"type": "refund", "amount": 7}"#,
        r#"{"type": "note"}"#,
    ] {
        let (status, _, text) = post_json(&url, body).await;
        assert_eq!(status, 200, "{text} {}", weft.stderr());
    }
    assert_eq!(
        bodies(&receiver, "/out"),
        [
            json!({"type": "order", "amount": 5, "kind": "sale"}),
            json!({"type": "refund", "amount": -7, "audited": true}),
            json!({"type": "note", "audited": true}),
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn split_delivers_each_part_with_its_correlation() {
    let receiver = Receiver::start().await;
    let port = free_port();
    let config = format!(
        "flows:{}",
        flow(
            "lines",
            port,
            r#"      - split: { path: .lines, keep: '{ "order": .order, "customer": .customer }' }
      - map: |
          .parent = %split.parent
          .index = %split.index
          .count = %split.count
          .order = %split.message.order
          .customer = %split.message.customer"#,
            &receiver.url("/line"),
        )
    );
    let weft = Weft::start(&config).await;
    let (status, _, text) = post_json(
        &format!("http://127.0.0.1:{port}/in"),
        r#"{"order": 42, "customer": "ada", "lines": [{"sku": "a"}, {"sku": "b"}, {"sku": "c"}]}"#,
    )
    .await;
    assert_eq!(status, 200, "{text} {}", weft.stderr());
    let id = serde_json::from_str::<serde_json::Value>(&text).unwrap()["id"].clone();
    let mut parts = bodies(&receiver, "/line");
    parts.sort_by_key(|p| p["index"].as_i64());
    assert_eq!(parts.len(), 3, "every part is delivered before the answer");
    for (i, sku) in ["a", "b", "c"].iter().enumerate() {
        assert_eq!(parts[i]["sku"], json!(sku));
        assert_eq!(parts[i]["index"], json!(i));
        assert_eq!(parts[i]["count"], json!(3));
        assert_eq!(parts[i]["parent"], id);
        // What the split kept of the order, without the other lines.
        assert_eq!(
            (&parts[i]["order"], &parts[i]["customer"]),
            (&json!(42), &json!("ada"))
        );
    }
    // One part failing fails the message (the caller may send it again).
    receiver.script(vec![Reply::status(200), Reply::status(400)]);
    let (status, _, _) = post_json(
        &format!("http://127.0.0.1:{port}/in"),
        r#"{"lines": [{"sku": "x"}, {"sku": "y"}]}"#,
    )
    .await;
    assert_eq!(status, 502);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scatter_gather_reassembles_in_order_counts_filtered_parts_and_a_short_group_closes_on_time()
 {
    let receiver = Receiver::start().await;
    let port = free_port();
    let config = format!(
        "flows:{}",
        flow(
            "gather",
            port,
            r#"      - split: .items
      - filter: .n != 13
      - switch:
          - check: .n == 99
            processors:
              - delay: 2s
      - map: .double = int!(.n) * 2
      - aggregate: { correlate: split, period: 400ms }
      - map: '. = { "items": ., "partial": %aggregate.partial, "count": %aggregate.count }'"#,
            &receiver.url("/gathered"),
        )
    );
    let weft = Weft::start(&config).await;
    let url = format!("http://127.0.0.1:{port}/in");
    let started = Instant::now();
    let (status, _, text) = post_json(&url, r#"{"items": [{"n": 3}, {"n": 1}, {"n": 2}]}"#).await;
    assert_eq!(status, 200, "{text} {}", weft.stderr());
    assert!(
        started.elapsed() < Duration::from_millis(400),
        "a complete group does not wait for its period"
    );
    assert_eq!(
        bodies(&receiver, "/gathered"),
        [
            json!({"items": [{"n": 3, "double": 6}, {"n": 1, "double": 2}, {"n": 2, "double": 4}],
                "partial": false, "count": 3})
        ]
    );
    // A part filtered out is accounted for: the group is complete without it, at once.
    let started = Instant::now();
    let (status, _, text) = post_json(&url, r#"{"items": [{"n": 13}, {"n": 5}, {"n": 13}]}"#).await;
    assert_eq!(status, 200, "{text}");
    assert!(
        started.elapsed() < Duration::from_millis(400),
        "filtered parts are not waited for: {:?}",
        started.elapsed()
    );
    assert_eq!(
        bodies(&receiver, "/gathered")[1],
        json!({"items": [{"n": 5, "double": 10}], "partial": false, "count": 1})
    );
    // A part still on its way when the period ends: the group goes on without it, partial,
    // and the late part makes a group of its own (both delivered once every part is done).
    let (status, _, text) = post_json(&url, r#"{"items": [{"n": 99}, {"n": 7}]}"#).await;
    assert_eq!(status, 200, "{text}");
    let mut late = bodies(&receiver, "/gathered")[2..].to_vec();
    late.sort_by_key(|b| b["items"][0]["n"].as_i64());
    assert_eq!(
        late,
        [
            json!({"items": [{"n": 7, "double": 14}], "partial": true, "count": 1}),
            json!({"items": [{"n": 99, "double": 198}], "partial": true, "count": 1})
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aggregate_groups_separate_messages_by_key_and_acks_them_with_the_group() {
    let receiver = Receiver::start().await;
    let port = free_port();
    let config = format!(
        "flows:{}",
        flow(
            "batches",
            port,
            r#"      - aggregate:
          key: .customer
          count: 2
          period: 600ms
          reduce: |
            .customer = %item.customer
            .total = int(.total) ?? 0
            .total = .total + int!(%item.amount)"#,
            &receiver.url("/batch"),
        )
    );
    let weft = Weft::start(&config).await;
    let url = format!("http://127.0.0.1:{port}/in");
    let send = |body: &'static str| {
        let url = url.clone();
        tokio::spawn(async move { post_json(&url, body).await })
    };
    let a1 = send(r#"{"customer": "a", "amount": 5}"#);
    let b1 = send(r#"{"customer": "b", "amount": 1}"#);
    tokio::time::sleep(Duration::from_millis(50)).await;
    let a2 = send(r#"{"customer": "a", "amount": 7}"#);
    let started = Instant::now();
    assert_eq!(a2.await.unwrap().0, 200, "{}", weft.stderr());
    assert_eq!(a1.await.unwrap().0, 200);
    assert!(
        started.elapsed() < Duration::from_millis(500),
        "a full group goes at once"
    );
    assert_eq!(
        b1.await.unwrap().0,
        200,
        "a group short of its count goes after its period"
    );
    let mut batches = bodies(&receiver, "/batch");
    batches.sort_by_key(|b| b["customer"].as_str().map(String::from));
    assert_eq!(
        batches,
        [
            json!({"customer": "a", "total": 12}),
            json!({"customer": "b", "total": 1})
        ]
    );
    // The group's message failing fails every message in it.
    receiver.script(vec![Reply::status(400)]);
    let a3 = send(r#"{"customer": "c", "amount": 1}"#);
    let a4 = send(r#"{"customer": "c", "amount": 2}"#);
    assert_eq!(a3.await.unwrap().0, 502);
    assert_eq!(a4.await.unwrap().0, 502);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn try_stops_at_a_failure_and_catch_shapes_the_failed_message() {
    let receiver = Receiver::start().await;
    let port = free_port();
    let config = format!(
        "flows:{}",
        flow(
            "careful",
            port,
            r#"      - try:
          - map: .x = 1
          - map: .y = int!(.maybe)
          - map: .z = 1
      - map: .after_try = true
      - catch:
          - map: |
              .failed_in = %error.component
              .error = %error.reason"#,
            &receiver.url("/out"),
        )
    );
    let weft = Weft::start(&config).await;
    let url = format!("http://127.0.0.1:{port}/in");
    let (status, _, text) = post_json(&url, r#"{"maybe": 4}"#).await;
    assert_eq!(status, 200, "{text} {}", weft.stderr());
    let (status, _, text) = post_json(&url, r#"{"maybe": "four"}"#).await;
    assert_eq!(status, 200, "{text}");
    let out = bodies(&receiver, "/out");
    assert_eq!(
        out[0],
        json!({"maybe": 4, "x": 1, "y": 4, "z": 1, "after_try": true})
    );
    // The failed message skipped the rest of the try and the step after it; catch got it as
    // it was before the try.
    assert_eq!(out[1]["maybe"], json!("four"));
    // Named as `weft check` names the step; the reason is the step's own.
    assert_eq!(out[1]["failed_in"], json!("pipeline[0].try[1].map"));
    let reason = out[1]["error"].as_str().unwrap();
    assert!(
        reason.contains("int") && !reason.contains("[1].map") && !reason.contains("pipeline"),
        "{}",
        out[1]
    );
    assert!(out[1].get("x").is_none() && out[1].get("after_try").is_none());

    // Without a catch, a failed message still fails.
    let port = free_port();
    let config = format!(
        "flows:{}",
        flow(
            "strict",
            port,
            "      - try:\n          - map: .y = int!(.maybe)",
            &receiver.url("/strict"),
        )
    );
    let _strict = Weft::start(&config).await;
    let (status, _, text) =
        post_json(&format!("http://127.0.0.1:{port}/in"), r#"{"maybe": "no"}"#).await;
    assert_eq!(status, 422, "{text}");
    assert!(text.contains("pipeline[0].try"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enrich_merges_a_lookup_and_caches_it() {
    let receiver = Receiver::start().await;
    let (crm, port) = (free_port(), free_port());
    // The lookup API is a weft flow answering with its pipeline's result; the receiver counts
    // the lookups it gets.
    let config = format!(
        r#"
resources:
  caches:
    customers: {{ ttl: 1m }}
flows:
  crm:
    input:
      http_server: {{ address: "127.0.0.1:{crm}", errors: detailed, path: /customers, response: pipeline }}
    pipeline:
      - map: '. = {{ "name": "Ada #" + string!(.customer_id) }}'
    output:
      http_client: {{ url: "{lookups}" }}
{orders}"#,
        lookups = receiver.url("/lookups"),
        orders = flow(
            "orders",
            port,
            &format!(
                r#"      - enrich:
          processors:
            - http: {{ url: "http://127.0.0.1:{crm}/customers", method: POST }}
          merge: .customer = %enrichment
          cache: {{ resource: customers, key: .customer_id }}"#
            ),
            &receiver.url("/orders"),
        )
    );
    let weft = Weft::start(&config).await;
    let url = format!("http://127.0.0.1:{port}/in");
    for body in [
        r#"{"order": 1, "customer_id": "7"}"#,
        r#"{"order": 2, "customer_id": "7"}"#,
        r#"{"order": 3, "customer_id": "8"}"#,
    ] {
        let (status, _, text) = post_json(&url, body).await;
        assert_eq!(status, 200, "{text} {}", weft.stderr());
    }
    let orders = bodies(&receiver, "/orders");
    assert_eq!(orders[0]["customer"], json!({"name": "Ada #7"}));
    assert_eq!(orders[1]["customer"], json!({"name": "Ada #7"}));
    assert_eq!(orders[2]["customer"], json!({"name": "Ada #8"}));
    assert_eq!(orders[1]["order"], json!(2), "the message itself is kept");
    assert_eq!(
        bodies(&receiver, "/lookups").len(),
        2,
        "the second 7 came from the cache"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn throttle_delay_and_template() {
    let receiver = Receiver::start().await;
    let port = free_port();
    let config = format!(
        "flows:{}",
        flow(
            "paced",
            port,
            r#"      - throttle: { requests: 2, per: 1s, burst: 1, key: .customer }
      - delay: 200ms
      - template:
          escape: xml
          source: '<order id="{{ id }}" customer="{{ customer }}">{{ note }}</order>'"#,
            &receiver.url("/xml"),
        )
    );
    let weft = Weft::start(&config).await;
    let url = format!("http://127.0.0.1:{port}/in");
    let started = Instant::now();
    let mut sent = Vec::new();
    for (id, customer) in [(1, "a"), (2, "a"), (3, "a"), (4, "b")] {
        let url = url.clone();
        sent.push(tokio::spawn(async move {
            let body =
                format!(r#"{{"id": {id}, "customer": "{customer}", "note": "fish & <chips>"}}"#);
            let (status, _, _) = post_json(&url, &body).await;
            (status, started.elapsed())
        }));
    }
    let mut times = Vec::new();
    for s in sent {
        let (status, took) = s.await.unwrap();
        assert_eq!(status, 200, "{}", weft.stderr());
        times.push(took);
    }
    // Customer a: 2 per second, one at a time, so its third message is at least a second in;
    // customer b has its own budget. Every message waited the delay.
    assert!(times.iter().all(|t| *t >= Duration::from_millis(200)));
    assert!(times[..3].iter().max().unwrap() >= &Duration::from_millis(1000));
    assert!(times[3] < Duration::from_millis(900), "{times:?}");
    let xml: Vec<String> = receiver
        .seen()
        .iter()
        .filter(|s| s.path == "/xml")
        .map(|s| s.body.clone())
        .collect();
    assert!(
        xml.contains(&r#"<order id="4" customer="b">fish &amp; &lt;chips&gt;</order>"#.to_string()),
        "{xml:?}"
    );
}

/// A flow from `http_server` to the given `output:` block.
fn routed(port: u16, output: &str) -> String {
    format!(
        r#"
flows:
  routed:
    input:
      http_server: {{ address: "127.0.0.1:{port}", errors: detailed, path: /in }}
    output:
{output}
"#
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fallback_reaches_the_second_output_when_the_first_is_down() {
    let receiver = Receiver::start().await;
    let (port, down) = (free_port(), free_port());
    let config = routed(
        port,
        &format!(
            r#"      fallback:
        outputs:
          - http_client: {{ url: "http://127.0.0.1:{down}/primary" }}
          - http_client: {{ url: "{standby}" }}
        retry: {{ max_attempts: 1 }}"#,
            standby = receiver.url("/standby")
        ),
    );
    let weft = Weft::start(&config).await;
    let url = format!("http://127.0.0.1:{port}/in");
    let (status, _, text) = post_json(&url, r#"{"n": 1}"#).await;
    assert_eq!(status, 200, "{text} {}", weft.stderr());
    assert_eq!(bodies(&receiver, "/standby"), [json!({"n": 1})]);
    // Both refusing: the message fails, naming both; one of them is down, so it is worth
    // retrying later.
    receiver.script(vec![Reply::status(400)]);
    let (status, _, text) = post_json(&url, r#"{"n": 2}"#).await;
    assert_eq!(status, 503, "{text}");
    assert!(
        text.contains("outputs[0]") && text.contains("outputs[1]"),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn round_robin_takes_turns_and_a_retry_goes_to_the_next() {
    let receiver = Receiver::start().await;
    let port = free_port();
    let config = routed(
        port,
        &format!(
            r#"      round_robin:
        outputs:
          - http_client: {{ url: "{a}" }}
          - http_client: {{ url: "{b}" }}
        retry: {{ max_attempts: 2, initial_backoff: 10ms }}"#,
            a = receiver.url("/a"),
            b = receiver.url("/b")
        ),
    );
    let weft = Weft::start(&config).await;
    let url = format!("http://127.0.0.1:{port}/in");
    for n in 0..4 {
        let (status, _, text) = post_json(&url, &format!(r#"{{"n": {n}}}"#)).await;
        assert_eq!(status, 200, "{text} {}", weft.stderr());
    }
    assert_eq!(bodies(&receiver, "/a").len(), 2);
    assert_eq!(bodies(&receiver, "/b").len(), 2);
    // The next turn is /a: it answers 503, and the retry lands on /b.
    receiver.script(vec![Reply::status(503)]);
    let (status, _, _) = post_json(&url, r#"{"n": 9}"#).await;
    assert_eq!(status, 200);
    assert_eq!(bodies(&receiver, "/b").last(), Some(&json!({"n": 9})));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_output_switch_routes_by_content() {
    let receiver = Receiver::start().await;
    let port = free_port();
    let config = routed(
        port,
        &format!(
            r#"      switch:
        cases:
          - check: (int(.amount) ?? 0) > 1000
            output: {{ http_client: {{ url: "{audit}" }} }}
            continue: true
          - check: .country == "DE"
            outputs:
              - http_client: {{ url: "{eu}" }}
              - http_client: {{ url: "{eu_copy}" }}
          - check: .country == "US"
            output: {{ http_client: {{ url: "{us}" }} }}"#,
            audit = receiver.url("/audit"),
            eu = receiver.url("/eu"),
            eu_copy = receiver.url("/eu-copy"),
            us = receiver.url("/us"),
        ),
    );
    let weft = Weft::start(&config).await;
    let url = format!("http://127.0.0.1:{port}/in");
    for body in [
        r#"{"country": "DE", "amount": 5}"#,
        r#"{"country": "US", "amount": 5000}"#,
    ] {
        let (status, _, text) = post_json(&url, body).await;
        assert_eq!(status, 200, "{text} {}", weft.stderr());
    }
    assert_eq!(
        bodies(&receiver, "/eu"),
        [json!({"country": "DE", "amount": 5})]
    );
    assert_eq!(bodies(&receiver, "/eu-copy").len(), 1);
    assert_eq!(
        bodies(&receiver, "/us"),
        [json!({"country": "US", "amount": 5000})]
    );
    assert_eq!(
        bodies(&receiver, "/audit"),
        [json!({"country": "US", "amount": 5000})]
    );
    // No case takes it: it fails rather than vanishing.
    let (status, _, text) = post_json(&url, r#"{"country": "FR", "amount": 5}"#).await;
    assert_eq!(status, 502, "{text}");
    assert!(text.contains("no switch case"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn groups_of_groups_are_acked_only_with_the_outer_group() {
    let receiver = Receiver::start().await;
    let port = free_port();
    let config = format!(
        "flows:{}",
        flow(
            "nested",
            port,
            "      - aggregate: { count: 2, period: 5s }\n      - aggregate: { count: 2, period: 5s }",
            &receiver.url("/out"),
        )
    );
    let weft = Weft::start(&config).await;
    let url = format!("http://127.0.0.1:{port}/in");
    let send_all = |first: i64| {
        (first..first + 4)
            .map(|n| {
                let url = url.clone();
                tokio::spawn(async move { post_json(&url, &format!(r#"{{"n": {n}}}"#)).await.0 })
            })
            .collect::<Vec<_>>()
    };
    for sent in send_all(0) {
        assert_eq!(sent.await.unwrap(), 200, "{}", weft.stderr());
    }
    let out = bodies(&receiver, "/out");
    assert_eq!(out.len(), 1);
    let mut all: Vec<i64> = out[0]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|g| {
            g.as_array()
                .unwrap()
                .iter()
                .map(|m| m["n"].as_i64().unwrap())
        })
        .collect();
    all.sort_unstable();
    assert_eq!(all, [0, 1, 2, 3]);
    // The outer group's message refused: all four fail, also those of the inner group whose
    // message was only taken into the outer one.
    receiver.script(vec![Reply::status(400)]);
    for sent in send_all(10) {
        assert_eq!(sent.await.unwrap(), 502);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dedupe_after_split_settles_each_parts_key() {
    let receiver = Receiver::start().await;
    let port = free_port();
    let config = format!(
        "flows:{}",
        flow(
            "skus",
            port,
            "      - split: .items\n      - dedupe: { key: .sku, ttl: 1h }",
            &receiver.url("/sku"),
        )
    );
    let weft = Weft::start(&config).await;
    let url = format!("http://127.0.0.1:{port}/in");
    let (status, _, text) = post_json(&url, r#"{"items": [{"sku": "a"}, {"sku": "b"}]}"#).await;
    assert_eq!(status, 200, "{text} {}", weft.stderr());
    // `a` was delivered and its key settled: the repeat is dropped at once, `c` goes through.
    let started = Instant::now();
    let (status, _, text) = post_json(&url, r#"{"items": [{"sku": "a"}, {"sku": "c"}]}"#).await;
    assert_eq!(status, 200, "{text} {}", weft.stderr());
    assert!(started.elapsed() < Duration::from_secs(1));
    let mut skus: Vec<String> = bodies(&receiver, "/sku")
        .iter()
        .map(|b| b["sku"].as_str().unwrap().to_string())
        .collect();
    skus.sort();
    assert_eq!(skus, ["a", "b", "c"]);
}
