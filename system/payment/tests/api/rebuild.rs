//! Rebuilding the balances by replaying the ledger.

use contracts::domain::OrderId;
use payment_service::accounts;
use sqlx::Row;

use crate::helpers::*;

/// A mix of every kind of entry over three customers, one of them unknown.
async fn busy_ledger(db: &platform::db::Db) {
    open_accounts(db, &[("cust-1", 1_000), ("cust-2", 500), ("cust-3", 100)]).await;
    let o: Vec<OrderId> = (0..8).map(|_| OrderId::new()).collect();
    handle(db, &authorize(o[0], "cust-1", 300)).await;
    handle(db, &capture(o[0])).await;
    handle(db, &authorize(o[1], "cust-1", 200)).await;
    handle(db, &void(o[1])).await;
    handle(db, &authorize(o[2], "cust-1", 400)).await;
    handle(db, &authorize(o[3], "cust-2", 600)).await;
    handle(db, &authorize(o[4], "cust-2", 450)).await;
    handle(db, &capture(o[4])).await;
    handle(db, &void(o[5])).await;
    handle(db, &authorize(o[5], "cust-3", 50)).await;
    handle(db, &authorize(o[6], "ghost", 10)).await;
    handle(db, &authorize(o[7], "cust-3", 80)).await;
}

async fn event_count(db: &platform::db::Db) -> i64 {
    sqlx::query("SELECT COUNT(*) AS n FROM payment_events")
        .fetch_one(db.pool())
        .await
        .unwrap()
        .get("n")
}

#[tokio::test]
async fn a_replay_after_authorizations_declines_captures_and_voids_is_identical() {
    let (_dir, dbs) = databases().await;
    for db in &dbs {
        busy_ledger(db).await;
        let before = accounts::accounts(db).await.unwrap();

        let report = accounts::rebuild(db).await.unwrap();

        assert!(report.identical, "{}", name(db));
        assert_eq!(report.events_replayed, event_count(db).await);
        assert_eq!(report.accounts, before, "{}", name(db));
        assert_eq!(balance(db, "cust-1").await, (400, 300));
        assert_eq!(balance(db, "cust-2").await, (0, 450));
        assert_eq!(balance(db, "cust-3").await, (80, 0));
    }
}

#[tokio::test]
async fn a_corrupted_projection_row_is_detected_and_repaired() {
    let (_dir, dbs) = databases().await;
    for db in &dbs {
        busy_ledger(db).await;
        let truth = accounts::accounts(db).await.unwrap();
        sqlx::query("UPDATE account_balances SET held_minor = 999 WHERE customer_id = $1")
            .bind("cust-1")
            .execute(db.pool())
            .await
            .unwrap();
        assert_eq!(balance(db, "cust-1").await, (999, 300));

        let report = accounts::rebuild(db).await.unwrap();

        assert!(!report.identical, "{}", name(db));
        assert_eq!(report.accounts, truth, "{}", name(db));
        assert_eq!(accounts::accounts(db).await.unwrap(), truth);
        assert!(
            accounts::rebuild(db).await.unwrap().identical,
            "the repair sticks"
        );
    }
}

#[tokio::test]
async fn a_missing_projection_row_is_detected_and_restored() {
    let (_dir, dbs) = databases().await;
    for db in &dbs {
        busy_ledger(db).await;
        let truth = accounts::accounts(db).await.unwrap();
        sqlx::query("DELETE FROM account_balances WHERE customer_id = $1")
            .bind("cust-2")
            .execute(db.pool())
            .await
            .unwrap();

        let report = accounts::rebuild(db).await.unwrap();

        assert!(!report.identical, "{}", name(db));
        assert_eq!(accounts::accounts(db).await.unwrap(), truth, "{}", name(db));
    }
}

#[tokio::test]
async fn commands_after_a_rebuild_keep_the_projection_equal_to_the_ledger() {
    let (_dir, dbs) = databases().await;
    for db in &dbs {
        busy_ledger(db).await;
        accounts::rebuild(db).await.unwrap();
        let order = OrderId::new();
        handle(db, &authorize(order, "cust-2", 20)).await;
        handle(db, &capture(order)).await;

        assert!(
            accounts::rebuild(db).await.unwrap().identical,
            "{}",
            name(db)
        );
        assert_eq!(balance(db, "cust-2").await, (0, 470));
    }
}
