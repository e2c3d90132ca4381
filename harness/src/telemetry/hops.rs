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
