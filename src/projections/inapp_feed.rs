//! `inapp_feed`: each recipient's in-app items, newest first. An item enters
//! when a notification is sent on the `in_app` channel (its
//! `NotificationSent` after a `DeliveryAttempted` on that channel) and shows
//! its request's content; `InAppItemsMarked` on the feed's stream moves it
//! between unread, read and archived.
//!
//! A `NotificationSent` names neither the channel nor the content: the
//! stream's `NotificationRequested` and `DeliveryAttempted` do.
//! [`DeliveryFacts`] remembers what it has seen of them, so a delivery
//! usually costs no query, and reads the log for the rest. The live feed
//! subscription shares the same reasoning through [`SharedDeliveries`].
//!
//! Each row remembers the position of the event that last wrote it, and a
//! change applies only over an older one; an item is inserted once. So
//! handling the same events twice leaves the table as once.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use chrono::{DateTime, Utc};
use futures::future::BoxFuture;
use serde_json::Value;
use sqlx::{PgConnection, PgPool};
use tokio::sync::OnceCell;
use uuid::Uuid;

use super::notification_status::{decode, events_up_to};
use super::{ATTEMPTED, Projection, ProjectionError, REQUESTED, Recent, SENT};
use crate::domain::inapp_feed::{InAppFeedEvent, InAppItemState};
use crate::domain::values::Channel;
use crate::domain::{Content, NotificationEvent};
use crate::eventstore::{EventStore, ReadFilter, RecordedEvent};

pub const NAME: &str = "inapp_feed";
pub const VERSION: i32 = 1;

const MARKED: &str = "InAppItemsMarked";

/// An in-app item as delivered: its notification's content, unread.
#[derive(Debug, Clone, PartialEq)]
pub struct Delivery {
    pub notification_id: Uuid,
    pub tenant_id: String,
    pub recipient_id: String,
    pub title: Option<String>,
    pub text: Option<String>,
    pub cta_url: Option<String>,
    pub data: Option<Value>,
    pub category: Option<String>,
    pub delivered_at: DateTime<Utc>,
    /// The `NotificationSent` event's position.
    pub position: i64,
}

/// What an in-app request shows once delivered.
#[derive(Debug)]
struct Source {
    notification_id: Uuid,
    tenant_id: String,
    recipient_id: String,
    title: Option<String>,
    text: Option<String>,
    cta_url: Option<String>,
    data: Option<Value>,
    category: Option<String>,
}

impl Source {
    /// `None` for a request that cannot end in the feed.
    fn of(event: &NotificationEvent) -> Option<Source> {
        let NotificationEvent::Requested {
            tenant_id,
            notification_id,
            request,
            ..
        } = event
        else {
            return None;
        };
        if !request.channels.contains(&Channel::InApp) {
            return None;
        }
        let recipient_id = request.recipient.id.as_ref()?;
        // A template's words are rendered at dispatch and recorded on its
        // NotificationSent (see `delivered`).
        let inline = match &request.content {
            Content::Inline(inline) => Some(inline),
            Content::Template(_) => None,
        };
        Some(Source {
            notification_id: notification_id.as_uuid(),
            tenant_id: tenant_id.as_str().to_owned(),
            recipient_id: recipient_id.as_str().to_owned(),
            title: inline
                .and_then(|c| c.title.as_ref())
                .map(|t| t.as_str().to_owned()),
            text: inline
                .and_then(|c| c.text.as_ref())
                .map(|t| t.as_str().to_owned()),
            cta_url: inline
                .and_then(|c| c.cta_url.as_ref())
                .map(|u| u.as_str().to_owned()),
            data: inline
                .and_then(|c| c.data.as_ref())
                .map(|d| Value::Object(d.as_map().clone())),
            category: request.category.as_ref().map(|c| c.as_str().to_owned()),
        })
    }

    /// A templated message's words come with its `NotificationSent`.
    fn delivered(&self, sent: &RecordedEvent) -> Delivery {
        let rendered = sent.payload.get("content");
        let field = |name: &str| rendered.and_then(|c| c.get(name)).filter(|v| !v.is_null());
        Delivery {
            notification_id: self.notification_id,
            tenant_id: self.tenant_id.clone(),
            recipient_id: self.recipient_id.clone(),
            title: field("title")
                .and_then(Value::as_str)
                .map(str::to_owned)
                .or_else(|| self.title.clone()),
            text: field("text")
                .and_then(Value::as_str)
                .map(str::to_owned)
                .or_else(|| self.text.clone()),
            cta_url: self.cta_url.clone(),
            data: field("data").cloned().or_else(|| self.data.clone()),
            category: self.category.clone(),
            delivered_at: sent.recorded_at,
            position: sent.global_position,
        }
    }
}

/// What is known of one notification stream.
#[derive(Default, Clone)]
struct Facts {
    /// Once its request is seen: what an in-app delivery of it shows, or
    /// `None` for a request that did not ask for the in-app channel.
    request: Option<Option<Arc<Source>>>,
    /// The latest attempt seen: stream version, attempt number, channel.
    attempt: Option<(i64, u32, Channel)>,
}

impl Facts {
    fn learn(&mut self, version: i64, event: &NotificationEvent) {
        match event {
            NotificationEvent::Requested { .. } => {
                self.request = Some(Source::of(event).map(Arc::new));
            }
            NotificationEvent::DeliveryAttempted {
                attempt, channel, ..
            } if self.attempt.is_none_or(|(seen, _, _)| seen < version) => {
                self.attempt = Some((version, *attempt, *channel));
            }
            _ => {}
        }
    }

    /// What the `NotificationSent` of `attempt` delivered, if these facts tell.
    fn resolve(&self, attempt: u32) -> Resolution {
        match (&self.request, self.attempt) {
            (Some(None), _) => Resolution::NotInApp,
            (_, Some((_, seen, channel))) if seen == attempt && channel != Channel::InApp => {
                Resolution::NotInApp
            }
            (Some(Some(source)), Some((_, seen, Channel::InApp))) if seen == attempt => {
                Resolution::Delivered(Arc::clone(source))
            }
            _ => Resolution::Unknown,
        }
    }
}

enum Resolution {
    /// In-app, showing this.
    Delivered(Arc<Source>),
    NotInApp,
    Unknown,
}

/// Entries per generation of the caches here. An entry holds an in-app
/// request's content until its delivery; one evicted early costs a query,
/// not an item.
const RECENT: usize = 10_000;

/// What has been seen of notification streams, to tell a `NotificationSent`
/// on the in-app channel, and what it shows, without reading the log again.
/// These are facts of the log: true whatever commits or rolls back.
#[derive(Default)]
pub struct DeliveryFacts {
    known: Mutex<Recent<String, Facts, RECENT>>,
}

impl DeliveryFacts {
    fn lock(&self) -> std::sync::MutexGuard<'_, Recent<String, Facts, RECENT>> {
        self.known.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Learns from a `NotificationRequested` or `DeliveryAttempted`; other
    /// events teach nothing. Decodes only what it does not know yet.
    pub fn observe(&self, event: &RecordedEvent) -> Result<(), ProjectionError> {
        let new = match event.event_type.as_str() {
            REQUESTED if plainly_not_in_app(event) => {
                self.lock().entry(&event.stream_id, Facts::default).request = Some(None);
                false
            }
            REQUESTED => self
                .lock()
                .get(&event.stream_id)
                .is_none_or(|f| f.request.is_none()),
            ATTEMPTED => self
                .lock()
                .get(&event.stream_id)
                .and_then(|f| f.attempt)
                .is_none_or(|(version, _, _)| version < event.stream_version),
            _ => false,
        };
        if new {
            let decoded = decode(event)?;
            self.lock()
                .entry(&event.stream_id, Facts::default)
                .learn(event.stream_version, &decoded);
        }
        Ok(())
    }

    fn resolve(&self, sent: &RecordedEvent) -> Result<Resolution, ProjectionError> {
        let attempt = sent_attempt(sent)?;
        Ok(match self.lock().get(&sent.stream_id) {
            Some(facts) => facts.resolve(attempt),
            None => Resolution::Unknown,
        })
    }

    fn forget(&self, stream_id: &String) {
        self.lock().take(stream_id);
    }
}

/// A request in today's shape that does not list the in-app channel, told
/// without decoding it: decoding requests is most of a rebuild's work, and
/// most requests are not in-app.
fn plainly_not_in_app(requested: &RecordedEvent) -> bool {
    requested.schema_version == NotificationEvent::SCHEMA_VERSION
        && requested
            .payload
            .pointer("/request/channels")
            .and_then(Value::as_array)
            .is_some_and(|channels| !channels.iter().any(|c| c == Channel::InApp.as_str()))
}

fn sent_attempt(sent: &RecordedEvent) -> Result<u32, ProjectionError> {
    match decode(sent)? {
        NotificationEvent::Sent { attempt, .. } => Ok(attempt),
        other => Err(ProjectionError::Refused(format!(
            "event {} is a {}, not a NotificationSent",
            sent.global_position,
            other.event_type()
        ))),
    }
}

/// The in-app deliveries the `sent` events made (`None` for other channels),
/// from the log: each stream's request and attempts before its `NotificationSent`,
/// in one query.
async fn look_up(
    conn: &mut PgConnection,
    sent: &[&RecordedEvent],
) -> Result<Vec<Option<Delivery>>, ProjectionError> {
    let before: Vec<(&str, i64)> = sent
        .iter()
        .map(|e| (e.stream_id.as_str(), e.stream_version - 1))
        .collect();
    let mut facts: HashMap<String, Facts> = HashMap::new();
    for (stream_id, events) in events_up_to(conn, &before, &[REQUESTED, ATTEMPTED]).await? {
        let learnt = facts.entry(stream_id).or_default();
        for (version, _, event) in &events {
            learnt.learn(*version, event);
        }
    }
    sent.iter()
        .map(|event| {
            let attempt = sent_attempt(event)?;
            let found = facts.get(&event.stream_id).cloned().unwrap_or_default();
            match found.resolve(attempt) {
                Resolution::Delivered(source) => Ok(Some(source.delivered(event))),
                Resolution::NotInApp => Ok(None),
                Resolution::Unknown => Err(ProjectionError::Refused(format!(
                    "stream {} has no NotificationRequested or no DeliveryAttempted for attempt {attempt} before version {}",
                    event.stream_id, event.stream_version
                ))),
            }
        })
        .collect()
}

/// The runner's path.
#[derive(Default)]
pub struct InAppFeedProjection {
    facts: DeliveryFacts,
}

impl InAppFeedProjection {
    pub fn new() -> InAppFeedProjection {
        InAppFeedProjection::default()
    }
}

impl Projection for InAppFeedProjection {
    fn name(&self) -> &str {
        NAME
    }

    fn version(&self) -> i32 {
        VERSION
    }

    fn tables(&self) -> &'static [&'static str] {
        &["inapp_feed"]
    }

    /// An item is inserted once; a mark applies only over an older write.
    fn idempotent(&self) -> bool {
        true
    }

    fn filter(&self) -> ReadFilter {
        super::events_of(&[REQUESTED, ATTEMPTED, SENT, MARKED])
    }

    fn handle_batch<'a>(
        &'a self,
        conn: &'a mut PgConnection,
        events: &'a [RecordedEvent],
    ) -> BoxFuture<'a, Result<(), ProjectionError>> {
        Box::pin(async move {
            let mut deliveries = Vec::new();
            let mut unknown = Vec::new();
            let mut marks = Vec::new();
            for event in events {
                match event.event_type.as_str() {
                    REQUESTED | ATTEMPTED => self.facts.observe(event)?,
                    SENT => match self.facts.resolve(event)? {
                        Resolution::Delivered(source) => deliveries.push(source.delivered(event)),
                        Resolution::NotInApp => {}
                        Resolution::Unknown => unknown.push(event),
                    },
                    MARKED => marks.push(event),
                    _ => {}
                }
            }
            deliveries.extend(look_up(conn, &unknown).await?.into_iter().flatten());
            // Items first: a mark names only items delivered before it in
            // the log, and the position guard keeps it from touching an
            // item delivered after it.
            insert(conn, &deliveries).await?;
            for event in marks {
                mark(conn, event).await?;
            }
            // A notification is sent once: its facts are done with.
            for event in events.iter().filter(|e| e.event_type == SENT) {
                self.facts.forget(&event.stream_id);
            }
            Ok(())
        })
    }
}

async fn insert(conn: &mut PgConnection, deliveries: &[Delivery]) -> Result<(), sqlx::Error> {
    if deliveries.is_empty() {
        return Ok(());
    }
    let column = |f: fn(&Delivery) -> Option<String>| deliveries.iter().map(f).collect::<Vec<_>>();
    sqlx::query(
        "INSERT INTO inapp_feed (notification_id, tenant_id, recipient_id, title, text, cta_url, data, \
             category, delivered_at, delivered_position, global_position) \
         SELECT n, t, r, ti, tx, u, d, c, at, p, p \
         FROM unnest($1::uuid[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::jsonb[], \
             $8::text[], $9::timestamptz[], $10::int8[]) AS x(n, t, r, ti, tx, u, d, c, at, p) \
         ON CONFLICT (notification_id) DO NOTHING",
    )
    .bind(deliveries.iter().map(|d| d.notification_id).collect::<Vec<_>>())
    .bind(column(|d| Some(d.tenant_id.clone())))
    .bind(column(|d| Some(d.recipient_id.clone())))
    .bind(column(|d| d.title.clone()))
    .bind(column(|d| d.text.clone()))
    .bind(column(|d| d.cta_url.clone()))
    .bind(deliveries.iter().map(|d| d.data.clone()).collect::<Vec<_>>())
    .bind(column(|d| d.category.clone()))
    .bind(deliveries.iter().map(|d| d.delivered_at).collect::<Vec<_>>())
    .bind(deliveries.iter().map(|d| d.position).collect::<Vec<_>>())
    .execute(conn)
    .await?;
    Ok(())
}

/// Applies one `InAppItemsMarked` to the items of its own feed. Read keeps
/// the first read time; unread clears it; archiving keeps it.
async fn mark(conn: &mut PgConnection, event: &RecordedEvent) -> Result<(), ProjectionError> {
    let decoded = InAppFeedEvent::upcast(
        &event.event_type,
        event.schema_version,
        event.payload.clone(),
    )
    .map_err(|e| ProjectionError::unreadable(event.global_position, e))?;
    let InAppFeedEvent::ItemsMarked {
        recipient_id,
        notification_ids,
        state,
    } = decoded;
    sqlx::query(
        "UPDATE inapp_feed SET state = $4, \
             read_at = CASE $4 WHEN 'unread' THEN NULL WHEN 'read' THEN COALESCE(read_at, $5) ELSE read_at END, \
             archived_at = CASE $4 WHEN 'archived' THEN COALESCE(archived_at, $5) ELSE NULL END, \
             global_position = $6 \
         WHERE tenant_id = $1 AND recipient_id = $2 AND notification_id = ANY($3) AND global_position < $6",
    )
    .bind(&event.tenant_id)
    .bind(recipient_id.as_str())
    .bind(notification_ids.iter().map(|id| id.as_uuid()).collect::<Vec<_>>())
    .bind(state.as_str())
    .bind(event.recorded_at)
    .bind(event.global_position)
    .execute(conn)
    .await?;
    Ok(())
}

/// The in-app deliveries of the live log, worked out once per process for
/// every subscriber: each subscriber shows it the events it sees, and asks
/// what a `NotificationSent` delivered. The first to ask for a stream the
/// facts cannot tell reads the log; the others wait for that answer.
#[derive(Default)]
pub struct SharedDeliveries {
    facts: DeliveryFacts,
    answers: Mutex<Recent<String, Answer, RECENT>>,
}

/// A `NotificationSent`'s delivery, worked out once for every subscriber.
type Answer = Arc<OnceCell<Option<Arc<Delivery>>>>;

impl SharedDeliveries {
    pub fn observe(&self, event: &RecordedEvent) -> Result<(), ProjectionError> {
        self.facts.observe(event)
    }

    /// The in-app delivery a `NotificationSent` made, or `None`.
    pub async fn delivery(
        &self,
        store: &EventStore,
        sent: &RecordedEvent,
    ) -> Result<Option<Arc<Delivery>>, ProjectionError> {
        let answer = self
            .answers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(&sent.stream_id, Arc::default)
            .clone();
        let delivery = answer
            .get_or_try_init(|| async {
                Ok::<_, ProjectionError>(match self.facts.resolve(sent)? {
                    Resolution::Delivered(source) => Some(Arc::new(source.delivered(sent))),
                    Resolution::NotInApp => None,
                    Resolution::Unknown => {
                        let mut conn = store.pool().acquire().await?;
                        look_up(&mut conn, &[sent])
                            .await?
                            .pop()
                            .flatten()
                            .map(Arc::new)
                    }
                })
            })
            .await?;
        Ok(delivery.clone())
    }
}

/// One item of a feed.
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct FeedItem {
    pub notification_id: Uuid,
    pub recipient_id: String,
    pub title: Option<String>,
    pub text: Option<String>,
    pub cta_url: Option<String>,
    pub data: Option<Value>,
    pub category: Option<String>,
    pub state: String,
    pub delivered_at: DateTime<Utc>,
    pub delivered_position: i64,
    pub read_at: Option<DateTime<Utc>>,
    pub archived_at: Option<DateTime<Utc>>,
}

impl FeedItem {
    pub fn state(&self) -> InAppItemState {
        // The table's CHECK allows no other value.
        InAppItemState::parse(&self.state).unwrap_or(InAppItemState::Unread)
    }
}

/// A page of a recipient's feed and its unread count.
#[derive(Debug, Clone)]
pub struct FeedPage {
    pub items: Vec<FeedItem>,
    pub has_more: bool,
    pub unread: i64,
}

/// A page of a recipient's feed, newest first, before the delivery position
/// `after` (the last item of the previous page). `states`: only items in one
/// of these. The page and the count come from one snapshot, so they agree.
pub async fn page(
    pool: &PgPool,
    tenant_id: &str,
    recipient_id: &str,
    states: Option<&[InAppItemState]>,
    first: usize,
    after: Option<i64>,
) -> Result<FeedPage, sqlx::Error> {
    let states: Option<Vec<&str>> = states.map(|s| s.iter().map(|s| s.as_str()).collect());
    let mut tx = pool.begin().await?;
    sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
        .execute(&mut *tx)
        .await?;
    let items: Vec<FeedItem> = sqlx::query_as(
        "SELECT notification_id, recipient_id, title, text, cta_url, data, category, state, \
                delivered_at, delivered_position, read_at, archived_at \
         FROM inapp_feed \
         WHERE tenant_id = $1 AND recipient_id = $2 \
           AND ($3::text[] IS NULL OR state = ANY($3)) \
           AND ($4::int8 IS NULL OR delivered_position < $4) \
         ORDER BY delivered_position DESC \
         LIMIT $5",
    )
    .bind(tenant_id)
    .bind(recipient_id)
    .bind(states)
    .bind(after)
    .bind(first as i64 + 1)
    .fetch_all(&mut *tx)
    .await?;
    let unread = sqlx::query_scalar(
        "SELECT count(*) FROM inapp_feed WHERE tenant_id = $1 AND recipient_id = $2 AND state = 'unread'",
    )
    .bind(tenant_id)
    .bind(recipient_id)
    .fetch_one(&mut *tx)
    .await?;
    tx.commit().await?;
    let (items, has_more) = super::split_page(items, first);
    Ok(FeedPage {
        items,
        has_more,
        unread,
    })
}

/// Which of `ids` are items of the recipient's feed.
pub async fn in_feed(
    pool: &PgPool,
    tenant_id: &str,
    recipient_id: &str,
    ids: &[Uuid],
) -> Result<Vec<Uuid>, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT notification_id FROM inapp_feed \
         WHERE tenant_id = $1 AND recipient_id = $2 AND notification_id = ANY($3)",
    )
    .bind(tenant_id)
    .bind(recipient_id)
    .bind(ids)
    .fetch_all(pool)
    .await
}

/// The recipient's unread items, oldest first.
pub async fn unread_ids(
    pool: &PgPool,
    tenant_id: &str,
    recipient_id: &str,
) -> Result<Vec<Uuid>, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT notification_id FROM inapp_feed \
         WHERE tenant_id = $1 AND recipient_id = $2 AND state = 'unread' \
         ORDER BY delivered_position",
    )
    .bind(tenant_id)
    .bind(recipient_id)
    .fetch_all(pool)
    .await
}
