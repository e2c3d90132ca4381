//! Stock conservation: the inventory's counters, its reservations, and the orders agree.

use std::collections::BTreeMap;

use contracts::domain::{OrderStatus, Sku};
use contracts::http::{OrderLine, Reservation, ReservationStatus};

use super::model::{Index, Snapshot, describe_lines};
use super::{Invariant, InvariantVerdict, Violation};

/// Per SKU, `received == available + reserved + sold` (`not_conserved`) and no counter is
/// negative (`negative_stock`); `reserved` and `sold` equal the lines of the RESERVED and
/// COMMITTED reservations (`reservations_disagree`: units held or sold that no reservation
/// accounts for). Per order, a CONFIRMED order's reservation is COMMITTED (`not_sold`) with the
/// order's lines (`sold_lines_differ`); any other finished order's reservation is RELEASED,
/// REJECTED or absent (`leaked` when RESERVED, `sold_for_failed_order` when COMMITTED). A
/// reservation of an order that does not exist holds nothing (`leaked`, `sold_without_order`).
///
/// `received` counts the seed and every restock, so it stands for the initial stock.
pub fn stock_conservation(snapshot: &Snapshot) -> InvariantVerdict {
    let index = Index::new(snapshot);
    let mut violations = Vec::new();

    let mut from_reservations: BTreeMap<&Sku, (i64, i64)> = BTreeMap::new();
    for r in &snapshot.reservations {
        for l in &r.lines {
            let (reserved, sold) = from_reservations.entry(&l.sku).or_default();
            match r.status {
                ReservationStatus::Reserved => *reserved += l.quantity.get(),
                ReservationStatus::Committed => *sold += l.quantity.get(),
                ReservationStatus::Released | ReservationStatus::Rejected => {}
            }
        }
    }
    for s in &snapshot.stock {
        let numbers = format!(
            "received {}, available {}, reserved {}, sold {}",
            s.received, s.available, s.reserved, s.sold
        );
        if [s.received, s.available, s.reserved, s.sold]
            .iter()
            .any(|n| *n < 0)
        {
            violations.push(Violation::for_sku(
                "negative_stock",
                &s.sku,
                numbers.clone(),
            ));
        }
        let accounted = s
            .available
            .saturating_add(s.reserved)
            .saturating_add(s.sold);
        if accounted != s.received {
            violations.push(Violation::for_sku(
                "not_conserved",
                &s.sku,
                format!(
                    "{numbers}: available + reserved + sold = {accounted}, {} {} than received",
                    (accounted - s.received).abs(),
                    if accounted > s.received {
                        "more"
                    } else {
                        "fewer"
                    }
                ),
            ));
        }
        let (reserved, sold) = from_reservations.remove(&s.sku).unwrap_or_default();
        if (reserved, sold) != (s.reserved, s.sold) {
            violations.push(Violation::for_sku(
                "reservations_disagree",
                &s.sku,
                format!(
                    "the stock says reserved {}, sold {}; the reservations hold {reserved} \
                     reserved, {sold} committed",
                    s.reserved, s.sold
                ),
            ));
        }
    }
    for (sku, (reserved, sold)) in from_reservations {
        if (reserved, sold) != (0, 0) {
            violations.push(Violation::for_sku(
                "reservations_disagree",
                sku,
                format!(
                    "no such product, but the reservations hold {reserved} reserved, {sold} \
                     committed"
                ),
            ));
        }
    }

    let (mut judged, mut pending) = (0, 0);
    for (id, o) in &index.orders {
        let reservations = index.reservations(*id);
        match o.order.status {
            OrderStatus::Pending => pending += 1,
            OrderStatus::Confirmed => {
                judged += 1;
                let committed: Vec<&&Reservation> = reservations
                    .iter()
                    .filter(|r| r.status == ReservationStatus::Committed)
                    .collect();
                if committed.is_empty() {
                    violations.push(Violation::for_order(
                        "not_sold",
                        *id,
                        format!("CONFIRMED, but {}", describe_reservations(reservations)),
                    ));
                }
                for r in committed {
                    if !same_lines(&r.lines, &o.order.items) {
                        violations.push(Violation::for_order(
                            "sold_lines_differ",
                            *id,
                            format!(
                                "ordered {}, sold {}",
                                describe_lines(&o.order.items),
                                describe_lines(&r.lines)
                            ),
                        ));
                    }
                }
            }
            status @ (OrderStatus::Rejected | OrderStatus::Cancelled) => {
                judged += 1;
                for r in reservations {
                    let kind = match r.status {
                        ReservationStatus::Reserved => "leaked",
                        ReservationStatus::Committed => "sold_for_failed_order",
                        ReservationStatus::Released | ReservationStatus::Rejected => continue,
                    };
                    violations.push(Violation::for_order(
                        kind,
                        *id,
                        format!(
                            "{status}, but its reservation is {:?} ({})",
                            r.status,
                            describe_lines(&r.lines)
                        ),
                    ));
                }
            }
        }
    }
    for (id, rs) in &index.reservations {
        if index.orders.contains_key(id) {
            continue;
        }
        for r in rs {
            let kind = match r.status {
                ReservationStatus::Reserved => "leaked",
                ReservationStatus::Committed => "sold_without_order",
                ReservationStatus::Released | ReservationStatus::Rejected => continue,
            };
            violations.push(Violation::for_order(
                kind,
                *id,
                format!(
                    "no such order, but a {:?} reservation ({})",
                    r.status,
                    describe_lines(&r.lines)
                ),
            ));
        }
    }
    let scope = format!(
        "{} SKUs, {} reservations, {judged} finished orders, {pending} pending not judged",
        snapshot.stock.len(),
        snapshot.reservations.len()
    );
    InvariantVerdict::new(Invariant::StockConservation, scope, violations, Vec::new())
}

fn same_lines(a: &[OrderLine], b: &[OrderLine]) -> bool {
    let key = |lines: &[OrderLine]| {
        let mut l: Vec<(Sku, i64)> = lines
            .iter()
            .map(|l| (l.sku.clone(), l.quantity.get()))
            .collect();
        l.sort();
        l
    };
    key(a) == key(b)
}

fn describe_reservations(rs: &[&Reservation]) -> String {
    if rs.is_empty() {
        return "no reservation".into();
    }
    let parts: Vec<String> = rs
        .iter()
        .map(|r| format!("reservation {:?}", r.status))
        .collect();
    parts.join(", ")
}

#[cfg(test)]
mod tests {
    use contracts::domain::OrderId;

    use super::super::fixture::{World, lines, sku};
    use super::*;

    fn ids(v: &InvariantVerdict, kind: &str) -> Vec<OrderId> {
        v.of_kind(kind).filter_map(Violation::order_id).collect()
    }

    fn skus(v: &InvariantVerdict, kind: &str) -> Vec<Sku> {
        v.of_kind(kind)
            .filter_map(Violation::sku)
            .cloned()
            .collect()
    }

    #[test]
    fn a_negative_counter_is_reported_with_the_sku_and_its_numbers() {
        let mut w = World::new();
        let b = w.stock_mut("SKU-B");
        b.available = -2;
        b.sold = 12;

        let v = stock_conservation(&w.snapshot);

        assert!(!v.held);
        assert_eq!(skus(&v, "negative_stock"), [sku("SKU-B")]);
        assert_eq!(
            v.violations[0].details,
            "received 10, available -2, reserved 0, sold 12"
        );
    }

    #[test]
    fn stock_that_does_not_add_up_to_what_was_received_is_not_conserved() {
        let mut w = World::new();
        w.confirmed("cust-1", "k1", &[("SKU-A", 3)]);
        w.stock_mut("SKU-A").available += 1;

        let v = stock_conservation(&w.snapshot);

        assert_eq!(skus(&v, "not_conserved"), [sku("SKU-A")]);
        let details = &v.violations[0].details;
        assert!(
            details.ends_with("available + reserved + sold = 101, 1 more than received"),
            "{details}"
        );
    }

    #[test]
    fn units_sold_that_no_reservation_accounts_for_make_the_reservations_disagree() {
        let mut w = World::new();
        w.confirmed("cust-1", "k1", &[("SKU-A", 3)]);
        let a = w.stock_mut("SKU-A");
        a.sold += 2;
        a.available -= 2;

        let v = stock_conservation(&w.snapshot);

        assert_eq!(skus(&v, "reservations_disagree"), [sku("SKU-A")]);
        assert_eq!(v.violations.len(), 1, "{:?}", v.violations);
    }

    #[test]
    fn a_reservation_still_held_for_a_cancelled_order_is_leaked() {
        let mut w = World::new();
        let id = w.declined("cust-1", "k1", &[("SKU-B", 2)]);
        w.reservation_mut(id).status = ReservationStatus::Reserved;
        let b = w.stock_mut("SKU-B");
        b.available -= 2;
        b.reserved += 2;

        let v = stock_conservation(&w.snapshot);

        assert_eq!(ids(&v, "leaked"), [id]);
        assert_eq!(v.violations.len(), 1, "{:?}", v.violations);
        assert!(v.violations[0].details.contains("SKU-B×2"));
    }

    #[test]
    fn stock_sold_for_a_cancelled_order_or_missing_for_a_confirmed_one_is_reported() {
        let mut w = World::new();
        let cancelled = w.timed_out_at_payment("cust-1", "k1", &[("SKU-A", 1)]);
        w.reservation_mut(cancelled).status = ReservationStatus::Committed;
        let confirmed = w.confirmed("cust-2", "k2", &[("SKU-A", 2)]);
        w.reservation_mut(confirmed).status = ReservationStatus::Released;
        let short = w.confirmed("cust-3", "k3", &[("SKU-A", 2)]);
        w.reservation_mut(short).lines = lines(&[("SKU-A", 1)]);

        let v = stock_conservation(&w.snapshot);

        assert_eq!(ids(&v, "sold_for_failed_order"), [cancelled]);
        assert_eq!(ids(&v, "not_sold"), [confirmed]);
        assert_eq!(ids(&v, "sold_lines_differ"), [short]);
    }

    #[test]
    fn a_held_reservation_of_an_order_that_does_not_exist_is_leaked() {
        let mut w = World::new();
        let ghost = OrderId::new();
        w.snapshot.reservations.push(Reservation {
            order_id: ghost,
            status: ReservationStatus::Reserved,
            lines: lines(&[("SKU-A", 1)]),
        });
        let a = w.stock_mut("SKU-A");
        a.available -= 1;
        a.reserved += 1;

        let v = stock_conservation(&w.snapshot);

        assert_eq!(ids(&v, "leaked"), [ghost]);
        assert!(v.violations[0].details.starts_with("no such order"));
    }
}
