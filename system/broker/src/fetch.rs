//! Fetch as a long poll that answers as soon as records arrive.
//!
//! tansu 0.6's Fetch handler reads the log once and then sleeps for the rest of the
//! request's `max_wait_ms` whether or not it found records, so every hop through the broker
//! took `fetch.wait.max.ms` (the services ran with 50 ms, which cost a saga of six hops about
//! 300 ms), and a consumer that asked to wait less polled storage more often. Here tansu's
//! handler is called with a zero wait (one read of the log), and when that read finds nothing
//! the request waits until a Produce to one of its partitions commits or its `max_wait_ms` ends,
//! then reads again. An idle consumer costs one read per `max_wait_ms`; a busy one is answered
//! within a few milliseconds of the produce.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex, PoisonError},
    time::Duration,
};

use futures::future::select_all;
use rama::{Context, Service};
use tansu_sans_io::{
    ApiKey, FetchRequest, FetchResponse, ProduceRequest, ProduceResponse, fetch_request::FetchTopic,
};
use tansu_storage::{FetchService, ProduceService, Storage, TopicId};
use tokio::sync::watch;
use tracing::debug;

/// Produce notifications per topic partition: a counter that every committed Produce to the
/// partition bumps, which waiting fetches watch.
#[derive(Debug, Default)]
pub struct Produced {
    partitions: Mutex<HashMap<(String, i32), watch::Sender<u64>>>,
    /// Topic names of topic ids (Fetch v13+ names topics by id, Produce by name).
    names: Mutex<HashMap<[u8; 16], String>>,
}

impl Produced {
    fn sender(&self, topic: &str, partition: i32) -> watch::Sender<u64> {
        self.partitions
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entry((topic.to_owned(), partition))
            .or_insert_with(|| watch::channel(0).0)
            .clone()
    }

    fn bump(&self, topic: &str, partition: i32) {
        self.sender(topic, partition)
            .send_modify(|count| *count = count.wrapping_add(1));
    }

    fn watch(&self, topic: &str, partition: i32) -> watch::Receiver<u64> {
        self.sender(topic, partition).subscribe()
    }

    async fn topic_name<S: Storage>(&self, storage: &S, topic: &FetchTopic) -> Option<String> {
        if let Some(name) = topic.topic.as_ref().filter(|name| !name.is_empty()) {
            return Some(name.clone());
        }
        let id = topic.topic_id?;
        if let Some(name) = self
            .names
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&id)
        {
            return Some(name.clone());
        }
        let metadata = storage
            .metadata(Some(&[TopicId::from(topic)]))
            .await
            .inspect_err(|err| debug!(error = %err, "cannot resolve a fetched topic id"))
            .ok()?;
        let name = metadata.topics().first()?.name.clone()?;
        self.names
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(id, name.clone());
        Some(name)
    }
}

/// Fetch: tansu's handler without its fixed wait (see the module docs).
#[derive(Debug, Clone)]
pub struct LongPollFetch {
    pub produced: Arc<Produced>,
}

impl<S: Storage> Service<S, FetchRequest> for LongPollFetch {
    type Response = FetchResponse;
    type Error = tansu_storage::Error;

    async fn serve(
        &self,
        ctx: Context<S>,
        req: FetchRequest,
    ) -> Result<Self::Response, Self::Error> {
        let max_wait = Duration::from_millis(u64::try_from(req.max_wait_ms).unwrap_or(0));
        let deadline = tokio::time::Instant::now() + max_wait;
        let mut watched = Vec::new();
        for topic in req.topics.as_deref().unwrap_or_default() {
            let Some(name) = self.produced.topic_name(ctx.state(), topic).await else {
                continue;
            };
            for partition in topic.partitions.as_deref().unwrap_or_default() {
                watched.push(self.produced.watch(&name, partition.partition));
            }
        }
        let once = req.max_wait_ms(0);
        loop {
            // Subscribed before reading: a produce that commits after the read still wakes us.
            for receiver in &mut watched {
                receiver.borrow_and_update();
            }
            let response = FetchService.serve(ctx.clone(), once.clone()).await?;
            if has_records(&response) || watched.is_empty() {
                return Ok(response);
            }
            let produced = select_all(watched.iter_mut().map(|rx| Box::pin(rx.changed())));
            tokio::select! {
                _ = produced => {}
                () = tokio::time::sleep_until(deadline) => return Ok(response),
            }
        }
    }
}

fn has_records(response: &FetchResponse) -> bool {
    response
        .responses
        .iter()
        .flatten()
        .flat_map(|topic| topic.partitions.iter().flatten())
        .any(|partition| {
            partition
                .records
                .as_ref()
                .is_some_and(|frame| !frame.batches.is_empty())
        })
}

/// Produce: tansu's handler, then a wake-up for the fetches waiting on the partitions written.
#[derive(Debug, Clone)]
pub struct NotifyingProduce {
    pub produced: Arc<Produced>,
}

impl<S: Storage> Service<S, ProduceRequest> for NotifyingProduce {
    type Response = ProduceResponse;
    type Error = tansu_storage::Error;

    async fn serve(
        &self,
        ctx: Context<S>,
        req: ProduceRequest,
    ) -> Result<Self::Response, Self::Error> {
        let written: Vec<(String, i32)> = req
            .topic_data
            .iter()
            .flatten()
            .flat_map(|topic| {
                topic
                    .partition_data
                    .iter()
                    .flatten()
                    .map(|partition| (topic.name.clone(), partition.index))
            })
            .collect();
        let response = ProduceService.serve(ctx, req).await?;
        for (topic, partition) in &written {
            self.produced.bump(topic, *partition);
        }
        Ok(response)
    }
}

impl ApiKey for LongPollFetch {
    const KEY: i16 = FetchRequest::KEY;
}

impl ApiKey for NotifyingProduce {
    const KEY: i16 = ProduceRequest::KEY;
}
