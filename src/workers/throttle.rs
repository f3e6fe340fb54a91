//! Token buckets in PostgreSQL, shared by every dispatcher process: per
//! tenant and channel, per provider instance, and per recipient and category
//! (frequency caps). Time is the database's clock, so processes whose clocks
//! disagree still refill a bucket at one rate.

use std::collections::BTreeMap;

use chrono::{DateTime, TimeDelta, Utc};
use sqlx::PgExecutor;

use crate::commands::limits::EffectiveLimits;
use crate::domain::RateLimit;
use crate::domain::values::{Category, Channel, RecipientId, TenantId};

/// Up to `wanted` tokens from the bucket `key`, which has the shape `rate`
/// (positive by construction, so no bucket can drain itself).
#[derive(Debug, Clone, PartialEq)]
pub struct BucketRequest {
    pub key: String,
    pub rate: RateLimit,
    pub wanted: u32,
}

impl BucketRequest {
    pub fn new(key: String, rate: RateLimit, wanted: u32) -> BucketRequest {
        BucketRequest { key, rate, wanted }
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Grant {
    /// Between 0 and `wanted`.
    pub granted: u32,
    /// When the bucket holds a whole token again (now, if it still does).
    pub next_token_at: DateTime<Utc>,
}

/// Refills each bucket by the time since its last take and grants up to
/// `wanted` whole tokens, for every key in one statement. Each row is locked
/// while it is updated, and the update is computed from the row as the
/// previous take left it, so concurrent takes never grant more than
/// `burst + rate × elapsed` between them. A new bucket starts full.
///
/// The bucket's clock never moves back: a take that read the clock before a
/// concurrent one but locked the row after it refills nothing.
///
/// A bulk (LOW) take gets nothing while the bucket is held for HIGH and
/// NORMAL attempts that were refused and wait for its tokens
/// ([`hold_for_urgent`]), so a LOW message never takes the token a waiting
/// HIGH one was promised.
const TAKE: &str = r#"
WITH clock AS MATERIALIZED (SELECT clock_timestamp() AS now)
INSERT INTO token_buckets AS b (key, tokens, updated_at, rate_per_second, burst, granted)
SELECT r.key, r.burst - least(r.wanted, floor(r.burst)), clock.now, r.rate, r.burst,
       least(r.wanted, floor(r.burst))
FROM unnest($1::text[], $2::float8[], $3::float8[], $4::int8[]) AS r(key, rate, burst, wanted)
CROSS JOIN clock
-- One lock order for every take, so takes of several keys cannot deadlock.
ORDER BY r.key
ON CONFLICT (key) DO UPDATE SET
    -- EXCLUDED.granted is what was wanted, capped at the burst.
    tokens = token_bucket_level(b.tokens, b.updated_at, EXCLUDED.rate_per_second, EXCLUDED.burst, EXCLUDED.updated_at)
           - CASE WHEN $5 AND b.urgent_until > EXCLUDED.updated_at THEN 0
                  ELSE least(EXCLUDED.granted, floor(token_bucket_level(b.tokens, b.updated_at, EXCLUDED.rate_per_second, EXCLUDED.burst, EXCLUDED.updated_at))) END,
    granted = CASE WHEN $5 AND b.urgent_until > EXCLUDED.updated_at THEN 0
                   ELSE least(EXCLUDED.granted, floor(token_bucket_level(b.tokens, b.updated_at, EXCLUDED.rate_per_second, EXCLUDED.burst, EXCLUDED.updated_at))) END,
    updated_at = greatest(b.updated_at, EXCLUDED.updated_at),
    rate_per_second = EXCLUDED.rate_per_second,
    burst = EXCLUDED.burst
RETURNING b.key, b.granted, b.tokens, b.updated_at AS at,
          CASE WHEN $5 THEN b.urgent_until END AS held
"#;

/// One entry per distinct key: a statement may update a row only once.
struct Merged {
    keys: Vec<String>,
    rates: Vec<f64>,
    bursts: Vec<f64>,
    wanted: Vec<i64>,
}

fn merge(requests: &[BucketRequest]) -> Merged {
    let mut by_key: BTreeMap<&str, (f64, f64, i64)> = BTreeMap::new();
    for request in requests {
        let entry = by_key.entry(&request.key).or_insert((
            request.rate.per_second(),
            request.rate.burst(),
            0,
        ));
        entry.2 += i64::from(request.wanted);
    }
    let mut merged = Merged {
        keys: Vec::with_capacity(by_key.len()),
        rates: Vec::with_capacity(by_key.len()),
        bursts: Vec::with_capacity(by_key.len()),
        wanted: Vec::with_capacity(by_key.len()),
    };
    for (key, (rate, burst, wanted)) in by_key {
        merged.keys.push(key.to_string());
        merged.rates.push(rate);
        merged.bursts.push(burst);
        merged.wanted.push(wanted);
    }
    merged
}

/// When a bucket left with `tokens` at `at` holds a whole token again.
fn next_token_at(tokens: f64, at: DateTime<Utc>, rate_per_second: f64) -> DateTime<Utc> {
    if tokens >= 1.0 {
        return at;
    }
    let wait = (1.0 - tokens) / rate_per_second;
    TimeDelta::try_milliseconds((wait * 1000.0).ceil() as i64)
        .and_then(|wait| at.checked_add_signed(wait))
        .unwrap_or(DateTime::<Utc>::MAX_UTC)
}

/// Takes tokens for every request at once; one grant per request, in order.
/// Requests naming the same key share its bucket, first come first served.
pub async fn take<'e>(
    executor: impl PgExecutor<'e>,
    requests: &[BucketRequest],
) -> Result<Vec<Grant>, sqlx::Error> {
    take_in(executor, requests, false).await
}

/// [`take`] for LOW-priority messages: they yield to held buckets.
pub async fn take_bulk<'e>(
    executor: impl PgExecutor<'e>,
    requests: &[BucketRequest],
) -> Result<Vec<Grant>, sqlx::Error> {
    take_in(executor, requests, true).await
}

/// What one take left in a bucket.
#[derive(sqlx::FromRow)]
struct Taken {
    key: String,
    /// Granted and not yet shared out among the requests naming the key.
    granted: i64,
    tokens: f64,
    at: DateTime<Utc>,
    /// For a bulk take: until when the bucket is held for urgent attempts.
    held: Option<DateTime<Utc>>,
}

async fn take_in<'e>(
    executor: impl PgExecutor<'e>,
    requests: &[BucketRequest],
    bulk: bool,
) -> Result<Vec<Grant>, sqlx::Error> {
    if requests.is_empty() {
        return Ok(Vec::new());
    }
    let merged = merge(requests);
    let rows: Vec<Taken> = sqlx::query_as(TAKE)
        .bind(&merged.keys)
        .bind(&merged.rates)
        .bind(&merged.bursts)
        .bind(&merged.wanted)
        .bind(bulk)
        .fetch_all(executor)
        .await?;
    let mut left: BTreeMap<String, Taken> = rows
        .into_iter()
        .map(|taken| (taken.key.clone(), taken))
        .collect();
    Ok(requests
        .iter()
        .map(|request| {
            let taken = left
                .get_mut(&request.key)
                .expect("the statement returns every key it was given");
            let share = taken.granted.min(i64::from(request.wanted));
            taken.granted -= share;
            // A request left short waits for the next token like the bucket
            // does, and a held bucket's next token is not for bulk.
            let next = if share == i64::from(request.wanted) && taken.tokens >= 1.0 {
                taken.at
            } else {
                next_token_at(taken.tokens, taken.at, request.rate.per_second())
            };
            Grant {
                granted: share as u32,
                next_token_at: taken.held.map_or(next, |held| next.max(held)),
            }
        })
        .collect())
}

/// Holds each bucket for HIGH and NORMAL attempts until the given time,
/// when the last of those refused now comes back for its token.
pub async fn hold_for_urgent<'e>(
    executor: impl PgExecutor<'e>,
    holds: &[(String, DateTime<Utc>)],
) -> Result<(), sqlx::Error> {
    if holds.is_empty() {
        return Ok(());
    }
    let (keys, until): (Vec<&str>, Vec<DateTime<Utc>>) =
        holds.iter().map(|(key, at)| (key.as_str(), *at)).unzip();
    sqlx::query(
        "UPDATE token_buckets b SET urgent_until = greatest(b.urgent_until, h.until) \
         FROM (SELECT key, max(until) AS until FROM unnest($1::text[], $2::timestamptz[]) AS h(key, until) GROUP BY key) h \
         WHERE b.key = h.key",
    )
    .bind(&keys)
    .bind(&until)
    .execute(executor)
    .await?;
    Ok(())
}

/// The bucket of a tenant's messages on one channel.
pub fn tenant_channel_key(tenant_id: &TenantId, channel: Channel) -> String {
    format!("tenant:{tenant_id}:channel:{channel}")
}

/// The bucket of a provider instance, shared by all tenants.
pub fn provider_key(provider: &str) -> String {
    format!("provider:{provider}")
}

/// The bucket of one recipient's messages of one category. The recipient id
/// is free text, so it goes last: tenant ids and categories hold no `:`.
pub fn recipient_category_key(
    tenant_id: &TenantId,
    category: &Category,
    recipient: &RecipientId,
) -> String {
    format!("recipient:{tenant_id}:{category}:{}", recipient.as_str())
}

/// One message about to go out, as far as throttling cares.
#[derive(Debug, Clone, Copy)]
pub struct Dispatch<'a> {
    pub tenant_id: &'a TenantId,
    pub channel: Channel,
    /// The provider instance chosen for it.
    pub provider: &'a str,
    /// Without a recipient id there is no frequency cap: addresses are
    /// personal data and stay out of bucket keys.
    pub recipient: Option<&'a RecipientId>,
    pub category: Option<&'a Category>,
}

/// The buckets one dispatch must take `wanted` tokens from, under the
/// tenant's limits; a limit that is not set names no bucket.
pub fn buckets(
    limits: &EffectiveLimits,
    dispatch: &Dispatch<'_>,
    wanted: u32,
) -> Vec<BucketRequest> {
    let tenant_channel = limits.channel_rates.get(&dispatch.channel).map(|rate| {
        BucketRequest::new(
            tenant_channel_key(dispatch.tenant_id, dispatch.channel),
            *rate,
            wanted,
        )
    });
    let provider = limits
        .provider_rates
        .get(dispatch.provider)
        .map(|rate| BucketRequest::new(provider_key(dispatch.provider), *rate, wanted));
    let recipient_category =
        dispatch
            .recipient
            .zip(dispatch.category)
            .and_then(|(recipient, category)| {
                let cap = limits.frequency_caps.get(category)?;
                Some(BucketRequest::new(
                    recipient_category_key(dispatch.tenant_id, category, recipient),
                    cap.as_rate(),
                    wanted,
                ))
            });
    [tenant_channel, provider, recipient_category]
        .into_iter()
        .flatten()
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::commands::limits::LimitsConfig;
    use crate::domain::{FrequencyCap, LimitAuthority, TenantLimits};

    #[test]
    fn a_dispatch_takes_from_each_configured_bucket() {
        let config = LimitsConfig {
            channel_rates: BTreeMap::from([(Channel::Sms, RateLimit::new(5.0, 10.0).unwrap())]),
            provider_rates: BTreeMap::from([(
                "twilio".to_string(),
                RateLimit::new(100.0, 100.0).unwrap(),
            )]),
            frequency_caps: BTreeMap::from([(
                Category::parse("marketing").unwrap(),
                FrequencyCap::new(3, 86_400).unwrap(),
            )]),
            ..LimitsConfig::default()
        };
        let limits =
            EffectiveLimits::new(&config, &TenantLimits::default(), LimitAuthority::Tenant);
        let tenant = TenantId::parse("acme").unwrap();
        let marketing = Category::parse("marketing").unwrap();
        let recipient = RecipientId::parse("user:42").unwrap();
        let dispatch = Dispatch {
            tenant_id: &tenant,
            channel: Channel::Sms,
            provider: "twilio",
            recipient: Some(&recipient),
            category: Some(&marketing),
        };
        let keys: Vec<String> = buckets(&limits, &dispatch, 1)
            .into_iter()
            .map(|b| b.key)
            .collect();
        assert_eq!(
            keys,
            vec![
                "tenant:acme:channel:sms",
                "provider:twilio",
                "recipient:acme:marketing:user:42"
            ]
        );
        let email = Dispatch {
            channel: Channel::Email,
            provider: "ses",
            recipient: None,
            ..dispatch
        };
        assert!(buckets(&limits, &email, 1).is_empty());
    }

    #[test]
    fn the_next_token_is_due_when_the_missing_fraction_has_refilled() {
        let at: DateTime<Utc> = "2026-01-01T00:00:00Z".parse().unwrap();
        assert_eq!(next_token_at(2.5, at, 1.0), at);
        assert_eq!(
            next_token_at(0.5, at, 2.0),
            "2026-01-01T00:00:00.250Z".parse::<DateTime<Utc>>().unwrap()
        );
    }

    #[test]
    fn requests_for_one_key_are_merged() {
        let rate = RateLimit::new(1.0, 5.0).unwrap();
        let merged = merge(&[
            BucketRequest::new("b".into(), rate, 2),
            BucketRequest::new("a".into(), rate, 1),
            BucketRequest::new("b".into(), rate, 3),
        ]);
        assert_eq!(merged.keys, vec!["a", "b"]);
        assert_eq!(merged.wanted, vec![1, 5]);
    }
}
