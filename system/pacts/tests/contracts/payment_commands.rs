//! `payment-service` ← `order-service`: the saga's commands on `payment.commands`.

use std::sync::Arc;

use contract_pacts::files::{ConsumerPact, committed, descriptions};
use contract_pacts::fixtures::{FixtureError, FreshDb, TOPIC, delivery, last_outbox_message};
use contract_pacts::message_provider::MessageProviderBuilder;
use contract_pacts::names::{ORDER_SERVICE, PAYMENT_SERVICE};
use contract_pacts::verify;
use contracts::http::{AccountBalance, AccountUpsert};
use contracts::messages::{Envelope, PaymentCommand, PaymentEvent, decode, topics};
use order_service::SagaPolicy;
use pact_consumer::builders::PactBuilder;
use pact_consumer::prelude::*;
use payment_service::accounts;
use payment_service::commands::CommandConsumer;
use platform::db::Db;
use platform::messaging::consumer::Handler;
use tokio::sync::Notify;

use crate::support::*;

pub const AUTHORIZE: &str = "an AuthorizePayment command";
pub const CAPTURE: &str = "a CapturePayment command";
pub const VOID: &str = "a VoidPayment command";
pub const STOCK_RESERVED: &str = "an order's stock was reserved for 2500";
pub const PAYMENT_AUTHORIZED: &str = "the order's payment was authorized";
pub const AUTHORIZATION_TIMED_OUT: &str = "the order's payment authorization timed out";

/// What the payment service needs from the saga's commands.
pub fn contract(pact: &mut PactBuilder) {
    pact.message_interaction(AUTHORIZE, |mut i| {
        i.given(STOCK_RESERVED);
        i.metadata(TOPIC, topics::PAYMENT_COMMANDS);
        i.json_body(envelope(json_pattern!({
            "type": "AuthorizePayment",
            "order_id": order_id_pattern(),
            "customer_id": like!(CUSTOMER),
            "amount_minor": like!(TOTAL),
        })));
        i
    });
    pact.message_interaction(CAPTURE, |mut i| {
        i.given(PAYMENT_AUTHORIZED);
        i.metadata(TOPIC, topics::PAYMENT_COMMANDS);
        i.json_body(envelope(json_pattern!({
            "type": "CapturePayment",
            "order_id": order_id_pattern(),
        })));
        i
    });
    pact.message_interaction(VOID, |mut i| {
        i.given(AUTHORIZATION_TIMED_OUT);
        i.metadata(TOPIC, topics::PAYMENT_COMMANDS);
        i.json_body(envelope(json_pattern!({
            "type": "VoidPayment",
            "order_id": order_id_pattern(),
        })));
        i
    });
}

/// The payment service with the example customer's account.
async fn payment_with_account() -> FreshDb {
    let fresh = FreshDb::new(&payment_service::SQLITE, &payment_service::POSTGRES)
        .await
        .unwrap();
    let account = AccountUpsert {
        customer_id: customer(),
        credit_limit_minor: money(CREDIT_LIMIT),
    };
    accounts::upsert(&fresh.db, &[account]).await.unwrap();
    fresh
}

/// The example order's payment, authorized by the payment service's own handler.
async fn authorize_example_order(db: &Db) {
    let authorize = PaymentCommand::AuthorizePayment {
        order_id: order_id(),
        customer_id: customer(),
        amount_minor: money(TOTAL),
    };
    payment_service::handle_command(db, &Envelope::new(authorize, platform::now_ms()))
        .await
        .unwrap();
}

async fn account(db: &Db) -> AccountBalance {
    accounts::accounts(db).await.unwrap().remove(0)
}

/// The kind of the event the payment service announced last.
async fn announced(db: &Db) -> PaymentEvent {
    let all = contract_pacts::fixtures::outbox(db).await.unwrap();
    let last = all
        .last()
        .expect("the payment service announced an outcome");
    assert_eq!(last.topic, topics::PAYMENT_EVENTS);
    decode::<PaymentEvent>(last.payload.as_bytes())
        .unwrap()
        .body
}

#[tokio::test]
async fn the_payment_service_holds_takes_and_releases_money_as_each_saga_command_says() {
    let mut pact = ConsumerPact::new(PAYMENT_SERVICE, ORDER_SERVICE).unwrap();
    contract(pact.builder());
    let mut handled = Vec::new();
    for message in pact.builder().messages() {
        let delivery = delivery(&message).unwrap();
        assert_eq!(delivery.topic, topics::PAYMENT_COMMANDS);
        let payment = payment_with_account().await;
        let db = &payment.db;
        let consumer = CommandConsumer::new(db.clone(), Arc::new(Notify::new()));
        match message.description.as_str() {
            AUTHORIZE => {
                consumer.handle(&delivery).await.unwrap();
                let balance = account(db).await;
                assert_eq!((balance.held_minor, balance.captured_minor), (TOTAL, 0));
                assert_eq!(
                    announced(db).await,
                    PaymentEvent::PaymentAuthorized {
                        order_id: order_id(),
                        amount_minor: money(TOTAL)
                    }
                );
            }
            CAPTURE => {
                authorize_example_order(db).await;
                consumer.handle(&delivery).await.unwrap();
                let balance = account(db).await;
                assert_eq!((balance.held_minor, balance.captured_minor), (0, TOTAL));
                assert!(matches!(
                    announced(db).await,
                    PaymentEvent::PaymentCaptured { .. }
                ));
            }
            VOID => {
                authorize_example_order(db).await;
                consumer.handle(&delivery).await.unwrap();
                let balance = account(db).await;
                assert_eq!((balance.held_minor, balance.captured_minor), (0, 0));
                assert!(matches!(
                    announced(db).await,
                    PaymentEvent::PaymentVoided { .. }
                ));
            }
            other => panic!("no consumer check for message {other:?}"),
        }
        handled.push(message.description.clone());
    }
    assert_eq!(handled, [AUTHORIZE, CAPTURE, VOID]);
    pact.check().unwrap_or_else(|e| panic!("{e}"));
}

/// The order service's real saga producing each command, read back from its outbox.
pub fn producers() -> MessageProviderBuilder {
    MessageProviderBuilder::new(ORDER_SERVICE)
        .message(AUTHORIZE, &[STOCK_RESERVED], || async {
            let (order, id) = placed().await?;
            saga_hears_inventory(&order.db, stock_reserved(id)).await?;
            last_outbox_message(&order.db, "AuthorizePayment").await
        })
        .message(CAPTURE, &[PAYMENT_AUTHORIZED], || async {
            let (order, id) = placed().await?;
            saga_hears_inventory(&order.db, stock_reserved(id)).await?;
            let authorized = PaymentEvent::PaymentAuthorized {
                order_id: id,
                amount_minor: money(TOTAL),
            };
            saga_hears_payment(&order.db, authorized).await?;
            last_outbox_message(&order.db, "CapturePayment").await
        })
        .message(VOID, &[AUTHORIZATION_TIMED_OUT], || async {
            let (order, id) = placed().await?;
            saga_hears_inventory(&order.db, stock_reserved(id)).await?;
            // No answer to the authorization and no attempt left: the saga compensates,
            // voiding whatever may have been held.
            let give_up = SagaPolicy {
                max_attempts: 1,
                ..policy()
            };
            let later = platform::now_ms() + policy().step_timeout_ms + 1;
            let pass = order_service::events::run_timeouts_once(&order.db, &give_up, later).await?;
            if pass.advanced != 1 {
                return Err(FixtureError::Code(format!(
                    "the timeout pass advanced {pass:?}"
                )));
            }
            last_outbox_message(&order.db, "VoidPayment").await
        })
}

#[tokio::test]
async fn the_order_saga_sends_the_payment_service_the_commands_it_relies_on() {
    let pact = committed(PAYMENT_SERVICE, ORDER_SERVICE);
    let provider = producers().serve().await.unwrap();

    let report = verify::messages(&provider, &pact)
        .await
        .unwrap_or_else(|e| panic!("{e}"));

    let verified = report.into_result().unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(verified, descriptions(&pact).unwrap().len());
}
