//! Which sections a report has and in what order: the one list that `report.md` and
//! `report.html` both walk, so the two files cannot drift apart in what they show.
//!
//! Adding a section is one [`Section`] variant, one line in [`sections`] and one function per
//! renderer. Each renderer matches on every variant without a wildcard, so the compiler points
//! at the renderers a new variant still needs; a renderer with no form for a section (charts in
//! Markdown) gives it an empty arm saying why.
//!
//! What both renderers read the same way (which hops come first, how a metric's value reads)
//! is here too, so the two files agree on it.

use super::{Interruption, LatencyReport, RunReport};
use crate::metrics::ALL;
use crate::slo::{format_micros, format_number};
use crate::telemetry::hops::{PhaseHops, SlowSaga, TraceReport};

/// What an interrupted run's report says under its headline: how far it got and what its
/// verdicts are worth.
pub(super) fn interruption_note(i: &Interruption) -> String {
    format!(
        "{}; {} requests made. After the heal, the checks ran with a {:.0} s convergence \
         bound: the SLOs and invariants below are reported, not judged, and the run \
         exits with {}",
        i.describe(),
        i.requests,
        i.convergence_bound_s,
        super::EXIT_INTERRUPTED
    )
}

/// One part of a rendered report, in the order [`sections`] lists them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Section {
    /// The headline verdict, the scenario's description and where and how long the run went.
    Summary,
    /// Every SLO with its target, measurement and verdict.
    Slos,
    /// The capacity test plan, step by step, and the knee.
    Capacity,
    /// The faults as they were applied and healed.
    ChaosTimeline,
    /// The gateway's circuit breakers opening, half-opening and closing, its health checks taking
    /// instances out of rotation and back, its bulkheads refusing calls.
    GatewayEvents,
    /// Every invariant with its verdict and first violations.
    Invariants,
    /// Open model: the journeys due, started and dropped per phase.
    Arrivals,
    /// Charts per second of the load (HTML only).
    OverTime,
    /// Terminal order statuses and how many orders reached each.
    Outcomes,
    /// Where the sagas' time went, hop by hop, from the traces, and the slowest sagas.
    Traces,
    /// The scraped metrics over time, and how the scrapes went.
    Metrics,
    /// Requests and latency per endpoint.
    Endpoints,
}

/// Violations `report.md` and `report.html` list per failed invariant; the rest are counted (all
/// of them are in `report.json`).
pub(super) const VIOLATIONS_SHOWN: usize = 5;

/// The sections `report` has, in order: a section whose data the run did not produce (no
/// capacity plan, no chaos) is left out rather than rendered empty.
pub(super) fn sections(report: &RunReport) -> Vec<Section> {
    [
        (Section::Summary, true),
        (Section::Slos, true),
        (Section::Capacity, report.capacity.is_some()),
        (Section::ChaosTimeline, !report.chaos_windows.is_empty()),
        (Section::GatewayEvents, !report.gateway_events().is_empty()),
        (Section::Invariants, true),
        (Section::Arrivals, report.arrivals.is_some()),
        (Section::OverTime, true),
        (Section::Outcomes, true),
        (Section::Traces, report.traces.is_some()),
        (Section::Metrics, report.metrics.is_some()),
        (Section::Endpoints, true),
    ]
    .into_iter()
    .filter_map(|(section, present)| present.then_some(section))
    .collect()
}

/// The phases with arrivals, `all` first: (phase, scheduled, started, dropped, paused).
pub(super) fn arrival_phases(r: &RunReport) -> Vec<(&str, crate::metrics::ArrivalCounts)> {
    let with = r
        .phases
        .iter()
        .filter_map(|(name, p)| p.arrivals.map(|a| (name.as_str(), a)));
    let (all, others): (Vec<_>, Vec<_>) = with.partition(|(name, _)| *name == ALL);
    all.into_iter().chain(others).collect()
}

/// What an arrivals table says about the numbers under it.
pub(super) const ARRIVALS_NOTE: &str = "Open model: journeys start on the arrival schedule \
     whatever the system does; a journey due while every user was busy is dropped, not run late, \
     and one due while an operator had the load paused (harness run --tui) is counted as paused. \
     Counted by when each journey was due.";

/// What a gateway events table says about the times in it.
pub(super) const GATEWAY_EVENTS_NOTE: &str = "From the gateway's scraped metrics \
     (gateway_breaker_transitions_total, gateway_upstream_healthy with \
     gateway_health_check_ejections_total, gateway_bulkhead_rejected_total): each event is placed \
     at the scrape that first showed it, so it happened within one scrape interval before; a \
     bulkhead is full from the first scrape that showed refusals to the first that showed none.";

/// The hops of a slow saga listed next to it: its biggest few.
pub(super) const TOP_HOPS_SHOWN: usize = 3;

/// One line on what the traces cover: spans received and dropped, traces, sagas with and
/// without a trace.
pub(super) fn trace_summary(t: &TraceReport) -> String {
    format!(
        "{} spans received ({} dropped), {} traces; {} sagas traced, {} without a trace.",
        t.spans_received, t.spans_dropped, t.traces, t.sagas_traced, t.sagas_without_trace
    )
}

/// The phases of the hop breakdown: `all` first, then the others in the report's order.
pub(super) fn trace_phases(t: &TraceReport) -> Vec<(&str, &PhaseHops)> {
    let all = t.phases.get_key_value(ALL);
    let others = t.phases.iter().filter(|(name, _)| name.as_str() != ALL);
    all.into_iter()
        .chain(others)
        .map(|(name, hops)| (name.as_str(), hops))
        .collect()
}

/// A phase's hops, the one with the highest p99 first: where a reader should look first.
pub(super) fn hops_by_p99(phase: &PhaseHops) -> Vec<(&str, &LatencyReport)> {
    let mut hops: Vec<(&str, &LatencyReport)> = phase
        .hops
        .iter()
        .map(|(hop, latency)| (hop.as_str(), latency))
        .collect();
    // Stable: equal p99s keep the hops' alphabetical order.
    hops.sort_by_key(|h| std::cmp::Reverse(h.1.p99_us));
    hops
}

/// A slow saga's [`TOP_HOPS_SHOWN`] longest hops, longest first, as `hop 1.2s` pairs.
pub(super) fn top_hops(saga: &SlowSaga) -> Vec<(&str, String)> {
    let mut hops: Vec<(&str, u64)> = saga.hops.iter().map(|(h, us)| (h.as_str(), *us)).collect();
    hops.sort_by_key(|h| std::cmp::Reverse(h.1));
    hops.into_iter()
        .take(TOP_HOPS_SHOWN)
        .map(|(hop, us)| (hop, format_micros(us as f64)))
        .collect()
}

/// A scraped value in its chart's unit (`messages`, `seconds`, `per_second` or `value`).
pub(super) fn metric_value(unit: &str, v: f64) -> String {
    match unit {
        "seconds" => format_micros(v * 1e6),
        "per_second" => format!("{}/s", format_number(v)),
        "messages" => format!("{} messages", format_number(v)),
        _ => format_number(v),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::capacity::Capacity;
    use crate::report::ChaosWindow;
    use crate::report::tests::sample_report;

    #[test]
    fn capacity_chaos_breaker_and_arrival_sections_appear_only_when_the_run_had_them() {
        let mut report = sample_report();
        let plain = sections(&report);
        assert!(!plain.contains(&Section::Capacity), "{plain:?}");
        assert!(!plain.contains(&Section::Arrivals), "{plain:?}");
        assert!(!plain.contains(&Section::ChaosTimeline), "{plain:?}");
        assert!(!plain.contains(&Section::GatewayEvents), "{plain:?}");

        report.capacity = Some(Capacity {
            steps: vec![],
            knee: None,
            beyond_plan: false,
        });
        report.chaos_windows.push(ChaosWindow::default());
        report.arrivals = Some(crate::metrics::ArrivalCounts::default());
        report
            .breaker_transitions
            .push(crate::report::BreakerTransition {
                at_s: 4.0,
                service: "payment".into(),
                from: "closed".into(),
                to: "open".into(),
                count: 1,
                process: "gateway#1".into(),
            });
        assert_eq!(
            sections(&report),
            [
                Section::Summary,
                Section::Slos,
                Section::Capacity,
                Section::ChaosTimeline,
                Section::GatewayEvents,
                Section::Invariants,
                Section::Arrivals,
                Section::OverTime,
                Section::Outcomes,
                Section::Endpoints,
            ]
        );
    }

    #[test]
    fn traces_and_metrics_sections_follow_the_outcomes_only_when_the_run_collected_them() {
        let plain = sections(&sample_report());
        assert!(!plain.contains(&Section::Traces), "{plain:?}");
        assert!(!plain.contains(&Section::Metrics), "{plain:?}");

        let with = sections(&crate::report::tests::sample_report_with_telemetry());
        let at = |s: Section| with.iter().position(|x| *x == s).unwrap();
        assert_eq!(at(Section::Traces), at(Section::Outcomes) + 1, "{with:?}");
        assert_eq!(at(Section::Metrics), at(Section::Traces) + 1, "{with:?}");
        assert_eq!(at(Section::Endpoints), at(Section::Metrics) + 1, "{with:?}");
    }

    #[test]
    fn phase_all_comes_first_and_hops_are_sorted_by_p99() {
        let report = crate::report::tests::sample_report_with_telemetry();
        let traces = report.traces.unwrap();
        let phases: Vec<&str> = trace_phases(&traces).iter().map(|p| p.0).collect();
        assert_eq!(phases, ["all", "after", "before", "during:kill order#1"]);
        let p99s: Vec<Option<u64>> = hops_by_p99(&traces.phases["all"])
            .iter()
            .map(|h| h.1.p99_us)
            .collect();
        assert!(p99s.is_sorted_by(|a, b| a >= b), "{p99s:?}");
    }

    #[test]
    fn metric_values_read_in_their_unit() {
        assert_eq!(metric_value("seconds", 0.25), "250ms");
        assert_eq!(metric_value("per_second", 12.0), "12/s");
        assert_eq!(metric_value("messages", 40.0), "40 messages");
        assert_eq!(metric_value("value", 3.0), "3");
    }
}
