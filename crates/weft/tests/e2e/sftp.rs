//! The `sftp` output and input against a real SFTP server (`rclone serve sftp` from the peers,
//! over a directory, with its own ed25519 host key, a password and an authorized key):
//! messages written as files under templated paths (a dot-name renamed into place), files
//! taken and moved after delivery, a server whose host key is not the one pinned refused for
//! good with the fingerprint it offered, a clean stop; config errors at their fields; and the
//! conformance scenario: weft SIGKILLed while a file's lines are being delivered loses none of
//! them after a restart.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use russh::keys::ssh_key::LineEnding;
use russh::keys::ssh_key::private::Ed25519Keypair;
use russh::keys::{HashAlg, PrivateKey};

use crate::support::*;

const USER: &str = "weft";
const PASSWORD: &str = "weft-sftp-password-0123";

/// An ed25519 key made from a fixed seed (no randomness needed for a test key).
fn key(seed: u8) -> PrivateKey {
    PrivateKey::from(Ed25519Keypair::from_seed(&[seed; 32]))
}

fn write_private(key: &PrivateKey, path: &Path) -> PathBuf {
    std::fs::write(path, key.to_openssh(LineEnding::LF).unwrap().as_bytes()).unwrap();
    path.to_path_buf()
}

struct Server {
    _peer: Peer,
    port: u16,
    /// The host key as `host_key:` takes it: its fingerprint and its public key line.
    fingerprint: String,
    public: String,
    /// weft's own key, which the server lets in.
    client_key: PathBuf,
}

/// An SFTP server over `data`; `None` without the peers.
async fn rclone(data: &Path) -> Option<Server> {
    let keys = scratch();
    let host = key(1);
    let host_file = write_private(&host, &keys.join("host_key"));
    let client = key(2);
    let client_key = write_private(&client, &keys.join("id_ed25519"));
    let authorized = keys.join("authorized_keys");
    std::fs::write(&authorized, client.public_key().to_openssh().unwrap()).unwrap();
    let (host_file, authorized, data) = (
        host_file.display().to_string(),
        authorized.display().to_string(),
        data.display().to_string(),
    );
    let peer = Peer::start(
        "rclone",
        "venv/bin/rclone",
        &[
            "serve",
            "sftp",
            "--addr",
            "127.0.0.1:{port}",
            "--user",
            USER,
            "--pass",
            PASSWORD,
            "--key",
            &host_file,
            "--authorized-keys",
            &authorized,
            // Files the tests write straight into the directory show at once.
            "--dir-cache-time",
            "10ms",
            &data,
        ],
    )
    .await?;
    Some(Server {
        port: peer.port,
        _peer: peer,
        fingerprint: host.fingerprint(HashAlg::Sha256).to_string(),
        public: host.public_key().to_openssh().unwrap(),
        client_key,
    })
}

impl Server {
    /// A `server:` block logging in by password, the host key pinned by fingerprint.
    fn with_password(&self) -> String {
        format!(
            r#"{{ url: "sftp://{USER}@127.0.0.1:{}", password: "{PASSWORD}", host_key: "{}" }}"#,
            self.port, self.fingerprint
        )
    }

    /// A `server:` block logging in by key, the host key pinned by its public key.
    fn with_key(&self) -> String {
        format!(
            r#"{{ url: "sftp://{USER}@127.0.0.1:{}", private_key: "{}", host_key: "{}" }}"#,
            self.port,
            self.client_key.display(),
            self.public
        )
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_become_files_and_files_become_messages() {
    let data = scratch();
    let Some(server) = rclone(&data).await else {
        return;
    };
    let receiver = Receiver::start().await;
    let (port, impostor, known) = (free_port(), free_port(), free_port());
    let unknown_hosts = scratch().join("known_hosts");
    std::fs::write(&unknown_hosts, "").unwrap();
    let known_hosts = scratch().join("known_hosts");
    std::fs::write(
        &known_hosts,
        format!("[127.0.0.1]:{} {}\n", server.port, server.public),
    )
    .unwrap();
    let config = format!(
        r#"
flows:
  write:
    input:
      http_server: {{ address: "127.0.0.1:{port}", errors: detailed }}
    output:
      sftp:
        server: {password}
        path: "/up/orders/{{{{ .id }}}}.json"
  take:
    input:
      sftp:
        server: {key}
        path: /up/orders
        after: move
        move_to: /up/done
        interval: 100ms
        min_age: 1s
    pipeline:
      - map: |
          . = {{ "id": .id, "path": %sftp_path, "name": %sftp_name, "size": %sftp_size }}
    output:
      http_client: {{ url: "{to}" }}
  impostor:
    input:
      http_server: {{ address: "127.0.0.1:{impostor}", errors: detailed }}
    output:
      sftp:
        server: {{ url: "sftp://{USER}@127.0.0.1:{sftp}", password: "{PASSWORD}", known_hosts: "{unknown}" }}
        path: "/x/{{{{ .id }}}}"
  known:
    input:
      http_server: {{ address: "127.0.0.1:{known}", errors: detailed }}
    output:
      sftp:
        server: {{ url: "sftp://{USER}@127.0.0.1:{sftp}", password: "{PASSWORD}", known_hosts: "{known_file}" }}
        path: "/known/{{{{ .id }}}}.json"
"#,
        known_file = known_hosts.display(),
        password = server.with_password(),
        key = server.with_key(),
        sftp = server.port,
        unknown = unknown_hosts.display(),
        to = receiver.url("/taken"),
    );
    let mut weft = Weft::start(&config).await;
    let url = format!("http://127.0.0.1:{port}/");
    for id in 1..=3 {
        let (status, _, body) = post_json(&url, &format!(r#"{{"id": {id}}}"#)).await;
        assert!(status.is_success(), "{status} {body}\n{}", weft.stderr());
    }
    let taken = || {
        let mut seen: Vec<serde_json::Value> = receiver.seen().iter().map(|s| s.json()).collect();
        seen.sort_by_key(|v| v["id"].as_i64());
        seen
    };
    assert!(
        eventually(Duration::from_secs(20), || taken().len() == 3).await,
        "{:?}\n{}",
        taken(),
        weft.stderr()
    );
    assert_eq!(
        taken()[0],
        serde_json::json!({"id": 1, "path": "/up/orders/1.json", "name": "1.json", "size": 8})
    );
    // Moved to `done` once delivered, byte for byte, and no upload left half-way.
    let done = data.join("up/done");
    assert!(
        eventually(Duration::from_secs(10), || (1..=3)
            .all(|id| done.join(format!("{id}.json")).exists()))
        .await,
        "{}",
        weft.stderr()
    );
    assert_eq!(
        std::fs::read_to_string(done.join("2.json")).unwrap(),
        r#"{"id":2}"#
    );
    let left: Vec<_> = std::fs::read_dir(data.join("up/orders"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert!(left.is_empty(), "left behind: {left:?}");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(taken().len(), 3, "each file delivered once");

    // A server that is not in known_hosts is refused at once, its fingerprint named.
    let (status, _, body) =
        post_json(&format!("http://127.0.0.1:{impostor}/"), r#"{"id": 9}"#).await;
    assert_eq!(status.as_u16(), 502, "{body}");
    assert!(
        body.contains("is not in") && body.contains(&server.fingerprint),
        "{body}"
    );
    assert!(
        !data.join("x").exists(),
        "nothing written to an unknown server"
    );
    // One listed in known_hosts is let in.
    let (status, _, body) = post_json(&format!("http://127.0.0.1:{known}/"), r#"{"id": 5}"#).await;
    assert!(status.is_success(), "{status} {body}\n{}", weft.stderr());
    assert_eq!(
        std::fs::read_to_string(data.join("known/5.json")).unwrap(),
        r#"{"id":5}"#
    );
    // A message cannot lead its file out of the directory.
    let (status, _, body) = post_json(&url, r#"{"id": "../../escaped"}"#).await;
    assert_eq!(status.as_u16(), 502, "{body}");
    assert!(body.contains("holds `..`"), "{body}");
    assert!(!data.join("escaped.json").exists());
    let log = weft.stderr();
    assert!(!log.contains(PASSWORD), "the password in the log: {log}");
    assert!(!body.contains(PASSWORD));

    // A clean stop.
    weft.terminate();
    let status = weft.wait(Duration::from_secs(10)).await;
    assert!(status.success(), "{status:?}\n{}", weft.stderr());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_host_key_or_password_is_refused_and_a_path_written_again_is_replaced() {
    let data = scratch();
    let Some(server) = rclone(&data).await else {
        return;
    };
    let (pinned, password, twice) = (free_port(), free_port(), free_port());
    let other = key(3).fingerprint(HashAlg::Sha256).to_string();
    let config = format!(
        r#"
flows:
  pinned:
    input:
      http_server: {{ address: "127.0.0.1:{pinned}", errors: detailed }}
    output:
      sftp:
        server: {{ url: "sftp://{USER}@127.0.0.1:{port}", password: "{PASSWORD}", host_key: "{other}" }}
        path: "/x/{{{{ .id }}}}"
  password:
    input:
      http_server: {{ address: "127.0.0.1:{password}", errors: detailed }}
    output:
      sftp:
        server: {{ url: "sftp://{USER}@127.0.0.1:{port}", password: "not-the-password", host_key: "{fingerprint}" }}
        path: "/x/{{{{ .id }}}}"
        retry: {{ max_attempts: 2, initial_backoff: 10ms }}
  twice:
    input:
      http_server: {{ address: "127.0.0.1:{twice}", errors: detailed }}
    output:
      sftp:
        server: {{ url: "sftp://{USER}@127.0.0.1:{port}", password: "{PASSWORD}", host_key: "{fingerprint}" }}
        path: "same/{{{{ .id }}}}.json"
"#,
        port = server.port,
        fingerprint = server.fingerprint,
    );
    let weft = Weft::start(&config).await;
    let (status, _, body) = post_json(&format!("http://127.0.0.1:{pinned}/"), r#"{"id": 1}"#).await;
    assert_eq!(status.as_u16(), 502, "{body}");
    assert!(
        body.contains("is not the one in `host_key`") && body.contains(&server.fingerprint),
        "{body}"
    );
    let (status, _, body) =
        post_json(&format!("http://127.0.0.1:{password}/"), r#"{"id": 1}"#).await;
    assert!(status.as_u16() >= 500, "{status} {body}");
    assert!(body.contains("refused the login of `weft`"), "{body}");
    assert!(!data.join("x").exists(), "nothing written");
    let log = weft.stderr();
    assert!(!log.contains("not-the-password"), "{log}");

    // Writing a path again replaces the file (a relative path is under the login's home).
    for version in 1..=2 {
        let (status, _, body) = post_json(
            &format!("http://127.0.0.1:{twice}/"),
            &format!(r#"{{"id": 7, "v": {version}}}"#),
        )
        .await;
        assert!(status.is_success(), "{status} {body}\n{}", weft.stderr());
    }
    assert_eq!(
        std::fs::read_to_string(data.join("same/7.json")).unwrap(),
        r#"{"id":7,"v":2}"#
    );
    let names: Vec<_> = std::fs::read_dir(data.join("same"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names.len(), 1, "no upload left half-way: {names:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_line_is_lost_when_weft_is_killed_while_a_file_is_delivered() {
    let data = scratch();
    let text: String = (1..=60).map(|n| format!("{{\"n\": {n}}}\n")).collect();
    std::fs::create_dir_all(data.join("batches")).unwrap();
    std::fs::write(data.join("batches/b1.jsonl"), &text).unwrap();
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
      sftp:
        server: {key}
        path: /batches
        read: json_lines
        interval: 100ms
    concurrency: 4
    output:
      http_client: {{ url: "{to}" }}
"#,
        key = server.with_key(),
        to = receiver.url("/in"),
    );
    let run_dir = scratch();
    let mut weft = Weft::start_in(run_dir.clone(), &config, &[], Stdio::null()).await;
    kill_mid_way(&mut weft, &receiver, Duration::from_secs(10), 60).await;
    assert!(
        data.join("batches/b1.jsonl").exists(),
        "not deleted before delivery"
    );
    let weft = Weft::start_in(run_dir, &config, &[], Stdio::null()).await;
    all_arrive(&receiver, "/n", 60, Duration::from_secs(20), &weft).await;
    assert!(
        eventually(Duration::from_secs(5), || !data
            .join("batches/b1.jsonl")
            .exists())
        .await,
        "deleted after delivery\n{}",
        weft.stderr()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_still_being_uploaded_is_left_until_it_stands_still() {
    let data = scratch();
    std::fs::create_dir_all(data.join("drop")).unwrap();
    let Some(server) = rclone(&data).await else {
        return;
    };
    let receiver = Receiver::start().await;
    let config = format!(
        r#"
flows:
  take:
    input:
      sftp:
        server: {key}
        path: /drop
        read: lines
        interval: 100ms
        min_age: 1500ms
    output:
      http_client: {{ url: "{to}" }}
"#,
        key = server.with_key(),
        to = receiver.url("/lines"),
    );
    let weft = Weft::start(&config).await;
    // An upload that goes on for 3s, a line at a time, by an uploader that keeps the file's
    // original time (`sftp put -p`, `rsync -t`): its time says an hour old all along, so only
    // listings that see it unchanged for `min_age` may take it.
    let file = data.join("drop/slow.txt");
    for n in 1..=10 {
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&file)
            .unwrap();
        writeln!(f, "line {n}").unwrap();
        f.set_modified(std::time::SystemTime::now() - Duration::from_secs(3600))
            .unwrap();
        drop(f);
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(
            receiver.seen().is_empty(),
            "taken while still being written (after line {n})\n{}",
            weft.stderr()
        );
    }
    assert!(
        eventually(Duration::from_secs(10), || receiver.seen().len() == 10).await,
        "{:?}\n{}",
        receiver.seen().len(),
        weft.stderr()
    );
    assert!(
        eventually(Duration::from_secs(5), || !file.exists()).await,
        "deleted after delivery"
    );
}

#[test]
fn sftp_config_errors_are_named_at_their_fields() {
    let dir = scratch();
    std::fs::write(
        dir.join("weft.yaml"),
        "flows:\n  f:\n    input:\n      sftp:\n        server:\n          url: sftp://files.example\n          host_key: SHA256:abc\n        path: /in\n        after: move\n        move_to: /in/\n    output:\n      sftp:\n        server:\n          url: sftp://u:secret@files.example\n          password: x\n          private_key: /no/such/key\n        path: \"/out/{{ .id }}\"\n",
    )
    .unwrap();
    let (status, out, err) = weft_cmd(&["check", "weft.yaml"], &dir);
    let said = format!("{out}{err}");
    assert!(!status.success(), "{said}");
    assert!(said.contains("names no user"), "{said}");
    assert!(said.contains("gives no way to log in"), "{said}");
    assert!(said.contains("is the directory read"), "{said}");
    assert!(said.contains("holds a password"), "{said}");
    assert!(said.contains("/no/such/key"), "{said}");
    assert!(said.contains("weft.yaml:10:"), "move_to located: {said}");
    assert!(!said.contains("secret@"), "{said}");
}

/// The conformance scenario (`support::an_output_loses_nothing_to_a_kill`) for the output:
/// every message becomes a file even when weft is killed half-way.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_file_is_lost_when_weft_is_killed_while_writing() {
    let data = scratch();
    let Some(server) = rclone(&data).await else {
        return;
    };
    let output = format!(
        r#"sftp: {{ server: {}, path: "/out/{{{{ .n }}}}.json" }}"#,
        server.with_password()
    );
    an_output_loses_nothing_to_a_kill(&output, || numbered_files(&data.join("out"))).await;
}
