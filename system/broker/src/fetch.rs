//! Fetch as a long poll over the [`Log`](crate::log::Log), answered as soon as records arrive.
//!
//! tansu 0.6's Fetch handler reads the log once and then sleeps for the rest of the request's
//! `max_wait_ms` whether or not it found records, so every hop through the broker took
//! `fetch.wait.max.ms` (the services ran with 50 ms, which cost a saga of six hops about
//! 300 ms), and it assumes the storage returns batches starting exactly at the requested
//! offset, which a log of whole batches does not (a consumer resuming inside a batch gets that
//! batch whole). This handler reads the log; when the read finds nothing it waits until an
//! append to one of the requested partitions moves its high watermark or `max_wait_ms` ends,
//! then reads again. An idle consumer costs one read per `max_wait_ms`; a busy one is answered
//! within a few milliseconds of the produce.

use std::time::Duration;

use futures::future::select_all;
use rama::{Context, Service};
use tansu_sans_io::{
    ApiKey, ErrorCode, FetchRequest, FetchResponse,
    fetch_request::FetchTopic,
    fetch_response::{FetchableTopicResponse, PartitionData},
    record::deflated::Frame,
};
use tansu_storage::{Storage, TopicId};
use tokio::sync::watch;
use tracing::debug;

use crate::{log::LogError, storage::LogStorage};

/// Kafka's default cap on a fetch response.
const MAX_RESPONSE_BYTES: u64 = 50 * 1024 * 1024;

/// Fetch, see the module docs.
#[derive(Debug, Clone, Copy, Default)]
pub struct LongPollFetch;

impl ApiKey for LongPollFetch {
    const KEY: i16 = FetchRequest::KEY;
}

/// One requested topic, resolved.
struct Wanted<'a> {
    request: &'a FetchTopic,
    /// Name, id and partition count; `None` for a topic that does not exist.
    topic: Option<(String, [u8; 16], i32)>,
}

impl<S: Storage> Service<LogStorage<S>, FetchRequest> for LongPollFetch {
    type Response = FetchResponse;
    type Error = tansu_storage::Error;

    async fn serve(
        &self,
        ctx: Context<LogStorage<S>>,
        req: FetchRequest,
    ) -> Result<Self::Response, Self::Error> {
        let storage = ctx.state();
        let max_wait = Duration::from_millis(u64::try_from(req.max_wait_ms).unwrap_or(0));
        let deadline = tokio::time::Instant::now() + max_wait;
        let max_bytes = req
            .max_bytes
            .and_then(|bytes| u64::try_from(bytes).ok())
            .unwrap_or(MAX_RESPONSE_BYTES)
            .min(MAX_RESPONSE_BYTES);
        let mut wanted = Vec::new();
        for request in req.topics.as_deref().unwrap_or_default() {
            let id = match (&request.topic, request.topic_id) {
                (Some(name), _) if !name.is_empty() => TopicId::Name(name.clone()),
                (_, Some(id)) => TopicId::from(id),
                _ => TopicId::Name(String::new()),
            };
            wanted.push(Wanted {
                request,
                topic: storage.topic(&id).await?,
            });
        }
        let mut watched: Vec<watch::Receiver<i64>> = Vec::new();
        for topic in &wanted {
            let Some((name, _, count)) = &topic.topic else {
                continue;
            };
            for partition in topic.request.partitions.as_deref().unwrap_or_default() {
                if (0..*count).contains(&partition.partition)
                    && let Ok(receiver) = storage.log().watch(name, partition.partition)
                {
                    watched.push(receiver);
                }
            }
        }
        loop {
            // Marked seen before reading: an append after the read still wakes us.
            for receiver in &mut watched {
                receiver.borrow_and_update();
            }
            let (response, found) = read(storage, &wanted, max_bytes);
            if found || watched.is_empty() {
                return Ok(response);
            }
            let appended = select_all(watched.iter_mut().map(|rx| Box::pin(rx.changed())));
            tokio::select! {
                _ = appended => {}
                () = tokio::time::sleep_until(deadline) => return Ok(response),
            }
        }
    }
}

/// One pass over the log for every requested partition; `true` with it when some partition
/// returned records.
fn read<S: Storage>(
    storage: &LogStorage<S>,
    wanted: &[Wanted<'_>],
    max_bytes: u64,
) -> (FetchResponse, bool) {
    let mut budget = max_bytes;
    let mut found = false;
    let responses = wanted
        .iter()
        .map(|topic| {
            let partitions = topic
                .request
                .partitions
                .as_deref()
                .unwrap_or_default()
                .iter()
                .map(|partition| {
                    let index = partition.partition;
                    let Some((name, _, _)) = topic
                        .topic
                        .as_ref()
                        .filter(|(_, _, count)| (0..*count).contains(&index))
                    else {
                        return partition_error(index, ErrorCode::UnknownTopicOrPartition, 0, 0);
                    };
                    let wanted_bytes = u64::try_from(partition.partition_max_bytes)
                        .unwrap_or(0)
                        .min(budget);
                    match storage.log().read(
                        name,
                        index,
                        partition.fetch_offset,
                        wanted_bytes.max(1),
                    ) {
                        Ok(read) => {
                            let bytes: u64 = read
                                .batches
                                .iter()
                                .map(|b| b.record_data.len() as u64 + 61)
                                .sum();
                            budget = budget.saturating_sub(bytes);
                            found |= !read.batches.is_empty();
                            PartitionData::default()
                                .partition_index(index)
                                .error_code(ErrorCode::None.into())
                                .high_watermark(read.high_watermark)
                                .last_stable_offset(Some(read.high_watermark))
                                .log_start_offset(Some(read.log_start))
                                .diverging_epoch(None)
                                .current_leader(None)
                                .snapshot_id(None)
                                .aborted_transactions(Some(Vec::new()))
                                .preferred_read_replica(Some(-1))
                                .records((!read.batches.is_empty()).then(|| Frame {
                                    batches: read.batches,
                                }))
                        }
                        Err(LogError::OutOfRange {
                            log_start,
                            high_watermark,
                            ..
                        }) => partition_error(
                            index,
                            ErrorCode::OffsetOutOfRange,
                            log_start,
                            high_watermark,
                        ),
                        Err(err) => {
                            debug!(topic = %name, partition = index, error = %err, "fetch failed");
                            partition_error(index, ErrorCode::KafkaStorageError, 0, 0)
                        }
                    }
                })
                .collect();
            FetchableTopicResponse::default()
                .topic(topic.request.topic.clone())
                .topic_id(
                    topic
                        .topic
                        .as_ref()
                        .map(|(_, id, _)| *id)
                        .or(topic.request.topic_id),
                )
                .partitions(Some(partitions))
        })
        .collect();
    let response = FetchResponse::default()
        .throttle_time_ms(Some(0))
        .error_code(Some(ErrorCode::None.into()))
        .session_id(Some(0))
        .node_endpoints(Some(Vec::new()))
        .responses(Some(responses));
    (response, found)
}

fn partition_error(
    index: i32,
    error: ErrorCode,
    log_start: i64,
    high_watermark: i64,
) -> PartitionData {
    PartitionData::default()
        .partition_index(index)
        .error_code(error.into())
        .high_watermark(high_watermark)
        .last_stable_offset(Some(high_watermark))
        .log_start_offset(Some(log_start))
        .diverging_epoch(None)
        .current_leader(None)
        .snapshot_id(None)
        .aborted_transactions(Some(Vec::new()))
        .preferred_read_replica(Some(-1))
        .records(None)
}
