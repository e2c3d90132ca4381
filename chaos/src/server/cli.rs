//! The `chaos-proxy` binary's flags and main loop.
//!
//! Flags follow Toxiproxy's server (`-host`, `-port`, `-config` become `--host`, `--port`,
//! `--config`). The supervision conventions are the workspace's own, shared with the services:
//! `READY_FILE` receives `{"addr":"HOST:PORT","pid":N}` once the API accepts requests (written
//! to a temporary file, then renamed), and `EXIT_ON_STDIN_EOF=1` stops the server when its
//! parent dies and the stdin pipe closes. SIGINT and SIGTERM stop it cleanly.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use clap::Parser;
use serde::{Deserialize, Serialize};

use super::Server;
use crate::model::NewProxy;

/// Exit code for bad flags or a bad `--config` file.
pub const EXIT_CONFIG: u8 = 64;
/// Exit code for failures while starting or running (e.g. the port is taken).
pub const EXIT_RUNTIME: u8 = 1;

/// `chaos-proxy`'s command line.
#[derive(Debug, Clone, Parser)]
#[command(
    name = "chaos-proxy",
    version,
    about = "A Toxiproxy-compatible TCP fault-injection proxy"
)]
pub struct Opts {
    /// Host for the HTTP API to listen on.
    #[arg(long, env = "CHAOS_PROXY_HOST", default_value = "127.0.0.1")]
    pub host: String,

    /// Port for the HTTP API (0: any free port; see READY_FILE).
    #[arg(long, env = "CHAOS_PROXY_PORT", default_value_t = 8474)]
    pub port: u16,

    /// JSON file with an array of proxies to create at start-up, as for `POST /populate`:
    /// `[{"name":"db","listen":"127.0.0.1:5433","upstream":"127.0.0.1:5432"}]`.
    #[arg(long, env = "CHAOS_PROXY_CONFIG")]
    pub config: Option<PathBuf>,

    /// Once the API accepts requests, write {"addr":"HOST:PORT","pid":N} here.
    #[arg(long, env = "READY_FILE")]
    pub ready_file: Option<PathBuf>,

    /// Stop when standard input reaches end of file (the supervising parent died). The
    /// environment variable takes `1`/`true`/`yes` (and `0`/`false`/`no`/empty for off).
    #[arg(
        long,
        env = "EXIT_ON_STDIN_EOF",
        action = clap::ArgAction::SetTrue,
        value_parser = clap::builder::FalseyValueParser::new()
    )]
    pub exit_on_stdin_eof: bool,
}

impl Opts {
    /// Parses `args` (the first is the program name). On `--help`/`--version` the text is
    /// printed and `Err(0)` returned; on a bad flag clap's message is printed and
    /// `Err(EXIT_CONFIG)` returned.
    pub fn parse_from_iter<I, T>(args: I) -> Result<Self, u8>
    where
        I: IntoIterator<Item = T>,
        T: Into<OsString> + Clone,
    {
        Self::try_parse_from(args).map_err(|err| {
            // Printing only fails when stdout/stderr are gone; nothing useful to do then.
            let _ = err.print();
            if err.use_stderr() { EXIT_CONFIG } else { 0 }
        })
    }
}

/// Contents of the ready file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReadyInfo {
    /// The API's address (`host:port`).
    pub addr: String,
    pub pid: u32,
}

/// Why [`run`] failed.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// Bad configuration: exit code [`EXIT_CONFIG`].
    #[error("configuration error: {0}")]
    Config(String),
    /// Failure while starting or running: exit code [`EXIT_RUNTIME`].
    #[error("{0}")]
    Runtime(String),
}

impl RunError {
    /// Process exit code for this error.
    pub fn exit_code(&self) -> u8 {
        match self {
            RunError::Config(_) => EXIT_CONFIG,
            RunError::Runtime(_) => EXIT_RUNTIME,
        }
    }
}

/// Runs the server until SIGINT, SIGTERM or (with `--exit-on-stdin-eof`) stdin EOF.
pub async fn run(opts: Opts) -> Result<(), RunError> {
    let proxies = match &opts.config {
        Some(path) => read_config(path)?,
        None => Vec::new(),
    };
    let host = if opts.host.contains(':') && !opts.host.starts_with('[') {
        format!("[{}]", opts.host)
    } else {
        opts.host.clone()
    };
    let server = Server::bind(format!("{host}:{}", opts.port))
        .await
        .map_err(|err| RunError::Runtime(error_chain(&err)))?;
    if !proxies.is_empty() {
        let created = server
            .populate(proxies)
            .await
            .map_err(|err| RunError::Config(error_chain(&err)))?;
        tracing::info!(
            proxies = created.len(),
            "populated proxies from the config file"
        );
    }
    let addr = server.local_addr();
    if let Some(path) = &opts.ready_file {
        write_ready_file(path, &addr.to_string()).map_err(|err| {
            RunError::Runtime(format!(
                "cannot write the ready file {}: {err}",
                path.display()
            ))
        })?;
    }
    tracing::info!(%addr, version = super::VERSION, "chaos-proxy API listening");
    let result = server
        .run_until({
            let stop = lifeline::stop_requested(opts.exit_on_stdin_eof);
            async move {
                let reason = stop.await;
                tracing::info!(reason, "shutdown requested");
            }
        })
        .await
        .map_err(|err| RunError::Runtime(error_chain(&err)));
    if let Some(path) = &opts.ready_file {
        let _ = std::fs::remove_file(path);
    }
    result
}

fn read_config(path: &Path) -> Result<Vec<NewProxy>, RunError> {
    let text = std::fs::read_to_string(path).map_err(|err| {
        RunError::Config(format!(
            "cannot read the config file {}: {err}",
            path.display()
        ))
    })?;
    #[derive(Deserialize)]
    struct Entry {
        name: String,
        #[serde(default)]
        listen: String,
        upstream: String,
        #[serde(default)]
        enabled: Option<bool>,
    }
    let entries: Vec<Entry> = serde_json::from_str(&text).map_err(|err| {
        RunError::Config(format!(
            "the config file {} is not a JSON array of proxies: {err}",
            path.display()
        ))
    })?;
    Ok(entries
        .into_iter()
        .map(|e| NewProxy {
            name: e.name,
            listen: e.listen,
            upstream: e.upstream,
            enabled: e.enabled.unwrap_or(true),
        })
        .collect())
}

fn write_ready_file(path: &Path, addr: &str) -> std::io::Result<()> {
    let info = ReadyInfo {
        addr: addr.to_owned(),
        pid: std::process::id(),
    };
    let body = serde_json::to_string(&info).map_err(std::io::Error::other)?;
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, body)?;
    std::fs::rename(&tmp, path)
}

fn error_chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_match_toxiproxys_server() {
        let opts = Opts::parse_from_iter(["chaos-proxy"]).unwrap();
        assert_eq!(opts.host, "127.0.0.1");
        assert_eq!(opts.port, 8474);
        assert!(opts.config.is_none());
    }

    #[test]
    fn an_unknown_flag_is_a_configuration_error() {
        assert_eq!(
            Opts::parse_from_iter(["chaos-proxy", "--bogus"]).unwrap_err(),
            EXIT_CONFIG
        );
    }

    #[test]
    fn a_config_file_that_is_not_a_proxy_array_is_rejected_with_its_path() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("proxies.json");
        std::fs::write(&path, r#"{"name":"x"}"#).unwrap();
        let err = read_config(&path).unwrap_err();
        assert_eq!(err.exit_code(), EXIT_CONFIG);
        assert!(err.to_string().contains("proxies.json"), "{err}");
    }
}
