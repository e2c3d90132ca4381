//! `order-service` ← `inventory-service`: the stock outcomes on `inventory.events` that drive the
//! saga.

use contract_pacts::files::{ConsumerPact, committed, descriptions};
use contract_pacts::fixtures::{FixtureError, FreshDb, TOPIC, delivery, last_outbox_message};
use contract_pacts::message_provider::MessageProviderBuilder;
use contract_pacts::names::{INVENTORY_SERVICE, ORDER_SERVICE};
use contract_pacts::verify;
use contracts::domain::{OrderId, OrderStatus};
use contracts::http::ProductUpsert;
use contracts::messages::{Envelope, InventoryCommand, topics};
use inventory_service::catalog;
use order_service::saga::SagaStep;
use pact_consumer::builders::PactBuilder;
use pact_consumer::prelude::*;
use platform::db::Db;
use platform::messaging::consumer::Handler;

use crate::support::*;

pub const RESERVED: &str = "a StockReserved event";
pub const REJECTED: &str = "a StockRejected event";
pub const RELEASED: &str = "a StockReleased event";
pub const COMMITTED: &str = "a StockCommitted event";
pub const STOCK_RESERVED: &str = "2 x SKU-1 at 1250 were reserved for an order";
pub const STOCK_SHORT: &str = "an order asked for more SKU-1 than is in stock";
pub const STOCK_RELEASED: &str = "an order's reserved stock was released";
pub const STOCK_COMMITTED: &str = "an order's reserved stock was committed";
const REJECTION: &str = "insufficient stock for sku SKU-1: requested 2, available 1";

/// What the order saga needs from the inventory service's events.
pub fn contract(pact: &mut PactBuilder) {
    pact.message_interaction(RESERVED, |mut i| {
        i.given(STOCK_RESERVED);
        i.metadata(TOPIC, topics::INVENTORY_EVENTS);
        i.json_body(envelope(json_pattern!({
            "type": "StockReserved",
            "order_id": order_id_pattern(),
            "lines": each_like!({
                "sku": like!(SKU),
                "quantity": like!(QUANTITY),
                "unit_price_minor": like!(UNIT_PRICE),
            }),
            "total_minor": like!(TOTAL),
        })));
        i
    });
    pact.message_interaction(REJECTED, |mut i| {
        i.given(STOCK_SHORT);
        i.metadata(TOPIC, topics::INVENTORY_EVENTS);
        i.json_body(envelope(json_pattern!({
            "type": "StockRejected",
            "order_id": order_id_pattern(),
            "reason": like!(REJECTION),
        })));
        i
    });
    pact.message_interaction(RELEASED, |mut i| {
        i.given(STOCK_RELEASED);
        i.metadata(TOPIC, topics::INVENTORY_EVENTS);
        i.json_body(envelope(json_pattern!({
            "type": "StockReleased",
            "order_id": order_id_pattern(),
        })));
        i
    });
    pact.message_interaction(COMMITTED, |mut i| {
        i.given(STOCK_COMMITTED);
        i.metadata(TOPIC, topics::INVENTORY_EVENTS);
        i.json_body(envelope(json_pattern!({
            "type": "StockCommitted",
            "order_id": order_id_pattern(),
        })));
        i
    });
}

#[tokio::test]
async fn the_saga_prices_rejects_and_finishes_orders_on_the_inventorys_events() {
    let mut pact = ConsumerPact::new(ORDER_SERVICE, INVENTORY_SERVICE).unwrap();
    contract(pact.builder());
    let mut handled = Vec::new();
    for message in pact.builder().messages() {
        let delivery = delivery(&message).unwrap();
        let order = order_db().await;
        let db = &order.db;
        match message.description.as_str() {
            RESERVED => {
                order_at(db, |_, _| {}).await;
                saga_handler(db).handle(&delivery).await.unwrap();
                let (order, saga) = order_and_saga(db).await;
                assert_eq!(order.state.total_minor, Some(money(TOTAL)));
                assert_eq!(saga.state.step, SagaStep::AuthorizingPayment);
                assert_eq!(commands_sent(db).await, ["AuthorizePayment"]);
            }
            REJECTED => {
                order_at(db, |_, _| {}).await;
                saga_handler(db).handle(&delivery).await.unwrap();
                let (order, saga) = order_and_saga(db).await;
                assert_eq!(order.state.status, OrderStatus::Rejected);
                assert_eq!(order.state.reason.as_deref(), Some(REJECTION));
                assert_eq!(saga.state.step, SagaStep::Done);
            }
            RELEASED => {
                order_at(db, compensating).await;
                saga_handler(db).handle(&delivery).await.unwrap();
                let (order, saga) = order_and_saga(db).await;
                assert_eq!(
                    (order.state.status, saga.state.step),
                    (OrderStatus::Cancelled, SagaStep::Done)
                );
            }
            COMMITTED => {
                order_at(db, |order, saga| {
                    completing(order, saga);
                    saga.payment_captured = true;
                })
                .await;
                saga_handler(db).handle(&delivery).await.unwrap();
                let (order, saga) = order_and_saga(db).await;
                assert_eq!(
                    (order.state.status, saga.state.step),
                    (OrderStatus::Confirmed, SagaStep::Done)
                );
            }
            other => panic!("no consumer check for message {other:?}"),
        }
        handled.push(message.description.clone());
    }
    assert_eq!(handled, [RESERVED, REJECTED, RELEASED, COMMITTED]);
    pact.check().unwrap_or_else(|e| panic!("{e}"));
}

/// The inventory service with `available` units of the example product.
async fn inventory(available: i64) -> Result<FreshDb, FixtureError> {
    let fresh = FreshDb::new(&inventory_service::SQLITE, &inventory_service::POSTGRES).await?;
    let product = ProductUpsert {
        sku: sku(),
        name: PRODUCT_NAME.into(),
        unit_price_minor: money(UNIT_PRICE),
        available,
    };
    catalog::upsert(&fresh.db, &[product]).await?;
    Ok(fresh)
}

/// Runs one command through the inventory service's own handler.
async fn command(db: &Db, command: InventoryCommand) -> Result<(), FixtureError> {
    inventory_service::handle_command(db, &Envelope::new(command, platform::now_ms()))
        .await
        .map_err(code)?;
    Ok(())
}

fn reserve(order_id: OrderId) -> InventoryCommand {
    InventoryCommand::ReserveStock {
        order_id,
        items: vec![line()],
    }
}

/// The inventory service's real command handler producing each event, read back from its
/// outbox.
pub fn producers() -> MessageProviderBuilder {
    MessageProviderBuilder::new(INVENTORY_SERVICE)
        .message(RESERVED, &[STOCK_RESERVED], || async {
            let inventory = inventory(STOCK).await?;
            command(&inventory.db, reserve(OrderId::new())).await?;
            last_outbox_message(&inventory.db, "StockReserved").await
        })
        .message(REJECTED, &[STOCK_SHORT], || async {
            let inventory = inventory(QUANTITY - 1).await?;
            command(&inventory.db, reserve(OrderId::new())).await?;
            last_outbox_message(&inventory.db, "StockRejected").await
        })
        .message(RELEASED, &[STOCK_RELEASED], || async {
            let inventory = inventory(STOCK).await?;
            let id = OrderId::new();
            command(&inventory.db, reserve(id)).await?;
            command(
                &inventory.db,
                InventoryCommand::ReleaseStock { order_id: id },
            )
            .await?;
            last_outbox_message(&inventory.db, "StockReleased").await
        })
        .message(COMMITTED, &[STOCK_COMMITTED], || async {
            let inventory = inventory(STOCK).await?;
            let id = OrderId::new();
            command(&inventory.db, reserve(id)).await?;
            command(
                &inventory.db,
                InventoryCommand::CommitStock { order_id: id },
            )
            .await?;
            last_outbox_message(&inventory.db, "StockCommitted").await
        })
}

#[tokio::test]
async fn the_inventory_service_announces_the_stock_outcomes_the_saga_relies_on() {
    let pact = committed(ORDER_SERVICE, INVENTORY_SERVICE);
    let provider = producers().serve().await.unwrap();

    let report = verify::messages(&provider, &pact)
        .await
        .unwrap_or_else(|e| panic!("{e}"));

    let verified = report.into_result().unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(verified, descriptions(&pact).unwrap().len());
}
