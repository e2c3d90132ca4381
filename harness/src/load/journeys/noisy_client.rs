//! `noisy_client`: a misbehaving client script. One customer, the last of the roster (no other
//! user is that customer in a run of fewer users than there are customers), lists its orders
//! [`BURST`] times back to back without pause, and goes on after a 429: the load one abusive
//! client puts on everyone else (`noisy-customer`).

use std::sync::Arc;

use goose::prelude::*;

use super::{JourneyFuture, send};
use crate::load::Ctx;
use crate::load::endpoint::Endpoint;

/// Requests per journey.
pub const BURST: usize = 25;

pub fn run(user: &mut GooseUser, ctx: Arc<Ctx>) -> JourneyFuture<'_> {
    Box::pin(async move {
        let Some(customer) = ctx.roster.last().copied() else {
            return Ok(());
        };
        let token = ctx.target.customers[customer].token.clone();
        for _ in 0..BURST {
            send::<()>(
                user,
                &ctx,
                Endpoint::ListOrders,
                "/api/orders",
                &token,
                None,
                &[],
            )
            .await?;
        }
        Ok(())
    })
}
