//! The HTTP pieces every service shares.
//!
//! - [`ApiError`]: the one error type handlers return. Client mistakes become 4xx with a message
//!   saying what was wrong; internal failures become an opaque 500 and are logged once, here, with
//!   their cause chain.
//! - [`ApiJson`]: a JSON extractor whose rejections use the same error body.
//! - [`health_routes`]: `/health/live` and `/health/ready`.
//! - [`serve`]: bind, announce the address (ready file), serve until shutdown, drain with a bound.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use axum::extract::rejection::JsonRejection;
use axum::extract::{FromRequest, Request};
use axum::http::{HeaderName, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use contracts::http::{ErrorBody, ErrorDetail};
use serde::de::DeserializeOwned;
use tokio_util::sync::CancellationToken;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::trace::TraceLayer;

pub const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
pub const IDEMPOTENCY_KEY: HeaderName = HeaderName::from_static("idempotency-key");

/// An error a handler returns.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    Validation(String),
    #[error("{0}")]
    Unauthorized(String),
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    Unavailable(String),
    #[error("internal error")]
    Internal(#[source] anyhow::Error),
}

impl ApiError {
    pub fn internal(err: impl Into<anyhow::Error>) -> Self {
        Self::Internal(err.into())
    }

    fn status_and_code(&self) -> (StatusCode, &'static str) {
        match self {
            Self::BadRequest(_) => (StatusCode::BAD_REQUEST, "bad_request"),
            Self::Validation(_) => (StatusCode::UNPROCESSABLE_ENTITY, "validation"),
            Self::Unauthorized(_) => (StatusCode::UNAUTHORIZED, "unauthorized"),
            Self::Forbidden(_) => (StatusCode::FORBIDDEN, "forbidden"),
            Self::NotFound(_) => (StatusCode::NOT_FOUND, "not_found"),
            Self::Conflict(_) => (StatusCode::CONFLICT, "conflict"),
            Self::Unavailable(_) => (StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
            Self::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
        }
    }
}

impl From<crate::db::DbError> for ApiError {
    fn from(e: crate::db::DbError) -> Self {
        Self::Internal(e.into())
    }
}

impl From<contracts::domain::InvalidValue> for ApiError {
    fn from(e: contracts::domain::InvalidValue) -> Self {
        Self::Validation(e.to_string())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code) = self.status_and_code();
        if let Self::Internal(err) = &self {
            tracing::error!(error = ?err, "request failed");
        }
        error_response(status, code, self.to_string())
    }
}

/// Builds an error response with the shared body.
pub fn error_response(status: StatusCode, code: &str, message: impl Into<String>) -> Response {
    let body = ErrorBody {
        error: ErrorDetail {
            code: code.to_string(),
            message: message.into(),
        },
    };
    (status, Json(body)).into_response()
}

/// `Json<T>` whose rejections are [`ApiError`]s with a message saying what was wrong and where.
#[derive(Debug, Clone, Copy, Default)]
pub struct ApiJson<T>(pub T);

impl<S, T> FromRequest<S> for ApiJson<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        match Json::<T>::from_request(req, state).await {
            Ok(Json(v)) => Ok(Self(v)),
            Err(rejection) => Err(match rejection {
                JsonRejection::JsonDataError(e) => ApiError::Validation(e.body_text()),
                JsonRejection::JsonSyntaxError(e) => ApiError::BadRequest(e.body_text()),
                JsonRejection::MissingJsonContentType(e) => ApiError::BadRequest(e.body_text()),
                other => ApiError::BadRequest(other.body_text()),
            }),
        }
    }
}

impl<T: serde::Serialize> IntoResponse for ApiJson<T> {
    fn into_response(self) -> Response {
        Json(self.0).into_response()
    }
}

/// `/health/live` (the process answers) and `/health/ready` (the given check passes).
pub fn health_routes<F, Fut>(ready: F) -> Router
where
    F: Fn() -> Fut + Clone + Send + Sync + 'static,
    Fut: std::future::Future<Output = Result<(), String>> + Send + 'static,
{
    Router::new()
        .route("/health/live", get(|| async { "live" }))
        .route(
            "/health/ready",
            get(move || {
                let ready = ready.clone();
                async move {
                    match ready().await {
                        Ok(()) => (StatusCode::OK, "ready").into_response(),
                        Err(why) => {
                            error_response(StatusCode::SERVICE_UNAVAILABLE, "not_ready", why)
                        }
                    }
                }
            }),
        )
}

/// Adds what every HTTP server of the system has: `GET /metrics`, request ids (kept from the
/// caller or made up), a server span per request that continues the caller's W3C trace context
/// (named `METHOD /route/{template}` with the semantic conventions' `http.*` attributes), and
/// the request duration metric.
pub fn with_common_layers(router: Router) -> Router {
    router
        .route("/metrics", get(crate::metrics::handler))
        .layer(axum::middleware::from_fn(crate::metrics::record_http))
        .layer(PropagateRequestIdLayer::new(REQUEST_ID))
        .layer(
            TraceLayer::new_for_http()
                .make_span_with(server_span)
                .on_response(record_status),
        )
        .layer(SetRequestIdLayer::new(REQUEST_ID, MakeRequestUuid))
}

fn server_span(req: &Request) -> tracing::Span {
    let request_id = req
        .headers()
        .get(REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("-");
    let route = req
        .extensions()
        .get::<axum::extract::MatchedPath>()
        .map(|p| p.as_str().to_owned());
    let method = req.method().as_str();
    let name = match &route {
        Some(r) => format!("{method} {r}"),
        None => method.to_string(),
    };
    let span = tracing::info_span!(
        "http",
        otel.name = %name,
        otel.kind = "server",
        otel.status_code = tracing::field::Empty,
        http.request.method = %method,
        http.route = route.as_deref().unwrap_or(""),
        url.path = %req.uri().path(),
        http.response.status_code = tracing::field::Empty,
        request_id,
    );
    if crate::telemetry::exporting() {
        let parent = crate::telemetry::extract_http(req.headers());
        let _ = tracing_opentelemetry::OpenTelemetrySpanExt::set_parent(&span, parent);
    }
    span
}

fn record_status<B>(response: &axum::http::Response<B>, _latency: Duration, span: &tracing::Span) {
    let status = response.status();
    span.record("http.response.status_code", status.as_u16());
    if status.is_server_error() {
        span.record("otel.status_code", "ERROR");
    }
}

/// Writes `{"addr": ..., "pid": ...}` atomically so a supervisor never reads half a file.
pub fn write_ready_file(path: &Path, addr: SocketAddr) -> std::io::Result<()> {
    let body = serde_json::json!({ "addr": addr.to_string(), "pid": std::process::id() });
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, body.to_string())?;
    std::fs::rename(&tmp, path)
}

/// A bound listener, so callers (and tests) learn the port before serving.
pub struct Server {
    listener: tokio::net::TcpListener,
}

impl Server {
    pub async fn bind(addr: SocketAddr) -> std::io::Result<Self> {
        let listener = tokio::net::TcpListener::bind(addr).await?;
        Ok(Self { listener })
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Serves until `shutdown` is cancelled, then drains in-flight requests for at most
    /// `drain_timeout`, warning when the bound is hit.
    pub async fn serve(
        self,
        router: Router,
        shutdown: CancellationToken,
        drain_timeout: Duration,
    ) -> std::io::Result<()> {
        let signal = shutdown.clone();
        let server = axum::serve(self.listener, router)
            .with_graceful_shutdown(async move { signal.cancelled().await });
        let mut server = std::pin::pin!(server.into_future());
        tokio::select! {
            res = &mut server => return res,
            _ = shutdown.cancelled() => {}
        }
        match tokio::time::timeout(drain_timeout, server).await {
            Ok(res) => res,
            Err(_) => {
                tracing::warn!(
                    ?drain_timeout,
                    "graceful drain hit its bound; dropping connections"
                );
                Ok(())
            }
        }
    }
}
