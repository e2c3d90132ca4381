//! Platform code shared by every service of the reference system.
//!
//! The services (gateway, order, inventory, payment) share code only through this crate and
//! `contracts`; no service imports another. What lives here is what every service needs the same
//! way, so a fix lands once:
//!
//! # Layout
//! - [`config`]: reading and validating configuration from the environment (exit 64 when bad).
//! - [`telemetry`]: JSON logs, OpenTelemetry traces (OTLP export, W3C context propagation) and
//!   database spans, all through `tracing`.
//! - [`metrics`]: the Prometheus recorder, `GET /metrics`, the HTTP request metric, and the names
//!   of every metric the platform records.
//! - [`service`]: start-up (db, topics, listener) and the run loop with bounded drain.
//! - [`shutdown`]: one cancellation signal fed by SIGINT, SIGTERM and, optionally, stdin EOF.
//! - [`http`]: the error type every handler returns, the JSON extractor, health routes, serving.
//! - [`auth`]: user tokens (EdDSA, verified by the gateway) and internal service tokens (HS256,
//!   verified by every service).
//! - [`db`]: one sqlx pool over SQLite or Postgres, chosen by `DATABASE_URL`, with migrations.
//! - [`messaging`]: Kafka clients, the transactional outbox and its relay, the inbox, and the
//!   consumer loop with bounded retries and a dead-letter topic.

pub mod auth;
pub mod config;
pub mod db;
pub mod http;
pub mod messaging;
pub mod metrics;
pub mod service;
pub mod shutdown;
pub mod telemetry;
// Test support for the services' suites (fresh SQLite and Postgres databases).
#[allow(clippy::expect_used, clippy::panic)]
pub mod testing;

/// Milliseconds since the Unix epoch: the one timestamp format in every table and message.
pub fn now_ms() -> i64 {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    i64::try_from(now.as_millis()).unwrap_or(i64::MAX)
}
