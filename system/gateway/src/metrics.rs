//! The gateway's own metrics, per upstream instance (`upstream="order#2"`), beside the platform's
//! `http_server_request_duration_seconds` for what clients see.
//!
//! | metric | type | labels | what |
//! |---|---|---|---|
//! | `gateway_upstream_requests_total` | counter | `service`, `upstream`, `outcome` | attempts, by the instance's status code or `connect_error`, `timeout`, `error` |
//! | `gateway_upstream_request_duration_seconds` | histogram | `service`, `upstream` | one attempt |
//! | `gateway_upstream_retries_total` | counter | `service` | attempts after the first of a request (failover) |
//! | `gateway_upstream_ejections_total` | counter | `service`, `upstream` | an instance put last in the rotation after a failure |

use metrics::{Unit, describe_counter, describe_histogram};

pub const UPSTREAM_REQUESTS: &str = "gateway_upstream_requests_total";
pub const UPSTREAM_DURATION: &str = "gateway_upstream_request_duration_seconds";
pub const UPSTREAM_RETRIES: &str = "gateway_upstream_retries_total";
pub const UPSTREAM_EJECTIONS: &str = "gateway_upstream_ejections_total";

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
}
