//! The order service binary: configuration, logging, shutdown signal, then the application.

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = match order_service::Config::from_env() {
        Ok(c) => c,
        Err(e) => platform::config::exit_on_config_error(&e),
    };
    platform::telemetry::init(order_service::SERVICE_NAME, &config.common.instance_id);
    let shutdown = platform::shutdown::install(config.common.exit_on_stdin_eof);
    let app = order_service::Application::build(config).await?;
    app.run_until_stopped(shutdown).await
}
