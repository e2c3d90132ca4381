//! `cpus_per_instance`: every service instance runs in a cgroup of its own with that CPU quota,
//! a restarted instance goes back into it, the broker, gateway and chaos-proxy are left alone,
//! and the cgroups are gone once the environment is (and those of a killed run, at the next).

use std::path::PathBuf;

use contracts::domain::OrderStatus;
use harness::environment::{EnvOptions, Instances};
use harness::seed::GOOD_CUSTOMER;

use crate::helpers::TestEnv;

/// The directory of `pid`'s cgroup for the CPU controller: v1's `cpu` hierarchy, or v2's
/// unified one.
fn cpu_cgroup(pid: u32) -> PathBuf {
    let text = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap();
    for line in text.lines() {
        let mut parts = line.splitn(3, ':');
        let (id, controllers, path) = (
            parts.next().unwrap(),
            parts.next().unwrap(),
            parts.next().unwrap(),
        );
        if controllers.split(',').any(|c| c == "cpu") {
            return PathBuf::from(format!("/sys/fs/cgroup/cpu{path}"));
        }
        if id == "0"
            && controllers.is_empty()
            && PathBuf::from("/sys/fs/cgroup/cgroup.controllers").exists()
        {
            return PathBuf::from(format!("/sys/fs/cgroup{path}"));
        }
    }
    panic!("no cpu cgroup for pid {pid} in:\n{text}");
}

/// The CPU quota of a cgroup in microseconds per 100 ms period; `None` when it has none.
fn quota_us(dir: &std::path::Path) -> Option<u64> {
    if let Ok(v1) = std::fs::read_to_string(dir.join("cpu.cfs_quota_us")) {
        let period = std::fs::read_to_string(dir.join("cpu.cfs_period_us")).unwrap();
        assert_eq!(period.trim(), "100000", "{}", dir.display());
        return v1
            .trim()
            .parse::<i64>()
            .ok()
            .and_then(|q| u64::try_from(q).ok());
    }
    let max = std::fs::read_to_string(dir.join("cpu.max")).unwrap_or_default();
    let mut parts = max.split_whitespace();
    let quota = parts.next()?.parse().ok()?;
    assert_eq!(parts.next(), Some("100000"), "{}", dir.display());
    Some(quota)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_service_instance_runs_within_its_cpu_budget_and_the_cgroups_go_with_the_environment()
{
    // /proc/self belongs to the effective user.
    if std::os::unix::fs::MetadataExt::uid(&std::fs::metadata("/proc/self").unwrap()) != 0 {
        // Every CI run is root; a developer's machine may not be.
        eprintln!("\n!!! SKIPPED: cgroups with a CPU quota need root !!!\n");
        return;
    }
    // What a harness killed with SIGKILL leaves: its run's cgroup, an instance's inside it.
    let dead = {
        let mut child = std::process::Command::new("true").spawn().unwrap();
        child.wait().unwrap();
        child.id()
    };
    let cpu_root = if PathBuf::from("/sys/fs/cgroup/cgroup.controllers").exists() {
        PathBuf::from("/sys/fs/cgroup")
    } else {
        PathBuf::from("/sys/fs/cgroup/cpu")
    };
    let stale = cpu_root.join(format!("harness-{dead}"));
    std::fs::create_dir_all(stale.join("order-1")).unwrap();

    let options = EnvOptions {
        instances: Instances::parse("order=2").unwrap(),
        cpus_per_instance: Some(0.25),
        ..EnvOptions::default()
    };
    let Some(mut t) = TestEnv::start_with(options).await else {
        return;
    };
    assert!(
        !stale.exists(),
        "a killed run's cgroup was left: {}",
        stale.display()
    );
    let infos = t.env.process_infos();
    let mut budgets = Vec::new();
    for p in &infos {
        let dir = cpu_cgroup(p.pid);
        let service_instance = ["order#", "inventory#", "payment#"]
            .iter()
            .any(|s| p.name.starts_with(s));
        if service_instance {
            assert_eq!(
                quota_us(&dir),
                Some(25_000),
                "{}: {}",
                p.name,
                dir.display()
            );
            budgets.push((p.name.clone(), dir));
        } else {
            assert_eq!(
                quota_us(&dir),
                None,
                "{} has a quota: {}",
                p.name,
                dir.display()
            );
        }
    }
    budgets.sort();
    let names: Vec<&str> = budgets.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["inventory#1", "order#1", "order#2", "payment#1"]);
    let dirs: std::collections::BTreeSet<&PathBuf> = budgets.iter().map(|(_, d)| d).collect();
    assert_eq!(
        dirs.len(),
        4,
        "each instance has a cgroup of its own: {dirs:?}"
    );

    // Within their budgets the services still run a saga to the end.
    let token = t.customer(GOOD_CUSTOMER);
    let placed = t.place(&token, &[("SKU-1002", 1)]).await;
    let done = t.terminal(&token, placed.order_id).await;
    assert_eq!(done.status, OrderStatus::Confirmed, "{done:?}");

    // A restarted instance is a new process in the same cgroup.
    let old = infos.iter().find(|p| p.name == "order#1").unwrap().pid;
    t.env.kill("order#1").await.unwrap();
    t.env.restart("order#1").await.unwrap();
    let new = t
        .env
        .process_infos()
        .into_iter()
        .find(|p| p.name == "order#1")
        .unwrap()
        .pid;
    assert_ne!(old, new);
    let order1 = &budgets.iter().find(|(n, _)| n == "order#1").unwrap().1;
    assert_eq!(&cpu_cgroup(new), order1);
    assert_eq!(quota_us(order1), Some(25_000));

    t.env.stop().await;
    for (name, dir) in &budgets {
        assert!(
            !dir.exists(),
            "{name}'s cgroup outlived the environment: {}",
            dir.display()
        );
    }
    let parent = budgets[0].1.parent().unwrap();
    assert!(
        !parent.exists(),
        "the run's cgroup outlived it: {}",
        parent.display()
    );
}
