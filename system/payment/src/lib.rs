//! The payment service: customer credit accounts and the payment side of the order saga.
//!
//! Money is event sourced. The append-only ledger `payment_events` (AUTHORIZED, DECLINED,
//! CAPTURED, VOIDED per order) is the source of truth; `account_balances` (held and captured per
//! customer) is a projection updated in the same transaction as each appended event, by the same
//! pure fold ([`ledger::apply`]) that `POST /admin/accounts/rebuild` replays the whole ledger
//! with. Accounts only hold a credit limit: an authorization is declined when held + captured +
//! the amount would exceed it (which is how load tests provoke compensation on purpose).
//!
//! The order service drives it with commands on `payment.commands`; every outcome is announced on
//! `payment.events` through the transactional outbox, together with the inbox record of the
//! command. Refunds are out of scope for now: a captured payment is never given back (see
//! [`commands`]).
//!
//! # Layout
//! - [`Config`]: the environment variables, validated before anything binds.
//! - [`startup`]: [`Application`] (build, bind, run until shutdown) and the background loops.
//! - [`routes`]: the admin HTTP API ([`router`]).
//! - [`ledger`]: the pure core: events, [`ledger::apply`], replay, an order's payment state.
//! - [`store`]: appending to the ledger with its projection, and reading it back.
//! - [`commands`]: the saga commands ([`handle_command`]) and their Kafka consumer.
//! - [`accounts`]: accounts, per-order payment records, and the projection rebuild.

pub mod accounts;
pub mod commands;
pub mod ledger;
pub mod routes;
pub mod startup;
pub mod store;

use platform::config::{CommonConfig, ConfigError, DATABASE_URL, KAFKA_BROKERS, required};
use sqlx::migrate::Migrator;

pub use commands::{Processed, handle_command};
pub use routes::{AppState, router};
pub use startup::Application;

/// The service's name: the audience of its service tokens and its Kafka consumer group.
pub const SERVICE: &str = "payment";

/// This service's own tables; the platform adds the outbox and inbox.
pub static SQLITE: Migrator = sqlx::migrate!("migrations/sqlite");
pub static POSTGRES: Migrator = sqlx::migrate!("migrations/postgres");

/// Everything the service reads from the environment.
#[derive(Debug, Clone)]
pub struct Config {
    pub common: CommonConfig,
    /// `DATABASE_URL`: `sqlite://PATH` or `postgres://...`.
    pub database_url: String,
    /// `KAFKA_BROKERS`: `host:port[,host:port]`.
    pub kafka_brokers: String,
}

impl Config {
    pub fn from_env() -> Result<Self, ConfigError> {
        Ok(Self {
            common: CommonConfig::from_env(SERVICE)?,
            database_url: required(
                DATABASE_URL,
                "sqlite://PATH or postgres://USER:PASS@HOST/DB",
            )?,
            kafka_brokers: required(KAFKA_BROKERS, "the Kafka bootstrap servers, host:port")?,
        })
    }
}
