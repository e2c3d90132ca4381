//! The ledger in the database: appending events together with their projection, and reading them.
//!
//! [`append`] is the only writer of `payment_events` and, apart from the rebuild, of
//! `account_balances`: it locks the customer's balance row, inserts the event, and stores
//! [`apply`](crate::ledger::apply) of the two, all inside the caller's transaction.
//!
//! Locking, so that checks and writes see one consistent ledger:
//! - per order: every command first takes [`lock_order`] (a transaction-scoped advisory lock on
//!   Postgres; SQLite's `BEGIN IMMEDIATE` already serializes writers), so two instances handling
//!   commands of one order (possible while a partition moves between them) take turns;
//! - per customer: [`lock_balance`] locks the balance row, so concurrent authorizations of one
//!   customer's orders cannot both pass the credit check.
//!
//! Always in that order (order, then customer), so transactions never wait on each other in a
//! cycle.

use std::str::FromStr;

use contracts::domain::{CustomerId, OrderId};
use contracts::http::LedgerEntryKind;
use platform::db::{Db, DbError, Dialect};
use sqlx::any::AnyRow;
use sqlx::{AnyConnection, Row};
use uuid::Uuid;

use crate::ledger::{Balance, LedgerEvent, apply, kind_str, parse_kind};

pub(crate) fn corrupt(what: impl std::fmt::Display) -> DbError {
    DbError::Corrupt(what.to_string())
}

/// An event about to be appended.
#[derive(Debug, Clone)]
pub struct NewEvent {
    pub customer_id: Option<CustomerId>,
    pub order_id: OrderId,
    pub kind: LedgerEntryKind,
    pub amount_minor: i64,
    pub reason: Option<String>,
}

const EVENT_COLUMNS: &str =
    "seq, customer_id, order_id, kind, amount_minor, reason, occurred_at_ms";

fn event_from_row(row: &AnyRow) -> Result<LedgerEvent, DbError> {
    let customer_id: Option<String> = row.try_get("customer_id")?;
    let order_id: String = row.try_get("order_id")?;
    let kind: String = row.try_get("kind")?;
    Ok(LedgerEvent {
        seq: row.try_get("seq")?,
        customer_id: customer_id
            .map(CustomerId::parse)
            .transpose()
            .map_err(corrupt)?,
        order_id: OrderId::from_str(&order_id).map_err(corrupt)?,
        kind: parse_kind(&kind).ok_or_else(|| corrupt(format!("unknown ledger kind {kind:?}")))?,
        amount_minor: row.try_get("amount_minor")?,
        reason: row.try_get("reason")?,
        occurred_at_ms: row.try_get("occurred_at_ms")?,
    })
}

/// Serializes the transactions of one order (see the module doc).
pub async fn lock_order(
    db: &Db,
    conn: &mut AnyConnection,
    order_id: OrderId,
) -> Result<(), DbError> {
    if db.dialect() == Dialect::Postgres {
        // Wrapped in a SELECT of a plain integer: the `Any` driver cannot read the `void` the
        // lock function returns.
        sqlx::query(
            "SELECT 1 AS locked FROM (SELECT pg_advisory_xact_lock(hashtextextended($1, 0))) AS l",
        )
        .bind(order_id.to_string())
        .execute(conn)
        .await?;
    }
    Ok(())
}

/// An order's events, oldest first.
pub async fn order_events(
    conn: &mut AnyConnection,
    order_id: OrderId,
) -> Result<Vec<LedgerEvent>, DbError> {
    let rows = sqlx::query(&format!(
        "SELECT {EVENT_COLUMNS} FROM payment_events WHERE order_id = $1 ORDER BY seq"
    ))
    .bind(order_id.to_string())
    .fetch_all(conn)
    .await?;
    rows.iter().map(event_from_row).collect()
}

/// Every event, oldest first; only those of one order when `order_id` is given.
pub async fn events(
    conn: &mut AnyConnection,
    order_id: Option<OrderId>,
) -> Result<Vec<LedgerEvent>, DbError> {
    match order_id {
        Some(id) => order_events(conn, id).await,
        None => {
            let rows = sqlx::query(&format!(
                "SELECT {EVENT_COLUMNS} FROM payment_events ORDER BY seq"
            ))
            .fetch_all(conn)
            .await?;
            rows.iter().map(event_from_row).collect()
        }
    }
}

/// A customer's credit limit; `None` when there is no account.
pub async fn credit_limit(
    conn: &mut AnyConnection,
    customer_id: &CustomerId,
) -> Result<Option<i64>, DbError> {
    let row = sqlx::query("SELECT credit_limit_minor FROM accounts WHERE customer_id = $1")
        .bind(customer_id.as_str())
        .fetch_optional(conn)
        .await?;
    Ok(row.map(|r| r.try_get("credit_limit_minor")).transpose()?)
}

/// Locks a customer's balance row (creating it at zero when the customer has no event yet) and
/// returns it. Only call it in a transaction that then appends an event for this customer, so
/// the projection never holds a row the ledger cannot explain.
pub async fn lock_balance(
    db: &Db,
    conn: &mut AnyConnection,
    customer_id: &CustomerId,
) -> Result<Balance, DbError> {
    sqlx::query(
        "INSERT INTO account_balances (customer_id, held_minor, captured_minor, last_seq) \
         VALUES ($1, 0, 0, 0) ON CONFLICT (customer_id) DO NOTHING",
    )
    .bind(customer_id.as_str())
    .execute(&mut *conn)
    .await?;
    let row = sqlx::query(&format!(
        "SELECT held_minor, captured_minor, last_seq FROM account_balances \
         WHERE customer_id = $1{}",
        db.for_update()
    ))
    .bind(customer_id.as_str())
    .fetch_one(conn)
    .await?;
    Ok(Balance {
        held_minor: row.try_get("held_minor")?,
        captured_minor: row.try_get("captured_minor")?,
        last_seq: row.try_get("last_seq")?,
    })
}

/// Appends an event and folds it into its customer's balance, in the caller's transaction.
pub async fn append(
    db: &Db,
    conn: &mut AnyConnection,
    new: NewEvent,
    message_id: Uuid,
) -> Result<LedgerEvent, DbError> {
    let balance = match &new.customer_id {
        Some(c) => Some(lock_balance(db, conn, c).await?),
        None => None,
    };
    let occurred_at_ms = platform::now_ms();
    let inserted = sqlx::query(
        "INSERT INTO payment_events \
           (customer_id, order_id, kind, amount_minor, reason, occurred_at_ms, message_id) \
         VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING seq",
    )
    .bind(new.customer_id.as_ref().map(CustomerId::as_str))
    .bind(new.order_id.to_string())
    .bind(kind_str(new.kind))
    .bind(new.amount_minor)
    .bind(new.reason.as_deref())
    .bind(occurred_at_ms)
    .bind(message_id.to_string())
    .fetch_one(&mut *conn)
    .await;
    let seq: i64 = match inserted {
        Ok(row) => row.try_get("seq")?,
        Err(sqlx::Error::Database(e)) if e.is_unique_violation() => {
            // Only reachable if the order lock was bypassed; the retry re-reads the ledger.
            return Err(DbError::Conflict(format!(
                "{} of order {}",
                kind_str(new.kind),
                new.order_id
            )));
        }
        Err(e) => return Err(e.into()),
    };
    let event = LedgerEvent {
        seq,
        customer_id: new.customer_id,
        order_id: new.order_id,
        kind: new.kind,
        amount_minor: new.amount_minor,
        reason: new.reason,
        occurred_at_ms,
    };
    if let (Some(customer), Some(balance)) = (&event.customer_id, balance) {
        store_balance(conn, customer, apply(balance, &event)).await?;
    }
    Ok(event)
}

async fn store_balance(
    conn: &mut AnyConnection,
    customer_id: &CustomerId,
    balance: Balance,
) -> Result<(), DbError> {
    sqlx::query(
        "UPDATE account_balances SET held_minor = $1, captured_minor = $2, last_seq = $3 \
         WHERE customer_id = $4",
    )
    .bind(balance.held_minor)
    .bind(balance.captured_minor)
    .bind(balance.last_seq)
    .bind(customer_id.as_str())
    .execute(conn)
    .await?;
    Ok(())
}
