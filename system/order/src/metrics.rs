//! The saga's metrics, recorded by the order service after each transaction that moved a saga
//! commits (a transaction that is retried or rolled back counts nothing).
//!
//! | metric | type | labels | what |
//! |---|---|---|---|
//! | `saga_started_total` | counter | | orders placed (a replayed `Idempotency-Key` starts nothing) |
//! | `saga_completed_total` | counter | `status`, `reason` | orders that became terminal: `CONFIRMED` (`reason="none"`), `REJECTED` (`stock_rejected`), `CANCELLED` (`payment_declined`, `step_timeout`) |
//! | `saga_duration_seconds` | histogram | `status` | from the order's placement to its terminal status |
//! | `saga_step_duration_seconds` | histogram | `step` | time in a step, from the saga's last change to leaving the step |
//! | `saga_step_timeouts_total` | counter | `step` | steps whose deadline passed (the command is resent, or the saga compensates) |
//! | `saga_compensations_total` | counter | `reason` | compensations started: `payment_declined`, `step_timeout`, or `late_success` (a success after the order ended, undone) |
//! | `saga_in_flight` | gauge | | orders still PENDING (the service's database: every instance reports the same figure) |
//! | `saga_oldest_pending_age_seconds` | gauge | | age of the oldest PENDING order; 0 when none |
//! | `order_admission_rejected_total` | counter | `reason` | `POST /orders` refused with 503 by [`crate::admission`]: `backlog` or `in_flight` |
//! | `order_admission_refusing` | gauge | | 1 while the orders in flight are at admission control's limit |
//! | `order_admission_limit` | gauge | | admission control's current limit on orders in flight |

use contracts::domain::OrderStatus;
use metrics::{Unit, describe_counter, describe_gauge, describe_histogram};

use crate::saga::SagaStep;

pub const SAGA_STARTED: &str = "saga_started_total";
pub const SAGA_COMPLETED: &str = "saga_completed_total";
pub const SAGA_DURATION: &str = "saga_duration_seconds";
pub const SAGA_STEP_DURATION: &str = "saga_step_duration_seconds";
pub const SAGA_STEP_TIMEOUTS: &str = "saga_step_timeouts_total";
pub const SAGA_COMPENSATIONS: &str = "saga_compensations_total";
pub const SAGA_IN_FLIGHT: &str = "saga_in_flight";
pub const SAGA_OLDEST_PENDING: &str = "saga_oldest_pending_age_seconds";

/// Gives each metric its help text and unit (idempotent).
pub fn describe() {
    platform::metrics::install();
    describe_counter!(SAGA_STARTED, Unit::Count, "Orders placed: sagas started.");
    describe_counter!(
        SAGA_COMPLETED,
        Unit::Count,
        "Orders that became terminal, by status and reason class."
    );
    describe_histogram!(
        SAGA_DURATION,
        Unit::Seconds,
        "From an order's placement to its terminal status, by status."
    );
    describe_histogram!(
        SAGA_STEP_DURATION,
        Unit::Seconds,
        "Time a saga spent in a step before leaving it, from the saga's last change, by step."
    );
    describe_counter!(
        SAGA_STEP_TIMEOUTS,
        Unit::Count,
        "Saga steps whose deadline passed, by step."
    );
    describe_counter!(
        SAGA_COMPENSATIONS,
        Unit::Count,
        "Compensations started, by reason: payment_declined, step_timeout or late_success."
    );
    describe_gauge!(SAGA_IN_FLIGHT, Unit::Count, "Orders still PENDING.");
    // Counters start at zero, so a dashboard's rate() has a series before the first event.
    metrics::counter!(SAGA_STARTED).increment(0);
    for (status, reason) in [
        ("CONFIRMED", "none"),
        ("REJECTED", "stock_rejected"),
        ("CANCELLED", "payment_declined"),
        ("CANCELLED", "step_timeout"),
    ] {
        metrics::counter!(SAGA_COMPLETED, "status" => status, "reason" => reason).increment(0);
    }
    for step in [
        SagaStep::ReservingStock,
        SagaStep::AuthorizingPayment,
        SagaStep::Completing,
        SagaStep::Compensating,
    ] {
        metrics::counter!(SAGA_STEP_TIMEOUTS, "step" => step.as_str()).increment(0);
    }
    for reason in ["payment_declined", "step_timeout", "late_success"] {
        metrics::counter!(SAGA_COMPENSATIONS, "reason" => reason).increment(0);
    }
    describe_gauge!(
        SAGA_OLDEST_PENDING,
        Unit::Seconds,
        "Age of the oldest PENDING order; 0 when none."
    );
}

/// What one committed saga transaction changed, to be counted.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Transition {
    /// The step left, and how long since the saga last changed.
    pub step_left: Option<(SagaStep, i64)>,
    /// The terminal status reached, the reason class, and how long since the order was placed.
    pub terminal: Option<(OrderStatus, &'static str, i64)>,
    /// A step timed out.
    pub timed_out: Option<SagaStep>,
    /// A compensation started, and why.
    pub compensation: Option<&'static str>,
}

impl Transition {
    /// Counts it. Call after the transaction committed.
    pub fn record(&self) {
        if let Some((step, ms)) = self.step_left {
            metrics::histogram!(SAGA_STEP_DURATION, "step" => step.as_str()).record(seconds(ms));
        }
        if let Some(step) = self.timed_out {
            metrics::counter!(SAGA_STEP_TIMEOUTS, "step" => step.as_str()).increment(1);
        }
        if let Some(reason) = self.compensation {
            metrics::counter!(SAGA_COMPENSATIONS, "reason" => reason).increment(1);
        }
        if let Some((status, reason, ms)) = self.terminal {
            let status = status.as_str();
            metrics::counter!(SAGA_COMPLETED, "status" => status, "reason" => reason).increment(1);
            metrics::histogram!(SAGA_DURATION, "status" => status).record(seconds(ms));
        }
    }
}

fn seconds(ms: i64) -> f64 {
    ms.max(0) as f64 / 1_000.0
}

/// Sets the PENDING gauges.
pub fn record_pending(pending: i64, oldest_created_at_ms: Option<i64>, now_ms: i64) {
    metrics::gauge!(SAGA_IN_FLIGHT).set(pending as f64);
    metrics::gauge!(SAGA_OLDEST_PENDING)
        .set(seconds(oldest_created_at_ms.map_or(0, |t| now_ms - t)));
}
