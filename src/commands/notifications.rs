//! Sending, cancelling and reading notifications.

use std::time::Duration;

use chrono::Utc;

use super::limits::{Charge, Limits, LimitsConfig, consume_quota};
use super::{Actor, CommandError, MAX_CONFLICT_RETRIES, decode, envelopes, recipients, templates};
use crate::domain::attachment::AttachmentsConfig;
use crate::domain::values::{Channel, NotificationId, TenantId};
use crate::domain::{
    Aggregate, Content, Notification, NotificationCommand, NotificationEvent, NotificationRequest,
    NotificationState, SendNotification, ValidationErrors,
};
use crate::eventstore::{
    EventStore, ExpectedVersion, RecordedEvent, StoreError, StoreTransaction, StreamAppend,
};
use crate::projections::delivery_queue::{self, QueueEntry};
use crate::projections::notification_status;

pub fn stream_id(id: &NotificationId) -> String {
    format!("notification-{}", id.as_uuid())
}

/// A notification with its full history.
#[derive(Debug, Clone)]
pub struct NotificationDetails {
    pub state: NotificationState,
    pub timeline: Vec<RecordedEvent>,
}

#[derive(Debug, Clone)]
pub struct Sent {
    pub notification: NotificationState,
    /// The idempotency key named an earlier send; nothing new was created.
    pub duplicate: bool,
}

/// What a send is checked against besides its own content.
#[derive(Clone)]
pub struct SendPolicy {
    /// A repeated idempotency key within it returns the original notification.
    pub idempotency_window: Duration,
    pub limits: std::sync::Arc<Limits>,
    /// Inline attachments must fit the tenant's cap when the send is made.
    pub attachments: std::sync::Arc<AttachmentsConfig>,
}

impl SendPolicy {
    /// No quotas or budgets (tests, tools).
    pub fn unlimited(idempotency_window: Duration) -> SendPolicy {
        SendPolicy {
            idempotency_window,
            limits: std::sync::Arc::new(Limits::new(LimitsConfig::default())),
            attachments: std::sync::Arc::default(),
        }
    }
}

/// Accepts a send: validates it, reserves its idempotency key, charges the
/// tenant's quotas and appends `NotificationRequested`, in one transaction.
#[tracing::instrument(name = "send_notification", skip_all, fields(tenant_id = %tenant_id, notification_id))]
pub async fn send(
    store: &EventStore,
    tenant_id: &TenantId,
    input: SendNotification,
    policy: &SendPolicy,
    actor: &Actor,
) -> Result<Sent, CommandError> {
    let idempotency_window = policy.idempotency_window;
    // The idempotency fingerprint is of the request as given: a retry after
    // a new template version is published is still the same send.
    let given = input.parse(Utc::now())?;
    let mut request = given.clone();
    if let Content::Template(template) = &request.content {
        // Fixed now, so a later publish never changes a queued message.
        request.content =
            Content::Template(templates::pin(store.pool(), tenant_id, template).await?);
    }
    require_stored_addresses(store, tenant_id, &request).await?;
    policy
        .attachments
        .validate(tenant_id, &request.attachments)?;
    let notification_id = NotificationId::new();
    tracing::Span::current().record(
        "notification_id",
        tracing::field::display(notification_id.as_uuid()),
    );
    let events = Notification::default().decide(
        NotificationCommand::Request {
            tenant_id: tenant_id.clone(),
            notification_id,
            request: request.clone(),
        },
        Utc::now(),
    )?;
    let limits = policy.limits.effective(store.pool(), tenant_id).await?;
    let mut tx = store.begin().await?;
    if let Some(key) = &request.idempotency_key {
        match reserve(
            &mut tx,
            tenant_id,
            key.as_str(),
            &notification_id,
            &given,
            idempotency_window,
        )
        .await
        {
            Ok(Reservation::Reserved) => {}
            Ok(Reservation::Taken(original)) => {
                tx.rollback().await?;
                let notification = get(store, tenant_id, &original)
                    .await?
                    .ok_or(CommandError::NotFound("notification"))?;
                return Ok(Sent {
                    notification: notification.state,
                    duplicate: true,
                });
            }
            Ok(Reservation::Conflict) => {
                tx.rollback().await?;
                return Err(CommandError::IdempotencyConflict);
            }
            Err(error) => {
                tx.rollback().await.ok();
                return Err(error);
            }
        }
    }
    let positions = append_in(
        &mut tx,
        tenant_id,
        &notification_id,
        ExpectedVersion::NoStream,
        &events,
        actor,
    )
    .await;
    if let Err(error) = positions {
        tx.rollback().await.ok();
        return Err(error);
    }
    let state = Notification::fold(&events);
    let state = state
        .state()
        .ok_or(CommandError::NotFound("notification"))?;
    notification_status::upsert(tx.connection(), state, events.len() as i64).await?;
    sync_queue(tx.connection(), &[state]).await?;
    // Last: the charge locks the tenant's usage row until the commit.
    let quota = if limits.has_quota() {
        let charge = Charge {
            messages: 1,
            estimated_cost: policy.limits.costs().estimate(&request),
        };
        match consume_quota(&mut tx, tenant_id, &limits, charge, Utc::now(), actor).await {
            Ok(outcome) => Some(outcome),
            Err(error) => {
                tx.rollback().await.ok();
                return Err(error);
            }
        }
    } else {
        None
    };
    tx.commit().await?;
    if let Some(quota) = quota {
        quota.record_metrics(tenant_id);
    }
    metrics::counter!(
        "notifications_enqueued_total",
        "channel" => state.request.channels.first().map(|c| c.as_str()).unwrap_or("none"),
        "tenant" => tenant_id.to_string()
    )
    .increment(1);
    Ok(Sent {
        notification: state.clone(),
        duplicate: false,
    })
}

/// A send naming a recipient by id may leave addresses to the stored
/// profile; each channel must find one there or in the request.
async fn require_stored_addresses(
    store: &EventStore,
    tenant_id: &TenantId,
    request: &NotificationRequest,
) -> Result<(), CommandError> {
    let Some(id) = &request.recipient.id else {
        return Ok(());
    };
    let given = &request.recipient;
    let missing: Vec<Channel> = request
        .channels
        .iter()
        .copied()
        .filter(|channel| match channel {
            Channel::Email => given.email.is_none(),
            Channel::Sms => given.phone.is_none(),
            Channel::Push => given.push_target.is_none(),
            Channel::Webhook => given.webhook_url.is_none(),
            Channel::Ntfy => given.ntfy_topic.is_none(),
            Channel::InApp => false,
        })
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    let profile = recipients::profile(store.pool(), tenant_id, id).await?;
    let mut errors = ValidationErrors::default();
    for channel in missing {
        let stored = profile.as_ref().is_some_and(|p| match channel {
            Channel::Email => p.email.is_some(),
            Channel::Sms => p.phone.is_some(),
            Channel::Push => p.push_target.is_some(),
            Channel::Webhook => p.webhook_url.is_some(),
            Channel::Ntfy => p.ntfy_topic.is_some(),
            Channel::InApp => true,
        });
        if !stored {
            let field = match channel {
                Channel::Email => "email",
                Channel::Sms => "phone",
                Channel::Push => "push_target",
                Channel::Webhook => "webhook_url",
                _ => "ntfy_topic",
            };
            errors.add(
                format!("recipient.{field}"),
                format!(
                    "is required for the {channel} channel: neither the request nor recipient {}'s stored profile has one",
                    id.as_str()
                ),
            );
        }
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(errors.into())
    }
}

enum Reservation {
    Reserved,
    Taken(NotificationId),
    Conflict,
}

/// Claims an idempotency key, unless a live reservation already holds it. A
/// concurrent claim of the same key waits here until the first one commits.
async fn reserve(
    tx: &mut StoreTransaction,
    tenant_id: &TenantId,
    key: &str,
    notification_id: &NotificationId,
    request: &NotificationRequest,
    window: Duration,
) -> Result<Reservation, CommandError> {
    let fingerprint = request.fingerprint();
    let claimed: Option<uuid::Uuid> = sqlx::query_scalar(
        "INSERT INTO idempotency_keys (tenant_id, idempotency_key, notification_id, fingerprint, created_at) \
         VALUES ($1, $2, $3, $4, now()) \
         ON CONFLICT (tenant_id, idempotency_key) DO UPDATE \
             SET notification_id = EXCLUDED.notification_id, fingerprint = EXCLUDED.fingerprint, \
                 created_at = EXCLUDED.created_at \
             WHERE idempotency_keys.created_at < now() - make_interval(secs => $5) \
         RETURNING notification_id",
    )
    .bind(tenant_id.as_str())
    .bind(key)
    .bind(notification_id.as_uuid())
    .bind(&fingerprint)
    .bind(window.as_secs_f64())
    .fetch_optional(tx.connection())
    .await?;
    if claimed.is_some() {
        return Ok(Reservation::Reserved);
    }
    let (original, original_fingerprint): (uuid::Uuid, String) = sqlx::query_as(
        "SELECT notification_id, fingerprint FROM idempotency_keys WHERE tenant_id = $1 AND idempotency_key = $2",
    )
    .bind(tenant_id.as_str())
    .bind(key)
    .fetch_one(tx.connection())
    .await?;
    Ok(if original_fingerprint == fingerprint {
        Reservation::Taken(NotificationId::from(original))
    } else {
        Reservation::Conflict
    })
}

async fn append_in(
    tx: &mut StoreTransaction,
    tenant_id: &TenantId,
    notification_id: &NotificationId,
    expected: ExpectedVersion,
    events: &[NotificationEvent],
    actor: &Actor,
) -> Result<Vec<i64>, CommandError> {
    let new_events = envelopes(
        events,
        NotificationEvent::event_type,
        NotificationEvent::SCHEMA_VERSION,
        tenant_id.as_str(),
        actor,
    )?;
    Ok(tx
        .append(&[StreamAppend {
            stream_id: stream_id(notification_id),
            expected,
            events: new_events,
        }])
        .await?)
}

/// The notification and its timeline, if it exists and belongs to the tenant.
#[tracing::instrument(name = "get_notification", skip_all, fields(tenant_id = %tenant_id, notification_id = %id.as_uuid()))]
pub async fn get(
    store: &EventStore,
    tenant_id: &TenantId,
    id: &NotificationId,
) -> Result<Option<NotificationDetails>, CommandError> {
    let timeline = store.read_stream(&stream_id(id), 1).await?;
    let notification = Notification::fold(&decode(&timeline, NotificationEvent::upcast)?);
    Ok(match notification.state() {
        // Another tenant's notification does not exist, as far as this caller can tell.
        Some(state) if &state.tenant_id == tenant_id => Some(NotificationDetails {
            state: state.clone(),
            timeline,
        }),
        _ => None,
    })
}

/// Applies a command to an existing notification, retrying when another
/// writer moved the stream first.
#[tracing::instrument(name = "notification_command", skip_all, fields(tenant_id = %tenant_id, notification_id = %id.as_uuid()))]
pub async fn handle(
    store: &EventStore,
    tenant_id: &TenantId,
    id: &NotificationId,
    command: impl Fn() -> NotificationCommand,
    actor: &Actor,
) -> Result<NotificationDetails, CommandError> {
    for _ in 0..MAX_CONFLICT_RETRIES {
        let details = get(store, tenant_id, id)
            .await?
            .ok_or(CommandError::NotFound("notification"))?;
        let mut notification =
            Notification::fold(&decode(&details.timeline, NotificationEvent::upcast)?);
        let version = details.timeline.len() as i64;
        let events = notification.decide(command(), Utc::now())?;
        if events.is_empty() {
            return Ok(details);
        }
        let mut tx = store.begin().await?;
        match append_in(
            &mut tx,
            tenant_id,
            id,
            ExpectedVersion::Exact(version),
            &events,
            actor,
        )
        .await
        {
            Ok(_) => {}
            Err(CommandError::Store(error)) if error.is_conflict() => {
                tx.rollback().await.ok();
                continue;
            }
            Err(error) => {
                tx.rollback().await.ok();
                return Err(error);
            }
        }
        for event in &events {
            notification.apply(event);
        }
        let state = notification
            .state()
            .ok_or(CommandError::NotFound("notification"))?;
        notification_status::upsert(tx.connection(), state, version + events.len() as i64).await?;
        sync_queue(tx.connection(), &[state]).await?;
        tx.commit().await?;
        return get(store, tenant_id, id)
            .await?
            .ok_or(CommandError::NotFound("notification"));
    }
    Err(CommandError::Store(StoreError::TransactionAborted))
}

pub async fn cancel(
    store: &EventStore,
    tenant_id: &TenantId,
    id: &NotificationId,
    reason: Option<String>,
    actor: &Actor,
) -> Result<NotificationDetails, CommandError> {
    handle(
        store,
        tenant_id,
        id,
        || NotificationCommand::Cancel {
            reason: reason.clone(),
        },
        actor,
    )
    .await
}

/// Sends a dead-lettered notification through again (DLQ replay).
pub async fn requeue(
    store: &EventStore,
    tenant_id: &TenantId,
    id: &NotificationId,
    reason: &str,
    actor: &Actor,
) -> Result<NotificationDetails, CommandError> {
    handle(
        store,
        tenant_id,
        id,
        || NotificationCommand::Requeue {
            reason: reason.to_string(),
        },
        actor,
    )
    .await
}

/// Keeps the delivery queue in step with notifications that just changed:
/// pending ones are (re)queued at their due time, ended or sent ones leave,
/// and one in flight keeps the row its worker leased.
async fn sync_queue(
    conn: &mut sqlx::PgConnection,
    states: &[&NotificationState],
) -> Result<(), sqlx::Error> {
    let now = Utc::now();
    let mut due = Vec::new();
    let mut done = Vec::new();
    for state in states {
        if state.status.is_pending() {
            due.push(QueueEntry::of(state, now));
        } else if !state.status.is_unsent() {
            done.push(state.notification_id);
        }
    }
    delivery_queue::put(conn, &due).await?;
    delivery_queue::remove(&mut *conn, &done).await
}

/// A notification as a worker loaded it.
#[derive(Debug, Clone)]
pub struct Loaded {
    pub notification: Notification,
    /// Events in its stream: the version the next append expects.
    pub version: i64,
}

/// Several notifications in one round trip; ids without a stream are left out.
pub async fn load_many(
    store: &EventStore,
    ids: &[NotificationId],
) -> Result<Vec<Loaded>, CommandError> {
    let stream_ids: Vec<String> = ids.iter().map(stream_id).collect();
    let recorded = store.read_streams(&stream_ids).await?;
    let mut loaded = Vec::with_capacity(ids.len());
    for stream in recorded.chunk_by(|a, b| a.stream_id == b.stream_id) {
        loaded.push(Loaded {
            notification: Notification::fold(&decode(stream, NotificationEvent::upcast)?),
            version: stream.len() as i64,
        });
    }
    Ok(loaded)
}

/// Events a worker decided for one notification, and the state after them.
#[derive(Debug, Clone)]
pub struct Change {
    pub state: NotificationState,
    /// The stream's version the events were decided on.
    pub expected_version: i64,
    pub events: Vec<NotificationEvent>,
}

/// Appends the changes of many notifications in one transaction, with the
/// queue moves they imply. A conflict on any stream fails the whole batch
/// (`StoreError::is_conflict`) so the caller can redo those one by one.
pub async fn append_changes(
    store: &EventStore,
    changes: &[Change],
    actor: &Actor,
) -> Result<(), CommandError> {
    let changes: Vec<&Change> = changes.iter().filter(|c| !c.events.is_empty()).collect();
    if changes.is_empty() {
        return Ok(());
    }
    let mut appends = Vec::with_capacity(changes.len());
    for change in &changes {
        appends.push(StreamAppend {
            stream_id: stream_id(&change.state.notification_id),
            expected: ExpectedVersion::Exact(change.expected_version),
            events: envelopes(
                &change.events,
                NotificationEvent::event_type,
                NotificationEvent::SCHEMA_VERSION,
                change.state.tenant_id.as_str(),
                actor,
            )?,
        });
    }
    let mut tx = store.begin().await?;
    if let Err(error) = tx.append(&appends).await {
        tx.rollback().await.ok();
        return Err(error.into());
    }
    let states: Vec<&NotificationState> = changes.iter().map(|c| &c.state).collect();
    sync_queue(tx.connection(), &states).await?;
    tx.commit().await?;
    Ok(())
}
