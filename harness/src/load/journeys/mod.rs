//! The journeys, one module each, as goose transactions, and [`send`], the one way they make a
//! request: through goose, timed and recorded by us.
//!
//! Every journey runs paced (see [`Pace`]): in a closed model each journey is a goose
//! transaction with its weight, and a user the system shed waits the `Retry-After` before its
//! next journey; in an open model one transaction, [`arrival`], waits for an arrival of the
//! schedule and runs the journey the weighted mix picks for it.

pub mod admin_restock;
pub mod browse_catalog;
pub mod check_payments;
pub mod follow_order;
pub mod list_my_orders;
pub mod noisy_client;
pub mod place_order;
pub mod view_product;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use goose::goose::GooseResponse;
use goose::prelude::*;
use serde::Serialize;

use contracts::domain::{OrderId, OrderStatus};

use super::arrivals::Turn;
use super::endpoint::Endpoint;
use super::history::{Learnt, Op, Process};
use super::recorder::Sample;
use super::{Ctx, MAX_RETRY_AFTER, Pace, roster};
use crate::checks::model::Completion;
use crate::scenario::Journey;

/// Who a goose user is, set once when it starts.
#[derive(Debug, Clone)]
pub struct Me {
    /// Index into the target's customers.
    pub customer: usize,
    /// Closed model: the system shed a request of the journey running, and asked to come back
    /// after this long; the user waits it out before its next journey.
    pub back_off: Option<Duration>,
    /// The user's process in the history: a new one after each operation whose outcome it
    /// could not learn (`info`).
    pub process: u64,
}

/// The goose transaction of a journey, in a closed model.
pub fn transaction(ctx: &Arc<Ctx>, journey: Journey) -> Transaction {
    let ctx = Arc::clone(ctx);
    let journey = run_fn(journey);
    Transaction::new(Arc::new(move |user: &mut GooseUser| {
        Box::pin(closed(user, Arc::clone(&ctx), journey))
    }))
}

/// The one goose transaction of an open model: the user's next arrival, running the journey
/// the mix picks for it (see [`open`]).
pub fn arrival(ctx: &Arc<Ctx>) -> Transaction {
    let ctx = Arc::clone(ctx);
    Transaction::new(Arc::new(move |user: &mut GooseUser| {
        Box::pin(open(user, Arc::clone(&ctx)))
    }))
    .set_name("arrival")
}

fn run_fn(journey: Journey) -> JourneyFn {
    match journey {
        Journey::BrowseCatalog => browse_catalog::run,
        Journey::ViewProduct => view_product::run,
        Journey::PlaceOrder => place_order::run,
        Journey::FollowOrder => follow_order::run,
        Journey::ListMyOrders => list_my_orders::run,
        Journey::AdminRestock => admin_restock::run,
        Journey::CheckPayments => check_payments::run,
        Journey::NoisyClient => noisy_client::run,
    }
}

/// The on-start transaction: the user becomes a customer of the roster.
pub fn sign_in(ctx: &Arc<Ctx>) -> Transaction {
    let ctx = Arc::clone(ctx);
    Transaction::new(Arc::new(move |user: &mut GooseUser| {
        let customer = roster::customer_of(&ctx.roster, user.weighted_users_index);
        user.set_session_data(Me {
            customer,
            back_off: None,
            process: ctx.history.new_process(),
        });
        Box::pin(async { Ok(()) })
    }))
    .set_name("sign_in")
}

type JourneyFuture<'a> = Pin<Box<dyn Future<Output = TransactionResult> + Send + 'a>>;
type JourneyFn = for<'a> fn(&'a mut GooseUser, Arc<Ctx>) -> JourneyFuture<'a>;

/// Closed model: runs `journey`, then waits out a `Retry-After` the system answered with,
/// never past the end of the load.
async fn closed(user: &mut GooseUser, ctx: Arc<Ctx>, journey: JourneyFn) -> TransactionResult {
    if let Pace::Closed { load_end } = &ctx.pace {
        crate::console::live::while_paused(*load_end).await;
    }
    let result = journey(user, Arc::clone(&ctx)).await;
    let back_off = user
        .get_session_data_mut::<Me>()
        .and_then(|me| me.back_off.take());
    if let (Some(wait), Pace::Closed { load_end }) = (back_off, &ctx.pace) {
        let until = (tokio::time::Instant::now() + wait).min(*load_end);
        tokio::time::sleep_until(until).await;
    }
    result
}

/// Open model: waits for the user's next arrival (the ones it was too late for are counted as
/// dropped, those due while the console had the load paused as paused) and runs the journey the
/// mix picks for it; with the schedule over, or the arrival due in a pause, returns without
/// running anything.
///
/// The journey is picked per arrival, not by goose's weighted scheduler: goose shuffles one
/// weighted list per scenario and every user walks it from its head, so with a pool where each
/// user runs only a few journeys (400 users at 20/s run one each in 20 s) the mix would be the
/// head of that list, not the weights. Measured on a 20/s smoke run with 20 users: 120 catalog
/// lists for the 80 the weights ask for. Picking per arrival keeps the mix at the weights
/// whatever the pool.
async fn open(user: &mut GooseUser, ctx: Arc<Ctx>) -> TransactionResult {
    let Pace::Open {
        arrivals,
        start,
        mix,
    } = &ctx.pace
    else {
        return Ok(());
    };
    let origin = start.into_std();
    let paused_at = |due: Duration| crate::console::live::paused_at(origin + due);
    match arrivals.next_turn(*start, paused_at, &ctx.recorder).await {
        Turn::Run { due } => {
            ctx.recorder.arrival_started(due);
            match mix.next() {
                Some(journey) => run_fn(journey)(user, Arc::clone(&ctx)).await,
                None => Ok(()),
            }
        }
        Turn::Paused { .. } | Turn::Over => Ok(()),
    }
}

/// The customer this user is.
pub fn me(user: &GooseUser) -> usize {
    user.get_session_data::<Me>().map_or(0, |m| m.customer)
}

/// What came back from one request.
#[derive(Debug, Clone)]
pub struct Reply {
    /// `0` when no answer came.
    pub status: u16,
    pub body: String,
    /// The answer carried `Idempotent-Replayed`.
    pub replayed: bool,
    /// When the answer (body included) was read.
    pub answered: Instant,
    /// The transport error when `status` is 0.
    pub error: Option<String>,
    /// The system shed the request (429 or 503 with `Retry-After`): how long it asked the
    /// client to wait, at most [`MAX_RETRY_AFTER`].
    pub shed: Option<Duration>,
}

/// How long to wait when `Retry-After` is an HTTP date rather than seconds: the harness has no
/// date parser, and the gateway sends seconds.
const RETRY_AFTER_DATE_WAIT: Duration = Duration::from_secs(1);

/// Whether an answer is the system shedding load, and the wait it asks for: a 429 or 503 with
/// a `Retry-After` header (seconds, or an HTTP date), capped at [`MAX_RETRY_AFTER`]. A 503
/// without the header is a failure (an upstream down), not shedding.
pub fn shed_wait(status: u16, retry_after: Option<&str>) -> Option<Duration> {
    if !matches!(status, 429 | 503) {
        return None;
    }
    let value = retry_after?.trim();
    let wait = value
        .parse::<u64>()
        .map_or(RETRY_AFTER_DATE_WAIT, Duration::from_secs);
    Some(wait.min(MAX_RETRY_AFTER))
}

impl Reply {
    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }

    /// How the request ended for the client, by its status: without an answer (or with a body
    /// cut off) nobody knows.
    pub fn ended(&self) -> Completion {
        if self.error.is_some() {
            Completion::Info
        } else {
            Completion::of_status(self.status)
        }
    }

    fn no_answer(error: String) -> Self {
        Self {
            status: 0,
            body: String::new(),
            replayed: false,
            answered: Instant::now(),
            error: Some(error),
            shed: None,
        }
    }
}

/// The history's name of a request.
fn op_name(endpoint: Endpoint) -> &'static str {
    match endpoint {
        Endpoint::ListProducts => "list_products",
        Endpoint::GetProduct => "get_product",
        Endpoint::PlaceOrder => "place_order",
        Endpoint::GetOrder => "get_order",
        Endpoint::ListOrders => "list_orders",
        Endpoint::Restock => "restock",
        Endpoint::Payments => "payments",
    }
}

/// The fields of an order the history keeps; the rest of the body is skipped unparsed.
#[derive(serde::Deserialize)]
struct OrderHead {
    order_id: OrderId,
    status: OrderStatus,
}

/// How an operation ended and what it learnt, from its answer.
fn completion<'a>(op: Op<'a>, reply: &Reply) -> (Completion, Learnt<'a>) {
    let completion = reply.ended();
    if completion != Completion::Ok {
        return (completion, Learnt::Nothing);
    }
    match op {
        Op::PlaceOrder { .. } | Op::GetOrder { .. } => {
            match serde_json::from_str::<OrderHead>(&reply.body) {
                Ok(o) => (
                    Completion::Ok,
                    Learnt::Order {
                        order_id: o.order_id,
                        status: o.status,
                        replayed: matches!(op, Op::PlaceOrder { .. }).then_some(reply.replayed),
                    },
                ),
                // A 2xx whose body cannot be read: whatever happened, the client does not know.
                Err(_) => (Completion::Info, Learnt::Nothing),
            }
        }
        Op::Restock { sku, quantity } => (Completion::Ok, Learnt::Restocked { sku, quantity }),
        Op::Read => (Completion::Ok, Learnt::Nothing),
    }
}

/// A request to the gateway through goose, named by `endpoint`, timed from just before it is
/// sent to the last byte of the body, and recorded: measured, and as an invocation and its
/// completion in the history (`op` says what it asks for).
#[allow(clippy::too_many_arguments)] // the request's parts, each plain; a struct would only rename them
pub async fn send<B: Serialize + ?Sized>(
    user: &mut GooseUser,
    ctx: &Ctx,
    endpoint: Endpoint,
    path: &str,
    token: &str,
    body: Option<&B>,
    headers: &[(&str, &str)],
    op: Op<'_>,
) -> Result<Reply, Box<TransactionError>> {
    let method = match endpoint {
        Endpoint::PlaceOrder | Endpoint::Restock => GooseMethod::Post,
        _ => GooseMethod::Get,
    };
    let mut builder = user.get_request_builder(&method, path)?.bearer_auth(token);
    for (k, v) in headers {
        builder = builder.header(*k, *v);
    }
    if let Some(b) = body {
        builder = builder.json(b);
    }
    let request = GooseRequest::builder()
        .method(method)
        .path(path)
        .name(endpoint.name())
        .set_request_builder(builder)
        .build();
    let process = Process::User(user.get_session_data::<Me>().map_or(0, |m| m.process));
    let f = op_name(endpoint);
    let sent = Instant::now();
    ctx.history.invoke(process, f, sent, op);
    let goose = user.request(request).await;
    let reply = match goose {
        Ok(GooseResponse {
            response: Ok(response),
            ..
        }) => {
            let status = response.status().as_u16();
            let headers = response.headers();
            let replayed = headers.contains_key("idempotent-replayed");
            let shed = shed_wait(
                status,
                headers
                    .get("retry-after")
                    .map(|v| v.to_str().unwrap_or_default()),
            );
            match response.text().await {
                Ok(body) => Reply {
                    status,
                    body,
                    replayed,
                    answered: Instant::now(),
                    error: None,
                    shed,
                },
                // The status and headers came: a shed answer whose body was cut is still shed.
                Err(e) => Reply {
                    status: if shed.is_some() { status } else { 0 },
                    body: String::new(),
                    replayed,
                    answered: Instant::now(),
                    error: shed
                        .is_none()
                        .then(|| format!("{status} and then the body failed: {e}")),
                    shed,
                },
            }
        }
        Ok(GooseResponse {
            response: Err(e), ..
        }) => Reply::no_answer(e.to_string()),
        Err(e) => Reply::no_answer(e.to_string()),
    };
    let (ended, learnt) = completion(op, &reply);
    ctx.history.complete(
        process,
        f,
        reply.answered,
        ended,
        learnt,
        reply.status,
        reply.error.as_deref(),
    );
    if ended == Completion::Info
        && let Some(me) = user.get_session_data_mut::<Me>()
    {
        me.process = ctx.history.new_process();
    }
    ctx.recorder.request(Sample {
        endpoint,
        sent,
        took: reply.answered.saturating_duration_since(sent),
        status: reply.status,
        shed: reply.shed.is_some(),
    });
    // An open-model user is an independent client: its arrival is simply shed, and the next
    // arrival is another client's. A closed-model user waits before its next journey.
    if let (Some(wait), Pace::Closed { .. }) = (reply.shed, &ctx.pace)
        && let Some(me) = user.get_session_data_mut::<Me>()
    {
        me.back_off = Some(wait);
    }
    Ok(reply)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_429_and_503_with_retry_after_are_shed_and_the_wait_is_capped() {
        assert_eq!(shed_wait(503, Some("2")), Some(Duration::from_secs(2)));
        assert_eq!(shed_wait(429, Some(" 1 ")), Some(Duration::from_secs(1)));
        assert_eq!(shed_wait(503, Some("0")), Some(Duration::ZERO));
        assert_eq!(shed_wait(503, Some("3600")), Some(MAX_RETRY_AFTER));
        assert_eq!(
            shed_wait(429, Some("Wed, 21 Oct 2026 07:28:00 GMT")),
            Some(RETRY_AFTER_DATE_WAIT)
        );
        assert_eq!(shed_wait(503, None), None, "an upstream down, not shedding");
        assert_eq!(shed_wait(500, Some("1")), None);
        assert_eq!(shed_wait(200, Some("1")), None);
    }
}
