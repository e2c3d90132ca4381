//! The local backend: the whole system as child processes on 127.0.0.1.
//!
//! Start-up order: the broker; then the first instance of inventory, payment and order in
//! parallel (each runs its own migrations; the other instances of a service start after the
//! first, so two never migrate one SQLite file at once); the gateway; then seeding through the
//! gateway's admin API. Every instance gets a fixed port chosen up front, so a killed instance
//! restarts where the gateway expects it. If anything fails half way, everything started so far
//! is stopped before the error is returned.

pub mod binaries;
pub mod links;
pub mod process;

pub use self::links::LinkInfo;
use self::links::{CLIENT_LINK, PLACEHOLDER_UPSTREAM};

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use nix::sys::signal::Signal;
use serde::Serialize;

use self::binaries::Binaries;
use self::process::{Spec, Supervised, free_port};
use crate::seed::{IdentityProvider, Seed};
use crate::telemetry::collector::{Collector, CollectorOptions};
use crate::telemetry::scrape;
use crate::telemetry::store::SpanStore;

const READY_TIMEOUT: Duration = Duration::from_secs(60);
const STOP_GRACE: Duration = Duration::from_secs(10);

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

    fn binary(self) -> &'static str {
        match self {
            Self::Inventory => binaries::INVENTORY,
            Self::Payment => binaries::PAYMENT,
            Self::Order => binaries::ORDER,
        }
    }
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

    pub fn parse(s: &str) -> Result<Self, String> {
        let mut out = Self::default();
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (name, n) = part
                .split_once('=')
                .ok_or_else(|| format!("{part:?}: expected SERVICE=COUNT, e.g. order=2"))?;
            let n: usize = n
                .trim()
                .parse()
                .map_err(|_| format!("{part:?}: {n:?} is not a number"))?;
            if n == 0 || n > Self::MAX {
                return Err(format!(
                    "{part:?}: the count must be between 1 and {}",
                    Self::MAX
                ));
            }
            match name.trim() {
                "order" => out.order = n,
                "inventory" => out.inventory = n,
                "payment" => out.payment = n,
                other => {
                    return Err(format!(
                        "{other:?} is not a service; expected order, inventory or payment"
                    ));
                }
            }
        }
        Ok(out)
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

/// How to start the local environment.
#[derive(Debug, Clone)]
pub struct LocalOptions {
    pub instances: Instances,
    /// Keep state here instead of a temporary directory.
    pub run_dir: Option<PathBuf>,
    pub saga_step_timeout_ms: u64,
    /// Run `cargo build` for the service binaries first (from a checkout).
    pub build: bool,
    /// What happens to the services' traces.
    pub traces: Traces,
}

impl Default for LocalOptions {
    fn default() -> Self {
        Self {
            instances: Instances::default(),
            run_dir: None,
            saga_step_timeout_ms: 5000,
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

/// What `--env-file` contains.
#[derive(Debug, Clone, Serialize)]
pub struct EnvInfo {
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

enum RunDir {
    Temp(tempfile::TempDir),
    Kept(PathBuf),
}

impl RunDir {
    fn path(&self) -> &Path {
        match self {
            Self::Temp(t) => t.path(),
            Self::Kept(p) => p,
        }
    }
}

/// A running local environment. Dropping it kills every process; [`LocalEnvironment::stop`]
/// stops them gracefully.
pub struct LocalEnvironment {
    // Field order matters on drop: processes die before the collector and the run directory go.
    processes: Vec<Supervised>,
    /// The OTLP collector the services export to; `None` with [`Traces::Off`].
    collector: Option<Collector>,
    idp: IdentityProvider,
    seed: Seed,
    /// The gateway as clients reach it: through the `client->gateway` proxy.
    gateway_url: String,
    kafka_brokers: String,
    /// The chaos-proxy's Toxiproxy API, e.g. `http://127.0.0.1:8474`.
    chaos_url: String,
    links: Vec<LinkInfo>,
    /// From the first process spawned to seeded and ready (building binaries excluded).
    startup_time: Duration,
    run_dir: RunDir,
}

impl LocalEnvironment {
    /// Starts everything and waits until the gateway is ready and the data is seeded.
    pub async fn start(options: LocalOptions) -> anyhow::Result<Self> {
        let binaries = Binaries::locate(options.build).await?;
        let started = std::time::Instant::now();
        let run_dir = match &options.run_dir {
            Some(p) => {
                std::fs::create_dir_all(p)
                    .with_context(|| format!("creating run dir {}", p.display()))?;
                RunDir::Kept(p.canonicalize()?)
            }
            None => RunDir::Temp(
                tempfile::Builder::new()
                    .prefix("harness-run-")
                    .tempdir()
                    .context("creating a temporary run dir")?,
            ),
        };
        for sub in ["logs", "ready", "data"] {
            std::fs::create_dir_all(run_dir.path().join(sub))?;
        }
        let idp = IdentityProvider::new()?;
        let collector = match &options.traces {
            Traces::Off => None,
            Traces::Collect { forward_to } => Some(
                Collector::start(CollectorOptions {
                    forward_to: forward_to.clone(),
                    max_spans: MAX_SPANS,
                })
                .await
                .context("starting the OTLP collector")?,
            ),
        };
        let mut env = Self {
            processes: Vec::new(),
            collector,
            idp,
            seed: Seed::standard(),
            gateway_url: String::new(),
            kafka_brokers: String::new(),
            chaos_url: String::new(),
            links: Vec::new(),
            startup_time: Duration::ZERO,
            run_dir,
        };
        // On error `env` drops here, which kills whatever was started.
        env.boot(&binaries, &options).await?;
        env.startup_time = started.elapsed();
        Ok(env)
    }

    async fn boot(&mut self, bin: &Binaries, options: &LocalOptions) -> anyhow::Result<()> {
        let dir = self.run_dir.path().to_path_buf();
        let secret = hex_secret();

        // Every link goes through a named proxy of the chaos-proxy (Toxiproxy's API).
        let i = self.launch(Spec {
            name: "chaos-proxy".into(),
            program: bin.path(binaries::CHAOS_PROXY),
            args: vec![
                "--host".into(),
                "127.0.0.1".into(),
                "--port".into(),
                "0".into(),
            ],
            env: BTreeMap::new(),
            ready_file: dir.join("ready/chaos-proxy.json"),
            log_file: dir.join("logs/chaos-proxy.log"),
        })?;
        let api = self.processes[i].wait_ready(READY_TIMEOUT).await?;
        self.chaos_url = format!("http://{api}");
        let proxies = self.chaos_client()?;
        let instance_names: Vec<String> = Service::ALL
            .into_iter()
            .flat_map(|s| (1..=options.instances.of(s)).map(move |n| format!("{}#{n}", s.name())))
            .collect();
        // Each instance's link to the broker: the broker advertises the proxy's address to the
        // clients that come through it (a "front" per instance), so all of an instance's Kafka
        // traffic, not only its first metadata request, takes its own link. The upstream is
        // set once the broker has opened the fronts.
        let mut kafka_links = BTreeMap::new();
        for name in &instance_names {
            let link = format!("{name}->kafka");
            let listen = links::create(&proxies, &link, PLACEHOLDER_UPSTREAM).await?;
            kafka_links.insert(name.clone(), (link, listen));
        }

        // The broker needs its port up front (it advertises it); another process may take a
        // port between our probe and the broker's bind, so a failed start is tried again on a
        // fresh port.
        let mut attempt = 0;
        loop {
            attempt += 1;
            self.kafka_brokers = format!("127.0.0.1:{}", free_port()?);
            let mut args = vec![
                "--listen".into(),
                self.kafka_brokers.clone(),
                "--data-dir".into(),
                dir.join("data/broker").display().to_string(),
                "--exit-on-stdin-eof".into(),
                "--ready-file".into(),
                dir.join("ready/broker.json").display().to_string(),
            ];
            for (_, listen) in kafka_links.values() {
                args.push("--front".into());
                args.push(listen.to_string());
            }
            let broker = Spec {
                name: "broker".into(),
                program: bin.path(binaries::BROKER),
                args,
                env: BTreeMap::new(),
                ready_file: dir.join("ready/broker.json"),
                log_file: dir.join("logs/broker.log"),
            };
            let i = self.launch(broker)?;
            match self.processes[i].wait_ready(READY_TIMEOUT).await {
                Ok(_) => {
                    let fronts = links::broker_fronts(&self.processes[i].spec.ready_file)?;
                    for (link, listen) in kafka_links.values() {
                        let front = fronts.get(listen).with_context(|| {
                            format!("the broker opened no front for {link} ({listen})")
                        })?;
                        links::set_upstream(&proxies, link, &front.to_string()).await?;
                        self.links.push(LinkInfo {
                            name: link.clone(),
                            listen: listen.to_string(),
                            upstream: front.to_string(),
                        });
                    }
                    // A restarted broker must open its fronts where the proxies point.
                    links::pin_fronts(&mut self.processes[i].spec, &fronts);
                    break;
                }
                Err(e) if attempt < 3 => {
                    tracing::warn!(error = %format!("{e:#}"), "the broker did not start; retrying");
                    if let Some(mut p) = self.processes.pop() {
                        p.kill().await;
                    }
                }
                Err(e) => return Err(e),
            }
        }
        // One creator before the services start: they would otherwise all create the same
        // topics at the same moment.
        platform::messaging::kafka::ensure_topics(
            &self.kafka_brokers,
            &contracts::messages::topics::all(),
        )
        .await
        .context("creating the Kafka topics")?;

        let mut urls: BTreeMap<Service, Vec<String>> = BTreeMap::new();
        let mut later = Vec::new();
        let mut first = Vec::new();
        for service in Service::ALL {
            for n in 1..=options.instances.of(service) {
                let name = format!("{}#{n}", service.name());
                let file = format!("{}-{n}", service.name());
                let mut env = BTreeMap::new();
                // Any free port, announced in the ready file: no race with other processes
                // for a port picked in advance. A restart reuses the port it got (see below).
                env.insert("BIND_ADDR".into(), "127.0.0.1:0".into());
                env.insert("INSTANCE_ID".into(), name.clone());
                env.insert("SERVICE_TOKEN_SECRET".into(), secret.clone());
                env.insert(
                    "DATABASE_URL".into(),
                    format!(
                        "sqlite://{}",
                        dir.join(format!("data/{}.db", service.name())).display()
                    ),
                );
                let kafka = kafka_links
                    .get(&name)
                    .map_or_else(|| self.kafka_brokers.clone(), |(_, l)| l.to_string());
                env.insert("KAFKA_BROKERS".into(), kafka);
                // tansu 0.6 never evicts a consumer-group leader killed with SIGKILL, which
                // would stall a shared group for good; see platform's `GroupMode`.
                env.insert("KAFKA_CONSUMER_GROUPS".into(), "per-instance".into());
                if service == Service::Order {
                    env.insert(
                        "SAGA_STEP_TIMEOUT_MS".into(),
                        options.saga_step_timeout_ms.to_string(),
                    );
                }
                env.extend(self.otel_env());
                let spec = Spec {
                    name,
                    program: bin.path(service.binary()),
                    args: vec![],
                    env,
                    ready_file: dir.join(format!("ready/{file}.json")),
                    log_file: dir.join(format!("logs/{file}.log")),
                };
                if n == 1 {
                    first.push(spec)
                } else {
                    later.push(spec)
                }
            }
        }
        for batch in [first, later] {
            let idx: Vec<usize> = batch
                .into_iter()
                .map(|s| self.launch(s))
                .collect::<anyhow::Result<_>>()?;
            // All of the batch are already starting, so waiting in turn takes as long as the
            // slowest one.
            for i in idx {
                self.processes[i].wait_ready(READY_TIMEOUT).await?;
            }
        }
        let mut gateway_links = Vec::new();
        for p in &mut self.processes {
            let Some(addr) = p.addr else { continue };
            if let Some(service) = Service::ALL
                .into_iter()
                .find(|s| p.spec.name.starts_with(&format!("{}#", s.name())))
            {
                p.pin_port(addr);
                gateway_links.push((service, p.spec.name.clone(), addr));
            }
        }
        for (service, name, addr) in gateway_links {
            let link = format!("gateway->{name}");
            let listen = links::create(&proxies, &link, &addr.to_string()).await?;
            self.links.push(LinkInfo {
                name: link,
                listen: listen.to_string(),
                upstream: addr.to_string(),
            });
            urls.entry(service)
                .or_default()
                .push(format!("http://{listen}"));
        }

        let mut env = BTreeMap::new();
        env.insert("BIND_ADDR".into(), "127.0.0.1:0".into());
        env.insert("INSTANCE_ID".into(), "gateway#1".into());
        env.insert("SERVICE_TOKEN_SECRET".into(), secret.clone());
        env.insert(
            "JWT_PUBLIC_KEY_PEM".into(),
            self.idp.public_key_pem().to_string(),
        );
        env.insert("JWT_ISSUER".into(), crate::seed::ISSUER.into());
        env.extend(self.otel_env());
        env.insert("JWT_AUDIENCE".into(), crate::seed::AUDIENCE.into());
        for (service, var) in [
            (Service::Order, "ORDER_URLS"),
            (Service::Inventory, "INVENTORY_URLS"),
            (Service::Payment, "PAYMENT_URLS"),
        ] {
            env.insert(
                var.into(),
                urls.get(&service).map(|u| u.join(",")).unwrap_or_default(),
            );
        }
        let gateway = Spec {
            name: "gateway#1".into(),
            program: bin.path(binaries::GATEWAY),
            args: vec![],
            env,
            ready_file: dir.join("ready/gateway-1.json"),
            log_file: dir.join("logs/gateway-1.log"),
        };
        let i = self.launch(gateway)?;
        let addr = self.processes[i].wait_ready(READY_TIMEOUT).await?;
        self.processes[i].pin_port(addr);
        let listen = links::create(&proxies, CLIENT_LINK, &addr.to_string()).await?;
        self.links.insert(
            0,
            LinkInfo {
                name: CLIENT_LINK.into(),
                listen: listen.to_string(),
                upstream: addr.to_string(),
            },
        );
        self.gateway_url = format!("http://{listen}");

        // Listed client first, then the gateway's links, then the links to the broker.
        let order = crate::faults::target::local_links(&options.instances);
        self.links.sort_by_key(|l| {
            order
                .iter()
                .position(|n| *n == l.name)
                .unwrap_or(usize::MAX)
        });

        let client = crate::client::ApiClient::new(&self.gateway_url)?;
        client
            .wait_ready(READY_TIMEOUT)
            .await
            .context("waiting for the gateway to be ready")?;
        let admin = self.idp.admin_token()?;
        self.seed
            .apply(&client, &admin)
            .await
            .context("seeding products and customers through the gateway")?;
        Ok(())
    }

    /// The `OTEL_*` variables of a service: export to our collector, or nothing at all.
    fn otel_env(&self) -> BTreeMap<String, String> {
        let mut env = BTreeMap::new();
        match &self.collector {
            Some(c) => {
                env.insert("OTEL_EXPORTER_OTLP_ENDPOINT".into(), c.endpoint());
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

    fn launch(&mut self, spec: Spec) -> anyhow::Result<usize> {
        let p = Supervised::spawn(spec)?;
        self.processes.push(p);
        Ok(self.processes.len() - 1)
    }

    /// How long start-up took, from the first process spawned to seeded and ready.
    pub fn startup_time(&self) -> Duration {
        self.startup_time
    }

    pub fn gateway_url(&self) -> &str {
        &self.gateway_url
    }

    pub fn kafka_brokers(&self) -> &str {
        &self.kafka_brokers
    }

    /// The chaos-proxy's Toxiproxy API.
    pub fn chaos_url(&self) -> &str {
        &self.chaos_url
    }

    /// A Toxiproxy client of the chaos-proxy.
    pub fn chaos_client(&self) -> anyhow::Result<chaos::Client> {
        chaos::Client::new(&self.chaos_url).context("creating the chaos-proxy client")
    }

    /// The spans the services exported so far; `None` when traces are off.
    pub fn spans(&self) -> Option<std::sync::Arc<SpanStore>> {
        self.collector.as_ref().map(Collector::store)
    }

    /// The collector's base URL (OTLP at `/v1/traces`, queries at `/api/traces`).
    pub fn otlp_endpoint(&self) -> Option<String> {
        self.collector.as_ref().map(Collector::endpoint)
    }

    /// Every process that serves Prometheus `/metrics`: each service instance and the gateway
    /// (scraped directly, not through their proxies: a fault on a link must not blind the
    /// observer), and the chaos-proxy.
    pub fn metrics_targets(&self) -> Vec<scrape::Target> {
        let mut targets: Vec<scrape::Target> = self
            .processes
            .iter()
            .filter(|p| p.spec.name.contains('#'))
            .filter_map(|p| {
                let addr = p.addr?;
                let service = p.spec.name.split('#').next()?.to_string();
                Some(scrape::Target {
                    process: p.spec.name.clone(),
                    service,
                    url: format!("http://{addr}/metrics"),
                })
            })
            .collect();
        targets.push(scrape::Target {
            process: "chaos-proxy".into(),
            service: "chaos-proxy".into(),
            url: format!("{}/metrics", self.chaos_url),
        });
        targets
    }

    /// Writes `prometheus.yml` (scraping every process, every 5 s) into the run directory and
    /// returns its path.
    pub fn write_prometheus_config(&self) -> anyhow::Result<PathBuf> {
        let path = self.run_dir.path().join("prometheus.yml");
        let text = scrape::prometheus_config(&self.metrics_targets(), Duration::from_secs(5));
        std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
        Ok(path)
    }

    /// Every link, each through its named proxy: `client->gateway`, `gateway->order#1`, ...,
    /// `order#1->kafka`, ...
    pub fn links(&self) -> &[LinkInfo] {
        &self.links
    }

    /// Heals everything a fault may have done: every proxy re-enabled without toxics, every
    /// paused process resumed, every killed or stopped process restarted. Tries all of it even
    /// when a step fails, and reports the first failure.
    pub async fn heal_all(&mut self) -> anyhow::Result<()> {
        let mut first_error = None;
        match self.chaos_client() {
            Ok(c) => {
                if let Err(e) = c.reset().await {
                    first_error
                        .get_or_insert(anyhow::Error::from(e).context("resetting the proxies"));
                }
            }
            Err(e) => {
                first_error.get_or_insert(e);
            }
        }
        for name in self.process_names() {
            if let Err(e) = self.heal_process(&name).await {
                first_error.get_or_insert(e);
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    /// Resumes the process if it runs (a paused one), restarts it if it does not (a killed or
    /// stopped one).
    pub async fn heal_process(&mut self, name: &str) -> anyhow::Result<()> {
        let p = self.process(name)?;
        if p.is_running() {
            p.signal(Signal::SIGCONT)
        } else {
            p.respawn()?;
            p.wait_ready(READY_TIMEOUT)
                .await
                .map(|_| ())
                .with_context(|| format!("restarting {name}"))
        }
    }

    pub fn run_dir(&self) -> &Path {
        self.run_dir.path()
    }

    pub fn identity(&self) -> &IdentityProvider {
        &self.idp
    }

    pub fn seed(&self) -> &Seed {
        &self.seed
    }

    /// A client of the gateway.
    pub fn client(&self) -> anyhow::Result<crate::client::ApiClient> {
        crate::client::ApiClient::new(&self.gateway_url)
    }

    /// Names of all processes (`broker`, `order#1`, `gateway#1`, ...).
    pub fn process_names(&self) -> Vec<String> {
        self.processes.iter().map(|p| p.spec.name.clone()).collect()
    }

    fn process(&mut self, name: &str) -> anyhow::Result<&mut Supervised> {
        let names = self.process_names();
        self.processes
            .iter_mut()
            .find(|p| p.spec.name == name)
            .with_context(|| format!("no process named {name:?}; there are {}", names.join(", ")))
    }

    /// SIGKILL one instance (it stays down until [`Self::restart`]).
    pub async fn kill(&mut self, name: &str) -> anyhow::Result<()> {
        self.process(name)?.kill().await;
        Ok(())
    }

    /// Starts a killed or stopped instance again on the same port and waits until it is ready.
    pub async fn restart(&mut self, name: &str) -> anyhow::Result<()> {
        let p = self.process(name)?;
        if p.is_running() {
            bail!("{name} is still running; kill or stop it first");
        }
        p.respawn()?;
        p.wait_ready(READY_TIMEOUT).await?;
        Ok(())
    }

    /// SIGSTOP one instance: it holds its connections but answers nothing.
    pub fn pause(&mut self, name: &str) -> anyhow::Result<()> {
        self.process(name)?.signal(Signal::SIGSTOP)
    }

    /// SIGCONT a paused instance.
    pub fn resume(&mut self, name: &str) -> anyhow::Result<()> {
        self.process(name)?.signal(Signal::SIGCONT)
    }

    /// Graceful stop of one instance (SIGTERM).
    pub async fn stop_instance(&mut self, name: &str) -> anyhow::Result<()> {
        self.process(name)?.stop(STOP_GRACE).await;
        Ok(())
    }

    /// What `--env-file` holds.
    pub fn info(&self) -> EnvInfo {
        let customers = self.seed.customer_infos(&self.idp);
        let token_of = |id: &str| {
            customers
                .iter()
                .find(|c| c.customer_id == id)
                .map(|c| c.token.clone())
                .unwrap_or_default()
        };
        EnvInfo {
            gateway_url: self.gateway_url.clone(),
            customer_token: token_of(crate::seed::GOOD_CUSTOMER),
            admin_token: self.idp.admin_token().unwrap_or_default(),
            declining_customer_token: token_of(crate::seed::DECLINING_CUSTOMER),
            kafka_brokers: self.kafka_brokers.clone(),
            run_dir: self.run_dir.path().display().to_string(),
            products: self.seed.product_infos(),
            customers,
            processes: self
                .processes
                .iter()
                .map(|p| ProcessInfo {
                    name: p.spec.name.clone(),
                    pid: p.pid().unwrap_or_default(),
                    addr: p.addr.map(|a| a.to_string()).unwrap_or_default(),
                    url: p
                        .addr
                        .filter(|_| p.spec.name != "broker")
                        .map(|a| format!("http://{a}")),
                    log: p.spec.log_file.display().to_string(),
                })
                .collect(),
            jwt_public_key_pem: self.idp.public_key_pem().to_string(),
            startup_ms: u64::try_from(self.startup_time.as_millis()).unwrap_or(u64::MAX),
            toxiproxy_url: self.chaos_url.clone(),
            links: self.links.clone(),
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

    /// Stops everything gracefully, in reverse start order (gateway first, broker last).
    pub async fn stop(mut self) {
        while let Some(mut p) = self.processes.pop() {
            p.stop(STOP_GRACE).await;
        }
    }
}

fn hex_secret() -> String {
    let bytes: [u8; 32] = rand_bytes();
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn rand_bytes() -> [u8; 32] {
    let a = uuid::Uuid::new_v4();
    let b = uuid::Uuid::new_v4();
    let mut out = [0u8; 32];
    out[..16].copy_from_slice(a.as_bytes());
    out[16..].copy_from_slice(b.as_bytes());
    out
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
    }
}
