//! `weft test` and `weft init`: flows tested like code, through the binary.

use std::time::Duration;

use crate::support::*;

fn repo_root() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// How many tests a `test result:` line says passed and failed.
fn tally(stdout: &str) -> (usize, usize) {
    let line = stdout
        .lines()
        .find(|l| l.starts_with("test result:"))
        .unwrap_or_else(|| panic!("no test result line:\n{stdout}"));
    let number = |word: &str| -> usize {
        let before = line.split(&format!(" {word}")).next().unwrap();
        before.rsplit(' ').next().unwrap().parse().unwrap()
    };
    (number("passed"), number("failed"))
}

/// Whether the databases and brokers the recipes use answer (said loudly when one does not;
/// a failure under `WEFT_REQUIRE_SERVICES=1`).
fn services_up() -> bool {
    [
        (
            "WEFT_POSTGRES_URL",
            "postgres://postgres@127.0.0.1:5432/test",
        ),
        ("WEFT_MYSQL_URL", "mysql://root@127.0.0.1:3306/test"),
        ("WEFT_REDIS_URL", "redis://127.0.0.1:6379"),
        ("WEFT_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/%2f"),
    ]
    .into_iter()
    // Each one is tried, so every missing service is named: the missing are counted.
    .filter(|(var, default)| {
        let url = std::env::var(var).unwrap_or_else(|_| (*default).into());
        let rest = url.split_once("://").map_or(url.as_str(), |(_, r)| r);
        let authority = rest.split('/').next().unwrap_or_default();
        let address = authority.rsplit('@').next().unwrap_or_default();
        let reached = std::net::ToSocketAddrs::to_socket_addrs(address)
            .map_err(|e| e.to_string())
            .and_then(|mut all| all.next().ok_or_else(|| "no address".to_string()))
            .and_then(|a| {
                std::net::TcpStream::connect_timeout(&a, Duration::from_secs(2))
                    .map_err(|e| e.to_string())
            });
        match reached {
            Ok(_) => false,
            Err(e) => {
                service_missing(var, &url, e);
                true
            }
        }
    })
    .count()
        == 0
}

/// The flow files under `dir` and its subdirectories (tests and fixtures left out).
fn flow_files(dir: &std::path::Path, found: &mut Vec<std::path::PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if path.is_dir() {
            flow_files(&path, found);
        } else if name.ends_with(".yaml")
            && !name.ends_with("_test.yaml")
            && !name.ends_with(".openapi.yaml")
        {
            found.push(path);
        }
    }
}

#[test]
fn every_example_and_recipe_has_a_test_and_they_pass() {
    let examples = repo_root().join("examples");
    let mut flows = Vec::new();
    flow_files(&examples, &mut flows);
    for flow in &flows {
        let test = flow.with_file_name(
            flow.file_name()
                .unwrap()
                .to_string_lossy()
                .replace(".yaml", "_test.yaml"),
        );
        assert!(test.is_file(), "{} has no test", flow.display());
    }
    // Each recipe has its page, and the index links it.
    let recipes = repo_root().join("docs/recipes");
    let index = std::fs::read_to_string(recipes.join("README.md")).unwrap();
    let mut recipe_count = 0;
    for flow in flows
        .iter()
        .filter(|f| f.parent().unwrap().ends_with("recipes"))
    {
        let stem = flow.file_stem().unwrap().to_string_lossy();
        let page = format!("{stem}.md");
        assert!(
            recipes.join(&page).is_file(),
            "recipe {stem} has no page docs/recipes/{page}"
        );
        // Its row in the index gives its size: the lines that are neither blank nor comments.
        let row = index
            .lines()
            .find(|l| l.contains(&format!("({page})")))
            .unwrap_or_else(|| panic!("docs/recipes/README.md does not link {page}"));
        let lines = std::fs::read_to_string(flow)
            .unwrap()
            .lines()
            .filter(|l| !l.trim().is_empty() && !l.trim_start().starts_with('#'))
            .count();
        assert!(
            row.trim_end().ends_with(&format!("| {lines} |")),
            "docs/recipes/README.md: the {stem} row should end with its {lines} lines: {row}"
        );
        recipe_count += 1;
    }
    assert!(recipe_count >= 8, "{recipe_count} recipes");
    // The recipes' tests use the local databases and brokers, as CI has them; without those
    // the examples beside them still run.
    let (with_recipes, args) = if services_up() {
        (true, vec!["test".to_string(), "examples".to_string()])
    } else {
        let mut args = vec!["test".to_string()];
        let mut top: Vec<String> = std::fs::read_dir(&examples)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with("_test.yaml"))
            .map(|n| format!("examples/{n}"))
            .collect();
        top.sort();
        args.extend(top);
        (false, args)
    };
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let (status, stdout, stderr) = weft_cmd(&args, &repo_root());
    assert!(status.success(), "{stdout}\n{stderr}");
    let (passed, failed) = tally(&stdout);
    assert_eq!(failed, 0, "{stdout}");
    let recipe_tests = if with_recipes { 2 * recipe_count } else { 0 };
    assert!(passed >= 8 + recipe_tests, "{stdout}");
    assert!(
        stdout
            .contains("test contacts › a contact the CRM refuses is dead-lettered at once ... ok"),
        "{stdout}"
    );
}

const FLOW: &str = r#"
flows:
  orders:
    input:
      http_server: { address: "127.0.0.1:1", path: /orders }
    pipeline:
      - filter: exists(.id)
      - map: |
          .id = to_string!(.id)
      - http:
          url: "${API}/customers/{{ .id }}"
          result: |
            .customer = %response.body
    outputs:
      - http_client: { url: "${API}/orders", retry: { max_attempts: 3 } }
      - stdout: {}
"#;

#[test]
fn failures_read_like_cargo_test_and_exit_1() {
    let dir = scratch();
    std::fs::write(dir.join("orders.yaml"), FLOW).unwrap();
    std::fs::write(
        dir.join("orders_test.yaml"),
        r#"
env: { API: "https://api.test" }
tests:
  - name: passes
    flow: orders
    messages:
      - value: { id: 1 }
    outputs:
      outputs[0].http_client: live
    http:
      - { method: GET, url: "https://api.test/customers/*", body: { name: Ada } }
      - { method: POST, url: https://api.test/orders, status: 201, times: 1 }
    expect:
      outputs:
        outputs[0].http_client:
          messages:
            - value: { id: "1", customer: { name: Ada } }
        outputs[1].stdout: { count: 1 }

  - name: wrong value and count
    flow: orders
    messages:
      - value: { id: 2 }
    http:
      - { url: "https://api.test/customers/2", body: { name: Bob } }
    expect:
      outputs:
        outputs[0].http_client:
          count: 2
          messages:
            - includes: { customer: { name: Eve } }

  - name: an unmocked call and an unmet mock
    flow: orders
    messages:
      - value: { id: 3 }
    http:
      - { url: "https://api.test/never", times: 1 }

  - name: a request answered 502 and a false condition
    flow: orders
    outputs:
      outputs[0].http_client: { fail: "the API said no" }
    http:
      - { url: "https://api.test/customers/4", body: { name: Dan } }
    requests:
      - body: { id: 4 }
        expect: { status: 200 }
    expect:
      outputs:
        outputs[1].stdout:
          messages:
            - condition: .customer.name == "Zed"

  - name: a rule with times answers that many calls, then the next rule answers
    flow: orders
    outputs:
      outputs[0].http_client: live
    http:
      - { url: "https://api.test/customers/*", body: {} }
      - { method: POST, url: https://api.test/orders, status: 503, times: 2 }
      - { method: POST, url: https://api.test/orders, status: 201 }
    messages:
      - value: { id: 6 }
    expect:
      outputs:
        outputs[0].http_client: { count: 1, attempts: 3 }

  - name: checks beyond the count still run
    flow: orders
    http:
      - { url: "https://api.test/customers/*", body: {} }
    messages:
      - value: { id: 7 }
    expect:
      outputs:
        outputs[1].stdout:
          count: 1
          messages:
            - includes: { id: "7" }
            - includes: { id: "8" }

  - name: retries are counted, and fast
    flow: orders
    outputs:
      outputs[0].http_client: { retry: "503" }
    http:
      - { url: "https://api.test/customers/5", body: {} }
    messages:
      - value: { id: 5 }
    expect:
      failed: 1
      outputs:
        outputs[0].http_client: { count: 0, attempts: 3 }
"#,
    )
    .unwrap();
    let (status, stdout, _) = weft_cmd(&["test", "orders.yaml"], &dir);
    assert_eq!(status.code(), Some(1), "{stdout}");
    assert_eq!(tally(&stdout), (3, 4), "{stdout}");
    for expected in [
        "test orders › passes ... ok",
        "test orders › wrong value and count ... FAILED",
        "test orders › retries are counted, and fast ... ok",
        "test orders › a rule with times answers that many calls, then the next rule answers ... ok",
        "output `outputs[1].stdout`, message 1: there is none",
        "---- orders_test.yaml: orders › wrong value and count ----",
        "output `outputs[0].http_client`: expected 2 message(s), got 1",
        "output `outputs[0].http_client`, message 0: does not include",
        "HTTP call without a mock: GET https://api.test/customers/3",
        "http mock * https://api.test/never: expected 1 call(s), got 0",
        "a message failed: flow `orders`",
        "request 0 (POST /orders): expected status 200, got 502",
        "the API said no",
        "output `outputs[1].stdout`, message 0: the condition `.customer.name == \"Zed\"` gave false",
    ] {
        assert!(
            stdout.contains(expected),
            "missing `{expected}` in:\n{stdout}"
        );
    }

    // A misspelt key is reported where it is, with a suggestion.
    std::fs::write(
        dir.join("typo_test.yaml"),
        "flows: [orders.yaml]\ntests:\n  - name: x\n    flow: orders\n    expcet: {}\n",
    )
    .unwrap();
    let (status, stdout, _) = weft_cmd(&["test", "typo_test.yaml"], &dir);
    assert_eq!(status.code(), Some(1));
    assert!(
        stdout.contains("typo_test.yaml:5:5:") && stdout.contains("did you mean `expect`"),
        "{stdout}"
    );
    // A flow without a test is an error, not a silent pass.
    std::fs::write(dir.join("lonely.yaml"), FLOW).unwrap();
    let (status, _, stderr) = weft_cmd(&["test", "lonely.yaml"], &dir);
    assert_eq!(status.code(), Some(1));
    assert!(stderr.contains("lonely.yaml has no test"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fixtures_are_recorded_from_the_real_api_then_replayed() {
    let api = Receiver::start().await;
    api.set_default(Reply {
        status: 200,
        headers: vec![("x-quota", "41".into())],
    });
    let dir = scratch();
    std::fs::write(dir.join("orders.yaml"), FLOW).unwrap();
    std::fs::write(
        dir.join("orders_test.yaml"),
        format!(
            r#"
env: {{ API: "{}" }}
tests:
  - name: the customer comes from the API
    flow: orders
    fixtures: orders.fixtures.json
    messages:
      - value: {{ id: 7 }}
      - value: {{ id: 8 }}
    expect:
      outputs:
        outputs[1].stdout:
          messages:
            - includes: {{ id: "7", customer: receiver says hi }}
            - includes: {{ id: "8", customer: receiver says hi }}
"#,
            api.url("")
        ),
    )
    .unwrap();
    let run = |args: &'static [&'static str]| {
        let dir = dir.clone();
        tokio::task::spawn_blocking(move || weft_cmd(args, &dir))
    };

    // Without the recording, the test says how to make it.
    let (status, stdout, _) = run(&["test"]).await.unwrap();
    assert_eq!(status.code(), Some(1));
    assert!(
        stdout.contains("record them with `weft test --record`"),
        "{stdout}"
    );
    assert!(api.seen().is_empty());

    let (status, stdout, _) = run(&["test", "--record"]).await.unwrap();
    assert!(status.success(), "{stdout}");
    let seen: Vec<String> = api.seen().iter().map(|s| s.path.clone()).collect();
    assert_eq!(seen, ["/customers/7", "/customers/8"]);
    let recorded: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("orders.fixtures.json")).unwrap())
            .unwrap();
    assert_eq!(recorded.as_array().unwrap().len(), 2, "{recorded:#}");
    assert_eq!(recorded[0]["method"], "GET");
    assert_eq!(recorded[0]["url"], api.url("/customers/7"));
    assert_eq!(recorded[0]["status"], 200);
    assert_eq!(recorded[0]["headers"]["x-quota"], "41");
    assert_eq!(recorded[0]["body"], "receiver says hi");

    // Replayed: the API is not called again.
    let (status, stdout, _) = run(&["test"]).await.unwrap();
    assert!(status.success(), "{stdout}");
    assert_eq!(api.seen().len(), 2);
}

#[test]
fn init_writes_a_flow_that_passes_its_own_test() {
    let dir = scratch();
    let (status, stdout, stderr) = weft_cmd(&["init", "flows", "--name", "contacts"], &dir);
    assert!(status.success(), "{stderr}");
    assert!(stdout.contains("next: weft test flows"), "{stdout}");
    let flows = dir.join("flows");
    for file in ["contacts.yaml", "contacts_test.yaml", "weft.schema.json"] {
        assert!(flows.join(file).is_file(), "{file}");
    }
    let (status, _, stderr) = weft_cmd(&["check", "flows/contacts.yaml"], &dir);
    assert!(status.success(), "{stderr}");
    let (status, stdout, _) = weft_cmd(&["test", "flows"], &dir);
    assert!(status.success(), "{stdout}");
    assert_eq!(tally(&stdout), (3, 0), "{stdout}");

    let (status, _, stderr) = weft_cmd(&["init", "flows", "--name", "contacts"], &dir);
    assert_eq!(status.code(), Some(1));
    assert!(stderr.contains("exists; not overwriting it"), "{stderr}");
    let (status, _, stderr) = weft_cmd(&["init", "--name", "Bad-Name"], &dir);
    assert_eq!(status.code(), Some(1));
    assert!(stderr.contains("snake_case"), "{stderr}");
}

/// `weft test` runs a polling input against mocked pages, checks what each call sent, and
/// tells calls to one URL apart by their bodies (SOAP operations).
#[test]
fn a_poll_is_tested_with_mocked_pages_and_calls_are_told_apart_by_what_they_send() {
    let dir = scratch();
    std::fs::write(
        dir.join("sync.yaml"),
        r#"
flows:
  sync:
    input:
      http_poll:
        url: "https://crm.test/contacts?since={{ %watermark }}"
        headers: { X-Api-Key: k1 }
        records: .items
        pagination: { cursor: { from: .next, param: cursor } }
        watermark: { value: .updated, initial: 0 }
    output:
      drop: {}
  soap:
    input:
      http_server: { address: "127.0.0.1:1" }
    pipeline:
      - http: { url: "https://erp.test/service", method: POST, format: text, result: '.answer = %response.body' }
    output:
      drop: {}
"#,
    )
    .unwrap();
    std::fs::write(
        dir.join("answers.json"),
        r#"[
  {"method": "POST", "url": "https://erp.test/service", "status": 200, "body": "created", "request": "<CreateOrder/>"},
  {"method": "POST", "url": "https://erp.test/service", "status": 200, "body": "cancelled", "request": "<CancelOrder/>"}
]"#,
    )
    .unwrap();
    std::fs::write(
        dir.join("sync_test.yaml"),
        r#"
tests:
  - name: two pages then the watermark
    flow: sync
    polls: 1
    http:
      - url: "https://crm.test/contacts?since=0&cursor=b"
        request: { headers: { x-api-key: k1 } }
        body: { items: [{ id: 3, updated: 300 }], next: null }
      - url: "https://crm.test/contacts?since=0"
        request: { headers: { x-api-key: k1 }, query: { since: "0" } }
        body: { items: [{ id: 1, updated: 100 }, { id: 2, updated: 200 }], next: b }
    expect:
      outputs:
        output.drop: { count: 3, messages: [{ includes: { id: 1 } }, { includes: { id: 2 } }, { includes: { id: 3 } }] }
      checkpoint: 300

  - name: a call that sends the wrong key is not answered
    flow: sync
    polls: 1
    http:
      - url: "https://crm.test/contacts*"
        request: { headers: { x-api-key: k2 } }
        body: { items: [] }

  - name: fixtures answer by what was sent
    flow: soap
    fixtures: answers.json
    messages:
      - value: "<CancelOrder/>"
      - value: "<CreateOrder/>"
    expect:
      outputs:
        output.drop:
          messages:
            - includes: { answer: cancelled }
            - includes: { answer: created }
"#,
    )
    .unwrap();
    let (status, stdout, stderr) = weft_cmd(&["test", "sync_test.yaml"], &dir);
    assert!(!status.success(), "{stdout}\n{stderr}");
    assert_eq!(tally(&stdout), (2, 1), "{stdout}\n{stderr}");
    assert!(
        stdout.contains("two pages then the watermark ... ok")
            && stdout.contains("fixtures answer by what was sent ... ok"),
        "{stdout}"
    );
    assert!(
        stdout.contains("header `x-api-key` is `k1`, not `k2`"),
        "{stdout}"
    );
}
