//! The Grafana dashboards in `dashboards/`, read the way a test needs them: which files there
//! are, and which PromQL query every panel runs.
//!
//! The dashboards are only worth having if their queries select metrics the system really
//! exports; a renamed metric otherwise leaves an empty panel that nobody notices until an
//! incident. Two tests hold them to it. The unit test below parses every query and checks every
//! metric name against the name constants in the services' source (`system/platform`,
//! `system/gateway`, `system/order` and chaos-proxy's `metrics.rs`), which is cheap and runs with
//! `cargo test -p harness --lib`. The system test in `tests/system_local` checks the same names
//! against the `/metrics` of a live system, which also catches a metric that is defined but
//! never recorded.
//!
//! Parsing PromQL takes `promql-parser`, a dev-dependency only (the harness binary never needs
//! it), so `promql` exists in this crate's test builds alone; an integration test parses the
//! queries [`queries`] returns with the crate itself.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use serde_json::Value;

/// The repository's `dashboards/` folder. The path is fixed when the harness is compiled, so
/// this is for tests run from a checkout.
pub fn repository_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../dashboards")
}

/// The dashboards in `dir`: every `*.json` file, sorted by name.
pub fn dashboard_files(dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let entries = std::fs::read_dir(dir).with_context(|| format!("listing {}", dir.display()))?;
    let mut files = Vec::new();
    for entry in entries {
        let path = entry
            .with_context(|| format!("listing {}", dir.display()))?
            .path();
        if path.is_file() && path.extension().is_some_and(|e| e == "json") {
            files.push(path);
        }
    }
    files.sort();
    Ok(files)
}

/// One query of a dashboard and the panel that runs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PanelQuery {
    /// The panel's title, `(untitled)` when it has none.
    pub panel: String,
    /// The PromQL expression.
    pub expr: String,
}

/// Every `expr` of every panel target in a dashboard's JSON, in panel order; the panels of a
/// collapsed row (kept inside the row, not at the top level) included.
pub fn queries(dashboard_json: &str) -> anyhow::Result<Vec<String>> {
    Ok(panel_queries(dashboard_json)?
        .into_iter()
        .map(|q| q.expr)
        .collect())
}

/// Like [`queries`], with the title of the panel each query belongs to.
pub fn panel_queries(dashboard_json: &str) -> anyhow::Result<Vec<PanelQuery>> {
    let dashboard: Value =
        serde_json::from_str(dashboard_json).context("reading the dashboard as JSON")?;
    let panels = dashboard
        .get("panels")
        .and_then(Value::as_array)
        .context("the dashboard has no `panels` array")?;
    let mut found = Vec::new();
    collect(panels, &mut found)?;
    Ok(found)
}

fn collect(panels: &[Value], found: &mut Vec<PanelQuery>) -> anyhow::Result<()> {
    for panel in panels {
        let title = panel
            .get("title")
            .and_then(Value::as_str)
            .filter(|t| !t.is_empty())
            .unwrap_or("(untitled)");
        if let Some(targets) = panel.get("targets") {
            let targets = targets
                .as_array()
                .with_context(|| format!("panel {title:?}: `targets` is not an array"))?;
            for (i, target) in targets.iter().enumerate() {
                match target.get("expr") {
                    // A target of another kind (a Grafana expression) runs no PromQL.
                    None => {}
                    Some(Value::String(expr)) => found.push(PanelQuery {
                        panel: title.to_string(),
                        expr: expr.clone(),
                    }),
                    Some(other) => {
                        bail!(
                            "panel {title:?}: target {i} has an `expr` that is not a string: {other}"
                        )
                    }
                }
            }
        }
        if let Some(nested) = panel.get("panels") {
            let nested = nested
                .as_array()
                .with_context(|| format!("panel {title:?}: `panels` is not an array"))?;
            collect(nested, found)?;
        }
    }
    Ok(())
}

/// The metric names a PromQL expression selects, from `promql-parser`'s syntax tree.
#[cfg(test)]
pub(crate) mod promql {
    use std::collections::BTreeSet;

    use anyhow::{Context, anyhow, bail};
    use promql_parser::label::{METRIC_NAME, MatchOp};
    use promql_parser::parser::{self, AggregateExpr, Expr, LabelModifier, VectorSelector};

    /// A vector or matrix selector of an expression, with the aggregation nearest above it.
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub struct Selection {
        pub metric: String,
        /// `max`, `sum`, ...; `None` when no aggregation encloses the selector.
        pub aggregation: Option<String>,
        /// The aggregation's `by (...)` labels (empty for `without` or no grouping).
        pub by: Vec<String>,
    }

    /// The names of every vector and matrix selector in `query`.
    pub fn metric_names(query: &str) -> anyhow::Result<BTreeSet<String>> {
        Ok(selections(query)?.into_iter().map(|s| s.metric).collect())
    }

    /// Every vector and matrix selector in `query`, in the order they appear.
    pub fn selections(query: &str) -> anyhow::Result<Vec<Selection>> {
        let expr = parser::parse(query)
            .map_err(|e| anyhow!(e))
            .with_context(|| format!("parsing the PromQL {query:?}"))?;
        let mut found = Vec::new();
        walk(&expr, None, &mut found)?;
        Ok(found)
    }

    fn walk(
        expr: &Expr,
        aggregation: Option<&AggregateExpr>,
        found: &mut Vec<Selection>,
    ) -> anyhow::Result<()> {
        match expr {
            Expr::Aggregate(a) => {
                walk(&a.expr, Some(a), found)?;
                // `topk(k, ...)`, `quantile(q, ...)`: the parameter is outside the aggregation.
                if let Some(param) = &a.param {
                    walk(param, aggregation, found)?;
                }
            }
            Expr::Unary(u) => walk(&u.expr, aggregation, found)?,
            Expr::Binary(b) => {
                walk(&b.lhs, aggregation, found)?;
                walk(&b.rhs, aggregation, found)?;
            }
            Expr::Paren(p) => walk(&p.expr, aggregation, found)?,
            Expr::Subquery(s) => walk(&s.expr, aggregation, found)?,
            Expr::Call(c) => {
                for arg in &c.args.args {
                    walk(arg, aggregation, found)?;
                }
            }
            Expr::VectorSelector(vs) => found.push(selection(vs, aggregation)?),
            Expr::MatrixSelector(ms) => found.push(selection(&ms.vs, aggregation)?),
            // Literals select nothing; the parser never produces extension nodes.
            Expr::NumberLiteral(_) | Expr::StringLiteral(_) | Expr::Extension(_) => {}
        }
        Ok(())
    }

    fn selection(
        vs: &VectorSelector,
        aggregation: Option<&AggregateExpr>,
    ) -> anyhow::Result<Selection> {
        let metric = match &vs.name {
            Some(name) => name.clone(),
            None => exact_name(vs)?,
        };
        let by = match aggregation.and_then(|a| a.modifier.as_ref()) {
            Some(LabelModifier::Include(labels)) => labels.labels.clone(),
            _ => Vec::new(),
        };
        Ok(Selection {
            metric,
            aggregation: aggregation.map(|a| a.op.to_string()),
            by,
        })
    }

    /// The name of a selector written `{__name__="..."}`. A name matched by a pattern cannot be
    /// checked against the exported names, so it is refused.
    fn exact_name(vs: &VectorSelector) -> anyhow::Result<String> {
        let mut names = vs
            .matchers
            .matchers
            .iter()
            .chain(vs.matchers.or_matchers.iter().flatten())
            .filter(|m| m.name == METRIC_NAME);
        match names.next() {
            Some(m) if matches!(m.op, MatchOp::Equal) && names.next().is_none() => {
                Ok(m.value.clone())
            }
            _ => bail!("the selector {vs} does not name exactly one metric"),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet};

    use super::promql::{Selection, metric_names, selections};
    use super::*;

    /// The files that define the metric names the system exports, from the harness crate.
    const METRIC_SOURCES: &[&str] = &[
        "../system/platform/src/metrics.rs",
        "../system/gateway/src/metrics.rs",
        "../system/order/src/metrics.rs",
        "../chaos/src/server/metrics.rs",
    ];

    /// The kind of metric a source file describes a name constant as.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    enum Kind {
        Counter,
        Gauge,
        Histogram,
        /// Defined but not described: exported under its own name, whatever it is.
        Undescribed,
    }

    /// The metrics a source file defines: every `const NAME: &str = "..."` whose value is a
    /// Prometheus metric name, with the kind its `describe_*!(NAME, ...)` call gives it.
    fn defined_metrics(source: &str) -> BTreeMap<String, Kind> {
        let mut kinds = BTreeMap::new();
        for (kind, call) in [
            (Kind::Counter, "describe_counter!("),
            (Kind::Gauge, "describe_gauge!("),
            (Kind::Histogram, "describe_histogram!("),
        ] {
            for (at, _) in source.match_indices(call) {
                let ident: String = source[at + call.len()..]
                    .trim_start()
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                kinds.insert(ident, kind);
            }
        }
        let mut metrics = BTreeMap::new();
        for line in source.lines() {
            let line = line.trim();
            let Some(rest) = ["pub const ", "pub(crate) const ", "const "]
                .iter()
                .find_map(|prefix| line.strip_prefix(prefix))
            else {
                continue;
            };
            let Some((ident, value)) = rest.split_once(": &str = \"") else {
                continue;
            };
            let Some(value) = value.strip_suffix("\";") else {
                continue;
            };
            if is_metric_name(value) {
                let kind = kinds.get(ident).copied().unwrap_or(Kind::Undescribed);
                metrics.insert(value.to_string(), kind);
            }
        }
        metrics
    }

    fn is_metric_name(s: &str) -> bool {
        let mut chars = s.chars();
        chars
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
            && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
    }

    /// The names a scrape shows: a histogram only as its `_bucket`, `_sum` and `_count` series.
    fn exposed_names(defined: &BTreeMap<String, Kind>) -> BTreeSet<String> {
        let mut names = BTreeSet::new();
        for (name, kind) in defined {
            if *kind == Kind::Histogram {
                for suffix in ["_bucket", "_sum", "_count"] {
                    names.insert(format!("{name}{suffix}"));
                }
            } else {
                names.insert(name.clone());
            }
        }
        names
    }

    fn exported_metric_names() -> BTreeSet<String> {
        let crate_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
        let mut names = BTreeSet::new();
        for file in METRIC_SOURCES {
            let source = std::fs::read_to_string(crate_dir.join(file))
                .unwrap_or_else(|e| panic!("reading {file}: {e}"));
            let defined = defined_metrics(&source);
            assert!(
                !defined.is_empty(),
                "{file} defines no metric name constants any more: where did they go?"
            );
            names.extend(exposed_names(&defined));
        }
        names
    }

    /// Every dashboard with its JSON.
    fn dashboards() -> Vec<(PathBuf, String)> {
        let files = dashboard_files(&repository_dir()).unwrap();
        assert!(!files.is_empty(), "no dashboards in {:?}", repository_dir());
        files
            .into_iter()
            .map(|f| {
                let json = std::fs::read_to_string(&f).unwrap();
                (f, json)
            })
            .collect()
    }

    fn file_name(path: &Path) -> String {
        path.file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default()
    }

    #[test]
    fn every_metric_a_dashboard_queries_is_one_the_system_defines() {
        let exported = exported_metric_names();
        let mut problems = Vec::new();
        for (path, json) in dashboards() {
            let file = file_name(&path);
            let queries = panel_queries(&json).unwrap_or_else(|e| panic!("{file}: {e:#}"));
            assert!(!queries.is_empty(), "{file} has no queries");
            for q in queries {
                match metric_names(&q.expr) {
                    Err(e) => problems.push(format!("{file}, panel {:?}: {e:#}", q.panel)),
                    Ok(names) if names.is_empty() => problems.push(format!(
                        "{file}, panel {:?}: {:?} selects no metric",
                        q.panel, q.expr
                    )),
                    Ok(names) => {
                        for name in names.difference(&exported) {
                            problems.push(format!(
                                "{file}, panel {:?}: {name} is not a metric the system exports",
                                q.panel
                            ));
                        }
                    }
                }
            }
        }
        assert!(
            problems.is_empty(),
            "{}\n(the system exports: {exported:?})",
            problems.join("\n")
        );
    }

    #[test]
    fn database_wide_gauges_are_read_with_max_by_job_never_summed() {
        // Read from a service's shared database: every instance reports the same figure, so a
        // sum over instances would multiply it by the instance count.
        let database_wide = [
            platform::metrics::OUTBOX_PENDING,
            platform::metrics::OUTBOX_OLDEST_AGE,
            order_service::metrics::SAGA_IN_FLIGHT,
            order_service::metrics::SAGA_OLDEST_PENDING,
        ];
        let mut problems = Vec::new();
        for (path, json) in dashboards() {
            for q in panel_queries(&json).unwrap() {
                // A query that does not parse fails the test above, which says why.
                let Ok(selected) = selections(&q.expr) else {
                    continue;
                };
                for s in selected {
                    let max_by_job =
                        s.aggregation.as_deref() == Some("max") && s.by.iter().any(|l| l == "job");
                    if database_wide.contains(&s.metric.as_str()) && !max_by_job {
                        problems.push(format!(
                            "{}, panel {:?}: {}",
                            file_name(&path),
                            q.panel,
                            q.expr
                        ));
                    }
                }
            }
        }
        assert!(problems.is_empty(), "{}", problems.join("\n"));
    }

    #[test]
    fn every_dashboard_imports_with_a_prometheus_datasource_input_and_units_set() {
        let mut uids = BTreeSet::new();
        for (path, json) in dashboards() {
            let file = file_name(&path);
            let d: Value = serde_json::from_str(&json).unwrap();
            assert_eq!(d["schemaVersion"], 39, "{file}");
            assert!(
                uids.insert(d["uid"].as_str().unwrap().to_string()),
                "{file}: uid used twice"
            );
            let input = &d["__inputs"][0];
            assert_eq!(
                (&input["name"], &input["pluginId"]),
                (&Value::from("DS_PROMETHEUS"), &Value::from("prometheus")),
                "{file}"
            );
            let mut panels: Vec<&Value> = d["panels"].as_array().unwrap().iter().collect();
            while let Some(p) = panels.pop() {
                if let Some(nested) = p["panels"].as_array() {
                    panels.extend(nested);
                }
                if p["type"] == "row" {
                    continue;
                }
                let title = &p["title"];
                assert_eq!(
                    p["datasource"]["uid"], "${DS_PROMETHEUS}",
                    "{file}: {title}"
                );
                for t in p["targets"].as_array().unwrap() {
                    assert_eq!(
                        t["datasource"]["uid"], "${DS_PROMETHEUS}",
                        "{file}: {title}"
                    );
                }
                if p["type"] == "timeseries" {
                    let unit = p["fieldConfig"]["defaults"]["unit"].as_str();
                    assert!(
                        unit.is_some_and(|u| !u.is_empty()),
                        "{file}: {title} has no unit"
                    );
                }
            }
        }
    }

    #[test]
    fn queries_come_from_every_target_of_every_panel_collapsed_rows_included() {
        let json = r#"{"panels": [
            {"type": "timeseries", "title": "a", "targets": [{"expr": "x"}, {"expr": "y"}]},
            {"type": "text", "title": "notes"},
            {"type": "row", "title": "r", "collapsed": true, "panels": [
                {"type": "timeseries", "title": "b", "targets": [{"expr": "z"}, {"type": "math"}]}
            ]}
        ]}"#;
        assert_eq!(queries(json).unwrap(), ["x", "y", "z"]);
        assert_eq!(panel_queries(json).unwrap()[2].panel, "b");
        assert!(queries(r#"{"panels": [{"targets": [{"expr": 1}]}]}"#).is_err());
        assert!(queries(r#"{"title": "no panels"}"#).is_err());
    }

    #[test]
    fn metric_names_are_those_of_every_selector_of_the_expression() {
        let names = metric_names(
            r#"histogram_quantile(0.99, sum by (le) (rate(a_bucket{job="order"}[1m])))
               / on() group_left topk(3, b) + max_over_time(c[5m:1m]) - {__name__="d"}"#,
        )
        .unwrap();
        assert_eq!(
            names,
            BTreeSet::from(["a_bucket", "b", "c", "d"].map(String::from))
        );
        assert!(metric_names(r#"{__name__=~"saga_.*"}"#).is_err());
        assert!(metric_names("sum(rate(x[1m])").is_err());
    }

    #[test]
    fn a_selection_knows_the_aggregation_nearest_above_it() {
        assert_eq!(
            selections("sum(max by (job) (g)) + h").unwrap(),
            [
                Selection {
                    metric: "g".into(),
                    aggregation: Some("max".into()),
                    by: vec!["job".into()],
                },
                Selection {
                    metric: "h".into(),
                    aggregation: None,
                    by: vec![],
                },
            ]
        );
    }

    #[test]
    fn histograms_are_exported_as_buckets_sum_and_count_and_other_constants_are_ignored() {
        let source = r#"
            pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4";
            pub const LATENCY: &str = "x_duration_seconds";
            pub const AGE: &str = "x_age_seconds";
            const SENT: &str = "x_sent_total";
            fn describe() {
                describe_histogram!(
                    LATENCY,
                    Unit::Seconds,
                    "..."
                );
                describe_gauge!(AGE, Unit::Seconds, "...");
            }
        "#;
        let names = exposed_names(&defined_metrics(source));
        assert_eq!(
            names,
            BTreeSet::from(
                [
                    "x_age_seconds",
                    "x_duration_seconds_bucket",
                    "x_duration_seconds_count",
                    "x_duration_seconds_sum",
                    "x_sent_total",
                ]
                .map(String::from)
            )
        );
    }
}
