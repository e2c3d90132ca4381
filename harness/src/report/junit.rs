//! `junit.xml`: one test case per SLO (suite `slo`) and per invariant (suite `invariants`), with a
//! `<failure>` on each that did not hold, so CI systems show them as tests. [`Suites`] writes
//! them, for a run's report and for the comparison of a run's variants (a suite pair per
//! variant).
//!
//! An interrupted run proves nothing either way, and a CI job that was cancelled must not read
//! as a pass: its `junit.xml` has a suite `run` whose one test case, `completed`, is an
//! `<error>` saying how far the run got, and its SLOs and invariants are `<skipped>`, each with
//! what it measured (not judged).

use std::fmt::Write;

use super::sections::interruption_note;
use super::{Interruption, RunReport};
use crate::checks::InvariantVerdict;
use crate::slo::SloVerdict;

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
    let mut suites = Suites::default();
    if let Some(i) = &r.interruption {
        suites.interrupted(&r.scenario.name, i, &r.started_at);
        suites.not_judged(
            "slo",
            &format!("{}.slo", r.scenario.name),
            r.slos.iter().map(|v| {
                let held = if v.held { "held" } else { "did not hold" };
                let message = format!(
                    "{}: measured {} against {}, {held}",
                    v.name,
                    v.measured_display(),
                    v.target_display()
                );
                (v.name.clone(), message)
            }),
            &r.started_at,
        );
        suites.not_judged(
            "invariants",
            &format!("{}.invariant", r.scenario.name),
            r.invariants.iter().map(|v| {
                let held = if v.held { "held" } else { "did not hold" };
                (
                    v.name.to_string(),
                    format!("{}: {held}: {}", v.name, v.summary),
                )
            }),
            &r.started_at,
        );
        return suites.render(
            &format!("harness {} {}", r.scenario.name, r.run_id),
            r.duration_s,
        );
    }
    suites.slos("slo", &r.scenario.name, &r.slos, true, &r.started_at);
    suites.invariants("invariants", &r.scenario.name, &r.invariants, &r.started_at);
    suites.render(
        &format!("harness {} {}", r.scenario.name, r.run_id),
        r.duration_s,
    )
}

/// Test suites written one after the other, counted for the `<testsuites>` element around them.
#[derive(Default)]
pub(super) struct Suites {
    body: String,
    tests: usize,
    failures: usize,
    errors: usize,
    skipped: usize,
}

impl Suites {
    /// The whole document: the suites inside one `<testsuites name=...>`.
    pub(super) fn render(&self, name: &str, time_s: f64) -> String {
        let mut s = String::new();
        let _ = writeln!(s, r#"<?xml version="1.0" encoding="UTF-8"?>"#);
        let _ = writeln!(
            s,
            r#"<testsuites name="{}" tests="{}" failures="{}" errors="{}" skipped="{}" time="{time_s:.3}">"#,
            escape(name),
            self.tests,
            self.failures,
            self.errors,
            self.skipped,
        );
        s.push_str(&self.body);
        let _ = writeln!(s, "</testsuites>");
        s
    }

    /// The suite `run` of an interrupted run: one test case, `completed`, in error.
    fn interrupted(&mut self, prefix: &str, i: &Interruption, timestamp: &str) {
        let s = &mut self.body;
        let _ = writeln!(
            s,
            r#"  <testsuite name="run" tests="1" failures="0" errors="1" skipped="0" timestamp="{}">"#,
            escape(timestamp)
        );
        let _ = writeln!(
            s,
            r#"    <testcase classname="{}.run" name="completed" time="{:.3}"><error message="{}" type="interrupted">{}</error></testcase>"#,
            escape(prefix),
            i.load_s,
            escape(&format!("the run was interrupted: {}", i.describe())),
            escape(&interruption_note(i))
        );
        let _ = writeln!(s, "  </testsuite>");
        self.tests += 1;
        self.errors += 1;
    }

    /// One skipped test case per `(name, what it measured)`, in the suite `suite`: the verdicts
    /// of an interrupted run, reported and not judged.
    fn not_judged(
        &mut self,
        suite: &str,
        classname: &str,
        cases: impl Iterator<Item = (String, String)>,
        timestamp: &str,
    ) {
        let mut body = String::new();
        let mut n = 0;
        for (name, message) in cases {
            let _ = writeln!(
                body,
                r#"    <testcase classname="{}" name="{}" time="0"><skipped message="{}"/></testcase>"#,
                escape(classname),
                escape(&name),
                escape(&format!("not judged, the run was interrupted: {message}"))
            );
            n += 1;
        }
        let _ = writeln!(
            self.body,
            r#"  <testsuite name="{}" tests="{n}" failures="0" errors="0" skipped="{n}" timestamp="{}">"#,
            escape(suite),
            escape(timestamp)
        );
        self.body.push_str(&body);
        let _ = writeln!(self.body, "  </testsuite>");
        self.tests += n;
        self.skipped += n;
    }

    /// One test case per SLO, in the suite `suite`, classname `<prefix>.slo`. With `gated`
    /// false an SLO that did not hold is skipped with a message saying so instead of failed
    /// (its variant's SLOs are reported, not gated); one that held passes with a note.
    pub(super) fn slos(
        &mut self,
        suite: &str,
        prefix: &str,
        slos: &[SloVerdict],
        gated: bool,
        timestamp: &str,
    ) {
        let failures = if gated {
            slos.iter().filter(|v| !v.held).count()
        } else {
            0
        };
        let skipped = if gated {
            0
        } else {
            slos.iter().filter(|v| !v.held).count()
        };
        let s = &mut self.body;
        let _ = writeln!(
            s,
            r#"  <testsuite name="{}" tests="{}" failures="{failures}" errors="0" skipped="{skipped}" timestamp="{}">"#,
            escape(suite),
            slos.len(),
            escape(timestamp)
        );
        let note = if gated { "" } else { " (not gated)" };
        for v in slos {
            let _ = write!(
                s,
                r#"    <testcase classname="{}.slo" name="{}" time="0">"#,
                escape(prefix),
                escape(&v.name)
            );
            let message = format!(
                "{}: measured {} against {}",
                v.name,
                v.measured_display(),
                v.target_display()
            );
            if v.held {
                let _ = writeln!(
                    s,
                    "<system-out>{}</system-out></testcase>",
                    escape(&format!("{}{note}", v.detail))
                );
            } else if gated {
                let _ = writeln!(
                    s,
                    r#"<failure message="{}" type="slo">{}</failure></testcase>"#,
                    escape(&message),
                    escape(&v.detail)
                );
            } else {
                let _ = writeln!(
                    s,
                    r#"<skipped message="{}"/><system-out>{}</system-out></testcase>"#,
                    escape(&format!(
                        "not gated (gate = false): {message}; reported, not judged"
                    )),
                    escape(&v.detail)
                );
            }
        }
        let _ = writeln!(s, "  </testsuite>");
        self.tests += slos.len();
        self.failures += failures;
        self.skipped += skipped;
    }

    /// One test case per invariant, in the suite `suite`, classname `<prefix>.invariant`; an
    /// invariant always gates.
    pub(super) fn invariants(
        &mut self,
        suite: &str,
        prefix: &str,
        invariants: &[InvariantVerdict],
        timestamp: &str,
    ) {
        let failures = invariants.iter().filter(|v| !v.held).count();
        let s = &mut self.body;
        let _ = writeln!(
            s,
            r#"  <testsuite name="{}" tests="{}" failures="{failures}" errors="0" skipped="0" timestamp="{}">"#,
            escape(suite),
            invariants.len(),
            escape(timestamp)
        );
        for v in invariants {
            let _ = write!(
                s,
                r#"    <testcase classname="{}.invariant" name="{}" time="0">"#,
                escape(prefix),
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
        self.tests += invariants.len();
        self.failures += failures;
    }
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
