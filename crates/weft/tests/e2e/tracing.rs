//! Traces and per-flow log levels: spans per message, step and output exported over OTLP/HTTP,
//! the caller's W3C `traceparent` continued into outbound calls, and `log_level` on a flow.

use std::time::Duration;

use http::StatusCode;

use crate::support::*;

const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CALLER_SPAN: &str = "00f067aa0ba902b7";

fn traceparent_of(seen: &Seen) -> String {
    seen.headers
        .get("traceparent")
        .unwrap_or_else(|| panic!("{} came without a traceparent", seen.path))
        .to_str()
        .unwrap()
        .to_string()
}

/// Every span of every export the collector received: (trace id, span id, parent, name).
fn exported_spans(collector: &Receiver) -> Vec<(String, String, String, String)> {
    let mut spans = Vec::new();
    for export in collector.seen().iter().filter(|s| s.path == "/v1/traces") {
        let body = export.json();
        for resource in body["resourceSpans"].as_array().unwrap() {
            let service = resource["resource"]["attributes"]
                .as_array()
                .unwrap()
                .iter()
                .find(|a| a["key"] == "service.name")
                .map(|a| a["value"]["stringValue"].clone());
            assert_eq!(service, Some("weft".into()), "{body}");
            for scope in resource["scopeSpans"].as_array().unwrap() {
                for span in scope["spans"].as_array().unwrap() {
                    let text = |k: &str| span[k].as_str().unwrap_or_default().to_lowercase();
                    spans.push((
                        text("traceId"),
                        text("spanId"),
                        text("parentSpanId"),
                        text("name"),
                    ));
                }
            }
        }
    }
    spans
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spans_are_exported_and_the_callers_trace_goes_on_into_outbound_calls() {
    let api = Receiver::start().await;
    let port = free_port();
    let config = format!(
        r#"
tracing:
  otlp: {{ endpoint: "{collector}", protocol: http/json }}
flows:
  orders:
    input:
      http_server: {{ address: "127.0.0.1:{port}", path: /orders }}
    pipeline:
      - map: .checked = true
      - http:
          url: "{lookup}"
          result: .looked_up = %response.status
    output:
      http_client: {{ url: "{orders}" }}
"#,
        collector = api.url("/v1/traces"),
        lookup = api.url("/lookup"),
        orders = api.url("/orders"),
    );
    let weft = Weft::start_with(
        &config,
        &[("OTEL_BSP_SCHEDULE_DELAY", "100")],
        std::process::Stdio::null(),
    )
    .await;
    let (status, _, body) = request_with(
        http::Method::POST,
        &format!("http://127.0.0.1:{port}/orders"),
        &[
            ("content-type", "application/json"),
            ("traceparent", &format!("00-{TRACE_ID}-{CALLER_SPAN}-01")),
        ],
        r#"{"id": 1}"#,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    // Both outbound calls carry the caller's trace, each with a span of weft's as its parent.
    let seen = api.seen();
    let calls: Vec<&Seen> = seen.iter().filter(|s| s.path != "/v1/traces").collect();
    assert_eq!(calls.len(), 2, "{calls:?}");
    let mut parents = Vec::new();
    for call in &calls {
        let parts: Vec<String> = traceparent_of(call)
            .split('-')
            .map(str::to_string)
            .collect();
        assert_eq!(
            (parts[0].as_str(), parts[1].as_str(), parts[3].as_str()),
            ("00", TRACE_ID, "01"),
            "{}",
            call.path
        );
        assert_ne!(parts[2], CALLER_SPAN, "{}", call.path);
        parents.push(parts[2].clone());
    }

    assert!(
        eventually(Duration::from_secs(10), || exported_spans(&api).len() >= 4).await,
        "spans were not exported: {:?}\n{}",
        exported_spans(&api),
        weft.stderr()
    );
    let spans = exported_spans(&api);
    let named = |name: &str| {
        spans
            .iter()
            .find(|s| s.3 == name)
            .unwrap_or_else(|| panic!("no `{name}` span in {spans:?}"))
            .clone()
    };
    let message = named("message");
    assert_eq!(
        (message.0.as_str(), message.2.as_str()),
        (TRACE_ID, CALLER_SPAN)
    );
    for step in ["pipeline[0].map", "pipeline[1].http", "output.http_client"] {
        let span = named(step);
        assert_eq!(span.0, TRACE_ID, "{step}");
        assert_eq!(
            span.2, message.1,
            "{step} is not a child of the message span"
        );
    }
    // The calls were made in the step and output spans.
    assert_eq!(parents[0], named("pipeline[1].http").1);
    assert_eq!(parents[1], named("output.http_client").1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_export_the_callers_traceparent_is_passed_on_unchanged() {
    let api = Receiver::start().await;
    let port = free_port();
    let weft = Weft::start(&format!(
        "flows:\n  relay:\n    input: {{ http_server: {{ address: \"127.0.0.1:{port}\" }} }}\n    output: {{ http_client: {{ url: \"{}\" }} }}\n",
        api.url("/relay")
    ))
    .await;
    let traceparent = format!("00-{TRACE_ID}-{CALLER_SPAN}-00");
    let url = format!("http://127.0.0.1:{port}/");
    let headers = [
        ("content-type", "application/json"),
        ("traceparent", traceparent.as_str()),
    ];
    let (status, _, _) = request_with(http::Method::POST, &url, &headers, "{}").await;
    assert_eq!(status, StatusCode::OK);
    // A malformed one is not passed on.
    let headers = [
        ("content-type", "application/json"),
        ("traceparent", "00-nonsense-01"),
    ];
    request_with(http::Method::POST, &url, &headers, "{}").await;
    let seen = api.seen();
    assert_eq!(traceparent_of(&seen[0]), traceparent);
    assert!(seen[1].headers.get("traceparent").is_none());
    drop(weft);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flow_log_level_applies_to_its_own_messages_only() {
    let ports = [free_port(), free_port(), free_port(), free_port()];
    let flow = |name: &str, port: u16, level: Option<&str>, line: &str| {
        format!(
            "  {name}:\n    input: {{ http_server: {{ address: \"127.0.0.1:{port}\" }} }}\n{}    pipeline:\n      - log: {{ {line} }}\n    output: {{ drop: {{}} }}\n",
            level
                .map(|l| format!("    log_level: {l}\n"))
                .unwrap_or_default()
        )
    };
    let config = format!(
        "flows:\n{}{}{}{}",
        flow(
            "chatty",
            ports[0],
            Some("debug"),
            r#"level: debug, message: '"chatty says " + string!(.word)'"#
        ),
        flow(
            "plain",
            ports[1],
            None,
            r#"level: debug, message: '"plain says " + string!(.word)'"#
        ),
        flow(
            "hushed",
            ports[2],
            Some("error"),
            r#"level: warn, message: '"hushed says " + string!(.word)'"#
        ),
        flow(
            "loud",
            ports[3],
            Some("info"),
            r#"level: info, message: '"loud says " + string!(.word)'"#
        ),
    );
    let weft = Weft::start_with(
        &config,
        &[("WEFT_LOG", "warn")],
        std::process::Stdio::null(),
    )
    .await;
    for port in ports {
        let (status, _, body) =
            post_json(&format!("http://127.0.0.1:{port}/"), r#"{"word": "hello"}"#).await;
        assert_eq!(status, StatusCode::OK, "{body}\n{}", weft.stderr());
    }
    assert!(
        eventually(Duration::from_secs(5), || weft
            .stderr()
            .contains("chatty says hello"))
        .await,
        "{}",
        weft.stderr()
    );
    let stderr = weft.stderr();
    // A flow's level is above or below WEFT_LOG (warn), for its own lines only.
    assert!(stderr.contains("loud says hello"), "{stderr}");
    assert!(!stderr.contains("plain says"), "{stderr}");
    assert!(!stderr.contains("hushed says"), "{stderr}");
    // Lines outside the flows follow WEFT_LOG: `listening` is info.
    assert!(!stderr.contains("listening"), "{stderr}");
}
