//! The real binary: configuration errors, the ready file, and stopping with its supervisor.

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use tokio::process::Command;

use crate::helpers::SECRET;

fn gateway(dir: &Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_gateway"));
    cmd.env_clear()
        .env("SERVICE_TOKEN_SECRET", SECRET)
        .env("ORDER_URLS", "http://127.0.0.1:1")
        .env("INVENTORY_URLS", "http://127.0.0.1:2")
        .env("PAYMENT_URLS", "http://127.0.0.1:3")
        .env("READY_FILE", dir.join("ready.json"))
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    cmd
}

#[tokio::test]
async fn a_bad_public_key_makes_the_binary_exit_64_naming_the_variable() {
    let dir = tempfile::tempdir().unwrap();

    let output = gateway(dir.path())
        .env(
            "JWT_PUBLIC_KEY_PEM",
            "-----BEGIN PUBLIC KEY-----\nnope\n-----END PUBLIC KEY-----",
        )
        .output()
        .await
        .unwrap();

    assert_eq!(output.status.code(), Some(64));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("JWT_PUBLIC_KEY_PEM"), "{stderr}");
    assert!(!dir.path().join("ready.json").exists());
}

#[tokio::test]
async fn a_missing_public_key_makes_the_binary_exit_64() {
    let dir = tempfile::tempdir().unwrap();

    let output = gateway(dir.path()).output().await.unwrap();

    assert_eq!(output.status.code(), Some(64));
    assert!(String::from_utf8_lossy(&output.stderr).contains("JWT_PUBLIC_KEY"));
}

#[tokio::test]
async fn the_binary_announces_its_address_is_ready_and_stops_when_stdin_closes() {
    let dir = tempfile::tempdir().unwrap();
    let (_, public) = platform::auth::generate_ed25519_pem().unwrap();
    let key_file = dir.path().join("jwt.pub.pem");
    std::fs::write(&key_file, public).unwrap();
    let mut child = gateway(dir.path())
        .env("JWT_PUBLIC_KEY_FILE", &key_file)
        .env("EXIT_ON_STDIN_EOF", "1")
        .spawn()
        .unwrap();

    let ready_file = dir.path().join("ready.json");
    let deadline = Instant::now() + Duration::from_secs(20);
    let addr = loop {
        if let Ok(text) = std::fs::read_to_string(&ready_file) {
            let ready: serde_json::Value = serde_json::from_str(&text).unwrap();
            break ready["addr"].as_str().unwrap().to_owned();
        }
        assert!(Instant::now() < deadline, "no ready file");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    for probe in ["live", "ready"] {
        let response = client
            .get(format!("http://{addr}/health/{probe}"))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "/health/{probe}");
    }

    drop(child.stdin.take());
    let status = tokio::time::timeout(Duration::from_secs(20), child.wait())
        .await
        .expect("the gateway stops once its supervisor is gone")
        .unwrap();
    assert!(status.success(), "{status}");
}
