//! The journeys, one module each, as goose transactions, and [`send`], the one way they make a
//! request: through goose, timed and recorded by us.

pub mod admin_restock;
pub mod browse_catalog;
pub mod follow_order;
pub mod list_my_orders;
pub mod place_order;
pub mod view_product;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Instant;

use goose::goose::GooseResponse;
use goose::prelude::*;
use serde::Serialize;

use super::endpoint::Endpoint;
use super::recorder::Sample;
use super::{Ctx, roster};
use crate::scenario::Journey;

/// Who a goose user is, set once when it starts.
#[derive(Debug, Clone)]
pub struct Me {
    /// Index into the target's customers.
    pub customer: usize,
}

/// The goose transaction of a journey.
pub fn transaction(ctx: &Arc<Ctx>, journey: Journey) -> Transaction {
    match journey {
        Journey::BrowseCatalog => wrap(ctx, browse_catalog::run),
        Journey::ViewProduct => wrap(ctx, view_product::run),
        Journey::PlaceOrder => wrap(ctx, place_order::run),
        Journey::FollowOrder => wrap(ctx, follow_order::run),
        Journey::ListMyOrders => wrap(ctx, list_my_orders::run),
        Journey::AdminRestock => wrap(ctx, admin_restock::run),
    }
}

/// The on-start transaction: the user becomes a customer of the roster.
pub fn sign_in(ctx: &Arc<Ctx>) -> Transaction {
    let ctx = Arc::clone(ctx);
    Transaction::new(Arc::new(move |user: &mut GooseUser| {
        let customer = roster::customer_of(&ctx.roster, user.weighted_users_index);
        user.set_session_data(Me { customer });
        Box::pin(async { Ok(()) })
    }))
    .set_name("sign_in")
}

type JourneyFuture<'a> = Pin<Box<dyn Future<Output = TransactionResult> + Send + 'a>>;

/// A journey function as a goose transaction that shares `ctx`.
fn wrap(
    ctx: &Arc<Ctx>,
    journey: for<'a> fn(&'a mut GooseUser, Arc<Ctx>) -> JourneyFuture<'a>,
) -> Transaction {
    let ctx = Arc::clone(ctx);
    Transaction::new(Arc::new(move |user: &mut GooseUser| {
        journey(user, Arc::clone(&ctx))
    }))
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
}

impl Reply {
    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }
}

/// A request to the gateway through goose, named by `endpoint`, timed from just before it is
/// sent to the last byte of the body, and recorded.
pub async fn send<B: Serialize + ?Sized>(
    user: &mut GooseUser,
    ctx: &Ctx,
    endpoint: Endpoint,
    path: &str,
    token: &str,
    body: Option<&B>,
    headers: &[(&str, &str)],
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
    let sent = Instant::now();
    let goose = user.request(request).await;
    let reply = match goose {
        Ok(GooseResponse {
            response: Ok(response),
            ..
        }) => {
            let status = response.status().as_u16();
            let replayed = response.headers().contains_key("idempotent-replayed");
            match response.text().await {
                Ok(body) => Reply {
                    status,
                    body,
                    replayed,
                    answered: Instant::now(),
                    error: None,
                },
                Err(e) => Reply {
                    status: 0,
                    body: String::new(),
                    replayed,
                    answered: Instant::now(),
                    error: Some(format!("{status} and then the body failed: {e}")),
                },
            }
        }
        Ok(GooseResponse {
            response: Err(e), ..
        }) => Reply {
            status: 0,
            body: String::new(),
            replayed: false,
            answered: Instant::now(),
            error: Some(e.to_string()),
        },
        Err(e) => Reply {
            status: 0,
            body: String::new(),
            replayed: false,
            answered: Instant::now(),
            error: Some(e.to_string()),
        },
    };
    ctx.recorder.request(Sample {
        endpoint,
        sent,
        took: reply.answered.saturating_duration_since(sent),
        status: reply.status,
    });
    Ok(reply)
}
