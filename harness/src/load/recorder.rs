//! The measurements and history every goose user writes into: one [`Recorder`] behind a
//! mutex, held only for the few map updates of one sample, never across an await.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use contracts::domain::{OrderId, OrderStatus, Sku};

use crate::checks::model::{Completion, History, Observed, OrderAttempt, Restock};
use crate::metrics::{self, Measurements, PhaseSpan};

use super::endpoint::Endpoint;

/// The `outcomes` key of orders the load stopped following before they were terminal.
pub const UNFINISHED: &str = "UNFINISHED";

/// An order accepted by the gateway and not yet seen terminal.
#[derive(Debug, Clone, Copy)]
pub struct Pending {
    pub customer: usize,
    pub accepted: Instant,
    /// A `follow_order` journey is polling it now.
    pub claimed: bool,
    /// When the saga watch first saw it gone from the PENDING orders (the answer that showed
    /// it), on the harness's clock.
    pub left_pending: Option<Instant>,
}

pub struct Recorder {
    inner: Mutex<Inner>,
}

struct Inner {
    started: Instant,
    /// Closed model: the mean pause of a user between two journeys, for the coordinated-omission
    /// correction. `None` in an open model: the arrival schedule is the cadence, so there are
    /// no requests "that could not be sent" to make up for (late ones are counted as dropped).
    think_mean: Option<Duration>,
    /// Phases besides `all` that samples are also recorded in, by when they were sent.
    spans: Vec<PhaseSpan>,
    measurements: Measurements,
    /// Per second of the timeline: the latencies of its served requests, for its p99.
    seconds: Vec<metrics::SecondLatency>,
    history: History,
    /// Raw (uncorrected) latency sum and count per endpoint: the correction's expected
    /// interval must not feed on its own synthetic samples.
    raw: BTreeMap<Endpoint, (u128, u32)>,
    pending: BTreeMap<OrderId, Pending>,
    /// The trace id each acknowledged order's `POST` was sent with.
    trace_ids: BTreeMap<OrderId, String>,
    /// Orders seen terminal whose trace the load knows.
    traced: Vec<TracedSaga>,
    /// The last terminal status clients were shown per order, so that only a first one and a
    /// change go into the history.
    shown: BTreeMap<OrderId, OrderStatus>,
}

/// An order seen terminal, with the trace its `POST /api/orders` started: what the hop
/// breakdown of the report reads from the collected spans.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TracedSaga {
    pub order_id: OrderId,
    /// 32 lowercase hex digits.
    pub trace_id: String,
    /// `all` and the phases its order was accepted in.
    pub phases: Vec<String>,
    /// When the saga reached its terminal status (wall clock, ns since the Unix epoch): later
    /// spans of the trace (the commit and capture after CONFIRMED) are not its time.
    pub terminal_at_unix_ns: u64,
    /// Accepted to terminal, µs.
    pub completion_us: u64,
}

/// One request as the load saw it.
#[derive(Debug, Clone, Copy)]
pub struct Sample {
    pub endpoint: Endpoint,
    pub sent: Instant,
    pub took: Duration,
    /// `0` when no answer came (timeout, refused, reset).
    pub status: u16,
    /// The system shed it: 429 or 503 with `Retry-After`.
    pub shed: bool,
}

/// The open model's arrivals that did not start go into the measurements.
impl super::arrivals::Tally for Recorder {
    fn dropped(&self, dues: &[Duration]) {
        Recorder::dropped(self, dues);
    }
    fn paused(&self, dues: &[Duration]) {
        Recorder::paused(self, dues);
    }
}

impl Recorder {
    /// `think_mean` is the mean pause of a user between two journeys in a closed model, `None`
    /// in an open one (no coordinated-omission correction); a request sent (an order accepted,
    /// a journey due) within one of `spans` is recorded in that phase too.
    pub fn new(think_mean: Option<Duration>, spans: Vec<PhaseSpan>) -> Self {
        Self {
            inner: Mutex::new(Inner {
                started: Instant::now(),
                think_mean,
                spans,
                measurements: Measurements::default(),
                seconds: Vec::new(),
                history: History::default(),
                raw: BTreeMap::new(),
                pending: BTreeMap::new(),
                trace_ids: BTreeMap::new(),
                traced: Vec::new(),
                shown: BTreeMap::new(),
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock leaves plain counters behind; they are still usable.
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Seconds of the timeline count from here.
    pub fn start(&self, at: Instant) {
        self.lock().started = at;
        crate::console::live::load_started(at);
    }

    /// Records one request: ok, error (by status) or shed, and its one-second bucket; unless it
    /// was shed, its latency, corrected in a closed model for coordinated omission with the
    /// user's expected cadence (the endpoint's mean latency so far plus the mean think time).
    pub fn request(&self, s: Sample) {
        crate::console::live::request(s.endpoint.name(), s.status, s.took);
        let mut guard = self.lock();
        let inner = &mut *guard;
        let expected = if s.shed {
            None
        } else {
            let (sum, n) = inner.raw.entry(s.endpoint).or_insert((0, 0));
            let expected = inner.think_mean.filter(|_| *n > 0).map(|think| {
                let mean = Duration::from_micros(u64::try_from(*sum / u128::from(*n)).unwrap_or(0));
                mean + think
            });
            *sum += s.took.as_micros();
            *n = n.saturating_add(1);
            expected
        };

        let ok = (200..300).contains(&s.status);
        let at = s.sent.saturating_duration_since(inner.started);
        for phase in phases_at(&inner.spans, at) {
            let stats = inner.measurements.endpoint_mut(&phase, s.endpoint.name());
            if s.shed {
                stats.shed += 1;
                *stats.shed_by_status.entry(s.status).or_default() += 1;
                continue;
            }
            match expected {
                Some(interval) if !interval.is_zero() => {
                    stats.latency.record_corrected(s.took, interval)
                }
                _ => stats.latency.record(s.took),
            }
            if ok {
                stats.ok += 1;
            } else {
                stats.errors += 1;
                *stats.errors_by_status.entry(s.status).or_default() += 1;
            }
        }
        let second = at.as_secs();
        let bucket = inner.measurements.bucket_mut(second);
        bucket.requests += 1;
        if s.shed {
            bucket.shed += 1;
            return;
        }
        let us = u64::try_from(s.took.as_micros()).unwrap_or(u64::MAX);
        bucket.errors += u64::from(!ok);
        bucket.latency_sum_us = bucket.latency_sum_us.saturating_add(us);
        bucket.max_latency_us = bucket.max_latency_us.max(us);
        let idx = usize::try_from(second).unwrap_or(usize::MAX);
        if inner.seconds.len() <= idx {
            inner.seconds.resize_with(idx + 1, Default::default);
        }
        inner.seconds[idx].record(s.took);
    }

    /// Open model: the journeys of the schedule, each by when it was due: counted as
    /// scheduled in its second and phases. Called once, with every arrival.
    pub fn scheduled(&self, dues: impl IntoIterator<Item = Duration>) {
        let mut guard = self.lock();
        let inner = &mut *guard;
        inner
            .measurements
            .arrivals
            .entry(metrics::ALL.to_string())
            .or_default();
        for due in dues {
            for phase in phases_at(&inner.spans, due) {
                inner
                    .measurements
                    .arrivals
                    .entry(phase)
                    .or_default()
                    .scheduled += 1;
            }
            inner.measurements.bucket_mut(due.as_secs()).arrivals += 1;
        }
    }

    /// Open model: a journey due at `due` (since the start of the load) started.
    pub fn arrival_started(&self, due: Duration) {
        let mut guard = self.lock();
        let inner = &mut *guard;
        for phase in phases_at(&inner.spans, due) {
            inner
                .measurements
                .arrivals
                .entry(phase)
                .or_default()
                .started += 1;
        }
    }

    /// Open model: journeys due at `dues` were not started because the operator had the load
    /// paused: neither started nor dropped.
    pub fn paused(&self, dues: &[Duration]) {
        crate::console::live::arrivals_paused(dues.len() as u64);
        let mut guard = self.lock();
        let inner = &mut *guard;
        for due in dues {
            for phase in phases_at(&inner.spans, *due) {
                inner.measurements.arrivals.entry(phase).or_default().paused += 1;
            }
        }
    }

    /// Open model: journeys that were due at `dues` were dropped: every user was busy.
    pub fn dropped(&self, dues: &[Duration]) {
        let mut guard = self.lock();
        let inner = &mut *guard;
        for due in dues {
            for phase in phases_at(&inner.spans, *due) {
                inner
                    .measurements
                    .arrivals
                    .entry(phase)
                    .or_default()
                    .dropped += 1;
            }
            inner.measurements.bucket_mut(due.as_secs()).dropped += 1;
        }
    }

    /// Records a `POST /api/orders` sent with the trace `trace_id` and, when it was
    /// acknowledged, starts following the order (a replay of an order already followed changes
    /// nothing).
    pub fn attempt(
        &self,
        attempt: OrderAttempt,
        customer: usize,
        answered: Instant,
        trace_id: Option<&str>,
    ) {
        let mut inner = self.lock();
        if let Some(id) = attempt.outcome.acknowledged() {
            inner.pending.entry(id).or_insert(Pending {
                customer,
                accepted: answered,
                claimed: false,
                left_pending: None,
            });
            if let Some(t) = trace_id {
                inner.trace_ids.entry(id).or_insert_with(|| t.to_string());
            }
        }
        inner.history.attempts.push(attempt);
    }

    /// Claims the oldest unclaimed pending order of `customer` accepted at least `age` ago.
    pub fn claim(&self, customer: usize, age: Duration) -> Option<(OrderId, Pending)> {
        let mut inner = self.lock();
        let now = Instant::now();
        let (id, p) = inner
            .pending
            .iter_mut()
            .filter(|(_, p)| {
                p.customer == customer && !p.claimed && now.duration_since(p.accepted) >= age
            })
            .min_by_key(|(_, p)| p.accepted)?;
        p.claimed = true;
        Some((*id, *p))
    }

    /// Gives a claimed order back, still pending.
    pub fn release(&self, id: OrderId) {
        if let Some(p) = self.lock().pending.get_mut(&id) {
            p.claimed = false;
        }
    }

    /// Records a restock the load sent and how it ended.
    pub fn restock(&self, sku: Sku, quantity: i64, outcome: Completion) {
        self.lock().history.restocks.push(Restock {
            sku,
            quantity,
            outcome,
        });
    }

    /// A client was shown `status` for order `id` at `at`: recorded in the history when it is
    /// the first terminal status shown for the order or differs from the last one.
    pub fn shown(&self, id: OrderId, status: OrderStatus, at: Instant) {
        if !status.is_terminal() {
            return;
        }
        let mut guard = self.lock();
        let inner = &mut *guard;
        if inner.shown.insert(id, status) == Some(status) {
            return;
        }
        let at_ms = at.saturating_duration_since(inner.started).as_millis();
        inner.history.observed.push(Observed {
            order_id: id,
            status,
            at_ms: u64::try_from(at_ms).unwrap_or(u64::MAX),
        });
    }

    /// The saga watch listed the PENDING orders with a request sent at `asked` and answered at
    /// `answered`: every order accepted before `asked` (so committed PENDING before the list was
    /// read) and not in `still_pending` has left PENDING by `answered`. Returns those newly
    /// seen gone.
    pub fn pending_listed(
        &self,
        still_pending: &BTreeSet<OrderId>,
        asked: Instant,
        answered: Instant,
    ) -> Vec<OrderId> {
        let mut inner = self.lock();
        let mut gone = Vec::new();
        for (id, p) in inner.pending.iter_mut() {
            if p.left_pending.is_none() && p.accepted <= asked && !still_pending.contains(id) {
                p.left_pending = Some(answered);
                gone.push(*id);
            }
        }
        gone
    }

    /// Whether an order is pending that the saga watch has not seen leave PENDING yet.
    pub fn watching(&self) -> bool {
        self.lock()
            .pending
            .values()
            .any(|p| p.left_pending.is_none())
    }

    /// The orders not yet seen terminal.
    pub fn pending(&self) -> Vec<(OrderId, Pending)> {
        self.lock()
            .pending
            .iter()
            .map(|(id, p)| (*id, *p))
            .collect()
    }

    /// An order seen terminal at `seen`. Records its saga completion time, the outcome, and the
    /// second the saga finished in. The time is the harness's own: from the answer that
    /// accepted the order to the first moment a client saw it finished, the earlier of `seen`
    /// and the saga watch seeing it leave PENDING ([`Recorder::pending_listed`]); the system's
    /// timestamps are not used, so a service with a wrong clock or a wrong `updated_at` cannot
    /// make its sagas look fast. An order not pending (already recorded) is ignored.
    pub fn terminal(&self, id: OrderId, status: OrderStatus, seen: Instant) {
        let mut guard = self.lock();
        let inner = &mut *guard;
        let Some(p) = inner.pending.remove(&id) else {
            return;
        };
        let finished = p.left_pending.map_or(seen, |left| left.min(seen));
        let took = finished.saturating_duration_since(p.accepted);
        let accepted_at = p.accepted.saturating_duration_since(inner.started);
        let phases = phases_at(&inner.spans, accepted_at);
        for phase in &phases {
            inner
                .measurements
                .saga_completion
                .entry(phase.clone())
                .or_default()
                .record(took);
        }
        if let Some(trace_id) = inner.trace_ids.remove(&id) {
            // The terminal moment on the wall clock, which span times are in.
            let ago = Instant::now().saturating_duration_since(p.accepted + took);
            let terminal = std::time::SystemTime::now()
                .checked_sub(ago)
                .unwrap_or(std::time::UNIX_EPOCH)
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap_or_default();
            inner.traced.push(TracedSaga {
                order_id: id,
                trace_id,
                phases,
                terminal_at_unix_ns: u64::try_from(terminal.as_nanos()).unwrap_or(u64::MAX),
                completion_us: u64::try_from(took.as_micros()).unwrap_or(u64::MAX),
            });
        }
        *inner
            .measurements
            .outcomes
            .entry(status.as_str().to_string())
            .or_default() += 1;
        // The second the saga finished, not the (possibly much later) second we looked.
        let second = finished.saturating_duration_since(inner.started).as_secs();
        let bucket = inner.measurements.bucket_mut(second);
        match status {
            OrderStatus::Confirmed => bucket.orders_confirmed += 1,
            OrderStatus::Rejected => bucket.orders_rejected += 1,
            OrderStatus::Cancelled => bucket.orders_cancelled += 1,
            OrderStatus::Pending => {}
        }
    }

    /// What was measured so far, as the run's end judges it (the load's phases as its
    /// windows, measured until now), and the traced sagas seen terminal after the first
    /// `traced_from`: for the console's live SLOs.
    pub fn so_far(&self, traced_from: usize) -> (Measurements, Vec<TracedSaga>) {
        let inner = self.lock();
        let mut m = inner.measurements.clone();
        m.windows = inner.spans.clone();
        m.duration = inner.started.elapsed();
        m.measured_until = m.duration;
        let traced = inner.traced.get(traced_from..).unwrap_or_default().to_vec();
        (m, traced)
    }

    /// The traced sagas seen terminal so far (taken: a second call returns the newer ones).
    pub fn take_traced(&self) -> Vec<TracedSaga> {
        std::mem::take(&mut self.lock().traced)
    }

    /// Ends the run: orders still pending count as [`UNFINISHED`].
    pub fn finish(&self, load_time: Duration) -> (Measurements, History) {
        crate::console::live::load_finished();
        let mut inner = self.lock();
        let unfinished = inner.pending.len() as u64;
        inner.pending.clear();
        if unfinished > 0 {
            *inner
                .measurements
                .outcomes
                .entry(UNFINISHED.to_string())
                .or_default() += unfinished;
        }
        inner.measurements.duration = load_time;
        let seconds = std::mem::take(&mut inner.seconds);
        for (second, latency) in seconds.iter().enumerate() {
            if let Some(p99) = latency.p99_us() {
                inner.measurements.bucket_mut(second as u64).p99_us = Some(p99);
            }
        }
        inner.shown.clear();
        (
            std::mem::take(&mut inner.measurements),
            std::mem::take(&mut inner.history),
        )
    }
}

/// `all` and every span `at` falls in.
fn phases_at(spans: &[PhaseSpan], at: Duration) -> Vec<String> {
    std::iter::once(metrics::ALL.to_string())
        .chain(
            spans
                .iter()
                .filter(|s| s.contains(at))
                .map(|s| s.name.clone()),
        )
        .collect()
}

#[cfg(test)]
mod tests {
    use contracts::domain::CustomerId;

    use super::*;
    use crate::checks::model::AttemptOutcome;

    fn sample(endpoint: Endpoint, sent: Instant, ms: u64, status: u16) -> Sample {
        Sample {
            endpoint,
            sent,
            took: Duration::from_millis(ms),
            status,
            shed: false,
        }
    }

    #[test]
    fn requests_are_counted_by_status_and_second_and_slow_ones_are_corrected() {
        let r = Recorder::new(Some(Duration::ZERO), Vec::new());
        let t0 = Instant::now();
        r.start(t0);
        for _ in 0..9 {
            r.request(sample(Endpoint::ListProducts, t0, 10, 200));
        }
        // 100 ms against a cadence of 10 ms: it stands for the requests that could not be sent.
        r.request(sample(
            Endpoint::ListProducts,
            t0 + Duration::from_millis(1500),
            100,
            503,
        ));
        r.request(sample(Endpoint::PlaceOrder, t0, 5, 0));
        let (m, _) = r.finish(Duration::from_secs(2));
        let list = &m.endpoints[metrics::ALL]["GET /api/products"];
        assert_eq!((list.ok, list.errors), (9, 1));
        assert_eq!(list.errors_by_status[&503], 1);
        assert!(list.latency.count() > 10, "{}", list.latency.count());
        let post = &m.endpoints[metrics::ALL]["POST /api/orders"];
        assert_eq!(post.errors_by_status[&0], 1);
        assert_eq!(m.timeline.len(), 2);
        assert_eq!((m.timeline[0].requests, m.timeline[0].errors), (10, 1));
        assert_eq!((m.timeline[1].requests, m.timeline[1].errors), (1, 1));
        assert_eq!(m.timeline[1].max_latency_us, 100_000);
        // Each second's p99, of its own raw latencies: the correction's samples are not in it.
        let p99 = |second: usize| m.timeline[second].p99_us.unwrap();
        assert!((10_000..10_100).contains(&p99(0)), "{}", p99(0));
        assert!((100_000..101_000).contains(&p99(1)), "{}", p99(1));
        assert_eq!(m.duration, Duration::from_secs(2));
    }

    #[test]
    fn an_acknowledged_order_is_followed_once_and_its_completion_measured() {
        let r = Recorder::new(Some(Duration::from_millis(100)), Vec::new());
        let t0 = Instant::now();
        r.start(t0);
        let id = OrderId::new();
        let attempt = |replayed| OrderAttempt {
            customer_id: CustomerId::parse("cust-0001").unwrap(),
            idempotency_key: Some("k1".into()),
            lines: Vec::new(),
            outcome: AttemptOutcome::Acknowledged {
                order_id: id,
                replayed,
            },
        };
        r.attempt(
            attempt(false),
            3,
            t0,
            Some("0af7651916cd43dd8448eb211c80319c"),
        );
        r.attempt(attempt(true), 3, t0 + Duration::from_millis(5), None);
        assert_eq!(r.pending().len(), 1);
        assert!(
            r.claim(4, Duration::ZERO).is_none(),
            "another customer's order"
        );
        let (claimed, _) = r.claim(3, Duration::ZERO).unwrap();
        assert_eq!(claimed, id);
        assert!(r.claim(3, Duration::ZERO).is_none(), "already claimed");
        r.release(id);
        assert!(r.claim(3, Duration::ZERO).is_some());

        // The watch saw it leave PENDING in the answer at 1.2 s, a client saw it CONFIRMED at
        // 1.5 s: the earlier of the two, both on the harness's clock.
        let none = BTreeSet::new();
        let gone = r.pending_listed(
            &none,
            t0 + Duration::from_millis(1100),
            t0 + Duration::from_millis(1200),
        );
        assert_eq!(gone, [id]);
        assert!(
            r.pending_listed(
                &none,
                t0 + Duration::from_millis(1300),
                t0 + Duration::from_millis(1400)
            )
            .is_empty(),
            "seen gone once"
        );
        r.terminal(id, OrderStatus::Confirmed, t0 + Duration::from_millis(1500));
        r.terminal(id, OrderStatus::Confirmed, t0 + Duration::from_millis(1600));
        let other = OrderId::new();
        r.attempt(
            OrderAttempt {
                outcome: AttemptOutcome::Acknowledged {
                    order_id: other,
                    replayed: false,
                },
                ..attempt(false)
            },
            3,
            t0,
            None,
        );
        let traced = r.take_traced();
        assert_eq!(
            traced.len(),
            1,
            "only the traced order that became terminal"
        );
        assert_eq!(traced[0].order_id, id);
        assert_eq!(traced[0].phases, vec![metrics::ALL.to_string()]);
        assert_eq!(traced[0].completion_us, 1_200_000);
        let (m, h) = r.finish(Duration::from_secs(2));
        assert_eq!(h.attempts.len(), 3);
        let saga = &m.saga_completion[metrics::ALL];
        assert_eq!(saga.count(), 1);
        let p50 = saga.quantile(0.5).unwrap().as_millis();
        assert!((1195..=1205).contains(&p50), "{p50}");
        assert_eq!(m.outcomes["CONFIRMED"], 1);
        assert_eq!(m.outcomes[UNFINISHED], 1);
        assert_eq!(m.timeline[1].orders_confirmed, 1);
    }
}

#[cfg(test)]
mod phase_tests {
    use super::*;

    #[test]
    fn samples_are_also_recorded_in_the_phase_they_were_sent_in() {
        let spans = vec![
            PhaseSpan {
                name: "step:0".into(),
                start: Duration::ZERO,
                end: Duration::from_secs(1),
            },
            PhaseSpan {
                name: "step:1".into(),
                start: Duration::from_secs(1),
                end: Duration::from_secs(2),
            },
        ];
        let r = Recorder::new(Some(Duration::ZERO), spans);
        let t0 = Instant::now();
        r.start(t0);
        let at = |ms| Sample {
            endpoint: Endpoint::ListProducts,
            sent: t0 + Duration::from_millis(ms),
            took: Duration::from_millis(1),
            status: 200,
            shed: false,
        };
        r.request(at(100));
        r.request(at(1000));
        r.request(at(1999));
        r.request(at(2500));
        let (m, _) = r.finish(Duration::from_secs(3));
        let count = |phase: &str| m.endpoints[phase]["GET /api/products"].ok;
        assert_eq!(count(metrics::ALL), 4);
        assert_eq!(count("step:0"), 1);
        assert_eq!(count("step:1"), 2);
        assert!(!m.endpoints.contains_key("step:2"));
    }
}

#[cfg(test)]
mod shed_and_arrival_tests {
    use super::*;

    fn span(name: &str, from: u64, to: u64) -> PhaseSpan {
        PhaseSpan {
            name: name.into(),
            start: Duration::from_secs(from),
            end: Duration::from_secs(to),
        }
    }

    #[test]
    fn a_shed_request_is_counted_apart_untimed_and_out_of_the_error_rate() {
        let r = Recorder::new(None, vec![span("step:1", 1, 2)]);
        let t0 = Instant::now();
        r.start(t0);
        let at = |ms, status, shed| Sample {
            endpoint: Endpoint::PlaceOrder,
            sent: t0 + Duration::from_millis(ms),
            took: Duration::from_millis(if shed { 1 } else { 400 }),
            status,
            shed,
        };
        r.request(at(100, 201, false));
        r.request(at(200, 503, true));
        r.request(at(1_100, 429, true));
        r.request(at(1_200, 503, false));
        let (m, _) = r.finish(Duration::from_secs(2));
        let post = &m.endpoints[metrics::ALL]["POST /api/orders"];
        assert_eq!((post.ok, post.errors, post.shed), (1, 1, 2));
        assert_eq!(post.shed_by_status, BTreeMap::from([(429, 1), (503, 1)]));
        assert_eq!(post.errors_by_status, BTreeMap::from([(503, 1)]));
        assert_eq!(post.requests(), 4);
        assert!((post.error_rate() - 0.5).abs() < 1e-12);
        assert_eq!(post.latency.count(), 2, "only served requests are timed");
        assert!(
            post.latency.quantile(0.0).unwrap() >= Duration::from_millis(399),
            "the 1 ms refusals are not among the latencies"
        );
        assert_eq!(m.endpoints["step:1"]["POST /api/orders"].shed, 1);
        let second = |s: usize| {
            (
                m.timeline[s].requests,
                m.timeline[s].errors,
                m.timeline[s].shed,
            )
        };
        assert_eq!(second(0), (2, 0, 1));
        assert_eq!(second(1), (2, 1, 1));
        assert_eq!(m.timeline[1].mean_latency_us(), Some(400_000.0));
    }

    #[test]
    fn open_model_requests_are_not_corrected_for_coordinated_omission() {
        let r = Recorder::new(None, Vec::new());
        let t0 = Instant::now();
        r.start(t0);
        for ms in [10, 10, 10, 1_000] {
            r.request(Sample {
                endpoint: Endpoint::ListProducts,
                sent: t0,
                took: Duration::from_millis(ms),
                status: 200,
                shed: false,
            });
        }
        let (m, _) = r.finish(Duration::from_secs(1));
        assert_eq!(
            m.endpoints[metrics::ALL]["GET /api/products"]
                .latency
                .count(),
            4
        );
    }

    #[test]
    fn arrivals_are_counted_by_the_second_and_phase_they_were_due_in() {
        let r = Recorder::new(None, vec![span("step:0", 0, 1), span("step:1", 1, 3)]);
        r.start(Instant::now());
        let ms = Duration::from_millis;
        r.scheduled([ms(0), ms(500), ms(1_000), ms(1_500), ms(2_000), ms(2_500)]);
        for due in [ms(0), ms(500), ms(1_000)] {
            r.arrival_started(due);
        }
        r.dropped(&[ms(1_500), ms(2_000)]);
        r.dropped(&[ms(2_500)]);
        let (m, _) = r.finish(Duration::from_secs(3));
        let counts = |phase: &str| m.arrivals[phase];
        let all = counts(metrics::ALL);
        assert_eq!((all.scheduled, all.started, all.dropped), (6, 3, 3));
        assert_eq!(
            counts("step:0"),
            metrics::ArrivalCounts {
                scheduled: 2,
                started: 2,
                dropped: 0,
                paused: 0
            }
        );
        assert_eq!(counts("step:1").dropped, 3);
        let per_second: Vec<(u64, u64)> =
            m.timeline.iter().map(|b| (b.arrivals, b.dropped)).collect();
        assert_eq!(per_second, [(2, 0), (2, 1), (2, 2)]);
    }

    #[test]
    fn arrivals_paused_by_the_operator_are_neither_started_nor_dropped_and_add_up() {
        let r = Recorder::new(None, vec![span("before", 0, 1), span("after", 1, 3)]);
        r.start(Instant::now());
        let ms = Duration::from_millis;
        r.scheduled([ms(0), ms(500), ms(1_000), ms(1_500), ms(2_000), ms(2_500)]);
        r.arrival_started(ms(0));
        r.arrival_started(ms(2_500));
        r.dropped(&[ms(500)]);
        r.paused(&[ms(1_000), ms(1_500)]);
        r.paused(&[ms(2_000)]);
        let (m, _) = r.finish(Duration::from_secs(3));
        let all = m.arrivals[metrics::ALL];
        assert_eq!(
            (all.scheduled, all.started, all.dropped, all.paused),
            (6, 2, 1, 3)
        );
        assert_eq!(all.scheduled, all.started + all.dropped + all.paused);
        assert_eq!(m.arrivals["after"].paused, 3);
        assert_eq!(m.arrivals["before"].paused, 0);
        let dropped: u64 = m.timeline.iter().map(|b| b.dropped).sum();
        assert_eq!(dropped, 1, "a paused arrival is not a dropped one");
    }
}

#[cfg(test)]
mod client_clock_tests {
    use contracts::domain::{CustomerId, Sku};

    use super::*;
    use crate::checks::model::AttemptOutcome;

    fn accept(r: &Recorder, at: Instant) -> OrderId {
        let id = OrderId::new();
        r.attempt(
            OrderAttempt {
                customer_id: CustomerId::parse("cust-0001").unwrap(),
                idempotency_key: Some(id.to_string()),
                lines: Vec::new(),
                outcome: AttemptOutcome::Acknowledged {
                    order_id: id,
                    replayed: false,
                },
            },
            0,
            at,
            None,
        );
        id
    }

    #[test]
    fn saga_completion_is_the_clients_time_from_acceptance_to_seeing_it_finished() {
        let r = Recorder::new(None, Vec::new());
        let t0 = Instant::now();
        r.start(t0);
        let ms = Duration::from_millis;
        let unwatched = accept(&r, t0);
        let late = accept(&r, t0 + ms(500));
        // Listed while `late` was not accepted yet: its absence says nothing.
        let gone = r.pending_listed(&BTreeSet::from([unwatched]), t0 + ms(400), t0 + ms(450));
        assert!(gone.is_empty(), "{gone:?}");
        assert!(r.watching());

        r.terminal(unwatched, OrderStatus::Rejected, t0 + ms(2_000));
        r.terminal(late, OrderStatus::Confirmed, t0 + ms(2_500));

        let (m, _) = r.finish(Duration::from_secs(3));
        let saga = &m.saga_completion[metrics::ALL];
        assert_eq!(saga.count(), 2);
        let min = saga.quantile(0.0).unwrap().as_millis();
        assert!((1_995..=2_005).contains(&min), "{min}");
    }

    #[test]
    fn terminal_statuses_shown_go_into_the_history_once_and_again_when_they_change() {
        let r = Recorder::new(None, Vec::new());
        let t0 = Instant::now();
        r.start(t0);
        let id = OrderId::new();
        let ms = Duration::from_millis;
        r.shown(id, OrderStatus::Pending, t0 + ms(10));
        r.shown(id, OrderStatus::Confirmed, t0 + ms(20));
        r.shown(id, OrderStatus::Confirmed, t0 + ms(30));
        r.shown(id, OrderStatus::Cancelled, t0 + ms(40));
        let sku = Sku::parse("SKU-1001").unwrap();
        r.restock(sku.clone(), 4, Completion::Info);

        let (_, h) = r.finish(Duration::from_secs(1));

        let shown: Vec<(OrderStatus, u64)> =
            h.observed.iter().map(|o| (o.status, o.at_ms)).collect();
        assert_eq!(
            shown,
            [(OrderStatus::Confirmed, 20), (OrderStatus::Cancelled, 40)]
        );
        assert_eq!(
            h.restocks,
            [Restock {
                sku,
                quantity: 4,
                outcome: Completion::Info
            }]
        );
    }
}
