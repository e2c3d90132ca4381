//! User tokens already verified, remembered until they expire.
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

use platform::auth::{AuthError, UserClaims, UserTokenVerifier};

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

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use contracts::domain::Role;
    use platform::auth::{UserTokenIssuer, generate_ed25519_pem};

    use super::*;

    fn setup() -> (UserTokenIssuer, VerifiedTokens) {
        let (private, public) = generate_ed25519_pem().unwrap();
        let issuer = UserTokenIssuer::from_pem(&private, "harness", "shop-api").unwrap();
        let verifier = UserTokenVerifier::from_pem(&public, "harness", "shop-api").unwrap();
        (issuer, VerifiedTokens::new(verifier))
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
