//! The workflow worker: one loop per workers process that moves runs along
//! (docs/workflows.md).
//!
//! - **Timers.** It claims due rows of `workflow_timers` with `FOR UPDATE
//!   SKIP LOCKED` under a lease and fires each (`commands::workflows::fire_timer`):
//!   a delay ends, a digest window closes, a wait times out. The decision
//!   that follows sends its `send` steps under the notification ids the
//!   domain derives, so a timer fired again after a crash sends nothing twice.
//! - **Observed events.** It reads the log after its checkpoint
//!   (`workflow_observer`) and feeds each event some waiting run listens for
//!   (`workflow_waits`, by tenant and event type) to that run as
//!   `EventObserved`: an ingested source event as its `eventType` and
//!   payload; Herald's notification events with the notification's id as
//!   `notification_id`; an in-app read mark (`InAppItemsMarked`) once per
//!   notification it marks, with `notification_id`, `recipient_id` and
//!   `state`. Only events after the transaction that armed a matcher are fed
//!   to it. The checkpoint is saved after each batch, so a crash feeds a
//!   batch again, which the runs record once. While no run waits, the log is
//!   passed over unread.
//!
//! Several processes may run it on one database: timers are claimed, and an
//! event fed twice is recorded once by the run.

use std::collections::HashSet;
use std::time::Duration;

use chrono::TimeDelta;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::commands::Actor;
use crate::commands::workflows::{self, WorkflowSettings};
use crate::domain::values::{ExternalEventType, JsonObject};
use crate::domain::workflow::ObservedEvent;
use crate::eventstore::{Checkpoint, EventStore, ReadFilter, RecordedEvent};

/// Events read from the log per batch.
const READ_BATCH: usize = 500;

/// Starts the loop; the handle ends after `shutdown`.
pub fn spawn(
    store: EventStore,
    settings: WorkflowSettings,
    shutdown: CancellationToken,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let actor = Actor::new("workflows");
        let owner = Uuid::now_v7();
        let config = settings.config.clone();
        let poll = Duration::from_millis(config.poll_interval_ms.max(10));
        let lease = TimeDelta::seconds(config.lease_seconds.clamp(1, 86_400) as i64);
        let mut appended = store.appended();
        let mut checkpoint = None;
        while !shutdown.is_cancelled() {
            let mut busy = false;
            match fire_due(&store, &settings, owner, lease, config.batch, &actor).await {
                Ok(fired) => busy |= fired >= config.batch as usize,
                Err(error) => tracing::warn!(%error, "cannot fire due workflow timers"),
            }
            match observe(&store, &settings, checkpoint, &actor).await {
                Ok((next, more)) => {
                    checkpoint = Some(next);
                    busy |= more;
                }
                Err(error) => tracing::warn!(%error, "cannot feed events to waiting workflow runs"),
            }
            if busy {
                continue;
            }
            let next_due = workflows::next_due(store.pool()).await;
            if !super::wait_for_work(&mut appended, next_due, poll, &shutdown).await {
                break;
            }
        }
        tracing::info!("workflow worker stopped");
    })
}

/// Fires the timers due now; how many were claimed.
async fn fire_due(
    store: &EventStore,
    settings: &WorkflowSettings,
    owner: Uuid,
    lease: TimeDelta,
    batch: u32,
    actor: &Actor,
) -> Result<usize, sqlx::Error> {
    let due = workflows::claim_due_timers(store.pool(), owner, lease, batch).await?;
    let claimed = due.len();
    for (run_id, visit) in due {
        match workflows::fire_timer(store, settings, run_id, visit, actor).await {
            Ok(workflows::Advanced::Unchanged) => {
                workflows::drop_stale_timer(store.pool(), run_id, visit, owner).await?;
                metrics::counter!("workflow_timers_total", "outcome" => "stale").increment(1);
            }
            Ok(workflows::Advanced::Appended { .. }) => {
                metrics::counter!("workflow_timers_total", "outcome" => "fired").increment(1);
            }
            // The lease runs out and the timer is claimed again.
            Err(error) => {
                tracing::warn!(%run_id, visit, %error, "cannot fire a workflow timer; trying again");
                metrics::counter!("workflow_timers_total", "outcome" => "error").increment(1);
            }
        }
    }
    Ok(claimed)
}

/// Reads one batch of the log after the checkpoint and feeds its events to
/// the runs that listen for them; the checkpoint after it, and whether more
/// is readable at once.
async fn observe(
    store: &EventStore,
    settings: &WorkflowSettings,
    known: Option<Checkpoint>,
    actor: &Actor,
) -> Result<(Checkpoint, bool), Box<dyn std::error::Error + Send + Sync>> {
    let after = match known {
        Some(checkpoint) => checkpoint,
        None => match workflows::observer_checkpoint(store.pool()).await? {
            Some(checkpoint) => checkpoint,
            // A first start: only what is appended from now on concerns runs.
            None => {
                let horizon = store.horizon().await?;
                workflows::save_observer_checkpoint(store.pool(), horizon).await?;
                horizon
            }
        },
    };
    // Taken before the waits are listed: a wait the list does not show was
    // armed by a transaction that ended after this horizon, and is fed only
    // events from after its own transaction, so nothing below it concerns it.
    let horizon = store.horizon().await?;
    let listened: HashSet<String> = workflows::listened_types(store.pool())
        .await?
        .into_iter()
        .collect();
    if listened.is_empty() {
        // Nobody waits: the log up to the horizon is passed over unread, and
        // unsaved (a restart reads from the stored checkpoint, which is safe),
        // so a service without waiting runs pays no reader of every event.
        return Ok((after.max(horizon), false));
    }
    let batch = store
        .read_all(after, READ_BATCH, &ReadFilter::default())
        .await?;
    for recorded in &batch.events {
        for event in observed(recorded) {
            if !listened.contains(event.event_type.as_str()) {
                continue;
            }
            let listeners = workflows::listeners(
                store.pool(),
                &recorded.tenant_id,
                event.event_type.as_str(),
                recorded.transaction_id,
            )
            .await?;
            for (run_id, matcher) in listeners {
                if !matcher.matches(&event) {
                    continue;
                }
                // An error leaves the checkpoint before this batch: it is fed again.
                workflows::observe(store, settings, run_id, event.clone(), actor).await?;
                metrics::counter!("workflow_events_observed_total").increment(1);
            }
        }
    }
    if batch.next != after {
        workflows::save_observer_checkpoint(store.pool(), batch.next).await?;
    }
    Ok((batch.next, !batch.caught_up))
}

/// The events a stored event is to runs that wait (see the module docs).
fn observed(recorded: &RecordedEvent) -> Vec<ObservedEvent> {
    let Value::Object(payload) = &recorded.payload else {
        return Vec::new();
    };
    let event = |event_type: &str, payload: Value| {
        Some(ObservedEvent {
            event_id: recorded.event_id,
            event_type: ExternalEventType::parse(event_type).ok()?,
            payload: JsonObject::parse(payload, usize::MAX).ok()?,
        })
    };
    if recorded.event_type.starts_with("Workflow") {
        return Vec::new();
    }
    if recorded.event_type == "SourceEventIngested" {
        // A source's repeat of an event it delivered before concerns no run again.
        if payload.get("duplicate") == Some(&Value::Bool(true)) {
            return Vec::new();
        }
        let source = payload.get("source_event");
        let event_type = source
            .and_then(|source| source.get("event_type"))
            .and_then(Value::as_str);
        let inner = source.and_then(|source| source.get("payload")).cloned();
        return match (event_type, inner) {
            (Some(event_type), Some(inner)) => event(event_type, inner).into_iter().collect(),
            _ => Vec::new(),
        };
    }
    if recorded.event_type == "InAppItemsMarked" {
        let ids = payload
            .get("notification_ids")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        return ids
            .into_iter()
            .filter_map(|id| {
                event(
                    &recorded.event_type,
                    json!({
                        "notification_id": id,
                        "recipient_id": payload.get("recipient_id"),
                        "state": payload.get("state"),
                    }),
                )
            })
            .collect();
    }
    let mut payload = payload.clone();
    if let Some(id) = recorded.stream_id.strip_prefix("notification-") {
        payload.insert("notification_id".into(), json!(id));
    }
    event(&recorded.event_type, Value::Object(payload))
        .into_iter()
        .collect()
}
