//! The `openapi` output and `weft openapi list` against a document and a real receiving server:
//! parameters and body from the message, validated before any call, security mapped to auth.

use std::process::Stdio;

use crate::support::*;

fn document(server: &str) -> String {
    format!(
        r##"openapi: 3.0.3
info: {{ title: CRM, version: "1" }}
servers:
  - url: "{server}"
components:
  securitySchemes:
    bearerAuth: {{ type: http, scheme: bearer }}
  schemas:
    Contact:
      type: object
      required: [email]
      properties:
        email: {{ type: string }}
        age: {{ type: integer, minimum: 0, nullable: true }}
security:
  - bearerAuth: []
paths:
  /teams/{{team}}/contacts:
    parameters:
      - {{ name: team, in: path, required: true, schema: {{ type: string }} }}
    post:
      operationId: createContact
      summary: Add a contact to a team
      parameters:
        - {{ name: notify, in: query, schema: {{ type: boolean }} }}
        - {{ name: X-Request-Id, in: header, required: true, schema: {{ type: string }} }}
      requestBody:
        required: true
        content:
          application/json:
            schema: {{ $ref: "#/components/schemas/Contact" }}
      responses:
        "201": {{ description: created }}
  /teams/{{team}}:
    get:
      operationId: getTeam
      parameters:
        - {{ name: team, in: path, required: true, schema: {{ type: string }} }}
      responses:
        "200":
          description: the team
          content:
            application/json:
              schema:
                type: object
                required: [name]
                properties: {{ name: {{ type: string }} }}
"##
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operation_is_called_with_parameters_and_refused_when_it_does_not_match() {
    let receiver = Receiver::start().await;
    let dir = scratch();
    std::fs::write(dir.join("crm.yaml"), document(&receiver.url("/api"))).unwrap();
    let port = free_port();
    let config = format!(
        r#"
resources:
  auth:
    crm: {{ bearer: t0ken }}
flows:
  contacts:
    input:
      http_server: {{ address: "127.0.0.1:{port}", errors: detailed }}
    output:
      openapi:
        spec: "{spec}"
        operation: createContact
        parameters: '{{ "team": .team, "notify": .notify, "X-Request-Id": .rid }}'
        body: .contact
        security: {{ bearerAuth: crm }}
"#,
        spec = dir.join("crm.yaml").display()
    );
    let weft = Weft::start_in(dir.clone(), &config, &[], Stdio::null()).await;
    let url = format!("http://127.0.0.1:{port}/");
    let (status, _, body) = post_json(
        &url,
        r#"{"team": "eng a", "notify": true, "rid": "r1", "contact": {"email": "a@example.com", "age": null}}"#,
    )
    .await;
    assert_eq!(status, 200, "{body} {}", weft.stderr());
    let seen = receiver.seen();
    assert_eq!(seen[0].path, "/api/teams/eng%20a/contacts?notify=true");
    assert_eq!(seen[0].headers["x-request-id"], "r1");
    assert_eq!(seen[0].headers["authorization"], "Bearer t0ken");
    assert_eq!(
        seen[0].json(),
        serde_json::json!({"email": "a@example.com", "age": null})
    );

    // Refused before any call, with every problem named.
    let (status, _, body) = post_json(
        &url,
        r#"{"team": "eng", "notify": "yes", "contact": {"age": -1}}"#,
    )
    .await;
    assert_eq!(status, 502, "{body}");
    for expected in [
        "does not match operation `createContact`",
        "parameter `X-Request-Id` is required",
        "parameter `notify`",
        "body `email` is required (schema /required)",
        "body /age: breaks `minimum`",
    ] {
        assert!(body.contains(expected), "{expected} in {body}");
    }
    assert!(!body.contains("yes"), "values stay out of reasons: {body}");
    assert_eq!(receiver.seen().len(), 1);

    // The operations, as weft reads them.
    let (status, stdout, stderr) = weft_cmd(&["openapi", "list", "crm.yaml"], &dir);
    assert!(status.success(), "{stderr}");
    assert_eq!(
        stdout.trim(),
        "getTeam  GET /teams/{team}\ncreateContact  POST /teams/{team}/contacts  Add a contact to a team"
    );

    // A misspelt operation is a config error with a suggestion.
    std::fs::write(
        dir.join("bad.yaml"),
        config.replace("operation: createContact", "operation: createContcat"),
    )
    .unwrap();
    let (status, _, stderr) = weft_cmd(&["check", "bad.yaml"], &dir);
    assert!(!status.success());
    assert!(stderr.contains("did you mean `createContact`?"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_processor_merges_an_answer_that_matches_the_document() {
    use axum::response::IntoResponse;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let api = format!("http://{}/api", listener.local_addr().unwrap());
    let app = axum::Router::new().fallback(|request: http::Request<axum::body::Body>| async move {
        let answer = if request.uri().path().ends_with("/eng") {
            r#"{"name":"Engineering"}"#
        } else {
            r#"{"nom":"?"}"#
        };
        ([("content-type", "application/json")], answer).into_response()
    });
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    let receiver = Receiver::start().await;
    let dir = scratch();
    std::fs::write(dir.join("crm.yaml"), document(&api)).unwrap();
    let port = free_port();
    let config = format!(
        r#"
resources:
  auth:
    crm: {{ bearer: t0ken }}
flows:
  enrich:
    input:
      http_server: {{ address: "127.0.0.1:{port}", errors: detailed }}
    pipeline:
      - openapi:
          spec: "{spec}"
          operation: getTeam
          security: {{ bearerAuth: crm }}
          validate_response: true
          result: .team_info = %response.body
    output:
      http_client: {{ url: "{out}" }}
"#,
        spec = dir.join("crm.yaml").display(),
        out = receiver.url("/out")
    );
    let weft = Weft::start_in(dir, &config, &[], Stdio::null()).await;
    let url = format!("http://127.0.0.1:{port}/");
    let (status, _, body) = post_json(&url, r#"{"team": "eng"}"#).await;
    assert_eq!(status, 200, "{body} {}", weft.stderr());
    assert_eq!(
        receiver.seen()[0].json(),
        serde_json::json!({"team": "eng", "team_info": {"name": "Engineering"}})
    );
    let (status, _, body) = post_json(&url, r#"{"team": "ops"}"#).await;
    assert_eq!(status, 502, "{body}");
    assert!(
        body.contains("the answer (200 OK) does not match operation `getTeam`"),
        "{body}"
    );
    assert_eq!(receiver.seen().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn styles_server_variables_and_several_schemes_at_once_reach_the_wire() {
    let receiver = Receiver::start().await;
    let base = receiver.url("");
    let dir = scratch();
    std::fs::write(
        dir.join("search.yaml"),
        format!(
            r##"openapi: 3.1.0
info: {{ title: Search, version: "1" }}
servers:
  - url: "{base}/{{version}}"
    variables:
      version: {{ default: v1, enum: [v1, v2] }}
components:
  securitySchemes:
    bearerAuth: {{ type: http, scheme: bearer }}
    appKey: {{ type: apiKey, in: query, name: app_key }}
paths:
  /shelves/{{ids}}/books:
    get:
      operationId: findBooks
      security:
        - bearerAuth: []
          appKey: []
      parameters:
        - {{ name: ids, in: path, required: true, style: matrix, explode: true, schema: {{ type: array }} }}
        - {{ name: tags, in: query, schema: {{ type: array }} }}
        - {{ name: fields, in: query, explode: false, schema: {{ type: array }} }}
        - {{ name: range, in: query, style: deepObject, schema: {{ type: object }} }}
        - {{ name: authors, in: query, style: pipeDelimited, explode: false, schema: {{ type: array }} }}
        - {{ name: X-Trace, in: header, schema: {{ type: array }} }}
      responses:
        "200": {{ description: books }}
"##
        ),
    )
    .unwrap();
    let port = free_port();
    let config = format!(
        r#"
resources:
  auth:
    lib: {{ bearer: t0ken }}
    app: {{ api_key: {{ query: app_key, value: s3cret }} }}
flows:
  books:
    input:
      http_server: {{ address: "127.0.0.1:{port}", errors: detailed }}
    output:
      openapi:
        spec: "{spec}"
        operation: findBooks
        server_variables: {{ version: v2 }}
        security: {{ bearerAuth: lib, appKey: app }}
"#,
        spec = dir.join("search.yaml").display()
    );
    let weft = Weft::start_in(dir.clone(), &config, &[], Stdio::null()).await;
    let url = format!("http://127.0.0.1:{port}/");
    let (status, _, body) = post_json(
        &url,
        r#"{"ids": [3, 4], "tags": ["a b", "c"], "fields": ["x", "y"], "range": {"from": 1, "to": 9}, "authors": ["le guin", "banks"], "X-Trace": ["t1", "t2"]}"#,
    )
    .await;
    assert_eq!(status, 200, "{body} {}", weft.stderr());
    let seen = receiver.seen();
    assert_eq!(
        seen[0].path,
        "/v2/shelves/;ids=3;ids=4/books?authors=le%20guin%7Cbanks&fields=x,y&range%5Bfrom%5D=1&range%5Bto%5D=9&tags=a%20b&tags=c&app_key=s3cret"
    );
    assert_eq!(seen[0].headers["authorization"], "Bearer t0ken");
    assert_eq!(seen[0].headers["x-trace"], "t1,t2");

    // Two schemes whose profiles set the same header are refused.
    std::fs::write(
        dir.join("twice.yaml"),
        config.replace("appKey: app", "appKey: lib"),
    )
    .unwrap();
    let (status, _, stderr) = weft_cmd(&["check", "twice.yaml"], &dir);
    assert!(!status.success());
    assert!(stderr.contains("both set `authorization`"), "{stderr}");

    // A server variable outside its enum is a config error naming the field.
    std::fs::write(
        dir.join("bad.yaml"),
        config.replace("version: v2", "version: v9"),
    )
    .unwrap();
    let (status, _, stderr) = weft_cmd(&["check", "bad.yaml"], &dir);
    assert!(!status.success());
    assert!(
        stderr.contains("server_variables") && stderr.contains("must be one of"),
        "{stderr}"
    );
}
