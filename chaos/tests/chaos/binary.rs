//! The `chaos-proxy` binary: flags, `--config`, the ready file and a clean stop.

use std::process::Stdio;
use std::time::{Duration, Instant};

use chaos::server::ReadyInfo;
use tokio::process::Command;

use crate::support::{echo, within};

#[tokio::test]
async fn the_binary_populates_its_config_announces_its_address_and_stops_when_stdin_closes() {
    within(Duration::from_secs(30), "test", async {
        let dir = tempfile::tempdir().unwrap();
        let upstream = echo().await;
        let config = dir.path().join("proxies.json");
        std::fs::write(
            &config,
            serde_json::json!([
                {"name": "from-config", "listen": "127.0.0.1:0", "upstream": upstream.addr.to_string()}
            ])
            .to_string(),
        )
        .unwrap();
        let ready = dir.path().join("ready.json");
        let mut child = Command::new(env!("CARGO_BIN_EXE_chaos-proxy"))
            .args(["--host", "127.0.0.1", "--port", "0", "--config"])
            .arg(&config)
            .env("READY_FILE", &ready)
            .env("EXIT_ON_STDIN_EOF", "1")
            .env("RUST_LOG", "warn")
            .stdin(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("start chaos-proxy");

        let deadline = Instant::now() + Duration::from_secs(10);
        let info: ReadyInfo = loop {
            if let Ok(text) = std::fs::read_to_string(&ready)
                && let Ok(info) = serde_json::from_str(&text)
            {
                break info;
            }
            assert!(
                child.try_wait().unwrap().is_none(),
                "chaos-proxy exited before it was ready"
            );
            assert!(Instant::now() < deadline, "no ready file within 10 s");
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        assert_eq!(Some(info.pid), child.id());

        let client = chaos::Client::new(&info.addr).unwrap();
        let proxies = client.proxies().await.unwrap();
        let proxy = &proxies["from-config"];
        assert!(proxy.enabled);
        assert_eq!(proxy.upstream, upstream.addr.to_string());

        drop(child.stdin.take());
        let status = within(Duration::from_secs(10), "chaos-proxy to exit", child.wait())
            .await
            .unwrap();
        assert!(status.success(), "{status}");
        assert!(!ready.exists(), "the ready file is removed on a clean stop");
    })
    .await;
}

#[tokio::test]
async fn the_binary_exits_64_on_a_bad_config_file() {
    within(Duration::from_secs(30), "test", async {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("proxies.json");
        std::fs::write(&config, r#"[{"name":"x","upstream":"no port"}]"#).unwrap();
        let output = Command::new(env!("CARGO_BIN_EXE_chaos-proxy"))
            .args(["--port", "0", "--config"])
            .arg(&config)
            .stdin(Stdio::null())
            .kill_on_drop(true)
            .output()
            .await
            .unwrap();
        assert_eq!(output.status.code(), Some(64), "{output:?}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains("invalid upstream address"), "{stderr}");
    })
    .await;
}
