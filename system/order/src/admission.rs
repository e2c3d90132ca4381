//! Admission control: `POST /orders` is refused at once (503 with `Retry-After`) when the order
//! could not be finished in time, instead of being accepted into a backlog that only grows.
//!
//! Past its knee a saga pipeline that accepts everything collapses: orders wait in the outbox and
//! the topics longer than the saga step timeout, steps time out, commands are resent and sagas
//! compensate, and the compensations are more work still, so confirmed orders per second fall
//! towards zero. Refusing the orders it cannot finish keeps the pipeline near its knee.
//!
//! The bound is on the orders in flight (PENDING, read from the database every instance shares),
//! and it adapts, like TCP's congestion window (additive increase, multiplicative decrease):
//! - every `ADMISSION_REFRESH_MS` (default 250 ms) the backlog is read: how many orders are
//!   PENDING, and how many of them are older than `ADMISSION_BACKLOG_AGE_MS` (default a fifth
//!   of the saga step timeout, 1 s). The age covers every queue an order passes through
//!   (outbox, topics, consumers, the other services), so it is the one measure of "too late"
//!   whatever the bottleneck is;
//! - when more than `ADMISSION_BACKLOG_FLOOR` (default 32) orders are that late, the limit is
//!   cut by a quarter (never below twice the floor); the floor keeps a few sagas stuck on a
//!   fault (an instance killed mid-saga) from cutting it;
//! - when nothing is late and the orders in flight come near the limit, it grows by an eighth;
//! - an order is admitted while the PENDING orders last read, plus those this instance admitted
//!   since, stay below the limit (at most `ADMISSION_MAX_PENDING`, default 20,000). It starts at
//!   256.
//!
//! So the orders in flight settle where they still finish within the age bound: Little's law
//! makes that the pipeline's throughput times the bound. An age signal alone reacts too late:
//! by the time orders are a second old, a second's worth of arrivals at three times the knee is
//! already in.
//!
//! Also refused: more than `ADMISSION_MAX_IN_FLIGHT` (default 128) `POST /orders` in progress
//! on this instance (they queue on the database's writer).
//!
//! Reads are never refused. `ADMISSION=off` turns it off (to measure what it is worth).
//! Each refusal is counted in `order_admission_rejected_total{reason}`;
//! `order_admission_limit` is the current limit and `order_admission_refusing` is 1 while the
//! backlog is at it.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicUsize, Ordering};
use std::time::Duration;

use platform::config::{self, ConfigError};
use platform::db::Db;
use tokio_util::sync::CancellationToken;

use crate::store;

pub const ADMISSION: &str = "ADMISSION";
pub const ADMISSION_BACKLOG_AGE_MS: &str = "ADMISSION_BACKLOG_AGE_MS";
pub const ADMISSION_BACKLOG_FLOOR: &str = "ADMISSION_BACKLOG_FLOOR";
pub const ADMISSION_MAX_PENDING: &str = "ADMISSION_MAX_PENDING";
pub const ADMISSION_MAX_IN_FLIGHT: &str = "ADMISSION_MAX_IN_FLIGHT";
pub const ADMISSION_REFRESH_MS: &str = "ADMISSION_REFRESH_MS";

pub const REJECTED: &str = "order_admission_rejected_total";
pub const REFUSING: &str = "order_admission_refusing";
pub const LIMIT: &str = "order_admission_limit";

/// The limit on orders in flight before the first reading of the backlog.
pub const INITIAL_LIMIT: i64 = 256;

/// The bounds (see the module's documentation for what each means).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AdmissionConfig {
    pub enabled: bool,
    pub backlog_age_ms: i64,
    pub backlog_floor: i64,
    pub max_pending: i64,
    pub max_in_flight: usize,
    pub refresh: Duration,
}

impl AdmissionConfig {
    /// The defaults for a saga step timeout of `step_timeout_ms`.
    pub fn defaults(step_timeout_ms: i64) -> Self {
        Self {
            enabled: true,
            backlog_age_ms: (step_timeout_ms / 5).max(1),
            backlog_floor: 32,
            max_pending: 20_000,
            max_in_flight: 128,
            refresh: Duration::from_millis(250),
        }
    }

    /// Reads the `ADMISSION*` variables over the defaults.
    pub fn from_env(step_timeout_ms: i64) -> Result<Self, ConfigError> {
        let d = Self::defaults(step_timeout_ms);
        let enabled = match config::optional(ADMISSION).as_deref().map(str::trim) {
            None | Some("on" | "true" | "1") => true,
            Some("off" | "false" | "0") => false,
            Some(other) => {
                return Err(ConfigError::Invalid {
                    var: ADMISSION,
                    value: other.to_string(),
                    reason: "must be on or off".into(),
                });
            }
        };
        let positive = |var: &'static str, v: i64| {
            if v < 1 {
                Err(ConfigError::Invalid {
                    var,
                    value: v.to_string(),
                    reason: "must be at least 1".into(),
                })
            } else {
                Ok(v)
            }
        };
        let backlog_age_ms = positive(
            ADMISSION_BACKLOG_AGE_MS,
            config::parse_or(ADMISSION_BACKLOG_AGE_MS, d.backlog_age_ms)?,
        )?;
        let backlog_floor = positive(
            ADMISSION_BACKLOG_FLOOR,
            config::parse_or(ADMISSION_BACKLOG_FLOOR, d.backlog_floor)?,
        )?;
        let max_pending = positive(
            ADMISSION_MAX_PENDING,
            config::parse_or(ADMISSION_MAX_PENDING, d.max_pending)?,
        )?;
        let max_in_flight = positive(
            ADMISSION_MAX_IN_FLIGHT,
            config::parse_or(ADMISSION_MAX_IN_FLIGHT, d.max_in_flight as i64)?,
        )? as usize;
        let refresh_ms = positive(
            ADMISSION_REFRESH_MS,
            config::parse_or(ADMISSION_REFRESH_MS, d.refresh.as_millis() as i64)?,
        )?;
        Ok(Self {
            enabled,
            backlog_age_ms,
            backlog_floor,
            max_pending,
            max_in_flight,
            refresh: Duration::from_millis(refresh_ms as u64),
        })
    }
}

/// Why an order was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    Backlog,
    InFlight,
}

impl Refusal {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Backlog => "backlog",
            Self::InFlight => "in_flight",
        }
    }

    pub fn message(self) -> &'static str {
        match self {
            Self::Backlog => {
                "too many orders are waiting to be processed to take this one on in time; retry after the Retry-After delay"
            }
            Self::InFlight => {
                "too many orders are being placed on this instance at once; retry after the Retry-After delay"
            }
        }
    }
}

/// The shared admission state of one instance.
#[derive(Debug, Clone)]
pub struct Admission {
    config: AdmissionConfig,
    refusing: Arc<AtomicBool>,
    in_flight: Arc<AtomicUsize>,
    /// The limit on orders in flight (PENDING).
    limit: Arc<AtomicI64>,
    /// PENDING orders at the last reading, and the orders admitted here since.
    pending: Arc<AtomicI64>,
    admitted_since: Arc<AtomicI64>,
}

/// Held while a `POST /orders` is in progress.
#[derive(Debug)]
pub struct Ticket(Arc<AtomicUsize>);

impl Drop for Ticket {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Admission {
    pub fn new(config: AdmissionConfig) -> Self {
        Self {
            config,
            refusing: Arc::new(AtomicBool::new(false)),
            in_flight: Arc::new(AtomicUsize::new(0)),
            limit: Arc::new(AtomicI64::new(INITIAL_LIMIT.min(config.max_pending))),
            pending: Arc::new(AtomicI64::new(0)),
            admitted_since: Arc::new(AtomicI64::new(0)),
        }
    }

    pub fn config(&self) -> &AdmissionConfig {
        &self.config
    }

    /// The current limit on orders in flight.
    pub fn limit(&self) -> i64 {
        self.limit.load(Ordering::Relaxed)
    }

    /// Admits one order (the ticket is held until it is placed), or says why not.
    pub fn admit(&self) -> Result<Ticket, Refusal> {
        let in_flight = self.in_flight.fetch_add(1, Ordering::Relaxed) + 1;
        let ticket = Ticket(self.in_flight.clone());
        if !self.config.enabled {
            return Ok(ticket);
        }
        let refusal = if in_flight > self.config.max_in_flight {
            Refusal::InFlight
        } else {
            let admitted = self.admitted_since.fetch_add(1, Ordering::Relaxed);
            if self.pending.load(Ordering::Relaxed) + admitted < self.limit() {
                return Ok(ticket);
            }
            self.admitted_since.fetch_sub(1, Ordering::Relaxed);
            Refusal::Backlog
        };
        metrics::counter!(REJECTED, "reason" => refusal.as_str()).increment(1);
        Err(refusal)
    }

    /// Adapts the limit to one reading of the backlog (see the module's documentation).
    pub fn update(&self, backlog: &Backlog) {
        let c = &self.config;
        let limit = self.limit();
        let min = (2 * c.backlog_floor).min(c.max_pending);
        let next = if backlog.late > c.backlog_floor {
            (limit - limit / 4).max(min)
        } else if backlog.pending * 5 >= limit * 4 {
            (limit + (limit / 8).max(1)).min(c.max_pending)
        } else {
            limit
        };
        self.limit.store(next, Ordering::Relaxed);
        self.pending.store(backlog.pending, Ordering::Relaxed);
        self.admitted_since.store(0, Ordering::Relaxed);
        let refuse = c.enabled && backlog.pending >= next;
        let was = self.refusing.swap(refuse, Ordering::Relaxed);
        if was != refuse {
            if refuse {
                tracing::warn!(
                    pending = backlog.pending,
                    late = backlog.late,
                    limit = next,
                    "refusing new orders: as many are in flight as can be finished in time"
                );
            } else {
                tracing::info!(
                    pending = backlog.pending,
                    limit = next,
                    "accepting new orders again"
                );
            }
        }
        metrics::gauge!(REFUSING).set(if refuse { 1.0 } else { 0.0 });
        metrics::gauge!(LIMIT).set(next as f64);
    }

    /// Reads the backlog every `refresh` until `shutdown`. A failed reading keeps the last
    /// decision (the database being unreachable fails the orders anyway).
    pub async fn watch(self, db: Db, shutdown: CancellationToken) {
        if !self.config.enabled {
            return;
        }
        let mut tick = tokio::time::interval(self.config.refresh);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = tick.tick() => {}
            }
            let now = platform::now_ms();
            match store::backlog(
                &db,
                now - self.config.backlog_age_ms,
                self.config.backlog_floor + 1,
            )
            .await
            {
                Ok(backlog) => self.update(&backlog),
                Err(e) => tracing::debug!(error = %e, "reading the order backlog failed"),
            }
        }
    }
}

/// One reading of the backlog.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Backlog {
    /// PENDING orders.
    pub pending: i64,
    /// PENDING orders placed before the age bound, counted up to the floor + 1.
    pub late: i64,
}

pub fn describe() {
    metrics::describe_counter!(
        REJECTED,
        metrics::Unit::Count,
        "POST /orders refused by admission control (503 + Retry-After), by reason: backlog or in_flight."
    );
    metrics::describe_gauge!(
        REFUSING,
        "1 while admission control refuses new orders because the backlog is at its limit, else 0."
    );
    metrics::describe_gauge!(
        LIMIT,
        "Admission control's current limit on orders in flight (PENDING)."
    );
    for reason in [Refusal::Backlog, Refusal::InFlight] {
        metrics::counter!(REJECTED, "reason" => reason.as_str()).increment(0);
    }
    metrics::gauge!(REFUSING).set(0.0);
    metrics::gauge!(LIMIT).set(INITIAL_LIMIT as f64);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> AdmissionConfig {
        AdmissionConfig {
            max_in_flight: 2,
            ..AdmissionConfig::defaults(5_000)
        }
    }

    fn backlog(pending: i64, late: i64) -> Backlog {
        Backlog { pending, late }
    }

    fn admitted(admission: &Admission, n: usize) -> usize {
        (0..n)
            .filter(|_| admission.admit().is_ok()) // each ticket drops at once
            .count()
    }

    #[test]
    fn the_age_bound_is_a_fifth_of_the_step_timeout() {
        assert_eq!(AdmissionConfig::defaults(5_000).backlog_age_ms, 1_000);
    }

    #[test]
    fn orders_are_admitted_up_to_the_limit_counting_those_admitted_since_the_reading() {
        let admission = Admission::new(config());
        admission.update(&backlog(200, 0));
        assert_eq!(admission.limit(), INITIAL_LIMIT);
        assert_eq!(admitted(&admission, 100), 56, "256 - 200 in flight");
        assert_eq!(admission.admit().unwrap_err(), Refusal::Backlog);
        admission.update(&backlog(100, 0));
        assert_eq!(admitted(&admission, 1), 1, "a new reading makes room again");
    }

    #[test]
    fn late_orders_beyond_the_floor_cut_the_limit_down_to_twice_the_floor() {
        let admission = Admission::new(config());
        admission.update(&backlog(100, 32));
        assert_eq!(
            admission.limit(),
            256,
            "32 late orders are within the floor"
        );
        admission.update(&backlog(100, 33));
        assert_eq!(admission.limit(), 192);
        for _ in 0..20 {
            admission.update(&backlog(250, 100));
        }
        assert_eq!(admission.limit(), 64);
        assert_eq!(admission.admit().unwrap_err(), Refusal::Backlog);
    }

    #[test]
    fn a_full_limit_with_nothing_late_grows_and_an_idle_one_stays() {
        let admission = Admission::new(config());
        admission.update(&backlog(10, 0));
        assert_eq!(admission.limit(), 256, "far from full: no reason to grow");
        admission.update(&backlog(220, 0));
        assert_eq!(admission.limit(), 288);
        for _ in 0..200 {
            let limit = admission.limit();
            admission.update(&backlog(limit, 0));
        }
        assert_eq!(
            admission.limit(),
            20_000,
            "never beyond ADMISSION_MAX_PENDING"
        );
    }

    #[test]
    fn in_flight_orders_beyond_the_bound_are_refused_until_one_finishes() {
        let admission = Admission::new(config());
        let first = admission.admit().unwrap();
        let _second = admission.admit().unwrap();
        assert_eq!(admission.admit().unwrap_err(), Refusal::InFlight);
        drop(first);
        assert!(admission.admit().is_ok());
    }

    #[test]
    fn switched_off_it_admits_everything() {
        let admission = Admission::new(AdmissionConfig {
            enabled: false,
            ..config()
        });
        admission.update(&backlog(1_000_000, 1_000_000));
        let _tickets: Vec<_> = (0..10).map(|_| admission.admit().unwrap()).collect();
    }
}
