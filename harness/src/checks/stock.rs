//! Stock conservation: the inventory's counters against the stock the harness seeded, the
//! restocks it sent and the lines its clients ordered; and its reservations against the orders.

use std::collections::BTreeMap;

use contracts::domain::{OrderStatus, Sku};
use contracts::http::{OrderLine, Reservation, ReservationStatus};

use super::model::{
    Completion, History, Index, Seeded, Snapshot, describe_lines, lines_of, sent_lines,
};
use super::{Invariant, InvariantVerdict, Violation, seed_of};

/// Per SKU, available + reserved + sold equals the seeded stock plus the restocks the load
/// generator made (`not_conserved`; a restock without a definite answer may or may not have
/// happened, so it widens the range); the units the clients' CONFIRMED orders asked for never
/// exceed everything that was ever stocked (`oversold`) and equal `sold` (`sales_disagree`);
/// `reserved` and `sold` equal the lines of the RESERVED and COMMITTED reservations
/// (`reservations_disagree`). Per order, a CONFIRMED order's reservation is COMMITTED
/// (`not_sold`) with the lines the client sent (`sold_lines_differ`); any other finished order's
/// reservation is RELEASED, REJECTED or absent (`leaked` when RESERVED, `sold_for_failed_order`
/// when COMMITTED). A reservation of an order that does not exist holds nothing (`leaked`,
/// `sold_without_order`). Without a seed in the history: `could_not_verify`.
///
/// The inventory's own `received` and its non-negative counters are not evidence: the database
/// enforces `received = available + reserved + sold` and `>= 0` itself (CHECK constraints), so
/// restating them would prove nothing the system did not already promise.
pub fn stock_conservation(history: &History, snapshot: &Snapshot) -> InvariantVerdict {
    let seed = match seed_of(history) {
        Ok(seed) => seed,
        Err(v) => {
            let scope = "no seed to compare with";
            return InvariantVerdict::new(Invariant::StockConservation, scope, vec![v], Vec::new());
        }
    };
    let index = Index::new(snapshot);
    let sent = sent_lines(history);
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
    let mut ordered: BTreeMap<&Sku, i64> = BTreeMap::new();
    for o in index.orders.values() {
        if o.order.status == OrderStatus::Confirmed {
            for l in lines_of(&sent, o) {
                *ordered.entry(&l.sku).or_default() += l.quantity.get();
            }
        }
    }
    let stocked = Stocked::of(seed, history);
    let mut skus: Vec<&Sku> = seed.products.keys().collect();
    skus.extend(snapshot.stock.iter().map(|s| &s.sku));
    skus.sort();
    skus.dedup();
    for sku in skus {
        let level = snapshot.stock.iter().find(|s| s.sku == *sku);
        let (lo, hi) = stocked.range(sku);
        let (available, reserved, sold) =
            level.map_or((0, 0, 0), |s| (s.available, s.reserved, s.sold));
        let numbers = match level {
            Some(s) => format!(
                "available {}, reserved {}, sold {} (received {})",
                s.available, s.reserved, s.sold, s.received
            ),
            None => "not in the inventory".to_string(),
        };
        let accounted = available.saturating_add(reserved).saturating_add(sold);
        if !(lo..=hi).contains(&accounted) {
            violations.push(Violation::for_sku(
                "not_conserved",
                sku,
                format!(
                    "{}; available + reserved + sold = {accounted}",
                    stocked.describe(sku, &numbers)
                ),
            ));
        }
        let bought = ordered.remove(sku).unwrap_or(0);
        if bought > hi {
            violations.push(Violation::for_sku(
                "oversold",
                sku,
                format!(
                    "the confirmed orders' lines ask for {bought} units; {}",
                    stocked.describe(sku, &numbers)
                ),
            ));
        }
        if bought != sold {
            violations.push(Violation::for_sku(
                "sales_disagree",
                sku,
                format!("the clients' lines of the confirmed orders add up to {bought}; {numbers}"),
            ));
        }
        let (held, committed) = from_reservations.remove(sku).unwrap_or_default();
        if (held, committed) != (reserved, sold) {
            violations.push(Violation::for_sku(
                "reservations_disagree",
                sku,
                format!(
                    "the stock says reserved {reserved}, sold {sold}; the reservations hold \
                     {held} reserved, {committed} committed"
                ),
            ));
        }
    }
    for (sku, bought) in ordered {
        violations.push(Violation::for_sku(
            "oversold",
            sku,
            format!("the confirmed orders' lines ask for {bought} units of a SKU never stocked"),
        ));
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
                let lines = lines_of(&sent, o);
                for r in committed {
                    if !same_lines(&r.lines, lines) {
                        violations.push(Violation::for_order(
                            "sold_lines_differ",
                            *id,
                            format!(
                                "ordered {}, sold {}",
                                describe_lines(lines),
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

/// What the harness stocked per SKU: the seed, the restocks that certainly happened (`ok`) and
/// those that may have (`info`).
struct Stocked<'a> {
    seed: &'a Seeded,
    restocked: BTreeMap<&'a Sku, (i64, i64)>,
}

impl<'a> Stocked<'a> {
    fn of(seed: &'a Seeded, history: &'a History) -> Self {
        let mut restocked: BTreeMap<&Sku, (i64, i64)> = BTreeMap::new();
        for r in &history.restocks {
            let (done, maybe) = restocked.entry(&r.sku).or_default();
            match r.outcome {
                Completion::Ok => *done += r.quantity,
                Completion::Info => *maybe += r.quantity,
                Completion::Fail => {}
            }
        }
        Self { seed, restocked }
    }

    fn seeded(&self, sku: &Sku) -> i64 {
        self.seed.products.get(sku).map_or(0, |p| p.initial_stock)
    }

    /// The least and the most units there may be in all.
    fn range(&self, sku: &Sku) -> (i64, i64) {
        let (done, maybe) = self.restocked.get(sku).copied().unwrap_or_default();
        let lo = self.seeded(sku).saturating_add(done);
        (lo, lo.saturating_add(maybe))
    }

    /// `seeded 100 + restocked 12 (+ up to 5 unanswered) = 112; available ...`.
    fn describe(&self, sku: &Sku, numbers: &str) -> String {
        let (done, maybe) = self.restocked.get(sku).copied().unwrap_or_default();
        let seeded = match self.seed.products.get(sku) {
            Some(p) => format!("seeded {}", p.initial_stock),
            None => "never seeded".into(),
        };
        let unanswered = if maybe > 0 {
            format!(" (+ up to {maybe} unanswered)")
        } else {
            String::new()
        };
        format!(
            "{seeded} + restocked {done}{unanswered} = {}; {numbers}",
            self.range(sku).0
        )
    }
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
    fn confirmed_orders_for_more_units_than_were_ever_stocked_are_oversold() {
        let mut w = World::new();
        w.confirmed("cust-1", "k1", &[("SKU-B", 6)]);
        let clean = stock_conservation(&w.history, &w.snapshot);
        assert!(clean.held, "{:?}", clean.violations);
        w.confirmed("cust-2", "k2", &[("SKU-B", 6)]);

        let v = stock_conservation(&w.history, &w.snapshot);

        assert!(!v.held);
        assert_eq!(skus(&v, "oversold"), [sku("SKU-B")]);
        assert_eq!(v.violations.len(), 1, "{:?}", v.violations);
        assert_eq!(
            v.violations[0].details,
            "the confirmed orders' lines ask for 12 units; seeded 10 + restocked 0 = 10; \
             available -2, reserved 0, sold 12 (received 10)"
        );
    }

    #[test]
    fn stock_that_does_not_add_up_to_what_was_seeded_and_restocked_is_not_conserved() {
        let mut w = World::new();
        w.confirmed("cust-1", "k1", &[("SKU-A", 3)]);
        w.stock_mut("SKU-A").available += 1;

        let v = stock_conservation(&w.history, &w.snapshot);

        assert_eq!(skus(&v, "not_conserved"), [sku("SKU-A")]);
        let details = &v.violations[0].details;
        assert_eq!(
            details,
            "seeded 100 + restocked 0 = 100; available 98, reserved 0, sold 3 (received 100); \
             available + reserved + sold = 101"
        );
    }

    #[test]
    fn units_the_inventory_received_that_nobody_restocked_are_not_conserved() {
        let mut w = World::new();
        w.restock("SKU-A", 4, Completion::Ok);
        w.restock("SKU-A", 3, Completion::Fail);
        w.restock("SKU-A", 2, Completion::Info);
        w.confirmed("cust-1", "k1", &[("SKU-A", 3)]);
        let clean = stock_conservation(&w.history, &w.snapshot);
        assert!(clean.held, "{:?}", clean.violations);
        // The inventory agrees with itself (received = available + reserved + sold), not with
        // the restocks the harness sent.
        let a = w.stock_mut("SKU-A");
        a.available += 5;
        a.received += 5;

        let v = stock_conservation(&w.history, &w.snapshot);

        assert_eq!(skus(&v, "not_conserved"), [sku("SKU-A")]);
        assert_eq!(v.violations.len(), 1, "{:?}", v.violations);
        assert!(
            v.violations[0]
                .details
                .starts_with("seeded 100 + restocked 4 (+ up to 2 unanswered) = 104;"),
            "{}",
            v.violations[0].details
        );
    }

    #[test]
    fn units_sold_that_no_confirmed_order_asked_for_or_no_reservation_holds_are_reported() {
        let mut w = World::new();
        w.confirmed("cust-1", "k1", &[("SKU-A", 3)]);
        let a = w.stock_mut("SKU-A");
        a.sold += 2;
        a.available -= 2;

        let v = stock_conservation(&w.history, &w.snapshot);

        assert_eq!(skus(&v, "reservations_disagree"), [sku("SKU-A")]);
        assert_eq!(skus(&v, "sales_disagree"), [sku("SKU-A")]);
        assert_eq!(v.violations.len(), 2, "{:?}", v.violations);
    }

    #[test]
    fn without_a_seed_the_stock_cannot_be_verified() {
        let mut w = World::new();
        w.history.seed = None;

        let v = stock_conservation(&w.history, &w.snapshot);

        assert!(!v.held);
        assert_eq!(v.violations[0].kind, "could_not_verify");
    }

    #[test]
    fn a_reservation_still_held_for_a_cancelled_order_is_leaked() {
        let mut w = World::new();
        let id = w.declined("cust-1", "k1", &[("SKU-B", 2)]);
        w.reservation_mut(id).status = ReservationStatus::Reserved;
        let b = w.stock_mut("SKU-B");
        b.available -= 2;
        b.reserved += 2;

        let v = stock_conservation(&w.history, &w.snapshot);

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

        let v = stock_conservation(&w.history, &w.snapshot);

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

        let v = stock_conservation(&w.history, &w.snapshot);

        assert_eq!(ids(&v, "leaked"), [ghost]);
        assert!(v.violations[0].details.starts_with("no such order"));
    }
}
