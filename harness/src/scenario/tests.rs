#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use super::*;

const PATH: &str = "scenarios/bad.toml";

const VALID: &str = r#"
name = "example"
description = "Every field set once"

[environment]
backend = "local"
instances = { order = 2, inventory = 1, payment = 3 }
saga_step_timeout = "2s"

[load]
users = 8
ramp_up = "5s"
duration = "20s"
think_time = "200ms..800ms"

[[load.journeys]]
name = "place_order"
weight = 3

[[load.journeys]]
name = "follow_order"
weight = 1

[steady_state]
max_error_rate = 0.01
probe_requests = 20

[[slo]]
endpoint = "POST /api/orders"
p99 = "1s"
error_rate = 0.01

[[slo]]
min_throughput = 5

[[slo]]
saga_completion_p99 = "5s"

[checks]
convergence_timeout = "30s"
invariants = ["no_lost_orders", "sagas_terminal"]
"#;

fn parse(text: &str) -> Result<Scenario, ScenarioError> {
    let s = Scenario::from_toml(Path::new(PATH), text)?;
    s.validate()?;
    Ok(s)
}

/// The error for `text`, checked to start with `scenarios/bad.toml:<line>:`.
#[track_caller]
fn error_on_line(text: &str, line: usize) -> String {
    let e = parse(text).expect_err("the scenario should be refused");
    let shown = e.to_string();
    assert!(
        shown.starts_with(&format!("{PATH}:{line}:")),
        "expected an error on line {line}, got: {shown}"
    );
    assert_eq!(e.line(), Some(line));
    shown
}

/// A minimal valid scenario with `extra` lines appended to `[load]`'s first lines.
fn with_load(load_lines: &str) -> String {
    format!(
        "description = \"d\"\n[load]\n{load_lines}\n[[load.journeys]]\nname = \"browse_catalog\"\nweight = 1\n"
    )
}

#[test]
fn a_valid_file_parses_into_the_typed_struct() {
    let s = parse(VALID).unwrap();
    assert_eq!(s.name, "example");
    assert_eq!(s.description.get_ref(), "Every field set once");
    assert_eq!(*s.environment.backend.get_ref(), Backend::Local);
    assert_eq!(
        s.environment.instances.to_instances(),
        Instances {
            order: 2,
            inventory: 1,
            payment: 3
        }
    );
    assert_eq!(
        s.environment.saga_step_timeout.get_ref().as_std(),
        Duration::from_secs(2)
    );
    let load = s.load.get_ref();
    assert_eq!(load.users.as_ref().map(|u| *u.get_ref()), Some(8));
    assert_eq!(load.think_time().to_string(), "200ms..800ms");
    assert!(!load.is_open());
    assert!(load.arrivals().is_none());
    assert_eq!(
        load.weights(),
        vec![(Journey::PlaceOrder, 3), (Journey::FollowOrder, 1)]
    );
    assert_eq!(load.plan().to_string(), "8,5s;8,20s;0,0s");
    let steady = s.steady_state.as_ref().unwrap();
    assert_eq!(*steady.max_error_rate.get_ref(), 0.01);
    assert_eq!(*steady.probe_requests.get_ref(), 20);
    assert_eq!(
        s.checks.convergence_timeout.get_ref().as_std(),
        Duration::from_secs(30)
    );
    assert_eq!(
        s.checks.invariants.selected(),
        vec![Invariant::NoLostOrders, Invariant::SagasTerminal]
    );
    assert!(s.chaos.is_empty());

    let objectives: Vec<String> = s.objectives().iter().map(ToString::to_string).collect();
    assert_eq!(
        objectives,
        [
            "POST /api/orders p99 <= 1s",
            "POST /api/orders error rate <= 0.01",
            "all requests throughput >= 5/s",
            "saga completion p99 <= 5s",
        ]
    );
    assert!(s.check_backend_supported().is_ok());
}

#[test]
fn defaults_fill_in_what_a_minimal_file_leaves_out() {
    let s = Scenario::from_toml(
        Path::new("scenarios/tiny.toml"),
        &with_load("users = 2\nduration = \"3s\""),
    )
    .unwrap();
    s.validate().unwrap();
    assert_eq!(s.name, "tiny", "the name comes from the file stem");
    assert_eq!(*s.environment.backend.get_ref(), Backend::Local);
    assert_eq!(s.environment.instances.to_instances(), Instances::default());
    assert_eq!(
        s.environment.saga_step_timeout.get_ref().as_std(),
        Duration::from_secs(5)
    );
    assert_eq!(s.load.get_ref().think_time().max, HumanDuration::ZERO);
    assert!(s.steady_state.is_none());
    assert_eq!(s.checks.invariants.selected(), Invariant::ALL.to_vec());
    assert!(s.objectives().is_empty());
}

#[test]
fn the_scenario_serializes_for_reports() {
    let s = parse(VALID).unwrap();
    let json = serde_json::to_value(&s).unwrap();
    assert_eq!(json["name"], "example");
    assert_eq!(json["load"]["duration"], "20s");
    assert_eq!(json["checks"]["invariants"][1], "sagas_terminal");
    assert_eq!(json["slo"][0]["p99"], "1s");
}

#[test]
fn a_test_plan_is_used_as_written_and_gets_a_final_stop() {
    let s = parse(&with_load("test_plan = \"10,5s;10,30s;0,5s\"")).unwrap();
    let plan = s.load.get_ref().plan();
    assert_eq!(plan.to_string(), "10,5s;10,30s;0,5s");
    assert_eq!(plan.to_goose(), "10,5s;10,30s;0,5s");
    let s = parse(&with_load("test_plan = \"5,10s;10,10s\"")).unwrap();
    assert_eq!(s.load.get_ref().plan().to_string(), "5,10s;10,10s;0,0s");
}

#[test]
fn an_unknown_field_names_its_line_and_the_expected_fields() {
    let e = error_on_line(&with_load("userz = 8\nduration = \"3s\""), 3);
    assert!(
        e.contains("scenarios/bad.toml:3:1: unknown field `userz`"),
        "{e}"
    );
    assert!(e.contains("expected one of `users`, `ramp_up`"), "{e}");
}

#[test]
fn an_unknown_top_level_table_is_refused() {
    let e = error_on_line(
        &format!(
            "{}\n[enviroment]\nbackend = \"local\"\n",
            with_load("users = 1\nduration = \"1s\"")
        ),
        9,
    );
    assert!(e.contains("unknown field `enviroment`"), "{e}");
}

#[test]
fn a_wrong_type_names_its_line_and_the_expected_type() {
    let e = error_on_line(&with_load("users = \"eight\"\nduration = \"3s\""), 3);
    assert!(e.contains("expected u32"), "{e}");
    let e = error_on_line(&with_load("users = 1\nduration = 30"), 4);
    assert!(
        e.contains("expected a duration string such as \"250ms\""),
        "{e}"
    );
}

#[test]
fn a_bad_duration_says_what_a_duration_looks_like() {
    let e = error_on_line(&with_load("users = 1\nduration = \"5x\""), 4);
    assert!(
        e.ends_with(
            "invalid duration \"5x\": expected a number followed by us, ms, s or m, e.g. \"250ms\""
        ),
        "{e}"
    );
    let e = error_on_line(
        &with_load("users = 1\nduration = \"1s\"\nthink_time = \"1s..2x\""),
        5,
    );
    assert!(e.contains("invalid duration \"2x\""), "{e}");
}

#[test]
fn a_zero_duration_is_refused_where_it_makes_no_sense() {
    let e = error_on_line(&with_load("users = 1\nduration = \"0s\""), 4);
    assert!(e.contains("duration must be longer than 0s"), "{e}");
    let text = format!(
        "{}[checks]\nconvergence_timeout = \"0ms\"\n",
        with_load("users = 1\nduration = \"1s\"")
    );
    let e = error_on_line(&text, 9);
    assert!(
        e.contains("convergence_timeout must be longer than 0s"),
        "{e}"
    );
}

#[test]
fn an_unknown_journey_lists_the_known_ones() {
    let text = "description = \"d\"\n[load]\nusers = 1\nduration = \"1s\"\n\n[[load.journeys]]\nname = \"checkout\"\nweight = 1\n";
    let e = error_on_line(text, 7);
    assert!(e.contains("unknown variant `checkout`"), "{e}");
    assert!(e.contains("`browse_catalog`"), "{e}");
    assert!(e.contains("`admin_restock`"), "{e}");
}

#[test]
fn all_zero_weights_are_refused_at_the_first_weight() {
    let text = "description = \"d\"\n[load]\nusers = 1\nduration = \"1s\"\n\n[[load.journeys]]\nname = \"browse_catalog\"\nweight = 0\n[[load.journeys]]\nname = \"view_product\"\nweight = 0\n";
    let e = error_on_line(text, 8);
    assert!(e.contains("every journey has weight 0"), "{e}");
}

#[test]
fn a_journey_listed_twice_is_refused() {
    let text = "description = \"d\"\n[load]\nusers = 1\nduration = \"1s\"\n[[load.journeys]]\nname = \"browse_catalog\"\nweight = 1\n[[load.journeys]]\nname = \"browse_catalog\"\nweight = 2\n";
    let e = error_on_line(text, 9);
    assert!(e.contains("journey browse_catalog is listed twice"), "{e}");
}

#[test]
fn zero_users_are_refused() {
    let e = error_on_line(&with_load("users = 0\nduration = \"1s\""), 3);
    assert!(e.contains("users must be at least 1"), "{e}");
}

#[test]
fn users_and_a_test_plan_together_are_refused() {
    let e = error_on_line(&with_load("test_plan = \"1,1s\"\nusers = 2"), 4);
    assert!(
        e.contains("either test_plan or users/ramp_up/duration"),
        "{e}"
    );
    let e = error_on_line(&with_load("test_plan = \"0,1s\""), 3);
    assert!(e.contains("at least 1 user"), "{e}");
    let e = error_on_line(&with_load("test_plan = \"10;5s\""), 3);
    assert!(e.contains("expected USERS,DURATION"), "{e}");
}

#[test]
fn a_load_without_users_or_plan_is_refused() {
    let e = error_on_line(&with_load("ramp_up = \"1s\""), 2);
    assert!(e.contains("[load] needs users and duration"), "{e}");
    let e = error_on_line(&with_load("users = 4"), 3);
    assert!(e.contains("users needs a duration"), "{e}");
}

#[test]
fn an_arrival_rate_is_an_open_load_with_a_ramp_and_a_plateau_and_a_default_pool() {
    let s = parse(&with_load(
        "arrival_rate = \"200/s\"\nramp_up = \"5s\"\nduration = \"60s\"",
    ))
    .unwrap();
    let load = s.load.get_ref();
    assert!(load.is_open());
    let rates = load.arrivals().unwrap();
    assert_eq!(rates.to_string(), "200/s,5s;200/s,1m");
    assert_eq!(load.pool(), 200, "peak rate × 1 s");
    // Goose runs the whole pool for as long as the schedule, then stops it.
    assert_eq!(load.plan().to_goose(), "200,0s;200,65s;0,0s");
    assert_eq!(load.plan().total_duration(), Duration::from_secs(65));
    let steps = load.steps();
    assert_eq!(steps.len(), 2);
    assert!(!steps[0].hold && steps[1].hold);
    assert_eq!(steps[1].rate.unwrap().as_per_second(), 200.0);
    assert_eq!(load.think_time(), ThinkTime::default());
    assert_eq!(
        load.describe(),
        "arrivals 200/s,5s;200/s,1m (open model, 200 users)"
    );

    // The default pool stays within its bounds; `users` sets it.
    let slow = parse(&with_load("arrival_rate = \"600/m\"\nduration = \"10s\"")).unwrap();
    assert_eq!(slow.load.get_ref().pool(), DEFAULT_POOL_MIN);
    let fast = parse(&with_load("arrival_rate = \"5000/s\"\nduration = \"1s\"")).unwrap();
    assert_eq!(fast.load.get_ref().pool(), DEFAULT_POOL_MAX);
    let set = parse(&with_load(
        "arrival_rate = \"50/s\"\nduration = \"10s\"\nusers = 7",
    ))
    .unwrap();
    assert_eq!(set.load.get_ref().pool(), 7);
}

#[test]
fn a_rate_plan_is_used_as_written_and_its_plateaus_are_steps() {
    let s = parse(&with_load(
        "rate_plan = \"20/s,5s;20/s,20s;40/s,5s;40/s,20s\"\nusers = 30",
    ))
    .unwrap();
    let load = s.load.get_ref();
    assert_eq!(
        load.arrivals().unwrap().to_string(),
        "20/s,5s;20/s,20s;40/s,5s;40/s,20s"
    );
    assert_eq!(load.plan().to_goose(), "30,0s;30,50s;0,0s");
    let holds: Vec<bool> = load.steps().iter().map(|s| s.hold).collect();
    assert_eq!(holds, [false, true, false, true]);
    assert!(load.steps().iter().all(|s| s.users == 30));
}

#[test]
fn think_time_is_refused_with_an_open_load_at_its_line() {
    let e = error_on_line(
        &with_load("arrival_rate = \"20/s\"\nduration = \"10s\"\nthink_time = \"100ms..200ms\""),
        5,
    );
    assert!(
        e.contains("think_time does not apply to an open model"),
        "{e}"
    );
    let e = error_on_line(
        &with_load("think_time = \"1s\"\nrate_plan = \"20/s,10s\""),
        3,
    );
    assert!(e.contains("think_time does not apply"), "{e}");
}

#[test]
fn open_load_mistakes_point_at_the_field() {
    let e = error_on_line(&with_load("arrival_rate = \"20/s\""), 3);
    assert!(e.contains("arrival_rate needs a duration"), "{e}");
    let e = error_on_line(&with_load("arrival_rate = \"0/s\"\nduration = \"1s\""), 3);
    assert!(e.contains("arrival_rate must be above 0/s"), "{e}");
    let e = error_on_line(&with_load("arrival_rate = \"20\"\nduration = \"1s\""), 3);
    assert!(
        e.ends_with(
            "invalid arrival rate \"20\": expected a number of journeys per second or minute \
             such as \"200/s\", \"12.5/s\" or \"600/m\""
        ),
        "{e}"
    );
    let e = error_on_line(
        &with_load("arrival_rate = \"20/s\"\nduration = \"1s\"\nrate_plan = \"20/s,1s\""),
        3,
    );
    assert!(e.contains("either arrival_rate or rate_plan"), "{e}");
    let e = error_on_line(&with_load("rate_plan = \"20/s,1s\"\nduration = \"1s\""), 4);
    assert!(
        e.contains("either rate_plan or arrival_rate/ramp_up/duration"),
        "{e}"
    );
    let e = error_on_line(
        &with_load("rate_plan = \"20/s,1s\"\ntest_plan = \"1,1s\""),
        4,
    );
    assert!(e.contains("test_plan is a closed model"), "{e}");
    let e = error_on_line(&with_load("rate_plan = \"0/s,10s\""), 3);
    assert!(e.contains("the rate plan must start journeys"), "{e}");
    let e = error_on_line(&with_load("rate_plan = \"20/s;10s\""), 3);
    assert!(e.contains("expected RATE,DURATION"), "{e}");
    let e = error_on_line(&with_load("rate_plan = \"20/s,10s\"\nusers = 0"), 4);
    assert!(
        e.contains("users (the pool that runs the journeys) must be at least 1"),
        "{e}"
    );
    let e = error_on_line(
        &with_load("arrival_rate = \"100000/s\"\nduration = \"2m\""),
        3,
    );
    assert!(
        e.contains("more than the 10000000 one run may start"),
        "{e}"
    );
}

#[test]
fn find_knee_takes_the_plateaus_of_a_rate_plan() {
    let slo = "\n[[slo]]\nerror_rate = 0.01\n";
    let no_plateau = format!(
        "{}{slo}",
        with_load("rate_plan = \"20/s,5s;40/s,5s\"\nfind_knee = true")
    );
    let e = error_on_line(&no_plateau, 4);
    assert!(e.contains("plateau of the rate plan"), "{e}");
    let constant = format!(
        "{}{slo}",
        with_load("arrival_rate = \"20/s\"\nduration = \"20s\"\nfind_knee = true")
    );
    assert!(parse(&constant).is_ok(), "a constant rate is one plateau");
    let ok = format!(
        "{}{slo}",
        with_load("rate_plan = \"20/s,5s;20/s,20s;40/s,5s;40/s,20s\"\nfind_knee = true")
    );
    assert!(parse(&ok).unwrap().load.get_ref().finds_knee());
}

#[test]
fn min_goodput_is_an_objective_on_confirmed_orders_without_an_endpoint() {
    let base = with_load("users = 1\nduration = \"1s\"");
    let s = parse(&format!("{base}\n[[slo]]\nmin_goodput = 180\n")).unwrap();
    let objectives = s.objectives();
    assert_eq!(
        objectives[0].target,
        Target::MinGoodput { per_second: 180.0 }
    );
    assert_eq!(
        objectives[0].to_string(),
        "goodput >= 180 confirmed orders/s"
    );
    let e = error_on_line(
        &format!("{base}\n[[slo]]\nendpoint = \"POST /api/orders\"\nmin_goodput = 1\n"),
        11,
    );
    assert!(e.contains("min_goodput counts confirmed orders"), "{e}");
    let e = error_on_line(&format!("{base}\n[[slo]]\nmin_goodput = 0\n"), 10);
    assert!(
        e.contains("min_goodput must be a positive number of confirmed orders per second"),
        "{e}"
    );
    let e = error_on_line(
        &format!("{base}\n[[slo]]\nspan = \"order db\"\nmin_goodput = 1\n"),
        11,
    );
    assert!(
        e.contains("min_goodput does not apply to a span SLO"),
        "{e}"
    );
}

#[test]
fn knee_keys_scale_an_arrival_rate_and_a_goodput_bound_and_say_what_they_need() {
    let open = with_load("arrival_rate = \"200/s\"\nduration = \"60s\"\nknee_multiple = 3");
    let s = parse(&format!(
        "{open}\n[[slo]]\nmin_goodput = 100\nknee_share = 0.6\n"
    ))
    .unwrap();
    assert_eq!(
        s.load
            .get_ref()
            .knee_multiple
            .as_ref()
            .map(|m| *m.get_ref()),
        Some(3.0)
    );
    assert_eq!(
        s.slos[0]
            .get_ref()
            .knee_share
            .as_ref()
            .map(|m| *m.get_ref()),
        Some(0.6)
    );

    let e = error_on_line(
        &with_load("rate_plan = \"20/s,5s;20/s,20s\"\nknee_multiple = 3"),
        4,
    );
    assert!(e.contains("knee_multiple sets an arrival_rate"), "{e}");
    let e = error_on_line(
        &with_load("arrival_rate = \"200/s\"\nduration = \"60s\"\nknee_multiple = 0"),
        5,
    );
    assert!(
        e.contains("knee_multiple is how many times the knee's arrival rate"),
        "{e}"
    );
    let e = error_on_line(&format!("{open}\n[[slo]]\nknee_share = 0.6\n"), 11);
    assert!(e.contains("knee_share scales min_goodput"), "{e}");
    let e = error_on_line(
        &format!("{open}\n[[slo]]\nmin_goodput = 100\nknee_share = -1\n"),
        12,
    );
    assert!(e.contains("knee_share is the share of the knee's"), "{e}");
    // Never read from a file: the report's record of where a knee came from.
    let e = parse(&with_load(
        "arrival_rate = \"200/s\"\nduration = \"60s\"\nknee = 3",
    ))
    .unwrap_err()
    .to_string();
    assert!(e.contains("knee"), "{e}");
}

#[test]
fn slo_mistakes_point_at_the_field() {
    let base = with_load("users = 1\nduration = \"1s\"");
    let slo = |body: &str| format!("{base}\n[[slo]]\n{body}\n");
    // Line 8 is the blank line, 9 `[[slo]]`, 10 the first field.
    let e = error_on_line(&slo("endpoint = \"/api/orders\"\np99 = \"1s\""), 10);
    assert!(
        e.contains("invalid endpoint \"/api/orders\": expected \"METHOD /path\""),
        "{e}"
    );
    let e = error_on_line(&slo("endpoint = \"POST /api/orders\"\np98 = \"1s\""), 11);
    assert!(e.contains("unknown field `p98`"), "{e}");
    assert!(e.contains("`p99`"), "{e}");
    let e = error_on_line(&slo("endpoint = \"GET /api/products\"\np99 = \"0ms\""), 11);
    assert!(e.contains("p99 must be longer than 0s"), "{e}");
    let e = error_on_line(&slo("error_rate = 5"), 10);
    assert!(
        e.contains("error_rate is a fraction between 0 and 1"),
        "{e}"
    );
    let e = error_on_line(&slo("min_throughput = -1"), 10);
    assert!(
        e.contains("min_throughput must be a positive number"),
        "{e}"
    );
    let e = error_on_line(
        &slo("endpoint = \"POST /api/orders\"\nsaga_completion_p99 = \"5s\""),
        11,
    );
    assert!(
        e.contains("saga_completion_p99 measures the order saga"),
        "{e}"
    );
    let e = error_on_line(&slo("p99 = \"1s\"\nphase = \"during\""), 11);
    assert!(
        e.contains("phase \"during\" needs a chaos timeline ([[chaos]] entries)"),
        "{e}"
    );
    let e = error_on_line(&slo("endpoint = \"POST /api/orders\""), 9);
    assert!(e.contains("this [[slo]] sets no objective"), "{e}");
}

#[test]
fn the_impossible_slo_of_the_acceptance_test_parses() {
    let base = with_load("users = 1\nduration = \"1s\"");
    let s = parse(&format!(
        "{base}[[slo]]\nendpoint = \"POST /api/orders\"\np99 = \"1us\"\n"
    ))
    .unwrap();
    assert_eq!(s.objectives()[0].to_string(), "POST /api/orders p99 <= 1us");
}

#[test]
fn instance_counts_and_invariant_names_are_checked() {
    let base = with_load("users = 1\nduration = \"1s\"");
    let e = error_on_line(
        &format!("{base}[environment]\ninstances = {{ order = 0 }}\n"),
        9,
    );
    assert!(
        e.contains("order instances must be between 1 and 8, not 0"),
        "{e}"
    );
    let e = error_on_line(
        &format!("{base}[environment]\ninstances = {{ shipping = 1 }}\n"),
        9,
    );
    assert!(e.contains("unknown field `shipping`"), "{e}");
    let e = error_on_line(
        &format!(
            "{base}[checks]\ninvariants = [\n  \"no_lost_orders\",\n  \"no_lost_money\",\n]\n"
        ),
        11,
    );
    assert!(e.contains("unknown variant `no_lost_money`"), "{e}");
    let e = error_on_line(&format!("{base}[checks]\ninvariants = \"some\"\n"), 9);
    assert!(
        e.contains("expected \"all\" or a list of invariant names"),
        "{e}"
    );
    let e = error_on_line(
        &format!("{base}[checks]\ninvariants = [\"idempotency\", \"idempotency\"]\n"),
        9,
    );
    assert!(e.contains("invariant idempotency is listed twice"), "{e}");
    let none = parse(&format!("{base}[checks]\ninvariants = []\n")).unwrap();
    assert!(none.checks.invariants.selected().is_empty());
}

#[test]
fn chaos_entries_parse_and_bad_ones_are_refused_with_their_line() {
    let base = with_load("users = 1\nduration = \"30s\"");
    let entry = |body: &str| format!("{base}\n[[chaos]]\n{body}\n");
    let text = entry(
        "at = \"10s\"\nfor = \"5s\"\ntarget = \"gateway->order\"\nfault = \"latency\"\nlatency = \"200ms\"\njitter = \"50ms\"",
    );
    let s = parse(&text).unwrap();
    let e = s.chaos[0].get_ref();
    assert_eq!(*e.fault.get_ref(), Fault::Latency);
    assert_eq!(e.target.get_ref(), "gateway->order");
    assert_eq!(e.label(), "latency gateway->order");
    assert_eq!(
        e.duration.as_ref().map(|d| d.get_ref().as_std()),
        Some(Duration::from_secs(5))
    );

    // Each mistake is reported on the line of the value at fault (the entry starts on line 9).
    let e = error_on_line(
        &entry("at = \"1s\"\ntarget = \"gateway->ordr\"\nfault = \"partition\""),
        11,
    );
    assert!(e.contains("unknown node \"ordr\""), "{e}");
    let e = error_on_line(
        &entry("at = \"1s\"\ntarget = \"client->kafka\"\nfault = \"partition\""),
        11,
    );
    assert!(e.contains("no link matches \"client->kafka\""), "{e}");
    let e = error_on_line(
        &entry("at = \"1s\"\ntarget = \"gateway->order\"\nfault = \"kill\""),
        11,
    );
    assert!(e.contains("kill acts on instances"), "{e}");
    let e = error_on_line(
        &entry("at = \"1s\"\ntarget = \"order#2\"\nfault = \"kill\""),
        11,
    );
    assert!(e.contains("kill acts on instances"), "{e}");
    let e = error_on_line(
        &entry("at = \"1s\"\ntarget = \"order\"\nfault = \"latency\""),
        12,
    );
    assert!(e.contains("fault latency needs latency"), "{e}");
    let e = error_on_line(
        &entry("at = \"1s\"\ntarget = \"order#1\"\nfault = \"pause\"\nlatency = \"1s\""),
        13,
    );
    assert!(e.contains("latency does not apply to fault pause"), "{e}");
    let e = error_on_line(
        &entry("at = \"40s\"\ntarget = \"order\"\nfault = \"partition\""),
        10,
    );
    assert!(
        e.contains("the fault starts at 40s but the load lasts 30s"),
        "{e}"
    );
    let e = error_on_line(
        &entry("at = \"1s\"\ntarget = \"order\"\nfault = \"partition\"\ntoxicity = 2"),
        13,
    );
    assert!(e.contains("toxicity"), "{e}");
    let e = error_on_line(&entry("at = \"1s\"\ntarget = \"x\"\nfault = \"flood\""), 12);
    assert!(e.contains("unknown variant `flood`"), "{e}");
}

#[test]
fn the_external_backend_parses_but_is_refused_at_run_time() {
    let base = with_load("users = 1\nduration = \"1s\"");
    let s = parse(&format!("{base}[environment]\nbackend = \"containers\"\n")).unwrap();
    assert!(s.check_backend_supported().is_ok());
    let s = parse(&format!("{base}[environment]\nbackend = \"external\"\n")).unwrap();
    let e = s.check_backend_supported().unwrap_err().to_string();
    assert!(e.starts_with(&format!("{PATH}:9:11:")), "{e}");
    assert!(
        e.contains("the \"external\" backend is not supported yet"),
        "{e}"
    );
    let e = error_on_line(&format!("{base}[environment]\nbackend = \"k8s\"\n"), 9);
    assert!(e.contains("unknown variant `k8s`"), "{e}");
}

#[test]
fn a_missing_field_is_reported_at_its_table() {
    let text = with_load("users = 1\nduration = \"1s\"").replace("description = \"d\"\n", "");
    let e = error_on_line(&text, 1);
    assert!(e.contains("missing field `description`"), "{e}");
    let e = error_on_line(
        "description = \"d\"\n\n[load]\nusers = 1\nduration = \"1s\"\n",
        3,
    );
    assert!(e.contains("missing field `journeys`"), "{e}");
    let e = error_on_line("description = \"d\"\n", 1);
    assert!(e.contains("missing field `load`"), "{e}");
}

#[test]
fn a_toml_syntax_error_names_its_line_and_column() {
    let e = error_on_line("description = \"d\"\n[load\nusers = 1\n", 2);
    assert!(e.starts_with(&format!("{PATH}:2:")), "{e}");
    assert!(!e.contains('\n'), "one line: {e}");
}

#[test]
fn find_knee_needs_a_plateau_and_slos() {
    let no_plateau = with_load("test_plan = \"10,10s;20,10s;0,5s\"\nfind_knee = true");
    let e = error_on_line(&no_plateau, 4);
    assert!(e.contains("has none"), "{e}");
    let no_slos = with_load("test_plan = \"10,10s;10,30s\"\nfind_knee = true");
    let e = error_on_line(&no_slos, 4);
    assert!(e.contains("needs [[slo]]"), "{e}");
    let ok = format!(
        "{}\n[[slo]]\nerror_rate = 0.01\n",
        with_load("test_plan = \"10,10s;10,30s\"\nfind_knee = true")
    );
    assert!(parse(&ok).unwrap().load.get_ref().finds_knee());
}

#[test]
fn span_and_metric_slos_parse_into_their_objectives() {
    let base = with_load("users = 1\nduration = \"1s\"");
    let s = parse(&format!(
        "{base}[[slo]]\nspan = \"inventory process inventory.commands\"\np50 = \"5ms\"\np99 = \"20ms\"\nmax = \"100ms\"\n\
         [[slo]]\nmetric = 'outbox_pending_messages{{process=\"order#1\"}}'\nmax = 100\nmin = 0\n\
         [[slo]]\nmetric = \"saga_in_flight\"\nmin = 1.5\n"
    ))
    .unwrap();
    let hop = "inventory process inventory.commands";
    let span = |percentile, max: &str| Target::Span {
        hop: hop.into(),
        percentile,
        max: max.parse().unwrap(),
    };
    let outbox = r#"outbox_pending_messages{process="order#1"}"#;
    let targets: Vec<Target> = s.objectives().into_iter().map(|o| o.target).collect();
    assert_eq!(
        targets,
        [
            span(Percentile::P50, "5ms"),
            span(Percentile::P99, "20ms"),
            span(Percentile::Max, "100ms"),
            Target::MetricMax {
                selector: outbox.into(),
                max: 100.0
            },
            Target::MetricMin {
                selector: outbox.into(),
                min: 0.0
            },
            Target::MetricMin {
                selector: "saga_in_flight".into(),
                min: 1.5
            },
        ]
    );
    assert!(
        s.objectives()
            .iter()
            .all(|o| o.endpoint.is_none() && o.phase == Phase::All)
    );
    let names: Vec<String> = s.objectives().iter().map(ToString::to_string).collect();
    assert_eq!(names[1], format!("span {hop:?} p99 <= 20ms"));
    assert_eq!(names[3], format!("metric {outbox} <= 100"));
    assert_eq!(names[5], "metric saga_in_flight >= 1.5");
}

#[test]
fn span_and_metric_slo_mistakes_point_at_the_field() {
    let base = with_load("users = 1\nduration = \"1s\"");
    let slo = |body: &str| format!("{base}\n[[slo]]\n{body}\n");
    // Line 9 is `[[slo]]`, 10 the first field.
    let e = error_on_line(&slo("metric = \"saga_in_flight\"\nmax = \"1s\""), 11);
    assert!(
        e.contains("a metric SLO's max is a number (the metric's value), not the duration \"1s\""),
        "{e}"
    );
    let e = error_on_line(&slo("p99 = \"1s\"\nmax = 100"), 11);
    assert!(
        e.contains("max = 100 is a number, the limit of a metric SLO (metric = \"NAME\")"),
        "{e}"
    );
    let e = error_on_line(&slo("min = 3"), 10);
    assert!(e.contains("min is the lower limit of a metric SLO"), "{e}");
    let e = error_on_line(
        &slo("span = \"order db\"\np99 = \"10ms\"\nerror_rate = 0.01"),
        12,
    );
    assert!(
        e.contains("error_rate does not apply to a span SLO, which judges the latency of one hop"),
        "{e}"
    );
    let e = error_on_line(
        &slo("metric = \"saga_in_flight\"\np99 = \"1s\"\nmax = 3"),
        11,
    );
    assert!(
        e.contains("p99 does not apply to a metric SLO, which judges a scraped value"),
        "{e}"
    );
    let e = error_on_line(&slo("metric = 'outbox{service=order}'\nmax = 1"), 10);
    assert!(
        e.contains("invalid metric selector \"outbox{service=order}\": "),
        "{e}"
    );
    assert!(e.contains("at column"), "{e}");
    let e = error_on_line(&slo("metric = \"saga_in_flight\"\nmax = 2\nmin = 5"), 12);
    assert!(
        e.contains("min = 5 is above max = 2: no value could meet both"),
        "{e}"
    );
    let e = error_on_line(&slo("metric = \"saga_in_flight\""), 9);
    assert!(
        e.contains("this metric SLO sets no limit; add max = NUMBER and/or min = NUMBER"),
        "{e}"
    );
    let e = error_on_line(&slo("span = \" \"\np99 = \"1s\""), 10);
    assert!(e.contains("span names a hop and cannot be empty"), "{e}");
    let e = error_on_line(&slo("span = \"order db\""), 9);
    assert!(
        e.contains("this [[slo]] sets no objective; add one of p50, p95, p99 or max"),
        "{e}"
    );
}

#[test]
fn the_toml_examples_of_the_scenarios_readme_parse() {
    let readme = include_str!("../../../scenarios/README.md");
    let blocks: Vec<&str> = readme
        .split("```toml\n")
        .skip(1)
        .map(|b| &b[..b.find("```").unwrap()])
        .collect();
    assert!(blocks.len() >= 3, "{} examples", blocks.len());
    // A fragment of [[slo]] entries goes under a load with a fault, for `phase = "during"`.
    let base = format!(
        "{}[[chaos]]\nat = \"1s\"\nfor = \"2s\"\ntarget = \"order\"\nfault = \"partition\"\n",
        with_load("users = 1\nduration = \"10s\"")
    );
    for block in blocks {
        let text = if block.contains("[load]") {
            block.to_string()
        } else {
            format!("{base}{block}")
        };
        if let Err(e) = parse(&text) {
            panic!("{e}\n{text}");
        }
    }
}

#[test]
fn the_databases_and_their_links_are_targets_on_the_containers_backend_only() {
    let base = with_load("users = 1\nduration = \"10s\"");
    // The databases are processes there, and a link to one can be faulted.
    parse(&format!(
        "{base}[environment]\nbackend = \"containers\"\n[[chaos]]\nat = \"1s\"\ntarget = \"order-db\"\nfault = \"pause\"\n\
         [[chaos]]\nat = \"1s\"\ntarget = \"order#1->db\"\nfault = \"latency\"\nlatency = \"50ms\"\n\
         [[chaos]]\nat = \"1s\"\ntarget = \"db\"\nfault = \"kill\"\n"
    ))
    .unwrap();
    let e = error_on_line(
        &format!("{base}[[chaos]]\nat = \"1s\"\ntarget = \"order#1->db\"\nfault = \"partition\"\n"),
        10,
    );
    assert!(e.contains("no link matches"), "{e}");
    let e = error_on_line(
        &format!("{base}[[chaos]]\nat = \"1s\"\ntarget = \"order-db\"\nfault = \"kill\"\n"),
        10,
    );
    assert!(e.contains("acts on instances"), "{e}");
}

#[test]
fn disconnect_is_a_fault_of_the_containers_backend_only() {
    let base = with_load("users = 1\nduration = \"10s\"");
    let chaos =
        "[[chaos]]\nat = \"1s\"\nfor = \"2s\"\ntarget = \"order#1\"\nfault = \"disconnect\"\n";
    let e = error_on_line(&format!("{base}{chaos}"), 12);
    assert!(e.contains("needs backend = \"containers\""), "{e}");
    let s = parse(&format!(
        "{base}[environment]\nbackend = \"containers\"\n{chaos}"
    ))
    .unwrap();
    assert_eq!(*s.chaos[0].get_ref().fault.get_ref(), Fault::Disconnect);
}

/// [`with_load`] with a valid load; 7 lines, so what follows starts on line 8.
fn base() -> String {
    with_load("users = 1\nduration = \"10s\"")
}

#[test]
fn environment_resilience_parses_and_its_errors_point_at_the_value() {
    let s = parse(&format!(
        "{}[environment.resilience]\nbreaker = \"on\"\nbreaker_slow_call = \"2s\"\n\
         bulkhead_limits = {{ payment = 4 }}\nrate_limit = \"20/s\"\nservice_timeout = \"3s\"\n",
        base()
    ))
    .unwrap();
    let env = s.environment.resilience.gateway_env();
    assert_eq!(env["BREAKER_SLOW_CALL_MS"], "2000");
    assert_eq!(env["BULKHEAD_LIMIT_PAYMENT"], "4");
    assert_eq!(env["RATE_LIMIT_PER_SECOND"], "20");
    assert_eq!(
        s.environment.resilience.service_env()["REQUEST_TIMEOUT_MS"],
        "3000"
    );

    let e = error_on_line(
        &format!(
            "{}[environment.resilience]\nbreaker = \"on\"\nbreaker_failure_rate = 1.5\n",
            base()
        ),
        10,
    );
    assert!(e.contains("breaker_failure_rate is a share"), "{e}");
    let e = error_on_line(
        &format!(
            "{}[environment.resilience]\nbreaker_windw = \"5s\"\n",
            base()
        ),
        9,
    );
    assert!(e.contains("unknown field `breaker_windw`"), "{e}");
    let e = error_on_line(
        &format!("{}[environment.resilience]\nbulkhead = true\n", base()),
        9,
    );
    assert!(e.contains("expected \"on\" or \"off\""), "{e}");
}

#[test]
fn cpus_per_instance_parses_and_a_bad_budget_points_at_its_line() {
    let s = parse(&format!(
        "{}[environment]\ncpus_per_instance = 0.25\n",
        base()
    ))
    .unwrap();
    let options =
        crate::environment::EnvOptions::of(&s.environment, false, crate::environment::Traces::Off);
    assert_eq!(options.cpus_per_instance, Some(0.25));
    assert_eq!(parse(&base()).unwrap().environment.cpus_per_instance, None);
    for bad in ["0", "-1", "1000"] {
        let e = error_on_line(
            &format!("{}[environment]\ncpus_per_instance = {bad}\n", base()),
            9,
        );
        assert!(
            e.contains("cpus_per_instance must be from 0.01 to 256 cores"),
            "{e}"
        );
    }
    let e = error_on_line(
        &format!("{}[environment]\ncpus_per_instance = \"half\"\n", base()),
        9,
    );
    assert!(e.contains("invalid type"), "{e}");
}

/// Two variants, the second with `gate = false`; 7 lines.
const VARIANTS: &str = "[[variant]]\nname = \"with-breaker\"\nresilience = { breaker = \"on\", bulkhead = \"on\" }\n\
                        [[variant]]\nname = \"without\"\nresilience = { breaker = \"off\", bulkhead = \"off\" }\ngate = false\n";

#[test]
fn variants_parse_and_merge_their_resilience_over_the_environment_s() {
    let s = parse(&format!(
        "{}[environment.resilience]\nbreaker_open_for = \"2s\"\nbreaker = \"on\"\n{VARIANTS}",
        base()
    ))
    .unwrap();
    let names: Vec<&str> = s.variants.iter().map(|v| v.get_ref().name()).collect();
    assert_eq!(names, ["with-breaker", "without"]);
    assert!(s.variants[0].get_ref().gate && !s.variants[1].get_ref().gate);
    let without = s.for_variant(s.variants[1].get_ref());
    assert!(without.variants.is_empty());
    let env = without.environment.resilience.gateway_env();
    assert_eq!(env["BREAKER"], "off", "the variant wins");
    assert_eq!(env["BREAKER_OPEN_MS"], "2000", "the environment's stays");
    assert_eq!(env["BULKHEAD"], "off");
}

#[test]
fn bad_variants_are_refused_at_their_line() {
    // One variant compares with nothing.
    let e = error_on_line(
        &format!(
            "{}[[variant]]\nname = \"alone\"\nresilience = {{ breaker = \"off\" }}\n",
            base()
        ),
        8,
    );
    assert!(
        e.contains("one [[variant]] has nothing to be compared with"),
        "{e}"
    );
    // The same name twice: the second is pointed at.
    let twice = VARIANTS.replace("\"without\"", "\"with-breaker\"");
    let e = error_on_line(&format!("{}{twice}", base()), 12);
    assert!(
        e.contains("variant name \"with-breaker\" is used twice"),
        "{e}"
    );
    // An unknown key, in the variant and in its resilience table.
    let e = error_on_line(
        &format!(
            "{}{VARIANTS}[[variant]]\nname = \"third\"\ngated = false\n",
            base()
        ),
        17,
    );
    assert!(e.contains("unknown field `gated`"), "{e}");
    let e = error_on_line(
        &format!(
            "{}{}",
            base(),
            VARIANTS.replace("bulkhead = \"off\"", "bulkhed = \"off\"")
        ),
        13,
    );
    assert!(e.contains("unknown field `bulkhed`"), "{e}");
    // A name that cannot name a folder, and a value out of range.
    let e = error_on_line(
        &format!(
            "{}{}",
            base(),
            VARIANTS.replace("\"without\"", "\"with/out\"")
        ),
        12,
    );
    assert!(e.contains("invalid variant name \"with/out\""), "{e}");
    let e = error_on_line(
        &format!(
            "{}{}",
            base(),
            VARIANTS.replace("bulkhead = \"off\"", "bulkhead_limit = 0")
        ),
        13,
    );
    assert!(e.contains("bulkhead_limit must be at least 1"), "{e}");
}

#[test]
fn a_scale_fault_takes_a_service_and_another_instance_count() {
    let base = base();
    // The entry starts on line 8; its target is on line 11, its fault on 12, what follows on 13.
    let chaos = |body: &str| format!("{base}[[chaos]]\nat = \"1s\"\nfor = \"2s\"\n{body}\n");
    let s = parse(&chaos(
        "target = \"order\"\nfault = \"scale\"\ninstances = 3",
    ))
    .unwrap();
    let e = s.chaos[0].get_ref();
    assert_eq!(*e.fault.get_ref(), Fault::Scale);
    assert_eq!(e.instances.as_ref().map(|n| *n.get_ref()), Some(3));
    assert_eq!(e.label(), "scale order");

    for (target, says) in [
        (
            "gateway->order",
            "scale acts on a service, and \"gateway->order\" is a link",
        ),
        (
            "order#2",
            "\"order#2\" is one instance; use \"order\" with instances = N",
        ),
        ("gateway", "\"gateway\" is not one"),
    ] {
        let e = error_on_line(
            &chaos(&format!(
                "target = \"{target}\"\nfault = \"scale\"\ninstances = 2"
            )),
            11,
        );
        assert!(e.contains(says), "{e}");
    }
    let e = error_on_line(&chaos("target = \"order\"\nfault = \"scale\""), 12);
    assert!(e.contains("fault scale needs instances"), "{e}");
    let e = error_on_line(
        &chaos("target = \"order#1\"\nfault = \"kill\"\ninstances = 2"),
        13,
    );
    assert!(e.contains("instances does not apply to fault kill"), "{e}");
    for bad in [0, 9] {
        let e = error_on_line(
            &chaos(&format!(
                "target = \"order\"\nfault = \"scale\"\ninstances = {bad}"
            )),
            13,
        );
        assert!(
            e.contains(&format!(
                "instances: the count must be between 1 and 8, not {bad}"
            )),
            "{e}"
        );
    }
    let e = error_on_line(
        &chaos("target = \"order\"\nfault = \"scale\"\ninstances = 1"),
        13,
    );
    assert!(
        e.contains("instances = 1 is the number of order instances the fault would start from"),
        "{e}"
    );
    let e = error_on_line(
        &chaos("target = \"order\"\nfault = \"scale\"\ninstances = 2\ntoxicity = 0.5"),
        14,
    );
    assert!(e.contains("toxicity does not apply to fault scale"), "{e}");
}

#[test]
fn a_scale_fault_is_checked_against_the_scenarios_own_counts_and_backend() {
    let base = base();
    let payment = |to: u32| {
        format!(
            "{base}[environment]\ninstances = {{ payment = 3 }}\n[[chaos]]\nat = \"1s\"\ntarget = \"payment\"\nfault = \"scale\"\ninstances = {to}\n"
        )
    };
    parse(&payment(1)).unwrap();
    let e = error_on_line(&payment(3), 14);
    assert!(e.contains("instances = 3 is the number of payment"), "{e}");
    let on = |backend: &str| {
        format!(
            "{base}[environment]\nbackend = \"{backend}\"\n[[chaos]]\nat = \"1s\"\ntarget = \"order\"\nfault = \"scale\"\ninstances = 2\n"
        )
    };
    parse(&on("containers")).unwrap();
    let e = error_on_line(&on("external"), 13);
    assert!(
        e.contains("scaling at run time is not supported on the external backend yet"),
        "{e}"
    );
    // Two scale faults on one service at once would leave it at whichever healed last.
    let scale = |at: &str, to: u32| {
        format!(
            "[[chaos]]\nat = \"{at}\"\nfor = \"3s\"\ntarget = \"order\"\nfault = \"scale\"\ninstances = {to}\n"
        )
    };
    let e = error_on_line(&format!("{base}{}{}", scale("1s", 2), scale("2s", 3)), 15);
    assert!(
        e.contains("this scale of order overlaps the one from 1s to 4s"),
        "{e}"
    );
    parse(&format!("{base}{}{}", scale("1s", 2), scale("4s", 3))).unwrap();
}

#[test]
fn message_faults_take_links_to_the_broker_and_their_own_attributes() {
    let base = base();
    // The entry starts on line 8; its target is on line 11, its fault on 12, what follows on 13.
    let chaos = |body: &str| format!("{base}[[chaos]]\nat = \"1s\"\nfor = \"2s\"\n{body}\n");
    let s = parse(&chaos(
        "target = \"kafka\"\nfault = \"duplicate\"\nprobability = 0.5",
    ))
    .unwrap();
    let e = s.chaos[0].get_ref();
    assert_eq!(*e.fault.get_ref(), Fault::Duplicate);
    assert_eq!(e.label(), "duplicate kafka");
    assert!(!s.injects_poison());
    parse(&chaos("target = \"payment->kafka\"\nfault = \"lost_ack\"")).unwrap();
    parse(&chaos(
        "target = \"order#1->kafka\"\nfault = \"delay\"\ntopic = \"payment.events\"\npartition = 2\ndelay = \"1500ms\"",
    ))
    .unwrap();
    let s = parse(&chaos(
        "target = \"kafka\"\nfault = \"poison\"\ntopic = \"payment.commands\"\nmessages = 3",
    ))
    .unwrap();
    assert!(s.injects_poison());

    for (body, line, says) in [
        (
            "target = \"gateway->order\"\nfault = \"duplicate\"",
            11,
            "duplicate acts on links to the broker, and \"gateway->order\" names none",
        ),
        (
            "target = \"order#1\"\nfault = \"poison\"\ntopic = \"order.events\"",
            11,
            "poison publishes onto a topic of the broker, so its target is kafka",
        ),
        (
            "target = \"kafka\"\nfault = \"delay\"\ntopic = \"order.events\"\npartition = 0",
            12,
            "fault delay needs delay",
        ),
        (
            "target = \"kafka\"\nfault = \"delay\"\ndelay = \"1s\"\npartition = 0",
            12,
            "fault delay needs topic",
        ),
        (
            "target = \"kafka\"\nfault = \"delay\"\ndelay = \"1s\"\ntopic = \"order.events\"",
            12,
            "fault delay needs partition",
        ),
        (
            "target = \"kafka\"\nfault = \"duplicate\"\ntopic = \"orders\"",
            13,
            "unknown topic \"orders\": expected one of inventory.commands",
        ),
        (
            "target = \"kafka\"\nfault = \"delay\"\ndelay = \"1s\"\ntopic = \"order.events\"\npartition = 3",
            15,
            "partition 3 does not exist: every topic has 3 (0 to 2)",
        ),
        (
            "target = \"kafka\"\nfault = \"lost_ack\"\nprobability = 1.5",
            13,
            "probability is a fraction between 0 and 1",
        ),
        (
            "target = \"kafka\"\nfault = \"lost_ack\"\nprobability = 0.0",
            13,
            "probability 0 would change nothing",
        ),
        (
            "target = \"kafka\"\nfault = \"lost_ack\"\ntopic = \"order.events\"",
            13,
            "topic does not apply to fault lost_ack",
        ),
        (
            "target = \"kafka\"\nfault = \"poison\"\ntopic = \"order.events\"\nmessages = 0",
            14,
            "messages must be at least 1",
        ),
        (
            "target = \"kafka\"\nfault = \"duplicate\"\ntoxicity = 0.5",
            13,
            "toxicity does not apply to fault duplicate",
        ),
        (
            "target = \"kafka\"\nfault = \"latency\"\nlatency = \"1s\"\nprobability = 0.5",
            14,
            "probability does not apply to fault latency",
        ),
    ] {
        let e = error_on_line(&chaos(body), line);
        assert!(e.contains(says), "{body}: {e}");
    }
}

#[test]
fn message_faults_need_the_local_backend() {
    let e = error_on_line(
        &format!(
            "{}[environment]\nbackend = \"containers\"\n[[chaos]]\nat = \"1s\"\ntarget = \"kafka\"\nfault = \"lost_ack\"\n",
            base()
        ),
        13,
    );
    assert!(
        e.contains("lost_ack needs backend = \"local\": message faults act through the embedded broker's fronts"),
        "{e}"
    );
}

#[test]
fn the_message_fault_scenarios_parse() {
    for name in ["redelivery-storm", "payment-partition"] {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../scenarios")
            .join(format!("{name}.toml"));
        let s = Scenario::load(&path).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(!s.chaos.is_empty(), "{name}");
    }
}
