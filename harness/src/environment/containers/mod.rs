//! The containers backend: the whole system as Docker containers on one network per run.
//!
//! What runs, each in its own container on the run's network, reached by the others through
//! Toxiproxy so that every link of DESIGN.md's topology can be faulted:
//!
//! | process | image ([`images`]) | reached at |
//! |---|---|---|
//! | `chaos-proxy` | Toxiproxy (API on 8474) | `toxiproxy`; holds every link's proxy |
//! | `order-db`, `inventory-db`, `payment-db` | Postgres | through `{service}#{n}->db` |
//! | `broker` | Kafka, configured as `apache/kafka` is (`KAFKA_*`) | through `{service}#{n}->kafka` |
//! | `inventory#1`, `payment#1`, `order#1`, ... | the services image | through `gateway->{service}#{n}` |
//! | `gateway#1` | the services image | through `client->gateway` |
//!
//! The broker has one listener per instance there may ever be ([`Instances::MAX`] per service),
//! each advertising that instance's proxy, so all of an instance's Kafka traffic takes its own
//! link (the local backend's "fronts", here Kafka's own named listeners), and one for the harness
//! on a port published on 127.0.0.1. Every instance there may be has its own ports for its links
//! inside Toxiproxy's container ([`Slot`]), so an instance added at run time finds its broker
//! listener waiting, and its links are created through Toxiproxy's API when it comes. The harness
//! reaches the gateway (through `client->gateway`), Toxiproxy's API, each service's `/metrics`
//! and the broker only on ports published on 127.0.0.1; the services reach the harness's OTLP
//! collector at the host's address on the run's network.
//!
//! The gateway finds its instances in the upstreams file ([`super::discovery`]), which the
//! harness writes into a directory of the run's temporary directory that is mounted read-only
//! into the gateway's container (so the engine must share the harness's file system, as it
//! already must to publish ports on the harness's 127.0.0.1). Instances are added and removed
//! while the environment runs by [`scale`].
//!
//! Faults on an instance are the engine's: `kill` is `docker kill` (started again by `restart`
//! or a heal), `pause` is `docker pause`, `stop` is `docker stop`. Everything the run makes
//! carries its labels ([`docker`]) and goes when the environment is stopped or dropped; a start
//! first sweeps what a harness that died left behind.

pub mod docker;
pub mod images;
pub mod scale;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use self::docker::{ContainerSpec, Docker, State};
use self::images::Images;
use super::discovery::{self, UPSTREAMS_FILE_NAME, UPSTREAMS_FILE_VAR};
use super::local::process::free_port;
use super::{
    EnvOptions, Environment, Faultable, Instances, LinkInfo, MAX_SPANS, ProcessInfo, Service,
    Traces,
};
use crate::scenario::Backend;
use crate::seed::{IdentityProvider, Seed};
use crate::telemetry::collector::{Collector, CollectorOptions};
use crate::telemetry::scrape;
use crate::telemetry::store::SpanStore;

const READY_TIMEOUT: Duration = Duration::from_secs(90);
const STOP_GRACE: Duration = Duration::from_secs(10);

/// Toxiproxy's API and the ports its proxies listen on inside its container.
const TOXIPROXY_API: u16 = 8474;
const CLIENT_LINK_PORT: u16 = 20000;
const GATEWAY_LINKS_BASE: u16 = 21000;
const KAFKA_LINKS_BASE: u16 = 22000;
const DB_LINKS_BASE: u16 = 23000;
/// The broker's listeners inside its container.
const KAFKA_INTERNAL: u16 = 9092;
const KAFKA_CONTROLLER: u16 = 9093;
const KAFKA_HARNESS: u16 = 9094;
const KAFKA_INSTANCES_BASE: u16 = 19000;
/// Where every service and the gateway listen inside their containers.
const SERVICE_PORT: u16 = 8080;
const POSTGRES_PORT: u16 = 5432;
const POSTGRES_USER: &str = "app";
/// Where the gateway's container sees the run's discovery directory (read-only).
const GATEWAY_DISCOVERY_DIR: &str = "/run/harness-discovery";
/// The one gateway.
const GATEWAY: &str = "gateway#1";

/// How a member is known to be ready.
#[derive(Debug, Clone)]
enum Readiness {
    /// `GET` answers 2xx.
    Http(String),
    /// The server said it accepts connections (after initialising the data directory, when it
    /// had to).
    Postgres,
    /// The harness can create (or find) the topics through its listener.
    Kafka,
}

/// One container of the run.
#[derive(Debug, Clone)]
struct Member {
    /// The name faults, reports and `harness chaos` use: `order#1`, `order-db`, `broker`, ...
    name: String,
    /// Its name in the engine.
    container: String,
    /// What the other containers call it.
    aliases: Vec<String>,
    readiness: Readiness,
    /// The host port its HTTP API is published on (services, gateway, Toxiproxy).
    http_port: Option<u16>,
}

/// A running containerized environment; see the module documentation. Dropping it removes
/// every container and the network at once; [`Environment::stop`] stops them gracefully first.
pub struct ContainersEnvironment {
    docker: Docker,
    run_id: String,
    network: String,
    /// The host's address on the run's network, where the services reach the collector.
    host_ip: String,
    images: Images,
    members: Vec<Member>,
    collector: Option<Collector>,
    idp: IdentityProvider,
    seed: Seed,
    gateway_url: String,
    kafka_brokers: String,
    chaos_url: String,
    links: Vec<LinkInfo>,
    startup_time: Duration,
    /// The share of traces the services record and export.
    trace_sampling: f64,
    /// What the gateway signs its service tokens with (HS256), shared by every service.
    service_secret: String,
    /// The databases' password, for instances started later too.
    db_password: String,
    /// What the environment was started with: what an instance added later starts with, and
    /// the instance counts a heal goes back to.
    options: EnvOptions,
    /// The logs of instances scaled away (their containers are gone), by instance name.
    retired_logs: BTreeMap<String, PathBuf>,
    /// [`Environment::metrics_targets`] for scrapers watching them, sent again whenever
    /// instances are added or removed.
    scrape_targets: tokio::sync::watch::Sender<Vec<scrape::Target>>,
    run_dir: tempfile::TempDir,
    /// Set once everything of the run is removed, so `Drop` has nothing left to do.
    removed: bool,
}

/// One link to create: its name, the port it listens on inside Toxiproxy's container, and
/// where it forwards to.
struct PlannedLink {
    name: String,
    port: u16,
    upstream: String,
}

/// Instance `n` of a service, one of every instance there may ever be, with the ports of its
/// links and its broker listener: its own, whichever other instances run, so instances come and
/// go at run time without moving anyone else's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Slot {
    service: Service,
    n: usize,
}

impl Slot {
    /// Every instance there may be: [`Instances::MAX`] of each service.
    fn every() -> impl Iterator<Item = Slot> {
        Service::ALL
            .into_iter()
            .flat_map(|service| (1..=Instances::MAX).map(move |n| Slot { service, n }))
    }

    /// The instances an environment with `instances` runs, in start order.
    fn of(instances: &Instances) -> Vec<Slot> {
        Service::ALL
            .into_iter()
            .flat_map(|service| (1..=instances.of(service)).map(move |n| Slot { service, n }))
            .collect()
    }

    /// `order#2`.
    fn name(self) -> String {
        format!("{}#{}", self.service.name(), self.n)
    }

    /// `order-2`: its container's alias (a `#` is no host name).
    fn alias(self) -> String {
        format!("{}-{}", self.service.name(), self.n)
    }

    /// Its place among [`Self::every`], from 1, as the offset of each of its ports.
    fn offset(self) -> u16 {
        let service = Service::ALL
            .iter()
            .position(|s| *s == self.service)
            .unwrap_or_default();
        u16::try_from(service * Instances::MAX + self.n).unwrap_or(u16::MAX)
    }

    /// The broker's listener for this instance, inside the broker's container.
    fn kafka_listener(self) -> u16 {
        KAFKA_INSTANCES_BASE + self.offset()
    }

    fn db_link(self) -> PlannedLink {
        PlannedLink {
            name: format!("{}->db", self.name()),
            port: DB_LINKS_BASE + self.offset(),
            upstream: format!("{}-db:{POSTGRES_PORT}", self.service.name()),
        }
    }

    fn kafka_link(self) -> PlannedLink {
        PlannedLink {
            name: format!("{}->kafka", self.name()),
            port: KAFKA_LINKS_BASE + self.offset(),
            upstream: format!("broker:{}", self.kafka_listener()),
        }
    }

    fn gateway_link(self) -> PlannedLink {
        PlannedLink {
            name: format!("gateway->{}", self.name()),
            port: GATEWAY_LINKS_BASE + self.offset(),
            upstream: format!("{}:{SERVICE_PORT}", self.alias()),
        }
    }
}

impl ContainersEnvironment {
    /// Starts everything and waits until the gateway is ready and the data is seeded.
    pub async fn start(options: EnvOptions) -> anyhow::Result<Self> {
        let docker = Docker::connect().await?;
        let swept = docker.sweep().await.context("sweeping earlier runs")?;
        if swept > 0 {
            tracing::info!(swept, "removed what earlier harness runs left behind");
        }
        let images = Images::from_env();
        for image in images.all() {
            docker.ensure_image(image, images::HINT).await?;
        }
        let started = Instant::now();
        let mut run_id = uuid::Uuid::new_v4().simple().to_string();
        run_id.truncate(12);
        let network = format!("harness-{run_id}");
        let run_dir = tempfile::Builder::new()
            .prefix("harness-run-")
            .tempdir()
            .context("creating a temporary run dir")?;
        let mut env = Self {
            docker,
            run_id,
            network,
            host_ip: String::new(),
            images,
            members: Vec::new(),
            collector: None,
            idp: IdentityProvider::new()?,
            seed: Seed::standard(),
            gateway_url: String::new(),
            kafka_brokers: String::new(),
            chaos_url: String::new(),
            links: Vec::new(),
            startup_time: Duration::ZERO,
            trace_sampling: options.trace_sampling,
            service_secret: hex_secret(),
            db_password: hex_secret(),
            options,
            retired_logs: BTreeMap::new(),
            scrape_targets: tokio::sync::watch::Sender::new(Vec::new()),
            run_dir,
            removed: false,
        };
        // On error `env` drops here, which removes whatever was made.
        env.boot().await?;
        env.startup_time = started.elapsed();
        Ok(env)
    }

    /// The start-up steps, in order.
    async fn boot(&mut self) -> anyhow::Result<()> {
        self.host_ip = self
            .docker
            .create_network(&self.network, &self.run_id)
            .await?;
        self.create_discovery_dir()?;
        self.start_collector().await?;
        self.start_toxiproxy().await?;
        let proxies = self.chaos_client()?;
        let slots = Slot::of(&self.options.instances);
        self.start_databases().await?;
        self.start_broker().await?;
        self.create_links(&proxies, &own_links(&slots)).await?;
        self.wait_for(|m| matches!(m.readiness, Readiness::Postgres | Readiness::Kafka))
            .await?;
        self.start_services(&slots).await?;
        let gateway_links: Vec<PlannedLink> = slots.iter().map(|s| s.gateway_link()).collect();
        self.create_links(&proxies, &gateway_links).await?;
        self.publish_upstreams()?;
        self.start_gateway().await?;
        let client = PlannedLink {
            name: super::local::links::CLIENT_LINK.into(),
            port: CLIENT_LINK_PORT,
            upstream: format!("gateway-1:{SERVICE_PORT}"),
        };
        self.create_links(&proxies, std::slice::from_ref(&client))
            .await?;
        self.sort_links();
        self.seed_data().await
    }

    /// The directory the gateway's container mounts to read the upstreams file: readable by
    /// whichever user the gateway runs as (the run directory around it need not be).
    fn create_discovery_dir(&self) -> anyhow::Result<()> {
        use std::os::unix::fs::PermissionsExt;
        let dir = self.discovery_dir();
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755))
            .with_context(|| format!("making {} readable", dir.display()))
    }

    /// The OTLP collector, reachable from the containers at the host's address on the network.
    async fn start_collector(&mut self) -> anyhow::Result<()> {
        if let Traces::Collect { forward_to } = &self.options.traces {
            let ip = self
                .host_ip
                .parse()
                .with_context(|| format!("the network's gateway {:?}", self.host_ip))?;
            self.collector = Some(
                Collector::start(CollectorOptions {
                    forward_to: forward_to.clone(),
                    max_spans: MAX_SPANS,
                    also_bind: Some(ip),
                })
                .await
                .context("starting the OTLP collector")?,
            );
        }
        Ok(())
    }

    /// Runs a member's container and records it (before waiting, so a failure removes it).
    async fn launch(
        &mut self,
        name: &str,
        spec: ContainerSpec,
        readiness: Readiness,
        http_port: Option<u16>,
    ) -> anyhow::Result<()> {
        // The gateway stays last, so that [`Environment::stop`] (in reverse order) stops it
        // before the instances it sends to, also those added while it runs.
        let at = self
            .members
            .iter()
            .position(|m| m.name == GATEWAY)
            .unwrap_or(self.members.len());
        self.members.insert(
            at,
            Member {
                name: name.to_string(),
                container: spec.name.clone(),
                aliases: spec.aliases.clone(),
                readiness,
                http_port,
            },
        );
        self.docker.run(&spec, &self.network, &self.run_id).await
    }

    fn container_name(&self, alias: &str) -> String {
        format!("harness-{}-{alias}", self.run_id)
    }

    async fn start_toxiproxy(&mut self) -> anyhow::Result<()> {
        let api = free_port()?;
        let client = free_port()?;
        let spec = ContainerSpec {
            name: self.container_name("toxiproxy"),
            image: self.images.toxiproxy.clone(),
            aliases: vec!["toxiproxy".into()],
            ports: vec![(TOXIPROXY_API, api), (CLIENT_LINK_PORT, client)],
            ..Default::default()
        };
        self.chaos_url = format!("http://127.0.0.1:{api}");
        self.gateway_url = format!("http://127.0.0.1:{client}");
        let version = format!("{}/version", self.chaos_url);
        self.launch("chaos-proxy", spec, Readiness::Http(version), Some(api))
            .await?;
        self.wait_for(|m| m.name == "chaos-proxy").await
    }

    async fn start_databases(&mut self) -> anyhow::Result<()> {
        for service in Service::ALL {
            let alias = format!("{}-db", service.name());
            let env = BTreeMap::from([
                ("POSTGRES_USER".to_string(), POSTGRES_USER.to_string()),
                ("POSTGRES_PASSWORD".to_string(), self.db_password.clone()),
                ("POSTGRES_DB".to_string(), service.name().to_string()),
            ]);
            let spec = ContainerSpec {
                name: self.container_name(&alias),
                image: self.images.postgres.clone(),
                env,
                aliases: vec![alias.clone()],
                ..Default::default()
            };
            self.launch(&alias, spec, Readiness::Postgres, None).await?;
        }
        Ok(())
    }

    /// The broker, with Kafka's own listener settings (so `apache/kafka` runs as it is): one
    /// listener inside the network, one for the harness, one per instance there may ever be
    /// advertising that instance's proxy (listeners are fixed when the broker starts).
    async fn start_broker(&mut self) -> anyhow::Result<()> {
        let harness_port = free_port()?;
        self.kafka_brokers = format!("127.0.0.1:{harness_port}");
        let mut listeners = vec![
            format!("PLAINTEXT://:{KAFKA_INTERNAL}"),
            format!("CONTROLLER://:{KAFKA_CONTROLLER}"),
            format!("HARNESS://:{KAFKA_HARNESS}"),
        ];
        let mut advertised = vec![
            format!("PLAINTEXT://broker:{KAFKA_INTERNAL}"),
            format!("HARNESS://{}", self.kafka_brokers),
        ];
        let mut protocols = vec![
            "PLAINTEXT:PLAINTEXT".to_string(),
            "CONTROLLER:PLAINTEXT".to_string(),
            "HARNESS:PLAINTEXT".to_string(),
        ];
        for slot in Slot::every() {
            let name = format!("INSTANCE{}", slot.offset());
            listeners.push(format!("{name}://:{}", slot.kafka_listener()));
            advertised.push(format!("{name}://toxiproxy:{}", slot.kafka_link().port));
            protocols.push(format!("{name}:PLAINTEXT"));
        }
        let env = BTreeMap::from([
            ("KAFKA_NODE_ID".to_string(), "1".to_string()),
            (
                "KAFKA_PROCESS_ROLES".to_string(),
                "broker,controller".to_string(),
            ),
            (
                "KAFKA_CONTROLLER_QUORUM_VOTERS".to_string(),
                format!("1@localhost:{KAFKA_CONTROLLER}"),
            ),
            (
                "KAFKA_CONTROLLER_LISTENER_NAMES".to_string(),
                "CONTROLLER".to_string(),
            ),
            (
                "KAFKA_INTER_BROKER_LISTENER_NAME".to_string(),
                "PLAINTEXT".to_string(),
            ),
            ("KAFKA_LISTENERS".to_string(), listeners.join(",")),
            (
                "KAFKA_ADVERTISED_LISTENERS".to_string(),
                advertised.join(","),
            ),
            (
                "KAFKA_LISTENER_SECURITY_PROTOCOL_MAP".to_string(),
                protocols.join(","),
            ),
            (
                "KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR".to_string(),
                "1".to_string(),
            ),
            (
                "KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR".to_string(),
                "1".to_string(),
            ),
            (
                "KAFKA_TRANSACTION_STATE_LOG_MIN_ISR".to_string(),
                "1".to_string(),
            ),
            (
                "KAFKA_GROUP_INITIAL_REBALANCE_DELAY_MS".to_string(),
                "0".to_string(),
            ),
        ]);
        let spec = ContainerSpec {
            name: self.container_name("broker"),
            image: self.images.kafka.clone(),
            env,
            aliases: vec!["broker".into()],
            ports: vec![(KAFKA_HARNESS, harness_port)],
            ..Default::default()
        };
        self.launch("broker", spec, Readiness::Kafka, None).await
    }

    async fn create_links<'a>(
        &mut self,
        proxies: &chaos::Client,
        planned: impl IntoIterator<Item = &'a PlannedLink>,
    ) -> anyhow::Result<()> {
        for link in planned {
            let listen = format!("0.0.0.0:{}", link.port);
            proxies
                .create_proxy(&chaos::NewProxy::new(&link.name, &listen, &link.upstream))
                .await
                .with_context(|| format!("creating the proxy {}", link.name))?;
            self.links.push(LinkInfo {
                name: link.name.clone(),
                listen: format!("toxiproxy:{}", link.port),
                upstream: link.upstream.clone(),
            });
        }
        Ok(())
    }

    /// The service instances: all of them at once (each service's first instance migrates
    /// its database; Postgres lets the others wait on the migration lock).
    async fn start_services(&mut self, slots: &[Slot]) -> anyhow::Result<()> {
        for slot in slots {
            self.launch_instance(*slot).await?;
        }
        self.wait_for(|m| m.name.contains('#')).await
    }

    /// Runs the container of instance `slot`, at boot or added later, without waiting for it:
    /// through its own links to its database and the broker, with the options the environment
    /// was started with.
    async fn launch_instance(&mut self, slot: Slot) -> anyhow::Result<()> {
        let options = &self.options;
        let service = slot.service;
        let name = slot.name();
        let port = free_port()?;
        let mut env = BTreeMap::new();
        env.insert("BIND_ADDR".into(), format!("0.0.0.0:{SERVICE_PORT}"));
        env.insert("INSTANCE_ID".into(), name.clone());
        env.insert("SERVICE_TOKEN_SECRET".into(), self.service_secret.clone());
        env.insert(
            "DATABASE_URL".into(),
            format!(
                "postgres://{POSTGRES_USER}:{}@toxiproxy:{}/{}",
                self.db_password,
                slot.db_link().port,
                service.name()
            ),
        );
        env.insert(
            "KAFKA_BROKERS".into(),
            format!("toxiproxy:{}", slot.kafka_link().port),
        );
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
            self.container_otlp_endpoint().as_deref(),
            self.trace_sampling,
        ));
        env.extend(options.resilience.service_env());
        let spec = ContainerSpec {
            name: self.container_name(&slot.alias()),
            image: self.images.services.clone(),
            cmd: vec![super::local::binaries::of(service).to_string()],
            env,
            aliases: vec![slot.alias()],
            ports: vec![(SERVICE_PORT, port)],
            binds: Vec::new(),
            cpus: options.cpus_per_instance,
        };
        let ready = format!("http://127.0.0.1:{port}/health/ready");
        self.launch(&name, spec, Readiness::Http(ready), Some(port))
            .await
    }

    /// The gateway. It finds its instances in the upstreams file, on a read-only mount of the
    /// run's discovery directory, which it reads again whenever the file changes; the same lists
    /// in its variables let it route before its first read.
    async fn start_gateway(&mut self) -> anyhow::Result<()> {
        let port = free_port()?;
        let mut env = BTreeMap::new();
        env.insert("BIND_ADDR".into(), format!("0.0.0.0:{SERVICE_PORT}"));
        env.insert("INSTANCE_ID".into(), GATEWAY.into());
        env.insert("SERVICE_TOKEN_SECRET".into(), self.service_secret.clone());
        env.insert(
            "JWT_PUBLIC_KEY_PEM".into(),
            self.idp.public_key_pem().to_string(),
        );
        env.insert("JWT_ISSUER".into(), crate::seed::ISSUER.into());
        env.insert("JWT_AUDIENCE".into(), crate::seed::AUDIENCE.into());
        env.extend(super::otel_env(
            self.container_otlp_endpoint().as_deref(),
            self.trace_sampling,
        ));
        discovery::set_upstream_vars(&mut env, &discovery::upstream_lists(&self.links));
        env.insert(
            UPSTREAMS_FILE_VAR.into(),
            format!("{GATEWAY_DISCOVERY_DIR}/{UPSTREAMS_FILE_NAME}"),
        );
        env.extend(self.options.resilience.gateway_env());
        let spec = ContainerSpec {
            name: self.container_name("gateway-1"),
            image: self.images.services.clone(),
            cmd: vec![super::local::binaries::GATEWAY.to_string()],
            env,
            aliases: vec!["gateway-1".into()],
            ports: vec![(SERVICE_PORT, port)],
            binds: vec![format!(
                "{}:{GATEWAY_DISCOVERY_DIR}:ro",
                self.discovery_dir().display()
            )],
            cpus: None,
        };
        let ready = format!("http://127.0.0.1:{port}/health/ready");
        self.launch(GATEWAY, spec, Readiness::Http(ready), Some(port))
            .await?;
        self.wait_for(|m| m.name == GATEWAY).await
    }

    /// Listed as the local backend lists them, the database links last.
    fn sort_links(&mut self) {
        let order =
            crate::faults::target::links_of(Backend::Containers, &Faultable::instances(self));
        self.links.sort_by_key(|l| {
            order
                .iter()
                .position(|n| *n == l.name)
                .unwrap_or(usize::MAX)
        });
    }

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

    /// The collector's address as the containers reach it.
    fn container_otlp_endpoint(&self) -> Option<String> {
        self.collector.as_ref().and_then(Collector::also_endpoint)
    }

    /// Waits until every member `which` selects is ready, all at once.
    async fn wait_for(&self, which: impl Fn(&Member) -> bool) -> anyhow::Result<()> {
        let waits = self
            .members
            .iter()
            .filter(|m| which(m))
            .map(|m| self.wait_ready(m, 0));
        for result in futures::future::join_all(waits).await {
            result?;
        }
        Ok(())
    }

    /// Waits until `member` is ready; for Postgres, until it has said so more than `seen` times
    /// (a restarted server's log still holds its earlier lines).
    async fn wait_ready(&self, member: &Member, seen: usize) -> anyhow::Result<()> {
        let deadline = Instant::now() + READY_TIMEOUT;
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(2))
            .build()?;
        loop {
            let ready = match &member.readiness {
                Readiness::Http(url) => http
                    .get(url)
                    .send()
                    .await
                    .is_ok_and(|r| r.status().is_success()),
                Readiness::Postgres => {
                    let logs = self.docker.logs(&member.container, 2_000).await?;
                    postgres_ready(&logs, seen)
                }
                Readiness::Kafka => tokio::time::timeout(
                    Duration::from_secs(15),
                    platform::messaging::kafka::ensure_topics(
                        &self.kafka_brokers,
                        &contracts::messages::topics::all(),
                    ),
                )
                .await
                .is_ok_and(|r| r.is_ok()),
            };
            if ready {
                return Ok(());
            }
            if self.docker.state(&member.container).await? == State::Down
                || Instant::now() >= deadline
            {
                let logs = self
                    .docker
                    .logs(&member.container, 30)
                    .await
                    .unwrap_or_default();
                bail!(
                    "{} ({}) did not become ready within {READY_TIMEOUT:?}; its last lines:\n{logs}",
                    member.name,
                    member.container
                );
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    fn member(&self, name: &str) -> anyhow::Result<&Member> {
        self.members
            .iter()
            .find(|m| m.name == name)
            .with_context(|| {
                format!(
                    "no process named {name:?}; there are {}",
                    Faultable::process_names(self).join(", ")
                )
            })
    }

    /// Starts a stopped container again and waits until it is ready.
    async fn start_again(&self, name: &str) -> anyhow::Result<()> {
        let member = self.member(name)?.clone();
        let seen = match member.readiness {
            Readiness::Postgres => {
                postgres_ready_lines(&self.docker.logs(&member.container, 2_000).await?)
            }
            _ => 0,
        };
        self.docker.start(&member.container).await?;
        self.wait_ready(&member, seen)
            .await
            .with_context(|| format!("restarting {name}"))
    }

    /// Removes everything of the run, now.
    async fn remove_everything(&mut self) {
        if self.removed {
            return;
        }
        match self.docker.remove_run(&self.run_id).await {
            Ok(_) => self.removed = true,
            Err(e) => {
                tracing::warn!(error = %format!("{e:#}"), run = %self.run_id, "removing the run's containers")
            }
        }
    }
}

impl Drop for ContainersEnvironment {
    /// Removes the run's containers and network even when dropped mid-start, on an error or a
    /// panic: on a thread of its own, since a drop cannot await.
    fn drop(&mut self) {
        if self.removed {
            return;
        }
        let docker = self.docker.clone();
        let run_id = self.run_id.clone();
        let cleanup = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            runtime.block_on(docker.remove_run(&run_id))
        });
        match cleanup.join() {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => eprintln!("removing the containers of run {}: {e:#}", self.run_id),
            Err(_) => eprintln!("removing the containers of run {} panicked", self.run_id),
        }
    }
}

#[async_trait::async_trait]
impl Faultable for ContainersEnvironment {
    fn link_names(&self) -> Vec<String> {
        self.links.iter().map(|l| l.name.clone()).collect()
    }

    fn process_names(&self) -> Vec<String> {
        self.members.iter().map(|m| m.name.clone()).collect()
    }

    fn chaos_client(&self) -> anyhow::Result<chaos::Client> {
        chaos::Client::new(&self.chaos_url).context("creating the Toxiproxy client")
    }

    async fn kill(&mut self, name: &str) -> anyhow::Result<()> {
        let container = self.member(name)?.container.clone();
        self.docker.kill(&container).await
    }

    async fn pause(&mut self, name: &str) -> anyhow::Result<()> {
        let container = self.member(name)?.container.clone();
        self.docker.pause(&container).await
    }

    async fn resume(&mut self, name: &str) -> anyhow::Result<()> {
        let container = self.member(name)?.container.clone();
        self.docker.unpause(&container).await
    }

    async fn stop_instance(&mut self, name: &str) -> anyhow::Result<()> {
        let container = self.member(name)?.container.clone();
        self.docker.stop(&container, STOP_GRACE).await
    }

    async fn restart(&mut self, name: &str) -> anyhow::Result<()> {
        let container = self.member(name)?.container.clone();
        if self.docker.state(&container).await? != State::Down {
            bail!("{name} is still running; kill or stop it first");
        }
        self.start_again(name).await
    }

    async fn disconnect(&mut self, name: &str) -> anyhow::Result<()> {
        let container = self.member(name)?.container.clone();
        self.docker.disconnect(&self.network, &container).await
    }

    async fn reconnect(&mut self, name: &str) -> anyhow::Result<()> {
        let member = self.member(name)?.clone();
        self.docker
            .reconnect(&self.network, &member.container, &member.aliases)
            .await
    }

    /// Every proxy reset, every container running, connected and not paused, every service
    /// back at the instance count it started with. Tries all of it even when a step fails, and
    /// reports the first failure.
    async fn heal_all(&mut self) -> anyhow::Result<()> {
        let healed = super::heal_everything(self).await;
        // After the containers: an added instance that was killed is started again, then
        // stopped gracefully like any instance scaled away.
        let started = self.options.instances;
        healed.and(crate::faults::restore_instances(self, started).await)
    }

    async fn scale(&mut self, service: Service, count: usize) -> anyhow::Result<()> {
        self.scale_service(service, count).await
    }
}

#[async_trait::async_trait]
impl Environment for ContainersEnvironment {
    fn backend(&self) -> Backend {
        Backend::Containers
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

    fn metrics_targets(&self) -> Vec<scrape::Target> {
        self.members
            .iter()
            .filter_map(|m| {
                let port = m.http_port?;
                let service = m.name.split('#').next()?.to_string();
                Some(scrape::Target {
                    process: m.name.clone(),
                    service,
                    url: format!("http://127.0.0.1:{port}/metrics"),
                })
            })
            .collect()
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
        self.members
            .iter()
            .map(|m| ProcessInfo {
                name: m.name.clone(),
                pid: 0,
                addr: m
                    .aliases
                    .first()
                    .cloned()
                    .unwrap_or_else(|| m.container.clone()),
                url: m.http_port.map(|p| format!("http://127.0.0.1:{p}")),
                log: format!("docker logs {}", m.container),
            })
            .collect()
    }

    async fn heal_process(&mut self, name: &str) -> anyhow::Result<()> {
        let member = self.member(name)?.clone();
        if !self
            .docker
            .is_connected(&self.network, &member.container)
            .await?
        {
            self.docker
                .reconnect(&self.network, &member.container, &member.aliases)
                .await?;
        }
        match self.docker.state(&member.container).await? {
            State::Running => Ok(()),
            State::Paused => self.docker.unpause(&member.container).await,
            State::Down => self.start_again(name).await,
        }
    }

    /// Also the logs of instances scaled away, saved when they left.
    async fn save_logs(&self, dest: &Path) -> anyhow::Result<usize> {
        std::fs::create_dir_all(dest).with_context(|| format!("creating {}", dest.display()))?;
        let mut saved = 0;
        for (name, log) in &self.retired_logs {
            if self.members.iter().any(|m| m.name == *name) {
                // Added again since: its running container's log is saved below.
                continue;
            }
            let to = dest.join(super::log_file_name(name));
            std::fs::copy(log, &to)
                .with_context(|| format!("copying {} to {}", log.display(), to.display()))?;
            saved += 1;
        }
        for m in &self.members {
            let to = dest.join(super::log_file_name(&m.name));
            self.docker.logs_to_file(&m.container, &to).await?;
            saved += 1;
        }
        Ok(saved)
    }

    /// The gateway first, then the services, the broker, the databases and Toxiproxy; then
    /// everything is removed.
    async fn stop(mut self: Box<Self>) {
        let containers: Vec<String> = self
            .members
            .iter()
            .rev()
            .map(|m| m.container.clone())
            .collect();
        for container in containers {
            if let Err(e) = self.docker.stop(&container, STOP_GRACE).await {
                tracing::warn!(error = %format!("{e:#}"), "stopping {container}");
            }
        }
        self.remove_everything().await;
    }
}

/// The links an instance needs before it starts: to its database and to the broker.
fn own_links(slots: &[Slot]) -> Vec<PlannedLink> {
    slots
        .iter()
        .flat_map(|s| [s.db_link(), s.kafka_link()])
        .collect()
}

const READY_LINE: &str = "database system is ready to accept connections";
/// What initdb prints; a server that had to initialise its data directory first runs a
/// temporary server (which also says it is ready) before the real one.
const INITDB_LINE: &str = "The files belonging to this database system";
const INIT_DONE_LINE: &str = "init process complete";

fn postgres_ready_lines(logs: &str) -> usize {
    logs.matches(READY_LINE).count()
}

/// Whether Postgres's log says the real server is up, with `seen` ready lines from before.
fn postgres_ready(logs: &str, seen: usize) -> bool {
    if seen > 0 {
        return postgres_ready_lines(logs) > seen;
    }
    if logs.contains(INITDB_LINE) {
        // The ready line that counts comes after initialisation finished.
        logs.rfind(INIT_DONE_LINE)
            .is_some_and(|done| logs[done..].contains(READY_LINE))
    } else {
        logs.contains(READY_LINE)
    }
}

fn hex_secret() -> String {
    let a = uuid::Uuid::new_v4().simple().to_string();
    let b = uuid::Uuid::new_v4().simple().to_string();
    format!("{a}{b}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn postgres_is_ready_only_once_the_real_server_is() {
        let temp = "The files belonging to this database system will be owned by user\n\
                    LOG:  database system is ready to accept connections\n";
        assert!(
            !postgres_ready(temp, 0),
            "the temporary server does not count"
        );
        let done = format!(
            "{temp}PostgreSQL init process complete; ready for start up.\n\
             LOG:  database system is ready to accept connections\n"
        );
        assert!(postgres_ready(&done, 0));
        // A data directory that already existed: no initdb, one line.
        assert!(postgres_ready(
            "LOG:  database system is ready to accept connections\n",
            0
        ));
        // Restarted after a kill: a new line beyond the ones seen before.
        assert!(!postgres_ready(&done, 2));
        assert!(postgres_ready(
            &format!("{done}LOG:  database system is ready to accept connections\n"),
            2
        ));
    }

    #[test]
    fn every_instance_there_may_be_has_ports_of_its_own() {
        let slots: Vec<Slot> = Slot::every().collect();
        assert_eq!(slots.len(), 3 * Instances::MAX);
        let mut ports: Vec<u16> = slots
            .iter()
            .flat_map(|s| {
                [
                    s.db_link().port,
                    s.kafka_link().port,
                    s.gateway_link().port,
                    s.kafka_listener(),
                ]
            })
            .collect();
        ports.push(CLIENT_LINK_PORT);
        let n = ports.len();
        ports.sort_unstable();
        ports.dedup();
        assert_eq!(ports.len(), n, "two ports collide");
        // An instance's ports do not depend on how many others run.
        let few = Slot::of(&Instances::parse("order=2").unwrap());
        let many = Slot::of(&Instances::parse("order=2,inventory=3,payment=8").unwrap());
        let order2 = Slot {
            service: Service::Order,
            n: 2,
        };
        assert_eq!(few.last(), Some(&order2));
        assert_eq!(many.last(), Some(&order2));
        assert_eq!(order2.name(), "order#2");
        assert_eq!(order2.gateway_link().upstream, "order-2:8080");
        assert_eq!(order2.db_link().name, "order#2->db");
        assert_eq!(order2.db_link().upstream, "order-db:5432");
        let inventory1 = Slot {
            service: Service::Inventory,
            n: 1,
        };
        assert_eq!(inventory1.kafka_link().upstream, "broker:19001");
        assert_eq!(inventory1.kafka_link().name, "inventory#1->kafka");
    }
}
