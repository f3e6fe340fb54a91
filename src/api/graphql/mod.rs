//! The GraphQL schema: queries and mutations, confined to the caller's tenant.

mod analytics;
mod campaigns;
mod connection;
mod delivery;
mod feed;
mod limits;
mod notification;
mod projections;
mod query_shape;
mod recipients;
mod schedules;
mod subscription;
mod suppressions;
mod templates;
mod tracking;
mod types;
mod webhooks;
mod workflows;

use std::sync::Arc;

use async_graphql::{Context, ID, Object, Result, Schema};

use self::connection::Connection;
use self::notification::NotificationNode;
pub use self::subscription::SubscriptionRoot;
pub(super) use self::types::Priority;
use self::types::*;
use super::auth::{KeyCache, actor};
use super::cursor::{self, filter_value, page_size};
use super::error::ApiError;
use super::live::LiveHub;
use crate::commands::links::FeedGrant;
use crate::commands::tenants::Principal;
use crate::commands::{self, Actor, CommandError};
use crate::domain::values::{ApiKeyId, NotificationId, TenantId};
use crate::domain::{self, Scope as DomainScope};
use crate::eventstore::EventStore;
use crate::projections::{entity_index, notification_status};

pub type HeraldSchema = Schema<QueryRoot, MutationRoot, SubscriptionRoot>;

/// At most this many notifications per `sendNotifications` call.
pub const MAX_BATCH: usize = 1_000;

/// What every resolver may use.
#[derive(Clone)]
pub struct ApiContext {
    pub store: EventStore,
    pub keys: Arc<KeyCache>,
    pub limits: Arc<commands::limits::Limits>,
    /// The process's one log tailer, shared by every subscription.
    pub live: LiveHub,
    /// Tenants whose ops keys may run system-wide operations (`Config::operator_tenants`).
    pub operator_tenants: Arc<[String]>,
    /// Signs and verifies unsubscribe, preference and tracking links.
    pub links: Arc<commands::links::Links>,
    /// Single sends, committed together with the tenant's concurrent ones.
    pub sends: commands::group_commit::GroupCommit,
    /// Live subscriptions each tenant holds in this process.
    pub subscriptions: super::tenant_slots::TenantSlots,
    /// Judges and fetches the URLs tenants give.
    pub egress: crate::egress::Egress,
    /// The largest CSV one campaign import reads.
    pub max_import_bytes: u64,
    /// `[workflows]`, for the runs triggers start.
    pub workflows: commands::workflows::WorkflowsConfig,
}

impl ApiContext {
    /// The one policy of this process's sends, single or batched.
    pub fn send_policy(&self) -> commands::notifications::SendPolicy {
        self.sends.policy().clone()
    }

    /// What the workflow commands of this process need.
    pub fn workflow_settings(&self) -> commands::workflows::WorkflowSettings {
        commands::workflows::WorkflowSettings {
            policy: self.send_policy(),
            config: self.workflows.clone(),
        }
    }
}

/// The authenticated caller of one request, if any. A request made with a
/// feed token has no principal; it carries the token's `FeedGrant` instead,
/// which only the in-app feed fields accept.
pub struct Caller(pub Option<Principal>);

pub fn build(api: ApiContext) -> HeraldSchema {
    Schema::build(
        QueryRoot::default(),
        MutationRoot::default(),
        SubscriptionRoot,
    )
    .data(api)
    // Depth and size, with introspection judged on its own terms.
    .extension(query_shape::QueryShape)
    .finish()
}

/// The schema in SDL, as committed in `schema.graphql`.
pub fn sdl() -> String {
    Schema::build(
        QueryRoot::default(),
        MutationRoot::default(),
        SubscriptionRoot,
    )
    .finish()
    .sdl()
}

fn require<'a>(ctx: &'a Context<'_>, scope: DomainScope) -> Result<&'a Principal, ApiError> {
    let principal = ctx
        .data_opt::<Caller>()
        .and_then(|caller| caller.0.as_ref());
    match principal {
        Some(principal) if principal.allows(scope) => Ok(principal),
        Some(_) => Err(ApiError::forbidden(scope)),
        None if ctx.data_opt::<FeedGrant>().is_some() => Err(ApiError::FeedTokenOnly),
        None => Err(ApiError::Unauthenticated),
    }
}

/// Guards a field that shows what only `scope` may read, on an object a
/// narrower key also reaches (a `send` mutation's answer).
struct NeedsScope(DomainScope);

impl async_graphql::Guard for NeedsScope {
    async fn check(&self, ctx: &Context<'_>) -> Result<()> {
        require(ctx, self.0)?;
        Ok(())
    }
}

fn api<'a>(ctx: &'a Context<'_>) -> Result<&'a ApiContext, ApiError> {
    ctx.data::<ApiContext>()
        .map_err(|e| ApiError::internal(e.message))
}

/// Runs one of the tenant's commands on `input`, recorded as `principal`'s
/// key: the whole call of most mutations.
async fn run<I, T>(
    ctx: &Context<'_>,
    principal: &Principal,
    input: I,
    command: impl AsyncFnOnce(&EventStore, &TenantId, I, &Actor) -> Result<T, CommandError>,
) -> Result<T, ApiError> {
    let store = &api(ctx)?.store;
    Ok(command(store, &principal.tenant_id, input, &actor(principal)).await?)
}

fn parse_id(field: &str, id: &ID) -> Result<NotificationId, ApiError> {
    NotificationId::parse(id.as_str()).map_err(|e| ApiError::field(field, e.to_string()))
}

/// `id` as the UUID of a `what`, or `VALIDATION` on `field`.
fn parse_uuid(field: &str, id: &ID, what: &str) -> Result<uuid::Uuid, ApiError> {
    uuid::Uuid::parse_str(id).map_err(|_| ApiError::field(field, format!("is not a {what} id")))
}

/// The query root: the core queries and the analyst ones.
#[derive(async_graphql::MergedObject, Default)]
pub struct QueryRoot(
    CoreQuery,
    analytics::AnalyticsQuery,
    campaigns::CampaignsQuery,
    limits::LimitsQuery,
    delivery::DeliveryQuery,
    webhooks::WebhooksQuery,
    projections::ProjectionsQuery,
    feed::FeedQuery,
    recipients::RecipientsQuery,
    schedules::SchedulesQuery,
    templates::TemplatesQuery,
    suppressions::SuppressionsQuery,
    tracking::TrackingQuery,
    workflows::WorkflowsQuery,
);

#[derive(Default)]
pub struct CoreQuery;

#[Object]
impl CoreQuery {
    /// The key making this request.
    async fn viewer(&self, ctx: &Context<'_>) -> Result<Viewer, ApiError> {
        let principal = ctx
            .data_opt::<Caller>()
            .and_then(|caller| caller.0.as_ref())
            .ok_or(ApiError::Unauthenticated)?;
        Ok(Viewer {
            tenant_id: principal.tenant_id.to_string(),
            key_id: ID(principal.key_id.to_string()),
            scopes: principal.scopes.iter().map(|s| (*s).into()).collect(),
        })
    }

    /// One notification with its current status and full timeline.
    async fn notification(&self, ctx: &Context<'_>, id: ID) -> Result<NotificationNode, ApiError> {
        let principal = require(ctx, DomainScope::Read)?;
        let id = parse_id("id", &id)?;
        let details = commands::notifications::get(&api(ctx)?.store, &principal.tenant_id, &id)
            .await?
            .ok_or(ApiError::NotFound("notification"))?;
        Ok(NotificationNode::from_details(details))
    }

    /// Newest first; the cursor stays valid while notifications arrive.
    async fn notifications(
        &self,
        ctx: &Context<'_>,
        #[graphql(default = 20)] first: i32,
        after: Option<String>,
        filter: Option<NotificationFilter>,
    ) -> Result<Connection<NotificationNode>, ApiError> {
        let principal = require(ctx, DomainScope::Read)?;
        let first = page_size("first", first.into())?;
        let after = cursor::decode(after.as_deref())?;
        let filter = filter.unwrap_or_default();
        let filter = notification_status::Filter {
            statuses: filter.status.map(|statuses| {
                statuses
                    .into_iter()
                    .map(|s| domain::NotificationStatus::from(s).as_str().to_string())
                    .collect()
            }),
            channel: filter
                .channel
                .map(|c| domain::values::Channel::from(c).as_str().to_string()),
            recipient_id: filter_value(
                "filter.recipientId",
                filter.recipient_id,
                domain::values::RecipientId::parse,
            )?,
            tag: filter_value("filter.tag", filter.tag, domain::values::Tag::parse)?,
            created_after: filter.from,
            created_before: filter.to,
        };
        let pool = api(ctx)?.store.pool();
        let page =
            notification_status::page(pool, &principal.tenant_id, &filter, first, after).await?;
        Ok(Connection::page(
            page,
            |row| row.notification_id,
            |row| NotificationNode::from_row(&principal.tenant_id, row),
        ))
    }

    /// Replay: an entity's ingested events within a time window,
    /// in log order, a page at a time. Without `includeDuplicates`, an event
    /// id repeated in the window is returned once.
    #[allow(clippy::too_many_arguments)]
    async fn replay(
        &self,
        ctx: &Context<'_>,
        entity_type: String,
        entity_id: String,
        from: Option<chrono::DateTime<chrono::Utc>>,
        to: Option<chrono::DateTime<chrono::Utc>>,
        #[graphql(default)] include_duplicates: bool,
        #[graphql(default = 100)] limit: i32,
        after: Option<String>,
    ) -> Result<ReplayPage, ApiError> {
        let principal = require(ctx, DomainScope::Read)?;
        if !(1..=entity_index::MAX_REPLAY_PAGE as i32).contains(&limit) {
            return Err(ApiError::field(
                "limit",
                format!("must be between 1 and {}", entity_index::MAX_REPLAY_PAGE),
            ));
        }
        // PostgreSQL text holds no NUL; refused here, not by the database.
        for (field, value) in [("entityType", &entity_type), ("entityId", &entity_id)] {
            if value.chars().any(char::is_control) {
                return Err(ApiError::field(
                    field,
                    "must not contain control characters",
                ));
            }
        }
        let after =
            cursor::decode(after.as_deref())?.unwrap_or(crate::eventstore::Checkpoint::ORIGIN);
        let page = entity_index::replay(
            api(ctx)?.store.pool(),
            &entity_index::ReplayQuery {
                tenant_id: principal.tenant_id.to_string(),
                entity_type,
                entity_id,
                from,
                to,
                include_duplicates,
                limit: limit as usize,
                after,
            },
        )
        .await?;
        Ok(ReplayPage {
            has_more: page.next.is_some(),
            next_cursor: page.next.as_ref().map(cursor::encode),
            events: page
                .events
                .into_iter()
                .map(|r| ReplayedEvent {
                    position: Position(r.event.global_position),
                    event_type: r.event.event_type,
                    stream_id: r.event.stream_id,
                    version: r.event.stream_version,
                    recorded_at: r.event.recorded_at,
                    duplicate: r.duplicate,
                    data: async_graphql::Json(r.event.payload),
                })
                .collect(),
        })
    }

    /// The tenant's API keys (admin scope), never with their secrets.
    async fn api_keys(&self, ctx: &Context<'_>) -> Result<Vec<ApiKeyObject>, ApiError> {
        let principal = require(ctx, DomainScope::Admin)?;
        let rows =
            commands::tenants::list_api_keys(api(ctx)?.store.pool(), &principal.tenant_id).await?;
        Ok(rows
            .into_iter()
            .map(|row| ApiKeyObject {
                id: ID(row.key_id.to_string()),
                name: row.name,
                prefix: row.prefix,
                scopes: row.scopes,
                created_at: row.created_at,
                revoked_at: row.revoked_at,
            })
            .collect())
    }
}

/// One event of a replay.
#[derive(async_graphql::SimpleObject)]
pub struct ReplayedEvent {
    pub position: Position,
    #[graphql(name = "type")]
    pub event_type: String,
    pub stream_id: String,
    pub version: i64,
    pub recorded_at: chrono::DateTime<chrono::Utc>,
    /// A repeat of an event id already ingested from the same source.
    pub duplicate: bool,
    pub data: async_graphql::Json<serde_json::Value>,
}

#[derive(async_graphql::SimpleObject)]
pub struct ReplayPage {
    pub events: Vec<ReplayedEvent>,
    pub has_more: bool,
    /// Pass as `after` for the next page.
    pub next_cursor: Option<String>,
}

#[derive(async_graphql::SimpleObject)]
pub struct SendNotificationPayload {
    pub notification: NotificationNode,
    /// True when the idempotency key named an earlier send: nothing new was created.
    pub duplicate: bool,
}

/// One item of `sendNotifications`: a notification, or why it was refused.
#[derive(async_graphql::SimpleObject)]
pub struct SendNotificationResult {
    /// The item's position in the input list.
    pub index: i32,
    pub notification: Option<NotificationNode>,
    pub duplicate: bool,
    pub error: Option<ItemError>,
}

fn item_error(error: ApiError) -> ItemError {
    let fields = match &error {
        ApiError::Validation(fields) => fields
            .iter()
            .map(|f| FieldErrorObject {
                path: f.path.clone(),
                message: f.message.clone(),
            })
            .collect(),
        _ => Vec::new(),
    };
    ItemError {
        code: error.code().to_string(),
        message: error.message(),
        fields,
    }
}

/// The mutation root: the core mutations and each room's own.
#[derive(async_graphql::MergedObject, Default)]
pub struct MutationRoot(
    CoreMutation,
    campaigns::CampaignsMutation,
    limits::LimitsMutation,
    delivery::DeliveryMutation,
    webhooks::WebhooksMutation,
    projections::ProjectionsMutation,
    feed::FeedMutation,
    recipients::RecipientsMutation,
    schedules::SchedulesMutation,
    templates::TemplatesMutation,
    suppressions::SuppressionsMutation,
    tracking::TrackingMutation,
    workflows::WorkflowsMutation,
);

#[derive(Default)]
pub struct CoreMutation;

async fn send_one(
    api: &ApiContext,
    principal: &Principal,
    input: SendNotificationInput,
) -> Result<SendNotificationPayload, ApiError> {
    let sent = api
        .sends
        .send(&principal.tenant_id, input.into(), &actor(principal))
        .await?;
    Ok(SendNotificationPayload {
        notification: NotificationNode::from_state(sent.notification),
        duplicate: sent.duplicate,
    })
}

#[Object]
impl CoreMutation {
    /// Accepts a notification for delivery.
    async fn send_notification(
        &self,
        ctx: &Context<'_>,
        input: SendNotificationInput,
    ) -> Result<SendNotificationPayload, ApiError> {
        let principal = require(ctx, DomainScope::Send)?;
        send_one(api(ctx)?, principal, input).await
    }

    /// Up to 1,000 notifications; each item succeeds or fails on its own.
    async fn send_notifications(
        &self,
        ctx: &Context<'_>,
        inputs: Vec<SendNotificationInput>,
    ) -> Result<Vec<SendNotificationResult>, ApiError> {
        let principal = require(ctx, DomainScope::Send)?;
        if inputs.len() > MAX_BATCH {
            return Err(ApiError::field(
                "inputs",
                format!("at most {MAX_BATCH} notifications per call"),
            ));
        }
        let api = api(ctx)?;
        let sent = commands::notifications::send_many(
            &api.store,
            &principal.tenant_id,
            inputs.into_iter().map(Into::into).collect(),
            &api.send_policy(),
            &actor(principal),
        )
        .await;
        Ok(sent
            .into_iter()
            .enumerate()
            .map(|(index, outcome)| match outcome {
                Ok(sent) => SendNotificationResult {
                    index: index as i32,
                    notification: Some(NotificationNode::from_state(sent.notification)),
                    duplicate: sent.duplicate,
                    error: None,
                },
                Err(error) => SendNotificationResult {
                    index: index as i32,
                    notification: None,
                    duplicate: false,
                    error: Some(item_error(error.into())),
                },
            })
            .collect())
    }

    /// Stores a raw event from a source system on its entity's stream. A
    /// repeated event id from the same source is stored as a duplicate, flagged.
    async fn ingest_event(
        &self,
        ctx: &Context<'_>,
        input: IngestEventInput,
    ) -> Result<IngestEventPayload, ApiError> {
        let principal = require(ctx, DomainScope::Send)?;
        let ingested = run(ctx, principal, input.into(), commands::ingest::ingest).await?;
        Ok(IngestEventPayload {
            event_id: ID(ingested.event_id.to_string()),
            position: Position(ingested.position),
            duplicate: ingested.duplicate,
        })
    }

    /// Cancels a notification that has not been sent yet.
    async fn cancel_notification(
        &self,
        ctx: &Context<'_>,
        id: ID,
        reason: Option<String>,
    ) -> Result<NotificationNode, ApiError> {
        let principal = require(ctx, DomainScope::Send)?;
        let id = parse_id("id", &id)?;
        let details = commands::notifications::cancel(
            &api(ctx)?.store,
            &principal.tenant_id,
            &id,
            reason,
            &actor(principal),
        )
        .await?;
        Ok(NotificationNode::from_details(details))
    }

    /// Issues a new API key for the caller's tenant (admin scope). The secret is shown once.
    async fn issue_api_key(
        &self,
        ctx: &Context<'_>,
        name: String,
        scopes: Vec<Scope>,
    ) -> Result<IssuedApiKey, ApiError> {
        let principal = require(ctx, DomainScope::Admin)?;
        let scopes: Vec<DomainScope> = scopes.into_iter().map(Into::into).collect();
        let issued = commands::tenants::issue_api_key(
            &api(ctx)?.store,
            &principal.tenant_id,
            &name,
            scopes,
            &actor(principal),
        )
        .await?;
        Ok(IssuedApiKey {
            id: ID(issued.key_id.to_string()),
            api_key: issued.api_key,
            scopes: issued.scopes.into_iter().map(Into::into).collect(),
        })
    }

    /// Revokes one of the tenant's keys (admin scope); it stops working at once here
    /// and within seconds in other processes.
    async fn revoke_api_key(&self, ctx: &Context<'_>, id: ID) -> Result<bool, ApiError> {
        let principal = require(ctx, DomainScope::Admin)?;
        let key_id =
            ApiKeyId::parse(id.as_str()).map_err(|e| ApiError::field("id", e.to_string()))?;
        run(ctx, principal, key_id, commands::tenants::revoke_api_key).await?;
        api(ctx)?.keys.clear();
        Ok(true)
    }
}
