//! How a supervised process learns it should stop: SIGINT, SIGTERM, or end of file on stdin.
//!
//! Every process the harness starts (services, the broker, the chaos-proxy) gets a piped stdin
//! it never reads from except to notice EOF: when the supervisor dies, even by SIGKILL, its end
//! of the pipe closes, the child sees EOF and stops, and nothing is left running. One function
//! for all of them, so the three stop the same way.

use std::future::Future;

/// Installs the SIGINT and SIGTERM handlers now (a signal arriving before the future is polled
/// is not lost) and, with `watch_stdin`, starts watching stdin; the future resolves with the
/// reason the process should stop: `"SIGINT"`, `"SIGTERM"` or `"stdin closed (supervisor gone)"`.
/// A handler that cannot be installed is logged and only that way to stop is lost. Must be
/// called within a tokio runtime.
pub fn stop_requested(watch_stdin: bool) -> impl Future<Output = &'static str> + Send + 'static {
    use tokio::signal::unix::{SignalKind, signal};
    let mut interrupt = signal(SignalKind::interrupt())
        .inspect_err(|e| tracing::warn!(error = %e, "cannot listen for SIGINT"))
        .ok();
    let mut terminate = signal(SignalKind::terminate())
        .inspect_err(|e| tracing::warn!(error = %e, "cannot listen for SIGTERM"))
        .ok();
    let stdin_closed = watch_stdin.then(watch_stdin_eof).flatten();
    async move {
        let stdin = async {
            match stdin_closed {
                // A dropped sender (the thread died) means stdin is unusable: treat it as closed.
                Some(rx) => {
                    let _ = rx.await;
                }
                None => std::future::pending::<()>().await,
            }
        };
        tokio::select! {
            () = recv(interrupt.as_mut()) => "SIGINT",
            () = recv(terminate.as_mut()) => "SIGTERM",
            () = stdin => "stdin closed (supervisor gone)",
        }
    }
}

/// The next delivery of `signal`; never, without a handler.
async fn recv(signal: Option<&mut tokio::signal::unix::Signal>) {
    match signal {
        Some(s) => {
            s.recv().await;
        }
        None => std::future::pending::<()>().await,
    }
}

/// A receiver completed when stdin reaches EOF. A plain thread, not `tokio::io::stdin`: that one
/// reads on the blocking pool, the read cannot be cancelled, and dropping the runtime waits for
/// it, so a process stopped by a signal would hang until its supervisor closed stdin.
fn watch_stdin_eof() -> Option<tokio::sync::oneshot::Receiver<()>> {
    let (closed_tx, closed_rx) = tokio::sync::oneshot::channel::<()>();
    let watcher = std::thread::Builder::new()
        .name("stdin-eof".into())
        .spawn(move || {
            use std::io::Read;
            let mut stdin = std::io::stdin().lock();
            let mut buf = [0u8; 256];
            loop {
                match stdin.read(&mut buf) {
                    Ok(0) => break,
                    Ok(_) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(_) => break,
                }
            }
            let _ = closed_tx.send(());
        });
    match watcher {
        Ok(_) => Some(closed_rx),
        Err(e) => {
            tracing::warn!(error = %e, "cannot watch stdin; only signals will stop this process");
            None
        }
    }
}
