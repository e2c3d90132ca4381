//! Authentication and authorisation.
//!
//! Two kinds of token, on purpose:
//! - **User tokens** (EdDSA, asymmetric): issued by an identity provider (the harness plays that
//!   part), verified by the gateway with the public key only. Checked: signature, `exp`, `iss`,
//!   `aud`; roles come from the `roles` claim.
//! - **Service tokens** (HS256, short-lived): minted by the gateway for each forwarded call, with
//!   the target service as audience and the caller's identity inside. Every service rejects a call
//!   without a valid one, so nothing reaches a service around the gateway (zero trust between
//!   services). A shared secret keeps this cheap; mTLS would be the next step.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::extract::{FromRef, FromRequestParts};
use axum::http::request::Parts;
use contracts::domain::{CustomerId, Role};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

use crate::http::ApiError;

/// Why a token was refused. The message is safe to show to the caller.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("missing bearer token")]
    Missing,
    #[error("malformed Authorization header: expected `Bearer <token>`")]
    MalformedHeader,
    #[error("token expired")]
    Expired,
    #[error("token signature is invalid")]
    BadSignature,
    #[error("token issuer is not trusted")]
    BadIssuer,
    #[error("token audience does not match")]
    BadAudience,
    #[error("token is malformed: {0}")]
    Malformed(String),
    #[error("key error: {0}")]
    Key(String),
}

impl From<jsonwebtoken::errors::Error> for AuthError {
    fn from(e: jsonwebtoken::errors::Error) -> Self {
        use jsonwebtoken::errors::ErrorKind;
        match e.kind() {
            ErrorKind::ExpiredSignature => Self::Expired,
            ErrorKind::InvalidSignature => Self::BadSignature,
            ErrorKind::InvalidIssuer => Self::BadIssuer,
            ErrorKind::InvalidAudience => Self::BadAudience,
            ErrorKind::InvalidEcdsaKey
            | ErrorKind::InvalidRsaKey(_)
            | ErrorKind::InvalidKeyFormat => Self::Key(e.to_string()),
            _ => Self::Malformed(e.to_string()),
        }
    }
}

impl From<AuthError> for ApiError {
    fn from(e: AuthError) -> Self {
        ApiError::Unauthorized(e.to_string())
    }
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default()
}

/// Extracts the token from `Authorization: Bearer <token>`.
pub fn bearer(headers: &http::HeaderMap) -> Result<&str, AuthError> {
    let value = headers
        .get(http::header::AUTHORIZATION)
        .ok_or(AuthError::Missing)?;
    let value = value.to_str().map_err(|_| AuthError::MalformedHeader)?;
    let (scheme, token) = value.split_once(' ').ok_or(AuthError::MalformedHeader)?;
    if !scheme.eq_ignore_ascii_case("bearer") || token.trim().is_empty() {
        return Err(AuthError::MalformedHeader);
    }
    Ok(token.trim())
}

/// Claims of a user token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserClaims {
    pub sub: String,
    pub roles: Vec<Role>,
    pub iss: String,
    pub aud: String,
    pub exp: u64,
    pub iat: u64,
}

/// Creates a fresh Ed25519 key pair as PKCS#8 PEM: `(private, public)`.
pub fn generate_ed25519_pem() -> Result<(String, String), AuthError> {
    use ed25519_dalek::pkcs8::spki::der::pem::LineEnding;
    use ed25519_dalek::pkcs8::{EncodePrivateKey, EncodePublicKey};
    let seed: [u8; 32] = rand::random();
    let signing = ed25519_dalek::SigningKey::from_bytes(&seed);
    let private = signing
        .to_pkcs8_pem(LineEnding::LF)
        .map_err(|e| AuthError::Key(e.to_string()))?
        .to_string();
    let public = signing
        .verifying_key()
        .to_public_key_pem(LineEnding::LF)
        .map_err(|e| AuthError::Key(e.to_string()))?;
    Ok((private, public))
}

/// Signs user tokens (the harness's identity provider).
#[derive(Clone)]
pub struct UserTokenIssuer {
    key: EncodingKey,
    issuer: String,
    audience: String,
}

impl UserTokenIssuer {
    pub fn from_pem(private_pem: &str, issuer: &str, audience: &str) -> Result<Self, AuthError> {
        Ok(Self {
            key: EncodingKey::from_ed_pem(private_pem.as_bytes())?,
            issuer: issuer.into(),
            audience: audience.into(),
        })
    }

    pub fn issue(&self, sub: &str, roles: &[Role], ttl: Duration) -> Result<String, AuthError> {
        let now = unix_now();
        self.issue_claims(&UserClaims {
            sub: sub.into(),
            roles: roles.to_vec(),
            iss: self.issuer.clone(),
            aud: self.audience.clone(),
            exp: now + ttl.as_secs(),
            iat: now,
        })
    }

    /// Signs arbitrary claims; tests use it for expired or foreign tokens.
    pub fn issue_claims(&self, claims: &UserClaims) -> Result<String, AuthError> {
        Ok(jsonwebtoken::encode(
            &Header::new(Algorithm::EdDSA),
            claims,
            &self.key,
        )?)
    }
}

/// Verifies user tokens (the gateway).
#[derive(Clone)]
pub struct UserTokenVerifier {
    key: DecodingKey,
    validation: Validation,
}

impl UserTokenVerifier {
    pub fn from_pem(public_pem: &str, issuer: &str, audience: &str) -> Result<Self, AuthError> {
        let mut validation = Validation::new(Algorithm::EdDSA);
        validation.set_issuer(&[issuer]);
        validation.set_audience(&[audience]);
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        validation.leeway = 5;
        Ok(Self {
            key: DecodingKey::from_ed_pem(public_pem.as_bytes())?,
            validation,
        })
    }

    pub fn verify(&self, token: &str) -> Result<UserClaims, AuthError> {
        Ok(jsonwebtoken::decode::<UserClaims>(token, &self.key, &self.validation)?.claims)
    }
}

/// Claims of an internal service token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceClaims {
    /// The user the call is made for.
    pub sub: String,
    pub roles: Vec<Role>,
    pub iss: String,
    /// The service the call is for, e.g. `order`.
    pub aud: String,
    pub exp: u64,
}

pub const SERVICE_TOKEN_ISSUER: &str = "gateway";
/// How long a service token is valid.
pub const SERVICE_TOKEN_TTL: Duration = Duration::from_secs(60);

/// Mints (gateway) and verifies (services) internal service tokens.
#[derive(Clone)]
pub struct ServiceAuth {
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
}

impl ServiceAuth {
    /// `audience` is the name of the service that verifies with this value.
    pub fn new(secret: &[u8], audience: &str) -> Self {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.set_issuer(&[SERVICE_TOKEN_ISSUER]);
        validation.set_audience(&[audience]);
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        validation.leeway = 5;
        Self {
            encoding: EncodingKey::from_secret(secret),
            decoding: DecodingKey::from_secret(secret),
            validation,
        }
    }

    pub fn issue(&self, audience: &str, sub: &str, roles: &[Role]) -> Result<String, AuthError> {
        self.issue_valid_for(audience, sub, roles, SERVICE_TOKEN_TTL)
    }

    /// [`Self::issue`] with a lifetime of `ttl` instead of [`SERVICE_TOKEN_TTL`] (a benchmark
    /// round that outlasts a minute).
    pub fn issue_valid_for(
        &self,
        audience: &str,
        sub: &str,
        roles: &[Role],
        ttl: Duration,
    ) -> Result<String, AuthError> {
        self.issue_claims(&ServiceClaims {
            sub: sub.into(),
            roles: roles.to_vec(),
            iss: SERVICE_TOKEN_ISSUER.into(),
            aud: audience.into(),
            exp: unix_now() + ttl.as_secs(),
        })
    }

    /// Signs arbitrary claims; tests use it for expired or misaddressed tokens.
    pub fn issue_claims(&self, claims: &ServiceClaims) -> Result<String, AuthError> {
        Ok(jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            claims,
            &self.encoding,
        )?)
    }

    pub fn verify(&self, token: &str) -> Result<Caller, AuthError> {
        let claims =
            jsonwebtoken::decode::<ServiceClaims>(token, &self.decoding, &self.validation)?.claims;
        Ok(Caller {
            user_id: claims.sub,
            roles: claims.roles,
        })
    }
}

/// Who a request is for, taken from a verified service token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    pub user_id: String,
    pub roles: Vec<Role>,
}

impl Caller {
    pub fn is_admin(&self) -> bool {
        self.roles.contains(&Role::Admin)
    }

    /// The caller as a customer; 403 when the token has no customer role.
    pub fn customer_id(&self) -> Result<CustomerId, ApiError> {
        if !self.roles.contains(&Role::Customer) {
            return Err(ApiError::Forbidden("this needs the customer role".into()));
        }
        CustomerId::parse(self.user_id.clone()).map_err(ApiError::from)
    }
}

impl<S> FromRequestParts<S> for Caller
where
    ServiceAuth: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let auth = ServiceAuth::from_ref(state);
        let token = bearer(&parts.headers)?;
        Ok(auth.verify(token)?)
    }
}

/// A caller with the admin role; 403 otherwise.
#[derive(Debug, Clone)]
pub struct Admin(pub Caller);

impl<S> FromRequestParts<S> for Admin
where
    ServiceAuth: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let caller = Caller::from_request_parts(parts, state).await?;
        if !caller.is_admin() {
            return Err(ApiError::Forbidden("this needs the admin role".into()));
        }
        Ok(Self(caller))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair() -> (UserTokenIssuer, UserTokenVerifier) {
        let (private, public) = generate_ed25519_pem().unwrap();
        (
            UserTokenIssuer::from_pem(&private, "harness", "shop-api").unwrap(),
            UserTokenVerifier::from_pem(&public, "harness", "shop-api").unwrap(),
        )
    }

    #[test]
    fn a_user_token_round_trips_with_its_roles() {
        let (issuer, verifier) = pair();
        let token = issuer
            .issue("cust-1", &[Role::Customer], Duration::from_secs(60))
            .unwrap();
        let claims = verifier.verify(&token).unwrap();
        assert_eq!(claims.sub, "cust-1");
        assert_eq!(claims.roles, vec![Role::Customer]);
    }

    #[test]
    fn expired_foreign_and_wrong_audience_user_tokens_are_refused() {
        let (issuer, verifier) = pair();
        let (foreign, _) = pair();
        let now = unix_now();
        let expired = issuer
            .issue_claims(&UserClaims {
                sub: "c".into(),
                roles: vec![Role::Customer],
                iss: "harness".into(),
                aud: "shop-api".into(),
                exp: now - 600,
                iat: now - 900,
            })
            .unwrap();
        assert!(matches!(verifier.verify(&expired), Err(AuthError::Expired)));
        let other = foreign
            .issue("c", &[Role::Customer], Duration::from_secs(60))
            .unwrap();
        assert!(matches!(
            verifier.verify(&other),
            Err(AuthError::BadSignature)
        ));
        let wrong_aud =
            UserTokenIssuer::from_pem(&generate_ed25519_pem().unwrap().0, "harness", "elsewhere")
                .unwrap();
        let token = wrong_aud.issue("c", &[], Duration::from_secs(60)).unwrap();
        assert!(verifier.verify(&token).is_err());
        assert!(matches!(
            verifier.verify("not.a.jwt"),
            Err(AuthError::Malformed(_))
        ));
    }

    #[test]
    fn a_service_token_is_only_valid_for_its_audience() {
        let secret = [7u8; 32];
        let gateway = ServiceAuth::new(&secret, "gateway");
        let order = ServiceAuth::new(&secret, "order");
        let payment = ServiceAuth::new(&secret, "payment");
        let token = gateway.issue("order", "cust-1", &[Role::Customer]).unwrap();
        let caller = order.verify(&token).unwrap();
        assert_eq!(caller.user_id, "cust-1");
        assert!(payment.verify(&token).is_err());
        let forged = ServiceAuth::new(&[8u8; 32], "gateway")
            .issue("order", "cust-1", &[Role::Admin])
            .unwrap();
        assert!(matches!(
            order.verify(&forged),
            Err(AuthError::BadSignature)
        ));
    }

    #[test]
    fn bearer_parsing_distinguishes_missing_from_malformed() {
        let mut h = http::HeaderMap::new();
        assert!(matches!(bearer(&h), Err(AuthError::Missing)));
        h.insert(http::header::AUTHORIZATION, "Basic abc".parse().unwrap());
        assert!(matches!(bearer(&h), Err(AuthError::MalformedHeader)));
        h.insert(http::header::AUTHORIZATION, "Bearer abc".parse().unwrap());
        assert_eq!(bearer(&h).unwrap(), "abc");
    }
}
