//! The admin HTTP API: authentication, roles, error bodies, and each route's behaviour.

use contracts::domain::{OrderId, Role};
use contracts::http::{AccountBalance, PaymentRecord, RebuildReport};
use http::StatusCode;
use platform::auth::ServiceAuth;
use serde_json::json;

use crate::helpers::*;

const ROUTES: [(&str, &str, Option<&str>); 4] = [
    (
        "PUT",
        "/admin/accounts",
        Some(r#"[{"customer_id":"c","credit_limit_minor":1}]"#),
    ),
    ("GET", "/admin/accounts", None),
    ("GET", "/admin/payments", None),
    ("POST", "/admin/accounts/rebuild", None),
];

async fn app() -> (tempfile::TempDir, TestApp) {
    let dir = tempfile::tempdir().unwrap();
    let db = platform::testing::sqlite(
        dir.path(),
        &payment_service::SQLITE,
        &payment_service::POSTGRES,
    )
    .await;
    (dir, TestApp::new(db))
}

#[tokio::test]
async fn every_route_but_health_needs_a_valid_admin_service_token() {
    let (_dir, app) = app().await;
    let wrong_audience = ServiceAuth::new(SECRET, "gateway")
        .issue("inventory", "user-1", &[Role::Admin])
        .unwrap();
    let forged = ServiceAuth::new(&[9u8; 32], "gateway")
        .issue("payment", "user-1", &[Role::Admin])
        .unwrap();
    for (method, path, body) in ROUTES {
        for token in [
            None,
            Some("not-a-jwt"),
            Some(wrong_audience.as_str()),
            Some(forged.as_str()),
        ] {
            let res = app.call(method, path, token, body).await;
            assert_error(&res, StatusCode::UNAUTHORIZED, "unauthorized");
        }
        let customer = app.token(&[Role::Customer]);
        let res = app.call(method, path, Some(&customer), body).await;
        assert_error(&res, StatusCode::FORBIDDEN, "forbidden");
    }
    for path in ["/health/live", "/health/ready"] {
        let (status, _) = app.call("GET", path, None, None).await;
        assert_eq!(status, StatusCode::OK, "{path}");
    }
}

#[tokio::test]
async fn bad_bodies_and_queries_are_json_4xx_saying_what_is_wrong() {
    let (_dir, app) = app().await;
    let admin = app.admin();
    let syntax = app
        .call("PUT", "/admin/accounts", Some(&admin), Some("[{"))
        .await;
    assert_error(&syntax, StatusCode::BAD_REQUEST, "bad_request");
    for body in [
        json!([{"customer_id": "c", "credit_limit_minor": -1}]),
        json!([{"customer_id": "c", "credit_limit_minor": 1, "extra": true}]),
        json!([{"customer_id": "not ok", "credit_limit_minor": 1}]),
        json!([{"customer_id": "c", "credit_limit_minor": 1}, {"customer_id": "c", "credit_limit_minor": 2}]),
        json!([]),
    ] {
        let res = app
            .call(
                "PUT",
                "/admin/accounts",
                Some(&admin),
                Some(&body.to_string()),
            )
            .await;
        assert_error(&res, StatusCode::UNPROCESSABLE_ENTITY, "validation");
    }
    let bad_id = app
        .call("GET", "/admin/payments?order_id=nope", Some(&admin), None)
        .await;
    assert_error(&bad_id, StatusCode::UNPROCESSABLE_ENTITY, "validation");
    let unknown = app.call("GET", "/admin/nothing", Some(&admin), None).await;
    assert_error(&unknown, StatusCode::NOT_FOUND, "not_found");
    let (_, accounts) = app.call("GET", "/admin/accounts", Some(&admin), None).await;
    assert_eq!(
        accounts,
        json!([]),
        "nothing of a refused batch was written"
    );
}

#[tokio::test]
async fn admins_open_accounts_change_limits_and_read_balances_payments_and_rebuilds() {
    let (_dir, dbs) = databases().await;
    for db in dbs {
        let app = TestApp::new(db);
        let admin = app.admin();
        let body = json!([
            {"customer_id": "cust-2", "credit_limit_minor": 500},
            {"customer_id": "cust-1", "credit_limit_minor": 1_000},
        ]);
        let (status, put) = app
            .call(
                "PUT",
                "/admin/accounts",
                Some(&admin),
                Some(&body.to_string()),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{put}");
        let put: Vec<AccountBalance> = serde_json::from_value(put).unwrap();
        assert_eq!(
            put[0].customer_id.as_str(),
            "cust-2",
            "answered in request order"
        );

        let order = OrderId::new();
        handle(&app.db, &authorize(order, "cust-1", 250)).await;
        let raise = json!([{"customer_id": "cust-1", "credit_limit_minor": 2_000}]);
        let (_, raised) = app
            .call(
                "PUT",
                "/admin/accounts",
                Some(&admin),
                Some(&raise.to_string()),
            )
            .await;
        let raised: Vec<AccountBalance> = serde_json::from_value(raised).unwrap();
        assert_eq!(
            (raised[0].credit_limit_minor.minor(), raised[0].held_minor),
            (2_000, 250)
        );

        let (status, list) = app.call("GET", "/admin/accounts", Some(&admin), None).await;
        assert_eq!(status, StatusCode::OK);
        let list: Vec<AccountBalance> = serde_json::from_value(list).unwrap();
        let ids: Vec<_> = list.iter().map(|a| a.customer_id.as_str()).collect();
        assert_eq!(ids, vec!["cust-1", "cust-2"], "{}", name(&app.db));

        let path = format!("/admin/payments?order_id={order}");
        let (status, records) = app.call("GET", &path, Some(&admin), None).await;
        assert_eq!(status, StatusCode::OK, "{records}");
        let records: Vec<PaymentRecord> = serde_json::from_value(records).unwrap();
        assert_eq!(records.len(), 1);
        assert_eq!((records[0].held_minor, records[0].captured_minor), (250, 0));
        let (_, all) = app.call("GET", "/admin/payments", Some(&admin), None).await;
        assert_eq!(all.as_array().map(Vec::len), Some(1));

        let (status, report) = app
            .call("POST", "/admin/accounts/rebuild", Some(&admin), None)
            .await;
        assert_eq!(status, StatusCode::OK, "{report}");
        let report: RebuildReport = serde_json::from_value(report).unwrap();
        assert!(report.identical);
        assert_eq!(report.events_replayed, 1);
        assert_eq!(report.accounts.len(), 2);
    }
}
