//! Projection operations (`herald projections` in the API; see
//! docs/operations.md).
//!
//! Who may do what: projections are system-wide (one read model, one
//! checkpoint, for every tenant), while API keys belong to one tenant. So any
//! `ops` key may look (`projections`), but a failed event's error text is
//! shown only to the tenant whose event it is, and to operator tenants; and
//! only an `ops` key of an operator tenant (`operator_tenants` in the
//! configuration) may retry, skip or rebuild, since that changes what every
//! tenant reads.

use std::sync::Arc;

use async_graphql::{Context, Enum, ErrorExtensions, Object, Result, SimpleObject};
use chrono::{DateTime, Utc};

use super::types::Position;
use super::{ApiError, actor, api, require};
use crate::commands::tenants::Principal;
use crate::domain::Scope;
use crate::projections::checkpoints::{self, Activity, ProjectionStatus, SkipError};
use crate::projections::rebuild::{self, RebuildError};
use crate::projections::{self as read_models, Projection};

/// What `error` says to a tenant about another tenant's failed event.
const OTHER_TENANT_FAILED: &str = "an event of another tenant failed";

#[derive(Enum, Copy, Clone, Eq, PartialEq)]
#[graphql(remote = "crate::projections::checkpoints::Activity")]
pub enum ProjectionState {
    /// A process applies events.
    Running,
    /// No process runs it right now; one with the projections role takes it over.
    Standby,
    /// Its tables are being filled again beside the serving ones (see `rebuild`).
    Rebuilding,
    /// Stopped at an event until an operator retries or skips it.
    Failed,
    /// A newer version replaced it.
    Retired,
}

/// A rebuild under way, in whichever process runs it.
#[derive(SimpleObject)]
pub struct RebuildProgress {
    /// Events folded so far.
    pub events: i64,
    /// Events the projection reads in the whole log when the rebuild started.
    pub total: i64,
    pub events_per_second: f64,
    /// At the rate so far; null before the first batch.
    pub eta_seconds: Option<f64>,
    pub started_at: DateTime<Utc>,
}

/// One version of a read model.
#[derive(SimpleObject)]
#[graphql(name = "Projection")]
pub struct ProjectionObject {
    pub name: String,
    pub version: i32,
    pub state: ProjectionState,
    /// The checkpoint, in the log's read order (transaction id, then global
    /// position): the last event applied, or, once caught up, the horizon of
    /// committed transactions with position 0. `lagEvents` says what is left.
    pub checkpoint_transaction_id: i64,
    pub checkpoint_position: Position,
    /// Events it reads that lie after its checkpoint.
    pub lag_events: i64,
    /// Age of the oldest of those events.
    pub lag_seconds: f64,
    pub events_processed: i64,
    pub updated_at: Option<DateTime<Utc>>,
    /// When failed: the global position of the event it stopped at.
    pub failed_position: Option<Position>,
    /// When failed: why. Another tenant's event's error is not shown.
    pub error: Option<String>,
    pub rebuild: Option<RebuildProgress>,
}

impl ProjectionObject {
    fn shown_to(status: ProjectionStatus, principal: &Principal, operator: bool) -> Self {
        let own = status.failed_tenant_id.as_deref() == Some(principal.tenant_id.as_str());
        ProjectionObject {
            error: status.error.map(|error| {
                if own || operator {
                    error
                } else {
                    OTHER_TENANT_FAILED.to_owned()
                }
            }),
            rebuild: status.rebuild.map(|r| RebuildProgress {
                events_per_second: r.events_per_second(),
                eta_seconds: r.eta_seconds(),
                events: r.events,
                total: r.total,
                started_at: r.started_at,
            }),
            name: status.name,
            version: status.version,
            state: status.activity.into(),
            checkpoint_transaction_id: status.checkpoint.transaction_id,
            checkpoint_position: Position(status.checkpoint.global_position),
            lag_events: status.lag_events,
            lag_seconds: status.lag_seconds,
            events_processed: status.events_processed,
            updated_at: status.updated_at,
            failed_position: status.failed_position.map(Position),
        }
    }
}

/// The result of `skipProjectionEvent`.
#[derive(SimpleObject)]
pub struct ProjectionSkip {
    /// Where the `ProjectionEventSkipped` record went in the log (stream `projection-<name>`).
    pub recorded_position: Position,
    pub projection: ProjectionObject,
}

fn is_operator(ctx: &Context<'_>, principal: &Principal) -> Result<bool, ApiError> {
    Ok(api(ctx)?
        .operator_tenants
        .iter()
        .any(|tenant| tenant == principal.tenant_id.as_str()))
}

/// An `ops` key of an operator tenant. FORBIDDEN is built here, not as an
/// `ApiError::Forbidden`, because the fix is not a scope but a configuration.
fn require_operator<'a>(ctx: &'a Context<'_>) -> Result<&'a Principal> {
    let principal = require(ctx, Scope::Ops)?;
    if is_operator(ctx, principal)? {
        return Ok(principal);
    }
    Err(async_graphql::Error::new(format!(
        "projections are shared by every tenant, so only an ops key of an operator tenant may \
         change them; the service's operator can list tenant {} in operator_tenants \
         (herald.toml, or HERALD_OPERATOR_TENANTS=[...]), or run `herald projections` on the server",
        principal.tenant_id
    ))
    .extend_with(|_, extensions| extensions.set("code", "FORBIDDEN")))
}

/// A projection this binary runs (and so can rebuild).
fn known(name: &str) -> Result<Arc<dyn Projection>, ApiError> {
    read_models::all()
        .into_iter()
        .find(|p| p.name() == name)
        .ok_or(ApiError::NotFound("projection"))
}

/// Refuses a name no projection can have (PostgreSQL refuses NUL in text);
/// any other is looked up, since a failed projection may be one that another
/// binary runs.
fn may_exist(name: &str) -> Result<(), ApiError> {
    if name.contains('\0') {
        return Err(ApiError::NotFound("projection"));
    }
    Ok(())
}

/// The newest version of `name` that is not retired, as `principal` may see it.
async fn status_of(
    ctx: &Context<'_>,
    principal: &Principal,
    name: &str,
) -> Result<ProjectionObject, ApiError> {
    let statuses = checkpoints::statuses(api(ctx)?.store.pool(), &read_models::all()).await?;
    // Ordered by version, with a known version that has no row yet last.
    let status = statuses
        .into_iter()
        .rfind(|s| s.name == name && s.activity != Activity::Retired)
        .ok_or(ApiError::NotFound("projection"))?;
    Ok(ProjectionObject::shown_to(
        status,
        principal,
        is_operator(ctx, principal)?,
    ))
}

#[derive(Default)]
pub struct ProjectionsQuery;

#[Object]
impl ProjectionsQuery {
    /// Every read model's versions: state, checkpoint, lag, failure, rebuild
    /// progress (requires `ops`). System-wide: a failed event's error is shown
    /// only when the event is the caller's tenant's, or to an operator tenant.
    async fn projections(&self, ctx: &Context<'_>) -> Result<Vec<ProjectionObject>, ApiError> {
        let principal = require(ctx, Scope::Ops)?;
        let operator = is_operator(ctx, principal)?;
        let statuses = checkpoints::statuses(api(ctx)?.store.pool(), &read_models::all()).await?;
        Ok(statuses
            .into_iter()
            .map(|status| ProjectionObject::shown_to(status, principal, operator))
            .collect())
    }
}

#[derive(Default)]
pub struct ProjectionsMutation;

#[Object]
impl ProjectionsMutation {
    /// Runs a failed projection again from the event it failed on (an
    /// operator tenant's `ops` key).
    async fn retry_projection(&self, ctx: &Context<'_>, name: String) -> Result<ProjectionObject> {
        let principal = require_operator(ctx)?;
        may_exist(&name)?;
        let cleared = checkpoints::retry(api(ctx)?.store.pool(), &name)
            .await
            .map_err(ApiError::from)?;
        if cleared == 0 {
            return Err(ApiError::Conflict(format!("projection {name} is not failed")).into());
        }
        tracing::info!(projection = %name, key_id = %principal.key_id, "projection retried through the API");
        Ok(status_of(ctx, principal, &name).await?)
    }

    /// Steps a failed projection over the one event it failed on; the skip is
    /// recorded in the log, with the reason (an operator tenant's `ops` key).
    async fn skip_projection_event(
        &self,
        ctx: &Context<'_>,
        name: String,
        position: Position,
        reason: String,
    ) -> Result<ProjectionSkip> {
        let principal = require_operator(ctx)?;
        may_exist(&name)?;
        let actor = actor(principal);
        let recorded = checkpoints::skip(&api(ctx)?.store, &name, position.0, &reason, &actor.name)
            .await
            .map_err(|error| match error {
                SkipError::NoReason | SkipError::NulInReason => {
                    ApiError::field("reason", error.to_string())
                }
                SkipError::NotFailedThere { .. } => ApiError::Conflict(error.to_string()),
                SkipError::Store(error) => error.into(),
                SkipError::Database(error) => error.into(),
            })?;
        Ok(ProjectionSkip {
            recorded_position: Position(recorded),
            projection: status_of(ctx, principal, &name).await?,
        })
    }

    /// Starts a zero-downtime rebuild and returns at once, the projection
    /// then `REBUILDING` with progress until the new tables are swapped in
    /// (an operator tenant's `ops` key). One rebuild of a projection at a
    /// time, in any process: a second is a CONFLICT.
    async fn rebuild_projection(
        &self,
        ctx: &Context<'_>,
        name: String,
    ) -> Result<ProjectionObject> {
        let principal = require_operator(ctx)?;
        let projection = known(&name)?;
        let store = api(ctx)?.store.clone();
        let started =
            rebuild::start(&store, projection.as_ref())
                .await
                .map_err(|error| match error {
                    RebuildError::Unsupported(_) => ApiError::field("name", error.to_string()),
                    RebuildError::AlreadyRunning(_) => ApiError::Conflict(error.to_string()),
                    error => ApiError::internal(error),
                })?;
        tracing::info!(projection = %name, key_id = %principal.key_id, "projection rebuild started through the API");
        // Read while the lock is held, so it says REBUILDING however fast the rebuild goes.
        let status = status_of(ctx, principal, &name).await?;
        // Minutes of work: it outlives the request, and its progress is read
        // back from its session by any process (see `rebuild`).
        tokio::spawn(async move {
            match started.run(&store, projection.as_ref(), |_| {}).await {
                Ok(done) => tracing::info!(
                    projection = projection.name(),
                    events = done.events,
                    seconds = done.elapsed.as_secs_f64(),
                    "rebuilt and swapped in"
                ),
                Err(error) => tracing::error!(projection = projection.name(), %error,
                    "the rebuild started through the API failed; the serving tables are unchanged"),
            }
        });
        Ok(status)
    }
}
