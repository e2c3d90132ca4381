//! `report.html`: one self-contained page (inline CSS, inline SVG drawn here, no script, no
//! font, no link) so it opens from a CI artifact without network access. Charts: latency over
//! time (mean and max per second), throughput and errors per second, saga outcomes per second and
//! in total; every time chart shades the report's chaos windows.

use std::fmt::Write;

use super::{ChaosWindow, RunReport};
use crate::slo::format_micros;

const WIDTH: f64 = 860.0;
const HEIGHT: f64 = 240.0;
const LEFT: f64 = 64.0;
const RIGHT: f64 = 16.0;
const TOP: f64 = 28.0;
const BOTTOM: f64 = 36.0;

const STYLE: &str = "body{font-family:system-ui,-apple-system,'Segoe UI',sans-serif;margin:2em auto;max-width:960px;color:#222}\
h1{font-size:1.5em}h2{font-size:1.2em;margin-top:2em}\
.passed{color:#1a7f37}.failed{color:#cf222e}\
table{border-collapse:collapse;width:100%;font-size:.9em}th,td{border:1px solid #ccc;padding:4px 8px;text-align:left;vertical-align:top}\
th{background:#f3f3f3}tr.bad td{background:#fff0f0}tr.knee td{background:#eaf7ee;font-weight:600}code{font-size:.9em}\
svg{display:block;margin:1em 0;background:#fff}svg text{font-size:11px;fill:#444}\
.meta{color:#555}";

/// Escapes text for HTML content and attributes.
pub(super) fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&#39;")
}

/// A line of a time chart.
struct Series<'a> {
    name: &'a str,
    color: &'a str,
    /// (second, value); `None` leaves a gap.
    points: Vec<(f64, Option<f64>)>,
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

fn num(v: f64) -> String {
    if v.fract().abs() < 1e-9 {
        format!("{v:.0}")
    } else {
        format!("{v:.2}")
    }
}

/// The width of one character of chart text (11 px sans-serif), roughly.
const CHAR_PX: f64 = 6.5;

/// A line chart over the load's seconds, with the chaos windows shaded.
fn time_chart(
    title: &str,
    x_max: f64,
    series: &[Series<'_>],
    windows: &[ChaosWindow],
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

    let mut s = String::new();
    let _ = write!(
        s,
        r#"<svg width="{WIDTH}" height="{HEIGHT}" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" aria-label="{t}"><title>{t}</title>"#,
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
    // Legend.
    let mut lx = LEFT + plot_w;
    for se in series.iter().rev() {
        lx -= 24.0 + 7.0 * se.name.len() as f64;
        let _ = write!(
            s,
            r#"<rect x="{lx:.1}" y="8" width="10" height="10" fill="{}"/><text x="{:.1}" y="17">{}</text>"#,
            se.color,
            lx + 13.0,
            escape(se.name)
        );
    }
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

pub(super) fn render(r: &RunReport) -> String {
    let mut s = String::new();
    let status = if r.passed() { "passed" } else { "failed" };
    let _ = write!(
        s,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{} · {}</title><style>{STYLE}</style></head><body>",
        escape(&r.scenario.name),
        escape(&r.run_id)
    );
    let _ = write!(
        s,
        r#"<h1 class="{status}">{}</h1><p class="meta">{}</p><p class="meta">Run <code>{}</code>, started {}, load {:.1}s, {} backend ({}){}.</p>"#,
        escape(&r.headline()),
        escape(&r.scenario.description),
        escape(&r.run_id),
        escape(&r.started_at),
        r.duration_s,
        escape(&r.environment.backend),
        escape(
            &r.environment
                .instances
                .iter()
                .map(|(k, v)| format!("{k} ×{v}"))
                .collect::<Vec<_>>()
                .join(", ")
        ),
        r.environment
            .startup_s
            .map_or(String::new(), |t| format!(", start-up {t:.2}s"))
    );

    // SLOs.
    let _ = write!(s, "<h2>SLOs</h2>");
    if r.slos.is_empty() {
        let _ = write!(s, "<p>The scenario sets no SLO.</p>");
    } else {
        let _ = write!(
            s,
            "<table><tr><th>SLO</th><th>target</th><th>measured</th><th>verdict</th><th>detail</th></tr>"
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

    if let Some(c) = &r.capacity {
        let _ = write!(
            s,
            "<h2>Capacity</h2><p>{}</p><table><tr>",
            escape(&c.summary())
        );
        for h in crate::capacity::TABLE_HEADERS {
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

    if !r.chaos_windows.is_empty() {
        let _ = write!(
            s,
            "<h2>Chaos timeline</h2><table><tr><th>#</th><th>fault</th><th>target</th><th>acted on</th><th>applied</th><th>healed</th><th>planned</th></tr>"
        );
        for (i, w) in r.chaos_windows.iter().enumerate() {
            let _ = write!(
                s,
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{:.1}s</td><td>{:.1}s</td><td>{:.0}s..{:.0}s</td></tr>",
                i + 1,
                escape(&w.label),
                escape(&w.target),
                escape(&w.affected.join(", ")),
                w.start_s,
                w.end_s,
                w.planned_start_s,
                w.planned_end_s
            );
        }
        s.push_str("</table>");
    }

    // Invariants.
    let _ = write!(s, "<h2>Invariants</h2>");
    if r.invariants.is_empty() {
        let _ = write!(s, "<p>No invariant was checked.</p>");
    } else {
        let _ = write!(
            s,
            "<table><tr><th>invariant</th><th>verdict</th><th>summary</th><th>first violations</th></tr>"
        );
        for v in &r.invariants {
            let first: Vec<String> = v
                .violations
                .iter()
                .take(5)
                .map(|x| escape(&serde_json::to_string(x).unwrap_or_else(|_| x.details.clone())))
                .collect();
            let more = v.violations.len().saturating_sub(5);
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

    // Charts.
    let _ = write!(s, "<h2>Over time</h2>");
    let x_max = r
        .timeline
        .last()
        .map_or(r.duration_s, |b| (b.second + 1) as f64)
        .max(r.duration_s);
    let at = |b: &super::TimelineSecond| b.second as f64 + 0.5;
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
                    (b.requests > 0).then(|| b.max_latency_us as f64 / 1_000.0),
                )
            })
            .collect(),
    };
    s.push_str(&time_chart(
        "Latency per second (all requests)",
        x_max,
        &[mean, max],
        &r.chaos_windows,
        |v| format_micros(v * 1_000.0),
    ));
    let requests = Series {
        name: "requests/s",
        color: "#0969da",
        points: r
            .timeline
            .iter()
            .map(|b| (at(b), Some(b.requests as f64)))
            .collect(),
    };
    let errors = Series {
        name: "errors/s",
        color: "#cf222e",
        points: r
            .timeline
            .iter()
            .map(|b| (at(b), Some(b.errors as f64)))
            .collect(),
    };
    s.push_str(&time_chart(
        "Throughput and errors per second",
        x_max,
        &[requests, errors],
        &r.chaos_windows,
        num,
    ));
    let per_second = |name, color, f: fn(&super::TimelineSecond) -> u64| Series {
        name,
        color,
        points: r
            .timeline
            .iter()
            .map(|b| (at(b), Some(f(b) as f64)))
            .collect(),
    };
    s.push_str(&time_chart(
        "Saga outcomes per second",
        x_max,
        &[
            per_second("confirmed", outcome_color("CONFIRMED"), |b| {
                b.orders_confirmed
            }),
            per_second("rejected", outcome_color("REJECTED"), |b| b.orders_rejected),
            per_second("cancelled", outcome_color("CANCELLED"), |b| {
                b.orders_cancelled
            }),
        ],
        &r.chaos_windows,
        num,
    ));
    let bars: Vec<(String, u64, &str)> = r
        .outcomes
        .iter()
        .map(|(k, v)| (k.clone(), *v, outcome_color(k)))
        .collect();
    s.push_str(&bar_chart("Saga outcomes (orders)", &bars));

    // Endpoints.
    let _ = write!(s, "<h2>Endpoints</h2>");
    for (phase, stats) in &r.phases {
        let _ = write!(
            s,
            "<h3>phase {}</h3><table><tr><th>endpoint</th><th>requests</th><th>ok</th><th>errors</th><th>errors by status</th><th>p50</th><th>p95</th><th>p99</th><th>max</th></tr>",
            escape(phase)
        );
        let us = |v: Option<u64>| v.map_or("-".to_string(), |v| format_micros(v as f64));
        for (name, e) in &stats.endpoints {
            let by_status: Vec<String> = e
                .errors_by_status
                .iter()
                .map(|(k, v)| format!("{k}: {v}"))
                .collect();
            let _ = write!(
                s,
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                escape(name),
                e.count,
                e.ok,
                e.errors,
                escape(&by_status.join(", ")),
                us(e.latency.p50_us),
                us(e.latency.p95_us),
                us(e.latency.p99_us),
                us(e.latency.max_us)
            );
        }
        if let Some(saga) = &stats.saga_completion {
            let _ = write!(
                s,
                "<tr><td>saga completion</td><td>{}</td><td></td><td></td><td></td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                saga.count,
                us(saga.p50_us),
                us(saga.p95_us),
                us(saga.p99_us),
                us(saga.max_us)
            );
        }
        s.push_str("</table>");
    }
    s.push_str("</body></html>\n");
    s
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
