//! End to end: an interrupted `harness run` says so.
//!
//! Each test starts the real binary on the local backend with a scenario of its own (a load of
//! a minute with a fault from its first second, so the interruption comes while both run),
//! waits until the load is under way and the fault applied, and signals the harness the way a
//! terminal or a CI runner would. Then it asserts what a user would see: exit code 130, the
//! report's verdict `interrupted` with how far the run got, a `junit.xml` CI does not read as a
//! pass, and nothing left behind: no child process, no temp dir, the gateway's port closed.
//!
//! Each run is about half a minute on a debug build (start-up, a few seconds of load, the
//! bounded checks, teardown).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde_json::Value;

/// A closed load of a minute, latency on the payment link from its second second to its end,
/// and a short convergence bound: the run is interrupted long before either ends.
const SCENARIO: &str = r#"
description = "a long load with a fault, to be interrupted"

[environment]
backend = "local"

[load]
users = 2
ramp_up = "1s"
duration = "60s"
think_time = "100ms..300ms"

[[load.journeys]]
name = "place_order"
weight = 2

[[load.journeys]]
name = "browse_catalog"
weight = 1

[[chaos]]
name = "slow payment"
at = "2s"
for = "55s"
target = "gateway->payment"
fault = "latency"
latency = "100ms"

[[slo]]
endpoint = "POST /api/orders"
p99 = "1us"

[checks]
convergence_timeout = "30s"
invariants = "all"
"#;

/// The longest a whole run may take, from start to exit.
const RUN_DEADLINE: Duration = Duration::from_secs(180);

#[test]
fn ctrl_c_during_the_load_stops_it_heals_reports_interrupted_and_exits_130() {
    let mut run = Run::start("ctrl-c");
    run.wait_for("chaos: ");
    let children = run.children();
    assert!(
        children.len() >= 5,
        "the environment's processes: {children:?}"
    );
    std::thread::sleep(Duration::from_secs(2));
    run.signal(Signal::SIGINT);
    let done = run.finish();

    assert_eq!(done.code, Some(130), "{}", done.output());
    assert!(
        done.stdout.contains("load stopped after"),
        "{}",
        done.output()
    );
    assert!(
        done.stdout.contains("healed  slow payment (interrupted)"),
        "the fault healed at the interruption: {}",
        done.output()
    );
    let report = done.report();
    assert_eq!(report["verdict"], "interrupted", "{}", done.output());
    assert_eq!(report["exit_code"], 130);
    let i = &report["interruption"];
    assert_eq!(i["by"], "SIGINT");
    assert_eq!(i["stage"], "load");
    assert_eq!(i["phase"], "during:slow payment");
    assert_eq!(i["planned_s"], 61.0);
    let load_s = i["load_s"].as_f64().unwrap();
    assert!((3.0..30.0).contains(&load_s), "load ran {load_s} s");
    assert_eq!(report["duration_s"], i["load_s"]);
    assert!(i["requests"].as_u64().unwrap() > 0, "{i}");
    // The fault's window ends at the interruption, not at its planned end.
    let window = &report["chaos_windows"][0];
    assert!(
        window["end_s"].as_f64().unwrap() < window["planned_end_s"].as_f64().unwrap() - 20.0,
        "{window}"
    );
    // The impossible SLO did not hold, and that does not make the run failed.
    assert_eq!(report["slos"][0]["held"], false);

    let junit = done.file("junit.xml");
    assert!(junit.contains(r#"errors="1""#), "{junit}");
    assert!(junit.contains(r#"type="interrupted""#), "{junit}");
    assert!(!junit.contains("<failure"), "{junit}");
    assert!(done.file("report.md").contains("**Interrupted**: SIGINT"));
    assert!(!done.file("history.jsonl").is_empty());

    done.assert_nothing_left(&children);
}

/// A closed terminal (SIGHUP) would otherwise kill the harness with no teardown.
#[test]
fn sighup_from_a_closed_terminal_interrupts_the_run_and_leaves_nothing_behind() {
    let mut run = Run::start("sighup");
    run.wait_for("chaos: ");
    let children = run.children();
    run.signal(Signal::SIGHUP);
    let done = run.finish();

    assert_eq!(done.code, Some(130), "{}", done.output());
    assert!(
        done.file("report.md").contains("**Interrupted**: SIGHUP"),
        "{}",
        done.output()
    );
    done.assert_nothing_left(&children);
}

#[test]
fn sigterm_then_a_second_interruption_only_tears_down_and_exits_130() {
    let mut run = Run::start("sigterm");
    run.wait_for("chaos: ");
    let children = run.children();
    run.signal(Signal::SIGTERM);
    run.wait_for_stderr_or_exit("interrupted (SIGTERM)");
    run.signal(Signal::SIGINT);
    let done = run.finish();

    assert_eq!(done.code, Some(130), "{}", done.output());
    assert!(
        done.stderr
            .contains("interrupted twice: the environment was torn down; no report"),
        "{}",
        done.output()
    );
    assert!(
        !done.dir.path().join("reports").exists()
            || std::fs::read_dir(done.dir.path().join("reports"))
                .unwrap()
                .next()
                .is_none(),
        "no report after a second interruption"
    );
    done.assert_nothing_left(&children);
}

// ---------------------------------------------------------------------------------------------
// A run and what it left
// ---------------------------------------------------------------------------------------------

/// A `harness run` under way, in a directory of its own (scenario, reports, `TMPDIR`).
struct Run {
    child: Child,
    lines: mpsc::Receiver<String>,
    stderr_lines: mpsc::Receiver<String>,
    stdout: Vec<String>,
    stderr: Vec<String>,
    started: Instant,
    /// Taken by [`Run::finish`].
    dir: Option<tempfile::TempDir>,
}

impl Run {
    fn start(name: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let scenario = dir.path().join(format!("{name}.toml"));
        std::fs::write(&scenario, SCENARIO).unwrap();
        let tmp = dir.path().join("tmp");
        std::fs::create_dir(&tmp).unwrap();
        let mut child = Command::new(env!("CARGO_BIN_EXE_harness"))
            .arg("run")
            .arg(&scenario)
            .arg("--no-build")
            .arg("--reports-dir")
            .arg(dir.path().join("reports"))
            .env("TMPDIR", &tmp)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let lines = forward(child.stdout.take().unwrap());
        let stderr_lines = forward(child.stderr.take().unwrap());
        Self {
            child,
            lines,
            stderr_lines,
            stdout: Vec::new(),
            stderr: Vec::new(),
            started: Instant::now(),
            dir: Some(dir),
        }
    }

    fn remaining(&self) -> Duration {
        RUN_DEADLINE.saturating_sub(self.started.elapsed())
    }

    /// Reads stdout until a line starts with `prefix`.
    fn wait_for(&mut self, prefix: &str) {
        loop {
            match self.lines.recv_timeout(self.remaining()) {
                Ok(l) => {
                    let found = l.starts_with(prefix);
                    self.stdout.push(l);
                    if found {
                        return;
                    }
                }
                Err(_) => panic!(
                    "no line starting with {prefix:?} within {RUN_DEADLINE:?}:\n{}",
                    self.stdout.join("\n")
                ),
            }
        }
    }

    /// Reads stderr until a line starts with `prefix`, or it ends (the run exited).
    fn wait_for_stderr_or_exit(&mut self, prefix: &str) {
        while let Ok(l) = self.stderr_lines.recv_timeout(self.remaining()) {
            let found = l.starts_with(prefix);
            self.stderr.push(l);
            if found {
                return;
            }
        }
    }

    /// The processes the harness started (its children) now, with their names.
    fn children(&self) -> Vec<(i32, String)> {
        let parent = self.child.id().to_string();
        let mut found = Vec::new();
        for entry in std::fs::read_dir("/proc").unwrap().flatten() {
            let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
                continue;
            };
            let Ok(status) = std::fs::read_to_string(entry.path().join("status")) else {
                continue;
            };
            let field = |name: &str| {
                status
                    .lines()
                    .find_map(|l| l.strip_prefix(name))
                    .map(|v| v.trim().to_string())
            };
            if field("PPid:").as_deref() == Some(parent.as_str()) {
                found.push((pid, field("Name:").unwrap_or_default()));
            }
        }
        found
    }

    fn signal(&self, signal: Signal) {
        let pid = i32::try_from(self.child.id()).unwrap();
        kill(Pid::from_raw(pid), signal).unwrap();
    }

    /// Waits for the run to exit; its code, output and directory.
    fn finish(mut self) -> Finished {
        let status = loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                break status;
            }
            if self.remaining().is_zero() {
                let _ = self.child.kill();
                panic!(
                    "the run did not exit within {RUN_DEADLINE:?}:\n{}",
                    self.stdout.join("\n")
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        let rest: Vec<String> = self.lines.iter().collect();
        self.stdout.extend(rest);
        let rest: Vec<String> = self.stderr_lines.iter().collect();
        self.stderr.extend(rest);
        let gateway = self
            .stdout
            .iter()
            .find_map(|l| l.strip_prefix("environment up in "))
            .and_then(|l| l.split_once("(http://"))
            .map(|(_, addr)| addr.trim_end_matches(')').to_string());
        Finished {
            code: status.code(),
            stdout: self.stdout.join("\n"),
            stderr: self.stderr.join("\n"),
            gateway,
            dir: self.dir.take().unwrap(),
        }
    }
}

/// Every line of `from`, over a channel (a thread reads it).
fn forward(mut from: impl Read + Send + 'static) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(&mut from).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

struct Finished {
    code: Option<i32>,
    stdout: String,
    stderr: String,
    /// `127.0.0.1:PORT` of the gateway, from `environment up in ...`.
    gateway: Option<String>,
    dir: tempfile::TempDir,
}

impl Finished {
    fn output(&self) -> String {
        format!("stdout:\n{}\nstderr:\n{}", self.stdout, self.stderr)
    }

    /// The one run folder's `report.json`.
    fn report(&self) -> Value {
        serde_json::from_str(&self.file("report.json")).unwrap()
    }

    /// A file of the one run folder.
    fn file(&self, name: &str) -> String {
        let reports = self.dir.path().join("reports");
        let run = std::fs::read_dir(&reports)
            .unwrap_or_else(|e| {
                panic!(
                    "no reports in {}: {e}\n{}",
                    reports.display(),
                    self.output()
                )
            })
            .next()
            .expect("a run folder")
            .unwrap()
            .path();
        std::fs::read_to_string(run.join(name))
            .unwrap_or_else(|e| panic!("{name}: {e}\n{}", self.output()))
    }

    /// No process the run started is alive, its temp dirs are gone and the gateway's port is
    /// closed.
    fn assert_nothing_left(&self, children: &[(i32, String)]) {
        for (pid, name) in children {
            let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
            let alive = status
                .lines()
                .any(|l| l.strip_prefix("Name:").map(str::trim) == Some(name))
                && !status
                    .lines()
                    .any(|l| l.starts_with("State:") && l.contains("zombie"));
            assert!(
                !alive,
                "{name} (pid {pid}) survived the run:\n{}",
                self.output()
            );
        }
        let left: Vec<_> = std::fs::read_dir(self.dir.path().join("tmp"))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert!(
            left.is_empty(),
            "left in TMPDIR: {left:?}\n{}",
            self.output()
        );
        let gateway = self.gateway.as_deref().expect("the gateway's address");
        assert!(
            std::net::TcpStream::connect_timeout(&gateway.parse().unwrap(), Duration::from_secs(1))
                .is_err(),
            "the gateway at {gateway} still answers"
        );
    }
}

impl Drop for Run {
    /// A failed test leaves no harness behind: SIGINT twice, then SIGKILL.
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            self.signal(Signal::SIGINT);
            self.signal(Signal::SIGINT);
            let deadline = Instant::now() + Duration::from_secs(30);
            while matches!(self.child.try_wait(), Ok(None)) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(100));
            }
            let _ = self.child.kill();
        }
    }
}
