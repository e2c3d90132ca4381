//! Logs, traces and metrics: what every process installs once at start-up ([`init`]).
//!
//! - **Logs** through `tracing`: JSON lines on stderr by default (`LOG_FORMAT=json`), readable
//!   text with `LOG_FORMAT=pretty`. `RUST_LOG` filters (default `info`). Every line carries the
//!   service and instance, and, inside a traced span, `trace_id` and `span_id`.
//! - **Traces** through `tracing-opentelemetry` into the OpenTelemetry SDK, exported with
//!   OTLP/HTTP (protobuf) by a batch processor, configured by the standard variables:
//!   `OTEL_EXPORTER_OTLP_ENDPOINT` (or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`) turns export on;
//!   `OTEL_SDK_DISABLED=true` or `OTEL_TRACES_EXPORTER=none` turn it off; `OTEL_SERVICE_NAME`,
//!   `OTEL_RESOURCE_ATTRIBUTES`, `OTEL_TRACES_SAMPLER(_ARG)`, `OTEL_BSP_*` and
//!   `OTEL_EXPORTER_OTLP_{HEADERS,TIMEOUT}` work as the specification says. With none of them
//!   set no span is created at all, so tracing costs nothing (the W3C `traceparent` a client
//!   sends is still passed on by the gateway, untouched).
//! - **Database spans** come from sqlx's own per-statement events (target `sqlx::query`), turned
//!   into client spans with the statement's measured duration by [`DbSpans`], so no query needs
//!   instrumenting by hand.
//! - **Metrics**: [`crate::metrics::install`] (Prometheus, `GET /metrics`).
//!
//! W3C trace context crosses process boundaries through [`extract_http`]/[`inject_http`] and
//! the outbox's `traceparent` column ([`current_traceparent`], [`context_from_traceparent`]);
//! the Kafka side is in `messaging`.

use std::collections::HashMap;
use std::sync::OnceLock;
use std::time::{Duration, SystemTime};

use opentelemetry::propagation::{TextMapPropagator, text_map_propagator::FieldIter};
use opentelemetry::trace::{
    Span as _, SpanKind, TraceContextExt, Tracer as _, TracerProvider as _,
};
use opentelemetry::{Context, KeyValue, global};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::filter::{FilterExt, FilterFn, Targets};
use tracing_subscriber::layer::Context as LayerContext;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::{EnvFilter, Layer, fmt, prelude::*};

use crate::config::ConfigError;

pub const OTEL_SDK_DISABLED: &str = "OTEL_SDK_DISABLED";
pub const OTEL_TRACES_EXPORTER: &str = "OTEL_TRACES_EXPORTER";
pub const OTEL_EXPORTER_OTLP_ENDPOINT: &str = "OTEL_EXPORTER_OTLP_ENDPOINT";
pub const OTEL_EXPORTER_OTLP_TRACES_ENDPOINT: &str = "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT";
pub const OTEL_EXPORTER_OTLP_PROTOCOL: &str = "OTEL_EXPORTER_OTLP_PROTOCOL";
pub const OTEL_SERVICE_NAME: &str = "OTEL_SERVICE_NAME";
pub const OTEL_RESOURCE_ATTRIBUTES: &str = "OTEL_RESOURCE_ATTRIBUTES";

/// The instrumentation scope of every span the platform makes.
const SCOPE: &str = "reference-system";

/// The target of spans made only for the trace (a client call's span, with its URL, peer and
/// status), which the logs never show: no event is logged inside them, so the JSON log layer
/// formatting their fields into each line's `span` was work for nothing (4 % of the gateway's CPU
/// per forwarded read, for its attempt spans). With traces not exported, nothing enables them
/// and they cost nothing. `tracing::info_span!(target: TRACE_ONLY, ...)`.
pub const TRACE_ONLY: &str = "trace_only";

/// Whether spans are exported: decided once by [`init`].
static EXPORTING: OnceLock<bool> = OnceLock::new();

/// Whether this process exports traces (and so creates spans worth propagating).
pub fn exporting() -> bool {
    EXPORTING.get().copied().unwrap_or(false)
}

/// Where traces go, from the `OTEL_*` variables.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TraceExport {
    /// Nothing set, or export switched off.
    Off,
    /// OTLP/HTTP protobuf to this endpoint (the variable's value, as given).
    Otlp { endpoint: String },
}

impl TraceExport {
    /// Reads the standard variables; a value that cannot work is a [`ConfigError`] naming it.
    pub fn from_env() -> Result<Self, ConfigError> {
        let var = |name| crate::config::optional(name);
        if var(OTEL_SDK_DISABLED).is_some_and(|v| v.trim().eq_ignore_ascii_case("true")) {
            return Ok(Self::Off);
        }
        match var(OTEL_TRACES_EXPORTER).as_deref().map(str::trim) {
            None | Some("otlp") => {}
            Some("none") => return Ok(Self::Off),
            Some(other) => {
                return Err(ConfigError::Invalid {
                    var: OTEL_TRACES_EXPORTER,
                    value: other.to_string(),
                    reason: "this build exports traces with otlp only (or none)".into(),
                });
            }
        }
        if let Some(protocol) = var(OTEL_EXPORTER_OTLP_PROTOCOL)
            && protocol.trim() != "http/protobuf"
        {
            return Err(ConfigError::Invalid {
                var: OTEL_EXPORTER_OTLP_PROTOCOL,
                value: protocol,
                reason: "this build speaks http/protobuf only".into(),
            });
        }
        let (name, endpoint) = match (
            var(OTEL_EXPORTER_OTLP_TRACES_ENDPOINT),
            var(OTEL_EXPORTER_OTLP_ENDPOINT),
        ) {
            (Some(e), _) => (OTEL_EXPORTER_OTLP_TRACES_ENDPOINT, e),
            (None, Some(e)) => (OTEL_EXPORTER_OTLP_ENDPOINT, e),
            (None, None) => return Ok(Self::Off),
        };
        let endpoint = endpoint.trim().to_string();
        if let Err(reason) = crate::config::plain_http_url(&endpoint) {
            return Err(ConfigError::Invalid {
                var: name,
                value: endpoint,
                reason,
            });
        }
        Ok(Self::Otlp { endpoint })
    }
}

/// What [`init`] installed; dropping it (or [`Telemetry::shutdown`]) flushes the spans still
/// in the batch. Drop it outside the async runtime: the exporter's HTTP client is a blocking
/// one with its own thread.
#[must_use = "dropping the guard flushes and stops trace export"]
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

impl Telemetry {
    /// Whether spans are exported.
    pub fn exporting(&self) -> bool {
        self.provider.is_some()
    }

    /// Flushes the spans still buffered and stops the exporter. Idempotent.
    pub fn shutdown(&mut self) {
        if let Some(provider) = self.provider.take()
            && let Err(e) = provider.shutdown()
        {
            eprintln!("flushing traces at exit failed: {e}");
        }
    }
}

impl Drop for Telemetry {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// Installs logs, traces and the metrics recorder for `service` (`order`, `gateway`, ...).
/// Calling it twice is harmless (the second call installs nothing and returns an inert guard),
/// which keeps tests that build several apps in one process simple. Fails only on an `OTEL_*`
/// variable that cannot work; binaries exit 64 on it like on any bad configuration.
pub fn init(service: &str, instance_id: &str) -> Result<Telemetry, ConfigError> {
    let export = TraceExport::from_env()?;
    crate::metrics::install();
    let provider = match &export {
        TraceExport::Off => None,
        TraceExport::Otlp { endpoint } => Some(build_provider(service, instance_id, endpoint)?),
    };
    let log_filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new("info,sqlx=warn,rdkafka=warn,tower_http=info"));
    let pretty = matches!(
        std::env::var(crate::config::LOG_FORMAT).as_deref(),
        Ok("pretty" | "text")
    );
    let logs = if pretty {
        fmt::layer()
            .with_writer(std::io::stderr)
            .with_target(false)
            .with_filter(log_filter.and(not_trace_only()))
            .boxed()
    } else {
        json_logs(service, instance_id)
            .with_filter(log_filter.and(not_trace_only()))
            .boxed()
    };
    let spans = provider.as_ref().map(|p| {
        tracing_opentelemetry::layer()
            .with_tracer(p.tracer(SCOPE))
            .with_location(false)
            .with_threads(false)
            .with_target(false)
            .with_level(false)
            .with_filter(span_filter())
    });
    let db = provider.as_ref().map(|_| {
        DbSpans::from_env().with_filter(Targets::new().with_target("sqlx::query", Level::DEBUG))
    });
    let installed = tracing_subscriber::registry()
        .with(spans)
        .with(db)
        .with(logs)
        .try_init()
        .is_ok();
    if !installed {
        // Another init won the race; its provider (if any) is the one in use.
        return Ok(Telemetry { provider: None });
    }
    let exporting = provider.is_some();
    let _ = EXPORTING.set(exporting);
    if let Some(p) = &provider {
        global::set_tracer_provider(p.clone());
        global::set_text_map_propagator(TraceContextPropagator::new());
    }
    match &export {
        TraceExport::Off => tracing::info!(
            service,
            instance = instance_id,
            "logging initialised; traces are not exported (no OTEL_EXPORTER_OTLP_ENDPOINT)"
        ),
        TraceExport::Otlp { endpoint } => tracing::info!(
            service,
            instance = instance_id,
            endpoint,
            "logging initialised; traces exported with OTLP/HTTP"
        ),
    }
    Ok(Telemetry { provider })
}

fn build_provider(
    service: &str,
    instance_id: &str,
    endpoint: &str,
) -> Result<SdkTracerProvider, ConfigError> {
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .build()
        .map_err(|e| ConfigError::Invalid {
            var: OTEL_EXPORTER_OTLP_ENDPOINT,
            value: endpoint.to_string(),
            reason: format!("cannot build the OTLP exporter: {e}"),
        })?;
    let named_by_env = crate::config::optional(OTEL_SERVICE_NAME).is_some()
        || crate::config::optional(OTEL_RESOURCE_ATTRIBUTES).is_some_and(|a| {
            a.split(',')
                .any(|kv| kv.trim().starts_with("service.name="))
        });
    let mut resource = Resource::builder().with_attribute(KeyValue::new(
        "service.instance.id",
        instance_id.to_string(),
    ));
    if !named_by_env {
        resource = resource.with_service_name(service.to_string());
    }
    Ok(SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(resource.build())
        .build())
}

/// Which `tracing` spans become OpenTelemetry spans: ours at INFO and above; the HTTP and Kafka
/// libraries' internals stay out.
/// The logs' view: everything but the spans made only for the trace ([`TRACE_ONLY`]).
fn not_trace_only() -> FilterFn<impl Fn(&tracing::Metadata<'_>) -> bool> {
    tracing_subscriber::filter::filter_fn(|meta| meta.target() != TRACE_ONLY)
}

fn span_filter() -> Targets {
    Targets::new()
        .with_default(Level::INFO)
        .with_target("h2", Level::WARN)
        .with_target("hyper", Level::WARN)
        .with_target("hyper_util", Level::WARN)
        .with_target("reqwest", Level::WARN)
        .with_target("tower", Level::WARN)
        .with_target("sqlx", Level::WARN)
        .with_target("rdkafka", Level::WARN)
}

/// One JSON object per line: time, level, service and instance, target, the event's fields
/// flattened, the current span's fields under `span`, and `trace_id`/`span_id` when the span
/// is traced.
fn json_logs<S>(
    service: &str,
    instance_id: &str,
) -> json_subscriber::JsonLayer<S, fn() -> std::io::Stderr>
where
    S: Subscriber + for<'lookup> LookupSpan<'lookup>,
{
    let mut layer = json_subscriber::JsonLayer::stderr();
    layer.add_static_field("service", serde_json::Value::from(service));
    layer.add_static_field("instance", serde_json::Value::from(instance_id));
    layer
        .with_timer("timestamp", fmt::time::SystemTime)
        .with_level("level")
        .with_target("target")
        .with_flattened_event()
        .with_current_span("span");
    layer.add_from_extension::<tracing_opentelemetry::OtelData, _, _>("trace_id", |d| {
        d.trace_id().map(|t| t.to_string())
    });
    layer.add_from_extension::<tracing_opentelemetry::OtelData, _, _>("span_id", |d| {
        d.span_id().map(|s| s.to_string())
    });
    layer
}

/// Turns sqlx's per-statement events into database client spans.
///
/// sqlx measures every statement and reports it as an event (`sqlx::query`, DEBUG) with the SQL,
/// the rows and the elapsed time, from the thread that ran it and inside the caller's span (its
/// SQLite worker enters the caller's span). This layer makes each a span that ends now and began
/// `elapsed` ago, child of the current OpenTelemetry context, with the `db.*` attributes of the
/// semantic conventions. Written here because no crate bridges sqlx's events to spans.
pub struct DbSpans {
    system: &'static str,
}

impl DbSpans {
    /// The database system from `DATABASE_URL` (`sqlite` or `postgresql`).
    pub fn from_env() -> Self {
        let url = crate::config::optional(crate::config::DATABASE_URL).unwrap_or_default();
        Self {
            system: if url.starts_with("postgres") {
                "postgresql"
            } else {
                "sqlite"
            },
        }
    }
}

#[derive(Default)]
struct StatementFields {
    summary: String,
    statement: String,
    rows_returned: Option<i64>,
    elapsed_secs: Option<f64>,
}

impl tracing::field::Visit for StatementFields {
    fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
        match field.name() {
            "summary" => self.summary = value.to_string(),
            "db.statement" => self.statement = value.to_string(),
            _ => {}
        }
    }

    fn record_f64(&mut self, field: &tracing::field::Field, value: f64) {
        if field.name() == "elapsed_secs" {
            self.elapsed_secs = Some(value);
        }
    }

    fn record_u64(&mut self, field: &tracing::field::Field, value: u64) {
        if field.name() == "rows_returned" {
            self.rows_returned = i64::try_from(value).ok();
        }
    }

    fn record_debug(&mut self, _field: &tracing::field::Field, _value: &dyn std::fmt::Debug) {}
}

/// The longest statement text kept on a span.
const MAX_QUERY_TEXT: usize = 2_000;

impl<S: Subscriber> Layer<S> for DbSpans {
    fn on_event(&self, event: &Event<'_>, _ctx: LayerContext<'_, S>) {
        let mut fields = StatementFields::default();
        event.record(&mut fields);
        let Some(elapsed) = fields
            .elapsed_secs
            .and_then(|s| Duration::try_from_secs_f64(s).ok())
        else {
            return;
        };
        let parent = Context::current();
        let traced = parent.span().span_context().is_valid();
        if !traced || !parent.span().span_context().is_sampled() {
            // A statement outside any traced work (a background poll) would start a trace of
            // its own for nothing; one inside a trace left out of the sample would be dropped
            // anyway, after the work of building it.
            return;
        }
        let text = if fields.statement.trim().is_empty() {
            fields.summary.trim_end_matches(" …").to_string()
        } else {
            fields.statement.trim().to_string()
        };
        let (operation, collection) = statement_name(&text);
        let name = match &collection {
            Some(c) => format!("{operation} {c}"),
            None => operation.clone(),
        };
        let end = SystemTime::now();
        let mut attributes = vec![
            KeyValue::new("db.system.name", self.system),
            KeyValue::new("db.operation.name", operation),
            KeyValue::new("db.query.text", truncate(&text, MAX_QUERY_TEXT)),
        ];
        if let Some(c) = collection {
            attributes.push(KeyValue::new("db.collection.name", c));
        }
        if let Some(rows) = fields.rows_returned {
            attributes.push(KeyValue::new("db.response.returned_rows", rows));
        }
        let tracer = global::tracer(SCOPE);
        let mut span = tracer
            .span_builder(name)
            .with_kind(SpanKind::Client)
            .with_start_time(end.checked_sub(elapsed).unwrap_or(end))
            .with_attributes(attributes)
            .start_with_context(&tracer, &parent);
        span.end_with_timestamp(end);
    }
}

fn truncate(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        Some((i, _)) => format!("{}…", &text[..i]),
        None => text.to_string(),
    }
}

/// The operation (`SELECT`, `INSERT`, ...) and, when it is plain to see, the table a statement
/// works on: what the semantic conventions call `db.operation.name` and `db.collection.name`.
pub fn statement_name(sql: &str) -> (String, Option<String>) {
    let words: Vec<&str> = sql.split_whitespace().collect();
    let Some(first) = words.first() else {
        return ("SQL".into(), None);
    };
    let operation = first.to_ascii_uppercase();
    let after = |keyword: &str| {
        words
            .iter()
            .position(|w| w.eq_ignore_ascii_case(keyword))
            .and_then(|i| words.get(i + 1))
            .map(|t| {
                t.trim_matches(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                    .to_string()
            })
            .filter(|t| !t.is_empty() && !t.eq_ignore_ascii_case("select"))
    };
    let collection = match operation.as_str() {
        "SELECT" | "DELETE" => after("from"),
        "INSERT" => after("into"),
        "UPDATE" => words.get(1).map(|t| t.to_string()),
        _ => None,
    };
    (operation, collection)
}

/// The trace context a client sent in the request headers (`traceparent`, `tracestate`).
pub fn extract_http(headers: &axum::http::HeaderMap) -> Context {
    global::get_text_map_propagator(|p| p.extract(&opentelemetry_http::HeaderExtractor(headers)))
}

/// Writes `cx` into outgoing request headers.
pub fn inject_http(cx: &Context, headers: &mut axum::http::HeaderMap) {
    global::get_text_map_propagator(|p| {
        p.inject_context(cx, &mut opentelemetry_http::HeaderInjector(headers))
    });
}

/// The current context as a W3C `traceparent`, for a row that outlives the request (the
/// outbox, the saga); `None` when nothing is traced.
pub fn current_traceparent() -> Option<String> {
    if !exporting() {
        return None;
    }
    let cx = Context::current();
    if !cx.span().span_context().is_valid() {
        return None;
    }
    let mut carrier = HashMap::new();
    TraceContextPropagator::new().inject_context(&cx, &mut carrier);
    carrier.remove("traceparent")
}

/// The context a stored `traceparent` stands for (an empty context when it does not parse).
pub fn context_from_traceparent(traceparent: &str) -> Context {
    let carrier = HashMap::from([("traceparent".to_string(), traceparent.to_string())]);
    TraceContextPropagator::new().extract(&carrier)
}

/// Records a span whose start and end are already known (time in the outbox, in Kafka), as a
/// child of `parent`. Does nothing when `parent` is not traced.
pub fn record_span(
    name: String,
    kind: SpanKind,
    parent: &Context,
    start: SystemTime,
    end: SystemTime,
    attributes: Vec<KeyValue>,
) {
    if !parent.span().span_context().is_valid() {
        return;
    }
    let tracer = global::tracer(SCOPE);
    let mut span = tracer
        .span_builder(name)
        .with_kind(kind)
        .with_start_time(start.min(end))
        .with_attributes(attributes)
        .start_with_context(&tracer, parent);
    span.end_with_timestamp(end);
}

/// `propagation::Injector`/`Extractor` over a plain string map: used for Kafka headers, which
/// `messaging` copies in and out.
#[derive(Debug, Default)]
pub struct Carrier(pub HashMap<String, String>);

impl opentelemetry::propagation::Injector for Carrier {
    fn set(&mut self, key: &str, value: String) {
        self.0.insert(key.to_string(), value);
    }
}

impl opentelemetry::propagation::Extractor for Carrier {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).map(String::as_str)
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(String::as_str).collect()
    }
}

/// The propagator's header names (`traceparent`, `tracestate`).
pub fn propagation_fields() -> Vec<String> {
    let propagator = TraceContextPropagator::new();
    let fields: FieldIter<'_> = propagator.fields();
    fields.map(str::to_string).collect()
}

/// Injects `cx` into a [`Carrier`] with the global propagator.
pub fn inject_carrier(cx: &Context) -> Carrier {
    let mut carrier = Carrier::default();
    global::get_text_map_propagator(|p| p.inject_context(cx, &mut carrier));
    carrier
}

/// Extracts a context from a [`Carrier`] with the global propagator.
pub fn extract_carrier(carrier: &Carrier) -> Context {
    global::get_text_map_propagator(|p| p.extract(carrier))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statements_are_named_by_operation_and_table() {
        assert_eq!(
            statement_name("SELECT a, b FROM orders o JOIN sagas s ON x"),
            ("SELECT".into(), Some("orders".into()))
        );
        assert_eq!(
            statement_name("insert into outbox (a) values ($1)"),
            ("INSERT".into(), Some("outbox".into()))
        );
        assert_eq!(
            statement_name("UPDATE sagas SET step = $1"),
            ("UPDATE".into(), Some("sagas".into()))
        );
        assert_eq!(statement_name("BEGIN IMMEDIATE"), ("BEGIN".into(), None));
        assert_eq!(statement_name(""), ("SQL".into(), None));
    }

    #[test]
    fn a_stored_traceparent_round_trips_to_the_same_context() {
        let tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let cx = context_from_traceparent(tp);
        let sc = cx.span().span_context().clone();
        assert!(sc.is_valid());
        assert_eq!(
            sc.trace_id().to_string(),
            "4bf92f3577b34da6a3ce929d0e0e4736"
        );
        assert_eq!(sc.span_id().to_string(), "00f067aa0ba902b7");
        assert!(sc.is_sampled());
        assert!(
            !context_from_traceparent("garbage")
                .span()
                .span_context()
                .is_valid()
        );
    }

    #[test]
    fn long_statements_are_cut_on_a_character_boundary() {
        assert_eq!(truncate("abcdef", 3), "abc…");
        assert_eq!(truncate("ab", 3), "ab");
        assert_eq!(truncate("ééé", 2), "éé…");
    }
}
