//! `chaos-proxy`: a Toxiproxy-compatible fault-injection proxy. See `chaos::server`.

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::io::IsTerminal;
use std::process::ExitCode;

use anyhow::Context;
use chaos::server::{EXIT_CONFIG, Opts, run};
use tracing_subscriber::EnvFilter;

// One thread: the proxy only moves bytes between sockets and sleeps on timers. With a worker per
// core, each wake-up on one worker woke another to steal work, and switching between them was a
// quarter of the proxy's samples in `perf`; on one thread its CPU per request fell by a fifth
// and its thread switches by half (docs/performance.md, row 17).
#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let opts = match Opts::parse_from_iter(std::env::args_os()) {
        Ok(opts) => opts,
        Err(code) => return ExitCode::from(code),
    };
    if let Err(err) = init_logging() {
        eprintln!("chaos-proxy: {err:#}");
        return ExitCode::from(EXIT_CONFIG);
    }
    match run(opts).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            tracing::error!(error = %err, "chaos-proxy stopped with an error");
            ExitCode::from(err.exit_code())
        }
    }
}

/// Logs to stderr: JSON with `LOG_FORMAT=json`, filter from `RUST_LOG` (default `info`).
fn init_logging() -> anyhow::Result<()> {
    let filter = match std::env::var("RUST_LOG") {
        Ok(value) if !value.trim().is_empty() => {
            EnvFilter::try_new(&value).context("RUST_LOG is not a valid filter")?
        }
        _ => EnvFilter::new("info"),
    };
    let json = std::env::var("LOG_FORMAT").is_ok_and(|v| v.eq_ignore_ascii_case("json"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    let installed = if json {
        builder.json().try_init()
    } else {
        builder.try_init()
    };
    installed.map_err(|err| anyhow::anyhow!(err).context("cannot install the logger"))
}
