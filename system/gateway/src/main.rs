//! The `gateway` binary: configuration, logs, shutdown signal, then [`gateway::Application`].

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = match gateway::Config::from_env() {
        Ok(c) => c,
        Err(e) => platform::config::exit_on_config_error(&e),
    };
    platform::telemetry::init(gateway::config::SERVICE_NAME, &config.common.instance_id);
    let shutdown = platform::shutdown::install(config.common.exit_on_stdin_eof);
    let app = gateway::Application::build(config).await?;
    app.run_until_stopped(shutdown).await
}
