//! What the checks read: the load generator's [`History`] and the system's [`Snapshot`].

use std::collections::BTreeMap;

use contracts::domain::{CustomerId, OrderId, OrderStatus, Sku};
use contracts::http::{
    AccountBalance, AdminOrder, LedgerEntry, LedgerEntryKind, OrderLine, OrderView, PaymentRecord,
    Reservation, StockLevel,
};
use serde::{Deserialize, Serialize};

/// What the harness knows without asking the system: what it seeded, and what its clients sent
/// and saw. Every `POST /api/orders` the load generator sent is in `attempts`, in the order it
/// sent them (a retry comes after the attempt it retries).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct History {
    pub attempts: Vec<OrderAttempt>,
    /// The catalog and accounts the harness seeded. `None` when the load did not know them; the
    /// money and stock checks then fail as `could_not_verify`.
    #[serde(default)]
    pub seed: Option<Seeded>,
    /// Every `POST /api/admin/products/{sku}/restock` the load generator sent.
    #[serde(default)]
    pub restocks: Vec<Restock>,
    /// Terminal statuses clients were shown (`GET /api/orders/{id}`, and the read model's copy
    /// while the pending orders are followed after the load): the first one of each order, and
    /// any later one that differed from it.
    #[serde(default)]
    pub observed: Vec<Observed>,
}

/// The seed, as the harness applied it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Seeded {
    pub products: BTreeMap<Sku, SeededProduct>,
    /// Credit limit per customer, in minor units.
    pub credit_limits: BTreeMap<CustomerId, i64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct SeededProduct {
    pub unit_price_minor: i64,
    pub initial_stock: i64,
}

impl Seeded {
    /// Σ seeded unit price × quantity; `None` when a line's SKU was not seeded.
    pub fn total(&self, lines: &[OrderLine]) -> Option<i64> {
        lines.iter().try_fold(0i64, |sum, l| {
            let p = self.products.get(&l.sku)?;
            Some(sum.saturating_add(p.unit_price_minor.saturating_mul(l.quantity.get())))
        })
    }
}

/// A restock the load generator sent, and whether it took effect as far as the client can
/// tell.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Restock {
    pub sku: Sku,
    pub quantity: i64,
    pub outcome: Completion,
}

/// How a request ended for the client, as in a Jepsen history: `ok` it took effect, `fail` it
/// certainly did not (4xx, 503, 429), `info` nobody knows (no answer, 500, 502, 504).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Completion {
    Ok,
    Fail,
    Info,
}

impl Completion {
    /// `status` 0 means no answer came.
    pub fn of_status(status: u16) -> Self {
        match status {
            200..=299 => Self::Ok,
            0 | 500 | 502 | 504 => Self::Info,
            _ => Self::Fail,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ok => "ok",
            Self::Fail => "fail",
            Self::Info => "info",
        }
    }
}

/// A terminal status a client was shown for an order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Observed {
    pub order_id: OrderId,
    pub status: OrderStatus,
    /// Milliseconds since the load started, on the harness's clock.
    pub at_ms: u64,
}

/// One `POST /api/orders`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderAttempt {
    pub customer_id: CustomerId,
    /// The `Idempotency-Key` header; retries of one logical order send the same key. Without a
    /// key, an attempt is a sequence of its own.
    pub idempotency_key: Option<String>,
    pub lines: Vec<OrderLine>,
    #[serde(flatten)]
    pub outcome: AttemptOutcome,
}

/// What the load generator learnt from one attempt.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum AttemptOutcome {
    /// A 2xx naming the order. `replayed` when the answer carried `Idempotent-Replayed`: the
    /// stored response to an earlier attempt with the same key.
    Acknowledged { order_id: OrderId, replayed: bool },
    /// An error status. 4xx, 429 and 503 are definite: nothing was created. 500, 502 and 504
    /// are not (the service may have committed before the answer was lost), and the checks
    /// treat them like [`AttemptOutcome::Unknown`].
    Failed { status: u16 },
    /// No answer (timeout, connection reset) or an unreadable one: the order may or may not
    /// exist.
    Unknown { error: String },
}

impl AttemptOutcome {
    /// Classifies an HTTP answer to `POST /api/orders` (the body of a 2xx is an [`OrderView`]).
    pub fn from_answer(status: u16, body: &str, replayed: bool) -> Self {
        if !(200..300).contains(&status) {
            return Self::Failed { status };
        }
        match serde_json::from_str::<OrderView>(body) {
            Ok(view) => Self::Acknowledged {
                order_id: view.order_id,
                replayed,
            },
            Err(e) => Self::Unknown {
                error: format!("{status} with an unreadable body: {e}"),
            },
        }
    }

    pub fn acknowledged(&self) -> Option<OrderId> {
        match self {
            Self::Acknowledged { order_id, .. } => Some(*order_id),
            _ => None,
        }
    }

    /// `acknowledged order ...`, `answered 504`, `no answer: connection reset`.
    pub fn describe(&self) -> String {
        match self {
            Self::Acknowledged { order_id, replayed } => format!(
                "acknowledged order {order_id}{}",
                if *replayed { " (replayed)" } else { "" }
            ),
            Self::Failed { status } => format!("answered {status}"),
            Self::Unknown { error } => format!("no answer: {error}"),
        }
    }

    /// The order may exist although nobody acknowledged it.
    pub fn is_indeterminate(&self) -> bool {
        match self {
            Self::Acknowledged { .. } => false,
            Self::Failed { status } => matches!(status, 500 | 502 | 504),
            Self::Unknown { .. } => true,
        }
    }
}

/// A message the consumers gave up on, read back from a `<topic>.dlq` topic.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeadLetter {
    /// The dead-letter topic, e.g. `payment.commands.dlq`.
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    pub key: Option<String>,
    /// The consumer's reason (the `dlq-error` header).
    pub error: String,
}

/// The system as the admin endpoints show it, taken after convergence.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Snapshot {
    pub orders: Vec<AdminOrder>,
    /// `received` counts every unit that came in (seed and restocks), so it already is the
    /// "initial" side of conservation.
    pub stock: Vec<StockLevel>,
    pub reservations: Vec<Reservation>,
    pub payments: Vec<PaymentRecord>,
    pub accounts: Vec<AccountBalance>,
    /// Not read through the API: the caller consumes the `*.dlq` topics and fills this in.
    pub dead_letters: Vec<DeadLetter>,
    /// Whether `dead_letters` is every message of every dead-letter partition.
    #[serde(default)]
    pub dead_letters_read: Coverage,
    /// The rows of the read model, listed apart from `orders` (whose `view` shows only the
    /// views of orders that exist), so that a view without an order is found. Filled in by the
    /// caller ([`read_model`](super::collect::read_model)).
    #[serde(default)]
    pub views: Vec<OrderView>,
    /// Whether `views` is every row of the read model.
    #[serde(default)]
    pub views_read: Coverage,
}

/// Whether a list the checks read is known to be whole. A check never passes on a list that is
/// not: each gap is a `could_not_verify` violation.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "coverage", rename_all = "snake_case")]
pub enum Coverage {
    /// Nobody read it.
    #[default]
    NotRead,
    /// Read to its end.
    Complete,
    /// Read, with the parts that could not be.
    Incomplete { gaps: Vec<Gap> },
}

/// A part of the evidence that could not be read: `what` names it (`payment.commands.dlq/0`),
/// `details` says how far the reading got and why it stopped.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Gap {
    pub what: String,
    pub details: String,
}

/// The money side of one order: every payment record of the order merged (there should be one).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct OrderMoney<'a> {
    pub customer_id: &'a CustomerId,
    pub records: usize,
    pub entries: Vec<&'a LedgerEntry>,
    pub captured_minor: i64,
    pub held_minor: i64,
}

impl OrderMoney<'_> {
    pub fn of_kind(&self, kind: LedgerEntryKind) -> impl Iterator<Item = &LedgerEntry> {
        self.entries.iter().copied().filter(move |e| e.kind == kind)
    }

    pub fn count(&self, kind: LedgerEntryKind) -> usize {
        self.of_kind(kind).count()
    }

    pub fn moves_money(&self) -> bool {
        self.captured_minor != 0 || self.held_minor != 0
    }

    /// `captured 500, held 0 (AUTHORIZED 500, CAPTURED 500)`.
    pub fn describe(&self) -> String {
        let entries: Vec<String> = self
            .entries
            .iter()
            .map(|e| format!("{} {}", kind_name(e.kind), e.amount_minor))
            .collect();
        format!(
            "captured {}, held {} ({})",
            self.captured_minor,
            self.held_minor,
            entries.join(", ")
        )
    }
}

pub(crate) fn kind_name(kind: LedgerEntryKind) -> &'static str {
    match kind {
        LedgerEntryKind::Authorized => "AUTHORIZED",
        LedgerEntryKind::Declined => "DECLINED",
        LedgerEntryKind::Captured => "CAPTURED",
        LedgerEntryKind::Voided => "VOIDED",
    }
}

/// The snapshot keyed by order id, built once per check. Where a list holds an order twice
/// (which [`idempotency`](super::idempotency) reports), the first order row wins and money and
/// reservations are merged or kept together, so no check loses sight of the extra one.
pub(crate) struct Index<'a> {
    pub orders: BTreeMap<OrderId, &'a AdminOrder>,
    pub money: BTreeMap<OrderId, OrderMoney<'a>>,
    pub reservations: BTreeMap<OrderId, Vec<&'a Reservation>>,
}

impl<'a> Index<'a> {
    pub fn new(snapshot: &'a Snapshot) -> Self {
        let mut orders = BTreeMap::new();
        for o in &snapshot.orders {
            orders.entry(o.order.order_id).or_insert(o);
        }
        let mut money: BTreeMap<OrderId, OrderMoney<'a>> = BTreeMap::new();
        for p in &snapshot.payments {
            let m = money.entry(p.order_id).or_insert_with(|| OrderMoney {
                customer_id: &p.customer_id,
                records: 0,
                entries: Vec::new(),
                captured_minor: 0,
                held_minor: 0,
            });
            m.records += 1;
            m.entries.extend(&p.entries);
            m.captured_minor = m.captured_minor.saturating_add(p.captured_minor);
            m.held_minor = m.held_minor.saturating_add(p.held_minor);
        }
        for m in money.values_mut() {
            m.entries.sort_by_key(|e| e.seq);
        }
        let mut reservations: BTreeMap<OrderId, Vec<&'a Reservation>> = BTreeMap::new();
        for r in &snapshot.reservations {
            reservations.entry(r.order_id).or_default().push(r);
        }
        Self {
            orders,
            money,
            reservations,
        }
    }

    pub fn money(&self, id: OrderId) -> Option<&OrderMoney<'a>> {
        self.money.get(&id)
    }

    pub fn reservations(&self, id: OrderId) -> &[&'a Reservation] {
        self.reservations.get(&id).map(Vec::as_slice).unwrap_or(&[])
    }
}

/// The lines the client sent for each acknowledged order (the first attempt that named it).
pub(crate) fn sent_lines(history: &History) -> BTreeMap<OrderId, &[OrderLine]> {
    let mut out = BTreeMap::new();
    for a in &history.attempts {
        if let Some(id) = a.outcome.acknowledged() {
            out.entry(id).or_insert(a.lines.as_slice());
        }
    }
    out
}

/// The lines a client sent for `order`: the acknowledged attempt's, or, for an order nobody
/// acknowledged, its own (such an order is either explained by an unanswered attempt with exactly
/// these lines, or reported `unexpected` by [`no_lost_orders`](super::no_lost_orders)).
pub(crate) fn lines_of<'a>(
    sent: &BTreeMap<OrderId, &'a [OrderLine]>,
    order: &'a AdminOrder,
) -> &'a [OrderLine] {
    sent.get(&order.order.order_id)
        .copied()
        .unwrap_or(&order.order.items)
}

/// `key "k1"`, or `no key`.
pub(crate) fn describe_key(key: Option<&str>) -> String {
    match key {
        Some(k) => format!("key {k:?}"),
        None => "no key".to_string(),
    }
}

/// `SKU-A×2, SKU-B×1`, sorted by SKU.
pub(crate) fn describe_lines(lines: &[OrderLine]) -> String {
    let mut lines: Vec<&OrderLine> = lines.iter().collect();
    lines.sort_by(|a, b| a.sku.cmp(&b.sku));
    let parts: Vec<String> = lines
        .iter()
        .map(|l| format!("{}×{}", l.sku, l.quantity.get()))
        .collect();
    parts.join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_2xx_with_an_order_is_acknowledged_and_a_gateway_timeout_is_indeterminate() {
        let id = OrderId::new();
        let body = serde_json::json!({
            "order_id": id, "customer_id": "cust-1", "status": "PENDING", "items": [],
            "total_minor": null, "reason": null, "created_at_ms": 1, "updated_at_ms": 1
        })
        .to_string();

        let ok = AttemptOutcome::from_answer(201, &body, true);
        assert_eq!(
            ok,
            AttemptOutcome::Acknowledged {
                order_id: id,
                replayed: true
            }
        );
        assert!(!ok.is_indeterminate());
        assert!(AttemptOutcome::from_answer(504, "", false).is_indeterminate());
        assert!(AttemptOutcome::from_answer(201, "<html>", false).is_indeterminate());
        assert!(!AttemptOutcome::from_answer(422, "{}", false).is_indeterminate());
        assert!(!AttemptOutcome::from_answer(503, "{}", false).is_indeterminate());
    }

    #[test]
    fn an_attempt_serializes_with_its_outcome_inline() {
        let attempt = OrderAttempt {
            customer_id: CustomerId::parse("cust-1").unwrap(),
            idempotency_key: Some("k1".into()),
            lines: Vec::new(),
            outcome: AttemptOutcome::Failed { status: 503 },
        };
        let json = serde_json::to_value(&attempt).unwrap();
        assert_eq!(json["outcome"], "failed");
        assert_eq!(json["status"], 503);
        let back: OrderAttempt = serde_json::from_value(json).unwrap();
        assert_eq!(back, attempt);
    }
}
