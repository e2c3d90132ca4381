//! Integration tests of the `chaos` crate: the client against an in-process `chaos-proxy` on
//! port 0, real TCP traffic through its proxies to small upstreams the tests start (echo,
//! source, sink), all on 127.0.0.1 and each bounded in time.
//!
//! Run with `--nocapture` to see the measured figures (latency added, bandwidth reached).

// Test helpers are not `#[test]` functions, so clippy's test allowance does not reach them.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod api;
mod binary;
mod lifecycle;
mod python;
mod support;
mod toxics;
