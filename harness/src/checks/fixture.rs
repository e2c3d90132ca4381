//! A hand-built, consistent world for the checkers' tests: each helper records one `POST` in the
//! history and everything the system would hold for it afterwards, so a test starts clean and
//! breaks exactly one thing.

use contracts::domain::{CustomerId, Money, OrderId, OrderStatus, Quantity, Sku};
use contracts::http::{
    AccountBalance, AdminOrder, LedgerEntry, LedgerEntryKind, OrderLine, OrderView, PaymentRecord,
    Reservation, ReservationStatus, SagaView, StockLevel,
};

use super::model::{
    AttemptOutcome, Completion, Coverage, History, Observed, OrderAttempt, Restock, Seeded,
    SeededProduct, Snapshot,
};

pub fn sku(s: &str) -> Sku {
    Sku::parse(s).unwrap()
}

pub fn customer(s: &str) -> CustomerId {
    CustomerId::parse(s).unwrap()
}

pub fn lines(spec: &[(&str, i64)]) -> Vec<OrderLine> {
    spec.iter()
        .map(|(s, q)| OrderLine {
            sku: sku(s),
            quantity: Quantity::new(*q).unwrap(),
        })
        .collect()
}

pub struct World {
    pub history: History,
    pub snapshot: Snapshot,
    clock: i64,
}

impl World {
    /// Two products (SKU-A at 2.50, 100 units; SKU-B at 10.00, 10 units) and three customers
    /// with a limit of 10 000.00, seeded; both the dead-letter topics and the read model read to
    /// their end.
    pub fn new() -> Self {
        let product = |s: &str, price: i64, units: i64| StockLevel {
            sku: sku(s),
            name: s.into(),
            unit_price_minor: Money::from_minor(price).unwrap(),
            available: units,
            reserved: 0,
            sold: 0,
            received: units,
        };
        let account = |c: &str| AccountBalance {
            customer_id: customer(c),
            credit_limit_minor: Money::from_minor(1_000_000).unwrap(),
            held_minor: 0,
            captured_minor: 0,
        };
        let snapshot = Snapshot {
            stock: vec![product("SKU-A", 250, 100), product("SKU-B", 1000, 10)],
            accounts: vec![account("cust-1"), account("cust-2"), account("cust-3")],
            dead_letters_read: Coverage::Complete,
            views_read: Coverage::Complete,
            ..Snapshot::default()
        };
        let seed = Seeded {
            products: snapshot
                .stock
                .iter()
                .map(|s| {
                    let p = SeededProduct {
                        unit_price_minor: s.unit_price_minor.minor(),
                        initial_stock: s.received,
                    };
                    (s.sku.clone(), p)
                })
                .collect(),
            credit_limits: snapshot
                .accounts
                .iter()
                .map(|a| (a.customer_id.clone(), a.credit_limit_minor.minor()))
                .collect(),
        };
        Self {
            history: History {
                seed: Some(seed),
                ..History::default()
            },
            snapshot,
            clock: 1_000,
        }
    }

    /// A restock the load sent: `ok` and `info` ones took effect in the system (an `info` one
    /// whose answer was lost), `fail` ones did not.
    pub fn restock(&mut self, s: &str, quantity: i64, outcome: Completion) {
        if outcome != Completion::Fail {
            let level = self.stock_mut(s);
            level.available += quantity;
            level.received += quantity;
        }
        self.history.restocks.push(Restock {
            sku: sku(s),
            quantity,
            outcome,
        });
    }

    /// A client was shown the order's present status.
    pub fn observe(&mut self, id: OrderId) {
        let status = self.order(id).order.status;
        self.clock += 1;
        self.history.observed.push(Observed {
            order_id: id,
            status,
            at_ms: self.clock as u64,
        });
    }

    fn total(&self, items: &[OrderLine]) -> i64 {
        items
            .iter()
            .map(|l| {
                let price = self
                    .snapshot
                    .stock
                    .iter()
                    .find(|s| s.sku == l.sku)
                    .map_or(0, |s| s.unit_price_minor.minor());
                price * l.quantity.get()
            })
            .sum()
    }

    /// An acknowledged order in `status`, its saga DONE and its view equal to it.
    fn place(
        &mut self,
        who: &str,
        key: &str,
        spec: &[(&str, i64)],
        status: OrderStatus,
        priced: bool,
        reason: Option<&str>,
    ) -> OrderId {
        let order_id = OrderId::new();
        let items = lines(spec);
        self.clock += 10;
        let order = OrderView {
            order_id,
            customer_id: customer(who),
            status,
            total_minor: priced.then(|| Money::from_minor(self.total(&items)).unwrap()),
            items: items.clone(),
            reason: reason.map(str::to_string),
            created_at_ms: self.clock,
            updated_at_ms: self.clock + 5,
        };
        self.snapshot.views.push(order.clone());
        self.snapshot.orders.push(AdminOrder {
            view: Some(order.clone()),
            order,
            saga: SagaView {
                step: "DONE".into(),
                attempts: 1,
                deadline_at_ms: None,
                last_error: None,
                version: 4,
            },
        });
        self.history.attempts.push(OrderAttempt {
            customer_id: customer(who),
            idempotency_key: Some(key.into()),
            lines: items,
            outcome: AttemptOutcome::Acknowledged {
                order_id,
                replayed: false,
            },
        });
        order_id
    }

    fn reserve(&mut self, order_id: OrderId, spec: &[(&str, i64)], status: ReservationStatus) {
        for (s, q) in spec {
            let level = self.stock_mut(s);
            match status {
                ReservationStatus::Committed => {
                    level.available -= q;
                    level.sold += q;
                }
                ReservationStatus::Reserved => {
                    level.available -= q;
                    level.reserved += q;
                }
                ReservationStatus::Released | ReservationStatus::Rejected => {}
            }
        }
        let held_lines = if status == ReservationStatus::Rejected {
            Vec::new()
        } else {
            lines(spec)
        };
        self.snapshot.reservations.push(Reservation {
            order_id,
            status,
            lines: held_lines,
        });
    }

    fn pay(&mut self, order_id: OrderId, who: &str, kinds: &[LedgerEntryKind]) {
        let amount = self.order(order_id).order.total_minor.unwrap().minor();
        let (mut held, mut captured) = (0, 0);
        let mut entries = Vec::new();
        for kind in kinds {
            self.clock += 1;
            match kind {
                LedgerEntryKind::Authorized => held += amount,
                LedgerEntryKind::Captured => {
                    held -= amount;
                    captured += amount;
                }
                LedgerEntryKind::Voided => held -= amount,
                LedgerEntryKind::Declined => {}
            }
            entries.push(LedgerEntry {
                seq: self.clock,
                kind: *kind,
                amount_minor: amount,
                occurred_at_ms: self.clock,
            });
        }
        self.snapshot.payments.push(PaymentRecord {
            order_id,
            customer_id: customer(who),
            entries,
            captured_minor: captured,
            held_minor: held,
        });
        let account = self
            .snapshot
            .accounts
            .iter_mut()
            .find(|a| a.customer_id.as_str() == who)
            .unwrap();
        account.captured_minor += captured;
        account.held_minor += held;
    }

    pub fn confirmed(&mut self, who: &str, key: &str, spec: &[(&str, i64)]) -> OrderId {
        let id = self.place(who, key, spec, OrderStatus::Confirmed, true, None);
        self.reserve(id, spec, ReservationStatus::Committed);
        self.pay(
            id,
            who,
            &[LedgerEntryKind::Authorized, LedgerEntryKind::Captured],
        );
        id
    }

    /// Out of stock: the inventory rejected it before any payment.
    pub fn rejected(&mut self, who: &str, key: &str, spec: &[(&str, i64)]) -> OrderId {
        let reason = Some("insufficient stock");
        let id = self.place(who, key, spec, OrderStatus::Rejected, false, reason);
        self.reserve(id, spec, ReservationStatus::Rejected);
        id
    }

    /// Stock reserved, payment declined, stock released: compensated.
    pub fn declined(&mut self, who: &str, key: &str, spec: &[(&str, i64)]) -> OrderId {
        let reason = Some("credit limit exceeded");
        let id = self.place(who, key, spec, OrderStatus::Cancelled, true, reason);
        self.reserve(id, spec, ReservationStatus::Released);
        self.pay(id, who, &[LedgerEntryKind::Declined]);
        id
    }

    /// Stock reserved, the authorization answered too late: the hold voided, stock released.
    pub fn timed_out_at_payment(&mut self, who: &str, key: &str, spec: &[(&str, i64)]) -> OrderId {
        let reason = Some("timed out waiting for payment authorization");
        let id = self.place(who, key, spec, OrderStatus::Cancelled, true, reason);
        self.reserve(id, spec, ReservationStatus::Released);
        self.pay(
            id,
            who,
            &[LedgerEntryKind::Authorized, LedgerEntryKind::Voided],
        );
        id
    }

    /// A confirmed order whose `POST` timed out on the client's side.
    pub fn unknown_but_created(&mut self, who: &str, key: &str, spec: &[(&str, i64)]) -> OrderId {
        let id = self.confirmed(who, key, spec);
        self.last_attempt().outcome = AttemptOutcome::Unknown {
            error: "operation timed out".into(),
        };
        id
    }

    /// A `POST` that timed out and created nothing.
    pub fn unknown_not_created(&mut self, who: &str, key: &str, spec: &[(&str, i64)]) {
        self.history.attempts.push(OrderAttempt {
            customer_id: customer(who),
            idempotency_key: Some(key.into()),
            lines: lines(spec),
            outcome: AttemptOutcome::Unknown {
                error: "connection reset".into(),
            },
        });
    }

    /// Retries attempt `index` and records that the answer was a replay of `order_id`.
    pub fn replay(&mut self, index: usize, order_id: OrderId) {
        let mut again = self.history.attempts[index].clone();
        again.outcome = AttemptOutcome::Acknowledged {
            order_id,
            replayed: true,
        };
        self.history.attempts.push(again);
    }

    pub fn last_attempt(&mut self) -> &mut OrderAttempt {
        self.history.attempts.last_mut().unwrap()
    }

    pub fn order(&self, id: OrderId) -> &AdminOrder {
        self.snapshot
            .orders
            .iter()
            .find(|o| o.order.order_id == id)
            .unwrap()
    }

    pub fn order_mut(&mut self, id: OrderId) -> &mut AdminOrder {
        self.snapshot
            .orders
            .iter_mut()
            .find(|o| o.order.order_id == id)
            .unwrap()
    }

    /// Changes the status in the write model and the view alike.
    pub fn set_status(&mut self, id: OrderId, status: OrderStatus) {
        let o = self.order_mut(id);
        o.order.status = status;
        if let Some(v) = &mut o.view {
            v.status = status;
        }
    }

    pub fn payment_mut(&mut self, id: OrderId) -> &mut PaymentRecord {
        self.snapshot
            .payments
            .iter_mut()
            .find(|p| p.order_id == id)
            .unwrap()
    }

    pub fn reservation_mut(&mut self, id: OrderId) -> &mut Reservation {
        self.snapshot
            .reservations
            .iter_mut()
            .find(|r| r.order_id == id)
            .unwrap()
    }

    pub fn stock_mut(&mut self, s: &str) -> &mut StockLevel {
        self.snapshot
            .stock
            .iter_mut()
            .find(|l| l.sku.as_str() == s)
            .unwrap()
    }

    pub fn account_mut(&mut self, who: &str) -> &mut AccountBalance {
        self.snapshot
            .accounts
            .iter_mut()
            .find(|a| a.customer_id.as_str() == who)
            .unwrap()
    }
}
