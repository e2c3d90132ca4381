//! Compatibility with an independent client: the PyPI package `toxiproxy-python` (0.1.1) drives
//! the in-process chaos-proxy through `tests/python/toxiproxy_python_client.py`.
//!
//! Without python3 or the package the test is skipped with the reason, except under CI (`CI`
//! set), where that is a failure: `.ci/run` installs the package.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use tokio::process::Command;

use crate::support::{TestServer, echo, under_ci, within};

const SCRIPT: &str = "tests/python/toxiproxy_python_client.py";

/// Why the Python client cannot run here, if it cannot.
async fn missing_python_client() -> Option<String> {
    let probe = Command::new("python3")
        .args(["-c", "import toxiproxy, requests"])
        .stdin(Stdio::null())
        .output()
        .await;
    match probe {
        Err(err) => Some(format!("python3 cannot be started: {err}")),
        Ok(out) if !out.status.success() => Some(format!(
            "python3 cannot import the toxiproxy-python package (pip install toxiproxy-python==0.1.1): {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )),
        Ok(_) => None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_toxiproxy_python_client_drives_chaos_proxy() {
    if let Some(reason) = missing_python_client().await {
        assert!(
            !under_ci(),
            "under CI the Python client must be installed: {reason}"
        );
        eprintln!("skipping the toxiproxy-python compatibility test: {reason}");
        return;
    }
    let server = TestServer::spawn().await;
    let upstream = echo().await;
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join(SCRIPT);
    let output = within(
        Duration::from_secs(60),
        "the toxiproxy-python script",
        Command::new("python3")
            .arg(&script)
            .arg(server.addr.ip().to_string())
            .arg(server.addr.port().to_string())
            .arg(upstream.addr.to_string())
            .stdin(Stdio::null())
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("run python3");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    println!("{stdout}");
    assert!(
        output.status.success(),
        "the toxiproxy-python checks failed ({}):\n{stdout}\n{stderr}",
        output.status
    );
    assert!(stdout.contains("every check held"), "{stdout}");
    server.stop().await;
}
