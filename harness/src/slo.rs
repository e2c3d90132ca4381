//! SLO evaluation: every objective a scenario sets ([`Scenario::objectives`]) measured against
//! what the run recorded ([`Measurements`]), each with its target, the measured value and a
//! verdict.
//!
//! - Latency objectives read the endpoint's HDR histogram (`max` is the largest sample); an
//!   objective without an endpoint merges every endpoint of the phase.
//! - Error rate is failed requests over the requests the system served: a shed request (429 or
//!   503 with `Retry-After`) is neither a failure nor counted at all, and latencies are of
//!   served requests only. Minimum throughput is requests per second (shed ones included) over
//!   the load's duration (phase `all` only: other phases have no recorded duration yet).
//! - Goodput is orders confirmed per second over the phase's windows of time, by the second
//!   each saga ended CONFIRMED: the work done, whatever was offered or shed.
//! - Saga completion reads the accepted-to-terminal histogram; the endpoint is ignored. Both
//!   ends are on the harness's clock (from the answer that accepted the order to the first time
//!   the load saw it finished, [`crate::load`]'s saga watch or a client): no timestamp of the
//!   system's goes into it, so a service cannot make its sagas look faster than clients saw.
//! - Phase `all` reads the measurements of phase `all`; `before`, `during` and `after` merge
//!   every phase named so or `<phase>:<detail>` (`during:kill order#1`).
//!
//! - Span objectives read the per-saga histogram of one hop of the traces (`Measurements::hops`),
//!   merged over the phase like the others.
//! - Metric objectives read a scraped metric (summed over the series the selector matches, per
//!   scrape) at every scrape inside the phase's windows of time: its highest value must stay at
//!   most `max`, its lowest at least `min`.
//!
//! Nothing passes for want of data: an objective whose endpoint saw no request (or whose
//! scenario completed no saga) fails with the detail `no requests measured` (`no sagas measured`).
//! Limits are inclusive, as [`Target`] documents.
//!
//! [`Scenario::objectives`]: crate::scenario::Scenario::objectives

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::metrics::{EndpointStats, Latency, Measurements};
use crate::scenario::{HumanDuration, Objective, Percentile, Phase, Scenario, Target};
use crate::telemetry::scrape::{Selector, Series};

/// The detail of an objective on requests none of which were measured.
pub const NO_REQUESTS: &str = "no requests measured";
/// The detail of a saga completion objective when no saga was measured.
pub const NO_SAGAS: &str = "no sagas measured";
/// The detail of a span objective when no saga of the phase had the hop in its trace.
pub const NO_SPANS: &str = "no traced saga went through this hop";
/// The detail of a metric objective when no scrape of the phase had the metric.
pub const NO_SCRAPES: &str = "no scrape had this metric";

/// What an objective measures; with [`SloVerdict::unit`] it says how to read the numbers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SloMetric {
    /// An endpoint's latency percentile (see [`SloVerdict::percentile`]); lower is better.
    Latency,
    /// Failed requests / requests; lower is better.
    ErrorRate,
    /// Requests per second; higher is better.
    Throughput,
    /// Orders confirmed per second; higher is better.
    Goodput,
    /// Order accepted to saga terminal, at a percentile; lower is better.
    SagaCompletion,
    /// A hop of the sagas' traces, at a percentile; lower is better.
    Span,
    /// A scraped metric's highest value in the phase; lower is better.
    MetricMax,
    /// A scraped metric's lowest value in the phase; higher is better.
    MetricMin,
}

/// The unit of [`SloVerdict::target`] and [`SloVerdict::measured`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SloUnit {
    /// Microseconds.
    Micros,
    /// A fraction between 0 and 1.
    Ratio,
    /// Requests (for goodput: confirmed orders) per second.
    PerSecond,
    /// A metric's own unit, as scraped.
    Value,
}

/// One objective's result, as it goes into `report.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SloVerdict {
    /// The objective's stable name, e.g. `POST /api/orders p99 <= 1s`.
    pub name: String,
    pub metric: SloMetric,
    /// `p50`, `p95`, `p99` or `max` for latency and saga completion; absent otherwise.
    pub percentile: Option<String>,
    /// `None`: all requests together (and always for saga completion, span and metric
    /// objectives).
    pub endpoint: Option<String>,
    /// What a span or metric objective measures: the hop, or the metric selector.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
    /// `all`, `before`, `during` or `after`.
    pub phase: String,
    pub unit: SloUnit,
    /// The limit, inclusive: a maximum except for throughput, where it is a minimum.
    pub target: f64,
    /// The measured value; `None` when nothing was measured (the objective then fails).
    pub measured: Option<f64>,
    pub held: bool,
    /// One line for humans: the measured value against the target and the sample count, or
    /// why nothing was measured.
    pub detail: String,
    /// How many samples the measurement rests on (requests, or latencies, or sagas).
    pub samples: u64,
}

impl SloVerdict {
    /// The target for humans: `<= 1s`, `<= 0.01`, `>= 50/s`.
    pub fn target_display(&self) -> String {
        let op = if matches!(
            self.metric,
            SloMetric::Throughput | SloMetric::Goodput | SloMetric::MetricMin
        ) {
            ">="
        } else {
            "<="
        };
        format!("{op} {}", format_value(self.unit, self.target))
    }

    /// The measured value for humans; `-` when nothing was measured.
    pub fn measured_display(&self) -> String {
        self.measured
            .map_or_else(|| "-".to_string(), |v| format_value(self.unit, v))
    }
}

impl fmt::Display for SloVerdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let verdict = if self.held { "held" } else { "VIOLATED" };
        write!(f, "{}: {verdict}: {}", self.name, self.detail)
    }
}

/// A value in `unit` for humans: latencies as `850us`, `12.3ms`, `1.52s`; ratios as percentages.
pub fn format_value(unit: SloUnit, value: f64) -> String {
    match unit {
        SloUnit::Micros => format_micros(value),
        SloUnit::Ratio => format!("{:.2}%", value * 100.0),
        SloUnit::PerSecond => format!("{value:.1}/s"),
        SloUnit::Value => format_number(value),
    }
}

/// A scraped value for humans: integers as they are, others to four significant digits.
pub fn format_number(v: f64) -> String {
    if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{v:.0}")
    } else if v.abs() >= 1.0 {
        format!("{v:.3}")
            .trim_end_matches('0')
            .trim_end_matches('.')
            .to_string()
    } else {
        format!("{v:.4}")
    }
}

/// Microseconds for humans, three significant digits at most.
pub fn format_micros(us: f64) -> String {
    fn sig(v: f64) -> String {
        let s = if v >= 100.0 {
            format!("{v:.0}")
        } else if v >= 10.0 {
            format!("{v:.1}")
        } else {
            format!("{v:.2}")
        };
        if s.contains('.') {
            s.trim_end_matches('0').trim_end_matches('.').to_string()
        } else {
            s
        }
    }
    if us < 1_000.0 {
        format!("{}us", sig(us))
    } else if us < 1_000_000.0 {
        format!("{}ms", sig(us / 1_000.0))
    } else {
        format!("{}s", sig(us / 1_000_000.0))
    }
}

/// Every objective of the scenario, in file order.
pub fn evaluate_scenario(scenario: &Scenario, measurements: &Measurements) -> Vec<SloVerdict> {
    evaluate(&scenario.objectives(), measurements)
}

/// The verdicts of `objectives`, in their order.
pub fn evaluate(objectives: &[Objective], measurements: &Measurements) -> Vec<SloVerdict> {
    objectives
        .iter()
        .map(|o| evaluate_one(o, measurements))
        .collect()
}

/// Whether the measurements key `key` belongs to `phase`.
fn in_phase(phase: Phase, key: &str) -> bool {
    let name = phase.name();
    key == name
        || (phase != Phase::All && key.strip_prefix(name).is_some_and(|r| r.starts_with(':')))
}

/// The requests the objective is about, merged over the phase (and over all endpoints when the
/// objective names none).
fn requests(objective: &Objective, m: &Measurements) -> EndpointStats {
    let mut merged = EndpointStats::default();
    for (_, endpoints) in m
        .endpoints
        .iter()
        .filter(|(k, _)| in_phase(objective.phase, k))
    {
        for (name, stats) in endpoints {
            if objective.endpoint.as_deref().is_none_or(|e| e == name) {
                merged.merge(stats);
            }
        }
    }
    merged
}

fn sagas(phase: Phase, m: &Measurements) -> Latency {
    let mut merged = Latency::new();
    for (_, l) in m.saga_completion.iter().filter(|(k, _)| in_phase(phase, k)) {
        merged.merge(l);
    }
    merged
}

/// One hop's per-saga latencies, merged over the phase.
fn hops(phase: Phase, hop: &str, m: &Measurements) -> Latency {
    let mut merged = Latency::new();
    for (_, hops) in m.hops.iter().filter(|(k, _)| in_phase(phase, k)) {
        if let Some(l) = hops.get(hop) {
            merged.merge(l);
        }
    }
    merged
}

/// The windows of time of a phase: `all` is the whole load unless a window says otherwise.
/// A window ends at the latest where measuring ended: `after` is open-ended in the chaos
/// schedule (`faults::Schedule::phases`, to the end of the follow-up), and a rate over it must
/// not be divided by the time to `Duration::MAX`.
fn windows(phase: Phase, m: &Measurements) -> Vec<(f64, f64)> {
    let end = measured_end(m);
    let named: Vec<(f64, f64)> = m
        .windows
        .iter()
        .filter(|w| in_phase(phase, &w.name))
        .map(|w| (w.start.as_secs_f64(), w.end.as_secs_f64().min(end)))
        .collect();
    if named.is_empty() && phase == Phase::All {
        vec![(0.0, m.duration.as_secs_f64())]
    } else {
        named
    }
}

/// Where measuring ended, in seconds from the load's start: the recorded end of the follow-up;
/// without one, the end of the `all` window (a capacity step's view), else the load's duration.
fn measured_end(m: &Measurements) -> f64 {
    if !m.measured_until.is_zero() {
        return m.measured_until.max(m.duration).as_secs_f64();
    }
    m.windows
        .iter()
        .find(|w| w.name == crate::metrics::ALL)
        .map_or(m.duration, |w| w.end)
        .as_secs_f64()
}

/// Judges a metric objective: its extreme value over the scrapes inside the phase's windows
/// (`highest`: the maximum against a `max`, else the minimum against a `min`).
fn judge_metric(v: &mut SloVerdict, phase: Phase, selector: &str, m: &Measurements, highest: bool) {
    v.subject = Some(selector.to_string());
    let parsed = match selector.parse::<Selector>() {
        Ok(s) => s,
        Err(e) => {
            v.detail = format!("invalid selector: {e}");
            return;
        }
    };
    let spans = windows(phase, m);
    let points: Vec<(f64, f64)> = Series::select(&m.scraped, &parsed)
        .into_iter()
        .filter(|(t, _)| spans.iter().any(|(a, b)| a <= t && t <= b))
        .collect();
    v.samples = points.len() as u64;
    let extreme = points.iter().copied().reduce(|a, b| {
        let better = if highest { b.1 > a.1 } else { b.1 < a.1 };
        if better { b } else { a }
    });
    let Some((at, value)) = extreme else {
        v.detail = NO_SCRAPES.to_string();
        return;
    };
    v.measured = Some(value);
    v.held = if highest {
        value <= v.target
    } else {
        value >= v.target
    };
    let (which, verdict) = match (highest, v.held) {
        (true, true) => ("highest", "within"),
        (true, false) => ("highest", "above"),
        (false, true) => ("lowest", "at least"),
        (false, false) => ("lowest", "below"),
    };
    v.detail = format!(
        "{which} {} at {at:.0}s over {} scrapes; {verdict} {}",
        format_number(value),
        points.len(),
        format_number(v.target)
    );
}

fn percentile_value(latency: &Latency, p: Percentile) -> Option<u64> {
    let d = match p {
        Percentile::Max => latency.max(),
        other => latency.quantile(other.quantile()),
    };
    d.map(|d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
}

/// One objective against the measurements.
pub fn evaluate_one(objective: &Objective, m: &Measurements) -> SloVerdict {
    let name = objective.to_string();
    let mut v = SloVerdict {
        name,
        metric: SloMetric::Latency,
        percentile: None,
        endpoint: objective.endpoint.clone(),
        subject: None,
        phase: objective.phase.name().to_string(),
        unit: SloUnit::Micros,
        target: 0.0,
        measured: None,
        held: false,
        detail: String::new(),
        samples: 0,
    };
    match objective.target.clone() {
        Target::Span {
            hop,
            percentile,
            max,
        } => {
            let latency = hops(objective.phase, &hop, m);
            v.metric = SloMetric::Span;
            v.percentile = Some(percentile.name().to_string());
            v.subject = Some(hop);
            v.target = max.as_std().as_micros() as f64;
            v.samples = latency.count();
            match percentile_value(&latency, percentile) {
                None => v.detail = NO_SPANS.to_string(),
                Some(us) => {
                    let same = same_bucket(&latency, us, max);
                    judge_max(&mut v, us as f64, same, "sagas");
                }
            }
        }
        Target::MetricMax { selector, max } => {
            v.metric = SloMetric::MetricMax;
            v.unit = SloUnit::Value;
            v.target = max;
            judge_metric(&mut v, objective.phase, &selector, m, true);
        }
        Target::MetricMin { selector, min } => {
            v.metric = SloMetric::MetricMin;
            v.unit = SloUnit::Value;
            v.target = min;
            judge_metric(&mut v, objective.phase, &selector, m, false);
        }
        Target::Latency { percentile, max } => {
            let stats = requests(objective, m);
            let target = max.as_std().as_micros() as f64;
            v.percentile = Some(percentile.name().to_string());
            v.target = target;
            v.samples = stats.latency.count();
            if stats.requests() == 0 && stats.latency.count() == 0 {
                v.detail = NO_REQUESTS.to_string();
            } else if stats.served() == 0 && stats.latency.count() == 0 {
                v.detail = format!(
                    "all {} requests were shed; no served request to time",
                    stats.shed
                );
            } else if let Some(us) = percentile_value(&stats.latency, percentile) {
                let same = same_bucket(&stats.latency, us, max);
                judge_max(&mut v, us as f64, same, "latencies");
            } else {
                v.detail = format!(
                    "no latencies recorded ({} requests counted)",
                    stats.requests()
                );
            }
        }
        Target::ErrorRate { max } => {
            let stats = requests(objective, m);
            v.metric = SloMetric::ErrorRate;
            v.unit = SloUnit::Ratio;
            v.target = max;
            v.samples = stats.served();
            if stats.requests() == 0 {
                v.detail = NO_REQUESTS.to_string();
            } else if stats.served() == 0 {
                v.detail = format!(
                    "all {} requests were shed; none was served to fail or succeed",
                    stats.shed
                );
            } else {
                let rate = stats.error_rate();
                v.measured = Some(rate);
                v.held = rate <= max;
                let by_status: Vec<String> = stats
                    .errors_by_status
                    .iter()
                    .map(|(s, n)| {
                        if *s == 0 {
                            format!("transport {n}")
                        } else {
                            format!("{s}: {n}")
                        }
                    })
                    .collect();
                let statuses = if by_status.is_empty() {
                    String::new()
                } else {
                    format!("; {}", by_status.join(", "))
                };
                let shed = if stats.shed > 0 {
                    format!(" ({} more shed, not counted)", stats.shed)
                } else {
                    String::new()
                };
                v.detail = format!(
                    "{} of {} requests failed ({}){statuses}{shed}; {} {}",
                    stats.errors,
                    stats.served(),
                    format_value(SloUnit::Ratio, rate),
                    if v.held { "within" } else { "above" },
                    format_value(SloUnit::Ratio, max),
                );
            }
        }
        Target::MinThroughput { per_second } => {
            let stats = requests(objective, m);
            v.metric = SloMetric::Throughput;
            v.unit = SloUnit::PerSecond;
            v.target = per_second;
            v.samples = stats.requests();
            let secs = m.duration.as_secs_f64();
            if stats.requests() == 0 {
                v.detail = NO_REQUESTS.to_string();
            } else if objective.phase != Phase::All {
                v.detail = format!(
                    "throughput of phase {} cannot be measured: phase durations are not recorded",
                    objective.phase.name()
                );
            } else if secs <= 0.0 {
                v.detail = "the load's duration was not measured".to_string();
            } else {
                let rate = stats.requests() as f64 / secs;
                v.measured = Some(rate);
                v.held = rate >= per_second;
                v.detail = format!(
                    "{} requests in {secs:.1}s = {}; {} {}",
                    stats.requests(),
                    format_value(SloUnit::PerSecond, rate),
                    if v.held { "at least" } else { "below" },
                    format_value(SloUnit::PerSecond, per_second),
                );
            }
        }
        Target::MinGoodput { per_second } => {
            v.metric = SloMetric::Goodput;
            v.unit = SloUnit::PerSecond;
            v.target = per_second;
            v.endpoint = None;
            match m.goodput(&windows(objective.phase, m)) {
                None => v.detail = format!("phase {} covers no time", objective.phase.name()),
                Some((rate, confirmed, secs)) => {
                    v.samples = confirmed;
                    v.measured = Some(rate);
                    v.held = rate >= per_second;
                    v.detail = format!(
                        "{confirmed} orders confirmed in {secs:.1}s = {}; {} {}",
                        format_value(SloUnit::PerSecond, rate),
                        if v.held { "at least" } else { "below" },
                        format_value(SloUnit::PerSecond, per_second),
                    );
                }
            }
        }
        Target::SagaCompletion { percentile, max } => {
            let latency = sagas(objective.phase, m);
            v.metric = SloMetric::SagaCompletion;
            v.percentile = Some(percentile.name().to_string());
            v.endpoint = None;
            v.target = max.as_std().as_micros() as f64;
            v.samples = latency.count();
            match percentile_value(&latency, percentile) {
                None => v.detail = NO_SAGAS.to_string(),
                Some(us) => {
                    let same = same_bucket(&latency, us, max);
                    judge_max(&mut v, us as f64, same, "sagas");
                }
            }
        }
    }
    v
}

/// The share of an objective's error budget left (0 to 1) in `m`, for objectives that have
/// one: an error rate's budget is its `max` of the requests served; a latency, saga completion
/// or span percentile `pN <= limit` allows `100 - N` % of its samples above the limit. `None`
/// for the others (throughput, goodput, metric extremes and `max` have no budget to spend) and
/// when nothing was measured. A console shows it beside [`evaluate_one`]'s verdict.
pub fn budget_left(objective: &Objective, m: &Measurements) -> Option<f64> {
    let over_share = |latency: &Latency, percentile: Percentile, limit: HumanDuration| {
        let total = latency.count();
        if total == 0 || percentile == Percentile::Max {
            return None;
        }
        let limit_us = u64::try_from(limit.as_std().as_micros()).unwrap_or(u64::MAX);
        let within = latency.histogram().count_between(0, limit_us);
        let over = total.saturating_sub(within) as f64 / total as f64;
        Some(over / (1.0 - percentile.quantile()))
    };
    let spent = match &objective.target {
        Target::ErrorRate { max } => {
            let stats = requests(objective, m);
            if stats.served() == 0 || *max <= 0.0 {
                return None;
            }
            stats.error_rate() / max
        }
        Target::Latency { percentile, max } => {
            over_share(&requests(objective, m).latency, *percentile, *max)?
        }
        Target::SagaCompletion { percentile, max } => {
            over_share(&sagas(objective.phase, m), *percentile, *max)?
        }
        Target::Span {
            hop,
            percentile,
            max,
        } => over_share(&hops(objective.phase, hop, m), *percentile, *max)?,
        Target::MetricMax { .. }
        | Target::MetricMin { .. }
        | Target::MinThroughput { .. }
        | Target::MinGoodput { .. } => return None,
    };
    Some((1.0 - spent).clamp(0.0, 1.0))
}

/// Whether `measured` (a value the histogram reported, which is the highest value of its
/// bucket) and the target fall into the same bucket: the histogram cannot tell them apart, so
/// the target is met. Without this a p99 of exactly 1s would be reported as 1.000447s and fail
/// `p99 <= 1s`.
fn same_bucket(latency: &Latency, measured_us: u64, target: HumanDuration) -> bool {
    let target_us = u64::try_from(target.as_std().as_micros()).unwrap_or(u64::MAX);
    latency.histogram().equivalent(measured_us, target_us)
}

/// Fills a latency-like verdict whose limit is a maximum in µs; `same_bucket`: the measured value
/// is indistinguishable from the target at the histogram's precision, which meets it.
fn judge_max(v: &mut SloVerdict, measured: f64, same_bucket: bool, what: &str) {
    v.measured = Some(measured);
    v.held = measured <= v.target || same_bucket;
    let p = v.percentile.as_deref().unwrap_or("value");
    let measured_s = format_micros(measured);
    let target_s = format_micros(v.target);
    v.detail = if v.held {
        format!("{p} {measured_s} within {target_s} ({} {what})", v.samples)
    } else {
        let ratio = measured / v.target;
        let over = if v.target > 0.0 && ratio >= 10.0 {
            format!(", {ratio:.0}x the target")
        } else if v.target > 0.0 {
            format!(" by {:.0}%", (ratio - 1.0) * 100.0)
        } else {
            String::new()
        };
        format!(
            "{p} {measured_s} exceeds {target_s}{over} ({} {what})",
            v.samples
        )
    };
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::metrics::{ALL, PhaseSpan};

    const ORDERS: &str = "POST /api/orders";
    const PRODUCTS: &str = "GET /api/products";

    fn measurements() -> Measurements {
        let mut m = Measurements::default();
        let orders = m.endpoint_mut(ALL, ORDERS);
        for ms in 1..=100 {
            orders.latency.record(Duration::from_millis(ms));
        }
        orders.ok = 98;
        orders.errors = 2;
        orders.errors_by_status.insert(503, 2);
        let products = m.endpoint_mut(ALL, PRODUCTS);
        for _ in 0..100 {
            products.latency.record(Duration::from_millis(500));
        }
        products.ok = 100;
        let mut saga = Latency::new();
        for ms in 1..=10 {
            saga.record(Duration::from_millis(ms * 100));
        }
        m.saga_completion.insert(ALL.into(), saga);
        m.duration = Duration::from_secs(10);
        m
    }

    fn latency(endpoint: Option<&str>, percentile: Percentile, max: &str) -> Objective {
        Objective {
            endpoint: endpoint.map(str::to_string),
            phase: Phase::All,
            target: Target::Latency {
                percentile,
                max: max.parse::<HumanDuration>().unwrap(),
            },
        }
    }

    fn one(o: Objective, m: &Measurements) -> SloVerdict {
        evaluate(&[o], m).remove(0)
    }

    #[test]
    fn latency_percentiles_hold_and_fail_against_their_targets() {
        let m = measurements();
        for (p, ok, bad) in [
            (Percentile::P50, "60ms", "40ms"),
            (Percentile::P95, "100ms", "90ms"),
            (Percentile::P99, "100ms", "98ms"),
            (Percentile::Max, "101ms", "99ms"),
        ] {
            let held = one(latency(Some(ORDERS), p, ok), &m);
            assert!(held.held, "{held}");
            assert_eq!(held.samples, 100);
            assert_eq!(held.metric, SloMetric::Latency);
            assert_eq!(held.percentile.as_deref(), Some(p.name()));
            let violated = one(latency(Some(ORDERS), p, bad), &m);
            assert!(!violated.held, "{violated}");
            assert!(violated.detail.contains("exceeds"), "{}", violated.detail);
            assert!(violated.measured.unwrap() > violated.target);
        }
    }

    #[test]
    fn an_impossible_slo_fails_and_names_itself() {
        let v = one(
            latency(Some(ORDERS), Percentile::P99, "1us"),
            &measurements(),
        );
        assert!(!v.held);
        assert_eq!(v.name, "POST /api/orders p99 <= 1us");
        assert_eq!(v.target, 1.0);
        assert!(
            v.to_string()
                .starts_with("POST /api/orders p99 <= 1us: VIOLATED")
        );
    }

    #[test]
    fn an_objective_without_endpoint_merges_all_requests() {
        let m = measurements();
        // Half the samples are 500ms, so all requests together have a p99 of 500ms.
        let v = one(latency(None, Percentile::P99, "400ms"), &m);
        assert!(!v.held);
        assert_eq!(v.samples, 200);
        assert!((v.measured.unwrap() - 500_000.0).abs() < 1_000.0, "{v:?}");
        assert_eq!(v.name, "all requests p99 <= 400ms");
        let rate = one(
            Objective {
                endpoint: None,
                phase: Phase::All,
                target: Target::ErrorRate { max: 0.01 },
            },
            &m,
        );
        assert!(rate.held, "{rate}");
        assert_eq!(rate.measured, Some(0.01));
    }

    #[test]
    fn latency_on_an_endpoint_without_requests_fails_explicitly() {
        let v = one(
            latency(Some("GET /api/nothing"), Percentile::P50, "1m"),
            &measurements(),
        );
        assert!(!v.held);
        assert_eq!(v.measured, None);
        assert_eq!(v.detail, NO_REQUESTS);
        let empty = one(
            latency(None, Percentile::Max, "1m"),
            &Measurements::default(),
        );
        assert!(!empty.held);
        assert_eq!(empty.detail, NO_REQUESTS);
    }

    fn error_rate(endpoint: &str, max: f64) -> Objective {
        Objective {
            endpoint: Some(endpoint.into()),
            phase: Phase::All,
            target: Target::ErrorRate { max },
        }
    }

    #[test]
    fn error_rate_holds_fails_and_needs_requests() {
        let m = measurements();
        let held = one(error_rate(ORDERS, 0.02), &m);
        assert!(held.held, "{held}");
        assert_eq!(held.unit, SloUnit::Ratio);
        let violated = one(error_rate(ORDERS, 0.01), &m);
        assert!(!violated.held);
        assert!(violated.detail.contains("2 of 100"), "{}", violated.detail);
        assert!(violated.detail.contains("503: 2"), "{}", violated.detail);
        let none = one(error_rate("GET /api/nothing", 1.0), &m);
        assert!(!none.held);
        assert_eq!(none.detail, NO_REQUESTS);
    }

    fn throughput(endpoint: &str, per_second: f64) -> Objective {
        Objective {
            endpoint: Some(endpoint.into()),
            phase: Phase::All,
            target: Target::MinThroughput { per_second },
        }
    }

    #[test]
    fn min_throughput_holds_fails_and_needs_requests() {
        let m = measurements();
        let held = one(throughput(PRODUCTS, 10.0), &m);
        assert!(held.held, "{held}");
        assert_eq!(held.measured, Some(10.0));
        let violated = one(throughput(PRODUCTS, 10.5), &m);
        assert!(!violated.held);
        assert!(violated.detail.contains("below"), "{}", violated.detail);
        assert_eq!(violated.target_display(), ">= 10.5/s");
        let none = one(throughput("GET /api/nothing", 0.0), &m);
        assert!(!none.held, "zero requests never meet even a zero minimum");
        assert_eq!(none.detail, NO_REQUESTS);
    }

    #[test]
    fn shed_requests_are_not_errors_and_the_error_rate_is_of_served_requests() {
        let mut m = measurements();
        let orders = m.endpoint_mut(ALL, ORDERS);
        orders.shed = 400;
        orders.shed_by_status.insert(503, 400);
        // 2 of the 100 served failed, whatever was shed besides.
        let v = one(error_rate(ORDERS, 0.02), &m);
        assert!(v.held, "{v}");
        assert_eq!(v.measured, Some(0.02));
        assert_eq!(v.samples, 100);
        assert!(
            v.detail.contains("400 more shed, not counted"),
            "{}",
            v.detail
        );
        // Throughput counts every request sent, shed ones included.
        let t = one(throughput(ORDERS, 50.0), &m);
        assert_eq!(t.measured, Some(50.0));

        let mut all_shed = Measurements::default();
        all_shed.endpoint_mut(ALL, ORDERS).shed = 7;
        all_shed.duration = Duration::from_secs(1);
        let rate = one(error_rate(ORDERS, 1.0), &all_shed);
        assert!(!rate.held, "nothing served, nothing to pass on");
        assert!(
            rate.detail.contains("all 7 requests were shed"),
            "{}",
            rate.detail
        );
        let p99 = one(latency(Some(ORDERS), Percentile::P99, "1s"), &all_shed);
        assert!(!p99.held);
        assert!(
            p99.detail.contains("all 7 requests were shed"),
            "{}",
            p99.detail
        );
    }

    fn goodput(phase: Phase, per_second: f64) -> Objective {
        Objective {
            endpoint: None,
            phase,
            target: Target::MinGoodput { per_second },
        }
    }

    #[test]
    fn goodput_is_confirmed_orders_per_second_of_the_phase() {
        let mut m = measurements();
        for second in 0..12 {
            // 10 confirmed per second during the load, and many more after it: those ended
            // after the load and are not its goodput.
            m.bucket_mut(second).orders_confirmed = if second < 10 { 10 } else { 500 };
        }
        let held = one(goodput(Phase::All, 10.0), &m);
        assert!(held.held, "{held}");
        assert_eq!(held.metric, SloMetric::Goodput);
        assert_eq!(held.measured, Some(10.0));
        assert_eq!(held.samples, 100);
        assert_eq!(held.name, "goodput >= 10 confirmed orders/s");
        assert_eq!(held.target_display(), ">= 10.0/s");
        let violated = one(goodput(Phase::All, 12.5), &m);
        assert!(!violated.held);
        assert!(
            violated
                .detail
                .starts_with("100 orders confirmed in 10.0s = 10.0/s; below"),
            "{}",
            violated.detail
        );
        // A phase of its own windows: `during` the 2 s of a fault.
        m.windows = vec![PhaseSpan {
            name: "during:kill order#1".into(),
            start: Duration::from_secs(4),
            end: Duration::from_secs(6),
        }];
        let during = one(goodput(Phase::During, 10.0), &m);
        assert_eq!((during.measured, during.samples), (Some(10.0), 20));
        let after = one(goodput(Phase::After, 1.0), &m);
        assert!(!after.held && after.measured.is_none(), "{after}");
    }

    #[test]
    fn goodput_after_the_last_fault_is_over_the_time_to_the_end_of_the_follow_up() {
        let mut m = measurements();
        for second in 0..12 {
            m.bucket_mut(second).orders_confirmed = 10;
        }
        // The load ran 10 s, the follow-up of its pending orders 2 s more.
        m.measured_until = Duration::from_secs(12);
        // As `faults::Schedule::phases` defines it: from the last heal on, open-ended.
        m.windows = vec![PhaseSpan {
            name: "after".into(),
            start: Duration::from_secs(6),
            end: Duration::MAX,
        }];
        let after = one(goodput(Phase::After, 10.0), &m);
        assert!(after.held, "{after}");
        assert_eq!((after.measured, after.samples), (Some(10.0), 60));
        assert!(
            after.detail.starts_with("60 orders confirmed in 6.0s"),
            "{after}"
        );
    }

    fn saga(max: &str) -> Objective {
        Objective {
            endpoint: None,
            phase: Phase::All,
            target: Target::SagaCompletion {
                percentile: Percentile::P99,
                max: max.parse::<HumanDuration>().unwrap(),
            },
        }
    }

    #[test]
    fn saga_completion_holds_fails_and_needs_sagas() {
        let m = measurements();
        // The p99 is exactly 1s; the histogram reports 1.000447s, the top of its bucket.
        let held = one(saga("1s"), &m);
        assert!(held.held, "{held}");
        assert_eq!(held.metric, SloMetric::SagaCompletion);
        assert_eq!(held.samples, 10);
        let violated = one(saga("900ms"), &m);
        assert!(!violated.held);
        assert_eq!(violated.name, "saga completion p99 <= 900ms");
        let none = one(saga("1s"), &Measurements::default());
        assert!(!none.held);
        assert_eq!(none.detail, NO_SAGAS);
    }

    #[test]
    fn phases_merge_their_sub_phases_and_all_reads_only_all() {
        let mut m = Measurements::default();
        m.endpoint_mut("during:kill order#1", ORDERS)
            .latency
            .record(Duration::from_secs(2));
        m.endpoint_mut("during:kill order#1", ORDERS).ok += 1;
        m.endpoint_mut("during:pause payment#1", ORDERS)
            .latency
            .record(Duration::from_secs(3));
        m.endpoint_mut("during:pause payment#1", ORDERS).ok += 1;
        let mut during = latency(Some(ORDERS), Percentile::Max, "1s");
        during.phase = Phase::During;
        let v = one(during, &m);
        assert_eq!(v.samples, 2);
        assert!(!v.held);
        assert!(v.name.ends_with("(during)"), "{}", v.name);
        let all = one(latency(Some(ORDERS), Percentile::Max, "1s"), &m);
        assert_eq!(all.detail, NO_REQUESTS);
    }

    fn span(phase: Phase, hop: &str, percentile: Percentile, max: &str) -> Objective {
        Objective {
            endpoint: None,
            phase,
            target: Target::Span {
                hop: hop.into(),
                percentile,
                max: max.parse::<HumanDuration>().unwrap(),
            },
        }
    }

    #[test]
    fn a_span_objective_reads_its_hop_merged_over_the_phase() {
        let mut m = Measurements::default();
        let mut record = |phase: &str, hop: &str, ms: &[u64]| {
            let l = m
                .hops
                .entry(phase.into())
                .or_default()
                .entry(hop.into())
                .or_default();
            for ms in ms {
                l.record(Duration::from_millis(*ms));
            }
        };
        record(ALL, "order db", &[1, 2, 3, 200, 300]);
        record("during:kill order#1", "order db", &[200]);
        record("during:pause payment#1", "order db", &[300]);
        record("during:pause payment#1", "payment db", &[900]);
        record("before", "order db", &[1, 2, 3]);

        let during = one(
            span(Phase::During, "order db", Percentile::Max, "250ms"),
            &m,
        );
        assert_eq!(during.metric, SloMetric::Span);
        assert_eq!(during.subject.as_deref(), Some("order db"));
        assert_eq!(during.percentile.as_deref(), Some("max"));
        assert_eq!(during.samples, 2, "both during phases, and only them");
        assert!(!during.held, "{during}");
        assert!(
            (during.measured.unwrap() - 300_000.0).abs() < 1_000.0,
            "{during:?}"
        );
        assert!(during.detail.contains("(2 sagas)"), "{}", during.detail);
        assert_eq!(
            during.name, "span \"order db\" max <= 250ms (during)",
            "the name already carries the hop"
        );

        let before = one(span(Phase::Before, "order db", Percentile::P99, "5ms"), &m);
        assert!(before.held, "{before}");
        assert_eq!(before.samples, 3);
        let all = one(span(Phase::All, "order db", Percentile::P50, "5ms"), &m);
        assert!(all.held, "{all}");
        assert_eq!(all.samples, 5, "phase all reads only all");

        let missing = one(span(Phase::Before, "payment db", Percentile::P99, "1s"), &m);
        assert!(!missing.held);
        assert_eq!(missing.measured, None);
        assert_eq!(missing.detail, NO_SPANS);
    }

    fn scraped_measurements() -> Measurements {
        let series = |process: &str, points: &[(f64, f64)]| Series {
            name: "outbox_pending_messages".into(),
            labels: [("process".to_string(), process.to_string())].into(),
            points: points.to_vec(),
        };
        let window = |name: &str, start: u64, end: u64| PhaseSpan {
            name: name.into(),
            start: Duration::from_secs(start),
            end: Duration::from_secs(end),
        };
        Measurements {
            scraped: std::sync::Arc::new(vec![
                series(
                    "order#1",
                    &[(1.0, 5.0), (4.0, 50.0), (5.0, 20.0), (8.0, 3.0)],
                ),
                series("order#2", &[(1.0, 1.0), (4.0, 1.0), (5.0, 0.0), (8.0, 2.0)]),
            ]),
            windows: vec![
                window("before", 0, 3),
                window("during:kill order#1", 3, 6),
                window("after", 6, 10),
            ],
            duration: Duration::from_secs(10),
            ..Measurements::default()
        }
    }

    fn metric_max(phase: Phase, selector: &str, max: f64) -> Objective {
        Objective {
            endpoint: None,
            phase,
            target: Target::MetricMax {
                selector: selector.into(),
                max,
            },
        }
    }

    fn metric_min(phase: Phase, selector: &str, min: f64) -> Objective {
        Objective {
            endpoint: None,
            phase,
            target: Target::MetricMin {
                selector: selector.into(),
                min,
            },
        }
    }

    #[test]
    fn a_metric_max_objective_reads_the_scrapes_inside_the_phase_windows_only() {
        let m = scraped_measurements();
        let sum = "outbox_pending_messages";

        // Before the kill: one scrape, both processes summed.
        let before = one(metric_max(Phase::Before, sum, 10.0), &m);
        assert_eq!(before.metric, SloMetric::MetricMax);
        assert_eq!(before.unit, SloUnit::Value);
        assert_eq!(before.subject.as_deref(), Some(sum));
        assert_eq!((before.measured, before.samples), (Some(6.0), 1));
        assert!(before.held, "{before}");

        // During it: the peak of 51 at 4s.
        let during = one(metric_max(Phase::During, sum, 10.0), &m);
        assert_eq!((during.measured, during.samples), (Some(51.0), 2));
        assert!(!during.held);
        assert_eq!(during.detail, "highest 51 at 4s over 2 scrapes; above 10");
        assert_eq!(during.target_display(), "<= 10");

        // Phase all without a window of its own is the whole load.
        let all = one(metric_max(Phase::All, sum, 10.0), &m);
        assert_eq!((all.measured, all.samples), (Some(51.0), 4));
    }

    #[test]
    fn a_metric_min_objective_reads_the_lowest_scrape_of_the_phase() {
        let m = scraped_measurements();
        let order2 = r#"outbox_pending_messages{process="order#2"}"#;
        let during = one(metric_min(Phase::During, order2, 1.0), &m);
        assert_eq!(during.metric, SloMetric::MetricMin);
        assert_eq!(during.measured, Some(0.0), "only order#2's series");
        assert!(!during.held);
        assert_eq!(during.detail, "lowest 0 at 5s over 2 scrapes; below 1");
        assert_eq!(during.target_display(), ">= 1");

        let after = one(metric_min(Phase::After, order2, 2.0), &m);
        assert!(after.held, "{after}");
        assert_eq!(after.detail, "lowest 2 at 8s over 1 scrapes; at least 2");
    }

    #[test]
    fn a_metric_objective_without_scrapes_in_its_phase_fails() {
        let mut m = scraped_measurements();
        for (phase, selector) in [
            (Phase::All, "kafka_consumer_lag_messages"),
            (
                Phase::Before,
                r#"outbox_pending_messages{process="order#3"}"#,
            ),
        ] {
            let v = one(metric_max(phase, selector, 1e9), &m);
            assert!(!v.held, "{v}");
            assert_eq!((v.measured, v.samples), (None, 0));
            assert_eq!(v.detail, NO_SCRAPES);
        }
        // Scrapes exist, but none inside the phase's window.
        m.windows[0].end = Duration::from_millis(500);
        let v = one(
            metric_max(Phase::Before, "outbox_pending_messages", 1e9),
            &m,
        );
        assert_eq!(v.detail, NO_SCRAPES);
    }

    #[test]
    fn values_format_for_humans() {
        assert_eq!(format_micros(850.0), "850us");
        assert_eq!(format_micros(12_345.0), "12.3ms");
        assert_eq!(format_micros(1_000_000.0), "1s");
        assert_eq!(format_micros(1_520_000.0), "1.52s");
        assert_eq!(format_value(SloUnit::Ratio, 0.0125), "1.25%");
    }
}
