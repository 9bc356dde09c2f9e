//! The admin endpoint's address comes from the flag, else `WEFT_ADMIN_ADDRESS`, else the
//! config's `admin.address`, else 127.0.0.1:9464.

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
