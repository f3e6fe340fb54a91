//! The `Tenant` aggregate: a tenant and its API keys.
//!
//! | command | legal when | records |
//! |---|---|---|
//! | Create | the tenant does not exist | TenantCreated |
//! | IssueApiKey | the tenant exists, the key id is new, at least one scope, a strong secret | ApiKeyIssued |
//! | RevokeApiKey | the key exists and is not revoked | ApiKeyRevoked |
//! | SetLimits | the tenant exists, the limits differ from its current ones, and a tenant's own raise or lift none of the operator's | TenantLimitsSet |
//!
//! `QuotaSoftCapReached` is recorded by the send path's quota check
//! (`commands::limits`), not decided here: the usage counters, not the
//! tenant's state, know when a cap is crossed. It changes no state.
//!
//! Only a key's SHA-256 is recorded. The secret is random and long, so a
//! plain hash suffices (no salt or stretching): there is no dictionary to
//! attack, and a lookup by hash stays one indexed read. Generating the secret
//! is the caller's job, as randomness is IO.

use std::collections::BTreeMap;

use chrono::{DateTime, NaiveDate, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::aggregate::Aggregate;
use super::domain_error::DomainError;
use super::limits_config::{LimitAuthority, LimitsConfig};
use super::scope::Scope;
use super::sha256_hex::sha256_hex;
use super::tagged_payload::upcast_current;
use super::values::{ApiKeyId, Category, Channel, DisplayName, TenantId, ValueError};

/// Characters of the secret kept in clear, so people can tell keys apart.
pub const API_KEY_PREFIX_CHARS: usize = 8;
/// 32 characters of any reasonable alphabet carry well over 128 bits.
pub const MIN_API_KEY_SECRET_CHARS: usize = 32;
pub const MAX_API_KEY_SECRET_CHARS: usize = 256;

/// The hex SHA-256 of an API key's secret, as stored and looked up.
pub fn hash_api_key(secret: &str) -> String {
    sha256_hex(secret.as_bytes())
}

/// A token bucket: it holds at most `burst` tokens and refills `per_second`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "RateLimitFields")]
pub struct RateLimit {
    per_second: f64,
    burst: f64,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RateLimitFields {
    per_second: f64,
    burst: f64,
}

impl TryFrom<RateLimitFields> for RateLimit {
    type Error = ValueError;

    fn try_from(fields: RateLimitFields) -> Result<Self, ValueError> {
        RateLimit::new(fields.per_second, fields.burst)
    }
}

impl RateLimit {
    pub fn new(per_second: f64, burst: f64) -> Result<RateLimit, ValueError> {
        if !(per_second.is_finite() && per_second > 0.0) {
            return Err(ValueError::Invalid(
                "per_second must be a positive number".into(),
            ));
        }
        // Below one token nothing could ever be granted.
        if !(burst.is_finite() && burst >= 1.0) {
            return Err(ValueError::Invalid("burst must be at least 1".into()));
        }
        Ok(RateLimit { per_second, burst })
    }

    pub fn per_second(&self) -> f64 {
        self.per_second
    }

    pub fn burst(&self) -> f64 {
        self.burst
    }
}

impl std::fmt::Display for RateLimit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/s (burst {})", self.per_second, self.burst)
    }
}

/// At most `count` messages per `period_seconds` to one recipient, e.g. 3
/// marketing messages a day.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "FrequencyCapFields")]
pub struct FrequencyCap {
    count: u32,
    period_seconds: u64,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FrequencyCapFields {
    count: u32,
    period_seconds: u64,
}

impl TryFrom<FrequencyCapFields> for FrequencyCap {
    type Error = ValueError;

    fn try_from(fields: FrequencyCapFields) -> Result<Self, ValueError> {
        FrequencyCap::new(fields.count, fields.period_seconds)
    }
}

impl FrequencyCap {
    pub fn new(count: u32, period_seconds: u64) -> Result<FrequencyCap, ValueError> {
        if count == 0 || period_seconds == 0 {
            return Err(ValueError::Invalid(
                "count and period_seconds must be at least 1".into(),
            ));
        }
        Ok(FrequencyCap {
            count,
            period_seconds,
        })
    }

    pub fn count(&self) -> u32 {
        self.count
    }

    pub fn period_seconds(&self) -> u64 {
        self.period_seconds
    }

    /// The cap as a token bucket: `count` at once, then refilled evenly over
    /// the period, so a recipient never gets more than `count` in any window
    /// of that length.
    pub fn as_rate(&self) -> RateLimit {
        RateLimit {
            per_second: f64::from(self.count) / self.period_seconds as f64,
            burst: f64::from(self.count),
        }
    }
}

impl std::fmt::Display for FrequencyCap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} per {} s", self.count, self.period_seconds)
    }
}

/// The share of a cap at which the tenant is warned, in (0, 1].
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "f64", into = "f64")]
pub struct SoftCapFraction(f64);

impl TryFrom<f64> for SoftCapFraction {
    type Error = ValueError;

    fn try_from(fraction: f64) -> Result<Self, ValueError> {
        if fraction > 0.0 && fraction <= 1.0 {
            Ok(SoftCapFraction(fraction))
        } else {
            Err(ValueError::Invalid("must be above 0 and at most 1".into()))
        }
    }
}

impl From<SoftCapFraction> for f64 {
    fn from(fraction: SoftCapFraction) -> f64 {
        fraction.0
    }
}

/// An amount of money per month, in the unit of `routing.costs`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "f64", into = "f64")]
pub struct Budget(f64);

impl TryFrom<f64> for Budget {
    type Error = ValueError;

    fn try_from(amount: f64) -> Result<Self, ValueError> {
        if amount.is_finite() && amount >= 0.0 {
            Ok(Budget(amount))
        } else {
            Err(ValueError::Invalid("must be a number of at least 0".into()))
        }
    }
}

impl From<Budget> for f64 {
    fn from(budget: Budget) -> f64 {
        budget.0
    }
}

impl std::fmt::Display for Budget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

/// A tenant's own limits over the configured defaults. A field left out
/// (`None`) keeps the default; `Some(None)` lifts that limit for the tenant.
/// Only an operator tenant may raise or lift one (`LimitsConfig::excesses`).
/// Provider rates are not here: they protect a provider account that every
/// tenant shares.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TenantLimits {
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "present"
    )]
    pub messages_per_day: Option<Option<u64>>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "present"
    )]
    pub messages_per_month: Option<Option<u64>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub soft_cap_fraction: Option<SoftCapFraction>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "present"
    )]
    pub monthly_budget: Option<Option<Budget>>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "present"
    )]
    pub monthly_soft_budget: Option<Option<Budget>>,
    /// Per channel; `None` leaves the channel unthrottled for this tenant.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub channel_rates: BTreeMap<Channel, Option<RateLimit>>,
    /// Per category; `None` lifts the category's cap for this tenant.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub frequency_caps: BTreeMap<Category, Option<FrequencyCap>>,
    /// Requests per API key of this tenant.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "present"
    )]
    pub api_rate: Option<Option<RateLimit>>,
}

/// Reads a field that is present, even as `null`, as `Some`: serde's default
/// would fold `null` into "absent", losing "lift this limit".
fn present<'de, D, T>(deserializer: D) -> Result<Option<Option<T>>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(deserializer).map(Some)
}

/// A usage counter that can be capped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Quota {
    DailyMessages,
    MonthlyMessages,
    MonthlyCost,
}

impl Quota {
    pub fn as_str(self) -> &'static str {
        match self {
            Quota::DailyMessages => "daily_messages",
            Quota::MonthlyMessages => "monthly_messages",
            Quota::MonthlyCost => "monthly_cost",
        }
    }
}

impl std::fmt::Display for Quota {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type")]
pub enum TenantEvent {
    TenantCreated {
        tenant_id: TenantId,
        name: DisplayName,
    },
    ApiKeyIssued {
        key_id: ApiKeyId,
        name: DisplayName,
        scopes: Vec<Scope>,
        key_hash: String,
        prefix: String,
    },
    ApiKeyRevoked {
        key_id: ApiKeyId,
    },
    /// The tenant's overrides from now on (the whole set, not a change).
    TenantLimitsSet {
        limits: TenantLimits,
    },
    /// Usage of `quota` reached its soft cap in the period starting at
    /// `period_start` (a UTC day or month); recorded once per period.
    QuotaSoftCapReached {
        quota: Quota,
        period_start: NaiveDate,
        used: f64,
        soft_cap: f64,
        limit: Option<f64>,
    },
}

impl TenantEvent {
    pub const SCHEMA_VERSION: i16 = 1;

    pub const EVENT_TYPES: [&'static str; 5] = [
        "TenantCreated",
        "ApiKeyIssued",
        "ApiKeyRevoked",
        "TenantLimitsSet",
        "QuotaSoftCapReached",
    ];

    pub fn event_type(&self) -> &'static str {
        match self {
            TenantEvent::TenantCreated { .. } => "TenantCreated",
            TenantEvent::ApiKeyIssued { .. } => "ApiKeyIssued",
            TenantEvent::ApiKeyRevoked { .. } => "ApiKeyRevoked",
            TenantEvent::TenantLimitsSet { .. } => "TenantLimitsSet",
            TenantEvent::QuotaSoftCapReached { .. } => "QuotaSoftCapReached",
        }
    }

    /// Reads a stored event of any schema version into today's shape.
    pub fn upcast(
        event_type: &str,
        schema_version: i16,
        payload: Value,
    ) -> Result<TenantEvent, DomainError> {
        upcast_current(
            event_type,
            schema_version,
            payload,
            &Self::EVENT_TYPES,
            Self::SCHEMA_VERSION,
        )
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum TenantCommand {
    Create {
        tenant_id: TenantId,
        name: DisplayName,
    },
    IssueApiKey {
        key_id: ApiKeyId,
        name: DisplayName,
        scopes: Vec<Scope>,
        /// Shown to the caller once and never recorded.
        secret: String,
    },
    RevokeApiKey {
        key_id: ApiKeyId,
    },
    /// Replaces the tenant's overrides; a tenant's own may not raise or
    /// lift what the operator set (`operator_limits`), an operator's may.
    SetLimits {
        limits: TenantLimits,
        authority: LimitAuthority,
        operator_limits: Box<LimitsConfig>,
    },
}

/// An issued key as the tenant knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiKey {
    pub name: DisplayName,
    /// Sorted, without duplicates.
    pub scopes: Vec<Scope>,
    pub key_hash: String,
    pub prefix: String,
    pub revoked: bool,
}

impl ApiKey {
    /// Whether this key may perform an action that needs `required`.
    pub fn allows(&self, required: Scope) -> bool {
        !self.revoked && self.scopes.iter().any(|scope| scope.allows(required))
    }
}

/// A tenant's state; `Default` is one not yet created.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Tenant {
    profile: Option<(TenantId, DisplayName)>,
    keys: BTreeMap<ApiKeyId, ApiKey>,
    limits: TenantLimits,
}

impl Tenant {
    pub fn id(&self) -> Option<&TenantId> {
        self.profile.as_ref().map(|(id, _)| id)
    }

    pub fn name(&self) -> Option<&DisplayName> {
        self.profile.as_ref().map(|(_, name)| name)
    }

    pub fn api_key(&self, key_id: ApiKeyId) -> Option<&ApiKey> {
        self.keys.get(&key_id)
    }

    pub fn api_keys(&self) -> impl Iterator<Item = (ApiKeyId, &ApiKey)> {
        self.keys.iter().map(|(id, key)| (*id, key))
    }

    pub fn limits(&self) -> &TenantLimits {
        &self.limits
    }

    pub fn apply(&mut self, event: &TenantEvent) {
        match event {
            TenantEvent::TenantCreated { tenant_id, name } => {
                self.profile = Some((tenant_id.clone(), name.clone()));
            }
            TenantEvent::ApiKeyIssued {
                key_id,
                name,
                scopes,
                key_hash,
                prefix,
            } => {
                self.keys.insert(
                    *key_id,
                    ApiKey {
                        name: name.clone(),
                        scopes: scopes.clone(),
                        key_hash: key_hash.clone(),
                        prefix: prefix.clone(),
                        revoked: false,
                    },
                );
            }
            TenantEvent::ApiKeyRevoked { key_id } => {
                if let Some(key) = self.keys.get_mut(key_id) {
                    key.revoked = true;
                }
            }
            TenantEvent::TenantLimitsSet { limits } => self.limits = limits.clone(),
            TenantEvent::QuotaSoftCapReached { .. } => {}
        }
    }

    pub fn decide(&self, command: TenantCommand) -> Result<Vec<TenantEvent>, DomainError> {
        match command {
            TenantCommand::Create { tenant_id, name } => {
                if self.profile.is_some() {
                    return Err(DomainError::TenantAlreadyCreated);
                }
                Ok(vec![TenantEvent::TenantCreated { tenant_id, name }])
            }
            TenantCommand::IssueApiKey {
                key_id,
                name,
                mut scopes,
                secret,
            } => {
                if self.profile.is_none() {
                    return Err(DomainError::TenantNotCreated);
                }
                if self.keys.contains_key(&key_id) {
                    return Err(DomainError::ApiKeyAlreadyIssued(key_id));
                }
                scopes.sort();
                scopes.dedup();
                if scopes.is_empty() {
                    return Err(DomainError::InvalidCommand(
                        "an API key needs at least one scope",
                    ));
                }
                let length = secret.chars().count();
                if !(MIN_API_KEY_SECRET_CHARS..=MAX_API_KEY_SECRET_CHARS).contains(&length)
                    || !secret.chars().all(|c| c.is_ascii_graphic())
                {
                    return Err(DomainError::InvalidCommand(
                        "an API key secret must be 32 to 256 printable ASCII characters",
                    ));
                }
                Ok(vec![TenantEvent::ApiKeyIssued {
                    key_id,
                    name,
                    scopes,
                    key_hash: hash_api_key(&secret),
                    prefix: secret.chars().take(API_KEY_PREFIX_CHARS).collect(),
                }])
            }
            TenantCommand::RevokeApiKey { key_id } => {
                if self.profile.is_none() {
                    return Err(DomainError::TenantNotCreated);
                }
                match self.keys.get(&key_id) {
                    None => Err(DomainError::UnknownApiKey(key_id)),
                    Some(key) if key.revoked => Err(DomainError::ApiKeyAlreadyRevoked(key_id)),
                    Some(_) => Ok(vec![TenantEvent::ApiKeyRevoked { key_id }]),
                }
            }
            TenantCommand::SetLimits {
                limits,
                authority,
                operator_limits,
            } => {
                if self.profile.is_none() {
                    return Err(DomainError::TenantNotCreated);
                }
                if authority == LimitAuthority::Tenant {
                    let excesses = operator_limits.excesses(&limits);
                    if !excesses.is_empty() {
                        return Err(DomainError::AboveOperatorLimits(excesses));
                    }
                }
                if limits == self.limits {
                    return Ok(Vec::new());
                }
                Ok(vec![TenantEvent::TenantLimitsSet { limits }])
            }
        }
    }
}

impl Aggregate for Tenant {
    type Command = TenantCommand;
    type Event = TenantEvent;
    type Error = DomainError;

    fn apply(&mut self, event: &TenantEvent) {
        Tenant::apply(self, event);
    }

    /// Tenant rules do not depend on the time.
    fn decide(
        &self,
        command: TenantCommand,
        _now: DateTime<Utc>,
    ) -> Result<Vec<TenantEvent>, DomainError> {
        Tenant::decide(self, command)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::FieldError;
    use crate::domain::given_when_then::given;

    const SECRET: &str = "hk_live_0123456789abcdefghijklmnopqrstuv";

    fn acme() -> TenantId {
        TenantId::parse("acme").unwrap()
    }

    fn name(s: &str) -> DisplayName {
        DisplayName::parse(s).unwrap()
    }

    fn key_id() -> ApiKeyId {
        ApiKeyId::from(uuid::Uuid::from_u128(7))
    }

    fn created() -> TenantEvent {
        TenantEvent::TenantCreated {
            tenant_id: acme(),
            name: name("Acme"),
        }
    }

    fn issued() -> TenantEvent {
        TenantEvent::ApiKeyIssued {
            key_id: key_id(),
            name: name("ci"),
            scopes: vec![Scope::Send, Scope::Read],
            key_hash: hash_api_key(SECRET),
            prefix: "hk_live_".into(),
        }
    }

    fn issue(scopes: Vec<Scope>, secret: &str) -> TenantCommand {
        TenantCommand::IssueApiKey {
            key_id: key_id(),
            name: name("ci"),
            scopes,
            secret: secret.into(),
        }
    }

    #[test]
    fn create_a_new_tenant() {
        given::<Tenant>([])
            .when(TenantCommand::Create {
                tenant_id: acme(),
                name: name("Acme"),
            })
            .then([created()]);
    }

    #[test]
    fn create_twice_is_refused() {
        given::<Tenant>([created()])
            .when(TenantCommand::Create {
                tenant_id: acme(),
                name: name("Acme"),
            })
            .then_error(DomainError::TenantAlreadyCreated);
    }

    #[test]
    fn issue_records_the_hash_and_prefix_never_the_secret() {
        given::<Tenant>([created()])
            .when(issue(vec![Scope::Read, Scope::Send, Scope::Read], SECRET))
            .then([issued()]);
    }

    #[test]
    fn issue_before_create_is_refused() {
        given::<Tenant>([])
            .when(issue(vec![Scope::Send], SECRET))
            .then_error(DomainError::TenantNotCreated);
    }

    #[test]
    fn issue_with_a_used_key_id_is_refused() {
        given::<Tenant>([created(), issued()])
            .when(issue(vec![Scope::Send], SECRET))
            .then_error(DomainError::ApiKeyAlreadyIssued(key_id()));
    }

    #[test]
    fn issue_without_scopes_or_with_a_weak_secret_is_refused() {
        given::<Tenant>([created()])
            .when(issue(vec![], SECRET))
            .then_error(DomainError::InvalidCommand(
                "an API key needs at least one scope",
            ));
        given::<Tenant>([created()])
            .when(issue(vec![Scope::Send], "short"))
            .then_error(DomainError::InvalidCommand(
                "an API key secret must be 32 to 256 printable ASCII characters",
            ));
    }

    #[test]
    fn revoke_an_issued_key() {
        given::<Tenant>([created(), issued()])
            .when(TenantCommand::RevokeApiKey { key_id: key_id() })
            .then([TenantEvent::ApiKeyRevoked { key_id: key_id() }]);
    }

    #[test]
    fn revoke_an_unknown_key_is_refused() {
        given::<Tenant>([created()])
            .when(TenantCommand::RevokeApiKey { key_id: key_id() })
            .then_error(DomainError::UnknownApiKey(key_id()));
    }

    #[test]
    fn revoke_twice_is_refused() {
        given::<Tenant>([
            created(),
            issued(),
            TenantEvent::ApiKeyRevoked { key_id: key_id() },
        ])
        .when(TenantCommand::RevokeApiKey { key_id: key_id() })
        .then_error(DomainError::ApiKeyAlreadyRevoked(key_id()));
    }

    #[test]
    fn revoked_keys_allow_nothing_and_admin_allows_everything() {
        let mut tenant = Tenant::fold(&[created(), issued()]);
        let key = tenant.api_key(key_id()).unwrap();
        assert!(key.allows(Scope::Send) && !key.allows(Scope::Ops));
        tenant.apply(&TenantEvent::ApiKeyRevoked { key_id: key_id() });
        assert!(!tenant.api_key(key_id()).unwrap().allows(Scope::Send));

        let admin = ApiKey {
            scopes: vec![Scope::Admin],
            revoked: false,
            ..tenant.api_key(key_id()).unwrap().clone()
        };
        assert!(Scope::ALL.into_iter().all(|scope| admin.allows(scope)));
    }

    #[test]
    fn every_event_round_trips_through_upcast() {
        for event in [
            created(),
            issued(),
            TenantEvent::ApiKeyRevoked { key_id: key_id() },
            limits_set(),
            TenantEvent::QuotaSoftCapReached {
                quota: Quota::DailyMessages,
                period_start: NaiveDate::from_ymd_opt(2026, 1, 1).unwrap(),
                used: 80.0,
                soft_cap: 80.0,
                limit: Some(100.0),
            },
        ] {
            let payload = serde_json::to_value(&event).unwrap();
            assert_eq!(
                TenantEvent::upcast(event.event_type(), TenantEvent::SCHEMA_VERSION, payload),
                Ok(event)
            );
        }
        assert!(TenantEvent::upcast("TenantDeleted", 1, serde_json::json!({})).is_err());
    }

    fn limits_set() -> TenantEvent {
        TenantEvent::TenantLimitsSet {
            limits: TenantLimits {
                messages_per_day: Some(Some(1_000)),
                messages_per_month: Some(None),
                monthly_budget: Some(Some(Budget::try_from(50.0).unwrap())),
                channel_rates: BTreeMap::from([(
                    Channel::Sms,
                    Some(RateLimit::new(5.0, 10.0).unwrap()),
                )]),
                frequency_caps: BTreeMap::from([(
                    Category::parse("marketing").unwrap(),
                    Some(FrequencyCap::new(3, 86_400).unwrap()),
                )]),
                ..TenantLimits::default()
            },
        }
    }

    #[test]
    fn set_limits_records_the_whole_set_and_the_same_set_again_records_nothing() {
        let TenantEvent::TenantLimitsSet { limits } = limits_set() else {
            unreachable!()
        };
        given::<Tenant>([created()])
            .when(set_by(LimitAuthority::Tenant, limits.clone()))
            .then([limits_set()]);
        given::<Tenant>([created(), limits_set()])
            .when(set_by(LimitAuthority::Tenant, limits.clone()))
            .then_nothing();
        given::<Tenant>([])
            .when(set_by(LimitAuthority::Tenant, limits))
            .then_error(DomainError::TenantNotCreated);
        assert_eq!(
            Tenant::fold(&[created(), limits_set()])
                .limits()
                .messages_per_day,
            Some(Some(1_000))
        );
    }

    /// The operator's `[limits]` in these tests.
    fn operator_limits() -> LimitsConfig {
        LimitsConfig {
            messages_per_day: Some(1_000),
            monthly_budget: Some(Budget::try_from(100.0).unwrap()),
            channel_rates: BTreeMap::from([(Channel::Sms, RateLimit::new(5.0, 10.0).unwrap())]),
            frequency_caps: BTreeMap::from([(
                Category::parse("marketing").unwrap(),
                FrequencyCap::new(3, 86_400).unwrap(),
            )]),
            api_rate: Some(RateLimit::new(100.0, 200.0).unwrap()),
            ..LimitsConfig::default()
        }
    }

    fn set_by(authority: LimitAuthority, limits: TenantLimits) -> TenantCommand {
        TenantCommand::SetLimits {
            limits,
            authority,
            operator_limits: Box::new(operator_limits()),
        }
    }

    fn rate(per_second: f64, burst: f64) -> Option<RateLimit> {
        Some(RateLimit::new(per_second, burst).unwrap())
    }

    /// What a tenant's own key asks for that goes past the operator.
    fn raised() -> TenantLimits {
        TenantLimits {
            messages_per_day: Some(Some(1_001)),
            messages_per_month: Some(Some(u64::MAX)),
            monthly_budget: Some(None),
            channel_rates: BTreeMap::from([(Channel::Sms, rate(50.0, 10.0))]),
            frequency_caps: BTreeMap::from([(Category::parse("marketing").unwrap(), None)]),
            api_rate: Some(rate(100.0, 201.0)),
            ..TenantLimits::default()
        }
    }

    #[test]
    fn a_tenant_lowers_the_operators_limits_and_sets_what_the_operator_left_open() {
        let lowered = TenantLimits {
            messages_per_day: Some(Some(10)),
            // Unlimited by the operator: any value, or none, is no raise.
            messages_per_month: Some(None),
            monthly_budget: Some(Some(Budget::try_from(100.0).unwrap())),
            monthly_soft_budget: Some(Some(Budget::try_from(500.0).unwrap())),
            soft_cap_fraction: Some(SoftCapFraction::try_from(1.0).unwrap()),
            channel_rates: BTreeMap::from([
                (Channel::Sms, rate(1.0, 10.0)),
                (Channel::Email, rate(1_000.0, 1_000.0)),
                (Channel::Push, None),
            ]),
            frequency_caps: BTreeMap::from([(
                Category::parse("marketing").unwrap(),
                Some(FrequencyCap::new(1, 172_800).unwrap()),
            )]),
            api_rate: Some(rate(2.0, 3.0)),
        };
        given::<Tenant>([created()])
            .when(set_by(LimitAuthority::Tenant, lowered.clone()))
            .then([TenantEvent::TenantLimitsSet { limits: lowered }]);
    }

    #[test]
    fn a_tenant_cannot_raise_or_lift_the_operators_limits() {
        let refused = |path: &str, message: &str| FieldError {
            path: path.into(),
            message: message.into(),
        };
        let outcome = Tenant::fold(&[created()])
            .decide(set_by(LimitAuthority::Tenant, raised()))
            .unwrap_err();
        let DomainError::AboveOperatorLimits(errors) = outcome else {
            panic!("{outcome:?}")
        };
        assert_eq!(
            errors.errors(),
            [
                refused(
                    "messages_per_day",
                    "1001 is above the operator's limit of 1000; only an operator tenant can raise it"
                ),
                refused(
                    "monthly_budget",
                    "cannot lift the operator's limit of 100; only an operator tenant can"
                ),
                refused(
                    "api_rate",
                    "100/s (burst 201) is above the operator's limit of 100/s (burst 200); only \
                     an operator tenant can raise it"
                ),
                refused(
                    "channel_rates.sms",
                    "50/s (burst 10) is above the operator's limit of 5/s (burst 10); only an \
                     operator tenant can raise it"
                ),
                refused(
                    "frequency_caps.marketing",
                    "cannot lift the operator's limit of 3 per 86400 s; only an operator tenant can"
                ),
            ]
        );
    }

    #[test]
    fn a_frequency_cap_is_lower_only_when_it_never_allows_more_in_any_window() {
        let cap = |count, period| TenantLimits {
            frequency_caps: BTreeMap::from([(
                Category::parse("marketing").unwrap(),
                Some(FrequencyCap::new(count, period).unwrap()),
            )]),
            ..TenantLimits::default()
        };
        // 3 a day is the operator's: 4 a day, or 3 an hour, is more.
        for more in [cap(4, 86_400), cap(3, 3_600), cap(6, 172_800)] {
            assert_eq!(operator_limits().excesses(&more).errors().len(), 1);
        }
        for less in [cap(3, 86_400), cap(2, 86_400), cap(3, 172_800)] {
            assert!(operator_limits().excesses(&less).is_empty());
        }
    }

    #[test]
    fn an_operator_tenant_sets_any_limit_even_none() {
        given::<Tenant>([created()])
            .when(set_by(LimitAuthority::Operator, raised()))
            .then([TenantEvent::TenantLimitsSet { limits: raised() }]);
    }

    #[test]
    fn an_absent_limit_keeps_the_default_and_null_lifts_it() {
        let limits: TenantLimits = serde_json::from_value(serde_json::json!({
            "messages_per_day": null,
            "channel_rates": { "email": null },
        }))
        .unwrap();
        assert_eq!(limits.messages_per_day, Some(None));
        assert_eq!(limits.messages_per_month, None);
        assert_eq!(limits.channel_rates.get(&Channel::Email), Some(&None));
        let round_trip: TenantLimits =
            serde_json::from_value(serde_json::to_value(&limits).unwrap()).unwrap();
        assert_eq!(round_trip, limits);
    }

    #[test]
    fn limit_values_refuse_what_could_never_work() {
        assert!(RateLimit::new(0.0, 10.0).is_err());
        assert!(RateLimit::new(f64::NAN, 10.0).is_err());
        assert!(RateLimit::new(1.0, 0.5).is_err());
        assert!(FrequencyCap::new(0, 60).is_err());
        assert!(FrequencyCap::new(3, 0).is_err());
        assert!(SoftCapFraction::try_from(0.0).is_err());
        assert!(SoftCapFraction::try_from(1.5).is_err());
        assert!(Budget::try_from(-1.0).is_err());
        assert!(
            serde_json::from_value::<RateLimit>(
                serde_json::json!({ "per_second": -1, "burst": 2 })
            )
            .is_err()
        );
        let cap = FrequencyCap::new(3, 86_400).unwrap().as_rate();
        assert_eq!(cap.burst(), 3.0);
        assert!((cap.per_second() * 86_400.0 - 3.0).abs() < 1e-9);
    }

    #[test]
    fn hashes_are_hex_sha256() {
        let hash = hash_api_key(SECRET);
        assert_eq!(hash.len(), 64);
        assert!(hash.chars().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(
            hash,
            hash_api_key("hk_live_0123456789abcdefghijklmnopqrstuw")
        );
    }
}
