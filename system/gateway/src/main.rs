//! The `gateway` binary: configuration, then telemetry, the shutdown signal and
//! [`gateway::Application`] (see `platform::service::run_main`).

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> anyhow::Result<()> {
    let config = match gateway::Config::from_env() {
        Ok(c) => c,
        Err(e) => platform::config::exit_on_config_error(&e),
    };
    let common = config.common.clone();
    platform::service::run_main(
        gateway::config::SERVICE_NAME,
        &common,
        |shutdown| async move {
            gateway::Application::build(config)
                .await?
                .run_until_stopped(shutdown)
                .await
        },
    )
}
