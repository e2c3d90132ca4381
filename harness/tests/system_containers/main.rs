//! The foundation's system tests on the containers backend: Postgres per service, a Kafka
//! container, Toxiproxy holding every link, the services as containers, all on a network of
//! the run's own. The tests are the local backend's own files, compiled again against this
//! binary's [`BACKEND`], plus what only this backend has (faults on the database links).
//!
//! Needs a Docker engine and the images (`ci/build-images`, selected with the
//! `HARNESS_IMAGE_*` variables it prints; `.ci/run` does both). Without an engine every test
//! fails saying so, unless `HARNESS_SKIP_DOCKER=1` is set, which skips them loudly.
#![allow(clippy::unwrap_used, clippy::expect_used)]

/// The backend every test of this binary runs on.
pub const BACKEND: harness::scenario::Backend = harness::scenario::Backend::Containers;

mod database;
#[path = "../system_local/helpers.rs"]
mod helpers;
mod network;
#[path = "../system_local/recovery.rs"]
mod recovery;
#[path = "../system_local/redelivery.rs"]
mod redelivery;
#[path = "../system_local/saga.rs"]
mod saga;
mod scale;
