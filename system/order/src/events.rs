//! Driving the saga: inventory and payment events, and step timeouts.
//!
//! Each input is one transaction: record the message in the inbox (events only), load the order
//! and its saga (locked on Postgres), ask [`crate::saga::decide`], then write the order, the saga
//! (both with a version check), the commands and, when the order changed, an `OrderChanged` for
//! the read model. The outbox relay publishes after commit; callers wake it.
//!
//! The timeout pass runs in every instance. Instances may pick the same due saga; whichever
//! commits first advances it, and the other either finds the deadline moved (nothing to do) or
//! loses the version check and skips it. Because all of this lives in the database, a saga in
//! flight when an instance is killed resumes in any instance: the relay publishes what was
//! committed but not yet sent, and the deadline fires for whatever was lost.

use std::sync::Arc;
use std::time::Duration;

use contracts::domain::OrderId;
use contracts::messages::{Envelope, InventoryEvent, MessageKind, PaymentEvent, decode, topics};
use platform::db::{Db, DbError, Tx};
use platform::messaging::consumer::{Delivery, HandleError, Handler};
use platform::messaging::inbox;
use sqlx::AnyConnection;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use uuid::Uuid;

use crate::metrics::Transition;
use crate::saga::{Decision, SagaInput, SagaPolicy, SagaStep, decide};
use crate::store::{self, OrderRecord, SagaRecord};

/// The inbox consumer name (and consumer group) of the saga's event handler.
pub const CONSUMER: &str = "order";

/// How often every instance looks for sagas whose deadline passed.
pub const TIMEOUT_INTERVAL: Duration = Duration::from_millis(250);

/// How many due sagas one timeout pass takes on.
pub const TIMEOUT_BATCH: i64 = 50;

/// What handling one message did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Handled {
    /// The order and/or saga changed, or commands were sent.
    Applied {
        commands: usize,
    },
    /// The event did not fit the saga's step (late or repeated).
    Unchanged,
    /// The inbox had seen this message id.
    Duplicate,
    UnknownOrder,
}

pub async fn handle_inventory_event(
    db: &Db,
    policy: &SagaPolicy,
    env: &Envelope<InventoryEvent>,
) -> Result<Handled, DbError> {
    let input = SagaInput::Inventory(env.body.clone());
    handle(
        db,
        policy,
        env.message_id,
        env.body.order_id(),
        env.body.kind(),
        &input,
    )
    .await
}

pub async fn handle_payment_event(
    db: &Db,
    policy: &SagaPolicy,
    env: &Envelope<PaymentEvent>,
) -> Result<Handled, DbError> {
    let input = SagaInput::Payment(env.body.clone());
    handle(
        db,
        policy,
        env.message_id,
        env.body.order_id(),
        env.body.kind(),
        &input,
    )
    .await
}

#[tracing::instrument(
    skip_all,
    fields(order_id = %order_id, message_id = %message_id, kind = kind)
)]
async fn handle(
    db: &Db,
    policy: &SagaPolicy,
    message_id: Uuid,
    order_id: OrderId,
    kind: &'static str,
    input: &SagaInput,
) -> Result<Handled, DbError> {
    platform::db::retry(5, || handle_once(db, policy, message_id, order_id, input)).await
}

async fn handle_once(
    db: &Db,
    policy: &SagaPolicy,
    message_id: Uuid,
    order_id: OrderId,
    input: &SagaInput,
) -> Result<Handled, DbError> {
    let mut tx = db.begin().await?;
    let (handled, transition) = apply(&mut tx, db, policy, message_id, order_id, input).await?;
    tx.commit().await?;
    transition.record();
    Ok(handled)
}

/// Applies one event inside the caller's transaction; the transition is to be recorded once it
/// commits.
async fn apply(
    tx: &mut Tx,
    db: &Db,
    policy: &SagaPolicy,
    message_id: Uuid,
    order_id: OrderId,
    input: &SagaInput,
) -> Result<(Handled, Transition), DbError> {
    if !inbox::first_delivery(tx, CONSUMER, message_id).await? {
        tracing::debug!("duplicate delivery; nothing to do");
        return Ok((Handled::Duplicate, Transition::default()));
    }
    let Some((order, saga)) = store::load_order_and_saga(tx, db.for_update(), order_id).await?
    else {
        tracing::warn!(%order_id, "event for an unknown order; ignoring it");
        return Ok((Handled::UnknownOrder, Transition::default()));
    };
    let now = platform::now_ms();
    let decision = decide(&saga.state, &order.state, input, now, policy);
    write_decision(tx, &order, &saga, &decision, now, cause(input)).await
}

/// Applies events that arrived together in one transaction, in order; returns whether any
/// changed something (so the relay has commands or events to send).
pub async fn handle_all(
    db: &Db,
    policy: &SagaPolicy,
    events: &[(Uuid, OrderId, SagaInput)],
) -> Result<bool, DbError> {
    let transitions = platform::db::retry(5, || async {
        let mut tx = db.begin().await?;
        let mut transitions = Vec::with_capacity(events.len());
        let mut applied = false;
        for (message_id, order_id, input) in events {
            let (handled, transition) =
                apply(&mut tx, db, policy, *message_id, *order_id, input).await?;
            applied |= matches!(handled, Handled::Applied { .. });
            transitions.push(transition);
        }
        tx.commit().await?;
        Ok((applied, transitions))
    })
    .await?;
    let (applied, transitions) = transitions;
    for transition in transitions {
        transition.record();
    }
    Ok(applied)
}

/// The reason class an input gives an order that ends because of it (a metric label).
fn cause(input: &SagaInput) -> &'static str {
    match input {
        SagaInput::Inventory(InventoryEvent::StockRejected { .. }) => "stock_rejected",
        SagaInput::Payment(PaymentEvent::PaymentDeclined { .. }) => "payment_declined",
        SagaInput::Timeout => "step_timeout",
        _ => "none",
    }
}

/// Writes what `decide` said: order (+ `OrderChanged`), saga, commands; returns what changed, to
/// be counted once the transaction commits. `cause` is the input's reason class.
async fn write_decision(
    conn: &mut AnyConnection,
    order: &OrderRecord,
    saga: &SagaRecord,
    decision: &Decision,
    now_ms: i64,
    cause: &'static str,
) -> Result<(Handled, Transition), DbError> {
    let mut transition = Transition::default();
    if !decision.changes(&saga.state, &order.state) {
        if let Some(note) = decision.note {
            tracing::info!(step = %saga.state.step, note, "event changes nothing");
        }
        return Ok((Handled::Unchanged, transition));
    }
    if let Some(note) = decision.note {
        tracing::info!(step = %saga.state.step, note, "compensating a late event");
        if !decision.commands.is_empty() {
            transition.compensation = Some("late_success");
        }
    }
    if cause == "step_timeout" {
        transition.timed_out = Some(saga.state.step);
    }
    if decision.order != order.state {
        let new = OrderRecord {
            state: decision.order.clone(),
            created_at_ms: order.created_at_ms,
            updated_at_ms: now_ms.max(order.updated_at_ms),
            version: order.version + 1,
        };
        store::update_order(conn, &new, order.version).await?;
        store::enqueue_order_changed(conn, &new, now_ms).await?;
        if new.state.status != order.state.status {
            tracing::info!(
                from = %order.state.status,
                to = %new.state.status,
                reason = new.state.reason.as_deref().unwrap_or(""),
                "order status changed"
            );
            if new.state.status != contracts::domain::OrderStatus::Pending {
                transition.terminal = Some((new.state.status, cause, now_ms - order.created_at_ms));
            }
        }
    }
    if decision.saga != saga.state {
        let new = SagaRecord {
            order_id: saga.order_id,
            state: decision.saga.clone(),
            version: saga.version + 1,
            updated_at_ms: now_ms,
        };
        store::update_saga(conn, &new, saga.version).await?;
        if new.state.step != saga.state.step {
            tracing::info!(from = %saga.state.step, to = %new.state.step, "saga step changed");
            transition.step_left = Some((saga.state.step, now_ms - saga.updated_at_ms));
            if new.state.step == SagaStep::Compensating {
                transition.compensation = Some(cause);
            }
        }
    }
    for command in &decision.commands {
        store::enqueue_command(conn, command, now_ms).await?;
    }
    if !decision.commands.is_empty() {
        let kinds: Vec<&str> = decision.commands.iter().map(|c| c.kind()).collect();
        tracing::info!(commands = ?kinds, "saga sends commands");
    }
    Ok((
        Handled::Applied {
            commands: decision.commands.len(),
        },
        transition,
    ))
}

/// What one timeout pass did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TimeoutPass {
    /// Sagas found past their deadline.
    pub due: usize,
    /// Sagas this pass advanced (the others were advanced by another instance meanwhile).
    pub advanced: usize,
}

/// Runs the timeout transition for the sagas whose deadline is before `now_ms` that no other
/// instance's pass has claimed (at most [`TIMEOUT_BATCH`]), each in its own transaction.
pub async fn run_timeouts_once(
    db: &Db,
    policy: &SagaPolicy,
    now_ms: i64,
) -> Result<TimeoutPass, DbError> {
    let due = store::claim_due_sagas(db, now_ms, TIMEOUT_BATCH).await?;
    let mut pass = TimeoutPass {
        due: due.len(),
        advanced: 0,
    };
    for saga in due {
        let order_id = saga.order_id;
        let span = tracing::info_span!(
            "saga.timeout",
            otel.name = "saga timeout",
            order_id = %order_id,
        );
        if let Some(tp) = &saga.traceparent {
            let _ = span.set_parent(platform::telemetry::context_from_traceparent(tp));
        }
        match time_out(db, policy, order_id, now_ms)
            .instrument(span)
            .await
        {
            Ok(true) => pass.advanced += 1,
            Ok(false) => {}
            Err(e) if e.is_retryable() => {
                tracing::debug!(%order_id, error = %e, "another instance advanced this saga");
            }
            Err(e) => tracing::warn!(%order_id, error = %e, "saga timeout failed"),
        }
    }
    Ok(pass)
}

/// Returns whether the saga advanced.
#[tracing::instrument(skip_all, fields(order_id = %order_id))]
async fn time_out(
    db: &Db,
    policy: &SagaPolicy,
    order_id: OrderId,
    now_ms: i64,
) -> Result<bool, DbError> {
    let mut tx = db.begin().await?;
    let Some((order, saga)) =
        store::load_order_and_saga(&mut tx, db.for_update(), order_id).await?
    else {
        tx.rollback().await?;
        return Ok(false);
    };
    let decision = decide(
        &saga.state,
        &order.state,
        &SagaInput::Timeout,
        now_ms,
        policy,
    );
    if !decision.changes(&saga.state, &order.state) {
        tx.rollback().await?;
        return Ok(false);
    }
    tracing::info!(
        step = %saga.state.step,
        attempts = saga.state.attempts,
        "saga step timed out"
    );
    let (_, transition) =
        write_decision(&mut tx, &order, &saga, &decision, now_ms, "step_timeout").await?;
    tx.commit().await?;
    transition.record();
    Ok(true)
}

/// The timeout loop every instance runs until `shutdown`.
pub async fn run_timeout_loop(
    db: Db,
    policy: SagaPolicy,
    relay: Arc<Notify>,
    shutdown: CancellationToken,
) {
    tracing::info!(
        step_timeout_ms = policy.step_timeout_ms,
        max_attempts = policy.max_attempts,
        "saga timeout loop started"
    );
    let mut tick = tokio::time::interval(TIMEOUT_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = tick.tick() => {}
        }
        // A full batch means more are due: keep going before waiting for the next tick.
        loop {
            match run_timeouts_once(&db, &policy, platform::now_ms()).await {
                Ok(pass) => {
                    if pass.advanced > 0 {
                        relay.notify_one();
                    }
                    if i64::try_from(pass.due).unwrap_or(0) < TIMEOUT_BATCH
                        || pass.advanced == 0
                        || shutdown.is_cancelled()
                    {
                        break;
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "saga timeout pass failed");
                    break;
                }
            }
        }
    }
    tracing::info!("saga timeout loop drained");
}

/// The consumer of `inventory.events` and `payment.events`.
pub struct SagaEventHandler {
    pub db: Db,
    pub policy: SagaPolicy,
    pub relay: Arc<Notify>,
}

impl Handler for SagaEventHandler {
    async fn handle(&self, delivery: &Delivery) -> Result<(), HandleError> {
        let handled = match delivery.topic.as_str() {
            topics::INVENTORY_EVENTS => {
                let env = decode::<InventoryEvent>(&delivery.payload)?;
                handle_inventory_event(&self.db, &self.policy, &env).await?
            }
            topics::PAYMENT_EVENTS => {
                let env = decode::<PaymentEvent>(&delivery.payload)?;
                handle_payment_event(&self.db, &self.policy, &env).await?
            }
            other => {
                return Err(HandleError::Poison(format!(
                    "the saga does not consume topic {other}"
                )));
            }
        };
        if matches!(handled, Handled::Applied { .. }) {
            self.relay.notify_one();
        }
        Ok(())
    }

    async fn handle_batch(&self, deliveries: &[Delivery]) -> Result<(), HandleError> {
        let mut events = Vec::with_capacity(deliveries.len());
        for delivery in deliveries {
            let event = match delivery.topic.as_str() {
                topics::INVENTORY_EVENTS => {
                    let env = decode::<InventoryEvent>(&delivery.payload)?;
                    (
                        env.message_id,
                        env.body.order_id(),
                        SagaInput::Inventory(env.body),
                    )
                }
                topics::PAYMENT_EVENTS => {
                    let env = decode::<PaymentEvent>(&delivery.payload)?;
                    (
                        env.message_id,
                        env.body.order_id(),
                        SagaInput::Payment(env.body),
                    )
                }
                other => {
                    return Err(HandleError::Poison(format!(
                        "the saga does not consume topic {other}"
                    )));
                }
            };
            events.push(event);
        }
        if handle_all(&self.db, &self.policy, &events).await? {
            self.relay.notify_one();
        }
        Ok(())
    }
}
