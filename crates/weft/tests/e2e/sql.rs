//! SQL connectors against the real PostgreSQL and MariaDB of this machine (and SQLite in a
//! file): the `sql` output inserting and upserting in batches, the `sql` processor looking rows
//! up, and `sql_poll` reading incrementally by a `(updated_at, id)` watermark that survives a
//! restart. Each test makes its own table and drops it.

use std::process::Stdio;
use std::time::Duration;

use sqlx::{AssertSqlSafe, Connection};

use crate::support::*;

/// The PostgreSQL database of the tests (`WEFT_POSTGRES_URL`), if reachable.
pub(crate) async fn postgres() -> Option<String> {
    reachable(
        "WEFT_POSTGRES_URL",
        "postgres://postgres@127.0.0.1:5432/test",
    )
    .await
}

/// The MariaDB/MySQL database of the tests (`WEFT_MYSQL_URL`), if reachable.
async fn mysql() -> Option<String> {
    reachable("WEFT_MYSQL_URL", "mysql://root@127.0.0.1:3306/test").await
}

/// A database the tests can reach, or `None` (said loudly) when its server is not running;
/// with `WEFT_REQUIRE_SERVICES=1` that is a failure instead.
async fn reachable(var: &str, default: &str) -> Option<String> {
    let url = std::env::var(var).unwrap_or_else(|_| default.to_string());
    let ok = if url.starts_with("postgres") {
        sqlx::PgConnection::connect(&url).await.map(|_| ()).err()
    } else {
        sqlx::MySqlConnection::connect(&url).await.map(|_| ()).err()
    };
    match ok {
        None => Some(url),
        Some(e) => {
            service_missing(var, &url, e);
            None
        }
    }
}

/// Runs `sql` (one or more statements) on the database at `url`.
pub(crate) async fn exec(url: &str, sql: &str) {
    let sql = AssertSqlSafe(sql.to_string());
    if url.starts_with("postgres") {
        let mut c = sqlx::PgConnection::connect(url).await.unwrap();
        sqlx::raw_sql(sql).execute(&mut c).await.unwrap();
    } else if url.starts_with("mysql") {
        let mut c = sqlx::MySqlConnection::connect(url).await.unwrap();
        sqlx::raw_sql(sql).execute(&mut c).await.unwrap();
    } else {
        let mut c = sqlx::SqliteConnection::connect(url).await.unwrap();
        sqlx::raw_sql(sql).execute(&mut c).await.unwrap();
    }
}

struct Dialect {
    url: String,
    /// `$1` or `?`.
    marks: [&'static str; 2],
    timestamp: &'static str,
    decimal: &'static str,
    /// An RFC 3339 UTC time as this database takes it.
    stamp: fn(&str) -> String,
}

async fn round_trip(d: Dialect) {
    let table = format!("contacts_{}_{}", std::process::id(), fastrand::u32(..));
    exec(
        &d.url,
        &format!(
            "CREATE TABLE {table} (id INTEGER PRIMARY KEY, email VARCHAR(200) NOT NULL, score {decimal}, updated_at {ts} NOT NULL)",
            decimal = d.decimal,
            ts = d.timestamp
        ),
    )
    .await;
    let receiver = Receiver::start().await;
    let (ingest, lookup) = (free_port(), free_port());
    let [m1, m2] = d.marks;
    let config = format!(
        r#"
resources:
  sql:
    db: {{ url: "{url}" }}
flows:
  ingest:
    input:
      http_server: {{ address: "127.0.0.1:{ingest}", errors: detailed }}
    output:
      sql:
        database: db
        table: {table}
        columns: {{ id: .id, email: .email, score: .score, updated_at: .at }}
        upsert_on: [id]
        batch: {{ count: 50, period: 5ms }}
  lookup:
    input:
      http_server: {{ address: "127.0.0.1:{lookup}", errors: detailed }}
    pipeline:
      - sql:
          database: db
          query: "SELECT email, score FROM {table} WHERE id = {m1}"
          args: "[.id]"
          result: .found = %response.rows[0]
    output:
      http_client: {{ url: "{found}" }}
  changes:
    concurrency: 1
    input:
      sql_poll:
        database: db
        query: "SELECT id, email, updated_at FROM {table} WHERE (updated_at, id) > ({m1}, {m2}) ORDER BY updated_at, id LIMIT 2"
        watermark: {{ columns: [updated_at, id], initial: ["2000-01-01T00:00:00Z", 0] }}
        interval: 200ms
    output:
      http_client: {{ url: "{changes}" }}
"#,
        url = d.url,
        found = receiver.url("/found"),
        changes = receiver.url("/changes"),
    );
    let dir = scratch();
    let mut weft = Weft::start_in(dir.clone(), &config, &[], Stdio::null()).await;

    // Three contacts, two of them at the same instant, written concurrently (one batch or more).
    let url = format!("http://127.0.0.1:{ingest}/");
    let at = |t: &str| (d.stamp)(t);
    let posts = [
        format!(
            r#"{{"id": 1, "email": "ada@example.com", "score": 17.5, "at": "{}"}}"#,
            at("2024-05-01T10:00:00Z")
        ),
        format!(
            r#"{{"id": 2, "email": "bob@example.com", "score": null, "at": "{}"}}"#,
            at("2024-05-01T10:00:00Z")
        ),
        format!(
            r#"{{"id": 3, "email": "cy@example.com", "score": 3, "at": "{}"}}"#,
            at("2024-05-01T11:00:00Z")
        ),
    ];
    let answers = futures_util::future::join_all(posts.iter().map(|p| post_json(&url, p))).await;
    for (status, _, body) in answers {
        assert_eq!(status, 200, "{body} {}", weft.stderr());
    }
    let ids = |path: &str| -> Vec<i64> {
        receiver
            .seen()
            .iter()
            .filter(|s| s.path == path)
            .map(|s| s.json()["id"].as_i64().unwrap())
            .collect()
    };
    assert!(
        eventually(Duration::from_secs(10), || ids("/changes").len() == 3).await,
        "{:?} {}",
        ids("/changes"),
        weft.stderr()
    );
    // In watermark order; rows sharing a timestamp neither skipped nor repeated.
    assert_eq!(ids("/changes"), [1, 2, 3]);

    // The lookup merges the row: a decimal as a number, a NULL as null.
    let lookup_url = format!("http://127.0.0.1:{lookup}/");
    let (status, _, body) = post_json(&lookup_url, r#"{"id": 1}"#).await;
    assert_eq!(status, 200, "{body} {}", weft.stderr());
    let (status, _, body) = post_json(&lookup_url, r#"{"id": 2}"#).await;
    assert_eq!(status, 200, "{body}");
    let found: Vec<serde_json::Value> = receiver
        .seen()
        .iter()
        .filter(|s| s.path == "/found")
        .map(|s| s.json())
        .collect();
    assert_eq!(
        found,
        [
            serde_json::json!({"id": 1, "found": {"email": "ada@example.com", "score": 17.5}}),
            serde_json::json!({"id": 2, "found": {"email": "bob@example.com", "score": null}}),
        ]
    );

    // A row the database refuses (NOT NULL) fails its own message only, with the reason.
    let bad = format!(
        r#"{{"id": 9, "email": null, "score": 1, "at": "{}"}}"#,
        at("2024-05-01T12:00:00Z")
    );
    let good = format!(
        r#"{{"id": 4, "email": "dee@example.com", "score": 1, "at": "{}"}}"#,
        at("2024-05-01T12:00:00Z")
    );
    let (a, b) = tokio::join!(post_json(&url, &bad), post_json(&url, &good));
    assert_eq!(a.0, 502, "{}", a.2);
    assert!(a.2.contains("database `db`"), "{}", a.2);
    assert_eq!(b.0, 200, "{}", b.2);

    // Restarted: the watermark is where it was, so only what changed since is read — an
    // upsert of contact 1 and the new contact 4.
    weft.terminate();
    weft.wait(Duration::from_secs(10)).await;
    let before = ids("/changes").len();
    let weft = Weft::start_in(dir, &config, &[], Stdio::null()).await;
    let update = format!(
        r#"{{"id": 1, "email": "ada@new.example.com", "score": 18, "at": "{}"}}"#,
        at("2024-05-02T09:00:00Z")
    );
    let (status, _, body) = post_json(&url, &update).await;
    assert_eq!(status, 200, "{body}");
    assert!(
        eventually(Duration::from_secs(10), || ids("/changes").len() > before
            && ids("/changes").last() == Some(&1))
        .await,
        "{:?} {}",
        ids("/changes"),
        weft.stderr()
    );
    let changes = ids("/changes");
    // Contact 4 was read before or after the restart, once; contact 1 again after its update.
    assert_eq!(
        changes.iter().filter(|i| **i == 4).count(),
        1,
        "{changes:?}"
    );
    assert_eq!(
        changes.iter().filter(|i| **i == 1).count(),
        2,
        "{changes:?}"
    );
    assert_eq!(changes.len(), 5, "{changes:?}");
    drop(weft);
    exec(&d.url, &format!("DROP TABLE {table}")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_insert_upsert_lookup_and_incremental_poll() {
    let Some(url) = postgres().await else {
        return;
    };
    round_trip(Dialect {
        url,
        marks: ["$1", "$2"],
        timestamp: "TIMESTAMPTZ",
        decimal: "NUMERIC(10, 2)",
        stamp: str::to_string,
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mariadb_insert_upsert_lookup_and_incremental_poll() {
    let Some(url) = mysql().await else {
        return;
    };
    round_trip(Dialect {
        url,
        marks: ["?", "?"],
        timestamp: "DATETIME(6)",
        decimal: "DECIMAL(10, 2)",
        // MySQL reads no offset: `2024-05-01 10:00:00`.
        stamp: |t| t.trim_end_matches('Z').replace('T', " "),
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_insert_upsert_lookup_and_incremental_poll() {
    let path = scratch().join("crm.db");
    round_trip(Dialect {
        url: format!("sqlite://{}?mode=rwc", path.display()),
        marks: ["?", "?"],
        timestamp: "TEXT",
        decimal: "REAL",
        stamp: str::to_string,
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_notifications_become_messages() {
    let Some(url) = postgres().await else {
        return;
    };
    let channel = format!("weft_{}_{}", std::process::id(), fastrand::u32(..));
    let receiver = Receiver::start().await;
    let config = format!(
        r#"
resources:
  sql:
    pg: {{ url: "{url}" }}
flows:
  changes:
    concurrency: 1
    input:
      postgres_listen: {{ database: pg, channels: [{channel}] }}
    pipeline:
      - map: 'if is_object(.) {{ .channel = %postgres.channel }}'
    output:
      http_client: {{ url: "{out}" }}
"#,
        out = receiver.url("/changed")
    );
    let weft = Weft::start(&config).await;
    // Notify until the listener is up (what is sent before is lost, as PostgreSQL promises).
    let notify = |payload: String| {
        let url = url.clone();
        let channel = channel.clone();
        async move {
            exec(&url, &format!("SELECT pg_notify('{channel}', '{payload}')")).await;
        }
    };
    warm_up(&receiver, &weft, |k| {
        notify(format!(r#"{{"warmup": {k}}}"#))
    })
    .await;
    let before = receiver.seen().len();
    notify(r#"{"id": 7, "op": "update"}"#.into()).await;
    notify("plain text".into()).await;
    assert!(
        eventually(Duration::from_secs(5), || receiver.seen().len()
            >= before + 2)
        .await,
        "{}",
        weft.stderr()
    );
    let seen = receiver.seen();
    assert_eq!(
        seen[before].json(),
        serde_json::json!({"id": 7, "op": "update", "channel": channel})
    );
    assert_eq!(seen[before + 1].body, "plain text");
}

/// A database that is down is reported with its cause, at once: not as the pool's timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_that_is_down_is_reported_with_its_cause_at_once() {
    let (port, down) = (free_port(), free_port());
    let config = format!(
        r#"
resources:
  sql:
    db: {{ url: "postgres://weft@127.0.0.1:{down}/test", connect_timeout: 10s }}
flows:
  ingest:
    delivery: durable
    input:
      http_server: {{ address: "127.0.0.1:{port}", errors: detailed }}
    output:
      sql:
        database: db
        table: anything
        columns: {{ id: .id }}
        retry: {{ max_attempts: 1 }}
"#
    );
    let weft = Weft::start(&config).await;
    let started = std::time::Instant::now();
    let (status, _, _) = post_json(&format!("http://127.0.0.1:{port}/"), r#"{"id": 1}"#).await;
    assert_eq!(status, 202);
    weft.metric_eventually(r#"weft_dead_letters{flow="ingest"} 1"#)
        .await
        .unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "not the pool's 10 s timeout: {:?}",
        started.elapsed()
    );
    let (_, list) = weft
        .admin_json(http::Method::GET, "/api/v1/flows/ingest/dlq")
        .await;
    let reason = list[0]["reason"].as_str().unwrap();
    assert!(
        reason.contains("cannot connect") && reason.contains("refused"),
        "{reason}"
    );
}

/// In `columns` mode values follow the column: text into PostgreSQL `char(n)`, an RFC 3339
/// time (a VRL timestamp) into MariaDB `DATETIME`; a value that fits no column is reported by
/// the column's name.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn values_follow_their_column_types() {
    let Some(pg) = postgres().await else {
        return;
    };
    let Some(my) = mysql().await else {
        return;
    };
    let suffix = format!("{}_{}", std::process::id(), fastrand::u32(..));
    let (codes, visits) = (format!("codes_{suffix}"), format!("visits_{suffix}"));
    exec(
        &pg,
        &format!("CREATE TABLE {codes} (id INTEGER PRIMARY KEY, code CHAR(3) NOT NULL)"),
    )
    .await;
    exec(
        &my,
        &format!("CREATE TABLE {visits} (id INTEGER PRIMARY KEY, seen_at DATETIME(3) NOT NULL)"),
    )
    .await;
    let (a, b) = (free_port(), free_port());
    let config = format!(
        r#"
resources:
  sql:
    pg: {{ url: "{pg}" }}
    my: {{ url: "{my}" }}
flows:
  codes:
    input:
      http_server: {{ address: "127.0.0.1:{a}", errors: detailed }}
    output:
      sql: {{ database: pg, table: {codes}, columns: {{ id: .id, code: .code }}, upsert_on: [id], retry: {{ max_attempts: 1 }} }}
  visits:
    input:
      http_server: {{ address: "127.0.0.1:{b}", errors: detailed }}
    output:
      sql:
        database: my
        table: {visits}
        columns: {{ id: .id, seen_at: 'parse_timestamp!(.at, "%+")' }}
        upsert_on: [id]
"#
    );
    let weft = Weft::start(&config).await;
    for body in [r#"{"id": 1, "code": "abc"}"#, r#"{"id": 1, "code": "xyz"}"#] {
        let (status, _, text) = post_json(&format!("http://127.0.0.1:{a}/"), body).await;
        assert_eq!(status, 200, "{text} {}", weft.stderr());
    }
    for body in [
        r#"{"id": 7, "at": "2024-05-01T10:00:00.250Z"}"#,
        r#"{"id": 7, "at": "2024-05-01T12:30:00+02:00"}"#,
    ] {
        let (status, _, text) = post_json(&format!("http://127.0.0.1:{b}/"), body).await;
        assert_eq!(status, 200, "{text} {}", weft.stderr());
    }
    let mut c = sqlx::PgConnection::connect(&pg).await.unwrap();
    let code: String = sqlx::query_scalar(AssertSqlSafe(format!(
        "SELECT code FROM {codes} WHERE id = 1"
    )))
    .fetch_one(&mut c)
    .await
    .unwrap();
    assert_eq!(code, "xyz");
    let mut c = sqlx::MySqlConnection::connect(&my).await.unwrap();
    let seen: String = sqlx::query_scalar(AssertSqlSafe(format!(
        "SELECT CAST(seen_at AS CHAR) FROM {visits} WHERE id = 7"
    )))
    .fetch_one(&mut c)
    .await
    .unwrap();
    assert_eq!(seen, "2024-05-01 10:30:00.000", "the second time, in UTC");

    // A value no column of that type takes: named by its column.
    let (status, _, _) = post_json(
        &format!("http://127.0.0.1:{a}/"),
        r#"{"id": "seven", "code": "abc"}"#,
    )
    .await;
    assert!(status.is_server_error() || status.is_client_error());
    assert!(
        eventually(Duration::from_secs(5), || weft
            .stderr()
            .contains("column `id`: `INT4` needs an integer"))
        .await,
        "{}",
        weft.stderr()
    );
    exec(&pg, &format!("DROP TABLE {codes}")).await;
    exec(&my, &format!("DROP TABLE {visits}")).await;
}

/// Binary columns cross as base64 text and come out as the same bytes (bytes that are no
/// UTF-8 among them), and a MySQL `BIGINT UNSIGNED` above 2^63-1 keeps every digit: PostgreSQL
/// → MariaDB and back, through `sql_poll` and the `sql` output.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binary_columns_and_unsigned_64_bit_values_cross_intact() {
    let Some(pg) = postgres().await else {
        return;
    };
    let Some(my) = mysql().await else {
        return;
    };
    let suffix = format!("{}_{}", std::process::id(), fastrand::u32(..));
    let (pg_src, pg_dst) = (format!("bin_src_{suffix}"), format!("bin_dst_{suffix}"));
    let (my_src, my_dst) = (format!("bin_msrc_{suffix}"), format!("bin_mdst_{suffix}"));
    exec(
        &pg,
        &format!(
            "CREATE TABLE {pg_src} (id INTEGER PRIMARY KEY, data BYTEA, big NUMERIC(20));
             INSERT INTO {pg_src} VALUES (1, '\\x00ff80fe', 18446744073709551615);
             CREATE TABLE {pg_dst} (id INTEGER PRIMARY KEY, data BYTEA, big NUMERIC(20))"
        ),
    )
    .await;
    exec(
        &my,
        &format!(
            "CREATE TABLE {my_src} (id INTEGER PRIMARY KEY, data BLOB, big BIGINT UNSIGNED);
             INSERT INTO {my_src} VALUES (1, 0x00FF80FE01, 18446744073709551614);
             CREATE TABLE {my_dst} (id INTEGER PRIMARY KEY, data VARBINARY(16), big BIGINT UNSIGNED)"
        ),
    )
    .await;
    let config = format!(
        r#"
resources:
  sql:
    pg: {{ url: "{pg}" }}
    my: {{ url: "{my}" }}
flows:
  to_mariadb:
    input:
      sql_poll: {{ database: pg, query: "SELECT id, data, big FROM {pg_src}", interval: 1h }}
    output:
      sql: {{ database: my, table: {my_dst}, columns: {{ id: .id, data: .data, big: .big }}, upsert_on: [id] }}
  to_postgres:
    input:
      sql_poll: {{ database: my, query: "SELECT id, data, big FROM {my_src}", interval: 1h }}
    output:
      sql: {{ database: pg, table: {pg_dst}, columns: {{ id: .id, data: .data, big: .big }}, upsert_on: [id] }}
"#
    );
    let weft = Weft::start(&config).await;
    let mut my_conn = sqlx::MySqlConnection::connect(&my).await.unwrap();
    let mut pg_conn = sqlx::PgConnection::connect(&pg).await.unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    let (mine, theirs) = loop {
        let mine: Option<(String, String)> = sqlx::query_as(AssertSqlSafe(format!(
            "SELECT HEX(data), CAST(big AS CHAR) FROM {my_dst} WHERE id = 1"
        )))
        .fetch_optional(&mut my_conn)
        .await
        .unwrap();
        let theirs: Option<(String, String)> = sqlx::query_as(AssertSqlSafe(format!(
            "SELECT encode(data, 'hex'), big::text FROM {pg_dst} WHERE id = 1"
        )))
        .fetch_optional(&mut pg_conn)
        .await
        .unwrap();
        if let (Some(mine), Some(theirs)) = (&mine, &theirs) {
            break (mine.clone(), theirs.clone());
        }
        assert!(
            std::time::Instant::now() < deadline,
            "rows not written: {mine:?} {theirs:?}\n{}",
            weft.stderr()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(mine, ("00FF80FE".into(), "18446744073709551615".into()));
    assert_eq!(theirs, ("00ff80fe01".into(), "18446744073709551614".into()));
    exec(&pg, &format!("DROP TABLE {pg_src}; DROP TABLE {pg_dst}")).await;
    exec(&my, &format!("DROP TABLE {my_src}; DROP TABLE {my_dst}")).await;
}
