use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use contracts::domain::Role;
use tower::ServiceExt;

use crate::helpers::{config, echo_of, error_of, spawn_world, spawn_world_with};

#[tokio::test]
async fn an_order_is_forwarded_without_the_api_prefix_with_its_query_body_and_idempotency_key() {
    let world = spawn_world().await;
    let app = &world.app;
    let body = r#"{"items":[{"sku":"SKU-1","quantity":2}]}"#;

    let response = app
        .request(Method::POST, "/api/orders?source=test&n=2")
        .bearer_auth(app.customer())
        .header("idempotency-key", "key-123")
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap();
    let echo = echo_of(response).await;

    assert_eq!(echo.method, "POST");
    assert_eq!(echo.path, "/orders");
    assert_eq!(echo.query.as_deref(), Some("source=test&n=2"));
    assert_eq!(echo.body, body);
    assert_eq!(echo.idempotency_key.as_deref(), Some("key-123"));
    assert_eq!(echo.content_type.as_deref(), Some("application/json"));
    assert!(echo.instance.starts_with("order#"));
}

#[tokio::test]
async fn each_service_gets_its_own_paths() {
    let world = spawn_world().await;
    let app = &world.app;
    let cases = [
        (
            Method::POST,
            "/api/admin/products/SKU-1/restock",
            "/admin/products/SKU-1/restock",
            "inventory#1",
        ),
        (
            Method::GET,
            "/api/admin/reservations",
            "/admin/reservations",
            "inventory#1",
        ),
        (Method::GET, "/api/orders/o-1", "/orders/o-1", "order#"),
        (Method::GET, "/api/admin/orders", "/admin/orders", "order#"),
        (
            Method::POST,
            "/api/admin/accounts/rebuild",
            "/admin/accounts/rebuild",
            "payment#1",
        ),
        (
            Method::GET,
            "/api/admin/payments",
            "/admin/payments",
            "payment#1",
        ),
    ];
    for (method, path, upstream_path, instance) in cases {
        let response = app
            .request(method, path)
            .bearer_auth(app.admin())
            .send()
            .await
            .unwrap();
        let echo = echo_of(response).await;
        assert_eq!(echo.path, upstream_path);
        assert!(
            echo.instance.starts_with(instance),
            "{path} reached {}",
            echo.instance
        );
        assert!(
            echo.caller.is_some(),
            "{path}: the token's audience is the owning service"
        );
    }
}

#[tokio::test]
async fn the_service_gets_a_service_token_for_the_user_and_never_the_users_jwt() {
    let world = spawn_world().await;
    let app = &world.app;
    let user_token = app.token("admin-7", &[Role::Admin, Role::Customer]);

    let response = app
        .get("/api/admin/stock")
        .bearer_auth(&user_token)
        .send()
        .await
        .unwrap();
    let echo = echo_of(response).await;

    assert_eq!(echo.instance, "inventory#1");
    let caller = echo
        .caller
        .expect("a service token valid for the inventory service");
    assert_eq!(caller.sub, "admin-7");
    assert_eq!(caller.roles, vec![Role::Admin, Role::Customer]);
    let authorization = echo.authorization.unwrap();
    assert!(!authorization.contains(&user_token));
}

#[tokio::test]
async fn the_public_catalog_is_forwarded_without_a_user_token() {
    let world = spawn_world().await;

    let echo = echo_of(world.app.get("/api/products/SKU-1").send().await.unwrap()).await;

    assert_eq!(echo.path, "/products/SKU-1");
    let caller = echo
        .caller
        .expect("even anonymous calls carry a service token");
    assert_eq!(caller.sub, gateway::proxy::ANONYMOUS_SUBJECT);
    assert!(caller.roles.is_empty());
    assert_eq!(world.inventory.hits(), 1);
}

#[tokio::test]
async fn a_request_id_is_generated_returned_and_forwarded_or_kept_from_the_client() {
    let world = spawn_world().await;
    let app = &world.app;

    let response = app.get("/api/products").send().await.unwrap();
    let returned = response.headers()["x-request-id"]
        .to_str()
        .unwrap()
        .to_owned();
    let echo = echo_of(response).await;
    assert!(!returned.is_empty());
    assert_eq!(echo.request_id.as_deref(), Some(returned.as_str()));

    let response = app
        .get("/api/products")
        .header("x-request-id", "req-42")
        .send()
        .await
        .unwrap();
    assert_eq!(response.headers()["x-request-id"], "req-42");
    assert_eq!(
        echo_of(response).await.request_id.as_deref(),
        Some("req-42")
    );
}

#[tokio::test]
async fn the_upstreams_status_body_and_replay_header_come_back_unchanged() {
    let world = spawn_world().await;
    let app = &world.app;

    let response = app
        .request(Method::POST, "/api/orders?status=409&replay=1")
        .bearer_auth(app.customer())
        .body("{}")
        .send()
        .await
        .unwrap();

    assert_eq!(response.status(), StatusCode::CONFLICT);
    assert_eq!(response.headers()["idempotent-replayed"], "true");
    assert_eq!(response.headers()["content-type"], "application/json");
    assert!(response.headers().get("x-internal-only").is_none());
    let echo: serde_json::Value = response.json().await.unwrap();
    assert_eq!(echo["path"], "/orders");
}

#[tokio::test]
async fn an_unknown_api_path_is_a_json_404() {
    let world = spawn_world().await;
    let app = &world.app;
    for path in ["/api/nope", "/api/orders/o-1/extra", "/api", "/elsewhere"] {
        let response = app.get(path).bearer_auth(app.admin()).send().await.unwrap();
        let error = error_of(response, StatusCode::NOT_FOUND).await;
        assert_eq!(error.error.code, "not_found");
    }
    assert_eq!(world.order[0].hits() + world.order[1].hits(), 0);
}

#[tokio::test]
async fn a_body_over_the_limit_is_refused_with_413() {
    let world = spawn_world().await;
    let app = &world.app;
    let limit = gateway::config::DEFAULT_MAX_BODY_BYTES;

    let response = app
        .request(Method::POST, "/api/orders")
        .bearer_auth(app.customer())
        .body(vec![b'x'; limit + 1])
        .send()
        .await
        .unwrap();
    let error = error_of(response, StatusCode::PAYLOAD_TOO_LARGE).await;
    assert_eq!(error.error.code, "payload_too_large");

    let response = app
        .request(Method::POST, "/api/orders")
        .bearer_auth(app.customer())
        .body(vec![b'x'; limit])
        .send()
        .await
        .unwrap();
    assert_eq!(echo_of(response).await.body.len(), limit);
    assert_eq!(world.order[0].hits() + world.order[1].hits(), 1);
}

#[tokio::test]
async fn a_body_without_content_length_is_still_bounded() {
    let (private, public) = platform::auth::generate_ed25519_pem().unwrap();
    let issuer =
        platform::auth::UserTokenIssuer::from_pem(&private, "harness", "shop-api").unwrap();
    let token = issuer
        .issue(
            "cust-1",
            &[Role::Customer],
            std::time::Duration::from_secs(60),
        )
        .unwrap();
    let mut config = config(&public, vec!["http://127.0.0.1:9".into()], vec![], vec![]);
    config.max_body_bytes = 10;
    let router = gateway::router(gateway::AppState::new(&config).unwrap());

    // No content-length: the limit must hold while reading, not only on the declared length.
    let chunks: Vec<Result<&'static str, std::io::Error>> = vec![Ok("0123456"), Ok("789ab")];
    let request = Request::post("/api/orders")
        .header("authorization", format!("Bearer {token}"))
        .body(Body::from_stream(futures::stream::iter(chunks)))
        .unwrap();
    let response = router.oneshot(request).await.unwrap();

    assert_eq!(response.status(), StatusCode::PAYLOAD_TOO_LARGE);
}

#[tokio::test]
async fn an_upstream_that_does_not_answer_in_time_gives_504() {
    let world =
        spawn_world_with(|c| c.upstream_timeout = std::time::Duration::from_millis(300)).await;
    let app = &world.app;

    let response = app
        .get("/api/orders?delay_ms=3000")
        .bearer_auth(app.customer())
        .send()
        .await
        .unwrap();

    let error = error_of(response, StatusCode::GATEWAY_TIMEOUT).await;
    assert!(
        error.error.message.contains("order"),
        "{}",
        error.error.message
    );
}
