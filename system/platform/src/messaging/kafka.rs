//! Kafka client settings and topic creation.
//!
//! Plain Kafka settings, valid against any broker, measured against the embedded broker (see the
//! `embedded-broker` crate's docs for the figures):
//! - `partition.assignment.strategy=cooperative-sticky`: a rebalance moves only the partitions
//!   that change owner, so the other instances keep consuming while a killed one's partitions
//!   move to them.
//! - `fetch.wait.max.ms=200`: the broker answers a fetch as soon as a record arrives, so this
//!   is only how long an idle consumer's fetch waits; longer costs nothing but a slower start
//!   on partitions a rebalance just assigned.
//! - `topic.metadata.refresh.interval.ms=1000`: a consumer that subscribed before its topic
//!   existed finds it in about a second instead of minutes.

use std::time::Duration;

use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::{ClientContext, DefaultClientContext};
use rdkafka::consumer::{ConsumerContext, StreamConsumer};
use rdkafka::error::KafkaError;
use rdkafka::producer::FutureProducer;
use rdkafka::statistics::Statistics;
use rdkafka::types::RDKafkaErrorCode;

/// Partitions per topic: enough for two or three instances of a service to share the work.
pub const PARTITIONS: i32 = 3;

#[derive(Debug, thiserror::Error)]
pub enum MessagingError {
    #[error("kafka: {0}")]
    Kafka(#[from] KafkaError),
    #[error("creating topic {topic}: {code:?}")]
    CreateTopic {
        topic: String,
        code: RDKafkaErrorCode,
    },
}

fn base(brokers: &str, client_id: &str) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", brokers)
        .set("client.id", client_id)
        .set("socket.keepalive.enable", "true")
        .set("socket.nagle.disable", "true")
        .set("reconnect.backoff.ms", "50")
        .set("reconnect.backoff.max.ms", "1000")
        .set("topic.metadata.refresh.interval.ms", "1000");
    // librdkafka's own debug contexts (e.g. `cgrp,topic`), for diagnosing group behaviour.
    if let Ok(debug) = std::env::var(KAFKA_DEBUG) {
        c.set("debug", debug);
    }
    c
}

/// Environment variable passed to librdkafka's `debug` setting when set.
pub const KAFKA_DEBUG: &str = "KAFKA_DEBUG";

/// librdkafka's `message.timeout.ms` for [`producer`]: how long a message may wait for its
/// acknowledgement, retries included, before its send fails. The outbox relay's claim lease is
/// derived from it ([`super::outbox::SendLimits`]).
pub const MESSAGE_TIMEOUT: Duration = Duration::from_secs(5);

/// librdkafka's `linger.ms` for [`producer`] (its own default): sends queued within this long of
/// each other go to the broker as one produce request. With `0` every send was a request of its
/// own, each answering the consumers' waiting fetches with a record or two, so their batches and
/// transactions stayed small: at 600 journeys/s on 2 cores 5 ms took the broker's CPU down by a
/// third and confirmed 14 % more orders with saga p99 halved (docs/performance.md, row 23). It
/// adds up to 5 ms to a send when the system is idle.
pub const LINGER: Duration = Duration::from_millis(5);

/// A producer that waits for the broker's acknowledgement and batches sends made together.
pub fn producer(brokers: &str, client_id: &str) -> Result<FutureProducer, MessagingError> {
    Ok(base(brokers, client_id)
        .set("acks", "all")
        .set("linger.ms", LINGER.as_millis().to_string())
        .set(
            "message.timeout.ms",
            MESSAGE_TIMEOUT.as_millis().to_string(),
        )
        .set("request.timeout.ms", "5000")
        .create()?)
}

/// A consumer in `group_id` that stores offsets only after the message is handled
/// (`enable.auto.offset.store=false`) and commits stored offsets in the background. Its
/// statistics (once a second) feed `kafka_consumer_lag_messages`.
pub fn consumer(
    brokers: &str,
    group_id: &str,
    client_id: &str,
) -> Result<StreamConsumer<LagReporter>, MessagingError> {
    Ok(base(brokers, client_id)
        .set("group.id", group_id)
        .set("enable.auto.commit", "true")
        .set("auto.commit.interval.ms", "200")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "earliest")
        .set("partition.assignment.strategy", "cooperative-sticky")
        .set("session.timeout.ms", "6000")
        .set("heartbeat.interval.ms", "500")
        .set("fetch.wait.max.ms", "200")
        .set("fetch.error.backoff.ms", "50")
        .set("statistics.interval.ms", "1000")
        .create_with_context(LagReporter {
            group: group_id.to_string(),
        })?)
}

/// Publishes each partition's consumer lag from librdkafka's statistics as
/// `kafka_consumer_lag_messages{group,topic,partition}`. librdkafka reports `-1` for a partition
/// this consumer does not own or whose position it does not know yet: those are skipped, so a
/// partition that moved to another instance keeps its last figure here; the per-instance lag is
/// read with `max` over instances.
pub struct LagReporter {
    group: String,
}

impl ClientContext for LagReporter {
    fn stats(&self, statistics: Statistics) {
        for (topic, t) in &statistics.topics {
            for (partition, p) in &t.partitions {
                if *partition < 0 || p.consumer_lag < 0 {
                    continue;
                }
                metrics::gauge!(
                    crate::metrics::CONSUMER_LAG,
                    "group" => self.group.clone(),
                    "topic" => topic.clone(),
                    "partition" => partition.to_string(),
                )
                .set(p.consumer_lag as f64);
            }
        }
    }
}

impl ConsumerContext for LagReporter {}

/// Creates the topics that do not exist yet. Safe to call from every instance at start-up, also
/// at the same time: a creation that fails for another reason than "already exists" (a broker
/// busy with a concurrent creation) is tried again, a few times, before it is an error.
pub async fn ensure_topics(brokers: &str, topics: &[String]) -> Result<(), MessagingError> {
    let admin: AdminClient<DefaultClientContext> = base(brokers, "topic-setup").create()?;
    let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
    let mut missing: Vec<String> = topics.to_vec();
    let mut attempt = 0u32;
    loop {
        attempt += 1;
        let new: Vec<NewTopic<'_>> = missing
            .iter()
            .map(|t| NewTopic::new(t, PARTITIONS, TopicReplication::Fixed(1)))
            .collect();
        let mut failed = Vec::new();
        for result in admin.create_topics(&new, &opts).await? {
            match result {
                Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
                Err((topic, code)) => failed.push((topic, code)),
            }
        }
        if failed.is_empty() {
            return Ok(());
        }
        if attempt >= 5 {
            let (topic, code) = failed.swap_remove(0);
            return Err(MessagingError::CreateTopic { topic, code });
        }
        tracing::warn!(?failed, attempt, "creating topics failed; retrying");
        tokio::time::sleep(Duration::from_millis(200 * u64::from(attempt))).await;
        missing = failed.into_iter().map(|(t, _)| t).collect();
    }
}
