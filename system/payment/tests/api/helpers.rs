//! Fresh databases of both dialects, a router to call with `oneshot`, and shorthands for
//! accounts, commands, the ledger and the outbox.

use axum::Router;
use axum::body::Body;
use contracts::domain::{CustomerId, Money, OrderId, Role};
use contracts::http::{AccountBalance, AccountUpsert};
use contracts::messages::{Envelope, PaymentCommand, PaymentEvent, decode};
use http::{Request, StatusCode};
use payment_service::{AppState, POSTGRES, Processed, SQLITE, accounts, handle_command, router};
use platform::auth::ServiceAuth;
use platform::db::{Db, Dialect};
use sqlx::Row;
use tempfile::TempDir;
use tower::ServiceExt;

pub const SECRET: &[u8] = b"a-payment-test-secret-of-at-least-32-bytes";

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

pub fn customer(c: &str) -> CustomerId {
    CustomerId::parse(c).unwrap()
}

pub fn money(minor: i64) -> Money {
    Money::from_minor(minor).unwrap()
}

/// Creates accounts (or changes limits) as `(customer, credit limit in minor units)`.
pub async fn open_accounts(db: &Db, accounts: &[(&str, i64)]) {
    let items: Vec<AccountUpsert> = accounts
        .iter()
        .map(|(c, limit)| AccountUpsert {
            customer_id: customer(c),
            credit_limit_minor: money(*limit),
        })
        .collect();
    accounts::upsert(db, &items).await.unwrap();
}

pub fn authorize(order_id: OrderId, c: &str, amount: i64) -> Envelope<PaymentCommand> {
    Envelope::new(
        PaymentCommand::AuthorizePayment {
            order_id,
            customer_id: customer(c),
            amount_minor: money(amount),
        },
        platform::now_ms(),
    )
}

pub fn capture(order_id: OrderId) -> Envelope<PaymentCommand> {
    Envelope::new(
        PaymentCommand::CapturePayment { order_id },
        platform::now_ms(),
    )
}

pub fn void(order_id: OrderId) -> Envelope<PaymentCommand> {
    Envelope::new(PaymentCommand::VoidPayment { order_id }, platform::now_ms())
}

/// Handles a command and expects it to be new.
pub async fn handle(db: &Db, env: &Envelope<PaymentCommand>) {
    assert_eq!(
        handle_command(db, env).await.unwrap(),
        Processed::Handled,
        "{}",
        name(db)
    );
}

/// Every event in the outbox, oldest first.
pub async fn events(db: &Db) -> Vec<PaymentEvent> {
    let rows = sqlx::query("SELECT topic, payload FROM outbox ORDER BY seq")
        .fetch_all(db.pool())
        .await
        .unwrap();
    rows.iter()
        .map(|r| {
            let topic: String = r.get("topic");
            assert_eq!(topic, "payment.events");
            let payload: String = r.get("payload");
            decode::<PaymentEvent>(payload.as_bytes()).unwrap().body
        })
        .collect()
}

/// The events announced after the first `before`.
pub async fn events_after(db: &Db, before: usize) -> Vec<PaymentEvent> {
    events(db).await.split_off(before)
}

/// An order's ledger as `(customer, kind, amount)`, oldest first.
pub async fn ledger(db: &Db, order_id: OrderId) -> Vec<(Option<String>, String, i64)> {
    sqlx::query(
        "SELECT customer_id, kind, amount_minor FROM payment_events WHERE order_id = $1 ORDER BY seq",
    )
    .bind(order_id.to_string())
    .fetch_all(db.pool())
    .await
    .unwrap()
    .iter()
    .map(|r| (r.get("customer_id"), r.get("kind"), r.get("amount_minor")))
    .collect()
}

pub fn entry(c: Option<&str>, kind: &str, amount: i64) -> (Option<String>, String, i64) {
    (c.map(str::to_string), kind.to_string(), amount)
}

/// `(held, captured)` of an account as the projection says.
pub async fn balance(db: &Db, c: &str) -> (i64, i64) {
    let all: Vec<AccountBalance> = accounts::accounts(db).await.unwrap();
    let a = all.iter().find(|a| a.customer_id.as_str() == c).unwrap();
    (a.held_minor, a.captured_minor)
}

pub fn declined(order_id: OrderId, reason: &str) -> PaymentEvent {
    PaymentEvent::PaymentDeclined {
        order_id,
        reason: reason.into(),
    }
}

pub fn decline_reason(event: &PaymentEvent) -> &str {
    match event {
        PaymentEvent::PaymentDeclined { reason, .. } => reason,
        other => panic!("expected PaymentDeclined, got {other:?}"),
    }
}

/// A router over a database, and tokens to call it with.
pub struct TestApp {
    pub db: Db,
    router: Router,
    gateway: ServiceAuth,
}

impl TestApp {
    pub fn new(db: Db) -> Self {
        let state = AppState::new(db.clone(), ServiceAuth::new(SECRET, "payment"));
        Self {
            db,
            router: router(state),
            gateway: ServiceAuth::new(SECRET, "gateway"),
        }
    }

    pub fn token(&self, roles: &[Role]) -> String {
        self.gateway.issue("payment", "user-1", roles).unwrap()
    }

    pub fn admin(&self) -> String {
        self.token(&[Role::Admin])
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
