use std::sync::Arc;
use std::time::{Duration, Instant};

use contracts::domain::OrderStatus;
use harness::control::{self, Remote};
use harness::environment::{EnvOptions, Instances, Service};
use harness::faults::target::local_links;
use harness::faults::{self, Faultable, Schedule};
use harness::scenario::Scenario;
use harness::seed::GOOD_CUSTOMER;
use reqwest::Method;

use crate::helpers::TestEnv;

async fn products_took(t: &TestEnv) -> Duration {
    let started = Instant::now();
    let answer = t
        .api
        .send::<()>(Method::GET, "/api/products", "", None, &[])
        .await
        .unwrap();
    assert!(answer.status.is_success(), "{}", answer.body);
    started.elapsed()
}

/// Every link has its proxy, the client's requests take `client->gateway`, and the Kafka
/// traffic of an instance takes its own `<instance>->kafka` link, not only its first metadata
/// request: with that link down the saga cannot move, and it completes once the link is back.
#[tokio::test(flavor = "multi_thread")]
async fn every_link_goes_through_a_named_proxy_that_can_fault_it() {
    let Some(t) = TestEnv::start().await else {
        return;
    };
    let names: Vec<String> = t.env.links().iter().map(|l| l.name.clone()).collect();
    assert_eq!(names, local_links(&Instances::default()));
    let client = t.env.chaos_client().unwrap();
    let proxies = client.proxies().await.unwrap();
    for name in &names {
        assert!(proxies.contains_key(name), "no proxy {name}: {proxies:?}");
    }

    let base = products_took(&t).await;
    client
        .add_toxic("client->gateway", &chaos::Toxic::latency(300, 0))
        .await
        .unwrap();
    let slowed = products_took(&t).await;
    assert!(
        slowed >= Duration::from_millis(300),
        "latency on client->gateway: {slowed:?} (before: {base:?})"
    );
    client.reset().await.unwrap();

    client.set_enabled("order#1->kafka", false).await.unwrap();
    let token = t.customer(GOOD_CUSTOMER);
    let placed = t.place(&token, &[("SKU-1003", 1)]).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let held = t
        .api
        .admin_order(&t.admin, placed.order_id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        held.order.status,
        OrderStatus::Pending,
        "the saga moved with its Kafka link down: {held:?}"
    );
    client.set_enabled("order#1->kafka", true).await.unwrap();
    let done = t.terminal(&token, placed.order_id).await;
    assert_eq!(done.status, OrderStatus::Confirmed, "{done:?}");
}

/// A timeline with a kill and a latency applies both on time, heals both, and says so.
#[tokio::test(flavor = "multi_thread")]
async fn a_chaos_timeline_applies_and_heals_each_fault_on_time() {
    let Some(mut t) = TestEnv::start_with(EnvOptions {
        instances: Instances::parse("order=2").unwrap(),
        ..EnvOptions::default()
    })
    .await
    else {
        return;
    };
    let text = r#"
description = "timeline test"
[environment]
instances = { order = 2 }
[load]
users = 1
duration = "4s"
[[load.journeys]]
name = "browse_catalog"
weight = 1
[[chaos]]
at = "500ms"
for = "1s"
target = "order#1"
fault = "kill"
[[chaos]]
at = "500ms"
for = "2s"
target = "gateway->inventory"
fault = "latency"
latency = "200ms"
"#;
    let scenario = Scenario::from_toml(std::path::Path::new("t.toml"), text).unwrap();
    scenario.validate().unwrap();
    let schedule = Schedule::of(&scenario).unwrap();
    let t0 = Instant::now();
    let (windows, slowed) = {
        let env = &mut t.env;
        let api = t.api.clone();
        let probe = async move {
            tokio::time::sleep(Duration::from_millis(1000)).await;
            let started = Instant::now();
            api.send::<()>(Method::GET, "/api/products", "", None, &[])
                .await
                .unwrap();
            started.elapsed()
        };
        tokio::join!(faults::run(&schedule, env.as_mut(), t0), probe)
    };
    let windows = windows.unwrap();
    assert!(
        slowed >= Duration::from_millis(200),
        "catalog read during the latency: {slowed:?}"
    );
    assert_eq!(windows.len(), 2, "{windows:?}");
    let kill = windows.iter().find(|w| w.fault == "kill").unwrap();
    assert_eq!(kill.affected, ["order#1"]);
    assert!(kill.start_s >= 0.5 && kill.start_s < 1.0, "{kill:?}");
    assert!(kill.end_s >= 1.5, "{kill:?}");
    let latency = windows.iter().find(|w| w.fault == "latency").unwrap();
    assert_eq!(latency.affected, ["gateway->inventory#1"]);
    assert!(latency.end_s >= 2.5, "{latency:?}");

    // Healed: no toxic left, the killed instance serves again.
    let proxies = t.env.chaos_client().unwrap().proxies().await.unwrap();
    assert!(proxies.values().all(|p| p.enabled && p.toxics.is_empty()));
    let token = t.customer(GOOD_CUSTOMER);
    for _ in 0..4 {
        let placed = t.place(&token, &[("SKU-1004", 1)]).await;
        let done = t.terminal(&token, placed.order_id).await;
        assert_eq!(done.status, OrderStatus::Confirmed);
    }
}

/// `harness chaos` drives a `harness up` through its env file: processes through the control
/// API, links through the Toxiproxy API.
#[tokio::test(flavor = "multi_thread")]
async fn game_day_commands_reach_the_supervisor_through_the_control_api() {
    let Some(t) = TestEnv::start().await else {
        return;
    };
    let api = t.api.clone();
    let shared = Arc::new(tokio::sync::Mutex::new(t.env));
    let stop = tokio_util::sync::CancellationToken::new();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("env.json");
    control::serve(shared.clone(), stop.clone(), Some(path.clone()))
        .await
        .unwrap();

    let mut remote = Remote::from_env_file(&path).unwrap();
    assert!(
        remote
            .link_names()
            .contains(&"gateway->inventory#1".to_string())
    );
    remote.kill("inventory#1").await.unwrap();
    let down = api
        .send::<()>(Method::GET, "/api/products", "", None, &[])
        .await
        .unwrap();
    assert_eq!(down.status.as_u16(), 502, "{}", down.body);
    let e = remote.kill("nobody#1").await.unwrap_err();
    assert!(format!("{e:#}").contains("no process named"), "{e:#}");

    remote.heal_all().await.unwrap();
    let up = api
        .send::<()>(Method::GET, "/api/products", "", None, &[])
        .await
        .unwrap();
    assert!(up.status.is_success(), "{}", up.body);

    // Scaling rewrites the env file, so the next command sees the new instance and its links.
    remote.scale(Service::Inventory, 2).await.unwrap();
    assert_eq!(remote.instance_count(Service::Inventory), 2);
    assert!(
        remote
            .link_names()
            .contains(&"gateway->inventory#2".to_string())
    );
    let again = Remote::from_env_file(&path).unwrap();
    assert!(again.process_names().contains(&"inventory#2".to_string()));
    let e = remote.scale(Service::Inventory, 9).await.unwrap_err();
    assert!(format!("{e:#}").contains("400"), "{e:#}");
    assert!(format!("{e:#}").contains("between 1 and 8"), "{e:#}");
    remote.scale(Service::Inventory, 1).await.unwrap();
    assert_eq!(remote.instance_count(Service::Inventory), 1);
    stop.cancel();
}

/// A frozen instance holds requests without failing them; the gateway moves a request that is
/// safe to repeat on to the next instance after one attempt's timeout, and tries the frozen one
/// last while it stays ejected.
#[tokio::test(flavor = "multi_thread")]
async fn a_paused_instance_costs_a_catalog_read_one_attempt_timeout_at_most() {
    let Some(mut t) = TestEnv::start_with(EnvOptions {
        instances: Instances::parse("inventory=2").unwrap(),
        ..EnvOptions::default()
    })
    .await
    else {
        return;
    };
    t.env.pause("inventory#1").await.unwrap();
    for _ in 0..4 {
        let took = products_took(&t).await;
        assert!(
            took < Duration::from_secs(3),
            "a catalog read with inventory#1 paused took {took:?}"
        );
    }
    t.env.resume("inventory#1").await.unwrap();
}
