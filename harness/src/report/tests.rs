//! A report built from synthetic measurements (three endpoints, a timeline, one failed SLO and
//! one failed invariant), written out and read back; and the same report with a chaos window,
//! traces and scraped metrics, rendered.

use std::path::Path;
use std::time::{Duration, UNIX_EPOCH};

use contracts::domain::OrderId;

use super::*;
use crate::checks::{Invariant, Subject, Violation};
use crate::metrics::ALL;
use crate::slo;
use crate::telemetry::charts::{ChartSeries, MetricChart, TargetStats};
use crate::telemetry::hops::HopBreakdown;
use crate::telemetry::store::SpanStore;

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
        traces: None,
        metrics: None,
    })
    .unwrap()
}

/// The chaos window of [`sample_report_with_telemetry`]: order#1 killed from 3s to 5.5s.
fn kill_window() -> ChaosWindow {
    ChaosWindow {
        start_s: 3.0,
        end_s: 5.5,
        label: "kill order#1".into(),
        fault: "kill".into(),
        target: "order#1".into(),
        affected: vec!["order#1".into()],
        planned_start_s: 3.0,
        planned_end_s: 5.5,
        healed_by_hand: false,
    }
}

/// The hops of the sample sagas, as `telemetry::hops` names them.
pub(crate) const SAMPLE_HOPS: [&str; 4] = [
    "gateway → order",
    "order POST /orders",
    "order outbox wait order.events",
    "inventory process inventory.commands",
];

/// The trace id of the slowest sample saga.
pub(crate) const SLOWEST_TRACE: &str = "0000000000000000000000000000001d";

/// [`sample_report`] with the kill of order#1 from 3s to 5.5s, 30 traced sagas over the
/// phases `before`, `during:kill order#1` and `after` (the slowest during the kill), and three
/// metric charts from two scrape targets, one of which failed twice.
pub(crate) fn sample_report_with_telemetry() -> RunReport {
    let mut report = sample_report();
    report.chaos_windows.push(kill_window());

    let mut breakdown = HopBreakdown::new();
    for i in 0..30u64 {
        let phase = match i {
            0..10 => "before",
            10..20 => "after",
            _ => "during:kill order#1",
        };
        // The outbox wait grows during the kill; the other hops stay put.
        let wait = if phase.starts_with("during") {
            50_000 * (i - 19)
        } else {
            2_000 + i * 10
        };
        let hops: BTreeMap<String, u64> = SAMPLE_HOPS
            .iter()
            .zip([1_500 + i, 8_000 + 100 * i, wait, 4_000])
            .map(|(hop, us)| (hop.to_string(), us))
            .collect();
        let total = hops.values().sum::<u64>() + 1_000;
        breakdown.add_saga(
            &[phase],
            &format!("order-{i:02}"),
            &format!("{i:032x}"),
            total,
            &hops,
        );
    }
    breakdown.add_without_trace();
    let mut traces = breakdown.report(&SpanStore::new(10)).unwrap();
    traces.spans_received = 1_234;
    traces.spans_dropped = 5;
    traces.traces = 31;
    report.traces = Some(traces);

    let points = |f: fn(f64) -> f64| -> Vec<(f64, f64)> {
        (1..=10).map(|t| (f64::from(t), f(f64::from(t)))).collect()
    };
    let series = |name: &str, points: Vec<(f64, f64)>| ChartSeries {
        name: name.into(),
        points,
    };
    report.metrics = Some(MetricsReport {
        interval_s: 1.0,
        targets: [
            ("gateway", 10, 0, None),
            ("order#1", 10, 2, Some("connection refused")),
        ]
        .into_iter()
        .map(|(process, scrapes, failures, last_error)| {
            (
                process.to_string(),
                TargetStats {
                    scrapes,
                    failures,
                    last_error: last_error.map(str::to_string),
                },
            )
        })
        .collect(),
        charts: vec![
            MetricChart {
                title: "Requests per second by instance".into(),
                query: "sum by (process) (rate(http_server_request_duration_seconds_count))".into(),
                unit: "per_second".into(),
                series: vec![
                    series("gateway", points(|t| 30.0 + t)),
                    series(
                        "order#1",
                        points(|t| if (3.0..6.0).contains(&t) { 0.0 } else { 15.0 }),
                    ),
                ],
            },
            MetricChart {
                title: "Outbox pending messages by service".into(),
                query: "max by (service) (outbox_pending_messages)".into(),
                unit: "messages".into(),
                series: vec![series(
                    "order",
                    points(|t| if t == 5.0 { 40.0 } else { 2.0 }),
                )],
            },
            MetricChart {
                title: "Oldest pending outbox row by service".into(),
                query: "max by (service) (outbox_oldest_pending_age_seconds)".into(),
                unit: "seconds".into(),
                series: vec![series("order", points(|t| 0.05 * t))],
            },
        ],
    });
    report
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
        traces: None,
        metrics: None,
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
    report.chaos_windows.push(kill_window());
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
fn a_cpu_budget_is_said_with_the_instances_and_kept_in_the_json() {
    let mut report = sample_report();
    let json = serde_json::to_value(&report).unwrap();
    assert!(
        json["environment"].get("cpus_per_instance").is_none(),
        "no budget, no key"
    );
    report.environment.cpus_per_instance = Some(0.2);
    let dir = tempfile::tempdir().unwrap();
    let paths = write_all(dir.path(), &report).unwrap();
    let said = "each instance held to 0.2 cores";
    let md = std::fs::read_to_string(&paths.markdown).unwrap();
    assert!(md.contains(said), "{md}");
    assert!(std::fs::read_to_string(&paths.html).unwrap().contains(said));
    assert_eq!(
        read(&paths.json).unwrap().environment.cpus_per_instance,
        Some(0.2)
    );
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

#[test]
fn a_report_with_traces_and_metrics_shows_both_in_html() {
    let report = sample_report_with_telemetry();
    // To look at it: REPORT_SAMPLE_DIR=/tmp/x cargo test -p harness --lib with_traces_and_metrics
    if let Some(dir) = std::env::var_os("REPORT_SAMPLE_DIR") {
        write_all(Path::new(&dir), &report).unwrap();
    }
    let html = super::html::render(&report);
    let traces = html.find("<h2>Traces</h2>").expect("a Traces section");
    let metrics = html.find("<h2>Metrics</h2>").expect("a Metrics section");
    let endpoints = html.find("<h2>Endpoints</h2>").unwrap();
    assert!(html.find("<h2>Over time</h2>").unwrap() < traces);
    assert!(traces < metrics && metrics < endpoints);
    assert!(
        html.contains(
            "1234 spans received (5 dropped), 31 traces; 30 sagas traced, 1 without a trace."
        ),
        "{html}"
    );
    assert!(html.contains("<code>harness trace ORDER_ID</code>"));
    assert!(html.contains("can add up to more than the saga's duration"));

    // One stacked chart per phase, `all` first, each with one segment per hop in each of its
    // two bars.
    let traces_html = &html[traces..metrics];
    let charts: Vec<&str> = traces_html
        .split("<svg")
        .skip(1)
        .map(|c| &c[..c.find("</svg>").unwrap()])
        .collect();
    assert_eq!(charts.len(), 4, "all, after, before, during:kill order#1");
    assert!(charts[0].contains("Where the time goes, phase all"));
    for chart in &charts {
        assert_eq!(
            chart.matches(r#"<rect class="hop""#).count(),
            2 * SAMPLE_HOPS.len()
        );
        assert_eq!(
            chart.matches(r#"<rect class="swatch""#).count(),
            SAMPLE_HOPS.len()
        );
        assert!(chart.contains(">p50</text>") && chart.contains(">p99</text>"));
    }
    // A hop has the same colour in every phase.
    let wait = "order outbox wait order.events";
    let colour = |chart: &str| {
        let at = chart.find(&format!("<title>{wait}: p50")).unwrap();
        let rect = &chart[..at];
        let fill = &rect[rect.rfind("fill=\"").unwrap() + 6..];
        fill[..fill.find('"').unwrap()].to_string()
    };
    assert!(charts.iter().all(|c| colour(c) == colour(charts[0])));

    // During the kill the outbox wait has the highest p99, so it heads that phase's table.
    let during = &traces_html[traces_html.find("<h3>phase during:kill order#1").unwrap()..];
    let first_row = &during[during.find("<tr><td>").unwrap()..];
    assert!(
        first_row[..first_row.find("</tr>").unwrap()].contains(wait),
        "{during}"
    );

    // The slowest saga comes first, with its trace id and its longest hop.
    let slowest = &traces_html[traces_html.find("<h3>Slowest sagas</h3>").unwrap()..];
    let row = &slowest[slowest.find("<tr><td>").unwrap()..];
    let row = &row[..row.find("</tr>").unwrap()];
    assert!(
        row.contains(&format!("<code>{SLOWEST_TRACE}</code>")),
        "{row}"
    );
    assert!(row.contains("<code>order-29</code>"), "{row}");
    assert!(row.contains("during:kill order#1"), "{row}");
    assert!(row.contains(&format!("{wait} 500ms")), "{row}");

    // One chart per metric chart, chaos window shaded, query underneath; the failed target.
    let metrics_html = &html[metrics..endpoints];
    assert_eq!(metrics_html.matches("<svg").count(), 3);
    assert_eq!(metrics_html.matches(r#"<g class="chaos">"#).count(), 3);
    assert!(metrics_html.contains(
        r#"<p class="query"><code>max by (service) (outbox_pending_messages)</code></p>"#
    ));
    assert!(metrics_html.contains(">40/s</text>"), "per-second ticks");
    assert!(
        metrics_html.contains(">400ms</text>"),
        "ticks in seconds read as durations"
    );
    assert!(
        metrics_html.contains(
            r#"<tr class="bad"><td>order#1</td><td>10</td><td>2</td><td>connection refused</td></tr>"#
        ),
        "{metrics_html}"
    );
    for forbidden in ["<script", "http://", "https://", "<link", "url("] {
        assert!(!html.contains(forbidden), "report.html has {forbidden}");
    }
}

#[test]
fn a_report_with_traces_and_metrics_shows_both_in_markdown() {
    let md = super::markdown::render(&sample_report_with_telemetry());
    let traces = md.find("\n### Traces\n").expect("a Traces section");
    let metrics = md.find("\n### Metrics\n").expect("a Metrics section");
    assert!(md.find("\n### Outcomes\n").unwrap() < traces);
    assert!(traces < metrics && metrics < md.find("\n### Endpoints\n").unwrap());
    assert!(md.contains("1234 spans received (5 dropped)"), "{md}");
    assert!(md.contains("`harness trace ORDER_ID`"), "{md}");
    assert!(
        md.contains("can add up to more than the saga's duration"),
        "{md}"
    );

    assert!(md.contains("**Phase all** (30 sagas)"), "{md}");
    let all_rows = md
        .lines()
        .filter(|l| {
            SAMPLE_HOPS
                .iter()
                .any(|h| l.starts_with(&format!("| {h} | 30 |")))
        })
        .count();
    assert_eq!(all_rows, SAMPLE_HOPS.len(), "{md}");
    assert!(md.contains("| phase | hop | p50 | p99 |"), "{md}");
    assert!(
        md.contains("| during:kill order#1 (10 sagas) | order outbox wait order.events |"),
        "{md}"
    );
    let slowest = md
        .lines()
        .find(|l| l.contains(SLOWEST_TRACE))
        .expect("the slowest saga's trace id");
    assert!(
        slowest.starts_with(
            "| `order-29` | `0000000000000000000000000000001d` | during:kill order#1 |"
        ),
        "{slowest}"
    );
    assert!(
        slowest.contains("order outbox wait order.events 500ms, "),
        "{slowest}"
    );

    assert!(
        md.contains("| Outbox pending messages by service | order | 40 messages | 5s |"),
        "{md}"
    );
    assert!(
        md.contains("| Oldest pending outbox row by service | order | 500ms | 10s |"),
        "{md}"
    );
    assert!(
        md.contains("| order#1 | 10 | 2 | connection refused |"),
        "a failed target is listed: {md}"
    );
}

#[test]
fn the_scrape_targets_stay_out_of_the_markdown_when_every_scrape_worked() {
    let mut report = sample_report_with_telemetry();
    for t in report.metrics.as_mut().unwrap().targets.values_mut() {
        t.failures = 0;
        t.last_error = None;
    }
    let md = super::markdown::render(&report);
    assert!(md.contains("### Metrics"), "{md}");
    assert!(!md.contains("Scrape targets"), "{md}");
}

#[test]
fn a_report_without_traces_or_metrics_renders_neither_section() {
    let mut report = sample_report_with_telemetry();
    report.traces = None;
    report.metrics = None;
    let html = super::html::render(&report);
    let md = super::markdown::render(&report);
    for absent in ["Traces", "Metrics", "Slowest sagas", "harness trace"] {
        assert!(!html.contains(absent), "html has {absent}");
        assert!(!md.contains(absent), "markdown has {absent}");
    }
    assert_eq!(
        html.matches("<svg").count(),
        4,
        "only the charts of Over time"
    );
}

const OPEN_SCENARIO: &str = r#"
description = "Synthetic open-model run"

[load]
arrival_rate = "10/s"
duration = "10s"

[[load.journeys]]
name = "place_order"
weight = 1

[[slo]]
endpoint = "POST /api/orders"
error_rate = 0.05

[[slo]]
min_goodput = 5
"#;

/// An open-model run of 100 journeys, 8 of them dropped in second 6, and 12 orders shed (503
/// with Retry-After) besides 3 errors.
fn open_report() -> RunReport {
    open_report_with(0, vec![])
}

/// [`open_report`], with `paused` of the journeys not dropped paused by the operator instead
/// of started, and these chaos windows.
fn open_report_with(paused: u64, chaos_windows: Vec<ChaosWindow>) -> RunReport {
    let scenario = Scenario::from_toml(Path::new("open.toml"), OPEN_SCENARIO).unwrap();
    let mut m = sample_measurements();
    let orders = m.endpoint_mut(ALL, "POST /api/orders");
    orders.shed = 12;
    orders.shed_by_status.insert(503, 12);
    for s in 0..10 {
        let b = m.bucket_mut(s);
        b.arrivals = 10;
        b.dropped = if s == 6 { 8 } else { 0 };
        b.shed = if s == 6 { 12 } else { 0 };
        b.requests += b.shed;
    }
    m.arrivals.insert(
        ALL.into(),
        crate::metrics::ArrivalCounts {
            scheduled: 100,
            started: 92 - paused,
            dropped: 8,
            paused,
        },
    );
    let started = UNIX_EPOCH + Duration::from_secs(1_795_306_582);
    RunReport::build(RunInput {
        run_id: new_run_id(&scenario.name, started),
        environment: EnvironmentSummary::from_scenario(&scenario, None),
        slos: slo::evaluate_scenario(&scenario, &m),
        invariants: vec![held_invariant(Invariant::NoLostOrders)],
        scenario: &scenario,
        started_at: started,
        measurements: &m,
        chaos_windows,
        capacity: None,
        traces: None,
        metrics: None,
    })
    .unwrap()
}

#[test]
fn a_paused_load_and_a_fault_healed_by_hand_are_in_every_file() {
    let pause = ChaosWindow {
        start_s: 2.0,
        end_s: 4.0,
        label: "load paused (20 arrivals not started) (manual)".into(),
        fault: "pause_load".into(),
        target: "load".into(),
        planned_start_s: 2.0,
        planned_end_s: 4.0,
        ..ChaosWindow::default()
    };
    let healed_early = ChaosWindow {
        end_s: 4.0,
        healed_by_hand: true,
        ..kill_window()
    };
    let report = open_report_with(20, vec![pause, healed_early]);
    assert_eq!(
        report.load_summary(),
        "100 journeys due: 72 started, 8 dropped, 20 paused by the operator; 312 requests: 4 \
         errors, 12 shed"
    );
    let a = report.arrivals.unwrap();
    assert_eq!(a.scheduled, a.started + a.dropped + a.paused);
    let dir = tempfile::tempdir().unwrap();
    let paths = write_all(dir.path(), &report).unwrap();
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&paths.json).unwrap()).unwrap();
    assert_eq!(json["arrivals"]["paused"], 20);
    assert_eq!(json["chaos_windows"][0]["fault"], "pause_load");
    assert_eq!(json["chaos_windows"][1]["healed_by_hand"], true);
    assert_eq!(
        json["chaos_windows"][0].get("healed_by_hand"),
        None,
        "written only when true"
    );
    assert_eq!(read(&paths.json).unwrap(), report);

    let md = std::fs::read_to_string(&paths.markdown).unwrap();
    assert!(
        md.contains("| phase | journeys due | started | dropped | paused |"),
        "{md}"
    );
    assert!(md.contains("| all | 100 | 72 | 8 | 20 |"), "{md}");
    assert!(
        md.contains("| load paused (20 arrivals not started) (manual) | load |  | 2.0s | 4.0s |"),
        "{md}"
    );
    assert!(
        md.contains("| kill order#1 | order#1 | order#1 | 3.0s | 4.0s by hand |"),
        "{md}"
    );
    let html = std::fs::read_to_string(&paths.html).unwrap();
    assert!(html.contains("<th>paused</th>"));
    assert!(html.contains("<td>4.0s by hand</td>"));
    assert!(html.contains("20 paused by the operator"));
}

#[test]
fn an_open_model_report_shows_arrivals_dropped_and_shed_in_every_file() {
    let report = open_report();
    assert!(report.passed(), "{:?}", report.slos);
    assert_eq!(
        report.load_summary(),
        "100 journeys due: 92 started, 8 dropped; 312 requests: 4 errors, 12 shed"
    );
    let dir = tempfile::tempdir().unwrap();
    let paths = write_all(dir.path(), &report).unwrap();

    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&paths.json).unwrap()).unwrap();
    assert_eq!(json["arrivals"]["dropped"], 8);
    assert_eq!(json["phases"]["all"]["arrivals"]["scheduled"], 100);
    assert_eq!(json["timeline"][6]["dropped"], 8);
    assert_eq!(json["timeline"][6]["shed"], 12);
    let orders = &json["phases"]["all"]["endpoints"]["POST /api/orders"];
    assert_eq!(
        (orders["count"].as_u64(), orders["errors"].as_u64()),
        (Some(112), Some(3))
    );
    assert_eq!(orders["shed"], 12);
    assert_eq!(orders["shed_by_status"]["503"], 12);
    // The error rate is of the 100 served orders: the 12 shed are not failures.
    assert_eq!(json["slos"][0]["measured"], 0.03);
    assert_eq!(json["slos"][1]["name"], "goodput >= 5 confirmed orders/s");
    assert_eq!(read(&paths.json).unwrap(), report);

    let md = std::fs::read_to_string(&paths.markdown).unwrap();
    assert!(
        md.contains(
            "Load: 100 journeys due: 92 started, 8 dropped; 312 requests: 4 errors, 12 shed."
        ),
        "{md}"
    );
    assert!(md.contains("### Arrivals"), "{md}");
    assert!(md.contains("| all | 100 | 92 | 8 |"), "{md}");
    assert!(
        md.contains("| endpoint | requests | errors | shed |"),
        "{md}"
    );
    assert!(md.contains("| POST /api/orders | 112 | 3 | 12 |"), "{md}");

    let html = std::fs::read_to_string(&paths.html).unwrap();
    assert!(html.contains("<h2>Arrivals</h2>"));
    assert!(html.contains("8 dropped; 312 requests: 4 errors, 12 shed"));
    for series in ["shed/s", "journeys due/s", "dropped/s"] {
        assert!(html.contains(series), "no {series} on the throughput chart");
    }
    assert!(html.contains("<td>12 (503: 12)</td>"), "shed column");
}

#[test]
fn a_closed_model_report_has_no_arrivals_and_reads_reports_written_before_shedding() {
    let report = sample_report();
    assert_eq!(report.arrivals, None);
    assert_eq!(report.load_summary(), "300 requests: 4 errors, 0 shed");
    let md = markdown::render(&report);
    assert!(!md.contains("### Arrivals"), "{md}");
    // A report.json without the fields this version added still reads (as a baseline).
    let mut json = serde_json::to_value(&report).unwrap();
    for b in json["timeline"].as_array_mut().unwrap() {
        let b = b.as_object_mut().unwrap();
        for field in ["shed", "arrivals", "dropped"] {
            b.remove(field);
        }
    }
    for e in json["phases"]["all"]["endpoints"]
        .as_object_mut()
        .unwrap()
        .values_mut()
    {
        let e = e.as_object_mut().unwrap();
        e.remove("shed");
        e.remove("shed_by_status");
    }
    let back: RunReport = serde_json::from_value(json).unwrap();
    assert_eq!(back, report);
}

/// The gateway's events of a run where payment's breaker opened, order#2 left the rotation and
/// came back, and payment's bulkhead was full for a while.
pub(crate) fn with_gateway_events(mut report: RunReport) -> RunReport {
    report.breaker_transitions.push(BreakerTransition {
        at_s: 4.0,
        service: "payment".into(),
        from: "closed".into(),
        to: "open".into(),
        count: 1,
        process: "gateway#1".into(),
    });
    report.rotation_changes = vec![
        RotationChange {
            at_s: 5.0,
            service: "order".into(),
            upstream: "order#2".into(),
            in_rotation: false,
            ejections: 1,
            process: "gateway#1".into(),
        },
        RotationChange {
            at_s: 8.0,
            service: "order".into(),
            upstream: "order#2".into(),
            in_rotation: true,
            ejections: 0,
            process: "gateway#1".into(),
        },
    ];
    report.bulkhead_saturations = vec![BulkheadSaturation {
        service: "payment".into(),
        from_s: 3.0,
        until_s: Some(7.0),
        rejected: 37,
        process: "gateway#1".into(),
    }];
    report
}

#[test]
fn rotation_changes_and_bulkhead_saturations_are_gateway_events_in_every_file() {
    let report = with_gateway_events(sample_report());
    let md = markdown::render(&report);
    assert!(md.contains("### Gateway events"), "{md}");
    for row in [
        "| 3s | payment | bulkhead full (37 calls refused until 7s) | gateway#1 |",
        "| 4s | payment | breaker closed → open | gateway#1 |",
        "| 5s | order | order#2 out of rotation | gateway#1 |",
        "| 7s | payment | bulkhead refusing no more | gateway#1 |",
        "| 8s | order | order#2 back in rotation | gateway#1 |",
    ] {
        assert!(md.contains(row), "{row} missing from\n{md}");
    }

    let page = html::render(&report);
    assert!(page.contains("<h2>Gateway events</h2>"), "{page}");
    assert!(page.contains("gateway events dashed"), "{page}");
    // One dashed mark per event on the latency chart, each in its kind's colour.
    assert_eq!(page.matches(r#"<g class="mark">"#).count(), 5, "{page}");
    for (color, title) in [
        (
            "#d4610a",
            "3s: payment bulkhead full (37 calls refused until 7s) (bulkhead, gateway#1)",
        ),
        (
            "#cf222e",
            "4s: payment breaker closed → open (breaker, gateway#1)",
        ),
        (
            "#8250df",
            "5s: order order#2 out of rotation (health check, gateway#1)",
        ),
        (
            "#0969da",
            "7s: payment bulkhead refusing no more (bulkhead, gateway#1)",
        ),
        (
            "#1b7c83",
            "8s: order order#2 back in rotation (health check, gateway#1)",
        ),
    ] {
        assert!(
            page.contains(&format!(r#"stroke="{color}""#)) && page.contains(&html::escape(title)),
            "{color} {title}"
        );
    }

    let json = serde_json::to_value(&report).unwrap();
    assert_eq!(json["rotation_changes"][0]["upstream"], "order#2");
    assert_eq!(json["rotation_changes"][1]["in_rotation"], true);
    assert_eq!(json["bulkhead_saturations"][0]["rejected"], 37);
    assert_eq!(json["bulkhead_saturations"][0]["until_s"], 7.0);
    let back: RunReport = serde_json::from_value(json).unwrap();
    assert_eq!(back, report);
    // Reports written before these events read back without them.
    let plain = serde_json::to_value(sample_report()).unwrap();
    assert!(plain.get("rotation_changes").is_none() && plain.get("bulkhead_saturations").is_none());
}

fn interrupted_report() -> RunReport {
    sample_report().interrupted(Interruption {
        by: "SIGINT".into(),
        stage: "load".into(),
        phase: "during:kill order#1".into(),
        load_s: 12.3,
        planned_s: 22.0,
        requests: 328,
        convergence_bound_s: 10.0,
    })
}

#[test]
fn an_interrupted_run_is_interrupted_whatever_its_checks_say_and_exits_130() {
    let r = interrupted_report();
    assert_eq!(r.verdict, Verdict::Interrupted);
    assert_eq!(r.exit_code, 130);
    assert!(!r.passed());
    // Its failed SLO and invariant are kept, reported.
    assert_eq!(r.failed_slos().count(), 1);
    assert_eq!(r.failed_invariants().count(), 1);
    assert_eq!(
        r.headline(),
        "synthetic interrupted (SIGINT 12.3 s into 22.0 s of load (56%), phase during:kill \
         order#1); 328 requests made; SLOs and invariants reported, not judged"
    );

    let json = serde_json::to_value(&r).unwrap();
    assert_eq!(json["verdict"], "interrupted");
    assert_eq!(json["exit_code"], 130);
    assert_eq!(json["interruption"]["by"], "SIGINT");
    assert_eq!(json["interruption"]["stage"], "load");
    assert_eq!(json["interruption"]["load_s"], 12.3);
    assert_eq!(json["interruption"]["planned_s"], 22.0);
    assert_eq!(json["interruption"]["requests"], 328);
    let back: RunReport = serde_json::from_value(json).unwrap();
    assert_eq!(back, r);
    // A run that went its course has no `interruption`.
    let plain = serde_json::to_value(sample_report()).unwrap();
    assert!(plain.get("interruption").is_none());
}

#[test]
fn an_interrupted_run_says_so_and_how_far_it_got_in_markdown_and_html() {
    let r = interrupted_report();
    let md = markdown::render(&r);
    assert!(
        md.starts_with("## ⏹️ synthetic interrupted (SIGINT 12.3 s into 22.0 s of load"),
        "{md}"
    );
    assert!(
        md.contains(
            "**Interrupted**: SIGINT 12.3 s into 22.0 s of load (56%), phase during:kill \
             order#1; 328 requests made. After the heal, the checks ran with a 10 s convergence \
             bound: the SLOs and invariants below are reported, not judged, and the run exits \
             with 130."
        ),
        "{md}"
    );

    let page = html::render(&r);
    assert!(
        page.contains(r#"<h1 class="interrupted">synthetic interrupted"#),
        "{page}"
    );
    assert!(
        page.contains(r#"<p class="interrupted"><strong>Interrupted</strong>: SIGINT 12.3 s"#),
        "{page}"
    );
}

#[test]
fn an_interrupted_run_is_no_pass_for_ci_its_junit_has_an_error_and_skips_the_checks() {
    let r = interrupted_report();
    let xml = junit::render(&r);
    let slos = r.slos.len();
    let invariants = r.invariants.len();
    assert!(
        xml.contains(&format!(
            r#"tests="{}" failures="0" errors="1" skipped="{}""#,
            1 + slos + invariants,
            slos + invariants
        )),
        "{xml}"
    );
    assert!(
        xml.contains(
            r#"<testcase classname="synthetic.run" name="completed" time="12.300"><error message="the run was interrupted: SIGINT 12.3 s into 22.0 s of load (56%), phase during:kill order#1" type="interrupted">"#
        ),
        "{xml}"
    );
    assert!(!xml.contains("<failure"), "checks are not judged: {xml}");
    assert_eq!(
        xml.matches("<skipped message=\"not judged, the run was interrupted: ")
            .count(),
        slos + invariants,
        "{xml}"
    );
    assert!(
        xml.contains(&junit::escape(&format!(
            "{IMPOSSIBLE}: measured {} against {}, did not hold",
            r.slos
                .iter()
                .find(|s| s.name == IMPOSSIBLE)
                .unwrap()
                .measured_display(),
            r.slos
                .iter()
                .find(|s| s.name == IMPOSSIBLE)
                .unwrap()
                .target_display()
        ))),
        "{xml}"
    );
    // A run that went its course has no `run` suite.
    assert!(!junit::render(&sample_report()).contains(r#"name="run""#));
}

#[test]
fn an_interruption_during_the_checks_says_the_load_had_run() {
    let i = Interruption {
        by: "SIGTERM".into(),
        stage: "checks".into(),
        phase: "all".into(),
        load_s: 22.0,
        planned_s: 22.0,
        requests: 900,
        convergence_bound_s: 10.0,
    };
    assert_eq!(
        i.describe(),
        "SIGTERM during the checks, after 22.0 s of 22.0 s of load"
    );
}
