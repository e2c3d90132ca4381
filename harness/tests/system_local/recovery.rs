use contracts::domain::OrderStatus;
use contracts::http::LedgerEntryKind;
use harness::local::LocalOptions;
use harness::seed::GOOD_CUSTOMER;

use crate::helpers::TestEnv;

/// The saga is caught between steps (stock reserved, payment not answered because the payment
/// service is paused), the only order instance is killed with SIGKILL, and started again: the
/// saga resumes from the database and the order confirms.
#[tokio::test(flavor = "multi_thread")]
async fn the_saga_completes_after_the_order_service_is_killed_mid_saga_and_restarted() {
    let mut t = TestEnv::start_with(LocalOptions {
        saga_step_timeout_ms: 20_000,
        ..LocalOptions::default()
    })
    .await;
    let token = t.customer(GOOD_CUSTOMER);
    let before = t.stock_of("SKU-1007").await;
    t.env.pause("payment#1").unwrap();

    let placed = t.place(&token, &[("SKU-1007", 1)]).await;
    t.eventually(
        "saga waiting on payment",
        || async { t.api.admin_order(&t.admin, placed.order_id).await.unwrap() },
        |o| {
            o.as_ref()
                .is_some_and(|o| o.saga.step == "AUTHORIZING_PAYMENT")
        },
    )
    .await;

    t.env.kill("order#1").await.unwrap();
    t.env.resume("payment#1").unwrap();
    t.env.restart("order#1").await.unwrap();

    let done = t.terminal(&token, placed.order_id).await;
    assert_eq!(done.status, OrderStatus::Confirmed, "{done:?}");
    let after = t
        .eventually(
            "stock sold",
            || t.stock_of("SKU-1007"),
            |s| s.sold == before.sold + 1,
        )
        .await;
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
    assert_eq!(captures, 1);
    t.env.stop().await;
}
