#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Starts the real `embedded-broker` binary and talks to it with rdkafka.

use std::{
    collections::{BTreeMap, BTreeSet},
    fs::File,
    io::Read as _,
    net::TcpListener,
    path::{Path, PathBuf},
    process::{Child, ChildStdin, Command, ExitStatus, Stdio},
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use embedded_broker::{ReadyInfo, client_settings};
use nix::{
    sys::signal::{Signal, kill},
    unistd::Pid,
};
use rdkafka::{
    ClientConfig, Message as _, Offset, TopicPartitionList,
    admin::{AdminClient, AdminOptions, NewTopic, TopicReplication},
    client::DefaultClientContext,
    consumer::{CommitMode, Consumer as _, StreamConsumer},
    producer::{FutureProducer, FutureRecord},
};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

const READY_TIMEOUT: Duration = Duration::from_secs(30);
const CONSUME_TIMEOUT: Duration = Duration::from_secs(30);

/// A running broker process. Dropping it kills and reaps the process, so a failed
/// assertion never leaves a broker behind.
struct BrokerProcess {
    child: Child,
    stdin: Option<ChildStdin>,
    ready: ReadyInfo,
    log: PathBuf,
}

impl BrokerProcess {
    fn start(data_dir: &Path, port: u16, run_dir: &Path) -> Self {
        Self::start_with(data_dir, port, run_dir, &[])
    }

    /// Like [`BrokerProcess::start`] with extra command-line arguments.
    fn start_with(data_dir: &Path, port: u16, run_dir: &Path, args: &[&str]) -> Self {
        let ready_file = run_dir.join("broker.ready.json");
        let log = run_dir.join(format!("broker-{}.log", unique()));
        let log_file = File::create(&log).unwrap();
        let mut child = Command::new(env!("CARGO_BIN_EXE_embedded-broker"))
            .arg("--listen")
            .arg(format!("127.0.0.1:{port}"))
            .arg("--data-dir")
            .arg(data_dir)
            .arg("--ready-file")
            .arg(&ready_file)
            .arg("--exit-on-stdin-eof")
            .args(args)
            .env("RUST_LOG", "info")
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(log_file)
            .spawn()
            .expect("spawn embedded-broker");
        let stdin = child.stdin.take();
        let deadline = Instant::now() + READY_TIMEOUT;
        let ready = loop {
            if let Ok(text) = std::fs::read_to_string(&ready_file)
                && let Ok(ready) = serde_json::from_str::<ReadyInfo>(&text)
                && ready.pid == child.id()
            {
                break ready;
            }
            if let Some(status) = child.try_wait().unwrap() {
                panic!(
                    "broker exited before becoming ready ({status}); log:\n{}",
                    read_log(&log)
                );
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "broker not ready after {READY_TIMEOUT:?}; log:\n{}",
                    read_log(&log)
                );
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        assert_eq!(ready.addr, format!("127.0.0.1:{port}"));
        Self {
            child,
            stdin,
            ready,
            log,
        }
    }

    fn addr(&self) -> &str {
        &self.ready.addr
    }

    /// Sends SIGTERM and waits for the process to exit.
    fn terminate(mut self) -> ExitStatus {
        kill(Pid::from_raw(self.child.id() as i32), Signal::SIGTERM).unwrap();
        self.wait_exit()
    }

    /// Closes the broker's stdin and waits for it to exit.
    fn close_stdin(mut self) -> ExitStatus {
        drop(self.stdin.take());
        self.wait_exit()
    }

    fn wait_exit(&mut self) -> ExitStatus {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "broker did not exit; log:\n{}",
                read_log(&self.log)
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for BrokerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn read_log(path: &Path) -> String {
    let mut text = String::new();
    if let Ok(mut file) = File::open(path) {
        let _ = file.read_to_string(&mut text);
    }
    text
}

fn unique() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}

fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

fn producer(addr: &str) -> FutureProducer {
    producer_with(addr, &[])
}

fn producer_with(addr: &str, overrides: &[(&str, &str)]) -> FutureProducer {
    let mut config = ClientConfig::new();
    config.set("bootstrap.servers", addr);
    for (key, value) in client_settings::PRODUCER.iter().chain(overrides) {
        config.set(*key, *value);
    }
    config.create().unwrap()
}

fn consumer(addr: &str, group: &str) -> StreamConsumer {
    consumer_with(addr, group, &[])
}

fn consumer_with(addr: &str, group: &str, overrides: &[(&str, &str)]) -> StreamConsumer {
    let mut config = ClientConfig::new();
    config.set("bootstrap.servers", addr).set("group.id", group);
    for (key, value) in client_settings::CONSUMER.iter().chain(overrides) {
        config.set(*key, *value);
    }
    config.create().unwrap()
}

async fn create_topic(addr: &str, topic: &str, partitions: i32) {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", addr)
        .create()
        .unwrap();
    let results = admin
        .create_topics(
            &[NewTopic::new(topic, partitions, TopicReplication::Fixed(1))],
            &AdminOptions::new().operation_timeout(Some(Duration::from_secs(10))),
        )
        .await
        .unwrap();
    for result in results {
        result.unwrap();
    }
}

async fn produce(producer: &FutureProducer, topic: &str, key: &str, payload: &str) -> (i32, i64) {
    let delivery = producer
        .send(
            FutureRecord::to(topic).key(key).payload(payload),
            Duration::from_secs(10),
        )
        .await
        .map_err(|(err, _)| err)
        .unwrap();
    (delivery.partition, delivery.offset)
}

/// A received message: (partition, offset, key, payload).
type Received = (i32, i64, String, String);

async fn recv(consumer: &StreamConsumer, timeout: Duration) -> Option<Received> {
    match tokio::time::timeout(timeout, consumer.recv()).await {
        Err(_) => None,
        Ok(message) => {
            let message = message.unwrap();
            Some((
                message.partition(),
                message.offset(),
                String::from_utf8(message.key().unwrap().to_vec()).unwrap(),
                String::from_utf8(message.payload().unwrap().to_vec()).unwrap(),
            ))
        }
    }
}

/// Receives until `n` messages arrived, failing after [`CONSUME_TIMEOUT`].
async fn recv_n(consumer: &StreamConsumer, n: usize) -> Vec<Received> {
    let deadline = Instant::now() + CONSUME_TIMEOUT;
    let mut received = Vec::new();
    while received.len() < n {
        let left = deadline.saturating_duration_since(Instant::now());
        match recv(consumer, left).await {
            Some(message) => received.push(message),
            None => panic!(
                "received {} of {n} messages in {CONSUME_TIMEOUT:?}",
                received.len()
            ),
        }
    }
    received
}

/// Committed offsets of `group` for the partitions of `topic`, as seen by a fresh client.
fn committed(addr: &str, group: &str, topic: &str, partitions: i32) -> BTreeMap<i32, Offset> {
    let consumer = consumer(addr, group);
    let mut tpl = TopicPartitionList::new();
    for partition in 0..partitions {
        tpl.add_partition(topic, partition);
    }
    consumer
        .committed_offsets(tpl, Duration::from_secs(10))
        .unwrap()
        .elements()
        .iter()
        .map(|elem| (elem.partition(), elem.offset()))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_and_committed_offsets_survive_a_restart() {
    let run_dir = tempfile::tempdir().unwrap();
    let data_dir = run_dir.path().join("data");
    let port = free_port();
    let topic = "orders";
    let group = "order-workers";

    let broker = BrokerProcess::start(&data_dir, port, run_dir.path());
    let addr = broker.addr().to_owned();
    create_topic(&addr, topic, 3).await;

    let producer = producer(&addr);
    let mut sent = BTreeMap::new();
    for i in 0..30 {
        let key = format!("key-{i}");
        let payload = format!("payload-{i}");
        let (partition, offset) = produce(&producer, topic, &key, &payload).await;
        assert!(
            sent.insert((partition, offset), (key, payload)).is_none(),
            "duplicate offset"
        );
    }
    let used: BTreeSet<i32> = sent.keys().map(|(partition, _)| *partition).collect();
    assert!(
        used.len() > 1,
        "30 keys all went to one partition: {used:?}"
    );

    let worker = consumer(&addr, group);
    worker.subscribe(&[topic]).unwrap();
    let received = recv_n(&worker, 30).await;
    for (partition, offset, key, payload) in &received {
        assert_eq!(
            sent.get(&(*partition, *offset)),
            Some(&(key.clone(), payload.clone()))
        );
    }
    let distinct: BTreeSet<(i32, i64)> = received.iter().map(|(p, o, _, _)| (*p, *o)).collect();
    assert_eq!(distinct.len(), 30, "duplicates received");
    worker.commit_consumer_state(CommitMode::Sync).unwrap();
    drop(worker);

    let mut expected_committed = BTreeMap::new();
    for (partition, offset) in sent.keys() {
        let next = expected_committed.entry(*partition).or_insert(0);
        *next = (*next).max(offset + 1);
    }
    let before: BTreeMap<i32, i64> = committed(&addr, group, topic, 3)
        .into_iter()
        .filter_map(|(partition, offset)| offset.to_raw().map(|raw| (partition, raw)))
        .filter(|(_, raw)| *raw >= 0)
        .collect();
    assert_eq!(before, expected_committed);
    drop(producer);

    let status = broker.terminate();
    assert!(status.success(), "SIGTERM should stop cleanly: {status}");
    assert!(
        !run_dir.path().join("broker.ready.json").exists(),
        "ready file removed on clean shutdown"
    );

    // Same data dir and port: everything is still there.
    let broker = BrokerProcess::start(&data_dir, port, run_dir.path());
    let addr = broker.addr().to_owned();

    let after: BTreeMap<i32, i64> = committed(&addr, group, topic, 3)
        .into_iter()
        .filter_map(|(partition, offset)| offset.to_raw().map(|raw| (partition, raw)))
        .filter(|(_, raw)| *raw >= 0)
        .collect();
    assert_eq!(
        after, expected_committed,
        "committed offsets survive restart"
    );

    let auditor = consumer(&addr, &format!("auditor-{}", unique()));
    auditor.subscribe(&[topic]).unwrap();
    let replayed = recv_n(&auditor, 30).await;
    let replayed: BTreeMap<(i32, i64), (String, String)> = replayed
        .into_iter()
        .map(|(p, o, k, v)| ((p, o), (k, v)))
        .collect();
    assert_eq!(replayed, sent, "all messages survive restart");
    drop(auditor);

    let producer = self::producer(&addr);
    let (new_partition, new_offset) = produce(&producer, topic, "key-new", "after-restart").await;
    assert_eq!(
        new_offset,
        expected_committed.get(&new_partition).copied().unwrap_or(0),
        "offsets continue after restart"
    );

    let worker = consumer(&addr, group);
    worker.subscribe(&[topic]).unwrap();
    let first = recv(&worker, CONSUME_TIMEOUT)
        .await
        .expect("the message produced after restart");
    assert_eq!(
        first,
        (
            new_partition,
            new_offset,
            "key-new".to_owned(),
            "after-restart".to_owned()
        ),
        "the group resumes from its committed offsets"
    );
    // Nothing already committed comes afterwards either.
    assert_eq!(recv(&worker, Duration::from_millis(500)).await, None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closing_stdin_stops_the_broker() {
    let run_dir = tempfile::tempdir().unwrap();
    let broker = BrokerProcess::start(&run_dir.path().join("data"), free_port(), run_dir.path());
    let status = broker.close_stdin();
    assert!(status.success(), "stdin EOF should stop cleanly: {status}");
}

#[test]
fn uncreatable_data_dir_is_a_config_error() {
    let run_dir = tempfile::tempdir().unwrap();
    let file = run_dir.path().join("not-a-dir");
    std::fs::write(&file, b"").unwrap();
    let data_dir = file.join("data");
    let output = Command::new(env!("CARGO_BIN_EXE_embedded-broker"))
        .arg("--listen")
        .arg(format!("127.0.0.1:{}", free_port()))
        .arg("--data-dir")
        .arg(&data_dir)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(64));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains(&data_dir.display().to_string()),
        "error names the path: {stderr}"
    );
}

#[test]
fn bad_flag_is_a_config_error() {
    let output = Command::new(env!("CARGO_BIN_EXE_embedded-broker"))
        .arg("--no-such-flag")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(64));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("--no-such-flag"), "{stderr}");
}

#[test]
fn port_in_use_is_a_runtime_error() {
    let run_dir = tempfile::tempdir().unwrap();
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let output = Command::new(env!("CARGO_BIN_EXE_embedded-broker"))
        .arg("--listen")
        .arg(format!("127.0.0.1:{port}"))
        .arg("--data-dir")
        .arg(run_dir.path())
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains(&format!("127.0.0.1:{port}")), "{stderr}");
}

/// Partitions currently assigned to `consumer`, polling it briefly so rebalances progress.
async fn poll_assignment(consumer: &StreamConsumer) -> BTreeSet<i32> {
    // Rebalance events are served while the consumer is polled; nothing is produced here.
    if let Ok(message) = tokio::time::timeout(Duration::from_millis(50), consumer.recv()).await {
        panic!("unexpected message: {:?}", message.map(|m| m.offset()));
    }
    consumer
        .assignment()
        .unwrap()
        .elements()
        .iter()
        .map(|elem| elem.partition())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consumers_in_one_group_share_partitions() {
    let run_dir = tempfile::tempdir().unwrap();
    let broker = BrokerProcess::start(&run_dir.path().join("data"), free_port(), run_dir.path());
    let addr = broker.addr().to_owned();
    let topic = "shared";
    let group = "sharers";
    create_topic(&addr, topic, 3).await;

    let first = consumer(&addr, group);
    first.subscribe(&[topic]).unwrap();
    let deadline = Instant::now() + CONSUME_TIMEOUT;
    while poll_assignment(&first).await.len() != 3 {
        assert!(Instant::now() < deadline, "first consumer never assigned");
    }

    let second = consumer(&addr, group);
    let joined = Instant::now();
    second.subscribe(&[topic]).unwrap();
    loop {
        let (a, b) = tokio::join!(poll_assignment(&first), poll_assignment(&second));
        if !a.is_empty() && !b.is_empty() && a.is_disjoint(&b) && a.len() + b.len() == 3 {
            eprintln!(
                "partitions shared after {:?}: {a:?} / {b:?}",
                joined.elapsed()
            );
            break;
        }
        assert!(
            Instant::now() < joined + CONSUME_TIMEOUT,
            "never shared: {a:?} / {b:?}"
        );
    }

    let producer = producer(&addr);
    for i in 0..30 {
        produce(
            &producer,
            topic,
            &format!("key-{i}"),
            &format!("payload-{i}"),
        )
        .await;
    }
    let mut seen: BTreeMap<(i32, i64), usize> = BTreeMap::new();
    let mut per_consumer = [0usize; 2];
    let deadline = Instant::now() + CONSUME_TIMEOUT;
    while seen.len() < 30 {
        assert!(
            Instant::now() < deadline,
            "only {} of 30 consumed",
            seen.len()
        );
        let (index, message) = tokio::select! {
            m = first.recv() => (0, m.unwrap()),
            m = second.recv() => (1, m.unwrap()),
        };
        *seen
            .entry((message.partition(), message.offset()))
            .or_default() += 1;
        per_consumer[index] += 1;
    }
    assert!(
        seen.values().all(|n| *n == 1),
        "a message was consumed twice"
    );
    assert!(per_consumer.iter().all(|n| *n > 0), "{per_consumer:?}");

    // A consumer that closes cleanly leaves the group; the other takes over quickly.
    drop(second);
    let left = Instant::now();
    while poll_assignment(&first).await.len() != 3 {
        assert!(left.elapsed() < CONSUME_TIMEOUT, "no takeover");
    }
    eprintln!("takeover after a clean leave: {:?}", left.elapsed());
}

/// Environment of [`group_member_to_be_killed`]: the broker's address, the group and the topic.
const CHILD_MEMBER: &str = "BROKER_TEST_CHILD_MEMBER";

/// Run by [`a_killed_group_leader_is_evicted_and_the_survivor_takes_its_partitions`] as a
/// process of its own, so that it can be SIGKILLed: joins the group, says which partitions it
/// was given on stdout, and keeps the group's session going until killed (or for two minutes).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a child process of a_killed_group_leader_is_evicted_and_the_survivor_takes_its_partitions"]
async fn group_member_to_be_killed() {
    use std::io::Write as _;
    let setting = std::env::var(CHILD_MEMBER).expect("run by its parent test");
    let mut parts = setting.split(',');
    let (addr, group, topic) = (
        parts.next().unwrap(),
        parts.next().unwrap(),
        parts.next().unwrap(),
    );
    let member = consumer(addr, group);
    member.subscribe(&[topic]).unwrap();
    let mut told = BTreeSet::new();
    let deadline = Instant::now() + Duration::from_secs(120);
    while Instant::now() < deadline {
        let assigned = poll_assignment(&member).await;
        if assigned != told {
            println!("assigned {assigned:?}");
            std::io::stdout().flush().unwrap();
            told = assigned;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_group_leader_is_evicted_and_the_survivor_takes_its_partitions() {
    use std::io::BufRead as _;
    let run_dir = tempfile::tempdir().unwrap();
    let broker = BrokerProcess::start(&run_dir.path().join("data"), free_port(), run_dir.path());
    let addr = broker.addr().to_owned();
    let (group, topic) = ("survivors", "leader-kill");
    create_topic(&addr, topic, 3).await;

    // The first member, which leads the group, in a process of its own.
    let mut leader = Command::new(std::env::current_exe().unwrap())
        .args([
            "--ignored",
            "--exact",
            "group_member_to_be_killed",
            "--nocapture",
        ])
        .env(CHILD_MEMBER, format!("{addr},{group},{topic}"))
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let (lines_tx, lines_rx) = std::sync::mpsc::channel();
    let stdout = leader.stdout.take().unwrap();
    std::thread::spawn(move || {
        // The test harness prints lines of its own around the member's.
        let lines = std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok);
        for line in lines.filter(|line| line.starts_with("assigned ")) {
            if lines_tx.send(line).is_err() {
                break;
            }
        }
    });
    let first = lines_rx
        .recv_timeout(CONSUME_TIMEOUT)
        .expect("the leader was assigned partitions");
    assert_eq!(
        first, "assigned {0, 1, 2}",
        "the only member gets every partition"
    );

    let survivor = consumer(&addr, group);
    survivor.subscribe(&[topic]).unwrap();
    let deadline = Instant::now() + CONSUME_TIMEOUT;
    let shared = loop {
        let assigned = poll_assignment(&survivor).await;
        if !assigned.is_empty() && assigned.len() < 3 {
            break assigned;
        }
        assert!(
            Instant::now() < deadline,
            "the group never shared its partitions"
        );
    };

    kill(Pid::from_raw(leader.id() as i32), Signal::SIGKILL).unwrap();
    leader.wait().unwrap();
    let killed = Instant::now();
    let session = Duration::from_millis(6_000);
    loop {
        if poll_assignment(&survivor).await.len() == 3 {
            break;
        }
        assert!(
            killed.elapsed() < session + Duration::from_secs(5),
            "the survivor still has only {shared:?} {:?} after the leader's SIGKILL; broker log:\n{}",
            killed.elapsed(),
            read_log(&broker.log)
        );
    }
    eprintln!(
        "survivor took every partition {:?} after the leader's SIGKILL (session timeout {session:?})",
        killed.elapsed()
    );

    // It consumes what is written to the dead leader's partitions too.
    let producer = producer(&addr);
    let mut partitions = BTreeSet::new();
    for i in 0..30 {
        partitions.insert(
            produce(&producer, topic, &format!("key-{i}"), "after")
                .await
                .0,
        );
    }
    assert_eq!(partitions.len(), 3, "the keys spread over every partition");
    let received: BTreeSet<i32> = recv_n(&survivor, 30)
        .await
        .into_iter()
        .map(|(partition, ..)| partition)
        .collect();
    assert_eq!(received, partitions);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auto_commit_of_stored_offsets() {
    let run_dir = tempfile::tempdir().unwrap();
    let broker = BrokerProcess::start(&run_dir.path().join("data"), free_port(), run_dir.path());
    let addr = broker.addr().to_owned();
    let topic = "auto";
    let group = "auto-committers";
    create_topic(&addr, topic, 1).await;
    let producer = producer(&addr);
    for i in 0..10 {
        produce(
            &producer,
            topic,
            &format!("key-{i}"),
            &format!("payload-{i}"),
        )
        .await;
    }

    let worker = consumer_with(&addr, group, client_settings::CONSUMER_AUTO_COMMIT);

    worker.subscribe(&[topic]).unwrap();
    for expected in 0..5 {
        let message = tokio::time::timeout(CONSUME_TIMEOUT, worker.recv())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(message.offset(), expected);
        worker.store_offset_from_message(&message).unwrap();
    }
    let deadline = Instant::now() + CONSUME_TIMEOUT;
    loop {
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition(topic, 0);
        let committed = worker
            .committed_offsets(tpl, Duration::from_secs(10))
            .unwrap();
        if committed.elements()[0].offset() == Offset::Offset(5) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "stored offset never auto-committed"
        );
        // Keep polling (without storing) so the consumer keeps running.
        let _ = tokio::time::timeout(Duration::from_millis(20), worker.recv()).await;
    }
    drop(worker);

    let next = consumer_with(&addr, group, client_settings::CONSUMER_AUTO_COMMIT);
    next.subscribe(&[topic]).unwrap();
    let message = recv(&next, CONSUME_TIMEOUT).await.unwrap();
    assert_eq!(message.1, 5, "resumes after the last stored offset");
}

/// Prints the figures quoted in the crate docs (run with `-- --nocapture`); the asserted
/// bounds are loose so that a busy machine does not fail the build.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn latency_figures() {
    let run_dir = tempfile::tempdir().unwrap();
    let broker = BrokerProcess::start(&run_dir.path().join("data"), free_port(), run_dir.path());
    let addr = broker.addr().to_owned();
    let topic = "latency";
    create_topic(&addr, topic, 1).await;
    let producer = producer(&addr);
    produce(&producer, topic, "warm-up", "warm-up").await;

    let worker = consumer(&addr, &format!("latency-{}", unique()));
    let subscribed = Instant::now();
    worker.subscribe(&[topic]).unwrap();
    recv(&worker, CONSUME_TIMEOUT).await.unwrap();
    let first_message = subscribed.elapsed();

    let mut acks = Vec::new();
    let mut end_to_end = Vec::new();
    for i in 0..20u64 {
        let key = format!("key-{i}");
        let sent = Instant::now();
        produce(&producer, topic, &key, "x").await;
        acks.push(sent.elapsed());
        let (_, _, got, _) = recv(&worker, CONSUME_TIMEOUT).await.unwrap();
        assert_eq!(got, key);
        end_to_end.push(sent.elapsed());
        // Do not stay in phase with the broker's fetch cycle.
        tokio::time::sleep(Duration::from_millis(7 * (i % 5))).await;
    }
    acks.sort();
    end_to_end.sort();
    eprintln!(
        "subscribe -> first message: {first_message:?}; produce ack p50 {:?} max {:?}; \
         produce -> consume p50 {:?} max {:?}",
        acks[acks.len() / 2],
        acks[acks.len() - 1],
        end_to_end[end_to_end.len() / 2],
        end_to_end[end_to_end.len() - 1],
    );
    assert!(first_message < Duration::from_secs(10), "{first_message:?}");
    assert!(
        end_to_end[end_to_end.len() / 2] < Duration::from_secs(1),
        "{end_to_end:?}"
    );
}

#[test]
fn bad_front_is_a_config_error() {
    let run_dir = tempfile::tempdir().unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_embedded-broker"))
        .arg("--listen")
        .arg(format!("127.0.0.1:{}", free_port()))
        .arg("--data-dir")
        .arg(run_dir.path())
        .env("EMBEDDED_BROKER_FRONTS", "127.0.0.1:40001,order-2.proxy")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(64));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("order-2.proxy"),
        "names the value: {stderr}"
    );
}

/// A plain TCP forwarder standing in for the harness's per-instance fault-injection proxy.
/// It counts the bytes it carries; stopping it closes its listener and cuts its connections.
struct Forwarder {
    addr: String,
    bytes: Arc<AtomicU64>,
    connections: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl Forwarder {
    /// Forwards connections accepted on `listener` (bound by the caller, so its address can
    /// be advertised before the target exists) to `target`.
    fn start(listener: tokio::net::TcpListener, target: String) -> Self {
        let addr = listener.local_addr().unwrap().to_string();
        let bytes = Arc::new(AtomicU64::new(0));
        let connections = Arc::new(AtomicU64::new(0));
        let task = tokio::spawn({
            let (bytes, connections) = (Arc::clone(&bytes), Arc::clone(&connections));
            async move {
                // Dropped with the task: aborting it cuts every forwarded connection.
                let mut links = tokio::task::JoinSet::new();
                loop {
                    let (client, _) = listener.accept().await.unwrap();
                    connections.fetch_add(1, Ordering::Relaxed);
                    let (target, bytes) = (target.clone(), Arc::clone(&bytes));
                    links.spawn(async move {
                        let Ok(upstream) = tokio::net::TcpStream::connect(&target).await else {
                            return;
                        };
                        let (client_rd, client_wr) = client.into_split();
                        let (upstream_rd, upstream_wr) = upstream.into_split();
                        tokio::select! {
                            () = pump(client_rd, upstream_wr, &bytes) => {}
                            () = pump(upstream_rd, client_wr, &bytes) => {}
                        }
                    });
                }
            }
        });
        Self {
            addr,
            bytes,
            connections,
            task,
        }
    }

    fn bytes(&self) -> u64 {
        self.bytes.load(Ordering::Relaxed)
    }

    /// Stops accepting and cuts all connections; returns once the listener is closed.
    async fn stop(self) {
        self.task.abort();
        assert!(self.task.await.unwrap_err().is_cancelled());
    }
}

async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    bytes: &AtomicU64,
) {
    let mut buf = vec![0; 16 * 1024];
    loop {
        match from.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                bytes.fetch_add(n as u64, Ordering::Relaxed);
                if to.write_all(&buf[..n]).await.is_err() {
                    return;
                }
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_bootstrapped_through_a_front_stay_behind_its_proxy() {
    let run_dir = tempfile::tempdir().unwrap();
    let proxy_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let proxy_addr = proxy_listener.local_addr().unwrap().to_string();
    let broker = BrokerProcess::start_with(
        &run_dir.path().join("data"),
        free_port(),
        run_dir.path(),
        &["--front", &proxy_addr],
    );
    let [front] = broker.ready.fronts.as_slice() else {
        panic!("one front in the ready file: {:?}", broker.ready);
    };
    assert_eq!(front.advertised, proxy_addr);
    assert!(
        front.listen.starts_with("127.0.0.1:") && !front.listen.ends_with(":0"),
        "the front's OS-chosen address: {front:?}"
    );
    let proxy = Forwarder::start(proxy_listener, front.listen.clone());
    let started = Instant::now();

    let topic = "fronted";
    let group = "fronted-workers";
    create_topic(broker.addr(), topic, 1).await;

    // So that the send after the proxy is gone fails in ~3 s: librdkafka expires queued
    // messages only between reconnect attempts, and with its default backoff (up to 10 s)
    // the failure took 7-11 s.
    let producer = producer_with(
        &proxy.addr,
        &[
            ("message.timeout.ms", "3000"),
            ("reconnect.backoff.max.ms", "200"),
        ],
    );
    let payload = |i: usize| format!("{i:04}-{}", "x".repeat(1019));
    for i in 0..100 {
        produce(&producer, topic, &format!("key-{i}"), &payload(i)).await;
    }
    let worker = consumer(&proxy.addr, group);
    worker.subscribe(&[topic]).unwrap();
    let received = recv_n(&worker, 100).await;
    let payloads: Vec<String> = received.into_iter().map(|(_, _, _, p)| p).collect();
    assert_eq!(payloads, (0..100).map(payload).collect::<Vec<_>>());
    worker.commit_consumer_state(CommitMode::Sync).unwrap();
    drop(worker);
    assert_eq!(
        committed(&proxy.addr, group, topic, 1).get(&0),
        Some(&Offset::Offset(100)),
        "the group's commit went through the front"
    );

    // 100 KB produced and 100 KB fetched: the data itself went through the proxy, not just
    // the bootstrap metadata exchange.
    assert!(
        proxy.bytes() > 200_000,
        "proxy carried {} bytes",
        proxy.bytes()
    );
    eprintln!(
        "through the front: {} bytes over {} connections in {:?}",
        proxy.bytes(),
        proxy.connections.load(Ordering::Relaxed),
        started.elapsed()
    );

    // With the proxy gone the clients have no other way to the broker...
    proxy.stop().await;
    let cut = Instant::now();
    let sent = producer
        .send(
            FutureRecord::to(topic).key("cut-off").payload("cut-off"),
            Duration::from_secs(1),
        )
        .await;
    let Err((err, _)) = sent else {
        panic!("delivered without the proxy: {sent:?}");
    };
    eprintln!(
        "send without the proxy failed after {:?}: {err}",
        cut.elapsed()
    );
    // ...although the broker itself is fine.
    let direct = producer_with(broker.addr(), &[]);
    produce(&direct, topic, "direct", "direct").await;
}

/// The control API as the harness uses it: `PUT /faults/{id}`, `DELETE /faults`.
async fn set_fault(control: &str, id: &str, spec: serde_json::Value) -> reqwest::Response {
    reqwest::Client::new()
        .put(format!("http://{control}/faults/{id}"))
        .json(&spec)
        .send()
        .await
        .unwrap()
}

/// Every message of `topic` partition `partition` from the start, read directly (not through a
/// front), until `n` arrived: (offset, key, payload).
async fn read_partition(addr: &str, topic: &str, partition: i32, n: usize) -> Vec<(i64, String)> {
    let reader = consumer(addr, &format!("reader-{}", unique()));
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, partition, Offset::Beginning)
        .unwrap();
    reader.assign(&tpl).unwrap();
    recv_n(&reader, n)
        .await
        .into_iter()
        .map(|(_, offset, key, _)| (offset, key))
        .collect()
}

/// Message faults set through the control API act on the clients behind the front they name:
/// lost acknowledgements make the producer write again, one partition's records arrive late,
/// delivered records are delivered again; and clearing them ends it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn message_faults_on_a_front_reach_rdkafka_clients_behind_it() {
    let run_dir = tempfile::tempdir().unwrap();
    let proxy_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let proxy_addr = proxy_listener.local_addr().unwrap().to_string();
    let broker = BrokerProcess::start_with(
        &run_dir.path().join("data"),
        free_port(),
        run_dir.path(),
        &["--front", &proxy_addr, "--control", "127.0.0.1:0"],
    );
    let control = broker
        .ready
        .control
        .clone()
        .expect("control in the ready file");
    let proxy = Forwarder::start(proxy_listener, broker.ready.fronts[0].listen.clone());

    // Unknown fronts and bad faults are refused, saying why.
    let refused = set_fault(
        &control,
        "x",
        serde_json::json!({"fronts": ["127.0.0.1:1"], "fault": {"kind": "lost_ack", "probability": 1.0}}),
    )
    .await;
    assert_eq!(refused.status(), 400);
    assert!(refused.text().await.unwrap().contains(&proxy_addr));
    let refused = set_fault(
        &control,
        "x",
        serde_json::json!({"fault": {"kind": "lost_ack", "probability": 2.0}}),
    )
    .await;
    assert_eq!(refused.status(), 400);

    // lost_ack: every send is acknowledged in the end, and some were written more than once.
    create_topic(broker.addr(), "acks", 1).await;
    let lost = set_fault(
        &control,
        "lost",
        serde_json::json!({"fronts": [&proxy_addr], "fault": {"kind": "lost_ack", "probability": 0.5}}),
    )
    .await;
    assert_eq!(lost.status(), 204);
    let retrying = producer_with(
        &proxy.addr,
        &[
            ("reconnect.backoff.max.ms", "200"),
            ("retry.backoff.ms", "20"),
        ],
    );
    for i in 0..20 {
        produce(&retrying, "acks", &format!("ack-{i}"), "x").await;
    }
    let cleared = reqwest::Client::new()
        .delete(format!("http://{control}/faults"))
        .send()
        .await
        .unwrap();
    assert_eq!(cleared.status(), 204);
    let written = reqwest::get(format!("http://{control}/faults"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(written, "{}");
    // The records after the last send of the loop: read until the high watermark.
    let (_, high) = {
        let reader = consumer(broker.addr(), "watermarks");
        reader
            .fetch_watermarks("acks", 0, Duration::from_secs(10))
            .unwrap()
    };
    let records = read_partition(broker.addr(), "acks", 0, usize::try_from(high).unwrap()).await;
    let keys: BTreeSet<&str> = records.iter().map(|(_, k)| k.as_str()).collect();
    assert_eq!(keys.len(), 20, "every message written");
    assert!(
        records.len() > 20,
        "with half the acknowledgements lost, some retries wrote again: {} records",
        records.len()
    );
    eprintln!("lost_ack: 20 sends wrote {} records", records.len());

    // delay: partition 1's records reach the consumer behind the front 800 ms late; partition
    // 0's, produced after them, come first.
    create_topic(broker.addr(), "late", 2).await;
    let delay = set_fault(
        &control,
        "late",
        serde_json::json!({"fault": {"kind": "delay", "topic": "late", "partition": 1, "delay_ms": 800}}),
    )
    .await;
    assert_eq!(delay.status(), 204);
    let worker = consumer(&proxy.addr, "late-workers");
    worker.subscribe(&["late"]).unwrap();
    // Joined and fetching before the records exist, so their timing is the front's doing.
    assert!(recv(&worker, Duration::from_secs(2)).await.is_none());
    let direct = producer(broker.addr());
    let send_to = |partition: i32, key: &'static str| {
        direct.send(
            FutureRecord::to("late")
                .partition(partition)
                .key(key)
                .payload(key),
            Duration::from_secs(10),
        )
    };
    let produced = Instant::now();
    send_to(1, "slow").await.unwrap();
    send_to(0, "fast").await.unwrap();
    let first = recv_n(&worker, 1).await;
    assert_eq!(first[0].2, "fast", "partition 0 is not held back");
    let second = recv_n(&worker, 1).await;
    assert_eq!(second[0].2, "slow");
    let late = produced.elapsed();
    assert!(late >= Duration::from_millis(800), "arrived after {late:?}");
    eprintln!("delay: partition 1 arrived after {late:?}");
    drop(worker);

    // duplicate: each delivered record is delivered again, at a later offset.
    create_topic(broker.addr(), "twice", 1).await;
    let duplicate = set_fault(
        &control,
        "twice",
        serde_json::json!({"fronts": [&proxy_addr], "fault": {"kind": "duplicate", "topic": "twice", "probability": 1.0}}),
    )
    .await;
    assert_eq!(duplicate.status(), 204);
    for i in 0..5 {
        produce(&direct, "twice", &format!("dup-{i}"), "x").await;
    }
    let worker = consumer(&proxy.addr, "twice-workers");
    worker.subscribe(&["twice"]).unwrap();
    let received = recv_n(&worker, 10).await;
    let mut per_key: BTreeMap<String, Vec<i64>> = BTreeMap::new();
    for (_, offset, key, _) in received {
        per_key.entry(key).or_default().push(offset);
    }
    assert_eq!(per_key.len(), 5);
    for (key, offsets) in &per_key {
        assert_eq!(offsets.len(), 2, "{key} delivered twice: {offsets:?}");
        assert!(
            offsets[0] < 5 && offsets[1] >= 5,
            "{key}: the copy is later: {offsets:?}"
        );
    }
    // Copies are not copied again.
    assert!(recv(&worker, Duration::from_secs(1)).await.is_none());
}
