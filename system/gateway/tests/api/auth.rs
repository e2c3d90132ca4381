use std::time::Duration;

use axum::http::{Method, StatusCode};
use contracts::domain::Role;
use platform::auth::{UserTokenIssuer, generate_ed25519_pem};

use crate::helpers::{AUDIENCE, ISSUER, World, echo_of, error_of, spawn_world};

async fn assert_unauthorized(response: reqwest::Response) {
    let challenge = response
        .headers()
        .get("www-authenticate")
        .map(|v| v.to_str().unwrap().to_owned());
    let error = error_of(response, StatusCode::UNAUTHORIZED).await;
    assert_eq!(error.error.code, "unauthorized");
    assert_eq!(challenge.as_deref(), Some("Bearer"));
}

fn nothing_reached_a_service(world: &World) {
    let hits = world.order[0].hits()
        + world.order[1].hits()
        + world.inventory.hits()
        + world.payment.hits();
    assert_eq!(hits, 0);
}

#[tokio::test]
async fn a_missing_or_malformed_authorization_header_is_401() {
    let world = spawn_world().await;
    let app = &world.app;

    assert_unauthorized(app.get("/api/orders").send().await.unwrap()).await;
    for header in [
        "Bearer",
        "Bearer ",
        "Bearer not.a.jwt",
        "Bearer garbage",
        "Basic x",
    ] {
        let response = app
            .get("/api/orders")
            .header("authorization", header)
            .send()
            .await
            .unwrap();
        assert_unauthorized(response).await;
    }
    nothing_reached_a_service(&world);
}

#[tokio::test]
async fn expired_foreign_and_misaddressed_tokens_are_401() {
    let world = spawn_world().await;
    let app = &world.app;
    let (foreign_key, _) = generate_ed25519_pem().unwrap();
    let foreign = UserTokenIssuer::from_pem(&foreign_key, ISSUER, AUDIENCE).unwrap();
    let other_audience = UserTokenIssuer::from_pem(&app.private_pem, ISSUER, "elsewhere").unwrap();
    let other_issuer = UserTokenIssuer::from_pem(&app.private_pem, "mallory", AUDIENCE).unwrap();
    let roles = [Role::Customer, Role::Admin];
    let ttl = Duration::from_secs(300);

    let tokens = [
        app.token_with(|c| {
            c.exp -= 3_600;
            c.iat -= 3_600;
        }),
        foreign.issue("cust-1", &roles, ttl).unwrap(),
        other_audience.issue("cust-1", &roles, ttl).unwrap(),
        other_issuer.issue("cust-1", &roles, ttl).unwrap(),
    ];
    for token in tokens {
        for path in ["/api/orders", "/api/admin/stock"] {
            let response = app.get(path).bearer_auth(&token).send().await.unwrap();
            assert_unauthorized(response).await;
        }
    }
    nothing_reached_a_service(&world);
}

#[tokio::test]
async fn a_customer_cannot_use_admin_routes() {
    let world = spawn_world().await;
    let app = &world.app;

    for path in [
        "/api/admin/stock",
        "/api/admin/orders",
        "/api/admin/payments",
    ] {
        let response = app
            .get(path)
            .bearer_auth(app.customer())
            .send()
            .await
            .unwrap();
        let error = error_of(response, StatusCode::FORBIDDEN).await;
        assert_eq!(error.error.code, "forbidden");
    }
    nothing_reached_a_service(&world);

    let response = app
        .get("/api/admin/stock")
        .bearer_auth(app.admin())
        .send()
        .await
        .unwrap();
    assert_eq!(echo_of(response).await.path, "/admin/stock");
}

#[tokio::test]
async fn orders_need_the_customer_or_admin_role() {
    let world = spawn_world().await;
    let app = &world.app;

    let response = app
        .get("/api/orders")
        .bearer_auth(app.token("nobody", &[]))
        .send()
        .await
        .unwrap();
    error_of(response, StatusCode::FORBIDDEN).await;
    nothing_reached_a_service(&world);

    let response = app
        .get("/api/orders/o-1")
        .bearer_auth(app.admin())
        .send()
        .await
        .unwrap();
    let caller = echo_of(response).await.caller.unwrap();
    assert_eq!(caller.sub, "admin-1");
}

#[tokio::test]
async fn the_catalog_refuses_a_bad_token_and_a_method_no_service_serves_is_405_at_the_edge() {
    let world = spawn_world().await;
    let app = &world.app;

    let response = app
        .get("/api/products")
        .header("authorization", "Bearer garbage")
        .send()
        .await
        .unwrap();
    assert_unauthorized(response).await;
    for (method, path, allow) in [
        (Method::POST, "/api/products", "GET,HEAD"),
        (Method::DELETE, "/api/orders", "GET,HEAD,POST"),
        (Method::PATCH, "/api/admin/accounts", "GET,HEAD,PUT"),
    ] {
        let response = app
            .request(method.clone(), path)
            .bearer_auth(app.admin())
            .send()
            .await
            .unwrap();
        let allowed = response.headers().get("allow").cloned();
        let error = error_of(response, StatusCode::METHOD_NOT_ALLOWED).await;
        assert_eq!(error.error.code, "method_not_allowed", "{method} {path}");
        assert_eq!(allowed.unwrap(), allow, "{method} {path}");
    }
    nothing_reached_a_service(&world);

    let response = app
        .get("/api/products")
        .bearer_auth(app.customer())
        .send()
        .await
        .unwrap();
    assert_eq!(echo_of(response).await.caller.unwrap().sub, "cust-1");
}
