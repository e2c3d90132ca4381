//! The order saga as a pure state machine.
//!
//! [`decide`] takes the saga's durable state, the order's state, one input (an inventory event, a
//! payment event, or a timeout) and the clock, and returns a [`Decision`]: the new saga state, the
//! new order state, and the commands to send. It does no I/O, so every transition, compensation
//! included, is unit-tested below; `crate::events` loads the state, calls `decide`, and writes the
//! result together with the commands (outbox) in one transaction.
//!
//! ```text
//! RESERVING_STOCK ──StockReserved──► AUTHORIZING_PAYMENT ──PaymentAuthorized──► COMPLETING ──both acks──► DONE
//!        │                                   │                                (CommitStock + CapturePayment)
//!        ├──StockRejected──► DONE (REJECTED) ├──PaymentDeclined──► COMPENSATING ──acks──► DONE
//!        └──timeout × max──► COMPENSATING    └──timeout × max────► COMPENSATING    (ReleaseStock [+ VoidPayment])
//! ```
//!
//! Choices worth knowing:
//! - `attempts` counts how many times the current step's command was sent, so entering a step
//!   sets it to 1; a timeout resends while `attempts < max_attempts`, then compensates.
//! - COMPLETING and COMPENSATING resend their outstanding commands forever (they must happen),
//!   with an exponentially growing deadline capped at [`SagaPolicy::max_backoff_ms`].
//! - COMPENSATING is DONE once every compensation it sent is acknowledged: `StockReleased`, and
//!   `PaymentVoided` too when a `VoidPayment` was sent (the money side must be settled as surely
//!   as the stock side).
//! - An event that does not fit the current step changes nothing, except a late success after the
//!   order ended, which is compensated on its own: `StockReserved` for a CANCELLED or REJECTED
//!   order sends `ReleaseStock`, `PaymentAuthorized` for a CANCELLED order sends `VoidPayment`.
//!   The step is left alone there: the command is durable in the outbox and idempotent downstream.

use std::fmt;
use std::str::FromStr;

use contracts::domain::{CustomerId, InvalidValue, Money, OrderId, OrderStatus};
use contracts::http::OrderLine;
use contracts::messages::{
    InventoryCommand, InventoryEvent, MessageKind, PaymentCommand, PaymentEvent, topics,
};

/// Where the saga stands: the step whose answer it waits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SagaStep {
    ReservingStock,
    AuthorizingPayment,
    /// The order is CONFIRMED; waiting for `StockCommitted` and `PaymentCaptured`.
    Completing,
    /// The order is CANCELLED; waiting for the compensations to be acknowledged.
    Compensating,
    Done,
}

impl SagaStep {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ReservingStock => "RESERVING_STOCK",
            Self::AuthorizingPayment => "AUTHORIZING_PAYMENT",
            Self::Completing => "COMPLETING",
            Self::Compensating => "COMPENSATING",
            Self::Done => "DONE",
        }
    }
}

impl fmt::Display for SagaStep {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for SagaStep {
    type Err = InvalidValue;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(match s {
            "RESERVING_STOCK" => Self::ReservingStock,
            "AUTHORIZING_PAYMENT" => Self::AuthorizingPayment,
            "COMPLETING" => Self::Completing,
            "COMPENSATING" => Self::Compensating,
            "DONE" => Self::Done,
            other => {
                return Err(InvalidValue {
                    what: "saga step",
                    reason: format!("unknown step {other:?}"),
                });
            }
        })
    }
}

/// Timing rules of the saga (`SAGA_STEP_TIMEOUT_MS`, `SAGA_MAX_ATTEMPTS`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SagaPolicy {
    /// How long a step waits for its answer before the command is resent.
    pub step_timeout_ms: i64,
    /// How many times RESERVING_STOCK and AUTHORIZING_PAYMENT send their command before the saga
    /// gives up and compensates.
    pub max_attempts: i64,
    /// The cap on the growing wait between resends in COMPLETING and COMPENSATING.
    pub max_backoff_ms: i64,
}

impl Default for SagaPolicy {
    fn default() -> Self {
        Self {
            step_timeout_ms: 5_000,
            max_attempts: 3,
            max_backoff_ms: 60_000,
        }
    }
}

impl SagaPolicy {
    fn deadline(&self, now_ms: i64) -> Option<i64> {
        Some(now_ms.saturating_add(self.step_timeout_ms))
    }

    /// The deadline after the `attempts`-th send of a command that is resent without limit:
    /// the step timeout, doubled per resend, capped.
    fn backoff_deadline(&self, now_ms: i64, attempts: i64) -> Option<i64> {
        let doublings = u32::try_from((attempts - 1).clamp(0, 20)).unwrap_or(20);
        let wait = self
            .step_timeout_ms
            .saturating_mul(1i64 << doublings)
            .min(self.max_backoff_ms.max(self.step_timeout_ms));
        Some(now_ms.saturating_add(wait))
    }
}

/// The durable state of one saga (a row of `sagas`, without its bookkeeping columns).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SagaState {
    pub step: SagaStep,
    /// How many times the current step's command has been sent.
    pub attempts: i64,
    /// When the current step times out; `None` once DONE.
    pub deadline_at_ms: Option<i64>,
    pub last_error: Option<String>,
    /// COMPLETING: acknowledgements seen so far.
    pub stock_committed: bool,
    pub payment_captured: bool,
    /// COMPENSATING: acknowledgements seen so far, and whether a `VoidPayment` was sent.
    pub stock_released: bool,
    pub void_requested: bool,
    pub payment_voided: bool,
}

impl SagaState {
    /// A new saga: `ReserveStock` has just been sent (in the transaction that created the order).
    pub fn start(now_ms: i64, policy: &SagaPolicy) -> Self {
        Self {
            step: SagaStep::ReservingStock,
            attempts: 1,
            deadline_at_ms: policy.deadline(now_ms),
            last_error: None,
            stock_committed: false,
            payment_captured: false,
            stock_released: false,
            void_requested: false,
            payment_voided: false,
        }
    }
}

/// What the saga reads and changes of an order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrderState {
    pub order_id: OrderId,
    pub customer_id: CustomerId,
    pub items: Vec<OrderLine>,
    pub status: OrderStatus,
    pub total_minor: Option<Money>,
    pub reason: Option<String>,
}

/// What drives the saga.
#[derive(Debug, Clone, PartialEq)]
pub enum SagaInput {
    Inventory(InventoryEvent),
    Payment(PaymentEvent),
    /// The timeout pass found the saga's deadline passed.
    Timeout,
}

/// A command the saga sends.
#[derive(Debug, Clone, PartialEq)]
pub enum Outgoing {
    Inventory(InventoryCommand),
    Payment(PaymentCommand),
}

impl Outgoing {
    pub fn topic(&self) -> &'static str {
        match self {
            Self::Inventory(_) => topics::INVENTORY_COMMANDS,
            Self::Payment(_) => topics::PAYMENT_COMMANDS,
        }
    }

    pub fn kind(&self) -> &'static str {
        match self {
            Self::Inventory(c) => c.kind(),
            Self::Payment(c) => c.kind(),
        }
    }
}

/// The outcome of one input.
#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    pub saga: SagaState,
    pub order: OrderState,
    pub commands: Vec<Outgoing>,
    /// Why an input was ignored or treated specially, for the logs.
    pub note: Option<&'static str>,
}

impl Decision {
    fn unchanged(saga: &SagaState, order: &OrderState) -> Self {
        Self {
            saga: saga.clone(),
            order: order.clone(),
            commands: Vec::new(),
            note: None,
        }
    }

    fn ignore(&mut self, why: &'static str) {
        self.note = Some(why);
    }

    fn send_inventory(&mut self, cmd: InventoryCommand) {
        self.commands.push(Outgoing::Inventory(cmd));
    }

    fn send_payment(&mut self, cmd: PaymentCommand) {
        self.commands.push(Outgoing::Payment(cmd));
    }

    /// Moves to `step`, whose command(s) were just sent once.
    fn enter(&mut self, step: SagaStep, now_ms: i64, policy: &SagaPolicy) {
        self.saga.step = step;
        self.saga.attempts = 1;
        self.saga.deadline_at_ms = policy.deadline(now_ms);
    }

    fn finish(&mut self) {
        self.saga.step = SagaStep::Done;
        self.saga.deadline_at_ms = None;
    }

    /// Cancels the order and starts compensating with whatever `compensate` sends.
    fn cancel(&mut self, reason: String, void_payment: bool, now_ms: i64, policy: &SagaPolicy) {
        let order_id = self.order.order_id;
        self.order.status = OrderStatus::Cancelled;
        self.order.reason = Some(reason);
        self.saga.stock_released = false;
        self.saga.void_requested = void_payment;
        self.saga.payment_voided = false;
        if void_payment {
            self.send_payment(PaymentCommand::VoidPayment { order_id });
        }
        self.send_inventory(InventoryCommand::ReleaseStock { order_id });
        self.enter(SagaStep::Compensating, now_ms, policy);
    }

    fn finish_if_completed(&mut self) {
        if self.saga.stock_committed && self.saga.payment_captured {
            self.finish();
        }
    }

    fn finish_if_compensated(&mut self) {
        if self.saga.stock_released && (!self.saga.void_requested || self.saga.payment_voided) {
            self.finish();
        }
    }

    /// Whether anything must be written.
    pub fn changes(&self, saga: &SagaState, order: &OrderState) -> bool {
        self.saga != *saga || self.order != *order || !self.commands.is_empty()
    }
}

/// The saga's transition function. See the module docs for the rules.
pub fn decide(
    saga: &SagaState,
    order: &OrderState,
    input: &SagaInput,
    now_ms: i64,
    policy: &SagaPolicy,
) -> Decision {
    let mut d = Decision::unchanged(saga, order);
    match input {
        SagaInput::Inventory(event) => on_inventory(&mut d, event, now_ms, policy),
        SagaInput::Payment(event) => on_payment(&mut d, event, now_ms, policy),
        SagaInput::Timeout => on_timeout(&mut d, now_ms, policy),
    }
    d
}

fn on_inventory(d: &mut Decision, event: &InventoryEvent, now_ms: i64, policy: &SagaPolicy) {
    let order_id = d.order.order_id;
    let step = d.saga.step;
    match event {
        InventoryEvent::StockReserved { total_minor, .. } => {
            if step == SagaStep::ReservingStock && d.order.status == OrderStatus::Pending {
                d.order.total_minor = Some(*total_minor);
                d.saga.last_error = None;
                d.send_payment(PaymentCommand::AuthorizePayment {
                    order_id,
                    customer_id: d.order.customer_id.clone(),
                    amount_minor: *total_minor,
                });
                d.enter(SagaStep::AuthorizingPayment, now_ms, policy);
            } else if matches!(
                d.order.status,
                OrderStatus::Cancelled | OrderStatus::Rejected
            ) {
                d.send_inventory(InventoryCommand::ReleaseStock { order_id });
                d.ignore("late reservation after the order ended: releasing it");
            } else {
                d.ignore("reservation already handled");
            }
        }
        InventoryEvent::StockRejected { reason, .. } => {
            if step == SagaStep::ReservingStock {
                d.order.status = OrderStatus::Rejected;
                d.order.reason = Some(reason.clone());
                d.finish();
            } else {
                d.ignore("rejection does not fit the current step");
            }
        }
        InventoryEvent::StockCommitted { .. } => {
            if step == SagaStep::Completing && !d.saga.stock_committed {
                d.saga.stock_committed = true;
                d.finish_if_completed();
            } else {
                d.ignore("stock commit already seen or not awaited");
            }
        }
        InventoryEvent::StockReleased { .. } => {
            if step == SagaStep::Compensating && !d.saga.stock_released {
                d.saga.stock_released = true;
                d.finish_if_compensated();
            } else {
                d.ignore("stock release already seen or not awaited");
            }
        }
    }
}

fn on_payment(d: &mut Decision, event: &PaymentEvent, now_ms: i64, policy: &SagaPolicy) {
    let order_id = d.order.order_id;
    let step = d.saga.step;
    match event {
        PaymentEvent::PaymentAuthorized { .. } => {
            if step == SagaStep::AuthorizingPayment && d.order.status == OrderStatus::Pending {
                d.order.status = OrderStatus::Confirmed;
                d.saga.last_error = None;
                d.saga.stock_committed = false;
                d.saga.payment_captured = false;
                d.send_inventory(InventoryCommand::CommitStock { order_id });
                d.send_payment(PaymentCommand::CapturePayment { order_id });
                d.enter(SagaStep::Completing, now_ms, policy);
            } else if d.order.status == OrderStatus::Cancelled {
                d.send_payment(PaymentCommand::VoidPayment { order_id });
                d.ignore("late authorization after the order was cancelled: voiding it");
            } else {
                d.ignore("authorization already handled");
            }
        }
        PaymentEvent::PaymentDeclined { reason, .. } => {
            if step == SagaStep::AuthorizingPayment && d.order.status == OrderStatus::Pending {
                d.cancel(reason.clone(), false, now_ms, policy);
            } else {
                d.ignore("decline does not fit the current step");
            }
        }
        PaymentEvent::PaymentCaptured { .. } => {
            if step == SagaStep::Completing && !d.saga.payment_captured {
                d.saga.payment_captured = true;
                d.finish_if_completed();
            } else {
                d.ignore("capture already seen or not awaited");
            }
        }
        PaymentEvent::PaymentVoided { .. } => {
            if step == SagaStep::Compensating && d.saga.void_requested && !d.saga.payment_voided {
                d.saga.payment_voided = true;
                d.finish_if_compensated();
            } else {
                d.ignore("void already seen or not awaited");
            }
        }
    }
}

fn on_timeout(d: &mut Decision, now_ms: i64, policy: &SagaPolicy) {
    let Some(deadline) = d.saga.deadline_at_ms else {
        d.ignore("no deadline");
        return;
    };
    if now_ms < deadline {
        d.ignore("deadline not reached");
        return;
    }
    let order_id = d.order.order_id;
    let attempts = d.saga.attempts;
    match d.saga.step {
        SagaStep::ReservingStock if attempts < policy.max_attempts => {
            d.send_inventory(InventoryCommand::ReserveStock {
                order_id,
                items: d.order.items.clone(),
            });
            retried(d, "ReserveStock", now_ms, policy);
        }
        SagaStep::ReservingStock => {
            d.saga.last_error = Some(format!(
                "no answer to ReserveStock after {attempts} attempts"
            ));
            d.cancel(
                "timed out waiting for stock reservation".into(),
                false,
                now_ms,
                policy,
            );
        }
        SagaStep::AuthorizingPayment if attempts < policy.max_attempts => {
            d.send_payment(PaymentCommand::AuthorizePayment {
                order_id,
                customer_id: d.order.customer_id.clone(),
                amount_minor: d.order.total_minor.unwrap_or(Money::ZERO),
            });
            retried(d, "AuthorizePayment", now_ms, policy);
        }
        SagaStep::AuthorizingPayment => {
            d.saga.last_error = Some(format!(
                "no answer to AuthorizePayment after {attempts} attempts"
            ));
            d.cancel(
                "timed out waiting for payment authorization".into(),
                true,
                now_ms,
                policy,
            );
        }
        SagaStep::Completing => {
            if !d.saga.stock_committed {
                d.send_inventory(InventoryCommand::CommitStock { order_id });
            }
            if !d.saga.payment_captured {
                d.send_payment(PaymentCommand::CapturePayment { order_id });
            }
            resent_with_backoff(d, now_ms, policy);
        }
        SagaStep::Compensating => {
            if !d.saga.stock_released {
                d.send_inventory(InventoryCommand::ReleaseStock { order_id });
            }
            if d.saga.void_requested && !d.saga.payment_voided {
                d.send_payment(PaymentCommand::VoidPayment { order_id });
            }
            resent_with_backoff(d, now_ms, policy);
        }
        SagaStep::Done => d.ignore("saga is done"),
    }
}

fn retried(d: &mut Decision, command: &str, now_ms: i64, policy: &SagaPolicy) {
    d.saga.last_error = Some(format!(
        "no answer to {command} within {} ms (attempt {})",
        policy.step_timeout_ms, d.saga.attempts
    ));
    d.saga.attempts += 1;
    d.saga.deadline_at_ms = policy.deadline(now_ms);
}

fn resent_with_backoff(d: &mut Decision, now_ms: i64, policy: &SagaPolicy) {
    let waiting: Vec<&str> = d.commands.iter().map(Outgoing::kind).collect();
    d.saga.last_error = Some(format!(
        "resending {} (attempt {})",
        waiting.join(" and "),
        d.saga.attempts + 1
    ));
    d.saga.attempts += 1;
    d.saga.deadline_at_ms = policy.backoff_deadline(now_ms, d.saga.attempts);
}

#[cfg(test)]
mod tests {
    use contracts::domain::{Quantity, Sku};
    use contracts::http::PricedLine;

    use super::*;

    const NOW: i64 = 1_000_000;

    fn policy() -> SagaPolicy {
        SagaPolicy {
            step_timeout_ms: 1_000,
            max_attempts: 3,
            max_backoff_ms: 5_000,
        }
    }

    fn order() -> OrderState {
        OrderState {
            order_id: OrderId::new(),
            customer_id: CustomerId::parse("cust-1").unwrap(),
            items: vec![OrderLine {
                sku: Sku::parse("SKU-1").unwrap(),
                quantity: Quantity::new(2).unwrap(),
            }],
            status: OrderStatus::Pending,
            total_minor: None,
            reason: None,
        }
    }

    fn money(n: i64) -> Money {
        Money::from_minor(n).unwrap()
    }

    fn reserved(o: &OrderState, total: i64) -> SagaInput {
        SagaInput::Inventory(InventoryEvent::StockReserved {
            order_id: o.order_id,
            lines: vec![PricedLine {
                sku: Sku::parse("SKU-1").unwrap(),
                quantity: Quantity::new(2).unwrap(),
                unit_price_minor: money(total / 2),
            }],
            total_minor: money(total),
        })
    }

    fn inv(o: &OrderState, f: fn(OrderId) -> InventoryEvent) -> SagaInput {
        SagaInput::Inventory(f(o.order_id))
    }

    fn pay(o: &OrderState, f: fn(OrderId) -> PaymentEvent) -> SagaInput {
        SagaInput::Payment(f(o.order_id))
    }

    fn authorized(id: OrderId) -> PaymentEvent {
        PaymentEvent::PaymentAuthorized {
            order_id: id,
            amount_minor: Money::from_minor(500).unwrap(),
        }
    }

    fn captured(id: OrderId) -> PaymentEvent {
        PaymentEvent::PaymentCaptured {
            order_id: id,
            amount_minor: Money::from_minor(500).unwrap(),
        }
    }

    fn voided(id: OrderId) -> PaymentEvent {
        PaymentEvent::PaymentVoided {
            order_id: id,
            amount_minor: Money::from_minor(500).unwrap(),
        }
    }

    fn declined(id: OrderId) -> PaymentEvent {
        PaymentEvent::PaymentDeclined {
            order_id: id,
            reason: "credit limit exceeded".into(),
        }
    }

    fn committed(id: OrderId) -> InventoryEvent {
        InventoryEvent::StockCommitted { order_id: id }
    }

    fn released(id: OrderId) -> InventoryEvent {
        InventoryEvent::StockReleased { order_id: id }
    }

    fn rejected(id: OrderId) -> InventoryEvent {
        InventoryEvent::StockRejected {
            order_id: id,
            reason: "SKU-1: only 1 available".into(),
        }
    }

    fn kinds(d: &Decision) -> Vec<&'static str> {
        d.commands.iter().map(Outgoing::kind).collect()
    }

    fn step(saga: &SagaState, order: &OrderState, input: SagaInput) -> Decision {
        decide(saga, order, &input, NOW, &policy())
    }

    /// Drives a fresh saga through the given inputs, returning the final state.
    fn run(inputs: &[fn(&OrderState) -> SagaInput]) -> (SagaState, OrderState) {
        let mut saga = SagaState::start(NOW - 10, &policy());
        let mut o = order();
        for input in inputs {
            let d = step(&saga, &o, input(&o));
            saga = d.saga;
            o = d.order;
        }
        (saga, o)
    }

    fn at_authorizing() -> (SagaState, OrderState) {
        run(&[|o| reserved(o, 500)])
    }

    fn at_completing() -> (SagaState, OrderState) {
        run(&[|o| reserved(o, 500), |o| pay(o, authorized)])
    }

    fn at_compensating_after_decline() -> (SagaState, OrderState) {
        run(&[|o| reserved(o, 500), |o| pay(o, declined)])
    }

    fn timed_out(saga: &SagaState, order: &OrderState) -> Decision {
        let due = saga.deadline_at_ms.unwrap() + 1;
        decide(saga, order, &SagaInput::Timeout, due, &policy())
    }

    #[test]
    fn a_new_saga_waits_for_the_reservation_with_a_deadline() {
        let saga = SagaState::start(NOW, &policy());
        assert_eq!(saga.step, SagaStep::ReservingStock);
        assert_eq!(saga.attempts, 1);
        assert_eq!(saga.deadline_at_ms, Some(NOW + 1_000));
    }

    #[test]
    fn a_reservation_prices_the_order_and_asks_payment_to_authorize_the_total() {
        let saga = SagaState::start(NOW - 10, &policy());
        let o = order();
        let d = step(&saga, &o, reserved(&o, 500));
        assert_eq!(d.order.total_minor, Some(money(500)));
        assert_eq!(d.order.status, OrderStatus::Pending);
        assert_eq!(d.saga.step, SagaStep::AuthorizingPayment);
        assert_eq!(d.saga.attempts, 1);
        assert_eq!(d.saga.deadline_at_ms, Some(NOW + 1_000));
        assert_eq!(
            d.commands,
            vec![Outgoing::Payment(PaymentCommand::AuthorizePayment {
                order_id: o.order_id,
                customer_id: o.customer_id.clone(),
                amount_minor: money(500),
            })]
        );
        assert_eq!(d.commands[0].topic(), topics::PAYMENT_COMMANDS);
    }

    #[test]
    fn a_stock_rejection_rejects_the_order_with_the_reason_and_ends_the_saga() {
        let saga = SagaState::start(NOW - 10, &policy());
        let o = order();
        let d = step(&saga, &o, inv(&o, rejected));
        assert_eq!(d.order.status, OrderStatus::Rejected);
        assert_eq!(d.order.reason.as_deref(), Some("SKU-1: only 1 available"));
        assert_eq!(d.saga.step, SagaStep::Done);
        assert_eq!(d.saga.deadline_at_ms, None);
        assert!(d.commands.is_empty());
    }

    #[test]
    fn an_authorization_confirms_the_order_and_sends_commit_and_capture() {
        let (saga, o) = at_authorizing();
        let d = step(&saga, &o, pay(&o, authorized));
        assert_eq!(d.order.status, OrderStatus::Confirmed);
        assert_eq!(d.saga.step, SagaStep::Completing);
        assert_eq!(kinds(&d), vec!["CommitStock", "CapturePayment"]);
        assert_eq!(d.commands[0].topic(), topics::INVENTORY_COMMANDS);
        assert_eq!(d.commands[1].topic(), topics::PAYMENT_COMMANDS);
    }

    #[test]
    fn completing_ends_only_when_both_commit_and_capture_are_acknowledged() {
        let (saga, o) = at_completing();
        let d = step(&saga, &o, inv(&o, committed));
        assert_eq!(d.saga.step, SagaStep::Completing);
        assert!(d.saga.stock_committed);
        let d = step(&d.saga, &d.order, pay(&o, captured));
        assert_eq!(d.saga.step, SagaStep::Done);
        assert_eq!(d.saga.deadline_at_ms, None);
        assert_eq!(d.order.status, OrderStatus::Confirmed);
        assert!(d.commands.is_empty());
    }

    #[test]
    fn completing_ends_whichever_acknowledgement_comes_first() {
        let (saga, o) = run(&[
            |o| reserved(o, 500),
            |o| pay(o, authorized),
            |o| pay(o, captured),
            |o| inv(o, committed),
        ]);
        assert_eq!(saga.step, SagaStep::Done);
        assert_eq!(o.status, OrderStatus::Confirmed);
    }

    #[test]
    fn a_duplicate_acknowledgement_in_completing_changes_nothing() {
        let (saga, o) = at_completing();
        let d = step(&saga, &o, inv(&o, committed));
        let again = step(&d.saga, &d.order, inv(&o, committed));
        assert!(!again.changes(&d.saga, &d.order));
        assert!(again.note.is_some());
    }

    #[test]
    fn a_decline_cancels_the_order_and_releases_the_stock() {
        let (saga, o) = at_authorizing();
        let d = step(&saga, &o, pay(&o, declined));
        assert_eq!(d.order.status, OrderStatus::Cancelled);
        assert_eq!(d.order.reason.as_deref(), Some("credit limit exceeded"));
        assert_eq!(d.order.total_minor, Some(money(500)));
        assert_eq!(d.saga.step, SagaStep::Compensating);
        assert!(!d.saga.void_requested);
        assert_eq!(kinds(&d), vec!["ReleaseStock"]);
    }

    #[test]
    fn compensation_after_a_decline_ends_when_the_stock_is_released() {
        let (saga, o) = at_compensating_after_decline();
        let d = step(&saga, &o, inv(&o, released));
        assert_eq!(d.saga.step, SagaStep::Done);
        assert_eq!(d.order.status, OrderStatus::Cancelled);
        assert!(d.commands.is_empty());
    }

    #[test]
    fn a_reservation_timeout_resends_the_same_reservation_with_a_new_deadline() {
        let saga = SagaState::start(NOW - 10, &policy());
        let o = order();
        let d = timed_out(&saga, &o);
        assert_eq!(
            d.commands,
            vec![Outgoing::Inventory(InventoryCommand::ReserveStock {
                order_id: o.order_id,
                items: o.items.clone(),
            })]
        );
        assert_eq!(d.saga.step, SagaStep::ReservingStock);
        assert_eq!(d.saga.attempts, 2);
        let due = saga.deadline_at_ms.unwrap() + 1;
        assert_eq!(d.saga.deadline_at_ms, Some(due + 1_000));
        assert!(d.saga.last_error.is_some());
        assert_eq!(d.order, o);
    }

    #[test]
    fn a_timeout_before_the_deadline_changes_nothing() {
        let saga = SagaState::start(NOW, &policy());
        let o = order();
        let d = decide(&saga, &o, &SagaInput::Timeout, NOW + 999, &policy());
        assert!(!d.changes(&saga, &o));
    }

    #[test]
    fn the_last_reservation_timeout_cancels_the_order_and_releases_any_late_reservation() {
        let mut saga = SagaState::start(NOW - 10, &policy());
        saga.attempts = 3;
        let o = order();
        let d = timed_out(&saga, &o);
        assert_eq!(d.order.status, OrderStatus::Cancelled);
        assert_eq!(
            d.order.reason.as_deref(),
            Some("timed out waiting for stock reservation")
        );
        assert_eq!(d.saga.step, SagaStep::Compensating);
        assert_eq!(d.saga.attempts, 1);
        assert!(!d.saga.void_requested);
        assert_eq!(kinds(&d), vec!["ReleaseStock"]);
    }

    #[test]
    fn an_authorization_timeout_resends_the_same_authorization() {
        let (saga, o) = at_authorizing();
        let d = timed_out(&saga, &o);
        assert_eq!(
            d.commands,
            vec![Outgoing::Payment(PaymentCommand::AuthorizePayment {
                order_id: o.order_id,
                customer_id: o.customer_id.clone(),
                amount_minor: money(500),
            })]
        );
        assert_eq!(d.saga.step, SagaStep::AuthorizingPayment);
        assert_eq!(d.saga.attempts, 2);
    }

    #[test]
    fn the_last_authorization_timeout_cancels_and_voids_the_payment_and_releases_the_stock() {
        let (mut saga, o) = at_authorizing();
        saga.attempts = 3;
        let d = timed_out(&saga, &o);
        assert_eq!(d.order.status, OrderStatus::Cancelled);
        assert_eq!(
            d.order.reason.as_deref(),
            Some("timed out waiting for payment authorization")
        );
        assert_eq!(d.saga.step, SagaStep::Compensating);
        assert!(d.saga.void_requested);
        assert_eq!(kinds(&d), vec!["VoidPayment", "ReleaseStock"]);
    }

    #[test]
    fn compensation_with_a_void_ends_only_when_both_release_and_void_are_acknowledged() {
        let (mut saga, o) = at_authorizing();
        saga.attempts = 3;
        let d = timed_out(&saga, &o);
        let d = step(&d.saga, &d.order, inv(&o, released));
        assert_eq!(d.saga.step, SagaStep::Compensating);
        let d = step(&d.saga, &d.order, pay(&o, voided));
        assert_eq!(d.saga.step, SagaStep::Done);
        assert_eq!(d.order.status, OrderStatus::Cancelled);
    }

    #[test]
    fn retries_stop_after_max_attempts_even_with_several_timeouts_in_a_row() {
        let mut saga = SagaState::start(NOW - 10, &policy());
        let mut o = order();
        let mut sent = 1;
        for _ in 0..10 {
            let d = timed_out(&saga, &o);
            sent += d
                .commands
                .iter()
                .filter(|c| c.kind() == "ReserveStock")
                .count();
            saga = d.saga;
            o = d.order;
        }
        assert_eq!(sent, 3);
        assert_eq!(o.status, OrderStatus::Cancelled);
    }

    #[test]
    fn a_completing_timeout_resends_only_the_unacknowledged_commands_without_limit() {
        let (saga, o) = at_completing();
        let d = step(&saga, &o, inv(&o, committed));
        let mut saga = d.saga;
        for n in 2..=10 {
            let d = timed_out(&saga, &o);
            assert_eq!(kinds(&d), vec!["CapturePayment"]);
            assert_eq!(d.saga.step, SagaStep::Completing);
            assert_eq!(d.saga.attempts, n);
            saga = d.saga;
        }
    }

    #[test]
    fn a_completing_timeout_with_nothing_acknowledged_resends_commit_and_capture() {
        let (saga, o) = at_completing();
        let d = timed_out(&saga, &o);
        assert_eq!(kinds(&d), vec!["CommitStock", "CapturePayment"]);
        assert_eq!(d.order.status, OrderStatus::Confirmed);
    }

    #[test]
    fn resends_in_completing_and_compensating_back_off_up_to_the_cap() {
        let (mut saga, o) = at_compensating_after_decline();
        let mut waits = Vec::new();
        for _ in 0..6 {
            let due = saga.deadline_at_ms.unwrap() + 1;
            let d = decide(&saga, &o, &SagaInput::Timeout, due, &policy());
            assert_eq!(kinds(&d), vec!["ReleaseStock"]);
            waits.push(d.saga.deadline_at_ms.unwrap() - due);
            saga = d.saga;
        }
        assert_eq!(waits, vec![2_000, 4_000, 5_000, 5_000, 5_000, 5_000]);
    }

    #[test]
    fn a_compensating_timeout_resends_release_and_void_until_each_is_acknowledged() {
        let (mut saga, o) = at_authorizing();
        saga.attempts = 3;
        let d = timed_out(&saga, &o);
        let d2 = timed_out(&d.saga, &d.order);
        assert_eq!(kinds(&d2), vec!["ReleaseStock", "VoidPayment"]);
        assert_eq!(d2.order.status, OrderStatus::Cancelled);
        let d3 = step(&d2.saga, &d2.order, pay(&o, voided));
        let d4 = timed_out(&d3.saga, &d3.order);
        assert_eq!(kinds(&d4), vec!["ReleaseStock"]);
    }

    #[test]
    fn a_done_saga_ignores_timeouts() {
        let (saga, o) = run(&[|o| inv(o, rejected)]);
        let d = decide(&saga, &o, &SagaInput::Timeout, i64::MAX, &policy());
        assert!(!d.changes(&saga, &o));
    }

    #[test]
    fn a_late_reservation_for_a_cancelled_order_is_released() {
        let (saga, o) = run(&[
            |o| reserved(o, 500),
            |o| pay(o, declined),
            |o| inv(o, released),
        ]);
        assert_eq!(saga.step, SagaStep::Done);
        let d = step(&saga, &o, reserved(&o, 500));
        assert_eq!(kinds(&d), vec!["ReleaseStock"]);
        assert_eq!(d.saga, saga);
        assert_eq!(d.order, o);
    }

    #[test]
    fn a_late_reservation_after_a_reservation_timeout_is_released() {
        let mut saga = SagaState::start(NOW - 10, &policy());
        saga.attempts = 3;
        let o = order();
        let d = timed_out(&saga, &o);
        let late = step(&d.saga, &d.order, reserved(&o, 500));
        assert_eq!(kinds(&late), vec!["ReleaseStock"]);
        assert_eq!(late.order.status, OrderStatus::Cancelled);
        assert_eq!(late.order.total_minor, None);
    }

    #[test]
    fn a_late_reservation_for_a_rejected_order_is_released() {
        let (saga, o) = run(&[|o| inv(o, rejected)]);
        let d = step(&saga, &o, reserved(&o, 500));
        assert_eq!(kinds(&d), vec!["ReleaseStock"]);
        assert_eq!(d.order.status, OrderStatus::Rejected);
    }

    #[test]
    fn a_late_authorization_for_a_cancelled_order_is_voided() {
        let (mut saga, o) = at_authorizing();
        saga.attempts = 3;
        let d = timed_out(&saga, &o);
        let late = step(&d.saga, &d.order, pay(&o, authorized));
        assert_eq!(kinds(&late), vec!["VoidPayment"]);
        assert_eq!(late.order.status, OrderStatus::Cancelled);
        assert_eq!(late.saga, d.saga);
    }

    #[test]
    fn a_repeated_reservation_for_a_confirmed_order_is_not_released() {
        let (saga, o) = at_completing();
        let d = step(&saga, &o, reserved(&o, 500));
        assert!(!d.changes(&saga, &o));
    }

    #[test]
    fn a_repeated_authorization_for_a_confirmed_order_changes_nothing() {
        let (saga, o) = at_completing();
        let d = step(&saga, &o, pay(&o, authorized));
        assert!(!d.changes(&saga, &o));
    }

    #[test]
    fn a_second_reservation_while_authorizing_changes_nothing() {
        let (saga, o) = at_authorizing();
        let d = step(&saga, &o, reserved(&o, 500));
        assert!(!d.changes(&saga, &o));
    }

    #[test]
    fn events_that_do_not_fit_the_step_change_nothing() {
        let fresh = SagaState::start(NOW - 10, &policy());
        let o = order();
        for input in [
            pay(&o, authorized),
            pay(&o, declined),
            pay(&o, captured),
            pay(&o, voided),
            inv(&o, committed),
            inv(&o, released),
        ] {
            let d = step(&fresh, &o, input.clone());
            assert!(!d.changes(&fresh, &o), "{input:?} changed a fresh saga");
        }
        let (saga, o) = at_completing();
        for input in [
            inv(&o, rejected),
            pay(&o, declined),
            inv(&o, released),
            pay(&o, voided),
        ] {
            let d = step(&saga, &o, input.clone());
            assert!(!d.changes(&saga, &o), "{input:?} changed a completing saga");
        }
        let (saga, o) = at_compensating_after_decline();
        for input in [
            pay(&o, voided),
            inv(&o, committed),
            pay(&o, captured),
            pay(&o, declined),
        ] {
            let d = step(&saga, &o, input.clone());
            assert!(
                !d.changes(&saga, &o),
                "{input:?} changed a compensating saga"
            );
        }
    }

    #[test]
    fn saga_steps_round_trip_through_their_names() {
        for s in [
            SagaStep::ReservingStock,
            SagaStep::AuthorizingPayment,
            SagaStep::Completing,
            SagaStep::Compensating,
            SagaStep::Done,
        ] {
            assert_eq!(s.as_str().parse::<SagaStep>().unwrap(), s);
        }
        assert!("WAITING".parse::<SagaStep>().is_err());
    }
}
