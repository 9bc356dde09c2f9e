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
            let answer = if query.contains("upsertCustomer") {
                match call["variables"]["input"]["email"].as_str() {
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
      http_server: {{ address: "127.0.0.1:{port}" }}
    output:
      graphql:
        url: "{api}"
        query: |
          mutation Upsert($input: CustomerInput!) {{ upsertCustomer(input: $input) {{ id }} }}
        variables: '{{ "input": {{ "email": .email, "name": .name }} }}'
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
      http_server: {{ address: "127.0.0.1:{port}" }}
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
