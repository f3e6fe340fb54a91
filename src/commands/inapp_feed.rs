//! Marking a recipient's in-app items read, unread or archived: events on
//! the feed's stream, `inapp-feed-<tenant>/<recipient>`, which the
//! `inapp_feed` projection folds into the read model.

use std::collections::HashSet;

use uuid::Uuid;

use super::pipeline::{decode, envelopes};
use super::{Actor, CommandError};
use crate::domain::inapp_feed::{InAppFeedEvent, InAppItemState, MarkInAppItems};
use crate::domain::values::{Channel, NotificationId, RecipientId, TenantId};
use crate::domain::{Aggregate, Notification, NotificationEvent, ValidationErrors};
use crate::eventstore::{EventStore, ExpectedVersion, StreamAppend};
use crate::projections::inapp_feed;

pub fn stream_id(tenant_id: &TenantId, recipient_id: &RecipientId) -> String {
    format!(
        "inapp-feed-{}/{}",
        tenant_id.as_str(),
        recipient_id.as_str()
    )
}

/// What a mark recorded.
#[derive(Debug, Clone)]
pub struct Marked {
    pub state: InAppItemState,
    pub notification_ids: Vec<NotificationId>,
    /// The last event's position; `None` when there was nothing to mark.
    pub position: Option<i64>,
}

/// Puts items of the recipient's feed in a state. Every id must be an item
/// delivered to that recipient in the caller's tenant, or nothing is recorded.
pub async fn mark(
    store: &EventStore,
    tenant_id: &TenantId,
    input: MarkInAppItems,
    actor: &Actor,
) -> Result<Marked, CommandError> {
    let mark = input.parse()?;
    let ids: Vec<Uuid> = mark.ids.iter().map(|id| id.as_uuid()).collect();
    let mut found: HashSet<Uuid> = inapp_feed::in_feed(
        store.pool(),
        tenant_id.as_str(),
        mark.recipient_id.as_str(),
        &ids,
    )
    .await?
    .into_iter()
    .collect();
    let missing: Vec<NotificationId> = mark
        .ids
        .iter()
        .filter(|id| !found.contains(&id.as_uuid()))
        .copied()
        .collect();
    found.extend(delivered_in_log(store, tenant_id, &mark.recipient_id, &missing).await?);
    let events = mark.decide(|id| found.contains(&id.as_uuid()))?;
    let position = append(store, tenant_id, &mark.recipient_id, &events, actor).await?;
    Ok(Marked {
        state: mark.state,
        notification_ids: mark.ids,
        position,
    })
}

/// Marks every item the read model shows unread as read. An item delivered
/// a moment ago may not be in the read model yet; it stays unread.
pub async fn mark_all_read(
    store: &EventStore,
    tenant_id: &TenantId,
    recipient_id: &str,
    actor: &Actor,
) -> Result<Marked, CommandError> {
    let mut errors = ValidationErrors::default();
    let recipient_id = errors
        .check("recipient_id", RecipientId::parse(recipient_id))
        .ok_or(errors)?;
    let ids: Vec<NotificationId> =
        inapp_feed::unread_ids(store.pool(), tenant_id.as_str(), recipient_id.as_str())
            .await?
            .into_iter()
            .map(NotificationId::from)
            .collect();
    let events = InAppFeedEvent::marked(&recipient_id, &ids, InAppItemState::Read);
    let position = append(store, tenant_id, &recipient_id, &events, actor).await?;
    Ok(Marked {
        state: InAppItemState::Read,
        notification_ids: ids,
        position,
    })
}

/// Which of `ids` the log shows sent in-app to the recipient: for items the
/// read model has not caught up with (a subscriber can see an item and mark
/// it before the projection has written it).
async fn delivered_in_log(
    store: &EventStore,
    tenant_id: &TenantId,
    recipient_id: &RecipientId,
    ids: &[NotificationId],
) -> Result<Vec<Uuid>, CommandError> {
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    let streams: Vec<String> = ids.iter().map(super::notifications::stream_id).collect();
    let events = store.read_streams(&streams).await?;
    let mut delivered = Vec::new();
    for (id, stream) in ids.iter().zip(&streams) {
        let timeline: Vec<_> = events
            .iter()
            .filter(|e| &e.stream_id == stream)
            .cloned()
            .collect();
        let notification = Notification::fold(&decode::<NotificationEvent>(&timeline)?);
        let sent_in_app = notification.state().is_some_and(|state| {
            &state.tenant_id == tenant_id
                && state.request.recipient.id.as_ref() == Some(recipient_id)
                && state.channel == Some(Channel::InApp)
                && timeline.iter().any(|e| e.event_type == "NotificationSent")
        });
        if sent_in_app {
            delivered.push(id.as_uuid());
        }
    }
    Ok(delivered)
}

async fn append(
    store: &EventStore,
    tenant_id: &TenantId,
    recipient_id: &RecipientId,
    events: &[InAppFeedEvent],
    actor: &Actor,
) -> Result<Option<i64>, CommandError> {
    if events.is_empty() {
        return Ok(None);
    }
    let events = envelopes(events, tenant_id.as_str(), actor)?;
    // Marks need no expected version: each is recorded as asked, and the
    // log's order decides which one stands.
    let positions = store
        .append(&[StreamAppend {
            stream_id: stream_id(tenant_id, recipient_id),
            expected: ExpectedVersion::Any,
            events,
        }])
        .await?;
    Ok(positions.last().copied())
}
