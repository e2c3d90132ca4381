//! The saga checks: every saga ended, every compensation ran, the read model caught up.

use std::collections::{BTreeMap, BTreeSet};

use contracts::domain::{OrderId, OrderStatus};
use contracts::http::{LedgerEntryKind, OrderView, ReservationStatus};

use super::model::{History, Index, Observed, Snapshot};
use super::{Invariant, InvariantVerdict, Violation, unread};

/// The saga step of a finished saga (the order service's `SagaStep::Done`).
pub const DONE_STEP: &str = "DONE";

/// How the order service words a cancellation after a step ran out of attempts: "timed out
/// waiting for stock reservation" / "... payment authorization" (`order-service`, `saga.rs`).
/// The order's reason is the durable trace of it; the saga's `last_error` is overwritten by
/// later resends.
pub const TIMEOUT_REASON_PREFIX: &str = "timed out";

/// Every order is CONFIRMED, REJECTED or CANCELLED and its saga is DONE (`pending` otherwise,
/// with status, step, attempts and the saga's last error); and a terminal status a client was
/// shown is the order's status for good: clients were never shown two, and the write model and
/// the read model still say it (`terminal_status_changed`).
pub fn sagas_terminal(history: &History, snapshot: &Snapshot) -> InvariantVerdict {
    let index = Index::new(snapshot);
    let mut violations = Vec::new();
    let mut seen: BTreeMap<OrderId, Vec<&Observed>> = BTreeMap::new();
    for o in history.observed.iter().filter(|o| o.status.is_terminal()) {
        seen.entry(o.order_id).or_default().push(o);
    }
    for (id, shown) in &seen {
        // An order that is gone is `lost` (no_lost_orders), not a status that changed.
        let Some(o) = index.orders.get(id) else {
            continue;
        };
        let first = shown[0];
        let mut changes: Vec<String> = shown[1..]
            .iter()
            .filter(|s| s.status != first.status)
            .map(|s| format!("then {} at {} ms", s.status, s.at_ms))
            .collect();
        if o.order.status != first.status {
            changes.push(format!("the write model now says {}", o.order.status));
        }
        if let Some(view) = o.view.as_ref().filter(|v| v.status != first.status) {
            changes.push(format!("the read model now says {}", view.status));
        }
        if !changes.is_empty() {
            violations.push(Violation::for_order(
                "terminal_status_changed",
                *id,
                format!(
                    "a client was shown {} at {} ms; {}",
                    first.status,
                    first.at_ms,
                    changes.join("; ")
                ),
            ));
        }
    }
    for (id, o) in &index.orders {
        if o.order.status.is_terminal() && o.saga.step == DONE_STEP {
            continue;
        }
        let mut details = format!(
            "status {}, saga step {} (attempt {})",
            o.order.status, o.saga.step, o.saga.attempts
        );
        if let Some(e) = &o.saga.last_error {
            details.push_str(&format!(", last error: {e}"));
        }
        violations.push(Violation::for_order("pending", *id, details));
    }
    let count = |s: OrderStatus| {
        index
            .orders
            .values()
            .filter(|o| o.order.status == s)
            .count()
    };
    let scope = format!(
        "{} orders: {} confirmed, {} rejected, {} cancelled, {} pending; {} terminal statuses \
         shown to clients",
        index.orders.len(),
        count(OrderStatus::Confirmed),
        count(OrderStatus::Rejected),
        count(OrderStatus::Cancelled),
        count(OrderStatus::Pending),
        seen.len()
    );
    InvariantVerdict::new(Invariant::SagasTerminal, scope, violations, Vec::new())
}

/// The fields in which the read model's copy differs from the write model.
fn differing_fields(order: &OrderView, view: &OrderView) -> Vec<&'static str> {
    let mut out = Vec::new();
    let mut differs = |same: bool, name| {
        if !same {
            out.push(name);
        }
    };
    differs(order.order_id == view.order_id, "order_id");
    differs(order.customer_id == view.customer_id, "customer_id");
    differs(order.status == view.status, "status");
    differs(order.items == view.items, "items");
    differs(order.total_minor == view.total_minor, "total_minor");
    differs(order.reason == view.reason, "reason");
    differs(order.created_at_ms == view.created_at_ms, "created_at_ms");
    differs(order.updated_at_ms == view.updated_at_ms, "updated_at_ms");
    out
}

/// For every order the CQRS view equals the write model (`missing_in_view` when the projection
/// never saw it, `stale` with both statuses and the differing fields otherwise), and every row of
/// the read model belongs to an order of the write model (`view_without_order`: a projection of
/// events for an order that was never committed). The read model must have been listed to its
/// end ([`Snapshot::views_read`]); what could not be is `could_not_verify`.
pub fn read_model_convergence(snapshot: &Snapshot) -> InvariantVerdict {
    let index = Index::new(snapshot);
    let mut violations = views_behind(&index);
    let mut orphans = BTreeSet::new();
    for v in &snapshot.views {
        if !index.orders.contains_key(&v.order_id) && orphans.insert(v.order_id) {
            violations.push(Violation::for_order(
                "view_without_order",
                v.order_id,
                format!(
                    "the read model shows a {} order of {} ({}), the write model has no such order",
                    v.status,
                    v.customer_id,
                    super::model::describe_lines(&v.items)
                ),
            ));
        }
    }
    violations.extend(unread(&snapshot.views_read, "the read model"));
    let scope = format!(
        "{} orders, {} rows of the read model",
        index.orders.len(),
        snapshot.views.len()
    );
    InvariantVerdict::new(
        Invariant::ReadModelConvergence,
        scope,
        violations,
        Vec::new(),
    )
}

/// Whether every order's view equals its write model: what [`settled`](super::settled) waits
/// for, without the listing of the whole read model that only the final check reads.
pub(crate) fn views_caught_up(snapshot: &Snapshot) -> bool {
    views_behind(&Index::new(snapshot)).is_empty()
}

/// `missing_in_view` and `stale`, per order.
fn views_behind(index: &Index<'_>) -> Vec<Violation> {
    let mut violations = Vec::new();
    for (id, o) in &index.orders {
        match &o.view {
            None => violations.push(Violation::for_order(
                "missing_in_view",
                *id,
                format!("write model {}, no view", o.order.status),
            )),
            Some(view) if *view != o.order => violations.push(Violation::for_order(
                "stale",
                *id,
                format!(
                    "write model {}, view {}; differs in {}",
                    o.order.status,
                    view.status,
                    differing_fields(&o.order, view).join(", ")
                ),
            )),
            Some(_) => {}
        }
    }
    violations
}

/// Every order that needed compensating, because its payment was declined, a step timed out, or
/// it was cancelled for any reason (a client was shown CANCELLED counts too, whatever the system
/// says now), is CANCELLED (`not_cancelled`), its stock is not held or sold
/// (`stock_not_released`), and no money is held or captured for it (`money_not_returned`).
pub fn compensation(history: &History, snapshot: &Snapshot) -> InvariantVerdict {
    let index = Index::new(snapshot);
    let shown_cancelled: BTreeSet<OrderId> = history
        .observed
        .iter()
        .filter(|o| o.status == OrderStatus::Cancelled)
        .map(|o| o.order_id)
        .collect();
    let mut violations = Vec::new();
    let (mut declined, mut timed_out, mut compensated) = (0, 0, 0);
    for (id, o) in &index.orders {
        let money = index.money(*id);
        let was_declined = money.is_some_and(|m| m.count(LedgerEntryKind::Declined) > 0);
        let was_timed_out = o
            .order
            .reason
            .as_deref()
            .is_some_and(|r| r.starts_with(TIMEOUT_REASON_PREFIX));
        let cancelled = o.order.status == OrderStatus::Cancelled;
        let was_shown_cancelled = shown_cancelled.contains(id);
        if !(was_declined || was_timed_out || cancelled || was_shown_cancelled) {
            continue;
        }
        compensated += 1;
        declined += usize::from(was_declined);
        timed_out += usize::from(was_timed_out);
        let trigger = match (was_declined, was_timed_out, cancelled) {
            (true, _, _) => "payment declined",
            (false, true, _) => "a saga step timed out",
            (false, false, true) => "cancelled",
            (false, false, false) => "a client was shown it CANCELLED",
        };
        if !cancelled {
            violations.push(Violation::for_order(
                "not_cancelled",
                *id,
                format!(
                    "{trigger} (reason: {}), but the order is {}",
                    o.order.reason.as_deref().unwrap_or("none"),
                    o.order.status
                ),
            ));
        }
        for r in index.reservations(*id) {
            if matches!(
                r.status,
                ReservationStatus::Reserved | ReservationStatus::Committed
            ) {
                violations.push(Violation::for_order(
                    "stock_not_released",
                    *id,
                    format!("{trigger}, but its reservation is {:?}", r.status),
                ));
            }
        }
        if let Some(m) = money.filter(|m| m.moves_money()) {
            violations.push(Violation::for_order(
                "money_not_returned",
                *id,
                format!("{trigger}, but {}", m.describe()),
            ));
        }
    }
    let scope = format!(
        "{compensated} orders needed compensating ({declined} declined, {timed_out} timed out)"
    );
    InvariantVerdict::new(Invariant::Compensation, scope, violations, Vec::new())
}

#[cfg(test)]
mod tests {
    use contracts::domain::OrderId;
    use contracts::http::{LedgerEntry, ReservationStatus};

    use super::super::Subject;
    use super::super::fixture::{World, customer, lines};
    use super::super::model::{Coverage, Gap};
    use super::*;

    fn ids(v: &InvariantVerdict, kind: &str) -> Vec<OrderId> {
        v.of_kind(kind).filter_map(Violation::order_id).collect()
    }

    #[test]
    fn a_pending_order_or_an_unfinished_saga_is_reported_with_status_and_step() {
        let mut w = World::new();
        let pending = w.confirmed("cust-1", "k1", &[("SKU-A", 1)]);
        w.set_status(pending, OrderStatus::Pending);
        w.order_mut(pending).saga.step = "AUTHORIZING_PAYMENT".into();
        w.order_mut(pending).saga.last_error = Some("no answer to AuthorizePayment".into());
        let completing = w.confirmed("cust-2", "k2", &[("SKU-A", 1)]);
        w.order_mut(completing).saga.step = "COMPLETING".into();
        w.confirmed("cust-3", "k3", &[("SKU-A", 1)]);

        let v = sagas_terminal(&w.history, &w.snapshot);

        assert!(!v.held);
        let mut expected = vec![pending, completing];
        expected.sort();
        assert_eq!(ids(&v, "pending"), expected);
        let p = v.violations.iter().find(|x| x.order_id() == Some(pending));
        let details = &p.unwrap().details;
        assert!(details.contains("status PENDING"), "{details}");
        assert!(details.contains("AUTHORIZING_PAYMENT"), "{details}");
        assert!(details.contains("no answer"), "{details}");
        assert!(v.summary.contains("1 pending"), "{}", v.summary);
    }

    #[test]
    fn a_view_behind_the_write_model_is_stale_with_both_statuses() {
        let mut w = World::new();
        let id = w.confirmed("cust-1", "k1", &[("SKU-A", 1)]);
        let view = w.order_mut(id).view.as_mut().unwrap();
        view.status = OrderStatus::Pending;
        view.updated_at_ms -= 3;

        let v = read_model_convergence(&w.snapshot);

        assert_eq!(ids(&v, "stale"), [id]);
        let details = &v.violations[0].details;
        assert!(
            details.contains("write model CONFIRMED, view PENDING"),
            "{details}"
        );
        assert!(
            details.ends_with("differs in status, updated_at_ms"),
            "{details}"
        );
    }

    #[test]
    fn an_order_the_projection_never_saw_is_missing_in_view() {
        let mut w = World::new();
        w.confirmed("cust-1", "k1", &[("SKU-A", 1)]);
        let id = w.declined("cust-2", "k2", &[("SKU-A", 1)]);
        w.order_mut(id).view = None;

        let v = read_model_convergence(&w.snapshot);

        assert_eq!(ids(&v, "missing_in_view"), [id]);
        assert!(v.of_kind("stale").next().is_none());
    }

    #[test]
    fn a_declined_payment_whose_order_was_not_cancelled_is_reported() {
        let mut w = World::new();
        let id = w.declined("cust-1", "k1", &[("SKU-A", 1)]);
        w.set_status(id, OrderStatus::Confirmed);
        w.reservation_mut(id).status = ReservationStatus::Committed;

        let v = compensation(&w.history, &w.snapshot);

        assert!(!v.held);
        assert_eq!(ids(&v, "not_cancelled"), [id]);
        assert_eq!(ids(&v, "stock_not_released"), [id]);
        assert!(v.violations[0].details.starts_with("payment declined"));
    }

    #[test]
    fn a_timed_out_saga_that_kept_its_stock_and_hold_is_reported() {
        let mut w = World::new();
        let id = w.timed_out_at_payment("cust-1", "k1", &[("SKU-A", 1)]);
        w.reservation_mut(id).status = ReservationStatus::Reserved;
        w.payment_mut(id).entries.pop();
        w.payment_mut(id).held_minor = 250;

        let v = compensation(&w.history, &w.snapshot);

        assert_eq!(ids(&v, "stock_not_released"), [id]);
        assert_eq!(ids(&v, "money_not_returned"), [id]);
        assert!(
            v.violations[0].details.starts_with("a saga step timed out"),
            "{}",
            v.violations[0].details
        );
        assert!(v.summary.contains("1 timed out"), "{}", v.summary);
    }

    #[test]
    fn a_cancelled_order_with_a_capture_did_not_get_its_money_back() {
        let mut w = World::new();
        let id = w.declined("cust-1", "k1", &[("SKU-A", 2)]);
        w.payment_mut(id).entries.push(LedgerEntry {
            seq: 99,
            kind: LedgerEntryKind::Captured,
            amount_minor: 500,
            occurred_at_ms: 99,
        });
        w.payment_mut(id).captured_minor = 500;

        let v = compensation(&w.history, &w.snapshot);

        assert_eq!(ids(&v, "money_not_returned"), [id]);
        assert!(v.violations[0].details.contains("captured 500"));
    }

    #[test]
    fn a_terminal_status_a_client_was_shown_that_the_system_later_changed_is_reported() {
        let mut w = World::new();
        let id = w.confirmed("cust-1", "k1", &[("SKU-A", 1)]);
        let other = w.declined("cust-2", "k2", &[("SKU-A", 1)]);
        w.observe(id);
        w.observe(other);
        let clean = sagas_terminal(&w.history, &w.snapshot);
        assert!(clean.held, "{:?}", clean.violations);
        assert!(
            clean.summary.contains("2 terminal statuses"),
            "{}",
            clean.summary
        );
        // Both models agree on the new status: only the client's memory tells.
        w.set_status(id, OrderStatus::Cancelled);

        let v = sagas_terminal(&w.history, &w.snapshot);

        assert_eq!(ids(&v, "terminal_status_changed"), [id]);
        let details = &v.violations[0].details;
        assert!(
            details.starts_with("a client was shown CONFIRMED at "),
            "{details}"
        );
        assert!(
            details
                .ends_with("the write model now says CANCELLED; the read model now says CANCELLED"),
            "{details}"
        );
    }

    #[test]
    fn two_different_terminal_statuses_shown_to_clients_are_a_change() {
        let mut w = World::new();
        let id = w.confirmed("cust-1", "k1", &[("SKU-A", 1)]);
        w.observe(id);
        w.history.observed.push(Observed {
            order_id: id,
            status: OrderStatus::Rejected,
            at_ms: 5_000,
        });
        w.observe(id);

        let v = sagas_terminal(&w.history, &w.snapshot);

        assert_eq!(ids(&v, "terminal_status_changed"), [id]);
        assert!(v.violations[0].details.contains("then REJECTED at 5000 ms"));
    }

    #[test]
    fn a_row_of_the_read_model_without_an_order_is_found() {
        let mut w = World::new();
        w.confirmed("cust-1", "k1", &[("SKU-A", 1)]);
        let clean = read_model_convergence(&w.snapshot);
        assert!(clean.held, "{:?}", clean.violations);
        let mut ghost = w.snapshot.views[0].clone();
        ghost.order_id = OrderId::new();
        ghost.customer_id = customer("cust-3");
        ghost.items = lines(&[("SKU-B", 2)]);
        w.snapshot.views.push(ghost.clone());

        let v = read_model_convergence(&w.snapshot);

        assert_eq!(ids(&v, "view_without_order"), [ghost.order_id]);
        assert_eq!(v.violations.len(), 1);
        assert_eq!(
            v.violations[0].details,
            "the read model shows a CONFIRMED order of cust-3 (SKU-B×2), the write model has no \
             such order"
        );
    }

    #[test]
    fn a_read_model_not_listed_to_its_end_cannot_be_verified() {
        let mut w = World::new();
        w.confirmed("cust-1", "k1", &[("SKU-A", 1)]);
        w.snapshot.views_read = Coverage::NotRead;
        let not_read = read_model_convergence(&w.snapshot);
        w.snapshot.views_read = Coverage::Incomplete {
            gaps: vec![Gap {
                what: "the read model of cust-1".into(),
                details: "1000 rows, the most one list returns".into(),
            }],
        };
        let partial = read_model_convergence(&w.snapshot);

        for v in [&not_read, &partial] {
            assert!(!v.held);
            assert_eq!(v.violations.len(), 1);
            assert_eq!(v.violations[0].kind, "could_not_verify");
        }
        assert_eq!(
            partial.violations[0].subject,
            Subject::Evidence {
                what: "the read model of cust-1".into()
            }
        );
        assert!(
            crate::checks::settled(&w.snapshot),
            "convergence does not wait for the listing"
        );
    }

    #[test]
    fn an_order_a_client_was_shown_cancelled_must_be_compensated_whatever_it_says_now() {
        let mut w = World::new();
        let id = w.confirmed("cust-1", "k1", &[("SKU-A", 1)]);
        assert!(compensation(&w.history, &w.snapshot).held);
        w.history.observed.push(Observed {
            order_id: id,
            status: OrderStatus::Cancelled,
            at_ms: 2_000,
        });

        let v = compensation(&w.history, &w.snapshot);

        assert_eq!(ids(&v, "not_cancelled"), [id]);
        assert_eq!(ids(&v, "stock_not_released"), [id]);
        assert_eq!(ids(&v, "money_not_returned"), [id]);
        assert!(
            v.violations[0]
                .details
                .starts_with("a client was shown it CANCELLED"),
            "{}",
            v.violations[0].details
        );
    }
}
