//! A supervised child process.
//!
//! Each child gets a piped stdin it never reads from except to notice EOF: when the harness dies,
//! even by SIGKILL, the pipe closes and the child shuts itself down (`EXIT_ON_STDIN_EOF`), so
//! nothing is left behind. Output goes to a log file per instance in the run directory. Dropping
//! a [`Supervised`] kills the process; [`Supervised::stop`] is the graceful path (SIGTERM, a
//! bounded wait, then SIGKILL).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde::Deserialize;
use tokio::process::{Child, ChildStdin, Command};

use super::cpu_budget::CpuBudget;

/// How to start one instance; kept so the instance can be restarted identically.
#[derive(Debug, Clone)]
pub struct Spec {
    /// e.g. `order#2`.
    pub name: String,
    pub program: PathBuf,
    pub args: Vec<String>,
    pub env: BTreeMap<String, String>,
    pub ready_file: PathBuf,
    pub log_file: PathBuf,
    /// The CPU budget the process runs within (service instances with `cpus_per_instance`).
    pub cpu_budget: Option<Arc<CpuBudget>>,
}

pub struct Supervised {
    pub spec: Spec,
    child: Option<Child>,
    // Held only so the child's stdin stays open while we live.
    _stdin: Option<ChildStdin>,
    pub addr: Option<SocketAddr>,
}

#[derive(Deserialize)]
struct ReadyFile {
    addr: String,
}

impl Supervised {
    /// Starts the process (does not wait for it to be ready).
    pub fn spawn(spec: Spec) -> anyhow::Result<Self> {
        let _ = std::fs::remove_file(&spec.ready_file);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&spec.log_file)
            .with_context(|| format!("opening log file {}", spec.log_file.display()))?;
        let log_err = log.try_clone().context("duplicating the log file handle")?;
        let mut cmd = Command::new(&spec.program);
        // The harness decides where the services' telemetry goes: an OTEL_SERVICE_NAME or
        // endpoint from the caller's shell would rename every service alike or bypass the
        // collector.
        for (name, _) in std::env::vars_os() {
            if name.to_string_lossy().starts_with("OTEL_") {
                cmd.env_remove(&name);
            }
        }
        cmd.args(&spec.args)
            .envs(&spec.env)
            .env("EXIT_ON_STDIN_EOF", "1")
            // Shorter than our own grace period, so instances finish draining before we SIGKILL.
            .env("SHUTDOWN_TIMEOUT_MS", "5000")
            .env("READY_FILE", &spec.ready_file)
            .stdin(std::process::Stdio::piped())
            .stdout(log)
            .stderr(log_err)
            // Own process group: a Ctrl-C in the terminal reaches the harness only, which then
            // stops the children in order (gateway, services, broker last) instead of all at once.
            .process_group(0)
            .kill_on_drop(true);
        let mut child = cmd
            .spawn()
            .with_context(|| format!("starting {} ({})", spec.name, spec.program.display()))?;
        let stdin = child.stdin.take();
        if let Some(budget) = &spec.cpu_budget {
            let pid = child.id().context("a child that just started has no pid")?;
            // On error the child drops here and is killed.
            budget.place(&spec.name, pid)?;
        }
        Ok(Self {
            spec,
            child: Some(child),
            _stdin: stdin,
            addr: None,
        })
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().and_then(Child::id)
    }

    /// Waits until the process wrote its ready file, failing early if it exits.
    pub async fn wait_ready(&mut self, timeout: Duration) -> anyhow::Result<SocketAddr> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(text) = std::fs::read_to_string(&self.spec.ready_file)
                && let Ok(ready) = serde_json::from_str::<ReadyFile>(&text)
            {
                let addr: SocketAddr = ready
                    .addr
                    .parse()
                    .with_context(|| format!("{} announced a bad address", self.spec.name))?;
                self.addr = Some(addr);
                return Ok(addr);
            }
            if let Some(child) = self.child.as_mut()
                && let Some(status) = child.try_wait().context("polling a child")?
            {
                bail!(
                    "{} exited during start-up ({status}); last lines of {}:\n{}",
                    self.spec.name,
                    self.spec.log_file.display(),
                    tail(&self.spec.log_file, 15)
                );
            }
            if Instant::now() > deadline {
                bail!(
                    "{} was not ready within {:?}; last lines of {}:\n{}",
                    self.spec.name,
                    timeout,
                    self.spec.log_file.display(),
                    tail(&self.spec.log_file, 15)
                );
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// Sends a signal (SIGKILL, SIGSTOP, SIGCONT, ...) to the process.
    pub fn signal(&self, signal: Signal) -> anyhow::Result<()> {
        let pid = self
            .pid()
            .with_context(|| format!("{} is not running", self.spec.name))?;
        let pid = i32::try_from(pid).context("pid out of range")?;
        kill(Pid::from_raw(pid), signal)
            .with_context(|| format!("sending {signal} to {}", self.spec.name))
    }

    /// SIGKILL and reap.
    pub async fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.start_kill();
            let _ = child.wait().await;
        }
        self._stdin = None;
    }

    /// SIGTERM, wait up to `grace`, then SIGKILL. A paused process is resumed first so it can
    /// act on the SIGTERM.
    pub async fn stop(&mut self, grace: Duration) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        if let Some(pid) = child.id().and_then(|p| i32::try_from(p).ok()) {
            let _ = kill(Pid::from_raw(pid), Signal::SIGCONT);
            let _ = kill(Pid::from_raw(pid), Signal::SIGTERM);
        }
        if tokio::time::timeout(grace, child.wait()).await.is_err() {
            tracing::warn!(name = %self.spec.name, "did not stop within {grace:?}; killing");
            let _ = child.start_kill();
            let _ = child.wait().await;
        }
        self._stdin = None;
    }

    /// Makes a restart bind the address the first start got, so peers configured with it (the
    /// gateway's instance list) reach the restarted process.
    pub fn pin_port(&mut self, addr: SocketAddr) {
        self.spec.env.insert("BIND_ADDR".into(), addr.to_string());
    }

    /// Starts the same process again (after a kill or stop).
    pub fn respawn(&mut self) -> anyhow::Result<()> {
        let fresh = Self::spawn(self.spec.clone())?;
        *self = fresh;
        Ok(())
    }

    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }
}

/// The last `n` lines of a file, for error messages, leaving out backtrace frames so the error
/// itself is what shows.
pub fn tail(path: &Path, n: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text
        .lines()
        .filter(|l| {
            let t = l.trim_start();
            !(t.starts_with("at ")
                || t.split_once(": ")
                    .is_some_and(|(n, _)| n.parse::<u32>().is_ok()))
        })
        .collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// A free TCP port on 127.0.0.1 (bound and released; the small race is acceptable locally).
pub fn free_port() -> anyhow::Result<u16> {
    let l = std::net::TcpListener::bind("127.0.0.1:0").context("finding a free port")?;
    Ok(l.local_addr()?.port())
}
