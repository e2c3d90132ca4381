//! `embedded-broker`: the local backend's Kafka.
//!
//! A Kafka-compatible broker that runs as its own process, built on [tansu] 0.6
//! (`tansu-broker`): tansu decodes and encodes the protocol and serves most requests; this crate
//! runs its own listener (the `server` module) with four parts of its own where tansu 0.6 fell
//! short of Kafka:
//!
//! - the log ([`log`], [`storage`]): each partition's batches appended as the producer sent them
//!   to a file in `--data-dir/log/`, and fetched by byte range (tansu's SQLite storage rebuilt
//!   batches from rows on every fetch and was where the saga pipeline's time went); topics and
//!   committed offsets stay in tansu's SQLite storage, `--data-dir/tansu.db`;
//! - the consumer-group coordinator ([`coordinator`]): Kafka's classic rebalance protocol
//!   with session timeouts enforced, so a member killed without leaving is evicted and its
//!   partitions move to the survivors (tansu's kept a SIGKILLed leader's partitions forever);
//! - Fetch as a long poll answered as soon as a record is appended ([`fetch`]; tansu's slept
//!   for the whole `fetch.wait.max.ms` after every read, so each hop cost that wait);
//! - ListGroups and DescribeGroups from the coordinator's membership.
//!
//! Why it exists: the services talk to Kafka through rdkafka (librdkafka) using the
//! real Kafka wire protocol, so the code that runs against this broker locally is the
//! code that runs against a real Kafka cluster; yet the local backend needs no JVM, no
//! container and no network beyond loopback. Storage is on disk, so a broker restart
//! keeps topics, messages and committed consumer-group offsets (tested in
//! `tests/broker.rs`).
//!
//! # Running it
//!
//! ```text
//! embedded-broker --listen 127.0.0.1:9092 --data-dir DIR [--cluster-id reference-system]
//!     [--node-id 111] [--ready-file PATH] [--exit-on-stdin-eof]
//!     [--front ADVERTISED[@LISTEN]]...
//! ```
//!
//! Every flag has an `EMBEDDED_BROKER_*` environment fallback. `--ready-file` receives
//! `{"addr":"127.0.0.1:9092","pid":N}` ([`ReadyInfo`]; plus `"fronts":[...]` with
//! `--front`) once the listener accepts
//! connections (written to a temp file then renamed; removed on a clean stop), so a
//! supervisor polls for it instead of sleeping. With `--exit-on-stdin-eof` and a piped
//! stdin the broker stops when its parent dies. SIGINT/SIGTERM stop it cleanly (exit 0).
//! Bad flags or an unusable data directory exit 64, runtime failures (e.g. port in use)
//! exit 1. Logs go to stderr via `tracing` (JSON with `LOG_FORMAT=json`, filter from
//! `RUST_LOG`, default `info`; tansu's per-record INFO chatter is silenced, see
//! [`QUIET_TANSU`]). Topics are never created implicitly: see rule 1 below.

//!
//! # Fronts
//!
//! Clients connect to whatever address the broker advertises, not to `bootstrap.servers`.
//! To route each client through its own proxy (the harness's per-instance fault injection),
//! give the broker one `--front ADVERTISED` per proxy (`EMBEDDED_BROKER_FRONTS`:
//! comma-separated). Each front is an extra listener, on `127.0.0.1:0` unless pinned with
//! `--front ADVERTISED@LISTEN` (to get the same port back after a restart), that relays to
//! the main listener and rewrites the broker addresses in Metadata, FindCoordinator and
//! DescribeCluster responses to ADVERTISED; see [`front`]. The proxy named ADVERTISED
//! forwards to the front's listen address, which the ready file lists:
//! `{"addr":..,"pid":..,"fronts":[{"advertised":"127.0.0.1:40001","listen":"127.0.0.1:39999"}]}`
//! ([`FrontInfo`]). A bad `--front` value exits 64.
//!
//! # Message-level faults
//!
//! With `--control ADDR` (`EMBEDDED_BROKER_CONTROL`, e.g. `127.0.0.1:0`) the broker serves an
//! HTTP API ([`control`]) through which a test harness makes its fronts lose produce
//! acknowledgements, delay one partition's records, or deliver records again ([`faults`]). The
//! ready file then says where it listens: `"control":"127.0.0.1:NNNN"`.
//!
//! # rdkafka settings for this broker
//!
//! Copy [`client_settings`] (rdkafka 0.39, librdkafka 2.12):
//!
//! | client   | setting                              | value                | why |
//! |----------|--------------------------------------|----------------------|-----|
//! | producer | `acks`                               | `all`                | single node: costs nothing, ack after the SQLite commit |
//! | producer | `linger.ms`                          | `5`                  | librdkafka's default: sends made together go as one request; `0` made a request per send, and under load the broker used a third more CPU |
//! | producer | `message.timeout.ms`                 | `10000`              | fail in 10 s instead of 5 min when the broker or topic is missing |
//! | both     | `socket.nagle.disable`               | `true`               | small requests go out at once |
//! | consumer | `auto.offset.reset`                  | `earliest`           | a new group reads what was produced before it subscribed |
//! | consumer | `enable.auto.commit`                 | `false`              | commit with `commit_message`/`commit_consumer_state`; or see [`client_settings::CONSUMER_AUTO_COMMIT`] |
//! | consumer | `partition.assignment.strategy`      | `cooperative-sticky` | a rebalance moves only the partitions that change owner |
//! | consumer | `session.timeout.ms`                 | `6000`               | a dead member is evicted after 6 s |
//! | consumer | `heartbeat.interval.ms`              | `500`                | members learn of a rebalance within ~0.5 s |
//! | consumer | `fetch.wait.max.ms`                  | `200`                | only how long an idle fetch waits, see rule 3 |
//! | consumer | `topic.metadata.refresh.interval.ms` | `1000`               | a topic created after `subscribe` is picked up in ~1 s (default: 5 min) |
//!
//! No `api.version.request`/`broker.version.fallback` settings are needed: ApiVersions
//! negotiation works (librdkafka uses Metadata v12, Fetch v16, JoinGroup v5, ...).
//! Leave `enable.idempotence` at its default (off); it worked in a short run but was not
//! tested across broker restarts.
//!
//! Rules learned by measuring:
//!
//! 1. **Create topics explicitly** (`AdminClient::create_topics`, ignore
//!    `TopicAlreadyExists`) before producing: tansu does not auto-create topics, and a
//!    produce to a missing topic only fails after `message.timeout.ms`.
//! 2. A member that dies without leaving (crash, SIGKILL) is evicted once its session times
//!    out, and the survivors take its partitions over at their next heartbeat (~6 s after a
//!    kill with these settings); a member that closes cleanly (LeaveGroup) is taken over in
//!    0.3 s; a second member joining a group shares its partitions after ~1 s (the first
//!    member hears of the rebalance at its next heartbeat).
//! 3. A fetch is answered as soon as one of its partitions gets a record, so one
//!    produce→consume hop takes a few milliseconds whatever `fetch.wait.max.ms` is. That
//!    setting is only how long an idle consumer's fetch is held; each expiry costs one read
//!    of the log per partition, so longer is cheaper. (tansu 0.6's own handler held every
//!    fetch for the whole wait: each hop cost `fetch.wait.max.ms`, 40 ms at p50 with 50 ms.)
//! 4. Static membership (`group.instance.id`) is supported (a member rejoining with its
//!    instance id replaces its old self) but not needed.
//! 5. Treat `recv()` errors as transient: while the broker restarts a consumer sees
//!    `BrokerTransportFailure`/`AllBrokersDown`; keep polling and it resumes by itself
//!    (~5 s after the broker is back: its group membership is gone with the broker's memory,
//!    so it joins again). Producers retry within `message.timeout.ms`.
//! 6. Both commit styles work and committed offsets survive broker restarts:
//!    `enable.auto.commit=false` + `commit_message`/`commit_consumer_state`, or
//!    `enable.auto.commit=true` + `enable.auto.offset.store=false` +
//!    `store_offset_from_message` (the stored offset was committed within ~0.1 s with
//!    `auto.commit.interval.ms=100`).
//! 7. A consumer of a new group gets its first message ~0.1 s after `subscribe`
//!    (bootstrap, join + sync, librdkafka's 100 ms offset-reset timer when the group has no
//!    committed offset, then one fetch).
//!
//! # Measured figures
//!
//! Loopback, 2 cores, these settings, single broker (`cargo test -p embedded-broker --
//! --nocapture` prints them for the build it runs):
//!
//! | what                                         | this broker (release) | on tansu 0.6's own handlers and SQLite log (release) |
//! |----------------------------------------------|-------------------|-------------------|
//! | start → ready file written                   | 0.03–0.37 s       | 0.13–0.37 s       |
//! | produce ack (1 message, awaited)             | p50 0.65 ms       | p50 0.8 ms        |
//! | subscribe → first message (new group)        | 0.11 s            | 0.16–0.23 s       |
//! | produce → consume, single message            | p50 0.8 ms, max 1.2 ms | p50 40 ms, max 63 ms (50 ms wait) |
//! | second consumer joins → partitions shared    | ~1.0 s            | ~3.1 s            |
//! | member closes → the other owns its partitions | 0.3 s            | 0.15–0.4 s        |
//! | member SIGKILLed → survivor owns its partitions | 6.0 s (session timeout) | never  |
//! | broker CPU, the system at 60 journeys/s (36 orders/s) | 15 % of a core | 92 % of a core |
//!
//! [tansu]: https://docs.rs/tansu-broker

pub mod control;
pub mod coordinator;
pub mod faults;
pub mod fetch;
pub mod front;
pub mod log;
mod server;
pub mod storage;

use std::{
    collections::HashSet,
    ffi::OsString,
    io::{self, IsTerminal as _, Write as _},
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, ToSocketAddrs as _},
    path::{Path, PathBuf},
    process::ExitCode,
    sync::Arc,
    time::Duration,
};

use anyhow::{Context as _, anyhow};
use clap::Parser;
use serde::{Deserialize, Serialize};
use tansu_storage::{BrokerRegistrationRequest, Storage as _, StorageContainer};

use crate::{log::Log, storage::LogStorage};
use tokio::{task::JoinSet, time::Instant};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};
use tracing_subscriber::EnvFilter;
use url::Url;
use uuid::Uuid;

pub use crate::front::{FrontInfo, FrontSpec, HostPort, parse_front};

/// Exit code for bad configuration (flags, environment, data directory): `EX_USAGE`.
pub const EXIT_CONFIG: u8 = 64;
/// Exit code for a failure while running (storage, listener, signals).
pub const EXIT_RUNTIME: u8 = 1;

/// Name of the SQLite database file (topics, committed offsets) inside the data directory.
pub const DB_FILE: &str = "tansu.db";
/// Directory of the partition logs ([`log::Log`]) inside the data directory.
pub const LOG_DIR: &str = "log";

/// Command line of `embedded-broker`. Every flag can also come from the environment.
#[derive(Debug, Clone, Parser)]
#[command(
    name = "embedded-broker",
    version,
    about = "Kafka-compatible broker (tansu) with disk-backed SQLite storage"
)]
pub struct Opts {
    /// Address to listen on, as host:port (the host must resolve to a local address).
    #[arg(long, env = "EMBEDDED_BROKER_LISTEN", default_value = "127.0.0.1:9092", value_parser = parse_socket_addr)]
    pub listen: SocketAddr,

    /// Address advertised to clients in metadata, as host:port. Defaults to --listen
    /// (with an unspecified address such as 0.0.0.0 replaced by loopback).
    #[arg(long, env = "EMBEDDED_BROKER_ADVERTISED_LISTENER")]
    pub advertised_listener: Option<String>,

    /// Directory holding the broker's SQLite database (created if missing). Topics, messages
    /// and committed consumer-group offsets survive restarts on the same directory.
    #[arg(long, env = "EMBEDDED_BROKER_DATA_DIR")]
    pub data_dir: PathBuf,

    /// Kafka cluster id reported to clients.
    #[arg(
        long,
        env = "EMBEDDED_BROKER_CLUSTER_ID",
        default_value = "reference-system"
    )]
    pub cluster_id: String,

    /// Kafka node (broker) id.
    #[arg(long, env = "EMBEDDED_BROKER_NODE_ID", default_value_t = 111)]
    pub node_id: i32,

    /// Once the listener accepts connections, write {"addr":"HOST:PORT","pid":N} here
    /// (atomically: temp file then rename). Removed again on a clean shutdown.
    #[arg(long, env = "EMBEDDED_BROKER_READY_FILE")]
    pub ready_file: Option<PathBuf>,

    /// Shut down when standard input reaches end of file (i.e. the parent process died).
    #[arg(long, env = "EMBEDDED_BROKER_EXIT_ON_STDIN_EOF")]
    pub exit_on_stdin_eof: bool,

    /// An extra listener whose clients are told the broker is at ADVERTISED (host:port):
    /// it relays to the main listener, rewriting broker addresses in Metadata,
    /// FindCoordinator and DescribeCluster responses. Listens on LISTEN, by default
    /// 127.0.0.1:0 (port chosen by the OS; the ready file says which). Repeatable; the
    /// environment variable takes a comma-separated list.
    #[arg(
        long = "front",
        value_name = "ADVERTISED[@LISTEN]",
        env = "EMBEDDED_BROKER_FRONTS",
        value_delimiter = ',',
        value_parser = parse_front
    )]
    pub fronts: Vec<FrontSpec>,

    /// Serve the control API (message-level faults on the fronts, see the `control` module)
    /// on this address, e.g. 127.0.0.1:0; the ready file says where it listens.
    #[arg(long, env = "EMBEDDED_BROKER_CONTROL", value_parser = parse_socket_addr)]
    pub control: Option<SocketAddr>,
}

impl Opts {
    /// Parses the process arguments. On `--help`/`--version` the text is printed and
    /// `Err(ExitCode::SUCCESS)` returned; on a bad flag clap's error is printed and
    /// `Err(64)` returned.
    pub fn parse_args() -> Result<Self, ExitCode> {
        Self::parse_from_iter(std::env::args_os())
    }

    /// Like [`Opts::parse_args`] with explicit arguments (the first is the program name).
    pub fn parse_from_iter<I, T>(args: I) -> Result<Self, ExitCode>
    where
        I: IntoIterator<Item = T>,
        T: Into<OsString> + Clone,
    {
        Self::try_parse_from(args).map_err(|err| {
            // Printing can only fail if stdout/stderr is gone; nothing useful to do then.
            let _ = err.print();
            if err.use_stderr() {
                ExitCode::from(EXIT_CONFIG)
            } else {
                ExitCode::SUCCESS
            }
        })
    }
}

pub(crate) fn parse_socket_addr(s: &str) -> Result<SocketAddr, String> {
    let addrs: Vec<SocketAddr> = s
        .to_socket_addrs()
        .map_err(|err| format!("`{s}` is not a host:port address: {err}"))?
        .collect();
    addrs
        .iter()
        .find(|addr| addr.is_ipv4())
        .or_else(|| addrs.first())
        .copied()
        .ok_or_else(|| format!("`{s}` does not resolve to any address"))
}

/// Contents of the ready file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReadyInfo {
    /// Address the broker accepts connections on (host:port), for `bootstrap.servers`.
    pub addr: String,
    /// Process id of the broker.
    pub pid: u32,
    /// The `--front` listeners, in flag order; absent from the file without `--front`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub fronts: Vec<FrontInfo>,
    /// Where the control API listens (host:port); absent without `--control`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub control: Option<String>,
}

/// Why [`run`] failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Bad configuration: exit code 64.
    #[error("configuration error: {0}")]
    Config(String),
    /// Failure while starting or running: exit code 1.
    #[error("{0:#}")]
    Runtime(#[from] anyhow::Error),
}

impl Error {
    /// Process exit code for this error.
    pub fn exit_code(&self) -> u8 {
        match self {
            Self::Config(_) => EXIT_CONFIG,
            Self::Runtime(_) => EXIT_RUNTIME,
        }
    }
}

/// tansu logs every decoded record field at INFO (several lines per produced message); these
/// directives are added to the filter unless `RUST_LOG` names a tansu target itself.
pub const QUIET_TANSU: &str = "tansu_sans_io=warn,tansu_storage=warn";

/// The `tracing` filter directives used for a `RUST_LOG` value (`None`: unset).
pub fn log_directives(rust_log: Option<&str>) -> String {
    let base = rust_log
        .map(str::trim)
        .filter(|value| !value.is_empty())
        .unwrap_or("info");
    if base.contains("tansu") {
        base.to_owned()
    } else {
        format!("{base},{QUIET_TANSU}")
    }
}

/// Initialises `tracing` to stderr: JSON when `LOG_FORMAT=json`, plain text otherwise.
/// The filter comes from `RUST_LOG` (default `info`), see [`log_directives`].
pub fn init_logging() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let rust_log = std::env::var("RUST_LOG").ok();
    let filter = EnvFilter::try_new(log_directives(rust_log.as_deref()))?;
    let json = std::env::var("LOG_FORMAT").is_ok_and(|v| v.eq_ignore_ascii_case("json"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(io::stderr().is_terminal())
        .with_writer(io::stderr);
    if json {
        builder.json().try_init()
    } else {
        builder.try_init()
    }
}

/// Runs the broker until SIGINT/SIGTERM (or stdin EOF with `--exit-on-stdin-eof`).
pub async fn run(opts: Opts) -> Result<(), Error> {
    let data_dir = prepare_data_dir(&opts.data_dir)?;
    let ready_file = opts
        .ready_file
        .as_deref()
        .map(|path| {
            std::path::absolute(path).map_err(|err| {
                Error::Config(format!("bad ready file path {}: {err}", path.display()))
            })
        })
        .transpose()?;
    if let Some(path) = &ready_file {
        remove_if_exists(path)
            .with_context(|| format!("cannot remove stale ready file {}", path.display()))?;
    }

    let listen = opts.listen;
    let advertised = match &opts.advertised_listener {
        Some(advertised) => advertised.clone(),
        None => connectable(listen).to_string(),
    };
    let advertised_url = tcp_url(&advertised)?;
    check_front_listeners(listen, &opts.fronts)?;

    // Bound here, before the fronts: a clear error if the address is taken, and an OS-chosen
    // front port cannot be the broker's.
    let listener = server::bind(listen)
        .await
        .with_context(|| format!("cannot listen on {listen}"))?;
    let mut fronts = Vec::with_capacity(opts.fronts.len());
    for spec in &opts.fronts {
        let front = front::Front::bind(spec).await.with_context(|| {
            format!(
                "cannot listen on {} for front {}",
                spec.listen, spec.advertised
            )
        })?;
        fronts.push(front);
    }
    let front_infos: Vec<FrontInfo> = fronts.iter().map(front::Front::info).collect();
    let faults = Arc::new(faults::Faults::default());
    let control = match opts.control {
        Some(addr) => Some(
            tokio::net::TcpListener::bind(addr)
                .await
                .with_context(|| format!("cannot listen on {addr} for the control API"))?,
        ),
        None => None,
    };
    let control_addr = control
        .as_ref()
        .map(tokio::net::TcpListener::local_addr)
        .transpose()
        .context("the control API's address")?;

    info!(
        %listen,
        %advertised,
        data_dir = %data_dir.display(),
        cluster_id = %opts.cluster_id,
        node_id = opts.node_id,
        "starting embedded broker"
    );
    let started = Instant::now();
    let cancellation = CancellationToken::new();
    let storage = storage(
        &data_dir,
        &opts.cluster_id,
        opts.node_id,
        advertised_url,
        &cancellation,
    )
    .await?;

    let shutdown = lifeline::stop_requested(opts.exit_on_stdin_eof);
    // Dropping the set (below) aborts the fronts and with them every relayed connection.
    let mut front_tasks = JoinSet::new();
    if let Some(listener) = control {
        let router = control::router(
            Arc::clone(&faults),
            front_infos.iter().map(|f| f.advertised.clone()).collect(),
        );
        front_tasks.spawn(async move {
            if let Err(err) = axum::serve(listener, router).await {
                warn!(error = %err, "the control API stopped");
            }
        });
    }
    for front in fronts {
        front_tasks.spawn(front.serve(connectable(listen), Arc::clone(&faults)));
    }
    let ready = announce_ready(
        listen,
        front_infos,
        control_addr.map(|a| a.to_string()),
        ready_file.clone(),
        started,
    );

    let outcome = tokio::select! {
        served = server::serve(listener, storage, opts.cluster_id.clone()) => match served {
            Ok(()) => Err(anyhow!("broker stopped unexpectedly").into()),
            Err(err) => Err(anyhow!("broker failed: {err:#}").into()),
        },
        announced = ready => match announced {
            Ok(never) => match never {},
            Err(err) => Err(err.into()),
        },
        reason = shutdown => {
            info!(reason, "shutting down");
            Ok(())
        }
    };
    drop(front_tasks);
    cancellation.cancel();

    if let Some(path) = &ready_file
        && let Err(err) = remove_if_exists(path)
    {
        warn!(path = %path.display(), error = %err, "cannot remove ready file");
    }
    if outcome.is_ok() {
        info!("embedded broker stopped");
    }
    outcome
}

fn prepare_data_dir(dir: &Path) -> Result<PathBuf, Error> {
    std::fs::create_dir_all(dir).map_err(|err| {
        Error::Config(format!(
            "cannot create data directory {}: {err}",
            dir.display()
        ))
    })?;
    let dir = dir.canonicalize().map_err(|err| {
        Error::Config(format!(
            "cannot resolve data directory {}: {err}",
            dir.display()
        ))
    })?;
    if !dir.is_dir() {
        return Err(Error::Config(format!(
            "data directory {} is not a directory",
            dir.display()
        )));
    }
    // Fail early (as a config error) if the directory is not writable.
    let probe = dir.join(".embedded-broker-write-probe");
    std::fs::write(&probe, b"").map_err(|err| {
        Error::Config(format!(
            "data directory {} is not writable: {err}",
            dir.display()
        ))
    })?;
    let _ = std::fs::remove_file(&probe);
    Ok(dir)
}

/// Pinned front listen addresses must differ from each other and from the main listener;
/// port 0 (OS-chosen) never clashes.
fn check_front_listeners(listen: SocketAddr, fronts: &[FrontSpec]) -> Result<(), Error> {
    let mut taken = HashSet::from([listen]);
    for spec in fronts.iter().filter(|spec| spec.listen.port() != 0) {
        if !taken.insert(spec.listen) {
            return Err(Error::Config(format!(
                "front {spec}: listen address {} is already used by the broker or another front",
                spec.listen
            )));
        }
    }
    Ok(())
}

fn tcp_url(host_port: &str) -> Result<Url, Error> {
    Url::parse(&format!("tcp://{host_port}"))
        .map_err(|err| Error::Config(format!("`{host_port}` is not a valid host:port: {err}")))
}

/// An address a local client can connect to for a listen address.
fn connectable(listen: SocketAddr) -> SocketAddr {
    match listen.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => {
            SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), listen.port())
        }
        IpAddr::V6(ip) if ip.is_unspecified() => {
            SocketAddr::new(IpAddr::V6(Ipv6Addr::LOCALHOST), listen.port())
        }
        _ => listen,
    }
}

fn remove_if_exists(path: &Path) -> io::Result<()> {
    match std::fs::remove_file(path) {
        Err(err) if err.kind() != io::ErrorKind::NotFound => Err(err),
        _ => Ok(()),
    }
}

/// tansu's SQLite storage in `data_dir`, with this broker registered in it.
async fn storage(
    data_dir: &Path,
    cluster_id: &str,
    node_id: i32,
    advertised: Url,
    cancellation: &CancellationToken,
) -> anyhow::Result<LogStorage<StorageContainer>> {
    // tansu 0.6 joins the URL's path to the current directory after dropping one leading `/`;
    // a second `/` keeps the path absolute (`PathBuf::push` of an absolute path replaces), so
    // the process need not change its current directory.
    let url = Url::parse(&format!("sqlite:///{}", data_dir.join(DB_FILE).display()))
        .context("storage url")?;
    let storage = StorageContainer::builder()
        .cluster_id(cluster_id.to_owned())
        .node_id(node_id)
        .advertised_listener(advertised)
        .storage(url)
        .cancellation(cancellation.clone())
        .silent(true)
        .build()
        .await
        .map_err(|err| {
            anyhow!(
                "cannot start broker storage in {}: {err}",
                data_dir.display()
            )
        })?;
    storage
        .register_broker(BrokerRegistrationRequest {
            broker_id: node_id,
            cluster_id: cluster_id.to_owned(),
            incarnation_id: Uuid::now_v7(),
            rack: None,
        })
        .await
        .map_err(|err| anyhow!("cannot register the broker in its storage: {err}"))?;
    let log = Log::open(&data_dir.join(LOG_DIR))?;
    Ok(LogStorage::new(storage, log))
}

/// Waits until the listener accepts connections, writes the ready file, then never returns.
async fn announce_ready(
    listen: SocketAddr,
    fronts: Vec<FrontInfo>,
    control: Option<String>,
    ready_file: Option<PathBuf>,
    started: Instant,
) -> anyhow::Result<std::convert::Infallible> {
    let target = connectable(listen);
    loop {
        match tokio::net::TcpStream::connect(target).await {
            Ok(stream) => {
                drop(stream);
                break;
            }
            Err(err) => {
                debug!(%target, error = %err, "broker not accepting connections yet");
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }
    let info = ReadyInfo {
        addr: target.to_string(),
        pid: std::process::id(),
        fronts,
        control,
    };
    if let Some(path) = &ready_file {
        write_atomically(path, &info)
            .with_context(|| format!("cannot write ready file {}", path.display()))?;
    }
    info!(
        addr = %info.addr,
        pid = info.pid,
        ready_ms = started.elapsed().as_millis() as u64,
        "embedded broker ready"
    );
    std::future::pending().await
}

fn write_atomically(path: &Path, info: &ReadyInfo) -> anyhow::Result<()> {
    let parent = path
        .parent()
        .ok_or_else(|| anyhow!("ready file path has no parent directory"))?;
    std::fs::create_dir_all(parent)?;
    let name = path
        .file_name()
        .ok_or_else(|| anyhow!("ready file path has no file name"))?;
    let mut tmp_name = OsString::from(".");
    tmp_name.push(name);
    tmp_name.push(format!(".{}.tmp", std::process::id()));
    let tmp = parent.join(tmp_name);
    let mut file = std::fs::File::create(&tmp)?;
    serde_json::to_writer(&mut file, info)?;
    file.write_all(b"\n")?;
    file.sync_all()?;
    drop(file);
    std::fs::rename(&tmp, path)?;
    Ok(())
}

/// rdkafka (librdkafka 2.12) client settings measured to work reliably and fast against this
/// broker; see the crate documentation for the measurements and the reasons. Apply them with
/// `ClientConfig::set` on top of `bootstrap.servers` (and `group.id` for consumers).
pub mod client_settings {
    /// Producer settings (add `bootstrap.servers`).
    pub const PRODUCER: &[(&str, &str)] = &[
        ("acks", "all"),
        ("linger.ms", "5"),
        ("message.timeout.ms", "10000"),
        ("socket.nagle.disable", "true"),
    ];

    /// Consumer settings (add `bootstrap.servers` and `group.id`). Offsets are committed by
    /// the application (`commit_message` / `commit_consumer_state`); for the auto-commit
    /// variant see [`CONSUMER_AUTO_COMMIT`].
    pub const CONSUMER: &[(&str, &str)] = &[
        ("auto.offset.reset", "earliest"),
        ("enable.auto.commit", "false"),
        ("partition.assignment.strategy", "cooperative-sticky"),
        ("session.timeout.ms", "6000"),
        ("heartbeat.interval.ms", "500"),
        ("fetch.wait.max.ms", "200"),
        ("topic.metadata.refresh.interval.ms", "1000"),
        ("socket.nagle.disable", "true"),
    ];

    /// Overrides for at-least-once with background commits: after handling a message call
    /// `store_offset_from_message`; librdkafka commits stored offsets every 200 ms and on close.
    pub const CONSUMER_AUTO_COMMIT: &[(&str, &str)] = &[
        ("enable.auto.commit", "true"),
        ("enable.auto.offset.store", "false"),
        ("auto.commit.interval.ms", "200"),
    ];
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn log_directives_quiet_tansu_unless_asked_for() {
        assert_eq!(log_directives(None), format!("info,{QUIET_TANSU}"));
        assert_eq!(log_directives(Some(" ")), format!("info,{QUIET_TANSU}"));
        assert_eq!(
            log_directives(Some("debug")),
            format!("debug,{QUIET_TANSU}")
        );
        assert_eq!(
            log_directives(Some("info,tansu_storage=debug")),
            "info,tansu_storage=debug"
        );
    }

    #[test]
    fn listen_addresses() {
        assert_eq!(
            parse_socket_addr("127.0.0.1:9092").unwrap(),
            "127.0.0.1:9092".parse::<SocketAddr>().unwrap()
        );
        assert!(
            parse_socket_addr("localhost:9092")
                .unwrap()
                .ip()
                .is_loopback()
        );
        assert!(parse_socket_addr("127.0.0.1").is_err());
        assert_eq!(
            connectable("0.0.0.0:9092".parse().unwrap()),
            "127.0.0.1:9092".parse::<SocketAddr>().unwrap()
        );
        assert_eq!(
            connectable("[::]:9092".parse().unwrap()),
            "[::1]:9092".parse::<SocketAddr>().unwrap()
        );
    }

    #[test]
    fn flags_and_exit_codes() {
        let opts = Opts::parse_from_iter(["embedded-broker", "--data-dir", "/tmp/x"]).unwrap();
        assert_eq!(opts.listen, "127.0.0.1:9092".parse::<SocketAddr>().unwrap());
        assert_eq!(opts.cluster_id, "reference-system");
        assert_eq!(opts.node_id, 111);
        assert!(!opts.exit_on_stdin_eof);
        assert_eq!(Error::Config(String::new()).exit_code(), 64);
        assert_eq!(Error::Runtime(anyhow!("boom")).exit_code(), 1);
    }

    #[test]
    fn fronts_repeat_split_on_commas_and_must_not_share_a_pinned_port() {
        let opts = Opts::parse_from_iter([
            "embedded-broker",
            "--data-dir",
            "/tmp/x",
            "--front",
            "127.0.0.1:40001",
            "--front",
            "order-2.proxy:40002@127.0.0.1:39999,127.0.0.1:40003",
        ])
        .unwrap();
        let fronts: Vec<String> = opts.fronts.iter().map(ToString::to_string).collect();
        assert_eq!(
            fronts,
            [
                "127.0.0.1:40001@127.0.0.1:0",
                "order-2.proxy:40002@127.0.0.1:39999",
                "127.0.0.1:40003@127.0.0.1:0",
            ]
        );
        assert!(check_front_listeners(opts.listen, &opts.fronts).is_ok());

        let none = Opts::parse_from_iter(["embedded-broker", "--data-dir", "/tmp/x"]).unwrap();
        assert!(none.fronts.is_empty());

        let bad = Opts::try_parse_from(["embedded-broker", "--data-dir", "/tmp/x", "--front", "x"])
            .unwrap_err();
        assert_eq!(bad.kind(), clap::error::ErrorKind::ValueValidation);
        assert!(bad.use_stderr(), "exits 64 through parse_from_iter");

        let listen: SocketAddr = "127.0.0.1:9092".parse().unwrap();
        let clash = |values: &[&str]| {
            let fronts: Vec<FrontSpec> = values.iter().map(|v| parse_front(v).unwrap()).collect();
            matches!(
                check_front_listeners(listen, &fronts),
                Err(Error::Config(message)) if message.contains("already used")
            )
        };
        assert!(clash(&["a:1@127.0.0.1:9092"]));
        assert!(clash(&["a:1@127.0.0.1:5000", "b:2@127.0.0.1:5000"]));
        assert!(!clash(&["a:1@127.0.0.1:0", "b:2@127.0.0.1:0"]));
    }

    #[test]
    fn ready_files_without_fronts_look_as_before() {
        let info = ReadyInfo {
            addr: "127.0.0.1:9092".into(),
            pid: 42,
            fronts: Vec::new(),
            control: None,
        };
        let json = serde_json::to_string(&info).unwrap();
        assert_eq!(json, r#"{"addr":"127.0.0.1:9092","pid":42}"#);
        assert_eq!(serde_json::from_str::<ReadyInfo>(&json).unwrap(), info);
    }

    #[test]
    fn ready_file_is_replaced_atomically() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("nested").join("ready.json");
        let info = ReadyInfo {
            addr: "127.0.0.1:9092".into(),
            pid: 42,
            fronts: vec![FrontInfo {
                advertised: "127.0.0.1:40001".into(),
                listen: "127.0.0.1:39999".into(),
            }],
            control: Some("127.0.0.1:39998".into()),
        };
        write_atomically(&path, &info).unwrap();
        write_atomically(&path, &info).unwrap();
        let read: ReadyInfo =
            serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        assert_eq!(read, info);
        let names: Vec<_> = std::fs::read_dir(path.parent().unwrap())
            .unwrap()
            .map(|entry| entry.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("ready.json")]);
    }
}
