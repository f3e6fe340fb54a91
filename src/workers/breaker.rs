//! Circuit breakers, one per provider (by default five failures in a minute
//! open it; half-open lets one request test the provider), and one per
//! tenant and webhook endpoint origin (scheme, host, port), so a tenant's
//! failing endpoint is passed over without opening the breaker every
//! tenant's deliveries through that provider fail over by.
//!
//! In-memory and per process: each dispatcher process learns a provider's
//! health from its own calls, which needs no shared state and reacts within
//! a few failures anyway.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::domain::values::HttpUrl;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BreakerConfig {
    /// Failures within `window_seconds` that open the breaker.
    pub failures: u32,
    pub window_seconds: u64,
    /// How long an open breaker refuses before letting one probe through.
    pub open_seconds: u64,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        BreakerConfig {
            failures: 5,
            window_seconds: 60,
            open_seconds: 30,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum BreakerState {
    Closed,
    Open,
    HalfOpen,
}

impl BreakerState {
    pub fn as_str(self) -> &'static str {
        match self {
            BreakerState::Closed => "closed",
            BreakerState::HalfOpen => "half_open",
            BreakerState::Open => "open",
        }
    }

    /// The value of the `provider_circuit_state` gauge.
    fn gauge(self) -> f64 {
        match self {
            BreakerState::Closed => 0.0,
            BreakerState::HalfOpen => 1.0,
            BreakerState::Open => 2.0,
        }
    }
}

/// One breaker as seen at [`Breakers::snapshot`].
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BreakerSnapshot {
    /// The provider's name, or the endpoint's origin.
    pub key: String,
    pub state: BreakerState,
    /// Closed: failures still inside the window. Open or half-open: the
    /// failures that opened it, however old, so an open breaker never
    /// shows none.
    pub recent_failures: u32,
    /// When it last opened, while it is open or half-open.
    pub opened_at: Option<DateTime<Utc>>,
}

/// The breakers of every provider (or endpoint), shared by all dispatch
/// loops of a process.
#[derive(Debug, Clone)]
pub struct Breakers {
    config: BreakerConfig,
    kind: Kind,
    by_key: Arc<Mutex<BTreeMap<String, Breaker>>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// A few configured names: each keeps its breaker and its gauge.
    Providers,
    /// Origins tenants chose, without bound: only breakers with something to
    /// remember (failures, open, probing) are kept, and no metric is labelled
    /// with a tenant's host.
    Endpoints,
}

#[derive(Debug)]
struct Breaker {
    phase: Phase,
    /// When recent failures happened, oldest first; while not closed, the
    /// ones that opened it.
    failures: VecDeque<Instant>,
    opened_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, Copy)]
enum Phase {
    Closed,
    Open {
        since: Instant,
    },
    /// A probe is out since `since`; no other call goes through meanwhile.
    HalfOpen {
        since: Instant,
    },
}

impl Phase {
    fn state(self) -> BreakerState {
        match self {
            Phase::Closed => BreakerState::Closed,
            Phase::Open { .. } => BreakerState::Open,
            Phase::HalfOpen { .. } => BreakerState::HalfOpen,
        }
    }
}

impl Breakers {
    /// Breakers keyed by provider name.
    pub fn new(config: &BreakerConfig) -> Breakers {
        Breakers {
            config: config.clone(),
            kind: Kind::Providers,
            by_key: Arc::default(),
        }
    }

    /// Breakers keyed by tenant and endpoint origin ([`endpoint_key`]).
    pub fn per_endpoint(config: &BreakerConfig) -> Breakers {
        Breakers {
            kind: Kind::Endpoints,
            ..Breakers::new(config)
        }
    }

    /// Whether a call to `key` may go out now.
    pub fn try_acquire(&self, key: &str) -> bool {
        self.try_acquire_at(key, Instant::now())
    }

    /// Reports how a call that [`Breakers::try_acquire`] let through ended.
    pub fn record(&self, key: &str, success: bool) {
        self.record_at(key, success, Instant::now());
    }

    /// [`Breakers::try_acquire`] at `now`, for a fake clock.
    pub fn try_acquire_at(&self, key: &str, now: Instant) -> bool {
        let open_for = Duration::from_secs(self.config.open_seconds);
        self.with_breaker(key, now, |breaker| match breaker.phase {
            Phase::Closed => true,
            // After `open_for` in half-open the probe is presumed lost (its
            // task crashed or never reported), so another one may go.
            Phase::Open { since } | Phase::HalfOpen { since }
                if now.saturating_duration_since(since) >= open_for =>
            {
                breaker.phase = Phase::HalfOpen { since: now };
                true
            }
            Phase::Open { .. } | Phase::HalfOpen { .. } => false,
        })
    }

    /// [`Breakers::record`] at `now`, for a fake clock.
    pub fn record_at(&self, key: &str, success: bool, now: Instant) {
        let window = Duration::from_secs(self.config.window_seconds);
        let threshold = self.config.failures as usize;
        self.with_breaker(key, now, |breaker| match (breaker.phase, success) {
            (Phase::Closed, true) => {}
            (Phase::Closed, false) => {
                breaker.failures.push_back(now);
                breaker.forget_before(now, window);
                if breaker.failures.len() >= threshold {
                    breaker.open(now);
                }
            }
            (Phase::HalfOpen { .. }, true) => {
                breaker.phase = Phase::Closed;
                breaker.failures.clear();
                breaker.opened_at = None;
            }
            // The failed probe is what opened it this time.
            (Phase::HalfOpen { .. }, false) => {
                breaker.failures.clear();
                breaker.failures.push_back(now);
                breaker.open(now);
            }
            // A call that started before the breaker opened: its outcome
            // says nothing the opening did not already.
            (Phase::Open { .. }, _) => {}
        });
    }

    /// Every provider used so far, or every endpoint with recent failures
    /// or a breaker not closed, by key.
    pub fn snapshot(&self) -> Vec<BreakerSnapshot> {
        let now = Instant::now();
        let window = Duration::from_secs(self.config.window_seconds);
        let mut by_key = self.by_key.lock().unwrap_or_else(PoisonError::into_inner);
        if self.kind == Kind::Endpoints {
            by_key.retain(|_, breaker| {
                breaker.forget_before(now, window);
                !breaker.is_idle()
            });
        }
        by_key
            .iter()
            .map(|(key, breaker)| BreakerSnapshot {
                key: key.clone(),
                state: breaker.phase.state(),
                recent_failures: match breaker.phase {
                    Phase::Closed => breaker
                        .failures
                        .iter()
                        .filter(|at| now.saturating_duration_since(**at) < window)
                        .count() as u32,
                    Phase::Open { .. } | Phase::HalfOpen { .. } => breaker.failures.len() as u32,
                },
                opened_at: breaker.opened_at,
            })
            .collect()
    }

    /// Runs `f` on `key`'s breaker (a closed one on first use) and updates
    /// the gauge when the state changed; an endpoint's breaker left with
    /// nothing to remember is dropped.
    fn with_breaker<T>(&self, key: &str, now: Instant, f: impl FnOnce(&mut Breaker) -> T) -> T {
        // A panic elsewhere cannot leave a breaker half-updated: every
        // change is a plain assignment, so a poisoned lock is still usable.
        let mut by_key = self.by_key.lock().unwrap_or_else(PoisonError::into_inner);
        let gauged = self.kind == Kind::Providers;
        let breaker = by_key.entry(key.to_owned()).or_insert_with(|| {
            if gauged {
                set_gauge(key, BreakerState::Closed);
            }
            Breaker {
                phase: Phase::Closed,
                failures: VecDeque::new(),
                opened_at: None,
            }
        });
        let before = breaker.phase.state();
        let result = f(breaker);
        let after = breaker.phase.state();
        if after != before {
            if gauged {
                set_gauge(key, after);
            }
            tracing::info!(key, from = ?before, to = ?after, "circuit breaker changed state");
        }
        if !gauged {
            breaker.forget_before(now, Duration::from_secs(self.config.window_seconds));
            if breaker.is_idle() {
                by_key.remove(key);
            }
        }
        result
    }
}

/// The key of a tenant's endpoint breaker: its origin, within that tenant,
/// so a tenant's failures at a host others use too (a chat service's
/// webhooks, say) hold only its own deliveries there.
pub fn endpoint_key(tenant_id: &str, url: &HttpUrl) -> String {
    format!("{tenant_id} {}", url.origin())
}

/// The tenant and origin an [`endpoint_key`] names.
pub fn split_endpoint_key(key: &str) -> (&str, &str) {
    key.split_once(' ').unwrap_or(("", key))
}

impl Breaker {
    /// Closed with no failure in the window: the same as a new breaker.
    fn is_idle(&self) -> bool {
        matches!(self.phase, Phase::Closed) && self.failures.is_empty()
    }

    /// Drops failures older than `window`; an open or half-open breaker
    /// keeps the ones that opened it.
    fn forget_before(&mut self, now: Instant, window: Duration) {
        if !matches!(self.phase, Phase::Closed) {
            return;
        }
        while self
            .failures
            .front()
            .is_some_and(|at| now.saturating_duration_since(*at) >= window)
        {
            self.failures.pop_front();
        }
    }

    fn open(&mut self, now: Instant) {
        self.phase = Phase::Open { since: now };
        self.opened_at = Some(Utc::now());
    }
}

fn set_gauge(provider: &str, state: BreakerState) {
    metrics::gauge!("provider_circuit_state", "provider" => provider.to_owned()).set(state.gauge());
}

#[cfg(test)]
mod tests {
    use super::*;

    const P: &str = "ses";

    fn breakers() -> Breakers {
        Breakers::new(&BreakerConfig::default())
    }

    fn secs(n: u64) -> Duration {
        Duration::from_secs(n)
    }

    fn state(breakers: &Breakers) -> BreakerState {
        breakers
            .snapshot()
            .into_iter()
            .find(|snapshot| snapshot.key == P)
            .map(|snapshot| snapshot.state)
            .unwrap()
    }

    /// Given a breaker opened by five failures at `t0`.
    fn opened(t0: Instant) -> Breakers {
        let breakers = breakers();
        for _ in 0..5 {
            breakers.record_at(P, false, t0);
        }
        assert_eq!(state(&breakers), BreakerState::Open);
        breakers
    }

    #[test]
    fn opens_after_five_failures_within_a_minute() {
        let t0 = Instant::now();
        let breakers = breakers();

        for second in [0, 10, 20, 30] {
            breakers.record_at(P, false, t0 + secs(second));
        }
        assert!(breakers.try_acquire_at(P, t0 + secs(40)));
        breakers.record_at(P, false, t0 + secs(59));

        assert_eq!(state(&breakers), BreakerState::Open);
        assert!(!breakers.try_acquire_at(P, t0 + secs(59)));
        let snapshot = &breakers.snapshot()[0];
        assert!(snapshot.opened_at.is_some());
        assert_eq!(snapshot.recent_failures, 5, "the failures that opened it");
    }

    #[test]
    fn failures_spread_over_more_than_a_minute_do_not_open_it() {
        let t0 = Instant::now();
        let breakers = breakers();

        for second in [0, 15, 30, 45, 60, 75, 90] {
            breakers.record_at(P, false, t0 + secs(second));
        }

        assert_eq!(state(&breakers), BreakerState::Closed);
        assert!(breakers.try_acquire_at(P, t0 + secs(91)));
        assert_eq!(breakers.snapshot()[0].recent_failures, 4);
    }

    #[test]
    fn successes_do_not_close_the_window_on_failures() {
        let t0 = Instant::now();
        let breakers = breakers();

        for second in 0..5 {
            breakers.record_at(P, true, t0 + secs(second));
            breakers.record_at(P, false, t0 + secs(second));
        }

        assert_eq!(state(&breakers), BreakerState::Open);
    }

    #[test]
    fn an_open_breaker_refuses_until_open_seconds_pass() {
        let t0 = Instant::now();
        let breakers = opened(t0);

        assert!(!breakers.try_acquire_at(P, t0 + secs(1)));
        assert!(!breakers.try_acquire_at(P, t0 + secs(29)));
        // Other providers are not affected.
        assert!(breakers.try_acquire_at("sendgrid", t0 + secs(1)));
    }

    #[test]
    fn half_open_lets_exactly_one_probe_through() {
        let t0 = Instant::now();
        let breakers = opened(t0);

        let probe = breakers.try_acquire_at(P, t0 + secs(30));
        let second = breakers.try_acquire_at(P, t0 + secs(31));

        assert!(probe);
        assert!(!second);
        assert_eq!(state(&breakers), BreakerState::HalfOpen);
    }

    #[test]
    fn a_successful_probe_closes_it() {
        let t0 = Instant::now();
        let breakers = opened(t0);
        assert!(breakers.try_acquire_at(P, t0 + secs(30)));

        breakers.record_at(P, true, t0 + secs(31));

        assert_eq!(state(&breakers), BreakerState::Closed);
        assert!(breakers.try_acquire_at(P, t0 + secs(32)));
        assert!(breakers.try_acquire_at(P, t0 + secs(32)));
        assert_eq!(breakers.snapshot()[0].opened_at, None);
        assert_eq!(breakers.snapshot()[0].recent_failures, 0);
    }

    #[test]
    fn a_failed_probe_reopens_it_for_open_seconds() {
        let t0 = Instant::now();
        let breakers = opened(t0);
        assert!(breakers.try_acquire_at(P, t0 + secs(30)));

        breakers.record_at(P, false, t0 + secs(31));

        assert_eq!(state(&breakers), BreakerState::Open);
        assert_eq!(breakers.snapshot()[0].recent_failures, 1, "the probe");
        assert!(!breakers.try_acquire_at(P, t0 + secs(60)));
        assert!(breakers.try_acquire_at(P, t0 + secs(61)));
        assert_eq!(breakers.snapshot()[0].recent_failures, 1, "while probing");
    }

    #[test]
    fn a_probe_that_never_reports_does_not_wedge_it() {
        let t0 = Instant::now();
        let breakers = opened(t0);
        assert!(breakers.try_acquire_at(P, t0 + secs(30)));

        let while_probing = breakers.try_acquire_at(P, t0 + secs(59));
        let after_open_seconds = breakers.try_acquire_at(P, t0 + secs(60));

        assert!(!while_probing);
        assert!(after_open_seconds);
        assert_eq!(state(&breakers), BreakerState::HalfOpen);
    }

    #[test]
    fn late_reports_while_open_change_nothing() {
        let t0 = Instant::now();
        let breakers = opened(t0);

        breakers.record_at(P, true, t0 + secs(1));
        breakers.record_at(P, false, t0 + secs(2));

        assert_eq!(state(&breakers), BreakerState::Open);
        assert!(!breakers.try_acquire_at(P, t0 + secs(29)));
        assert!(breakers.try_acquire_at(P, t0 + secs(30)));
    }

    const A: &str = "https://a.example";
    const B: &str = "https://b.example";

    #[test]
    fn an_endpoints_failures_open_only_its_own_breaker() {
        let t0 = Instant::now();
        let endpoints = Breakers::per_endpoint(&BreakerConfig::default());

        for _ in 0..5 {
            assert!(endpoints.try_acquire_at(A, t0));
            endpoints.record_at(A, false, t0);
        }

        assert!(!endpoints.try_acquire_at(A, t0 + secs(1)));
        assert!(endpoints.try_acquire_at(B, t0 + secs(1)));
        let snapshot = endpoints.snapshot();
        assert_eq!(snapshot.len(), 1, "{snapshot:?}");
        assert_eq!(snapshot[0].key, A);
        assert_eq!(snapshot[0].state, BreakerState::Open);
        // A probe after open_seconds, as for providers.
        assert!(endpoints.try_acquire_at(A, t0 + secs(30)));
        assert!(!endpoints.try_acquire_at(A, t0 + secs(31)));
    }

    #[test]
    fn tenants_sharing_an_origin_have_breakers_of_their_own() {
        let url = HttpUrl::parse("https://hooks.chat.example/services/T1/B2").unwrap();
        let other_path = HttpUrl::parse("https://hooks.chat.example/services/T9/B9").unwrap();
        let endpoints = Breakers::per_endpoint(&BreakerConfig::default());

        for _ in 0..5 {
            endpoints.record(&endpoint_key("tenant-a", &url), false);
        }

        assert!(!endpoints.try_acquire(&endpoint_key("tenant-a", &other_path)));
        assert!(endpoints.try_acquire(&endpoint_key("tenant-b", &url)));
        let key = endpoint_key("tenant-a", &url);
        assert_eq!(
            split_endpoint_key(&key),
            ("tenant-a", "https://hooks.chat.example")
        );
    }

    #[test]
    fn healthy_endpoints_are_not_remembered() {
        let t0 = Instant::now();
        let endpoints = Breakers::per_endpoint(&BreakerConfig::default());

        for n in 0..1000 {
            let origin = format!("https://{n}.example");
            assert!(endpoints.try_acquire_at(&origin, t0));
            endpoints.record_at(&origin, true, t0);
        }
        endpoints.record_at(A, false, t0);

        assert_eq!(endpoints.snapshot().len(), 1);
        assert_eq!(endpoints.snapshot()[0].recent_failures, 1);
        // A probe that succeeds closes the breaker, which is then forgotten.
        for _ in 0..5 {
            endpoints.record_at(B, false, t0);
        }
        assert!(endpoints.try_acquire_at(B, t0 + secs(30)));
        endpoints.record_at(B, true, t0 + secs(31));
        let keys: Vec<String> = endpoints.snapshot().into_iter().map(|b| b.key).collect();
        assert_eq!(keys, [A]);
    }

    #[test]
    fn an_endpoints_old_failures_are_forgotten_with_it() {
        let t0 = Instant::now();
        let endpoints = Breakers::per_endpoint(&BreakerConfig::default());

        for second in [0, 10, 20, 30] {
            endpoints.record_at(A, false, t0 + secs(second));
        }
        endpoints.record_at(A, true, t0 + secs(95));

        assert!(endpoints.snapshot().is_empty());
        for _ in 0..4 {
            endpoints.record_at(A, false, t0 + secs(96));
        }
        assert!(endpoints.try_acquire_at(A, t0 + secs(96)));
    }

    #[test]
    fn clones_share_the_breakers() {
        let breakers = breakers();
        let clone = breakers.clone();

        for _ in 0..5 {
            clone.record(P, false);
        }

        assert!(!breakers.try_acquire(P));
        assert_eq!(breakers.snapshot().len(), 1);
    }
}
