//! Finding (and, from a source checkout, building) the binaries the local backend runs.
//!
//! The services are separate binaries, not modules of the harness: a kill -9 must hit one
//! instance only, and the broker's SQLite (libsql) must not share a binary with sqlx's. They
//! live next to the harness in cargo's target directory. When the harness runs from a checkout
//! (`cargo run -p harness`), it asks cargo to build them first with the same profile; cargo does
//! nothing when they are fresh, and so an edited service is never run stale.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};

pub const BROKER: &str = "embedded-broker";
pub const GATEWAY: &str = "gateway";
pub const ORDER: &str = "order-service";
pub const INVENTORY: &str = "inventory-service";
pub const PAYMENT: &str = "payment-service";
pub const CHAOS_PROXY: &str = "chaos-proxy";

/// The binary a service's instances run.
pub fn of(service: crate::environment::Service) -> &'static str {
    use crate::environment::Service;
    match service {
        Service::Inventory => INVENTORY,
        Service::Payment => PAYMENT,
        Service::Order => ORDER,
    }
}
const ALL: [&str; 6] = [BROKER, GATEWAY, ORDER, INVENTORY, PAYMENT, CHAOS_PROXY];

/// Where the binaries are.
#[derive(Debug, Clone)]
pub struct Binaries {
    dir: PathBuf,
}

impl Binaries {
    /// Locates the binaries next to the running executable (or one level up, for test binaries
    /// in `target/<profile>/deps`), building them first when `build` is set and we run from a
    /// cargo target directory of this workspace.
    pub async fn locate(build: bool) -> anyhow::Result<Self> {
        let exe = std::env::current_exe().context("finding the harness executable")?;
        let mut dir = exe
            .parent()
            .context("the harness executable has no parent directory")?
            .to_path_buf();
        if dir.file_name().is_some_and(|n| n == "deps")
            && let Some(parent) = dir.parent()
        {
            dir = parent.to_path_buf();
        }
        let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let from_checkout = workspace.join("Cargo.toml").exists()
            && dir
                .parent()
                .is_some_and(|p| p.ends_with("target") || p.join("CACHEDIR.TAG").exists());
        let missing = || ALL.iter().any(|b| !dir.join(b).exists());
        if (build || missing()) && from_checkout {
            cargo_build(&workspace, &dir).await?;
        }
        if missing() {
            let names: Vec<&str> = ALL
                .iter()
                .copied()
                .filter(|b| !dir.join(b).exists())
                .collect();
            bail!(
                "missing binaries {} in {}: build them with `cargo build --bins -p gateway -p \
                 order-service -p inventory-service -p payment-service -p embedded-broker -p \
                 chaos`",
                names.join(", "),
                dir.display()
            );
        }
        Ok(Self { dir })
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }
}

async fn cargo_build(workspace: &Path, target_profile_dir: &Path) -> anyhow::Result<()> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let release = target_profile_dir
        .file_name()
        .is_some_and(|n| n == "release");
    let mut cmd = tokio::process::Command::new(cargo);
    cmd.arg("build")
        .arg("--quiet")
        .arg("--manifest-path")
        .arg(workspace.join("Cargo.toml"));
    if release {
        cmd.arg("--release");
    }
    // `--workspace --bins` resolves the same features as `cargo run -p harness` (the harness
    // depends on every service), so nothing is compiled twice.
    cmd.arg("--workspace").arg("--bins");
    // `cargo run` gives us its package's variables; build scripts (ring's) watch some of them,
    // and inheriting them would make every dependency look changed and rebuild it.
    for (key, _) in std::env::vars_os() {
        let key = key.to_string_lossy();
        if key.starts_with("CARGO_PKG_")
            || matches!(
                key.as_ref(),
                "CARGO_MANIFEST_DIR"
                    | "CARGO_MANIFEST_PATH"
                    | "CARGO_CRATE_NAME"
                    | "CARGO_BIN_NAME"
                    | "CARGO_PRIMARY_PACKAGE"
            )
        {
            cmd.env_remove(key.as_ref());
        }
    }
    if let Some(target_dir) = target_profile_dir.parent() {
        cmd.env("CARGO_TARGET_DIR", target_dir);
    }
    eprintln!(
        "building service binaries (cargo build{})...",
        if release { " --release" } else { "" }
    );
    let status = status_in_own_group(&mut cmd)
        .await
        .context("running cargo to build the service binaries")?;
    if !status.success() {
        bail!("cargo build of the service binaries failed ({status})");
    }
    Ok(())
}

/// Runs `cmd` to its end in a process group of its own, and stops the whole group (cargo and
/// the rustc processes it started) when the future is dropped first: the harness interrupted
/// during the build by SIGTERM, which only the harness receives, or by Ctrl-C, which it takes
/// (`interrupt.rs`), would otherwise leave the build running without it.
async fn status_in_own_group(
    cmd: &mut tokio::process::Command,
) -> std::io::Result<std::process::ExitStatus> {
    /// SIGTERM to the group on drop, unless disarmed once the leader has been waited for.
    struct StopGroup(Option<nix::unistd::Pid>);
    impl Drop for StopGroup {
        fn drop(&mut self) {
            if let Some(group) = self.0 {
                let _ = nix::sys::signal::killpg(group, nix::sys::signal::Signal::SIGTERM);
            }
        }
    }
    let mut child = cmd.process_group(0).spawn()?;
    let mut guard = StopGroup(
        child
            .id()
            .and_then(|id| i32::try_from(id).ok())
            .map(nix::unistd::Pid::from_raw),
    );
    let status = child.wait().await;
    guard.0 = None;
    status
}

#[cfg(test)]
mod build_tests {
    use std::time::Duration;

    use super::*;

    /// A build interrupted before its end takes its whole group with it: here a shell and the
    /// `sleep` it started, as cargo and its rustc processes.
    #[tokio::test]
    async fn a_dropped_build_stops_its_whole_process_group() {
        let dir = tempfile::tempdir().unwrap();
        let pid_file = dir.path().join("pid");
        let mut cmd = tokio::process::Command::new("sh");
        cmd.arg("-c")
            .arg(format!("sleep 30 & echo $! > {}; wait", pid_file.display()));
        let run = status_in_own_group(&mut cmd);
        assert!(
            tokio::time::timeout(Duration::from_millis(500), run)
                .await
                .is_err(),
            "the command ended by itself"
        );
        let pid: i32 = std::fs::read_to_string(&pid_file)
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        let gone = |pid: i32| {
            std::fs::read_to_string(format!("/proc/{pid}/stat"))
                // A zombie (state Z) has stopped; its parent shell reaps it or is gone too.
                .map_or(true, |stat| {
                    stat.rsplit(") ").next().is_some_and(|s| s.starts_with('Z'))
                })
        };
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while !gone(pid) && std::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(
            gone(pid),
            "the build's child {pid} outlived the interrupted build"
        );
    }

    #[tokio::test]
    async fn a_build_that_ends_reports_its_status() {
        let mut cmd = tokio::process::Command::new("sh");
        cmd.arg("-c").arg("exit 3");
        let status = status_in_own_group(&mut cmd).await.unwrap();
        assert_eq!(status.code(), Some(3));
    }
}
