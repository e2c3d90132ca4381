//! A run of a scenario's `[[variant]]`s, side by side: Netflix ChAP's control and experiment.
//!
//! Each variant ran on a fresh environment with the same load, chaos timeline, SLOs and checks
//! and has its full report in `reports/<run-id>/variants/<name>/`. [`VariantsReport`] puts them
//! next to each other per phase (before, during each fault, after, all): errors, latency
//! percentiles per endpoint, confirmed orders per second, and how long each variant took to
//! recover after each fault healed. It is `reports/<run-id>/report.json` (shape documented in
//! `reports/README.md`), and is rendered into `report.md`, `report.html` and `junit.xml` beside it.
//!
//! What gates: every variant's invariants, and its SLOs unless the variant says `gate = false`
//! (a control expected to break them: its SLO verdicts are reported, not judged).
//!
//! # Time to recover
//!
//! From the heal of a fault until the load is back to the level it had before the first fault,
//! read from the per-second timeline: a second is back when its served requests' error rate is
//! at most the before phase's level plus [`RECOVERY_ERROR_SLACK`] and its p99 at most the before
//! phase's level times [`RECOVERY_LATENCY_SLACK`], where the level is the
//! [`LEVEL_QUANTILE`] of the before phase's whole seconds (a normal second's worst, rather than
//! its mean, so ordinary noise does not read as an outage). Recovered: the first second, from
//! the one the heal fell in, that starts [`RECOVERY_STREAK`] seconds in a row that are back (or
//! every second left before the next fault starts or the load ends). The time is from the heal
//! to the start of that second, 0 when the second of the heal was already back; seconds are
//! whole, so it is exact to a second. A second without served requests is not back.
//!
//! # Layout
//! - this module: the model, [`VariantsReport::build`] and [`write_all`].
//! - `markdown`, `html`, `junit`: the three other files.

mod html;
mod junit;
mod markdown;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use anyhow::Context;
use serde::{Deserialize, Serialize};

use super::gateway_events::{self, GatewayEvent};
use super::{
    BreakerTransition, BulkheadSaturation, EXIT_FAILED, EXIT_PASSED, Paths, RotationChange,
    RunReport, ScenarioInfo, TimelineSecond, Verdict,
};
use crate::faults::{AFTER, BEFORE, during};
use crate::metrics::ALL;
use crate::scenario::{Resilience, Scenario};
use crate::slo::SloVerdict;

/// `kind` of a comparison's `report.json`, which tells it from a run's.
pub const KIND: &str = "variants";
/// The version of the comparison's shape; raised when a field changes meaning or goes away.
pub const SCHEMA_VERSION: u32 = 1;
/// Seconds in a row that must be back to the before level for a variant to have recovered.
pub const RECOVERY_STREAK: usize = 3;
/// How much higher than the before level a second's error rate may be and count as back
/// (absolute: 0.01 is one percentage point).
pub const RECOVERY_ERROR_SLACK: f64 = 0.01;
/// How much higher than the before level a second's p99 may be and count as back (a factor).
pub const RECOVERY_LATENCY_SLACK: f64 = 1.2;
/// The before level: this quantile of the before phase's per-second values.
pub const LEVEL_QUANTILE: f64 = 0.9;

/// What one variant hands over: how it was set up, and its report.
#[derive(Debug, Clone)]
pub struct VariantRun {
    pub name: String,
    /// `false`: its SLO verdicts are reported, not gated.
    pub gate: bool,
    /// The resilience keys it ran with: its own over `[environment.resilience]`.
    pub resilience: Resilience,
    pub report: RunReport,
}

/// The comparison of a run's variants; `report.json` of the run is this, serialized.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VariantsReport {
    pub schema_version: u32,
    /// Always [`KIND`].
    pub kind: String,
    pub run_id: String,
    /// The scenario with its variants, as written.
    pub scenario: ScenarioInfo,
    /// `[environment.resilience]`, which every variant's keys go over, as TOML; `defaults` when
    /// it sets none.
    pub environment_resilience: String,
    /// When the first variant's load started, RFC 3339 in UTC.
    pub started_at: String,
    /// In the order they are declared, which is the order they ran in.
    pub variants: Vec<VariantSummary>,
    /// `before`, `during:<fault>` in the timeline's order, `after`, `all`, then any others.
    pub phases: Vec<PhaseComparison>,
    /// One entry per fault of the chaos timeline.
    pub recovery: Vec<FaultRecovery>,
    /// `passed` when every gated verdict held.
    pub verdict: Verdict,
    /// What `harness run` exits with: 0 passed, 1 failed.
    pub exit_code: u8,
}

/// One variant: how it was set up, its verdicts, and where its full report is.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VariantSummary {
    pub name: String,
    pub gate: bool,
    /// The resilience keys the variant sets, as TOML: `breaker = "off", bulkhead = "off"`.
    pub resilience: String,
    /// The variables the keys it ran with (its own over `[environment.resilience]`) set on the
    /// gateway and on every service instance.
    pub gateway_env: BTreeMap<String, String>,
    pub service_env: BTreeMap<String, String>,
    /// Its full report, relative to this one: `variants/<name>/report.json`.
    pub report: String,
    pub run_id: String,
    pub started_at: String,
    pub duration_s: f64,
    pub slos: Vec<SloVerdict>,
    pub invariants: Vec<InvariantSummary>,
    pub breaker_transitions: Vec<BreakerTransition>,
    /// Its gateway's health checks taking instances out of rotation and back.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rotation_changes: Vec<RotationChange>,
    /// Its gateway's bulkheads refusing calls.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub bulkhead_saturations: Vec<BulkheadSaturation>,
    pub outcomes: BTreeMap<String, u64>,
    /// Its own: `passed` when every SLO and invariant held.
    pub verdict: Verdict,
    /// What gates the run: its invariants, and its SLOs when `gate`.
    pub gated_verdict: Verdict,
}

impl VariantSummary {
    pub fn slos_held(&self) -> usize {
        self.slos.iter().filter(|s| s.held).count()
    }

    pub fn invariants_held(&self) -> usize {
        self.invariants.iter().filter(|i| i.held).count()
    }
}

/// An invariant's verdict without its violations (they are in the variant's report).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InvariantSummary {
    pub name: String,
    pub held: bool,
    pub summary: String,
}

/// One phase, every variant's figures in it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PhaseComparison {
    pub phase: String,
    /// The phase's time as planned (the same in every variant), seconds since the load started;
    /// `null` for a phase without a window of its own (a capacity run's steps).
    pub start_s: Option<f64>,
    pub end_s: Option<f64>,
    /// In the order of [`VariantsReport::variants`].
    pub variants: Vec<PhaseFigures>,
}

/// What one variant measured in one phase.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PhaseFigures {
    pub variant: String,
    /// Over every endpoint: requests sent (shed ones included), failed, shed.
    pub requests: u64,
    pub errors: u64,
    pub shed: u64,
    /// `errors` over the served requests (`requests - shed`); `null` without any.
    pub error_rate: Option<f64>,
    /// Orders whose saga ended CONFIRMED in the phase's whole seconds, per second; `null` for
    /// a phase without a window.
    pub confirmed_per_s: Option<f64>,
    /// `"METHOD /path"` → its figures.
    pub endpoints: BTreeMap<String, EndpointFigures>,
}

/// One endpoint in one phase of one variant.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EndpointFigures {
    pub requests: u64,
    pub errors: u64,
    pub shed: u64,
    pub error_rate: Option<f64>,
    pub p50_us: Option<u64>,
    pub p95_us: Option<u64>,
    pub p99_us: Option<u64>,
}

/// How each variant recovered after one fault healed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FaultRecovery {
    /// The fault's label; its phase is `during:<fault>`.
    pub fault: String,
    pub variants: Vec<Recovery>,
}

/// One variant after one fault.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Recovery {
    pub variant: String,
    /// When the fault was healed in this variant's run; `null` when its run has no such fault.
    pub healed_s: Option<f64>,
    /// What "back" means for this variant; `null` without a before phase to read it from.
    pub level: Option<Level>,
    /// The start of the first second of the streak that was back; `null`: not recovered.
    pub recovered_at_s: Option<f64>,
    /// From the heal to `recovered_at_s`.
    pub time_to_recover_s: Option<f64>,
    /// Where the search stopped: the start of the next fault, or the end of the load.
    pub searched_until_s: Option<f64>,
}

impl Recovery {
    /// For a table cell: `2.0s`, `not recovered by 60s`, `no before level`.
    pub fn describe(&self) -> String {
        match (self.healed_s, &self.level, self.time_to_recover_s) {
            (None, _, _) => "fault not in this run".into(),
            (_, None, _) => "no before level to return to".into(),
            (_, _, Some(t)) => format!("{t:.1}s"),
            (Some(_), Some(_), None) => format!(
                "not recovered by {:.0}s",
                self.searched_until_s.unwrap_or_default()
            ),
        }
    }
}

/// The before level a second must be back within.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Level {
    /// The largest error rate of a second that is back (0..1).
    pub max_error_rate: f64,
    /// The largest p99 of a second that is back.
    pub max_p99_us: u64,
    /// The before phase's seconds it was read from.
    pub before_seconds: usize,
}

impl VariantsReport {
    /// The comparison of `runs`, in their order; `scenario` is the scenario with its variants.
    pub fn build(run_id: String, scenario: &Scenario, runs: &[VariantRun]) -> anyhow::Result<Self> {
        let reports: Vec<&RunReport> = runs.iter().map(|r| &r.report).collect();
        let variants: Vec<VariantSummary> = runs
            .iter()
            .map(|run| {
                let own = scenario
                    .variants
                    .iter()
                    .find(|v| v.get_ref().name() == run.name)
                    .map_or_else(
                        || run.resilience.clone(),
                        |v| v.get_ref().resilience.clone(),
                    );
                summary(run, &own)
            })
            .collect();
        let held = variants.iter().all(|v| v.gated_verdict == Verdict::Passed);
        Ok(Self {
            schema_version: SCHEMA_VERSION,
            kind: KIND.into(),
            run_id,
            scenario: ScenarioInfo {
                name: scenario.name.clone(),
                description: scenario.description.get_ref().clone(),
                definition: serde_json::to_value(scenario).context("serializing the scenario")?,
            },
            environment_resilience: scenario.environment.resilience.describe(),
            started_at: reports
                .first()
                .map(|r| r.started_at.clone())
                .unwrap_or_default(),
            phases: phase_names(&reports)
                .into_iter()
                .map(|phase| compare_phase(&phase, runs))
                .collect(),
            recovery: recoveries(runs),
            variants,
            verdict: if held {
                Verdict::Passed
            } else {
                Verdict::Failed
            },
            exit_code: if held { EXIT_PASSED } else { EXIT_FAILED },
        })
    }

    pub fn passed(&self) -> bool {
        self.verdict == Verdict::Passed
    }

    /// One line: `payment-latency: 2 variants, every gated verdict held`, or who broke what.
    pub fn headline(&self) -> String {
        let name = &self.scenario.name;
        let n = self.variants.len();
        if self.passed() {
            return format!("{name}: {n} variants, every gated verdict held");
        }
        let broken: Vec<String> = self
            .variants
            .iter()
            .filter(|v| v.gated_verdict == Verdict::Failed)
            .map(|v| {
                let mut what = Vec::new();
                let slos = v.slos.len() - v.slos_held();
                if v.gate && slos > 0 {
                    what.push(counted(slos, "SLO"));
                }
                let invariants = v.invariants.len() - v.invariants_held();
                if invariants > 0 {
                    what.push(counted(invariants, "invariant"));
                }
                format!("{} broke {}", v.name, what.join(" and "))
            })
            .collect();
        format!("{name} failed: {}", broken.join("; "))
    }
}

/// `1 SLO`, `2 SLOs`.
fn counted(n: usize, noun: &str) -> String {
    if n == 1 {
        format!("1 {noun}")
    } else {
        format!("{n} {noun}s")
    }
}

impl VariantsReport {
    /// For the terminal: the headline, then a column per variant: its verdict, per phase the
    /// error rate and confirmed orders per second, per fault the time to recover.
    pub fn terminal_summary(&self) -> String {
        let mut rows: Vec<Vec<String>> = Vec::new();
        let mut row = |first: String, cells: Vec<String>| {
            rows.push(std::iter::once(first).chain(cells).collect());
        };
        row(
            String::new(),
            self.variants.iter().map(|v| v.name.clone()).collect(),
        );
        row(
            "verdict".into(),
            self.variants.iter().map(verdict_text).collect(),
        );
        for p in &self.phases {
            row(
                p.phase.clone(),
                p.variants
                    .iter()
                    .map(|f| {
                        let errors = f
                            .error_rate
                            .map_or("-".into(), |r| format!("{:.2}%", r * 100.0));
                        let confirmed = f.confirmed_per_s.map_or("-".into(), |c| format!("{c:.1}"));
                        format!("{errors} errors, {confirmed} confirmed/s")
                    })
                    .collect(),
            );
        }
        for f in &self.recovery {
            row(
                format!("recovered after {}", f.fault),
                f.variants.iter().map(Recovery::describe).collect(),
            );
        }
        let columns = rows.iter().map(Vec::len).max().unwrap_or(0);
        let widths: Vec<usize> = (0..columns)
            .map(|c| {
                rows.iter()
                    .filter_map(|r| r.get(c))
                    .map(|cell| cell.chars().count())
                    .max()
                    .unwrap_or(0)
            })
            .collect();
        let mut out = self.headline();
        for r in &rows {
            out.push_str("\n ");
            for (cell, width) in r.iter().zip(&widths) {
                out.push_str(&format!(" {cell:<width$} "));
            }
            out.truncate(out.trim_end().len());
        }
        out
    }
}

/// `own`: the keys the variant itself sets.
fn summary(run: &VariantRun, own: &Resilience) -> VariantSummary {
    let r = &run.report;
    let invariants_held = r.invariants.iter().all(|i| i.held);
    let slos_held = r.slos.iter().all(|s| s.held);
    let gated = invariants_held && (slos_held || !run.gate);
    let verdict = |ok: bool| if ok { Verdict::Passed } else { Verdict::Failed };
    VariantSummary {
        name: run.name.clone(),
        gate: run.gate,
        resilience: own.describe(),
        gateway_env: run.resilience.gateway_env(),
        service_env: run.resilience.service_env(),
        report: format!("variants/{}/report.json", run.name),
        run_id: r.run_id.clone(),
        started_at: r.started_at.clone(),
        duration_s: r.duration_s,
        slos: r.slos.clone(),
        invariants: r
            .invariants
            .iter()
            .map(|i| InvariantSummary {
                name: i.name.to_string(),
                held: i.held,
                summary: i.summary.clone(),
            })
            .collect(),
        breaker_transitions: r.breaker_transitions.clone(),
        rotation_changes: r.rotation_changes.clone(),
        bulkhead_saturations: r.bulkhead_saturations.clone(),
        outcomes: r.outcomes.clone(),
        verdict: verdict(slos_held && invariants_held),
        gated_verdict: verdict(gated),
    }
}

/// The phases any variant has: `before`, each fault's in the timeline's order, `after`, `all`,
/// then the others (a capacity run's steps) by name.
fn phase_names(reports: &[&RunReport]) -> Vec<String> {
    let present: BTreeSet<&str> = reports
        .iter()
        .flat_map(|r| r.phases.keys().map(String::as_str))
        .collect();
    let mut names: Vec<String> = Vec::new();
    let mut add = |name: String| {
        if present.contains(name.as_str()) && !names.contains(&name) {
            names.push(name);
        }
    };
    add(BEFORE.into());
    for r in reports {
        for w in &r.chaos_windows {
            add(during(&w.label));
        }
    }
    add(AFTER.into());
    add(ALL.into());
    for name in &present {
        add((*name).to_string());
    }
    names
}

/// The phase's time in `r` as planned, within the load: `(start, end)` in seconds.
fn phase_window(r: &RunReport, phase: &str) -> Option<(f64, f64)> {
    let end = r.duration_s;
    let windows = &r.chaos_windows;
    let first = windows.iter().map(|w| w.planned_start_s).reduce(f64::min);
    let last = windows.iter().map(|w| w.planned_end_s).reduce(f64::max);
    let (a, z) = match phase {
        ALL => (0.0, end),
        BEFORE => (0.0, first?),
        AFTER => (last?, end),
        _ => {
            let w = windows.iter().find(|w| during(&w.label) == phase)?;
            (w.planned_start_s, w.planned_end_s)
        }
    };
    let z = z.min(end);
    (z > a).then_some((a, z))
}

/// Orders confirmed per second over the whole seconds of `(a, z)`, as the SLOs count goodput.
fn confirmed_per_s(timeline: &[TimelineSecond], (a, z): (f64, f64)) -> f64 {
    let confirmed: u64 = timeline
        .iter()
        .filter(|b| {
            let t = b.second as f64;
            a <= t && t < z
        })
        .map(|b| b.orders_confirmed)
        .sum();
    confirmed as f64 / (z - a)
}

fn ratio(errors: u64, served: u64) -> Option<f64> {
    (served > 0).then(|| errors as f64 / served as f64)
}

fn compare_phase(phase: &str, runs: &[VariantRun]) -> PhaseComparison {
    let window = runs.iter().find_map(|r| phase_window(&r.report, phase));
    let variants = runs
        .iter()
        .map(|run| {
            let r = &run.report;
            let endpoints: BTreeMap<String, EndpointFigures> = r
                .phases
                .get(phase)
                .into_iter()
                .flat_map(|p| p.endpoints.iter())
                .map(|(name, e)| {
                    let figures = EndpointFigures {
                        requests: e.count,
                        errors: e.errors,
                        shed: e.shed,
                        error_rate: ratio(e.errors, e.count.saturating_sub(e.shed)),
                        p50_us: e.latency.p50_us,
                        p95_us: e.latency.p95_us,
                        p99_us: e.latency.p99_us,
                    };
                    (name.clone(), figures)
                })
                .collect();
            let (requests, errors, shed) = endpoints.values().fold((0, 0, 0), |(n, e, s), f| {
                (n + f.requests, e + f.errors, s + f.shed)
            });
            PhaseFigures {
                variant: run.name.clone(),
                requests,
                errors,
                shed,
                error_rate: ratio(errors, requests.saturating_sub(shed)),
                confirmed_per_s: phase_window(r, phase).map(|w| confirmed_per_s(&r.timeline, w)),
                endpoints,
            }
        })
        .collect();
    PhaseComparison {
        phase: phase.to_string(),
        start_s: window.map(|w| w.0),
        end_s: window.map(|w| w.1),
        variants,
    }
}

/// Every fault of the timeline, in the first variant's order, with each variant's recovery.
fn recoveries(runs: &[VariantRun]) -> Vec<FaultRecovery> {
    let mut faults: Vec<&str> = Vec::new();
    for run in runs {
        for w in &run.report.chaos_windows {
            if !faults.contains(&w.label.as_str()) {
                faults.push(&w.label);
            }
        }
    }
    faults
        .into_iter()
        .map(|fault| FaultRecovery {
            fault: fault.to_string(),
            variants: runs
                .iter()
                .map(|run| recovery(&run.name, &run.report, fault))
                .collect(),
        })
        .collect()
}

/// The `q` quantile of `values` (the smallest value with at least `q` of them at or below it).
fn quantile<T: Copy + PartialOrd>(mut values: Vec<T>, q: f64) -> Option<T> {
    if values.is_empty() {
        return None;
    }
    values.sort_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
    let rank = (q * values.len() as f64).ceil() as usize;
    values.get(rank.clamp(1, values.len()) - 1).copied()
}

/// The before level of `r`: read from the whole seconds before the first fault that served
/// requests; `None` without any.
pub fn level(r: &RunReport) -> Option<Level> {
    let first = r
        .chaos_windows
        .iter()
        .map(|w| w.planned_start_s)
        .reduce(f64::min)?;
    let seconds: Vec<&TimelineSecond> = r
        .timeline
        .iter()
        .filter(|b| (b.second + 1) as f64 <= first && b.served() > 0 && b.p99_us.is_some())
        .collect();
    let error_rates = seconds
        .iter()
        .map(|b| b.errors as f64 / b.served() as f64)
        .collect();
    let p99s = seconds.iter().filter_map(|b| b.p99_us).collect();
    Some(Level {
        max_error_rate: quantile(error_rates, LEVEL_QUANTILE)? + RECOVERY_ERROR_SLACK,
        max_p99_us: (quantile(p99s, LEVEL_QUANTILE)? as f64 * RECOVERY_LATENCY_SLACK).round()
            as u64,
        before_seconds: seconds.len(),
    })
}

/// Whether second `b` is back to `level`.
fn is_back(b: &TimelineSecond, level: &Level) -> bool {
    b.served() > 0
        && b.errors as f64 / b.served() as f64 <= level.max_error_rate + 1e-12
        && b.p99_us.is_some_and(|p| p <= level.max_p99_us)
}

/// How `r` recovered after the fault labelled `fault` healed.
fn recovery(variant: &str, r: &RunReport, fault: &str) -> Recovery {
    let mut out = Recovery {
        variant: variant.to_string(),
        healed_s: None,
        level: None,
        recovered_at_s: None,
        time_to_recover_s: None,
        searched_until_s: None,
    };
    let Some(window) = r.chaos_windows.iter().find(|w| w.label == fault) else {
        return out;
    };
    let healed = window.end_s;
    out.healed_s = Some(healed);
    let until = r
        .chaos_windows
        .iter()
        .map(|w| w.start_s)
        .filter(|start| *start >= healed)
        .fold(r.duration_s, f64::min);
    out.searched_until_s = Some(until);
    let Some(level) = level(r) else {
        return out;
    };
    let from = healed.floor();
    let seconds: Vec<&TimelineSecond> = r
        .timeline
        .iter()
        .filter(|b| (b.second as f64) >= from && (b.second as f64) < until)
        .collect();
    let start = (0..seconds.len()).find(|&i| {
        seconds[i..(i + RECOVERY_STREAK).min(seconds.len())]
            .iter()
            .all(|b| is_back(b, &level))
    });
    if let Some(i) = start {
        let at = seconds[i].second as f64;
        out.recovered_at_s = Some(at);
        out.time_to_recover_s = Some((at - healed).max(0.0));
    }
    out.level = Some(level);
    out
}

// What `report.md` and `report.html` say the same way.

/// What the per-phase table says about its figures.
const PHASE_NOTE: &str = "Errors are failed requests over the served ones (shed requests, 429 \
     or 503 with Retry-After, are counted apart); latencies are of served requests; confirmed \
     orders/s counts sagas by the second they ended CONFIRMED.";

/// What the recovery table says about its times.
fn recovery_note() -> String {
    format!(
        "From the fault's heal until the per-second error rate and p99 are back to the before \
         phase's level ({:.0}th percentile of its seconds, +{} percentage point of errors, ×{} \
         latency) for {RECOVERY_STREAK} seconds in a row, to the second; searched until the next \
         fault starts or the load ends.",
        LEVEL_QUANTILE * 100.0,
        RECOVERY_ERROR_SLACK * 100.0,
        RECOVERY_LATENCY_SLACK
    )
}

/// `before (0s–10s)`, or the name alone for a phase without a window.
fn phase_title(p: &PhaseComparison) -> String {
    match (p.start_s, p.end_s) {
        (Some(a), Some(z)) => format!("{} ({}s–{}s)", p.phase, fmt_s(a), fmt_s(z)),
        _ => p.phase.clone(),
    }
}

fn fmt_s(v: f64) -> String {
    crate::slo::format_number((v * 10.0).round() / 10.0)
}

/// What gates a variant.
fn gate_text(v: &VariantSummary) -> &'static str {
    if v.gate {
        "SLOs and invariants"
    } else {
        "invariants only (gate = false)"
    }
}

/// `passed`, `passed (2 SLOs broken, not gated)` or `failed`.
fn verdict_text(v: &VariantSummary) -> String {
    let broken = v.slos.len() - v.slos_held();
    match v.gated_verdict {
        Verdict::Passed if broken > 0 => {
            format!("passed ({} broken, not gated)", counted(broken, "SLO"))
        }
        Verdict::Passed => "passed".into(),
        Verdict::Failed => "failed".into(),
        Verdict::Interrupted => "interrupted".into(),
    }
}

/// `3 (1.20%)`; `-` without a served request.
fn errors_cell(errors: u64, rate: Option<f64>) -> String {
    rate.map_or("-".into(), |r| format!("{errors} ({:.2}%)", r * 100.0))
}

/// `12.5/s`; `-` for a phase without a window.
fn confirmed_cell(f: &PhaseFigures) -> String {
    f.confirmed_per_s
        .map_or("-".into(), |c| format!("{c:.1}/s"))
}

/// `40ms / 58ms / 59ms`; `-` without a request.
fn latencies_cell(e: Option<&EndpointFigures>) -> String {
    let us = |v: Option<u64>| v.map_or("-".to_string(), |v| crate::slo::format_micros(v as f64));
    match e {
        Some(e) if e.requests > 0 => {
            format!("{} / {} / {}", us(e.p50_us), us(e.p95_us), us(e.p99_us))
        }
        _ => "-".into(),
    }
}

/// The endpoints any variant sent requests to in the phase.
fn endpoint_names(p: &PhaseComparison) -> Vec<&str> {
    let names: BTreeSet<&str> = p
        .variants
        .iter()
        .flat_map(|f| f.endpoints.keys().map(String::as_str))
        .collect();
    names.into_iter().collect()
}

/// Every SLO any variant judged, in the order the first one that has it lists it.
fn slo_names(r: &VariantsReport) -> Vec<&str> {
    let mut names: Vec<&str> = Vec::new();
    for v in &r.variants {
        for s in &v.slos {
            if !names.contains(&s.name.as_str()) {
                names.push(&s.name);
            }
        }
    }
    names
}

/// Every invariant any variant checked, in order.
fn invariant_names(r: &VariantsReport) -> Vec<&str> {
    let mut names: Vec<&str> = Vec::new();
    for v in &r.variants {
        for i in &v.invariants {
            if !names.contains(&i.name.as_str()) {
                names.push(&i.name);
            }
        }
    }
    names
}

/// A variant's SLO for a cell: `(held, "45ms")`, with `, not gated` on a broken SLO of a
/// variant that does not gate; `None` when the variant did not judge it.
fn slo_cell(v: &VariantSummary, name: &str) -> Option<(bool, String)> {
    let s = v.slos.iter().find(|s| s.name == name)?;
    let note = if !s.held && !v.gate {
        ", not gated"
    } else {
        ""
    };
    Some((s.held, format!("{}{note}", s.measured_display())))
}

/// Every variant's gateway events (breaker transitions, rotation changes, bulkhead
/// saturations), in time order within each variant.
fn event_rows(r: &VariantsReport) -> Vec<(&str, GatewayEvent)> {
    r.variants
        .iter()
        .flat_map(|v| {
            gateway_events::events(
                &v.breaker_transitions,
                &v.rotation_changes,
                &v.bulkhead_saturations,
            )
            .into_iter()
            .map(|e| (v.name.as_str(), e))
        })
        .collect()
}

/// Writes the comparison into `dir` (`report.json`, `report.md`, `report.html`, `junit.xml`);
/// `runs` are the variants it was built from, in its order, for the charts and the
/// invariants' violations.
pub fn write_all(
    dir: &Path,
    report: &VariantsReport,
    runs: &[VariantRun],
) -> anyhow::Result<Paths> {
    let mut json = serde_json::to_string_pretty(report).context("serializing report.json")?;
    json.push('\n');
    super::write_files(
        dir,
        [
            json,
            markdown::render(report),
            html::render(report, runs),
            junit::render(report, runs),
        ],
    )
}

#[cfg(test)]
mod tests;
