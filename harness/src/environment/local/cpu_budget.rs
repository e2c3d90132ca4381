//! A CPU budget for every service instance: each runs in a cgroup of its own whose CFS quota is
//! that many cores (`[environment] cpus_per_instance`), as a pod's CPU limit or Docker's
//! `--cpus` would cap it.
//!
//! On a machine with few cores every process of the local backend shares all of them, so a
//! second instance of a service adds threads but no cores, and the knee measures the machine,
//! not how the system scales. With a budget, an instance gets what an instance of that size gets
//! anywhere, and a second one adds that much again: the question `harness bench capacity
//! --cpus-per-instance` answers. The cgroups (v1's `cpu` controller or v2's `cpu.max`, through
//! the `cgroups-rs` crate) need root or a delegated subtree; they are removed with the
//! environment.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;

use anyhow::{Context, bail};
use cgroups_rs::cpu::CpuController;
use cgroups_rs::{Cgroup, CgroupPid};

/// The CFS period the quota is a share of (the kernel's default).
const PERIOD_US: u64 = 100_000;
/// The kernel's smallest quota.
const MIN_QUOTA_US: i64 = 1_000;

/// A parent cgroup for the run and one child per instance, made when the instance first starts
/// and reused when it is restarted.
#[derive(Debug)]
pub struct CpuBudget {
    cpus: f64,
    /// The parent's path within the hierarchy, e.g. `harness-4242`.
    parent: String,
    groups: Mutex<BTreeMap<String, Cgroup>>,
}

impl CpuBudget {
    /// Checks that this process can make cgroups with a CPU quota, and makes the run's parent.
    pub fn new(cpus: f64) -> anyhow::Result<Self> {
        if !(cpus.is_finite() && cpus > 0.0) {
            bail!("a CPU budget must be a positive number of cores, not {cpus}");
        }
        sweep_stale();
        let parent = format!("harness-{}", std::process::id());
        let budget = Self {
            cpus,
            parent,
            groups: Mutex::new(BTreeMap::new()),
        };
        // Made and removed at once: a machine where this fails says so before anything starts
        // (and the parent goes with `budget`, dropped on the error).
        let probe = budget.group("probe")?;
        let _ = probe.delete();
        Ok(budget)
    }

    /// Puts the process `pid` (all its threads) into the cgroup of `instance`.
    pub fn place(&self, instance: &str, pid: u32) -> anyhow::Result<()> {
        let mut groups = self.groups.lock().unwrap_or_else(|e| e.into_inner());
        if !groups.contains_key(instance) {
            let cg = self.group(instance)?;
            groups.insert(instance.to_string(), cg);
        }
        groups[instance]
            .add_task_by_tgid(CgroupPid::from(u64::from(pid)))
            .with_context(|| format!("putting {instance} (pid {pid}) into its CPU budget's cgroup"))
    }

    /// Makes the cgroup of `instance` (and the run's parent) with the quota.
    fn group(&self, instance: &str) -> anyhow::Result<Cgroup> {
        // `#` is fine in a path but not in every tool that lists cgroups.
        let path = format!("{}/{}", self.parent, instance.replace('#', "-"));
        let hierarchy = cgroups_rs::hierarchies::auto();
        let version = if hierarchy.v2() { "v2" } else { "v1" };
        let root = hierarchy.root();
        let cg =
            Cgroup::new_with_specified_controllers(hierarchy, &path, Some(vec!["cpu".to_string()]))
                .with_context(|| cannot(&root, &path, version))?;
        let quota = quota_us(self.cpus);
        let set = cg
            .controller_of::<CpuController>()
            .with_context(|| format!("{}: no cpu controller", cannot(&root, &path, version)))
            .and_then(|cpu| {
                cpu.set_cfs_quota_and_period(Some(quota), Some(PERIOD_US))
                    .with_context(|| cannot(&root, &path, version))
            });
        match set {
            Ok(()) => Ok(cg),
            Err(e) => {
                // Not left behind half made: the parent could not go with the budget otherwise.
                let _ = cg.delete();
                Err(e)
            }
        }
    }
}

/// Removes the cgroups of harness runs that were killed before they could (SIGKILL): their
/// instances exited with them (`EXIT_ON_STDIN_EOF`), so the cgroups are empty. Only what the
/// crate cannot do for us, listing them, is done here.
fn sweep_stale() {
    let hierarchy = cgroups_rs::hierarchies::auto();
    let dir = if hierarchy.v2() {
        Some(hierarchy.root())
    } else {
        cgroups_rs::hierarchies::V1::new().get_mount_point(cgroups_rs::Controllers::Cpu)
    };
    let Some(entries) = dir.and_then(|d| std::fs::read_dir(d).ok()) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name
            .to_str()
            .and_then(|n| n.strip_prefix("harness-"))
            .and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        if std::path::Path::new(&format!("/proc/{pid}")).exists() {
            continue;
        }
        if let Ok(children) = std::fs::read_dir(entry.path()) {
            for child in children.flatten().filter(|c| c.path().is_dir()) {
                let _ = std::fs::remove_dir(child.path());
            }
        }
        if std::fs::remove_dir(entry.path()).is_ok() {
            tracing::info!(path = %entry.path().display(), "removed a killed run's cgroup");
        }
    }
}

fn cannot(root: &std::path::Path, path: &str, version: &str) -> String {
    format!(
        "cpus_per_instance: cannot make cgroup {path} with a CPU quota under {} (cgroup {version}); \
         it needs root, or a cgroup v2 subtree delegated to this user with the cpu controller",
        root.display()
    )
}

/// The quota for `cpus` cores per period.
fn quota_us(cpus: f64) -> i64 {
    // At most a few hundred cores: the product fits an i64 many times over.
    #[allow(clippy::cast_possible_truncation)]
    let q = (cpus * PERIOD_US as f64).round() as i64;
    q.max(MIN_QUOTA_US)
}

impl Drop for CpuBudget {
    fn drop(&mut self) {
        let groups = std::mem::take(self.groups.get_mut().unwrap_or_else(|e| e.into_inner()));
        for (instance, cg) in groups {
            // A process killed a moment ago may still be leaving its cgroup.
            let mut tries = 0;
            while cg.delete().is_err() && tries < 100 {
                std::thread::sleep(Duration::from_millis(10));
                tries += 1;
            }
            if cg.exists() {
                tracing::warn!(instance, path = cg.path(), "could not remove a cgroup");
            }
        }
        let parent = Cgroup::load_with_specified_controllers(
            cgroups_rs::hierarchies::auto(),
            &self.parent,
            vec!["cpu".to_string()],
        );
        if parent.exists() && parent.delete().is_err() {
            tracing::warn!(path = self.parent, "could not remove a cgroup");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quota_is_the_share_of_the_period() {
        assert_eq!(quota_us(0.25), 25_000);
        assert_eq!(quota_us(1.5), 150_000);
        assert_eq!(quota_us(0.001), MIN_QUOTA_US);
    }
}
