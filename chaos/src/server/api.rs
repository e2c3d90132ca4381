//! The HTTP API: Toxiproxy 2.x's routes, status codes and JSON shapes.
//!
//! | route | answer |
//! |---|---|
//! | `GET /proxies` | 200, object name → proxy |
//! | `POST /proxies` | 201 proxy; 400 bad body or missing name/upstream; 409 name taken; 500 cannot listen |
//! | `POST /populate` | 201 `{"proxies":[...]}`; on error the error's status with `error`, `status` and the proxies applied before it |
//! | `GET /proxies/{proxy}` | 200 proxy; 404 |
//! | `POST`/`PATCH /proxies/{proxy}` | 200 proxy (listen, upstream, enabled); 404; 400 |
//! | `DELETE /proxies/{proxy}` | 204; 404 |
//! | `POST /reset` | 204: every proxy enabled, every toxic removed |
//! | `GET /proxies/{proxy}/toxics` | 200 array |
//! | `POST /proxies/{proxy}/toxics` | 200 toxic; 400 bad type, stream or attributes; 404; 409 name taken |
//! | `GET /proxies/{proxy}/toxics/{toxic}` | 200 toxic; 404 |
//! | `POST`/`PATCH /proxies/{proxy}/toxics/{toxic}` | 200 toxic (toxicity and attributes); 400; 404 |
//! | `DELETE /proxies/{proxy}/toxics/{toxic}` | 204; 404 |
//! | `GET /version` | 200 `{"version":"..."}` |
//! | `GET /metrics` | 200 Prometheus text |
//!
//! Every error is `{"error":"<message>","status":<code>}` with Toxiproxy's messages (`proxy not
//! found`, `toxic already exists`, `bad request body: ...`), also for unknown routes (404) and
//! methods (405). Bodies are read as JSON whatever their content type, as Toxiproxy does.
//! Requests whose `User-Agent` starts with `Mozilla/` get 403, as in Toxiproxy: a web page must
//! not be able to drive the API of a proxy on the developer's machine.

use std::sync::Arc;

use axum::extract::{FromRequest, FromRequestParts, Path, Request, State};
use axum::http::request::Parts;
use axum::http::{StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use bytes::Bytes;
use serde::Deserialize;
use serde::de::DeserializeOwned;

use super::registry::{DEFAULT_LISTEN, Registry, ToxicPatch};
use crate::model::{ApiErrorBody, NewProxy, Populated, ProxyUpdate, RawToxic, Toxic, ToxicError};

/// What `GET /version` reports: the Toxiproxy release whose API this server follows, with
/// chaos-proxy's own version as semver build metadata (so version parsers still see 2.12.0).
pub const VERSION: &str = concat!("2.12.0+chaos-proxy.", env!("CARGO_PKG_VERSION"));

/// An API error in Toxiproxy's shape.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ApiError {
    pub status: StatusCode,
    pub message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
        }
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }

    pub fn conflict(message: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, message)
    }

    pub fn proxy_not_found() -> Self {
        Self::new(StatusCode::NOT_FOUND, "proxy not found")
    }

    pub fn toxic_not_found() -> Self {
        Self::new(StatusCode::NOT_FOUND, "toxic not found")
    }

    /// A server-side failure whose message helps the caller (e.g. the listen port is taken),
    /// answered as 500 the way Toxiproxy does.
    pub fn internal_with_message(message: impl Into<String>) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, message)
    }

    fn body(&self) -> ApiErrorBody {
        ApiErrorBody {
            error: self.message.clone(),
            status: self.status.as_u16(),
        }
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({})", self.message, self.status.as_u16())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if self.status.is_server_error() {
            tracing::error!(status = self.status.as_u16(), error = %self.message, "API request failed");
        } else {
            tracing::debug!(status = self.status.as_u16(), error = %self.message, "API request rejected");
        }
        (self.status, Json(self.body())).into_response()
    }
}

/// A path parameter, with rejections in the API's error shape.
struct Params<T>(T);

impl<S: Send + Sync, T: DeserializeOwned + Send> FromRequestParts<S> for Params<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        Path::<T>::from_request_parts(parts, state)
            .await
            .map(|Path(value)| Params(value))
            .map_err(|rejection| ApiError::new(rejection.status(), rejection.body_text()))
    }
}

/// A JSON body read whatever the content type, with Toxiproxy's `bad request body` errors.
struct JsonBody<T>(T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let bytes = Bytes::from_request(req, state).await.map_err(|rejection| {
            ApiError::new(
                rejection.status(),
                format!("bad request body: {}", rejection.body_text()),
            )
        })?;
        parse(&bytes).map(JsonBody)
    }
}

/// A JSON object body, with Toxiproxy's answer to one it cannot decode. The object is checked
/// first: serde would also read a struct from an array of its fields, which Toxiproxy (Go)
/// rejects.
fn parse<T: DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    let value = parse_value(body)?;
    if !value.is_object() {
        return Err(bad_body("expected a JSON object"));
    }
    serde_json::from_value(value).map_err(bad_body)
}

/// A JSON array of objects (`POST /populate`).
fn parse_list<T: DeserializeOwned>(body: &[u8]) -> Result<Vec<T>, ApiError> {
    let value = parse_value(body)?;
    let objects = value
        .as_array()
        .is_some_and(|items| items.iter().all(serde_json::Value::is_object));
    if !objects {
        return Err(bad_body("expected a JSON array of objects"));
    }
    serde_json::from_value(value).map_err(bad_body)
}

fn parse_value(body: &[u8]) -> Result<serde_json::Value, ApiError> {
    serde_json::from_slice(body).map_err(bad_body)
}

fn bad_body(why: impl std::fmt::Display) -> ApiError {
    ApiError::bad_request(format!("bad request body: {why}"))
}

/// A proxy as clients send it; empty or missing fields are checked with Toxiproxy's messages.
#[derive(Debug, Deserialize)]
struct ProxyInput {
    #[serde(default)]
    name: String,
    #[serde(default)]
    listen: String,
    #[serde(default)]
    upstream: String,
    #[serde(default)]
    enabled: Option<bool>,
}

impl From<ProxyInput> for NewProxy {
    fn from(input: ProxyInput) -> Self {
        NewProxy {
            name: input.name,
            listen: if input.listen.is_empty() {
                DEFAULT_LISTEN.to_owned()
            } else {
                input.listen
            },
            upstream: input.upstream,
            enabled: input.enabled.unwrap_or(true),
        }
    }
}

type AppState = State<Arc<Registry>>;

/// The API's routes over a registry.
pub(crate) fn router(registry: Arc<Registry>) -> Router {
    Router::new()
        .route("/proxies", get(proxy_index).post(proxy_create))
        .route("/populate", post(populate))
        .route("/reset", post(reset))
        .route(
            "/proxies/{proxy}",
            get(proxy_show)
                .post(proxy_update)
                .patch(proxy_update)
                .delete(proxy_delete),
        )
        .route(
            "/proxies/{proxy}/toxics",
            get(toxic_index).post(toxic_create),
        )
        .route(
            "/proxies/{proxy}/toxics/{toxic}",
            get(toxic_show)
                .post(toxic_update)
                .patch(toxic_update)
                .delete(toxic_delete),
        )
        .route("/version", get(version))
        .route("/metrics", get(metrics))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(middleware::from_fn(stop_browsers))
        .with_state(registry)
}

async fn stop_browsers(request: Request, next: Next) -> Response {
    let from_browser = request
        .headers()
        .get(header::USER_AGENT)
        .and_then(|ua| ua.to_str().ok())
        .is_some_and(|ua| ua.starts_with("Mozilla/"));
    if from_browser {
        return ApiError::new(StatusCode::FORBIDDEN, "User agent not allowed").into_response();
    }
    next.run(request).await
}

async fn not_found() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "not found")
}

async fn method_not_allowed() -> ApiError {
    ApiError::new(StatusCode::METHOD_NOT_ALLOWED, "method not allowed")
}

async fn proxy_index(State(registry): AppState) -> impl IntoResponse {
    Json(registry.list().await)
}

async fn proxy_create(
    State(registry): AppState,
    JsonBody(input): JsonBody<ProxyInput>,
) -> Result<impl IntoResponse, ApiError> {
    let proxy = registry.create(input.into()).await?;
    Ok((StatusCode::CREATED, Json(proxy)))
}

async fn populate(State(registry): AppState, body: Bytes) -> Response {
    #[derive(serde::Serialize)]
    struct Failed {
        error: String,
        status: u16,
        proxies: Vec<crate::model::Proxy>,
    }
    let fail = |err: ApiError, proxies| {
        tracing::warn!(status = err.status.as_u16(), error = %err.message, "populate failed");
        let body = Failed {
            error: err.message,
            status: err.status.as_u16(),
            proxies,
        };
        (err.status, Json(body)).into_response()
    };
    let input: Vec<ProxyInput> = match parse_list(&body) {
        Ok(input) => input,
        Err(err) => return fail(err, Vec::new()),
    };
    match registry
        .populate(input.into_iter().map(NewProxy::from).collect())
        .await
    {
        Ok(proxies) => (StatusCode::CREATED, Json(Populated { proxies })).into_response(),
        Err((err, applied)) => fail(err, applied),
    }
}

async fn proxy_show(
    State(registry): AppState,
    Params(name): Params<String>,
) -> Result<impl IntoResponse, ApiError> {
    Ok(Json(registry.get(&name).await?))
}

async fn proxy_update(
    State(registry): AppState,
    Params(name): Params<String>,
    body: Bytes,
) -> Result<impl IntoResponse, ApiError> {
    registry.get(&name).await?;
    let update: ProxyUpdate = parse(&body)?;
    Ok(Json(registry.update(&name, update).await?))
}

async fn proxy_delete(
    State(registry): AppState,
    Params(name): Params<String>,
) -> Result<StatusCode, ApiError> {
    registry.delete(&name).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn reset(State(registry): AppState) -> Result<StatusCode, ApiError> {
    registry.reset().await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn toxic_index(
    State(registry): AppState,
    Params(proxy): Params<String>,
) -> Result<impl IntoResponse, ApiError> {
    Ok(Json(registry.toxics(&proxy).await?))
}

async fn toxic_create(
    State(registry): AppState,
    Params(proxy): Params<String>,
    body: Bytes,
) -> Result<impl IntoResponse, ApiError> {
    // Toxiproxy looks the proxy up before reading the body: a missing proxy is 404 whatever
    // the body says.
    registry.get(&proxy).await?;
    let raw: RawToxic = parse(&body)?;
    let toxic = Toxic::from_raw(raw).map_err(toxic_error)?;
    toxic.attributes.validate().map_err(toxic_error)?;
    Ok(Json(registry.add_toxic(&proxy, toxic).await?))
}

fn toxic_error(err: ToxicError) -> ApiError {
    match err {
        ToxicError::InvalidType(_) => ApiError::bad_request("invalid toxic type"),
        ToxicError::InvalidStream(err) => ApiError::bad_request(err.to_string()),
        ToxicError::BadAttributes(why) | ToxicError::Invalid(why) => {
            ApiError::bad_request(format!("bad request body: {why}"))
        }
    }
}

async fn toxic_show(
    State(registry): AppState,
    Params((proxy, toxic)): Params<(String, String)>,
) -> Result<impl IntoResponse, ApiError> {
    Ok(Json(registry.toxic(&proxy, &toxic).await?))
}

async fn toxic_update(
    State(registry): AppState,
    Params((proxy, toxic)): Params<(String, String)>,
    body: Bytes,
) -> Result<impl IntoResponse, ApiError> {
    registry.toxic(&proxy, &toxic).await?;
    let patch: ToxicPatch = parse(&body)?;
    Ok(Json(registry.update_toxic(&proxy, &toxic, patch).await?))
}

async fn toxic_delete(
    State(registry): AppState,
    Params((proxy, toxic)): Params<(String, String)>,
) -> Result<StatusCode, ApiError> {
    registry.remove_toxic(&proxy, &toxic).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn version() -> impl IntoResponse {
    Json(serde_json::json!({ "version": VERSION }))
}

async fn metrics(State(registry): AppState) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        registry.metrics().await,
    )
}
