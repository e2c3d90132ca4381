//! `harness run` as a user calls it: the real binary, its exit codes and what it prints.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Command;

fn harness() -> Command {
    Command::new(env!("CARGO_BIN_EXE_harness"))
}

#[test]
fn a_malformed_scenario_exits_2_naming_the_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("broken.toml");
    std::fs::write(
        &path,
        "description = \"broken\"\n\n[load]\nusers = 2\nduration = \"5x\"\n",
    )
    .unwrap();
    let out = harness()
        .arg("run")
        .arg(&path)
        .arg("--no-build")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("broken.toml:5:"), "{err}");
    assert!(err.contains("5x"), "{err}");
}

#[test]
fn an_unknown_scenario_exits_2_and_lists_the_known_ones() {
    let out = harness()
        .args(["run", "no-such-scenario", "--no-build"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("smoke"), "{err}");
}

/// A whole short run against the local backend: the impossible SLO fails and is named, the
/// others and the invariants hold, the four report files are written, and nothing is left
/// running.
#[test]
fn an_impossible_slo_exits_1_and_names_that_slo() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("impossible.toml");
    std::fs::write(
        &path,
        r#"
description = "an SLO no system can meet"

[environment]
backend = "local"

[load]
users = 2
ramp_up = "1s"
duration = "3s"
think_time = "50ms..100ms"

[[load.journeys]]
name = "place_order"
weight = 1

[[load.journeys]]
name = "follow_order"
weight = 1

[[slo]]
endpoint = "POST /api/orders"
p99 = "1us"

[[slo]]
error_rate = 0.05

[checks]
convergence_timeout = "20s"
invariants = "all"
"#,
    )
    .unwrap();
    let reports = dir.path().join("reports");
    let out = harness()
        .arg("run")
        .arg(&path)
        .arg("--no-build")
        .arg("--reports-dir")
        .arg(&reports)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stdout}\n{stderr}");
    assert!(
        stdout.contains("FAIL SLO POST /api/orders p99 <= 1us"),
        "{stdout}"
    );
    assert!(!stdout.contains("FAIL invariant"), "{stdout}");
    let run_dir = std::fs::read_dir(&reports)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    for file in ["report.json", "report.md", "report.html", "junit.xml"] {
        assert!(
            run_dir.join(file).exists(),
            "{file} missing in {}",
            run_dir.display()
        );
    }
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run_dir.join("report.json")).unwrap())
            .unwrap();
    assert_eq!(json["exit_code"], 1);
    assert_eq!(json["invariants"].as_array().unwrap().len(), 8);
}
