//! A tenant's limits and usage: `tenantLimits`, `usage` and `setTenantLimits`.

use std::collections::BTreeMap;

use async_graphql::{
    Context, Enum, InputObject, Json, MaybeUndefined, Object, Result, SimpleObject,
};
use chrono::{DateTime, NaiveTime, Utc};

use super::types::Channel;
use super::{ApiError, actor, api, require};
use crate::commands::limits::{self, EffectiveLimits};
use crate::commands::tenants;
use crate::domain::values::{Category, TenantId, ValueError};
use crate::domain::{
    self, Budget, FrequencyCap, RateLimit, Scope, SoftCapFraction, TenantLimits, ValidationErrors,
};

#[derive(Enum, Copy, Clone, Eq, PartialEq, Debug)]
#[graphql(remote = "crate::domain::Quota")]
pub enum Quota {
    DailyMessages,
    MonthlyMessages,
    MonthlyCost,
}

#[derive(InputObject)]
pub struct RateInput {
    pub per_second: f64,
    pub burst: f64,
}

#[derive(InputObject)]
pub struct ChannelRateInput {
    pub channel: Channel,
    /// Null: this channel is not throttled for the tenant.
    pub rate: Option<RateInput>,
}

#[derive(InputObject)]
pub struct CapInput {
    pub count: i32,
    pub period_seconds: i32,
}

#[derive(InputObject)]
pub struct FrequencyCapInput {
    pub category: String,
    /// Null: this category is not capped for the tenant.
    pub cap: Option<CapInput>,
}

/// The tenant's overrides, replacing any set before. A field left out keeps
/// the configured default; a field set to null lifts that limit. Only an
/// operator tenant may raise or lift a limit the operator configured.
#[derive(InputObject)]
pub struct TenantLimitsInput {
    pub messages_per_day: MaybeUndefined<i64>,
    pub messages_per_month: MaybeUndefined<i64>,
    /// The share of a cap at which the tenant is warned, in (0, 1].
    pub soft_cap_fraction: Option<f64>,
    /// Estimated cost per UTC month, in the unit of the configured provider costs.
    pub monthly_budget: MaybeUndefined<f64>,
    pub monthly_soft_budget: MaybeUndefined<f64>,
    #[graphql(default)]
    pub channel_rates: Vec<ChannelRateInput>,
    #[graphql(default)]
    pub frequency_caps: Vec<FrequencyCapInput>,
    /// Requests per API key of the tenant.
    pub api_rate: MaybeUndefined<RateInput>,
}

fn maybe<T, U>(
    errors: &mut ValidationErrors,
    path: &str,
    value: MaybeUndefined<T>,
    parse: impl FnOnce(T) -> Result<U, ValueError>,
) -> Option<Option<U>> {
    match value {
        MaybeUndefined::Undefined => None,
        MaybeUndefined::Null => Some(None),
        MaybeUndefined::Value(value) => errors.check(path, parse(value)).map(Some),
    }
}

fn count(n: i64) -> Result<u64, ValueError> {
    u64::try_from(n).map_err(|_| ValueError::Invalid("must not be negative".into()))
}

impl TenantLimitsInput {
    fn parse(self) -> Result<TenantLimits, ValidationErrors> {
        let mut errors = ValidationErrors::default();
        let mut limits = TenantLimits {
            messages_per_day: maybe(
                &mut errors,
                "limits.messagesPerDay",
                self.messages_per_day,
                count,
            ),
            messages_per_month: maybe(
                &mut errors,
                "limits.messagesPerMonth",
                self.messages_per_month,
                count,
            ),
            soft_cap_fraction: self.soft_cap_fraction.and_then(|fraction| {
                errors.check(
                    "limits.softCapFraction",
                    SoftCapFraction::try_from(fraction),
                )
            }),
            monthly_budget: maybe(
                &mut errors,
                "limits.monthlyBudget",
                self.monthly_budget,
                Budget::try_from,
            ),
            monthly_soft_budget: maybe(
                &mut errors,
                "limits.monthlySoftBudget",
                self.monthly_soft_budget,
                Budget::try_from,
            ),
            channel_rates: BTreeMap::new(),
            frequency_caps: BTreeMap::new(),
            api_rate: maybe(&mut errors, "limits.apiRate", self.api_rate, |rate| {
                RateLimit::new(rate.per_second, rate.burst)
            }),
        };
        for (i, entry) in self.channel_rates.into_iter().enumerate() {
            let path = format!("limits.channelRates[{i}].rate");
            let rate = match entry.rate {
                None => Some(None),
                Some(rate) => errors
                    .check(path, RateLimit::new(rate.per_second, rate.burst))
                    .map(Some),
            };
            if let Some(rate) = rate {
                limits.channel_rates.insert(entry.channel.into(), rate);
            }
        }
        for (i, entry) in self.frequency_caps.into_iter().enumerate() {
            let category = errors.check(
                format!("limits.frequencyCaps[{i}].category"),
                Category::parse(&entry.category),
            );
            let cap = match entry.cap {
                None => Some(None),
                Some(cap) => errors
                    .check(
                        format!("limits.frequencyCaps[{i}].cap"),
                        u32::try_from(cap.count)
                            .ok()
                            .zip(u64::try_from(cap.period_seconds).ok())
                            .ok_or_else(|| ValueError::Invalid("must not be negative".into()))
                            .and_then(|(count, period)| FrequencyCap::new(count, period)),
                    )
                    .map(Some),
            };
            if let (Some(category), Some(cap)) = (category, cap) {
                limits.frequency_caps.insert(category, cap);
            }
        }
        if errors.is_empty() {
            Ok(limits)
        } else {
            Err(errors)
        }
    }
}

#[derive(SimpleObject)]
pub struct ChannelRate {
    pub channel: Channel,
    pub per_second: f64,
    pub burst: f64,
}

/// A token bucket: `burst` at once, refilled at `perSecond`.
#[derive(SimpleObject)]
pub struct Rate {
    pub per_second: f64,
    pub burst: f64,
}

#[derive(SimpleObject)]
pub struct ProviderRate {
    pub provider: String,
    pub per_second: f64,
    pub burst: f64,
}

#[derive(SimpleObject)]
#[graphql(name = "FrequencyCap")]
pub struct FrequencyCapObject {
    pub category: String,
    pub count: i64,
    pub period_seconds: i64,
}

/// The limits in force for the tenant: configured defaults with its overrides.
#[derive(SimpleObject)]
#[graphql(name = "TenantLimits")]
pub struct TenantLimitsObject {
    /// Null: unlimited.
    pub messages_per_day: Option<i64>,
    pub messages_per_month: Option<i64>,
    pub soft_cap_fraction: f64,
    pub monthly_budget: Option<f64>,
    pub monthly_soft_budget: Option<f64>,
    pub channel_rates: Vec<ChannelRate>,
    /// Shared by all tenants; set in the configuration only.
    pub provider_rates: Vec<ProviderRate>,
    pub frequency_caps: Vec<FrequencyCapObject>,
    /// Requests per API key; null: unlimited.
    pub api_rate: Option<Rate>,
    /// The tenant's own overrides as set (`null` values lift a limit).
    pub overrides: Json<serde_json::Value>,
}

fn as_count(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

impl TenantLimitsObject {
    fn new(limits: EffectiveLimits, overrides: &TenantLimits) -> TenantLimitsObject {
        TenantLimitsObject {
            messages_per_day: limits.messages_per_day.map(as_count),
            messages_per_month: limits.messages_per_month.map(as_count),
            soft_cap_fraction: limits.soft_cap_fraction,
            monthly_budget: limits.monthly_budget,
            monthly_soft_budget: limits.monthly_soft_budget,
            channel_rates: limits
                .channel_rates
                .iter()
                .map(|(channel, rate)| ChannelRate {
                    channel: (*channel).into(),
                    per_second: rate.per_second(),
                    burst: rate.burst(),
                })
                .collect(),
            provider_rates: limits
                .provider_rates
                .iter()
                .map(|(provider, rate)| ProviderRate {
                    provider: provider.clone(),
                    per_second: rate.per_second(),
                    burst: rate.burst(),
                })
                .collect(),
            frequency_caps: limits
                .frequency_caps
                .iter()
                .map(|(category, cap)| FrequencyCapObject {
                    category: category.to_string(),
                    count: cap.count().into(),
                    period_seconds: as_count(cap.period_seconds()),
                })
                .collect(),
            api_rate: limits.api_rate.map(|rate| Rate {
                per_second: rate.per_second(),
                burst: rate.burst(),
            }),
            overrides: Json(serde_json::to_value(overrides).unwrap_or_default()),
        }
    }
}

/// One quota's use in the current UTC period.
#[derive(SimpleObject)]
pub struct QuotaUsage {
    pub quota: Quota,
    /// The start of the period (a UTC day or month).
    pub period_start: DateTime<Utc>,
    pub resets_at: DateTime<Utc>,
    pub used: f64,
    /// Null: unlimited.
    pub limit: Option<f64>,
    /// Where the tenant is warned; null without a limit.
    pub soft_cap: Option<f64>,
}

async fn limits_of(
    ctx: &Context<'_>,
    tenant_id: &TenantId,
) -> Result<TenantLimitsObject, ApiError> {
    let api = api(ctx)?;
    let overrides = limits::tenant_limits(api.store.pool(), tenant_id).await?;
    let effective = api.limits.resolve(tenant_id, &overrides);
    Ok(TenantLimitsObject::new(effective, &overrides))
}

#[derive(Default)]
pub struct LimitsQuery;

#[Object]
impl LimitsQuery {
    /// The limits in force for the caller's tenant.
    async fn tenant_limits(&self, ctx: &Context<'_>) -> Result<TenantLimitsObject, ApiError> {
        let principal = require(ctx, Scope::Read)?;
        limits_of(ctx, &principal.tenant_id).await
    }

    /// The tenant's usage in the current UTC day and month against its caps.
    async fn usage(&self, ctx: &Context<'_>) -> Result<Vec<QuotaUsage>, ApiError> {
        let principal = require(ctx, Scope::Read)?;
        let api = api(ctx)?;
        let now = Utc::now();
        let limits = api
            .limits
            .effective(api.store.pool(), &principal.tenant_id)
            .await?;
        let usage = limits::usage(api.store.pool(), &principal.tenant_id, now).await?;
        Ok([
            domain::Quota::DailyMessages,
            domain::Quota::MonthlyMessages,
            domain::Quota::MonthlyCost,
        ]
        .into_iter()
        .map(|quota| QuotaUsage {
            quota: quota.into(),
            period_start: match quota {
                domain::Quota::DailyMessages => usage.day,
                _ => usage.month,
            }
            .and_time(NaiveTime::MIN)
            .and_utc(),
            resets_at: limits::resets_at(quota, now),
            used: usage.of(quota),
            limit: limits.cap(quota),
            soft_cap: limits.soft_cap(quota),
        })
        .collect())
    }
}

#[derive(Default)]
pub struct LimitsMutation;

#[Object]
impl LimitsMutation {
    /// Replaces the tenant's limit overrides (admin scope). Takes effect here
    /// at once and in other processes within seconds. Overrides may only
    /// lower the operator's limits: one that would raise or lift one is
    /// refused with VALIDATION, a field per override (named as `overrides`
    /// shows it) quoting the operator's value. Keys of an operator tenant
    /// (`operator_tenants`) may set any value.
    async fn set_tenant_limits(
        &self,
        ctx: &Context<'_>,
        limits: TenantLimitsInput,
    ) -> Result<TenantLimitsObject, ApiError> {
        let principal = require(ctx, Scope::Admin)?;
        let limits = limits.parse()?;
        let api = api(ctx)?;
        tenants::set_limits(
            &api.store,
            &principal.tenant_id,
            limits,
            &api.limits,
            &actor(principal),
        )
        .await?;
        api.limits.forget(&principal.tenant_id);
        limits_of(ctx, &principal.tenant_id).await
    }
}
