//! The `directory` input through the `weft` binary: whole files decoded by their extension
//! (JSON, XML, text) and moved after delivery; JSON lines with a bad line skipped and the file
//! deleted; hidden and unmatched files left alone; `after: keep` remembering what it read
//! across a restart and reading a file written again; and the conformance scenario: weft
//! SIGKILLed while a file's lines are being delivered loses none of them after a restart.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use crate::support::*;

fn write(path: &Path, text: &str) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, text).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn files_become_messages_and_are_moved_deleted_or_remembered_after_delivery() {
    let dir = scratch();
    let (whole, lines, kept) = (dir.join("whole"), dir.join("lines"), dir.join("kept"));
    write(&whole.join("order.json"), r#"{"order": 7}"#);
    write(&whole.join("order.xml"), "<order><id>8</id></order>");
    write(&whole.join("note.txt"), "call back");
    write(&whole.join(".half-written.json"), r#"{"order": "#);
    write(
        &lines.join("events.jsonl"),
        "{\"n\": 1}\nnot json\n\n{\"n\": 2}\n",
    );
    write(&lines.join("other.txt"), "not matched");
    write(&kept.join("rates.json"), r#"{"eur": 1}"#);
    // Files are taken once unchanged for `min_age`.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let receiver = Receiver::start().await;
    let config = format!(
        r#"
flows:
  whole:
    input:
      directory: {{ path: "{whole}", after: move, move_to: "{whole}/done", interval: 100ms, min_age: 200ms }}
    pipeline:
      - map: |
          . = {{ "value": ., "file": %file_name, "size": %file_size }}
    output:
      http_client: {{ url: "{to_whole}" }}
  lines:
    input:
      directory: {{ path: "{lines}", pattern: "*.jsonl", read: json_lines, interval: 100ms, min_age: 200ms }}
    pipeline:
      - map: |
          .line = %file_line
    output:
      http_client: {{ url: "{to_lines}" }}
  kept:
    input:
      directory: {{ path: "{kept}", after: keep, interval: 100ms, min_age: 200ms }}
    output:
      http_client: {{ url: "{to_kept}" }}
"#,
        whole = whole.display(),
        lines = lines.display(),
        kept = kept.display(),
        to_whole = receiver.url("/whole"),
        to_lines = receiver.url("/lines"),
        to_kept = receiver.url("/kept"),
    );
    let at = |path: &'static str| {
        let receiver = &receiver;
        move || {
            receiver
                .seen()
                .iter()
                .filter(|s| s.path == path)
                .map(|s| s.json())
                .collect::<Vec<_>>()
        }
    };
    let run_dir = scratch();
    let mut weft = Weft::start_in(run_dir.clone(), &config, &[], Stdio::null()).await;
    assert!(
        eventually(Duration::from_secs(10), || at("/whole")().len() == 3
            && at("/lines")().len() == 2
            && at("/kept")().len() == 1)
        .await,
        "{:?} {:?} {:?}\n{}",
        at("/whole")(),
        at("/lines")(),
        at("/kept")(),
        weft.stderr()
    );
    let mut wholes = at("/whole")();
    wholes.sort_by_key(|v| v["file"].as_str().unwrap().to_string());
    assert_eq!(
        wholes,
        vec![
            serde_json::json!({"value": "call back", "file": "note.txt", "size": 9}),
            serde_json::json!({"value": {"order": 7}, "file": "order.json", "size": 12}),
            serde_json::json!({"value": {"order": {"id": "8"}}, "file": "order.xml", "size": 25}),
        ]
    );
    // A file's messages go out side by side, as the flow's concurrency allows.
    let mut by_line = at("/lines")();
    by_line.sort_by_key(|v| v["line"].as_i64());
    assert_eq!(
        by_line,
        vec![
            serde_json::json!({"n": 1, "line": 1}),
            serde_json::json!({"n": 2, "line": 4})
        ]
    );
    // Moved, deleted, left alone.
    assert!(eventually(Duration::from_secs(5), || !whole.join("order.xml").exists()).await);
    for name in ["order.json", "order.xml", "note.txt"] {
        assert!(whole.join("done").join(name).exists(), "{name} moved");
    }
    assert!(whole.join(".half-written.json").exists());
    assert!(
        eventually(Duration::from_secs(5), || !lines
            .join("events.jsonl")
            .exists())
        .await
    );
    assert!(lines.join("other.txt").exists());
    assert!(
        weft.stderr().contains("line=2"),
        "the bad line is named: {}",
        weft.stderr()
    );
    assert!(kept.join("rates.json").exists());

    // Kept files are remembered across a restart; one written again is read again.
    weft.terminate();
    weft.wait(Duration::from_secs(10)).await;
    let weft = Weft::start_in(run_dir, &config, &[], Stdio::null()).await;
    // A new file shows the restarted weft has listed the directory.
    write(&kept.join("marker.json"), r#"{"marker": true}"#);
    assert!(
        eventually(Duration::from_secs(10), || at("/kept")()
            .iter()
            .any(|v| v["marker"] == true))
        .await,
        "{}",
        weft.stderr()
    );
    let rates = || {
        at("/kept")()
            .into_iter()
            .filter(|v| v.get("eur").is_some())
            .collect::<Vec<_>>()
    };
    assert_eq!(
        rates().len(),
        1,
        "read again after a restart: {}",
        weft.stderr()
    );
    write(&kept.join("rates.json"), r#"{"eur": 1.1}"#);
    assert!(
        eventually(Duration::from_secs(10), || rates().len() == 2).await,
        "{}",
        weft.stderr()
    );
    assert_eq!(rates()[1], serde_json::json!({"eur": 1.1}));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_line_is_lost_when_weft_is_killed_while_a_file_is_delivered() {
    let dir = scratch();
    let inbox = dir.join("inbox");
    let text: String = (1..=60).map(|n| format!("{{\"n\": {n}}}\n")).collect();
    write(&inbox.join("batch.jsonl"), &text);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let receiver = Receiver::start().await;
    receiver.set_delay(Duration::from_millis(40));
    let config = format!(
        r#"
flows:
  batch:
    input:
      directory: {{ path: "{inbox}", read: json_lines, interval: 100ms, min_age: 200ms }}
    concurrency: 4
    output:
      http_client: {{ url: "{to}" }}
"#,
        inbox = inbox.display(),
        to = receiver.url("/in"),
    );
    let run_dir = scratch();
    let mut weft = Weft::start_in(run_dir.clone(), &config, &[], Stdio::null()).await;
    kill_mid_way(&mut weft, &receiver, Duration::from_secs(10), 60).await;
    assert!(
        inbox.join("batch.jsonl").exists(),
        "not deleted before delivery"
    );
    let weft = Weft::start_in(run_dir, &config, &[], Stdio::null()).await;
    all_arrive(&receiver, "/n", 60, Duration::from_secs(20), &weft).await;
    assert!(
        eventually(Duration::from_secs(5), || !inbox
            .join("batch.jsonl")
            .exists())
        .await
    );
}

/// `move_to` on another file system (tmpfs here): the file is copied there, then removed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn files_are_moved_to_another_file_system() {
    let shm = Path::new("/dev/shm");
    if !shm.is_dir() {
        eprintln!("\n!!!! SKIPPED: no /dev/shm to move files across file systems\n");
        return;
    }
    let dir = scratch();
    let inbox = dir.join("inbox");
    let done = shm.join(format!(
        "weft-e2e-{}-{}",
        std::process::id(),
        fastrand::u32(..)
    ));
    write(&inbox.join("a.json"), r#"{"a": 1}"#);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let receiver = Receiver::start().await;
    let config = format!(
        r#"
flows:
  across:
    input:
      directory: {{ path: "{inbox}", after: move, move_to: "{done}", interval: 100ms, min_age: 200ms }}
    output:
      http_client: {{ url: "{to}" }}
"#,
        inbox = inbox.display(),
        done = done.display(),
        to = receiver.url("/in"),
    );
    let weft = Weft::start(&config).await;
    assert!(
        eventually(Duration::from_secs(10), || done.join("a.json").exists()).await,
        "{}",
        weft.stderr()
    );
    assert!(!inbox.join("a.json").exists());
    assert_eq!(
        std::fs::read_to_string(done.join("a.json")).unwrap(),
        r#"{"a": 1}"#
    );
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(receiver.seen().len(), 1, "delivered once");
    let _ = std::fs::remove_dir_all(&done);
}

#[test]
fn move_without_a_destination_is_refused_at_its_field() {
    let dir = scratch();
    std::fs::write(
        dir.join("weft.yaml"),
        "flows:\n  f:\n    input:\n      directory:\n        path: ./in\n        after: move\n    output:\n      drop: {}\n",
    )
    .unwrap();
    let (status, out, err) = weft_cmd(&["check", "weft.yaml"], &dir);
    assert!(!status.success(), "{out}{err}");
    let said = format!("{out}{err}");
    assert!(said.contains("move_to"), "{said}");
    assert!(said.contains("weft.yaml:5:"), "{said}");
}
