//! `view_product`: a customer looks at one product, any SKU of the catalog.

use std::sync::Arc;

use goose::prelude::*;
use rand::seq::IndexedRandom;

use super::{JourneyFuture, Op, me, send};
use crate::load::Ctx;
use crate::load::endpoint::{Endpoint, product_path};

pub fn run(user: &mut GooseUser, ctx: Arc<Ctx>) -> JourneyFuture<'_> {
    Box::pin(async move {
        let Some(sku) = ctx.target.skus.choose(&mut rand::rng()).cloned() else {
            return Ok(());
        };
        let token = &ctx.target.customers[me(user)].token;
        send::<()>(
            user,
            &ctx,
            Endpoint::GetProduct,
            &product_path(&sku),
            token,
            None,
            &[],
            Op::Read,
        )
        .await?;
        Ok(())
    })
}
