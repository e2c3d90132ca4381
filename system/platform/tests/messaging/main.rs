//! The outbox relay and the retention of the messaging tables, against real SQLite (and
//! Postgres when configured) and, where a publish must succeed, the embedded Kafka broker.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod batch;
mod broker;
mod relay;
mod retention;

use platform::db::Db;
use sqlx::migrate::Migrator;

/// No service tables: the platform's own migrations create the outbox and inbox.
static NONE: Migrator = Migrator::DEFAULT;

/// The platform's tables in a fresh database of each dialect.
async fn databases() -> (tempfile::TempDir, Vec<Db>) {
    let dir = tempfile::tempdir().unwrap();
    let dbs = platform::testing::both(dir.path(), &NONE, &NONE).await;
    (dir, dbs)
}

/// Writes a pending outbox row for `topic`; returns its seq.
async fn pending_row(db: &Db, topic: &str) -> i64 {
    let id = uuid::Uuid::new_v4().to_string();
    sqlx::query(
        "INSERT INTO outbox (message_id, topic, msg_key, kind, payload, created_at_ms) \
         VALUES ($1, $2, 'key', 'Test', '{}', $3)",
    )
    .bind(&id)
    .bind(topic)
    .bind(platform::now_ms())
    .execute(db.pool())
    .await
    .unwrap();
    sqlx::query_scalar("SELECT seq FROM outbox WHERE message_id = $1")
        .bind(&id)
        .fetch_one(db.pool())
        .await
        .unwrap()
}

/// A row's (attempts, claimed_by, claimed_until_ms, published_at_ms).
async fn row(db: &Db, seq: i64) -> (i64, Option<String>, Option<i64>, Option<i64>) {
    let r = sqlx::query(
        "SELECT attempts, claimed_by, claimed_until_ms, published_at_ms FROM outbox WHERE seq = $1",
    )
    .bind(seq)
    .fetch_one(db.pool())
    .await
    .unwrap();
    use sqlx::Row as _;
    (
        r.get("attempts"),
        r.get("claimed_by"),
        r.get("claimed_until_ms"),
        r.get("published_at_ms"),
    )
}
