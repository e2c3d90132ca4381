//! The CQRS read model: `order_view`, fed only by `order.events`.
//!
//! Every `OrderChanged` carries the order's full state after a change and the write model's
//! version. The projector stores it only when that version is newer than the stored one, so a
//! stale event (delivered late, or re-published by the outbox relay after a lease ran out) and a
//! repeated one change nothing; the inbox additionally skips exact redeliveries. The read side
//! (`GET /orders...`) is served from this table alone, so it lags the write model by the relay
//! and consumer latency: a just-placed order may answer 404 for a moment.

use std::collections::BTreeMap;

use contracts::domain::OrderId;
use contracts::http::OrderView;
use contracts::messages::{Envelope, MessageKind, OrderEvent, decode, topics};
use platform::db::{Db, DbError, Script, Tx};
use platform::messaging::consumer::{Delivery, HandleError, Handler};
use platform::messaging::inbox;

use crate::store;

/// The inbox consumer name and consumer group of the projector.
pub const CONSUMER: &str = "order-projector";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Projected {
    /// The view now holds this event's version.
    Applied,
    /// The view already held this version or a newer one.
    Stale,
    /// The inbox had seen this message id.
    Duplicate,
}

#[tracing::instrument(skip_all, fields(order_id = %env.body.order_id(), message_id = %env.message_id))]
pub async fn project(db: &Db, env: &Envelope<OrderEvent>) -> Result<Projected, DbError> {
    platform::db::retry(5, || project_once(db, env)).await
}

async fn project_once(db: &Db, env: &Envelope<OrderEvent>) -> Result<Projected, DbError> {
    let mut tx = db.begin().await?;
    let projected = project_in(&mut tx, env).await?;
    tx.commit().await?;
    Ok(projected)
}

/// Projects one event inside the caller's transaction.
async fn project_in(tx: &mut Tx, env: &Envelope<OrderEvent>) -> Result<Projected, DbError> {
    if !inbox::first_delivery(tx, CONSUMER, env.message_id).await? {
        return Ok(Projected::Duplicate);
    }
    let OrderEvent::OrderChanged { version, order, .. } = &env.body;
    let applied = store::upsert_view(tx, order, *version).await?;
    if applied {
        tracing::debug!(version, status = %order.status, "read model updated");
        Ok(Projected::Applied)
    } else {
        tracing::debug!(version, "stale order event ignored");
        Ok(Projected::Stale)
    }
}

/// Projects events that arrived together in one transaction, as each would on its own. The
/// version check makes a projection idempotent by itself, so the inbox here is only a record:
/// the ids are recorded and, of each order's events, only the newest version is written (the
/// version check would keep only that one anyway), in one [`Script`] (one hand-off to SQLite's
/// connection thread for the whole batch).
pub async fn project_all(db: &Db, envs: &[Envelope<OrderEvent>]) -> Result<(), DbError> {
    platform::db::retry(5, || async {
        let mut tx = db.begin().await?;
        let ids: Vec<_> = envs.iter().map(|env| env.message_id).collect();
        let mut newest: BTreeMap<OrderId, (&OrderView, i64)> = BTreeMap::new();
        for env in envs {
            let OrderEvent::OrderChanged {
                order_id,
                version,
                order,
            } = &env.body;
            let slot = newest.entry(*order_id).or_insert((order, *version));
            if *version > slot.1 {
                *slot = (order, *version);
            }
        }
        let views: Vec<(&OrderView, i64)> = newest.into_values().collect();
        let mut script = Script::new();
        inbox::add_deliveries(&mut script, CONSUMER, &ids);
        store::add_view_upserts(&mut script, &views)?;
        script.execute(&mut tx).await?;
        tx.commit().await?;
        tracing::debug!(
            events = envs.len(),
            orders = views.len(),
            "read model updated"
        );
        Ok(())
    })
    .await
}

/// The consumer of `order.events` (group `order-projector`).
pub struct ProjectorHandler {
    pub db: Db,
}

impl Handler for ProjectorHandler {
    async fn handle(&self, delivery: &Delivery) -> Result<(), HandleError> {
        if delivery.topic != topics::ORDER_EVENTS {
            return Err(HandleError::Poison(format!(
                "the projector does not consume topic {}",
                delivery.topic
            )));
        }
        let env = decode::<OrderEvent>(&delivery.payload)?;
        project(&self.db, &env).await?;
        Ok(())
    }

    async fn handle_batch(&self, deliveries: &[Delivery]) -> Result<(), HandleError> {
        let mut envs = Vec::with_capacity(deliveries.len());
        for delivery in deliveries {
            if delivery.topic != topics::ORDER_EVENTS {
                return Err(HandleError::Poison(format!(
                    "the projector does not consume topic {}",
                    delivery.topic
                )));
            }
            envs.push(decode::<OrderEvent>(&delivery.payload)?);
        }
        project_all(&self.db, &envs).await?;
        Ok(())
    }
}
