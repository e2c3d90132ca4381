//! JSON bodies of the HTTP APIs. Paths are the services' own; the gateway serves the same paths
//! under `/api`.
//!
//! | path | who | body |
//! |---|---|---|
//! | `GET /products`, `GET /products/{sku}` | anyone | [`Product`] |
//! | `PUT /admin/products` | admin | `Vec<ProductUpsert>` → `Vec<StockLevel>` |
//! | `POST /admin/products/{sku}/restock` | admin | [`RestockRequest`] → [`StockLevel`] |
//! | `GET /admin/stock` | admin | `Vec<StockLevel>` |
//! | `GET /admin/reservations` | admin | `Vec<Reservation>` |
//! | `POST /orders` (`Idempotency-Key`) | customer | [`PlaceOrderRequest`] → [`OrderView`] |
//! | `GET /orders`, `GET /orders/{id}` | customer (own) or admin | [`OrderView`] |
//! | `GET /admin/orders` | admin | `Vec<AdminOrder>` |
//! | `PUT /admin/accounts` | admin | `Vec<AccountUpsert>` → `Vec<AccountBalance>` |
//! | `GET /admin/accounts` | admin | `Vec<AccountBalance>` |
//! | `GET /admin/payments[?order_id=]` | admin | `Vec<PaymentRecord>` |
//! | `POST /admin/accounts/rebuild` | admin | [`RebuildReport`] |
//!
//! Every error is an [`ErrorBody`].

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::domain::{CustomerId, InvalidValue, Money, OrderId, OrderStatus, Quantity, Sku};

/// One line of an order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct OrderLine {
    pub sku: Sku,
    pub quantity: Quantity,
}

/// A line with the price the inventory service charged for it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct PricedLine {
    pub sku: Sku,
    pub quantity: Quantity,
    pub unit_price_minor: Money,
}

/// `POST /orders`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PlaceOrderRequest {
    /// Each SKU at most once.
    #[schema(min_items = 1, max_items = 50)]
    pub items: Vec<OrderLine>,
}

impl PlaceOrderRequest {
    pub const MAX_LINES: usize = 50;

    /// Checks what serde cannot: at least one line, not too many, each SKU once.
    pub fn validate(&self) -> Result<(), InvalidValue> {
        let invalid = |reason: String| InvalidValue {
            what: "order",
            reason,
        };
        if self.items.is_empty() {
            return Err(invalid("items must not be empty".into()));
        }
        if self.items.len() > Self::MAX_LINES {
            return Err(invalid(format!(
                "{} lines is more than {}",
                self.items.len(),
                Self::MAX_LINES
            )));
        }
        let mut seen = std::collections::HashSet::new();
        for line in &self.items {
            if !seen.insert(&line.sku) {
                return Err(invalid(format!("sku {} appears twice", line.sku)));
            }
        }
        Ok(())
    }
}

/// An order as customers see it (the CQRS read model serves this).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct OrderView {
    pub order_id: OrderId,
    pub customer_id: CustomerId,
    pub status: OrderStatus,
    pub items: Vec<OrderLine>,
    /// Known once the inventory service has priced the order.
    pub total_minor: Option<Money>,
    /// Why an order was rejected or cancelled.
    pub reason: Option<String>,
    pub created_at_ms: i64,
    pub updated_at_ms: i64,
}

/// The saga behind an order, for operators.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct SagaView {
    /// The step the saga waits on, e.g. `RESERVING_STOCK`, or `DONE`.
    pub step: String,
    /// How many times the current step's command has been sent.
    pub attempts: i64,
    /// When the current step times out (unix ms), if it can.
    pub deadline_at_ms: Option<i64>,
    pub last_error: Option<String>,
    pub version: i64,
}

/// `GET /admin/orders`: the write model, its saga, and what the read model says.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct AdminOrder {
    pub order: OrderView,
    pub saga: SagaView,
    /// The read model's copy of the order, `None` if the projection has not seen it yet.
    pub view: Option<OrderView>,
}

/// A catalog entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Product {
    pub sku: Sku,
    pub name: String,
    pub unit_price_minor: Money,
    pub available: i64,
}

/// `PUT /admin/products`: create a product or overwrite its name, price and available stock.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ProductUpsert {
    pub sku: Sku,
    /// Not blank, no control characters. The bounds are the inventory service's
    /// (`catalog::validate_upserts`).
    #[schema(
        min_length = 1,
        max_length = 200,
        pattern = r"^[^\u0000-\u001F\u007F-\u009F]*[^\s\u0000-\u001F\u007F-\u009F][^\u0000-\u001F\u007F-\u009F]*$"
    )]
    pub name: String,
    pub unit_price_minor: Money,
    #[schema(minimum = 0, maximum = 1_000_000_000_000_i64)]
    #[serde(deserialize_with = "crate::domain::integer")]
    pub available: i64,
}

/// `POST /admin/products/{sku}/restock`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RestockRequest {
    pub quantity: Quantity,
}

/// Stock of one SKU. `received` counts every unit that ever came in (seeding and restocks), so
/// conservation reads `received == available + reserved + sold`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct StockLevel {
    pub sku: Sku,
    pub name: String,
    pub unit_price_minor: Money,
    pub available: i64,
    pub reserved: i64,
    pub sold: i64,
    pub received: i64,
}

/// Status of a stock reservation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ReservationStatus {
    Reserved,
    Rejected,
    Released,
    Committed,
}

/// `GET /admin/reservations`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Reservation {
    pub order_id: OrderId,
    pub status: ReservationStatus,
    pub lines: Vec<OrderLine>,
}

/// `PUT /admin/accounts`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AccountUpsert {
    pub customer_id: CustomerId,
    pub credit_limit_minor: Money,
}

/// A customer's account: the projection of the payment ledger.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct AccountBalance {
    pub customer_id: CustomerId,
    pub credit_limit_minor: Money,
    /// Authorized and neither captured nor voided yet.
    pub held_minor: i64,
    pub captured_minor: i64,
}

/// Kinds of payment ledger entries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum LedgerEntryKind {
    Authorized,
    Declined,
    Captured,
    Voided,
}

/// One event of the append-only payment ledger.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct LedgerEntry {
    pub seq: i64,
    pub kind: LedgerEntryKind,
    pub amount_minor: i64,
    pub occurred_at_ms: i64,
}

/// The ledger of one order's payment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct PaymentRecord {
    pub order_id: OrderId,
    pub customer_id: CustomerId,
    pub entries: Vec<LedgerEntry>,
    /// Captured minus refunded: what the customer paid in the end.
    pub captured_minor: i64,
    /// Authorized and still held.
    pub held_minor: i64,
}

/// `POST /admin/accounts/rebuild`: the balances replayed from the ledger, and whether they equal
/// the projection that was there before.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct RebuildReport {
    pub identical: bool,
    pub events_replayed: i64,
    pub accounts: Vec<AccountBalance>,
}

/// The body of every error response.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ErrorDetail {
    /// A stable machine-readable code, e.g. `validation`, `unauthorized`, `not_found`.
    pub code: String,
    pub message: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(sku: &str, q: i64) -> serde_json::Value {
        serde_json::json!({"sku": sku, "quantity": q})
    }

    #[test]
    fn an_order_needs_lines_and_each_sku_once() {
        let empty: PlaceOrderRequest = serde_json::from_value(serde_json::json!({"items": []}))
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(empty.validate().is_err());
        let dup: PlaceOrderRequest =
            serde_json::from_value(serde_json::json!({"items": [line("A", 1), line("A", 2)]}))
                .unwrap_or_else(|e| panic!("{e}"));
        assert!(dup.validate().is_err_and(|e| e.reason.contains("twice")));
        let ok: PlaceOrderRequest =
            serde_json::from_value(serde_json::json!({"items": [line("A", 1), line("B", 2)]}))
                .unwrap_or_else(|e| panic!("{e}"));
        assert!(ok.validate().is_ok());
    }

    #[test]
    fn a_zero_quantity_or_unknown_field_is_refused_when_parsing() {
        let zero = serde_json::from_value::<PlaceOrderRequest>(
            serde_json::json!({"items": [line("A", 0)]}),
        );
        assert!(zero.is_err());
        let extra = serde_json::from_value::<PlaceOrderRequest>(
            serde_json::json!({"items": [line("A", 1)], "coupon": "x"}),
        );
        assert!(extra.is_err());
    }
}
