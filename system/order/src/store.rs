//! Rows of the order service's tables, read and written inside the caller's transaction.
//!
//! Writes of `orders` and `sagas` carry an optimistic version check
//! (`UPDATE ... WHERE order_id = $ AND version = $`): a row that changed since it was read makes
//! the update touch nothing, which the caller sees in the rows its [`Script`] changed and turns
//! into [`DbError::Conflict`], and the whole transaction is retried (or, for the timeout pass,
//! skipped: another instance already advanced the saga). Writes are added to a [`Script`] so that
//! on SQLite a transaction's writes reach the database in one hand-off.

use std::collections::HashMap;

use contracts::domain::{CustomerId, Money, OrderId, OrderStatus};
use contracts::http::{AdminOrder, OrderLine, OrderView, SagaView};
use contracts::messages::{Envelope, OrderEvent, topics};
use platform::db::{Db, DbError, Script, Value};
use platform::messaging::outbox::OutboxRow;
use sqlx::any::AnyRow;
use sqlx::{AnyConnection, Row};

use crate::saga::{OrderState, Outgoing, SagaState, SagaStep};

/// An order as stored: the saga's view of it plus bookkeeping.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrderRecord {
    pub state: OrderState,
    pub created_at_ms: i64,
    pub updated_at_ms: i64,
    pub version: i64,
}

impl OrderRecord {
    pub fn view(&self) -> OrderView {
        let s = &self.state;
        OrderView {
            order_id: s.order_id,
            customer_id: s.customer_id.clone(),
            status: s.status,
            items: s.items.clone(),
            total_minor: s.total_minor,
            reason: s.reason.clone(),
            created_at_ms: self.created_at_ms,
            updated_at_ms: self.updated_at_ms,
        }
    }
}

/// A saga as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SagaRecord {
    pub order_id: OrderId,
    pub state: SagaState,
    pub version: i64,
    pub updated_at_ms: i64,
}

impl SagaRecord {
    pub fn view(&self) -> SagaView {
        SagaView {
            step: self.state.step.as_str().to_string(),
            attempts: self.state.attempts,
            deadline_at_ms: self.state.deadline_at_ms,
            last_error: self.state.last_error.clone(),
            version: self.version,
        }
    }
}

fn corrupt(what: &str, e: impl std::fmt::Display) -> DbError {
    DbError::Corrupt(format!("{what}: {e}"))
}

const ORDER_COLUMNS: &str = "o.order_id, o.customer_id, o.status, o.items, o.total_minor, o.reason, \
     o.created_at_ms, o.updated_at_ms, o.version";

const SAGA_COLUMNS: &str = "s.step, s.attempts, s.deadline_at_ms, s.last_error, s.stock_committed, \
     s.payment_captured, s.stock_released, s.void_requested, s.payment_voided, \
     s.version AS saga_version, s.updated_at_ms AS saga_updated_at_ms";

fn order_from_row(row: &AnyRow) -> Result<OrderRecord, DbError> {
    let order_id: String = row.try_get("order_id")?;
    let customer_id: String = row.try_get("customer_id")?;
    let status: String = row.try_get("status")?;
    let items: String = row.try_get("items")?;
    let total: Option<i64> = row.try_get("total_minor")?;
    Ok(OrderRecord {
        state: OrderState {
            order_id: order_id.parse().map_err(|e| corrupt("order id", e))?,
            customer_id: CustomerId::parse(customer_id).map_err(|e| corrupt("customer id", e))?,
            items: serde_json::from_str::<Vec<OrderLine>>(&items)
                .map_err(|e| corrupt("order items", e))?,
            status: status.parse().map_err(|e| corrupt("order status", e))?,
            total_minor: total
                .map(Money::from_minor)
                .transpose()
                .map_err(|e| corrupt("order total", e))?,
            reason: row.try_get("reason")?,
        },
        created_at_ms: row.try_get("created_at_ms")?,
        updated_at_ms: row.try_get("updated_at_ms")?,
        version: row.try_get("version")?,
    })
}

fn saga_from_row(order_id: OrderId, row: &AnyRow) -> Result<SagaRecord, DbError> {
    let step: String = row.try_get("step")?;
    let flag = |name: &str| -> Result<bool, DbError> { Ok(row.try_get::<i64, _>(name)? != 0) };
    Ok(SagaRecord {
        order_id,
        state: SagaState {
            step: step.parse().map_err(|e| corrupt("saga step", e))?,
            attempts: row.try_get("attempts")?,
            deadline_at_ms: row.try_get("deadline_at_ms")?,
            last_error: row.try_get("last_error")?,
            stock_committed: flag("stock_committed")?,
            payment_captured: flag("payment_captured")?,
            stock_released: flag("stock_released")?,
            void_requested: flag("void_requested")?,
            payment_voided: flag("payment_voided")?,
        },
        version: row.try_get("saga_version")?,
        updated_at_ms: row.try_get("saga_updated_at_ms")?,
    })
}

/// Loads an order and its saga, locking both on Postgres (`lock` is [`Db::for_update`]).
pub async fn load_order_and_saga(
    conn: &mut AnyConnection,
    lock: &str,
    order_id: OrderId,
) -> Result<Option<(OrderRecord, SagaRecord)>, DbError> {
    let sql = format!(
        "SELECT {ORDER_COLUMNS}, {SAGA_COLUMNS} FROM orders o JOIN sagas s ON s.order_id = o.order_id \
         WHERE o.order_id = $1{lock}"
    );
    let row = sqlx::query(&sql)
        .bind(order_id.to_string())
        .fetch_optional(conn)
        .await?;
    row.map(|row| Ok((order_from_row(&row)?, saga_from_row(order_id, &row)?)))
        .transpose()
}

/// Loads the orders `order_ids` name with their sagas, in one statement, locking them on
/// Postgres (`lock` is [`Db::for_update`]; rows are locked in order id order, so two instances
/// locking overlapping sets cannot deadlock). Ids without an order are simply absent.
pub async fn load_orders_and_sagas(
    conn: &mut AnyConnection,
    lock: &str,
    order_ids: &[OrderId],
) -> Result<HashMap<OrderId, (OrderRecord, SagaRecord)>, DbError> {
    let mut found = HashMap::with_capacity(order_ids.len());
    for chunk in order_ids.chunks(LOAD_CHUNK) {
        let params: Vec<String> = (1..=chunk.len()).map(|i| format!("${i}")).collect();
        let sql = format!(
            "SELECT {ORDER_COLUMNS}, {SAGA_COLUMNS} FROM orders o JOIN sagas s ON s.order_id = o.order_id \
             WHERE o.order_id IN ({}) ORDER BY o.order_id{lock}",
            params.join(", ")
        );
        let mut query = sqlx::query(&sql);
        for id in chunk {
            query = query.bind(id.to_string());
        }
        for row in query.fetch_all(&mut *conn).await? {
            let order = order_from_row(&row)?;
            let saga = saga_from_row(order.state.order_id, &row)?;
            found.insert(order.state.order_id, (order, saga));
        }
    }
    Ok(found)
}

/// The most order ids one statement of [`load_orders_and_sagas`] names.
const LOAD_CHUNK: usize = 256;

/// Inserts a new order (outside a [`Script`]; see [`add_order_insert`]).
pub async fn insert_order(conn: &mut AnyConnection, order: &OrderRecord) -> Result<(), DbError> {
    let mut script = Script::new();
    add_order_insert(&mut script, order)?;
    script.execute_each(conn).await?;
    Ok(())
}

/// Adds the insert of a new order to `script` (it changes one row).
pub fn add_order_insert(script: &mut Script, order: &OrderRecord) -> Result<(), DbError> {
    let s = &order.state;
    let items = serde_json::to_string(&s.items).map_err(|e| corrupt("order items", e))?;
    script.push(
        "INSERT INTO orders (order_id, customer_id, status, items, total_minor, reason, \
         created_at_ms, updated_at_ms, version) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        vec![
            Value::from(s.order_id.to_string()),
            Value::from(s.customer_id.as_str()),
            Value::from(s.status.as_str()),
            Value::from(items),
            Value::from(s.total_minor.map(Money::minor)),
            Value::from(s.reason.clone()),
            Value::from(order.created_at_ms),
            Value::from(order.updated_at_ms),
            Value::from(order.version),
        ],
    );
    Ok(())
}

/// Inserts a new saga (outside a [`Script`]; see [`add_saga_insert`]).
pub async fn insert_saga(conn: &mut AnyConnection, saga: &SagaRecord) -> Result<(), DbError> {
    let mut script = Script::new();
    add_saga_insert(&mut script, saga);
    script.execute_each(conn).await?;
    Ok(())
}

/// Adds the insert of a new saga to `script` (it changes one row), with the trace context
/// current now, which the timeout pass continues.
pub fn add_saga_insert(script: &mut Script, saga: &SagaRecord) {
    let s = &saga.state;
    script.push(
        "INSERT INTO sagas (order_id, step, attempts, deadline_at_ms, last_error, stock_committed, \
         payment_captured, stock_released, void_requested, payment_voided, version, updated_at_ms, \
         traceparent) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)",
        vec![
            Value::from(saga.order_id.to_string()),
            Value::from(s.step.as_str()),
            Value::from(s.attempts),
            Value::from(s.deadline_at_ms),
            Value::from(s.last_error.clone()),
            Value::from(i64::from(s.stock_committed)),
            Value::from(i64::from(s.payment_captured)),
            Value::from(i64::from(s.stock_released)),
            Value::from(i64::from(s.void_requested)),
            Value::from(i64::from(s.payment_voided)),
            Value::from(saga.version),
            Value::from(saga.updated_at_ms),
            Value::from(platform::telemetry::current_traceparent()),
        ],
    );
}

/// Adds to `script` the write of the order's new status, total and reason if its row is still
/// at `expected_version` (it changes one row, or none if the order moved on: the caller
/// compares the rows changed with those expected, see [`crate::events`]).
pub fn add_order_update(script: &mut Script, order: &OrderRecord, expected_version: i64) {
    let s = &order.state;
    script.push(
        "UPDATE orders SET status = $1, total_minor = $2, reason = $3, updated_at_ms = $4, \
         version = $5 WHERE order_id = $6 AND version = $7",
        vec![
            Value::from(s.status.as_str()),
            Value::from(s.total_minor.map(Money::minor)),
            Value::from(s.reason.clone()),
            Value::from(order.updated_at_ms),
            Value::from(order.version),
            Value::from(s.order_id.to_string()),
            Value::from(expected_version),
        ],
    );
}

/// Adds to `script` the write of the saga's new state if its row is still at
/// `expected_version` (it changes one row, or none if the saga moved on), ending any timeout
/// pass's claim on it.
pub fn add_saga_update(script: &mut Script, saga: &SagaRecord, expected_version: i64) {
    let s = &saga.state;
    script.push(
        "UPDATE sagas SET step = $1, attempts = $2, deadline_at_ms = $3, last_error = $4, \
         stock_committed = $5, payment_captured = $6, stock_released = $7, void_requested = $8, \
         payment_voided = $9, version = $10, updated_at_ms = $11, timeout_claimed_until_ms = NULL \
         WHERE order_id = $12 AND version = $13",
        vec![
            Value::from(s.step.as_str()),
            Value::from(s.attempts),
            Value::from(s.deadline_at_ms),
            Value::from(s.last_error.clone()),
            Value::from(i64::from(s.stock_committed)),
            Value::from(i64::from(s.payment_captured)),
            Value::from(i64::from(s.stock_released)),
            Value::from(i64::from(s.void_requested)),
            Value::from(i64::from(s.payment_voided)),
            Value::from(saga.version),
            Value::from(saga.updated_at_ms),
            Value::from(saga.order_id.to_string()),
            Value::from(expected_version),
        ],
    );
}

/// The message announcing the order's current state to the read model (`order.events`).
pub fn order_changed_row(order: &OrderRecord, now_ms: i64) -> Result<OutboxRow, DbError> {
    let event = OrderEvent::OrderChanged {
        order_id: order.state.order_id,
        version: order.version,
        order: order.view(),
    };
    OutboxRow::new(topics::ORDER_EVENTS, &Envelope::new(event, now_ms))
}

/// The message carrying a saga's command to inventory or payment.
pub fn command_row(command: &Outgoing, now_ms: i64) -> Result<OutboxRow, DbError> {
    match command {
        Outgoing::Inventory(c) => {
            OutboxRow::new(command.topic(), &Envelope::new(c.clone(), now_ms))
        }
        Outgoing::Payment(c) => OutboxRow::new(command.topic(), &Envelope::new(c.clone(), now_ms)),
    }
}

/// How long a timeout pass keeps the sagas it claimed from the other instances' passes. Any
/// change of the saga ends the claim sooner ([`add_saga_update`]).
pub const TIMEOUT_CLAIM: std::time::Duration = std::time::Duration::from_secs(5);

/// Claims up to `limit` sagas whose deadline passed, oldest deadline first, for
/// [`TIMEOUT_CLAIM`]: instances running their timeout passes at the same moment each get
/// different sagas instead of all working on the same ones. Reads first, so a pass with nothing
/// due takes no write lock.
pub async fn claim_due_sagas(db: &Db, now_ms: i64, limit: i64) -> Result<Vec<DueSaga>, DbError> {
    let any: Option<String> = sqlx::query_scalar(
        "SELECT order_id FROM sagas WHERE deadline_at_ms IS NOT NULL AND deadline_at_ms < $1 \
         AND step <> $2 AND (timeout_claimed_until_ms IS NULL OR timeout_claimed_until_ms < $1) \
         LIMIT 1",
    )
    .bind(now_ms)
    .bind(SagaStep::Done.as_str())
    .fetch_optional(db.pool())
    .await?;
    if any.is_none() {
        return Ok(Vec::new());
    }
    let lock = match db.dialect() {
        platform::db::Dialect::Sqlite => "",
        platform::db::Dialect::Postgres => " FOR UPDATE SKIP LOCKED",
    };
    let claim_until = now_ms + i64::try_from(TIMEOUT_CLAIM.as_millis()).unwrap_or(5_000);
    let mut tx = db.begin().await?;
    let rows = sqlx::query(&format!(
        "UPDATE sagas SET timeout_claimed_until_ms = $1 WHERE order_id IN (\
           SELECT order_id FROM sagas WHERE deadline_at_ms IS NOT NULL AND deadline_at_ms < $2 \
           AND step <> $3 \
           AND (timeout_claimed_until_ms IS NULL OR timeout_claimed_until_ms < $2) \
           ORDER BY deadline_at_ms LIMIT $4{lock}) \
         RETURNING order_id, traceparent, deadline_at_ms"
    ))
    .bind(claim_until)
    .bind(now_ms)
    .bind(SagaStep::Done.as_str())
    .bind(limit)
    .fetch_all(&mut *tx)
    .await?;
    tx.commit().await?;
    let mut due = rows
        .iter()
        .map(|r| {
            let id: String = r.try_get("order_id")?;
            let deadline: Option<i64> = r.try_get("deadline_at_ms")?;
            Ok((
                deadline,
                DueSaga {
                    order_id: id.parse().map_err(|e| corrupt("order id", e))?,
                    traceparent: r.try_get("traceparent")?,
                },
            ))
        })
        .collect::<Result<Vec<_>, DbError>>()?;
    due.sort_by_key(|(deadline, _)| *deadline);
    Ok(due.into_iter().map(|(_, saga)| saga).collect())
}

/// How long an `Idempotency-Key` is remembered: a client retrying later than this gets a new
/// order. A day covers every retry policy worth having.
pub const IDEMPOTENCY_RETENTION: std::time::Duration = std::time::Duration::from_secs(24 * 3600);

/// Forgets idempotency keys older than `retention`, at most `batch`; returns how many.
pub async fn prune_idempotency_keys(
    db: &Db,
    retention: std::time::Duration,
    batch: i64,
) -> Result<u64, DbError> {
    platform::db::delete_older_than(
        db,
        "DELETE FROM idempotency_keys WHERE (customer_id, key) IN (SELECT customer_id, key \
         FROM idempotency_keys WHERE created_at_ms < $1 LIMIT $2)",
        retention,
        batch,
    )
    .await
}

/// A saga past its deadline, with the trace context of the request that started it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DueSaga {
    pub order_id: OrderId,
    pub traceparent: Option<String>,
}

/// How many orders wait for their saga, and when the oldest of them was placed (the
/// `orders_by_status` index answers it).
pub async fn pending_orders(db: &Db) -> Result<(i64, Option<i64>), DbError> {
    let row = sqlx::query(
        "SELECT COUNT(*) AS pending, MIN(created_at_ms) AS oldest FROM orders WHERE status = $1",
    )
    .bind(OrderStatus::Pending.as_str())
    .fetch_one(db.pool())
    .await?;
    Ok((row.try_get("pending")?, row.try_get("oldest")?))
}

/// The backlog admission control reads: PENDING orders, and how many of them were placed before
/// `late_before_ms` (counted up to `limit`, so a long backlog costs no more than a short one).
pub async fn backlog(
    db: &Db,
    late_before_ms: i64,
    limit: i64,
) -> Result<crate::admission::Backlog, DbError> {
    let row = sqlx::query(
        "SELECT (SELECT COUNT(*) FROM orders WHERE status = $1) AS pending, \
         (SELECT COUNT(*) FROM (SELECT 1 FROM orders WHERE status = $1 AND created_at_ms < $2 \
          LIMIT $3) AS l) AS late",
    )
    .bind(OrderStatus::Pending.as_str())
    .bind(late_before_ms)
    .bind(limit)
    .fetch_one(db.pool())
    .await?;
    Ok(crate::admission::Backlog {
        pending: row.try_get("pending")?,
        late: row.try_get("late")?,
    })
}

/// The read model's copy of one order.
pub async fn view(db: &Db, order_id: OrderId) -> Result<Option<OrderView>, DbError> {
    let row = sqlx::query("SELECT body FROM order_view WHERE order_id = $1")
        .bind(order_id.to_string())
        .fetch_optional(db.pool())
        .await?;
    row.map(|r| parse_view(&r.try_get::<String, _>("body")?))
        .transpose()
}

/// The order as it was accepted, from the write model: what `POST /orders` answered (PENDING,
/// no total yet), whatever its saga has done since. For reading an order the read model has
/// not projected yet, so a client reading its own order right after placing it gets it, not a
/// 404 (read-your-writes). Only the accepted state: a later status is the read model's to show,
/// so that a client never sees one status and then an earlier one while the projector catches
/// up.
pub async fn accepted_view(db: &Db, order_id: OrderId) -> Result<Option<OrderView>, DbError> {
    let sql = format!("SELECT {ORDER_COLUMNS} FROM orders o WHERE o.order_id = $1");
    let row = sqlx::query(&sql)
        .bind(order_id.to_string())
        .fetch_optional(db.pool())
        .await?;
    row.map(|row| {
        let record = order_from_row(&row)?;
        Ok(OrderView {
            status: OrderStatus::Pending,
            total_minor: None,
            reason: None,
            updated_at_ms: record.created_at_ms,
            ..record.view()
        })
    })
    .transpose()
}

/// The read model's orders of one customer (or of everyone), newest first; with `before`, only
/// those listed after that order (the next page: pass the last order of a page). `Ok(None)` when
/// `before` names no order of the read model.
pub async fn views(
    db: &Db,
    customer: Option<&CustomerId>,
    before: Option<OrderId>,
    limit: i64,
) -> Result<Option<Vec<OrderView>>, DbError> {
    let mut sql = String::from("SELECT v.body FROM order_view v WHERE 1 = 1");
    let mut n = 0;
    if customer.is_some() {
        n += 1;
        sql.push_str(&format!(" AND v.customer_id = ${n}"));
    }
    if let Some(before) = before {
        if view(db, before).await?.is_none() {
            return Ok(None);
        }
        n += 1;
        // A row value compare: the same order as the ORDER BY, so pages neither skip nor repeat.
        sql.push_str(&format!(
            " AND (v.created_at_ms, v.order_id) < \
             (SELECT b.created_at_ms, b.order_id FROM order_view b WHERE b.order_id = ${n})"
        ));
    }
    n += 1;
    sql.push_str(&format!(
        " ORDER BY v.created_at_ms DESC, v.order_id DESC LIMIT ${n}"
    ));
    let mut query = sqlx::query(&sql);
    if let Some(c) = customer {
        query = query.bind(c.as_str());
    }
    if let Some(before) = before {
        query = query.bind(before.to_string());
    }
    let rows = query.bind(limit).fetch_all(db.pool()).await?;
    rows.iter()
        .map(|r| parse_view(&r.try_get::<String, _>("body")?))
        .collect::<Result<Vec<_>, _>>()
        .map(Some)
}

fn parse_view(body: &str) -> Result<OrderView, DbError> {
    serde_json::from_str(body).map_err(|e| corrupt("order view", e))
}

/// Stores `view` at `version` unless the read model already holds that version or a newer one.
/// Returns whether the row changed.
pub async fn upsert_view(
    conn: &mut AnyConnection,
    view: &OrderView,
    version: i64,
) -> Result<bool, DbError> {
    let mut script = Script::new();
    add_view_upserts(&mut script, &[(view, version)])?;
    Ok(script.execute_each(conn).await? == 1)
}

/// Adds to `script` the storing of each view whose version is newer than the stored one (or
/// that is not stored yet), one statement per [`VIEWS_PER_STATEMENT`]. Each order appears at most
/// once in `views` (one statement cannot upsert a row twice on Postgres).
pub fn add_view_upserts(script: &mut Script, views: &[(&OrderView, i64)]) -> Result<(), DbError> {
    for chunk in views.chunks(VIEWS_PER_STATEMENT) {
        let placeholders: Vec<String> = (0..chunk.len())
            .map(|i| {
                let p = 6 * i;
                format!(
                    "(${}, ${}, ${}, ${}, ${}, ${})",
                    p + 1,
                    p + 2,
                    p + 3,
                    p + 4,
                    p + 5,
                    p + 6
                )
            })
            .collect();
        let mut values = Vec::with_capacity(6 * chunk.len());
        for (view, version) in chunk {
            let body = serde_json::to_string(view).map_err(|e| corrupt("order view", e))?;
            values.extend([
                Value::from(view.order_id.to_string()),
                Value::from(view.customer_id.as_str()),
                Value::from(view.status.as_str()),
                Value::from(body),
                Value::from(*version),
                Value::from(view.created_at_ms),
            ]);
        }
        script.push(
            format!(
                "INSERT INTO order_view (order_id, customer_id, status, body, version, \
                 created_at_ms) VALUES {} \
                 ON CONFLICT (order_id) DO UPDATE SET customer_id = excluded.customer_id, \
                 status = excluded.status, body = excluded.body, version = excluded.version \
                 WHERE order_view.version < excluded.version",
                placeholders.join(", ")
            ),
            values,
        );
    }
    Ok(())
}

/// The most views one statement of [`add_view_upserts`] adds (6 parameters each).
const VIEWS_PER_STATEMENT: usize = 128;

/// The version of the read model's copy, if any.
pub async fn view_version(db: &Db, order_id: OrderId) -> Result<Option<i64>, DbError> {
    let row = sqlx::query("SELECT version FROM order_view WHERE order_id = $1")
        .bind(order_id.to_string())
        .fetch_optional(db.pool())
        .await?;
    Ok(row.map(|r| r.try_get("version")).transpose()?)
}

/// Every order with its saga and the read model's copy, oldest first (`GET /admin/orders`).
pub async fn admin_orders(
    db: &Db,
    status: Option<OrderStatus>,
) -> Result<Vec<AdminOrder>, DbError> {
    let base = format!(
        "SELECT {ORDER_COLUMNS}, {SAGA_COLUMNS}, v.body AS view_body FROM orders o \
         JOIN sagas s ON s.order_id = o.order_id \
         LEFT JOIN order_view v ON v.order_id = o.order_id"
    );
    let order_by = " ORDER BY o.created_at_ms, o.order_id";
    let rows = match status {
        Some(st) => {
            sqlx::query(&format!("{base} WHERE o.status = $1{order_by}"))
                .bind(st.as_str())
                .fetch_all(db.pool())
                .await?
        }
        None => {
            sqlx::query(&format!("{base}{order_by}"))
                .fetch_all(db.pool())
                .await?
        }
    };
    rows.iter()
        .map(|row| {
            let order = order_from_row(row)?;
            let saga = saga_from_row(order.state.order_id, row)?;
            let view_body: Option<String> = row.try_get("view_body")?;
            Ok(AdminOrder {
                order: order.view(),
                saga: saga.view(),
                view: view_body.as_deref().map(parse_view).transpose()?,
            })
        })
        .collect()
}

/// A stored first response to an idempotency key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredResponse {
    pub request_hash: String,
    pub order_id: String,
    pub status: u16,
    pub body: String,
}

/// Records the response to `(customer, key)` unless a row exists already (the primary key
/// decides a race: on Postgres the loser waits for the winner's commit). Returns whether this
/// call recorded it.
pub async fn claim_idempotency_key(
    conn: &mut AnyConnection,
    customer: &CustomerId,
    key: &str,
    response: &StoredResponse,
    now_ms: i64,
) -> Result<bool, DbError> {
    let done = sqlx::query(
        "INSERT INTO idempotency_keys (customer_id, key, request_hash, order_id, response_status, \
         response_body, created_at_ms) VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT DO NOTHING",
    )
    .bind(customer.as_str())
    .bind(key)
    .bind(&response.request_hash)
    .bind(&response.order_id)
    .bind(i64::from(response.status))
    .bind(&response.body)
    .bind(now_ms)
    .execute(conn)
    .await?;
    Ok(done.rows_affected() == 1)
}

pub async fn stored_response(
    conn: &mut AnyConnection,
    customer: &CustomerId,
    key: &str,
) -> Result<Option<StoredResponse>, DbError> {
    let row = sqlx::query(
        "SELECT request_hash, order_id, response_status, response_body FROM idempotency_keys \
         WHERE customer_id = $1 AND key = $2",
    )
    .bind(customer.as_str())
    .bind(key)
    .fetch_optional(conn)
    .await?;
    row.map(|r| {
        let status: i64 = r.try_get("response_status")?;
        Ok(StoredResponse {
            request_hash: r.try_get("request_hash")?,
            order_id: r.try_get("order_id")?,
            status: u16::try_from(status).map_err(|e| corrupt("response status", e))?,
            body: r.try_get("response_body")?,
        })
    })
    .transpose()
}
