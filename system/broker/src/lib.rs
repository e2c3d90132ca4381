//! TODO doc

use std::{
    ffi::OsString,
    io::{self, Read as _, Write as _},
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, ToSocketAddrs as _},
    path::{Path, PathBuf},
    process::ExitCode,
    time::Duration,
};

use anyhow::{Context as _, anyhow};
use clap::Parser;
use serde::{Deserialize, Serialize};
use tansu_broker::broker::Broker;
use tokio::{
    signal::unix::{SignalKind, signal},
    sync::oneshot,
    time::Instant,
};
use tracing::{debug, info, warn};
use tracing_subscriber::EnvFilter;
use url::Url;
use uuid::Uuid;

/// Exit code for bad configuration (flags, environment, data directory): `EX_USAGE`.
pub const EXIT_CONFIG: u8 = 64;
/// Exit code for a failure while running (storage, listener, signals).
pub const EXIT_RUNTIME: u8 = 1;

/// Name of the SQLite database file inside the data directory.
pub const DB_FILE: &str = "tansu.db";

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
    #[arg(long, env = "EMBEDDED_BROKER_CLUSTER_ID", default_value = "reference-system")]
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

fn parse_socket_addr(s: &str) -> Result<SocketAddr, String> {
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

/// Initialises `tracing` to stderr: JSON when `LOG_FORMAT=json`, plain text otherwise.
/// The filter comes from `RUST_LOG` (default `info`).
pub fn init_logging() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let json = std::env::var("LOG_FORMAT").is_ok_and(|v| v.eq_ignore_ascii_case("json"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(io::stderr);
    if json {
        builder.json().try_init()
    } else {
        builder.try_init()
    }
}

/// Runs the broker until SIGINT/SIGTERM (or stdin EOF with `--exit-on-stdin-eof`).
///
/// Changes the process's current directory to the data directory: tansu resolves its
/// `sqlite://` storage URL relative to the current directory.
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
    let listener_url = tcp_url(&listen.to_string())?;
    let advertised_url = tcp_url(&advertised)?;

    // tansu binds its listener only inside `serve`. Bind here first: a clear error if the
    // address is taken, and the readiness probe below cannot mistake another process's
    // listener for ours.
    std::net::TcpListener::bind(listen)
        .with_context(|| format!("cannot listen on {listen}"))?;

    std::env::set_current_dir(&data_dir).with_context(|| {
        format!(
            "cannot change the current directory to {}",
            data_dir.display()
        )
    })?;
    let storage = Url::parse(&format!("sqlite://{DB_FILE}")).context("storage url")?;

    info!(
        %listen,
        %advertised,
        data_dir = %data_dir.display(),
        cluster_id = %opts.cluster_id,
        node_id = opts.node_id,
        "starting embedded broker"
    );

    let started = Instant::now();
    let mut broker = Broker::builder()
        .node_id(opts.node_id)
        .cluster_id(opts.cluster_id.clone())
        .incarnation_id(Uuid::now_v7())
        .advertised_listener(advertised_url)
        .storage(storage)
        .listener(listener_url)
        .silent(true)
        .build()
        .await
        .map_err(|err| anyhow!("cannot start broker storage in {}: {err}", data_dir.display()))?;

    let shutdown = shutdown_signal(opts.exit_on_stdin_eof)?;
    let ready = announce_ready(listen, ready_file.clone(), started);

    let outcome = tokio::select! {
        served = broker.serve(started) => match served {
            Ok(()) => Err(anyhow!("broker stopped unexpectedly").into()),
            Err(err) => Err(anyhow!("broker failed: {err}").into()),
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
    drop(broker);

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
        Error::Config(format!("cannot resolve data directory {}: {err}", dir.display()))
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

/// Waits until the listener accepts connections, writes the ready file, then never returns.
async fn announce_ready(
    listen: SocketAddr,
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

/// Resolves with a description of why the broker should stop.
fn shutdown_signal(
    exit_on_stdin_eof: bool,
) -> anyhow::Result<impl std::future::Future<Output = &'static str>> {
    let mut interrupt = signal(SignalKind::interrupt()).context("cannot install SIGINT handler")?;
    let mut terminate =
        signal(SignalKind::terminate()).context("cannot install SIGTERM handler")?;
    let stdin_eof = if exit_on_stdin_eof {
        let (tx, rx) = oneshot::channel();
        // A plain thread, not tokio's stdin: a blocked read must not hold up runtime shutdown.
        std::thread::Builder::new()
            .name("stdin-eof".into())
            .spawn(move || {
                let mut stdin = io::stdin().lock();
                let mut buf = [0u8; 512];
                loop {
                    match stdin.read(&mut buf) {
                        Ok(0) => break,
                        Ok(_) => {}
                        Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
                        Err(_) => break,
                    }
                }
                let _ = tx.send(());
            })
            .context("cannot start stdin watcher thread")?;
        Some(rx)
    } else {
        None
    };
    Ok(async move {
        let stdin = async {
            match stdin_eof {
                Some(rx) => {
                    let _ = rx.await;
                }
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = interrupt.recv() => "SIGINT",
            _ = terminate.recv() => "SIGTERM",
            () = stdin => "stdin reached EOF",
        }
    })
}

/// rdkafka (librdkafka) client settings measured to work reliably and fast against this
/// broker. See the crate documentation for the measurements behind them.
pub mod client_settings {
    /// Producer settings (add `bootstrap.servers`).
    pub const PRODUCER: &[(&str, &str)] = &[
        ("acks", "all"),
        ("linger.ms", "0"),
        ("message.timeout.ms", "10000"),
        ("socket.nagle.disable", "true"),
    ];

    /// Consumer settings (add `bootstrap.servers` and `group.id`).
    pub const CONSUMER: &[(&str, &str)] = &[
        ("auto.offset.reset", "earliest"),
        ("enable.auto.commit", "false"),
        ("session.timeout.ms", "6000"),
        ("heartbeat.interval.ms", "500"),
        ("fetch.wait.max.ms", "20"),
        ("socket.nagle.disable", "true"),
    ];
}
