//! Campaigns: `campaign`, `campaigns`, `createCampaign`,
//! recipients from a list, a CSV URL or an uploaded CSV, and
//! `pauseCampaign` / `resumeCampaign` / `cancelCampaign`. The CSV body
//! route is `POST /api/campaigns/{id}/recipients` (src/api/campaigns.rs).
//! The `campaignProgress` subscription lives here too; the subscription
//! root only registers it.

use std::collections::HashSet;
use std::time::Duration;

use async_graphql::types::Json;
use async_graphql::{Context, ID, InputObject, Object, Result, SimpleObject, Upload};
use chrono::{DateTime, Utc};
use futures::{Stream, StreamExt};
use serde_json::Value;
use tokio::time::{Instant, MissedTickBehavior};
use uuid::Uuid;

use super::connection::Connection;
use super::{ApiError, NeedsScope, actor, api, parse_uuid, require, run};
use crate::api::cursor::{self, page_size};
use crate::api::live::LiveError;
use crate::commands::campaigns::{
    self, CallbackRow, CampaignAnalytics, CampaignRow, ImportError, ImportProgress, ImportSummary,
};
use crate::domain::Scope;
use crate::domain::campaign::{CampaignRecipient, CampaignSummary, CreateCampaign};
use crate::projections::split_page;

/// A campaign: its definition, where it stands, and its messages counted.
pub struct Campaign(CampaignRow);

#[derive(SimpleObject)]
pub struct CampaignTemplate {
    pub key: String,
    /// Pinned when the campaign was created.
    pub version: Option<i32>,
}

#[derive(SimpleObject)]
pub struct CampaignStatusCount {
    /// A campaign message's status: CREATED, READY_TO_SEND, SENDING, SENT,
    /// DELIVERED, BOUNCED, COMPLAINED, FAILED, CANCELLED, REJECTED.
    pub status: String,
    pub count: i64,
}

/// The counts callbacks carry.
#[derive(SimpleObject, Clone, PartialEq)]
pub struct CampaignSummaryObject {
    pub total_messages: i64,
    pub pending: i64,
    pub sent: i64,
    pub delivered: i64,
    pub bounced: i64,
    pub complained: i64,
    pub failed: i64,
    pub cancelled: i64,
    /// Messages with an outcome, in percent.
    pub percent_done: i32,
}

impl From<CampaignSummary> for CampaignSummaryObject {
    fn from(s: CampaignSummary) -> Self {
        let n = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
        CampaignSummaryObject {
            percent_done: i32::from(s.percent_done()),
            total_messages: n(s.total_messages),
            pending: n(s.pending),
            sent: n(s.sent),
            delivered: n(s.delivered),
            bounced: n(s.bounced),
            complained: n(s.complained),
            failed: n(s.failed),
            cancelled: n(s.cancelled),
        }
    }
}

/// Engagement of a campaign's messages; each rate is a fraction (0 to 1)
/// of `sent`, 0 while nothing is sent.
pub struct CampaignAnalyticsObject(CampaignAnalytics);

fn rate(part: i64, whole: i64) -> f64 {
    if whole <= 0 {
        0.0
    } else {
        part as f64 / whole as f64
    }
}

#[Object(name = "CampaignAnalytics")]
impl CampaignAnalyticsObject {
    /// Messages handed to the provider (SENT, DELIVERED, BOUNCED or COMPLAINED).
    async fn sent(&self) -> i64 {
        self.0.sent
    }
    /// Messages with a delivery report (a complaint counts as delivered).
    async fn delivered(&self) -> i64 {
        self.0.delivered
    }
    /// Messages opened at least once (tracking pixel).
    async fn opened(&self) -> i64 {
        self.0.opened
    }
    /// Messages with at least one tracked link followed.
    async fn clicked(&self) -> i64 {
        self.0.clicked
    }
    async fn bounced(&self) -> i64 {
        self.0.bounced
    }
    async fn complained(&self) -> i64 {
        self.0.complained
    }
    /// The campaign's addresses suppressed by an unsubscribe since it started.
    async fn unsubscribed(&self) -> i64 {
        self.0.unsubscribed
    }
    /// `delivered` / `sent`, from 0 to 1 (0 while nothing is sent).
    async fn delivery_rate(&self) -> f64 {
        rate(self.0.delivered, self.0.sent)
    }
    /// `opened` / `sent`, from 0 to 1 (0 while nothing is sent).
    async fn open_rate(&self) -> f64 {
        rate(self.0.opened, self.0.sent)
    }
    /// `clicked` / `sent`, from 0 to 1 (0 while nothing is sent).
    async fn click_rate(&self) -> f64 {
        rate(self.0.clicked, self.0.sent)
    }
    /// `bounced` / `sent`, from 0 to 1 (0 while nothing is sent).
    async fn bounce_rate(&self) -> f64 {
        rate(self.0.bounced, self.0.sent)
    }
    /// `unsubscribed` / `sent`, from 0 to 1 (0 while nothing is sent).
    async fn unsubscribe_rate(&self) -> f64 {
        rate(self.0.unsubscribed, self.0.sent)
    }
}

/// One signed callback to the campaign's URL and how its delivery went.
#[derive(SimpleObject)]
pub struct CampaignCallback {
    pub id: ID,
    /// campaign.started, campaign.progress, campaign.completed, campaign.cancelled.
    pub event: String,
    /// PENDING, RETRYING, DELIVERED or FAILED.
    pub status: String,
    pub attempts: i32,
    pub last_error: Option<String>,
    pub next_attempt_at: Option<DateTime<Utc>>,
    pub delivered_at: Option<DateTime<Utc>>,
    /// The JSON body as sent (the `webhook-id` header is this callback's id).
    pub body: String,
    pub created_at: DateTime<Utc>,
}

impl From<CallbackRow> for CampaignCallback {
    fn from(row: CallbackRow) -> Self {
        CampaignCallback {
            id: ID(row.callback_id.to_string()),
            event: row.event,
            status: row.status,
            attempts: row.attempts,
            last_error: row.last_error,
            next_attempt_at: row.next_attempt_at,
            delivered_at: row.delivered_at,
            body: row.body,
            created_at: row.created_at,
        }
    }
}

/// A refused recipient row.
#[derive(SimpleObject)]
pub struct CampaignImportError {
    /// The CSV line (the header is line 1), or the list position from 1.
    pub line: i64,
    pub reason: String,
}

impl From<ImportError> for CampaignImportError {
    fn from(error: ImportError) -> Self {
        CampaignImportError {
            line: error.line,
            reason: error.reason,
        }
    }
}

#[derive(SimpleObject)]
pub struct CampaignImport {
    pub import_id: ID,
    pub accepted: i64,
    pub rejected: i64,
    pub batches: i32,
    /// The first refused rows (at most 100); all are in `campaign.importErrors`.
    pub errors: Vec<CampaignImportError>,
    /// Why the import stopped early; the rows stored before stay.
    pub stopped: Option<String>,
    pub campaign: Option<Campaign>,
}

#[Object]
impl Campaign {
    async fn id(&self) -> ID {
        ID(self.0.campaign_id.to_string())
    }
    async fn name(&self) -> &str {
        &self.0.name
    }
    /// ACCEPTED, PROCESSING, SCHEDULED, SENDING, PAUSED, SENT, COMPLETED or CANCELLED.
    async fn status(&self) -> &str {
        &self.0.status
    }
    async fn template(&self) -> CampaignTemplate {
        CampaignTemplate {
            key: self.0.spec.template_key.as_str().to_string(),
            version: self.0.spec.template_version.map(|v| v.get() as i32),
        }
    }
    async fn channel(&self) -> &str {
        self.0.spec.channel.as_str()
    }
    async fn category(&self) -> &str {
        self.0.spec.category.as_str()
    }
    async fn schedule_at(&self) -> Option<DateTime<Utc>> {
        self.0.spec.schedule_at
    }
    async fn callback_url(&self) -> Option<&str> {
        self.0.spec.callback_url.as_ref().map(|url| url.as_str())
    }
    async fn address_column(&self) -> &str {
        &self.0.spec.address_column
    }
    async fn progress_steps(&self) -> Vec<i32> {
        self.0
            .spec
            .progress_steps
            .iter()
            .map(|s| i32::from(*s))
            .collect()
    }
    async fn batch_size(&self) -> i32 {
        self.0.spec.batch_size as i32
    }
    async fn batches(&self) -> i32 {
        self.0.batches
    }
    async fn released_batches(&self) -> i32 {
        self.0.released_batches
    }
    async fn total_messages(&self) -> i64 {
        self.0.total_messages
    }
    async fn rejected_rows(&self) -> i64 {
        self.0.rejected_rows
    }
    async fn started_at(&self) -> Option<DateTime<Utc>> {
        self.0.started_at
    }
    async fn completed_at(&self) -> Option<DateTime<Utc>> {
        self.0.completed_at
    }
    async fn created_at(&self) -> DateTime<Utc> {
        self.0.created_at
    }
    /// Messages per status, released ones by their notification's status.
    #[graphql(guard = "NeedsScope(Scope::Read)")]
    async fn counts(&self, ctx: &Context<'_>) -> Result<Vec<CampaignStatusCount>, ApiError> {
        let (counts, _) = campaigns::counts(api(ctx)?.store.pool(), self.0.campaign_id).await?;
        Ok(counts
            .into_iter()
            .map(|(status, count)| CampaignStatusCount {
                status: status.to_string(),
                count,
            })
            .collect())
    }
    #[graphql(guard = "NeedsScope(Scope::Read)")]
    async fn summary(&self, ctx: &Context<'_>) -> Result<CampaignSummaryObject, ApiError> {
        let (_, summary) = campaigns::counts(api(ctx)?.store.pool(), self.0.campaign_id).await?;
        Ok(summary.into())
    }
    /// Sent, delivered, opened, clicked, bounced, complained and
    /// unsubscribed messages, and their rates.
    #[graphql(guard = "NeedsScope(Scope::Read)")]
    async fn analytics(&self, ctx: &Context<'_>) -> Result<CampaignAnalyticsObject, ApiError> {
        let analytics = campaigns::analytics(api(ctx)?.store.pool(), self.0.campaign_id).await?;
        Ok(CampaignAnalyticsObject(analytics))
    }
    #[graphql(guard = "NeedsScope(Scope::Read)")]
    async fn callbacks(&self, ctx: &Context<'_>) -> Result<Vec<CampaignCallback>, ApiError> {
        let rows = campaigns::callbacks(api(ctx)?.store.pool(), self.0.campaign_id).await?;
        Ok(rows.into_iter().map(Into::into).collect())
    }
    /// Rows refused by the imports, by line (up to `first`, at most 1000).
    #[graphql(guard = "NeedsScope(Scope::Read)")]
    async fn import_errors(
        &self,
        ctx: &Context<'_>,
        #[graphql(default = 100)] first: i32,
    ) -> Result<Vec<CampaignImportError>, ApiError> {
        let rows = campaigns::import_errors(
            api(ctx)?.store.pool(),
            self.0.campaign_id,
            i64::from(first.clamp(1, 1_000)),
        )
        .await?;
        Ok(rows.into_iter().map(Into::into).collect())
    }
}

#[derive(InputObject)]
pub struct CampaignTemplateInput {
    pub key: String,
    /// Default: the latest published version, pinned now.
    pub version: Option<i32>,
}

#[derive(InputObject)]
pub struct CreateCampaignInput {
    pub name: String,
    pub template: CampaignTemplateInput,
    /// `email` or `sms`.
    pub channel: String,
    /// Default `marketing`.
    pub category: Option<String>,
    /// Default: as soon as the recipients are in.
    pub schedule_at: Option<DateTime<Utc>>,
    /// Receives signed callbacks on start, each progress step and completion.
    pub callback_url: Option<String>,
    /// The CSV column holding the address (default `email`).
    pub address_column: Option<String>,
    /// Percentages of messages with an outcome that trigger a callback, e.g. [25, 50, 75].
    #[graphql(default)]
    pub progress_steps: Vec<i32>,
    /// Messages per batch (default 1000).
    pub batch_size: Option<i32>,
}

#[derive(SimpleObject)]
pub struct CreateCampaignPayload {
    pub campaign: Campaign,
    /// The tenant's campaign signing secret (`whsec_...`), shown only by
    /// the call that created it: it signs callbacks to URLs that are not a
    /// registered webhook endpoint.
    pub signing_secret: Option<String>,
}

#[derive(InputObject)]
pub struct CampaignRecipientInput {
    pub address: String,
    /// A JSON object of template variables.
    pub variables: Option<Json<Value>>,
}

/// `value` as a `u32`; a negative one is `VALIDATION` on `field`.
fn unsigned(field: &str, value: Option<i32>) -> Result<Option<u32>, ApiError> {
    value
        .map(|v| u32::try_from(v).map_err(|_| ApiError::field(field, "must be positive")))
        .transpose()
}

async fn import_payload(
    ctx: &Context<'_>,
    tenant_id: &crate::domain::values::TenantId,
    summary: ImportSummary,
    id: Uuid,
) -> Result<CampaignImport, ApiError> {
    let campaign = campaigns::get(api(ctx)?.store.pool(), tenant_id, id).await?;
    Ok(CampaignImport {
        import_id: ID(summary.import_id.to_string()),
        accepted: summary.accepted as i64,
        rejected: summary.rejected as i64,
        batches: summary.batches as i32,
        errors: summary.errors.into_iter().map(Into::into).collect(),
        stopped: summary.stopped,
        campaign: campaign.map(Campaign),
    })
}

#[derive(Default)]
pub struct CampaignsQuery;

#[Object]
impl CampaignsQuery {
    async fn campaign(&self, ctx: &Context<'_>, id: ID) -> Result<Option<Campaign>, ApiError> {
        let principal = require(ctx, Scope::Read)?;
        let id = parse_uuid("id", &id, "campaign")?;
        let row = campaigns::get(api(ctx)?.store.pool(), &principal.tenant_id, id).await?;
        Ok(row.map(Campaign))
    }

    /// The tenant's campaigns, newest first.
    async fn campaigns(
        &self,
        ctx: &Context<'_>,
        #[graphql(default = 20)] first: i32,
        after: Option<String>,
    ) -> Result<Connection<Campaign>, ApiError> {
        let principal = require(ctx, Scope::Read)?;
        let first = page_size("first", first.into())?;
        let after = cursor::decode(after.as_deref())?;
        let rows = campaigns::list(
            api(ctx)?.store.pool(),
            &principal.tenant_id,
            after,
            first as i64 + 1,
        )
        .await?;
        Ok(Connection::page(
            split_page(rows, first),
            |row| row.campaign_id,
            Campaign,
        ))
    }
}

#[derive(Default)]
pub struct CampaignsMutation;

#[Object]
impl CampaignsMutation {
    /// Creates a campaign (requires `send`); add recipients next.
    async fn create_campaign(
        &self,
        ctx: &Context<'_>,
        input: CreateCampaignInput,
    ) -> Result<CreateCampaignPayload, ApiError> {
        let principal = require(ctx, Scope::Send)?;
        let version = unsigned("template.version", input.template.version)?;
        let batch_size = unsigned("batchSize", input.batch_size)?;
        let created = campaigns::create(
            &api(ctx)?.store,
            &principal.tenant_id,
            CreateCampaign {
                name: input.name,
                template_key: input.template.key,
                template_version: version,
                channel: input.channel,
                category: input.category,
                schedule_at: input.schedule_at,
                callback_url: input.callback_url,
                address_column: input.address_column,
                progress_steps: input.progress_steps,
                batch_size,
            },
            &api(ctx)?.egress,
            &actor(principal),
        )
        .await?;
        Ok(CreateCampaignPayload {
            campaign: Campaign(created.campaign),
            signing_secret: created.signing_secret,
        })
    }

    /// Adds listed recipients (at most 10,000 per call), checked like CSV rows.
    async fn add_campaign_recipients(
        &self,
        ctx: &Context<'_>,
        id: ID,
        recipients: Vec<CampaignRecipientInput>,
    ) -> Result<CampaignImport, ApiError> {
        let principal = require(ctx, Scope::Send)?;
        let campaign_id = parse_uuid("id", &id, "campaign")?;
        let mut listed = Vec::with_capacity(recipients.len());
        for (index, recipient) in recipients.into_iter().enumerate() {
            let variables = match recipient.variables.map(|v| v.0) {
                None | Some(Value::Null) => serde_json::Map::new(),
                Some(Value::Object(map)) => map,
                Some(_) => {
                    return Err(ApiError::field(
                        &format!("recipients[{index}].variables"),
                        "must be a JSON object",
                    ));
                }
            };
            listed.push(CampaignRecipient {
                address: recipient.address,
                variables,
            });
        }
        let summary = campaigns::add_recipients(
            &api(ctx)?.store,
            &principal.tenant_id,
            campaign_id,
            listed,
            &actor(principal),
        )
        .await?;
        import_payload(ctx, &principal.tenant_id, summary, campaign_id).await
    }

    /// Fetches the CSV at `csvUrl` and imports it as it arrives.
    async fn import_campaign_recipients(
        &self,
        ctx: &Context<'_>,
        id: ID,
        csv_url: String,
    ) -> Result<CampaignImport, ApiError> {
        let principal = require(ctx, Scope::Send)?;
        let campaign_id = parse_uuid("id", &id, "campaign")?;
        let summary = campaigns::import_url(
            &api(ctx)?.store,
            &principal.tenant_id,
            campaign_id,
            &csv_url,
            &api(ctx)?.egress,
            api(ctx)?.max_import_bytes,
            &actor(principal),
        )
        .await?;
        import_payload(ctx, &principal.tenant_id, summary, campaign_id).await
    }

    /// Imports an uploaded CSV (GraphQL multipart request); the upload is
    /// spooled to a temporary file by the server and read from there.
    async fn upload_campaign_recipients(
        &self,
        ctx: &Context<'_>,
        id: ID,
        file: Upload,
    ) -> Result<CampaignImport, ApiError> {
        let principal = require(ctx, Scope::Send)?;
        let campaign_id = parse_uuid("id", &id, "campaign")?;
        let upload = file
            .value(ctx)
            .map_err(|error| ApiError::field("file", error.to_string()))?;
        let reader = tokio::io::BufReader::new(tokio::fs::File::from_std(upload.content));
        let summary = campaigns::import_csv(
            &api(ctx)?.store,
            &principal.tenant_id,
            campaign_id,
            reader,
            &upload.filename,
            api(ctx)?.max_import_bytes,
            &actor(principal),
            &ImportProgress::default(),
        )
        .await?;
        import_payload(ctx, &principal.tenant_id, summary, campaign_id).await
    }

    async fn pause_campaign(&self, ctx: &Context<'_>, id: ID) -> Result<Campaign, ApiError> {
        let principal = require(ctx, Scope::Send)?;
        let id = parse_uuid("id", &id, "campaign")?;
        Ok(Campaign(run(ctx, principal, id, campaigns::pause).await?))
    }

    async fn resume_campaign(&self, ctx: &Context<'_>, id: ID) -> Result<Campaign, ApiError> {
        let principal = require(ctx, Scope::Send)?;
        let id = parse_uuid("id", &id, "campaign")?;
        Ok(Campaign(run(ctx, principal, id, campaigns::resume).await?))
    }

    /// Cancels every message not sent yet; sent ones are kept.
    async fn cancel_campaign(
        &self,
        ctx: &Context<'_>,
        id: ID,
        reason: Option<String>,
    ) -> Result<Campaign, ApiError> {
        let principal = require(ctx, Scope::Send)?;
        let id = parse_uuid("id", &id, "campaign")?;
        let row = campaigns::cancel(
            &api(ctx)?.store,
            &principal.tenant_id,
            id,
            reason,
            &actor(principal),
        )
        .await?;
        Ok(Campaign(row))
    }
}

/// How often `campaignProgress` recomputes at most while the campaign's
/// events arrive.
const PROGRESS_EVERY: Duration = Duration::from_millis(500);
/// How long after the campaign's last event it keeps recomputing: the
/// counts read `notification_status`, a projection a little behind the log.
const PROGRESS_SETTLE: Duration = Duration::from_secs(2);

/// The summary now, and whether the campaign is over (COMPLETED or
/// CANCELLED).
async fn progress(
    pool: &sqlx::PgPool,
    tenant_id: &crate::domain::values::TenantId,
    id: Uuid,
) -> Result<(CampaignSummaryObject, bool), ApiError> {
    let (_, summary) = campaigns::counts(pool, id).await?;
    let over = campaigns::get(pool, tenant_id, id)
        .await?
        .is_none_or(|row| matches!(row.status.as_str(), "COMPLETED" | "CANCELLED"));
    Ok((summary.into(), over))
}

fn live_error(error: LiveError) -> ApiError {
    match error {
        LiveError::Store(store) => ApiError::from(store),
        other => ApiError::Conflict(other.to_string()),
    }
}

/// Which of the tenant's events touch one campaign: its own stream, and
/// the streams of the notifications it released (known ones loaded at
/// subscribe, new ones recognised by their `campaign:<id>` tag).
struct CampaignWatch {
    stream: String,
    tag: String,
    notifications: HashSet<Uuid>,
}

impl CampaignWatch {
    fn touches(&mut self, event: &crate::eventstore::RecordedEvent) -> bool {
        if event.stream_id == self.stream {
            return true;
        }
        let Some(id) = event
            .stream_id
            .strip_prefix("notification-")
            .and_then(|id| Uuid::parse_str(id).ok())
        else {
            return false;
        };
        if self.notifications.contains(&id) {
            return true;
        }
        let tagged = event.event_type == "NotificationRequested"
            && event
                .payload
                .pointer("/request/tags")
                .and_then(Value::as_array)
                .is_some_and(|tags| tags.iter().any(|t| t.as_str() == Some(&self.tag)));
        if tagged {
            self.notifications.insert(id);
        }
        tagged
    }
}

enum Woke<E> {
    Event(Option<E>),
    Tick,
}

/// `campaignProgress(id)`: the campaign's summary at once, then again
/// whenever it changed, recomputed at most every [`PROGRESS_EVERY`] while
/// the campaign's events arrive (never a query per event); ends after the
/// final counts of a COMPLETED or CANCELLED campaign.
pub(super) async fn campaign_progress(
    ctx: &Context<'_>,
    id: ID,
) -> Result<impl Stream<Item = Result<CampaignSummaryObject>> + use<>, ApiError> {
    let principal = require(ctx, Scope::Read)?;
    let id = parse_uuid("id", &id, "campaign")?;
    let api = api(ctx)?;
    let tenant_id = principal.tenant_id.clone();
    // Listen before the first read, so no change falls in between.
    let events = api.live.events(&tenant_id, None);
    let pool = api.store.pool().clone();
    if campaigns::get(&pool, &tenant_id, id).await?.is_none() {
        return Err(ApiError::NotFound("campaign"));
    }
    let mut watch = CampaignWatch {
        stream: campaigns::stream_id(id),
        tag: format!("campaign:{id}"),
        notifications: campaigns::notification_ids(&pool, id)
            .await?
            .into_iter()
            .collect(),
    };
    Ok(async_stream::try_stream! {
        let mut events = std::pin::pin!(events);
        let (mut last, over) = progress(&pool, &tenant_id, id).await?;
        yield last.clone();
        if over {
            return;
        }
        let mut tick = tokio::time::interval(PROGRESS_EVERY);
        tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut settle_until: Option<Instant> = None;
        loop {
            // `?` works in the stream's body, not inside `select!`.
            let woke = tokio::select! {
                event = events.next() => Woke::Event(event),
                _ = tick.tick(), if settle_until.is_some() => Woke::Tick,
            };
            match woke {
                Woke::Event(None) => break,
                Woke::Event(Some(event)) => {
                    let event = event.map_err(live_error)?;
                    if watch.touches(&event) {
                        settle_until = Some(Instant::now() + PROGRESS_SETTLE);
                    }
                }
                Woke::Tick => {
                    let (summary, over) = progress(&pool, &tenant_id, id).await?;
                    if summary != last {
                        yield summary.clone();
                        last = summary;
                    }
                    if over {
                        break;
                    }
                    if settle_until.is_some_and(|until| Instant::now() >= until) {
                        settle_until = None;
                    }
                }
            }
        }
    }
    .map(|item: Result<CampaignSummaryObject, ApiError>| item.map_err(Into::into)))
}
