//! User tokens already verified, remembered until they expire; and the service tokens the
//! gateway sends on, reused while they have most of their life left ([`IssuedTokens`]).
//!
//! Checking an Ed25519 signature was the gateway's largest single cost: about a fifth of its CPU
//! at 4,500 catalog reads per second (`perf`, `harness bench gateway`), paid again on every
//! request although a client sends the same token for its whole session. A token whose
//! signature, issuer and audience were verified once is the same string next time, so the
//! claims are kept (moka's bounded cache) and only the expiry, which changes with the clock, is
//! checked again: with the verifier's own leeway, so a remembered token expires exactly when a
//! fresh verification would refuse it.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::http::HeaderValue;
use contracts::domain::Role;
use platform::auth::{AuthError, SERVICE_TOKEN_TTL, ServiceAuth, UserClaims, UserTokenVerifier};

/// Tokens remembered at most (a bound on memory: about 1 KiB each).
const CAPACITY: u64 = 50_000;
/// How long a token is remembered at most, whatever its expiry.
const REMEMBERED_FOR: Duration = Duration::from_secs(300);
/// The verifier's leeway on `exp` (`UserTokenVerifier`'s validation).
const LEEWAY_S: u64 = 5;

pub struct VerifiedTokens {
    verifier: UserTokenVerifier,
    cache: moka::sync::Cache<String, Arc<UserClaims>>,
}

impl VerifiedTokens {
    pub fn new(verifier: UserTokenVerifier) -> Self {
        Self {
            verifier,
            cache: moka::sync::Cache::builder()
                .max_capacity(CAPACITY)
                .time_to_live(REMEMBERED_FOR)
                .build(),
        }
    }

    /// The token's claims: remembered, or verified now.
    pub fn verify(&self, token: &str) -> Result<Arc<UserClaims>, AuthError> {
        self.verify_at(token, unix_now())
    }

    fn verify_at(&self, token: &str, now: u64) -> Result<Arc<UserClaims>, AuthError> {
        if let Some(claims) = self.cache.get(token) {
            if claims.exp + LEEWAY_S > now {
                return Ok(claims);
            }
            self.cache.invalidate(token);
            return Err(AuthError::Expired);
        }
        let claims = Arc::new(self.verifier.verify(token)?);
        self.cache.insert(token.to_string(), claims.clone());
        Ok(claims)
    }
}

/// The service tokens the gateway sends on, as `Authorization` values, by audience, subject
/// and roles.
///
/// Signing one (claims to JSON, base64, HMAC, then the header value checked) on every request
/// was the largest of the small costs left in the gateway's own code once the breaker was fixed
/// (`perf`: `serde_json` and the header's formatting). A customer's requests to one service
/// carry the same claims but for `exp`, so a token is reused while more than half of its
/// lifetime is left: a service never sees one with less than that.
pub struct IssuedTokens {
    auth: ServiceAuth,
    cache: moka::sync::Cache<(&'static str, String, Vec<Role>), HeaderValue>,
}

impl IssuedTokens {
    pub fn new(auth: ServiceAuth) -> Self {
        Self {
            auth,
            cache: moka::sync::Cache::builder()
                .max_capacity(CAPACITY)
                .time_to_live(SERVICE_TOKEN_TTL / 2)
                .build(),
        }
    }

    /// `Bearer <token>` for a call to `audience` made for `sub` with `roles`.
    pub fn bearer(
        &self,
        audience: &'static str,
        sub: &str,
        roles: &[Role],
    ) -> Result<HeaderValue, AuthError> {
        let key = (audience, sub.to_string(), roles.to_vec());
        if let Some(value) = self.cache.get(&key) {
            return Ok(value);
        }
        let token = self.auth.issue(audience, sub, roles)?;
        let value = HeaderValue::try_from(format!("Bearer {token}"))
            .expect("a JWT is base64url and dots: a valid header value");
        self.cache.insert(key, value.clone());
        Ok(value)
    }
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use platform::auth::{UserTokenIssuer, generate_ed25519_pem};

    use super::*;

    fn setup() -> (UserTokenIssuer, VerifiedTokens) {
        let (private, public) = generate_ed25519_pem().unwrap();
        let issuer = UserTokenIssuer::from_pem(&private, "harness", "shop-api").unwrap();
        let verifier = UserTokenVerifier::from_pem(&public, "harness", "shop-api").unwrap();
        (issuer, VerifiedTokens::new(verifier))
    }

    #[test]
    fn a_service_token_is_reused_for_the_same_claims_and_only_for_them() {
        let auth = ServiceAuth::new(b"0123456789abcdef0123456789abcdef", "gateway");
        let checker = ServiceAuth::new(b"0123456789abcdef0123456789abcdef", "inventory");
        let tokens = IssuedTokens::new(auth);
        let a = tokens.bearer("inventory", "c1", &[Role::Customer]).unwrap();
        assert_eq!(
            a,
            tokens.bearer("inventory", "c1", &[Role::Customer]).unwrap()
        );
        let others = [
            tokens.bearer("order", "c1", &[Role::Customer]).unwrap(),
            tokens.bearer("inventory", "c2", &[Role::Customer]).unwrap(),
            tokens.bearer("inventory", "c1", &[Role::Admin]).unwrap(),
        ];
        assert!(others.iter().all(|o| *o != a));
        let token = a.to_str().unwrap().strip_prefix("Bearer ").unwrap();
        let claims = checker.verify(token).expect("a valid service token");
        assert_eq!(
            (claims.user_id.as_str(), claims.roles),
            ("c1", vec![Role::Customer])
        );
    }

    #[test]
    fn a_remembered_token_still_expires_when_verification_would_refuse_it() {
        let (issuer, tokens) = setup();
        let token = issuer
            .issue("cust-1", &[Role::Customer], Duration::from_secs(60))
            .unwrap();
        let claims = tokens.verify(&token).unwrap();
        assert_eq!(claims.sub, "cust-1");
        let again = tokens.verify(&token).unwrap();
        assert!(
            Arc::ptr_eq(&claims, &again),
            "the second time it is remembered"
        );
        assert!(tokens.verify_at(&token, claims.exp + LEEWAY_S - 1).is_ok());
        assert!(matches!(
            tokens.verify_at(&token, claims.exp + LEEWAY_S),
            Err(AuthError::Expired)
        ));
    }

    #[test]
    fn a_bad_token_is_refused_every_time_and_never_remembered() {
        let (issuer, tokens) = setup();
        let token = issuer
            .issue("cust-1", &[Role::Customer], Duration::from_secs(60))
            .unwrap();
        let forged = format!("{}x", &token[..token.len() - 1]);
        for _ in 0..2 {
            assert!(tokens.verify(&forged).is_err());
        }
        assert!(tokens.cache.get(&forged).is_none());
        let (_, other) = setup();
        assert!(other.verify(&token).is_err(), "another key's token");
    }
}
