//! Configuration from the environment, validated before anything binds.
//!
//! Every service reads the same [`CommonConfig`] plus its own variables. A missing or malformed
//! variable is a [`ConfigError`] naming the variable and what was expected; binaries exit with
//! [`EXIT_CONFIG`] (64, `EX_USAGE`) on it, like linkerd2-proxy does.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};

/// Exit code for bad configuration (`EX_USAGE`).
pub const EXIT_CONFIG: i32 = 64;

pub const BIND_ADDR: &str = "BIND_ADDR";
pub const INSTANCE_ID: &str = "INSTANCE_ID";
pub const READY_FILE: &str = "READY_FILE";
pub const EXIT_ON_STDIN_EOF: &str = "EXIT_ON_STDIN_EOF";
pub const SHUTDOWN_TIMEOUT_MS: &str = "SHUTDOWN_TIMEOUT_MS";
pub const SERVICE_TOKEN_SECRET: &str = "SERVICE_TOKEN_SECRET";
pub const DATABASE_URL: &str = "DATABASE_URL";
pub const KAFKA_BROKERS: &str = "KAFKA_BROKERS";
pub const LOG_FORMAT: &str = "LOG_FORMAT";
pub const DRAIN_DELAY_MS: &str = "DRAIN_DELAY_MS";
pub const REQUEST_TIMEOUT_MS: &str = "REQUEST_TIMEOUT_MS";
pub const MAX_CONCURRENT_REQUESTS: &str = "MAX_CONCURRENT_REQUESTS";

/// A configuration problem, naming the variable.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{var} is not set: {hint}")]
    Missing {
        var: &'static str,
        hint: &'static str,
    },
    #[error("{var}={value:?} is not valid: {reason}")]
    Invalid {
        var: &'static str,
        value: String,
        reason: String,
    },
}

/// Reads a variable; `None` when unset or empty.
pub fn optional(var: &'static str) -> Option<String> {
    std::env::var(var).ok().filter(|v| !v.trim().is_empty())
}

/// Reads a variable that must be set.
pub fn required(var: &'static str, hint: &'static str) -> Result<String, ConfigError> {
    optional(var).ok_or(ConfigError::Missing { var, hint })
}

/// Reads and parses a variable, with a default when unset.
pub fn parse_or<T>(var: &'static str, default: T) -> Result<T, ConfigError>
where
    T: FromStr,
    T::Err: std::fmt::Display,
{
    match optional(var) {
        None => Ok(default),
        Some(v) => v.trim().parse().map_err(|e: T::Err| ConfigError::Invalid {
            var,
            value: v.clone(),
            reason: e.to_string(),
        }),
    }
}

/// Reads a duration given in milliseconds.
pub fn millis_or(var: &'static str, default_ms: u64) -> Result<Duration, ConfigError> {
    parse_or(var, default_ms).map(Duration::from_millis)
}

/// Checks that `url` is an `http://` URL. `https://` gets its own reason: the system is built
/// without TLS (its HTTP clients have no TLS feature), so such a URL would fail on every call;
/// it is refused at start-up instead.
pub fn plain_http_url(url: &str) -> Result<(), String> {
    if url.starts_with("http://") {
        Ok(())
    } else if url.starts_with("https://") {
        Err(format!(
            "{url:?}: this build speaks plain HTTP only (no TLS); give an http:// URL, and put \
             TLS in front (a sidecar or mesh) where it is needed"
        ))
    } else {
        Err(format!("{url:?} does not start with http://"))
    }
}

/// Reads a comma-separated list of base URLs (`http://127.0.0.1:8081,http://127.0.0.1:8082`).
pub fn url_list(var: &'static str, hint: &'static str) -> Result<Vec<String>, ConfigError> {
    let raw = required(var, hint)?;
    let urls: Vec<String> = raw
        .split(',')
        .map(|s| s.trim().trim_end_matches('/').to_string())
        .filter(|s| !s.is_empty())
        .collect();
    for u in &urls {
        if let Err(reason) = plain_http_url(u) {
            return Err(ConfigError::Invalid {
                var,
                value: raw.clone(),
                reason,
            });
        }
    }
    if urls.is_empty() {
        return Err(ConfigError::Invalid {
            var,
            value: raw,
            reason: "no URL given".into(),
        });
    }
    Ok(urls)
}

/// What every service reads.
#[derive(Debug, Clone)]
pub struct CommonConfig {
    /// `BIND_ADDR`, default `127.0.0.1:0` (any free port; see `READY_FILE`).
    pub bind_addr: SocketAddr,
    /// `INSTANCE_ID`, e.g. `order#2`; names this instance in logs and consumer ids.
    pub instance_id: String,
    /// `READY_FILE`: where to write `{"addr": ..., "pid": ...}` once listening.
    pub ready_file: Option<PathBuf>,
    /// `EXIT_ON_STDIN_EOF=1`: shut down when stdin closes, i.e. when the supervisor died.
    pub exit_on_stdin_eof: bool,
    /// `SHUTDOWN_TIMEOUT_MS` (default 10 000): the bound on graceful drain.
    pub shutdown_timeout: Duration,
    /// `DRAIN_DELAY_MS` (default 0): on shutdown, how long `/health/ready` answers 503 while
    /// requests are still served, before the listener closes, so that load balancers take the
    /// instance out of rotation first (Kubernetes' preStop sleep).
    pub drain_delay: Duration,
    /// `SERVICE_TOKEN_SECRET`: the HS256 secret of internal service tokens, at least 32 bytes.
    pub service_token_secret: SecretString,
    /// `REQUEST_TIMEOUT_MS` (default 10 000) and `MAX_CONCURRENT_REQUESTS` (default 1024): the
    /// service's own bounds on its API requests.
    pub limits: crate::http::Limits,
}

impl CommonConfig {
    pub fn from_env(service: &str) -> Result<Self, ConfigError> {
        let secret = required(
            SERVICE_TOKEN_SECRET,
            "the shared secret of internal service tokens (at least 32 bytes)",
        )?;
        if secret.len() < 32 {
            return Err(ConfigError::Invalid {
                var: SERVICE_TOKEN_SECRET,
                value: "<redacted>".into(),
                reason: format!("{} bytes is shorter than 32", secret.len()),
            });
        }
        Ok(Self {
            bind_addr: parse_or(BIND_ADDR, SocketAddr::from(([127, 0, 0, 1], 0)))?,
            instance_id: optional(INSTANCE_ID).unwrap_or_else(|| format!("{service}#1")),
            ready_file: optional(READY_FILE).map(PathBuf::from),
            exit_on_stdin_eof: parse_bool(EXIT_ON_STDIN_EOF)?,
            shutdown_timeout: millis_or(SHUTDOWN_TIMEOUT_MS, 10_000)?,
            drain_delay: millis_or(DRAIN_DELAY_MS, 0)?,
            service_token_secret: SecretString::from(secret),
            limits: crate::http::Limits {
                request_timeout: positive(
                    REQUEST_TIMEOUT_MS,
                    millis_or(REQUEST_TIMEOUT_MS, 10_000)?,
                    Duration::ZERO,
                )?,
                max_concurrent: positive(
                    MAX_CONCURRENT_REQUESTS,
                    parse_or(MAX_CONCURRENT_REQUESTS, 1024usize)?,
                    0,
                )?,
            },
        })
    }

    pub fn secret_bytes(&self) -> &[u8] {
        self.service_token_secret.expose_secret().as_bytes()
    }
}

/// `value`, unless it is `zero`: then an error saying the variable must be more than that.
fn positive<T: PartialEq + std::fmt::Debug>(
    var: &'static str,
    value: T,
    zero: T,
) -> Result<T, ConfigError> {
    if value == zero {
        return Err(ConfigError::Invalid {
            var,
            value: format!("{value:?}"),
            reason: "expected more than 0".into(),
        });
    }
    Ok(value)
}

fn parse_bool(var: &'static str) -> Result<bool, ConfigError> {
    match optional(var)
        .as_deref()
        .map(str::to_ascii_lowercase)
        .as_deref()
    {
        None | Some("0" | "false" | "no") => Ok(false),
        Some("1" | "true" | "yes") => Ok(true),
        Some(other) => Err(ConfigError::Invalid {
            var,
            value: other.to_string(),
            reason: "expected 1/0, true/false or yes/no".into(),
        }),
    }
}

/// Prints a configuration error the way every binary does and exits 64.
pub fn exit_on_config_error(err: &ConfigError) -> ! {
    eprintln!("configuration error: {err}");
    std::process::exit(EXIT_CONFIG)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_plain_http_urls_pass_and_https_is_refused_for_want_of_tls() {
        assert_eq!(plain_http_url("http://127.0.0.1:8081"), Ok(()));
        let https = plain_http_url("https://shop.example:443").unwrap_err();
        assert!(https.contains("no TLS"), "{https}");
        let other = plain_http_url("127.0.0.1:8081").unwrap_err();
        assert!(other.contains("does not start with http://"), "{other}");
    }
}
