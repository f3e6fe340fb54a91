//! Requests per API key: a token bucket per key (the tenant's effective
//! `api_rate`), checked once per request right after authentication.
//!
//! The buckets live in this process's memory (governor's GCRA: one atomic
//! compare-and-swap per request). The dispatcher's buckets
//! (`workers::throttle`) are rows in PostgreSQL shared by every process and
//! cost a round trip each: right for deliveries, too dear for every request.
//! So with several API processes a key gets its rate in each of them.

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use governor::clock::Clock;
use governor::{DefaultDirectRateLimiter, Quota};
use sqlx::PgPool;

use super::error::ApiError;
use crate::commands::limits::Limits;
use crate::commands::tenants::Principal;
use crate::domain::RateLimit;
use crate::domain::values::ApiKeyId;

/// A key's rate is looked up again after this long, so a new override takes
/// effect within it (the tenant's limits are cached as long again).
const RATE_TTL: Duration = Duration::from_secs(5);
/// Slower than one request a day is one a day: governor counts nanoseconds
/// in a u64, and period × burst must fit.
const MAX_PERIOD: Duration = Duration::from_secs(86_400);

struct KeyBucket {
    rate: Option<RateLimit>,
    /// `None`: unlimited.
    limiter: Option<Arc<DefaultDirectRateLimiter>>,
    looked_up: Instant,
}

/// Every key's bucket. Only authenticated keys get one, so there are at most
/// as many as issued keys.
#[derive(Default)]
pub struct RequestLimiter {
    keys: Mutex<HashMap<ApiKeyId, KeyBucket>>,
}

impl RequestLimiter {
    /// Takes a token for one request of `principal`, or refuses with
    /// `RATE_LIMITED` and when to retry.
    pub async fn admit(
        &self,
        limits: &Limits,
        pool: &PgPool,
        principal: &Principal,
    ) -> Result<(), ApiError> {
        let limiter = match self.fresh(principal.key_id) {
            Some(limiter) => limiter,
            None => {
                let rate = limits.effective(pool, &principal.tenant_id).await?.api_rate;
                self.update(principal.key_id, rate)
            }
        };
        let Some(limiter) = limiter else {
            return Ok(());
        };
        limiter.check().map_err(|not_until| {
            let wait = not_until.wait_time_from(limiter.clock().now());
            // Whole seconds, rounded up: retrying sooner would be refused.
            ApiError::RateLimited {
                retry_after: wait.as_secs() + u64::from(wait.subsec_nanos() > 0),
            }
        })
    }

    /// The key's limiter if its rate was looked up recently.
    fn fresh(&self, key_id: ApiKeyId) -> Option<Option<Arc<DefaultDirectRateLimiter>>> {
        let keys = self.keys.lock().unwrap_or_else(|e| e.into_inner());
        keys.get(&key_id)
            .filter(|bucket| bucket.looked_up.elapsed() < RATE_TTL)
            .map(|bucket| bucket.limiter.clone())
    }

    /// Records the key's current rate; its bucket starts over only when the
    /// rate changed.
    fn update(
        &self,
        key_id: ApiKeyId,
        rate: Option<RateLimit>,
    ) -> Option<Arc<DefaultDirectRateLimiter>> {
        let mut keys = self.keys.lock().unwrap_or_else(|e| e.into_inner());
        let bucket = keys.entry(key_id).or_insert_with(|| KeyBucket {
            rate,
            limiter: limiter(rate),
            looked_up: Instant::now(),
        });
        if bucket.rate != rate {
            bucket.rate = rate;
            bucket.limiter = limiter(rate);
        }
        bucket.looked_up = Instant::now();
        bucket.limiter.clone()
    }
}

/// `rate` as a governor bucket; `None` when unlimited or finer than governor
/// can count (over a billion a second).
fn limiter(rate: Option<RateLimit>) -> Option<Arc<DefaultDirectRateLimiter>> {
    let rate = rate?;
    let period = Duration::try_from_secs_f64(1.0 / rate.per_second())
        .unwrap_or(MAX_PERIOD)
        .min(MAX_PERIOD);
    let most = u64::MAX / 4 / period.as_nanos().max(1) as u64;
    let burst = (rate.burst() as u64).clamp(1, most.min(u64::from(u32::MAX)));
    let quota = Quota::with_period(period)?.allow_burst(NonZeroU32::new(burst as u32)?);
    Some(Arc::new(DefaultDirectRateLimiter::direct(quota)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rate(per_second: f64, burst: f64) -> Option<RateLimit> {
        Some(RateLimit::new(per_second, burst).unwrap())
    }

    #[test]
    fn a_bucket_grants_its_burst_then_refuses() {
        let limiter = limiter(rate(1.0, 3.0)).unwrap();
        assert!((0..3).all(|_| limiter.check().is_ok()));
        assert!(limiter.check().is_err());
    }

    #[test]
    fn extreme_rates_neither_panic_nor_limit_what_cannot_be_counted() {
        assert!(limiter(None).is_none());
        assert!(
            limiter(rate(1e12, 1.0)).is_none(),
            "finer than a nanosecond"
        );
        for (per_second, burst) in [(1e-300, 1.0), (1e-9, 1e300), (1.0, 1e300), (1e9, 1e300)] {
            let limiter = limiter(rate(per_second, burst)).unwrap();
            assert!(limiter.check().is_ok());
        }
    }

    #[test]
    fn a_key_keeps_its_bucket_until_its_rate_changes() {
        let limiter = RequestLimiter::default();
        let key = ApiKeyId::new();
        let first = limiter.update(key, rate(1.0, 1.0)).unwrap();
        assert!(first.check().is_ok());
        let same = limiter.update(key, rate(1.0, 1.0)).unwrap();
        assert!(same.check().is_err(), "the same bucket, already empty");
        let changed = limiter.update(key, rate(2.0, 1.0)).unwrap();
        assert!(changed.check().is_ok(), "a new rate, a new bucket");
        assert!(limiter.update(key, None).is_none());
    }
}
