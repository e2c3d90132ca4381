//! Scenario files: what a run sets up, how it loads the system, and what it must prove.
//!
//! A scenario is a TOML file in `scenarios/` (the format is documented field by field in
//! `scenarios/README.md`). [`Scenario::load`] reads one, deserializes it into the typed
//! [`Scenario`] (unknown fields are errors everywhere) and [`Scenario::validate`]s it, so every
//! problem is reported as `path:line:column: message` before anything starts. Fields that
//! validation may complain about are [`Spanned`] so their errors point at a line too; read them
//! with `get_ref()`/`into_inner()`.
//!
//! # Layout
//! - this module: the types, parsing, and the SLO objectives a scenario sets.
//! - `validate`: [`Scenario::validate`], the checks the types cannot express.
//! - [`units`]: durations, think time ranges, test plans, arrival rates and rate plans, which are
//!   written as strings.
//! - [`resilience`]: `[environment.resilience]` (the gateway's and the services' resilience
//!   layers, as the variables the processes read) and `[[variant]]`.
//! - [`catalog`]: finding scenarios by name and `harness list`.
//! - [`error`]: [`ScenarioError`] and how byte spans become lines and columns.

pub mod catalog;
pub mod error;
pub mod resilience;
pub mod units;
mod validate;

use std::collections::BTreeSet;
use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};

use serde::de::{self, Deserializer, SeqAccess, Visitor};
use serde::{Deserialize, Serialize, Serializer};
pub use toml::Spanned;

pub use self::error::{Location, ScenarioError};
pub use self::resilience::{BulkheadLimits, Resilience, Variant};
pub use self::units::{
    ArrivalRate, HealthChecks, HumanDuration, PlanStep, RateLimit, RatePlan, RateStep, StepSpan,
    Switch, TestPlan, ThinkTime,
};
pub use crate::checks::Invariant;
use crate::environment::Instances;

/// A parsed scenario file.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    /// The name used in reports: the file's `name`, or else its file stem.
    #[serde(skip_deserializing)]
    pub name: String,
    #[serde(rename = "name", default, skip_serializing)]
    declared_name: Option<Spanned<String>>,
    /// One line saying what the scenario is for; `harness list` shows it.
    pub description: Spanned<String>,
    #[serde(default)]
    pub environment: Environment,
    pub load: Spanned<Load>,
    /// Checked before load starts and again after the checks; absent means not checked.
    pub steady_state: Option<SteadyState>,
    #[serde(default, rename = "slo")]
    pub slos: Vec<Spanned<Slo>>,
    #[serde(default)]
    pub checks: Checks,
    #[serde(default)]
    pub chaos: Vec<Spanned<ChaosEntry>>,
    /// `[[variant]]`: none, or at least two settings of the resilience layers that `harness run`
    /// runs one after the other with everything else the same, and compares.
    #[serde(default, rename = "variant", skip_serializing_if = "Vec::is_empty")]
    pub variants: Vec<Spanned<Variant>>,
    /// The file and its text, so that validation can turn spans into lines.
    #[serde(skip)]
    origin: Origin,
}

#[derive(Debug, Clone, Default)]
struct Origin {
    path: PathBuf,
    text: String,
}

/// Where the system runs and how big it is.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Environment {
    #[serde(default = "default_backend")]
    pub backend: Spanned<Backend>,
    #[serde(default)]
    pub instances: InstanceCounts,
    /// How long the order saga waits for a step before retrying and then compensating.
    #[serde(default = "default_saga_step_timeout")]
    pub saga_step_timeout: Spanned<HumanDuration>,
    /// Whether the order service refuses orders it could not finish in time (503 +
    /// `Retry-After`); `false` only to measure what admission control is worth.
    #[serde(default = "default_admission")]
    pub admission: bool,
    /// The share of orders (and of traces started inside the system) whose traces the services
    /// record and export, from 0 (exclusive) to 1 (every one, the default). Load scenarios near
    /// the knee sample, as production does: a span per SQL statement costs CPU at hundreds of
    /// orders per second.
    #[serde(default = "default_trace_sampling")]
    pub trace_sampling: Spanned<f64>,
    /// Cores each instance of order, inventory and payment may use, as a pod's CPU limit: a
    /// cgroup's CPU quota on the local backend (root, or a delegated cgroup v2 subtree),
    /// `--cpus` on the containers backend. Left out: no limit but the machine's.
    #[serde(default)]
    pub cpus_per_instance: Option<Spanned<f64>>,
    /// `[environment.resilience]`: the gateway's and the services' resilience layers; a key
    /// left out keeps the system's default.
    #[serde(default)]
    pub resilience: Resilience,
}

impl Default for Environment {
    fn default() -> Self {
        Self {
            backend: default_backend(),
            instances: InstanceCounts::default(),
            saga_step_timeout: default_saga_step_timeout(),
            admission: default_admission(),
            trace_sampling: default_trace_sampling(),
            cpus_per_instance: None,
            resilience: Resilience::default(),
        }
    }
}

fn default_backend() -> Spanned<Backend> {
    Spanned::new(0..0, Backend::Local)
}

/// A CPU budget per instance the kernel can enforce (its smallest quota is a hundredth of a
/// core) and below any machine's size (a larger one limits nothing and is a typo).
pub fn check_cpus_per_instance(cores: f64) -> Result<f64, String> {
    const CORES: std::ops::RangeInclusive<f64> = 0.01..=256.0;
    if CORES.contains(&cores) {
        Ok(cores)
    } else {
        Err(format!(
            "must be from {} to {} cores, not {cores}",
            CORES.start(),
            CORES.end()
        ))
    }
}

fn default_trace_sampling() -> Spanned<f64> {
    Spanned::new(0..0, 1.0)
}

fn default_admission() -> bool {
    true
}

fn default_saga_step_timeout() -> Spanned<HumanDuration> {
    Spanned::new(0..0, HumanDuration::from_secs(5))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    Local,
    Containers,
    External,
}

impl Backend {
    pub fn name(self) -> &'static str {
        match self {
            Self::Local => "local",
            Self::Containers => "containers",
            Self::External => "external",
        }
    }
}

/// Instances per service; each defaults to 1.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct InstanceCounts {
    #[serde(default = "one")]
    pub order: Spanned<u32>,
    #[serde(default = "one")]
    pub inventory: Spanned<u32>,
    #[serde(default = "one")]
    pub payment: Spanned<u32>,
}

fn one() -> Spanned<u32> {
    Spanned::new(0..0, 1)
}

impl Default for InstanceCounts {
    fn default() -> Self {
        Self {
            order: one(),
            inventory: one(),
            payment: one(),
        }
    }
}

impl InstanceCounts {
    /// The counts as the local backend takes them.
    pub fn to_instances(&self) -> Instances {
        let n = |c: &Spanned<u32>| usize::try_from(*c.get_ref()).unwrap_or(usize::MAX);
        Instances {
            order: n(&self.order),
            inventory: n(&self.inventory),
            payment: n(&self.payment),
        }
    }
}

/// The load profile. Closed model: `users` (+ `ramp_up`) for `duration`, or a `test_plan`; each
/// user runs journeys one after the other, pausing `think_time` between them. Open model: an
/// `arrival_rate` (+ `ramp_up`) for `duration`, or a `rate_plan`; journeys start on a schedule
/// whatever the system does, run by a pool of `users` (see [`Load::pool`]).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Load {
    /// Closed model: the users running at once. Open model: the pool of users that run the
    /// journeys, [`Load::pool`].
    pub users: Option<Spanned<u32>>,
    /// How long it takes to start all `users` (open model: to reach the `arrival_rate`,
    /// linearly from 0); 0 starts at once.
    pub ramp_up: Option<Spanned<HumanDuration>>,
    /// How long the load runs after the ramp-up.
    pub duration: Option<Spanned<HumanDuration>>,
    pub test_plan: Option<Spanned<TestPlan>>,
    /// Open model: journeys started per second, whatever the system does.
    pub arrival_rate: Option<Spanned<ArrivalRate>>,
    /// Open model: steps of arrival rates, the rate counterpart of `test_plan`.
    pub rate_plan: Option<Spanned<RatePlan>>,
    /// Open model, with `arrival_rate`: run at this multiple of this machine's knee, when a
    /// capacity run's report is at hand (`harness run --knee`, by default the newest one under
    /// the reports folder); `arrival_rate` is the rate without one. See [`crate::knee`].
    pub knee_multiple: Option<Spanned<f64>>,
    /// The knee the load was set from ([`crate::knee`]): never read from a file, written into
    /// the report's copy of the scenario so the figures say where they came from.
    #[serde(skip_deserializing, skip_serializing_if = "Option::is_none")]
    pub knee: Option<crate::knee::KneeRef>,
    /// Closed model: the pause between two journeys of one user; none when absent.
    pub think_time: Option<Spanned<ThinkTime>>,
    pub journeys: Vec<Spanned<JourneyWeight>>,
    /// Judge the SLOs on each plateau of the test plan (or rate plan) instead of over the whole
    /// load, and report the knee: the plateau with the most confirmed orders per second that met
    /// them.
    pub find_knee: Option<Spanned<bool>>,
}

/// The open model's pool of users when `users` is not given: this many per arrival per second
/// of the plan's peak rate, i.e. journeys may take 1 s on average at the peak before arrivals
/// are dropped. A journey that takes longer at the peak means the system is past its knee, which
/// is what dropped arrivals then say.
pub const DEFAULT_POOL_SECONDS: f64 = 1.0;
/// The bounds of the default pool: enough users for a low rate's bursts, and not more tasks and
/// connections than one load generator should hold unasked (set `users` for more).
pub const DEFAULT_POOL_MIN: u32 = 10;
pub const DEFAULT_POOL_MAX: u32 = 1_000;

impl Load {
    /// Whether this is a capacity run ([`Self::find_knee`]).
    pub fn finds_knee(&self) -> bool {
        self.find_knee.as_ref().is_some_and(|k| *k.get_ref())
    }

    /// Whether journeys start at an arrival rate (`arrival_rate` or `rate_plan`).
    pub fn is_open(&self) -> bool {
        self.arrival_rate.is_some() || self.rate_plan.is_some()
    }

    /// The pause between two journeys of a user; none in an open model.
    pub fn think_time(&self) -> ThinkTime {
        match &self.think_time {
            Some(t) if !self.is_open() => *t.get_ref(),
            _ => ThinkTime::default(),
        }
    }

    /// Open model: the arrival rates as one plan; `arrival_rate` with `ramp_up` and `duration`
    /// becomes a ramp and a plateau. `None` for a closed model.
    pub fn arrivals(&self) -> Option<RatePlan> {
        if let Some(plan) = &self.rate_plan {
            return Some(plan.get_ref().clone());
        }
        let rate = *self.arrival_rate.as_ref()?.get_ref();
        let get = |d: &Option<Spanned<HumanDuration>>| {
            d.as_ref().map_or(HumanDuration::ZERO, |d| *d.get_ref())
        };
        Some(RatePlan {
            steps: vec![
                RateStep {
                    rate,
                    over: get(&self.ramp_up),
                },
                RateStep {
                    rate,
                    over: get(&self.duration),
                },
            ],
        })
    }

    /// Open model: the users that run the journeys, like k6's `maxVUs`: `users`, or else the
    /// peak rate times [`DEFAULT_POOL_SECONDS`] within [`DEFAULT_POOL_MIN`]..=
    /// [`DEFAULT_POOL_MAX`]. An arrival that finds every user busy is dropped.
    pub fn pool(&self) -> u32 {
        if let Some(users) = &self.users {
            return *users.get_ref();
        }
        let peak = self.arrivals().map_or(0.0, |p| p.peak_per_second());
        let wanted = (peak * DEFAULT_POOL_SECONDS).ceil();
        // Bounded above, so the cast cannot overflow.
        (wanted.min(f64::from(DEFAULT_POOL_MAX)) as u32).clamp(DEFAULT_POOL_MIN, DEFAULT_POOL_MAX)
    }

    /// The load as one goose test plan. Closed model: `users`/`ramp_up`/`duration` become ramp,
    /// hold and stop steps, and a `test_plan` that does not end at 0 users gets a final step that
    /// stops at once (goose would otherwise keep the last step's users running forever). Open
    /// model: the whole [`Self::pool`] from the start for as long as the rate plan, then stop.
    /// Meant for a validated scenario.
    pub fn plan(&self) -> TestPlan {
        if let Some(rates) = self.arrivals() {
            let pool = self.pool();
            let over = HumanDuration::from_std(rates.total_duration());
            return TestPlan {
                steps: vec![
                    PlanStep {
                        users: pool,
                        over: HumanDuration::ZERO,
                    },
                    PlanStep { users: pool, over },
                    PlanStep {
                        users: 0,
                        over: HumanDuration::ZERO,
                    },
                ],
            };
        }
        let mut plan = match &self.test_plan {
            Some(plan) => plan.get_ref().clone(),
            None => {
                let users = self.users.as_ref().map_or(0, |u| *u.get_ref());
                let get = |d: &Option<Spanned<HumanDuration>>| {
                    d.as_ref().map_or(HumanDuration::ZERO, |d| *d.get_ref())
                };
                TestPlan {
                    steps: vec![
                        PlanStep {
                            users,
                            over: get(&self.ramp_up),
                        },
                        PlanStep {
                            users,
                            over: get(&self.duration),
                        },
                    ],
                }
            }
        };
        if plan.steps.last().is_none_or(|s| s.users != 0) {
            plan.steps.push(PlanStep {
                users: 0,
                over: HumanDuration::ZERO,
            });
        }
        plan
    }

    /// The steps of the load as a capacity run judges them: the rate plan's in an open model,
    /// the test plan's in a closed one.
    pub fn steps(&self) -> Vec<StepSpan> {
        match self.arrivals() {
            Some(rates) => rates.spans(self.pool()),
            None => self.plan().spans(),
        }
    }

    /// One line for the terminal: `test plan 8,2s;8,20s;0,0s` or
    /// `arrivals 50/s,10s;50/s,20s (open model, 60 users)`.
    pub fn describe(&self) -> String {
        match self.arrivals() {
            Some(rates) => format!("arrivals {rates} (open model, {} users)", self.pool()),
            None => format!("test plan {}", self.plan().to_goose()),
        }
    }

    /// The journeys with their weights, in file order.
    pub fn weights(&self) -> Vec<(Journey, u32)> {
        self.journeys
            .iter()
            .map(|j| (*j.get_ref().name.get_ref(), *j.get_ref().weight.get_ref()))
            .collect()
    }
}

/// A journey and how often users pick it, relative to the other journeys' weights.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct JourneyWeight {
    pub name: Spanned<Journey>,
    pub weight: Spanned<u32>,
}

/// What a simulated user does, one journey at a time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Journey {
    /// List the product catalog.
    BrowseCatalog,
    /// Look at one product.
    ViewProduct,
    /// Place an order with an `Idempotency-Key`.
    PlaceOrder,
    /// Poll one of my orders until it is terminal.
    FollowOrder,
    /// List my orders.
    ListMyOrders,
    /// An administrator restocks a product.
    AdminRestock,
    /// A support agent (an administrator) looks up the payments of an order in progress: the
    /// journey that calls the payment service through the gateway.
    CheckPayments,
    /// One misbehaving customer lists its orders again and again without pause.
    NoisyClient,
}

impl Journey {
    pub const ALL: [Journey; 8] = [
        Self::BrowseCatalog,
        Self::ViewProduct,
        Self::PlaceOrder,
        Self::FollowOrder,
        Self::ListMyOrders,
        Self::AdminRestock,
        Self::CheckPayments,
        Self::NoisyClient,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Self::BrowseCatalog => "browse_catalog",
            Self::ViewProduct => "view_product",
            Self::PlaceOrder => "place_order",
            Self::FollowOrder => "follow_order",
            Self::ListMyOrders => "list_my_orders",
            Self::AdminRestock => "admin_restock",
            Self::CheckPayments => "check_payments",
            Self::NoisyClient => "noisy_client",
        }
    }
}

impl fmt::Display for Journey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The steady-state hypothesis: a few probe requests through the gateway succeed.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SteadyState {
    /// The largest fraction of probe requests that may fail.
    #[serde(default = "zero_rate")]
    pub max_error_rate: Spanned<f64>,
    #[serde(default = "default_probe_requests")]
    pub probe_requests: Spanned<u32>,
}

fn zero_rate() -> Spanned<f64> {
    Spanned::new(0..0, 0.0)
}

fn default_probe_requests() -> Spanned<u32> {
    Spanned::new(0..0, 20)
}

/// One `[[slo]]` entry: an endpoint (or all requests, or the saga, or a hop of the sagas'
/// traces, or a scraped metric) and one or more objectives. [`Scenario::objectives`] flattens
/// the entries into one [`Objective`] per target.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Slo {
    /// `"METHOD /path"`, as the load names its requests; absent means all requests together.
    pub endpoint: Option<Spanned<String>>,
    /// A hop of the sagas' traces (`"inventory process inventory.commands"`, as the report's
    /// hop breakdown names them): its latency percentiles per saga.
    pub span: Option<Spanned<String>>,
    /// A scraped metric, `name` or `name{label="value",...}`, summed over the matching series at
    /// each scrape; judged with `max` and `min` as numbers.
    pub metric: Option<Spanned<String>>,
    pub phase: Option<Spanned<Phase>>,
    pub p50: Option<Spanned<HumanDuration>>,
    pub p95: Option<Spanned<HumanDuration>>,
    pub p99: Option<Spanned<HumanDuration>>,
    /// A latency (a duration) or, with `metric`, the largest value allowed (a number).
    pub max: Option<Spanned<Bound>>,
    /// With `metric`: the smallest value allowed.
    pub min: Option<Spanned<f64>>,
    /// The largest fraction (0..1) of requests that may fail.
    pub error_rate: Option<Spanned<f64>>,
    /// The fewest requests per second over the load (ramps included).
    pub min_throughput: Option<Spanned<f64>>,
    /// The fewest orders confirmed per second over the phase (sagas by the second they ended
    /// CONFIRMED): the work the system got done, whatever it was offered.
    pub min_goodput: Option<Spanned<f64>>,
    /// With `min_goodput`: when this machine's knee is at hand ([`crate::knee`]), the bound is
    /// this share of the knee's confirmed orders per second instead of `min_goodput`.
    pub knee_share: Option<Spanned<f64>>,
    /// From the order being accepted (201) to its saga being terminal.
    pub saga_completion_p99: Option<Spanned<HumanDuration>>,
}

/// `max` of an `[[slo]]`: a duration (`max = "1s"`, a latency) or a number (`max = 100`, a
/// metric's value). Written by hand rather than `#[serde(untagged)]` so that a bad duration
/// keeps the duration parser's message.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Bound {
    Duration(HumanDuration),
    Value(f64),
}

impl Serialize for Bound {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Self::Duration(d) => d.serialize(s),
            Self::Value(v) => s.serialize_f64(*v),
        }
    }
}

impl<'de> Deserialize<'de> for Bound {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct BoundVisitor;
        impl serde::de::Visitor<'_> for BoundVisitor {
            type Value = Bound;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a duration such as \"250ms\", or a number for a metric SLO")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Bound, E> {
                v.parse::<HumanDuration>()
                    .map(Bound::Duration)
                    .map_err(E::custom)
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Bound, E> {
                Ok(Bound::Value(v as f64))
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Bound, E> {
                Ok(Bound::Value(v as f64))
            }
            fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<Bound, E> {
                Ok(Bound::Value(v))
            }
        }
        d.deserialize_any(BoundVisitor)
    }
}

/// Which part of a run an SLO is measured over: `all` of it, or, with a chaos timeline, before
/// the first fault, during any fault, or after the last one healed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Phase {
    #[default]
    All,
    Before,
    During,
    After,
}

impl Phase {
    pub fn name(self) -> &'static str {
        match self {
            Self::All => "all",
            Self::Before => "before",
            Self::During => "during",
            Self::After => "after",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Percentile {
    P50,
    P95,
    P99,
    Max,
}

impl Percentile {
    /// As a quantile for hdrhistogram's `value_at_quantile`.
    pub fn quantile(self) -> f64 {
        match self {
            Self::P50 => 0.5,
            Self::P95 => 0.95,
            Self::P99 => 0.99,
            Self::Max => 1.0,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::P50 => "p50",
            Self::P95 => "p95",
            Self::P99 => "p99",
            Self::Max => "max",
        }
    }
}

/// One target of an SLO, to be measured and judged on its own.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Objective {
    /// `None`: all requests together (or, for saga completion, span and metric targets, which
    /// name what they measure themselves).
    pub endpoint: Option<String>,
    pub phase: Phase,
    pub target: Target,
}

/// What is measured and the limit that passes. Every limit is inclusive: a p99 of exactly the
/// target meets it.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "metric", rename_all = "snake_case")]
pub enum Target {
    /// The time a saga spends in a hop of its trace, at this percentile, is at most `max`.
    Span {
        hop: String,
        percentile: Percentile,
        max: HumanDuration,
    },
    /// The scraped metric (summed over the series `selector` matches, per scrape) never
    /// exceeds `max` in the phase.
    MetricMax { selector: String, max: f64 },
    /// ... never falls below `min` in the phase.
    MetricMin { selector: String, min: f64 },
    /// The endpoint's latency percentile is at most `max`.
    Latency {
        percentile: Percentile,
        max: HumanDuration,
    },
    /// At most this fraction of requests failed.
    ErrorRate { max: f64 },
    /// At least this many requests per second.
    MinThroughput { per_second: f64 },
    /// At least this many orders confirmed per second.
    MinGoodput { per_second: f64 },
    /// Accepted-to-terminal time of the order saga at this percentile is at most `max`.
    SagaCompletion {
        percentile: Percentile,
        max: HumanDuration,
    },
}

impl fmt::Display for Objective {
    /// A stable name for reports and junit: `POST /api/orders p99 <= 1s`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let scope = self.endpoint.as_deref().unwrap_or("all requests");
        match &self.target {
            Target::Span {
                hop,
                percentile,
                max,
            } => write!(f, "span {hop:?} {} <= {max}", percentile.name())?,
            Target::MetricMax { selector, max } => write!(f, "metric {selector} <= {max}")?,
            Target::MetricMin { selector, min } => write!(f, "metric {selector} >= {min}")?,
            Target::Latency { percentile, max } => {
                write!(f, "{scope} {} <= {max}", percentile.name())?
            }
            Target::ErrorRate { max } => write!(f, "{scope} error rate <= {max}")?,
            Target::MinThroughput { per_second } => {
                write!(f, "{scope} throughput >= {per_second}/s")?
            }
            Target::MinGoodput { per_second } => {
                write!(f, "goodput >= {per_second} confirmed orders/s")?
            }
            Target::SagaCompletion { percentile, max } => {
                write!(f, "saga completion {} <= {max}", percentile.name())?
            }
        }
        if self.phase != Phase::All {
            write!(f, " ({})", self.phase.name())?;
        }
        Ok(())
    }
}

/// What is proved after the load stops and the system has converged.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Checks {
    /// How long the system may take to settle (every saga terminal, the read model caught up).
    #[serde(default = "default_convergence_timeout")]
    pub convergence_timeout: Spanned<HumanDuration>,
    #[serde(default)]
    pub invariants: InvariantSelection,
}

fn default_convergence_timeout() -> Spanned<HumanDuration> {
    Spanned::new(0..0, HumanDuration::from_secs(30))
}

impl Default for Checks {
    fn default() -> Self {
        Self {
            convergence_timeout: default_convergence_timeout(),
            invariants: InvariantSelection::All,
        }
    }
}

/// `invariants = "all"` or a list of invariant names (an empty list checks none).
#[derive(Debug, Clone, Default, PartialEq)]
pub enum InvariantSelection {
    #[default]
    All,
    Only(Vec<Spanned<Invariant>>),
}

impl InvariantSelection {
    /// The selected invariants, in the order of [`Invariant::ALL`], each once.
    pub fn selected(&self) -> Vec<Invariant> {
        match self {
            Self::All => Invariant::ALL.to_vec(),
            Self::Only(list) => {
                let set: BTreeSet<Invariant> = list.iter().map(|i| *i.get_ref()).collect();
                set.into_iter().collect()
            }
        }
    }
}

impl<'de> Deserialize<'de> for InvariantSelection {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = InvariantSelection;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("\"all\" or a list of invariant names")
            }

            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                if v == "all" {
                    Ok(InvariantSelection::All)
                } else {
                    Err(E::custom(format!(
                        "invalid invariants {v:?}: expected \"all\" or a list of invariant names \
                         such as [\"no_lost_orders\", \"sagas_terminal\"]"
                    )))
                }
            }

            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                let mut list = Vec::new();
                while let Some(i) = seq.next_element::<Spanned<Invariant>>()? {
                    list.push(i);
                }
                Ok(InvariantSelection::Only(list))
            }
        }
        d.deserialize_any(V)
    }
}

impl Serialize for InvariantSelection {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Self::All => s.serialize_str("all"),
            Self::Only(list) => s.collect_seq(list.iter().map(|i| i.get_ref())),
        }
    }
}

/// One fault of a chaos timeline: what, where, when and for how long. [`crate::faults`] turns
/// the entries into actions on a running environment.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ChaosEntry {
    /// A label for reports and phase names (`during:<name>`); default `<fault> <target>`.
    pub name: Option<Spanned<String>>,
    /// When the fault starts, from the start of the load.
    pub at: Spanned<HumanDuration>,
    /// How long it lasts; absent: until the load ends.
    #[serde(rename = "for")]
    pub duration: Option<Spanned<HumanDuration>>,
    /// A link (`"gateway->payment#1"`), a group of links (`"gateway->payment"`: every payment
    /// instance; `"inventory"`: every link of every inventory instance), an instance
    /// (`"order#1"`, `"broker"`) or every instance of a service (`"payment"`).
    pub target: Spanned<String>,
    pub fault: Spanned<Fault>,
    /// `latency`: the added delay.
    pub latency: Option<Spanned<HumanDuration>>,
    /// `latency`: random variation around `latency`.
    pub jitter: Option<Spanned<HumanDuration>>,
    /// `bandwidth`: the limit in KB/s.
    pub rate_kbps: Option<Spanned<u64>>,
    /// `slow_close`: how long a close is delayed; `slicer`: the pause between slices.
    pub delay: Option<Spanned<HumanDuration>>,
    /// `timeout`: close the connection after this long without data (0: hold it until the
    /// fault ends); `reset_peer`: reset it after this long (0: at once).
    pub timeout: Option<Spanned<HumanDuration>>,
    /// `slicer`: the mean slice size in bytes and how much it varies.
    pub average_size: Option<Spanned<u64>>,
    pub size_variation: Option<Spanned<u64>>,
    /// `limit_data`: close the connection after this many bytes.
    pub bytes: Option<Spanned<u64>>,
    /// Link faults: which way the fault applies; default `both`.
    pub direction: Option<Spanned<Direction>>,
    /// Link faults: the fraction (0..1) of connections affected; default 1.
    pub toxicity: Option<Spanned<f64>>,
    /// `scale`: how many instances of the service run while the fault lasts.
    pub instances: Option<Spanned<u32>>,
    /// `delay`, `poison` (required) and `duplicate` (default: every topic): the Kafka topic.
    pub topic: Option<Spanned<String>>,
    /// `delay` (required): the partition of `topic` whose records arrive late; `poison`: the
    /// partition to publish onto (default: spread over every partition).
    pub partition: Option<Spanned<u32>>,
    /// `duplicate`, `lost_ack`: the share (0..1) of fetched batches copied, or of produce
    /// acknowledgements lost; default 1.
    pub probability: Option<Spanned<f64>>,
    /// `poison`: how many malformed messages to publish; default 1.
    pub messages: Option<Spanned<u64>>,
}

impl ChaosEntry {
    /// The label of the entry: its `name`, or `<fault> <target>`.
    pub fn label(&self) -> String {
        self.name.as_ref().map_or_else(
            || format!("{} {}", self.fault.get_ref().name(), self.target.get_ref()),
            |n| n.get_ref().clone(),
        )
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Fault {
    /// Delay data on a link (`latency`, `jitter`).
    Latency,
    /// Limit a link's bandwidth (`rate_kbps`).
    Bandwidth,
    /// Delay the close of connections on a link (`delay`).
    SlowClose,
    /// Stop all data on a link and close connections after `timeout` (0: hold them).
    Timeout,
    /// Reset connections on a link (TCP RST) after `timeout`.
    ResetPeer,
    /// Cut data into small slices with a pause between them.
    Slicer,
    /// Close connections after `bytes` bytes.
    LimitData,
    /// Take a link down: connections are refused and open ones closed.
    Partition,
    /// Kill an instance (SIGKILL); it restarts when the fault ends.
    Kill,
    /// Freeze an instance (SIGSTOP) until the fault ends (SIGCONT).
    Pause,
    /// Stop an instance gracefully (SIGTERM); it restarts when the fault ends.
    Stop,
    /// Cut an instance off the run's network (containers backend only): nothing reaches it and
    /// it reaches nothing, until the fault ends and it is connected again.
    Disconnect,
    /// Run `instances` instances of a service (added or removed while the load runs) until the
    /// fault ends, then as many as before.
    Scale,
    /// Records already delivered are delivered again: the batches the targeted instances fetch
    /// (of `topic`, or every topic) are published again onto their partition (`probability`).
    Duplicate,
    /// Produce requests of the targeted instances reach the broker, but the acknowledgement is
    /// lost (`probability`) and the connection reset, so producers send again.
    LostAck,
    /// One partition's records (`topic`, `partition`) reach the targeted instances `delay` late.
    Delay,
    /// `messages` malformed messages are published onto `topic` when the fault starts; dead
    /// letters are then expected, and listed as notes.
    Poison,
}

impl Fault {
    pub const ALL: [Fault; 17] = [
        Self::Latency,
        Self::Bandwidth,
        Self::SlowClose,
        Self::Timeout,
        Self::ResetPeer,
        Self::Slicer,
        Self::LimitData,
        Self::Partition,
        Self::Kill,
        Self::Pause,
        Self::Stop,
        Self::Disconnect,
        Self::Scale,
        Self::Duplicate,
        Self::LostAck,
        Self::Delay,
        Self::Poison,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Self::Latency => "latency",
            Self::Bandwidth => "bandwidth",
            Self::SlowClose => "slow_close",
            Self::Timeout => "timeout",
            Self::ResetPeer => "reset_peer",
            Self::Slicer => "slicer",
            Self::LimitData => "limit_data",
            Self::Partition => "partition",
            Self::Kill => "kill",
            Self::Pause => "pause",
            Self::Stop => "stop",
            Self::Disconnect => "disconnect",
            Self::Scale => "scale",
            Self::Duplicate => "duplicate",
            Self::LostAck => "lost_ack",
            Self::Delay => "delay",
            Self::Poison => "poison",
        }
    }

    /// Whether the fault acts on Kafka messages (through the embedded broker's fronts, or by
    /// publishing) rather than on links or processes.
    pub fn on_messages(self) -> bool {
        matches!(
            self,
            Self::Duplicate | Self::LostAck | Self::Delay | Self::Poison
        )
    }

    /// Whether the fault acts on processes rather than links.
    pub fn on_instances(self) -> bool {
        matches!(
            self,
            Self::Kill | Self::Pause | Self::Stop | Self::Disconnect
        )
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    Upstream,
    Downstream,
    Both,
}

impl Scenario {
    /// Reads, parses and validates a scenario file.
    pub fn load(path: &Path) -> Result<Self, ScenarioError> {
        let text = std::fs::read_to_string(path).map_err(|source| ScenarioError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let scenario = Self::from_toml(path, &text)?;
        scenario.validate()?;
        Ok(scenario)
    }

    /// Finds a scenario by name or path (see [`catalog::resolve`]) and loads it.
    pub fn open(name_or_path: &str) -> Result<Self, ScenarioError> {
        Self::load(&Self::resolve(name_or_path)?)
    }

    /// The file a name or path stands for; see [`catalog::resolve`].
    pub fn resolve(name_or_path: &str) -> Result<PathBuf, ScenarioError> {
        catalog::resolve(name_or_path)
    }

    /// Parses the text of a scenario file without validating it; `path` is used for the name
    /// and in error messages.
    pub fn from_toml(path: &Path, text: &str) -> Result<Self, ScenarioError> {
        let mut scenario: Scenario = toml::from_str(text).map_err(|e| {
            // Parser messages can run over several lines; one line reads better after a location.
            let message = e
                .message()
                .lines()
                .map(str::trim)
                .filter(|l| !l.is_empty())
                .collect::<Vec<_>>()
                .join("; ");
            ScenarioError::at(path, text, e.span(), message)
        })?;
        scenario.name = match &scenario.declared_name {
            Some(name) => name.get_ref().clone(),
            None => path
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_default(),
        };
        scenario.origin = Origin {
            path: path.to_path_buf(),
            text: text.to_string(),
        };
        Ok(scenario)
    }

    /// What `variant` runs: this scenario with the variant's resilience keys over
    /// `[environment.resilience]`, and no variants of its own.
    pub fn for_variant(&self, variant: &Variant) -> Scenario {
        let mut scenario = self.clone();
        scenario.environment.resilience = variant.resilience.over(&self.environment.resilience);
        scenario.variants.clear();
        scenario
    }

    /// The file this scenario was read from.
    pub fn path(&self) -> &Path {
        &self.origin.path
    }

    fn error(&self, span: Range<usize>, message: impl Into<String>) -> ScenarioError {
        ScenarioError::at(&self.origin.path, &self.origin.text, Some(span), message)
    }

    /// Every SLO target, one per metric of each `[[slo]]` entry, in file order.
    pub fn objectives(&self) -> Vec<Objective> {
        self.slos
            .iter()
            .flat_map(|s| objectives_of(s.get_ref()))
            .collect()
    }

    /// Whether the chaos timeline publishes poison messages, so dead letters are expected.
    pub fn injects_poison(&self) -> bool {
        self.chaos
            .iter()
            .any(|c| *c.get_ref().fault.get_ref() == Fault::Poison)
    }

    /// Refuses backends that parse but cannot run yet.
    pub fn check_backend_supported(&self) -> Result<(), ScenarioError> {
        let backend = &self.environment.backend;
        match backend.get_ref() {
            Backend::Local | Backend::Containers => Ok(()),
            other => Err(self.error(
                backend.span(),
                format!(
                    "the {:?} backend is not supported yet; \"local\" and \"containers\" run today",
                    other.name()
                ),
            )),
        }
    }
}

fn objectives_of(slo: &Slo) -> Vec<Objective> {
    let endpoint = slo.endpoint.as_ref().map(|e| e.get_ref().clone());
    let phase = slo.phase.as_ref().map_or(Phase::All, |p| *p.get_ref());
    let mut targets = Vec::new();
    if let Some(selector) = &slo.metric {
        let selector = selector.get_ref().clone();
        if let Some(Bound::Value(max)) = slo.max.as_ref().map(|m| *m.get_ref()) {
            targets.push(Target::MetricMax {
                selector: selector.clone(),
                max,
            });
        }
        if let Some(min) = &slo.min {
            targets.push(Target::MetricMin {
                selector,
                min: *min.get_ref(),
            });
        }
        return objectives(None, phase, targets);
    }
    let max = slo.max.as_ref().and_then(|m| match m.get_ref() {
        Bound::Duration(d) => Some(Spanned::new(m.span(), *d)),
        Bound::Value(_) => None,
    });
    let latencies = [
        (slo.p50.clone(), Percentile::P50),
        (slo.p95.clone(), Percentile::P95),
        (slo.p99.clone(), Percentile::P99),
        (max, Percentile::Max),
    ];
    if let Some(hop) = &slo.span {
        for (d, percentile) in latencies {
            if let Some(d) = d {
                targets.push(Target::Span {
                    hop: hop.get_ref().clone(),
                    percentile,
                    max: *d.get_ref(),
                });
            }
        }
        return objectives(None, phase, targets);
    }
    for (d, percentile) in latencies {
        if let Some(d) = d {
            targets.push(Target::Latency {
                percentile,
                max: *d.get_ref(),
            });
        }
    }
    if let Some(r) = &slo.error_rate {
        targets.push(Target::ErrorRate { max: *r.get_ref() });
    }
    if let Some(t) = &slo.min_throughput {
        targets.push(Target::MinThroughput {
            per_second: *t.get_ref(),
        });
    }
    if let Some(g) = &slo.min_goodput {
        targets.push(Target::MinGoodput {
            per_second: *g.get_ref(),
        });
    }
    if let Some(d) = &slo.saga_completion_p99 {
        targets.push(Target::SagaCompletion {
            percentile: Percentile::P99,
            max: *d.get_ref(),
        });
    }
    objectives(endpoint, phase, targets)
}

fn objectives(endpoint: Option<String>, phase: Phase, targets: Vec<Target>) -> Vec<Objective> {
    targets
        .into_iter()
        .map(|target| Objective {
            endpoint: endpoint.clone(),
            phase,
            target,
        })
        .collect()
}

#[cfg(test)]
mod tests;
