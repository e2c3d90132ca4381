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
//! ([`super::source`]). Link faults injected from the menu during a run go straight to the
//! chaos-proxy's API; faults on processes, services and messages go through the run's timeline
//! ([`timeline_requests`]), which owns the environment during the load, so that an operator's
//! kill and the scenario's own faults never act on one process at once. The heal keys heal the
//! faults injected by hand, then ask the timeline to heal its own active ones: those
//! are healed at once, marked healed by hand in the report, and their scheduled heal later
//! finds nothing to do. The faults planned for later still fire on time. The load's end heals
//! everything too, before the checks.
//!
//! The view's processes and links follow the environment: when the timeline scales a service
//! (or heals everything, which scales back), the run tells the view
//! ([`environment_changed`]) and the env file the view polls is written again, so new
//! instances show with their state and links and removed ones go.
//!
//! `p` pauses the load until `p` again, never past the load's end. A closed model's users
//! finish their journeys and start no other; an open model starts no journey, and the arrivals
//! due meanwhile are counted as paused, not dropped (the system is not why they did not start),
//! so the report's arrivals still add up: due = started + dropped + paused. The pause is in the
//! report's chaos timeline as `load paused (manual)`, so a dip in throughput has its reason.
//!
//! `q` (confirmed) or Ctrl-C in the view interrupts the run as Ctrl-C does outside it; SIGTERM
//! too. The view closes when the run's load and checks are done or it is interrupted, and what
//! the run printed meanwhile is printed then, followed by the usual summary and reports.

use std::collections::BTreeMap;
use std::io::{IsTerminal, Write};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
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
use crate::faults::{Act, ActRequest, Faultable, HealRequest, HealedByHand, Request, Schedule};
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
    /// The environment's instances changed (a scale): what it has now.
    EnvironmentChanged(Box<EnvInfo>),
    /// The timeline healed these of its faults on the operator's request.
    HealedByHand(Vec<HealedByHand>),
}

/// Whether a view listens; read first, so that a run without one pays one atomic load.
static ON: AtomicBool = AtomicBool::new(false);
/// Where the events go while a view listens.
static TAP: Mutex<Option<mpsc::UnboundedSender<Event>>> = Mutex::new(None);
/// The view has paused the load: closed-model users wait before their next journey.
static PAUSED: AtomicBool = AtomicBool::new(false);
/// The load's pauses: from, and until (open while paused). Open-model arrivals due in one are
/// not started but counted as paused.
static PAUSES: Mutex<Vec<(Instant, Option<Instant>)>> = Mutex::new(Vec::new());
/// Open-model arrivals skipped during the pauses of the current load, for the view.
static PAUSED_ARRIVALS: AtomicU64 = AtomicU64::new(0);
/// Where the operator's heals of the scenario's faults and own faults on processes go: the
/// running chaos timeline.
static TIMELINE: Mutex<Option<mpsc::Sender<Request>>> = Mutex::new(None);
/// Faults injected by hand that have ended, and the load's pauses, for the report.
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
    *lock(&TIMELINE) = None;
    lock(&PAUSES).clear();
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

/// Whether the view had the load paused at `at`: an open-model arrival due then is not
/// started, and counted as paused. One atomic load when no view listens.
pub fn paused_at(at: Instant) -> bool {
    if !ON.load(Ordering::Relaxed) {
        return false;
    }
    lock(&PAUSES)
        .iter()
        .any(|(from, to)| *from <= at && to.is_none_or(|to| at < to))
}

/// Open-model arrivals were skipped while the load was paused.
pub fn arrivals_paused(n: u64) {
    if ON.load(Ordering::Relaxed) {
        PAUSED_ARRIVALS.fetch_add(n, Ordering::Relaxed);
    }
}

/// A chaos timeline starts: the operator's heals of the scenario's faults and faults on
/// processes, services and messages go to the receiver returned, until the next timeline; `None`
/// when no view listens.
pub fn timeline_requests() -> Option<mpsc::Receiver<Request>> {
    if !ON.load(Ordering::Relaxed) {
        return None;
    }
    let (tx, rx) = mpsc::channel(4);
    *lock(&TIMELINE) = Some(tx);
    Some(rx)
}

/// The environment's instances changed (a scale): `info` says what it has now. Computed only
/// when a view listens.
pub fn environment_changed(info: impl FnOnce() -> EnvInfo) {
    if ON.load(Ordering::Relaxed) {
        send(Event::EnvironmentChanged(Box::new(info())));
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

/// The hands of a run's console: the chaos-proxy's links, and the scenario's timeline for its
/// own faults and for everything else an operator does to the environment.
struct RunHands {
    backend: Backend,
    toxiproxy_url: String,
    /// The links and processes now (the aggregator updates them when the environment scales).
    names: Arc<Mutex<Names>>,
}

/// The links and processes of an environment, by name.
#[derive(Default)]
struct Names {
    links: Vec<String>,
    processes: Vec<String>,
}

impl Names {
    fn of(info: &EnvInfo) -> Self {
        Self {
            links: info.links.iter().map(|l| l.name.clone()).collect(),
            processes: info.processes.iter().map(|p| p.name.clone()).collect(),
        }
    }
}

/// Has the run's timeline do `act` to the environment. Without a timeline (the load has not
/// started, or is over and its end healed everything) a heal has nothing left to do, and
/// anything else is refused.
async fn through_timeline(act: Act) -> anyhow::Result<Vec<String>> {
    let heals = act.heals();
    let over = || {
        if heals {
            Ok(Vec::new())
        } else {
            Err(anyhow::anyhow!(
                "faults on processes, services and messages go through the run's chaos \
                 timeline, which runs only while the load does"
            ))
        }
    };
    let Some(timeline) = lock(&TIMELINE).clone() else {
        return over();
    };
    let (reply, answer) = tokio::sync::oneshot::channel();
    if timeline
        .send(Request::Act(ActRequest { act, reply }))
        .await
        .is_err()
    {
        return over();
    }
    answer.await.unwrap_or_else(|_| over())
}

#[async_trait::async_trait]
impl Faultable for RunHands {
    fn link_names(&self) -> Vec<String> {
        lock(&self.names).links.clone()
    }
    fn process_names(&self) -> Vec<String> {
        lock(&self.names).processes.clone()
    }
    fn chaos_client(&self) -> anyhow::Result<::chaos::Client> {
        Ok(::chaos::Client::new(&self.toxiproxy_url)?)
    }
    async fn kill(&mut self, name: &str) -> anyhow::Result<()> {
        through_timeline(Act::Kill(name.into())).await.map(drop)
    }
    async fn pause(&mut self, name: &str) -> anyhow::Result<()> {
        through_timeline(Act::Pause(name.into())).await.map(drop)
    }
    async fn resume(&mut self, name: &str) -> anyhow::Result<()> {
        through_timeline(Act::Resume(name.into())).await.map(drop)
    }
    async fn stop_instance(&mut self, name: &str) -> anyhow::Result<()> {
        through_timeline(Act::Stop(name.into())).await.map(drop)
    }
    async fn restart(&mut self, name: &str) -> anyhow::Result<()> {
        through_timeline(Act::Restart(name.into())).await.map(drop)
    }
    async fn disconnect(&mut self, name: &str) -> anyhow::Result<()> {
        through_timeline(Act::Disconnect(name.into()))
            .await
            .map(drop)
    }
    async fn reconnect(&mut self, name: &str) -> anyhow::Result<()> {
        through_timeline(Act::Reconnect(name.into()))
            .await
            .map(drop)
    }
    async fn heal_all(&mut self) -> anyhow::Result<()> {
        // The heal keys of a run go through `heal_scheduled` (`own_faults_only`).
        self.heal_scheduled(None).await.map(drop)
    }
    async fn scale(
        &mut self,
        service: crate::environment::Service,
        count: usize,
    ) -> anyhow::Result<()> {
        through_timeline(Act::Scale(service, count)).await.map(drop)
    }
    async fn set_message_fault(
        &mut self,
        id: &str,
        links: &[String],
        fault: &crate::faults::MessageFault,
    ) -> anyhow::Result<()> {
        through_timeline(Act::SetMessageFault {
            id: id.into(),
            links: links.to_vec(),
            fault: fault.clone(),
        })
        .await
        .map(drop)
    }
    async fn clear_message_fault(&mut self, id: &str) -> anyhow::Result<()> {
        through_timeline(Act::ClearMessageFault(id.into()))
            .await
            .map(drop)
    }
    async fn publish_poison(
        &mut self,
        topic: &str,
        partition: Option<i32>,
        messages: u64,
    ) -> anyhow::Result<Vec<String>> {
        through_timeline(Act::Poison {
            topic: topic.into(),
            partition,
            messages,
        })
        .await
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
    fn healed_by_the_run(&self) -> bool {
        true
    }
    async fn heal_target(&mut self, target: &str) -> anyhow::Result<Vec<String>> {
        // The heal keys of a run go through `heal_scheduled` (`own_faults_only`).
        self.heal_scheduled(Some(target)).await
    }
    async fn heal_scheduled(&mut self, target: Option<&str>) -> anyhow::Result<Vec<String>> {
        let Some(timeline) = lock(&TIMELINE).clone() else {
            return Ok(Vec::new());
        };
        let (reply, answer) = tokio::sync::oneshot::channel();
        let request = Request::Heal(HealRequest {
            target: target.map(str::to_string),
            reply,
        });
        // A timeline that is over has healed everything already.
        if timeline.send(request).await.is_err() {
            return Ok(Vec::new());
        }
        let Ok(healed) = answer.await else {
            return Ok(Vec::new());
        };
        let healed = healed?;
        let labels = healed.iter().map(|h| h.label.clone()).collect();
        send(Event::HealedByHand(healed));
        Ok(labels)
    }
}

/// The fault task of one environment (a run of variants has one per variant).
struct Worker {
    commands: mpsc::Sender<Command>,
    task: JoinHandle<Vec<ChaosWindow>>,
    names: Arc<Mutex<Names>>,
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
    // Healed by hand before their time.
    let mut early = vec![false; schedule.faults.len()];
    let open_model = scenario.load.get_ref().arrivals().is_some();
    let mut pause = Pause::new(origin);
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
                    pause.new_load();
                    applied.iter_mut().for_each(|a| *a = false);
                    healed.iter_mut().for_each(|h| *h = false);
                    early.iter_mut().for_each(|e| *e = false);
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
                    if let Some(start) = load_start {
                        let end = (start + schedule.load_end.as_secs_f64()).min(origin.elapsed().as_secs_f64());
                        pause.end(end, start, open_model, &updates).await;
                    }
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
                Some(Event::EnvironmentChanged(info)) => {
                    environment_changed_to(&info, poller.as_ref(), worker.as_ref(), &updates).await;
                }
                Some(Event::HealedByHand(faults)) => {
                    let start = load_start.unwrap_or(0.0);
                    for f in faults {
                        if let Some(h) = healed.get_mut(f.index).filter(|h| !**h) {
                            *h = true;
                            early[f.index] = true;
                            let id = format!("plan-{}-{start}", f.index);
                            let at_s = start + f.at.as_secs_f64();
                            let _ = updates.send(Update::Chaos(ChaosEvent::Healed { id, at_s })).await;
                        }
                    }
                }
            },
            command = commands.recv() => match command {
                Some(Command::PauseLoad(paused)) => {
                    let now = origin.elapsed().as_secs_f64();
                    match load_start.filter(|_| !load_done) {
                        None => {
                            let _ = updates.send(Update::LoadPaused(false)).await;
                            let _ = updates.send(Update::Notice {
                                text: "no load is running to pause".into(),
                                error: true,
                            }).await;
                        }
                        Some(_) if paused => pause.begin(now, open_model, &updates).await,
                        Some(start) => pause.end(now, start, open_model, &updates).await,
                    }
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
                    // The pause ends with the load, however long the follow-up takes.
                    let load_end = schedule.load_end.as_secs_f64();
                    if at >= load_end {
                        pause.end(start + load_end, start, open_model, &updates).await;
                    } else {
                        pause.tick(open_model, &updates).await;
                    }
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
                    let _ = updates.send(Update::Phase(phase_at(&schedule, &early, at))).await;
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

/// The operator's pause of the load (`p`), as the aggregation keeps it.
struct Pause {
    /// The view's origin, which the times count from.
    origin: Instant,
    /// Since when (seconds from the view's origin), the id of its timeline entry, and the
    /// open-model arrivals skipped in the pauses before it.
    since: Option<(f64, String, u64)>,
    /// Pauses so far, for unique ids.
    count: usize,
}

impl Pause {
    fn new(origin: Instant) -> Self {
        Self {
            origin,
            since: None,
            count: 0,
        }
    }

    /// A new load: no pause of an earlier one carries over.
    fn new_load(&mut self) {
        self.since = None;
        PAUSED.store(false, Ordering::SeqCst);
        PAUSED_ARRIVALS.store(0, Ordering::SeqCst);
        lock(&PAUSES).clear();
    }

    /// The timeline's label of the pause that began when `before` arrivals had been skipped.
    fn label(open_model: bool, before: u64) -> String {
        if open_model {
            let skipped = PAUSED_ARRIVALS
                .load(Ordering::Relaxed)
                .saturating_sub(before);
            format!("load paused ({skipped} arrivals not started)")
        } else {
            "load paused".into()
        }
    }

    /// Pauses the load at `now_s` (from the view's origin), unless it is paused already.
    async fn begin(&mut self, now_s: f64, open_model: bool, updates: &mpsc::Sender<Update>) {
        if self.since.is_none() {
            self.count += 1;
            let id = format!("pause-{}", self.count);
            lock(&PAUSES).push((self.origin + Duration::from_secs_f64(now_s.max(0.0)), None));
            PAUSED.store(true, Ordering::SeqCst);
            let before = PAUSED_ARRIVALS.load(Ordering::Relaxed);
            self.since = Some((now_s, id.clone(), before));
            let _ = updates
                .send(Update::Chaos(ChaosEvent::Applied {
                    id,
                    label: Self::label(open_model, before),
                    at_s: now_s,
                    until_s: None,
                    manual: true,
                    affected: Vec::new(),
                }))
                .await;
        }
        let text = if open_model {
            "load paused: no journey starts, and the arrivals due meanwhile are counted as \
             paused, not dropped (the load's end still comes on time); p resumes"
        } else {
            "load paused: the users finish their journeys and start no other (the load's end \
             still comes on time); p resumes"
        };
        let _ = updates.send(Update::LoadPaused(true)).await;
        let _ = updates
            .send(Update::Notice {
                text: text.into(),
                error: false,
            })
            .await;
    }

    /// While paused, the timeline entry of an open model counts the arrivals not started.
    async fn tick(&self, open_model: bool, updates: &mpsc::Sender<Update>) {
        if let (Some((since, id, before)), true) = (&self.since, open_model) {
            let _ = updates
                .send(Update::Chaos(ChaosEvent::Applied {
                    id: id.clone(),
                    label: Self::label(open_model, *before),
                    at_s: *since,
                    until_s: None,
                    manual: true,
                    affected: Vec::new(),
                }))
                .await;
        }
    }

    /// Resumes the load at `at_s` (from the view's origin; the load started at `load_start`):
    /// the pause goes into the report's chaos timeline, marked manual.
    async fn end(
        &mut self,
        at_s: f64,
        load_start: f64,
        open_model: bool,
        updates: &mpsc::Sender<Update>,
    ) {
        let Some((since, id, before)) = self.since.take() else {
            return;
        };
        let at_s = at_s.max(since);
        PAUSED.store(false, Ordering::SeqCst);
        let until = self.origin + Duration::from_secs_f64(at_s.max(0.0));
        if let Some(open) = lock(&PAUSES).iter_mut().find(|(_, to)| to.is_none()) {
            open.1 = Some(until);
        }
        let label = Self::label(open_model, before);
        let _ = updates
            .send(Update::Chaos(ChaosEvent::Healed {
                id: id.clone(),
                at_s,
            }))
            .await;
        let _ = updates.send(Update::LoadPaused(false)).await;
        let _ = updates
            .send(Update::Notice {
                text: format!("load resumed after {:.1}s: {label}", at_s - since),
                error: false,
            })
            .await;
        lock(&WINDOWS).push(pause_window(since - load_start, at_s - load_start, &label));
    }
}

/// A pause of the load in the report's chaos timeline, in seconds from the start of the load.
fn pause_window(start_s: f64, end_s: f64, label: &str) -> ChaosWindow {
    ChaosWindow {
        start_s,
        end_s,
        label: format!("{label} (manual)"),
        fault: "pause_load".into(),
        target: "load".into(),
        affected: Vec::new(),
        planned_start_s: start_s,
        planned_end_s: end_s,
        healed_by_hand: false,
    }
}

/// `before`, `during <label>`, `after`, as the run's phases are named; a fault healed by hand
/// (`early`, by index) is no longer shown as under way.
fn phase_at(schedule: &Schedule, early: &[bool], at: f64) -> String {
    let during: Vec<&str> = schedule
        .faults
        .iter()
        .enumerate()
        .filter(|(i, f)| {
            !early.get(*i).copied().unwrap_or(false)
                && (f.at.as_secs_f64()..f.until.as_secs_f64()).contains(&at)
        })
        .map(|(_, f)| f.label.as_str())
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
        write_env_file(dir.path(), info)?;
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
    let names = Arc::new(Mutex::new(Names::of(info)));
    let hands = RunHands {
        backend: if info.backend == "containers" {
            Backend::Containers
        } else {
            Backend::Local
        },
        toxiproxy_url: info.toxiproxy_url.clone(),
        names: Arc::clone(&names),
    };
    let (commands, rx) = mpsc::channel(16);
    let task = tokio::spawn(chaos::serve(hands, rx, updates.clone(), origin));
    Worker {
        commands,
        task,
        names,
    }
}

/// The environment scaled: the env file the view polls is written again (so its processes,
/// links and metrics targets are the new ones at the next poll) and the menu's targets change.
async fn environment_changed_to(
    info: &EnvInfo,
    poller: Option<&(CancellationToken, tempfile::TempDir)>,
    worker: Option<&Worker>,
    updates: &mpsc::Sender<Update>,
) {
    if let Some(worker) = worker {
        *lock(&worker.names) = Names::of(info);
    }
    let Some((_, dir)) = poller else { return };
    if let Err(e) = write_env_file(dir.path(), info) {
        let _ = updates
            .send(Update::Notice {
                text: format!("the new instances cannot be shown: {e:#}"),
                error: true,
            })
            .await;
    }
}

/// Writes `info` as the env file the poller reads, in one rename so it never reads half of it.
fn write_env_file(dir: &std::path::Path, info: &EnvInfo) -> anyhow::Result<()> {
    let temp = dir.join("env.json.tmp");
    std::fs::write(&temp, serde_json::to_string(info)?)?;
    std::fs::rename(&temp, dir.join("env.json"))?;
    Ok(())
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

    /// An environment with `orders` order instances, whose processes and proxies do not
    /// answer (the view shows them in an unknown state).
    fn env_info(orders: usize) -> EnvInfo {
        let mut processes = vec!["gateway#1".to_string(), "payment#1".into()];
        processes.extend((1..=orders).map(|n| format!("order#{n}")));
        let links: Vec<String> = processes
            .iter()
            .filter(|p| !p.starts_with("gateway"))
            .flat_map(|p| [format!("gateway->{p}"), format!("{p}->kafka")])
            .collect();
        EnvInfo {
            backend: "local".into(),
            gateway_url: "http://127.0.0.1:9".into(),
            customer_token: String::new(),
            admin_token: String::new(),
            declining_customer_token: String::new(),
            kafka_brokers: String::new(),
            run_dir: String::new(),
            customers: Vec::new(),
            products: Vec::new(),
            processes: processes
                .into_iter()
                .map(|name| crate::environment::ProcessInfo {
                    name,
                    pid: 0,
                    addr: String::new(),
                    url: None,
                    log: String::new(),
                })
                .collect(),
            jwt_public_key_pem: String::new(),
            startup_ms: 0,
            toxiproxy_url: "http://127.0.0.1:9".into(),
            links: links
                .into_iter()
                .map(|name| crate::environment::LinkInfo {
                    name,
                    listen: String::new(),
                    upstream: String::new(),
                })
                .collect(),
            control_url: None,
            otlp_endpoint: None,
            metrics_targets: Vec::new(),
            prometheus_config: None,
        }
    }

    /// The aggregation of a run of `scenario`, its clock started at `origin`: where the run's
    /// events and the view's commands go, and what the view is sent.
    struct Aggregation {
        /// One aggregation at a time: the load's pause is the process's.
        _alone: tokio::sync::MutexGuard<'static, ()>,
        origin: Instant,
        events: mpsc::UnboundedSender<Event>,
        commands: mpsc::Sender<Command>,
        updates: mpsc::Receiver<Update>,
        stop: CancellationToken,
        task: JoinHandle<()>,
    }

    static ALONE: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

    impl Aggregation {
        /// Starts it with its clock `back` in the past (once no other aggregation runs).
        async fn start(scenario: Scenario, back: Duration) -> Self {
            let alone = ALONE.lock().await;
            let origin = Instant::now()
                .checked_sub(back)
                .expect("the clock is past the origin asked for");
            let (events, events_rx) = mpsc::unbounded_channel();
            let (commands, commands_rx) = mpsc::channel(4);
            let (updates_tx, updates) = mpsc::channel(1024);
            let stop = CancellationToken::new();
            let task = tokio::spawn(aggregate(
                scenario,
                events_rx,
                commands_rx,
                updates_tx,
                origin,
                stop.clone(),
            ));
            Self {
                _alone: alone,
                origin,
                events,
                commands,
                updates,
                stop,
                task,
            }
        }

        /// The first update `pick` takes, within 10 s.
        async fn until<T>(&mut self, mut pick: impl FnMut(Update) -> Option<T>) -> T {
            let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
            loop {
                let update = tokio::time::timeout_at(deadline, self.updates.recv())
                    .await
                    .expect("the update came within 10 s")
                    .expect("the aggregation runs");
                if let Some(t) = pick(update) {
                    return t;
                }
            }
        }

        /// The names of the view's targets, once `pick` likes them.
        async fn targets(&mut self, pick: impl Fn(&[String]) -> bool) -> Vec<String> {
            self.until(|u| match u {
                Update::Targets(rows) => {
                    let names: Vec<String> = rows.into_iter().map(|r| r.name).collect();
                    pick(&names).then_some(names)
                }
                _ => None,
            })
            .await
        }

        async fn stop(self) {
            self.stop.cancel();
            self.task.await.unwrap();
        }
    }

    #[tokio::test]
    async fn the_view_shows_the_instances_a_scale_adds_and_drops_those_it_removes() {
        let mut a = Aggregation::start(scenario(), Duration::ZERO).await;
        let has = |name: &'static str| move |names: &[String]| names.iter().any(|n| n == name);
        a.events
            .send(Event::Environment(Box::new(env_info(1))))
            .unwrap();
        let before = a.targets(has("order#1")).await;
        assert!(!before.contains(&"order#2".to_string()), "{before:?}");

        a.events
            .send(Event::EnvironmentChanged(Box::new(env_info(3))))
            .unwrap();
        let after = a.targets(has("order#3")).await;
        for name in ["order#2", "gateway->order#2", "order#3->kafka"] {
            assert!(after.contains(&name.to_string()), "{name} in {after:?}");
        }
        assert!(after.len() > before.len());

        a.events
            .send(Event::EnvironmentChanged(Box::new(env_info(1))))
            .unwrap();
        let back = a
            .targets(|n| !n.iter().any(|n| n.contains("order#2")))
            .await;
        assert_eq!(
            back, before,
            "the removed instances and their links are gone"
        );
        a.stop().await;
    }

    #[tokio::test]
    async fn a_pause_of_the_load_ends_at_the_loads_end_and_goes_into_the_report_as_manual() {
        let text = SCENARIO.replace("duration = \"60s\"", "duration = \"2s\"");
        let scenario = Scenario::from_toml(std::path::Path::new("t.toml"), &text).unwrap();
        let mut a = Aggregation::start(scenario, Duration::ZERO).await;
        let origin = a.origin;
        a.events.send(Event::LoadStarted(origin)).unwrap();
        a.until(|u| matches!(u, Update::Chaos(ChaosEvent::Planned { .. })).then_some(()))
            .await;
        a.commands.send(Command::PauseLoad(true)).await.unwrap();
        a.until(|u| matches!(u, Update::LoadPaused(true)).then_some(()))
            .await;
        assert!(PAUSED.load(Ordering::SeqCst));
        // Nobody resumes it: the load's end does, on time.
        let healed_at = a
            .until(|u| match u {
                Update::Chaos(ChaosEvent::Healed { id, at_s }) if id == "pause-1" => Some(at_s),
                _ => None,
            })
            .await;
        assert!(
            (healed_at - 2.0).abs() < 1e-6,
            "at the load's end: {healed_at}"
        );
        a.until(|u| matches!(u, Update::LoadPaused(false)).then_some(()))
            .await;
        assert!(!PAUSED.load(Ordering::SeqCst));
        let end = lock(&PAUSES).last().and_then(|(_, to)| *to);
        assert_eq!(end, Some(origin + Duration::from_secs(2)));
        let windows: Vec<ChaosWindow> = manual_windows()
            .into_iter()
            .filter(|w| w.fault == "pause_load")
            .collect();
        assert_eq!(windows.len(), 1, "{windows:?}");
        assert_eq!(windows[0].label, "load paused (manual)");
        assert!(windows[0].start_s < 1.0 && (windows[0].end_s - 2.0).abs() < 1e-6);
        a.stop().await;
    }

    #[tokio::test]
    async fn a_scheduled_fault_healed_by_hand_shows_healed_and_its_phase_ends() {
        let mut a = Aggregation::start(scenario(), Duration::from_secs(12)).await;
        a.events.send(Event::LoadStarted(a.origin)).unwrap();
        a.until(|u| matches!(&u, Update::Phase(p) if p.starts_with("during")).then_some(()))
            .await;
        a.events
            .send(Event::HealedByHand(vec![HealedByHand {
                index: 0,
                label: "latency gateway->payment".into(),
                at: Duration::from_secs(12),
            }]))
            .unwrap();
        let (id, at_s) = a
            .until(|u| match u {
                Update::Chaos(ChaosEvent::Healed { id, at_s }) => Some((id, at_s)),
                _ => None,
            })
            .await;
        assert_eq!((id.as_str(), at_s), ("plan-0-0", 12.0));
        a.until(|u| matches!(&u, Update::Phase(p) if p == "after").then_some(()))
            .await;
        a.stop().await;
    }

    #[test]
    fn a_moment_of_the_load_is_in_the_phase_the_slos_name() {
        let schedule = Schedule::of(&scenario()).unwrap();
        assert_eq!(
            phase_at(&schedule, &[false], 12.0),
            "during latency gateway->payment"
        );
        assert_eq!(
            phase_at(&schedule, &[true], 12.0),
            "after",
            "healed by hand"
        );
    }
}
