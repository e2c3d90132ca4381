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
    let stop = lifeline::stop_requested(watch_stdin);
    tokio::spawn(async move {
        let reason = stop.await;
        tracing::info!(reason, "shutdown requested");
        t.cancel();
    });
    token
}
