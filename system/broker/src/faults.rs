//! Message-level faults: what the fronts ([`crate::front`]) do to the Kafka traffic of the
//! clients that come through them while a fault is set.
//!
//! The test harness sets and clears faults through the broker's control API
//! ([`crate::control`], `--control ADDR`); each fault applies to the fronts it names (by their
//! advertised address, which is the address of the harness's proxy for that client) or to every
//! front. Faults live in memory: a restarted broker has none.
//!
//! | fault | what the front does |
//! |---|---|
//! | [`MessageFault::LostAck`] | forwards a Produce request (api key 0) to the broker, so the records are written, then drops its response and resets the client's connection: the producer never hears the acknowledgement and sends again |
//! | [`MessageFault::Delay`] | rewrites Fetch responses (api key 1) so that one topic-partition's record batches reach the client only once the front has seen them for `delay_ms`; the other partitions pass untouched |
//! | [`MessageFault::Duplicate`] | publishes the record batches a Fetch response delivers (same keys, values and headers, so the same message ids) again onto their own topic-partition |
//!
//! # Why duplicates are published again rather than repeated in the response
//!
//! A consumer (librdkafka) drops every record below its fetch position, so a Fetch response that
//! carried a delivered batch a second time would never reach the application. What at-least-once
//! delivery really produces after a lost commit or a producer's retry is a second copy *in the
//! log*, at a later offset: that is what this fault writes, from the front, over a connection of
//! its own to the broker (a Produce request carrying the fetched batch unchanged; the broker
//! numbers it anew). Every consumer group of the topic then sees the copy, as it would in
//! production. Each batch is copied at most once, whichever fronts fetch it, and copies are never
//! copied again ([`Faults::claim_copy`]), so a storm stays bounded. A batch is known by its
//! records (their bytes and count), not by its offset: the copy carries the same records at
//! another offset, and a consumer may fetch it before the broker's answer to the copy's Produce
//! request has even reached the front, so no offset is known yet that could mark it a copy.
//!
//! # What the producers do about a lost acknowledgement
//!
//! This broker's log appends every batch it is sent: it does not deduplicate by producer id and
//! sequence, so even an idempotent producer's retry would be written twice. The reference
//! system's producers leave `enable.idempotence` off, so their retries are written twice anyway;
//! the consumers' inboxes are what keeps the system correct.

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    hash::{DefaultHasher, Hash, Hasher},
    sync::{
        Arc, Mutex, PoisonError, RwLock,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::Duration,
};

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use tansu_sans_io::{
    ApiKey as _, Body, FetchResponse, Frame, MetadataResponse, ProduceRequest,
    record::deflated::Batch,
};
use tokio::time::Instant;

/// One message-level fault.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum MessageFault {
    /// Produce responses are dropped (and the client's connection reset) with `probability`.
    LostAck { probability: f64 },
    /// `topic`'s `partition` reaches consumers `delay_ms` after the front first fetched it.
    Delay {
        topic: String,
        partition: i32,
        delay_ms: u64,
    },
    /// Fetched batches of `topic` (of every topic when absent) are published again with
    /// `probability`.
    Duplicate {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        topic: Option<String>,
        probability: f64,
    },
}

impl MessageFault {
    /// What is wrong with it, if anything.
    pub fn check(&self) -> Result<(), String> {
        let probability = |p: f64| {
            if (0.0..=1.0).contains(&p) {
                Ok(())
            } else {
                Err(format!("probability must be between 0 and 1, not {p}"))
            }
        };
        match self {
            Self::LostAck { probability: p } | Self::Duplicate { probability: p, .. } => {
                probability(*p)
            }
            Self::Delay {
                topic,
                partition,
                delay_ms,
            } => {
                if topic.trim().is_empty() {
                    Err("delay needs a topic".into())
                } else if *partition < 0 {
                    Err(format!("partition must be 0 or more, not {partition}"))
                } else if *delay_ms == 0 {
                    Err("delay_ms must be more than 0".into())
                } else {
                    Ok(())
                }
            }
        }
    }
}

/// A fault and where it applies: the control API's `PUT /faults/{id}` body.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FaultSpec {
    /// The advertised addresses of the fronts it applies to; absent: every front.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fronts: Option<Vec<String>>,
    pub fault: MessageFault,
}

impl FaultSpec {
    fn applies_to(&self, front: &str) -> bool {
        self.fronts
            .as_ref()
            .is_none_or(|fronts| fronts.iter().any(|f| f == front))
    }
}

/// The faults set on this broker, shared by every front and the control API.
#[derive(Debug, Default)]
pub struct Faults {
    /// Whether any fault is set: the fronts' fast path.
    any: AtomicBool,
    table: RwLock<Arc<BTreeMap<String, FaultSpec>>>,
    /// Topic ids to names, learnt from the Metadata responses the fronts relay (Fetch v13+
    /// names topics by id only).
    topic_names: RwLock<HashMap<[u8; 16], String>>,
    /// Batches already copied, which are also their copies: (topic, partition, records'
    /// fingerprint, [`records_key`]).
    copied: Mutex<HashSet<(String, i32, u64)>>,
    /// What the fronts did, for the log line of each cleared fault.
    pub(crate) acks_lost: AtomicU64,
    pub(crate) batches_held: AtomicU64,
    pub(crate) copies_written: AtomicU64,
}

impl Faults {
    /// Sets (or replaces) the fault `id`.
    pub fn set(&self, id: &str, spec: FaultSpec) {
        let mut table = self.table.write().unwrap_or_else(PoisonError::into_inner);
        let mut next = BTreeMap::clone(&table);
        next.insert(id.to_owned(), spec);
        self.any.store(true, Ordering::Release);
        *table = Arc::new(next);
    }

    /// Clears the fault `id`; `false` if there was none.
    pub fn clear(&self, id: &str) -> bool {
        let mut table = self.table.write().unwrap_or_else(PoisonError::into_inner);
        let mut next = BTreeMap::clone(&table);
        let removed = next.remove(id).is_some();
        self.publish(&mut table, next);
        removed
    }

    /// Clears every fault.
    pub fn clear_all(&self) {
        let mut table = self.table.write().unwrap_or_else(PoisonError::into_inner);
        self.publish(&mut table, BTreeMap::new());
    }

    fn publish(
        &self,
        table: &mut Arc<BTreeMap<String, FaultSpec>>,
        next: BTreeMap<String, FaultSpec>,
    ) {
        let duplicating = next
            .values()
            .any(|s| matches!(s.fault, MessageFault::Duplicate { .. }));
        if !duplicating {
            // The next storm starts from scratch; the set does not grow for the broker's life.
            self.copied
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .clear();
        }
        self.any.store(!next.is_empty(), Ordering::Release);
        *table = Arc::new(next);
    }

    /// Every fault set, by id.
    pub fn list(&self) -> BTreeMap<String, FaultSpec> {
        BTreeMap::clone(&self.table.read().unwrap_or_else(PoisonError::into_inner))
    }

    /// The faults that apply to the front advertised as `front`, right now.
    pub(crate) fn for_front(&self, front: &str) -> Vec<MessageFault> {
        if !self.any.load(Ordering::Acquire) {
            return Vec::new();
        }
        let table = Arc::clone(&self.table.read().unwrap_or_else(PoisonError::into_inner));
        table
            .values()
            .filter(|spec| spec.applies_to(front))
            .map(|spec| spec.fault.clone())
            .collect()
    }

    /// Remembers the topic ids a Metadata response names.
    pub(crate) fn learn_topics(&self, response: &MetadataResponse) {
        let learnt: Vec<([u8; 16], String)> = response
            .topics
            .iter()
            .flatten()
            .filter_map(|t| Some((t.topic_id?, t.name.clone()?)))
            .filter(|(id, _)| *id != [0; 16])
            .collect();
        if learnt.is_empty() {
            return;
        }
        let mut names = self
            .topic_names
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        names.extend(learnt);
    }

    fn topic_name(&self, id: &[u8; 16]) -> Option<String> {
        self.topic_names
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(id)
            .cloned()
    }

    /// Whether `batch` may be copied: neither copied before nor a copy itself (a copy holds the
    /// same records as the batch it copies, so claiming the one claims the other). Claims it
    /// when it may.
    fn claim_copy(&self, topic: &str, partition: i32, batch: &Batch) -> bool {
        self.copied
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert((topic.to_owned(), partition, records_key(batch)))
    }

    /// Counts a copy the broker wrote.
    pub(crate) fn copy_written(&self) {
        self.copies_written.fetch_add(1, Ordering::Relaxed);
    }

    /// What the fronts have done since the broker started: (produce acknowledgements lost,
    /// fetch responses whose batches were held back, copies written).
    pub fn effects(&self) -> (u64, u64, u64) {
        (
            self.acks_lost.load(Ordering::Relaxed),
            self.batches_held.load(Ordering::Relaxed),
            self.copies_written.load(Ordering::Relaxed),
        )
    }
}

/// A fingerprint of a batch's records (their encoded bytes and count), the same for a batch and
/// its copy whatever offsets the broker gave them. Two different batches with the same
/// fingerprint would only mean that one of them is not duplicated.
fn records_key(batch: &Batch) -> u64 {
    let mut hasher = DefaultHasher::new();
    batch.record_count.hash(&mut hasher);
    batch.record_data.hash(&mut hasher);
    hasher.finish()
}

/// A batch to publish again onto its topic-partition.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Copy {
    pub topic: String,
    pub partition: i32,
    pub batch: Batch,
}

/// When a relay first saw each held-back batch: (topic, partition, base offset) → instant.
pub(crate) type FirstSeen = HashMap<(String, i32, i64), Instant>;

/// What [`rewrite_fetch`] did to a Fetch response.
#[derive(Debug, Default)]
pub(crate) struct FetchRewrite {
    /// The response to send instead; `None`: send the original.
    pub frame: Option<Bytes>,
    /// Whether batches were held back and nothing else was delivered: the relay waits a little
    /// before answering, like the broker's long poll, instead of letting the client fetch again
    /// at once.
    pub held_back_only: bool,
    /// Batches to publish again ([`MessageFault::Duplicate`]).
    pub copies: Vec<Copy>,
}

/// Applies `faults` to a whole Fetch response frame (size included) of `api_version`: holds
/// back the delayed partitions' batches not yet seen for their delay (forgetting batches in
/// `first_seen` older than a minute past it), and picks the delivered batches to copy.
pub(crate) fn rewrite_fetch(
    frame: &[u8],
    api_version: i16,
    faults: &[MessageFault],
    registry: &Faults,
    first_seen: &mut FirstSeen,
    now: Instant,
    mut chance: impl FnMut(f64) -> bool,
) -> Result<FetchRewrite, crate::front::RewriteError> {
    use crate::front::RewriteError;
    let Frame { header, body, .. } =
        Frame::response_from_bytes(frame, FetchResponse::KEY, api_version)
            .map_err(RewriteError::Decode)?;
    let Body::FetchResponse(mut response) = body else {
        return Err(RewriteError::Unexpected(body.api_name().to_owned()));
    };
    let mut outcome = FetchRewrite::default();
    let mut held = false;
    let mut delivered = false;
    let longest = faults
        .iter()
        .filter_map(|f| match f {
            MessageFault::Delay { delay_ms, .. } => Some(Duration::from_millis(*delay_ms)),
            _ => None,
        })
        .max()
        .unwrap_or_default();
    first_seen.retain(|_, seen| now.duration_since(*seen) < longest + Duration::from_secs(60));
    for topic in response.responses.iter_mut().flatten() {
        let name = topic
            .topic
            .clone()
            .or_else(|| topic.topic_id.and_then(|id| registry.topic_name(&id)));
        let Some(name) = name else { continue };
        for partition in topic.partitions.iter_mut().flatten() {
            let index = partition.partition_index;
            let delay = faults
                .iter()
                .filter_map(|f| match f {
                    MessageFault::Delay {
                        topic,
                        partition,
                        delay_ms,
                    } if *topic == name && *partition == index => {
                        Some(Duration::from_millis(*delay_ms))
                    }
                    _ => None,
                })
                .max();
            let Some(records) = partition.records.as_mut() else {
                continue;
            };
            if let Some(delay) = delay {
                // Every batch is seen now, also those behind one still held; batches come in log
                // order, so those seen long enough are a prefix.
                let seen: Vec<Instant> = records
                    .batches
                    .iter()
                    .map(|b| {
                        *first_seen
                            .entry((name.clone(), index, b.base_offset))
                            .or_insert(now)
                    })
                    .collect();
                let ready = seen
                    .iter()
                    .take_while(|seen| now.duration_since(**seen) >= delay)
                    .count();
                if ready < records.batches.len() {
                    records.batches.truncate(ready);
                    registry.batches_held.fetch_add(1, Ordering::Relaxed);
                    held = true;
                }
            }
            if records.batches.is_empty() {
                partition.records = None;
                continue;
            }
            delivered = true;
            for f in faults {
                if let MessageFault::Duplicate { topic, probability } = f
                    && topic.as_ref().is_none_or(|t| *t == name)
                {
                    for batch in &records.batches {
                        // Control batches (transaction markers) are the broker's, not data.
                        if batch.is_control() || !chance(*probability) {
                            continue;
                        }
                        if registry.claim_copy(&name, index, batch) {
                            outcome.copies.push(Copy {
                                topic: name.clone(),
                                partition: index,
                                batch: batch.clone(),
                            });
                        }
                    }
                }
            }
        }
    }
    outcome.held_back_only = held && !delivered;
    if held {
        outcome.frame = Some(
            Frame::response(header, response.into(), FetchResponse::KEY, api_version)
                .map_err(RewriteError::Encode)?,
        );
    }
    Ok(outcome)
}

/// Api version of the Produce requests that carry copies: the first flexible one, which every
/// broker that speaks Fetch v13+ (topic ids) understands.
pub(crate) const COPY_PRODUCE_VERSION: i16 = 9;

/// A Produce request (v9, acks=all) that writes `copy`'s batch onto its topic-partition again.
pub(crate) fn copy_request(
    copy: &Copy,
    correlation_id: i32,
) -> Result<Bytes, tansu_sans_io::Error> {
    use tansu_sans_io::{
        Header,
        produce_request::{PartitionProduceData, TopicProduceData},
        record::deflated,
    };
    let body = ProduceRequest::default()
        .transactional_id(None)
        .acks(-1)
        .timeout_ms(5_000)
        .topic_data(Some(vec![
            TopicProduceData::default()
                .name(copy.topic.clone())
                .partition_data(Some(vec![
                    PartitionProduceData::default()
                        .index(copy.partition)
                        .records(Some(deflated::Frame {
                            batches: vec![copy.batch.clone()],
                        })),
                ])),
        ]));
    Frame::request(
        Header::Request {
            api_key: 0,
            api_version: COPY_PRODUCE_VERSION,
            correlation_id,
            client_id: Some("embedded-broker-duplicate-fault".into()),
        },
        body.into(),
    )
}

/// The base offset a Produce response (to [`copy_request`]) gives the copy, if it was written.
pub(crate) fn copy_offset(frame: &[u8]) -> Option<i64> {
    let Frame { body, .. } = Frame::response_from_bytes(frame, 0, COPY_PRODUCE_VERSION).ok()?;
    let Body::ProduceResponse(response) = body else {
        return None;
    };
    let partition = response
        .responses?
        .into_iter()
        .next()?
        .partition_responses?
        .into_iter()
        .next()?;
    (partition.error_code == 0).then_some(partition.base_offset)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use tansu_sans_io::{
        Header,
        fetch_response::{FetchableTopicResponse, PartitionData},
        metadata_response::MetadataResponseTopic,
        record::{Record, deflated, inflated},
    };

    use super::*;

    const COMMANDS: [u8; 16] = [1; 16];
    const EVENTS: [u8; 16] = [2; 16];

    fn batch(base_offset: i64, value: &'static str) -> Batch {
        let inflated = inflated::Batch::builder()
            .base_offset(base_offset)
            .record(Record::builder().value(Some(Bytes::from_static(value.as_bytes()))))
            .build()
            .unwrap();
        deflated::Batch::try_from(inflated).unwrap()
    }

    fn partition(index: i32, batches: Vec<Batch>) -> PartitionData {
        PartitionData::default()
            .partition_index(index)
            .error_code(0)
            .high_watermark(100)
            .last_stable_offset(Some(100))
            .log_start_offset(Some(0))
            .diverging_epoch(None)
            .current_leader(None)
            .snapshot_id(None)
            .aborted_transactions(Some(Vec::new()))
            .preferred_read_replica(Some(-1))
            .records((!batches.is_empty()).then_some(deflated::Frame { batches }))
    }

    fn topic(name: &str, id: [u8; 16], partitions: Vec<PartitionData>) -> FetchableTopicResponse {
        FetchableTopicResponse::default()
            .topic(Some(name.into()))
            .topic_id(Some(id))
            .partitions(Some(partitions))
    }

    /// payment.commands partitions 0 and 1, and order.events partition 1, each with records.
    fn fetch_response(version: i16) -> Bytes {
        let response = FetchResponse::default()
            .throttle_time_ms(Some(0))
            .error_code(Some(0))
            .session_id(Some(0))
            .node_endpoints(Some(Vec::new()))
            .responses(Some(vec![
                topic(
                    "payment.commands",
                    COMMANDS,
                    vec![
                        partition(0, vec![batch(10, "a")]),
                        partition(1, vec![batch(20, "b"), batch(21, "c")]),
                    ],
                ),
                topic(
                    "order.events",
                    EVENTS,
                    vec![partition(1, vec![batch(5, "d")])],
                ),
            ]));
        Frame::response(
            Header::Response { correlation_id: 3 },
            response.into(),
            FetchResponse::KEY,
            version,
        )
        .unwrap()
    }

    /// (topic, partition) → base offsets delivered, for the partitions that carry records.
    fn delivered(frame: &[u8], version: i16, registry: &Faults) -> Vec<(String, i32, Vec<i64>)> {
        let Frame { body, .. } =
            Frame::response_from_bytes(frame, FetchResponse::KEY, version).unwrap();
        let Body::FetchResponse(response) = body else {
            panic!("not a fetch response");
        };
        let mut out = Vec::new();
        for t in response.responses.unwrap() {
            let name = t
                .topic
                .or_else(|| registry.topic_name(&t.topic_id.unwrap()))
                .unwrap();
            for p in t.partitions.unwrap() {
                let offsets = p
                    .records
                    .map(|r| r.batches.iter().map(|b| b.base_offset).collect())
                    .unwrap_or_default();
                out.push((name.clone(), p.partition_index, offsets));
            }
        }
        out
    }

    fn registry() -> Faults {
        let faults = Faults::default();
        faults.learn_topics(&MetadataResponse::default().topics(Some(vec![
            MetadataResponseTopic::default()
                .name(Some("payment.commands".into()))
                .topic_id(Some(COMMANDS)),
            MetadataResponseTopic::default()
                .name(Some("order.events".into()))
                .topic_id(Some(EVENTS)),
        ])));
        faults
    }

    fn delay_commands_1() -> Vec<MessageFault> {
        vec![MessageFault::Delay {
            topic: "payment.commands".into(),
            partition: 1,
            delay_ms: 500,
        }]
    }

    #[test]
    fn delay_holds_back_exactly_one_partitions_records_until_seen_for_the_delay() {
        // v16 names topics by id only (learnt from Metadata); v11 by name.
        for version in [11, 16] {
            let registry = registry();
            let mut first_seen = FirstSeen::new();
            let t0 = Instant::now();
            let frame = fetch_response(version);
            let rewrite = rewrite_fetch(
                &frame,
                version,
                &delay_commands_1(),
                &registry,
                &mut first_seen,
                t0,
                |_| true,
            )
            .unwrap();
            assert!(!rewrite.held_back_only, "other partitions delivered");
            let rewritten = rewrite.frame.expect("rewritten");
            assert_eq!(
                delivered(&rewritten, version, &registry),
                [
                    ("payment.commands".to_string(), 0, vec![10]),
                    ("payment.commands".to_string(), 1, vec![]),
                    ("order.events".to_string(), 1, vec![5]),
                ],
                "v{version}"
            );

            // Not yet: still held.
            let later = t0 + Duration::from_millis(499);
            let rewrite = rewrite_fetch(
                &frame,
                version,
                &delay_commands_1(),
                &registry,
                &mut first_seen,
                later,
                |_| true,
            )
            .unwrap();
            assert_eq!(
                delivered(&rewrite.frame.unwrap(), version, &registry)[1],
                ("payment.commands".to_string(), 1, vec![])
            );

            // Seen for the delay: the response passes unchanged.
            let rewrite = rewrite_fetch(
                &frame,
                version,
                &delay_commands_1(),
                &registry,
                &mut first_seen,
                t0 + Duration::from_millis(500),
                |_| true,
            )
            .unwrap();
            assert!(
                rewrite.frame.is_none(),
                "v{version}: nothing held back: {:?}",
                rewrite.frame.map(|f| delivered(&f, version, &registry))
            );
        }
    }

    #[test]
    fn delay_releases_the_batches_seen_long_enough_and_holds_the_newer_ones() {
        let registry = registry();
        let mut first_seen = FirstSeen::new();
        let t0 = Instant::now();
        first_seen.insert(("payment.commands".into(), 1, 20), t0);
        let rewrite = rewrite_fetch(
            &fetch_response(16),
            16,
            &delay_commands_1(),
            &registry,
            &mut first_seen,
            t0 + Duration::from_millis(600),
            |_| true,
        )
        .unwrap();
        assert_eq!(
            delivered(&rewrite.frame.unwrap(), 16, &registry)[1],
            ("payment.commands".to_string(), 1, vec![20])
        );
    }

    #[test]
    fn a_response_left_without_records_is_held_like_a_long_poll() {
        let registry = registry();
        let only_delayed = FetchResponse::default()
            .throttle_time_ms(Some(0))
            .error_code(Some(0))
            .session_id(Some(0))
            .node_endpoints(Some(Vec::new()))
            .responses(Some(vec![topic(
                "payment.commands",
                COMMANDS,
                vec![partition(0, vec![]), partition(1, vec![batch(20, "b")])],
            )]));
        let frame = Frame::response(
            Header::Response { correlation_id: 3 },
            only_delayed.into(),
            FetchResponse::KEY,
            16,
        )
        .unwrap();
        let rewrite = rewrite_fetch(
            &frame,
            16,
            &delay_commands_1(),
            &registry,
            &mut FirstSeen::new(),
            Instant::now(),
            |_| true,
        )
        .unwrap();
        assert!(rewrite.held_back_only);
    }

    #[test]
    fn duplicate_copies_each_delivered_batch_once_and_never_a_copy() {
        let registry = registry();
        let faults = [MessageFault::Duplicate {
            topic: Some("payment.commands".into()),
            probability: 1.0,
        }];
        let frame = fetch_response(16);
        let mut first_seen = FirstSeen::new();
        let rewrite = rewrite_fetch(
            &frame,
            16,
            &faults,
            &registry,
            &mut first_seen,
            Instant::now(),
            |_| true,
        )
        .unwrap();
        assert!(rewrite.frame.is_none(), "the response itself is unchanged");
        let copied: Vec<(String, i32, i64)> = rewrite
            .copies
            .iter()
            .map(|c| (c.topic.clone(), c.partition, c.batch.base_offset))
            .collect();
        assert_eq!(
            copied,
            [
                ("payment.commands".to_string(), 0, 10),
                ("payment.commands".to_string(), 1, 20),
                ("payment.commands".to_string(), 1, 21),
            ]
        );
        // Fetched again (another group, a refetch): not copied twice.
        let again = rewrite_fetch(
            &frame,
            16,
            &faults,
            &registry,
            &mut first_seen,
            Instant::now(),
            |_| true,
        )
        .unwrap();
        assert!(again.copies.is_empty());
        // The copy, at whatever offset the broker numbers it, is never copied in turn, even
        // when it is fetched before the front has heard where it was written.
        let mut copy = rewrite.copies[0].batch.clone();
        copy.base_offset = 11;
        assert!(!registry.claim_copy("payment.commands", 0, &copy), "a copy");
        // Another batch of the same partition still may be.
        assert!(registry.claim_copy("payment.commands", 0, &batch(12, "other")));

        // The copy is the fetched batch, unchanged, in a Produce request for its partition.
        let request = copy_request(&rewrite.copies[1], 9).unwrap();
        let Frame { header, body, .. } = Frame::request_from_bytes(&request[..]).unwrap();
        assert!(matches!(
            header,
            Header::Request {
                api_key: 0,
                correlation_id: 9,
                ..
            }
        ));
        let Body::ProduceRequest(produce) = body else {
            panic!("not produce: {body:?}");
        };
        let data = &produce.topic_data.unwrap()[0];
        assert_eq!(data.name, "payment.commands");
        let partition = &data.partition_data.as_ref().unwrap()[0];
        assert_eq!(partition.index, 1);
        assert_eq!(
            partition.records.as_ref().unwrap().batches,
            vec![rewrite.copies[1].batch.clone()]
        );
    }

    #[test]
    fn clearing_the_last_duplicate_fault_forgets_what_was_copied() {
        let registry = registry();
        let spec = |fault| FaultSpec {
            fronts: None,
            fault,
        };
        registry.set(
            "dup",
            spec(MessageFault::Duplicate {
                topic: None,
                probability: 0.5,
            }),
        );
        registry.set("ack", spec(MessageFault::LostAck { probability: 0.1 }));
        assert!(registry.claim_copy("t", 0, &batch(1, "v")));
        assert!(registry.clear("dup"));
        assert!(!registry.clear("dup"));
        assert!(registry.claim_copy("t", 0, &batch(1, "v")), "forgotten");
        assert_eq!(registry.for_front("127.0.0.1:1").len(), 1);
        registry.clear_all();
        assert!(registry.for_front("127.0.0.1:1").is_empty());
    }

    #[test]
    fn faults_apply_to_the_fronts_they_name() {
        let registry = Faults::default();
        registry.set(
            "one",
            FaultSpec {
                fronts: Some(vec!["127.0.0.1:40001".into()]),
                fault: MessageFault::LostAck { probability: 1.0 },
            },
        );
        assert_eq!(registry.for_front("127.0.0.1:40001").len(), 1);
        assert!(registry.for_front("127.0.0.1:40002").is_empty());
    }

    #[test]
    fn bad_faults_say_what_is_wrong() {
        let bad = [
            (
                MessageFault::LostAck { probability: 1.5 },
                "between 0 and 1",
            ),
            (
                MessageFault::Delay {
                    topic: "t".into(),
                    partition: 0,
                    delay_ms: 0,
                },
                "delay_ms",
            ),
            (
                MessageFault::Delay {
                    topic: "t".into(),
                    partition: -1,
                    delay_ms: 5,
                },
                "partition",
            ),
        ];
        for (fault, expected) in bad {
            let err = fault.check().unwrap_err();
            assert!(err.contains(expected), "{err}");
        }
        let json = r#"{"fronts":["127.0.0.1:1"],"fault":{"kind":"delay","topic":"t","partition":2,"delay_ms":300}}"#;
        let spec: FaultSpec = serde_json::from_str(json).unwrap();
        assert_eq!(serde_json::to_string(&spec).unwrap(), json);
    }
}
