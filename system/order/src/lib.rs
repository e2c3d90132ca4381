//! The order service: orders, the orchestrated saga behind them, and the CQRS read model.
//!
//! `POST /orders` writes a PENDING order, its saga and a `ReserveStock` command in one
//! transaction (transactional outbox). The saga, orchestrated here, then reacts to the inventory
//! and payment services' events: reserve stock → authorize payment → commit stock and capture
//! payment (CONFIRMED), or reject (REJECTED) or compensate (CANCELLED: release stock, void the
//! payment). Step timeouts resend the idempotent command and eventually compensate. Every change
//! of an order is published on `order.events`, from which the read model (`order_view`) is built;
//! the customer-facing reads are served from that read model only.
//!
//! # Layout
//! - [`saga`]: the saga as a pure state machine (`decide`), with its unit tests.
//! - [`place`]: placing an order, with `Idempotency-Key` handling.
//! - [`admission`]: refusing orders that could not be finished in time (503 + `Retry-After`).
//! - [`events`]: the consumer of `inventory.events` and `payment.events`, and the timeout loop.
//! - [`projector`]: the consumer of `order.events` that maintains the read model.
//! - [`store`]: the tables (`orders`, `sagas`, `idempotency_keys`, `order_view`).
//! - [`api`]: the HTTP routes.
//! - [`metrics`]: the saga's metrics (`saga_*`).
//!
//! Several instances may share one database: every write is one transaction with version checks,
//! the outbox relay claims rows, and the timeout pass tolerates another instance racing it.

pub mod admission;
pub mod api;
pub mod events;
pub mod metrics;
pub mod place;
pub mod projector;
pub mod saga;
pub mod store;

use std::net::SocketAddr;

use anyhow::Context;
use contracts::messages::topics;
use platform::auth::ServiceAuth;
use platform::config::{self, CommonConfig, ConfigError};
use platform::db::Db;
use platform::http::Server;
use platform::messaging::consumer::ConsumerSettings;
use platform::messaging::kafka;
use platform::messaging::outbox::Relay;
use platform::service::Background;
use rdkafka::producer::FutureProducer;
use sqlx::migrate::Migrator;
use tokio_util::sync::CancellationToken;

pub use admission::{Admission, AdmissionConfig};
pub use api::{AppState, router};
pub use saga::SagaPolicy;

/// The service name: audience of its service tokens and default instance name.
pub const SERVICE_NAME: &str = "order";

pub const SAGA_STEP_TIMEOUT_MS: &str = "SAGA_STEP_TIMEOUT_MS";
pub const SAGA_MAX_ATTEMPTS: &str = "SAGA_MAX_ATTEMPTS";

/// The service's own migrations (the platform's outbox and inbox come with `Db::migrate`).
pub static SQLITE: Migrator = sqlx::migrate!("migrations/sqlite");
pub static POSTGRES: Migrator = sqlx::migrate!("migrations/postgres");

#[derive(Debug, Clone)]
pub struct Config {
    pub common: CommonConfig,
    /// `DATABASE_URL`: `sqlite://PATH` or `postgres://...`.
    pub database_url: String,
    /// `KAFKA_BROKERS`: `host:port[,host:port]`.
    pub kafka_brokers: String,
    /// `SAGA_STEP_TIMEOUT_MS` (default 5000) and `SAGA_MAX_ATTEMPTS` (default 3).
    pub saga: SagaPolicy,
    /// `ADMISSION` (on or off) and its bounds, `ADMISSION_*` (see [`admission`]).
    pub admission: AdmissionConfig,
}

impl Config {
    pub fn from_env() -> Result<Self, ConfigError> {
        let common = CommonConfig::from_env(SERVICE_NAME)?;
        let database_url = config::required(
            config::DATABASE_URL,
            "the order database, sqlite://PATH or postgres://USER:PASS@HOST/DB",
        )?;
        let kafka_brokers =
            config::required(config::KAFKA_BROKERS, "Kafka bootstrap servers, host:port")?;
        let defaults = SagaPolicy::default();
        let step_timeout_ms: i64 =
            config::parse_or(SAGA_STEP_TIMEOUT_MS, defaults.step_timeout_ms)?;
        if step_timeout_ms <= 0 {
            return Err(ConfigError::Invalid {
                var: SAGA_STEP_TIMEOUT_MS,
                value: step_timeout_ms.to_string(),
                reason: "must be a positive number of milliseconds".into(),
            });
        }
        let max_attempts: i64 = config::parse_or(SAGA_MAX_ATTEMPTS, defaults.max_attempts)?;
        if max_attempts < 1 {
            return Err(ConfigError::Invalid {
                var: SAGA_MAX_ATTEMPTS,
                value: max_attempts.to_string(),
                reason: "must be at least 1".into(),
            });
        }
        let admission = AdmissionConfig::from_env(step_timeout_ms)?;
        Ok(Self {
            common,
            database_url,
            kafka_brokers,
            admission,
            saga: SagaPolicy {
                step_timeout_ms,
                max_attempts,
                // Resends of commands that must happen back off to at most a minute, or to the
                // step timeout when that is longer.
                max_backoff_ms: defaults.max_backoff_ms.max(step_timeout_ms),
            },
        })
    }
}

/// A built service: database migrated, topics created, listener bound.
pub struct Application {
    config: Config,
    db: Db,
    server: Server,
    addr: SocketAddr,
    producer: FutureProducer,
}

impl Application {
    pub async fn build(config: Config) -> anyhow::Result<Self> {
        let prepared = platform::service::prepare(
            SERVICE_NAME,
            &config.common,
            &config.database_url,
            &config.kafka_brokers,
            &SQLITE,
            &POSTGRES,
        )
        .await?;
        let producer = kafka::producer(&config.kafka_brokers, &config.common.instance_id)
            .context("creating the Kafka producer")?;
        Ok(Self {
            config,
            db: prepared.db,
            server: prepared.server,
            addr: prepared.addr,
            producer,
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Serves HTTP and runs the outbox relay, the saga consumer, the projector and the timeout
    /// loop until `shutdown`; then drains them (bounded by `SHUTDOWN_TIMEOUT_MS`) and closes the
    /// pool. A background loop that fails cancels `shutdown` so the process exits with its error.
    pub async fn run_until_stopped(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        let Self {
            config,
            db,
            server,
            producer,
            ..
        } = self;
        metrics::describe();
        admission::describe();
        let admission = Admission::new(config.admission);
        let instance = config.common.instance_id.clone();
        let relay = Relay::new(db.clone(), producer.clone(), instance.clone());
        let waker = relay.waker();
        let state = AppState::new(
            db.clone(),
            ServiceAuth::new(config.common.secret_bytes(), SERVICE_NAME),
            config.saga,
            waker.clone(),
        )
        .with_admission(admission.clone());

        let mut background = Background::new(shutdown.clone());
        background.relay(relay);
        let saga_settings = ConsumerSettings::new(
            &config.kafka_brokers,
            events::CONSUMER,
            &instance,
            &[topics::INVENTORY_EVENTS, topics::PAYMENT_EVENTS],
        );
        let saga_handler = events::SagaEventHandler {
            db: db.clone(),
            policy: config.saga,
            relay: waker.clone(),
        };
        background.consumer(saga_settings, saga_handler, producer.clone());
        let projector_settings = ConsumerSettings::new(
            &config.kafka_brokers,
            projector::CONSUMER,
            &format!("{instance}/projector"),
            &[topics::ORDER_EVENTS],
        );
        let projector_handler = projector::ProjectorHandler { db: db.clone() };
        background.consumer(projector_settings, projector_handler, producer);
        background.prune_every(platform::service::PRUNE_INTERVAL, "idempotency keys", {
            let db = db.clone();
            move || {
                let db = db.clone();
                async move {
                    store::prune_idempotency_keys(
                        &db,
                        store::IDEMPOTENCY_RETENTION,
                        platform::service::PRUNE_BATCH,
                    )
                    .await
                }
            }
        });
        background.spawn({
            let (db, stop) = (db.clone(), shutdown.clone());
            async move {
                admission.watch(db, stop).await;
                Ok(())
            }
        });
        background.spawn({
            let (db, stop) = (db.clone(), shutdown.clone());
            async move {
                record_pending_loop(db, stop).await;
                Ok(())
            }
        });
        background.spawn({
            let (db, policy) = (db.clone(), config.saga);
            async move {
                events::run_timeout_loop(db, policy, waker, shutdown).await;
                Ok(())
            }
        });
        background
            .serve_then_drain(SERVICE_NAME, &config.common, server, router(state), &db)
            .await
    }
}

/// Refreshes the PENDING gauges once a second until `shutdown`.
async fn record_pending_loop(db: Db, shutdown: CancellationToken) {
    let mut tick = tokio::time::interval(platform::service::GAUGE_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = tick.tick() => {}
        }
        match store::pending_orders(&db).await {
            Ok((pending, oldest)) => metrics::record_pending(pending, oldest, platform::now_ms()),
            Err(e) => tracing::debug!(error = %e, "reading the pending orders failed"),
        }
    }
}
