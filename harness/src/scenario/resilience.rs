//! `[environment.resilience]` and `[[variant]]`: how the gateway's resilience layers (circuit
//! breaker, bulkhead, retries under a budget, per-customer rate limit, active health checks,
//! admission throttle) and
//! the services' own limits (request timeout, concurrency) are switched and tuned for a run, and
//! the variants a scenario compares side by side.
//!
//! A key left out leaves the system's default: no variable is set for it, so the defaults live
//! in one place, the system (`system/gateway/src/resilience.rs` and the services' config).
//! [`Resilience::settings`] is the one mapping from keys to the variables the processes read;
//! the backends pass [`Resilience::gateway_env`] to the gateway and [`Resilience::service_env`]
//! to every service instance.
//!
//! A `[[variant]]` is a named set of these keys merged over `[environment.resilience]`
//! ([`Resilience::over`]); `harness run` runs each variant on a fresh environment with the same
//! load, chaos timeline, SLOs and checks, and compares them (Netflix ChAP's control and
//! experiment).

use std::collections::BTreeMap;
use std::ops::Range;

use serde::{Deserialize, Serialize};

use super::{HealthChecks, HumanDuration, RateLimit, Spanned, Switch};

/// The names of the variables the system reads, as the gateway and the services define them.
pub mod vars {
    pub use gateway::resilience::{
        ADMISSION_THROTTLE, ADMISSION_THROTTLE_HOLD_MS, BREAKER, BREAKER_FAILURE_RATE,
        BREAKER_HALF_OPEN_CALLS, BREAKER_MIN_CALLS, BREAKER_OPEN_MS, BREAKER_SLOW_CALL_MS,
        BREAKER_SLOW_CALL_RATE, BREAKER_WINDOW_MS, BULKHEAD, BULKHEAD_LIMIT,
        BULKHEAD_LIMIT_INVENTORY, BULKHEAD_LIMIT_ORDER, BULKHEAD_LIMIT_PAYMENT,
        HEALTH_CHECK_INTERVAL_MS, RATE_LIMIT_BURST, RATE_LIMIT_PER_SECOND, RETRIES,
        RETRY_BACKOFF_MAX_MS, RETRY_BACKOFF_MS, RETRY_BUDGET,
    };
    /// Every service instance (order, inventory, payment).
    pub use platform::config::{DRAIN_DELAY_MS, MAX_CONCURRENT_REQUESTS, REQUEST_TIMEOUT_MS};
}

/// `[environment.resilience]`, or a variant's `resilience`: every key optional, absent meaning
/// the system's default. Documented key by key in `scenarios/README.md`.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Resilience {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub breaker: Option<Spanned<Switch>>,
    /// Open when this share (0 < x <= 1) of the window's calls failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub breaker_failure_rate: Option<Spanned<f64>>,
    /// A call slower than this is slow.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub breaker_slow_call: Option<Spanned<HumanDuration>>,
    /// Open when this share (0 < x <= 1) of the window's calls was slow.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub breaker_slow_call_rate: Option<Spanned<f64>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub breaker_window: Option<Spanned<HumanDuration>>,
    /// Calls in the window before a rate counts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub breaker_min_calls: Option<Spanned<u32>>,
    /// How long the breaker stays open before letting probe calls through.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub breaker_open_for: Option<Spanned<HumanDuration>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub breaker_half_open_calls: Option<Spanned<u32>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bulkhead: Option<Spanned<Switch>>,
    /// Calls in flight to each upstream service.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bulkhead_limit: Option<Spanned<u32>>,
    /// Per service, over `bulkhead_limit`.
    #[serde(default, skip_serializing_if = "BulkheadLimits::is_empty")]
    pub bulkhead_limits: BulkheadLimits,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retries: Option<Spanned<Switch>>,
    /// Retries may add at most this share (0..=1) of the requests.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_budget: Option<Spanned<f64>>,
    /// The base of the full-jitter exponential backoff before a retry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_backoff: Option<Spanned<HumanDuration>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_backoff_max: Option<Spanned<HumanDuration>>,
    /// Per customer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limit: Option<Spanned<RateLimit>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limit_burst: Option<Spanned<u32>>,
    /// Active probes of every instance's `/health/ready`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health_checks: Option<Spanned<HealthChecks>>,
    /// New orders refused at the edge for a hold after the order service refused one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub admission_throttle: Option<Spanned<Switch>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub admission_throttle_hold: Option<Spanned<HumanDuration>>,
    /// The request timeout inside each service.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_timeout: Option<Spanned<HumanDuration>>,
    /// Requests in flight per service instance.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_concurrency: Option<Spanned<u32>>,
    /// On a graceful stop, how long a service instance stays unready while still serving before
    /// its listener closes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drain_delay: Option<Spanned<HumanDuration>>,
}

/// `bulkhead_limits = { order = N, inventory = N, payment = N }`.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct BulkheadLimits {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub order: Option<Spanned<u32>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inventory: Option<Spanned<u32>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payment: Option<Spanned<u32>>,
}

impl BulkheadLimits {
    pub fn is_empty(&self) -> bool {
        self.order.is_none() && self.inventory.is_none() && self.payment.is_none()
    }
}

/// Which processes read a variable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reader {
    Gateway,
    /// Every instance of order, inventory and payment.
    Services,
}

/// One key a scenario set: as written, and as the system reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Setting {
    /// The key in the table (`breaker`, `bulkhead_limits.order`).
    pub key: &'static str,
    /// The value as the scenario reads (`"2s"`, `"on"`, `0.5`).
    pub shown: String,
    pub var: &'static str,
    /// The value of the variable: durations in milliseconds, switches `on`/`off`, shares and
    /// rates as decimal numbers, `0` for a rate limit or health checks that are `off`.
    pub value: String,
    pub reader: Reader,
}

/// (as written, as the variable takes it).
type Written = Option<(String, String)>;

fn switch(v: &Option<Spanned<Switch>>) -> Written {
    v.as_ref().map(|s| {
        (
            format!("\"{}\"", s.get_ref().name()),
            s.get_ref().name().to_string(),
        )
    })
}

fn number(v: &Option<Spanned<f64>>) -> Written {
    v.as_ref()
        .map(|x| (x.get_ref().to_string(), x.get_ref().to_string()))
}

fn count(v: &Option<Spanned<u32>>) -> Written {
    v.as_ref()
        .map(|n| (n.get_ref().to_string(), n.get_ref().to_string()))
}

fn millis(d: HumanDuration) -> String {
    d.as_std().as_millis().to_string()
}

fn duration(v: &Option<Spanned<HumanDuration>>) -> Written {
    v.as_ref()
        .map(|d| (format!("\"{}\"", d.get_ref()), millis(*d.get_ref())))
}

impl Resilience {
    /// Every key set, in the order of the table's documentation, with the variable it sets:
    /// the one mapping from keys to variables.
    pub fn settings(&self) -> Vec<Setting> {
        use Reader::{Gateway, Services};
        use vars::*;
        let rate_limit = self.rate_limit.as_ref().map(|r| match r.get_ref() {
            RateLimit::Off => ("\"off\"".to_string(), "0".to_string()),
            RateLimit::Rate(rate) => (format!("\"{rate}\""), rate.as_per_second().to_string()),
        });
        let health_checks = self.health_checks.as_ref().map(|h| match h.get_ref() {
            HealthChecks::Off => ("\"off\"".to_string(), "0".to_string()),
            HealthChecks::Every(d) => (format!("\"{d}\""), millis(*d)),
        });
        let limits = &self.bulkhead_limits;
        let keys: [(&'static str, &'static str, Reader, Written); 25] = [
            ("breaker", BREAKER, Gateway, switch(&self.breaker)),
            (
                "breaker_failure_rate",
                BREAKER_FAILURE_RATE,
                Gateway,
                number(&self.breaker_failure_rate),
            ),
            (
                "breaker_slow_call",
                BREAKER_SLOW_CALL_MS,
                Gateway,
                duration(&self.breaker_slow_call),
            ),
            (
                "breaker_slow_call_rate",
                BREAKER_SLOW_CALL_RATE,
                Gateway,
                number(&self.breaker_slow_call_rate),
            ),
            (
                "breaker_window",
                BREAKER_WINDOW_MS,
                Gateway,
                duration(&self.breaker_window),
            ),
            (
                "breaker_min_calls",
                BREAKER_MIN_CALLS,
                Gateway,
                count(&self.breaker_min_calls),
            ),
            (
                "breaker_open_for",
                BREAKER_OPEN_MS,
                Gateway,
                duration(&self.breaker_open_for),
            ),
            (
                "breaker_half_open_calls",
                BREAKER_HALF_OPEN_CALLS,
                Gateway,
                count(&self.breaker_half_open_calls),
            ),
            ("bulkhead", BULKHEAD, Gateway, switch(&self.bulkhead)),
            (
                "bulkhead_limit",
                BULKHEAD_LIMIT,
                Gateway,
                count(&self.bulkhead_limit),
            ),
            (
                "bulkhead_limits.order",
                BULKHEAD_LIMIT_ORDER,
                Gateway,
                count(&limits.order),
            ),
            (
                "bulkhead_limits.inventory",
                BULKHEAD_LIMIT_INVENTORY,
                Gateway,
                count(&limits.inventory),
            ),
            (
                "bulkhead_limits.payment",
                BULKHEAD_LIMIT_PAYMENT,
                Gateway,
                count(&limits.payment),
            ),
            ("retries", RETRIES, Gateway, switch(&self.retries)),
            (
                "retry_budget",
                RETRY_BUDGET,
                Gateway,
                number(&self.retry_budget),
            ),
            (
                "retry_backoff",
                RETRY_BACKOFF_MS,
                Gateway,
                duration(&self.retry_backoff),
            ),
            (
                "retry_backoff_max",
                RETRY_BACKOFF_MAX_MS,
                Gateway,
                duration(&self.retry_backoff_max),
            ),
            ("rate_limit", RATE_LIMIT_PER_SECOND, Gateway, rate_limit),
            (
                "rate_limit_burst",
                RATE_LIMIT_BURST,
                Gateway,
                count(&self.rate_limit_burst),
            ),
            (
                "health_checks",
                HEALTH_CHECK_INTERVAL_MS,
                Gateway,
                health_checks,
            ),
            (
                "admission_throttle",
                ADMISSION_THROTTLE,
                Gateway,
                switch(&self.admission_throttle),
            ),
            (
                "admission_throttle_hold",
                ADMISSION_THROTTLE_HOLD_MS,
                Gateway,
                duration(&self.admission_throttle_hold),
            ),
            (
                "service_timeout",
                REQUEST_TIMEOUT_MS,
                Services,
                duration(&self.service_timeout),
            ),
            (
                "service_concurrency",
                MAX_CONCURRENT_REQUESTS,
                Services,
                count(&self.service_concurrency),
            ),
            (
                "drain_delay",
                DRAIN_DELAY_MS,
                Services,
                duration(&self.drain_delay),
            ),
        ];
        keys.into_iter()
            .filter_map(|(key, var, reader, written)| {
                written.map(|(shown, value)| Setting {
                    key,
                    shown,
                    var,
                    value,
                    reader,
                })
            })
            .collect()
    }

    /// The variables of the gateway: only those of the keys set.
    pub fn gateway_env(&self) -> BTreeMap<String, String> {
        self.env_of(Reader::Gateway)
    }

    /// The variables of every service instance: only those of the keys set.
    pub fn service_env(&self) -> BTreeMap<String, String> {
        self.env_of(Reader::Services)
    }

    fn env_of(&self, reader: Reader) -> BTreeMap<String, String> {
        self.settings()
            .into_iter()
            .filter(|s| s.reader == reader)
            .map(|s| (s.var.to_string(), s.value))
            .collect()
    }

    /// The keys set, as TOML would have them: `breaker = "off", bulkhead_limit = 8`; `defaults`
    /// when none is.
    pub fn describe(&self) -> String {
        let settings = self.settings();
        if settings.is_empty() {
            return "defaults".into();
        }
        settings
            .iter()
            .map(|s| format!("{} = {}", s.key, s.shown))
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// These keys over `base`: a key set here wins, the others come from `base`.
    pub fn over(&self, base: &Resilience) -> Resilience {
        fn pick<T: Clone>(mine: &Option<T>, base: &Option<T>) -> Option<T> {
            mine.clone().or_else(|| base.clone())
        }
        let (l, b) = (&self.bulkhead_limits, &base.bulkhead_limits);
        Resilience {
            breaker: pick(&self.breaker, &base.breaker),
            breaker_failure_rate: pick(&self.breaker_failure_rate, &base.breaker_failure_rate),
            breaker_slow_call: pick(&self.breaker_slow_call, &base.breaker_slow_call),
            breaker_slow_call_rate: pick(
                &self.breaker_slow_call_rate,
                &base.breaker_slow_call_rate,
            ),
            breaker_window: pick(&self.breaker_window, &base.breaker_window),
            breaker_min_calls: pick(&self.breaker_min_calls, &base.breaker_min_calls),
            breaker_open_for: pick(&self.breaker_open_for, &base.breaker_open_for),
            breaker_half_open_calls: pick(
                &self.breaker_half_open_calls,
                &base.breaker_half_open_calls,
            ),
            bulkhead: pick(&self.bulkhead, &base.bulkhead),
            bulkhead_limit: pick(&self.bulkhead_limit, &base.bulkhead_limit),
            bulkhead_limits: BulkheadLimits {
                order: pick(&l.order, &b.order),
                inventory: pick(&l.inventory, &b.inventory),
                payment: pick(&l.payment, &b.payment),
            },
            retries: pick(&self.retries, &base.retries),
            retry_budget: pick(&self.retry_budget, &base.retry_budget),
            retry_backoff: pick(&self.retry_backoff, &base.retry_backoff),
            retry_backoff_max: pick(&self.retry_backoff_max, &base.retry_backoff_max),
            rate_limit: pick(&self.rate_limit, &base.rate_limit),
            rate_limit_burst: pick(&self.rate_limit_burst, &base.rate_limit_burst),
            health_checks: pick(&self.health_checks, &base.health_checks),
            admission_throttle: pick(&self.admission_throttle, &base.admission_throttle),
            admission_throttle_hold: pick(
                &self.admission_throttle_hold,
                &base.admission_throttle_hold,
            ),
            service_timeout: pick(&self.service_timeout, &base.service_timeout),
            service_concurrency: pick(&self.service_concurrency, &base.service_concurrency),
            drain_delay: pick(&self.drain_delay, &base.drain_delay),
        }
    }

    /// What the types cannot check: shares within their range, counts of at least 1, durations
    /// in whole milliseconds (the variables take milliseconds), a rate limit the gateway can
    /// hold. The first problem, with the span of its value.
    pub(super) fn check(&self) -> Result<(), (Range<usize>, String)> {
        let fail = |span: Range<usize>, message: String| Err((span, message));
        for (v, key, zero_ok) in [
            (&self.breaker_failure_rate, "breaker_failure_rate", false),
            (
                &self.breaker_slow_call_rate,
                "breaker_slow_call_rate",
                false,
            ),
            (&self.retry_budget, "retry_budget", true),
        ] {
            let Some(v) = v else { continue };
            let x = *v.get_ref();
            let ok = if zero_ok {
                (0.0..=1.0).contains(&x)
            } else {
                x > 0.0 && x <= 1.0
            };
            if !ok {
                let range = if zero_ok {
                    "from 0 to 1"
                } else {
                    "more than 0 and at most 1"
                };
                return fail(
                    v.span(),
                    format!("{key} is a share, {range} (0.5 is half), not {x}"),
                );
            }
        }
        let limits = &self.bulkhead_limits;
        for (v, key) in [
            (&self.breaker_min_calls, "breaker_min_calls"),
            (&self.breaker_half_open_calls, "breaker_half_open_calls"),
            (&self.bulkhead_limit, "bulkhead_limit"),
            (&limits.order, "bulkhead_limits.order"),
            (&limits.inventory, "bulkhead_limits.inventory"),
            (&limits.payment, "bulkhead_limits.payment"),
            (&self.rate_limit_burst, "rate_limit_burst"),
            (&self.service_concurrency, "service_concurrency"),
        ] {
            if let Some(n) = v
                && *n.get_ref() == 0
            {
                return fail(n.span(), format!("{key} must be at least 1"));
            }
        }
        for (d, key, zero_ok) in [
            (&self.breaker_slow_call, "breaker_slow_call", false),
            (&self.breaker_window, "breaker_window", false),
            (&self.breaker_open_for, "breaker_open_for", false),
            (
                &self.admission_throttle_hold,
                "admission_throttle_hold",
                false,
            ),
            (&self.retry_backoff, "retry_backoff", true),
            (&self.retry_backoff_max, "retry_backoff_max", false),
            (&self.service_timeout, "service_timeout", false),
            (&self.drain_delay, "drain_delay", true),
        ] {
            let Some(d) = d else { continue };
            check_millis(d, key, zero_ok)?;
        }
        if let (Some(base), Some(max)) = (&self.retry_backoff, &self.retry_backoff_max)
            && max.get_ref() < base.get_ref()
        {
            return fail(
                max.span(),
                format!(
                    "retry_backoff_max ({}) is below retry_backoff ({}): the backoff starts at \
                     retry_backoff and grows up to retry_backoff_max",
                    max.get_ref(),
                    base.get_ref()
                ),
            );
        }
        if let Some(h) = &self.health_checks
            && let HealthChecks::Every(d) = h.get_ref()
        {
            check_millis(&Spanned::new(h.span(), *d), "health_checks", false).map_err(
                |(span, m)| (span, format!("{m}; write \"off\" to switch the probes off")),
            )?;
        }
        if let Some(r) = &self.rate_limit
            && let RateLimit::Rate(rate) = r.get_ref()
        {
            let per_second = rate.as_per_second();
            if per_second < 1.0 || per_second.fract() != 0.0 {
                return fail(
                    r.span(),
                    format!(
                        "rate_limit {rate} is {per_second} requests per second; the gateway's \
                         limit is a whole number of requests per second per customer, at least \
                         1 (write \"off\" for none)"
                    ),
                );
            }
        }
        Ok(())
    }
}

/// A duration the system takes in milliseconds: whole milliseconds, and more than 0 unless
/// `zero_ok`.
fn check_millis(
    d: &Spanned<HumanDuration>,
    key: &str,
    zero_ok: bool,
) -> Result<(), (Range<usize>, String)> {
    let value = d.get_ref().as_std();
    if !zero_ok && value.is_zero() {
        return Err((d.span(), format!("{key} must be longer than 0s")));
    }
    if !value.subsec_nanos().is_multiple_of(1_000_000) {
        return Err((
            d.span(),
            format!(
                "{key} is {}, and the system takes whole milliseconds; round it to a number of \
                 ms",
                d.get_ref()
            ),
        ));
    }
    Ok(())
}

/// One `[[variant]]`: a name, the resilience keys it sets over `[environment.resilience]`, and
/// whether its SLO verdicts gate the run.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Variant {
    /// Names the variant in the reports and the folder of its report,
    /// `reports/<run-id>/variants/<name>/`.
    pub name: Spanned<String>,
    #[serde(default)]
    pub resilience: Resilience,
    /// `false`: the variant's SLO verdicts are reported and not gated (a control expected to
    /// break them); its invariants gate whatever this says.
    #[serde(default = "yes")]
    pub gate: bool,
}

fn yes() -> bool {
    true
}

impl Variant {
    pub fn name(&self) -> &str {
        self.name.get_ref()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn parse(text: &str) -> Resilience {
        toml::from_str(text).unwrap()
    }

    #[test]
    fn every_key_sets_its_variable_in_the_system_s_units_and_only_keys_set_do() {
        let r = parse(
            r#"
            breaker = "on"
            breaker_failure_rate = 0.5
            breaker_slow_call = "2s"
            breaker_slow_call_rate = 0.8
            breaker_window = "10s"
            breaker_min_calls = 20
            breaker_open_for = "1.5s"
            breaker_half_open_calls = 5
            bulkhead = "off"
            bulkhead_limit = 64
            bulkhead_limits = { order = 8, payment = 4 }
            retries = "on"
            retry_budget = 0.1
            retry_backoff = "0s"
            retry_backoff_max = "100ms"
            rate_limit = "600/m"
            rate_limit_burst = 20
            health_checks = "500ms"
            admission_throttle = "on"
            admission_throttle_hold = "40ms"
            service_timeout = "3s"
            service_concurrency = 128
            "#,
        );
        let gateway = r.gateway_env();
        let expected: BTreeMap<String, String> = [
            ("BREAKER", "on"),
            ("BREAKER_FAILURE_RATE", "0.5"),
            ("BREAKER_SLOW_CALL_MS", "2000"),
            ("BREAKER_SLOW_CALL_RATE", "0.8"),
            ("BREAKER_WINDOW_MS", "10000"),
            ("BREAKER_MIN_CALLS", "20"),
            ("BREAKER_OPEN_MS", "1500"),
            ("BREAKER_HALF_OPEN_CALLS", "5"),
            ("BULKHEAD", "off"),
            ("BULKHEAD_LIMIT", "64"),
            ("BULKHEAD_LIMIT_ORDER", "8"),
            ("BULKHEAD_LIMIT_PAYMENT", "4"),
            ("RETRIES", "on"),
            ("RETRY_BUDGET", "0.1"),
            ("RETRY_BACKOFF_MS", "0"),
            ("RETRY_BACKOFF_MAX_MS", "100"),
            ("RATE_LIMIT_PER_SECOND", "10"),
            ("RATE_LIMIT_BURST", "20"),
            ("HEALTH_CHECK_INTERVAL_MS", "500"),
            ("ADMISSION_THROTTLE", "on"),
            ("ADMISSION_THROTTLE_HOLD_MS", "40"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        assert_eq!(gateway, expected);
        assert!(!gateway.contains_key("BULKHEAD_LIMIT_INVENTORY"), "not set");
        let services = r.service_env();
        assert_eq!(services.len(), 2, "{services:?}");
        assert_eq!(services["REQUEST_TIMEOUT_MS"], "3000");
        assert_eq!(services["MAX_CONCURRENT_REQUESTS"], "128");
        assert!(r.check().is_ok());
    }

    #[test]
    fn an_empty_table_sets_nothing_and_off_is_zero_where_the_system_says_so() {
        let none = Resilience::default();
        assert!(none.gateway_env().is_empty() && none.service_env().is_empty());
        assert_eq!(none.describe(), "defaults");
        let off = parse("rate_limit = \"off\"\nhealth_checks = \"off\"\nbreaker = \"off\"");
        let env = off.gateway_env();
        assert_eq!(env["RATE_LIMIT_PER_SECOND"], "0");
        assert_eq!(env["HEALTH_CHECK_INTERVAL_MS"], "0");
        assert_eq!(env["BREAKER"], "off");
        assert_eq!(
            off.describe(),
            r#"breaker = "off", rate_limit = "off", health_checks = "off""#
        );
    }

    #[test]
    fn a_variant_s_keys_win_over_the_environment_s_and_the_rest_stay() {
        let base =
            parse("breaker = \"on\"\nbreaker_window = \"5s\"\nbulkhead_limits = { order = 8 }");
        let variant = parse("breaker = \"off\"\nbulkhead_limits = { payment = 2 }");
        let merged = variant.over(&base);
        let env = merged.gateway_env();
        assert_eq!(env["BREAKER"], "off");
        assert_eq!(env["BREAKER_WINDOW_MS"], "5000");
        assert_eq!(env["BULKHEAD_LIMIT_ORDER"], "8");
        assert_eq!(env["BULKHEAD_LIMIT_PAYMENT"], "2");
    }

    #[test]
    fn values_out_of_range_are_refused_with_the_key_and_what_is_allowed() {
        for (text, expected) in [
            (
                "breaker_failure_rate = 0.0",
                "breaker_failure_rate is a share, more than 0",
            ),
            ("breaker_slow_call_rate = 1.5", "more than 0 and at most 1"),
            (
                "retry_budget = -0.1",
                "retry_budget is a share, from 0 to 1",
            ),
            (
                "breaker_min_calls = 0",
                "breaker_min_calls must be at least 1",
            ),
            (
                "bulkhead_limits = { inventory = 0 }",
                "bulkhead_limits.inventory must be at least 1",
            ),
            (
                "breaker_window = \"0s\"",
                "breaker_window must be longer than 0s",
            ),
            ("service_timeout = \"1500us\"", "whole milliseconds"),
            (
                "admission_throttle_hold = \"0s\"",
                "admission_throttle_hold must be longer than 0s",
            ),
            ("health_checks = \"0s\"", "write \"off\""),
            ("rate_limit = \"0/s\"", "at least 1"),
            (
                "rate_limit = \"2.5/s\"",
                "whole number of requests per second",
            ),
            (
                "retry_backoff = \"50ms\"\nretry_backoff_max = \"10ms\"",
                "retry_backoff_max (10ms) is below retry_backoff (50ms)",
            ),
        ] {
            let (_, message) = parse(text).check().unwrap_err();
            assert!(message.contains(expected), "{text}: {message}");
        }
    }

    #[test]
    fn switches_rates_and_intervals_say_what_they_expected() {
        let e = toml::from_str::<Resilience>("breaker = \"yes\"").unwrap_err();
        assert!(
            e.to_string()
                .contains(r#"invalid switch "yes": expected "on" or "off""#),
            "{e}"
        );
        let e = toml::from_str::<Resilience>("rate_limit = \"20\"").unwrap_err();
        assert!(e.to_string().contains("invalid rate limit \"20\""), "{e}");
        let e = toml::from_str::<Resilience>("health_checks = \"often\"").unwrap_err();
        assert!(
            e.to_string().contains("invalid health_checks \"often\""),
            "{e}"
        );
        let e = toml::from_str::<Resilience>("breakers = \"on\"").unwrap_err();
        assert!(e.to_string().contains("unknown field `breakers`"), "{e}");
    }
}
