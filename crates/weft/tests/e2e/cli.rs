//! The command line itself: help with examples, shell completions, JSON logs.

use std::process::Stdio;
use std::time::Duration;

use crate::support::*;

#[test]
fn help_shows_examples_and_completions_are_generated() {
    let dir = scratch();
    let (status, stdout, _) = weft_cmd(&["--help"], &dir);
    assert!(status.success());
    assert!(
        stdout.contains("Examples:") && stdout.contains("weft check"),
        "{stdout}"
    );
    for sub in ["run", "check", "dlq", "completions"] {
        let (status, stdout, _) = weft_cmd(&[sub, "--help"], &dir);
        assert!(status.success(), "{sub}");
        assert!(
            stdout.contains("Example"),
            "`weft {sub} --help` has no example:\n{stdout}"
        );
    }
    for (shell, marker) in [
        ("bash", "complete -F _weft"),
        ("zsh", "#compdef weft"),
        ("fish", "complete -c weft"),
    ] {
        let (status, stdout, stderr) = weft_cmd(&["completions", shell], &dir);
        assert!(status.success(), "{shell}: {stderr}");
        assert!(stdout.contains(marker), "{shell}: {stdout}");
        assert!(
            stdout.contains("dlq") && stdout.contains("log-format"),
            "{shell}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn log_format_json_writes_one_object_per_line() {
    let port = free_port();
    let mut weft = Weft::start_with(
        &format!(
            "flows:\n  hooks:\n    input: {{ http_server: {{ address: \"127.0.0.1:{port}\" }} }}\n    output: {{ drop: {{}} }}\n"
        ),
        &[("WEFT_LOG_FORMAT", "json")],
        Stdio::null(),
    )
    .await;
    weft.terminate();
    weft.wait(Duration::from_secs(10)).await;
    let lines: Vec<String> = weft.stderr().lines().map(str::to_string).collect();
    assert!(lines.len() >= 2, "{lines:?}");
    for line in &lines {
        let event: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        assert!(
            event["level"].is_string() && event["message"].is_string(),
            "{line}"
        );
    }
    assert!(
        lines
            .iter()
            .any(|l| l.contains("\"message\":\"listening\"")),
        "{lines:?}"
    );
}
