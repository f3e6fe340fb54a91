//! Circuit breakers, one per provider (being built).

use serde::{Deserialize, Serialize};

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
