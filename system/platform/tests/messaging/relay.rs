//! The relay's claims: leases that outlast a publish, backoff for rows that keep failing, and
//! marks that only the claim holder may write.

use std::time::Duration;

use platform::messaging::outbox::{Relay, SendLimits, retry_backoff};
use rdkafka::ClientConfig;
use rdkafka::producer::FutureProducer;

use super::{databases, pending_row, row};

/// Fast failures for the tests: a 100 ms queue wait and a 1 s message timeout.
const LIMITS: SendLimits = SendLimits {
    queue: Duration::from_millis(100),
    message: Duration::from_secs(1),
};

fn producer(bootstrap: &str) -> FutureProducer {
    ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("acks", "all")
        .set("linger.ms", "0")
        .set("message.timeout.ms", LIMITS.message.as_millis().to_string())
        .set("socket.nagle.disable", "true")
        .create()
        .unwrap()
}

/// A TCP listener that accepts connections and never answers: a broker that hangs.
async fn hanging_broker() -> (String, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let task = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            held.push(socket);
        }
    });
    (addr, task)
}

#[test]
fn the_lease_outlasts_the_longest_publish_and_backoff_grows_to_a_bound() {
    for limits in [SendLimits::DEFAULT, LIMITS] {
        assert!(
            limits.lease() >= (limits.queue + limits.message) * 2,
            "{limits:?}"
        );
    }
    assert_eq!(
        SendLimits::DEFAULT.message,
        platform::messaging::kafka::MESSAGE_TIMEOUT,
        "the relay's lease follows the producer's message timeout"
    );
    assert_eq!(retry_backoff(1), Duration::from_millis(100));
    assert_eq!(retry_backoff(2), Duration::from_millis(200));
    assert_eq!(retry_backoff(50), Duration::from_secs(30));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_row_that_keeps_failing_is_backed_off_and_does_not_hold_up_the_rows_behind_it() {
    let broker = super::broker::Broker::start();
    platform::messaging::kafka::ensure_topics(broker.bootstrap(), &["good".to_string()])
        .await
        .unwrap();
    let (_dir, dbs) = databases().await;
    for db in &dbs {
        let relay = Relay::new(db.clone(), producer(broker.bootstrap()), "order#1")
            .with_send_limits(LIMITS);
        // The topic of the first row does not exist: its publish fails after the timeout. It
        // failed four times before, so its next backoff is 1.6 s.
        let bad = pending_row(db, "no-such-topic").await;
        sqlx::query("UPDATE outbox SET attempts = 4 WHERE seq = $1")
            .bind(bad)
            .execute(db.pool())
            .await
            .unwrap();
        let good = pending_row(db, "good").await;
        assert_eq!(relay.relay_once().await.unwrap(), 1);
        let (attempts, claimed_by, retry_at, published) = row(db, bad).await;
        assert_eq!((attempts, claimed_by, published), (5, None, None));
        assert!(
            retry_at.is_some_and(|at| at > platform::now_ms() + 1_000),
            "the failed row waits for its backoff"
        );
        assert!(
            row(db, good).await.3.is_some(),
            "the row behind it was published"
        );

        // The next pass publishes new rows at once and leaves the failed one in its backoff.
        let next = pending_row(db, "good").await;
        assert_eq!(relay.relay_once().await.unwrap(), 1);
        assert!(row(db, next).await.3.is_some());
        assert_eq!(
            row(db, bad).await.0,
            5,
            "not claimed again before its backoff ran out"
        );

        // Once the backoff is over it is tried again, with a longer one.
        tokio::time::sleep(retry_backoff(5) + Duration::from_millis(100)).await;
        relay.relay_once().await.unwrap();
        let (attempts, _, retry_at, _) = row(db, bad).await;
        assert_eq!(attempts, 6);
        assert!(
            retry_at.unwrap() > platform::now_ms() + 2_000,
            "3.2 s after the sixth"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_row_being_published_is_not_claimed_by_another_relay_and_its_failure_leaves_others_claims_alone()
 {
    let (hanging, _listener) = hanging_broker().await;
    let (_dir, dbs) = databases().await;
    for db in &dbs {
        let seq = pending_row(db, "orders").await;
        let stuck = Relay::new(db.clone(), producer(&hanging), "order#1").with_send_limits(LIMITS);
        let publishing = tokio::spawn(async move { stuck.relay_once().await });
        // Wait until order#1 holds the row and is sending it.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while row(db, seq).await.1.is_none() {
            assert!(
                tokio::time::Instant::now() < deadline,
                "order#1 never claimed the row"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let other = Relay::new(db.clone(), producer(&hanging), "order#2").with_send_limits(LIMITS);
        assert_eq!(other.relay_once().await.unwrap(), 0);
        assert_eq!(
            row(db, seq).await.1.as_deref(),
            Some("order#1"),
            "still order#1's"
        );

        // Suppose order#1's lease had run out and order#2 had claimed the row meanwhile: when
        // order#1's publish fails, order#2's claim must stay.
        let until = platform::now_ms() + 60_000;
        sqlx::query(
            "UPDATE outbox SET claimed_by = 'order#2', claimed_until_ms = $1 WHERE seq = $2",
        )
        .bind(until)
        .bind(seq)
        .execute(db.pool())
        .await
        .unwrap();
        assert_eq!(
            publishing.await.unwrap().unwrap(),
            0,
            "the hanging broker never acked"
        );
        let (_, claimed_by, claimed_until, published) = row(db, seq).await;
        assert_eq!(claimed_by.as_deref(), Some("order#2"));
        assert_eq!(claimed_until, Some(until));
        assert_eq!(published, None);
    }
}
