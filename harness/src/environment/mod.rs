//! Environments: the whole system started somewhere, seen through one interface.
//!
//! Scenarios, chaos timelines, checks, the control API and `harness chaos` use only
//! [`Environment`] (and its fault half, [`Faultable`]); how a backend starts things, where they
//! run and how an instance is killed is its own business. [`start`] picks the backend.
//!
//! # Layout
//! - this module: the interface, the options every backend takes, and what every backend
//!   reports about itself ([`EnvInfo`], written to `--env-file`).
//! - [`local`]: child processes on 127.0.0.1, SQLite files, the embedded broker, `chaos-proxy`.
//! - [`containers`]: Docker containers on a network of the run's own, Postgres, Kafka, Toxiproxy.
//! - [`discovery`]: what both backends share to scale a service at run time: the gateway's
//!   upstreams file and the plan of which instances come and go.

pub mod containers;
pub mod discovery;
pub mod local;

pub use self::local::LinkInfo;
pub use crate::faults::Faultable;

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use serde::Serialize;

use crate::client::ApiClient;
use crate::scenario::{Backend, Resilience};
use crate::seed::{IdentityProvider, Seed};
use crate::telemetry::scrape;
use crate::telemetry::store::SpanStore;

/// A running environment: the gateway and services, the broker, the proxies of every link,
/// the harness's own collector. Dropping it tears everything down at once;
/// [`Environment::stop`] does it gracefully.
#[async_trait::async_trait]
pub trait Environment: Faultable + Send {
    /// Which backend runs it.
    fn backend(&self) -> Backend;

    /// From the first thing started to seeded and ready (building binaries or images excluded).
    fn startup_time(&self) -> Duration;

    /// The gateway as clients reach it: through the `client->gateway` link.
    fn gateway_url(&self) -> &str;

    /// The Kafka bootstrap servers as the harness reaches them (for the dead-letter reader).
    fn kafka_brokers(&self) -> &str;

    /// Every link, each through its named proxy: `client->gateway`, `gateway->order#1`, ...
    fn links(&self) -> &[LinkInfo];

    /// Where logs, data and generated files of this run are.
    fn run_dir(&self) -> &Path;

    /// Issues the tokens the seeded customers and the admin use.
    fn identity(&self) -> &IdentityProvider;

    /// The products and customers the environment was seeded with.
    fn seed(&self) -> &Seed;

    /// The spans the services exported so far; `None` when traces are off.
    fn spans(&self) -> Option<Arc<SpanStore>>;

    /// The collector's base URL as the harness reaches it (OTLP at `/v1/traces`, queries at
    /// `/api/traces`); `None` when traces are off.
    fn otlp_endpoint(&self) -> Option<String>;

    /// Every process that serves Prometheus `/metrics`, as the harness reaches it (directly,
    /// not through the links: a fault on a link must not blind the observer).
    fn metrics_targets(&self) -> Vec<scrape::Target>;

    /// [`Self::metrics_targets`] now and as they change while the environment runs (instances
    /// added or removed by [`Faultable::scale`]), for [`scrape::Scraper::watching`]. A backend
    /// whose processes are fixed hands the list it has.
    fn watch_metrics_targets(&self) -> tokio::sync::watch::Receiver<Vec<scrape::Target>> {
        tokio::sync::watch::channel(self.metrics_targets()).1
    }

    /// Toxiproxy's HTTP API, as the harness reaches it.
    fn toxiproxy_url(&self) -> &str;

    /// What the gateway signs the services' tokens with, to call a service directly (the
    /// gateway-overhead benchmark). Never written to the env file.
    fn service_token_secret(&self) -> &str;

    /// Every process or container, for the env file and `harness up`'s listing.
    fn process_infos(&self) -> Vec<ProcessInfo>;

    /// Resumes the process if it runs (a paused one), starts it again if it does not (a killed
    /// or stopped one).
    async fn heal_process(&mut self, name: &str) -> anyhow::Result<()>;

    /// Writes every process's output so far into `dest`, one `<name>.log` per process
    /// (`order#1` as `order-1.log`); returns how many files it wrote. Reports keep them, so a
    /// failed run can be read after its environment is gone.
    async fn save_logs(&self, dest: &Path) -> anyhow::Result<usize>;

    /// Stops everything gracefully, the gateway first and the broker last.
    async fn stop(self: Box<Self>);

    /// A client of the gateway.
    fn client(&self) -> anyhow::Result<ApiClient> {
        ApiClient::new(self.gateway_url())
    }

    /// What `--env-file` holds (without `control_url` and `prometheus_config`, which
    /// `harness up` adds).
    fn info(&self) -> EnvInfo {
        let idp = self.identity();
        let customers = self.seed().customer_infos(idp);
        let token_of = |id: &str| {
            customers
                .iter()
                .find(|c| c.customer_id == id)
                .map(|c| c.token.clone())
                .unwrap_or_default()
        };
        EnvInfo {
            backend: self.backend().name().to_string(),
            gateway_url: self.gateway_url().to_string(),
            customer_token: token_of(crate::seed::GOOD_CUSTOMER),
            admin_token: idp.admin_token().unwrap_or_default(),
            declining_customer_token: token_of(crate::seed::DECLINING_CUSTOMER),
            kafka_brokers: self.kafka_brokers().to_string(),
            run_dir: self.run_dir().display().to_string(),
            products: self.seed().product_infos(),
            customers,
            processes: self.process_infos(),
            jwt_public_key_pem: idp.public_key_pem().to_string(),
            startup_ms: u64::try_from(self.startup_time().as_millis()).unwrap_or(u64::MAX),
            toxiproxy_url: self.toxiproxy_url().to_string(),
            links: self.links().to_vec(),
            control_url: None,
            otlp_endpoint: self.otlp_endpoint(),
            metrics_targets: self
                .metrics_targets()
                .into_iter()
                .map(|t| MetricsTargetInfo {
                    process: t.process,
                    url: t.url,
                })
                .collect(),
            prometheus_config: None,
        }
    }

    /// Writes `prometheus.yml` (scraping every process, every 5 s) into the run directory and
    /// returns its path.
    fn write_prometheus_config(&self) -> anyhow::Result<PathBuf> {
        let path = self.run_dir().join("prometheus.yml");
        let text = scrape::prometheus_config(&self.metrics_targets(), Duration::from_secs(5));
        std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
        Ok(path)
    }
}

/// The file name a process's log is saved under: `order#1` is `order-1.log`.
pub fn log_file_name(process: &str) -> String {
    let stem: String = process
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c
            } else {
                '-'
            }
        })
        .collect();
    format!("{stem}.log")
}

/// What every backend's [`Faultable::heal_all`] does: every proxy re-enabled without toxics,
/// then every process healed ([`Environment::heal_process`]). Tries all of it even when a step
/// fails, and reports the first failure.
pub async fn heal_everything<E: Environment + ?Sized>(env: &mut E) -> anyhow::Result<()> {
    let mut first_error = None;
    match env.chaos_client() {
        Ok(c) => {
            if let Err(e) = c.reset().await {
                first_error.get_or_insert(anyhow::Error::from(e).context("resetting the proxies"));
            }
        }
        Err(e) => {
            first_error.get_or_insert(e);
        }
    }
    for name in env.process_names() {
        if let Err(e) = env.heal_process(&name).await {
            first_error.get_or_insert(e);
        }
    }
    first_error.map_or(Ok(()), Err)
}

/// Starts an environment on `backend` and waits until it is seeded and ready. On failure
/// whatever was started is gone again before this returns.
pub async fn start(backend: Backend, options: EnvOptions) -> anyhow::Result<Box<dyn Environment>> {
    match backend {
        Backend::Local => Ok(Box::new(local::LocalEnvironment::start(options).await?)),
        Backend::Containers => Ok(Box::new(
            containers::ContainersEnvironment::start(options).await?,
        )),
        other => anyhow::bail!(
            "the {:?} backend is not supported yet; use \"local\"",
            other.name()
        ),
    }
}

/// The services that can have several instances.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Service {
    Inventory,
    Payment,
    Order,
}

impl Service {
    pub const ALL: [Service; 3] = [Service::Inventory, Service::Payment, Service::Order];

    pub fn name(self) -> &'static str {
        match self {
            Self::Inventory => "inventory",
            Self::Payment => "payment",
            Self::Order => "order",
        }
    }

    /// `order`, `inventory` or `payment`.
    pub fn parse(s: &str) -> Result<Self, String> {
        Self::ALL
            .into_iter()
            .find(|service| service.name() == s.trim())
            .ok_or_else(|| {
                format!(
                    "{:?} is not a service; expected order, inventory or payment",
                    s.trim()
                )
            })
    }
}

impl fmt::Display for Service {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// `order=2,payment=3`: the services named and their counts, in the order given; each service
/// at most once, each count between 1 and [`Instances::MAX`].
pub fn parse_counts(s: &str) -> Result<Vec<(Service, usize)>, String> {
    let mut counts: Vec<(Service, usize)> = Vec::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (name, n) = part
            .split_once('=')
            .ok_or_else(|| format!("{part:?}: expected SERVICE=COUNT, e.g. order=2"))?;
        let n: usize = n
            .trim()
            .parse()
            .map_err(|_| format!("{part:?}: {n:?} is not a number"))?;
        Instances::check_count(n).map_err(|e| format!("{part:?}: {e}"))?;
        let service = Service::parse(name)?;
        if counts.iter().any(|(s, _)| *s == service) {
            return Err(format!("{service} is given twice in {s:?}"));
        }
        counts.push((service, n));
    }
    Ok(counts)
}

/// Instance counts, parsed from `order=2,inventory=2,payment=2`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Instances {
    pub order: usize,
    pub inventory: usize,
    pub payment: usize,
}

impl Default for Instances {
    fn default() -> Self {
        Self {
            order: 1,
            inventory: 1,
            payment: 1,
        }
    }
}

impl Instances {
    pub const MAX: usize = 8;

    /// `order=2,inventory=2,payment=2`; a service left out gets 1.
    pub fn parse(s: &str) -> Result<Self, String> {
        let mut out = Self::default();
        for (service, n) in parse_counts(s)? {
            out.set(service, n);
        }
        Ok(out)
    }

    /// Whether `n` instances of a service may run: 1 to [`Self::MAX`].
    pub fn check_count(n: usize) -> Result<(), String> {
        if n == 0 || n > Self::MAX {
            return Err(format!(
                "the count must be between 1 and {}, not {n}",
                Self::MAX
            ));
        }
        Ok(())
    }

    pub fn set(&mut self, s: Service, n: usize) {
        match s {
            Service::Order => self.order = n,
            Service::Inventory => self.inventory = n,
            Service::Payment => self.payment = n,
        }
    }

    pub fn of(&self, s: Service) -> usize {
        match s {
            Service::Order => self.order,
            Service::Inventory => self.inventory,
            Service::Payment => self.payment,
        }
    }
}

impl fmt::Display for Instances {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "order={},inventory={},payment={}",
            self.order, self.inventory, self.payment
        )
    }
}

/// How to start an environment, on any backend.
#[derive(Debug, Clone)]
pub struct EnvOptions {
    pub instances: Instances,
    /// Keep state (logs, data, ready files) here instead of a temporary directory.
    pub run_dir: Option<PathBuf>,
    pub saga_step_timeout_ms: u64,
    /// The order service's admission control (`ADMISSION=on|off`).
    pub admission: bool,
    /// The share of traces the services record and export (1.0: all).
    pub trace_sampling: f64,
    /// Cores each service instance may use (a cgroup's CPU quota locally, `--cpus` in Docker);
    /// `None`: no limit of its own.
    pub cpus_per_instance: Option<f64>,
    /// The resilience layers of the gateway and the services: the variables of the keys the
    /// scenario set ([`Resilience::gateway_env`], [`Resilience::service_env`]); the system's
    /// defaults for the rest.
    pub resilience: Resilience,
    /// Run `cargo build` for the service binaries first (from a checkout).
    pub build: bool,
    /// What happens to the services' traces.
    pub traces: Traces,
}

impl EnvOptions {
    /// What a scenario's `[environment]` asks for.
    pub fn of(spec: &crate::scenario::Environment, build: bool, traces: Traces) -> Self {
        Self {
            instances: spec.instances.to_instances(),
            run_dir: None,
            saga_step_timeout_ms: u64::try_from(
                Duration::from(*spec.saga_step_timeout.get_ref()).as_millis(),
            )
            .unwrap_or(u64::MAX),
            admission: spec.admission,
            trace_sampling: *spec.trace_sampling.get_ref(),
            cpus_per_instance: spec.cpus_per_instance.as_ref().map(|c| *c.get_ref()),
            resilience: spec.resilience.clone(),
            build,
            traces,
        }
    }
}

impl Default for EnvOptions {
    fn default() -> Self {
        Self {
            instances: Instances::default(),
            run_dir: None,
            saga_step_timeout_ms: 5000,
            admission: true,
            trace_sampling: 1.0,
            cpus_per_instance: None,
            resilience: Resilience::default(),
            build: true,
            traces: Traces::default(),
        }
    }
}

/// What happens to the services' traces.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Traces {
    /// The services export nothing (`OTEL_SDK_DISABLED=true`): the baseline of the tracing
    /// benchmark.
    Off,
    /// The services export to the harness's own OTLP collector, which keeps them (for
    /// `harness trace` and the reports) and, with `forward_to`, also sends every export on to
    /// that collector (`--otlp-endpoint`).
    Collect { forward_to: Option<String> },
}

impl Default for Traces {
    fn default() -> Self {
        Self::Collect { forward_to: None }
    }
}

/// Spans the harness's collector keeps at most (about 0.5 KiB each); beyond it new spans are
/// counted as dropped. A few minutes of load at the knee fit.
pub const MAX_SPANS: usize = 2_000_000;

/// How often each service's batch processor exports: short, so a run's last spans are in before
/// its report is written.
const EXPORT_DELAY_MS: &str = "200";

/// The `OTEL_*` variables of a service: export to the collector at `endpoint` (as the service
/// reaches it), or nothing at all.
pub fn otel_env(endpoint: Option<&str>, sampling: f64) -> BTreeMap<String, String> {
    let mut env = BTreeMap::new();
    match endpoint {
        Some(endpoint) => {
            // The standard sampler variables: a trace the harness (or a caller upstream) started
            // keeps its sampled flag; a trace started in the system is sampled at the ratio.
            if sampling < 1.0 {
                env.insert(
                    "OTEL_TRACES_SAMPLER".into(),
                    "parentbased_traceidratio".into(),
                );
                env.insert("OTEL_TRACES_SAMPLER_ARG".into(), sampling.to_string());
            }
            env.insert("OTEL_EXPORTER_OTLP_ENDPOINT".into(), endpoint.to_string());
            env.insert("OTEL_EXPORTER_OTLP_PROTOCOL".into(), "http/protobuf".into());
            env.insert("OTEL_BSP_SCHEDULE_DELAY".into(), EXPORT_DELAY_MS.into());
            // Room for a few seconds of spans at the knee, so a slow export drops nothing.
            env.insert("OTEL_BSP_MAX_QUEUE_SIZE".into(), "65536".into());
            env.insert("OTEL_BSP_MAX_EXPORT_BATCH_SIZE".into(), "2048".into());
        }
        None => {
            env.insert("OTEL_SDK_DISABLED".into(), "true".into());
        }
    }
    env
}

/// What `--env-file` contains.
#[derive(Debug, Clone, Serialize)]
pub struct EnvInfo {
    /// The backend that runs the environment: `local` or `containers`.
    pub backend: String,
    pub gateway_url: String,
    pub customer_token: String,
    pub admin_token: String,
    /// A customer whose credit limit makes nearly every order decline.
    pub declining_customer_token: String,
    pub kafka_brokers: String,
    pub run_dir: String,
    pub customers: Vec<crate::seed::CustomerInfo>,
    pub products: Vec<crate::seed::ProductInfo>,
    pub processes: Vec<ProcessInfo>,
    pub jwt_public_key_pem: String,
    pub startup_ms: u64,
    /// The chaos-proxy's Toxiproxy API, for `harness chaos` and any Toxiproxy client.
    pub toxiproxy_url: String,
    pub links: Vec<LinkInfo>,
    /// `harness up`'s control API, for `harness chaos` (instance faults).
    pub control_url: Option<String>,
    /// The harness's OTLP collector (`/v1/traces`), where the services send their traces and
    /// where `harness trace` reads them; absent when traces are off.
    pub otlp_endpoint: Option<String>,
    /// Where every process's Prometheus `/metrics` is.
    pub metrics_targets: Vec<MetricsTargetInfo>,
    /// A Prometheus config scraping all of them, for a Prometheus of your own.
    pub prometheus_config: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct MetricsTargetInfo {
    pub process: String,
    pub url: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct ProcessInfo {
    pub name: String,
    pub pid: u32,
    pub addr: String,
    pub url: Option<String>,
    pub log: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instance_counts_parse_and_default_to_one() {
        assert_eq!(Instances::parse("").unwrap(), Instances::default());
        let i = Instances::parse("order=2, payment=3").unwrap();
        assert_eq!((i.order, i.inventory, i.payment), (2, 1, 3));
        assert_eq!(i.to_string(), "order=2,inventory=1,payment=3");
    }

    #[test]
    fn bad_instance_counts_say_what_was_wrong() {
        assert!(
            Instances::parse("order")
                .unwrap_err()
                .contains("SERVICE=COUNT")
        );
        assert!(
            Instances::parse("order=x")
                .unwrap_err()
                .contains("not a number")
        );
        assert!(
            Instances::parse("order=0")
                .unwrap_err()
                .contains("between 1")
        );
        assert!(
            Instances::parse("shipping=2")
                .unwrap_err()
                .contains("not a service")
        );
        assert!(
            Instances::parse("order=2,order=3")
                .unwrap_err()
                .contains("order is given twice")
        );
    }

    #[test]
    fn counts_name_only_the_services_given() {
        assert_eq!(
            parse_counts("payment=3, order=2").unwrap(),
            [(Service::Payment, 3), (Service::Order, 2)]
        );
        assert!(parse_counts("").unwrap().is_empty());
        assert_eq!(Service::parse(" inventory ").unwrap(), Service::Inventory);
    }

    #[test]
    fn traces_off_switches_the_sdk_off_and_on_points_it_at_the_collector() {
        assert_eq!(otel_env(None, 1.0)["OTEL_SDK_DISABLED"], "true");
        let on = otel_env(Some("http://127.0.0.1:4318"), 1.0);
        assert_eq!(on["OTEL_EXPORTER_OTLP_ENDPOINT"], "http://127.0.0.1:4318");
        assert!(!on.contains_key("OTEL_SDK_DISABLED"));
        assert!(
            !on.contains_key("OTEL_TRACES_SAMPLER"),
            "every trace by default"
        );
        let sampled = otel_env(Some("http://127.0.0.1:4318"), 0.05);
        assert_eq!(sampled["OTEL_TRACES_SAMPLER"], "parentbased_traceidratio");
        assert_eq!(sampled["OTEL_TRACES_SAMPLER_ARG"], "0.05");
    }
}
