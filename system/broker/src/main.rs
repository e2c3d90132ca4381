//! `embedded-broker`: the local backend's Kafka-compatible broker. See the library docs.

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::process::ExitCode;

use embedded_broker::{Opts, init_logging, run};

#[tokio::main]
async fn main() -> ExitCode {
    let opts = match Opts::parse_args() {
        Ok(opts) => opts,
        Err(code) => return code,
    };
    if let Err(err) = init_logging() {
        eprintln!("embedded-broker: cannot initialise logging (check RUST_LOG): {err}");
        return ExitCode::from(embedded_broker::EXIT_CONFIG);
    }
    match run(opts).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            tracing::error!(error = %err, "embedded-broker stopped with an error");
            ExitCode::from(err.exit_code())
        }
    }
}
