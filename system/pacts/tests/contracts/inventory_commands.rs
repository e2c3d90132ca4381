//! `inventory-service` ← `order-service`: the saga's commands on `inventory.commands`.

use std::sync::Arc;

use contract_pacts::files::{ConsumerPact, committed, descriptions};
use contract_pacts::fixtures::{FreshDb, TOPIC, delivery, last_outbox_message};
use contract_pacts::message_provider::MessageProviderBuilder;
use contract_pacts::names::{INVENTORY_SERVICE, ORDER_SERVICE};
use contract_pacts::verify;
use contracts::http::ProductUpsert;
use contracts::messages::{
    Envelope, InventoryCommand, InventoryEvent, PaymentEvent, decode, topics,
};
use inventory_service::catalog;
use inventory_service::commands::CommandConsumer;
use pact_consumer::builders::PactBuilder;
use pact_consumer::prelude::*;
use platform::db::Db;
use platform::messaging::consumer::Handler;
use tokio::sync::Notify;

use crate::support::*;

pub const RESERVE: &str = "a ReserveStock command";
pub const RELEASE: &str = "a ReleaseStock command";
pub const COMMIT: &str = "a CommitStock command";
pub const ORDER_PLACED: &str = "an order for 2 x SKU-1 was placed";
pub const PAYMENT_DECLINED: &str = "the order's stock was reserved and its payment declined";
pub const PAYMENT_AUTHORIZED: &str = "the order's stock was reserved and its payment authorized";

/// What the inventory service needs from the saga's commands.
pub fn contract(pact: &mut PactBuilder) {
    pact.message_interaction(RESERVE, |mut i| {
        i.given(ORDER_PLACED);
        i.metadata(TOPIC, topics::INVENTORY_COMMANDS);
        i.json_body(envelope(json_pattern!({
            "type": "ReserveStock",
            "order_id": order_id_pattern(),
            "items": each_like!(order_line()),
        })));
        i
    });
    pact.message_interaction(RELEASE, |mut i| {
        i.given(PAYMENT_DECLINED);
        i.metadata(TOPIC, topics::INVENTORY_COMMANDS);
        i.json_body(envelope(json_pattern!({
            "type": "ReleaseStock",
            "order_id": order_id_pattern(),
        })));
        i
    });
    pact.message_interaction(COMMIT, |mut i| {
        i.given(PAYMENT_AUTHORIZED);
        i.metadata(TOPIC, topics::INVENTORY_COMMANDS);
        i.json_body(envelope(json_pattern!({
            "type": "CommitStock",
            "order_id": order_id_pattern(),
        })));
        i
    });
}

/// The inventory service with the example product in stock.
async fn stocked_inventory() -> FreshDb {
    let fresh = FreshDb::new(&inventory_service::SQLITE, &inventory_service::POSTGRES)
        .await
        .unwrap();
    let product = ProductUpsert {
        sku: sku(),
        name: PRODUCT_NAME.into(),
        unit_price_minor: money(UNIT_PRICE),
        available: STOCK,
    };
    catalog::upsert(&fresh.db, &[product]).await.unwrap();
    fresh
}

/// The example order's reservation, made by the inventory service's own handler.
async fn reserve_example_order(db: &Db) {
    let reserve = InventoryCommand::ReserveStock {
        order_id: order_id(),
        items: vec![line()],
    };
    inventory_service::handle_command(db, &Envelope::new(reserve, platform::now_ms()))
        .await
        .unwrap();
}

/// `(available, reserved, sold)` of the example product.
async fn stock(db: &Db) -> (i64, i64, i64) {
    let level = catalog::stock_level_of(db, &sku()).await.unwrap().unwrap();
    (level.available, level.reserved, level.sold)
}

/// The event the inventory service announced last.
async fn announced(db: &Db) -> InventoryEvent {
    let all = contract_pacts::fixtures::outbox(db).await.unwrap();
    let last = all
        .last()
        .expect("the inventory service announced an outcome");
    assert_eq!(last.topic, topics::INVENTORY_EVENTS);
    decode::<InventoryEvent>(last.payload.as_bytes())
        .unwrap()
        .body
}

#[tokio::test]
async fn the_inventory_service_moves_stock_as_each_saga_command_says() {
    let mut pact = ConsumerPact::new(INVENTORY_SERVICE, ORDER_SERVICE).unwrap();
    contract(pact.builder());
    let mut handled = Vec::new();
    for message in pact.builder().messages() {
        let delivery = delivery(&message).unwrap();
        assert_eq!(delivery.topic, topics::INVENTORY_COMMANDS);
        let inventory = stocked_inventory().await;
        let db = &inventory.db;
        let consumer = CommandConsumer::new(db.clone(), Arc::new(Notify::new()));
        match message.description.as_str() {
            RESERVE => {
                consumer.handle(&delivery).await.unwrap();
                assert_eq!(stock(db).await, (STOCK - QUANTITY, QUANTITY, 0));
                let InventoryEvent::StockReserved {
                    order_id: id,
                    total_minor,
                    ..
                } = announced(db).await
                else {
                    panic!("a reservation is announced as StockReserved");
                };
                assert_eq!((id, total_minor), (order_id(), money(TOTAL)));
            }
            RELEASE => {
                reserve_example_order(db).await;
                consumer.handle(&delivery).await.unwrap();
                assert_eq!(stock(db).await, (STOCK, 0, 0));
                assert_eq!(
                    announced(db).await,
                    InventoryEvent::StockReleased {
                        order_id: order_id()
                    }
                );
            }
            COMMIT => {
                reserve_example_order(db).await;
                consumer.handle(&delivery).await.unwrap();
                assert_eq!(stock(db).await, (STOCK - QUANTITY, 0, QUANTITY));
                assert_eq!(
                    announced(db).await,
                    InventoryEvent::StockCommitted {
                        order_id: order_id()
                    }
                );
            }
            other => panic!("no consumer check for message {other:?}"),
        }
        handled.push(message.description.clone());
    }
    assert_eq!(handled, [RESERVE, RELEASE, COMMIT]);
    pact.check().unwrap_or_else(|e| panic!("{e}"));
}

/// The order service's real saga producing each command, read back from its outbox.
pub fn producers() -> MessageProviderBuilder {
    MessageProviderBuilder::new(ORDER_SERVICE)
        .message(RESERVE, &[ORDER_PLACED], || async {
            let (order, _) = placed().await?;
            last_outbox_message(&order.db, "ReserveStock").await
        })
        .message(RELEASE, &[PAYMENT_DECLINED], || async {
            let (order, id) = placed().await?;
            saga_hears_inventory(&order.db, stock_reserved(id)).await?;
            let declined = PaymentEvent::PaymentDeclined {
                order_id: id,
                reason: "credit limit exceeded".into(),
            };
            saga_hears_payment(&order.db, declined).await?;
            last_outbox_message(&order.db, "ReleaseStock").await
        })
        .message(COMMIT, &[PAYMENT_AUTHORIZED], || async {
            let (order, id) = placed().await?;
            saga_hears_inventory(&order.db, stock_reserved(id)).await?;
            let authorized = PaymentEvent::PaymentAuthorized {
                order_id: id,
                amount_minor: money(TOTAL),
            };
            saga_hears_payment(&order.db, authorized).await?;
            last_outbox_message(&order.db, "CommitStock").await
        })
}

#[tokio::test]
async fn the_order_saga_sends_the_inventory_service_the_commands_it_relies_on() {
    let pact = committed(INVENTORY_SERVICE, ORDER_SERVICE);
    let provider = producers().serve().await.unwrap();

    let report = verify::messages(&provider, &pact)
        .await
        .unwrap_or_else(|e| panic!("{e}"));

    let verified = report.into_result().unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(verified, descriptions(&pact).unwrap().len());
}
