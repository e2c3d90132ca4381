#![allow(clippy::unwrap_used, clippy::expect_used)]
//! The scenario files shipped in `scenarios/` and `harness list`, through the real binary.

use std::path::{Path, PathBuf};
use std::process::Command;

use harness::scenario::Scenario;

fn scenarios_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../scenarios")
}

fn shipped() -> Vec<(String, PathBuf)> {
    harness::scenario::catalog::scenario_files(&scenarios_dir()).unwrap()
}

fn harness(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_harness"))
        .args(args)
        .output()
        .expect("running the harness binary");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn every_shipped_scenario_parses_and_validates() {
    let files = shipped();
    for required in ["smoke", "steady", "capacity"] {
        assert!(
            files.iter().any(|(name, _)| name == required),
            "scenarios/{required}.toml is missing"
        );
    }
    for (name, path) in files {
        let scenario = Scenario::load(&path).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(scenario.name, name);
        assert!(!scenario.objectives().is_empty(), "{name} sets no SLO");
        scenario.check_backend_supported().unwrap();
    }
}

#[test]
fn smoke_stays_under_a_minute_of_load() {
    let smoke = Scenario::open("smoke").unwrap();
    let total = smoke.load.get_ref().plan().total_duration();
    assert!(total.as_secs() < 60, "smoke runs load for {total:?}");
}

#[test]
fn harness_list_shows_every_scenario_with_its_description() {
    let (ok, stdout, stderr) = harness(&["list", "--dir", scenarios_dir().to_str().unwrap()]);
    assert!(ok, "harness list failed: {stderr}");
    for (name, path) in shipped() {
        let scenario = Scenario::load(&path).unwrap();
        let line = stdout
            .lines()
            .find(|l| l.split_whitespace().next() == Some(name.as_str()))
            .unwrap_or_else(|| panic!("{name} is not listed:\n{stdout}"));
        assert!(
            line.ends_with(scenario.description.get_ref().as_str()),
            "{line}"
        );
    }
}

#[test]
fn harness_list_without_arguments_finds_the_workspace_scenarios() {
    // Tests run in the crate folder, which has no scenarios/ of its own.
    let (ok, stdout, stderr) = harness(&["list"]);
    assert!(ok, "harness list failed: {stderr}");
    for (name, _) in shipped() {
        assert!(stdout.contains(&name), "{name} is not listed:\n{stdout}");
    }
}

#[test]
fn a_malformed_scenario_names_its_file_and_line_and_is_still_listed() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.toml");
    std::fs::write(
        &bad,
        "description = \"a broken scenario\"\n\n[load]\nusers = 8\nduration = \"5x\"\n",
    )
    .unwrap();
    let e = Scenario::load(&bad).unwrap_err().to_string();
    assert!(e.starts_with(&format!("{}:5:", bad.display())), "{e}");
    assert!(e.contains("invalid duration \"5x\""), "{e}");

    std::fs::copy(
        scenarios_dir().join("smoke.toml"),
        dir.path().join("good.toml"),
    )
    .unwrap();
    let (ok, stdout, stderr) = harness(&["list", "--dir", dir.path().to_str().unwrap()]);
    assert!(ok, "a broken file must not fail the list: {stderr}");
    assert!(stdout.contains("good "), "{stdout}");
    assert!(
        stdout.contains(&format!("bad   error: {}:5:", bad.display())),
        "{stdout}"
    );
}
