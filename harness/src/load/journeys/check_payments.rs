//! `check_payments`: a support agent (an administrator) looks up the payments of an order still
//! in progress: the one journey whose request goes through the gateway to the payment service,
//! so that a slow or failing payment service shows at the edge (`payment-brownout`).

use std::sync::Arc;

use goose::prelude::*;
use rand::seq::IndexedRandom;

use super::{JourneyFuture, send};
use crate::load::Ctx;
use crate::load::endpoint::{Endpoint, payments_path};

pub fn run(user: &mut GooseUser, ctx: Arc<Ctx>) -> JourneyFuture<'_> {
    Box::pin(async move {
        // No order in progress yet: the journey is a no-op, not a request.
        let Some(id) = ctx
            .recorder
            .pending()
            .choose(&mut rand::rng())
            .map(|(id, _)| *id)
        else {
            return Ok(());
        };
        let admin = ctx.target.admin_token.clone();
        send::<()>(
            user,
            &ctx,
            Endpoint::Payments,
            &payments_path(id),
            &admin,
            None,
            &[],
        )
        .await?;
        Ok(())
    })
}
