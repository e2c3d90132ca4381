//! Message-level faults on the local backend: set and cleared through the embedded broker's
//! control API (`embedded-broker --control`, whose address its ready file gives), on the fronts
//! of the instances' links to the broker; poison published with rdkafka.
//!
//! A front is named by the address it advertises, which is the listen address of the link's
//! proxy (`order#1->kafka`), so the fronts of a fault are the proxies of its links. The broker
//! keeps faults in memory: a restarted broker has none, which is what a heal wants anyway.

use std::path::Path;
use std::time::Duration;

use anyhow::Context;
use rdkafka::producer::FutureRecord;
use serde::{Deserialize, Serialize};

use crate::faults::MessageFault;

/// The body of the control API's `PUT /faults/{id}`.
#[derive(Serialize)]
struct FaultSpec<'a> {
    fronts: Vec<String>,
    fault: &'a MessageFault,
}

/// The part of the broker's ready file this module reads.
#[derive(Deserialize)]
struct BrokerReady {
    control: Option<String>,
}

/// The broker's control API (`http://127.0.0.1:N`), from its ready file.
pub fn control_url(ready_file: &Path) -> anyhow::Result<String> {
    let text = std::fs::read_to_string(ready_file)
        .with_context(|| format!("reading {}", ready_file.display()))?;
    let ready: BrokerReady = serde_json::from_str(&text)
        .with_context(|| format!("{} is not the broker's ready file", ready_file.display()))?;
    let control = ready
        .control
        .with_context(|| "the broker was started without --control".to_string())?;
    Ok(format!("http://{control}"))
}

fn http() -> anyhow::Result<reqwest::Client> {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .context("creating an HTTP client")
}

/// Sets fault `id` on the fronts advertised as `fronts`.
pub async fn set(
    control: &str,
    id: &str,
    fronts: Vec<String>,
    fault: &MessageFault,
) -> anyhow::Result<()> {
    let spec = FaultSpec { fronts, fault };
    let url = format!("{control}/faults/{id}");
    let answer = http()?
        .put(&url)
        .json(&spec)
        .send()
        .await
        .with_context(|| format!("reaching the broker's control API at {url}"))?;
    expect_success(answer, &url).await
}

/// Clears fault `id`; one already gone (a restarted broker) is not an error.
pub async fn clear(control: &str, id: &str) -> anyhow::Result<()> {
    let url = format!("{control}/faults/{id}");
    let answer = http()?
        .delete(&url)
        .send()
        .await
        .with_context(|| format!("reaching the broker's control API at {url}"))?;
    if answer.status() == reqwest::StatusCode::NOT_FOUND {
        return Ok(());
    }
    expect_success(answer, &url).await
}

/// Clears every fault.
pub async fn clear_all(control: &str) -> anyhow::Result<()> {
    let url = format!("{control}/faults");
    let answer = http()?
        .delete(&url)
        .send()
        .await
        .with_context(|| format!("reaching the broker's control API at {url}"))?;
    expect_success(answer, &url).await
}

async fn expect_success(answer: reqwest::Response, url: &str) -> anyhow::Result<()> {
    if answer.status().is_success() {
        return Ok(());
    }
    let status = answer.status();
    let body = answer.text().await.unwrap_or_default();
    anyhow::bail!("{url}: {status}: {body}")
}

/// What a poison message carries: not JSON, so no consumer can ever read it, and a key no
/// order has, so no order's messages are held behind it.
fn poison_payload(n: u64) -> String {
    format!("poison #{n} from the harness: {{ not a message")
}

/// Publishes `messages` malformed messages onto `topic`, onto `partition` or round-robin over
/// every partition; returns where each landed (`payment.commands[1]@42`).
pub async fn publish_poison(
    brokers: &str,
    topic: &str,
    partition: Option<i32>,
    messages: u64,
) -> anyhow::Result<Vec<String>> {
    let producer = platform::messaging::kafka::producer(brokers, "harness-poison")
        .context("creating the poison producer")?;
    let partitions = platform::messaging::kafka::PARTITIONS;
    let mut landed = Vec::new();
    for n in 0..messages {
        let key = format!("poison-{}", uuid::Uuid::new_v4());
        let payload = poison_payload(n);
        let to = partition.unwrap_or_else(|| i32::try_from(n).unwrap_or(0) % partitions);
        let delivery = producer
            .send(
                FutureRecord::to(topic)
                    .partition(to)
                    .key(&key)
                    .payload(&payload),
                Duration::from_secs(10),
            )
            .await
            .map_err(|(e, _)| e)
            .with_context(|| format!("publishing poison onto {topic}[{to}]"))?;
        landed.push(format!(
            "{topic}[{}]@{}",
            delivery.partition, delivery.offset
        ));
    }
    Ok(landed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn poison_is_no_message_any_consumer_can_read() {
        let payload = poison_payload(1);
        assert!(
            contracts::messages::decode::<serde_json::Value>(payload.as_bytes()).is_err(),
            "{payload}"
        );
    }

    #[test]
    fn faults_are_sent_as_the_broker_reads_them() {
        let spec = FaultSpec {
            fronts: vec!["127.0.0.1:40001".into()],
            fault: &MessageFault::Duplicate {
                topic: None,
                probability: 0.5,
            },
        };
        assert_eq!(
            serde_json::to_string(&spec).unwrap(),
            r#"{"fronts":["127.0.0.1:40001"],"fault":{"kind":"duplicate","probability":0.5}}"#
        );
        let delay = MessageFault::Delay {
            topic: "payment.events".into(),
            partition: 2,
            delay_ms: 1500,
        };
        assert_eq!(
            serde_json::to_string(&delay).unwrap(),
            r#"{"kind":"delay","topic":"payment.events","partition":2,"delay_ms":1500}"#
        );
    }

    #[test]
    fn the_control_api_is_found_in_the_ready_file() {
        let dir = tempfile::tempdir().unwrap();
        let ready = dir.path().join("broker.json");
        std::fs::write(
            &ready,
            r#"{"addr":"127.0.0.1:9092","pid":1,"control":"127.0.0.1:4100"}"#,
        )
        .unwrap();
        assert_eq!(control_url(&ready).unwrap(), "http://127.0.0.1:4100");
        std::fs::write(&ready, r#"{"addr":"127.0.0.1:9092","pid":1}"#).unwrap();
        let e = control_url(&ready).unwrap_err();
        assert!(format!("{e:#}").contains("--control"), "{e:#}");
    }
}
