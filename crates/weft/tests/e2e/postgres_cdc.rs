//! The `postgres_cdc` input against a private PostgreSQL started here with
//! `wal_level = logical` (the machine's own binaries; the shared server runs with `replica`),
//! logging in with SCRAM-SHA-256 (over TLS, checked against a CA made here): the slot and publication made by weft; inserts, updates,
//! deletes and a truncate of the published table as messages, in commit order, with values as
//! `sql_poll` gives them; changes to another table left out; the slot moved on only after
//! delivery; a clean stop; config errors at their fields; and the conformance scenario: weft
//! SIGKILLed while a transaction's rows are being delivered loses none after a restart.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use sqlx::{AssertSqlSafe, Connection, Row};

use crate::support::*;

const PASSWORD: &str = "cdc-scram-pw-77";

/// A PostgreSQL of the test's own, stopped when dropped.
struct PrivatePostgres {
    child: Child,
    port: u16,
}

impl Drop for PrivatePostgres {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl PrivatePostgres {
    /// A superuser URL (trust), for setting up.
    fn admin_url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    async fn exec(&self, sql: &str) {
        let mut c = sqlx::PgConnection::connect(&self.admin_url())
            .await
            .unwrap();
        sqlx::raw_sql(AssertSqlSafe(sql.to_string()))
            .execute(&mut c)
            .await
            .unwrap();
    }

    async fn scalar(&self, sql: &str) -> Option<String> {
        let mut c = sqlx::PgConnection::connect(&self.admin_url())
            .await
            .unwrap();
        sqlx::query(AssertSqlSafe(sql.to_string()))
            .fetch_optional(&mut c)
            .await
            .unwrap()
            .map(|row| row.get::<Option<String>, _>(0).unwrap_or_default())
    }
}

/// The directory of PostgreSQL's server programs, the newest installed.
fn pg_bin() -> Option<PathBuf> {
    let mut found: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path().join("bin")))
        .filter(|bin| bin.join("initdb").exists())
        .collect();
    found.sort_by_key(|p| {
        p.parent()
            .and_then(|v| v.file_name())
            .and_then(|v| v.to_str())
            .and_then(|v| v.parse::<u32>().ok())
    });
    found.pop()
}

/// `program` as the `postgres` user when this runs as root (PostgreSQL refuses root).
fn as_postgres(program: &Path) -> Command {
    let root = Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| o.stdout.starts_with(b"0\n"));
    if root {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(program);
        c
    } else {
        Command::new(program)
    }
}

/// With `tls`, the server takes TLS (a certificate of a CA made here, written to `ca.pem` in
/// the returned directory) and refuses weft's login without it.
async fn private_postgres(tls: bool) -> Option<(PrivatePostgres, PathBuf)> {
    let Some(bin) = pg_bin() else {
        let message = "no PostgreSQL server programs under /usr/lib/postgresql";
        if std::env::var("WEFT_REQUIRE_SERVICES").as_deref() == Ok("1") {
            panic!("{message}");
        }
        eprintln!("\n!!!! SKIPPED: {message}\n");
        return None;
    };
    let dir = scratch();
    let data = dir.join("pgdata");
    std::fs::create_dir_all(&data).unwrap();
    if tls {
        crate::tls::pki(&dir);
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(
            dir.join("server.key"),
            std::fs::Permissions::from_mode(0o600),
        )
        .unwrap();
    }
    let _ = Command::new("chown")
        .args(["-R", "postgres:postgres"])
        .arg(&dir)
        .status();
    let init = as_postgres(&bin.join("initdb"))
        .args(["-A", "trust", "-U", "postgres", "--no-sync", "-D"])
        .arg(&data)
        .stdout(Stdio::null())
        .output()
        .unwrap();
    assert!(
        init.status.success(),
        "initdb: {}",
        String::from_utf8_lossy(&init.stderr)
    );
    // SCRAM for weft's login (over TLS only, with `tls`), trust for the test's own.
    let weft_over = if tls { "hostssl" } else { "host" };
    let hba = format!(
        "hostnossl all cdc 127.0.0.1/32 {}\n\
         {weft_over} replication cdc 127.0.0.1/32 scram-sha-256\n\
         {weft_over} all cdc 127.0.0.1/32 scram-sha-256\n\
         host all all 127.0.0.1/32 trust\n\
         host replication all 127.0.0.1/32 trust\n",
        if tls { "reject" } else { "scram-sha-256" }
    );
    std::fs::write(data.join("pg_hba.conf"), hba).unwrap();
    let port = free_port();
    let mut command = as_postgres(&bin.join("postgres"));
    if tls {
        command
            .args(["-c", "ssl=on"])
            .arg("-c")
            .arg(format!(
                "ssl_cert_file={}",
                dir.join("server.pem").display()
            ))
            .arg("-c")
            .arg(format!("ssl_key_file={}", dir.join("server.key").display()));
    }
    let child = command
        .arg("-D")
        .arg(&data)
        .args(["-p", &port.to_string()])
        .args(["-c", "listen_addresses=127.0.0.1"])
        .args(["-c", "unix_socket_directories="])
        .args(["-c", "wal_level=logical"])
        .args(["-c", "max_replication_slots=4"])
        .args(["-c", "max_wal_senders=4"])
        .args(["-c", "fsync=off"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let pg = PrivatePostgres { child, port };
    let ready = eventually_async(Duration::from_secs(30), || async {
        sqlx::PgConnection::connect(&pg.admin_url()).await.is_ok()
    })
    .await;
    assert!(ready, "the private PostgreSQL did not start");
    Some((pg, dir))
}

async fn eventually_async<F, Fut>(timeout: Duration, mut f: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    while tokio::time::Instant::now() < deadline {
        if f().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    f().await
}

/// The tables and weft's login (SCRAM, REPLICATION, owner of the published table).
async fn set_up(pg: &PrivatePostgres) {
    pg.exec(&format!(
        "SET password_encryption = 'scram-sha-256';
         CREATE ROLE cdc LOGIN REPLICATION PASSWORD '{PASSWORD}';
         CREATE TABLE orders (id int PRIMARY KEY, total numeric, note text, doc jsonb, data bytea, at timestamptz);
         CREATE TABLE other (id int PRIMARY KEY);
         ALTER TABLE orders OWNER TO cdc;
         GRANT CREATE ON DATABASE postgres TO cdc;"
    ))
    .await;
}

fn config(pg: &PrivatePostgres, to: &str, query: &str, concurrency: u32) -> String {
    format!(
        r#"
resources:
  sql:
    shop: {{ url: "postgres://cdc:{PASSWORD}@127.0.0.1:{port}/postgres{query}" }}
flows:
  changes:
    input:
      postgres_cdc:
        database: shop
        slot: weft_orders
        publication: weft_orders
        tables: [public.orders]
    concurrency: {concurrency}
    pipeline:
      - map: |
          .lsn = %cdc_lsn
          .meta = {{ "op": %cdc_op, "table": %cdc_table }}
    output:
      http_client: {{ url: "{to}" }}
"#,
        port = pg.port,
    )
}

/// Waits until weft reads the slot (changes made before it exists are not captured).
async fn slot_in_use(pg: &PrivatePostgres, weft: &Weft) {
    let active = eventually_async(Duration::from_secs(20), || async {
        pg.scalar("SELECT active::text FROM pg_replication_slots WHERE slot_name = 'weft_orders'")
            .await
            .as_deref()
            == Some("true")
    })
    .await;
    assert!(active, "weft never read the slot\n{}", weft.stderr());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn row_changes_become_messages_and_the_slot_moves_on_after_delivery() {
    let Some((pg, dir)) = private_postgres(true).await else {
        return;
    };
    set_up(&pg).await;
    let receiver = Receiver::start().await;
    let tls = format!(
        "?sslmode=verify-full&sslrootcert={}",
        dir.join("ca.pem").display()
    );
    // One at a time: the order within a transaction holds too.
    let mut weft = Weft::start(&config(&pg, &receiver.url("/changes"), &tls, 1)).await;
    slot_in_use(&pg, &weft).await;
    pg.exec(
        "BEGIN;
         INSERT INTO orders VALUES (1, 12.50, 'first', '{\"tags\": [\"a\"]}', '\\x00ff80', '2026-12-06 02:00:00.5+00');
         INSERT INTO orders (id, total) VALUES (2, 7);
         COMMIT;
         INSERT INTO other VALUES (99);
         UPDATE orders SET note = 'changed' WHERE id = 1;
         DELETE FROM orders WHERE id = 2;
         TRUNCATE orders;",
    )
    .await;
    let seen = || receiver.seen().iter().map(|s| s.json()).collect::<Vec<_>>();
    assert!(
        eventually(Duration::from_secs(15), || seen().len() >= 5).await,
        "{:?}\n{}",
        seen(),
        weft.stderr()
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    let seen = seen();
    assert_eq!(seen.len(), 5, "the other table is left out: {seen:?}");
    let first_two = &seen[..2];
    assert_eq!(
        first_two[0]["after"],
        serde_json::json!({
            "id": 1, "total": 12.5, "note": "first", "doc": {"tags": ["a"]},
            "data": "AP+A", "at": "2026-12-06T02:00:00.500Z"
        })
    );
    assert_eq!(first_two[0]["op"], "insert");
    assert_eq!(first_two[0]["table"], "orders");
    assert_eq!(first_two[0]["schema"], "public");
    assert_eq!(
        first_two[0]["meta"],
        serde_json::json!({"op": "insert", "table": "orders"})
    );
    assert_eq!(first_two[1]["after"]["total"], 7);
    assert_eq!(
        first_two[0]["lsn"], first_two[1]["lsn"],
        "one transaction, one commit LSN"
    );
    // The statements after the COMMIT ran as one transaction (one simple query).
    assert_eq!(seen[2]["lsn"], seen[4]["lsn"]);
    assert_eq!(seen[2]["op"], "update");
    assert_eq!(seen[2]["after"]["note"], "changed");
    assert_eq!(seen[3]["op"], "delete");
    assert_eq!(
        seen[3]["before"],
        serde_json::json!({"id": 2}),
        "the key of the deleted row, and only the key"
    );
    assert_eq!(seen[3]["after"], serde_json::Value::Null);
    assert_eq!(
        seen[4],
        serde_json::json!({"op": "truncate", "tables": ["public.orders"], "lsn": seen[4]["lsn"], "meta": {"op": "truncate", "table": null}})
    );
    let confirmed_past = |lsn: String| {
        let pg = &pg;
        async move {
            pg.scalar(&format!(
                "SELECT (confirmed_flush_lsn >= '{lsn}'::pg_lsn)::text FROM pg_replication_slots WHERE slot_name = 'weft_orders'"
            ))
            .await
            .as_deref()
                == Some("true")
        }
    };
    // The slot moved past what was delivered (or past what did not concern it).
    let current = pg
        .scalar("SELECT pg_current_wal_lsn()::text")
        .await
        .unwrap();
    assert!(
        eventually_async(Duration::from_secs(15), || confirmed_past(current.clone())).await,
        "the slot did not move on\n{}",
        weft.stderr()
    );

    // While a transaction's delivery waits, the slot stays before it; once delivered, past it.
    receiver.hold();
    pg.exec("INSERT INTO orders (id) VALUES (10)").await;
    let written = pg
        .scalar("SELECT pg_current_wal_lsn()::text")
        .await
        .unwrap();
    assert!(
        eventually(Duration::from_secs(10), || receiver.seen().len() == 6).await,
        "{}",
        weft.stderr()
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        !confirmed_past(written.clone()).await,
        "the slot moved past a transaction still being delivered"
    );
    receiver.release();
    assert!(
        eventually_async(Duration::from_secs(15), || confirmed_past(written.clone())).await,
        "the slot did not move on after the delivery\n{}",
        weft.stderr()
    );
    assert!(!weft.stderr().contains(PASSWORD));
    // A clean stop while waiting for changes.
    weft.terminate();
    let status = weft.wait(Duration::from_secs(10)).await;
    assert!(status.success(), "{status:?}\n{}", weft.stderr());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_row_is_lost_when_weft_is_killed_while_a_transaction_is_delivered() {
    let Some((pg, _)) = private_postgres(false).await else {
        return;
    };
    set_up(&pg).await;
    let receiver = Receiver::start().await;
    receiver.set_delay(Duration::from_millis(40));
    let config = config(&pg, &receiver.url("/changes"), "", 4);
    let run_dir = scratch();
    let mut weft = Weft::start_in(run_dir.clone(), &config, &[], Stdio::null()).await;
    slot_in_use(&pg, &weft).await;
    pg.exec("INSERT INTO orders (id) SELECT generate_series(1, 60);")
        .await;
    kill_mid_way(&mut weft, &receiver, Duration::from_secs(15), 60).await;
    let weft = Weft::start_in(run_dir, &config, &[], Stdio::null()).await;
    all_arrive(&receiver, "/after/id", 60, Duration::from_secs(30), &weft).await;
}

#[test]
fn cdc_config_errors_are_named_at_their_fields() {
    let dir = scratch();
    std::fs::write(
        dir.join("weft.yaml"),
        "resources:\n  sql:\n    shop: { url: \"mysql://root@127.0.0.1/test\" }\n    pg: { url: \"postgres://u@127.0.0.1/db\" }\nflows:\n  a:\n    input:\n      postgres_cdc:\n        database: shop\n        slot: s\n        publication: p\n    output:\n      drop: {}\n  b:\n    input:\n      postgres_cdc:\n        database: pg\n        slot: Not-A-Slot\n        publication: p\n        tables: [a.b.c]\n    output:\n      drop: {}\n",
    )
    .unwrap();
    let (status, out, err) = weft_cmd(&["check", "weft.yaml"], &dir);
    let said = format!("{out}{err}");
    assert!(!status.success(), "{said}");
    assert!(said.contains("is not a PostgreSQL database"), "{said}");
    assert!(said.contains("weft.yaml:18:"), "slot located: {said}");
    assert!(said.contains("a.b.c"), "{said}");
}
