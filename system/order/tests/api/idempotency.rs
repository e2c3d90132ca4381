//! `Idempotency-Key`: a retried POST replays the first response and creates nothing.

use contracts::domain::OrderId;
use order_service::place::{self, PlaceError};

use crate::helpers::*;

#[tokio::test]
async fn a_retried_post_with_the_same_key_returns_the_first_response_and_creates_nothing() {
    let (_dir, dbs) = databases().await;
    for db in &dbs {
        let req = request(&[("SKU-1", 1)]);
        let cust = customer("cust-1");
        let first = place::place_order(db, &policy(), &cust, Some("key-1"), &req)
            .await
            .unwrap();
        let again = place::place_order(db, &policy(), &cust, Some("key-1"), &req)
            .await
            .unwrap();

        assert!(!first.replayed);
        assert!(again.replayed);
        assert_eq!((again.status, &again.body), (first.status, &first.body));
        assert_eq!(again.order_id, first.order_id);
        assert_eq!(count(db, "SELECT COUNT(*) FROM orders").await, 1);
        assert_eq!(count(db, "SELECT COUNT(*) FROM sagas").await, 1);
        assert_eq!(count(db, "SELECT COUNT(*) FROM outbox").await, 2);
    }
}

#[tokio::test]
async fn the_same_key_with_a_different_body_is_refused() {
    let (_dir, dbs) = databases().await;
    for db in &dbs {
        let cust = customer("cust-1");
        place::place_order(
            db,
            &policy(),
            &cust,
            Some("key-1"),
            &request(&[("SKU-1", 1)]),
        )
        .await
        .unwrap();
        let err = place::place_order(
            db,
            &policy(),
            &cust,
            Some("key-1"),
            &request(&[("SKU-1", 2)]),
        )
        .await
        .unwrap_err();
        assert!(matches!(err, PlaceError::KeyReused(_)), "{err:?}");
        assert_eq!(count(db, "SELECT COUNT(*) FROM orders").await, 1);
    }
}

#[tokio::test]
async fn two_customers_may_use_the_same_key_for_their_own_orders() {
    let (_dir, dbs) = databases().await;
    for db in &dbs {
        let req = request(&[("SKU-1", 1)]);
        let a = place::place_order(db, &policy(), &customer("cust-a"), Some("k"), &req)
            .await
            .unwrap();
        let b = place::place_order(db, &policy(), &customer("cust-b"), Some("k"), &req)
            .await
            .unwrap();
        assert_ne!(a.order_id, b.order_id);
        assert!(!b.replayed);
        assert_eq!(view_of(&b).customer_id.as_str(), "cust-b");
    }
}

#[tokio::test]
async fn concurrent_posts_with_one_key_create_exactly_one_order() {
    let (_dir, dbs) = databases().await;
    for db in &dbs {
        let req = request(&[("SKU-1", 3)]);
        let cust = customer("cust-1");
        let mut tasks = tokio::task::JoinSet::new();
        for _ in 0..8 {
            let (db, cust, req) = (db.clone(), cust.clone(), req.clone());
            tasks.spawn(async move {
                place::place_order(&db, &policy(), &cust, Some("race"), &req).await
            });
        }
        let placed: Vec<_> = tasks
            .join_all()
            .await
            .into_iter()
            .map(Result::unwrap)
            .collect();
        let ids: std::collections::HashSet<OrderId> = placed.iter().map(|p| p.order_id).collect();
        assert_eq!(ids.len(), 1);
        assert_eq!(placed.iter().filter(|p| !p.replayed).count(), 1);
        assert!(placed.iter().all(|p| p.body == placed[0].body));
        assert_eq!(count(db, "SELECT COUNT(*) FROM orders").await, 1);
        assert_eq!(count(db, "SELECT COUNT(*) FROM outbox").await, 2);
    }
}

#[tokio::test]
async fn keys_are_forgotten_after_the_retention_and_remembered_inside_it() {
    let (_dir, dbs) = databases().await;
    for db in &dbs {
        let req = request(&[("SKU-1", 1)]);
        let cust = customer("cust-1");
        place::place_order(db, &policy(), &cust, Some("old"), &req)
            .await
            .unwrap();
        place::place_order(db, &policy(), &cust, Some("recent"), &req)
            .await
            .unwrap();
        let two_days_ago = platform::now_ms() - 2 * 24 * 3_600_000;
        sqlx::query("UPDATE idempotency_keys SET created_at_ms = $1 WHERE key = 'old'")
            .bind(two_days_ago)
            .execute(db.pool())
            .await
            .unwrap();
        let pruned = order_service::store::prune_idempotency_keys(
            db,
            order_service::store::IDEMPOTENCY_RETENTION,
            1000,
        )
        .await
        .unwrap();
        assert_eq!(pruned, 1);
        let again = place::place_order(db, &policy(), &cust, Some("recent"), &req)
            .await
            .unwrap();
        assert!(again.replayed, "a retry inside the retention still replays");
        assert_eq!(count(db, "SELECT COUNT(*) FROM orders").await, 2);
    }
}
