//! One consumer group's membership: the classic (pre-KIP-848) rebalance protocol as Kafka's
//! own `GroupCoordinator` runs it, without I/O, so every transition can be tested with a
//! clock the test moves.
//!
//! States, as Kafka names them:
//!
//! ```text
//!   Empty ──join──► PreparingRebalance ──all members rejoined, or the rebalance
//!     ▲                    ▲     │          deadline passed (stragglers removed)──┐
//!     │ last member        │     ▼                                                │
//!     │ gone           member joins, leaves, changes     CompletingRebalance ◄────┘
//!     │                its subscription, or misses          │ leader's SyncGroup
//!     └──────────────── its session timeout ◄────────── Stable ◄┘
//! ```
//!
//! A JoinGroup in `PreparingRebalance` is parked until the rebalance completes, a follower's
//! SyncGroup in `CompletingRebalance` until the leader sends the assignment: the caller gets
//! a [`Reply::Later`] to await. A member that stops heartbeating for its session timeout is
//! evicted by [`Group::expire`] (the reason this coordinator exists: tansu 0.6's never evicts a
//! member that died without leaving, so its partitions were never consumed again).

use std::collections::{BTreeMap, HashMap};

use bytes::Bytes;
use tansu_sans_io::{
    Body, ErrorCode, HeartbeatResponse, JoinGroupResponse, SyncGroupResponse,
    describe_groups_response::{DescribedGroup, DescribedGroupMember},
    join_group_response::JoinGroupResponseMember,
    list_groups_response::ListedGroup,
};
use tokio::{
    sync::oneshot,
    time::{Duration, Instant},
};
use tracing::info;
use uuid::Uuid;

/// A response now, or one to await (a parked JoinGroup or SyncGroup).
#[derive(Debug)]
pub(crate) enum Reply {
    Now(Body),
    Later(oneshot::Receiver<Body>),
}

/// Kafka's group states, as ListGroups and DescribeGroups name them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum State {
    Empty,
    PreparingRebalance,
    CompletingRebalance,
    Stable,
}

impl State {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Self::Empty => "Empty",
            Self::PreparingRebalance => "PreparingRebalance",
            Self::CompletingRebalance => "CompletingRebalance",
            Self::Stable => "Stable",
        }
    }
}

/// The fields of a JoinGroup request the coordinator uses.
#[derive(Debug, Clone)]
pub(crate) struct Join<'a> {
    pub client_id: &'a str,
    pub member_id: &'a str,
    pub group_instance_id: Option<&'a str>,
    pub session_timeout: Duration,
    pub rebalance_timeout: Duration,
    pub protocol_type: &'a str,
    /// (name, metadata) in the member's order of preference.
    pub protocols: Vec<(String, Bytes)>,
}

#[derive(Debug)]
struct Member {
    instance_id: Option<String>,
    client_id: String,
    session_timeout: Duration,
    rebalance_timeout: Duration,
    protocols: Vec<(String, Bytes)>,
    assignment: Bytes,
    /// When the member is evicted unless it is heard from again.
    expires: Instant,
    /// Its parked JoinGroup, while a rebalance waits for it.
    joining: Option<oneshot::Sender<Body>>,
    /// Its parked SyncGroup, while a follower waits for the leader's assignment.
    syncing: Option<oneshot::Sender<Body>>,
    /// Order of arrival: the first member to join a generation leads it if the leader left.
    joined: u64,
}

impl Member {
    fn metadata(&self, protocol: &str) -> Bytes {
        self.protocols
            .iter()
            .find(|(name, _)| name == protocol)
            .map(|(_, metadata)| metadata.clone())
            .unwrap_or_default()
    }

    fn supports(&self, protocol: &str) -> bool {
        self.protocols.iter().any(|(name, _)| name == protocol)
    }

    fn answer_join(&mut self, body: Body) {
        if let Some(parked) = self.joining.take() {
            // The request's connection may be gone; nobody is left to tell.
            let _ = parked.send(body);
        }
    }

    fn answer_sync(&mut self, body: Body) {
        if let Some(parked) = self.syncing.take() {
            let _ = parked.send(body);
        }
    }
}

/// One group's membership and generation.
#[derive(Debug)]
pub(crate) struct Group {
    id: String,
    state: State,
    generation: i32,
    protocol_type: Option<String>,
    /// The protocol (assignor) chosen for the current generation.
    protocol: Option<String>,
    leader: Option<String>,
    members: BTreeMap<String, Member>,
    /// Member ids handed out with MEMBER_ID_REQUIRED and not joined yet, with their expiry.
    pending: HashMap<String, Instant>,
    rebalance_deadline: Option<Instant>,
    arrivals: u64,
}

impl Group {
    pub(crate) fn new(id: &str) -> Self {
        Self {
            id: id.to_owned(),
            state: State::Empty,
            generation: 0,
            protocol_type: None,
            protocol: None,
            leader: None,
            members: BTreeMap::new(),
            pending: HashMap::new(),
            rebalance_deadline: None,
            arrivals: 0,
        }
    }

    pub(crate) fn state(&self) -> State {
        self.state
    }

    #[cfg(test)]
    pub(crate) fn has_member(&self, member_id: &str) -> bool {
        self.members.contains_key(member_id)
    }

    #[cfg(test)]
    pub(crate) fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    /// JoinGroup.
    pub(crate) fn join(&mut self, now: Instant, join: Join<'_>) -> Reply {
        if join.protocols.is_empty() || join.protocol_type.is_empty() {
            return Reply::Now(self.join_error(ErrorCode::InconsistentGroupProtocol, ""));
        }
        if !self.members.is_empty()
            && (self.protocol_type.as_deref() != Some(join.protocol_type)
                || !join.protocols.iter().any(|(name, _)| {
                    self.members
                        .iter()
                        .filter(|(id, _)| id.as_str() != join.member_id)
                        .all(|(_, member)| member.supports(name))
                }))
        {
            return Reply::Now(self.join_error(ErrorCode::InconsistentGroupProtocol, ""));
        }

        let member_id = if join.member_id.is_empty() {
            match join.group_instance_id {
                // A static member coming back under a new member id replaces its old self.
                Some(instance) => {
                    let previous = self
                        .members
                        .iter()
                        .find(|(_, member)| member.instance_id.as_deref() == Some(instance))
                        .map(|(id, _)| id.clone());
                    if let Some(previous) = previous {
                        self.remove(now, &previous, ErrorCode::FencedInstanceId, "replaced");
                    }
                    format!("{instance}-{}", Uuid::new_v4())
                }
                // KIP-394: hand out an id and let the client join again with it, so a join
                // retried after a lost response cannot leave a ghost member behind.
                None => {
                    let id = if join.client_id.is_empty() {
                        Uuid::new_v4().to_string()
                    } else {
                        format!("{}-{}", join.client_id, Uuid::new_v4())
                    };
                    self.pending.insert(id.clone(), now + join.session_timeout);
                    return Reply::Now(self.join_error(ErrorCode::MemberIdRequired, &id));
                }
            }
        } else if self.members.contains_key(join.member_id)
            || self.pending.remove(join.member_id).is_some()
        {
            join.member_id.to_owned()
        } else {
            return Reply::Now(self.join_error(ErrorCode::UnknownMemberId, join.member_id));
        };

        let (tx, rx) = oneshot::channel();
        let expires = now + join.session_timeout;
        match self.members.get_mut(&member_id) {
            Some(member) => {
                let changed = member.protocols != join.protocols;
                member.protocols = join.protocols;
                member.session_timeout = join.session_timeout;
                member.rebalance_timeout = join.rebalance_timeout;
                member.expires = expires;
                let is_leader = self.leader.as_deref() == Some(member_id.as_str());
                match self.state {
                    State::CompletingRebalance if !changed => {
                        return Reply::Now(self.join_response(&member_id));
                    }
                    State::Stable if !changed && !is_leader => {
                        return Reply::Now(self.join_response(&member_id));
                    }
                    _ => {}
                }
                if let Some(member) = self.members.get_mut(&member_id) {
                    // A join this one replaces was given up by its client.
                    member.answer_join(Self::join_error_body(
                        ErrorCode::UnknownMemberId,
                        &member_id,
                        self.generation,
                    ));
                    member.joining = Some(tx);
                }
            }
            None => {
                self.arrivals += 1;
                if self.members.is_empty() {
                    self.protocol_type = Some(join.protocol_type.to_owned());
                }
                self.members.insert(
                    member_id.clone(),
                    Member {
                        instance_id: join.group_instance_id.map(str::to_owned),
                        client_id: join.client_id.to_owned(),
                        session_timeout: join.session_timeout,
                        rebalance_timeout: join.rebalance_timeout,
                        protocols: join.protocols,
                        assignment: Bytes::new(),
                        expires,
                        joining: Some(tx),
                        syncing: None,
                        joined: self.arrivals,
                    },
                );
                info!(group = %self.id, member = %member_id, "member joined");
            }
        }
        self.prepare_rebalance(now);
        self.complete_join_if_ready(now);
        Reply::Later(rx)
    }

    /// SyncGroup. `assignments` is the leader's (member id, assignment) list.
    pub(crate) fn sync(
        &mut self,
        now: Instant,
        generation: i32,
        member_id: &str,
        assignments: &[(String, Bytes)],
    ) -> Reply {
        let Some(member) = self.members.get_mut(member_id) else {
            return Reply::Now(self.sync_body(ErrorCode::UnknownMemberId, Bytes::new()));
        };
        if generation != self.generation {
            return Reply::Now(self.sync_body(ErrorCode::IllegalGeneration, Bytes::new()));
        }
        member.expires = now + member.session_timeout;
        match self.state {
            State::Empty | State::PreparingRebalance => {
                Reply::Now(self.sync_body(ErrorCode::RebalanceInProgress, Bytes::new()))
            }
            State::Stable => {
                let assignment = member.assignment.clone();
                Reply::Now(self.sync_body(ErrorCode::None, assignment))
            }
            State::CompletingRebalance => {
                let (tx, rx) = oneshot::channel();
                let superseded = self.sync_body(ErrorCode::RebalanceInProgress, Bytes::new());
                if let Some(member) = self.members.get_mut(member_id) {
                    // A sync this one replaces was given up by its client.
                    member.answer_sync(superseded);
                    member.syncing = Some(tx);
                }
                if self.leader.as_deref() == Some(member_id) {
                    let given: HashMap<&str, &Bytes> = assignments
                        .iter()
                        .map(|(id, assignment)| (id.as_str(), assignment))
                        .collect();
                    for (id, member) in &mut self.members {
                        member.assignment =
                            given.get(id.as_str()).cloned().cloned().unwrap_or_default();
                    }
                    self.state = State::Stable;
                    info!(group = %self.id, generation = self.generation,
                        members = self.members.len(), "group stable");
                    let (protocol_type, protocol) =
                        (self.protocol_type.clone(), self.protocol.clone());
                    for member in self.members.values_mut() {
                        let body = SyncGroupResponse::default()
                            .throttle_time_ms(Some(0))
                            .error_code(ErrorCode::None.into())
                            .protocol_type(protocol_type.clone())
                            .protocol_name(protocol.clone())
                            .assignment(member.assignment.clone())
                            .into();
                        member.answer_sync(body);
                    }
                }
                Reply::Later(rx)
            }
        }
    }

    /// Heartbeat.
    pub(crate) fn heartbeat(&mut self, now: Instant, generation: i32, member_id: &str) -> Body {
        let error = match self.members.get_mut(member_id) {
            None => ErrorCode::UnknownMemberId,
            Some(_) if generation != self.generation => ErrorCode::IllegalGeneration,
            Some(member) => {
                member.expires = now + member.session_timeout;
                if self.state == State::PreparingRebalance {
                    ErrorCode::RebalanceInProgress
                } else {
                    ErrorCode::None
                }
            }
        };
        HeartbeatResponse::default()
            .throttle_time_ms(Some(0))
            .error_code(error.into())
            .into()
    }

    /// LeaveGroup of one member, found by member id or, when that is empty, by instance id.
    pub(crate) fn leave(
        &mut self,
        now: Instant,
        member_id: &str,
        instance_id: Option<&str>,
    ) -> ErrorCode {
        let id = if member_id.is_empty() {
            instance_id.and_then(|instance| {
                self.members
                    .iter()
                    .find(|(_, member)| member.instance_id.as_deref() == Some(instance))
                    .map(|(id, _)| id.clone())
            })
        } else {
            Some(member_id.to_owned()).filter(|id| self.members.contains_key(id))
        };
        match id {
            Some(id) => {
                self.remove(now, &id, ErrorCode::UnknownMemberId, "left");
                ErrorCode::None
            }
            None => ErrorCode::UnknownMemberId,
        }
    }

    /// Whether an OffsetCommit from this member of this generation may be applied:
    /// `None` if so (and the member is heard from), else the error for every partition.
    /// A commit without a generation and member (an admin's, or a standalone consumer's) is
    /// always allowed.
    pub(crate) fn check_commit(
        &mut self,
        now: Instant,
        generation: Option<i32>,
        member_id: Option<&str>,
    ) -> Option<ErrorCode> {
        let member_id = member_id.unwrap_or_default();
        let generation = generation.unwrap_or(-1);
        if generation < 0 && member_id.is_empty() {
            return None;
        }
        let Some(member) = self.members.get_mut(member_id) else {
            return Some(ErrorCode::UnknownMemberId);
        };
        if generation != self.generation {
            return Some(ErrorCode::IllegalGeneration);
        }
        member.expires = now + member.session_timeout;
        (self.state == State::CompletingRebalance).then_some(ErrorCode::RebalanceInProgress)
    }

    /// Evicts members whose session timed out, forgets unused member ids and completes a
    /// rebalance whose deadline passed. Called periodically.
    pub(crate) fn expire(&mut self, now: Instant) {
        self.pending.retain(|_, expires| *expires > now);
        let expired: Vec<String> = self
            .members
            .iter()
            // A parked join is governed by the rebalance deadline, not the session.
            .filter(|(_, member)| member.joining.is_none() && member.expires <= now)
            .map(|(id, _)| id.clone())
            .collect();
        for id in expired {
            self.remove(now, &id, ErrorCode::UnknownMemberId, "session timed out");
        }
        if self.state == State::PreparingRebalance
            && self
                .rebalance_deadline
                .is_some_and(|deadline| deadline <= now)
        {
            self.complete_join(now);
        }
    }

    /// The earliest moment [`Group::expire`] has something to do.
    pub(crate) fn next_deadline(&self) -> Option<Instant> {
        let sessions = self
            .members
            .values()
            .filter(|member| member.joining.is_none())
            .map(|member| member.expires);
        sessions
            .chain(self.pending.values().copied())
            .chain(self.rebalance_deadline)
            .min()
    }

    pub(crate) fn listed(&self) -> ListedGroup {
        ListedGroup::default()
            .group_id(self.id.clone())
            .protocol_type(
                self.protocol_type
                    .clone()
                    .unwrap_or_else(|| "consumer".into()),
            )
            .group_state(Some(self.state.name().into()))
            .group_type(Some("classic".into()))
    }

    pub(crate) fn described(&self) -> DescribedGroup {
        let protocol = self.protocol.clone().unwrap_or_default();
        DescribedGroup::default()
            .error_code(ErrorCode::None.into())
            .group_id(self.id.clone())
            .group_state(self.state.name().into())
            .protocol_type(self.protocol_type.clone().unwrap_or_default())
            .protocol_data(protocol.clone())
            .members(Some(
                self.members
                    .iter()
                    .map(|(id, member)| {
                        DescribedGroupMember::default()
                            .member_id(id.clone())
                            .group_instance_id(member.instance_id.clone())
                            .client_id(member.client_id.clone())
                            .client_host(String::new())
                            .member_metadata(member.metadata(&protocol))
                            .member_assignment(member.assignment.clone())
                    })
                    .collect(),
            ))
            .authorized_operations(Some(i32::MIN))
    }

    /// Removes a member; its parked requests get `error`. The others must rebalance.
    fn remove(&mut self, now: Instant, member_id: &str, error: ErrorCode, why: &str) {
        let Some(mut member) = self.members.remove(member_id) else {
            return;
        };
        info!(group = %self.id, member = %member_id, why, "member removed");
        member.answer_join(Self::join_error_body(error, member_id, self.generation));
        member.answer_sync(self.sync_body(error, Bytes::new()));
        if self.leader.as_deref() == Some(member_id) {
            self.leader = None;
        }
        match self.state {
            State::Empty => {}
            State::PreparingRebalance => self.complete_join_if_ready(now),
            State::CompletingRebalance | State::Stable => {
                self.prepare_rebalance(now);
                self.complete_join_if_ready(now);
            }
        }
    }

    fn prepare_rebalance(&mut self, now: Instant) {
        if self.state == State::PreparingRebalance {
            return;
        }
        // Followers parked in SyncGroup must join again.
        let error = self.sync_body(ErrorCode::RebalanceInProgress, Bytes::new());
        for member in self.members.values_mut() {
            member.answer_sync(error.clone());
        }
        let timeout = self
            .members
            .values()
            .map(|member| member.rebalance_timeout)
            .max()
            .unwrap_or_default();
        self.state = State::PreparingRebalance;
        self.rebalance_deadline = Some(now + timeout);
    }

    fn complete_join_if_ready(&mut self, now: Instant) {
        if self.state == State::PreparingRebalance
            && self.members.values().all(|member| member.joining.is_some())
        {
            self.complete_join(now);
        }
    }

    /// Ends `PreparingRebalance`: members that did not join again are dropped, the next
    /// generation starts with a protocol every member supports, and every parked join is
    /// answered (the leader's with the members to assign to).
    fn complete_join(&mut self, now: Instant) {
        let stragglers: Vec<String> = self
            .members
            .iter()
            .filter(|(_, member)| member.joining.is_none())
            .map(|(id, _)| id.clone())
            .collect();
        for id in stragglers {
            info!(group = %self.id, member = %id, "member did not rejoin in time; removed");
            if let Some(mut member) = self.members.remove(&id) {
                member.answer_sync(self.sync_body(ErrorCode::UnknownMemberId, Bytes::new()));
            }
        }
        self.rebalance_deadline = None;
        self.generation += 1;
        if self.members.is_empty() {
            self.state = State::Empty;
            self.protocol = None;
            self.leader = None;
            return;
        }
        self.protocol = self.vote();
        if !self
            .leader
            .as_ref()
            .is_some_and(|leader| self.members.contains_key(leader))
        {
            self.leader = self
                .members
                .iter()
                .min_by_key(|(_, member)| member.joined)
                .map(|(id, _)| id.clone());
        }
        self.state = State::CompletingRebalance;
        info!(group = %self.id, generation = self.generation, members = self.members.len(),
            leader = self.leader.as_deref().unwrap_or_default(),
            protocol = self.protocol.as_deref().unwrap_or_default(), "rebalance: members joined");
        let ids: Vec<String> = self.members.keys().cloned().collect();
        for id in ids {
            let body = self.join_response(&id);
            if let Some(member) = self.members.get_mut(&id) {
                member.assignment = Bytes::new();
                member.expires = now + member.session_timeout;
                member.answer_join(body);
            }
        }
    }

    /// The protocol every member supports that most members list first (Kafka's vote).
    fn vote(&self) -> Option<String> {
        let candidates: Vec<&str> = self
            .members
            .values()
            .next()?
            .protocols
            .iter()
            .map(|(name, _)| name.as_str())
            .filter(|name| self.members.values().all(|member| member.supports(name)))
            .collect();
        let mut votes: BTreeMap<&str, usize> = BTreeMap::new();
        for member in self.members.values() {
            if let Some((name, _)) = member
                .protocols
                .iter()
                .find(|(name, _)| candidates.contains(&name.as_str()))
            {
                *votes.entry(name.as_str()).or_default() += 1;
            }
        }
        candidates
            .iter()
            .max_by_key(|name| {
                (
                    votes.get(*name).copied().unwrap_or(0),
                    std::cmp::Reverse(candidates.iter().position(|c| c == *name)),
                )
            })
            .map(|name| (*name).to_owned())
    }

    /// The current generation's JoinGroup response for `member_id`: the leader's lists the
    /// members with their metadata for the chosen protocol.
    fn join_response(&self, member_id: &str) -> Body {
        let leader = self.leader.clone().unwrap_or_default();
        let protocol = self.protocol.clone().unwrap_or_default();
        let members = if leader == member_id {
            self.members
                .iter()
                .map(|(id, member)| {
                    JoinGroupResponseMember::default()
                        .member_id(id.clone())
                        .group_instance_id(member.instance_id.clone())
                        .metadata(member.metadata(&protocol))
                })
                .collect()
        } else {
            Vec::new()
        };
        JoinGroupResponse::default()
            .throttle_time_ms(Some(0))
            .error_code(ErrorCode::None.into())
            .generation_id(self.generation)
            .protocol_type(self.protocol_type.clone())
            .protocol_name(Some(protocol))
            .leader(leader)
            .skip_assignment(Some(false))
            .member_id(member_id.to_owned())
            .members(Some(members))
            .into()
    }

    fn join_error(&self, error: ErrorCode, member_id: &str) -> Body {
        Self::join_error_body(error, member_id, self.generation)
    }

    fn join_error_body(error: ErrorCode, member_id: &str, generation: i32) -> Body {
        let generation = if error == ErrorCode::MemberIdRequired {
            -1
        } else {
            generation
        };
        JoinGroupResponse::default()
            .throttle_time_ms(Some(0))
            .error_code(error.into())
            .generation_id(generation)
            .protocol_type(None)
            .protocol_name(Some(String::new()))
            .leader(String::new())
            .skip_assignment(Some(false))
            .member_id(member_id.to_owned())
            .members(Some(Vec::new()))
            .into()
    }

    fn sync_body(&self, error: ErrorCode, assignment: Bytes) -> Body {
        SyncGroupResponse::default()
            .throttle_time_ms(Some(0))
            .error_code(error.into())
            .protocol_type(self.protocol_type.clone())
            .protocol_name(self.protocol.clone())
            .assignment(assignment)
            .into()
    }
}

/// A JoinGroup response carrying only an error (and, for MEMBER_ID_REQUIRED, the new id).
pub(crate) fn join_error(error: ErrorCode, member_id: &str) -> Body {
    Group::join_error_body(error, member_id, -1)
}

/// A SyncGroup response carrying only an error.
pub(crate) fn sync_error(error: ErrorCode) -> Body {
    SyncGroupResponse::default()
        .throttle_time_ms(Some(0))
        .error_code(error.into())
        .protocol_type(None)
        .protocol_name(None)
        .assignment(Bytes::new())
        .into()
}

/// A Heartbeat response carrying only an error.
pub(crate) fn heartbeat_error(error: ErrorCode) -> Body {
    HeartbeatResponse::default()
        .throttle_time_ms(Some(0))
        .error_code(error.into())
        .into()
}
