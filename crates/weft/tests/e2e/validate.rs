//! `validate`: a message that matches its JSON Schema goes on; one that does not is refused
//! with where and which rule it broke, never its values.

use crate::support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_that_breaks_its_schema_is_refused_with_where_and_why() {
    let receiver = Receiver::start().await;
    let (inline, from_file) = (free_port(), free_port());
    let dir = scratch();
    let schema_file = dir.join("order.json");
    std::fs::write(
        &schema_file,
        r#"{"type": "object", "required": ["sku"], "properties": {"sku": {"pattern": "^[A-Z]+$"}}}"#,
    )
    .unwrap();
    let config = format!(
        r#"
flows:
  inline:
    input:
      http_server: {{ address: "127.0.0.1:{inline}", path: /orders }}
    pipeline:
      - validate:
          max_problems: 2
          schema:
            type: object
            required: [id, amount]
            properties:
              id: {{ type: string, minLength: 1 }}
              amount: {{ type: number, minimum: 0 }}
              card: {{ type: string, pattern: "^[0-9]{{16}}$" }}
    output:
      http_client: {{ url: "{}", retry: {{ max_attempts: 1 }} }}
  from_file:
    input:
      http_server: {{ address: "127.0.0.1:{from_file}", path: /orders }}
    pipeline:
      - validate: {{ schema_file: "{}" }}
    output:
      http_client: {{ url: "{}", retry: {{ max_attempts: 1 }} }}
"#,
        receiver.url("/inline"),
        schema_file.display(),
        receiver.url("/file"),
    );
    let weft = Weft::start(&config).await;
    let url = format!("http://127.0.0.1:{inline}/orders");

    let (status, _, body) = post_json(&url, r#"{"id": "o-1", "amount": 12.5}"#).await;
    assert_eq!(status, 200, "{body} {}", weft.stderr());

    let (status, _, body) = post_json(&url, r#"{"amount": -5, "card": "4111-secret"}"#).await;
    assert_eq!(status, 422, "{body}");
    for expected in ["does not match its schema", "`id` is required"] {
        assert!(body.contains(expected), "{expected} in {body}");
    }
    // Three problems, two named.
    assert!(body.contains("(and 1 more)"), "{body}");
    assert!(!body.contains("4111-secret"), "values stay out: {body}");

    let (status, _, body) = post_json(&url, r#"{"id": "o-2", "amount": -5}"#).await;
    assert_eq!(status, 422, "{body}");
    assert!(body.contains("/amount: breaks `minimum`"), "{body}");

    let url = format!("http://127.0.0.1:{from_file}/orders");
    let (status, _, body) = post_json(&url, r#"{"sku": "ABC"}"#).await;
    assert_eq!(status, 200, "{body}");
    let (status, _, body) = post_json(&url, r#"{"sku": "abc"}"#).await;
    assert_eq!(status, 422, "{body}");
    assert!(body.contains("/sku: breaks `pattern`"), "{body}");

    let seen: Vec<(String, serde_json::Value)> = receiver
        .seen()
        .iter()
        .map(|s| (s.path.clone(), s.json()))
        .collect();
    assert_eq!(
        seen,
        [
            (
                "/inline".to_string(),
                serde_json::json!({"id": "o-1", "amount": 12.5})
            ),
            ("/file".to_string(), serde_json::json!({"sku": "ABC"})),
        ]
    );
}

#[test]
fn check_refuses_a_schema_it_cannot_use_where_it_is_written() {
    let dir = scratch();
    std::fs::write(
        dir.join("flows.yaml"),
        r#"flows:
  a:
    input: { stdin: {} }
    pipeline:
      - validate:
          schema: { $ref: "https://schemas.example.com/order.json" }
      - validate: { schema_file: /surely/not/here.json }
      - validate: {}
    output: { drop: {} }
"#,
    )
    .unwrap();
    let (status, _, stderr) = weft_cmd(&["check", "flows.yaml"], &dir);
    assert_eq!(status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("flows.yaml:6:19: flow `a`, pipeline[0].validate, field `schema`: not a usable JSON Schema: `$ref` to `https://schemas.example.com/order.json`, outside the schema"),
        "a remote $ref is not fetched: {stderr}"
    );
    assert!(
        stderr.contains("flows.yaml:7:34: flow `a`, pipeline[1].validate, field `schema_file`: /surely/not/here.json: "),
        "{stderr}"
    );
    assert!(
        stderr.contains("pipeline[2].validate, field `schema`: give the JSON Schema"),
        "{stderr}"
    );
}
