//! `follow_order`: a customer polls one of their pending orders until it is terminal, for at
//! most [`FOLLOW_TIMEOUT`]; and [`follow_pending`], which does the same for every order still
//! pending once the load has stopped.

use std::sync::Arc;
use std::time::{Duration, Instant};

use contracts::http::OrderView;
use goose::prelude::*;

use super::{JourneyFuture, me, send};
use crate::client::ApiClient;
use crate::load::endpoint::{Endpoint, order_path};
use crate::load::{Ctx, FOLLOW_AFTER, FOLLOW_TIMEOUT, POLL_INTERVAL};

pub fn run(user: &mut GooseUser, ctx: Arc<Ctx>) -> JourneyFuture<'_> {
    Box::pin(async move {
        let customer = me(user);
        // No order to follow yet: the journey is a no-op, not a request.
        let Some((id, _)) = ctx.recorder.claim(customer, FOLLOW_AFTER) else {
            return Ok(());
        };
        let token = ctx.target.customers[customer].token.clone();
        let path = order_path(id);
        let deadline = Instant::now() + FOLLOW_TIMEOUT;
        let max_polls = FOLLOW_TIMEOUT.as_millis() / POLL_INTERVAL.as_millis().max(1) + 1;
        for _ in 0..max_polls {
            let reply = send::<()>(user, &ctx, Endpoint::GetOrder, &path, &token, None, &[]);
            let reply = match reply.await {
                Ok(r) => r,
                Err(e) => {
                    ctx.recorder.release(id);
                    return Err(e);
                }
            };
            // Told to come back later: the order is followed again in a later journey.
            if reply.shed.is_some() {
                break;
            }
            if reply.is_success()
                && let Ok(view) = serde_json::from_str::<OrderView>(&reply.body)
                && view.status.is_terminal()
            {
                ctx.recorder.terminal(
                    id,
                    view.status,
                    reply.answered,
                    super::super::saga_time(&view),
                );
                return Ok(());
            }
            if Instant::now() + POLL_INTERVAL > deadline {
                break;
            }
            tokio::time::sleep(POLL_INTERVAL).await;
        }
        ctx.recorder.release(id);
        Ok(())
    })
}

/// Follows every pending order through the admin order list (the read model's copy, as
/// `GET /api/orders/{id}` shows it) until all are terminal or `timeout` has passed. One
/// request per round, however many orders are pending. Not recorded as load.
pub async fn follow_pending(ctx: &Ctx, client: &ApiClient, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    let rounds = timeout.as_millis() / POLL_INTERVAL.as_millis().max(1) + 1;
    for _ in 0..rounds {
        let pending = ctx.recorder.pending();
        if pending.is_empty() {
            return;
        }
        match client.admin_orders(&ctx.target.admin_token).await {
            Ok(orders) => {
                let seen = Instant::now();
                for o in orders {
                    if let Some(view) = o.view
                        && view.status.is_terminal()
                    {
                        ctx.recorder.terminal(
                            view.order_id,
                            view.status,
                            seen,
                            super::super::saga_time(&view),
                        );
                    }
                }
            }
            Err(e) => tracing::warn!("following the pending orders: {e:#}"),
        }
        if Instant::now() + POLL_INTERVAL > deadline {
            return;
        }
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}
