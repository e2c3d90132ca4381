//! The broker's consumer-group coordinator, in place of tansu's.
//!
//! tansu 0.6's coordinator ([`tansu_broker::coordinator::group::administrator::Controller`])
//! never evicts a member that dies without leaving: a SIGKILLed group leader kept its
//! partitions forever, so the harness ran one group per instance and process start instead of
//! one per service. It also pauses every follower's JoinGroup
//! for 3 s, and its joins, which retry against storage with optimistic versions, stalled the
//! whole broker under the join storms that instance kills and link faults set off.
//!
//! This coordinator implements tansu's own [`Coordinator`] trait, so tansu's request routing
//! calls it, and follows Kafka's classic group protocol ([`group`]): joins are parked until
//! every member has rejoined or the rebalance timeout passed, followers' SyncGroups until the
//! leader's assignment arrives, and a background task evicts members whose session timed out.
//! Membership lives in memory, as in Kafka's coordinator cache: after a broker restart the
//! members' heartbeats get UNKNOWN_MEMBER_ID and they join again. Committed offsets are
//! tansu's storage's, so they survive restarts.
//!
//! Kafka's answers that this coordinator gives, per request:
//!
//! | request | unknown member | stale generation | rebalancing |
//! |---|---|---|---|
//! | JoinGroup | UNKNOWN_MEMBER_ID (empty id: MEMBER_ID_REQUIRED with a new id) | n/a | parked |
//! | SyncGroup | UNKNOWN_MEMBER_ID | ILLEGAL_GENERATION | REBALANCE_IN_PROGRESS; follower parked for the leader |
//! | Heartbeat | UNKNOWN_MEMBER_ID | ILLEGAL_GENERATION | REBALANCE_IN_PROGRESS |
//! | OffsetCommit | UNKNOWN_MEMBER_ID | ILLEGAL_GENERATION | applied, except REBALANCE_IN_PROGRESS while awaiting the assignment |

mod group;
#[cfg(test)]
mod tests;

use std::{
    collections::{BTreeSet, HashMap},
    sync::{Arc, Mutex, MutexGuard, PoisonError, Weak},
    time::Duration as StdDuration,
};

use async_trait::async_trait;
use bytes::Bytes;
use tansu_broker::{
    Result,
    coordinator::group::{Coordinator, OffsetCommit},
};
use tansu_sans_io::{
    Body, DescribeGroupsResponse, ErrorCode, LeaveGroupResponse, ListGroupsResponse,
    OffsetCommitResponse, OffsetFetchResponse,
    describe_groups_response::DescribedGroup,
    join_group_request::JoinGroupRequestProtocol,
    leave_group_request::MemberIdentity,
    leave_group_response::MemberResponse,
    offset_commit_request::OffsetCommitRequestTopic,
    offset_commit_response::{OffsetCommitResponsePartition, OffsetCommitResponseTopic},
    offset_fetch_request::{OffsetFetchRequestGroup, OffsetFetchRequestTopic},
    offset_fetch_response::{
        OffsetFetchResponseGroup, OffsetFetchResponsePartition, OffsetFetchResponsePartitions,
        OffsetFetchResponseTopic, OffsetFetchResponseTopics,
    },
    sync_group_request::SyncGroupRequestAssignment,
};
use tansu_storage::{OffsetCommitRequest as StoredOffset, Storage, Topition};
use tokio::time::{Duration, Instant};
use tracing::{debug, warn};

use self::group::{Group, Join, Reply};

/// How often the reaper looks for expired sessions and overdue rebalances, at most: it
/// sleeps until the earliest deadline, but never longer than this (new groups appear).
const REAP_EVERY: Duration = Duration::from_millis(100);

/// The consumer-group coordinator: cheap to clone (tansu clones it per connection).
#[derive(Clone)]
pub struct GroupCoordinator<S> {
    groups: Arc<Mutex<HashMap<String, Group>>>,
    storage: S,
}

impl<S> std::fmt::Debug for GroupCoordinator<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GroupCoordinator").finish_non_exhaustive()
    }
}

impl<S: Storage> GroupCoordinator<S> {
    /// A coordinator storing committed offsets in `storage`. Spawns the task that evicts
    /// members whose session timed out; it ends when the last clone is dropped.
    pub fn new(storage: S) -> Self {
        let coordinator = Self {
            groups: Arc::default(),
            storage,
        };
        tokio::spawn(reap(Arc::downgrade(&coordinator.groups)));
        coordinator
    }

    fn groups(&self) -> MutexGuard<'_, HashMap<String, Group>> {
        // The map is only ever changed by whole, panic-free transitions.
        self.groups.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// ListGroups: every group this coordinator has seen since the broker started.
    pub fn list_groups(&self, states: Option<&[String]>) -> ListGroupsResponse {
        let groups = self.groups();
        let mut listed: Vec<_> = groups
            .values()
            .filter(|group| {
                states.is_none_or(|states| {
                    states.is_empty()
                        || states
                            .iter()
                            .any(|state| state.eq_ignore_ascii_case(group.state().name()))
                })
            })
            .map(Group::listed)
            .collect();
        listed.sort_by(|a, b| a.group_id.cmp(&b.group_id));
        ListGroupsResponse::default()
            .throttle_time_ms(Some(0))
            .error_code(ErrorCode::None.into())
            .groups(Some(listed))
    }

    /// DescribeGroups: a group never seen is reported `Dead` with no members, as Kafka does.
    pub fn describe_groups(&self, ids: &[String]) -> DescribeGroupsResponse {
        let groups = self.groups();
        let described = ids
            .iter()
            .map(|id| match groups.get(id) {
                Some(group) => group.described(),
                None => DescribedGroup::default()
                    .error_code(ErrorCode::None.into())
                    .group_id(id.clone())
                    .group_state("Dead".into())
                    .protocol_type(String::new())
                    .protocol_data(String::new())
                    .members(Some(Vec::new()))
                    .authorized_operations(Some(i32::MIN)),
            })
            .collect();
        DescribeGroupsResponse::default()
            .throttle_time_ms(Some(0))
            .groups(Some(described))
    }
}

/// Evicts expired members until the coordinator is gone.
async fn reap(groups: Weak<Mutex<HashMap<String, Group>>>) {
    loop {
        let next = {
            let Some(groups) = groups.upgrade() else {
                return;
            };
            let mut groups = groups.lock().unwrap_or_else(PoisonError::into_inner);
            let now = Instant::now();
            groups
                .values_mut()
                .filter_map(|group| {
                    group.expire(now);
                    group.next_deadline()
                })
                .min()
        };
        let cap = Instant::now() + REAP_EVERY;
        tokio::time::sleep_until(next.map_or(cap, |next| next.min(cap))).await;
    }
}

fn millis(ms: i32) -> Duration {
    Duration::from_millis(u64::try_from(ms).unwrap_or(0))
}

async fn settle(reply: Reply, fallback: impl FnOnce() -> Body) -> Body {
    match reply {
        Reply::Now(body) => body,
        // A parked request is always answered before its sender is dropped; the fallback
        // covers a coordinator dropped mid-request.
        Reply::Later(parked) => parked.await.unwrap_or_else(|_| fallback()),
    }
}

#[async_trait]
impl<S: Storage> Coordinator for GroupCoordinator<S> {
    async fn join(
        &mut self,
        client_id: Option<&str>,
        group_id: &str,
        session_timeout_ms: i32,
        rebalance_timeout_ms: Option<i32>,
        member_id: &str,
        group_instance_id: Option<&str>,
        protocol_type: &str,
        protocols: Option<&[JoinGroupRequestProtocol]>,
        _reason: Option<&str>,
    ) -> Result<Body> {
        let join = Join {
            client_id: client_id.unwrap_or_default(),
            member_id,
            group_instance_id,
            session_timeout: millis(session_timeout_ms),
            // JoinGroup v0 has no rebalance timeout: Kafka uses the session timeout.
            rebalance_timeout: millis(rebalance_timeout_ms.unwrap_or(session_timeout_ms)),
            protocol_type,
            protocols: protocols
                .unwrap_or_default()
                .iter()
                .map(|protocol| (protocol.name.clone(), protocol.metadata.clone()))
                .collect(),
        };
        let reply = self
            .groups()
            .entry(group_id.to_owned())
            .or_insert_with(|| Group::new(group_id))
            .join(Instant::now(), join);
        let member = member_id.to_owned();
        Ok(settle(reply, move || {
            group::join_error(ErrorCode::CoordinatorNotAvailable, &member)
        })
        .await)
    }

    async fn sync(
        &mut self,
        group_id: &str,
        generation_id: i32,
        member_id: &str,
        _group_instance_id: Option<&str>,
        _protocol_type: Option<&str>,
        _protocol_name: Option<&str>,
        assignments: Option<&[SyncGroupRequestAssignment]>,
    ) -> Result<Body> {
        let assignments: Vec<(String, Bytes)> = assignments
            .unwrap_or_default()
            .iter()
            .map(|given| (given.member_id.clone(), given.assignment.clone()))
            .collect();
        let reply = match self.groups().get_mut(group_id) {
            Some(group) => group.sync(Instant::now(), generation_id, member_id, &assignments),
            None => Reply::Now(group::sync_error(ErrorCode::UnknownMemberId)),
        };
        Ok(settle(reply, || {
            group::sync_error(ErrorCode::CoordinatorNotAvailable)
        })
        .await)
    }

    async fn heartbeat(
        &mut self,
        group_id: &str,
        generation_id: i32,
        member_id: &str,
        _group_instance_id: Option<&str>,
    ) -> Result<Body> {
        Ok(match self.groups().get_mut(group_id) {
            Some(group) => group.heartbeat(Instant::now(), generation_id, member_id),
            None => group::heartbeat_error(ErrorCode::UnknownMemberId),
        })
    }

    async fn leave(
        &mut self,
        group_id: &str,
        member_id: Option<&str>,
        members: Option<&[MemberIdentity]>,
    ) -> Result<Body> {
        let response = self.leave_members(group_id, member_id, members);
        Ok(response.into())
    }

    async fn offset_commit(&mut self, detail: OffsetCommit<'_>) -> Result<Body> {
        let topics = detail.topics.unwrap_or_default();
        let refused = match self.groups().get_mut(detail.group_id) {
            Some(group) => group.check_commit(
                Instant::now(),
                detail.generation_id_or_member_epoch,
                detail.member_id,
            ),
            // A member or generation named for a group this coordinator does not know.
            None => (detail.member_id.is_some_and(|id| !id.is_empty())
                || detail.generation_id_or_member_epoch.is_some_and(|g| g >= 0))
            .then_some(ErrorCode::UnknownMemberId),
        };
        if let Some(error) = refused {
            debug!(group = detail.group_id, ?error, "offset commit refused");
            return Ok(commit_response(topics, |_, _| error).into());
        }
        let mut offsets = Vec::new();
        for topic in topics {
            for partition in topic.partitions.as_deref().unwrap_or_default() {
                offsets.push((
                    Topition::new(topic.name.clone(), partition.partition_index),
                    StoredOffset::try_from(partition)?,
                ));
            }
        }
        let retention = detail
            .retention_time_ms
            .and_then(|ms| u64::try_from(ms).ok())
            .map(StdDuration::from_millis);
        let stored = self
            .storage
            .offset_commit(detail.group_id, retention, &offsets)
            .await;
        Ok(match stored {
            Ok(results) => {
                let errors: HashMap<(String, i32), ErrorCode> = results
                    .into_iter()
                    .map(|(topition, error)| {
                        ((topition.topic().to_owned(), topition.partition()), error)
                    })
                    .collect();
                commit_response(topics, |topic, partition| {
                    errors
                        .get(&(topic.to_owned(), partition))
                        .copied()
                        .unwrap_or(ErrorCode::None)
                })
            }
            Err(err) => {
                warn!(group = detail.group_id, error = %err, "cannot store committed offsets");
                commit_response(topics, |_, _| ErrorCode::CoordinatorLoadInProgress)
            }
        }
        .into())
    }

    async fn offset_fetch(
        &mut self,
        group_id: Option<&str>,
        topics: Option<&[OffsetFetchRequestTopic]>,
        groups: Option<&[OffsetFetchRequestGroup]>,
        require_stable: Option<bool>,
    ) -> Result<Body> {
        // v0-7 ask for one group's topics, v8+ for several groups at once.
        let topics = match topics {
            Some(topics) => {
                let wanted = topitions(
                    topics
                        .iter()
                        .map(|topic| (topic.name.as_str(), topic.partition_indexes.as_deref())),
                );
                let offsets = self
                    .storage
                    .offset_fetch(group_id, &wanted, require_stable)
                    .await?;
                Some(by_topic(&offsets, |name, partitions| {
                    OffsetFetchResponseTopic::default()
                        .name(name.to_owned())
                        .partitions(Some(
                            partitions
                                .iter()
                                .map(|(partition, offset)| {
                                    OffsetFetchResponsePartition::default()
                                        .partition_index(*partition)
                                        .committed_offset(*offset)
                                        .committed_leader_epoch(Some(-1))
                                        .metadata(Some(String::new()))
                                        .error_code(ErrorCode::None.into())
                                })
                                .collect(),
                        ))
                }))
            }
            None => None,
        };
        let groups = match groups {
            Some(groups) => {
                let mut answered = Vec::with_capacity(groups.len());
                for group in groups {
                    let offsets = match &group.topics {
                        Some(topics) => {
                            let wanted = topitions(topics.iter().map(|topic| {
                                (topic.name.as_str(), topic.partition_indexes.as_deref())
                            }));
                            self.storage
                                .offset_fetch(Some(&group.group_id), &wanted, require_stable)
                                .await?
                        }
                        None => {
                            self.storage
                                .committed_offset_topitions(&group.group_id)
                                .await?
                        }
                    };
                    answered.push(
                        OffsetFetchResponseGroup::default()
                            .group_id(group.group_id.clone())
                            .error_code(ErrorCode::None.into())
                            .topics(Some(by_topic(&offsets, |name, partitions| {
                                OffsetFetchResponseTopics::default()
                                    .name(name.to_owned())
                                    .partitions(Some(
                                        partitions
                                            .iter()
                                            .map(|(partition, offset)| {
                                                OffsetFetchResponsePartitions::default()
                                                    .partition_index(*partition)
                                                    .committed_offset(*offset)
                                                    .committed_leader_epoch(-1)
                                                    .metadata(None)
                                                    .error_code(ErrorCode::None.into())
                                            })
                                            .collect(),
                                    ))
                            }))),
                    );
                }
                Some(answered)
            }
            None => None,
        };
        Ok(OffsetFetchResponse::default()
            .throttle_time_ms(Some(0))
            .topics(topics)
            .error_code(Some(ErrorCode::None.into()))
            .groups(groups)
            .into())
    }
}

impl<S: Storage> GroupCoordinator<S> {
    fn leave_members(
        &self,
        group_id: &str,
        member_id: Option<&str>,
        members: Option<&[MemberIdentity]>,
    ) -> LeaveGroupResponse {
        let now = Instant::now();
        let mut groups = self.groups();
        let mut group = groups.get_mut(group_id);
        let mut leave = |member_id: &str, instance: Option<&str>| match group.as_deref_mut() {
            Some(group) => group.leave(now, member_id, instance),
            None => ErrorCode::UnknownMemberId,
        };
        match (member_id, members) {
            // v0-2: one member, its error at the top level.
            (Some(member_id), _) => {
                let error = leave(member_id, None);
                LeaveGroupResponse::default()
                    .throttle_time_ms(Some(0))
                    .error_code(error.into())
                    .members(None)
            }
            // v3+: a batch, an error per member.
            (None, members) => {
                let answered = members
                    .unwrap_or_default()
                    .iter()
                    .map(|member| {
                        let error = leave(&member.member_id, member.group_instance_id.as_deref());
                        MemberResponse::default()
                            .member_id(member.member_id.clone())
                            .group_instance_id(member.group_instance_id.clone())
                            .error_code(error.into())
                    })
                    .collect();
                LeaveGroupResponse::default()
                    .throttle_time_ms(Some(0))
                    .error_code(ErrorCode::None.into())
                    .members(Some(answered))
            }
        }
    }
}

/// The topic partitions an OffsetFetch asks for.
fn topitions<'a>(topics: impl Iterator<Item = (&'a str, Option<&'a [i32]>)>) -> Vec<Topition> {
    topics
        .flat_map(|(name, partitions)| {
            partitions
                .unwrap_or_default()
                .iter()
                .map(move |partition| Topition::new(name.to_owned(), *partition))
        })
        .collect()
}

/// Groups committed offsets by topic, topics in name order.
fn by_topic<T>(
    offsets: &std::collections::BTreeMap<Topition, i64>,
    topic: impl Fn(&str, &[(i32, i64)]) -> T,
) -> Vec<T> {
    let names: BTreeSet<&str> = offsets.keys().map(Topition::topic).collect();
    names
        .into_iter()
        .map(|name| {
            let partitions: Vec<(i32, i64)> = offsets
                .iter()
                .filter(|(topition, _)| topition.topic() == name)
                .map(|(topition, offset)| (topition.partition(), *offset))
                .collect();
            topic(name, &partitions)
        })
        .collect()
}

/// An OffsetCommit response with `error(topic, partition)` for every partition asked for.
fn commit_response(
    topics: &[OffsetCommitRequestTopic],
    error: impl Fn(&str, i32) -> ErrorCode,
) -> OffsetCommitResponse {
    OffsetCommitResponse::default()
        .throttle_time_ms(Some(0))
        .topics(Some(
            topics
                .iter()
                .map(|topic| {
                    OffsetCommitResponseTopic::default()
                        .name(topic.name.clone())
                        .partitions(Some(
                            topic
                                .partitions
                                .as_deref()
                                .unwrap_or_default()
                                .iter()
                                .map(|partition| {
                                    OffsetCommitResponsePartition::default()
                                        .partition_index(partition.partition_index)
                                        .error_code(
                                            error(&topic.name, partition.partition_index).into(),
                                        )
                                })
                                .collect(),
                        ))
                })
                .collect(),
        ))
}
