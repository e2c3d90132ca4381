//! System tests on the local backend: the broker and every service as real processes, SQLite
//! files, the real Kafka protocol. Each test starts its own environment (a few seconds), so they
//! are the slow part of `cargo test`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

/// The backend every test of this binary runs on.
pub const BACKEND: harness::scenario::Backend = harness::scenario::Backend::Local;

mod auth;
mod chaos;
mod console;
mod cpu_budget;
mod edge;
mod helpers;
mod observability;
mod recovery;
mod redelivery;
mod saga;
mod scale;
