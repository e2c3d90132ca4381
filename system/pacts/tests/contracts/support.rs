//! What the contract tests share: the example values the contracts are written with, the real
//! gateway on a free port, body patterns that several contracts contain, and ways to bring the
//! order service into a saga state.

use std::net::SocketAddr;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use contract_pacts::fixtures::{FixtureError, FreshDb};
use contracts::domain::{CustomerId, Money, OrderId, OrderStatus, Quantity, Role, Sku};
use contracts::http::{OrderLine, PlaceOrderRequest, PricedLine};
use contracts::messages::{Envelope, InventoryEvent, OrderEvent, PaymentEvent, decode, topics};
use gateway::{Application, Config};
use order_service::SagaPolicy;
use order_service::saga::{OrderState, SagaState, SagaStep};
use order_service::store::{self, OrderRecord, SagaRecord};
use pact_consumer::patterns::JsonPattern;
use pact_consumer::prelude::*;
use platform::auth::UserTokenIssuer;
use platform::config::CommonConfig;
use platform::db::Db;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

pub const CUSTOMER: &str = "cust-1";
pub const ADMIN: &str = "admin-1";
pub const SKU: &str = "SKU-1";
pub const PRODUCT_NAME: &str = "Espresso beans";
pub const UNIT_PRICE: i64 = 1_250;
pub const STOCK: i64 = 10;
pub const QUANTITY: i64 = 2;
/// `QUANTITY * UNIT_PRICE`: what an order of the example line costs.
pub const TOTAL: i64 = 2_500;
pub const CREDIT_LIMIT: i64 = 100_000;
/// The order every example message and literal path is about.
pub const ORDER_ID: &str = "0190f5c2-7a1e-7c3b-9d4e-5f6a7b8c9d0e";
/// An order id nobody has.
pub const UNKNOWN_ORDER_ID: &str = "0190f5c2-0000-7000-8000-000000000000";
pub const MESSAGE_ID: &str = "0190f5c2-7a1f-7000-8000-0123456789ab";
pub const EXAMPLE_TIME_MS: i64 = 1_767_225_600_000;
pub const UUID: &str = r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$";
pub const ORDER_STATUS: &str = r"^(PENDING|CONFIRMED|REJECTED|CANCELLED)$";
/// What the gateway forwards as `x-request-id`: the client's, or one it made up.
pub const REQUEST_ID: &str = r"^[A-Za-z0-9._:-]{1,128}$";

pub fn order_id() -> OrderId {
    OrderId::from_str(ORDER_ID).unwrap()
}

pub fn sku() -> Sku {
    Sku::parse(SKU).unwrap()
}

pub fn customer() -> CustomerId {
    CustomerId::parse(CUSTOMER).unwrap()
}

pub fn money(minor: i64) -> Money {
    Money::from_minor(minor).unwrap()
}

pub fn line() -> OrderLine {
    OrderLine {
        sku: sku(),
        quantity: Quantity::new(QUANTITY).unwrap(),
    }
}

pub fn order_request() -> PlaceOrderRequest {
    PlaceOrderRequest {
        items: vec![line()],
    }
}

// ---- patterns ----------------------------------------------------------------------------

/// An `Envelope` around `body`, as every message travels. `schema_version` is literal: a
/// consumer refuses a version it does not know.
pub fn envelope(body: JsonPattern) -> JsonPattern {
    json_pattern!({
        "message_id": term!(UUID, MESSAGE_ID),
        "schema_version": 1,
        "occurred_at_ms": like!(EXAMPLE_TIME_MS),
        "body": body,
    })
}

pub fn order_id_pattern() -> JsonPattern {
    term!(UUID, ORDER_ID).into()
}

pub fn order_line() -> JsonPattern {
    json_pattern!({ "sku": like!(SKU), "quantity": like!(QUANTITY) })
}

/// An `OrderView` as clients read it. Only what a client needs is here: `total_minor` and
/// `reason` are optional in `OrderView`, so a provider may leave them out.
pub fn order_view(status: JsonPattern) -> JsonPattern {
    json_pattern!({
        "order_id": order_id_pattern(),
        "customer_id": like!(CUSTOMER),
        "status": status,
        "items": each_like!(order_line()),
        "created_at_ms": like!(EXAMPLE_TIME_MS),
        "updated_at_ms": like!(EXAMPLE_TIME_MS),
    })
}

pub fn any_status() -> JsonPattern {
    term!(ORDER_STATUS, "PENDING").into()
}

pub fn error_body(code: &str, message: &str) -> JsonPattern {
    json_pattern!({ "error": { "code": code, "message": like!(message) } })
}

// ---- the real gateway ----------------------------------------------------------------------

/// Nothing listens there: the upstream of the services a contract is not about.
pub const NOWHERE: &str = "http://127.0.0.1:9";

const GATEWAY_SECRET: &str = "a-contract-test-secret-of-at-least-32-bytes";
const ISSUER: &str = "harness";
const AUDIENCE: &str = "shop-api";

/// The real gateway, started the way its binary starts it, and the identity provider whose
/// tokens it trusts.
pub struct Gateway {
    pub base: String,
    pub client: reqwest::Client,
    issuer: UserTokenIssuer,
    stop: CancellationToken,
}

impl Drop for Gateway {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// A mock server's URL without the trailing slash the gateway would double.
pub fn base_url(url: &url::Url) -> String {
    url.as_str().trim_end_matches('/').to_string()
}

pub async fn gateway(order: &str, inventory: &str, payment: &str) -> Gateway {
    let (private_pem, public_pem) = platform::auth::generate_ed25519_pem().unwrap();
    let config = Config {
        common: CommonConfig {
            bind_addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            instance_id: "gateway#contract".into(),
            ready_file: None,
            exit_on_stdin_eof: false,
            shutdown_timeout: Duration::from_secs(1),
            drain_delay: Duration::ZERO,
            service_token_secret: secrecy::SecretString::from(GATEWAY_SECRET),
            limits: Default::default(),
        },
        jwt_public_key_pem: public_pem,
        jwt_issuer: ISSUER.into(),
        jwt_audience: AUDIENCE.into(),
        order_urls: vec![order.into()],
        inventory_urls: vec![inventory.into()],
        payment_urls: vec![payment.into()],
        upstream_timeout: Duration::from_secs(5),
        attempt_timeout: Duration::from_millis(gateway::config::DEFAULT_ATTEMPT_TIMEOUT_MS),
        max_body_bytes: gateway::config::DEFAULT_MAX_BODY_BYTES,
        // No probes the upstream doubles would see as unexpected requests; tests that are about
        // health checks turn them on.
        resilience: gateway::resilience::ResilienceConfig {
            health_check_interval: None,
            ..Default::default()
        },
        upstreams_file: None,
    };
    let app = Application::build(config).await.unwrap();
    let base = format!("http://{}", app.addr());
    let stop = CancellationToken::new();
    tokio::spawn(app.run_until_stopped(stop.clone()));
    Gateway {
        base,
        client: reqwest::Client::builder().no_proxy().build().unwrap(),
        issuer: UserTokenIssuer::from_pem(&private_pem, ISSUER, AUDIENCE).unwrap(),
        stop,
    }
}

impl Gateway {
    pub fn token(&self, sub: &str, roles: &[Role]) -> String {
        self.issuer
            .issue(sub, roles, Duration::from_secs(300))
            .unwrap()
    }

    pub fn customer(&self) -> String {
        self.token(CUSTOMER, &[Role::Customer])
    }

    pub fn admin(&self) -> String {
        self.token(ADMIN, &[Role::Admin])
    }

    pub fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        self.client.request(method, format!("{}{path}", self.base))
    }
}

/// What a client got back: whether it was a replay (`idempotent-replayed: true`), and the body.
pub struct Answer {
    pub replayed: bool,
    pub body: serde_json::Value,
}

impl Answer {
    /// The body as a client would read it, saying what did not fit.
    pub fn read<T: serde::de::DeserializeOwned>(&self) -> T {
        parse(&self.body)
    }
}

/// Sends `request` through the gateway and expects `status`; the body is in the message when
/// the status differs (from the mock server, it says which part of the request did not match).
pub async fn expect(request: reqwest::RequestBuilder, status: u16) -> Answer {
    let response = request.send().await.unwrap();
    let got = response.status().as_u16();
    let replayed = response
        .headers()
        .get("idempotent-replayed")
        .is_some_and(|v| v == "true");
    let text = response.text().await.unwrap();
    assert_eq!(
        got, status,
        "the client got {got} instead of {status}: {text}"
    );
    let body = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}"));
    Answer { replayed, body }
}

/// Parses a body as a client would, saying what did not fit.
pub fn parse<T: serde::de::DeserializeOwned>(body: &serde_json::Value) -> T {
    serde_json::from_value(body.clone())
        .unwrap_or_else(|e| panic!("a client cannot read {body}: {e}"))
}

// ---- the order service -------------------------------------------------------------------

pub fn policy() -> SagaPolicy {
    SagaPolicy::default()
}

pub async fn order_db() -> FreshDb {
    FreshDb::new(&order_service::SQLITE, &order_service::POSTGRES)
        .await
        .unwrap()
}

/// The example order in a saga state: PENDING and reserving stock, then changed by `at`.
pub async fn order_at(db: &Db, at: impl FnOnce(&mut OrderState, &mut SagaState)) {
    let now = platform::now_ms();
    let mut order = OrderState {
        order_id: order_id(),
        customer_id: customer(),
        items: vec![line()],
        status: OrderStatus::Pending,
        total_minor: None,
        reason: None,
    };
    let mut saga = SagaState::start(now, &policy());
    at(&mut order, &mut saga);
    let mut tx = db.begin().await.unwrap();
    store::insert_order(
        &mut tx,
        &OrderRecord {
            state: order,
            created_at_ms: now,
            updated_at_ms: now,
            version: 1,
        },
    )
    .await
    .unwrap();
    store::insert_saga(
        &mut tx,
        &SagaRecord {
            order_id: order_id(),
            state: saga,
            version: 1,
            updated_at_ms: now,
        },
    )
    .await
    .unwrap();
    tx.commit().await.unwrap();
}

/// `at` for an order whose stock is reserved and whose payment is being authorized.
pub fn authorizing(order: &mut OrderState, saga: &mut SagaState) {
    order.total_minor = Some(money(TOTAL));
    saga.step = SagaStep::AuthorizingPayment;
}

/// `at` for a CONFIRMED order waiting for its commit and capture.
pub fn completing(order: &mut OrderState, saga: &mut SagaState) {
    authorizing(order, saga);
    order.status = OrderStatus::Confirmed;
    saga.step = SagaStep::Completing;
}

/// `at` for a CANCELLED order waiting for its compensations.
pub fn compensating(order: &mut OrderState, saga: &mut SagaState) {
    authorizing(order, saga);
    order.status = OrderStatus::Cancelled;
    order.reason = Some("credit limit exceeded".into());
    saga.step = SagaStep::Compensating;
}

pub async fn order_and_saga(db: &Db) -> (OrderRecord, SagaRecord) {
    let mut conn = db.pool().acquire().await.unwrap();
    store::load_order_and_saga(&mut conn, "", order_id())
        .await
        .unwrap()
        .expect("the example order exists")
}

/// The saga's event handler, as the order service's consumer runs it.
pub fn saga_handler(db: &Db) -> order_service::events::SagaEventHandler {
    order_service::events::SagaEventHandler {
        db: db.clone(),
        policy: policy(),
        relay: Arc::new(Notify::new()),
    }
}

/// The kinds of the commands the order service sent, oldest first.
pub async fn commands_sent(db: &Db) -> Vec<String> {
    contract_pacts::fixtures::outbox(db)
        .await
        .unwrap()
        .into_iter()
        .filter(|m| m.topic != topics::ORDER_EVENTS)
        .map(|m| m.kind)
        .collect()
}

pub fn code(e: impl std::fmt::Display) -> FixtureError {
    FixtureError::Code(e.to_string())
}

/// Places the example order through the order service's own code, on a fresh database.
pub async fn placed() -> Result<(FreshDb, OrderId), FixtureError> {
    let fresh = FreshDb::new(&order_service::SQLITE, &order_service::POSTGRES).await?;
    let placed = order_service::place::place_order(
        &fresh.db,
        &policy(),
        &customer(),
        None,
        &order_request(),
    )
    .await
    .map_err(code)?;
    Ok((fresh, placed.order_id))
}

/// Feeds an inventory event to the saga, as its consumer would.
pub async fn saga_hears_inventory(db: &Db, event: InventoryEvent) -> Result<(), FixtureError> {
    order_service::events::handle_inventory_event(
        db,
        &policy(),
        &Envelope::new(event, platform::now_ms()),
    )
    .await?;
    Ok(())
}

/// Feeds a payment event to the saga, as its consumer would.
pub async fn saga_hears_payment(db: &Db, event: PaymentEvent) -> Result<(), FixtureError> {
    order_service::events::handle_payment_event(
        db,
        &policy(),
        &Envelope::new(event, platform::now_ms()),
    )
    .await?;
    Ok(())
}

/// The inventory's answer to the example order's reservation.
pub fn stock_reserved(order_id: OrderId) -> InventoryEvent {
    InventoryEvent::StockReserved {
        order_id,
        lines: vec![PricedLine {
            sku: sku(),
            quantity: Quantity::new(QUANTITY).unwrap(),
            unit_price_minor: money(UNIT_PRICE),
        }],
        total_minor: money(TOTAL),
    }
}

/// Projects every `OrderChanged` in the outbox into the read model, as the projector would.
pub async fn project_all(db: &Db) -> Result<(), FixtureError> {
    for message in contract_pacts::fixtures::outbox(db).await? {
        if message.topic == topics::ORDER_EVENTS {
            let env = decode::<OrderEvent>(message.payload.as_bytes()).map_err(code)?;
            order_service::projector::project(db, &env).await?;
        }
    }
    Ok(())
}

/// Verifies the committed pact between `consumer` and `provider` against the running provider
/// and asserts that every interaction in it held.
pub async fn assert_http_pact_holds<F: contract_pacts::http_provider::ServiceFixture>(
    consumer: &str,
    provider: &contract_pacts::http_provider::HttpProvider<F>,
) {
    let pact = contract_pacts::files::committed(consumer, provider.name());
    let report = contract_pacts::verify::http(provider, &pact)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let verified = report.into_result().unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        verified,
        contract_pacts::files::descriptions(&pact).unwrap().len()
    );
}
