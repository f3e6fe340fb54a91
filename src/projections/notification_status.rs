//! `notification_status`: each notification's current status, for listing and
//! filtering.
//!
//! Two writers keep it, both through [`write`] and both guarded by the
//! stream's version, so whichever comes first wins and the other changes
//! nothing: the command side upserts inline in the append's transaction (a
//! send is listed the moment it returns), and the projection runner folds
//! every notification event, which covers events appended without the inline
//! upsert and builds the table from nothing on a rebuild.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use futures::future::BoxFuture;
use serde::Deserialize;
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use super::{Projection, ProjectionError};
use crate::domain::values::{Channel, Priority, TenantId};
use crate::domain::{
    Aggregate, Notification, NotificationEvent, NotificationState, NotificationStatus,
};
use crate::eventstore::{ReadFilter, RecordedEvent};

pub const NAME: &str = "notification_status";
pub const VERSION: i32 = 1;

const STREAM_PREFIX: &str = "notification-";

/// The inline path: each state after its stream's `version` events, in the
/// append's transaction.
pub async fn upsert(
    conn: &mut PgConnection,
    states: &[(&NotificationState, i64)],
) -> Result<(), sqlx::Error> {
    let rows: Vec<StatusRow> = states
        .iter()
        .map(|(state, version)| StatusRow::of(state, *version, None))
        .collect();
    write(conn, &rows).await
}

/// Separates the elements of `channels` and `tags` on their way through
/// `unnest` (which would flatten arrays of arrays); neither may contain a
/// control character.
const SEPARATOR: char = '\u{1f}';

/// One row as written, by either path.
#[derive(Debug, PartialEq, sqlx::FromRow)]
struct StatusRow {
    notification_id: Uuid,
    tenant_id: String,
    status: String,
    priority: String,
    /// Joined by [`SEPARATOR`].
    channels: String,
    recipient_id: Option<String>,
    category: Option<String>,
    /// Joined by [`SEPARATOR`].
    tags: String,
    created_at: DateTime<Utc>,
    /// `None`: the transaction's start, which is the appended event's `recorded_at`.
    updated_at: Option<DateTime<Utc>>,
    stream_version: i32,
}

impl StatusRow {
    fn of(state: &NotificationState, version: i64, updated_at: Option<DateTime<Utc>>) -> StatusRow {
        let request = &state.request;
        let columns = RequestedColumns {
            tenant_id: state.tenant_id.as_str(),
            notification_id: state.notification_id.as_uuid(),
            requested_at: state.requested_at,
            request: RequestColumns {
                recipient: RecipientColumns {
                    id: request.recipient.id.as_ref().map(|r| r.as_str()),
                },
                channels: request.channels.clone(),
                priority: request.priority,
                category: request.category.as_ref().map(|c| c.as_str()),
                tags: request.tags.iter().map(|t| t.as_str()).collect(),
            },
        };
        StatusRow::requested(&columns, state.status, version, updated_at)
    }

    fn requested(
        requested: &RequestedColumns<'_>,
        status: NotificationStatus,
        version: i64,
        updated_at: Option<DateTime<Utc>>,
    ) -> StatusRow {
        let request = &requested.request;
        StatusRow {
            notification_id: requested.notification_id,
            tenant_id: requested.tenant_id.to_owned(),
            status: status.as_str().to_owned(),
            priority: request.priority.as_str().to_owned(),
            channels: join(request.channels.iter().map(|c| c.as_str())),
            recipient_id: request.recipient.id.map(str::to_owned),
            category: request.category.map(str::to_owned),
            tags: join(request.tags.iter().copied()),
            created_at: requested.requested_at,
            updated_at,
            stream_version: version as i32,
        }
    }
}

fn join<'a>(parts: impl Iterator<Item = &'a str>) -> String {
    let mut joined = String::new();
    for (index, part) in parts.enumerate() {
        if index > 0 {
            joined.push(SEPARATOR);
        }
        joined.push_str(part);
    }
    joined
}

/// The parts of a `NotificationRequested` this read model keeps, borrowed
/// from the payload. A rebuild reads one per notification, and taking just
/// these from today's shape costs a fraction of decoding the whole request
/// (every address and template variable parsed again); older shapes go
/// through the upcast.
#[derive(Deserialize)]
struct RequestedColumns<'a> {
    tenant_id: &'a str,
    notification_id: Uuid,
    requested_at: DateTime<Utc>,
    #[serde(borrow)]
    request: RequestColumns<'a>,
}

#[derive(Deserialize)]
struct RequestColumns<'a> {
    #[serde(borrow, default)]
    recipient: RecipientColumns<'a>,
    channels: Vec<Channel>,
    priority: Priority,
    #[serde(borrow, default)]
    category: Option<&'a str>,
    #[serde(borrow, default)]
    tags: Vec<&'a str>,
}

#[derive(Deserialize, Default)]
struct RecipientColumns<'a> {
    #[serde(borrow, default)]
    id: Option<&'a str>,
}

/// The first event of a stream, as the row it starts.
fn requested_row(
    event: &RecordedEvent,
    status: NotificationStatus,
    version: i64,
    updated_at: DateTime<Utc>,
) -> Result<StatusRow, ProjectionError> {
    if event.schema_version == NotificationEvent::SCHEMA_VERSION
        && event.event_type == "NotificationRequested"
        && event.payload.get("type").and_then(|t| t.as_str()) == Some("NotificationRequested")
        && let Ok(columns) = RequestedColumns::deserialize(&event.payload)
    {
        return Ok(StatusRow::requested(
            &columns,
            status,
            version,
            Some(updated_at),
        ));
    }
    let NotificationEvent::Requested {
        tenant_id,
        notification_id,
        request,
        requested_at,
    } = decode(event)?
    else {
        return Err(not_requested(event));
    };
    let mut notification = Notification::default();
    notification.apply(&NotificationEvent::Requested {
        tenant_id,
        notification_id,
        request,
        requested_at,
    });
    let state = notification.state().ok_or_else(|| not_requested(event))?;
    Ok(StatusRow::of(
        &NotificationState {
            status,
            ..state.clone()
        },
        version,
        Some(updated_at),
    ))
}

/// Writes each row unless the table already holds that notification at that
/// version or a later one, in one statement. At most one row per notification.
async fn write(conn: &mut PgConnection, rows: &[StatusRow]) -> Result<(), sqlx::Error> {
    if rows.is_empty() {
        return Ok(());
    }
    let column = |f: fn(&StatusRow) -> &str| rows.iter().map(f).collect::<Vec<&str>>();
    sqlx::query(
        "INSERT INTO notification_status (notification_id, tenant_id, status, priority, channels, recipient_id, \
             category, tags, created_at, updated_at, stream_version) \
         SELECT id, tenant_id, status, priority, string_to_array(channels, chr(31)), recipient_id, category, \
             string_to_array(tags, chr(31)), created_at, coalesce(updated_at, now()), stream_version \
         FROM unnest($1::uuid[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[], \
                     $8::text[], $9::timestamptz[], $10::timestamptz[], $11::int4[]) \
             AS u(id, tenant_id, status, priority, channels, recipient_id, category, tags, created_at, \
                  updated_at, stream_version) \
         ON CONFLICT (notification_id) DO UPDATE \
             SET status = EXCLUDED.status, updated_at = EXCLUDED.updated_at, stream_version = EXCLUDED.stream_version \
             WHERE notification_status.stream_version < EXCLUDED.stream_version",
    )
    .bind(rows.iter().map(|r| r.notification_id).collect::<Vec<_>>())
    .bind(column(|r| &r.tenant_id))
    .bind(column(|r| &r.status))
    .bind(column(|r| &r.priority))
    .bind(column(|r| &r.channels))
    .bind(rows.iter().map(|r| r.recipient_id.as_deref()).collect::<Vec<_>>())
    .bind(rows.iter().map(|r| r.category.as_deref()).collect::<Vec<_>>())
    .bind(column(|r| &r.tags))
    .bind(rows.iter().map(|r| r.created_at).collect::<Vec<_>>())
    .bind(rows.iter().map(|r| r.updated_at).collect::<Vec<_>>())
    .bind(rows.iter().map(|r| r.stream_version).collect::<Vec<_>>())
    .execute(conn)
    .await?;
    Ok(())
}

/// Moves rows the table holds to a later status and version, unless a row
/// already holds that version or a later one, in one statement.
async fn advance(conn: &mut PgConnection, rows: &[StatusRow]) -> Result<(), sqlx::Error> {
    if rows.is_empty() {
        return Ok(());
    }
    sqlx::query(
        "UPDATE notification_status AS s \
         SET status = u.status, updated_at = u.updated_at, stream_version = u.stream_version \
         FROM unnest($1::uuid[], $2::text[], $3::timestamptz[], $4::int4[]) \
             AS u(id, status, updated_at, stream_version) \
         WHERE s.notification_id = u.id AND s.stream_version < u.stream_version",
    )
    .bind(rows.iter().map(|r| r.notification_id).collect::<Vec<_>>())
    .bind(rows.iter().map(|r| r.status.as_str()).collect::<Vec<_>>())
    .bind(rows.iter().map(|r| r.updated_at).collect::<Vec<_>>())
    .bind(rows.iter().map(|r| r.stream_version).collect::<Vec<_>>())
    .execute(conn)
    .await?;
    Ok(())
}

/// The rows the table holds for `ids`, in one query.
async fn existing(
    conn: &mut PgConnection,
    ids: &[Uuid],
) -> Result<HashMap<Uuid, StatusRow>, sqlx::Error> {
    if ids.is_empty() {
        return Ok(HashMap::new());
    }
    let rows: Vec<StatusRow> = sqlx::query_as(
        "SELECT notification_id, tenant_id, status, priority, array_to_string(channels, chr(31)) AS channels, \
                recipient_id, category, array_to_string(tags, chr(31)) AS tags, created_at, updated_at, \
                stream_version \
         FROM notification_status WHERE notification_id = ANY($1)",
    )
    .bind(ids)
    .fetch_all(conn)
    .await?;
    Ok(rows
        .into_iter()
        .map(|row| (row.notification_id, row))
        .collect())
}

/// The runner's path: folds each batch per notification in memory and writes
/// the touched rows in one statement.
pub struct NotificationStatusProjection;

impl Projection for NotificationStatusProjection {
    fn name(&self) -> &str {
        NAME
    }

    fn version(&self) -> i32 {
        VERSION
    }

    fn tables(&self) -> &'static [&'static str] {
        &["notification_status"]
    }

    /// Every write is guarded by the stream version it comes from.
    fn idempotent(&self) -> bool {
        true
    }

    fn filter(&self) -> ReadFilter {
        // Later events matter by their type alone.
        ReadFilter {
            payload_types: Some(vec!["NotificationRequested".into()]),
            ..super::notification_events()
        }
    }

    fn handle_batch<'a>(
        &'a self,
        conn: &'a mut PgConnection,
        events: &'a [RecordedEvent],
    ) -> BoxFuture<'a, Result<(), ProjectionError>> {
        Box::pin(async move {
            let groups = by_notification(events)?;
            let mut rows = Vec::with_capacity(groups.len());
            // Notifications whose first event here is not their first: they
            // continue from the row the table holds.
            let mut continuing = Vec::new();
            for (slot, (_, group)) in groups.iter().enumerate() {
                if !starts_the_stream(group) {
                    continuing.push(slot);
                    continue;
                }
                // As `Notification::apply` folds it: the request, then
                // whatever status each later event leaves.
                let mut status = NotificationStatus::Requested;
                for event in &group[1..] {
                    if let Some(after) = status_after(event)? {
                        status = after;
                    }
                }
                let last = group[group.len() - 1];
                rows.push(requested_row(
                    group[0],
                    status,
                    last.stream_version,
                    last.recorded_at,
                )?);
            }
            let ids: Vec<Uuid> = continuing.iter().map(|&slot| groups[slot].0).collect();
            let mut held = existing(conn, &ids).await?;
            // Rows the table holds, moved on: updated, not inserted.
            let mut moved = Vec::new();
            for &slot in &continuing {
                let (id, group) = &groups[slot];
                let last = group[group.len() - 1];
                let held = held.remove(id);
                let held_version = held.as_ref().map_or(0, |r| i64::from(r.stream_version));
                // The inline upsert, or an earlier batch, got here first.
                if held_version >= last.stream_version {
                    continue;
                }
                let tail = group.iter().filter(|e| e.stream_version > held_version);
                let follows = tail
                    .clone()
                    .enumerate()
                    .all(|(i, e)| e.stream_version == held_version + 1 + i as i64);
                match held {
                    Some(mut row) if follows => {
                        for event in tail {
                            if let Some(status) = status_after(event)? {
                                status.as_str().clone_into(&mut row.status);
                            }
                        }
                        row.updated_at = Some(last.recorded_at);
                        row.stream_version = last.stream_version as i32;
                        moved.push(row);
                    }
                    // No row, or versions between it and this batch that
                    // the log's read order puts later: fold the stream.
                    _ => {
                        let notification =
                            state_at(conn, &last.stream_id, last.stream_version).await?;
                        let Some(state) = notification.state() else {
                            return Err(not_requested(last));
                        };
                        rows.push(StatusRow::of(
                            state,
                            last.stream_version,
                            Some(last.recorded_at),
                        ));
                    }
                }
            }
            write(conn, &rows).await?;
            advance(conn, &moved).await?;
            Ok(())
        })
    }
}

fn not_requested(event: &RecordedEvent) -> ProjectionError {
    ProjectionError::Refused(format!(
        "stream {} has no NotificationRequested at or before version {}",
        event.stream_id, event.stream_version
    ))
}

/// A batch's notification events per notification, each group in stream
/// order, the groups in order of first appearance.
pub(super) fn by_notification(
    events: &[RecordedEvent],
) -> Result<Vec<(Uuid, Vec<&RecordedEvent>)>, ProjectionError> {
    let mut index: HashMap<Uuid, usize> = HashMap::new();
    let mut groups: Vec<(Uuid, Vec<&RecordedEvent>)> = Vec::new();
    for event in events {
        let Some(id) = notification_id(event)? else {
            continue;
        };
        let slot = *index.entry(id).or_insert_with(|| {
            groups.push((id, Vec::new()));
            groups.len() - 1
        });
        groups[slot].1.push(event);
    }
    for (_, group) in &mut groups {
        group.sort_by_key(|e| e.stream_version);
    }
    Ok(groups)
}

/// Whether a group holds its stream from version 1 without a gap.
pub(super) fn starts_the_stream(group: &[&RecordedEvent]) -> bool {
    group
        .iter()
        .enumerate()
        .all(|(i, e)| e.stream_version == 1 + i as i64)
}

/// The status after `event`, from its type: the payload only matters to the
/// first event of a stream, and decoding it is most of a rebuild's work.
fn status_after(event: &RecordedEvent) -> Result<Option<NotificationStatus>, ProjectionError> {
    NotificationEvent::status_after_type(&event.event_type)
        .map_err(|e| ProjectionError::unreadable(event.global_position, e))
}

pub(super) fn decode(event: &RecordedEvent) -> Result<NotificationEvent, ProjectionError> {
    // Today's shape with its tag in place: read it where it lies.
    if event.schema_version == NotificationEvent::SCHEMA_VERSION
        && event.payload.get("type").and_then(|t| t.as_str()) == Some(event.event_type.as_str())
        && let Ok(decoded) = NotificationEvent::deserialize(&event.payload)
    {
        return Ok(decoded);
    }
    NotificationEvent::upcast(
        &event.event_type,
        event.schema_version,
        event.payload.clone(),
    )
    .map_err(|e| ProjectionError::unreadable(event.global_position, e))
}

/// The notification a notification event belongs to; `None` for other events.
pub(super) fn notification_id(event: &RecordedEvent) -> Result<Option<Uuid>, ProjectionError> {
    if !NotificationEvent::EVENT_TYPES.contains(&event.event_type.as_str()) {
        return Ok(None);
    }
    let id = event
        .stream_id
        .strip_prefix(STREAM_PREFIX)
        .and_then(|id| Uuid::parse_str(id).ok())
        .ok_or_else(|| {
            ProjectionError::Refused(format!(
                "{} at position {} is in stream {}, not a notification stream",
                event.event_type, event.global_position, event.stream_id
            ))
        })?;
    Ok(Some(id))
}

/// The notification as of `version`, folded from its stream. Every earlier
/// version has committed (each append saw the one before it), so this is
/// exact even when the log's read order puts a later version first.
pub(super) async fn state_at(
    conn: &mut PgConnection,
    stream_id: &str,
    version: i64,
) -> Result<Notification, ProjectionError> {
    let rows: Vec<(i64, String, i16, serde_json::Value)> = sqlx::query_as(
        "SELECT global_position, event_type, schema_version, payload FROM events \
         WHERE stream_id = $1 AND stream_version <= $2 ORDER BY stream_version",
    )
    .bind(stream_id)
    .bind(version as i32)
    .fetch_all(conn)
    .await?;
    let mut notification = Notification::default();
    for (position, event_type, schema_version, payload) in rows {
        let event = NotificationEvent::upcast(&event_type, schema_version, payload)
            .map_err(|e| ProjectionError::unreadable(position, e))?;
        notification.apply(&event);
    }
    Ok(notification)
}

/// A stream's events as read back for folding: version, `recorded_at`, event.
pub(super) type StreamEvents = Vec<(i64, DateTime<Utc>, NotificationEvent)>;

/// Stream, version, `recorded_at`, position, event type, schema version, payload.
type StreamEventRow = (
    String,
    i64,
    DateTime<Utc>,
    i64,
    String,
    i16,
    serde_json::Value,
);

/// The events of `event_types` in each stream up to its version, in stream
/// order, in one query.
pub(super) async fn events_up_to(
    conn: &mut PgConnection,
    streams: &[(&str, i64)],
    event_types: &[&str],
) -> Result<HashMap<String, StreamEvents>, ProjectionError> {
    let mut events: HashMap<String, StreamEvents> = HashMap::new();
    if streams.is_empty() {
        return Ok(events);
    }
    let rows: Vec<StreamEventRow> = sqlx::query_as(
        "SELECT e.stream_id, e.stream_version::int8, e.recorded_at, e.global_position, \
                    e.event_type, e.schema_version, e.payload \
             FROM unnest($1::text[], $2::int8[]) AS s(stream_id, upto) \
             JOIN events e ON e.stream_id = s.stream_id AND e.stream_version <= s.upto \
             WHERE e.event_type = ANY($3) \
             ORDER BY e.stream_id, e.stream_version",
    )
    .bind(streams.iter().map(|(s, _)| *s).collect::<Vec<_>>())
    .bind(streams.iter().map(|(_, v)| *v).collect::<Vec<_>>())
    .bind(event_types)
    .fetch_all(conn)
    .await?;
    for (stream_id, version, recorded_at, position, event_type, schema_version, payload) in rows {
        let event = NotificationEvent::upcast(&event_type, schema_version, payload)
            .map_err(|e| ProjectionError::unreadable(position, e))?;
        events
            .entry(stream_id)
            .or_default()
            .push((version, recorded_at, event));
    }
    Ok(events)
}

#[derive(Debug, Clone, Default)]
pub struct Filter {
    pub statuses: Option<Vec<String>>,
    pub channel: Option<String>,
    pub recipient_id: Option<String>,
    pub tag: Option<String>,
    pub created_after: Option<DateTime<Utc>>,
    pub created_before: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Row {
    pub notification_id: Uuid,
    pub status: String,
    pub priority: String,
    pub channels: Vec<String>,
    pub recipient_id: Option<String>,
    pub category: Option<String>,
    pub tags: Vec<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// Newest first, strictly after the cursor (an id, which never changes), so
/// pages stay stable while notifications arrive. Fetches `first + 1` rows to
/// tell whether another page follows.
pub async fn page(
    pool: &PgPool,
    tenant_id: &TenantId,
    filter: &Filter,
    first: usize,
    after: Option<Uuid>,
) -> Result<(Vec<Row>, bool), sqlx::Error> {
    let rows = sqlx::query_as(
        "SELECT notification_id, status, priority, channels, recipient_id, category, tags, created_at, updated_at \
         FROM notification_status \
         WHERE tenant_id = $1 \
           AND ($2::uuid IS NULL OR notification_id < $2) \
           AND ($3::text[] IS NULL OR status = ANY($3)) \
           AND ($4::text IS NULL OR channels @> ARRAY[$4]) \
           AND ($5::text IS NULL OR recipient_id = $5) \
           AND ($6::text IS NULL OR tags @> ARRAY[$6]) \
           AND ($7::timestamptz IS NULL OR created_at >= $7) \
           AND ($8::timestamptz IS NULL OR created_at < $8) \
         ORDER BY notification_id DESC \
         LIMIT $9",
    )
    .bind(tenant_id.as_str())
    .bind(after)
    .bind(filter.statuses.as_deref())
    .bind(filter.channel.as_deref())
    .bind(filter.recipient_id.as_deref())
    .bind(filter.tag.as_deref())
    .bind(filter.created_after)
    .bind(filter.created_before)
    .bind(first as i64 + 1)
    .fetch_all(pool)
    .await?;
    Ok(super::split_page(rows, first))
}

#[cfg(test)]
mod tests {
    use chrono::Utc;
    use serde_json::json;

    use super::*;
    use crate::domain::values::NotificationId;
    use crate::domain::{Aggregate, NotificationCommand, SendNotification};

    fn recorded(event: &NotificationEvent) -> RecordedEvent {
        RecordedEvent {
            global_position: 1,
            transaction_id: 1,
            stream_id: "notification-x".into(),
            stream_version: 1,
            event_id: Uuid::now_v7(),
            event_type: event.event_type().into(),
            schema_version: NotificationEvent::SCHEMA_VERSION,
            tenant_id: "acme".into(),
            payload: serde_json::to_value(event).unwrap(),
            metadata: json!({}),
            recorded_at: Utc::now(),
        }
    }

    /// The borrowed columns of today's payload make the row that folding
    /// the whole event makes.
    #[test]
    fn the_columns_of_a_requested_payload_make_the_row_of_its_decoded_state() {
        let input: SendNotification = serde_json::from_value(json!({
            "recipient": { "id": "ana", "email": "ana@example.com" },
            "channels": ["email", "in_app"],
            "priority": "high",
            "category": "billing",
            "tags": ["invoice", "eu"],
            "content": { "title": "Hi", "text": "Your invoice" },
            "metadata": { "order": 7 }
        }))
        .unwrap();
        let request = input.parse(Utc::now()).unwrap();
        let events = Notification::default()
            .decide(
                NotificationCommand::Request {
                    tenant_id: TenantId::parse("acme").unwrap(),
                    notification_id: NotificationId::new(),
                    request,
                },
                Utc::now(),
            )
            .unwrap();
        let state = Notification::fold(&events);
        let state = state.state().unwrap();
        let at = Utc::now();
        let expected = StatusRow::of(state, 3, Some(at));
        let row = requested_row(&recorded(&events[0]), state.status, 3, at).unwrap();
        assert_eq!(row, expected);
    }
}
