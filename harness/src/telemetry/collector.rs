//! The OTLP/HTTP trace receiver: the services export their spans here (the harness puts
//! [`Collector::endpoint`] into their `OTEL_EXPORTER_OTLP_ENDPOINT`), and the spans land in a
//! [`SpanStore`] for the run's report and for `harness trace`.
//!
//! | request | answer |
//! |---|---|
//! | `POST /v1/traces`, `application/x-protobuf` or `application/json`, optionally gzip | `200` with an `ExportTraceServiceResponse` in the request's encoding; `400` with a `google.rpc.Status` when the body does not decode; `413` over 16 MiB; `415` for another content type or encoding |
//! | `GET /api/traces/{trace_id}` | the trace's spans as JSON ([`SpanRecord`]s), `404` if unknown |
//! | `GET /api/traces?order_id=ID` | `{"trace_ids": [...]}` |
//! | `GET /api/hops?after=N&limit=M` | the traces that settled since cursor `N` (0 at first), at most `M` (default and bound [`MAX_HOPS_PER_ANSWER`]), each with its hops, and the next cursor ([`SettledHops`]) |
//! | `POST /api/hops/sagas`, a JSON list of [`SagaTrace`]s (at most [`MAX_HOPS_PER_ANSWER`]) | each saga's hops cut at its terminal time, as a run's report has them ([`TraceHops`]); sagas whose trace is not here are left out |
//!
//! The query routes serve `harness trace` and `harness console` against a running `harness
//! up`; [`fetch_trace`], [`fetch_trace_ids_for_order`], [`fetch_settled_hops`] and
//! [`fetch_sagas_hops`] are their client side.
//!
//! With [`CollectorOptions::forward_to`], every accepted body is also sent, as it came (same
//! bytes, content type and encoding), to another collector's `/v1/traces` by a background
//! task. The export is answered without waiting for that: the queue is bounded, and what does
//! not fit is dropped and counted, so a slow or absent external collector never slows the
//! services down.
//!
//! The server lives as long as its [`Collector`]: [`Collector::stop`] drains it, dropping the
//! value stops it at once.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use anyhow::{Context, bail};
use axum::Json;
use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, FromRequest, Path, Query, Request, State};
use axum::http::header::{CONTENT_ENCODING, CONTENT_TYPE};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTracePartialSuccess, ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use prost::Message;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tower_http::decompression::RequestDecompressionLayer;

use super::hops::{SagaTrace, SettledHops, TraceHops, sagas_hops, settled_hops};
use super::store::{Inserted, SpanRecord, SpanStore};

/// The largest export body accepted, compressed or not.
pub const MAX_BODY_BYTES: usize = 16 * 1024 * 1024;

/// Bodies waiting to be forwarded, at most: this many, and this many bytes.
const FORWARD_QUEUE_BODIES: usize = 1024;
const FORWARD_QUEUE_BYTES: usize = 64 * 1024 * 1024;
const FORWARD_TIMEOUT: Duration = Duration::from_secs(10);
/// Forwarding failures are logged at most this often, with a count of those in between.
const FAILURE_LOG_INTERVAL: Duration = Duration::from_secs(60);
/// How long [`Collector::stop`] waits for open exports and then for the forwarding queue.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);

/// `google.rpc.Code.INVALID_ARGUMENT`, for a body that does not decode.
const INVALID_ARGUMENT: i32 = 3;

const PROTOBUF: &str = "application/x-protobuf";
const JSON: &str = "application/json";

#[derive(Debug, Clone, Default)]
pub struct CollectorOptions {
    /// Base URL of another OTLP/HTTP collector to send every accepted export to
    /// (`{forward_to}/v1/traces`).
    pub forward_to: Option<String>,
    /// Spans kept; see [`SpanStore`].
    pub max_spans: usize,
    /// Also listen on this address (any free port): where exporters that cannot reach the
    /// host's loopback send (containers reach the host at its address on their network).
    pub also_bind: Option<std::net::IpAddr>,
}

/// A running receiver; see the module documentation.
#[derive(Debug)]
pub struct Collector {
    addr: SocketAddr,
    also_addr: Option<SocketAddr>,
    store: Arc<SpanStore>,
    forwarding: Option<Arc<ForwardCounters>>,
    stop: CancellationToken,
    server: Option<JoinHandle<()>>,
    forwarder: Option<JoinHandle<()>>,
}

/// What forwarding has done so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ForwardStats {
    /// Bodies the external collector accepted.
    pub forwarded: u64,
    /// Bodies dropped because the queue was full.
    pub dropped: u64,
    /// Bodies the external collector refused or could not be sent.
    pub failed: u64,
}

impl Collector {
    /// Binds `127.0.0.1:0` and serves until stopped or dropped.
    pub async fn start(options: CollectorOptions) -> anyhow::Result<Self> {
        let store = Arc::new(SpanStore::new(options.max_spans));
        let (queue, forwarder) = match options.forward_to.as_deref() {
            Some(base) => {
                let (queue, task) = Forwarder::start(base)?;
                (Some(queue), Some(task))
            }
            None => (None, None),
        };
        let forwarding = queue.as_ref().map(|q| Arc::clone(&q.counters));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .context("binding the OTLP receiver")?;
        let addr = listener
            .local_addr()
            .context("reading the OTLP receiver's address")?;
        let also = match options.also_bind {
            Some(ip) => Some(
                tokio::net::TcpListener::bind((ip, 0))
                    .await
                    .with_context(|| format!("binding the OTLP receiver on {ip}"))?,
            ),
            None => None,
        };
        let also_addr = also.as_ref().map(|l| l.local_addr()).transpose()?;
        let app = router(AppState {
            store: Arc::clone(&store),
            forward: queue,
        });
        let stop = CancellationToken::new();
        let server = tokio::spawn({
            let stop = stop.clone();
            async move {
                let serve = |listener, app| {
                    axum::serve(listener, app)
                        .with_graceful_shutdown(stop.clone().cancelled_owned())
                        .into_future()
                };
                let served = match also {
                    Some(also) => {
                        let (a, b) = tokio::join!(serve(listener, app.clone()), serve(also, app));
                        a.and(b)
                    }
                    None => serve(listener, app).await,
                };
                if let Err(e) = served {
                    tracing::warn!(error = %e, "the OTLP receiver stopped");
                }
            }
        });
        Ok(Self {
            addr,
            also_addr,
            store,
            forwarding,
            stop,
            server: Some(server),
            forwarder,
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// The base URL for `OTEL_EXPORTER_OTLP_ENDPOINT` (exporters add `/v1/traces`).
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The same on [`CollectorOptions::also_bind`]'s address, when there is one.
    pub fn also_endpoint(&self) -> Option<String> {
        self.also_addr.map(|a| format!("http://{a}"))
    }

    pub fn store(&self) -> Arc<SpanStore> {
        Arc::clone(&self.store)
    }

    /// Forwarding's counters; `None` when not forwarding.
    pub fn forwarding(&self) -> Option<ForwardStats> {
        self.forwarding.as_ref().map(|c| c.snapshot())
    }

    /// Stops accepting, lets open exports finish and the forwarding queue drain, each for at
    /// most a few seconds.
    pub async fn stop(mut self) {
        self.stop.cancel();
        if let Some(server) = self.server.take() {
            drain("the OTLP receiver's open exports", server).await;
        }
        // The server held the queue's only sender: with it gone, the forwarder ends once the
        // queue is empty.
        if let Some(forwarder) = self.forwarder.take() {
            drain("the trace forwarding queue", forwarder).await;
        }
    }
}

impl Drop for Collector {
    fn drop(&mut self) {
        self.stop.cancel();
        for task in [self.server.take(), self.forwarder.take()]
            .into_iter()
            .flatten()
        {
            task.abort();
        }
    }
}

/// Waits for `task` at most [`DRAIN_TIMEOUT`], then aborts it.
async fn drain(what: &str, mut task: JoinHandle<()>) {
    if tokio::time::timeout(DRAIN_TIMEOUT, &mut task)
        .await
        .is_err()
    {
        tracing::warn!("{what} did not finish within {DRAIN_TIMEOUT:?}; abandoning them");
        task.abort();
    }
}

#[derive(Clone)]
struct AppState {
    store: Arc<SpanStore>,
    forward: Option<ForwardQueue>,
}

fn router(state: AppState) -> Router {
    // Layers run outside in: the forwarding middleware sees the body as it came, before the
    // decompression layer inflates it for the handler.
    let export_route =
        post(export)
            .layer(RequestDecompressionLayer::new())
            .layer(middleware::from_fn_with_state(
                state.clone(),
                forward_accepted,
            ));
    Router::new()
        .route("/v1/traces", export_route)
        .route("/api/traces", get(find_traces))
        .route("/api/traces/{trace_id}", get(get_trace))
        .route("/api/hops", get(get_hops))
        .route("/api/hops/sagas", post(post_sagas_hops))
        // Bounds the compressed body in the middleware and the inflated one in the handler.
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(state)
}

async fn export(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let Some(encoding) = Encoding::of(&headers) else {
        return (
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            format!("expected Content-Type {PROTOBUF} or {JSON}"),
        )
            .into_response();
    };
    let body = match body {
        Ok(body) => body,
        Err(rejection) if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE => {
            return rejection.into_response();
        }
        Err(rejection) => {
            let message = format!("could not read the body: {}", rejection.body_text());
            return encoding.error(message);
        }
    };
    match encoding.decode(&body) {
        Ok(request) => {
            let inserted = state.store.insert_request(&request);
            encoding.answer(&export_response(inserted, state.store.max_spans()))
        }
        Err(message) => encoding.error(message),
    }
}

/// Full success, or a partial one naming the spans not kept, as OTLP asks; exporters do not
/// retry on either.
fn export_response(inserted: Inserted, max_spans: usize) -> ExportTraceServiceResponse {
    if inserted.rejected() == 0 {
        return ExportTraceServiceResponse::default();
    }
    let mut reasons = Vec::new();
    if inserted.dropped > 0 {
        reasons.push(format!(
            "{} dropped: the harness keeps at most {max_spans} spans",
            inserted.dropped
        ));
    }
    if inserted.invalid > 0 {
        reasons.push(format!(
            "{} rejected: trace ids must be 16 bytes, span ids 8",
            inserted.invalid
        ));
    }
    ExportTraceServiceResponse {
        partial_success: Some(ExportTracePartialSuccess {
            rejected_spans: i64::try_from(inserted.rejected()).unwrap_or(i64::MAX),
            error_message: reasons.join("; "),
        }),
    }
}

/// How an export is encoded; its answer is encoded the same way.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Encoding {
    Protobuf,
    Json,
}

/// `google.rpc.Status`, the body OTLP/HTTP asks for in an error answer.
#[derive(Clone, PartialEq, prost::Message)]
struct RpcStatus {
    #[prost(int32, tag = "1")]
    code: i32,
    #[prost(string, tag = "2")]
    message: String,
}

impl Encoding {
    fn of(headers: &HeaderMap) -> Option<Self> {
        let value = headers.get(CONTENT_TYPE)?.to_str().ok()?;
        let media_type = value.split(';').next().unwrap_or_default().trim();
        if media_type.eq_ignore_ascii_case(PROTOBUF)
            || media_type.eq_ignore_ascii_case("application/protobuf")
        {
            Some(Self::Protobuf)
        } else if media_type.eq_ignore_ascii_case(JSON) {
            Some(Self::Json)
        } else {
            None
        }
    }

    fn content_type(self) -> HeaderValue {
        HeaderValue::from_static(match self {
            Self::Protobuf => PROTOBUF,
            Self::Json => JSON,
        })
    }

    fn decode(self, body: &[u8]) -> Result<ExportTraceServiceRequest, String> {
        match self {
            Self::Protobuf => ExportTraceServiceRequest::decode(body)
                .map_err(|e| format!("the body is not a protobuf ExportTraceServiceRequest: {e}")),
            Self::Json => serde_json::from_slice(body).map_err(|e| {
                format!("the body is not an OTLP/JSON ExportTraceServiceRequest: {e}")
            }),
        }
    }

    fn answer(self, response: &ExportTraceServiceResponse) -> Response {
        let body = match self {
            Self::Protobuf => response.encode_to_vec(),
            // `{}` rather than `{"partialSuccess":null}`, as a protobuf JSON encoder writes it.
            Self::Json if response.partial_success.is_none() => b"{}".to_vec(),
            Self::Json => match serde_json::to_vec(response) {
                Ok(body) => body,
                Err(e) => return self.error(format!("encoding the answer: {e}")),
            },
        };
        ([(CONTENT_TYPE, self.content_type())], body).into_response()
    }

    /// A `400 Bad Request` with a `google.rpc.Status` saying why.
    fn error(self, message: String) -> Response {
        let body = match self {
            Self::Protobuf => RpcStatus {
                code: INVALID_ARGUMENT,
                message,
            }
            .encode_to_vec(),
            Self::Json => serde_json::json!({ "code": INVALID_ARGUMENT, "message": message })
                .to_string()
                .into_bytes(),
        };
        (
            StatusCode::BAD_REQUEST,
            [(CONTENT_TYPE, self.content_type())],
            body,
        )
            .into_response()
    }
}

/// Answers `GET /api/traces?order_id=ID`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TraceIds {
    pub trace_ids: Vec<String>,
}

#[derive(Debug, Deserialize)]
struct OrderQuery {
    order_id: String,
}

async fn get_trace(State(state): State<AppState>, Path(trace_id): Path<String>) -> Response {
    match state.store.trace(&trace_id) {
        Some(spans) => Json(spans).into_response(),
        None => (
            StatusCode::NOT_FOUND,
            Json(serde_json::json!({ "error": format!("no trace {trace_id} received") })),
        )
            .into_response(),
    }
}

async fn find_traces(
    State(state): State<AppState>,
    Query(query): Query<OrderQuery>,
) -> Json<TraceIds> {
    Json(TraceIds {
        trace_ids: state.store.traces_for_order(&query.order_id),
    })
}

/// The most traces one answer of `GET /api/hops` carries: a console attaching to a long
/// `harness up` catches up over a few seconds rather than in one huge answer.
pub const MAX_HOPS_PER_ANSWER: usize = 5_000;

#[derive(Debug, Deserialize)]
struct HopsQuery {
    #[serde(default)]
    after: u64,
    limit: Option<usize>,
}

async fn get_hops(State(state): State<AppState>, Query(query): Query<HopsQuery>) -> Response {
    let limit = query
        .limit
        .unwrap_or(MAX_HOPS_PER_ANSWER)
        .min(MAX_HOPS_PER_ANSWER);
    // Copying the spans out and walking them is CPU work; the export route must not wait on it.
    let store = Arc::clone(&state.store);
    match tokio::task::spawn_blocking(move || settled_hops(&store, query.after, limit)).await {
        Ok(hops) => Json(hops).into_response(),
        Err(e) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            Json(serde_json::json!({ "error": format!("computing the hops: {e}") })),
        )
            .into_response(),
    }
}

async fn post_sagas_hops(
    State(state): State<AppState>,
    body: Result<Json<Vec<SagaTrace>>, axum::extract::rejection::JsonRejection>,
) -> Response {
    let sagas = match body {
        Ok(Json(sagas)) => sagas,
        Err(rejection) => {
            let error = format!("expected a JSON list of sagas: {}", rejection.body_text());
            return (
                StatusCode::BAD_REQUEST,
                Json(serde_json::json!({ "error": error })),
            )
                .into_response();
        }
    };
    if sagas.len() > MAX_HOPS_PER_ANSWER {
        let error = format!(
            "{} sagas asked for; at most {MAX_HOPS_PER_ANSWER} at once",
            sagas.len()
        );
        return (
            StatusCode::PAYLOAD_TOO_LARGE,
            Json(serde_json::json!({ "error": error })),
        )
            .into_response();
    }
    let store = Arc::clone(&state.store);
    match tokio::task::spawn_blocking(move || sagas_hops(&store, &sagas)).await {
        Ok(hops) => Json(hops).into_response(),
        Err(e) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            Json(serde_json::json!({ "error": format!("computing the hops: {e}") })),
        )
            .into_response(),
    }
}

/// The hops of `sagas` at the collector at `base_url`, each cut at its terminal time; see
/// [`sagas_hops`].
pub async fn fetch_sagas_hops(
    client: &reqwest::Client,
    base_url: &str,
    sagas: &[SagaTrace],
) -> anyhow::Result<Vec<TraceHops>> {
    let url = api_url(base_url, &["api", "hops", "sagas"])?;
    client
        .post(url.clone())
        .json(sagas)
        .send()
        .await
        .and_then(reqwest::Response::error_for_status)
        .with_context(|| format!("asking {url} for the sagas' hops"))?
        .json()
        .await
        .with_context(|| format!("reading the sagas' hops from {url}"))
}

/// The traces settled since cursor `after` at the collector of a running `harness up` (or of a
/// run) at `base_url`, with their hops; see [`settled_hops`].
pub async fn fetch_settled_hops(
    client: &reqwest::Client,
    base_url: &str,
    after: u64,
) -> anyhow::Result<SettledHops> {
    let mut url = api_url(base_url, &["api", "hops"])?;
    url.query_pairs_mut()
        .append_pair("after", &after.to_string());
    client
        .get(url.clone())
        .send()
        .await
        .and_then(reqwest::Response::error_for_status)
        .with_context(|| format!("asking {url} for the hops"))?
        .json()
        .await
        .with_context(|| format!("reading the hops from {url}"))
}

/// A trace from the collector of a running `harness up` at `base_url`; `None` if it has none
/// with that id.
pub async fn fetch_trace(
    base_url: &str,
    trace_id: &str,
) -> anyhow::Result<Option<Vec<SpanRecord>>> {
    let url = api_url(base_url, &["api", "traces", trace_id])?;
    let response = http_client()?
        .get(url.clone())
        .send()
        .await
        .with_context(|| format!("asking {url} for the trace"))?;
    if response.status() == reqwest::StatusCode::NOT_FOUND {
        return Ok(None);
    }
    let spans = response
        .error_for_status()
        .with_context(|| format!("asking {url} for the trace"))?
        .json()
        .await
        .with_context(|| format!("reading the trace from {url}"))?;
    Ok(Some(spans))
}

/// The traces the collector at `base_url` has for an order.
pub async fn fetch_trace_ids_for_order(
    base_url: &str,
    order_id: &str,
) -> anyhow::Result<Vec<String>> {
    let mut url = api_url(base_url, &["api", "traces"])?;
    url.query_pairs_mut().append_pair("order_id", order_id);
    let ids: TraceIds = http_client()?
        .get(url.clone())
        .send()
        .await
        .and_then(reqwest::Response::error_for_status)
        .with_context(|| format!("asking {url} for the order's traces"))?
        .json()
        .await
        .with_context(|| format!("reading the order's traces from {url}"))?;
    Ok(ids.trace_ids)
}

fn http_client() -> anyhow::Result<reqwest::Client> {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .context("building an HTTP client")
}

/// `base_url` with `segments` appended as path segments (escaped).
fn api_url(base_url: &str, segments: &[&str]) -> anyhow::Result<reqwest::Url> {
    let mut url =
        reqwest::Url::parse(base_url).with_context(|| format!("{base_url:?} is not a URL"))?;
    if !matches!(url.scheme(), "http" | "https") {
        bail!("{base_url:?} is not an http(s) URL");
    }
    url.path_segments_mut()
        .map_err(|()| anyhow::anyhow!("{base_url:?} cannot have a path"))?
        .pop_if_empty()
        .extend(segments);
    Ok(url)
}

/// Queues the body of every accepted export (answered `200`) for forwarding, as it came.
async fn forward_accepted(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let Some(queue) = state.forward else {
        return next.run(request).await;
    };
    let (parts, body) = request.into_parts();
    let raw = match Bytes::from_request(Request::from_parts(parts.clone(), body), &()).await {
        Ok(raw) => raw,
        Err(rejection) => return rejection.into_response(),
    };
    let content_type = parts.headers.get(CONTENT_TYPE).cloned();
    let content_encoding = parts.headers.get(CONTENT_ENCODING).cloned();
    let response = next
        .run(Request::from_parts(parts, Body::from(raw.clone())))
        .await;
    if response.status() == StatusCode::OK {
        queue.offer(Forwarded {
            body: raw,
            content_type,
            content_encoding,
        });
    }
    response
}

struct Forwarded {
    body: Bytes,
    content_type: Option<HeaderValue>,
    content_encoding: Option<HeaderValue>,
}

#[derive(Debug, Default)]
struct ForwardCounters {
    forwarded: AtomicU64,
    dropped: AtomicU64,
    failed: AtomicU64,
    warned_of_drops: AtomicBool,
}

impl ForwardCounters {
    fn snapshot(&self) -> ForwardStats {
        ForwardStats {
            forwarded: self.forwarded.load(Ordering::Relaxed),
            dropped: self.dropped.load(Ordering::Relaxed),
            failed: self.failed.load(Ordering::Relaxed),
        }
    }
}

/// The sending side of the forwarding queue, held by the server.
#[derive(Clone)]
struct ForwardQueue {
    tx: mpsc::Sender<Forwarded>,
    queued_bytes: Arc<AtomicUsize>,
    counters: Arc<ForwardCounters>,
}

impl ForwardQueue {
    /// Queues `item`, or drops and counts it when the queue is full.
    fn offer(&self, item: Forwarded) {
        let len = item.body.len();
        let queued = self.queued_bytes.fetch_add(len, Ordering::SeqCst) + len;
        let accepted = queued <= FORWARD_QUEUE_BYTES && self.tx.try_send(item).is_ok();
        if !accepted {
            self.queued_bytes.fetch_sub(len, Ordering::SeqCst);
            self.counters.dropped.fetch_add(1, Ordering::Relaxed);
            if !self.counters.warned_of_drops.swap(true, Ordering::Relaxed) {
                tracing::warn!(
                    "the external trace collector does not keep up; exports it has not been \
                     sent are dropped (counted in the run's report)"
                );
            }
        }
    }
}

/// The background task that sends queued bodies to the external collector, one at a time.
struct Forwarder {
    url: reqwest::Url,
    http: reqwest::Client,
    queued_bytes: Arc<AtomicUsize>,
    counters: Arc<ForwardCounters>,
    last_failure_log: Option<Instant>,
    unlogged_failures: u64,
}

impl Forwarder {
    fn start(base_url: &str) -> anyhow::Result<(ForwardQueue, JoinHandle<()>)> {
        let url = api_url(base_url, &["v1", "traces"])
            .context("the OTLP endpoint to forward traces to")?;
        let http = reqwest::Client::builder()
            .timeout(FORWARD_TIMEOUT)
            .build()
            .context("building the trace forwarding client")?;
        let (tx, rx) = mpsc::channel(FORWARD_QUEUE_BODIES);
        let queue = ForwardQueue {
            tx,
            queued_bytes: Arc::default(),
            counters: Arc::default(),
        };
        let forwarder = Self {
            url,
            http,
            queued_bytes: Arc::clone(&queue.queued_bytes),
            counters: Arc::clone(&queue.counters),
            last_failure_log: None,
            unlogged_failures: 0,
        };
        Ok((queue, tokio::spawn(forwarder.run(rx))))
    }

    async fn run(mut self, mut rx: mpsc::Receiver<Forwarded>) {
        while let Some(item) = rx.recv().await {
            self.queued_bytes
                .fetch_sub(item.body.len(), Ordering::SeqCst);
            match self.send(item).await {
                Ok(()) => {
                    self.counters.forwarded.fetch_add(1, Ordering::Relaxed);
                }
                Err(e) => {
                    self.counters.failed.fetch_add(1, Ordering::Relaxed);
                    self.note_failure(&e);
                }
            }
        }
    }

    async fn send(&self, item: Forwarded) -> anyhow::Result<()> {
        let mut request = self.http.post(self.url.clone()).body(item.body);
        if let Some(content_type) = item.content_type {
            request = request.header(CONTENT_TYPE, content_type);
        }
        if let Some(content_encoding) = item.content_encoding {
            request = request.header(CONTENT_ENCODING, content_encoding);
        }
        request.send().await?.error_for_status()?;
        Ok(())
    }

    /// Logs a failure unless one was logged in the last [`FAILURE_LOG_INTERVAL`]: an absent
    /// collector fails every export, and one line a minute says so well enough.
    fn note_failure(&mut self, error: &anyhow::Error) {
        self.unlogged_failures += 1;
        if self
            .last_failure_log
            .is_some_and(|at| at.elapsed() < FAILURE_LOG_INTERVAL)
        {
            return;
        }
        tracing::warn!(
            url = %self.url,
            failures = self.unlogged_failures,
            error = format!("{error:#}"),
            "forwarding traces failed (logged at most once a minute)"
        );
        self.last_failure_log = Some(Instant::now());
        self.unlogged_failures = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::telemetry::store::SpanKind;
    use crate::telemetry::store::tests::{request, span};
    use opentelemetry_proto::tonic::trace::v1::span::SpanKind as OtlpKind;

    const ORDER: &str = "7a0c3e2e-5d1b-4e8f-9a41-2f0c9d6b1e55";

    async fn collector() -> Collector {
        Collector::start(CollectorOptions {
            forward_to: None,
            max_spans: 1_000,
            ..Default::default()
        })
        .await
        .unwrap()
    }

    /// Three spans of trace `01…`, the order service's carrying [`ORDER`].
    fn export() -> ExportTraceServiceRequest {
        request(
            "order",
            "order#1",
            vec![
                span(
                    1,
                    1,
                    0,
                    "POST /orders",
                    OtlpKind::Server,
                    (0, 30),
                    &[("order_id", ORDER)],
                ),
                span(
                    1,
                    2,
                    1,
                    "place_order",
                    OtlpKind::Internal,
                    (1, 29),
                    &[("order_id", ORDER)],
                ),
                span(
                    1,
                    3,
                    2,
                    "INSERT orders",
                    OtlpKind::Client,
                    (2, 5),
                    &[("db.system.name", "sqlite")],
                ),
            ],
        )
    }

    async fn post(
        endpoint: &str,
        content_type: &str,
        encoding: Option<&str>,
        body: Vec<u8>,
    ) -> reqwest::Response {
        let mut request = reqwest::Client::new()
            .post(format!("{endpoint}/v1/traces"))
            .header(CONTENT_TYPE, content_type)
            .body(body);
        if let Some(encoding) = encoding {
            request = request.header(CONTENT_ENCODING, encoding);
        }
        request.send().await.unwrap()
    }

    /// A gzip stream of stored (uncompressed) deflate blocks: valid gzip, no compressor needed.
    fn gzip(data: &[u8]) -> Vec<u8> {
        let mut out = vec![0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 0xff];
        let chunks: Vec<&[u8]> = data.chunks(0xffff).collect();
        for (i, chunk) in chunks.iter().enumerate() {
            out.push(u8::from(i + 1 == chunks.len()));
            let len = u16::try_from(chunk.len()).unwrap();
            out.extend(len.to_le_bytes());
            out.extend((!len).to_le_bytes());
            out.extend(*chunk);
        }
        let mut crc = !0u32;
        for &b in data {
            crc ^= u32::from(b);
            for _ in 0..8 {
                crc = if crc & 1 == 1 {
                    (crc >> 1) ^ 0xedb8_8320
                } else {
                    crc >> 1
                };
            }
        }
        out.extend((!crc).to_le_bytes());
        out.extend(u32::try_from(data.len()).unwrap().to_le_bytes());
        out
    }

    #[tokio::test]
    async fn the_receiver_stores_a_protobuf_export_and_answers_in_protobuf() {
        let c = collector().await;
        let response = post(&c.endpoint(), PROTOBUF, None, export().encode_to_vec()).await;
        assert_eq!(response.status(), 200);
        assert_eq!(response.headers()[CONTENT_TYPE], PROTOBUF);
        let answer = ExportTraceServiceResponse::decode(response.bytes().await.unwrap()).unwrap();
        assert_eq!(answer.partial_success, None);
        assert_eq!(c.store().len(), 3);
        let spans = c.store().trace(&"01".repeat(16)).unwrap();
        assert_eq!(spans[0].name, "POST /orders");
        assert_eq!(spans[0].instance.as_deref(), Some("order#1"));
    }

    #[tokio::test]
    async fn the_receiver_stores_a_hand_written_otlp_json_export() {
        let json = r#"{
          "resourceSpans": [{
            "resource": {"attributes": [
              {"key": "service.name", "value": {"stringValue": "order"}},
              {"key": "service.instance.id", "value": {"stringValue": "order#2"}}
            ]},
            "scopeSpans": [{
              "scope": {"name": "order-service", "version": "0.1.0"},
              "spans": [{
                "traceId": "5b8efff798038103d269b633813fc60c",
                "spanId": "eee19b7ec3c1b174",
                "parentSpanId": "eee19b7ec3c1b173",
                "name": "POST /orders",
                "kind": 2,
                "startTimeUnixNano": "1544712660000000000",
                "endTimeUnixNano": "1544712660250000000",
                "attributes": [
                  {"key": "http.response.status_code", "value": {"intValue": "201"}},
                  {"key": "order_id", "value": {"stringValue": "7a0c3e2e-5d1b-4e8f-9a41-2f0c9d6b1e55"}},
                  {"key": "sampled", "value": {"boolValue": true}},
                  {"key": "ratio", "value": {"doubleValue": 0.5}}
                ],
                "droppedAttributesCount": 0,
                "events": [],
                "status": {"code": 1}
              }]
            }]
          }]
        }"#;
        let c = collector().await;
        let response = post(
            &c.endpoint(),
            "application/json; charset=utf-8",
            None,
            json.into(),
        )
        .await;
        assert_eq!(response.status(), 200);
        assert_eq!(response.headers()[CONTENT_TYPE], JSON);
        let answer: serde_json::Value = response.json().await.unwrap();
        assert_eq!(answer, serde_json::json!({}));

        let spans = c.store().trace("5b8efff798038103d269b633813fc60c").unwrap();
        let s = &spans[0];
        assert_eq!(s.span_id, "eee19b7ec3c1b174");
        assert_eq!(s.parent_span_id.as_deref(), Some("eee19b7ec3c1b173"));
        assert_eq!(
            (s.service.as_str(), s.instance.as_deref()),
            ("order", Some("order#2"))
        );
        assert_eq!(s.kind, SpanKind::Server);
        assert_eq!(s.start_unix_ns, 1_544_712_660_000_000_000);
        assert_eq!(s.duration_ns(), 250_000_000);
        assert_eq!(s.attr("http.response.status_code"), Some("201"));
        assert_eq!(s.attr("sampled"), Some("true"));
        assert_eq!(s.attr("ratio"), Some("0.5"));
        assert_eq!(c.store().traces_for_order(ORDER), vec![s.trace_id.clone()]);
    }

    #[tokio::test]
    async fn the_receiver_inflates_a_gzipped_export() {
        let c = collector().await;
        let response = post(
            &c.endpoint(),
            PROTOBUF,
            Some("gzip"),
            gzip(&export().encode_to_vec()),
        )
        .await;
        assert_eq!(response.status(), 200);
        assert_eq!(c.store().len(), 3);
    }

    #[tokio::test]
    async fn a_body_that_does_not_decode_is_answered_400_with_a_message() {
        let c = collector().await;
        let response = post(&c.endpoint(), PROTOBUF, None, vec![0xff; 7]).await;
        assert_eq!(response.status(), 400);
        let status = RpcStatus::decode(response.bytes().await.unwrap()).unwrap();
        assert_eq!(status.code, INVALID_ARGUMENT);
        assert!(status.message.contains("protobuf"), "{}", status.message);

        let response = post(
            &c.endpoint(),
            JSON,
            None,
            br#"{"resourceSpans": 3}"#.to_vec(),
        )
        .await;
        assert_eq!(response.status(), 400);
        let status: serde_json::Value = response.json().await.unwrap();
        assert!(
            status["message"].as_str().unwrap().contains("OTLP/JSON"),
            "{status}"
        );

        let response = post(&c.endpoint(), PROTOBUF, Some("gzip"), b"not gzip".to_vec()).await;
        assert_eq!(response.status(), 400);
        assert_eq!(c.store().len(), 0);
    }

    #[tokio::test]
    async fn another_content_type_or_encoding_is_answered_415() {
        let c = collector().await;
        let body = export().encode_to_vec();
        assert_eq!(
            post(&c.endpoint(), "text/plain", None, body.clone())
                .await
                .status(),
            415
        );
        assert_eq!(
            post(&c.endpoint(), PROTOBUF, Some("br"), body)
                .await
                .status(),
            415
        );
        assert_eq!(c.store().len(), 0);
    }

    #[tokio::test]
    async fn spans_the_store_has_no_room_for_are_reported_as_a_partial_success() {
        let c = Collector::start(CollectorOptions {
            forward_to: None,
            max_spans: 1,
            ..Default::default()
        })
        .await
        .unwrap();
        let response = post(&c.endpoint(), PROTOBUF, None, export().encode_to_vec()).await;
        assert_eq!(response.status(), 200);
        let answer = ExportTraceServiceResponse::decode(response.bytes().await.unwrap()).unwrap();
        let partial = answer.partial_success.unwrap();
        assert_eq!(partial.rejected_spans, 2);
        assert!(
            partial.error_message.contains("at most 1 spans"),
            "{}",
            partial.error_message
        );
    }

    #[tokio::test]
    async fn the_query_api_serves_a_trace_and_finds_it_by_its_order() {
        let c = collector().await;
        post(&c.endpoint(), PROTOBUF, None, export().encode_to_vec()).await;
        let ids = fetch_trace_ids_for_order(&c.endpoint(), ORDER)
            .await
            .unwrap();
        assert_eq!(ids, vec!["01".repeat(16)]);
        let spans = fetch_trace(&c.endpoint(), &ids[0]).await.unwrap().unwrap();
        assert_eq!(spans, c.store().trace(&ids[0]).unwrap());
        assert!(
            fetch_trace(&c.endpoint(), &"02".repeat(16))
                .await
                .unwrap()
                .is_none()
        );
        assert!(
            fetch_trace_ids_for_order(&c.endpoint(), "no such order")
                .await
                .unwrap()
                .is_empty()
        );
    }

    #[tokio::test]
    async fn the_query_api_serves_each_settled_trace_with_its_hops_once() {
        let c = collector().await;
        post(&c.endpoint(), PROTOBUF, None, export().encode_to_vec()).await;
        let client = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(15);
        let settled = loop {
            let settled = fetch_settled_hops(&client, &c.endpoint(), 0).await.unwrap();
            if !settled.traces.is_empty() {
                break settled;
            }
            assert!(Instant::now() < deadline, "the trace never settled");
            tokio::time::sleep(Duration::from_millis(200)).await;
        };
        assert_eq!(settled.traces.len(), 1);
        let trace = &settled.traces[0];
        assert_eq!(trace.trace_id, "01".repeat(16));
        let spans = c.store().trace(&trace.trace_id).unwrap();
        assert_eq!(trace.hops, crate::telemetry::hops::saga_hops(&spans, None));
        assert!(
            fetch_settled_hops(&client, &c.endpoint(), settled.next)
                .await
                .unwrap()
                .traces
                .is_empty(),
            "a trace comes once until it changes"
        );

        // A saga's hops, cut at its terminal time as the report cuts them: only the spans that
        // started before 2 ms count.
        let terminal = 1_000_000 * 2;
        let sagas = [
            SagaTrace {
                trace_id: "01".repeat(16),
                terminal_at_unix_ns: terminal,
            },
            SagaTrace {
                trace_id: "02".repeat(16),
                terminal_at_unix_ns: terminal,
            },
        ];
        let hops = fetch_sagas_hops(&client, &c.endpoint(), &sagas)
            .await
            .unwrap();
        assert_eq!(hops.len(), 1, "the unknown trace is left out: {hops:?}");
        assert_eq!(
            hops[0].hops,
            crate::telemetry::hops::saga_hops(&spans, Some(terminal))
        );
        assert_ne!(hops[0].hops, trace.hops, "the INSERT after 2 ms is cut");
    }

    #[tokio::test]
    async fn forwarding_delivers_each_accepted_body_to_another_collector_as_it_came() {
        let external = collector().await;
        let c = Collector::start(CollectorOptions {
            forward_to: Some(format!("{}/", external.endpoint())),
            max_spans: 1_000,
            ..Default::default()
        })
        .await
        .unwrap();
        let body = export().encode_to_vec();
        assert_eq!(
            post(&c.endpoint(), PROTOBUF, Some("gzip"), gzip(&body))
                .await
                .status(),
            200
        );
        assert_eq!(
            post(&c.endpoint(), "text/plain", None, body).await.status(),
            415
        );

        let deadline = Instant::now() + Duration::from_secs(10);
        while c.forwarding().unwrap().forwarded < 1 {
            assert!(
                Instant::now() < deadline,
                "not forwarded: {:?}",
                c.forwarding()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(external.store().len(), 3);
        assert_eq!(
            c.forwarding(),
            Some(ForwardStats {
                forwarded: 1,
                dropped: 0,
                failed: 0
            }),
            "the refused body is not forwarded"
        );
        c.stop().await;
    }

    #[tokio::test]
    async fn a_stopped_or_dropped_collector_leaves_nothing_listening() {
        let c = collector().await;
        let addr = c.addr();
        c.stop().await;
        assert!(tokio::net::TcpStream::connect(addr).await.is_err());

        let c = collector().await;
        let addr = c.addr();
        drop(c);
        let deadline = Instant::now() + Duration::from_secs(5);
        while tokio::net::TcpStream::connect(addr).await.is_ok() {
            assert!(Instant::now() < deadline, "still listening on {addr}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}
