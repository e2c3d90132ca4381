//! The transactional outbox and its relay.
//!
//! [`enqueue`] writes a message into the `outbox` table with the caller's transaction, so the
//! message exists exactly when the state change it announces does. The [`Relay`] publishes
//! pending rows to Kafka. Several instances of a service share one database: a relay first
//! *claims* a batch (one `UPDATE ... RETURNING` that sets `claimed_by` and a lease; on Postgres
//! the candidate rows are locked with `SKIP LOCKED`, on SQLite the write transaction is
//! exclusive), so two instances never publish the same row as new work.
//!
//! - The lease is three times the longest a publish can take (the producer's queue wait plus
//!   its `message.timeout.ms`, [`SendLimits`]), so a row still being sent is never claimed by
//!   another instance. A relay that dies after publishing but before marking leaves the row to
//!   be re-published when the lease runs out; consumers' inboxes absorb that duplicate.
//! - Marking a row published (or failed) checks that this relay still holds its claim.
//! - A row whose publish failed is not retried at once: its lease is set to an exponential
//!   backoff from its `attempts` (100 ms doubling to 30 s), so rows that keep failing (a topic
//!   that does not exist, a broker that refuses them) do not hold up the rows behind them.
//! - A pass claims nothing unless a read-only query found a claimable row first: on SQLite an
//!   idle relay would otherwise take the one write lock every poll.
//! - Published rows are deleted after [`OUTBOX_RETENTION`] by [`prune`].
//!
//! Tracing: [`enqueue`] stores the current W3C trace context in the row's `traceparent`; the relay
//! records the row's time in the outbox as an `outbox wait <topic>` span (from the row's commit to
//! its claim) and publishes inside a `publish <topic>` producer span whose context travels in the
//! record's headers, so the consumer's work continues the same trace.

use std::sync::Arc;
use std::time::Duration;

use contracts::messages::{Envelope, MessageKind};
use opentelemetry::KeyValue;
use opentelemetry::trace::SpanKind;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use serde::Serialize;
use sqlx::{AnyConnection, Row};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;
use tracing_opentelemetry::OpenTelemetrySpanExt;

use crate::db::{Db, DbError, Dialect, Script, Value};
use crate::metrics as names;

/// Writes `envelope` to `topic` as part of the caller's transaction.
pub async fn enqueue<T>(
    conn: &mut AnyConnection,
    topic: &str,
    envelope: &Envelope<T>,
) -> Result<(), DbError>
where
    T: Serialize + MessageKind,
{
    enqueue_rows(conn, &[OutboxRow::new(topic, envelope)?]).await
}

/// A message ready to be written into the outbox: serialized, with the trace context current
/// when it was made (not when it is written), so messages decided one by one and written
/// together each keep their own.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboxRow {
    message_id: String,
    topic: String,
    msg_key: String,
    kind: &'static str,
    payload: String,
    traceparent: Option<String>,
}

impl OutboxRow {
    pub fn new<T>(topic: &str, envelope: &Envelope<T>) -> Result<Self, DbError>
    where
        T: Serialize + MessageKind,
    {
        Ok(Self {
            message_id: envelope.message_id.to_string(),
            topic: topic.to_owned(),
            msg_key: envelope.body.order_id().to_string(),
            kind: envelope.body.kind(),
            payload: serde_json::to_string(envelope)
                .map_err(|e| DbError::Corrupt(format!("cannot serialize message: {e}")))?,
            traceparent: crate::telemetry::current_traceparent(),
        })
    }

    pub fn topic(&self) -> &str {
        &self.topic
    }

    pub fn kind(&self) -> &'static str {
        self.kind
    }
}

/// Writes `rows` into the outbox, in their order (the relay publishes in that order), as part
/// of the caller's transaction: one multi-row `INSERT` per [`ROWS_PER_STATEMENT`] rows, so a
/// handler that decided many messages pays one round trip to the database, not one each.
pub async fn enqueue_rows(conn: &mut AnyConnection, rows: &[OutboxRow]) -> Result<(), DbError> {
    let mut script = Script::new();
    add_rows(&mut script, rows);
    script.execute_each(conn).await?;
    Ok(())
}

/// Adds the writing of `rows` to `script` (see [`enqueue_rows`]); they change one row each.
pub fn add_rows(script: &mut Script, rows: &[OutboxRow]) {
    for (sql, values) in insert_statements(rows) {
        script.push(sql, values);
    }
}

/// The multi-row `INSERT`s that write `rows`, with their values.
fn insert_statements(rows: &[OutboxRow]) -> Vec<(String, Vec<Value>)> {
    let now = crate::now_ms();
    rows.chunks(ROWS_PER_STATEMENT)
        .map(|chunk| {
            let placeholders: Vec<String> = (0..chunk.len())
                .map(|i| {
                    let p = 7 * i;
                    format!(
                        "(${}, ${}, ${}, ${}, ${}, ${}, ${})",
                        p + 1,
                        p + 2,
                        p + 3,
                        p + 4,
                        p + 5,
                        p + 6,
                        p + 7
                    )
                })
                .collect();
            let sql = format!(
                "INSERT INTO outbox (message_id, topic, msg_key, kind, payload, traceparent, \
                 created_at_ms) VALUES {}",
                placeholders.join(", ")
            );
            let mut values = Vec::with_capacity(7 * chunk.len());
            for row in chunk {
                values.extend([
                    Value::from(row.message_id.as_str()),
                    Value::from(row.topic.as_str()),
                    Value::from(row.msg_key.as_str()),
                    Value::from(row.kind),
                    Value::from(row.payload.as_str()),
                    Value::from(row.traceparent.clone()),
                    Value::from(now),
                ]);
            }
            (sql, values)
        })
        .collect()
}

/// The most rows one `INSERT` of [`enqueue_rows`] carries (7 parameters each: 896 at most,
/// inside every SQLite build's and Postgres's limits).
pub const ROWS_PER_STATEMENT: usize = 128;

/// Counts of the outbox, for readiness and operators.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct OutboxStats {
    pub pending: i64,
    pub published: i64,
}

pub async fn stats(db: &Db) -> Result<OutboxStats, DbError> {
    let row = sqlx::query(
        "SELECT \
           COALESCE(SUM(CASE WHEN published_at_ms IS NULL THEN 1 ELSE 0 END), 0) AS pending, \
           COALESCE(SUM(CASE WHEN published_at_ms IS NULL THEN 0 ELSE 1 END), 0) AS published \
         FROM outbox",
    )
    .fetch_one(db.pool())
    .await?;
    Ok(OutboxStats {
        pending: row.try_get("pending")?,
        published: row.try_get("published")?,
    })
}

/// The backlog: rows not yet published and when the oldest of them was written. Reads only the
/// partial index of pending rows, so it stays cheap however many rows were published.
pub async fn backlog(db: &Db) -> Result<(i64, Option<i64>), DbError> {
    let row = sqlx::query(
        "SELECT COUNT(*) AS pending, MIN(created_at_ms) AS oldest FROM outbox \
         WHERE published_at_ms IS NULL",
    )
    .fetch_one(db.pool())
    .await?;
    Ok((row.try_get("pending")?, row.try_get("oldest")?))
}

/// Sets the outbox gauges from [`backlog`].
pub async fn record_backlog(db: &Db) -> Result<(), DbError> {
    let (pending, oldest) = backlog(db).await?;
    metrics::gauge!(names::OUTBOX_PENDING).set(pending as f64);
    let age_ms = oldest.map_or(0, |t| (crate::now_ms() - t).max(0));
    metrics::gauge!(names::OUTBOX_OLDEST_AGE).set(age_ms as f64 / 1_000.0);
    Ok(())
}

struct Claimed {
    seq: i64,
    /// Publish attempts so far, this one included.
    attempts: i64,
    message_id: String,
    topic: String,
    key: String,
    kind: String,
    payload: String,
    traceparent: Option<String>,
    created_at_ms: i64,
}

/// How long published rows are kept before [`prune`] deletes them: for operators reading what
/// was sent; nothing depends on them once published.
pub const OUTBOX_RETENTION: Duration = Duration::from_secs(3600);

/// The longest one publish can take: waiting for room in the producer's queue, then
/// librdkafka's `message.timeout.ms` (the producer of [`super::kafka::producer`] uses
/// [`SendLimits::DEFAULT`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SendLimits {
    pub queue: Duration,
    pub message: Duration,
}

impl SendLimits {
    pub const DEFAULT: Self = Self {
        queue: Duration::from_secs(1),
        message: super::kafka::MESSAGE_TIMEOUT,
    };

    /// The claim lease: three times the longest publish.
    pub fn lease(&self) -> Duration {
        (self.queue + self.message) * 3
    }
}

/// The backoff of a row whose publish failed, from its attempts so far: 100 ms doubling to
/// 30 s.
pub fn retry_backoff(attempts: i64) -> Duration {
    let doublings = u32::try_from(attempts.clamp(1, 20) - 1).unwrap_or(0);
    (Duration::from_millis(100) * 2u32.pow(doublings)).min(Duration::from_secs(30))
}

/// Publishes the outbox to Kafka.
pub struct Relay {
    db: Db,
    producer: FutureProducer,
    instance_id: String,
    wake: Arc<Notify>,
    batch: i64,
    limits: SendLimits,
    poll: Duration,
}

impl Relay {
    /// A relay publishing with `producer`, which must be configured with
    /// [`SendLimits::DEFAULT`]'s message timeout (as [`super::kafka::producer`] is).
    pub fn new(db: Db, producer: FutureProducer, instance_id: impl Into<String>) -> Self {
        Self {
            db,
            producer,
            instance_id: instance_id.into(),
            wake: Arc::new(Notify::new()),
            batch: 100,
            limits: SendLimits::DEFAULT,
            poll: Duration::from_millis(50),
        }
    }

    /// For a producer configured with other limits than [`SendLimits::DEFAULT`].
    pub fn with_send_limits(mut self, limits: SendLimits) -> Self {
        self.limits = limits;
        self
    }

    /// The database it publishes from.
    pub fn db(&self) -> &Db {
        &self.db
    }

    /// A handle to wake the relay right after a commit that enqueued messages, instead of
    /// waiting for the next poll.
    pub fn waker(&self) -> Arc<Notify> {
        self.wake.clone()
    }

    /// Relays until `shutdown`, then returns after the batch in flight is done.
    pub async fn run(self, shutdown: CancellationToken) {
        tracing::info!(instance = %self.instance_id, "outbox relay started");
        loop {
            let published = match self.relay_once().await {
                Ok(n) => n,
                Err(e) => {
                    tracing::warn!(error = %e, "outbox relay pass failed");
                    0
                }
            };
            if shutdown.is_cancelled() {
                break;
            }
            if published as i64 == self.batch {
                continue;
            }
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = self.wake.notified() => {}
                _ = tokio::time::sleep(self.poll) => {}
            }
        }
        tracing::info!(instance = %self.instance_id, "outbox relay drained");
    }

    /// Claims a batch, publishes it, marks what was published. Returns how many were published.
    pub async fn relay_once(&self) -> Result<usize, DbError> {
        if !self.claimable().await? {
            return Ok(0);
        }
        let claimed = crate::db::retry(5, || self.claim()).await?;
        if claimed.is_empty() {
            return Ok(0);
        }
        let claimed_at = std::time::SystemTime::now();
        let sends = claimed.iter().map(|m| self.publish(m, claimed_at));
        let results = futures::future::join_all(sends).await;
        let mut done = Vec::new();
        let mut failed = Vec::new();
        for (m, ok) in claimed.iter().zip(results) {
            if ok {
                done.push(m.seq);
            } else {
                failed.push((m.seq, m.attempts));
            }
        }
        let n = done.len();
        crate::db::retry(5, || self.finish(&done, &failed)).await?;
        Ok(n)
    }

    /// Publishes one claimed row inside its `publish <topic>` span; `true` once the broker
    /// acknowledged it.
    async fn publish(&self, m: &Claimed, claimed_at: std::time::SystemTime) -> bool {
        let parent = m
            .traceparent
            .as_deref()
            .map(crate::telemetry::context_from_traceparent);
        let written = std::time::UNIX_EPOCH
            + Duration::from_millis(u64::try_from(m.created_at_ms).unwrap_or(0));
        let waited = claimed_at.duration_since(written).unwrap_or_default();
        metrics::histogram!(names::OUTBOX_WAIT, "topic" => m.topic.clone())
            .record(waited.as_secs_f64());
        let span = tracing::info_span!(
            "kafka.publish",
            otel.name = %format!("publish {}", m.topic),
            otel.kind = "producer",
            otel.status_code = tracing::field::Empty,
            messaging.system = "kafka",
            messaging.operation.type = "send",
            messaging.operation.name = "publish",
            messaging.destination.name = %m.topic,
            messaging.message.id = %m.message_id,
            messaging.kafka.message.key = %m.key,
            message.kind = %m.kind,
            messaging.destination.partition.id = tracing::field::Empty,
            messaging.kafka.offset = tracing::field::Empty,
        );
        if let Some(parent) = &parent {
            crate::telemetry::record_span(
                format!("outbox wait {}", m.topic),
                SpanKind::Internal,
                parent,
                written,
                claimed_at,
                vec![
                    KeyValue::new("messaging.destination.name", m.topic.clone()),
                    KeyValue::new("messaging.message.id", m.message_id.clone()),
                ],
            );
            let _ = span.set_parent(parent.clone());
        }
        let mut headers = OwnedHeaders::new()
            .insert(Header {
                key: "message-id",
                value: Some(m.message_id.as_str()),
            })
            .insert(Header {
                key: "kind",
                value: Some(m.kind.as_str()),
            });
        if parent.is_some() {
            for (key, value) in crate::telemetry::inject_carrier(&span.context()).0 {
                headers = headers.insert(Header {
                    key: key.as_str(),
                    value: Some(value.as_str()),
                });
            }
        }
        let record = FutureRecord::to(&m.topic)
            .key(&m.key)
            .payload(&m.payload)
            .headers(headers);
        let started = std::time::Instant::now();
        let sent = self
            .producer
            .send(record, self.limits.queue)
            .instrument(span.clone())
            .await;
        match sent {
            Ok(delivery) => {
                span.record("messaging.destination.partition.id", delivery.partition);
                span.record("messaging.kafka.offset", delivery.offset);
                metrics::counter!(names::OUTBOX_PUBLISHED, "topic" => m.topic.clone()).increment(1);
                // Zero until the first failure, so the series exists for rate().
                metrics::counter!(names::OUTBOX_PUBLISH_FAILURES, "topic" => m.topic.clone())
                    .increment(0);
                metrics::histogram!(names::OUTBOX_PUBLISH_DURATION, "topic" => m.topic.clone())
                    .record(started.elapsed().as_secs_f64());
                true
            }
            Err((e, _)) => {
                span.record("otel.status_code", "ERROR");
                metrics::counter!(names::OUTBOX_PUBLISH_FAILURES, "topic" => m.topic.clone())
                    .increment(1);
                let _entered = span.enter();
                tracing::warn!(error = %e, topic = %m.topic, kind = %m.kind, "publish failed; will retry");
                false
            }
        }
    }

    /// Whether some row waits to be claimed: a read, so an idle relay takes no write lock.
    async fn claimable(&self) -> Result<bool, DbError> {
        let found: Option<i64> = sqlx::query_scalar(
            "SELECT seq FROM outbox WHERE published_at_ms IS NULL \
             AND (claimed_until_ms IS NULL OR claimed_until_ms < $1) LIMIT 1",
        )
        .bind(crate::now_ms())
        .fetch_optional(self.db.pool())
        .await?;
        Ok(found.is_some())
    }

    async fn claim(&self) -> Result<Vec<Claimed>, DbError> {
        let now = crate::now_ms();
        let lease_until = now + i64::try_from(self.limits.lease().as_millis()).unwrap_or(60_000);
        let lock = match self.db.dialect() {
            Dialect::Sqlite => "",
            Dialect::Postgres => " FOR UPDATE SKIP LOCKED",
        };
        let sql = format!(
            "UPDATE outbox SET claimed_by = $1, claimed_until_ms = $2, attempts = attempts + 1 \
             WHERE seq IN (SELECT seq FROM outbox WHERE published_at_ms IS NULL \
                 AND (claimed_until_ms IS NULL OR claimed_until_ms < $3) \
                 ORDER BY seq LIMIT $4{lock}) \
             RETURNING seq, attempts, message_id, topic, msg_key, kind, payload, traceparent, \
                 created_at_ms"
        );
        // One statement, so no transaction around it (`Db::autocommit`).
        let mut conn = self.db.autocommit().await?;
        let rows = sqlx::query(&sql)
            .bind(&self.instance_id)
            .bind(lease_until)
            .bind(now)
            .bind(self.batch)
            .fetch_all(&mut *conn)
            .await?;
        drop(conn);
        let mut claimed = rows
            .into_iter()
            .map(|r| {
                Ok(Claimed {
                    seq: r.try_get("seq")?,
                    attempts: r.try_get("attempts")?,
                    message_id: r.try_get("message_id")?,
                    topic: r.try_get("topic")?,
                    key: r.try_get("msg_key")?,
                    kind: r.try_get("kind")?,
                    payload: r.try_get("payload")?,
                    traceparent: r.try_get("traceparent")?,
                    created_at_ms: r.try_get("created_at_ms")?,
                })
            })
            .collect::<Result<Vec<_>, sqlx::Error>>()?;
        claimed.sort_by_key(|c| c.seq);
        Ok(claimed)
    }

    /// Marks the published rows and puts the failed ones back with their backoff, each only if
    /// this relay still holds its claim (a lease that ran out may have passed the row on).
    async fn finish(&self, done: &[i64], failed: &[(i64, i64)]) -> Result<(), DbError> {
        let now = crate::now_ms();
        if failed.is_empty() {
            // The usual pass: one statement, so no transaction around it.
            if done.is_empty() {
                return Ok(());
            }
            let mut conn = self.db.autocommit().await?;
            let lost = self.mark_published(&mut conn, done, now).await?;
            drop(conn);
            self.warn_lost(lost);
            return Ok(());
        }
        let mut tx = self.db.begin().await?;
        let mut lost = 0;
        if !done.is_empty() {
            lost = self.mark_published(&mut tx, done, now).await?;
        }
        for (seq, attempts) in failed {
            let retry_at =
                now + i64::try_from(retry_backoff(*attempts).as_millis()).unwrap_or(30_000);
            sqlx::query(
                "UPDATE outbox SET claimed_by = NULL, claimed_until_ms = $1 \
                 WHERE seq = $2 AND claimed_by = $3",
            )
            .bind(retry_at)
            .bind(seq)
            .bind(&self.instance_id)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        self.warn_lost(lost);
        Ok(())
    }

    /// Marks the published rows this relay still holds, in one statement (on SQLite every
    /// statement is a round trip to the connection's thread); returns how many it no longer held.
    async fn mark_published(
        &self,
        conn: &mut AnyConnection,
        done: &[i64],
        now: i64,
    ) -> Result<usize, DbError> {
        let placeholders: Vec<String> = (0..done.len()).map(|i| format!("${}", i + 3)).collect();
        let sql = format!(
            "UPDATE outbox SET published_at_ms = $1, claimed_by = NULL, claimed_until_ms = NULL \
             WHERE claimed_by = $2 AND seq IN ({})",
            placeholders.join(", ")
        );
        let mut query = sqlx::query(&sql).bind(now).bind(&self.instance_id);
        for seq in done {
            query = query.bind(seq);
        }
        let marked = query.execute(conn).await?;
        Ok(done
            .len()
            .saturating_sub(usize::try_from(marked.rows_affected()).unwrap_or(0)))
    }

    fn warn_lost(&self, lost: usize) {
        if lost > 0 {
            tracing::warn!(
                rows = lost,
                lease_ms = self.limits.lease().as_millis() as u64,
                "published rows whose claim had passed to another relay; they may be sent twice"
            );
        }
    }
}

/// Deletes published rows older than `retention`, at most `batch` at a time; returns how many.
/// Pending rows are never deleted.
pub async fn prune(db: &Db, retention: Duration, batch: i64) -> Result<u64, DbError> {
    crate::db::delete_older_than(
        db,
        "DELETE FROM outbox WHERE seq IN (SELECT seq FROM outbox \
         WHERE published_at_ms IS NOT NULL AND published_at_ms < $1 ORDER BY seq LIMIT $2)",
        retention,
        batch,
    )
    .await
}
