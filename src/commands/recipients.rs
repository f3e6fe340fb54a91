//! Recipients and their preferences: upsert, read, and the batched lookup the dispatcher uses.
//!
//! A recipient's events are in `recipient-<tenant>/<id>` (`/` cannot occur
//! in a tenant id, so two tenants never share a stream), with the
//! `recipients` table kept in step in the same transaction. A tenant's
//! default quiet hours are in `audience-settings-<tenant>`, mirrored by
//! `audience_settings`.

use std::collections::HashMap;

use chrono::{NaiveTime, Utc};
use sqlx::types::Json;
use sqlx::{PgConnection, PgPool};

use super::pipeline::{Executed, Stream};
use super::{Actor, CommandError};
use crate::domain::Aggregate;
use crate::domain::quiet_hours::{QuietHours, TenantQuietHours, TenantQuietHoursCommand};
use crate::domain::recipient::{
    PreferenceChange, PreferenceSource, Preferences, Recipient, RecipientCommand, RecipientProfile,
    UpsertRecipient,
};
use crate::domain::values::{RecipientId, TenantId};
use crate::eventstore::EventStore;

pub fn stream_id(tenant_id: &TenantId, recipient_id: &RecipientId) -> String {
    format!("recipient-{tenant_id}/{}", recipient_id.as_str())
}

pub fn settings_stream_id(tenant_id: &TenantId) -> String {
    format!("audience-settings-{tenant_id}")
}

/// What the dispatcher needs to know of one recipient.
#[derive(Debug, Clone, Default)]
pub struct Audience {
    /// `None` when only preferences were ever recorded.
    pub profile: Option<RecipientProfile>,
    pub preferences: Preferences,
}

/// Replaces the recipient's profile (creating the recipient if need be).
pub async fn upsert(
    store: &EventStore,
    tenant_id: &TenantId,
    input: UpsertRecipient,
    actor: &Actor,
) -> Result<Audience, CommandError> {
    let profile = input.parse()?;
    let recipient_id = profile.recipient_id.clone();
    let recipient = change_recipient(store, tenant_id, &recipient_id, actor, || {
        RecipientCommand::Upsert(Box::new(profile.clone()))
    })
    .await?;
    Ok(audience(recipient))
}

/// Records each change that is not already in effect, from `source`, and
/// returns the preferences that result. Works on a recipient without a
/// profile, so an unsubscribe from a message sent to an id alone is kept.
pub async fn set_preferences(
    store: &EventStore,
    tenant: &TenantId,
    recipient_id: &RecipientId,
    changes: Vec<PreferenceChange>,
    source: PreferenceSource,
    actor: &Actor,
) -> Result<Preferences, CommandError> {
    let recipient = change_recipient(store, tenant, recipient_id, actor, || {
        RecipientCommand::ChangePreferences {
            recipient_id: recipient_id.clone(),
            changes: changes.clone(),
            source,
        }
    })
    .await?;
    Ok(recipient.preferences().clone())
}

/// One recipient's profile and preferences, `None` when it has no state.
pub async fn get(
    pool: &PgPool,
    tenant: &TenantId,
    id: &RecipientId,
) -> Result<Option<Audience>, sqlx::Error> {
    let mut found = audiences(pool, tenant, std::slice::from_ref(id)).await?;
    Ok(found.remove(id))
}

pub async fn profile(
    pool: &PgPool,
    tenant: &TenantId,
    id: &RecipientId,
) -> Result<Option<RecipientProfile>, sqlx::Error> {
    Ok(get(pool, tenant, id)
        .await?
        .and_then(|audience| audience.profile))
}

/// Batched (one query) for the dispatcher; ids without any state are absent.
pub async fn audiences(
    pool: &PgPool,
    tenant: &TenantId,
    ids: &[RecipientId],
) -> Result<HashMap<RecipientId, Audience>, sqlx::Error> {
    let ids: Vec<&str> = ids.iter().map(RecipientId::as_str).collect();
    let rows: Vec<(String, Option<Json<RecipientProfile>>, Json<Preferences>)> = sqlx::query_as(
        "SELECT recipient_id, profile, preferences FROM recipients \
         WHERE tenant_id = $1 AND recipient_id = ANY($2)",
    )
    .bind(tenant.as_str())
    .bind(&ids)
    .fetch_all(pool)
    .await?;
    rows.into_iter()
        .map(|(id, profile, preferences)| {
            let id =
                RecipientId::parse(&id).map_err(|error| sqlx::Error::Decode(Box::new(error)))?;
            Ok((
                id,
                Audience {
                    profile: profile.map(|profile| profile.0),
                    preferences: preferences.0,
                },
            ))
        })
        .collect()
}

/// The tenant's default quiet hours, None when off.
pub async fn tenant_quiet_hours(
    pool: &PgPool,
    tenant: &TenantId,
) -> Result<Option<QuietHours>, sqlx::Error> {
    let row: Option<(Option<NaiveTime>, Option<NaiveTime>)> = sqlx::query_as(
        "SELECT quiet_hours_start, quiet_hours_end FROM audience_settings WHERE tenant_id = $1",
    )
    .bind(tenant.as_str())
    .fetch_optional(pool)
    .await?;
    Ok(match row {
        Some((Some(start), Some(end))) => Some(QuietHours { start, end }),
        _ => None,
    })
}

/// Sets the tenant's default quiet hours, for recipients without their own.
pub async fn set_tenant_quiet_hours(
    store: &EventStore,
    tenant: &TenantId,
    quiet_hours: QuietHours,
    actor: &Actor,
) -> Result<QuietHours, CommandError> {
    change_tenant_quiet_hours(
        store,
        tenant,
        TenantQuietHoursCommand::Set(quiet_hours),
        actor,
    )
    .await?;
    Ok(quiet_hours)
}

/// Turns the tenant's default quiet hours off; recipients' own windows stay.
pub async fn clear_tenant_quiet_hours(
    store: &EventStore,
    tenant: &TenantId,
    actor: &Actor,
) -> Result<(), CommandError> {
    change_tenant_quiet_hours(store, tenant, TenantQuietHoursCommand::Clear, actor).await
}

fn audience(recipient: Recipient) -> Audience {
    Audience {
        profile: recipient.profile().cloned(),
        preferences: recipient.preferences().clone(),
    }
}

async fn change_recipient(
    store: &EventStore,
    tenant: &TenantId,
    recipient_id: &RecipientId,
    actor: &Actor,
    command: impl Fn() -> RecipientCommand + Sync,
) -> Result<Recipient, CommandError> {
    let executed = Stream::new(store, stream_id(tenant, recipient_id), tenant, actor)
        .execute(
            |recipient: &Recipient| Ok(recipient.decide(command(), Utc::now())?),
            |tx, applied| {
                Box::pin(async move {
                    write_recipient(tx.connection(), tenant, recipient_id, &applied.state).await?;
                    Ok(applied.state.clone())
                })
            },
        )
        .await?;
    Ok(match executed {
        Executed::Unchanged(loaded) => loaded.state,
        Executed::Appended(recipient) => recipient,
    })
}

async fn change_tenant_quiet_hours(
    store: &EventStore,
    tenant: &TenantId,
    command: TenantQuietHoursCommand,
    actor: &Actor,
) -> Result<(), CommandError> {
    Stream::new(store, settings_stream_id(tenant), tenant, actor)
        .execute(
            |settings: &TenantQuietHours| Ok(settings.decide(command.clone(), Utc::now())?),
            |tx, applied| {
                Box::pin(async move {
                    Ok(
                        write_settings(tx.connection(), tenant, applied.state.quiet_hours())
                            .await?,
                    )
                })
            },
        )
        .await?;
    Ok(())
}

async fn write_recipient(
    conn: &mut PgConnection,
    tenant: &TenantId,
    recipient_id: &RecipientId,
    recipient: &Recipient,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO recipients (tenant_id, recipient_id, profile, preferences, created_at, updated_at) \
         VALUES ($1, $2, $3, $4, $5, $5) \
         ON CONFLICT (tenant_id, recipient_id) DO UPDATE \
             SET profile = EXCLUDED.profile, preferences = EXCLUDED.preferences, \
                 updated_at = EXCLUDED.updated_at",
    )
    .bind(tenant.as_str())
    .bind(recipient_id.as_str())
    .bind(recipient.profile().map(Json))
    .bind(Json(recipient.preferences()))
    .bind(Utc::now())
    .execute(conn)
    .await?;
    Ok(())
}

async fn write_settings(
    conn: &mut PgConnection,
    tenant: &TenantId,
    quiet_hours: Option<QuietHours>,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO audience_settings (tenant_id, quiet_hours_start, quiet_hours_end, updated_at) \
         VALUES ($1, $2, $3, $4) \
         ON CONFLICT (tenant_id) DO UPDATE \
             SET quiet_hours_start = EXCLUDED.quiet_hours_start, \
                 quiet_hours_end = EXCLUDED.quiet_hours_end, updated_at = EXCLUDED.updated_at",
    )
    .bind(tenant.as_str())
    .bind(quiet_hours.map(|window| window.start))
    .bind(quiet_hours.map(|window| window.end))
    .bind(Utc::now())
    .execute(conn)
    .await?;
    Ok(())
}
