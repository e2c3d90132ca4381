//! `report.md`: the verdict, SLO and invariant tables and outcomes, where the sagas' time went
//! and the scraped metrics' peaks, short enough for a PR comment. Which sections it has, and in
//! what order, is decided in `sections`; each has a function here.

use std::fmt::Write;

use super::sections::{
    ARRIVALS_NOTE, GATEWAY_EVENTS_NOTE, Section, VIOLATIONS_SHOWN, arrival_phases, hops_by_p99,
    interruption_note, metric_value, sections, top_hops, trace_phases, trace_summary,
};
use super::{RunReport, Verdict};
use crate::checks::Violation;
use crate::metrics::ALL;
use crate::slo::format_micros;
use crate::telemetry::charts::MetricsReport;
use crate::telemetry::hops::TraceReport;

/// Makes text safe inside a table cell: no pipes breaking the row, no line breaks, no HTML.
pub(super) fn cell(text: &str) -> String {
    text.replace('\\', "\\\\")
        .replace('|', "\\|")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace(['\n', '\r'], " ")
}

/// `report.md`: the sections of [`sections`], one function each.
pub(super) fn render(r: &RunReport) -> String {
    let mut s = String::new();
    for section in sections(r) {
        match section {
            Section::Summary => summary(&mut s, r),
            Section::Slos => slos(&mut s, r),
            Section::Capacity => capacity(&mut s, r),
            Section::ChaosTimeline => chaos_timeline(&mut s, r),
            Section::GatewayEvents => gateway_events(&mut s, r),
            Section::Invariants => invariants(&mut s, r),
            Section::Arrivals => arrivals(&mut s, r),
            // Charts need the HTML page; a PR comment gets the totals under Outcomes instead.
            Section::OverTime => {}
            Section::Outcomes => outcomes(&mut s, r),
            Section::Traces => traces(&mut s, r),
            Section::Metrics => metrics(&mut s, r),
            Section::Endpoints => endpoints(&mut s, r),
        }
    }
    s
}

// Writing to a String cannot fail, hence the `let _ = writeln!` throughout.

fn summary(s: &mut String, r: &RunReport) {
    let mark = match r.verdict {
        Verdict::Passed => "✅",
        Verdict::Failed => "❌",
        Verdict::Interrupted => "⏹️",
    };
    let _ = writeln!(s, "## {mark} {}", cell(&r.headline()));
    let _ = writeln!(s);
    let _ = writeln!(
        s,
        "Run `{}` started {} for {:.1}s on the {} backend ({}).",
        r.run_id,
        r.started_at,
        r.duration_s,
        r.environment.backend,
        r.environment.instances_text()
    );
    let _ = writeln!(s);
    let _ = writeln!(s, "Load: {}.", r.load_summary());
    if let Some(i) = &r.interruption {
        let _ = writeln!(s);
        let _ = writeln!(s, "**Interrupted**: {}.", interruption_note(i));
    }
    if !r.scenario.description.is_empty() {
        let _ = writeln!(s);
        let _ = writeln!(s, "> {}", cell(&r.scenario.description));
    }
}

fn slos(s: &mut String, r: &RunReport) {
    let _ = writeln!(s, "\n### SLOs\n");
    if r.slos.is_empty() {
        let _ = writeln!(s, "The scenario sets no SLO.");
        return;
    }
    let _ = writeln!(s, "| SLO | target | measured | verdict | detail |");
    let _ = writeln!(s, "|---|---|---|---|---|");
    for v in &r.slos {
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} | {} |",
            cell(&v.name),
            cell(&v.target_display()),
            cell(&v.measured_display()),
            if v.held { "✅ held" } else { "❌ **failed**" },
            cell(&v.detail)
        );
    }
}

fn capacity(s: &mut String, r: &RunReport) {
    let Some(c) = &r.capacity else { return };
    let _ = writeln!(s, "\n### Capacity\n");
    let _ = writeln!(s, "{}\n", cell(&c.summary()));
    let _ = writeln!(s, "| {} |", c.headers().join(" | "));
    let _ = writeln!(s, "|{}", "---|".repeat(c.headers().len()));
    for step in &c.steps {
        let cells: Vec<String> = step.cells(c.knee).iter().map(|c| cell(c)).collect();
        let _ = writeln!(s, "| {} |", cells.join(" | "));
    }
}

fn arrivals(s: &mut String, r: &RunReport) {
    let _ = writeln!(s, "\n### Arrivals\n");
    let _ = writeln!(s, "{ARRIVALS_NOTE}\n");
    let paused = r.arrivals_paused();
    let (head, rule) = if paused {
        (" paused |", "---|")
    } else {
        ("", "")
    };
    let _ = writeln!(s, "| phase | journeys due | started | dropped |{head}");
    let _ = writeln!(s, "|---|---|---|---|{rule}");
    for (phase, a) in arrival_phases(r) {
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} |{}",
            cell(phase),
            a.scheduled,
            a.started,
            a.dropped,
            if paused {
                format!(" {} |", a.paused)
            } else {
                String::new()
            }
        );
    }
}

fn chaos_timeline(s: &mut String, r: &RunReport) {
    let _ = writeln!(s, "\n### Chaos timeline\n");
    let _ = writeln!(
        s,
        "| fault | target | acted on | applied | healed | planned |"
    );
    let _ = writeln!(s, "|---|---|---|---|---|---|");
    for w in &r.chaos_windows {
        let _ = writeln!(
            s,
            "| {} | {} | {} | {:.1}s | {} | {:.0}s..{:.0}s |",
            cell(&w.label),
            cell(&w.target),
            cell(&w.affected.join(", ")),
            w.start_s,
            w.healed(),
            w.planned_start_s,
            w.planned_end_s
        );
    }
}

fn gateway_events(s: &mut String, r: &RunReport) {
    let _ = writeln!(s, "\n### Gateway events\n");
    let _ = writeln!(s, "{GATEWAY_EVENTS_NOTE}\n");
    let _ = writeln!(s, "| at | service | event | gateway |");
    let _ = writeln!(s, "|---|---|---|---|");
    for e in r.gateway_events() {
        let _ = writeln!(
            s,
            "| {:.0}s | {} | {} | {} |",
            e.at_s,
            cell(&e.service),
            cell(&e.change),
            cell(&e.process)
        );
    }
}

fn invariants(s: &mut String, r: &RunReport) {
    let _ = writeln!(s, "\n### Invariants\n");
    if r.invariants.is_empty() {
        let _ = writeln!(s, "No invariant was checked.");
        return;
    }
    let _ = writeln!(s, "| invariant | verdict | summary |");
    let _ = writeln!(s, "|---|---|---|");
    for v in &r.invariants {
        let _ = writeln!(
            s,
            "| {} | {} | {} |",
            v.name,
            if v.held {
                "✅ held"
            } else {
                "❌ **violated**"
            },
            cell(&v.summary)
        );
    }
    for v in r.failed_invariants() {
        let _ = writeln!(s, "\n**{}**: first violations\n", v.name);
        for x in v.violations.iter().take(VIOLATIONS_SHOWN) {
            let _ = writeln!(
                s,
                "- `{}` {}: {}",
                x.kind,
                cell(&violation_subject(x)),
                cell(&x.details)
            );
        }
        if v.violations.len() > VIOLATIONS_SHOWN {
            let _ = writeln!(
                s,
                "- … and {} more (see report.json)",
                v.violations.len() - VIOLATIONS_SHOWN
            );
        }
    }
}

/// What a violation is about, as `key value` pairs (`order_id 0f3c...`): its JSON without the
/// fields the line shows otherwise.
fn violation_subject(x: &Violation) -> String {
    serde_json::to_value(x)
        .ok()
        .and_then(|j| j.as_object().cloned())
        .map(|o| {
            o.iter()
                .filter(|(k, _)| !matches!(k.as_str(), "kind" | "details" | "subject"))
                .map(|(k, v)| format!("{k} {}", v.as_str().map_or(v.to_string(), str::to_string)))
                .collect::<Vec<_>>()
                .join(", ")
        })
        .unwrap_or_default()
}

fn outcomes(s: &mut String, r: &RunReport) {
    let _ = writeln!(s, "\n### Outcomes\n");
    if r.outcomes.is_empty() {
        let _ = writeln!(s, "No order reached an outcome.");
        return;
    }
    let _ = writeln!(s, "| order status | count |");
    let _ = writeln!(s, "|---|---|");
    for (status, n) in &r.outcomes {
        let _ = writeln!(s, "| {} | {n} |", cell(status));
    }
}

/// Where the sagas' time went: every hop of phase `all`, the p50 and p99 of the other phases'
/// hops, and the slowest sagas; the charts are in `report.html`.
fn traces(s: &mut String, r: &RunReport) {
    let Some(t) = &r.traces else { return };
    let _ = writeln!(s, "\n### Traces\n");
    let _ = writeln!(s, "{}\n", trace_summary(t));
    let _ = writeln!(
        s,
        "A hop's time is the self time of its spans in one saga (their time minus their \
         children's); hops running concurrently can add up to more than the saga's duration. \
         `harness trace ORDER_ID` prints one saga's trace as a tree against a running \
         `harness up`."
    );
    if let Some(all) = t.phases.get(ALL) {
        let _ = writeln!(s, "\n**Phase all** ({} sagas)\n", all.sagas);
        let _ = writeln!(s, "| hop | sagas | p50 | p95 | p99 | max |");
        let _ = writeln!(s, "|---|---|---|---|---|---|");
        for (hop, l) in hops_by_p99(all) {
            let _ = writeln!(
                s,
                "| {} | {} | {} | {} | {} | {} |",
                cell(hop),
                l.count,
                micros(l.p50_us),
                micros(l.p95_us),
                micros(l.p99_us),
                micros(l.max_us)
            );
        }
    }
    other_phase_hops(s, t);
    slowest_sagas(s, t);
}

/// The phases other than `all`, compactly: one row per hop with its p50 and p99.
fn other_phase_hops(s: &mut String, t: &TraceReport) {
    let others: Vec<_> = trace_phases(t)
        .into_iter()
        .filter(|(phase, _)| *phase != ALL)
        .collect();
    if others.is_empty() {
        return;
    }
    let _ = writeln!(s, "\n**Other phases**\n");
    let _ = writeln!(s, "| phase | hop | p50 | p99 |");
    let _ = writeln!(s, "|---|---|---|---|");
    for (phase, hops) in others {
        for (hop, l) in hops_by_p99(hops) {
            let _ = writeln!(
                s,
                "| {} ({} sagas) | {} | {} | {} |",
                cell(phase),
                hops.sagas,
                cell(hop),
                micros(l.p50_us),
                micros(l.p99_us)
            );
        }
    }
}

fn slowest_sagas(s: &mut String, t: &TraceReport) {
    if t.slowest.is_empty() {
        return;
    }
    let _ = writeln!(s, "\n**Slowest sagas**\n");
    let _ = writeln!(s, "| order | trace | phase | total | longest hops |");
    let _ = writeln!(s, "|---|---|---|---|---|");
    for saga in &t.slowest {
        let hops: Vec<String> = top_hops(saga)
            .iter()
            .map(|(hop, time)| format!("{} {time}", cell(hop)))
            .collect();
        let _ = writeln!(
            s,
            "| `{}` | `{}` | {} | {} | {} |",
            cell(&saga.order_id),
            cell(&saga.trace_id),
            cell(&saga.phase),
            format_micros(saga.total_us as f64),
            hops.join(", ")
        );
    }
}

/// Each scraped series' peak and when it came; the scrape targets only if one failed.
fn metrics(s: &mut String, r: &RunReport) {
    let Some(m) = &r.metrics else { return };
    let _ = writeln!(s, "\n### Metrics\n");
    let _ = writeln!(
        s,
        "Scraped every {}s; the charts, with the chaos windows shaded, are in `report.html`.\n",
        crate::slo::format_number(m.interval_s)
    );
    let _ = writeln!(s, "| chart | series | peak | at |");
    let _ = writeln!(s, "|---|---|---|---|");
    for chart in &m.charts {
        for series in &chart.series {
            let (peak, at) = series
                .peak()
                .map_or(("-".to_string(), "-".to_string()), |(t, v)| {
                    (metric_value(&chart.unit, v), format!("{t:.0}s"))
                });
            let _ = writeln!(
                s,
                "| {} | {} | {peak} | {at} |",
                cell(&chart.title),
                cell(&series.name)
            );
        }
    }
    failed_scrapes(s, m);
}

fn failed_scrapes(s: &mut String, m: &MetricsReport) {
    if m.targets.values().all(|t| t.failures == 0) {
        return;
    }
    let _ = writeln!(s, "\n**Scrape targets**\n");
    let _ = writeln!(s, "| process | scrapes | failures | last error |");
    let _ = writeln!(s, "|---|---|---|---|");
    for (process, t) in &m.targets {
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} |",
            cell(process),
            t.scrapes,
            t.failures,
            cell(t.last_error.as_deref().unwrap_or(""))
        );
    }
}

/// The endpoints over the whole run (phase `all`); the per-phase tables are in `report.html`.
fn endpoints(s: &mut String, r: &RunReport) {
    let Some(all) = r.phases.get(ALL) else {
        return;
    };
    let _ = writeln!(s, "\n### Endpoints\n");
    let _ = writeln!(
        s,
        "| endpoint | requests | errors | shed | p50 | p95 | p99 | max |"
    );
    let _ = writeln!(s, "|---|---|---|---|---|---|---|---|");
    for (name, e) in &all.endpoints {
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} | {} | {} | {} | {} |",
            cell(name),
            e.count,
            e.errors,
            e.shed,
            micros(e.latency.p50_us),
            micros(e.latency.p95_us),
            micros(e.latency.p99_us),
            micros(e.latency.max_us)
        );
    }
    if let Some(saga) = &all.saga_completion {
        let _ = writeln!(
            s,
            "| saga completion | {} | - | - | {} | {} | {} | {} |",
            saga.count,
            micros(saga.p50_us),
            micros(saga.p95_us),
            micros(saga.p99_us),
            micros(saga.max_us)
        );
    }
}

/// A latency in µs for a table cell; `-` when there was none.
pub(super) fn micros(v: Option<u64>) -> String {
    v.map_or("-".to_string(), |v| format_micros(v as f64))
}
