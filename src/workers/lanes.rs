//! Lanes: a bounded number of calls in flight per key (a provider's LOW
//! messages, a tenant, an endpoint's origin or host), taken before the
//! provider's own slot so that whoever waits for a lane waits without
//! holding a slot someone else could use.
//!
//! Keys come and go with tenants' traffic (origins are chosen by tenants),
//! so a key's semaphore exists only while someone holds or waits for it.
//! Written here rather than taken from a crate: this is tokio's `Semaphore`
//! plus that eviction, which no well-kept crate offers on its own.
//!
//! The caps are for destinations that answer slowly: [`AnswerTimes`] tells
//! which destinations answer fast, and those may go past their lanes into
//! slots nobody waits for.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};

use crate::ttl_cache::TtlCache;

type ByKey = Arc<Mutex<HashMap<String, Arc<Semaphore>>>>;

/// Up to `size` holders per key; cheap to clone (clones share the lanes).
#[derive(Debug, Clone)]
pub struct Lanes {
    size: usize,
    by_key: ByKey,
}

/// A place in one key's lane, given back on drop.
#[derive(Debug)]
pub struct LanePermit {
    key: String,
    by_key: ByKey,
    permit: Option<OwnedSemaphorePermit>,
}

/// The part of `slots` a share of them gives: `max(1, slots * share)`, so a
/// share never shuts anyone out.
pub fn share_of(slots: usize, share: f64) -> usize {
    let share = if share.is_nan() {
        1.0
    } else {
        share.clamp(0.0, 1.0)
    };
    ((slots as f64 * share).floor() as usize).max(1)
}

impl Lanes {
    pub fn new(size: usize) -> Lanes {
        Lanes {
            size: size.max(1),
            by_key: Arc::default(),
        }
    }

    pub fn size(&self) -> usize {
        self.size
    }

    /// Waits for a place in `key`'s lane.
    pub async fn acquire(&self, key: &str) -> LanePermit {
        let semaphore = self.semaphore(key);
        let permit = semaphore
            .acquire_owned()
            .await
            .expect("a lane's semaphore is never closed");
        self.permit(key, permit)
    }

    /// A place in `key`'s lane if one is free now.
    pub fn try_acquire(&self, key: &str) -> Option<LanePermit> {
        let permit = self.semaphore(key).try_acquire_owned().ok()?;
        Some(self.permit(key, permit))
    }

    /// Places of `key` held now.
    pub fn in_use(&self, key: &str) -> usize {
        self.lock()
            .get(key)
            .map_or(0, |semaphore| self.size - semaphore.available_permits())
    }

    /// The keys whose every place is held.
    pub fn full(&self) -> Vec<String> {
        self.lock()
            .iter()
            .filter(|(_, semaphore)| semaphore.available_permits() == 0)
            .map(|(key, _)| key.clone())
            .collect()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<Semaphore>>> {
        // Every change is one map operation: a poisoned map is still whole.
        self.by_key.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// `key`'s semaphore; the clone, taken under the lock, keeps it from
    /// being evicted while its caller waits.
    fn semaphore(&self, key: &str) -> Arc<Semaphore> {
        self.lock()
            .entry(key.to_owned())
            .or_insert_with(|| Arc::new(Semaphore::new(self.size)))
            .clone()
    }

    fn permit(&self, key: &str, permit: OwnedSemaphorePermit) -> LanePermit {
        LanePermit {
            key: key.to_owned(),
            by_key: self.by_key.clone(),
            permit: Some(permit),
        }
    }
}

impl Drop for LanePermit {
    fn drop(&mut self) {
        drop(self.permit.take());
        let mut by_key = self.by_key.lock().unwrap_or_else(PoisonError::into_inner);
        // Only the map holds it: nobody holds a place or waits for one
        // (waiters clone it under this lock before they wait).
        if by_key
            .get(&self.key)
            .is_some_and(|semaphore| Arc::strong_count(semaphore) == 1)
        {
            by_key.remove(&self.key);
        }
    }
}

/// How long a destination's answer time is remembered after its last call:
/// one silent for longer is unknown again, hence slow.
const ANSWER_TIMES_TTL: Duration = Duration::from_secs(60);
/// The weight of the latest call in a destination's answer time.
const LATEST_WEIGHT: f64 = 0.2;

/// How fast each destination (a webhook endpoint origin, a provider) has
/// been answering: a moving average of its calls' durations. Caps that keep
/// a slow destination from holding slots others need (per endpoint and host,
/// a tenant's share of a provider) are lifted for a fast one while there is
/// room, since a fast call gives its slot back before anyone waits long.
pub struct AnswerTimes {
    fast: Duration,
    averages: TtlCache<String, Duration>,
    /// Woken when a destination turns fast, so calls already waiting for
    /// its caps stop waiting.
    turned_fast: Notify,
}

impl AnswerTimes {
    /// Destinations answering within `fast` on average count as fast.
    pub fn new(fast: Duration) -> AnswerTimes {
        AnswerTimes {
            fast,
            averages: TtlCache::new(ANSWER_TIMES_TTL),
            turned_fast: Notify::new(),
        }
    }

    /// Whether `destination` has been answering within the bound; one not
    /// called lately is not (its first calls keep to every cap).
    pub fn is_fast(&self, destination: &str) -> bool {
        self.averages
            .get(&destination.to_owned())
            .is_some_and(|average| average <= self.fast)
    }

    /// Counts one call of `destination` that took `took` (answered, failed
    /// or timed out).
    pub fn record(&self, destination: &str, took: Duration) {
        let key = destination.to_owned();
        let before = self.averages.get(&key);
        let average = match before {
            Some(average) => average.mul_f64(1.0 - LATEST_WEIGHT) + took.mul_f64(LATEST_WEIGHT),
            None => took,
        };
        self.averages.insert(key, average);
        if average <= self.fast && before.is_none_or(|before| before > self.fast) {
            self.turned_fast.notify_waiters();
        }
    }

    /// A place in `key`'s lane, or none if `destination` is fast: a free
    /// place is taken either way, and a call waiting for one stops waiting
    /// when its destination turns fast.
    pub async fn place(&self, lanes: &Lanes, key: &str, destination: &str) -> Option<LanePermit> {
        loop {
            if let Some(place) = lanes.try_acquire(key) {
                return Some(place);
            }
            // Registered before the check, so a turn in between is not missed.
            let turned_fast = self.turned_fast.notified();
            if self.is_fast(destination) {
                return None;
            }
            tokio::select! {
                place = lanes.acquire(key) => return Some(place),
                () = turned_fast => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_destination_is_fast_only_once_it_has_answered_fast() {
        let times = AnswerTimes::new(Duration::from_millis(100));
        assert!(!times.is_fast("https://a.example"));

        times.record("https://a.example", Duration::from_millis(20));
        assert!(times.is_fast("https://a.example"));
        assert!(!times.is_fast("https://b.example"));
    }

    #[tokio::test]
    async fn a_call_waiting_for_a_place_goes_on_when_its_destination_turns_fast() {
        let times = Arc::new(AnswerTimes::new(Duration::from_millis(100)));
        let lanes = Lanes::new(1);
        let _held = lanes.try_acquire("a").unwrap();
        let waiter = tokio::spawn({
            let (times, lanes) = (times.clone(), lanes.clone());
            async move { times.place(&lanes, "a", "a").await.is_some() }
        });
        // Waiting once it holds a clone of the lane's semaphore.
        while lanes.lock().get("a").map(Arc::strong_count) != Some(3) {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }

        times.record("a", Duration::from_millis(5));

        let placed = tokio::time::timeout(Duration::from_secs(5), waiter)
            .await
            .expect("the waiter went on")
            .unwrap();
        assert!(!placed, "it went on without a place");
    }

    #[test]
    fn a_fast_destination_turning_slow_is_soon_slow() {
        let times = AnswerTimes::new(Duration::from_millis(100));
        times.record("a", Duration::from_millis(10));

        // One 10 s timeout after fast answers is enough.
        times.record("a", Duration::from_secs(10));

        assert!(!times.is_fast("a"));
        // And it takes a run of fast answers to be fast again.
        for _ in 0..5 {
            times.record("a", Duration::from_millis(10));
        }
        assert!(!times.is_fast("a"));
        for _ in 0..10 {
            times.record("a", Duration::from_millis(10));
        }
        assert!(times.is_fast("a"));
    }

    #[test]
    fn a_share_is_at_least_one_slot() {
        assert_eq!(share_of(64, 0.5), 32);
        assert_eq!(share_of(64, 0.25), 16);
        assert_eq!(share_of(3, 0.5), 1);
        assert_eq!(share_of(1, 0.5), 1);
        assert_eq!(share_of(8, 0.0), 1);
        assert_eq!(share_of(8, 1.0), 8);
        assert_eq!(share_of(8, 7.0), 8);
        assert_eq!(share_of(8, f64::NAN), 8);
    }

    #[test]
    fn each_key_has_its_own_places() {
        let lanes = Lanes::new(2);

        let a1 = lanes.try_acquire("a").unwrap();
        let _a2 = lanes.try_acquire("a").unwrap();

        assert!(lanes.try_acquire("a").is_none());
        assert!(lanes.try_acquire("b").is_some());
        assert_eq!(lanes.in_use("a"), 2);
        assert_eq!(lanes.full(), ["a"]);
        drop(a1);
        assert_eq!(lanes.in_use("a"), 1);
        assert!(lanes.full().is_empty());
    }

    #[test]
    fn an_idle_key_is_forgotten() {
        let lanes = Lanes::new(1);

        drop(lanes.try_acquire("a").unwrap());

        assert!(lanes.lock().is_empty());
    }

    #[tokio::test]
    async fn a_waiter_gets_the_place_given_back_and_keeps_the_lane_alive() {
        let lanes = Lanes::new(1);
        let held = lanes.try_acquire("a").unwrap();
        let waiter = tokio::spawn({
            let lanes = lanes.clone();
            async move { lanes.acquire("a").await }
        });
        // The waiter is queued on the semaphore once it holds a clone of it.
        while lanes.lock().get("a").map(Arc::strong_count) != Some(3) {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }

        drop(held);
        let permit = tokio::time::timeout(Duration::from_secs(5), waiter)
            .await
            .expect("the waiter got the place")
            .unwrap();

        assert_eq!(lanes.in_use("a"), 1);
        assert!(lanes.try_acquire("a").is_none());
        drop(permit);
        assert!(lanes.lock().is_empty());
    }
}
