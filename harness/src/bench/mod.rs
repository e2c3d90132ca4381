//! `harness bench ...`: benchmarks that print figures, never timed assertions.
//!
//! `harness bench tracing` measures what tracing costs: the same load (the `tracing-overhead`
//! scenario by default) against a fresh environment with the services' trace export off
//! (`OTEL_SDK_DISABLED=true`) and on (OTLP to the harness's collector), alternating off, on,
//! off, on... so that a machine getting slower or faster over the minutes affects both alike.
//! It prints each round and the ratios on/off of `POST /api/orders` p99, saga completion p99
//! and confirmed orders per second, computed over the rounds merged.
//!
//! `harness bench capacity` and `harness bench overload` run a scenario's load on fresh
//! environments that differ in one thing (instances per service; admission control on or off),
//! see [`system`]. `harness bench gateway` and `harness bench loadgen` measure HTTP alone, see
//! [`http`]. `harness bench console` measures what the live view costs the load, see
//! [`console`].

use std::process::ExitCode;
use std::time::Instant;

use anyhow::Context;

use crate::cli::{BenchArgs, BenchCommand, TracingBenchArgs};
use crate::environment::{self, EnvOptions, Traces};
use crate::load::{self, LoadTarget};
use crate::metrics::{ALL, Latency, Measurements};
use crate::scenario::Scenario;
use crate::slo::format_micros;

mod console;
mod http;
mod system;

pub async fn run(args: BenchArgs) -> anyhow::Result<ExitCode> {
    match args.command {
        BenchCommand::Tracing(a) => tracing(a).await,
        BenchCommand::Capacity(a) => system::capacity(a).await,
        BenchCommand::Overload(a) => system::overload(a).await,
        BenchCommand::Gateway(a) => http::gateway(a).await,
        BenchCommand::Loadgen(a) => http::loadgen(a).await,
        BenchCommand::Console(a) => console::console(a).await,
    }
}

fn interrupted() -> ExitCode {
    eprintln!("interrupted; everything started was stopped");
    ExitCode::from(crate::EXIT_CANNOT_RUN)
}

/// What one round measured.
#[derive(Debug, Default, Clone)]
struct Round {
    place_order: Latency,
    sagas: Latency,
    confirmed: u64,
    requests: u64,
    seconds: f64,
    spans: u64,
    /// CPU seconds over the round, per process group: `services` (gateway and service
    /// instances), `broker`, `proxies` (chaos-proxy), `harness` (load generator and collector).
    cpu: std::collections::BTreeMap<&'static str, f64>,
}

impl Round {
    fn of(m: &Measurements) -> Self {
        let all = m.endpoints.get(ALL);
        Self {
            place_order: all
                .and_then(|e| e.get("POST /api/orders"))
                .map(|s| s.latency.clone())
                .unwrap_or_default(),
            sagas: m.saga_completion.get(ALL).cloned().unwrap_or_default(),
            confirmed: m.outcomes.get("CONFIRMED").copied().unwrap_or(0),
            requests: all.into_iter().flatten().map(|(_, s)| s.requests()).sum(),
            seconds: m.duration.as_secs_f64(),
            spans: 0,
            cpu: std::collections::BTreeMap::new(),
        }
    }

    fn merge(&mut self, other: &Round) {
        self.place_order.merge(&other.place_order);
        self.sagas.merge(&other.sagas);
        self.confirmed += other.confirmed;
        self.requests += other.requests;
        self.seconds += other.seconds;
        self.spans += other.spans;
        for (k, v) in &other.cpu {
            *self.cpu.entry(k).or_default() += v;
        }
    }

    fn p99_us(l: &Latency) -> f64 {
        l.quantile(0.99).map_or(f64::NAN, |d| d.as_micros() as f64)
    }

    fn confirmed_per_s(&self) -> f64 {
        if self.seconds > 0.0 {
            self.confirmed as f64 / self.seconds
        } else {
            0.0
        }
    }

    fn line(&self, label: &str) -> String {
        let cpu: Vec<String> = self
            .cpu
            .iter()
            .map(|(k, v)| format!("{k} {v:.1}"))
            .collect();
        format!(
            "{label:<8} POST /api/orders p99 {:>7}  saga p99 {:>7}  confirmed {:>5.1}/s  \
             requests {:>6.1}/s  spans {:>7}  cpu s: {}",
            format_micros(Self::p99_us(&self.place_order)),
            format_micros(Self::p99_us(&self.sagas)),
            self.confirmed_per_s(),
            if self.seconds > 0.0 {
                self.requests as f64 / self.seconds
            } else {
                0.0
            },
            self.spans,
            cpu.join(", "),
        )
    }
}

async fn tracing(args: TracingBenchArgs) -> anyhow::Result<ExitCode> {
    let scenario = match Scenario::open(&args.scenario) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: {e}");
            return Ok(ExitCode::from(crate::EXIT_CANNOT_RUN));
        }
    };
    let shutdown = platform::shutdown::install(false);
    println!(
        "tracing benchmark: scenario {} ({}), {} rounds of off and on",
        scenario.name,
        scenario.load.get_ref().describe(),
        args.rounds
    );
    let mut off = Round::default();
    let mut on = Round::default();
    let mut build = !args.no_build;
    for round in 1..=args.rounds {
        for traced in [false, true] {
            let measured = tokio::select! {
                r = one_round(&scenario, traced, build) => r?,
                _ = shutdown.cancelled() => {
                    eprintln!("interrupted; everything started was stopped");
                    return Ok(ExitCode::from(crate::EXIT_CANNOT_RUN));
                }
            };
            build = false;
            let label = format!("{round} {}", if traced { "on" } else { "off" });
            println!("{}", measured.line(&label));
            if traced {
                on.merge(&measured);
            } else {
                off.merge(&measured);
            }
        }
    }
    println!("{}", off.line("all off"));
    println!("{}", on.line("all on"));
    let ratio = |a: f64, b: f64| if b > 0.0 { a / b } else { f64::NAN };
    println!(
        "tracing on / off: POST /api/orders p99 x{:.3}, saga p99 x{:.3}, confirmed orders/s x{:.3} \
         (goal: at most 10% slower, i.e. p99 ratios <= 1.10 and throughput >= 0.90)",
        ratio(
            Round::p99_us(&on.place_order),
            Round::p99_us(&off.place_order)
        ),
        ratio(Round::p99_us(&on.sagas), Round::p99_us(&off.sagas)),
        ratio(on.confirmed_per_s(), off.confirmed_per_s()),
    );
    Ok(ExitCode::SUCCESS)
}

/// A fresh environment, the scenario's load, and what it measured.
async fn one_round(scenario: &Scenario, traced: bool, build: bool) -> anyhow::Result<Round> {
    let env = &scenario.environment;
    let options = EnvOptions::of(
        env,
        build,
        if traced {
            Traces::Collect { forward_to: None }
        } else {
            Traces::Off
        },
    );
    let env = environment::start(*scenario.environment.backend.get_ref(), options)
        .await
        .context("starting the environment")?;
    let info = env.info();
    let target = LoadTarget::from_env(&info)?;
    let before = cpu_by_group(&info.processes);
    let started = Instant::now();
    let outcome = load::run(scenario, &target, Vec::new(), started).await;
    let after = cpu_by_group(&info.processes);
    let spans = env.spans().map_or(0, |s| s.received());
    env.stop().await;
    let outcome = outcome.context("driving the load")?;
    let mut round = Round::of(&outcome.measurements);
    round.spans = spans;
    round.cpu = after
        .into_iter()
        .map(|(k, v)| (k, v - before.get(k).copied().unwrap_or(0.0)))
        .collect();
    Ok(round)
}

/// CPU seconds used so far by the environment's processes, by group, and by this process.
pub(crate) fn cpu_by_group(
    processes: &[crate::environment::ProcessInfo],
) -> std::collections::BTreeMap<&'static str, f64> {
    let mut groups = std::collections::BTreeMap::new();
    for p in processes {
        let group = match p.name.as_str() {
            "broker" => "broker",
            "chaos-proxy" => "proxies",
            _ => "services",
        };
        *groups.entry(group).or_default() += cpu_seconds(&p.pid.to_string()).unwrap_or(0.0);
    }
    groups.insert("harness", cpu_seconds("self").unwrap_or(0.0));
    groups
}

/// User plus system CPU time of a process from `/proc/<pid>/stat` (fields 14 and 15, after the
/// parenthesised command name, which may hold spaces). The kernel reports them in USER_HZ
/// ticks, which Linux fixes at 100 per second on every architecture it exposes to user space.
pub(crate) fn cpu_seconds(pid: &str) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // `rest` starts at field 3 (state), so field 14 is index 11.
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) / 100.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_time_is_read_for_a_live_process_and_not_for_a_missing_one() {
        let mut spent = 0u64;
        for i in 0..2_000_000u64 {
            spent = spent.wrapping_add(i * i);
        }
        assert!(spent > 0);
        assert!(cpu_seconds("self").is_some_and(|s| s >= 0.0));
        assert_eq!(cpu_seconds("999999999"), None);
    }
}
