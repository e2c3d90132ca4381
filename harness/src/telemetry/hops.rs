//! Where a saga's time goes, hop by hop: from one trace, each span's self time (its duration
//! minus the time covered by its children) summed by hop; over a run, per phase, a histogram
//! of each hop's time and the slowest sagas with their hops.
//!
//! A hop is a step a reader can act on: `"gateway → order"` (the gateway's calls to a service),
//! `"order POST /orders"` (a request handled), `"order outbox wait order.events"`, `"order
//! publish order.events"`, `"inventory transit inventory.commands"`, `"inventory process
//! inventory.commands"`, `"payment db"`. Handler spans inside a request or a message (`INTERNAL`
//! spans such as `handle`) are not hops of their own: their self time goes to the hop of their
//! nearest ancestor that is one. A span's self time excludes its children's, so nothing is
//! counted twice along a path; work running concurrently on two branches counts on each, so a
//! saga's hops can add up to more than its duration.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::store::{SpanKind, SpanRecord, SpanStore};
use crate::metrics::{ALL, Latency};
use crate::report::LatencyReport;

/// How many of a run's slowest sagas the report keeps.
pub const SLOWEST_KEPT: usize = 10;

const DB_SYSTEM: &str = "db.system.name";
const PEER_SERVICE: &str = "peer.service";
const OUTBOX_WAIT: &str = "outbox wait ";

/// One saga's trace, hop → self time in µs.
///
/// Only spans starting before `terminal_at_unix_ns` count (when given): the work that follows
/// the order's terminal status, such as the last event's delivery to nobody waiting, is not
/// the saga's latency.
pub fn saga_hops(spans: &[SpanRecord], terminal_at_unix_ns: Option<u64>) -> BTreeMap<String, u64> {
    let mut index: HashMap<&str, usize> = HashMap::with_capacity(spans.len());
    let mut kept: Vec<&SpanRecord> = Vec::with_capacity(spans.len());
    for span in spans {
        if terminal_at_unix_ns.is_some_and(|t| span.start_unix_ns >= t)
            || index.contains_key(span.span_id.as_str())
        {
            continue;
        }
        index.insert(&span.span_id, kept.len());
        kept.push(span);
    }
    let parents: Vec<Option<usize>> = kept
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let parent = s.parent_span_id.as_deref()?;
            index.get(parent).copied().filter(|&p| p != i)
        })
        .collect();
    let mut children: Vec<Vec<usize>> = vec![Vec::new(); kept.len()];
    for (i, parent) in parents.iter().enumerate() {
        if let Some(p) = parent {
            children[*p].push(i);
        }
    }

    let mut hops_ns: BTreeMap<String, u64> = BTreeMap::new();
    for (i, span) in kept.iter().enumerate() {
        let covered = children[i]
            .iter()
            .map(|&c| (kept[c].start_unix_ns, kept[c].end_unix_ns));
        let self_ns = self_time(span.start_unix_ns, span.end_unix_ns, covered);
        *hops_ns.entry(hop_of(i, &kept, &parents)).or_default() += self_ns;
    }
    hops_ns
        .into_iter()
        .map(|(hop, ns)| (hop, (ns + 500) / 1_000))
        .collect()
}

/// `[start, end)` minus the union of `children`, each clipped to it, in ns.
fn self_time(start: u64, end: u64, children: impl Iterator<Item = (u64, u64)>) -> u64 {
    let mut clipped: Vec<(u64, u64)> = children
        .map(|(s, e)| (s.max(start), e.min(end)))
        .filter(|(s, e)| s < e)
        .collect();
    clipped.sort_unstable();
    let mut covered = 0;
    let mut reach = start;
    for (s, e) in clipped {
        let s = s.max(reach);
        if e > s {
            covered += e - s;
            reach = e;
        }
    }
    end.saturating_sub(start).saturating_sub(covered)
}

/// The hop span `i` counts towards: its own, or that of its nearest ancestor with one, or,
/// for a span with no such ancestor (an orphan, an internal root), its own name.
fn hop_of(i: usize, spans: &[&SpanRecord], parents: &[Option<usize>]) -> String {
    let mut at = i;
    // Bounded by the span count: parent links from malformed data may form a cycle.
    for _ in 0..spans.len() {
        if let Some(hop) = own_hop(spans[at]) {
            return hop;
        }
        match parents[at] {
            Some(p) => at = p,
            None => break,
        }
    }
    let span = spans[i];
    format!("{} {}", span.service, span.name)
}

/// The hop a span is by itself, `None` for handler work inside another span.
fn own_hop(span: &SpanRecord) -> Option<String> {
    if span.attr(DB_SYSTEM).is_some() {
        return Some(format!("{} db", span.service));
    }
    match span.kind {
        SpanKind::Client => Some(match span.attr(PEER_SERVICE) {
            Some(peer) => format!("{} → {peer}", span.service),
            None => format!("{} {}", span.service, span.name),
        }),
        SpanKind::Server | SpanKind::Producer | SpanKind::Consumer => {
            Some(format!("{} {}", span.service, span.name))
        }
        SpanKind::Internal | SpanKind::Unspecified if span.name.starts_with(OUTBOX_WAIT) => {
            Some(format!("{} {}", span.service, span.name))
        }
        SpanKind::Internal | SpanKind::Unspecified => None,
    }
}

/// Many sagas' hops, per phase; see [`HopBreakdown::add`].
#[derive(Debug, Clone, Default)]
pub struct HopBreakdown {
    phases: BTreeMap<String, PhaseAccumulator>,
    slowest: Vec<SlowSaga>,
    sagas_traced: u64,
    sagas_without_trace: u64,
}

#[derive(Debug, Clone, Default)]
struct PhaseAccumulator {
    sagas: u64,
    hops: BTreeMap<String, Latency>,
}

impl HopBreakdown {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds one saga's hops (from [`saga_hops`]) to `phase`. A saga belongs to several phases
    /// ([`ALL`] and, say, `during:kill-order`): add it to each, [`ALL`] first. Phase [`ALL`]
    /// counts the saga as traced and keeps the [`SLOWEST_KEPT`] slowest by `total_us`; a slow
    /// saga's `phase` is then the first other phase it is added to.
    ///
    /// A hop's histogram counts the sagas that had the hop, not the phase's sagas.
    pub fn add(
        &mut self,
        phase: &str,
        order_id: &str,
        trace_id: &str,
        total_us: u64,
        hops: &BTreeMap<String, u64>,
    ) {
        let acc = self.phases.entry(phase.to_string()).or_default();
        acc.sagas += 1;
        for (hop, us) in hops {
            acc.hops
                .entry(hop.clone())
                .or_default()
                .record(Duration::from_micros(*us));
        }
        if phase == ALL {
            self.sagas_traced += 1;
            self.keep_if_slow(SlowSaga {
                order_id: order_id.to_string(),
                trace_id: trace_id.to_string(),
                phase: ALL.to_string(),
                total_us,
                hops: hops.clone(),
            });
        } else if let Some(slow) = self
            .slowest
            .iter_mut()
            .find(|s| s.phase == ALL && s.order_id == order_id && s.trace_id == trace_id)
        {
            slow.phase = phase.to_string();
        }
    }

    /// [`Self::add`] to [`ALL`] and to each of `phases`, in the order that method asks for.
    pub fn add_saga<P: AsRef<str>>(
        &mut self,
        phases: &[P],
        order_id: &str,
        trace_id: &str,
        total_us: u64,
        hops: &BTreeMap<String, u64>,
    ) {
        self.add(ALL, order_id, trace_id, total_us, hops);
        for phase in phases.iter().map(AsRef::as_ref).filter(|&p| p != ALL) {
            self.add(phase, order_id, trace_id, total_us, hops);
        }
    }

    /// Phase → hop → its per-saga histogram, for SLOs on a hop.
    pub fn histograms(&self) -> BTreeMap<String, BTreeMap<String, Latency>> {
        self.phases
            .iter()
            .map(|(phase, acc)| (phase.clone(), acc.hops.clone()))
            .collect()
    }

    /// Counts a saga whose trace the store does not have (not exported, dropped, or the saga
    /// was never given a trace id).
    pub fn add_without_trace(&mut self) {
        self.sagas_without_trace += 1;
    }

    /// The report section, with the store's counts.
    pub fn report(&self, store: &SpanStore) -> anyhow::Result<TraceReport> {
        let mut phases = BTreeMap::new();
        for (name, acc) in &self.phases {
            let mut hops = BTreeMap::new();
            for (hop, latency) in &acc.hops {
                hops.insert(hop.clone(), LatencyReport::new(latency)?);
            }
            phases.insert(
                name.clone(),
                PhaseHops {
                    sagas: acc.sagas,
                    hops,
                },
            );
        }
        Ok(TraceReport {
            spans_received: store.received(),
            spans_dropped: store.dropped(),
            traces: store.trace_count() as u64,
            sagas_traced: self.sagas_traced,
            sagas_without_trace: self.sagas_without_trace,
            phases,
            slowest: self.slowest.clone(),
        })
    }

    fn keep_if_slow(&mut self, saga: SlowSaga) {
        // Ties keep the saga seen first.
        let at = self
            .slowest
            .partition_point(|s| s.total_us >= saga.total_us);
        if at < SLOWEST_KEPT {
            self.slowest.insert(at, saga);
            self.slowest.truncate(SLOWEST_KEPT);
        }
    }
}

/// How long a trace must go without a new span before a live view counts it: the services
/// export in batches, so a trace is whole only a little after its last span ended.
pub const SETTLE: Duration = Duration::from_secs(3);

/// One trace's hops, for a live view: [`saga_hops`] of its spans, without a terminal time.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TraceHops {
    pub trace_id: String,
    /// When its last span ended (ns since the Unix epoch, the services' clock).
    pub end_unix_ns: u64,
    /// Hop → self time (µs).
    pub hops: BTreeMap<String, u64>,
}

/// The traces that settled since a cursor, each with its hops: what `GET /api/hops` answers.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SettledHops {
    /// The cursor to ask with next time.
    pub next: u64,
    pub traces: Vec<TraceHops>,
}

/// The traces of `store` that changed after `after` and then stayed quiet for [`SETTLE`], at
/// most `limit`, with their hops.
pub fn settled_hops(store: &SpanStore, after: u64, limit: usize) -> SettledHops {
    settled_hops_after(store, after, SETTLE, limit)
}

fn settled_hops_after(
    store: &SpanStore,
    after: u64,
    settle: Duration,
    limit: usize,
) -> SettledHops {
    let settled = store.settled_since(after, settle, limit);
    SettledHops {
        next: settled.next,
        traces: settled
            .traces
            .into_iter()
            .map(|(trace_id, spans)| TraceHops {
                end_unix_ns: spans.iter().map(|s| s.end_unix_ns).max().unwrap_or(0),
                hops: saga_hops(&spans, None),
                trace_id,
            })
            .collect(),
    }
}

/// A saga a live view wants the hops of: its trace, and when it reached its terminal status.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SagaTrace {
    pub trace_id: String,
    /// As [`saga_hops`] takes it: later spans are not the saga's time.
    pub terminal_at_unix_ns: u64,
}

/// The hops of each of `sagas` whose trace `store` has, cut at its terminal time exactly as a
/// run's report cuts them; sagas without a trace are left out.
pub fn sagas_hops(store: &SpanStore, sagas: &[SagaTrace]) -> Vec<TraceHops> {
    sagas
        .iter()
        .filter_map(|saga| {
            let spans = store.trace(&saga.trace_id)?;
            Some(TraceHops {
                trace_id: saga.trace_id.clone(),
                end_unix_ns: spans.iter().map(|s| s.end_unix_ns).max().unwrap_or(0),
                hops: saga_hops(&spans, Some(saga.terminal_at_unix_ns)),
            })
        })
        .collect()
}

/// One hop over a window of time, as a live view shows it.
#[derive(Debug, Clone, PartialEq)]
pub struct HopFigure {
    pub hop: String,
    pub p99_us: u64,
    pub p95_us: u64,
    /// Traces that had the hop.
    pub traces: u64,
}

/// The phase name a live view's [`HopBreakdown`] uses: not [`ALL`], which would also keep the
/// slowest traces, which nothing here reads.
const WINDOW: &str = "window";

/// The hops of the traces seen lately, for a live view: fed with [`SettledHops`] as they
/// settle, it gives the slowest hops of the traces that ended within a window, through the same
/// per-hop histograms a run's report has ([`HopBreakdown`]).
#[derive(Debug, Clone, Default)]
pub struct LiveHops {
    /// Trace id → when it ended and its hops; a trace seen again replaces its earlier self.
    traces: HashMap<String, (u64, BTreeMap<String, u64>)>,
    next: u64,
}

impl LiveHops {
    /// The cursor to ask the store or the collector with.
    pub fn next(&self) -> u64 {
        self.next
    }

    pub fn add(&mut self, settled: SettledHops) {
        self.next = self.next.max(settled.next);
        for t in settled.traces {
            self.traces.insert(t.trace_id, (t.end_unix_ns, t.hops));
        }
    }

    /// Forgets the traces that ended before `unix_ns`.
    pub fn forget_before(&mut self, unix_ns: u64) {
        self.traces.retain(|_, (end, _)| *end >= unix_ns);
    }

    /// Traces kept.
    pub fn len(&self) -> usize {
        self.traces.len()
    }

    pub fn is_empty(&self) -> bool {
        self.traces.is_empty()
    }

    /// For each of `windows_ns` (lengths of time ending at `now_unix_ns`), the hops of the
    /// traces that ended within it, highest p99 first, and how many traces that is.
    pub fn slowest(&self, now_unix_ns: u64, windows_ns: &[u64]) -> Vec<(Vec<HopFigure>, u64)> {
        let mut ended: Vec<(u64, &BTreeMap<String, u64>)> = self
            .traces
            .values()
            .map(|(end, hops)| (*end, hops))
            .collect();
        // Latest first, so each window adds to what the shorter one before it counted.
        ended.sort_unstable_by_key(|(end, _)| std::cmp::Reverse(*end));
        let mut order: Vec<usize> = (0..windows_ns.len()).collect();
        order.sort_by_key(|&i| windows_ns[i]);
        let mut out = vec![(Vec::new(), 0); windows_ns.len()];
        let mut breakdown = HopBreakdown::new();
        let mut taken = 0;
        for i in order {
            let from = now_unix_ns.saturating_sub(windows_ns[i]);
            while ended.get(taken).is_some_and(|(end, _)| *end >= from) {
                breakdown.add(WINDOW, "", "", 0, ended[taken].1);
                taken += 1;
            }
            out[i] = (breakdown.figures(WINDOW), taken as u64);
        }
        out
    }
}

impl HopBreakdown {
    /// The phases added to so far.
    pub fn phase_names(&self) -> impl Iterator<Item = &str> {
        self.phases.keys().map(String::as_str)
    }

    /// One hop's per-saga histogram in one phase.
    pub fn histogram(&self, phase: &str, hop: &str) -> Option<&Latency> {
        self.phases.get(phase)?.hops.get(hop)
    }

    /// The hops of `phase`, highest p99 first (ties by name).
    pub fn figures(&self, phase: &str) -> Vec<HopFigure> {
        let Some(acc) = self.phases.get(phase) else {
            return Vec::new();
        };
        let us = |l: &Latency, q: f64| {
            l.quantile(q)
                .map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
        };
        let mut figures: Vec<HopFigure> = acc
            .hops
            .iter()
            .map(|(hop, l)| HopFigure {
                hop: hop.clone(),
                p99_us: us(l, 0.99),
                p95_us: us(l, 0.95),
                traces: l.count(),
            })
            .collect();
        figures.sort_by(|a, b| b.p99_us.cmp(&a.p99_us).then_with(|| a.hop.cmp(&b.hop)));
        figures
    }
}

/// Traces in `report.json`: what arrived, and where the sagas' time went.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TraceReport {
    /// Spans the collector received, stored or not.
    pub spans_received: u64,
    /// Spans dropped because the span store was full.
    pub spans_dropped: u64,
    /// Traces in the store.
    pub traces: u64,
    /// Sagas whose trace was analysed (phase `all`).
    pub sagas_traced: u64,
    /// Sagas followed by the load generator whose trace the store does not have.
    pub sagas_without_trace: u64,
    /// Phase (`all`, `before`, `during:<label>`, `after`, `step:<i>`) → its hops.
    pub phases: BTreeMap<String, PhaseHops>,
    /// The slowest sagas of the run, slowest first.
    pub slowest: Vec<SlowSaga>,
}

/// One phase's hops.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PhaseHops {
    /// Sagas analysed in the phase.
    pub sagas: u64,
    /// Hop → its self time per saga that had it (µs).
    pub hops: BTreeMap<String, LatencyReport>,
}

/// One of the slowest sagas, to open in `harness trace` or a trace viewer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SlowSaga {
    pub order_id: String,
    pub trace_id: String,
    /// The saga's phase other than `all`, or `all` when it has no other.
    pub phase: String,
    /// Order accepted to terminal, as the load generator saw it (µs).
    pub total_us: u64,
    /// Hop → self time (µs).
    pub hops: BTreeMap<String, u64>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::telemetry::store::{Attributes, StatusCode};

    const T0: u64 = 1_700_000_000_000_000_000;

    fn span(
        id: &str,
        parent: Option<&str>,
        service: &str,
        name: &str,
        kind: SpanKind,
        (start_ms, end_ms): (u64, u64),
        attrs: &[(&str, &str)],
    ) -> SpanRecord {
        SpanRecord {
            trace_id: "ab".repeat(16),
            span_id: id.to_string(),
            parent_span_id: parent.map(str::to_string),
            service: service.to_string(),
            instance: None,
            name: name.to_string(),
            kind,
            start_unix_ns: T0 + start_ms * 1_000_000,
            end_unix_ns: T0 + end_ms * 1_000_000,
            attributes: attrs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect::<Attributes>(),
            status: StatusCode::Unset,
            status_message: None,
        }
    }

    fn ms(v: u64) -> u64 {
        v * 1_000
    }

    #[test]
    fn self_time_subtracts_overlapping_children_once_and_clips_them_to_the_parent() {
        let spans = vec![
            span(
                "p",
                None,
                "order",
                "POST /orders",
                SpanKind::Server,
                (0, 100),
                &[],
            ),
            span(
                "a",
                Some("p"),
                "order",
                "SELECT a",
                SpanKind::Client,
                (10, 30),
                &[],
            ),
            // Overlaps `a`: 10..50 is covered once, not 20 + 30.
            span(
                "b",
                Some("p"),
                "order",
                "SELECT b",
                SpanKind::Client,
                (20, 50),
                &[],
            ),
            // Outlives its parent: only 90..100 is taken from the parent.
            span(
                "c",
                Some("p"),
                "order",
                "publish order.events",
                SpanKind::Producer,
                (90, 150),
                &[],
            ),
        ];
        let hops = saga_hops(&spans, None);
        assert_eq!(hops["order POST /orders"], ms(50));
        assert_eq!(hops["order SELECT a"], ms(20));
        assert_eq!(hops["order SELECT b"], ms(30));
        assert_eq!(hops["order publish order.events"], ms(60));
    }

    #[test]
    fn internal_spans_give_their_self_time_to_their_nearest_hop() {
        let spans = vec![
            span(
                "s",
                None,
                "order",
                "process order.events",
                SpanKind::Consumer,
                (0, 100),
                &[],
            ),
            span(
                "h",
                Some("s"),
                "order",
                "handle",
                SpanKind::Internal,
                (10, 90),
                &[],
            ),
            span(
                "w",
                Some("h"),
                "order",
                "advance_saga",
                SpanKind::Internal,
                (20, 40),
                &[],
            ),
            span(
                "q",
                Some("w"),
                "order",
                "UPDATE orders",
                SpanKind::Client,
                (25, 35),
                &[("db.system.name", "sqlite")],
            ),
            span(
                "o",
                Some("h"),
                "order",
                "outbox wait inventory.commands",
                SpanKind::Internal,
                (50, 70),
                &[],
            ),
        ];
        let hops = saga_hops(&spans, None);
        // Its own 0..10 and 90..100, handle's 40 outside its children, advance_saga's 10.
        assert_eq!(hops["order process order.events"], ms(20 + 40 + 10));
        assert_eq!(
            hops["order db"],
            ms(10),
            "db spans are one hop per service, whatever the query"
        );
        assert_eq!(hops["order outbox wait inventory.commands"], ms(20));
        assert_eq!(hops.len(), 3, "{hops:?}");
        assert_eq!(hops.values().sum::<u64>(), ms(100));
    }

    #[test]
    fn gateway_calls_are_named_after_the_service_called() {
        let spans = vec![
            span(
                "s",
                None,
                "gateway",
                "POST /api/orders",
                SpanKind::Server,
                (0, 30),
                &[],
            ),
            span(
                "c",
                Some("s"),
                "gateway",
                "POST",
                SpanKind::Client,
                (1, 11),
                &[("peer.service", "order")],
            ),
            span(
                "r",
                Some("s"),
                "gateway",
                "POST",
                SpanKind::Client,
                (12, 29),
                &[("peer.service", "order")],
            ),
        ];
        let hops = saga_hops(&spans, None);
        assert_eq!(
            hops["gateway → order"],
            ms(27),
            "a retry adds to the same hop"
        );
        assert_eq!(hops["gateway POST /api/orders"], ms(3));
    }

    #[test]
    fn spans_starting_after_the_terminal_time_are_ignored() {
        let spans = vec![
            span(
                "p",
                None,
                "order",
                "process order.events",
                SpanKind::Consumer,
                (0, 10),
                &[],
            ),
            span(
                "late",
                Some("p"),
                "order",
                "publish order.events",
                SpanKind::Producer,
                (50, 60),
                &[],
            ),
            span(
                "later",
                Some("late"),
                "payment",
                "process order.events",
                SpanKind::Consumer,
                (70, 80),
                &[],
            ),
        ];
        let hops = saga_hops(&spans, Some(T0 + 40_000_000));
        assert_eq!(hops.len(), 1, "{hops:?}");
        assert_eq!(hops["order process order.events"], ms(10));
        assert_eq!(saga_hops(&spans, None).len(), 3);
    }

    #[test]
    fn an_internal_span_without_a_hop_above_it_is_a_hop_of_its_own() {
        let spans = vec![span(
            "t",
            Some("missing"),
            "order",
            "saga timeout",
            SpanKind::Internal,
            (0, 5),
            &[],
        )];
        assert_eq!(saga_hops(&spans, None)["order saga timeout"], ms(5));
    }

    #[test]
    fn the_live_hop_figures_are_the_reports_for_the_same_traces() {
        use crate::telemetry::store::tests::{request, span as otlp};
        use opentelemetry_proto::tonic::trace::v1::span::SpanKind as K;

        let store = SpanStore::new(1_000);
        for trace in 1..=20u8 {
            let t = u64::from(trace);
            let base = 1_000 * t;
            store.insert_request(&request(
                "order",
                "order#1",
                vec![
                    otlp(
                        trace,
                        1,
                        0,
                        "POST /orders",
                        K::Server,
                        (base, base + 30 + t),
                        &[],
                    ),
                    otlp(
                        trace,
                        2,
                        1,
                        "INSERT orders",
                        K::Client,
                        (base + 2, base + 5 + t % 7),
                        &[("db.system.name", "sqlite")],
                    ),
                    otlp(
                        trace,
                        3,
                        1,
                        "outbox wait order.events",
                        K::Internal,
                        (base + 10, base + 12 + 3 * t),
                        &[],
                    ),
                ],
            ));
        }

        // The console's way: settled traces, their hops, the window's figures.
        let mut live = LiveHops::default();
        live.add(settled_hops_after(&store, 0, Duration::ZERO, 100));
        assert_eq!(live.len(), 20);
        let [(figures, traces)]: [(Vec<HopFigure>, u64); 1] =
            live.slowest(u64::MAX, &[u64::MAX]).try_into().unwrap();
        assert_eq!(traces, 20);

        // The report's way: each trace's hops into a breakdown.
        let mut breakdown = HopBreakdown::new();
        for trace in 1..=20u8 {
            let id = to_hex_trace(trace);
            let spans = store.trace(&id).unwrap();
            breakdown.add_saga::<&str>(&[], &id, &id, 0, &saga_hops(&spans, None));
        }
        let report = breakdown.report(&store).unwrap();
        let all = &report.phases[ALL].hops;
        assert_eq!(figures.len(), all.len(), "{figures:?}");
        for f in &figures {
            let r = &all[&f.hop];
            assert_eq!(
                (Some(f.p99_us), Some(f.p95_us), f.traces),
                (r.p99_us, r.p95_us, r.count),
                "{}",
                f.hop
            );
        }
        // The outbox wait of trace 20 is the slowest self time: 2 + 3 × 20 ms.
        assert_eq!(figures[0].hop, "order outbox wait order.events");
        assert!((62_000..62_100).contains(&figures[0].p99_us), "{figures:?}");
    }

    #[test]
    fn a_window_counts_the_traces_that_ended_within_it() {
        let mut live = LiveHops::default();
        let trace = |id: &str, end_s: u64, us: u64| TraceHops {
            trace_id: id.into(),
            end_unix_ns: end_s * 1_000_000_000,
            hops: hops(&[("order db", us)]),
        };
        live.add(SettledHops {
            next: 3,
            traces: vec![
                trace("a", 100, 10),
                trace("b", 150, 20),
                trace("c", 190, 900),
            ],
        });
        let now = 200 * 1_000_000_000;
        let windows = [30 * 1_000_000_000, 60 * 1_000_000_000, 300 * 1_000_000_000];
        let got = live.slowest(now, &windows);
        assert_eq!(got[0].1, 1, "only c ended in the last 30 s");
        assert_eq!(got[1].1, 2);
        assert_eq!(got[2].1, 3);
        assert_eq!(got[0].0[0].p99_us, 900);
        // A trace that changed is counted once, as it is now.
        live.add(SettledHops {
            next: 4,
            traces: vec![trace("c", 195, 5)],
        });
        assert_eq!(live.slowest(now, &windows)[0].0[0].p99_us, 5);
        assert_eq!(live.next(), 4);
        live.forget_before(120 * 1_000_000_000);
        assert_eq!(live.len(), 2);
    }

    fn to_hex_trace(trace: u8) -> String {
        crate::telemetry::store::to_hex(&[trace; 16])
    }

    fn hops(pairs: &[(&str, u64)]) -> BTreeMap<String, u64> {
        pairs.iter().map(|(k, v)| (k.to_string(), *v)).collect()
    }

    #[test]
    fn the_breakdown_keeps_per_phase_histograms_and_the_slowest_sagas() {
        let mut breakdown = HopBreakdown::new();
        for i in 0..25u64 {
            let phase = if i < 20 {
                "before"
            } else {
                "during:kill-order"
            };
            breakdown.add_saga(
                &[phase],
                &format!("order-{i}"),
                &format!("trace-{i}"),
                1_000 * (i + 1),
                &hops(&[("order db", 100 * (i + 1)), ("gateway → order", 50)]),
            );
        }
        breakdown.add_without_trace();
        let store = SpanStore::new(10);
        let report = breakdown.report(&store).unwrap();

        assert_eq!((report.sagas_traced, report.sagas_without_trace), (25, 1));
        assert_eq!(report.phases["all"].sagas, 25);
        assert_eq!(report.phases["before"].sagas, 20);
        assert_eq!(report.phases["during:kill-order"].sagas, 5);
        let db = &report.phases["during:kill-order"].hops["order db"];
        assert_eq!(db.count, 5);
        // HDR histograms are exact to 3 significant digits.
        assert!((2_495..=2_505).contains(&db.max_us.unwrap()), "{db:?}");

        let slowest: Vec<_> = report.slowest.iter().map(|s| s.total_us).collect();
        assert_eq!(
            slowest,
            (16..=25).rev().map(|i| 1_000 * i).collect::<Vec<_>>()
        );
        assert_eq!(report.slowest[0].phase, "during:kill-order");
        assert_eq!(report.slowest[9].phase, "before");
        assert_eq!(report.slowest[0].hops["order db"], 2_500);

        let json = serde_json::to_string(&report).unwrap();
        assert_eq!(serde_json::from_str::<TraceReport>(&json).unwrap(), report);
    }
}
