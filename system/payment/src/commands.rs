//! The payment side of the order saga: `AuthorizePayment`, `CapturePayment` and `VoidPayment`.
//!
//! [`handle_command`] applies one command in one transaction: the inbox record of its message id,
//! the ledger event (with its projection) and the announcement (outbox) commit together. A
//! redelivered message (same id) changes nothing. A repeated command (new id) is answered from
//! the order's state, folded from its own ledger events, so money moves at most once:
//!
//! | state \ command | Authorize | Capture | Void |
//! |---|---|---|---|
//! | no event | check the limit → AUTHORIZED / DECLINED | warn, silent | VOIDED(0) tombstone |
//! | AUTHORIZED | re-announce authorized | CAPTURED | VOIDED (drop the hold) |
//! | DECLINED | re-announce declined | warn, silent | announce voided(0), nothing held |
//! | CAPTURED | re-announce authorized | re-announce captured | warn, silent |
//! | VOIDED, never authorized | DECLINED ("voided before authorization") | warn, silent | re-announce |
//! | VOIDED after a hold | announce declined ("already voided"), append nothing | warn, silent | re-announce |
//!
//! Refunds are out of scope for now: a void of a captured payment is logged and ignored, so a
//! late compensation of a confirmed order leaves the capture in place (the saga only voids what
//! it has not captured).

use std::sync::Arc;

use contracts::domain::{CustomerId, Money, OrderId};
use contracts::http::LedgerEntryKind;
use contracts::messages::{Envelope, MessageKind, PaymentCommand, PaymentEvent, decode, topics};
use platform::db::{Db, DbError, Tx, retry};
use platform::messaging::consumer::{Delivery, HandleError, Handler};
use platform::messaging::inbox;
use platform::messaging::outbox::{self, OutboxRow};
use tokio::sync::Notify;
use uuid::Uuid;

use crate::ledger::OrderPayment;
use crate::store::{self, NewEvent, corrupt};

/// The inbox's name for this consumer: the consumer group.
pub const CONSUMER: &str = crate::SERVICE;

pub const UNKNOWN_CUSTOMER: &str = "unknown customer";
pub const VOIDED_BEFORE_AUTHORIZATION: &str = "payment was voided before authorization";
pub const ALREADY_VOIDED: &str = "payment was already voided";

/// What [`handle_command`] did with a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Processed {
    /// The message id was in the inbox already: nothing changed, nothing was announced.
    Duplicate,
    /// The command was applied (which may mean re-announcing an earlier outcome).
    Handled,
}

fn money(minor: i64) -> Result<Money, DbError> {
    Money::from_minor(minor).map_err(corrupt)
}

/// Applies one command, with its inbox record, ledger event and announcement, in one transaction.
///
/// Not retried here: wrap it in [`platform::db::retry`] (the consumer does).
#[tracing::instrument(
    skip_all,
    fields(order_id = %env.body.order_id(), command = env.body.kind(), message_id = %env.message_id)
)]
pub async fn handle_command(db: &Db, env: &Envelope<PaymentCommand>) -> Result<Processed, DbError> {
    let mut tx = db.begin().await?;
    let processed = apply_command(db, &mut tx, env).await?;
    tx.commit().await?;
    Ok(processed)
}

/// Applies commands that arrived together in one transaction, in order; returns whether any
/// was new (and so announced an event). One inbox insert records all of them and one outbox
/// insert announces what they did: on SQLite each statement is a hand-off to the connection's
/// worker thread and back (docs/performance.md).
///
/// Not retried here: wrap it in [`platform::db::retry`] (the consumer does).
pub async fn handle_commands(db: &Db, envs: &[Envelope<PaymentCommand>]) -> Result<bool, DbError> {
    let mut tx = db.begin().await?;
    let ids: Vec<Uuid> = envs.iter().map(|env| env.message_id).collect();
    let first = inbox::first_deliveries(&mut tx, CONSUMER, &ids).await?;
    let mut rows = Vec::new();
    for (env, first) in envs.iter().zip(&first) {
        if !first {
            tracing::debug!(message_id = %env.message_id, "duplicate delivery ignored");
            continue;
        }
        if let Some(event) = effect(db, &mut tx, env).await? {
            let envelope = Envelope::new(event, platform::now_ms());
            rows.push(OutboxRow::new(topics::PAYMENT_EVENTS, &envelope)?);
        }
    }
    outbox::enqueue_rows(&mut tx, &rows).await?;
    tx.commit().await?;
    Ok(first.contains(&true))
}

/// Applies one command inside the caller's transaction.
async fn apply_command(
    db: &Db,
    tx: &mut Tx,
    env: &Envelope<PaymentCommand>,
) -> Result<Processed, DbError> {
    if !inbox::first_delivery(tx, CONSUMER, env.message_id).await? {
        tracing::debug!("duplicate delivery ignored");
        return Ok(Processed::Duplicate);
    }
    if let Some(event) = effect(db, tx, env).await? {
        let envelope = Envelope::new(event, platform::now_ms());
        outbox::enqueue(tx, topics::PAYMENT_EVENTS, &envelope).await?;
    }
    Ok(Processed::Handled)
}

/// What a new command does inside the caller's transaction, and the event it announces.
async fn effect(
    db: &Db,
    tx: &mut Tx,
    env: &Envelope<PaymentCommand>,
) -> Result<Option<PaymentEvent>, DbError> {
    let order_id = env.body.order_id();
    store::lock_order(db, tx, order_id).await?;
    let state = OrderPayment::of(&store::order_events(tx, order_id).await?);
    let cmd = Command {
        db,
        message_id: env.message_id,
        order_id,
    };
    let event = match &env.body {
        PaymentCommand::AuthorizePayment {
            customer_id,
            amount_minor,
            ..
        } => Some(cmd.authorize(tx, state, customer_id, *amount_minor).await?),
        PaymentCommand::CapturePayment { .. } => cmd.capture(tx, state).await?,
        PaymentCommand::VoidPayment { .. } => cmd.void(tx, state).await?,
    };
    Ok(event)
}

struct Command<'a> {
    db: &'a Db,
    message_id: Uuid,
    order_id: OrderId,
}

impl Command<'_> {
    async fn append(
        &self,
        tx: &mut Tx,
        customer_id: Option<CustomerId>,
        kind: LedgerEntryKind,
        amount_minor: i64,
        reason: Option<String>,
    ) -> Result<(), DbError> {
        let new = NewEvent {
            customer_id,
            order_id: self.order_id,
            kind,
            amount_minor,
            reason,
        };
        store::append(self.db, tx, new, self.message_id).await?;
        Ok(())
    }

    async fn decline(
        &self,
        tx: &mut Tx,
        customer_id: &CustomerId,
        amount: Money,
        reason: String,
    ) -> Result<PaymentEvent, DbError> {
        self.append(
            tx,
            Some(customer_id.clone()),
            LedgerEntryKind::Declined,
            amount.minor(),
            Some(reason.clone()),
        )
        .await?;
        tracing::info!(%reason, "payment declined");
        Ok(PaymentEvent::PaymentDeclined {
            order_id: self.order_id,
            reason,
        })
    }

    async fn authorize(
        &self,
        tx: &mut Tx,
        state: OrderPayment,
        customer_id: &CustomerId,
        amount: Money,
    ) -> Result<PaymentEvent, DbError> {
        let order_id = self.order_id;
        match state {
            OrderPayment::Authorized { amount_minor, .. }
            | OrderPayment::Captured { amount_minor } => {
                tracing::info!("already authorized; re-announcing");
                Ok(PaymentEvent::PaymentAuthorized {
                    order_id,
                    amount_minor: money(amount_minor)?,
                })
            }
            OrderPayment::Declined { reason } => {
                tracing::info!("already declined; re-announcing");
                Ok(PaymentEvent::PaymentDeclined { order_id, reason })
            }
            OrderPayment::Voided {
                authorized: false, ..
            } => {
                self.decline(tx, customer_id, amount, VOIDED_BEFORE_AUTHORIZATION.into())
                    .await
            }
            OrderPayment::Voided {
                authorized: true, ..
            } => {
                // The hold was taken and dropped (the saga compensated); this is a late retry.
                // Declining again tells the saga nothing new and moves no money.
                tracing::info!("authorization after its void; declining without a ledger entry");
                Ok(PaymentEvent::PaymentDeclined {
                    order_id,
                    reason: ALREADY_VOIDED.into(),
                })
            }
            OrderPayment::New => {
                let Some(limit) = store::credit_limit(tx, customer_id).await? else {
                    return self
                        .decline(tx, customer_id, amount, UNKNOWN_CUSTOMER.into())
                        .await;
                };
                let balance = store::lock_balance(self.db, tx, customer_id).await?;
                let exposure = balance
                    .held_minor
                    .checked_add(balance.captured_minor)
                    .and_then(|used| used.checked_add(amount.minor()));
                if exposure.is_none_or(|e| e > limit) {
                    let reason = format!(
                        "credit limit exceeded: held {} + captured {} + requested {} > limit {}",
                        money(balance.held_minor)?,
                        money(balance.captured_minor)?,
                        amount,
                        money(limit)?,
                    );
                    return self.decline(tx, customer_id, amount, reason).await;
                }
                self.append(
                    tx,
                    Some(customer_id.clone()),
                    LedgerEntryKind::Authorized,
                    amount.minor(),
                    None,
                )
                .await?;
                tracing::info!(amount = %amount, "payment authorized");
                Ok(PaymentEvent::PaymentAuthorized {
                    order_id,
                    amount_minor: amount,
                })
            }
        }
    }

    async fn capture(
        &self,
        tx: &mut Tx,
        state: OrderPayment,
    ) -> Result<Option<PaymentEvent>, DbError> {
        let order_id = self.order_id;
        match state {
            OrderPayment::Authorized {
                customer_id,
                amount_minor,
            } => {
                self.append(
                    tx,
                    Some(customer_id),
                    LedgerEntryKind::Captured,
                    amount_minor,
                    None,
                )
                .await?;
                tracing::info!(amount_minor, "payment captured");
                Ok(Some(PaymentEvent::PaymentCaptured {
                    order_id,
                    amount_minor: money(amount_minor)?,
                }))
            }
            OrderPayment::Captured { amount_minor } => {
                tracing::info!("already captured; re-announcing");
                Ok(Some(PaymentEvent::PaymentCaptured {
                    order_id,
                    amount_minor: money(amount_minor)?,
                }))
            }
            other => {
                tracing::warn!(state = ?other, "capture of a payment that is not authorized ignored");
                Ok(None)
            }
        }
    }

    async fn void(
        &self,
        tx: &mut Tx,
        state: OrderPayment,
    ) -> Result<Option<PaymentEvent>, DbError> {
        let order_id = self.order_id;
        let voided = |amount_minor: i64| -> Result<Option<PaymentEvent>, DbError> {
            Ok(Some(PaymentEvent::PaymentVoided {
                order_id,
                amount_minor: money(amount_minor)?,
            }))
        };
        match state {
            OrderPayment::Authorized {
                customer_id,
                amount_minor,
            } => {
                self.append(
                    tx,
                    Some(customer_id),
                    LedgerEntryKind::Voided,
                    amount_minor,
                    None,
                )
                .await?;
                tracing::info!(amount_minor, "hold voided");
                voided(amount_minor)
            }
            OrderPayment::New => {
                // The command names no customer; the tombstone moves no money and makes a late
                // authorization decline.
                self.append(tx, None, LedgerEntryKind::Voided, 0, None)
                    .await?;
                tracing::info!("void arrived first; a later authorization will be declined");
                voided(0)
            }
            OrderPayment::Voided { amount_minor, .. } => {
                tracing::info!("already voided; re-announcing");
                voided(amount_minor)
            }
            OrderPayment::Declined { .. } => {
                tracing::info!("void of a declined payment: nothing is held");
                voided(0)
            }
            OrderPayment::Captured { amount_minor } => {
                tracing::warn!(
                    amount_minor,
                    "void of a captured payment ignored: refunds are not supported"
                );
                Ok(None)
            }
        }
    }
}

/// Feeds `payment.commands` into [`handle_command`] for the consumer loop.
pub struct CommandConsumer {
    db: Db,
    relay: Arc<Notify>,
}

impl CommandConsumer {
    /// `relay` is the outbox relay's waker: the event goes out right after the commit instead of
    /// at the relay's next poll.
    pub fn new(db: Db, relay: Arc<Notify>) -> Self {
        Self { db, relay }
    }
}

impl Handler for CommandConsumer {
    async fn handle(&self, delivery: &Delivery) -> Result<(), HandleError> {
        let env: Envelope<PaymentCommand> = decode(&delivery.payload)?;
        if retry(5, || handle_command(&self.db, &env)).await? == Processed::Handled {
            self.relay.notify_one();
        }
        Ok(())
    }

    async fn handle_batch(&self, deliveries: &[Delivery]) -> Result<(), HandleError> {
        let envs = deliveries
            .iter()
            .map(|delivery| decode::<PaymentCommand>(&delivery.payload))
            .collect::<Result<Vec<_>, _>>()?;
        if retry(5, || handle_commands(&self.db, &envs)).await? {
            self.relay.notify_one();
        }
        Ok(())
    }
}
