//! The gateway's own error responses. All use the shared [`contracts::http::ErrorBody`]; the
//! kinds a service also has go through [`ApiError`], the gateway-only ones (405, 413, 429, 502, 503, 504) through
//! [`platform::http::error_response`] with the same shape.

use std::time::Duration;

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use platform::auth::AuthError;
use platform::http::{ApiError, error_response};

use crate::routes::Service;

#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    #[error(transparent)]
    Unauthorized(#[from] AuthError),
    #[error("{0}")]
    Forbidden(&'static str),
    #[error("no route for {0}")]
    NotFound(String),
    #[error("{path} does not serve {method}; the Allow header lists what it serves")]
    MethodNotAllowed {
        method: axum::http::Method,
        path: String,
    },
    #[error("{0}")]
    BadRequest(String),
    #[error("the request body is larger than {limit} bytes")]
    PayloadTooLarge { limit: usize },
    #[error("no instance of the {0} service is reachable")]
    Unreachable(Service),
    #[error("the {0} service failed to answer")]
    BadUpstream(Service),
    #[error("the {0} service did not answer in time")]
    Timeout(Service),
    #[error("the {service} service is failing; its circuit breaker is open")]
    CircuitOpen {
        service: Service,
        retry_after: Duration,
    },
    #[error("too many calls to the {0} service are in flight")]
    BulkheadFull(Service),
    #[error(
        "the {0} service is refusing new orders to stay within its limits; this one was refused \
         at the gateway"
    )]
    Throttled(Service),
    #[error("too many requests from this customer")]
    RateLimited { retry_after: Duration },
    #[error("internal error")]
    Internal(#[source] anyhow::Error),
}

impl GatewayError {
    /// Whether the upstream service failed (what a circuit breaker counts), as opposed to the
    /// gateway refusing or the client erring.
    pub fn is_upstream_failure(&self) -> bool {
        matches!(
            self,
            Self::Unreachable(_) | Self::BadUpstream(_) | Self::Timeout(_)
        )
    }
}

/// `Retry-After` in whole seconds, at least 1 (the header has no fractions).
fn retry_after(wait: Duration) -> HeaderValue {
    let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
    HeaderValue::from(secs.max(1))
}

fn with_retry_after(mut response: Response, wait: Duration) -> Response {
    response
        .headers_mut()
        .insert(header::RETRY_AFTER, retry_after(wait));
    response
}

impl IntoResponse for GatewayError {
    fn into_response(self) -> Response {
        let message = self.to_string();
        match self {
            Self::Unauthorized(e) => {
                let mut response = ApiError::from(e).into_response();
                response
                    .headers_mut()
                    .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
                response
            }
            Self::Forbidden(why) => ApiError::Forbidden(why.into()).into_response(),
            Self::NotFound(_) => ApiError::NotFound(message).into_response(),
            Self::BadRequest(why) => ApiError::BadRequest(why).into_response(),
            Self::Internal(e) => ApiError::Internal(e).into_response(),
            Self::MethodNotAllowed { .. } => error_response(
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                message,
            ),
            Self::PayloadTooLarge { .. } => {
                error_response(StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large", message)
            }
            Self::Unreachable(_) | Self::BadUpstream(_) => {
                error_response(StatusCode::BAD_GATEWAY, "bad_gateway", message)
            }
            Self::Timeout(_) => {
                error_response(StatusCode::GATEWAY_TIMEOUT, "gateway_timeout", message)
            }
            Self::CircuitOpen { retry_after, .. } => with_retry_after(
                error_response(StatusCode::SERVICE_UNAVAILABLE, "circuit_open", message),
                retry_after,
            ),
            Self::BulkheadFull(_) => with_retry_after(
                error_response(StatusCode::SERVICE_UNAVAILABLE, "bulkhead_full", message),
                Duration::from_secs(1),
            ),
            Self::Throttled(_) => with_retry_after(
                error_response(StatusCode::SERVICE_UNAVAILABLE, "overloaded", message),
                crate::throttle::RETRY_AFTER,
            ),
            Self::RateLimited { retry_after } => with_retry_after(
                error_response(StatusCode::TOO_MANY_REQUESTS, "rate_limited", message),
                retry_after,
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_say_when_to_come_back_in_whole_seconds() {
        let r = GatewayError::RateLimited {
            retry_after: Duration::from_millis(1200),
        }
        .into_response();
        assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(r.headers()[header::RETRY_AFTER], "2");
        let r = GatewayError::CircuitOpen {
            service: Service::Payment,
            retry_after: Duration::from_millis(10),
        }
        .into_response();
        assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(r.headers()[header::RETRY_AFTER], "1");
        let r = GatewayError::Throttled(Service::Order).into_response();
        assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(r.headers()[header::RETRY_AFTER], "1");
        let r = GatewayError::BulkheadFull(Service::Order).into_response();
        assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert!(r.headers().contains_key(header::RETRY_AFTER));
    }
}
