//! Instances added and removed while the environment runs: the gateway learns of them from the
//! upstreams file, without a restart.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use contracts::domain::OrderStatus;
use harness::environment::Service;
use harness::seed::GOOD_CUSTOMER;
use harness::telemetry::scrape::parse_exposition;

use crate::helpers::TestEnv;

/// The gateway's samples of `metric` whose `label` is `value`, summed.
async fn gateway_metric(t: &TestEnv, metric: &str, label: &str, value: &str) -> f64 {
    let target = t
        .env
        .metrics_targets()
        .into_iter()
        .find(|m| m.process == "gateway#1")
        .expect("the gateway serves metrics");
    let text = reqwest::get(&target.url)
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    parse_exposition(&text)
        .unwrap()
        .iter()
        .filter(|s| s.name == metric && s.labels.get(label).is_some_and(|v| v == value))
        .map(|s| s.value)
        .sum()
}

/// The order URLs the upstreams file gives the gateway.
fn order_urls_in_upstreams_file(t: &TestEnv) -> Vec<String> {
    let text = std::fs::read_to_string(t.env.run_dir().join("upstreams.json")).unwrap();
    let lists: serde_json::Value = serde_json::from_str(&text).unwrap();
    lists["order"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u.as_str().unwrap().to_string())
        .collect()
}

/// Places `n` orders and waits until each is confirmed.
async fn orders_confirm(t: &TestEnv, n: usize) {
    let token = t.customer(GOOD_CUSTOMER);
    for _ in 0..n {
        let placed = t.place(&token, &[("SKU-1002", 1)]).await;
        let done = t.terminal(&token, placed.order_id).await;
        assert_eq!(done.status, OrderStatus::Confirmed, "{done:?}");
    }
}

/// An order instance added at run time takes requests through the gateway (and runs sagas
/// through its own Kafka link) without a restart of anything; scaled back, it leaves the
/// gateway's rotation before it stops, so requests sent meanwhile all succeed, and its process
/// and links are gone.
#[tokio::test(flavor = "multi_thread")]
async fn an_order_instance_added_at_run_time_takes_requests_and_leaves_without_a_failed_one() {
    let Some(mut t) = TestEnv::start().await else {
        return;
    };
    assert_eq!(order_urls_in_upstreams_file(&t).len(), 1);

    t.env.scale(Service::Order, 2).await.unwrap();
    assert_eq!(t.env.instance_count(Service::Order), 2);
    let links = t.env.link_names();
    for link in ["gateway->order#2", "order#2->kafka"] {
        assert!(links.contains(&link.to_string()), "no {link}: {links:?}");
    }
    let urls = order_urls_in_upstreams_file(&t);
    let order2 = t
        .env
        .links()
        .iter()
        .find(|l| l.name == "gateway->order#2")
        .map(|l| format!("http://{}", l.listen))
        .unwrap();
    assert_eq!(urls.len(), 2, "{urls:?}");
    assert_eq!(urls[1], order2);

    let token = t.customer(GOOD_CUSTOMER);
    t.eventually(
        "requests through the gateway reach order#2",
        || async {
            t.api.my_orders(&token).await.unwrap();
            gateway_metric(&t, "gateway_upstream_requests_total", "upstream", "order#2").await
        },
        |n| *n >= 1.0,
    )
    .await;
    assert_eq!(
        gateway_metric(&t, "gateway_upstream_instances", "service", "order").await,
        2.0
    );
    // Round-robin sends about half of these to order#2.
    orders_confirm(&t, 4).await;

    let pid = t
        .env
        .process_infos()
        .into_iter()
        .find(|p| p.name == "order#2")
        .unwrap()
        .pid;
    let stop = Arc::new(AtomicBool::new(false));
    let reads = tokio::spawn({
        let api = t.api.clone();
        let token = token.clone();
        let stop = stop.clone();
        async move {
            let mut failures = Vec::new();
            let mut sent = 0;
            while !stop.load(Ordering::Relaxed) {
                sent += 1;
                if let Err(e) = api.my_orders(&token).await {
                    failures.push(format!("{e:#}"));
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            (sent, failures)
        }
    });
    t.env.scale(Service::Order, 1).await.unwrap();
    stop.store(true, Ordering::Relaxed);
    let (sent, failures) = reads.await.unwrap();
    assert!(sent > 10, "only {sent} reads while scaling down");
    assert!(
        failures.is_empty(),
        "{} of {sent} reads failed while order#2 was removed: {failures:?}",
        failures.len()
    );

    assert_eq!(t.env.instance_count(Service::Order), 1);
    assert!(!t.env.process_names().contains(&"order#2".to_string()));
    let links = t.env.link_names();
    assert!(
        !links.iter().any(|l| l.contains("order#2")),
        "order#2's links are still listed: {links:?}"
    );
    let pid = nix::unistd::Pid::from_raw(i32::try_from(pid).unwrap());
    assert_eq!(
        nix::sys::signal::kill(pid, None),
        Err(nix::errno::Errno::ESRCH),
        "order#2's process is still there"
    );
    assert_eq!(order_urls_in_upstreams_file(&t).len(), 1);
    assert_eq!(
        gateway_metric(&t, "gateway_upstream_instances", "service", "order").await,
        1.0
    );
    orders_confirm(&t, 2).await;
}
