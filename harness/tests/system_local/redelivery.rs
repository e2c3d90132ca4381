use std::time::{Duration, Instant};

use contracts::domain::OrderStatus;
use contracts::messages::topics;
use harness::seed::GOOD_CUSTOMER;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{ClientConfig, Message, Offset, TopicPartitionList};

use crate::helpers::TestEnv;

struct Captured {
    topic: String,
    key: Vec<u8>,
    payload: Vec<u8>,
}

/// Every message on `topic` whose key is `order_id`, read from the start by a throwaway group.
async fn messages_for(
    brokers: &str,
    topic: &str,
    order_id: &str,
    expected: usize,
) -> Vec<Captured> {
    let consumer: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", format!("test-reader-{}", uuid::Uuid::new_v4()))
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    consumer.subscribe(&[topic]).unwrap();
    let mut found = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while found.len() < expected && Instant::now() < deadline {
        let Ok(Ok(m)) = tokio::time::timeout(Duration::from_secs(1), consumer.recv()).await else {
            continue;
        };
        if m.key() == Some(order_id.as_bytes()) {
            found.push(Captured {
                topic: topic.into(),
                key: m.key().unwrap_or_default().to_vec(),
                payload: m.payload().unwrap_or_default().to_vec(),
            });
        }
    }
    assert!(
        found.len() >= expected,
        "found {} of {expected} messages on {topic}",
        found.len()
    );
    found
}

/// The end offsets of `topic`, and whether `group` has committed up to them.
async fn group_caught_up(brokers: &str, group: &str, topic: &str) -> bool {
    let consumer: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    let metadata = consumer
        .fetch_metadata(Some(topic), Duration::from_secs(5))
        .unwrap();
    let partitions = metadata.topics()[0].partitions().len() as i32;
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition(topic, p);
    }
    let committed = consumer
        .committed_offsets(tpl, Duration::from_secs(5))
        .unwrap();
    (0..partitions).all(|p| {
        let (_, high) = consumer
            .fetch_watermarks(topic, p, Duration::from_secs(5))
            .unwrap();
        let c = committed
            .find_partition(topic, p)
            .map(|e| e.offset())
            .unwrap_or(Offset::Invalid);
        match c {
            Offset::Offset(o) => o >= high,
            _ => high == 0,
        }
    })
}

#[tokio::test(flavor = "multi_thread")]
async fn a_redelivered_kafka_message_changes_nothing() {
    let Some(t) = TestEnv::start().await else {
        return;
    };
    let token = t.customer(GOOD_CUSTOMER);
    let placed = t.place(&token, &[("SKU-1008", 2)]).await;
    let done = t.terminal(&token, placed.order_id).await;
    assert_eq!(done.status, OrderStatus::Confirmed);
    let id = placed.order_id.to_string();
    let brokers = t.env.kafka_brokers().to_string();

    // Let the tail of the saga (commit, capture) settle before taking the snapshot.
    t.eventually(
        "saga done",
        || async { t.api.admin_order(&t.admin, placed.order_id).await.unwrap() },
        |o| o.as_ref().is_some_and(|o| o.saga.step == "DONE"),
    )
    .await;
    let stock = t.api.stock(&t.admin).await.unwrap();
    let payments = t.api.payments(&t.admin, None).await.unwrap();
    let accounts = t.api.accounts(&t.admin).await.unwrap();
    let orders = t.api.admin_orders(&t.admin).await.unwrap();

    // ReserveStock + CommitStock, AuthorizePayment + CapturePayment, and the events back.
    let mut again = messages_for(&brokers, topics::INVENTORY_COMMANDS, &id, 2).await;
    again.extend(messages_for(&brokers, topics::PAYMENT_COMMANDS, &id, 2).await);
    again.extend(messages_for(&brokers, topics::INVENTORY_EVENTS, &id, 2).await);
    again.extend(messages_for(&brokers, topics::PAYMENT_EVENTS, &id, 2).await);
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        .create()
        .unwrap();
    for m in &again {
        producer
            .send(
                FutureRecord::to(&m.topic).key(&m.key).payload(&m.payload),
                Duration::from_secs(10),
            )
            .await
            .map_err(|(e, _)| e)
            .unwrap();
    }
    // One consumer group per service (the order service's saga consumer is `order`).
    for (group, topic) in [
        ("inventory", topics::INVENTORY_COMMANDS),
        ("payment", topics::PAYMENT_COMMANDS),
        ("order", topics::INVENTORY_EVENTS),
        ("order", topics::PAYMENT_EVENTS),
    ] {
        t.eventually(
            &format!("{group} consumed the redelivered {topic}"),
            || group_caught_up(&brokers, group, topic),
            |caught_up| *caught_up,
        )
        .await;
    }

    assert_eq!(t.api.stock(&t.admin).await.unwrap(), stock);
    assert_eq!(t.api.payments(&t.admin, None).await.unwrap(), payments);
    assert_eq!(t.api.accounts(&t.admin).await.unwrap(), accounts);
    let orders_after = t.api.admin_orders(&t.admin).await.unwrap();
    assert_eq!(orders_after.len(), orders.len());
    assert_eq!(
        orders_after
            .iter()
            .map(|o| (&o.order, &o.saga))
            .collect::<Vec<_>>(),
        orders
            .iter()
            .map(|o| (&o.order, &o.saga))
            .collect::<Vec<_>>()
    );
    t.env.stop().await;
}
