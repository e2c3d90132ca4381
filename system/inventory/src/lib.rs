//! The inventory service: the catalog, its stock, and the stock side of the order saga.
//!
//! It owns products and their stock counters, and one reservation per order the saga asked
//! about. The order service drives it with commands on `inventory.commands` (reserve, release,
//! commit); every outcome is announced on `inventory.events` through the transactional outbox, in
//! the same transaction as the stock change and the inbox record of the command. Operators seed
//! and restock the catalog over the admin HTTP API.
//!
//! Stock is conserved per SKU: `received == available + reserved + sold`, and no counter is ever
//! negative. The database enforces both with `CHECK` constraints, so a bug shows up as a failed
//! transaction rather than as silently wrong stock.
//!
//! # Layout
//! - [`Config`]: the environment variables, validated before anything binds.
//! - [`startup`]: [`Application`] (build, bind, run until shutdown) and the background loops.
//! - [`routes`]: the HTTP API ([`router`]).
//! - [`catalog`]: products and stock levels (reads, upserts, restocks).
//! - [`commands`]: the saga commands ([`handle_command`]) and their Kafka consumer.

pub mod catalog;
pub mod commands;
pub mod routes;
pub mod startup;

use platform::config::{CommonConfig, ConfigError, DATABASE_URL, KAFKA_BROKERS, required};
use sqlx::migrate::Migrator;

pub use commands::{Processed, handle_command};
pub use routes::{AppState, router};
pub use startup::Application;

/// The service's name: the audience of its service tokens and its Kafka consumer group.
pub const SERVICE: &str = "inventory";

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
