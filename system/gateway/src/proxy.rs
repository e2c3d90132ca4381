//! Forwarding: authenticate the user at the edge, pick an instance, call it with a service token,
//! hand its answer back.
//!
//! Instances of a service are taken round-robin. A failed *connect* moves on to the next instance
//! for every method, because nothing reached the service. A connection that fails later (reset,
//! closed before an answer: what a proxy in front of a dead instance does) moves on only when the
//! request is safe to repeat: a `GET`/`HEAD`, or a request with an `Idempotency-Key`, which the
//! service deduplicates. Anything else may have been acted on (a retried `POST /orders` without a
//! key could place two orders), so it fails with 502. A request safe to repeat also moves on
//! when an attempt gets no answer within `ATTEMPT_TIMEOUT_MS` (a frozen instance holds requests
//! without failing them): the next instance is tried *alongside* the slow attempt, and the first
//! useful answer wins (see [`attempts`]); other requests wait for the whole `UPSTREAM_TIMEOUT_MS`.
//!
//! Which instances, in which order, and when they leave the rotation: [`crate::upstream`]. The
//! bulkhead, circuit breaker, retry budget and rate limit around this: [`crate::resilience`].
//!
//! Observability: each attempt is an HTTP client span (a child of the request's server span)
//! whose W3C context replaces the client's `traceparent` on the forwarded request, and is counted
//! in the `gateway_upstream_*` metrics per instance (`upstream="order#2"`: the service and the
//! instance's position in its URL list, from 1).

use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{FromRequest, Request};
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, header, request::Parts};
use axum::response::{IntoResponse, Response};
use contracts::domain::Role;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use platform::auth::{AuthError, ServiceAuth, bearer};
use platform::http::{IDEMPOTENCY_KEY, REQUEST_ID};
use tokio::time::Instant;
use tracing::Instrument;
use tracing_opentelemetry::OpenTelemetrySpanExt;

use crate::config::Config;
use crate::error::GatewayError;
use crate::resilience::{self, Guarded, RateLimit, ResilienceConfig, RetryPolicy, UpstreamCall};
use crate::routes::{API_PREFIX, Access, Route, Service};
use crate::throttle::{Throttle, Verdict};
use crate::upstream::{self, Instance, Outcome, Upstream};

pub const TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");
pub const IDEMPOTENT_REPLAYED: HeaderName = HeaderName::from_static("idempotent-replayed");

/// The `sub` of service tokens for calls made without a user token (the public catalog).
pub const ANONYMOUS_SUBJECT: &str = "anonymous";

/// Request headers the services get from the client; everything else stays at the edge, above
/// all the user's `Authorization`.
const FORWARDED_REQUEST_HEADERS: [HeaderName; 5] = [
    REQUEST_ID,
    IDEMPOTENCY_KEY,
    header::CONTENT_TYPE,
    header::ACCEPT,
    TRACEPARENT,
];

/// Response headers the client gets from the service. `retry-after` tells a load generator when a
/// 503 is worth retrying.
const RETURNED_RESPONSE_HEADERS: [HeaderName; 3] = [
    header::CONTENT_TYPE,
    IDEMPOTENT_REPLAYED,
    header::RETRY_AFTER,
];

const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(30);

/// The client the gateway calls the services with (and probes them with): hyper's pooled
/// client, keep-alive, `TCP_NODELAY`. Not reqwest, which on top of the same client parsed every
/// URL with the `url` crate (IDNA included), went through its redirect and retry layers and
/// armed a timer per request: 9 % of the gateway's CPU per forwarded read (docs/performance.md).
/// It follows no redirect (the client decides what to do with one) and never goes through an
/// `HTTP(S)_PROXY` from the environment; the services are called over plain HTTP.
pub type UpstreamClient = Client<HttpConnector, Full<Bytes>>;

fn upstream_client() -> UpstreamClient {
    let mut connector = HttpConnector::new();
    connector.set_connect_timeout(Some(CONNECT_TIMEOUT));
    connector.set_nodelay(true);
    Client::builder(TokioExecutor::new())
        .pool_idle_timeout(POOL_IDLE_TIMEOUT)
        .pool_timer(TokioTimer::new())
        .build(connector)
}

/// What every request handler shares.
#[derive(Clone)]
pub struct AppState {
    inner: Arc<Inner>,
}

struct Inner {
    verifier: crate::tokens::VerifiedTokens,
    service_tokens: crate::tokens::IssuedTokens,
    core: Arc<Core>,
    /// Per service (order, inventory, payment): its bulkhead and breaker around [`attempts`].
    guards: [Guarded; 3],
    rate_limit: Option<Arc<RateLimit>>,
    /// The requests that start sagas, refused here for a hold after the order service refused one.
    throttle: Option<Throttle>,
    throttled: metrics::Counter,
    resilience: ResilienceConfig,
    upstreams_file: Option<std::path::PathBuf>,
    max_body_bytes: usize,
}

/// What the failover loop needs, apart from the guards that wrap it.
struct Core {
    client: UpstreamClient,
    upstreams: [Arc<Upstream>; 3],
    retries: [RetryPolicy; 3],
    upstream_timeout: Duration,
    attempt_timeout: Duration,
}

impl Core {
    fn upstream(&self, service: Service) -> &Upstream {
        &self.upstreams[slot(service)]
    }
}

fn slot(service: Service) -> usize {
    match service {
        Service::Order => 0,
        Service::Inventory => 1,
        Service::Payment => 2,
    }
}

impl AppState {
    pub fn new(config: &Config) -> anyhow::Result<Self> {
        let client = upstream_client();
        let resilience = config.resilience.clone();
        // Zero until the first refusal, also with the limit off, so every dashboard query has
        // its series.
        metrics::counter!(crate::metrics::RATE_LIMITED).increment(0);
        let throttled = metrics::counter!(
            crate::metrics::ADMISSION_THROTTLED,
            "service" => Service::Order.name()
        );
        throttled.increment(0);
        let core = Arc::new(Core {
            client,
            upstreams: [
                Arc::new(Upstream::new(Service::Order, config.order_urls.clone())),
                Arc::new(Upstream::new(
                    Service::Inventory,
                    config.inventory_urls.clone(),
                )),
                Arc::new(Upstream::new(Service::Payment, config.payment_urls.clone())),
            ],
            retries: Service::ALL.map(|s| RetryPolicy::new(s, &resilience.retries)),
            upstream_timeout: config.upstream_timeout,
            attempt_timeout: config.attempt_timeout,
        });
        let guard_of = |service: Service| -> anyhow::Result<Guarded> {
            let core = core.clone();
            let inner = tower::service_fn(move |call: UpstreamCall| {
                let core = core.clone();
                async move { attempts(&core, service, call).await }
            });
            resilience::guard(service, &resilience, inner)
        };
        let guards = [
            guard_of(Service::Order)?,
            guard_of(Service::Inventory)?,
            guard_of(Service::Payment)?,
        ];
        Ok(Self {
            inner: Arc::new(Inner {
                verifier: crate::tokens::VerifiedTokens::new(config.user_token_verifier()?),
                service_tokens: crate::tokens::IssuedTokens::new(ServiceAuth::new(
                    config.common.secret_bytes(),
                    crate::config::SERVICE_NAME,
                )),
                core,
                guards,
                rate_limit: resilience
                    .rate_limit
                    .map(|(rate, burst)| RateLimit::new(rate, burst)),
                throttle: resilience.admission_throttle.as_ref().map(Throttle::new),
                throttled,
                resilience,
                upstreams_file: config.upstreams_file.clone(),
                max_body_bytes: config.max_body_bytes,
            }),
        })
    }

    /// Starts what runs beside the requests: active health checks, watching the instance list
    /// file, forgetting idle rate-limit buckets. Needs a Tokio runtime; the tasks end with it.
    pub fn spawn_background(&self) {
        let upstreams = self.inner.core.upstreams.to_vec();
        if let Some(interval) = self.inner.resilience.health_check_interval {
            upstream::spawn_health_checks(
                self.inner.core.client.clone(),
                upstreams.clone(),
                interval,
            );
        }
        if let Some(file) = &self.inner.upstreams_file {
            upstream::spawn_discovery(file.clone(), upstreams);
        }
        if let Some(limit) = &self.inner.rate_limit {
            let limit = Arc::downgrade(limit);
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(Duration::from_secs(60));
                loop {
                    tick.tick().await;
                    match limit.upgrade() {
                        Some(limit) => limit.forget_idle(),
                        None => return,
                    }
                }
            });
        }
    }

    pub fn max_body_bytes(&self) -> usize {
        self.inner.max_body_bytes
    }

    /// Ready when every service has an instance to send to. Deliberately no network call: a
    /// readiness probe must stay cheap, and one slow service must not take the whole edge out.
    pub fn ready(&self) -> Result<(), String> {
        match self
            .inner
            .core
            .upstreams
            .iter()
            .find(|u| u.instances().is_empty())
        {
            Some(u) => Err(format!(
                "no instance of the {} service is configured",
                u.service()
            )),
            None => Ok(()),
        }
    }
}

/// Who a forwarded call is made for.
#[derive(Debug)]
struct Identity {
    sub: String,
    roles: Vec<Role>,
}

fn authenticate(
    verifier: &crate::tokens::VerifiedTokens,
    access: Access,
    parts: &Parts,
) -> Result<Identity, GatewayError> {
    let token = match bearer(&parts.headers) {
        Err(AuthError::Missing) if access.is_anonymous_ok(&parts.method) => {
            return Ok(Identity {
                sub: ANONYMOUS_SUBJECT.into(),
                roles: Vec::new(),
            });
        }
        other => other?,
    };
    let claims = verifier.verify(token).inspect_err(|e| {
        tracing::debug!(reason = %e, "user token refused");
    })?;
    if !access.allows(&claims.roles) {
        return Err(GatewayError::Forbidden(access.denial()));
    }
    Ok(Identity {
        sub: claims.sub.clone(),
        roles: claims.roles.clone(),
    })
}

/// Forwards one request along `route`.
#[tracing::instrument(skip_all, fields(service = %route.service, upstream = tracing::field::Empty))]
pub async fn forward(
    state: AppState,
    route: Route,
    req: Request,
) -> Result<Response, GatewayError> {
    let (parts, body) = req.into_parts();
    let identity = authenticate(&state.inner.verifier, route.access, &parts)?;
    // Per customer: anonymous catalog reads share no bucket (one would starve them all).
    if let Some(limit) = &state.inner.rate_limit
        && identity.sub != ANONYMOUS_SUBJECT
        && let Err(wait) = limit.check(&identity.sub)
    {
        return Err(GatewayError::RateLimited { retry_after: wait });
    }
    let throttle = (state.inner.throttle.as_ref()).filter(|_| route.starts_saga(&parts.method));
    if let Some(throttle) = throttle
        && !throttle.admit()
    {
        state.inner.throttled.increment(1);
        return Err(GatewayError::Throttled(route.service));
    }

    let limit = state.inner.max_body_bytes;
    let declared = parts
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|len| len > limit as u64) {
        return Err(GatewayError::PayloadTooLarge { limit });
    }

    let service = route.service;
    let authorization = state
        .inner
        .service_tokens
        .bearer(service.name(), &identity.sub, &identity.roles)
        .map_err(|e| GatewayError::Internal(e.into()))?;
    let headers = forwarded_headers(&parts.headers, authorization);
    let method = parts.method.clone();
    let path_and_query = upstream_path_and_query(&parts);

    // The router's `DefaultBodyLimit` bounds this read, chunked bodies included.
    let body = Bytes::from_request(Request::from_parts(parts, body), &())
        .await
        .map_err(|rejection| {
            if rejection.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE {
                GatewayError::PayloadTooLarge { limit }
            } else {
                GatewayError::BadRequest(rejection.body_text())
            }
        })?;

    let call = UpstreamCall {
        method,
        path_and_query,
        headers,
        body,
    };
    let answer = resilience::call(&state.inner.guards[slot(service)], call).await;
    // Only the service's own verdicts teach the throttle; what another layer failed is theirs.
    if let (Some(throttle), Ok(response)) = (throttle, &answer) {
        throttle.record(Verdict::of(response));
    }
    answer
}

fn upstream_path_and_query(parts: &Parts) -> String {
    let path = parts.uri.path();
    let path = path.strip_prefix(API_PREFIX).unwrap_or(path);
    match parts.uri.query() {
        Some(query) => format!("{path}?{query}"),
        None => path.to_string(),
    }
}

fn forwarded_headers(incoming: &HeaderMap, authorization: HeaderValue) -> HeaderMap {
    let mut headers = HeaderMap::new();
    for name in FORWARDED_REQUEST_HEADERS {
        for value in incoming.get_all(&name) {
            headers.append(name.clone(), value.clone());
        }
    }
    headers.insert(header::AUTHORIZATION, authorization);
    headers
}

/// One attempt under way: where it went, and what closes its span.
struct Launched {
    instance: Arc<Instance>,
    span: tracing::Span,
    started: Instant,
    finished: bool,
}

/// The failover loop to one service: instances in the order [`Upstream::attempt_order`] gives,
/// each retry under the service's retry budget.
///
/// A failed attempt (connect error; for a request safe to repeat, a connection broken before the
/// answer) is followed by the next instance after a full-jitter backoff. A request safe to repeat
/// whose attempt has not answered within `ATTEMPT_TIMEOUT_MS` is *hedged*: the next instance is
/// tried while the first attempt keeps running, and the first useful answer wins. The slow
/// attempt is not abandoned, because an overloaded instance that is merely slow will still
/// answer (cancelling it wasted the work and, for a `POST`, left the client with a 504 when the
/// other instance refused the retry), while a frozen instance is left behind by the hedge. A
/// refusal (503, 429) is passed on only when no other attempt can still answer.
async fn attempts(
    core: &Core,
    service: Service,
    call: UpstreamCall,
) -> Result<Response, GatewayError> {
    let UpstreamCall {
        method,
        path_and_query,
        headers,
        body,
    } = call;
    let deadline = Instant::now() + core.upstream_timeout;
    let upstream = core.upstream(service);
    let policy = &core.retries[slot(service)];
    let repeatable =
        matches!(method, Method::GET | Method::HEAD) || headers.contains_key(IDEMPOTENCY_KEY);
    let mut order = upstream.attempt_order();
    if !policy.enabled() {
        order.truncate(1);
    }
    policy.deposit();
    let mut untried = order.into_iter().peekable();
    let mut launched: Vec<Launched> = Vec::new();
    let mut in_flight = futures::stream::FuturesUnordered::new();
    let mut failure = GatewayError::Unreachable(service);
    // An attempt broke after sending: it may have been acted on.
    let mut ambiguous = false;
    // A refusal kept while another attempt may still answer.
    let mut refusal: Option<hyper::Response<hyper::body::Incoming>> = None;
    // When the next instance is tried: at once for the first.
    let mut next_at = Some(Instant::now());
    // The deadline passed with attempts still under way: they timed out, none was overtaken.
    let mut timed_out = false;
    let outcome = loop {
        if next_at.is_some_and(|at| at <= Instant::now()) {
            next_at = None;
            if let Some(instance) = untried.next() {
                let n = launched.len();
                if n > 0 && !policy.withdraw() {
                    tracing::warn!(%service, "retry budget spent; not trying another instance");
                    untried = Vec::new().into_iter().peekable();
                } else {
                    if Instant::now() >= deadline {
                        timed_out = true;
                        break Err(GatewayError::Timeout(service));
                    }
                    // The path and query come from a request that parsed, and the base URL was
                    // checked at start; `Uri`'s parser is all that runs here.
                    let uri = match format!("{}{path_and_query}", instance.url).parse::<http::Uri>()
                    {
                        Ok(uri) => uri,
                        Err(e) => {
                            break Err(GatewayError::Internal(anyhow::anyhow!(
                                "cannot forward to {}{path_and_query}: {e}",
                                instance.url
                            )));
                        }
                    };
                    let span = attempt_span(service, &method, &instance, &uri, n);
                    let mut request = http::Request::new(Full::new(body.clone()));
                    *request.method_mut() = method.clone();
                    *request.uri_mut() = uri;
                    *request.headers_mut() = headers.clone();
                    if platform::telemetry::exporting() {
                        platform::telemetry::inject_http(&span.context(), request.headers_mut());
                    }
                    if n > 0 {
                        metrics::counter!(crate::metrics::UPSTREAM_RETRIES, "service" => service.name())
                            .increment(1);
                    }
                    // No timer of its own: the loop's wait ends at the deadline and leaves it.
                    let request = core.client.request(request).instrument(span.clone());
                    in_flight.push(async move { (n, request.await) });
                    launched.push(Launched {
                        instance,
                        span,
                        started: Instant::now(),
                        finished: false,
                    });
                    if repeatable && untried.peek().is_some() {
                        next_at = Some(Instant::now() + core.attempt_timeout);
                    }
                }
            }
        }
        if in_flight.is_empty() && next_at.is_none() {
            break match refusal.take() {
                Some(response) => Ok(response),
                None => Err(failure),
            };
        }
        let wake = next_at.unwrap_or(deadline).min(deadline);
        let (n, sent) = tokio::select! {
            Some(done) = futures::StreamExt::next(&mut in_flight) => done,
            () = tokio::time::sleep_until(wake) => {
                if Instant::now() >= deadline {
                    timed_out = true;
                    break Err(GatewayError::Timeout(service));
                }
                // A hedge: the latest attempt has had its share without an answer. An instance
                // that answers nobody (frozen, or its link cut silently) is tried last for a
                // while; one that answers others is only slow, and stays in turn.
                if let Some(latest) = launched.last().filter(|l| !l.finished) {
                    upstream.eject_if_silent(&latest.instance, 2 * core.attempt_timeout);
                    tracing::warn!(upstream = %latest.instance.url,
                        "no answer within the attempt timeout; the request is safe to repeat, also trying the next instance");
                }
                continue;
            }
        };
        let attempt = &mut launched[n];
        attempt.finished = true;
        let outcome = match &sent {
            Ok(r) => Outcome::Status(r.status().as_u16()),
            Err(e) if e.is_connect() => Outcome::ConnectError,
            Err(_) => Outcome::Error,
        };
        record_attempt(
            &attempt.instance,
            &attempt.span,
            outcome,
            attempt.started.elapsed(),
        );
        let instance = attempt.instance.clone();
        let base = instance.url.as_str();
        match sent {
            Ok(response) => {
                upstream.note_answer(&instance);
                if !matches!(response.status().as_u16(), 503 | 429) {
                    tracing::Span::current().record("upstream", base);
                    break Ok(response);
                }
                // Shed (503 or 429): another attempt still under way may yet do the work.
                tracing::Span::current().record("upstream", base);
                refusal.get_or_insert(response);
                if !in_flight.is_empty() {
                    continue;
                }
                // A refusal says nothing about whether an attempt that broke after sending placed
                // the request; passing it on would tell the client it was not done. Only the
                // timeout is true.
                if ambiguous && !matches!(method, Method::GET | Method::HEAD) {
                    tracing::warn!(
                        upstream = base,
                        "an earlier attempt may have been acted on and this one was refused; answering 504"
                    );
                    break Err(GatewayError::Timeout(service));
                }
                next_at = None;
            }
            // A connect timeout is a connect error too: nothing was sent, it is safe to go on.
            Err(e) if e.is_connect() => {
                upstream.eject(&instance);
                failure = GatewayError::Unreachable(service);
                tracing::warn!(upstream = base, error = %chain(&e), "cannot connect; trying the next instance");
                if untried.peek().is_some() {
                    next_at = Some(Instant::now() + policy.backoff(attempt_number(launched.len())));
                }
            }
            Err(e) if repeatable => {
                upstream.eject(&instance);
                ambiguous = true;
                failure = GatewayError::BadUpstream(service);
                tracing::warn!(upstream = base, error = %chain(&e), "upstream call failed; the request is safe to repeat, trying the next instance");
                if untried.peek().is_some() {
                    next_at = Some(Instant::now() + policy.backoff(attempt_number(launched.len())));
                }
            }
            Err(e) => {
                upstream.eject(&instance);
                tracing::warn!(upstream = base, error = %chain(&e), "upstream call failed");
                break Err(GatewayError::BadUpstream(service));
            }
        }
    };
    // Attempts still under way are cancelled by dropping them; they are counted as such, or as
    // timed out when the deadline is what ended them.
    let left = if timed_out {
        tracing::warn!(%service, "upstream timed out");
        Outcome::Timeout
    } else {
        Outcome::Cancelled
    };
    for attempt in launched.iter().filter(|a| !a.finished) {
        record_attempt(
            &attempt.instance,
            &attempt.span,
            left,
            attempt.started.elapsed(),
        );
    }
    match outcome {
        Ok(response) => relay(service, response, deadline).await,
        Err(err) => Err(err),
    }
}

fn attempt_number(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

/// The client span of one attempt, named and attributed as the semantic conventions say.
fn attempt_span(
    service: Service,
    method: &Method,
    instance: &Instance,
    url: &http::Uri,
    attempt: usize,
) -> tracing::Span {
    let span = tracing::info_span!(
        target: platform::telemetry::TRACE_ONLY,
        "http.client",
        otel.name = %method,
        otel.kind = "client",
        otel.status_code = tracing::field::Empty,
        http.request.method = %method,
        server.address = %instance.address,
        server.port = instance.port,
        url.full = %url,
        peer.service = service.name(),
        http.response.status_code = tracing::field::Empty,
        http.request.resend_count = tracing::field::Empty,
        error.type = tracing::field::Empty,
    );
    if attempt > 0 {
        span.record("http.request.resend_count", attempt);
    }
    span
}

/// Closes one attempt's span and counts it.
fn record_attempt(instance: &Instance, span: &tracing::Span, outcome: Outcome, took: Duration) {
    if !span.is_disabled() {
        match outcome {
            Outcome::Status(status) => {
                span.record("http.response.status_code", status);
                if status >= 500 {
                    span.record("otel.status_code", "ERROR");
                }
            }
            other => {
                span.record("error.type", other.label());
                span.record("otel.status_code", "ERROR");
            }
        }
    }
    instance.series.record(outcome, took);
}

async fn relay(
    service: Service,
    response: hyper::Response<hyper::body::Incoming>,
    deadline: Instant,
) -> Result<Response, GatewayError> {
    let (parts, body) = response.into_parts();
    let mut headers = HeaderMap::new();
    for name in RETURNED_RESPONSE_HEADERS {
        if let Some(value) = parts.headers.get(&name) {
            headers.insert(name, value.clone());
        }
    }
    let body = match tokio::time::timeout_at(deadline, body.collect()).await {
        Ok(Ok(body)) => body.to_bytes(),
        Ok(Err(e)) => {
            tracing::warn!(error = %chain(&e), "reading the upstream body failed");
            return Err(GatewayError::BadUpstream(service));
        }
        Err(_) => return Err(GatewayError::Timeout(service)),
    };
    Ok((parts.status, headers, Body::from(body)).into_response())
}

/// hyper's `Display` stops at "client error (Connect)"; the cause is further down.
fn chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        out.push_str(": ");
        out.push_str(&cause.to_string());
        source = cause.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_api_prefix_is_stripped_and_the_query_kept() {
        let req = Request::builder()
            .uri("/api/admin/payments?order_id=o-1&x=%20")
            .body(())
            .unwrap();
        let (parts, ()) = req.into_parts();
        assert_eq!(
            upstream_path_and_query(&parts),
            "/admin/payments?order_id=o-1&x=%20"
        );
    }

    #[test]
    fn the_users_authorization_never_leaves_the_edge() {
        let mut incoming = HeaderMap::new();
        incoming.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Bearer user"),
        );
        incoming.insert(header::COOKIE, HeaderValue::from_static("s=1"));
        incoming.insert(IDEMPOTENCY_KEY, HeaderValue::from_static("k-1"));
        let out = forwarded_headers(&incoming, HeaderValue::from_static("Bearer svc"));
        assert_eq!(out.get(header::AUTHORIZATION).unwrap(), "Bearer svc");
        assert_eq!(out.get(IDEMPOTENCY_KEY).unwrap(), "k-1");
        assert!(out.get(header::COOKIE).is_none());
    }
}
