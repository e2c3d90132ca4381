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
/// others and the invariants hold, the four report files and the history are written, and
/// nothing is left running.
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
    history_holds_every_order_the_load_placed(&run_dir, &json);
}

/// `history.jsonl` parses, pairs every invocation with one completion of the same process, and
/// has as many `place_order` invocations as the report counted `POST /api/orders`, each
/// acknowledged one naming its order.
fn history_holds_every_order_the_load_placed(
    run_dir: &std::path::Path,
    report: &serde_json::Value,
) {
    let history = harness::load::history::read(&run_dir.join("history.jsonl"))
        .unwrap_or_else(|e| panic!("{e:#}"));
    let mut open: std::collections::BTreeMap<String, &str> = Default::default();
    for e in &history {
        let process = e.process.to_string();
        match e.kind.as_str() {
            "invoke" => assert!(
                open.insert(process, &e.f).is_none(),
                "two invocations of one process without a completion: {e:?}"
            ),
            "ok" | "fail" | "info" => assert_eq!(
                open.remove(&process),
                Some(e.f.as_str()),
                "a completion without its invocation: {e:?}"
            ),
            other => panic!("type {other:?} in {e:?}"),
        }
    }
    assert!(open.is_empty(), "invocations never completed: {open:?}");
    let placed = history
        .iter()
        .filter(|e| e.kind == "invoke" && e.f == "place_order")
        .count();
    let posts = report["phases"]["all"]["endpoints"]["POST /api/orders"]["count"]
        .as_u64()
        .unwrap();
    assert!(posts > 0);
    assert_eq!(placed as u64, posts);
    let acknowledged = history
        .iter()
        .filter(|e| e.kind == "ok" && e.f == "place_order");
    for e in acknowledged {
        assert!(e.value["order_id"].is_string(), "{e:?}");
        assert!(e.value["status"].is_string(), "{e:?}");
    }
    assert!(
        history.iter().any(|e| e.process == "watch"),
        "the saga watch listed the PENDING orders"
    );
}

/// Two variants of one short run, the second with the breaker off and not gated: each gets its
/// own environment and report folder, the comparison sits beside them, the breaker of the first
/// really opens on the slow calls the fault causes, and the run exits 0 because every gated
/// verdict held.
#[test]
fn variants_run_back_to_back_and_the_comparison_shows_the_breaker_opening() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("variants.toml");
    std::fs::write(
        &path,
        r#"
description = "slow inventory with and without a breaker"

[environment]
backend = "local"

[environment.resilience]
breaker_min_calls = 3
breaker_slow_call = "200ms"
breaker_slow_call_rate = 0.5
breaker_window = "1s"
breaker_open_for = "20s"

[[variant]]
name = "breaker"
resilience = { breaker = "on" }

[[variant]]
name = "no-breaker"
resilience = { breaker = "off" }
gate = false

[load]
users = 3
ramp_up = "1s"
duration = "8s"
think_time = "50ms..100ms"

[[load.journeys]]
name = "browse_catalog"
weight = 1

[[chaos]]
name = "slow inventory"
at = "2s"
for = "4s"
target = "gateway->inventory"
fault = "latency"
latency = "400ms"

[[slo]]
error_rate = 0.0

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
    assert_eq!(out.status.code(), Some(0), "{stdout}\n{stderr}");
    let run_dir = std::fs::read_dir(&reports)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let read_json = |p: std::path::PathBuf| -> serde_json::Value {
        serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap()
    };
    let comparison = read_json(run_dir.join("report.json"));
    assert_eq!(comparison["kind"], "variants");
    let markdown = std::fs::read_to_string(run_dir.join("report.md")).unwrap();
    assert!(markdown.contains("| breaker | no-breaker |"), "{markdown}");
    for variant in ["breaker", "no-breaker"] {
        for file in ["report.json", "report.md", "report.html", "junit.xml"] {
            let f = run_dir.join("variants").join(variant).join(file);
            assert!(f.exists(), "{} missing", f.display());
        }
    }
    let with = read_json(run_dir.join("variants/breaker/report.json"));
    let opened = with["breaker_transitions"]
        .as_array()
        .unwrap()
        .iter()
        .any(|t| t["service"] == "inventory" && t["to"] == "open");
    assert!(opened, "{}", with["breaker_transitions"]);
    let without = read_json(run_dir.join("variants/no-breaker/report.json"));
    assert!(
        without["breaker_transitions"]
            .as_array()
            .is_none_or(|t| t.is_empty()),
        "{}",
        without["breaker_transitions"]
    );
}
