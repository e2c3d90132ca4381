//! `harness bench console`: what the live view costs. One environment, the scenario's load run
//! in rounds without the view and with it, alternating (off, on, off, on...), so that a machine
//! getting slower or faster affects both alike. With the view, everything of `harness run --tui`
//! runs but the terminal itself: the load's tap, the aggregation, the polling of every
//! `/metrics` and the proxies, the layout and the drawing of a 120×40 screen ten times a second
//! into a sink ([`crate::console::live::headless`]). It prints, per round and merged, the load's
//! requests/s, the harness's CPU seconds per second of load, and the frames drawn per second;
//! then the ratios with the view against without.
//!
//! Measured (2026-12-05, debug build on 2 cores, `--scenario smoke --rounds 2`: 8 users, about
//! 29 requests/s): requests/s x1.004 with the view, the harness's CPU 0.088 s/s without it and
//! 0.160 s/s with it (about 7% of a core for the tap, the scrapes of 6 processes and 10 frames
//! a second), 10.0 frames/s. A first attempt read x0.355 because one round with the view fell
//! to 2.7 requests/s while other builds held both cores; it did not come back in the next runs,
//! so read the rounds, not only the merged figures. The capacity scenario needs a release build.

use std::process::ExitCode;
use std::time::Instant;

use anyhow::Context;
use tokio_util::sync::CancellationToken;

use super::cpu_seconds;
use crate::cli::ConsoleBenchArgs;
use crate::environment::{self, EnvOptions, Traces};
use crate::load::{self, LoadTarget};
use crate::metrics::ALL;
use crate::scenario::Scenario;

/// What one round measured.
#[derive(Debug, Default, Clone, Copy)]
struct Side {
    requests: u64,
    seconds: f64,
    cpu: f64,
    frames: u64,
}

impl Side {
    fn merge(&mut self, o: Side) {
        self.requests += o.requests;
        self.seconds += o.seconds;
        self.cpu += o.cpu;
        self.frames += o.frames;
    }

    fn per_s(&self, n: f64) -> f64 {
        if self.seconds > 0.0 {
            n / self.seconds
        } else {
            0.0
        }
    }

    fn line(&self, label: &str) -> String {
        format!(
            "{label:<10} requests {:>7.1}/s  harness cpu {:>5.3} s/s  frames {:>5.1}/s",
            self.per_s(self.requests as f64),
            self.per_s(self.cpu),
            self.per_s(self.frames as f64),
        )
    }
}

pub async fn console(args: ConsoleBenchArgs) -> anyhow::Result<ExitCode> {
    let scenario = match Scenario::open(&args.scenario) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: {e}");
            return Ok(ExitCode::from(crate::EXIT_CANNOT_RUN));
        }
    };
    let shutdown = platform::shutdown::install(false);
    println!(
        "console benchmark: scenario {} ({}), {} rounds of the load without and with the view",
        scenario.name,
        scenario.load.get_ref().describe(),
        args.rounds
    );
    let options = EnvOptions::of(
        &scenario.environment,
        !args.no_build,
        Traces::Collect { forward_to: None },
    );
    let env = tokio::select! {
        env = environment::start(*scenario.environment.backend.get_ref(), options) => {
            env.context("starting the environment")?
        }
        _ = shutdown.cancelled() => return Ok(super::interrupted()),
    };
    let info = env.info();
    let rounds = async {
        let target = LoadTarget::from_env(&info)?;
        let (mut off, mut on) = (Side::default(), Side::default());
        for round in 1..=args.rounds {
            for view in [false, true] {
                let side = one_round(&scenario, &info, &target, view).await?;
                let label = format!("{round} {}", if view { "view" } else { "no view" });
                println!("{}", side.line(&label));
                if view {
                    on.merge(side)
                } else {
                    off.merge(side)
                }
            }
        }
        anyhow::Ok((off, on))
    };
    let measured = tokio::select! {
        m = rounds => m,
        _ = shutdown.cancelled() => {
            env.stop().await;
            return Ok(super::interrupted());
        }
    };
    env.stop().await;
    let (off, on) = measured?;
    println!("{}", off.line("no view"));
    println!("{}", on.line("view"));
    let ratio = |a: f64, b: f64| if b > 0.0 { a / b } else { f64::NAN };
    println!(
        "view / no view: requests/s x{:.3}, harness cpu per second of load x{:.3}; the view drew \
         {:.1} frames/s (goal: >= 10 frames/s without lowering the load)",
        ratio(on.per_s(on.requests as f64), off.per_s(off.requests as f64)),
        ratio(on.per_s(on.cpu), off.per_s(off.cpu)),
        on.per_s(on.frames as f64),
    );
    Ok(ExitCode::SUCCESS)
}

async fn one_round(
    scenario: &Scenario,
    info: &crate::environment::EnvInfo,
    target: &LoadTarget,
    view: bool,
) -> anyhow::Result<Side> {
    let stop = CancellationToken::new();
    let drawing = view.then(|| {
        let (scenario, info, stop) = (scenario.clone(), info.clone(), stop.clone());
        tokio::spawn(async move {
            crate::console::live::headless(&scenario, &info, (120, 40), stop).await
        })
    });
    let cpu_before = cpu_seconds("self").unwrap_or(0.0);
    let started = Instant::now();
    let outcome = load::run(scenario, target, Vec::new(), started).await;
    let seconds = started.elapsed().as_secs_f64();
    stop.cancel();
    let frames = match drawing {
        Some(task) => task.await.context("the view")??,
        None => 0,
    };
    let cpu = cpu_seconds("self").unwrap_or(0.0) - cpu_before;
    let m = outcome.context("driving the load")?.measurements;
    let requests = m
        .endpoints
        .get(ALL)
        .into_iter()
        .flatten()
        .map(|(_, s)| s.requests())
        .sum();
    Ok(Side {
        requests,
        seconds,
        cpu,
        frames,
    })
}
