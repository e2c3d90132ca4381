//! The harness as its own telemetry collector: it receives the services' traces over OTLP/HTTP
//! and scrapes every process's Prometheus `/metrics` during a run, so nothing else has to be
//! installed to see where the time goes.
//!
//! # Layout
//! - [`charts`]: the scraped time series a report draws.
//! - [`collector`]: the OTLP/HTTP receiver (protobuf and JSON, gzip), with optional forwarding
//!   to an external collector.
//! - [`store`]: the bounded span store, indexed by trace id and by `order_id`.
//! - [`tree`]: one trace as a tree, and its text rendering for `harness trace`.
//! - [`hops`]: where each saga's time goes, hop by hop, and per-phase histograms of it.
//! - [`scrape`]: the Prometheus scraper, its time series, and a `prometheus.yml` for users.
//! - [`dashboards`]: the Grafana dashboards in `dashboards/` and the queries their panels run,
//!   checked against the metric names the system exports.

pub mod charts;
pub mod collector;
pub mod dashboards;
pub mod hops;
pub mod scrape;
pub mod store;
pub mod tree;
