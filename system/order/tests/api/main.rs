//! Integration tests of the order service against SQLite and (with `TEST_POSTGRES_URL`)
//! Postgres. No broker: tests call the functions the consumers and the HTTP handlers call, and
//! read the tables and the outbox rows they wrote.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod consumers;
mod helpers;
mod idempotency;
mod projector;
mod routes;
mod saga_flow;
mod timeouts;
