//! The gateway's circuit breakers as a run saw them: every state change, read from the scraped
//! `gateway_breaker_transitions_total{service,from,to}` (or, from a gateway without that counter,
//! from the changes of `gateway_breaker_state{service}`: 0 closed, 1 open, 2 half-open).
//!
//! A scrape shows what changed since the one before, so a transition is placed at the scrape
//! that first showed it: it happened within one scrape interval before. Transitions before the
//! first scrape of the run (start-up, the steady-state probe) are not the load's and are left
//! out. A counter that first shows up after the run's first scrape was created by its first
//! transition (a gateway that does not export it at zero from the start), so its first value
//! counts. A counter that went down means the gateway restarted; its new value counts as new
//! transitions.

use serde::{Deserialize, Serialize};

use crate::telemetry::scrape::{PROCESS_LABEL, SERVICE_LABEL, Series};

/// The counter of state changes, by `service`, `from` and `to`.
pub const TRANSITIONS_METRIC: &str = "gateway_breaker_transitions_total";
/// The state gauge, by `service`: 0 closed, 1 open, 2 half-open.
pub const STATE_METRIC: &str = "gateway_breaker_state";

/// One state change of one service's breaker.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BreakerTransition {
    /// The scrape that first showed it, in seconds since the load started.
    pub at_s: f64,
    /// The upstream service whose breaker changed.
    pub service: String,
    /// `closed`, `open` or `half_open`.
    pub from: String,
    pub to: String,
    /// How many times it changed so between two scrapes (usually 1).
    pub count: u64,
    /// The gateway instance (`gateway#1`).
    pub process: String,
}

impl BreakerTransition {
    /// `payment closed → open`, `payment open → half-open (×2)`.
    pub fn describe(&self) -> String {
        format!("{} {}", self.service, self.change())
    }

    /// `closed → open`, `open → half-open (×2)`.
    pub fn change(&self) -> String {
        let times = if self.count > 1 {
            format!(" (×{})", self.count)
        } else {
            String::new()
        };
        format!(
            "{} → {}{times}",
            state_name(&self.from),
            state_name(&self.to)
        )
    }

    /// What the breaker did, in one word: `opened`, `half-open` or `closed`.
    pub fn verb(&self) -> &'static str {
        match self.to.as_str() {
            "open" => "opened",
            "half_open" => "half-open",
            "closed" => "closed",
            _ => "changed",
        }
    }
}

/// A state as people write it: `half_open` is `half-open`.
pub fn state_name(state: &str) -> String {
    state.replace('_', "-")
}

/// The transitions in `series`, in time order.
pub fn transitions(series: &[Series]) -> Vec<BreakerTransition> {
    let counted: Vec<&Series> = series
        .iter()
        .filter(|s| s.name == TRANSITIONS_METRIC)
        .collect();
    let mut found = if counted.is_empty() {
        from_states(series)
    } else {
        let first_scrape = series
            .iter()
            .filter_map(|s| s.points.first().map(|p| p.0))
            .fold(f64::INFINITY, f64::min);
        counted
            .into_iter()
            .flat_map(|s| from_counter(s, first_scrape))
            .collect()
    };
    found.sort_by(|a, b| {
        a.at_s
            .total_cmp(&b.at_s)
            .then_with(|| a.service.cmp(&b.service))
            .then_with(|| rank(a).cmp(&rank(b)))
    });
    found
}

/// Within one scrape the order is unknown; this is the order a breaker goes through them.
fn rank(t: &BreakerTransition) -> u8 {
    match (t.from.as_str(), t.to.as_str()) {
        ("closed", "open") => 0,
        ("open", "half_open") => 1,
        ("half_open", "open") => 2,
        ("half_open", "closed") => 3,
        _ => 4,
    }
}

fn label(s: &Series, name: &str) -> String {
    s.labels.get(name).cloned().unwrap_or_default()
}

fn from_counter(s: &Series, first_scrape: f64) -> Vec<BreakerTransition> {
    let mut out = Vec::new();
    let Some(&(first_at, first)) = s.points.first() else {
        return out;
    };
    // Seen from the run's first scrape on: its first value predates the load. Appeared later:
    // it was created at 0 by the transitions its first value counts.
    let appeared_later = first_at > first_scrape + 0.5;
    let (mut before, rest) = if appeared_later {
        (0.0, &s.points[..])
    } else {
        (first, &s.points[1..])
    };
    for &(at_s, value) in rest {
        let added = if value >= before {
            value - before
        } else {
            value
        };
        before = value;
        if added >= 0.5 {
            out.push(BreakerTransition {
                at_s,
                service: label(s, SERVICE_LABEL),
                from: label(s, "from"),
                to: label(s, "to"),
                count: added.round() as u64,
                process: label(s, PROCESS_LABEL),
            });
        }
    }
    out
}

fn from_states(series: &[Series]) -> Vec<BreakerTransition> {
    let state = |v: f64| match v.round() as i64 {
        0 => "closed",
        1 => "open",
        2 => "half_open",
        _ => "unknown",
    };
    let mut out = Vec::new();
    for s in series.iter().filter(|s| s.name == STATE_METRIC) {
        for pair in s.points.windows(2) {
            let [(_, was), (at_s, now)] = pair else {
                continue;
            };
            if state(*was) != state(*now) {
                out.push(BreakerTransition {
                    at_s: *at_s,
                    service: label(s, SERVICE_LABEL),
                    from: state(*was).into(),
                    to: state(*now).into(),
                    count: 1,
                    process: label(s, PROCESS_LABEL),
                });
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {

    use super::*;

    fn series(name: &str, labels: &[(&str, &str)], points: &[(f64, f64)]) -> Series {
        Series::of(name, labels, points)
    }

    fn counter(from: &str, to: &str, points: &[(f64, f64)]) -> Series {
        series(
            TRANSITIONS_METRIC,
            &[
                ("service", "payment"),
                ("from", from),
                ("to", to),
                ("process", "gateway#1"),
            ],
            points,
        )
    }

    #[test]
    fn each_increase_of_the_counter_is_a_transition_at_the_scrape_that_showed_it() {
        let found = transitions(&[
            counter(
                "half_open",
                "closed",
                &[(0.0, 0.0), (9.0, 0.0), (10.0, 1.0)],
            ),
            counter("closed", "open", &[(0.0, 1.0), (3.0, 1.0), (4.0, 2.0)]),
            counter("open", "half_open", &[(0.0, 0.0), (8.0, 0.0), (9.0, 2.0)]),
            // Not a breaker metric.
            series("gateway_requests_total", &[], &[(0.0, 0.0), (1.0, 5.0)]),
        ]);
        let shown: Vec<(f64, String)> = found.iter().map(|t| (t.at_s, t.describe())).collect();
        assert_eq!(
            shown,
            [
                (4.0, "payment closed → open".to_string()),
                (9.0, "payment open → half-open (×2)".to_string()),
                (10.0, "payment half-open → closed".to_string()),
            ],
            "the one before the first scrape is not the load's"
        );
        assert_eq!(found[0].process, "gateway#1");
        assert_eq!(found[0].verb(), "opened");
    }

    #[test]
    fn a_counter_that_appears_mid_run_counts_its_first_value() {
        let found = transitions(&[
            counter("closed", "open", &[(12.0, 1.0), (13.0, 1.0)]),
            counter("open", "half_open", &[(0.0, 0.0), (14.0, 1.0)]),
        ]);
        let shown: Vec<(f64, String)> = found.iter().map(|t| (t.at_s, t.describe())).collect();
        assert_eq!(
            shown,
            [
                (12.0, "payment closed → open".to_string()),
                (14.0, "payment open → half-open".to_string()),
            ]
        );
    }

    #[test]
    fn a_restarted_gateway_s_counter_counts_from_zero_again() {
        let found = transitions(&[counter(
            "closed",
            "open",
            &[(0.0, 3.0), (5.0, 3.0), (6.0, 1.0)],
        )]);
        assert_eq!(found.len(), 1);
        assert_eq!((found[0].at_s, found[0].count), (6.0, 1));
    }

    #[test]
    fn without_the_counter_the_state_gauge_s_changes_are_the_transitions() {
        let found = transitions(&[series(
            STATE_METRIC,
            &[("service", "inventory")],
            &[(0.0, 0.0), (1.0, 1.0), (2.0, 1.0), (3.0, 2.0), (4.0, 0.0)],
        )]);
        let shown: Vec<String> = found.iter().map(BreakerTransition::describe).collect();
        assert_eq!(
            shown,
            [
                "inventory closed → open",
                "inventory open → half-open",
                "inventory half-open → closed"
            ]
        );
    }
}
