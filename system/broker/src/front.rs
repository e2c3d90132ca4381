//! Fronts: extra listeners that advertise another address for the same broker.
//!
//! Kafka clients use `bootstrap.servers` only for their first Metadata request; afterwards
//! they connect to the host and port the broker advertises in Metadata and FindCoordinator
//! responses. The test harness puts a named fault-injection proxy in front of each service
//! instance's link to Kafka, so every instance must be told "the broker is at *your* proxy".
//! tansu has a single advertised listener, hence fronts.
//!
//! A front ([`FrontSpec`], `--front ADVERTISED[@LISTEN]`) is a listener inside the broker
//! process that relays each accepted connection to the broker's main listener. Requests and
//! responses pass through byte for byte, except the responses that carry broker addresses —
//! Metadata (api key 3), FindCoordinator (10) and DescribeCluster (60) — whose hosts and
//! ports are rewritten to the front's ADVERTISED address. The relay learns which response is
//! which from the request headers it forwards (correlation id → api key and version), and
//! decodes and re-encodes just those responses with `tansu-sans-io`, the codec tansu itself
//! uses. A response it cannot decode is passed through unchanged (warned about once per front).
//!
//! Every broker address is rewritten to the same ADVERTISED address, which is right for this
//! single-node broker and would be wrong for a cluster.
//!
//! While a message-level fault ([`crate::faults`]) applies to a front, it also looks at Produce
//! (api key 0) and Fetch (1) traffic: a Produce response may be dropped and the client's
//! connection reset (`lost_ack`), and Fetch responses are decoded to hold one partition's batches
//! back (`delay`) or to publish the batches they deliver again (`duplicate`, over a connection of
//! the front's own to the broker). Without a fault, neither is decoded.

use std::{
    collections::HashMap,
    fmt, io,
    net::{Ipv4Addr, SocketAddr},
    sync::{
        Arc, Mutex, PoisonError,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use bytes::{Bytes, BytesMut};
use serde::{Deserialize, Serialize};
use tansu_sans_io::{
    ApiKey as _, Body, DescribeClusterResponse, FetchRequest, FindCoordinatorResponse, Frame,
    MetadataResponse, ProduceRequest,
};
use tokio::{
    io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _},
    net::{TcpListener, TcpStream, tcp::OwnedWriteHalf},
    sync::mpsc,
    task::JoinSet,
    time::Instant,
};
use tracing::{debug, info, warn};

use crate::faults::{self, Copy, Faults, FirstSeen, MessageFault};

/// How long a relay holds a Fetch response from which `delay` took every batch, as the broker's
/// long poll would have: answering at once would have the client fetch again at once, in a loop.
const HOLD_PAUSE: Duration = Duration::from_millis(100);
/// Copies waiting to be published by a front; beyond this, a `duplicate` fault copies less.
const COPY_QUEUE: usize = 1024;

/// One `--front` value: the address clients are told to use, and where the front listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FrontSpec {
    /// Host and port written into Metadata/FindCoordinator/DescribeCluster responses.
    pub advertised: HostPort,
    /// Address the front accepts connections on; port 0 lets the OS choose.
    pub listen: SocketAddr,
}

impl FrontSpec {
    /// Listen address used when a `--front` value has no `@LISTEN` part.
    pub const DEFAULT_LISTEN: SocketAddr =
        SocketAddr::new(std::net::IpAddr::V4(Ipv4Addr::LOCALHOST), 0);
}

impl fmt::Display for FrontSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}", self.advertised, self.listen)
    }
}

/// A host (name or IP address, not resolved) and a non-zero port, as advertised to clients.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostPort {
    /// Host name or IP address; IPv6 addresses without brackets.
    pub host: String,
    /// TCP port, never 0.
    pub port: u16,
}

impl fmt::Display for HostPort {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

/// Parses `ADVERTISED` or `ADVERTISED@LISTEN`, both `host:port` (IPv6 hosts in brackets).
/// ADVERTISED is not resolved: it only has to make sense to the clients.
pub fn parse_front(value: &str) -> Result<FrontSpec, String> {
    let value = value.trim();
    let (advertised, listen) = match value.split_once('@') {
        Some((advertised, listen)) => (advertised, Some(listen)),
        None => (value, None),
    };
    let advertised = parse_host_port(advertised)
        .map_err(|err| format!("bad front `{value}`: advertised address {err}"))?;
    let listen = match listen {
        Some(listen) => crate::parse_socket_addr(listen)
            .map_err(|err| format!("bad front `{value}`: listen address {err}"))?,
        None => FrontSpec::DEFAULT_LISTEN,
    };
    Ok(FrontSpec { advertised, listen })
}

fn parse_host_port(value: &str) -> Result<HostPort, String> {
    let (host, port) = value
        .rsplit_once(':')
        .ok_or_else(|| format!("`{value}` is not host:port"))?;
    let host = match host.strip_prefix('[') {
        Some(bracketed) => bracketed
            .strip_suffix(']')
            .ok_or_else(|| format!("`{value}` has an unclosed `[`"))?,
        None if host.contains(':') => {
            return Err(format!("`{value}`: write IPv6 addresses in brackets"));
        }
        None => host,
    };
    if host.is_empty() || host.contains(|c: char| c.is_whitespace() || c == '/') {
        return Err(format!("`{value}` has no usable host"));
    }
    let port = port
        .parse::<u16>()
        .ok()
        .filter(|port| *port != 0)
        .ok_or_else(|| format!("`{value}` needs a port between 1 and 65535"))?;
    Ok(HostPort {
        host: host.to_owned(),
        port,
    })
}

/// A front as listed in the ready file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FrontInfo {
    /// The address clients are told to connect to (the `--front` ADVERTISED part).
    pub advertised: String,
    /// The address the front actually listens on (with the OS-chosen port).
    pub listen: String,
}

/// A bound front, ready to relay to the broker.
#[derive(Debug)]
pub(crate) struct Front {
    listener: TcpListener,
    local: SocketAddr,
    advertised: HostPort,
}

impl Front {
    pub(crate) async fn bind(spec: &FrontSpec) -> io::Result<Self> {
        let listener = TcpListener::bind(spec.listen).await?;
        let local = listener.local_addr()?;
        Ok(Self {
            listener,
            local,
            advertised: spec.advertised.clone(),
        })
    }

    pub(crate) fn info(&self) -> FrontInfo {
        FrontInfo {
            advertised: self.advertised.to_string(),
            listen: self.local.to_string(),
        }
    }

    /// Accepts and relays connections to `broker` until dropped, with the message faults in
    /// `faults` that name this front; dropping it also drops every open relay, which is what a
    /// stopping broker wants (its own connections close too).
    pub(crate) async fn serve(self, broker: SocketAddr, faults: Arc<Faults>) {
        info!(advertised = %self.advertised, listen = %self.local, "front listening");
        let (copies, queued) = mpsc::channel(COPY_QUEUE);
        let shared = Arc::new(Shared {
            name: self.advertised.to_string(),
            advertised: self.advertised,
            broker,
            warned: AtomicBool::new(false),
            faults: Arc::clone(&faults),
            copies,
        });
        let mut relays = JoinSet::new();
        // Aborted with the relays when the front is dropped.
        relays.spawn(duplicator(broker, queued, faults, shared.name.clone()));
        loop {
            tokio::select! {
                accepted = self.listener.accept() => match accepted {
                    Ok((client, peer)) => {
                        relays.spawn(relay(client, peer, Arc::clone(&shared)));
                    }
                    Err(err) => {
                        // Typically EMFILE; accepting again at once would spin.
                        warn!(listen = %self.local, error = %err, "front cannot accept");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                },
                Some(_) = relays.join_next() => {}
            }
        }
    }
}

struct Shared {
    advertised: HostPort,
    /// `advertised` as the control API names fronts.
    name: String,
    broker: SocketAddr,
    /// Whether an undecodable response was already reported for this front.
    warned: AtomicBool,
    faults: Arc<Faults>,
    /// Batches for the [`duplicator`] to publish again.
    copies: mpsc::Sender<Copy>,
}

/// What the relay does with the response to a request it forwarded.
#[derive(Debug, Clone, PartialEq)]
enum Expect {
    /// Point the broker addresses in it at the front ([`rewrite_response`]).
    Rewrite { api_key: i16, api_version: i16 },
    /// Apply message faults to it ([`faults::rewrite_fetch`]).
    Fetch {
        api_version: i16,
        faults: Vec<MessageFault>,
    },
    /// Drop it and reset the client's connection (`lost_ack`).
    LoseAck,
}

/// What the relay expects of the response to the request `frame`, under `faults`.
fn expect(
    frame: &[u8],
    faults: &[MessageFault],
    chance: impl FnOnce(f64) -> bool,
) -> Option<(i32, Expect)> {
    let (api_key, api_version, correlation_id) = request_header(frame)?;
    if names_brokers(api_key) {
        return Some((
            correlation_id,
            Expect::Rewrite {
                api_key,
                api_version,
            },
        ));
    }
    if api_key == ProduceRequest::KEY {
        let probability = faults
            .iter()
            .filter_map(|f| match f {
                MessageFault::LostAck { probability } => Some(*probability),
                _ => None,
            })
            .reduce(f64::max)?;
        return chance(probability).then_some((correlation_id, Expect::LoseAck));
    }
    if api_key == FetchRequest::KEY {
        let fetch_faults: Vec<MessageFault> = faults
            .iter()
            .filter(|f| !matches!(f, MessageFault::LostAck { .. }))
            .cloned()
            .collect();
        if !fetch_faults.is_empty() {
            return Some((
                correlation_id,
                Expect::Fetch {
                    api_version,
                    faults: fetch_faults,
                },
            ));
        }
    }
    None
}

/// Api keys of the requests whose responses name brokers.
fn names_brokers(api_key: i16) -> bool {
    [
        MetadataResponse::KEY,
        FindCoordinatorResponse::KEY,
        DescribeClusterResponse::KEY,
    ]
    .contains(&api_key)
}

async fn relay(client: TcpStream, peer: SocketAddr, shared: Arc<Shared>) {
    let broker = match TcpStream::connect(shared.broker).await {
        Ok(broker) => broker,
        Err(err) => {
            warn!(advertised = %shared.advertised, broker = %shared.broker, error = %err,
                "front cannot reach the broker; closing the client connection");
            return;
        }
    };
    // Clients disable Nagle for their small requests; the relay must not re-enable it.
    for stream in [&client, &broker] {
        if let Err(err) = stream.set_nodelay(true) {
            debug!(error = %err, "cannot set TCP_NODELAY");
        }
    }
    let (client_rd, client_wr) = client.into_split();
    let (broker_rd, broker_wr) = broker.into_split();
    let pending = Mutex::new(HashMap::new());
    // Either side closing ends both loops; dropping the halves closes both connections.
    let outcome = tokio::select! {
        outcome = requests(client_rd, broker_wr, &pending, &shared) => outcome,
        outcome = responses(broker_rd, client_wr, &pending, &shared) => outcome,
    };
    match outcome {
        Ok(()) => debug!(%peer, advertised = %shared.advertised, "front connection closed"),
        Err(err) => debug!(%peer, advertised = %shared.advertised, error = %err,
            "front connection failed"),
    }
}

/// Request header fields after the size: api key, api version, correlation id.
fn request_header(frame: &[u8]) -> Option<(i16, i16, i32)> {
    let header = frame.get(4..12)?;
    Some((
        i16::from_be_bytes([header[0], header[1]]),
        i16::from_be_bytes([header[2], header[3]]),
        i32::from_be_bytes([header[4], header[5], header[6], header[7]]),
    ))
}

fn response_correlation_id(frame: &[u8]) -> Option<i32> {
    let id = frame.get(4..8)?;
    Some(i32::from_be_bytes([id[0], id[1], id[2], id[3]]))
}

type Pending = Mutex<HashMap<i32, Expect>>;

async fn requests(
    mut client: impl AsyncRead + Unpin,
    mut broker: impl AsyncWrite + Unpin,
    pending: &Pending,
    shared: &Shared,
) -> io::Result<()> {
    let mut buf = BytesMut::with_capacity(8 * 1024);
    while let Some(frame) = read_frame(&mut client, &mut buf).await? {
        let faults = shared.faults.for_front(&shared.name);
        if let Some((correlation_id, expect)) = expect(&frame, &faults, chance) {
            pending
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .insert(correlation_id, expect);
        }
        broker.write_all(&frame).await?;
    }
    Ok(())
}

fn chance(probability: f64) -> bool {
    probability >= 1.0 || (probability > 0.0 && rand::random_bool(probability))
}

async fn responses(
    mut broker: impl AsyncRead + Unpin,
    mut client: OwnedWriteHalf,
    pending: &Pending,
    shared: &Shared,
) -> io::Result<()> {
    let mut buf = BytesMut::with_capacity(8 * 1024);
    let mut first_seen = FirstSeen::new();
    while let Some(frame) = read_frame(&mut broker, &mut buf).await? {
        let frame = frame.freeze();
        let request = response_correlation_id(&frame).and_then(|id| {
            pending
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .remove(&id)
        });
        let frame = match request {
            Some(Expect::Rewrite {
                api_key,
                api_version,
            }) => match rewrite_response(
                &frame,
                api_key,
                api_version,
                &shared.advertised,
                &shared.faults,
            ) {
                Ok(rewritten) => rewritten,
                Err(err) => {
                    warn_once(shared, api_key, api_version, &err);
                    frame
                }
            },
            Some(Expect::LoseAck) => {
                // The records are in the log; the producer will never know. A reset rather than
                // a close, as a crashed or partitioned broker would leave it.
                client.as_ref().set_zero_linger()?;
                // Without the shutdown a dropped write half sends (a FIN before the RST).
                client.forget();
                shared.faults.acks_lost.fetch_add(1, Ordering::Relaxed);
                debug!(advertised = %shared.advertised, "lost_ack: produce response dropped");
                return Err(io::Error::new(
                    io::ErrorKind::ConnectionReset,
                    "lost_ack fault: produce response dropped",
                ));
            }
            Some(Expect::Fetch {
                api_version,
                faults,
            }) => match faults::rewrite_fetch(
                &frame,
                api_version,
                &faults,
                &shared.faults,
                &mut first_seen,
                Instant::now(),
                chance,
            ) {
                Ok(rewrite) => {
                    for copy in rewrite.copies {
                        if shared.copies.try_send(copy).is_err() {
                            debug!(advertised = %shared.advertised,
                                "duplicate: copy queue full, batch not copied");
                        }
                    }
                    if rewrite.held_back_only {
                        tokio::time::sleep(HOLD_PAUSE).await;
                    }
                    rewrite.frame.unwrap_or(frame)
                }
                Err(err) => {
                    warn_once(shared, FetchRequest::KEY, api_version, &err);
                    frame
                }
            },
            None => frame,
        };
        client.write_all(&frame).await?;
    }
    Ok(())
}

fn warn_once(shared: &Shared, api_key: i16, api_version: i16, err: &RewriteError) {
    if !shared.warned.swap(true, Ordering::Relaxed) {
        warn!(advertised = %shared.advertised, api_key, api_version, error = %err,
            "front cannot rewrite a response; passing it through unchanged (reported once per \
            front)");
    }
}

/// Publishes the batches a `duplicate` fault copies, one at a time, over a connection of its own
/// to the broker; records where each copy landed so that it is not copied again.
async fn duplicator(
    broker: SocketAddr,
    mut queued: mpsc::Receiver<Copy>,
    faults: Arc<Faults>,
    front: String,
) {
    let mut conn: Option<(TcpStream, BytesMut)> = None;
    let mut correlation_id: i32 = 0;
    while let Some(copy) = queued.recv().await {
        correlation_id = correlation_id.wrapping_add(1);
        let published = tokio::time::timeout(
            Duration::from_secs(5),
            publish_copy(&mut conn, broker, &copy, correlation_id),
        )
        .await
        .unwrap_or_else(|_| Err(io::Error::new(io::ErrorKind::TimedOut, "no answer in 5 s")));
        match published {
            Ok(Some(offset)) => {
                faults.copy_written();
                debug!(%front, topic = %copy.topic, partition = copy.partition,
                    from = copy.batch.base_offset, to = offset, "duplicate: batch published again");
            }
            Ok(None) => debug!(%front, topic = %copy.topic, "duplicate: the broker refused a copy"),
            Err(err) => {
                conn = None;
                debug!(%front, error = %err, "duplicate: cannot publish a copy");
            }
        }
    }
}

async fn publish_copy(
    conn: &mut Option<(TcpStream, BytesMut)>,
    broker: SocketAddr,
    copy: &Copy,
    correlation_id: i32,
) -> io::Result<Option<i64>> {
    let request = faults::copy_request(copy, correlation_id)
        .map_err(|err| io::Error::new(io::ErrorKind::InvalidData, err.to_string()))?;
    if conn.is_none() {
        let stream = TcpStream::connect(broker).await?;
        stream.set_nodelay(true)?;
        *conn = Some((stream, BytesMut::with_capacity(1024)));
    }
    let Some((stream, buf)) = conn.as_mut() else {
        return Ok(None);
    };
    stream.write_all(&request).await?;
    let response = read_frame(stream, buf).await?.ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "the broker closed the connection",
        )
    })?;
    Ok(faults::copy_offset(&response))
}

/// Reads until `buf` holds a whole frame (4-byte big-endian size, then that many bytes) and
/// returns it, size included. `None` when the peer closed between frames.
async fn read_frame(
    reader: &mut (impl AsyncRead + Unpin),
    buf: &mut BytesMut,
) -> io::Result<Option<BytesMut>> {
    loop {
        if let Some(frame) = split_frame(buf)? {
            return Ok(Some(frame));
        }
        if reader.read_buf(buf).await? == 0 {
            return if buf.is_empty() {
                Ok(None)
            } else {
                Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "connection closed inside a frame",
                ))
            };
        }
    }
}

fn split_frame(buf: &mut BytesMut) -> io::Result<Option<BytesMut>> {
    let Some(&[a, b, c, d]) = buf.get(..4) else {
        return Ok(None);
    };
    let size = usize::try_from(i32::from_be_bytes([a, b, c, d]))
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "negative Kafka frame size"))?;
    let total = 4 + size;
    if buf.len() < total {
        // Room for the rest of the frame, bounded so a garbage size cannot allocate gigabytes
        // up front; `read_buf` keeps growing the buffer for larger frames.
        buf.reserve((total - buf.len()).min(1 << 20));
        return Ok(None);
    }
    Ok(Some(buf.split_to(total)))
}

/// Why a response could not be rewritten.
#[derive(Debug, thiserror::Error)]
pub(crate) enum RewriteError {
    #[error("cannot decode: {0}")]
    Decode(tansu_sans_io::Error),
    #[error("cannot encode: {0}")]
    Encode(tansu_sans_io::Error),
    #[error("decoded as {0}, which names no brokers")]
    Unexpected(String),
}

/// Decodes a whole response frame (size included) of `api_key`/`api_version`, points every
/// broker or coordinator address in it at `advertised`, and encodes it again. The topic ids a
/// Metadata response names are remembered in `faults` (Fetch v13+ names topics by id only).
pub(crate) fn rewrite_response(
    frame: &[u8],
    api_key: i16,
    api_version: i16,
    advertised: &HostPort,
    faults: &Faults,
) -> Result<Bytes, RewriteError> {
    let Frame { header, body, .. } =
        Frame::response_from_bytes(frame, api_key, api_version).map_err(RewriteError::Decode)?;
    let host = &advertised.host;
    let port = i32::from(advertised.port);
    let body = match body {
        Body::MetadataResponse(mut response) => {
            faults.learn_topics(&response);
            for broker in response.brokers.iter_mut().flatten() {
                broker.host.clone_from(host);
                broker.port = port;
            }
            Body::MetadataResponse(response)
        }
        Body::FindCoordinatorResponse(mut response) => {
            // v0-3 carry one coordinator in top-level fields, v4+ a list. Entries with an
            // error have no coordinator (host "", port -1) and stay as they are.
            if response.error_code == Some(0) && response.host.is_some() {
                response.host = Some(host.clone());
                response.port = Some(port);
            }
            for coordinator in response.coordinators.iter_mut().flatten() {
                if coordinator.error_code == 0 {
                    coordinator.host.clone_from(host);
                    coordinator.port = port;
                }
            }
            Body::FindCoordinatorResponse(response)
        }
        Body::DescribeClusterResponse(mut response) => {
            for broker in response.brokers.iter_mut().flatten() {
                broker.host.clone_from(host);
                broker.port = port;
            }
            Body::DescribeClusterResponse(response)
        }
        other => return Err(RewriteError::Unexpected(other.api_name().to_owned())),
    };
    Frame::response(header, body, api_key, api_version).map_err(RewriteError::Encode)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use tansu_sans_io::{
        Header, describe_cluster_response::DescribeClusterBroker,
        find_coordinator_response::Coordinator, metadata_response::MetadataResponseBroker,
    };

    use super::*;

    fn spec(advertised: (&str, u16), listen: &str) -> FrontSpec {
        FrontSpec {
            advertised: HostPort {
                host: advertised.0.into(),
                port: advertised.1,
            },
            listen: listen.parse().unwrap(),
        }
    }

    #[test]
    fn front_values_name_an_advertised_address_and_optionally_a_listen_address() {
        assert_eq!(
            parse_front("127.0.0.1:40001").unwrap(),
            spec(("127.0.0.1", 40001), "127.0.0.1:0")
        );
        assert_eq!(
            parse_front(" order-2.proxy:9092@127.0.0.1:39999 ").unwrap(),
            spec(("order-2.proxy", 9092), "127.0.0.1:39999")
        );
        assert_eq!(
            parse_front("[::1]:9092@[::1]:0").unwrap(),
            spec(("::1", 9092), "[::1]:0")
        );
        assert_eq!(
            parse_front("[::1]:9092").unwrap().advertised.to_string(),
            "[::1]:9092"
        );
        for bad in [
            "",
            "proxy",
            ":9092",
            "proxy:",
            "proxy:0",
            "proxy:65536",
            "proxy:port",
            "::1:9092",
            "[::1:9092",
            "pro xy:9092",
            "proxy:9092@",
            "proxy:9092@127.0.0.1",
            "proxy:9092@no-such-host.invalid:1",
        ] {
            let err = parse_front(bad).expect_err(bad);
            assert!(err.contains(bad.trim()), "{bad:?}: {err}");
        }
    }

    #[test]
    fn frames_are_split_only_when_complete() {
        let frame = [0, 0, 0, 3, 7, 8, 9];
        let mut buf = BytesMut::new();
        for (i, byte) in frame.iter().enumerate() {
            assert!(split_frame(&mut buf).unwrap().is_none(), "after {i} bytes");
            buf.extend_from_slice(&[*byte]);
        }
        buf.extend_from_slice(&[0, 0, 0, 0, 0, 0]);
        assert_eq!(&split_frame(&mut buf).unwrap().unwrap()[..], &frame[..]);
        assert_eq!(&split_frame(&mut buf).unwrap().unwrap()[..], &[0, 0, 0, 0]);
        assert!(split_frame(&mut buf).unwrap().is_none());
        assert_eq!(&buf[..], &[0, 0]);

        let mut negative = BytesMut::from(&[0xff, 0xff, 0xff, 0xff][..]);
        assert!(split_frame(&mut negative).is_err());
    }

    fn advertised() -> HostPort {
        HostPort {
            host: "order-2.proxy".into(),
            port: 40001,
        }
    }

    /// Encodes `body` as a response, rewrites it, and returns (original, rewritten) decoded.
    fn round_trip(body: Body, api_key: i16, api_version: i16) -> (Body, Body) {
        let header = Header::Response { correlation_id: 42 };
        let encoded = Frame::response(header.clone(), body, api_key, api_version).unwrap();
        let rewritten = rewrite_response(
            &encoded,
            api_key,
            api_version,
            &advertised(),
            &Faults::default(),
        )
        .unwrap();
        let decode = |bytes: &[u8]| {
            let frame = Frame::response_from_bytes(bytes, api_key, api_version).unwrap();
            assert_eq!(frame.header, header);
            frame.body
        };
        (decode(&encoded), decode(&rewritten))
    }

    fn metadata() -> MetadataResponse {
        MetadataResponse::default()
            .throttle_time_ms(Some(0))
            .brokers(Some(vec![
                MetadataResponseBroker::default()
                    .node_id(111)
                    .host("127.0.0.1".into())
                    .port(9092)
                    .rack(None),
            ]))
            .cluster_id(Some("reference-system".into()))
            .controller_id(Some(111))
            .topics(Some(vec![]))
            .cluster_authorized_operations(Some(-2_147_483_648))
    }

    #[test]
    fn metadata_responses_advertise_the_front_in_old_and_flexible_versions() {
        for version in [1, 4, 9, 12] {
            let (original, rewritten) =
                round_trip(metadata().into(), MetadataResponse::KEY, version);
            let Body::MetadataResponse(mut expected) = original else {
                panic!("not metadata: {original:?}");
            };
            for broker in expected.brokers.iter_mut().flatten() {
                assert_eq!((broker.host.as_str(), broker.port), ("127.0.0.1", 9092));
                broker.host = "order-2.proxy".into();
                broker.port = 40001;
            }
            assert_eq!(rewritten, Body::MetadataResponse(expected), "v{version}");
        }
    }

    #[test]
    fn find_coordinator_responses_advertise_the_front_unless_they_carry_an_error() {
        for version in [0, 2, 3] {
            let found = FindCoordinatorResponse::default()
                .throttle_time_ms(Some(0))
                .error_code(Some(0))
                .error_message(None)
                .node_id(Some(111))
                .host(Some("127.0.0.1".into()))
                .port(Some(9092))
                .coordinators(None);
            let (_, rewritten) = round_trip(found.into(), FindCoordinatorResponse::KEY, version);
            let Body::FindCoordinatorResponse(rewritten) = rewritten else {
                panic!("not find coordinator: {rewritten:?}");
            };
            assert_eq!(
                (rewritten.host.as_deref(), rewritten.port, rewritten.node_id),
                (Some("order-2.proxy"), Some(40001), Some(111)),
                "v{version}"
            );
        }

        let coordinator = |key: &str, error_code: i16, host: &str, port: i32| {
            Coordinator::default()
                .key(key.into())
                .node_id(if error_code == 0 { 111 } else { -1 })
                .host(host.into())
                .port(port)
                .error_code(error_code)
                .error_message(None)
        };
        for version in [4, 6] {
            let batch = FindCoordinatorResponse::default()
                .throttle_time_ms(Some(0))
                .coordinators(Some(vec![
                    coordinator("workers", 0, "127.0.0.1", 9092),
                    coordinator("loading", 15, "", -1),
                ]));
            let (_, rewritten) = round_trip(batch.into(), FindCoordinatorResponse::KEY, version);
            let Body::FindCoordinatorResponse(rewritten) = rewritten else {
                panic!("not find coordinator: {rewritten:?}");
            };
            assert_eq!(
                rewritten.coordinators,
                Some(vec![
                    coordinator("workers", 0, "order-2.proxy", 40001),
                    coordinator("loading", 15, "", -1),
                ]),
                "v{version}"
            );
        }
    }

    #[test]
    fn describe_cluster_responses_advertise_the_front() {
        let cluster = DescribeClusterResponse::default()
            .cluster_id("reference-system".into())
            .controller_id(111)
            .error_message(None)
            .brokers(Some(vec![
                DescribeClusterBroker::default()
                    .broker_id(111)
                    .host("127.0.0.1".into())
                    .port(9092)
                    .rack(None),
            ]));
        let (_, rewritten) = round_trip(cluster.into(), DescribeClusterResponse::KEY, 0);
        let Body::DescribeClusterResponse(rewritten) = rewritten else {
            panic!("not describe cluster: {rewritten:?}");
        };
        let broker = &rewritten.brokers.unwrap()[0];
        assert_eq!(
            (broker.host.as_str(), broker.port),
            ("order-2.proxy", 40001)
        );
    }

    #[test]
    fn undecodable_responses_are_reported() {
        let garbage = [0, 0, 0, 6, 0, 0, 0, 42, 0, 9];
        assert!(
            rewrite_response(
                &garbage,
                MetadataResponse::KEY,
                12,
                &advertised(),
                &Faults::default()
            )
            .is_err()
        );
    }

    fn request_frame(api_key: i16, api_version: i16, correlation_id: i32) -> Vec<u8> {
        let mut frame = vec![0, 0, 0, 10];
        frame.extend_from_slice(&api_key.to_be_bytes());
        frame.extend_from_slice(&api_version.to_be_bytes());
        frame.extend_from_slice(&correlation_id.to_be_bytes());
        // Null client id: the relay never looks past the correlation id.
        frame.extend_from_slice(&[0xff, 0xff]);
        frame
    }

    async fn read_whole_frame(stream: &mut TcpStream, buf: &mut BytesMut) -> BytesMut {
        read_frame(stream, buf)
            .await
            .unwrap()
            .expect("a frame, not EOF")
    }

    /// A relay between a client and a scripted broker: requests arrive split across writes,
    /// the Metadata response is rewritten, anything else passes through byte for byte, and
    /// the client's connection closes when the broker's does.
    #[tokio::test]
    async fn relay_rewrites_metadata_and_passes_everything_else_through() {
        let broker = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let broker_addr = broker.local_addr().unwrap();
        let front = Front::bind(&FrontSpec {
            advertised: advertised(),
            listen: FrontSpec::DEFAULT_LISTEN,
        })
        .await
        .unwrap();
        let front_addr = front.local;
        let serving = tokio::spawn(front.serve(broker_addr, Arc::new(Faults::default())));

        let metadata_response = Frame::response(
            Header::Response { correlation_id: 8 },
            metadata().into(),
            MetadataResponse::KEY,
            12,
        )
        .unwrap();
        // Not a real Produce response: the relay must not even try to decode it.
        let other_response = Bytes::from_static(&[0, 0, 0, 6, 0, 0, 0, 7, 1, 2]);
        let scripted = {
            let (metadata_response, other_response) =
                (metadata_response.clone(), other_response.clone());
            tokio::spawn(async move {
                let (mut conn, _) = broker.accept().await.unwrap();
                let mut buf = BytesMut::new();
                assert_eq!(
                    &read_whole_frame(&mut conn, &mut buf).await[..],
                    request_frame(0, 9, 7)
                );
                assert_eq!(
                    &read_whole_frame(&mut conn, &mut buf).await[..],
                    request_frame(3, 12, 8)
                );
                // Answer out of order, in pieces, to exercise the correlation map and buffering.
                let mut both = metadata_response.to_vec();
                both.extend_from_slice(&other_response);
                for piece in both.chunks(5) {
                    conn.write_all(piece).await.unwrap();
                    conn.flush().await.unwrap();
                    tokio::task::yield_now().await;
                }
            })
        };

        let mut client = TcpStream::connect(front_addr).await.unwrap();
        let mut requests = request_frame(0, 9, 7);
        requests.extend(request_frame(3, 12, 8));
        let (first, second) = requests.split_at(7);
        client.write_all(first).await.unwrap();
        client.flush().await.unwrap();
        tokio::task::yield_now().await;
        client.write_all(second).await.unwrap();

        let mut buf = BytesMut::new();
        let rewritten = read_whole_frame(&mut client, &mut buf).await;
        let Frame { header, body, .. } =
            Frame::response_from_bytes(&rewritten[..], MetadataResponse::KEY, 12).unwrap();
        assert_eq!(header, Header::Response { correlation_id: 8 });
        let Body::MetadataResponse(body) = body else {
            panic!("not metadata: {body:?}");
        };
        let broker = &body.brokers.unwrap()[0];
        assert_eq!(
            (broker.host.as_str(), broker.port),
            ("order-2.proxy", 40001)
        );
        assert_eq!(
            &read_whole_frame(&mut client, &mut buf).await[..],
            &other_response[..]
        );

        assert!(buf.is_empty(), "nothing else arrived: {buf:?}");
        scripted.await.unwrap();
        let mut rest = Vec::new();
        let closed = tokio::time::timeout(Duration::from_secs(5), client.read_to_end(&mut rest));
        assert_eq!(
            closed.await.unwrap().unwrap(),
            0,
            "closed when the broker closed"
        );
        serving.abort();
    }

    #[test]
    fn only_produce_requests_lose_their_acknowledgement() {
        let lost = [MessageFault::LostAck { probability: 1.0 }];
        let expected = |api_key: i16| expect(&request_frame(api_key, 9, 5), &lost, |_| true);
        assert_eq!(expected(0), Some((5, Expect::LoseAck)));
        // Fetch, OffsetCommit, Heartbeat: untouched by lost_ack.
        for api_key in [1, 8, 12] {
            assert_eq!(expected(api_key), None, "api key {api_key}");
        }
        assert!(matches!(expected(3), Some((5, Expect::Rewrite { .. }))));
        // Not this time (the probability said no), and not without a fault.
        assert_eq!(expect(&request_frame(0, 9, 5), &lost, |_| false), None);
        assert_eq!(expect(&request_frame(0, 9, 5), &[], |_| true), None);
        // Fetch responses are decoded only while a fetch fault is set.
        let delay = [MessageFault::Delay {
            topic: "t".into(),
            partition: 0,
            delay_ms: 10,
        }];
        assert!(matches!(
            expect(&request_frame(1, 16, 6), &delay, |_| true),
            Some((
                6,
                Expect::Fetch {
                    api_version: 16,
                    ..
                }
            ))
        ));
        assert_eq!(expect(&request_frame(1, 16, 6), &lost, |_| true), None);
    }

    /// With lost_ack set on the front, the produce request reaches the broker, the response
    /// before it arrives, and the produce response never does: the client's connection is reset.
    #[tokio::test]
    async fn lost_ack_forwards_the_produce_and_resets_the_client_instead_of_answering() {
        let broker = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let broker_addr = broker.local_addr().unwrap();
        let front = Front::bind(&FrontSpec {
            advertised: advertised(),
            listen: FrontSpec::DEFAULT_LISTEN,
        })
        .await
        .unwrap();
        let front_addr = front.local;
        let faults = Arc::new(Faults::default());
        faults.set(
            "lost",
            crate::faults::FaultSpec {
                fronts: Some(vec![advertised().to_string()]),
                fault: MessageFault::LostAck { probability: 1.0 },
            },
        );
        let serving = tokio::spawn(front.serve(broker_addr, Arc::clone(&faults)));
        let heartbeat_response = Bytes::from_static(&[0, 0, 0, 6, 0, 0, 0, 4, 0, 0]);
        let produce_response = Bytes::from_static(&[0, 0, 0, 6, 0, 0, 0, 7, 1, 2]);
        let scripted = {
            let (heartbeat_response, produce_response) =
                (heartbeat_response.clone(), produce_response.clone());
            tokio::spawn(async move {
                let (mut conn, _) = broker.accept().await.unwrap();
                let mut buf = BytesMut::new();
                assert_eq!(
                    &read_whole_frame(&mut conn, &mut buf).await[..],
                    request_frame(12, 4, 4)
                );
                assert_eq!(
                    &read_whole_frame(&mut conn, &mut buf).await[..],
                    request_frame(0, 9, 7),
                    "the produce request reached the broker"
                );
                conn.write_all(&heartbeat_response).await.unwrap();
                conn.write_all(&produce_response).await.unwrap();
                conn
            })
        };
        let mut client = TcpStream::connect(front_addr).await.unwrap();
        client.write_all(&request_frame(12, 4, 4)).await.unwrap();
        client.write_all(&request_frame(0, 9, 7)).await.unwrap();
        let mut buf = BytesMut::new();
        assert_eq!(
            &read_whole_frame(&mut client, &mut buf).await[..],
            &heartbeat_response[..]
        );
        let mut rest = Vec::new();
        let closed = tokio::time::timeout(Duration::from_secs(5), client.read_to_end(&mut rest))
            .await
            .expect("closed");
        assert!(
            matches!(&closed, Err(e) if e.kind() == io::ErrorKind::ConnectionReset),
            "reset, not answered: {closed:?} after {rest:?}"
        );
        assert!(buf.is_empty() && rest.is_empty(), "no produce response");
        drop(scripted.await.unwrap());
        serving.abort();
    }
}
