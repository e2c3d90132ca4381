//! `check_payments`: a support agent (an administrator) looks up the payments of an order still
//! in progress: the one journey whose request goes through the gateway to the payment service,
//! so that a slow or failing payment service shows at the edge (`payment-brownout`).

use std::sync::Arc;

use contracts::domain::OrderId;
use goose::prelude::*;
use rand::seq::IndexedRandom;

use super::{JourneyFuture, Op, send};
use crate::load::Ctx;
use crate::load::endpoint::{Endpoint, payments_path};

pub fn run(user: &mut GooseUser, ctx: Arc<Ctx>) -> JourneyFuture<'_> {
    Box::pin(async move {
        // No order in progress: the agent looks up an order number that does not exist (a
        // typo), which the payment service answers with an empty list.
        let id = ctx
            .recorder
            .pending()
            .choose(&mut rand::rng())
            .map_or_else(OrderId::new, |(id, _)| *id);
        let admin = ctx.target.admin_token.clone();
        send::<()>(
            user,
            &ctx,
            Endpoint::Payments,
            &payments_path(id),
            &admin,
            None,
            &[],
            Op::Read,
        )
        .await?;
        Ok(())
    })
}
