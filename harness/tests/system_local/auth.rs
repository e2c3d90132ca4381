use std::time::{SystemTime, UNIX_EPOCH};

use contracts::domain::Role;
use contracts::http::ErrorBody;
use harness::seed::{AUDIENCE, GOOD_CUSTOMER, ISSUER, IdentityProvider};
use platform::auth::UserClaims;
use reqwest::Method;

use crate::helpers::{TestEnv, lines};

#[tokio::test(flavor = "multi_thread")]
async fn bad_tokens_get_401_a_customer_on_an_admin_route_gets_403_and_a_bad_body_gets_a_json_4xx() {
    let Some(t) = TestEnv::start().await else {
        return;
    };
    let body = contracts::http::PlaceOrderRequest {
        items: lines(&[("SKU-1001", 1)]),
    };
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let expired = t
        .env
        .identity()
        .issuer()
        .issue_claims(&UserClaims {
            sub: GOOD_CUSTOMER.into(),
            roles: vec![Role::Customer],
            iss: ISSUER.into(),
            aud: AUDIENCE.into(),
            exp: now - 600,
            iat: now - 1200,
        })
        .unwrap();
    let foreign = IdentityProvider::new()
        .unwrap()
        .customer_token(GOOD_CUSTOMER)
        .unwrap();
    let good = t.customer(GOOD_CUSTOMER);
    let mut tampered = good.clone();
    tampered.pop();
    tampered.push(if good.ends_with('A') { 'B' } else { 'A' });

    for (what, token, header) in [
        ("missing", "", None),
        ("malformed", "", Some("Bearer not-a-jwt")),
        ("wrong scheme", "", Some("Basic dXNlcjpwYXNz")),
        ("expired", expired.as_str(), None),
        ("signed by another key", foreign.as_str(), None),
        ("tampered signature", tampered.as_str(), None),
    ] {
        let headers: Vec<(&str, &str)> = header
            .map(|h| vec![("authorization", h)])
            .unwrap_or_default();
        let a = t
            .api
            .send(Method::POST, "/api/orders", token, Some(&body), &headers)
            .await
            .unwrap();
        assert_eq!(a.status.as_u16(), 401, "{what}: {}", a.body);
        let err: ErrorBody = a.json().unwrap_or_else(|e| panic!("{what}: {e:#}"));
        assert_eq!(err.error.code, "unauthorized", "{what}");
    }

    let a = t
        .api
        .send::<()>(Method::GET, "/api/admin/stock", &good, None, &[])
        .await
        .unwrap();
    assert_eq!(a.status.as_u16(), 403, "{}", a.body);
    assert!(a.json::<ErrorBody>().is_ok());
    let a = t
        .api
        .send::<()>(Method::GET, "/api/admin/stock", &t.admin, None, &[])
        .await
        .unwrap();
    assert_eq!(a.status.as_u16(), 200, "{}", a.body);

    for (what, content_type, raw) in [
        ("not JSON", "application/json", "{\"items\": [}"),
        (
            "zero quantity",
            "application/json",
            "{\"items\": [{\"sku\": \"SKU-1001\", \"quantity\": 0}]}",
        ),
        ("no items", "application/json", "{\"items\": []}"),
        ("wrong content type", "text/plain", "{\"items\": []}"),
    ] {
        let a = t
            .api
            .send_raw(Method::POST, "/api/orders", &good, content_type, raw)
            .await
            .unwrap();
        assert!(
            a.status.is_client_error(),
            "{what}: {} {}",
            a.status,
            a.body
        );
        let err: ErrorBody = a.json().unwrap_or_else(|e| panic!("{what}: {e:#}"));
        assert!(!err.error.message.is_empty(), "{what}");
    }
    // Nothing above created an order.
    let orders = t.api.admin_orders(&t.admin).await.unwrap();
    assert!(orders.is_empty(), "{orders:?}");
    t.env.stop().await;
}
