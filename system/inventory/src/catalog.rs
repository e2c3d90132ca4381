//! Products and their stock counters: what the HTTP API reads and what operators change.
//!
//! Writes here never touch reservations; the saga's side of stock lives in
//! [`commands`](crate::commands). Both keep `received == available + reserved + sold`, and the
//! table's `CHECK` constraints refuse any write that would not.

use contracts::domain::{Money, Quantity, Sku};
use contracts::http::{Product, ProductUpsert, StockLevel};
use platform::db::{Db, DbError, Tx};
use sqlx::Row;
use sqlx::any::AnyRow;

/// Most products one `PUT /admin/products` may carry; seeding a larger catalog takes several calls.
pub const MAX_UPSERT_BATCH: usize = 1_000;
/// Upper bound of `available` in an upsert, far below where the counters could overflow.
pub const MAX_AVAILABLE: i64 = 1_000_000_000_000;
/// Longest product name, in characters (what JSON Schema's `maxLength` counts: the OpenAPI
/// document of `contracts::http::ProductUpsert` states these bounds too).
pub const MAX_NAME_LEN: usize = 200;

const STOCK_COLUMNS: &str = "sku, name, unit_price_minor, available, reserved, sold, received";

pub(crate) fn corrupt(what: impl std::fmt::Display) -> DbError {
    DbError::Corrupt(what.to_string())
}

pub(crate) fn parse_sku(s: String) -> Result<Sku, DbError> {
    Sku::parse(s).map_err(corrupt)
}

fn stock_level(row: &AnyRow) -> Result<StockLevel, DbError> {
    Ok(StockLevel {
        sku: parse_sku(row.try_get("sku")?)?,
        name: row.try_get("name")?,
        unit_price_minor: Money::from_minor(row.try_get("unit_price_minor")?).map_err(corrupt)?,
        available: row.try_get("available")?,
        reserved: row.try_get("reserved")?,
        sold: row.try_get("sold")?,
        received: row.try_get("received")?,
    })
}

fn to_product(s: StockLevel) -> Product {
    Product {
        sku: s.sku,
        name: s.name,
        unit_price_minor: s.unit_price_minor,
        available: s.available,
    }
}

/// Every product's stock, sorted by SKU. Sorted here rather than in SQL so both dialects agree
/// (Postgres would sort by its locale's collation).
pub async fn stock_levels(db: &Db) -> Result<Vec<StockLevel>, DbError> {
    let rows = sqlx::query(&format!("SELECT {STOCK_COLUMNS} FROM products"))
        .fetch_all(db.pool())
        .await?;
    let mut levels = rows
        .iter()
        .map(stock_level)
        .collect::<Result<Vec<_>, _>>()?;
    levels.sort_by(|a, b| a.sku.cmp(&b.sku));
    Ok(levels)
}

/// One product's stock, `None` when the SKU is unknown.
pub async fn stock_level_of(db: &Db, sku: &Sku) -> Result<Option<StockLevel>, DbError> {
    let row = sqlx::query(&format!(
        "SELECT {STOCK_COLUMNS} FROM products WHERE sku = $1"
    ))
    .bind(sku.as_str())
    .fetch_optional(db.pool())
    .await?;
    row.as_ref().map(stock_level).transpose()
}

/// The catalog as customers see it, sorted by SKU.
pub async fn products(db: &Db) -> Result<Vec<Product>, DbError> {
    Ok(stock_levels(db)
        .await?
        .into_iter()
        .map(to_product)
        .collect())
}

/// One product as customers see it.
pub async fn product(db: &Db, sku: &Sku) -> Result<Option<Product>, DbError> {
    Ok(stock_level_of(db, sku).await?.map(to_product))
}

/// Checks what serde cannot, before any transaction starts: names, bounds, each SKU once.
pub fn validate_upserts(items: &[ProductUpsert]) -> Result<(), String> {
    if items.is_empty() {
        return Err("no products given".into());
    }
    if items.len() > MAX_UPSERT_BATCH {
        return Err(format!(
            "{} products is more than {MAX_UPSERT_BATCH} per request",
            items.len()
        ));
    }
    let mut seen = std::collections::HashSet::new();
    for p in items {
        if !seen.insert(&p.sku) {
            return Err(format!("sku {} appears twice", p.sku));
        }
        if p.name.trim().is_empty() {
            return Err(format!("sku {}: name must not be empty", p.sku));
        }
        if p.name.chars().count() > MAX_NAME_LEN {
            return Err(format!(
                "sku {}: name is longer than {MAX_NAME_LEN} characters",
                p.sku
            ));
        }
        // A NUL is refused by Postgres' text type (a 500 there), and no control character
        // belongs in a name a page or a log line shows.
        if let Some(c) = p.name.chars().find(|c| c.is_control()) {
            return Err(format!(
                "sku {}: name contains the control character {c:?}",
                p.sku
            ));
        }
        if p.available < 0 {
            return Err(format!(
                "sku {}: available {} would make stock negative",
                p.sku, p.available
            ));
        }
        if p.available > MAX_AVAILABLE {
            return Err(format!(
                "sku {}: available {} is more than {MAX_AVAILABLE}",
                p.sku, p.available
            ));
        }
    }
    Ok(())
}

/// Creates or updates products, all or none, and returns their stock in request order.
///
/// Creating sets `available` and `received`. Updating sets name and price and, when `available`
/// differs, moves `available` and `received` by the same difference, so reserved and sold units
/// are untouched and conservation still holds. Call [`validate_upserts`] first.
pub async fn upsert(db: &Db, items: &[ProductUpsert]) -> Result<Vec<StockLevel>, DbError> {
    let mut tx = db.begin().await?;
    let now = platform::now_ms();
    for p in items {
        let current: Option<i64> = sqlx::query(&format!(
            "SELECT available FROM products WHERE sku = $1{}",
            db.for_update()
        ))
        .bind(p.sku.as_str())
        .fetch_optional(&mut *tx)
        .await?
        .map(|r| r.try_get("available"))
        .transpose()?;
        match current {
            None => {
                let inserted = sqlx::query(
                    "INSERT INTO products \
                       (sku, name, unit_price_minor, available, reserved, sold, received, updated_at_ms) \
                     VALUES ($1, $2, $3, $4, 0, 0, $4, $5) ON CONFLICT (sku) DO NOTHING",
                )
                .bind(p.sku.as_str())
                .bind(p.name.trim())
                .bind(p.unit_price_minor.minor())
                .bind(p.available)
                .bind(now)
                .execute(&mut *tx)
                .await?;
                if inserted.rows_affected() != 1 {
                    // Another instance created the SKU since our read; the retry sees it.
                    return Err(DbError::Conflict(format!("product {}", p.sku)));
                }
            }
            Some(available) => {
                let delta = p.available - available;
                sqlx::query(
                    "UPDATE products SET name = $1, unit_price_minor = $2, available = $3, \
                       received = received + $4, updated_at_ms = $5 \
                     WHERE sku = $6",
                )
                .bind(p.name.trim())
                .bind(p.unit_price_minor.minor())
                .bind(p.available)
                .bind(delta)
                .bind(now)
                .bind(p.sku.as_str())
                .execute(&mut *tx)
                .await?;
            }
        }
    }
    let mut levels = Vec::with_capacity(items.len());
    for p in items {
        levels.push(stock_level_in(&mut tx, &p.sku).await?.ok_or_else(|| {
            corrupt(format!(
                "product {} vanished inside its own transaction",
                p.sku
            ))
        })?);
    }
    tx.commit().await?;
    tracing::info!(products = items.len(), "catalog upserted");
    Ok(levels)
}

/// Adds `quantity` units to `available` and `received`; `None` when the SKU is unknown.
pub async fn restock(
    db: &Db,
    sku: &Sku,
    quantity: Quantity,
) -> Result<Option<StockLevel>, DbError> {
    let mut tx = db.begin().await?;
    let updated = sqlx::query(
        "UPDATE products SET available = available + $1, received = received + $1, \
           updated_at_ms = $2 \
         WHERE sku = $3",
    )
    .bind(quantity.get())
    .bind(platform::now_ms())
    .bind(sku.as_str())
    .execute(&mut *tx)
    .await?;
    if updated.rows_affected() == 0 {
        return Ok(None);
    }
    let level = stock_level_in(&mut tx, sku).await?;
    tx.commit().await?;
    tracing::info!(%sku, quantity = quantity.get(), "restocked");
    Ok(level)
}

async fn stock_level_in(tx: &mut Tx, sku: &Sku) -> Result<Option<StockLevel>, DbError> {
    let row = sqlx::query(&format!(
        "SELECT {STOCK_COLUMNS} FROM products WHERE sku = $1"
    ))
    .bind(sku.as_str())
    .fetch_optional(&mut **tx)
    .await?;
    row.as_ref().map(stock_level).transpose()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(sku: &str, name: &str, available: i64) -> ProductUpsert {
        ProductUpsert {
            sku: Sku::parse(sku).unwrap(),
            name: name.into(),
            unit_price_minor: Money::from_minor(100).unwrap(),
            available,
        }
    }

    #[test]
    fn an_upsert_batch_needs_names_non_negative_stock_and_each_sku_once() {
        assert!(validate_upserts(&[]).is_err());
        assert!(validate_upserts(&[item("A", "a", 1), item("B", "b", 0)]).is_ok());
        let dup = validate_upserts(&[item("A", "a", 1), item("A", "b", 2)]);
        assert!(dup.is_err_and(|e| e.contains("twice")));
        let negative = validate_upserts(&[item("A", "a", -1)]);
        assert!(negative.is_err_and(|e| e.contains("negative")));
        assert!(validate_upserts(&[item("A", "  ", 1)]).is_err());
        assert!(validate_upserts(&[item("A", "a", MAX_AVAILABLE + 1)]).is_err());
    }

    #[test]
    fn a_name_is_measured_in_characters_and_has_no_control_characters() {
        let long = "é".repeat(MAX_NAME_LEN);
        assert!(
            validate_upserts(&[item("A", &long, 1)]).is_ok(),
            "400 bytes, 200 characters"
        );
        let longer = format!("{long}é");
        assert!(validate_upserts(&[item("A", &longer, 1)]).is_err());
        let nul = validate_upserts(&[item("A", "a\u{0}b", 1)]);
        assert!(nul.is_err_and(|e| e.contains("control character")));
    }
}
