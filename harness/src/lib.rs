//! The harness: runs the reference system and proves what happens to it.
//!
//! Today it brings the system up on the local backend (`harness up`): the embedded Kafka broker
//! and every service instance as child processes on 127.0.0.1, each service with its own SQLite
//! file in a run directory, seeded with products and customers, with tokens issued for them.
//! Load, chaos and checks build on [`environment::Environment`] and [`client::ApiClient`].
//!
//! # Layout
//! - [`cli`]: command-line options.
//! - [`environment`]: the one interface every backend implements, and the backends ([`environment::local`]).
//! - [`seed`]: the data every environment starts with, and the identity provider issuing tokens.
//! - [`client`]: a typed client of the gateway's API.
//!
//! Exit codes: 0 success, 1 a check failed, 2 the run itself could not happen, 130 the run was
//! interrupted ([`interrupt`]).

pub mod bench;
pub mod capacity;
pub mod checks;
pub mod cli;
pub mod client;
pub mod console;
pub mod control;
pub mod environment;
pub mod faults;
pub mod game_day;
pub mod interrupt;
pub mod knee;
pub mod load;
pub mod metrics;
pub mod report;
pub mod run;
pub mod scenario;
pub mod seed;
pub mod slo;
pub mod telemetry;
pub mod trace;

use std::process::ExitCode;
use std::time::Instant;

use anyhow::Context;

use crate::cli::{Cli, Command, UpArgs};
use crate::environment::EnvOptions;

/// Exit code when the run itself could not happen (bad input, environment failed to start).
pub const EXIT_CANNOT_RUN: u8 = 2;

/// Runs a parsed command line and returns the process exit code.
pub fn run(cli: Cli) -> ExitCode {
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(EXIT_CANNOT_RUN);
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Up(args) => up(args).await,
            Command::List(args) => scenario::catalog::list(&args),
            Command::Run(args) if args.tui => console::live::run(args).await,
            Command::Run(args) => run::run(args).await,
            Command::Chaos(args) => game_day::run(args).await,
            Command::Console(args) => console::run(args).await,
            Command::Trace(args) => trace::run(args).await,
            Command::Bench(args) => bench::run(args).await,
        }
    });
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(EXIT_CANNOT_RUN)
        }
    }
}

async fn up(args: UpArgs) -> anyhow::Result<ExitCode> {
    let started = Instant::now();
    let options = EnvOptions {
        instances: args.instances,
        run_dir: args.run_dir,
        saga_step_timeout_ms: args.saga_step_timeout_ms,
        admission: true,
        trace_sampling: 1.0,
        cpus_per_instance: args.cpus_per_instance,
        resilience: crate::scenario::Resilience::default(),
        build: !args.no_build,
        traces: crate::environment::Traces::Collect {
            forward_to: args.otlp_endpoint.clone(),
        },
    };
    let shutdown = platform::shutdown::install(false);
    let env = tokio::select! {
        env = environment::start(args.backend, options) => env
            .with_context(|| format!("starting the {} environment", args.backend.name()))?,
        _ = shutdown.cancelled() => {
            eprintln!("interrupted during start-up; everything started so far was stopped");
            return Ok(ExitCode::from(EXIT_CANNOT_RUN));
        }
    };
    let env = std::sync::Arc::new(tokio::sync::Mutex::new(env));
    let stop_control = tokio_util::sync::CancellationToken::new();
    // It writes the env file, and again whenever `harness chaos scale` changes the instances.
    let (_, info) =
        control::serve(env.clone(), stop_control.clone(), args.env_file.clone()).await?;
    let prometheus = info.prometheus_config.clone().unwrap_or_default();
    println!(
        "ready: start-up took {:.2} s ({:.2} s including the build check)",
        env.lock().await.startup_time().as_secs_f64(),
        started.elapsed().as_secs_f64()
    );
    println!("gateway:        {}", info.gateway_url);
    println!("run dir:        {}", info.run_dir);
    for p in &info.processes {
        println!(
            "  {:<14} pid {:<7} {}",
            p.name,
            p.pid,
            p.url.as_deref().unwrap_or(&p.addr)
        );
    }
    println!(
        "links:          {} named proxies (`harness chaos links`)",
        info.links.len()
    );
    println!("toxiproxy api:  {}", info.toxiproxy_url);
    if let Some(otlp) = &info.otlp_endpoint {
        let forward = args
            .otlp_endpoint
            .as_ref()
            .map_or(String::new(), |f| format!(", forwarded to {f}"));
        println!("otlp traces:    {otlp}/v1/traces{forward} (`harness trace ORDER_ID`)");
    }
    println!(
        "prometheus:     {prometheus} (scrapes every /metrics; dashboards/ has Grafana dashboards)"
    );
    println!("customer token: {}", info.customer_token);
    println!("admin token:    {}", info.admin_token);
    if let Some(path) = &args.env_file {
        println!("env file:       {}", path.display());
    }
    println!("press Ctrl-C to stop");
    shutdown.cancelled().await;
    println!("stopping...");
    let stopped = Instant::now();
    stop_control.cancel();
    // The control API's handlers hold the environment only while they run; wait for them.
    let deadline = Instant::now() + std::time::Duration::from_secs(10);
    let mut env = env;
    let env = loop {
        match std::sync::Arc::try_unwrap(env) {
            Ok(m) => break Some(m.into_inner()),
            Err(shared) if Instant::now() < deadline => {
                env = shared;
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            }
            // Dropping the last handle kills every process anyway.
            Err(_) => break None,
        }
    };
    if let Some(env) = env {
        env.stop().await;
    }
    println!("stopped in {:.2} s", stopped.elapsed().as_secs_f64());
    Ok(ExitCode::SUCCESS)
}
