//! Scaling at run time on the containers backend: an instance's container joins the run's
//! network, the gateway's rotation (through the upstreams file on its mount) and the scrape
//! targets, and leaves them again, under load, without a failed request and without a trace.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use contracts::domain::OrderStatus;
use harness::environment::Service;
use harness::environment::containers::docker::LABEL_RUN;
use harness::seed::GOOD_CUSTOMER;
use harness::telemetry::scrape::parse_exposition;
use reqwest::Method;

use crate::helpers::{TestEnv, lines};

/// The samples of `metric` in the `/metrics` of `process` whose labels all match, summed.
async fn metric(t: &TestEnv, process: &str, metric: &str, labels: &[(&str, &str)]) -> f64 {
    let target = t
        .env
        .metrics_targets()
        .into_iter()
        .find(|m| m.process == process)
        .unwrap_or_else(|| panic!("{process} is not a metrics target"));
    let text = reqwest::get(&target.url)
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    parse_exposition(&text)
        .unwrap()
        .iter()
        .filter(|s| s.name == metric)
        .filter(|s| {
            labels
                .iter()
                .all(|(k, v)| s.labels.get(*k).is_some_and(|l| l.starts_with(v)))
        })
        .map(|s| s.value)
        .sum()
}

/// The order URLs the upstreams file gives the gateway.
fn order_urls(t: &TestEnv) -> Vec<String> {
    let file = t.env.run_dir().join("discovery/upstreams.json");
    let text = std::fs::read_to_string(&file).unwrap();
    let lists: serde_json::Value = serde_json::from_str(&text).unwrap();
    lists["order"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u.as_str().unwrap().to_string())
        .collect()
}

/// A little load that places orders, follows them and reads the catalog until stopped, and
/// keeps every request that did not succeed.
struct Load {
    stop: Arc<AtomicBool>,
    users: Vec<tokio::task::JoinHandle<(usize, Vec<String>)>>,
}

impl Load {
    fn start(t: &TestEnv, users: usize) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let users = (0..users)
            .map(|_| {
                let api = t.api.clone();
                let token = t.customer(GOOD_CUSTOMER);
                let stop = stop.clone();
                tokio::spawn(async move {
                    let mut sent = 0;
                    let mut failed = Vec::new();
                    while !stop.load(Ordering::Relaxed) {
                        let key = uuid::Uuid::new_v4().to_string();
                        let placed = api
                            .place_order(&token, lines(&[("SKU-1002", 1)]), Some(&key))
                            .await;
                        let read = api
                            .send::<()>(Method::GET, "/api/orders", &token, None, &[])
                            .await;
                        let catalog = api
                            .send::<()>(Method::GET, "/api/products", "", None, &[])
                            .await;
                        for (what, answer) in [
                            ("POST /api/orders", placed),
                            ("GET /api/orders", read),
                            ("GET /api/products", catalog),
                        ] {
                            sent += 1;
                            match answer {
                                Ok(a) if a.status.is_success() => {}
                                Ok(a) => failed.push(format!("{what}: {} {}", a.status, a.body)),
                                Err(e) => failed.push(format!("{what}: {e:#}")),
                            }
                        }
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                    (sent, failed)
                })
            })
            .collect();
        Self { stop, users }
    }

    /// Stops it; what it sent, and what failed.
    async fn finish(self) -> (usize, Vec<String>) {
        self.stop.store(true, Ordering::Relaxed);
        let mut sent = 0;
        let mut failed = Vec::new();
        for user in self.users {
            let (s, f) = user.await.unwrap();
            sent += s;
            failed.extend(f);
        }
        (sent, failed)
    }
}

/// The engine, as the test reads it.
async fn engine() -> bollard::Docker {
    bollard::Docker::connect_with_local_defaults()
        .unwrap()
        .negotiate_version()
        .await
        .unwrap()
}

/// The run label of the environment's containers, read from its gateway's container (named in
/// its log command, `docker logs <container>`).
async fn run_label(t: &TestEnv, docker: &bollard::Docker) -> String {
    let info = t
        .env
        .process_infos()
        .into_iter()
        .find(|p| p.name == "gateway#1")
        .unwrap();
    let container = info.log.strip_prefix("docker logs ").unwrap().to_string();
    let inspect = docker
        .inspect_container(
            &container,
            None::<bollard::query_parameters::InspectContainerOptions>,
        )
        .await
        .unwrap();
    inspect.config.unwrap().labels.unwrap()[LABEL_RUN].clone()
}

/// The run's containers by name, with the volumes mounted in them.
async fn containers_of(docker: &bollard::Docker, run: &str) -> HashMap<String, Vec<String>> {
    let filters = HashMap::from([("label".to_string(), vec![format!("{LABEL_RUN}={run}")])]);
    let listed = docker
        .list_containers(Some(
            bollard::query_parameters::ListContainersOptionsBuilder::default()
                .all(true)
                .filters(&filters)
                .build(),
        ))
        .await
        .unwrap();
    listed
        .into_iter()
        .map(|c| {
            let name = c.names.unwrap_or_default().join(",");
            let volumes = c
                .mounts
                .unwrap_or_default()
                .into_iter()
                .filter_map(|m| m.name)
                .collect();
            (name, volumes)
        })
        .collect()
}

async fn networks_of(docker: &bollard::Docker, run: &str) -> Vec<String> {
    let filters = HashMap::from([("label".to_string(), vec![format!("{LABEL_RUN}={run}")])]);
    docker
        .list_networks(Some(
            bollard::query_parameters::ListNetworksOptionsBuilder::default()
                .filters(&filters)
                .build(),
        ))
        .await
        .unwrap()
        .into_iter()
        .filter_map(|n| n.name)
        .collect()
}

/// An order container added under load joins the gateway's rotation and takes requests (the
/// gateway's own count for it rises, and so does the instance's), is scraped, and when scaled
/// away leaves the rotation before it stops: not one request of the load fails. Its container
/// and links are gone then, and once the environment stops nothing of the run is left: no
/// container, network, volume or temporary directory.
#[tokio::test(flavor = "multi_thread")]
async fn an_order_container_added_under_load_takes_requests_and_leaves_without_a_failed_one_or_a_trace()
 {
    let Some(mut t) = TestEnv::start().await else {
        return;
    };
    let docker = engine().await;
    let run = run_label(&t, &docker).await;
    assert_eq!(order_urls(&t).len(), 1);

    let load = Load::start(&t, 2);
    t.env.scale(Service::Order, 2).await.unwrap();
    assert_eq!(t.env.instance_count(Service::Order), 2);
    let links = t.env.link_names();
    for link in ["gateway->order#2", "order#2->kafka", "order#2->db"] {
        assert!(links.contains(&link.to_string()), "no {link}: {links:?}");
    }
    let urls = order_urls(&t);
    assert_eq!(urls.len(), 2, "{urls:?}");
    let order2 = t.env.links().iter().find(|l| l.name == "gateway->order#2");
    assert_eq!(urls[1], format!("http://{}", order2.unwrap().listen));
    let scraped = t.env.watch_metrics_targets().borrow().clone();
    assert!(
        scraped.iter().any(|m| m.process == "order#2"),
        "order#2 is not scraped: {scraped:?}"
    );

    // The gateway routes to it, and it serves: both say so.
    let routed = t
        .eventually(
            "the gateway sends requests to order#2",
            || {
                metric(
                    &t,
                    "gateway#1",
                    "gateway_upstream_requests_total",
                    &[("upstream", "order#2")],
                )
            },
            |n| *n >= 20.0,
        )
        .await;
    let served = metric(
        &t,
        "order#2",
        "http_server_request_duration_seconds_count",
        &[("route", "/orders")],
    )
    .await;
    assert!(served >= 10.0, "order#2 served {served} order requests");
    assert_eq!(
        metric(
            &t,
            "gateway#1",
            "gateway_upstream_instances",
            &[("service", "order")]
        )
        .await,
        2.0
    );

    t.env.scale(Service::Order, 1).await.unwrap();
    // A little longer under load: what was sent to order#2 is answered, nothing goes there now.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (sent, failed) = load.finish().await;
    eprintln!("scaled order 1 -> 2 -> 1 under {sent} requests; the gateway sent order#2 {routed}");
    assert!(sent >= 30, "only {sent} requests of load");
    assert!(
        failed.is_empty(),
        "{} of {sent} requests failed while order#2 came and went (the gateway sent it \
         {routed}): {failed:?}",
        failed.len()
    );

    assert_eq!(t.env.instance_count(Service::Order), 1);
    let links = t.env.link_names();
    assert!(
        !links.iter().any(|l| l.contains("order#2")),
        "order#2's links are still listed: {links:?}"
    );
    let left = containers_of(&docker, &run).await;
    assert!(
        !left.keys().any(|name| name.ends_with("-order-2")),
        "order#2's container is still there: {left:?}"
    );
    assert_eq!(order_urls(&t).len(), 1);
    assert_eq!(
        metric(
            &t,
            "gateway#1",
            "gateway_upstream_instances",
            &[("service", "order")]
        )
        .await,
        1.0
    );
    let token = t.customer(GOOD_CUSTOMER);
    let placed = t.place(&token, &[("SKU-1002", 1)]).await;
    assert_eq!(
        t.terminal(&token, placed.order_id).await.status,
        OrderStatus::Confirmed
    );

    // Scaled away, its log is still kept for the report.
    let logs = tempfile::tempdir().unwrap();
    t.env.save_logs(logs.path()).await.unwrap();
    assert!(logs.path().join("order-2.log").exists());

    let volumes: Vec<String> = left.into_values().flatten().collect();
    let run_dir = t.env.run_dir().to_path_buf();
    t.env.stop().await;
    assert_eq!(containers_of(&docker, &run).await, HashMap::new());
    assert_eq!(networks_of(&docker, &run).await, Vec::<String>::new());
    for volume in volumes {
        assert!(
            docker.inspect_volume(&volume).await.is_err(),
            "the volume {volume} is still there"
        );
    }
    assert!(!run_dir.exists(), "{} is still there", run_dir.display());
}

/// An instance that cannot start (its database is off the network, so it exits) is not added:
/// scaling fails saying which instance did not become ready, the gateway never hears of it,
/// its container and links are gone, and once healed the same instance can be added and
/// removed again.
#[tokio::test(flavor = "multi_thread")]
async fn an_order_container_that_cannot_start_is_not_added_and_leaves_nothing_of_itself() {
    let Some(mut t) = TestEnv::start().await else {
        return;
    };
    let docker = engine().await;
    let run = run_label(&t, &docker).await;
    t.env.disconnect("order-db").await.unwrap();

    let e = t.env.scale(Service::Order, 2).await.unwrap_err();
    let e = format!("{e:#}");
    assert!(e.contains("adding order#2"), "{e}");
    assert!(e.contains("did not become ready"), "{e}");
    assert_eq!(t.env.instance_count(Service::Order), 1);
    assert_eq!(order_urls(&t).len(), 1);
    let links = t.env.link_names();
    assert!(!links.iter().any(|l| l.contains("order#2")), "{links:?}");
    let proxies: Vec<String> = t
        .env
        .chaos_client()
        .unwrap()
        .proxies()
        .await
        .unwrap()
        .into_keys()
        .collect();
    assert!(
        !proxies.iter().any(|p| p.contains("order#2")),
        "order#2's proxies are still in Toxiproxy: {proxies:?}"
    );
    let containers = containers_of(&docker, &run).await;
    assert!(
        !containers.keys().any(|name| name.ends_with("-order-2")),
        "order#2's container is still there: {containers:?}"
    );

    t.env.heal_all().await.unwrap();
    t.env.scale(Service::Order, 2).await.unwrap();
    t.env.scale(Service::Order, 1).await.unwrap();
    let token = t.customer(GOOD_CUSTOMER);
    let placed = t.place(&token, &[("SKU-1002", 1)]).await;
    assert_eq!(
        t.terminal(&token, placed.order_id).await.status,
        OrderStatus::Confirmed
    );
}
