//! GraphQL against a real local GraphQL-over-HTTP endpoint: a mutation per message (with
//! `errors` in a 200 answer failing it) and a query that enriches a message.

use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Body;
use axum::response::IntoResponse;
use http::Request;
use http_body_util::BodyExt;

use crate::support::*;

/// Answers like a GraphQL server: `upsertCustomer` needs an email, `customer` knows Ada.
async fn graphql_server() -> (String, Arc<Mutex<Vec<serde_json::Value>>>) {
    let seen: Arc<Mutex<Vec<serde_json::Value>>> = Arc::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/graphql", listener.local_addr().unwrap());
    let s = seen.clone();
    let app = Router::new().fallback(move |request: Request<Body>| {
        let s = s.clone();
        async move {
            let body = request.into_body().collect().await.unwrap().to_bytes();
            let call: serde_json::Value = serde_json::from_slice(&body).unwrap();
            s.lock().unwrap().push(call.clone());
            let query = call["query"].as_str().unwrap_or("");
            let throttled_before = s
                .lock()
                .unwrap()
                .iter()
                .filter(|c| c["variables"]["input"]["email"] == "busy@example.com")
                .count();
            let answer = if query.contains("upsertCustomer") {
                match call["variables"]["input"]["email"].as_str() {
                    Some("busy@example.com") if throttled_before == 1 => serde_json::json!({
                        "data": null,
                        "errors": [{"message": "Throttled", "extensions": {"code": "THROTTLED"}}]
                    }),
                    Some(_) => serde_json::json!({"data": {"upsertCustomer": {"id": "c1"}}}),
                    None => serde_json::json!({
                        "data": null,
                        "errors": [{"message": "email is required", "path": ["upsertCustomer"]}]
                    }),
                }
            } else {
                assert_eq!(call["variables"]["id"], 7);
                serde_json::json!({"data": {"customer": {"name": "Ada", "tier": "gold"}}})
            };
            ([("content-type", "application/json")], answer.to_string()).into_response()
        }
    });
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (url, seen)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mutation_per_message_and_errors_in_a_200_fail_it() {
    let (api, seen) = graphql_server().await;
    let port = free_port();
    let config = format!(
        r#"
flows:
  customers:
    input:
      http_server: {{ address: "127.0.0.1:{port}", errors: detailed }}
    output:
      graphql:
        url: "{api}"
        query: |
          mutation Upsert($input: CustomerInput!) {{ upsertCustomer(input: $input) {{ id }} }}
        variables: '{{ "input": {{ "email": .email, "name": .name }} }}'
        retry: {{ initial_backoff: 20ms }}
"#
    );
    let weft = Weft::start(&config).await;
    let url = format!("http://127.0.0.1:{port}/");
    let (status, _, body) = post_json(&url, r#"{"email": "ada@example.com", "name": "Ada"}"#).await;
    assert_eq!(status, 200, "{body} {}", weft.stderr());
    assert_eq!(
        seen.lock().unwrap()[0]["variables"],
        serde_json::json!({"input": {"email": "ada@example.com", "name": "Ada"}})
    );
    let (status, _, body) = post_json(&url, r#"{"name": "Nobody"}"#).await;
    assert_eq!(status, 502, "{body}");
    assert!(body.contains("GraphQL errors: email is required"), "{body}");
    assert_eq!(seen.lock().unwrap().len(), 2, "errors are not retried");
    // …unless they say "not now".
    let (status, _, body) = post_json(&url, r#"{"email": "busy@example.com"}"#).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        seen.lock().unwrap().len(),
        4,
        "throttled once, then accepted"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_query_enriches_the_message() {
    let (api, _) = graphql_server().await;
    let receiver = Receiver::start().await;
    let port = free_port();
    let config = format!(
        r#"
flows:
  orders:
    input:
      http_server: {{ address: "127.0.0.1:{port}", errors: detailed }}
    pipeline:
      - graphql:
          url: "{api}"
          query: 'query($id: ID!) {{ customer(id: $id) {{ name tier }} }}'
          variables: '{{ "id": .customer_id }}'
          result: .customer = %response.data.customer
    output:
      http_client: {{ url: "{out}" }}
"#,
        out = receiver.url("/out")
    );
    let weft = Weft::start(&config).await;
    let (status, _, body) = post_json(
        &format!("http://127.0.0.1:{port}/"),
        r#"{"order": 1, "customer_id": 7}"#,
    )
    .await;
    assert_eq!(status, 200, "{body} {}", weft.stderr());
    assert_eq!(
        receiver.seen()[0].json(),
        serde_json::json!({"order": 1, "customer_id": 7, "customer": {"name": "Ada", "tier": "gold"}})
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_poll_follows_relay_cursors() {
    // Five orders, two per page, Relay-style: `after` is the last edge's cursor.
    let seen: Arc<Mutex<Vec<serde_json::Value>>> = Arc::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let api = format!("http://{}/graphql", listener.local_addr().unwrap());
    let s = seen.clone();
    let app = Router::new().fallback(move |request: Request<Body>| {
        let s = s.clone();
        async move {
            let body = request.into_body().collect().await.unwrap().to_bytes();
            let call: serde_json::Value = serde_json::from_slice(&body).unwrap();
            s.lock().unwrap().push(call["variables"].clone());
            let start = call["variables"]["after"].as_str().map_or(0, |c| {
                c.trim_start_matches('c').parse::<usize>().unwrap() + 1
            });
            let end = (start + 2).min(5);
            let edges: Vec<_> = (start..end)
                .map(|i| serde_json::json!({"cursor": format!("c{i}"), "node": {"n": i}}))
                .collect();
            let answer = serde_json::json!({"data": {"orders": {
                "edges": edges,
                "pageInfo": {"hasNextPage": end < 5, "endCursor": format!("c{}", end - 1)}
            }}});
            ([("content-type", "application/json")], answer.to_string()).into_response()
        }
    });
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

    let receiver = Receiver::start().await;
    let config = format!(
        r#"
flows:
  orders:
    concurrency: 1
    input:
      http_poll:
        url: "{api}"
        interval: 1h
        graphql:
          query: 'query($first: Int!, $after: String) {{ orders(first: $first, after: $after) {{ edges {{ cursor node {{ n }} }} pageInfo {{ hasNextPage endCursor }} }} }}'
          variables: '{{ "first": 2 }}'
        records: map_values(array!(.data.orders.edges)) -> |e| {{ e.node }}
        pagination:
          cursor: {{ from: .data.orders.pageInfo.endCursor, variable: after }}
          stop: '!bool!(.data.orders.pageInfo.hasNextPage)'
    output:
      http_client: {{ url: "{out}" }}
"#,
        out = receiver.url("/in")
    );
    let weft = Weft::start(&config).await;
    assert!(
        crate::support::eventually(std::time::Duration::from_secs(10), || receiver.seen().len()
            == 5)
        .await,
        "{}",
        weft.stderr()
    );
    let ns: Vec<i64> = receiver
        .seen()
        .iter()
        .map(|s| s.json()["n"].as_i64().unwrap())
        .collect();
    assert_eq!(ns, [0, 1, 2, 3, 4]);
    let vars = seen.lock().unwrap().clone();
    assert_eq!(
        vars,
        [
            serde_json::json!({"first": 2}),
            serde_json::json!({"first": 2, "after": "c1"}),
            serde_json::json!({"first": 2, "after": "c3"}),
        ]
    );
}
