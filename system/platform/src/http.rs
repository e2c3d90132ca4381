//! The HTTP pieces every service shares.
//!
//! - [`ApiError`]: the one error type handlers return. Client mistakes become 4xx with a message
//!   saying what was wrong; internal failures become an opaque 500 and are logged once, here, with
//!   their cause chain.
//! - [`ApiJson`] and [`ApiPath`]: extractors whose rejections use the same error body.
//! - [`health_routes`]: `/health/live` and `/health/ready`.
//! - [`serve`]: bind, announce the address (ready file), serve until shutdown, drain with a bound.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use axum::extract::rejection::JsonRejection;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
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

/// `Path<T>` whose rejections are [`ApiError::BadRequest`] with the shared body: axum's own
/// answer to, say, a `%FF` that does not decode to UTF-8 is a `text/plain` 400 no client can
/// parse as an error.
#[derive(Debug, Clone, Copy, Default)]
pub struct ApiPath<T>(pub T);

impl<S, T> FromRequestParts<S> for ApiPath<T>
where
    T: DeserializeOwned + Send,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        axum::extract::Path::<T>::from_request_parts(parts, state)
            .await
            .map(|axum::extract::Path(value)| Self(value))
            .map_err(|rejection| ApiError::BadRequest(rejection.body_text()))
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
                .on_response(record_status)
                .on_failure(log_failure),
        )
        .layer(SetRequestIdLayer::new(REQUEST_ID, MakeRequestUuid))
}

/// Whether `path` is a scrape (`/metrics`) or a probe (`/health/*`): the platform watching, not
/// a request of the system.
fn is_scrape_or_probe(path: &str) -> bool {
    path == "/metrics" || path.starts_with("/health/")
}

fn server_span(req: &Request) -> tracing::Span {
    // No span for a scrape or a probe, so no trace of its own among the system's (every second
    // per process, they crowded the slowest hops of an idle system) and no log line.
    if is_scrape_or_probe(req.uri().path()) {
        return tracing::Span::none();
    }
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

/// Logs a failed request, except a 503: under overload an instance sheds hundreds of requests a
/// second on purpose, and tower-http's default (an error line for each) buried the real failures
/// in 30,000 lines a minute. Shed requests are counted in the request metrics by status instead,
/// and their spans keep the status.
fn log_failure(
    class: tower_http::classify::ServerErrorsFailureClass,
    latency: Duration,
    _span: &tracing::Span,
) {
    use tower_http::classify::ServerErrorsFailureClass;
    match class {
        ServerErrorsFailureClass::StatusCode(status)
            if status == StatusCode::SERVICE_UNAVAILABLE => {}
        ServerErrorsFailureClass::StatusCode(status) => {
            tracing::error!(
                status = status.as_u16(),
                latency = ?latency,
                "response failed"
            );
        }
        ServerErrorsFailureClass::Error(error) => {
            tracing::error!(%error, latency = ?latency, "response failed");
        }
    }
}

/// A service's own bounds on its API requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// A request not answered within this gets 503: the caller is better told than kept.
    pub request_timeout: Duration,
    /// Requests in progress beyond this get 503 + `Retry-After` at once, so an overloaded
    /// instance sheds instead of queueing without bound.
    pub max_concurrent: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            request_timeout: Duration::from_secs(10),
            max_concurrent: 1024,
        }
    }
}

/// Applies [`Limits`] to every route except `/health/*` and `/metrics`: a probe or a scrape must
/// answer while the API is saturated, or the orchestrator would restart a busy instance.
///
/// Written as a middleware over a Tokio semaphore rather than tower's `ConcurrencyLimit` +
/// `LoadShed` + tower-http's `Timeout`: those wrap the whole router, so exempting the probes
/// would need a second router and a `Steer` whose `poll_ready` takes a permit for every request.
pub fn with_limits(router: Router, limits: Limits) -> Router {
    let permits = std::sync::Arc::new(tokio::sync::Semaphore::new(limits.max_concurrent));
    router.layer(axum::middleware::from_fn(move |req: Request, next: axum::middleware::Next| {
        let permits = permits.clone();
        async move {
            if is_scrape_or_probe(req.uri().path()) {
                return next.run(req).await;
            }
            let Ok(_permit) = permits.try_acquire() else {
                metrics::counter!(crate::metrics::HTTP_SERVER_REFUSED, "reason" => "concurrency")
                    .increment(1);
                let mut response = error_response(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "overloaded",
                    format!(
                        "more than {} requests are in progress; retry later",
                        limits.max_concurrent
                    ),
                );
                response.headers_mut().insert(
                    axum::http::header::RETRY_AFTER,
                    axum::http::HeaderValue::from_static("1"),
                );
                return response;
            };
            let gauge = metrics::gauge!(crate::metrics::HTTP_SERVER_IN_FLIGHT);
            gauge.increment(1.0);
            let answered = tokio::time::timeout(limits.request_timeout, next.run(req)).await;
            gauge.decrement(1.0);
            match answered {
                Ok(response) => response,
                Err(_) => {
                    metrics::counter!(crate::metrics::HTTP_SERVER_REFUSED, "reason" => "timeout")
                        .increment(1);
                    error_response(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "timeout",
                        format!(
                            "the request was not done within {} ms",
                            limits.request_timeout.as_millis()
                        ),
                    )
                }
            }
        }
    }))
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

    /// Serves until `shutdown` is cancelled; then for `drain_delay` keeps serving while
    /// `/health/ready` answers 503 (so load balancers stop sending new requests), then stops
    /// accepting and drains in-flight requests for at most `drain_timeout`, warning when the
    /// bound is hit.
    pub async fn serve(
        self,
        router: Router,
        shutdown: CancellationToken,
        drain_delay: Duration,
        drain_timeout: Duration,
    ) -> std::io::Result<()> {
        let draining = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = draining.clone();
        let router = router.layer(axum::middleware::from_fn(
            move |req: Request, next: axum::middleware::Next| {
                let draining = flag.load(std::sync::atomic::Ordering::Relaxed);
                async move {
                    if draining && req.uri().path() == "/health/ready" {
                        return error_response(
                            StatusCode::SERVICE_UNAVAILABLE,
                            "draining",
                            "shutting down: finishing the requests in progress",
                        );
                    }
                    next.run(req).await
                }
            },
        ));
        let closing = CancellationToken::new();
        let signal = closing.clone();
        let server = axum::serve(self.listener, router)
            .with_graceful_shutdown(async move { signal.cancelled().await });
        let mut server = std::pin::pin!(server.into_future());
        tokio::select! {
            res = &mut server => return res,
            _ = shutdown.cancelled() => {}
        }
        if !drain_delay.is_zero() {
            draining.store(true, std::sync::atomic::Ordering::Relaxed);
            tracing::info!(
                ?drain_delay,
                "not ready any more; serving until the delay is over"
            );
            tokio::select! {
                res = &mut server => return res,
                _ = tokio::time::sleep(drain_delay) => {}
            }
        }
        closing.cancel();
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use tower::ServiceExt;

    fn slow_app(limits: Limits) -> Router {
        let api = Router::new().route(
            "/slow",
            get(|| async {
                tokio::time::sleep(Duration::from_millis(300)).await;
                "done"
            }),
        );
        let health = health_routes(|| async { Ok(()) });
        with_limits(api.merge(health), limits)
    }

    fn get_req(path: &str) -> Request {
        Request::builder()
            .uri(path)
            .body(axum::body::Body::empty())
            .unwrap()
    }

    #[test]
    fn a_scrape_or_a_probe_gets_no_span_a_request_does() {
        let _subscriber = tracing::subscriber::set_default(tracing_subscriber::registry());
        assert!(server_span(&get_req("/metrics")).is_disabled());
        assert!(server_span(&get_req("/health/ready")).is_disabled());
        assert!(server_span(&get_req("/health/live")).is_disabled());
        assert!(!server_span(&get_req("/api/products")).is_disabled());
        assert!(!server_span(&get_req("/healthy")).is_disabled());
    }

    #[tokio::test]
    async fn beyond_the_concurrency_limit_the_api_sheds_but_probes_still_answer() {
        let app = slow_app(Limits {
            request_timeout: Duration::from_secs(5),
            max_concurrent: 1,
        });
        let first = tokio::spawn(app.clone().oneshot(get_req("/slow")));
        tokio::time::sleep(Duration::from_millis(50)).await;
        let shed = app.clone().oneshot(get_req("/slow")).await.unwrap();
        assert_eq!(shed.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(shed.headers()["retry-after"], "1");
        let probe = app.clone().oneshot(get_req("/health/ready")).await.unwrap();
        assert_eq!(probe.status(), StatusCode::OK, "probes are exempt");
        assert_eq!(first.await.unwrap().unwrap().status(), StatusCode::OK);
        let again = app.oneshot(get_req("/slow")).await.unwrap();
        assert_eq!(again.status(), StatusCode::OK, "the permit came back");
    }

    #[tokio::test]
    async fn a_request_over_the_timeout_gets_503_saying_so() {
        let app = slow_app(Limits {
            request_timeout: Duration::from_millis(50),
            max_concurrent: 8,
        });
        let late = app.oneshot(get_req("/slow")).await.unwrap();
        assert_eq!(late.status(), StatusCode::SERVICE_UNAVAILABLE);
        let body = axum::body::to_bytes(late.into_body(), 4096).await.unwrap();
        assert!(String::from_utf8_lossy(&body).contains("within 50 ms"));
    }

    #[tokio::test]
    async fn on_shutdown_readiness_goes_down_first_and_requests_are_served_until_the_delay_ends() {
        let server = Server::bind(SocketAddr::from(([127, 0, 0, 1], 0)))
            .await
            .unwrap();
        let base = format!("http://{}", server.local_addr().unwrap());
        let app = Router::new()
            .route("/work", get(|| async { "done" }))
            .merge(health_routes(|| async { Ok(()) }));
        let shutdown = CancellationToken::new();
        let served = tokio::spawn(server.serve(
            app,
            shutdown.clone(),
            Duration::from_millis(600),
            Duration::from_secs(1),
        ));
        let client = reqwest::Client::builder().no_proxy().build().unwrap();
        let get = |path: &str| client.get(format!("{base}{path}")).send();
        assert_eq!(get("/health/ready").await.unwrap().status(), StatusCode::OK);
        shutdown.cancel();
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(
            get("/health/ready").await.unwrap().status(),
            StatusCode::SERVICE_UNAVAILABLE,
            "not ready while draining"
        );
        assert_eq!(
            get("/work").await.unwrap().status(),
            StatusCode::OK,
            "still serving"
        );
        served.await.unwrap().unwrap();
        assert!(
            get("/work").await.is_err(),
            "the listener is closed after the delay"
        );
    }
}
