//! The comparison's `report.md`: the verdict, the variants, and per phase, per fault, per SLO and
//! per invariant a column for each variant, short enough for a PR comment.

use std::fmt::Write;

use super::{
    PHASE_NOTE, VariantsReport, confirmed_cell, endpoint_names, errors_cell, event_rows, gate_text,
    invariant_names, latencies_cell, phase_title, recovery_note, slo_cell, slo_names, verdict_text,
};
use crate::report::markdown::cell;

/// The sections, in order.
pub(super) fn render(r: &VariantsReport) -> String {
    let mut s = String::new();
    summary(&mut s, r);
    variants(&mut s, r);
    phases(&mut s, r);
    recovery(&mut s, r);
    gateway_events(&mut s, r);
    slos(&mut s, r);
    invariants(&mut s, r);
    s
}

// Writing to a String cannot fail, hence the `let _ = writeln!` throughout.

/// `| phase | | a | b |` and its rule.
fn header(s: &mut String, r: &VariantsReport, first: &str, second: Option<&str>) {
    let names: Vec<String> = r.variants.iter().map(|v| cell(&v.name)).collect();
    let lead = match second {
        Some(second) => format!("{first} | {second}"),
        None => first.to_string(),
    };
    let _ = writeln!(s, "| {lead} | {} |", names.join(" | "));
    let columns = names.len() + 1 + usize::from(second.is_some());
    let _ = writeln!(s, "|{}", "---|".repeat(columns));
}

fn summary(s: &mut String, r: &VariantsReport) {
    let mark = if r.passed() { "✅" } else { "❌" };
    let _ = writeln!(s, "## {mark} {}", cell(&r.headline()));
    if !r.scenario.description.is_empty() {
        let _ = writeln!(s, "\n> {}", cell(&r.scenario.description));
    }
    let _ = writeln!(
        s,
        "\nRun `{}` started {}: {} variants one after the other, each on a fresh environment \
         with the same load, chaos timeline, SLOs and checks. Each variant's full report is in \
         `variants/<name>/`.",
        r.run_id,
        r.started_at,
        r.variants.len()
    );
}

fn variants(s: &mut String, r: &VariantsReport) {
    let _ = writeln!(s, "\n### Variants\n");
    let _ = writeln!(
        s,
        "Each variant's keys go over `[environment.resilience]`: `{}`.\n",
        cell(&r.environment_resilience)
    );
    let _ = writeln!(
        s,
        "| variant | resilience | gates | SLOs held | invariants held | verdict | report |"
    );
    let _ = writeln!(s, "|---|---|---|---|---|---|---|");
    for v in &r.variants {
        let mark = if v.gated_verdict == crate::report::Verdict::Passed {
            "✅"
        } else {
            "❌"
        };
        let _ = writeln!(
            s,
            "| {} | `{}` | {} | {} of {} | {} of {} | {mark} {} | `variants/{}/report.md` |",
            cell(&v.name),
            cell(&v.resilience),
            gate_text(v),
            v.slos_held(),
            v.slos.len(),
            v.invariants_held(),
            v.invariants.len(),
            cell(&verdict_text(v)),
            cell(&v.name)
        );
    }
}

fn phases(s: &mut String, r: &VariantsReport) {
    let _ = writeln!(s, "\n### Per phase\n");
    let _ = writeln!(s, "{PHASE_NOTE}\n");
    header(s, r, "phase", Some(""));
    for p in &r.phases {
        let row = |s: &mut String, first: &str, what: &str, cells: Vec<String>| {
            let _ = writeln!(s, "| {first} | {what} | {} |", cells.join(" | "));
        };
        let title = format!("**{}**", cell(&phase_title(p)));
        row(
            s,
            &title,
            "errors",
            p.variants
                .iter()
                .map(|f| errors_cell(f.errors, f.error_rate))
                .collect(),
        );
        row(
            s,
            "",
            "shed",
            p.variants.iter().map(|f| f.shed.to_string()).collect(),
        );
        row(
            s,
            "",
            "confirmed orders/s",
            p.variants.iter().map(confirmed_cell).collect(),
        );
        for endpoint in endpoint_names(p) {
            row(
                s,
                "",
                &format!("{} p50 / p95 / p99", cell(endpoint)),
                p.variants
                    .iter()
                    .map(|f| latencies_cell(f.endpoints.get(endpoint)))
                    .collect(),
            );
        }
    }
}

fn recovery(s: &mut String, r: &VariantsReport) {
    if r.recovery.is_empty() {
        return;
    }
    let _ = writeln!(s, "\n### Time to recover\n");
    let _ = writeln!(s, "{}\n", recovery_note());
    header(s, r, "fault", None);
    for f in &r.recovery {
        let cells: Vec<String> = f
            .variants
            .iter()
            .map(|v| match v.healed_s {
                Some(healed) => format!("{} (healed at {healed:.1}s)", v.describe()),
                None => v.describe(),
            })
            .collect();
        let _ = writeln!(s, "| {} | {} |", cell(&f.fault), cells.join(" | "));
    }
}

fn gateway_events(s: &mut String, r: &VariantsReport) {
    let rows = event_rows(r);
    if rows.is_empty() {
        return;
    }
    let _ = writeln!(s, "\n### Gateway events\n");
    let _ = writeln!(s, "| variant | at | service | event |");
    let _ = writeln!(s, "|---|---|---|---|");
    for (variant, e) in rows {
        let _ = writeln!(
            s,
            "| {} | {:.0}s | {} | {} |",
            cell(variant),
            e.at_s,
            cell(&e.service),
            cell(&e.change)
        );
    }
}

fn slos(s: &mut String, r: &VariantsReport) {
    let names = slo_names(r);
    if names.is_empty() {
        return;
    }
    let _ = writeln!(s, "\n### SLOs\n");
    header(s, r, "SLO", None);
    for name in names {
        let cells: Vec<String> = r
            .variants
            .iter()
            .map(|v| match slo_cell(v, name) {
                Some((true, text)) => format!("✅ {}", cell(&text)),
                Some((false, text)) => format!("❌ {}", cell(&text)),
                None => "-".into(),
            })
            .collect();
        let _ = writeln!(s, "| {} | {} |", cell(name), cells.join(" | "));
    }
}

fn invariants(s: &mut String, r: &VariantsReport) {
    let names = invariant_names(r);
    if names.is_empty() {
        return;
    }
    let _ = writeln!(s, "\n### Invariants\n");
    header(s, r, "invariant", None);
    for name in names {
        let cells: Vec<String> = r
            .variants
            .iter()
            .map(|v| match v.invariants.iter().find(|i| i.name == name) {
                Some(i) if i.held => "✅ held".to_string(),
                Some(i) => format!("❌ {}", cell(&i.summary)),
                None => "-".into(),
            })
            .collect();
        let _ = writeln!(s, "| {name} | {} |", cells.join(" | "));
    }
}
