//! The local backend: the whole system as child processes on 127.0.0.1.
//!
//! Start-up order ([`LocalEnvironment::boot`]): the chaos-proxy; one proxy for the Kafka traffic
//! of every instance there may ever be (up to [`Instances::MAX`] per service, see
//! [`LocalEnvironment::create_kafka_links`]); the broker; the topics; then the first instance of
//! inventory, payment and order in parallel (each runs its own migrations; the other instances of
//! a service start after the first, so two never migrate one SQLite file at once); the gateway's
//! links, the upstreams file and the gateway; then seeding through the gateway's admin API. Every
//! instance keeps the port it first got, so a killed instance restarts where the gateway expects
//! it. If anything fails half way, everything started so far is stopped before the error is
//! returned. Instances are added and removed while it runs by [`scale`].

pub mod binaries;
pub mod cpu_budget;
pub mod links;
pub mod messages;
pub mod process;
pub mod scale;

pub use self::links::LinkInfo;
use self::links::{CLIENT_LINK, PLACEHOLDER_UPSTREAM};

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use nix::sys::signal::Signal;

use self::binaries::Binaries;
use self::cpu_budget::CpuBudget;
use self::process::{Spec, Supervised, free_port};
use super::{
    EnvOptions, Environment, Faultable, Instances, MAX_SPANS, ProcessInfo, Service, Traces,
};
use crate::scenario::Backend;
use crate::seed::{IdentityProvider, Seed};
use crate::telemetry::collector::{Collector, CollectorOptions};
use crate::telemetry::scrape;
use crate::telemetry::store::SpanStore;

const READY_TIMEOUT: Duration = Duration::from_secs(60);
const STOP_GRACE: Duration = Duration::from_secs(10);
/// The one gateway process.
const GATEWAY: &str = "gateway#1";

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

/// A running local environment. Dropping it kills every process; [`Environment::stop`] stops
/// them gracefully.
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
    /// The share of traces the services record and export.
    trace_sampling: f64,
    /// What the gateway signs its service tokens with (HS256), shared by every service.
    service_secret: String,
    /// What an instance starts with, at boot or added later ([`Self::instance_spec`]).
    binaries: Binaries,
    options: EnvOptions,
    /// The link to the broker of every instance there may be, running or not, by instance name;
    /// [`Self::links`] lists those of the instances there are.
    kafka_links: BTreeMap<String, LinkInfo>,
    /// The logs of instances scaled away, by instance name, so reports still keep them.
    retired_logs: BTreeMap<String, PathBuf>,
    /// [`Environment::metrics_targets`] for scrapers watching them, sent again whenever
    /// instances are added or removed.
    scrape_targets: tokio::sync::watch::Sender<Vec<scrape::Target>>,
    /// Every service instance's CPU budget (`cpus_per_instance`); after `processes`, whose specs
    /// hold it too, so its cgroups go once the processes have.
    cpu_budget: Option<Arc<CpuBudget>>,
    run_dir: RunDir,
}

/// Each instance's link to the broker: instance name to (link name, where its proxy listens).
type KafkaLinks = BTreeMap<String, (String, SocketAddr)>;

impl LocalEnvironment {
    /// Starts everything and waits until the gateway is ready and the data is seeded.
    pub async fn start(options: EnvOptions) -> anyhow::Result<Self> {
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
        let cpu_budget = options
            .cpus_per_instance
            .map(CpuBudget::new)
            .transpose()?
            .map(Arc::new);
        let collector = match &options.traces {
            Traces::Off => None,
            Traces::Collect { forward_to } => Some(
                Collector::start(CollectorOptions {
                    forward_to: forward_to.clone(),
                    max_spans: MAX_SPANS,
                    also_bind: None,
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
            trace_sampling: options.trace_sampling,
            service_secret: hex_secret(),
            binaries,
            options,
            kafka_links: BTreeMap::new(),
            retired_logs: BTreeMap::new(),
            scrape_targets: tokio::sync::watch::Sender::new(Vec::new()),
            cpu_budget,
            run_dir,
        };
        // On error `env` drops here, which kills whatever was started.
        env.boot().await?;
        env.startup_time = started.elapsed();
        Ok(env)
    }

    /// The start-up steps, in order.
    async fn boot(&mut self) -> anyhow::Result<()> {
        let bin = self.binaries.clone();
        self.start_chaos_proxy(&bin).await?;
        let proxies = self.chaos_client()?;
        let kafka_links = Self::create_kafka_links(&proxies).await?;
        self.start_broker(&bin, &proxies, &kafka_links).await?;
        // One creator before the services start: they would otherwise all create the same
        // topics at the same moment.
        platform::messaging::kafka::ensure_topics(
            &self.kafka_brokers,
            &contracts::messages::topics::all(),
        )
        .await
        .context("creating the Kafka topics")?;
        self.start_services().await?;
        self.link_services(&proxies).await?;
        self.publish_upstreams()?;
        self.start_gateway(&bin, &proxies).await?;
        self.sort_links();
        self.seed_data().await
    }

    /// Every link goes through a named proxy of the chaos-proxy (Toxiproxy's API).
    async fn start_chaos_proxy(&mut self, bin: &Binaries) -> anyhow::Result<()> {
        let dir = self.run_dir.path().to_path_buf();
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
            cpu_budget: None,
        })?;
        let api = self.processes[i].wait_ready(READY_TIMEOUT).await?;
        self.chaos_url = format!("http://{api}");
        Ok(())
    }

    /// Each instance's link to the broker: the broker advertises the proxy's address to the
    /// clients that come through it (a "front" per instance), so all of an instance's Kafka
    /// traffic, not only its first metadata request, takes its own link. The upstream is set
    /// once the broker has opened the fronts. The broker opens fronts only when it starts, so
    /// every instance there may ever be ([`Instances::MAX`] per service) gets its link now,
    /// and an instance added at run time ([`scale`]) finds its own waiting.
    async fn create_kafka_links(proxies: &chaos::Client) -> anyhow::Result<KafkaLinks> {
        let mut kafka_links = BTreeMap::new();
        for service in Service::ALL {
            for n in 1..=Instances::MAX {
                let name = format!("{}#{n}", service.name());
                let link = format!("{name}->kafka");
                let listen = links::create(proxies, &link, PLACEHOLDER_UPSTREAM).await?;
                kafka_links.insert(name, (link, listen));
            }
        }
        Ok(kafka_links)
    }

    /// The broker needs its port up front (it advertises it); another process may take a port
    /// between our probe and the broker's bind, so a failed start is tried again on a fresh
    /// port.
    async fn start_broker(
        &mut self,
        bin: &Binaries,
        proxies: &chaos::Client,
        kafka_links: &KafkaLinks,
    ) -> anyhow::Result<()> {
        let dir = self.run_dir.path().to_path_buf();
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
                // Message faults (duplicate, lost_ack, delay) are set through it.
                "--control".into(),
                "127.0.0.1:0".into(),
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
                cpu_budget: None,
            };
            let i = self.launch(broker)?;
            match self.processes[i].wait_ready(READY_TIMEOUT).await {
                Ok(_) => {
                    let fronts = links::broker_fronts(&self.processes[i].spec.ready_file)?;
                    for (instance, (link, listen)) in kafka_links {
                        let front = fronts.get(listen).with_context(|| {
                            format!("the broker opened no front for {link} ({listen})")
                        })?;
                        links::set_upstream(proxies, link, &front.to_string()).await?;
                        self.kafka_links.insert(
                            instance.clone(),
                            LinkInfo {
                                name: link.clone(),
                                listen: listen.to_string(),
                                upstream: front.to_string(),
                            },
                        );
                    }
                    // A restarted broker must open its fronts where the proxies point.
                    links::pin_fronts(&mut self.processes[i].spec, &fronts);
                    return Ok(());
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
    }

    /// The service instances: the first of each service together, then the others.
    async fn start_services(&mut self) -> anyhow::Result<()> {
        let mut first = Vec::new();
        let mut later = Vec::new();
        for service in Service::ALL {
            for n in 1..=self.options.instances.of(service) {
                let spec = self.instance_spec(service, n);
                if n == 1 {
                    first.push(spec);
                } else {
                    later.push(spec);
                }
            }
        }
        for batch in [first, later] {
            self.start_instances(batch).await?;
        }
        // Only the started instances' links to the broker are links of the environment.
        let started: Vec<LinkInfo> = self
            .service_instances()
            .iter()
            .filter_map(|name| self.kafka_links.get(name).cloned())
            .collect();
        self.links.extend(started);
        Ok(())
    }

    /// How instance `n` of `service` starts, at boot or added later: on any free port, announced
    /// in its ready file (no race with other processes for a port picked in advance; a restart
    /// reuses the port it got, see [`Self::link_instance`]), through its own link to the broker,
    /// with its service's database and the options the environment was started with.
    fn instance_spec(&self, service: Service, n: usize) -> Spec {
        let dir = self.run_dir.path();
        let name = format!("{}#{n}", service.name());
        let file = format!("{}-{n}", service.name());
        let options = &self.options;
        let mut env = BTreeMap::new();
        env.insert("BIND_ADDR".into(), "127.0.0.1:0".into());
        env.insert("INSTANCE_ID".into(), name.clone());
        env.insert("SERVICE_TOKEN_SECRET".into(), self.service_secret.clone());
        env.insert(
            "DATABASE_URL".into(),
            format!(
                "sqlite://{}",
                dir.join(format!("data/{}.db", service.name())).display()
            ),
        );
        let kafka = self
            .kafka_links
            .get(&name)
            .map_or_else(|| self.kafka_brokers.clone(), |l| l.listen.clone());
        env.insert("KAFKA_BROKERS".into(), kafka);
        if service == Service::Order {
            env.insert(
                "SAGA_STEP_TIMEOUT_MS".into(),
                options.saga_step_timeout_ms.to_string(),
            );
            env.insert(
                "ADMISSION".into(),
                if options.admission { "on" } else { "off" }.into(),
            );
        }
        env.extend(super::otel_env(
            self.otlp_endpoint().as_deref(),
            self.trace_sampling,
        ));
        env.extend(options.resilience.service_env());
        Spec {
            name,
            program: self.binaries.path(binaries::of(service)),
            args: vec![],
            env,
            ready_file: dir.join(format!("ready/{file}.json")),
            log_file: dir.join(format!("logs/{file}.log")),
            cpu_budget: self.cpu_budget.clone(),
        }
    }

    /// Starts `specs` together and waits until each is ready.
    async fn start_instances(&mut self, specs: Vec<Spec>) -> anyhow::Result<()> {
        let idx: Vec<usize> = specs
            .into_iter()
            .map(|s| self.launch(s))
            .collect::<anyhow::Result<_>>()?;
        // All of them are already starting, so waiting in turn takes as long as the slowest one.
        for i in idx {
            self.processes[i].wait_ready(READY_TIMEOUT).await?;
        }
        Ok(())
    }

    /// The service instances there are (`order#2`), in start order.
    fn service_instances(&self) -> Vec<String> {
        self.processes
            .iter()
            .filter(|p| {
                p.spec
                    .name
                    .split_once('#')
                    .is_some_and(|(service, _)| Service::parse(service).is_ok())
            })
            .map(|p| p.spec.name.clone())
            .collect()
    }

    /// The gateway's link to each instance.
    async fn link_services(&mut self, proxies: &chaos::Client) -> anyhow::Result<()> {
        for name in self.service_instances() {
            self.link_instance(proxies, &name).await?;
        }
        Ok(())
    }

    /// The gateway's link to the ready instance `name`; its port is pinned, so a restart comes
    /// back where the link points.
    async fn link_instance(&mut self, proxies: &chaos::Client, name: &str) -> anyhow::Result<()> {
        let p = self.process(name)?;
        let addr = p
            .addr
            .with_context(|| format!("{name} has announced no address"))?;
        p.pin_port(addr);
        let link = format!("gateway->{name}");
        let listen = links::create(proxies, &link, &addr.to_string()).await?;
        self.links.push(LinkInfo {
            name: link,
            listen: listen.to_string(),
            upstream: addr.to_string(),
        });
        Ok(())
    }

    /// The gateway, and the clients' link to it. It finds its instances in the upstreams file
    /// ([`scale`]), which it reads again whenever the file changes; the same lists in its
    /// variables let it route before its first read.
    async fn start_gateway(
        &mut self,
        bin: &Binaries,
        proxies: &chaos::Client,
    ) -> anyhow::Result<()> {
        let dir = self.run_dir.path().to_path_buf();
        let mut env = BTreeMap::new();
        env.insert("BIND_ADDR".into(), "127.0.0.1:0".into());
        env.insert("INSTANCE_ID".into(), GATEWAY.into());
        env.insert("SERVICE_TOKEN_SECRET".into(), self.service_secret.clone());
        env.insert(
            "JWT_PUBLIC_KEY_PEM".into(),
            self.idp.public_key_pem().to_string(),
        );
        env.insert("JWT_ISSUER".into(), crate::seed::ISSUER.into());
        env.extend(super::otel_env(
            self.otlp_endpoint().as_deref(),
            self.trace_sampling,
        ));
        env.insert("JWT_AUDIENCE".into(), crate::seed::AUDIENCE.into());
        super::discovery::set_upstream_vars(&mut env, &self.upstream_lists());
        env.insert(
            super::discovery::UPSTREAMS_FILE_VAR.into(),
            self.upstreams_file().display().to_string(),
        );
        env.extend(self.options.resilience.gateway_env());
        let gateway = Spec {
            name: GATEWAY.into(),
            program: bin.path(binaries::GATEWAY),
            args: vec![],
            env,
            ready_file: dir.join("ready/gateway-1.json"),
            log_file: dir.join("logs/gateway-1.log"),
            cpu_budget: None,
        };
        let i = self.launch(gateway)?;
        let addr = self.processes[i].wait_ready(READY_TIMEOUT).await?;
        self.processes[i].pin_port(addr);
        let listen = links::create(proxies, CLIENT_LINK, &addr.to_string()).await?;
        self.links.insert(
            0,
            LinkInfo {
                name: CLIENT_LINK.into(),
                listen: listen.to_string(),
                upstream: addr.to_string(),
            },
        );
        self.gateway_url = format!("http://{listen}");
        Ok(())
    }

    /// Listed client first, then the gateway's links, then the links to the broker.
    fn sort_links(&mut self) {
        let order = crate::faults::target::local_links(&Faultable::instances(self));
        self.links.sort_by_key(|l| {
            order
                .iter()
                .position(|n| *n == l.name)
                .unwrap_or(usize::MAX)
        });
    }

    /// Products and customers, through the gateway's admin API once it is ready.
    async fn seed_data(&self) -> anyhow::Result<()> {
        let client = crate::client::ApiClient::new(&self.gateway_url)?;
        client
            .wait_ready(READY_TIMEOUT)
            .await
            .context("waiting for the gateway to be ready")?;
        let admin = self.idp.admin_token()?;
        self.seed
            .apply(&client, &admin)
            .await
            .context("seeding products and customers through the gateway")
    }

    /// Starts a process; returns its index, valid until the next launch or removal. The gateway
    /// stays last, so that [`Environment::stop`] (in reverse order) stops it first, before the
    /// instances it sends to, also those added while it runs.
    fn launch(&mut self, spec: Spec) -> anyhow::Result<usize> {
        let p = Supervised::spawn(spec)?;
        let at = self
            .processes
            .iter()
            .position(|p| p.spec.name == GATEWAY)
            .unwrap_or(self.processes.len());
        self.processes.insert(at, p);
        Ok(at)
    }

    /// The broker's control API, from its ready file (a restarted broker has another port).
    fn broker_control(&self) -> anyhow::Result<String> {
        let broker = self
            .processes
            .iter()
            .find(|p| p.spec.name == "broker")
            .context("no broker process")?;
        messages::control_url(&broker.spec.ready_file)
    }

    /// The chaos-proxy's Toxiproxy API.
    pub fn chaos_url(&self) -> &str {
        &self.chaos_url
    }

    fn process(&mut self, name: &str) -> anyhow::Result<&mut Supervised> {
        let names = Faultable::process_names(self);
        self.processes
            .iter_mut()
            .find(|p| p.spec.name == name)
            .with_context(|| format!("no process named {name:?}; there are {}", names.join(", ")))
    }
}

#[async_trait::async_trait]
impl Faultable for LocalEnvironment {
    fn link_names(&self) -> Vec<String> {
        self.links.iter().map(|l| l.name.clone()).collect()
    }

    /// `chaos-proxy`, `broker`, `order#1`, `gateway#1`, ...
    fn process_names(&self) -> Vec<String> {
        self.processes.iter().map(|p| p.spec.name.clone()).collect()
    }

    fn chaos_client(&self) -> anyhow::Result<chaos::Client> {
        chaos::Client::new(&self.chaos_url).context("creating the chaos-proxy client")
    }

    /// SIGKILL (it stays down until `restart` or a heal).
    async fn kill(&mut self, name: &str) -> anyhow::Result<()> {
        self.process(name)?.kill().await;
        Ok(())
    }

    /// SIGSTOP: it holds its connections but answers nothing.
    async fn pause(&mut self, name: &str) -> anyhow::Result<()> {
        self.process(name)?.signal(Signal::SIGSTOP)
    }

    async fn resume(&mut self, name: &str) -> anyhow::Result<()> {
        self.process(name)?.signal(Signal::SIGCONT)
    }

    /// SIGTERM, graceful.
    async fn stop_instance(&mut self, name: &str) -> anyhow::Result<()> {
        self.process(name)?.stop(STOP_GRACE).await;
        Ok(())
    }

    /// Starts a killed or stopped instance again on the same port and waits until it is ready.
    async fn restart(&mut self, name: &str) -> anyhow::Result<()> {
        let p = self.process(name)?;
        if p.is_running() {
            bail!("{name} is still running; kill or stop it first");
        }
        p.respawn()?;
        p.wait_ready(READY_TIMEOUT).await?;
        Ok(())
    }

    async fn disconnect(&mut self, name: &str) -> anyhow::Result<()> {
        bail!(
            "{name}: disconnect needs a network of the run's own, which only the containers \
             backend has; on this one, partition its links instead"
        )
    }

    async fn reconnect(&mut self, name: &str) -> anyhow::Result<()> {
        bail!("{name}: nothing to reconnect on the local backend")
    }

    /// Every proxy re-enabled without toxics, every paused process resumed, every killed or
    /// stopped process restarted, every service back at the instance count it started with.
    /// Tries all of it even when a step fails, and reports the first failure.
    async fn heal_all(&mut self) -> anyhow::Result<()> {
        let healed = super::heal_everything(self).await;
        // After the processes: an added instance that was killed is restarted, then stopped
        // gracefully like any instance scaled away.
        let started = self.options.instances;
        let healed = healed.and(crate::faults::restore_instances(self, started).await);
        // After the processes: a broker restarted by the heal is up again (and has no faults).
        let cleared = match self.broker_control() {
            Ok(control) => messages::clear_all(&control)
                .await
                .context("clearing the message faults"),
            Err(e) => Err(e),
        };
        healed.and(cleared)
    }

    async fn scale(&mut self, service: Service, count: usize) -> anyhow::Result<()> {
        self.scale_service(service, count).await
    }

    /// On the fronts the broker opened for the links' proxies.
    async fn set_message_fault(
        &mut self,
        id: &str,
        links: &[String],
        fault: &crate::faults::MessageFault,
    ) -> anyhow::Result<()> {
        let fronts = links
            .iter()
            .map(|link| {
                self.kafka_links
                    .values()
                    .find(|l| l.name == *link)
                    .map(|l| l.listen.clone())
                    .with_context(|| format!("{link} is not a link to the broker"))
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        messages::set(&self.broker_control()?, id, fronts, fault).await
    }

    async fn clear_message_fault(&mut self, id: &str) -> anyhow::Result<()> {
        messages::clear(&self.broker_control()?, id).await
    }

    async fn publish_poison(
        &mut self,
        topic: &str,
        partition: Option<i32>,
        messages: u64,
    ) -> anyhow::Result<Vec<String>> {
        messages::publish_poison(&self.kafka_brokers, topic, partition, messages).await
    }
}

#[async_trait::async_trait]
impl Environment for LocalEnvironment {
    fn backend(&self) -> Backend {
        Backend::Local
    }

    fn startup_time(&self) -> Duration {
        self.startup_time
    }

    fn gateway_url(&self) -> &str {
        &self.gateway_url
    }

    fn kafka_brokers(&self) -> &str {
        &self.kafka_brokers
    }

    fn links(&self) -> &[LinkInfo] {
        &self.links
    }

    fn run_dir(&self) -> &Path {
        self.run_dir.path()
    }

    fn identity(&self) -> &IdentityProvider {
        &self.idp
    }

    fn seed(&self) -> &Seed {
        &self.seed
    }

    fn spans(&self) -> Option<Arc<SpanStore>> {
        self.collector.as_ref().map(Collector::store)
    }

    fn otlp_endpoint(&self) -> Option<String> {
        self.collector.as_ref().map(Collector::endpoint)
    }

    /// Each service instance and the gateway, scraped directly, and the chaos-proxy.
    fn metrics_targets(&self) -> Vec<scrape::Target> {
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

    fn watch_metrics_targets(&self) -> tokio::sync::watch::Receiver<Vec<scrape::Target>> {
        self.publish_metrics_targets();
        self.scrape_targets.subscribe()
    }

    fn toxiproxy_url(&self) -> &str {
        &self.chaos_url
    }

    fn service_token_secret(&self) -> &str {
        &self.service_secret
    }

    fn process_infos(&self) -> Vec<ProcessInfo> {
        self.processes
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
            .collect()
    }

    async fn heal_process(&mut self, name: &str) -> anyhow::Result<()> {
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

    /// Also the logs of instances scaled away.
    async fn save_logs(&self, dest: &Path) -> anyhow::Result<usize> {
        std::fs::create_dir_all(dest).with_context(|| format!("creating {}", dest.display()))?;
        let mut logs: BTreeMap<&str, &Path> = self
            .retired_logs
            .iter()
            .map(|(name, log)| (name.as_str(), log.as_path()))
            .collect();
        logs.extend(
            self.processes
                .iter()
                .map(|p| (p.spec.name.as_str(), p.spec.log_file.as_path())),
        );
        let mut saved = 0;
        for (name, log) in logs {
            let to = dest.join(super::log_file_name(name));
            match std::fs::copy(log, &to) {
                Ok(_) => saved += 1,
                // Never started, so never wrote anything.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => {
                    return Err(e)
                        .with_context(|| format!("copying {} to {}", log.display(), to.display()));
                }
            }
        }
        Ok(saved)
    }

    /// In reverse start order: gateway first, broker last.
    async fn stop(mut self: Box<Self>) {
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
