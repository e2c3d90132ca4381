//! `junit.xml`: one test case per SLO (suite `slo`) and per invariant (suite `invariants`), with a
//! `<failure>` on each that did not hold, so CI systems show them as tests.

use std::fmt::Write;

use super::RunReport;

/// Violations written into an invariant's failure body; the rest are counted.
const VIOLATIONS_SHOWN: usize = 20;

/// Escapes text for XML attributes and content, and drops the characters XML 1.0 cannot carry.
pub(super) fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            // Line breaks in attributes would be normalized to spaces by parsers; keep them.
            '\n' => out.push_str("&#10;"),
            '\r' => out.push_str("&#13;"),
            '\t' => out.push_str("&#9;"),
            c if (c as u32) < 0x20 || c == '\u{FFFE}' || c == '\u{FFFF}' => out.push('\u{FFFD}'),
            c => out.push(c),
        }
    }
    out
}

pub(super) fn render(r: &RunReport) -> String {
    let mut s = String::new();
    let slo_failures = r.failed_slos().count();
    let inv_failures = r.failed_invariants().count();
    let _ = writeln!(s, r#"<?xml version="1.0" encoding="UTF-8"?>"#);
    let _ = writeln!(
        s,
        r#"<testsuites name="{}" tests="{}" failures="{}" time="{:.3}">"#,
        escape(&format!("harness {} {}", r.scenario.name, r.run_id)),
        r.slos.len() + r.invariants.len(),
        slo_failures + inv_failures,
        r.duration_s
    );

    let _ = writeln!(
        s,
        r#"  <testsuite name="slo" tests="{}" failures="{slo_failures}" errors="0" skipped="0" timestamp="{}">"#,
        r.slos.len(),
        escape(&r.started_at)
    );
    for v in &r.slos {
        let _ = write!(
            s,
            r#"    <testcase classname="{}.slo" name="{}" time="0">"#,
            escape(&r.scenario.name),
            escape(&v.name)
        );
        if v.held {
            let _ = writeln!(
                s,
                "<system-out>{}</system-out></testcase>",
                escape(&v.detail)
            );
        } else {
            let message = format!(
                "{}: measured {} against {}",
                v.name,
                v.measured_display(),
                v.target_display()
            );
            let _ = writeln!(
                s,
                r#"<failure message="{}" type="slo">{}</failure></testcase>"#,
                escape(&message),
                escape(&v.detail)
            );
        }
    }
    let _ = writeln!(s, "  </testsuite>");

    let _ = writeln!(
        s,
        r#"  <testsuite name="invariants" tests="{}" failures="{inv_failures}" errors="0" skipped="0" timestamp="{}">"#,
        r.invariants.len(),
        escape(&r.started_at)
    );
    for v in &r.invariants {
        let _ = write!(
            s,
            r#"    <testcase classname="{}.invariant" name="{}" time="0">"#,
            escape(&r.scenario.name),
            v.name
        );
        if v.held {
            let _ = writeln!(
                s,
                "<system-out>{}</system-out></testcase>",
                escape(&v.summary)
            );
        } else {
            let mut body = String::new();
            for x in v.violations.iter().take(VIOLATIONS_SHOWN) {
                let json = serde_json::to_string(x).unwrap_or_else(|_| x.details.clone());
                let _ = writeln!(body, "{json}");
            }
            if v.violations.len() > VIOLATIONS_SHOWN {
                let _ = writeln!(
                    body,
                    "... and {} more (see report.json)",
                    v.violations.len() - VIOLATIONS_SHOWN
                );
            }
            let _ = writeln!(
                s,
                r#"<failure message="{}" type="invariant">{}</failure></testcase>"#,
                escape(&format!("{}: {}", v.name, v.summary)),
                escape(&body)
            );
        }
    }
    let _ = writeln!(s, "  </testsuite>");
    let _ = writeln!(s, "</testsuites>");
    s
}

#[cfg(test)]
mod tests {
    use super::escape;

    #[test]
    fn xml_special_and_control_characters_are_escaped() {
        assert_eq!(
            escape(r#"a<b & "c" 'd'> p99 <= 1s"#),
            "a&lt;b &amp; &quot;c&quot; &apos;d&apos;&gt; p99 &lt;= 1s"
        );
        assert_eq!(escape("x\u{1}y\nz"), "x\u{FFFD}y&#10;z");
    }
}
