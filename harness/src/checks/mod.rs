//! The invariant checkers: what the harness proves after every run, once faults are healed and
//! the system has converged (DESIGN.md, "Invariants the harness proves after every run").
//!
//! Like Jepsen's checkers, every check is a pure function of what the harness knows (a
//! [`History`]: what it seeded, what the load generator sent and saw) and what the system holds
//! afterwards (a [`Snapshot`] read through the admin endpoints, the read model and the
//! dead-letter topics), and its [`InvariantVerdict`] names *which* orders, SKUs, keys or dead
//! letters violate the invariant, never only a boolean.
//!
//! | invariant | violation kinds |
//! |---|---|
//! | [`no_lost_orders`] | `lost`, `altered`, `unexpected` (notes: `recovered`) |
//! | [`sagas_terminal`] | `pending`, `terminal_status_changed` |
//! | [`exactly_once_money`] | `not_captured`, `double_captured`, `wrong_amount`, `wrong_total`, `wrong_customer`, `still_held`, `money_on_failed_order`, `money_without_order`, `over_credit_limit`, `account_mismatch`, `could_not_verify` |
//! | [`stock_conservation`] | `not_conserved`, `oversold`, `sales_disagree`, `reservations_disagree`, `not_sold`, `sold_lines_differ`, `leaked`, `sold_for_failed_order`, `sold_without_order`, `could_not_verify` |
//! | [`compensation`] | `not_cancelled`, `stock_not_released`, `money_not_returned` |
//! | [`read_model_convergence`] | `missing_in_view`, `stale`, `view_without_order`, `could_not_verify` |
//! | [`idempotency`] | `duplicate_order_for_key`, `replay_returned_other_order`, `duplicate_order_suspected`, `duplicate_order_row`, `duplicate_ledger_entry`, `duplicate_payment_record`, `duplicate_reservation` |
//! | [`no_dead_letters`] | `dead_letter` (a note instead when poison was injected), `could_not_verify` |
//!
//! `could_not_verify` (subject `evidence`, naming what could not be read) is how a check fails
//! when it cannot read all its evidence: the seed missing from the history, a dead-letter
//! partition not read to its end, a part of the read model that could not be listed. A check
//! never passes on nothing.
//!
//! # Independent evidence
//!
//! A check trusts the system as little as it can (DESIGN.md): where the harness knows something
//! itself, the system is compared with that, not with another of its own figures. What each
//! invariant uses besides the system's word:
//!
//! - [`no_lost_orders`]: the order ids the gateway acknowledged to the load, each with the
//!   customer and lines the client sent (an acknowledged order the write model holds for another
//!   customer or other lines is `altered`), and the attempts without a definite answer with their
//!   customer and lines.
//! - [`sagas_terminal`]: the terminal statuses clients were shown (`GET /api/orders/{id}`, and
//!   the read model while following the pending orders after the load); each must still be the
//!   order's status in the write and read models.
//! - [`exactly_once_money`]: the seeded unit prices times the lines the client sent (each
//!   order's total and its capture must equal that, not the order's own total); the seeded credit
//!   limits, against the ledger replayed in order (the most ever captured plus held); the customer
//!   who placed each order, against the account its payment was taken from.
//! - [`stock_conservation`]: the seeded stock plus the restocks the load sent (by outcome: an
//!   unanswered one may or may not count) against available + reserved + sold, instead of the
//!   inventory's own `received` (the database's CHECK already ties those together, and forbids
//!   negatives); the lines the clients sent for the CONFIRMED orders against `sold` and against
//!   every committed reservation.
//! - [`compensation`]: an order a client was shown CANCELLED must be compensated whatever the
//!   system says now.
//! - [`read_model_convergence`]: the whole read model listed apart from the write model, so a
//!   view without an order is found; a listing that could not be completed is a gap.
//! - [`idempotency`]: the idempotency keys the load sent and the order ids each was answered
//!   with. Its `duplicate_order_row`, `duplicate_ledger_entry` and `duplicate_reservation` only
//!   restate unique keys the databases already enforce (kept: cheap, and an external backend's
//!   schema may lack them); the evidence of the harness's own that covers the same ground is
//!   `duplicate_order_for_key` and `unexpected` (orders), `wrong_amount` and
//!   `over_credit_limit` (money), `sales_disagree` (stock).
//! - [`no_dead_letters`]: the dead-letter partitions' end offsets, read before consuming; the
//!   reader must reach each one.
//!
//! Saga completion (an SLO, [`crate::slo`]) is timed on the harness's clock only
//! ([`crate::load`]'s saga watch), not with the system's timestamps.
//!
//! Orders still PENDING are judged only by [`sagas_terminal`], [`read_model_convergence`],
//! [`idempotency`] and [`no_lost_orders`]: what their money and stock *should* be is not decided
//! yet, and reporting it under the money or stock invariant would blame the wrong mechanism.
//!
//! # Layout
//! - [`model`]: the inputs: [`History`], [`Snapshot`], [`DeadLetter`].
//! - `orders`: [`no_lost_orders`] and [`idempotency`], the two checks that read the history.
//! - `saga`: [`sagas_terminal`], [`read_model_convergence`], [`compensation`].
//! - `money`: [`exactly_once_money`]. `stock`: [`stock_conservation`].
//! - `dead_letters`: [`no_dead_letters`].
//! - [`collect`]: taking a [`Snapshot`] through the admin API and waiting for convergence.

pub mod collect;
mod dead_letters;
pub mod model;
mod money;
mod orders;
mod saga;
mod stock;

#[cfg(test)]
mod fixture;

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use contracts::domain::{CustomerId, OrderId, Sku};
use serde::{Deserialize, Serialize};

pub use collect::{Converged, converge, settled, snapshot};
pub use dead_letters::no_dead_letters;
pub use model::{
    AttemptOutcome, Completion, Coverage, DeadLetter, Gap, History, Observed, OrderAttempt,
    Restock, Seeded, SeededProduct, Snapshot,
};
pub use money::exactly_once_money;
pub use orders::{idempotency, no_lost_orders};
pub use saga::{compensation, read_model_convergence, sagas_terminal};
pub use stock::stock_conservation;

/// The kind of violation of every check that could not read all its evidence.
pub const COULD_NOT_VERIFY: &str = "could_not_verify";

/// A `could_not_verify` violation per gap of `coverage`; `what` names the evidence when nobody
/// read it at all.
fn unread(coverage: &model::Coverage, what: &str) -> Vec<Violation> {
    match coverage {
        model::Coverage::Complete => Vec::new(),
        model::Coverage::NotRead => vec![Violation::could_not_verify(what, "not read")],
        model::Coverage::Incomplete { gaps } => gaps
            .iter()
            .map(|g| Violation::could_not_verify(&g.what, &g.details))
            .collect(),
    }
}

/// The seed, or the `could_not_verify` violation of a check that needs it.
fn seed_of(history: &History) -> Result<&model::Seeded, Violation> {
    history.seed.as_ref().ok_or_else(|| {
        Violation::could_not_verify(
            "the seed",
            "the history does not say what was seeded (prices, stock, credit limits)",
        )
    })
}

/// What the scenario did that changes what a check may accept.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Policy {
    /// The scenario published poison messages on purpose, so dead letters are expected (they are
    /// still listed in the verdict).
    pub poison_injected: bool,
}

/// The eight invariants, by their stable names (`no_lost_orders`, ...), in DESIGN.md's order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Invariant {
    NoLostOrders,
    SagasTerminal,
    ExactlyOnceMoney,
    StockConservation,
    Compensation,
    ReadModelConvergence,
    Idempotency,
    NoDeadLetters,
}

impl Invariant {
    pub const ALL: [Invariant; 8] = [
        Self::NoLostOrders,
        Self::SagasTerminal,
        Self::ExactlyOnceMoney,
        Self::StockConservation,
        Self::Compensation,
        Self::ReadModelConvergence,
        Self::Idempotency,
        Self::NoDeadLetters,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Self::NoLostOrders => "no_lost_orders",
            Self::SagasTerminal => "sagas_terminal",
            Self::ExactlyOnceMoney => "exactly_once_money",
            Self::StockConservation => "stock_conservation",
            Self::Compensation => "compensation",
            Self::ReadModelConvergence => "read_model_convergence",
            Self::Idempotency => "idempotency",
            Self::NoDeadLetters => "no_dead_letters",
        }
    }

    /// Runs this invariant's check.
    pub fn check(
        self,
        history: &History,
        snapshot: &Snapshot,
        policy: &Policy,
    ) -> InvariantVerdict {
        match self {
            Self::NoLostOrders => no_lost_orders(history, snapshot),
            Self::SagasTerminal => sagas_terminal(history, snapshot),
            Self::ExactlyOnceMoney => exactly_once_money(history, snapshot),
            Self::StockConservation => stock_conservation(history, snapshot),
            Self::Compensation => compensation(history, snapshot),
            Self::ReadModelConvergence => read_model_convergence(snapshot),
            Self::Idempotency => idempotency(history, snapshot),
            Self::NoDeadLetters => no_dead_letters(snapshot, policy),
        }
    }
}

impl fmt::Display for Invariant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// An invariant name that is not one of the eight.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown invariant {given:?}; expected one of: {}", Invariant::ALL.map(Invariant::name).join(", "))]
pub struct UnknownInvariant {
    pub given: String,
}

impl FromStr for Invariant {
    type Err = UnknownInvariant;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|i| i.name() == s)
            .ok_or_else(|| UnknownInvariant { given: s.into() })
    }
}

/// All eight verdicts, in [`Invariant::ALL`] order.
pub fn check_all(history: &History, snapshot: &Snapshot, policy: &Policy) -> Vec<InvariantVerdict> {
    check_selected(&Invariant::ALL, history, snapshot, policy)
}

/// The verdicts of the invariants a scenario selected, in [`Invariant::ALL`] order whatever the
/// order of `selected`, each once.
pub fn check_selected(
    selected: &[Invariant],
    history: &History,
    snapshot: &Snapshot,
    policy: &Policy,
) -> Vec<InvariantVerdict> {
    Invariant::ALL
        .into_iter()
        .filter(|i| selected.contains(i))
        .map(|i| i.check(history, snapshot, policy))
        .collect()
}

/// One invariant's result, as it goes into `report.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InvariantVerdict {
    pub name: Invariant,
    pub held: bool,
    /// One line for humans, e.g. `violated: lost 2, unexpected 1 (120 acknowledged, ...)`.
    pub summary: String,
    pub violations: Vec<Violation>,
    /// Findings that do not break the invariant but belong in the report: orders whose `POST`
    /// outcome was unknown and that exist (`recovered`), dead letters of injected poison.
    pub notes: Vec<Violation>,
}

impl InvariantVerdict {
    /// `scope` says what was examined, e.g. `120 orders`.
    fn new(
        name: Invariant,
        scope: impl fmt::Display,
        violations: Vec<Violation>,
        notes: Vec<Violation>,
    ) -> Self {
        let held = violations.is_empty();
        let summary = if held {
            format!("held ({scope})")
        } else {
            let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
            for v in &violations {
                *counts.entry(v.kind.as_str()).or_default() += 1;
            }
            let counts: Vec<String> = counts.iter().map(|(k, n)| format!("{k} {n}")).collect();
            format!("violated: {} ({scope})", counts.join(", "))
        };
        Self {
            name,
            held,
            summary,
            violations,
            notes,
        }
    }

    /// The violations of one kind (tests and reports group by kind).
    pub fn of_kind<'a>(&'a self, kind: &'a str) -> impl Iterator<Item = &'a Violation> + 'a {
        self.violations.iter().filter(move |v| v.kind == kind)
    }
}

/// One thing that breaks (or, among notes, qualifies) an invariant.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Violation {
    /// A stable snake_case name, e.g. `lost`, `double_captured`, `leaked` (see the module table).
    pub kind: String,
    /// What it is about; flattened, so the JSON reads `{"kind": "lost", "subject": "order",
    /// "order_id": "...", "details": "..."}`.
    #[serde(flatten)]
    pub subject: Subject,
    /// The facts, for humans: statuses, amounts, quantities.
    pub details: String,
}

/// What a [`Violation`] is about.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "subject", rename_all = "snake_case")]
pub enum Subject {
    Order {
        order_id: OrderId,
    },
    Sku {
        sku: Sku,
    },
    /// An idempotency key as a customer used it (keys are scoped to the customer).
    Key {
        customer_id: CustomerId,
        idempotency_key: String,
    },
    Customer {
        customer_id: CustomerId,
    },
    DeadLetter {
        topic: String,
        partition: i32,
        offset: i64,
    },
    /// Evidence the check could not read (`could_not_verify`): a dead-letter partition
    /// (`payment.commands.dlq/0`), the read model, the seed.
    Evidence {
        what: String,
    },
}

impl Violation {
    fn new(kind: &str, subject: Subject, details: impl Into<String>) -> Self {
        Self {
            kind: kind.into(),
            subject,
            details: details.into(),
        }
    }

    fn for_order(kind: &str, order_id: OrderId, details: impl Into<String>) -> Self {
        Self::new(kind, Subject::Order { order_id }, details)
    }

    fn for_sku(kind: &str, sku: &Sku, details: impl Into<String>) -> Self {
        Self::new(kind, Subject::Sku { sku: sku.clone() }, details)
    }

    fn for_customer(kind: &str, customer_id: &CustomerId, details: impl Into<String>) -> Self {
        Self::new(
            kind,
            Subject::Customer {
                customer_id: customer_id.clone(),
            },
            details,
        )
    }

    /// The check could not read all its evidence, so it cannot say the invariant held.
    fn could_not_verify(what: impl Into<String>, details: impl Into<String>) -> Self {
        Self::new(
            COULD_NOT_VERIFY,
            Subject::Evidence { what: what.into() },
            details,
        )
    }

    /// The order this is about, if it is about one.
    pub fn order_id(&self) -> Option<OrderId> {
        match &self.subject {
            Subject::Order { order_id } => Some(*order_id),
            _ => None,
        }
    }

    /// The SKU this is about, if it is about one.
    pub fn sku(&self) -> Option<&Sku> {
        match &self.subject {
            Subject::Sku { sku } => Some(sku),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::fixture::World;
    use super::*;

    #[test]
    fn a_clean_history_passes_all_eight_invariants() {
        let mut w = World::new();
        let first = w.confirmed("cust-1", "k1", &[("SKU-A", 2)]);
        w.confirmed("cust-2", "k2", &[("SKU-A", 1), ("SKU-B", 3)]);
        w.rejected("cust-1", "k3", &[("SKU-B", 500)]);
        w.declined("cust-3", "k4", &[("SKU-B", 1)]);
        w.timed_out_at_payment("cust-2", "k5", &[("SKU-A", 4)]);
        w.replay(0, first);
        w.unknown_not_created("cust-1", "k6", &[("SKU-A", 1)]);
        let recovered = w.unknown_but_created("cust-3", "k7", &[("SKU-B", 2)]);
        w.observe(first);
        w.observe(recovered);
        w.restock("SKU-A", 5, Completion::Ok);
        w.restock("SKU-B", 2, Completion::Info);
        w.restock("SKU-B", 3, Completion::Fail);

        let verdicts = check_all(&w.history, &w.snapshot, &Policy::default());

        assert_eq!(verdicts.len(), 8);
        for v in &verdicts {
            assert!(v.held, "{}: {} {:?}", v.name, v.summary, v.violations);
            assert!(v.summary.starts_with("held"), "{}", v.summary);
        }
        let names: Vec<&str> = verdicts.iter().map(|v| v.name.name()).collect();
        assert_eq!(names, Invariant::ALL.map(Invariant::name));
    }

    #[test]
    fn a_selection_runs_only_the_named_invariants_in_the_standard_order() {
        let w = World::new();
        let verdicts = check_selected(
            &[Invariant::NoDeadLetters, Invariant::NoLostOrders],
            &w.history,
            &w.snapshot,
            &Policy::default(),
        );
        let names: Vec<Invariant> = verdicts.iter().map(|v| v.name).collect();
        assert_eq!(names, [Invariant::NoLostOrders, Invariant::NoDeadLetters]);
    }

    #[test]
    fn invariant_names_parse_and_an_unknown_name_lists_the_valid_ones() {
        for i in Invariant::ALL {
            assert_eq!(i.name().parse::<Invariant>(), Ok(i));
            assert_eq!(serde_json::to_value(i).unwrap(), i.name());
        }
        let err = "no_lost_order"
            .parse::<Invariant>()
            .unwrap_err()
            .to_string();
        assert!(err.contains("no_lost_order\""), "{err}");
        assert!(err.contains("no_lost_orders, sagas_terminal"), "{err}");
    }

    #[test]
    fn a_verdict_serializes_with_its_violations_subjects_flattened() {
        let mut w = World::new();
        let id = w.confirmed("cust-1", "k1", &[("SKU-A", 1)]);
        w.snapshot.orders.clear();
        let verdict = no_lost_orders(&w.history, &w.snapshot);

        let json = serde_json::to_value(&verdict).unwrap();

        assert_eq!(json["name"], "no_lost_orders");
        assert_eq!(json["held"], false);
        assert_eq!(json["violations"][0]["kind"], "lost");
        assert_eq!(json["violations"][0]["subject"], "order");
        assert_eq!(json["violations"][0]["order_id"], id.to_string());
        let back: InvariantVerdict = serde_json::from_value(json).unwrap();
        assert_eq!(back, verdict);
    }
}
