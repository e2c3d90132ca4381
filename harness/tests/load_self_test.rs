#![allow(clippy::unwrap_used, clippy::expect_used)]
//! The load generator measured against the system it loaded, goose self-test style: a tiny run
//! (2 users, 3 s, and an open-model load of 30 journeys/s for 3 s from a pool of 800 users) on
//! the local backend, and what we counted must equal what the server and goose counted. Needs
//! the service binaries built (`cargo build --workspace --bins`).

use std::collections::{BTreeMap, BTreeSet};

use contracts::domain::OrderId;
use harness::client::ApiClient;
use harness::environment::local::LocalEnvironment;
use harness::environment::{EnvOptions, Environment};
use harness::load::endpoint::Endpoint;
use harness::load::{self, LoadTarget};
use harness::metrics::ALL;
use harness::scenario::Scenario;

const SCENARIO: &str = r#"
description = "load self-test"

[load]
users = 2
duration = "3s"
think_time = "20ms..80ms"

[[load.journeys]]
name = "browse_catalog"
weight = 1

[[load.journeys]]
name = "view_product"
weight = 1

[[load.journeys]]
name = "place_order"
weight = 3

[[load.journeys]]
name = "follow_order"
weight = 2

[[load.journeys]]
name = "list_my_orders"
weight = 1

[[load.journeys]]
name = "admin_restock"
weight = 1

[[load.journeys]]
name = "check_payments"
weight = 1

[checks]
convergence_timeout = "30s"
"#;

fn scenario() -> Scenario {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("load_self_test.toml");
    std::fs::write(&path, SCENARIO).unwrap();
    Scenario::load(&path).unwrap_or_else(|e| panic!("{e}"))
}

#[tokio::test(flavor = "multi_thread")]
async fn what_the_load_counted_equals_what_the_server_and_goose_counted() {
    let env = LocalEnvironment::start(EnvOptions {
        build: false,
        ..Default::default()
    })
    .await
    .unwrap_or_else(|e| panic!("environment did not start: {e:#}"));
    let info = env.info();
    let target = LoadTarget::from_env(&info).unwrap();
    let outcome = load::run(&scenario(), &target, Vec::new(), std::time::Instant::now())
        .await
        .unwrap_or_else(|e| panic!("{e:#}"));
    let m = &outcome.measurements;
    let stats = &m.endpoints[ALL];

    // Every request we recorded, goose sent, and the other way round.
    let ours: BTreeMap<String, u64> = stats
        .iter()
        .map(|(name, s)| (name.clone(), s.requests()))
        .collect();
    assert_eq!(ours, outcome.goose_requests);
    for e in Endpoint::ALL {
        let s = stats
            .get(e.name())
            .unwrap_or_else(|| panic!("no {} in {ours:?}", e.name()));
        assert!(s.latency.count() >= s.requests(), "{}", e.name());
        assert!(s.latency.quantile(0.99).is_some(), "{}", e.name());
    }

    // Every POST is an attempt in the history.
    let posts = stats[Endpoint::PlaceOrder.name()].requests();
    assert_eq!(outcome.history.attempts.len() as u64, posts);
    let replays = outcome
        .history
        .attempts
        .iter()
        .filter(|a| {
            matches!(
                a.outcome,
                harness::checks::model::AttemptOutcome::Acknowledged { replayed: true, .. }
            )
        })
        .count();

    // The orders acknowledged are exactly the orders the system has.
    let acknowledged: BTreeSet<OrderId> = outcome
        .history
        .attempts
        .iter()
        .filter_map(|a| a.outcome.acknowledged())
        .collect();
    assert!(!acknowledged.is_empty());
    let api = ApiClient::new(&info.gateway_url).unwrap();
    let orders = api.admin_orders(&info.admin_token).await.unwrap();
    let on_server: BTreeSet<OrderId> = orders.iter().map(|o| o.order.order_id).collect();
    assert_eq!(acknowledged, on_server, "{replays} replays");

    // Every order was followed to its end, and each end is timed.
    let saga = &m.saga_completion[ALL];
    let seen_terminal: u64 = m.outcomes.values().sum();
    assert_eq!(m.outcomes.get("UNFINISHED"), None, "{:?}", m.outcomes);
    assert_eq!(saga.count(), seen_terminal);
    assert_eq!(seen_terminal, acknowledged.len() as u64);
    let mut server_outcomes: BTreeMap<String, u64> = BTreeMap::new();
    for o in &orders {
        let view = o.view.as_ref().expect("the read model caught up");
        *server_outcomes
            .entry(view.status.as_str().to_string())
            .or_default() += 1;
    }
    assert_eq!(m.outcomes, server_outcomes);

    // The timeline adds up to the totals.
    let bucketed: u64 = m.timeline.iter().map(|b| b.requests).sum();
    assert_eq!(bucketed, ours.values().sum::<u64>());
    let ended: u64 = m
        .timeline
        .iter()
        .map(|b| b.orders_confirmed + b.orders_rejected + b.orders_cancelled)
        .sum();
    assert_eq!(ended, seen_terminal);
    assert!(m.duration.as_secs_f64() >= 2.5, "{:?}", m.duration);

    Box::new(env).stop().await;
}

const OPEN_SCENARIO: &str = r#"
description = "open-model load self-test"

[load]
arrival_rate = "30/s"
duration = "3s"
# A pool as large as `overload`'s, most of it idle: launching it must not eat the schedule's
# first second.
users = 800

[[load.journeys]]
name = "browse_catalog"
weight = 1

[[load.journeys]]
name = "place_order"
weight = 2

[[load.journeys]]
name = "follow_order"
weight = 1

[checks]
convergence_timeout = "30s"
"#;

#[tokio::test(flavor = "multi_thread")]
async fn an_open_load_starts_its_schedule_and_counts_each_journey_once() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("open_load_self_test.toml");
    std::fs::write(&path, OPEN_SCENARIO).unwrap();
    let scenario = Scenario::load(&path).unwrap_or_else(|e| panic!("{e}"));
    let env = LocalEnvironment::start(EnvOptions {
        build: false,
        ..Default::default()
    })
    .await
    .unwrap_or_else(|e| panic!("environment did not start: {e:#}"));
    let info = env.info();
    let target = LoadTarget::from_env(&info).unwrap();
    let outcome = load::run(&scenario, &target, Vec::new(), std::time::Instant::now())
        .await
        .unwrap_or_else(|e| panic!("{e:#}"));
    let m = &outcome.measurements;
    let stats = m
        .endpoints
        .get(ALL)
        .unwrap_or_else(|| panic!("the load sent no request at all: {:?}", m.arrivals));

    // Goose sent what we recorded, and without coordinated-omission backfill on either side:
    // one latency per request.
    let ours: BTreeMap<String, u64> = stats
        .iter()
        .map(|(name, s)| (name.clone(), s.requests()))
        .collect();
    assert_eq!(ours, outcome.goose_requests);
    for (name, s) in stats {
        assert_eq!(s.latency.count(), s.served(), "{name}");
    }

    // 30/s for 3 s is 90 journeys; each was started or dropped, and each is in its second.
    let arrivals = m.arrivals[ALL];
    assert_eq!(arrivals.scheduled, 90);
    assert_eq!(arrivals.started + arrivals.dropped, 90, "{arrivals:?}");
    assert!(arrivals.started > 0, "{arrivals:?}");
    let due: Vec<u64> = m.timeline.iter().map(|b| b.arrivals).collect();
    assert_eq!(due[..3], [30, 30, 30], "{due:?}");
    let dropped: u64 = m.timeline.iter().map(|b| b.dropped).sum();
    assert_eq!(dropped, arrivals.dropped);
    // The pool was running when the schedule started. With a client built per user, launching
    // 800 users took longer than this whole load in a debug build (it sent no request), and
    // over a second in a release build, every arrival of the first second dropped.
    let first = &m.timeline[0];
    assert!(
        first.dropped <= 3,
        "{} of 30 dropped in second 0",
        first.dropped
    );

    // The orders acknowledged are exactly the orders the system has.
    let posts = stats[Endpoint::PlaceOrder.name()].requests();
    assert_eq!(outcome.history.attempts.len() as u64, posts);
    let acknowledged: BTreeSet<OrderId> = outcome
        .history
        .attempts
        .iter()
        .filter_map(|a| a.outcome.acknowledged())
        .collect();
    assert!(!acknowledged.is_empty());
    let api = ApiClient::new(&info.gateway_url).unwrap();
    let orders = api.admin_orders(&info.admin_token).await.unwrap();
    let on_server: BTreeSet<OrderId> = orders.iter().map(|o| o.order.order_id).collect();
    assert_eq!(acknowledged, on_server);

    Box::new(env).stop().await;
}
