//! What a run measures, in one place: the load generator fills it, SLO evaluation and the reports
//! read it.
//!
//! Latencies are recorded in microseconds into HDR histograms (3 significant digits, up to one
//! hour), so percentiles are exact to 0.1% and histograms from several runs can be merged. Every
//! histogram is kept per endpoint (`"POST /api/orders"`, the name goose groups requests by) and
//! per phase (`"all"`, and later `"before"`, `"during:<fault>"`, `"after"` once chaos exists).
//! Throughput and errors are also kept in one-second buckets for the charts.
//!
//! A request the system **shed** on purpose (429 or 503 with `Retry-After`: "not now, come back
//! later") is neither ok nor an error: it is counted on its own, per endpoint and per second,
//! and left out of the error rate and of the latency histograms (a refusal in a millisecond
//! says nothing about how fast the system serves the work it takes on). In an open model the
//! journeys scheduled, started and **dropped** (due while every user was busy) are counted per
//! phase and per second too.

use std::collections::BTreeMap;
use std::time::Duration;

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

/// The phase every sample belongs to.
pub const ALL: &str = "all";

/// A latency histogram in microseconds.
#[derive(Debug, Clone)]
pub struct Latency(Histogram<u64>);

impl Default for Latency {
    fn default() -> Self {
        Self::new()
    }
}

impl Latency {
    /// 1 µs .. 1 h, 3 significant digits.
    pub fn new() -> Self {
        Self(
            Histogram::new_with_bounds(1, 3_600_000_000, 3)
                .unwrap_or_else(|e| unreachable!("static histogram bounds are valid: {e}")),
        )
    }

    pub fn record(&mut self, d: Duration) {
        let us = u64::try_from(d.as_micros()).unwrap_or(u64::MAX).max(1);
        self.0.saturating_record(us);
    }

    /// Records with coordinated-omission correction: a sample that took longer than the
    /// expected interval between requests also stands for the requests that could not be sent.
    pub fn record_corrected(&mut self, d: Duration, expected_interval: Duration) {
        let us = u64::try_from(d.as_micros()).unwrap_or(u64::MAX).max(1);
        let interval = u64::try_from(expected_interval.as_micros()).unwrap_or(0);
        if self.0.record_correct(us, interval).is_err() {
            self.0.saturating_record(us);
        }
    }

    pub fn merge(&mut self, other: &Latency) {
        // Same bounds everywhere, so adding cannot fail; saturate if it ever did.
        let _ = self.0.add(&other.0);
    }

    pub fn count(&self) -> u64 {
        self.0.len()
    }

    /// The value at `q` (0..=1), `None` when empty.
    pub fn quantile(&self, q: f64) -> Option<Duration> {
        (!self.0.is_empty()).then(|| Duration::from_micros(self.0.value_at_quantile(q)))
    }

    pub fn max(&self) -> Option<Duration> {
        (!self.0.is_empty()).then(|| Duration::from_micros(self.0.max()))
    }

    pub fn histogram(&self) -> &Histogram<u64> {
        &self.0
    }
}

/// The latencies of one second of the load, for its p99 ([`SecondBucket::p99_us`]): two
/// significant digits up to a minute (slower requests count as a minute), about 10 KB a
/// second where a [`Latency`] would take 190 KB.
#[derive(Debug, Clone)]
pub struct SecondLatency(Histogram<u32>);

impl Default for SecondLatency {
    fn default() -> Self {
        Self(
            Histogram::new_with_bounds(1, 60_000_000, 2)
                .unwrap_or_else(|e| unreachable!("static histogram bounds are valid: {e}")),
        )
    }
}

impl SecondLatency {
    pub fn record(&mut self, d: Duration) {
        let us = u64::try_from(d.as_micros()).unwrap_or(u64::MAX).max(1);
        self.0.saturating_record(us);
    }

    /// The 99th percentile in µs; `None` without a sample.
    pub fn p99_us(&self) -> Option<u64> {
        (!self.0.is_empty()).then(|| self.0.value_at_quantile(0.99))
    }
}

/// Requests to one endpoint in one phase.
#[derive(Debug, Clone, Default)]
pub struct EndpointStats {
    /// Latencies of the requests that were not shed.
    pub latency: Latency,
    pub ok: u64,
    pub errors: u64,
    /// Error counts by status code (`0` for a transport error: timeout, refused, reset).
    pub errors_by_status: BTreeMap<u16, u64>,
    /// Requests the system shed (429 or 503 with `Retry-After`): neither ok nor errors.
    pub shed: u64,
    /// Shed requests by status code (429, 503).
    pub shed_by_status: BTreeMap<u16, u64>,
}

impl EndpointStats {
    /// Every request sent: ok, failed or shed.
    pub fn requests(&self) -> u64 {
        self.ok + self.errors + self.shed
    }

    /// The requests the system served rather than shed: ok or failed.
    pub fn served(&self) -> u64 {
        self.ok + self.errors
    }

    /// Failed requests over served ones: a shed request is not a failure, and does not dilute
    /// the failures either.
    pub fn error_rate(&self) -> f64 {
        if self.served() == 0 {
            0.0
        } else {
            self.errors as f64 / self.served() as f64
        }
    }

    /// Adds `other`'s requests to these.
    pub fn merge(&mut self, other: &EndpointStats) {
        self.latency.merge(&other.latency);
        self.ok += other.ok;
        self.errors += other.errors;
        self.shed += other.shed;
        for (status, n) in &other.errors_by_status {
            *self.errors_by_status.entry(*status).or_default() += n;
        }
        for (status, n) in &other.shed_by_status {
            *self.shed_by_status.entry(*status).or_default() += n;
        }
    }
}

/// The journeys of an open-model load in one phase (or one second), by when they were due.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ArrivalCounts {
    /// Journeys the schedule started in the phase: `started + dropped + paused`.
    pub scheduled: u64,
    /// Journeys a user started on time (within the grace).
    pub started: u64,
    /// Journeys due while every user was busy: skipped, not run late.
    pub dropped: u64,
    /// Journeys due while an operator had the load paused (`harness run --tui`): not started,
    /// and not the system's doing.
    #[serde(default)]
    pub paused: u64,
}

/// A named part of the load, counted from its start: samples in it are recorded in its phase
/// as well as in [`ALL`] (the plateaus of a capacity run, `step:3`; the phases of a chaos run).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PhaseSpan {
    pub name: String,
    pub start: Duration,
    pub end: Duration,
}

impl PhaseSpan {
    /// Whether `at` (since the start of the load) falls in this span; the end is exclusive.
    pub fn contains(&self, at: Duration) -> bool {
        self.start <= at && at < self.end
    }
}

/// The phase of the test plan step `index` (`step:3`).
pub fn step_phase(index: usize) -> String {
    format!("step:{index}")
}

/// One second of the run.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SecondBucket {
    /// Seconds since the load started.
    pub second: u64,
    pub requests: u64,
    pub errors: u64,
    /// Sum of latencies in µs, for the mean latency line of the chart.
    pub latency_sum_us: u64,
    pub max_latency_us: u64,
    pub orders_confirmed: u64,
    pub orders_rejected: u64,
    pub orders_cancelled: u64,
    /// Requests of the second the system shed (in `requests`, not in `errors`, not in the
    /// latencies).
    #[serde(default)]
    pub shed: u64,
    /// Open model: journeys due in the second, and those of them dropped.
    #[serde(default)]
    pub arrivals: u64,
    #[serde(default)]
    pub dropped: u64,
    /// The 99th percentile of the latencies of the second's served requests, in µs (to two
    /// significant digits, uncorrected); absent in a second without any. What a report reads
    /// to tell when the system is back to its level after a fault.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub p99_us: Option<u64>,
}

impl SecondBucket {
    /// Requests of the second that were served (ok or failed), not shed: the ones timed.
    pub fn served(&self) -> u64 {
        self.requests.saturating_sub(self.shed)
    }

    /// Mean latency of the second's served requests in µs; `None` without any.
    pub fn mean_latency_us(&self) -> Option<f64> {
        (self.served() > 0).then(|| self.latency_sum_us as f64 / self.served() as f64)
    }
}

/// Everything measured in a run.
#[derive(Debug, Clone, Default)]
pub struct Measurements {
    /// phase → endpoint → stats.
    pub endpoints: BTreeMap<String, BTreeMap<String, EndpointStats>>,
    /// phase → time from `POST /api/orders` accepted to the order seen terminal.
    pub saga_completion: BTreeMap<String, Latency>,
    /// Terminal statuses seen, by status (`CONFIRMED`, ...), plus `UNFINISHED` for orders the
    /// load generator stopped following before they were terminal.
    pub outcomes: BTreeMap<String, u64>,
    pub timeline: Vec<SecondBucket>,
    pub duration: Duration,
    /// When measuring ended, from the load's start: the load and the follow-up of the orders it
    /// left pending, so the end of the `after` phase. Zero when not recorded.
    pub measured_until: Duration,
    /// phase → hop → how long each of the phase's sagas spent in that hop, from the traces
    /// (see `telemetry::hops`); empty when the run collected no traces.
    pub hops: BTreeMap<String, BTreeMap<String, Latency>>,
    /// The metrics scraped from every process during the load, times in seconds since the load
    /// started; empty when nothing was scraped. Shared, as capacity runs take a view per step.
    pub scraped: std::sync::Arc<Vec<crate::telemetry::scrape::Series>>,
    /// The load's phases as spans of time (`all`, `before`, `during:<label>`, `after`,
    /// `step:<i>`), for reading scraped series per phase.
    pub windows: Vec<PhaseSpan>,
    /// Open model: phase → the journeys scheduled, started and dropped in it (by when they
    /// were due); empty for a closed model.
    pub arrivals: BTreeMap<String, ArrivalCounts>,
}

impl Measurements {
    pub fn endpoint_mut(&mut self, phase: &str, endpoint: &str) -> &mut EndpointStats {
        self.endpoints
            .entry(phase.to_string())
            .or_default()
            .entry(endpoint.to_string())
            .or_default()
    }

    pub fn bucket_mut(&mut self, second: u64) -> &mut SecondBucket {
        let idx = usize::try_from(second).unwrap_or(usize::MAX);
        while self.timeline.len() <= idx {
            let s = self.timeline.len() as u64;
            self.timeline.push(SecondBucket {
                second: s,
                ..SecondBucket::default()
            });
        }
        &mut self.timeline[idx]
    }

    /// Orders confirmed per second within `windows` (seconds since the load started): the
    /// sagas that ended CONFIRMED in the whole seconds the windows cover, over their length.
    /// Returns the rate, the orders and the seconds; `None` when the windows cover no time.
    pub fn goodput(&self, windows: &[(f64, f64)]) -> Option<(f64, u64, f64)> {
        let secs: f64 = windows.iter().map(|(a, b)| (b - a).max(0.0)).sum();
        if secs <= 0.0 {
            return None;
        }
        let confirmed: u64 = self
            .timeline
            .iter()
            .filter(|b| {
                let t = b.second as f64;
                windows.iter().any(|(a, z)| *a <= t && t < *z)
            })
            .map(|b| b.orders_confirmed)
            .sum();
        Some((confirmed as f64 / secs, confirmed, secs))
    }

    /// Requests per second to `endpoint` over the whole run (phase `all`).
    pub fn throughput(&self, endpoint: &str) -> f64 {
        let secs = self.duration.as_secs_f64();
        if secs <= 0.0 {
            return 0.0;
        }
        self.endpoints
            .get(ALL)
            .and_then(|e| e.get(endpoint))
            .map_or(0.0, |s| s.requests() as f64 / secs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_come_from_the_recorded_latencies() {
        let mut l = Latency::new();
        for ms in 1..=100 {
            l.record(Duration::from_millis(ms));
        }
        let p50 = l.quantile(0.5).unwrap().as_millis();
        let p99 = l.quantile(0.99).unwrap().as_millis();
        assert!((49..=51).contains(&p50), "{p50}");
        assert!((98..=100).contains(&p99), "{p99}");
        assert_eq!(l.count(), 100);
        assert!(Latency::new().quantile(0.5).is_none());
    }

    #[test]
    fn coordinated_omission_correction_adds_the_requests_that_could_not_be_sent() {
        let mut l = Latency::new();
        l.record_corrected(Duration::from_millis(1000), Duration::from_millis(100));
        assert_eq!(l.count(), 10);
    }

    #[test]
    fn buckets_are_created_up_to_the_second_asked_for() {
        let mut m = Measurements::default();
        m.bucket_mut(3).requests += 1;
        assert_eq!(m.timeline.len(), 4);
        assert_eq!(m.timeline[3].second, 3);
        m.endpoint_mut(ALL, "GET /api/products").ok += 10;
        m.duration = Duration::from_secs(5);
        assert!((m.throughput("GET /api/products") - 2.0).abs() < 1e-9);
    }

    #[test]
    fn shed_requests_count_as_requests_but_neither_as_errors_nor_in_the_error_rate() {
        let mut s = EndpointStats {
            ok: 90,
            errors: 10,
            shed: 900,
            ..EndpointStats::default()
        };
        assert_eq!(s.requests(), 1_000);
        assert_eq!(s.served(), 100);
        assert!((s.error_rate() - 0.1).abs() < 1e-12);
        let other = EndpointStats {
            shed: 5,
            shed_by_status: BTreeMap::from([(429, 5)]),
            ..EndpointStats::default()
        };
        s.merge(&other);
        assert_eq!((s.shed, s.shed_by_status[&429]), (905, 5));
        let bucket = SecondBucket {
            requests: 10,
            shed: 8,
            latency_sum_us: 2_000,
            ..SecondBucket::default()
        };
        assert_eq!(bucket.mean_latency_us(), Some(1_000.0), "over the 2 served");
    }

    #[test]
    fn a_second_s_p99_is_its_99th_percentile_to_two_digits_and_slower_than_a_minute_is_a_minute() {
        let mut second = SecondLatency::default();
        assert_eq!(second.p99_us(), None);
        for ms in 1..=100 {
            second.record(Duration::from_millis(ms));
        }
        let p99 = second.p99_us().unwrap();
        assert!((98_000..=100_000).contains(&p99), "{p99}");
        let mut slow = SecondLatency::default();
        slow.record(Duration::from_secs(3_600));
        assert!(slow.p99_us().unwrap() <= 61_000_000);
    }

    #[test]
    fn goodput_is_confirmed_orders_per_second_of_the_windows() {
        let mut m = Measurements::default();
        for second in 0..10 {
            m.bucket_mut(second).orders_confirmed = second;
        }
        let (rate, n, secs) = m.goodput(&[(2.0, 5.0)]).unwrap();
        assert_eq!((n, secs), (2 + 3 + 4, 3.0));
        assert!((rate - 3.0).abs() < 1e-12);
        let (_, n, secs) = m.goodput(&[(0.0, 1.0), (8.0, 10.0)]).unwrap();
        assert_eq!((n, secs), (17, 3.0));
        assert!(m.goodput(&[]).is_none());
    }
}
