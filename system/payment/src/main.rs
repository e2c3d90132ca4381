//! The payment service binary: configuration, then telemetry, the shutdown signal and the library's
//! [`Application`](payment_service::Application) (see `platform::service::run_main`).

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> anyhow::Result<()> {
    let config = match payment_service::Config::from_env() {
        Ok(c) => c,
        Err(e) => platform::config::exit_on_config_error(&e),
    };
    let common = config.common.clone();
    platform::service::run_main(payment_service::SERVICE, &common, |shutdown| async move {
        payment_service::Application::build(config)
            .await?
            .run_until_stopped(shutdown)
            .await
    })
}
