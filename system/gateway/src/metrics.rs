//! The gateway's own metrics, per upstream instance (`upstream="order#2"`), beside the platform's
//! `http_server_request_duration_seconds` for what clients see.
//!
//! | metric | type | labels | what |
//! |---|---|---|---|
//! | `gateway_upstream_requests_total` | counter | `service`, `upstream`, `outcome` | attempts, by the instance's status code or `connect_error`, `timeout`, `error` |
//! | `gateway_upstream_request_duration_seconds` | histogram | `service`, `upstream` | one attempt |
//! | `gateway_upstream_retries_total` | counter | `service` | attempts after the first of a request (failover) |
//! | `gateway_upstream_ejections_total` | counter | `service`, `upstream` | an instance put last in the rotation after a failure |
//! | `gateway_upstream_healthy` | gauge | `service`, `upstream` | 1 while the active health checks keep the instance in rotation |
//! | `gateway_health_check_ejections_total` | counter | `service`, `upstream` | the health checks took the instance out of rotation |
//! | `gateway_upstream_instances` | gauge | `service` | instances in the current list (discovery) |
//! | `gateway_breaker_state` | gauge | `service` | the circuit breaker: 0 closed, 1 open, 2 half-open |
//! | `gateway_breaker_transitions_total` | counter | `service`, `from`, `to` | state changes (`closed`, `open`, `half_open`) |
//! | `gateway_breaker_rejected_total` | counter | `service` | calls answered 503 at once because the breaker was open |
//! | `gateway_bulkhead_limit` | gauge | `service` | calls in flight the bulkhead allows |
//! | `gateway_bulkhead_in_flight` | gauge | `service` | calls in flight now |
//! | `gateway_bulkhead_rejected_total` | counter | `service` | calls refused (503) because the bulkhead was full |
//! | `gateway_retry_budget_exhausted_total` | counter | `service` | retries not made because the retry budget was spent |
//! | `gateway_rate_limited_total` | counter | | requests refused (429) by the per-customer rate limit |
//! | `gateway_admission_throttled_total` | counter | `service` | requests that start sagas refused (503) at the edge, within a hold after the service refused one ([`crate::throttle`]) |

use metrics::{Unit, describe_counter, describe_gauge, describe_histogram};

pub const UPSTREAM_REQUESTS: &str = "gateway_upstream_requests_total";
pub const UPSTREAM_DURATION: &str = "gateway_upstream_request_duration_seconds";
pub const UPSTREAM_RETRIES: &str = "gateway_upstream_retries_total";
pub const UPSTREAM_EJECTIONS: &str = "gateway_upstream_ejections_total";
pub const UPSTREAM_HEALTHY: &str = "gateway_upstream_healthy";
pub const HEALTH_CHECK_EJECTIONS: &str = "gateway_health_check_ejections_total";
pub const UPSTREAM_INSTANCES: &str = "gateway_upstream_instances";
pub const BREAKER_STATE: &str = "gateway_breaker_state";
pub const BREAKER_TRANSITIONS: &str = "gateway_breaker_transitions_total";
pub const BREAKER_REJECTED: &str = "gateway_breaker_rejected_total";
pub const BULKHEAD_LIMIT: &str = "gateway_bulkhead_limit";
pub const BULKHEAD_IN_FLIGHT: &str = "gateway_bulkhead_in_flight";
pub const BULKHEAD_REJECTED: &str = "gateway_bulkhead_rejected_total";
pub const RETRY_BUDGET_EXHAUSTED: &str = "gateway_retry_budget_exhausted_total";
pub const RATE_LIMITED: &str = "gateway_rate_limited_total";
pub const ADMISSION_THROTTLED: &str = "gateway_admission_throttled_total";

/// Gives each metric its help text and unit (idempotent).
pub fn describe() {
    platform::metrics::install();
    describe_counter!(
        UPSTREAM_REQUESTS,
        Unit::Count,
        "Attempts to call a service instance, by outcome: its status code, connect_error, timeout or error."
    );
    describe_histogram!(
        UPSTREAM_DURATION,
        Unit::Seconds,
        "One attempt to call a service instance, from sending to the response headers."
    );
    describe_counter!(
        UPSTREAM_RETRIES,
        Unit::Count,
        "Attempts after the first of one request: moving on to the next instance."
    );
    describe_counter!(
        UPSTREAM_EJECTIONS,
        Unit::Count,
        "Times an instance was put last in the rotation after a failed attempt."
    );
    describe_gauge!(
        UPSTREAM_HEALTHY,
        "1 while the active health checks keep the instance in rotation, 0 while they keep it out."
    );
    describe_counter!(
        HEALTH_CHECK_EJECTIONS,
        Unit::Count,
        "Times the active health checks took an instance out of rotation."
    );
    describe_gauge!(
        UPSTREAM_INSTANCES,
        "Instances of the service in the gateway's current list."
    );
    describe_gauge!(
        BREAKER_STATE,
        "The circuit breaker of the service: 0 closed, 1 open, 2 half-open."
    );
    describe_counter!(
        BREAKER_TRANSITIONS,
        Unit::Count,
        "Circuit breaker state changes, by from and to state."
    );
    describe_counter!(
        BREAKER_REJECTED,
        Unit::Count,
        "Calls answered 503 at once because the service's circuit breaker was open."
    );
    describe_gauge!(
        BULKHEAD_LIMIT,
        "Calls to the service in flight the bulkhead allows."
    );
    describe_gauge!(BULKHEAD_IN_FLIGHT, "Calls to the service in flight now.");
    describe_counter!(
        BULKHEAD_REJECTED,
        Unit::Count,
        "Calls refused with 503 because the service's bulkhead was full."
    );
    describe_counter!(
        RETRY_BUDGET_EXHAUSTED,
        Unit::Count,
        "Retries not made because the service's retry budget was spent."
    );
    describe_counter!(
        RATE_LIMITED,
        Unit::Count,
        "Requests refused with 429 by the per-customer rate limit."
    );
    describe_counter!(
        ADMISSION_THROTTLED,
        "Requests that start sagas refused with 503 at the edge, within a hold after the service refused one."
    );
}
