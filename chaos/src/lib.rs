//! `chaos`: network faults for the harness, through Toxiproxy's HTTP API.
//!
//! Two halves that speak the same API:
//!
//! - [`Client`]: a typed client for Toxiproxy 2.x (`ghcr.io/shopify/toxiproxy`, a Toxiproxy a
//!   deployment runs) and for `chaos-proxy`. The harness injects every link fault (latency,
//!   bandwidth, resets, timeouts, partitions) through it, whatever the backend.
//! - [`server`]: `chaos-proxy`, a Toxiproxy-compatible server for the local backend and for
//!   machines without the Toxiproxy image. Any Toxiproxy client can drive it (the tests drive
//!   it with the independent Python client `toxiproxy-python` too).
//!
//! ```no_run
//! # async fn demo() -> Result<(), chaos::Error> {
//! use chaos::{Client, NewProxy, Stream, Toxic};
//!
//! let client = Client::new("http://127.0.0.1:8474")?;
//! let proxy = client
//!     .create_proxy(&NewProxy::new("gateway->order", "127.0.0.1:0", "127.0.0.1:8081"))
//!     .await?;
//! println!("order traffic now goes through {}", proxy.listen);
//! client
//!     .add_toxic(&proxy.name, &Toxic::latency(200, 20).on(Stream::Upstream))
//!     .await?;
//! client.reset().await?; // heal everything
//! # Ok(()) }
//! ```
//!
//! # Layout
//! - [`model`]: the API's JSON bodies ([`Proxy`], [`Toxic`], [`ToxicAttributes`], ...).
//! - [`client`]: [`Client`] and its [`Error`].
//! - [`server`]: the `chaos-proxy` server ([`server::Server`]) and its binary's options.

pub mod client;
pub mod model;
pub mod server;

pub use client::{Client, Error};
pub use model::{
    ApiErrorBody, NewProxy, Proxy, ProxyUpdate, Stream, Toxic, ToxicAttributes, ToxicError,
    ToxicUpdate,
};
