//! The saga watch: the harness's own clock on every saga. While the load runs (and while the
//! pending orders are followed after it), it lists the PENDING orders every [`INTERVAL`]; an
//! order accepted before a list was asked for and missing from it has finished by the time the
//! answer came. Saga completion is the time from the answer that accepted the order to that
//! moment (or to a client seeing the order terminal, if that came first): the client's clock
//! only, never the system's timestamps, at the cost of at most one interval plus one list's
//! latency of overstatement.
//!
//! One small request per interval (only the PENDING orders, only their ids are read), and none
//! while nothing is pending; it is not load, so it is not in the per-endpoint statistics, but it
//! is in the history as the process `watch`. A failed or refused list (a 429 of a rate limit on
//! the admin's token, say) is skipped: the sagas it would have timed are timed by the next list
//! or by the clients that see them terminal.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use contracts::domain::OrderId;
use reqwest::Method;
use serde::Deserialize;
use tokio_util::sync::CancellationToken;

use super::Ctx;
use super::history::{Learnt, Op, Process};
use crate::checks::model::Completion;
use crate::client::ApiClient;

/// How often the PENDING orders are listed.
pub const INTERVAL: Duration = Duration::from_millis(50);

const PATH: &str = "/api/admin/orders?status=PENDING";
const F: &str = "pending_orders";

#[derive(Deserialize)]
struct Row {
    order: Head,
}

#[derive(Deserialize)]
struct Head {
    order_id: OrderId,
}

/// Runs until `stop` is cancelled.
pub(crate) async fn sagas(ctx: Arc<Ctx>, client: ApiClient, stop: CancellationToken) {
    let mut tick = tokio::time::interval(INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        if !ctx.recorder.watching() {
            continue;
        }
        let asked = Instant::now();
        ctx.history.invoke(Process::Watch, F, asked, Op::Read);
        let answer = client
            .send::<()>(Method::GET, PATH, &ctx.target.admin_token, None, &[])
            .await;
        let answered = Instant::now();
        let listed = match &answer {
            Ok(a) if a.status.is_success() => serde_json::from_str::<Vec<Row>>(&a.body)
                .map_err(|e| format!("unreadable list: {e}")),
            Ok(a) => Err(format!("answered {}", a.status)),
            Err(e) => Err(format!("{e:#}")),
        };
        match listed {
            Ok(rows) => {
                let pending: BTreeSet<OrderId> =
                    rows.into_iter().map(|r| r.order.order_id).collect();
                let gone = ctx.recorder.pending_listed(&pending, asked, answered);
                let learnt = Learnt::LeftPending {
                    left_pending: &gone,
                };
                ctx.history.complete(
                    Process::Watch,
                    F,
                    answered,
                    Completion::Ok,
                    learnt,
                    200,
                    None,
                );
            }
            Err(error) => {
                let status = answer.as_ref().map_or(0, |a| a.status.as_u16());
                // No answer, or a 2xx that could not be read: nobody knows what it said.
                let ended = if status == 0 || (200..300).contains(&status) {
                    Completion::Info
                } else {
                    Completion::of_status(status)
                };
                ctx.history.complete(
                    Process::Watch,
                    F,
                    answered,
                    ended,
                    Learnt::Nothing,
                    status,
                    Some(&error),
                );
                tracing::debug!("the saga watch skips a list: {error}");
            }
        }
    }
}
