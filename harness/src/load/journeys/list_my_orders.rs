//! `list_my_orders`: a customer lists their orders.

use std::sync::Arc;

use goose::prelude::*;

use super::{JourneyFuture, Op, me, send};
use crate::load::Ctx;
use crate::load::endpoint::Endpoint;

pub fn run(user: &mut GooseUser, ctx: Arc<Ctx>) -> JourneyFuture<'_> {
    Box::pin(async move {
        let token = &ctx.target.customers[me(user)].token;
        send::<()>(
            user,
            &ctx,
            Endpoint::ListOrders,
            "/api/orders",
            token,
            None,
            &[],
            Op::Read,
        )
        .await?;
        Ok(())
    })
}
