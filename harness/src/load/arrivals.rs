//! The open model's arrival schedule: when each journey is due, and which free goose user runs
//! it.
//!
//! A [`RatePlan`] is a piecewise linear arrival rate r(t) (each step changes the rate linearly
//! to its own over its duration, from 0/s before the first). Its integral N(t) is how many
//! journeys should have started by t, and arrival `n` (counted from 0) is due when N(t) reaches
//! `n`: at a constant rate the n-th arrival is due at n/rate, and on a ramp the arrivals by any
//! t are exactly the integral, as k6's arrival-rate executors schedule them. The schedule is
//! computed, not sampled: there is no timer per arrival, and nothing drifts.
//!
//! [`Arrivals`] hands the schedule out: a goose user that is free claims the next arrival,
//! sleeps until it is due and runs its next journey. An arrival claimed more than [`GRACE`]
//! after it was due (every user was busy) is dropped, not run late: an open-model client does
//! not wait for the system, so a late start would understate the load. What no user claimed by
//! the end of the schedule is dropped too ([`Arrivals::unclaimed`]). [`Mix`] picks the journey of
//! each arrival by the scenario's weights.
//!
//! An operator may pause the load (`p` in `harness run --tui`): an arrival due while it is
//! paused is not started and counted as paused, not dropped, however late a user comes to it
//! (the system is not why it did not start), so the arrivals still add up: due = started +
//! dropped + paused. Whether a moment was paused is the caller's to say (`paused_at`), as the
//! pause is the console's.

use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use crate::scenario::RatePlan;

/// How late a free user may still start an arrival: the scheduling noise of a busy machine
/// (timers, a user finishing its journey a moment after the arrival was due), not a queue.
pub const GRACE: Duration = Duration::from_millis(100);

/// How long a user with no arrival left sleeps before goose asks again: goose stops the users
/// when its plan, as long as the schedule, ends, and a user only sees that between two journeys.
const IDLE: Duration = Duration::from_millis(50);

/// Absorbs the rounding of float arithmetic when counting arrivals: a plan of exactly 12000
/// arrivals must not get a 12001st due at its very end.
const EPSILON: f64 = 1e-6;

/// The arrival times of a rate plan.
#[derive(Debug, Clone, PartialEq)]
pub struct Schedule {
    segments: Vec<Segment>,
    total: u64,
    end: Duration,
}

/// One step of the plan: the rate goes linearly from `from` to `to` (per second) over `len`
/// seconds from `start`; `before` arrivals were due before it.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Segment {
    start: f64,
    len: f64,
    from: f64,
    to: f64,
    before: f64,
}

impl Segment {
    fn arrivals(&self) -> f64 {
        (self.from + self.to) / 2.0 * self.len
    }

    /// Arrivals due in the first `tau` seconds of the segment.
    fn arrivals_by(&self, tau: f64) -> f64 {
        let tau = tau.clamp(0.0, self.len);
        let slope = if self.len > 0.0 {
            (self.to - self.from) / self.len
        } else {
            0.0
        };
        self.from * tau + slope / 2.0 * tau * tau
    }

    /// The time into the segment when `c` of its arrivals are due: the root of
    /// `from·τ + slope/2·τ² = c`, written so that it holds for a flat rate (slope 0) and a ramp
    /// from 0 (from 0) alike.
    fn time_of(&self, c: f64) -> f64 {
        if c <= 0.0 {
            return 0.0;
        }
        let slope = (self.to - self.from) / self.len;
        let root = (self.from * self.from + 2.0 * slope * c).max(0.0).sqrt();
        let denominator = self.from + root;
        if denominator <= 0.0 {
            return self.len;
        }
        (2.0 * c / denominator).clamp(0.0, self.len)
    }
}

impl Schedule {
    /// The schedule of `plan`, its steps placed as [`RatePlan::spans`] places them (whole
    /// seconds), so the arrivals of a step fall in the step's phase.
    pub fn new(plan: &RatePlan) -> Self {
        let mut segments = Vec::with_capacity(plan.steps.len());
        let mut from = 0.0;
        let mut before = 0.0;
        let mut end = Duration::ZERO;
        for span in plan.spans(0) {
            let to = span.rate.map_or(0.0, |r| r.as_per_second());
            let segment = Segment {
                start: span.start.as_secs_f64(),
                len: (span.end - span.start).as_secs_f64(),
                from,
                to,
                before,
            };
            before += segment.arrivals();
            from = to;
            end = span.end;
            segments.push(segment);
        }
        Self {
            segments,
            // Bounded by validation (`MAX_ARRIVALS`), so the cast is exact.
            total: (before - EPSILON).ceil().max(0.0) as u64,
            end,
        }
    }

    /// How many journeys the schedule starts.
    pub fn total(&self) -> u64 {
        self.total
    }

    /// When the schedule ends, from the start of the load.
    pub fn end(&self) -> Duration {
        self.end
    }

    /// N(t): the journeys that should have started by `t` (a fraction between two arrivals).
    pub fn expected_by(&self, t: Duration) -> f64 {
        let t = t.as_secs_f64();
        self.segments
            .iter()
            .rev()
            .find(|s| s.start <= t)
            .map_or(0.0, |s| s.before + s.arrivals_by(t - s.start))
    }

    /// When arrival `n` (from 0) is due, from the start of the load; `None` past the last.
    pub fn due(&self, n: u64) -> Option<Duration> {
        if n >= self.total {
            return None;
        }
        let target = n as f64;
        // The segment whose arrivals include the n-th; a segment with none (a rate of 0, or no
        // length) never does.
        let segment = self
            .segments
            .iter()
            .find(|s| s.arrivals() > 0.0 && target < s.before + s.arrivals() - EPSILON)
            .or_else(|| self.segments.iter().rev().find(|s| s.arrivals() > 0.0))?;
        let at = segment.start + segment.time_of(target - segment.before);
        Some(Duration::from_secs_f64(at.max(0.0)))
    }

    /// Every arrival's due time, in order.
    pub fn dues(&self) -> impl Iterator<Item = Duration> + '_ {
        (0..self.total).filter_map(|n| self.due(n))
    }
}

/// What a free user got when it asked for the next arrival.
#[derive(Debug, Clone, PartialEq)]
pub struct Claim {
    /// The arrival to run, due this long after the start of the load; `None` when the schedule
    /// has no arrival left.
    pub due: Option<Duration>,
    /// The arrivals skipped on the way because they were more than [`GRACE`] overdue (every
    /// user was busy when they were due): when each was due.
    pub dropped: Vec<Duration>,
    /// The arrivals skipped on the way because the load was paused when they were due.
    pub paused: Vec<Duration>,
}

/// What a user does next in an open model.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Turn {
    /// Run a journey now: the arrival due this long after the start of the load.
    Run { due: Duration },
    /// The arrival due this long after the start of the load came while the load was paused:
    /// no journey, the user asks again.
    Paused { due: Duration },
    /// The schedule has no arrival left; the user has idled and goose may stop it.
    Over,
}

/// Where the arrivals that did not start are counted.
pub trait Tally {
    /// Due while every user was busy.
    fn dropped(&self, dues: &[Duration]);
    /// Due while the load was paused.
    fn paused(&self, dues: &[Duration]);
}

/// The schedule shared by the users of an open-model load.
#[derive(Debug)]
pub struct Arrivals {
    schedule: Schedule,
    /// The next arrival nobody has claimed.
    next: Mutex<u64>,
}

impl Arrivals {
    pub fn new(schedule: Schedule) -> Self {
        Self {
            schedule,
            next: Mutex::new(0),
        }
    }

    pub fn schedule(&self) -> &Schedule {
        &self.schedule
    }

    /// Claims the next arrival for a user free at `now` (since the start of the load): the
    /// first one due no more than [`GRACE`] before `now`, dropping those before it, or counting
    /// them as paused when the load was paused when they were due or is paused now that one
    /// would start (`paused_at`, asked only of arrivals due by `now`: a pause may end before a
    /// later one is due).
    pub fn claim(&self, now: Duration, paused_at: impl Fn(Duration) -> bool) -> Claim {
        let mut next = self.next.lock().unwrap_or_else(PoisonError::into_inner);
        let mut claim = Claim {
            due: None,
            dropped: Vec::new(),
            paused: Vec::new(),
        };
        // Bounded by the schedule's length: every pass takes one arrival.
        while let Some(due) = self.schedule.due(*next) {
            *next += 1;
            if due <= now && paused_at(due) {
                claim.paused.push(due);
            } else if due + GRACE < now {
                claim.dropped.push(due);
            } else if due <= now && paused_at(now) {
                // On time, but the load is paused now: it would start in the pause.
                claim.paused.push(due);
            } else {
                claim.due = Some(due);
                return claim;
            }
        }
        claim
    }

    /// The arrivals nobody claimed, taken, as (dropped, paused): at the end of the load they
    /// are dropped (every user was busy until the end), unless the load was paused when they
    /// were due.
    pub fn unclaimed(
        &self,
        paused_at: impl Fn(Duration) -> bool,
    ) -> (Vec<Duration>, Vec<Duration>) {
        let mut next = self.next.lock().unwrap_or_else(PoisonError::into_inner);
        let rest = (*next..self.schedule.total()).filter_map(|n| self.schedule.due(n));
        let (paused, dropped) = rest.partition(|due| paused_at(*due));
        *next = self.schedule.total();
        (dropped, paused)
    }

    /// A free user's next turn, with `start` the start of the load: claims an arrival (handing
    /// the dropped and paused ones to `tally`) and sleeps until it is due; if the load is
    /// paused then or when the user wakes (`paused_at`), the arrival is counted as paused and
    /// not run. With no
    /// arrival left, sleeps until the schedule's end (or [`IDLE`], once past it) and says so:
    /// goose stops the users when its plan ends, and a user that came back at once would spin
    /// until then.
    pub async fn next_turn(
        &self,
        start: tokio::time::Instant,
        paused_at: impl Fn(Duration) -> bool,
        tally: &impl Tally,
    ) -> Turn {
        let claim = self.claim(start.elapsed(), &paused_at);
        if !claim.dropped.is_empty() {
            tally.dropped(&claim.dropped);
        }
        if !claim.paused.is_empty() {
            tally.paused(&claim.paused);
        }
        match claim.due {
            Some(due) => {
                tokio::time::sleep_until(start + due).await;
                if paused_at(due) || paused_at(start.elapsed()) {
                    tally.paused(&[due]);
                    return Turn::Paused { due };
                }
                Turn::Run { due }
            }
            None => {
                let until = (start + self.schedule.end()).max(tokio::time::Instant::now() + IDLE);
                tokio::time::sleep_until(until).await;
                Turn::Over
            }
        }
    }
}

/// The journeys of the arrivals in the proportions of their weights, interleaved: smooth
/// weighted round-robin (as nginx balances upstreams), so every run of `sum of weights` picks
/// holds each journey exactly its weight's times, whatever the pool, and a run is repeatable.
#[derive(Debug)]
pub struct Mix<T> {
    choices: Vec<(T, i64)>,
    /// Each choice's current credit: raised by its weight at every pick, lowered by the total
    /// when it is picked.
    credit: Mutex<Vec<i64>>,
}

impl<T: Copy> Mix<T> {
    /// `weights` as the scenario lists them; choices of weight 0 are never picked. Meant for a
    /// validated scenario, which has a positive weight.
    pub fn new(weights: &[(T, u32)]) -> Self {
        let choices: Vec<(T, i64)> = weights
            .iter()
            .filter(|(_, w)| *w > 0)
            .map(|(t, w)| (*t, i64::from(*w)))
            .collect();
        let credit = Mutex::new(vec![0; choices.len()]);
        Self { choices, credit }
    }

    /// The next journey; `None` only without any positive weight, which validation refuses.
    pub fn next(&self) -> Option<T> {
        let mut credit = self.credit.lock().unwrap_or_else(PoisonError::into_inner);
        let total: i64 = self.choices.iter().map(|(_, w)| w).sum();
        let mut best = 0;
        for (i, (_, weight)) in self.choices.iter().enumerate() {
            credit[i] += weight;
            if credit[i] > credit[best] {
                best = i;
            }
        }
        let (choice, _) = self.choices.get(best)?;
        credit[best] -= total;
        Some(*choice)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn schedule(plan: &str) -> Schedule {
        Schedule::new(&plan.parse::<RatePlan>().unwrap())
    }

    fn ms(d: Duration) -> f64 {
        d.as_secs_f64() * 1_000.0
    }

    #[test]
    fn at_a_constant_rate_the_nth_arrival_is_due_at_n_over_the_rate() {
        let s = schedule("200/s,0s;200/s,60s");
        assert_eq!(s.total(), 12_000);
        assert_eq!(s.end(), Duration::from_secs(60));
        for n in [0, 1, 2, 199, 200, 5_001, 11_999] {
            let due = ms(s.due(n).unwrap());
            assert!(
                (due - n as f64 * 5.0).abs() < 1e-6,
                "arrival {n} at {due}ms"
            );
        }
        assert_eq!(s.due(12_000), None, "none at or past the end");
        let per_minute = schedule("600/m,0s;600/m,3s");
        assert_eq!(per_minute.total(), 30);
        assert!((ms(per_minute.due(7).unwrap()) - 700.0).abs() < 1e-6);
    }

    #[test]
    fn on_a_linear_ramp_the_arrivals_by_any_time_match_the_integral() {
        // 0 → 100/s over 10 s: N(t) = 5·t², 500 arrivals in all.
        let s = schedule("100/s,10s");
        assert_eq!(s.total(), 500);
        for t in [0.5, 1.0, 2.5, 7.3, 9.99] {
            let expected = 5.0 * t * t;
            let due_by = s.dues().filter(|d| d.as_secs_f64() < t).count() as f64;
            assert!(
                (due_by - expected.ceil()).abs() <= 1.0,
                "by {t}s: {due_by} arrivals, the integral says {expected}"
            );
            assert!((s.expected_by(Duration::from_secs_f64(t)) - expected).abs() < 1e-9);
        }
        // The gaps shrink as the rate grows.
        let gap = |n| ms(s.due(n + 1).unwrap()) - ms(s.due(n).unwrap());
        assert!(gap(10) > gap(100) && gap(100) > gap(400));
        // A ramp down mirrors it: 100/s → 0 over 10 s after a plateau.
        let down = schedule("100/s,0s;100/s,1s;0/s,10s");
        assert_eq!(down.total(), 600);
        assert!(down.due(599).unwrap() < Duration::from_secs(11));
    }

    #[test]
    fn plan_steps_chain_each_ramp_starting_at_the_rate_the_step_before_ended_at() {
        // 0 → 10/s in 2 s (10 arrivals), 10/s for 3 s (30), 10 → 30/s in 2 s (40), 30/s for 1 s
        // (30): 110 in all.
        let s = schedule("10/s,2s;10/s,3s;30/s,2s;30/s,1s");
        assert_eq!(s.total(), 110);
        assert_eq!(s.end(), Duration::from_secs(8));
        let by = |secs: f64| s.dues().filter(|d| d.as_secs_f64() < secs).count();
        assert_eq!(by(2.0), 10);
        assert_eq!(by(5.0), 40);
        assert_eq!(by(7.0), 80);
        assert_eq!(by(8.0), 110);
        // On the plateau, every 100 ms exactly.
        assert!((ms(s.due(10).unwrap()) - 2_000.0).abs() < 1e-6);
        assert!((ms(s.due(11).unwrap()) - 2_100.0).abs() < 1e-6);
        let dues: Vec<Duration> = s.dues().collect();
        assert!(dues.is_sorted(), "arrivals are in order");
        // A step at 0/s starts nothing, and the arrivals resume after it.
        let gap = schedule("10/s,0s;10/s,1s;0/s,0s;0/s,2s;10/s,0s;10/s,1s");
        assert_eq!(gap.total(), 20);
        assert!((ms(gap.due(10).unwrap()) - 3_000.0).abs() < 1e-6);
    }

    #[test]
    fn a_late_claim_drops_what_is_overdue_and_runs_the_first_arrival_within_the_grace() {
        let arrivals = Arrivals::new(schedule("10/s,0s;10/s,1s"));
        let at = |ms: u64| Duration::from_millis(ms);
        let first = arrivals.claim(at(0), never);
        assert_eq!(first.due, Some(at(0)));
        assert!(first.dropped.is_empty());
        // Free again at 350 ms: the arrivals due at 100 and 200 ms are over 100 ms late.
        let late = arrivals.claim(at(350), never);
        assert_eq!(late.dropped, [at(100), at(200)]);
        assert_eq!(late.due, Some(at(300)), "50 ms late is within the grace");
        // Early: the next arrival is taken and waited for.
        assert_eq!(arrivals.claim(at(310), never).due, Some(at(400)));
        assert_eq!(arrivals.claim(at(310), never).due, Some(at(500)));
        // The rest nobody claimed are dropped at the end.
        assert_eq!(
            arrivals.unclaimed(never),
            (vec![at(600), at(700), at(800), at(900)], vec![])
        );
        let done = arrivals.claim(at(2_000), never);
        assert_eq!(
            done,
            Claim {
                due: None,
                dropped: vec![],
                paused: vec![]
            }
        );
    }

    /// `users` users, each running journeys of `journey` until the schedule is over, as
    /// [`Arrivals::next_turn`] runs them but on a simulated clock: the user free first claims,
    /// waits until its arrival is due, and is free again `journey` later. Returns the journeys
    /// started, as (due, started at), and the arrivals dropped.
    fn pool(plan: &str, users: usize, journey: Duration) -> (Vec<(Duration, Duration)>, u64) {
        let (started, dropped, paused) = paused_pool(plan, users, journey, never);
        assert_eq!(paused, 0);
        (started, dropped)
    }

    fn never(_: Duration) -> bool {
        false
    }

    /// [`pool`] with the load paused when `paused_at` says: an arrival claimed that is due in
    /// a pause is counted when the user wakes for it, and runs nothing. Also returns how many
    /// were paused.
    fn paused_pool(
        plan: &str,
        users: usize,
        journey: Duration,
        paused_at: impl Fn(Duration) -> bool,
    ) -> (Vec<(Duration, Duration)>, u64, u64) {
        let arrivals = Arrivals::new(schedule(plan));
        let mut free_at = vec![Duration::ZERO; users];
        let mut started = Vec::new();
        let mut dropped = 0;
        let mut paused = 0;
        // Bounded: every pass claims an arrival or retires a user.
        for _ in 0..=arrivals.schedule().total() as usize + users {
            let Some((user, now)) = free_at
                .iter()
                .copied()
                .enumerate()
                .filter(|(_, t)| *t != Duration::MAX)
                .min_by_key(|(_, t)| *t)
            else {
                break;
            };
            let claim = arrivals.claim(now, &paused_at);
            dropped += claim.dropped.len() as u64;
            paused += claim.paused.len() as u64;
            match claim.due {
                Some(due) if paused_at(due) || paused_at(now.max(due)) => {
                    paused += 1;
                    free_at[user] = now.max(due);
                }
                Some(due) => {
                    let at = now.max(due);
                    started.push((due, at));
                    free_at[user] = at + journey;
                }
                None => free_at[user] = Duration::MAX,
            }
        }
        let (left, left_paused) = arrivals.unclaimed(&paused_at);
        dropped += left.len() as u64;
        paused += left_paused.len() as u64;
        (started, dropped, paused)
    }

    #[test]
    fn arrivals_due_while_the_load_is_paused_are_counted_as_paused_and_none_starts() {
        // 50/s for 4 s with too few users (about 10/s started), paused from 1 s to 2.5 s.
        let plan = "50/s,0s;50/s,4s";
        let in_pause = |d: Duration| (1_000..2_500).contains(&d.as_millis());
        let (started, dropped, paused) = paused_pool(plan, 5, Duration::from_millis(500), in_pause);
        // Every arrival due in the 1.5 s pause, busy users or not, and the few due just before
        // it that a user free only in the pause would have started late (at most one a user).
        assert!((75..=80).contains(&paused), "{paused} paused");
        assert_eq!(
            started.len() as u64 + dropped + paused,
            200,
            "offered = started + dropped + paused"
        );
        assert!(
            started
                .iter()
                .all(|(due, at)| !in_pause(*due) && !in_pause(*at)),
            "no journey starts while paused: {started:?}"
        );
        assert!(dropped > 0, "the users were too few outside the pause");

        // Enough users: nothing is dropped, before, during or after the pause.
        let (started, dropped, paused) =
            paused_pool(plan, 40, Duration::from_millis(300), in_pause);
        assert_eq!((started.len(), dropped, paused), (125, 0, 75));
        assert!(started.iter().all(|(due, at)| due == at));
    }

    #[test]
    fn a_pause_never_resumed_skips_every_arrival_to_the_end_of_the_load_as_paused() {
        let arrivals = Arrivals::new(schedule("10/s,0s;10/s,1s"));
        let at = Duration::from_millis;
        let from_500ms = |d: Duration| d >= at(500);
        assert_eq!(arrivals.claim(at(0), from_500ms).due, Some(at(0)));
        // A user free at 700 ms: what was due in the pause is paused, not dropped, and the next
        // arrival (due later, the pause may end by then) is handed out to be checked on waking.
        let claim = arrivals.claim(at(700), from_500ms);
        assert_eq!(claim.dropped, [at(100), at(200), at(300), at(400)]);
        assert_eq!(claim.paused, [at(500), at(600), at(700)]);
        assert_eq!(claim.due, Some(at(800)));
        // Nobody came back before the end: the rest were due in the pause.
        assert_eq!(arrivals.unclaimed(from_500ms), (vec![], vec![at(900)]));
    }

    #[tokio::test]
    async fn a_user_waking_for_an_arrival_in_a_pause_counts_it_and_runs_nothing() {
        let arrivals = Arrivals::new(schedule("20/s,0s;20/s,1s"));
        let start = tokio::time::Instant::now();
        let counted = Counted::default();
        let paused = |d: Duration| d >= Duration::from_millis(50);
        let first = arrivals.next_turn(start, paused, &counted).await;
        assert_eq!(
            first,
            Turn::Run {
                due: Duration::ZERO
            }
        );
        let second = arrivals.next_turn(start, paused, &counted).await;
        assert_eq!(
            second,
            Turn::Paused {
                due: Duration::from_millis(50)
            }
        );
        let (dropped, paused) = counted.0.lock().unwrap().clone();
        assert!(dropped.is_empty());
        assert_eq!(paused, [Duration::from_millis(50)]);
    }

    #[test]
    fn enough_users_start_every_journey_on_time_whatever_the_journeys_take() {
        // 50/s for 4 s with journeys of 300 ms: 15 users are busy at once, 20 suffice.
        let (started, dropped) = pool("50/s,0s;50/s,4s", 20, Duration::from_millis(300));
        assert_eq!(dropped, 0);
        assert_eq!(started.len(), 200);
        assert!(started.iter().all(|(due, at)| due == at), "{started:?}");
    }

    #[test]
    fn when_every_user_is_busy_arrivals_are_dropped_not_run_late() {
        // 50/s for 4 s, but 5 users with 500 ms journeys carry only 10/s.
        let (started, dropped) = pool("50/s,0s;50/s,4s", 5, Duration::from_millis(500));
        assert_eq!(
            started.len() as u64 + dropped,
            200,
            "every arrival is counted"
        );
        assert!(
            (35..=45).contains(&started.len()),
            "about 10/s for 4 s started: {}",
            started.len()
        );
        for (due, at) in &started {
            assert!(*at - *due <= GRACE, "{due:?} started late, at {at:?}");
        }
    }

    /// The arrivals a user did not start: (dropped, paused).
    #[derive(Default)]
    struct Counted(std::sync::Mutex<(Vec<Duration>, Vec<Duration>)>);

    impl Tally for Counted {
        fn dropped(&self, dues: &[Duration]) {
            self.0.lock().unwrap().0.extend_from_slice(dues);
        }
        fn paused(&self, dues: &[Duration]) {
            self.0.lock().unwrap().1.extend_from_slice(dues);
        }
    }

    impl Counted {
        fn dropped_count(&self) -> usize {
            self.0.lock().unwrap().0.len()
        }
    }

    #[tokio::test]
    async fn a_user_sleeps_until_its_arrival_and_is_told_when_the_schedule_is_over() {
        // 20/s for 1 s from now: arrival 1 is due 50 ms after the start.
        let arrivals = Arrivals::new(schedule("20/s,0s;20/s,1s"));
        let start = tokio::time::Instant::now();
        let dropped = Counted::default();
        assert_eq!(
            arrivals.next_turn(start, never, &dropped).await,
            Turn::Run {
                due: Duration::ZERO
            }
        );
        let turn = arrivals.next_turn(start, never, &dropped).await;
        assert_eq!(
            turn,
            Turn::Run {
                due: Duration::from_millis(50)
            }
        );
        assert!(
            start.elapsed() >= Duration::from_millis(50),
            "it waited for its arrival"
        );
        assert_eq!(dropped.dropped_count(), 0);

        // A user free only after the schedule ended: everything left was dropped, and it is
        // told the schedule is over (after a short idle, not at once).
        let long_ago = start
            .checked_sub(Duration::from_secs(5))
            .expect("the clock is past 5 s");
        let idle_from = tokio::time::Instant::now();
        let late = Arrivals::new(schedule("20/s,0s;20/s,1s"));
        assert_eq!(late.next_turn(long_ago, never, &dropped).await, Turn::Over);
        assert_eq!(dropped.dropped_count(), 20);
        assert!(idle_from.elapsed() >= IDLE);
    }

    #[test]
    fn the_mix_holds_each_journey_its_weight_in_every_round_and_interleaves_them() {
        let mix = Mix::new(&[
            ("place", 6),
            ("follow", 2),
            ("view", 1),
            ("browse", 1),
            ("none", 0),
        ]);
        let picks: Vec<&str> = (0..40).filter_map(|_| mix.next()).collect();
        assert_eq!(picks.len(), 40);
        for round in picks.chunks(10) {
            let count = |j: &str| round.iter().filter(|p| **p == j).count();
            assert_eq!(
                (
                    count("place"),
                    count("follow"),
                    count("view"),
                    count("browse")
                ),
                (6, 2, 1, 1),
                "{round:?}"
            );
            assert_eq!(count("none"), 0);
        }
        // Interleaved, not in blocks: the 6 orders of a round never come 4 in a row.
        assert!(
            !picks.windows(4).any(|w| w.iter().all(|p| *p == "place")),
            "{picks:?}"
        );
        assert_eq!(Mix::<&str>::new(&[("none", 0)]).next(), None);
    }
}
