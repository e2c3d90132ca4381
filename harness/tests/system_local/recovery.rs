use contracts::domain::OrderStatus;
use contracts::http::LedgerEntryKind;
use harness::environment::EnvOptions;
use harness::seed::GOOD_CUSTOMER;

use crate::helpers::TestEnv;

/// The saga is caught between steps (stock reserved, payment not answered because the payment
/// service is paused), the only order instance is killed with SIGKILL, and started again: the
/// saga resumes from the database and the order confirms.
#[tokio::test(flavor = "multi_thread")]
async fn the_saga_completes_after_the_order_service_is_killed_mid_saga_and_restarted() {
    let Some(mut t) = TestEnv::start_with(EnvOptions {
        saga_step_timeout_ms: 20_000,
        ..EnvOptions::default()
    })
    .await
    else {
        return;
    };
    let token = t.customer(GOOD_CUSTOMER);
    let before = t.stock_of("SKU-1007").await;
    t.env.pause("payment#1").await.unwrap();

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
    t.env.resume("payment#1").await.unwrap();
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

/// One of two order instances dies by SIGKILL without leaving its consumer group: the other
/// takes over its Kafka partitions and the gateway stops routing to it, so new orders still
/// complete.
#[tokio::test(flavor = "multi_thread")]
async fn orders_still_complete_after_one_of_two_order_instances_is_killed() {
    let Some(mut t) = TestEnv::start_with(EnvOptions {
        instances: harness::environment::Instances::parse("order=2").unwrap(),
        ..EnvOptions::default()
    })
    .await
    else {
        return;
    };
    let token = t.customer("cust-0003");
    let warm = t.place(&token, &[("SKU-1009", 1)]).await;
    t.terminal(&token, warm.order_id).await;

    t.env.kill("order#1").await.unwrap();
    let mut placed = Vec::new();
    for _ in 0..6 {
        placed.push(t.place(&token, &[("SKU-1009", 1)]).await);
    }
    for order in placed {
        let done = t.terminal(&token, order.order_id).await;
        assert_eq!(done.status, OrderStatus::Confirmed, "{done:?}");
    }
    t.env.stop().await;
}
