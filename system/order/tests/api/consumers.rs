//! The consumer handlers as the consume loop calls them: routing by topic, poison on garbage.

use std::sync::Arc;

use contracts::domain::OrderStatus;
use contracts::messages::{Envelope, InventoryEvent, topics};
use order_service::events::SagaEventHandler;
use order_service::projector::ProjectorHandler;
use order_service::saga::SagaStep;
use order_service::store;
use platform::messaging::consumer::{Delivery, HandleError, Handler};
use tokio::sync::Notify;

use crate::helpers::*;

fn delivery(topic: &str, payload: impl Into<Vec<u8>>) -> Delivery {
    Delivery {
        topic: topic.into(),
        partition: 0,
        offset: 0,
        key: None,
        payload: payload.into(),
    }
}

#[tokio::test]
async fn the_saga_consumer_applies_events_wakes_the_relay_and_refuses_unreadable_messages() {
    let (_dir, dbs) = databases().await;
    for db in &dbs {
        let relay = Arc::new(Notify::new());
        let handler = SagaEventHandler {
            db: db.clone(),
            policy: policy(),
            relay: relay.clone(),
        };
        let id = place(db, "cust-1").await.order_id;

        let rejected = Envelope::new(
            InventoryEvent::StockRejected {
                order_id: id,
                reason: "none left".into(),
            },
            platform::now_ms(),
        );
        let payload = serde_json::to_vec(&rejected).unwrap();
        handler
            .handle(&delivery(topics::INVENTORY_EVENTS, payload.clone()))
            .await
            .unwrap();
        assert_eq!(
            status_and_step(db, id).await,
            (OrderStatus::Rejected, SagaStep::Done)
        );
        tokio::time::timeout(std::time::Duration::from_secs(1), relay.notified())
            .await
            .expect("the relay was woken");
        handler
            .handle(&delivery(topics::INVENTORY_EVENTS, payload))
            .await
            .unwrap();

        let garbage = handler
            .handle(&delivery(topics::INVENTORY_EVENTS, "{oops"))
            .await;
        assert!(matches!(garbage, Err(HandleError::Poison(_))));
        let wrong_body = serde_json::to_vec(&rejected).unwrap();
        let misrouted = handler
            .handle(&delivery(topics::PAYMENT_EVENTS, wrong_body))
            .await;
        assert!(matches!(misrouted, Err(HandleError::Poison(_))));
        let foreign = handler.handle(&delivery("elsewhere", "{}")).await;
        assert!(matches!(foreign, Err(HandleError::Poison(_))));
    }
}

#[tokio::test]
async fn the_projector_consumer_projects_order_events_and_refuses_unreadable_ones() {
    let (_dir, dbs) = databases().await;
    for db in &dbs {
        let handler = ProjectorHandler { db: db.clone() };
        let view = place(db, "cust-1").await;
        let event = order_events(db, view.order_id).await.remove(0);
        let payload = serde_json::to_vec(&event).unwrap();
        handler
            .handle(&delivery(topics::ORDER_EVENTS, payload))
            .await
            .unwrap();
        assert_eq!(store::view(db, view.order_id).await.unwrap(), Some(view));

        let garbage = handler.handle(&delivery(topics::ORDER_EVENTS, "[]")).await;
        assert!(matches!(garbage, Err(HandleError::Poison(_))));
    }
}
