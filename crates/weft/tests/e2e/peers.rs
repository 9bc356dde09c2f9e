//! weft against real third-party servers installed from the registries by
//! `crates/weft/tests/peers/install.sh`: GraphQL Yoga (graphql-js), a spyne SOAP service and
//! Prism mocking an OpenAPI document (which validates each request against it). Each test
//! skips loudly when they are not installed, and fails instead under `WEFT_REQUIRE_SERVICES=1`.

use std::process::Stdio;
use std::time::Duration;

use crate::support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graphql_yoga_pages_by_relay_cursor_and_its_errors_fail_a_mutation() {
    let Some(yoga) = Peer::start(
        "GraphQL Yoga",
        "node",
        &["{scripts}/graphql_server.cjs", "{port}"],
    )
    .await
    else {
        return;
    };
    let api = format!("http://127.0.0.1:{}/graphql", yoga.port);
    let receiver = Receiver::start().await;
    let port = free_port();
    let config = format!(
        r#"
flows:
  items:
    concurrency: 1
    input:
      http_poll:
        url: "{api}"
        interval: 1h
        graphql:
          query: 'query Items($first: Int!, $after: String) {{ items(first: $first, after: $after) {{ edges {{ node {{ id name }} }} pageInfo {{ hasNextPage endCursor }} }} }}'
          variables: '{{ "first": 3 }}'
        records: map_values(array!(.data.items.edges)) -> |e| {{ e.node }}
        pagination:
          cursor: {{ from: .data.items.pageInfo.endCursor, variable: after }}
          stop: '!bool!(.data.items.pageInfo.hasNextPage)'
    output:
      http_client: {{ url: "{out}" }}
  add:
    input:
      http_server: {{ address: "127.0.0.1:{port}", errors: detailed }}
    output:
      graphql:
        url: "{api}"
        query: 'mutation Add($input: NewItem!) {{ addItem(input: $input) {{ id }} }}'
        variables: '{{ "input": {{ "name": .name }} }}'
"#,
        out = receiver.url("/items")
    );
    let weft = Weft::start(&config).await;
    assert!(
        eventually(Duration::from_secs(15), || receiver.seen().len() == 7).await,
        "{} {}",
        receiver.seen().len(),
        weft.stderr()
    );
    let ids: Vec<String> = receiver
        .seen()
        .iter()
        .map(|s| s.json()["id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(ids, ["1", "2", "3", "4", "5", "6", "7"]);

    let url = format!("http://127.0.0.1:{port}/");
    let (status, _, body) = post_json(&url, r#"{"name": "spanner"}"#).await;
    assert_eq!(status, 200, "{body} {}", weft.stderr());
    // The server's validation error in a 200 answer fails the message, with its message.
    let (status, _, body) = post_json(&url, r#"{"name": "  "}"#).await;
    assert_eq!(status, 502, "{body}");
    assert!(body.contains("name must not be empty"), "{body}");
    // A variable of the wrong type is refused by graphql-js itself.
    let (status, _, body) = post_json(&url, r#"{"name": 42}"#).await;
    assert_eq!(status, 502, "{body}");
    assert!(body.contains("String cannot represent"), "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spyne_service_answers_soap_1_1_and_1_2_and_its_faults_fail_the_message() {
    let Some(spyne) = Peer::start("spyne", "python", &["{scripts}/soap_server.py", "{port}"]).await
    else {
        return;
    };
    let api = format!("http://127.0.0.1:{}", spyne.port);
    let receiver = Receiver::start().await;
    let (port_11, port_12) = (free_port(), free_port());
    let config = format!(
        r#"
flows:
  place:
    input:
      http_server: {{ address: "127.0.0.1:{port_11}", errors: detailed }}
    output:
      soap:
        url: "{api}/soap11"
        action: PlaceOrder
        body: '<PlaceOrder xmlns="urn:weft:orders"><sku>{{{{ sku }}}}</sku><quantity>{{{{ quantity }}}}</quantity></PlaceOrder>'
  enrich:
    input:
      http_server: {{ address: "127.0.0.1:{port_12}", errors: detailed }}
    pipeline:
      - soap:
          url: "{api}/soap12"
          version: "1.2"
          action: PlaceOrder
          body: '<PlaceOrder xmlns="urn:weft:orders"><sku>{{{{ sku }}}}</sku><quantity>{{{{ quantity }}}}</quantity></PlaceOrder>'
          result: .order = %response.body.PlaceOrderResponse.PlaceOrderResult
    output:
      http_client: {{ url: "{out}" }}
"#,
        out = receiver.url("/orders")
    );
    let weft = Weft::start(&config).await;
    let place = format!("http://127.0.0.1:{port_11}/");
    let (status, _, body) = post_json(&place, r#"{"sku": "A&1", "quantity": 2}"#).await;
    assert_eq!(status, 200, "{body} {}", weft.stderr());
    let (status, _, body) = post_json(&place, r#"{"sku": "A1", "quantity": 0}"#).await;
    assert_eq!(status, 502, "{body}");
    assert!(
        body.contains("Client.InvalidQuantity") && body.contains("quantity must be positive"),
        "{body}"
    );

    let enrich = format!("http://127.0.0.1:{port_12}/");
    let (status, _, body) = post_json(&enrich, r#"{"sku": "B<2>", "quantity": 3}"#).await;
    assert_eq!(status, 200, "{body} {}", weft.stderr());
    assert_eq!(
        receiver.seen()[0].json(),
        serde_json::json!({"sku": "B<2>", "quantity": 3, "order": "order-B<2>-3"})
    );
    // A SOAP 1.2 fault names its code and subcode; in a pipeline it fails the message (502:
    // the service refused it).
    let (status, _, body) = post_json(&enrich, r#"{"sku": "B", "quantity": -1}"#).await;
    assert_eq!(status, 502, "{body}");
    assert!(
        body.contains("SOAP Fault soap12env:Sender/InvalidQuantity: quantity must be positive"),
        "{body}"
    );
    assert_eq!(receiver.seen().len(), 1);
}

/// A document Prism mocks: the server URL has a port variable, the operation takes an exploded
/// array, a comma-joined one and a deepObject in the query, and needs a bearer token and a
/// tenant key together.
const SHOP: &str = r##"openapi: 3.0.3
info: { title: Shop, version: "1" }
servers:
  - url: "http://127.0.0.1:{port}"
    variables:
      port: { default: "9" }
components:
  securitySchemes:
    bearerAuth: { type: http, scheme: bearer }
    tenantKey: { type: apiKey, in: header, name: X-Tenant-Key }
security:
  - bearerAuth: []
    tenantKey: []
paths:
  /products/{sku}/stock:
    get:
      operationId: getStock
      parameters:
        - { name: sku, in: path, required: true, schema: { type: string } }
        - name: warehouses
          in: query
          required: true
          schema: { type: array, minItems: 1, items: { type: string, enum: [north, south, east] } }
        - name: fields
          in: query
          explode: false
          schema: { type: array, items: { type: string } }
        - name: filter
          in: query
          style: deepObject
          schema:
            type: object
            additionalProperties: false
            properties: { min: { type: integer }, max: { type: integer } }
      responses:
        "200":
          description: stock
          content:
            application/json:
              schema:
                type: object
                required: [sku, available]
                properties:
                  sku: { type: string }
                  available: { type: integer }
              example: { sku: A1, available: 12 }
"##;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prism_accepts_what_weft_sends_for_an_openapi_operation() {
    let dir = scratch();
    std::fs::write(dir.join("shop.yaml"), SHOP).unwrap();
    let spec = dir.join("shop.yaml").display().to_string();
    let Some(prism) = Peer::start(
        "Prism",
        "node_modules/.bin/prism",
        &["mock", &spec, "-h", "127.0.0.1", "-p", "{port}"],
    )
    .await
    else {
        return;
    };
    let receiver = Receiver::start().await;
    let port = free_port();
    let config = format!(
        r#"
resources:
  auth:
    shop: {{ bearer: t0ken }}
    tenant: {{ api_key: {{ header: X-Tenant-Key, value: acme }} }}
flows:
  stock:
    input:
      http_server: {{ address: "127.0.0.1:{port}", errors: detailed }}
    pipeline:
      - openapi:
          spec: "{spec}"
          operation: getStock
          server_variables: {{ port: "{prism}" }}
          security: {{ bearerAuth: shop, tenantKey: tenant }}
          validate_response: true
          result: .stock = %response.body
    output:
      http_client: {{ url: "{out}" }}
"#,
        prism = prism.port,
        out = receiver.url("/stock")
    );
    let weft = Weft::start_in(dir.clone(), &config, &[], Stdio::null()).await;
    let url = format!("http://127.0.0.1:{port}/");
    let (status, _, body) = post_json(
        &url,
        r#"{"sku": "A1", "warehouses": ["north", "south"], "fields": ["sku", "available"], "filter": {"min": 1, "max": 5}}"#,
    )
    .await;
    assert_eq!(status, 200, "{body} {}", weft.stderr());
    assert_eq!(
        receiver.seen()[0].json()["stock"],
        serde_json::json!({"sku": "A1", "available": 12})
    );

    // Both schemes of the requirement must be mapped: one alone is a config error.
    std::fs::write(
        dir.join("one.yaml"),
        format!(
            r#"
flows:
  stock:
    input: {{ stdin: {{}} }}
    output:
      openapi:
        spec: "{spec}"
        operation: getStock
        server_variables: {{ port: "{}" }}
        security: {{ bearerAuth: shop }}
"#,
            prism.port
        ),
    )
    .unwrap();
    let (status, _, stderr) = weft_cmd(&["check", "one.yaml"], &dir);
    assert!(!status.success());
    assert!(stderr.contains("needs bearerAuth + tenantKey"), "{stderr}");
}
