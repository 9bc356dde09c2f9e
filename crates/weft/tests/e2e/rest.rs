//! `http_server` as a REST endpoint through the real binary: path parameters, several flows on
//! one path by method, answers the pipeline sets, and failures as `application/problem+json`.

use http::Method;

use crate::support::*;

fn problem(body: &str) -> serde_json::Value {
    let json: serde_json::Value =
        serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {body}"));
    assert!(
        json["type"]
            .as_str()
            .unwrap_or("")
            .starts_with("urn:weft:problem:"),
        "{body}"
    );
    assert!(json["title"].is_string(), "{body}");
    json
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resource_answers_get_put_delete_with_the_status_and_headers_the_flow_sets() {
    let db = scratch().join("items.db");
    let url = format!("sqlite://{}?mode=rwc", db.display());
    crate::sql::exec(
        &url,
        "CREATE TABLE items (id TEXT PRIMARY KEY, body TEXT NOT NULL)",
    )
    .await;
    let port = free_port();
    let config = format!(
        r#"
resources:
  sql:
    db: {{ url: "{url}" }}
flows:
  item_put:
    input:
      http_server: {{ address: "127.0.0.1:{port}", path: "/items/{{id}}", methods: [PUT], response: pipeline }}
    pipeline:
      - sql:
          database: db
          query: "SELECT count(*) AS n FROM items WHERE id = ?"
          args: "[%http.params.id]"
          result: '%existed = to_int!(%response.rows[0].n) > 0'
      - sql:
          database: db
          query: "INSERT INTO items (id, body) VALUES (?, ?) ON CONFLICT (id) DO UPDATE SET body = excluded.body"
          args: "[%http.params.id, encode_json(.)]"
          result: '%stored = true'
      - map: |
          %response.status = if %existed == true {{ 200 }} else {{ 201 }}
          %response.headers.Location = "/items/" + string!(%http.params.id)
          .id = %http.params.id
    output:
      drop: {{}}
  item_get:
    input:
      http_server: {{ address: "127.0.0.1:{port}", path: "/items/{{key}}", methods: [GET], response: pipeline }}
    pipeline:
      - sql:
          database: db
          query: "SELECT body FROM items WHERE id = ?"
          args: "[%http.params.key]"
          result: |
            %found = length!(%response.rows) > 0
            if %found == true {{ . = parse_json!(%response.rows[0].body) }}
      - map: |
          %response.headers."Cache-Control" = "no-store"
          if %found != true {{
            %response.status = 404
            %response.headers."Content-Type" = "application/problem+json"
            . = {{"title": "no such item", "status": 404}}
          }} else {{
            .id = %http.params.key
          }}
    output:
      drop: {{}}
  item_delete:
    input:
      http_server: {{ address: "127.0.0.1:{port}", path: "/items/{{id}}", methods: [DELETE], response: pipeline }}
    pipeline:
      - sql:
          database: db
          query: "DELETE FROM items WHERE id = ? RETURNING id"
          args: "[%http.params.id]"
          result: '%deleted = length!(%response.rows) > 0'
      - map: '%response.status = if %deleted == true {{ 204 }} else {{ 404 }}'
    output:
      drop: {{}}
  legacy:
    input:
      http_server: {{ address: "127.0.0.1:{port}", path: "/legacy/{{id}}", methods: [GET], response: pipeline }}
    pipeline:
      - map: |
          %response.headers."Content-Type" = "application/xml"
          . = {{"Customer": {{"@id": %http.params.id, "Name": "Ada"}}}}
    output:
      drop: {{}}
  files:
    input:
      http_server: {{ address: "127.0.0.1:{port}", path: "/files/{{*rest}}", methods: [GET], response: pipeline }}
    pipeline:
      - map: '. = {{"rest": %http.params.rest, "query": %http.query}}'
    output:
      drop: {{}}
"#
    );
    let weft = Weft::start(&config).await;
    let item = |id: &str| format!("http://127.0.0.1:{port}/items/{id}");

    let (status, headers, body) = request(
        Method::PUT,
        &item("a%201"),
        Some("application/json"),
        r#"{"name": "lamp"}"#,
    )
    .await;
    assert_eq!(status, 201, "{body}\n{}", weft.stderr());
    assert_eq!(headers["location"], "/items/a 1");
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&body).unwrap(),
        serde_json::json!({"name": "lamp", "id": "a 1"})
    );
    let (status, _, body) = request(
        Method::PUT,
        &item("a%201"),
        Some("application/json"),
        r#"{"name": "desk lamp"}"#,
    )
    .await;
    assert_eq!(status, 200, "{body}");

    // A GET has no body: an ordinary request, not a 400.
    let (status, headers, body) = get(&item("a%201")).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(headers["cache-control"], "no-store");
    assert_eq!(headers["content-type"], "application/json");
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&body).unwrap(),
        serde_json::json!({"name": "desk lamp", "id": "a 1"})
    );
    let (status, headers, body) = request(Method::HEAD, &item("a%201"), None, "").await;
    assert_eq!(
        (status.as_u16(), body.as_str()),
        (200, ""),
        "HEAD is GET without the body"
    );
    assert_eq!(headers["cache-control"], "no-store");

    let (status, headers, body) = get(&item("nothing")).await;
    assert_eq!(status, 404, "{body}");
    assert_eq!(headers["content-type"], "application/problem+json");
    assert!(body.contains("no such item"), "{body}");

    let (status, _, body) = request(Method::DELETE, &item("a%201"), None, "").await;
    assert_eq!((status.as_u16(), body.as_str()), (204, ""));
    let (status, _, _) = request(Method::DELETE, &item("a%201"), None, "").await;
    assert_eq!(status, 404);
    let (status, _, _) = get(&item("a%201")).await;
    assert_eq!(status, 404);

    // The method no flow on the path serves: 405 naming those that are.
    let (status, headers, body) = post_json(&item("x"), "{}").await;
    assert_eq!(status, 405, "{body}");
    assert_eq!(headers["allow"], "PUT, GET, DELETE, HEAD");
    assert_eq!(problem(&body)["status"], 405);

    let (status, _, body) = get(&format!("http://127.0.0.1:{port}/files/a/b.txt?v=2")).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&body).unwrap(),
        serde_json::json!({"rest": "a/b.txt", "query": "v=2"})
    );
    // The body follows the Content-Type the flow set.
    let (status, headers, body) = get(&format!("http://127.0.0.1:{port}/legacy/7")).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(headers["content-type"], "application/xml");
    assert!(
        body.contains(r#"<Customer id="7"><Name>Ada</Name></Customer>"#),
        "{body}"
    );
    let (status, headers, body) = get(&format!("http://127.0.0.1:{port}/elsewhere")).await;
    assert_eq!(status, 404);
    assert_eq!(headers["content-type"], "application/problem+json");
    assert_eq!(problem(&body)["type"], "urn:weft:problem:not-found");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routes_that_overlap_are_config_errors() {
    let dir = scratch();
    std::fs::write(
        dir.join("flows.yaml"),
        r#"
flows:
  one:
    input:
      http_server: { address: "127.0.0.1:18080", path: "/items/{id}", methods: [GET, PUT] }
    output:
      drop: {}
  two:
    input:
      http_server: { address: "127.0.0.1:18080", path: "/items/{key}", methods: [GET] }
    output:
      drop: {}
  three:
    input:
      http_server: { address: "127.0.0.1:18080", path: "/items/{*rest}", methods: [POST] }
    output:
      drop: {}
  four:
    input:
      http_server: { address: "127.0.0.1:18080", path: "/items/{id}", methods: [DELETE] }
    output:
      drop: {}
"#,
    )
    .unwrap();
    let (status, _, stderr) = weft_cmd(&["check", "flows.yaml"], &dir);
    assert!(!status.success(), "{stderr}");
    assert!(
        stderr.contains("flows.yaml:10:")
            && stderr.contains("flow `one` already serves GET /items/{id} on 127.0.0.1:18080"),
        "{stderr}"
    );
    assert!(
        stderr.contains("flows.yaml:15:") && stderr.contains("overlaps flow `one`"),
        "{stderr}"
    );
    assert!(
        !stderr.contains("flows.yaml:20:"),
        "DELETE on the same path is another route: {stderr}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failures_answer_problem_json_without_what_lies_behind_weft() {
    let receiver = Receiver::start().await;
    receiver.set_default(Reply::status(500));
    let closed = free_port();
    let port = free_port();
    let flows = |errors: &str, prefix: &str| {
        format!(
            r#"
  {prefix}_check:
    input:
      http_server: {{ address: "127.0.0.1:{port}", path: "/{prefix}/check", errors: {errors} }}
    pipeline:
      - map: 'assert!(is_string(.name), message: "name must be a string")'
    output:
      drop: {{}}
  {prefix}_failing:
    input:
      http_server: {{ address: "127.0.0.1:{port}", path: "/{prefix}/failing", errors: {errors} }}
    output:
      http_client:
        url: "{upstream}?api_key=${{UPSTREAM_KEY}}"
        retry: {{ max_attempts: 2, initial_backoff: 10ms }}
  {prefix}_down:
    input:
      http_server: {{ address: "127.0.0.1:{port}", path: "/{prefix}/down", errors: {errors} }}
    pipeline:
      - http:
          url: "http://127.0.0.1:{closed}/lookup"
          retry: {{ max_attempts: 2, initial_backoff: 10ms }}
    output:
      drop: {{}}
"#,
            upstream = receiver.url("/orders"),
        )
    };
    let config = format!(
        "flows:{}{}",
        flows("brief", "brief"),
        flows("detailed", "detailed")
    );
    let _weft = Weft::start_with(
        &config,
        &[("UPSTREAM_KEY", "k-53cr3t")],
        std::process::Stdio::null(),
    )
    .await;
    let url = |path: &str| format!("http://127.0.0.1:{port}{path}");

    // The caller's own mistake: 422 with the assertion's own message, as written.
    let (status, headers, body) = post_json(&url("/brief/check"), r#"{"name": 7}"#).await;
    assert_eq!(status, 422, "{body}");
    assert_eq!(headers["content-type"], "application/problem+json");
    let p = problem(&body);
    assert_eq!(p["type"], "urn:weft:problem:invalid-message");
    assert_eq!(p["detail"], "name must be a string");
    assert!(p["id"].as_str().is_some_and(|id| id.len() == 26), "{body}");
    assert!(
        p.get("component").is_none(),
        "no step path by default: {body}"
    );

    // An upstream that fails for good: 502, and nothing of it in the answer.
    let (status, _, body) = post_json(&url("/brief/failing"), r#"{"n": 1}"#).await;
    assert_eq!(status, 502, "{body}");
    let p = problem(&body);
    assert_eq!(p["type"], "urn:weft:problem:upstream-failed");
    for hidden in [
        "127.0.0.1",
        "orders",
        "k-53cr3t",
        "receiver says hi",
        "output",
    ] {
        assert!(!body.contains(hidden), "`{hidden}` in {body}");
    }
    // An upstream that cannot be reached: 503 with Retry-After.
    let (status, headers, body) = post_json(&url("/brief/down"), r#"{"n": 1}"#).await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(headers["retry-after"], "1");
    assert_eq!(
        problem(&body)["type"],
        "urn:weft:problem:upstream-unavailable"
    );
    assert!(!body.contains(&closed.to_string()), "{body}");

    // `errors: detailed` tells an internal caller what failed, where.
    let (status, _, body) = post_json(&url("/detailed/failing"), r#"{"n": 1}"#).await;
    assert_eq!(status, 502, "{body}");
    let p = problem(&body);
    assert_eq!(p["component"], "output.http_client");
    assert!(p["detail"].as_str().unwrap().contains("500"), "{body}");
    let (status, _, body) = post_json(&url("/detailed/down"), r#"{"n": 1}"#).await;
    assert_eq!(status, 503, "{body}");
    let p = problem(&body);
    assert_eq!(p["component"], "pipeline[0].http");
    assert!(
        p["detail"].as_str().unwrap().contains(&closed.to_string()),
        "{body}"
    );
    let (status, _, body) = post_json(&url("/detailed/check"), "{}").await;
    assert_eq!(status, 422, "{body}");
    assert_eq!(problem(&body)["component"], "pipeline[0].map");
}
