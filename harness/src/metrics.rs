//! What a run measures, in one place: the load generator fills it, SLO evaluation and the reports
//! read it.
//!
//! Latencies are recorded in microseconds into HDR histograms (3 significant digits, up to one
//! hour), so percentiles are exact to 0.1% and histograms from several runs can be merged. Every
//! histogram is kept per endpoint (`"POST /api/orders"`, the name goose groups requests by) and
//! per phase (`"all"`, and later `"before"`, `"during:<fault>"`, `"after"` once chaos exists).
//! Throughput and errors are also kept in one-second buckets for the charts.

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

/// Requests to one endpoint in one phase.
#[derive(Debug, Clone, Default)]
pub struct EndpointStats {
    pub latency: Latency,
    pub ok: u64,
    pub errors: u64,
    /// Error counts by status code (`0` for a transport error: timeout, refused, reset).
    pub errors_by_status: BTreeMap<u16, u64>,
}

impl EndpointStats {
    pub fn requests(&self) -> u64 {
        self.ok + self.errors
    }

    pub fn error_rate(&self) -> f64 {
        if self.requests() == 0 {
            0.0
        } else {
            self.errors as f64 / self.requests() as f64
        }
    }
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
}

impl SecondBucket {
    /// Mean latency of the second's requests in µs; `None` without requests.
    pub fn mean_latency_us(&self) -> Option<f64> {
        (self.requests > 0).then(|| self.latency_sum_us as f64 / self.requests as f64)
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
    /// phase → hop → how long each of the phase's sagas spent in that hop, from the traces
    /// (see `telemetry::hops`); empty when the run collected no traces.
    pub hops: BTreeMap<String, BTreeMap<String, Latency>>,
    /// The metrics scraped from every process during the load, times in seconds since the load
    /// started; empty when nothing was scraped. Shared, as capacity runs take a view per step.
    pub scraped: std::sync::Arc<Vec<crate::telemetry::scrape::Series>>,
    /// The load's phases as spans of time (`all`, `before`, `during:<label>`, `after`,
    /// `step:<i>`), for reading scraped series per phase.
    pub windows: Vec<PhaseSpan>,
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
}
