//! Service tokens in the HTTP contracts.
//!
//! Every call the gateway forwards carries `Authorization: Bearer <service token>`: an HS256 JWT
//! with the target service as audience and the user's id and roles inside (`platform::auth`).
//! The contracts match that header with a regular expression, and their example value is a real
//! token, signed with [`EXAMPLE_SECRET`] and expiring in 2100, so the pact file stays the same
//! from run to run and still says *who* the call is for.
//!
//! No service accepts the example: its secret is not theirs. When a provider is verified,
//! [`ReMint`] (the verifier's request filter) reads the example token's claims and puts in its
//! place a fresh token for the same audience, user and roles, signed with the secret of the
//! service under test. A call whose identity a provider refuses (a customer asking for an admin
//! route, say) therefore fails verification the way it would fail behind the real gateway.

use std::collections::HashMap;
use std::sync::Arc;

use contracts::domain::Role;
use either::Either;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use pact_consumer::patterns::{StringPattern, Term};
use pact_models::bodies::OptionalBody;
use pact_models::v4::http_parts::HttpRequest;
use pact_verifier::callback_executors::RequestFilterExecutor;
use platform::auth::{SERVICE_TOKEN_ISSUER, ServiceAuth, ServiceClaims};
use serde_json::Value;

/// Signs the example tokens in the pact files. Deliberately not a secret: no service uses it.
pub const EXAMPLE_SECRET: &[u8] = b"pact-example-tokens-are-accepted-by-no-service";

/// 2100-01-01T00:00:00Z: example tokens never change, so neither do the files.
const EXAMPLE_EXPIRY: u64 = 4_102_444_800;

/// What the forwarded `Authorization` header must look like: a bearer JWT (three base64url parts).
pub const BEARER_JWT: &str = r"^Bearer [A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+$";

/// Why an example token could not be made or read.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("cannot sign the example token: {0}")]
    Sign(#[source] jsonwebtoken::errors::Error),
    #[error("the request has no `Authorization: Bearer ...` header to re-mint")]
    Missing,
    #[error("the request's token is not an example token for the {service} service: {source}")]
    NotAnExample {
        service: String,
        #[source]
        source: jsonwebtoken::errors::Error,
    },
    #[error("cannot mint a token for the {service} service: {source}")]
    Mint {
        service: String,
        #[source]
        source: platform::auth::AuthError,
    },
}

/// The example service token for a call to `service` on behalf of `sub` with `roles`.
pub fn example_token(service: &str, sub: &str, roles: &[Role]) -> Result<String, TokenError> {
    let claims = ServiceClaims {
        sub: sub.into(),
        roles: roles.to_vec(),
        iss: SERVICE_TOKEN_ISSUER.into(),
        aud: service.into(),
        exp: EXAMPLE_EXPIRY,
    };
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(EXAMPLE_SECRET),
    )
    .map_err(TokenError::Sign)
}

/// The `Authorization` header a contract expects the gateway to forward: any bearer JWT, with
/// the example token for `service`, `sub` and `roles` as its example.
pub fn authorization(
    service: &str,
    sub: &str,
    roles: &[Role],
) -> Result<StringPattern, TokenError> {
    let example = format!("Bearer {}", example_token(service, sub, roles)?);
    Ok(StringPattern::pattern(Term::<StringPattern>::new(
        pact_consumer::patterns::build_regex(BEARER_JWT),
        example,
    )))
}

/// Reads an example token's claims, checking it was made by [`example_token`] for `service`.
pub fn example_claims(service: &str, token: &str) -> Result<ServiceClaims, TokenError> {
    let mut validation = Validation::new(Algorithm::HS256);
    validation.set_issuer(&[SERVICE_TOKEN_ISSUER]);
    validation.set_audience(&[service]);
    jsonwebtoken::decode::<ServiceClaims>(
        token,
        &DecodingKey::from_secret(EXAMPLE_SECRET),
        &validation,
    )
    .map(|data| data.claims)
    .map_err(|source| TokenError::NotAnExample {
        service: service.into(),
        source,
    })
}

/// The verifier's request filter: replaces the example service token of each request with one
/// the service under test accepts, for the same user and roles.
#[derive(Clone)]
pub struct ReMint {
    service: String,
    gateway: ServiceAuth,
}

impl std::fmt::Debug for ReMint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReMint")
            .field("service", &self.service)
            .finish_non_exhaustive()
    }
}

impl ReMint {
    /// `secret` is the service token secret the provider under test was started with.
    pub fn new(service: &str, secret: &[u8]) -> Self {
        Self {
            service: service.into(),
            // The audience given here is only checked when verifying; this value only issues.
            gateway: ServiceAuth::new(secret, SERVICE_TOKEN_ISSUER),
        }
    }

    /// The `Authorization` value to send in place of `example`.
    pub fn re_mint(&self, example: &str) -> Result<String, TokenError> {
        let token = example.strip_prefix("Bearer ").ok_or(TokenError::Missing)?;
        let claims = example_claims(&self.service, token)?;
        let fresh = self
            .gateway
            .issue(&self.service, &claims.sub, &claims.roles)
            .map_err(|source| TokenError::Mint {
                service: self.service.clone(),
                source,
            })?;
        Ok(format!("Bearer {fresh}"))
    }
}

impl RequestFilterExecutor for ReMint {
    fn call(self: Arc<Self>, request: &HttpRequest) -> HttpRequest {
        let mut request = request.clone();
        let headers = request.headers.get_or_insert_with(HashMap::new);
        let name = headers
            .keys()
            .find(|k| k.eq_ignore_ascii_case("authorization"))
            .cloned();
        let Some(name) = name else {
            return request;
        };
        let example = headers
            .get(&name)
            .and_then(|v| v.first())
            .cloned()
            .unwrap_or_default();
        match self.re_mint(&example) {
            Ok(fresh) => {
                headers.insert(name, vec![fresh]);
            }
            Err(e) => {
                // The filter cannot fail the request itself; without a token the provider answers
                // 401 and the verification reports that mismatch, with this line to explain it.
                eprintln!(
                    "contract-pacts: {} {}: {e}; sending it without a service token",
                    request.method, request.path
                );
                headers.remove(&name);
            }
        }
        request
    }

    fn call_non_http(
        &self,
        request_body: &OptionalBody,
        metadata: &HashMap<String, Either<Value, bytes::Bytes>>,
    ) -> (OptionalBody, HashMap<String, Either<Value, bytes::Bytes>>) {
        // Only plugin transports call this, and no plugin is used.
        (request_body.clone(), metadata.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_example_token_is_stable_and_says_who_the_call_is_for() {
        let a = example_token("order", "cust-1", &[Role::Customer]).unwrap();
        let b = example_token("order", "cust-1", &[Role::Customer]).unwrap();
        assert_eq!(a, b);
        let claims = example_claims("order", &a).unwrap();
        assert_eq!(claims.sub, "cust-1");
        assert_eq!(claims.roles, vec![Role::Customer]);
        assert!(regex_is_match(&format!("Bearer {a}")));
    }

    #[test]
    fn the_filter_swaps_the_example_for_a_token_the_service_accepts() {
        let secret = [9u8; 32];
        let example = format!(
            "Bearer {}",
            example_token("inventory", "admin-1", &[Role::Admin]).unwrap()
        );
        let request = HttpRequest {
            headers: Some(HashMap::from([("Authorization".into(), vec![example])])),
            ..HttpRequest::default()
        };

        let filtered = Arc::new(ReMint::new("inventory", &secret)).call(&request);

        let header = &filtered.headers.unwrap()["Authorization"][0];
        let token = header.strip_prefix("Bearer ").unwrap();
        let caller = ServiceAuth::new(&secret, "inventory")
            .verify(token)
            .unwrap();
        assert_eq!(caller.user_id, "admin-1");
        assert!(caller.is_admin());
    }

    #[test]
    fn a_token_for_another_service_is_not_re_minted() {
        let other = example_token("payment", "admin-1", &[Role::Admin]).unwrap();
        let err = ReMint::new("inventory", &[9u8; 32])
            .re_mint(&format!("Bearer {other}"))
            .unwrap_err();
        assert!(matches!(err, TokenError::NotAnExample { .. }), "{err}");
    }

    fn regex_is_match(value: &str) -> bool {
        pact_consumer::patterns::build_regex(BEARER_JWT).is_match(value)
    }
}
