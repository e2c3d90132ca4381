//! Consumer-driven contracts between the parts of the reference system, with Pact.
//!
//! `contracts` says what the wire formats *are*; this crate proves that what each consumer
//! *relies on* is what each provider really sends, without starting the whole system. Every
//! contract is a Pact file committed under `system/pacts/pacts/`, named `<consumer>-<provider>.json`:
//!
//! | consumer | provider | what |
//! |---|---|---|
//! | `gateway` | `inventory-service`, `order-service`, `payment-service` | the HTTP calls the gateway forwards for its clients (the harness's journeys and checks) |
//! | `inventory-service` | `order-service` | the commands on `inventory.commands` |
//! | `payment-service` | `order-service` | the commands on `payment.commands` |
//! | `order-service` | `inventory-service`, `payment-service` | the events on `inventory.events` and `payment.events` that drive the saga |
//! | `order-projector` | `order-service` | `OrderChanged` on `order.events`, which feeds the read model |
//!
//! The flow, as Pact intends it:
//!
//! 1. **Consumer tests** state what the consumer needs (matchers, not literal values, where values
//!    vary) and run the consumer's real code against it: the real gateway in front of Pact's mock
//!    server, or each service's real message handler on a real SQLite store fed the contract's
//!    example messages. Pact writes the file into a scratch directory; [`files`] compares it with
//!    the committed one and fails when they differ, unless `UPDATE_PACTS=1` says to rewrite it.
//! 2. **Provider tests** read the committed files and verify them with `pact_verifier` against the
//!    provider's real code: each service's router on a loopback port over a fresh SQLite
//!    database per interaction, seeded through the service's own code for the interaction's
//!    provider states ([`http_provider`]); and for messages, the provider's real code (the saga,
//!    the command handlers) writing the message into its outbox, which [`message_provider`] serves
//!    to the verifier. A mismatch fails the test with the consumer's name in the message
//!    ([`verify`]).
//!
//! So a change to a message or an endpoint that some consumer relies on fails a provider test
//! naming that consumer; a change to what a consumer relies on fails its consumer test until the
//! committed file is updated, which then re-runs every provider against it.
//!
//! No Pact plugin is used (the crates are built without default features), and the Pact crates'
//! usage metrics are off: `.cargo/config.toml` sets `PACT_DO_NOT_TRACK=true`, and every entry point
//! here refuses to run without it ([`ensure_do_not_track`]), so no test traffic leaves loopback.
//!
//! # Layout
//! - [`files`]: where the committed pacts live, the scratch directory consumer tests write to,
//!   and the comparison (with `UPDATE_PACTS=1` to rewrite).
//! - [`tokens`]: the example service tokens written into the pacts, and the verifier's request
//!   filter that replaces them with tokens the provider under test accepts.
//! - [`http_provider`]: a service's real router behind a loopback port with fresh state per
//!   interaction, and the provider-state executor that seeds it.
//! - [`message_provider`]: serves the messages the provider's real code produced, keyed by the
//!   interaction's description, to the verifier.
//! - [`verify`]: running `pact_verifier` and reporting failures by consumer.
//! - [`fixtures`]: fresh migrated SQLite databases, outbox reads, deliveries built from a
//!   contract's example message.

pub mod files;
pub mod fixtures;
pub mod http_provider;
pub mod message_provider;
pub mod tokens;
pub mod verify;

/// The participants' names, as they appear in the pact files.
pub mod names {
    pub const GATEWAY: &str = "gateway";
    pub const ORDER_SERVICE: &str = "order-service";
    pub const INVENTORY_SERVICE: &str = "inventory-service";
    pub const PAYMENT_SERVICE: &str = "payment-service";
    /// The CQRS projector inside the order service: a consumer of `order.events` in its own right
    /// (its own consumer group and inbox), so it has its own contract.
    pub const ORDER_PROJECTOR: &str = "order-projector";
}

/// `PACT_DO_NOT_TRACK`: unless it is `true`, the Pact crates post usage metrics to Google
/// Analytics on every consumer test and verification.
pub const PACT_DO_NOT_TRACK: &str = "PACT_DO_NOT_TRACK";

/// Why a contract test could not run.
#[derive(Debug, thiserror::Error)]
#[error(
    "{PACT_DO_NOT_TRACK} is {found:?}, not \"true\": the Pact crates would send usage metrics over \
     the network. `cargo test` sets it from .cargo/config.toml; when running a test binary by \
     hand, export {PACT_DO_NOT_TRACK}=true"
)]
pub struct TrackingNotDisabled {
    pub found: Option<String>,
}

/// Refuses to go on unless the Pact crates' metrics are switched off.
pub fn ensure_do_not_track() -> Result<(), TrackingNotDisabled> {
    let found = std::env::var(PACT_DO_NOT_TRACK).ok();
    if found.as_deref() == Some("true") {
        Ok(())
    } else {
        Err(TrackingNotDisabled { found })
    }
}
