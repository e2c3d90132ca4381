//! `gateway` → `order-service`: placing orders (with `Idempotency-Key`, replays, refusals), the
//! read model customers follow their orders on, and the admin list the checks read.

use std::collections::HashMap;
use std::sync::Arc;

use contract_pacts::files::ConsumerPact;
use contract_pacts::http_provider::{
    HttpProvider, Instance, ServiceFixture, StateError, param_i64, param_str,
};
use contract_pacts::names::{GATEWAY, ORDER_SERVICE};
use contract_pacts::tokens::authorization;
use contracts::domain::{CustomerId, OrderStatus, Quantity, Role, Sku};
use contracts::http::{AdminOrder, ErrorBody, OrderLine, OrderView, PlaceOrderRequest};
use order_service::AppState;
use pact_consumer::builders::PactBuilder;
use pact_consumer::prelude::*;
use pact_models::provider_states::ProviderState;
use platform::auth::ServiceAuth;
use reqwest::Method;
use serde_json::{Value, json};
use tokio::sync::Notify;

use crate::support::*;

const SERVICE: &str = order_service::SERVICE_NAME;

pub const ORDER_PLACED: &str = "a customer has placed an order";
pub const ORDER_PLACED_WITH_KEY: &str = "a customer placed an order with an idempotency key";
const FIRST_KEY: &str = "order-key-1";
const REPLAYED_KEY: &str = "order-key-replayed";

fn order_params() -> Value {
    json!({ "customer_id": CUSTOMER, "sku": SKU, "quantity": QUANTITY })
}

fn saga_view() -> pact_consumer::patterns::JsonPattern {
    json_pattern!({
        "step": term!(
            "^(RESERVING_STOCK|AUTHORIZING_PAYMENT|COMPLETING|COMPENSATING|DONE)$",
            "RESERVING_STOCK"
        ),
        "attempts": like!(1),
        "version": like!(1),
    })
}

/// What the gateway's clients need from the order service.
pub fn contract(pact: &mut PactBuilder) {
    let customer = || authorization(SERVICE, CUSTOMER, &[Role::Customer]).unwrap();
    let admin = || authorization(SERVICE, ADMIN, &[Role::Admin]).unwrap();
    let order_body = || json_pattern!({ "items": each_like!(order_line()) });
    pact.interaction("a customer places an order", "", |mut i| {
        i.request
            .post()
            .path("/orders")
            .header("authorization", customer())
            .header("idempotency-key", FIRST_KEY)
            .header(
                "x-request-id",
                term!(REQUEST_ID, "5b0c6f9e-6d1a-4f53-9a43-3c1f2f0e8a71"),
            )
            .header("content-type", "application/json")
            .json_body(order_body());
        i.response
            .created()
            .header("content-type", "application/json")
            .json_body(order_view("PENDING".into()));
        i
    });
    pact.interaction(
        "a customer repeats an order with the same idempotency key",
        "",
        |mut i| {
            i.given_with_params(
                ORDER_PLACED_WITH_KEY,
                &json!({
                    "customer_id": CUSTOMER,
                    "idempotency_key": REPLAYED_KEY,
                    "sku": SKU,
                    "quantity": QUANTITY,
                }),
            );
            i.request
                .post()
                .path("/orders")
                .header("authorization", customer())
                .header("idempotency-key", REPLAYED_KEY)
                .header("content-type", "application/json")
                .json_body(json_pattern!({ "items": [{ "sku": SKU, "quantity": QUANTITY }] }));
            i.response
                .created()
                .header("content-type", "application/json")
                .header("idempotent-replayed", "true")
                .json_body(order_view("PENDING".into()));
            i
        },
    );
    pact.interaction(
        "a customer places an order without any line",
        "",
        |mut i| {
            i.request
                .post()
                .path("/orders")
                .header("authorization", customer())
                .header("content-type", "application/json")
                .json_body(json_pattern!({ "items": [] }));
            i.response
                .status(422)
                .header("content-type", "application/json")
                .json_body(error_body(
                    "validation",
                    "invalid order: items must not be empty",
                ));
            i
        },
    );
    pact.interaction("a customer reads their order", "", |mut i| {
        i.given_with_params(ORDER_PLACED, &order_params());
        i.request
            .get()
            .path_from_provider_state("/orders/${order_id}", format!("/orders/{ORDER_ID}"))
            .header("authorization", customer());
        i.response
            .ok()
            .header("content-type", "application/json")
            .json_body(order_view(any_status()));
        i
    });
    pact.interaction(
        "a customer reads an order the read model does not have",
        "",
        |mut i| {
            i.request
                .get()
                .path(format!("/orders/{UNKNOWN_ORDER_ID}"))
                .header("authorization", customer());
            i.response
                .not_found()
                .header("content-type", "application/json")
                .json_body(error_body("not_found", "order not found"));
            i
        },
    );
    pact.interaction("a customer lists their orders", "", |mut i| {
        i.given_with_params(ORDER_PLACED, &order_params());
        i.request
            .get()
            .path("/orders")
            .header("authorization", customer());
        i.response
            .ok()
            .header("content-type", "application/json")
            .json_body(each_like!(order_view(any_status())));
        i
    });
    pact.interaction(
        "an admin lists every order with its saga and read-model copy",
        "",
        |mut i| {
            i.given_with_params(ORDER_PLACED, &order_params());
            i.request
                .get()
                .path("/admin/orders")
                .header("authorization", admin());
            i.response
                .ok()
                .header("content-type", "application/json")
                .json_body(each_like!({
                    "order": order_view(any_status()),
                    "saga": saga_view(),
                    "view": order_view(any_status()),
                }));
            i
        },
    );
}

#[tokio::test]
async fn the_gateway_gets_its_clients_orders_placed_replayed_refused_and_read() {
    let mut pact = ConsumerPact::new(GATEWAY, ORDER_SERVICE).unwrap();
    contract(pact.builder());
    let server = pact.builder().start_mock_server(None, None);
    let gw = gateway(&base_url(&server.url()), NOWHERE, NOWHERE).await;
    let customer = gw.customer();
    let place = |key: Option<&str>, body: &PlaceOrderRequest| {
        let request = gw
            .request(Method::POST, "/api/orders")
            .bearer_auth(&customer)
            .json(body);
        match key {
            Some(key) => request.header("idempotency-key", key),
            None => request,
        }
    };
    let get = |path: &str| gw.request(Method::GET, path).bearer_auth(&customer);

    let first = expect(place(Some(FIRST_KEY), &order_request()), 201).await;
    let placed: OrderView = first.read();
    assert!(!first.replayed, "a first request is no replay");
    assert_eq!(
        (placed.status, placed.customer_id.as_str()),
        (OrderStatus::Pending, CUSTOMER)
    );

    let again = expect(place(Some(REPLAYED_KEY), &order_request()), 201).await;
    assert!(
        again.replayed,
        "the client learns it got the first answer again"
    );
    assert_eq!(again.read::<OrderView>().status, OrderStatus::Pending);

    let empty = PlaceOrderRequest { items: vec![] };
    let refused: ErrorBody = expect(place(None, &empty), 422).await.read();
    assert_eq!(refused.error.code, "validation");

    let order: OrderView = expect(get(&format!("/api/orders/{ORDER_ID}")), 200)
        .await
        .read();
    assert_eq!(order.order_id, order_id());

    // How `follow_order` learns the read model has not seen the order yet.
    let missing: ErrorBody = expect(get(&format!("/api/orders/{UNKNOWN_ORDER_ID}")), 404)
        .await
        .read();
    assert_eq!(missing.error.code, "not_found");

    let mine: Vec<OrderView> = expect(get("/api/orders"), 200).await.read();
    assert_eq!(mine[0].customer_id.as_str(), CUSTOMER);

    let admin = gw
        .request(Method::GET, "/api/admin/orders")
        .bearer_auth(gw.admin());
    let orders: Vec<AdminOrder> = expect(admin, 200).await.read();
    assert!(
        orders[0].view.is_some(),
        "the checks compare the read model's copy with the order"
    );

    drop(server);
    pact.check().unwrap_or_else(|e| panic!("{e}"));
}

/// The order service's router over a fresh database, seeded through its own code.
pub struct OrderFixture;

fn request_from(state: &ProviderState) -> Result<PlaceOrderRequest, StateError> {
    Ok(PlaceOrderRequest {
        items: vec![OrderLine {
            sku: Sku::parse(param_str(state, "sku")?).map_err(|e| StateError::setup(state, e))?,
            quantity: Quantity::new(param_i64(state, "quantity")?)
                .map_err(|e| StateError::setup(state, e))?,
        }],
    })
}

impl ServiceFixture for OrderFixture {
    async fn start(&self, secret: &[u8]) -> Result<Instance, StateError> {
        let fresh = order_db().await;
        let state = AppState::new(
            fresh.db.clone(),
            ServiceAuth::new(secret, SERVICE),
            policy(),
            Arc::new(Notify::new()),
        );
        let router = order_service::router(state);
        Ok(Instance::new(fresh, router))
    }

    async fn given(
        &self,
        instance: &Instance,
        state: &ProviderState,
    ) -> Result<HashMap<String, Value>, StateError> {
        let db = instance.db();
        let customer = CustomerId::parse(param_str(state, "customer_id")?)
            .map_err(|e| StateError::setup(state, e))?;
        let key = match state.name.as_str() {
            ORDER_PLACED => None,
            ORDER_PLACED_WITH_KEY => Some(param_str(state, "idempotency_key")?),
            other => return Err(StateError::Unknown(other.into())),
        };
        let placed =
            order_service::place::place_order(db, &policy(), &customer, key, &request_from(state)?)
                .await
                .map_err(|e| StateError::setup(state, e))?;
        // The reads are served from the read model: project the order as the projector would.
        project_all(db).await?;
        Ok(HashMap::from([(
            "order_id".to_string(),
            Value::String(placed.order_id.to_string()),
        )]))
    }
}

#[tokio::test]
async fn the_order_service_answers_every_request_the_gateway_forwards_as_agreed() {
    let provider = HttpProvider::start(ORDER_SERVICE, SERVICE, OrderFixture)
        .await
        .unwrap();
    crate::support::assert_http_pact_holds(GATEWAY, &provider).await;
}
