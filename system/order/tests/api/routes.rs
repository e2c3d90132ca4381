//! The HTTP API through the router (`oneshot`, no server).

use axum::Router;
use axum::body::Body;
use contracts::domain::{OrderStatus, Role};
use contracts::http::{AdminOrder, OrderView};
use http::{HeaderMap, Request, StatusCode};
use order_service::router;
use tower::ServiceExt;

use crate::helpers::*;

struct Reply {
    status: StatusCode,
    headers: HeaderMap,
    body: serde_json::Value,
}

impl Reply {
    fn error_code(&self) -> &str {
        self.body["error"]["code"]
            .as_str()
            .unwrap_or_else(|| panic!("not an error body: {}", self.body))
    }

    fn json<T: serde::de::DeserializeOwned>(&self) -> T {
        serde_json::from_value(self.body.clone()).unwrap()
    }
}

async fn send(
    app: &Router,
    method: &str,
    uri: &str,
    token: Option<&str>,
    headers: &[(&str, &str)],
    body: Option<&str>,
) -> Reply {
    let mut req = Request::builder().method(method).uri(uri);
    if let Some(t) = token {
        req = req.header("authorization", format!("Bearer {t}"));
    }
    if body.is_some() {
        req = req.header("content-type", "application/json");
    }
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let req = req
        .body(Body::from(body.unwrap_or("").to_string()))
        .unwrap();
    let res = app.clone().oneshot(req).await.unwrap();
    let status = res.status();
    let headers = res.headers().clone();
    let bytes = axum::body::to_bytes(res.into_body(), 1 << 20)
        .await
        .unwrap();
    let body = serde_json::from_slice(&bytes).unwrap_or_else(|_| {
        serde_json::Value::String(String::from_utf8_lossy(&bytes).into_owned())
    });
    Reply {
        status,
        headers,
        body,
    }
}

/// `(method, uri, headers, body, expected status)`.
type Case<'a> = (
    &'a str,
    &'a str,
    &'a [(&'a str, &'a str)],
    Option<&'a str>,
    StatusCode,
);

const ORDER: &str = r#"{"items":[{"sku":"SKU-1","quantity":2}]}"#;

fn customer_token(id: &str) -> String {
    token(id, &[Role::Customer])
}

fn admin_token() -> String {
    token("ops", &[Role::Admin])
}

#[tokio::test]
async fn requests_without_a_valid_service_token_get_a_json_401() {
    let (_dir, dbs) = databases().await;
    let app = router(app_state(&dbs[0]));
    for (method, uri, body) in [
        ("GET", "/orders", None),
        ("POST", "/orders", Some(ORDER)),
        ("GET", "/orders/0192f0a8-3c4e-7b6a-9c1d-2e3f4a5b6c7d", None),
        ("GET", "/admin/orders", None),
    ] {
        let r = send(&app, method, uri, None, &[], body).await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{method} {uri}");
        assert_eq!(r.error_code(), "unauthorized");
    }
    let for_payment = platform::auth::ServiceAuth::new(&SECRET, "gateway")
        .issue("payment", "cust-1", &[Role::Customer])
        .unwrap();
    let r = send(&app, "GET", "/orders", Some(&for_payment), &[], None).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    let r = send(&app, "GET", "/orders", Some("not-a-token"), &[], None).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn callers_without_the_needed_role_get_a_json_403() {
    let (_dir, dbs) = databases().await;
    let app = router(app_state(&dbs[0]));
    let r = send(
        &app,
        "POST",
        "/orders",
        Some(&admin_token()),
        &[],
        Some(ORDER),
    )
    .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert_eq!(r.error_code(), "forbidden");
    let r = send(
        &app,
        "GET",
        "/admin/orders",
        Some(&customer_token("cust-1")),
        &[],
        None,
    )
    .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    let nobody = token("someone", &[]);
    let r = send(&app, "GET", "/orders", Some(&nobody), &[], None).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert_eq!(count(&dbs[0], "SELECT COUNT(*) FROM orders").await, 0);
}

#[tokio::test]
async fn malformed_requests_get_json_4xx_errors_and_create_nothing() {
    let (_dir, dbs) = databases().await;
    let app = router(app_state(&dbs[0]));
    let t = customer_token("cust-1");
    let t = Some(t.as_str());
    let cases: &[Case] = &[
        (
            "POST",
            "/orders",
            &[],
            Some("{not json"),
            StatusCode::BAD_REQUEST,
        ),
        (
            "POST",
            "/orders",
            &[],
            Some(r#"{"items":[]}"#),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            "POST",
            "/orders",
            &[],
            Some(r#"{"items":[{"sku":"A","quantity":0}]}"#),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            "POST",
            "/orders",
            &[],
            Some(r#"{"items":[{"sku":"A","quantity":1},{"sku":"A","quantity":1}]}"#),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            "POST",
            "/orders",
            &[],
            Some(r#"{"items":[{"sku":"A","quantity":1}],"coupon":"x"}"#),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            "POST",
            "/orders",
            &[("idempotency-key", "has space")],
            Some(ORDER),
            StatusCode::BAD_REQUEST,
        ),
        (
            "POST",
            "/orders",
            &[("idempotency-key", "")],
            Some(ORDER),
            StatusCode::BAD_REQUEST,
        ),
        (
            "GET",
            "/orders/not-a-uuid",
            &[],
            None,
            StatusCode::BAD_REQUEST,
        ),
        ("GET", "/orders?limit=0", &[], None, StatusCode::BAD_REQUEST),
    ];
    for (method, uri, headers, body, expected) in cases {
        let r = send(&app, method, uri, t, headers, *body).await;
        assert_eq!(r.status, *expected, "{method} {uri} {body:?}: {}", r.body);
        assert!(!r.error_code().is_empty());
    }
    let long_key = "k".repeat(129);
    let r = send(
        &app,
        "POST",
        "/orders",
        t,
        &[("idempotency-key", &long_key)],
        Some(ORDER),
    )
    .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    let r = send(
        &app,
        "GET",
        "/admin/orders?status=DONE",
        Some(&admin_token()),
        &[],
        None,
    )
    .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_eq!(count(&dbs[0], "SELECT COUNT(*) FROM orders").await, 0);
}

#[tokio::test]
async fn posting_an_order_answers_201_and_a_retry_with_its_key_replays_the_same_answer() {
    let (_dir, dbs) = databases().await;
    for db in &dbs {
        let app = router(app_state(db));
        let t = customer_token("cust-1");
        let key = [("idempotency-key", "3f1c-retry-me")];
        let first = send(&app, "POST", "/orders", Some(&t), &key, Some(ORDER)).await;
        assert_eq!(first.status, StatusCode::CREATED, "{}", first.body);
        let view: OrderView = first.json();
        assert_eq!(view.status, OrderStatus::Pending);
        assert_eq!(view.customer_id.as_str(), "cust-1");
        assert!(first.headers.get("idempotent-replayed").is_none());

        let again = send(&app, "POST", "/orders", Some(&t), &key, Some(ORDER)).await;
        assert_eq!(again.status, StatusCode::CREATED);
        assert_eq!(again.body, first.body);
        assert_eq!(again.headers.get("idempotent-replayed").unwrap(), "true");

        let other_body = r#"{"items":[{"sku":"SKU-1","quantity":3}]}"#;
        let refused = send(&app, "POST", "/orders", Some(&t), &key, Some(other_body)).await;
        assert_eq!(refused.status, StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(refused.error_code(), "validation");

        let without_key = send(&app, "POST", "/orders", Some(&t), &[], Some(ORDER)).await;
        assert_eq!(without_key.status, StatusCode::CREATED);
        assert_ne!(without_key.body, first.body);
        assert_eq!(count(db, "SELECT COUNT(*) FROM orders").await, 2);
    }
}

#[tokio::test]
async fn orders_are_read_from_the_read_model_and_hidden_from_other_customers() {
    let (_dir, dbs) = databases().await;
    for db in &dbs {
        let app = router(app_state(db));
        let owner = customer_token("cust-1");
        let placed: OrderView = send(&app, "POST", "/orders", Some(&owner), &[], Some(ORDER))
            .await
            .json();
        let uri = format!("/orders/{}", placed.order_id);

        let listed = send(&app, "GET", "/orders", Some(&owner), &[], None).await;
        assert_eq!(
            listed.json::<Vec<OrderView>>(),
            vec![],
            "nothing projected yet"
        );
        // The saga confirmed the order in the write model; the projector has not caught up.
        let confirmed_meanwhile = format!(
            "UPDATE orders SET status = 'CONFIRMED', total_minor = 500, updated_at_ms = \
             updated_at_ms + 1 WHERE order_id = '{}'",
            placed.order_id
        );
        sqlx::query(&confirmed_meanwhile)
            .execute(db.pool())
            .await
            .unwrap();
        // Before the projection: the order as it was accepted (read-your-writes), not its later
        // status, which is the read model's to show. After it: the read model's copy. Either
        // way to its owner and an admin only.
        for projected in [false, true] {
            if projected {
                project_all(db).await;
            }
            let mine = send(&app, "GET", &uri, Some(&owner), &[], None).await;
            assert_eq!(mine.status, StatusCode::OK, "projected: {projected}");
            assert_eq!(mine.json::<OrderView>(), placed, "projected: {projected}");
            let stranger = customer_token("cust-2");
            let other = send(&app, "GET", &uri, Some(&stranger), &[], None).await;
            assert_eq!(
                other.status,
                StatusCode::NOT_FOUND,
                "projected: {projected}"
            );
            let admin = send(&app, "GET", &uri, Some(&admin_token()), &[], None).await;
            assert_eq!(admin.json::<OrderView>(), placed, "projected: {projected}");
        }

        let unknown = send(
            &app,
            "GET",
            &format!("/orders/{}", contracts::domain::OrderId::new()),
            Some(&owner),
            &[],
            None,
        )
        .await;
        assert_eq!(unknown.status, StatusCode::NOT_FOUND);

        let theirs = send(
            &app,
            "GET",
            "/orders",
            Some(&customer_token("cust-2")),
            &[],
            None,
        )
        .await;
        assert_eq!(theirs.json::<Vec<OrderView>>(), vec![]);
    }
}

#[tokio::test]
async fn a_customer_lists_their_own_orders_newest_first() {
    let (_dir, dbs) = databases().await;
    for db in &dbs {
        let app = router(app_state(db));
        let t = customer_token("cust-1");
        let mut ids = Vec::new();
        for _ in 0..3 {
            let v: OrderView = send(&app, "POST", "/orders", Some(&t), &[], Some(ORDER))
                .await
                .json();
            ids.push(v.order_id);
        }
        send(
            &app,
            "POST",
            "/orders",
            Some(&customer_token("cust-9")),
            &[],
            Some(ORDER),
        )
        .await;
        project_all(db).await;

        let listed: Vec<OrderView> = send(&app, "GET", "/orders", Some(&t), &[], None)
            .await
            .json();
        let listed: Vec<_> = listed.iter().map(|v| v.order_id).collect();
        ids.reverse();
        assert_eq!(listed, ids);
        let two: Vec<OrderView> = send(&app, "GET", "/orders?limit=2", Some(&t), &[], None)
            .await
            .json();
        assert_eq!(two.len(), 2);

        // Page after page with `before`: every order once, in the same order.
        let mut paged = Vec::new();
        let mut path = "/orders?limit=2".to_string();
        loop {
            let page: Vec<OrderView> = send(&app, "GET", &path, Some(&t), &[], None).await.json();
            paged.extend(page.iter().map(|v| v.order_id));
            match page.last() {
                Some(last) if page.len() == 2 => {
                    path = format!("/orders?limit=2&before={}", last.order_id);
                }
                _ => break,
            }
        }
        assert_eq!(paged, ids);
        for (before, status) in [
            ("nope", StatusCode::BAD_REQUEST),
            (
                "01a24520-a232-7497-91bd-6aab1ed16c83",
                StatusCode::NOT_FOUND,
            ),
        ] {
            let r = send(
                &app,
                "GET",
                &format!("/orders?before={before}"),
                Some(&t),
                &[],
                None,
            )
            .await;
            assert_eq!(r.status, status, "before={before}");
        }
    }
}

#[tokio::test]
async fn admins_see_each_order_with_its_saga_and_read_model_copy_filtered_by_status() {
    let (_dir, dbs) = databases().await;
    for db in &dbs {
        let app = router(app_state(db));
        let t = customer_token("cust-1");
        let a: OrderView = send(&app, "POST", "/orders", Some(&t), &[], Some(ORDER))
            .await
            .json();
        let b: OrderView = send(&app, "POST", "/orders", Some(&t), &[], Some(ORDER))
            .await
            .json();
        on_inventory(
            db,
            &contracts::messages::Envelope::new(
                contracts::messages::InventoryEvent::StockRejected {
                    order_id: b.order_id,
                    reason: "gone".into(),
                },
                platform::now_ms(),
            ),
        )
        .await;

        let all: Vec<AdminOrder> = send(
            &app,
            "GET",
            "/admin/orders",
            Some(&admin_token()),
            &[],
            None,
        )
        .await
        .json();
        assert_eq!(all.len(), 2);
        assert!(
            all.iter().all(|o| o.view.is_none()),
            "nothing projected yet"
        );
        let first = all.iter().find(|o| o.order.order_id == a.order_id).unwrap();
        assert_eq!(first.saga.step, "RESERVING_STOCK");
        assert_eq!(first.saga.attempts, 1);

        project_all(db).await;
        let rejected: Vec<AdminOrder> = send(
            &app,
            "GET",
            "/admin/orders?status=REJECTED",
            Some(&admin_token()),
            &[],
            None,
        )
        .await
        .json();
        assert_eq!(rejected.len(), 1);
        assert_eq!(rejected[0].order.order_id, b.order_id);
        assert_eq!(rejected[0].saga.step, "DONE");
        assert_eq!(rejected[0].view.as_ref(), Some(&rejected[0].order));
    }
}

#[tokio::test]
async fn health_endpoints_answer_without_a_token() {
    let (_dir, dbs) = databases().await;
    let app = router(app_state(&dbs[0]));
    assert_eq!(
        send(&app, "GET", "/health/live", None, &[], None)
            .await
            .status,
        StatusCode::OK
    );
    assert_eq!(
        send(&app, "GET", "/health/ready", None, &[], None)
            .await
            .status,
        StatusCode::OK
    );
}

/// Admission control on both dialects: with as many orders in flight as its limit (here the
/// smallest, 3) and some of them late, new orders are turned away with 503 + `Retry-After` while
/// reads go on; once the backlog has drained, orders are taken again.
#[tokio::test]
async fn a_full_backlog_turns_new_orders_away_with_503_and_retry_after_while_reads_go_on() {
    use order_service::admission::Backlog;
    use order_service::{Admission, AdmissionConfig};
    let (_dir, dbs) = databases().await;
    for db in &dbs {
        let config = AdmissionConfig {
            backlog_age_ms: 1,
            backlog_floor: 2,
            max_pending: 3,
            ..AdmissionConfig::defaults(policy().step_timeout_ms)
        };
        let admission = Admission::new(config);
        let app = router(app_state(db).with_admission(admission.clone()));
        let cust = customer_token("cust-1");
        for _ in 0..3 {
            let r = send(&app, "POST", "/orders", Some(&cust), &[], Some(ORDER)).await;
            assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
        }
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        let read =
            |late_before| order_service::store::backlog(db, late_before, config.backlog_floor + 1);
        let backlog = read(platform::now_ms() - config.backlog_age_ms)
            .await
            .unwrap();
        assert_eq!((backlog.pending, backlog.late), (3, 3));
        admission.update(&backlog);

        let r = send(&app, "POST", "/orders", Some(&cust), &[], Some(ORDER)).await;
        assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE, "{}", r.body);
        assert_eq!(r.error_code(), "overloaded");
        assert_eq!(r.headers["retry-after"], "1");
        let r = send(&app, "GET", "/orders", Some(&cust), &[], None).await;
        assert_eq!(r.status, StatusCode::OK, "reads are never refused");
        assert_eq!(
            count(db, "SELECT COUNT(*) FROM orders").await,
            3,
            "nothing was written"
        );

        // With an age bound of an hour none is late.
        let backlog = read(platform::now_ms() - 3_600_000).await.unwrap();
        assert_eq!((backlog.pending, backlog.late), (3, 0));
        // Drained: the orders are taken again.
        admission.update(&Backlog {
            pending: 0,
            late: 0,
        });
        let r = send(&app, "POST", "/orders", Some(&cust), &[], Some(ORDER)).await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    }
}
