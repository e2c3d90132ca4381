//! A scenario judged against this machine's own knee.
//!
//! A fixed arrival rate means different things on different machines: the overload scenario's
//! 1,200 journeys/s is 2.5x the knee of one 2-core machine and 5x that of a slower one, where no
//! system keeps 0.7 of a knee that is itself below the scenario's fixed goodput bound. So a
//! scenario may say what it means relative to the knee a capacity run found on the machine it
//! runs on:
//!
//! - `[load] knee_multiple = 3`: the arrival rate is 3x the knee's (the pool of users grows to
//!   one per arrival per second if it was smaller); `arrival_rate` is used when no knee is known;
//! - `[[slo]] min_goodput = 121` with `knee_share = 0.7`: the goodput bound is 0.7 of the knee's
//!   confirmed orders per second; `min_goodput` is used when no knee is known.
//!
//! Where the knee comes from ([`KneeSource`], `harness run --knee`): a capacity run's report
//! given by path; by default the newest one under the reports folder that ran on the same
//! backend; or none (`--knee fixed`), for the scenario's own figures. The run prints which, and
//! the report's copy of the scenario names it ([`KneeRef`]).

use std::path::{Path, PathBuf};

use anyhow::Context;
use serde::{Deserialize, Serialize};

use crate::capacity::Capacity;
use crate::report::RunReport;
use crate::scenario::{ArrivalRate, Scenario, Spanned};

/// How many of the newest report folders [`latest`] reads before giving up: a reports folder
/// of a long-lived checkout may hold thousands, and the knee wanted is a recent one.
const NEWEST_READ: usize = 50;

/// Where `harness run` takes the knee from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KneeSource {
    /// The newest capacity report under the reports folder, of the scenario's backend.
    Latest,
    /// No knee: the scenario's own `arrival_rate` and `min_goodput`.
    Fixed,
    /// This report.json of a capacity run.
    Report(PathBuf),
}

impl KneeSource {
    /// `latest`, `fixed`, or the path of a report.json.
    pub fn parse(s: &str) -> Result<Self, String> {
        match s.trim() {
            "" => Err("give `latest`, `fixed` or the path of a capacity run's report.json".into()),
            "latest" => Ok(Self::Latest),
            "fixed" => Ok(Self::Fixed),
            path => Ok(Self::Report(PathBuf::from(path))),
        }
    }
}

/// A capacity run's knee.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Knee {
    /// Journeys started per second on the knee's plateau.
    pub arrival_rate: f64,
    /// Orders confirmed per second on it.
    pub confirmed_per_s: f64,
    /// The plan ended before the knee: it is only a lower bound.
    pub lower_bound: bool,
}

impl Knee {
    /// The knee of a capacity report's `capacity` section.
    pub fn of(capacity: Option<&Capacity>) -> anyhow::Result<Self> {
        let capacity = capacity.context(
            "not a capacity run's report (no `capacity` section): give the report.json of \
             `harness run capacity`",
        )?;
        let step = capacity
            .knee_step()
            .context("that capacity run found no knee: no plateau met its SLOs")?;
        let arrival_rate = step.arrival_rate_per_s.context(
            "that capacity run's knee is a number of users (closed model), not an arrival rate",
        )?;
        Ok(Self {
            arrival_rate,
            confirmed_per_s: step.confirmed_per_s,
            lower_bound: capacity.beyond_plan,
        })
    }
}

/// The knee a scenario's figures were set from, as the report's copy of the scenario keeps it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KneeRef {
    /// The capacity run's report.json.
    pub report: String,
    /// When that run started.
    pub started_at: String,
    pub arrival_rate: f64,
    pub confirmed_per_s: f64,
}

/// Whether the scenario says anything relative to the knee.
pub fn wanted(scenario: &Scenario) -> bool {
    scenario.load.get_ref().knee_multiple.is_some()
        || scenario
            .slos
            .iter()
            .any(|s| s.get_ref().knee_share.is_some())
}

/// Sets `scenario`'s knee-relative figures from the knee `source` names, and says what it did
/// (a line to print), or `None` when the scenario has none. An explicit report that is not a
/// capacity run's with a knee is an error; so is naming one for a scenario with nothing
/// relative to the knee.
pub fn resolve(
    scenario: &mut Scenario,
    source: &KneeSource,
    reports_dir: &Path,
) -> anyhow::Result<Option<String>> {
    if !wanted(scenario) {
        if let KneeSource::Report(path) = source {
            anyhow::bail!(
                "--knee {}: scenario {} sets nothing from the knee (no knee_multiple under \
                 [load], no knee_share in an [[slo]])",
                path.display(),
                scenario.name
            );
        }
        return Ok(None);
    }
    let found = match source {
        KneeSource::Fixed => None,
        KneeSource::Report(path) => {
            let report = crate::report::read(path)?;
            let knee = Knee::of(report.capacity.as_ref())
                .with_context(|| format!("--knee {}", path.display()))?;
            Some((path.clone(), report.started_at, knee))
        }
        KneeSource::Latest => latest(reports_dir, scenario.environment.backend.get_ref().name()),
    };
    let Some((path, started_at, knee)) = found else {
        return Ok(Some(format!(
            "no knee of this machine: {} at the scenario's own figures ({}); run `harness run \
             capacity` first to judge it against this machine's knee",
            scenario.name,
            own_figures(scenario),
        )));
    };
    let when = started_at.clone();
    apply(
        scenario,
        &knee,
        KneeRef {
            report: path.display().to_string(),
            started_at,
            arrival_rate: knee.arrival_rate,
            confirmed_per_s: knee.confirmed_per_s,
        },
    )?;
    Ok(Some(format!(
        "knee from {} ({}): {:.0} journeys/s, {:.1} confirmed orders/s{}; so {}",
        path.display(),
        when,
        knee.arrival_rate,
        knee.confirmed_per_s,
        if knee.lower_bound {
            " (a lower bound: that plan ended before its knee)"
        } else {
            ""
        },
        own_figures(scenario),
    )))
}

/// The rate and goodput bounds the scenario runs with, in words.
fn own_figures(scenario: &Scenario) -> String {
    let load = scenario.load.get_ref();
    let mut parts = Vec::new();
    if let Some(rate) = &load.arrival_rate {
        parts.push(format!("{} journeys", rate.get_ref()));
    }
    for slo in &scenario.slos {
        if let Some(g) = &slo.get_ref().min_goodput {
            parts.push(format!("goodput >= {:.1} confirmed orders/s", g.get_ref()));
        }
    }
    parts.join(", ")
}

/// Sets the arrival rate to `knee_multiple` times the knee's and each `knee_share` goodput
/// bound to that share of the knee's confirmed orders/s.
pub fn apply(scenario: &mut Scenario, knee: &Knee, from: KneeRef) -> anyhow::Result<()> {
    let multiple = (scenario.load.get_ref().knee_multiple.as_ref()).map(|m| *m.get_ref());
    if let Some(multiple) = multiple {
        at_rate(scenario, knee.arrival_rate * multiple)?;
    }
    for slo in &mut scenario.slos {
        let slo = slo.get_mut();
        if let (Some(share), Some(goodput)) = (&slo.knee_share, &mut slo.min_goodput) {
            // To a tenth, as the bound is printed: 63.6, not 63.629999999999995.
            *goodput.get_mut() = (share.get_ref() * knee.confirmed_per_s * 10.0).round() / 10.0;
        }
    }
    scenario.load.get_mut().knee = Some(from);
    scenario.validate().map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok(())
}

/// Sets an open-model scenario's plateau to `per_second` journeys/s, its pool of users to at
/// least one per arrival per second.
pub fn at_rate(scenario: &mut Scenario, per_second: f64) -> anyhow::Result<()> {
    let load = scenario.load.get_mut();
    let Some(rate) = load.arrival_rate.as_mut() else {
        anyhow::bail!(
            "scenario {} has no `arrival_rate` under [load] to set from the knee",
            scenario.name
        );
    };
    *rate.get_mut() = ArrivalRate::per_second(per_second.round().max(1.0));
    // `min` keeps the cast in range; validation bounds the rate itself.
    let wanted = per_second.ceil().min(f64::from(u32::MAX)) as u32;
    match load.users.as_mut() {
        Some(users) => *users.get_mut() = (*users.get_ref()).max(wanted),
        // The default pool stops at `DEFAULT_POOL_MAX`, below 3x a fast machine's knee.
        None => load.users = Some(Spanned::new(0..0, wanted)),
    }
    scenario.validate().map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok(())
}

/// The newest capacity report under `reports_dir` (run folders are named by their start time,
/// so the newest sorts last) that ran on `backend` and found a knee in an open model, with the
/// time it started. Folders that are not runs, reports that do not parse and capacity runs
/// without such a knee are passed over; only the [`NEWEST_READ`] newest folders are read.
pub fn latest(reports_dir: &Path, backend: &str) -> Option<(PathBuf, String, Knee)> {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(reports_dir)
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.join("report.json").is_file())
        .collect();
    dirs.sort();
    dirs.iter().rev().take(NEWEST_READ).find_map(|dir| {
        let path = dir.join("report.json");
        let report: RunReport = crate::report::read(&path).ok()?;
        if report.environment.backend != backend {
            return None;
        }
        let knee = Knee::of(report.capacity.as_ref()).ok()?;
        Some((path, report.started_at, knee))
    })
}

#[cfg(test)]
mod tests;
