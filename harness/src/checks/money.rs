//! Exactly-once money: what the payment ledger holds for every order and customer.

use std::collections::BTreeMap;

use contracts::domain::{CustomerId, OrderStatus};
use contracts::http::LedgerEntryKind;

use super::model::{Index, Snapshot};
use super::{Invariant, InvariantVerdict, Violation};

/// A CONFIRMED order has exactly one CAPTURED entry, for exactly its total, and nothing still
/// held; every REJECTED or CANCELLED order nets to zero; no money moved for an order that does
/// not exist; and each customer's balance equals the sum of their orders' ledgers (the
/// event-sourced projection agrees with its events).
///
/// Kinds: `not_captured`, `double_captured`, `wrong_amount`, `still_held`,
/// `money_on_failed_order`, `money_without_order`, `account_mismatch`.
pub fn exactly_once_money(snapshot: &Snapshot) -> InvariantVerdict {
    let index = Index::new(snapshot);
    let mut violations = Vec::new();
    let (mut confirmed, mut failed, mut pending) = (0, 0, 0);
    for (id, o) in &index.orders {
        let money = index.money(*id);
        match o.order.status {
            OrderStatus::Pending => pending += 1,
            OrderStatus::Confirmed => {
                confirmed += 1;
                let captures: Vec<i64> = money
                    .map(|m| {
                        m.of_kind(LedgerEntryKind::Captured)
                            .map(|e| e.amount_minor)
                            .collect()
                    })
                    .unwrap_or_default();
                let described = money.map_or_else(|| "no payment record".into(), |m| m.describe());
                match captures.as_slice() {
                    [] => violations.push(Violation::for_order(
                        "not_captured",
                        *id,
                        format!("CONFIRMED, but {described}"),
                    )),
                    [amount] => {
                        let captured = money.map_or(0, |m| m.captured_minor);
                        match o.order.total_minor.map(|t| t.minor()) {
                            Some(total) if total == *amount && total == captured => {}
                            total => violations.push(Violation::for_order(
                                "wrong_amount",
                                *id,
                                format!(
                                    "total {}, but {described}",
                                    total.map_or_else(|| "unknown".into(), |t| t.to_string())
                                ),
                            )),
                        }
                    }
                    more => violations.push(Violation::for_order(
                        "double_captured",
                        *id,
                        format!("{} captures: {described}", more.len()),
                    )),
                }
                if let Some(m) = money.filter(|m| m.held_minor != 0) {
                    violations.push(Violation::for_order(
                        "still_held",
                        *id,
                        format!("CONFIRMED, but {}", m.describe()),
                    ));
                }
            }
            status @ (OrderStatus::Rejected | OrderStatus::Cancelled) => {
                failed += 1;
                if let Some(m) =
                    money.filter(|m| m.moves_money() || m.count(LedgerEntryKind::Captured) > 0)
                {
                    violations.push(Violation::for_order(
                        "money_on_failed_order",
                        *id,
                        format!("{status}, but {}", m.describe()),
                    ));
                }
            }
        }
    }
    for (id, m) in &index.money {
        if !index.orders.contains_key(id) && m.moves_money() {
            violations.push(Violation::for_order(
                "money_without_order",
                *id,
                format!("no such order, but {} of {}", m.describe(), m.customer_id),
            ));
        }
    }

    let mut per_customer: BTreeMap<&CustomerId, (i64, i64)> = BTreeMap::new();
    for m in index.money.values() {
        let sums = per_customer.entry(m.customer_id).or_default();
        sums.0 = sums.0.saturating_add(m.captured_minor);
        sums.1 = sums.1.saturating_add(m.held_minor);
    }
    for a in &snapshot.accounts {
        per_customer.entry(&a.customer_id).or_default();
    }
    for (customer, (captured, held)) in per_customer {
        let account = snapshot
            .accounts
            .iter()
            .find(|a| a.customer_id == *customer);
        let (acc_captured, acc_held) = account.map_or((0, 0), |a| (a.captured_minor, a.held_minor));
        if (acc_captured, acc_held) != (captured, held) {
            violations.push(Violation::for_customer(
                "account_mismatch",
                customer,
                format!(
                    "the ledger sums to captured {captured}, held {held}; the balance says \
                     captured {acc_captured}, held {acc_held}{}",
                    if account.is_none() {
                        " (no account)"
                    } else {
                        ""
                    }
                ),
            ));
        }
    }
    let scope = format!(
        "{confirmed} confirmed and {failed} rejected or cancelled orders, {pending} pending not \
         judged, {} accounts",
        snapshot.accounts.len()
    );
    InvariantVerdict::new(Invariant::ExactlyOnceMoney, scope, violations, Vec::new())
}

#[cfg(test)]
mod tests {
    use contracts::domain::{Money, OrderId};
    use contracts::http::{LedgerEntry, PaymentRecord};

    use super::super::fixture::{World, customer};
    use super::super::{Subject, Violation};
    use super::*;

    fn ids(v: &InvariantVerdict, kind: &str) -> Vec<OrderId> {
        v.of_kind(kind).filter_map(Violation::order_id).collect()
    }

    fn entry(seq: i64, kind: LedgerEntryKind, amount_minor: i64) -> LedgerEntry {
        LedgerEntry {
            seq,
            kind,
            amount_minor,
            occurred_at_ms: seq,
        }
    }

    #[test]
    fn a_confirmed_order_captured_twice_is_double_captured() {
        let mut w = World::new();
        let id = w.confirmed("cust-1", "k1", &[("SKU-A", 2)]);
        let p = w.payment_mut(id);
        p.entries.push(entry(50, LedgerEntryKind::Captured, 500));
        p.captured_minor = 1000;
        w.account_mut("cust-1").captured_minor = 1000;

        let v = exactly_once_money(&w.snapshot);

        assert!(!v.held);
        assert_eq!(ids(&v, "double_captured"), [id]);
        assert!(v.violations[0].details.contains("2 captures"));
        assert_eq!(v.violations.len(), 1, "{:?}", v.violations);
    }

    #[test]
    fn a_confirmed_order_without_a_capture_is_not_captured() {
        let mut w = World::new();
        let id = w.confirmed("cust-1", "k1", &[("SKU-A", 2)]);
        let p = w.payment_mut(id);
        p.entries.pop();
        p.captured_minor = 0;
        p.held_minor = 500;
        let a = w.account_mut("cust-1");
        a.captured_minor = 0;
        a.held_minor = 500;

        let v = exactly_once_money(&w.snapshot);

        assert_eq!(ids(&v, "not_captured"), [id]);
        assert_eq!(ids(&v, "still_held"), [id]);
    }

    #[test]
    fn a_capture_that_differs_from_the_total_is_the_wrong_amount() {
        let mut w = World::new();
        let id = w.confirmed("cust-1", "k1", &[("SKU-A", 2)]);
        w.order_mut(id).order.total_minor = Some(Money::from_minor(700).unwrap());

        let v = exactly_once_money(&w.snapshot);

        assert_eq!(ids(&v, "wrong_amount"), [id]);
        assert!(
            v.violations[0]
                .details
                .starts_with("total 700, but captured 500"),
            "{}",
            v.violations[0].details
        );
    }

    #[test]
    fn a_capture_on_a_cancelled_order_is_money_on_a_failed_order() {
        let mut w = World::new();
        let id = w.timed_out_at_payment("cust-1", "k1", &[("SKU-B", 1)]);
        let p = w.payment_mut(id);
        p.entries[1] = entry(60, LedgerEntryKind::Captured, 1000);
        p.captured_minor = 1000;
        w.account_mut("cust-1").captured_minor = 1000;

        let v = exactly_once_money(&w.snapshot);

        assert_eq!(ids(&v, "money_on_failed_order"), [id]);
        assert!(
            v.violations[0]
                .details
                .starts_with("CANCELLED, but captured 1000")
        );
    }

    #[test]
    fn money_for_an_order_that_does_not_exist_is_reported() {
        let mut w = World::new();
        let ghost = OrderId::new();
        w.snapshot.payments.push(PaymentRecord {
            order_id: ghost,
            customer_id: customer("cust-2"),
            entries: vec![entry(1, LedgerEntryKind::Authorized, 300)],
            captured_minor: 0,
            held_minor: 300,
        });
        w.account_mut("cust-2").held_minor = 300;

        let v = exactly_once_money(&w.snapshot);

        assert_eq!(ids(&v, "money_without_order"), [ghost]);
        assert_eq!(v.violations.len(), 1);
    }

    #[test]
    fn a_balance_that_disagrees_with_its_ledger_is_an_account_mismatch() {
        let mut w = World::new();
        w.confirmed("cust-1", "k1", &[("SKU-A", 2)]);
        w.account_mut("cust-1").captured_minor = 750;

        let v = exactly_once_money(&w.snapshot);

        let m: Vec<&Violation> = v.of_kind("account_mismatch").collect();
        assert_eq!(m.len(), 1);
        assert_eq!(
            m[0].subject,
            Subject::Customer {
                customer_id: customer("cust-1")
            }
        );
        assert!(m[0].details.contains("captured 500, held 0"));
        assert!(m[0].details.contains("captured 750"));
    }
}
