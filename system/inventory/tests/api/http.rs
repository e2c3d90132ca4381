//! Authentication, roles and the error body of the HTTP API.

use contracts::domain::Role;
use http::StatusCode;
use platform::auth::ServiceAuth;

use crate::helpers::*;

const ADMIN_ROUTES: [(&str, &str, Option<&str>); 4] = [
    ("PUT", "/admin/products", Some("[]")),
    (
        "POST",
        "/admin/products/SKU-1/restock",
        Some(r#"{"quantity": 1}"#),
    ),
    ("GET", "/admin/stock", None),
    ("GET", "/admin/reservations", None),
];

async fn app() -> (tempfile::TempDir, TestApp) {
    let dir = tempfile::tempdir().unwrap();
    let db = platform::testing::sqlite(
        dir.path(),
        &inventory_service::SQLITE,
        &inventory_service::POSTGRES,
    )
    .await;
    (dir, TestApp::new(db))
}

#[tokio::test]
async fn every_route_but_health_needs_a_valid_service_token() {
    let (_dir, app) = app().await;
    let wrong_audience = ServiceAuth::new(SECRET, "gateway")
        .issue("payment", "user-1", &[Role::Admin])
        .unwrap();
    let forged = ServiceAuth::new(&[9u8; 32], "gateway")
        .issue("inventory", "user-1", &[Role::Admin])
        .unwrap();
    let mut routes = vec![("GET", "/products", None), ("GET", "/products/SKU-1", None)];
    routes.extend(ADMIN_ROUTES);
    for (method, path, body) in routes {
        for token in [
            None,
            Some("not-a-jwt"),
            Some(wrong_audience.as_str()),
            Some(forged.as_str()),
        ] {
            let res = app.call(method, path, token, body).await;
            assert_error(&res, StatusCode::UNAUTHORIZED, "unauthorized");
        }
    }
    for path in ["/health/live", "/health/ready"] {
        let (status, _) = app.call("GET", path, None, None).await;
        assert_eq!(status, StatusCode::OK, "{path}");
    }
}

#[tokio::test]
async fn admin_routes_refuse_a_customer_with_403() {
    let (_dir, app) = app().await;
    for (method, path, body) in ADMIN_ROUTES {
        let res = app.call(method, path, Some(&app.customer()), body).await;
        assert_error(&res, StatusCode::FORBIDDEN, "forbidden");
    }
}

#[tokio::test]
async fn a_malformed_body_is_a_json_4xx_saying_what_is_wrong() {
    let (_dir, app) = app().await;
    let admin = app.admin();
    let syntax = app
        .call("PUT", "/admin/products", Some(&admin), Some("[{"))
        .await;
    assert_error(&syntax, StatusCode::BAD_REQUEST, "bad_request");
    let unknown_field = app
        .call(
            "PUT",
            "/admin/products",
            Some(&admin),
            Some(r#"[{"sku":"S","name":"n","unit_price_minor":1,"available":1,"colour":"red"}]"#),
        )
        .await;
    assert_error(
        &unknown_field,
        StatusCode::UNPROCESSABLE_ENTITY,
        "validation",
    );
    let no_content_type = app
        .call("POST", "/admin/products/SKU-1/restock", Some(&admin), None)
        .await;
    assert_error(&no_content_type, StatusCode::BAD_REQUEST, "bad_request");
}

#[tokio::test]
async fn an_unknown_route_is_a_json_404() {
    let (_dir, app) = app().await;
    let res = app.get("/nothing/here", &app.admin()).await;
    assert_error(&res, StatusCode::NOT_FOUND, "not_found");
}
