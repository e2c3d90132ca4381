//! One shutdown signal for a whole process.
//!
//! SIGINT, SIGTERM and (when the supervisor asks for it) EOF on stdin all cancel the same
//! [`CancellationToken`]. Background loops select on it and return when they have drained; the
//! HTTP server uses it for graceful shutdown. Stdin EOF is how a service notices that the harness
//! that started it died, even by SIGKILL: its end of the pipe closes, and nothing is left running.

use tokio_util::sync::CancellationToken;

/// Returns a token cancelled on SIGINT, SIGTERM, or stdin EOF when `watch_stdin` is set.
pub fn install(watch_stdin: bool) -> CancellationToken {
    let token = CancellationToken::new();
    let t = token.clone();
    tokio::spawn(async move {
        let reason = wait_for_signal(watch_stdin).await;
        tracing::info!(reason, "shutdown requested");
        t.cancel();
    });
    token
}

async fn wait_for_signal(watch_stdin: bool) -> &'static str {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => Some(s),
        Err(e) => {
            tracing::warn!(error = %e, "cannot listen for SIGTERM");
            None
        }
    };
    let stdin_closed = async {
        if !watch_stdin {
            return std::future::pending::<()>().await;
        }
        // A plain thread, not `tokio::io::stdin`: that one reads on the blocking pool, the read
        // cannot be cancelled, and dropping the runtime waits for it, so a process stopped by a
        // signal would hang until its supervisor closed stdin.
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
                        Ok(_) => continue,
                        Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                        Err(_) => break,
                    }
                }
                let _ = closed_tx.send(());
            });
        match watcher {
            // A dropped sender (the thread died) means stdin is unusable: treat it as closed.
            Ok(_) => {
                let _ = closed_rx.await;
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot watch stdin; only signals will stop this process");
                std::future::pending::<()>().await
            }
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => "SIGINT",
        _ = async {
            match term.as_mut() {
                Some(t) => { t.recv().await; }
                None => std::future::pending::<()>().await,
            }
        } => "SIGTERM",
        _ = stdin_closed => "stdin closed (supervisor gone)",
    }
}
