//! Faults between a service and its database: a link only the containers backend has.

use std::time::{Duration, Instant};

use contracts::domain::OrderStatus;
use harness::seed::GOOD_CUSTOMER;
use reqwest::Method;

use crate::helpers::{TestEnv, lines};

/// Also: with `cpus_per_instance` every service container has that CPU limit (`--cpus`), and
/// the gateway has none.
#[tokio::test(flavor = "multi_thread")]
async fn every_service_reaches_its_own_postgres_through_a_named_link() {
    let options = harness::environment::EnvOptions {
        cpus_per_instance: Some(1.5),
        ..Default::default()
    };
    let Some(t) = TestEnv::start_with(options).await else {
        return;
    };
    let links: Vec<String> = t.env.links().iter().map(|l| l.name.clone()).collect();
    for service in ["inventory", "payment", "order"] {
        let link = format!("{service}#1->db");
        let l = t.env.links().iter().find(|l| l.name == link);
        let l = l.unwrap_or_else(|| panic!("no {link} in {links:?}"));
        assert_eq!(l.upstream, format!("{service}-db:5432"));
    }
    for process in [
        "broker",
        "order-db",
        "inventory-db",
        "payment-db",
        "order#1",
        "gateway#1",
    ] {
        assert!(
            t.env.process_names().iter().any(|p| p == process),
            "{process} not in {:?}",
            t.env.process_names()
        );
    }
    assert_eq!(t.env.info().backend, "containers");

    let docker = bollard::Docker::connect_with_local_defaults()
        .unwrap()
        .negotiate_version()
        .await
        .unwrap();
    for p in t.env.process_infos() {
        let expected = match p.name.as_str() {
            "order#1" | "inventory#1" | "payment#1" => Some(1_500_000_000),
            "gateway#1" => None,
            _ => continue,
        };
        let container = p.log.strip_prefix("docker logs ").unwrap();
        let inspect = docker
            .inspect_container(
                container,
                None::<bollard::query_parameters::InspectContainerOptions>,
            )
            .await
            .unwrap();
        let nano_cpus = inspect.host_config.unwrap().nano_cpus.filter(|&n| n != 0);
        assert_eq!(nano_cpus, expected, "{}'s CPU limit", p.name);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn orders_fail_while_the_order_database_is_cut_off_and_succeed_once_it_heals() {
    let Some(mut t) = TestEnv::start().await else {
        return;
    };
    let token = t.customer(GOOD_CUSTOMER);
    let proxies = t.env.chaos_client().unwrap();
    proxies
        .update_proxy("order#1->db", &chaos::ProxyUpdate::enabled(false))
        .await
        .unwrap();

    // No database: the order service cannot take the order, and says so rather than hanging.
    let key = uuid::Uuid::new_v4().to_string();
    let body = contracts::http::PlaceOrderRequest {
        items: lines(&[("SKU-1001", 1)]),
    };
    let post = || async {
        t.api
            .send(
                Method::POST,
                "/api/orders",
                &token,
                Some(&body),
                &[("idempotency-key", &key)],
            )
            .await
            .unwrap()
    };
    let sent = Instant::now();
    let answer = post().await;
    assert!(
        answer.status.is_server_error(),
        "with order#1->db down: {} {}",
        answer.status,
        answer.body
    );
    assert!(
        sent.elapsed() < Duration::from_secs(30),
        "{:?}",
        sent.elapsed()
    );

    t.env.heal_all().await.unwrap();
    // The pool reconnects; the same key now places the order, and its saga completes.
    let placed = t
        .eventually(
            "an order accepted once the database link healed",
            post,
            |a| a.status.as_u16() == 201,
        )
        .await;
    let view: contracts::http::OrderView = placed.json().unwrap();
    let done = t.terminal(&token, view.order_id).await;
    assert_eq!(done.status, OrderStatus::Confirmed, "{done:?}");
}
