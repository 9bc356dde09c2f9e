//! Flows whose inputs end (`file`, `stdin`, `generate` with a count): weft drains and exits 0.
//! Also `${VAR}` substitution as the binary sees the environment.

use std::io::Write;
use std::process::Stdio;
use std::time::Duration;

use crate::support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn file_to_file_runs_to_the_end_and_exits_zero() {
    let dir = scratch();
    let input = dir.join("in.jsonl");
    let output = dir.join("out.jsonl");
    let lines: String = (0..500).map(|i| format!("{{\"i\": {i}}}\n")).collect();
    // Then three lines that are not messages (bad JSON, over 1 MiB, not UTF-8), then one more.
    let mut content = format!("{lines}not json\n{}\n", "x".repeat((1 << 20) + 10)).into_bytes();
    content.extend_from_slice(b"\xff\xfe\n{\"i\": 500}\n");
    std::fs::write(&input, content).unwrap();
    let config = format!(
        r#"
flows:
  copy:
    input: {{ file: {{ path: "{input}" }} }}
    pipeline:
      - map: .double = int!(.i) * 2
    output: {{ file: {{ path: "${{OUT_PATH}}" }} }}
"#,
        input = input.display()
    );
    let mut weft = Weft::spawn(
        &config,
        &[("OUT_PATH", output.to_str().unwrap())],
        Stdio::null(),
    );
    let status = weft.wait(Duration::from_secs(20)).await;
    assert!(status.success(), "{}", weft.stderr());
    let written = std::fs::read_to_string(&output).unwrap();
    let mut doubles: Vec<i64> = written
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["double"]
                .as_i64()
                .unwrap()
        })
        .collect();
    doubles.sort();
    assert_eq!(doubles, (0..=500).map(|i| i * 2).collect::<Vec<_>>());
    let stderr = weft.stderr();
    for line in ["line=501", "line=502", "line=503"] {
        assert!(
            stderr.contains(line),
            "bad line {line} is reported: {stderr}"
        );
    }
    assert!(stderr.contains("longer than 1048576 bytes"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stdin_lines_and_generate_count_end_by_themselves() {
    let config = r#"
flows:
  from_stdin:
    input: { stdin: {} }
    pipeline:
      - map: '. = { "line": . }'
    output: { stdout: {} }
  ticks:
    input:
      generate: { mapping: '.tick = true', interval: 10ms, count: 3 }
    output: { stdout: {} }
"#;
    let mut weft = Weft::spawn(config, &[], Stdio::piped());
    {
        let mut stdin = weft.child.stdin.take().unwrap();
        stdin.write_all(b"alpha\nbeta\n").unwrap();
    }
    let status = weft.wait(Duration::from_secs(20)).await;
    assert!(status.success(), "{}", weft.stderr());
    let out = weft.stdout();
    assert!(out.contains(r#"{"line":"alpha"}"#), "{out}");
    assert!(out.contains(r#"{"line":"beta"}"#), "{out}");
    assert_eq!(out.matches(r#"{"tick":true}"#).count(), 3, "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn generate_on_a_cron_schedule_and_the_log_processor() {
    let config = r#"
flows:
  cron:
    input:
      generate: { mapping: '.n = 1', cron: "* * * * * *", count: 2 }
    pipeline:
      - log: { level: warn, message: '"tick number " + to_string!(.n)' }
    output: { stdout: {} }
"#;
    let mut weft = Weft::spawn(config, &[], Stdio::null());
    let status = weft.wait(Duration::from_secs(10)).await;
    assert!(status.success(), "{}", weft.stderr());
    assert_eq!(
        weft.stdout().matches(r#"{"n":1}"#).count(),
        2,
        "{}",
        weft.stdout()
    );
    let stderr = weft.stderr();
    assert_eq!(
        stderr.matches("WARN weft::log: tick number 1").count(),
        2,
        "{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_input_file_is_an_error_exit() {
    let config = r#"
flows:
  missing:
    input: { file: { path: /nonexistent/weft/input.jsonl } }
    output: { drop: {} }
"#;
    let mut weft = Weft::spawn(config, &[], Stdio::null());
    let status = weft.wait(Duration::from_secs(10)).await;
    assert_eq!(status.code(), Some(1), "{}", weft.stderr());
    assert!(
        weft.stderr().contains("/nonexistent/weft/input.jsonl"),
        "{}",
        weft.stderr()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_stops_a_stdin_flow_whose_stdin_stays_open() {
    let config = "flows:\n  wait:\n    input: { stdin: {} }\n    output: { stdout: {} }\n";
    let mut weft = Weft::start_with(config, &[], Stdio::piped()).await;
    let _stdin_kept_open = weft.child.stdin.take().unwrap();
    weft.terminate();
    let status = weft.wait(Duration::from_secs(10)).await;
    assert!(status.success(), "{}", weft.stderr());
}
