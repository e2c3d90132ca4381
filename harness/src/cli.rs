//! Command-line options.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::environment::{Instances, Service};
use crate::scenario::Backend;

#[derive(Debug, Parser)]
#[command(
    name = "harness",
    version,
    about = "Spins the reference system up, drives load through the gateway, injects faults and proves invariants"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Start the whole system on the local backend and keep it up until Ctrl-C or SIGTERM.
    Up(UpArgs),
    /// List the scenarios in scenarios/ with their one-line descriptions.
    List(ListArgs),
    /// Run a scenario: start its environment, drive the load, check SLOs and invariants, write
    /// reports/<run-id>/. Exit 0 all held, 1 something failed, 2 the run could not happen,
    /// 130 interrupted (Ctrl-C, SIGTERM: the reports say how far it got; Ctrl-C again only tears
    /// down).
    Run(RunArgs),
    /// Manual chaos for game days, against a running `harness up` (reads its env file).
    Chaos(ChaosArgs),
    /// The game-day console: a live view of a running `harness up` (throughput, latency,
    /// errors, sagas, lag, breakers, every process and link) with keys to inject and heal
    /// faults. Needs a terminal; `?` lists the keys.
    Console(ConsoleArgs),
    /// Print one order's trace (every span of its saga, across the services) as a tree, from a
    /// running `harness up`'s collector (reads its env file).
    Trace(TraceArgs),
    /// Benchmarks that print figures (ratios measured in the same run).
    Bench(BenchArgs),
}

#[derive(Debug, Args)]
pub struct BenchArgs {
    #[command(subcommand)]
    pub command: BenchCommand,
}

#[derive(Debug, Subcommand)]
pub enum BenchCommand {
    /// The cost of tracing: the same load with the services' trace export off and on,
    /// alternately; prints POST /api/orders p99, saga p99 and confirmed orders/s, and the ratios.
    Tracing(TracingBenchArgs),
    /// The capacity knee with 1 and with 2 instances of every service, back to back on fresh
    /// environments; prints each knee (arrival rate, confirmed orders/s, saga p50/p99) and the
    /// ratio.
    Capacity(CapacityBenchArgs),
    /// Overload with admission control on and off, back to back on fresh environments; prints
    /// goodput, shed and failed orders, saga p99 and the time until every saga is terminal, and
    /// goodput against the knee.
    Overload(OverloadBenchArgs),
    /// Gateway overhead: `GET /api/products` through the gateway against `GET /products`
    /// straight to an inventory instance, alternating; prints requests/s, p50 and the ratios.
    Gateway(HttpBenchArgs),
    /// Load-generator efficiency: requests per CPU-second of the harness's load (goose) against
    /// `wrk` on the same endpoint at the same concurrency.
    Loadgen(HttpBenchArgs),
    /// The live view's cost: the scenario's load on one environment without and with the view
    /// (everything of `run --tui` but the terminal), alternating; prints requests/s, the
    /// harness's CPU per second of load and the frames drawn per second, and the ratios.
    Console(ConsoleBenchArgs),
}

#[derive(Debug, Args)]
pub struct ConsoleBenchArgs {
    /// The scenario whose environment and load each round uses (name or path); run `capacity`
    /// on a release build.
    #[arg(long, default_value = "capacity")]
    pub scenario: String,

    /// Rounds of without and with the view.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=20))]
    pub rounds: u32,

    /// Use the service binaries next to this one as they are, without `cargo build`.
    #[arg(long)]
    pub no_build: bool,
}

#[derive(Debug, Args)]
pub struct CapacityBenchArgs {
    /// The capacity scenario (name or path); its `instances` are replaced by each count.
    #[arg(long, default_value = "capacity")]
    pub scenario: String,

    /// Instances per service in each run, comma-separated.
    #[arg(long, default_value = "1,2", value_delimiter = ',',
          value_parser = clap::value_parser!(u32).range(1..=8))]
    pub instances: Vec<u32>,

    /// Cores each instance of every service may use, as a pod's CPU limit (a cgroup's quota
    /// locally: root or a delegated cgroup v2 subtree), so that a second instance adds what a
    /// second pod would; replaces the scenario's `cpus_per_instance`. Without it every instance
    /// shares the whole machine.
    #[arg(long, value_parser = cpus_per_instance)]
    pub cpus_per_instance: Option<f64>,

    /// Use the service binaries next to this one as they are, without `cargo build`.
    #[arg(long)]
    pub no_build: bool,
}

fn cpus_per_instance(s: &str) -> Result<f64, String> {
    let c: f64 = s
        .parse()
        .map_err(|_| format!("`{s}` is not a number of cores (e.g. 0.25)"))?;
    crate::scenario::check_cpus_per_instance(c)
}

#[derive(Debug, Args)]
pub struct OverloadBenchArgs {
    /// The overload scenario (name or path); run once with admission control on, once off.
    #[arg(long, default_value = "overload")]
    pub scenario: String,

    /// The knee's confirmed orders/s (from `harness bench capacity`), to print goodput as a
    /// fraction of it.
    #[arg(long, conflicts_with = "from_capacity")]
    pub knee: Option<f64>,

    /// A capacity run's report.json (`harness run capacity`) on this machine: the load becomes
    /// the scenario's `knee_multiple` (3 for `overload`) times its knee's arrival rate (the scenario's duration and journeys kept, its pool of users
    /// at least one per arrival per second), and goodput is printed against its knee's confirmed
    /// orders/s. Without it the scenario's own rate is used, fixed for every machine.
    #[arg(long, value_name = "REPORT_JSON")]
    pub from_capacity: Option<std::path::PathBuf>,

    /// Use the service binaries next to this one as they are, without `cargo build`.
    #[arg(long)]
    pub no_build: bool,
}

#[derive(Debug, Args)]
pub struct HttpBenchArgs {
    /// Connections (users) sending requests at once.
    #[arg(long, default_value_t = 32, value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub connections: u32,

    /// Seconds per round.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=300))]
    pub seconds: u64,

    /// Rounds of each side, alternating.
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u32).range(1..=20))]
    pub rounds: u32,

    /// Use the service binaries next to this one as they are, without `cargo build`.
    #[arg(long)]
    pub no_build: bool,
}

#[derive(Debug, Args)]
pub struct TracingBenchArgs {
    /// The scenario whose environment and load each round uses (name or path).
    #[arg(long, default_value = "tracing-overhead")]
    pub scenario: String,

    /// Rounds of off and on.
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u32).range(1..=20))]
    pub rounds: u32,

    /// Use the service binaries next to this one as they are, without `cargo build`.
    #[arg(long)]
    pub no_build: bool,
}

#[derive(Debug, Args)]
pub struct TraceArgs {
    /// The order id (as `POST /api/orders` answered it), or a trace id (32 hex digits).
    pub id: String,

    /// The env file `harness up --env-file` wrote.
    #[arg(long, default_value = "env.json")]
    pub env_file: PathBuf,

    /// Print the spans as JSON (one array per trace) instead of a tree.
    #[arg(long)]
    pub json: bool,

    /// Show every database span instead of folding them into their parent's line.
    #[arg(long)]
    pub db: bool,
}

#[derive(Debug, Args)]
pub struct ConsoleArgs {
    /// The env file `harness up --env-file` wrote.
    #[arg(long, default_value = "env.json")]
    pub env_file: PathBuf,
}

#[derive(Debug, Args)]
pub struct ChaosArgs {
    /// The env file `harness up --env-file` wrote.
    #[arg(long, default_value = "env.json", global = true)]
    pub env_file: PathBuf,

    #[command(subcommand)]
    pub command: ChaosCommand,
}

#[derive(Debug, Subcommand)]
pub enum ChaosCommand {
    /// List the links (each a named proxy) with their toxics, and the processes.
    Links,
    /// Apply a fault now, as a scenario's [[chaos]] entry would: TARGET FAULT [NAME=VALUE...],
    /// e.g. `gateway->payment latency latency=200ms jitter=50ms --for 30s` or `order#1 kill`.
    Inject(InjectArgs),
    /// Heal TARGET's links and processes, or everything without a TARGET.
    Heal(HealArgs),
    /// Toxiproxy's reset: every proxy enabled, every toxic removed (processes untouched).
    Reset,
    /// Run another number of instances of a service now: `order=3`, or several at once
    /// (`order=3,payment=2`). New instances take traffic once ready; removed ones (the
    /// highest-numbered) leave the gateway's rotation first, then stop gracefully. Local and
    /// containers backends.
    Scale(ScaleArgs),
}

#[derive(Debug, Args)]
pub struct ScaleArgs {
    /// SERVICE=COUNT, comma-separated or one per argument: order=3,payment=2. Each count is 1 to
    /// 8; a service left out keeps its instances.
    #[arg(required = true, value_parser = scale_to)]
    pub counts: Vec<ScaleTo>,
}

/// One `SERVICE=COUNT[,SERVICE=COUNT...]` argument of `harness chaos scale`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScaleTo(pub Vec<(Service, usize)>);

fn scale_to(s: &str) -> Result<ScaleTo, String> {
    let counts = crate::environment::parse_counts(s)?;
    if counts.is_empty() {
        return Err("nothing to scale: expected SERVICE=COUNT, e.g. order=3".into());
    }
    Ok(ScaleTo(counts))
}

impl ScaleArgs {
    /// Every service to scale and its count, in the order given; a service given twice is an
    /// error.
    pub fn counts(&self) -> Result<Vec<(Service, usize)>, String> {
        let mut all: Vec<(Service, usize)> = Vec::new();
        for (service, n) in self.counts.iter().flat_map(|c| c.0.iter().copied()) {
            if all.iter().any(|(s, _)| *s == service) {
                return Err(format!("{service} is given twice"));
            }
            all.push((service, n));
        }
        Ok(all)
    }
}

#[derive(Debug, Args)]
pub struct InjectArgs {
    /// A link (`gateway->payment#1`), a group (`gateway->payment`, `payment->kafka`), a node
    /// (`inventory`, `payment#2`, `kafka`) or, for kill, pause and stop, an instance (`order#1`,
    /// `payment`, `broker`), for scale a service (`order`). `harness chaos links` lists them.
    pub target: String,
    /// latency, bandwidth, slow_close, timeout, reset_peer, slicer, limit_data, partition, kill,
    /// pause, stop or scale.
    pub fault: String,
    /// The fault's attributes, as in a scenario: latency=200ms jitter=50ms direction=both
    /// toxicity=0.5 rate_kbps=10 timeout=0s bytes=1024 instances=3 ...
    pub attributes: Vec<String>,
    /// Heal after this long (Ctrl-C heals at once); without it the fault stays until `heal`.
    #[arg(long = "for", value_parser = <crate::scenario::HumanDuration as std::str::FromStr>::from_str)]
    pub duration: Option<crate::scenario::HumanDuration>,
}

#[derive(Debug, Args)]
pub struct HealArgs {
    /// What to heal, as for `inject`; everything when left out.
    pub target: Option<String>,
}

#[derive(Debug, Args)]
pub struct RunArgs {
    /// A scenario name from scenarios/ (see `harness list`) or a path to a .toml file.
    pub scenario: String,

    /// Compare with an earlier run's report.json and fail on a regression beyond the tolerance
    /// (--max-latency-increase, --max-error-rate-increase, --max-throughput-decrease).
    #[arg(long)]
    pub baseline: Option<PathBuf>,

    /// With --baseline: the largest accepted growth of a latency, in percent.
    #[arg(long, default_value_t = 20.0, value_parser = non_negative)]
    pub max_latency_increase: f64,

    /// With --baseline: the largest accepted growth of an error rate, in percentage points.
    #[arg(long, default_value_t = 1.0, value_parser = non_negative)]
    pub max_error_rate_increase: f64,

    /// With --baseline: the largest accepted drop of a throughput, in percent.
    #[arg(long, default_value_t = 20.0, value_parser = non_negative)]
    pub max_throughput_decrease: f64,

    /// Where to write reports/<run-id>/.
    #[arg(long, default_value = "reports")]
    pub reports_dir: PathBuf,

    /// The knee a scenario's `knee_multiple` and `knee_share` are relative to: `latest` (the
    /// newest capacity run's report under --reports-dir, of the same backend), `fixed` (none:
    /// the scenario's own arrival_rate and min_goodput), or the path of a capacity run's
    /// report.json.
    #[arg(long, default_value = "latest", value_parser = crate::knee::KneeSource::parse)]
    pub knee: crate::knee::KneeSource,

    /// Run on this backend instead of the scenario's `[environment] backend`: `local` (child
    /// processes) or `containers` (Docker).
    #[arg(long, value_parser = backend)]
    pub backend: Option<Backend>,

    /// Use the service binaries next to this one as they are, without `cargo build`.
    #[arg(long)]
    pub no_build: bool,

    /// Also send the services' traces to this OTLP/HTTP collector (e.g. a Jaeger or an
    /// OpenTelemetry Collector at http://127.0.0.1:4318); the harness keeps its own copy.
    #[arg(long, value_parser = http_url)]
    pub otlp_endpoint: Option<String>,

    /// Show the run live in the game-day console (throughput, latency, errors, sagas, the chaos
    /// timeline, SLOs so far; keys inject and heal faults on links, processes, services and
    /// messages, pause the load, `q` interrupts). Without a terminal on stdout the usual lines
    /// are printed instead.
    #[arg(long)]
    pub tui: bool,
}

#[derive(Debug, Args)]
pub struct UpArgs {
    /// Instances per service, e.g. `order=2,inventory=2,payment=2` (default 1 each).
    #[arg(long, default_value = "", value_parser = Instances::parse)]
    pub instances: Instances,

    /// Where the system runs: `local` (child processes on 127.0.0.1) or `containers` (Docker,
    /// images chosen by the HARNESS_IMAGE_* variables).
    #[arg(long, default_value = "local", value_parser = backend)]
    pub backend: Backend,

    /// Write the gateway URL, tokens and process list as JSON to this file.
    #[arg(long)]
    pub env_file: Option<PathBuf>,

    /// Keep databases, broker data and logs in this directory (kept afterwards) instead of a
    /// temporary one (removed on exit).
    #[arg(long)]
    pub run_dir: Option<PathBuf>,

    /// Per-step timeout of the order saga, in milliseconds.
    #[arg(long, default_value_t = 5000)]
    pub saga_step_timeout_ms: u64,

    /// Cores each service instance may use, as a pod's CPU limit (a cgroup's quota locally:
    /// root or a delegated cgroup v2 subtree; `--cpus` in Docker). Without it every instance
    /// shares the whole machine.
    #[arg(long, value_parser = cpus_per_instance)]
    pub cpus_per_instance: Option<f64>,

    /// Use the service binaries next to this one as they are, without `cargo build`.
    #[arg(long)]
    pub no_build: bool,

    /// Also send the services' traces to this OTLP/HTTP collector (e.g. a Jaeger or an
    /// OpenTelemetry Collector at http://127.0.0.1:4318); the harness keeps its own copy.
    #[arg(long, value_parser = http_url)]
    pub otlp_endpoint: Option<String>,
}

#[derive(Debug, Args)]
pub struct ListArgs {
    /// List this folder instead of the scenarios/ folders of the current directory and the
    /// workspace.
    #[arg(long)]
    pub dir: Option<PathBuf>,
}

/// `local` or `containers`.
fn backend(s: &str) -> Result<Backend, String> {
    match s.trim() {
        "local" => Ok(Backend::Local),
        "containers" => Ok(Backend::Containers),
        other => Err(format!("expected local or containers, not {other:?}")),
    }
}

/// An `http://` URL, without a trailing slash. `https://` is refused here rather than failing
/// on every export later: the harness and the services are built without TLS.
fn http_url(s: &str) -> Result<String, String> {
    match reqwest::Url::parse(s.trim()) {
        Ok(u) if u.scheme() == "http" && u.host_str().is_some() => {
            Ok(s.trim().trim_end_matches('/').to_string())
        }
        Ok(u) if u.scheme() == "https" => Err(format!(
            "{s:?}: this build speaks plain HTTP only (no TLS); give an http:// URL such as \
             http://127.0.0.1:4318, or a collector on loopback that forwards over TLS"
        )),
        _ => Err(format!(
            "expected an http:// URL such as http://127.0.0.1:4318, not {s:?}"
        )),
    }
}

/// A number of at least 0 (a percentage or percentage points).
fn non_negative(s: &str) -> Result<f64, String> {
    match s.trim().trim_end_matches('%').parse::<f64>() {
        Ok(v) if v.is_finite() && v >= 0.0 => Ok(v),
        _ => Err(format!(
            "expected a number of at least 0, such as 20, not {s:?}"
        )),
    }
}

impl RunArgs {
    /// The regression tolerance of `--baseline`.
    pub fn tolerance(&self) -> crate::report::Tolerance {
        crate::report::Tolerance {
            latency_increase: self.max_latency_increase / 100.0,
            error_rate_increase_pp: self.max_error_rate_increase,
            throughput_decrease: self.max_throughput_decrease / 100.0,
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[test]
    fn baseline_tolerances_come_from_flags_and_bad_ones_are_refused() {
        let cli = Cli::try_parse_from([
            "harness",
            "run",
            "smoke",
            "--baseline",
            "old.json",
            "--max-latency-increase",
            "10%",
            "--max-throughput-decrease",
            "5",
        ])
        .unwrap();
        let Command::Run(args) = cli.command else {
            panic!("not run");
        };
        let t = args.tolerance();
        assert!((t.latency_increase - 0.10).abs() < 1e-9);
        assert!((t.error_rate_increase_pp - 1.0).abs() < 1e-9);
        assert!((t.throughput_decrease - 0.05).abs() < 1e-9);
        for bad in [
            "--max-latency-increase=-3",
            "--max-throughput-decrease=lots",
        ] {
            let e = Cli::try_parse_from(["harness", "run", "smoke", bad])
                .unwrap_err()
                .to_string();
            assert!(e.contains("expected a number of at least 0"), "{e}");
        }
    }

    fn scale(args: &[&str]) -> Result<Vec<(Service, usize)>, String> {
        let cli = Cli::try_parse_from(["harness", "chaos", "scale"].iter().chain(args))
            .map_err(|e| e.to_string())?;
        let Command::Chaos(ChaosArgs {
            command: ChaosCommand::Scale(args),
            ..
        }) = cli.command
        else {
            panic!("not chaos scale");
        };
        args.counts()
    }

    #[test]
    fn chaos_scale_takes_service_counts_and_says_what_is_wrong_with_bad_ones() {
        assert_eq!(scale(&["order=3"]).unwrap(), [(Service::Order, 3)]);
        assert_eq!(
            scale(&["order=3,payment=2", "inventory=1"]).unwrap(),
            [
                (Service::Order, 3),
                (Service::Payment, 2),
                (Service::Inventory, 1)
            ]
        );
        for (bad, says) in [
            ("order", "expected SERVICE=COUNT"),
            ("shipping=2", "\"shipping\" is not a service"),
            ("order=0", "between 1 and 8, not 0"),
            ("order=9", "between 1 and 8, not 9"),
            ("order=x", "not a number"),
            ("order=2,order=3", "order is given twice"),
        ] {
            let e = scale(&[bad]).unwrap_err();
            assert!(e.contains(says), "{bad}: {e}");
        }
        let e = scale(&["order=2", "order=3"]).unwrap_err();
        assert!(e.contains("order is given twice"), "{e}");
        assert!(scale(&[]).is_err(), "a count is required");
    }

    #[test]
    fn an_otlp_endpoint_must_be_an_http_url() {
        let cli =
            Cli::try_parse_from(["harness", "up", "--otlp-endpoint", "http://127.0.0.1:4318/"])
                .unwrap();
        let Command::Up(args) = cli.command else {
            panic!("not up");
        };
        assert_eq!(args.otlp_endpoint.as_deref(), Some("http://127.0.0.1:4318"));
        for bad in ["127.0.0.1:4318", "ftp://x", "http://"] {
            let e = Cli::try_parse_from(["harness", "run", "smoke", "--otlp-endpoint", bad])
                .unwrap_err()
                .to_string();
            assert!(e.contains("expected an http:// URL"), "{bad}: {e}");
        }
        let e = Cli::try_parse_from(["harness", "up", "--otlp-endpoint", "https://c:4318"])
            .unwrap_err()
            .to_string();
        assert!(e.contains("plain HTTP only (no TLS)"), "{e}");
    }
}
