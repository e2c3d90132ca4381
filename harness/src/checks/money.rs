//! Exactly-once money: what the payment ledger holds for every order and customer, against the
//! prices and credit limits the harness seeded and the lines its clients sent.

use std::collections::BTreeMap;

use contracts::domain::{CustomerId, OrderStatus};
use contracts::http::{LedgerEntry, LedgerEntryKind};

use super::model::{History, Index, Seeded, Snapshot, describe_lines, lines_of, sent_lines};
use super::{Invariant, InvariantVerdict, Violation, seed_of};

/// A CONFIRMED order has exactly one CAPTURED entry, for exactly the total the harness computes
/// from the seeded prices and the lines the client sent, and nothing still held; every order's
/// own total is that figure too (`wrong_total`); every REJECTED or CANCELLED order nets to zero;
/// no money moved for an order that does not exist; no customer's captured plus held money ever
/// went beyond the credit limit the harness seeded, replaying their ledger in order
/// (`over_credit_limit`); the money is the account of the customer who placed the order, as
/// the client sent it (`wrong_customer`); and each customer's balance equals the sum of their orders' ledgers
/// (the event-sourced projection agrees with its events).
///
/// Kinds: `not_captured`, `double_captured`, `wrong_amount`, `wrong_total`, `wrong_customer`,
/// `still_held`,
/// `money_on_failed_order`, `money_without_order`, `over_credit_limit`, `account_mismatch`,
/// `could_not_verify` (the history has no seed).
pub fn exactly_once_money(history: &History, snapshot: &Snapshot) -> InvariantVerdict {
    let seed = match seed_of(history) {
        Ok(seed) => seed,
        Err(v) => {
            let scope = "no seed to compare with";
            return InvariantVerdict::new(Invariant::ExactlyOnceMoney, scope, vec![v], Vec::new());
        }
    };
    let index = Index::new(snapshot);
    let sent = sent_lines(history);
    let mut violations = Vec::new();
    let (mut confirmed, mut failed, mut pending) = (0, 0, 0);
    for (id, o) in &index.orders {
        let money = index.money(*id);
        let lines = lines_of(&sent, o);
        let expected = seed.total(lines);
        let described_expected = || match expected {
            Some(t) => format!("{t} ({})", describe_lines(lines)),
            None => format!(
                "unknown ({}: a SKU that was not seeded)",
                describe_lines(lines)
            ),
        };
        let own_total = o.order.total_minor.map(|t| t.minor());
        let total_wrong = match (own_total, o.order.status) {
            (Some(t), _) => Some(t) != expected,
            // Priced only once stock was reserved: a rejected or pending order may have none.
            (None, status) => status == OrderStatus::Confirmed,
        };
        if total_wrong {
            violations.push(Violation::for_order(
                "wrong_total",
                *id,
                format!(
                    "{} with total {}, but the seeded prices make it {}",
                    o.order.status,
                    own_total.map_or_else(|| "none".into(), |t| t.to_string()),
                    described_expected()
                ),
            ));
        }
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
                        if expected != Some(*amount) || expected != Some(captured) {
                            violations.push(Violation::for_order(
                                "wrong_amount",
                                *id,
                                format!(
                                    "the seeded prices make it {}, but {described}",
                                    described_expected()
                                ),
                            ));
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
    let placed_by: BTreeMap<_, &CustomerId> = history
        .attempts
        .iter()
        .filter_map(|a| Some((a.outcome.acknowledged()?, &a.customer_id)))
        .collect();
    for p in &snapshot.payments {
        let customer = placed_by
            .get(&p.order_id)
            .copied()
            .or_else(|| index.orders.get(&p.order_id).map(|o| &o.order.customer_id));
        if let Some(customer) = customer.filter(|c| **c != p.customer_id) {
            violations.push(Violation::for_order(
                "wrong_customer",
                p.order_id,
                format!(
                    "placed by {customer}, but the payment is {}'s (captured {}, held {})",
                    p.customer_id, p.captured_minor, p.held_minor
                ),
            ));
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
    violations.extend(over_credit_limit(seed, snapshot));

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

/// Each customer's ledger replayed in `seq` order (the ledger's own order across orders): the
/// most that was ever captured plus held, and the balance now, against the seeded limit (a
/// customer the harness did not seed has none).
fn over_credit_limit(seed: &Seeded, snapshot: &Snapshot) -> Vec<Violation> {
    let mut ledgers: BTreeMap<&CustomerId, Vec<&LedgerEntry>> = BTreeMap::new();
    for p in &snapshot.payments {
        ledgers
            .entry(&p.customer_id)
            .or_default()
            .extend(&p.entries);
    }
    let mut out = Vec::new();
    for (customer, mut entries) in ledgers {
        entries.sort_by_key(|e| e.seq);
        let (mut held, mut captured) = (0i64, 0i64);
        let mut peak: (i64, Option<i64>) = (0, None);
        for e in entries {
            match e.kind {
                LedgerEntryKind::Authorized => held = held.saturating_add(e.amount_minor),
                LedgerEntryKind::Captured => {
                    held = held.saturating_sub(e.amount_minor);
                    captured = captured.saturating_add(e.amount_minor);
                }
                LedgerEntryKind::Voided => held = held.saturating_sub(e.amount_minor),
                LedgerEntryKind::Declined => {}
            }
            let exposure = held.saturating_add(captured);
            if exposure > peak.0 {
                peak = (exposure, Some(e.seq));
            }
        }
        let limit = seed.credit_limits.get(customer).copied();
        if peak.0 > limit.unwrap_or(0) {
            out.push(Violation::for_customer(
                "over_credit_limit",
                customer,
                format!(
                    "captured + held reached {} at ledger seq {}, the seeded limit is {}",
                    peak.0,
                    peak.1.unwrap_or_default(),
                    limit.map_or_else(|| "none (not a seeded customer)".into(), |l| l.to_string())
                ),
            ));
        }
    }
    for a in &snapshot.accounts {
        let exposure = a.captured_minor.saturating_add(a.held_minor);
        let limit = seed.credit_limits.get(&a.customer_id).copied().unwrap_or(0);
        let already = out.iter().any(|v| {
            matches!(&v.subject, super::Subject::Customer { customer_id } if *customer_id == a.customer_id)
        });
        if exposure > limit && !already {
            out.push(Violation::for_customer(
                "over_credit_limit",
                &a.customer_id,
                format!(
                    "the balance says captured {} + held {} = {exposure}, the seeded limit is \
                     {limit}",
                    a.captured_minor, a.held_minor
                ),
            ));
        }
    }
    out
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

        let v = exactly_once_money(&w.history, &w.snapshot);

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

        let v = exactly_once_money(&w.history, &w.snapshot);

        assert_eq!(ids(&v, "not_captured"), [id]);
        assert_eq!(ids(&v, "still_held"), [id]);
    }

    #[test]
    fn an_order_total_that_differs_from_the_seeded_prices_is_a_wrong_total() {
        let mut w = World::new();
        let id = w.confirmed("cust-1", "k1", &[("SKU-A", 2)]);
        let clean = exactly_once_money(&w.history, &w.snapshot);
        assert!(clean.held, "{:?}", clean.violations);
        w.order_mut(id).order.total_minor = Some(Money::from_minor(700).unwrap());

        let v = exactly_once_money(&w.history, &w.snapshot);

        assert_eq!(ids(&v, "wrong_total"), [id]);
        assert_eq!(
            v.violations.len(),
            1,
            "the capture is right: {:?}",
            v.violations
        );
        assert_eq!(
            v.violations[0].details,
            "CONFIRMED with total 700, but the seeded prices make it 500 (SKU-A×2)"
        );
    }

    #[test]
    fn a_capture_the_services_agree_on_but_the_seeded_prices_do_not_is_the_wrong_amount() {
        let mut w = World::new();
        let id = w.confirmed("cust-1", "k1", &[("SKU-A", 2)]);
        // Every figure of the system says 600: the order's total, the capture, the balance.
        w.order_mut(id).order.total_minor = Some(Money::from_minor(600).unwrap());
        w.order_mut(id).view.as_mut().unwrap().total_minor = Some(Money::from_minor(600).unwrap());
        let p = w.payment_mut(id);
        for e in &mut p.entries {
            e.amount_minor = 600;
        }
        p.captured_minor = 600;
        w.account_mut("cust-1").captured_minor = 600;

        let v = exactly_once_money(&w.history, &w.snapshot);

        assert_eq!(ids(&v, "wrong_amount"), [id]);
        assert_eq!(ids(&v, "wrong_total"), [id]);
        let wrong = v.of_kind("wrong_amount").next().unwrap();
        assert!(
            wrong
                .details
                .starts_with("the seeded prices make it 500 (SKU-A×2), but captured 600"),
            "{}",
            wrong.details
        );
    }

    #[test]
    fn a_customer_whose_captured_and_held_money_ever_exceeded_the_seeded_limit_is_reported() {
        let mut w = World::new();
        w.confirmed("cust-1", "k1", &[("SKU-B", 3)]);
        w.timed_out_at_payment("cust-1", "k2", &[("SKU-B", 2)]);
        let clean = exactly_once_money(&w.history, &w.snapshot);
        assert!(clean.held, "{:?}", clean.violations);
        // The system's own limit was raised behind the harness's back; the seed says 4500.
        w.history
            .seed
            .as_mut()
            .unwrap()
            .credit_limits
            .insert(customer("cust-1"), 4_500);

        let v = exactly_once_money(&w.history, &w.snapshot);

        let over: Vec<&Violation> = v.of_kind("over_credit_limit").collect();
        assert_eq!(over.len(), 1, "{:?}", v.violations);
        assert_eq!(
            over[0].subject,
            Subject::Customer {
                customer_id: customer("cust-1")
            }
        );
        // 3000 captured, then a 2000 hold before it was voided: 5000 at the peak, 3000 now.
        assert!(
            over[0].details.starts_with("captured + held reached 5000"),
            "{}",
            over[0].details
        );
        assert!(over[0].details.ends_with("the seeded limit is 4500"));
        assert_eq!(v.violations.len(), 1);
    }

    #[test]
    fn money_taken_from_another_customer_than_the_one_who_ordered_is_reported() {
        let mut w = World::new();
        let id = w.confirmed("cust-1", "k1", &[("SKU-A", 2)]);
        // The ledger and both balances agree: only the client knows who ordered.
        w.payment_mut(id).customer_id = customer("cust-2");
        w.account_mut("cust-1").captured_minor = 0;
        w.account_mut("cust-2").captured_minor = 500;

        let v = exactly_once_money(&w.history, &w.snapshot);

        assert_eq!(ids(&v, "wrong_customer"), [id]);
        assert_eq!(v.violations.len(), 1, "{:?}", v.violations);
        assert_eq!(
            v.violations[0].details,
            "placed by cust-1, but the payment is cust-2's (captured 500, held 0)"
        );
    }

    #[test]
    fn without_a_seed_the_money_cannot_be_verified() {
        let mut w = World::new();
        w.confirmed("cust-1", "k1", &[("SKU-A", 2)]);
        w.history.seed = None;

        let v = exactly_once_money(&w.history, &w.snapshot);

        assert!(!v.held);
        assert_eq!(v.violations[0].kind, "could_not_verify");
        assert_eq!(
            v.violations[0].subject,
            Subject::Evidence {
                what: "the seed".into()
            }
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

        let v = exactly_once_money(&w.history, &w.snapshot);

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

        let v = exactly_once_money(&w.history, &w.snapshot);

        assert_eq!(ids(&v, "money_without_order"), [ghost]);
        assert_eq!(v.violations.len(), 1);
    }

    #[test]
    fn a_balance_that_disagrees_with_its_ledger_is_an_account_mismatch() {
        let mut w = World::new();
        w.confirmed("cust-1", "k1", &[("SKU-A", 2)]);
        w.account_mut("cust-1").captured_minor = 750;

        let v = exactly_once_money(&w.history, &w.snapshot);

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
