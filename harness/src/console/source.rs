//! Where an attached console's measurements come from, all of it what a running `harness up`
//! (or a run) exports: its env file (processes, links, metrics targets, the collector, read
//! again each tick so a scaling shows), every process's Prometheus `/metrics`, the
//! chaos-proxy's Toxiproxy API, and the harness's OTLP collector's query API.
//!
//! One task polls them once per [`INTERVAL`] and sends what changed over the channel as
//! [`Update`]s: the gateway's `http_server_request_duration_seconds` gives answers by endpoint
//! and status and their latency quantiles (from the bucket increases, as Prometheus's
//! `histogram_quantile` does); the order service's `saga_*` metrics the saga pipeline; the
//! outbox, consumer lag and breaker gauges the messaging panel. Counters are read as increases
//! since the previous tick (a restarted process's counter starting again from 0 counts from 0);
//! the first tick only sets the baseline.
//!
//! The slowest hops come from the traces: the collector's `GET /api/hops` gives each trace
//! that settled since the last tick with its hops (as `telemetry::hops` reckons them for a
//! run's report), and [`LiveHops`] keeps them for the longest window and gives, for every
//! window, each hop's p99, p95 and count over the traces that ended in it. Only when there are
//! no traces (traces off, the collector not answering, none received yet) is the slowest hop
//! the metrics' (the outbox-wait, transit and handling histograms' highest p95 in the tick),
//! and the view says which and why.
//!
//! A process answers `/metrics`: running; refuses the connection: down; accepts it but does
//! not answer within the tick: paused. The broker has no `/metrics`: it is sent a Kafka
//! `ApiVersions` request, which a stopped (SIGSTOP) broker's kernel accepts the connection for
//! but nobody answers, so no answer within [`PROBE_TIMEOUT`] reads as paused, whoever paused
//! it (`harness chaos pause broker`, a scenario, `kill -STOP`).

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Context;
use futures::future::join_all;
use serde::Deserialize;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::state::{
    Breaker, HopSource, HopsTick, MAX_WINDOW, Quantiles, SystemTick, TargetKind, TargetRow,
    TargetState, TrafficTick, Update, WINDOWS,
};
use crate::telemetry::collector::{MAX_HOPS_PER_ANSWER, fetch_sagas_hops, fetch_settled_hops};
use crate::telemetry::hops::{LiveHops, SettledHops};
use crate::telemetry::scrape::{Sample, parse_exposition};

/// How often everything is polled.
pub const INTERVAL: Duration = Duration::from_secs(1);

/// The parts of `harness up`'s env file the console reads.
#[derive(Debug, Clone, Deserialize)]
pub struct EnvFile {
    #[serde(default = "local")]
    pub backend: String,
    pub toxiproxy_url: String,
    #[serde(default)]
    pub links: Vec<Named>,
    #[serde(default)]
    pub processes: Vec<ProcessEntry>,
    #[serde(default)]
    pub metrics_targets: Vec<MetricsEntry>,
    /// The harness's OTLP collector, whose query API gives the hops of the traces; absent
    /// when traces are off.
    #[serde(default)]
    pub otlp_endpoint: Option<String>,
}

fn local() -> String {
    "local".into()
}

#[derive(Debug, Clone, Deserialize)]
pub struct Named {
    pub name: String,
}

#[derive(Debug, Clone, Deserialize)]
pub struct ProcessEntry {
    pub name: String,
    #[serde(default)]
    pub addr: String,
}

#[derive(Debug, Clone, Deserialize)]
pub struct MetricsEntry {
    pub process: String,
    pub url: String,
}

impl EnvFile {
    pub fn read(path: &std::path::Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path).with_context(|| {
            format!(
                "reading {}; start the system with `harness up --env-file {}` first",
                path.display(),
                path.display()
            )
        })?;
        serde_json::from_str(&text)
            .with_context(|| format!("{} is not an env file of `harness up`", path.display()))
    }
}

/// What one process's `/metrics` said, or why it did not.
enum Scraped {
    Samples(Vec<Sample>),
    Down,
    Paused,
}

/// Polls the environment described by `env_file` until `stop`, sending what it sees to `tx`.
pub async fn poll(
    env_file: PathBuf,
    tx: mpsc::Sender<Update>,
    origin: Instant,
    stop: CancellationToken,
) {
    poll_with(env_file, tx, origin, stop, true).await;
}

/// [`poll`]; `traffic` off leaves requests and latency to another source (a run's own load,
/// which sees what clients see).
pub async fn poll_with(
    env_file: PathBuf,
    tx: mpsc::Sender<Update>,
    origin: Instant,
    stop: CancellationToken,
    traffic: bool,
) {
    let client = match reqwest::Client::builder()
        .timeout(INTERVAL.mul_f64(0.8))
        .no_proxy()
        .build()
    {
        Ok(c) => c,
        Err(e) => {
            let _ = tx
                .send(Update::Notice {
                    text: format!("no HTTP client for the metrics: {e}"),
                    error: true,
                })
                .await;
            return;
        }
    };
    let mut counters = Counters::default();
    let mut hops = LiveHops::default();
    let mut env: Option<EnvFile> = None;
    let mut ticks = tokio::time::interval(INTERVAL);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut last_tick: Option<f64> = None;
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            _ = ticks.tick() => {}
        }
        match EnvFile::read(&env_file) {
            Ok(e) => env = Some(e),
            Err(e) => {
                let update = Update::Notice {
                    text: format!("{e:#}"),
                    error: true,
                };
                if tx.send(update).await.is_err() {
                    return;
                }
            }
        }
        let Some(env) = &env else { continue };
        let t = origin.elapsed().as_secs_f64();
        let interval_s = last_tick.map_or(INTERVAL.as_secs_f64(), |last| t - last);
        last_tick = Some(t);
        let updates = tokio::select! {
            () = stop.cancelled() => return,
            u = observe(&client, env, (&mut counters, &mut hops), t, interval_s) => u,
        };
        let updates = updates
            .into_iter()
            .filter(|u| traffic || !matches!(u, Update::Traffic(_)));
        for update in updates {
            if tx.send(update).await.is_err() {
                return;
            }
        }
    }
}

/// One tick: scrape, probe and read the proxies, all at once.
async fn observe(
    client: &reqwest::Client,
    env: &EnvFile,
    (counters, hops): (&mut Counters, &mut LiveHops),
    t: f64,
    interval_s: f64,
) -> Vec<Update> {
    let scrapes = join_all(
        env.metrics_targets
            .iter()
            .map(|m| scrape(client, m.url.clone())),
    );
    let unscraped: Vec<&ProcessEntry> = env
        .processes
        .iter()
        .filter(|p| !env.metrics_targets.iter().any(|m| m.process == p.name))
        .collect();
    let probes = join_all(unscraped.iter().map(|p| probe(p)));
    let proxies = async {
        match chaos::Client::new(&env.toxiproxy_url) {
            Ok(c) => c.proxies().await.map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        }
    };
    let settled = async {
        match &env.otlp_endpoint {
            Some(url) => Some(fetch_settled_hops(client, url, hops.next()).await),
            None => None,
        }
    };
    // The traced sagas a run's span SLOs wait for (none outside a run), cut at their end.
    let sagas = async {
        let wanted = super::slos::sagas_wanted(MAX_HOPS_PER_ANSWER);
        match &env.otlp_endpoint {
            Some(url) if !wanted.is_empty() => fetch_sagas_hops(client, url, &wanted).await.ok(),
            _ => None,
        }
    };
    let (scraped, probed, proxies, settled, sagas) =
        tokio::join!(scrapes, probes, proxies, settled, sagas);
    if let Some(sagas) = sagas {
        super::slos::sagas_hops(sagas);
    }

    let mut states: BTreeMap<String, TargetState> = BTreeMap::new();
    let mut samples: Vec<(&str, Vec<Sample>)> = Vec::new();
    for (m, s) in env.metrics_targets.iter().zip(scraped) {
        let state = match s {
            Scraped::Samples(s) => {
                samples.push((m.process.as_str(), s));
                TargetState::Running
            }
            Scraped::Down => TargetState::Down,
            Scraped::Paused => TargetState::Paused,
        };
        states.insert(m.process.clone(), state);
    }
    for (p, state) in unscraped.iter().zip(probed) {
        states.insert(p.name.clone(), state);
    }
    let mut updates = vec![Update::Targets(target_rows(env, &states, &proxies))];
    if let Err(e) = &proxies {
        updates.push(Update::Notice {
            text: format!("the chaos-proxy's API at {}: {e}", env.toxiproxy_url),
            error: true,
        });
    }
    super::slos::scraped(&samples);
    let (traffic, system) = counters.tick(&samples, t, interval_s);
    updates.extend(traffic.map(Update::Traffic));
    updates.extend(system.map(Update::System));
    updates.push(Update::Hops(hops_tick(hops, settled, env)));
    updates
}

/// The slowest hops of the traces for every window, or, when there are no traces to read,
/// why the metrics' figure is shown instead.
fn hops_tick(
    hops: &mut LiveHops,
    settled: Option<anyhow::Result<SettledHops>>,
    env: &EnvFile,
) -> HopsTick {
    let metrics = |why: String| HopsTick {
        source: HopSource::Metrics(why),
        by_window: Vec::new(),
    };
    match settled {
        None => return metrics("traces are off".into()),
        Some(Err(e)) => {
            tracing::debug!(
                collector = env.otlp_endpoint.as_deref().unwrap_or_default(),
                error = format!("{e:#}"),
                "the collector's hops could not be read"
            );
            return metrics("the collector does not answer".into());
        }
        Some(Ok(settled)) => hops.add(settled),
    }
    let now = unix_ns();
    hops.forget_before(now.saturating_sub(nanos(MAX_WINDOW)));
    if hops.is_empty() {
        return metrics("no traces yet".into());
    }
    let windows: Vec<u64> = WINDOWS.iter().map(|w| nanos(*w)).collect();
    HopsTick {
        source: HopSource::Traces,
        by_window: hops.slowest(now, &windows),
    }
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// Now on the wall clock, which span times are in.
fn unix_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, nanos)
}

async fn scrape(client: &reqwest::Client, url: String) -> Scraped {
    let answer = match client
        .get(&url)
        .header(reqwest::header::ACCEPT, "text/plain;version=0.0.4")
        .send()
        .await
    {
        Ok(a) => a,
        Err(e) if e.is_timeout() => return Scraped::Paused,
        Err(_) => return Scraped::Down,
    };
    match answer.text().await {
        Ok(text) => parse_exposition(&text).map_or(Scraped::Down, Scraped::Samples),
        Err(e) if e.is_timeout() => Scraped::Paused,
        Err(_) => Scraped::Down,
    }
}

/// How long a process without `/metrics` has to answer before it reads as paused.
pub const PROBE_TIMEOUT: Duration = Duration::from_millis(500);

/// The state of a process without `/metrics`. The broker is asked for its API versions (a
/// Kafka `ApiVersions` request, which every broker answers before anything else): a stopped
/// process's kernel still accepts the connection, so only an answer tells running from paused.
/// Another process is only checked for a listening port.
async fn probe(p: &ProcessEntry) -> TargetState {
    let Ok(addr) = p.addr.parse::<std::net::SocketAddr>() else {
        return TargetState::Unknown;
    };
    if is_broker(&p.name) {
        kafka_state(addr, PROBE_TIMEOUT).await
    } else {
        let connect = tokio::net::TcpStream::connect(addr);
        match tokio::time::timeout(PROBE_TIMEOUT, connect).await {
            Ok(Ok(_)) => TargetState::Running,
            _ => TargetState::Down,
        }
    }
}

fn is_broker(process: &str) -> bool {
    let service = process.split('#').next().unwrap_or(process);
    matches!(service, "broker" | "kafka")
}

/// A Kafka `ApiVersions` v0 request (api key 18) with correlation id 1 and client id `harness`.
fn api_versions_request() -> Vec<u8> {
    let client_id = b"harness";
    let mut body = Vec::with_capacity(17);
    body.extend(18i16.to_be_bytes());
    body.extend(0i16.to_be_bytes());
    body.extend(1i32.to_be_bytes());
    body.extend((client_id.len() as i16).to_be_bytes());
    body.extend(client_id);
    let mut request = (body.len() as i32).to_be_bytes().to_vec();
    request.extend(body);
    request
}

/// Running when the broker at `addr` answers an `ApiVersions` request within `timeout`; paused when it accepts the
/// connection but says nothing in time; down when nothing listens or the connection breaks.
pub async fn kafka_state(addr: std::net::SocketAddr, timeout: Duration) -> TargetState {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let exchange = async {
        let mut stream = match tokio::net::TcpStream::connect(addr).await {
            Ok(s) => s,
            Err(_) => return TargetState::Down,
        };
        if stream.write_all(&api_versions_request()).await.is_err() {
            return TargetState::Down;
        }
        // Any answer will do: whatever answers runs.
        let mut head = [0u8; 8];
        match stream.read_exact(&mut head).await {
            Ok(_) => TargetState::Running,
            Err(_) => TargetState::Down,
        }
    };
    tokio::time::timeout(timeout, exchange)
        .await
        .unwrap_or(TargetState::Paused)
}

/// Services first (each instance's worst state), then processes, then links.
fn target_rows(
    env: &EnvFile,
    states: &BTreeMap<String, TargetState>,
    proxies: &Result<BTreeMap<String, chaos::Proxy>, String>,
) -> Vec<TargetRow> {
    let state_of = |name: &str| states.get(name).cloned().unwrap_or(TargetState::Unknown);
    let mut services: Vec<String> = Vec::new();
    for (service, _) in env.processes.iter().filter_map(|p| p.name.split_once('#')) {
        if !services.iter().any(|s| s == service) {
            services.push(service.to_string());
        }
    }
    let mut rows: Vec<TargetRow> = services
        .into_iter()
        .map(|service| {
            let prefix = format!("{service}#");
            let instances: Vec<TargetState> = env
                .processes
                .iter()
                .filter(|p| p.name.starts_with(&prefix))
                .map(|p| state_of(&p.name))
                .collect();
            let bad = instances.iter().filter(|s| !s.healthy()).count();
            let state = if bad == 0 {
                TargetState::Running
            } else {
                TargetState::Faulted(format!("{bad}/{} down", instances.len()))
            };
            TargetRow {
                name: service,
                kind: TargetKind::Service,
                state,
            }
        })
        .collect();
    rows.extend(env.processes.iter().map(|p| TargetRow {
        name: p.name.clone(),
        kind: TargetKind::Process,
        state: state_of(&p.name),
    }));
    rows.extend(env.links.iter().map(|l| {
        let state = match proxies.as_ref().ok().and_then(|p| p.get(&l.name)) {
            None => TargetState::Unknown,
            Some(p) if !p.enabled => TargetState::Cut,
            Some(p) if !p.toxics.is_empty() => {
                let mut kinds: Vec<&str> = p.toxics.iter().map(|t| t.attributes.kind()).collect();
                kinds.dedup();
                TargetState::Faulted(kinds.join(","))
            }
            Some(_) => TargetState::Running,
        };
        TargetRow {
            name: l.name.clone(),
            kind: TargetKind::Link,
            state,
        }
    }));
    rows
}

/// The counters' values at the previous tick, to turn them into increases.
#[derive(Default)]
pub struct Counters {
    previous: HashMap<String, f64>,
}

/// Increases of one histogram, per bucket bound.
type Buckets = BTreeMap<String, f64>;

impl Counters {
    /// The increase of a counter since the previous tick; `None` on its first tick.
    fn increase(&mut self, process: &str, s: &Sample) -> Option<f64> {
        let key = format!("{process}|{}|{:?}", s.name, s.labels);
        let before = self.previous.insert(key, s.value)?;
        Some(if s.value >= before {
            s.value - before
        } else {
            s.value
        })
    }

    /// What the tick's samples say: the gateway's answers and latency, and the system's own
    /// figures. Each is `None` when nothing of it was scraped.
    pub fn tick(
        &mut self,
        scraped: &[(&str, Vec<Sample>)],
        t: f64,
        interval_s: f64,
    ) -> (Option<TrafficTick>, Option<SystemTick>) {
        let mut counts: BTreeMap<(String, u16), u64> = BTreeMap::new();
        let mut latency: BTreeMap<String, Buckets> = BTreeMap::new();
        let mut hops: BTreeMap<String, Buckets> = BTreeMap::new();
        let mut system = SystemTick {
            t,
            interval_s,
            ..SystemTick::default()
        };
        let (mut saw_gateway, mut saw_system) = (false, false);
        let mut outbox: BTreeMap<String, f64> = BTreeMap::new();
        let mut lag: BTreeMap<String, f64> = BTreeMap::new();
        let mut breakers: BTreeMap<String, Breaker> = BTreeMap::new();
        for (process, samples) in scraped {
            let service = process.split('#').next().unwrap_or(process);
            for s in samples {
                let label = |k: &str| s.labels.get(k).map_or("", String::as_str);
                match s.name.as_str() {
                    "http_server_request_duration_seconds_count"
                        if service == "gateway" && label("route").starts_with("/api") =>
                    {
                        saw_gateway = true;
                        let endpoint = format!("{} {}", label("method"), label("route"));
                        let status = label("status").parse().unwrap_or(0);
                        let entry = counts.entry((endpoint, status)).or_default();
                        if let Some(n) = self.increase(process, s) {
                            *entry += n.round() as u64;
                        }
                    }
                    "http_server_request_duration_seconds_bucket"
                        if service == "gateway" && label("route").starts_with("/api") =>
                    {
                        let endpoint = format!("{} {}", label("method"), label("route"));
                        if let Some(n) = self.increase(process, s) {
                            *latency
                                .entry(endpoint)
                                .or_default()
                                .entry(label("le").to_string())
                                .or_default() += n;
                        }
                    }
                    "saga_completed_total" => {
                        saw_system = true;
                        let status = label("status").to_string();
                        let n = self.increase(process, s).unwrap_or(0.0);
                        *system.completed.entry(status).or_default() += n.round() as u64;
                    }
                    "saga_compensations_total" => {
                        system.compensations +=
                            self.increase(process, s).unwrap_or(0.0).round() as u64;
                    }
                    "saga_step_timeouts_total" => {
                        system.step_timeouts +=
                            self.increase(process, s).unwrap_or(0.0).round() as u64;
                    }
                    // Every instance reports its database's figure: the largest is the latest.
                    "saga_in_flight" => {
                        system.in_flight = Some(system.in_flight.unwrap_or(0.0).max(s.value));
                    }
                    "saga_oldest_pending_age_seconds" => {
                        system.oldest_pending_s =
                            Some(system.oldest_pending_s.unwrap_or(0.0).max(s.value));
                    }
                    "outbox_pending_messages" => {
                        let e = outbox.entry(service.to_string()).or_default();
                        *e = e.max(s.value);
                    }
                    "kafka_consumer_lag_messages" if s.value >= 0.0 => {
                        *lag.entry(label("group").to_string()).or_default() += s.value;
                    }
                    "gateway_breaker_state" => {
                        breakers.insert(label("service").to_string(), Breaker::from_gauge(s.value));
                    }
                    "outbox_wait_duration_seconds_bucket" => {
                        self.hop(&mut hops, format!("{service} outbox wait"), process, s);
                    }
                    "kafka_consumer_transit_duration_seconds_bucket" => {
                        let hop = format!("transit to {}", label("group"));
                        self.hop(&mut hops, hop, process, s);
                    }
                    "kafka_consumer_handle_duration_seconds_bucket" => {
                        let hop = format!("{} handling", label("group"));
                        self.hop(&mut hops, hop, process, s);
                    }
                    _ => {}
                }
            }
        }
        system.outbox = outbox.into_iter().collect();
        system.consumer_lag = lag.into_iter().collect();
        system.breakers = breakers.into_iter().collect();
        system.slowest_hop = hops
            .iter()
            .filter_map(|(hop, b)| quantile(b, 0.95).map(|q| (hop.clone(), q * 1000.0)))
            .max_by(|a, b| a.1.total_cmp(&b.1));
        let saw_system = saw_system || !system.outbox.is_empty() || !system.breakers.is_empty();
        let traffic = saw_gateway.then(|| {
            let mut all: Buckets = BTreeMap::new();
            for b in latency.values() {
                for (le, n) in b {
                    *all.entry(le.clone()).or_default() += n;
                }
            }
            TrafficTick {
                t,
                interval_s,
                counts: counts
                    .into_iter()
                    .filter(|(_, n)| *n > 0)
                    .map(|((e, s), n)| (e, s, n))
                    .collect(),
                latency: quantiles(&all),
                latency_by_endpoint: latency
                    .iter()
                    .filter_map(|(e, b)| quantiles(b).map(|q| (e.clone(), q)))
                    .collect(),
            }
        });
        (traffic, saw_system.then_some(system))
    }

    fn hop(
        &mut self,
        hops: &mut BTreeMap<String, Buckets>,
        hop: String,
        process: &str,
        s: &Sample,
    ) {
        if let Some(n) = self.increase(process, s) {
            let le = s.labels.get("le").cloned().unwrap_or_default();
            *hops.entry(hop).or_default().entry(le).or_default() += n;
        }
    }
}

fn quantiles(buckets: &Buckets) -> Option<Quantiles> {
    Some(Quantiles {
        p50: quantile(buckets, 0.50)? * 1000.0,
        p95: quantile(buckets, 0.95)? * 1000.0,
        p99: quantile(buckets, 0.99)? * 1000.0,
    })
}

/// The `q` quantile of cumulative bucket increases (`le` → count), interpolated within its
/// bucket as Prometheus's `histogram_quantile` does; `None` when nothing was observed. A
/// quantile in the `+Inf` bucket is the largest finite bound.
pub fn quantile(buckets: &Buckets, q: f64) -> Option<f64> {
    let mut bounds: Vec<(f64, f64)> = buckets
        .iter()
        .filter_map(|(le, n)| {
            let bound = if le == "+Inf" {
                f64::INFINITY
            } else {
                le.parse().ok()?
            };
            Some((bound, *n))
        })
        .collect();
    bounds.sort_by(|a, b| a.0.total_cmp(&b.0));
    let total = bounds.last()?.1;
    if total <= 0.0 {
        return None;
    }
    let rank = q * total;
    let mut previous = (0.0, 0.0);
    for (bound, count) in &bounds {
        if *count >= rank {
            if bound.is_infinite() {
                return Some(previous.0);
            }
            let within = (count - previous.1).max(1e-9);
            return Some(previous.0 + (bound - previous.0) * (rank - previous.1) / within);
        }
        previous = (*bound, *count);
    }
    Some(previous.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(name: &str, labels: &[(&str, &str)], value: f64) -> Sample {
        Sample {
            name: name.into(),
            labels: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            value,
            kind: crate::telemetry::scrape::MetricKind::Counter,
        }
    }

    #[test]
    fn a_quantile_is_interpolated_within_its_bucket() {
        let b: Buckets = [("0.1", 50.0), ("0.2", 100.0), ("+Inf", 100.0)]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect();
        assert!((quantile(&b, 0.5).unwrap() - 0.1).abs() < 1e-9);
        assert!((quantile(&b, 0.75).unwrap() - 0.15).abs() < 1e-9);
        let empty: Buckets = [("+Inf".to_string(), 0.0)].into_iter().collect();
        assert_eq!(quantile(&empty, 0.5), None);
    }

    #[test]
    fn gateway_answers_are_counted_as_increases_by_endpoint_and_status() {
        let mut c = Counters::default();
        let answers = |ok: f64, shed: f64| {
            vec![
                sample(
                    "http_server_request_duration_seconds_count",
                    &[
                        ("method", "POST"),
                        ("route", "/api/orders"),
                        ("status", "201"),
                    ],
                    ok,
                ),
                sample(
                    "http_server_request_duration_seconds_count",
                    &[
                        ("method", "POST"),
                        ("route", "/api/orders"),
                        ("status", "503"),
                    ],
                    shed,
                ),
                sample(
                    "http_server_request_duration_seconds_count",
                    &[
                        ("method", "GET"),
                        ("route", "/health/ready"),
                        ("status", "200"),
                    ],
                    99.0,
                ),
                sample("saga_completed_total", &[("status", "CONFIRMED")], ok),
            ]
        };
        let (traffic, _) = c.tick(&[("gateway#1", answers(10.0, 1.0))], 1.0, 1.0);
        assert!(
            traffic.unwrap().counts.is_empty(),
            "the first tick is the baseline"
        );
        let (traffic, system) = c.tick(
            &[
                ("gateway#1", answers(25.0, 4.0)),
                ("order#1", answers(25.0, 0.0)),
            ],
            2.0,
            1.0,
        );
        assert_eq!(
            traffic.unwrap().counts,
            vec![
                ("POST /api/orders".to_string(), 201, 15),
                ("POST /api/orders".to_string(), 503, 3)
            ]
        );
        assert_eq!(system.unwrap().completed["CONFIRMED"], 15);
    }

    #[tokio::test]
    async fn a_broker_that_takes_the_connection_but_does_not_answer_reads_paused() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        // What a stopped (SIGSTOP) broker looks like from outside: its kernel completes the
        // handshake, and nothing ever reads.
        let frozen = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let timeout = Duration::from_millis(200);
        assert_eq!(
            kafka_state(frozen.local_addr().unwrap(), timeout).await,
            TargetState::Paused
        );

        let broker = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = broker.local_addr().unwrap();
        let answer = tokio::spawn(async move {
            let (mut c, _) = broker.accept().await.unwrap();
            let mut request = [0u8; 21];
            c.read_exact(&mut request).await.unwrap();
            // Size 17, ApiVersions (18) v0, correlation id 1, client id "harness".
            assert_eq!(&request[..12], &[0, 0, 0, 17, 0, 18, 0, 0, 0, 0, 0, 1]);
            c.write_all(&[0, 0, 0, 6, 0, 0, 0, 1, 0, 0]).await.unwrap();
        });
        assert_eq!(
            kafka_state(addr, Duration::from_secs(5)).await,
            TargetState::Running
        );
        answer.await.unwrap();

        let gone = frozen.local_addr().unwrap();
        drop(frozen);
        assert_eq!(kafka_state(gone, timeout).await, TargetState::Down);
    }

    fn env(otlp_endpoint: Option<&str>) -> EnvFile {
        EnvFile {
            backend: "local".into(),
            toxiproxy_url: "http://127.0.0.1:1".into(),
            links: Vec::new(),
            processes: Vec::new(),
            metrics_targets: Vec::new(),
            otlp_endpoint: otlp_endpoint.map(str::to_string),
        }
    }

    #[test]
    fn the_hops_come_from_the_traces_when_there_are_any_and_else_say_why_not() {
        let mut hops = LiveHops::default();
        let tick = hops_tick(&mut hops, None, &env(None));
        assert_eq!(tick.source, HopSource::Metrics("traces are off".into()));

        let url = Some("http://127.0.0.1:4318");
        let tick = hops_tick(&mut hops, Some(Ok(SettledHops::default())), &env(url));
        assert_eq!(tick.source, HopSource::Metrics("no traces yet".into()));
        let refused = hops_tick(&mut hops, Some(Err(anyhow::anyhow!("refused"))), &env(url));
        assert!(
            matches!(&refused.source, HopSource::Metrics(why) if why == "the collector does not answer"),
            "{refused:?}"
        );

        let settled = SettledHops {
            next: 7,
            traces: vec![crate::telemetry::hops::TraceHops {
                trace_id: "ab".repeat(16),
                end_unix_ns: unix_ns(),
                hops: [("order db".to_string(), 1_500)].into_iter().collect(),
            }],
        };
        let tick = hops_tick(&mut hops, Some(Ok(settled)), &env(url));
        assert_eq!(tick.source, HopSource::Traces);
        assert_eq!(tick.by_window.len(), WINDOWS.len());
        assert_eq!(tick.by_window[0].0[0].hop, "order db");
        assert_eq!(hops.next(), 7);
    }
}
