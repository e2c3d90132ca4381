//! The inbox: processed message ids per consumer.
//!
//! A handler calls [`first_delivery`] inside the transaction that applies the message. On a
//! redelivery the insert finds the row, the handler does nothing, and the offset moves on. The
//! row and the state change commit together, so a crash between them cannot half-apply anything.

use sqlx::AnyConnection;
use uuid::Uuid;

use crate::db::DbError;

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
