//! The saga commands: every branch of authorize, capture and void, redeliveries (same message
//! id), repeated commands (new message id), and a void arriving before its authorization.

use std::sync::Arc;

use contracts::domain::OrderId;
use contracts::messages::PaymentEvent;
use payment_service::commands::{ALREADY_VOIDED, UNKNOWN_CUSTOMER, VOIDED_BEFORE_AUTHORIZATION};
use payment_service::{Processed, accounts, handle_command};
use platform::db::retry;

use crate::helpers::*;

fn authorized(order_id: OrderId, amount: i64) -> PaymentEvent {
    PaymentEvent::PaymentAuthorized {
        order_id,
        amount_minor: money(amount),
    }
}

fn captured(order_id: OrderId, amount: i64) -> PaymentEvent {
    PaymentEvent::PaymentCaptured {
        order_id,
        amount_minor: money(amount),
    }
}

fn voided(order_id: OrderId, amount: i64) -> PaymentEvent {
    PaymentEvent::PaymentVoided {
        order_id,
        amount_minor: money(amount),
    }
}

#[tokio::test]
async fn an_authorization_within_the_limit_holds_the_amount() {
    let (_dir, dbs) = databases().await;
    for db in &dbs {
        open_accounts(db, &[("cust-1", 1_000)]).await;
        let order = OrderId::new();
        handle(db, &authorize(order, "cust-1", 600)).await;

        assert_eq!(balance(db, "cust-1").await, (600, 0), "{}", name(db));
        assert_eq!(
            ledger(db, order).await,
            vec![entry(Some("cust-1"), "AUTHORIZED", 600)]
        );
        assert_eq!(
            events(db).await,
            vec![authorized(order, 600)],
            "{}",
            name(db)
        );
    }
}

#[tokio::test]
async fn held_and_captured_money_both_count_against_the_credit_limit() {
    let (_dir, dbs) = databases().await;
    for db in &dbs {
        open_accounts(db, &[("cust-1", 1_000)]).await;
        let (first, over, exact) = (OrderId::new(), OrderId::new(), OrderId::new());
        handle(db, &authorize(first, "cust-1", 600)).await;
        handle(db, &capture(first)).await;
        handle(db, &authorize(over, "cust-1", 401)).await;
        handle(db, &authorize(exact, "cust-1", 400)).await;

        let events = events(db).await;
        let reason = decline_reason(&events[2]);
        assert!(reason.starts_with("credit limit exceeded: "), "{reason}");
        assert!(
            reason.contains("10.00"),
            "the reason names the limit: {reason}"
        );
        assert_eq!(events[3], authorized(exact, 400), "{}", name(db));
        assert_eq!(
            ledger(db, over).await,
            vec![entry(Some("cust-1"), "DECLINED", 401)]
        );
        assert_eq!(balance(db, "cust-1").await, (400, 600), "{}", name(db));
    }
}

#[tokio::test]
async fn an_unknown_customer_is_declined() {
    let (_dir, dbs) = databases().await;
    for db in &dbs {
        let order = OrderId::new();
        handle(db, &authorize(order, "stranger", 10)).await;

        assert_eq!(events(db).await, vec![declined(order, UNKNOWN_CUSTOMER)]);
        assert_eq!(
            ledger(db, order).await,
            vec![entry(Some("stranger"), "DECLINED", 10)]
        );
        assert!(
            accounts::accounts(db).await.unwrap().is_empty(),
            "{}",
            name(db)
        );
    }
}

#[tokio::test]
async fn a_redelivered_message_changes_nothing_and_announces_nothing() {
    let (_dir, dbs) = databases().await;
    for db in &dbs {
        open_accounts(db, &[("cust-1", 1_000)]).await;
        let (a, b) = (OrderId::new(), OrderId::new());
        let commands = [
            authorize(a, "cust-1", 300),
            capture(a),
            authorize(b, "cust-1", 200),
            void(b),
        ];
        for cmd in &commands {
            handle(db, cmd).await;
        }
        let before = events(db).await.len();
        for cmd in &commands {
            assert_eq!(handle_command(db, cmd).await.unwrap(), Processed::Duplicate);
        }

        assert_eq!(events(db).await.len(), before, "{}", name(db));
        assert_eq!(ledger(db, a).await.len() + ledger(db, b).await.len(), 4);
        assert_eq!(balance(db, "cust-1").await, (0, 300), "{}", name(db));
    }
}

#[tokio::test]
async fn a_repeated_authorization_re_announces_the_first_outcome_without_a_new_entry() {
    let (_dir, dbs) = databases().await;
    for db in &dbs {
        open_accounts(db, &[("cust-1", 500)]).await;
        let (ok, too_much) = (OrderId::new(), OrderId::new());
        handle(db, &authorize(ok, "cust-1", 300)).await;
        handle(db, &authorize(too_much, "cust-1", 300)).await;
        open_accounts(db, &[("cust-1", 10_000)]).await;
        handle(db, &authorize(ok, "cust-1", 300)).await;
        handle(db, &authorize(too_much, "cust-1", 300)).await;
        handle(db, &capture(ok)).await;
        handle(db, &authorize(ok, "cust-1", 300)).await;

        let events = events(db).await;
        assert_eq!(events[2], events[0], "{}", name(db));
        assert_eq!(
            events[3], events[1],
            "a decline stays a decline after the limit rose"
        );
        assert_eq!(
            events[5],
            authorized(ok, 300),
            "a captured payment was authorized"
        );
        assert_eq!(ledger(db, ok).await.len(), 2);
        assert_eq!(ledger(db, too_much).await.len(), 1);
        assert_eq!(balance(db, "cust-1").await, (0, 300), "{}", name(db));
    }
}

#[tokio::test]
async fn a_capture_takes_the_hold_once_and_a_repeat_re_announces_it() {
    let (_dir, dbs) = databases().await;
    for db in &dbs {
        open_accounts(db, &[("cust-1", 1_000)]).await;
        let order = OrderId::new();
        handle(db, &authorize(order, "cust-1", 250)).await;
        handle(db, &capture(order)).await;
        handle(db, &capture(order)).await;

        assert_eq!(balance(db, "cust-1").await, (0, 250), "{}", name(db));
        assert_eq!(
            ledger(db, order).await,
            vec![
                entry(Some("cust-1"), "AUTHORIZED", 250),
                entry(Some("cust-1"), "CAPTURED", 250)
            ]
        );
        assert_eq!(
            events_after(db, 1).await,
            vec![captured(order, 250), captured(order, 250)]
        );
    }
}

#[tokio::test]
async fn a_capture_of_a_payment_that_is_not_authorized_appends_and_announces_nothing() {
    let (_dir, dbs) = databases().await;
    for db in &dbs {
        open_accounts(db, &[("cust-1", 100)]).await;
        let (never, declined_order, voided_order) =
            (OrderId::new(), OrderId::new(), OrderId::new());
        handle(db, &authorize(declined_order, "cust-1", 1_000)).await;
        handle(db, &authorize(voided_order, "cust-1", 50)).await;
        handle(db, &void(voided_order)).await;
        let before = events(db).await.len();

        for order in [never, declined_order, voided_order] {
            handle(db, &capture(order)).await;
        }

        assert_eq!(events(db).await.len(), before, "{}", name(db));
        assert!(ledger(db, never).await.is_empty());
        assert_eq!(ledger(db, declined_order).await.len(), 1);
        assert_eq!(ledger(db, voided_order).await.len(), 2);
        assert_eq!(balance(db, "cust-1").await, (0, 0), "{}", name(db));
    }
}

#[tokio::test]
async fn a_void_drops_the_hold_once_and_a_repeat_re_announces_it() {
    let (_dir, dbs) = databases().await;
    for db in &dbs {
        open_accounts(db, &[("cust-1", 1_000)]).await;
        let order = OrderId::new();
        handle(db, &authorize(order, "cust-1", 700)).await;
        handle(db, &void(order)).await;
        handle(db, &void(order)).await;

        assert_eq!(balance(db, "cust-1").await, (0, 0), "{}", name(db));
        assert_eq!(
            ledger(db, order).await,
            vec![
                entry(Some("cust-1"), "AUTHORIZED", 700),
                entry(Some("cust-1"), "VOIDED", 700)
            ]
        );
        assert_eq!(
            events_after(db, 1).await,
            vec![voided(order, 700), voided(order, 700)]
        );
    }
}

#[tokio::test]
async fn a_void_before_the_authorization_leaves_a_tombstone_that_declines_it() {
    let (_dir, dbs) = databases().await;
    for db in &dbs {
        open_accounts(db, &[("cust-1", 1_000)]).await;
        let order = OrderId::new();
        handle(db, &void(order)).await;
        handle(db, &authorize(order, "cust-1", 300)).await;
        handle(db, &authorize(order, "cust-1", 300)).await;
        handle(db, &void(order)).await;

        assert_eq!(
            events(db).await,
            vec![
                voided(order, 0),
                declined(order, VOIDED_BEFORE_AUTHORIZATION),
                declined(order, VOIDED_BEFORE_AUTHORIZATION),
                voided(order, 0),
            ],
            "{}",
            name(db)
        );
        assert_eq!(
            ledger(db, order).await,
            vec![
                entry(None, "VOIDED", 0),
                entry(Some("cust-1"), "DECLINED", 300)
            ]
        );
        assert_eq!(balance(db, "cust-1").await, (0, 0), "{}", name(db));
    }
}

#[tokio::test]
async fn an_authorization_after_its_hold_was_voided_is_declined_and_moves_nothing() {
    let (_dir, dbs) = databases().await;
    for db in &dbs {
        open_accounts(db, &[("cust-1", 1_000)]).await;
        let order = OrderId::new();
        handle(db, &authorize(order, "cust-1", 300)).await;
        handle(db, &void(order)).await;
        handle(db, &authorize(order, "cust-1", 300)).await;

        assert_eq!(
            events_after(db, 2).await,
            vec![declined(order, ALREADY_VOIDED)]
        );
        assert_eq!(ledger(db, order).await.len(), 2, "{}", name(db));
        assert_eq!(balance(db, "cust-1").await, (0, 0), "{}", name(db));
    }
}

#[tokio::test]
async fn a_void_of_a_captured_payment_is_ignored_because_refunds_are_out_of_scope() {
    let (_dir, dbs) = databases().await;
    for db in &dbs {
        open_accounts(db, &[("cust-1", 1_000)]).await;
        let order = OrderId::new();
        handle(db, &authorize(order, "cust-1", 300)).await;
        handle(db, &capture(order)).await;
        handle(db, &void(order)).await;

        assert_eq!(events(db).await.len(), 2, "{}", name(db));
        assert_eq!(ledger(db, order).await.len(), 2);
        assert_eq!(balance(db, "cust-1").await, (0, 300), "{}", name(db));
    }
}

#[tokio::test]
async fn a_void_of_a_declined_payment_is_acknowledged_with_nothing_to_drop() {
    let (_dir, dbs) = databases().await;
    for db in &dbs {
        open_accounts(db, &[("cust-1", 100)]).await;
        let order = OrderId::new();
        handle(db, &authorize(order, "cust-1", 300)).await;
        handle(db, &void(order)).await;

        assert_eq!(
            events_after(db, 1).await,
            vec![voided(order, 0)],
            "{}",
            name(db)
        );
        assert_eq!(
            ledger(db, order).await,
            vec![entry(Some("cust-1"), "DECLINED", 300)]
        );
    }
}

#[tokio::test]
async fn concurrent_authorizations_of_one_customer_never_exceed_the_limit() {
    let (_dir, dbs) = databases().await;
    for db in &dbs {
        open_accounts(db, &[("cust-1", 1_000)]).await;
        let db = Arc::new(db.clone());
        let tasks: Vec<_> = (0..20)
            .map(|_| {
                let db = db.clone();
                tokio::spawn(async move {
                    let cmd = authorize(OrderId::new(), "cust-1", 100);
                    retry(20, || handle_command(&db, &cmd)).await.unwrap()
                })
            })
            .collect();
        for t in tasks {
            assert_eq!(t.await.unwrap(), Processed::Handled);
        }

        assert_eq!(balance(&db, "cust-1").await, (1_000, 0), "{}", name(&db));
        let authorized = events(&db)
            .await
            .iter()
            .filter(|e| matches!(e, PaymentEvent::PaymentAuthorized { .. }))
            .count();
        assert_eq!(authorized, 10, "{}", name(&db));
    }
}

#[tokio::test]
async fn the_ledger_refuses_updates_and_deletes() {
    let (_dir, dbs) = databases().await;
    for db in &dbs {
        open_accounts(db, &[("cust-1", 1_000)]).await;
        handle(db, &authorize(OrderId::new(), "cust-1", 100)).await;

        let update = sqlx::query("UPDATE payment_events SET amount_minor = 1")
            .execute(db.pool())
            .await;
        let delete = sqlx::query("DELETE FROM payment_events")
            .execute(db.pool())
            .await;

        for result in [update, delete] {
            let err = result.expect_err("the ledger is append-only").to_string();
            assert!(err.contains("append-only"), "{}: {err}", name(db));
        }
    }
}

#[tokio::test]
async fn payment_records_show_each_orders_entries_and_what_it_holds_and_captured() {
    let (_dir, dbs) = databases().await;
    for db in &dbs {
        open_accounts(db, &[("cust-1", 1_000), ("cust-2", 1_000)]).await;
        let (captured_order, held_order, tombstone) =
            (OrderId::new(), OrderId::new(), OrderId::new());
        handle(db, &authorize(captured_order, "cust-1", 300)).await;
        handle(db, &capture(captured_order)).await;
        handle(db, &authorize(held_order, "cust-2", 120)).await;
        handle(db, &void(tombstone)).await;

        let all = accounts::payments(db, None).await.unwrap();
        let mut summary: Vec<_> = all
            .iter()
            .map(|r| {
                (
                    r.order_id,
                    r.customer_id.to_string(),
                    r.entries.len(),
                    r.held_minor,
                    r.captured_minor,
                )
            })
            .collect();
        summary.sort();
        let mut expected = vec![
            (captured_order, "cust-1".to_string(), 2, 0, 300),
            (held_order, "cust-2".to_string(), 1, 120, 0),
        ];
        expected.sort();
        assert_eq!(summary, expected, "{}", name(db));

        let one = accounts::payments(db, Some(held_order)).await.unwrap();
        assert_eq!(one.len(), 1);
        assert_eq!(one[0].order_id, held_order);
        assert!(
            accounts::payments(db, Some(OrderId::new()))
                .await
                .unwrap()
                .is_empty()
        );
    }
}

#[tokio::test]
async fn commands_that_arrive_together_are_applied_in_one_transaction_as_one_by_one() {
    let (_dir, dbs) = databases().await;
    for db in &dbs {
        open_accounts(db, &[("cust-1", 1_000)]).await;
        let (kept, voided_order) = (OrderId::new(), OrderId::new());
        let authorize_kept = authorize(kept, "cust-1", 600);
        let batch = [
            authorize_kept.clone(),
            authorize(voided_order, "cust-1", 300),
            capture(kept),
            void(voided_order),
            // A redelivery inside the batch changes nothing.
            authorize_kept,
        ];
        let handled = retry(5, || payment_service::commands::handle_commands(db, &batch))
            .await
            .unwrap();
        assert!(handled);
        assert_eq!(balance(db, "cust-1").await, (0, 600), "{}", name(db));
        assert_eq!(
            events(db).await,
            vec![
                authorized(kept, 600),
                authorized(voided_order, 300),
                captured(kept, 600),
                voided(voided_order, 300),
            ],
            "{}",
            name(db)
        );
    }
}
