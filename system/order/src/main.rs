//! The order service binary: configuration, then telemetry, the shutdown signal and the
//! application (see `platform::service::run_main`).

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> anyhow::Result<()> {
    let config = match order_service::Config::from_env() {
        Ok(c) => c,
        Err(e) => platform::config::exit_on_config_error(&e),
    };
    let common = config.common.clone();
    platform::service::run_main(
        order_service::SERVICE_NAME,
        &common,
        |shutdown| async move {
            order_service::Application::build(config)
                .await?
                .run_until_stopped(shutdown)
                .await
        },
    )
}
