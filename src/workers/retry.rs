//! The retry schedule (by default 10 s, 60 s, 5 min, with jitter).

use std::time::Duration;

/// The pause before retrying after a transient failure, or `None` when the
/// schedule is used up and the notification is dead-lettered.
///
/// `failures_before` counts the transient failures before this one; `spread`
/// in -1..=1 picks where in the jitter band this retry lands. A provider's
/// `Retry-After` replaces the scheduled pause: it knows when it will take
/// the message again.
pub fn retry_delay(
    delays: &[f64],
    jitter: f64,
    failures_before: u32,
    retry_after: Option<Duration>,
    spread: f64,
) -> Option<Duration> {
    let scheduled = *delays.get(failures_before as usize)?;
    if let Some(retry_after) = retry_after {
        return Some(retry_after);
    }
    let factor = 1.0 + jitter.clamp(0.0, 1.0) * spread.clamp(-1.0, 1.0);
    Some(Duration::from_secs_f64((scheduled * factor).max(0.0)))
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEFAULT_DELAYS: [f64; 3] = [10.0, 60.0, 300.0];

    #[test]
    fn follows_the_schedule_then_gives_up() {
        let delay = |n| retry_delay(&DEFAULT_DELAYS, 0.2, n, None, 0.0);
        assert_eq!(delay(0), Some(Duration::from_secs(10)));
        assert_eq!(delay(1), Some(Duration::from_secs(60)));
        assert_eq!(delay(2), Some(Duration::from_secs(300)));
        assert_eq!(delay(3), None);
    }

    #[test]
    fn jitter_stays_within_its_band() {
        let low = retry_delay(&DEFAULT_DELAYS, 0.2, 0, None, -1.0).unwrap();
        let high = retry_delay(&DEFAULT_DELAYS, 0.2, 0, None, 1.0).unwrap();
        assert_eq!(low, Duration::from_secs(8));
        assert_eq!(high, Duration::from_secs(12));
    }

    #[test]
    fn retry_after_replaces_the_pause_but_not_the_budget() {
        let asked = Some(Duration::from_secs(7));
        assert_eq!(
            retry_delay(&DEFAULT_DELAYS, 0.2, 1, asked, 1.0),
            Some(Duration::from_secs(7))
        );
        assert_eq!(retry_delay(&DEFAULT_DELAYS, 0.2, 3, asked, 1.0), None);
    }
}
