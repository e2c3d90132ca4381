//! Kafka client settings and topic creation.
//!
//! The settings were measured against the embedded broker (tansu 0.6, see the `embedded-broker`
//! crate's docs for the figures) and are plain Kafka settings, valid against any broker:
//! - `partition.assignment.strategy=cooperative-sticky`: with the eager default, tansu never
//!   reassigns the partitions of a group member that died without leaving (kill -9), so they
//!   would stay unconsumed; with it, a survivor takes them over after the session timeout.
//! - `fetch.wait.max.ms=50`: tansu holds every fetch for the full wait even when data is there,
//!   so this is the latency of each hop (about 40 ms at p50). Lower values cost the broker a lot
//!   of CPU per idle consumer (20 ms: ~17% of a core per consumer in release).
//! - `topic.metadata.refresh.interval.ms=1000`: a consumer that subscribed before its topic
//!   existed finds it in about a second instead of minutes.

use std::time::Duration;

use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::{ClientContext, DefaultClientContext};
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, StreamConsumer};
use rdkafka::error::KafkaError;
use rdkafka::producer::FutureProducer;
use rdkafka::statistics::Statistics;
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{Offset, TopicPartitionList};

/// Partitions per topic: enough for two or three instances of a service to share the work, and
/// few, because every partition a consumer reads costs the broker a held fetch.
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

/// A producer that waits for the broker's acknowledgement and keeps batching latency small.
pub fn producer(brokers: &str, client_id: &str) -> Result<FutureProducer, MessagingError> {
    Ok(base(brokers, client_id)
        .set("acks", "all")
        .set("linger.ms", "0")
        .set("message.timeout.ms", "10000")
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
        .set("fetch.wait.max.ms", "50")
        .set("fetch.error.backoff.ms", "50")
        .set("statistics.interval.ms", "1000")
        .create_with_context(LagReporter {
            group: group_id.to_string(),
        })?)
}

/// Starts `group_id` (an incarnation's group, not joined yet) where the previous incarnation of
/// the same instance stopped: copies that group's committed offsets into `group_id`. Returns
/// the previous group and how many partitions it carried over, or `None` on a first start or
/// when the previous one had committed nothing. Blocking (rdkafka's offset fetch and commit).
///
/// `group_id` is `<home>.<incarnation>`, the incarnation a number. Which incarnation was the
/// previous one is written in `home`, a group nobody joins: its committed "offset" on partition 0
/// of the first topic is the latest incarnation's number, not a position, and each start
/// overwrites it ([`latest_incarnation`] reads it).
/// (Listing groups would do, but tansu 0.6 drops the connection on librdkafka's ListGroups, and
/// it keeps no commit metadata.) Committing and fetching offsets need no group membership.
pub fn carry_over_offsets(
    brokers: &str,
    client_id: &str,
    home: &str,
    group_id: &str,
    topics: &[String],
) -> Result<Option<(String, usize)>, MessagingError> {
    let timeout = Duration::from_secs(5);
    let Some(ours) = group_id
        .strip_prefix(home)
        .and_then(|rest| rest.strip_prefix('.'))
        .and_then(|n| n.parse::<i64>().ok())
    else {
        return Ok(None);
    };
    let registry: BaseConsumer = base(brokers, client_id).set("group.id", home).create()?;
    let mut partitions = TopicPartitionList::new();
    for topic in topics {
        let metadata = registry.fetch_metadata(Some(topic), timeout)?;
        for t in metadata.topics() {
            for p in t.partitions() {
                partitions.add_partition(t.name(), p.id());
            }
        }
    }
    let Some(first) = topics.first().map(|t| (t.clone(), REGISTRY_PARTITION)) else {
        return Ok(None);
    };
    let registered = registry.committed_offsets(partitions.clone(), timeout)?;
    let previous = registered
        .find_partition(&first.0, first.1)
        .and_then(|e| match e.offset() {
            Offset::Offset(n) if n != ours => Some(format!("{home}.{n}")),
            _ => None,
        });

    let mut carried = None;
    if let Some(previous) = previous {
        let old: BaseConsumer = base(brokers, client_id)
            .set("group.id", &previous)
            .create()?;
        let committed = old.committed_offsets(partitions, timeout)?;
        let mut offsets = TopicPartitionList::new();
        for e in committed.elements() {
            if let Offset::Offset(offset) = e.offset() {
                offsets.add_partition_offset(e.topic(), e.partition(), Offset::Offset(offset))?;
            }
        }
        if offsets.count() > 0 {
            let own: BaseConsumer = base(brokers, client_id)
                .set("group.id", group_id)
                .create()?;
            own.commit(&offsets, CommitMode::Sync)?;
            carried = Some((previous, offsets.count()));
        }
    }

    let mut mark = TopicPartitionList::new();
    mark.add_partition_offset(&first.0, first.1, Offset::Offset(ours))?;
    registry.commit(&mark, CommitMode::Sync)?;
    Ok(carried)
}

/// Where [`carry_over_offsets`] registers the latest incarnation: partition 0 of the first topic.
const REGISTRY_PARTITION: i32 = 0;

/// The group of the latest incarnation of the instance whose home group is `home` and whose
/// first topic is `first_topic`, as [`carry_over_offsets`] registered it; `None` before any.
/// Blocking.
pub fn latest_incarnation(
    brokers: &str,
    home: &str,
    first_topic: &str,
) -> Result<Option<String>, MessagingError> {
    let registry: BaseConsumer = base(brokers, "incarnation-reader")
        .set("group.id", home)
        .create()?;
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition(first_topic, REGISTRY_PARTITION);
    let registered = registry.committed_offsets(tpl, Duration::from_secs(5))?;
    Ok(registered
        .find_partition(first_topic, REGISTRY_PARTITION)
        .and_then(|e| match e.offset() {
            Offset::Offset(n) => Some(format!("{home}.{n}")),
            _ => None,
        }))
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
