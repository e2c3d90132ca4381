//! `order-projector` ← `order-service`: `OrderChanged` on `order.events`, from which the read
//! model customers read their orders on is built.

use std::sync::Arc;

use axum::body::Body;
use contract_pacts::files::{ConsumerPact, committed, descriptions};
use contract_pacts::fixtures::{TOPIC, delivery, last_outbox_message};
use contract_pacts::message_provider::MessageProviderBuilder;
use contract_pacts::names::{ORDER_PROJECTOR, ORDER_SERVICE};
use contract_pacts::verify;
use contracts::domain::{OrderStatus, Role};
use contracts::http::OrderView;
use contracts::messages::topics;
use order_service::AppState;
use order_service::projector::ProjectorHandler;
use pact_consumer::builders::PactBuilder;
use pact_consumer::prelude::*;
use platform::auth::ServiceAuth;
use platform::messaging::consumer::Handler;
use tokio::sync::Notify;
use tower::ServiceExt;

use crate::support::*;

pub const ORDER_CHANGED: &str = "an OrderChanged event";
pub const ORDER_PLACED: &str = "an order was placed";

/// What the projector needs from the order service's change events.
pub fn contract(pact: &mut PactBuilder) {
    pact.message_interaction(ORDER_CHANGED, |mut i| {
        i.given(ORDER_PLACED);
        i.metadata(TOPIC, topics::ORDER_EVENTS);
        i.json_body(envelope(json_pattern!({
            "type": "OrderChanged",
            "order_id": order_id_pattern(),
            "version": like!(1),
            "order": order_view(any_status()),
        })));
        i
    });
}

#[tokio::test]
async fn the_projector_makes_a_changed_order_readable_by_its_customer() {
    let mut pact = ConsumerPact::new(ORDER_PROJECTOR, ORDER_SERVICE).unwrap();
    contract(pact.builder());
    let mut handled = 0;
    for message in pact.builder().messages() {
        assert_eq!(message.description, ORDER_CHANGED);
        let delivery = delivery(&message).unwrap();
        let order = order_db().await;
        let secret = [3u8; 32];

        ProjectorHandler {
            db: order.db.clone(),
        }
        .handle(&delivery)
        .await
        .unwrap();

        // What the customer sees: `GET /orders/{id}` is served from the read model alone.
        let state = AppState::new(
            order.db.clone(),
            ServiceAuth::new(&secret, order_service::SERVICE_NAME),
            policy(),
            Arc::new(Notify::new()),
        );
        let token = ServiceAuth::new(&secret, "gateway")
            .issue(order_service::SERVICE_NAME, CUSTOMER, &[Role::Customer])
            .unwrap();
        let request = axum::http::Request::get(format!("/orders/{ORDER_ID}"))
            .header("authorization", format!("Bearer {token}"))
            .body(Body::empty())
            .unwrap();
        let response = order_service::router(state).oneshot(request).await.unwrap();
        assert_eq!(response.status(), 200);
        let body = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .unwrap();
        let view: OrderView = serde_json::from_slice(&body).unwrap();
        assert_eq!(
            (view.order_id, view.status),
            (order_id(), OrderStatus::Pending)
        );
        handled += 1;
    }
    assert_eq!(handled, 1);
    pact.check().unwrap_or_else(|e| panic!("{e}"));
}

/// The order service placing an order with its own code, read back from its outbox.
pub fn producers() -> MessageProviderBuilder {
    MessageProviderBuilder::new(ORDER_SERVICE).message(ORDER_CHANGED, &[ORDER_PLACED], || async {
        let (order, _) = placed().await?;
        last_outbox_message(&order.db, "OrderChanged").await
    })
}

#[tokio::test]
async fn the_order_service_announces_order_changes_as_the_projector_relies_on() {
    let pact = committed(ORDER_PROJECTOR, ORDER_SERVICE);
    let provider = producers().serve().await.unwrap();

    let report = verify::messages(&provider, &pact)
        .await
        .unwrap_or_else(|e| panic!("{e}"));

    let verified = report.into_result().unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(verified, descriptions(&pact).unwrap().len());
}
