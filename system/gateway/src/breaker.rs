//! The circuit breaker per upstream service, with Resilience4j's semantics (DESIGN.md,
//! "Resilience in the gateway"): closed, it lets every call through and counts the outcomes in a
//! time-based sliding window; when the window holds at least `min_calls` calls and the share
//! that failed (or was slow) reaches its threshold, it opens and answers at once for `open_for`;
//! then it lets `half_open_calls` probes through, and their outcomes close it again or reopen it.
//!
//! Written here rather than taken from `tower-resilience-circuitbreaker` (which the gateway used
//! before): that crate keeps one record per call in its time-based window and counts them all
//! again on every call, under its lock. At 6,000 calls a second with the 10 s window that is
//! 60,000 records walked per call: 11.6 % of the gateway's CPU in `perf`, the largest single
//! item, growing with the rate. This window is a ring of buckets (as Resilience4j's own is), so a
//! call costs the same at any rate. `failsafe` has bucketed windows but no slow-call rate and a
//! single half-open probe.

use std::future::Future;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::time::Instant;

use crate::metrics as m;
use crate::resilience::BreakerConfig;
use crate::routes::Service;

/// The states, numbered as the `gateway_breaker_state` gauge shows them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BreakerState {
    Closed = 0,
    Open = 1,
    HalfOpen = 2,
}

impl BreakerState {
    pub fn name(self) -> &'static str {
        match self {
            Self::Closed => "closed",
            Self::Open => "open",
            Self::HalfOpen => "half_open",
        }
    }
}

/// Buckets of the sliding window: it moves in steps of a tenth of its length.
const BUCKETS: usize = 10;

/// One service's breaker.
pub struct Breaker {
    service: Service,
    config: BreakerConfig,
    inner: Mutex<Inner>,
}

struct Inner {
    state: BreakerState,
    /// Bumped on every change of state: an outcome counts only in the state its call started in.
    cycle: u64,
    /// Open: when probes may start.
    open_until: Instant,
    window: Window,
    /// Half-open: probes let through, and their outcomes so far.
    probes: usize,
    probe_outcomes: Counts,
}

#[derive(Debug, Clone, Copy, Default, PartialEq)]
struct Counts {
    calls: u64,
    failures: u64,
    slow: u64,
}

impl Counts {
    fn add(&mut self, failed: bool, slow: bool) {
        self.calls += 1;
        self.failures += u64::from(failed);
        self.slow += u64::from(slow);
    }
}

/// The time-based sliding window: `BUCKETS` buckets of a tenth of it each, indexed by the
/// number of bucket lengths since `origin`; a bucket older than the window is reset when its
/// slot is reused, and left out of the totals.
struct Window {
    origin: Instant,
    bucket: Duration,
    slots: [(u64, Counts); BUCKETS],
}

impl Window {
    fn new(length: Duration, now: Instant) -> Self {
        Self {
            origin: now,
            bucket: (length / BUCKETS as u32).max(Duration::from_millis(1)),
            slots: [(0, Counts::default()); BUCKETS],
        }
    }

    fn index(&self, now: Instant) -> u64 {
        let since = now.saturating_duration_since(self.origin).as_nanos();
        u64::try_from(since / self.bucket.as_nanos()).unwrap_or(u64::MAX)
    }

    fn add(&mut self, now: Instant, failed: bool, slow: bool) {
        let index = self.index(now);
        let slot = &mut self.slots[(index % BUCKETS as u64) as usize];
        if slot.0 != index {
            *slot = (index, Counts::default());
        }
        slot.1.add(failed, slow);
    }

    fn totals(&self, now: Instant) -> Counts {
        let index = self.index(now);
        let mut total = Counts::default();
        for (at, counts) in &self.slots {
            if *at <= index && index - at < BUCKETS as u64 {
                total.calls += counts.calls;
                total.failures += counts.failures;
                total.slow += counts.slow;
            }
        }
        total
    }

    fn clear(&mut self) {
        self.slots = [(0, Counts::default()); BUCKETS];
    }
}

/// Why a call was refused: the breaker is open (or its probes are all out), for about this long.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Refused {
    pub retry_after: Duration,
}

/// A call let through; its outcome goes back with [`Permit::finish`]. Dropped unfinished (the
/// call was cancelled), a half-open probe's place goes to the next call.
pub struct Permit {
    breaker: Arc<Breaker>,
    cycle: u64,
    started: Instant,
    finished: bool,
}

impl Permit {
    /// The call ended; `failed` as the gateway judges it.
    pub fn finish(mut self, failed: bool) {
        self.finished = true;
        let slow = self.started.elapsed() >= self.breaker.config.slow_call;
        self.breaker
            .record(self.cycle, failed, slow, Instant::now());
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        if !self.finished {
            self.breaker.cancelled(self.cycle);
        }
    }
}

impl Breaker {
    pub fn new(service: Service, config: BreakerConfig) -> Arc<Self> {
        let now = Instant::now();
        Arc::new(Self {
            service,
            inner: Mutex::new(Inner {
                state: BreakerState::Closed,
                cycle: 0,
                open_until: now,
                window: Window::new(config.window, now),
                probes: 0,
                probe_outcomes: Counts::default(),
            }),
            config,
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub fn state(&self) -> BreakerState {
        self.lock().state
    }

    /// Lets a call through, or refuses it.
    pub fn acquire(self: &Arc<Self>) -> Result<Permit, Refused> {
        let now = Instant::now();
        let mut inner = self.lock();
        if inner.state == BreakerState::Open {
            if now < inner.open_until {
                return Err(Refused {
                    retry_after: inner.open_until - now,
                });
            }
            self.transition(&mut inner, BreakerState::HalfOpen, now);
        }
        if inner.state == BreakerState::HalfOpen {
            if inner.probes >= self.config.half_open_calls {
                // The probes decide within a call's time; a slow call is the longest they take.
                return Err(Refused {
                    retry_after: self.config.slow_call.min(self.config.open_for),
                });
            }
            inner.probes += 1;
        }
        Ok(Permit {
            breaker: self.clone(),
            cycle: inner.cycle,
            started: now,
            finished: false,
        })
    }

    /// Runs `call` under the breaker: refused at once while open, its outcome counted
    /// otherwise (`failed` judges it).
    pub async fn call<T, F>(
        self: &Arc<Self>,
        call: F,
        failed: impl FnOnce(&T) -> bool,
    ) -> Result<T, Refused>
    where
        F: Future<Output = T>,
    {
        let permit = self.acquire()?;
        let outcome = call.await;
        permit.finish(failed(&outcome));
        Ok(outcome)
    }

    fn record(&self, cycle: u64, failed: bool, slow: bool, now: Instant) {
        let mut inner = self.lock();
        if inner.cycle != cycle {
            // Started before the last change of state: says nothing about this one.
            return;
        }
        match inner.state {
            BreakerState::Closed => {
                inner.window.add(now, failed, slow);
                let total = inner.window.totals(now);
                if total.calls >= self.config.min_calls as u64 && self.trips(total) {
                    self.transition(&mut inner, BreakerState::Open, now);
                }
            }
            BreakerState::HalfOpen => {
                inner.probe_outcomes.add(failed, slow);
                let outcomes = inner.probe_outcomes;
                if outcomes.calls >= self.config.half_open_calls as u64 {
                    let to = if self.trips(outcomes) {
                        BreakerState::Open
                    } else {
                        BreakerState::Closed
                    };
                    self.transition(&mut inner, to, now);
                }
            }
            BreakerState::Open => {}
        }
    }

    fn cancelled(&self, cycle: u64) {
        let mut inner = self.lock();
        if inner.cycle == cycle && inner.state == BreakerState::HalfOpen {
            inner.probes = inner.probes.saturating_sub(1);
        }
    }

    fn trips(&self, counts: Counts) -> bool {
        let share = |n: u64| n as f64 / counts.calls.max(1) as f64;
        share(counts.failures) >= self.config.failure_rate
            || share(counts.slow) >= self.config.slow_call_rate
    }

    fn transition(&self, inner: &mut Inner, to: BreakerState, now: Instant) {
        let from = inner.state;
        inner.state = to;
        inner.cycle += 1;
        inner.window.clear();
        inner.probes = 0;
        inner.probe_outcomes = Counts::default();
        if to == BreakerState::Open {
            inner.open_until = now + self.config.open_for;
        }
        let service = self.service.name();
        tracing::warn!(
            service,
            from = from.name(),
            to = to.name(),
            "circuit breaker changed state"
        );
        metrics::gauge!(m::BREAKER_STATE, "service" => service).set(f64::from(to as u8));
        metrics::counter!(
            m::BREAKER_TRANSITIONS,
            "service" => service,
            "from" => from.name(),
            "to" => to.name(),
        )
        .increment(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn breaker(min_calls: usize, half_open_calls: usize) -> Arc<Breaker> {
        Breaker::new(
            Service::Payment,
            BreakerConfig {
                min_calls,
                half_open_calls,
                window: Duration::from_secs(10),
                open_for: Duration::from_secs(5),
                slow_call: Duration::from_secs(2),
                ..BreakerConfig::default()
            },
        )
    }

    fn outcome(b: &Arc<Breaker>, failed: bool) {
        b.acquire().expect("let through").finish(failed);
    }

    #[tokio::test(start_paused = true)]
    async fn it_opens_at_the_failure_rate_once_the_window_holds_enough_calls() {
        let b = breaker(10, 2);
        for _ in 0..5 {
            outcome(&b, true);
        }
        assert_eq!(b.state(), BreakerState::Closed, "5 calls: fewer than 10");
        for _ in 0..4 {
            outcome(&b, false);
        }
        assert_eq!(b.state(), BreakerState::Closed, "9 calls");
        outcome(&b, false);
        // 5 of 10 failed: 0.5 reaches the threshold.
        assert_eq!(b.state(), BreakerState::Open);
        let refused = b.acquire().err().expect("open: refused");
        assert_eq!(refused.retry_after, Duration::from_secs(5));
        tokio::time::advance(Duration::from_secs(2)).await;
        let refused = b.acquire().err().expect("still open");
        assert_eq!(refused.retry_after, Duration::from_secs(3));
    }

    #[tokio::test(start_paused = true)]
    async fn failures_older_than_the_window_no_longer_count() {
        let b = breaker(10, 2);
        for _ in 0..9 {
            outcome(&b, true);
        }
        // The window is 10 s: they leave it between 9 and 11 s from now.
        tokio::time::advance(Duration::from_secs(11)).await;
        for _ in 0..10 {
            outcome(&b, false);
        }
        assert_eq!(b.state(), BreakerState::Closed);
        // Half of a full window failing opens it again.
        for _ in 0..10 {
            outcome(&b, true);
        }
        assert_eq!(b.state(), BreakerState::Open);
    }

    #[tokio::test(start_paused = true)]
    async fn slow_calls_open_it_too() {
        let b = breaker(4, 2);
        for _ in 0..4 {
            let permit = b.acquire().unwrap();
            tokio::time::advance(Duration::from_secs(3)).await;
            permit.finish(false);
        }
        assert_eq!(b.state(), BreakerState::Open, "4 of 4 slow: 1.0 >= 0.8");
    }

    #[tokio::test(start_paused = true)]
    async fn half_open_lets_its_probes_through_and_they_decide() {
        let b = breaker(2, 2);
        outcome(&b, true);
        outcome(&b, true);
        assert_eq!(b.state(), BreakerState::Open);
        tokio::time::advance(Duration::from_secs(5)).await;
        let first = b.acquire().expect("a probe");
        assert_eq!(b.state(), BreakerState::HalfOpen);
        let second = b.acquire().expect("the second probe");
        assert!(b.acquire().is_err(), "only 2 probes at once");
        // A cancelled probe frees its place.
        drop(second);
        let second = b.acquire().expect("the place of the cancelled probe");
        first.finish(false);
        assert_eq!(b.state(), BreakerState::HalfOpen, "one probe of 2 done");
        second.finish(false);
        assert_eq!(b.state(), BreakerState::Closed);

        // Probes that fail open it again, for another full period.
        outcome(&b, true);
        outcome(&b, true);
        tokio::time::advance(Duration::from_secs(5)).await;
        outcome(&b, true);
        outcome(&b, false);
        assert_eq!(b.state(), BreakerState::Open, "1 of 2 probes failed: 0.5");
        assert!(b.acquire().is_err());
    }

    #[tokio::test(start_paused = true)]
    async fn an_outcome_counts_only_in_the_state_its_call_started_in() {
        let b = breaker(2, 1);
        let late = b.acquire().unwrap();
        outcome(&b, true);
        outcome(&b, true);
        assert_eq!(b.state(), BreakerState::Open);
        tokio::time::advance(Duration::from_secs(5)).await;
        let probe = b.acquire().expect("the probe");
        // A call from before the breaker opened finishing now is not the probe's verdict.
        late.finish(false);
        assert_eq!(b.state(), BreakerState::HalfOpen);
        probe.finish(false);
        assert_eq!(b.state(), BreakerState::Closed);
    }

    #[tokio::test(start_paused = true)]
    async fn call_runs_the_future_and_judges_its_outcome() {
        let b = breaker(1, 1);
        let got = b.call(async { 7 }, |v| *v != 7).await;
        assert_eq!(got, Ok(7));
        assert_eq!(b.state(), BreakerState::Closed);
        let got = b.call(async { 8 }, |v| *v != 7).await;
        assert_eq!(got, Ok(8));
        assert_eq!(b.state(), BreakerState::Open, "1 of 2 failed");
        let ran = std::sync::atomic::AtomicBool::new(false);
        let got = b
            .call(
                async { ran.store(true, std::sync::atomic::Ordering::SeqCst) },
                |_| false,
            )
            .await;
        assert!(got.is_err());
        assert!(!ran.load(std::sync::atomic::Ordering::SeqCst), "not called");
    }
}
