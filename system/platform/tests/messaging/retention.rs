//! Pruning keeps the outbox and inbox from growing without bound, and never touches what the
//! guarantees still need: pending outbox rows, and message ids inside the retention.

use std::time::Duration;

use platform::messaging::{inbox, outbox};

use super::{databases, pending_row};

#[tokio::test]
async fn published_rows_older_than_the_retention_go_and_pending_ones_stay() {
    let (_dir, dbs) = databases().await;
    for db in &dbs {
        let old_published = pending_row(db, "t").await;
        let old_pending = pending_row(db, "t").await;
        let recent_published = pending_row(db, "t").await;
        let hour_ago = platform::now_ms() - 3_600_000;
        for (seq, published, created) in [
            (old_published, Some(hour_ago), hour_ago),
            (old_pending, None, hour_ago),
            (
                recent_published,
                Some(platform::now_ms()),
                platform::now_ms(),
            ),
        ] {
            sqlx::query(
                "UPDATE outbox SET published_at_ms = $1, created_at_ms = $2 WHERE seq = $3",
            )
            .bind(published)
            .bind(created)
            .bind(seq)
            .execute(db.pool())
            .await
            .unwrap();
        }
        let deleted = outbox::prune(db, Duration::from_secs(60), 1000)
            .await
            .unwrap();
        assert_eq!(deleted, 1);
        let left: Vec<i64> = sqlx::query_scalar("SELECT seq FROM outbox ORDER BY seq")
            .fetch_all(db.pool())
            .await
            .unwrap();
        assert_eq!(left, vec![old_pending, recent_published]);
    }
}

#[tokio::test]
async fn message_ids_are_remembered_for_the_retention_and_forgotten_after_it() {
    let (_dir, dbs) = databases().await;
    for db in &dbs {
        let old = uuid::Uuid::new_v4();
        let recent = uuid::Uuid::new_v4();
        for id in [old, recent] {
            let mut conn = db.pool().acquire().await.unwrap();
            assert!(inbox::first_delivery(&mut conn, "order", id).await.unwrap());
        }
        sqlx::query("UPDATE inbox SET processed_at_ms = $1 WHERE message_id = $2")
            .bind(platform::now_ms() - 2 * 3_600_000)
            .bind(old.to_string())
            .execute(db.pool())
            .await
            .unwrap();
        assert_eq!(
            inbox::prune(db, inbox::INBOX_RETENTION, 1000)
                .await
                .unwrap(),
            1
        );
        let mut conn = db.pool().acquire().await.unwrap();
        assert!(
            !inbox::first_delivery(&mut conn, "order", recent)
                .await
                .unwrap(),
            "a redelivery inside the retention is still recognised"
        );
        // Batches are bounded: a large backlog goes over several passes.
        for _ in 0..5 {
            let id = uuid::Uuid::new_v4();
            assert!(
                inbox::first_delivery(&mut conn, "payment", id)
                    .await
                    .unwrap()
            );
        }
        drop(conn);
        sqlx::query("UPDATE inbox SET processed_at_ms = 0")
            .execute(db.pool())
            .await
            .unwrap();
        assert_eq!(
            inbox::prune(db, inbox::INBOX_RETENTION, 4).await.unwrap(),
            4
        );
        assert_eq!(
            inbox::prune(db, inbox::INBOX_RETENTION, 4).await.unwrap(),
            2
        );
        assert_eq!(
            inbox::prune(db, inbox::INBOX_RETENTION, 4).await.unwrap(),
            0
        );
    }
}
