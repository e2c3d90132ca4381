//! What the console shows, apart from how it is drawn: the measurements drained from the channel
//! once per frame ([`Update`]), the targets and their states, the chaos timeline, and where the
//! user is (selection, menu, time window). Key handling changes only this state and answers with
//! [`Effect`]s, so it is tested without a terminal.

use std::collections::{BTreeMap, VecDeque};
use std::time::Duration;

use crate::scenario::Fault;
pub use crate::telemetry::hops::HopFigure;

/// The longest time window; history older than it is dropped.
pub const MAX_WINDOW: Duration = Duration::from_secs(15 * 60);
/// The windows `w` cycles through.
pub const WINDOWS: [Duration; 4] = [
    Duration::from_secs(60),
    Duration::from_secs(5 * 60),
    Duration::from_secs(15 * 60),
    Duration::from_secs(30),
];

/// One measurement, sent by a data source over the channel the view drains once per frame.
#[derive(Debug, Clone)]
pub enum Update {
    /// Requests answered during one interval, by endpoint and status, with latency quantiles.
    Traffic(TrafficTick),
    /// Sagas, outbox, consumers and breakers, from the metrics.
    System(SystemTick),
    /// Every target and its state now.
    Targets(Vec<TargetRow>),
    /// A fault planned, applied, healed or refused.
    Chaos(ChaosEvent),
    /// The run's phase (`before`, `during:<label>`, `after`, `checking`...).
    Phase(String),
    /// Each SLO against its target so far.
    Slos(Vec<SloLive>),
    /// The slowest hops, and where they come from.
    Hops(HopsTick),
    /// A line for the status bar; an error is shown in red.
    Notice { text: String, error: bool },
    /// The run is over, with this verdict; the view stays until `q`.
    Finished { verdict: String },
    /// The load is paused (true) or runs (false): it resumes by itself at the load's end.
    LoadPaused(bool),
}

/// Latency quantiles in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Quantiles {
    pub p50: f64,
    pub p95: f64,
    pub p99: f64,
}

/// What was answered during one interval ending at `t` (seconds since the view's origin).
#[derive(Debug, Clone, Default)]
pub struct TrafficTick {
    pub t: f64,
    pub interval_s: f64,
    /// (endpoint `"POST /api/orders"`, status, answers); status 0 is a transport error (no answer).
    pub counts: Vec<(String, u16, u64)>,
    /// Over every endpoint; `None` when nothing was answered.
    pub latency: Option<Quantiles>,
    pub latency_by_endpoint: BTreeMap<String, Quantiles>,
}

/// A circuit breaker's state, as `gateway_breaker_state` says it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Breaker {
    Closed,
    Open,
    HalfOpen,
}

impl Breaker {
    pub fn from_gauge(v: f64) -> Self {
        match v.round() as i64 {
            1 => Self::Open,
            2 => Self::HalfOpen,
            _ => Self::Closed,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::Closed => "closed",
            Self::Open => "OPEN",
            Self::HalfOpen => "half-open",
        }
    }
}

/// The system's own figures during one interval ending at `t`.
#[derive(Debug, Clone, Default)]
pub struct SystemTick {
    pub t: f64,
    pub interval_s: f64,
    /// Sagas that ended during the interval, by status (`CONFIRMED`, `REJECTED`, `CANCELLED`).
    pub completed: BTreeMap<String, u64>,
    pub compensations: u64,
    pub step_timeouts: u64,
    pub in_flight: Option<f64>,
    pub oldest_pending_s: Option<f64>,
    /// Unpublished outbox rows per service.
    pub outbox: Vec<(String, f64)>,
    /// Messages behind per consumer group.
    pub consumer_lag: Vec<(String, f64)>,
    pub breakers: Vec<(String, Breaker)>,
    /// From the metrics: the hop with the highest p95 during the interval, and that p95 in
    /// milliseconds; shown only when the traces cannot say ([`HopSource::Metrics`]).
    pub slowest_hop: Option<(String, f64)>,
}

/// Where the slowest hops shown come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HopSource {
    /// The harness's collector: each trace's hops as `telemetry::hops` reckons them, over the
    /// traces that ended within the window.
    Traces,
    /// The services' hop histograms in `/metrics`, because there are no traces: why not.
    Metrics(String),
}

/// The slowest hops, per window of [`WINDOWS`] (in its order).
#[derive(Debug, Clone, PartialEq)]
pub struct HopsTick {
    pub source: HopSource,
    /// For each window: its hops, highest p99 first, and the traces it counted.
    pub by_window: Vec<(Vec<HopFigure>, u64)>,
}
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum TargetKind {
    Service,
    Process,
    Link,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TargetState {
    Running,
    /// Killed or stopped: nothing listens.
    Down,
    /// Frozen (SIGSTOP), or it accepts connections but does not answer.
    Paused,
    /// A link with toxics: their kinds.
    Faulted(String),
    /// A link whose proxy is disabled (partition).
    Cut,
    Unknown,
}

impl TargetState {
    pub fn label(&self) -> String {
        match self {
            Self::Running => "running".into(),
            Self::Down => "DOWN".into(),
            Self::Paused => "PAUSED".into(),
            Self::Faulted(kinds) => format!("FAULT {kinds}"),
            Self::Cut => "CUT".into(),
            Self::Unknown => "?".into(),
        }
    }

    pub fn healthy(&self) -> bool {
        matches!(self, Self::Running | Self::Unknown)
    }
}

/// A link, process or service the user can select and fault.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TargetRow {
    pub name: String,
    pub kind: TargetKind,
    pub state: TargetState,
}

/// Something that happened to the chaos timeline.
#[derive(Debug, Clone)]
pub enum ChaosEvent {
    /// A fault of the scenario's timeline, not applied yet.
    Planned {
        id: String,
        label: String,
        at_s: f64,
        until_s: f64,
    },
    Applied {
        id: String,
        label: String,
        at_s: f64,
        /// When it heals by itself; `None`: when someone heals it.
        until_s: Option<f64>,
        manual: bool,
        affected: Vec<String>,
    },
    Healed {
        id: String,
        at_s: f64,
    },
    /// Everything healed at once: every active fault ends.
    HealedAll {
        at_s: f64,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaultPhase {
    Planned,
    Active,
    Healed,
}

/// One row of the chaos timeline.
#[derive(Debug, Clone)]
pub struct TimelineEntry {
    pub id: String,
    pub label: String,
    pub start_s: f64,
    pub until_s: Option<f64>,
    pub healed_s: Option<f64>,
    pub phase: FaultPhase,
    pub manual: bool,
}

/// One SLO so far.
#[derive(Debug, Clone, PartialEq)]
pub struct SloLive {
    pub name: String,
    /// `"p99 182ms <= 250ms"`.
    pub detail: String,
    /// `None`: not yet measurable (its phase has not come, or nothing it reads was seen yet).
    pub held: Option<bool>,
    /// The share of the error budget left (0..1), where the SLO has one.
    pub budget_left: Option<f64>,
}

/// Points of the throughput chart.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rates {
    pub t: f64,
    pub requests_per_s: f64,
}

/// An answer to a key: what the app must do besides changing the state.
#[derive(Debug, Clone, PartialEq)]
pub enum Effect {
    Command(Command),
    Quit,
}

/// What the console asks of the system.
#[derive(Debug, Clone, PartialEq)]
pub enum Command {
    Inject(FaultRequest),
    Heal(String),
    HealAll,
    /// Pause (true) or resume the load (during a run).
    PauseLoad(bool),
}

/// A fault from the menu, written as on `harness chaos inject`'s command line.
#[derive(Debug, Clone, PartialEq)]
pub struct FaultRequest {
    pub target: String,
    pub fault: String,
    /// `NAME=VALUE`.
    pub attributes: Vec<String>,
    /// Empty: until healed.
    pub duration: String,
}

/// The fault menu: the faults that fit the selected target.
#[derive(Debug, Clone, PartialEq)]
pub struct Menu {
    pub target: String,
    pub faults: Vec<Fault>,
    pub selected: usize,
}

/// One editable attribute of the fault form.
#[derive(Debug, Clone, PartialEq)]
pub struct Field {
    pub name: String,
    pub value: String,
}

/// The chosen fault's attributes and duration, editable before it is injected.
#[derive(Debug, Clone, PartialEq)]
pub struct Form {
    pub target: String,
    pub fault: Fault,
    /// The attributes, then `for` (the duration).
    pub fields: Vec<Field>,
    pub selected: usize,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Mode {
    Normal,
    Help,
    Menu(Menu),
    Form(Form),
    /// `q` during a run: quitting interrupts it.
    ConfirmQuit,
}

/// What the console is attached to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    /// The scenario, or `harness up` for an attached console.
    pub title: String,
    pub backend: String,
    /// The load's length, during a run.
    pub total: Option<Duration>,
    pub phase: String,
    /// The verdict so far.
    pub verdict: String,
}

/// Everything the view draws.
#[derive(Debug, Clone)]
pub struct State {
    pub header: Header,
    /// Seconds since the origin, as of the latest frame.
    pub now_s: f64,
    /// Whether this is a run (quit asks; the load can be paused).
    pub run: bool,
    pub traffic: VecDeque<TrafficTick>,
    pub system: VecDeque<SystemTick>,
    pub targets: Vec<TargetRow>,
    pub selected: usize,
    pub timeline: Vec<TimelineEntry>,
    pub slos: Vec<SloLive>,
    pub hops: Option<HopsTick>,
    pub mode: Mode,
    pub window: usize,
    /// The endpoint the latency chart shows; `None`: every endpoint.
    pub endpoint: Option<String>,
    pub notice: Option<(String, bool)>,
    pub load_paused: bool,
    pub finished: bool,
}

impl State {
    pub fn new(header: Header, run: bool) -> Self {
        Self {
            header,
            now_s: 0.0,
            run,
            traffic: VecDeque::new(),
            system: VecDeque::new(),
            targets: Vec::new(),
            selected: 0,
            timeline: Vec::new(),
            slos: Vec::new(),
            hops: None,
            mode: Mode::Normal,
            window: 0,
            endpoint: None,
            notice: None,
            load_paused: false,
            finished: false,
        }
    }

    pub fn window(&self) -> Duration {
        WINDOWS[self.window % WINDOWS.len()]
    }

    /// Takes in one measurement.
    pub fn apply(&mut self, update: Update) {
        match update {
            Update::Traffic(t) => {
                self.now_s = self.now_s.max(t.t);
                self.traffic.push_back(t);
                trim(&mut self.traffic, |t| t.t);
            }
            Update::System(s) => {
                self.now_s = self.now_s.max(s.t);
                self.system.push_back(s);
                trim(&mut self.system, |s| s.t);
            }
            Update::Targets(rows) => self.set_targets(rows),
            Update::LoadPaused(paused) => self.load_paused = paused,
            Update::Chaos(event) => self.chaos(event),
            Update::Phase(phase) => self.header.phase = phase,
            Update::Slos(slos) if slos.is_empty() => {}
            Update::Slos(slos) => {
                let broken = slos.iter().filter(|s| s.held == Some(false)).count();
                let waiting = slos.iter().filter(|s| s.held.is_none()).count();
                self.header.verdict = match (broken, waiting) {
                    (0, 0) => "holding".into(),
                    (0, w) if w == slos.len() => "no SLO measurable yet".into(),
                    (0, w) => format!("holding ({w} not yet measurable)"),
                    (b, _) => format!("{b} SLO(s) broken"),
                };
                self.slos = slos;
            }
            Update::Hops(hops) => self.hops = Some(hops),
            Update::Notice { text, error } => self.notice = Some((text, error)),
            Update::Finished { verdict } => {
                self.header.verdict = verdict;
                self.header.phase = "finished".into();
                self.finished = true;
            }
        }
    }

    /// Keeps the selection on the same target when the list changes (a scale adds instances).
    fn set_targets(&mut self, rows: Vec<TargetRow>) {
        let selected = self.targets.get(self.selected).map(|t| t.name.clone());
        self.targets = rows;
        self.selected = selected
            .and_then(|name| self.targets.iter().position(|t| t.name == name))
            .unwrap_or(0)
            .min(self.targets.len().saturating_sub(1));
    }

    fn chaos(&mut self, event: ChaosEvent) {
        match event {
            ChaosEvent::Planned {
                id,
                label,
                at_s,
                until_s,
            } => self.timeline.push(TimelineEntry {
                id,
                label,
                start_s: at_s,
                until_s: Some(until_s),
                healed_s: None,
                phase: FaultPhase::Planned,
                manual: false,
            }),
            ChaosEvent::Applied {
                id,
                label,
                at_s,
                until_s,
                manual,
                affected: _,
            } => {
                let entry = TimelineEntry {
                    id: id.clone(),
                    label,
                    start_s: at_s,
                    until_s,
                    healed_s: None,
                    phase: FaultPhase::Active,
                    manual,
                };
                match self.timeline.iter_mut().find(|e| e.id == id) {
                    Some(e) => *e = entry,
                    None => self.timeline.push(entry),
                }
            }
            ChaosEvent::Healed { id, at_s } => {
                if let Some(e) = self.timeline.iter_mut().find(|e| e.id == id) {
                    e.phase = FaultPhase::Healed;
                    e.healed_s = Some(at_s);
                }
            }
            ChaosEvent::HealedAll { at_s } => {
                for e in &mut self.timeline {
                    if e.phase == FaultPhase::Active {
                        e.phase = FaultPhase::Healed;
                        e.healed_s = Some(at_s);
                    }
                }
            }
        }
    }

    /// The faults active now.
    pub fn active(&self) -> impl Iterator<Item = &TimelineEntry> {
        self.timeline
            .iter()
            .filter(|e| e.phase == FaultPhase::Active)
    }

    /// The time windows of every fault that was or is active, `(start, end)` in seconds.
    pub fn chaos_windows(&self) -> Vec<(f64, f64)> {
        self.timeline
            .iter()
            .filter(|e| e.phase != FaultPhase::Planned)
            .map(|e| (e.start_s, e.healed_s.unwrap_or(self.now_s)))
            .collect()
    }

    /// Requests per second over time (every endpoint) within the window.
    pub fn request_rates(&self) -> Vec<(f64, f64)> {
        self.in_window(&self.traffic, |t| t.t)
            .map(|t| {
                let n: u64 = t.counts.iter().map(|(_, _, n)| n).sum();
                (t.t, n as f64 / t.interval_s.max(1e-9))
            })
            .collect()
    }

    /// Confirmed orders per second over time within the window.
    pub fn confirmed_rates(&self) -> Vec<(f64, f64)> {
        self.in_window(&self.system, |s| s.t)
            .map(|s| {
                let n = s.completed.get("CONFIRMED").copied().unwrap_or(0);
                (s.t, n as f64 / s.interval_s.max(1e-9))
            })
            .collect()
    }

    /// Latency quantiles over time, for the chosen endpoint or all of them.
    pub fn latencies(&self) -> Vec<(f64, Quantiles)> {
        self.in_window(&self.traffic, |t| t.t)
            .filter_map(|t| {
                let q = match &self.endpoint {
                    Some(e) => t.latency_by_endpoint.get(e).copied(),
                    None => t.latency,
                };
                q.map(|q| (t.t, q))
            })
            .collect()
    }

    /// Every endpoint seen, for the latency chart's choice.
    pub fn endpoints(&self) -> Vec<String> {
        let mut all: Vec<String> = self
            .traffic
            .iter()
            .flat_map(|t| t.counts.iter().map(|(e, _, _)| e.clone()))
            .collect();
        all.sort();
        all.dedup();
        all
    }

    /// Answers within the window by endpoint: (endpoint, total, by status).
    pub fn answers(&self) -> Vec<(String, u64, BTreeMap<u16, u64>)> {
        let mut by: BTreeMap<String, (u64, BTreeMap<u16, u64>)> = BTreeMap::new();
        for t in self.in_window(&self.traffic, |t| t.t) {
            for (endpoint, status, n) in &t.counts {
                let e = by.entry(endpoint.clone()).or_default();
                e.0 += n;
                *e.1.entry(*status).or_default() += n;
            }
        }
        by.into_iter().map(|(e, (n, s))| (e, n, s)).collect()
    }

    /// Sagas ended within the window, by status, and compensations and step timeouts.
    pub fn saga_outcomes(&self) -> (BTreeMap<String, u64>, u64, u64) {
        let mut outcomes = BTreeMap::new();
        let (mut compensations, mut timeouts) = (0, 0);
        for s in self.in_window(&self.system, |s| s.t) {
            for (status, n) in &s.completed {
                *outcomes.entry(status.clone()).or_default() += n;
            }
            compensations += s.compensations;
            timeouts += s.step_timeouts;
        }
        (outcomes, compensations, timeouts)
    }

    /// The slowest hops of the traces in the chosen window and the traces counted, highest
    /// p99 first; `None` when the traces cannot say (then the metrics' figure is shown, and
    /// why in [`HopSource::Metrics`]).
    pub fn trace_hops(&self) -> Option<(&[HopFigure], u64)> {
        let hops = self
            .hops
            .as_ref()
            .filter(|h| h.source == HopSource::Traces)?;
        let (figures, traces) = hops.by_window.get(self.window % WINDOWS.len())?;
        (!figures.is_empty()).then_some((figures.as_slice(), *traces))
    }

    /// Why the slowest hop shown comes from the metrics.
    pub fn hops_from_metrics_because(&self) -> String {
        match self.hops.as_ref().map(|h| &h.source) {
            None => "no traces yet".into(),
            Some(HopSource::Metrics(why)) => why.clone(),
            Some(HopSource::Traces) => "no trace ended in the window".into(),
        }
    }

    pub fn latest_system(&self) -> Option<&SystemTick> {
        self.system.back()
    }

    fn in_window<'a, T>(
        &self,
        items: &'a VecDeque<T>,
        time: impl Fn(&T) -> f64 + 'a,
    ) -> impl Iterator<Item = &'a T> + 'a {
        let from = self.now_s - self.window().as_secs_f64();
        items.iter().filter(move |i| time(i) > from)
    }

    pub fn selected_target(&self) -> Option<&TargetRow> {
        self.targets.get(self.selected)
    }
}

/// Drops what is older than the longest window.
fn trim<T>(items: &mut VecDeque<T>, time: impl Fn(&T) -> f64) {
    let Some(last) = items.back().map(&time) else {
        return;
    };
    while items
        .front()
        .is_some_and(|i| time(i) < last - MAX_WINDOW.as_secs_f64())
    {
        items.pop_front();
    }
}

/// The faults that fit a target: link faults for a link, instance faults for a process, and
/// for a service both (on every instance) and `scale`.
pub fn faults_for(kind: TargetKind, name: &str) -> Vec<Fault> {
    let link = [
        Fault::Latency,
        Fault::Bandwidth,
        Fault::SlowClose,
        Fault::Timeout,
        Fault::ResetPeer,
        Fault::Slicer,
        Fault::LimitData,
        Fault::Partition,
    ];
    let instance = [Fault::Kill, Fault::Pause, Fault::Stop, Fault::Disconnect];
    let messages = [Fault::Duplicate, Fault::LostAck, Fault::Delay];
    match kind {
        TargetKind::Link if name.ends_with("->kafka") => link.into_iter().chain(messages).collect(),
        TargetKind::Link => link.to_vec(),
        TargetKind::Process => instance.to_vec(),
        TargetKind::Service => link
            .into_iter()
            .chain(instance)
            .chain([Fault::Scale])
            .chain(messages)
            .chain([Fault::Poison])
            .collect(),
    }
}

/// A fault's attributes with the values the form starts from (as in `scenarios/README.md`), then
/// its duration.
pub fn default_fields(fault: Fault) -> Vec<Field> {
    let attrs: &[(&str, &str)] = match fault {
        Fault::Latency => &[
            ("latency", "200ms"),
            ("jitter", "0ms"),
            ("direction", "both"),
        ],
        Fault::Bandwidth => &[("rate_kbps", "10"), ("direction", "both")],
        Fault::SlowClose => &[("delay", "1s")],
        Fault::Timeout => &[("timeout", "0s"), ("direction", "both")],
        Fault::ResetPeer => &[("timeout", "0s"), ("direction", "both")],
        Fault::Slicer => &[
            ("average_size", "64"),
            ("size_variation", "32"),
            ("delay", "10ms"),
        ],
        Fault::LimitData => &[("bytes", "1024"), ("direction", "both")],
        Fault::Scale => &[("instances", "2")],
        Fault::Duplicate | Fault::LostAck => &[("probability", "0.5")],
        Fault::Delay => &[
            ("topic", "inventory.commands"),
            ("partition", "0"),
            ("delay", "2s"),
        ],
        Fault::Poison => &[("topic", "inventory.commands"), ("messages", "1")],
        Fault::Partition | Fault::Kill | Fault::Pause | Fault::Stop | Fault::Disconnect => &[],
    };
    attrs
        .iter()
        .map(|(name, value)| Field {
            name: (*name).into(),
            value: (*value).into(),
        })
        .chain(std::iter::once(Field {
            name: FOR.into(),
            value: "30s".into(),
        }))
        .collect()
}

/// The form's duration field.
pub const FOR: &str = "for";

impl Form {
    pub fn new(target: String, fault: Fault) -> Self {
        Self {
            target,
            fault,
            fields: default_fields(fault),
            selected: 0,
        }
    }

    /// The fault as `harness chaos inject` takes it; empty attributes are left out.
    pub fn request(&self) -> FaultRequest {
        FaultRequest {
            target: self.target.clone(),
            fault: self.fault.name().into(),
            attributes: self
                .fields
                .iter()
                .filter(|f| f.name != FOR && !f.value.trim().is_empty())
                .map(|f| format!("{}={}", f.name, f.value.trim()))
                .collect(),
            duration: self
                .fields
                .iter()
                .find(|f| f.name == FOR)
                .map(|f| f.value.trim().to_string())
                .unwrap_or_default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header() -> Header {
        Header {
            title: "t".into(),
            backend: "local".into(),
            total: None,
            phase: String::new(),
            verdict: String::new(),
        }
    }

    #[test]
    fn the_selection_follows_its_target_when_the_list_changes() {
        let mut s = State::new(header(), false);
        let row = |n: &str| TargetRow {
            name: n.into(),
            kind: TargetKind::Process,
            state: TargetState::Running,
        };
        s.apply(Update::Targets(vec![row("order#1"), row("payment#1")]));
        s.selected = 1;
        s.apply(Update::Targets(vec![
            row("order#1"),
            row("order#2"),
            row("payment#1"),
        ]));
        assert_eq!(s.selected_target().unwrap().name, "payment#1");
        s.apply(Update::Targets(vec![row("order#1")]));
        assert_eq!(s.selected, 0);
    }

    #[test]
    fn rates_and_answers_count_only_the_window() {
        let mut s = State::new(header(), false);
        for t in [1.0, 2.0, 100.0] {
            s.apply(Update::Traffic(TrafficTick {
                t,
                interval_s: 1.0,
                counts: vec![("GET /api/products".into(), 200, 10)],
                ..TrafficTick::default()
            }));
        }
        s.window = WINDOWS.iter().position(|w| w.as_secs() == 60).unwrap();
        assert_eq!(s.request_rates(), vec![(100.0, 10.0)]);
        assert_eq!(s.answers()[0].1, 10);
    }

    #[test]
    fn a_form_writes_the_fault_as_the_command_line_does() {
        let mut form = Form::new("gateway->payment".into(), Fault::Latency);
        form.fields[1].value = String::new();
        let r = form.request();
        assert_eq!(r.fault, "latency");
        assert_eq!(r.attributes, ["latency=200ms", "direction=both"]);
        assert_eq!(r.duration, "30s");
    }
}
