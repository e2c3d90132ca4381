//! The span store: every span the [collector](super::collector) accepted, kept in memory for the
//! length of a run (or of a `harness up`), indexed by trace id and by the `order_id` attribute.
//!
//! Spans are held compactly: ids as bytes, the strings that repeat across spans (service,
//! instance, span name, attribute keys) interned once, and only the attribute values that are
//! scalars. Readers get [`SpanRecord`]s, the same serde type that `GET /api/traces/{trace_id}`
//! answers with, so `harness trace` renders a fetched trace exactly like a local one.
//!
//! The store is bounded by a span count: once full, new spans are dropped and counted rather
//! than evicting old ones, because a run's report needs the sagas it has already seen whole.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use opentelemetry_proto::tonic::trace::v1::{Span, span, status};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The span attribute whose value indexes a trace under an order.
pub const ORDER_ID: &str = "order_id";

const SERVICE_NAME: &str = "service.name";
const SERVICE_INSTANCE_ID: &str = "service.instance.id";
/// What OpenTelemetry SDKs report when no service name was configured.
const UNKNOWN_SERVICE: &str = "unknown_service";

/// The role of a span, as OTLP defines it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SpanKind {
    Unspecified,
    Internal,
    Server,
    Client,
    Producer,
    Consumer,
}

impl SpanKind {
    fn from_otlp(kind: i32) -> Self {
        match span::SpanKind::try_from(kind) {
            Ok(span::SpanKind::Internal) => Self::Internal,
            Ok(span::SpanKind::Server) => Self::Server,
            Ok(span::SpanKind::Client) => Self::Client,
            Ok(span::SpanKind::Producer) => Self::Producer,
            Ok(span::SpanKind::Consumer) => Self::Consumer,
            Ok(span::SpanKind::Unspecified) | Err(_) => Self::Unspecified,
        }
    }
}

/// A span's status code, as OTLP defines it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StatusCode {
    #[default]
    Unset,
    Ok,
    Error,
}

impl StatusCode {
    fn from_otlp(code: i32) -> Self {
        match status::StatusCode::try_from(code) {
            Ok(status::StatusCode::Ok) => Self::Ok,
            Ok(status::StatusCode::Error) => Self::Error,
            Ok(status::StatusCode::Unset) | Err(_) => Self::Unset,
        }
    }
}

/// A span's scalar attributes, rendered as strings, sorted by key; a JSON object on the wire.
///
/// A sorted vector rather than a map: spans carry a handful of attributes, and a vector of them
/// is smaller than a map's nodes and as quick to search.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Attributes(Vec<(String, String)>);

impl Attributes {
    pub fn get(&self, key: &str) -> Option<&str> {
        self.0
            .binary_search_by(|(k, _)| k.as_str().cmp(key))
            .ok()
            .map(|i| self.0[i].1.as_str())
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl FromIterator<(String, String)> for Attributes {
    /// The first value of a key wins, as OTLP asks of a receiver given duplicate keys.
    fn from_iter<I: IntoIterator<Item = (String, String)>>(iter: I) -> Self {
        let mut pairs: Vec<_> = iter.into_iter().collect();
        pairs.sort_by(|a, b| a.0.cmp(&b.0));
        pairs.dedup_by(|later, earlier| later.0 == earlier.0);
        Self(pairs)
    }
}

impl Serialize for Attributes {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_map(self.iter())
    }
}

impl<'de> Deserialize<'de> for Attributes {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let map = BTreeMap::<String, String>::deserialize(deserializer)?;
        Ok(Self(map.into_iter().collect()))
    }
}

/// One span, as readers see it and as `GET /api/traces/{trace_id}` serves it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SpanRecord {
    /// 32 lowercase hex digits.
    pub trace_id: String,
    /// 16 lowercase hex digits.
    pub span_id: String,
    /// Absent for a root span.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent_span_id: Option<String>,
    /// The resource's `service.name` (`gateway`, `order`, ...).
    pub service: String,
    /// The resource's `service.instance.id` (`order#2`), when it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instance: Option<String>,
    pub name: String,
    pub kind: SpanKind,
    pub start_unix_ns: u64,
    pub end_unix_ns: u64,
    #[serde(default)]
    pub attributes: Attributes,
    #[serde(default)]
    pub status: StatusCode,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status_message: Option<String>,
}

impl SpanRecord {
    /// End minus start; zero for a span that ends before it starts (clock skew).
    pub fn duration_ns(&self) -> u64 {
        self.end_unix_ns.saturating_sub(self.start_unix_ns)
    }

    pub fn attr(&self, key: &str) -> Option<&str> {
        self.attributes.get(key)
    }
}

/// What became of the spans of one export request.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Inserted {
    pub stored: u64,
    /// Dropped because the store was full.
    pub dropped: u64,
    /// Rejected for ids of the wrong length (a trace id is 16 bytes, a span id 8).
    pub invalid: u64,
}

impl Inserted {
    /// Spans not stored, for the export response's `partial_success`.
    pub fn rejected(&self) -> u64 {
        self.dropped + self.invalid
    }
}

/// The bounded, shared span store; see the module documentation.
pub struct SpanStore {
    max_spans: usize,
    inner: Mutex<Inner>,
}

impl fmt::Debug for SpanStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let inner = self.lock();
        f.debug_struct("SpanStore")
            .field("max_spans", &self.max_spans)
            .field("spans", &inner.len)
            .field("traces", &inner.traces.len())
            .field("dropped", &inner.dropped)
            .finish()
    }
}

type TraceId = [u8; 16];
type SpanId = [u8; 8];

/// An interned string: an index into [`Interner::strings`].
type Sym = u32;

#[derive(Default)]
struct Inner {
    traces: HashMap<TraceId, Vec<StoredSpan>>,
    by_order: HashMap<Box<str>, Vec<TraceId>>,
    strings: Interner,
    len: usize,
    dropped: u64,
    invalid: u64,
    /// Spans stored so far, numbering each: a trace's last span's number says when it changed.
    seq: u64,
    /// Each trace's last change.
    touched: HashMap<TraceId, Touch>,
}

/// When a trace last got a span: the span's number in the store, and the harness's clock.
#[derive(Clone, Copy)]
struct Touch {
    seq: u64,
    at: Instant,
}

/// Traces that got no span for a while, from [`SpanStore::settled_since`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Settled {
    /// What to pass as `after` next time: every trace that changed up to it was returned (or
    /// was left out by `limit`, and comes next time).
    pub next: u64,
    /// Trace id (hex) and its spans, oldest change first.
    pub traces: Vec<(String, Vec<SpanRecord>)>,
}

struct StoredSpan {
    span_id: SpanId,
    parent_span_id: Option<SpanId>,
    service: Sym,
    instance: Option<Sym>,
    name: Sym,
    kind: SpanKind,
    status: StatusCode,
    start_unix_ns: u64,
    end_unix_ns: u64,
    attributes: Box<[(Sym, Box<str>)]>,
    status_message: Option<Box<str>>,
}

#[derive(Default)]
struct Interner {
    ids: HashMap<Box<str>, Sym>,
    strings: Vec<Box<str>>,
}

impl Interner {
    /// `None` only past 2^32 distinct strings, which the span bound keeps out of reach.
    fn intern(&mut self, s: &str) -> Option<Sym> {
        if let Some(&id) = self.ids.get(s) {
            return Some(id);
        }
        let id = Sym::try_from(self.strings.len()).ok()?;
        self.strings.push(s.into());
        self.ids.insert(s.into(), id);
        Some(id)
    }

    fn get(&self, id: Sym) -> &str {
        self.strings.get(id as usize).map_or("", |s| s)
    }
}

impl SpanStore {
    /// A store that keeps at most `max_spans` spans.
    pub fn new(max_spans: usize) -> Self {
        Self {
            max_spans,
            inner: Mutex::new(Inner::default()),
        }
    }

    /// Stores the spans of one export request, as far as the bound allows.
    pub fn insert_request(&self, request: &ExportTraceServiceRequest) -> Inserted {
        let mut outcome = Inserted::default();
        let now = Instant::now();
        let mut inner = self.lock();
        for resource_spans in &request.resource_spans {
            let resource_attrs = resource_spans
                .resource
                .as_ref()
                .map_or(&[][..], |r| &r.attributes[..]);
            let service = string_attr(resource_attrs, SERVICE_NAME).unwrap_or(UNKNOWN_SERVICE);
            let instance = string_attr(resource_attrs, SERVICE_INSTANCE_ID);
            for span in resource_spans.scope_spans.iter().flat_map(|s| &s.spans) {
                if inner.len >= self.max_spans {
                    inner.dropped += 1;
                    outcome.dropped += 1;
                    continue;
                }
                if inner.insert(span, service, instance, now) {
                    outcome.stored += 1;
                } else {
                    inner.invalid += 1;
                    outcome.invalid += 1;
                }
            }
        }
        outcome
    }

    /// A trace's spans by start time, each span once; `None` for an unknown or malformed id.
    pub fn trace(&self, trace_id: &str) -> Option<Vec<SpanRecord>> {
        let id = parse_hex::<16>(trace_id)?;
        let inner = self.lock();
        inner.traces.get(&id).map(|spans| inner.records(&id, spans))
    }

    /// Several traces under one lock, keyed by the ids as given; unknown ids are left out.
    ///
    /// Every span is copied out: for thousands of sagas, ask in chunks or one [`Self::trace`]
    /// at a time rather than for all at once.
    pub fn traces<S: AsRef<str>>(&self, trace_ids: &[S]) -> HashMap<String, Vec<SpanRecord>> {
        let inner = self.lock();
        trace_ids
            .iter()
            .filter_map(|given| {
                let id = parse_hex::<16>(given.as_ref())?;
                let spans = inner.traces.get(&id)?;
                Some((given.as_ref().to_string(), inner.records(&id, spans)))
            })
            .collect()
    }

    /// The traces (hex ids, in the order they were first seen) with a span whose `order_id`
    /// attribute is `order_id`.
    pub fn traces_for_order(&self, order_id: &str) -> Vec<String> {
        self.lock()
            .by_order
            .get(order_id)
            .map(|ids| ids.iter().map(|id| to_hex(id)).collect())
            .unwrap_or_default()
    }

    /// The traces that changed after `after` (a [`Settled::next`]; 0 at first) and then got
    /// no span for `settle` (on the harness's clock, when the spans arrived), at most `limit`
    /// of them, oldest change first. A trace that gets a span after it was returned is returned
    /// again, whole. Costs a pass over the traces' last changes, and copies out only the spans
    /// of the traces returned: what a live view asks for once a second.
    pub fn settled_since(&self, after: u64, settle: Duration, limit: usize) -> Settled {
        let inner = self.lock();
        let now = Instant::now();
        let mut changed: Vec<(u64, TraceId)> = Vec::new();
        let mut unsettled = u64::MAX;
        for (id, touch) in inner.touched.iter().filter(|(_, t)| t.seq > after) {
            if now.saturating_duration_since(touch.at) < settle {
                unsettled = unsettled.min(touch.seq);
            } else {
                changed.push((touch.seq, *id));
            }
        }
        // Spans are numbered as they arrive, so everything numbered below the oldest unsettled
        // change is settled.
        let frontier = if unsettled == u64::MAX {
            inner.seq
        } else {
            unsettled - 1
        };
        changed.retain(|(seq, _)| *seq <= frontier);
        changed.sort_unstable();
        let next = if changed.len() > limit {
            changed.truncate(limit);
            changed.last().map_or(after, |(seq, _)| *seq)
        } else {
            frontier.max(after)
        };
        let traces = changed
            .iter()
            .filter_map(|(_, id)| {
                let spans = inner.traces.get(id)?;
                Some((to_hex(id), inner.records(id, spans)))
            })
            .collect();
        Settled { next, traces }
    }

    /// Spans stored.
    pub fn len(&self) -> usize {
        self.lock().len
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Spans dropped because the store was full.
    pub fn dropped(&self) -> u64 {
        self.lock().dropped
    }

    /// Spans rejected for malformed ids.
    pub fn invalid(&self) -> u64 {
        self.lock().invalid
    }

    /// Every span that arrived: stored, dropped or rejected.
    pub fn received(&self) -> u64 {
        let inner = self.lock();
        inner.len as u64 + inner.dropped + inner.invalid
    }

    pub fn trace_count(&self) -> usize {
        self.lock().traces.len()
    }

    pub fn max_spans(&self) -> usize {
        self.max_spans
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // Every update leaves the store consistent span by span, so a panic elsewhere while
        // the lock was held leaves nothing half-done worth refusing to read.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Inner {
    /// Stores one span; `false` when its ids are malformed.
    fn insert(&mut self, span: &Span, service: &str, instance: Option<&str>, now: Instant) -> bool {
        let (Ok(trace_id), Ok(span_id)) = (
            TraceId::try_from(span.trace_id.as_slice()),
            SpanId::try_from(span.span_id.as_slice()),
        ) else {
            return false;
        };
        let parent_span_id = match span.parent_span_id.as_slice() {
            [] => None,
            bytes => match SpanId::try_from(bytes) {
                Ok(id) => Some(id),
                Err(_) => return false,
            },
        };
        let mut attributes = Vec::with_capacity(span.attributes.len());
        let mut order_id = None;
        for kv in &span.attributes {
            let Some(value) = kv.value.as_ref().and_then(scalar) else {
                continue;
            };
            if kv.key == ORDER_ID {
                order_id = Some(value.clone());
            }
            let Some(key) = self.strings.intern(&kv.key) else {
                return false;
            };
            attributes.push((key, value.into_boxed_str()));
        }
        let (Some(service), Some(name)) = (
            self.strings.intern(service),
            self.strings.intern(&span.name),
        ) else {
            return false;
        };
        let instance = match instance {
            Some(i) => match self.strings.intern(i) {
                Some(sym) => Some(sym),
                None => return false,
            },
            None => None,
        };
        let (status, status_message) =
            span.status.as_ref().map_or((StatusCode::Unset, None), |s| {
                let message = (!s.message.is_empty()).then(|| s.message.clone().into_boxed_str());
                (StatusCode::from_otlp(s.code), message)
            });
        self.traces.entry(trace_id).or_default().push(StoredSpan {
            span_id,
            parent_span_id,
            service,
            instance,
            name,
            kind: SpanKind::from_otlp(span.kind),
            status,
            start_unix_ns: span.start_time_unix_nano,
            end_unix_ns: span.end_time_unix_nano,
            attributes: attributes.into_boxed_slice(),
            status_message,
        });
        self.len += 1;
        self.seq += 1;
        self.touched.insert(
            trace_id,
            Touch {
                seq: self.seq,
                at: now,
            },
        );
        if let Some(order_id) = order_id {
            let traces = self.by_order.entry(order_id.into_boxed_str()).or_default();
            if !traces.contains(&trace_id) {
                traces.push(trace_id);
            }
        }
        true
    }

    /// A trace's spans as records, by start time, without the duplicates an exporter's retry
    /// can leave.
    fn records(&self, trace_id: &TraceId, spans: &[StoredSpan]) -> Vec<SpanRecord> {
        let trace_hex = to_hex(trace_id);
        let mut seen = std::collections::HashSet::with_capacity(spans.len());
        let mut records: Vec<SpanRecord> = spans
            .iter()
            .filter(|s| seen.insert(s.span_id))
            .map(|s| SpanRecord {
                trace_id: trace_hex.clone(),
                span_id: to_hex(&s.span_id),
                parent_span_id: s.parent_span_id.map(|p| to_hex(&p)),
                service: self.strings.get(s.service).to_string(),
                instance: s.instance.map(|i| self.strings.get(i).to_string()),
                name: self.strings.get(s.name).to_string(),
                kind: s.kind,
                start_unix_ns: s.start_unix_ns,
                end_unix_ns: s.end_unix_ns,
                attributes: s
                    .attributes
                    .iter()
                    .map(|(k, v)| (self.strings.get(*k).to_string(), v.to_string()))
                    .collect(),
                status: s.status,
                status_message: s.status_message.as_deref().map(str::to_string),
            })
            .collect();
        records.sort_by(|a, b| (a.start_unix_ns, &a.span_id).cmp(&(b.start_unix_ns, &b.span_id)));
        records
    }
}

/// A scalar attribute value as a string; arrays, maps and bytes are not kept.
fn scalar(value: &AnyValue) -> Option<String> {
    match value.value.as_ref()? {
        any_value::Value::StringValue(s) => Some(s.clone()),
        any_value::Value::BoolValue(b) => Some(b.to_string()),
        any_value::Value::IntValue(i) => Some(i.to_string()),
        any_value::Value::DoubleValue(d) => Some(d.to_string()),
        any_value::Value::ArrayValue(_)
        | any_value::Value::KvlistValue(_)
        | any_value::Value::BytesValue(_) => None,
    }
}

fn string_attr<'a>(attrs: &'a [KeyValue], key: &str) -> Option<&'a str> {
    attrs.iter().find(|kv| kv.key == key).and_then(|kv| {
        match kv.value.as_ref()?.value.as_ref()? {
            any_value::Value::StringValue(s) => Some(s.as_str()),
            _ => None,
        }
    })
}

/// Lowercase hex, as OTLP/JSON and W3C trace context write ids.
pub fn to_hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(char::from(DIGITS[usize::from(b >> 4)]));
        s.push(char::from(DIGITS[usize::from(b & 0xf)]));
    }
    s
}

/// `N` bytes from `2 * N` hex digits of either case.
fn parse_hex<const N: usize>(s: &str) -> Option<[u8; N]> {
    let digits = s.as_bytes();
    if digits.len() != 2 * N {
        return None;
    }
    let nibble = |c: u8| {
        char::from(c)
            .to_digit(16)
            .and_then(|d| u8::try_from(d).ok())
    };
    let mut out = [0u8; N];
    for (i, pair) in digits.chunks_exact(2).enumerate() {
        out[i] = (nibble(pair[0])? << 4) | nibble(pair[1])?;
    }
    Some(out)
}

#[cfg(test)]
pub(crate) mod tests {
    use opentelemetry_proto::tonic::resource::v1::Resource;
    use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Status};

    use super::*;

    pub(crate) fn kv(key: &str, value: &str) -> KeyValue {
        KeyValue {
            key: key.to_string(),
            value: Some(AnyValue {
                value: Some(any_value::Value::StringValue(value.to_string())),
            }),
        }
    }

    /// A span of trace `trace` (one byte repeated), with span id `id` and parent `parent`
    /// (also one byte repeated, 0 for none), from `start_ms` to `end_ms`.
    pub(crate) fn span(
        trace: u8,
        id: u8,
        parent: u8,
        name: &str,
        kind: span::SpanKind,
        (start_ms, end_ms): (u64, u64),
        attributes: &[(&str, &str)],
    ) -> Span {
        Span {
            trace_id: vec![trace; 16],
            span_id: vec![id; 8],
            parent_span_id: if parent == 0 { vec![] } else { vec![parent; 8] },
            name: name.to_string(),
            kind: kind as i32,
            start_time_unix_nano: start_ms * 1_000_000,
            end_time_unix_nano: end_ms * 1_000_000,
            attributes: attributes.iter().map(|(k, v)| kv(k, v)).collect(),
            ..Span::default()
        }
    }

    /// An export request from one service instance.
    pub(crate) fn request(
        service: &str,
        instance: &str,
        spans: Vec<Span>,
    ) -> ExportTraceServiceRequest {
        ExportTraceServiceRequest {
            resource_spans: vec![ResourceSpans {
                resource: Some(Resource {
                    attributes: vec![kv(SERVICE_NAME, service), kv(SERVICE_INSTANCE_ID, instance)],
                    ..Resource::default()
                }),
                scope_spans: vec![ScopeSpans {
                    spans,
                    ..ScopeSpans::default()
                }],
                ..ResourceSpans::default()
            }],
        }
    }

    #[test]
    fn a_stored_span_reads_back_with_its_resource_hex_ids_and_scalar_attributes() {
        let store = SpanStore::new(100);
        let mut s = span(
            0xab,
            2,
            1,
            "POST /orders",
            span::SpanKind::Server,
            (10, 30),
            &[],
        );
        s.attributes.push(KeyValue {
            key: "http.response.status_code".into(),
            value: Some(AnyValue {
                value: Some(any_value::Value::IntValue(201)),
            }),
        });
        s.attributes.push(KeyValue {
            key: "retried".into(),
            value: Some(AnyValue {
                value: Some(any_value::Value::BoolValue(false)),
            }),
        });
        s.attributes.push(KeyValue {
            key: "blob".into(),
            value: Some(AnyValue {
                value: Some(any_value::Value::BytesValue(vec![1, 2])),
            }),
        });
        s.status = Some(Status {
            message: "boom".into(),
            code: status::StatusCode::Error as i32,
        });
        let outcome = store.insert_request(&request("order", "order#2", vec![s]));
        assert_eq!(outcome.stored, 1);

        let spans = store.trace(&"ab".repeat(16)).unwrap();
        let r = &spans[0];
        assert_eq!(r.trace_id, "ab".repeat(16));
        assert_eq!(r.span_id, "0202020202020202");
        assert_eq!(r.parent_span_id.as_deref(), Some("0101010101010101"));
        assert_eq!(
            (r.service.as_str(), r.instance.as_deref()),
            ("order", Some("order#2"))
        );
        assert_eq!(r.kind, SpanKind::Server);
        assert_eq!(r.duration_ns(), 20_000_000);
        assert_eq!(r.attr("http.response.status_code"), Some("201"));
        assert_eq!(r.attr("retried"), Some("false"));
        assert_eq!(r.attr("blob"), None);
        assert_eq!(
            (r.status, r.status_message.as_deref()),
            (StatusCode::Error, Some("boom"))
        );
        assert_eq!(
            store.trace(&"AB".repeat(16)).unwrap().len(),
            1,
            "ids of either case"
        );
        assert!(store.trace(&"cd".repeat(16)).is_none());
        assert!(store.trace("not hex").is_none());
    }

    #[test]
    fn the_order_id_index_finds_every_trace_of_an_order() {
        let store = SpanStore::new(100);
        let order = [("order_id", "0f8e6a2c-0000-4000-8000-000000000001")];
        store.insert_request(&request(
            "order",
            "order#1",
            vec![
                span(
                    1,
                    1,
                    0,
                    "place_order",
                    span::SpanKind::Internal,
                    (0, 1),
                    &order,
                ),
                span(1, 2, 1, "handle", span::SpanKind::Internal, (0, 1), &order),
                span(
                    2,
                    3,
                    0,
                    "saga timeout",
                    span::SpanKind::Internal,
                    (5, 6),
                    &order,
                ),
                span(3, 4, 0, "GET /health", span::SpanKind::Server, (0, 1), &[]),
            ],
        ));
        assert_eq!(
            store.traces_for_order(order[0].1),
            vec!["01".repeat(16), "02".repeat(16)]
        );
        assert!(store.traces_for_order("another").is_empty());
        assert_eq!(store.trace_count(), 3);
        let both = store.traces(&["01".repeat(16), "02".repeat(16), "09".repeat(16)]);
        assert_eq!(both.len(), 2);
        assert_eq!(both[&"01".repeat(16)].len(), 2);
    }

    #[test]
    fn a_full_store_drops_new_spans_and_counts_them() {
        let store = SpanStore::new(2);
        let spans = (1..=5)
            .map(|i| span(1, i, 0, "s", span::SpanKind::Internal, (0, 1), &[]))
            .collect();
        let outcome = store.insert_request(&request("order", "order#1", spans));
        assert_eq!((outcome.stored, outcome.dropped), (2, 3));
        assert_eq!((store.len(), store.dropped(), store.received()), (2, 3, 5));
        let kept: Vec<_> = store
            .trace(&"01".repeat(16))
            .unwrap()
            .into_iter()
            .map(|s| s.span_id)
            .collect();
        assert_eq!(
            kept,
            vec!["01".repeat(8), "02".repeat(8)],
            "the first spans stay"
        );
    }

    #[test]
    fn spans_with_malformed_ids_are_rejected_and_a_retried_export_reads_once() {
        let store = SpanStore::new(100);
        let mut short = span(1, 1, 0, "s", span::SpanKind::Internal, (0, 1), &[]);
        short.span_id = vec![1, 2, 3];
        let good = span(1, 2, 0, "s", span::SpanKind::Internal, (0, 1), &[]);
        let outcome = store.insert_request(&request("order", "order#1", vec![short, good.clone()]));
        assert_eq!(
            (outcome.stored, outcome.invalid, outcome.rejected()),
            (1, 1, 1)
        );
        store.insert_request(&request("order", "order#1", vec![good]));
        assert_eq!(store.len(), 2);
        assert_eq!(store.trace(&"01".repeat(16)).unwrap().len(), 1);
    }

    #[test]
    fn a_span_record_round_trips_through_json() {
        let store = SpanStore::new(10);
        store.insert_request(&request(
            "gateway",
            "gateway#1",
            vec![span(
                7,
                1,
                0,
                "POST /api/orders",
                span::SpanKind::Server,
                (1, 2),
                &[("url.path", "/api/orders")],
            )],
        ));
        let spans = store.trace(&"07".repeat(16)).unwrap();
        let json = serde_json::to_value(&spans).unwrap();
        assert_eq!(json[0]["kind"], "server");
        assert_eq!(json[0]["attributes"]["url.path"], "/api/orders");
        assert!(json[0].get("parent_span_id").is_none());
        let back: Vec<SpanRecord> = serde_json::from_value(json).unwrap();
        assert_eq!(back, spans);
    }

    #[test]
    fn settled_traces_come_once_each_change_after_their_cursor() {
        use std::time::Duration;
        let store = SpanStore::new(100);
        let one = |trace: u8, id: u8| {
            request(
                "order",
                "order#1",
                vec![span(
                    trace,
                    id,
                    0,
                    "POST /orders",
                    span::SpanKind::Server,
                    (0, 10),
                    &[],
                )],
            )
        };
        store.insert_request(&one(1, 1));
        store.insert_request(&one(2, 1));
        let first = store.settled_since(0, Duration::ZERO, 10);
        let ids: Vec<&str> = first.traces.iter().map(|(id, _)| id.as_str()).collect();
        assert_eq!(ids, [to_hex(&[1; 16]), to_hex(&[2; 16])]);
        assert!(
            store
                .settled_since(first.next, Duration::ZERO, 10)
                .traces
                .is_empty()
        );

        // A new span: the trace comes again, whole.
        store.insert_request(&one(1, 2));
        let again = store.settled_since(first.next, Duration::ZERO, 10);
        assert_eq!(again.traces.len(), 1);
        assert_eq!(again.traces[0].1.len(), 2);

        // Not settled yet: held back, and the cursor does not pass it.
        store.insert_request(&one(3, 1));
        let held = store.settled_since(again.next, Duration::from_secs(60), 10);
        assert!(held.traces.is_empty());
        assert_eq!(held.next, again.next);

        // A limit leaves the rest for next time.
        let limited = store.settled_since(0, Duration::ZERO, 1);
        assert_eq!(limited.traces.len(), 1);
        let rest = store.settled_since(limited.next, Duration::ZERO, 10);
        assert_eq!(rest.traces.len(), 2);
    }
}
