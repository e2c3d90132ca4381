//! Prometheus metrics: one recorder per process, installed by [`install`] (from
//! `telemetry::init`), exposed on `GET /metrics` by every service and the gateway (added by
//! [`crate::http::with_common_layers`]).
//!
//! Metrics are recorded where the work happens with the `metrics` macros; this module installs
//! `metrics-exporter-prometheus`, describes every metric the platform records (so each family
//! has its `# HELP` and unit), and holds the names, so the services, the dashboards and their
//! test agree on them. Names follow Prometheus conventions: base units (`_seconds`), `_total`
//! for counters, one name per meaning with labels for the rest.
//!
//! | metric | type | labels | what |
//! |---|---|---|---|
//! | `http_server_request_duration_seconds` | histogram | `method`, `route`, `status` | every HTTP request served (RED: rate, errors by status, duration) |
//! | `outbox_pending_messages` | gauge | | outbox rows not yet published (the service's database: every instance reports the same figure) |
//! | `outbox_oldest_pending_age_seconds` | gauge | | age of the oldest unpublished row |
//! | `outbox_published_total` | counter | `topic` | rows this instance published |
//! | `outbox_publish_failures_total` | counter | `topic` | publishes that failed and will be retried |
//! | `outbox_publish_duration_seconds` | histogram | `topic` | from the send to the broker's acknowledgement |
//! | `outbox_wait_duration_seconds` | histogram | `topic` | from the row's commit to its publication |
//! | `kafka_consumer_messages_total` | counter | `group`, `topic`, `outcome` | messages consumed: `handled` or `dead_lettered` |
//! | `kafka_consumer_handle_duration_seconds` | histogram | `group`, `topic` | one message, retries included |
//! | `kafka_consumer_transit_duration_seconds` | histogram | `group`, `topic` | from the producer's timestamp to receipt |
//! | `kafka_consumer_retries_total` | counter | `group`, `topic` | handler attempts that failed and were retried |
//! | `kafka_consumer_dead_letters_total` | counter | `group`, `topic` | messages moved to the dead-letter topic |
//! | `kafka_consumer_lag_messages` | gauge | `group`, `topic`, `partition` | messages behind the partition's end (librdkafka's statistics) |
//! | `http_server_refused_total` | counter | `reason` (`concurrency`, `timeout`) | requests a service answered 503 for its own limits (`MAX_CONCURRENT_REQUESTS`, `REQUEST_TIMEOUT_MS`) |
//! | `http_server_in_flight_requests` | gauge | | API requests in progress (health and metrics excluded) |
//! | `db_pool_connections` | gauge | `state` (`idle`, `in_use`) | the connection pool |
//! | `db_pool_max_connections` | gauge | | the pool's size limit |
//!
//! The gateway and the order service describe their own (`gateway_upstream_*`, `saga_*`).

use std::sync::OnceLock;
use std::time::Duration;

use axum::extract::{MatchedPath, Request};
use axum::http::{HeaderValue, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use metrics::Unit;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

pub const HTTP_SERVER_DURATION: &str = "http_server_request_duration_seconds";
pub const OUTBOX_PENDING: &str = "outbox_pending_messages";
pub const OUTBOX_OLDEST_AGE: &str = "outbox_oldest_pending_age_seconds";
pub const OUTBOX_PUBLISHED: &str = "outbox_published_total";
pub const OUTBOX_PUBLISH_FAILURES: &str = "outbox_publish_failures_total";
pub const OUTBOX_PUBLISH_DURATION: &str = "outbox_publish_duration_seconds";
pub const OUTBOX_WAIT: &str = "outbox_wait_duration_seconds";
pub const CONSUMER_MESSAGES: &str = "kafka_consumer_messages_total";
pub const CONSUMER_HANDLE_DURATION: &str = "kafka_consumer_handle_duration_seconds";
pub const CONSUMER_TRANSIT: &str = "kafka_consumer_transit_duration_seconds";
pub const CONSUMER_RETRIES: &str = "kafka_consumer_retries_total";
pub const CONSUMER_DEAD_LETTERS: &str = "kafka_consumer_dead_letters_total";
pub const CONSUMER_LAG: &str = "kafka_consumer_lag_messages";
pub const HTTP_SERVER_REFUSED: &str = "http_server_refused_total";
pub const HTTP_SERVER_IN_FLIGHT: &str = "http_server_in_flight_requests";
pub const DB_POOL_CONNECTIONS: &str = "db_pool_connections";
pub const DB_POOL_MAX: &str = "db_pool_max_connections";

/// Histogram buckets, in seconds: from half a millisecond (a local SQLite statement) to half a
/// minute (a saga that waited out its step timeouts).
pub const BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// The content type of the text exposition format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

/// Installs the process's Prometheus recorder (idempotent) and returns its handle; `None` when
/// another recorder was installed first (the metrics then go there).
pub fn install() -> Option<&'static PrometheusHandle> {
    HANDLE
        .get_or_init(|| {
            let handle = PrometheusBuilder::new()
                .set_buckets(BUCKETS)
                .ok()?
                .install_recorder()
                .ok()?;
            describe();
            // Histograms keep samples until they are drained; a process nobody scrapes must not
            // grow for that.
            let upkeep = handle.clone();
            let _ = std::thread::Builder::new()
                .name("metrics-upkeep".into())
                .spawn(move || {
                    loop {
                        std::thread::sleep(Duration::from_secs(5));
                        upkeep.run_upkeep();
                    }
                });
            Some(handle)
        })
        .as_ref()
}

fn describe() {
    use metrics::{describe_counter, describe_gauge, describe_histogram};
    describe_counter!(
        HTTP_SERVER_REFUSED,
        Unit::Count,
        "Requests answered 503 by the service's own limits: too many in flight, or not done within the request timeout."
    );
    describe_gauge!(
        HTTP_SERVER_IN_FLIGHT,
        "API requests in progress (health and metrics excluded)."
    );
    describe_histogram!(
        HTTP_SERVER_DURATION,
        Unit::Seconds,
        "HTTP requests served, by method, route template and status code."
    );
    describe_gauge!(
        OUTBOX_PENDING,
        Unit::Count,
        "Outbox rows not yet published to Kafka (the service's database)."
    );
    describe_gauge!(
        OUTBOX_OLDEST_AGE,
        Unit::Seconds,
        "Age of the oldest outbox row not yet published; 0 when none is pending."
    );
    describe_counter!(
        OUTBOX_PUBLISHED,
        Unit::Count,
        "Outbox rows this instance published, by topic."
    );
    describe_counter!(
        OUTBOX_PUBLISH_FAILURES,
        Unit::Count,
        "Outbox publishes that failed and will be retried, by topic."
    );
    describe_histogram!(
        OUTBOX_PUBLISH_DURATION,
        Unit::Seconds,
        "From sending an outbox row to the broker's acknowledgement, by topic."
    );
    describe_histogram!(
        OUTBOX_WAIT,
        Unit::Seconds,
        "From an outbox row's commit to its publication, by topic."
    );
    describe_counter!(
        CONSUMER_MESSAGES,
        Unit::Count,
        "Messages consumed, by consumer group, topic and outcome (handled, dead_lettered)."
    );
    describe_histogram!(
        CONSUMER_HANDLE_DURATION,
        Unit::Seconds,
        "Handling one message, retries included, by consumer group and topic."
    );
    describe_histogram!(
        CONSUMER_TRANSIT,
        Unit::Seconds,
        "From a message's producer timestamp to its receipt, by consumer group and topic."
    );
    describe_counter!(
        CONSUMER_RETRIES,
        Unit::Count,
        "Handler attempts that failed and were retried, by consumer group and topic."
    );
    describe_counter!(
        CONSUMER_DEAD_LETTERS,
        Unit::Count,
        "Messages moved to the dead-letter topic, by consumer group and source topic."
    );
    describe_gauge!(
        CONSUMER_LAG,
        Unit::Count,
        "Messages between the consumer's position and the partition's end."
    );
    describe_gauge!(
        DB_POOL_CONNECTIONS,
        Unit::Count,
        "Database pool connections, by state (idle, in_use)."
    );
    describe_gauge!(
        DB_POOL_MAX,
        Unit::Count,
        "The most connections the database pool opens."
    );
}

/// The current metrics in the text exposition format (empty when no recorder of ours is
/// installed).
pub fn render() -> String {
    install().map(PrometheusHandle::render).unwrap_or_default()
}

/// `GET /metrics`.
pub async fn handler() -> Response {
    let mut response = render().into_response();
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(CONTENT_TYPE));
    response
}

/// Middleware recording every request in [`HTTP_SERVER_DURATION`], labelled with the route
/// template (`/orders/{id}`, never the raw path, so ids cannot blow up the label set).
pub async fn record_http(request: Request, next: Next) -> Response {
    let started = std::time::Instant::now();
    let method = request.method().as_str().to_string();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_string(), |p| p.as_str().to_string());
    let response = next.run(request).await;
    metrics::histogram!(
        HTTP_SERVER_DURATION,
        "method" => method,
        "route" => route,
        "status" => response.status().as_u16().to_string(),
    )
    .record(started.elapsed().as_secs_f64());
    response
}
