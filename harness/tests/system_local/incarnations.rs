//! The services' per-instance consumer groups are per incarnation (`<home>.<start ms>`): a
//! restarted instance copies its predecessor's committed offsets into its new group before it
//! joins (the home group records which group that was), so it goes on where the killed one
//! stopped. Checked against the environment's real
//! broker with the services' own function.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use platform::messaging::kafka::{
    PARTITIONS, carry_over_offsets, ensure_topics, latest_incarnation,
};
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, StreamConsumer};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{ClientConfig, Message, Offset, TopicPartitionList};

use crate::helpers::TestEnv;

fn client(brokers: &str, group: &str) -> ClientConfig {
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", brokers)
        .set("group.id", group)
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .set("topic.metadata.refresh.interval.ms", "1000");
    config
}

/// Committed offsets of `group` on `topic`, per partition.
fn committed(brokers: &str, group: &str, topic: &str) -> Vec<(i32, Offset)> {
    let consumer: BaseConsumer = client(brokers, group).create().unwrap();
    let mut tpl = TopicPartitionList::new();
    for partition in 0..PARTITIONS {
        tpl.add_partition(topic, partition);
    }
    let offsets = consumer
        .committed_offsets(tpl, Duration::from_secs(10))
        .unwrap();
    offsets
        .elements()
        .iter()
        .map(|e| (e.partition(), e.offset()))
        .collect()
}

/// Commits offset 0 on every partition as `group`, without joining it.
fn commit_as(brokers: &str, group: &str, topic: &str) {
    let consumer: BaseConsumer = client(brokers, group).create().unwrap();
    let mut tpl = TopicPartitionList::new();
    for partition in 0..PARTITIONS {
        tpl.add_partition_offset(topic, partition, Offset::Offset(0))
            .unwrap();
    }
    consumer.commit(&tpl, CommitMode::Sync).unwrap();
}

/// Receives `n` messages as (partition, offset), failing after 30 s.
async fn receive(consumer: &StreamConsumer, n: usize) -> BTreeSet<(i32, i64)> {
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut got = BTreeSet::new();
    while got.len() < n {
        let left = deadline.saturating_duration_since(Instant::now());
        let m = tokio::time::timeout(left, consumer.recv())
            .await
            .unwrap_or_else(|_| panic!("received {} of {n} messages in 30 s", got.len()))
            .unwrap();
        got.insert((m.partition(), m.offset()));
    }
    got
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_instance_goes_on_from_its_predecessors_committed_offsets() {
    let Some(t) = TestEnv::start().await else {
        return;
    };
    let brokers = t.env.kafka_brokers().to_string();
    let run = uuid::Uuid::new_v4().simple().to_string();
    let topic = format!("incarnations-{run}");
    let home = format!("svc-{run}.inst#1");
    ensure_topics(&brokers, std::slice::from_ref(&topic))
        .await
        .unwrap();
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        .create()
        .unwrap();
    let mut sent = BTreeSet::new();
    for i in 0..10 {
        let delivery = producer
            .send(
                FutureRecord::to(&topic)
                    .key(&format!("key-{i}"))
                    .payload(&format!("p{i}")),
                Duration::from_secs(10),
            )
            .await
            .map_err(|(e, _)| e)
            .unwrap();
        sent.insert((delivery.partition, delivery.offset));
    }
    let topics = [topic.clone()];
    let carry = |group: String| {
        let (brokers, home, topics) = (brokers.clone(), home.clone(), topics.clone());
        tokio::task::spawn_blocking(move || {
            carry_over_offsets(&brokers, "test", &home, &group, &topics)
        })
    };
    let (first_group, second_group, third_group) = (
        format!("{home}.100"),
        format!("{home}.200"),
        format!("{home}.300"),
    );
    assert_eq!(
        carry(first_group.clone()).await.unwrap().unwrap(),
        None,
        "a first start has nothing to carry over"
    );

    // The first incarnation handles six messages and commits.
    let first: StreamConsumer = client(&brokers, &first_group).create().unwrap();
    first.subscribe(&[&topic]).unwrap();
    let handled = receive(&first, 6).await;
    first.commit_consumer_state(CommitMode::Sync).unwrap();
    drop(first);
    // Another instance's group, whose name starts the same way, is not its predecessor.
    commit_as(&brokers, &format!("svc-{run}.inst#10.150"), &topic);

    let (previous, partitions) = carry(second_group.clone())
        .await
        .unwrap()
        .unwrap()
        .expect("the first incarnation committed offsets");
    assert_eq!(previous, first_group);
    assert!(partitions >= 1, "{partitions} partitions carried over");
    assert_eq!(
        committed(&brokers, &second_group, &topic),
        committed(&brokers, &first_group, &topic)
    );

    // The second incarnation gets exactly what the first did not handle.
    let second: StreamConsumer = client(&brokers, &second_group).create().unwrap();
    second.subscribe(&[&topic]).unwrap();
    let rest = receive(&second, 4).await;
    let extra = tokio::time::timeout(Duration::from_secs(2), second.recv()).await;
    assert!(
        extra.is_err(),
        "nothing beyond the four the first did not handle"
    );
    assert!(
        rest.is_disjoint(&handled),
        "redelivered: {rest:?} and {handled:?}"
    );
    let all: BTreeSet<(i32, i64)> = handled.union(&rest).copied().collect();
    assert_eq!(all, sent);
    second.commit_consumer_state(CommitMode::Sync).unwrap();
    drop(second);

    // The third goes on from the second, not the first.
    let (previous, _) = carry(third_group.clone())
        .await
        .unwrap()
        .unwrap()
        .expect("the second incarnation committed offsets");
    assert_eq!(previous, second_group);
    assert_eq!(
        committed(&brokers, &third_group, &topic),
        committed(&brokers, &second_group, &topic)
    );
    let latest = tokio::task::spawn_blocking(move || latest_incarnation(&brokers, &home, &topic))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(latest, Some(third_group));
}
