//! The comparison's `report.html`: one self-contained page like a run's, with the variants'
//! per-second p99, errors and confirmed orders drawn over each other (the chaos windows shaded,
//! the gateway's events dashed: breaker transitions, rotation changes, bulkheads full), then the
//! tables of `report.md`.

use std::fmt::Write;

use super::{
    PHASE_NOTE, VariantRun, VariantsReport, confirmed_cell, endpoint_names, errors_cell,
    event_rows, gate_text, invariant_names, latencies_cell, phase_title, recovery_note, slo_cell,
    slo_names, verdict_text,
};
use crate::report::html::{
    EVENT_COLORS, Mark, STYLE, Series, at, escape, event_color, event_mark, marked_time_chart, num,
    palette, time_chart, x_max,
};
use crate::report::{ChaosWindow, TimelineSecond, Verdict};
use crate::slo::format_micros;

/// The page: head, the sections in order, the end.
pub(super) fn render(r: &VariantsReport, runs: &[VariantRun]) -> String {
    let mut s = String::new();
    let _ = write!(
        s,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{} · {}</title><style>{STYLE}</style></head><body>",
        escape(&r.scenario.name),
        escape(&r.run_id)
    );
    summary(&mut s, r);
    variants(&mut s, r);
    charts(&mut s, runs);
    phases(&mut s, r);
    recovery(&mut s, r);
    gateway_events(&mut s, r);
    slos(&mut s, r);
    invariants(&mut s, r);
    s.push_str("</body></html>\n");
    s
}

// Writing to a String cannot fail, hence the `let _ = write!` throughout.

fn summary(s: &mut String, r: &VariantsReport) {
    let status = if r.passed() { "passed" } else { "failed" };
    let _ = write!(
        s,
        r#"<h1 class="{status}">{}</h1><p class="meta">{}</p><p class="meta">Run <code>{}</code>, started {}: {} variants one after the other, each on a fresh environment with the same load, chaos timeline, SLOs and checks. Each variant's full report is in <code>variants/&lt;name&gt;/</code>.</p>"#,
        escape(&r.headline()),
        escape(&r.scenario.description),
        escape(&r.run_id),
        escape(&r.started_at),
        r.variants.len()
    );
}

/// `<tr><th>first</th>...<th>variant</th>...</tr>`.
fn header(s: &mut String, r: &VariantsReport, first: &[&str]) {
    s.push_str("<table><tr>");
    for h in first {
        let _ = write!(s, "<th>{}</th>", escape(h));
    }
    for (i, v) in r.variants.iter().enumerate() {
        let _ = write!(
            s,
            r#"<th><span class="sw" style="background:{}"></span>{}</th>"#,
            palette(i),
            escape(&v.name)
        );
    }
    s.push_str("</tr>");
}

fn variants(s: &mut String, r: &VariantsReport) {
    let _ = write!(
        s,
        "<h2>Variants</h2><p class=\"meta\">Each variant's keys go over \
         <code>[environment.resilience]</code>: <code>{}</code>.</p>",
        escape(&r.environment_resilience)
    );
    s.push_str(
        "<table><tr><th>variant</th><th>resilience</th><th>gates</th><th>SLOs held</th><th>invariants held</th><th>verdict</th><th>report</th></tr>",
    );
    for (i, v) in r.variants.iter().enumerate() {
        let passed = v.gated_verdict == Verdict::Passed;
        let _ = write!(
            s,
            r#"<tr{}><td><span class="sw" style="background:{}"></span>{}</td><td><code>{}</code></td><td>{}</td><td>{} of {}</td><td>{} of {}</td><td class="{}">{}</td><td><a href="variants/{}/report.html">variants/{}/</a></td></tr>"#,
            if passed { "" } else { r#" class="bad""# },
            palette(i),
            escape(&v.name),
            escape(&v.resilience),
            gate_text(v),
            v.slos_held(),
            v.slos.len(),
            v.invariants_held(),
            v.invariants.len(),
            if passed { "passed" } else { "failed" },
            escape(&verdict_text(v)),
            escape(&v.name),
            escape(&v.name)
        );
    }
    s.push_str("</table>");
}

/// The chaos windows as planned (the same in every variant), for the shading.
fn planned_windows(runs: &[VariantRun]) -> Vec<ChaosWindow> {
    runs.first()
        .map(|run| {
            run.report
                .chaos_windows
                .iter()
                .map(|w| ChaosWindow {
                    start_s: w.planned_start_s,
                    end_s: w.planned_end_s,
                    ..w.clone()
                })
                .collect()
        })
        .unwrap_or_default()
}

/// One line per variant, in its colour.
fn lines<'a>(
    runs: &'a [VariantRun],
    value: impl Fn(&TimelineSecond) -> Option<f64>,
) -> Vec<Series<'a>> {
    runs.iter()
        .enumerate()
        .map(|(i, run)| Series {
            name: &run.name,
            color: palette(i),
            points: run
                .report
                .timeline
                .iter()
                .map(|b| (at(b), value(b)))
                .collect(),
        })
        .collect()
}

/// Every variant's gateway events, labelled with the variant.
fn marks(runs: &[VariantRun]) -> Vec<Mark> {
    let mut marks: Vec<Mark> = runs
        .iter()
        .flat_map(|run| {
            let prefix = format!("{}, ", run.name);
            run.report
                .gateway_events()
                .iter()
                .map(|e| event_mark(e, &prefix))
                .collect::<Vec<_>>()
        })
        .collect();
    marks.sort_by(|a, b| a.at_s.total_cmp(&b.at_s));
    marks
}

fn charts(s: &mut String, runs: &[VariantRun]) {
    let windows = planned_windows(runs);
    let x = runs
        .iter()
        .map(|run| x_max(&run.report))
        .fold(0.0, f64::max);
    s.push_str("<h2>Over time</h2>");
    let marks = marks(runs);
    let title = if marks.is_empty() {
        "p99 latency per second (served requests)"
    } else {
        "p99 latency per second (served requests), gateway events dashed"
    };
    s.push_str(&marked_time_chart(
        title,
        x,
        &lines(runs, |b| b.p99_us.map(|v| v as f64 / 1_000.0)),
        &windows,
        &marks,
        |v| format_micros(v * 1_000.0),
    ));
    s.push_str(&time_chart(
        "Errors per second",
        x,
        &lines(runs, |b| Some(b.errors as f64)),
        &windows,
        num,
    ));
    s.push_str(&time_chart(
        "Orders confirmed per second",
        x,
        &lines(runs, |b| Some(b.orders_confirmed as f64)),
        &windows,
        num,
    ));
}

fn phases(s: &mut String, r: &VariantsReport) {
    let _ = write!(
        s,
        "<h2>Per phase</h2><p class=\"meta\">{}</p>",
        escape(PHASE_NOTE)
    );
    header(s, r, &["phase", ""]);
    for p in &r.phases {
        let endpoints = endpoint_names(p);
        let rows = 3 + endpoints.len();
        let row = |s: &mut String, first: bool, what: &str, cells: Vec<String>| {
            s.push_str("<tr>");
            if first {
                let _ = write!(
                    s,
                    r#"<td rowspan="{rows}"><strong>{}</strong></td>"#,
                    escape(&phase_title(p))
                );
            }
            let _ = write!(s, "<td>{}</td>", escape(what));
            for c in cells {
                let _ = write!(s, "<td>{}</td>", escape(&c));
            }
            s.push_str("</tr>");
        };
        row(
            s,
            true,
            "errors",
            p.variants
                .iter()
                .map(|f| errors_cell(f.errors, f.error_rate))
                .collect(),
        );
        row(
            s,
            false,
            "shed",
            p.variants.iter().map(|f| f.shed.to_string()).collect(),
        );
        row(
            s,
            false,
            "confirmed orders/s",
            p.variants.iter().map(confirmed_cell).collect(),
        );
        for endpoint in endpoints {
            row(
                s,
                false,
                &format!("{endpoint} p50 / p95 / p99"),
                p.variants
                    .iter()
                    .map(|f| latencies_cell(f.endpoints.get(endpoint)))
                    .collect(),
            );
        }
    }
    s.push_str("</table>");
}

fn recovery(s: &mut String, r: &VariantsReport) {
    if r.recovery.is_empty() {
        return;
    }
    let _ = write!(
        s,
        "<h2>Time to recover</h2><p class=\"meta\">{}</p>",
        escape(&recovery_note())
    );
    header(s, r, &["fault"]);
    for f in &r.recovery {
        let _ = write!(s, "<tr><td>{}</td>", escape(&f.fault));
        for v in &f.variants {
            let healed = v
                .healed_s
                .map_or(String::new(), |h| format!(" (healed at {h:.1}s)"));
            let _ = write!(
                s,
                "<td{}>{}{}</td>",
                if v.time_to_recover_s.is_none() {
                    r#" class="failed""#
                } else {
                    ""
                },
                escape(&v.describe()),
                escape(&healed)
            );
        }
        s.push_str("</tr>");
    }
    s.push_str("</table>");
}

fn gateway_events(s: &mut String, r: &VariantsReport) {
    let rows = event_rows(r);
    if rows.is_empty() {
        return;
    }
    let _ = write!(
        s,
        "<h2>Gateway events</h2><p class=\"meta\">{}</p><table><tr><th>variant</th><th>at</th>\
         <th>service</th><th>event</th></tr>",
        escape(EVENT_COLORS)
    );
    for (variant, e) in rows {
        let _ = write!(
            s,
            r#"<tr><td>{}</td><td>{:.0}s</td><td>{}</td><td><span class="sw" style="background:{}"></span>{}</td></tr>"#,
            escape(variant),
            e.at_s,
            escape(&e.service),
            event_color(e.kind),
            escape(&e.change)
        );
    }
    s.push_str("</table>");
}

fn slos(s: &mut String, r: &VariantsReport) {
    let names = slo_names(r);
    if names.is_empty() {
        return;
    }
    s.push_str("<h2>SLOs</h2>");
    header(s, r, &["SLO"]);
    for name in names {
        let _ = write!(s, "<tr><td>{}</td>", escape(name));
        for v in &r.variants {
            match slo_cell(v, name) {
                Some((held, text)) => {
                    let _ = write!(
                        s,
                        r#"<td class="{}">{} {}</td>"#,
                        if held { "passed" } else { "failed" },
                        if held { "held" } else { "broken" },
                        escape(&text)
                    );
                }
                None => s.push_str("<td>-</td>"),
            }
        }
        s.push_str("</tr>");
    }
    s.push_str("</table>");
}

fn invariants(s: &mut String, r: &VariantsReport) {
    let names = invariant_names(r);
    if names.is_empty() {
        return;
    }
    s.push_str("<h2>Invariants</h2>");
    header(s, r, &["invariant"]);
    for name in names {
        let _ = write!(s, "<tr><td>{}</td>", escape(name));
        for v in &r.variants {
            match v.invariants.iter().find(|i| i.name == name) {
                Some(i) => {
                    let _ = write!(
                        s,
                        r#"<td class="{}">{}</td>"#,
                        if i.held { "passed" } else { "failed" },
                        escape(&i.summary)
                    );
                }
                None => s.push_str("<td>-</td>"),
            }
        }
        s.push_str("</tr>");
    }
    s.push_str("</table>");
}
