//! One proxied connection: client ⇄ chaos-proxy ⇄ upstream, with the proxy's toxics applied.
//!
//! Each direction (upstream: client → server, downstream: server → client) is a reader that
//! keeps reading the sending socket into a bounded channel, and a *chain* that passes each chunk
//! through the direction's toxics and writes the result. Toxics do not sleep: they stamp each
//! piece of data with the time it may be written (latency: read time + delay; bandwidth: paced at
//! the rate; slicer: pieces `delay` apart), or drop it (timeout), or queue a close or a reset.
//! The chain writes the pieces in order when their time comes. Because the reader keeps going
//! while a piece waits, a 1 s latency delays every chunk by 1 s without cutting throughput to
//! one chunk per second, as in Toxiproxy.
//!
//! The chain watches the proxy's toxic set and re-reads it between chunks, so a toxic added,
//! updated or removed acts on this connection at once. On such a change, data already waiting
//! is released immediately (like Toxiproxy, which flushes a toxic's buffer when it is
//! interrupted), and a close or reset queued by a toxic that is gone is cancelled.
//!
//! Toxicity is decided once per connection and toxic (again when the toxic is updated).
//! A timeout toxic's clock starts when it begins to apply to the connection (connection start,
//! or when it was added). Removing a timeout toxic that applied closes the connection, as
//! Toxiproxy does: bytes were dropped, so the stream cannot go on. A reset_peer toxic starts its
//! clock when data reaches it, also as in Toxiproxy; at the end both sockets are closed with
//! `SO_LINGER` 0, so both peers see a TCP RST.
//!
//! End of file is forwarded as a half-close (`shutdown(Write)`), delayed by slow_close. The
//! connection ends when both directions have ended, when a toxic closes or resets it, when a
//! socket fails to read, or when the proxy is disabled (the cancellation token). A failed
//! write ends only its own direction: the peer it could not write to is the other direction's
//! sender, whose stream ends too, after what it sent before going.

use std::collections::{HashSet, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::metrics::Counters;
use super::registry::{ActiveToxic, ToxicSet};
use crate::model::{Stream, ToxicAttributes};

/// How long connecting to the upstream may take before the client is disconnected.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Most bytes read from a socket at once.
const READ_CHUNK: usize = 32 * 1024;
/// Chunks read ahead of the chain.
const READ_AHEAD: usize = 16;
/// Bytes the chain holds back (delayed or paced) before it stops taking more input; the reader
/// then stops too, and TCP flow control slows the sender.
const MAX_QUEUED_BYTES: usize = 1024 * 1024;

/// What a connection task needs from its proxy.
pub(crate) struct LinkCtx {
    pub proxy: String,
    pub upstream: String,
    pub peer: SocketAddr,
    pub toxics: watch::Receiver<ToxicSet>,
    pub counters: Arc<Counters>,
    pub cancel: CancellationToken,
}

/// How a direction (or the whole connection) ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum End {
    /// The sender closed and the close was forwarded.
    Eof,
    /// Writing failed: the receiver is gone. The other direction still delivers what that same
    /// peer sent before it went (an HTTP server's early 413 before it resets the connection
    /// under a body it did not read), and ends when that peer's stream does.
    Gone,
    /// Close both sockets.
    Close,
    /// Close both sockets with a TCP RST.
    Reset,
}

/// Proxies one accepted client connection until it ends.
pub(crate) async fn serve(mut client: TcpStream, ctx: LinkCtx) {
    let _active = ctx.counters.connection();
    let connect = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(ctx.upstream.as_str()));
    let mut upstream = tokio::select! {
        () = ctx.cancel.cancelled() => return,
        connected = connect => match connected {
            Ok(Ok(stream)) => stream,
            Ok(Err(err)) => {
                tracing::warn!(proxy = %ctx.proxy, client = %ctx.peer, upstream = %ctx.upstream, error = %err,
                    "cannot connect to the upstream; closing the client connection");
                return;
            }
            Err(_) => {
                tracing::warn!(proxy = %ctx.proxy, client = %ctx.peer, upstream = %ctx.upstream,
                    "connecting to the upstream timed out; closing the client connection");
                return;
            }
        },
    };
    // Small requests must not wait for Nagle's algorithm: the proxy adds no delay of its own.
    let _ = client.set_nodelay(true);
    let _ = upstream.set_nodelay(true);
    tracing::debug!(proxy = %ctx.proxy, client = %ctx.peer, upstream = %ctx.upstream, "connection opened");

    let end = {
        let (client_read, client_write) = client.split();
        let (upstream_read, upstream_write) = upstream.split();
        let up = pipe(
            Stream::Upstream,
            client_read,
            upstream_write,
            ctx.toxics.clone(),
            &ctx.counters,
        );
        let down = pipe(
            Stream::Downstream,
            upstream_read,
            client_write,
            ctx.toxics.clone(),
            &ctx.counters,
        );
        both(up, down, &ctx.cancel).await
    };
    if end == End::Reset {
        for socket in [&client, &upstream] {
            // Linger 0: close() sends RST and discards unsent data.
            if let Err(err) = socket2::SockRef::from(socket).set_linger(Some(Duration::ZERO)) {
                tracing::debug!(proxy = %ctx.proxy, error = %err, "cannot set SO_LINGER for a reset");
            }
        }
    }
    tracing::debug!(proxy = %ctx.proxy, client = %ctx.peer, ?end, "connection closed");
}

/// Runs both directions until both reached end of file, or one closes or resets the connection,
/// or the proxy stops.
async fn both(
    up: impl Future<Output = End>,
    down: impl Future<Output = End>,
    cancel: &CancellationToken,
) -> End {
    tokio::pin!(up, down);
    let (mut up_done, mut down_done) = (false, false);
    loop {
        let end = tokio::select! {
            () = cancel.cancelled() => return End::Close,
            end = &mut up, if !up_done => {
                up_done = true;
                end
            }
            end = &mut down, if !down_done => {
                down_done = true;
                end
            }
        };
        if !matches!(end, End::Eof | End::Gone) {
            return end;
        }
        if up_done && down_done {
            return end;
        }
    }
}

/// What the reader hands the chain.
enum Input {
    Data(Bytes, Instant),
    Eof,
    /// The socket failed: close the connection once queued data is out.
    Failed,
}

/// One direction: reader and chain, until the chain ends.
async fn pipe<R, W>(
    stream: Stream,
    src: R,
    dst: W,
    mut toxics: watch::Receiver<ToxicSet>,
    counters: &Counters,
) -> End
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let (tx, rx) = mpsc::channel(READ_AHEAD);
    let initial = toxics.borrow_and_update().clone();
    let chain = Chain::new(stream, &initial).run(rx, dst, toxics, counters);
    let reader = read_loop(stream, src, tx, counters);
    tokio::pin!(chain, reader);
    let mut reading = true;
    loop {
        tokio::select! {
            end = &mut chain => return end,
            () = &mut reader, if reading => reading = false,
        }
    }
}

async fn read_loop<R: AsyncRead + Unpin>(
    stream: Stream,
    mut src: R,
    tx: mpsc::Sender<Input>,
    counters: &Counters,
) {
    let mut buf = BytesMut::new();
    loop {
        buf.reserve(READ_CHUNK);
        let input = match src.read_buf(&mut buf).await {
            Ok(0) => Input::Eof,
            Ok(n) => {
                counters.received(stream, n);
                Input::Data(buf.split().freeze(), Instant::now())
            }
            Err(_) => Input::Failed,
        };
        let more = matches!(input, Input::Data(..));
        if tx.send(input).await.is_err() || !more {
            return;
        }
    }
}

/// A piece of output waiting in the chain. `at: None` means held until the toxics change.
#[derive(Debug)]
enum Out {
    Data {
        bytes: Bytes,
        at: Option<Instant>,
    },
    Eof {
        at: Instant,
    },
    /// `by`: the toxic that asked for it (`None`: the socket failed).
    Close {
        at: Instant,
        by: Option<u64>,
    },
    Reset {
        at: Instant,
        by: u64,
    },
}

impl Out {
    fn at(&self) -> Option<Instant> {
        match self {
            Out::Data { at, .. } => *at,
            Out::Eof { at } | Out::Close { at, .. } | Out::Reset { at, .. } => Some(*at),
        }
    }
}

/// One toxic as it acts on this direction of this connection.
struct Applied {
    id: u64,
    revision: u64,
    /// The toxicity roll for this connection.
    applies: bool,
    attributes: ToxicAttributes,
    /// When it began to apply to this connection (timeout's clock).
    since: Instant,
    /// limit_data: bytes let through so far.
    passed: u64,
    /// bandwidth and slicer: the earliest time the next piece may go.
    next_free: Option<Instant>,
    /// reset_peer: the reset is queued; limit_data: the close is queued.
    fired: bool,
}

impl Applied {
    fn new(active: &ActiveToxic, now: Instant) -> Self {
        Self {
            id: active.id,
            revision: active.revision,
            applies: roll(active.toxic.toxicity),
            attributes: active.toxic.attributes.clone(),
            since: now,
            passed: 0,
            next_free: None,
            fired: false,
        }
    }

    /// The toxic was updated: new attributes and a new roll; counters carry on.
    fn revise(&mut self, active: &ActiveToxic, now: Instant) {
        self.revision = active.revision;
        self.applies = roll(active.toxic.toxicity);
        self.attributes = active.toxic.attributes.clone();
        self.since = now;
    }

    /// Passes output pieces through this toxic. `read_at` is when the chunk was read.
    fn apply(&mut self, items: Vec<Out>, read_at: Instant, now: Instant) -> Vec<Out> {
        match self.attributes {
            ToxicAttributes::Latency { latency, jitter } => items
                .into_iter()
                .map(|item| match item {
                    Out::Data {
                        bytes,
                        at: Some(at),
                    } => Out::Data {
                        bytes,
                        at: Some(at.max(after(read_at, jittered(latency, jitter)))),
                    },
                    other => other,
                })
                .collect(),
            ToxicAttributes::Bandwidth { rate: 0 } => items
                .into_iter()
                .map(|item| match item {
                    Out::Data { bytes, .. } => Out::Data { bytes, at: None },
                    other => other,
                })
                .collect(),
            ToxicAttributes::Bandwidth { rate } => {
                // Pieces of 100 ms worth of data, as Toxiproxy sends them.
                let piece = usize::try_from(rate.saturating_mul(100))
                    .unwrap_or(usize::MAX)
                    .max(1);
                let mut out = Vec::with_capacity(items.len());
                for item in items {
                    let Out::Data {
                        mut bytes,
                        at: Some(at),
                    } = item
                    else {
                        out.push(item);
                        continue;
                    };
                    while !bytes.is_empty() {
                        let chunk = bytes.split_to(piece.min(bytes.len()));
                        let start = self.next_free.map_or(at, |free| free.max(at));
                        // rate is bytes per millisecond: one byte takes 1e6 / rate ns.
                        let nanos = (chunk.len() as u128 * 1_000_000) / u128::from(rate);
                        let done = after(
                            start,
                            Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX)),
                        );
                        self.next_free = Some(done);
                        out.push(Out::Data {
                            bytes: chunk,
                            at: Some(done),
                        });
                    }
                }
                out
            }
            ToxicAttributes::SlowClose { .. } => items,
            ToxicAttributes::Timeout { .. } => items
                .into_iter()
                .filter(|item| !matches!(item, Out::Data { .. }))
                .collect(),
            ToxicAttributes::ResetPeer { timeout } => {
                let mut out = Vec::new();
                for item in items {
                    match item {
                        Out::Data { at, .. } => {
                            if !self.fired {
                                self.fired = true;
                                out.push(Out::Reset {
                                    at: after(at.unwrap_or(now), Duration::from_millis(timeout)),
                                    by: self.id,
                                });
                            }
                        }
                        other => out.push(other),
                    }
                }
                out
            }
            ToxicAttributes::Slicer {
                average_size,
                size_variation,
                delay,
            } => {
                let average = usize::try_from(average_size).unwrap_or(usize::MAX).max(1);
                let variation = usize::try_from(size_variation).unwrap_or(usize::MAX);
                let gap = Duration::from_micros(delay);
                let mut out = Vec::with_capacity(items.len());
                for item in items {
                    let Out::Data {
                        bytes,
                        at: Some(at),
                    } = item
                    else {
                        out.push(item);
                        continue;
                    };
                    let mut slices = Vec::new();
                    slice(0, bytes.len(), average, variation, &mut slices);
                    for (start, end) in slices {
                        let send_at = self.next_free.map_or(at, |free| free.max(at));
                        self.next_free = Some(after(send_at, gap));
                        out.push(Out::Data {
                            bytes: bytes.slice(start..end),
                            at: Some(send_at),
                        });
                    }
                }
                out
            }
            ToxicAttributes::LimitData { bytes: limit } => {
                let mut out = Vec::with_capacity(items.len() + 1);
                for item in items {
                    let Out::Data { mut bytes, at } = item else {
                        out.push(item);
                        continue;
                    };
                    if self.fired {
                        continue;
                    }
                    let remaining = limit.saturating_sub(self.passed);
                    if (bytes.len() as u64) > remaining {
                        bytes.truncate(usize::try_from(remaining).unwrap_or(usize::MAX));
                    }
                    self.passed += bytes.len() as u64;
                    if !bytes.is_empty() {
                        out.push(Out::Data { bytes, at });
                    }
                    if self.passed >= limit {
                        self.fired = true;
                        out.push(Out::Close {
                            at: at.unwrap_or(now),
                            by: Some(self.id),
                        });
                    }
                }
                out
            }
        }
    }
}

/// Splits `start..end` into slices of at most `average + variation` bytes, halving with a
/// random offset of ± `variation` (Toxiproxy's algorithm, which keeps sizes evenly spread).
fn slice(
    start: usize,
    end: usize,
    average: usize,
    variation: usize,
    out: &mut Vec<(usize, usize)>,
) {
    if end - start <= average.saturating_add(variation) {
        if end > start {
            out.push((start, end));
        }
        return;
    }
    let mut mid = start + (end - start) / 2;
    if variation > 0 {
        let offset = rand::random_range(0..variation.saturating_mul(2));
        mid = (mid + offset).saturating_sub(variation);
    }
    let mid = mid.clamp(start + 1, end - 1);
    slice(start, mid, average, variation, out);
    slice(mid, end, average, variation, out);
}

fn roll(toxicity: f32) -> bool {
    if toxicity >= 1.0 {
        true
    } else if toxicity > 0.0 {
        rand::random::<f32>() < toxicity
    } else {
        false
    }
}

fn jittered(latency: u64, jitter: u64) -> Duration {
    let ms = if jitter > 0 {
        let offset = rand::random_range(0..jitter.saturating_mul(2));
        latency.saturating_add(offset).saturating_sub(jitter)
    } else {
        latency
    };
    Duration::from_millis(ms)
}

/// `at + d`, saturating far in the future instead of overflowing.
fn after(at: Instant, d: Duration) -> Instant {
    at.checked_add(d).unwrap_or_else(far_future)
}

fn far_future() -> Instant {
    // About 30 years: never reached, and far from any overflow.
    Instant::now() + Duration::from_secs(86_400 * 365 * 30)
}

async fn sleep_until(at: Option<Instant>) {
    tokio::time::sleep_until(at.unwrap_or_else(far_future)).await;
}

/// The toxics of one direction of one connection, and the output they hold back.
struct Chain {
    stream: Stream,
    toxics: Vec<Applied>,
    queue: VecDeque<Out>,
    queued_bytes: usize,
    /// Output leaves in order: nothing is queued to go before what is already queued.
    last_at: Instant,
    eof: bool,
}

impl Chain {
    fn new(stream: Stream, set: &ToxicSet) -> Self {
        let now = Instant::now();
        Self {
            stream,
            toxics: set
                .stream(stream)
                .iter()
                .map(|a| Applied::new(a, now))
                .collect(),
            queue: VecDeque::new(),
            queued_bytes: 0,
            last_at: now,
            eof: false,
        }
    }

    async fn run<W: AsyncWrite + Unpin>(
        mut self,
        mut input: mpsc::Receiver<Input>,
        mut dst: W,
        mut toxics: watch::Receiver<ToxicSet>,
        counters: &Counters,
    ) -> End {
        let mut watching = true;
        loop {
            // What is due goes out at once: a timer would round up to tokio's next 1 ms tick and
            // add that to every hop of an unfaulted connection.
            while self
                .queue
                .front()
                .and_then(Out::at)
                .is_some_and(|at| at <= Instant::now())
            {
                if let Some(end) = self.emit(&mut dst, counters).await {
                    return end;
                }
            }
            let due = self.queue.front().and_then(Out::at);
            let deadline = self.timeout_deadline();
            let can_read = !self.eof && self.queued_bytes < MAX_QUEUED_BYTES;
            tokio::select! {
                biased;
                changed = toxics.changed(), if watching => match changed {
                    Ok(()) => {
                        let set = toxics.borrow_and_update().clone();
                        if let Some(end) = self.update(&set) {
                            return end;
                        }
                    }
                    // The proxy is gone; its cancellation ends this connection.
                    Err(_) => watching = false,
                },
                () = sleep_until(deadline), if deadline.is_some() => return End::Close,
                () = sleep_until(due), if due.is_some() => {
                    if let Some(end) = self.emit(&mut dst, counters).await {
                        return end;
                    }
                }
                received = input.recv(), if can_read => self.take(received.unwrap_or(Input::Eof)),
                else => return End::Close,
            }
        }
    }

    /// Runs one input through the toxics and queues the result.
    fn take(&mut self, input: Input) {
        let now = Instant::now();
        match input {
            Input::Data(bytes, read_at) => {
                let mut items = vec![Out::Data {
                    bytes,
                    at: Some(now),
                }];
                for toxic in self.toxics.iter_mut().filter(|t| t.applies) {
                    items = toxic.apply(items, read_at, now);
                    if items.is_empty() {
                        break;
                    }
                }
                for item in items {
                    self.push(item);
                }
            }
            Input::Eof => {
                self.eof = true;
                let at = after(now, self.slow_close_delay());
                self.push(Out::Eof { at });
            }
            Input::Failed => {
                self.eof = true;
                self.push(Out::Close { at: now, by: None });
            }
        }
    }

    fn push(&mut self, mut item: Out) {
        match &mut item {
            Out::Data { bytes, at } => {
                self.queued_bytes += bytes.len();
                if let Some(at) = at {
                    *at = (*at).max(self.last_at);
                    self.last_at = *at;
                }
            }
            Out::Eof { at } | Out::Close { at, .. } | Out::Reset { at, .. } => {
                *at = (*at).max(self.last_at);
                self.last_at = *at;
            }
        }
        self.queue.push_back(item);
    }

    /// Writes (or acts on) the first queued piece, whose time has come.
    async fn emit<W: AsyncWrite + Unpin>(
        &mut self,
        dst: &mut W,
        counters: &Counters,
    ) -> Option<End> {
        match self.queue.pop_front()? {
            Out::Data { bytes, .. } => {
                self.queued_bytes = self.queued_bytes.saturating_sub(bytes.len());
                if dst.write_all(&bytes).await.is_err() {
                    return Some(End::Gone);
                }
                counters.sent(self.stream, bytes.len());
                None
            }
            Out::Eof { .. } => {
                // The receiver may already be gone; the other direction notices that itself.
                let _ = dst.shutdown().await;
                Some(End::Eof)
            }
            Out::Close { .. } => Some(End::Close),
            Out::Reset { .. } => Some(End::Reset),
        }
    }

    /// The proxy's toxics changed: adopt the new list for this direction.
    fn update(&mut self, set: &ToxicSet) -> Option<End> {
        let wanted = set.stream(self.stream);
        let unchanged = wanted.len() == self.toxics.len()
            && wanted
                .iter()
                .zip(&self.toxics)
                .all(|(w, a)| w.id == a.id && w.revision == a.revision);
        if unchanged {
            return None;
        }
        let now = Instant::now();
        let mut old = std::mem::take(&mut self.toxics);
        for active in wanted {
            match old.iter().position(|a| a.id == active.id) {
                Some(i) => {
                    let mut applied = old.swap_remove(i);
                    if applied.revision != active.revision {
                        applied.revise(active, now);
                    }
                    self.toxics.push(applied);
                }
                None => self.toxics.push(Applied::new(active, now)),
            }
        }
        // `old` now holds the removed toxics.
        if old
            .iter()
            .any(|a| a.applies && matches!(a.attributes, ToxicAttributes::Timeout { .. }))
        {
            return Some(End::Close);
        }
        let live: HashSet<u64> = self
            .toxics
            .iter()
            .filter(|a| a.applies)
            .map(|a| a.id)
            .collect();
        self.queue.retain(|item| match item {
            Out::Close { by: Some(id), .. } | Out::Reset { by: id, .. } => live.contains(id),
            _ => true,
        });
        let eof_at = after(now, self.slow_close_delay());
        let mut last = now;
        for item in &mut self.queue {
            match item {
                Out::Data { at, .. } => *at = Some(last),
                Out::Eof { at } => {
                    *at = eof_at.max(last);
                    last = *at;
                }
                Out::Close { at, .. } | Out::Reset { at, .. } => {
                    *at = (*at).max(last);
                    last = *at;
                }
            }
        }
        self.last_at = last;
        None
    }

    /// When an applying timeout toxic closes the connection (none for timeout 0).
    fn timeout_deadline(&self) -> Option<Instant> {
        self.toxics
            .iter()
            .filter(|a| a.applies)
            .filter_map(|a| match a.attributes {
                ToxicAttributes::Timeout { timeout } if timeout > 0 => {
                    Some(after(a.since, Duration::from_millis(timeout)))
                }
                _ => None,
            })
            .min()
    }

    fn slow_close_delay(&self) -> Duration {
        self.toxics
            .iter()
            .filter(|a| a.applies)
            .filter_map(|a| match a.attributes {
                ToxicAttributes::SlowClose { delay } => Some(Duration::from_millis(delay)),
                _ => None,
            })
            .max()
            .unwrap_or(Duration::ZERO)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slices_cover_the_data_in_order_within_the_size_bound() {
        for len in [1, 9, 10, 11, 100, 1000, 32 * 1024] {
            let mut slices = Vec::new();
            slice(0, len, 10, 3, &mut slices);
            let mut expected_start = 0;
            for &(start, end) in &slices {
                assert_eq!(start, expected_start, "contiguous for len {len}");
                assert!(
                    end > start && end - start <= 13,
                    "{start}..{end} for len {len}"
                );
                expected_start = end;
            }
            assert_eq!(expected_start, len);
        }
    }

    #[test]
    fn toxicity_zero_never_applies_and_one_always_does() {
        assert!((0..1000).all(|_| roll(1.0)));
        assert!((0..1000).all(|_| !roll(0.0)));
    }

    #[test]
    fn jitter_stays_within_plus_or_minus_the_bound() {
        for _ in 0..1000 {
            let d = jittered(100, 20).as_millis();
            assert!((80..=120).contains(&d), "{d}");
        }
        assert!(jittered(5, 10).as_millis() <= 15);
    }
}
