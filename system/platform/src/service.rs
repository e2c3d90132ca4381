//! The start-up and run loop every Kafka-speaking service shares.
//!
//! [`prepare`] does what `Application::build` of each service needs before serving: connect and
//! migrate the database, create the topics, bind the listener, announce it in `READY_FILE`.
//! [`Background`] runs the service's loops (outbox relay, consumers, timers) beside the HTTP
//! server, and [`Background::serve_then_drain`] serves until shutdown, then drains HTTP and the
//! loops within `SHUTDOWN_TIMEOUT_MS` each and closes the pool. A loop that fails cancels the
//! shutdown token: a service that answers HTTP but ignores its messages would stall every saga
//! silently, so it stops with the loop's error instead.

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context;
use axum::Router;
use rdkafka::producer::FutureProducer;
use sqlx::migrate::Migrator;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::config::CommonConfig;
use crate::db::Db;
use crate::http::{Server, write_ready_file};
use crate::messaging::consumer::{self, ConsumerSettings, Handler};
use crate::messaging::kafka;
use crate::messaging::outbox::Relay;

/// What every binary's `main` does around its application: telemetry installed before the async
/// runtime starts (exit 64 on a bad `OTEL_*` variable), the application run on a multi-threaded
/// runtime with the process's shutdown signal, and, once the runtime has stopped, the spans
/// still buffered flushed (the OTLP exporter's client blocks, so it must not run on the runtime).
pub fn run_main<F, Fut>(service: &str, common: &CommonConfig, app: F) -> anyhow::Result<()>
where
    F: FnOnce(CancellationToken) -> Fut,
    Fut: Future<Output = anyhow::Result<()>>,
{
    let telemetry = match crate::telemetry::init(service, &common.instance_id) {
        Ok(t) => t,
        Err(e) => crate::config::exit_on_config_error(&e),
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let watch_stdin = common.exit_on_stdin_eof;
    let result = runtime.block_on(async move {
        let shutdown = crate::shutdown::install(watch_stdin);
        app(shutdown).await
    });
    drop(runtime);
    drop(telemetry);
    result
}

/// How often the gauges read from the database (outbox backlog, pool) are refreshed.
pub const GAUGE_INTERVAL: std::time::Duration = std::time::Duration::from_secs(1);

/// How often old outbox, inbox (and service-specific) rows are pruned.
pub const PRUNE_INTERVAL: Duration = Duration::from_secs(60);
/// The most rows one prune statement deletes, so a pass never holds SQLite's write lock long.
pub const PRUNE_BATCH: i64 = 1000;

/// A migrated database and a bound listener.
pub struct Prepared {
    pub db: Db,
    pub server: Server,
    pub addr: SocketAddr,
}

/// Connects and migrates the database, creates the Kafka topics, binds the listener and writes
/// `READY_FILE` when configured.
pub async fn prepare(
    service: &str,
    common: &CommonConfig,
    database_url: &str,
    kafka_brokers: &str,
    sqlite: &Migrator,
    postgres: &Migrator,
) -> anyhow::Result<Prepared> {
    let db = Db::connect(database_url)
        .await
        .context("connecting to the database")?;
    db.migrate(sqlite, postgres)
        .await
        .context("migrating the database")?;
    kafka::ensure_topics(kafka_brokers, &contracts::messages::topics::all())
        .await
        .with_context(|| format!("creating Kafka topics on {kafka_brokers}"))?;
    let server = Server::bind(common.bind_addr)
        .await
        .with_context(|| format!("binding {}", common.bind_addr))?;
    let addr = server.local_addr().context("reading the bound address")?;
    if let Some(path) = &common.ready_file {
        write_ready_file(path, addr)
            .with_context(|| format!("writing the ready file {}", path.display()))?;
    }
    tracing::info!(%addr, instance = %common.instance_id, "{service} service listening");
    Ok(Prepared { db, server, addr })
}

/// The loops a service runs beside its HTTP server.
pub struct Background {
    tasks: JoinSet<anyhow::Result<()>>,
    shutdown: CancellationToken,
}

impl Background {
    pub fn new(shutdown: CancellationToken) -> Self {
        Self {
            tasks: JoinSet::new(),
            shutdown,
        }
    }

    /// Runs the outbox relay until shutdown, and beside it the loop that refreshes the outbox
    /// and pool gauges once a second and the one that prunes the outbox and inbox.
    pub fn relay(&mut self, relay: Relay) {
        let stop = self.shutdown.clone();
        let db = relay.db().clone();
        self.prune_every(PRUNE_INTERVAL, "outbox and inbox", {
            let db = db.clone();
            move || {
                let db = db.clone();
                async move {
                    let outbox = crate::messaging::outbox::prune(
                        &db,
                        crate::messaging::outbox::OUTBOX_RETENTION,
                        PRUNE_BATCH,
                    )
                    .await?;
                    let inbox = crate::messaging::inbox::prune(
                        &db,
                        crate::messaging::inbox::INBOX_RETENTION,
                        PRUNE_BATCH,
                    )
                    .await?;
                    Ok(outbox + inbox)
                }
            }
        });
        self.tasks.spawn(async move {
            relay.run(stop).await;
            Ok(())
        });
        let stop = self.shutdown.clone();
        self.tasks.spawn(async move {
            let mut tick = tokio::time::interval(GAUGE_INTERVAL);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = stop.cancelled() => break,
                    _ = tick.tick() => {}
                }
                db.record_pool();
                if let Err(e) = crate::messaging::outbox::record_backlog(&db).await {
                    tracing::debug!(error = %e, "reading the outbox backlog failed");
                }
            }
            Ok(())
        });
    }

    /// Runs a consumer until shutdown; its failure stops the service.
    pub fn consumer<H: Handler>(
        &mut self,
        settings: ConsumerSettings,
        handler: H,
        dead_letters: FutureProducer,
    ) {
        let stop = self.shutdown.clone();
        self.tasks.spawn(async move {
            let group = settings.group_id.clone();
            let result = consumer::run(settings, handler, dead_letters, stop.clone()).await;
            if let Err(e) = &result {
                tracing::error!(error = %e, group, "consumer failed; shutting down");
                stop.cancel();
            }
            result.with_context(|| format!("consumer group {group}"))
        });
    }

    /// Runs `prune` every `every` until shutdown, again at once while it deletes a full batch;
    /// failures are logged and tried again at the next tick.
    pub fn prune_every<F, Fut>(&mut self, every: Duration, what: &'static str, prune: F)
    where
        F: Fn() -> Fut + Send + 'static,
        Fut: Future<Output = Result<u64, crate::db::DbError>> + Send,
    {
        let stop = self.shutdown.clone();
        self.tasks.spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = stop.cancelled() => break,
                    _ = tick.tick() => {}
                }
                loop {
                    match prune().await {
                        Ok(n) if n >= u64::try_from(PRUNE_BATCH).unwrap_or(u64::MAX) => {
                            if stop.is_cancelled() {
                                break;
                            }
                        }
                        Ok(n) => {
                            if n > 0 {
                                tracing::debug!(rows = n, what, "pruned");
                            }
                            break;
                        }
                        Err(e) => {
                            tracing::warn!(error = %e, what, "pruning failed");
                            break;
                        }
                    }
                }
            }
            Ok(())
        });
    }

    /// Runs any other loop; it must return when the shutdown token is cancelled.
    pub fn spawn<F>(&mut self, task: F)
    where
        F: Future<Output = anyhow::Result<()>> + Send + 'static,
    {
        self.tasks.spawn(task);
    }

    /// Serves `router` until shutdown, then drains HTTP and the loops (each bounded by
    /// `SHUTDOWN_TIMEOUT_MS`, warning when the bound is hit) and closes the pool.
    pub async fn serve_then_drain(
        mut self,
        service: &str,
        common: &CommonConfig,
        server: Server,
        router: Router,
        db: &Db,
    ) -> anyhow::Result<()> {
        let served = server
            .serve(
                crate::http::with_limits(router, common.limits),
                self.shutdown.clone(),
                common.drain_delay,
                common.shutdown_timeout,
            )
            .await;
        // The server may also stop on its own (an accept error); the loops must follow it.
        self.shutdown.cancel();
        let mut first_error = None;
        let drained = tokio::time::timeout(common.shutdown_timeout, async {
            while let Some(joined) = self.tasks.join_next().await {
                let result = joined.context("a background task panicked").and_then(|r| r);
                if let Err(e) = result {
                    first_error.get_or_insert(e);
                }
            }
        })
        .await;
        if drained.is_err() {
            tracing::warn!(timeout = ?common.shutdown_timeout, "background loops did not drain in time; aborting them");
            self.tasks.abort_all();
        }
        db.close().await;
        tracing::info!("{service} service stopped");
        served.context("serving HTTP")?;
        first_error.map_or(Ok(()), Err)
    }
}
