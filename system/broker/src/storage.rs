//! The broker's storage: this crate's [`Log`] for records, tansu's SQLite storage for the rest.
//!
//! [`LogStorage`] implements tansu's [`Storage`] trait, so tansu's request handlers use it
//! unchanged. Produce, fetch, offsets of the log (`offset_stage`, `list_offsets`) go to the
//! [`Log`]; topics, committed consumer offsets, configurations and everything else go to the
//! wrapped storage. Metadata is asked of the wrapped storage once per set of topics and kept
//! until a topic is created or deleted: tansu's handlers ask for it on every request, and each
//! asking was several SQL queries.

use std::{
    collections::{BTreeMap, HashMap},
    sync::{Arc, Mutex, PoisonError},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use async_trait::async_trait;
use tansu_sans_io::{
    ConfigResource, ErrorCode, IsolationLevel, ListOffset, ScramMechanism,
    create_topics_request::CreatableTopic, delete_groups_response::DeletableGroupResult,
    delete_records_request::DeleteRecordsTopic, delete_records_response::DeleteRecordsTopicResult,
    describe_cluster_response::DescribeClusterBroker,
    describe_configs_response::DescribeConfigsResult,
    describe_topic_partitions_response::DescribeTopicPartitionsResponseTopic,
    incremental_alter_configs_request::AlterConfigsResource,
    incremental_alter_configs_response::AlterConfigsResourceResponse,
    list_groups_response::ListedGroup, record::deflated::Batch,
    txn_offset_commit_response::TxnOffsetCommitResponseTopic,
};
use tansu_storage::{
    BrokerRegistrationRequest, Error, GroupDetail, ListOffsetResponse, MetadataResponse,
    NamedGroupDetail, OffsetCommitRequest, OffsetStage, ProducerIdResponse, Result,
    ScramCredential, Storage, TopicId, Topition, TxnAddPartitionsRequest, TxnAddPartitionsResponse,
    TxnOffsetCommitRequest, UpdateError, Version,
};
use url::Url;
use uuid::Uuid;

use crate::log::{Log, LogError};

/// Records in the [`Log`], the rest in `S`. Cheap to clone.
#[derive(Clone)]
pub struct LogStorage<S> {
    inner: S,
    log: Arc<Log>,
    metadata: Arc<Mutex<HashMap<Option<Vec<TopicId>>, MetadataResponse>>>,
}

impl<S> std::fmt::Debug for LogStorage<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogStorage")
            .field("log", &self.log)
            .finish()
    }
}

impl<S: Storage> LogStorage<S> {
    pub fn new(inner: S, log: Log) -> Self {
        Self {
            inner,
            log: Arc::new(log),
            metadata: Arc::default(),
        }
    }

    /// The log, which the fetch long poll reads directly.
    pub fn log(&self) -> &Log {
        &self.log
    }

    fn forget_metadata(&self) {
        self.metadata
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clear();
    }

    /// The name of a topic and its partition count, if it exists.
    pub async fn topic(&self, topic: &TopicId) -> Result<Option<(String, [u8; 16], i32)>> {
        let metadata = self.metadata(Some(std::slice::from_ref(topic))).await?;
        Ok(metadata.topics().first().and_then(|found| {
            (found.error_code == i16::from(ErrorCode::None)).then(|| {
                (
                    found.name.clone().unwrap_or_default(),
                    found.topic_id.unwrap_or_default(),
                    found
                        .partitions
                        .as_ref()
                        .map_or(0, |p| i32::try_from(p.len()).unwrap_or(i32::MAX)),
                )
            })
        }))
    }
}

fn log_error(err: LogError) -> Error {
    match err {
        LogError::OutOfRange { .. } => Error::Api(ErrorCode::OffsetOutOfRange),
        other => Error::Message(other.to_string()),
    }
}

/// tansu's `OffsetStage` has no public constructor; it is (de)serializable, which is how it is
/// made here.
fn offset_stage(log_start: i64, high_watermark: i64) -> Result<OffsetStage> {
    serde_json::from_value(serde_json::json!({
        "last_stable": high_watermark,
        "high_watermark": high_watermark,
        "log_start": log_start,
    }))
    .map_err(|e| Error::Message(format!("offset stage: {e}")))
}

#[async_trait]
impl<S: Storage> Storage for LogStorage<S> {
    async fn register_broker(&self, broker_registration: BrokerRegistrationRequest) -> Result<()> {
        self.inner.register_broker(broker_registration).await
    }

    async fn create_topic(&self, topic: CreatableTopic, validate_only: bool) -> Result<Uuid> {
        let created = self.inner.create_topic(topic, validate_only).await;
        self.forget_metadata();
        created
    }

    async fn incremental_alter_resource(
        &self,
        resource: AlterConfigsResource,
    ) -> Result<AlterConfigsResourceResponse> {
        self.inner.incremental_alter_resource(resource).await
    }

    async fn delete_records(
        &self,
        topics: &[DeleteRecordsTopic],
    ) -> Result<Vec<DeleteRecordsTopicResult>> {
        self.inner.delete_records(topics).await
    }

    async fn delete_topic(&self, topic: &TopicId) -> Result<ErrorCode> {
        let name = self.topic(topic).await?.map(|(name, ..)| name);
        let deleted = self.inner.delete_topic(topic).await;
        if let Some(name) = name
            && matches!(deleted, Ok(ErrorCode::None))
        {
            self.log.remove_topic(&name);
        }
        self.forget_metadata();
        deleted
    }

    async fn brokers(&self) -> Result<Vec<DescribeClusterBroker>> {
        self.inner.brokers().await
    }

    async fn produce(
        &self,
        transaction_id: Option<&str>,
        topition: &Topition,
        batch: Batch,
    ) -> Result<i64> {
        if transaction_id.is_some() {
            return Err(Error::Api(ErrorCode::UnsupportedVersion));
        }
        match self
            .topic(&TopicId::Name(topition.topic().to_owned()))
            .await?
        {
            Some((_, _, partitions)) if (0..partitions).contains(&topition.partition()) => self
                .log
                .append(topition.topic(), topition.partition(), batch)
                .map_err(log_error),
            _ => Err(Error::Api(ErrorCode::UnknownTopicOrPartition)),
        }
    }

    async fn fetch(
        &self,
        topition: &'_ Topition,
        offset: i64,
        _min_bytes: u32,
        max_bytes: u32,
        _isolation: IsolationLevel,
    ) -> Result<Vec<Batch>> {
        self.log
            .read(
                topition.topic(),
                topition.partition(),
                offset,
                u64::from(max_bytes),
            )
            .map(|read| read.batches)
            .map_err(log_error)
    }

    async fn offset_stage(&self, topition: &Topition) -> Result<OffsetStage> {
        let (log_start, high_watermark) = self.log.stage(topition.topic(), topition.partition());
        offset_stage(log_start, high_watermark)
    }

    async fn list_offsets(
        &self,
        _isolation_level: IsolationLevel,
        offsets: &[(Topition, ListOffset)],
    ) -> Result<Vec<(Topition, ListOffsetResponse)>> {
        Ok(offsets
            .iter()
            .map(|(topition, asked)| {
                let (start, end) = self.log.stage(topition.topic(), topition.partition());
                let (offset, timestamp) = match asked {
                    ListOffset::Earliest => (start, None),
                    ListOffset::Latest => (end, None),
                    ListOffset::Timestamp(at) => {
                        let ms = at
                            .duration_since(UNIX_EPOCH)
                            .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
                        match self.log.offset_for_timestamp(
                            topition.topic(),
                            topition.partition(),
                            ms,
                        ) {
                            Some((offset, found)) => (
                                offset,
                                Some(
                                    UNIX_EPOCH
                                        + Duration::from_millis(u64::try_from(found).unwrap_or(0)),
                                ),
                            ),
                            None => (end, None),
                        }
                    }
                };
                (
                    topition.clone(),
                    ListOffsetResponse {
                        error_code: ErrorCode::None,
                        timestamp,
                        offset: Some(offset),
                    },
                )
            })
            .collect())
    }

    async fn offset_commit(
        &self,
        group_id: &str,
        retention_time_ms: Option<Duration>,
        offsets: &[(Topition, OffsetCommitRequest)],
    ) -> Result<Vec<(Topition, ErrorCode)>> {
        self.inner
            .offset_commit(group_id, retention_time_ms, offsets)
            .await
    }

    async fn offset_fetch(
        &self,
        group_id: Option<&str>,
        topics: &[Topition],
        require_stable: Option<bool>,
    ) -> Result<BTreeMap<Topition, i64>> {
        self.inner
            .offset_fetch(group_id, topics, require_stable)
            .await
    }

    async fn committed_offset_topitions(&self, group_id: &str) -> Result<BTreeMap<Topition, i64>> {
        self.inner.committed_offset_topitions(group_id).await
    }

    async fn metadata(&self, topics: Option<&[TopicId]>) -> Result<MetadataResponse> {
        let key = topics.map(<[TopicId]>::to_vec);
        if let Some(cached) = self
            .metadata
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&key)
        {
            return Ok(cached.clone());
        }
        let fresh = self.inner.metadata(topics).await?;
        // Unknown topics are not kept: they may be created by a later request.
        let all_known = fresh
            .topics()
            .iter()
            .all(|topic| topic.error_code == i16::from(ErrorCode::None));
        if all_known {
            self.metadata
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .insert(key, fresh.clone());
        }
        Ok(fresh)
    }

    async fn upsert_user_scram_credential(
        &self,
        user: &str,
        mechanism: ScramMechanism,
        credential: ScramCredential,
    ) -> Result<()> {
        self.inner
            .upsert_user_scram_credential(user, mechanism, credential)
            .await
    }

    async fn delete_user_scram_credential(
        &self,
        user: &str,
        mechanism: ScramMechanism,
    ) -> Result<()> {
        self.inner
            .delete_user_scram_credential(user, mechanism)
            .await
    }

    async fn user_scram_credential(
        &self,
        user: &str,
        mechanism: ScramMechanism,
    ) -> Result<Option<ScramCredential>> {
        self.inner.user_scram_credential(user, mechanism).await
    }

    async fn describe_config(
        &self,
        name: &str,
        resource: ConfigResource,
        keys: Option<&[String]>,
    ) -> Result<DescribeConfigsResult> {
        self.inner.describe_config(name, resource, keys).await
    }

    async fn list_groups(&self, states_filter: Option<&[String]>) -> Result<Vec<ListedGroup>> {
        self.inner.list_groups(states_filter).await
    }

    async fn delete_groups(
        &self,
        group_ids: Option<&[String]>,
    ) -> Result<Vec<DeletableGroupResult>> {
        self.inner.delete_groups(group_ids).await
    }

    async fn describe_groups(
        &self,
        group_ids: Option<&[String]>,
        include_authorized_operations: bool,
    ) -> Result<Vec<NamedGroupDetail>> {
        self.inner
            .describe_groups(group_ids, include_authorized_operations)
            .await
    }

    async fn describe_topic_partitions(
        &self,
        topics: Option<&[TopicId]>,
        partition_limit: i32,
        cursor: Option<Topition>,
    ) -> Result<Vec<DescribeTopicPartitionsResponseTopic>> {
        self.inner
            .describe_topic_partitions(topics, partition_limit, cursor)
            .await
    }

    async fn update_group(
        &self,
        group_id: &str,
        detail: GroupDetail,
        version: Option<Version>,
    ) -> Result<Version, UpdateError<GroupDetail>> {
        self.inner.update_group(group_id, detail, version).await
    }

    async fn init_producer(
        &self,
        transaction_id: Option<&str>,
        transaction_timeout_ms: i32,
        producer_id: Option<i64>,
        producer_epoch: Option<i16>,
    ) -> Result<ProducerIdResponse> {
        self.inner
            .init_producer(
                transaction_id,
                transaction_timeout_ms,
                producer_id,
                producer_epoch,
            )
            .await
    }

    async fn txn_add_offsets(
        &self,
        transaction_id: &str,
        producer_id: i64,
        producer_epoch: i16,
        group_id: &str,
    ) -> Result<ErrorCode> {
        self.inner
            .txn_add_offsets(transaction_id, producer_id, producer_epoch, group_id)
            .await
    }

    async fn txn_add_partitions(
        &self,
        partitions: TxnAddPartitionsRequest,
    ) -> Result<TxnAddPartitionsResponse> {
        self.inner.txn_add_partitions(partitions).await
    }

    async fn txn_offset_commit(
        &self,
        offsets: TxnOffsetCommitRequest,
    ) -> Result<Vec<TxnOffsetCommitResponseTopic>> {
        self.inner.txn_offset_commit(offsets).await
    }

    async fn txn_end(
        &self,
        transaction_id: &str,
        producer_id: i64,
        producer_epoch: i16,
        committed: bool,
    ) -> Result<ErrorCode> {
        self.inner
            .txn_end(transaction_id, producer_id, producer_epoch, committed)
            .await
    }

    async fn maintain(&self, now: SystemTime) -> Result<()> {
        self.inner.maintain(now).await
    }

    async fn cluster_id(&self) -> Result<String> {
        self.inner.cluster_id().await
    }

    async fn node(&self) -> Result<i32> {
        self.inner.node().await
    }

    async fn advertised_listener(&self) -> Result<Url> {
        self.inner.advertised_listener().await
    }

    async fn ping(&self) -> Result<()> {
        self.inner.ping().await
    }
}
