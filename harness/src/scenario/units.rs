//! The value types of scenario files that are written as strings: durations (`"250ms"`), think
//! time ranges (`"200ms..800ms"`), goose-style test plans (`"10,5s;10,30s;0,5s"`), arrival rates
//! (`"200/s"`) and their plans (`"50/s,10s;50/s,20s"`).
//!
//! Each parses in `FromStr` and deserializes from a TOML string through it, so a bad value fails
//! with the span of that string and the same message the user reads in the docs.

use std::fmt;
use std::str::FromStr;

use serde::de::{self, Deserializer, Visitor};
use serde::{Deserialize, Serialize, Serializer};

const NANOS_PER_MICRO: u128 = 1_000;

/// A non-negative duration written as a number and a unit: `us`, `ms`, `s` or `m`, e.g. `"250ms"`,
/// `"1.5s"`, `"2m"`. The resolution is one microsecond.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct HumanDuration(std::time::Duration);

impl HumanDuration {
    pub const ZERO: Self = Self(std::time::Duration::ZERO);

    pub const fn from_std(d: std::time::Duration) -> Self {
        Self(d)
    }

    pub const fn from_millis(ms: u64) -> Self {
        Self(std::time::Duration::from_millis(ms))
    }

    pub const fn from_secs(s: u64) -> Self {
        Self(std::time::Duration::from_secs(s))
    }

    pub const fn as_std(self) -> std::time::Duration {
        self.0
    }

    pub const fn is_zero(self) -> bool {
        self.0.is_zero()
    }
}

impl From<HumanDuration> for std::time::Duration {
    fn from(d: HumanDuration) -> Self {
        d.0
    }
}

fn duration_error(s: &str) -> String {
    format!("invalid duration {s:?}: expected a number followed by us, ms, s or m, e.g. \"250ms\"")
}

impl FromStr for HumanDuration {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let text = s.trim();
        let split = text
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(text.len());
        let (number, unit) = text.split_at(split);
        let unit_nanos: u128 = match unit {
            "us" => 1_000,
            "ms" => 1_000_000,
            "s" => 1_000_000_000,
            "m" => 60_000_000_000,
            _ => return Err(duration_error(s)),
        };
        let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
        // Exact decimal arithmetic: "0.1s" must be 100ms, not 99.999...ms.
        if whole.is_empty() && fraction.is_empty()
            || !whole.bytes().all(|b| b.is_ascii_digit())
            || !fraction.bytes().all(|b| b.is_ascii_digit())
            || whole.len() > 12
            || fraction.len() > 9
        {
            return Err(duration_error(s));
        }
        let whole: u128 = if whole.is_empty() {
            0
        } else {
            whole.parse().map_err(|_| duration_error(s))?
        };
        let scale = 10u128.pow(u32::try_from(fraction.len()).unwrap_or(9));
        let fraction: u128 = if fraction.is_empty() {
            0
        } else {
            fraction.parse().map_err(|_| duration_error(s))?
        };
        // The value in nanoseconds times `scale`, so the fraction stays exact.
        let scaled_nanos = (whole * scale + fraction) * unit_nanos;
        let per_micro = scale * NANOS_PER_MICRO;
        if !scaled_nanos.is_multiple_of(per_micro) {
            return Err(format!(
                "invalid duration {s:?}: the finest resolution is 1us"
            ));
        }
        let micros = u64::try_from(scaled_nanos / per_micro)
            .map_err(|_| format!("invalid duration {s:?}: too long"))?;
        Ok(Self(std::time::Duration::from_micros(micros)))
    }
}

impl fmt::Display for HumanDuration {
    /// The largest unit that shows the value exactly, so the output parses back to the same value.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let micros = self.0.as_micros();
        if micros == 0 {
            return f.write_str("0s");
        }
        for (unit, size) in [("m", 60_000_000), ("s", 1_000_000), ("ms", 1_000)] {
            if micros.is_multiple_of(size) {
                return write!(f, "{}{unit}", micros / size);
            }
        }
        write!(f, "{micros}us")
    }
}

/// Deserializes any `FromStr<Err = String>` type from a TOML string.
struct FromStrVisitor<T>(&'static str, std::marker::PhantomData<T>);

impl<T: FromStr<Err = String>> Visitor<'_> for FromStrVisitor<T> {
    type Value = T;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0)
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<T, E> {
        v.parse().map_err(E::custom)
    }
}

macro_rules! string_serde {
    ($ty:ty, $expecting:literal) => {
        impl<'de> Deserialize<'de> for $ty {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                d.deserialize_str(FromStrVisitor($expecting, std::marker::PhantomData))
            }
        }

        impl Serialize for $ty {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.collect_str(self)
            }
        }
    };
}

string_serde!(
    HumanDuration,
    "a duration string such as \"250ms\" or \"30s\""
);
string_serde!(
    ThinkTime,
    "a think time string such as \"200ms..800ms\" or \"500ms\""
);
string_serde!(TestPlan, "a test plan string such as \"10,5s;10,30s;0,5s\"");
string_serde!(
    ArrivalRate,
    "an arrival rate string such as \"200/s\" or \"600/m\""
);
string_serde!(
    RatePlan,
    "a rate plan string such as \"50/s,10s;50/s,20s;100/s,10s\""
);

string_serde!(Switch, "\"on\" or \"off\"");
string_serde!(
    RateLimit,
    "\"off\" or a rate per customer such as \"20/s\" or \"600/m\""
);
string_serde!(
    HealthChecks,
    "\"off\" or the interval of the probes, a duration such as \"1s\""
);

/// How long a simulated user pauses between two journeys: uniformly between `min` and `max`.
/// Written `"200ms..800ms"`, or `"500ms"` for a fixed pause.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ThinkTime {
    pub min: HumanDuration,
    pub max: HumanDuration,
}

impl FromStr for ThinkTime {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (min, max) = match s.split_once("..") {
            Some((min, max)) => (min.parse::<HumanDuration>()?, max.parse::<HumanDuration>()?),
            None => {
                let d = s.parse::<HumanDuration>()?;
                (d, d)
            }
        };
        if min > max {
            return Err(format!(
                "invalid think time {s:?}: the minimum {min} is larger than the maximum {max}"
            ));
        }
        Ok(Self { min, max })
    }
}

impl fmt::Display for ThinkTime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.min == self.max {
            write!(f, "{}", self.min)
        } else {
            write!(f, "{}..{}", self.min, self.max)
        }
    }
}

/// One step of a test plan: change the number of running users to `users`, linearly over `over`
/// (goose's semantics: `10,5s` launches 10 users over 5 s; `10,30s` after it holds them 30 s).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PlanStep {
    pub users: u32,
    pub over: HumanDuration,
}

/// Where one step of a [`TestPlan`] (or a [`RatePlan`]) falls in the load.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StepSpan {
    /// The step's position in the plan, from 0.
    pub index: usize,
    pub users: u32,
    /// From the start of the load.
    pub start: std::time::Duration,
    pub end: std::time::Duration,
    /// The step keeps the users (in an open model: the arrival rate) of the step before it,
    /// and there are some: a plateau.
    pub hold: bool,
    /// Open model: the arrival rate the step ends at (a plateau's rate); `None` in a closed one.
    pub rate: Option<ArrivalRate>,
}

/// Whole seconds, a fraction rounded up: goose counts test plan steps in whole seconds and the
/// report's timeline counts whole seconds, so both plans' steps last whole seconds.
fn whole_seconds(d: HumanDuration) -> std::time::Duration {
    let d = d.as_std();
    std::time::Duration::from_secs(d.as_secs() + u64::from(d.subsec_nanos() > 0))
}

/// A goose-style test plan, `USERS,DURATION` steps separated by `;`, e.g. `"10,5s;10,30s;0,5s"`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TestPlan {
    pub steps: Vec<PlanStep>,
}

impl TestPlan {
    /// The most users running at once.
    pub fn peak_users(&self) -> u32 {
        self.steps.iter().map(|s| s.users).max().unwrap_or(0)
    }

    /// How long the whole plan takes.
    pub fn total_duration(&self) -> std::time::Duration {
        self.steps.iter().map(|s| s.over.as_std()).sum()
    }

    /// Each step's place in the load: when it starts and ends, counted from the start of the
    /// load, and whether it holds its users steady (the users of the step before, more than 0),
    /// which is what a capacity run judges. Goose rounds steps up to whole seconds
    /// ([`Self::to_goose`]), and so does this.
    pub fn spans(&self) -> Vec<StepSpan> {
        let mut start = std::time::Duration::ZERO;
        let mut before = 0;
        self.steps
            .iter()
            .enumerate()
            .map(|(index, s)| {
                let end = start + whole_seconds(s.over);
                let span = StepSpan {
                    index,
                    users: s.users,
                    start,
                    end,
                    hold: s.users > 0 && s.users == before && end > start,
                    rate: None,
                };
                start = end;
                before = s.users;
                span
            })
            .collect()
    }

    /// The plan as goose's `--test-plan` option takes it. Goose counts whole seconds, so a step
    /// with a fraction of a second is rounded up.
    pub fn to_goose(&self) -> String {
        self.steps
            .iter()
            .map(|s| format!("{},{}s", s.users, whole_seconds(s.over).as_secs()))
            .collect::<Vec<_>>()
            .join(";")
    }
}

impl FromStr for TestPlan {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut steps = Vec::new();
        // A trailing `;` is harmless, so it is allowed.
        let parts: Vec<&str> = s.trim().trim_end_matches(';').split(';').collect();
        for (i, part) in parts.iter().enumerate() {
            let bad = || {
                format!(
                    "invalid test plan step {:?} (step {} of {s:?}): expected USERS,DURATION \
                     such as \"10,30s\"",
                    part.trim(),
                    i + 1
                )
            };
            let (users, over) = part.split_once(',').ok_or_else(bad)?;
            let users: u32 = users.trim().parse().map_err(|_| bad())?;
            let over: HumanDuration = over
                .trim()
                .parse()
                .map_err(|e| format!("{e} (in step {} of the test plan)", i + 1))?;
            steps.push(PlanStep { users, over });
        }
        Ok(Self { steps })
    }
}

impl fmt::Display for TestPlan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, step) in self.steps.iter().enumerate() {
            if i > 0 {
                f.write_str(";")?;
            }
            write!(f, "{},{}", step.users, step.over)?;
        }
        Ok(())
    }
}

/// How many journeys an open-model load starts per second: a number, `/s` or `/m`, e.g.
/// `"200/s"`, `"12.5/s"`, `"600/m"` (10 per second). Kept as written, so it displays the same.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct ArrivalRate {
    /// The number as written.
    value: f64,
    per_minute: bool,
}

/// The most arrivals per second a rate may ask for: far beyond what one load generator sends.
pub const MAX_RATE_PER_SECOND: f64 = 100_000.0;
/// The most journeys one open-model load may start: the report counts each arrival into its
/// second and phase, which must stay quick.
pub const MAX_ARRIVALS: f64 = 10_000_000.0;

impl ArrivalRate {
    pub const ZERO: Self = Self {
        value: 0.0,
        per_minute: false,
    };

    /// `n` arrivals per second.
    pub fn per_second(n: f64) -> Self {
        Self {
            value: n,
            per_minute: false,
        }
    }

    /// Arrivals per second.
    pub fn as_per_second(self) -> f64 {
        if self.per_minute {
            self.value / 60.0
        } else {
            self.value
        }
    }

    pub fn is_zero(self) -> bool {
        self.value == 0.0
    }
}

fn rate_error(s: &str) -> String {
    format!(
        "invalid arrival rate {s:?}: expected a number of journeys per second or minute such as \
         \"200/s\", \"12.5/s\" or \"600/m\""
    )
}

impl FromStr for ArrivalRate {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (number, unit) = s.trim().split_once('/').ok_or_else(|| rate_error(s))?;
        let per_minute = match unit.trim() {
            "s" => false,
            "m" => true,
            _ => return Err(rate_error(s)),
        };
        let number = number.trim();
        // Digits and at most one point: no sign, exponent, `inf` or `NaN`.
        let digits = number.bytes().filter(u8::is_ascii_digit).count();
        let points = number.bytes().filter(|b| *b == b'.').count();
        if digits == 0 || points > 1 || digits + points != number.len() || number.len() > 15 {
            return Err(rate_error(s));
        }
        let value: f64 = number.parse().map_err(|_| rate_error(s))?;
        let rate = Self { value, per_minute };
        if rate.as_per_second() > MAX_RATE_PER_SECOND {
            return Err(format!(
                "invalid arrival rate {s:?}: at most {MAX_RATE_PER_SECOND}/s"
            ));
        }
        Ok(rate)
    }
}

impl fmt::Display for ArrivalRate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // f64's Display is the shortest form that parses back: `200`, `12.5`.
        write!(
            f,
            "{}/{}",
            self.value,
            if self.per_minute { "m" } else { "s" }
        )
    }
}

/// One step of a rate plan: change the arrival rate linearly to `rate` over `over` (from the
/// rate the step before ended at; the first step starts at 0/s). A step that keeps the rate of
/// the step before is a plateau.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RateStep {
    pub rate: ArrivalRate,
    pub over: HumanDuration,
}

/// The open-model counterpart of a [`TestPlan`]: `RATE,DURATION` steps separated by `;`, e.g.
/// `"50/s,10s;50/s,20s;100/s,10s;100/s,20s"`: ramp to 50/s over 10 s, hold it 20 s, ramp to
/// 100/s over 10 s, hold it 20 s. The load ends with the last step.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct RatePlan {
    pub steps: Vec<RateStep>,
}

impl RatePlan {
    /// The highest rate of the plan, per second.
    pub fn peak_per_second(&self) -> f64 {
        self.steps
            .iter()
            .map(|s| s.rate.as_per_second())
            .fold(0.0, f64::max)
    }

    /// How many journeys the plan starts: the integral of its rate over time.
    pub fn expected_arrivals(&self) -> f64 {
        let mut before = 0.0;
        let mut total = 0.0;
        for s in &self.steps {
            let rate = s.rate.as_per_second();
            total += (before + rate) / 2.0 * whole_seconds(s.over).as_secs_f64();
            before = rate;
        }
        total
    }

    /// How long the whole plan takes, each step in whole seconds (see [`Self::spans`]).
    pub fn total_duration(&self) -> std::time::Duration {
        self.steps.iter().map(|s| whole_seconds(s.over)).sum()
    }

    /// Each step's place in the load. Like a test plan's, a step lasts whole seconds (a
    /// fraction is rounded up), so steps line up with the report's one-second timeline; the
    /// arrival schedule follows these spans. `users` is `pool`, the users that run the
    /// journeys; a plateau keeps the rate of the step before, above 0.
    pub fn spans(&self, pool: u32) -> Vec<StepSpan> {
        let mut start = std::time::Duration::ZERO;
        let mut before = ArrivalRate::ZERO;
        self.steps
            .iter()
            .enumerate()
            .map(|(index, s)| {
                let end = start + whole_seconds(s.over);
                let span = StepSpan {
                    index,
                    users: pool,
                    start,
                    end,
                    hold: !s.rate.is_zero()
                        && s.rate.as_per_second() == before.as_per_second()
                        && end > start,
                    rate: Some(s.rate),
                };
                start = end;
                before = s.rate;
                span
            })
            .collect()
    }
}

impl FromStr for RatePlan {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut steps = Vec::new();
        let parts: Vec<&str> = s.trim().trim_end_matches(';').split(';').collect();
        for (i, part) in parts.iter().enumerate() {
            let (rate, over) = part.split_once(',').ok_or_else(|| {
                format!(
                    "invalid rate plan step {:?} (step {} of {s:?}): expected RATE,DURATION such \
                     as \"50/s,30s\"",
                    part.trim(),
                    i + 1
                )
            })?;
            let rate: ArrivalRate = rate
                .trim()
                .parse()
                .map_err(|e| format!("{e} (in step {} of the rate plan)", i + 1))?;
            let over: HumanDuration = over
                .trim()
                .parse()
                .map_err(|e| format!("{e} (in step {} of the rate plan)", i + 1))?;
            steps.push(RateStep { rate, over });
        }
        Ok(Self { steps })
    }
}

impl fmt::Display for RatePlan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, step) in self.steps.iter().enumerate() {
            if i > 0 {
                f.write_str(";")?;
            }
            write!(f, "{},{}", step.rate, step.over)?;
        }
        Ok(())
    }
}

/// A resilience layer switched `"on"` or `"off"` (strings, as the system's variables take them;
/// `true` is refused rather than guessed).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Switch {
    On,
    Off,
}

impl Switch {
    /// As the system's variables take it: `on` or `off`.
    pub fn name(self) -> &'static str {
        match self {
            Self::On => "on",
            Self::Off => "off",
        }
    }
}

impl FromStr for Switch {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "on" => Ok(Self::On),
            "off" => Ok(Self::Off),
            _ => Err(format!("invalid switch {s:?}: expected \"on\" or \"off\"")),
        }
    }
}

impl fmt::Display for Switch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The gateway's rate limit per customer: `"off"`, or requests per second (`"20/s"`) or per
/// minute (`"600/m"`), written like an [`ArrivalRate`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum RateLimit {
    Off,
    Rate(ArrivalRate),
}

impl FromStr for RateLimit {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.trim() == "off" {
            return Ok(Self::Off);
        }
        s.parse().map(Self::Rate).map_err(|_| {
            format!(
                "invalid rate limit {s:?}: expected \"off\" or requests per second or minute per \
                 customer such as \"20/s\" or \"600/m\""
            )
        })
    }
}

impl fmt::Display for RateLimit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Off => f.write_str("off"),
            Self::Rate(rate) => rate.fmt(f),
        }
    }
}

/// The gateway's active health checks: `"off"`, or how often every instance's
/// `/health/ready` is probed (`"1s"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HealthChecks {
    Off,
    Every(HumanDuration),
}

impl FromStr for HealthChecks {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.trim() == "off" {
            return Ok(Self::Off);
        }
        s.parse().map(Self::Every).map_err(|_| {
            format!(
                "invalid health_checks {s:?}: expected \"off\" or the interval of the probes, \
                 a duration such as \"1s\" or \"500ms\""
            )
        })
    }
}

impl fmt::Display for HealthChecks {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Off => f.write_str("off"),
            Self::Every(d) => d.fmt(f),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::time::Duration;

    use super::*;

    fn d(s: &str) -> Duration {
        s.parse::<HumanDuration>().unwrap().as_std()
    }

    #[test]
    fn plan_spans_follow_each_other_and_only_plateaus_hold() {
        let plan: TestPlan = "5,10s;5,30s;10,1.5s;10,30s;0,10s".parse().unwrap();
        let spans = plan.spans();
        let secs = |s: &StepSpan| (s.start.as_secs(), s.end.as_secs());
        assert_eq!(
            spans.iter().map(secs).collect::<Vec<_>>(),
            [(0, 10), (10, 40), (40, 42), (42, 72), (72, 82)]
        );
        assert_eq!(
            spans.iter().map(|s| s.hold).collect::<Vec<_>>(),
            [false, true, false, true, false]
        );
        assert_eq!(spans[3].users, 10);
    }

    #[test]
    fn durations_parse_in_every_unit() {
        assert_eq!(d("500us"), Duration::from_micros(500));
        assert_eq!(d("250ms"), Duration::from_millis(250));
        assert_eq!(d("30s"), Duration::from_secs(30));
        assert_eq!(d("2m"), Duration::from_secs(120));
        assert_eq!(d("1.5s"), Duration::from_millis(1500));
        assert_eq!(d("0.1s"), Duration::from_millis(100));
        assert_eq!(d(".5ms"), Duration::from_micros(500));
        assert_eq!(d("0s"), Duration::ZERO);
    }

    #[test]
    fn bad_durations_say_what_was_expected() {
        for bad in ["5x", "5", "ms", "", "1.2.3s", "-1s", "5 m s", "1h"] {
            let e = bad.parse::<HumanDuration>().unwrap_err();
            assert!(
                e.contains("expected a number followed by us, ms, s or m"),
                "{bad}: {e}"
            );
        }
        let e = "0.5us".parse::<HumanDuration>().unwrap_err();
        assert!(e.contains("finest resolution is 1us"), "{e}");
    }

    #[test]
    fn durations_display_in_a_form_that_parses_back() {
        for s in ["1500ms", "2m", "30s", "7us", "0s", "90s"] {
            let parsed: HumanDuration = s.parse().unwrap();
            assert_eq!(parsed.to_string(), s);
        }
        assert_eq!(d("1.5m"), d("90s"));
    }

    #[test]
    fn think_time_is_a_range_or_a_fixed_pause() {
        let t: ThinkTime = "200ms..800ms".parse().unwrap();
        assert_eq!(t.min.as_std(), Duration::from_millis(200));
        assert_eq!(t.max.as_std(), Duration::from_millis(800));
        assert_eq!(t.to_string(), "200ms..800ms");
        let fixed: ThinkTime = "1s".parse().unwrap();
        assert_eq!(fixed.min, fixed.max);
        let e = "800ms..200ms".parse::<ThinkTime>().unwrap_err();
        assert!(e.contains("larger than the maximum"), "{e}");
        assert!("200ms..".parse::<ThinkTime>().is_err());
    }

    #[test]
    fn test_plans_parse_goose_style_steps() {
        let p: TestPlan = "10,5s;10,30s;0,500ms;".parse().unwrap();
        assert_eq!(p.steps.len(), 3);
        assert_eq!(p.peak_users(), 10);
        assert_eq!(p.total_duration(), Duration::from_millis(35_500));
        assert_eq!(p.to_string(), "10,5s;10,30s;0,500ms");
        assert_eq!(p.to_goose(), "10,5s;10,30s;0,1s");
        let e = "10;5s".parse::<TestPlan>().unwrap_err();
        assert!(e.contains("expected USERS,DURATION"), "{e}");
        let e = "10,5x".parse::<TestPlan>().unwrap_err();
        assert!(e.contains("invalid duration \"5x\""), "{e}");
    }

    #[test]
    fn arrival_rates_parse_per_second_and_per_minute_and_display_as_written() {
        let r: ArrivalRate = "200/s".parse().unwrap();
        assert_eq!(r.as_per_second(), 200.0);
        assert_eq!(r.to_string(), "200/s");
        let r: ArrivalRate = "12.5/s".parse().unwrap();
        assert_eq!(r.as_per_second(), 12.5);
        assert_eq!(r.to_string(), "12.5/s");
        let r: ArrivalRate = "600/m".parse().unwrap();
        assert_eq!(r.as_per_second(), 10.0);
        assert_eq!(r.to_string(), "600/m");
        assert!("0/s".parse::<ArrivalRate>().unwrap().is_zero());
        for bad in [
            "200", "200/h", "/s", "-5/s", "1e3/s", "inf/s", "NaN/s", "1.2.3/s", "x/s",
        ] {
            let e = bad.parse::<ArrivalRate>().unwrap_err();
            assert!(
                e.contains("expected a number of journeys per second"),
                "{bad}: {e}"
            );
        }
        let e = "200001/s".parse::<ArrivalRate>().unwrap_err();
        assert!(e.contains("at most 100000/s"), "{e}");
    }

    #[test]
    fn rate_plans_parse_and_their_plateaus_keep_the_rate_before() {
        let p: RatePlan = "50/s,10s;50/s,20s;100/s,2.5s;100/s,20s;0/s,5s;"
            .parse()
            .unwrap();
        assert_eq!(
            p.to_string(),
            "50/s,10s;50/s,20s;100/s,2500ms;100/s,20s;0/s,5s"
        );
        assert_eq!(p.peak_per_second(), 100.0);
        assert_eq!(p.total_duration(), Duration::from_secs(58));
        let spans = p.spans(40);
        let secs = |s: &StepSpan| (s.start.as_secs(), s.end.as_secs());
        assert_eq!(
            spans.iter().map(secs).collect::<Vec<_>>(),
            [(0, 10), (10, 30), (30, 33), (33, 53), (53, 58)]
        );
        assert_eq!(
            spans.iter().map(|s| s.hold).collect::<Vec<_>>(),
            [false, true, false, true, false]
        );
        assert!(spans.iter().all(|s| s.users == 40));
        assert_eq!(spans[3].rate.map(|r| r.as_per_second()), Some(100.0));
        let e = "50/s;10s".parse::<RatePlan>().unwrap_err();
        assert!(e.contains("expected RATE,DURATION"), "{e}");
        let e = "50,10s".parse::<RatePlan>().unwrap_err();
        assert!(
            e.contains("invalid arrival rate \"50\"") && e.contains("step 1"),
            "{e}"
        );
        let e = "50/s,10s;60/s,1x".parse::<RatePlan>().unwrap_err();
        assert!(
            e.contains("invalid duration \"1x\"") && e.contains("step 2"),
            "{e}"
        );
    }
}
