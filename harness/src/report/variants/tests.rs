//! Two synthetic variants of one chaos run (order#1 killed from 5 s to 10 s of a 20 s load): one
//! that barely notices and recovers at once, one that fails through the fault and takes 4 s to
//! recover and does not gate its SLOs; compared, rendered and written.

#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::time::{Duration, UNIX_EPOCH};

use super::*;
use crate::checks::{Invariant, InvariantVerdict};
use crate::metrics::{EndpointStats, Measurements};
use crate::report::{ChaosWindow, EnvironmentSummary, RunInput};

const SCENARIO: &str = r#"
name = "breaker-or-not"
description = "Breaker or not, while order#1 is killed"

[environment.resilience]
breaker_open_for = "2s"

[load]
users = 2
duration = "20s"

[[load.journeys]]
name = "place_order"
weight = 1

[[slo]]
endpoint = "POST /api/orders"
p99 = "500ms"
phase = "during"

[[chaos]]
at = "5s"
for = "5s"
target = "order#1"
fault = "kill"

[[variant]]
name = "with-breaker"
resilience = { breaker = "on" }

[[variant]]
name = "without"
resilience = { breaker = "off", retries = "off" }
gate = false
"#;

const FAULT: &str = "kill order#1";
const POST: &str = "POST /api/orders";
const GET: &str = "GET /api/products";

fn scenario() -> Scenario {
    let s = Scenario::from_toml(Path::new("breaker-or-not.toml"), SCENARIO).unwrap();
    s.validate().unwrap();
    s
}

fn stats(ok: u64, errors: u64, latency_ms: u64) -> EndpointStats {
    let mut s = EndpointStats {
        ok,
        errors,
        ..EndpointStats::default()
    };
    for _ in 0..ok + errors {
        s.latency.record(Duration::from_millis(latency_ms));
    }
    s
}

/// One second of the timeline: 60 requests, `errors` of them failed.
fn second(m: &mut Measurements, s: u64, errors: u64, p99_ms: u64, confirmed: u64) {
    let b = m.bucket_mut(s);
    b.requests = 60;
    b.errors = errors;
    b.latency_sum_us = 60 * p99_ms * 500;
    b.max_latency_us = p99_ms * 1_000;
    b.p99_us = Some(p99_ms * 1_000);
    b.orders_confirmed = confirmed;
}

/// `during`: POST and GET in the fault's phase; `after_bad`: the seconds after the heal that
/// are still failing.
fn measurements(during: [(u64, u64, u64); 2], after_bad: u64) -> Measurements {
    let mut m = Measurements::default();
    let phases = [
        ("before", [(100, 0, 20), (200, 0, 5)]),
        ("during:kill order#1", during),
        ("after", [(200, 0, 20), (400, 0, 5)]),
    ];
    for (phase, [post, get]) in phases {
        for (endpoint, (ok, errors, ms)) in [(POST, post), (GET, get)] {
            let s = stats(ok, errors, ms);
            m.endpoint_mut(ALL, endpoint).merge(&s);
            *m.endpoint_mut(phase, endpoint) = s;
        }
    }
    let (during_errors, during_p99, during_confirmed) = if during[0].1 > 10 {
        (20, 900, 1)
    } else {
        (1, 50, 4)
    };
    for s in 0..20 {
        match s {
            0..5 => second(&mut m, s, 0, 20, 5),
            5..10 => second(&mut m, s, during_errors, during_p99, during_confirmed),
            _ if s < 10 + after_bad => second(&mut m, s, 10, 300, 2),
            _ => second(&mut m, s, 0, 20, 5),
        }
    }
    m.duration = Duration::from_secs(20);
    m
}

fn run(name: &str, gate: bool, m: &Measurements) -> VariantRun {
    let base = scenario();
    let variant = base
        .variants
        .iter()
        .find(|v| v.get_ref().name() == name)
        .unwrap()
        .get_ref()
        .clone();
    let scenario = base.for_variant(&variant);
    let started = UNIX_EPOCH + Duration::from_secs(1_795_306_582);
    let mut report = RunReport::build(RunInput {
        run_id: format!("20261122T001622Z-breaker-or-not-3f9a/variants/{name}"),
        scenario: &scenario,
        started_at: started,
        environment: EnvironmentSummary::from_scenario(&scenario, None),
        measurements: m,
        slos: crate::slo::evaluate_scenario(&scenario, m),
        invariants: Invariant::ALL
            .iter()
            .map(|&name| InvariantVerdict {
                name,
                held: true,
                summary: "held (300 orders)".into(),
                violations: vec![],
                notes: vec![],
            })
            .collect(),
        chaos_windows: vec![ChaosWindow {
            start_s: 5.0,
            end_s: 10.0,
            label: FAULT.into(),
            fault: "kill".into(),
            target: "order#1".into(),
            affected: vec!["order#1".into()],
            planned_start_s: 5.0,
            planned_end_s: 10.0,
            healed_by_hand: false,
        }],
        capacity: None,
        traces: None,
        metrics: None,
    })
    .unwrap();
    report.variant = Some(name.into());
    VariantRun {
        name: name.into(),
        gate,
        resilience: scenario.environment.resilience.clone(),
        report,
    }
}

/// The one that copes (2 POST errors, 50 ms, back at once) and the one that does not (100
/// errors, 800 ms, 4 s to recover, `gate = false`).
fn runs() -> Vec<VariantRun> {
    vec![
        run(
            "with-breaker",
            true,
            &measurements([(98, 2, 50), (200, 0, 6)], 0),
        ),
        run(
            "without",
            false,
            &measurements([(50, 50, 800), (150, 50, 7)], 4),
        ),
    ]
}

fn compared(runs: &[VariantRun]) -> VariantsReport {
    VariantsReport::build(
        "20261122T001622Z-breaker-or-not-3f9a".into(),
        &scenario(),
        runs,
    )
    .unwrap()
}

#[test]
fn the_table_puts_both_variants_figures_side_by_side_in_every_phase() {
    let r = compared(&runs());
    let phases: Vec<&str> = r.phases.iter().map(|p| p.phase.as_str()).collect();
    assert_eq!(phases, ["before", "during:kill order#1", "after", "all"]);
    let md = markdown::render(&r);
    for row in [
        "| phase |  | with-breaker | without |",
        "| **before (0s–5s)** | errors | 0 (0.00%) | 0 (0.00%) |",
        "| **during:kill order#1 (5s–10s)** | errors | 2 (0.67%) | 100 (33.33%) |",
        "| **after (10s–20s)** | errors | 0 (0.00%) | 0 (0.00%) |",
        "|  | confirmed orders/s | 5.0/s | 5.0/s |",
        "|  | confirmed orders/s | 4.0/s | 1.0/s |",
        "|  | confirmed orders/s | 5.0/s | 3.8/s |",
        "|  | POST /api/orders p50 / p95 / p99 | 50ms / 50ms / 50ms | 800ms / 800ms / 800ms |",
        "|  | GET /api/products p50 / p95 / p99 | 6ms / 6ms / 6ms | 7ms / 7ms / 7ms |",
        "| kill order#1 | 0.0s (healed at 10.0s) | 4.0s (healed at 10.0s) |",
        "| POST /api/orders p99 &lt;= 500ms (during) | ✅ 50ms | ❌ 800ms, not gated |",
        "| no_lost_orders | ✅ held | ✅ held |",
    ] {
        assert!(md.contains(row), "missing {row:?} in\n{md}");
    }
    assert!(
        md.contains(r#"| without | `breaker = "off", retries = "off"` | invariants only (gate = false) | 0 of 1 |"#),
        "the variant's own keys: {md}"
    );
    assert!(
        md.contains(
            r#"Each variant's keys go over `[environment.resilience]`: `breaker_open_for = "2s"`."#
        ),
        "{md}"
    );

    let html = html::render(&r, &runs());
    assert_eq!(html.matches("<svg ").count(), 3, "p99, errors, confirmed");
    for text in [
        "<strong>during:kill order#1 (5s–10s)</strong>",
        "<td>2 (0.67%)</td><td>100 (33.33%)</td>",
        "<td>50ms / 50ms / 50ms</td><td>800ms / 800ms / 800ms</td>",
        "<td>0.0s (healed at 10.0s)</td><td>4.0s (healed at 10.0s)</td>",
    ] {
        assert!(html.contains(text), "missing {text:?}");
    }
}

#[test]
fn a_variant_that_does_not_gate_breaks_its_slos_without_failing_the_run() {
    let runs = runs();
    let r = compared(&runs);
    assert!(r.passed(), "{}", r.headline());
    assert_eq!(r.exit_code, EXIT_PASSED);
    assert_eq!(r.variants[1].verdict, Verdict::Failed, "its own verdict");
    assert_eq!(r.variants[1].gated_verdict, Verdict::Passed);
    assert_eq!(
        r.headline(),
        "breaker-or-not: 2 variants, every gated verdict held"
    );
    assert_eq!(r.variants[1].gateway_env["RETRIES"], "off");
    assert_eq!(
        r.variants[1].gateway_env["BREAKER_OPEN_MS"], "2000",
        "what it ran with"
    );
    let terminal = r.terminal_summary();
    assert!(
        terminal.contains("recovered after kill order#1  0.0s")
            && terminal.contains("33.33% errors, 1.0 confirmed/s"),
        "{terminal}"
    );

    let junit = junit::render(&r, &runs);
    assert!(
        junit.contains(
            r#"<testsuite name="without.slo" tests="1" failures="0" errors="0" skipped="1""#
        ),
        "{junit}"
    );
    assert!(junit.contains(r#"<skipped message="not gated (gate = false): POST /api/orders p99 &lt;= 500ms (during): measured"#), "{junit}");
    assert!(
        junit.contains(r#"<testsuite name="with-breaker.invariants" tests="8" failures="0""#),
        "{junit}"
    );
    assert!(
        junit.contains(r#"classname="breaker-or-not.without.invariant""#),
        "{junit}"
    );

    // The same broken SLO gates once the variant gates.
    let mut gated = runs.clone();
    gated[1].gate = true;
    let r = compared(&gated);
    assert!(!r.passed());
    assert_eq!(r.exit_code, EXIT_FAILED);
    assert_eq!(r.headline(), "breaker-or-not failed: without broke 1 SLO");
    let junit = junit::render(&r, &gated);
    assert!(
        junit.contains(r#"<testsuite name="without.slo" tests="1" failures="1""#),
        "{junit}"
    );
}

#[test]
fn recovery_needs_a_before_level_and_a_streak_before_the_next_fault() {
    let mut runs = runs();
    // Failing to the end of the load.
    runs[1] = run(
        "without",
        false,
        &measurements([(50, 50, 800), (150, 50, 7)], 10),
    );
    let r = compared(&runs);
    let without = &r.recovery[0].variants[1];
    assert_eq!(without.time_to_recover_s, None);
    assert_eq!(without.describe(), "not recovered by 20s");
    let level = without.level.as_ref().unwrap();
    assert_eq!(level.before_seconds, 5);
    assert_eq!(level.max_p99_us, 24_000, "the before seconds' p99 × 1.2");
    assert!((level.max_error_rate - 0.01).abs() < 1e-12);

    // A single good second between bad ones is not a recovery.
    let mut flapping = runs[0].clone();
    for b in &mut flapping.report.timeline {
        if [10, 12, 13].contains(&b.second) {
            b.p99_us = Some(300_000);
        }
    }
    assert_eq!(
        recovery("x", &flapping.report, FAULT).time_to_recover_s,
        Some(4.0)
    );

    // A fault at the very start leaves no before level.
    let mut early = runs[0].clone();
    early.report.chaos_windows[0].planned_start_s = 0.0;
    assert_eq!(
        recovery("x", &early.report, FAULT).describe(),
        "no before level to return to"
    );
}

#[test]
fn the_comparison_is_written_beside_the_variants_and_refused_as_a_baseline() {
    let runs = runs();
    let r = compared(&runs);
    let dir = tempfile::tempdir().unwrap();
    let paths = write_all(dir.path(), &r, &runs).unwrap();
    let json = std::fs::read_to_string(&paths.json).unwrap();
    let back: VariantsReport = serde_json::from_str(&json).unwrap();
    assert_eq!(back, r);
    assert!(json.contains(r#""kind": "variants""#));
    let e = crate::report::read(&paths.json).unwrap_err();
    assert!(
        format!("{e:#}").contains("compares the variants of a run"),
        "{e:#}"
    );
    for path in [&paths.markdown, &paths.html, &paths.junit] {
        assert!(std::fs::metadata(path).unwrap().len() > 0);
    }
}

#[test]
fn each_variant_s_gateway_events_are_in_the_comparison_s_table_and_on_its_chart() {
    let mut runs = runs();
    runs[1].report = crate::report::tests::with_gateway_events(runs[1].report.clone());
    let r = compared(&runs);
    assert_eq!(r.variants[1].rotation_changes.len(), 2);
    assert_eq!(r.variants[1].bulkhead_saturations.len(), 1);
    assert!(r.variants[0].rotation_changes.is_empty());

    let md = markdown::render(&r);
    assert!(md.contains("### Gateway events"), "{md}");
    for row in [
        "| without | 3s | payment | bulkhead full (37 calls refused until 7s) |",
        "| without | 4s | payment | breaker closed → open |",
        "| without | 5s | order | order#2 out of rotation |",
        "| without | 8s | order | order#2 back in rotation |",
    ] {
        assert!(md.contains(row), "{row} missing from\n{md}");
    }
    let page = html::render(&r, &runs);
    assert!(page.contains("<h2>Gateway events</h2>"), "{page}");
    assert!(page.contains("gateway events dashed"), "{page}");
    assert!(
        page.contains(&crate::report::html::escape(
            "without, 5s: order order#2 out of rotation (health check, gateway#1)"
        )),
        "{page}"
    );
    let json = serde_json::to_value(&r).unwrap();
    assert_eq!(
        json["variants"][1]["rotation_changes"][0]["upstream"],
        "order#2"
    );
}
