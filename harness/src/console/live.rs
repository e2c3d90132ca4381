//! `harness run SCENARIO --tui`: the console over a run. Without a terminal on stdout the run
//! prints its usual lines instead.
//!
//! The run itself is [`crate::run::run_interruptible`], unchanged but for a few calls into this
//! module's tap: the load's recorder sends every request here ([`request`]) and says when the
//! load starts and ends, the run says when its environment is up ([`environment`]) and takes
//! the windows of the faults injected by hand into its report ([`manual_windows`], labelled
//! `(manual)`). The tap is one per process, set only while a view runs, so a run without
//! `--tui` pays one atomic load per request. A tap rather than a channel threaded through the
//! run: the run, the load and the recorder stay as they are for every other caller.
//!
//! One task ([`aggregate`]) turns the requests into one [`TrafficTick`] a second (counts by
//! endpoint and status, HDR quantiles), follows the scenario's timeline (planned, active with
//! its countdown, healed) and phase, judges every SLO on what was measured so far, once a
//! second, with the code that judges the run at its end ([`super::slos`]), and once
//! the environment is up polls its `/metrics` and proxies as an attached console does
//! ([`super::source`]). Faults injected from the menu during a run go on links
//! only, through the chaos-proxy's API: the environment's processes belong to the run's
//! timeline. The heal keys heal only the faults injected by hand, so the timeline's own heals
//! find their toxics where they left them; the load's end heals them too, before the checks.
//!
//! `p` pauses a closed-model load (each user finishes its journey and starts no other until `p`
//! again, and never past the load's end); an open model's arrivals are not paused, as an arrival
//! that cannot start on time is dropped. A pause shows in the report only as fewer requests.
//!
//! `q` (confirmed) or Ctrl-C in the view interrupts the run as Ctrl-C does outside it; SIGTERM
//! too. The view closes when the run's load and checks are done or it is interrupted, and what
//! the run printed meanwhile is printed then, followed by the usual summary and reports.

use std::collections::BTreeMap;
use std::io::{IsTerminal, Write};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::chaos::{self, Hands};
use super::state::{ChaosEvent, Command, Header, Quantiles, State, TrafficTick, Update};
use super::{App, Exit, source, terminal};
use crate::cli::RunArgs;
use crate::environment::EnvInfo;
use crate::faults::{Faultable, Schedule};
use crate::interrupt::Interrupt;
use crate::report::ChaosWindow;
use crate::scenario::{Backend, Scenario};

/// What the run tells the view.
enum Event {
    Request {
        endpoint: &'static str,
        status: u16,
        took: Duration,
    },
    LoadStarted(Instant),
    LoadFinished,
    Environment(Box<EnvInfo>),
}

/// Whether a view listens; read first, so that a run without one pays one atomic load.
static ON: AtomicBool = AtomicBool::new(false);
/// Where the events go while a view listens.
static TAP: Mutex<Option<mpsc::UnboundedSender<Event>>> = Mutex::new(None);
/// The view has paused the load: closed-model users wait before their next journey.
static PAUSED: AtomicBool = AtomicBool::new(false);
/// Faults injected by hand that have ended, for the report.
static WINDOWS: Mutex<Vec<ChaosWindow>> = Mutex::new(Vec::new());

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

fn send(event: Event) {
    if !ON.load(Ordering::Relaxed) {
        return;
    }
    if let Some(tap) = lock(&TAP).as_ref() {
        let _ = tap.send(event);
    }
}

/// Opens the tap: the run's events go to the receiver returned until [`close_tap`].
fn open_tap() -> mpsc::UnboundedReceiver<Event> {
    let (tx, rx) = mpsc::unbounded_channel();
    *lock(&TAP) = Some(tx);
    ON.store(true, Ordering::SeqCst);
    rx
}

/// The tap open and its aggregation running until `stop`: what an [`App`] is built from.
struct Live {
    origin: Instant,
    updates: mpsc::Receiver<Update>,
    commands: mpsc::Sender<Command>,
    aggregator: tokio::task::JoinHandle<()>,
}

/// Opens the tap and starts aggregating what it sees of a run of `scenario`, until `stop`.
fn start(scenario: &Scenario, stop: &CancellationToken) -> Live {
    let events = open_tap();
    super::slos::open(scenario);
    let origin = Instant::now();
    let (updates_tx, updates) = mpsc::channel(1024);
    let (commands, commands_rx) = mpsc::channel(16);
    let aggregator = tokio::spawn(aggregate(
        scenario.clone(),
        events,
        commands_rx,
        updates_tx,
        origin,
        stop.clone(),
    ));
    Live {
        origin,
        updates,
        commands,
        aggregator,
    }
}

fn close_tap() {
    super::slos::close();
    PAUSED.store(false, Ordering::SeqCst);
    ON.store(false, Ordering::SeqCst);
    *lock(&TAP) = None;
}

/// The load's request to `endpoint` was answered with `status` (0: no answer) after `took`.
pub fn request(endpoint: &'static str, status: u16, took: Duration) {
    if ON.load(Ordering::Relaxed) {
        send(Event::Request {
            endpoint,
            status,
            took,
        });
    }
}

/// The load starts now: the timeline's times count from `at`.
pub fn load_started(at: Instant) {
    send(Event::LoadStarted(at));
}

/// The load is over: the faults injected by hand are healed before the checks.
pub fn load_finished() {
    send(Event::LoadFinished);
}

/// The run's environment is up.
pub fn environment(info: &EnvInfo) {
    send(Event::Environment(Box::new(info.clone())));
}

/// Waits while the view has the load paused (`p`), but not past `until` (the load's end), so a
/// forgotten pause cannot hold a run; returns at once otherwise. Closed-model users call it
/// before each journey: a paused load finishes the journeys under way and starts no other.
pub async fn while_paused(until: tokio::time::Instant) {
    while PAUSED.load(Ordering::Relaxed) && ON.load(Ordering::Relaxed) {
        let now = tokio::time::Instant::now();
        if now >= until {
            return;
        }
        tokio::time::sleep_until((now + Duration::from_millis(100)).min(until)).await;
    }
}

/// The faults injected by hand during the run that have ended, labelled `(manual)`, taken.
pub fn manual_windows() -> Vec<ChaosWindow> {
    std::mem::take(&mut *lock(&WINDOWS))
}

/// `harness run --tui`.
pub async fn run(args: RunArgs) -> anyhow::Result<ExitCode> {
    if !std::io::stdout().is_terminal() {
        return crate::run::run(args).await;
    }
    let interrupt = Interrupt::install();
    // A scenario that does not open is the run's to report, as without --tui.
    let Ok(scenario) = Scenario::open(&args.scenario) else {
        return crate::run::run_interruptible(args, &interrupt).await;
    };
    let stop = CancellationToken::new();
    let Live {
        origin,
        updates,
        commands,
        aggregator,
    } = start(&scenario, &stop);
    let schedule = Schedule::of(&scenario).ok();
    let header = Header {
        title: scenario.name.clone(),
        backend: scenario.environment.backend.get_ref().name().to_string(),
        total: schedule.as_ref().map(|s| s.load_end),
        phase: "starting".into(),
        verdict: String::new(),
    };
    let mut app = App::new(State::new(header, true), updates, commands, origin);

    let guard = terminal::Guard::enter()?;
    guard.capture_output()?;
    let mut guard = guard;
    let the_run = crate::run::run_interruptible(args, &interrupt);
    tokio::pin!(the_run);
    let finished = tokio::select! {
        code = &mut the_run => Some(code),
        shown = app.run(&mut guard.terminal, interrupt.stopped()) => {
            if matches!(shown, Ok(Exit::Quit)) {
                interrupt.interrupt("q in the console");
            }
            if let Err(e) = shown {
                interrupt.interrupt("the console failed");
                tracing::warn!(error = %e, "the console failed");
            }
            None
        }
    };
    drop(app);
    drop(guard);
    print!("{}", terminal::take_captured());
    let _ = std::io::stdout().flush();
    let code = match finished {
        Some(code) => code,
        // The run goes on to its end (interrupted: heal, report, tear down), printing as usual.
        None => the_run.await,
    };
    stop.cancel();
    let _ = aggregator.await;
    close_tap();
    code
}

/// For `harness bench console`: the view of a run of `scenario` on the environment `info`
/// describes, with everything but the terminal (the tap, the aggregation, the polling of the
/// environment, the layout and drawing into a `width`×`height` screen whose bytes are thrown
/// away), until `stop`. Returns the frames drawn.
pub async fn headless(
    scenario: &Scenario,
    info: &EnvInfo,
    (width, height): (u16, u16),
    stop: CancellationToken,
) -> anyhow::Result<u64> {
    let done = CancellationToken::new();
    let Live {
        origin,
        updates,
        commands,
        aggregator,
    } = start(scenario, &done);
    environment(info);
    let header = Header {
        title: scenario.name.clone(),
        backend: info.backend.clone(),
        total: None,
        phase: String::new(),
        verdict: String::new(),
    };
    let mut app = App::new(State::new(header, true), updates, commands, origin);
    let viewport = ratatui::Viewport::Fixed(ratatui::layout::Rect::new(0, 0, width, height));
    let mut terminal = ratatui::Terminal::with_options(
        ratatui::backend::CrosstermBackend::new(std::io::sink()),
        ratatui::TerminalOptions { viewport },
    )?;
    let mut frames = tokio::time::interval(super::FRAME);
    let drawn = loop {
        tokio::select! {
            () = stop.cancelled() => break Ok(app.frames),
            _ = frames.tick() => {
                app.drain();
                if let Err(e) = terminal.draw(|f| app.render(f)) {
                    break Err(anyhow::anyhow!("drawing: {e}"));
                }
                app.frames += 1;
            }
        }
    };
    close_tap();
    done.cancel();
    let _ = aggregator.await;
    drawn
}

/// Requests of one second.
#[derive(Default)]
struct Second {
    counts: BTreeMap<(String, u16), u64>,
    all: Option<Histogram<u64>>,
    by_endpoint: BTreeMap<String, Option<Histogram<u64>>>,
}

fn histogram() -> Option<Histogram<u64>> {
    Histogram::new_with_bounds(1, 3_600_000_000, 2).ok()
}

fn record(h: &mut Option<Histogram<u64>>, us: u64) {
    if h.is_none() {
        *h = histogram();
    }
    if let Some(h) = h {
        h.saturating_record(us.max(1));
    }
}

fn quantiles(h: &Histogram<u64>) -> Option<Quantiles> {
    (!h.is_empty()).then(|| Quantiles {
        p50: h.value_at_quantile(0.50) as f64 / 1000.0,
        p95: h.value_at_quantile(0.95) as f64 / 1000.0,
        p99: h.value_at_quantile(0.99) as f64 / 1000.0,
    })
}

/// The hands of a run's console: the chaos-proxy's links only.
struct RunHands {
    backend: Backend,
    toxiproxy_url: String,
    links: Vec<String>,
    processes: Vec<String>,
}

const INSTANCES_BELONG_TO_THE_RUN: &str = "during a run, faults from the console go on links only: \
     instance faults belong to the scenario's [[chaos]] timeline";

#[async_trait::async_trait]
impl Faultable for RunHands {
    fn link_names(&self) -> Vec<String> {
        self.links.clone()
    }
    fn process_names(&self) -> Vec<String> {
        self.processes.clone()
    }
    fn chaos_client(&self) -> anyhow::Result<::chaos::Client> {
        Ok(::chaos::Client::new(&self.toxiproxy_url)?)
    }
    async fn kill(&mut self, _: &str) -> anyhow::Result<()> {
        anyhow::bail!(INSTANCES_BELONG_TO_THE_RUN)
    }
    async fn pause(&mut self, _: &str) -> anyhow::Result<()> {
        anyhow::bail!(INSTANCES_BELONG_TO_THE_RUN)
    }
    async fn resume(&mut self, _: &str) -> anyhow::Result<()> {
        anyhow::bail!(INSTANCES_BELONG_TO_THE_RUN)
    }
    async fn stop_instance(&mut self, _: &str) -> anyhow::Result<()> {
        anyhow::bail!(INSTANCES_BELONG_TO_THE_RUN)
    }
    async fn restart(&mut self, _: &str) -> anyhow::Result<()> {
        anyhow::bail!(INSTANCES_BELONG_TO_THE_RUN)
    }
    async fn disconnect(&mut self, _: &str) -> anyhow::Result<()> {
        anyhow::bail!(INSTANCES_BELONG_TO_THE_RUN)
    }
    async fn reconnect(&mut self, _: &str) -> anyhow::Result<()> {
        anyhow::bail!(INSTANCES_BELONG_TO_THE_RUN)
    }
    async fn heal_all(&mut self) -> anyhow::Result<()> {
        anyhow::bail!(INSTANCES_BELONG_TO_THE_RUN)
    }
    async fn scale(&mut self, _: crate::environment::Service, _: usize) -> anyhow::Result<()> {
        anyhow::bail!(INSTANCES_BELONG_TO_THE_RUN)
    }
}

#[async_trait::async_trait]
impl Hands for RunHands {
    fn backend(&self) -> Backend {
        self.backend
    }
    fn own_faults_only(&self) -> bool {
        true
    }
    async fn heal_target(&mut self, _: &str) -> anyhow::Result<Vec<String>> {
        anyhow::bail!(INSTANCES_BELONG_TO_THE_RUN)
    }
}

/// The fault task of one environment (a run of variants has one per variant).
struct Worker {
    commands: mpsc::Sender<Command>,
    task: JoinHandle<Vec<ChaosWindow>>,
}

/// Ends a worker (it heals what it injected) and keeps its windows for the report, in seconds
/// from the start of the load (`load_start`, in seconds from the view's origin), as the report's
/// windows are.
fn end(worker: Worker, load_start: Option<f64>) {
    drop(worker.commands);
    let offset = load_start.unwrap_or(0.0);
    tokio::spawn(async move {
        if let Ok(windows) = worker.task.await {
            lock(&WINDOWS).extend(windows.into_iter().map(|mut w| {
                w.start_s -= offset;
                w.end_s -= offset;
                w.planned_start_s -= offset;
                w.planned_end_s -= offset;
                w
            }));
        }
    });
}

/// Turns the tap's events into the view's updates, once a second, and forwards the view's
/// commands to the fault task of the environment running now.
async fn aggregate(
    scenario: Scenario,
    mut events: mpsc::UnboundedReceiver<Event>,
    mut commands: mpsc::Receiver<Command>,
    updates: mpsc::Sender<Update>,
    origin: Instant,
    stop: CancellationToken,
) {
    let schedule = Schedule::of(&scenario).unwrap_or_default();
    let mut second = Second::default();
    let mut load_start: Option<f64> = None;
    let mut load_done = false;
    let mut applied = vec![false; schedule.faults.len()];
    let mut healed = vec![false; schedule.faults.len()];
    let mut worker: Option<Worker> = None;
    let mut poller: Option<(CancellationToken, tempfile::TempDir)> = None;
    let mut ticks = tokio::time::interval(source::INTERVAL);
    let mut last_tick = origin.elapsed().as_secs_f64();
    loop {
        tokio::select! {
            () = stop.cancelled() => break,
            event = events.recv() => match event {
                None => break,
                Some(Event::Request { endpoint, status, took }) => {
                    let us = u64::try_from(took.as_micros()).unwrap_or(u64::MAX);
                    *second.counts.entry((endpoint.to_string(), status)).or_default() += 1;
                    record(&mut second.all, us);
                    record(second.by_endpoint.entry(endpoint.to_string()).or_default(), us);
                }
                Some(Event::LoadStarted(at)) => {
                    let start = at.saturating_duration_since(origin).as_secs_f64();
                    load_start = Some(start);
                    load_done = false;
                    applied.iter_mut().for_each(|a| *a = false);
                    healed.iter_mut().for_each(|h| *h = false);
                    for (i, f) in schedule.faults.iter().enumerate() {
                        let _ = updates.send(Update::Chaos(ChaosEvent::Planned {
                            id: format!("plan-{i}-{start}"),
                            label: f.label.clone(),
                            at_s: start + f.at.as_secs_f64(),
                            until_s: start + f.until.as_secs_f64(),
                        })).await;
                    }
                }
                Some(Event::LoadFinished) => {
                    load_done = true;
                    if let Some(w) = worker.take() {
                        end(w, load_start);
                    }
                    let _ = updates.send(Update::Phase("converging, checking".into())).await;
                }
                Some(Event::Environment(info)) => {
                    if let Some((stop, _)) = poller.take() {
                        stop.cancel();
                    }
                    if let Some(w) = worker.take() {
                        end(w, load_start);
                    }
                    poller = watch_environment(&info, &updates, origin).await;
                    worker = Some(spawn_worker(&info, &updates, origin));
                }
            },
            command = commands.recv() => match command {
                Some(Command::PauseLoad(pause)) => {
                    let open = scenario.load.get_ref().arrivals().is_some();
                    let text = if open {
                        "an open model's arrivals are not paused: an arrival that cannot start \
                         on time is dropped, which is what the run measures"
                    } else if pause {
                        PAUSED.store(true, Ordering::SeqCst);
                        "load paused: the users finish their journeys and start no other (the \
                         load's end still comes on time); p resumes"
                    } else {
                        PAUSED.store(false, Ordering::SeqCst);
                        "load resumed"
                    };
                    let _ = updates.send(Update::Notice { text: text.into(), error: open }).await;
                }
                Some(command) => match &worker {
                    Some(w) => { let _ = w.commands.send(command).await; }
                    None => {
                        let _ = updates.send(Update::Notice {
                            text: "the environment is not up yet".into(),
                            error: true,
                        }).await;
                    }
                },
                None => {}
            },
            _ = ticks.tick() => {
                let t = origin.elapsed().as_secs_f64();
                let tick = std::mem::take(&mut second);
                let traffic = TrafficTick {
                    t,
                    interval_s: (t - last_tick).max(1e-3),
                    counts: tick.counts.into_iter().map(|((e, s), n)| (e, s, n)).collect(),
                    latency: tick.all.as_ref().and_then(quantiles),
                    latency_by_endpoint: tick
                        .by_endpoint
                        .iter()
                        .filter_map(|(e, h)| h.as_ref().and_then(quantiles).map(|q| (e.clone(), q)))
                        .collect(),
                };
                last_tick = t;
                if load_start.is_some() && !load_done {
                    let _ = updates.send(Update::Traffic(traffic)).await;
                    let _ = updates.send(Update::Slos(super::slos::judge())).await;
                }
                if let Some(start) = load_start.filter(|_| !load_done) {
                    let at = t - start;
                    for (i, f) in schedule.faults.iter().enumerate() {
                        let id = format!("plan-{i}-{start}");
                        if !applied[i] && at >= f.at.as_secs_f64() {
                            applied[i] = true;
                            let _ = updates.send(Update::Chaos(ChaosEvent::Applied {
                                id: id.clone(),
                                label: f.label.clone(),
                                at_s: start + f.at.as_secs_f64(),
                                until_s: Some(start + f.until.as_secs_f64()),
                                manual: false,
                                affected: Vec::new(),
                            })).await;
                        }
                        if !healed[i] && at >= f.until.as_secs_f64() {
                            healed[i] = true;
                            let _ = updates.send(Update::Chaos(ChaosEvent::Healed { id, at_s: start + f.until.as_secs_f64() })).await;
                        }
                    }
                    let _ = updates.send(Update::Phase(phase_at(&schedule, at))).await;
                }
            }
        }
    }
    if let Some((stop, _)) = poller.take() {
        stop.cancel();
    }
    if let Some(w) = worker.take() {
        end(w, load_start);
    }
}

/// `before`, `during <label>`, `after`, as the run's phases are named.
fn phase_at(schedule: &Schedule, at: f64) -> String {
    let during: Vec<&str> = schedule
        .faults
        .iter()
        .filter(|f| (f.at.as_secs_f64()..f.until.as_secs_f64()).contains(&at))
        .map(|f| f.label.as_str())
        .collect();
    match (
        during.is_empty(),
        schedule.faults.iter().map(|f| f.at).min(),
    ) {
        (false, _) => format!("during {}", during.join(", ")),
        (true, Some(first)) if at < first.as_secs_f64() => "before".into(),
        (true, Some(_)) => "after".into(),
        (true, None) => "load".into(),
    }
}

/// Starts polling the environment's `/metrics` and proxies; the requests come from the load.
async fn watch_environment(
    info: &EnvInfo,
    updates: &mpsc::Sender<Update>,
    origin: Instant,
) -> Option<(CancellationToken, tempfile::TempDir)> {
    let written = (|| -> anyhow::Result<tempfile::TempDir> {
        let dir = tempfile::Builder::new()
            .prefix("harness-console-")
            .tempdir()?;
        std::fs::write(dir.path().join("env.json"), serde_json::to_string(info)?)?;
        Ok(dir)
    })();
    let dir = match written {
        Ok(dir) => dir,
        Err(e) => {
            let _ = updates
                .send(Update::Notice {
                    text: format!("the system's metrics cannot be shown: {e:#}"),
                    error: true,
                })
                .await;
            return None;
        }
    };
    let stop = CancellationToken::new();
    tokio::spawn(source::poll_with(
        dir.path().join("env.json"),
        updates.clone(),
        origin,
        stop.clone(),
        false,
    ));
    Some((stop, dir))
}

fn spawn_worker(info: &EnvInfo, updates: &mpsc::Sender<Update>, origin: Instant) -> Worker {
    let hands = RunHands {
        backend: if info.backend == "containers" {
            Backend::Containers
        } else {
            Backend::Local
        },
        toxiproxy_url: info.toxiproxy_url.clone(),
        links: info.links.iter().map(|l| l.name.clone()).collect(),
        processes: info.processes.iter().map(|p| p.name.clone()).collect(),
    };
    let (commands, rx) = mpsc::channel(16);
    let task = tokio::spawn(chaos::serve(hands, rx, updates.clone(), origin));
    Worker { commands, task }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SCENARIO: &str = r#"
description = "two faults, SLOs in phases"
[load]
users = 1
duration = "60s"
[[load.journeys]]
name = "place_order"
weight = 1
[[chaos]]
at = "10s"
for = "10s"
target = "gateway->payment"
fault = "latency"
latency = "100ms"
[[slo]]
endpoint = "POST /api/orders"
phase = "during"
p99 = "250ms"
error_rate = 0.1
[[slo]]
phase = "after"
saga_completion_p99 = "1s"
"#;

    fn scenario() -> Scenario {
        let s = Scenario::from_toml(std::path::Path::new("t.toml"), SCENARIO).unwrap();
        s.validate().unwrap();
        s
    }

    #[test]
    fn a_moment_of_the_load_is_in_the_phase_the_slos_name() {
        let schedule = Schedule::of(&scenario()).unwrap();
        assert_eq!(phase_at(&schedule, 12.0), "during latency gateway->payment");
    }
}
