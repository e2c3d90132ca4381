//! The consume loop every service uses.
//!
//! At-least-once: a message's offset is stored only after its handler succeeded (or after it was
//! moved to the dead-letter topic), and stored offsets are committed in the background. A crash
//! in between means a redelivery, which the handler's inbox turns into a no-op.
//!
//! A handler returns [`HandleError::Poison`] for a message that can never succeed (unreadable,
//! unknown schema version): it goes to `<topic>.dlq` at once, with the error, source topic,
//! partition and offset as headers. [`HandleError::Transient`] (the database busy, restarting or
//! unreachable) is retried with exponential backoff and jitter for as long as
//! [`ConsumerSettings::transient_budget`] (10 minutes), and only then dead-lettered: a database
//! that is down for a while must delay the messages, not lose them to the dead-letter topic
//! (which left the read model stale for good when it happened after one second of retries).
//!
//! Tracing: the W3C context the producer put in the record's headers is the parent of two spans:
//! `transit <topic>` (from the producer's timestamp to receipt: the time in Kafka) and
//! `process <topic>` (the handler, retries included), so one order's saga is one trace across
//! every service it touches.

use std::future::Future;

use futures::FutureExt as _;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use opentelemetry::KeyValue;
use opentelemetry::trace::SpanKind;
use rdkafka::Message;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::{BorrowedMessage, Header, Headers, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;
use tracing_opentelemetry::OpenTelemetrySpanExt;

use super::kafka::{LagReporter, MessagingError};
use crate::metrics as names;
use crate::telemetry::{self, Carrier};

/// A message handed to a handler.
#[derive(Debug, Clone)]
pub struct Delivery {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    pub key: Option<String>,
    pub payload: Vec<u8>,
}

#[derive(Debug, thiserror::Error)]
pub enum HandleError {
    /// Can never succeed; dead-letter it now.
    #[error("poison message: {0}")]
    Poison(String),
    /// May succeed later (database busy, ...); retry.
    #[error("transient failure: {0:#}")]
    Transient(anyhow::Error),
}

impl From<crate::db::DbError> for HandleError {
    fn from(e: crate::db::DbError) -> Self {
        Self::Transient(e.into())
    }
}

impl From<contracts::messages::DecodeError> for HandleError {
    fn from(e: contracts::messages::DecodeError) -> Self {
        Self::Poison(e.to_string())
    }
}

/// Handles messages. Implementations are idempotent (they use the inbox).
pub trait Handler: Send + Sync + 'static {
    fn handle(&self, delivery: &Delivery) -> impl Future<Output = Result<(), HandleError>> + Send;

    /// Handles several messages that arrived together, in order, all or none: a handler that
    /// can apply them in one transaction does (on SQLite, one write turn instead of one per
    /// message is most of a busy service's capacity). On an error the consumer handles the same
    /// messages one by one with [`Handler::handle`], so an implementation need not sort out which
    /// one failed. The default does that at once.
    fn handle_batch(
        &self,
        deliveries: &[Delivery],
    ) -> impl Future<Output = Result<(), HandleError>> + Send {
        let _ = deliveries;
        std::future::ready(Err(HandleError::Transient(anyhow::anyhow!(
            "this handler takes messages one at a time"
        ))))
    }
}

#[derive(Debug, Clone)]
pub struct ConsumerSettings {
    pub brokers: String,
    /// The consumer group: one per service (and per read model), shared by its instances, so
    /// they divide the partitions between them and a dead instance's partitions move to a
    /// survivor once its session times out.
    pub group_id: String,
    pub client_id: String,
    pub topics: Vec<String>,
    /// The most messages handed to [`Handler::handle_batch`] at once: what has arrived when
    /// the consumer is ready for more, never waiting for a batch to fill.
    pub max_batch: usize,
    /// How long a message that keeps failing with [`HandleError::Transient`] is retried
    /// before it is dead-lettered.
    pub transient_budget: Duration,
    pub backoff_base: Duration,
    pub backoff_max: Duration,
}

impl ConsumerSettings {
    /// Settings for consuming `topics` in `group` (the service, e.g. `order`).
    pub fn new(brokers: &str, group: &str, client_id: &str, topics: &[&str]) -> Self {
        Self {
            brokers: brokers.into(),
            group_id: group.into(),
            client_id: client_id.into(),
            topics: topics.iter().map(|t| t.to_string()).collect(),
            max_batch: 64,
            transient_budget: Duration::from_secs(600),
            backoff_base: Duration::from_millis(50),
            backoff_max: Duration::from_secs(2),
        }
    }
}

/// Consumes until `shutdown`; returns once the message in hand is finished.
pub async fn run<H: Handler>(
    settings: ConsumerSettings,
    handler: H,
    dlq_producer: FutureProducer,
    shutdown: CancellationToken,
) -> Result<(), MessagingError> {
    let consumer: StreamConsumer<LagReporter> =
        super::kafka::consumer(&settings.brokers, &settings.group_id, &settings.client_id)?;
    let topics: Vec<&str> = settings.topics.iter().map(String::as_str).collect();
    consumer.subscribe(&topics)?;
    // Counters start at zero, so a dashboard's rate() has a series before the first failure.
    for topic in &settings.topics {
        let labels = [
            ("group", settings.group_id.clone()),
            ("topic", topic.clone()),
        ];
        metrics::counter!(names::CONSUMER_RETRIES, &labels).increment(0);
        metrics::counter!(names::CONSUMER_DEAD_LETTERS, &labels).increment(0);
        for outcome in ["handled", "dead_lettered"] {
            let mut labels = labels.to_vec();
            labels.push(("outcome", outcome.to_string()));
            metrics::counter!(names::CONSUMER_MESSAGES, &labels).increment(0);
        }
    }
    tracing::info!(group = %settings.group_id, topics = ?settings.topics, "consumer started");
    loop {
        let msg = tokio::select! {
            _ = shutdown.cancelled() => break,
            m = consumer.recv() => m,
        };
        let first = match msg {
            Ok(m) => m,
            Err(e) => {
                tracing::warn!(error = %e, group = %settings.group_id, "consume error");
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
        };
        // Whatever else has already arrived goes with it, in order, up to a batch.
        let mut batch = vec![first];
        while batch.len() < settings.max_batch {
            match consumer.recv().now_or_never() {
                Some(Ok(m)) => batch.push(m),
                _ => break,
            }
        }
        let received = SystemTime::now();
        let mut items = Vec::with_capacity(batch.len());
        for msg in &batch {
            let delivery = Delivery {
                topic: msg.topic().to_string(),
                partition: msg.partition(),
                offset: msg.offset(),
                key: msg.key().map(|k| String::from_utf8_lossy(k).into_owned()),
                payload: msg.payload().map(<[u8]>::to_vec).unwrap_or_default(),
            };
            let produced = msg
                .timestamp()
                .to_millis()
                .and_then(|ms| u64::try_from(ms).ok())
                .map(|ms| UNIX_EPOCH + Duration::from_millis(ms));
            if let Some(produced) = produced {
                metrics::histogram!(
                    names::CONSUMER_TRANSIT,
                    "group" => settings.group_id.clone(),
                    "topic" => delivery.topic.clone(),
                )
                .record(
                    received
                        .duration_since(produced)
                        .unwrap_or_default()
                        .as_secs_f64(),
                );
            }
            let span = process_span(&settings, &delivery, msg, produced, received);
            items.push((delivery, span));
        }
        let started = Instant::now();
        let handled = if items.len() > 1 {
            let deliveries: Vec<Delivery> = items.iter().map(|(d, _)| d.clone()).collect();
            // One transaction for all of them; any failure and they go one by one below, where
            // retries, poison and dead letters are handled per message.
            let first_span = items[0].1.clone();
            handler
                .handle_batch(&deliveries)
                .instrument(first_span)
                .await
                .is_ok()
        } else {
            false
        };
        let mut interrupted = false;
        for ((delivery, span), msg) in items.iter().zip(&batch) {
            if !handled {
                let ok = process(&settings, &handler, &dlq_producer, delivery, msg, &shutdown)
                    .instrument(span.clone())
                    .await;
                if !ok {
                    // Shutting down mid-retry: leave the offset so the next owner redelivers it.
                    interrupted = true;
                    break;
                }
            } else {
                count(&settings, delivery, "handled");
            }
            metrics::histogram!(
                names::CONSUMER_HANDLE_DURATION,
                "group" => settings.group_id.clone(),
                "topic" => delivery.topic.clone(),
            )
            .record(started.elapsed().as_secs_f64());
            if let Err(e) = consumer.store_offset_from_message(msg) {
                tracing::warn!(error = %e, "cannot store offset");
            }
        }
        if interrupted {
            break;
        }
    }
    tracing::info!(group = %settings.group_id, "consumer drained");
    Ok(())
}

/// The `process <topic>` span of one message, child of the producer's context from the headers,
/// and the `transit <topic>` span beside it. Without trace export this is a disabled span.
fn process_span(
    settings: &ConsumerSettings,
    delivery: &Delivery,
    msg: &BorrowedMessage<'_>,
    produced: Option<SystemTime>,
    received: SystemTime,
) -> tracing::Span {
    let header = |name: &str| -> Option<String> {
        msg.headers().and_then(|h| {
            h.iter()
                .find(|h| h.key == name)
                .and_then(|h| h.value)
                .map(|v| String::from_utf8_lossy(v).into_owned())
        })
    };
    let span = tracing::info_span!(
        "kafka.process",
        otel.name = %format!("process {}", delivery.topic),
        otel.kind = "consumer",
        otel.status_code = tracing::field::Empty,
        messaging.system = "kafka",
        messaging.operation.type = "process",
        messaging.operation.name = "process",
        messaging.destination.name = %delivery.topic,
        messaging.consumer.group.name = %settings.group_id,
        messaging.destination.partition.id = delivery.partition,
        messaging.kafka.offset = delivery.offset,
        messaging.message.id = header("message-id").unwrap_or_default(),
        messaging.kafka.message.key = delivery.key.as_deref().unwrap_or(""),
        message.kind = header("kind").unwrap_or_default(),
    );
    if !telemetry::exporting() {
        return span;
    }
    let mut carrier = Carrier::default();
    for name in telemetry::propagation_fields() {
        if let Some(value) = header(&name) {
            carrier.0.insert(name, value);
        }
    }
    let parent = telemetry::extract_carrier(&carrier);
    if let Some(produced) = produced {
        telemetry::record_span(
            format!("transit {}", delivery.topic),
            SpanKind::Consumer,
            &parent,
            produced,
            received,
            vec![
                KeyValue::new("messaging.system", "kafka"),
                KeyValue::new("messaging.destination.name", delivery.topic.clone()),
                KeyValue::new(
                    "messaging.destination.partition.id",
                    delivery.partition.to_string(),
                ),
                KeyValue::new("messaging.kafka.offset", delivery.offset),
                KeyValue::new("messaging.consumer.group.name", settings.group_id.clone()),
            ],
        );
    }
    let _ = span.set_parent(parent);
    span
}

/// What became of one message in the handler.
#[derive(Debug, PartialEq, Eq)]
enum Outcome {
    Handled,
    /// To the dead-letter topic, for this reason.
    DeadLetter(String),
    /// Shutdown came while it was being retried.
    Interrupted,
}

/// Runs the handler until it succeeds, the message is poison, transient failures outlast
/// [`ConsumerSettings::transient_budget`], or shutdown.
async fn handle_with_retries<H: Handler>(
    settings: &ConsumerSettings,
    handler: &H,
    delivery: &Delivery,
    shutdown: &CancellationToken,
) -> Outcome {
    let started = tokio::time::Instant::now();
    let mut attempt: u32 = 0;
    loop {
        attempt = attempt.saturating_add(1);
        match handler.handle(delivery).await {
            Ok(()) => return Outcome::Handled,
            Err(HandleError::Poison(why)) => return Outcome::DeadLetter(why),
            Err(HandleError::Transient(e)) if started.elapsed() >= settings.transient_budget => {
                return Outcome::DeadLetter(format!(
                    "still failing after {attempt} attempts in {:?}: {e:#}",
                    started.elapsed()
                ));
            }
            Err(HandleError::Transient(e)) => {
                let exp = settings.backoff_base * 2u32.saturating_pow(attempt.min(16) - 1);
                let capped = exp.min(settings.backoff_max);
                let jitter = capped.mul_f64(rand::random::<f64>() * 0.5);
                metrics::counter!(
                    names::CONSUMER_RETRIES,
                    "group" => settings.group_id.clone(),
                    "topic" => delivery.topic.clone(),
                )
                .increment(1);
                tracing::warn!(error = %format!("{e:#}"), attempt, topic = %delivery.topic, "handler failed; retrying");
                tokio::select! {
                    _ = shutdown.cancelled() => return Outcome::Interrupted,
                    _ = tokio::time::sleep(capped + jitter) => {}
                }
            }
        }
    }
}

/// Returns `true` once the message is dealt with (handled or dead-lettered), `false` when
/// shutdown interrupted it.
async fn process<H: Handler>(
    settings: &ConsumerSettings,
    handler: &H,
    dlq: &FutureProducer,
    delivery: &Delivery,
    msg: &BorrowedMessage<'_>,
    shutdown: &CancellationToken,
) -> bool {
    let reason = match handle_with_retries(settings, handler, delivery, shutdown).await {
        Outcome::Handled => {
            count(settings, delivery, "handled");
            return true;
        }
        Outcome::Interrupted => return false,
        Outcome::DeadLetter(reason) => reason,
    };
    loop {
        match dead_letter(settings, dlq, delivery, msg, &reason).await {
            Ok(()) => {
                tracing::Span::current().record("otel.status_code", "ERROR");
                metrics::counter!(
                    names::CONSUMER_DEAD_LETTERS,
                    "group" => settings.group_id.clone(),
                    "topic" => delivery.topic.clone(),
                )
                .increment(1);
                count(settings, delivery, "dead_lettered");
                return true;
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot publish to the dead-letter topic; retrying");
                tokio::select! {
                    _ = shutdown.cancelled() => return false,
                    _ = tokio::time::sleep(Duration::from_millis(500)) => {}
                }
            }
        }
    }
}

fn count(settings: &ConsumerSettings, delivery: &Delivery, outcome: &'static str) {
    metrics::counter!(
        names::CONSUMER_MESSAGES,
        "group" => settings.group_id.clone(),
        "topic" => delivery.topic.clone(),
        "outcome" => outcome,
    )
    .increment(1);
}

async fn dead_letter(
    settings: &ConsumerSettings,
    producer: &FutureProducer,
    delivery: &Delivery,
    msg: &BorrowedMessage<'_>,
    reason: &str,
) -> Result<(), MessagingError> {
    let topic = contracts::messages::topics::dead_letter(&delivery.topic);
    let partition = delivery.partition.to_string();
    let offset = delivery.offset.to_string();
    let mut headers = OwnedHeaders::new();
    if let Some(h) = msg.headers() {
        for i in 0..h.count() {
            let header = h.get(i);
            headers = headers.insert(Header {
                key: header.key,
                value: header.value,
            });
        }
    }
    let headers = headers
        .insert(Header {
            key: "dlq-error",
            value: Some(reason),
        })
        .insert(Header {
            key: "dlq-source-topic",
            value: Some(delivery.topic.as_str()),
        })
        .insert(Header {
            key: "dlq-source-partition",
            value: Some(partition.as_str()),
        })
        .insert(Header {
            key: "dlq-source-offset",
            value: Some(offset.as_str()),
        })
        .insert(Header {
            key: "dlq-consumer-group",
            value: Some(settings.group_id.as_str()),
        });
    let key = delivery.key.clone().unwrap_or_default();
    let record = FutureRecord::to(&topic)
        .key(&key)
        .payload(&delivery.payload)
        .headers(headers);
    producer
        .send(record, Duration::from_secs(10))
        .await
        .map_err(|(e, _)| MessagingError::Kafka(e))?;
    tracing::error!(topic = %delivery.topic, offset = delivery.offset, reason, "message dead-lettered");
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};

    use super::*;

    /// Fails with a transient error until `ok_after`, then succeeds; or is poison.
    struct Flaky {
        calls: AtomicU32,
        ok_after: Duration,
        started: tokio::time::Instant,
        poison: bool,
    }

    impl Handler for Flaky {
        async fn handle(&self, _: &Delivery) -> Result<(), HandleError> {
            self.calls.fetch_add(1, Ordering::Relaxed);
            if self.poison {
                return Err(HandleError::Poison("unreadable".into()));
            }
            if self.started.elapsed() < self.ok_after {
                return Err(HandleError::Transient(anyhow::anyhow!(
                    "database is restarting"
                )));
            }
            Ok(())
        }
    }

    fn flaky(ok_after: Duration, poison: bool) -> Flaky {
        Flaky {
            calls: AtomicU32::new(0),
            ok_after,
            started: tokio::time::Instant::now(),
            poison,
        }
    }

    fn delivery() -> Delivery {
        Delivery {
            topic: "order.events".into(),
            partition: 0,
            offset: 7,
            key: Some("k".into()),
            payload: b"{}".to_vec(),
        }
    }

    fn settings() -> ConsumerSettings {
        ConsumerSettings::new(
            "127.0.0.1:9",
            "order-projector",
            "order#1",
            &["order.events"],
        )
    }

    #[tokio::test(start_paused = true)]
    async fn a_database_down_for_a_minute_delays_the_message_but_does_not_dead_letter_it() {
        let handler = flaky(Duration::from_secs(60), false);
        let outcome = handle_with_retries(
            &settings(),
            &handler,
            &delivery(),
            &CancellationToken::new(),
        )
        .await;
        assert_eq!(outcome, Outcome::Handled);
        assert!(handler.calls.load(Ordering::Relaxed) > 10, "it kept trying");
    }

    #[tokio::test(start_paused = true)]
    async fn transient_failures_beyond_the_budget_are_dead_lettered() {
        let handler = flaky(Duration::from_secs(3600), false);
        let started = tokio::time::Instant::now();
        let outcome = handle_with_retries(
            &settings(),
            &handler,
            &delivery(),
            &CancellationToken::new(),
        )
        .await;
        assert!(
            matches!(&outcome, Outcome::DeadLetter(why) if why.contains("database is restarting")),
            "{outcome:?}"
        );
        let took = started.elapsed();
        assert!(took >= settings().transient_budget, "{took:?}");
        assert!(
            took < settings().transient_budget + Duration::from_secs(5),
            "{took:?}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn poison_is_dead_lettered_at_once() {
        let handler = flaky(Duration::ZERO, true);
        let outcome = handle_with_retries(
            &settings(),
            &handler,
            &delivery(),
            &CancellationToken::new(),
        )
        .await;
        assert_eq!(outcome, Outcome::DeadLetter("unreadable".into()));
        assert_eq!(handler.calls.load(Ordering::Relaxed), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn shutdown_interrupts_the_retries_and_leaves_the_offset_alone() {
        let handler = flaky(Duration::from_secs(3600), false);
        let shutdown = CancellationToken::new();
        let stop = shutdown.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(5)).await;
            stop.cancel();
        });
        let outcome = handle_with_retries(&settings(), &handler, &delivery(), &shutdown).await;
        assert_eq!(outcome, Outcome::Interrupted);
    }
}
