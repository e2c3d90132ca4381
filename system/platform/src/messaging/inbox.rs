//! The inbox: processed message ids per consumer.
//!
//! A handler calls [`first_delivery`] inside the transaction that applies the message. On a
//! redelivery the insert finds the row, the handler does nothing, and the offset moves on. The
//! row and the state change commit together, so a crash between them cannot half-apply anything.
//!
//! Rows are deleted after [`INBOX_RETENTION`] by [`prune`]. That keeps the guarantee as long as
//! no message is delivered again later than that after it was first processed: redeliveries come
//! from a consumer that died before committing its offset (seconds), a relay whose claim lease
//! ran out (under a minute, see `outbox::SendLimits`) or a broker restart (seconds), all far
//! inside an hour.

use std::time::Duration;

use sqlx::AnyConnection;
use uuid::Uuid;

use crate::db::{Db, DbError};

/// How long a processed message id is remembered.
pub const INBOX_RETENTION: Duration = Duration::from_secs(3600);

/// Records `message_id` for `consumer`; `true` when this is the first time.
pub async fn first_delivery(
    conn: &mut AnyConnection,
    consumer: &str,
    message_id: Uuid,
) -> Result<bool, DbError> {
    let done = sqlx::query(
        "INSERT INTO inbox (consumer, message_id, processed_at_ms) VALUES ($1, $2, $3) \
         ON CONFLICT DO NOTHING",
    )
    .bind(consumer)
    .bind(message_id.to_string())
    .bind(crate::now_ms())
    .execute(conn)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Forgets message ids processed more than `retention` ago, at most `batch` at a time; returns
/// how many.
pub async fn prune(db: &Db, retention: Duration, batch: i64) -> Result<u64, DbError> {
    crate::db::delete_older_than(
        db,
        "DELETE FROM inbox WHERE (consumer, message_id) IN (SELECT consumer, message_id \
         FROM inbox WHERE processed_at_ms < $1 LIMIT $2)",
        retention,
        batch,
    )
    .await
}
