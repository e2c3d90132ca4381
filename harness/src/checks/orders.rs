//! The checks that compare the history with the system: no lost orders, and idempotency.
//!
//! An attempt sequence is every attempt of one customer with one idempotency key (an attempt
//! without a key is a sequence of its own). With idempotency working, a sequence creates at most
//! one order. An order nobody acknowledged is explained by a sequence that never got a definite
//! answer, of the same customer and with the same lines; each such sequence explains at most one
//! order. Sequences that share customer and lines are interchangeable, so matching them greedily
//! is as good as any matching: the counts decide.

use std::collections::{BTreeMap, VecDeque};

use contracts::domain::{CustomerId, OrderId, Sku};
use contracts::http::{AdminOrder, LedgerEntryKind, OrderLine};

use super::model::{
    AttemptOutcome, History, Index, OrderAttempt, Snapshot, describe_key, describe_lines, kind_name,
};
use super::{Invariant, InvariantVerdict, Subject, Violation};

/// Every attempt of one customer with one idempotency key.
struct Sequence<'a> {
    customer_id: &'a CustomerId,
    key: Option<&'a str>,
    attempts: Vec<&'a OrderAttempt>,
}

impl Sequence<'_> {
    fn acknowledged(&self) -> impl Iterator<Item = (OrderId, bool)> + '_ {
        self.attempts.iter().filter_map(|a| match a.outcome {
            AttemptOutcome::Acknowledged { order_id, replayed } => Some((order_id, replayed)),
            _ => None,
        })
    }

    fn first_acknowledged(&self) -> Option<OrderId> {
        self.acknowledged().next().map(|(id, _)| id)
    }

    /// Unanswered: no acknowledgement, and at least one attempt that may have created the order.
    fn unanswered(&self) -> bool {
        self.first_acknowledged().is_none()
            && self.attempts.iter().any(|a| a.outcome.is_indeterminate())
    }

    fn key_subject(&self) -> Option<Subject> {
        self.key.map(|k| Subject::Key {
            customer_id: self.customer_id.clone(),
            idempotency_key: k.to_string(),
        })
    }

    fn describe_key(&self) -> String {
        describe_key(self.key)
    }
}

fn sequences(history: &History) -> Vec<Sequence<'_>> {
    let mut out: Vec<Sequence<'_>> = Vec::new();
    let mut by_key: BTreeMap<(&CustomerId, &str), usize> = BTreeMap::new();
    for a in &history.attempts {
        let existing = a
            .idempotency_key
            .as_deref()
            .and_then(|k| by_key.get(&(&a.customer_id, k)).copied());
        match existing {
            Some(i) => out[i].attempts.push(a),
            None => {
                if let Some(k) = a.idempotency_key.as_deref() {
                    by_key.insert((&a.customer_id, k), out.len());
                }
                out.push(Sequence {
                    customer_id: &a.customer_id,
                    key: a.idempotency_key.as_deref(),
                    attempts: vec![a],
                });
            }
        }
    }
    out
}

/// Who ordered what: customer and lines sorted by SKU.
type Signature = (CustomerId, Vec<(Sku, i64)>);

fn signature(customer_id: &CustomerId, lines: &[OrderLine]) -> Signature {
    let mut l: Vec<(Sku, i64)> = lines
        .iter()
        .map(|l| (l.sku.clone(), l.quantity.get()))
        .collect();
    l.sort();
    (customer_id.clone(), l)
}

/// The history laid over the write model.
struct Classification<'a> {
    sequences: Vec<Sequence<'a>>,
    /// Acknowledged order ids, with the attempt that first acknowledged each.
    acknowledged: BTreeMap<OrderId, &'a OrderAttempt>,
    lost: Vec<(OrderId, &'a OrderAttempt)>,
    /// Acknowledged orders whose customer or lines in the write model are not what the client
    /// sent with the attempt that was acknowledged.
    altered: Vec<(&'a AdminOrder, &'a OrderAttempt)>,
    /// Existing orders nobody acknowledged and no unanswered sequence explains.
    unexpected: Vec<&'a AdminOrder>,
    /// Existing orders nobody acknowledged, each with the unanswered sequence that explains it.
    recovered: Vec<(&'a AdminOrder, usize)>,
    unanswered: usize,
}

fn classify<'a>(history: &'a History, snapshot: &'a Snapshot) -> Classification<'a> {
    let index = Index::new(snapshot);
    let sequences = sequences(history);
    let mut acknowledged: BTreeMap<OrderId, &OrderAttempt> = BTreeMap::new();
    for a in &history.attempts {
        if let Some(id) = a.outcome.acknowledged() {
            acknowledged.entry(id).or_insert(a);
        }
    }
    let lost = acknowledged
        .iter()
        .filter(|(id, _)| !index.orders.contains_key(id))
        .map(|(id, a)| (*id, *a))
        .collect();
    let altered = acknowledged
        .iter()
        .filter_map(|(id, a)| Some((*index.orders.get(id)?, *a)))
        .filter(|(o, a)| {
            signature(&o.order.customer_id, &o.order.items) != signature(&a.customer_id, &a.lines)
        })
        .collect();

    let mut pool: BTreeMap<Signature, VecDeque<usize>> = BTreeMap::new();
    let mut unanswered = 0;
    for (i, s) in sequences.iter().enumerate() {
        if s.unanswered() {
            unanswered += 1;
            pool.entry(signature(s.customer_id, &s.attempts[0].lines))
                .or_default()
                .push_back(i);
        }
    }
    let mut unacknowledged: Vec<&AdminOrder> = index
        .orders
        .values()
        .copied()
        .filter(|o| !acknowledged.contains_key(&o.order.order_id))
        .collect();
    unacknowledged.sort_by_key(|o| (o.order.created_at_ms, o.order.order_id));
    let mut unexpected = Vec::new();
    let mut recovered = Vec::new();
    for o in unacknowledged {
        let sig = signature(&o.order.customer_id, &o.order.items);
        match pool.get_mut(&sig).and_then(VecDeque::pop_front) {
            Some(seq) => recovered.push((o, seq)),
            None => unexpected.push(o),
        }
    }
    Classification {
        sequences,
        acknowledged,
        lost,
        altered,
        unexpected,
        recovered,
        unanswered,
    }
}

/// Every acknowledged order exists (`lost` otherwise), and every existing order was acknowledged
/// or is explained by a `POST` without a definite answer (`unexpected` otherwise; the explained
/// ones are `recovered` notes).
pub fn no_lost_orders(history: &History, snapshot: &Snapshot) -> InvariantVerdict {
    let c = classify(history, snapshot);
    let mut violations = Vec::new();
    for (id, a) in &c.lost {
        violations.push(Violation::for_order(
            "lost",
            *id,
            format!(
                "acknowledged to {} ({}, {}) but not in the write model",
                a.customer_id,
                describe_key(a.idempotency_key.as_deref()),
                describe_lines(&a.lines)
            ),
        ));
    }
    for (o, a) in &c.altered {
        violations.push(Violation::for_order(
            "altered",
            o.order.order_id,
            format!(
                "acknowledged to {} for {}, but the write model holds an order of {} for {}",
                a.customer_id,
                describe_lines(&a.lines),
                o.order.customer_id,
                describe_lines(&o.order.items)
            ),
        ));
    }
    for o in &c.unexpected {
        violations.push(Violation::for_order(
            "unexpected",
            o.order.order_id,
            format!(
                "{} order of {} ({}) that no attempt acknowledged and no unanswered attempt with \
                 these lines explains",
                o.order.status,
                o.order.customer_id,
                describe_lines(&o.order.items)
            ),
        ));
    }
    let notes = c
        .recovered
        .iter()
        .map(|(o, seq)| {
            let s = &c.sequences[*seq];
            let why: Vec<String> = s
                .attempts
                .iter()
                .filter(|a| a.outcome.is_indeterminate())
                .map(|a| a.outcome.describe())
                .collect();
            Violation::for_order(
                "recovered",
                o.order.order_id,
                format!(
                    "{} order of {} from the attempt with {} ({}), which got no definite answer",
                    o.order.status,
                    o.order.customer_id,
                    s.describe_key(),
                    why.join("; ")
                ),
            )
        })
        .collect::<Vec<_>>();
    let scope = format!(
        "{} acknowledged, {} in the write model, {} of {} unanswered attempts created an order",
        c.acknowledged.len(),
        snapshot.orders.len(),
        c.recovered.len(),
        c.unanswered
    );
    InvariantVerdict::new(Invariant::NoLostOrders, scope, violations, notes)
}

/// One key, one order; a replay names the first order; nothing is recorded twice downstream
/// (order rows, ledger entries of one kind, payment records, reservations).
pub fn idempotency(history: &History, snapshot: &Snapshot) -> InvariantVerdict {
    let c = classify(history, snapshot);
    let mut violations = Vec::new();
    let mut replays = 0;
    let mut keys = 0;
    let mut acknowledged_by_signature: BTreeMap<Signature, Vec<&Sequence<'_>>> = BTreeMap::new();
    for s in &c.sequences {
        let Some(subject) = s.key_subject() else {
            continue;
        };
        keys += 1;
        let Some(first) = s.first_acknowledged() else {
            continue;
        };
        acknowledged_by_signature
            .entry(signature(s.customer_id, &s.attempts[0].lines))
            .or_default()
            .push(s);
        let mut ids: Vec<OrderId> = Vec::new();
        for (id, replayed) in s.acknowledged() {
            if !ids.contains(&id) {
                ids.push(id);
            }
            if replayed {
                replays += 1;
                if id != first {
                    violations.push(Violation::new(
                        "replay_returned_other_order",
                        subject.clone(),
                        format!("a replay answered order {id}, the first answer was order {first}"),
                    ));
                }
            }
        }
        if ids.len() > 1 {
            let ids: Vec<String> = ids.iter().map(OrderId::to_string).collect();
            violations.push(Violation::new(
                "duplicate_order_for_key",
                subject,
                format!(
                    "{} orders acknowledged for one key: {}",
                    ids.len(),
                    ids.join(", ")
                ),
            ));
        }
    }
    for o in &c.unexpected {
        let sig = signature(&o.order.customer_id, &o.order.items);
        if let Some(seqs) = acknowledged_by_signature.get(&sig) {
            let keys: Vec<String> = seqs
                .iter()
                .map(|s| {
                    format!(
                        "{} (order {})",
                        s.describe_key(),
                        s.first_acknowledged()
                            .map_or_else(String::new, |id| id.to_string())
                    )
                })
                .collect();
            violations.push(Violation::for_order(
                "duplicate_order_suspected",
                o.order.order_id,
                format!(
                    "nobody acknowledged it, and it has the customer and lines of {}",
                    keys.join(", ")
                ),
            ));
        }
    }

    let mut rows: BTreeMap<OrderId, usize> = BTreeMap::new();
    for o in &snapshot.orders {
        *rows.entry(o.order.order_id).or_default() += 1;
    }
    for (id, n) in rows.iter().filter(|(_, n)| **n > 1) {
        violations.push(Violation::for_order(
            "duplicate_order_row",
            *id,
            format!("the write model lists the order {n} times"),
        ));
    }

    let index = Index::new(snapshot);
    for (id, money) in &index.money {
        if money.records > 1 {
            violations.push(Violation::for_order(
                "duplicate_payment_record",
                *id,
                format!("{} payment records for one order", money.records),
            ));
        }
        for kind in [
            LedgerEntryKind::Authorized,
            LedgerEntryKind::Declined,
            LedgerEntryKind::Captured,
            LedgerEntryKind::Voided,
        ] {
            let seqs: Vec<String> = money.of_kind(kind).map(|e| e.seq.to_string()).collect();
            if seqs.len() > 1 {
                violations.push(Violation::for_order(
                    "duplicate_ledger_entry",
                    *id,
                    format!(
                        "{} {} entries (seq {})",
                        seqs.len(),
                        kind_name(kind),
                        seqs.join(", ")
                    ),
                ));
            }
        }
    }
    for (id, rs) in index.reservations.iter().filter(|(_, rs)| rs.len() > 1) {
        let statuses: Vec<String> = rs.iter().map(|r| format!("{:?}", r.status)).collect();
        violations.push(Violation::for_order(
            "duplicate_reservation",
            *id,
            format!(
                "{} reservations for one order ({})",
                rs.len(),
                statuses.join(", ")
            ),
        ));
    }
    let scope = format!(
        "{keys} idempotency keys, {replays} replays, {} orders, {} payment records, {} reservations",
        snapshot.orders.len(),
        snapshot.payments.len(),
        snapshot.reservations.len()
    );
    InvariantVerdict::new(Invariant::Idempotency, scope, violations, Vec::new())
}

#[cfg(test)]
mod tests {
    use contracts::http::LedgerEntry;

    use super::super::fixture::{World, customer};
    use super::*;

    fn ids(v: &InvariantVerdict, kind: &str) -> Vec<OrderId> {
        v.of_kind(kind).filter_map(Violation::order_id).collect()
    }

    #[test]
    fn an_acknowledged_order_missing_from_the_write_model_is_reported_lost() {
        let mut w = World::new();
        w.confirmed("cust-1", "k1", &[("SKU-A", 1)]);
        let gone = w.confirmed("cust-2", "k2", &[("SKU-B", 1)]);
        w.snapshot.orders.retain(|o| o.order.order_id != gone);

        let v = no_lost_orders(&w.history, &w.snapshot);

        assert!(!v.held);
        assert_eq!(ids(&v, "lost"), [gone]);
        assert!(v.summary.contains("lost 1"), "{}", v.summary);
    }

    #[test]
    fn an_acknowledged_order_with_other_lines_or_another_customer_is_reported_altered() {
        let mut w = World::new();
        let fine = w.confirmed("cust-1", "k1", &[("SKU-A", 1), ("SKU-B", 2)]);
        let more = w.confirmed("cust-1", "k2", &[("SKU-A", 2)]);
        let moved = w.confirmed("cust-2", "k3", &[("SKU-B", 1)]);
        for o in &mut w.snapshot.orders {
            if o.order.order_id == more {
                o.order.items[0].quantity = contracts::domain::Quantity::new(5).unwrap();
            } else if o.order.order_id == moved {
                o.order.customer_id = customer("cust-3");
            }
        }

        let v = no_lost_orders(&w.history, &w.snapshot);

        assert!(!v.held);
        let mut altered = ids(&v, "altered");
        altered.sort();
        let mut expected = vec![more, moved];
        expected.sort();
        assert_eq!(altered, expected);
        assert!(!altered.contains(&fine));
        let described = v
            .of_kind("altered")
            .map(|x| x.details.clone())
            .collect::<Vec<_>>();
        assert!(
            described.iter().any(|d| d.contains("cust-3")),
            "{described:?}"
        );
    }

    #[test]
    fn an_order_whose_post_failed_definitely_but_exists_is_reported_unexpected() {
        let mut w = World::new();
        let ghost = w.confirmed("cust-1", "k1", &[("SKU-A", 1)]);
        w.last_attempt().outcome = AttemptOutcome::Failed { status: 503 };
        let never_asked = w.confirmed("cust-2", "k2", &[("SKU-A", 2)]);
        w.history.attempts.pop();

        let v = no_lost_orders(&w.history, &w.snapshot);

        assert!(!v.held);
        assert_eq!(ids(&v, "unexpected"), [ghost, never_asked]);
        assert!(v.notes.is_empty());
    }

    #[test]
    fn an_order_whose_post_had_no_answer_and_exists_is_a_recovered_note_not_a_violation() {
        let mut w = World::new();
        let timed_out = w.unknown_but_created("cust-1", "k1", &[("SKU-A", 1)]);
        let gateway_timeout = w.confirmed("cust-2", "k2", &[("SKU-A", 1)]);
        w.last_attempt().outcome = AttemptOutcome::Failed { status: 504 };
        w.unknown_not_created("cust-3", "k3", &[("SKU-B", 1)]);

        let v = no_lost_orders(&w.history, &w.snapshot);

        assert!(v.held, "{:?}", v.violations);
        let recovered: Vec<OrderId> = v.notes.iter().filter_map(Violation::order_id).collect();
        assert_eq!(recovered, [timed_out, gateway_timeout]);
        assert!(v.notes.iter().all(|n| n.kind == "recovered"));
        assert!(v.notes[0].details.contains("operation timed out"));
        assert!(v.summary.contains("2 of 3 unanswered"), "{}", v.summary);
    }

    #[test]
    fn one_unanswered_attempt_explains_only_one_order_with_its_lines() {
        let mut w = World::new();
        let first = w.unknown_but_created("cust-1", "k1", &[("SKU-A", 1)]);
        let second = w.confirmed("cust-1", "k1", &[("SKU-A", 1)]);
        w.history.attempts.pop();
        let other_lines = w.confirmed("cust-1", "k9", &[("SKU-A", 7)]);
        w.history.attempts.pop();

        let v = no_lost_orders(&w.history, &w.snapshot);

        assert_eq!(ids(&v, "unexpected"), [second, other_lines]);
        assert_eq!(v.notes[0].order_id(), Some(first));
    }

    #[test]
    fn two_orders_acknowledged_for_one_idempotency_key_are_reported_with_the_key() {
        let mut w = World::new();
        let a = w.confirmed("cust-1", "k1", &[("SKU-A", 1)]);
        let b = w.confirmed("cust-1", "k1", &[("SKU-A", 1)]);
        w.confirmed("cust-2", "k1", &[("SKU-A", 1)]);

        let v = idempotency(&w.history, &w.snapshot);

        assert!(!v.held);
        let dup: Vec<&Violation> = v.of_kind("duplicate_order_for_key").collect();
        assert_eq!(dup.len(), 1, "keys are scoped to the customer: {dup:?}");
        assert_eq!(
            dup[0].subject,
            Subject::Key {
                customer_id: customer("cust-1"),
                idempotency_key: "k1".into()
            }
        );
        assert!(dup[0].details.contains(&a.to_string()));
        assert!(dup[0].details.contains(&b.to_string()));
    }

    #[test]
    fn a_replay_that_names_another_order_is_reported() {
        let mut w = World::new();
        w.confirmed("cust-1", "k1", &[("SKU-A", 1)]);
        let other = w.confirmed("cust-2", "k2", &[("SKU-A", 1)]);
        w.replay(0, other);

        let v = idempotency(&w.history, &w.snapshot);

        assert_eq!(v.of_kind("replay_returned_other_order").count(), 1);
        assert_eq!(v.of_kind("duplicate_order_for_key").count(), 1);
    }

    #[test]
    fn an_unacknowledged_copy_of_an_acknowledged_order_is_a_suspected_duplicate() {
        let mut w = World::new();
        w.confirmed("cust-1", "k1", &[("SKU-A", 1)]);
        let copy = w.confirmed("cust-1", "k1", &[("SKU-A", 1)]);
        w.history.attempts.pop();
        w.history.attempts.push(OrderAttempt {
            outcome: AttemptOutcome::Unknown {
                error: "timeout".into(),
            },
            ..w.history.attempts[0].clone()
        });

        let v = idempotency(&w.history, &w.snapshot);

        assert_eq!(ids(&v, "duplicate_order_suspected"), [copy]);
        let lost = no_lost_orders(&w.history, &w.snapshot);
        assert_eq!(ids(&lost, "unexpected"), [copy]);
    }

    #[test]
    fn a_second_ledger_entry_of_one_kind_for_an_order_is_a_duplicate() {
        let mut w = World::new();
        let id = w.confirmed("cust-1", "k1", &[("SKU-A", 2)]);
        let capture: LedgerEntry = w.payment_mut(id).entries[1].clone();
        w.payment_mut(id).entries.push(LedgerEntry {
            seq: capture.seq + 100,
            ..capture
        });

        let v = idempotency(&w.history, &w.snapshot);

        assert_eq!(ids(&v, "duplicate_ledger_entry"), [id]);
        assert!(v.violations[0].details.contains("2 CAPTURED"));
    }

    #[test]
    fn a_second_reservation_payment_record_or_order_row_for_one_order_is_a_duplicate() {
        let mut w = World::new();
        let id = w.confirmed("cust-1", "k1", &[("SKU-A", 2)]);
        let r = w.reservation_mut(id).clone();
        w.snapshot.reservations.push(r);
        let p = w.payment_mut(id).clone();
        w.snapshot.payments.push(p);
        let o = w.order(id).clone();
        w.snapshot.orders.push(o);

        let v = idempotency(&w.history, &w.snapshot);

        assert_eq!(ids(&v, "duplicate_reservation"), [id]);
        assert_eq!(ids(&v, "duplicate_payment_record"), [id]);
        assert_eq!(ids(&v, "duplicate_order_row"), [id]);
    }
}
