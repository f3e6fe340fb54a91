//! The scheduler: one loop per workers process that fires the recurring
//! schedules whose slot is due, each firing an ordinary send.
//!
//! Several processes may run it on one database. They do not lock: each
//! step is decided from a schedule's stream version and appended expecting
//! it, and the notification is sent first under the slot's idempotency key,
//! so every slot makes exactly one notification (`commands::schedules`).

use std::time::Duration;

use chrono::{TimeDelta, Utc};
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use crate::commands::Actor;
use crate::commands::notifications::SendPolicy;
use crate::commands::schedules::{self, FireOutcome};
use crate::eventstore::EventStore;

/// `[scheduler]`: how often due schedules are looked for, and when a late
/// slot counts as missed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SchedulerConfig {
    /// The longest wait between two looks for due schedules; the loop also
    /// wakes when the earliest known slot falls due.
    pub poll_interval_ms: u64,
    /// A slot seen later than this was missed (the service was down) and
    /// follows its schedule's missed policy; a less late one simply fires.
    pub missed_after_seconds: u64,
    /// Schedules fired per look.
    pub batch: u32,
}

impl Default for SchedulerConfig {
    fn default() -> Self {
        SchedulerConfig {
            poll_interval_ms: 1_000,
            missed_after_seconds: 60,
            batch: 100,
        }
    }
}

/// Starts the loop; the handle ends after `shutdown`.
pub fn spawn(
    store: EventStore,
    policy: SendPolicy,
    config: SchedulerConfig,
    shutdown: CancellationToken,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let actor = Actor::new("scheduler");
        let poll = Duration::from_millis(config.poll_interval_ms.max(10));
        let grace = TimeDelta::seconds(config.missed_after_seconds.min(i64::MAX as u64) as i64);
        while !shutdown.is_cancelled() {
            let now = Utc::now();
            match schedules::due(store.pool(), now, config.batch).await {
                Ok(due) => {
                    for schedule_id in due {
                        if shutdown.is_cancelled() {
                            break;
                        }
                        let fired =
                            schedules::fire(&store, schedule_id, &policy, grace, now, &actor).await;
                        record(schedule_id, fired);
                    }
                }
                Err(error) => tracing::warn!(%error, "cannot look for due schedules"),
            }
            let sleep = match schedules::next_due(store.pool()).await {
                Ok(Some(due)) => (due - Utc::now()).to_std().unwrap_or_default().min(poll),
                _ => poll,
            };
            tokio::select! {
                _ = tokio::time::sleep(sleep) => {}
                _ = shutdown.cancelled() => {}
            }
        }
        tracing::info!("scheduler stopped");
    })
}

fn record(schedule_id: uuid::Uuid, fired: Result<FireOutcome, crate::commands::CommandError>) {
    let (outcome, count) = match &fired {
        Ok(FireOutcome::NotDue) => return,
        Ok(FireOutcome::Fired {
            duplicate: false, ..
        }) => ("fired", 1),
        Ok(FireOutcome::Fired {
            duplicate: true, ..
        }) => ("duplicate", 1),
        Ok(FireOutcome::Failed { slot, reason }) => {
            tracing::warn!(%schedule_id, %slot, %reason, "a scheduled notification was refused");
            ("failed", 1)
        }
        Ok(FireOutcome::Skipped { count }) => {
            tracing::info!(%schedule_id, count, "missed schedule slots skipped");
            ("skipped", u64::from(*count))
        }
        Ok(FireOutcome::LostRace) => ("lost_race", 1),
        Err(error) => {
            tracing::warn!(%schedule_id, %error, "cannot fire a schedule; trying again");
            ("error", 1)
        }
    };
    metrics::counter!("schedule_firings_total", "outcome" => outcome).increment(count);
}
