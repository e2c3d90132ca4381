//! Fresh databases of both dialects, a router to call with `oneshot`, and shorthands for
//! commands, stock and the outbox.

use std::str::FromStr;

use axum::Router;
use axum::body::Body;
use contracts::domain::{Money, OrderId, Quantity, Role, Sku};
use contracts::http::{OrderLine, ProductUpsert, StockLevel};
use contracts::messages::{Envelope, InventoryCommand, InventoryEvent, decode};
use http::{Request, StatusCode};
use inventory_service::{AppState, POSTGRES, Processed, SQLITE, catalog, handle_command, router};
use platform::auth::ServiceAuth;
use platform::db::{Db, Dialect};
use sqlx::Row;
use tempfile::TempDir;
use tower::ServiceExt;

pub const SECRET: &[u8] = b"an-inventory-test-secret-of-32-bytes!";

/// Every configured dialect's fresh database. Keep the `TempDir` alive while using them.
pub async fn databases() -> (TempDir, Vec<Db>) {
    let dir = tempfile::tempdir().unwrap();
    let dbs = platform::testing::both(dir.path(), &SQLITE, &POSTGRES).await;
    (dir, dbs)
}

pub fn name(db: &Db) -> &'static str {
    match db.dialect() {
        Dialect::Sqlite => "sqlite",
        Dialect::Postgres => "postgres",
    }
}

pub fn sku(s: &str) -> Sku {
    Sku::parse(s).unwrap()
}

pub fn line(s: &str, q: i64) -> OrderLine {
    OrderLine {
        sku: sku(s),
        quantity: Quantity::new(q).unwrap(),
    }
}

/// Seeds products as `(sku, unit price in minor units, available)`.
pub async fn seed(db: &Db, products: &[(&str, i64, i64)]) {
    let items: Vec<ProductUpsert> = products
        .iter()
        .map(|(s, price, available)| ProductUpsert {
            sku: sku(s),
            name: format!("product {s}"),
            unit_price_minor: Money::from_minor(*price).unwrap(),
            available: *available,
        })
        .collect();
    catalog::upsert(db, &items).await.unwrap();
}

pub fn reserve(order_id: OrderId, lines: &[(&str, i64)]) -> Envelope<InventoryCommand> {
    Envelope::new(
        InventoryCommand::ReserveStock {
            order_id,
            items: lines.iter().map(|(s, q)| line(s, *q)).collect(),
        },
        platform::now_ms(),
    )
}

pub fn release(order_id: OrderId) -> Envelope<InventoryCommand> {
    Envelope::new(
        InventoryCommand::ReleaseStock { order_id },
        platform::now_ms(),
    )
}

pub fn commit(order_id: OrderId) -> Envelope<InventoryCommand> {
    Envelope::new(
        InventoryCommand::CommitStock { order_id },
        platform::now_ms(),
    )
}

/// Handles a command and expects it to be new.
pub async fn handle(db: &Db, env: &Envelope<InventoryCommand>) {
    assert_eq!(
        handle_command(db, env).await.unwrap(),
        Processed::Handled,
        "{}",
        name(db)
    );
}

/// Every event in the outbox, oldest first.
pub async fn events(db: &Db) -> Vec<InventoryEvent> {
    let rows = sqlx::query("SELECT topic, payload FROM outbox ORDER BY seq")
        .fetch_all(db.pool())
        .await
        .unwrap();
    rows.iter()
        .map(|r| {
            let topic: String = r.get("topic");
            assert_eq!(topic, "inventory.events");
            let payload: String = r.get("payload");
            decode::<InventoryEvent>(payload.as_bytes()).unwrap().body
        })
        .collect()
}

/// The events announced since `before` events were already in the outbox.
pub async fn events_after(db: &Db, before: usize) -> Vec<InventoryEvent> {
    events(db).await.split_off(before)
}

pub async fn stock(db: &Db, s: &str) -> StockLevel {
    catalog::stock_level_of(db, &sku(s)).await.unwrap().unwrap()
}

/// `(available, reserved, sold, received)` of a SKU, checking conservation on the way.
pub async fn counters(db: &Db, s: &str) -> (i64, i64, i64, i64) {
    let l = stock(db, s).await;
    assert_eq!(
        l.received,
        l.available + l.reserved + l.sold,
        "conservation of {s} on {}",
        name(db)
    );
    (l.available, l.reserved, l.sold, l.received)
}

/// `(status, reason)` of an order's reservation row.
pub async fn reservation(db: &Db, order_id: OrderId) -> Option<(String, Option<String>)> {
    sqlx::query("SELECT status, reason FROM reservations WHERE order_id = $1")
        .bind(order_id.to_string())
        .fetch_optional(db.pool())
        .await
        .unwrap()
        .map(|r| (r.get("status"), r.get("reason")))
}

pub fn order_id(s: &str) -> OrderId {
    OrderId::from_str(s).unwrap()
}

/// A router over a database, and tokens to call it with.
pub struct TestApp {
    pub db: Db,
    router: Router,
    gateway: ServiceAuth,
}

impl TestApp {
    pub fn new(db: Db) -> Self {
        let state = AppState::new(db.clone(), ServiceAuth::new(SECRET, "inventory"));
        Self {
            db,
            router: router(state),
            gateway: ServiceAuth::new(SECRET, "gateway"),
        }
    }

    pub fn token(&self, roles: &[Role]) -> String {
        self.gateway.issue("inventory", "user-1", roles).unwrap()
    }

    pub fn admin(&self) -> String {
        self.token(&[Role::Admin])
    }

    pub fn customer(&self) -> String {
        self.token(&[Role::Customer])
    }

    /// Sends a request; returns the status and the body parsed as JSON (`Null` when empty or
    /// not JSON).
    pub async fn call(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<&str>,
    ) -> (StatusCode, serde_json::Value) {
        let mut req = Request::builder().method(method).uri(path);
        if let Some(t) = token {
            req = req.header("authorization", format!("Bearer {t}"));
        }
        if body.is_some() {
            req = req.header("content-type", "application/json");
        }
        let req = req
            .body(
                body.map(|b| Body::from(b.to_string()))
                    .unwrap_or_else(Body::empty),
            )
            .unwrap();
        let res = self.router.clone().oneshot(req).await.unwrap();
        let status = res.status();
        let bytes = axum::body::to_bytes(res.into_body(), usize::MAX)
            .await
            .unwrap();
        let json = serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null);
        (status, json)
    }

    pub async fn get(&self, path: &str, token: &str) -> (StatusCode, serde_json::Value) {
        self.call("GET", path, Some(token), None).await
    }
}

/// Asserts the shared error body with the given status and code.
pub fn assert_error(got: &(StatusCode, serde_json::Value), status: StatusCode, code: &str) {
    assert_eq!(got.0, status, "body: {}", got.1);
    assert_eq!(got.1["error"]["code"], code, "body: {}", got.1);
    assert!(
        got.1["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()),
        "an error says what was wrong: {}",
        got.1
    );
}
