//! [`Scenario::validate`]: what the types cannot check. Every complaint carries the span of
//! the value it is about, so it is reported with a line and column.

use std::collections::BTreeSet;

use super::{
    Backend, Bound, ChaosEntry, Fault, HumanDuration, InvariantSelection, Journey, Phase,
    Resilience, Scenario, ScenarioError, Slo, Spanned, objectives_of,
};
use crate::environment::{Instances, Service};
use crate::faults::target::{Target, links_of, processes_of};

/// A fault attribute: its name, where it was given (if it was), the faults that take it and
/// the faults that need it.
type AttributeRule<'a> = (
    &'a str,
    Option<std::ops::Range<usize>>,
    &'a [Fault],
    &'a [Fault],
);

/// The faults that act on links (the rest act on instances).
const LINK_FAULTS: [Fault; 8] = [
    Fault::Latency,
    Fault::Bandwidth,
    Fault::SlowClose,
    Fault::Timeout,
    Fault::ResetPeer,
    Fault::Slicer,
    Fault::LimitData,
    Fault::Partition,
];

impl Scenario {
    /// Checks what the types cannot: sensible numbers, known endpoint formats, a load that
    /// does something. The first problem found is returned.
    pub fn validate(&self) -> Result<(), ScenarioError> {
        if let Some(name) = &self.declared_name {
            let ok = is_plain_name(name.get_ref());
            if !ok {
                return Err(self.error(
                    name.span(),
                    format!(
                        "invalid name {:?}: use letters, digits, '-' and '_' only",
                        name.get_ref()
                    ),
                ));
            }
        }
        let description = self.description.get_ref();
        if description.trim().is_empty() || description.contains('\n') {
            return Err(self.error(
                self.description.span(),
                "the description must be one non-empty line",
            ));
        }
        self.validate_environment()?;
        self.validate_variants()?;
        self.validate_load()?;
        if let Some(steady) = &self.steady_state {
            self.fraction(&steady.max_error_rate, "max_error_rate")?;
            if *steady.probe_requests.get_ref() == 0 {
                return Err(self.error(
                    steady.probe_requests.span(),
                    "probe_requests must be at least 1",
                ));
            }
        }
        for slo in &self.slos {
            self.validate_slo(slo)?;
        }
        self.validate_knee()?;
        for entry in &self.chaos {
            self.validate_chaos(entry)?;
        }
        self.validate_scale_overlaps()?;
        self.positive(&self.checks.convergence_timeout, "convergence_timeout")?;
        if let InvariantSelection::Only(list) = &self.checks.invariants {
            let mut seen = BTreeSet::new();
            for i in list {
                if !seen.insert(*i.get_ref()) {
                    return Err(self.error(
                        i.span(),
                        format!("invariant {} is listed twice", i.get_ref()),
                    ));
                }
            }
        }
        Ok(())
    }

    fn validate_environment(&self) -> Result<(), ScenarioError> {
        let env = &self.environment;
        for (name, count) in [
            ("order", &env.instances.order),
            ("inventory", &env.instances.inventory),
            ("payment", &env.instances.payment),
        ] {
            let n = *count.get_ref();
            if n == 0 || usize::try_from(n).map_or(true, |n| n > Instances::MAX) {
                return Err(self.error(
                    count.span(),
                    format!(
                        "{name} instances must be between 1 and {}, not {n}",
                        Instances::MAX
                    ),
                ));
            }
        }
        let sampling = *env.trace_sampling.get_ref();
        if !(sampling > 0.0 && sampling <= 1.0) {
            return Err(self.error(
                env.trace_sampling.span(),
                format!("trace_sampling must be more than 0 and at most 1, not {sampling}"),
            ));
        }
        if let Some(cpus) = &env.cpus_per_instance {
            let c = *cpus.get_ref();
            if let Err(e) = super::check_cpus_per_instance(c) {
                return Err(self.error(cpus.span(), format!("cpus_per_instance {e}")));
            }
        }
        self.validate_resilience(&env.resilience)?;
        self.positive(&env.saga_step_timeout, "saga_step_timeout")
    }

    fn validate_resilience(&self, resilience: &Resilience) -> Result<(), ScenarioError> {
        resilience
            .check()
            .map_err(|(span, message)| self.error(span, message))
    }

    /// None, or at least two variants, each with a name of its own that can name a folder, and
    /// resilience keys that hold on their own and over `[environment.resilience]`.
    fn validate_variants(&self) -> Result<(), ScenarioError> {
        if let [only] = self.variants.as_slice() {
            return Err(self.error(
                only.span(),
                "one [[variant]] has nothing to be compared with: declare at least two (e.g. \
                 one with breaker = \"on\" and one with breaker = \"off\"), or put its keys in \
                 [environment.resilience]",
            ));
        }
        let mut seen = BTreeSet::new();
        for variant in &self.variants {
            let v = variant.get_ref();
            let name = &v.name;
            let ok = is_plain_name(name.get_ref());
            if !ok {
                return Err(self.error(
                    name.span(),
                    format!(
                        "invalid variant name {:?}: it names the folder of the variant's report, \
                         so use letters, digits, '-' and '_' only",
                        name.get_ref()
                    ),
                ));
            }
            if !seen.insert(name.get_ref().as_str()) {
                return Err(self.error(
                    name.span(),
                    format!(
                        "variant name {:?} is used twice; each variant needs a name of its own \
                         (it names the folder of its report)",
                        name.get_ref()
                    ),
                ));
            }
            self.validate_resilience(&v.resilience)?;
            self.validate_resilience(&v.resilience.over(&self.environment.resilience))?;
        }
        Ok(())
    }

    fn validate_load(&self) -> Result<(), ScenarioError> {
        let load = self.load.get_ref();
        if load.is_open() {
            self.validate_open_load()?;
        } else if let Some(plan) = &load.test_plan {
            if let Some(span) = [
                load.users.as_ref().map(Spanned::span),
                load.ramp_up.as_ref().map(Spanned::span),
                load.duration.as_ref().map(Spanned::span),
            ]
            .into_iter()
            .flatten()
            .next()
            {
                return Err(self.error(
                    span,
                    "use either test_plan or users/ramp_up/duration, not both: the test plan \
                     sets the users and how long they run",
                ));
            }
            let p = plan.get_ref();
            if p.peak_users() == 0 || p.total_duration().is_zero() {
                return Err(self.error(
                    plan.span(),
                    "the test plan must run at least 1 user for longer than 0s",
                ));
            }
        } else {
            let Some(users) = &load.users else {
                return Err(self.error(
                    self.load.span(),
                    "[load] needs users and duration (with an optional ramp_up), or a test_plan \
                     (closed model); or an arrival_rate and duration, or a rate_plan (open model)",
                ));
            };
            if *users.get_ref() == 0 {
                return Err(self.error(users.span(), "users must be at least 1"));
            }
            let Some(duration) = &load.duration else {
                return Err(self.error(
                    users.span(),
                    "users needs a duration, e.g. duration = \"30s\"",
                ));
            };
            self.positive(duration, "duration")?;
        }
        if load.journeys.is_empty() {
            return Err(self.error(
                self.load.span(),
                format!(
                    "[load] has no journeys; add [[load.journeys]] entries with a name ({}) \
                     and a weight",
                    journey_names()
                ),
            ));
        }
        let mut seen = BTreeSet::new();
        for j in &load.journeys {
            let name = &j.get_ref().name;
            if !seen.insert(*name.get_ref()) {
                return Err(self.error(
                    name.span(),
                    format!(
                        "journey {} is listed twice; give it one entry with the sum of the weights",
                        name.get_ref()
                    ),
                ));
            }
        }
        if load
            .journeys
            .iter()
            .all(|j| *j.get_ref().weight.get_ref() == 0)
        {
            let first = &load.journeys[0].get_ref().weight;
            return Err(self.error(
                first.span(),
                "every journey has weight 0; at least one needs a positive weight",
            ));
        }
        Ok(())
    }

    /// An open model: its fields ([`Self::validate_open_fields`]), and a schedule small enough
    /// to count arrival by arrival.
    fn validate_open_load(&self) -> Result<(), ScenarioError> {
        self.validate_open_fields()?;
        let load = self.load.get_ref();
        let arrivals = load.arrivals().map_or(0.0, |p| p.expected_arrivals());
        if arrivals > super::units::MAX_ARRIVALS {
            let span = load
                .rate_plan
                .as_ref()
                .map(Spanned::span)
                .or_else(|| load.arrival_rate.as_ref().map(Spanned::span))
                .unwrap_or_else(|| self.load.span());
            return Err(self.error(
                span,
                format!(
                    "this load starts {arrivals:.0} journeys, more than the {} one run may \
                     start; lower the rate or shorten the load",
                    super::units::MAX_ARRIVALS
                ),
            ));
        }
        Ok(())
    }

    /// `arrival_rate` with `duration` (and `ramp_up`), or a `rate_plan`; `users` is the pool; no
    /// `test_plan`, and no `think_time` (journeys start on the schedule).
    fn validate_open_fields(&self) -> Result<(), ScenarioError> {
        let load = self.load.get_ref();
        if let Some(plan) = &load.test_plan {
            return Err(self.error(
                plan.span(),
                "test_plan is a closed model (users) and arrival_rate/rate_plan an open one \
                 (journeys per second); use one of them",
            ));
        }
        if let Some(think) = &load.think_time {
            return Err(self.error(
                think.span(),
                "think_time does not apply to an open model: journeys start at the arrival \
                 rate whatever users do, so a pause would only idle the pool; remove it",
            ));
        }
        if let Some(users) = &load.users
            && *users.get_ref() == 0
        {
            return Err(self.error(
                users.span(),
                "users (the pool that runs the journeys) must be at least 1",
            ));
        }
        if let Some(multiple) = &load.knee_multiple {
            if load.arrival_rate.is_none() {
                return Err(self.error(
                    multiple.span(),
                    "knee_multiple sets an arrival_rate from this machine's knee; add \
                     arrival_rate (the rate when no capacity report is at hand) and duration",
                ));
            }
            let v = *multiple.get_ref();
            if !(v.is_finite() && v > 0.0 && v <= 100.0) {
                return Err(self.error(
                    multiple.span(),
                    format!(
                        "knee_multiple is how many times the knee's arrival rate to run at, above \
                         0 and at most 100 (3 is three times), not {v}"
                    ),
                ));
            }
        }
        match (&load.arrival_rate, &load.rate_plan) {
            (Some(rate), Some(_)) => Err(self.error(
                rate.span(),
                "use either arrival_rate or rate_plan, not both: the rate plan sets the rates \
                 and how long they last",
            )),
            (Some(rate), None) => {
                if rate.get_ref().is_zero() {
                    return Err(self.error(rate.span(), "arrival_rate must be above 0/s"));
                }
                let Some(duration) = &load.duration else {
                    return Err(self.error(
                        rate.span(),
                        "arrival_rate needs a duration, e.g. duration = \"30s\"",
                    ));
                };
                self.positive(duration, "duration")
            }
            (None, Some(plan)) => {
                if let Some(span) = [
                    load.ramp_up.as_ref().map(Spanned::span),
                    load.duration.as_ref().map(Spanned::span),
                ]
                .into_iter()
                .flatten()
                .next()
                {
                    return Err(self.error(
                        span,
                        "use either rate_plan or arrival_rate/ramp_up/duration, not both: the \
                         rate plan sets the rates and how long they last",
                    ));
                }
                let p = plan.get_ref();
                if p.peak_per_second() <= 0.0 || p.total_duration().is_zero() {
                    return Err(self.error(
                        plan.span(),
                        "the rate plan must start journeys (a rate above 0/s) for longer than 0s",
                    ));
                }
                Ok(())
            }
            (None, None) => Ok(()),
        }
    }

    fn validate_chaos(&self, entry: &Spanned<ChaosEntry>) -> Result<(), ScenarioError> {
        let e = entry.get_ref();
        let fault = *e.fault.get_ref();
        let target: Target = e
            .target
            .get_ref()
            .parse()
            .map_err(|m| self.error(e.target.span(), m))?;
        let instances = self.environment.instances.to_instances();
        let backend = *self.environment.backend.get_ref();
        if fault == Fault::Disconnect && backend != Backend::Containers {
            return Err(self.error(
                e.fault.span(),
                "disconnect cuts a container off the run's network, so it needs backend = \
                 \"containers\"; on the local backend partition the instance's links instead"
                    .to_string(),
            ));
        }
        if fault == Fault::Scale {
            self.validate_scale_target(e, &target, backend)?;
        } else if fault.on_messages() {
            self.validate_message_target(e, &target, backend, &instances)?;
        } else if fault.on_instances() {
            let names = processes_of(backend, &instances);
            if target
                .processes(names.iter().map(String::as_str))
                .is_empty()
            {
                return Err(self.error(
                    e.target.span(),
                    format!(
                        "{} acts on instances, and {:?} names none; use an instance such as \
                         order#1, a service such as payment (all its instances), or broker",
                        fault.name(),
                        e.target.get_ref()
                    ),
                ));
            }
        } else {
            let links = links_of(backend, &instances);
            if target.links(links.iter().map(String::as_str)).is_empty() {
                return Err(self.error(
                    e.target.span(),
                    format!(
                        "no link matches {:?}; the links are {}",
                        e.target.get_ref(),
                        links.join(", ")
                    ),
                ));
            }
        }
        if let Some(name) = &e.name
            && (name.get_ref().trim().is_empty() || name.get_ref().contains('\n'))
        {
            return Err(self.error(name.span(), "a chaos name must be one non-empty line"));
        }
        let total = self.load.get_ref().plan().total_duration();
        if e.at.get_ref().as_std() >= total {
            return Err(self.error(
                e.at.span(),
                format!(
                    "the fault starts at {} but the load lasts {}",
                    e.at.get_ref(),
                    HumanDuration::from_std(total)
                ),
            ));
        }
        if let Some(d) = &e.duration {
            self.positive(d, "for")?;
        }
        if let Some(t) = &e.toxicity {
            self.fraction(t, "toxicity")?;
        }
        // Which attributes each fault takes: (name, given, required).
        let attrs: [AttributeRule<'_>; 14] = [
            (
                "latency",
                e.latency.as_ref().map(Spanned::span),
                &[Fault::Latency],
                &[Fault::Latency],
            ),
            (
                "jitter",
                e.jitter.as_ref().map(Spanned::span),
                &[Fault::Latency],
                &[],
            ),
            (
                "rate_kbps",
                e.rate_kbps.as_ref().map(Spanned::span),
                &[Fault::Bandwidth],
                &[Fault::Bandwidth],
            ),
            (
                "delay",
                e.delay.as_ref().map(Spanned::span),
                &[Fault::SlowClose, Fault::Slicer, Fault::Delay],
                &[Fault::SlowClose, Fault::Delay],
            ),
            (
                "timeout",
                e.timeout.as_ref().map(Spanned::span),
                &[Fault::Timeout, Fault::ResetPeer],
                &[Fault::Timeout],
            ),
            (
                "average_size",
                e.average_size.as_ref().map(Spanned::span),
                &[Fault::Slicer],
                &[Fault::Slicer],
            ),
            (
                "size_variation",
                e.size_variation.as_ref().map(Spanned::span),
                &[Fault::Slicer],
                &[],
            ),
            (
                "bytes",
                e.bytes.as_ref().map(Spanned::span),
                &[Fault::LimitData],
                &[Fault::LimitData],
            ),
            (
                "direction",
                e.direction.as_ref().map(Spanned::span),
                &LINK_FAULTS,
                &[],
            ),
            (
                "instances",
                e.instances.as_ref().map(Spanned::span),
                &[Fault::Scale],
                &[Fault::Scale],
            ),
            (
                "topic",
                e.topic.as_ref().map(Spanned::span),
                &[Fault::Duplicate, Fault::Delay, Fault::Poison],
                &[Fault::Delay, Fault::Poison],
            ),
            (
                "partition",
                e.partition.as_ref().map(Spanned::span),
                &[Fault::Delay, Fault::Poison],
                &[Fault::Delay],
            ),
            (
                "probability",
                e.probability.as_ref().map(Spanned::span),
                &[Fault::Duplicate, Fault::LostAck],
                &[],
            ),
            (
                "messages",
                e.messages.as_ref().map(Spanned::span),
                &[Fault::Poison],
                &[],
            ),
        ];
        for (attr, given, takes, needs) in attrs {
            match given {
                Some(span) if !takes.contains(&fault) => {
                    return Err(self.error(
                        span,
                        format!("{attr} does not apply to fault {}", fault.name()),
                    ));
                }
                None if needs.contains(&fault) => {
                    return Err(self.error(
                        e.fault.span(),
                        format!("fault {} needs {attr}", fault.name()),
                    ));
                }
                _ => {}
            }
        }
        if !LINK_FAULTS.contains(&fault)
            && let Some(t) = &e.toxicity
        {
            return Err(self.error(
                t.span(),
                format!("toxicity does not apply to fault {}", fault.name()),
            ));
        }
        if fault == Fault::Slicer && e.average_size.as_ref().is_some_and(|a| *a.get_ref() == 0) {
            return Err(self.error(
                e.fault.span(),
                "slicer needs an average_size of at least 1 byte",
            ));
        }
        if let Some(n) = &e.instances {
            self.validate_scale_count(e, n)?;
        }
        self.validate_message_attributes(e)?;
        Ok(())
    }

    /// Message faults act through the embedded broker's fronts (so on the local backend), on
    /// the links of service instances to the broker; `poison` publishes onto the broker itself.
    fn validate_message_target(
        &self,
        e: &ChaosEntry,
        target: &Target,
        backend: Backend,
        instances: &Instances,
    ) -> Result<(), ScenarioError> {
        let fault = *e.fault.get_ref();
        if backend != Backend::Local {
            return Err(self.error(
                e.fault.span(),
                format!(
                    "{} needs backend = \"local\": message faults act through the embedded \
                     broker's fronts, which the {} backend does not have yet",
                    fault.name(),
                    backend.name()
                ),
            ));
        }
        let named = e.target.get_ref();
        if fault == Fault::Poison {
            return match target {
                Target::Node(node) if node.name == "kafka" => Ok(()),
                _ => Err(self.error(
                    e.target.span(),
                    format!(
                        "poison publishes onto a topic of the broker, so its target is kafka (or \
                         broker), not {named:?}; name the topic with topic = \"...\""
                    ),
                )),
            };
        }
        let links = links_of(backend, instances);
        let to_broker = target
            .links(links.iter().map(String::as_str))
            .into_iter()
            .any(|l| l.ends_with("->kafka"));
        if !to_broker {
            return Err(self.error(
                e.target.span(),
                format!(
                    "{} acts on links to the broker, and {named:?} names none; use kafka (every \
                     instance's link), a service such as payment->kafka, or one instance such as \
                     order#1->kafka",
                    fault.name()
                ),
            ));
        }
        Ok(())
    }

    /// `topic` one of the system's topics, `partition` one of its partitions, `probability` a
    /// fraction, `messages` at least 1, `delay` more than nothing.
    fn validate_message_attributes(&self, e: &ChaosEntry) -> Result<(), ScenarioError> {
        if let Some(topic) = &e.topic {
            let known = contracts::messages::topics::all();
            if !known.contains(topic.get_ref()) {
                return Err(self.error(
                    topic.span(),
                    format!(
                        "unknown topic {:?}: expected one of {}",
                        topic.get_ref(),
                        known.join(", ")
                    ),
                ));
            }
        }
        if let Some(partition) = &e.partition {
            let count = platform::messaging::kafka::PARTITIONS;
            if i64::from(*partition.get_ref()) >= i64::from(count) {
                return Err(self.error(
                    partition.span(),
                    format!(
                        "partition {} does not exist: every topic has {count} (0 to {})",
                        partition.get_ref(),
                        count - 1
                    ),
                ));
            }
        }
        if let Some(p) = &e.probability {
            self.fraction(p, "probability")?;
            if *p.get_ref() == 0.0 {
                return Err(self.error(
                    p.span(),
                    "probability 0 would change nothing; use a share above 0",
                ));
            }
        }
        if let Some(n) = &e.messages
            && *n.get_ref() == 0
        {
            return Err(self.error(n.span(), "messages must be at least 1"));
        }
        if *e.fault.get_ref() == Fault::Delay
            && let Some(d) = &e.delay
        {
            self.positive(d, "delay")?;
        }
        Ok(())
    }

    /// A scale fault acts on a service as a whole (`"order"`), on a backend that starts the
    /// instances itself (`local`, `containers`).
    fn validate_scale_target(
        &self,
        e: &ChaosEntry,
        target: &Target,
        backend: Backend,
    ) -> Result<(), ScenarioError> {
        if !matches!(backend, Backend::Local | Backend::Containers) {
            return Err(self.error(
                e.fault.span(),
                format!(
                    "scale needs backend = \"local\" or \"containers\": scaling at run time is \
                     not supported on the {} backend yet",
                    backend.name()
                ),
            ));
        }
        let named = e.target.get_ref();
        let message = match target {
            Target::Link { .. } => format!(
                "scale acts on a service, and {named:?} is a link; use order, inventory or payment"
            ),
            Target::Node(node) if node.instance.is_some() => format!(
                "scale acts on a service as a whole, and {named:?} is one instance; use {:?} \
                 with instances = N",
                node.name
            ),
            Target::Node(node) if Service::parse(&node.name).is_err() => format!(
                "scale acts on a service, and {named:?} is not one; use order, inventory or \
                 payment"
            ),
            Target::Node(_) => return Ok(()),
        };
        Err(self.error(e.target.span(), message))
    }

    /// `instances` of a scale fault: a count an environment may have, and not the one the
    /// scenario starts with (scaling to it would change nothing).
    fn validate_scale_count(&self, e: &ChaosEntry, n: &Spanned<u32>) -> Result<(), ScenarioError> {
        let count = usize::try_from(*n.get_ref()).unwrap_or(usize::MAX);
        Instances::check_count(count)
            .map_err(|m| self.error(n.span(), format!("instances: {m}")))?;
        let Ok(service) = Service::parse(e.target.get_ref()) else {
            return Ok(());
        };
        let start = self.environment.instances.to_instances().of(service);
        if count == start {
            return Err(self.error(
                n.span(),
                format!(
                    "instances = {count} is the number of {service} instances the fault would \
                     start from ([environment] instances), so it would change nothing; scale to \
                     another count"
                ),
            ));
        }
        Ok(())
    }

    /// One scale fault per service at a time: a second one overlapping the first would leave the
    /// count at whichever healed last.
    fn validate_scale_overlaps(&self) -> Result<(), ScenarioError> {
        let total = self.load.get_ref().plan().total_duration();
        let windows: Vec<(
            &Spanned<ChaosEntry>,
            &str,
            std::time::Duration,
            std::time::Duration,
        )> = self
            .chaos
            .iter()
            .filter(|c| *c.get_ref().fault.get_ref() == Fault::Scale)
            .map(|c| {
                let e = c.get_ref();
                let at = e.at.get_ref().as_std();
                let until = e
                    .duration
                    .as_ref()
                    .map_or(total, |d| at + d.get_ref().as_std())
                    .min(total);
                (c, e.target.get_ref().trim(), at, until)
            })
            .collect();
        for (i, (entry, service, at, until)) in windows.iter().enumerate() {
            if let Some((_, _, other_at, other_until)) = windows[..i]
                .iter()
                .find(|(_, s, a, u)| s == service && a < until && at < u)
            {
                return Err(self.error(
                    entry.get_ref().at.span(),
                    format!(
                        "this scale of {service} overlaps the one from {} to {}; scale a \
                         service with one fault at a time",
                        HumanDuration::from_std(*other_at),
                        HumanDuration::from_std(*other_until)
                    ),
                ));
            }
        }
        Ok(())
    }

    fn validate_knee(&self) -> Result<(), ScenarioError> {
        let load = self.load.get_ref();
        let Some(knee) = load.find_knee.as_ref().filter(|k| *k.get_ref()) else {
            return Ok(());
        };
        if !load.steps().iter().any(|s| s.hold) {
            let message = if load.is_open() {
                "find_knee judges the SLOs on each plateau of the rate plan, and this load has \
                 none: use a rate_plan with steps that keep the rate of the step before, e.g. \
                 \"20/s,5s;20/s,20s;40/s,5s;40/s,20s\""
            } else {
                "find_knee judges the SLOs on each plateau of the test plan, and this plan has \
                 none: add steps that keep the users of the step before, e.g. \
                 \"10,10s;10,30s;20,10s;20,30s\""
            };
            return Err(self.error(knee.span(), message));
        }
        if self.slos.is_empty() {
            return Err(self.error(
                knee.span(),
                "find_knee needs [[slo]] entries: the knee is the busiest plateau that meets them",
            ));
        }
        if let Some(phase) = self
            .slos
            .iter()
            .filter_map(|s| s.get_ref().phase.as_ref())
            .find(|p| *p.get_ref() != Phase::All)
        {
            return Err(self.error(
                phase.span(),
                "with find_knee every SLO is judged per plateau of the test plan; leave phase out",
            ));
        }
        Ok(())
    }

    fn validate_slo(&self, slo: &Spanned<Slo>) -> Result<(), ScenarioError> {
        let entry = slo.get_ref();
        if let Some(phase) = &entry.phase
            && *phase.get_ref() != Phase::All
            && self.chaos.is_empty()
        {
            return Err(self.error(
                phase.span(),
                format!(
                    "phase {:?} needs a chaos timeline ([[chaos]] entries); use phase = \"all\" \
                     or leave it out",
                    phase.get_ref().name()
                ),
            ));
        }
        if entry.metric.is_some() {
            return self.validate_metric_slo(slo);
        }
        if let Some(min) = &entry.min {
            return Err(self.error(
                min.span(),
                "min is the lower limit of a metric SLO; add metric = \"NAME\" to this [[slo]], \
                 or use min_throughput for requests per second",
            ));
        }
        if let Some(max) = &entry.max
            && let Bound::Value(v) = max.get_ref()
        {
            return Err(self.error(
                max.span(),
                format!(
                    "max = {v} is a number, the limit of a metric SLO (metric = \"NAME\"); a \
                     latency max is a duration such as \"1s\""
                ),
            ));
        }
        if let Some(span) = &entry.span {
            if span.get_ref().trim().is_empty() {
                return Err(self.error(span.span(), "span names a hop and cannot be empty"));
            }
            let others = [
                entry.endpoint.as_ref().map(|e| (e.span(), "endpoint")),
                entry.error_rate.as_ref().map(|e| (e.span(), "error_rate")),
                entry
                    .min_throughput
                    .as_ref()
                    .map(|e| (e.span(), "min_throughput")),
                entry
                    .min_goodput
                    .as_ref()
                    .map(|e| (e.span(), "min_goodput")),
                entry
                    .saga_completion_p99
                    .as_ref()
                    .map(|e| (e.span(), "saga_completion_p99")),
            ];
            if let Some((at, field)) = others.into_iter().flatten().next() {
                return Err(self.error(
                    at,
                    format!(
                        "{field} does not apply to a span SLO, which judges the latency of one \
                         hop (p50, p95, p99, max); put it in its own [[slo]]"
                    ),
                ));
            }
        }
        if let Some(endpoint) = &entry.endpoint {
            check_endpoint(endpoint.get_ref()).map_err(|m| self.error(endpoint.span(), m))?;
            if let Some(saga) = &entry.saga_completion_p99 {
                return Err(self.error(
                    saga.span(),
                    "saga_completion_p99 measures the order saga, not an endpoint; put it in an \
                     [[slo]] without endpoint",
                ));
            }
            if let Some(goodput) = &entry.min_goodput {
                return Err(self.error(
                    goodput.span(),
                    "min_goodput counts confirmed orders, not an endpoint's requests; put it in \
                     an [[slo]] without endpoint",
                ));
            }
        }
        for (d, name) in [
            (&entry.p50, "p50"),
            (&entry.p95, "p95"),
            (&entry.p99, "p99"),
            (&entry.saga_completion_p99, "saga_completion_p99"),
        ] {
            if let Some(d) = d {
                self.positive(d, name)?;
            }
        }
        if let Some(max) = &entry.max
            && let Bound::Duration(d) = max.get_ref()
            && d.is_zero()
        {
            return Err(self.error(max.span(), "max must be longer than 0s"));
        }
        if let Some(rate) = &entry.error_rate {
            self.fraction(rate, "error_rate")?;
        }
        for (t, field, what) in [
            (&entry.min_throughput, "min_throughput", "requests"),
            (&entry.min_goodput, "min_goodput", "confirmed orders"),
        ] {
            if let Some(t) = t {
                let v = *t.get_ref();
                if !(v.is_finite() && v > 0.0) {
                    return Err(self.error(
                        t.span(),
                        format!("{field} must be a positive number of {what} per second, not {v}"),
                    ));
                }
            }
        }
        if let Some(share) = &entry.knee_share {
            if entry.min_goodput.is_none() {
                return Err(self.error(
                    share.span(),
                    "knee_share scales min_goodput to this machine's knee; add min_goodput, the \
                     bound when no capacity report is at hand",
                ));
            }
            let v = *share.get_ref();
            if !(v.is_finite() && v > 0.0 && v <= 10.0) {
                return Err(self.error(
                    share.span(),
                    format!(
                        "knee_share is the share of the knee's confirmed orders per second to \
                         keep, above 0 and at most 10 (0.7 is 70 %), not {v}"
                    ),
                ));
            }
        }
        if objectives_of(entry).is_empty() {
            let what = if entry.span.is_some() {
                "add one of p50, p95, p99 or max"
            } else {
                "add one of p50, p95, p99, max, error_rate, min_throughput, min_goodput or \
                 saga_completion_p99"
            };
            return Err(self.error(
                slo.span(),
                format!("this [[slo]] sets no objective; {what}"),
            ));
        }
        Ok(())
    }

    /// `metric = "..."` with `max` and/or `min` as numbers, and nothing else but `phase`.
    fn validate_metric_slo(&self, slo: &Spanned<Slo>) -> Result<(), ScenarioError> {
        let entry = slo.get_ref();
        let Some(metric) = &entry.metric else {
            return Ok(());
        };
        let others = [
            entry.endpoint.as_ref().map(|e| (e.span(), "endpoint")),
            entry.span.as_ref().map(|e| (e.span(), "span")),
            entry.p50.as_ref().map(|e| (e.span(), "p50")),
            entry.p95.as_ref().map(|e| (e.span(), "p95")),
            entry.p99.as_ref().map(|e| (e.span(), "p99")),
            entry.error_rate.as_ref().map(|e| (e.span(), "error_rate")),
            entry
                .min_throughput
                .as_ref()
                .map(|e| (e.span(), "min_throughput")),
            entry
                .min_goodput
                .as_ref()
                .map(|e| (e.span(), "min_goodput")),
            entry
                .saga_completion_p99
                .as_ref()
                .map(|e| (e.span(), "saga_completion_p99")),
        ];
        if let Some((at, field)) = others.into_iter().flatten().next() {
            return Err(self.error(
                at,
                format!(
                    "{field} does not apply to a metric SLO, which judges a scraped value with \
                     max and min; put it in its own [[slo]]"
                ),
            ));
        }
        metric
            .get_ref()
            .parse::<crate::telemetry::scrape::Selector>()
            .map_err(|e| {
                self.error(
                    metric.span(),
                    format!("invalid metric selector {:?}: {e}", metric.get_ref()),
                )
            })?;
        let max = match entry.max.as_ref().map(|m| (m.span(), *m.get_ref())) {
            Some((at, Bound::Duration(d))) => {
                return Err(self.error(
                    at,
                    format!(
                        "a metric SLO's max is a number (the metric's value), not the duration \
                         \"{d}\""
                    ),
                ));
            }
            Some((at, Bound::Value(v))) => Some((at, v)),
            None => None,
        };
        let min = entry.min.as_ref().map(|m| (m.span(), *m.get_ref()));
        for (at, v, field) in [
            max.clone().map(|(a, v)| (a, v, "max")),
            min.clone().map(|(a, v)| (a, v, "min")),
        ]
        .into_iter()
        .flatten()
        {
            if !v.is_finite() {
                return Err(self.error(at, format!("{field} must be a finite number, not {v}")));
            }
        }
        match (max, min) {
            (None, None) => Err(self.error(
                slo.span(),
                "this metric SLO sets no limit; add max = NUMBER and/or min = NUMBER",
            )),
            (Some((_, hi)), Some((at, lo))) if lo > hi => Err(self.error(
                at,
                format!("min = {lo} is above max = {hi}: no value could meet both"),
            )),
            _ => Ok(()),
        }
    }

    fn positive(&self, d: &Spanned<HumanDuration>, field: &str) -> Result<(), ScenarioError> {
        if d.get_ref().is_zero() {
            return Err(self.error(d.span(), format!("{field} must be longer than 0s")));
        }
        Ok(())
    }

    fn fraction(&self, v: &Spanned<f64>, field: &str) -> Result<(), ScenarioError> {
        let x = *v.get_ref();
        if !(0.0..=1.0).contains(&x) {
            return Err(self.error(
                v.span(),
                format!("{field} is a fraction between 0 and 1 (0.01 is 1%), not {x}"),
            ));
        }
        Ok(())
    }
}

const METHODS: [&str; 5] = ["GET", "POST", "PUT", "PATCH", "DELETE"];

/// `"METHOD /path"`, where the path may hold `{placeholders}` such as `/api/orders/{id}`.
fn check_endpoint(endpoint: &str) -> Result<(), String> {
    let bad = || {
        format!(
            "invalid endpoint {endpoint:?}: expected \"METHOD /path\" such as \
             \"POST /api/orders\" or \"GET /api/orders/{{id}}\", with METHOD one of {}",
            METHODS.join(", ")
        )
    };
    let (method, path) = endpoint.split_once(' ').ok_or_else(bad)?;
    if !METHODS.contains(&method)
        || !path.starts_with('/')
        || path.contains(char::is_whitespace)
        || path.contains('?')
    {
        return Err(bad());
    }
    Ok(())
}

fn journey_names() -> String {
    Journey::ALL
        .iter()
        .map(|j| j.name())
        .collect::<Vec<_>>()
        .join(", ")
}

/// Letters, digits, `-` and `_`, at least one: a name that can name a file or folder.
fn is_plain_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}
