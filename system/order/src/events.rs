//! Driving the saga: inventory and payment events, and step timeouts.
//!
//! Each input is one transaction: record the message in the inbox (events only), load the order
//! and its saga (locked on Postgres), ask [`crate::saga::decide`], then write the order, the saga
//! (both with a version check), the commands and, when the order changed, an `OrderChanged` for
//! the read model. Events that arrive together share one transaction and its statements
//! ([`handle_all`]). The outbox relay publishes after commit; callers wake it.
//!
//! The timeout pass runs in every instance. Instances may pick the same due saga; whichever
//! commits first advances it, and the other either finds the deadline moved (nothing to do) or
//! loses the version check and skips it. Because all of this lives in the database, a saga in
//! flight when an instance is killed resumes in any instance: the relay publishes what was
//! committed but not yet sent, and the deadline fires for whatever was lost.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use contracts::domain::OrderId;
use contracts::messages::{Envelope, InventoryEvent, MessageKind, PaymentEvent, decode, topics};
use platform::db::{Db, DbError, Script, Tx};
use platform::messaging::consumer::{Delivery, HandleError, Handler};
use platform::messaging::inbox;
use platform::messaging::outbox::{self, OutboxRow};
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
    let planned = plan(&order, &saga, &decision, now, cause(input))?;
    let mut writes = Writes::default();
    writes.add(
        &Loaded::of(&order, &saga),
        planned.order.as_ref(),
        planned.saga.as_ref(),
    );
    writes.add_outbox(&planned.outbox);
    writes.run(tx).await?;
    Ok((planned.handled, planned.transition))
}

/// An order and its saga as a batch holds them: loaded once, changed in memory by each event
/// in turn, written once at the end.
struct Current {
    loaded: Loaded,
    order: OrderRecord,
    saga: SagaRecord,
    order_changed: bool,
    saga_changed: bool,
}

/// The versions an order and its saga had when read: the writes' version checks.
struct Loaded {
    order_version: i64,
    saga_version: i64,
}

impl Loaded {
    fn of(order: &OrderRecord, saga: &SagaRecord) -> Self {
        Self {
            order_version: order.version,
            saga_version: saga.version,
        }
    }
}

/// Applies events that arrived together in one transaction, in order; returns whether any
/// changed something (so the relay has commands or events to send).
///
/// Each event is decided exactly as on its own (an order's later event sees what its earlier
/// one did), but the statements are shared: one inbox insert for all of them, one read of all
/// their orders and sagas, then one write per order and saga that changed (whatever number of
/// events changed it) and one outbox insert, sent together as one [`Script`]. On SQLite every statement is a hand-off to the
/// connection's worker thread and back, which was most of the order service's time
/// (docs/performance.md).
pub async fn handle_all(
    db: &Db,
    policy: &SagaPolicy,
    events: &[(Uuid, OrderId, SagaInput)],
) -> Result<bool, DbError> {
    let (applied, transitions) = platform::db::retry(5, || async {
        let mut tx = db.begin().await?;
        let ids: Vec<Uuid> = events.iter().map(|(id, _, _)| *id).collect();
        let first = inbox::first_deliveries(&mut tx, CONSUMER, &ids).await?;
        let mut wanted: Vec<OrderId> = events
            .iter()
            .zip(&first)
            .filter(|(_, first)| **first)
            .map(|((_, order_id, _), _)| *order_id)
            .collect();
        wanted.sort_unstable();
        wanted.dedup();
        let mut current: BTreeMap<OrderId, Current> =
            store::load_orders_and_sagas(&mut tx, db.for_update(), &wanted)
                .await?
                .into_iter()
                .map(|(order_id, (order, saga))| {
                    let current = Current {
                        loaded: Loaded::of(&order, &saga),
                        order,
                        saga,
                        order_changed: false,
                        saga_changed: false,
                    };
                    (order_id, current)
                })
                .collect();
        let mut rows = Vec::new();
        let mut transitions = Vec::with_capacity(events.len());
        let mut applied = false;
        for ((message_id, order_id, input), first) in events.iter().zip(first) {
            if !first {
                tracing::debug!(%order_id, %message_id, "duplicate delivery; nothing to do");
                continue;
            }
            let Some(cur) = current.get_mut(order_id) else {
                tracing::warn!(%order_id, %message_id, "event for an unknown order; ignoring it");
                continue;
            };
            let now = platform::now_ms();
            let decision = decide(&cur.saga.state, &cur.order.state, input, now, policy);
            let planned = plan(&cur.order, &cur.saga, &decision, now, cause(input))?;
            applied |= matches!(planned.handled, Handled::Applied { .. });
            if let Some(order) = planned.order {
                cur.order = order;
                cur.order_changed = true;
            }
            if let Some(saga) = planned.saga {
                cur.saga = saga;
                cur.saga_changed = true;
            }
            rows.extend(planned.outbox);
            transitions.push(planned.transition);
        }
        let mut writes = Writes::default();
        for cur in current.values() {
            writes.add(
                &cur.loaded,
                cur.order_changed.then_some(&cur.order),
                cur.saga_changed.then_some(&cur.saga),
            );
        }
        writes.add_outbox(&rows);
        writes.run(&mut tx).await?;
        tx.commit().await?;
        Ok((applied, transitions))
    })
    .await?;
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

/// What `decide` said, as rows to write: the order and the saga where they changed (with
/// their versions moved on), the outbox's messages in the order they are to be sent, what
/// handling the input did, and what to count once the transaction commits.
struct Planned {
    handled: Handled,
    transition: Transition,
    order: Option<OrderRecord>,
    saga: Option<SagaRecord>,
    outbox: Vec<OutboxRow>,
}

/// Turns a decision about `order` and `saga` into [`Planned`] rows: order (+ `OrderChanged`),
/// saga, commands. `cause` is the input's reason class.
fn plan(
    order: &OrderRecord,
    saga: &SagaRecord,
    decision: &Decision,
    now_ms: i64,
    cause: &'static str,
) -> Result<Planned, DbError> {
    let order_id = order.state.order_id;
    let mut planned = Planned {
        handled: Handled::Unchanged,
        transition: Transition::default(),
        order: None,
        saga: None,
        outbox: Vec::new(),
    };
    if !decision.changes(&saga.state, &order.state) {
        if let Some(note) = decision.note {
            tracing::info!(%order_id, step = %saga.state.step, note, "event changes nothing");
        }
        return Ok(planned);
    }
    let transition = &mut planned.transition;
    if let Some(note) = decision.note {
        tracing::info!(%order_id, step = %saga.state.step, note, "compensating a late event");
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
        planned.outbox.push(store::order_changed_row(&new, now_ms)?);
        if new.state.status != order.state.status {
            tracing::info!(
                %order_id,
                from = %order.state.status,
                to = %new.state.status,
                reason = new.state.reason.as_deref().unwrap_or(""),
                "order status changed"
            );
            if new.state.status != contracts::domain::OrderStatus::Pending {
                transition.terminal = Some((new.state.status, cause, now_ms - order.created_at_ms));
            }
        }
        planned.order = Some(new);
    }
    if decision.saga != saga.state {
        let new = SagaRecord {
            order_id: saga.order_id,
            state: decision.saga.clone(),
            version: saga.version + 1,
            updated_at_ms: now_ms,
        };
        if new.state.step != saga.state.step {
            tracing::info!(%order_id, from = %saga.state.step, to = %new.state.step, "saga step changed");
            transition.step_left = Some((saga.state.step, now_ms - saga.updated_at_ms));
            if new.state.step == SagaStep::Compensating {
                transition.compensation = Some(cause);
            }
        }
        planned.saga = Some(new);
    }
    for command in &decision.commands {
        planned.outbox.push(store::command_row(command, now_ms)?);
    }
    if !decision.commands.is_empty() {
        let kinds: Vec<&str> = decision.commands.iter().map(|c| c.kind()).collect();
        tracing::info!(%order_id, commands = ?kinds, "saga sends commands");
    }
    planned.handled = Handled::Applied {
        commands: decision.commands.len(),
    };
    Ok(planned)
}

/// A transaction's writes, sent together as one [`Script`] (on SQLite one hand-off to the
/// connection's thread), with the number of rows they must change.
#[derive(Default)]
struct Writes {
    script: Script,
    expected: u64,
}

impl Writes {
    /// Adds the writes of an order and a saga that changed since they were read at `loaded`'s
    /// versions.
    fn add(&mut self, loaded: &Loaded, order: Option<&OrderRecord>, saga: Option<&SagaRecord>) {
        if let Some(order) = order {
            store::add_order_update(&mut self.script, order, loaded.order_version);
            self.expected += 1;
        }
        if let Some(saga) = saga {
            store::add_saga_update(&mut self.script, saga, loaded.saga_version);
            self.expected += 1;
        }
    }

    fn add_outbox(&mut self, rows: &[OutboxRow]) {
        outbox::add_rows(&mut self.script, rows);
        self.expected += rows.len() as u64;
    }

    /// Runs them; an order or saga that moved on since it was read (its version check changed
    /// nothing) is a [`DbError::Conflict`], and the transaction is retried or skipped.
    async fn run(self, tx: &mut Tx) -> Result<(), DbError> {
        let expected = self.expected;
        let changed = self.script.execute(tx).await?;
        if changed != expected {
            return Err(DbError::Conflict(format!(
                "{changed} of {expected} rows written: an order or saga changed meanwhile"
            )));
        }
        Ok(())
    }
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
    let planned = plan(&order, &saga, &decision, now_ms, "step_timeout")?;
    let mut writes = Writes::default();
    writes.add(
        &Loaded::of(&order, &saga),
        planned.order.as_ref(),
        planned.saga.as_ref(),
    );
    writes.add_outbox(&planned.outbox);
    writes.run(&mut tx).await?;
    tx.commit().await?;
    planned.transition.record();
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
