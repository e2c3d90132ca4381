//! Capacity runs (`find_knee = true` under `[load]`): the scenario's SLOs judged on each
//! plateau of the test plan (or, in an open model, of the rate plan) instead of over the whole
//! load, and the knee: the plateau with the most confirmed orders per second whose measurements
//! still met every SLO. In an open model the knee is given both as the arrival rate offered
//! and as the confirmed orders per second the system delivered, with each step's journeys
//! scheduled and dropped (due while every user was busy).
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
    /// No plateau of the plan broke the SLOs and the highest turned nothing away (no request
    /// shed, no journey dropped): the knee found is only the plan's highest plateau, and the
    /// system's real knee is at or above it (a faster machine, a faster build). The plan has to
    /// go higher to find it.
    #[serde(default)]
    pub beyond_plan: bool,
}

/// One step of the test plan (rate plan) and how the system did in it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepResult {
    /// The step's position in the test plan (rate plan), from 0.
    pub step: usize,
    /// The users the step ends with; in an open model the pool, the same in every step.
    pub users: u32,
    /// Open model: the arrival rate the step ends at, journeys per second (a plateau's rate).
    #[serde(default)]
    pub arrival_rate_per_s: Option<f64>,
    /// Open model: the journeys the schedule started in the step, and those dropped.
    #[serde(default)]
    pub arrivals: Option<u64>,
    #[serde(default)]
    pub dropped: Option<u64>,
    /// When the step started and ended, in seconds since the load started.
    pub start_s: f64,
    pub end_s: f64,
    /// Whether the step holds its users steady; only these are judged.
    pub plateau: bool,
    /// Requests sent during the step, the failed ones and the shed ones.
    pub requests: u64,
    pub errors: u64,
    #[serde(default)]
    pub shed: u64,
    pub requests_per_s: f64,
    /// Sagas that finished CONFIRMED during the step, per second.
    pub confirmed_per_s: f64,
    /// p99 of `POST /api/orders` sent during the step, µs.
    pub place_order_p99_us: Option<u64>,
    /// p50 and p99 of saga completion of the orders accepted during the step, µs.
    #[serde(default)]
    pub saga_p50_us: Option<u64>,
    pub saga_p99_us: Option<u64>,
    /// For plateaus: whether every SLO held; absent for ramps.
    pub slos_held: Option<bool>,
    /// The SLOs a plateau broke, each as `name: detail`.
    pub violated: Vec<String>,
}

/// The columns of the capacity table in `report.md` and `report.html`, closed model.
const CLOSED_HEADERS: [&str; 9] = [
    "step",
    "users",
    "seconds",
    "requests/s",
    "shed",
    "confirmed orders/s",
    "POST /api/orders p99",
    "saga completion p99",
    "verdict",
];

/// The columns of the capacity table, open model: the offered rate instead of users, and the
/// journeys scheduled and dropped.
const OPEN_HEADERS: [&str; 11] = [
    "step",
    "arrivals/s",
    "seconds",
    "journeys",
    "dropped",
    "requests/s",
    "shed",
    "confirmed orders/s",
    "POST /api/orders p99",
    "saga completion p99",
    "verdict",
];

fn micros(v: Option<u64>) -> String {
    v.map_or("-".to_string(), |v| slo::format_micros(v as f64))
}

/// A rate for humans: `120/s`, `12.5/s`.
fn rate(v: f64) -> String {
    format!("{}/s", slo::format_number(v))
}

impl StepResult {
    /// The row of the capacity table, for humans, in [`Capacity::headers`] order.
    pub fn cells(&self, knee: Option<usize>) -> Vec<String> {
        let verdict = match self.slos_held {
            None => "ramp".to_string(),
            Some(true) if knee == Some(self.step) => "knee: SLOs held".to_string(),
            Some(true) => "SLOs held".to_string(),
            Some(false) => format!("{} SLOs broken", self.violated.len()),
        };
        let seconds = format!("{:.0}..{:.0}", self.start_s, self.end_s);
        let tail = [
            format!("{:.1}", self.requests_per_s),
            self.shed.to_string(),
            format!("{:.1}", self.confirmed_per_s),
            micros(self.place_order_p99_us),
            micros(self.saga_p99_us),
            verdict,
        ];
        let head = match self.arrival_rate_per_s {
            Some(r) => vec![
                self.step.to_string(),
                rate(r),
                seconds,
                self.arrivals.unwrap_or(0).to_string(),
                self.dropped.unwrap_or(0).to_string(),
            ],
            None => vec![self.step.to_string(), self.users.to_string(), seconds],
        };
        head.into_iter().chain(tail).collect()
    }
}

impl Capacity {
    /// Whether the run offered an arrival rate (open model) rather than users.
    pub fn is_open(&self) -> bool {
        self.steps.iter().any(|s| s.arrival_rate_per_s.is_some())
    }

    /// The columns of the capacity table: [`StepResult::cells`] fills them.
    pub fn headers(&self) -> &'static [&'static str] {
        if self.is_open() {
            &OPEN_HEADERS
        } else {
            &CLOSED_HEADERS
        }
    }

    /// The knee's step, if there is one.
    pub fn knee_step(&self) -> Option<&StepResult> {
        self.knee
            .and_then(|k| self.steps.iter().find(|s| s.step == k))
    }

    /// One line for humans: where the knee is, or that there is none. In an open model the knee
    /// is an arrival rate and the confirmed orders per second it yielded.
    pub fn summary(&self) -> String {
        let Some(k) = self.knee_step() else {
            return "no knee: not even the lowest plateau met the SLOs".to_string();
        };
        let at = match k.arrival_rate_per_s {
            Some(r) => format!(
                "knee at {} arrivals (step {}, {} users): {:.1} confirmed orders/s, {} of {} \
                 journeys dropped, {} requests shed",
                rate(r),
                k.step,
                k.users,
                k.confirmed_per_s,
                k.dropped.unwrap_or(0),
                k.arrivals.unwrap_or(0),
                k.shed
            ),
            None => format!(
                "knee at {} users (step {}): {:.1} confirmed orders/s",
                k.users, k.step, k.confirmed_per_s
            ),
        };
        let beyond = if self.beyond_plan {
            "; no plateau of the plan broke the SLOs, so the real knee is at or above this one: \
             extend the plan to find it"
        } else {
            ""
        };
        format!(
            "{at}, {:.1} requests/s, POST /api/orders p99 {}, saga completion p50 {} p99 {}{beyond}",
            k.requests_per_s,
            micros(k.place_order_p99_us),
            micros(k.saga_p50_us),
            micros(k.saga_p99_us)
        )
    }
}

/// Judges every plateau of the scenario's plan and finds the knee; returns it with the run's SLO
/// verdicts (the knee's, or the lowest plateau's when there is no knee).
pub fn judge(scenario: &Scenario, m: &Measurements) -> (Capacity, Vec<SloVerdict>) {
    let objectives = scenario.objectives();
    let mut steps = Vec::new();
    let mut verdicts: BTreeMap<usize, Vec<SloVerdict>> = BTreeMap::new();
    for span in scenario.load.get_ref().steps() {
        let phase = metrics::step_phase(span.index);
        let view = step_view(m, &phase, span.start, span.end);
        let secs = (span.end - span.start).as_secs_f64();
        let all = view.endpoints.get(ALL);
        let requests: u64 = all.into_iter().flatten().map(|(_, s)| s.requests()).sum();
        let errors: u64 = all.into_iter().flatten().map(|(_, s)| s.errors).sum();
        let shed: u64 = all.into_iter().flatten().map(|(_, s)| s.shed).sum();
        let open = span.rate.is_some();
        let arrivals = m.arrivals.get(&phase).copied().unwrap_or_default();
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
            arrival_rate_per_s: span.rate.map(|r| r.as_per_second()),
            arrivals: open.then_some(arrivals.scheduled),
            dropped: open.then_some(arrivals.dropped),
            start_s: span.start.as_secs_f64(),
            end_s: span.end.as_secs_f64(),
            plateau: span.hold,
            requests,
            errors,
            shed,
            requests_per_s: per_second(requests, secs),
            confirmed_per_s: per_second(confirmed, secs),
            place_order_p99_us: micros(
                all.and_then(|e| e.get(Endpoint::PlaceOrder.name()))
                    .and_then(|s| s.latency.quantile(0.99)),
            ),
            saga_p50_us: micros(view.saga_completion.get(ALL).and_then(|l| l.quantile(0.5))),
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
    // The plan found the knee when some plateau broke the SLOs, or when the highest one already
    // turned work away (shed requests, dropped journeys): with admission control, plateaus past
    // the knee hold their SLOs by shedding, and what flattens is the confirmed orders/s.
    let top = steps.iter().rev().find(|s| s.plateau);
    let beyond_plan = knee.is_some()
        && steps.iter().all(|s| s.slos_held != Some(false))
        && top.is_some_and(|t| t.shed == 0 && t.dropped.unwrap_or(0) == 0);
    let (shown, how) = match knee {
        Some(k) => (Some(k), "at the knee"),
        None => (verdicts.keys().next().copied(), "at the lowest plateau"),
    };
    let slos = shown
        .and_then(|i| {
            let load = steps
                .iter()
                .find(|s| s.step == i)
                .map_or(String::new(), |s| match s.arrival_rate_per_s {
                    Some(r) => format!("{} arrivals", rate(r)),
                    None => format!("{} users", s.users),
                });
            verdicts.remove(&i).map(|vs| {
                vs.into_iter()
                    .map(|mut v| {
                        v.phase = if knee.is_some() {
                            "knee".to_string()
                        } else {
                            metrics::step_phase(i)
                        };
                        v.detail = format!("{how} (step {i}, {load}): {}", v.detail);
                        v
                    })
                    .collect()
            })
        })
        .unwrap_or_default();
    (
        Capacity {
            steps,
            knee,
            beyond_plan,
        },
        slos,
    )
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
        // Goodput reads the confirmed orders of the step's seconds (its window) from it.
        timeline: m.timeline.clone(),
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
    fn a_plan_whose_every_plateau_met_the_slos_says_the_knee_lies_beyond_it() {
        let mut m = Measurements::default();
        fill(&mut m, 1, 20, 10, 200, 1);
        fill(&mut m, 3, 40, 20, 300, 4);
        fill(&mut m, 5, 60, 30, 400, 7); // 20 users still within the SLOs: 30 confirmed/s
        let (capacity, slos) = judge(&scenario(), &m);
        assert_eq!(capacity.knee, Some(5));
        assert!(capacity.beyond_plan);
        assert!(slos.iter().all(|v| v.held), "{slos:?}");
        assert!(
            capacity
                .summary()
                .ends_with("the real knee is at or above this one: extend the plan to find it"),
            "{}",
            capacity.summary()
        );

        // A highest plateau that sheds is past the knee, whatever its SLOs: admission control
        // keeps them by turning work away.
        let mut shedding = m.clone();
        shedding
            .endpoint_mut(&metrics::step_phase(5), "POST /api/orders")
            .shed = 10;
        let (capacity, _) = judge(&scenario(), &shedding);
        assert_eq!(capacity.knee, Some(5));
        assert!(!capacity.beyond_plan);

        // Once a plateau past the knee breaks them, the plan has bracketed the knee.
        fill(&mut m, 5, 60, 400, 3000, 8);
        let (capacity, _) = judge(&scenario(), &m);
        assert_eq!(capacity.knee, Some(3));
        assert!(!capacity.beyond_plan);
        assert!(!capacity.summary().contains("extend the plan"));
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

    const OPEN: &str = r#"
description = "open knee test"
[load]
rate_plan = "10/s,1s;10/s,2s;20/s,1s;20/s,2s;40/s,1s;40/s,2s"
users = 50
find_knee = true
[[load.journeys]]
name = "place_order"
weight = 1
[[slo]]
endpoint = "POST /api/orders"
p99 = "100ms"
[[slo]]
min_goodput = 5
"#;

    #[test]
    fn an_open_model_knee_is_an_arrival_rate_and_the_confirmed_orders_it_yielded() {
        let s = Scenario::from_toml(std::path::Path::new("open-knee.toml"), OPEN).unwrap();
        s.validate().unwrap();
        let mut m = Measurements::default();
        fill(&mut m, 1, 20, 10, 200, 1); // 10/s: 10 confirmed/s
        fill(&mut m, 3, 36, 20, 300, 4); // 20/s: 18 confirmed/s, 4 journeys dropped
        fill(&mut m, 5, 30, 400, 3000, 7); // 40/s: p99 400ms, 15/s
        for (step, scheduled, dropped) in [(1, 20, 0), (3, 40, 4), (5, 80, 50)] {
            m.arrivals.insert(
                metrics::step_phase(step),
                metrics::ArrivalCounts {
                    scheduled,
                    started: scheduled - dropped,
                    dropped,
                    paused: 0,
                },
            );
        }
        m.endpoint_mut(&metrics::step_phase(5), "POST /api/orders")
            .shed = 25;
        let (capacity, slos) = judge(&s, &m);
        assert!(capacity.is_open());
        assert_eq!(capacity.knee, Some(3));
        let knee = capacity.knee_step().unwrap();
        assert_eq!(knee.arrival_rate_per_s, Some(20.0));
        assert_eq!((knee.arrivals, knee.dropped), (Some(40), Some(4)));
        assert_eq!(
            capacity.summary(),
            "knee at 20/s arrivals (step 3, 50 users): 18.0 confirmed orders/s, 4 of 40 journeys \
             dropped, 0 requests shed, 18.0 requests/s, POST /api/orders p99 20ms, saga \
             completion p50 300ms p99 300ms"
        );
        // The goodput SLO is judged per plateau, from the seconds of the plateau.
        assert!(slos.iter().all(|v| v.held), "{slos:?}");
        assert!(
            slos[1].detail.contains("(step 3, 20/s arrivals)"),
            "{}",
            slos[1].detail
        );
        let beyond = &capacity.steps[5];
        assert_eq!(beyond.shed, 25);
        assert_eq!(beyond.slos_held, Some(false));
        assert_eq!(capacity.headers().len(), beyond.cells(capacity.knee).len());
        let cells = beyond.cells(capacity.knee);
        assert_eq!(
            cells[..7],
            ["5", "40/s", "7..9", "80", "50", "27.5", "25"].map(String::from)
        );
        assert_eq!(capacity.headers()[1], "arrivals/s");
    }

    #[test]
    fn a_closed_model_capacity_table_keeps_users_and_adds_shed() {
        let mut m = Measurements::default();
        fill(&mut m, 3, 40, 20, 300, 4);
        let (capacity, _) = judge(&scenario(), &m);
        assert!(!capacity.is_open());
        assert_eq!(capacity.headers()[1], "users");
        let cells = capacity.steps[3].cells(capacity.knee);
        assert_eq!(cells.len(), capacity.headers().len());
        assert_eq!(
            cells[..5],
            ["3", "10", "4..6", "20.0", "0"].map(String::from)
        );
    }
}
