//! Who each simulated user is and what they order. Pure functions, so the mix the load sends
//! can be tested without a system.

use contracts::domain::{Quantity, Sku};
use contracts::http::OrderLine;
use rand::Rng;
use rand::seq::IndexedRandom;

use super::Customer;

/// Below this credit limit (in minor units) a customer's orders mostly decline.
pub const TIGHT_LIMIT_MINOR: i64 = 10_000;
/// SKUs with this prefix are seeded with a few units only, so orders for them get rejected.
pub const SCARCE_PREFIX: &str = "SKU-SCARCE-";
/// The share of order lines that ask for a scarce SKU.
pub const SCARCE_SHARE: f64 = 0.1;
/// Lines per order, and units per line.
pub const MAX_LINES: usize = 3;
pub const MAX_QUANTITY: i64 = 3;

/// The customer of each user: user `i` is `customers[roster[i % roster.len()]]`. Every
/// customer appears once. Customers with a tight credit limit take every fourth place starting
/// at the second, while they last, so even a run with two users has one whose orders decline,
/// and a bigger run spreads them out instead of bunching them at the end.
pub fn roster(customers: &[Customer]) -> Vec<usize> {
    let (mut tight, mut roomy): (Vec<usize>, Vec<usize>) =
        (0..customers.len()).partition(|&i| customers[i].credit_limit_minor < TIGHT_LIMIT_MINOR);
    tight.reverse();
    roomy.reverse();
    let mut out = Vec::with_capacity(customers.len());
    while out.len() < customers.len() {
        let tight_turn = out.len() % 4 == 1;
        let next = if tight_turn {
            tight.pop().or_else(|| roomy.pop())
        } else {
            roomy.pop().or_else(|| tight.pop())
        };
        match next {
            Some(i) => out.push(i),
            None => break,
        }
    }
    out
}

/// The customer index of goose user `user_index` (goose counts users from 0 as it launches
/// them).
pub fn customer_of(roster: &[usize], user_index: usize) -> usize {
    roster
        .get(user_index % roster.len().max(1))
        .copied()
        .unwrap_or(0)
}

pub fn is_scarce(sku: &Sku) -> bool {
    sku.as_str().starts_with(SCARCE_PREFIX)
}

/// 1 to [`MAX_LINES`] lines with distinct SKUs and 1 to [`MAX_QUANTITY`] units each; a line asks
/// for a scarce SKU with probability [`SCARCE_SHARE`] (while the others are well stocked).
pub fn order_lines(rng: &mut impl Rng, skus: &[Sku]) -> Vec<OrderLine> {
    let (scarce, plenty): (Vec<&Sku>, Vec<&Sku>) = skus.iter().partition(|s| is_scarce(s));
    let wanted = rng.random_range(1..=MAX_LINES).min(skus.len());
    let mut lines: Vec<OrderLine> = Vec::with_capacity(wanted);
    // Bounded: each try either adds a line or hits a SKU already taken.
    for _ in 0..wanted * 8 {
        if lines.len() == wanted {
            break;
        }
        let pool = if !scarce.is_empty() && (plenty.is_empty() || rng.random_bool(SCARCE_SHARE)) {
            &scarce
        } else {
            &plenty
        };
        let Some(sku) = pool.choose(rng) else { break };
        if lines.iter().any(|l| &l.sku == *sku) {
            continue;
        }
        let quantity = Quantity::new(rng.random_range(1..=MAX_QUANTITY))
            .unwrap_or_else(|e| unreachable!("1..={MAX_QUANTITY} is a valid quantity: {e}"));
        lines.push(OrderLine {
            sku: (*sku).clone(),
            quantity,
        });
    }
    lines
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use contracts::domain::CustomerId;
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    use super::*;

    fn customer(id: &str, limit: i64) -> Customer {
        Customer {
            id: CustomerId::parse(id).unwrap(),
            token: format!("token-{id}"),
            credit_limit_minor: limit,
        }
    }

    fn seeded() -> Vec<Customer> {
        let mut c: Vec<Customer> = (1..=50)
            .map(|n| customer(&format!("cust-{n:04}"), 100_000_000_000))
            .collect();
        c.extend((1..=5).map(|n| customer(&format!("cust-broke-{n:02}"), 1_000)));
        c
    }

    #[test]
    fn two_users_are_one_customer_with_room_and_one_whose_orders_decline() {
        let customers = seeded();
        let r = roster(&customers);
        let first = &customers[customer_of(&r, 0)];
        let second = &customers[customer_of(&r, 1)];
        assert!(first.credit_limit_minor >= TIGHT_LIMIT_MINOR);
        assert!(second.credit_limit_minor < TIGHT_LIMIT_MINOR);
    }

    #[test]
    fn every_customer_is_used_once_and_tight_ones_are_spread_out() {
        let customers = seeded();
        let r = roster(&customers);
        assert_eq!(r.len(), customers.len());
        assert_eq!(r.iter().collect::<BTreeSet<_>>().len(), customers.len());
        let tight_places: Vec<usize> = (0..r.len())
            .filter(|&i| customers[r[i]].credit_limit_minor < TIGHT_LIMIT_MINOR)
            .collect();
        assert_eq!(tight_places, vec![1, 5, 9, 13, 17]);
        // More users than customers wrap around.
        assert_eq!(customer_of(&r, customers.len() + 1), customer_of(&r, 1));
    }

    #[test]
    fn a_roster_of_only_tight_or_only_roomy_customers_still_has_everyone() {
        let only_tight: Vec<Customer> = (1..=3)
            .map(|n| customer(&format!("cust-broke-{n:02}"), 1))
            .collect();
        assert_eq!(roster(&only_tight).len(), 3);
        assert_eq!(customer_of(&[], 7), 0);
    }

    #[test]
    fn order_lines_have_distinct_skus_bounded_quantities_and_sometimes_a_scarce_sku() {
        let skus: Vec<Sku> = [
            "SKU-1001",
            "SKU-1002",
            "SKU-1003",
            "SKU-SCARCE-1",
            "SKU-SCARCE-2",
        ]
        .iter()
        .map(|s| Sku::parse(*s).unwrap())
        .collect();
        let mut rng = StdRng::seed_from_u64(7);
        let mut scarce_lines = 0;
        let mut total_lines = 0;
        let mut sizes = BTreeSet::new();
        for _ in 0..2_000 {
            let lines = order_lines(&mut rng, &skus);
            assert!((1..=MAX_LINES).contains(&lines.len()), "{lines:?}");
            let distinct: BTreeSet<&Sku> = lines.iter().map(|l| &l.sku).collect();
            assert_eq!(distinct.len(), lines.len(), "{lines:?}");
            for l in &lines {
                assert!((1..=MAX_QUANTITY).contains(&l.quantity.get()));
            }
            sizes.insert(lines.len());
            total_lines += lines.len();
            scarce_lines += lines.iter().filter(|l| is_scarce(&l.sku)).count();
        }
        assert_eq!(sizes, BTreeSet::from([1, 2, 3]));
        let share = scarce_lines as f64 / total_lines as f64;
        assert!((0.05..0.2).contains(&share), "scarce share {share}");
    }

    #[test]
    fn order_lines_from_a_catalog_of_one_sku_have_one_line() {
        let skus = vec![Sku::parse("SKU-SCARCE-1").unwrap()];
        let mut rng = StdRng::seed_from_u64(1);
        for _ in 0..50 {
            assert_eq!(order_lines(&mut rng, &skus).len(), 1);
        }
    }
}
