//! Capacity runs (`find_knee = true` under `[load]`): the scenario's SLOs judged on each
//! plateau of the test plan instead of over the whole load, and the knee: the plateau with the
//! most confirmed orders per second whose measurements still met every SLO.
//!
//! Requests and sagas are recorded per plan step as phases `step:<i>` (by when the request was
//! sent, when the order was accepted); each plateau's SLOs are judged on a view of the
//! measurements whose `all` is that step and whose duration is the step's. Confirmed orders per
//! second come from the one-second buckets, by the second each saga finished. Ramps between
//! plateaus are reported but not judged: the users there are not yet the step's.
//!
//! The run's SLO verdicts are the knee's (phase `knee`), so a capacity run passes when some
//! plateau met its SLOs and the invariants held; when none did, they are the lowest plateau's,
//! which says why the system could not carry even that.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::load::endpoint::Endpoint;
use crate::metrics::{self, ALL, Measurements};
use crate::scenario::Scenario;
use crate::slo::{self, SloVerdict};

/// What a capacity run found, as it goes into `report.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Capacity {
    /// Every step of the test plan, in order.
    pub steps: Vec<StepResult>,
    /// The plan index ([`StepResult::step`]) of the knee; absent when no plateau met the SLOs.
    pub knee: Option<usize>,
}

/// One step of the test plan and how the system did in it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepResult {
    /// The step's position in the test plan, from 0.
    pub step: usize,
    /// The users the step ends with.
    pub users: u32,
    /// When the step started and ended, in seconds since the load started.
    pub start_s: f64,
    pub end_s: f64,
    /// Whether the step holds its users steady; only these are judged.
    pub plateau: bool,
    /// Requests sent during the step, and the failed ones.
    pub requests: u64,
    pub errors: u64,
    pub requests_per_s: f64,
    /// Sagas that finished CONFIRMED during the step, per second.
    pub confirmed_per_s: f64,
    /// p99 of `POST /api/orders` sent during the step, µs.
    pub place_order_p99_us: Option<u64>,
    /// p99 of saga completion of the orders accepted during the step, µs.
    pub saga_p99_us: Option<u64>,
    /// For plateaus: whether every SLO held; absent for ramps.
    pub slos_held: Option<bool>,
    /// The SLOs a plateau broke, each as `name: detail`.
    pub violated: Vec<String>,
}

/// The columns of the capacity table in `report.md` and `report.html`.
pub const TABLE_HEADERS: [&str; 8] = [
    "step",
    "users",
    "seconds",
    "requests/s",
    "confirmed orders/s",
    "POST /api/orders p99",
    "saga completion p99",
    "verdict",
];

impl StepResult {
    /// The row of the capacity table, for humans, in [`TABLE_HEADERS`] order.
    pub fn cells(&self, knee: Option<usize>) -> [String; 8] {
        let us = |v: Option<u64>| v.map_or("-".to_string(), |v| slo::format_micros(v as f64));
        let verdict = match self.slos_held {
            None => "ramp".to_string(),
            Some(true) if knee == Some(self.step) => "knee: SLOs held".to_string(),
            Some(true) => "SLOs held".to_string(),
            Some(false) => format!("{} SLOs broken", self.violated.len()),
        };
        [
            self.step.to_string(),
            self.users.to_string(),
            format!("{:.0}..{:.0}", self.start_s, self.end_s),
            format!("{:.1}", self.requests_per_s),
            format!("{:.1}", self.confirmed_per_s),
            us(self.place_order_p99_us),
            us(self.saga_p99_us),
            verdict,
        ]
    }
}

impl Capacity {
    /// The knee's step, if there is one.
    pub fn knee_step(&self) -> Option<&StepResult> {
        self.knee
            .and_then(|k| self.steps.iter().find(|s| s.step == k))
    }

    /// One line for humans: where the knee is, or that there is none.
    pub fn summary(&self) -> String {
        let us = |v: Option<u64>| v.map_or("-".to_string(), |v| slo::format_micros(v as f64));
        match self.knee_step() {
            Some(k) => format!(
                "knee at {} users (step {}): {:.1} confirmed orders/s, {:.1} requests/s, \
                 POST /api/orders p99 {}, saga completion p99 {}",
                k.users,
                k.step,
                k.confirmed_per_s,
                k.requests_per_s,
                us(k.place_order_p99_us),
                us(k.saga_p99_us)
            ),
            None => "no knee: not even the lowest plateau met the SLOs".to_string(),
        }
    }
}

/// Judges every plateau of the scenario's plan and finds the knee; returns it with the run's SLO
/// verdicts (the knee's, or the lowest plateau's when there is no knee).
pub fn judge(scenario: &Scenario, m: &Measurements) -> (Capacity, Vec<SloVerdict>) {
    let objectives = scenario.objectives();
    let mut steps = Vec::new();
    let mut verdicts: BTreeMap<usize, Vec<SloVerdict>> = BTreeMap::new();
    for span in scenario.load.get_ref().plan().spans() {
        let view = step_view(m, &metrics::step_phase(span.index), span.start, span.end);
        let secs = (span.end - span.start).as_secs_f64();
        let all = view.endpoints.get(ALL);
        let requests: u64 = all.into_iter().flatten().map(|(_, s)| s.requests()).sum();
        let errors: u64 = all.into_iter().flatten().map(|(_, s)| s.errors).sum();
        let confirmed: u64 = m
            .timeline
            .iter()
            .filter(|b| b.second >= span.start.as_secs() && b.second < span.end.as_secs())
            .map(|b| b.orders_confirmed)
            .sum();
        let micros =
            |d: Option<std::time::Duration>| d.map(|d| u64::try_from(d.as_micros()).unwrap_or(0));
        let mut result = StepResult {
            step: span.index,
            users: span.users,
            start_s: span.start.as_secs_f64(),
            end_s: span.end.as_secs_f64(),
            plateau: span.hold,
            requests,
            errors,
            requests_per_s: per_second(requests, secs),
            confirmed_per_s: per_second(confirmed, secs),
            place_order_p99_us: micros(
                all.and_then(|e| e.get(Endpoint::PlaceOrder.name()))
                    .and_then(|s| s.latency.quantile(0.99)),
            ),
            saga_p99_us: micros(view.saga_completion.get(ALL).and_then(|l| l.quantile(0.99))),
            slos_held: None,
            violated: Vec::new(),
        };
        if span.hold {
            let judged = slo::evaluate(&objectives, &view);
            result.slos_held = Some(judged.iter().all(|v| v.held));
            result.violated = judged
                .iter()
                .filter(|v| !v.held)
                .map(|v| format!("{}: {}", v.name, v.detail))
                .collect();
            verdicts.insert(span.index, judged);
        }
        steps.push(result);
    }

    let knee = steps
        .iter()
        .filter(|s| s.slos_held == Some(true))
        .max_by(|a, b| a.confirmed_per_s.total_cmp(&b.confirmed_per_s))
        .map(|s| s.step);
    let (shown, how) = match knee {
        Some(k) => (Some(k), "at the knee"),
        None => (verdicts.keys().next().copied(), "at the lowest plateau"),
    };
    let slos = shown
        .and_then(|i| {
            let users = steps.iter().find(|s| s.step == i).map_or(0, |s| s.users);
            verdicts.remove(&i).map(|vs| {
                vs.into_iter()
                    .map(|mut v| {
                        v.phase = if knee.is_some() {
                            "knee".to_string()
                        } else {
                            metrics::step_phase(i)
                        };
                        v.detail = format!("{how} (step {i}, {users} users): {}", v.detail);
                        v
                    })
                    .collect()
            })
        })
        .unwrap_or_default();
    (Capacity { steps, knee }, slos)
}

fn per_second(n: u64, secs: f64) -> f64 {
    if secs > 0.0 { n as f64 / secs } else { 0.0 }
}

/// The measurements of one phase as if they were the whole run.
fn step_view(
    m: &Measurements,
    phase: &str,
    start: std::time::Duration,
    end: std::time::Duration,
) -> Measurements {
    let mut view = Measurements {
        duration: end.saturating_sub(start),
        scraped: m.scraped.clone(),
        windows: vec![metrics::PhaseSpan {
            name: ALL.to_string(),
            start,
            end,
        }],
        ..Measurements::default()
    };
    if let Some(e) = m.endpoints.get(phase) {
        view.endpoints.insert(ALL.to_string(), e.clone());
    }
    if let Some(l) = m.saga_completion.get(phase) {
        view.saga_completion.insert(ALL.to_string(), l.clone());
    }
    if let Some(h) = m.hops.get(phase) {
        view.hops.insert(ALL.to_string(), h.clone());
    }
    view
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    const SCENARIO: &str = r#"
description = "knee test"
[load]
test_plan = "5,1s;5,2s;10,1s;10,2s;20,1s;20,2s;0,1s"
find_knee = true
[[load.journeys]]
name = "place_order"
weight = 1
[[slo]]
endpoint = "POST /api/orders"
p99 = "100ms"
[[slo]]
saga_completion_p99 = "1s"
"#;

    /// Step `step`: `n` orders answered in `ms` each, sagas of `saga_ms`, and `confirmed`
    /// sagas finishing in the step's first second.
    fn fill(m: &mut Measurements, step: usize, n: u64, ms: u64, saga_ms: u64, second: u64) {
        let phase = metrics::step_phase(step);
        let stats = m.endpoint_mut(&phase, "POST /api/orders");
        for _ in 0..n {
            stats.latency.record(Duration::from_millis(ms));
        }
        stats.ok += n;
        let saga = m.saga_completion.entry(phase).or_default();
        for _ in 0..n {
            saga.record(Duration::from_millis(saga_ms));
        }
        m.bucket_mut(second).orders_confirmed += n;
    }

    fn scenario() -> Scenario {
        let s = Scenario::from_toml(std::path::Path::new("knee.toml"), SCENARIO).unwrap();
        s.validate().unwrap();
        s
    }

    #[test]
    fn the_knee_is_the_busiest_plateau_that_met_every_slo() {
        let mut m = Measurements::default();
        fill(&mut m, 1, 20, 10, 200, 1); // 5 users: 10 confirmed/s
        fill(&mut m, 3, 40, 20, 300, 4); // 10 users: 20 confirmed/s
        fill(&mut m, 5, 50, 400, 3000, 7); // 20 users: 25/s, but p99 400ms and sagas 3s
        let (capacity, slos) = judge(&scenario(), &m);
        assert_eq!(capacity.knee, Some(3));
        let knee = capacity.knee_step().unwrap();
        assert_eq!(knee.users, 10);
        assert!((knee.confirmed_per_s - 20.0).abs() < 1e-9, "{knee:?}");
        assert_eq!(capacity.steps.len(), 7);
        let beyond = &capacity.steps[5];
        assert_eq!(beyond.slos_held, Some(false));
        assert_eq!(beyond.violated.len(), 2, "{:?}", beyond.violated);
        assert!(
            capacity.steps[4].slos_held.is_none(),
            "ramps are not judged"
        );
        assert_eq!(slos.len(), 2);
        assert!(slos.iter().all(|v| v.held && v.phase == "knee"), "{slos:?}");
        assert!(
            slos[0].detail.contains("step 3, 10 users"),
            "{}",
            slos[0].detail
        );
        assert!(capacity.summary().contains("20.0 confirmed orders/s"));
    }

    #[test]
    fn without_a_plateau_within_the_slos_the_lowest_one_explains_the_failure() {
        let mut m = Measurements::default();
        fill(&mut m, 1, 20, 500, 200, 1);
        fill(&mut m, 3, 40, 600, 300, 4);
        let (capacity, slos) = judge(&scenario(), &m);
        assert_eq!(capacity.knee, None);
        assert!(capacity.summary().starts_with("no knee"));
        let failed: Vec<_> = slos.iter().filter(|v| !v.held).collect();
        assert_eq!(failed.len(), 1);
        assert_eq!(failed[0].phase, "step:1");
        // A plateau without any request fails for want of data, it does not pass.
        assert_eq!(capacity.steps[5].slos_held, Some(false));
    }
}
