//! `report.md`: the verdict, SLO and invariant tables and outcomes, short enough for a PR
//! comment.

use std::fmt::Write;

use super::RunReport;
use crate::slo::format_micros;

/// Violations listed per failed invariant; the rest are counted.
const VIOLATIONS_SHOWN: usize = 5;

/// Makes text safe inside a table cell: no pipes breaking the row, no line breaks, no HTML.
fn cell(text: &str) -> String {
    text.replace('\\', "\\\\")
        .replace('|', "\\|")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace(['\n', '\r'], " ")
}

pub(super) fn render(r: &RunReport) -> String {
    let mut s = String::new();
    let mark = if r.passed() { "✅" } else { "❌" };
    // Writing to a String cannot fail.
    let _ = writeln!(s, "## {mark} {}", cell(&r.headline()));
    let _ = writeln!(s);
    let _ = writeln!(
        s,
        "Run `{}` started {} for {:.1}s on the {} backend ({}).",
        r.run_id,
        r.started_at,
        r.duration_s,
        r.environment.backend,
        r.environment
            .instances
            .iter()
            .map(|(k, v)| format!("{k} ×{v}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    if !r.scenario.description.is_empty() {
        let _ = writeln!(s);
        let _ = writeln!(s, "> {}", cell(&r.scenario.description));
    }

    let _ = writeln!(s, "\n### SLOs\n");
    if r.slos.is_empty() {
        let _ = writeln!(s, "The scenario sets no SLO.");
    } else {
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

    if let Some(c) = &r.capacity {
        let _ = writeln!(s, "\n### Capacity\n");
        let _ = writeln!(s, "{}\n", cell(&c.summary()));
        let _ = writeln!(s, "| {} |", crate::capacity::TABLE_HEADERS.join(" | "));
        let _ = writeln!(
            s,
            "|{}",
            "---|".repeat(crate::capacity::TABLE_HEADERS.len())
        );
        for step in &c.steps {
            let cells: Vec<String> = step.cells(c.knee).iter().map(|c| cell(c)).collect();
            let _ = writeln!(s, "| {} |", cells.join(" | "));
        }
    }

    if !r.chaos_windows.is_empty() {
        let _ = writeln!(s, "\n### Chaos timeline\n");
        let _ = writeln!(
            s,
            "| fault | target | acted on | applied | healed | planned |"
        );
        let _ = writeln!(s, "|---|---|---|---|---|---|");
        for w in &r.chaos_windows {
            let _ = writeln!(
                s,
                "| {} | {} | {} | {:.1}s | {:.1}s | {:.0}s..{:.0}s |",
                cell(&w.label),
                cell(&w.target),
                cell(&w.affected.join(", ")),
                w.start_s,
                w.end_s,
                w.planned_start_s,
                w.planned_end_s
            );
        }
    }

    let _ = writeln!(s, "\n### Invariants\n");
    if r.invariants.is_empty() {
        let _ = writeln!(s, "No invariant was checked.");
    } else {
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
                let subject = serde_json::to_value(x)
                    .ok()
                    .and_then(|j| j.as_object().cloned())
                    .map(|o| {
                        o.iter()
                            .filter(|(k, _)| !matches!(k.as_str(), "kind" | "details" | "subject"))
                            .map(|(k, v)| {
                                format!("{k} {}", v.as_str().map_or(v.to_string(), str::to_string))
                            })
                            .collect::<Vec<_>>()
                            .join(", ")
                    })
                    .unwrap_or_default();
                let _ = writeln!(s, "- `{}` {}: {}", x.kind, cell(&subject), cell(&x.details));
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

    let _ = writeln!(s, "\n### Outcomes\n");
    if r.outcomes.is_empty() {
        let _ = writeln!(s, "No order reached an outcome.");
    } else {
        let _ = writeln!(s, "| order status | count |");
        let _ = writeln!(s, "|---|---|");
        for (status, n) in &r.outcomes {
            let _ = writeln!(s, "| {} | {n} |", cell(status));
        }
    }

    if let Some(all) = r.phases.get(crate::metrics::ALL) {
        let _ = writeln!(s, "\n### Endpoints\n");
        let _ = writeln!(
            s,
            "| endpoint | requests | errors | p50 | p95 | p99 | max |"
        );
        let _ = writeln!(s, "|---|---|---|---|---|---|---|");
        let us = |v: Option<u64>| v.map_or("-".to_string(), |v| format_micros(v as f64));
        for (name, e) in &all.endpoints {
            let _ = writeln!(
                s,
                "| {} | {} | {} | {} | {} | {} | {} |",
                cell(name),
                e.count,
                e.errors,
                us(e.latency.p50_us),
                us(e.latency.p95_us),
                us(e.latency.p99_us),
                us(e.latency.max_us)
            );
        }
        if let Some(saga) = &all.saga_completion {
            let _ = writeln!(
                s,
                "| saga completion | {} | - | {} | {} | {} | {} |",
                saga.count,
                us(saga.p50_us),
                us(saga.p95_us),
                us(saga.p99_us),
                us(saga.max_us)
            );
        }
    }
    s
}
