//! Traces and metrics of the real system: the spans every process exports to the harness's
//! collector, the Prometheus `/metrics` of every process (checked by `promtool`, an independent
//! checker), and the dashboards' queries against what a live system exports.

use std::collections::{BTreeMap, BTreeSet};
use std::process::Stdio;
use std::time::{Duration, Instant};

use contracts::domain::OrderStatus;
use harness::seed;
use harness::telemetry::collector::{fetch_trace, fetch_trace_ids_for_order};
use harness::telemetry::dashboards;
use harness::telemetry::scrape::{Scraper, parse_exposition};
use harness::telemetry::store::{SpanKind, SpanRecord};
use harness::telemetry::tree::{RenderOptions, Tree, render_text};
use reqwest::Method;
use tokio::io::AsyncWriteExt;

use crate::helpers::{TestEnv, lines};

const TRACE_ID: &str = "5d1c0a8f4e2b47c9a1f3e6d8b0c2a4e6";
const CLIENT_SPAN: &str = "a1b2c3d4e5f60718";

fn under_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "false")
}

/// Places an order as `token` with our own W3C trace context and waits until it is terminal.
async fn place_traced(
    t: &TestEnv,
    token: &str,
    items: &[(&str, i64)],
    trace_id: &str,
) -> (String, OrderStatus) {
    let traceparent = format!("00-{trace_id}-{CLIENT_SPAN}-01");
    let key = uuid::Uuid::new_v4().to_string();
    let body = contracts::http::PlaceOrderRequest {
        items: lines(items),
    };
    let answer = t
        .api
        .send(
            Method::POST,
            "/api/orders",
            token,
            Some(&body),
            &[("idempotency-key", &key), ("traceparent", &traceparent)],
        )
        .await
        .unwrap();
    assert_eq!(answer.status.as_u16(), 201, "{}", answer.body);
    let view: contracts::http::OrderView = answer.json().unwrap();
    let done = t.terminal(token, view.order_id).await;
    (view.order_id.to_string(), done.status)
}

/// The trace's spans once every service's work in it has arrived: spans from all four
/// processes, and no span whose parent is missing (other than the client's).
async fn whole_trace(t: &TestEnv, trace_id: &str, must_have: &[&str]) -> Vec<SpanRecord> {
    let store = t.env.spans().expect("traces are collected by default");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let spans = store.trace(trace_id).unwrap_or_default();
        let services: BTreeSet<&str> = spans.iter().map(|s| s.service.as_str()).collect();
        let names: BTreeSet<String> = spans
            .iter()
            .map(|s| format!("{} {}", s.service, s.name))
            .collect();
        let complete = ["gateway", "order", "inventory", "payment"]
            .iter()
            .all(|s| services.contains(s))
            && must_have.iter().all(|n| names.contains(*n));
        if complete {
            // One more export interval, for the spans of the last hop.
            tokio::time::sleep(Duration::from_millis(600)).await;
            return store.trace(trace_id).unwrap_or_default();
        }
        assert!(
            Instant::now() < deadline,
            "trace {trace_id} incomplete after 20 s: services {services:?}, spans {names:#?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn by_id(spans: &[SpanRecord]) -> BTreeMap<&str, &SpanRecord> {
    spans.iter().map(|s| (s.span_id.as_str(), s)).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_order_is_one_trace_across_all_four_processes_with_each_kafka_hop_under_its_cause() {
    let Some(t) = TestEnv::start().await else {
        return;
    };
    let customer = t.customer(seed::GOOD_CUSTOMER);
    let (order_id, status) = place_traced(&t, &customer, &[("SKU-1001", 1)], TRACE_ID).await;
    assert_eq!(status, OrderStatus::Confirmed);
    let spans = whole_trace(
        &t,
        TRACE_ID,
        &[
            "gateway POST /api/orders",
            "order POST /orders",
            "inventory process inventory.commands",
            "payment process payment.commands",
            "order process payment.events",
        ],
    )
    .await;
    let index = by_id(&spans);

    // The gateway continued the client's context: its server span is the child of ours.
    let root = spans
        .iter()
        .find(|s| s.name == "POST /api/orders")
        .expect("the gateway's server span");
    assert_eq!(root.service, "gateway");
    assert_eq!(root.kind, SpanKind::Server);
    assert_eq!(root.parent_span_id.as_deref(), Some(CLIENT_SPAN));
    assert_eq!(root.attr("http.response.status_code"), Some("201"));
    assert_eq!(root.attr("http.route"), Some("/api/orders"));

    // Every other span hangs off a span of this trace: nothing is orphaned along the way.
    for s in &spans {
        if s.span_id != root.span_id {
            let parent = s.parent_span_id.as_deref().unwrap_or("-");
            assert!(
                index.contains_key(parent),
                "{} {} has the parent {parent}, which is not in the trace",
                s.service,
                s.name
            );
        }
    }

    // Each Kafka hop is a child of the publish that sent it, and the publish a descendant of the
    // work that wrote the message.
    let processes: Vec<&SpanRecord> = spans
        .iter()
        .filter(|s| s.name.starts_with("process "))
        .collect();
    assert!(processes.len() >= 5, "{processes:#?}");
    for p in &processes {
        assert_eq!(p.kind, SpanKind::Consumer);
        assert_eq!(p.attr("messaging.system"), Some("kafka"));
        let topic = p.attr("messaging.destination.name").unwrap();
        let parent = index[p.parent_span_id.as_deref().unwrap()];
        assert_eq!(parent.name, format!("publish {topic}"), "{p:#?}");
        assert_eq!(parent.kind, SpanKind::Producer);
        assert_eq!(
            parent.attr("messaging.message.id"),
            p.attr("messaging.message.id")
        );
        // The time in Kafka and in the outbox are spans of their own.
        assert!(
            spans.iter().any(|s| s.name == format!("transit {topic}")
                && s.parent_span_id.as_deref() == Some(parent.span_id.as_str())),
            "no transit span under publish {topic}"
        );
        let writer = index[parent.parent_span_id.as_deref().unwrap()];
        assert!(
            spans
                .iter()
                .any(|s| s.name == format!("outbox wait {topic}")
                    && s.parent_span_id == parent.parent_span_id),
            "no outbox wait beside publish {topic} under {}",
            writer.name
        );
    }
    // The database work is there too, with the semantic conventions' attributes.
    let db = spans
        .iter()
        .find(|s| s.service == "inventory" && s.attr("db.system.name") == Some("sqlite"))
        .expect("an inventory database span");
    assert_eq!(db.kind, SpanKind::Client);
    assert!(db.attr("db.query.text").is_some_and(|q| !q.is_empty()));

    // The services' JSON logs name the trace and the span each line was written in.
    let log = std::fs::read_to_string(t.env.run_dir().join("logs/order-1.log")).unwrap();
    let placed = log
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|l| l["message"] == "order placed" && l["trace_id"] == TRACE_ID)
        .unwrap_or_else(|| panic!("no \"order placed\" line with trace_id {TRACE_ID} in\n{log}"));
    let span_id = placed["span_id"].as_str().unwrap();
    assert!(
        index.contains_key(span_id),
        "the log line's span {span_id} is not a span of the trace"
    );

    // The collector finds the trace by the order id the services put on their spans (the
    // client's reads of the order while it waited are traces of their own that name it too).
    let base = t.env.otlp_endpoint().unwrap();
    let ids = fetch_trace_ids_for_order(&base, &order_id).await.unwrap();
    assert_eq!(ids.first().map(String::as_str), Some(TRACE_ID), "{ids:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_declined_orders_trace_shows_the_stock_released_by_the_compensation() {
    let Some(t) = TestEnv::start().await else {
        return;
    };
    let declining = t.customer(seed::DECLINING_CUSTOMER);
    let trace_id = "0e9d8c7b6a5f4e3d2c1b0a9f8e7d6c5b";
    let (order_id, status) = place_traced(&t, &declining, &[("SKU-1005", 3)], trace_id).await;
    assert_eq!(status, OrderStatus::Cancelled);
    let spans = whole_trace(&t, trace_id, &["inventory process inventory.commands"]).await;
    let kinds: Vec<(&str, &str)> = spans
        .iter()
        .filter_map(|s| Some((s.name.as_str(), s.attr("message.kind")?)))
        .collect();
    for expected in [
        ("publish payment.events", "PaymentDeclined"),
        ("publish inventory.commands", "ReleaseStock"),
        ("process inventory.commands", "ReleaseStock"),
        ("publish inventory.events", "StockReleased"),
    ] {
        assert!(kinds.contains(&expected), "{expected:?} not in {kinds:#?}");
    }

    // What `harness trace ORDER_ID` prints: fetched by order id from the collector's API.
    let base = t.env.otlp_endpoint().unwrap();
    let ids = fetch_trace_ids_for_order(&base, &order_id).await.unwrap();
    assert_eq!(ids.first().map(String::as_str), Some(trace_id), "{ids:?}");
    let fetched = fetch_trace(&base, trace_id).await.unwrap().unwrap();
    let text = render_text(&Tree::build(fetched), RenderOptions::default());
    let release = text
        .lines()
        .find(|l| l.contains("process inventory.commands") && l.contains("ReleaseStock"))
        .unwrap_or_else(|| panic!("no compensation line in\n{text}"));
    assert!(release.contains("inventory#1"), "{release}");
    assert!(text.lines().next().unwrap().contains(&order_id), "{text}");
}

/// `promtool check metrics` on one exposition; `None` when promtool cannot be run.
async fn promtool(exposition: &str) -> Option<(bool, String)> {
    let mut child = tokio::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .ok()?;
    let mut stdin = child.stdin.take()?;
    stdin.write_all(exposition.as_bytes()).await.ok()?;
    drop(stdin);
    let out = child.wait_with_output().await.ok()?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Some((out.status.success(), text))
}

/// Exercises every path that records a metric once: a confirmed order, a declined one, a
/// rejected one, catalog reads; then returns each process's `/metrics` text.
async fn exercised_metrics(t: &TestEnv) -> BTreeMap<String, String> {
    let customer = t.customer(seed::GOOD_CUSTOMER);
    let declining = t.customer(seed::DECLINING_CUSTOMER);
    t.terminal(
        &customer,
        t.place(&customer, &[("SKU-1001", 1)]).await.order_id,
    )
    .await;
    t.terminal(
        &declining,
        t.place(&declining, &[("SKU-1005", 3)]).await.order_id,
    )
    .await;
    // More than the scarce SKU's three units: rejected.
    t.terminal(
        &customer,
        t.place(&customer, &[(seed::SCARCE_SKU, 4)]).await.order_id,
    )
    .await;
    t.api
        .send::<()>(Method::GET, "/api/products", "", None, &[])
        .await
        .unwrap();
    // The gauges refresh once a second and consumer lag comes with librdkafka's statistics.
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    let mut texts = BTreeMap::new();
    for target in t.env.metrics_targets() {
        let body = reqwest::get(&target.url).await.unwrap();
        assert!(
            body.status().is_success(),
            "{}: {}",
            target.url,
            body.status()
        );
        let content_type = body.headers()["content-type"].to_str().unwrap().to_string();
        assert!(content_type.starts_with("text/plain"), "{content_type}");
        texts.insert(target.process.clone(), body.text().await.unwrap());
    }
    texts
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_process_serves_metrics_that_promtool_accepts() {
    let Some(t) = TestEnv::start().await else {
        return;
    };
    let texts = exercised_metrics(&t).await;
    assert_eq!(
        texts.keys().cloned().collect::<Vec<_>>(),
        [
            "chaos-proxy",
            "gateway#1",
            "inventory#1",
            "order#1",
            "payment#1"
        ]
    );
    for (process, text) in &texts {
        match promtool(text).await {
            None => {
                assert!(
                    !under_ci(),
                    "under CI promtool must be installed (Debian's prometheus package)"
                );
                eprintln!("skipped: promtool is not installed (apt-get install prometheus)");
                return;
            }
            Some((ok, out)) => assert!(ok, "promtool check metrics on {process}:\n{out}"),
        }
    }
    // What the RED, saga and messaging metrics say after three orders.
    let samples = parse_exposition(&texts["order#1"]).unwrap();
    let value = |name: &str, labels: &[(&str, &str)]| -> f64 {
        samples
            .iter()
            .filter(|s| {
                s.name == name
                    && labels
                        .iter()
                        .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
            })
            .map(|s| s.value)
            .sum()
    };
    assert_eq!(value("saga_started_total", &[]), 3.0);
    assert_eq!(
        value("saga_completed_total", &[("status", "CONFIRMED")]),
        1.0
    );
    assert_eq!(
        value(
            "saga_completed_total",
            &[("status", "CANCELLED"), ("reason", "payment_declined")]
        ),
        1.0
    );
    assert_eq!(
        value(
            "saga_completed_total",
            &[("status", "REJECTED"), ("reason", "stock_rejected")]
        ),
        1.0
    );
    assert_eq!(
        value(
            "http_server_request_duration_seconds_count",
            &[("method", "POST"), ("route", "/orders"), ("status", "201")]
        ),
        3.0
    );
    assert!(value("outbox_published_total", &[("topic", "inventory.commands")]) >= 3.0);
    let gateway = parse_exposition(&texts["gateway#1"]).unwrap();
    assert!(
        gateway
            .iter()
            .any(|s| s.name == "gateway_upstream_requests_total"
                && s.labels.get("upstream").map(String::as_str) == Some("order#1")
                && s.labels.get("outcome").map(String::as_str) == Some("201")
                && s.value == 3.0)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_metric_the_dashboards_query_is_exported_by_a_live_system() {
    let Some(t) = TestEnv::start().await else {
        return;
    };
    let texts = exercised_metrics(&t).await;
    let exported: BTreeSet<String> = texts
        .values()
        .flat_map(|text| parse_exposition(text).unwrap())
        .map(|s| s.name)
        .collect();
    let files = dashboards::dashboard_files(&dashboards::repository_dir()).unwrap();
    assert!(files.len() >= 3, "{files:?}");
    let mut missing = Vec::new();
    let mut queried = 0;
    for file in &files {
        let json = std::fs::read_to_string(file).unwrap();
        for query in dashboards::queries(&json).unwrap() {
            let expr = promql_parser::parser::parse(&query)
                .unwrap_or_else(|e| panic!("{}: {query}: {e}", file.display()));
            for name in selector_names(&expr) {
                queried += 1;
                if !exported.contains(&name) {
                    missing.push(format!("{}: {name} (in {query})", file.display()));
                }
            }
        }
    }
    assert!(queried > 30, "only {queried} metric references found");
    assert!(
        missing.is_empty(),
        "dashboard queries use metrics no process exports:\n{}",
        missing.join("\n")
    );

    // The harness's own scraper reads the same: one scrape of every process.
    for target in t.env.metrics_targets() {
        let samples = Scraper::scrape_once(&target).await.unwrap();
        assert!(!samples.is_empty(), "{}", target.process);
    }
}

/// The metric names of every selector in a PromQL expression.
fn selector_names(expr: &promql_parser::parser::Expr) -> Vec<String> {
    use promql_parser::parser::Expr;
    match expr {
        Expr::VectorSelector(v) => v.name.clone().into_iter().collect(),
        Expr::MatrixSelector(m) => m.vs.name.clone().into_iter().collect(),
        Expr::Aggregate(a) => {
            let mut names = selector_names(&a.expr);
            if let Some(p) = &a.param {
                names.extend(selector_names(p));
            }
            names
        }
        Expr::Unary(u) => selector_names(&u.expr),
        Expr::Binary(b) => {
            let mut names = selector_names(&b.lhs);
            names.extend(selector_names(&b.rhs));
            names
        }
        Expr::Paren(p) => selector_names(&p.expr),
        Expr::Subquery(s) => selector_names(&s.expr),
        Expr::Call(c) => c.args.args.iter().flat_map(|a| selector_names(a)).collect(),
        Expr::Extension(_) | Expr::NumberLiteral(_) | Expr::StringLiteral(_) => Vec::new(),
    }
}
