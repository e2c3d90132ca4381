//! `report.html`: one self-contained page (inline CSS, inline SVG drawn here, no script, no
//! font, no link) so it opens from a CI artifact without network access. Charts: latency over
//! time (mean, p99 and max per second, the gateway's events as dashed lines), throughput and
//! errors per second, saga outcomes per second and in total; per phase, the hops' p50 and p99
//! stacked into one bar each; one chart per scraped metric. Every time chart shades the report's
//! chaos windows.
//!
//! Which sections the page has, and in what order, is decided in `sections`; each has a
//! function here, and each chart of "Over time" one function listed in `CHARTS`.

use std::collections::BTreeMap;
use std::fmt::Write;

use super::gateway_events::{EventKind, GatewayEvent};
use super::sections::{
    ARRIVALS_NOTE, GATEWAY_EVENTS_NOTE, Section, VIOLATIONS_SHOWN, arrival_phases, hops_by_p99,
    sections, top_hops, trace_phases, trace_summary,
};
use super::{ChaosWindow, LatencyReport, RunReport, TimelineSecond, Verdict};
use crate::slo::format_micros;
use crate::telemetry::charts::{MetricChart, MetricsReport};
use crate::telemetry::hops::TraceReport;

const WIDTH: f64 = 860.0;
const HEIGHT: f64 = 240.0;
const LEFT: f64 = 64.0;
const RIGHT: f64 = 16.0;
const TOP: f64 = 28.0;
const BOTTOM: f64 = 36.0;

pub(super) const STYLE: &str = "body{font-family:system-ui,-apple-system,'Segoe UI',sans-serif;margin:2em auto;max-width:960px;color:#222}\
h1{font-size:1.5em}h2{font-size:1.2em;margin-top:2em}\
.passed{color:#1a7f37}.failed{color:#cf222e}.interrupted{color:#9a6700}\
table{border-collapse:collapse;width:100%;font-size:.9em}th,td{border:1px solid #ccc;padding:4px 8px;text-align:left;vertical-align:top}\
th{background:#f3f3f3}tr.bad td{background:#fff0f0}tr.knee td{background:#eaf7ee;font-weight:600}code{font-size:.9em}\
svg{display:block;margin:1em 0;background:#fff}svg text{font-size:11px;fill:#444}\
.meta{color:#555}.query{margin:-.8em 0 1.5em 64px;font-size:.8em;color:#555}.query code{font-size:1em}\
.sw{display:inline-block;width:10px;height:10px;margin-right:6px}";

/// Colours of the lines of a chart and of the hops of the stacked charts, in the order they are
/// handed out: Tableau 20, the ten strong colours first so that a chart with few lines gets
/// only those. A chart with more lines than colours reuses them from the start.
const PALETTE: [&str; 20] = [
    "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
    "#bcbd22", "#17becf", "#aec7e8", "#ffbb78", "#98df8a", "#ff9896", "#c5b0d5", "#c49c94",
    "#f7b6d2", "#c7c7c7", "#dbdb8d", "#9edae5",
];

pub(super) fn palette(i: usize) -> &'static str {
    PALETTE[i % PALETTE.len()]
}

/// Escapes text for HTML content and attributes.
pub(super) fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&#39;")
}

/// A line of a time chart.
pub(super) struct Series<'a> {
    pub name: &'a str,
    pub color: &'a str,
    /// (second, value); `None` leaves a gap.
    pub points: Vec<(f64, Option<f64>)>,
}

/// A tick step of 1, 2 or 5 times a power of ten giving about five ticks up to `max`.
fn nice_step(max: f64) -> f64 {
    if max <= 0.0 || !max.is_finite() {
        return 1.0;
    }
    let raw = max / 5.0;
    let pow = 10f64.powf(raw.log10().floor());
    let m = raw / pow;
    let f = if m <= 1.0 {
        1.0
    } else if m <= 2.0 {
        2.0
    } else if m <= 5.0 {
        5.0
    } else {
        10.0
    };
    f * pow
}

pub(super) fn num(v: f64) -> String {
    if v.fract().abs() < 1e-9 {
        format!("{v:.0}")
    } else {
        format!("{v:.2}")
    }
}

/// The width of one character of chart text (11 px sans-serif), roughly.
const CHAR_PX: f64 = 6.5;

/// A moment marked on a time chart: a dashed vertical line with `label` along the bottom of the
/// plot where there is room for it, and `title` as its tooltip.
pub(super) struct Mark {
    pub at_s: f64,
    pub label: String,
    pub title: String,
    pub color: &'static str,
}

/// The colour of a breaker transition by the state it went to: red opened, amber half-open,
/// green closed.
pub(super) fn breaker_color(to: &str) -> &'static str {
    match to {
        "open" => "#cf222e",
        "half_open" => "#bf8700",
        "closed" => "#1a7f37",
        _ => "#57606a",
    }
}

/// The colour of a gateway event: the breaker's as [`breaker_color`]; an instance out of
/// rotation purple and back in teal; a bulkhead full orange and refusing no more blue.
pub(super) fn event_color(kind: EventKind) -> &'static str {
    match kind {
        EventKind::BreakerOpened => breaker_color("open"),
        EventKind::BreakerHalfOpen => breaker_color("half_open"),
        EventKind::BreakerClosed => breaker_color("closed"),
        EventKind::OutOfRotation => "#8250df",
        EventKind::BackInRotation => "#1b7c83",
        EventKind::BulkheadFull => "#d4610a",
        EventKind::BulkheadFree => "#0969da",
    }
}

/// What the colours of the gateway events' marks and swatches mean.
pub(super) const EVENT_COLORS: &str = "breaker: red opened, amber half-open, green closed; \
     health checks: purple out of rotation, teal back in; bulkhead: orange full, blue refusing \
     no more.";

/// A gateway event as a mark on a time chart; `prefix` goes before its tooltip (a variant).
pub(super) fn event_mark(e: &GatewayEvent, prefix: &str) -> Mark {
    Mark {
        at_s: e.at_s,
        label: e.label.clone(),
        title: format!(
            "{prefix}{:.0}s: {} ({}, {})",
            e.at_s,
            e.describe(),
            e.kind.pattern(),
            e.process
        ),
        color: event_color(e.kind),
    }
}

/// Marks of a report's gateway events.
fn event_marks(r: &RunReport) -> Vec<Mark> {
    r.gateway_events()
        .iter()
        .map(|e| event_mark(e, ""))
        .collect()
}

/// A line chart over the load's seconds, with the chaos windows shaded.
pub(super) fn time_chart(
    title: &str,
    x_max: f64,
    series: &[Series<'_>],
    windows: &[ChaosWindow],
    y_label: impl Fn(f64) -> String,
) -> String {
    marked_time_chart(title, x_max, series, windows, &[], y_label)
}

/// [`time_chart`] with `marks` drawn over the chaos windows and under the lines.
pub(super) fn marked_time_chart(
    title: &str,
    x_max: f64,
    series: &[Series<'_>],
    windows: &[ChaosWindow],
    marks: &[Mark],
    y_label: impl Fn(f64) -> String,
) -> String {
    let plot_w = WIDTH - LEFT - RIGHT;
    let plot_h = HEIGHT - TOP - BOTTOM;
    let x_max = x_max.max(1.0);
    let y_data = series
        .iter()
        .flat_map(|s| s.points.iter().filter_map(|p| p.1))
        .fold(0.0f64, f64::max);
    // 5% headroom, so the highest line does not run along the top edge.
    let y_step = nice_step(y_data * 1.05);
    let y_max = (y_data * 1.05 / y_step).ceil().max(1.0) * y_step;
    let x = |v: f64| LEFT + v / x_max * plot_w;
    let y = |v: f64| TOP + plot_h - v / y_max * plot_h;

    // The legend goes beside the title when both fit on the top line, else in rows under the
    // x axis, the chart growing to make room.
    let entries: Vec<(&str, &str)> = series.iter().map(|se| (se.name, se.color)).collect();
    let title_w = title.chars().count() as f64 * TITLE_CHAR_PX + 16.0;
    let mut legend = String::new();
    let height = if title_w + legend_width(&entries) <= plot_w {
        let mut lx = LEFT + plot_w;
        for (name, color) in entries.iter().rev() {
            lx -= legend_entry_width(name);
            legend_entry(&mut legend, lx, 8.0, name, color);
        }
        HEIGHT
    } else {
        let bottom = legend_rows(&mut legend, &entries, HEIGHT - 10.0, LEFT, LEFT + plot_w);
        bottom.max(HEIGHT) + 6.0
    };

    let mut s = String::new();
    let _ = write!(
        s,
        r#"<svg width="{WIDTH}" height="{height:.0}" viewBox="0 0 {WIDTH} {height:.0}" role="img" aria-label="{t}"><title>{t}</title>"#,
        t = escape(title)
    );
    let _ = write!(
        s,
        r#"<text x="{LEFT}" y="16" style="font-size:13px;font-weight:600;fill:#222">{}</text>"#,
        escape(title)
    );
    // Chaos windows first, so the lines are drawn over them. A window too narrow for its label
    // shows its number in the chaos timeline table instead (the full label is its tooltip).
    for (i, w) in windows.iter().enumerate() {
        let x0 = x(w.start_s.clamp(0.0, x_max));
        let x1 = x(w.end_s.clamp(0.0, x_max));
        let width = (x1 - x0).max(1.0);
        let label = escape(&w.label);
        let shown = if width >= w.label.chars().count() as f64 * CHAR_PX + 6.0 {
            label.clone()
        } else {
            (i + 1).to_string()
        };
        let _ = write!(
            s,
            r##"<g class="chaos"><rect x="{x0:.1}" y="{TOP}" width="{width:.1}" height="{plot_h}" fill="#f5a623" fill-opacity="0.18"><title>{label}</title></rect><text x="{:.1}" y="{:.1}">{shown}</text></g>"##,
            x0 + 2.0,
            TOP + 12.0,
        );
    }
    draw_marks(&mut s, marks, &x, x_max, plot_h);
    // Grid and axes.
    let mut tick = 0.0;
    while tick <= y_max + y_step / 2.0 {
        let ty = y(tick);
        let _ = write!(
            s,
            r##"<line x1="{LEFT}" x2="{:.1}" y1="{ty:.1}" y2="{ty:.1}" stroke="#e5e5e5"/><text x="{:.1}" y="{:.1}" text-anchor="end">{}</text>"##,
            LEFT + plot_w,
            LEFT - 6.0,
            ty + 4.0,
            escape(&y_label(tick))
        );
        tick += y_step;
    }
    let x_step = nice_step(x_max);
    let mut tick = 0.0;
    while tick <= x_max + 1e-9 {
        let tx = x(tick);
        let _ = write!(
            s,
            r#"<text x="{tx:.1}" y="{:.1}" text-anchor="middle">{}s</text>"#,
            TOP + plot_h + 16.0,
            num(tick)
        );
        tick += x_step;
    }
    let _ = write!(
        s,
        r##"<line x1="{LEFT}" x2="{LEFT}" y1="{TOP}" y2="{b:.1}" stroke="#888"/><line x1="{LEFT}" x2="{:.1}" y1="{b:.1}" y2="{b:.1}" stroke="#888"/>"##,
        LEFT + plot_w,
        b = TOP + plot_h
    );
    // Lines, split at gaps; a lone point is drawn as a dot.
    for se in series {
        let mut runs: Vec<Vec<(f64, f64)>> = vec![Vec::new()];
        for &(px, py) in &se.points {
            match py {
                Some(py) => runs
                    .last_mut()
                    .into_iter()
                    .for_each(|r| r.push((x(px), y(py)))),
                None => runs.push(Vec::new()),
            }
        }
        for run in runs.iter().filter(|r| !r.is_empty()) {
            if let [(cx, cy)] = run.as_slice() {
                let _ = write!(
                    s,
                    r#"<circle cx="{cx:.1}" cy="{cy:.1}" r="2" fill="{}"/>"#,
                    se.color
                );
            } else {
                let pts: Vec<String> = run.iter().map(|(a, b)| format!("{a:.1},{b:.1}")).collect();
                let _ = write!(
                    s,
                    r#"<polyline fill="none" stroke="{}" stroke-width="1.5" points="{}"/>"#,
                    se.color,
                    pts.join(" ")
                );
            }
        }
    }
    s.push_str(&legend);
    if series
        .iter()
        .all(|se| se.points.iter().all(|p| p.1.is_none()))
    {
        let _ = write!(
            s,
            r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">no data</text>"#,
            LEFT + plot_w / 2.0,
            TOP + plot_h / 2.0
        );
    }
    s.push_str("</svg>");
    s
}

/// Each mark's line; its label only where it does not run into the label before it.
fn draw_marks(s: &mut String, marks: &[Mark], x: &impl Fn(f64) -> f64, x_max: f64, plot_h: f64) {
    let mut free_from = f64::MIN;
    for m in marks {
        let mx = x(m.at_s.clamp(0.0, x_max));
        let label = if mx >= free_from {
            free_from = mx + 7.0 + m.label.chars().count() as f64 * CHAR_PX;
            format!(
                r#"<text x="{:.1}" y="{:.1}" style="fill:{}">{}</text>"#,
                mx + 3.0,
                TOP + plot_h - 4.0,
                m.color,
                escape(&m.label)
            )
        } else {
            String::new()
        };
        let _ = write!(
            s,
            r#"<g class="mark"><line x1="{mx:.1}" x2="{mx:.1}" y1="{TOP}" y2="{:.1}" stroke="{}" stroke-width="1.2" stroke-dasharray="4 3"><title>{}</title></line>{label}</g>"#,
            TOP + plot_h,
            m.color,
            escape(&m.title)
        );
    }
}

/// The width of one character of a chart's title (13 px, bold), roughly.
const TITLE_CHAR_PX: f64 = 7.5;
/// The height of a row of legend entries.
const LEGEND_ROW: f64 = 16.0;

fn legend_entry_width(name: &str) -> f64 {
    24.0 + 7.0 * name.chars().count() as f64
}

fn legend_width(entries: &[(&str, &str)]) -> f64 {
    entries
        .iter()
        .map(|(name, _)| legend_entry_width(name))
        .sum()
}

/// A colour swatch and its name, `top` being the swatch's top edge.
fn legend_entry(s: &mut String, x: f64, top: f64, name: &str, color: &str) {
    let _ = write!(
        s,
        r#"<rect class="swatch" x="{x:.1}" y="{top:.1}" width="10" height="10" fill="{color}"/><text x="{:.1}" y="{:.1}">{}</text>"#,
        x + 13.0,
        top + 9.0,
        escape(name)
    );
}

/// Legend entries laid out left to right from (`left`, `top`), a new row whenever the next one
/// would pass `right`; returns the bottom of the last row.
fn legend_rows(s: &mut String, entries: &[(&str, &str)], top: f64, left: f64, right: f64) -> f64 {
    let (mut x, mut y) = (left, top);
    for (name, color) in entries {
        let w = legend_entry_width(name);
        if x > left && x + w > right {
            x = left;
            y += LEGEND_ROW;
        }
        legend_entry(s, x, y, name, color);
        x += w;
    }
    y + LEGEND_ROW
}

/// Horizontal bars: one per (label, value).
fn bar_chart(title: &str, bars: &[(String, u64, &str)]) -> String {
    let row = 26.0;
    let label_w = 150.0;
    let height = TOP + row * bars.len().max(1) as f64 + 10.0;
    let max = bars.iter().map(|b| b.1).max().unwrap_or(0).max(1) as f64;
    let plot_w = WIDTH - label_w - RIGHT - 60.0;
    let mut s = String::new();
    let _ = write!(
        s,
        r#"<svg width="{WIDTH}" height="{height:.0}" viewBox="0 0 {WIDTH} {height:.0}" role="img" aria-label="{t}"><title>{t}</title><text x="{LEFT}" y="16" style="font-size:13px;font-weight:600;fill:#222">{t}</text>"#,
        t = escape(title)
    );
    if bars.is_empty() {
        let _ = write!(
            s,
            r#"<text x="{label_w}" y="{:.0}">no data</text>"#,
            TOP + 14.0
        );
    }
    for (i, (label, value, color)) in bars.iter().enumerate() {
        let by = TOP + i as f64 * row;
        let w = (*value as f64 / max * plot_w).max(if *value > 0 { 1.0 } else { 0.0 });
        let _ = write!(
            s,
            r#"<text x="{:.0}" y="{:.1}" text-anchor="end">{}</text><rect x="{label_w}" y="{by:.1}" width="{w:.1}" height="{:.1}" fill="{color}"/><text x="{:.1}" y="{:.1}">{value}</text>"#,
            label_w - 8.0,
            by + row / 2.0 + 4.0,
            escape(label),
            row - 8.0,
            label_w + w + 6.0,
            by + row / 2.0 + 4.0
        );
    }
    s.push_str("</svg>");
    s
}

fn outcome_color(status: &str) -> &'static str {
    match status {
        "CONFIRMED" => "#1a7f37",
        "REJECTED" => "#bf8700",
        "CANCELLED" => "#cf222e",
        "UNFINISHED" => "#8250df",
        _ => "#57606a",
    }
}

/// `report.html`: the page head, the sections of [`sections`] (one function each), the page end.
pub(super) fn render(r: &RunReport) -> String {
    let mut s = String::new();
    head(&mut s, r);
    for section in sections(r) {
        match section {
            Section::Summary => summary(&mut s, r),
            Section::Slos => slos(&mut s, r),
            Section::Capacity => capacity(&mut s, r),
            Section::ChaosTimeline => chaos_timeline(&mut s, r),
            Section::GatewayEvents => gateway_events(&mut s, r),
            Section::Invariants => invariants(&mut s, r),
            Section::Arrivals => arrivals(&mut s, r),
            Section::OverTime => over_time(&mut s, r),
            // Drawn as the last chart of "Over time" (see `CHARTS`), next to the per-second
            // outcomes, rather than as a table of its own.
            Section::Outcomes => {}
            Section::Traces => traces(&mut s, r),
            Section::Metrics => metrics(&mut s, r),
            Section::Endpoints => endpoints(&mut s, r),
        }
    }
    s.push_str("</body></html>\n");
    s
}

// Writing to a String cannot fail, hence the `let _ = write!` throughout.

fn head(s: &mut String, r: &RunReport) {
    let _ = write!(
        s,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{} · {}</title><style>{STYLE}</style></head><body>",
        escape(&r.scenario.name),
        escape(&r.run_id)
    );
}

fn summary(s: &mut String, r: &RunReport) {
    let status = match r.verdict {
        Verdict::Passed => "passed",
        Verdict::Failed => "failed",
        Verdict::Interrupted => "interrupted",
    };
    let _ = write!(
        s,
        r#"<h1 class="{status}">{}</h1><p class="meta">{}</p><p class="meta">Run <code>{}</code>, started {}, load {:.1}s, {} backend ({}){}.</p>"#,
        escape(&r.headline()),
        escape(&r.scenario.description),
        escape(&r.run_id),
        escape(&r.started_at),
        r.duration_s,
        escape(&r.environment.backend),
        escape(&r.environment.instances_text()),
        r.environment
            .startup_s
            .map_or(String::new(), |t| format!(", start-up {t:.2}s"))
    );
    let _ = write!(
        s,
        r#"<p class="meta">Load: {}.</p>"#,
        escape(&r.load_summary())
    );
    if let Some(i) = &r.interruption {
        let _ = write!(
            s,
            r#"<p class="interrupted"><strong>Interrupted</strong>: {}.</p>"#,
            escape(&super::sections::interruption_note(i))
        );
    }
}

fn arrivals(s: &mut String, r: &RunReport) {
    let _ = write!(
        s,
        "<h2>Arrivals</h2><p class=\"meta\">{}</p><table><tr><th>phase</th><th>journeys due</th><th>started</th><th>dropped</th>{}</tr>",
        escape(ARRIVALS_NOTE),
        if r.arrivals_paused() {
            "<th>paused</th>"
        } else {
            ""
        }
    );
    for (phase, a) in arrival_phases(r) {
        let _ = write!(
            s,
            "<tr{}><td>{}</td><td>{}</td><td>{}</td><td>{}</td>{}</tr>",
            if a.dropped > 0 { r#" class="bad""# } else { "" },
            escape(phase),
            a.scheduled,
            a.started,
            a.dropped,
            if r.arrivals_paused() {
                format!("<td>{}</td>", a.paused)
            } else {
                String::new()
            }
        );
    }
    s.push_str("</table>");
}

fn slos(s: &mut String, r: &RunReport) {
    s.push_str("<h2>SLOs</h2>");
    if r.slos.is_empty() {
        s.push_str("<p>The scenario sets no SLO.</p>");
        return;
    }
    s.push_str(
        "<table><tr><th>SLO</th><th>target</th><th>measured</th><th>verdict</th><th>detail</th></tr>",
    );
    for v in &r.slos {
        let _ = write!(
            s,
            r#"<tr{}><td>{}</td><td>{}</td><td>{}</td><td class="{}">{}</td><td>{}</td></tr>"#,
            if v.held { "" } else { r#" class="bad""# },
            escape(&v.name),
            escape(&v.target_display()),
            escape(&v.measured_display()),
            if v.held { "passed" } else { "failed" },
            if v.held { "held" } else { "failed" },
            escape(&v.detail)
        );
    }
    s.push_str("</table>");
}

fn capacity(s: &mut String, r: &RunReport) {
    let Some(c) = &r.capacity else { return };
    let _ = write!(
        s,
        "<h2>Capacity</h2><p>{}</p><table><tr>",
        escape(&c.summary())
    );
    for h in c.headers() {
        let _ = write!(s, "<th>{h}</th>");
    }
    s.push_str("</tr>");
    for step in &c.steps {
        let class = match step.slos_held {
            Some(false) => r#" class="bad""#,
            _ if c.knee == Some(step.step) => r#" class="knee""#,
            _ => "",
        };
        let _ = write!(s, "<tr{class}>");
        for cell in step.cells(c.knee) {
            let _ = write!(s, "<td>{}</td>", escape(&cell));
        }
        s.push_str("</tr>");
    }
    s.push_str("</table>");
}

/// The faults, numbered as the chart shading numbers a window too narrow for its label.
fn chaos_timeline(s: &mut String, r: &RunReport) {
    s.push_str(
        "<h2>Chaos timeline</h2><table><tr><th>#</th><th>fault</th><th>target</th><th>acted on</th><th>applied</th><th>healed</th><th>planned</th></tr>",
    );
    for (i, w) in r.chaos_windows.iter().enumerate() {
        let _ = write!(
            s,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{:.1}s</td><td>{}</td><td>{:.0}s..{:.0}s</td></tr>",
            i + 1,
            escape(&w.label),
            escape(&w.target),
            escape(&w.affected.join(", ")),
            w.start_s,
            escape(&w.healed()),
            w.planned_start_s,
            w.planned_end_s
        );
    }
    s.push_str("</table>");
}

/// The gateway's events, coloured as their marks on the latency chart.
fn gateway_events(s: &mut String, r: &RunReport) {
    let _ = write!(
        s,
        "<h2>Gateway events</h2><p class=\"meta\">{} Dashed on the latency chart: {}</p>\
         <table><tr><th>at</th><th>service</th><th>event</th><th>gateway</th></tr>",
        escape(GATEWAY_EVENTS_NOTE),
        escape(EVENT_COLORS)
    );
    for e in r.gateway_events() {
        let _ = write!(
            s,
            r#"<tr><td>{:.0}s</td><td>{}</td><td><span class="sw" style="background:{}"></span>{}</td><td>{}</td></tr>"#,
            e.at_s,
            escape(&e.service),
            event_color(e.kind),
            escape(&e.change),
            escape(&e.process)
        );
    }
    s.push_str("</table>");
}

fn invariants(s: &mut String, r: &RunReport) {
    s.push_str("<h2>Invariants</h2>");
    if r.invariants.is_empty() {
        s.push_str("<p>No invariant was checked.</p>");
        return;
    }
    s.push_str(
        "<table><tr><th>invariant</th><th>verdict</th><th>summary</th><th>first violations</th></tr>",
    );
    for v in &r.invariants {
        let first: Vec<String> = v
            .violations
            .iter()
            .take(VIOLATIONS_SHOWN)
            .map(|x| escape(&serde_json::to_string(x).unwrap_or_else(|_| x.details.clone())))
            .collect();
        let more = v.violations.len().saturating_sub(VIOLATIONS_SHOWN);
        let _ = write!(
            s,
            r#"<tr{}><td>{}</td><td class="{}">{}</td><td>{}</td><td>{}{}</td></tr>"#,
            if v.held { "" } else { r#" class="bad""# },
            v.name,
            if v.held { "passed" } else { "failed" },
            if v.held { "held" } else { "violated" },
            escape(&v.summary),
            first
                .iter()
                .map(|f| format!("<code>{f}</code>"))
                .collect::<Vec<_>>()
                .join("<br>"),
            if more > 0 {
                format!("<br>… and {more} more")
            } else {
                String::new()
            }
        );
    }
    s.push_str("</table>");
}

/// The charts of "Over time", in order, each an `<svg>`; a new chart is one function and one
/// entry here.
const CHARTS: [fn(&RunReport) -> String; 4] = [
    latency_chart,
    throughput_chart,
    outcomes_per_second_chart,
    outcomes_chart,
];

fn over_time(s: &mut String, r: &RunReport) {
    s.push_str("<h2>Over time</h2>");
    for chart in CHARTS {
        s.push_str(&chart(r));
    }
}

/// The x axis of the time charts, in seconds: the whole load, and every second measured even if
/// the timeline ran past the nominal duration.
pub(super) fn x_max(r: &RunReport) -> f64 {
    r.timeline
        .last()
        .map_or(r.duration_s, |b| (b.second + 1) as f64)
        .max(r.duration_s)
}

/// Where a second's value is plotted: the middle of the second.
pub(super) fn at(b: &TimelineSecond) -> f64 {
    b.second as f64 + 0.5
}

/// A line of one counter per second.
fn per_second<'a>(
    r: &RunReport,
    name: &'a str,
    color: &'a str,
    f: fn(&TimelineSecond) -> u64,
) -> Series<'a> {
    Series {
        name,
        color,
        points: r
            .timeline
            .iter()
            .map(|b| (at(b), Some(f(b) as f64)))
            .collect(),
    }
}

fn latency_chart(r: &RunReport) -> String {
    let mean = Series {
        name: "mean",
        color: "#0969da",
        points: r
            .timeline
            .iter()
            .map(|b| (at(b), b.mean_latency_us().map(|v| v / 1_000.0)))
            .collect(),
    };
    let max = Series {
        name: "max",
        color: "#cf222e",
        points: r
            .timeline
            .iter()
            .map(|b| {
                (
                    at(b),
                    (b.served() > 0).then(|| b.max_latency_us as f64 / 1_000.0),
                )
            })
            .collect(),
    };
    let p99 = Series {
        name: "p99",
        color: "#8250df",
        points: r
            .timeline
            .iter()
            .map(|b| (at(b), b.p99_us.map(|v| v as f64 / 1_000.0)))
            .collect(),
    };
    let marks = event_marks(r);
    let title = if marks.is_empty() {
        "Latency per second (all served requests)"
    } else {
        "Latency per second (all served requests), gateway events dashed"
    };
    marked_time_chart(
        title,
        x_max(r),
        &[mean, p99, max],
        &r.chaos_windows,
        &marks,
        |v| format_micros(v * 1_000.0),
    )
}

/// Requests, errors and shed requests per second; in an open model also the journeys due and
/// those dropped.
fn throughput_chart(r: &RunReport) -> String {
    let mut series = vec![
        per_second(r, "requests/s", "#0969da", |b| b.requests),
        per_second(r, "errors/s", "#cf222e", |b| b.errors),
        per_second(r, "shed/s", "#bf8700", |b| b.shed),
    ];
    let title = if r.arrivals.is_some() {
        series.push(per_second(r, "journeys due/s", "#1a7f37", |b| b.arrivals));
        series.push(per_second(r, "dropped/s", "#8250df", |b| b.dropped));
        "Requests and journeys per second"
    } else {
        "Throughput, errors and shed requests per second"
    };
    time_chart(title, x_max(r), &series, &r.chaos_windows, num)
}

fn outcomes_per_second_chart(r: &RunReport) -> String {
    time_chart(
        "Saga outcomes per second",
        x_max(r),
        &[
            per_second(r, "confirmed", outcome_color("CONFIRMED"), |b| {
                b.orders_confirmed
            }),
            per_second(r, "rejected", outcome_color("REJECTED"), |b| {
                b.orders_rejected
            }),
            per_second(r, "cancelled", outcome_color("CANCELLED"), |b| {
                b.orders_cancelled
            }),
        ],
        &r.chaos_windows,
        num,
    )
}

/// The report's [`Section::Outcomes`]: orders per terminal status over the whole run.
fn outcomes_chart(r: &RunReport) -> String {
    let bars: Vec<(String, u64, &str)> = r
        .outcomes
        .iter()
        .map(|(k, v)| (k.clone(), *v, outcome_color(k)))
        .collect();
    bar_chart("Saga outcomes (orders)", &bars)
}

/// Where the sagas' time went: per phase a stacked chart of the hops' p50 and p99 and a table
/// of the hops, then the slowest sagas.
fn traces(s: &mut String, r: &RunReport) {
    let Some(t) = &r.traces else { return };
    let _ = write!(
        s,
        "<h2>Traces</h2><p>{}</p><p class=\"meta\">A hop's time is the self time of its spans in \
         one saga (their time minus their children's), so nothing on one path counts twice; hops \
         running concurrently can add up to more than the saga's duration. \
         <code>harness trace ORDER_ID</code> prints one saga's trace as a tree against a running \
         <code>harness up</code>.</p>",
        escape(&trace_summary(t))
    );
    let colors = hop_colors(t);
    for (phase, hops) in trace_phases(t) {
        let sorted = hops_by_p99(hops);
        let _ = write!(s, "<h3>phase {} ({} sagas)</h3>", escape(phase), hops.sagas);
        s.push_str(&stacked_hops_chart(
            &format!("Where the time goes, phase {phase}"),
            &sorted,
            &colors,
        ));
        hop_table(s, &sorted, &colors);
    }
    slowest_sagas(s, t);
}

/// One colour per hop, the same in every phase's chart: handed out in the order of phase `all`
/// (highest p99 first), then to hops only other phases have.
fn hop_colors(t: &TraceReport) -> BTreeMap<&str, &'static str> {
    let mut colors = BTreeMap::new();
    for (_, phase) in trace_phases(t) {
        for (hop, _) in hops_by_p99(phase) {
            let next = colors.len();
            colors.entry(hop).or_insert_with(|| palette(next));
        }
    }
    colors
}

/// Reads one percentile of a latency.
type Percentile = fn(&LatencyReport) -> Option<u64>;

/// Two horizontal bars, `p50` and `p99`, each stacking every hop's value at that percentile in
/// `hops`' order, one `rect class="hop"` per hop per bar, with a legend of the hops below.
fn stacked_hops_chart(
    title: &str,
    hops: &[(&str, &LatencyReport)],
    colors: &BTreeMap<&str, &'static str>,
) -> String {
    let bars: [(&str, Percentile); 2] = [("p50", |l| l.p50_us), ("p99", |l| l.p99_us)];
    let bar_h = 22.0;
    let row = 32.0;
    let plot_w = WIDTH - LEFT - RIGHT - 60.0;
    let axis_y = TOP + row * bars.len() as f64;
    let total = |p: Percentile| -> u64 { hops.iter().map(|(_, l)| p(l).unwrap_or(0)).sum() };
    let x_data = bars.iter().map(|(_, p)| total(*p)).max().unwrap_or(0) as f64;
    let x_step = nice_step(x_data * 1.05);
    let x_max = (x_data * 1.05 / x_step).ceil().max(1.0) * x_step;
    let x = |v: f64| LEFT + v / x_max * plot_w;

    let entries: Vec<(&str, &str)> = hops
        .iter()
        .map(|(hop, _)| (*hop, colors.get(hop).copied().unwrap_or("#57606a")))
        .collect();
    let mut legend = String::new();
    let bottom = legend_rows(&mut legend, &entries, axis_y + 28.0, LEFT, WIDTH - RIGHT);
    let height = bottom + 6.0;

    let mut s = String::new();
    let _ = write!(
        s,
        r#"<svg width="{WIDTH}" height="{height:.0}" viewBox="0 0 {WIDTH} {height:.0}" role="img" aria-label="{t}"><title>{t}</title><text x="{LEFT}" y="16" style="font-size:13px;font-weight:600;fill:#222">{t}</text>"#,
        t = escape(title)
    );
    // Grid and axis first, so the bars are drawn over them.
    let mut tick = 0.0;
    while tick <= x_max + x_step / 2.0 {
        let tx = x(tick);
        let _ = write!(
            s,
            r##"<line x1="{tx:.1}" x2="{tx:.1}" y1="{TOP}" y2="{axis_y:.1}" stroke="#e5e5e5"/><text x="{tx:.1}" y="{:.1}" text-anchor="middle">{}</text>"##,
            axis_y + 14.0,
            format_micros(tick)
        );
        tick += x_step;
    }
    let _ = write!(
        s,
        r##"<line x1="{LEFT}" x2="{LEFT}" y1="{TOP}" y2="{axis_y:.1}" stroke="#888"/>"##
    );
    for (i, (label, p)) in bars.iter().enumerate() {
        let top = TOP + i as f64 * row + (row - bar_h) / 2.0;
        let _ = write!(
            s,
            r#"<text x="{:.1}" y="{:.1}" text-anchor="end">{label}</text>"#,
            LEFT - 6.0,
            top + bar_h / 2.0 + 4.0
        );
        let mut at = 0.0;
        for (hop, latency) in hops {
            let v = p(latency).unwrap_or(0) as f64;
            let color = colors.get(hop).copied().unwrap_or("#57606a");
            let _ = write!(
                s,
                r##"<rect class="hop" x="{:.1}" y="{top:.1}" width="{:.1}" height="{bar_h}" fill="{color}" stroke="#fff" stroke-width="0.5"><title>{}: {label} {}</title></rect>"##,
                x(at),
                x(at + v) - x(at),
                escape(hop),
                format_micros(v)
            );
            at += v;
        }
        let _ = write!(
            s,
            r#"<text x="{:.1}" y="{:.1}">{}</text>"#,
            x(at) + 6.0,
            top + bar_h / 2.0 + 4.0,
            format_micros(at)
        );
    }
    s.push_str(&legend);
    s.push_str("</svg>");
    s
}

/// A phase's hops, highest p99 first, each with its colour in the chart above.
fn hop_table(
    s: &mut String,
    hops: &[(&str, &LatencyReport)],
    colors: &BTreeMap<&str, &'static str>,
) {
    s.push_str(
        "<table><tr><th>hop</th><th>sagas</th><th>p50</th><th>p95</th><th>p99</th><th>max</th></tr>",
    );
    for (hop, l) in hops {
        let _ = write!(
            s,
            r#"<tr><td><span class="sw" style="background:{}"></span>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>"#,
            colors.get(hop).copied().unwrap_or("#57606a"),
            escape(hop),
            l.count,
            micros(l.p50_us),
            micros(l.p95_us),
            micros(l.p99_us),
            micros(l.max_us)
        );
    }
    s.push_str("</table>");
}

/// The slowest sagas, with their trace ids to open in `harness trace` or a trace viewer.
fn slowest_sagas(s: &mut String, t: &TraceReport) {
    s.push_str("<h3>Slowest sagas</h3>");
    if t.slowest.is_empty() {
        s.push_str("<p>No saga was traced.</p>");
        return;
    }
    s.push_str(
        "<table><tr><th>order</th><th>trace</th><th>phase</th><th>total</th><th>longest hops</th></tr>",
    );
    for saga in &t.slowest {
        let hops: Vec<String> = top_hops(saga)
            .iter()
            .map(|(hop, time)| format!("{} {time}", escape(hop)))
            .collect();
        let _ = write!(
            s,
            "<tr><td><code>{}</code></td><td><code>{}</code></td><td>{}</td><td>{}</td><td>{}</td></tr>",
            escape(&saga.order_id),
            escape(&saga.trace_id),
            escape(&saga.phase),
            format_micros(saga.total_us as f64),
            hops.join("<br>")
        );
    }
    s.push_str("</table>");
}

/// The scraped metrics: one time chart per [`MetricChart`] with its query under it, then how
/// the scrapes of each process went.
fn metrics(s: &mut String, r: &RunReport) {
    let Some(m) = &r.metrics else { return };
    let _ = write!(
        s,
        "<h2>Metrics</h2><p class=\"meta\">Scraped from every process's <code>/metrics</code> \
         every {}s; the query under a chart computes the same series in a Prometheus that \
         scrapes the environment.</p>",
        crate::slo::format_number(m.interval_s)
    );
    for chart in &m.charts {
        s.push_str(&metric_chart(r, chart));
        let _ = write!(
            s,
            r#"<p class="query"><code>{}</code></p>"#,
            escape(&chart.query)
        );
    }
    scrape_targets(s, m);
}

/// One scraped chart over the load's seconds, with the chaos windows shaded.
fn metric_chart(r: &RunReport, chart: &MetricChart) -> String {
    let series: Vec<Series<'_>> = chart
        .series
        .iter()
        .enumerate()
        .map(|(i, se)| Series {
            name: &se.name,
            color: palette(i),
            points: se.points.iter().map(|&(t, v)| (t, Some(v))).collect(),
        })
        .collect();
    // Scrapes can go on a little past the load (the last tick, the drain).
    let last = chart
        .series
        .iter()
        .flat_map(|se| se.points.iter().map(|p| p.0))
        .fold(0.0f64, f64::max);
    let unit = chart.unit.as_str();
    time_chart(
        &chart.title,
        x_max(r).max(last.ceil()),
        &series,
        &r.chaos_windows,
        |v| match unit {
            "seconds" => format_micros(v * 1e6),
            "per_second" => format!("{}/s", tick_number(v)),
            _ => tick_number(v),
        },
    )
}

/// An axis tick: at most four decimals, trailing zeros dropped (`0.25`, `1.5`, `40`).
pub(super) fn tick_number(v: f64) -> String {
    let s = format!("{v:.4}");
    s.trim_end_matches('0').trim_end_matches('.').to_string()
}

fn scrape_targets(s: &mut String, m: &MetricsReport) {
    if m.targets.is_empty() {
        return;
    }
    s.push_str(
        "<h3>Scrape targets</h3><table><tr><th>process</th><th>scrapes</th><th>failures</th><th>last error</th></tr>",
    );
    for (process, t) in &m.targets {
        let _ = write!(
            s,
            "<tr{}><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            if t.failures > 0 {
                r#" class="bad""#
            } else {
                ""
            },
            escape(process),
            t.scrapes,
            t.failures,
            escape(t.last_error.as_deref().unwrap_or(""))
        );
    }
    s.push_str("</table>");
}

/// One table per phase.
fn endpoints(s: &mut String, r: &RunReport) {
    s.push_str("<h2>Endpoints</h2>");
    for (phase, stats) in &r.phases {
        let _ = write!(
            s,
            "<h3>phase {}</h3><table><tr><th>endpoint</th><th>requests</th><th>ok</th><th>errors</th><th>errors by status</th><th>shed</th><th>p50</th><th>p95</th><th>p99</th><th>max</th></tr>",
            escape(phase)
        );
        for (name, e) in &stats.endpoints {
            let by_status = |m: &BTreeMap<u16, u64>| {
                m.iter()
                    .map(|(k, v)| format!("{k}: {v}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            let shed = if e.shed == 0 {
                "0".to_string()
            } else {
                format!("{} ({})", e.shed, by_status(&e.shed_by_status))
            };
            let _ = write!(
                s,
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                escape(name),
                e.count,
                e.ok,
                e.errors,
                escape(&by_status(&e.errors_by_status)),
                escape(&shed),
                micros(e.latency.p50_us),
                micros(e.latency.p95_us),
                micros(e.latency.p99_us),
                micros(e.latency.max_us)
            );
        }
        if let Some(saga) = &stats.saga_completion {
            let _ = write!(
                s,
                "<tr><td>saga completion</td><td>{}</td><td></td><td></td><td></td><td></td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                saga.count,
                micros(saga.p50_us),
                micros(saga.p95_us),
                micros(saga.p99_us),
                micros(saga.max_us)
            );
        }
        s.push_str("</table>");
    }
}

/// A latency in µs for a table cell; `-` when there was none.
pub(super) fn micros(v: Option<u64>) -> String {
    v.map_or("-".to_string(), |v| format_micros(v as f64))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticks_are_round_numbers() {
        assert_eq!(nice_step(100.0), 20.0);
        assert_eq!(nice_step(7.0), 2.0);
        assert_eq!(nice_step(0.0), 1.0);
    }

    #[test]
    fn chaos_windows_are_shaded_on_time_charts() {
        let svg = time_chart(
            "t",
            60.0,
            &[],
            &[ChaosWindow {
                start_s: 10.0,
                end_s: 20.0,
                label: "kill <order#1>".into(),
                ..ChaosWindow::default()
            }],
            num,
        );
        assert!(svg.contains(r#"class="chaos""#), "{svg}");
        assert!(svg.contains("kill &lt;order#1&gt;</text>"), "{svg}");
    }

    #[test]
    fn a_legend_too_wide_for_the_title_line_goes_under_the_chart() {
        let names: Vec<String> = (1..=8).map(|i| format!("inventory#{i} requests")).collect();
        let series: Vec<Series<'_>> = names
            .iter()
            .enumerate()
            .map(|(i, name)| Series {
                name,
                color: palette(i),
                points: vec![(1.0, Some(i as f64))],
            })
            .collect();
        let svg = time_chart("Requests per second by instance", 10.0, &series, &[], num);
        let swatch_tops: Vec<f64> = svg
            .split(r#"<rect class="swatch" x=""#)
            .skip(1)
            .map(|r| {
                let y = &r[r.find("y=\"").unwrap() + 3..];
                y[..y.find('"').unwrap()].parse().unwrap()
            })
            .collect();
        assert_eq!(swatch_tops.len(), 8);
        assert!(
            swatch_tops.iter().all(|&y| y > TOP + 176.0),
            "{swatch_tops:?}"
        );
        assert!(
            swatch_tops.last() > swatch_tops.first(),
            "wrapped onto a second row"
        );
        assert!(
            !svg.contains(&format!(r#"height="{HEIGHT}""#)),
            "the chart grew"
        );
    }

    #[test]
    fn the_stacked_chart_draws_one_segment_per_hop_per_bar_and_their_sum() {
        let latency = |p50_us: u64, p99_us: u64| LatencyReport {
            count: 1,
            p50_us: Some(p50_us),
            p95_us: None,
            p99_us: Some(p99_us),
            max_us: None,
            mean_us: None,
            histogram: String::new(),
        };
        let (a, b) = (latency(1_000, 4_000), latency(2_000, 6_000));
        let hops = [("order db", &a), ("gateway → order", &b)];
        let colors: BTreeMap<&str, &str> =
            [("order db", "#111111"), ("gateway → order", "#222222")]
                .into_iter()
                .collect();
        let svg = stacked_hops_chart("t", &hops, &colors);
        assert_eq!(svg.matches(r#"<rect class="hop""#).count(), 4, "{svg}");
        assert!(
            svg.contains("<title>gateway → order: p99 6ms</title>"),
            "{svg}"
        );
        assert!(
            svg.contains(">3ms</text>") && svg.contains(">10ms</text>"),
            "{svg}"
        );
        assert_eq!(
            svg.matches(r##"fill="#222222""##).count(),
            3,
            "2 segments and a swatch"
        );
    }

    #[test]
    fn a_window_too_narrow_for_its_label_shows_its_number() {
        let window = |start_s: f64, label: &str| ChaosWindow {
            start_s,
            end_s: start_s + 1.0,
            label: label.into(),
            ..ChaosWindow::default()
        };
        let svg = time_chart(
            "t",
            300.0,
            &[],
            &[
                window(10.0, "latency inventory"),
                window(20.0, "kill order#1"),
            ],
            num,
        );
        assert!(
            svg.contains(">1</text></g>") && svg.contains(">2</text></g>"),
            "{svg}"
        );
        // The label stays available as the window's tooltip.
        assert!(svg.contains("<title>kill order#1</title>"), "{svg}");
        assert!(!svg.contains(">kill order#1</text>"), "{svg}");
    }
}
