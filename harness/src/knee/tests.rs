use std::path::Path;

use super::*;
use crate::capacity::{Capacity, StepResult};

fn plateau(step: usize, rate: Option<f64>, confirmed: f64) -> StepResult {
    StepResult {
        step,
        users: 800,
        arrival_rate_per_s: rate,
        arrivals: None,
        dropped: None,
        start_s: 0.0,
        end_s: 20.0,
        plateau: true,
        requests: 0,
        errors: 0,
        shed: 0,
        requests_per_s: 0.0,
        confirmed_per_s: confirmed,
        place_order_p99_us: None,
        saga_p50_us: None,
        saga_p99_us: None,
        slos_held: Some(true),
        violated: Vec::new(),
    }
}

fn capacity(rate: f64, confirmed: f64) -> Capacity {
    Capacity {
        steps: vec![
            plateau(1, Some(rate / 2.0), confirmed / 2.0),
            plateau(3, Some(rate), confirmed),
        ],
        knee: Some(3),
        beyond_plan: false,
    }
}

fn overload_scenario() -> Scenario {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scenarios/overload.toml");
    let text = std::fs::read_to_string(&path).unwrap();
    let s = Scenario::from_toml(&path, &text).unwrap();
    s.validate().unwrap();
    s
}

fn goodput_bound(s: &Scenario) -> f64 {
    s.slos
        .iter()
        .find_map(|slo| slo.get_ref().min_goodput.as_ref().map(|g| *g.get_ref()))
        .unwrap()
}

fn rate_of(s: &Scenario) -> f64 {
    s.load.get_ref().arrivals().unwrap().peak_per_second()
}

/// Writes a capacity run's report into `reports/<folder>/report.json`.
fn write_capacity_report(
    reports: &Path,
    folder: &str,
    backend: &str,
    capacity: Option<Capacity>,
) -> PathBuf {
    let mut report = crate::report::tests::sample_report();
    report.capacity = capacity;
    report.environment.backend = backend.into();
    report.started_at = folder.into();
    let dir = reports.join(folder);
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("report.json");
    std::fs::write(&path, serde_json::to_string(&report).unwrap()).unwrap();
    path
}

#[test]
fn a_capacity_report_gives_its_knee_and_says_why_when_it_has_none() {
    let knee = Knee::of(Some(&capacity(480.0, 206.2))).unwrap();
    assert_eq!(
        knee,
        Knee {
            arrival_rate: 480.0,
            confirmed_per_s: 206.2,
            lower_bound: false
        }
    );
    let e = Knee::of(None).unwrap_err().to_string();
    assert!(e.contains("not a capacity run's report"), "{e}");
    let none = Capacity {
        steps: vec![plateau(1, Some(40.0), 1.0)],
        knee: None,
        beyond_plan: false,
    };
    let e = Knee::of(Some(&none)).unwrap_err().to_string();
    assert!(e.contains("found no knee"), "{e}");
    let closed = Capacity {
        steps: vec![plateau(1, None, 12.0)],
        knee: Some(1),
        beyond_plan: false,
    };
    let e = Knee::of(Some(&closed)).unwrap_err().to_string();
    assert!(e.contains("closed model"), "{e}");
}

#[test]
fn at_rate_sets_the_plateau_and_grows_the_pool_to_one_user_per_arrival_per_second() {
    let mut s = overload_scenario();
    let lasting = s.load.get_ref().arrivals().unwrap().total_duration();
    at_rate(&mut s, 1440.0).unwrap();
    assert!((rate_of(&s) - 1440.0).abs() < 1e-9);
    assert_eq!(s.load.get_ref().pool(), 1440);
    assert_eq!(
        s.load.get_ref().arrivals().unwrap().total_duration(),
        lasting
    );
    let mut without_users = overload_scenario();
    without_users.load.get_mut().users = None;
    at_rate(&mut without_users, 1440.0).unwrap();
    assert_eq!(
        without_users.load.get_ref().pool(),
        1440,
        "not the default pool's 1000"
    );
}

#[test]
fn overload_runs_at_three_times_the_newest_knee_of_its_backend_and_keeps_six_tenths_of_it() {
    let reports = tempfile::tempdir().unwrap();
    let r = reports.path();
    write_capacity_report(
        r,
        "20261201T000000Z-capacity-1",
        "local",
        Some(capacity(480.0, 206.2)),
    );
    let newest = write_capacity_report(
        r,
        "20261206T054958Z-capacity-2",
        "local",
        Some(capacity(240.0, 106.0)),
    );
    // Newer, but not what `latest` wants: another backend, and a run that is no capacity run.
    write_capacity_report(
        r,
        "20261206T060000Z-capacity-3",
        "containers",
        Some(capacity(80.0, 30.0)),
    );
    write_capacity_report(r, "20261206T070000Z-overload-4", "local", None);
    std::fs::create_dir_all(r.join("zz-not-a-run")).unwrap();

    let mut s = overload_scenario();
    let said = resolve(&mut s, &KneeSource::Latest, r).unwrap().unwrap();
    assert!((rate_of(&s) - 720.0).abs() < 1e-9, "{said}");
    assert_eq!(goodput_bound(&s), 63.6, "0.6 of 106.0 to a tenth: {said}");
    assert!(
        said.ends_with("so 720/s journeys, goodput >= 63.6 confirmed orders/s"),
        "{said}"
    );
    assert!(s.load.get_ref().pool() >= 720);
    assert!(said.contains(&newest.display().to_string()), "{said}");
    assert!(
        said.contains("240 journeys/s, 106.0 confirmed orders/s"),
        "{said}"
    );
    let from = s.load.get_ref().knee.clone().unwrap();
    assert_eq!(from.report, newest.display().to_string());
    assert_eq!(from.confirmed_per_s, 106.0);
    // The report's copy of the scenario says where its figures came from.
    let definition = serde_json::to_value(&s).unwrap();
    assert_eq!(definition["load"]["knee"]["arrival_rate"], 240.0);

    // An explicit report wins over the newest.
    let older = r.join("20261201T000000Z-capacity-1/report.json");
    let mut s = overload_scenario();
    resolve(&mut s, &KneeSource::Report(older), r).unwrap();
    assert!((rate_of(&s) - 1440.0).abs() < 1e-9);
    assert_eq!(goodput_bound(&s), 123.7);
}

#[test]
fn without_a_knee_the_scenario_keeps_its_own_figures_and_says_how_to_get_one() {
    let own = overload_scenario();
    let empty = tempfile::tempdir().unwrap();
    for (source, dir) in [
        (KneeSource::Latest, empty.path().to_path_buf()),
        (KneeSource::Latest, empty.path().join("missing")),
        (KneeSource::Fixed, empty.path().to_path_buf()),
    ] {
        let mut s = overload_scenario();
        let said = resolve(&mut s, &source, &dir).unwrap().unwrap();
        assert!(said.contains("run `harness run capacity` first"), "{said}");
        assert_eq!(rate_of(&s), rate_of(&own));
        assert_eq!(goodput_bound(&s), goodput_bound(&own));
        assert!(s.load.get_ref().knee.is_none());
    }
    // `fixed` ignores a knee that is there.
    let reports = tempfile::tempdir().unwrap();
    write_capacity_report(
        reports.path(),
        "20261206T000000Z-capacity-1",
        "local",
        Some(capacity(240.0, 106.0)),
    );
    let mut s = overload_scenario();
    resolve(&mut s, &KneeSource::Fixed, reports.path()).unwrap();
    assert_eq!(rate_of(&s), rate_of(&own));
}

#[test]
fn a_named_report_without_a_knee_or_for_a_scenario_without_knee_keys_is_refused() {
    let reports = tempfile::tempdir().unwrap();
    let no_knee =
        write_capacity_report(reports.path(), "20261206T000000Z-overload-1", "local", None);
    let mut s = overload_scenario();
    let e = resolve(&mut s, &KneeSource::Report(no_knee.clone()), reports.path()).unwrap_err();
    let e = format!("{e:#}");
    assert!(e.contains("not a capacity run's report"), "{e}");
    assert!(e.contains(&no_knee.display().to_string()), "{e}");

    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scenarios/smoke.toml");
    let mut smoke = Scenario::from_toml(&path, &std::fs::read_to_string(&path).unwrap()).unwrap();
    let e = resolve(&mut smoke, &KneeSource::Report(no_knee), reports.path()).unwrap_err();
    assert!(e.to_string().contains("sets nothing from the knee"), "{e}");
    // Nothing to say, and nothing changed, for such a scenario by default.
    assert!(
        resolve(&mut smoke, &KneeSource::Latest, reports.path())
            .unwrap()
            .is_none()
    );
}

#[test]
fn the_source_of_the_knee_parses_from_the_flag() {
    assert_eq!(KneeSource::parse("latest"), Ok(KneeSource::Latest));
    assert_eq!(KneeSource::parse("fixed"), Ok(KneeSource::Fixed));
    assert_eq!(
        KneeSource::parse("reports/x/report.json"),
        Ok(KneeSource::Report("reports/x/report.json".into()))
    );
    assert!(KneeSource::parse(" ").unwrap_err().contains("latest"));
}
