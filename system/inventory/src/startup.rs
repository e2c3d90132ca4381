//! Building and running the service: database, topics, listener, then the outbox relay, the
//! command consumer and the HTTP server until shutdown.

use std::net::SocketAddr;

use anyhow::Context;
use contracts::messages::topics;
use platform::auth::ServiceAuth;
use platform::db::Db;
use platform::http::{Server, write_ready_file};
use platform::messaging::consumer::{self, ConsumerSettings};
use platform::messaging::kafka;
use platform::messaging::outbox::Relay;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::commands::CommandConsumer;
use crate::routes::{AppState, router};
use crate::{Config, POSTGRES, SERVICE, SQLITE};

/// A migrated, bound, not yet serving inventory service.
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
        let db = Db::connect(&config.database_url)
            .await
            .context("connecting to the database")?;
        db.migrate(&SQLITE, &POSTGRES)
            .await
            .context("migrating the database")?;
        kafka::ensure_topics(&config.kafka_brokers, &topics::all())
            .await
            .with_context(|| format!("creating Kafka topics on {}", config.kafka_brokers))?;
        let server = Server::bind(config.common.bind_addr)
            .await
            .with_context(|| format!("binding {}", config.common.bind_addr))?;
        let addr = server.local_addr().context("reading the bound address")?;
        if let Some(path) = &config.common.ready_file {
            write_ready_file(path, addr)
                .with_context(|| format!("writing the ready file {}", path.display()))?;
        }
        tracing::info!(%addr, instance = %config.common.instance_id, "inventory service listening");
        Ok(Self {
            config,
            db,
            server,
            addr,
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn db(&self) -> &Db {
        &self.db
    }

    /// Serves until `shutdown`, then drains: HTTP within `SHUTDOWN_TIMEOUT_MS`, then the relay
    /// and the consumer within the same bound again, then closes the pool. A consumer that cannot
    /// start (or dies) takes the whole service down, since a service that answers HTTP but
    /// ignores its commands would stall every saga silently.
    pub async fn run_until_stopped(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        let Self {
            config, db, server, ..
        } = self;
        let common = &config.common;
        let producer = kafka::producer(&config.kafka_brokers, &common.instance_id)
            .context("creating the Kafka producer")?;
        let relay = Relay::new(db.clone(), producer.clone(), common.instance_id.clone());
        let waker = relay.waker();

        let mut background = JoinSet::new();
        let relay_stop = shutdown.clone();
        background.spawn(async move {
            relay.run(relay_stop).await;
            Ok::<_, anyhow::Error>(())
        });
        let settings = ConsumerSettings::new(
            &config.kafka_brokers,
            SERVICE,
            &common.instance_id,
            &[topics::INVENTORY_COMMANDS],
        );
        let handler = CommandConsumer::new(db.clone(), waker);
        let consumer_stop = shutdown.clone();
        background.spawn(async move {
            let result = consumer::run(settings, handler, producer, consumer_stop.clone()).await;
            if let Err(e) = &result {
                tracing::error!(error = %e, "command consumer failed; shutting down");
                consumer_stop.cancel();
            }
            result.context("consuming inventory commands")
        });

        let state = AppState::new(db.clone(), ServiceAuth::new(common.secret_bytes(), SERVICE));
        let served = server
            .serve(router(state), shutdown.clone(), common.shutdown_timeout)
            .await;
        // The server may also stop on its own (an accept error); the loops must follow it.
        shutdown.cancel();

        let mut first_error = None;
        let drained = tokio::time::timeout(common.shutdown_timeout, async {
            while let Some(joined) = background.join_next().await {
                let result = joined.context("background task panicked").and_then(|r| r);
                if let Err(e) = result {
                    first_error.get_or_insert(e);
                }
            }
        })
        .await;
        if drained.is_err() {
            tracing::warn!(timeout = ?common.shutdown_timeout, "background loops did not drain in time; aborting them");
            background.abort_all();
        }
        db.close().await;
        tracing::info!("inventory service stopped");
        served.context("serving HTTP")?;
        first_error.map_or(Ok(()), Err)
    }
}
