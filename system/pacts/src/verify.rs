//! Running `pact_verifier` against a provider and saying which consumer a failure breaks.
//!
//! [`http`] verifies a committed HTTP pact against an [`HttpProvider`], [`messages`] a committed
//! message pact against a [`MessageProvider`]. Both return a [`Report`]; [`Report::into_result`]
//! turns a failed one into a [`ContractBroken`] error whose message starts with the provider and
//! the consumers whose contracts it breaks, then lists each failed interaction with its
//! mismatches, so the test that fails names who would break.

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use pact_verifier::callback_executors::HttpRequestProviderStateExecutor;
use pact_verifier::verification_result::{VerificationExecutionResult, VerificationMismatchResult};
use pact_verifier::{
    FilterInfo, NullRequestFilterExecutor, PactSource, ProviderInfo, ProviderTransport,
    VerificationOptions, verify_provider_async,
};

use crate::TrackingNotDisabled;
use crate::http_provider::{HttpProvider, ServiceFixture};
use crate::message_provider::MessageProvider;
use crate::tokens::ReMint;

/// How long the verifier waits for one answer of the provider.
const REQUEST_TIMEOUT_MS: u64 = 10_000;

/// Why a verification could not run at all (as opposed to finding mismatches).
#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    #[error(transparent)]
    Tracking(#[from] TrackingNotDisabled),
    #[error("{0} does not exist: nothing to verify")]
    NoPact(PathBuf),
    #[error("the verifier failed on {pact}: {source:#}")]
    Verifier {
        pact: PathBuf,
        #[source]
        source: anyhow::Error,
    },
}

/// One interaction that did not verify.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    pub consumer: String,
    pub provider: String,
    pub interaction: String,
    /// What the verifier found: mismatches, one per line, or the error.
    pub detail: String,
}

/// What one verification found.
#[derive(Debug, Clone)]
pub struct Report {
    pub provider: String,
    pub pact: PathBuf,
    /// Interactions verified, failed or not.
    pub interactions: usize,
    pub failures: Vec<Failure>,
    /// Why provider states could not be set up, when they could not.
    pub state_errors: Vec<String>,
}

/// A provider breaks the contract of some consumer.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct ContractBroken {
    pub provider: String,
    pub consumers: Vec<String>,
    pub failures: Vec<Failure>,
    message: String,
}

impl Report {
    fn from_result(
        provider: &str,
        pact: &Path,
        result: &VerificationExecutionResult,
        state_errors: Vec<String>,
    ) -> Self {
        let mut failures: Vec<Failure> = result
            .interaction_results
            .iter()
            .filter_map(|r| {
                let Err(mismatch) = &r.result else {
                    return None;
                };
                Some(Failure {
                    consumer: r.consumer.clone(),
                    provider: r.provider.clone(),
                    interaction: r.interaction_description.clone(),
                    detail: describe(&VerificationMismatchResult::from(mismatch)),
                })
            })
            .collect();
        // The verifier lists each failed interaction among its errors too, under its
        // descriptive text.
        let verified: BTreeSet<&str> = result
            .interaction_results
            .iter()
            .map(|r| r.description.as_str())
            .collect();
        // Errors that belong to no interaction: the pact could not even be loaded.
        for (what, error) in &result.errors {
            if !verified.contains(what.as_str()) {
                failures.push(Failure {
                    consumer: "<unknown: the pact did not load>".into(),
                    provider: provider.into(),
                    interaction: what.clone(),
                    detail: describe(error),
                });
            }
        }
        Self {
            provider: provider.into(),
            pact: pact.to_path_buf(),
            interactions: result.interaction_results.len(),
            failures,
            state_errors,
        }
    }

    /// The consumers with at least one failed interaction.
    pub fn broken_consumers(&self) -> Vec<String> {
        let consumers: BTreeSet<&str> = self.failures.iter().map(|f| f.consumer.as_str()).collect();
        consumers.into_iter().map(str::to_string).collect()
    }

    /// `Ok` with the number of verified interactions when every one verified (and there was at
    /// least one: a verification of nothing proves nothing), else the broken contract.
    pub fn into_result(self) -> Result<usize, ContractBroken> {
        if self.failures.is_empty() && self.interactions > 0 {
            return Ok(self.interactions);
        }
        let consumers = self.broken_consumers();
        let mut message = if self.failures.is_empty() {
            format!(
                "{} verified no interaction of {}: the pact is empty",
                self.provider,
                self.pact.display()
            )
        } else {
            format!(
                "{} breaks the contract of {} ({} of {} interactions in {} failed):",
                self.provider,
                consumers.join(", "),
                self.failures.len(),
                self.interactions,
                self.pact.display()
            )
        };
        for f in &self.failures {
            let _ = write!(
                message,
                "\n  - {} expects {:?}:\n      {}",
                f.consumer,
                f.interaction,
                f.detail.replace('\n', "\n      ")
            );
        }
        for e in &self.state_errors {
            let _ = write!(message, "\n  provider state: {e}");
        }
        Err(ContractBroken {
            provider: self.provider,
            consumers,
            failures: self.failures,
            message,
        })
    }
}

fn describe(result: &VerificationMismatchResult) -> String {
    match result {
        VerificationMismatchResult::Mismatches { mismatches, .. } => mismatches
            .iter()
            .map(|m| m.description())
            .collect::<Vec<_>>()
            .join("\n"),
        VerificationMismatchResult::Error { error, .. } => error.clone(),
    }
}

fn source(pact: &Path) -> Result<PactSource, VerifyError> {
    if !pact.is_file() {
        return Err(VerifyError::NoPact(pact.to_path_buf()));
    }
    Ok(PactSource::File(pact.display().to_string()))
}

fn provider_info(name: &str, transport: &str, port: u16) -> ProviderInfo {
    ProviderInfo {
        name: name.into(),
        host: "127.0.0.1".into(),
        transports: vec![ProviderTransport {
            transport: transport.into(),
            port: Some(port),
            path: None,
            scheme: Some("http".into()),
        }],
        ..ProviderInfo::default()
    }
}

/// Verifies the HTTP pact at `pact` against the real service behind `provider`.
pub async fn http<F: ServiceFixture>(
    provider: &HttpProvider<F>,
    pact: &Path,
) -> Result<Report, VerifyError> {
    crate::ensure_do_not_track()?;
    let options = VerificationOptions {
        request_filter: Some(Arc::new(ReMint::new(provider.service(), provider.secret()))),
        request_timeout: REQUEST_TIMEOUT_MS,
        coloured_output: false,
        follow_redirects: false,
        ..VerificationOptions::default()
    };
    let states = Arc::new(HttpRequestProviderStateExecutor {
        state_change_url: Some(provider.state_change_url()),
        state_change_teardown: true,
        state_change_body: true,
        // A failed state is a failed interaction: retrying it only hides why for longer.
        retries: 0,
    });
    let result = verify_provider_async(
        provider_info(provider.name(), "http", provider.port()),
        vec![source(pact)?],
        FilterInfo::None,
        vec![],
        &options,
        None,
        &states,
        None,
    )
    .await
    .map_err(|source| VerifyError::Verifier {
        pact: pact.to_path_buf(),
        source,
    })?;
    Ok(Report::from_result(
        provider.name(),
        pact,
        &result,
        provider.state_errors(),
    ))
}

/// Verifies the message pact at `pact` against the messages `provider` produces.
pub async fn messages(provider: &MessageProvider, pact: &Path) -> Result<Report, VerifyError> {
    crate::ensure_do_not_track()?;
    let options: VerificationOptions<NullRequestFilterExecutor> = VerificationOptions {
        request_timeout: REQUEST_TIMEOUT_MS,
        coloured_output: false,
        ..VerificationOptions::default()
    };
    // The message endpoint checks the states itself (see `message_provider`).
    let states = Arc::new(HttpRequestProviderStateExecutor {
        state_change_url: None,
        ..HttpRequestProviderStateExecutor::default()
    });
    let result = verify_provider_async(
        provider_info(provider.name(), "message", provider.port()),
        vec![source(pact)?],
        FilterInfo::None,
        vec![],
        &options,
        None,
        &states,
        None,
    )
    .await
    .map_err(|source| VerifyError::Verifier {
        pact: pact.to_path_buf(),
        source,
    })?;
    Ok(Report::from_result(provider.name(), pact, &result, vec![]))
}
