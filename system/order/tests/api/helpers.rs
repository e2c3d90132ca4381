//! Shared test setup: fresh databases, order placement, message envelopes, outbox reads.

use std::sync::Arc;

use contracts::domain::{CustomerId, Money, OrderId, OrderStatus, Quantity, Role, Sku};
use contracts::http::{OrderLine, OrderView, PlaceOrderRequest, PricedLine};
use contracts::messages::{Envelope, InventoryEvent, OrderEvent, PaymentEvent, topics};
use order_service::events::{self, Handled};
use order_service::place::{self, Placed};
use order_service::saga::SagaStep;
use order_service::store::{self, OrderRecord, SagaRecord};
use order_service::{AppState, POSTGRES, SQLITE, SagaPolicy};
use platform::auth::ServiceAuth;
use platform::db::Db;
use sqlx::Row;
use tempfile::TempDir;
use tokio::sync::Notify;

pub const SECRET: [u8; 32] = [7u8; 32];

/// Fresh migrated databases of both dialects; keep the `TempDir` alive while using them.
pub async fn databases() -> (TempDir, Vec<Db>) {
    let dir = tempfile::tempdir().unwrap();
    let dbs = platform::testing::both(dir.path(), &SQLITE, &POSTGRES).await;
    (dir, dbs)
}

pub fn policy() -> SagaPolicy {
    SagaPolicy {
        step_timeout_ms: 1_000,
        max_attempts: 2,
        max_backoff_ms: 4_000,
    }
}

pub fn customer(id: &str) -> CustomerId {
    CustomerId::parse(id).unwrap()
}

pub fn request(lines: &[(&str, i64)]) -> PlaceOrderRequest {
    PlaceOrderRequest {
        items: lines
            .iter()
            .map(|(sku, q)| OrderLine {
                sku: Sku::parse(*sku).unwrap(),
                quantity: Quantity::new(*q).unwrap(),
            })
            .collect(),
    }
}

/// Places an order for `cust` the way `POST /orders` does, without a key.
pub async fn place(db: &Db, cust: &str) -> OrderView {
    let placed = place::place_order(
        db,
        &policy(),
        &customer(cust),
        None,
        &request(&[("SKU-1", 2), ("SKU-2", 1)]),
    )
    .await
    .unwrap();
    view_of(&placed)
}

pub fn view_of(placed: &Placed) -> OrderView {
    serde_json::from_str(&placed.body).unwrap()
}

pub fn money(n: i64) -> Money {
    Money::from_minor(n).unwrap()
}

pub fn reserved(id: OrderId, total: i64) -> Envelope<InventoryEvent> {
    Envelope::new(
        InventoryEvent::StockReserved {
            order_id: id,
            lines: vec![PricedLine {
                sku: Sku::parse("SKU-1").unwrap(),
                quantity: Quantity::new(1).unwrap(),
                unit_price_minor: money(total),
            }],
            total_minor: money(total),
        },
        platform::now_ms(),
    )
}

pub fn inventory(body: InventoryEvent) -> Envelope<InventoryEvent> {
    Envelope::new(body, platform::now_ms())
}

pub fn payment(body: PaymentEvent) -> Envelope<PaymentEvent> {
    Envelope::new(body, platform::now_ms())
}

pub async fn on_inventory(db: &Db, env: &Envelope<InventoryEvent>) -> Handled {
    events::handle_inventory_event(db, &policy(), env)
        .await
        .unwrap()
}

pub async fn on_payment(db: &Db, env: &Envelope<PaymentEvent>) -> Handled {
    events::handle_payment_event(db, &policy(), env)
        .await
        .unwrap()
}

pub async fn load(db: &Db, id: OrderId) -> (OrderRecord, SagaRecord) {
    let mut conn = db.pool().acquire().await.unwrap();
    store::load_order_and_saga(&mut conn, "", id)
        .await
        .unwrap()
        .expect("the order exists")
}

pub async fn status_and_step(db: &Db, id: OrderId) -> (OrderStatus, SagaStep) {
    let (order, saga) = load(db, id).await;
    (order.state.status, saga.state.step)
}

/// One outbox row.
#[derive(Debug, Clone)]
pub struct Sent {
    pub topic: String,
    pub kind: String,
    pub key: String,
    pub payload: String,
}

/// The outbox rows about `id`, in the order they were written.
pub async fn outbox(db: &Db, id: OrderId) -> Vec<Sent> {
    sqlx::query("SELECT topic, kind, msg_key, payload FROM outbox WHERE msg_key = $1 ORDER BY seq")
        .bind(id.to_string())
        .fetch_all(db.pool())
        .await
        .unwrap()
        .iter()
        .map(|r| Sent {
            topic: r.get("topic"),
            kind: r.get("kind"),
            key: r.get("msg_key"),
            payload: r.get("payload"),
        })
        .collect()
}

/// `(topic, kind)` of the commands (not the order events) sent about `id`.
pub async fn commands(db: &Db, id: OrderId) -> Vec<(String, String)> {
    outbox(db, id)
        .await
        .into_iter()
        .filter(|s| s.topic != topics::ORDER_EVENTS)
        .map(|s| (s.topic, s.kind))
        .collect()
}

pub fn cmd(topic: &str, kind: &str) -> (String, String) {
    (topic.to_string(), kind.to_string())
}

/// The `OrderChanged` events written for `id`, in order.
pub async fn order_events(db: &Db, id: OrderId) -> Vec<Envelope<OrderEvent>> {
    outbox(db, id)
        .await
        .into_iter()
        .filter(|s| s.topic == topics::ORDER_EVENTS)
        .map(|s| contracts::messages::decode::<OrderEvent>(s.payload.as_bytes()).unwrap())
        .collect()
}

/// Feeds every `OrderChanged` in the outbox to the projector, as relay and consumer would.
pub async fn project_all(db: &Db) {
    let rows = sqlx::query("SELECT payload FROM outbox WHERE topic = $1 ORDER BY seq")
        .bind(topics::ORDER_EVENTS)
        .fetch_all(db.pool())
        .await
        .unwrap();
    for r in rows {
        let payload: String = r.get("payload");
        let env = contracts::messages::decode::<OrderEvent>(payload.as_bytes()).unwrap();
        order_service::projector::project(db, &env).await.unwrap();
    }
}

pub async fn count(db: &Db, sql: &str) -> i64 {
    sqlx::query(sql)
        .fetch_one(db.pool())
        .await
        .unwrap()
        .get::<i64, _>(0)
}

pub fn app_state(db: &Db) -> AppState {
    AppState::new(
        db.clone(),
        ServiceAuth::new(&SECRET, order_service::SERVICE_NAME),
        policy(),
        Arc::new(Notify::new()),
    )
}

/// A service token as the gateway would mint it.
pub fn token(user: &str, roles: &[Role]) -> String {
    ServiceAuth::new(&SECRET, "gateway")
        .issue(order_service::SERVICE_NAME, user, roles)
        .unwrap()
}
