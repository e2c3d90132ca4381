//! The gateway's resilience layers, each switchable and tunable from the environment, so a
//! scenario can run the system with and without one and compare.
//!
//! A request to `/api/...` passes, in this order (DESIGN.md, "Resilience in the gateway"):
//! authentication; the per-customer rate limit ([`RateLimit`], 429 + `Retry-After`); admission
//! control for the requests that start sagas ([`crate::throttle`], 503 + `Retry-After`); then, per
//! upstream service, the bulkhead (a concurrency limit that answers 503 at once when full), the
//! circuit breaker (503 + `Retry-After` while open), failover retries under a retry budget with
//! full-jitter backoff ([`RetryPolicy`]), a per-attempt timeout, and round-robin over the
//! instances that passive ejection and active health checks ([`crate::health`]) keep in rotation.
//!
//! The breaker is the gateway's own ([`crate::breaker`], Resilience4j's semantics; the module
//! says why), the bulkhead is `tower-resilience`'s, the retry budget is tower's `TpsBudget`
//! (Finagle's), the rate limit is `governor`'s GCRA per key.
//!
//! | variable | default | what |
//! |---|---|---|
//! | `BREAKER` | `on` | the circuit breaker per upstream service |
//! | `BREAKER_FAILURE_RATE` | 0.5 | open when this share of calls in the window failed (5xx other than a shed 503, timeout, unreachable) |
//! | `BREAKER_SLOW_CALL_MS` | 2000 | a call slower than this is slow |
//! | `BREAKER_SLOW_CALL_RATE` | 0.8 | open when this share of calls in the window was slow |
//! | `BREAKER_WINDOW_MS` | 10000 | the sliding window (time based) |
//! | `BREAKER_MIN_CALLS` | 20 | calls in the window before a rate counts |
//! | `BREAKER_OPEN_MS` | 5000 | how long it stays open before letting probes through (half-open) |
//! | `BREAKER_HALF_OPEN_CALLS` | 5 | probe calls in half-open that decide closing or reopening |
//! | `BULKHEAD` | `on` | a concurrency limit per upstream service |
//! | `BULKHEAD_LIMIT` | 256 | calls in flight per service; `BULKHEAD_LIMIT_ORDER`, `_INVENTORY`, `_PAYMENT` override one |
//! | `RETRIES` | `on` | failover to the next instance for requests safe to repeat; `off`: one attempt |
//! | `RETRY_BUDGET` | 0.2 | retries may add at most this share of requests (over 10 s), beyond 10/s |
//! | `RETRY_BACKOFF_MS` | 5 | base of the full-jitter exponential backoff before a retry |
//! | `RETRY_BACKOFF_MAX_MS` | 100 | its cap |
//! | `RATE_LIMIT_PER_SECOND` | 0 (off) | requests per second per customer (the token's `sub`) |
//! | `RATE_LIMIT_BURST` | the rate | the bucket's size |
//! | `HEALTH_CHECK_INTERVAL_MS` | 1000 | active probes of every instance's `/health/ready`; 0 turns them off |
//! | `ADMISSION_THROTTLE` | `on` | refuse new orders at the edge for a hold after the order service refused one ([`crate::throttle`]) |
//! | `ADMISSION_THROTTLE_HOLD_MS` | 25 | that hold |

use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use axum::response::Response;
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use platform::config::{self, ConfigError};
use tower::retry::budget::{Budget, TpsBudget};
use tower::util::BoxCloneSyncService;
use tower::{ServiceBuilder, ServiceExt};
use tower_resilience_bulkhead::{BulkheadLayer, BulkheadServiceError};

use crate::breaker::Breaker;
use crate::error::GatewayError;
use crate::metrics as m;
use crate::routes::Service;
use crate::throttle::ThrottleConfig;

pub const BREAKER: &str = "BREAKER";
pub const BREAKER_FAILURE_RATE: &str = "BREAKER_FAILURE_RATE";
pub const BREAKER_SLOW_CALL_MS: &str = "BREAKER_SLOW_CALL_MS";
pub const BREAKER_SLOW_CALL_RATE: &str = "BREAKER_SLOW_CALL_RATE";
pub const BREAKER_WINDOW_MS: &str = "BREAKER_WINDOW_MS";
pub const BREAKER_MIN_CALLS: &str = "BREAKER_MIN_CALLS";
pub const BREAKER_OPEN_MS: &str = "BREAKER_OPEN_MS";
pub const BREAKER_HALF_OPEN_CALLS: &str = "BREAKER_HALF_OPEN_CALLS";
pub const BULKHEAD: &str = "BULKHEAD";
pub const BULKHEAD_LIMIT: &str = "BULKHEAD_LIMIT";
pub const BULKHEAD_LIMIT_ORDER: &str = "BULKHEAD_LIMIT_ORDER";
pub const BULKHEAD_LIMIT_INVENTORY: &str = "BULKHEAD_LIMIT_INVENTORY";
pub const BULKHEAD_LIMIT_PAYMENT: &str = "BULKHEAD_LIMIT_PAYMENT";
pub const RETRIES: &str = "RETRIES";
pub const RETRY_BUDGET: &str = "RETRY_BUDGET";
pub const RETRY_BACKOFF_MS: &str = "RETRY_BACKOFF_MS";
pub const RETRY_BACKOFF_MAX_MS: &str = "RETRY_BACKOFF_MAX_MS";
pub const RATE_LIMIT_PER_SECOND: &str = "RATE_LIMIT_PER_SECOND";
pub const RATE_LIMIT_BURST: &str = "RATE_LIMIT_BURST";
pub const HEALTH_CHECK_INTERVAL_MS: &str = "HEALTH_CHECK_INTERVAL_MS";
pub const ADMISSION_THROTTLE: &str = "ADMISSION_THROTTLE";
pub const ADMISSION_THROTTLE_HOLD_MS: &str = "ADMISSION_THROTTLE_HOLD_MS";

/// The circuit breaker's thresholds.
#[derive(Debug, Clone, PartialEq)]
pub struct BreakerConfig {
    pub failure_rate: f64,
    pub slow_call: Duration,
    pub slow_call_rate: f64,
    pub window: Duration,
    pub min_calls: usize,
    pub open_for: Duration,
    pub half_open_calls: usize,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        Self {
            failure_rate: 0.5,
            slow_call: Duration::from_secs(2),
            slow_call_rate: 0.8,
            window: Duration::from_secs(10),
            min_calls: 20,
            open_for: Duration::from_secs(5),
            half_open_calls: 5,
        }
    }
}

/// Failover retries.
#[derive(Debug, Clone, PartialEq)]
pub struct RetryConfig {
    pub enabled: bool,
    /// Retries may add at most this share of the requests.
    pub budget: f64,
    pub backoff: Duration,
    pub backoff_max: Duration,
}

impl Default for RetryConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            budget: 0.2,
            backoff: Duration::from_millis(5),
            backoff_max: Duration::from_millis(100),
        }
    }
}

/// Every resilience setting of the gateway.
#[derive(Debug, Clone, PartialEq)]
pub struct ResilienceConfig {
    /// `None`: no breaker.
    pub breaker: Option<BreakerConfig>,
    /// Per service (order, inventory, payment); `None`: no bulkhead.
    pub bulkhead: Option<[usize; 3]>,
    pub retries: RetryConfig,
    /// Requests per second and burst per customer; `None`: no rate limit.
    pub rate_limit: Option<(NonZeroU32, NonZeroU32)>,
    /// `None`: no active health checks (passive ejection stays).
    pub health_check_interval: Option<Duration>,
    /// `None`: every request that starts a saga is forwarded.
    pub admission_throttle: Option<ThrottleConfig>,
}

impl Default for ResilienceConfig {
    fn default() -> Self {
        Self {
            breaker: Some(BreakerConfig::default()),
            bulkhead: Some([DEFAULT_BULKHEAD_LIMIT; 3]),
            retries: RetryConfig::default(),
            rate_limit: None,
            health_check_interval: Some(Duration::from_secs(1)),
            admission_throttle: Some(ThrottleConfig::default()),
        }
    }
}

pub const DEFAULT_BULKHEAD_LIMIT: usize = 256;

impl ResilienceConfig {
    pub fn from_env() -> Result<Self, ConfigError> {
        let d = Self::default();
        let breaker = if switch(BREAKER, true)? {
            let b = BreakerConfig::default();
            Some(BreakerConfig {
                failure_rate: share(BREAKER_FAILURE_RATE, b.failure_rate, false)?,
                slow_call: config::millis_or(BREAKER_SLOW_CALL_MS, millis(b.slow_call))?,
                slow_call_rate: share(BREAKER_SLOW_CALL_RATE, b.slow_call_rate, false)?,
                window: positive_millis(BREAKER_WINDOW_MS, b.window)?,
                min_calls: at_least_one(BREAKER_MIN_CALLS, b.min_calls)?,
                open_for: positive_millis(BREAKER_OPEN_MS, b.open_for)?,
                half_open_calls: at_least_one(BREAKER_HALF_OPEN_CALLS, b.half_open_calls)?,
            })
        } else {
            None
        };
        let bulkhead = if switch(BULKHEAD, true)? {
            let all = at_least_one(BULKHEAD_LIMIT, DEFAULT_BULKHEAD_LIMIT)?;
            Some([
                at_least_one(BULKHEAD_LIMIT_ORDER, all)?,
                at_least_one(BULKHEAD_LIMIT_INVENTORY, all)?,
                at_least_one(BULKHEAD_LIMIT_PAYMENT, all)?,
            ])
        } else {
            None
        };
        let retries = RetryConfig {
            enabled: switch(RETRIES, d.retries.enabled)?,
            budget: share(RETRY_BUDGET, d.retries.budget, true)?,
            backoff: config::millis_or(RETRY_BACKOFF_MS, millis(d.retries.backoff))?,
            backoff_max: config::millis_or(RETRY_BACKOFF_MAX_MS, millis(d.retries.backoff_max))?,
        };
        let per_second: u32 = config::parse_or(RATE_LIMIT_PER_SECOND, 0)?;
        let rate_limit = match NonZeroU32::new(per_second) {
            None => None,
            Some(rate) => {
                let burst = config::parse_or(RATE_LIMIT_BURST, rate.get())?;
                let burst = NonZeroU32::new(burst).ok_or_else(|| ConfigError::Invalid {
                    var: RATE_LIMIT_BURST,
                    value: burst.to_string(),
                    reason: "the bucket must hold at least 1 request".into(),
                })?;
                Some((rate, burst))
            }
        };
        let interval = config::millis_or(HEALTH_CHECK_INTERVAL_MS, 1000)?;
        let admission_throttle = if switch(ADMISSION_THROTTLE, true)? {
            let t = ThrottleConfig::default();
            Some(ThrottleConfig {
                hold: positive_millis(ADMISSION_THROTTLE_HOLD_MS, t.hold)?,
            })
        } else {
            None
        };
        Ok(Self {
            breaker,
            bulkhead,
            retries,
            rate_limit,
            health_check_interval: (!interval.is_zero()).then_some(interval),
            admission_throttle,
        })
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

fn switch(var: &'static str, default: bool) -> Result<bool, ConfigError> {
    match config::optional(var).map(|v| v.trim().to_ascii_lowercase()) {
        None => Ok(default),
        Some(v) if v == "on" => Ok(true),
        Some(v) if v == "off" => Ok(false),
        Some(v) => Err(ConfigError::Invalid {
            var,
            value: v,
            reason: "expected on or off".into(),
        }),
    }
}

/// A fraction: more than 0 (or at least 0 with `zero_ok`) and at most 1.
fn share(var: &'static str, default: f64, zero_ok: bool) -> Result<f64, ConfigError> {
    let v: f64 = config::parse_or(var, default)?;
    let low_ok = if zero_ok { v >= 0.0 } else { v > 0.0 };
    if low_ok && v <= 1.0 {
        Ok(v)
    } else {
        Err(ConfigError::Invalid {
            var,
            value: v.to_string(),
            reason: format!(
                "expected a share {} 0 and at most 1",
                if zero_ok { "of at least" } else { "above" }
            ),
        })
    }
}

fn at_least_one(var: &'static str, default: usize) -> Result<usize, ConfigError> {
    let v: usize = config::parse_or(var, default)?;
    if v == 0 {
        return Err(ConfigError::Invalid {
            var,
            value: "0".into(),
            reason: "expected at least 1".into(),
        });
    }
    Ok(v)
}

fn positive_millis(var: &'static str, default: Duration) -> Result<Duration, ConfigError> {
    let v = config::millis_or(var, millis(default))?;
    if v.is_zero() {
        return Err(ConfigError::Invalid {
            var,
            value: "0".into(),
            reason: "expected more than 0 ms".into(),
        });
    }
    Ok(v)
}

/// One call to a service, as the guard stack passes it on.
#[derive(Debug, Clone)]
pub struct UpstreamCall {
    pub method: http::Method,
    pub path_and_query: String,
    pub headers: http::HeaderMap,
    pub body: bytes::Bytes,
}

/// The bulkhead and breaker around one service's calls, as one cloneable service.
pub type Guarded = BoxCloneSyncService<UpstreamCall, Response, GatewayError>;

/// Wraps `inner` (the failover loop to one service) in the bulkhead and the breaker `config`
/// asks for, with their metrics.
pub fn guard<S>(service: Service, config: &ResilienceConfig, inner: S) -> anyhow::Result<Guarded>
where
    S: tower::Service<UpstreamCall, Response = Response, Error = GatewayError>
        + Clone
        + Send
        + Sync
        + 'static,
    S::Future: Send + 'static,
{
    let name = service.name();
    let mut stack = BoxCloneSyncService::new(inner);
    // Every series exists from the start, also for a layer switched off (closed, nothing
    // refused), so dashboards and `rate()` have one before the first event.
    metrics::gauge!(m::BREAKER_STATE, "service" => name).set(0.0);
    metrics::counter!(m::BREAKER_REJECTED, "service" => name).increment(0);
    metrics::counter!(m::BULKHEAD_REJECTED, "service" => name).increment(0);
    metrics::gauge!(m::BULKHEAD_IN_FLIGHT, "service" => name).set(0.0);
    for (from, to) in [
        ("closed", "open"),
        ("open", "half_open"),
        ("half_open", "open"),
        ("half_open", "closed"),
    ] {
        metrics::counter!(m::BREAKER_TRANSITIONS, "service" => name, "from" => from, "to" => to)
            .increment(0);
    }
    if let Some(b) = &config.breaker {
        // Handle looked up once: it counts on every refused call.
        let breaker_rejected = metrics::counter!(m::BREAKER_REJECTED, "service" => name);
        let breaker = Breaker::new(service, b.clone());
        let inner = stack;
        stack = BoxCloneSyncService::new(tower::service_fn(move |call: UpstreamCall| {
            let (breaker, inner, rejected) =
                (breaker.clone(), inner.clone(), breaker_rejected.clone());
            async move {
                breaker
                    .call(inner.oneshot(call), |result| match result {
                        Ok(response) => is_failure_status(response),
                        Err(e) => e.is_upstream_failure(),
                    })
                    .await
                    .unwrap_or_else(|refused| {
                        rejected.increment(1);
                        Err(GatewayError::CircuitOpen {
                            service,
                            retry_after: refused.retry_after,
                        })
                    })
            }
        }));
    }
    if let Some(limits) = config.bulkhead {
        let limit = limits[index(service)];
        // Handles looked up once: the callbacks run on every call.
        let permitted = metrics::gauge!(m::BULKHEAD_IN_FLIGHT, "service" => name);
        let (finished, failed) = (permitted.clone(), permitted.clone());
        let bulkhead_rejected = metrics::counter!(m::BULKHEAD_REJECTED, "service" => name);
        metrics::gauge!(m::BULKHEAD_LIMIT, "service" => name).set(limit as f64);
        let layer = BulkheadLayer::builder()
            .name(name)
            .max_concurrent_calls(limit)
            .reject_when_full()
            .on_call_permitted(move |_| permitted.increment(1.0))
            .on_call_finished(move |_| finished.decrement(1.0))
            .on_call_failed(move |_| failed.decrement(1.0))
            .on_call_rejected(move |_| bulkhead_rejected.increment(1))
            .build()?;
        let bulkhead = ServiceBuilder::new()
            .map_err(move |e: BulkheadServiceError<GatewayError>| match e {
                BulkheadServiceError::Inner(e) => e,
                BulkheadServiceError::Bulkhead(_) => GatewayError::BulkheadFull(service),
            })
            .layer(layer)
            .service(stack);
        stack = BoxCloneSyncService::new(bulkhead);
    }
    Ok(stack)
}

/// Calls `service` through its guard.
pub async fn call(guarded: &Guarded, call: UpstreamCall) -> Result<Response, GatewayError> {
    guarded.clone().oneshot(call).await
}

/// What the breaker counts as a failed call among the answers: a 5xx, except a 503 that says
/// when to come back (the service shedding load on purpose is not broken).
fn is_failure_status(response: &Response) -> bool {
    let status = response.status();
    status.is_server_error()
        && !(status == http::StatusCode::SERVICE_UNAVAILABLE
            && response.headers().contains_key(http::header::RETRY_AFTER))
}

fn index(service: Service) -> usize {
    match service {
        Service::Order => 0,
        Service::Inventory => 1,
        Service::Payment => 2,
    }
}

/// Failover retries under a budget, with full-jitter backoff, for one service.
#[derive(Debug)]
pub struct RetryPolicy {
    config: RetryConfig,
    budget: TpsBudget,
    service: Service,
}

/// The window the budget counts requests over (Finagle's default).
const BUDGET_TTL: Duration = Duration::from_secs(10);
/// Retries always allowed per second, so a quiet service can still fail over.
const BUDGET_MIN_PER_SEC: u32 = 10;

impl RetryPolicy {
    pub fn new(service: Service, config: &RetryConfig) -> Self {
        metrics::counter!(m::RETRY_BUDGET_EXHAUSTED, "service" => service.name()).increment(0);
        Self {
            // `budget` is validated to 0..=1; TpsBudget takes the same share.
            budget: TpsBudget::new(BUDGET_TTL, BUDGET_MIN_PER_SEC, config.budget as f32),
            config: config.clone(),
            service,
        }
    }

    pub fn enabled(&self) -> bool {
        self.config.enabled
    }

    /// A request started: it adds to what retries may spend.
    pub fn deposit(&self) {
        self.budget.deposit();
    }

    /// Whether one more attempt may be made, spending from the budget.
    pub fn withdraw(&self) -> bool {
        let ok = self.budget.withdraw();
        if !ok {
            metrics::counter!(m::RETRY_BUDGET_EXHAUSTED, "service" => self.service.name())
                .increment(1);
        }
        ok
    }

    /// How long to wait before retry `n` (1 for the first retry): full jitter, uniform in
    /// `[0, min(max, base * 2^(n-1))]` (AWS's "Exponential Backoff and Jitter"). Written here
    /// because tower's `ExponentialBackoff` adds its jitter on top of the exponential delay
    /// instead of drawing the whole delay, which spreads retries less.
    pub fn backoff(&self, n: u32) -> Duration {
        let exp = self
            .config
            .backoff
            .saturating_mul(1u32 << n.saturating_sub(1).min(16));
        let cap = exp.min(self.config.backoff_max);
        cap.mul_f64(rand::random::<f64>())
    }
}

/// The per-customer token buckets.
pub struct RateLimit {
    limiter: DefaultKeyedRateLimiter<String>,
}

impl std::fmt::Debug for RateLimit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RateLimit").finish_non_exhaustive()
    }
}

impl RateLimit {
    pub fn new(per_second: NonZeroU32, burst: NonZeroU32) -> Arc<Self> {
        Arc::new(Self {
            limiter: RateLimiter::keyed(Quota::per_second(per_second).allow_burst(burst)),
        })
    }

    /// Takes one token from `customer`'s bucket, or says how long until one is there.
    pub fn check(&self, customer: &str) -> Result<(), Duration> {
        match self.limiter.check_key(&customer.to_string()) {
            Ok(()) => Ok(()),
            Err(not_until) => {
                metrics::counter!(m::RATE_LIMITED).increment(1);
                Err(not_until.wait_time_from(governor::clock::Clock::now(
                    &governor::clock::DefaultClock::default(),
                )))
            }
        }
    }

    /// Forgets buckets that are full again, so memory follows the active customers.
    pub fn forget_idle(&self) {
        self.limiter.retain_recent();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn budgeted(budget: f64) -> RetryPolicy {
        RetryPolicy::new(
            Service::Order,
            &RetryConfig {
                budget,
                ..RetryConfig::default()
            },
        )
    }

    #[test]
    fn backoff_is_full_jitter_under_a_growing_cap() {
        let p = budgeted(0.2);
        for _ in 0..200 {
            assert!(p.backoff(1) <= Duration::from_millis(5));
            assert!(p.backoff(3) <= Duration::from_millis(20));
            assert!(p.backoff(30) <= Duration::from_millis(100));
        }
        let spread: Vec<Duration> = (0..50).map(|_| p.backoff(5)).collect();
        assert!(
            spread.iter().any(|d| *d < Duration::from_millis(40)),
            "full jitter draws the whole delay, small ones too: {spread:?}"
        );
    }

    #[test]
    fn the_retry_budget_caps_retries_at_its_share_of_requests() {
        let p = budgeted(0.1);
        for _ in 0..1000 {
            p.deposit();
        }
        let granted = (0..1000).take_while(|_| p.withdraw()).count();
        // 10 % of 1000 requests, plus the reserve of 10/s over the 10 s window.
        assert!(
            (100..=210).contains(&granted),
            "1000 requests at a 10 % budget allowed {granted} retries"
        );
    }

    #[test]
    fn a_customer_over_the_rate_is_told_when_to_come_back_and_others_are_not_affected() {
        let limit = RateLimit::new(NonZeroU32::new(5).unwrap(), NonZeroU32::new(5).unwrap());
        for _ in 0..5 {
            limit.check("noisy").unwrap();
        }
        let wait = limit.check("noisy").unwrap_err();
        assert!(
            wait > Duration::ZERO && wait <= Duration::from_millis(200),
            "{wait:?}"
        );
        limit
            .check("quiet")
            .expect("another customer has its own bucket");
    }

    #[test]
    fn a_shed_503_is_not_a_failure_but_other_5xx_are() {
        let with = |status: u16, retry_after: bool| {
            let mut b = http::Response::builder().status(status);
            if retry_after {
                b = b.header(http::header::RETRY_AFTER, "1");
            }
            b.body(axum::body::Body::empty()).unwrap()
        };
        assert!(!is_failure_status(&with(503, true)));
        assert!(is_failure_status(&with(503, false)));
        assert!(is_failure_status(&with(500, false)));
        assert!(!is_failure_status(&with(404, false)));
        assert!(!is_failure_status(&with(200, false)));
    }

    #[tokio::test]
    async fn the_breaker_opens_on_failures_and_then_answers_at_once() {
        let config = ResilienceConfig {
            breaker: Some(BreakerConfig {
                min_calls: 4,
                open_for: Duration::from_secs(30),
                ..BreakerConfig::default()
            }),
            bulkhead: None,
            ..ResilienceConfig::default()
        };
        let calls = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let seen = calls.clone();
        let failing = tower::service_fn(move |_: UpstreamCall| {
            seen.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            async { Err::<Response, _>(GatewayError::Timeout(Service::Payment)) }
        });
        let guarded = guard(Service::Payment, &config, failing).unwrap();
        let request = UpstreamCall {
            method: http::Method::GET,
            path_and_query: "/admin/payments".into(),
            headers: http::HeaderMap::new(),
            body: bytes::Bytes::new(),
        };
        for _ in 0..4 {
            let e = call(&guarded, request.clone()).await.unwrap_err();
            assert!(matches!(e, GatewayError::Timeout(_)), "{e}");
        }
        let e = call(&guarded, request.clone()).await.unwrap_err();
        assert!(
            matches!(e, GatewayError::CircuitOpen { .. }),
            "after 4 failures of 4 the breaker is open: {e}"
        );
        assert_eq!(calls.load(std::sync::atomic::Ordering::SeqCst), 4);
    }

    #[tokio::test]
    async fn a_full_bulkhead_refuses_at_once_while_its_calls_are_in_flight() {
        let config = ResilienceConfig {
            breaker: None,
            bulkhead: Some([2; 3]),
            ..ResilienceConfig::default()
        };
        let gate = Arc::new(tokio::sync::Notify::new());
        let wait = gate.clone();
        let slow = tower::service_fn(move |_: UpstreamCall| {
            let wait = wait.clone();
            async move {
                wait.notified().await;
                Ok::<_, GatewayError>(Response::new(axum::body::Body::empty()))
            }
        });
        let guarded = guard(Service::Payment, &config, slow).unwrap();
        let request = UpstreamCall {
            method: http::Method::GET,
            path_and_query: "/x".into(),
            headers: http::HeaderMap::new(),
            body: bytes::Bytes::new(),
        };
        let a = tokio::spawn(call_owned(guarded.clone(), request.clone()));
        let b = tokio::spawn(call_owned(guarded.clone(), request.clone()));
        tokio::time::sleep(Duration::from_millis(50)).await;
        let e = call(&guarded, request.clone()).await.unwrap_err();
        assert!(
            matches!(e, GatewayError::BulkheadFull(Service::Payment)),
            "{e}"
        );
        gate.notify_waiters();
        assert!(a.await.unwrap().is_ok());
        assert!(b.await.unwrap().is_ok());
    }

    async fn call_owned(g: Guarded, c: UpstreamCall) -> Result<Response, GatewayError> {
        call(&g, c).await
    }
}
