//! The saga commands: every branch of reserve, release and commit, redeliveries (same message
//! id), repeated commands (new message id), and commands arriving out of order.

use std::sync::Arc;

use contracts::domain::{Money, OrderId, Quantity};
use contracts::http::{PricedLine, ProductUpsert, ReservationStatus};
use contracts::messages::InventoryEvent;
use inventory_service::commands::{ALREADY_RELEASED, reservations};
use inventory_service::{Processed, catalog, handle_command};
use platform::db::retry;

use crate::helpers::*;

fn priced(s: &str, q: i64, price: i64) -> PricedLine {
    PricedLine {
        sku: sku(s),
        quantity: Quantity::new(q).unwrap(),
        unit_price_minor: Money::from_minor(price).unwrap(),
    }
}

fn reserved(order_id: OrderId, lines: Vec<PricedLine>, total: i64) -> InventoryEvent {
    InventoryEvent::StockReserved {
        order_id,
        lines,
        total_minor: Money::from_minor(total).unwrap(),
    }
}

fn rejection_reason(event: &InventoryEvent) -> &str {
    match event {
        InventoryEvent::StockRejected { reason, .. } => reason,
        other => panic!("expected StockRejected, got {other:?}"),
    }
}

#[tokio::test]
async fn a_reservation_holds_every_line_and_announces_the_priced_total() {
    let (_dir, dbs) = databases().await;
    for db in &dbs {
        seed(db, &[("SKU-A", 250, 10), ("SKU-B", 1_000, 5)]).await;
        let order = OrderId::new();
        handle(db, &reserve(order, &[("SKU-B", 2), ("SKU-A", 3)])).await;

        assert_eq!(counters(db, "SKU-A").await, (7, 3, 0, 10), "{}", name(db));
        assert_eq!(counters(db, "SKU-B").await, (3, 2, 0, 5), "{}", name(db));
        assert_eq!(reservation(db, order).await.unwrap().0, "RESERVED");
        assert_eq!(
            events(db).await,
            vec![reserved(
                order,
                vec![priced("SKU-A", 3, 250), priced("SKU-B", 2, 1_000)],
                2_750
            )],
            "{}",
            name(db)
        );
    }
}

#[tokio::test]
async fn a_reservation_with_an_unknown_sku_is_rejected_naming_it_and_holds_nothing() {
    let (_dir, dbs) = databases().await;
    for db in &dbs {
        seed(db, &[("SKU-A", 250, 10)]).await;
        let order = OrderId::new();
        handle(db, &reserve(order, &[("SKU-A", 1), ("SKU-NOPE", 1)])).await;

        assert_eq!(counters(db, "SKU-A").await, (10, 0, 0, 10), "{}", name(db));
        let (status, reason) = reservation(db, order).await.unwrap();
        assert_eq!(status, "REJECTED");
        assert!(reason.unwrap().contains("SKU-NOPE"));
        let events = events(db).await;
        assert_eq!(events.len(), 1);
        assert!(rejection_reason(&events[0]).contains("unknown sku SKU-NOPE"));
    }
}

#[tokio::test]
async fn a_reservation_short_of_stock_on_one_line_holds_none_of_the_lines() {
    let (_dir, dbs) = databases().await;
    for db in &dbs {
        seed(db, &[("SKU-A", 250, 10), ("SKU-B", 100, 1)]).await;
        let order = OrderId::new();
        handle(db, &reserve(order, &[("SKU-A", 4), ("SKU-B", 2)])).await;

        assert_eq!(counters(db, "SKU-A").await, (10, 0, 0, 10), "{}", name(db));
        assert_eq!(counters(db, "SKU-B").await, (1, 0, 0, 1), "{}", name(db));
        let events = events(db).await;
        let reason = rejection_reason(&events[0]);
        assert!(
            reason.contains("SKU-B") && reason.contains("insufficient"),
            "{reason}"
        );
    }
}

#[tokio::test]
async fn an_order_naming_a_sku_twice_or_nothing_at_all_is_rejected() {
    let (_dir, dbs) = databases().await;
    for db in &dbs {
        seed(db, &[("SKU-A", 250, 10)]).await;
        let twice = OrderId::new();
        handle(db, &reserve(twice, &[("SKU-A", 1), ("SKU-A", 2)])).await;
        let empty = OrderId::new();
        handle(db, &reserve(empty, &[])).await;

        assert_eq!(counters(db, "SKU-A").await, (10, 0, 0, 10));
        let events = events(db).await;
        assert!(rejection_reason(&events[0]).contains("twice"));
        assert!(rejection_reason(&events[1]).contains("no items"));
    }
}

#[tokio::test]
async fn a_redelivered_message_changes_nothing_and_announces_nothing() {
    let (_dir, dbs) = databases().await;
    for db in &dbs {
        seed(db, &[("SKU-A", 250, 10)]).await;
        let order = OrderId::new();
        let reserve_cmd = reserve(order, &[("SKU-A", 3)]);
        let commit_cmd = commit(order);
        let release_cmd = release(OrderId::new());
        for cmd in [&reserve_cmd, &commit_cmd, &release_cmd] {
            handle(db, cmd).await;
        }
        let before = events(db).await.len();
        for cmd in [&reserve_cmd, &commit_cmd, &release_cmd] {
            assert_eq!(handle_command(db, cmd).await.unwrap(), Processed::Duplicate);
        }

        assert_eq!(counters(db, "SKU-A").await, (7, 0, 3, 10), "{}", name(db));
        assert_eq!(events(db).await.len(), before, "{}", name(db));
    }
}

#[tokio::test]
async fn a_repeated_reserve_re_announces_the_first_prices_even_after_a_price_change() {
    let (_dir, dbs) = databases().await;
    for db in &dbs {
        seed(db, &[("SKU-A", 250, 10)]).await;
        let order = OrderId::new();
        handle(db, &reserve(order, &[("SKU-A", 2)])).await;
        seed(db, &[("SKU-A", 999, 8)]).await;
        handle(db, &reserve(order, &[("SKU-A", 2)])).await;

        let first = reserved(order, vec![priced("SKU-A", 2, 250)], 500);
        assert_eq!(events(db).await, vec![first.clone(), first], "{}", name(db));
        assert_eq!(counters(db, "SKU-A").await, (8, 2, 0, 10), "{}", name(db));
    }
}

#[tokio::test]
async fn a_repeated_reserve_after_a_rejection_is_rejected_again_even_when_stock_arrived() {
    let (_dir, dbs) = databases().await;
    for db in &dbs {
        seed(db, &[("SKU-A", 250, 1)]).await;
        let order = OrderId::new();
        handle(db, &reserve(order, &[("SKU-A", 5)])).await;
        catalog::restock(db, &sku("SKU-A"), Quantity::new(10).unwrap())
            .await
            .unwrap();
        handle(db, &reserve(order, &[("SKU-A", 5)])).await;

        let events = events(db).await;
        assert_eq!(events.len(), 2);
        assert_eq!(events[0], events[1], "{}", name(db));
        assert_eq!(counters(db, "SKU-A").await, (11, 0, 0, 11), "{}", name(db));
    }
}

#[tokio::test]
async fn a_release_gives_reserved_stock_back_and_repeating_it_only_re_announces() {
    let (_dir, dbs) = databases().await;
    for db in &dbs {
        seed(db, &[("SKU-A", 250, 10), ("SKU-B", 100, 4)]).await;
        let order = OrderId::new();
        handle(db, &reserve(order, &[("SKU-A", 3), ("SKU-B", 4)])).await;
        handle(db, &release(order)).await;
        handle(db, &release(order)).await;

        assert_eq!(counters(db, "SKU-A").await, (10, 0, 0, 10), "{}", name(db));
        assert_eq!(counters(db, "SKU-B").await, (4, 0, 0, 4), "{}", name(db));
        assert_eq!(reservation(db, order).await.unwrap().0, "RELEASED");
        let released = InventoryEvent::StockReleased { order_id: order };
        assert_eq!(events_after(db, 1).await, vec![released.clone(), released]);
    }
}

#[tokio::test]
async fn a_release_before_the_reservation_blocks_the_late_reservation() {
    let (_dir, dbs) = databases().await;
    for db in &dbs {
        seed(db, &[("SKU-A", 250, 10)]).await;
        let order = OrderId::new();
        handle(db, &release(order)).await;
        handle(db, &reserve(order, &[("SKU-A", 3)])).await;

        assert_eq!(counters(db, "SKU-A").await, (10, 0, 0, 10), "{}", name(db));
        assert_eq!(reservation(db, order).await.unwrap().0, "RELEASED");
        assert_eq!(
            events(db).await,
            vec![
                InventoryEvent::StockReleased { order_id: order },
                InventoryEvent::StockRejected {
                    order_id: order,
                    reason: ALREADY_RELEASED.into()
                },
            ],
            "{}",
            name(db)
        );
    }
}

#[tokio::test]
async fn a_release_after_a_rejection_marks_it_released_with_nothing_to_give_back() {
    let (_dir, dbs) = databases().await;
    for db in &dbs {
        seed(db, &[("SKU-A", 250, 2)]).await;
        let order = OrderId::new();
        handle(db, &reserve(order, &[("SKU-A", 3)])).await;
        handle(db, &release(order)).await;
        handle(db, &reserve(order, &[("SKU-A", 1)])).await;

        assert_eq!(counters(db, "SKU-A").await, (2, 0, 0, 2), "{}", name(db));
        assert_eq!(reservation(db, order).await.unwrap().0, "RELEASED");
        let events = events(db).await;
        assert_eq!(events[1], InventoryEvent::StockReleased { order_id: order });
        assert_eq!(rejection_reason(&events[2]), ALREADY_RELEASED);
    }
}

#[tokio::test]
async fn a_commit_sells_reserved_stock_and_repeats_only_re_announce() {
    let (_dir, dbs) = databases().await;
    for db in &dbs {
        seed(db, &[("SKU-A", 250, 10)]).await;
        let order = OrderId::new();
        handle(db, &reserve(order, &[("SKU-A", 3)])).await;
        handle(db, &commit(order)).await;
        handle(db, &commit(order)).await;
        handle(db, &reserve(order, &[("SKU-A", 3)])).await;

        assert_eq!(counters(db, "SKU-A").await, (7, 0, 3, 10), "{}", name(db));
        assert_eq!(reservation(db, order).await.unwrap().0, "COMMITTED");
        let committed = InventoryEvent::StockCommitted { order_id: order };
        let first = reserved(order, vec![priced("SKU-A", 3, 250)], 750);
        assert_eq!(
            events(db).await,
            vec![first.clone(), committed.clone(), committed, first],
            "{}",
            name(db)
        );
    }
}

#[tokio::test]
async fn a_release_after_a_commit_keeps_the_sale_but_is_announced() {
    let (_dir, dbs) = databases().await;
    for db in &dbs {
        seed(db, &[("SKU-A", 250, 10)]).await;
        let order = OrderId::new();
        handle(db, &reserve(order, &[("SKU-A", 3)])).await;
        handle(db, &commit(order)).await;
        handle(db, &release(order)).await;

        assert_eq!(counters(db, "SKU-A").await, (7, 0, 3, 10), "{}", name(db));
        assert_eq!(reservation(db, order).await.unwrap().0, "COMMITTED");
        assert_eq!(
            events_after(db, 2).await,
            vec![InventoryEvent::StockReleased { order_id: order }]
        );
    }
}

#[tokio::test]
async fn a_commit_of_stock_that_is_not_reserved_changes_and_announces_nothing() {
    let (_dir, dbs) = databases().await;
    for db in &dbs {
        seed(db, &[("SKU-A", 250, 2)]).await;
        let never_reserved = OrderId::new();
        let rejected = OrderId::new();
        let released = OrderId::new();
        handle(db, &reserve(rejected, &[("SKU-A", 5)])).await;
        handle(db, &reserve(released, &[("SKU-A", 1)])).await;
        handle(db, &release(released)).await;
        let before = events(db).await.len();

        for order in [never_reserved, rejected, released] {
            handle(db, &commit(order)).await;
        }

        assert_eq!(events(db).await.len(), before, "{}", name(db));
        assert_eq!(counters(db, "SKU-A").await, (2, 0, 0, 2), "{}", name(db));
        assert_eq!(reservation(db, never_reserved).await, None);
        assert_eq!(reservation(db, rejected).await.unwrap().0, "REJECTED");
        assert_eq!(reservation(db, released).await.unwrap().0, "RELEASED");
    }
}

#[tokio::test]
async fn changing_available_stock_of_a_product_with_reservations_keeps_conservation() {
    let (_dir, dbs) = databases().await;
    for db in &dbs {
        seed(db, &[("SKU-A", 250, 10)]).await;
        let order = OrderId::new();
        handle(db, &reserve(order, &[("SKU-A", 4)])).await;
        handle(db, &commit(order)).await;
        let sold = OrderId::new();
        handle(db, &reserve(sold, &[("SKU-A", 1)])).await;

        let levels = catalog::upsert(
            db,
            &[ProductUpsert {
                sku: sku("SKU-A"),
                name: "renamed".into(),
                unit_price_minor: Money::from_minor(300).unwrap(),
                available: 2,
            }],
        )
        .await
        .unwrap();

        assert_eq!(levels[0].name, "renamed");
        assert_eq!(counters(db, "SKU-A").await, (2, 1, 4, 7), "{}", name(db));
        handle(db, &release(sold)).await;
        assert_eq!(counters(db, "SKU-A").await, (3, 0, 4, 7), "{}", name(db));
    }
}

#[tokio::test]
async fn the_reservation_list_shows_each_order_with_its_status_and_held_lines() {
    let (_dir, dbs) = databases().await;
    for db in &dbs {
        seed(db, &[("SKU-A", 250, 10), ("SKU-B", 100, 10)]).await;
        let held = order_id("00000000-0000-7000-8000-000000000001");
        let rejected = order_id("00000000-0000-7000-8000-000000000002");
        let tombstone = order_id("00000000-0000-7000-8000-000000000003");
        handle(db, &reserve(held, &[("SKU-B", 1), ("SKU-A", 2)])).await;
        handle(db, &reserve(rejected, &[("SKU-A", 99)])).await;
        handle(db, &release(tombstone)).await;

        let list = reservations(db).await.unwrap();
        let summary: Vec<_> = list
            .iter()
            .map(|r| (r.order_id, r.status, r.lines.clone()))
            .collect();
        assert_eq!(
            summary,
            vec![
                (
                    held,
                    ReservationStatus::Reserved,
                    vec![line("SKU-A", 2), line("SKU-B", 1)]
                ),
                (rejected, ReservationStatus::Rejected, vec![]),
                (tombstone, ReservationStatus::Released, vec![]),
            ],
            "{}",
            name(db)
        );
    }
}

#[tokio::test]
async fn concurrent_reservations_never_oversell() {
    let (_dir, dbs) = databases().await;
    for db in &dbs {
        seed(db, &[("SKU-A", 100, 10), ("SKU-B", 100, 1_000)]).await;
        let db = Arc::new(db.clone());
        let tasks: Vec<_> = (0..25)
            .map(|_| {
                let db = db.clone();
                tokio::spawn(async move {
                    let cmd = reserve(OrderId::new(), &[("SKU-B", 1), ("SKU-A", 1)]);
                    retry(20, || handle_command(&db, &cmd)).await.unwrap()
                })
            })
            .collect();
        for t in tasks {
            assert_eq!(t.await.unwrap(), Processed::Handled);
        }

        assert_eq!(
            counters(&db, "SKU-A").await,
            (0, 10, 0, 10),
            "{}",
            name(&db)
        );
        assert_eq!(
            counters(&db, "SKU-B").await,
            (990, 10, 0, 1_000),
            "{}",
            name(&db)
        );
        let events = events(&db).await;
        let reserved = events
            .iter()
            .filter(|e| matches!(e, InventoryEvent::StockReserved { .. }))
            .count();
        assert_eq!((reserved, events.len()), (10, 25), "{}", name(&db));
    }
}

#[tokio::test]
async fn commands_that_arrive_together_are_applied_in_one_transaction_as_one_by_one() {
    let (_dir, dbs) = databases().await;
    for db in &dbs {
        seed(db, &[("SKU-A", 250, 10)]).await;
        let (kept, released) = (OrderId::new(), OrderId::new());
        let reserve_kept = reserve(kept, &[("SKU-A", 3)]);
        let batch = [
            reserve_kept.clone(),
            reserve(released, &[("SKU-A", 2)]),
            release(released),
            // A redelivery inside the batch changes nothing.
            reserve_kept,
            commit(kept),
        ];
        let handled = retry(5, || {
            inventory_service::commands::handle_commands(db, &batch)
        })
        .await
        .unwrap();
        assert!(handled);
        assert_eq!(counters(db, "SKU-A").await, (7, 0, 3, 10), "{}", name(db));
        assert_eq!(reservation(db, kept).await.unwrap().0, "COMMITTED");
        assert_eq!(reservation(db, released).await.unwrap().0, "RELEASED");
        assert_eq!(events(db).await.len(), 4, "one event per new command");
    }
}
