//! Accounts, their balances, the per-order payment records, and the rebuild of the projection.

use std::collections::BTreeMap;

use contracts::domain::Money;
use contracts::domain::{CustomerId, OrderId};
use contracts::http::{AccountBalance, AccountUpsert, LedgerEntry, PaymentRecord, RebuildReport};
use platform::db::{Db, DbError, Dialect};
use sqlx::{AnyConnection, Row};

use crate::ledger::{self, Balance, LedgerEvent};
use crate::store::{self, corrupt};

/// Most accounts one `PUT /admin/accounts` may carry.
pub const MAX_UPSERT_BATCH: usize = 1_000;

/// Checks what serde cannot, before any transaction starts.
pub fn validate_upserts(items: &[AccountUpsert]) -> Result<(), String> {
    if items.is_empty() {
        return Err("no accounts given".into());
    }
    if items.len() > MAX_UPSERT_BATCH {
        return Err(format!(
            "{} accounts is more than {MAX_UPSERT_BATCH} per request",
            items.len()
        ));
    }
    let mut seen = std::collections::HashSet::new();
    for a in items {
        if !seen.insert(&a.customer_id) {
            return Err(format!("customer {} appears twice", a.customer_id));
        }
    }
    Ok(())
}

/// Creates accounts or changes their limits, all or none; returns them in request order.
///
/// Lowering a limit below what a customer already uses is allowed: it only declines their next
/// authorizations; nothing held or captured is touched.
pub async fn upsert(db: &Db, items: &[AccountUpsert]) -> Result<Vec<AccountBalance>, DbError> {
    let mut tx = db.begin().await?;
    let now = platform::now_ms();
    for a in items {
        sqlx::query(
            "INSERT INTO accounts (customer_id, credit_limit_minor, created_at_ms, updated_at_ms) \
             VALUES ($1, $2, $3, $3) \
             ON CONFLICT (customer_id) DO UPDATE \
               SET credit_limit_minor = excluded.credit_limit_minor, \
                   updated_at_ms = excluded.updated_at_ms",
        )
        .bind(a.customer_id.as_str())
        .bind(a.credit_limit_minor.minor())
        .bind(now)
        .execute(&mut *tx)
        .await?;
    }
    let all = account_balances(&mut tx).await?;
    tx.commit().await?;
    tracing::info!(accounts = items.len(), "accounts upserted");
    let mut by_id: BTreeMap<CustomerId, AccountBalance> = all
        .into_iter()
        .map(|a| (a.customer_id.clone(), a))
        .collect();
    items
        .iter()
        .map(|a| {
            by_id
                .remove(&a.customer_id)
                .ok_or_else(|| corrupt(format!("account {} vanished", a.customer_id)))
        })
        .collect()
}

/// Every account with its projected balance, sorted by customer id.
pub async fn accounts(db: &Db) -> Result<Vec<AccountBalance>, DbError> {
    let mut conn = db.pool().acquire().await?;
    account_balances(&mut conn).await
}

async fn account_balances(conn: &mut AnyConnection) -> Result<Vec<AccountBalance>, DbError> {
    let rows = sqlx::query(
        "SELECT a.customer_id, a.credit_limit_minor, b.held_minor, b.captured_minor \
         FROM accounts a LEFT JOIN account_balances b ON b.customer_id = a.customer_id",
    )
    .fetch_all(conn)
    .await?;
    let mut list = rows
        .iter()
        .map(|r| {
            let customer_id: String = r.try_get("customer_id")?;
            let held: Option<i64> = r.try_get("held_minor")?;
            let captured: Option<i64> = r.try_get("captured_minor")?;
            Ok(AccountBalance {
                customer_id: CustomerId::parse(customer_id).map_err(corrupt)?,
                credit_limit_minor: Money::from_minor(r.try_get("credit_limit_minor")?)
                    .map_err(corrupt)?,
                held_minor: held.unwrap_or(0),
                captured_minor: captured.unwrap_or(0),
            })
        })
        .collect::<Result<Vec<_>, DbError>>()?;
    // Sorted here so both dialects agree (Postgres would use its locale's collation).
    list.sort_by(|a, b| a.customer_id.cmp(&b.customer_id));
    Ok(list)
}

/// The ledger per order, sorted by order id: its entries and what it holds and captured now.
///
/// An order whose ledger is only a void tombstone names no customer (the void command carries
/// none) and moved no money; it is left out.
pub async fn payments(db: &Db, order_id: Option<OrderId>) -> Result<Vec<PaymentRecord>, DbError> {
    let mut conn = db.pool().acquire().await?;
    let events = store::events(&mut conn, order_id).await?;
    let mut by_order: BTreeMap<OrderId, Vec<LedgerEvent>> = BTreeMap::new();
    for e in events {
        by_order.entry(e.order_id).or_default().push(e);
    }
    Ok(by_order
        .into_iter()
        .filter_map(|(order_id, events)| {
            let customer_id = events.iter().find_map(|e| e.customer_id.clone())?;
            let totals = events.iter().fold(Balance::default(), ledger::apply);
            Some(PaymentRecord {
                order_id,
                customer_id,
                entries: events
                    .iter()
                    .map(|e| LedgerEntry {
                        seq: e.seq,
                        kind: e.kind,
                        amount_minor: e.amount_minor,
                        occurred_at_ms: e.occurred_at_ms,
                    })
                    .collect(),
                captured_minor: totals.captured_minor,
                held_minor: totals.held_minor,
            })
        })
        .collect())
}

async fn stored_balances(
    conn: &mut AnyConnection,
) -> Result<BTreeMap<CustomerId, Balance>, DbError> {
    let rows = sqlx::query(
        "SELECT customer_id, held_minor, captured_minor, last_seq FROM account_balances",
    )
    .fetch_all(conn)
    .await?;
    rows.iter()
        .map(|r| {
            let customer_id: String = r.try_get("customer_id")?;
            Ok((
                CustomerId::parse(customer_id).map_err(corrupt)?,
                Balance {
                    held_minor: r.try_get("held_minor")?,
                    captured_minor: r.try_get("captured_minor")?,
                    last_seq: r.try_get("last_seq")?,
                },
            ))
        })
        .collect()
}

/// Replays the whole ledger with [`ledger::apply`] into fresh balances, compares them with the
/// stored projection, and replaces the projection with the replay, in one transaction.
///
/// On Postgres both tables are locked against writers first (commands touch the balances before
/// they append, so none is caught half-way); on SQLite the write transaction is exclusive.
pub async fn rebuild(db: &Db) -> Result<RebuildReport, DbError> {
    let mut tx = db.begin().await?;
    if db.dialect() == Dialect::Postgres {
        sqlx::query("LOCK TABLE account_balances, payment_events IN SHARE ROW EXCLUSIVE MODE")
            .execute(&mut *tx)
            .await?;
    }
    let events = store::events(&mut tx, None).await?;
    let replayed = ledger::replay(&events);
    let stored = stored_balances(&mut tx).await?;
    let identical = replayed == stored;
    if !identical {
        let differing: Vec<String> = replayed
            .keys()
            .chain(stored.keys())
            .filter(|c| replayed.get(*c) != stored.get(*c))
            .map(|c| c.to_string())
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect();
        tracing::warn!(
            ?differing,
            "stored balances differ from the ledger; replacing them"
        );
    }
    sqlx::query("DELETE FROM account_balances")
        .execute(&mut *tx)
        .await?;
    for (customer, b) in &replayed {
        sqlx::query(
            "INSERT INTO account_balances (customer_id, held_minor, captured_minor, last_seq) \
             VALUES ($1, $2, $3, $4)",
        )
        .bind(customer.as_str())
        .bind(b.held_minor)
        .bind(b.captured_minor)
        .bind(b.last_seq)
        .execute(&mut *tx)
        .await?;
    }
    let accounts = account_balances(&mut tx).await?;
    tx.commit().await?;
    let events_replayed = i64::try_from(events.len()).unwrap_or(i64::MAX);
    tracing::info!(
        identical,
        events_replayed,
        "balances rebuilt from the ledger"
    );
    Ok(RebuildReport {
        identical,
        events_replayed,
        accounts,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn upsert(c: &str) -> AccountUpsert {
        AccountUpsert {
            customer_id: CustomerId::parse(c).unwrap(),
            credit_limit_minor: Money::from_minor(100).unwrap(),
        }
    }

    #[test]
    fn an_account_batch_is_not_empty_and_names_each_customer_once() {
        assert!(validate_upserts(&[]).is_err());
        assert!(validate_upserts(&[upsert("a"), upsert("b")]).is_ok());
        assert!(validate_upserts(&[upsert("a"), upsert("a")]).is_err_and(|e| e.contains("twice")));
    }
}
