//! The inbox: processed message ids per consumer.
//!
//! A handler calls [`first_delivery`] inside the transaction that applies the message (or
//! [`first_deliveries`] for messages that arrived together, in one statement). On a redelivery
//! the insert finds the row, the handler does nothing, and the offset moves on. The row and the
//! state change commit together, so a crash between them cannot half-apply anything.
//!
//! Rows are deleted after [`INBOX_RETENTION`] by [`prune`]. That keeps the guarantee as long as
//! no message is delivered again later than that after it was first processed: redeliveries come
//! from a consumer that died before committing its offset (seconds), a relay whose claim lease
//! ran out (under a minute, see `outbox::SendLimits`) or a broker restart (seconds), all far
//! inside an hour.

use std::collections::HashSet;
use std::time::Duration;

use sqlx::{AnyConnection, Row};
use uuid::Uuid;

use crate::db::{Db, DbError, Script, Value};

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

/// Records the ids of messages that arrived together for `consumer`, in one statement per
/// [`ROWS_PER_STATEMENT`] ids; for each of `message_ids`, in order, whether this is its first
/// delivery. An id repeated within `message_ids` is a first delivery at its first place only.
///
/// One statement instead of one per message: on SQLite each statement is a hand-off to the
/// connection's worker thread and back, which was most of a busy consumer's time.
pub async fn first_deliveries(
    conn: &mut AnyConnection,
    consumer: &str,
    message_ids: &[Uuid],
) -> Result<Vec<bool>, DbError> {
    let mut distinct: Vec<Uuid> = message_ids.to_vec();
    distinct.sort_unstable();
    distinct.dedup();
    let now = crate::now_ms();
    let mut inserted: HashSet<Uuid> = HashSet::with_capacity(distinct.len());
    for chunk in distinct.chunks(ROWS_PER_STATEMENT) {
        let rows: Vec<String> = (0..chunk.len())
            .map(|i| format!("(${}, ${}, ${})", 3 * i + 1, 3 * i + 2, 3 * i + 3))
            .collect();
        let sql = format!(
            "INSERT INTO inbox (consumer, message_id, processed_at_ms) VALUES {} \
             ON CONFLICT DO NOTHING RETURNING message_id",
            rows.join(", ")
        );
        let mut query = sqlx::query(&sql);
        for id in chunk {
            query = query.bind(consumer).bind(id.to_string()).bind(now);
        }
        for row in query.fetch_all(&mut *conn).await? {
            let id: String = row.try_get("message_id")?;
            let id = id
                .parse()
                .map_err(|e| DbError::Corrupt(format!("inbox message id {id:?}: {e}")))?;
            inserted.insert(id);
        }
    }
    // The first place of each inserted id takes it; later places are repeats.
    Ok(message_ids.iter().map(|id| inserted.remove(id)).collect())
}

/// Adds to `script` the recording of `message_ids` for `consumer`, without asking which were
/// new: for a handler whose writes are idempotent on their own (the read model's version
/// check), so the inbox only keeps its record of what was processed. Changes one row per new id.
pub fn add_deliveries(script: &mut Script, consumer: &str, message_ids: &[Uuid]) {
    let mut distinct: Vec<Uuid> = message_ids.to_vec();
    distinct.sort_unstable();
    distinct.dedup();
    let now = crate::now_ms();
    for chunk in distinct.chunks(ROWS_PER_STATEMENT) {
        let rows: Vec<String> = (0..chunk.len())
            .map(|i| format!("(${}, ${}, ${})", 3 * i + 1, 3 * i + 2, 3 * i + 3))
            .collect();
        let mut values = Vec::with_capacity(3 * chunk.len());
        for id in chunk {
            values.extend([
                Value::from(consumer),
                Value::from(id.to_string()),
                Value::from(now),
            ]);
        }
        script.push(
            format!(
                "INSERT INTO inbox (consumer, message_id, processed_at_ms) VALUES {} \
                 ON CONFLICT DO NOTHING",
                rows.join(", ")
            ),
            values,
        );
    }
}

/// The most rows one multi-row `INSERT` of [`first_deliveries`] carries (3 parameters each,
/// far inside SQLite's and Postgres's limits on parameters).
pub const ROWS_PER_STATEMENT: usize = 256;

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
