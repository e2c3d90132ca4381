//! A report built from synthetic measurements (three endpoints, a timeline, one failed SLO and
//! one failed invariant), written out and read back.

use std::path::Path;
use std::time::{Duration, UNIX_EPOCH};

use contracts::domain::OrderId;

use super::*;
use crate::checks::{Invariant, Subject, Violation};
use crate::metrics::ALL;
use crate::slo;

const SCENARIO: &str = r#"
description = "Synthetic run for the report tests & <escaping>"

[load]
users = 2
duration = "10s"

[[load.journeys]]
name = "place_order"
weight = 1

[[slo]]
endpoint = "POST /api/orders"
p99 = "1us"
error_rate = 0.05

[[slo]]
endpoint = "GET /api/products"
p95 = "1s"
min_throughput = 5.0

[[slo]]
error_rate = 0.05

[[slo]]
saga_completion_p99 = "5s"
"#;

const IMPOSSIBLE: &str = "POST /api/orders p99 <= 1us";

pub(crate) fn sample_measurements() -> Measurements {
    let mut m = Measurements::default();
    for (endpoint, base_ms, errors) in [
        ("POST /api/orders", 40, 3),
        ("GET /api/products", 5, 0),
        ("GET /api/orders/{id}", 8, 1),
    ] {
        let e = m.endpoint_mut(ALL, endpoint);
        for i in 0..100 {
            e.latency.record(Duration::from_millis(base_ms + i % 20));
        }
        e.ok = 100 - errors;
        e.errors = errors;
        if errors > 0 {
            e.errors_by_status.insert(503, errors - 1);
            e.errors_by_status.insert(0, 1);
        }
    }
    let mut saga = Latency::new();
    for i in 0..80 {
        saga.record(Duration::from_millis(200 + i * 10));
    }
    m.saga_completion.insert(ALL.into(), saga);
    for s in 0..10 {
        let b = m.bucket_mut(s);
        b.requests = 30;
        b.errors = u64::from(s == 4) * 4;
        b.latency_sum_us = 30 * (20_000 + s * 1_000);
        b.max_latency_us = 60_000 + s * 2_000;
        b.orders_confirmed = 7;
        b.orders_rejected = 1;
        b.orders_cancelled = u64::from(s % 3 == 0);
    }
    m.outcomes = [("CONFIRMED", 70), ("REJECTED", 6), ("CANCELLED", 4)]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
    m.duration = Duration::from_secs(10);
    m
}

fn failed_invariant() -> InvariantVerdict {
    let violations = (0..7)
        .map(|i| Violation {
            kind: "lost".into(),
            subject: Subject::Order {
                order_id: OrderId::new(),
            },
            details: format!("acknowledged with 201 <#{i}> but absent & gone"),
        })
        .collect();
    InvariantVerdict {
        name: Invariant::NoLostOrders,
        held: false,
        summary: "violated: lost 7 (300 acknowledged)".into(),
        violations,
        notes: vec![],
    }
}

fn held_invariant(name: Invariant) -> InvariantVerdict {
    InvariantVerdict {
        name,
        held: true,
        summary: "held (300 orders)".into(),
        violations: vec![],
        notes: vec![],
    }
}

pub(crate) fn sample_report() -> RunReport {
    let scenario = Scenario::from_toml(Path::new("synthetic.toml"), SCENARIO).unwrap();
    let m = sample_measurements();
    let started = UNIX_EPOCH + Duration::from_secs(1_795_306_582);
    RunReport::build(RunInput {
        run_id: new_run_id(&scenario.name, started),
        environment: EnvironmentSummary::from_scenario(
            &scenario,
            Some(Duration::from_millis(2_500)),
        ),
        slos: slo::evaluate_scenario(&scenario, &m),
        invariants: vec![
            failed_invariant(),
            held_invariant(Invariant::SagasTerminal),
            held_invariant(Invariant::ExactlyOnceMoney),
        ],
        scenario: &scenario,
        started_at: started,
        measurements: &m,
        chaos_windows: vec![],
        capacity: None,
    })
    .unwrap()
}

#[test]
fn the_report_carries_verdicts_and_fails_on_one_failed_slo_or_invariant() {
    let r = sample_report();
    assert_eq!(r.schema_version, SCHEMA_VERSION);
    assert_eq!(r.scenario.name, "synthetic");
    assert_eq!(r.started_at, "2026-11-22T00:16:22Z");
    assert!(
        r.run_id.starts_with("20261122T001622Z-synthetic-"),
        "{}",
        r.run_id
    );
    assert_eq!(r.environment.backend, "local");
    assert_eq!(r.environment.instances["order"], 1);
    assert_eq!(r.slos.len(), 6);
    let failed: Vec<&str> = r.failed_slos().map(|s| s.name.as_str()).collect();
    assert_eq!(failed, vec![IMPOSSIBLE]);
    assert_eq!(r.verdict, Verdict::Failed);
    assert_eq!(r.exit_code, EXIT_FAILED);
    assert_eq!(r.timeline.len(), 10);
    assert_eq!(r.phases[ALL].endpoints.len(), 3);
    assert_eq!(
        r.phases[ALL].endpoints["POST /api/orders"].errors_by_status[&503],
        2
    );
    assert_eq!(r.phases[ALL].saga_completion.as_ref().unwrap().count, 80);
    assert_eq!(r.scenario.definition["slo"][0]["p99"], "1us");
}

#[test]
fn a_run_where_everything_held_passes_with_exit_code_zero() {
    let scenario = Scenario::from_toml(
        Path::new("ok.toml"),
        &SCENARIO.replace("p99 = \"1us\"", "p99 = \"1s\""),
    )
    .unwrap();
    let m = sample_measurements();
    let r = RunReport::build(RunInput {
        run_id: "ok".into(),
        environment: EnvironmentSummary::from_scenario(&scenario, None),
        slos: slo::evaluate_scenario(&scenario, &m),
        invariants: Invariant::ALL.into_iter().map(held_invariant).collect(),
        scenario: &scenario,
        started_at: UNIX_EPOCH,
        measurements: &m,
        chaos_windows: vec![],
        capacity: None,
    })
    .unwrap();
    assert!(r.passed(), "{:?}", r.failed_slos().collect::<Vec<_>>());
    assert_eq!(r.exit_code, EXIT_PASSED);
    assert_eq!(r.started_at, "1970-01-01T00:00:00Z");
    assert!(r.headline().contains("passed"), "{}", r.headline());
}

#[test]
fn write_all_writes_four_consistent_files() {
    let mut report = sample_report();
    report.chaos_windows.push(ChaosWindow {
        start_s: 3.0,
        end_s: 5.5,
        label: "kill order#1".into(),
        fault: "kill".into(),
        target: "order#1".into(),
        affected: vec!["order#1".into()],
        planned_start_s: 3.0,
        planned_end_s: 5.5,
    });
    // To look at the sample: REPORT_SAMPLE_DIR=/tmp/x cargo test -p harness --lib write_all
    if let Some(dir) = std::env::var_os("REPORT_SAMPLE_DIR") {
        write_all(Path::new(&dir), &report).unwrap();
    }
    let dir = tempfile::tempdir().unwrap();
    let paths = write_all(dir.path(), &report).unwrap();
    assert_eq!(paths.dir, dir.path().join(&report.run_id));
    for p in [&paths.json, &paths.markdown, &paths.html, &paths.junit] {
        assert!(p.is_file(), "{} missing", p.display());
    }

    let md = std::fs::read_to_string(&paths.markdown).unwrap();
    assert!(md.contains("### Chaos timeline"), "{md}");
    assert!(
        md.contains("| kill order#1 | order#1 | order#1 | 3.0s | 5.5s |"),
        "{md}"
    );
    let html = std::fs::read_to_string(&paths.html).unwrap();
    assert!(html.contains("<h2>Chaos timeline</h2>"));

    // report.json parses back into the same report, verdicts and histograms included.
    let back = read(&paths.json).unwrap();
    assert_eq!(back, report);
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&paths.json).unwrap()).unwrap();
    assert_eq!(json["verdict"], "failed");
    assert_eq!(json["exit_code"], 1);
    assert_eq!(json["slos"][0]["name"], IMPOSSIBLE);
    assert_eq!(json["slos"][0]["held"], false);
    assert_eq!(json["invariants"][0]["name"], "no_lost_orders");
    assert_eq!(json["invariants"][0]["held"], false);
    let orders = &json["phases"]["all"]["endpoints"]["POST /api/orders"];
    assert_eq!(orders["count"], 100);
    let h = histogram::decode(orders["latency"]["histogram"].as_str().unwrap()).unwrap();
    assert_eq!(h.len(), 100);
    assert_eq!(
        Some(h.value_at_quantile(0.99)),
        orders["latency"]["p99_us"].as_u64()
    );
    let saga = back.phases[ALL]
        .saga_completion
        .as_ref()
        .unwrap()
        .decode()
        .unwrap();
    assert_eq!(saga.len(), 80);

    // The page is self-contained and has its charts.
    let html = std::fs::read_to_string(&paths.html).unwrap();
    assert!(html.contains("<svg"), "no chart");
    assert_eq!(
        html.matches("<svg").count(),
        4,
        "latency, throughput, outcomes over time, outcome bars"
    );
    for forbidden in [
        "<script src",
        "http://",
        "https://",
        "<link",
        "@import",
        "url(",
    ] {
        assert!(
            !html.contains(forbidden),
            "report.html references {forbidden}"
        );
    }
    assert!(
        html.contains("&lt;escaping&gt;"),
        "the description is escaped"
    );
    assert!(html.contains(&super::html::escape(IMPOSSIBLE)));

    // One test case per SLO and per invariant, a failure for each that did not hold.
    let junit = std::fs::read_to_string(&paths.junit).unwrap();
    assert_eq!(
        junit.matches("<testcase ").count(),
        report.slos.len() + report.invariants.len()
    );
    assert_eq!(junit.matches("<failure ").count(), 2, "{junit}");
    assert!(
        junit.contains(r#"name="POST /api/orders p99 &lt;= 1us""#),
        "{junit}"
    );
    assert!(
        junit.contains(r#"<failure message="no_lost_orders: violated"#),
        "{junit}"
    );
    assert!(!junit.contains("<#"), "violation details are escaped");
    assert!(junit.contains(r#"tests="9" failures="2""#), "{junit}");

    // The markdown names the failed SLO and lists the first violations.
    let md = std::fs::read_to_string(&paths.markdown).unwrap();
    assert!(md.starts_with("## ❌ synthetic failed"), "{md}");
    let row = md
        .lines()
        .find(|l| l.contains(IMPOSSIBLE.replace('<', "&lt;").as_str()))
        .unwrap();
    assert!(row.contains("failed"), "{row}");
    assert_eq!(md.matches("- `lost`").count(), 5, "{md}");
    assert!(md.contains("and 2 more"), "{md}");
    assert!(md.contains("| CONFIRMED | 70 |"), "{md}");
}

#[test]
fn write_all_refuses_a_run_id_that_is_not_one_directory() {
    let mut report = sample_report();
    report.run_id = "../escape".into();
    let dir = tempfile::tempdir().unwrap();
    assert!(write_all(dir.path(), &report).is_err());
}

#[test]
fn read_refuses_another_schema_version() {
    let mut report = sample_report();
    report.schema_version = 99;
    let dir = tempfile::tempdir().unwrap();
    let paths = write_all(dir.path(), &report).unwrap();
    let err = read(&paths.json).unwrap_err().to_string();
    assert!(err.contains("schema version"), "{err}");
}

#[test]
fn rfc3339_handles_leap_years() {
    let t = |s: u64| rfc3339(UNIX_EPOCH + Duration::from_secs(s));
    assert_eq!(t(951_782_400), "2000-02-29T00:00:00Z");
    assert_eq!(t(1_709_251_199), "2024-02-29T23:59:59Z");
}
