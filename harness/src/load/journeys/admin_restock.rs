//! `admin_restock`: an administrator adds a few units of a well-stocked product. Scarce SKUs are
//! left alone so that orders for them keep being rejected, which is what they are seeded for.
//! Every restock goes into the history with how it ended, for stock conservation.

use std::sync::Arc;

use contracts::domain::Quantity;
use contracts::http::RestockRequest;
use goose::prelude::*;
use rand::Rng;
use rand::seq::IndexedRandom;

use super::{JourneyFuture, Op, send};
use crate::load::Ctx;
use crate::load::endpoint::{Endpoint, restock_path};
use crate::load::roster::is_scarce;

/// Units per restock, at most.
const MAX_UNITS: i64 = 10;

pub fn run(user: &mut GooseUser, ctx: Arc<Ctx>) -> JourneyFuture<'_> {
    Box::pin(async move {
        let (sku, units) = {
            let mut rng = rand::rng();
            let plenty: Vec<_> = ctx.target.skus.iter().filter(|s| !is_scarce(s)).collect();
            let Some(sku) = plenty.choose(&mut rng).map(|s| (*s).clone()) else {
                return Ok(());
            };
            (sku, rng.random_range(1..=MAX_UNITS))
        };
        let body = RestockRequest {
            quantity: Quantity::new(units)
                .unwrap_or_else(|e| unreachable!("1..={MAX_UNITS} is a valid quantity: {e}")),
        };
        let path = restock_path(&sku);
        let admin = ctx.target.admin_token.clone();
        let reply = send(
            user,
            &ctx,
            Endpoint::Restock,
            &path,
            &admin,
            Some(&body),
            &[],
            Op::Restock {
                sku: &sku,
                quantity: units,
            },
        )
        .await?;
        // What stock conservation expects the inventory to have received.
        ctx.recorder.restock(sku, units, reply.ended());
        Ok(())
    })
}
