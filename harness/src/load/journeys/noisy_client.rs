//! `noisy_client`: a misbehaving client script. One customer, the last of the roster (no other
//! user is that customer in a run of fewer users than there are customers), places [`BURST`]
//! orders back to back without pause, and ignores `Retry-After`: what one abusive client puts on
//! everyone else (`noisy-customer`). Its orders are real ones, recorded and checked like every
//! other.

use std::sync::Arc;

use goose::prelude::*;

use super::{JourneyFuture, Me, place_order};
use crate::load::Ctx;

/// Orders per journey.
pub const BURST: usize = 20;

pub fn run(user: &mut GooseUser, ctx: Arc<Ctx>) -> JourneyFuture<'_> {
    Box::pin(async move {
        let Some(customer) = ctx.roster.last().copied() else {
            return Ok(());
        };
        for _ in 0..BURST {
            place_order::place(user, &ctx, customer).await?;
        }
        // A well-behaved client waits out a Retry-After before its next journey; this one does
        // not.
        if let Some(me) = user.get_session_data_mut::<Me>() {
            me.back_off = None;
        }
        Ok(())
    })
}
