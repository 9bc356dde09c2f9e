//! `weft init`: a starter flow, its test and the config's JSON Schema, so a new project starts
//! from something that runs, passes its test and completes in an editor.

use std::path::{Path, PathBuf};

const FLOW: &str = r#"# yaml-language-server: $schema=./weft.schema.json
# A webhook that keeps contacts with an id, tidies them and posts them to an API.
#
#   weft run NAME.yaml
#   curl -s localhost:8080/NAME -H 'content-type: application/json' \
#        -d '{"id": 7, "email": "Ada@Example.COM"}'
#
# Its test: weft test NAME_test.yaml. Reference: weft schema, docs/components/.

flows:
  NAME:
    input:
      http_server:
        address: ${WEFT_ADDRESS:-127.0.0.1:8080}
        path: /NAME
    pipeline:
      - filter: exists(.id)
      - map: |
          .id = to_string!(.id)
          .email = downcase(string!(.email))
    output:
      http_client:
        url: https://api.example.com/contacts
        method: POST
        retry: { max_attempts: 5, initial_backoff: 500ms, max_backoff: 10s, max_elapsed: 1m }
"#;

const TEST: &str = r#"# The tests of NAME.yaml: weft test NAME_test.yaml
tests:
  - name: a contact is tidied and posted
    flow: NAME
    requests:
      - body: { id: 7, email: Ada@Example.COM }
        expect: { status: 200 }
    outputs:
      output.http_client: live            # the real output, answered by the mock below
    http:
      - { method: POST, url: "https://api.example.com/contacts", status: 201, times: 1 }
    expect:
      outputs:
        output.http_client:
          messages:
            - value: { id: "7", email: ada@example.com }

  - name: a message without an id is dropped
    flow: NAME
    messages:
      - value: { email: nobody@example.com }
    expect:
      outputs:
        output.http_client: { count: 0 }

  - name: an API that keeps failing is retried, then the message fails
    flow: NAME
    messages:
      - value: { id: 8, email: x@example.com }
    outputs:
      output.http_client: live
    http:
      - { url: "https://api.example.com/contacts", status: 503, body: { error: down }, times: 5 }
    expect:
      failed: 1
      outputs:
        output.http_client: { count: 0, attempts: 5 }
"#;

/// Writes `NAME.yaml`, `NAME_test.yaml` and `weft.schema.json` into `dir`; refuses to
/// overwrite a file that exists.
pub fn init(dir: &Path, name: &str) -> Result<Vec<PathBuf>, String> {
    let valid = name.starts_with(|c: char| c.is_ascii_lowercase())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if !valid {
        return Err(format!(
            "`{name}` is not a flow name: use snake_case (lowercase letters, digits, `_`)"
        ));
    }
    let files = [
        (dir.join(format!("{name}.yaml")), FLOW.replace("NAME", name)),
        (
            dir.join(format!("{name}_test.yaml")),
            TEST.replace("NAME", name),
        ),
        (
            dir.join("weft.schema.json"),
            crate::load::schema::generate(),
        ),
    ];
    for (path, _) in &files[..2] {
        if path.exists() {
            return Err(format!("{} exists; not overwriting it", path.display()));
        }
    }
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let mut written = Vec::new();
    for (path, text) in files {
        // The schema is the binary's own: a newer weft brings it up to date.
        std::fs::write(&path, text).map_err(|e| format!("{}: {e}", path.display()))?;
        written.push(path);
    }
    Ok(written)
}
