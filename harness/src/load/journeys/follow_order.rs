//! `follow_order`: a customer polls one of their pending orders until it is terminal, for at
//! most [`FOLLOW_TIMEOUT`]; and [`follow_pending`], which does the same for every order still
//! pending once the load has stopped.

use std::sync::Arc;
use std::time::{Duration, Instant};

use contracts::http::OrderView;
use goose::prelude::*;

use super::{JourneyFuture, Op, me, send};
use crate::checks::model::Completion;
use crate::client::ApiClient;
use crate::load::endpoint::{Endpoint, order_path};
use crate::load::history::{Learnt, Process, Shown};
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
            let op = Op::GetOrder { order_id: id };
            let reply = send::<()>(user, &ctx, Endpoint::GetOrder, &path, &token, None, &[], op);
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
                ctx.recorder.shown(id, view.status, reply.answered);
                ctx.recorder.terminal(id, view.status, reply.answered);
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
/// request per round, however many orders are pending. Not recorded as load; in the history as
/// the process `follower`, whose `admin_orders` reads list the orders it saw terminal first.
pub async fn follow_pending(ctx: &Ctx, client: &ApiClient, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    let rounds = timeout.as_millis() / POLL_INTERVAL.as_millis().max(1) + 1;
    for _ in 0..rounds {
        let pending = ctx.recorder.pending();
        if pending.is_empty() {
            return;
        }
        const F: &str = "admin_orders";
        ctx.history
            .invoke(Process::Follower, F, Instant::now(), Op::Read);
        match client.admin_orders(&ctx.target.admin_token).await {
            Ok(orders) => {
                let seen = Instant::now();
                let waiting: std::collections::BTreeSet<_> =
                    pending.iter().map(|(id, _)| *id).collect();
                let mut terminal = Vec::new();
                for o in orders {
                    if let Some(view) = o.view
                        && view.status.is_terminal()
                        && waiting.contains(&view.order_id)
                    {
                        ctx.recorder.shown(view.order_id, view.status, seen);
                        ctx.recorder.terminal(view.order_id, view.status, seen);
                        terminal.push(Shown {
                            order_id: view.order_id,
                            status: view.status,
                        });
                    }
                }
                let learnt = Learnt::Terminal {
                    terminal: &terminal,
                };
                ctx.history.complete(
                    Process::Follower,
                    F,
                    seen,
                    Completion::Ok,
                    learnt,
                    200,
                    None,
                );
            }
            Err(e) => {
                let error = format!("{e:#}");
                ctx.history.complete(
                    Process::Follower,
                    F,
                    Instant::now(),
                    Completion::Info,
                    Learnt::Nothing,
                    0,
                    Some(&error),
                );
                tracing::warn!("following the pending orders: {error}");
            }
        }
        if Instant::now() + POLL_INTERVAL > deadline {
            return;
        }
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}
