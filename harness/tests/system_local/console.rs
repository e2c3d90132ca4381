//! `harness console` as a game day uses it: the real binary in a real terminal (tmux), attached to
//! a real `harness up`, driven by keys. A fault injected from the menu must show on the screen
//! and in `harness chaos links`, and the heal key must remove it from both. And `harness run
//! --tui`: faults injected by hand during the run (on a link, and on a process through the run's
//! timeline) land in its report marked manual, and `q` interrupts the run as Ctrl-C does.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const HARNESS: &str = env!("CARGO_BIN_EXE_harness");

/// `harness up` in the background, stopped with SIGTERM (as Ctrl-C would) when dropped.
struct Up {
    child: Child,
    env_file: PathBuf,
    _dir: tempfile::TempDir,
}

impl Up {
    fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let env_file = dir.path().join("env.json");
        let child = Command::new(HARNESS)
            .args(["up", "--no-build", "--env-file"])
            .arg(&env_file)
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(dir.path().join("up.log")).unwrap())
            .stderr(std::fs::File::create(dir.path().join("up.err")).unwrap())
            .spawn()
            .unwrap();
        let mut up = Self {
            child,
            env_file,
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(120);
        while !up.env_file.exists() {
            if let Some(status) = up.child.try_wait().unwrap() {
                let err = std::fs::read_to_string(up._dir.path().join("up.err")).unwrap();
                panic!("harness up ended with {status} before it was ready: {err}");
            }
            assert!(Instant::now() < deadline, "harness up not ready in 120 s");
            std::thread::sleep(Duration::from_millis(200));
        }
        up
    }
}

impl Drop for Up {
    fn drop(&mut self) {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A tmux session of its own running one command, killed when dropped.
struct Tmux {
    session: String,
}

impl Tmux {
    fn start(command: &str) -> Self {
        // One per test of this process: the tests run side by side.
        static SESSIONS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = SESSIONS.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let session = format!("harness-console-test-{}-{n}", std::process::id());
        let status = Command::new("tmux")
            .args(["new-session", "-d", "-x", "120", "-y", "40", "-s", &session])
            .arg(command)
            .status()
            .unwrap();
        assert!(status.success(), "tmux new-session failed");
        Self { session }
    }

    fn keys(&self, keys: &[&str]) {
        for key in keys {
            let status = Command::new("tmux")
                .args(["send-keys", "-t", &self.session, key])
                .status()
                .unwrap();
            assert!(status.success(), "tmux send-keys {key}");
        }
    }

    fn screen(&self) -> String {
        let out = Command::new("tmux")
            .args(["capture-pane", "-p", "-t", &self.session])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn alive(&self) -> bool {
        Command::new("tmux")
            .args(["has-session", "-t", &self.session])
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    }

    /// Waits until the screen satisfies `ok`; fails with the last screen after `within`.
    fn until(&self, what: &str, within: Duration, ok: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + within;
        loop {
            let screen = self.screen();
            if ok(&screen) {
                return screen;
            }
            assert!(
                Instant::now() < deadline,
                "the console never showed {what}; the screen:\n{screen}"
            );
            std::thread::sleep(Duration::from_millis(150));
        }
    }
}

impl Tmux {
    /// Whether the harness the pane started still runs.
    fn harness_runs(&self) -> bool {
        let Ok(out) = Command::new("tmux")
            .args(["display", "-p", "-t", &self.session, "#{pane_pid}"])
            .output()
        else {
            return false;
        };
        let pane = String::from_utf8_lossy(&out.stdout).trim().to_string();
        Command::new("ps")
            .args(["-o", "comm=", "--ppid", &pane])
            .output()
            .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("harness"))
    }
}

impl Drop for Tmux {
    /// A test that failed half-way leaves a harness running in the pane: two Ctrl-C tear its
    /// environment down (killing the session alone would hang the harness up without a
    /// teardown, and leave its processes and temp dirs behind).
    fn drop(&mut self) {
        // No assertion here: a panic while a failed test unwinds would abort the process.
        let ctrl_c = || {
            let _ = Command::new("tmux")
                .args(["send-keys", "-t", &self.session, "C-c"])
                .status();
        };
        if self.alive() && self.harness_runs() {
            ctrl_c();
            std::thread::sleep(Duration::from_millis(500));
            ctrl_c();
            let deadline = Instant::now() + Duration::from_secs(30);
            while self.harness_runs() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(200));
            }
        }
        let _ = Command::new("tmux")
            .args(["kill-session", "-t", &self.session])
            .stderr(Stdio::null())
            .status();
    }
}

fn tmux_installed() -> bool {
    Command::new("tmux")
        .arg("-V")
        .output()
        .is_ok_and(|o| o.status.success())
}

fn links(env_file: &Path) -> String {
    let out = Command::new(HARNESS)
        .args(["chaos", "links", "--env-file"])
        .arg(env_file)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `harness chaos ARGS...` against the environment, which must succeed.
fn chaos(env_file: &Path, args: &[&str]) {
    let out = Command::new(HARNESS)
        .arg("chaos")
        .args(args)
        .arg("--env-file")
        .arg(env_file)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "harness chaos {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The line of `harness chaos links` for `link`.
fn link_line(env_file: &Path, link: &str) -> String {
    let all = links(env_file);
    all.lines()
        .find(|l| l.split_whitespace().next() == Some(link))
        .unwrap_or_else(|| panic!("no {link} in:\n{all}"))
        .to_string()
}

/// The line of the screen holding the selection mark.
fn selected(screen: &str) -> Option<&str> {
    screen.lines().find(|l| l.contains('›'))
}

/// Whether tmux is there; without it, a loud skip (a failure under CI, which installs it).
fn tmux_or_skip() -> bool {
    if tmux_installed() {
        return true;
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "tmux is missing, and CI must run this test: .ci/run installs it"
    );
    eprintln!(
        "\n!!! SKIPPED: the console's end-to-end tests drive it in tmux, which is not \
         installed (apt-get install tmux) !!!\n"
    );
    false
}

/// Moves the selection down to `target` and injects the first fault of its menu with the
/// form's defaults: latency for a link, kill for a process.
fn inject_first_fault(tmux: &Tmux, target: &str) {
    let link = target.contains("->");
    // A process's name is also in its links' names.
    let is_target = |l: &str| l.contains(target) && (link || !l.contains("->"));
    for _ in 0..40 {
        if selected(&tmux.screen()).is_some_and(is_target) {
            break;
        }
        tmux.keys(&["j"]);
        std::thread::sleep(Duration::from_millis(120));
    }
    let screen = tmux.screen();
    assert!(selected(&screen).is_some_and(is_target), "{screen}");
    tmux.keys(&["f"]);
    tmux.until("the fault menu", Duration::from_secs(20), |s| {
        s.contains(&format!("fault on {target}"))
    });
    tmux.keys(&["Enter"]);
    let (fault, field) = if link {
        ("latency", "latency = 200ms")
    } else {
        ("kill", "for = 30s")
    };
    tmux.until("the fault's form", Duration::from_secs(20), |s| {
        s.contains(&format!("{fault} on {target}")) && s.contains(field)
    });
    tmux.keys(&["Enter"]);
}

#[test]
fn the_console_injects_a_fault_from_its_menu_shows_it_and_heals_it() {
    if !tmux_or_skip() {
        return;
    }
    let up = Up::start();
    let link = "gateway->payment#1";
    let command = format!(
        "{HARNESS} console --env-file {}; echo console-exited-$?; sleep 60",
        up.env_file.display()
    );
    let tmux = Tmux::start(&command);
    tmux.until("the links", Duration::from_secs(20), |s| {
        s.contains(link) && s.contains("running")
    });

    // Down the list to the link, its first fault (latency) with the form's defaults.
    inject_first_fault(&tmux, link);
    tmux.until("the fault active", Duration::from_secs(20), |s| {
        s.contains(&format!("applied latency {link}"))
            && s.contains("ACTIVE")
            && s.contains("FAULT latency")
    });
    let line = link_line(&up.env_file, link);
    assert!(line.contains("latency"), "harness chaos links: {line}");

    // Heal the selection: gone from the proxy and from the screen.
    tmux.keys(&["h"]);
    let screen = tmux.until("the fault healed", Duration::from_secs(20), |s| {
        s.contains(&format!("healed {link}")) && !s.contains("FAULT latency")
    });
    assert!(screen.contains("healed "), "{screen}");
    let line = link_line(&up.env_file, link);
    assert!(!line.contains("latency"), "harness chaos links: {line}");
    assert!(screen.contains("slowest hop"), "{screen}");

    // The broker has no /metrics, and a paused one still takes connections: the console asks
    // it for its API versions, which only a running broker answers.
    let broker = |screen: &str, state: &str| {
        screen
            .lines()
            .any(|l| l.contains(" broker ") && l.contains(state))
    };
    chaos(&up.env_file, &["inject", "broker", "pause"]);
    tmux.until("the broker paused", Duration::from_secs(20), |s| {
        broker(s, "PAUSED")
    });
    chaos(&up.env_file, &["heal", "broker"]);
    tmux.until("the broker running again", Duration::from_secs(20), |s| {
        broker(s, "running")
    });

    // q quits at once (no run to interrupt) and gives the terminal back.
    tmux.keys(&["q"]);
    let screen = tmux.until("the console exit", Duration::from_secs(20), |s| {
        s.contains("console-exited-")
    });
    assert!(screen.contains("console-exited-0"), "{screen}");
    assert!(tmux.alive());
}

const SHORT_RUN: &str = r#"
description = "a short run to watch"

[environment]
backend = "local"

[load]
users = 4
ramp_up = "1s"
duration = "40s"
think_time = "50ms..100ms"

[[load.journeys]]
name = "place_order"
weight = 1

[[load.journeys]]
name = "browse_catalog"
weight = 1

[[chaos]]
at = "2s"
for = "30s"
target = "gateway->inventory"
fault = "latency"
latency = "20ms"

[[slo]]
error_rate = 0.5

[checks]
convergence_timeout = "20s"
invariants = "all"
"#;

#[test]
fn a_tui_run_reports_faults_by_hand_heal_all_and_a_pause_and_q_interrupts_it() {
    if !tmux_or_skip() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let scenario = dir.path().join("watched.toml");
    std::fs::write(&scenario, SHORT_RUN).unwrap();
    let reports = dir.path().join("reports");
    let command = format!(
        "{HARNESS} run {} --tui --no-build --reports-dir {}; echo run-exited-$?; sleep 60",
        scenario.display(),
        reports.display()
    );
    let tmux = Tmux::start(&command);
    let link = "gateway->payment#1";
    tmux.until("the run's requests", Duration::from_secs(60), |s| {
        s.contains("watched") && s.contains(link) && s.contains("POST /api/orders")
    });
    inject_first_fault(&tmux, link);
    tmux.until("the fault active", Duration::from_secs(20), |s| {
        s.contains("ACTIVE") && s.contains("(manual)") && s.contains("FAULT latency")
    });
    let scheduled = "latency gateway->inventory";
    // Both active: the one injected here and the scenario's (the timeline's narrow panel wraps
    // the labels, so they are counted).
    tmux.until(
        "the scenario's fault active",
        Duration::from_secs(20),
        |s| s.matches("ACTIVE").count() >= 2,
    );

    // An instance fault from the menu: the run's timeline kills the process for the console.
    let process = "payment#1";
    inject_first_fault(&tmux, process);
    tmux.until("the process killed", Duration::from_secs(30), |s| {
        s.contains(&format!("applied kill {process}"))
            && s.lines()
                .any(|l| l.contains(process) && !l.contains("->") && l.contains("DOWN"))
    });

    // H heals the faults injected here and the scenario's, well before its planned end.
    tmux.keys(&["H"]);
    tmux.until("every fault healed", Duration::from_secs(30), |s| {
        !s.contains("ACTIVE")
            && s.lines()
                .any(|l| l.contains(process) && !l.contains("->") && l.contains("running"))
    });

    // p pauses the load, p again resumes it.
    tmux.keys(&["p"]);
    tmux.until("the load paused", Duration::from_secs(20), |s| {
        s.contains("LOAD PAUSED")
    });
    std::thread::sleep(Duration::from_secs(2));
    tmux.keys(&["p"]);
    tmux.until("the load resumed", Duration::from_secs(20), |s| {
        !s.contains("LOAD PAUSED")
    });

    // q asks during a run; y interrupts it as Ctrl-C does.
    tmux.keys(&["q"]);
    tmux.until("the question", Duration::from_secs(20), |s| {
        s.contains("Quit interrupts the run")
    });
    tmux.keys(&["y"]);
    let screen = tmux.until("the run's end", Duration::from_secs(120), |s| {
        s.contains("run-exited-")
    });
    assert!(screen.contains("run-exited-130"), "{screen}");
    assert!(
        screen.contains("interrupted (q in the console)"),
        "{screen}"
    );

    let report_dir = std::fs::read_dir(&reports)
        .unwrap()
        .next()
        .expect("a report")
        .unwrap()
        .path();
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(report_dir.join("report.json")).unwrap())
            .unwrap();
    let windows = report["chaos_windows"].as_array().unwrap();
    let manual: Vec<&serde_json::Value> = windows
        .iter()
        .filter(|w| w["label"] == format!("latency {link} (manual)"))
        .collect();
    assert_eq!(manual.len(), 1, "{windows:#?}");
    let (start, end) = (
        manual[0]["start_s"].as_f64().unwrap(),
        manual[0]["end_s"].as_f64().unwrap(),
    );
    assert!(
        0.0 < start && start < end && end < 45.0,
        "times from the start of the load: {start}..{end}"
    );
    let killed: Vec<&serde_json::Value> = windows
        .iter()
        .filter(|w| w["label"] == format!("kill {process} (manual)"))
        .collect();
    assert_eq!(killed.len(), 1, "{windows:#?}");
    assert_eq!(killed[0]["affected"], serde_json::json!([process]));
    let early: Vec<&serde_json::Value> =
        windows.iter().filter(|w| w["label"] == scheduled).collect();
    assert_eq!(early.len(), 1, "{windows:#?}");
    assert_eq!(early[0]["healed_by_hand"], true, "{windows:#?}");
    let healed = early[0]["end_s"].as_f64().unwrap();
    assert!(
        healed < early[0]["planned_end_s"].as_f64().unwrap(),
        "healed before its planned end: {windows:#?}"
    );
    let pause: Vec<&serde_json::Value> = windows
        .iter()
        .filter(|w| w["label"] == "load paused (manual)")
        .collect();
    assert_eq!(pause.len(), 1, "{windows:#?}");
    let (from, to) = (
        pause[0]["start_s"].as_f64().unwrap(),
        pause[0]["end_s"].as_f64().unwrap(),
    );
    assert!(healed <= from && from + 1.5 < to, "paused {from}..{to}");
}
