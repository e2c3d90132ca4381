//! The payment ledger's pure core: events, the fold into balances, and an order's payment state.
//!
//! Nothing here touches the database. [`apply`] is the one definition of what an event does to a
//! balance; the live path ([`store`](crate::store)) and the replay ([`replay`]) both use it, so a
//! rebuilt projection can only differ from the stored one if the stored one was changed behind
//! the ledger's back.

use std::collections::BTreeMap;

use contracts::domain::{CustomerId, OrderId};
use contracts::http::LedgerEntryKind;

/// One entry of the append-only ledger.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LedgerEvent {
    pub seq: i64,
    /// `None` only for a void that arrived before any authorization: the command names no
    /// customer, and the tombstone moves no money.
    pub customer_id: Option<CustomerId>,
    pub order_id: OrderId,
    pub kind: LedgerEntryKind,
    /// AUTHORIZED: the hold; CAPTURED / VOIDED: the hold taken or dropped; DECLINED: what was
    /// asked for (it moves nothing).
    pub amount_minor: i64,
    /// Why a payment was declined.
    pub reason: Option<String>,
    pub occurred_at_ms: i64,
}

/// A customer's money as the ledger says: held (authorized, not yet captured or voided) and
/// captured, up to event `last_seq`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Balance {
    pub held_minor: i64,
    pub captured_minor: i64,
    pub last_seq: i64,
}

/// Folds one event into a balance. Pure, and the only place that says what an event does.
pub fn apply(balance: Balance, event: &LedgerEvent) -> Balance {
    let amount = event.amount_minor;
    let (held, captured) = match event.kind {
        LedgerEntryKind::Authorized => (
            balance.held_minor.saturating_add(amount),
            balance.captured_minor,
        ),
        LedgerEntryKind::Declined => (balance.held_minor, balance.captured_minor),
        LedgerEntryKind::Captured => (
            balance.held_minor.saturating_sub(amount),
            balance.captured_minor.saturating_add(amount),
        ),
        LedgerEntryKind::Voided => (
            balance.held_minor.saturating_sub(amount),
            balance.captured_minor,
        ),
    };
    Balance {
        held_minor: held,
        captured_minor: captured,
        last_seq: event.seq,
    }
}

/// Replays a whole ledger (in `seq` order) into fresh balances per customer. Events without a
/// customer (void tombstones) move nothing and belong to no balance.
pub fn replay<'a>(
    events: impl IntoIterator<Item = &'a LedgerEvent>,
) -> BTreeMap<CustomerId, Balance> {
    let mut balances: BTreeMap<CustomerId, Balance> = BTreeMap::new();
    for event in events {
        if let Some(customer) = &event.customer_id {
            let entry = balances.entry(customer.clone()).or_default();
            *entry = apply(*entry, event);
        }
    }
    balances
}

/// Where one order's payment stands, folded from its events.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OrderPayment {
    /// No event yet.
    New,
    Authorized {
        customer_id: CustomerId,
        amount_minor: i64,
    },
    Declined {
        reason: String,
    },
    Captured {
        amount_minor: i64,
    },
    /// `authorized` tells a void that dropped a hold from a tombstone (a void that came first).
    Voided {
        amount_minor: i64,
        authorized: bool,
    },
}

impl OrderPayment {
    /// Folds an order's events, in `seq` order.
    pub fn of<'a>(events: impl IntoIterator<Item = &'a LedgerEvent>) -> Self {
        events.into_iter().fold(Self::New, Self::step)
    }

    fn step(self, event: &LedgerEvent) -> Self {
        let amount_minor = event.amount_minor;
        match event.kind {
            LedgerEntryKind::Authorized => match &event.customer_id {
                Some(customer_id) => Self::Authorized {
                    customer_id: customer_id.clone(),
                    amount_minor,
                },
                // The store never writes this; keep the state rather than invent a customer.
                None => self,
            },
            LedgerEntryKind::Declined => Self::Declined {
                reason: event
                    .reason
                    .clone()
                    .unwrap_or_else(|| "payment was declined".to_string()),
            },
            LedgerEntryKind::Captured => Self::Captured { amount_minor },
            LedgerEntryKind::Voided => Self::Voided {
                amount_minor,
                authorized: matches!(self, Self::Authorized { .. }),
            },
        }
    }
}

/// `AUTHORIZED` and friends, as stored.
pub fn kind_str(kind: LedgerEntryKind) -> &'static str {
    match kind {
        LedgerEntryKind::Authorized => "AUTHORIZED",
        LedgerEntryKind::Declined => "DECLINED",
        LedgerEntryKind::Captured => "CAPTURED",
        LedgerEntryKind::Voided => "VOIDED",
    }
}

pub fn parse_kind(s: &str) -> Option<LedgerEntryKind> {
    Some(match s {
        "AUTHORIZED" => LedgerEntryKind::Authorized,
        "DECLINED" => LedgerEntryKind::Declined,
        "CAPTURED" => LedgerEntryKind::Captured,
        "VOIDED" => LedgerEntryKind::Voided,
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(
        seq: i64,
        customer: Option<&str>,
        order: OrderId,
        kind: LedgerEntryKind,
        amount: i64,
    ) -> LedgerEvent {
        LedgerEvent {
            seq,
            customer_id: customer.map(|c| CustomerId::parse(c).unwrap()),
            order_id: order,
            kind,
            amount_minor: amount,
            reason: None,
            occurred_at_ms: 0,
        }
    }

    use LedgerEntryKind::*;

    #[test]
    fn authorizing_holds_capturing_moves_the_hold_and_voiding_drops_it() {
        let (a, b) = (OrderId::new(), OrderId::new());
        let events = [
            ev(1, Some("c"), a, Authorized, 300),
            ev(2, Some("c"), b, Authorized, 200),
            ev(3, Some("c"), a, Captured, 300),
            ev(4, Some("c"), b, Voided, 200),
            ev(5, Some("c"), OrderId::new(), Declined, 5_000),
        ];
        let balances = replay(&events);
        let c = CustomerId::parse("c").unwrap();
        assert_eq!(
            balances[&c],
            Balance {
                held_minor: 0,
                captured_minor: 300,
                last_seq: 5
            }
        );
    }

    #[test]
    fn a_void_tombstone_belongs_to_no_customer_and_moves_nothing() {
        let order = OrderId::new();
        let balances = replay(&[ev(1, None, order, Voided, 0)]);
        assert!(balances.is_empty());
    }

    #[test]
    fn an_orders_state_follows_its_events() {
        let o = OrderId::new();
        assert_eq!(OrderPayment::of(&[]), OrderPayment::New);
        let auth = ev(1, Some("c"), o, Authorized, 100);
        assert!(matches!(
            OrderPayment::of([&auth]),
            OrderPayment::Authorized {
                amount_minor: 100,
                ..
            }
        ));
        let captured = [auth.clone(), ev(2, Some("c"), o, Captured, 100)];
        assert_eq!(
            OrderPayment::of(&captured),
            OrderPayment::Captured { amount_minor: 100 }
        );
        let voided = [auth, ev(2, Some("c"), o, Voided, 100)];
        assert_eq!(
            OrderPayment::of(&voided),
            OrderPayment::Voided {
                amount_minor: 100,
                authorized: true
            }
        );
        let tombstone = ev(1, None, o, Voided, 0);
        assert_eq!(
            OrderPayment::of([&tombstone]),
            OrderPayment::Voided {
                amount_minor: 0,
                authorized: false
            }
        );
        let mut declined = ev(2, Some("c"), o, Declined, 100);
        declined.reason = Some("no".into());
        assert_eq!(
            OrderPayment::of([&tombstone, &declined]),
            OrderPayment::Declined {
                reason: "no".into()
            }
        );
    }

    #[test]
    fn kinds_round_trip_through_their_stored_names() {
        for k in [Authorized, Declined, Captured, Voided] {
            assert_eq!(parse_kind(kind_str(k)), Some(k));
        }
        assert_eq!(parse_kind("REFUNDED"), None);
    }
}
