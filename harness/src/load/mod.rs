//! Load through the gateway: goose 0.19 embedded as a library, driving the journeys of a
//! scenario, while we measure every request ourselves.
//!
//! Goose schedules: it launches users along the scenario's test plan and runs, for each user,
//! one goose scenario whose transactions are the journeys with their weights, pausing the
//! scenario's think time between two of them. It runs quiet: no report on stdout, no log files,
//! no controllers. Each request still goes through goose (grouped by the gateway route, e.g.
//! `POST /api/orders`, so goose's own counts are comparable), but what the harness reports
//! comes from [`recorder::Recorder`]: latency with coordinated-omission correction, ok/errors
//! by status, shed requests apart, one-second buckets, every `POST /api/orders` as an
//! [`OrderAttempt`], every restock and terminal status shown (the [`History`] the checks read),
//! and the time from an order accepted to it seen finished, on the harness's clock only (the
//! saga watch, `watch`). Every request is also an invocation and a completion in
//! `history.jsonl` ([`history`]).
//!
//! # Load models
//!
//! - **Closed** (`users`, `test_plan`): each user runs a journey, pauses its think time, runs
//!   the next. A user the system shed (429 or 503 with `Retry-After`) waits the `Retry-After`
//!   (at most [`MAX_RETRY_AFTER`], never past the end of the load) before its next journey, as
//!   a well-behaved client would.
//! - **Open** (`arrival_rate`, `rate_plan`): journeys start on the [`arrivals`] schedule
//!   whatever the system does. Goose runs the whole pool of users from the start, without think
//!   time; a user claims the next arrival, sleeps until it is due and runs the journey the
//!   weighted [`arrivals::Mix`] picks for it (not goose's scheduler, whose one weighted list per
//!   scenario every user walks from its head), and an arrival due while every user was busy is
//!   dropped and counted, not run late; one due while the console has the load paused is
//!   counted as paused. No coordinated-omission correction: the schedule is
//!   the cadence, and what could not start is counted as dropped instead. A shed arrival is
//!   simply shed: each arrival stands for an independent client, and the next one is another
//!   client's, so nobody waits. The users idle once the schedule is over, and goose stops them
//!   when its plan, as long as the schedule, ends.
//!
//! After goose stops, the orders still pending are followed through the admin endpoint for at
//! most the scenario's convergence timeout, so saga completion is measured for them too; the
//! rest are counted `UNFINISHED`. Those follow-up reads are measurement, not load, so they are
//! not in the per-endpoint statistics.
//!
//! # Layout
//! - this module: [`LoadTarget`], [`LoadOutcome`], [`run`] and the goose configuration.
//! - [`arrivals`]: the open model's schedule and how users claim arrivals.
//! - [`endpoint`]: the request names.
//! - [`roster`]: which customer each goose user is, and the order lines a user sends.
//! - `recorder`: the shared measurements and history.
//! - [`history`]: the Jepsen-style history file.
//! - `watch`: the saga watch, listing the PENDING orders while the load runs.
//! - `journeys`: one module per journey.
//!
//! [`OrderAttempt`]: crate::checks::model::OrderAttempt

pub mod arrivals;
pub mod endpoint;
pub mod history;
mod journeys;
mod recorder;
pub use recorder::TracedSaga;
pub mod roster;
mod watch;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use contracts::domain::{CustomerId, Sku};
use goose::client::GooseClientBuilder;
use goose::config::GooseConfiguration;
use goose::goose::Scenario as GooseScenario;
use goose::prelude::*;

use crate::checks::model::{History, Seeded, SeededProduct};
use crate::environment::EnvInfo;
use crate::metrics::{self, Measurements, PhaseSpan};
use crate::scenario::{Journey, Scenario, ThinkTime};

use self::arrivals::{Arrivals, Mix, Schedule};
use self::history::HistoryLog;
use self::recorder::Recorder;

/// Where the load goes and who sends it.
#[derive(Debug, Clone)]
pub struct LoadTarget {
    /// The gateway, e.g. `http://127.0.0.1:8080`; every request goes here.
    pub gateway_url: String,
    pub admin_token: String,
    pub customers: Vec<Customer>,
    pub skus: Vec<Sku>,
    /// The prices, stock and credit limits the environment was seeded with; they go into the
    /// [`History`] the checks compare the system with.
    pub seed: Seeded,
    /// Where to write the run's [`history`] (`history.jsonl`); `None` writes none.
    pub history_file: Option<PathBuf>,
}

/// A seeded customer and a token issued for them.
#[derive(Debug, Clone)]
pub struct Customer {
    pub id: CustomerId,
    pub token: String,
    /// Customers with a tiny limit get their orders declined, so the saga compensates.
    pub credit_limit_minor: i64,
}

impl LoadTarget {
    /// The gateway, customers and SKUs of a running environment.
    pub fn from_env(info: &EnvInfo) -> anyhow::Result<Self> {
        let customers = info
            .customers
            .iter()
            .map(|c| {
                Ok(Customer {
                    id: CustomerId::parse(c.customer_id.as_str())
                        .with_context(|| format!("seeded customer {:?}", c.customer_id))?,
                    token: c.token.clone(),
                    credit_limit_minor: c.credit_limit_minor,
                })
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        let skus = info
            .products
            .iter()
            .map(|p| Sku::parse(p.sku.as_str()).with_context(|| format!("seeded SKU {:?}", p.sku)))
            .collect::<anyhow::Result<Vec<_>>>()?;
        let seed = Seeded {
            products: skus
                .iter()
                .zip(&info.products)
                .map(|(sku, p)| {
                    let seeded = SeededProduct {
                        unit_price_minor: p.unit_price_minor,
                        initial_stock: p.initial_stock,
                    };
                    (sku.clone(), seeded)
                })
                .collect(),
            credit_limits: customers
                .iter()
                .map(|c| (c.id.clone(), c.credit_limit_minor))
                .collect(),
        };
        Ok(Self {
            gateway_url: info.gateway_url.clone(),
            admin_token: info.admin_token.clone(),
            customers,
            skus,
            seed,
            history_file: None,
        })
    }
}

/// What the load measured and the orders it placed.
#[derive(Debug, Clone, Default)]
pub struct LoadOutcome {
    pub measurements: Measurements,
    pub history: History,
    /// Goose's own request counts by request name, to cross-check [`Measurements`].
    pub goose_requests: BTreeMap<String, u64>,
    /// The orders seen terminal with the trace their `POST` started.
    pub traced: Vec<TracedSaga>,
}

/// The longest a `follow_order` journey polls one order before moving on; the order stays
/// pending and is followed again later.
const FOLLOW_TIMEOUT: Duration = Duration::from_secs(5);
/// How often an order is polled while it is followed.
const POLL_INTERVAL: Duration = Duration::from_millis(100);
/// How long after acceptance an order is first followed: the read model serving
/// `GET /api/orders/{id}` lags the write model (a Kafka hop), and a poll sooner would mostly
/// answer 404, which would count as an error. 250 ms was enough on the local backend; on the
/// containers backend (Postgres, every hop through Toxiproxy) smoke saw 4 of 79 polls answer 404
/// with it, none with 1 s.
const FOLLOW_AFTER: Duration = Duration::from_secs(1);

/// The longest one request may take before it counts as a transport error (goose's
/// `--timeout`, in seconds).
const REQUEST_TIMEOUT_SECS: &str = "15";

/// The longest a closed-model user waits when the system sheds it, whatever `Retry-After`
/// says: a client that waits minutes is gone, and the run must go on measuring.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(5);

/// What every transaction closure shares.
pub(crate) struct Ctx {
    pub target: LoadTarget,
    /// User index (modulo its length) → index into `target.customers`.
    pub roster: Vec<usize>,
    pub recorder: Recorder,
    /// Every operation, as a Jepsen-style history (`history.jsonl`).
    pub history: HistoryLog,
    pub pace: Pace,
    /// The share of orders placed with a sampled trace context (`[environment] trace_sampling`).
    pub trace_sampling: f64,
}

/// How users pace their journeys.
pub(crate) enum Pace {
    /// One journey after the other; a shed user waits its `Retry-After` first, never past
    /// `load_end`.
    Closed { load_end: tokio::time::Instant },
    /// Each journey waits for an arrival of the schedule, counted from `start`, and is what
    /// `mix` picks for it.
    Open {
        arrivals: Arrivals,
        start: tokio::time::Instant,
        mix: Mix<Journey>,
    },
}

/// Runs the scenario's load against `target` and returns what was measured. Blocks until the
/// test plan has run and the pending orders were followed (bounded by the convergence timeout).
/// `started` is the start of the load, which timelines count from; `phases` (a chaos
/// timeline's) are recorded besides `all` and, for a capacity run, the steps of the plan.
pub async fn run(
    scenario: &Scenario,
    target: &LoadTarget,
    phases: Vec<PhaseSpan>,
    started: Instant,
) -> anyhow::Result<LoadOutcome> {
    let never = tokio_util::sync::CancellationToken::new();
    run_until(scenario, target, phases, started, &never).await
}

/// [`run`], stopped early when `stop` is cancelled (an interrupted run): goose stops its users
/// at once (each finishes the journey it is in), the pending orders are followed no further,
/// and what was measured until then is returned, `measurements.duration` the load's real
/// length.
pub async fn run_until(
    scenario: &Scenario,
    target: &LoadTarget,
    phases: Vec<PhaseSpan>,
    started: Instant,
    stop: &tokio_util::sync::CancellationToken,
) -> anyhow::Result<LoadOutcome> {
    anyhow::ensure!(
        !target.customers.is_empty(),
        "the load needs at least one customer"
    );
    anyhow::ensure!(!target.skus.is_empty(), "the load needs at least one SKU");
    let load = scenario.load.get_ref();
    let plan = load.plan();
    let think = load.think_time();
    // A capacity run judges each step of the plan on its own.
    let mut spans = phases;
    if load.finds_knee() {
        spans.extend(load.steps().iter().map(|s| PhaseSpan {
            name: metrics::step_phase(s.index),
            start: s.start,
            end: s.end,
        }));
    }
    let windows = spans.clone();
    let start = tokio::time::Instant::from_std(started);
    let (pace, think_mean) = match load.arrivals() {
        Some(rates) => (
            Pace::Open {
                arrivals: Arrivals::new(Schedule::new(&rates)),
                start,
                mix: Mix::new(&load.weights()),
            },
            None,
        ),
        None => (
            Pace::Closed {
                load_end: start + plan.total_duration(),
            },
            Some(mean(think)),
        ),
    };
    let open = matches!(pace, Pace::Open { .. });
    let history = match &target.history_file {
        Some(path) => HistoryLog::create(path)?,
        None => HistoryLog::off(),
    };
    let ctx = Arc::new(Ctx {
        roster: roster::roster(&target.customers),
        target: target.clone(),
        recorder: Recorder::new(think_mean, spans),
        history,
        pace,
        trace_sampling: *scenario.environment.trace_sampling.get_ref(),
    });
    // The console's live SLOs read what was measured so far (kept only while a view is up).
    crate::console::slos::measuring(started, {
        let ctx = Arc::downgrade(&ctx);
        move |traced_from| ctx.upgrade().map(|c| c.recorder.so_far(traced_from))
    });
    if let Pace::Open { arrivals, .. } = &ctx.pace {
        ctx.recorder.scheduled(arrivals.schedule().dues());
    }

    let shopper = shopper(&ctx, &load.weights(), (!open).then_some(think))?;
    let attack = attack(&target.gateway_url, &plan.to_goose(), shopper, open)?;
    silence_goose_log();
    ctx.recorder.start(started);
    ctx.history.start(started);
    let client = crate::client::ApiClient::new(&target.gateway_url)?;
    let stop_watch = tokio_util::sync::CancellationToken::new();
    let saga_watch = tokio::spawn(watch::sagas(
        Arc::clone(&ctx),
        client.clone(),
        stop_watch.clone(),
    ));
    let killswitch = tokio::spawn(stop_goose_when(stop.clone()));
    // Goose's `Display` leaves out which option it refused; its `Debug` has the detail.
    let goose_metrics = attack
        .execute()
        .await
        .map_err(|e| anyhow::anyhow!("running the goose load: {e:?}"));
    killswitch.abort();
    let load_time = started.elapsed();
    if let Pace::Open {
        arrivals, start, ..
    } = &ctx.pace
    {
        let origin = start.into_std();
        let (dropped, paused) =
            arrivals.unclaimed(|due| crate::console::live::paused_at(origin + due));
        ctx.recorder.dropped(&dropped);
        ctx.recorder.paused(&paused);
    }

    let settle = scenario.checks.convergence_timeout.get_ref().as_std();
    if goose_metrics.is_ok() {
        tokio::select! {
            () = journeys::follow_order::follow_pending(&ctx, &client, settle) => {}
            // What was followed so far stays measured; the rest count as `UNFINISHED`.
            () = stop.cancelled() => {}
        }
    }
    stop_watch.cancel();
    if let Err(e) = saga_watch.await {
        tracing::warn!("the saga watch stopped: {e}");
    }
    ctx.history.flush();
    let goose_metrics = goose_metrics?;

    let mut goose_requests = BTreeMap::new();
    for aggregate in goose_metrics.requests.values() {
        *goose_requests.entry(aggregate.path.clone()).or_default() +=
            (aggregate.success_count + aggregate.fail_count) as u64;
    }
    let traced = ctx.recorder.take_traced();
    let (mut measurements, mut history) = ctx.recorder.finish(load_time);
    history.seed = Some(target.seed.clone());
    measurements.measured_until = started.elapsed();
    measurements.windows = std::iter::once(PhaseSpan {
        name: metrics::ALL.to_string(),
        start: Duration::ZERO,
        end: load_time,
    })
    .chain(windows)
    .collect();
    Ok(LoadOutcome {
        measurements,
        history,
        goose_requests,
        traced,
    })
}

/// Once `stop` is cancelled, goose's killswitch, which stops the load as its own Ctrl-C would.
/// Pulled again and again until the load is over: goose clears it when a load starts, so one
/// pull just before would be lost.
async fn stop_goose_when(stop: tokio_util::sync::CancellationToken) {
    stop.cancelled().await;
    loop {
        goose::trigger_killswitch("the run was interrupted");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Goose installs a logger printing a warning on stdout for every failed request, and the
/// process has one `log` logger: taking the place first keeps the output ours (every failure is
/// counted, by status, in the measurements).
fn silence_goose_log() {
    struct Silent;
    impl log::Log for Silent {
        fn enabled(&self, _: &log::Metadata<'_>) -> bool {
            false
        }
        fn log(&self, _: &log::Record<'_>) {}
        fn flush(&self) {}
    }
    static SILENT: Silent = Silent;
    // Fails only when a logger is already installed, ours from an earlier run included.
    let _ = log::set_logger(&SILENT);
}

fn mean(think: ThinkTime) -> Duration {
    (think.min.as_std() + think.max.as_std()) / 2
}

/// A quiet goose attack on `host` along `plan` (goose's `--test-plan` syntax): no report, no
/// error summary, no log file, no controllers. Goose still prints one line, `N users launched.`,
/// with a plain `println!` that no option turns off. `open`: an open-model load, whose
/// arrival schedule is the cadence, so goose's coordinated-omission backfill is off.
fn attack(
    host: &str,
    plan: &str,
    shopper: GooseScenario,
    open: bool,
) -> anyhow::Result<GooseAttack> {
    let e = |e: GooseError| anyhow::anyhow!("configuring goose: {e:?}");
    let attack = GooseAttack::initialize_with_config(GooseConfiguration::default())
        .map_err(e)?
        .register_scenario(shopper)
        .set_scheduler(GooseScheduler::Random)
        .set_default(GooseDefault::Host, host)
        .map_err(e)?
        .set_default(GooseDefault::TestPlan, plan)
        .map_err(e)?
        .set_default(
            GooseDefault::CoordinatedOmissionMitigation,
            if open {
                GooseCoordinatedOmissionMitigation::Disabled
            } else {
                GooseCoordinatedOmissionMitigation::Average
            },
        )
        .map_err(e)?
        .set_default(GooseDefault::NoPrintMetrics, true)
        .map_err(e)?
        .set_default(GooseDefault::NoErrorSummary, true)
        .map_err(e)?
        .set_default(GooseDefault::Quiet, 1)
        .map_err(e)?
        .set_default(GooseDefault::Timeout, REQUEST_TIMEOUT_SECS)
        .map_err(e)?
        // Controllers would listen on fixed ports: two runs at once would collide.
        .set_default(GooseDefault::NoTelnet, true)
        .map_err(e)?;
    // One client, and one connection pool, shared by every user (no cookie store: the journeys
    // authenticate with bearer tokens). With goose's default, a client per user, the whole
    // pool's clients were built after the load's clock had started, and an open-model pool of
    // 800 users dropped 868-1,149 of the first 1,200 arrivals before its users ran; and each
    // user kept a connection of its own, idle between its arrivals, which cost the harness half
    // as much CPU again (docs/performance.md, row 24).
    let attack = attack
        .set_client_builder_without_cookies(GooseClientBuilder::new().without_cookies())
        .map_err(e)?;
    Ok(attack)
}

/// One goose scenario for every user: pick a customer, then the journeys by weight, pausing
/// `think` between two (closed model); or, in an open model (`think` is `None`), one arrival
/// after the other, each running the journey the mix picks.
fn shopper(
    ctx: &Arc<Ctx>,
    weights: &[(Journey, u32)],
    think: Option<ThinkTime>,
) -> anyhow::Result<GooseScenario> {
    let e = |e: GooseError| anyhow::anyhow!("configuring goose: {e:?}");
    let scenario =
        GooseScenario::new("shopper").register_transaction(journeys::sign_in(ctx).set_on_start());
    let Some(think) = think else {
        return Ok(scenario.register_transaction(journeys::arrival(ctx)));
    };
    let mut scenario = scenario
        .set_wait_time(think.min.as_std(), think.max.as_std())
        .map_err(e)?;
    for &(journey, weight) in weights {
        if weight == 0 {
            continue;
        }
        let weight = usize::try_from(weight).unwrap_or(usize::MAX);
        scenario = scenario.register_transaction(
            journeys::transaction(ctx, journey)
                .set_name(journey.name())
                .set_weight(weight)
                .map_err(e)?,
        );
    }
    Ok(scenario)
}
