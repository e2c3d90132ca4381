//! What the gateway did to its rotation and its bulkheads during a run, read from the scraped
//! metrics, and every gateway event (these and the [`breaker`](super::breaker) transitions) as
//! one time-ordered list for the charts' marks and the reports' "Gateway events" tables.
//!
//! - Rotation changes: the active health checks' verdicts, from the gauge
//!   `gateway_upstream_healthy{service,upstream}` going 1 → 0 (out of rotation) and 0 → 1 (back
//!   in rotation). `gateway_health_check_ejections_total{service,upstream}` counts the times an
//!   instance was taken out, so it shows how many ejections a change stands for, and an instance
//!   taken out and put back between two scrapes, which the gauge alone does not show.
//! - Bulkhead saturation: a run of scrapes in which `gateway_bulkhead_rejected_total{service}`
//!   went up, from the first of them to the scrape where it stopped going up.
//!
//! As for the breakers, an event is placed at the scrape that first showed it (it happened
//! within one scrape interval before); what happened before the run's first scrape is left out;
//! a counter that first shows up after the run's first scrape counts its first value, and one
//! that went down (a restarted gateway) counts its new value.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::breaker::BreakerTransition;
use crate::telemetry::scrape::{PROCESS_LABEL, SERVICE_LABEL, Series};

/// The health checks' verdict on an instance, by `service` and `upstream`: 1 in rotation.
pub const HEALTHY_METRIC: &str = "gateway_upstream_healthy";
/// Times the health checks took an instance out of rotation, by `service` and `upstream`.
pub const EJECTIONS_METRIC: &str = "gateway_health_check_ejections_total";
/// Calls refused because the service's bulkhead was full, by `service`.
pub const BULKHEAD_REJECTED_METRIC: &str = "gateway_bulkhead_rejected_total";
/// The label naming the instance in the gateway's per-instance metrics (`order#2`).
const UPSTREAM_LABEL: &str = "upstream";

/// One change of an instance's place in the gateway's rotation, as its health checks decided.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RotationChange {
    /// The scrape that first showed it, in seconds since the load started.
    pub at_s: f64,
    pub service: String,
    /// The instance (`order#2`).
    pub upstream: String,
    /// Where the instance was at that scrape: `false` out of rotation, `true` in it.
    pub in_rotation: bool,
    /// Times the health checks took it out since the scrape before (0 when it only came back).
    pub ejections: u64,
    /// The gateway instance (`gateway#1`).
    pub process: String,
}

impl RotationChange {
    /// `out of rotation`, `back in rotation`, `out of and back in rotation (×2)`.
    pub fn change(&self) -> String {
        let times = if self.ejections > 1 {
            format!(" (×{})", self.ejections)
        } else {
            String::new()
        };
        match (self.in_rotation, self.ejections) {
            (false, _) => format!("out of rotation{times}"),
            (true, 0) => "back in rotation".into(),
            (true, _) => format!("out of and back in rotation{times}"),
        }
    }
}

/// A time the bulkhead of one upstream service refused calls, scrape after scrape.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BulkheadSaturation {
    pub service: String,
    /// The first scrape that showed refusals, in seconds since the load started.
    pub from_s: f64,
    /// The first scrape after it that showed none; absent when refusals went on to the last.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub until_s: Option<f64>,
    /// Calls refused meanwhile.
    pub rejected: u64,
    /// The gateway instance (`gateway#1`).
    pub process: String,
}

/// What kind of gateway event, for its colour and its word.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    BreakerOpened,
    BreakerHalfOpen,
    BreakerClosed,
    OutOfRotation,
    BackInRotation,
    BulkheadFull,
    BulkheadFree,
}

impl EventKind {
    /// The pattern the event is of: `breaker`, `health check`, `bulkhead`.
    pub fn pattern(self) -> &'static str {
        match self {
            Self::BreakerOpened | Self::BreakerHalfOpen | Self::BreakerClosed => "breaker",
            Self::OutOfRotation | Self::BackInRotation => "health check",
            Self::BulkheadFull | Self::BulkheadFree => "bulkhead",
        }
    }
}

/// One gateway event as the reports show it.
#[derive(Debug, Clone, PartialEq)]
pub struct GatewayEvent {
    pub at_s: f64,
    pub kind: EventKind,
    /// The upstream service.
    pub service: String,
    /// What changed, without the service: `closed → open`, `order#2 out of rotation`,
    /// `full (37 calls refused until 14s)`.
    pub change: String,
    /// A few words for the chart: `payment opened`, `order#2 out`, `payment bulkhead full`.
    pub label: String,
    /// The gateway instance (`gateway#1`).
    pub process: String,
}

impl GatewayEvent {
    /// `payment closed → open`.
    pub fn describe(&self) -> String {
        format!("{} {}", self.service, self.change)
    }
}

/// Every event of the three lists, in time order (breaker, then health check, then bulkhead
/// within one scrape, each list keeping its own order).
pub fn events(
    breaker: &[BreakerTransition],
    rotation: &[RotationChange],
    bulkhead: &[BulkheadSaturation],
) -> Vec<GatewayEvent> {
    let mut all: Vec<GatewayEvent> = breaker.iter().map(breaker_event).collect();
    all.extend(rotation.iter().map(|c| GatewayEvent {
        at_s: c.at_s,
        kind: if c.in_rotation {
            EventKind::BackInRotation
        } else {
            EventKind::OutOfRotation
        },
        service: c.service.clone(),
        change: format!("{} {}", c.upstream, c.change()),
        label: format!(
            "{} {}",
            c.upstream,
            if c.in_rotation { "in" } else { "out" }
        ),
        process: c.process.clone(),
    }));
    for b in bulkhead {
        let until = b
            .until_s
            .map_or_else(|| " to the end".to_string(), |u| format!(" until {u:.0}s"));
        all.push(GatewayEvent {
            at_s: b.from_s,
            kind: EventKind::BulkheadFull,
            service: b.service.clone(),
            change: format!("bulkhead full ({} calls refused{until})", b.rejected),
            label: format!("{} bulkhead full", b.service),
            process: b.process.clone(),
        });
        if let Some(until_s) = b.until_s {
            all.push(GatewayEvent {
                at_s: until_s,
                kind: EventKind::BulkheadFree,
                service: b.service.clone(),
                change: "bulkhead refusing no more".into(),
                label: format!("{} bulkhead ok", b.service),
                process: b.process.clone(),
            });
        }
    }
    // Stable: within one scrape, the lists' order.
    all.sort_by(|a, b| a.at_s.total_cmp(&b.at_s));
    all
}

fn breaker_event(t: &BreakerTransition) -> GatewayEvent {
    GatewayEvent {
        at_s: t.at_s,
        kind: match t.to.as_str() {
            "open" => EventKind::BreakerOpened,
            "half_open" => EventKind::BreakerHalfOpen,
            _ => EventKind::BreakerClosed,
        },
        service: t.service.clone(),
        change: format!("breaker {}", t.change()),
        label: format!("{} {}", t.service, t.verb()),
        process: t.process.clone(),
    }
}

fn label(s: &Series, name: &str) -> String {
    s.labels.get(name).cloned().unwrap_or_default()
}

/// The time of the run's first scrape: the earliest point of any series.
fn first_scrape(series: &[Series]) -> f64 {
    series
        .iter()
        .filter_map(|s| s.points.first().map(|p| p.0))
        .fold(f64::INFINITY, f64::min)
}

/// What a counter added at each of its scrapes after the run's first (see the module
/// documentation), zero included.
fn increases(s: &Series, first_scrape: f64) -> Vec<(f64, u64)> {
    let Some(&(first_at, first)) = s.points.first() else {
        return Vec::new();
    };
    let appeared_later = first_at > first_scrape + 0.5;
    let (mut before, rest) = if appeared_later {
        (0.0, &s.points[..])
    } else {
        (first, &s.points[1..])
    };
    rest.iter()
        .map(|&(at_s, value)| {
            let added = if value >= before {
                value - before
            } else {
                value
            };
            before = value;
            (at_s, added.round().max(0.0) as u64)
        })
        .collect()
}

/// The rotation changes in `series`, in time order.
pub fn rotation_changes(series: &[Series]) -> Vec<RotationChange> {
    let first = first_scrape(series);
    type Key = (String, String, String);
    let key = |s: &Series| -> Key {
        (
            label(s, PROCESS_LABEL),
            label(s, SERVICE_LABEL),
            label(s, UPSTREAM_LABEL),
        )
    };
    let ejections: BTreeMap<Key, Vec<(f64, u64)>> = series
        .iter()
        .filter(|s| s.name == EJECTIONS_METRIC)
        .map(|s| (key(s), increases(s, first)))
        .collect();
    let mut out = Vec::new();
    for s in series.iter().filter(|s| s.name == HEALTHY_METRIC) {
        let (process, service, upstream) = key(s);
        let ejected = ejections.get(&key(s));
        let ejected_at = |at: f64| {
            ejected
                .and_then(|e| e.iter().find(|(t, _)| (t - at).abs() < 1e-6))
                .map_or(0, |(_, n)| *n)
        };
        for pair in s.points.windows(2) {
            let [(_, was), (at_s, now)] = pair else {
                continue;
            };
            let (was_in, now_in) = (*was >= 0.5, *now >= 0.5);
            let n = ejected_at(*at_s);
            let ejections = match (was_in, now_in) {
                (true, false) => n.max(1),
                (false, true) => n,
                // Unchanged at the scrapes, but taken out (and put back) in between.
                _ if n > 0 => n,
                _ => continue,
            };
            out.push(RotationChange {
                at_s: *at_s,
                service: service.clone(),
                upstream: upstream.clone(),
                in_rotation: now_in,
                ejections,
                process: process.clone(),
            });
        }
    }
    out.sort_by(|a, b| {
        a.at_s
            .total_cmp(&b.at_s)
            .then_with(|| a.upstream.cmp(&b.upstream))
    });
    out
}

/// The bulkheads' saturations in `series`, in time order.
pub fn bulkhead_saturations(series: &[Series]) -> Vec<BulkheadSaturation> {
    let first = first_scrape(series);
    let mut out = Vec::new();
    for s in series.iter().filter(|s| s.name == BULKHEAD_REJECTED_METRIC) {
        let mut open: Option<BulkheadSaturation> = None;
        for (at_s, added) in increases(s, first) {
            if added == 0 {
                if let Some(mut sat) = open.take() {
                    sat.until_s = Some(at_s);
                    out.push(sat);
                }
            } else if let Some(sat) = &mut open {
                sat.rejected += added;
            } else {
                open = Some(BulkheadSaturation {
                    service: label(s, SERVICE_LABEL),
                    from_s: at_s,
                    until_s: None,
                    rejected: added,
                    process: label(s, PROCESS_LABEL),
                });
            }
        }
        out.extend(open);
    }
    out.sort_by(|a, b| {
        a.from_s
            .total_cmp(&b.from_s)
            .then_with(|| a.service.cmp(&b.service))
    });
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn series(name: &str, labels: &[(&str, &str)], points: &[(f64, f64)]) -> Series {
        Series::of(name, labels, points)
    }

    fn of_instance(name: &str, upstream: &str, points: &[(f64, f64)]) -> Series {
        series(
            name,
            &[
                ("service", "order"),
                ("upstream", upstream),
                ("process", "gateway#1"),
            ],
            points,
        )
    }

    #[test]
    fn the_health_checks_taking_an_instance_out_and_back_are_rotation_changes() {
        let found = rotation_changes(&[
            of_instance(
                HEALTHY_METRIC,
                "order#2",
                &[(0.0, 1.0), (1.0, 1.0), (2.0, 0.0), (3.0, 0.0), (4.0, 1.0)],
            ),
            of_instance(
                EJECTIONS_METRIC,
                "order#2",
                &[(0.0, 0.0), (1.0, 0.0), (2.0, 1.0), (3.0, 1.0), (4.0, 1.0)],
            ),
            // Never left the rotation.
            of_instance(HEALTHY_METRIC, "order#1", &[(0.0, 1.0), (4.0, 1.0)]),
        ]);
        let shown: Vec<(f64, String)> = found
            .iter()
            .map(|c| (c.at_s, format!("{} {}", c.upstream, c.change())))
            .collect();
        assert_eq!(
            shown,
            [
                (2.0, "order#2 out of rotation".to_string()),
                (4.0, "order#2 back in rotation".to_string()),
            ]
        );
        assert_eq!((found[0].ejections, found[1].ejections), (1, 0));
        assert_eq!(found[0].process, "gateway#1");
    }

    #[test]
    fn ejections_between_two_scrapes_that_both_saw_it_in_rotation_are_a_change_too() {
        let found = rotation_changes(&[
            of_instance(HEALTHY_METRIC, "order#2", &[(0.0, 1.0), (1.0, 1.0)]),
            // Already 3 before the run's first scrape: not the load's.
            of_instance(EJECTIONS_METRIC, "order#2", &[(0.0, 3.0), (1.0, 5.0)]),
        ]);
        assert_eq!(found.len(), 1);
        assert_eq!(
            (found[0].at_s, found[0].change()),
            (1.0, "out of and back in rotation (×2)".to_string())
        );
    }

    fn rejected(points: &[(f64, f64)]) -> Series {
        series(
            BULKHEAD_REJECTED_METRIC,
            &[("service", "payment"), ("process", "gateway#1")],
            points,
        )
    }

    #[test]
    fn a_bulkhead_is_saturated_from_the_first_scrape_with_refusals_to_the_first_without() {
        let found = bulkhead_saturations(&[rejected(&[
            (0.0, 2.0),
            (1.0, 2.0),
            (2.0, 7.0),
            (3.0, 10.0),
            (4.0, 10.0),
            (5.0, 10.0),
            (6.0, 11.0),
        ])]);
        assert_eq!(
            found,
            [
                BulkheadSaturation {
                    service: "payment".into(),
                    from_s: 2.0,
                    until_s: Some(4.0),
                    rejected: 8,
                    process: "gateway#1".into(),
                },
                // Still refusing at the last scrape.
                BulkheadSaturation {
                    service: "payment".into(),
                    from_s: 6.0,
                    until_s: None,
                    rejected: 1,
                    process: "gateway#1".into(),
                },
            ]
        );
    }

    #[test]
    fn a_restarted_gateway_s_refusals_count_from_zero_again() {
        let found = bulkhead_saturations(&[
            rejected(&[(0.0, 9.0), (1.0, 9.0), (2.0, 4.0), (3.0, 4.0)]),
            series("gateway_requests_total", &[], &[(0.0, 0.0), (3.0, 1.0)]),
        ]);
        assert_eq!(found.len(), 1);
        assert_eq!(
            (found[0].from_s, found[0].until_s, found[0].rejected),
            (2.0, Some(3.0), 4)
        );
    }

    #[test]
    fn every_event_in_one_time_ordered_list_with_its_kind() {
        let breaker = [BreakerTransition {
            at_s: 3.0,
            service: "payment".into(),
            from: "closed".into(),
            to: "open".into(),
            count: 1,
            process: "gateway#1".into(),
        }];
        let rotation = [RotationChange {
            at_s: 5.0,
            service: "order".into(),
            upstream: "order#2".into(),
            in_rotation: false,
            ejections: 1,
            process: "gateway#1".into(),
        }];
        let bulkhead = [BulkheadSaturation {
            service: "payment".into(),
            from_s: 2.0,
            until_s: Some(6.0),
            rejected: 37,
            process: "gateway#1".into(),
        }];
        let shown: Vec<(f64, EventKind, String)> = events(&breaker, &rotation, &bulkhead)
            .iter()
            .map(|e| (e.at_s, e.kind, e.describe()))
            .collect();
        assert_eq!(
            shown,
            [
                (
                    2.0,
                    EventKind::BulkheadFull,
                    "payment bulkhead full (37 calls refused until 6s)".to_string()
                ),
                (
                    3.0,
                    EventKind::BreakerOpened,
                    "payment breaker closed → open".to_string()
                ),
                (
                    5.0,
                    EventKind::OutOfRotation,
                    "order order#2 out of rotation".to_string()
                ),
                (
                    6.0,
                    EventKind::BulkheadFree,
                    "payment bulkhead refusing no more".to_string()
                ),
            ]
        );
        assert_eq!(EventKind::OutOfRotation.pattern(), "health check");
    }
}
