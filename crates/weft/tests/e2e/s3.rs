//! The `s3` output and input against a real S3 server (`rclone serve s3` from the peers, over
//! a directory, credentials required): messages written under templated keys, a big body as a
//! multipart upload, objects taken under a prefix and moved after delivery, a wrong secret
//! and a missing bucket failing for good with S3's reason and no secret shown, config errors
//! at their fields; and the conformance scenario: weft SIGKILLed while an object's lines are
//! being delivered loses none of them after a restart.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use crate::support::*;

const KEY_ID: &str = "weftkey";
const SECRET: &str = "weft-s3-secret-0123456789";

/// An S3 server over `data` (each directory there is a bucket); `None` without the peers.
async fn rclone(data: &Path) -> Option<Peer> {
    let auth = format!("{KEY_ID},{SECRET}");
    let data = data.display().to_string();
    Peer::start(
        "rclone",
        "venv/bin/rclone",
        &[
            "serve",
            "s3",
            "--auth-key",
            &auth,
            "--addr",
            "127.0.0.1:{port}",
            "--etag-hash",
            "MD5",
            &data,
        ],
    )
    .await
}

fn s3_settings(port: u16, bucket: &str, secret: &str) -> String {
    format!(
        r#"bucket: {bucket}
        endpoint: "http://127.0.0.1:{port}"
        credentials: {{ access_key_id: {KEY_ID}, secret_access_key: "{secret}" }}"#
    )
}

fn bucket(data: &Path, name: &str) -> PathBuf {
    let dir = data.join(name);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_become_objects_and_objects_become_messages() {
    let data = scratch();
    let drop = bucket(&data, "drop");
    let Some(server) = rclone(&data).await else {
        return;
    };
    let receiver = Receiver::start().await;
    let (port, wrong, missing) = (free_port(), free_port(), free_port());
    let config = format!(
        r#"
flows:
  write:
    input:
      http_server: {{ address: "127.0.0.1:{port}", errors: detailed, max_body_size: 8MiB }}
    output:
      s3:
        {settings}
        key: "in/{{{{ .id }}}}.json"
        part_size: 5MiB
  take:
    input:
      s3:
        {settings}
        prefix: in/
        after: move
        move_to: done/
        interval: 100ms
        # rclone writes an object into its file as it arrives (S3 itself shows it only whole).
        min_age: 500ms
    pipeline:
      - map: |
          . = {{ "id": .id, "size": length(to_string(.blob) ?? ""), "key": %s3_key, "bucket": %s3_bucket, "bytes": %s3_size }}
    output:
      http_client: {{ url: "{to}" }}
  wrong_secret:
    input:
      http_server: {{ address: "127.0.0.1:{wrong}", errors: detailed }}
    output:
      s3:
        {wrong_settings}
        key: "x/{{{{ .id }}}}"
  no_bucket:
    input:
      http_server: {{ address: "127.0.0.1:{missing}", errors: detailed }}
    output:
      s3:
        {missing_settings}
        key: "x/{{{{ .id }}}}"
"#,
        settings = s3_settings(server.port, "drop", SECRET),
        wrong_settings = s3_settings(server.port, "drop", "not-the-secret-at-all"),
        missing_settings = s3_settings(server.port, "nowhere", SECRET),
        to = receiver.url("/taken"),
    );
    let weft = Weft::start(&config).await;
    let url = format!("http://127.0.0.1:{port}/");
    for id in 1..=3 {
        let (status, _, body) = post_json(&url, &format!(r#"{{"id": {id}}}"#)).await;
        assert!(status.is_success(), "{status} {body}\n{}", weft.stderr());
    }
    // Over the part size: a multipart upload of two parts.
    let blob = "x".repeat(6 << 20);
    let (status, _, body) = post_json(&url, &format!(r#"{{"id": 4, "blob": "{blob}"}}"#)).await;
    assert!(status.is_success(), "{status} {body}\n{}", weft.stderr());

    let taken = || {
        let mut seen: Vec<serde_json::Value> = receiver.seen().iter().map(|s| s.json()).collect();
        seen.sort_by_key(|v| v["id"].as_i64());
        seen
    };
    assert!(
        eventually(Duration::from_secs(20), || taken().len() == 4).await,
        "{:?}\n{}",
        taken(),
        weft.stderr()
    );
    let seen = taken();
    assert_eq!(
        seen[0],
        serde_json::json!({"id": 1, "size": 0, "key": "in/1.json", "bucket": "drop", "bytes": 8})
    );
    assert_eq!(
        seen[3]["size"],
        6 << 20,
        "the multipart object arrived whole"
    );
    // Moved under `done/` once delivered, byte for byte.
    assert!(
        eventually(Duration::from_secs(10), || !drop.join("in/4.json").exists()).await,
        "{}",
        weft.stderr()
    );
    assert_eq!(
        std::fs::read_to_string(drop.join("done/2.json")).unwrap(),
        r#"{"id":2}"#
    );
    assert_eq!(
        std::fs::metadata(drop.join("done/4.json")).unwrap().len(),
        (6 << 20) + r#"{"blob":"","id":4}"#.len() as u64
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(taken().len(), 4, "each object delivered once");

    // Refusals fail at once, with S3's reason and never the secret.
    let wrong_url = format!("http://127.0.0.1:{wrong}/");
    let (status, _, body) = post_json(&wrong_url, r#"{"id": 9}"#).await;
    assert_eq!(status.as_u16(), 502, "{body}");
    assert!(
        body.contains("SignatureDoesNotMatch") || body.contains("AccessDenied"),
        "{body}"
    );
    let (status, _, body) =
        post_json(&format!("http://127.0.0.1:{missing}/"), r#"{"id": 9}"#).await;
    assert_eq!(status.as_u16(), 502, "{body}");
    assert!(body.contains("NoSuchBucket"), "{body}");
    let log = weft.stderr();
    for secret in [SECRET, "not-the-secret-at-all"] {
        assert!(!log.contains(secret), "a secret in the log: {log}");
        assert!(!body.contains(secret));
    }
    assert!(!log.contains("X-Amz-Signature"), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_line_is_lost_when_weft_is_killed_while_an_object_is_delivered() {
    let data = scratch();
    let drop = bucket(&data, "drop");
    let text: String = (1..=60).map(|n| format!("{{\"n\": {n}}}\n")).collect();
    std::fs::create_dir_all(drop.join("batches")).unwrap();
    std::fs::write(drop.join("batches/b1.jsonl"), &text).unwrap();
    let Some(server) = rclone(&data).await else {
        return;
    };
    let receiver = Receiver::start().await;
    receiver.set_delay(Duration::from_millis(40));
    let config = format!(
        r#"
flows:
  batch:
    input:
      s3:
        {settings}
        prefix: batches/
        read: json_lines
        interval: 100ms
    concurrency: 4
    output:
      http_client: {{ url: "{to}" }}
"#,
        settings = s3_settings(server.port, "drop", SECRET),
        to = receiver.url("/in"),
    );
    let run_dir = scratch();
    let mut weft = Weft::start_in(run_dir.clone(), &config, &[], Stdio::null()).await;
    kill_mid_way(&mut weft, &receiver, Duration::from_secs(10), 60).await;
    assert!(
        drop.join("batches/b1.jsonl").exists(),
        "not deleted before delivery"
    );
    let weft = Weft::start_in(run_dir, &config, &[], Stdio::null()).await;
    all_arrive(&receiver, "/n", 60, Duration::from_secs(20), &weft).await;
    assert!(
        eventually(Duration::from_secs(5), || !drop
            .join("batches/b1.jsonl")
            .exists())
        .await,
        "deleted after delivery\n{}",
        weft.stderr()
    );
}

#[test]
fn s3_config_errors_are_named_at_their_fields() {
    let dir = scratch();
    std::fs::write(
        dir.join("weft.yaml"),
        "flows:\n  f:\n    input:\n      s3:\n        bucket: b\n        prefix: in/\n        after: move\n        move_to: in/done/\n    output:\n      s3:\n        bucket: b\n        key: x\n        part_size: 1MiB\n",
    )
    .unwrap();
    let run = std::process::Command::new(weft_bin())
        .args(["check", "weft.yaml"])
        .current_dir(&dir)
        .env_remove("AWS_ACCESS_KEY_ID")
        .env_remove("AWS_SECRET_ACCESS_KEY")
        .output()
        .unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&run.stdout),
        String::from_utf8_lossy(&run.stderr)
    );
    assert!(!run.status.success(), "{said}");
    assert!(
        said.contains("move_to") && said.contains("lies under `prefix`"),
        "{said}"
    );
    assert!(said.contains("part_size"), "{said}");
    assert!(
        said.contains("credentials") && said.contains("AWS_ACCESS_KEY_ID"),
        "{said}"
    );
    assert!(said.contains("weft.yaml:8:"), "move_to located: {said}");
}

/// The conformance scenario (`support::an_output_loses_nothing_to_a_kill`) for the output:
/// every message becomes an object even when weft is killed half-way.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_object_is_lost_when_weft_is_killed_while_writing() {
    let data = scratch();
    let out = bucket(&data, "out");
    let Some(server) = rclone(&data).await else {
        return;
    };
    let output = format!(
        r#"s3: {{ bucket: out, endpoint: "http://127.0.0.1:{}", credentials: {{ access_key_id: {KEY_ID}, secret_access_key: "{SECRET}" }}, key: "n/{{{{ .n }}}}.json" }}"#,
        server.port
    );
    an_output_loses_nothing_to_a_kill(&output, || numbered_files(&out.join("n"))).await;
}
