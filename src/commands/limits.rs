//! Per-tenant quotas and budgets on the command side: the configured defaults,
//! a tenant's overrides over them, and the usage counters a send charges in
//! its own transaction. The dispatcher's token buckets are in
//! `workers::throttle`; their rates come from the same [`EffectiveLimits`].

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, Datelike, NaiveDate, Utc};
use sqlx::{PgConnection, PgExecutor, PgPool};

use super::pipeline::envelopes;
use super::{Actor, CommandError, tenants};
pub use crate::domain::LimitsConfig;
use crate::domain::values::{Category, Channel, TenantId};
use crate::domain::{FrequencyCap, LimitAuthority, Quota, RateLimit, TenantEvent, TenantLimits};
use crate::eventstore::{ExpectedVersion, StoreError, StoreTransaction, StreamAppend};
use crate::ttl_cache::TtlCache;

/// One tenant's limits: the configured defaults with its overrides on top.
#[derive(Debug, Clone, PartialEq)]
pub struct EffectiveLimits {
    /// Requests per API key; `None` is unlimited.
    pub api_rate: Option<RateLimit>,
    pub messages_per_day: Option<u64>,
    pub messages_per_month: Option<u64>,
    pub soft_cap_fraction: f64,
    pub monthly_budget: Option<f64>,
    pub monthly_soft_budget: Option<f64>,
    pub channel_rates: BTreeMap<Channel, RateLimit>,
    pub provider_rates: BTreeMap<String, RateLimit>,
    pub frequency_caps: BTreeMap<Category, FrequencyCap>,
}

/// An override's `Some(None)` lifts the limit, `None` keeps the default.
fn overlay<T: Clone>(default: Option<T>, tenant: &Option<Option<T>>) -> Option<T> {
    match tenant {
        Some(value) => value.clone(),
        None => default,
    }
}

fn overlay_map<K: Ord + Clone, V: Clone>(
    defaults: &BTreeMap<K, V>,
    tenant: &BTreeMap<K, Option<V>>,
) -> BTreeMap<K, V> {
    let mut merged = defaults.clone();
    for (key, value) in tenant {
        match value {
            Some(value) => merged.insert(key.clone(), value.clone()),
            None => merged.remove(key),
        };
    }
    merged
}

impl EffectiveLimits {
    /// A tenant's overrides count only as far as they lower `config`, whatever
    /// was stored (defence in depth: an override set before the rule, or
    /// under a higher `[limits]` than today's); an operator's stand as set.
    pub fn new(
        config: &LimitsConfig,
        tenant: &TenantLimits,
        authority: LimitAuthority,
    ) -> EffectiveLimits {
        let clamped;
        let tenant = match authority {
            LimitAuthority::Operator => tenant,
            LimitAuthority::Tenant => {
                clamped = config.clamp(tenant);
                &clamped
            }
        };
        EffectiveLimits {
            api_rate: overlay(config.api_rate, &tenant.api_rate),
            messages_per_day: overlay(config.messages_per_day, &tenant.messages_per_day),
            messages_per_month: overlay(config.messages_per_month, &tenant.messages_per_month),
            soft_cap_fraction: tenant
                .soft_cap_fraction
                .unwrap_or(config.soft_cap_fraction)
                .into(),
            monthly_budget: overlay(config.monthly_budget, &tenant.monthly_budget).map(f64::from),
            monthly_soft_budget: overlay(config.monthly_soft_budget, &tenant.monthly_soft_budget)
                .map(f64::from),
            channel_rates: overlay_map(&config.channel_rates, &tenant.channel_rates),
            provider_rates: config.provider_rates.clone(),
            frequency_caps: overlay_map(&config.frequency_caps, &tenant.frequency_caps),
        }
    }

    /// The cap on `quota`, if any.
    pub fn cap(&self, quota: Quota) -> Option<f64> {
        match quota {
            Quota::DailyMessages => self.messages_per_day.map(|n| n as f64),
            Quota::MonthlyMessages => self.messages_per_month.map(|n| n as f64),
            Quota::MonthlyCost => self.monthly_budget,
        }
    }

    /// Where the tenant is warned about `quota`, if anywhere.
    pub fn soft_cap(&self, quota: Quota) -> Option<f64> {
        match quota {
            Quota::MonthlyCost => self
                .monthly_soft_budget
                .or(self.monthly_budget.map(|b| b * self.soft_cap_fraction)),
            _ => self.cap(quota).map(|cap| cap * self.soft_cap_fraction),
        }
    }
}

/// A tenant's overrides as recorded (none is the default).
pub async fn tenant_limits(
    pool: &PgPool,
    tenant_id: &TenantId,
) -> Result<TenantLimits, CommandError> {
    let stored: Option<serde_json::Value> =
        sqlx::query_scalar("SELECT limits FROM tenant_limits WHERE tenant_id = $1")
            .bind(tenant_id.as_str())
            .fetch_optional(pool)
            .await?;
    stored
        .map(|limits| {
            serde_json::from_value(limits).map_err(|e| CommandError::CorruptEvent {
                position: 0,
                reason: format!("tenant_limits of {tenant_id} cannot be read: {e}"),
            })
        })
        .transpose()
        .map(Option::unwrap_or_default)
}

/// A tenant's overrides change this rarely and are read on every send.
const CACHE_TTL: Duration = Duration::from_secs(5);

/// The configured limits and a short per-process cache of each tenant's
/// effective ones, so a busy tenant costs one lookup every few seconds. An
/// override set in another process takes effect here within `CACHE_TTL`.
pub struct Limits {
    config: LimitsConfig,
    costs: CostTable,
    /// `operator_tenants`: their overrides are not held to `config`.
    operators: Vec<TenantId>,
    cache: TtlCache<TenantId, EffectiveLimits>,
}

impl Limits {
    pub fn new(config: LimitsConfig) -> Limits {
        Limits {
            config,
            costs: CostTable::default(),
            operators: Vec::new(),
            cache: TtlCache::new(CACHE_TTL),
        }
    }

    /// Takes the overrides of `operator_tenants` as set (ids that are not
    /// tenant ids name no tenant and are skipped).
    pub fn with_operators(mut self, operator_tenants: &[String]) -> Limits {
        self.operators = operator_tenants
            .iter()
            .filter_map(|id| TenantId::parse(id).ok())
            .collect();
        self
    }

    /// How far `tenant_id`'s own overrides may go.
    pub fn authority(&self, tenant_id: &TenantId) -> LimitAuthority {
        if self.operators.contains(tenant_id) {
            LimitAuthority::Operator
        } else {
            LimitAuthority::Tenant
        }
    }

    /// `tenant_id`'s limits with `overrides` (its own, as stored).
    pub fn resolve(&self, tenant_id: &TenantId, overrides: &TenantLimits) -> EffectiveLimits {
        EffectiveLimits::new(&self.config, overrides, self.authority(tenant_id))
    }

    /// Prices sends for the budget with `costs`.
    pub fn with_costs(mut self, costs: CostTable) -> Limits {
        self.costs = costs;
        self
    }

    pub fn costs(&self) -> &CostTable {
        &self.costs
    }

    pub fn config(&self) -> &LimitsConfig {
        &self.config
    }

    pub async fn effective(
        &self,
        pool: &PgPool,
        tenant_id: &TenantId,
    ) -> Result<EffectiveLimits, CommandError> {
        if let Some(limits) = self.cache.get(tenant_id) {
            return Ok(limits);
        }
        let limits = self.resolve(tenant_id, &tenant_limits(pool, tenant_id).await?);
        self.cache.insert(tenant_id.clone(), limits.clone());
        Ok(limits)
    }

    /// Forgets a tenant, so its new overrides take effect here at once.
    pub fn forget(&self, tenant_id: &TenantId) {
        self.cache.remove(tenant_id);
    }
}

/// The UTC periods `now` falls in: its day and the first day of its month.
fn periods(now: DateTime<Utc>) -> (NaiveDate, NaiveDate) {
    let day = now.date_naive();
    (day, day.with_day(1).expect("every month has a first day"))
}

/// When the period of `quota` that holds `now` ends.
pub fn resets_at(quota: Quota, now: DateTime<Utc>) -> DateTime<Utc> {
    let (day, month) = periods(now);
    let next = match quota {
        Quota::DailyMessages => day.succ_opt(),
        Quota::MonthlyMessages | Quota::MonthlyCost => {
            month.checked_add_months(chrono::Months::new(1))
        }
    };
    next.and_then(|d| d.and_hms_opt(0, 0, 0))
        .map(|t| t.and_utc())
        .unwrap_or(DateTime::<Utc>::MAX_UTC)
}

/// A tenant's usage in the periods holding some instant.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Usage {
    pub day: NaiveDate,
    pub month: NaiveDate,
    pub day_messages: u64,
    pub month_messages: u64,
    pub month_cost: f64,
}

impl Usage {
    pub fn of(&self, quota: Quota) -> f64 {
        match quota {
            Quota::DailyMessages => self.day_messages as f64,
            Quota::MonthlyMessages => self.month_messages as f64,
            Quota::MonthlyCost => self.month_cost,
        }
    }
}

pub async fn usage<'e>(
    executor: impl PgExecutor<'e>,
    tenant_id: &TenantId,
    now: DateTime<Utc>,
) -> Result<Usage, sqlx::Error> {
    let (day, month) = periods(now);
    let row: Option<(NaiveDate, i64, i64, f64)> = sqlx::query_as(
        "SELECT day, day_messages, month_messages, month_cost::float8 FROM tenant_usage \
         WHERE tenant_id = $1 AND month = $2",
    )
    .bind(tenant_id.as_str())
    .bind(month)
    .fetch_optional(executor)
    .await?;
    let (counted_day, day_messages, month_messages, month_cost) = row.unwrap_or((day, 0, 0, 0.0));
    Ok(Usage {
        day,
        month,
        // A count of an earlier day is not today's.
        day_messages: if counted_day >= day {
            day_messages as u64
        } else {
            0
        },
        month_messages: month_messages as u64,
        month_cost,
    })
}

/// What one send uses up.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Charge {
    pub messages: u32,
    /// Estimated from `routing.costs`; 0 where no cost is configured.
    pub estimated_cost: f64,
}

/// A soft cap that this charge crossed (its warning is in the transaction).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SoftCapReached {
    pub quota: Quota,
    pub used: f64,
    pub soft_cap: f64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct QuotaOutcome {
    /// Usage after this charge.
    pub usage: Usage,
    /// Usually empty; each soft cap appears in exactly one charge per period.
    pub soft_caps_reached: Vec<SoftCapReached>,
}

impl QuotaOutcome {
    /// Counts the crossings in `tenant_quota_soft_cap_total`; call after the
    /// commit, as a rolled-back send crosses nothing.
    pub fn record_metrics(&self, tenant_id: &TenantId) {
        for reached in &self.soft_caps_reached {
            metrics::counter!(
                "tenant_quota_soft_cap_total",
                "tenant" => tenant_id.to_string(),
                "quota" => reached.quota.as_str()
            )
            .increment(1);
        }
    }
}

/// Checks and counts every quota in one upsert of the tenant's month row.
/// The row lock makes concurrent charges queue, and each re-checks the caps
/// against the row as the previous one left it (READ COMMITTED re-evaluates
/// the conflict's WHERE on the newest version), so two sends can never both
/// take the last unit. A refused charge writes nothing.
const CHARGE: &str = r#"
INSERT INTO tenant_usage AS u (tenant_id, month, day, day_messages, month_messages, month_cost)
SELECT $1, $2, $3, $4, $4, $5::float8::numeric
WHERE ($6::int8 IS NULL OR $4 <= $6)
  AND ($7::int8 IS NULL OR $4 <= $7)
  AND ($8::float8 IS NULL OR $5::float8::numeric <= $8::float8::numeric)
ON CONFLICT (tenant_id, month) DO UPDATE SET
    -- A process whose clock is still on yesterday counts into today.
    day = greatest(u.day, EXCLUDED.day),
    day_messages = CASE WHEN EXCLUDED.day <= u.day THEN u.day_messages ELSE 0 END + EXCLUDED.day_messages,
    month_messages = u.month_messages + EXCLUDED.month_messages,
    month_cost = u.month_cost + EXCLUDED.month_cost
WHERE ($6::int8 IS NULL
       OR CASE WHEN EXCLUDED.day <= u.day THEN u.day_messages ELSE 0 END + EXCLUDED.day_messages <= $6)
  AND ($7::int8 IS NULL OR u.month_messages + EXCLUDED.month_messages <= $7)
  AND ($8::float8 IS NULL OR u.month_cost + EXCLUDED.month_cost <= $8::float8::numeric)
RETURNING day_messages, month_messages, month_cost::float8, (month_cost - $5::float8::numeric)::float8
"#;

/// Charges a send against the tenant's quotas and budget, inside the send's
/// transaction (so a rolled-back send counts nothing). Refuses with
/// `CommandError::QuotaExceeded` when a hard cap would be passed, counting
/// nothing. When the charge crosses a soft cap, appends `QuotaSoftCapReached`
/// to the tenant's stream in the same transaction and reports it in the outcome.
///
/// Call it as late in the transaction as possible: the tenant's usage row
/// stays locked until the commit, so the tenant's sends queue behind it.
pub async fn consume_quota(
    tx: &mut StoreTransaction,
    tenant_id: &TenantId,
    limits: &EffectiveLimits,
    charge: Charge,
    now: DateTime<Utc>,
    actor: &Actor,
) -> Result<QuotaOutcome, CommandError> {
    let (day, month) = periods(now);
    let as_i64 = |cap: Option<u64>| cap.map(|n| i64::try_from(n).unwrap_or(i64::MAX));
    // A NaN would poison the month's total for good, and a negative cost would refund it.
    let charge = Charge {
        estimated_cost: if charge.estimated_cost.is_finite() {
            charge.estimated_cost.max(0.0)
        } else {
            0.0
        },
        ..charge
    };
    let charged: Option<(i64, i64, f64, f64)> = sqlx::query_as(CHARGE)
        .bind(tenant_id.as_str())
        .bind(month)
        .bind(day)
        .bind(i64::from(charge.messages))
        .bind(charge.estimated_cost)
        .bind(as_i64(limits.messages_per_day))
        .bind(as_i64(limits.messages_per_month))
        .bind(limits.monthly_budget)
        .fetch_optional(tx.connection())
        .await?;
    let Some((day_messages, month_messages, month_cost, cost_before)) = charged else {
        return Err(refusal(tx.connection(), tenant_id, limits, charge, now).await?);
    };
    let usage = Usage {
        day,
        month,
        day_messages: day_messages as u64,
        month_messages: month_messages as u64,
        month_cost,
    };
    let messages = f64::from(charge.messages);
    let soft_caps_reached: Vec<SoftCapReached> = [
        (
            Quota::DailyMessages,
            usage.of(Quota::DailyMessages) - messages,
        ),
        (
            Quota::MonthlyMessages,
            usage.of(Quota::MonthlyMessages) - messages,
        ),
        (Quota::MonthlyCost, cost_before),
    ]
    .into_iter()
    .filter_map(|(quota, before)| {
        let soft_cap = limits.soft_cap(quota)?;
        let used = usage.of(quota);
        // Counts only grow within a period and charges are serialised, so
        // exactly one charge per period sees the cap between before and after.
        (before < soft_cap && used >= soft_cap).then_some(SoftCapReached {
            quota,
            used,
            soft_cap,
        })
    })
    .collect();
    if !soft_caps_reached.is_empty() {
        record_soft_caps(tx, tenant_id, limits, &soft_caps_reached, &usage, actor).await?;
    }
    Ok(QuotaOutcome {
        usage,
        soft_caps_reached,
    })
}

/// Records the warnings on the tenant's stream. The callback to the tenant's
/// endpoints is not built yet: it should follow `QuotaSoftCapReached` on the
/// log from a checkpoint, so each warning goes out once even across restarts.
async fn record_soft_caps(
    tx: &mut StoreTransaction,
    tenant_id: &TenantId,
    limits: &EffectiveLimits,
    reached: &[SoftCapReached],
    usage: &Usage,
    actor: &Actor,
) -> Result<(), CommandError> {
    let events: Vec<TenantEvent> = reached
        .iter()
        .map(|r| TenantEvent::QuotaSoftCapReached {
            quota: r.quota,
            period_start: match r.quota {
                Quota::DailyMessages => usage.day,
                Quota::MonthlyMessages | Quota::MonthlyCost => usage.month,
            },
            used: r.used,
            soft_cap: r.soft_cap,
            limit: limits.cap(r.quota),
        })
        .collect();
    let events = envelopes(&events, tenant_id.as_str(), actor)?;
    // Any version: sends do not read the tenant's stream. The tenant's usage
    // row lock already orders the warnings of its concurrent sends.
    tx.append(&[StreamAppend {
        stream_id: tenants::stream_id(tenant_id),
        expected: ExpectedVersion::Any,
        events,
    }])
    .await?;
    Ok(())
}

/// Which cap refused a charge, read back after the refusal.
async fn refusal(
    conn: &mut PgConnection,
    tenant_id: &TenantId,
    limits: &EffectiveLimits,
    charge: Charge,
    now: DateTime<Utc>,
) -> Result<CommandError, CommandError> {
    let usage = usage(conn, tenant_id, now).await?;
    let wanted = |quota| match quota {
        Quota::MonthlyCost => charge.estimated_cost,
        _ => f64::from(charge.messages),
    };
    // Counts only grow within a period, so the cap that refused still does.
    let exceeded = [
        Quota::DailyMessages,
        Quota::MonthlyMessages,
        Quota::MonthlyCost,
    ]
    .into_iter()
    .find_map(|quota| {
        let limit = limits.cap(quota)?;
        (usage.of(quota) + wanted(quota) > limit).then_some((quota, limit))
    });
    Ok(match exceeded {
        Some((quota, limit)) => CommandError::QuotaExceeded {
            quota,
            limit,
            resets_at: resets_at(quota, now),
        },
        // Only when the month's row vanished under us: nothing was counted, retry.
        None => CommandError::Store(StoreError::TransactionAborted),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{Budget, SoftCapFraction};

    fn config() -> LimitsConfig {
        LimitsConfig {
            messages_per_day: Some(1_000),
            messages_per_month: Some(20_000),
            monthly_budget: Some(Budget::try_from(100.0).unwrap()),
            channel_rates: BTreeMap::from([
                (Channel::Email, RateLimit::new(50.0, 100.0).unwrap()),
                (Channel::Sms, RateLimit::new(5.0, 10.0).unwrap()),
            ]),
            frequency_caps: BTreeMap::from([(
                Category::parse("marketing").unwrap(),
                FrequencyCap::new(3, 86_400).unwrap(),
            )]),
            ..LimitsConfig::default()
        }
    }

    #[test]
    fn an_operators_overrides_replace_lift_or_keep_each_default() {
        let overrides = TenantLimits {
            messages_per_day: Some(Some(10)),
            messages_per_month: Some(None),
            soft_cap_fraction: Some(SoftCapFraction::try_from(0.5).unwrap()),
            channel_rates: BTreeMap::from([
                (Channel::Sms, None),
                (Channel::Push, Some(RateLimit::new(1.0, 1.0).unwrap())),
            ]),
            ..TenantLimits::default()
        };
        let limits = EffectiveLimits::new(&config(), &overrides, LimitAuthority::Operator);
        assert_eq!(limits.messages_per_day, Some(10));
        assert_eq!(limits.messages_per_month, None);
        assert_eq!(limits.monthly_budget, Some(100.0));
        assert_eq!(
            limits.channel_rates.keys().copied().collect::<Vec<_>>(),
            vec![Channel::Email, Channel::Push]
        );
        assert_eq!(limits.frequency_caps.len(), 1);
        assert_eq!(limits.soft_cap(Quota::DailyMessages), Some(5.0));
        assert_eq!(limits.soft_cap(Quota::MonthlyMessages), None);
        assert_eq!(limits.soft_cap(Quota::MonthlyCost), Some(50.0));
    }

    #[test]
    fn a_tenants_stored_overrides_never_raise_or_lift_the_operators_limits() {
        // As stored before the rule, or under a higher `[limits]` than today's.
        let overrides = TenantLimits {
            messages_per_day: Some(Some(5_000)),
            messages_per_month: Some(None),
            monthly_budget: Some(Some(Budget::try_from(40.0).unwrap())),
            channel_rates: BTreeMap::from([
                (Channel::Sms, None),
                (Channel::Email, Some(RateLimit::new(500.0, 100.0).unwrap())),
                (Channel::Push, Some(RateLimit::new(1.0, 1.0).unwrap())),
            ]),
            frequency_caps: BTreeMap::from([(Category::parse("marketing").unwrap(), None)]),
            api_rate: Some(Some(RateLimit::new(10_000.0, 1.0).unwrap())),
            ..TenantLimits::default()
        };
        let limits = EffectiveLimits::new(&config(), &overrides, LimitAuthority::Tenant);
        assert_eq!(limits.messages_per_day, Some(1_000));
        assert_eq!(limits.messages_per_month, Some(20_000));
        assert_eq!(limits.monthly_budget, Some(40.0), "a lower budget stands");
        assert_eq!(limits.channel_rates, {
            let mut rates = config().channel_rates;
            rates.insert(Channel::Push, RateLimit::new(1.0, 1.0).unwrap());
            rates
        });
        assert_eq!(limits.frequency_caps, config().frequency_caps);
        assert_eq!(limits.api_rate, config().api_rate);
    }

    #[test]
    fn periods_reset_at_the_next_utc_day_and_month() {
        let now: DateTime<Utc> = "2026-12-31T23:59:59Z".parse().unwrap();
        assert_eq!(
            resets_at(Quota::DailyMessages, now),
            "2027-01-01T00:00:00Z".parse::<DateTime<Utc>>().unwrap()
        );
        assert_eq!(
            resets_at(Quota::MonthlyCost, "2026-02-10T12:00:00Z".parse().unwrap()),
            "2026-03-01T00:00:00Z".parse::<DateTime<Utc>>().unwrap()
        );
    }

    #[test]
    fn the_config_reads_from_toml_and_refuses_bad_values() {
        let config: LimitsConfig = toml::from_str(
            r#"
            messages_per_day = 1000
            soft_cap_fraction = 0.9
            [channel_rates]
            sms = { per_second = 5, burst = 10 }
            [provider_rates]
            twilio = { per_second = 100, burst = 100 }
            [frequency_caps]
            marketing = { count = 3, period_seconds = 86400 }
            "#,
        )
        .unwrap();
        assert_eq!(config.messages_per_day, Some(1000));
        assert_eq!(config.provider_rates["twilio"].per_second(), 100.0);
        assert!(toml::from_str::<LimitsConfig>("soft_cap_fraction = 2.0").is_err());
        assert!(
            toml::from_str::<LimitsConfig>("[channel_rates]\nfax = { per_second = 1, burst = 1 }")
                .is_err()
        );
        assert!(toml::from_str::<LimitsConfig>("messages_per_week = 1").is_err());
        assert_eq!(
            toml::from_str::<LimitsConfig>("api_rate = { per_second = 2, burst = 3 }")
                .unwrap()
                .api_rate,
            Some(RateLimit::new(2.0, 3.0).unwrap())
        );
        let shown = toml::to_string(&LimitsConfig::default()).unwrap();
        assert_eq!(
            toml::from_str::<LimitsConfig>(&shown).unwrap(),
            LimitsConfig::default()
        );
    }
}

/// What one message is expected to cost, for the monthly budget: the price of
/// the first provider of the send's first channel (from `routing.costs`), by
/// the destination's country where one is priced, else its `default`. The
/// real route may differ after a failover; the budget is an estimate.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CostTable {
    /// Per channel: the first provider's prices by country, with `default`.
    pub by_channel: BTreeMap<Channel, BTreeMap<String, f64>>,
}

impl CostTable {
    pub fn estimate(&self, request: &crate::domain::NotificationRequest) -> f64 {
        let Some(channel) = request.channels.first() else {
            return 0.0;
        };
        let Some(prices) = self.by_channel.get(channel) else {
            return 0.0;
        };
        let country = match channel {
            Channel::Sms => request.recipient.phone.as_ref().and_then(|p| p.country()),
            _ => None,
        };
        country
            .and_then(|country| prices.get(&country))
            .or_else(|| prices.get("default"))
            .copied()
            .unwrap_or(0.0)
    }
}

impl EffectiveLimits {
    /// Whether any quota or budget applies: only then is a send charged
    /// (charging serialises the tenant's sends on its usage row).
    pub fn has_quota(&self) -> bool {
        self.messages_per_day.is_some()
            || self.messages_per_month.is_some()
            || self.monthly_budget.is_some()
    }
}
