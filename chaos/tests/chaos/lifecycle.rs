//! Proxies start, stop, move and come back the way Toxiproxy's do, and the server cleans up.

use std::io::ErrorKind;
use std::time::Duration;

use chaos::{ProxyUpdate, Toxic};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::support::{
    TestServer, answers_early, echo, eventually, read_to_end, round_trip, tagged_echo, within,
};

const LIMIT: Duration = Duration::from_secs(20);

#[tokio::test]
async fn a_proxy_created_on_port_zero_reports_the_address_it_is_bound_to() {
    within(LIMIT, "test", async {
        let server = TestServer::spawn().await;
        let upstream = echo().await;
        let listen = server.proxy("echo", upstream.addr).await;
        assert_ne!(listen.port(), 0);
        let shown = server.client.proxy("echo").await.unwrap();
        assert_eq!(shown.listen, listen.to_string());
        let mut stream = TcpStream::connect(listen).await.unwrap();
        round_trip(&mut stream, b"hello").await;
        server.stop().await;
    })
    .await;
}

#[tokio::test]
async fn disabling_a_proxy_refuses_and_closes_connections_and_enabling_restores_the_same_address() {
    within(LIMIT, "test", async {
        let server = TestServer::spawn().await;
        let upstream = echo().await;
        let listen = server.proxy("echo", upstream.addr).await;
        let mut open = TcpStream::connect(listen).await.unwrap();
        round_trip(&mut open, b"before").await;

        let disabled = server.client.set_enabled("echo", false).await.unwrap();
        assert!(!disabled.enabled);
        let (data, _, _) = within(
            Duration::from_secs(5),
            "the open connection's close",
            read_to_end(&mut open),
        )
        .await;
        assert!(data.is_empty());
        let refused = TcpStream::connect(listen).await.unwrap_err();
        assert_eq!(refused.kind(), ErrorKind::ConnectionRefused, "{refused}");

        let enabled = server.client.set_enabled("echo", true).await.unwrap();
        assert!(enabled.enabled);
        assert_eq!(
            enabled.listen,
            listen.to_string(),
            "re-bound on the same address"
        );
        let mut again = TcpStream::connect(listen).await.unwrap();
        round_trip(&mut again, b"after").await;
        server.stop().await;
    })
    .await;
}

#[tokio::test]
async fn a_new_upstream_applies_to_new_connections_on_the_same_listen_address() {
    within(LIMIT, "test", async {
        let server = TestServer::spawn().await;
        let first = tagged_echo("one").await;
        let second = tagged_echo("two").await;
        let listen = server.proxy("moving", first.addr).await;
        let greeting = |mut stream: TcpStream| async move {
            let mut tag = [0u8; 3];
            stream.read_exact(&mut tag).await.unwrap();
            tag
        };
        assert_eq!(
            &greeting(TcpStream::connect(listen).await.unwrap()).await,
            b"one"
        );
        let moved = server
            .client
            .update_proxy(
                "moving",
                &ProxyUpdate {
                    upstream: Some(second.addr.to_string()),
                    ..ProxyUpdate::default()
                },
            )
            .await
            .unwrap();
        assert_eq!(moved.upstream, second.addr.to_string());
        assert_eq!(moved.listen, listen.to_string());
        assert!(moved.enabled);
        assert_eq!(
            &greeting(TcpStream::connect(listen).await.unwrap()).await,
            b"two"
        );
        server.stop().await;
    })
    .await;
}

#[tokio::test]
async fn reset_enables_every_proxy_and_removes_every_toxic() {
    within(LIMIT, "test", async {
        let server = TestServer::spawn().await;
        let upstream = echo().await;
        let a = server.proxy("a", upstream.addr).await;
        server.proxy("b", upstream.addr).await;
        server
            .client
            .add_toxic("a", &Toxic::timeout(0))
            .await
            .unwrap();
        server
            .client
            .add_toxic("b", &Toxic::latency(500, 0))
            .await
            .unwrap();
        server.client.set_enabled("b", false).await.unwrap();

        server.client.reset().await.unwrap();
        let proxies = server.client.proxies().await.unwrap();
        assert_eq!(proxies.len(), 2);
        for proxy in proxies.values() {
            assert!(proxy.enabled, "{} enabled", proxy.name);
            assert!(proxy.toxics.is_empty(), "{} has no toxics", proxy.name);
        }
        let mut stream = TcpStream::connect(a).await.unwrap();
        round_trip(&mut stream, b"flows").await;
        server.stop().await;
    })
    .await;
}

#[tokio::test]
async fn deleting_a_proxy_closes_its_listener_and_connections() {
    within(LIMIT, "test", async {
        let server = TestServer::spawn().await;
        let upstream = echo().await;
        let listen = server.proxy("gone", upstream.addr).await;
        let mut open = TcpStream::connect(listen).await.unwrap();
        round_trip(&mut open, b"x").await;
        server.client.delete_proxy("gone").await.unwrap();
        let (data, _, _) =
            within(Duration::from_secs(5), "the close", read_to_end(&mut open)).await;
        assert!(data.is_empty());
        let refused = TcpStream::connect(listen).await.unwrap_err();
        assert_eq!(refused.kind(), ErrorKind::ConnectionRefused);
        server.stop().await;
    })
    .await;
}

#[tokio::test]
async fn shutting_the_server_down_closes_the_api_the_listeners_and_the_connections() {
    within(LIMIT, "test", async {
        let server = TestServer::spawn().await;
        let api = server.addr;
        let upstream = echo().await;
        let listen = server.proxy("echo", upstream.addr).await;
        server
            .client
            .add_toxic("echo", &Toxic::timeout(0))
            .await
            .unwrap();
        // A connection held open by a toxic must not hold the shutdown up.
        let mut held = TcpStream::connect(listen).await.unwrap();

        server.stop().await;

        let (data, _, _) =
            within(Duration::from_secs(5), "the close", read_to_end(&mut held)).await;
        assert!(data.is_empty());
        let refused = TcpStream::connect(listen).await.unwrap_err();
        assert_eq!(refused.kind(), ErrorKind::ConnectionRefused);
        let refused = TcpStream::connect(api).await.unwrap_err();
        assert_eq!(refused.kind(), ErrorKind::ConnectionRefused);
    })
    .await;
}

#[tokio::test]
async fn metrics_count_bytes_per_direction_and_connections_per_proxy() {
    within(LIMIT, "test", async {
        let server = TestServer::spawn().await;
        let upstream = echo().await;
        let listen = server.proxy("echo", upstream.addr).await;
        let mut stream = TcpStream::connect(listen).await.unwrap();
        round_trip(&mut stream, b"12345").await;

        let url = server.url("/metrics");
        let labels = format!(
            "proxy=\"echo\",listener=\"{listen}\",upstream=\"{}\"",
            upstream.addr
        );
        let expected = [
            format!("toxiproxy_proxy_received_bytes_total{{direction=\"upstream\",{labels}}} 5"),
            format!("toxiproxy_proxy_sent_bytes_total{{direction=\"upstream\",{labels}}} 5"),
            format!("toxiproxy_proxy_received_bytes_total{{direction=\"downstream\",{labels}}} 5"),
            format!("toxiproxy_proxy_sent_bytes_total{{direction=\"downstream\",{labels}}} 5"),
            format!("toxiproxy_proxy_connections_accepted_total{{{labels}}} 1"),
            format!("toxiproxy_proxy_connections_active{{{labels}}} 1"),
        ];
        // The sent counter is bumped just after the write the client already read.
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        loop {
            let response = reqwest::get(&url).await.unwrap();
            assert_eq!(response.status(), 200);
            let text = response.text().await.unwrap();
            if expected.iter().all(|line| text.lines().any(|l| l == line)) {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "metrics lack one of {expected:#?}:\n{text}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }

        drop(stream);
        eventually(Duration::from_secs(5), "the connection to end", || {
            let url = url.clone();
            let gauge = format!("toxiproxy_proxy_connections_active{{{labels}}} 0");
            async move {
                let text = reqwest::get(&url).await.unwrap().text().await.unwrap();
                text.lines().any(|l| l == gauge)
            }
        })
        .await;
        server.stop().await;
    })
    .await;
}

/// An HTTP server may answer a request by its head alone (413 on a declared length that is too
/// large) and close without reading the body; the kernel then resets the connection while the
/// proxy is still forwarding the body. The answer must still reach the client, as it does
/// without the proxy: a write that fails in one direction does not drop what the other
/// direction is carrying.
#[tokio::test]
async fn an_answer_sent_before_the_upstream_closes_mid_request_still_reaches_the_client() {
    const REPLY: &[u8] =
        b"HTTP/1.1 413 Payload Too Large\r\ncontent-length: 0\r\nconnection: close\r\n\r\n";
    within(LIMIT, "test", async {
        let server = TestServer::spawn().await;
        let upstream = answers_early(REPLY).await;
        let listen = server.proxy("early", upstream.addr).await;
        let mut lost = Vec::new();
        for attempt in 0..40 {
            let stream = TcpStream::connect(listen).await.unwrap();
            let (mut read, mut write) = stream.into_split();
            let sender = tokio::spawn(async move {
                let head = b"PUT /api/admin/products HTTP/1.1\r\ncontent-length: 4194304\r\n\r\n";
                let _ = write.write_all(head).await;
                let body = vec![b'x'; 64 * 1024];
                for _ in 0..64 {
                    if write.write_all(&body).await.is_err() {
                        break;
                    }
                }
                write
            });
            let mut answer = Vec::new();
            let ended = read.read_to_end(&mut answer).await;
            if !answer.starts_with(REPLY) {
                lost.push(format!(
                    "connection {attempt}: read {answer:?}, ended {ended:?}"
                ));
            }
            drop(sender.await.unwrap());
        }
        assert!(
            lost.is_empty(),
            "the upstream's answer was lost on {} of 40 connections:\n{}",
            lost.len(),
            lost.join("\n")
        );
        server.stop().await;
    })
    .await;
}
