//! The admission throttle: the gateway's half of admission control for the requests that start
//! sagas (`POST /api/orders`; DESIGN.md, "Resilience in the gateway").
//!
//! The order service decides what it can take on (its own admission control, `order::admission`)
//! and refuses the rest with 503 + `Retry-After`. Past the knee most orders are refused, and each
//! refusal still costs a forwarded call: the gateway's upstream request, the proxy link, the
//! service's HTTP stack and token check. At 3x the knee that is about 650 refusals a second on
//! the cores the sagas need. So when the service refuses an order, the gateway refuses new ones
//! itself for a short hold (`ADMISSION_THROTTLE_HOLD_MS`, default 25 ms), with the same 503 +
//! `Retry-After`, and the first order after the hold goes through as a probe: refused, the hold
//! starts again; accepted, orders flow until the next refusal. Under overload about one refusal
//! per hold reaches the service (40 a second) instead of every one.
//!
//! The service's own control switches between taking orders and refusing them each time it
//! reads its backlog (every 250 ms): a refusal means it is at its limit *now*, and it takes
//! orders again as soon as its next reading finds room. A hold much shorter than that period
//! costs the service none of that room: at three times the knee the arrivals fill it within tens
//! of milliseconds of the hold ending.
//!
//! Tried first and not kept: Google SRE book's client-side throttling (refuse with probability
//! `max(0, (requests - 2 * accepts) / (requests + 1))` over a 2 s window). Against a service that
//! takes everything for part of each period and nothing for the rest, the window lags behind:
//! after a refusing stretch it let through only twice the few accepts it had seen, the service
//! drained, and confirmed orders swung between 5 and 170 a second: 88/s at 1,440 journeys/s,
//! against 102/s with no throttle at all on the same machine (docs/performance.md, row 20).
//!
//! | variable | default | what |
//! |---|---|---|
//! | `ADMISSION_THROTTLE` | `on` | refuse at the edge, for a hold after each refusal, the orders the order service would refuse |
//! | `ADMISSION_THROTTLE_HOLD_MS` | 25 | how long after a refusal new orders are refused at the edge |
//!
//! Only the service's own refusals count (503 or 429 with `Retry-After`); what another layer
//! failed (breaker, bulkhead, an unreachable instance) is that layer's business.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use axum::response::Response;

/// How long a client refused here is told to wait: what the order service tells it.
pub const RETRY_AFTER: Duration = Duration::from_secs(1);

/// The throttle's settings.
#[derive(Debug, Clone, PartialEq)]
pub struct ThrottleConfig {
    /// How long after a refusal new requests are refused here.
    pub hold: Duration,
}

impl Default for ThrottleConfig {
    fn default() -> Self {
        Self {
            hold: Duration::from_millis(25),
        }
    }
}

/// What the service said to a forwarded request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Anything but a refusal (failures included: those are the breaker's).
    Taken,
    /// It refused it to stay within its limits (503 or 429 with `Retry-After`).
    Refused,
}

impl Verdict {
    pub fn of(response: &Response) -> Self {
        let status = response.status().as_u16();
        let refused = matches!(status, 503 | 429)
            && response.headers().contains_key(http::header::RETRY_AFTER);
        if refused { Self::Refused } else { Self::Taken }
    }
}

/// One route's throttle: lock-free, one atomic read per request.
pub struct Throttle {
    hold_ns: u64,
    origin: Instant,
    /// Nanoseconds since `origin` until which new requests are refused here.
    refuse_until: AtomicU64,
}

impl Throttle {
    pub fn new(config: &ThrottleConfig) -> Self {
        Self {
            hold_ns: u64::try_from(config.hold.as_nanos()).unwrap_or(u64::MAX),
            origin: Instant::now(),
            refuse_until: AtomicU64::new(0),
        }
    }

    fn now_ns(&self) -> u64 {
        u64::try_from(self.origin.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }

    /// Whether a new request may go on to the service.
    pub fn admit(&self) -> bool {
        self.now_ns() >= self.refuse_until.load(Ordering::Relaxed)
    }

    /// The service's verdict on a request [`Self::admit`] let through. A refusal (re)starts the
    /// hold; an answer that was not one leaves a hold that a later refusal started running.
    pub fn record(&self, verdict: Verdict) {
        if verdict == Verdict::Refused {
            let until = self.now_ns().saturating_add(self.hold_ns);
            self.refuse_until.fetch_max(until, Ordering::Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use axum::response::IntoResponse;

    fn throttle(hold_ms: u64) -> Throttle {
        Throttle::new(&ThrottleConfig {
            hold: Duration::from_millis(hold_ms),
        })
    }

    #[test]
    fn nothing_is_refused_while_the_service_takes_everything() {
        let t = throttle(25);
        for _ in 0..1_000 {
            assert!(t.admit());
            t.record(Verdict::Taken);
        }
    }

    #[test]
    fn a_refusal_holds_new_requests_back_for_the_hold_and_then_one_probes_again() {
        let t = throttle(100);
        assert!(t.admit());
        t.record(Verdict::Refused);
        assert!(!t.admit(), "held back right after the refusal");
        std::thread::sleep(Duration::from_millis(40));
        assert!(!t.admit(), "still within the hold");
        // A request let through before the refusal and taken does not end the hold.
        t.record(Verdict::Taken);
        assert!(!t.admit());
        std::thread::sleep(Duration::from_millis(80));
        assert!(t.admit(), "the hold is over: the next request probes");
        t.record(Verdict::Taken);
        assert!(t.admit(), "taken: requests flow again");
    }

    #[test]
    fn only_a_refusal_that_says_when_to_come_back_is_one() {
        let verdict = |status: u16, retry_after: bool| {
            let mut r = http::StatusCode::from_u16(status).unwrap().into_response();
            if retry_after {
                r.headers_mut()
                    .insert(http::header::RETRY_AFTER, http::HeaderValue::from(1));
            }
            Verdict::of(&r)
        };
        assert_eq!(verdict(503, true), Verdict::Refused);
        assert_eq!(verdict(429, true), Verdict::Refused);
        assert_eq!(
            verdict(503, false),
            Verdict::Taken,
            "a failure, not a refusal"
        );
        assert_eq!(verdict(201, false), Verdict::Taken);
        assert_eq!(verdict(422, false), Verdict::Taken);
    }
}
