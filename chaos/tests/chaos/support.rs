//! Test support: an in-process chaos-proxy on port 0, small TCP upstreams, time bounds.

use std::future::Future;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use chaos::server::{Server, ServerError};
use chaos::{Client, NewProxy};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// A chaos-proxy running in this process on a free port.
pub struct TestServer {
    pub client: Client,
    pub addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    running: Option<JoinHandle<Result<(), ServerError>>>,
}

impl TestServer {
    pub async fn spawn() -> Self {
        let server = Server::bind("127.0.0.1:0").await.expect("bind the API");
        let addr = server.local_addr();
        let client = Client::new(&server.base_url()).expect("client");
        let (stop, stopped) = oneshot::channel::<()>();
        let running = tokio::spawn(server.run_until(async move {
            let _ = stopped.await;
        }));
        Self {
            client,
            addr,
            stop: Some(stop),
            running: Some(running),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Creates an enabled proxy on a free port in front of `upstream`; returns its address.
    pub async fn proxy(&self, name: &str, upstream: SocketAddr) -> SocketAddr {
        let proxy = self
            .client
            .create_proxy(&NewProxy::new(name, "127.0.0.1:0", upstream.to_string()))
            .await
            .expect("create proxy");
        proxy
            .listen
            .parse()
            .expect("the proxy reports a socket address")
    }

    /// Stops the server and waits until `run_until` has returned.
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(running) = self.running.take() {
            within(Duration::from_secs(15), "server shutdown", running)
                .await
                .expect("server task")
                .expect("run_until returns Ok");
        }
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// Aborts the upstream's accept loop when dropped.
pub struct Upstream {
    pub addr: SocketAddr,
    task: JoinHandle<()>,
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn serve<F, Fut>(handler: F) -> Upstream
where
    F: Fn(TcpStream) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind upstream");
    let addr = listener.local_addr().expect("upstream address");
    let task = tokio::spawn(async move {
        while let Ok((socket, _)) = listener.accept().await {
            tokio::spawn(handler(socket));
        }
    });
    Upstream { addr, task }
}

/// Echoes every byte back; half-closes when the client does.
pub async fn echo() -> Upstream {
    serve(|mut socket| async move {
        let (mut r, mut w) = socket.split();
        let _ = tokio::io::copy(&mut r, &mut w).await;
        let _ = w.shutdown().await;
    })
    .await
}

/// Answers each connection with a greeting naming this upstream, then echoes.
pub async fn tagged_echo(tag: &'static str) -> Upstream {
    serve(move |mut socket| async move {
        let _ = socket.write_all(tag.as_bytes()).await;
        let (mut r, mut w) = socket.split();
        let _ = tokio::io::copy(&mut r, &mut w).await;
    })
    .await
}

/// Sends `len` bytes in one write, then closes.
pub async fn source(len: usize) -> Upstream {
    serve(move |mut socket| async move {
        let data: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
        let _ = socket.write_all(&data).await;
        let _ = socket.shutdown().await;
        // Wait for the client to close, so the close is not a reset.
        let mut sink = [0u8; 1024];
        while matches!(socket.read(&mut sink).await, Ok(n) if n > 0) {}
    })
    .await
}

/// Sends `data` then closes.
pub async fn source_of(data: &'static [u8]) -> Upstream {
    serve(move |mut socket| async move {
        let _ = socket.write_all(data).await;
        let _ = socket.shutdown().await;
        let mut sink = [0u8; 1024];
        while matches!(socket.read(&mut sink).await, Ok(n) if n > 0) {}
    })
    .await
}

/// Like an HTTP server refusing a request by its head (a 413 on the declared length): reads
/// the first chunk the client sends, answers `reply` and closes without reading the rest, so
/// the kernel resets the connection under the client.
pub async fn answers_early(reply: &'static [u8]) -> Upstream {
    serve(move |mut socket| async move {
        let mut head = [0u8; 1024];
        if matches!(socket.read(&mut head).await, Ok(n) if n > 0) {
            let _ = socket.write_all(reply).await;
        }
    })
    .await
}

/// Counts what it receives; each connection reports its byte count when the client closes.
pub async fn sink() -> (Upstream, tokio::sync::mpsc::UnboundedReceiver<usize>) {
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let upstream = serve(move |mut socket| {
        let tx = tx.clone();
        async move {
            let mut total = 0;
            let mut buf = [0u8; 8192];
            while let Ok(n) = socket.read(&mut buf).await {
                if n == 0 {
                    break;
                }
                total += n;
            }
            let _ = tx.send(total);
        }
    })
    .await;
    (upstream, rx)
}

/// Fails the test if `fut` takes longer than `limit`.
pub async fn within<T>(limit: Duration, what: &str, fut: impl Future<Output = T>) -> T {
    match tokio::time::timeout(limit, fut).await {
        Ok(value) => value,
        Err(_) => panic!("{what} did not finish within {limit:?}"),
    }
}

/// Writes `msg` and reads the same number of bytes back; returns the round-trip time.
pub async fn round_trip(stream: &mut TcpStream, msg: &[u8]) -> Duration {
    let started = Instant::now();
    stream.write_all(msg).await.expect("write");
    let mut back = vec![0u8; msg.len()];
    within(
        Duration::from_secs(10),
        "echo round trip",
        stream.read_exact(&mut back),
    )
    .await
    .expect("read the echo");
    assert_eq!(back, msg, "the echo returns what was sent");
    started.elapsed()
}

/// Reads until end of file (or an error); returns what was read, the sizes of the reads and
/// how it ended.
pub async fn read_to_end(stream: &mut TcpStream) -> (Vec<u8>, Vec<usize>, std::io::Result<()>) {
    let mut data = Vec::new();
    let mut reads = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match stream.read(&mut buf).await {
            Ok(0) => return (data, reads, Ok(())),
            Ok(n) => {
                data.extend_from_slice(&buf[..n]);
                reads.push(n);
            }
            Err(err) => return (data, reads, Err(err)),
        }
    }
}

/// Polls `check` until it returns true or `limit` passes.
pub async fn eventually<F, Fut>(limit: Duration, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + limit;
    loop {
        if check().await {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{what} did not happen within {limit:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Under CI (`CI` set and not `false`) optional dependencies must be present.
pub fn under_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "false")
}
