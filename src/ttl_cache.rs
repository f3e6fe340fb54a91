//! A small map whose entries expire: what is read per request or per message
//! (API keys, tenant limits, webhook secrets, quiet hours) is looked up once
//! per interval instead, so a change elsewhere takes effect within it.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// More entries than this and the cache starts over: a burst of distinct keys
/// costs lookups, never unbounded memory.
const MAX_ENTRIES: usize = 10_000;

pub struct TtlCache<K, V> {
    ttl: Duration,
    entries: Mutex<HashMap<K, (V, Instant)>>,
}

impl<K: Eq + Hash, V: Clone> TtlCache<K, V> {
    pub fn new(ttl: Duration) -> Self {
        TtlCache {
            ttl,
            entries: Mutex::new(HashMap::new()),
        }
    }

    /// The value stored less than the TTL ago, if any.
    pub fn get(&self, key: &K) -> Option<V> {
        self.entries
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(key)
            .filter(|(_, at)| at.elapsed() < self.ttl)
            .map(|(value, _)| value.clone())
    }

    pub fn insert(&self, key: K, value: V) {
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        if entries.len() >= MAX_ENTRIES {
            entries.clear();
        }
        entries.insert(key, (value, Instant::now()));
    }

    /// Forgets one entry, so a change made in this process applies at once.
    pub fn remove(&self, key: &K) {
        self.entries
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(key);
    }

    pub fn clear(&self) {
        self.entries
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_expire_after_the_ttl() {
        let cache = TtlCache::new(Duration::from_millis(30));
        cache.insert("a", 1);
        assert_eq!(cache.get(&"a"), Some(1));
        assert_eq!(cache.get(&"b"), None);
        std::thread::sleep(Duration::from_millis(40));
        assert_eq!(cache.get(&"a"), None);
    }

    #[test]
    fn a_full_cache_starts_over() {
        let cache = TtlCache::new(Duration::from_secs(60));
        for key in 0..MAX_ENTRIES {
            cache.insert(key, key);
        }
        cache.insert(MAX_ENTRIES, 0);
        assert_eq!(cache.get(&0), None);
        assert_eq!(cache.get(&MAX_ENTRIES), Some(0));
    }
}
