//! Benchmarks of the whole system: a scenario's load on fresh environments that differ in one
//! setting, back to back, so that the figures compared come from one run on one machine.
//!
//! - `harness bench capacity`: the capacity scenario with 1 and with 2 instances of every
//!   service (`--instances`); each knee as an arrival rate and as confirmed orders/s, with saga
//!   completion p50 and p99, and the ratio of each count's knee to the first's.
//! - `harness bench overload`: the overload scenario with the order service's admission control
//!   on and off; goodput (orders confirmed per second of load), orders shed and failed, saga
//!   completion p99, and how long after the load every saga was terminal (given up after
//!   `[checks] convergence_timeout`); with `--knee`, goodput as a fraction of the knee's; with
//!   `--from-capacity`, at the scenario's `knee_multiple` (3 for `overload`) times the arrival
//!   rate of a capacity report's knee, against that knee.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::Context;

use crate::capacity::{self, StepResult};
use crate::checks;
use crate::cli::{CapacityBenchArgs, OverloadBenchArgs};
use crate::environment::{self, EnvOptions, Traces};
use crate::knee::{Knee, at_rate};
use crate::load::{self, LoadOutcome, LoadTarget};
use crate::metrics::{ALL, Measurements};
use crate::scenario::{InstanceCounts, Scenario, Spanned};
use crate::slo::format_micros;

const PLACE_ORDER: &str = "POST /api/orders";

pub async fn capacity(args: CapacityBenchArgs) -> anyhow::Result<ExitCode> {
    let Some(scenario) = open(&args.scenario) else {
        return Ok(ExitCode::from(crate::EXIT_CANNOT_RUN));
    };
    if !scenario.load.get_ref().finds_knee() {
        eprintln!(
            "error: scenario {} does not look for a knee (`find_knee = true` under [load])",
            scenario.name
        );
        return Ok(ExitCode::from(crate::EXIT_CANNOT_RUN));
    }
    let shutdown = platform::shutdown::install(false);
    let mut scenario = scenario;
    if let Some(c) = args.cpus_per_instance {
        scenario.environment.cpus_per_instance = Some(Spanned::new(0..0, c));
    }
    let budget = scenario.environment.cpus_per_instance.as_ref().map_or_else(
        || "each sharing the whole machine".to_string(),
        |c| format!("each limited to {} cores", c.get_ref()),
    );
    println!(
        "capacity benchmark: scenario {}, instances per service {:?}, {budget}",
        scenario.name, args.instances
    );
    let mut build = !args.no_build;
    let mut knees: Vec<(u32, Option<StepResult>, bool)> = Vec::new();
    for &n in &args.instances {
        let mut s = scenario.clone();
        let each = Spanned::new(0..0, n);
        s.environment.instances = InstanceCounts {
            order: each.clone(),
            inventory: each.clone(),
            payment: each,
        };
        println!("{n} instance(s) of every service: running the plan...");
        let run = tokio::select! {
            r = fresh_load(&s, build, Duration::ZERO) => r?,
            _ = shutdown.cancelled() => return Ok(super::interrupted()),
        };
        build = false;
        let (found, _) = capacity::judge(&s, &run.outcome.measurements);
        for step in found.steps.iter().filter(|s| s.plateau) {
            println!(
                "  step {:>2}  {:>9}  confirmed {:>6.1}/s  shed {:>6}  saga p50 {:>7} p99 {:>7}  {}",
                step.step,
                step.arrival_rate_per_s
                    .map_or_else(|| format!("{} users", step.users), |r| format!("{r:.0}/s")),
                step.confirmed_per_s,
                step.shed,
                micros(step.saga_p50_us),
                micros(step.saga_p99_us),
                if step.slos_held == Some(true) {
                    "SLOs held".to_string()
                } else {
                    format!("broke {}", step.violated.join("; "))
                }
            );
        }
        println!("{n} per service: {}", found.summary());
        knees.push((n, found.knee_step().cloned(), found.beyond_plan));
    }
    if let Some((first_n, Some(first), first_beyond)) = knees.first().cloned() {
        for (n, knee, beyond) in knees.iter().skip(1) {
            // A knee at the plan's top is a lower bound: say so rather than print a ratio
            // that looks measured.
            let bound = match (first_beyond, *beyond) {
                (false, false) => "",
                (true, false) => ", the second a lower bound: the plan ended before its knee",
                (false, true) => ", the first a lower bound: the plan ended before its knee",
                (true, true) => ", both lower bounds: the plan ended before either knee",
            };
            match knee {
                Some(k) => println!(
                    "knee with {n} per service / with {first_n}: confirmed orders/s x{:.2} \
                     ({:.1} / {:.1}{bound})",
                    ratio(k.confirmed_per_s, first.confirmed_per_s),
                    k.confirmed_per_s,
                    first.confirmed_per_s
                ),
                None => println!("no knee with {n} per service"),
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `harness bench overload --from-capacity`: this many times the knee's arrival rate, for a
/// scenario without `knee_multiple` (which `overload.toml` sets to the same).
pub const OVERLOAD_FACTOR: f64 = 3.0;

pub async fn overload(args: OverloadBenchArgs) -> anyhow::Result<ExitCode> {
    let Some(mut scenario) = open(&args.scenario) else {
        return Ok(ExitCode::from(crate::EXIT_CANNOT_RUN));
    };
    let mut knee = args.knee;
    if let Some(path) = &args.from_capacity {
        let report = crate::report::read(path)?;
        let Knee {
            arrival_rate: rate,
            confirmed_per_s: confirmed,
            lower_bound,
        } = Knee::of(report.capacity.as_ref()).with_context(|| format!("{}", path.display()))?;
        let factor = (scenario.load.get_ref().knee_multiple.as_ref())
            .map_or(OVERLOAD_FACTOR, |m| *m.get_ref());
        at_rate(&mut scenario, rate * factor)?;
        println!(
            "knee from {}: {rate:.0} journeys/s, {confirmed:.1} confirmed orders/s{}; the load \
             runs at {factor}x its rate",
            path.display(),
            if lower_bound {
                " (a lower bound: that plan ended before its knee)"
            } else {
                ""
            }
        );
        knee = Some(confirmed);
    }
    let shutdown = platform::shutdown::install(false);
    let settle_within = Duration::from(*scenario.checks.convergence_timeout.get_ref());
    println!(
        "overload benchmark: scenario {} ({}), admission control on, then off",
        scenario.name,
        scenario.load.get_ref().describe(),
    );
    let mut build = !args.no_build;
    let mut goodputs = Vec::new();
    for admission in [true, false] {
        let mut s = scenario.clone();
        s.environment.admission = admission;
        let label = if admission { "on" } else { "off" };
        let run = tokio::select! {
            r = fresh_load(&s, build, settle_within) => r?,
            _ = shutdown.cancelled() => return Ok(super::interrupted()),
        };
        build = false;
        let m = &run.outcome.measurements;
        let load_s = m.duration.as_secs_f64();
        let (goodput, confirmed, _) = m.goodput(&[(0.0, load_s)]).unwrap_or_default();
        let orders = m.endpoints.get(ALL).and_then(|e| e.get(PLACE_ORDER));
        let (ok, shed, failed) = orders.map_or((0, 0, 0), |o| (o.ok, o.shed, o.errors));
        let terminal = match run.settled {
            Some(t) => format!(
                "every saga terminal {:.1} s after the load",
                t.as_secs_f64()
            ),
            None => format!(
                "sagas still not terminal {} s after the load",
                settle_within.as_secs()
            ),
        };
        println!(
            "admission {label:<3}  goodput {goodput:>6.1} confirmed/s ({confirmed} in {load_s:.0} s)  \
             orders accepted {ok}, shed {shed}, failed {failed}  saga p50 {} p99 {}  \
             cancelled {}  {terminal}",
            quantile(m, 0.5),
            quantile(m, 0.99),
            m.outcomes.get("CANCELLED").copied().unwrap_or(0),
        );
        if let Some(knee) = knee {
            println!(
                "admission {label:<3}  goodput / knee ({knee:.1}/s): {:.2} (goal >= 0.90)",
                ratio(goodput, knee)
            );
        }
        goodputs.push(goodput);
    }
    if let [on, off] = goodputs[..] {
        println!("goodput admission on / off: x{:.2}", ratio(on, off));
    }
    Ok(ExitCode::SUCCESS)
}

/// What one fresh environment did under the scenario's load.
struct FreshRun {
    outcome: LoadOutcome,
    /// How long after the load the system settled (every saga terminal, nothing held);
    /// `None` when it did not within the time given, or when not waited for.
    settled: Option<Duration>,
}

/// Starts a fresh environment as the scenario says, runs its load (without faults), waits up to
/// `settle_within` for the system to settle, and stops it.
async fn fresh_load(
    scenario: &Scenario,
    build: bool,
    settle_within: Duration,
) -> anyhow::Result<FreshRun> {
    let env_spec = &scenario.environment;
    let options = EnvOptions::of(env_spec, build, Traces::Collect { forward_to: None });
    let env = environment::start(*env_spec.backend.get_ref(), options)
        .await
        .context("starting the environment")?;
    let info = env.info();
    let target = LoadTarget::from_env(&info)?;
    let outcome = load::run(scenario, &target, Vec::new(), Instant::now()).await;
    let settled = match &outcome {
        Ok(_) if !settle_within.is_zero() => {
            let client = env.client()?;
            let converged = checks::converge(&client, &info.admin_token, settle_within).await;
            converged.ok().filter(|c| c.settled).map(|c| c.waited)
        }
        _ => None,
    };
    env.stop().await;
    Ok(FreshRun {
        outcome: outcome.context("driving the load")?,
        settled,
    })
}

fn open(name: &str) -> Option<Scenario> {
    match Scenario::open(name) {
        Ok(s) => Some(s),
        Err(e) => {
            eprintln!("error: {e}");
            None
        }
    }
}

fn quantile(m: &Measurements, q: f64) -> String {
    m.saga_completion
        .get(ALL)
        .and_then(|l| l.quantile(q))
        .map_or("-".into(), |d| format_micros(d.as_micros() as f64))
}

fn micros(v: Option<u64>) -> String {
    v.map_or("-".into(), |v| format_micros(v as f64))
}

fn ratio(a: f64, b: f64) -> f64 {
    if b > 0.0 { a / b } else { f64::NAN }
}
