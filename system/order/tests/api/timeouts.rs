//! Step timeouts: resend, then compensate; and instances racing on one saga.

use contracts::domain::OrderStatus;
use contracts::messages::{PaymentEvent, topics};
use order_service::events::{self, Handled, TimeoutPass};
use order_service::saga::SagaStep;

use crate::helpers::*;

/// A moment after every deadline the helpers' policy can set.
fn later(step: i64) -> i64 {
    platform::now_ms() + step * 100_000
}

#[tokio::test]
async fn a_reservation_nobody_answers_is_resent_then_the_order_is_cancelled_and_stock_released() {
    let (_dir, dbs) = databases().await;
    for db in &dbs {
        let id = place(db, "cust-1").await.order_id;

        let pass = events::run_timeouts_once(db, &policy(), later(1))
            .await
            .unwrap();
        assert_eq!(
            pass,
            TimeoutPass {
                due: 1,
                advanced: 1
            }
        );
        let (order, saga) = load(db, id).await;
        assert_eq!(order.state.status, OrderStatus::Pending);
        assert_eq!(saga.state.step, SagaStep::ReservingStock);
        assert_eq!(saga.state.attempts, 2);
        assert!(saga.state.last_error.is_some());

        events::run_timeouts_once(db, &policy(), later(2))
            .await
            .unwrap();
        let (order, saga) = load(db, id).await;
        assert_eq!(order.state.status, OrderStatus::Cancelled);
        assert_eq!(
            order.state.reason.as_deref(),
            Some("timed out waiting for stock reservation")
        );
        assert_eq!(saga.state.step, SagaStep::Compensating);
        assert_eq!(
            commands(db, id).await,
            vec![
                cmd(topics::INVENTORY_COMMANDS, "ReserveStock"),
                cmd(topics::INVENTORY_COMMANDS, "ReserveStock"),
                cmd(topics::INVENTORY_COMMANDS, "ReleaseStock"),
            ]
        );
        let last = order_events(db, id).await.pop().unwrap();
        assert_eq!(last.body.status(), OrderStatus::Cancelled);
    }
}

#[tokio::test]
async fn an_authorization_nobody_answers_ends_cancelled_with_void_and_release() {
    let (_dir, dbs) = databases().await;
    for db in &dbs {
        let id = place(db, "cust-1").await.order_id;
        on_inventory(db, &reserved(id, 300)).await;

        events::run_timeouts_once(db, &policy(), later(1))
            .await
            .unwrap();
        events::run_timeouts_once(db, &policy(), later(2))
            .await
            .unwrap();

        let (order, saga) = load(db, id).await;
        assert_eq!(order.state.status, OrderStatus::Cancelled);
        assert_eq!(
            order.state.reason.as_deref(),
            Some("timed out waiting for payment authorization")
        );
        assert_eq!(saga.state.step, SagaStep::Compensating);
        assert_eq!(
            commands(db, id).await[1..],
            [
                cmd(topics::PAYMENT_COMMANDS, "AuthorizePayment"),
                cmd(topics::PAYMENT_COMMANDS, "AuthorizePayment"),
                cmd(topics::PAYMENT_COMMANDS, "VoidPayment"),
                cmd(topics::INVENTORY_COMMANDS, "ReleaseStock"),
            ]
        );

        // A late authorization is voided again; the compensation still waits for its acks.
        let late = on_payment(
            db,
            &payment(PaymentEvent::PaymentAuthorized {
                order_id: id,
                amount_minor: money(300),
            }),
        )
        .await;
        assert_eq!(late, Handled::Applied { commands: 1 });
        assert_eq!(
            commands(db, id).await.last(),
            Some(&cmd(topics::PAYMENT_COMMANDS, "VoidPayment"))
        );
        assert_eq!(
            status_and_step(db, id).await,
            (OrderStatus::Cancelled, SagaStep::Compensating)
        );

        // Unacknowledged compensations are resent, without a limit.
        events::run_timeouts_once(db, &policy(), later(3))
            .await
            .unwrap();
        let resent = commands(db, id).await;
        assert_eq!(
            resent[resent.len() - 2..],
            [
                cmd(topics::INVENTORY_COMMANDS, "ReleaseStock"),
                cmd(topics::PAYMENT_COMMANDS, "VoidPayment"),
            ]
        );

        on_inventory(
            db,
            &inventory(contracts::messages::InventoryEvent::StockReleased { order_id: id }),
        )
        .await;
        on_payment(
            db,
            &payment(PaymentEvent::PaymentVoided {
                order_id: id,
                amount_minor: money(300),
            }),
        )
        .await;
        assert_eq!(
            status_and_step(db, id).await,
            (OrderStatus::Cancelled, SagaStep::Done)
        );
        let pass = events::run_timeouts_once(db, &policy(), later(9))
            .await
            .unwrap();
        assert_eq!(pass.due, 0);
    }
}

#[tokio::test]
async fn a_saga_before_its_deadline_is_left_alone() {
    let (_dir, dbs) = databases().await;
    for db in &dbs {
        let id = place(db, "cust-1").await.order_id;
        let pass = events::run_timeouts_once(db, &policy(), platform::now_ms())
            .await
            .unwrap();
        assert_eq!(pass, TimeoutPass::default());
        assert_eq!(load(db, id).await.1.state.attempts, 1);
    }
}

#[tokio::test]
async fn two_instances_timing_out_the_same_saga_at_once_advance_it_once() {
    let (_dir, dbs) = databases().await;
    for db in &dbs {
        let id = place(db, "cust-1").await.order_id;
        let now = later(1);
        let p = policy();
        let (a, b) = tokio::join!(
            events::run_timeouts_once(db, &p, now),
            events::run_timeouts_once(db, &p, now),
        );
        assert_eq!(a.unwrap().advanced + b.unwrap().advanced, 1);
        let (_, saga) = load(db, id).await;
        assert_eq!(saga.state.attempts, 2);
        assert_eq!(saga.version, 2);
        assert_eq!(
            commands(db, id).await,
            vec![
                cmd(topics::INVENTORY_COMMANDS, "ReserveStock"),
                cmd(topics::INVENTORY_COMMANDS, "ReserveStock"),
            ]
        );
    }
}

#[tokio::test]
async fn instances_passing_at_once_divide_the_due_sagas_between_them() {
    let (_dir, dbs) = databases().await;
    for db in &dbs {
        let mut ids = Vec::new();
        for i in 0..6 {
            ids.push(place(db, &format!("cust-{i}")).await.order_id);
        }
        let now = later(1);
        let p = policy();
        let (a, b) = tokio::join!(
            events::run_timeouts_once(db, &p, now),
            events::run_timeouts_once(db, &p, now),
        );
        let (a, b) = (a.unwrap(), b.unwrap());
        assert_eq!(
            a.due + b.due,
            6,
            "each due saga was claimed by one pass: {a:?} {b:?}"
        );
        assert_eq!(a.advanced + b.advanced, 6);
        for id in ids {
            assert_eq!(load(db, id).await.1.state.attempts, 2, "resent once");
        }
        // A third pass at the same moment finds nothing left: the claims and the new deadlines
        // keep it off.
        let again = events::run_timeouts_once(db, &p, now).await.unwrap();
        assert_eq!(again, TimeoutPass::default());
    }
}
