//! The scraped metrics a report draws: a handful of time series chosen for what they say about
//! a run (queues in front of each hop, who is busy, what is in flight), plus one chart per
//! metric SLO, built from what the [`Scraper`](super::scrape::Scraper) collected.
//!
//! Gauges that every instance of a service reads from the service's shared database (outbox
//! backlog, sagas in flight) are combined with `max` per service, never summed; per-instance
//! counters are turned into rates per instance.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::scrape::{Collected, ScrapeStats, Selector, Series, rate};

/// Scraped metrics in `report.json`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct MetricsReport {
    /// Seconds between scrapes.
    pub interval_s: f64,
    /// Per process: scrapes attempted, failed, and the last failure.
    pub targets: BTreeMap<String, TargetStats>,
    /// The charts, in the order the report shows them.
    pub charts: Vec<MetricChart>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TargetStats {
    pub scrapes: u64,
    pub failures: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
}

/// One chart: a few named series over the run's seconds.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct MetricChart {
    pub title: String,
    /// How the series were computed, in PromQL terms, for a reader who wants the same query in
    /// their own Prometheus.
    pub query: String,
    /// `messages`, `seconds`, `per_second` or `value`.
    pub unit: String,
    pub series: Vec<ChartSeries>,
}

/// One line of a chart: `(seconds since the load started, value)` points.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ChartSeries {
    pub name: String,
    pub points: Vec<(f64, f64)>,
}

impl ChartSeries {
    /// The highest value and when it was seen.
    pub fn peak(&self) -> Option<(f64, f64)> {
        self.points
            .iter()
            .copied()
            .reduce(|a, b| if b.1 > a.1 { b } else { a })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Combine {
    Sum,
    Max,
}

/// What a chart draws: series named `metric` whose labels pass `filter`, each turned into a rate
/// first when `per_second`, grouped by the label `by`, combined per scrape.
struct Spec {
    title: &'static str,
    query: &'static str,
    unit: &'static str,
    metric: &'static str,
    filter: fn(&BTreeMap<String, String>) -> bool,
    by: &'static str,
    per_second: bool,
    combine: Combine,
}

fn any(_: &BTreeMap<String, String>) -> bool {
    true
}

/// Requests the services serve to clients, not to the scraper or health checks.
fn client_route(labels: &BTreeMap<String, String>) -> bool {
    labels
        .get("route")
        .is_some_and(|r| r != "/metrics" && !r.starts_with("/health"))
}

const CHARTS: &[Spec] = &[
    Spec {
        title: "Requests per second by instance",
        query: "sum by (process) (rate(http_server_request_duration_seconds_count{route!~\"/metrics|/health.*\"}))",
        unit: "per_second",
        metric: "http_server_request_duration_seconds_count",
        filter: client_route,
        by: "process",
        per_second: true,
        combine: Combine::Sum,
    },
    Spec {
        title: "Outbox pending messages by service",
        query: "max by (service) (outbox_pending_messages)",
        unit: "messages",
        metric: "outbox_pending_messages",
        filter: any,
        by: "service",
        per_second: false,
        combine: Combine::Max,
    },
    Spec {
        title: "Oldest pending outbox row by service",
        query: "max by (service) (outbox_oldest_pending_age_seconds)",
        unit: "seconds",
        metric: "outbox_oldest_pending_age_seconds",
        filter: any,
        by: "service",
        per_second: false,
        combine: Combine::Max,
    },
    Spec {
        title: "Consumer lag by consumer group",
        query: "sum by (group) (kafka_consumer_lag_messages)",
        unit: "messages",
        metric: "kafka_consumer_lag_messages",
        filter: any,
        by: "group",
        per_second: false,
        combine: Combine::Sum,
    },
    Spec {
        title: "Sagas in flight",
        query: "max by (service) (saga_in_flight)",
        unit: "value",
        metric: "saga_in_flight",
        filter: any,
        by: "service",
        per_second: false,
        combine: Combine::Max,
    },
    Spec {
        title: "Gateway attempts per second by upstream",
        query: "sum by (upstream) (rate(gateway_upstream_requests_total))",
        unit: "per_second",
        metric: "gateway_upstream_requests_total",
        filter: any,
        by: "upstream",
        per_second: true,
        combine: Combine::Sum,
    },
];

/// The report's metrics: the standard charts, then one per metric SLO selector (summed over
/// the series it matches, as the SLO judges it).
pub fn metrics_report(
    collected: &Collected,
    interval_s: f64,
    slo_selectors: &[String],
) -> MetricsReport {
    let mut charts: Vec<MetricChart> = CHARTS
        .iter()
        .map(|spec| chart(spec, &collected.series))
        .filter(|c| !c.series.is_empty())
        .collect();
    let mut seen = std::collections::BTreeSet::new();
    for text in slo_selectors {
        if !seen.insert(text.clone()) {
            continue;
        }
        let Ok(selector) = text.parse::<Selector>() else {
            continue;
        };
        let points = Series::select(&collected.series, &selector);
        charts.push(MetricChart {
            title: format!("SLO metric {text}"),
            query: format!("sum({text})"),
            unit: "value".into(),
            series: vec![ChartSeries {
                name: text.clone(),
                points,
            }],
        });
    }
    MetricsReport {
        interval_s,
        targets: targets(&collected.stats),
        charts,
    }
}

fn targets(stats: &ScrapeStats) -> BTreeMap<String, TargetStats> {
    stats
        .scrapes
        .iter()
        .map(|(process, scrapes)| {
            (
                process.clone(),
                TargetStats {
                    scrapes: *scrapes,
                    failures: stats.failures.get(process).copied().unwrap_or(0),
                    last_error: stats.last_errors.get(process).cloned(),
                },
            )
        })
        .collect()
}

fn chart(spec: &Spec, all: &[Series]) -> MetricChart {
    // group → time → (sum over the group's series, or their max)
    let mut groups: BTreeMap<String, BTreeMap<u64, f64>> = BTreeMap::new();
    for series in all
        .iter()
        .filter(|s| s.name == spec.metric && (spec.filter)(&s.labels))
    {
        let group = series
            .labels
            .get(spec.by)
            .cloned()
            .unwrap_or_else(|| "-".to_string());
        let points = if spec.per_second {
            rate(&series.points)
        } else {
            series.points.clone()
        };
        let slot = groups.entry(group).or_default();
        for (t, v) in points {
            // Points of one scrape share their time exactly; the bits make an ordered key.
            let entry = slot.entry(t.to_bits()).or_insert(match spec.combine {
                Combine::Sum => 0.0,
                Combine::Max => f64::NEG_INFINITY,
            });
            *entry = match spec.combine {
                Combine::Sum => *entry + v,
                Combine::Max => entry.max(v),
            };
        }
    }
    MetricChart {
        title: spec.title.to_string(),
        query: spec.query.to_string(),
        unit: spec.unit.to_string(),
        series: groups
            .into_iter()
            .map(|(name, points)| {
                let mut points: Vec<(f64, f64)> = points
                    .into_iter()
                    .map(|(t, v)| (f64::from_bits(t), v))
                    .collect();
                points.sort_by(|a, b| a.0.total_cmp(&b.0));
                ChartSeries { name, points }
            })
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn series(name: &str, labels: &[(&str, &str)], points: &[(f64, f64)]) -> Series {
        Series::of(name, labels, points)
    }

    #[test]
    fn a_database_wide_gauge_is_the_max_over_instances_not_their_sum() {
        let collected = Collected {
            series: vec![
                series(
                    "outbox_pending_messages",
                    &[("service", "order"), ("process", "order#1")],
                    &[(1.0, 10.0), (2.0, 4.0)],
                ),
                series(
                    "outbox_pending_messages",
                    &[("service", "order"), ("process", "order#2")],
                    &[(1.0, 12.0), (2.0, 4.0)],
                ),
            ],
            stats: ScrapeStats::default(),
        };
        let report = metrics_report(&collected, 1.0, &[]);
        let chart = report
            .charts
            .iter()
            .find(|c| c.title.starts_with("Outbox pending"))
            .unwrap();
        assert_eq!(chart.series.len(), 1);
        assert_eq!(chart.series[0].name, "order");
        assert_eq!(chart.series[0].points, vec![(1.0, 12.0), (2.0, 4.0)]);
        assert_eq!(chart.series[0].peak(), Some((1.0, 12.0)));
    }

    #[test]
    fn request_rates_leave_out_the_scrapers_own_requests_and_sum_routes_per_instance() {
        let name = "http_server_request_duration_seconds_count";
        let collected = Collected {
            series: vec![
                series(
                    name,
                    &[("process", "order#1"), ("route", "/orders")],
                    &[(1.0, 10.0), (2.0, 30.0)],
                ),
                series(
                    name,
                    &[("process", "order#1"), ("route", "/orders/{id}")],
                    &[(1.0, 0.0), (2.0, 5.0)],
                ),
                series(
                    name,
                    &[("process", "order#1"), ("route", "/metrics")],
                    &[(1.0, 1.0), (2.0, 2.0)],
                ),
            ],
            stats: ScrapeStats::default(),
        };
        let report = metrics_report(&collected, 1.0, &[]);
        assert_eq!(report.charts.len(), 1, "charts without data are left out");
        assert_eq!(report.charts[0].series[0].points, vec![(2.0, 25.0)]);
    }

    #[test]
    fn each_metric_slo_selector_gets_its_chart_once() {
        let collected = Collected {
            series: vec![series(
                "saga_in_flight",
                &[("service", "order")],
                &[(1.0, 3.0)],
            )],
            stats: ScrapeStats::default(),
        };
        let slos = vec!["saga_in_flight".to_string(), "saga_in_flight".to_string()];
        let report = metrics_report(&collected, 1.0, &slos);
        let titles: Vec<&str> = report.charts.iter().map(|c| c.title.as_str()).collect();
        assert_eq!(titles, ["Sagas in flight", "SLO metric saga_in_flight"]);
    }
}
