#![allow(clippy::unwrap_used, clippy::expect_used)]
//! The gateway against fake upstreams that echo what they received.

mod auth;
mod balancing;
mod binary;
mod forwarding;
mod helpers;
mod resilience;
