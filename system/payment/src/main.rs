//! The payment service binary: configuration, logs and shutdown signal, then the library's
//! [`Application`](payment_service::Application).

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = match payment_service::Config::from_env() {
        Ok(c) => c,
        Err(e) => platform::config::exit_on_config_error(&e),
    };
    platform::telemetry::init(payment_service::SERVICE, &config.common.instance_id);
    let shutdown = platform::shutdown::install(config.common.exit_on_stdin_eof);
    let app = payment_service::Application::build(config).await?;
    app.run_until_stopped(shutdown).await
}
