//! Messaging: Kafka through rdkafka, with the patterns that make it safe.
//!
//! - [`kafka`]: client settings (tuned for low latency against small brokers) and topic creation.
//! - [`outbox`]: write messages in the same transaction as the state change, and the relay that
//!   publishes them; instances sharing a database never publish the same row as new work.
//! - [`inbox`]: remember processed message ids so a redelivery changes nothing.
//! - [`consumer`]: the consume loop: at-least-once, bounded retries with backoff, then the
//!   dead-letter topic.

pub mod consumer;
pub mod inbox;
pub mod kafka;
pub mod outbox;
