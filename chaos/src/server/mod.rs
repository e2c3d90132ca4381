//! `chaos-proxy`: a Toxiproxy-compatible server, in-process or as a binary.
//!
//! It speaks Toxiproxy 2.x's HTTP API ([`api`](self) routes, status codes and JSON shapes, see
//! the table in the `api` module) so that any Toxiproxy client drives it, including this crate's
//! [`Client`](crate::Client), and it implements the toxics `latency`, `bandwidth`,
//! `slow_close`, `timeout`, `reset_peer`, `slicer` and `limit_data` on both streams. Toxics
//! act on connections that are already open, not only on new ones. How each toxic behaves is
//! described in the `link` module docs and on [`ToxicAttributes`](crate::ToxicAttributes).
//!
//! # In-process
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! let server = chaos::server::Server::bind("127.0.0.1:0").await?;
//! let client = chaos::Client::new(&server.base_url())?;
//! let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
//! let running = tokio::spawn(server.run_until(async move {
//!     let _ = stopped.await;
//! }));
//! // ... client.create_proxy(...), client.add_toxic(...) ...
//! let _ = stop.send(());
//! running.await??;
//! # Ok(()) }
//! ```
//!
//! [`Server::run_until`] returns once the API has stopped and every proxy's listener, connection
//! and task has ended (each bounded: 5 s for the API to drain, 5 s for proxy connections).
//!
//! # Binary
//!
//! ```text
//! chaos-proxy [--host 127.0.0.1] [--port 8474] [--config proxies.json]
//! ```
//!
//! See [`Opts`] for every flag and its environment variable, [`run`] for exit codes.
//!
//! # Layout
//! - this module: [`Server`].
//! - `api`: routes and handlers.
//! - `registry`: proxies, their listeners, connections and toxics.
//! - `link`: one proxied connection and the toxics acting on it.
//! - `metrics`: counters and `GET /metrics`.
//! - `cli`: [`Opts`] and [`run`] for the binary.

mod api;
mod cli;
mod link;
mod metrics;
mod registry;

use std::future::{Future, IntoFuture};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, ToSocketAddrs};
use tokio_util::sync::CancellationToken;

pub use api::VERSION;
pub use cli::{EXIT_CONFIG, EXIT_RUNTIME, Opts, ReadyInfo, RunError, run};

use crate::model::{NewProxy, Proxy};
use registry::Registry;

/// How long in-flight API requests may take to finish once shutdown starts.
const API_DRAIN: Duration = Duration::from_secs(5);

/// Why the server could not start or run.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("cannot listen on {addr}")]
    Bind {
        addr: String,
        #[source]
        source: std::io::Error,
    },
    #[error("the API server failed")]
    Serve(#[source] std::io::Error),
    #[error("cannot create the configured proxies: {message} ({status})")]
    Populate { status: u16, message: String },
}

/// A bound chaos-proxy API server; proxies listen on their own addresses.
pub struct Server {
    listener: TcpListener,
    addr: SocketAddr,
    registry: Arc<Registry>,
}

impl Server {
    /// Binds the API listener (port 0 picks a free port, see [`Server::local_addr`]).
    pub async fn bind(addr: impl ToSocketAddrs + std::fmt::Display) -> Result<Self, ServerError> {
        let shown = addr.to_string();
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|source| ServerError::Bind {
                addr: shown.clone(),
                source,
            })?;
        let addr = listener.local_addr().map_err(|source| ServerError::Bind {
            addr: shown,
            source,
        })?;
        Ok(Self {
            listener,
            addr,
            registry: Arc::new(Registry::new()),
        })
    }

    /// The API's address.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://<local_addr>`, for [`Client::new`](crate::Client::new).
    pub fn base_url(&self) -> String {
        format!("http://{}", self.local_addr())
    }

    /// Creates proxies before serving, as `POST /populate` would (the `--config` file).
    pub async fn populate(&self, proxies: Vec<NewProxy>) -> Result<Vec<Proxy>, ServerError> {
        self.registry
            .populate(proxies)
            .await
            .map_err(|(err, _)| ServerError::Populate {
                status: err.status.as_u16(),
                message: err.message,
            })
    }

    /// Serves the API until `shutdown` completes, then stops every proxy and waits for every
    /// task to end.
    pub async fn run_until<F>(self, shutdown: F) -> Result<(), ServerError>
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let Server {
            listener, registry, ..
        } = self;
        let stop_api = CancellationToken::new();
        let serve = axum::serve(listener, api::router(Arc::clone(&registry)))
            .with_graceful_shutdown(stop_api.clone().cancelled_owned())
            .into_future();
        tokio::pin!(serve, shutdown);
        let served = tokio::select! {
            served = &mut serve => served,
            () = &mut shutdown => {
                stop_api.cancel();
                match tokio::time::timeout(API_DRAIN, &mut serve).await {
                    Ok(served) => served,
                    Err(_) => {
                        tracing::warn!("API requests still running after the drain period; dropping them");
                        Ok(())
                    }
                }
            }
        };
        registry.shutdown().await;
        served.map_err(ServerError::Serve)
    }
}
