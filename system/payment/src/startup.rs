//! Building and running the service: database, topics, listener, then the outbox relay, the
//! command consumer and the HTTP server until shutdown (see `platform::service`).

use std::net::SocketAddr;

use anyhow::Context;
use contracts::messages::topics;
use platform::auth::ServiceAuth;
use platform::db::Db;
use platform::http::Server;
use platform::messaging::consumer::ConsumerSettings;
use platform::messaging::kafka;
use platform::messaging::outbox::Relay;
use platform::service::{Background, prepare};
use tokio_util::sync::CancellationToken;

use crate::commands::CommandConsumer;
use crate::routes::{AppState, router};
use crate::{Config, POSTGRES, SERVICE, SQLITE};

/// A migrated, bound, not yet serving payment service.
pub struct Application {
    config: Config,
    db: Db,
    server: Server,
    addr: SocketAddr,
}

impl Application {
    /// Connects and migrates the database, creates the Kafka topics, binds the listener and
    /// writes `READY_FILE` when configured.
    pub async fn build(config: Config) -> anyhow::Result<Self> {
        let prepared = prepare(
            SERVICE,
            &config.common,
            &config.database_url,
            &config.kafka_brokers,
            &SQLITE,
            &POSTGRES,
        )
        .await?;
        Ok(Self {
            config,
            db: prepared.db,
            server: prepared.server,
            addr: prepared.addr,
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn db(&self) -> &Db {
        &self.db
    }

    /// Serves until `shutdown`, then drains HTTP, the relay and the consumer (each bounded by
    /// `SHUTDOWN_TIMEOUT_MS`) and closes the pool. A consumer that fails stops the service.
    pub async fn run_until_stopped(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        let Self {
            config, db, server, ..
        } = self;
        let common = &config.common;
        let producer = kafka::producer(&config.kafka_brokers, &common.instance_id)
            .context("creating the Kafka producer")?;
        let relay = Relay::new(db.clone(), producer.clone(), common.instance_id.clone());
        let waker = relay.waker();
        let mut background = Background::new(shutdown);
        background.relay(relay);
        let settings = ConsumerSettings::new(
            &config.kafka_brokers,
            SERVICE,
            &common.instance_id,
            &[topics::PAYMENT_COMMANDS],
        );
        let handler = CommandConsumer::new(db.clone(), waker);
        background.consumer(settings, handler, producer);
        let state = AppState::new(db.clone(), ServiceAuth::new(common.secret_bytes(), SERVICE));
        background
            .serve_then_drain(SERVICE, common, server, router(state), &db)
            .await
    }
}
