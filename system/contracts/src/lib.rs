//! Contracts between the parts of the reference system.
//!
//! Everything that crosses a process boundary is defined here, once: the JSON bodies of the HTTP
//! APIs (`http`), the Kafka topics and the versioned message schemas that travel on them
//! (`messages`), and the validated domain values both sides use (`domain`). The services, the
//! gateway, the harness and the contract tests all depend on this crate, so a change to a wire
//! format is a change to one file, visible in review.
//!
//! # Layout
//! - [`domain`]: newtypes that validate on parse (`OrderId`, `CustomerId`, `Sku`, `Quantity`, `Money`).
//! - [`http`]: request and response bodies of the public and admin APIs, and the error body.
//! - [`messages`]: topic names, the message envelope, commands and events of the order saga.

pub mod domain;
pub mod http;
pub mod messages;
