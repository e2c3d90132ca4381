//! The stock side of the order saga: `ReserveStock`, `ReleaseStock` and `CommitStock`.
//!
//! [`handle_command`] applies one command in one transaction: the inbox record of its message id,
//! the stock and reservation changes, and the event announcing the outcome (outbox) commit
//! together or not at all. A redelivered message (same id) changes nothing. A *repeated* command
//! (the saga retries a step with a new message id) is answered from the reservation's status,
//! so the saga always hears the first outcome again and stock moves at most once:
//!
//! | status \ command | Reserve | Release | Commit |
//! |---|---|---|---|
//! | none | reserve all or nothing → RESERVED / REJECTED | tombstone → RELEASED | warn, silent |
//! | RESERVED | re-announce `StockReserved` | give back → RELEASED | sell → COMMITTED |
//! | REJECTED | re-announce `StockRejected` | → RELEASED (nothing to give back) | warn, silent |
//! | RELEASED | `StockRejected` ("already released") | nothing | warn, silent |
//! | COMMITTED | re-announce `StockReserved` | warn, nothing changes | re-announce |
//!
//! Release always announces `StockReleased`, so a compensating saga can always finish.
//!
//! Product rows are locked (Postgres) and updated in SKU order, so two transactions touching the
//! same SKUs never wait on each other in opposite orders.

use std::collections::BTreeMap;
use std::str::FromStr;
use std::sync::Arc;

use contracts::domain::{Money, OrderId, Quantity, Sku};
use contracts::http::{OrderLine, PricedLine, Reservation, ReservationStatus};
use contracts::messages::{
    Envelope, InventoryCommand, InventoryEvent, MessageKind, decode, topics,
};
use platform::db::{Db, DbError, Tx, retry};
use platform::messaging::consumer::{Delivery, HandleError, Handler};
use platform::messaging::inbox;
use platform::messaging::outbox::{self, OutboxRow};
use sqlx::Row;
use tokio::sync::Notify;
use uuid::Uuid;

use crate::catalog::{corrupt, parse_sku};

/// The inbox's name for this consumer: the consumer group.
pub const CONSUMER: &str = crate::SERVICE;

/// Why a reservation that arrives after its release is refused.
pub const ALREADY_RELEASED: &str = "order was already released";

/// What [`handle_command`] did with a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Processed {
    /// The message id was in the inbox already: nothing changed, nothing was announced.
    Duplicate,
    /// The command was applied (which may mean re-announcing an earlier outcome).
    Handled,
}

fn status_str(s: ReservationStatus) -> &'static str {
    match s {
        ReservationStatus::Reserved => "RESERVED",
        ReservationStatus::Rejected => "REJECTED",
        ReservationStatus::Released => "RELEASED",
        ReservationStatus::Committed => "COMMITTED",
    }
}

fn parse_status(s: &str) -> Result<ReservationStatus, DbError> {
    Ok(match s {
        "RESERVED" => ReservationStatus::Reserved,
        "REJECTED" => ReservationStatus::Rejected,
        "RELEASED" => ReservationStatus::Released,
        "COMMITTED" => ReservationStatus::Committed,
        other => return Err(corrupt(format!("unknown reservation status {other:?}"))),
    })
}

/// Applies one command, with its inbox record and the event it causes, in one transaction.
///
/// Not retried here: wrap it in [`platform::db::retry`] (the consumer does).
#[tracing::instrument(
    skip_all,
    fields(order_id = %env.body.order_id(), command = env.body.kind(), message_id = %env.message_id)
)]
pub async fn handle_command(
    db: &Db,
    env: &Envelope<InventoryCommand>,
) -> Result<Processed, DbError> {
    let mut tx = db.begin().await?;
    let processed = apply_command(db, &mut tx, env).await?;
    tx.commit().await?;
    Ok(processed)
}

/// Applies commands that arrived together in one transaction, in order; returns whether any
/// was new (and so announced an event). One inbox insert records all of them and one outbox
/// insert announces what they did: on SQLite each statement is a hand-off to the connection's
/// worker thread and back (docs/performance.md).
///
/// Not retried here: wrap it in [`platform::db::retry`] (the consumer does).
pub async fn handle_commands(
    db: &Db,
    envs: &[Envelope<InventoryCommand>],
) -> Result<bool, DbError> {
    let mut tx = db.begin().await?;
    let ids: Vec<Uuid> = envs.iter().map(|env| env.message_id).collect();
    let first = inbox::first_deliveries(&mut tx, CONSUMER, &ids).await?;
    let mut rows = Vec::new();
    for (env, first) in envs.iter().zip(&first) {
        if !first {
            tracing::debug!(message_id = %env.message_id, "duplicate delivery ignored");
            continue;
        }
        if let Some(event) = effect(db, &mut tx, env).await? {
            let envelope = Envelope::new(event, platform::now_ms());
            rows.push(OutboxRow::new(topics::INVENTORY_EVENTS, &envelope)?);
        }
    }
    outbox::enqueue_rows(&mut tx, &rows).await?;
    tx.commit().await?;
    Ok(first.contains(&true))
}

/// Applies one command inside the caller's transaction.
async fn apply_command(
    db: &Db,
    tx: &mut Tx,
    env: &Envelope<InventoryCommand>,
) -> Result<Processed, DbError> {
    if !inbox::first_delivery(tx, CONSUMER, env.message_id).await? {
        tracing::debug!("duplicate delivery ignored");
        return Ok(Processed::Duplicate);
    }
    if let Some(event) = effect(db, tx, env).await? {
        let envelope = Envelope::new(event, platform::now_ms());
        outbox::enqueue(tx, topics::INVENTORY_EVENTS, &envelope).await?;
    }
    Ok(Processed::Handled)
}

/// What a new command does inside the caller's transaction, and the event it announces.
async fn effect(
    db: &Db,
    tx: &mut Tx,
    env: &Envelope<InventoryCommand>,
) -> Result<Option<InventoryEvent>, DbError> {
    let event = match &env.body {
        InventoryCommand::ReserveStock { order_id, items } => {
            Some(reserve(db, tx, *order_id, items).await?)
        }
        InventoryCommand::ReleaseStock { order_id } => Some(release(db, tx, *order_id).await?),
        InventoryCommand::CommitStock { order_id } => commit(db, tx, *order_id).await?,
    };
    Ok(event)
}

struct Stored {
    status: ReservationStatus,
    reason: Option<String>,
}

async fn load_reservation(
    db: &Db,
    tx: &mut Tx,
    order_id: OrderId,
) -> Result<Option<Stored>, DbError> {
    let row = sqlx::query(&format!(
        "SELECT status, reason FROM reservations WHERE order_id = $1{}",
        db.for_update()
    ))
    .bind(order_id.to_string())
    .fetch_optional(&mut **tx)
    .await?;
    let Some(row) = row else { return Ok(None) };
    let status: String = row.try_get("status")?;
    Ok(Some(Stored {
        status: parse_status(&status)?,
        reason: row.try_get("reason")?,
    }))
}

/// The lines a reservation holds, sorted by SKU (the lock order, and the order events list them).
async fn load_lines(tx: &mut Tx, order_id: OrderId) -> Result<Vec<PricedLine>, DbError> {
    let rows = sqlx::query(
        "SELECT sku, quantity, unit_price_minor FROM reservation_lines WHERE order_id = $1",
    )
    .bind(order_id.to_string())
    .fetch_all(&mut **tx)
    .await?;
    let mut lines = rows
        .iter()
        .map(|r| {
            Ok(PricedLine {
                sku: parse_sku(r.try_get("sku")?)?,
                quantity: Quantity::new(r.try_get("quantity")?).map_err(corrupt)?,
                unit_price_minor: Money::from_minor(r.try_get("unit_price_minor")?)
                    .map_err(corrupt)?,
            })
        })
        .collect::<Result<Vec<_>, DbError>>()?;
    lines.sort_by(|a, b| a.sku.cmp(&b.sku));
    Ok(lines)
}

fn total_of(lines: &[PricedLine]) -> Option<Money> {
    lines.iter().try_fold(Money::ZERO, |acc, l| {
        acc.checked_add(l.unit_price_minor.checked_mul(l.quantity)?)
    })
}

fn reserved_event(order_id: OrderId, lines: Vec<PricedLine>) -> Result<InventoryEvent, DbError> {
    let total_minor =
        total_of(&lines).ok_or_else(|| corrupt(format!("total of order {order_id} overflows")))?;
    Ok(InventoryEvent::StockReserved {
        order_id,
        lines,
        total_minor,
    })
}

async fn insert_reservation(
    tx: &mut Tx,
    order_id: OrderId,
    status: ReservationStatus,
    reason: Option<&str>,
) -> Result<(), DbError> {
    let now = platform::now_ms();
    let inserted = sqlx::query(
        "INSERT INTO reservations (order_id, status, reason, created_at_ms, updated_at_ms) \
         VALUES ($1, $2, $3, $4, $4) ON CONFLICT (order_id) DO NOTHING",
    )
    .bind(order_id.to_string())
    .bind(status_str(status))
    .bind(reason)
    .bind(now)
    .execute(&mut **tx)
    .await?;
    if inserted.rows_affected() != 1 {
        // Another instance handled a command for this order since our read (a rebalance can
        // hand the partition over mid-message); the retry reads its outcome.
        return Err(DbError::Conflict(format!(
            "reservation of order {order_id}"
        )));
    }
    Ok(())
}

async fn set_status(
    tx: &mut Tx,
    order_id: OrderId,
    status: ReservationStatus,
) -> Result<(), DbError> {
    sqlx::query("UPDATE reservations SET status = $1, updated_at_ms = $2 WHERE order_id = $3")
        .bind(status_str(status))
        .bind(platform::now_ms())
        .bind(order_id.to_string())
        .execute(&mut **tx)
        .await?;
    Ok(())
}

/// Reserves every line or none, or re-announces the outcome of an earlier attempt.
async fn reserve(
    db: &Db,
    tx: &mut Tx,
    order_id: OrderId,
    items: &[OrderLine],
) -> Result<InventoryEvent, DbError> {
    if let Some(stored) = load_reservation(db, tx, order_id).await? {
        tracing::info!(
            status = status_str(stored.status),
            "reservation exists; re-announcing its outcome"
        );
        return match stored.status {
            ReservationStatus::Reserved | ReservationStatus::Committed => {
                reserved_event(order_id, load_lines(tx, order_id).await?)
            }
            ReservationStatus::Rejected => Ok(InventoryEvent::StockRejected {
                order_id,
                reason: stored
                    .reason
                    .unwrap_or_else(|| "stock was rejected".to_string()),
            }),
            ReservationStatus::Released => Ok(InventoryEvent::StockRejected {
                order_id,
                reason: ALREADY_RELEASED.to_string(),
            }),
        };
    }
    match price_lines(db, tx, items).await? {
        Err(reason) => {
            insert_reservation(tx, order_id, ReservationStatus::Rejected, Some(&reason)).await?;
            tracing::info!(%reason, "stock rejected");
            Ok(InventoryEvent::StockRejected { order_id, reason })
        }
        Ok(lines) => {
            insert_reservation(tx, order_id, ReservationStatus::Reserved, None).await?;
            let now = platform::now_ms();
            for line in &lines {
                let moved = sqlx::query(
                    "UPDATE products SET available = available - $1, reserved = reserved + $1, \
                       updated_at_ms = $2 \
                     WHERE sku = $3 AND available >= $1",
                )
                .bind(line.quantity.get())
                .bind(now)
                .bind(line.sku.as_str())
                .execute(&mut **tx)
                .await?;
                if moved.rows_affected() != 1 {
                    return Err(DbError::Conflict(format!("stock of {}", line.sku)));
                }
                sqlx::query(
                    "INSERT INTO reservation_lines (order_id, sku, quantity, unit_price_minor) \
                     VALUES ($1, $2, $3, $4)",
                )
                .bind(order_id.to_string())
                .bind(line.sku.as_str())
                .bind(line.quantity.get())
                .bind(line.unit_price_minor.minor())
                .execute(&mut **tx)
                .await?;
            }
            let event = reserved_event(order_id, lines)?;
            tracing::info!("stock reserved");
            Ok(event)
        }
    }
}

/// Locks and prices every line, in SKU order. `Err(reason)` names the first SKU that is unknown
/// or short of stock; the order is rejected as a whole.
async fn price_lines(
    db: &Db,
    tx: &mut Tx,
    items: &[OrderLine],
) -> Result<Result<Vec<PricedLine>, String>, DbError> {
    if items.is_empty() {
        return Ok(Err("the order has no items".to_string()));
    }
    let mut wanted: BTreeMap<&Sku, Quantity> = BTreeMap::new();
    for line in items {
        if wanted.insert(&line.sku, line.quantity).is_some() {
            return Ok(Err(format!("sku {} appears twice in the order", line.sku)));
        }
    }
    let mut lines = Vec::with_capacity(wanted.len());
    for (sku, quantity) in wanted {
        let row = sqlx::query(&format!(
            "SELECT available, unit_price_minor FROM products WHERE sku = $1{}",
            db.for_update()
        ))
        .bind(sku.as_str())
        .fetch_optional(&mut **tx)
        .await?;
        let Some(row) = row else {
            return Ok(Err(format!("unknown sku {sku}")));
        };
        let available: i64 = row.try_get("available")?;
        if available < quantity.get() {
            return Ok(Err(format!(
                "insufficient stock for sku {sku}: requested {}, available {available}",
                quantity.get()
            )));
        }
        lines.push(PricedLine {
            sku: sku.clone(),
            quantity,
            unit_price_minor: Money::from_minor(row.try_get("unit_price_minor")?)
                .map_err(corrupt)?,
        });
    }
    if total_of(&lines).is_none() {
        return Ok(Err("the order's total is too large".to_string()));
    }
    Ok(Ok(lines))
}

/// Gives reserved stock back (or blocks a reservation that has not arrived yet). Always
/// announces `StockReleased`.
async fn release(db: &Db, tx: &mut Tx, order_id: OrderId) -> Result<InventoryEvent, DbError> {
    match load_reservation(db, tx, order_id).await?.map(|s| s.status) {
        None => {
            insert_reservation(
                tx,
                order_id,
                ReservationStatus::Released,
                Some("released before any reservation"),
            )
            .await?;
            tracing::info!("release arrived first; later reservations of this order are refused");
        }
        Some(ReservationStatus::Reserved) => {
            let now = platform::now_ms();
            for line in load_lines(tx, order_id).await? {
                let moved = sqlx::query(
                    "UPDATE products SET reserved = reserved - $1, available = available + $1, \
                       updated_at_ms = $2 \
                     WHERE sku = $3 AND reserved >= $1",
                )
                .bind(line.quantity.get())
                .bind(now)
                .bind(line.sku.as_str())
                .execute(&mut **tx)
                .await?;
                if moved.rows_affected() != 1 {
                    return Err(corrupt(format!(
                        "order {order_id} holds {} of {} but the product has less reserved",
                        line.quantity.get(),
                        line.sku
                    )));
                }
            }
            set_status(tx, order_id, ReservationStatus::Released).await?;
            tracing::info!("reserved stock released");
        }
        Some(ReservationStatus::Rejected) => {
            set_status(tx, order_id, ReservationStatus::Released).await?;
            tracing::info!("rejected reservation released; nothing to give back");
        }
        Some(ReservationStatus::Released) => {
            tracing::info!("already released; re-announcing");
        }
        Some(ReservationStatus::Committed) => {
            tracing::warn!("release of committed stock ignored: sold stock is not released");
        }
    }
    Ok(InventoryEvent::StockReleased { order_id })
}

/// Turns a reservation into a sale. Silent for anything but RESERVED or COMMITTED: the saga never
/// commits stock it did not see reserved, so that is a bug to notice, not an outcome to announce.
async fn commit(
    db: &Db,
    tx: &mut Tx,
    order_id: OrderId,
) -> Result<Option<InventoryEvent>, DbError> {
    match load_reservation(db, tx, order_id).await?.map(|s| s.status) {
        Some(ReservationStatus::Reserved) => {
            let now = platform::now_ms();
            for line in load_lines(tx, order_id).await? {
                let moved = sqlx::query(
                    "UPDATE products SET reserved = reserved - $1, sold = sold + $1, \
                       updated_at_ms = $2 \
                     WHERE sku = $3 AND reserved >= $1",
                )
                .bind(line.quantity.get())
                .bind(now)
                .bind(line.sku.as_str())
                .execute(&mut **tx)
                .await?;
                if moved.rows_affected() != 1 {
                    return Err(corrupt(format!(
                        "order {order_id} holds {} of {} but the product has less reserved",
                        line.quantity.get(),
                        line.sku
                    )));
                }
            }
            set_status(tx, order_id, ReservationStatus::Committed).await?;
            tracing::info!("stock committed");
            Ok(Some(InventoryEvent::StockCommitted { order_id }))
        }
        Some(ReservationStatus::Committed) => {
            tracing::info!("already committed; re-announcing");
            Ok(Some(InventoryEvent::StockCommitted { order_id }))
        }
        other => {
            tracing::warn!(
                status = other.map(status_str).unwrap_or("none"),
                "commit of stock that is not reserved ignored"
            );
            Ok(None)
        }
    }
}

/// Every reservation with the lines it holds, sorted by order id. One statement, so the lines
/// and their reservation come from the same snapshot.
pub async fn reservations(db: &Db) -> Result<Vec<Reservation>, DbError> {
    let rows = sqlx::query(
        "SELECT r.order_id, r.status, l.sku, l.quantity \
         FROM reservations r LEFT JOIN reservation_lines l ON l.order_id = r.order_id",
    )
    .fetch_all(db.pool())
    .await?;
    let mut by_order: BTreeMap<String, Reservation> = BTreeMap::new();
    for row in rows {
        let id: String = row.try_get("order_id")?;
        let entry = match by_order.entry(id) {
            std::collections::btree_map::Entry::Occupied(e) => e.into_mut(),
            std::collections::btree_map::Entry::Vacant(e) => {
                let order_id = OrderId::from_str(e.key()).map_err(corrupt)?;
                let status: String = row.try_get("status")?;
                e.insert(Reservation {
                    order_id,
                    status: parse_status(&status)?,
                    lines: Vec::new(),
                })
            }
        };
        let sku: Option<String> = row.try_get("sku")?;
        let quantity: Option<i64> = row.try_get("quantity")?;
        if let (Some(sku), Some(quantity)) = (sku, quantity) {
            entry.lines.push(OrderLine {
                sku: parse_sku(sku)?,
                quantity: Quantity::new(quantity).map_err(corrupt)?,
            });
        }
    }
    Ok(by_order
        .into_values()
        .map(|mut r| {
            r.lines.sort_by(|a, b| a.sku.cmp(&b.sku));
            r
        })
        .collect())
}

/// Feeds `inventory.commands` into [`handle_command`] for the consumer loop.
pub struct CommandConsumer {
    db: Db,
    relay: Arc<Notify>,
}

impl CommandConsumer {
    /// `relay` is the outbox relay's waker: the event goes out right after the commit instead of
    /// at the relay's next poll.
    pub fn new(db: Db, relay: Arc<Notify>) -> Self {
        Self { db, relay }
    }
}

impl Handler for CommandConsumer {
    async fn handle(&self, delivery: &Delivery) -> Result<(), HandleError> {
        let env: Envelope<InventoryCommand> = decode(&delivery.payload)?;
        if retry(5, || handle_command(&self.db, &env)).await? == Processed::Handled {
            self.relay.notify_one();
        }
        Ok(())
    }

    async fn handle_batch(&self, deliveries: &[Delivery]) -> Result<(), HandleError> {
        let envs = deliveries
            .iter()
            .map(|delivery| decode::<InventoryCommand>(&delivery.payload))
            .collect::<Result<Vec<_>, _>>()?;
        if retry(5, || handle_commands(&self.db, &envs)).await? {
            self.relay.notify_one();
        }
        Ok(())
    }
}
