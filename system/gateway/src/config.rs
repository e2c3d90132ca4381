//! The gateway's configuration, read from the environment and validated before anything binds.

use std::path::{Path, PathBuf};
use std::time::Duration;

use platform::auth::UserTokenVerifier;
use platform::config::{self, CommonConfig, ConfigError};

use crate::resilience::ResilienceConfig;

pub const JWT_PUBLIC_KEY_PEM: &str = "JWT_PUBLIC_KEY_PEM";
pub const JWT_PUBLIC_KEY_FILE: &str = "JWT_PUBLIC_KEY_FILE";
pub const JWT_ISSUER: &str = "JWT_ISSUER";
pub const JWT_AUDIENCE: &str = "JWT_AUDIENCE";
pub const ORDER_URLS: &str = "ORDER_URLS";
pub const INVENTORY_URLS: &str = "INVENTORY_URLS";
pub const PAYMENT_URLS: &str = "PAYMENT_URLS";
pub const UPSTREAM_TIMEOUT_MS: &str = "UPSTREAM_TIMEOUT_MS";
pub const ATTEMPT_TIMEOUT_MS: &str = "ATTEMPT_TIMEOUT_MS";
pub const MAX_BODY_BYTES: &str = "MAX_BODY_BYTES";
/// A JSON file of instance lists the gateway re-reads when it changes (see [`crate::upstream`]).
pub const UPSTREAMS_FILE: &str = "UPSTREAMS_FILE";

pub const DEFAULT_JWT_ISSUER: &str = "harness";
pub const DEFAULT_JWT_AUDIENCE: &str = "shop-api";
pub const DEFAULT_UPSTREAM_TIMEOUT_MS: u64 = 5_000;
/// How long one attempt of a request that is safe to repeat may take before the next instance
/// is tried (the last attempt gets what is left of `UPSTREAM_TIMEOUT_MS`).
pub const DEFAULT_ATTEMPT_TIMEOUT_MS: u64 = 1_000;
pub const DEFAULT_MAX_BODY_BYTES: usize = 64 * 1024;

/// The service name in logs and the default instance id.
pub const SERVICE_NAME: &str = "gateway";

/// Everything the gateway reads at start-up.
#[derive(Debug, Clone)]
pub struct Config {
    pub common: CommonConfig,
    /// The identity provider's Ed25519 public key (PEM) that user tokens are checked against.
    pub jwt_public_key_pem: String,
    pub jwt_issuer: String,
    pub jwt_audience: String,
    /// Base URLs of the instances of each service, e.g. `http://127.0.0.1:8081`.
    pub order_urls: Vec<String>,
    pub inventory_urls: Vec<String>,
    pub payment_urls: Vec<String>,
    /// Bound on one forwarded call, from the first connect attempt to the last body byte.
    pub upstream_timeout: Duration,
    pub attempt_timeout: Duration,
    /// Largest request body forwarded; larger ones get 413.
    pub max_body_bytes: usize,
    /// Breaker, bulkhead, retries, rate limit, health checks.
    pub resilience: ResilienceConfig,
    pub upstreams_file: Option<PathBuf>,
}

impl Config {
    pub fn from_env() -> Result<Self, ConfigError> {
        let common = CommonConfig::from_env(SERVICE_NAME)?;
        let jwt_issuer =
            config::optional(JWT_ISSUER).unwrap_or_else(|| DEFAULT_JWT_ISSUER.to_string());
        let jwt_audience =
            config::optional(JWT_AUDIENCE).unwrap_or_else(|| DEFAULT_JWT_AUDIENCE.to_string());
        let (var, jwt_public_key_pem) = match (
            config::optional(JWT_PUBLIC_KEY_PEM),
            config::optional(JWT_PUBLIC_KEY_FILE),
        ) {
            (Some(pem), _) => (JWT_PUBLIC_KEY_PEM, unescape_newlines(&pem)),
            (None, Some(file)) => (JWT_PUBLIC_KEY_FILE, read_pem_file(&file)?),
            (None, None) => {
                return Err(ConfigError::Missing {
                    var: JWT_PUBLIC_KEY_PEM,
                    hint: "the Ed25519 public key (PEM) of user tokens; or set JWT_PUBLIC_KEY_FILE",
                });
            }
        };
        // Parse now so a bad key stops the process before it binds, naming the variable.
        verifier(&jwt_public_key_pem, var, &jwt_issuer, &jwt_audience)?;
        let hint = "comma-separated base URLs of the service's instances";
        Ok(Self {
            common,
            jwt_public_key_pem,
            jwt_issuer,
            jwt_audience,
            order_urls: config::url_list(ORDER_URLS, hint)?,
            inventory_urls: config::url_list(INVENTORY_URLS, hint)?,
            payment_urls: config::url_list(PAYMENT_URLS, hint)?,
            upstream_timeout: config::millis_or(UPSTREAM_TIMEOUT_MS, DEFAULT_UPSTREAM_TIMEOUT_MS)?,
            attempt_timeout: config::millis_or(ATTEMPT_TIMEOUT_MS, DEFAULT_ATTEMPT_TIMEOUT_MS)?,
            max_body_bytes: config::parse_or(MAX_BODY_BYTES, DEFAULT_MAX_BODY_BYTES)?,
            resilience: ResilienceConfig::from_env()?,
            upstreams_file: config::optional(UPSTREAMS_FILE).map(PathBuf::from),
        })
    }

    /// The verifier of user tokens this configuration describes.
    pub fn user_token_verifier(&self) -> Result<UserTokenVerifier, ConfigError> {
        verifier(
            &self.jwt_public_key_pem,
            JWT_PUBLIC_KEY_PEM,
            &self.jwt_issuer,
            &self.jwt_audience,
        )
    }
}

fn verifier(
    pem: &str,
    var: &'static str,
    issuer: &str,
    audience: &str,
) -> Result<UserTokenVerifier, ConfigError> {
    UserTokenVerifier::from_pem(pem, issuer, audience).map_err(|e| ConfigError::Invalid {
        var,
        value: "<public key>".into(),
        reason: format!("not an Ed25519 public key in PEM: {e}"),
    })
}

fn read_pem_file(path: &str) -> Result<String, ConfigError> {
    std::fs::read_to_string(Path::new(path)).map_err(|e| ConfigError::Invalid {
        var: JWT_PUBLIC_KEY_FILE,
        value: path.to_string(),
        reason: format!("cannot read the file: {e}"),
    })
}

/// Env files and CI secrets often carry a PEM on one line with literal `\n`s.
fn unescape_newlines(pem: &str) -> String {
    if pem.contains('\n') {
        pem.to_string()
    } else {
        pem.replace("\\n", "\n")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bad_public_key_is_a_config_error_naming_the_variable() {
        let err = verifier("not a pem", JWT_PUBLIC_KEY_PEM, "harness", "shop-api")
            .err()
            .expect("garbage is refused");
        assert!(err.to_string().contains(JWT_PUBLIC_KEY_PEM), "{err}");
        assert!(!err.to_string().contains("not a pem"), "{err}");
    }

    #[test]
    fn a_one_line_pem_with_escaped_newlines_is_accepted() {
        let (_, public) = platform::auth::generate_ed25519_pem().unwrap();
        let one_line = public.trim_end().replace('\n', "\\n");
        let pem = unescape_newlines(&one_line);
        assert!(verifier(&pem, JWT_PUBLIC_KEY_PEM, "harness", "shop-api").is_ok());
    }

    #[test]
    fn an_unreadable_key_file_names_the_file_variable() {
        let err = read_pem_file("/nonexistent/key.pem").unwrap_err();
        assert!(err.to_string().contains(JWT_PUBLIC_KEY_FILE), "{err}");
    }
}
