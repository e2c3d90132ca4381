//! The embedded Kafka broker as a process of its own for these tests (tansu's SQLite and sqlx's
//! cannot link into one binary): the `embedded-broker` binary of this build, built first if it
//! is not there yet.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct Broker {
    child: Child,
    addr: String,
    _dir: tempfile::TempDir,
}

impl Broker {
    pub fn start() -> Self {
        let bin = binary();
        let dir = tempfile::tempdir().unwrap();
        let ready = dir.path().join("ready.json");
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new(&bin)
            .arg("--listen")
            .arg(format!("127.0.0.1:{port}"))
            .arg("--data-dir")
            .arg(dir.path().join("data"))
            .arg("--ready-file")
            .arg(&ready)
            .arg("--exit-on-stdin-eof")
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("starting {}: {e}", bin.display()));
        let mut broker = Self {
            child,
            addr: String::new(),
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        broker.addr = loop {
            if let Ok(text) = std::fs::read_to_string(&ready)
                && let Ok(info) = serde_json::from_str::<serde_json::Value>(&text)
                && let Some(addr) = info["addr"].as_str()
            {
                break addr.to_owned();
            }
            assert!(
                broker.child.try_wait().unwrap().is_none(),
                "the broker exited before it was ready"
            );
            assert!(
                Instant::now() < deadline,
                "the broker was not ready in 30 s"
            );
            std::thread::sleep(Duration::from_millis(20));
        };
        broker
    }

    pub fn bootstrap(&self) -> &str {
        &self.addr
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `target/<profile>/embedded-broker`, next to the directory of this test binary.
fn binary() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let profile_dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .unwrap()
        .to_path_buf();
    let bin = profile_dir.join("embedded-broker");
    if !bin.exists() {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let mut build = Command::new(cargo);
        build.args(["build", "-p", "embedded-broker", "--bin", "embedded-broker"]);
        if profile_dir
            .file_name()
            .is_some_and(|name| name == "release")
        {
            build.arg("--release");
        }
        let status = build.status().unwrap();
        assert!(status.success(), "building embedded-broker failed");
    }
    bin
}
