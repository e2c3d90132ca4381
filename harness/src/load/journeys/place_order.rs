//! `place_order`: a customer places an order of 1 to 3 lines with a fresh `Idempotency-Key`,
//! and now and then sends the very same request again, as a client retrying after a lost answer
//! would, to exercise the replay path. Every `POST` is recorded as an
//! [`OrderAttempt`](crate::checks::model::OrderAttempt). An order the system shed (503 or 429
//! with `Retry-After`) created nothing, so its attempt is a definite failure, and it is not
//! sent again at once: the client was told to come back later.

use std::sync::Arc;

use contracts::http::PlaceOrderRequest;
use goose::prelude::*;
use rand::Rng;

use super::{JourneyFuture, Op, Reply, me, send};
use crate::checks::model::{AttemptOutcome, OrderAttempt};
use crate::load::endpoint::Endpoint;
use crate::load::{Ctx, roster};

/// The share of orders sent a second time with the same key.
pub const REPLAY_SHARE: f64 = 0.1;

pub fn run(user: &mut GooseUser, ctx: Arc<Ctx>) -> JourneyFuture<'_> {
    Box::pin(async move {
        let customer = me(user);
        place(user, &ctx, customer).await
    })
}

/// Places one order as `customer` (an index into the target's customers), replaying it now and
/// then, and records the attempt.
pub async fn place(
    user: &mut GooseUser,
    ctx: &Arc<Ctx>,
    customer: usize,
) -> Result<(), Box<TransactionError>> {
    {
        let (lines, replay, sampled) = {
            let mut rng = rand::rng();
            (
                roster::order_lines(&mut rng, &ctx.target.skus),
                rng.random_bool(REPLAY_SHARE),
                ctx.trace_sampling >= 1.0 || rng.random_bool(ctx.trace_sampling.clamp(0.0, 1.0)),
            )
        };
        let key = uuid::Uuid::new_v4().to_string();
        let body = PlaceOrderRequest {
            items: lines.clone(),
        };
        let token = ctx.target.customers[customer].token.clone();
        let customer_id = &ctx.target.customers[customer].id;
        // Our own trace context, so the report can find this order's saga among the spans the
        // services export (the gateway continues it); a replay belongs to the same trace. An
        // order left out of the sample says so in its flags, and the services record nothing.
        let trace_id = random_hex::<16>();
        let flags = if sampled { "01" } else { "00" };
        for _ in 0..1 + usize::from(replay) {
            let traceparent = format!("00-{trace_id}-{}-{flags}", random_hex::<8>());
            let headers = [
                ("idempotency-key", key.as_str()),
                ("traceparent", traceparent.as_str()),
            ];
            let reply = send(
                user,
                ctx,
                Endpoint::PlaceOrder,
                "/api/orders",
                &token,
                Some(&body),
                &headers,
                Op::PlaceOrder {
                    customer: customer_id,
                    key: &key,
                    lines: &lines,
                },
            )
            .await?;
            let attempt = OrderAttempt {
                customer_id: customer_id.clone(),
                idempotency_key: Some(key.clone()),
                lines: lines.clone(),
                outcome: outcome(&reply),
            };
            ctx.recorder.attempt(
                attempt,
                customer,
                reply.answered,
                sampled.then_some(trace_id.as_str()),
            );
            if reply.shed.is_some() {
                break;
            }
        }
        Ok(())
    }
}

/// `N` random bytes as lowercase hex, never all zero (an invalid W3C id).
fn random_hex<const N: usize>() -> String {
    let mut bytes = [0u8; N];
    rand::rng().fill(&mut bytes[..]);
    if bytes.iter().all(|b| *b == 0) {
        bytes[N - 1] = 1;
    }
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn outcome(reply: &Reply) -> AttemptOutcome {
    match &reply.error {
        Some(error) => AttemptOutcome::Unknown {
            error: error.clone(),
        },
        None => AttemptOutcome::from_answer(reply.status, &reply.body, reply.replayed),
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use super::*;
    use crate::load::journeys::shed_wait;

    fn answer(status: u16, retry_after: Option<&str>) -> Reply {
        Reply {
            status,
            body: r#"{"error":"overloaded, retry later"}"#.into(),
            replayed: false,
            answered: Instant::now(),
            error: None,
            shed: shed_wait(status, retry_after),
        }
    }

    #[test]
    fn a_shed_order_is_a_definite_failure_for_the_lost_orders_check_never_unknown() {
        for status in [503, 429] {
            let reply = answer(status, Some("1"));
            assert_eq!(reply.shed, Some(Duration::from_secs(1)));
            let outcome = outcome(&reply);
            assert_eq!(outcome, AttemptOutcome::Failed { status });
            assert!(
                !outcome.is_indeterminate(),
                "a shed POST created no order: {outcome:?}"
            );
            assert_eq!(outcome.acknowledged(), None);
        }
    }
}
