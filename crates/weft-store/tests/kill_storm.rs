//! The store under a storm of SIGKILLs: a child process writes as fast as it can (enqueues in
//! concurrent groups, claims, acks, dead-letter moves, keys) and says on stdout what the store
//! confirmed; the parent kills it at random moments and starts it again on the same file, a
//! hundred times and more. Afterwards every confirmed message is still queued, dead-lettered,
//! or was being acked: nothing the store confirmed is missing after a restart.

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use weft_store::{DlqFilter, Durability, Failure, Store};

const CHILD: &str = "WEFT_STORE_KILL_STORM_CHILD";

/// The child's side: runs only when the parent test starts this binary with [`CHILD`] set (as
/// a plain test it returns at once).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_storm_child() {
    let Ok(path) = std::env::var(CHILD) else {
        return;
    };
    let tag = std::env::var("WEFT_STORE_KILL_STORM_TAG").unwrap();
    let store = Store::open_owner(Path::new(&path), Durability::Process)
        .await
        .unwrap();
    let mut writers = Vec::new();
    for w in 0..6 {
        let store = store.clone();
        let tag = tag.clone();
        writers.push(tokio::spawn(async move {
            for i in 0u64.. {
                let id = format!("{tag}-{w}-{i}");
                if store
                    .enqueue("f", &id, id.as_bytes(), b"{}", None, 1)
                    .await
                    .is_ok()
                {
                    println!("ok {id}");
                }
                if i % 3 == 0 {
                    let _ = store.kv_put("k", &id, b"v", None).await;
                }
            }
        }));
    }
    // A delivery worker: claims, then acks two in three and dead-letters the rest; says what
    // it is about to do first, so that an ack cut off by the kill is not counted as a loss.
    let worker = tokio::spawn(async move {
        for round in 0u64.. {
            let claimed = store
                .claim("f", 1 << 40, 32, Duration::from_secs(3600))
                .await
                .unwrap_or_default();
            for (n, q) in claimed.into_iter().enumerate() {
                if (round + n as u64) % 3 == 2 {
                    let _ = store
                        .dead_letter(q.seq, 1, Failure::from("storm".to_string()), 2)
                        .await;
                } else {
                    println!("acking {}", q.id);
                    let _ = store.ack(q.seq).await;
                }
            }
        }
    });
    for w in writers {
        let _ = w.await;
    }
    let _ = worker.await;
}

fn spawn_child(path: &Path, tag: usize) -> std::process::Child {
    Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "kill_storm_child",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD, path)
        .env("WEFT_STORE_KILL_STORM_TAG", tag.to_string())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

fn scratch() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("weft-store-storm-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir.join("weft.db")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_confirmed_is_lost_across_a_storm_of_sigkills() {
    let path = scratch();
    let mut confirmed = BTreeSet::new();
    let mut acking = BTreeSet::new();
    let mut rng = fastrand::Rng::with_seed(8);
    let started = Instant::now();
    let mut kills = 0;
    // About 150 kills, each at a random moment of a child's life (its start included).
    while kills < 150 && started.elapsed() < Duration::from_secs(90) {
        let mut child = spawn_child(&path, kills);
        let stdout = child.stdout.take().unwrap();
        let reader = std::thread::spawn(move || {
            let mut lines = Vec::new();
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                lines.push(line);
            }
            lines
        });
        tokio::time::sleep(Duration::from_millis(rng.u64(20..250))).await;
        child.kill().unwrap();
        child.wait().unwrap();
        kills += 1;
        for line in reader.join().unwrap() {
            // The test harness's own words start the child's first line.
            let line = line.trim_start_matches("test kill_storm_child ... ");
            if let Some(id) = line.strip_prefix("ok ") {
                confirmed.insert(id.to_string());
            } else if let Some(id) = line.strip_prefix("acking ") {
                acking.insert(id.to_string());
            }
        }
    }
    assert!(kills >= 100, "only {kills} kills in 90 s");
    assert!(
        confirmed.len() > 1_000,
        "the children confirmed only {} messages",
        confirmed.len()
    );

    let store = Store::open_owner(&path, Durability::Process).await.unwrap();
    let queued: BTreeSet<String> = store
        .claim("f", 1 << 41, u32::MAX, Duration::from_secs(1))
        .await
        .unwrap()
        .into_iter()
        .map(|q| q.id)
        .collect();
    let dead: BTreeSet<String> = store
        .dead_letters(&DlqFilter::default(), u32::MAX)
        .await
        .unwrap()
        .into_iter()
        .map(|d| d.id)
        .collect();
    let lost: Vec<&String> = confirmed
        .iter()
        .filter(|id| !queued.contains(*id) && !dead.contains(*id) && !acking.contains(*id))
        .collect();
    eprintln!(
        "kill storm: {kills} kills, {} confirmed, {} queued, {} dead-lettered, {} acked",
        confirmed.len(),
        queued.len(),
        dead.len(),
        acking.len()
    );
    assert!(
        lost.is_empty(),
        "{} confirmed messages are gone: {:?}",
        lost.len(),
        &lost[..lost.len().min(20)]
    );
}
