//! Run reports: what a run measured and proved, written to `reports/<run-id>/` as
//! `report.json` (the [`RunReport`], schema documented in `reports/README.md`), `report.md` (for a
//! PR comment), `report.html` (one self-contained page with SVG charts) and `junit.xml` (one test
//! case per SLO and invariant). [`compare`] judges a report against a baseline.
//!
//! # Layout
//! - this module: [`RunReport`] and how it is built from a run, [`write_all`], [`read`].
//! - [`histogram`]: the V2+deflate+base64 encoding of histograms in `report.json`.
//! - [`breaker`]: the gateway's circuit breaker transitions, read from the scraped metrics.
//! - [`gateway_events`]: its health checks' rotation changes and its bulkheads' saturations,
//!   and every gateway event as one list for the charts and tables.
//! - `markdown`, `html`, `junit`: the other three files; `sections` decides which sections
//!   `report.md` and `report.html` have and in what order.
//! - [`compare`](mod@compare): deltas against a baseline report and the regression gate.
//! - [`variants`]: a run of a scenario's `[[variant]]`s, side by side, and its gate.

pub mod breaker;
pub mod compare;
pub mod gateway_events;
pub mod histogram;
mod html;
mod junit;
mod markdown;
mod sections;
pub mod variants;

#[cfg(test)]
pub(crate) mod tests;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use serde::{Deserialize, Serialize};

use crate::capacity::Capacity;
use crate::checks::InvariantVerdict;
use crate::metrics::{ArrivalCounts, EndpointStats, Latency, Measurements};
use crate::scenario::Scenario;
use crate::slo::SloVerdict;
use crate::telemetry::charts::MetricsReport;
use crate::telemetry::hops::TraceReport;

pub use breaker::BreakerTransition;
pub use compare::{Comparison, Delta, Tolerance, compare};
pub use gateway_events::{BulkheadSaturation, GatewayEvent, RotationChange};

/// The version of `report.json`'s schema; raised when a field changes meaning or goes away.
pub const SCHEMA_VERSION: u32 = 1;

/// Exit code of a run where every SLO and invariant held.
pub const EXIT_PASSED: u8 = 0;
/// Exit code of a run where an SLO or an invariant failed.
pub const EXIT_FAILED: u8 = 1;
/// Exit code of a run that was interrupted (Ctrl-C, SIGTERM, the console's `q`).
pub use crate::interrupt::EXIT_INTERRUPTED;

/// Everything a run measured and proved; `report.json` is this, serialized.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunReport {
    pub schema_version: u32,
    pub run_id: String,
    pub scenario: ScenarioInfo,
    /// When the load started, RFC 3339 in UTC.
    pub started_at: String,
    /// How long the load ran, in seconds.
    pub duration_s: f64,
    pub environment: EnvironmentSummary,
    pub slos: Vec<SloVerdict>,
    pub invariants: Vec<InvariantVerdict>,
    /// Terminal order statuses seen by the load generator (`CONFIRMED`, ..., `UNFINISHED`).
    pub outcomes: BTreeMap<String, u64>,
    /// One entry per second of the load.
    pub timeline: Vec<TimelineSecond>,
    /// The chaos timeline as it happened; empty without `[[chaos]]`.
    pub chaos_windows: Vec<ChaosWindow>,
    /// phase (`all`, `step:<i>` in capacity runs, later `before`, `during:<fault>`, `after`) →
    /// what was measured in it.
    pub phases: BTreeMap<String, PhaseStats>,
    /// Open-model runs: the journeys the schedule started over the whole load, those started
    /// and those dropped (every user busy); absent for a closed model.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub arrivals: Option<ArrivalCounts>,
    /// Capacity runs (`find_knee`): every step of the test plan and the knee.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capacity: Option<Capacity>,
    /// What the traces say: where the sagas' time went, hop by hop, per phase, and the slowest
    /// sagas; absent when no trace was collected.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traces: Option<TraceReport>,
    /// The metrics scraped from every process during the run, as charts; absent when nothing
    /// was scraped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metrics: Option<MetricsReport>,
    /// The gateway's circuit breaker state changes, in time order (see [`breaker`]); absent
    /// when there was none, or nothing was scraped.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub breaker_transitions: Vec<BreakerTransition>,
    /// The gateway's active health checks taking instances out of rotation and back (see
    /// [`gateway_events`]); absent when there was none, or nothing was scraped.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rotation_changes: Vec<RotationChange>,
    /// The gateway's bulkheads refusing calls, scrape after scrape (see [`gateway_events`]);
    /// absent when there was none, or nothing was scraped.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub bulkhead_saturations: Vec<BulkheadSaturation>,
    /// In a run of a scenario's `[[variant]]`s: the variant this report is of.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
    /// A run that was interrupted: how far it got. Its verdict is `interrupted` whatever its
    /// SLOs and invariants say; absent for a run that went its full course.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interruption: Option<Interruption>,
    pub verdict: Verdict,
    /// What `harness run` exits with: 0 passed, 1 failed, 130 interrupted.
    pub exit_code: u8,
}

/// How far an interrupted run got.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Interruption {
    /// What interrupted it: `SIGINT`, `SIGTERM`, or a caller's reason (`console`).
    pub by: String,
    /// What the run was doing: `load` (the load was cut short), `follow-up` (the load had run its
    /// plan; the orders still pending were being followed) or `checks` (converging and checking).
    pub stage: String,
    /// The load's phase at the interruption (`before`, `during:<fault>`, `after`, `step:<i>`),
    /// `all` for a load without phases.
    pub phase: String,
    /// Seconds the load ran, and the seconds its plan has.
    pub load_s: f64,
    pub planned_s: f64,
    /// Requests the load sent.
    pub requests: u64,
    /// The bound the checks' convergence had after the interruption, in seconds: they ran after
    /// the heal, are reported, and are not judged.
    pub convergence_bound_s: f64,
}

impl Interruption {
    /// `SIGINT 12.3 s into 22.0 s of load (56%), phase before`, or `SIGINT during the checks,
    /// after 22.0 s of load`.
    pub fn describe(&self) -> String {
        let share = if self.planned_s > 0.0 {
            format!(" ({:.0}%)", 100.0 * self.load_s / self.planned_s)
        } else {
            String::new()
        };
        match self.stage.as_str() {
            "load" => format!(
                "{} {:.1} s into {:.1} s of load{share}, phase {}",
                self.by, self.load_s, self.planned_s, self.phase
            ),
            stage => format!(
                "{} during the {stage}, after {:.1} s of {:.1} s of load",
                self.by, self.load_s, self.planned_s
            ),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScenarioInfo {
    pub name: String,
    pub description: String,
    /// The scenario as it was run (its TOML, as JSON).
    pub definition: serde_json::Value,
}

/// Where the run happened.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EnvironmentSummary {
    /// `local`, `containers` or `external`.
    pub backend: String,
    /// Instances per service: `order`, `inventory`, `payment`.
    pub instances: BTreeMap<String, u32>,
    /// The cores each service instance was held to (`cpus_per_instance`); absent when none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpus_per_instance: Option<f64>,
    /// Seconds from starting the environment to ready; absent when not measured.
    pub startup_s: Option<f64>,
}

impl EnvironmentSummary {
    /// The scenario's backend and instance counts, with the measured start-up time.
    pub fn from_scenario(scenario: &Scenario, startup: Option<Duration>) -> Self {
        let i = &scenario.environment.instances;
        Self {
            backend: scenario.environment.backend.get_ref().name().to_string(),
            instances: [
                ("order", *i.order.get_ref()),
                ("inventory", *i.inventory.get_ref()),
                ("payment", *i.payment.get_ref()),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect(),
            cpus_per_instance: scenario
                .environment
                .cpus_per_instance
                .as_ref()
                .map(|c| *c.get_ref()),
            startup_s: startup.map(|d| d.as_secs_f64()),
        }
    }

    /// `order ×2, inventory ×1, payment ×1`, and the CPU budget of each when there was one.
    pub fn instances_text(&self) -> String {
        let counts = self
            .instances
            .iter()
            .map(|(k, v)| format!("{k} ×{v}"))
            .collect::<Vec<_>>()
            .join(", ");
        match self.cpus_per_instance {
            Some(c) => format!("{counts}; each instance held to {c} cores"),
            None => counts,
        }
    }
}

/// One second of the load, as measured.
pub use crate::metrics::SecondBucket as TimelineSecond;

/// One fault of the chaos timeline as it happened: shaded on the charts and listed in the
/// timeline table. Times are seconds since the load started.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ChaosWindow {
    /// When the fault was applied.
    pub start_s: f64,
    /// When it was healed.
    pub end_s: f64,
    /// The fault's label; its phase is `during:<label>`.
    pub label: String,
    /// The fault (`latency`, `kill`, ...) and the scenario's target.
    #[serde(default)]
    pub fault: String,
    #[serde(default)]
    pub target: String,
    /// The links or processes it acted on.
    #[serde(default)]
    pub affected: Vec<String>,
    /// When the scenario asked for it to start and end.
    #[serde(default)]
    pub planned_start_s: f64,
    #[serde(default)]
    pub planned_end_s: f64,
    /// An operator healed it before its time (`harness run --tui`'s heal keys): `end_s` is when.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub healed_by_hand: bool,
}

impl ChaosWindow {
    /// When it was healed, for the timeline tables: `12.5s`, or `12.5s by hand` when an
    /// operator healed it before its time.
    pub fn healed(&self) -> String {
        if self.healed_by_hand {
            format!("{:.1}s by hand", self.end_s)
        } else {
            format!("{:.1}s", self.end_s)
        }
    }
}

/// What was measured in one phase.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PhaseStats {
    /// `"METHOD /path"` → its requests.
    pub endpoints: BTreeMap<String, EndpointReport>,
    /// Order accepted to saga terminal; absent when no saga was measured in the phase.
    pub saga_completion: Option<LatencyReport>,
    /// Open model: the journeys due in the phase, started, dropped and paused; absent for a closed
    /// model.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub arrivals: Option<ArrivalCounts>,
}

/// Requests to one endpoint in one phase.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EndpointReport {
    /// Requests sent: `ok + errors + shed`.
    pub count: u64,
    pub ok: u64,
    pub errors: u64,
    /// Status code → errors (`0`: transport error: timeout, refused, reset).
    pub errors_by_status: BTreeMap<u16, u64>,
    /// Requests the system shed (429 or 503 with `Retry-After`): not errors, not timed.
    #[serde(default)]
    pub shed: u64,
    /// Status code → shed requests.
    #[serde(default)]
    pub shed_by_status: BTreeMap<u16, u64>,
    /// Latencies of the requests served (not shed).
    pub latency: LatencyReport,
}

impl EndpointReport {
    fn new(stats: &EndpointStats) -> anyhow::Result<Self> {
        Ok(Self {
            count: stats.requests(),
            ok: stats.ok,
            errors: stats.errors,
            errors_by_status: stats.errors_by_status.clone(),
            shed: stats.shed,
            shed_by_status: stats.shed_by_status.clone(),
            latency: LatencyReport::new(&stats.latency)?,
        })
    }
}

/// A latency distribution: a few percentiles for reading, and the full histogram for merging.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LatencyReport {
    /// Samples in the histogram (with coordinated-omission correction this can exceed the
    /// request count).
    pub count: u64,
    /// Percentiles in µs; absent when the histogram is empty.
    pub p50_us: Option<u64>,
    pub p95_us: Option<u64>,
    pub p99_us: Option<u64>,
    pub max_us: Option<u64>,
    pub mean_us: Option<f64>,
    /// The HDR histogram (µs, 1 µs .. 1 h, 3 significant digits): V2 format, deflate, base64.
    pub histogram: String,
}

impl LatencyReport {
    pub fn new(latency: &Latency) -> anyhow::Result<Self> {
        let h = latency.histogram();
        let us = |d: Option<Duration>| d.map(|d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX));
        Ok(Self {
            count: latency.count(),
            p50_us: us(latency.quantile(0.5)),
            p95_us: us(latency.quantile(0.95)),
            p99_us: us(latency.quantile(0.99)),
            max_us: us(latency.max()),
            mean_us: (!h.is_empty()).then(|| h.mean()),
            histogram: histogram::encode(h)?,
        })
    }

    /// The full histogram, decoded.
    pub fn decode(&self) -> anyhow::Result<hdrhistogram::Histogram<u64>> {
        histogram::decode(&self.histogram)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    Passed,
    Failed,
    /// The run was interrupted: it did not run its course, so it proves nothing either way.
    Interrupted,
}

/// What a run hands over to become a report.
#[derive(Debug)]
pub struct RunInput<'a> {
    pub run_id: String,
    pub scenario: &'a Scenario,
    /// When the load started.
    pub started_at: SystemTime,
    pub environment: EnvironmentSummary,
    pub measurements: &'a Measurements,
    /// Usually [`crate::slo::evaluate_scenario`] of the scenario and measurements.
    pub slos: Vec<SloVerdict>,
    pub invariants: Vec<InvariantVerdict>,
    pub chaos_windows: Vec<ChaosWindow>,
    pub capacity: Option<Capacity>,
    pub traces: Option<TraceReport>,
    pub metrics: Option<MetricsReport>,
}

impl RunReport {
    /// The report of a run; the verdict is `failed` when any SLO or invariant did not hold.
    pub fn build(input: RunInput<'_>) -> anyhow::Result<Self> {
        let m = input.measurements;
        let mut phases = BTreeMap::new();
        let names: std::collections::BTreeSet<&String> = m
            .endpoints
            .keys()
            .chain(m.saga_completion.keys())
            .chain(m.arrivals.keys())
            .collect();
        for phase in names {
            let mut stats = PhaseStats::default();
            for (endpoint, s) in m.endpoints.get(phase).into_iter().flatten() {
                let r = EndpointReport::new(s)
                    .with_context(|| format!("phase {phase}, endpoint {endpoint}"))?;
                stats.endpoints.insert(endpoint.clone(), r);
            }
            if let Some(l) = m.saga_completion.get(phase).filter(|l| l.count() > 0) {
                stats.saga_completion = Some(LatencyReport::new(l)?);
            }
            stats.arrivals = m.arrivals.get(phase).copied();
            phases.insert(phase.clone(), stats);
        }
        let held = input.slos.iter().all(|s| s.held) && input.invariants.iter().all(|i| i.held);
        let scenario = input.scenario;
        Ok(Self {
            schema_version: SCHEMA_VERSION,
            run_id: input.run_id,
            scenario: ScenarioInfo {
                name: scenario.name.clone(),
                description: scenario.description.get_ref().clone(),
                definition: serde_json::to_value(scenario).context("serializing the scenario")?,
            },
            started_at: rfc3339(input.started_at),
            duration_s: m.duration.as_secs_f64(),
            environment: input.environment,
            slos: input.slos,
            invariants: input.invariants,
            outcomes: m.outcomes.clone(),
            timeline: m.timeline.clone(),
            chaos_windows: input.chaos_windows,
            arrivals: m.arrivals.get(crate::metrics::ALL).copied(),
            phases,
            capacity: input.capacity,
            traces: input.traces,
            metrics: input.metrics,
            breaker_transitions: breaker::transitions(&m.scraped),
            rotation_changes: gateway_events::rotation_changes(&m.scraped),
            bulkhead_saturations: gateway_events::bulkhead_saturations(&m.scraped),
            variant: None,
            interruption: None,
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

    /// Marks the report of an interrupted run: verdict `interrupted`, exit code 130, whatever
    /// its SLOs and invariants say (they are kept, reported and not judged).
    pub fn interrupted(mut self, interruption: Interruption) -> Self {
        self.interruption = Some(interruption);
        self.verdict = Verdict::Interrupted;
        self.exit_code = EXIT_INTERRUPTED;
        self
    }

    /// The breaker transitions, rotation changes and bulkhead saturations, in time order.
    pub fn gateway_events(&self) -> Vec<GatewayEvent> {
        gateway_events::events(
            &self.breaker_transitions,
            &self.rotation_changes,
            &self.bulkhead_saturations,
        )
    }

    pub fn failed_slos(&self) -> impl Iterator<Item = &SloVerdict> {
        self.slos.iter().filter(|s| !s.held)
    }

    pub fn failed_invariants(&self) -> impl Iterator<Item = &InvariantVerdict> {
        self.invariants.iter().filter(|i| !i.held)
    }

    /// The requests of the whole run (phase `all`) over every endpoint: (sent, errors, shed).
    pub fn request_totals(&self) -> (u64, u64, u64) {
        self.phases
            .get(crate::metrics::ALL)
            .into_iter()
            .flat_map(|p| p.endpoints.values())
            .fold((0, 0, 0), |(n, e, s), r| {
                (n + r.count, e + r.errors, s + r.shed)
            })
    }

    /// One line on what the load did: `12000 journeys due: 11950 started, 50 dropped; 24100
    /// requests: 12 errors, 300 shed` (an open model, with `, 400 paused by the operator` when
    /// the load was paused), or just the requests (a closed one).
    pub fn load_summary(&self) -> String {
        let (requests, errors, shed) = self.request_totals();
        let requests = format!("{requests} requests: {errors} errors, {shed} shed");
        match &self.arrivals {
            Some(a) => format!(
                "{} journeys due: {} started, {} dropped{}; {requests}",
                a.scheduled,
                a.started,
                a.dropped,
                if a.paused > 0 {
                    format!(", {} paused by the operator", a.paused)
                } else {
                    String::new()
                }
            ),
            None => requests,
        }
    }

    /// Whether an operator paused an open-model load: the arrivals tables then have a column
    /// for the journeys not started because of it.
    pub fn arrivals_paused(&self) -> bool {
        self.phases
            .values()
            .any(|p| p.arrivals.is_some_and(|a| a.paused > 0))
    }

    /// The scenario's name, with the variant's in a run of variants: `payment-latency
    /// (without)`.
    pub fn name(&self) -> String {
        match &self.variant {
            Some(variant) => format!("{} ({variant})", self.scenario.name),
            None => self.scenario.name.clone(),
        }
    }

    /// One line: `smoke passed: 4 SLOs and 8 invariants held` or what failed.
    pub fn headline(&self) -> String {
        let name = self.name();
        let slos = self.failed_slos().count();
        let invariants = self.failed_invariants().count();
        let knee = self
            .capacity
            .as_ref()
            .map_or(String::new(), |c| format!("; {}", c.summary()));
        let line = if let Some(i) = &self.interruption {
            format!(
                "{name} interrupted ({}); {} requests made; SLOs and invariants reported, not \
                 judged",
                i.describe(),
                i.requests
            )
        } else if self.passed() {
            format!(
                "{name} passed: {} SLOs and {} invariants held",
                self.slos.len(),
                self.invariants.len()
            )
        } else {
            format!(
                "{name} failed: {slos} of {} SLOs and {invariants} of {} invariants failed",
                self.slos.len(),
                self.invariants.len()
            )
        };
        line + knee.as_str()
    }
}

/// Where [`write_all`] put the four files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Paths {
    pub dir: PathBuf,
    pub json: PathBuf,
    pub markdown: PathBuf,
    pub html: PathBuf,
    pub junit: PathBuf,
}

/// Writes the four files into `dir/<run-id>/` (created if needed) and returns their paths.
pub fn write_all(dir: &Path, report: &RunReport) -> anyhow::Result<Paths> {
    write_into(&run_dir(dir, &report.run_id)?, report)
}

/// `dir/<run-id>/`, refusing an id that cannot name one directory.
pub fn run_dir(dir: &Path, id: &str) -> anyhow::Result<PathBuf> {
    if id.is_empty()
        || id == "."
        || id == ".."
        || id.contains(['/', '\\'])
        || id.chars().any(char::is_control)
    {
        anyhow::bail!("run id {id:?} cannot name a directory");
    }
    Ok(dir.join(id))
}

/// Writes the four files into `run_dir` itself (created if needed).
pub fn write_into(run_dir: &Path, report: &RunReport) -> anyhow::Result<Paths> {
    let mut json = serde_json::to_string_pretty(report).context("serializing report.json")?;
    json.push('\n');
    write_files(
        run_dir,
        [
            json,
            markdown::render(report),
            html::render(report),
            junit::render(report),
        ],
    )
}

/// Writes `report.json`, `report.md`, `report.html` and `junit.xml`, in this order, into `dir`.
fn write_files(dir: &Path, texts: [String; 4]) -> anyhow::Result<Paths> {
    std::fs::create_dir_all(dir)
        .with_context(|| format!("creating the report directory {}", dir.display()))?;
    let paths = Paths {
        json: dir.join("report.json"),
        markdown: dir.join("report.md"),
        html: dir.join("report.html"),
        junit: dir.join("junit.xml"),
        dir: dir.to_path_buf(),
    };
    let [json, markdown, html, junit] = texts;
    for (path, text) in [
        (&paths.json, json),
        (&paths.markdown, markdown),
        (&paths.html, html),
        (&paths.junit, junit),
    ] {
        std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(paths)
}

/// Reads a `report.json` (e.g. a baseline), refusing other schema versions.
pub fn read(path: &Path) -> anyhow::Result<RunReport> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading the report {}", path.display()))?;
    let value: serde_json::Value =
        serde_json::from_str(&text).with_context(|| format!("{} is not JSON", path.display()))?;
    if value.get("kind").and_then(serde_json::Value::as_str) == Some(variants::KIND) {
        anyhow::bail!(
            "{} compares the variants of a run; pass one variant's report instead \
             (variants/<name>/report.json next to it)",
            path.display()
        );
    }
    let version = value
        .get("schema_version")
        .and_then(serde_json::Value::as_u64);
    if version != Some(u64::from(SCHEMA_VERSION)) {
        anyhow::bail!(
            "{} has schema version {version:?}; this harness reads version {SCHEMA_VERSION}",
            path.display()
        );
    }
    serde_json::from_value(value).with_context(|| format!("{} is not a run report", path.display()))
}

/// A run id: the start time (UTC, to the second), the scenario name and a short random suffix,
/// e.g. `20261122T001622Z-smoke-3f9a`; sorts by time and names a directory safely.
pub fn new_run_id(scenario: &str, started_at: SystemTime) -> String {
    let stamp: String = rfc3339(started_at)
        .chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .collect();
    let name: String = scenario
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    let suffix = uuid::Uuid::new_v4().simple().to_string();
    format!("{stamp}-{name}-{}", &suffix[..4])
}

/// `time` as RFC 3339 in UTC to the second, e.g. `2026-11-22T00:16:22Z`.
pub fn rfc3339(time: SystemTime) -> String {
    let secs = time
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3_600,
        rem % 3_600 / 60,
        rem % 60
    )
}
