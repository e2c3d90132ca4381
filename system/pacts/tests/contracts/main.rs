#![allow(clippy::unwrap_used, clippy::expect_used)]
//! The contract suites: for each pact, the consumer test that writes it (and checks it against
//! the committed file) beside the provider test that verifies the committed file against the
//! provider's real code. See the crate docs and `system/pacts/README.md`.

mod breaking_changes;
mod coverage;
mod gateway_inventory;
mod gateway_order;
mod gateway_payment;
mod inventory_commands;
mod inventory_events;
mod order_events;
mod payment_commands;
mod payment_events;
mod support;
