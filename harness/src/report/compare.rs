//! A run against a baseline (`harness run --baseline report.json`): the delta of every SLO
//! metric both reports measured, and a regression verdict with a stated tolerance.
//!
//! SLOs are matched by name. Latency and saga completion regress when they grow by more than
//! [`Tolerance::latency_increase`] (relative), the error rate when it grows by more than
//! [`Tolerance::error_rate_increase_pp`] percentage points, throughput and goodput when they drop
//! by more than [`Tolerance::throughput_decrease`] (relative). A metric the baseline measured and the current
//! run did not is a regression too; one only the current run has is listed as new.

use std::fmt;

use serde::Serialize;

use super::RunReport;
use crate::slo::{SloMetric, SloUnit, SloVerdict, format_value};

/// How much worse than the baseline a metric may get before it counts as a regression.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Tolerance {
    /// Relative growth of a latency (0.2 = +20%).
    pub latency_increase: f64,
    /// Absolute growth of an error rate in percentage points (1.0 = from 0.5% to 1.5%).
    pub error_rate_increase_pp: f64,
    /// Relative drop of a throughput (0.2 = -20%).
    pub throughput_decrease: f64,
}

impl Default for Tolerance {
    /// +20% latency, +1 percentage point error rate, -20% throughput.
    fn default() -> Self {
        Self {
            latency_increase: 0.20,
            error_rate_increase_pp: 1.0,
            throughput_decrease: 0.20,
        }
    }
}

impl fmt::Display for Tolerance {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "latency +{:.0}%, error rate +{} pp, throughput -{:.0}%",
            self.latency_increase * 100.0,
            self.error_rate_increase_pp,
            self.throughput_decrease * 100.0
        )
    }
}

/// One SLO metric in both runs.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Delta {
    /// The SLO's name.
    pub name: String,
    pub metric: SloMetric,
    pub unit: SloUnit,
    pub baseline: Option<f64>,
    pub current: Option<f64>,
    /// The change for humans: `+12.5%`, `+0.40 pp`, `new`, `not measured`.
    pub change: String,
    pub regression: bool,
}

/// The result of [`compare`].
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Comparison {
    pub baseline_run_id: String,
    pub current_run_id: String,
    pub tolerance: Tolerance,
    pub deltas: Vec<Delta>,
    /// SLO names the baseline had and the current run does not (not judged).
    pub missing: Vec<String>,
}

impl Comparison {
    pub fn regressed(&self) -> bool {
        self.deltas.iter().any(|d| d.regression)
    }

    pub fn regressions(&self) -> impl Iterator<Item = &Delta> {
        self.deltas.iter().filter(|d| d.regression)
    }
}

impl fmt::Display for Comparison {
    /// A table of deltas and the verdict, for the terminal.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "against baseline {} (tolerance: {})",
            self.baseline_run_id, self.tolerance
        )?;
        let width = self.deltas.iter().map(|d| d.name.len()).max().unwrap_or(0);
        for d in &self.deltas {
            let show = |v: Option<f64>| v.map_or("-".to_string(), |v| format_value(d.unit, v));
            writeln!(
                f,
                "  {:<width$}  {:>10} -> {:<10} {:>12}{}",
                d.name,
                show(d.baseline),
                show(d.current),
                d.change,
                if d.regression { "  REGRESSION" } else { "" }
            )?;
        }
        for name in &self.missing {
            writeln!(f, "  {name:<width$}  not in this run")?;
        }
        let n = self.regressions().count();
        if n == 0 {
            write!(f, "no regression beyond the tolerance")
        } else {
            write!(f, "{n} regression(s) beyond the tolerance")
        }
    }
}

/// The deltas of `current` against `baseline`.
pub fn compare(current: &RunReport, baseline: &RunReport, tolerance: Tolerance) -> Comparison {
    let deltas = current
        .slos
        .iter()
        .map(|c| {
            let b = baseline.slos.iter().find(|b| b.name == c.name);
            delta(c, b, tolerance)
        })
        .collect();
    let missing = baseline
        .slos
        .iter()
        .filter(|b| !current.slos.iter().any(|c| c.name == b.name))
        .map(|b| b.name.clone())
        .collect();
    Comparison {
        baseline_run_id: baseline.run_id.clone(),
        current_run_id: current.run_id.clone(),
        tolerance,
        deltas,
        missing,
    }
}

fn delta(current: &SloVerdict, baseline: Option<&SloVerdict>, t: Tolerance) -> Delta {
    let mut d = Delta {
        name: current.name.clone(),
        metric: current.metric,
        unit: current.unit,
        baseline: baseline.and_then(|b| b.measured),
        current: current.measured,
        change: String::new(),
        regression: false,
    };
    match (d.baseline, d.current) {
        _ if baseline.is_none() => d.change = "new".into(),
        (None, _) => d.change = "no baseline value".into(),
        (Some(_), None) => {
            d.change = "not measured".into();
            d.regression = true;
        }
        (Some(b), Some(c)) => match current.metric {
            SloMetric::ErrorRate => {
                let pp = (c - b) * 100.0;
                d.change = format!("{pp:+.2} pp");
                d.regression = pp > t.error_rate_increase_pp + 1e-9;
            }
            SloMetric::Latency | SloMetric::SagaCompletion | SloMetric::Span => {
                let rel = relative(b, c);
                d.change = format!("{:+.1}%", rel * 100.0);
                d.regression = rel > t.latency_increase + 1e-9;
            }
            SloMetric::Throughput | SloMetric::Goodput => {
                let rel = relative(b, c);
                d.change = format!("{:+.1}%", rel * 100.0);
                d.regression = -rel > t.throughput_decrease + 1e-9;
            }
            // A scraped metric has no general direction of better or worse (a queue should be
            // short, a cache hit rate high): its own SLO judges it; the comparison only shows
            // the change.
            SloMetric::MetricMax | SloMetric::MetricMin => {
                let rel = relative(b, c);
                d.change = format!("{:+.1}%", rel * 100.0);
            }
        },
    }
    d
}

/// `(current - baseline) / baseline`; from zero, any growth counts as infinite.
fn relative(baseline: f64, current: f64) -> f64 {
    if baseline == 0.0 {
        if current == 0.0 {
            0.0
        } else {
            f64::INFINITY * current.signum()
        }
    } else {
        (current - baseline) / baseline
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::tests::sample_report;

    fn with(report: &RunReport, name: &str, measured: Option<f64>) -> RunReport {
        let mut r = report.clone();
        r.run_id = "current".into();
        let slo = r.slos.iter_mut().find(|s| s.name == name).unwrap();
        slo.measured = measured;
        r
    }

    fn first_of(report: &RunReport, metric: SloMetric) -> (String, f64) {
        let s = report
            .slos
            .iter()
            .find(|s| s.metric == metric && s.measured.is_some())
            .unwrap();
        (s.name.clone(), s.measured.unwrap())
    }

    #[test]
    fn an_identical_run_does_not_regress() {
        let base = sample_report();
        let c = compare(&base, &base, Tolerance::default());
        assert!(!c.regressed(), "{c}");
        assert_eq!(c.deltas.len(), base.slos.len());
        assert!(c.to_string().contains("no regression"), "{c}");
    }

    #[test]
    fn latency_regresses_beyond_twenty_percent() {
        let base = sample_report();
        let (name, v) = first_of(&base, SloMetric::Latency);
        let ok = compare(
            &with(&base, &name, Some(v * 1.19)),
            &base,
            Tolerance::default(),
        );
        assert!(!ok.regressed(), "{ok}");
        let bad = compare(
            &with(&base, &name, Some(v * 1.25)),
            &base,
            Tolerance::default(),
        );
        assert!(bad.regressed(), "{bad}");
        let text = bad.to_string();
        assert!(
            text.contains(&name) && text.contains("+25.0%") && text.contains("REGRESSION"),
            "{text}"
        );
    }

    #[test]
    fn error_rate_regresses_beyond_one_percentage_point() {
        let base = sample_report();
        let (name, v) = first_of(&base, SloMetric::ErrorRate);
        let ok = compare(
            &with(&base, &name, Some(v + 0.009)),
            &base,
            Tolerance::default(),
        );
        assert!(!ok.regressed(), "{ok}");
        let bad = compare(
            &with(&base, &name, Some(v + 0.011)),
            &base,
            Tolerance::default(),
        );
        assert!(bad.regressed(), "{bad}");
        assert!(bad.deltas.iter().any(|d| d.change == "+1.10 pp"), "{bad}");
    }

    #[test]
    fn throughput_regresses_when_it_drops_beyond_twenty_percent() {
        let base = sample_report();
        let (name, v) = first_of(&base, SloMetric::Throughput);
        let ok = compare(
            &with(&base, &name, Some(v * 0.81)),
            &base,
            Tolerance::default(),
        );
        assert!(!ok.regressed(), "{ok}");
        let up = compare(
            &with(&base, &name, Some(v * 3.0)),
            &base,
            Tolerance::default(),
        );
        assert!(!up.regressed(), "more throughput is no regression: {up}");
        let bad = compare(
            &with(&base, &name, Some(v * 0.7)),
            &base,
            Tolerance::default(),
        );
        assert!(bad.regressed(), "{bad}");
    }

    #[test]
    fn a_metric_no_longer_measured_regresses_and_new_ones_do_not() {
        let base = sample_report();
        let (name, _) = first_of(&base, SloMetric::Latency);
        let gone = compare(&with(&base, &name, None), &base, Tolerance::default());
        assert!(gone.regressed(), "{gone}");
        let mut older = base.clone();
        let removed = older.slos.remove(0);
        let c = compare(&base, &older, Tolerance::default());
        assert!(!c.regressed(), "{c}");
        assert!(
            c.deltas
                .iter()
                .any(|d| d.name == removed.name && d.change == "new")
        );
        let c = compare(&older, &base, Tolerance::default());
        assert_eq!(c.missing, vec![removed.name]);
    }

    #[test]
    fn a_looser_tolerance_accepts_more() {
        let base = sample_report();
        let (name, v) = first_of(&base, SloMetric::Latency);
        let loose = Tolerance {
            latency_increase: 0.5,
            ..Tolerance::default()
        };
        assert!(!compare(&with(&base, &name, Some(v * 1.4)), &base, loose).regressed());
    }
}
