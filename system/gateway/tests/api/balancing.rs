use axum::http::{Method, StatusCode};

use crate::helpers::{FakeUpstream, dead_url, echo_of, error_of, spawn_app, spawn_world};

#[tokio::test]
async fn requests_alternate_between_the_two_order_instances() {
    let world = spawn_world().await;
    let app = &world.app;

    let mut seen = Vec::new();
    for _ in 0..6 {
        let response = app
            .get("/api/orders")
            .bearer_auth(app.customer())
            .send()
            .await
            .unwrap();
        seen.push(echo_of(response).await.instance);
    }

    for pair in seen.windows(2) {
        assert_ne!(pair[0], pair[1], "{seen:?}");
    }
    assert_eq!(world.order[0].hits(), 3);
    assert_eq!(world.order[1].hits(), 3);
}

#[tokio::test]
async fn a_dead_instance_is_skipped_and_every_request_still_succeeds() {
    let live = FakeUpstream::spawn("order", "order#2").await;
    let other = FakeUpstream::spawn("inventory", "inventory#1").await;
    let app = spawn_app(
        vec![dead_url().await, live.url.clone()],
        vec![other.url.clone()],
        vec![other.url.clone()],
        |_| {},
    )
    .await;

    for i in 0..4 {
        // POST too: a refused connection means the service never saw the request.
        let response = app
            .request(Method::POST, "/api/orders")
            .bearer_auth(app.customer())
            .header("idempotency-key", format!("k-{i}"))
            .body("{}")
            .send()
            .await
            .unwrap();
        assert_eq!(echo_of(response).await.instance, "order#2");
    }
    assert_eq!(live.hits(), 4);
}

#[tokio::test]
async fn with_no_instance_reachable_the_gateway_answers_502_naming_the_service() {
    let other = FakeUpstream::spawn("inventory", "inventory#1").await;
    let app = spawn_app(
        vec![dead_url().await, dead_url().await],
        vec![other.url.clone()],
        vec![other.url.clone()],
        |_| {},
    )
    .await;

    let response = app
        .get("/api/orders")
        .bearer_auth(app.customer())
        .send()
        .await
        .unwrap();

    let error = error_of(response, StatusCode::BAD_GATEWAY).await;
    assert!(
        error.error.message.contains("order"),
        "{}",
        error.error.message
    );
    assert!(
        !error.error.message.contains("127.0.0.1"),
        "{}",
        error.error.message
    );
}
