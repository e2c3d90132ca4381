//! Each toxic does to real TCP traffic what Toxiproxy documents, on both streams, on new and on
//! already open connections.

use std::io::ErrorKind;
use std::time::{Duration, Instant};

use chaos::{Stream, Toxic, ToxicAttributes, ToxicUpdate};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::support::{TestServer, echo, read_to_end, round_trip, sink, source, source_of, within};

const LIMIT: Duration = Duration::from_secs(20);

async fn median_round_trip(stream: &mut TcpStream, n: usize) -> Duration {
    let mut times = Vec::with_capacity(n);
    for _ in 0..n {
        times.push(round_trip(stream, b"ping").await);
    }
    times.sort();
    times[n / 2]
}

#[tokio::test]
async fn latency_adds_at_least_the_configured_delay_on_each_stream() {
    within(LIMIT, "test", async {
        let server = TestServer::spawn().await;
        let upstream = echo().await;
        let listen = server.proxy("echo", upstream.addr).await;

        let mut direct = TcpStream::connect(upstream.addr).await.unwrap();
        let direct_rtt = median_round_trip(&mut direct, 5).await;

        server
            .client
            .add_toxic("echo", &Toxic::latency(200, 0))
            .await
            .unwrap();
        server
            .client
            .add_toxic("echo", &Toxic::latency(100, 0).on(Stream::Upstream))
            .await
            .unwrap();
        let mut proxied = TcpStream::connect(listen).await.unwrap();
        let proxied_rtt = median_round_trip(&mut proxied, 3).await;
        let added = proxied_rtt.saturating_sub(direct_rtt);
        println!(
            "latency: direct {direct_rtt:?}, through 100 ms up + 200 ms down {proxied_rtt:?}, added {added:?}"
        );
        assert!(
            proxied_rtt >= Duration::from_millis(300),
            "round trip {proxied_rtt:?} is shorter than the 300 ms of latency configured"
        );
        assert!(
            proxied_rtt < Duration::from_millis(900),
            "round trip {proxied_rtt:?} is far longer than the 300 ms configured"
        );
        server.stop().await;
    })
    .await;
}

#[tokio::test]
async fn bandwidth_keeps_throughput_within_twenty_percent_of_the_rate() {
    within(LIMIT, "test", async {
        let server = TestServer::spawn().await;
        const BYTES: usize = 150_000;
        let upstream = source(BYTES).await;
        let listen = server.proxy("source", upstream.addr).await;
        server
            .client
            .add_toxic("source", &Toxic::bandwidth(100))
            .await
            .unwrap();

        let started = Instant::now();
        let mut stream = TcpStream::connect(listen).await.unwrap();
        let (data, _, ended) = read_to_end(&mut stream).await;
        let elapsed = started.elapsed();
        ended.unwrap();
        assert_eq!(data.len(), BYTES, "every byte arrives");
        let kb_per_s = data.len() as f64 / elapsed.as_secs_f64() / 1000.0;
        println!(
            "bandwidth: configured 100 KB/s, measured {kb_per_s:.1} KB/s ({BYTES} bytes in {elapsed:?})"
        );
        assert!(
            (80.0..=120.0).contains(&kb_per_s),
            "measured {kb_per_s:.1} KB/s is not within 20% of 100 KB/s"
        );
        server.stop().await;
    })
    .await;
}

#[tokio::test]
async fn timeout_stops_all_data_and_closes_the_connection_after_the_timeout() {
    within(LIMIT, "test", async {
        let server = TestServer::spawn().await;
        let upstream = echo().await;
        let listen = server.proxy("echo", upstream.addr).await;
        server
            .client
            .add_toxic("echo", &Toxic::timeout(500))
            .await
            .unwrap();

        let started = Instant::now();
        let mut stream = TcpStream::connect(listen).await.unwrap();
        stream.write_all(b"ping").await.unwrap();
        let (data, _, _) = read_to_end(&mut stream).await;
        let elapsed = started.elapsed();
        println!("timeout 500 ms: closed after {elapsed:?}");
        assert!(data.is_empty(), "no data passes a timeout toxic: {data:?}");
        assert!(
            elapsed >= Duration::from_millis(450),
            "closed after {elapsed:?}, before the 500 ms timeout"
        );
        assert!(
            elapsed < Duration::from_secs(3),
            "closed only after {elapsed:?}"
        );
        server.stop().await;
    })
    .await;
}

#[tokio::test]
async fn timeout_zero_holds_the_connection_until_the_toxic_is_removed() {
    within(LIMIT, "test", async {
        let server = TestServer::spawn().await;
        let upstream = echo().await;
        let listen = server.proxy("echo", upstream.addr).await;
        server
            .client
            .add_toxic("echo", &Toxic::timeout(0).named("hold"))
            .await
            .unwrap();

        let mut stream = TcpStream::connect(listen).await.unwrap();
        stream.write_all(b"ping").await.unwrap();
        let mut buf = [0u8; 16];
        let held = tokio::time::timeout(Duration::from_millis(800), stream.read(&mut buf)).await;
        assert!(
            held.is_err(),
            "nothing arrives and nothing closes while held: {held:?}"
        );

        let removed = Instant::now();
        server.client.remove_toxic("echo", "hold").await.unwrap();
        let (data, _, _) = within(
            Duration::from_secs(3),
            "the close after removing the toxic",
            read_to_end(&mut stream),
        )
        .await;
        println!("timeout 0: closed {:?} after removal", removed.elapsed());
        assert!(data.is_empty(), "the data dropped while held stays dropped");

        let mut fresh = TcpStream::connect(listen).await.unwrap();
        round_trip(&mut fresh, b"after").await;
        server.stop().await;
    })
    .await;
}

#[tokio::test]
async fn reset_peer_makes_the_client_see_a_connection_reset() {
    within(LIMIT, "test", async {
        let server = TestServer::spawn().await;
        let upstream = echo().await;
        let listen = server.proxy("echo", upstream.addr).await;
        server
            .client
            .add_toxic("echo", &Toxic::reset_peer(100))
            .await
            .unwrap();

        let started = Instant::now();
        let mut stream = TcpStream::connect(listen).await.unwrap();
        stream.write_all(b"ping").await.unwrap();
        let (data, _, ended) = read_to_end(&mut stream).await;
        let elapsed = started.elapsed();
        println!("reset_peer 100 ms: {ended:?} after {elapsed:?}");
        assert!(data.is_empty(), "nothing passes before the reset: {data:?}");
        let err = ended.expect_err("the connection is reset, not closed");
        assert_eq!(err.kind(), ErrorKind::ConnectionReset, "{err}");
        assert!(
            elapsed >= Duration::from_millis(90),
            "reset after {elapsed:?}"
        );
        server.stop().await;
    })
    .await;
}

#[tokio::test]
async fn slicer_delivers_data_in_several_reads_of_the_configured_size() {
    within(LIMIT, "test", async {
        let server = TestServer::spawn().await;
        const BYTES: usize = 1000;
        let upstream = source(BYTES).await;
        let listen = server.proxy("source", upstream.addr).await;
        // 100 ± 20 bytes, 20 ms apart.
        server
            .client
            .add_toxic("source", &Toxic::slicer(100, 20, 20_000))
            .await
            .unwrap();

        let started = Instant::now();
        let mut stream = TcpStream::connect(listen).await.unwrap();
        let (data, reads, ended) = read_to_end(&mut stream).await;
        let elapsed = started.elapsed();
        ended.unwrap();
        println!("slicer 100±20 B every 20 ms: reads {reads:?} in {elapsed:?}");
        assert_eq!(data.len(), BYTES, "every byte arrives");
        let expected: Vec<u8> = (0..BYTES).map(|i| (i % 251) as u8).collect();
        assert_eq!(data, expected, "in order");
        // One write of 1000 bytes arrives as about 10 slices; a busy test machine may merge
        // two slices into one read now and then, so most reads, not all, must fit the size.
        assert!(reads.len() >= 6, "only {} reads: {reads:?}", reads.len());
        let fitting = reads.iter().filter(|&&n| n <= 120).count();
        assert!(
            fitting * 10 >= reads.len() * 8,
            "reads larger than average_size + size_variation: {reads:?}"
        );
        assert!(
            elapsed >= Duration::from_millis(100),
            "slices 20 ms apart took only {elapsed:?}"
        );
        server.stop().await;
    })
    .await;
}

#[tokio::test]
async fn limit_data_closes_the_connection_after_exactly_the_configured_bytes() {
    within(LIMIT, "test", async {
        let server = TestServer::spawn().await;
        let upstream = source(10_000).await;
        let listen = server.proxy("source", upstream.addr).await;
        server
            .client
            .add_toxic("source", &Toxic::limit_data(1234))
            .await
            .unwrap();

        let mut stream = TcpStream::connect(listen).await.unwrap();
        let (data, _, _) = read_to_end(&mut stream).await;
        assert_eq!(data.len(), 1234);
        server.stop().await;
    })
    .await;
}

#[tokio::test]
async fn upstream_toxics_act_on_what_the_client_sends() {
    within(LIMIT, "test", async {
        let server = TestServer::spawn().await;
        let (upstream, mut received) = sink().await;
        let listen = server.proxy("sink", upstream.addr).await;
        server
            .client
            .add_toxic("sink", &Toxic::limit_data(1000).on(Stream::Upstream))
            .await
            .unwrap();

        let mut stream = TcpStream::connect(listen).await.unwrap();
        // The proxy closes after 1000 bytes; later writes may fail, which is the point.
        let _ = stream.write_all(&[7u8; 5000]).await;
        let got = within(Duration::from_secs(5), "the sink's count", received.recv())
            .await
            .expect("a count");
        assert_eq!(got, 1000);
        server.stop().await;
    })
    .await;
}

#[tokio::test]
async fn slow_close_delays_the_close_but_not_the_data() {
    within(LIMIT, "test", async {
        let server = TestServer::spawn().await;
        let upstream = source_of(b"bye").await;
        let listen = server.proxy("source", upstream.addr).await;
        server
            .client
            .add_toxic("source", &Toxic::slow_close(400))
            .await
            .unwrap();

        let started = Instant::now();
        let mut stream = TcpStream::connect(listen).await.unwrap();
        let mut first = [0u8; 3];
        stream.read_exact(&mut first).await.unwrap();
        let data_at = started.elapsed();
        let (rest, _, ended) = read_to_end(&mut stream).await;
        let closed_at = started.elapsed();
        ended.unwrap();
        println!("slow_close 400 ms: data after {data_at:?}, close after {closed_at:?}");
        assert_eq!(&first, b"bye");
        assert!(rest.is_empty());
        assert!(
            data_at < Duration::from_millis(300),
            "data waited {data_at:?}"
        );
        assert!(
            closed_at >= Duration::from_millis(390),
            "closed after {closed_at:?}"
        );
        server.stop().await;
    })
    .await;
}

#[tokio::test]
async fn a_toxic_with_toxicity_zero_never_applies() {
    within(LIMIT, "test", async {
        let server = TestServer::spawn().await;
        let upstream = echo().await;
        let listen = server.proxy("echo", upstream.addr).await;
        server
            .client
            .add_toxic("echo", &Toxic::latency(1000, 0).with_toxicity(0.0))
            .await
            .unwrap();
        server
            .client
            .add_toxic(
                "echo",
                &Toxic::reset_peer(0).on(Stream::Upstream).with_toxicity(0.0),
            )
            .await
            .unwrap();
        for _ in 0..10 {
            let mut stream = TcpStream::connect(listen).await.unwrap();
            let rtt = round_trip(&mut stream, b"ping").await;
            assert!(rtt < Duration::from_millis(500), "a toxic applied: {rtt:?}");
        }
        server.stop().await;
    })
    .await;
}

#[tokio::test]
async fn a_toxic_added_while_a_connection_is_open_affects_that_connection() {
    within(LIMIT, "test", async {
        let server = TestServer::spawn().await;
        let upstream = echo().await;
        let listen = server.proxy("echo", upstream.addr).await;
        let mut stream = TcpStream::connect(listen).await.unwrap();
        let before = round_trip(&mut stream, b"one").await;

        server
            .client
            .add_toxic("echo", &Toxic::latency(300, 0).named("slow"))
            .await
            .unwrap();
        let during = round_trip(&mut stream, b"two").await;

        server
            .client
            .update_toxic(
                "echo",
                "slow",
                &ToxicUpdate {
                    toxicity: None,
                    attributes: Some(ToxicAttributes::Latency {
                        latency: 600,
                        jitter: 0,
                    }),
                },
            )
            .await
            .unwrap();
        let updated = round_trip(&mut stream, b"three").await;

        server.client.remove_toxic("echo", "slow").await.unwrap();
        let after = round_trip(&mut stream, b"four").await;
        println!(
            "same connection: before {before:?}, with 300 ms {during:?}, updated to 600 ms {updated:?}, removed {after:?}"
        );
        assert!(during >= Duration::from_millis(300), "{during:?}");
        assert!(updated >= Duration::from_millis(600), "{updated:?}");
        assert!(after < Duration::from_millis(250), "{after:?}");
        server.stop().await;
    })
    .await;
}

#[tokio::test]
async fn bandwidth_zero_holds_data_until_the_toxic_is_removed() {
    within(LIMIT, "test", async {
        let server = TestServer::spawn().await;
        let upstream = echo().await;
        let listen = server.proxy("echo", upstream.addr).await;
        server
            .client
            .add_toxic("echo", &Toxic::bandwidth(0).named("stall"))
            .await
            .unwrap();
        let mut stream = TcpStream::connect(listen).await.unwrap();
        stream.write_all(b"held").await.unwrap();
        let mut buf = [0u8; 4];
        let held = tokio::time::timeout(Duration::from_millis(500), stream.read(&mut buf)).await;
        assert!(held.is_err(), "data passed a zero rate: {held:?}");
        server.client.remove_toxic("echo", "stall").await.unwrap();
        within(
            Duration::from_secs(3),
            "the held data",
            stream.read_exact(&mut buf),
        )
        .await
        .unwrap();
        assert_eq!(&buf, b"held", "held data is delivered, not dropped");
        server.stop().await;
    })
    .await;
}
