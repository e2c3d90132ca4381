//! The saga driven by inventory and payment events, as the consumer delivers them.

use contracts::domain::{OrderId, OrderStatus};
use contracts::messages::{InventoryEvent, MessageKind, OrderEvent, PaymentEvent, topics};
use order_service::events::Handled;
use order_service::saga::SagaStep;

use crate::helpers::*;

#[tokio::test]
async fn a_placed_order_is_pending_with_a_reservation_command_and_an_order_event() {
    let (_dir, dbs) = databases().await;
    for db in &dbs {
        let view = place(db, "cust-1").await;
        assert_eq!(view.status, OrderStatus::Pending);
        assert_eq!(view.total_minor, None);
        let (order, saga) = load(db, view.order_id).await;
        assert_eq!(order.view(), view);
        assert_eq!(saga.state.step, SagaStep::ReservingStock);
        assert_eq!(saga.state.attempts, 1);
        assert!(saga.state.deadline_at_ms.is_some());
        let sent = outbox(db, view.order_id).await;
        let kinds: Vec<(&str, &str)> = sent
            .iter()
            .map(|s| (s.topic.as_str(), s.kind.as_str()))
            .collect();
        assert_eq!(
            kinds,
            vec![
                (topics::INVENTORY_COMMANDS, "ReserveStock"),
                (topics::ORDER_EVENTS, "OrderChanged")
            ]
        );
        assert!(sent.iter().all(|s| s.key == view.order_id.to_string()));
    }
}

#[tokio::test]
async fn the_happy_path_confirms_the_order_commits_and_captures_then_ends_the_saga() {
    let (_dir, dbs) = databases().await;
    for db in &dbs {
        let id = place(db, "cust-1").await.order_id;

        let handled = on_inventory(db, &reserved(id, 1_250)).await;
        assert_eq!(handled, Handled::Applied { commands: 1 });
        let (order, saga) = load(db, id).await;
        assert_eq!(order.state.status, OrderStatus::Pending);
        assert_eq!(order.state.total_minor, Some(money(1_250)));
        assert_eq!(saga.state.step, SagaStep::AuthorizingPayment);
        assert_eq!(
            commands(db, id).await,
            vec![
                cmd(topics::INVENTORY_COMMANDS, "ReserveStock"),
                cmd(topics::PAYMENT_COMMANDS, "AuthorizePayment"),
            ]
        );
        let authorize = outbox(db, id)
            .await
            .into_iter()
            .find(|s| s.kind == "AuthorizePayment");
        let payload: serde_json::Value = serde_json::from_str(&authorize.unwrap().payload).unwrap();
        assert_eq!(payload["body"]["amount_minor"], 1_250);
        assert_eq!(payload["body"]["customer_id"], "cust-1");

        on_payment(
            db,
            &payment(PaymentEvent::PaymentAuthorized {
                order_id: id,
                amount_minor: money(1_250),
            }),
        )
        .await;
        assert_eq!(
            status_and_step(db, id).await,
            (OrderStatus::Confirmed, SagaStep::Completing)
        );
        assert_eq!(
            commands(db, id).await[2..],
            [
                cmd(topics::INVENTORY_COMMANDS, "CommitStock"),
                cmd(topics::PAYMENT_COMMANDS, "CapturePayment"),
            ]
        );

        on_inventory(
            db,
            &inventory(InventoryEvent::StockCommitted { order_id: id }),
        )
        .await;
        assert_eq!(
            status_and_step(db, id).await,
            (OrderStatus::Confirmed, SagaStep::Completing)
        );
        on_payment(
            db,
            &payment(PaymentEvent::PaymentCaptured {
                order_id: id,
                amount_minor: money(1_250),
            }),
        )
        .await;
        let (order, saga) = load(db, id).await;
        assert_eq!(order.state.status, OrderStatus::Confirmed);
        assert_eq!(saga.state.step, SagaStep::Done);
        assert_eq!(saga.state.deadline_at_ms, None);
        assert_eq!(commands(db, id).await.len(), 4);
    }
}

#[tokio::test]
async fn a_duplicate_delivery_of_the_same_message_changes_nothing() {
    let (_dir, dbs) = databases().await;
    for db in &dbs {
        let id = place(db, "cust-1").await.order_id;
        let env = reserved(id, 500);
        assert!(matches!(
            on_inventory(db, &env).await,
            Handled::Applied { .. }
        ));
        let before = load(db, id).await;
        let outbox_before = outbox(db, id).await.len();

        assert_eq!(on_inventory(db, &env).await, Handled::Duplicate);

        assert_eq!(load(db, id).await, before);
        assert_eq!(outbox(db, id).await.len(), outbox_before);
    }
}

#[tokio::test]
async fn a_repeated_event_with_a_new_message_id_changes_nothing_either() {
    let (_dir, dbs) = databases().await;
    for db in &dbs {
        let id = place(db, "cust-1").await.order_id;
        on_inventory(db, &reserved(id, 500)).await;
        let before = load(db, id).await;
        let outbox_before = outbox(db, id).await.len();

        assert_eq!(
            on_inventory(db, &reserved(id, 500)).await,
            Handled::Unchanged
        );

        assert_eq!(load(db, id).await, before);
        assert_eq!(outbox(db, id).await.len(), outbox_before);
    }
}

#[tokio::test]
async fn a_declined_payment_cancels_the_order_and_compensates_by_releasing_stock() {
    let (_dir, dbs) = databases().await;
    for db in &dbs {
        let id = place(db, "cust-2").await.order_id;
        on_inventory(db, &reserved(id, 900)).await;
        on_payment(
            db,
            &payment(PaymentEvent::PaymentDeclined {
                order_id: id,
                reason: "credit limit exceeded".into(),
            }),
        )
        .await;

        let (order, saga) = load(db, id).await;
        assert_eq!(order.state.status, OrderStatus::Cancelled);
        assert_eq!(order.state.reason.as_deref(), Some("credit limit exceeded"));
        assert_eq!(saga.state.step, SagaStep::Compensating);
        assert_eq!(
            commands(db, id).await.last(),
            Some(&cmd(topics::INVENTORY_COMMANDS, "ReleaseStock"))
        );

        on_inventory(
            db,
            &inventory(InventoryEvent::StockReleased { order_id: id }),
        )
        .await;
        assert_eq!(
            status_and_step(db, id).await,
            (OrderStatus::Cancelled, SagaStep::Done)
        );
    }
}

#[tokio::test]
async fn a_stock_rejection_rejects_the_order_without_asking_for_payment() {
    let (_dir, dbs) = databases().await;
    for db in &dbs {
        let id = place(db, "cust-1").await.order_id;
        on_inventory(
            db,
            &inventory(InventoryEvent::StockRejected {
                order_id: id,
                reason: "SKU-1 is out of stock".into(),
            }),
        )
        .await;
        let (order, saga) = load(db, id).await;
        assert_eq!(order.state.status, OrderStatus::Rejected);
        assert_eq!(order.state.reason.as_deref(), Some("SKU-1 is out of stock"));
        assert_eq!(saga.state.step, SagaStep::Done);
        assert_eq!(
            commands(db, id).await,
            vec![cmd(topics::INVENTORY_COMMANDS, "ReserveStock")]
        );
    }
}

#[tokio::test]
async fn a_late_reservation_for_a_rejected_order_is_released() {
    let (_dir, dbs) = databases().await;
    for db in &dbs {
        let id = place(db, "cust-1").await.order_id;
        on_inventory(
            db,
            &inventory(InventoryEvent::StockRejected {
                order_id: id,
                reason: "no".into(),
            }),
        )
        .await;
        let handled = on_inventory(db, &reserved(id, 100)).await;
        assert_eq!(handled, Handled::Applied { commands: 1 });
        assert_eq!(
            commands(db, id).await.last(),
            Some(&cmd(topics::INVENTORY_COMMANDS, "ReleaseStock"))
        );
        assert_eq!(
            status_and_step(db, id).await,
            (OrderStatus::Rejected, SagaStep::Done)
        );
    }
}

#[tokio::test]
async fn an_event_for_an_unknown_order_is_ignored_and_remembered() {
    let (_dir, dbs) = databases().await;
    for db in &dbs {
        let env = reserved(OrderId::new(), 100);
        assert_eq!(on_inventory(db, &env).await, Handled::UnknownOrder);
        assert_eq!(on_inventory(db, &env).await, Handled::Duplicate);
        assert_eq!(count(db, "SELECT COUNT(*) FROM outbox").await, 0);
    }
}

#[tokio::test]
async fn every_change_of_an_order_publishes_its_new_state_with_a_growing_version() {
    let (_dir, dbs) = databases().await;
    for db in &dbs {
        let id = place(db, "cust-1").await.order_id;
        on_inventory(db, &reserved(id, 700)).await;
        on_payment(
            db,
            &payment(PaymentEvent::PaymentAuthorized {
                order_id: id,
                amount_minor: money(700),
            }),
        )
        .await;
        on_inventory(
            db,
            &inventory(InventoryEvent::StockCommitted { order_id: id }),
        )
        .await;
        on_payment(
            db,
            &payment(PaymentEvent::PaymentCaptured {
                order_id: id,
                amount_minor: money(700),
            }),
        )
        .await;

        let events = order_events(db, id).await;
        let seen: Vec<(i64, OrderStatus, Option<i64>)> = events
            .iter()
            .map(|e| {
                let OrderEvent::OrderChanged { version, order, .. } = &e.body;
                assert_eq!(e.body.order_id(), id);
                (*version, order.status, order.total_minor.map(|m| m.minor()))
            })
            .collect();
        assert_eq!(
            seen,
            vec![
                (1, OrderStatus::Pending, None),
                (2, OrderStatus::Pending, Some(700)),
                (3, OrderStatus::Confirmed, Some(700)),
            ]
        );
        let (order, _) = load(db, id).await;
        assert_eq!(order.version, 3);
    }
}

#[tokio::test]
async fn events_that_arrive_together_are_applied_in_one_transaction_as_one_by_one() {
    use order_service::saga::SagaInput;
    let (_dir, dbs) = databases().await;
    for db in &dbs {
        let first = place(db, "cust-1").await.order_id;
        let second = place(db, "cust-2").await.order_id;
        let reserved_first = reserved(first, 1_250);
        let authorized_first = payment(PaymentEvent::PaymentAuthorized {
            order_id: first,
            amount_minor: money(1_250),
        });
        let rejected_second = inventory(InventoryEvent::StockRejected {
            order_id: second,
            reason: "SKU-1 is out of stock".into(),
        });
        let unknown = inventory(InventoryEvent::StockReleased {
            order_id: OrderId(uuid::Uuid::new_v4()),
        });
        let batch = [
            (
                reserved_first.message_id,
                first,
                SagaInput::Inventory(reserved_first.body.clone()),
            ),
            (
                rejected_second.message_id,
                second,
                SagaInput::Inventory(rejected_second.body.clone()),
            ),
            // A redelivery inside the same batch changes nothing.
            (
                reserved_first.message_id,
                first,
                SagaInput::Inventory(reserved_first.body.clone()),
            ),
            (
                authorized_first.message_id,
                first,
                SagaInput::Payment(authorized_first.body.clone()),
            ),
            // An event for an order this service never placed is ignored, not an error.
            (
                unknown.message_id,
                unknown.body.order_id(),
                SagaInput::Inventory(unknown.body.clone()),
            ),
        ];
        assert!(
            order_service::events::handle_all(db, &policy(), &batch)
                .await
                .unwrap()
        );
        // Two changes of one order in one batch: written once, but announced as two versions,
        // in order, each with the state it had then.
        let (order, saga) = load(db, first).await;
        assert_eq!((order.version, saga.version), (3, 3));
        let announced: Vec<(i64, OrderStatus)> = order_events(db, first)
            .await
            .iter()
            .map(|env| {
                let OrderEvent::OrderChanged { version, order, .. } = &env.body;
                (*version, order.status)
            })
            .collect();
        assert_eq!(
            announced,
            vec![
                (1, OrderStatus::Pending),
                (2, OrderStatus::Pending),
                (3, OrderStatus::Confirmed),
            ]
        );
        project_all(db).await;
        assert_eq!(
            order_service::store::view(db, first)
                .await
                .unwrap()
                .map(|v| v.status),
            Some(OrderStatus::Confirmed)
        );
        assert_eq!(
            status_and_step(db, first).await,
            (OrderStatus::Confirmed, SagaStep::Completing)
        );
        assert_eq!(status_and_step(db, second).await.0, OrderStatus::Rejected);
        assert_eq!(
            commands(db, first).await,
            vec![
                cmd(topics::INVENTORY_COMMANDS, "ReserveStock"),
                cmd(topics::PAYMENT_COMMANDS, "AuthorizePayment"),
                cmd(topics::INVENTORY_COMMANDS, "CommitStock"),
                cmd(topics::PAYMENT_COMMANDS, "CapturePayment"),
            ],
            "each command once, the redelivery included"
        );
        // The same messages again, as a whole batch redelivered: nothing changes.
        assert!(
            !order_service::events::handle_all(db, &policy(), &batch)
                .await
                .unwrap()
        );
        assert_eq!(commands(db, first).await.len(), 4);
    }
}

#[tokio::test]
async fn writes_sent_as_one_script_land_whole_and_a_stale_version_changes_nothing() {
    use platform::db::Script;
    let (_dir, dbs) = databases().await;
    for db in &dbs {
        let id = place(db, "cust-1").await.order_id;
        let (order, saga) = load(db, id).await;
        let mut newer_order = order.clone();
        newer_order.state.status = OrderStatus::Cancelled;
        newer_order.state.reason = Some("a reason with $1 and $2 in it".into());
        newer_order.version += 1;
        let mut newer_saga = saga.clone();
        newer_saga.state.step = SagaStep::Compensating;
        newer_saga.state.attempts = 7;
        newer_saga.version += 1;

        // Written at versions that are no longer the rows': nothing changes.
        let mut tx = db.begin().await.unwrap();
        let mut stale = Script::new();
        order_service::store::add_order_update(&mut stale, &newer_order, order.version + 5);
        order_service::store::add_saga_update(&mut stale, &newer_saga, saga.version + 5);
        assert_eq!(stale.execute(&mut tx).await.unwrap(), 0);
        tx.commit().await.unwrap();
        assert_eq!(load(db, id).await, (order.clone(), saga.clone()));

        // At the versions read: both rows, each with its own values (the placeholders of the
        // second statement are numbered after the first's).
        let mut tx = db.begin().await.unwrap();
        let mut script = Script::new();
        order_service::store::add_order_update(&mut script, &newer_order, order.version);
        order_service::store::add_saga_update(&mut script, &newer_saga, saga.version);
        assert_eq!(script.execute(&mut tx).await.unwrap(), 2);
        tx.commit().await.unwrap();
        let (order_now, saga_now) = load(db, id).await;
        assert_eq!(order_now.state, newer_order.state);
        assert_eq!(order_now.version, newer_order.version);
        assert_eq!(saga_now.state, newer_saga.state);
        assert_eq!(saga_now.version, newer_saga.version);
    }
}
