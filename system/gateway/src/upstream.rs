//! The instances of each service: round-robin, passive ejection, active health checks, and an
//! instance list that can change while the gateway runs.
//!
//! - **Round-robin**: each request starts one instance further and tries each at most once.
//! - **Passive ejection**: an instance whose connection failed is tried last for [`EJECTION`],
//!   so a dead instance costs one failed attempt every few seconds, not one per request in turn.
//!   One that did not answer in time is ejected only when it answered nothing else recently
//!   ([`Upstream::eject_if_silent`]): under overload every instance is slow, and ejecting the
//!   slow ones in turn sent the whole load to one instance at a time.
//! - **Active health checks** (`HEALTH_CHECK_INTERVAL_MS`): every instance's `/health/ready` is
//!   probed; after [`UNHEALTHY_AFTER`] failed probes in a row it leaves the rotation (tried only
//!   when every other instance failed, so a wrong verdict never makes a service unreachable), after
//!   [`HEALTHY_AFTER`] passing probes in a row it is back.
//! - **Discovery** (`UPSTREAMS_FILE`): a JSON file `{"order": ["http://..."], ...}` that the
//!   gateway re-reads when it changes; a service it names gets that instance list (instances it
//!   keeps keep their state and metric names), so an instance is added or removed without a
//!   restart. A file that cannot be read or parsed is logged and changes nothing.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use tokio::time::Instant;

use crate::metrics as m;
use crate::routes::Service;

/// How long an instance whose connection failed is tried only after the others.
pub const EJECTION: Duration = Duration::from_secs(3);
/// Failed probes in a row that take an instance out of the rotation.
pub const UNHEALTHY_AFTER: u32 = 2;
/// Passing probes in a row that bring it back.
pub const HEALTHY_AFTER: u32 = 2;
/// How often the discovery file is looked at.
pub const DISCOVERY_POLL: Duration = Duration::from_millis(500);

/// One instance of a service.
#[derive(Debug)]
pub struct Instance {
    pub url: String,
    /// The host and port of `url`, for the attempts' spans (parsed once, not per request).
    pub address: String,
    pub port: u16,
    /// Its name in metrics and logs: `order#2`.
    pub label: String,
    /// Its `gateway_upstream_*` series, looked up once: a lookup by labels per attempt (the
    /// labels built as strings, hashed, found in the registry) was 3 % of the gateway's CPU.
    pub(crate) series: AttemptSeries,
    /// Until when it is ejected, in ms since the upstream's epoch (0: not ejected).
    ejected_until: AtomicU64,
    /// What the active health checks last concluded.
    healthy: AtomicBool,
    /// Probes in a row that disagreed with `healthy`.
    streak: AtomicU32,
    /// When it last answered a request or a probe (any status), in ms since the upstream's
    /// epoch, plus 1 (0: never).
    answered_at: AtomicU64,
}

impl Instance {
    fn new(service: Service, url: String, number: usize) -> Self {
        let label = format!("{}#{number}", service.name());
        // Series exist from the start, so a dashboard's rate() has one before the first event.
        metrics::counter!(m::UPSTREAM_EJECTIONS, "service" => service.name(), "upstream" => label.clone())
            .increment(0);
        metrics::counter!(m::HEALTH_CHECK_EJECTIONS, "service" => service.name(), "upstream" => label.clone())
            .increment(0);
        metrics::gauge!(m::UPSTREAM_HEALTHY, "service" => service.name(), "upstream" => label.clone())
            .set(1.0);
        let (address, port) = url
            .parse::<http::Uri>()
            .map(|u| {
                // Only http:// gets here (`platform::config::plain_http_url`).
                let port = u.port_u16().unwrap_or(80);
                (u.host().unwrap_or_default().to_string(), port)
            })
            .unwrap_or_default();
        let series = AttemptSeries::new(service, &label);
        Self {
            url,
            address,
            port,
            label,
            series,
            ejected_until: AtomicU64::new(0),
            healthy: AtomicBool::new(true),
            streak: AtomicU32::new(0),
            answered_at: AtomicU64::new(0),
        }
    }

    pub fn is_healthy(&self) -> bool {
        self.healthy.load(Ordering::Relaxed)
    }
}

/// How an attempt ended, as the `outcome` label of `gateway_upstream_requests_total` says it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// An answer, with its status.
    Status(u16),
    ConnectError,
    Timeout,
    Error,
    /// Left behind when another attempt answered first.
    Cancelled,
}

impl Outcome {
    pub fn label(self) -> String {
        match self {
            Outcome::Status(status) => status.to_string(),
            Outcome::ConnectError => "connect_error".into(),
            Outcome::Timeout => "timeout".into(),
            Outcome::Error => "error".into(),
            Outcome::Cancelled => "cancelled".into(),
        }
    }
}

/// One instance's attempt series: the duration histogram, and a counter per outcome met so far
/// (a handful: the statuses it answers with and the ways an attempt fails), registered on first
/// use so that the exposition shows only outcomes that happened.
#[derive(Debug)]
pub(crate) struct AttemptSeries {
    service: &'static str,
    label: String,
    duration: metrics::Histogram,
    outcomes: RwLock<Vec<(Outcome, metrics::Counter)>>,
}

impl AttemptSeries {
    fn new(service: Service, label: &str) -> Self {
        Self {
            service: service.name(),
            label: label.to_string(),
            duration: metrics::histogram!(m::UPSTREAM_DURATION, "service" => service.name(), "upstream" => label.to_string()),
            outcomes: RwLock::new(Vec::new()),
        }
    }

    /// Counts one attempt that ended with `outcome` after `took`.
    pub(crate) fn record(&self, outcome: Outcome, took: Duration) {
        self.duration.record(took.as_secs_f64());
        let known = self
            .outcomes
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .find(|(o, _)| *o == outcome)
            .map(|(_, c)| c.clone());
        let counter = known.unwrap_or_else(|| {
            let counter = metrics::counter!(
                m::UPSTREAM_REQUESTS,
                "service" => self.service,
                "upstream" => self.label.clone(),
                "outcome" => outcome.label(),
            );
            let mut outcomes = self
                .outcomes
                .write()
                .unwrap_or_else(PoisonError::into_inner);
            if !outcomes.iter().any(|(o, _)| *o == outcome) {
                outcomes.push((outcome, counter.clone()));
            }
            counter
        });
        counter.increment(1);
    }
}

/// The instances of one service and where the round-robin stands.
#[derive(Debug)]
pub struct Upstream {
    service: Service,
    instances: RwLock<Arc<Vec<Arc<Instance>>>>,
    next: AtomicUsize,
    epoch: Instant,
}

impl Upstream {
    pub fn new(service: Service, urls: Vec<String>) -> Self {
        metrics::counter!(m::UPSTREAM_RETRIES, "service" => service.name()).increment(0);
        let instances: Vec<Arc<Instance>> = urls
            .into_iter()
            .enumerate()
            .map(|(i, url)| Arc::new(Instance::new(service, url, i + 1)))
            .collect();
        metrics::gauge!(m::UPSTREAM_INSTANCES, "service" => service.name())
            .set(instances.len() as f64);
        Self {
            service,
            instances: RwLock::new(Arc::new(instances)),
            next: AtomicUsize::new(0),
            epoch: Instant::now(),
        }
    }

    pub fn service(&self) -> Service {
        self.service
    }

    /// The current instances.
    pub fn instances(&self) -> Arc<Vec<Arc<Instance>>> {
        match self.instances.read() {
            Ok(guard) => guard.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// The instances to try for one request: each once, starting at the next in turn; the
    /// ejected ones after the others, and those the health checks took out last of all.
    pub fn attempt_order(&self) -> Vec<Arc<Instance>> {
        let instances = self.instances();
        let n = instances.len();
        if n == 0 {
            return Vec::new();
        }
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        let now = self.now_ms();
        let mut order: Vec<Arc<Instance>> = (0..n)
            .map(|i| instances[start.wrapping_add(i) % n].clone())
            .collect();
        // A stable sort keeps the round-robin order within each group.
        order.sort_by_key(|i| {
            (
                !i.is_healthy(),
                i.ejected_until.load(Ordering::Relaxed) > now,
            )
        });
        order
    }

    /// The connection to `instance` failed: try it last for a while.
    pub fn eject(&self, instance: &Instance) {
        let until = self
            .now_ms()
            .saturating_add(u64::try_from(EJECTION.as_millis()).unwrap_or(0));
        instance.ejected_until.store(until, Ordering::Relaxed);
        metrics::counter!(
            m::UPSTREAM_EJECTIONS,
            "service" => self.service.name(),
            "upstream" => instance.label.clone(),
        )
        .increment(1);
    }

    /// `instance` answered (whatever it said): it is alive, if perhaps slow.
    pub fn note_answer(&self, instance: &Instance) {
        instance
            .answered_at
            .store(self.now_ms().saturating_add(1), Ordering::Relaxed);
    }

    /// Whether `instance` answered anything within the last `window`.
    pub fn answered_within(&self, instance: &Instance, window: Duration) -> bool {
        let at = instance.answered_at.load(Ordering::Relaxed);
        let window = u64::try_from(window.as_millis()).unwrap_or(u64::MAX);
        at != 0 && self.now_ms().saturating_add(1).saturating_sub(at) <= window
    }

    /// A request got no answer from `instance` in time. It is tried last for a while only if it
    /// has answered nothing else within `window` either: an instance that is slow because it is
    /// busy keeps its turn (ejecting it would pile its share onto the others and make them slow
    /// in turn), one that answers nobody does not.
    pub fn eject_if_silent(&self, instance: &Instance, window: Duration) {
        if !self.answered_within(instance, window) {
            self.eject(instance);
        }
    }

    /// Takes this instance list, keeping the state of instances already known by URL.
    pub fn replace(&self, urls: &[String]) -> bool {
        let current = self.instances();
        let same =
            current.len() == urls.len() && current.iter().zip(urls).all(|(i, u)| &i.url == u);
        if same || urls.is_empty() {
            return false;
        }
        let mut taken: Vec<usize> = current
            .iter()
            .filter(|i| urls.contains(&i.url))
            .filter_map(|i| i.label.rsplit('#').next()?.parse().ok())
            .collect();
        let next: Vec<Arc<Instance>> = urls
            .iter()
            .map(|url| match current.iter().find(|i| &i.url == url) {
                Some(known) => known.clone(),
                None => {
                    let number = (1..).find(|n| !taken.contains(n)).unwrap_or(1);
                    taken.push(number);
                    Arc::new(Instance::new(self.service, url.clone(), number))
                }
            })
            .collect();
        for gone in current.iter().filter(|i| !urls.contains(&i.url)) {
            metrics::gauge!(m::UPSTREAM_HEALTHY, "service" => self.service.name(), "upstream" => gone.label.clone())
                .set(0.0);
        }
        tracing::info!(
            service = %self.service,
            instances = ?next.iter().map(|i| (&i.label, &i.url)).collect::<Vec<_>>(),
            "instance list changed"
        );
        metrics::gauge!(m::UPSTREAM_INSTANCES, "service" => self.service.name())
            .set(next.len() as f64);
        match self.instances.write() {
            Ok(mut guard) => *guard = Arc::new(next),
            Err(poisoned) => *poisoned.into_inner() = Arc::new(next),
        }
        true
    }

    /// Records one probe of `instance`; flips its health after enough probes in a row.
    pub fn record_probe(&self, instance: &Instance, passed: bool) {
        let healthy = instance.is_healthy();
        if passed == healthy {
            instance.streak.store(0, Ordering::Relaxed);
            return;
        }
        let streak = instance.streak.fetch_add(1, Ordering::Relaxed) + 1;
        let needed = if healthy {
            UNHEALTHY_AFTER
        } else {
            HEALTHY_AFTER
        };
        if streak < needed {
            return;
        }
        instance.streak.store(0, Ordering::Relaxed);
        instance.healthy.store(passed, Ordering::Relaxed);
        let labels = [
            ("service", self.service.name().to_string()),
            ("upstream", instance.label.clone()),
        ];
        metrics::gauge!(m::UPSTREAM_HEALTHY, &labels).set(if passed { 1.0 } else { 0.0 });
        if passed {
            tracing::info!(upstream = %instance.label, url = %instance.url, "health checks pass again; back in rotation");
        } else {
            metrics::counter!(m::HEALTH_CHECK_EJECTIONS, &labels).increment(1);
            tracing::warn!(upstream = %instance.label, url = %instance.url, "health checks failed; out of rotation");
        }
    }
}

/// Probes every instance of `upstreams` every `interval` until the runtime stops.
pub fn spawn_health_checks(
    client: crate::proxy::UpstreamClient,
    upstreams: Vec<Arc<Upstream>>,
    interval: Duration,
) {
    let timeout = interval.min(Duration::from_secs(1));
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let mut probes = Vec::new();
            for upstream in &upstreams {
                for instance in upstream.instances().iter().cloned() {
                    let client = client.clone();
                    let upstream = upstream.clone();
                    probes.push(async move {
                        // `None`: no answer (connect error, broken connection, a bad URL).
                        let probe = match format!("{}/health/ready", instance.url).parse() {
                            Ok(uri) => tokio::time::timeout(timeout, client.get(uri))
                                .await
                                .map(Result::ok),
                            Err(_) => Ok(None),
                        };
                        let passed = match probe {
                            Ok(Some(response)) => {
                                upstream.note_answer(&instance);
                                response.status().is_success()
                            }
                            // A probe that timed out while the instance kept answering
                            // requests says it is busy, not that it is gone: it does not count.
                            Err(_elapsed)
                                if upstream.answered_within(&instance, interval + timeout) =>
                            {
                                return;
                            }
                            Ok(None) | Err(_) => false,
                        };
                        upstream.record_probe(&instance, passed);
                    });
                }
            }
            futures::future::join_all(probes).await;
        }
    });
}

/// Re-reads `file` when it changes and gives each service it names that instance list.
pub fn spawn_discovery(file: PathBuf, upstreams: Vec<Arc<Upstream>>) {
    tokio::spawn(async move {
        let mut last: Option<String> = None;
        loop {
            if let Ok(text) = tokio::fs::read_to_string(&file).await
                && last.as_deref() != Some(text.as_str())
            {
                match parse_discovery(&text) {
                    Ok(lists) => {
                        for upstream in &upstreams {
                            if let Some(urls) = lists.get(upstream.service().name()) {
                                upstream.replace(urls);
                            }
                        }
                    }
                    Err(e) => tracing::warn!(
                        file = %file.display(),
                        error = %e,
                        "the instance list file is not valid; keeping the instances as they are"
                    ),
                }
                last = Some(text);
            }
            tokio::time::sleep(DISCOVERY_POLL).await;
        }
    });
}

/// `{"order": ["http://127.0.0.1:8081"], ...}`: services by name, each with base URLs.
pub fn parse_discovery(text: &str) -> Result<BTreeMap<String, Vec<String>>, String> {
    let lists: BTreeMap<String, Vec<String>> = serde_json::from_str(text)
        .map_err(|e| format!("expected {{\"service\": [\"http://...\"]}}: {e}"))?;
    for (service, urls) in &lists {
        if !Service::ALL.iter().any(|s| s.name() == service) {
            return Err(format!(
                "{service:?} is not a service; expected order, inventory or payment"
            ));
        }
        if urls.is_empty() {
            return Err(format!("{service}: an empty instance list"));
        }
        if let Some(Err(reason)) = urls
            .iter()
            .map(|u| platform::config::plain_http_url(u))
            .find(Result::is_err)
        {
            return Err(format!("{service}: {reason}"));
        }
    }
    Ok(lists
        .into_iter()
        .map(|(s, urls)| {
            (
                s,
                urls.into_iter()
                    .map(|u| u.trim_end_matches('/').to_string())
                    .collect(),
            )
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn urls(u: &Upstream) -> Vec<String> {
        u.attempt_order().iter().map(|i| i.url.clone()).collect()
    }

    fn three() -> Upstream {
        Upstream::new(Service::Order, vec!["a".into(), "b".into(), "c".into()])
    }

    #[test]
    fn each_attempt_is_counted_under_its_own_outcome_with_the_series_looked_up_once() {
        let recorder = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder();
        let handle = recorder.handle();
        metrics::with_local_recorder(&recorder, || {
            let series = AttemptSeries::new(Service::Inventory, "inventory#2");
            for outcome in [
                Outcome::Status(200),
                Outcome::Status(200),
                Outcome::Status(503),
                Outcome::Timeout,
                Outcome::Status(200),
                Outcome::ConnectError,
            ] {
                series.record(outcome, Duration::from_millis(3));
            }
        });
        let text = handle.render();
        let count = |outcome: &str| {
            let series = format!(
                "gateway_upstream_requests_total{{service=\"inventory\",upstream=\"inventory#2\",outcome=\"{outcome}\"}} "
            );
            text.lines()
                .find_map(|l| l.strip_prefix(series.as_str()))
                .unwrap_or_else(|| panic!("no series for {outcome} in:\n{text}"))
                .to_string()
        };
        assert_eq!(count("200"), "3");
        assert_eq!(count("503"), "1");
        assert_eq!(count("timeout"), "1");
        assert_eq!(count("connect_error"), "1");
        assert!(!text.contains("outcome=\"cancelled\""), "{text}");
        assert!(
            text.contains(
                "gateway_upstream_request_duration_seconds_count{service=\"inventory\",upstream=\"inventory#2\"} 6"
            ),
            "{text}"
        );
    }

    #[test]
    fn round_robin_starts_each_request_one_instance_further_and_tries_each_once() {
        let upstream = three();
        assert_eq!(urls(&upstream), ["a", "b", "c"]);
        assert_eq!(urls(&upstream), ["b", "c", "a"]);
    }

    #[test]
    fn an_ejected_instance_is_tried_last_until_its_ejection_ends() {
        let upstream = three();
        let a = upstream.instances()[0].clone();
        upstream.eject(&a);
        assert_eq!(urls(&upstream), ["b", "c", "a"]);
        assert_eq!(urls(&upstream), ["b", "c", "a"]);
        a.ejected_until.store(0, Ordering::Relaxed);
        assert_eq!(urls(&upstream), ["c", "a", "b"]);
    }

    #[test]
    fn failed_probes_in_a_row_take_an_instance_out_and_passing_ones_bring_it_back() {
        let upstream = three();
        let b = upstream.instances()[1].clone();
        upstream.record_probe(&b, false);
        assert!(b.is_healthy(), "one failed probe is not enough");
        upstream.record_probe(&b, true);
        upstream.record_probe(&b, false);
        assert!(b.is_healthy(), "the streak starts again after a pass");
        upstream.record_probe(&b, false);
        assert!(!b.is_healthy());
        // Out of rotation: last, after an ejected but healthy instance.
        let a = upstream.instances()[0].clone();
        upstream.eject(&a);
        assert_eq!(urls(&upstream), ["c", "a", "b"]);
        upstream.record_probe(&b, true);
        upstream.record_probe(&b, true);
        assert!(b.is_healthy());
    }

    #[test]
    fn a_new_instance_list_keeps_known_instances_and_numbers_new_ones_apart() {
        let upstream = three();
        let b = upstream.instances()[1].clone();
        upstream.eject(&b);
        assert!(upstream.replace(&["b".into(), "c".into(), "d".into()]));
        let now = upstream.instances();
        let labels: Vec<&str> = now.iter().map(|i| i.label.as_str()).collect();
        assert_eq!(labels, ["order#2", "order#3", "order#1"]);
        assert!(Arc::ptr_eq(&now[0], &b), "b keeps its state");
        assert!(
            !upstream.replace(&["b".into(), "c".into(), "d".into()]),
            "no change"
        );
        assert!(!upstream.replace(&[]), "an empty list is ignored");
    }

    #[test]
    fn a_bad_discovery_file_says_what_is_wrong() {
        assert!(
            parse_discovery("not json")
                .unwrap_err()
                .contains("expected")
        );
        assert!(
            parse_discovery(r#"{"shipping": ["http://x"]}"#)
                .unwrap_err()
                .contains("not a service")
        );
        assert!(
            parse_discovery(r#"{"order": []}"#)
                .unwrap_err()
                .contains("empty")
        );
        assert!(
            parse_discovery(r#"{"order": ["ftp://x"]}"#)
                .unwrap_err()
                .contains("http://")
        );
        assert!(
            parse_discovery(r#"{"order": ["https://x:1"]}"#)
                .unwrap_err()
                .contains("no TLS")
        );
        let ok = parse_discovery(r#"{"order": ["http://a:1/", "http://b:2"]}"#).unwrap();
        assert_eq!(ok["order"], ["http://a:1", "http://b:2"]);
    }
}
