#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Integration tests of the payment service, each run against SQLite and (when
//! `TEST_POSTGRES_URL` is set) Postgres.

mod commands;
mod helpers;
mod http;
mod rebuild;
