//! The comparison's `junit.xml`: per variant a suite of its SLOs (`<variant>.slo`) and one of its
//! invariants (`<variant>.invariants`). A variant with `gate = false` has its broken SLOs
//! skipped with a message saying they are not gated, and its held ones passed with a note; its
//! invariants fail like any other's.

use super::{VariantRun, VariantsReport};
use crate::report::junit::Suites;

pub(super) fn render(r: &VariantsReport, runs: &[VariantRun]) -> String {
    let mut suites = Suites::default();
    for run in runs {
        let prefix = format!("{}.{}", r.scenario.name, run.name);
        let report = &run.report;
        suites.slos(
            &format!("{}.slo", run.name),
            &prefix,
            &report.slos,
            run.gate,
            &report.started_at,
        );
        suites.invariants(
            &format!("{}.invariants", run.name),
            &prefix,
            &report.invariants,
            &report.started_at,
        );
    }
    let time = runs.iter().map(|run| run.report.duration_s).sum();
    suites.render(&format!("harness {} {}", r.scenario.name, r.run_id), time)
}
