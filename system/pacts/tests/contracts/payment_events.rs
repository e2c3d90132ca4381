//! `order-service` ← `payment-service`: the payment outcomes on `payment.events` that drive the
//! saga.

use contract_pacts::files::{ConsumerPact, committed, descriptions};
use contract_pacts::fixtures::{FixtureError, FreshDb, TOPIC, delivery, last_outbox_message};
use contract_pacts::message_provider::MessageProviderBuilder;
use contract_pacts::names::{ORDER_SERVICE, PAYMENT_SERVICE};
use contract_pacts::verify;
use contracts::domain::{OrderId, OrderStatus};
use contracts::http::AccountUpsert;
use contracts::messages::{Envelope, PaymentCommand, topics};
use order_service::saga::SagaStep;
use pact_consumer::builders::PactBuilder;
use pact_consumer::prelude::*;
use payment_service::accounts;
use platform::db::Db;
use platform::messaging::consumer::Handler;

use crate::support::*;

pub const AUTHORIZED: &str = "a PaymentAuthorized event";
pub const DECLINED: &str = "a PaymentDeclined event";
pub const CAPTURED: &str = "a PaymentCaptured event";
pub const VOIDED: &str = "a PaymentVoided event";
pub const PAYMENT_AUTHORIZED: &str = "an order's payment of 2500 was authorized";
pub const OVER_THE_LIMIT: &str = "an order's payment was over the customer's credit limit";
pub const PAYMENT_CAPTURED: &str = "an order's authorized payment was captured";
pub const PAYMENT_VOIDED: &str = "an order's authorized payment was voided";
const DECLINE: &str = "credit limit exceeded: limit 1000, held 0, captured 0, asked 2500";

/// What the order saga needs from the payment service's events.
pub fn contract(pact: &mut PactBuilder) {
    let with_amount = |kind: &str| {
        envelope(json_pattern!({
            "type": kind,
            "order_id": order_id_pattern(),
            "amount_minor": like!(TOTAL),
        }))
    };
    pact.message_interaction(AUTHORIZED, |mut i| {
        i.given(PAYMENT_AUTHORIZED);
        i.metadata(TOPIC, topics::PAYMENT_EVENTS);
        i.json_body(with_amount("PaymentAuthorized"));
        i
    });
    pact.message_interaction(DECLINED, |mut i| {
        i.given(OVER_THE_LIMIT);
        i.metadata(TOPIC, topics::PAYMENT_EVENTS);
        i.json_body(envelope(json_pattern!({
            "type": "PaymentDeclined",
            "order_id": order_id_pattern(),
            "reason": like!(DECLINE),
        })));
        i
    });
    pact.message_interaction(CAPTURED, |mut i| {
        i.given(PAYMENT_CAPTURED);
        i.metadata(TOPIC, topics::PAYMENT_EVENTS);
        i.json_body(with_amount("PaymentCaptured"));
        i
    });
    pact.message_interaction(VOIDED, |mut i| {
        i.given(PAYMENT_VOIDED);
        i.metadata(TOPIC, topics::PAYMENT_EVENTS);
        i.json_body(with_amount("PaymentVoided"));
        i
    });
}

#[tokio::test]
async fn the_saga_confirms_cancels_and_finishes_orders_on_the_payment_services_events() {
    let mut pact = ConsumerPact::new(ORDER_SERVICE, PAYMENT_SERVICE).unwrap();
    contract(pact.builder());
    let mut handled = Vec::new();
    for message in pact.builder().messages() {
        let delivery = delivery(&message).unwrap();
        let order = order_db().await;
        let db = &order.db;
        match message.description.as_str() {
            AUTHORIZED => {
                order_at(db, authorizing).await;
                saga_handler(db).handle(&delivery).await.unwrap();
                let (order, saga) = order_and_saga(db).await;
                assert_eq!(
                    (order.state.status, saga.state.step),
                    (OrderStatus::Confirmed, SagaStep::Completing)
                );
                assert_eq!(commands_sent(db).await, ["CommitStock", "CapturePayment"]);
            }
            DECLINED => {
                order_at(db, authorizing).await;
                saga_handler(db).handle(&delivery).await.unwrap();
                let (order, saga) = order_and_saga(db).await;
                assert_eq!(
                    (order.state.status, saga.state.step),
                    (OrderStatus::Cancelled, SagaStep::Compensating)
                );
                assert_eq!(order.state.reason.as_deref(), Some(DECLINE));
                assert_eq!(commands_sent(db).await, ["ReleaseStock"]);
            }
            CAPTURED => {
                order_at(db, |order, saga| {
                    completing(order, saga);
                    saga.stock_committed = true;
                })
                .await;
                saga_handler(db).handle(&delivery).await.unwrap();
                let (order, saga) = order_and_saga(db).await;
                assert_eq!(
                    (order.state.status, saga.state.step),
                    (OrderStatus::Confirmed, SagaStep::Done)
                );
            }
            VOIDED => {
                order_at(db, |order, saga| {
                    compensating(order, saga);
                    saga.void_requested = true;
                    saga.stock_released = true;
                })
                .await;
                saga_handler(db).handle(&delivery).await.unwrap();
                let (order, saga) = order_and_saga(db).await;
                assert_eq!(
                    (order.state.status, saga.state.step),
                    (OrderStatus::Cancelled, SagaStep::Done)
                );
            }
            other => panic!("no consumer check for message {other:?}"),
        }
        handled.push(message.description.clone());
    }
    assert_eq!(handled, [AUTHORIZED, DECLINED, CAPTURED, VOIDED]);
    pact.check().unwrap_or_else(|e| panic!("{e}"));
}

/// The payment service with the example customer's account at `limit`.
async fn payment(limit: i64) -> Result<FreshDb, FixtureError> {
    let fresh = FreshDb::new(&payment_service::SQLITE, &payment_service::POSTGRES).await?;
    let account = AccountUpsert {
        customer_id: customer(),
        credit_limit_minor: money(limit),
    };
    accounts::upsert(&fresh.db, &[account]).await?;
    Ok(fresh)
}

/// Runs one command through the payment service's own handler.
async fn command(db: &Db, command: PaymentCommand) -> Result<(), FixtureError> {
    payment_service::handle_command(db, &Envelope::new(command, platform::now_ms()))
        .await
        .map_err(code)?;
    Ok(())
}

fn authorize(order_id: OrderId) -> PaymentCommand {
    PaymentCommand::AuthorizePayment {
        order_id,
        customer_id: customer(),
        amount_minor: money(TOTAL),
    }
}

/// The payment service's real command handler producing each event, read back from its outbox.
pub fn producers() -> MessageProviderBuilder {
    MessageProviderBuilder::new(PAYMENT_SERVICE)
        .message(AUTHORIZED, &[PAYMENT_AUTHORIZED], || async {
            let payment = payment(CREDIT_LIMIT).await?;
            command(&payment.db, authorize(OrderId::new())).await?;
            last_outbox_message(&payment.db, "PaymentAuthorized").await
        })
        .message(DECLINED, &[OVER_THE_LIMIT], || async {
            let payment = payment(TOTAL - 1).await?;
            command(&payment.db, authorize(OrderId::new())).await?;
            last_outbox_message(&payment.db, "PaymentDeclined").await
        })
        .message(CAPTURED, &[PAYMENT_CAPTURED], || async {
            let payment = payment(CREDIT_LIMIT).await?;
            let id = OrderId::new();
            command(&payment.db, authorize(id)).await?;
            command(&payment.db, PaymentCommand::CapturePayment { order_id: id }).await?;
            last_outbox_message(&payment.db, "PaymentCaptured").await
        })
        .message(VOIDED, &[PAYMENT_VOIDED], || async {
            let payment = payment(CREDIT_LIMIT).await?;
            let id = OrderId::new();
            command(&payment.db, authorize(id)).await?;
            command(&payment.db, PaymentCommand::VoidPayment { order_id: id }).await?;
            last_outbox_message(&payment.db, "PaymentVoided").await
        })
}

#[tokio::test]
async fn the_payment_service_announces_the_payment_outcomes_the_saga_relies_on() {
    let pact = committed(ORDER_SERVICE, PAYMENT_SERVICE);
    let provider = producers().serve().await.unwrap();

    let report = verify::messages(&provider, &pact)
        .await
        .unwrap_or_else(|e| panic!("{e}"));

    let verified = report.into_result().unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(verified, descriptions(&pact).unwrap().len());
}
