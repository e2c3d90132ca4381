//! The API gateway: the one door into the system.
//!
//! Clients call `/api/...` with a user token (an EdDSA JWT from the identity provider). The
//! gateway verifies it and the caller's role, then forwards the request, `/api` stripped, to an
//! instance of the service that owns the path, with a short-lived service token in place of the
//! user's. Services trust only service tokens, so nothing reaches them around the gateway. The
//! gateway keeps no state beyond its view of the instances and its resilience layers: no
//! database, no Kafka.
//!
//! # Layout
//! - [`config`]: environment variables, validated before binding (exit 64 when bad).
//! - [`routes`]: the route table, which service owns a path, its methods, and who may call it.
//! - [`openapi`]: the OpenAPI 3.1 document of the routes, served at `/api/openapi.json`.
//! - [`proxy`]: authentication at the edge, failover across instances, forwarding.
//! - [`resilience`]: rate limit, bulkhead, circuit breaker, retry budget; each switchable.
//! - [`breaker`]: the circuit breaker, with a sliding window whose cost does not grow with the rate.
//! - [`throttle`]: new orders refused at the edge for a moment after the order service refused one.
//! - [`upstream`]: the instances of each service, passive ejection, active health checks,
//!   the instance list that can change at run time.
//! - [`error`]: the gateway's error responses (400, 401, 403, 404, 405, 413, 429, 502, 503, 504).
//! - [`metrics`]: the `gateway_upstream_*` metrics (the platform adds `/metrics` and the HTTP ones).
//! - [`router`] and [`Application`]: wiring and serving.

pub mod breaker;
pub mod config;
pub mod error;
pub mod metrics;
pub mod openapi;
pub mod proxy;
pub mod resilience;
pub mod routes;
pub mod throttle;
pub mod tokens;
pub mod upstream;

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context;
use axum::Router;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{Method, Uri};
use axum::routing::{get, on};
use platform::http::{Server, health_routes, with_common_layers, write_ready_file};
use tokio_util::sync::CancellationToken;

pub use config::Config;
pub use error::GatewayError;
pub use proxy::AppState;

use crate::routes::ROUTES;

/// Every `/api` route of [`ROUTES`] (a method a route does not serve is a JSON 405 with
/// `Allow`), the OpenAPI document, the health routes, and a JSON 404 for everything else.
pub fn router(state: AppState) -> Router {
    let api = ROUTES
        .iter()
        .copied()
        .fold(Router::new(), |router, route| {
            router.route(
                route.path,
                on(
                    route.method_filter(),
                    move |State(state): State<AppState>, req: Request| {
                        proxy::forward(state, route, req)
                    },
                )
                .fallback(method_not_allowed),
            )
        })
        .route(
            openapi::PATH,
            get(openapi::serve).fallback(method_not_allowed),
        )
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(state.max_body_bytes()))
        .with_state(state.clone());
    let health = health_routes(move || {
        let state = state.clone();
        async move { state.ready() }
    });
    with_common_layers(api.merge(health))
}

async fn not_found(uri: Uri) -> GatewayError {
    GatewayError::NotFound(uri.path().to_string())
}

/// axum adds the `Allow` header to this answer.
async fn method_not_allowed(method: Method, uri: Uri) -> GatewayError {
    GatewayError::MethodNotAllowed {
        method,
        path: uri.path().to_string(),
    }
}

/// The gateway, bound and ready to serve.
pub struct Application {
    server: Server,
    addr: SocketAddr,
    router: Router,
    drain_delay: Duration,
    drain_timeout: Duration,
}

impl Application {
    /// Builds the shared state, binds, and announces the address in `READY_FILE` when set.
    pub async fn build(config: Config) -> anyhow::Result<Self> {
        metrics::describe();
        let state = AppState::new(&config).context("building the gateway state")?;
        state.spawn_background();
        let server = Server::bind(config.common.bind_addr)
            .await
            .with_context(|| format!("binding {}", config.common.bind_addr))?;
        let addr = server.local_addr().context("reading the bound address")?;
        if let Some(path) = &config.common.ready_file {
            write_ready_file(path, addr)
                .with_context(|| format!("writing the ready file {}", path.display()))?;
        }
        tracing::info!(%addr, "listening");
        Ok(Self {
            server,
            addr,
            router: router(state),
            drain_delay: config.common.drain_delay,
            drain_timeout: config.common.shutdown_timeout,
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// Serves until `shutdown` is cancelled, then drains in-flight requests within the bound.
    pub async fn run_until_stopped(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        self.server
            .serve(self.router, shutdown, self.drain_delay, self.drain_timeout)
            .await
            .context("serving HTTP")?;
        tracing::info!("stopped");
        Ok(())
    }
}
