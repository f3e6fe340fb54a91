//! The worker's side of a campaign: start it when due, release its batches
//! into notifications, report progress and completion.

use chrono::Utc;
use serde_json::Value;
use uuid::Uuid;

use super::{counts, keep_tables, load, stream};
use crate::commands::notifications::{self, SendPolicy};
use crate::commands::{Actor, CommandError};
use crate::domain::campaign::{CampaignCommand, CampaignEvent, CampaignSpec, CampaignStatus};
use crate::domain::values::{Channel, Priority, TenantId};
use crate::domain::{Aggregate, Given, RecipientInput, SendNotification, TemplateRefInput};
use crate::eventstore::EventStore;

/// Messages sent in one transaction; the campaign's status is looked at
/// again before each, so a pause or cancel stops a batch part way.
const STATUS_CHECK_EVERY: usize = 250;

/// Starts the campaign if it is scheduled and due; `false` when it was not.
pub async fn start(
    store: &EventStore,
    tenant_id: &TenantId,
    id: Uuid,
    actor: &Actor,
) -> Result<bool, CommandError> {
    let loaded = load(store, tenant_id, id).await?;
    let campaign = &loaded.state;
    let Ok(events) = campaign.decide(CampaignCommand::Start, Utc::now()) else {
        return Ok(false);
    };
    stream(store, tenant_id, id, actor)
        .append(loaded, events, &keep_tables)
        .await?;
    Ok(true)
}

/// What releasing a batch did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Released {
    /// Notifications created now (not found again by their key).
    pub sent: u64,
    /// The whole batch went out and `CampaignBatchReleased` is recorded.
    pub batch_done: bool,
}

/// Releases the campaign's next batch: each message not yet released
/// becomes a LOW-priority notification with the campaign's category, keyed
/// `campaign:<id>:<row>`. Stops part way when the campaign is paused or
/// cancelled meanwhile; the rest goes out on resume.
pub async fn release_next_batch(
    store: &EventStore,
    tenant_id: &TenantId,
    id: Uuid,
    policy: &SendPolicy,
    actor: &Actor,
) -> Result<Released, CommandError> {
    let campaign = load(store, tenant_id, id).await?.state;
    if campaign.status() != Some(CampaignStatus::Sending)
        || campaign.released() >= campaign.batches()
    {
        return Ok(Released::default());
    }
    let spec = campaign
        .spec()
        .cloned()
        .ok_or(CommandError::NotFound("campaign"))?;
    let batch = campaign.released();
    let pending: Vec<(i64, String, sqlx::types::Json<Value>)> = sqlx::query_as(
        "SELECT row_no, address, variables FROM campaign_messages \
         WHERE campaign_id = $1 AND batch_no = $2 AND status = 'CREATED' ORDER BY row_no",
    )
    .bind(id)
    .bind(batch as i32)
    .fetch_all(store.pool())
    .await?;
    let mut released = Released::default();
    for chunk in pending.chunks(STATUS_CHECK_EVERY) {
        if !still_sending(store, id).await? {
            return Ok(released);
        }
        let inputs = chunk
            .iter()
            .map(|(row, address, variables)| message(id, &spec, *row, address, &variables.0))
            .collect();
        let sends = notifications::send_many(store, tenant_id, inputs, policy, actor).await;
        let mut rows = Vec::with_capacity(sends.len());
        let mut ids = Vec::with_capacity(sends.len());
        let mut rejected = Vec::new();
        let mut failure = None;
        for ((row, _, _), outcome) in chunk.iter().zip(sends) {
            match outcome {
                Ok(sent) => {
                    rows.push(*row);
                    ids.push(sent.notification.notification_id.as_uuid());
                    if !sent.duplicate {
                        released.sent += 1;
                    }
                }
                Err(CommandError::Validation(errors)) => {
                    tracing::warn!(campaign_id = %id, row, %errors, "a campaign message was refused");
                    rejected.push(*row);
                }
                Err(error) => failure = Some(error),
            }
        }
        sqlx::query(
            "UPDATE campaign_messages m SET status = 'RELEASED', notification_id = r.id \
             FROM unnest($2::int8[], $3::uuid[]) AS r(row_no, id) \
             WHERE m.campaign_id = $1 AND m.row_no = r.row_no",
        )
        .bind(id)
        .bind(&rows)
        .bind(&ids)
        .execute(store.pool())
        .await?;
        sqlx::query(
            "UPDATE campaign_messages SET status = 'REJECTED' \
             WHERE campaign_id = $1 AND row_no = ANY($2)",
        )
        .bind(id)
        .bind(&rejected)
        .execute(store.pool())
        .await?;
        if let Some(error) = failure {
            // What went out is recorded; the rest is tried on the next round.
            return Err(error);
        }
    }
    match status(store, id).await?.as_deref() {
        Some(status) if status == CampaignStatus::Sending.as_str() => {}
        // Cancelled between the last check and now: the cancel's sweep may
        // have run before these notifications existed.
        Some(status) if status == CampaignStatus::Cancelled.as_str() => {
            super::cancel_released(store, tenant_id, id, actor).await?;
            return Ok(released);
        }
        // Paused: these notifications' queue rows went in held, and the
        // batch is recorded as released on resume.
        _ => return Ok(released),
    }
    let loaded = load(store, tenant_id, id).await?;
    let campaign = &loaded.state;
    if let Ok(events) = campaign.decide(CampaignCommand::ReleaseBatch { batch }, Utc::now()) {
        stream(store, tenant_id, id, actor)
            .append(loaded, events, &keep_tables)
            .await?;
        released.batch_done = true;
    }
    Ok(released)
}

async fn still_sending(store: &EventStore, id: Uuid) -> Result<bool, sqlx::Error> {
    Ok(status(store, id).await?.as_deref() == Some(CampaignStatus::Sending.as_str()))
}

async fn status(store: &EventStore, id: Uuid) -> Result<Option<String>, sqlx::Error> {
    sqlx::query_scalar("SELECT status FROM campaigns WHERE campaign_id = $1")
        .bind(id)
        .fetch_optional(store.pool())
        .await
}

/// One message as a send, keyed by the campaign and its row.
fn message(
    id: Uuid,
    spec: &CampaignSpec,
    row: i64,
    address: &str,
    variables: &Value,
) -> SendNotification {
    let recipient = match spec.channel {
        Channel::Sms => RecipientInput {
            phone: Some(address.to_string()),
            ..RecipientInput::default()
        },
        _ => RecipientInput {
            email: Some(address.to_string()),
            ..RecipientInput::default()
        },
    };
    SendNotification {
        idempotency_key: Some(format!("campaign:{id}:{row}")),
        recipient,
        channels: vec![Given::Typed(spec.channel)],
        priority: Some(Given::Typed(Priority::Low)),
        template: Some(TemplateRefInput {
            key: Some(spec.template_key.as_str().to_string()),
            version: spec.template_version.map(|v| v.get()),
            locale: None,
            variables: Some(variables.clone()),
        }),
        category: Some(spec.category.as_str().to_string()),
        tags: vec![format!("campaign:{id}")],
        campaign_id: Some(id),
        ..SendNotification::default()
    }
}

/// Reports a progress step the campaign passed, and completes it once every
/// batch is out and no message is pending; each with its callback.
pub async fn check_progress(
    store: &EventStore,
    tenant_id: &TenantId,
    id: Uuid,
    actor: &Actor,
) -> Result<Option<CampaignStatus>, CommandError> {
    let loaded = load(store, tenant_id, id).await?;
    let campaign = &loaded.state;
    if !matches!(
        campaign.status(),
        Some(CampaignStatus::Sending | CampaignStatus::Sent)
    ) {
        return Ok(campaign.status());
    }
    let (_, summary) = counts(store.pool(), id).await?;
    let mut events = campaign.decide(
        CampaignCommand::ReachProgress {
            summary: summary.clone(),
        },
        Utc::now(),
    )?;
    let mut after = campaign.clone();
    for event in &events {
        after.apply(event);
    }
    if let Ok(completed) = after.decide(CampaignCommand::Complete { summary }, Utc::now()) {
        events.extend(completed);
    }
    if let Some(completed) = events
        .iter()
        .find(|e| matches!(e, CampaignEvent::Completed { .. }))
    {
        after.apply(completed);
    }
    if !events.is_empty() {
        stream(store, tenant_id, id, actor)
            .append(loaded, events, &keep_tables)
            .await?;
    }
    Ok(after.status())
}
