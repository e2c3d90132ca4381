//! The Prometheus scraper: during a run, every process's `/metrics` is read once per tick and
//! kept as time series, so a report can show what the outbox, the consumers and the sagas did
//! second by second without a Prometheus installed.
//!
//! - [`Scraper::start`] spawns one task; each tick it GETs every [`Target`] concurrently (each
//!   request bounded by a timeout shorter than the tick) and stores every sample under
//!   (metric name, labels) with the tick's time in seconds since the run's origin. Every target of
//!   one tick gets the same time, so series of different processes line up when summed.
//!   [`Scraper::stop`] ends the task and hands back the [`Series`] and the [`ScrapeStats`]
//!   (scrapes and failures per process); dropping the scraper ends the task too.
//! - [`Scraper::watching`] takes the targets from a `watch` channel instead, read again at every
//!   tick: an instance added while the run goes on (`harness chaos scale`, a `scale` fault) is
//!   scraped from the first tick after it was published, one removed is no longer scraped (its
//!   series keep the points scraped while it ran).
//! - [`Scraper::scrape_once`] reads one target now, for the CLI.
//! - [`Selector`] (`outbox_pending_messages{service="order"}`, exact matches only) picks series;
//!   [`Series::select`] sums them per scrape, [`Series::select_rate`] sums their per-second rates.
//! - [`prometheus_config`] writes a `prometheus.yml` for users who bring their own Prometheus:
//!   one job per service (`job_name: order`, `gateway`, `chaos-proxy`, ...), each instance labelled
//!   `instance_name: "order#1"`. The dashboards in `dashboards/` assume these job names and that
//!   label, so change them together.
//!
//! Every series carries the labels `process` (`order#1`) and `service` (`order`); a sample that
//! has its own `service` label keeps it (the gateway's `gateway_upstream_requests_total{service}`
//! names the upstream), and a sample's own `process` label is renamed `exported_process`, as
//! Prometheus does with target labels.
//!
//! # Parsing
//!
//! `prometheus-parse` 0.2.5 is used for the `# TYPE` lines only (the kind of each metric family,
//! with its histogram alias). Its sample parsing loses data this module needs, so sample lines
//! are read by a small tokenizer that follows the text format 0.0.4:
//! - its sample regex takes labels as `\{[^}]+\}`, so a line whose label value contains `}` is
//!   silently dropped, and the services' route labels do (`route="/orders/{id}"`);
//! - its label parser splits on `,` and `=` and trims quotes: escaped quotes, commas and `=` in
//!   values come out wrong or vanish;
//! - it folds histogram buckets into one value with `le` re-read as a float (the exposed
//!   `le="0.005"` text is lost) and reports `_sum`/`_count` as untyped; the flat form kept here
//!   is what the exposition says, so selectors use the names and labels a user sees in `/metrics`.
//!
//! A malformed line fails the whole scrape, as in Prometheus: it is counted as a failure of that
//! target with the line and column, instead of leaving a series with silent gaps.
//!
//! # Bounds
//!
//! At most [`Limits::max_points_per_series`] points per series (the oldest go first, counted in
//! [`ScrapeStats::evicted_points`]) and [`Limits::max_series`] series (samples of further series
//! are counted in [`ScrapeStats::dropped_samples`]). The defaults (7 200 points, two hours at one
//! scrape a second; 20 000 series) bound the store to about 16 bytes × 7 200 × 20 000 ≈ 2.3 GB in
//! the worst case; the reference system exposes a few thousand series.

use std::collections::hash_map::Entry;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::fmt;
use std::str::FromStr;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use futures::future::join_all;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::MissedTickBehavior;
use tokio_util::sync::CancellationToken;

/// The label naming the process a sample was scraped from (`order#1`).
pub const PROCESS_LABEL: &str = "process";
/// The label naming the service a sample was scraped from (`order`), unless the sample has one.
pub const SERVICE_LABEL: &str = "service";
/// Where a sample's own `process` label goes, so that the target's can take its place.
pub const EXPORTED_PROCESS_LABEL: &str = "exported_process";
/// The label [`prometheus_config`] gives each instance; Prometheus's own `instance` label stays
/// the scraped address.
pub const INSTANCE_NAME_LABEL: &str = "instance_name";

/// Timeout of [`Scraper::scrape_once`], which has no tick to stay within.
const SCRAPE_ONCE_TIMEOUT: Duration = Duration::from_secs(5);
/// The shortest tick: `tokio::time::interval` panics on zero, and a faster scrape would only
/// measure the scraper.
const MIN_INTERVAL: Duration = Duration::from_millis(10);
/// A `/metrics` body larger than this is refused instead of being held in memory.
const MAX_BODY_BYTES: usize = 32 * 1024 * 1024;

/// One process to scrape.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// The process's name, e.g. `order#1`, `gateway#1`, `chaos-proxy`.
    pub process: String,
    /// Its service, e.g. `order`, `gateway`, `chaos-proxy`.
    pub service: String,
    /// The full URL of its `/metrics`.
    pub url: String,
}

/// The kind of the metric family a sample belongs to, from the exposition's `# TYPE` lines.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetricKind {
    Counter,
    Gauge,
    /// One of a histogram's `_bucket`, `_sum` or `_count` samples.
    Histogram,
    /// One of a summary's quantile, `_sum` or `_count` samples.
    Summary,
    Untyped,
}

impl From<prometheus_parse::SampleType> for MetricKind {
    fn from(t: prometheus_parse::SampleType) -> Self {
        use prometheus_parse::SampleType as T;
        match t {
            T::Counter => MetricKind::Counter,
            T::Gauge => MetricKind::Gauge,
            T::Histogram => MetricKind::Histogram,
            T::Summary => MetricKind::Summary,
            T::Untyped => MetricKind::Untyped,
        }
    }
}

/// One line of an exposition: the metric name as exposed (`x_bucket`, `x_sum`, `x_count` for a
/// histogram `x`), its labels (with `le` or `quantile` where the line has them) and its value.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub value: f64,
    pub kind: MetricKind,
}

/// Why an exposition could not be read; line and column count from 1.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}, column {column}: {message}")]
pub struct ExpositionError {
    pub line: usize,
    pub column: usize,
    pub message: String,
}

/// Reads a Prometheus text exposition (format 0.0.4) into one [`Sample`] per sample line.
/// Sample timestamps are accepted and ignored: the scraper times samples by its own ticks.
pub fn parse_exposition(text: &str) -> Result<Vec<Sample>, ExpositionError> {
    let mut kinds: HashMap<String, MetricKind> = HashMap::new();
    let mut samples = Vec::new();
    for (index, line) in text.lines().enumerate() {
        let trimmed = line.trim_start();
        if trimmed.is_empty() {
            continue;
        }
        if trimmed.starts_with('#') {
            if let prometheus_parse::LineInfo::Type {
                metric_name,
                metric_alias,
                sample_type,
            } = prometheus_parse::LineInfo::parse(trimmed)
            {
                // For a histogram the crate names the family `x_bucket` and gives `x` as alias.
                kinds.insert(metric_alias.unwrap_or(metric_name), sample_type.into());
            }
            continue;
        }
        let (name, labels, value) = parse_sample_line(line).map_err(|fail| ExpositionError {
            line: index + 1,
            column: fail.column,
            message: fail.message,
        })?;
        let kind = kind_of(&name, &kinds);
        samples.push(Sample {
            name,
            labels,
            value,
            kind,
        });
    }
    Ok(samples)
}

/// The kind of the family `name` belongs to: its own `# TYPE`, or that of the histogram or
/// summary whose `_bucket`/`_sum`/`_count` it is.
fn kind_of(name: &str, kinds: &HashMap<String, MetricKind>) -> MetricKind {
    if let Some(kind) = kinds.get(name) {
        return *kind;
    }
    let family = |suffix: &str| {
        name.strip_suffix(suffix)
            .and_then(|base| kinds.get(base))
            .copied()
    };
    match (family("_bucket"), family("_sum"), family("_count")) {
        (Some(MetricKind::Histogram), _, _) => MetricKind::Histogram,
        (_, Some(k @ (MetricKind::Histogram | MetricKind::Summary)), _)
        | (_, _, Some(k @ (MetricKind::Histogram | MetricKind::Summary))) => k,
        _ => MetricKind::Untyped,
    }
}

/// `name{labels} value [timestamp]`.
fn parse_sample_line(line: &str) -> Result<(String, BTreeMap<String, String>, f64), Fail> {
    let mut c = Cursor::new(line);
    c.skip_blanks();
    let name = c.metric_name()?.to_string();
    let labels = if c.peek() == Some('{') {
        c.label_set()?
    } else {
        BTreeMap::new()
    };
    if !c.skip_blanks() || c.at_end() {
        return Err(c.fail(format!(
            "expected a blank then the value of {name}, found {}",
            describe(c.peek())
        )));
    }
    let value_column = c.column();
    let token = c.token();
    let value = parse_value(token)
        .ok_or_else(|| Fail::at(value_column, format!("invalid value {token:?} of {name}")))?;
    if c.skip_blanks() && !c.at_end() {
        let timestamp_column = c.column();
        let timestamp = c.token();
        if timestamp.parse::<i64>().is_err() {
            return Err(Fail::at(
                timestamp_column,
                format!("invalid timestamp {timestamp:?} (milliseconds since the epoch expected)"),
            ));
        }
        c.skip_blanks();
    }
    if !c.at_end() {
        return Err(c.fail(format!(
            "unexpected {} after the sample",
            describe(c.peek())
        )));
    }
    Ok((name, labels, value))
}

/// A Go float as Prometheus writes it: decimal, `+Inf`, `-Inf`, `NaN` (Rust's parser takes the
/// last three in any case, as Go's does).
fn parse_value(token: &str) -> Option<f64> {
    token.parse::<f64>().ok()
}

/// Gives every sample the target's `process` label, and its `service` label unless the sample
/// has its own.
pub(crate) fn label_with_target(mut samples: Vec<Sample>, target: &Target) -> Vec<Sample> {
    for sample in &mut samples {
        if let Some(own) = sample.labels.remove(PROCESS_LABEL) {
            sample
                .labels
                .insert(EXPORTED_PROCESS_LABEL.to_string(), own);
        }
        sample
            .labels
            .insert(PROCESS_LABEL.to_string(), target.process.clone());
        sample
            .labels
            .entry(SERVICE_LABEL.to_string())
            .or_insert_with(|| target.service.clone());
    }
    samples
}

/// A parse failure inside one line or selector: what was wrong, and the column (in characters,
/// from 1) where.
#[derive(Debug)]
struct Fail {
    column: usize,
    message: String,
}

impl Fail {
    fn at(column: usize, message: String) -> Self {
        Self { column, message }
    }
}

fn describe(c: Option<char>) -> String {
    match c {
        Some(c) => format!("{c:?}"),
        None => "the end".to_string(),
    }
}

/// Reads names, label sets and tokens from one line; shared by exposition lines and selectors,
/// which have the same `name{label="value",...}` grammar.
struct Cursor<'a> {
    text: &'a str,
    /// Byte offset of the next character.
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn new(text: &'a str) -> Self {
        Self { text, pos: 0 }
    }

    fn peek(&self) -> Option<char> {
        self.text[self.pos..].chars().next()
    }

    fn bump(&mut self) -> Option<char> {
        let c = self.peek()?;
        self.pos += c.len_utf8();
        Some(c)
    }

    fn at_end(&self) -> bool {
        self.pos >= self.text.len()
    }

    fn column(&self) -> usize {
        self.text[..self.pos].chars().count() + 1
    }

    fn fail(&self, message: String) -> Fail {
        Fail::at(self.column(), message)
    }

    /// Skips spaces and tabs; says whether there were any.
    fn skip_blanks(&mut self) -> bool {
        let start = self.pos;
        while matches!(self.peek(), Some(' ' | '\t')) {
            self.bump();
        }
        self.pos > start
    }

    /// Everything up to the next blank or the end.
    fn token(&mut self) -> &'a str {
        let start = self.pos;
        while self.peek().is_some_and(|c| c != ' ' && c != '\t') {
            self.bump();
        }
        &self.text[start..self.pos]
    }

    /// `[a-zA-Z_:][a-zA-Z0-9_:]*` (`colons` true) or `[a-zA-Z_][a-zA-Z0-9_]*`.
    fn identifier(&mut self, colons: bool) -> Option<&'a str> {
        let start = self.pos;
        let allowed = |c: char, first: bool| {
            c.is_ascii_alphabetic()
                || c == '_'
                || (colons && c == ':')
                || (!first && c.is_ascii_digit())
        };
        while self.peek().is_some_and(|c| allowed(c, self.pos == start)) {
            self.bump();
        }
        (self.pos > start).then(|| &self.text[start..self.pos])
    }

    fn metric_name(&mut self) -> Result<&'a str, Fail> {
        self.identifier(true).ok_or_else(|| {
            self.fail(format!(
                "expected a metric name, found {}",
                describe(self.peek())
            ))
        })
    }

    /// `{name="value",...}` with an optional trailing comma; the cursor is on the `{`.
    fn label_set(&mut self) -> Result<BTreeMap<String, String>, Fail> {
        self.bump();
        let mut labels = BTreeMap::new();
        loop {
            self.skip_blanks();
            if self.peek() == Some('}') {
                self.bump();
                return Ok(labels);
            }
            let name_column = self.column();
            let name = self.identifier(false).ok_or_else(|| {
                self.fail(format!(
                    "expected a label name or '}}', found {}",
                    describe(self.peek())
                ))
            })?;
            self.skip_blanks();
            self.equals_after(name)?;
            self.skip_blanks();
            let value = self.quoted_value(name)?;
            if labels.insert(name.to_string(), value).is_some() {
                return Err(Fail::at(name_column, format!("label {name:?} given twice")));
            }
            self.skip_blanks();
            match self.peek() {
                Some(',') => {
                    self.bump();
                }
                Some('}') => {
                    self.bump();
                    return Ok(labels);
                }
                other => {
                    return Err(self.fail(format!(
                        "expected ',' or '}}' after the value of label {name:?}, found {}",
                        describe(other)
                    )));
                }
            }
        }
    }

    /// The `=` between a label name and its value; `!=`, `=~` and `!~` get their own message,
    /// since a selector only matches exactly.
    fn equals_after(&mut self, name: &str) -> Result<(), Fail> {
        let rest = &self.text[self.pos..];
        for matcher in ["!=", "=~", "!~"] {
            if rest.starts_with(matcher) {
                return Err(self.fail(format!(
                    "matcher {matcher:?} after label name {name:?} is not supported: \
                     only exact matches (label=\"value\")"
                )));
            }
        }
        if self.peek() != Some('=') {
            return Err(self.fail(format!(
                "expected '=' after label name {name:?}, found {}",
                describe(self.peek())
            )));
        }
        self.bump();
        Ok(())
    }

    /// A double-quoted label value with the escapes `\\`, `\"` and `\n`.
    fn quoted_value(&mut self, name: &str) -> Result<String, Fail> {
        let open_column = self.column();
        if self.peek() != Some('"') {
            return Err(self.fail(format!(
                "expected '\"' to open the value of label {name:?}, found {}",
                describe(self.peek())
            )));
        }
        self.bump();
        let mut value = String::new();
        loop {
            let escape_column = self.column();
            match self.bump() {
                None => {
                    return Err(Fail::at(
                        open_column,
                        format!("the value of label {name:?} is not closed with '\"'"),
                    ));
                }
                Some('"') => return Ok(value),
                Some('\\') => match self.bump() {
                    Some('\\') => value.push('\\'),
                    Some('"') => value.push('"'),
                    Some('n') => value.push('\n'),
                    other => {
                        return Err(Fail::at(
                            escape_column,
                            format!(
                                "invalid escape '\\' then {} in the value of label {name:?} \
                                 (only \\\\, \\\" and \\n)",
                                describe(other)
                            ),
                        ));
                    }
                },
                Some(c) => value.push(c),
            }
        }
    }
}

/// Picks series: a metric name plus exact label matches, `name` or
/// `name{label="value",other="v"}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Selector {
    pub name: String,
    pub matchers: BTreeMap<String, String>,
}

/// Why a selector could not be read; the column counts characters from 1.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message} at column {column}")]
pub struct SelectorError {
    pub column: usize,
    pub message: String,
}

impl Selector {
    /// Reads `name` or `name{label="value",...}`; the same as `str::parse`.
    pub fn parse(s: &str) -> Result<Self, SelectorError> {
        s.parse()
    }

    /// Every series named `name`.
    pub fn new(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            matchers: BTreeMap::new(),
        }
    }

    /// Only the series whose `label` is `value`.
    pub fn with_label(mut self, label: impl Into<String>, value: impl Into<String>) -> Self {
        self.matchers.insert(label.into(), value.into());
        self
    }

    /// Whether a series with this name and these labels is picked.
    pub fn matches(&self, name: &str, labels: &BTreeMap<String, String>) -> bool {
        name == self.name
            && self
                .matchers
                .iter()
                .all(|(label, value)| labels.get(label) == Some(value))
    }
}

impl FromStr for Selector {
    type Err = SelectorError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let into_error = |fail: Fail| SelectorError {
            column: fail.column,
            message: fail.message,
        };
        let mut c = Cursor::new(s);
        c.skip_blanks();
        let name = c.metric_name().map_err(into_error)?.to_string();
        c.skip_blanks();
        let matchers = if c.peek() == Some('{') {
            c.label_set().map_err(into_error)?
        } else {
            BTreeMap::new()
        };
        c.skip_blanks();
        if !c.at_end() {
            return Err(into_error(c.fail(format!(
                "unexpected {} after the selector",
                describe(c.peek())
            ))));
        }
        Ok(Self { name, matchers })
    }
}

impl fmt::Display for Selector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name)?;
        if self.matchers.is_empty() {
            return Ok(());
        }
        f.write_str("{")?;
        for (i, (label, value)) in self.matchers.iter().enumerate() {
            let value = value
                .replace('\\', "\\\\")
                .replace('"', "\\\"")
                .replace('\n', "\\n");
            let comma = if i == 0 { "" } else { "," };
            write!(f, "{comma}{label}=\"{value}\"")?;
        }
        f.write_str("}")
    }
}

/// One time series: every point is (seconds since the run's origin, value).
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub points: Vec<(f64, f64)>,
}

impl Series {
    /// A series of `name` with these labels and points (for tests).
    #[cfg(test)]
    pub(crate) fn of(name: &str, labels: &[(&str, &str)], points: &[(f64, f64)]) -> Self {
        Self {
            name: name.into(),
            labels: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            points: points.to_vec(),
        }
    }

    /// The series `selector` picks, summed per scrape time. A scrape time where a picked series
    /// has no point (its target failed that tick) sums the others only.
    pub fn select(all: &[Series], selector: &Selector) -> Vec<(f64, f64)> {
        sum_by_time(
            all.iter()
                .filter(|s| selector.matches(&s.name, &s.labels))
                .flat_map(|s| s.points.iter().copied()),
        )
    }

    /// The per-second rates of the counters `selector` picks, summed per scrape time. Each
    /// series' rate is taken before summing, so one process restarting (its counter back to 0)
    /// does not read as the whole sum resetting.
    pub fn select_rate(all: &[Series], selector: &Selector) -> Vec<(f64, f64)> {
        sum_by_time(
            all.iter()
                .filter(|s| selector.matches(&s.name, &s.labels))
                .flat_map(|s| rate(&s.points)),
        )
    }
}

/// The per-second rate of a counter, one point per pair of consecutive points, at the later
/// one's time. A counter that went down was reset (its process restarted) and counted again
/// from 0, so its increase is its new value.
pub fn rate(points: &[(f64, f64)]) -> Vec<(f64, f64)> {
    points
        .windows(2)
        .filter_map(|pair| {
            let ((t0, v0), (t1, v1)) = (pair[0], pair[1]);
            let elapsed = t1 - t0;
            if elapsed <= 0.0 || v0.is_nan() || v1.is_nan() {
                return None;
            }
            let increase = if v1 >= v0 { v1 - v0 } else { v1 };
            Some((t1, increase / elapsed))
        })
        .collect()
}

/// Sums values that share a time exactly: points of one tick carry the same `f64`.
fn sum_by_time(points: impl Iterator<Item = (f64, f64)>) -> Vec<(f64, f64)> {
    let mut points: Vec<(f64, f64)> = points.collect();
    points.sort_by(|a, b| a.0.total_cmp(&b.0));
    let mut summed: Vec<(f64, f64)> = Vec::with_capacity(points.len());
    for (t, v) in points {
        match summed.last_mut() {
            Some((last_t, sum)) if *last_t == t => *sum += v,
            _ => summed.push((t, v)),
        }
    }
    summed
}

/// How much the scraper keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Distinct (name, labels); samples of further series are dropped.
    pub max_series: usize,
    /// Points per series; beyond it the oldest point goes.
    pub max_points_per_series: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_series: 20_000,
            max_points_per_series: 7_200,
        }
    }
}

/// How the scraping went, per process.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ScrapeStats {
    /// Scrapes attempted, per process.
    pub scrapes: BTreeMap<String, u64>,
    /// Scrapes that failed (unreachable, timeout, non-2xx, malformed exposition), per process.
    pub failures: BTreeMap<String, u64>,
    /// The latest failure's cause, per process that failed at least once.
    pub last_errors: BTreeMap<String, String>,
    /// Samples not kept because [`Limits::max_series`] series were already stored.
    pub dropped_samples: u64,
    /// Old points removed because their series held [`Limits::max_points_per_series`].
    pub evicted_points: u64,
}

/// What a stopped scraper collected.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Collected {
    /// Sorted by name, then labels.
    pub series: Vec<Series>,
    pub stats: ScrapeStats,
}

#[derive(Debug, PartialEq, Eq, Hash)]
struct SeriesKey {
    name: String,
    labels: BTreeMap<String, String>,
}

/// The series being collected, with their bounds.
struct Store {
    limits: Limits,
    series: HashMap<SeriesKey, VecDeque<(f64, f64)>>,
    stats: ScrapeStats,
}

impl Store {
    fn new(limits: Limits, targets: &[Target]) -> Self {
        let mut store = Self {
            limits,
            series: HashMap::new(),
            stats: ScrapeStats::default(),
        };
        store.list(targets);
        store
    }

    /// Every target listed from when it is known, so a report shows "0 failures" rather than
    /// nothing.
    fn list(&mut self, targets: &[Target]) {
        for target in targets {
            self.stats
                .scrapes
                .entry(target.process.clone())
                .or_insert(0);
            self.stats
                .failures
                .entry(target.process.clone())
                .or_insert(0);
        }
    }

    /// Records one target's scrape at time `t`.
    fn ingest(&mut self, t: f64, process: &str, scraped: Result<Vec<Sample>, String>) {
        *self.stats.scrapes.entry(process.to_string()).or_default() += 1;
        let samples = match scraped {
            Ok(samples) => samples,
            Err(error) => {
                *self.stats.failures.entry(process.to_string()).or_default() += 1;
                self.stats.last_errors.insert(process.to_string(), error);
                return;
            }
        };
        for sample in samples {
            self.push(t, sample);
        }
    }

    fn push(&mut self, t: f64, sample: Sample) {
        let key = SeriesKey {
            name: sample.name,
            labels: sample.labels,
        };
        let limits = self.limits;
        let stored = self.series.len();
        let points = match self.series.entry(key) {
            Entry::Occupied(entry) => entry.into_mut(),
            Entry::Vacant(_) if stored >= limits.max_series => {
                self.stats.dropped_samples += 1;
                return;
            }
            Entry::Vacant(entry) => entry.insert(VecDeque::new()),
        };
        // A line repeated in one exposition: keep the last, as one point per tick is what
        // summing per tick assumes.
        if let Some(last) = points.back_mut()
            && last.0 == t
        {
            last.1 = sample.value;
            return;
        }
        points.push_back((t, sample.value));
        while points.len() > limits.max_points_per_series {
            points.pop_front();
            self.stats.evicted_points += 1;
        }
    }

    fn select(&self, selector: &Selector) -> Vec<(f64, f64)> {
        sum_by_time(
            self.series
                .iter()
                .filter(|(key, _)| selector.matches(&key.name, &key.labels))
                .flat_map(|(_, points)| points.iter().copied()),
        )
    }

    fn take(&mut self) -> Collected {
        let mut series: Vec<Series> = std::mem::take(&mut self.series)
            .into_iter()
            .map(|(key, points)| Series {
                name: key.name,
                labels: key.labels,
                points: points.into(),
            })
            .collect();
        series.sort_by(|a, b| (&a.name, &a.labels).cmp(&(&b.name, &b.labels)));
        Collected {
            series,
            stats: std::mem::take(&mut self.stats),
        }
    }
}

/// A poisoned lock still holds whole scrapes but the one being ingested; what is there stays
/// worth reporting.
fn lock(store: &Mutex<Store>) -> MutexGuard<'_, Store> {
    store.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Scrapes a set of targets on a tick until stopped or dropped.
pub struct Scraper {
    store: Arc<Mutex<Store>>,
    stop: CancellationToken,
    task: Option<JoinHandle<()>>,
}

impl Scraper {
    /// Starts scraping `targets` every `interval` (at least 10 ms), timing samples in seconds
    /// since `origin`, with the default [`Limits`]. Must be called inside a Tokio runtime.
    pub fn start(targets: Vec<Target>, interval: Duration, origin: Instant) -> Scraper {
        Self::start_with_limits(targets, interval, origin, Limits::default())
    }

    /// [`Scraper::start`] with other bounds.
    pub fn start_with_limits(
        targets: Vec<Target>,
        interval: Duration,
        origin: Instant,
        limits: Limits,
    ) -> Scraper {
        // The sender goes: the receiver keeps the list it last saw.
        let (_, targets) = watch::channel(targets);
        Self::watching_with_limits(targets, interval, origin, limits)
    }

    /// Scrapes the targets `targets` holds at each tick: added ones from the first tick after
    /// they were sent, removed ones no more.
    pub fn watching(
        targets: watch::Receiver<Vec<Target>>,
        interval: Duration,
        origin: Instant,
    ) -> Scraper {
        Self::watching_with_limits(targets, interval, origin, Limits::default())
    }

    /// [`Scraper::watching`] with other bounds.
    pub fn watching_with_limits(
        targets: watch::Receiver<Vec<Target>>,
        interval: Duration,
        origin: Instant,
        limits: Limits,
    ) -> Scraper {
        let store = Arc::new(Mutex::new(Store::new(limits, &targets.borrow())));
        let stop = CancellationToken::new();
        let task = tokio::spawn(scrape_loop(
            targets,
            interval.max(MIN_INTERVAL),
            origin,
            Arc::clone(&store),
            stop.clone(),
        ));
        Scraper {
            store,
            stop,
            task: Some(task),
        }
    }

    /// Reads one target now: its samples with the `process` and `service` labels.
    pub async fn scrape_once(target: &Target) -> anyhow::Result<Vec<Sample>> {
        let client = http_client(SCRAPE_ONCE_TIMEOUT)?;
        scrape(&client, target).await
    }

    /// The counts so far.
    pub fn stats(&self) -> ScrapeStats {
        lock(&self.store).stats.clone()
    }

    /// [`Series::select`] over what has been collected so far.
    pub fn select(&self, selector: &Selector) -> Vec<(f64, f64)> {
        lock(&self.store).select(selector)
    }

    /// Stops scraping (a scrape in flight is abandoned) and hands back what was collected.
    pub async fn stop(mut self) -> Collected {
        self.stop.cancel();
        if let Some(task) = self.task.take()
            && let Err(e) = task.await
        {
            tracing::warn!(error = %e, "the scraper task ended abnormally");
        }
        lock(&self.store).take()
    }
}

impl Drop for Scraper {
    fn drop(&mut self) {
        self.stop.cancel();
        // Cancelling is enough for a task waiting on a tick or a scrape; aborting also covers
        // one that has not been polled yet.
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

async fn scrape_loop(
    watched: watch::Receiver<Vec<Target>>,
    interval: Duration,
    origin: Instant,
    store: Arc<Mutex<Store>>,
    stop: CancellationToken,
) {
    // Shorter than the tick, so a hung target cannot delay the next tick of the others.
    let timeout = interval.mul_f64(0.8);
    let client = match http_client(timeout) {
        Ok(client) => client,
        Err(e) => {
            let error = format!("{e:#}");
            tracing::error!(error = %error, "the scraper cannot start");
            let mut store = lock(&store);
            for target in watched.borrow().iter() {
                store.ingest(0.0, &target.process, Err(error.clone()));
            }
            return;
        }
    };
    let mut ticks = tokio::time::interval(interval);
    ticks.set_missed_tick_behavior(MissedTickBehavior::Skip);
    loop {
        tokio::select! {
            biased;
            () = stop.cancelled() => return,
            _ = ticks.tick() => {}
        }
        let targets = watched.borrow().clone();
        lock(&store).list(&targets);
        // One time for the whole tick, so that series of different targets sum point by point.
        let t = Instant::now()
            .saturating_duration_since(origin)
            .as_secs_f64();
        let scrapes = join_all(targets.iter().map(|target| scrape(&client, target)));
        let results = tokio::select! {
            biased;
            () = stop.cancelled() => return,
            results = scrapes => results,
        };
        let mut store = lock(&store);
        for (target, result) in targets.iter().zip(results) {
            let result = result.map_err(|e| {
                let error = format!("{e:#}");
                tracing::debug!(process = %target.process, error = %error, "scrape failed");
                error
            });
            store.ingest(t, &target.process, result);
        }
    }
}

fn http_client(timeout: Duration) -> anyhow::Result<reqwest::Client> {
    reqwest::Client::builder()
        .timeout(timeout)
        // Targets are the harness's own processes; a proxy from the environment would only be
        // in the way.
        .no_proxy()
        .build()
        .context("building the scraper's HTTP client")
}

async fn scrape(client: &reqwest::Client, target: &Target) -> anyhow::Result<Vec<Sample>> {
    let text = fetch(client, &target.url).await?;
    let samples = parse_exposition(&text)
        .with_context(|| format!("reading the metrics of {}", target.url))?;
    Ok(label_with_target(samples, target))
}

async fn fetch(client: &reqwest::Client, url: &str) -> anyhow::Result<String> {
    let mut response = client
        .get(url)
        // The text format is the one parsed here; ask for it rather than OpenMetrics.
        .header(reqwest::header::ACCEPT, "text/plain;version=0.0.4")
        .send()
        .await
        .with_context(|| format!("GET {url}"))?;
    let status = response.status();
    if !status.is_success() {
        bail!("GET {url}: status {status}");
    }
    let mut body = Vec::new();
    while let Some(chunk) = response
        .chunk()
        .await
        .with_context(|| format!("GET {url}: reading the body"))?
    {
        if body.len() + chunk.len() > MAX_BODY_BYTES {
            bail!("GET {url}: body larger than {MAX_BODY_BYTES} bytes");
        }
        body.extend_from_slice(&chunk);
    }
    String::from_utf8(body).with_context(|| format!("GET {url}: body is not UTF-8"))
}

/// A `prometheus.yml` scraping every target every `scrape_interval`: one job per service, named
/// after it, each instance labelled [`INSTANCE_NAME_LABEL`] with its process name. An instance
/// whose path or scheme differs from its job's first instance sets `__metrics_path__` or
/// `__scheme__`; a target whose URL cannot be read is left out with a comment saying so.
pub fn prometheus_config(targets: &[Target], scrape_interval: Duration) -> String {
    let mut out = String::new();
    out.push_str(
        "# Written by the harness for users who bring their own Prometheus: it scrapes every\n\
         # process of the reference system, one job per service. The dashboards in dashboards/\n\
         # select on these job names and on the instance_name label.\n",
    );
    let mut jobs: BTreeMap<&str, Vec<(&Target, reqwest::Url)>> = BTreeMap::new();
    for target in targets {
        match reqwest::Url::parse(&target.url) {
            Ok(url) if url.host_str().is_some() && url.port_or_known_default().is_some() => {
                jobs.entry(&target.service).or_default().push((target, url));
            }
            _ => out.push_str(&format!(
                "# left out: {} (no host and port in {:?})\n",
                target.process, target.url
            )),
        }
    }
    out.push_str(&format!(
        "global:\n  scrape_interval: {}\nscrape_configs:\n",
        prometheus_duration(scrape_interval)
    ));
    for (service, instances) in &jobs {
        let Some((_, first)) = instances.first() else {
            continue;
        };
        out.push_str(&format!("  - job_name: {}\n", yaml_string(service)));
        out.push_str(&format!(
            "    metrics_path: {}\n",
            yaml_string(first.path())
        ));
        if first.scheme() != "http" {
            out.push_str(&format!("    scheme: {}\n", yaml_string(first.scheme())));
        }
        out.push_str("    static_configs:\n");
        for (target, url) in instances {
            out.push_str(&static_config(target, url, first));
        }
    }
    out
}

/// One instance's `static_configs` entry.
fn static_config(target: &Target, url: &reqwest::Url, job: &reqwest::Url) -> String {
    let host = url.host_str().unwrap_or_default();
    let port = url.port_or_known_default().unwrap_or_default();
    let mut labels = vec![format!(
        "{INSTANCE_NAME_LABEL}: {}",
        yaml_string(&target.process)
    )];
    if url.path() != job.path() {
        labels.push(format!("__metrics_path__: {}", yaml_string(url.path())));
    }
    if url.scheme() != job.scheme() {
        labels.push(format!("__scheme__: {}", yaml_string(url.scheme())));
    }
    let mut entry = format!(
        "      - targets: [{}]\n        labels: {{{}}}\n",
        yaml_string(&format!("{host}:{port}")),
        labels.join(", ")
    );
    if url.query().is_some() {
        entry.push_str(&format!(
            "        # the query of {:?} is not carried over\n",
            url.as_str()
        ));
    }
    entry
}

/// A YAML double-quoted scalar: a JSON string is one, escapes included.
fn yaml_string(s: &str) -> String {
    serde_json::Value::String(s.to_string()).to_string()
}

/// A Prometheus duration: whole seconds as `5s`, anything else in milliseconds (at least 1).
fn prometheus_duration(d: Duration) -> String {
    if d.subsec_nanos() == 0 && d.as_secs() > 0 {
        format!("{}s", d.as_secs())
    } else {
        format!("{}ms", d.as_millis().max(1))
    }
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;
    use std::sync::atomic::{AtomicU64, Ordering};

    use axum::Router;
    use axum::http::StatusCode;
    use axum::routing::get;

    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn find<'a>(samples: &'a [Sample], name: &str, with: &[(&str, &str)]) -> &'a Sample {
        let selector = with
            .iter()
            .fold(Selector::new(name), |s, (k, v)| s.with_label(*k, *v));
        let found: Vec<&Sample> = samples
            .iter()
            .filter(|s| selector.matches(&s.name, &s.labels))
            .collect();
        assert_eq!(found.len(), 1, "samples matching {selector}: {found:?}");
        found[0]
    }

    const EXPOSITION: &str = r#"
# HELP http_server_request_duration_seconds Time to answer.
# TYPE http_server_request_duration_seconds histogram
http_server_request_duration_seconds_bucket{method="GET",route="/orders/{id}",status="200",le="0.005"} 3
http_server_request_duration_seconds_bucket{method="GET",route="/orders/{id}",status="200",le="0.5"} 7
http_server_request_duration_seconds_bucket{method="GET",route="/orders/{id}",status="200",le="+Inf"} 8
http_server_request_duration_seconds_sum{method="GET",route="/orders/{id}",status="200"} 1.25
http_server_request_duration_seconds_count{method="GET",route="/orders/{id}",status="200"} 8
# HELP outbox_pending_messages Rows not yet published.
# TYPE outbox_pending_messages gauge
outbox_pending_messages 12
# TYPE outbox_published_total counter
outbox_published_total{topic="order-events"} 1027 1395066363000
# TYPE saga_step_duration_seconds summary
saga_step_duration_seconds{step="reserve",quantile="0.5"} 0.012
saga_step_duration_seconds{step="reserve",quantile="0.99"} NaN
saga_step_duration_seconds_sum{step="reserve"} 4.5
saga_step_duration_seconds_count{step="reserve"} 300
msdos_file_access_time_seconds{path="C:\\DIR\\FILE.TXT",error="Cannot find file:\n\"FILE.TXT\"",list="a,b=c"} 1.458255915e9
  something_weird{problem="division by zero",} +Inf
"#;

    #[test]
    fn a_realistic_exposition_flattens_to_one_sample_per_line_with_its_exposed_name_and_labels() {
        let samples = parse_exposition(EXPOSITION).unwrap();
        assert_eq!(samples.len(), 13);

        let route = [("route", "/orders/{id}")];
        let bucket = find(
            &samples,
            "http_server_request_duration_seconds_bucket",
            &[("le", "0.005")],
        );
        assert_eq!(
            bucket.labels,
            labels(&[
                ("method", "GET"),
                ("route", "/orders/{id}"),
                ("status", "200"),
                ("le", "0.005")
            ])
        );
        assert_eq!(bucket.value, 3.0);
        assert_eq!(bucket.kind, MetricKind::Histogram);
        let inf = find(
            &samples,
            "http_server_request_duration_seconds_bucket",
            &[("le", "+Inf")],
        );
        assert_eq!(inf.value, 8.0);
        let sum = find(&samples, "http_server_request_duration_seconds_sum", &route);
        assert_eq!((sum.value, sum.kind), (1.25, MetricKind::Histogram));
        let count = find(
            &samples,
            "http_server_request_duration_seconds_count",
            &route,
        );
        assert_eq!((count.value, count.kind), (8.0, MetricKind::Histogram));

        let gauge = find(&samples, "outbox_pending_messages", &[]);
        assert_eq!(
            (gauge.value, gauge.kind, gauge.labels.len()),
            (12.0, MetricKind::Gauge, 0)
        );
        let counter = find(&samples, "outbox_published_total", &[]);
        assert_eq!((counter.value, counter.kind), (1027.0, MetricKind::Counter));

        let median = find(
            &samples,
            "saga_step_duration_seconds",
            &[("quantile", "0.5")],
        );
        assert_eq!((median.value, median.kind), (0.012, MetricKind::Summary));
        assert!(
            find(
                &samples,
                "saga_step_duration_seconds",
                &[("quantile", "0.99")]
            )
            .value
            .is_nan()
        );
        let summary_count = find(&samples, "saga_step_duration_seconds_count", &[]);
        assert_eq!(
            (summary_count.value, summary_count.kind),
            (300.0, MetricKind::Summary)
        );

        let escaped = find(&samples, "msdos_file_access_time_seconds", &[]);
        assert_eq!(
            escaped.labels,
            labels(&[
                ("path", r"C:\DIR\FILE.TXT"),
                ("error", "Cannot find file:\n\"FILE.TXT\""),
                ("list", "a,b=c"),
            ])
        );
        assert_eq!(escaped.kind, MetricKind::Untyped);
        let weird = find(
            &samples,
            "something_weird",
            &[("problem", "division by zero")],
        );
        assert_eq!(weird.value, f64::INFINITY);
    }

    #[test]
    fn a_malformed_exposition_line_fails_with_its_line_and_column() {
        let text = "ok_metric 1\nbroken{route=\"/x} 2\n";
        let err = parse_exposition(text).unwrap_err();
        assert_eq!(
            err.to_string(),
            "line 2, column 14: the value of label \"route\" is not closed with '\"'"
        );

        let err = parse_exposition("requests_total{a=\"b\"} lots").unwrap_err();
        assert_eq!(
            err.to_string(),
            "line 1, column 23: invalid value \"lots\" of requests_total"
        );
    }

    #[test]
    fn samples_get_the_targets_process_and_service_but_keep_their_own_service() {
        let target = Target {
            process: "gateway#1".into(),
            service: "gateway".into(),
            url: String::new(),
        };
        let text = "gateway_upstream_requests_total{service=\"order\",status=\"200\"} 5\n\
                    up{process=\"42\"} 1\n";
        let samples = label_with_target(parse_exposition(text).unwrap(), &target);
        assert_eq!(
            samples[0].labels,
            labels(&[
                ("service", "order"),
                ("status", "200"),
                ("process", "gateway#1")
            ])
        );
        assert_eq!(
            samples[1].labels,
            labels(&[
                ("exported_process", "42"),
                ("process", "gateway#1"),
                ("service", "gateway")
            ])
        );
    }

    /// A `/metrics` whose counter goes up by one per request, and a `/broken` answering 500.
    async fn spawn_metrics_server() -> SocketAddr {
        let hits = Arc::new(AtomicU64::new(0));
        let app = Router::new()
            .route(
                "/metrics",
                get(move || {
                    let n = hits.fetch_add(1, Ordering::SeqCst) + 1;
                    async move {
                        format!(
                            "# TYPE requests_total counter\nrequests_total{{path=\"/x\"}} {n}\n"
                        )
                    }
                }),
            )
            .route(
                "/broken",
                get(|| async { (StatusCode::INTERNAL_SERVER_ERROR, "boom") }),
            );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        addr
    }

    fn closed_port() -> u16 {
        std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port()
    }

    fn target(process: &str, service: &str, url: String) -> Target {
        Target {
            process: process.into(),
            service: service.into(),
            url,
        }
    }

    async fn eventually(what: &str, mut condition: impl FnMut() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(15);
        while !condition() {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    #[tokio::test]
    async fn the_scraper_collects_a_changing_counter_and_counts_a_failing_targets_failures() {
        let addr = spawn_metrics_server().await;
        let targets = vec![
            target("order#1", "order", format!("http://{addr}/metrics")),
            target("order#2", "order", format!("http://{addr}/metrics")),
            target("payment#1", "payment", format!("http://{addr}/broken")),
            target(
                "inventory#1",
                "inventory",
                format!("http://127.0.0.1:{}/metrics", closed_port()),
            ),
        ];
        let scraper = Scraper::start(targets, Duration::from_millis(100), Instant::now());
        let order_1 = Selector::new("requests_total").with_label("process", "order#1");
        eventually(
            "four points of order#1 and two failures of each broken target",
            || {
                let stats = scraper.stats();
                scraper.select(&order_1).len() >= 4
                    && stats.failures["payment#1"] >= 2
                    && stats.failures["inventory#1"] >= 2
            },
        )
        .await;
        let collected = scraper.stop().await;

        let series_of = |process: &str| {
            collected
                .series
                .iter()
                .find(|s| s.labels.get("process").map(String::as_str) == Some(process))
                .unwrap()
        };
        let one = series_of("order#1");
        assert_eq!(
            one.labels,
            labels(&[("path", "/x"), ("process", "order#1"), ("service", "order")])
        );
        assert!(one.points.len() >= 4);
        assert!(
            one.points
                .windows(2)
                .all(|w| w[0].0 < w[1].0 && w[0].1 < w[1].1)
        );
        // Both processes were scraped on the same ticks, so their times are the same numbers.
        let two = series_of("order#2");
        let shared_ticks = one
            .points
            .iter()
            .filter(|(t, _)| two.points.iter().any(|(t2, _)| t2 == t))
            .count();
        assert!(shared_ticks >= 3, "{one:?} {two:?}");

        assert_eq!(collected.series.len(), 2, "failing targets add no series");
        let stats = collected.stats;
        assert!(stats.scrapes["payment#1"] >= stats.failures["payment#1"]);
        assert!(stats.last_errors["payment#1"].contains("500"), "{stats:?}");
        assert!(stats.last_errors["inventory#1"].contains("GET http://127.0.0.1:"));
        assert_eq!(stats.dropped_samples, 0);
    }

    #[tokio::test]
    async fn a_watching_scraper_scrapes_instances_added_while_it_runs_and_drops_removed_ones() {
        let addr = spawn_metrics_server().await;
        let url = format!("http://{addr}/metrics");
        let (publish, watched) = watch::channel(vec![target("order#1", "order", url.clone())]);
        let scraper = Scraper::watching(watched, Duration::from_millis(50), Instant::now());
        let of = |process: &str| Selector::new("requests_total").with_label("process", process);
        eventually("order#1 scraped", || {
            scraper.select(&of("order#1")).len() >= 2
        })
        .await;
        assert!(scraper.select(&of("order#2")).is_empty());

        // Scaled up: order#2 joins.
        publish.send_replace(vec![
            target("order#1", "order", url.clone()),
            target("order#2", "order", url.clone()),
        ]);
        eventually("order#2 scraped", || {
            scraper.select(&of("order#2")).len() >= 2
        })
        .await;

        // Scaled down: order#1 leaves, and is not scraped (nor failing) any more.
        publish.send_replace(vec![target("order#2", "order", url)]);
        let order_2_then = scraper.select(&of("order#2")).len();
        eventually("two more ticks", || {
            scraper.select(&of("order#2")).len() >= order_2_then + 2
        })
        .await;
        let order_1_left = scraper.stats().scrapes["order#1"];
        let order_2_now = scraper.select(&of("order#2")).len();
        eventually("two ticks after that", || {
            scraper.select(&of("order#2")).len() >= order_2_now + 2
        })
        .await;
        let collected = scraper.stop().await;
        assert_eq!(collected.stats.scrapes["order#1"], order_1_left);
        assert_eq!(collected.stats.failures["order#1"], 0);
        assert_eq!(collected.stats.failures["order#2"], 0);
        // Both keep their series: order#1's up to when it left, order#2's from when it came.
        let points = |process: &str| {
            collected
                .series
                .iter()
                .find(|s| s.labels.get(PROCESS_LABEL).map(String::as_str) == Some(process))
                .map(|s| s.points.clone())
                .unwrap()
        };
        let (one, two) = (points("order#1"), points("order#2"));
        assert!(two[0].0 > one[0].0, "{one:?} {two:?}");
        assert!(
            one.last().unwrap().0 < two.last().unwrap().0,
            "{one:?} {two:?}"
        );
    }

    #[tokio::test]
    async fn a_dropped_scraper_leaves_nothing_running() {
        let addr = spawn_metrics_server().await;
        let scraper = Scraper::start(
            vec![target("order#1", "order", format!("http://{addr}/metrics"))],
            Duration::from_millis(20),
            Instant::now(),
        );
        eventually("a first scrape", || scraper.stats().scrapes["order#1"] >= 1).await;
        let store = Arc::downgrade(&scraper.store);
        drop(scraper);
        // The task holds the store while it runs.
        eventually("the task to end", || store.upgrade().is_none()).await;
    }

    #[tokio::test]
    async fn scrape_once_reads_one_target_with_its_labels() {
        let addr = spawn_metrics_server().await;
        let samples = Scraper::scrape_once(&target(
            "order#1",
            "order",
            format!("http://{addr}/metrics"),
        ))
        .await
        .unwrap();
        assert_eq!(
            samples,
            vec![Sample {
                name: "requests_total".into(),
                labels: labels(&[("path", "/x"), ("process", "order#1"), ("service", "order")]),
                value: 1.0,
                kind: MetricKind::Counter,
            }]
        );

        let err = Scraper::scrape_once(&target(
            "payment#1",
            "payment",
            format!("http://{addr}/broken"),
        ))
        .await
        .unwrap_err();
        assert_eq!(
            format!("{err:#}"),
            format!("GET http://{addr}/broken: status 500 Internal Server Error")
        );
    }

    #[test]
    fn selectors_parse_a_name_with_optional_exact_label_matches() {
        assert_eq!(
            Selector::parse("outbox_pending_messages").unwrap(),
            Selector::new("outbox_pending_messages")
        );
        let selector: Selector = r#" saga_completed_total{status="failed", reason="say \"no\"",} "#
            .parse()
            .unwrap();
        assert_eq!(
            selector,
            Selector::new("saga_completed_total")
                .with_label("status", "failed")
                .with_label("reason", "say \"no\"")
        );
        assert_eq!(
            selector.to_string(),
            r#"saga_completed_total{reason="say \"no\"",status="failed"}"#
        );
        assert_eq!(selector.to_string().parse::<Selector>().unwrap(), selector);
    }

    #[test]
    fn a_bad_selector_says_what_was_wrong_and_where() {
        let error = |s: &str| s.parse::<Selector>().unwrap_err().to_string();
        assert_eq!(
            error(r#"outbox_pending_messages{service:"order"}"#),
            r#"expected '=' after label name "service", found ':' at column 32"#
        );
        assert_eq!(
            error(r#"outbox_pending_messages{service=~"ord.*"}"#),
            r#"matcher "=~" after label name "service" is not supported: only exact matches (label="value") at column 32"#
        );
        assert_eq!(
            error(r#"x{service=order}"#),
            r#"expected '"' to open the value of label "service", found 'o' at column 11"#
        );
        assert_eq!(
            error(r#"x{a="1" b="2"}"#),
            r#"expected ',' or '}' after the value of label "a", found 'b' at column 9"#
        );
        assert_eq!(
            error(r#"x{a="1",a="2"}"#),
            r#"label "a" given twice at column 9"#
        );
        assert_eq!(
            error(r#"x{a="1"} extra"#),
            r#"unexpected 'e' after the selector at column 10"#
        );
        assert_eq!(
            error(""),
            "expected a metric name, found the end at column 1"
        );
        assert_eq!(
            error(r#"{a="1"}"#),
            "expected a metric name, found '{' at column 1"
        );
    }

    fn series(name: &str, with: &[(&str, &str)], points: &[(f64, f64)]) -> Series {
        Series {
            name: name.into(),
            labels: labels(with),
            points: points.to_vec(),
        }
    }

    #[test]
    fn selecting_sums_matching_series_of_two_processes_per_scrape() {
        let all = [
            series(
                "outbox_pending_messages",
                &[("process", "order#1"), ("service", "order")],
                &[(0.0, 1.0), (1.0, 2.0), (2.0, 3.0)],
            ),
            series(
                "outbox_pending_messages",
                &[("process", "order#2"), ("service", "order")],
                // Its scrape at 1.0 failed.
                &[(0.0, 10.0), (2.0, 30.0)],
            ),
            series(
                "outbox_pending_messages",
                &[("process", "payment#1"), ("service", "payment")],
                &[(0.0, 100.0), (1.0, 100.0), (2.0, 100.0)],
            ),
            series(
                "outbox_published_total",
                &[("process", "order#1"), ("service", "order")],
                &[(0.0, 1000.0)],
            ),
        ];
        let selector = r#"outbox_pending_messages{service="order"}"#.parse().unwrap();
        assert_eq!(
            Series::select(&all, &selector),
            vec![(0.0, 11.0), (1.0, 2.0), (2.0, 33.0)]
        );
        let everything = Selector::new("outbox_pending_messages");
        assert_eq!(
            Series::select(&all, &everything),
            vec![(0.0, 111.0), (1.0, 102.0), (2.0, 133.0)]
        );
        assert!(Series::select(&all, &Selector::new("nothing")).is_empty());
    }

    #[test]
    fn rate_is_per_second_and_a_counter_reset_counts_from_zero() {
        let points = [
            (0.0, 10.0),
            (2.0, 30.0),
            (3.0, 30.0),
            (4.0, 5.0),
            (6.0, 9.0),
        ];
        assert_eq!(
            rate(&points),
            vec![(2.0, 10.0), (3.0, 0.0), (4.0, 5.0), (6.0, 2.0)]
        );
        assert!(rate(&[(0.0, 1.0)]).is_empty());
    }

    #[test]
    fn the_rate_of_a_sum_is_not_fooled_by_one_process_restarting() {
        let all = [
            series(
                "saga_started_total",
                &[("process", "order#1")],
                &[(0.0, 1000.0), (1.0, 1010.0), (2.0, 1020.0)],
            ),
            series(
                "saga_started_total",
                &[("process", "order#2")],
                // Restarted between 0 and 1.
                &[(0.0, 500.0), (1.0, 4.0), (2.0, 14.0)],
            ),
        ];
        assert_eq!(
            Series::select_rate(&all, &Selector::new("saga_started_total")),
            vec![(1.0, 14.0), (2.0, 20.0)]
        );
    }

    #[test]
    fn the_prometheus_config_has_one_job_per_service_and_every_target() {
        let targets = [
            target("order#1", "order", "http://127.0.0.1:4101/metrics".into()),
            target("order#2", "order", "http://127.0.0.1:4102/metrics".into()),
            target(
                "gateway#1",
                "gateway",
                "http://127.0.0.1:4000/metrics".into(),
            ),
            target(
                "chaos-proxy",
                "chaos-proxy",
                "http://127.0.0.1:8474/prom".into(),
            ),
            target("odd#1", "order", "http://127.0.0.1:4103/other".into()),
            target("nowhere", "order", "not a url".into()),
        ];
        let yaml = prometheus_config(&targets, Duration::from_secs(1));
        let lines: Vec<&str> = yaml.lines().collect();
        for expected in [
            "global:",
            "  scrape_interval: 1s",
            "scrape_configs:",
            r#"  - job_name: "chaos-proxy""#,
            r#"    metrics_path: "/prom""#,
            r#"      - targets: ["127.0.0.1:8474"]"#,
            r#"        labels: {instance_name: "chaos-proxy"}"#,
            r#"  - job_name: "gateway""#,
            r#"      - targets: ["127.0.0.1:4000"]"#,
            r#"        labels: {instance_name: "gateway#1"}"#,
            r#"  - job_name: "order""#,
            r#"    metrics_path: "/metrics""#,
            r#"      - targets: ["127.0.0.1:4101"]"#,
            r#"        labels: {instance_name: "order#1"}"#,
            r#"      - targets: ["127.0.0.1:4102"]"#,
            r#"        labels: {instance_name: "order#2"}"#,
            r#"      - targets: ["127.0.0.1:4103"]"#,
            r#"        labels: {instance_name: "odd#1", __metrics_path__: "/other"}"#,
            r#"# left out: nowhere (no host and port in "not a url")"#,
        ] {
            assert!(
                lines.contains(&expected),
                "{expected:?} missing from:\n{yaml}"
            );
        }
        assert_eq!(lines.iter().filter(|l| l.contains("job_name")).count(), 3);
        assert!(lines[0].starts_with('#'), "the header says what it is for");
        assert!(
            prometheus_config(&targets, Duration::from_millis(250))
                .contains("scrape_interval: 250ms")
        );
    }

    fn sample(name: &str, process: &str, value: f64) -> Sample {
        Sample {
            name: name.into(),
            labels: labels(&[("process", process)]),
            value,
            kind: MetricKind::Gauge,
        }
    }

    #[test]
    fn the_store_keeps_the_latest_points_and_counts_samples_beyond_its_series_cap() {
        let limits = Limits {
            max_series: 2,
            max_points_per_series: 3,
        };
        let mut store = Store::new(limits, &[]);
        for tick in 0..5 {
            let t = f64::from(tick);
            let samples = vec![
                sample("a", "order#1", t),
                sample("b", "order#1", t),
                sample("c", "order#1", t),
            ];
            store.ingest(t, "order#1", Ok(samples));
        }
        let collected = store.take();
        assert_eq!(
            collected.series,
            vec![
                series(
                    "a",
                    &[("process", "order#1")],
                    &[(2.0, 2.0), (3.0, 3.0), (4.0, 4.0)]
                ),
                series(
                    "b",
                    &[("process", "order#1")],
                    &[(2.0, 2.0), (3.0, 3.0), (4.0, 4.0)]
                ),
            ]
        );
        assert_eq!(collected.stats.dropped_samples, 5, "c once per tick");
        assert_eq!(collected.stats.evicted_points, 4);
        assert_eq!(collected.stats.scrapes["order#1"], 5);
    }
}
