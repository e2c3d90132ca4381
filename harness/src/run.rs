//! `harness run SCENARIO`: one experiment from start to verdict.
//!
//! 1. Load and validate the scenario (a bad file: exit 2, naming file and line).
//! 2. Start the environment it names; a failure there is exit 2 too.
//! 3. Check the steady-state hypothesis before the load (a system that is already unhealthy
//!    makes the experiment meaningless: exit 2) and again after it (a failed objective).
//! 4. Drive the load (goose), let the system converge, read the dead-letter topics, check the
//!    invariants, evaluate the SLOs.
//! 5. Write the four report files and the load's `history.jsonl` (every client operation,
//!    [`crate::load::history`]), compare with `--baseline` if given, and tear the
//!    environment down, in every case, before returning the exit code: 0 all held, 1 an SLO, an
//!    invariant or the baseline comparison failed, 2 the run could not happen.
//!
//! A scenario with `[[variant]]`s runs steps 2 to 5 once per variant, one after the other, each
//! on a fresh environment with the variant's resilience keys over `[environment.resilience]`,
//! writes each variant's report into `reports/<run-id>/variants/<name>/`, and the comparison
//! ([`crate::report::variants`]) into `reports/<run-id>/`. It exits 0 when every gated verdict
//! held (every variant's invariants, and the SLOs of those that gate), 1 otherwise, 2 when a
//! variant could not run (the reports of the variants before it stay).
//!
//! # Interrupted
//!
//! Ctrl-C, SIGTERM or the caller's [`Interrupt`] (the console's `q`) stop the load and the chaos
//! timeline at once; the active faults are healed; the checks run with a convergence bound of
//! at most [`INTERRUPTED_CONVERGENCE`] (no wait for the last traces); the reports are written
//! with the verdict `interrupted` and how far the run got ([`report::Interruption`]), whatever
//! the checks say; the environment is torn down; the exit code is 130. A second interruption
//! skips the checks and the reports: the environment is torn down and nothing is written or
//! kept. Interrupted before the load started (start-up, the steady-state probe), there is
//! nothing to report: the run tears down, says so and exits 130. In a run of variants the
//! interrupted variant's report is written, the variants after it do not run and no comparison
//! is written.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::ExitCode;
use std::time::{Duration, Instant, SystemTime};

use anyhow::Context;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Headers;
use rdkafka::types::RDKafkaRespErr;
use rdkafka::{ClientConfig, Message, Offset, TopicPartitionList};
use reqwest::Method;

use crate::checks::collect::{converge, read_model};
use crate::checks::{Coverage, DeadLetter, Gap, Policy, check_selected};
use crate::cli::RunArgs;
use crate::environment::{self, EnvOptions, Environment};
use crate::interrupt::{EXIT_INTERRUPTED, Interrupt};
use crate::report::variants::{VariantRun, VariantsReport};
use crate::report::{self, EnvironmentSummary, RunInput, RunReport};
use crate::scenario::Scenario;
use crate::slo::{SloMetric, SloUnit, SloVerdict};
use crate::telemetry::charts;
use crate::telemetry::hops::{self, HopBreakdown};
use crate::telemetry::scrape::Scraper;
use crate::telemetry::store::SpanStore;
use crate::{EXIT_CANNOT_RUN, capacity, faults, load, slo};

const EXIT_FAILED: u8 = 1;

/// The longest the checks of an interrupted run wait for the system to converge.
pub const INTERRUPTED_CONVERGENCE: Duration = Duration::from_secs(10);

/// `harness run`, interrupted by Ctrl-C and SIGTERM.
pub async fn run(args: RunArgs) -> anyhow::Result<ExitCode> {
    // Installed before goose starts, so Ctrl-C is ours: we stop, report and tear down.
    let interrupt = Interrupt::install();
    run_interruptible(args, &interrupt).await
}

/// `harness run` that `interrupt` ends early, as Ctrl-C does: a caller with its own way of
/// asking (the console's `q`) calls [`Interrupt::interrupt`] on a clone.
pub async fn run_interruptible(args: RunArgs, interrupt: &Interrupt) -> anyhow::Result<ExitCode> {
    let mut scenario = match open(&args) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: {e}");
            return Ok(ExitCode::from(EXIT_CANNOT_RUN));
        }
    };
    let knee = match crate::knee::resolve(&mut scenario, &args.knee, &args.reports_dir) {
        Ok(said) => said,
        Err(e) => {
            eprintln!("error: {e:#}");
            return Ok(ExitCode::from(EXIT_CANNOT_RUN));
        }
    };
    let baseline = match &args.baseline {
        Some(_) if !scenario.variants.is_empty() => {
            eprintln!(
                "error: --baseline compares one run with an earlier one, and {} compares its \
                 variants with each other; run it without --baseline",
                scenario.name
            );
            return Ok(ExitCode::from(EXIT_CANNOT_RUN));
        }
        Some(path) => match report::read(path) {
            Ok(b) => Some(b),
            Err(e) => {
                eprintln!("error: baseline {}: {e:#}", path.display());
                return Ok(ExitCode::from(EXIT_CANNOT_RUN));
            }
        },
        None => None,
    };
    tokio::spawn(announce(interrupt.clone()));

    println!(
        "scenario {}: {}",
        scenario.name,
        scenario.description.get_ref()
    );
    if let Some(knee) = knee {
        println!("{knee}");
    }
    if scenario.variants.is_empty() {
        single(&args, &scenario, baseline, interrupt).await
    } else {
        variants(&args, &scenario, interrupt).await
    }
}

/// Says on stderr what an interruption does, when it happens.
async fn announce(interrupt: Interrupt) {
    interrupt.stopped().cancelled().await;
    eprintln!(
        "interrupted ({}): stopping the load and the faults, healing, then reporting how far \
         the run got and tearing down; interrupt again to skip the checks and the reports",
        interrupt.by().unwrap_or_default()
    );
    interrupt.abandoned().cancelled().await;
    eprintln!("interrupted again: skipping the checks and the reports, only tearing down");
}

/// The scenario `args` names, with `--backend` over the file's (the report names the backend
/// that really ran), refused if that backend cannot run yet.
fn open(args: &RunArgs) -> Result<Scenario, crate::scenario::ScenarioError> {
    let mut scenario = Scenario::open(&args.scenario)?;
    if let Some(backend) = args.backend {
        let span = scenario.environment.backend.span();
        scenario.environment.backend = crate::scenario::Spanned::new(span, backend);
    }
    scenario.check_backend_supported()?;
    Ok(scenario)
}

/// A scenario without variants: one run, its report, the baseline comparison.
async fn single(
    args: &RunArgs,
    scenario: &Scenario,
    baseline: Option<RunReport>,
    interrupt: &Interrupt,
) -> anyhow::Result<ExitCode> {
    let done = match run_one(scenario, args, interrupt).await {
        Ran::Finished(done) => *done,
        Ran::CouldNotRun => return Ok(ExitCode::from(EXIT_CANNOT_RUN)),
        Ran::Interrupted => return Ok(ExitCode::from(EXIT_INTERRUPTED)),
    };
    let dir = report::run_dir(&args.reports_dir, &done.report.run_id)?;
    let report = done.write(&dir)?;
    print_summary(&report);
    println!("reports: {}", dir.display());
    let mut code = report.exit_code;
    if baseline.is_some() && report.interruption.is_some() {
        println!("not compared with the baseline: the run was interrupted");
    } else if let Some(baseline) = baseline {
        let comparison = report::compare(&report, &baseline, args.tolerance());
        println!("{comparison}");
        if comparison.regressed() {
            code = EXIT_FAILED;
        }
    }
    Ok(ExitCode::from(code))
}

/// A scenario with variants: each one run in turn on a fresh environment and written into
/// `variants/<name>/`, then the comparison.
async fn variants(
    args: &RunArgs,
    scenario: &Scenario,
    interrupt: &Interrupt,
) -> anyhow::Result<ExitCode> {
    let run_id = report::new_run_id(&scenario.name, SystemTime::now());
    let dir = report::run_dir(&args.reports_dir, &run_id)?;
    let total = scenario.variants.len();
    let mut runs = Vec::new();
    for (i, variant) in scenario.variants.iter().enumerate() {
        let variant = variant.get_ref();
        let name = variant.name().to_string();
        let variant_scenario = scenario.for_variant(variant);
        println!(
            "\nvariant {name} ({} of {total}): {}{}",
            i + 1,
            variant_scenario.environment.resilience.describe(),
            if variant.gate {
                ""
            } else {
                "; SLOs reported, not gated"
            }
        );
        let done = if interrupt.is_interrupted() {
            Ran::Interrupted
        } else {
            run_one(&variant_scenario, args, interrupt).await
        };
        let before = if runs.is_empty() {
            String::new()
        } else {
            format!("; the reports of those before it are in {}", dir.display())
        };
        let mut done = match done {
            Ran::Finished(done) => *done,
            Ran::Interrupted => {
                eprintln!(
                    "interrupted: the variant {name} and those after it did not run, and no \
                     comparison was written{before}"
                );
                return Ok(ExitCode::from(EXIT_INTERRUPTED));
            }
            Ran::CouldNotRun => {
                eprintln!(
                    "error: the variant {name} could not run, so the variants cannot be \
                     compared{before}"
                );
                return Ok(ExitCode::from(EXIT_CANNOT_RUN));
            }
        };
        done.report.variant = Some(name.clone());
        done.report.run_id = format!("{run_id}/variants/{name}");
        let report = done.write(&dir.join("variants").join(&name))?;
        print_summary(&report);
        if report.interruption.is_some() {
            let after: Vec<String> = scenario.variants[i + 1..]
                .iter()
                .map(|v| v.get_ref().name().to_string())
                .collect();
            let not_run = if after.is_empty() {
                String::new()
            } else {
                format!(", the variants after it did not run ({})", after.join(", "))
            };
            println!(
                "interrupted in the variant {name}{not_run}; no comparison was written; \
                 reports: {}",
                dir.display()
            );
            return Ok(ExitCode::from(EXIT_INTERRUPTED));
        }
        runs.push(VariantRun {
            name,
            gate: variant.gate,
            resilience: variant_scenario.environment.resilience.clone(),
            report,
        });
    }
    let comparison = VariantsReport::build(run_id, scenario, &runs)?;
    report::variants::write_all(&dir, &comparison, &runs).context("writing the comparison")?;
    println!("\n{}", comparison.terminal_summary());
    println!("reports: {}", dir.display());
    Ok(ExitCode::from(comparison.exit_code))
}

/// A run that produced a report, the processes' logs saved before its environment stopped, and
/// the folder holding the load's `history.jsonl`.
struct Finished {
    report: RunReport,
    logs: Option<tempfile::TempDir>,
    history: tempfile::TempDir,
}

impl Finished {
    /// Writes the four report files into `dir`, moves the history beside them and the logs into
    /// `dir/logs`.
    fn write(self, dir: &Path) -> anyhow::Result<RunReport> {
        let paths = report::write_into(dir, &self.report).context("writing the reports")?;
        let history = self.history.path().join(load::history::FILE_NAME);
        let dest = paths.dir.join(load::history::FILE_NAME);
        if std::fs::rename(&history, &dest).is_err() {
            std::fs::copy(&history, &dest)
                .with_context(|| format!("copying {} to {}", history.display(), dest.display()))?;
        }
        if let Some(logs) = self.logs {
            let dest = paths.dir.join("logs");
            if let Err(e) = move_dir(logs.path(), &dest) {
                eprintln!("warning: the processes' logs could not go into the report: {e:#}");
                keep_logs(Some(logs));
            }
        }
        Ok(self.report)
    }
}

/// How [`run_one`] ended.
enum Ran {
    /// With a report: passed, failed, or interrupted once the load had started.
    Finished(Box<Finished>),
    /// It could not happen; why is on stderr, and the logs are kept where it says.
    CouldNotRun,
    /// Interrupted before the load started, or twice: torn down, nothing written or kept, and
    /// said so on stderr.
    Interrupted,
}

/// One scenario (a variant's, for a run of variants) on a fresh environment: started, the
/// experiment run, the logs saved, the environment stopped in every case.
async fn run_one(scenario: &Scenario, args: &RunArgs, interrupt: &Interrupt) -> Ran {
    let history = match tempfile::Builder::new()
        .prefix("harness-history-")
        .tempdir()
    {
        Ok(dir) => dir,
        Err(e) => {
            eprintln!("error: no directory for the history: {e}");
            return Ran::CouldNotRun;
        }
    };
    let backend = *scenario.environment.backend.get_ref();
    let options = EnvOptions::of(
        &scenario.environment,
        !args.no_build,
        crate::environment::Traces::Collect {
            forward_to: args.otlp_endpoint.clone(),
        },
    );
    let env = tokio::select! {
        env = environment::start(backend, options) => match env {
            Ok(env) => env,
            Err(e) => {
                eprintln!("error: the environment did not start: {e:#}");
                return Ran::CouldNotRun;
            }
        },
        () = interrupt.stopped().cancelled() => {
            eprintln!(
                "interrupted during start-up: everything started so far was stopped; no report"
            );
            return Ran::Interrupted;
        }
    };
    println!(
        "environment up in {:.2} s ({})",
        env.startup_time().as_secs_f64(),
        env.gateway_url()
    );
    crate::console::live::environment(&env.info());

    let history_file = history.path().join(load::history::FILE_NAME);
    let mut env = env;
    let outcome = tokio::select! {
        r = experiment(scenario, env.as_mut(), history_file, interrupt) => Some(r),
        // Dropping the experiment stops its chaos timeline; stopping the environment below
        // heals what it left (paused processes are resumed before they are stopped, and the
        // proxies go with the chaos-proxy).
        () = interrupt.abandoned().cancelled() => None,
    };
    let (outcome, logs) = match outcome {
        Some(Ok(Experiment::InterruptedBeforeLoad)) | None => (None, None),
        Some(outcome) => (Some(outcome), save_logs(env.as_ref()).await),
    };
    env.stop().await;
    match outcome {
        Some(Ok(Experiment::Done(report))) => Ran::Finished(Box::new(Finished {
            report: *report,
            logs,
            history,
        })),
        Some(Ok(Experiment::NotSteady(why))) => {
            eprintln!("error: the steady-state hypothesis did not hold before the load: {why}");
            keep_logs(logs);
            Ran::CouldNotRun
        }
        Some(Err(e)) => {
            eprintln!("error: the run could not complete: {e:#}");
            keep_logs(logs);
            Ran::CouldNotRun
        }
        Some(Ok(Experiment::InterruptedBeforeLoad)) | None => {
            eprintln!(
                "interrupted {}: the environment was torn down; no report",
                if interrupt.abandoned().is_cancelled() {
                    "twice"
                } else {
                    "before the load started"
                }
            );
            Ran::Interrupted
        }
    }
}

/// Every process's output, saved while the environment still runs (a stopped one is gone).
async fn save_logs(env: &dyn Environment) -> Option<tempfile::TempDir> {
    let dir = match tempfile::Builder::new().prefix("harness-logs-").tempdir() {
        Ok(dir) => dir,
        Err(e) => {
            eprintln!("warning: no directory for the processes' logs: {e}");
            return None;
        }
    };
    match env.save_logs(dir.path()).await {
        Ok(_) => Some(dir),
        Err(e) => {
            eprintln!("warning: the processes' logs could not be saved: {e:#}");
            None
        }
    }
}

/// Keeps the saved logs of a run that wrote no report, and says where they are.
fn keep_logs(logs: Option<tempfile::TempDir>) {
    if let Some(logs) = logs {
        eprintln!("the processes' logs: {}", logs.keep().display());
    }
}

/// Moves the files of `from` into `to` (copies: the temp dir may be on another file system).
fn move_dir(from: &Path, to: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(to).with_context(|| format!("creating {}", to.display()))?;
    for entry in std::fs::read_dir(from).with_context(|| format!("reading {}", from.display()))? {
        let entry = entry?;
        let dest = to.join(entry.file_name());
        std::fs::copy(entry.path(), &dest)
            .with_context(|| format!("copying {} to {}", entry.path().display(), dest.display()))?;
    }
    Ok(())
}

enum Experiment {
    /// Its report; an interrupted one's says so.
    Done(Box<RunReport>),
    NotSteady(String),
    /// Interrupted before the load started: nothing to report.
    InterruptedBeforeLoad,
}

async fn experiment(
    scenario: &Scenario,
    env: &mut dyn Environment,
    history_file: std::path::PathBuf,
    interrupt: &Interrupt,
) -> anyhow::Result<Experiment> {
    let info = env.info();
    let api = env.client()?;
    let admin = env.identity().admin_token()?;
    let stop = interrupt.stopped();

    if let Some(steady) = &scenario.steady_state {
        let (rate, n) = tokio::select! {
            p = probe(&api, *steady.probe_requests.get_ref()) => p?,
            () = stop.cancelled() => return Ok(Experiment::InterruptedBeforeLoad),
        };
        if rate > *steady.max_error_rate.get_ref() {
            return Ok(Experiment::NotSteady(format!(
                "{:.1}% of {n} probes failed, the hypothesis allows {:.1}%",
                rate * 100.0,
                steady.max_error_rate.get_ref() * 100.0
            )));
        }
    }

    if stop.is_cancelled() {
        return Ok(Experiment::InterruptedBeforeLoad);
    }
    let mut target = load::LoadTarget::from_env(&info)?;
    target.history_file = Some(history_file);
    let started_at = SystemTime::now();
    println!("load: {}", scenario.load.get_ref().describe());
    let schedule = faults::Schedule::of(scenario)?;
    let load_started = Instant::now();
    let scraper = Scraper::watching(env.watch_metrics_targets(), SCRAPE_INTERVAL, load_started);
    // With a view (`--tui`), its fault menu and heal keys act through the timeline, which owns
    // the environment during the load (also without faults of its own), and the view hears
    // when the timeline scales a service.
    let operator = crate::console::live::timeline_requests();
    let (outcome, chaos_windows) = if schedule.is_empty() && operator.is_none() {
        let outcome = load::run_until(scenario, &target, Vec::new(), load_started, stop).await;
        (outcome, Ok(Vec::new()))
    } else {
        let mut told = Told(env);
        tokio::join!(
            load::run_until(scenario, &target, schedule.phases(), load_started, stop),
            faults::run_with(&schedule, &mut told, load_started, stop, operator)
        )
    };
    let mut outcome = outcome.context("driving the load")?;
    let chaos_windows = chaos_windows.context("running the chaos timeline")?;
    if stop.is_cancelled() {
        println!(
            "load stopped after {:.1} s of {:.1} s (interrupted)",
            outcome.measurements.duration.as_secs_f64(),
            schedule.load_end.as_secs_f64()
        );
    } else {
        println!("load done in {:.1} s", load_started.elapsed().as_secs_f64());
    }

    let timeout = Duration::from(*scenario.checks.convergence_timeout.get_ref());
    let short = timeout.min(INTERRUPTED_CONVERGENCE);
    let converged = if stop.is_cancelled() {
        converge(&api, &admin, short).await
    } else {
        tokio::select! {
            c = converge(&api, &admin, timeout) => c,
            // Interrupted while converging: start again with the short bound.
            () = stop.cancelled() => converge(&api, &admin, short).await,
        }
    }
    .context("reading the system's state after the load")?;
    let mut snapshot = converged.snapshot;
    (snapshot.dead_letters, snapshot.dead_letters_read) = dead_letters(env.kafka_brokers()).await;
    (snapshot.views, snapshot.views_read) = read_model(&api, &admin).await;
    let scraped = scraper.stop().await;
    let traces = match env.spans() {
        Some(store) => {
            if !stop.is_cancelled() {
                settle(&store).await;
            }
            let breakdown = hop_breakdown(&outcome.traced, &store);
            outcome.measurements.hops = breakdown.histograms();
            Some(breakdown.report(&store).context("summarising the traces")?)
        }
        None => None,
    };
    let metrics = charts::metrics_report(
        &scraped,
        SCRAPE_INTERVAL.as_secs_f64(),
        &metric_selectors(scenario),
    );
    outcome.measurements.scraped = std::sync::Arc::new(scraped.series);
    let invariants = check_selected(
        &scenario.checks.invariants.selected(),
        &outcome.history,
        &snapshot,
        &Policy {
            poison_injected: scenario.injects_poison(),
        },
    );

    let (capacity, mut slos) = if scenario.load.get_ref().finds_knee() {
        let (capacity, slos) = capacity::judge(scenario, &outcome.measurements);
        (Some(capacity), slos)
    } else {
        (
            None,
            slo::evaluate_scenario(scenario, &outcome.measurements),
        )
    };
    if let Some(steady) = &scenario.steady_state {
        let max = *steady.max_error_rate.get_ref();
        let (rate, n) = probe(&api, *steady.probe_requests.get_ref()).await?;
        slos.push(SloVerdict {
            name: format!("steady state after the load: error rate <= {max}"),
            metric: SloMetric::ErrorRate,
            percentile: None,
            endpoint: Some("GET /api/products".into()),
            subject: None,
            phase: "after".into(),
            unit: SloUnit::Ratio,
            target: max,
            measured: Some(rate),
            held: rate <= max,
            detail: format!("{:.1}% of {n} probes failed", rate * 100.0),
            samples: u64::from(n),
        });
    }

    let mut report = RunReport::build(RunInput {
        run_id: report::new_run_id(&scenario.name, started_at),
        scenario,
        started_at,
        environment: EnvironmentSummary::from_scenario(scenario, Some(env.startup_time())),
        measurements: &outcome.measurements,
        slos,
        invariants,
        // With those injected by hand from the console (`--tui`), marked manual.
        chaos_windows: [chaos_windows, crate::console::live::manual_windows()].concat(),
        capacity,
        traces,
        metrics: Some(metrics),
    })?;
    if let Some(at) = interrupt.at() {
        let interruption = interruption(
            scenario,
            &schedule,
            &report,
            interrupt.by().unwrap_or_default(),
            at.saturating_duration_since(load_started),
            &outcome.measurements,
            short,
        );
        report = report.interrupted(interruption);
    }
    Ok(Experiment::Done(Box::new(report)))
}

/// How far an interrupted run got, the interruption coming `at` after the load started.
fn interruption(
    scenario: &Scenario,
    schedule: &faults::Schedule,
    report: &RunReport,
    by: String,
    at: Duration,
    measured: &crate::metrics::Measurements,
    convergence_bound: Duration,
) -> report::Interruption {
    let load = scenario.load.get_ref();
    // The load's own end, not the follow-up's: goose stops within a moment of the interruption.
    let stage = if at <= measured.duration {
        "load"
    } else if at <= measured.measured_until {
        "follow-up"
    } else {
        "checks"
    };
    let mut spans = schedule.phases();
    if load.finds_knee() {
        spans.extend(load.steps().iter().map(|s| crate::metrics::PhaseSpan {
            name: crate::metrics::step_phase(s.index),
            start: s.start,
            end: s.end,
        }));
    }
    let at_load = at.min(measured.duration);
    // A fault's window over the step or the before and after around it.
    let phase = spans
        .iter()
        .find(|s| s.name.starts_with("during:") && s.contains(at_load))
        .or_else(|| spans.iter().find(|s| s.contains(at_load)))
        .map_or(crate::metrics::ALL.to_string(), |s| s.name.clone());
    report::Interruption {
        by,
        stage: stage.into(),
        phase,
        load_s: measured.duration.as_secs_f64(),
        planned_s: schedule.load_end.as_secs_f64(),
        requests: report.request_totals().0,
        convergence_bound_s: convergence_bound.as_secs_f64(),
    }
}

/// How often every process's `/metrics` is scraped during a run.
const SCRAPE_INTERVAL: Duration = Duration::from_secs(1);

/// Waits until the services' last spans are in: the span count stayed the same over a few of
/// their export intervals (bounded, so a process that keeps exporting cannot hold the run).
async fn settle(store: &SpanStore) {
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut last = store.received();
    let mut quiet = 0;
    while quiet < 3 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let now = store.received();
        quiet = if now == last { quiet + 1 } else { 0 };
        last = now;
    }
}

/// Where each traced saga's time went, from the spans collected.
fn hop_breakdown(traced: &[load::TracedSaga], store: &SpanStore) -> HopBreakdown {
    let mut breakdown = HopBreakdown::new();
    for saga in traced {
        match store.trace(&saga.trace_id) {
            Some(spans) => {
                let hops = hops::saga_hops(&spans, Some(saga.terminal_at_unix_ns));
                breakdown.add_saga(
                    &saga.phases,
                    &saga.order_id.to_string(),
                    &saga.trace_id,
                    saga.completion_us,
                    &hops,
                );
            }
            None => breakdown.add_without_trace(),
        }
    }
    breakdown
}

/// The selectors of the scenario's metric SLOs, charted in the report.
fn metric_selectors(scenario: &Scenario) -> Vec<String> {
    scenario
        .objectives()
        .into_iter()
        .filter_map(|o| match o.target {
            crate::scenario::Target::MetricMax { selector, .. }
            | crate::scenario::Target::MetricMin { selector, .. } => Some(selector),
            _ => None,
        })
        .collect()
}

/// The steady-state probe: `n` catalog reads through the gateway; returns the failed fraction.
async fn probe(api: &crate::client::ApiClient, n: u32) -> anyhow::Result<(f64, u32)> {
    let n = n.max(1);
    let mut failed = 0u32;
    for _ in 0..n {
        let ok = api
            .send::<()>(Method::GET, "/api/products", "", None, &[])
            .await
            .is_ok_and(|a| a.status.is_success());
        if !ok {
            failed += 1;
        }
    }
    Ok((f64::from(failed) / f64::from(n), n))
}

/// Every message on the `*.dlq` topics, read from the start with a throwaway consumer, and
/// whether every partition was read to the end it had when the reading began. Whatever could not
/// be read is a gap, which the `no_dead_letters` check reports as `could_not_verify`; it never
/// stops the run.
async fn dead_letters(brokers: &str) -> (Vec<DeadLetter>, Coverage) {
    let brokers = brokers.to_string();
    match tokio::task::spawn_blocking(move || read_dead_letters(&brokers, DLQ_READ_BOUND)).await {
        Ok(read) => read,
        Err(e) => (
            Vec::new(),
            Coverage::Incomplete {
                gaps: vec![Gap {
                    what: "the dead-letter topics".into(),
                    details: format!("the reader panicked: {e}"),
                }],
            },
        ),
    }
}

/// The environment as a run's chaos timeline acts on it: every action goes through, and when
/// the instances change (a scale, or healing everything, which scales back) the console's view,
/// if one listens, is told what the environment has now.
struct Told<'a>(&'a mut dyn Environment);

impl Told<'_> {
    fn tell(&self) {
        crate::console::live::environment_changed(|| self.0.info());
    }
}

#[async_trait::async_trait]
impl faults::Faultable for Told<'_> {
    fn link_names(&self) -> Vec<String> {
        self.0.link_names()
    }
    fn process_names(&self) -> Vec<String> {
        self.0.process_names()
    }
    fn chaos_client(&self) -> anyhow::Result<chaos::Client> {
        self.0.chaos_client()
    }
    async fn kill(&mut self, name: &str) -> anyhow::Result<()> {
        self.0.kill(name).await
    }
    async fn pause(&mut self, name: &str) -> anyhow::Result<()> {
        self.0.pause(name).await
    }
    async fn resume(&mut self, name: &str) -> anyhow::Result<()> {
        self.0.resume(name).await
    }
    async fn stop_instance(&mut self, name: &str) -> anyhow::Result<()> {
        self.0.stop_instance(name).await
    }
    async fn restart(&mut self, name: &str) -> anyhow::Result<()> {
        self.0.restart(name).await
    }
    async fn disconnect(&mut self, name: &str) -> anyhow::Result<()> {
        self.0.disconnect(name).await
    }
    async fn reconnect(&mut self, name: &str) -> anyhow::Result<()> {
        self.0.reconnect(name).await
    }
    async fn heal_all(&mut self) -> anyhow::Result<()> {
        let before = self.0.instances();
        let healed = self.0.heal_all().await;
        if self.0.instances() != before {
            self.tell();
        }
        healed
    }
    async fn scale(&mut self, service: environment::Service, count: usize) -> anyhow::Result<()> {
        // A scale that failed half-way may still have changed the instances.
        let scaled = self.0.scale(service, count).await;
        self.tell();
        scaled
    }
    async fn set_message_fault(
        &mut self,
        id: &str,
        links: &[String],
        fault: &faults::MessageFault,
    ) -> anyhow::Result<()> {
        self.0.set_message_fault(id, links, fault).await
    }
    async fn clear_message_fault(&mut self, id: &str) -> anyhow::Result<()> {
        self.0.clear_message_fault(id).await
    }
    async fn publish_poison(
        &mut self,
        topic: &str,
        partition: Option<i32>,
        messages: u64,
    ) -> anyhow::Result<Vec<String>> {
        self.0.publish_poison(topic, partition, messages).await
    }
    fn instance_count(&self, service: environment::Service) -> usize {
        self.0.instance_count(service)
    }
    fn instances(&self) -> environment::Instances {
        self.0.instances()
    }
}

/// How long the dead-letter reader may take to reach the end of every partition.
const DLQ_READ_BOUND: Duration = Duration::from_secs(10);

fn read_dead_letters(brokers: &str, bound: Duration) -> (Vec<DeadLetter>, Coverage) {
    let mut gaps = Vec::new();
    let gap = |what: String, details: String| Gap { what, details };
    let consumer: BaseConsumer = match ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set(
            "group.id",
            format!("harness-dlq-reader-{}", uuid::Uuid::new_v4()),
        )
        .set("enable.auto.commit", "false")
        .set("fetch.wait.max.ms", "50")
        .create()
    {
        Ok(c) => c,
        Err(e) => {
            let g = gap("the dead-letter topics".into(), format!("no consumer: {e}"));
            return (Vec::new(), Coverage::Incomplete { gaps: vec![g] });
        }
    };
    // Per partition, the end to reach and how far the reading got.
    let mut ends: BTreeMap<(String, i32), (i64, i64)> = BTreeMap::new();
    let mut tpl = TopicPartitionList::new();
    let dlq_topics: Vec<String> = contracts::messages::topics::all()
        .into_iter()
        .filter(|t| t.ends_with(contracts::messages::topics::DEAD_LETTER_SUFFIX))
        .collect();
    for topic in &dlq_topics {
        let meta = match consumer.fetch_metadata(Some(topic), Duration::from_secs(5)) {
            Ok(m) => m,
            Err(e) => {
                gaps.push(gap(topic.clone(), format!("no metadata: {e}")));
                continue;
            }
        };
        for t in meta.topics() {
            match t.error() {
                None => {}
                // The broker says the topic does not exist: nothing was ever dead-lettered there.
                Some(RDKafkaRespErr::RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART) => continue,
                Some(e) => {
                    gaps.push(gap(topic.clone(), format!("metadata error {e:?}")));
                    continue;
                }
            }
            for p in t.partitions() {
                let what = format!("{topic}/{}", p.id());
                match consumer.fetch_watermarks(topic, p.id(), Duration::from_secs(5)) {
                    Ok((low, high)) if high > low => {
                        ends.insert((topic.clone(), p.id()), (high, low));
                        if let Err(e) = tpl.add_partition_offset(topic, p.id(), Offset::Offset(low))
                        {
                            gaps.push(gap(what, format!("cannot read from {low}: {e}")));
                        }
                    }
                    Ok(_) => {}
                    Err(e) => gaps.push(gap(what, format!("no watermarks: {e}"))),
                }
            }
        }
    }
    let mut found = Vec::new();
    if !ends.is_empty() {
        if let Err(e) = consumer.assign(&tpl) {
            let g = gap(
                "the dead-letter topics".into(),
                format!("cannot assign: {e}"),
            );
            return (found, Coverage::Incomplete { gaps: vec![g] });
        }
        let deadline = Instant::now() + bound;
        let behind = |ends: &BTreeMap<(String, i32), (i64, i64)>| {
            ends.values().any(|(end, reached)| reached < end)
        };
        while behind(&ends) && Instant::now() < deadline {
            match consumer.poll(Duration::from_millis(200)) {
                Some(Ok(m)) => {
                    if let Some((_, reached)) =
                        ends.get_mut(&(m.topic().to_string(), m.partition()))
                    {
                        *reached = (*reached).max(m.offset() + 1);
                    }
                    found.push(dead_letter(&m));
                }
                Some(Err(e)) => tracing::debug!("reading the dead letters: {e}"),
                None => {}
            }
            // Offsets without a message (transaction markers) still move the position on.
            if let Ok(positions) = consumer.position() {
                for e in positions.elements() {
                    if let (Some((_, reached)), Offset::Offset(at)) = (
                        ends.get_mut(&(e.topic().to_string(), e.partition())),
                        e.offset(),
                    ) {
                        *reached = (*reached).max(at);
                    }
                }
            }
        }
        for ((topic, partition), (end, reached)) in &ends {
            if reached < end {
                gaps.push(gap(
                    format!("{topic}/{partition}"),
                    format!("read to offset {reached} of {end} within {bound:?}"),
                ));
            }
        }
    }
    let coverage = if gaps.is_empty() {
        Coverage::Complete
    } else {
        Coverage::Incomplete { gaps }
    };
    (found, coverage)
}

fn dead_letter(m: &rdkafka::message::BorrowedMessage<'_>) -> DeadLetter {
    let error = m
        .headers()
        .and_then(|h| {
            h.iter()
                .find(|h| h.key == "dlq-error")
                .and_then(|h| h.value)
                .map(|v| String::from_utf8_lossy(v).into_owned())
        })
        .unwrap_or_default();
    DeadLetter {
        topic: m.topic().to_string(),
        partition: m.partition(),
        offset: m.offset(),
        key: m.key().map(|k| String::from_utf8_lossy(k).into_owned()),
        error,
    }
}

fn print_summary(report: &RunReport) {
    println!("{}", report.headline());
    println!("  load: {}", report.load_summary());
    if let Some(c) = &report.capacity {
        for s in &c.steps {
            let judged = match s.slos_held {
                Some(true) => "SLOs held",
                Some(false) => "SLOs broken",
                None => "ramp",
            };
            let knee = if c.knee == Some(s.step) {
                "  <- knee"
            } else {
                ""
            };
            let offered = match s.arrival_rate_per_s {
                Some(rate) => format!(
                    "{:>7}/s {:>6} due {:>6} dropped",
                    slo::format_number(rate),
                    s.arrivals.unwrap_or(0),
                    s.dropped.unwrap_or(0)
                ),
                None => format!("{:>4} users", s.users),
            };
            println!(
                "  step {:>2} {offered} {:>6.1} req/s {:>5} shed {:>6.1} confirmed/s  POST p99 {:>8}  saga p99 {:>8}  {judged}{knee}",
                s.step,
                s.requests_per_s,
                s.shed,
                s.confirmed_per_s,
                s.place_order_p99_us
                    .map_or("-".into(), |v| slo::format_micros(v as f64)),
                s.saga_p99_us
                    .map_or("-".into(), |v| slo::format_micros(v as f64)),
            );
        }
    }
    for s in &report.slos {
        let mark = if s.held { "ok  " } else { "FAIL" };
        println!("  {mark} SLO {}: {}", s.name, s.detail);
    }
    for i in &report.invariants {
        let mark = if i.held { "ok  " } else { "FAIL" };
        println!("  {mark} invariant {}: {}", i.name, i.summary);
    }
}
