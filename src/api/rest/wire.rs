//! The REST twin's wire types: the bodies, query strings and answers serde
//! reads and writes, from which `utoipa` derives the OpenAPI schemas, so
//! the document cannot drift from what the handlers accept.

use chrono::{DateTime, Utc};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::openapi::schema::{OneOfBuilder, Schema};
use utoipa::openapi::{Ref, RefOr};
use utoipa::{IntoParams, PartialSchema, ToSchema};
use uuid::Uuid;

use crate::api::error::{ApiError, ErrorDetail};
use crate::commands::notifications::NotificationDetails;
use crate::domain::template::RenderedTemplate;
use crate::domain::values::{Channel, Priority, TenantId};
use crate::domain::{self, Given, NotificationState, NotificationStatus};
use crate::projections::notification_status;

/// Reads `value` as a `T`; a value that does not fit is `VALIDATION`
/// naming the field (`body` for the value as a whole).
pub fn read<T: DeserializeOwned>(value: Value) -> Result<T, ApiError> {
    serde_path_to_error::deserialize(value).map_err(|error| {
        let path = match error.path().to_string() {
            root if root == "." => "body".to_string(),
            path => path,
        };
        ApiError::field(&path, error.into_inner().to_string())
    })
}

/// A send: Herald's own shape (`SendNotification`) or the flat message
/// shape (`Message`), told apart by the message's fields `channel`, `to` and
/// `template_id`, which Herald's shape does not have.
#[derive(Debug)]
pub enum SendBody {
    Message(Box<Message>),
    Notification(Box<SendNotification>),
}

impl SendBody {
    pub fn read(value: Value) -> Result<SendBody, ApiError> {
        let is_message = value.as_object().is_some_and(|object| {
            ["channel", "to", "template_id"]
                .iter()
                .any(|field| object.contains_key(*field))
        });
        Ok(if is_message {
            SendBody::Message(read(value)?)
        } else {
            SendBody::Notification(read(value)?)
        })
    }

    /// The send command's input, for `tenant_id`'s key.
    pub fn into_send(self, tenant_id: &TenantId) -> Result<domain::SendNotification, ApiError> {
        match self {
            SendBody::Notification(send) => Ok((*send).into()),
            SendBody::Message(message) => message.into_send(tenant_id),
        }
    }
}

// By hand: the body is either schema, and serde's untagged enum would
// name neither field of a bad one, so the handlers read it as above.
impl PartialSchema for SendBody {
    fn schema() -> RefOr<Schema> {
        OneOfBuilder::new()
            .item(Ref::from_schema_name(Message::name()))
            .item(Ref::from_schema_name(SendNotification::name()))
            .description(Some(
                "A flat message (it has `channel`, `to` and `template_id`) or Herald's own \
                 send (`channels`, `recipient`, `content` or `template`).",
            ))
            .into()
    }
}

impl ToSchema for SendBody {
    fn schemas(schemas: &mut Vec<(String, RefOr<Schema>)>) {
        schemas.push((Message::name().into(), Message::schema()));
        <Message as ToSchema>::schemas(schemas);
        schemas.push((SendNotification::name().into(), SendNotification::schema()));
        <SendNotification as ToSchema>::schemas(schemas);
    }
}

/// A notification to send (Herald's own shape). Give `content` or
/// `template`, not both. The REST twin's OpenAPI document is derived from
/// these types (`utoipa`), so its descriptions are these comments.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({
    "recipient": { "email": "ada@example.com" },
    "channels": ["email"],
    "content": { "title": "Welcome", "text": "Hello Ada" },
    "tags": ["welcome"]
}))]
pub struct SendNotification {
    /// The same key within the idempotency window returns the original
    /// notification (the `Idempotency-Key` header overrides it).
    pub idempotency_key: Option<String>,
    #[serde(default)]
    pub recipient: RecipientInput,
    /// In order of preference: `email`, `sms`, `push`, `webhook`, `ntfy`, `in_app`.
    #[serde(default)]
    #[schema(max_items = 6)]
    pub channels: Vec<String>,
    /// `HIGH`, `NORMAL` (the default) or `LOW`, in any case.
    pub priority: Option<String>,
    pub content: Option<InlineContentInput>,
    pub template: Option<TemplateRefInput>,
    /// For preferences, e.g. `billing` or `marketing`.
    pub category: Option<String>,
    pub schedule_at: Option<DateTime<Utc>>,
    pub expires_at: Option<DateTime<Utc>>,
    /// 1 to 2,592,000 (30 days); not with `expires_at`.
    pub ttl_seconds: Option<u64>,
    /// A registered webhook endpoint's URL: receives a signed POST for each status change.
    pub callback_url: Option<String>,
    #[serde(default)]
    #[schema(max_items = 20)]
    pub tags: Vec<String>,
    /// A JSON object of at most 16 KiB, kept with the notification.
    #[schema(value_type = Option<Object>)]
    pub metadata: Option<Value>,
    pub trace_id: Option<String>,
    pub source_event: Option<SourceEventInput>,
    /// Files for the email channel.
    #[serde(default)]
    pub attachments: Vec<AttachmentInput>,
}

#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RecipientInput {
    /// Your id for the recipient (required for the in-app channel).
    pub id: Option<String>,
    pub email: Option<String>,
    /// E.164, e.g. `+447700900123`.
    pub phone: Option<String>,
    /// A mobile push endpoint ARN or device token.
    pub push_target: Option<String>,
    pub webhook_url: Option<String>,
    pub ntfy_topic: Option<String>,
    pub locale: Option<String>,
    pub timezone: Option<String>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct InlineContentInput {
    /// Email subject, push or in-app title.
    pub title: Option<String>,
    pub text: Option<String>,
    pub html: Option<String>,
    /// Call-to-action URL.
    pub cta_url: Option<String>,
    #[schema(value_type = Option<Object>)]
    pub data: Option<Value>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TemplateRefInput {
    pub key: Option<String>,
    /// The latest version when absent.
    pub version: Option<u32>,
    pub locale: Option<String>,
    /// A JSON object of at most 32 KiB.
    #[schema(value_type = Option<Object>)]
    pub variables: Option<Value>,
}

/// The identity of the source event a notification came from (`eventId`,
/// `source`, `occurredAt`, `user.segment`).
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SourceEventInput {
    pub event_id: Option<String>,
    pub source: Option<String>,
    pub occurred_at: Option<DateTime<Utc>>,
    pub segment: Option<String>,
}

/// A file to attach to the email: by `url` (fetched at send time) or as
/// `content_base64`, exactly one of the two.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AttachmentInput {
    pub filename: Option<String>,
    pub content_type: Option<String>,
    pub url: Option<String>,
    pub content_base64: Option<String>,
}

/// Channels and priority as text, which the send's `parse` reads and
/// refuses under their paths with every other field.
impl From<SendNotification> for domain::SendNotification {
    fn from(send: SendNotification) -> Self {
        let recipient = send.recipient;
        domain::SendNotification {
            idempotency_key: send.idempotency_key,
            recipient: domain::RecipientInput {
                id: recipient.id,
                email: recipient.email,
                phone: recipient.phone,
                push_target: recipient.push_target,
                webhook_url: recipient.webhook_url,
                ntfy_topic: recipient.ntfy_topic,
                locale: recipient.locale,
                timezone: recipient.timezone,
            },
            channels: send.channels.into_iter().map(Given::Text).collect(),
            priority: send.priority.map(Given::Text),
            content: send.content.map(|c| domain::InlineContentInput {
                title: c.title,
                text: c.text,
                html: c.html,
                cta_url: c.cta_url,
                data: c.data,
            }),
            template: send.template.map(|t| domain::TemplateRefInput {
                key: t.key,
                version: t.version,
                locale: t.locale,
                variables: t.variables,
            }),
            category: send.category,
            schedule_at: send.schedule_at,
            expires_at: send.expires_at,
            ttl_seconds: send.ttl_seconds,
            callback_url: send.callback_url,
            tags: send.tags,
            metadata: send.metadata,
            trace_id: send.trace_id,
            source_event: send.source_event.map(|s| domain::SourceEventInput {
                event_id: s.event_id,
                source: s.source,
                occurred_at: s.occurred_at,
                segment: s.segment,
            }),
            attachments: send
                .attachments
                .into_iter()
                .map(|a| domain::AttachmentInput {
                    filename: a.filename,
                    content_type: a.content_type,
                    url: a.url,
                    content_base64: a.content_base64,
                })
                .collect(),
            campaign_id: None,
        }
    }
}

/// The flat message shape: one channel, a template by `key:vN`, the addresses
/// in `to`. Its `metadata.category` and `metadata.tags` become the
/// notification's category and tags.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({
    "channel": "email",
    "template_id": "otp_login:v2",
    "locale": "en-GB",
    "to": { "email": "user@example.com" },
    "variables": { "code": "384921" },
    "metadata": { "category": "auth", "tags": ["otp", "login"] },
    "priority": "high",
    "ttl_seconds": 900
}))]
pub struct Message {
    /// Optional: the tenant is the API key's; when given it must be that one.
    pub tenant_id: Option<String>,
    /// As the `Idempotency-Key` header (which wins when both are given).
    pub idempotency_key: Option<String>,
    pub channel: MessageChannel,
    /// `KEY` (the latest version) or `KEY:vN`, e.g. `otp_login:v3`.
    pub template_id: String,
    /// BCP 47, e.g. `en-GB`: the template's locale to render.
    pub locale: Option<String>,
    pub to: MessageTo,
    /// The template's variables: a JSON object of at most 32 KiB.
    #[schema(value_type = Option<Object>)]
    pub variables: Option<Value>,
    pub metadata: Option<MessageMetadata>,
    pub priority: Option<MessagePriority>,
    pub schedule_at: Option<DateTime<Utc>>,
    /// 1 to 2,592,000 (30 days).
    pub ttl_seconds: Option<u64>,
    /// A registered webhook endpoint's URL: receives a signed POST for each status change.
    pub callback_url: Option<String>,
    pub trace_id: Option<String>,
}

/// A message's channels, as Herald has them (no `whatsapp`: Herald has no WhatsApp provider).
#[derive(Debug, Clone, Copy, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum MessageChannel {
    Email,
    Sms,
    Push,
    Webhook,
    Ntfy,
    /// Herald's `in_app`.
    #[serde(alias = "in_app")]
    Inapp,
}

impl From<MessageChannel> for Channel {
    fn from(channel: MessageChannel) -> Self {
        match channel {
            MessageChannel::Email => Channel::Email,
            MessageChannel::Sms => Channel::Sms,
            MessageChannel::Push => Channel::Push,
            MessageChannel::Webhook => Channel::Webhook,
            MessageChannel::Ntfy => Channel::Ntfy,
            MessageChannel::Inapp => Channel::InApp,
        }
    }
}

#[derive(Debug, Clone, Copy, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum MessagePriority {
    High,
    Normal,
    Low,
}

impl From<MessagePriority> for Priority {
    fn from(priority: MessagePriority) -> Self {
        match priority {
            MessagePriority::High => Priority::High,
            MessagePriority::Normal => Priority::Normal,
            MessagePriority::Low => Priority::Low,
        }
    }
}

/// Where to deliver: the address the channel needs.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MessageTo {
    pub email: Option<String>,
    /// E.164, e.g. `+447700900123`.
    pub phone: Option<String>,
    /// A mobile push endpoint ARN or device token.
    pub device_token: Option<String>,
    /// Your id for the recipient (Herald's; the `inapp` channel needs it).
    pub id: Option<String>,
}

#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MessageMetadata {
    /// The notification's category (preferences, routing), e.g. `auth`.
    pub category: Option<String>,
    /// The notification's tags (at most 20).
    #[serde(default)]
    pub tags: Vec<String>,
}

/// A field of the send command's input and the message field it came from,
/// so an error names what the client sent.
const MESSAGE_PATHS: [(&str, &str); 14] = [
    ("recipient.email", "to.email"),
    ("recipient.phone", "to.phone"),
    ("recipient.push_target", "to.device_token"),
    ("recipient.id", "to.id"),
    ("recipient", "to"),
    ("channels", "channel"),
    ("template.variables", "variables"),
    ("template.locale", "locale"),
    ("template.key", "template_id"),
    ("template.version", "template_id"),
    ("template", "template_id"),
    ("content", "template_id"),
    ("category", "metadata.category"),
    ("tags", "metadata.tags"),
];

impl Message {
    fn into_send(self, tenant_id: &TenantId) -> Result<domain::SendNotification, ApiError> {
        if let Some(tenant) = &self.tenant_id
            && tenant != tenant_id.as_str()
        {
            return Err(ApiError::field(
                "tenant_id",
                "is not the API key's tenant (leave it out: the key names the tenant)",
            ));
        }
        let (key, version) = template_id(&self.template_id)?;
        let to = self.to;
        let metadata = self.metadata.unwrap_or_default();
        Ok(domain::SendNotification {
            idempotency_key: self.idempotency_key,
            recipient: domain::RecipientInput {
                id: to.id,
                email: to.email,
                phone: to.phone,
                push_target: to.device_token,
                ..Default::default()
            },
            channels: vec![Given::Typed(self.channel.into())],
            priority: self.priority.map(|p| Given::Typed(p.into())),
            template: Some(domain::TemplateRefInput {
                key: Some(key),
                version,
                locale: self.locale,
                variables: self.variables,
            }),
            category: metadata.category,
            tags: metadata.tags,
            schedule_at: self.schedule_at,
            ttl_seconds: self.ttl_seconds,
            callback_url: self.callback_url,
            trace_id: self.trace_id,
            ..Default::default()
        })
    }

    /// A path of the send command's input as a path of the message
    /// (`to.email`, not `recipient.email`).
    pub fn field_path(path: String) -> String {
        MESSAGE_PATHS
            .iter()
            .find_map(|(from, to)| {
                let rest = path.strip_prefix(from)?;
                (rest.is_empty() || rest.starts_with(['.', '['])).then(|| format!("{to}{rest}"))
            })
            .unwrap_or(path)
    }
}

/// `otp_login:v3` as key and version; `otp_login` alone is the latest version.
pub fn template_id(raw: &str) -> Result<(String, Option<u32>), ApiError> {
    match raw.rsplit_once(':') {
        None => Ok((raw.to_string(), None)),
        Some((key, version)) => version
            .strip_prefix('v')
            .and_then(|digits| digits.parse::<u32>().ok())
            .map(|version| (key.to_string(), Some(version)))
            .ok_or_else(|| {
                ApiError::field("template_id", "expected KEY or KEY:vN, e.g. otp_login:v3")
            }),
    }
}

/// The answer to a flat message.
#[derive(Debug, Serialize, ToSchema)]
pub struct MessageAccepted {
    pub message_id: Uuid,
    /// `REQUESTED` (queued), or `SCHEDULED` for a later `schedule_at`.
    pub status: NotificationStatus,
}

/// A notification as lists show it.
#[derive(Debug, Serialize, ToSchema)]
pub struct NotificationSummary {
    pub notification_id: Uuid,
    pub status: NotificationStatus,
    pub priority: Priority,
    /// In order of preference.
    pub channels: Vec<Channel>,
    pub recipient_id: Option<String>,
    pub category: Option<String>,
    pub tags: Vec<String>,
    pub created_at: DateTime<Utc>,
}

impl NotificationSummary {
    pub fn of_state(state: &NotificationState) -> NotificationSummary {
        let request = &state.request;
        NotificationSummary {
            notification_id: state.notification_id.as_uuid(),
            status: state.status,
            priority: request.priority,
            channels: request.channels.clone(),
            recipient_id: request.recipient.id.as_ref().map(|id| id.to_string()),
            category: request.category.as_ref().map(|c| c.to_string()),
            tags: request.tags.iter().map(|t| t.to_string()).collect(),
            created_at: state.requested_at,
        }
    }

    /// From the status view; rows are written by Herald, so they parse.
    pub fn of_row(row: notification_status::Row) -> Option<NotificationSummary> {
        Some(NotificationSummary {
            notification_id: row.notification_id,
            status: NotificationStatus::ALL
                .into_iter()
                .find(|s| s.as_str() == row.status)?,
            priority: Priority::parse(&row.priority).ok()?,
            channels: row
                .channels
                .iter()
                .filter_map(|c| Channel::parse(c).ok())
                .collect(),
            recipient_id: row.recipient_id,
            category: row.category,
            tags: row.tags,
            created_at: row.created_at,
        })
    }
}

/// The answer to a send in Herald's own shape.
#[derive(Debug, Serialize, ToSchema)]
pub struct Accepted {
    #[serde(flatten)]
    pub notification: NotificationSummary,
    /// The idempotency key named an earlier send: nothing new was created.
    pub duplicate: bool,
}

/// One event in a notification's life.
#[derive(Debug, Serialize, ToSchema)]
pub struct TimelineEvent {
    #[serde(rename = "type")]
    pub event_type: String,
    /// Position in the global log.
    pub position: i64,
    pub version: i64,
    pub recorded_at: DateTime<Utc>,
    /// The stored payload as it is, readable or not.
    pub data: Value,
    /// Only on an event that cannot be read; the status and attempts are
    /// folded from the others.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub read_error: Option<String>,
}

/// A notification with its status and every event.
#[derive(Debug, Serialize, ToSchema)]
pub struct NotificationView {
    #[serde(flatten)]
    pub notification: NotificationSummary,
    /// Delivery attempts started so far.
    pub attempts: u32,
    pub events: Vec<TimelineEvent>,
}

impl NotificationView {
    pub fn of(details: &NotificationDetails) -> NotificationView {
        NotificationView {
            notification: NotificationSummary::of_state(&details.state),
            attempts: details.state.attempts,
            events: details
                .timeline
                .iter()
                .map(|e| TimelineEvent {
                    event_type: e.event_type.clone(),
                    position: e.global_position,
                    version: e.stream_version,
                    recorded_at: e.recorded_at,
                    data: e.payload.clone(),
                    read_error: details.read_error(e.global_position).map(str::to_string),
                })
                .collect(),
        }
    }
}

/// `GET /api/notifications`: filters and a page, newest first.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListParams {
    /// 1 to 100; 20 when absent.
    #[param(minimum = 1, maximum = 100)]
    pub limit: Option<u32>,
    /// The `next_cursor` of the previous page.
    pub after: Option<String>,
    /// Statuses, comma-separated, e.g. `SENT,DELIVERED`.
    #[param(value_type = Option<Vec<NotificationStatus>>, style = Form, explode = false)]
    pub status: Option<String>,
    pub channel: Option<Channel>,
    pub recipient_id: Option<String>,
    pub tag: Option<String>,
    /// Created at or after.
    pub from: Option<DateTime<Utc>>,
    /// Created before.
    pub to: Option<DateTime<Utc>>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct NotificationPage {
    pub items: Vec<NotificationSummary>,
    pub has_more: bool,
    /// Pass as `after` for the next page.
    pub next_cursor: Option<String>,
}

/// `POST /api/batch`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BatchRequest {
    /// 1 to 1,000 sends, each in either shape; each succeeds or fails on its own.
    #[schema(value_type = Vec<SendBody>, min_items = 1, max_items = 1000)]
    pub messages: Vec<Value>,
}

/// One item of a batch: its notification, or why it was refused.
#[derive(Debug, Serialize, ToSchema)]
pub struct BatchItem {
    /// The item's position in `messages`.
    pub index: usize,
    pub message_id: Option<Uuid>,
    pub status: Option<NotificationStatus>,
    pub duplicate: bool,
    pub error: Option<ErrorDetail>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct BatchAnswer {
    pub accepted: usize,
    pub refused: usize,
    pub results: Vec<BatchItem>,
}

/// `POST /api/workflows/{key}/trigger`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({
    "recipients": [{ "id": "ada", "email": "ada@example.com" }],
    "payload": { "thread_id": "t-42" },
    "idempotency_key": "comment-981"
}))]
pub struct TriggerRequest {
    /// 1 to 100 recipients (`id`, `email`, `phone`, `push_target`,
    /// `webhook_url`, `ntfy_topic`, `locale`, `timezone`): one run each.
    #[schema(value_type = Vec<Object>, min_items = 1, max_items = 100)]
    pub recipients: Vec<domain::RecipientInput>,
    /// What the steps read as `payload.`: a JSON object of at most 16 KiB.
    #[schema(value_type = Option<Object>)]
    pub payload: Option<Value>,
    /// The same key (for the same recipient) gives the same run back.
    pub idempotency_key: Option<String>,
}

/// What a trigger did for each recipient, in order.
#[derive(Debug, Serialize, ToSchema)]
pub struct TriggerAnswer {
    pub runs: Vec<TriggeredRun>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct TriggeredRun {
    pub run_id: Uuid,
    /// `waiting`, `completed` or `cancelled`.
    pub status: String,
    /// The step it rests at; null once ended.
    pub current_step: Option<String>,
    pub waiting_until: Option<DateTime<Utc>>,
    /// It joined an open digest's run instead of starting one.
    pub joined_digest: bool,
}

/// `POST /api/preview`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({
    "template_id": "otp_login:v2", "locale": "en-GB", "variables": { "code": "384921" }
}))]
pub struct PreviewRequest {
    /// `KEY` (the latest version) or `KEY:vN`.
    pub template_id: String,
    /// BCP 47; the template's fallback chain picks the locale rendered.
    pub locale: Option<String>,
    /// Checked as a send checks them: a JSON object of at most 32 KiB.
    #[schema(value_type = Option<Object>)]
    pub variables: Option<Value>,
}

/// Every part of the version rendered, as dispatch would render it.
#[derive(Debug, Serialize, ToSchema)]
pub struct Preview {
    /// `KEY:vN` of the version rendered.
    pub template_id: String,
    #[serde(flatten)]
    pub rendered: RenderedTemplate,
}

/// `POST /api/shortlinks`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({ "url": "https://example.com/welcome" }))]
pub struct ShortLinkRequest {
    /// http(s), at most 2,048 characters.
    pub url: String,
    /// Each click is recorded on this notification.
    pub notification_id: Option<Uuid>,
}

/// A tracked short link: `short_url` redirects to `url`.
#[derive(Debug, Serialize, ToSchema)]
pub struct ShortLink {
    pub code: String,
    pub short_url: String,
    pub url: String,
    pub notification_id: Option<Uuid>,
    pub expires_at: DateTime<Utc>,
}

/// `GET /admin/healthz`.
#[derive(Debug, Serialize, ToSchema)]
pub struct Healthz {
    /// `ok`, or `degraded` when a read model has failed or a provider's
    /// breaker is open (the service still answers).
    pub status: String,
    /// `ready` (answered at all: an unreachable database is 503).
    pub database: String,
    /// Provider breakers open in some worker process.
    pub open_breakers: usize,
    pub projections: Vec<ProjectionHealth>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ProjectionHealth {
    pub name: String,
    pub version: i32,
    /// `running`, `standby`, `rebuilding`, `failed` or `retired`.
    pub state: String,
    /// Events after its checkpoint.
    pub lag_events: i64,
    /// Age of the oldest of those events.
    pub lag_seconds: f64,
}

/// `POST /admin/dlq/replay`: one dead letter by `id`, or every one the
/// filter selects (at most 10,000 per call).
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DlqReplayRequest {
    /// Only this notification (no filter with it).
    pub id: Option<Uuid>,
    /// Only notifications that asked for this channel.
    pub channel: Option<Channel>,
    /// Dead-lettered at or after.
    pub since: Option<DateTime<Utc>>,
    /// Dead-lettered before.
    pub until: Option<DateTime<Utc>>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct DlqReplayed {
    /// Notifications requeued with a fresh retry budget.
    pub replayed: usize,
}

/// The answer to a send: the shape of the answer follows the shape of the send.
#[derive(Debug, Serialize, ToSchema)]
#[serde(untagged)]
pub enum SendAnswer {
    Message(MessageAccepted),
    Notification(Accepted),
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;
    use serde_json::json;

    use super::*;

    #[test]
    fn unknown_fields_are_refused() {
        for body in [
            json!({"chanels": ["email"]}),
            json!({"recipient": {"mail": "a@b.c"}}),
            json!({"campaign_id": "00000000-0000-0000-0000-000000000001"}),
        ] {
            let refused = read::<SendNotification>(body);
            assert!(
                matches!(&refused, Err(ApiError::Validation(fields))
                    if fields[0].message.starts_with("unknown field")),
                "{refused:?}"
            );
        }
    }

    #[test]
    fn channels_and_priority_are_parsed_with_every_other_field() {
        let send: SendNotification = read(json!({
            "recipient": {"email": "not-an-email"},
            "channels": ["email", "fax", "EMAIL"],
            "priority": "urgent",
            "content": {"text": "x"}
        }))
        .unwrap();
        let now = Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap();
        let errors = domain::SendNotification::from(send).parse(now).unwrap_err();
        let paths: Vec<&str> = errors.errors().iter().map(|e| e.path.as_str()).collect();
        assert_eq!(
            paths,
            ["channels[1]", "channels[2]", "recipient.email", "priority"]
        );
        let send: SendNotification = read(json!({
            "recipient": {"email": "ada@example.com"},
            "channels": ["email"],
            "priority": "high",
            "content": {"text": "x"}
        }))
        .unwrap();
        let request = domain::SendNotification::from(send).parse(now).unwrap();
        assert_eq!(request.priority, Priority::High);
        assert_eq!(request.channels, [Channel::Email]);
    }
}
