//! Chaos timelines: a scenario's `[[chaos]]` entries applied to a running environment and
//! healed on time, with what happened recorded for the report.
//!
//! Link faults become Toxiproxy toxics (or a disabled proxy, for `partition`) on the named
//! proxies of the links the target names ([`target`]); instance faults signal processes: `kill`
//! (SIGKILL, restarted when the fault ends), `pause` (SIGSTOP, then SIGCONT), `stop` (SIGTERM,
//! restarted when the fault ends); `scale` runs another number of instances of a service
//! ([`Faultable::scale`]) and goes back to the count it had when the fault ends. Message faults
//! (`duplicate`, `lost_ack`, `delay`) are set on the embedded broker's fronts of the targeted
//! links to the broker ([`Faultable::set_message_fault`]) and cleared when the fault ends;
//! `poison` publishes malformed messages onto a topic when it starts ([`Faultable::publish_poison`]).
//! Faults without `for` last until the load ends.
//!
//! An operator may heal the timeline's faults early ([`run_with`] and its [`HealRequest`]s, the
//! heal keys of `harness run --tui`): each fault picked is healed at once, its window ends then
//! and is marked healed by hand, and its scheduled heal later finds nothing to do. The faults
//! planned for later still fire at their time: the experiment goes on as written. The operator's
//! own faults on processes, services and messages (the fault menu of `harness run --tui`) go
//! through the timeline too ([`Act`]), which owns the environment until the load ends.
//!
//! Healing always happens, like Chaos Toolkit's rollbacks: each fault when its time is up, and
//! everything at the end of the timeline ([`Faultable::heal_all`]: every proxy reset,
//! every paused process resumed, every stopped one restarted, every service back at the
//! instance count it started with), whether the timeline completed or failed half-way. An
//! interrupted run (Ctrl-C, [`run_until`]) applies nothing more and heals what is active at
//! once, before its checks and its teardown.
//!
//! # Layout
//! - this module: the [`Schedule`], the phases it defines, and [`run`].
//! - [`target`]: what a target names.

pub mod target;

use std::time::{Duration, Instant};

use anyhow::Context;
use chaos::{Stream, Toxic, ToxicAttributes};
use serde::{Deserialize, Serialize};

use crate::environment::{Instances, Service};
use crate::metrics::PhaseSpan;
use crate::report::ChaosWindow;
use crate::scenario::{ChaosEntry, Direction, Fault, Scenario};

use self::target::Target;

/// Phase of the load before the first fault.
pub const BEFORE: &str = "before";
/// Phase of the load after the last fault healed.
pub const AFTER: &str = "after";

/// The phase of a fault's window: `during:<label>`.
pub fn during(label: &str) -> String {
    format!("during:{label}")
}

/// One fault of the timeline, with its times resolved.
#[derive(Debug, Clone)]
pub struct Planned {
    pub label: String,
    pub at: Duration,
    /// When it heals, from the start of the load.
    pub until: Duration,
    pub target: Target,
    pub entry: ChaosEntry,
}

impl Planned {
    /// A validated entry of a timeline whose load ends at `load_end`.
    pub fn new(entry: ChaosEntry, load_end: Duration) -> anyhow::Result<Self> {
        let target: Target = entry
            .target
            .get_ref()
            .parse()
            .map_err(|m: String| anyhow::anyhow!(m))?;
        let at = entry.at.get_ref().as_std();
        let until = entry
            .duration
            .as_ref()
            .map_or(load_end, |d| at + d.get_ref().as_std())
            .min(load_end);
        Ok(Self {
            label: entry.label(),
            at,
            until,
            target,
            entry,
        })
    }
}

/// A scenario's chaos timeline.
#[derive(Debug, Clone, Default)]
pub struct Schedule {
    pub faults: Vec<Planned>,
    /// When the load ends, from its start.
    pub load_end: Duration,
}

impl Schedule {
    /// The timeline of a validated scenario. Labels are made unique (`latency gateway->order`,
    /// `latency gateway->order (2)`), so each fault has its own phase.
    pub fn of(scenario: &Scenario) -> anyhow::Result<Self> {
        let load_end = scenario.load.get_ref().plan().total_duration();
        let mut faults: Vec<Planned> = Vec::new();
        for e in &scenario.chaos {
            let mut planned = Planned::new(e.get_ref().clone(), load_end)?;
            let mut n = 1;
            while faults.iter().any(|f| f.label == planned.label) {
                n += 1;
                planned.label = format!("{} ({n})", planned.entry.label());
            }
            faults.push(planned);
        }
        faults.sort_by_key(|f| f.at);
        Ok(Self { faults, load_end })
    }

    pub fn is_empty(&self) -> bool {
        self.faults.is_empty()
    }

    /// The phases samples are recorded in besides `all`: `before` the first fault, `during:<label>`
    /// of each fault, `after` the last one healed (to the end of the follow-up).
    pub fn phases(&self) -> Vec<PhaseSpan> {
        let Some(first) = self.faults.iter().map(|f| f.at).min() else {
            return Vec::new();
        };
        let last = self.faults.iter().map(|f| f.until).max().unwrap_or(first);
        let mut spans = vec![PhaseSpan {
            name: BEFORE.into(),
            start: Duration::ZERO,
            end: first,
        }];
        spans.extend(self.faults.iter().map(|f| PhaseSpan {
            name: during(&f.label),
            start: f.at,
            end: f.until,
        }));
        spans.push(PhaseSpan {
            name: AFTER.into(),
            start: last,
            end: Duration::MAX,
        });
        spans
    }
}

/// A message-level fault as the embedded broker's control API takes it (its
/// `embedded_broker::faults::MessageFault`, the same JSON). The harness keeps its own copy of the
/// type: linking the broker's library would link tansu's SQLite next to sqlx's, and the two
/// define the same C symbols.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum MessageFault {
    /// Produce acknowledgements lost (and the connection reset) with `probability`.
    LostAck { probability: f64 },
    /// `topic`'s `partition` reaches consumers `delay_ms` late.
    Delay {
        topic: String,
        partition: i32,
        delay_ms: u64,
    },
    /// Fetched batches of `topic` (every topic when absent) published again with `probability`.
    Duplicate {
        #[serde(skip_serializing_if = "Option::is_none")]
        topic: Option<String>,
        probability: f64,
    },
}

/// What faults act on: a running environment's links (through a Toxiproxy API) and processes.
/// Every [`crate::environment::Environment`] is one; `harness chaos` drives a `harness up`
/// through its env file ([`crate::control::Remote`]).
#[async_trait::async_trait]
pub trait Faultable: Send {
    /// The names of the links (`client->gateway`, ...).
    fn link_names(&self) -> Vec<String>;
    /// The names of the processes (`broker`, `order#1`, ...).
    fn process_names(&self) -> Vec<String>;
    fn chaos_client(&self) -> anyhow::Result<chaos::Client>;
    async fn kill(&mut self, name: &str) -> anyhow::Result<()>;
    async fn pause(&mut self, name: &str) -> anyhow::Result<()>;
    async fn resume(&mut self, name: &str) -> anyhow::Result<()>;
    async fn stop_instance(&mut self, name: &str) -> anyhow::Result<()>;
    async fn restart(&mut self, name: &str) -> anyhow::Result<()>;
    /// Cuts the instance off the network (a backend without networks of its own says so).
    async fn disconnect(&mut self, name: &str) -> anyhow::Result<()>;
    /// Connects a disconnected instance again.
    async fn reconnect(&mut self, name: &str) -> anyhow::Result<()>;
    /// Every proxy reset, every process running and not paused, every service back at the
    /// instance count the environment started with ([`restore_instances`]).
    async fn heal_all(&mut self) -> anyhow::Result<()>;
    /// Runs `count` instances of `service` (1 to [`Instances::MAX`]): new ones start like those
    /// started with the environment and join the gateway's rotation once ready; the
    /// highest-numbered leave the rotation first, then stop gracefully.
    async fn scale(&mut self, service: Service, count: usize) -> anyhow::Result<()>;

    /// Sets the message-level fault `id` on the broker's fronts of `links` (links to the broker,
    /// `order#1->kafka`), replacing one of the same id. Backends without the embedded broker's
    /// fronts say they cannot.
    async fn set_message_fault(
        &mut self,
        id: &str,
        links: &[String],
        fault: &MessageFault,
    ) -> anyhow::Result<()> {
        let _ = (id, links);
        anyhow::bail!(
            "{fault:?}: message faults are not supported on this backend yet; they need the \
             embedded broker's fronts (backend = \"local\")"
        )
    }

    /// Clears the message-level fault `id`.
    async fn clear_message_fault(&mut self, id: &str) -> anyhow::Result<()> {
        anyhow::bail!("{id}: message faults are not supported on this backend yet")
    }

    /// Publishes `messages` malformed messages onto `topic` (onto `partition`, or spread over
    /// every partition); returns what it published, for the report.
    async fn publish_poison(
        &mut self,
        topic: &str,
        partition: Option<i32>,
        messages: u64,
    ) -> anyhow::Result<Vec<String>> {
        let _ = (partition, messages);
        anyhow::bail!("poison onto {topic}: not supported on this backend yet")
    }

    /// How many instances of `service` there are (running or not: a killed one still counts).
    fn instance_count(&self, service: Service) -> usize {
        let prefix = format!("{service}#");
        self.process_names()
            .iter()
            .filter(|p| p.starts_with(&prefix))
            .count()
    }

    /// The instance count of every service.
    fn instances(&self) -> Instances {
        let mut counts = Instances::default();
        for service in Service::ALL {
            counts.set(service, self.instance_count(service));
        }
        counts
    }
}

/// Scales every service whose instance count is not `started` back to it: the part of
/// [`Faultable::heal_all`] that undoes scale faults (also one whose own heal never ran, the
/// timeline having failed half-way, or a `harness chaos scale` of a game day). Tries every
/// service even when one fails, and reports the first failure.
pub async fn restore_instances(
    env: &mut (impl Faultable + ?Sized),
    started: Instances,
) -> anyhow::Result<()> {
    let mut first_error = None;
    for service in Service::ALL {
        let (now, then) = (env.instance_count(service), started.of(service));
        if now != then
            && let Err(e) = env.scale(service, then).await
        {
            first_error.get_or_insert(e.context(format!(
                "scaling {service} back from {now} to the {then} instances it started with"
            )));
        }
    }
    first_error.map_or(Ok(()), Err)
}

/// What one fault did: what to heal, and what the report says.
pub struct Applied {
    planned: usize,
    /// From the start of the load.
    applied: Duration,
    /// The links or processes it acted on.
    pub what: Vec<String>,
    /// Toxic names per link, to remove them again.
    toxics: Vec<(String, String)>,
    disabled: Vec<String>,
    /// Processes signalled, to heal.
    processes: Vec<String>,
    /// A scaled service and the count it had, to go back to.
    scaled: Option<(Service, usize)>,
    /// The id of a message fault set on the broker, to clear.
    message_fault: Option<String>,
}

impl Applied {
    /// `label`, then what the fault reached when the label does not already name it: "slow
    /// payment (gateway->payment#1, gateway->payment#2)", but "kill order#1".
    pub fn describe(&self, label: &str) -> String {
        let what = self.what.join(", ");
        if what.is_empty() || label.ends_with(&what) {
            label.to_string()
        } else {
            format!("{label} ({what})")
        }
    }
}

/// Runs the timeline against `env`, starting at `t0` (the start of the load), until every fault
/// healed, then heals everything. Returns the chaos windows as they happened. A fault that
/// cannot be applied is an error: the experiment would not be the one the scenario describes.
pub async fn run(
    schedule: &Schedule,
    env: &mut (impl Faultable + ?Sized),
    t0: Instant,
) -> anyhow::Result<Vec<ChaosWindow>> {
    run_until(
        schedule,
        env,
        t0,
        &tokio_util::sync::CancellationToken::new(),
    )
    .await
}

/// [`run`], cut short when `stop` is cancelled (an interrupted run): no fault is applied after
/// it, the active ones are healed at once (their windows end then), then everything is.
pub async fn run_until(
    schedule: &Schedule,
    env: &mut (impl Faultable + ?Sized),
    t0: Instant,
    stop: &tokio_util::sync::CancellationToken,
) -> anyhow::Result<Vec<ChaosWindow>> {
    run_with(schedule, env, t0, stop, None).await
}

/// What an operator asks of a running timeline, which owns the environment while the load runs.
#[derive(Debug)]
pub enum Request {
    /// Heal the timeline's own active faults now.
    Heal(HealRequest),
    /// Act on the environment for the operator's own fault (`harness run --tui`'s fault menu):
    /// the timeline does it between its own events, so the two never touch a process at once.
    Act(ActRequest),
}

/// One action on the environment for a fault an operator injects by hand, or heals.
#[derive(Debug, Clone, PartialEq)]
pub enum Act {
    Kill(String),
    Pause(String),
    Resume(String),
    Stop(String),
    Restart(String),
    Disconnect(String),
    Reconnect(String),
    Scale(Service, usize),
    SetMessageFault {
        id: String,
        links: Vec<String>,
        fault: MessageFault,
    },
    ClearMessageFault(String),
    Poison {
        topic: String,
        partition: Option<i32>,
        messages: u64,
    },
}

impl Act {
    /// Whether it undoes a fault: once the timeline is over (the load's end healed everything),
    /// there is nothing left for it to do.
    pub fn heals(&self) -> bool {
        matches!(
            self,
            Act::Resume(_) | Act::Restart(_) | Act::Reconnect(_) | Act::ClearMessageFault(_)
        )
    }

    /// Does it to `env`; what it published, for a poison.
    pub async fn on(self, env: &mut (impl Faultable + ?Sized)) -> anyhow::Result<Vec<String>> {
        match self {
            Act::Kill(name) => env.kill(&name).await,
            Act::Pause(name) => env.pause(&name).await,
            Act::Resume(name) => env.resume(&name).await,
            Act::Stop(name) => env.stop_instance(&name).await,
            Act::Restart(name) => env.restart(&name).await,
            Act::Disconnect(name) => env.disconnect(&name).await,
            Act::Reconnect(name) => env.reconnect(&name).await,
            Act::Scale(service, count) => env.scale(service, count).await,
            Act::SetMessageFault { id, links, fault } => {
                env.set_message_fault(&id, &links, &fault).await
            }
            Act::ClearMessageFault(id) => env.clear_message_fault(&id).await,
            Act::Poison {
                topic,
                partition,
                messages,
            } => return env.publish_poison(&topic, partition, messages).await,
        }
        .map(|()| Vec::new())
    }
}

/// An [`Act`] and where its outcome goes.
#[derive(Debug)]
pub struct ActRequest {
    pub act: Act,
    pub reply: tokio::sync::oneshot::Sender<anyhow::Result<Vec<String>>>,
}

/// Heal a running timeline's active faults now, those `target`
/// names (a link, process or service, as `harness chaos heal` takes it) or, without one, every
/// one of them and then everything ([`Faultable::heal_all`]).
#[derive(Debug)]
pub struct HealRequest {
    pub target: Option<String>,
    /// The faults healed, or why not.
    pub reply: tokio::sync::oneshot::Sender<anyhow::Result<Vec<HealedByHand>>>,
}

/// A fault of the timeline an operator healed before its time.
#[derive(Debug, Clone, PartialEq)]
pub struct HealedByHand {
    /// Its index in the [`Schedule`].
    pub index: usize,
    pub label: String,
    /// When, from the start of the load.
    pub at: Duration,
}

/// [`run_until`], also doing what `requests` ask for while it runs. The timeline owns the
/// environment while the load runs, so an operator's heal goes through it (it knows which of its
/// faults are active, and their scheduled heal must then find nothing left to do), and so do the
/// operator's own faults on instances, services and messages ([`Act`]). With `requests` it
/// serves them until the load ends (`schedule.load_end`), past its own last fault: an operator
/// may break something in the `after` phase too, or in a scenario without a timeline.
pub async fn run_with(
    schedule: &Schedule,
    env: &mut (impl Faultable + ?Sized),
    t0: Instant,
    stop: &tokio_util::sync::CancellationToken,
    requests: Option<tokio::sync::mpsc::Receiver<Request>>,
) -> anyhow::Result<Vec<ChaosWindow>> {
    let result = timeline(schedule, env, t0, stop, requests).await;
    let healed = env.heal_all().await;
    let windows = result?;
    healed?;
    Ok(windows)
}

/// The next request, or never once there are none (no operator, or the operator gone).
async fn next_request(requests: &mut Option<tokio::sync::mpsc::Receiver<Request>>) -> Request {
    if let Some(rx) = requests {
        if let Some(request) = rx.recv().await {
            return request;
        }
        *requests = None;
    }
    std::future::pending().await
}

async fn timeline(
    schedule: &Schedule,
    env: &mut (impl Faultable + ?Sized),
    t0: Instant,
    stop: &tokio_util::sync::CancellationToken,
    mut requests: Option<tokio::sync::mpsc::Receiver<Request>>,
) -> anyhow::Result<Vec<ChaosWindow>> {
    // Events in time order: (when, planned index, apply?). Heals sort before applies at the
    // same instant, so back-to-back faults on one target do not overlap.
    let mut events: Vec<(Duration, usize, bool)> = Vec::new();
    for (i, f) in schedule.faults.iter().enumerate() {
        events.push((f.at, i, true));
        events.push((f.until, i, false));
    }
    events.sort_by_key(|(t, i, apply)| (*t, *apply, *i));
    let mut active: Vec<Applied> = Vec::new();
    let mut windows = Vec::new();
    'events: for (at, i, apply) in events {
        loop {
            tokio::select! {
                () = tokio::time::sleep_until((t0 + at).into()) => break,
                () = stop.cancelled() => break 'events,
                request = next_request(&mut requests) => {
                    serve(schedule, env, t0, &mut active, &mut windows, request).await;
                }
            }
        }
        let planned = &schedule.faults[i];
        if apply {
            let applied = apply_fault(env, planned, i, t0.elapsed()).await?;
            println!(
                "chaos: {:>6.1}s applied {}",
                applied.applied.as_secs_f64(),
                applied.describe(&planned.label)
            );
            active.push(applied);
        } else if let Some(pos) = active.iter().position(|a| a.planned == i) {
            let applied = active.remove(pos);
            heal_fault(env, planned, &applied).await?;
            let healed = t0.elapsed();
            println!(
                "chaos: {:>6.1}s healed  {}",
                healed.as_secs_f64(),
                planned.label
            );
            windows.push(window(planned, &applied, healed));
        }
    }
    // The operator's hands stay on the environment until the load ends.
    if requests.is_some() {
        loop {
            tokio::select! {
                () = tokio::time::sleep_until((t0 + schedule.load_end).into()) => break,
                () = stop.cancelled() => break,
                request = next_request(&mut requests) => {
                    serve(schedule, env, t0, &mut active, &mut windows, request).await;
                }
            }
        }
    }
    // Interrupted: what is still active heals now.
    for applied in std::mem::take(&mut active) {
        let planned = &schedule.faults[applied.planned];
        heal_fault(env, planned, &applied).await?;
        let healed = t0.elapsed();
        println!(
            "chaos: {:>6.1}s healed  {} (interrupted)",
            healed.as_secs_f64(),
            planned.label
        );
        windows.push(window(planned, &applied, healed));
    }
    Ok(windows)
}

/// Does what an operator asked, and answers (the operator may have gone meanwhile: what was done
/// stands).
async fn serve(
    schedule: &Schedule,
    env: &mut (impl Faultable + ?Sized),
    t0: Instant,
    active: &mut Vec<Applied>,
    windows: &mut Vec<ChaosWindow>,
    request: Request,
) {
    match request {
        Request::Heal(request) => {
            let healed = heal_by_hand(schedule, env, t0, active, windows, request.target).await;
            let _ = request.reply.send(healed);
        }
        Request::Act(request) => {
            let _ = request.reply.send(request.act.on(env).await);
        }
    }
}

/// Heals the active faults `target` names (every one without a target, then everything) now,
/// for an operator: each one's window ends now, marked healed by hand. A fault whose heal
/// fails stays active, so its scheduled heal tries again; the first failure is returned after
/// the others were tried.
async fn heal_by_hand(
    schedule: &Schedule,
    env: &mut (impl Faultable + ?Sized),
    t0: Instant,
    active: &mut Vec<Applied>,
    windows: &mut Vec<ChaosWindow>,
    target: Option<String>,
) -> anyhow::Result<Vec<HealedByHand>> {
    // A name no target can parse (a process such as `chaos-proxy`) names itself only.
    let picks = target.as_ref().map(|t| (t, t.parse::<Target>().ok()));
    let (picked, rest): (Vec<Applied>, Vec<Applied>) =
        std::mem::take(active).into_iter().partition(|a| {
            picks.as_ref().is_none_or(|(name, parsed)| match parsed {
                Some(t) => names_any(t, &a.what),
                None => a.what.contains(name),
            })
        });
    *active = rest;
    let mut healed = Vec::new();
    let mut first_error: Option<anyhow::Error> = None;
    for applied in picked {
        let planned = &schedule.faults[applied.planned];
        match heal_fault(env, planned, &applied).await {
            Ok(()) => {
                let at = t0.elapsed();
                println!(
                    "chaos: {:>6.1}s healed  {} (by hand, planned until {:.0}s)",
                    at.as_secs_f64(),
                    planned.label,
                    planned.until.as_secs_f64()
                );
                windows.push(ChaosWindow {
                    healed_by_hand: true,
                    ..window(planned, &applied, at)
                });
                healed.push(HealedByHand {
                    index: applied.planned,
                    label: planned.label.clone(),
                    at,
                });
            }
            Err(e) => {
                first_error.get_or_insert(e.context(format!("healing {}", planned.label)));
                active.push(applied);
            }
        }
    }
    if target.is_none()
        && let Err(e) = env.heal_all().await
    {
        first_error.get_or_insert(e.context("healing everything"));
    }
    first_error.map_or(Ok(healed), Err)
}

/// Whether `target` names one of the links or processes in `what`.
fn names_any(target: &Target, what: &[String]) -> bool {
    what.iter().any(|w| {
        let one = [w.as_str()];
        !target.links(one).is_empty() || !target.processes(one).is_empty()
    })
}

fn window(planned: &Planned, applied: &Applied, healed: Duration) -> ChaosWindow {
    ChaosWindow {
        start_s: applied.applied.as_secs_f64(),
        end_s: healed.as_secs_f64(),
        label: planned.label.clone(),
        fault: planned.entry.fault.get_ref().name().to_string(),
        target: planned.entry.target.get_ref().clone(),
        affected: applied.what.clone(),
        planned_start_s: planned.at.as_secs_f64(),
        planned_end_s: planned.until.as_secs_f64(),
        healed_by_hand: false,
    }
}

/// Applies one fault now; `index` makes its toxic names unique.
pub async fn apply_fault(
    env: &mut (impl Faultable + ?Sized),
    planned: &Planned,
    index: usize,
    now: Duration,
) -> anyhow::Result<Applied> {
    let fault = *planned.entry.fault.get_ref();
    let mut applied = Applied {
        planned: index,
        applied: now,
        what: Vec::new(),
        toxics: Vec::new(),
        disabled: Vec::new(),
        processes: Vec::new(),
        scaled: None,
        message_fault: None,
    };
    if fault == Fault::Scale {
        return scale(env, planned, applied).await;
    }
    if fault.on_messages() {
        return messages(env, planned, index, applied).await;
    }
    if fault.on_instances() {
        let names = env.process_names();
        let targets = planned.target.processes(names.iter().map(String::as_str));
        anyhow::ensure!(
            !targets.is_empty(),
            "{}: no process matches {}",
            planned.label,
            planned.entry.target.get_ref()
        );
        for name in targets {
            match fault {
                Fault::Kill => env.kill(&name).await?,
                Fault::Pause => env.pause(&name).await?,
                Fault::Stop => env.stop_instance(&name).await?,
                Fault::Disconnect => env.disconnect(&name).await?,
                _ => unreachable!("instance faults only"),
            }
            applied.what.push(name.clone());
            applied.processes.push(name);
        }
        return Ok(applied);
    }
    let names = env.link_names();
    let links = planned.target.links(names.iter().map(String::as_str));
    anyhow::ensure!(
        !links.is_empty(),
        "{}: no link matches {}",
        planned.label,
        planned.entry.target.get_ref()
    );
    let client = env.chaos_client()?;
    for link in links {
        if fault == Fault::Partition {
            client.set_enabled(&link, false).await?;
            applied.disabled.push(link.clone());
        } else {
            for toxic in toxics(planned, index) {
                let name = toxic.name.clone();
                client.add_toxic(&link, &toxic).await?;
                applied.toxics.push((link.clone(), name));
            }
        }
        applied.what.push(link);
    }
    Ok(applied)
}

/// A scale fault: the service to `instances`; what it acted on are the instances it added or
/// removed.
async fn scale(
    env: &mut (impl Faultable + ?Sized),
    planned: &Planned,
    mut applied: Applied,
) -> anyhow::Result<Applied> {
    let service = planned.target.service().with_context(|| {
        format!(
            "{}: scale acts on a service, and {} is not one",
            planned.label,
            planned.entry.target.get_ref()
        )
    })?;
    let to = planned
        .entry
        .instances
        .as_ref()
        .map(|n| usize::try_from(*n.get_ref()).unwrap_or(usize::MAX))
        .with_context(|| format!("{}: scale needs instances", planned.label))?;
    let from = env.instance_count(service);
    env.scale(service, to).await?;
    applied.what = (from.min(to) + 1..=from.max(to))
        .map(|n| format!("{service}#{n}"))
        .collect();
    applied.scaled = Some((service, from));
    Ok(applied)
}

/// A message fault: set on the fronts of the targeted links to the broker, or, for poison,
/// published now.
async fn messages(
    env: &mut (impl Faultable + ?Sized),
    planned: &Planned,
    index: usize,
    mut applied: Applied,
) -> anyhow::Result<Applied> {
    let e = &planned.entry;
    let fault = *e.fault.get_ref();
    let topic = e.topic.as_ref().map(|t| t.get_ref().clone());
    let partition = e
        .partition
        .as_ref()
        .map(|p| i32::try_from(*p.get_ref()).unwrap_or(i32::MAX));
    if fault == Fault::Poison {
        let topic = topic.with_context(|| format!("{}: poison needs a topic", planned.label))?;
        let messages = e.messages.as_ref().map_or(1, |n| *n.get_ref());
        applied.what = env.publish_poison(&topic, partition, messages).await?;
        return Ok(applied);
    }
    let probability = e.probability.as_ref().map_or(1.0, |p| *p.get_ref());
    let message_fault = match fault {
        Fault::Duplicate => MessageFault::Duplicate { topic, probability },
        Fault::LostAck => MessageFault::LostAck { probability },
        Fault::Delay => MessageFault::Delay {
            topic: topic.with_context(|| format!("{}: delay needs a topic", planned.label))?,
            partition: partition
                .with_context(|| format!("{}: delay needs a partition", planned.label))?,
            delay_ms: e.delay.as_ref().map_or(0, |d| {
                u64::try_from(d.get_ref().as_std().as_millis()).unwrap_or(u64::MAX)
            }),
        },
        _ => unreachable!("message faults only"),
    };
    let names = env.link_names();
    let links: Vec<String> = planned
        .target
        .links(names.iter().map(String::as_str))
        .into_iter()
        .filter(|l| l.ends_with("->kafka"))
        .collect();
    anyhow::ensure!(
        !links.is_empty(),
        "{}: no link to the broker matches {}",
        planned.label,
        e.target.get_ref()
    );
    let id = format!("chaos{index}-{}", fault.name());
    env.set_message_fault(&id, &links, &message_fault).await?;
    applied.what = links;
    applied.message_fault = Some(id);
    Ok(applied)
}

/// Heals one fault [`apply_fault`] applied.
pub async fn heal_fault(
    env: &mut (impl Faultable + ?Sized),
    planned: &Planned,
    applied: &Applied,
) -> anyhow::Result<()> {
    if let Some((service, count)) = applied.scaled {
        env.scale(service, count).await?;
    }
    if let Some(id) = &applied.message_fault {
        env.clear_message_fault(id).await?;
    }
    if !applied.toxics.is_empty() || !applied.disabled.is_empty() {
        let client = env.chaos_client()?;
        for (link, toxic) in &applied.toxics {
            client.remove_toxic(link, toxic).await?;
        }
        for link in &applied.disabled {
            client.set_enabled(link, true).await?;
        }
    }
    for name in &applied.processes {
        match *planned.entry.fault.get_ref() {
            Fault::Pause => env.resume(name).await?,
            Fault::Disconnect => env.reconnect(name).await?,
            _ => env.restart(name).await?,
        }
    }
    Ok(())
}

/// The toxics of a link fault: one per stream its direction covers.
fn toxics(planned: &Planned, index: usize) -> Vec<Toxic> {
    let e = &planned.entry;
    let ms = |d: &Option<toml::Spanned<crate::scenario::HumanDuration>>| {
        d.as_ref().map_or(0, |d| {
            u64::try_from(d.get_ref().as_std().as_millis()).unwrap_or(u64::MAX)
        })
    };
    let n = |v: &Option<toml::Spanned<u64>>| v.as_ref().map_or(0, |v| *v.get_ref());
    let attributes = match *e.fault.get_ref() {
        Fault::Latency => ToxicAttributes::Latency {
            latency: ms(&e.latency),
            jitter: ms(&e.jitter),
        },
        Fault::Bandwidth => ToxicAttributes::Bandwidth {
            rate: n(&e.rate_kbps),
        },
        Fault::SlowClose => ToxicAttributes::SlowClose {
            delay: ms(&e.delay),
        },
        Fault::Timeout => ToxicAttributes::Timeout {
            timeout: ms(&e.timeout),
        },
        Fault::ResetPeer => ToxicAttributes::ResetPeer {
            timeout: ms(&e.timeout),
        },
        Fault::Slicer => ToxicAttributes::Slicer {
            average_size: n(&e.average_size),
            size_variation: n(&e.size_variation),
            delay: e.delay.as_ref().map_or(0, |d| {
                u64::try_from(d.get_ref().as_std().as_micros()).unwrap_or(u64::MAX)
            }),
        },
        Fault::LimitData => ToxicAttributes::LimitData { bytes: n(&e.bytes) },
        Fault::Partition
        | Fault::Kill
        | Fault::Pause
        | Fault::Stop
        | Fault::Disconnect
        | Fault::Scale
        | Fault::Duplicate
        | Fault::LostAck
        | Fault::Delay
        | Fault::Poison => {
            return Vec::new();
        }
    };
    let streams: &[Stream] = match e.direction.as_ref().map(|d| *d.get_ref()) {
        None | Some(Direction::Downstream) => &[Stream::Downstream],
        Some(Direction::Upstream) => &[Stream::Upstream],
        Some(Direction::Both) => &[Stream::Upstream, Stream::Downstream],
    };
    let toxicity = e.toxicity.as_ref().map_or(1.0, |t| *t.get_ref() as f32);
    streams
        .iter()
        .map(|stream| Toxic {
            name: format!(
                "chaos{index}-{}-{}",
                e.fault.get_ref().name(),
                stream.as_str()
            ),
            stream: *stream,
            toxicity,
            attributes: attributes.clone(),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scenario(chaos: &str) -> Scenario {
        let text = format!(
            "description = \"d\"\n[environment]\ninstances = {{ order = 2 }}\n[load]\nusers = 2\nduration = \"60s\"\n[[load.journeys]]\nname = \"browse_catalog\"\nweight = 1\n{chaos}"
        );
        let s = Scenario::from_toml(std::path::Path::new("t.toml"), &text).unwrap();
        s.validate().unwrap();
        s
    }

    fn applied_to(what: &[&str]) -> Applied {
        Applied {
            planned: 0,
            applied: Duration::ZERO,
            what: what.iter().map(|w| w.to_string()).collect(),
            toxics: Vec::new(),
            disabled: Vec::new(),
            processes: Vec::new(),
            scaled: None,
            message_fault: None,
        }
    }

    #[test]
    fn a_fault_is_described_by_its_label_and_what_it_reached_only_when_that_says_more() {
        assert_eq!(
            applied_to(&["order#1"]).describe("kill order#1"),
            "kill order#1"
        );
        assert_eq!(
            applied_to(&["gateway->payment#1"]).describe("latency gateway->payment#1"),
            "latency gateway->payment#1"
        );
        assert_eq!(
            applied_to(&["gateway->payment#1", "gateway->payment#2"]).describe("slow payment"),
            "slow payment (gateway->payment#1, gateway->payment#2)"
        );
    }

    #[test]
    fn phases_cover_before_each_fault_and_after() {
        let s = scenario(
            "[[chaos]]\nat = \"10s\"\nfor = \"5s\"\ntarget = \"order#1\"\nfault = \"kill\"\n\
             [[chaos]]\nat = \"20s\"\nfor = \"10s\"\ntarget = \"gateway->payment\"\nfault = \"latency\"\nlatency = \"100ms\"\n\
             [[chaos]]\nat = \"40s\"\ntarget = \"gateway->payment\"\nfault = \"latency\"\nlatency = \"100ms\"\n",
        );
        let schedule = Schedule::of(&s).unwrap();
        let spans = schedule.phases();
        let names: Vec<&str> = spans.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "before",
                "during:kill order#1",
                "during:latency gateway->payment",
                "during:latency gateway->payment (2)",
                "after"
            ]
        );
        assert_eq!(spans[0].end, Duration::from_secs(10));
        assert_eq!(spans[1].end, Duration::from_secs(15));
        // Without `for`, a fault lasts until the load ends.
        assert_eq!(spans[3].end, Duration::from_secs(60));
        assert_eq!(spans[4].start, Duration::from_secs(60));
    }

    /// Instances only, counted per service (now, and as the environment started); every other
    /// action is refused.
    struct Counts(Instances, Instances);

    impl Counts {
        fn started(instances: Instances) -> Self {
            Self(instances, instances)
        }
    }

    #[async_trait::async_trait]
    impl Faultable for Counts {
        fn link_names(&self) -> Vec<String> {
            Vec::new()
        }
        fn process_names(&self) -> Vec<String> {
            Service::ALL
                .iter()
                .flat_map(|s| (1..=self.0.of(*s)).map(move |n| format!("{s}#{n}")))
                .collect()
        }
        fn chaos_client(&self) -> anyhow::Result<chaos::Client> {
            anyhow::bail!("no proxies")
        }
        async fn kill(&mut self, _: &str) -> anyhow::Result<()> {
            anyhow::bail!("no")
        }
        async fn pause(&mut self, _: &str) -> anyhow::Result<()> {
            anyhow::bail!("no")
        }
        async fn resume(&mut self, _: &str) -> anyhow::Result<()> {
            anyhow::bail!("no")
        }
        async fn stop_instance(&mut self, _: &str) -> anyhow::Result<()> {
            anyhow::bail!("no")
        }
        async fn restart(&mut self, _: &str) -> anyhow::Result<()> {
            anyhow::bail!("no")
        }
        async fn disconnect(&mut self, _: &str) -> anyhow::Result<()> {
            anyhow::bail!("no")
        }
        async fn reconnect(&mut self, _: &str) -> anyhow::Result<()> {
            anyhow::bail!("no")
        }
        async fn heal_all(&mut self) -> anyhow::Result<()> {
            let started = self.1;
            restore_instances(self, started).await
        }
        async fn scale(&mut self, service: Service, count: usize) -> anyhow::Result<()> {
            self.0.set(service, count);
            Ok(())
        }
    }

    #[tokio::test]
    async fn a_scale_fault_scales_the_service_and_its_heal_goes_back() {
        let s = scenario(
            "[[chaos]]\nat = \"1s\"\nfor = \"5s\"\ntarget = \"order\"\nfault = \"scale\"\ninstances = 4\n",
        );
        let schedule = Schedule::of(&s).unwrap();
        let planned = &schedule.faults[0];
        let mut env = Counts::started(s.environment.instances.to_instances());
        assert_eq!(env.instance_count(Service::Order), 2);
        let applied = apply_fault(&mut env, planned, 0, Duration::ZERO)
            .await
            .unwrap();
        assert_eq!(env.instances().order, 4);
        assert_eq!(applied.what, ["order#3", "order#4"]);
        heal_fault(&mut env, planned, &applied).await.unwrap();
        assert_eq!(env.instances(), s.environment.instances.to_instances());
    }

    #[tokio::test]
    async fn heal_all_scales_every_service_back_to_the_count_it_started_with() {
        // Scaled up by a fault whose own heal never ran, and down by hand during a game day.
        let s = scenario(
            "[[chaos]]\nat = \"1s\"\nfor = \"5s\"\ntarget = \"order\"\nfault = \"scale\"\ninstances = 4\n",
        );
        let schedule = Schedule::of(&s).unwrap();
        let started = s.environment.instances.to_instances();
        let mut env = Counts::started(started);
        apply_fault(&mut env, &schedule.faults[0], 0, Duration::ZERO)
            .await
            .unwrap();
        env.scale(Service::Payment, 1).await.unwrap();
        assert_ne!(env.instances(), started);
        env.heal_all().await.unwrap();
        assert_eq!(env.instances(), started);
    }

    /// Two order instances whose faults are written down, in order.
    #[derive(Default)]
    struct Journal(std::sync::Arc<std::sync::Mutex<Vec<String>>>);

    impl Journal {
        fn note(&self, what: String) -> anyhow::Result<()> {
            self.0.lock().unwrap().push(what);
            Ok(())
        }
    }

    #[async_trait::async_trait]
    impl Faultable for Journal {
        fn link_names(&self) -> Vec<String> {
            vec!["gateway->order#1".into(), "gateway->order#2".into()]
        }
        fn process_names(&self) -> Vec<String> {
            vec!["order#1".into(), "order#2".into()]
        }
        fn chaos_client(&self) -> anyhow::Result<chaos::Client> {
            anyhow::bail!("no proxies")
        }
        async fn kill(&mut self, name: &str) -> anyhow::Result<()> {
            self.note(format!("kill {name}"))
        }
        async fn pause(&mut self, name: &str) -> anyhow::Result<()> {
            self.note(format!("pause {name}"))
        }
        async fn resume(&mut self, name: &str) -> anyhow::Result<()> {
            self.note(format!("resume {name}"))
        }
        async fn stop_instance(&mut self, name: &str) -> anyhow::Result<()> {
            self.note(format!("stop {name}"))
        }
        async fn restart(&mut self, name: &str) -> anyhow::Result<()> {
            self.note(format!("restart {name}"))
        }
        async fn disconnect(&mut self, _: &str) -> anyhow::Result<()> {
            anyhow::bail!("no")
        }
        async fn reconnect(&mut self, _: &str) -> anyhow::Result<()> {
            anyhow::bail!("no")
        }
        async fn heal_all(&mut self) -> anyhow::Result<()> {
            self.note("heal all".into())
        }
        async fn scale(&mut self, service: Service, count: usize) -> anyhow::Result<()> {
            self.note(format!("scale {service} to {count}"))
        }
    }

    async fn ask(
        tx: &tokio::sync::mpsc::Sender<Request>,
        target: Option<&str>,
    ) -> anyhow::Result<Vec<HealedByHand>> {
        let (reply, answer) = tokio::sync::oneshot::channel();
        let target = target.map(str::to_string);
        tx.send(Request::Heal(HealRequest { target, reply }))
            .await
            .unwrap();
        answer.await.unwrap()
    }

    async fn act(tx: &tokio::sync::mpsc::Sender<Request>, act: Act) -> anyhow::Result<Vec<String>> {
        let (reply, answer) = tokio::sync::oneshot::channel();
        tx.send(Request::Act(ActRequest { act, reply }))
            .await
            .map_err(|_| anyhow::anyhow!("the timeline is over"))?;
        answer.await?
    }

    #[tokio::test]
    async fn an_operators_own_faults_go_through_the_timeline_until_the_load_ends() {
        let s = scenario(
            "[[chaos]]\nat = \"0s\"\nfor = \"100ms\"\ntarget = \"order#2\"\nfault = \"pause\"\n",
        );
        let mut schedule = Schedule::of(&s).unwrap();
        schedule.load_end = Duration::from_millis(800);
        let journal = Journal::default();
        let notes = std::sync::Arc::clone(&journal.0);
        let mut env = journal;
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        let stop = tokio_util::sync::CancellationToken::new();
        let operator = async {
            // Past the timeline's last fault, in the `after` phase.
            tokio::time::sleep(Duration::from_millis(300)).await;
            let kill = act(&tx, Act::Kill("order#1".into())).await;
            let scale = act(&tx, Act::Scale(Service::Order, 3)).await;
            let refused = act(&tx, Act::Disconnect("order#1".into())).await;
            let restart = act(&tx, Act::Restart("order#1".into())).await;
            // The load is over: the timeline healed everything and hears no more.
            tokio::time::sleep(Duration::from_millis(800)).await;
            let late = act(&tx, Act::Kill("order#2".into())).await;
            (kill, scale, refused, restart, late)
        };
        let (windows, (kill, scale, refused, restart, late)) = tokio::join!(
            run_with(&schedule, &mut env, Instant::now(), &stop, Some(rx)),
            operator
        );
        assert!(kill.is_ok() && scale.is_ok() && restart.is_ok());
        assert!(
            refused.is_err_and(|e| e.to_string() == "no"),
            "the environment's own refusal reaches the operator"
        );
        assert!(late.is_err_and(|e| e.to_string() == "the timeline is over"));
        assert_eq!(
            notes.lock().unwrap().clone(),
            [
                "pause order#2",
                "resume order#2",
                "kill order#1",
                "scale order to 3",
                "restart order#1",
                "heal all"
            ]
        );
        let labels: Vec<&str> = windows.iter().flatten().map(|w| w.label.as_str()).collect();
        assert_eq!(
            labels,
            ["pause order#2"],
            "the operator's own faults are not the timeline's"
        );
    }

    #[tokio::test]
    async fn an_operator_heals_scheduled_faults_early_and_their_scheduled_heal_does_nothing() {
        let s = scenario(
            "[[chaos]]\nat = \"0s\"\nfor = \"1s\"\ntarget = \"order#1\"\nfault = \"kill\"\n\
             [[chaos]]\nat = \"0s\"\nfor = \"1s\"\ntarget = \"order#2\"\nfault = \"pause\"\n\
             [[chaos]]\nat = \"1200ms\"\nfor = \"100ms\"\ntarget = \"order#2\"\nfault = \"stop\"\n",
        );
        let mut schedule = Schedule::of(&s).unwrap();
        // The timeline serves the operator until the load ends.
        schedule.load_end = Duration::from_millis(1500);
        let journal = Journal::default();
        let notes = std::sync::Arc::clone(&journal.0);
        let mut env = journal;
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        let stop = tokio_util::sync::CancellationToken::new();
        let t0 = Instant::now();
        let operator = async {
            tokio::time::sleep(Duration::from_millis(200)).await;
            let some = ask(&tx, Some("order#2")).await.unwrap();
            let everything = ask(&tx, None).await.unwrap();
            let nothing_left = ask(&tx, None).await.unwrap();
            let elsewhere = ask(&tx, Some("gateway->payment")).await;
            let no_node = ask(&tx, Some("chaos-proxy")).await;
            (some, everything, nothing_left, elsewhere.and(no_node))
        };
        let (windows, (some, everything, nothing_left, elsewhere)) =
            tokio::join!(run_with(&schedule, &mut env, t0, &stop, Some(rx)), operator);
        let windows = windows.unwrap();
        let labels = |h: &[HealedByHand]| h.iter().map(|h| h.label.clone()).collect::<Vec<_>>();
        assert_eq!(labels(&some), ["pause order#2"], "only what order#2 names");
        assert_eq!(labels(&everything), ["kill order#1"]);
        assert!(nothing_left.is_empty());
        assert!(elsewhere.is_ok_and(|h| h.is_empty()));
        let notes = notes.lock().unwrap().clone();
        // Each fault healed once, by hand; the scheduled heals at 1s found nothing; the fault
        // planned for later still fired and healed on time.
        assert_eq!(
            notes,
            [
                "kill order#1",
                "pause order#2",
                "resume order#2",
                "restart order#1",
                "heal all",
                "heal all",
                "stop order#2",
                "restart order#2",
                "heal all"
            ]
        );
        let by_hand: Vec<(&str, bool)> = windows
            .iter()
            .map(|w| (w.label.as_str(), w.healed_by_hand))
            .collect();
        assert_eq!(
            by_hand,
            [
                ("pause order#2", true),
                ("kill order#1", true),
                ("stop order#2", false)
            ]
        );
        assert!(windows[0].end_s < 1.0 && windows[0].planned_end_s == 1.0);
        assert!(windows[0].healed().ends_with("s by hand"));
    }

    #[test]
    fn link_faults_become_one_toxic_per_stream() {
        let s = scenario(
            "[[chaos]]\nat = \"1s\"\ntarget = \"payment->kafka\"\nfault = \"latency\"\nlatency = \"150ms\"\njitter = \"20ms\"\ndirection = \"both\"\ntoxicity = 0.5\n",
        );
        let schedule = Schedule::of(&s).unwrap();
        let t = toxics(&schedule.faults[0], 0);
        assert_eq!(t.len(), 2);
        assert_eq!(t[0].stream, Stream::Upstream);
        assert_eq!(t[1].stream, Stream::Downstream);
        assert!((t[0].toxicity - 0.5).abs() < 1e-6);
        assert_eq!(
            t[0].attributes,
            ToxicAttributes::Latency {
                latency: 150,
                jitter: 20
            }
        );
        assert_ne!(t[0].name, t[1].name);
    }
}
