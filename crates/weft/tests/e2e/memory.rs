//! `weft run` gives back the pages of its executable that only start-up read, and the code in
//! them runs again when a request needs it.

use std::process::Stdio;
use std::time::Duration;

use crate::support::{Weft, eventually, free_port, post_json};

/// The executable's resident KiB, read-only mappings only, from the process's smaps.
fn read_only_resident_kib(pid: u32) -> u64 {
    let exe = std::fs::read_link(format!("/proc/{pid}/exe")).unwrap();
    let exe = exe.to_string_lossy();
    let smaps = std::fs::read_to_string(format!("/proc/{pid}/smaps")).unwrap();
    let mut total = 0;
    let mut counting = false;
    for line in smaps.lines() {
        if let Some((key, value)) = line.split_once(':')
            && !key.contains(['-', ' '])
        {
            if counting && key == "Rss" {
                total += value.trim().trim_end_matches(" kB").parse::<u64>().unwrap();
            }
            continue;
        }
        let fields: Vec<&str> = line.splitn(6, ' ').collect();
        counting = fields.get(5).is_some_and(|p| p.trim_start() == exe)
            && fields.get(1).is_some_and(|perms| !perms.contains('w'));
    }
    total
}

#[tokio::test]
async fn start_up_pages_are_given_back_and_requests_still_run() {
    let port = free_port();
    let config = format!(
        r#"
flows:
  orders:
    input:
      http_server: {{ address: "127.0.0.1:{port}", path: /orders }}
    pipeline:
      - map: .seen = true
    output: {{ drop: {{}} }}
"#
    );
    let weft = Weft::start_with(&config, &[("WEFT_LOG", "debug")], Stdio::null()).await;
    let released = eventually(Duration::from_secs(10), || {
        weft.stderr()
            .contains("gave back the executable's start-up pages")
    })
    .await;
    let log = weft.stderr();
    assert!(released, "{log}");
    let line = log
        .lines()
        .find(|l| l.contains("gave back the executable's start-up pages"))
        .unwrap();
    let kib = |key: &str| -> u64 {
        let rest = &line[line.find(&format!("{key}=")).unwrap() + key.len() + 1..];
        rest.split(|c: char| !c.is_ascii_digit())
            .next()
            .unwrap()
            .parse()
            .unwrap()
    };
    let (before, after) = (kib("resident_before_kib"), kib("resident_after_kib"));
    assert!(after < before / 2, "{line}");

    // What a request runs faults back in from the page cache, and works.
    for _ in 0..3 {
        let (status, _, body) = post_json(
            &format!("http://127.0.0.1:{port}/orders"),
            r#"{"qty": 3, "price": 5}"#,
        )
        .await;
        assert_eq!(status, 200, "{body}");
    }
    let now = read_only_resident_kib(weft.child.id());
    assert!(
        now < before,
        "{now} KiB resident again, {before} before the release"
    );
}
