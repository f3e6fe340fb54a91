//! `[limits]` in herald.toml: the operator's limits, every tenant's unless it
//! overrides them, and the ceiling of a tenant's own overrides (what the
//! operator sets, a tenant's key can lower, never raise; docs/security.md).
//!
//! Warnings (`soft_cap_fraction`, `monthly_soft_budget`) are the tenant's to
//! move freely: they refuse nothing. Provider rates are not overridable at all.

use std::collections::BTreeMap;
use std::fmt::Display;

use serde::{Deserialize, Serialize};

use super::tenant::{Budget, FrequencyCap, RateLimit, SoftCapFraction, TenantLimits};
use super::validation_errors::ValidationErrors;
use super::values::{Category, Channel};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    /// Messages per tenant per UTC day; unset is unlimited.
    pub messages_per_day: Option<u64>,
    /// Messages per tenant per UTC month; unset is unlimited.
    pub messages_per_month: Option<u64>,
    /// A tenant is warned once per period when usage reaches this share of a cap.
    pub soft_cap_fraction: SoftCapFraction,
    /// Estimated cost per tenant per UTC month (unit of `routing.costs`) above
    /// which sends are refused; unset is unlimited.
    pub monthly_budget: Option<Budget>,
    /// Cost at which the tenant is warned; unset is `soft_cap_fraction` of the budget.
    pub monthly_soft_budget: Option<Budget>,
    /// Token bucket per tenant and channel, e.g. `sms = { per_second = 10, burst = 20 }`;
    /// a channel not named is not throttled per tenant.
    pub channel_rates: BTreeMap<Channel, RateLimit>,
    /// Token bucket per provider instance (by name), shared by all tenants.
    pub provider_rates: BTreeMap<String, RateLimit>,
    /// Messages per recipient and category, e.g. `marketing = { count = 3, period_seconds = 86400 }`.
    pub frequency_caps: BTreeMap<Category, FrequencyCap>,
    /// API requests per API key (token bucket, per process). Unset in code is
    /// unlimited; a file cannot unset it, so an operator who wants no limit
    /// sets a rate no client reaches.
    pub api_rate: Option<RateLimit>,
    /// GraphQL WebSockets one tenant may hold open in each API process;
    /// past it a new one is closed with 4429.
    pub max_sockets_per_tenant: usize,
    /// Live subscriptions one tenant may hold in each API process, over all
    /// its sockets; past it a new one fails with `LIMIT_EXCEEDED`.
    pub max_subscriptions_per_tenant: usize,
}

/// 500 requests a second per key, 1,000 at once: far above any one client of
/// the service's own tests, far below what takes a process down.
pub const DEFAULT_API_RATE: (f64, f64) = (500.0, 1_000.0);

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            messages_per_day: None,
            messages_per_month: None,
            soft_cap_fraction: SoftCapFraction::try_from(0.8).expect("0.8 is a fraction"),
            monthly_budget: None,
            monthly_soft_budget: None,
            channel_rates: BTreeMap::new(),
            provider_rates: BTreeMap::new(),
            frequency_caps: BTreeMap::new(),
            api_rate: Some(
                RateLimit::new(DEFAULT_API_RATE.0, DEFAULT_API_RATE.1).expect("a valid rate"),
            ),
            max_sockets_per_tenant: 100,
            max_subscriptions_per_tenant: 1_000,
        }
    }
}

/// Whose overrides they are, which decides how far they may go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LimitAuthority {
    /// A tenant listed in `operator_tenants`: its overrides stand as set.
    Operator,
    /// Any other tenant: its overrides may only lower the operator's limits.
    Tenant,
}

/// Whether `wanted` stays within `ceiling` (`None`: unlimited).
fn within<T>(ceiling: Option<&T>, wanted: Option<&T>, lower: impl Fn(&T, &T) -> bool) -> bool {
    match (ceiling, wanted) {
        (None, _) => true,
        (Some(_), None) => false,
        (Some(ceiling), Some(wanted)) => lower(wanted, ceiling),
    }
}

/// Why an override above `ceiling` is refused, naming the operator's value.
fn refusal<T: Display>(ceiling: &T, wanted: Option<&T>) -> String {
    match wanted {
        None => {
            format!("cannot lift the operator's limit of {ceiling}; only an operator tenant can")
        }
        Some(wanted) => format!(
            "{wanted} is above the operator's limit of {ceiling}; only an operator tenant can \
             raise it"
        ),
    }
}

fn rate_within(wanted: &RateLimit, ceiling: &RateLimit) -> bool {
    // A bucket never grants more than burst + rate × t, so both must be lower.
    wanted.per_second() <= ceiling.per_second() && wanted.burst() <= ceiling.burst()
}

fn budget_within(wanted: &Budget, ceiling: &Budget) -> bool {
    f64::from(*wanted) <= f64::from(*ceiling)
}

fn cap_within(wanted: &FrequencyCap, ceiling: &FrequencyCap) -> bool {
    rate_within(&wanted.as_rate(), &ceiling.as_rate())
}

impl LimitsConfig {
    /// Each override of `overrides` that would raise or lift one of these
    /// limits, by the override's field name (as `overrides` shows it).
    pub fn excesses(&self, overrides: &TenantLimits) -> ValidationErrors {
        let mut errors = ValidationErrors::default();
        let mut check = |path: String, failed: Option<String>| {
            if let Some(message) = failed {
                errors.add(path, message);
            }
        };
        check(
            "messages_per_day".into(),
            excess(
                self.messages_per_day.as_ref(),
                &overrides.messages_per_day,
                |w, c| w <= c,
            ),
        );
        check(
            "messages_per_month".into(),
            excess(
                self.messages_per_month.as_ref(),
                &overrides.messages_per_month,
                |w, c| w <= c,
            ),
        );
        check(
            "monthly_budget".into(),
            excess(
                self.monthly_budget.as_ref(),
                &overrides.monthly_budget,
                budget_within,
            ),
        );
        check(
            "api_rate".into(),
            excess(self.api_rate.as_ref(), &overrides.api_rate, rate_within),
        );
        for (channel, wanted) in &overrides.channel_rates {
            check(
                format!("channel_rates.{channel}"),
                excess(self.channel_rates.get(channel), &Some(*wanted), rate_within),
            );
        }
        for (category, wanted) in &overrides.frequency_caps {
            check(
                format!("frequency_caps.{category}"),
                excess(
                    self.frequency_caps.get(category),
                    &Some(*wanted),
                    cap_within,
                ),
            );
        }
        errors
    }

    /// `overrides` without those that would raise or lift one of these limits
    /// (each falls back to the operator's value), for overrides stored before
    /// the rule or under a higher `[limits]` than today's.
    pub fn clamp(&self, overrides: &TenantLimits) -> TenantLimits {
        fn keep<T>(
            field: &mut Option<Option<T>>,
            ceiling: Option<&T>,
            lower: impl Fn(&T, &T) -> bool,
        ) {
            if !within_override(ceiling, field, lower) {
                *field = None;
            }
        }
        let mut clamped = overrides.clone();
        keep(
            &mut clamped.messages_per_day,
            self.messages_per_day.as_ref(),
            |w, c| w <= c,
        );
        keep(
            &mut clamped.messages_per_month,
            self.messages_per_month.as_ref(),
            |w, c| w <= c,
        );
        keep(
            &mut clamped.monthly_budget,
            self.monthly_budget.as_ref(),
            budget_within,
        );
        keep(&mut clamped.api_rate, self.api_rate.as_ref(), rate_within);
        clamped.channel_rates.retain(|channel, wanted| {
            within(
                self.channel_rates.get(channel),
                wanted.as_ref(),
                rate_within,
            )
        });
        clamped.frequency_caps.retain(|category, wanted| {
            within(
                self.frequency_caps.get(category),
                wanted.as_ref(),
                cap_within,
            )
        });
        clamped
    }
}

/// Whether an override (`None`: none, `Some(None)`: lift) stays within `ceiling`.
fn within_override<T>(
    ceiling: Option<&T>,
    wanted: &Option<Option<T>>,
    lower: impl Fn(&T, &T) -> bool,
) -> bool {
    match wanted {
        None => true,
        Some(wanted) => within(ceiling, wanted.as_ref(), lower),
    }
}

/// Why an override would raise or lift `ceiling`, if it would.
fn excess<T: Display>(
    ceiling: Option<&T>,
    wanted: &Option<Option<T>>,
    lower: impl Fn(&T, &T) -> bool,
) -> Option<String> {
    if within_override(ceiling, wanted, &lower) {
        return None;
    }
    let ceiling = ceiling.expect("only a limit can be exceeded");
    Some(refusal(ceiling, wanted.as_ref().and_then(Option::as_ref)))
}
