//! The group state machine against Kafka's classic protocol, on a clock the tests move.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use bytes::Bytes;
use tansu_sans_io::{Body, ErrorCode, JoinGroupResponse, SyncGroupResponse};
use tokio::time::{Duration, Instant};

use super::group::{Group, Join, Reply, State};

const SESSION: Duration = Duration::from_secs(6);
const REBALANCE: Duration = Duration::from_secs(10);

fn join<'a>(member_id: &'a str, metadata: &'static [u8]) -> Join<'a> {
    Join {
        client_id: "order#1",
        member_id,
        group_instance_id: None,
        session_timeout: SESSION,
        rebalance_timeout: REBALANCE,
        protocol_type: "consumer",
        protocols: vec![("cooperative-sticky".into(), Bytes::from_static(metadata))],
    }
}

fn now_body(reply: Reply) -> Body {
    match reply {
        Reply::Now(body) => body,
        Reply::Later(mut parked) => parked.try_recv().expect("answered at once"),
    }
}

fn parked(reply: Reply) -> tokio::sync::oneshot::Receiver<Body> {
    match reply {
        Reply::Later(parked) => parked,
        Reply::Now(body) => panic!("expected a parked request, got {body:?}"),
    }
}

fn as_join(body: Body) -> JoinGroupResponse {
    match body {
        Body::JoinGroupResponse(response) => response,
        other => panic!("not a JoinGroup response: {other:?}"),
    }
}

fn as_sync(body: Body) -> SyncGroupResponse {
    match body {
        Body::SyncGroupResponse(response) => response,
        other => panic!("not a SyncGroup response: {other:?}"),
    }
}

fn heartbeat_error(group: &mut Group, now: Instant, generation: i32, member: &str) -> ErrorCode {
    match group.heartbeat(now, generation, member) {
        Body::HeartbeatResponse(response) => ErrorCode::try_from(response.error_code).unwrap(),
        other => panic!("not a Heartbeat response: {other:?}"),
    }
}

fn code(error: i16) -> ErrorCode {
    ErrorCode::try_from(error).unwrap()
}

/// A member id from MEMBER_ID_REQUIRED, then the join that completes a one-member group.
fn first_member(group: &mut Group, now: Instant) -> String {
    let required = as_join(now_body(group.join(now, join("", b"a"))));
    assert_eq!(code(required.error_code), ErrorCode::MemberIdRequired);
    assert!(required.member_id.starts_with("order#1-"));
    let id = required.member_id;
    let joined = as_join(now_body(group.join(now, join(&id, b"a"))));
    assert_eq!(code(joined.error_code), ErrorCode::None);
    assert_eq!(joined.generation_id, 1);
    assert_eq!(joined.leader, id, "the only member leads");
    assert_eq!(joined.members.as_deref().unwrap().len(), 1);
    let synced = as_sync(now_body(group.sync(
        now,
        1,
        &id,
        &[(id.clone(), Bytes::from_static(b"all partitions"))],
    )));
    assert_eq!(code(synced.error_code), ErrorCode::None);
    assert_eq!(&synced.assignment[..], b"all partitions");
    assert_eq!(group.state(), State::Stable);
    id
}

/// Has a second member join and both rebalance to generation 2 with `leader`'s assignment.
fn second_member(group: &mut Group, now: Instant, leader: &str) -> String {
    let id = as_join(now_body(group.join(now, join("", b"b")))).member_id;
    let mut second = parked(group.join(now, join(&id, b"b")));
    assert_eq!(group.state(), State::PreparingRebalance);
    assert_eq!(
        heartbeat_error(group, now, 1, leader),
        ErrorCode::RebalanceInProgress,
        "the leader learns of the rebalance from its heartbeat"
    );
    let leader_join = as_join(now_body(group.join(now, join(leader, b"a"))));
    let second_join = as_join(
        second
            .try_recv()
            .expect("answered when the leader rejoined"),
    );
    assert_eq!(leader_join.generation_id, 2);
    assert_eq!(second_join.generation_id, 2);
    assert_eq!(leader_join.leader, leader, "the leader keeps leading");
    assert_eq!(leader_join.members.as_deref().unwrap().len(), 2);
    assert!(second_join.members.as_deref().unwrap().is_empty());

    let mut follower_sync = parked(group.sync(now, 2, &id, &[]));
    let leader_sync = as_sync(now_body(group.sync(
        now,
        2,
        leader,
        &[
            (leader.to_owned(), Bytes::from_static(b"p0")),
            (id.clone(), Bytes::from_static(b"p1")),
        ],
    )));
    assert_eq!(&leader_sync.assignment[..], b"p0");
    let follower = as_sync(
        follower_sync
            .try_recv()
            .expect("answered by the leader's sync"),
    );
    assert_eq!(code(follower.error_code), ErrorCode::None);
    assert_eq!(&follower.assignment[..], b"p1");
    assert_eq!(group.state(), State::Stable);
    id
}

#[test]
fn a_member_that_stops_heartbeating_is_evicted_and_the_survivor_takes_over() {
    let start = Instant::now();
    let mut group = Group::new("order");
    let leader = first_member(&mut group, start);
    let follower = second_member(&mut group, start, &leader);

    // The follower heartbeats; the leader was SIGKILLed and is silent.
    let mut now = start;
    while now < start + SESSION {
        now += Duration::from_millis(500);
        assert_eq!(
            heartbeat_error(&mut group, now, 2, &follower),
            ErrorCode::None
        );
        group.expire(now);
    }
    now += Duration::from_millis(500);
    group.expire(now);
    assert!(
        !group.has_member(&leader),
        "evicted after its session timeout"
    );
    assert_eq!(
        heartbeat_error(&mut group, now, 2, &follower),
        ErrorCode::RebalanceInProgress
    );
    let rejoined = as_join(now_body(group.join(now, join(&follower, b"b"))));
    assert_eq!(rejoined.generation_id, 3);
    assert_eq!(rejoined.leader, follower, "the survivor leads");
    let members: Vec<&str> = rejoined
        .members
        .as_deref()
        .unwrap()
        .iter()
        .map(|member| member.member_id.as_str())
        .collect();
    assert_eq!(
        members,
        [follower.as_str()],
        "and assigns every partition to itself"
    );
}

#[test]
fn a_member_that_does_not_rejoin_by_the_rebalance_deadline_is_dropped() {
    let start = Instant::now();
    let mut group = Group::new("order");
    let leader = first_member(&mut group, start);
    let follower = second_member(&mut group, start, &leader);

    // The leader changes its subscription and rejoins; the follower never does.
    let mut leader_join = parked(group.join(start, join(&leader, b"a2")));
    let mut now = start;
    while now < start + REBALANCE {
        now += Duration::from_secs(1);
        group.expire(now);
    }
    let answered = as_join(leader_join.try_recv().expect("answered at the deadline"));
    assert_eq!(code(answered.error_code), ErrorCode::None);
    assert_eq!(answered.generation_id, 3);
    assert!(!group.has_member(&follower));
    assert_eq!(group.state(), State::CompletingRebalance);
}

#[test]
fn stale_and_unknown_members_are_told_so() {
    let now = Instant::now();
    let mut group = Group::new("order");
    let leader = first_member(&mut group, now);
    let _follower = second_member(&mut group, now, &leader);

    assert_eq!(
        heartbeat_error(&mut group, now, 1, &leader),
        ErrorCode::IllegalGeneration
    );
    assert_eq!(
        heartbeat_error(&mut group, now, 2, "order#1-nobody"),
        ErrorCode::UnknownMemberId
    );
    let unknown = as_join(now_body(group.join(now, join("order#1-nobody", b"a"))));
    assert_eq!(code(unknown.error_code), ErrorCode::UnknownMemberId);

    assert_eq!(
        group.check_commit(now, Some(1), Some(&leader)),
        Some(ErrorCode::IllegalGeneration)
    );
    assert_eq!(
        group.check_commit(now, Some(2), Some("order#1-nobody")),
        Some(ErrorCode::UnknownMemberId)
    );
    assert_eq!(group.check_commit(now, Some(2), Some(&leader)), None);
    assert_eq!(
        group.check_commit(now, Some(-1), Some("")),
        None,
        "admin commits pass"
    );
}

#[test]
fn leaving_rebalances_the_rest_and_the_last_to_leave_empties_the_group() {
    let now = Instant::now();
    let mut group = Group::new("order");
    let leader = first_member(&mut group, now);
    let follower = second_member(&mut group, now, &leader);

    assert_eq!(group.leave(now, &leader, None), ErrorCode::None);
    assert_eq!(group.state(), State::PreparingRebalance);
    let rejoined = as_join(now_body(group.join(now, join(&follower, b"b"))));
    assert_eq!(rejoined.leader, follower);
    assert_eq!(group.leave(now, &follower, None), ErrorCode::None);
    assert_eq!(group.state(), State::Empty);
    assert!(group.is_empty());
    assert_eq!(
        group.leave(now, &follower, None),
        ErrorCode::UnknownMemberId
    );
}

#[test]
fn a_follower_rejoining_with_the_same_subscription_gets_the_current_generation() {
    let now = Instant::now();
    let mut group = Group::new("order");
    let leader = first_member(&mut group, now);
    let follower = second_member(&mut group, now, &leader);

    let again = as_join(now_body(group.join(now, join(&follower, b"b"))));
    assert_eq!(again.generation_id, 2, "no rebalance for nothing");
    assert_eq!(group.state(), State::Stable);
}

#[test]
fn a_follower_waiting_for_its_assignment_is_sent_back_when_a_member_leaves() {
    let now = Instant::now();
    let mut group = Group::new("order");
    let leader = first_member(&mut group, now);
    let id = as_join(now_body(group.join(now, join("", b"b")))).member_id;
    let mut second = parked(group.join(now, join(&id, b"b")));
    let _ = as_join(now_body(group.join(now, join(&leader, b"a"))));
    let _ = second.try_recv().unwrap();
    let mut follower_sync = parked(group.sync(now, 2, &id, &[]));
    assert_eq!(group.leave(now, &leader, None), ErrorCode::None);
    let answer = as_sync(follower_sync.try_recv().unwrap());
    assert_eq!(code(answer.error_code), ErrorCode::RebalanceInProgress);
}

#[test]
fn members_with_no_protocol_in_common_cannot_join() {
    let now = Instant::now();
    let mut group = Group::new("order");
    let _leader = first_member(&mut group, now);
    let id = as_join(now_body(group.join(now, join("", b"b")))).member_id;
    let mut other = join(&id, b"b");
    other.protocols = vec![("range".into(), Bytes::from_static(b"b"))];
    let refused = as_join(now_body(group.join(now, other)));
    assert_eq!(
        code(refused.error_code),
        ErrorCode::InconsistentGroupProtocol
    );
}
