//! `weft check`: every error, located, with suggestions; exit 1 on any.

use crate::support::*;

#[test]
fn check_reports_all_four_kinds_of_error_with_line_and_column() {
    let dir = scratch();
    std::fs::write(
        dir.join("bad.yaml"),
        r#"flows:
  orders:
    input:
      http_server:
        address: 127.0.0.1:8080
        max_body_sise: 1MiB
    pipeline:
      - map: |
          .a = 1
          .b = upcase(.a
    output:
      http_clint:
        url: http://example.com
  other:
    input:
      file:
        path: ${WEFT_TEST_SURELY_UNSET}
    output: { drop: {} }
"#,
    )
    .unwrap();
    let (status, _, stderr) = weft_cmd(&["check", "bad.yaml"], &dir);
    assert_eq!(status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(
            "bad.yaml:6:9: flow `orders`, input.http_server, field `max_body_sise`: unknown field"
        ),
        "{stderr}"
    );
    assert!(stderr.contains("did you mean `max_body_size`?"), "{stderr}");
    assert!(
        stderr.contains("bad.yaml:10:25: flow `orders`, pipeline[0].map, syntax error"),
        "VRL error points into the block: {stderr}"
    );
    assert!(
        stderr.contains(
            "bad.yaml:12:7: flow `orders`, output.http_clint, unknown component `http_clint`"
        ),
        "{stderr}"
    );
    assert!(stderr.contains("did you mean `http_client`?"), "{stderr}");
    assert!(stderr.contains("bad.yaml:17:15: flow `other`, input.file, environment variable `WEFT_TEST_SURELY_UNSET` is not set"), "{stderr}");
    assert!(stderr.contains("4 error(s)"), "{stderr}");
}

#[test]
fn check_passes_the_quickstart() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let (status, stdout, stderr) = weft_cmd(&["check", "examples/quickstart.yaml"], &root);
    assert!(status.success(), "{stderr}");
    assert!(stdout.contains("2 flow(s) OK"), "{stdout}");
}

#[test]
fn pattern_errors_point_into_nested_steps_and_short_forms() {
    let dir = scratch();
    std::fs::write(
        dir.join("bad.yaml"),
        r#"flows:
  a:
    input: { stdin: {} }
    pipeline:
      - split: { pathh: .items }
      - delay: 5
      - aggregate: { count: 0, correlate: split, key: .k }
      - switch:
          - check: .a ==
            processors: [ { map: ".x = " } ]
    output:
      fallback:
        outputs: [ { drop: {} } ]
"#,
    )
    .unwrap();
    let (status, _, stderr) = weft_cmd(&["check", "bad.yaml"], &dir);
    assert_eq!(status.code(), Some(1), "{stderr}");
    for expected in [
        "bad.yaml:5:18: flow `a`, pipeline[0].split, field `pathh`: unknown field",
        "did you mean `path`?",
        "bad.yaml:6:16: flow `a`, pipeline[1].delay",
        "a duration needs a unit: write `5s` or `5ms`",
        "pipeline[2].aggregate, field `count`: at least 1",
        "pipeline[2].aggregate, field `key`: `correlate: split` groups by `%split.parent`",
        "bad.yaml:9:25: flow `a`, pipeline[3].switch, field `[0].check`: syntax error",
        "bad.yaml:10:39: flow `a`, pipeline[3].switch, field `[0].processors[0].map`: syntax error",
        "output.fallback, field `outputs`: name at least two outputs",
    ] {
        assert!(
            stderr.contains(expected),
            "missing `{expected}` in:\n{stderr}"
        );
    }
}

#[test]
fn server_settings_are_checked_and_shared_per_address() {
    let dir = scratch();
    std::fs::write(
        dir.join("bad.yaml"),
        r#"flows:
  a:
    input:
      http_server:
        address: 127.0.0.1:8443
        path: /a
        tls: { cert_file: /nonexistent/server.pem, key_file: /nonexistent/server.key }
    output: { drop: {} }
  b:
    input:
      http_server:
        address: 127.0.0.1:8080
        path: /b
        limits: { max_connections: 10 }
    output: { drop: {} }
  c:
    input:
      http_server:
        address: 127.0.0.1:8080
        path: /c
        limits: { max_connections: 20 }
    output: { drop: {} }
  d:
    input:
      http_server:
        address: 127.0.0.1:9090
        limits: { max_header_size: 1KiB }
        auth: { jwt: { jwks_url: "https://login.example.com/jwks" } }
    output: { drop: {} }
"#,
    )
    .unwrap();
    let (status, _, stderr) = weft_cmd(&["check", "bad.yaml"], &dir);
    assert_eq!(status.code(), Some(1), "{stderr}");
    for expected in [
        "bad.yaml:7:27: flow `a`, input.http_server, field `tls.cert_file`: /nonexistent/server.pem",
        "flow `d`, input.http_server, field `limits.max_header_size`: at least 8192 bytes",
        "bad.yaml:21:17: flow `c`, input.http_server, field `limits`: flow `b` serves 127.0.0.1:8080 with other `limits` settings",
        "field `auth.jwt.audience`: with `jwks_url`, name the `audience`",
    ] {
        assert!(
            stderr.contains(expected),
            "missing `{expected}` in:\n{stderr}"
        );
    }
}
