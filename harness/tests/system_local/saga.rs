use contracts::domain::OrderStatus;
use contracts::http::LedgerEntryKind;
use harness::seed::{DECLINING_CUSTOMER, GOOD_CUSTOMER, SCARCE_SKU};

use crate::helpers::{TestEnv, lines};

#[tokio::test(flavor = "multi_thread")]
async fn an_order_in_good_standing_is_confirmed_with_its_stock_sold_and_one_capture() {
    let Some(t) = TestEnv::start().await else {
        return;
    };
    let token = t.customer(GOOD_CUSTOMER);
    let before = t.stock_of("SKU-1001").await;

    let placed = t.place(&token, &[("SKU-1001", 2), ("SKU-1002", 1)]).await;
    assert_eq!(placed.status, OrderStatus::Pending);
    let done = t.terminal(&token, placed.order_id).await;
    assert_eq!(done.status, OrderStatus::Confirmed, "{done:?}");
    assert_eq!(done.total_minor.map(|m| m.minor()), Some(2 * 250 + 500));

    let after = t
        .eventually(
            "stock sold",
            || t.stock_of("SKU-1001"),
            |s| s.sold == before.sold + 2,
        )
        .await;
    assert_eq!(after.available, before.available - 2);
    assert_eq!(after.reserved, before.reserved);

    let record = t
        .eventually(
            "payment captured",
            || async {
                t.api
                    .payments(&t.admin, Some(placed.order_id))
                    .await
                    .unwrap()
            },
            |r| r.first().is_some_and(|p| p.captured_minor > 0),
        )
        .await;
    let captures = record[0]
        .entries
        .iter()
        .filter(|e| e.kind == LedgerEntryKind::Captured)
        .count();
    assert_eq!(captures, 1, "{record:?}");
    assert_eq!(record[0].captured_minor, 1000);
    assert_eq!(record[0].held_minor, 0);

    let admin_view = t
        .api
        .admin_order(&t.admin, placed.order_id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(admin_view.order.status, OrderStatus::Confirmed);
    let mine = t.api.my_orders(&token).await.unwrap();
    assert!(mine.iter().any(|o| o.order_id == placed.order_id));
    t.env.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_declined_payment_cancels_the_order_releases_the_stock_and_nets_money_to_zero() {
    let Some(t) = TestEnv::start().await else {
        return;
    };
    let token = t.customer(DECLINING_CUSTOMER);
    let before = t.stock_of("SKU-1005").await;

    let placed = t.place(&token, &[("SKU-1005", 3)]).await;
    let done = t.terminal(&token, placed.order_id).await;
    assert_eq!(done.status, OrderStatus::Cancelled, "{done:?}");
    assert!(done.reason.is_some_and(|r| r.contains("limit")));

    let after = t
        .eventually(
            "stock released",
            || t.stock_of("SKU-1005"),
            |s| s.available == before.available && s.reserved == before.reserved,
        )
        .await;
    assert_eq!(after.sold, before.sold);
    let record = t
        .api
        .payments(&t.admin, Some(placed.order_id))
        .await
        .unwrap();
    assert!(
        record
            .iter()
            .all(|p| p.captured_minor == 0 && p.held_minor == 0),
        "{record:?}"
    );
    assert!(
        record
            .iter()
            .flat_map(|p| &p.entries)
            .any(|e| e.kind == LedgerEntryKind::Declined)
    );
    let admin_view = t
        .api
        .admin_order(&t.admin, placed.order_id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(admin_view.order.status, OrderStatus::Cancelled);
    t.env.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_order_for_more_than_is_in_stock_is_rejected_and_takes_nothing() {
    let Some(t) = TestEnv::start().await else {
        return;
    };
    let token = t.customer(GOOD_CUSTOMER);
    let before = t.stock_of(SCARCE_SKU).await;

    let placed = t
        .place(
            &token,
            &[(SCARCE_SKU, before.available + 1), ("SKU-1001", 1)],
        )
        .await;
    let done = t.terminal(&token, placed.order_id).await;
    assert_eq!(done.status, OrderStatus::Rejected, "{done:?}");
    assert!(done.reason.is_some_and(|r| r.contains(SCARCE_SKU)));
    assert_eq!(t.stock_of(SCARCE_SKU).await, before);
    let payments = t
        .api
        .payments(&t.admin, Some(placed.order_id))
        .await
        .unwrap();
    assert!(
        payments.iter().all(|p| p.entries.is_empty()),
        "{payments:?}"
    );
    t.env.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_retried_post_with_the_same_idempotency_key_returns_the_same_order() {
    let Some(t) = TestEnv::start().await else {
        return;
    };
    let token = t.customer("cust-0002");
    let key = uuid::Uuid::new_v4().to_string();

    let first = t
        .api
        .place_order(&token, lines(&[("SKU-1003", 1)]), Some(&key))
        .await
        .unwrap();
    assert_eq!(first.status.as_u16(), 201, "{}", first.body);
    let again = t
        .api
        .place_order(&token, lines(&[("SKU-1003", 1)]), Some(&key))
        .await
        .unwrap();
    assert_eq!(again.status, first.status);
    assert_eq!(again.body, first.body);
    assert!(again.replayed);

    let different = t
        .api
        .place_order(&token, lines(&[("SKU-1004", 1)]), Some(&key))
        .await
        .unwrap();
    assert_eq!(different.status.as_u16(), 422, "{}", different.body);

    let order: contracts::http::OrderView = first.json().unwrap();
    t.terminal(&token, order.order_id).await;
    let all = t.api.admin_orders(&t.admin).await.unwrap();
    let mine: Vec<_> = all
        .iter()
        .filter(|o| o.order.customer_id.as_str() == "cust-0002")
        .collect();
    assert_eq!(mine.len(), 1, "{mine:?}");
    t.env.stop().await;
}
