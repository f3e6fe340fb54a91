//! Sending, cancelling and reading notifications.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use chrono::Utc;

use super::limits::{Charge, EffectiveLimits, Limits, LimitsConfig, QuotaOutcome, consume_quota};
use super::pipeline::{Stream, envelopes, in_transaction, retry_on_conflict};
use super::templates::Pins;
use super::{Actor, CommandError, check_urls, recipients};
use crate::domain::attachment::{AttachmentSource, AttachmentsConfig};
use crate::domain::values::{Channel, NotificationId, TenantId};
use crate::domain::{
    Aggregate, Content, DomainError, Notification, NotificationCommand, NotificationEvent,
    NotificationRequest, NotificationState, SendNotification, ValidationErrors,
};
use crate::egress::Egress;
use crate::eventstore::{
    EventStore, ExpectedVersion, RecordedEvent, StoreTransaction, StreamAppend,
};
use crate::projections::delivery_queue::{self, QueueEntry};
use crate::projections::{dead_letters, notification_status};
use crate::telemetry::trace::TracePoint;

pub fn stream_id(id: &NotificationId) -> String {
    format!("notification-{}", id.as_uuid())
}

/// A notification with its full history.
#[derive(Debug, Clone)]
pub struct NotificationDetails {
    /// Folded from the events that could be read.
    pub state: NotificationState,
    /// Every stored event, the unreadable ones included.
    pub timeline: Vec<RecordedEvent>,
    /// The events of `timeline` that cannot be read, in order.
    pub unreadable: Vec<Unreadable>,
}

impl NotificationDetails {
    /// Why the event at `position` cannot be read, if it cannot.
    pub fn read_error(&self, position: i64) -> Option<&str> {
        self.unreadable
            .iter()
            .find(|u| u.position == position)
            .map(|u| u.error.as_str())
    }
}

/// A stored event that does not decode (a malformed payload, an unknown
/// type or schema version): where it is, and why.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error(
    "event {position} ({event_type}, version {version} of the notification's stream) cannot be read: {error}"
)]
pub struct Unreadable {
    pub position: i64,
    pub version: i64,
    pub event_type: String,
    pub error: String,
}

impl Unreadable {
    /// As the APIs show it, beside the readable events.
    pub fn view(&self) -> serde_json::Value {
        serde_json::json!({
            "position": self.position,
            "version": self.version,
            "type": self.event_type,
            "error": self.error,
        })
    }
}

/// A stream's events decoded one by one, each with why not when it cannot
/// be, so one bad event does not hide the rest.
fn read_events(
    recorded: &[RecordedEvent],
) -> (Vec<Result<NotificationEvent, DomainError>>, Vec<Unreadable>) {
    let events: Vec<_> = recorded
        .iter()
        .map(|r| NotificationEvent::upcast(&r.event_type, r.schema_version, r.payload.clone()))
        .collect();
    let unreadable = recorded
        .iter()
        .zip(&events)
        .filter_map(|(r, event)| {
            let error = event.as_ref().err()?;
            Some(Unreadable {
                position: r.global_position,
                version: r.stream_version,
                event_type: r.event_type.clone(),
                error: error.to_string(),
            })
        })
        .collect();
    (events, unreadable)
}

/// The state of one stream as far as it can be read, and its unreadable
/// events; `UnreadableStream` when the request itself is one of them.
fn fold_stream(
    recorded: &[RecordedEvent],
) -> Result<(Notification, Vec<Unreadable>), CommandError> {
    let (events, unreadable) = read_events(recorded);
    match Notification::fold_readable(&events) {
        Ok(notification) => Ok((notification, unreadable)),
        Err(_) => Err(CommandError::UnreadableStream(
            unreadable
                .into_iter()
                .next()
                .ok_or(CommandError::NotFound("notification"))?,
        )),
    }
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
    /// Judges the URLs a send names (callback, webhook destination, attachments).
    pub egress: Egress,
}

impl SendPolicy {
    /// No quotas or budgets (tests, tools).
    pub fn unlimited(idempotency_window: Duration) -> SendPolicy {
        SendPolicy {
            idempotency_window,
            limits: std::sync::Arc::new(Limits::new(LimitsConfig::default())),
            attachments: std::sync::Arc::default(),
            egress: Egress::default(),
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
    let prepared = prepare(
        store,
        tenant_id,
        input,
        actor,
        policy,
        &mut Pins::default(),
        None,
    )
    .await?;
    tracing::Span::current().record(
        "notification_id",
        tracing::field::display(prepared.notification_id.as_uuid()),
    );
    let mut sent = commit_sends(store, tenant_id, &[prepared], policy).await?;
    sent.pop().ok_or(CommandError::NotFound("notification"))?
}

/// [`send`] under the id the caller chose (a workflow's `send` step derives
/// it from the run and the visit): a second call, after a crash or from a
/// racing process, finds the notification already made and answers it as a
/// duplicate instead of sending again.
pub async fn send_as(
    store: &EventStore,
    tenant_id: &TenantId,
    notification_id: NotificationId,
    input: SendNotification,
    policy: &SendPolicy,
    actor: &Actor,
) -> Result<Sent, CommandError> {
    if let Some(sent) = already_made(store, tenant_id, notification_id).await? {
        return Ok(sent);
    }
    let prepared = prepare(
        store,
        tenant_id,
        input,
        actor,
        policy,
        &mut Pins::default(),
        Some(notification_id),
    )
    .await?;
    match commit_sends(store, tenant_id, &[prepared], policy).await {
        Ok(mut sent) => sent.pop().ok_or(CommandError::NotFound("notification"))?,
        Err(CommandError::Store(error)) if error.is_conflict() => {
            already_made(store, tenant_id, notification_id)
                .await?
                .ok_or(CommandError::Store(error))
        }
        Err(error) => Err(error),
    }
}

/// The tenant's notification `notification_id`, when it was already made.
async fn already_made(
    store: &EventStore,
    tenant_id: &TenantId,
    notification_id: NotificationId,
) -> Result<Option<Sent>, CommandError> {
    let loaded = load_many(store, &[notification_id]).await?;
    Ok(loaded.into_iter().find_map(|(_, loaded)| {
        let notification = loaded.ok()?.notification.state()?.clone();
        (&notification.tenant_id == tenant_id).then_some(Sent {
            notification,
            duplicate: true,
        })
    }))
}

/// Accepts many sends of one tenant, each succeeding or failing on its own,
/// in as few transactions as it can: one for the whole batch, or one per
/// send when the batch as a whole is refused (a quota that cannot take all
/// of it, a lost race), so each send gets its own answer. A key repeated
/// within the batch is sent after the first, which it then finds.
pub async fn send_many(
    store: &EventStore,
    tenant_id: &TenantId,
    inputs: Vec<SendNotification>,
    policy: &SendPolicy,
    actor: &Actor,
) -> Vec<Result<Sent, CommandError>> {
    let inputs = inputs
        .into_iter()
        .map(|input| (input, actor.clone()))
        .collect();
    send_each(store, tenant_id, inputs, policy).await
}

/// As [`send_many`], each send with its own actor (group commit gathers
/// the sends of several requests).
#[tracing::instrument(name = "send_notifications", skip_all, fields(tenant_id = %tenant_id, count = inputs.len()))]
pub async fn send_each(
    store: &EventStore,
    tenant_id: &TenantId,
    inputs: Vec<(SendNotification, Actor)>,
    policy: &SendPolicy,
) -> Vec<Result<Sent, CommandError>> {
    let mut results: Vec<Option<Result<Sent, CommandError>>> =
        std::iter::repeat_with(|| None).take(inputs.len()).collect();
    let mut pins = Pins::default();
    let mut keys = HashSet::new();
    let mut batch = Vec::new();
    let mut repeated = Vec::new();
    for (index, (input, actor)) in inputs.into_iter().enumerate() {
        let given_key = input.idempotency_key.clone();
        if given_key
            .as_ref()
            .is_some_and(|key| !keys.insert(key.clone()))
        {
            repeated.push((index, input, actor));
            continue;
        }
        match prepare(store, tenant_id, input, &actor, policy, &mut pins, None).await {
            Ok(prepared) => batch.push((index, prepared)),
            Err(error) => results[index] = Some(Err(error)),
        }
    }
    let (indexes, prepared): (Vec<usize>, Vec<Prepared>) = batch.into_iter().unzip();
    let single = prepared.len() == 1;
    match commit_sends(store, tenant_id, &prepared, policy).await {
        Ok(sent) => {
            for (index, outcome) in indexes.iter().zip(sent) {
                results[*index] = Some(outcome);
            }
        }
        Err(error) if single => results[indexes[0]] = Some(Err(error)),
        Err(error) => {
            tracing::debug!(%error, "a batch of sends was refused as a whole; sending one by one");
            for (index, one) in indexes.iter().zip(&prepared) {
                let outcome = commit_sends(store, tenant_id, std::slice::from_ref(one), policy)
                    .await
                    .and_then(|mut sent| {
                        sent.pop().ok_or(CommandError::NotFound("notification"))?
                    });
                results[*index] = Some(outcome);
            }
        }
    }
    for (index, input, actor) in repeated {
        results[index] = Some(send(store, tenant_id, input, policy, &actor).await);
    }
    results
        .into_iter()
        .map(|outcome| outcome.unwrap_or(Err(CommandError::NotFound("notification"))))
        .collect()
}

/// A send checked and decided, not yet stored.
struct Prepared {
    /// As given, before the template was pinned: what a retry is compared with.
    given: NotificationRequest,
    request: NotificationRequest,
    notification_id: NotificationId,
    events: Vec<NotificationEvent>,
    actor: Actor,
}

async fn prepare(
    store: &EventStore,
    tenant_id: &TenantId,
    input: SendNotification,
    actor: &Actor,
    policy: &SendPolicy,
    pins: &mut Pins,
    chosen_id: Option<NotificationId>,
) -> Result<Prepared, CommandError> {
    // The idempotency fingerprint is of the request as given: a retry after
    // a new template version is published is still the same send.
    let trace = trace_of(&input, actor);
    let given = input.parse(Utc::now())?;
    let mut request = given.clone();
    if let Content::Template(template) = &request.content {
        // Fixed now, so a later publish never changes a queued message.
        request.content = Content::Template(pins.pin(store.pool(), tenant_id, template).await?);
    }
    require_stored_addresses(store, tenant_id, &request).await?;
    policy
        .attachments
        .validate(tenant_id, &request.attachments)?;
    check_urls(&policy.egress, named_urls(&request)).await?;
    let notification_id = chosen_id.unwrap_or_else(NotificationId::new);
    let events = Notification::default().decide(
        NotificationCommand::Request {
            tenant_id: tenant_id.clone(),
            notification_id,
            request: request.clone(),
        },
        Utc::now(),
    )?;
    Ok(Prepared {
        given,
        request,
        notification_id,
        events,
        actor: actor.at(Some(trace)),
    })
}

/// The trace a new notification's events go in: the one its request names
/// in `trace_id`, else its caller's, else a new one.
pub fn trace_of(input: &SendNotification, actor: &Actor) -> TracePoint {
    let caller = actor.trace.unwrap_or_else(TracePoint::new_trace);
    match &input.trace_id {
        Some(given) => {
            let named = TracePoint::from_caller(given);
            if named.trace_id == caller.trace_id {
                caller
            } else {
                named
            }
        }
        None => caller,
    }
}

/// A notification's trace as its events record it: its request's trace id,
/// with the span of the last event recorded in that trace with one (where
/// the next span of its life goes).
pub fn stream_trace(recorded: &[RecordedEvent]) -> Option<TracePoint> {
    let trace_id = recorded
        .iter()
        .find_map(|event| TracePoint::read(&event.metadata))?
        .trace_id;
    let span_id = recorded
        .iter()
        .rev()
        .filter_map(|event| TracePoint::read(&event.metadata))
        .find(|point| point.trace_id == trace_id && point.span_id.is_some())
        .and_then(|point| point.span_id);
    Some(TracePoint { trace_id, span_id })
}

/// The URLs a send makes Herald call, by field.
fn named_urls(request: &NotificationRequest) -> Vec<(String, &url::Url)> {
    let mut urls = Vec::new();
    if let Some(url) = &request.callback_url {
        urls.push(("callback_url".to_string(), url.as_url()));
    }
    if let Some(url) = &request.recipient.webhook_url {
        urls.push(("recipient.webhook_url".to_string(), url.as_url()));
    }
    for (index, spec) in request.attachments.iter().enumerate() {
        if let AttachmentSource::Url(url) = &spec.source {
            urls.push((format!("attachments[{index}].source.url"), url.as_url()));
        }
    }
    urls
}

/// Stores prepared sends in one transaction. `Err` refuses the whole batch
/// (nothing is stored); an item's own refusal (its key names a different
/// request) is its `Err` in the list.
async fn commit_sends(
    store: &EventStore,
    tenant_id: &TenantId,
    prepared: &[Prepared],
    policy: &SendPolicy,
) -> Result<Vec<Result<Sent, CommandError>>, CommandError> {
    if prepared.is_empty() {
        return Ok(Vec::new());
    }
    let limits = policy.limits.effective(store.pool(), tenant_id).await?;
    let limits = &limits;
    let (outcomes, quota) = in_transaction(store, |tx| {
        Box::pin(store_sends(tx, tenant_id, prepared, policy, limits))
    })
    .await?;
    if let Some(quota) = quota {
        quota.record_metrics(tenant_id);
    }
    let originals: Vec<NotificationId> = outcomes
        .iter()
        .filter_map(|outcome| match outcome {
            Stored::Duplicate(original) => Some(*original),
            _ => None,
        })
        .collect();
    let mut originals: HashMap<NotificationId, NotificationState> = if originals.is_empty() {
        HashMap::new()
    } else {
        load_many(store, &originals)
            .await?
            .into_iter()
            .filter_map(|(_, loaded)| loaded.ok()?.notification.state().cloned())
            .filter(|state| &state.tenant_id == tenant_id)
            .map(|state| (state.notification_id, state))
            .collect()
    };
    let mut sent = Vec::with_capacity(outcomes.len());
    for outcome in outcomes {
        sent.push(match outcome {
            Stored::New { state, .. } => {
                metrics::counter!(
                    "notifications_enqueued_total",
                    "channel" => state.request.channels.first().map(|c| c.as_str()).unwrap_or("none"),
                    "tenant" => tenant_id.to_string()
                )
                .increment(1);
                Ok(Sent {
                    notification: *state,
                    duplicate: false,
                })
            }
            Stored::Duplicate(original) => originals
                .remove(&original)
                .map(|notification| Sent {
                    notification,
                    duplicate: true,
                })
                .ok_or(CommandError::NotFound("notification")),
            Stored::Conflict => Err(CommandError::IdempotencyConflict),
        });
    }
    Ok(sent)
}

/// What became of one prepared send in its transaction.
enum Stored {
    /// Appended: the notification's state after its `version` events.
    New {
        state: Box<NotificationState>,
        version: i64,
    },
    /// Its key named this earlier send of the same request.
    Duplicate(NotificationId),
    /// Its key named an earlier send of a different request.
    Conflict,
}

async fn store_sends(
    tx: &mut StoreTransaction,
    tenant_id: &TenantId,
    prepared: &[Prepared],
    policy: &SendPolicy,
    limits: &EffectiveLimits,
) -> Result<(Vec<Stored>, Option<QuotaOutcome>), CommandError> {
    let keyed: Vec<&Prepared> = prepared
        .iter()
        .filter(|p| p.request.idempotency_key.is_some())
        .collect();
    let mut taken = reserve(tx, tenant_id, &keyed, policy.idempotency_window).await?;
    let mut outcomes = Vec::with_capacity(prepared.len());
    let mut appends = Vec::with_capacity(prepared.len());
    let mut charge = Charge {
        messages: 0,
        estimated_cost: 0.0,
    };
    for item in prepared {
        let refused = item
            .request
            .idempotency_key
            .as_ref()
            .and_then(|key| taken.remove(key.as_str()));
        if let Some(refused) = refused {
            outcomes.push(refused);
            continue;
        }
        appends.push(StreamAppend {
            stream_id: stream_id(&item.notification_id),
            expected: ExpectedVersion::NoStream,
            events: envelopes(&item.events, tenant_id.as_str(), &item.actor)?,
        });
        let state = Box::new(
            Notification::fold(&item.events)
                .state()
                .ok_or(CommandError::NotFound("notification"))?
                .clone(),
        );
        charge.messages += 1;
        charge.estimated_cost += policy.limits.costs().estimate(&item.request);
        outcomes.push(Stored::New {
            state,
            version: item.events.len() as i64,
        });
    }
    if appends.is_empty() {
        return Ok((outcomes, None));
    }
    tx.append(&appends).await?;
    let rows: Vec<(&NotificationState, i64)> = outcomes
        .iter()
        .filter_map(|outcome| match outcome {
            Stored::New { state, version } => Some((state.as_ref(), *version)),
            _ => None,
        })
        .collect();
    notification_status::upsert(tx.connection(), &rows).await?;
    let states: Vec<&NotificationState> = rows.iter().map(|(state, _)| *state).collect();
    sync_queue(tx.connection(), &states).await?;
    // Last: the charge locks the tenant's usage row until the commit.
    let quota = if limits.has_quota() {
        // The quota's own events name the first send's caller.
        let actor = &prepared[0].actor;
        Some(consume_quota(tx, tenant_id, limits, charge, Utc::now(), actor).await?)
    } else {
        None
    };
    Ok((outcomes, quota))
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

/// Claims the sends' idempotency keys, unless live reservations already
/// hold them; returns the keys already held, with what each send becomes. A
/// concurrent claim of the same key waits here until the first one commits.
async fn reserve(
    tx: &mut StoreTransaction,
    tenant_id: &TenantId,
    keyed: &[&Prepared],
    window: Duration,
) -> Result<HashMap<String, Stored>, CommandError> {
    if keyed.is_empty() {
        return Ok(HashMap::new());
    }
    let mut keys = Vec::with_capacity(keyed.len());
    let mut ids = Vec::with_capacity(keyed.len());
    let mut fingerprints = Vec::with_capacity(keyed.len());
    for item in keyed {
        if let Some(key) = &item.request.idempotency_key {
            keys.push(key.as_str().to_string());
            ids.push(item.notification_id.as_uuid());
            fingerprints.push(item.given.fingerprint());
        }
    }
    // In key order, so two batches sharing keys wait on each other instead
    // of deadlocking.
    let claimed: Vec<String> = sqlx::query_scalar(
        "INSERT INTO idempotency_keys (tenant_id, idempotency_key, notification_id, fingerprint, created_at) \
         SELECT $1, k, id, fp, now() FROM unnest($2::text[], $3::uuid[], $4::text[]) AS i(k, id, fp) ORDER BY k \
         ON CONFLICT (tenant_id, idempotency_key) DO UPDATE \
             SET notification_id = EXCLUDED.notification_id, fingerprint = EXCLUDED.fingerprint, \
                 created_at = EXCLUDED.created_at \
             WHERE idempotency_keys.created_at < now() - make_interval(secs => $5) \
         RETURNING idempotency_key",
    )
    .bind(tenant_id.as_str())
    .bind(&keys)
    .bind(&ids)
    .bind(&fingerprints)
    .bind(window.as_secs_f64())
    .fetch_all(tx.connection())
    .await?;
    if claimed.len() == keys.len() {
        return Ok(HashMap::new());
    }
    let claimed: HashSet<String> = claimed.into_iter().collect();
    let mut asked = HashMap::new();
    for (key, fingerprint) in keys.into_iter().zip(fingerprints) {
        if !claimed.contains(&key) {
            asked.insert(key, fingerprint);
        }
    }
    let held: Vec<(String, uuid::Uuid, String)> = sqlx::query_as(
        "SELECT idempotency_key, notification_id, fingerprint FROM idempotency_keys \
         WHERE tenant_id = $1 AND idempotency_key = ANY($2)",
    )
    .bind(tenant_id.as_str())
    .bind(asked.keys().collect::<Vec<_>>())
    .fetch_all(tx.connection())
    .await?;
    Ok(held
        .into_iter()
        .filter_map(|(key, original, fingerprint)| {
            let asked = asked.get(&key)?;
            let outcome = if *asked == fingerprint {
                Stored::Duplicate(NotificationId::from(original))
            } else {
                Stored::Conflict
            };
            Some((key, outcome))
        })
        .collect())
}

/// The notification and its timeline, if it exists and belongs to the tenant.
#[tracing::instrument(name = "get_notification", skip_all, fields(tenant_id = %tenant_id, notification_id = %id.as_uuid()))]
pub async fn get(
    store: &EventStore,
    tenant_id: &TenantId,
    id: &NotificationId,
) -> Result<Option<NotificationDetails>, CommandError> {
    let timeline = store.read_stream(&stream_id(id), 1).await?;
    // Another tenant's notification does not exist, as far as this caller
    // can tell: judged by the log's own column, so an unreadable request of
    // another tenant's says nothing either.
    if timeline
        .first()
        .is_none_or(|first| first.tenant_id != tenant_id.as_str())
    {
        return Ok(None);
    }
    let (notification, unreadable) = fold_stream(&timeline)?;
    Ok(match notification.state() {
        Some(state) if &state.tenant_id == tenant_id => Some(NotificationDetails {
            state: state.clone(),
            timeline,
            unreadable,
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
    command: impl Fn() -> NotificationCommand + Sync,
    actor: &Actor,
) -> Result<NotificationDetails, CommandError> {
    let command = &command;
    retry_on_conflict(|| {
        Box::pin(async move {
            let details = get(store, tenant_id, id)
                .await?
                .ok_or(CommandError::NotFound("notification"))?;
            // A command is decided on the whole state, never on a guess.
            if let Some(unreadable) = details.unreadable.first() {
                return Err(CommandError::UnreadableStream(unreadable.clone()));
            }
            let mut notification = Notification::from_state(details.state.clone());
            let version = details.timeline.len() as i64;
            let events = notification.decide(command(), Utc::now())?;
            if events.is_empty() {
                return Ok(details);
            }
            // In the notification's trace; the span only when this one is in it.
            let trace = stream_trace(&details.timeline).map(|notification| TracePoint {
                span_id: actor
                    .trace
                    .filter(|here| here.trace_id == notification.trace_id)
                    .and_then(|here| here.span_id),
                ..notification
            });
            let actor = actor.at(trace.or(actor.trace));
            let append =
                Stream::new(store, stream_id(id), tenant_id, &actor).appending(version, &events)?;
            for event in &events {
                notification.apply(event);
            }
            let state = notification
                .state()
                .ok_or(CommandError::NotFound("notification"))?;
            let row = (state, version + events.len() as i64);
            in_transaction(store, |tx| {
                Box::pin(async move {
                    tx.append(&[append]).await?;
                    notification_status::upsert(tx.connection(), &[row]).await?;
                    Ok(sync_queue(tx.connection(), &[row.0]).await?)
                })
            })
            .await?;
            get(store, tenant_id, id)
                .await?
                .ok_or(CommandError::NotFound("notification"))
        })
    })
    .await
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

/// At most this many dead letters are requeued by one [`replay_dead_letters`].
pub const MAX_DEAD_LETTER_REPLAY: usize = 10_000;

/// Requeues every dead letter of the tenant that `filter` selects (the
/// newest [`MAX_DEAD_LETTER_REPLAY`]), each with a fresh retry budget;
/// returns how many were requeued. One requeued since the read model last
/// caught up is passed over.
pub async fn replay_dead_letters(
    store: &EventStore,
    tenant_id: &TenantId,
    filter: &dead_letters::Filter,
    actor: &Actor,
) -> Result<usize, CommandError> {
    let (rows, _) = dead_letters::page(
        store.pool(),
        tenant_id.as_str(),
        filter,
        MAX_DEAD_LETTER_REPLAY,
        None,
    )
    .await?;
    let mut replayed = 0;
    for row in rows {
        let id = NotificationId::from(row.notification_id);
        match requeue(store, tenant_id, &id, DEAD_LETTER_REPLAY, actor).await {
            Ok(_) => replayed += 1,
            Err(CommandError::Domain(_)) => {}
            Err(error) => return Err(error),
        }
    }
    Ok(replayed)
}

/// The reason a DLQ replay records on `NotificationRequeued`.
pub const DEAD_LETTER_REPLAY: &str = "replayed from the dead-letter queue";

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
    /// Its trace, as its events record it ([`stream_trace`]).
    pub trace: Option<TracePoint>,
}

/// Several notifications in one round trip, each by its id; ids without a
/// stream are left out. A stream with an unreadable event is its own
/// `Err`, so it does not fail the others.
pub async fn load_many(
    store: &EventStore,
    ids: &[NotificationId],
) -> Result<Vec<(NotificationId, Result<Loaded, Unreadable>)>, CommandError> {
    let by_stream: HashMap<String, NotificationId> =
        ids.iter().map(|id| (stream_id(id), *id)).collect();
    let stream_ids: Vec<String> = by_stream.keys().cloned().collect();
    let recorded = store.read_streams(&stream_ids).await?;
    let mut loaded = Vec::with_capacity(ids.len());
    for stream in recorded.chunk_by(|a, b| a.stream_id == b.stream_id) {
        let Some(id) = by_stream.get(&stream[0].stream_id) else {
            continue;
        };
        let (events, unreadable) = read_events(stream);
        let outcome = match unreadable.into_iter().next() {
            Some(first) => Err(first),
            None => Ok(Loaded {
                notification: Notification::fold(events.iter().flatten()),
                version: stream.len() as i64,
                trace: stream_trace(stream),
            }),
        };
        loaded.push((*id, outcome));
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
    /// Where the events go in the notification's trace (the actor's, if none).
    pub trace: Option<TracePoint>,
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
                change.state.tenant_id.as_str(),
                &actor.at(change.trace.or(actor.trace)),
            )?,
        });
    }
    let states: Vec<&NotificationState> = changes.iter().map(|c| &c.state).collect();
    let (appends, states) = (&appends, &states);
    in_transaction(store, |tx| {
        Box::pin(async move {
            tx.append(appends).await?;
            Ok(sync_queue(tx.connection(), states).await?)
        })
    })
    .await
}
