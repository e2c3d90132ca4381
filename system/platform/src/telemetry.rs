//! Logs through `tracing`: JSON lines on stderr by default (`LOG_FORMAT=json`), readable text with
//! `LOG_FORMAT=pretty`. `RUST_LOG` filters (default `info`). Every line carries the service and
//! instance, so the interleaved output of several instances stays attributable.

use tracing_subscriber::{EnvFilter, fmt, prelude::*};

/// Installs the global subscriber. Calling it twice is harmless (the second call does nothing),
/// which keeps tests that build several apps in one process simple.
pub fn init(service: &str, instance_id: &str) {
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new("info,sqlx=warn,rdkafka=warn,tower_http=info"));
    let pretty = matches!(
        std::env::var(crate::config::LOG_FORMAT).as_deref(),
        Ok("pretty" | "text")
    );
    let registry = tracing_subscriber::registry().with(filter);
    let result = if pretty {
        registry
            .with(fmt::layer().with_writer(std::io::stderr).with_target(false))
            .try_init()
    } else {
        registry
            .with(
                fmt::layer()
                    .json()
                    .flatten_event(true)
                    .with_current_span(true)
                    .with_span_list(false)
                    .with_writer(std::io::stderr),
            )
            .try_init()
    };
    if result.is_ok() {
        tracing::info!(service, instance = instance_id, "logging initialised");
    }
}
