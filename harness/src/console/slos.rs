//! The SLOs of a run, live (`harness run --tui`): every objective of the scenario judged once a
//! second by the code that judges the run at its end ([`slo::evaluate_one`]), on what has been
//! measured so far, with the error budget left where the objective has one
//! ([`slo::budget_left`]).
//!
//! What the judgement reads comes from where the run's own does:
//! - requests, saga completions, outcomes and the load's phases: the load's recorder, whose
//!   measurements so far the load hands over when it starts ([`measuring`]);
//! - metric objectives: the `/metrics` the console scrapes once a second ([`scraped`], from
//!   [`super::source`]), labelled as the run's scraper labels them, at times from the load's
//!   start;
//! - span objectives: each traced saga's hops, cut at its terminal time, from the collector
//!   once its trace has settled ([`sagas_wanted`] and [`sagas_hops`], asked by
//!   [`super::source`]: the collector computes them as the report does, with
//!   `telemetry::hops::saga_hops`), added to the same per-phase histograms the report's hop
//!   breakdown builds. A saga whose trace has not arrived a minute after its end is given up
//!   (the report counts it as a saga without a trace).
//!
//! An objective with nothing to read yet (its phase has not come, no saga finished, no scrape
//! had the metric, no traced saga went through the hop) is "not yet measurable", never a pass
//! or a fail. The state is one per process, like the view's tap ([`super::live`]): [`open`]
//! while a view of a run is up, [`close`] after.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Instant;

use super::state::SloLive;
use crate::load::TracedSaga;
use crate::metrics::Measurements;
use crate::scenario::{Objective, Scenario, Target};
use crate::slo::{self, SloVerdict};
use crate::telemetry::hops::{HopBreakdown, SETTLE, SagaTrace, TraceHops};
use crate::telemetry::scrape::{self, Sample, Selector, Series};

/// The load's measurements so far, and the traced sagas seen terminal after the first `n`.
pub type Snapshot = Box<dyn Fn(usize) -> Option<(Measurements, Vec<TracedSaga>)> + Send>;

/// A scraped series: its name and labels.
type SeriesKey = (String, BTreeMap<String, String>);

/// Everything the live judgement keeps between two seconds.
struct Judge {
    objectives: Vec<Objective>,
    /// The metric objectives' selectors.
    selectors: Vec<Selector>,
    /// The hops the span objectives name.
    span_hops: Vec<String>,
    load: Option<Load>,
}

/// One load of the run (a run of variants has one per variant).
struct Load {
    started: Instant,
    snapshot: Snapshot,
    /// The metric objectives' series, by name and labels, at seconds since `started`.
    series: BTreeMap<SeriesKey, Vec<(f64, f64)>>,
    /// Traced sagas taken from the load so far.
    traced_seen: usize,
    /// Traced sagas whose hops have not arrived yet.
    waiting: Vec<TracedSaga>,
    breakdown: HopBreakdown,
}

static JUDGE: Mutex<Option<Judge>> = Mutex::new(None);

fn lock() -> MutexGuard<'static, Option<Judge>> {
    JUDGE.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A view of a run of `scenario` is up: the load's measurements, scrapes and traces are kept
/// for its SLOs from now on.
pub fn open(scenario: &Scenario) {
    *lock() = Some(Judge::new(scenario));
}

/// The view is gone: nothing more is kept.
pub fn close() {
    *lock() = None;
}

/// The load starts at `started`; `snapshot` gives what it has measured so far. Called by the
/// load; does nothing unless a view is [`open`].
pub fn measuring(
    started: Instant,
    snapshot: impl Fn(usize) -> Option<(Measurements, Vec<TracedSaga>)> + Send + 'static,
) {
    if let Some(judge) = lock().as_mut() {
        judge.measuring(started, Box::new(snapshot));
    }
}

/// One tick's scrapes, by process: what the metric objectives read is kept.
pub fn scraped(samples: &[(&str, Vec<Sample>)]) {
    if let Some(judge) = lock().as_mut() {
        judge.scraped(samples);
    }
}

/// The traced sagas whose hops the span objectives wait for and whose trace has had time to
/// settle, at most `limit`; none without a span objective.
pub fn sagas_wanted(limit: usize) -> Vec<SagaTrace> {
    lock()
        .as_ref()
        .map(|judge| judge.sagas_wanted(limit))
        .unwrap_or_default()
}

/// Traced sagas' hops, from the collector: into the span objectives' histograms.
pub fn sagas_hops(hops: Vec<TraceHops>) {
    if let Some(judge) = lock().as_mut() {
        judge.sagas_hops(hops);
    }
}

/// Every objective judged on what was measured so far; empty before the load starts, after it
/// is gone, or without a view.
pub fn judge() -> Vec<SloLive> {
    lock().as_mut().map(Judge::judge).unwrap_or_default()
}

impl Judge {
    fn new(scenario: &Scenario) -> Self {
        let objectives = scenario.objectives();
        let selectors = objectives
            .iter()
            .filter_map(|o| match &o.target {
                Target::MetricMax { selector, .. } | Target::MetricMin { selector, .. } => {
                    selector.parse().ok()
                }
                _ => None,
            })
            .collect();
        let span_hops = objectives
            .iter()
            .filter_map(|o| match &o.target {
                Target::Span { hop, .. } => Some(hop.clone()),
                _ => None,
            })
            .collect();
        Self {
            objectives,
            selectors,
            span_hops,
            load: None,
        }
    }

    fn measuring(&mut self, started: Instant, snapshot: Snapshot) {
        self.load = Some(Load {
            started,
            snapshot,
            series: BTreeMap::new(),
            traced_seen: 0,
            waiting: Vec::new(),
            breakdown: HopBreakdown::new(),
        });
    }

    fn scraped(&mut self, samples: &[(&str, Vec<Sample>)]) {
        if self.selectors.is_empty() {
            return;
        }
        let Some(load) = self.load.as_mut() else {
            return;
        };
        let t = load.started.elapsed().as_secs_f64();
        for (process, samples) in samples {
            let target = scrape::Target {
                process: (*process).to_string(),
                service: process.split('#').next().unwrap_or(process).to_string(),
                url: String::new(),
            };
            for s in scrape::label_with_target(samples.clone(), &target) {
                if !self
                    .selectors
                    .iter()
                    .any(|sel| sel.matches(&s.name, &s.labels))
                {
                    continue;
                }
                let points = load.series.entry((s.name, s.labels)).or_default();
                match points.last_mut() {
                    // A line repeated in one exposition: the last counts, as for the run.
                    Some(last) if last.0 == t => last.1 = s.value,
                    _ => points.push((t, s.value)),
                }
            }
        }
    }

    fn sagas_wanted(&self, limit: usize) -> Vec<SagaTrace> {
        let Some(load) = self.load.as_ref().filter(|_| !self.span_hops.is_empty()) else {
            return Vec::new();
        };
        let settled_before = unix_ns().saturating_sub(nanos(SETTLE));
        load.waiting
            .iter()
            .filter(|saga| saga.terminal_at_unix_ns <= settled_before)
            .take(limit)
            .map(|saga| SagaTrace {
                trace_id: saga.trace_id.clone(),
                terminal_at_unix_ns: saga.terminal_at_unix_ns,
            })
            .collect()
    }

    fn sagas_hops(&mut self, hops: Vec<TraceHops>) {
        if let Some(load) = self.load.as_mut() {
            load.add_traced_sagas(hops);
        }
    }

    fn judge(&mut self) -> Vec<SloLive> {
        let Some(load) = self.load.as_mut() else {
            return Vec::new();
        };
        let Some((mut m, traced)) = (load.snapshot)(load.traced_seen) else {
            return Vec::new();
        };
        load.traced_seen += traced.len();
        if !self.span_hops.is_empty() {
            load.waiting.extend(traced);
        }
        m.scraped = Arc::new(
            load.series
                .iter()
                .map(|((name, labels), points)| Series {
                    name: name.clone(),
                    labels: labels.clone(),
                    points: points.clone(),
                })
                .collect(),
        );
        m.hops = load.hop_histograms(&self.span_hops);
        self.objectives
            .iter()
            .map(|o| live(&slo::evaluate_one(o, &m), slo::budget_left(o, &m)))
            .collect()
    }
}

impl Load {
    /// The traced sagas whose hops arrived go into the breakdown, as the report's do; those
    /// still without a trace a minute after their end are given up.
    fn add_traced_sagas(&mut self, hops: Vec<TraceHops>) {
        let mut arrived: BTreeMap<String, BTreeMap<String, u64>> =
            hops.into_iter().map(|t| (t.trace_id, t.hops)).collect();
        let breakdown = &mut self.breakdown;
        let give_up_before = unix_ns().saturating_sub(nanos(GIVE_UP));
        self.waiting
            .retain(|saga| match arrived.remove(&saga.trace_id) {
                Some(hops) => {
                    breakdown.add_saga(
                        &saga.phases,
                        &saga.order_id.to_string(),
                        &saga.trace_id,
                        saga.completion_us,
                        &hops,
                    );
                    false
                }
                None => saga.terminal_at_unix_ns >= give_up_before,
            });
    }

    /// Phase → hop → histogram, for the hops the span objectives name.
    fn hop_histograms(
        &self,
        span_hops: &[String],
    ) -> BTreeMap<String, BTreeMap<String, crate::metrics::Latency>> {
        let mut out: BTreeMap<String, BTreeMap<String, crate::metrics::Latency>> = BTreeMap::new();
        for phase in self.breakdown.phase_names() {
            for hop in span_hops {
                if let Some(l) = self.breakdown.histogram(phase, hop) {
                    out.entry(phase.to_string())
                        .or_default()
                        .insert(hop.clone(), l.clone());
                }
            }
        }
        out
    }
}

/// How long after its end a saga's trace may still arrive.
const GIVE_UP: std::time::Duration = std::time::Duration::from_secs(60);

fn nanos(d: std::time::Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

fn unix_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

/// A verdict as the console shows it: not yet measurable when nothing was measured.
pub fn live(v: &SloVerdict, budget_left: Option<f64>) -> SloLive {
    match v.measured {
        Some(_) => SloLive {
            name: v.name.clone(),
            detail: format!("now {} (n={})", v.measured_display(), v.samples),
            held: Some(v.held),
            budget_left,
        },
        None => SloLive {
            name: v.name.clone(),
            detail: format!("not yet measurable: {}", v.detail),
            held: None,
            budget_left: None,
        },
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::metrics::{ALL, PhaseSpan};

    const SCENARIO: &str = r#"
description = "one fault, SLOs of every kind in phases"
[load]
users = 1
duration = "60s"
[[load.journeys]]
name = "place_order"
weight = 1
[[chaos]]
at = "10s"
for = "10s"
target = "gateway->payment"
fault = "latency"
latency = "100ms"
[[slo]]
endpoint = "POST /api/orders"
phase = "during"
p99 = "250ms"
error_rate = 0.1
[[slo]]
saga_completion_p99 = "1s"
[[slo]]
phase = "after"
metric = "outbox_pending_messages"
max = 100
"#;

    fn scenario() -> Scenario {
        let s = Scenario::from_toml(std::path::Path::new("t.toml"), SCENARIO).unwrap();
        s.validate().unwrap();
        s
    }

    fn judged(m: &Measurements) -> Vec<SloLive> {
        scenario()
            .objectives()
            .iter()
            .map(|o| live(&slo::evaluate_one(o, m), slo::budget_left(o, m)))
            .collect()
    }

    fn find<'a>(slos: &'a [SloLive], part: &str) -> &'a SloLive {
        slos.iter()
            .find(|s| s.name.contains(part))
            .unwrap_or_else(|| panic!("no SLO named like {part}: {slos:#?}"))
    }

    /// 12 s into the load: the fault's phase has begun.
    fn so_far() -> Measurements {
        let mut m = Measurements {
            duration: Duration::from_secs(12),
            measured_until: Duration::from_secs(12),
            windows: vec![
                PhaseSpan {
                    name: "before".into(),
                    start: Duration::ZERO,
                    end: Duration::from_secs(10),
                },
                PhaseSpan {
                    name: "during:latency gateway->payment".into(),
                    start: Duration::from_secs(10),
                    end: Duration::from_secs(20),
                },
                PhaseSpan {
                    name: "after".into(),
                    start: Duration::from_secs(20),
                    end: Duration::MAX,
                },
            ],
            ..Measurements::default()
        };
        let during = m.endpoint_mut("during:latency gateway->payment", "POST /api/orders");
        for ms in [100, 400, 120, 90] {
            during.latency.record(Duration::from_millis(ms));
        }
        during.ok = 3;
        during.errors = 1;
        during.errors_by_status.insert(500, 1);
        let mut sagas = crate::metrics::Latency::new();
        for ms in [300, 2_500, 2_800] {
            sagas.record(Duration::from_millis(ms));
        }
        m.saga_completion.insert(ALL.into(), sagas);
        m
    }

    #[test]
    fn a_saga_completion_slo_is_judged_live_with_the_runs_own_verdict() {
        let slos = judged(&so_far());
        let saga = find(&slos, "saga completion p99 <= 1s");
        assert_eq!(saga.held, Some(false), "{saga:?}");
        assert!(saga.detail.contains("n=3"), "{saga:?}");
        assert_eq!(
            saga.budget_left,
            Some(0.0),
            "2 of 3 sagas over 1s spend far more than 1%"
        );
        let p99 = find(&slos, "POST /api/orders p99 <= 250ms (during)");
        assert_eq!(
            p99.held,
            Some(false),
            "a p99 of 400ms breaks 250ms: {p99:?}"
        );
        let errors = find(&slos, "POST /api/orders error rate <= 0.1 (during)");
        assert_eq!(errors.held, Some(false), "1 of 4 failed: {errors:?}");
        assert_eq!(errors.budget_left, Some(0.0));
    }

    #[test]
    fn a_metric_slo_is_not_yet_measurable_before_its_phase_and_judged_once_scraped() {
        let mut m = so_far();
        let slos = judged(&m);
        let metric = find(&slos, "metric outbox_pending_messages");
        assert_eq!(metric.held, None, "{metric:?}");
        assert!(
            metric.detail.starts_with("not yet measurable"),
            "{metric:?}"
        );
        assert_eq!(
            judged(&Measurements::default())
                .iter()
                .filter(|s| s.held.is_some())
                .count(),
            0,
            "nothing measured, nothing judged"
        );

        m.duration = Duration::from_secs(25);
        m.measured_until = m.duration;
        m.scraped = Arc::new(vec![Series::of(
            "outbox_pending_messages",
            &[("process", "order#1")],
            &[(21.0, 40.0), (22.0, 140.0)],
        )]);
        let metric_now = judged(&m);
        let metric_now = find(&metric_now, "metric outbox_pending_messages");
        assert_eq!(metric_now.held, Some(false), "{metric_now:?}");
        assert!(metric_now.detail.contains("140"), "{metric_now:?}");
    }

    #[test]
    fn the_live_judge_reads_the_loads_snapshot_and_the_scrapes_it_was_given() {
        let mut judge = Judge::new(&scenario());
        assert!(judge.judge().is_empty(), "before the load, nothing to show");
        let started = Instant::now() - Duration::from_secs(25);
        judge.measuring(
            started,
            Box::new(|_| {
                let mut m = so_far();
                m.duration = Duration::from_secs(30);
                m.measured_until = m.duration;
                Some((m, Vec::new()))
            }),
        );
        let sample = Sample {
            name: "outbox_pending_messages".into(),
            labels: BTreeMap::new(),
            value: 7.0,
            kind: crate::telemetry::scrape::MetricKind::Gauge,
        };
        judge.scraped(&[("order#1", vec![sample])]);
        let slos = judge.judge();
        let metric = find(&slos, "metric outbox_pending_messages");
        assert_eq!(metric.held, Some(true), "{metric:?}");
        assert!(metric.detail.contains("now 7 (n=1)"), "{metric:?}");
        assert_eq!(find(&slos, "saga completion").held, Some(false));
    }

    #[test]
    fn a_span_slo_reads_the_traced_sagas_hops_once_their_trace_has_arrived() {
        const SPAN: &str = r#"
description = "a span SLO"
[load]
users = 1
duration = "60s"
[[load.journeys]]
name = "place_order"
weight = 1
[[slo]]
span = "order outbox wait order.events"
p99 = "50ms"
"#;
        let scenario = Scenario::from_toml(std::path::Path::new("t.toml"), SPAN).unwrap();
        scenario.validate().unwrap();
        let mut judge = Judge::new(&scenario);
        let saga = TracedSaga {
            order_id: contracts::domain::OrderId::new(),
            trace_id: "ab".repeat(16),
            phases: vec![ALL.to_string()],
            terminal_at_unix_ns: unix_ns() - 5_000_000_000,
            completion_us: 90_000,
        };
        judge.measuring(
            Instant::now(),
            Box::new(move |from| {
                Some((Measurements::default(), vec![saga.clone()][from..].to_vec()))
            }),
        );
        let waiting = judge.judge();
        assert_eq!(waiting[0].held, None, "no trace yet: {waiting:?}");
        let wanted = judge.sagas_wanted(10);
        assert_eq!(wanted.len(), 1, "its trace has had time to settle");
        assert_eq!(wanted[0].trace_id, "ab".repeat(16));

        judge.sagas_hops(vec![crate::telemetry::hops::TraceHops {
            trace_id: "ab".repeat(16),
            end_unix_ns: 0,
            hops: [
                ("order outbox wait order.events".to_string(), 80_000),
                ("order db".to_string(), 1_000),
            ]
            .into_iter()
            .collect(),
        }]);
        assert!(judge.sagas_wanted(10).is_empty(), "its hops are in");
        let judged = judge.judge();
        assert_eq!(judged[0].held, Some(false), "80ms breaks 50ms: {judged:?}");
        assert!(judged[0].detail.contains("n=1"), "{judged:?}");
    }
}
