//! The admin endpoint's address comes from the flag, else `WEFT_ADMIN_ADDRESS`, else the
//! config's `admin.address`, else 127.0.0.1:9464. Off loopback it needs a token, and then every
//! request carries it.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::*;

async fn health_answers(address: &str, child: &mut std::process::Child) -> bool {
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if child.try_wait().unwrap().is_some() {
            return false;
        }
        if get(&format!("http://{address}/health")).await.0 == 200 {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_address_from_config_and_from_env() {
    let dir = scratch();
    let from_config = format!("127.0.0.1:{}", free_port());
    let config = dir.join("flows.yaml");
    std::fs::write(
        &config,
        format!(
            "admin: {{ address: \"{from_config}\" }}\nflows:\n  idle:\n    input: {{ generate: {{ mapping: '.x = 1', interval: 1h }} }}\n    output: {{ drop: {{}} }}\n"
        ),
    )
    .unwrap();

    let spawn = |env: Option<&str>| {
        let mut cmd = Command::new(weft_bin());
        cmd.arg("run")
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        cmd.env_remove("WEFT_ADMIN_ADDRESS");
        if let Some(address) = env {
            cmd.env("WEFT_ADMIN_ADDRESS", address);
        }
        cmd.spawn().unwrap()
    };

    let mut child = spawn(None);
    let ok = health_answers(&from_config, &mut child).await;
    let _ = child.kill();
    let _ = child.wait();
    assert!(ok, "admin.address from the config is used");

    let from_env = format!("127.0.0.1:{}", free_port());
    let mut child = spawn(Some(&from_env));
    let ok = health_answers(&from_env, &mut child).await;
    let _ = child.kill();
    let _ = child.wait();
    assert!(ok, "WEFT_ADMIN_ADDRESS overrides the config");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn off_loopback_the_admin_endpoint_needs_a_token_on_every_request() {
    let dir = scratch();
    let config = dir.join("flows.yaml");
    std::fs::write(
        &config,
        "flows:\n  idle:\n    input: { generate: { mapping: '.x = 1', interval: 1h } }\n    output: { drop: {} }\n",
    )
    .unwrap();
    let port = free_port();
    let run = |token: Option<&str>| {
        let mut cmd = Command::new(weft_bin());
        cmd.arg("run")
            .arg(&config)
            .args(["--admin-address", &format!("0.0.0.0:{port}")])
            .arg("--data-dir")
            .arg(dir.join("data"))
            .env_remove("WEFT_ADMIN_TOKEN")
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        if let Some(token) = token {
            cmd.env("WEFT_ADMIN_TOKEN", token);
        }
        cmd
    };
    // No token: weft refuses to start, and says why.
    let out = run(None).output().unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("without a token"), "{stderr}");

    // With one: every request needs it.
    let mut child = run(Some("s3cret-admin"))
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let url = format!("http://127.0.0.1:{port}/health");
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut status = 0;
    while Instant::now() < deadline {
        status = get(&url).await.0.as_u16();
        if status != 599 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let wrong = request_with(
        http::Method::GET,
        &format!("http://127.0.0.1:{port}/metrics"),
        &[("authorization", "Bearer s3cret-admiN")],
        "",
    )
    .await
    .0;
    let right = request_with(
        http::Method::GET,
        &url,
        &[("authorization", "Bearer s3cret-admin")],
        "",
    )
    .await
    .0;
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(status, 401, "no token");
    assert_eq!(wrong.as_u16(), 401, "a wrong token");
    assert_eq!(right.as_u16(), 200);
}
