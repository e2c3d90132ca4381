//! The read model: newest version wins, stale and repeated deliveries change nothing.

use contracts::domain::OrderStatus;
use contracts::messages::{Envelope, OrderEvent, PaymentEvent};
use order_service::projector::{self, Projected};
use order_service::store;

use crate::helpers::*;

fn changed(view: &contracts::http::OrderView, version: i64) -> Envelope<OrderEvent> {
    Envelope::new(
        OrderEvent::OrderChanged {
            order_id: view.order_id,
            version,
            order: view.clone(),
        },
        platform::now_ms(),
    )
}

#[tokio::test]
async fn the_projector_keeps_the_newest_version_and_ignores_stale_and_repeated_events() {
    let (_dir, dbs) = databases().await;
    for db in &dbs {
        let placed = place(db, "cust-1").await;
        let id = placed.order_id;
        let mut confirmed = placed.clone();
        confirmed.status = OrderStatus::Confirmed;
        confirmed.total_minor = Some(money(400));

        let v2 = changed(&confirmed, 2);
        assert_eq!(
            projector::project(db, &v2).await.unwrap(),
            Projected::Applied
        );
        assert_eq!(store::view(db, id).await.unwrap(), Some(confirmed.clone()));

        // The older event arrives late: ignored.
        assert_eq!(
            projector::project(db, &changed(&placed, 1)).await.unwrap(),
            Projected::Stale
        );
        assert_eq!(store::view(db, id).await.unwrap(), Some(confirmed.clone()));
        assert_eq!(store::view_version(db, id).await.unwrap(), Some(2));

        // The same version again under a new message id (outbox re-publish): ignored.
        assert_eq!(
            projector::project(db, &changed(&placed, 2)).await.unwrap(),
            Projected::Stale
        );
        // The very same message again: the inbox skips it.
        assert_eq!(
            projector::project(db, &v2).await.unwrap(),
            Projected::Duplicate
        );

        let mut cancelled = confirmed.clone();
        cancelled.status = OrderStatus::Cancelled;
        assert_eq!(
            projector::project(db, &changed(&cancelled, 3))
                .await
                .unwrap(),
            Projected::Applied
        );
        assert_eq!(
            store::view(db, id).await.unwrap().map(|v| v.status),
            Some(OrderStatus::Cancelled)
        );
    }
}

#[tokio::test]
async fn the_read_model_converges_to_the_write_model_whatever_the_delivery_order() {
    let (_dir, dbs) = databases().await;
    for db in &dbs {
        let id = place(db, "cust-1").await.order_id;
        on_inventory(db, &reserved(id, 800)).await;
        on_payment(
            db,
            &payment(PaymentEvent::PaymentDeclined {
                order_id: id,
                reason: "no credit".into(),
            }),
        )
        .await;

        let mut events = order_events(db, id).await;
        assert_eq!(events.len(), 3);
        events.reverse();
        for env in &events {
            projector::project(db, env).await.unwrap();
        }
        for env in &events {
            assert_eq!(
                projector::project(db, env).await.unwrap(),
                Projected::Duplicate
            );
        }

        let (order, _) = load(db, id).await;
        assert_eq!(store::view(db, id).await.unwrap(), Some(order.view()));
        let admin = store::admin_orders(db, None).await.unwrap();
        assert_eq!(admin.len(), 1);
        assert_eq!(admin[0].view.as_ref(), Some(&admin[0].order));
    }
}

#[tokio::test]
async fn events_projected_together_leave_the_newest_version_whatever_their_order() {
    let (_dir, dbs) = databases().await;
    for db in &dbs {
        let placed = place(db, "cust-1").await;
        let other = place(db, "cust-2").await;
        let mut confirmed = placed.clone();
        confirmed.status = OrderStatus::Confirmed;
        confirmed.total_minor = Some(money(400));
        let v2 = changed(&confirmed, 2);
        // Newest first, the older one after it, a repeat, and another order's event.
        let batch = [v2.clone(), changed(&placed, 1), v2, changed(&other, 1)];
        projector::project_all(db, &batch).await.unwrap();
        assert_eq!(
            store::view(db, placed.order_id).await.unwrap(),
            Some(confirmed.clone())
        );
        assert_eq!(
            store::view_version(db, placed.order_id).await.unwrap(),
            Some(2)
        );
        assert_eq!(store::view(db, other.order_id).await.unwrap(), Some(other));
        // A later batch holding only an older version than the stored one changes nothing.
        let mut stale = placed.clone();
        stale.reason = Some("stale".into());
        projector::project_all(db, &[changed(&stale, 1)])
            .await
            .unwrap();
        assert_eq!(
            store::view_version(db, placed.order_id).await.unwrap(),
            Some(2)
        );
        assert_eq!(
            store::view(db, placed.order_id).await.unwrap(),
            Some(confirmed)
        );
    }
}
