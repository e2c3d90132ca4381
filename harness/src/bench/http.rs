//! HTTP benchmarks on a fresh local environment (one instance of each service, trace export off
//! so that only HTTP is measured).
//!
//! - `harness bench gateway`: the gateway's overhead. The same catalog read, at the same
//!   concurrency, alternately `GET /products` straight to inventory#1 (with a service token, as
//!   the gateway would send it), through inventory#1's own proxy link (`gateway->inventory#1`,
//!   which the gateway goes through on the local backend: the chaos-proxy's share),
//!   `GET /api/products` to the gateway process itself (JWT check, routing, service token, the
//!   link, the service), and the same with the gateway sent straight to inventory#1 through its
//!   upstreams file (the path of a deployment, where no fault-injection proxy sits between the
//!   gateway and the service: the gateway's own overhead, which the goal is about). Prints
//!   requests/s and p50 of each, and the ratios to direct: over all rounds, and the goal's
//!   ratio round by round (direct and the gateway as deployed run back to back in each round)
//!   with its median and range, since a machine's speed can drift between rounds.
//! - `harness bench loadgen`: the load generator's efficiency. The harness's own load (goose,
//!   the `browse_catalog` journey with no think time, as many users as connections) against
//!   `wrk` (Debian's package) on the same gateway URL at the same concurrency; prints requests
//!   per CPU-second of each (the harness's CPU from `/proc/self/stat`, wrk's from the kernel's
//!   accounting of reaped children) and the ratio.
//!
//! The in-process client of `gateway` is reqwest on the harness's runtime; it loads all three
//! targets alike, so their ratios hold even though it shares the 2 cores with the system.

use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use contracts::domain::Role;

use super::cpu_seconds;
use crate::cli::HttpBenchArgs;
use crate::environment::{self, EnvInfo, EnvOptions, Environment, Service, Traces, discovery};
use crate::load::{self, LoadTarget};
use crate::metrics::{ALL, Latency};
use crate::scenario::{Backend, Scenario};
use crate::slo::format_micros;

pub async fn gateway(args: HttpBenchArgs) -> anyhow::Result<ExitCode> {
    let shutdown = platform::shutdown::install(false);
    let env = tokio::select! {
        env = start(!args.no_build) => env?,
        _ = shutdown.cancelled() => return Ok(super::interrupted()),
    };
    let measured = tokio::select! {
        m = gateway_rounds(env.as_ref(), &args) => m,
        _ = shutdown.cancelled() => {
            env.stop().await;
            return Ok(super::interrupted());
        }
    };
    env.stop().await;
    let ([direct, link, through, straight], rounds) = measured?;
    println!("{}", direct.line("all direct"));
    println!("{}", link.line("all link"));
    println!("{}", through.line("all gateway"));
    println!("{}", straight.line("all gw-nolink"));
    println!(
        "gateway / direct (client -> gateway -> service, as deployed): requests/s x{:.2} \
         (goal >= 0.70), p50 x{:.2}",
        ratio(straight.per_second(), direct.per_second()),
        ratio(straight.p50_us(), direct.p50_us()),
    );
    println!(
        "with the local backend's proxy link between gateway and service: gateway / direct \
         x{:.2}, p50 x{:.2}; proxy link alone / direct x{:.2}; gateway / link (the same path \
         without the gateway) x{:.2}",
        ratio(through.per_second(), direct.per_second()),
        ratio(through.p50_us(), direct.p50_us()),
        ratio(link.per_second(), direct.per_second()),
        ratio(through.per_second(), link.per_second()),
    );
    if let Some(spread) = Spread::of(&rounds) {
        println!(
            "gateway / direct as deployed, round by round (each pair measured back to back): \
             {}; median x{:.2}, from x{:.2} to x{:.2}",
            rounds
                .iter()
                .map(|r| format!("x{r:.2}"))
                .collect::<Vec<_>>()
                .join(" "),
            spread.median,
            spread.min,
            spread.max,
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// The median and range of per-round ratios.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Spread {
    median: f64,
    min: f64,
    max: f64,
}

impl Spread {
    /// `None` when there is no finite ratio.
    fn of(ratios: &[f64]) -> Option<Self> {
        let mut sorted: Vec<f64> = ratios.iter().copied().filter(|r| r.is_finite()).collect();
        sorted.sort_by(f64::total_cmp);
        let n = sorted.len();
        let median = match n {
            0 => return None,
            _ if n % 2 == 1 => sorted[n / 2],
            _ => (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0,
        };
        Some(Self {
            median,
            min: sorted[0],
            max: sorted[n - 1],
        })
    }
}

/// The four sides merged over the rounds (direct, link, gateway, gateway without the link), and
/// each round's ratio of the gateway as deployed to direct.
async fn gateway_rounds(
    env: &dyn Environment,
    args: &HttpBenchArgs,
) -> anyhow::Result<([Side; 4], Vec<f64>)> {
    let info = env.info();
    let inventory = process_url(&info, "inventory#1")?;
    let gateway = process_url(&info, "gateway#1")?;
    let link = info
        .links
        .iter()
        .find(|l| l.name == "gateway->inventory#1")
        .map(|l| format!("http://{}", l.listen))
        .context("the environment has no gateway->inventory#1 link")?;
    let service_auth =
        platform::auth::ServiceAuth::new(env.service_token_secret().as_bytes(), "gateway");
    println!(
        "gateway benchmark: GET catalog, {} connections, {} s per round, {} rounds",
        args.connections, args.seconds, args.rounds
    );
    // The gateway's instance lists as the environment wrote them (every instance through its
    // link), and the same with inventory#1 reached straight, for the side without the link.
    let upstreams_file = env.run_dir().join(discovery::UPSTREAMS_FILE_NAME);
    let linked = discovery::upstream_lists(env.links());
    let mut unlinked = linked.clone();
    unlinked.insert(Service::Inventory, vec![inventory.clone()]);
    let mut sides = [
        Side::default(),
        Side::default(),
        Side::default(),
        Side::default(),
    ];
    let mut ratios = Vec::new();
    for round in 1..=args.rounds {
        // A fresh service token for each round, valid for the whole of it: the gateway's live a
        // minute, and a round may be longer.
        let service_token = service_auth.issue_valid_for(
            "inventory",
            "bench",
            &[Role::Customer],
            Duration::from_secs(3 * args.seconds + 60),
        )?;
        // The goal's pair first and back to back, so that the machine's drift over a run (its
        // speed moved by 10-30 % from one round to the next on some machines) is mostly the
        // same on both sides of each round's ratio. Each target's place in `sides`.
        let targets = [
            (
                0,
                "direct",
                format!("{inventory}/products"),
                service_token.clone(),
            ),
            (
                3,
                "gw-nolink",
                format!("{gateway}/api/products"),
                info.customer_token.clone(),
            ),
            (1, "link", format!("{link}/products"), service_token),
            (
                2,
                "gateway",
                format!("{gateway}/api/products"),
                info.customer_token.clone(),
            ),
        ];
        let mut direct = 0.0;
        for (i, label, url, token) in &targets {
            let straight = *label == "gw-nolink";
            if straight {
                use_upstreams(&upstreams_file, &unlinked).await?;
            }
            let side = drive(
                url,
                token,
                args.connections,
                Duration::from_secs(args.seconds),
            )
            .await;
            if straight {
                use_upstreams(&upstreams_file, &linked).await?;
            }
            let side = side?;
            println!("{}", side.line(&format!("{round} {label}")));
            match *label {
                "direct" => direct = side.per_second(),
                "gw-nolink" => ratios.push(ratio(side.per_second(), direct)),
                _ => {}
            }
            sides[*i].merge(&side);
        }
    }
    Ok((sides, ratios))
}

/// Gives the gateway these instance lists and waits until it has taken them (it looks at its
/// upstreams file every 500 ms).
async fn use_upstreams(
    file: &Path,
    lists: &std::collections::BTreeMap<Service, Vec<String>>,
) -> anyhow::Result<()> {
    discovery::write_upstreams_file(file, lists)?;
    tokio::time::sleep(discovery::DISCOVERY_GRACE).await;
    Ok(())
}

pub async fn loadgen(args: HttpBenchArgs) -> anyhow::Result<ExitCode> {
    let wrk = which("wrk").context(
        "this benchmark compares with wrk, which is not installed (Debian: apt-get install wrk)",
    )?;
    let shutdown = platform::shutdown::install(false);
    let env = tokio::select! {
        env = start(!args.no_build) => env?,
        _ = shutdown.cancelled() => return Ok(super::interrupted()),
    };
    let measured = tokio::select! {
        m = loadgen_rounds(env.as_ref(), &args, &wrk) => m,
        _ = shutdown.cancelled() => {
            env.stop().await;
            return Ok(super::interrupted());
        }
    };
    env.stop().await;
    let (harness, wrk) = measured?;
    println!("{}", harness.line("all harness"));
    println!("{}", wrk.line("all wrk"));
    println!(
        "harness / wrk: requests per CPU-second x{:.2} (goal >= 0.30), requests/s x{:.2}",
        ratio(harness.per_cpu_second(), wrk.per_cpu_second()),
        ratio(harness.per_second(), wrk.per_second()),
    );
    Ok(ExitCode::SUCCESS)
}

async fn loadgen_rounds(
    env: &dyn Environment,
    args: &HttpBenchArgs,
    wrk: &Path,
) -> anyhow::Result<(Side, Side)> {
    let info = env.info();
    let gateway = process_url(&info, "gateway#1")?;
    let mut target = LoadTarget::from_env(&info)?;
    target.gateway_url = gateway.clone();
    let scenario = Scenario::from_toml(
        Path::new("loadgen-bench.toml"),
        &format!(
            "description = \"catalog reads with no think time\"\n\
             [load]\nusers = {}\nduration = \"{}s\"\nthink_time = \"0s\"\n\
             [[load.journeys]]\nname = \"browse_catalog\"\nweight = 1\n",
            args.connections, args.seconds
        ),
    )?;
    let url = format!("{gateway}/api/products");
    println!(
        "load-generator benchmark: GET {url}, {} connections, {} s per round, {} rounds",
        args.connections, args.seconds, args.rounds
    );
    let (mut ours, mut theirs) = (Side::default(), Side::default());
    for round in 1..=args.rounds {
        let cpu_before = cpu_seconds("self").unwrap_or(0.0);
        let started = Instant::now();
        let outcome = load::run(&scenario, &target, Vec::new(), started).await?;
        let cpu = cpu_seconds("self").unwrap_or(0.0) - cpu_before;
        let m = &outcome.measurements;
        let mut side = Side {
            seconds: m.duration.as_secs_f64(),
            cpu_seconds: cpu,
            ..Side::default()
        };
        for stats in m.endpoints.get(ALL).into_iter().flat_map(|e| e.values()) {
            side.ok += stats.ok;
            side.failed += stats.errors + stats.shed;
            side.latency.merge(&stats.latency);
        }
        println!("{}", side.line(&format!("{round} harness")));
        ours.merge(&side);

        let side = run_wrk(wrk, &url, &info.customer_token, args).await?;
        println!("{}", side.line(&format!("{round} wrk")));
        theirs.merge(&side);
    }
    Ok((ours, theirs))
}

/// Runs wrk once and reads its request count; its CPU time is what the kernel accounts to this
/// process's reaped children over the run (wrk is the only child reaped meanwhile).
async fn run_wrk(wrk: &Path, url: &str, token: &str, args: &HttpBenchArgs) -> anyhow::Result<Side> {
    use nix::sys::resource::{UsageWho, getrusage};
    let children_cpu = || -> f64 {
        getrusage(UsageWho::RUSAGE_CHILDREN).map_or(0.0, |u| {
            let t = |tv: nix::sys::time::TimeVal| tv.tv_sec() as f64 + tv.tv_usec() as f64 / 1e6;
            t(u.user_time()) + t(u.system_time())
        })
    };
    let threads = args.connections.min(2);
    let before = children_cpu();
    let started = Instant::now();
    let output = tokio::process::Command::new(wrk)
        .arg(format!("-t{threads}"))
        .arg(format!("-c{}", args.connections))
        .arg(format!("-d{}s", args.seconds))
        .arg("-H")
        .arg(format!("Authorization: Bearer {token}"))
        .arg(url)
        .kill_on_drop(true)
        .output()
        .await
        .context("running wrk")?;
    let seconds = started.elapsed().as_secs_f64();
    let cpu = children_cpu() - before;
    let stdout = String::from_utf8_lossy(&output.stdout);
    anyhow::ensure!(
        output.status.success(),
        "wrk failed ({}): {}{}",
        output.status,
        stdout,
        String::from_utf8_lossy(&output.stderr)
    );
    let (requests, non_2xx) =
        parse_wrk(&stdout).with_context(|| format!("wrk printed no request count:\n{stdout}"))?;
    Ok(Side {
        ok: requests.saturating_sub(non_2xx),
        failed: non_2xx,
        seconds,
        cpu_seconds: cpu,
        ..Side::default()
    })
}

/// `12345 requests in 10.00s, 1.2MB read` and, when some failed, `Non-2xx or 3xx responses: 7`.
fn parse_wrk(stdout: &str) -> Option<(u64, u64)> {
    let requests = stdout
        .lines()
        .find_map(|l| l.trim().split_once(" requests in "))
        .and_then(|(n, _)| n.trim().parse().ok())?;
    let non_2xx = stdout
        .lines()
        .find_map(|l| l.trim().strip_prefix("Non-2xx or 3xx responses:"))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or(0);
    Some((requests, non_2xx))
}

/// A fresh local environment, one instance of each service, trace export off.
async fn start(build: bool) -> anyhow::Result<Box<dyn Environment>> {
    let options = EnvOptions {
        build,
        traces: Traces::Off,
        ..EnvOptions::default()
    };
    environment::start(Backend::Local, options)
        .await
        .context("starting the environment")
}

fn process_url(info: &EnvInfo, name: &str) -> anyhow::Result<String> {
    info.processes
        .iter()
        .find(|p| p.name == name)
        .and_then(|p| p.url.clone())
        .with_context(|| format!("the environment has no process {name} with a URL"))
}

fn which(program: &str) -> Option<std::path::PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join(program))
            .find(|p| p.is_file())
    })
}

/// `connections` tasks sending `GET url` one after the other for `length`.
async fn drive(url: &str, token: &str, connections: u32, length: Duration) -> anyhow::Result<Side> {
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(connections as usize)
        .build()?;
    let auth = Arc::new(format!("Bearer {token}"));
    let url = Arc::new(url.to_string());
    let started = Instant::now();
    let deadline = started + length;
    let cpu_before = cpu_seconds("self").unwrap_or(0.0);
    let tasks: Vec<_> = (0..connections)
        .map(|_| {
            let (client, url, auth) = (client.clone(), url.clone(), auth.clone());
            tokio::spawn(async move {
                let mut side = Side::default();
                while Instant::now() < deadline {
                    let sent = Instant::now();
                    let ok = match client
                        .get(url.as_str())
                        .header("authorization", auth.as_str())
                        .send()
                        .await
                    {
                        Ok(r) => r.status().is_success() && r.bytes().await.is_ok(),
                        Err(_) => false,
                    };
                    if ok {
                        side.ok += 1;
                        side.latency.record(sent.elapsed());
                    } else {
                        side.failed += 1;
                    }
                }
                side
            })
        })
        .collect();
    let mut total = Side::default();
    for task in tasks {
        total.merge(&task.await.context("a request loop panicked")?);
    }
    total.seconds = started.elapsed().as_secs_f64();
    total.cpu_seconds = cpu_seconds("self").unwrap_or(0.0) - cpu_before;
    anyhow::ensure!(
        total.ok > 0,
        "no request to {url} succeeded ({} failed)",
        total.failed
    );
    Ok(total)
}

/// What one side of a comparison measured (merged over rounds).
#[derive(Debug, Clone, Default)]
struct Side {
    ok: u64,
    failed: u64,
    latency: Latency,
    seconds: f64,
    cpu_seconds: f64,
}

impl Side {
    fn merge(&mut self, other: &Side) {
        self.ok += other.ok;
        self.failed += other.failed;
        self.latency.merge(&other.latency);
        self.seconds += other.seconds;
        self.cpu_seconds += other.cpu_seconds;
    }

    fn per_second(&self) -> f64 {
        ratio((self.ok + self.failed) as f64, self.seconds)
    }

    fn per_cpu_second(&self) -> f64 {
        ratio((self.ok + self.failed) as f64, self.cpu_seconds)
    }

    fn p50_us(&self) -> f64 {
        self.latency
            .quantile(0.5)
            .map_or(f64::NAN, |d| d.as_micros() as f64)
    }

    fn line(&self, label: &str) -> String {
        let p50 = if self.latency.count() > 0 {
            format_micros(self.p50_us())
        } else {
            "-".into()
        };
        format!(
            "{label:<12} {:>8.0} requests/s  p50 {p50:>8}  failed {:>6}  cpu {:>5.1} s  \
             {:>7.0} requests per CPU-second",
            self.per_second(),
            self.failed,
            self.cpu_seconds,
            self.per_cpu_second(),
        )
    }
}

fn ratio(a: f64, b: f64) -> f64 {
    if b > 0.0 { a / b } else { f64::NAN }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_spread_of_round_ratios_is_their_median_and_range_ignoring_failed_rounds() {
        assert_eq!(Spread::of(&[]), None);
        assert_eq!(Spread::of(&[f64::NAN]), None);
        let odd = Spread::of(&[0.8, 0.58, f64::NAN, 0.7]).unwrap();
        assert_eq!(
            odd,
            Spread {
                median: 0.7,
                min: 0.58,
                max: 0.8
            }
        );
        let even = Spread::of(&[0.75, 0.58]).unwrap();
        assert!((even.median - 0.665).abs() < 1e-9, "{even:?}");
        assert_eq!((even.min, even.max), (0.58, 0.75));
    }

    #[test]
    fn wrk_counts_are_read_with_and_without_failures() {
        let out = "Running 10s test @ http://127.0.0.1:1/api/products\n  2 threads and 32 \
                   connections\n  Thread Stats   Avg      Stdev     Max   +/- Stdev\n    \
                   Latency     1.20ms  300.00us   9.00ms   80.00%\n  123456 requests in \
                   10.00s, 45.67MB read\nRequests/sec:  12345.60\nTransfer/sec:      4.57MB\n";
        assert_eq!(parse_wrk(out), Some((123_456, 0)));
        let out = format!("{out}  Non-2xx or 3xx responses: 42\n");
        assert_eq!(parse_wrk(&out), Some((123_456, 42)));
        assert_eq!(
            parse_wrk("unable to connect to 127.0.0.1:1 Connection refused"),
            None
        );
    }
}
