//! The gateway's own error responses. All use the shared [`contracts::http::ErrorBody`]; the
//! kinds a service also has go through [`ApiError`], the gateway-only ones (413, 502, 504) through
//! [`platform::http::error_response`] with the same shape.

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
    #[error("internal error")]
    Internal(#[source] anyhow::Error),
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
            Self::PayloadTooLarge { .. } => {
                error_response(StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large", message)
            }
            Self::Unreachable(_) | Self::BadUpstream(_) => {
                error_response(StatusCode::BAD_GATEWAY, "bad_gateway", message)
            }
            Self::Timeout(_) => {
                error_response(StatusCode::GATEWAY_TIMEOUT, "gateway_timeout", message)
            }
        }
    }
}
