//! Messages that arrive together share statements: one inbox insert records them all, one
//! outbox insert writes what they caused. Each must still behave as it would on its own.

use platform::messaging::{inbox, outbox::OutboxRow};
use uuid::Uuid;

use super::databases;

#[tokio::test]
async fn first_deliveries_tells_new_ids_from_seen_and_repeated_ones() {
    let (_dir, dbs) = databases().await;
    for db in &dbs {
        let mut conn = db.pool().acquire().await.unwrap();
        let seen = Uuid::new_v4();
        assert!(
            inbox::first_delivery(&mut conn, "order", seen)
                .await
                .unwrap()
        );
        let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
        let first = inbox::first_deliveries(&mut conn, "order", &[a, seen, b, a])
            .await
            .unwrap();
        assert_eq!(
            first,
            vec![true, false, true, false],
            "new, seen before, new, repeated in the batch"
        );
        // Another consumer's inbox is its own.
        let first = inbox::first_deliveries(&mut conn, "order-projector", &[a, seen])
            .await
            .unwrap();
        assert_eq!(first, vec![true, true]);
        // More ids than one statement carries.
        let many: Vec<Uuid> = (0..inbox::ROWS_PER_STATEMENT + 3)
            .map(|_| Uuid::new_v4())
            .collect();
        let first = inbox::first_deliveries(&mut conn, "payment", &many)
            .await
            .unwrap();
        assert!(first.iter().all(|f| *f));
        let again = inbox::first_deliveries(&mut conn, "payment", &many)
            .await
            .unwrap();
        assert!(again.iter().all(|f| !*f));
        assert!(
            inbox::first_deliveries(&mut conn, "payment", &[])
                .await
                .unwrap()
                .is_empty()
        );
    }
}

#[tokio::test]
async fn rows_written_together_keep_their_order() {
    use contracts::domain::OrderId;
    use contracts::messages::{Envelope, InventoryCommand};
    let (_dir, dbs) = databases().await;
    for db in &dbs {
        let order_ids: Vec<OrderId> = (0..platform::messaging::outbox::ROWS_PER_STATEMENT + 5)
            .map(|_| OrderId(Uuid::new_v4()))
            .collect();
        let rows: Vec<OutboxRow> = order_ids
            .iter()
            .map(|order_id| {
                let envelope = Envelope::new(
                    InventoryCommand::ReleaseStock {
                        order_id: *order_id,
                    },
                    1,
                );
                OutboxRow::new("inventory.commands", &envelope).unwrap()
            })
            .collect();
        let mut conn = db.pool().acquire().await.unwrap();
        platform::messaging::outbox::enqueue_rows(&mut conn, &rows)
            .await
            .unwrap();
        platform::messaging::outbox::enqueue_rows(&mut conn, &[])
            .await
            .unwrap();
        let keys: Vec<String> = sqlx::query_scalar("SELECT msg_key FROM outbox ORDER BY seq")
            .fetch_all(db.pool())
            .await
            .unwrap();
        let expected: Vec<String> = order_ids.iter().map(ToString::to_string).collect();
        assert_eq!(keys, expected, "in the order given, across statements");
        let kinds: Vec<String> = sqlx::query_scalar("SELECT DISTINCT kind FROM outbox")
            .fetch_all(db.pool())
            .await
            .unwrap();
        assert_eq!(kinds, vec!["ReleaseStock".to_string()]);
    }
}
