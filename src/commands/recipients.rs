//! Recipients and their preferences: upsert, read, and the batched lookup the dispatcher uses.
//!
//! A recipient's events are in `recipient-<tenant>/<id>` (`/` cannot occur
//! in a tenant id, so two tenants never share a stream), with the
//! `recipients` table kept in step in the same transaction. A tenant's
//! default quiet hours are in `audience-settings-<tenant>`, mirrored by
//! `audience_settings`.

use std::collections::HashMap;

use chrono::{NaiveTime, Utc};
use serde::Serialize;
use serde_json::Value;
use sqlx::types::Json;
use sqlx::{PgConnection, PgPool};

use super::{Actor, CommandError, MAX_CONFLICT_RETRIES, decode, envelopes};
use crate::domain::quiet_hours::{
    QuietHours, TenantQuietHours, TenantQuietHoursCommand, TenantQuietHoursEvent,
};
use crate::domain::recipient::{
    PreferenceChange, PreferenceSource, Preferences, Recipient, RecipientCommand, RecipientEvent,
    RecipientProfile, UpsertRecipient,
};
use crate::domain::values::{RecipientId, TenantId};
use crate::domain::{Aggregate, DomainError};
use crate::eventstore::{EventStore, ExpectedVersion, StoreError, StoreTransaction, StreamAppend};

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
    command: impl Fn() -> RecipientCommand,
) -> Result<Recipient, CommandError> {
    let stream = Stream {
        store,
        tenant,
        stream_id: stream_id(tenant, recipient_id),
        actor,
    };
    let decided = stream
        .decide_and_append::<Recipient>(
            command,
            RecipientEvent::upcast,
            RecipientEvent::event_type,
            RecipientEvent::SCHEMA_VERSION,
        )
        .await?;
    match decided {
        Decided::Unchanged(recipient) => Ok(recipient),
        Decided::Appended(mut tx, recipient) => {
            let written = write_recipient(tx.connection(), tenant, recipient_id, &recipient).await;
            commit(tx, written).await?;
            Ok(recipient)
        }
    }
}

async fn change_tenant_quiet_hours(
    store: &EventStore,
    tenant: &TenantId,
    command: TenantQuietHoursCommand,
    actor: &Actor,
) -> Result<(), CommandError> {
    let stream = Stream {
        store,
        tenant,
        stream_id: settings_stream_id(tenant),
        actor,
    };
    let decided = stream
        .decide_and_append::<TenantQuietHours>(
            || command.clone(),
            TenantQuietHoursEvent::upcast,
            TenantQuietHoursEvent::event_type,
            TenantQuietHoursEvent::SCHEMA_VERSION,
        )
        .await?;
    match decided {
        Decided::Unchanged(_) => Ok(()),
        Decided::Appended(mut tx, settings) => {
            let written = write_settings(tx.connection(), tenant, settings.quiet_hours()).await;
            commit(tx, written).await
        }
    }
}

/// What a decision led to: nothing to record, or events appended in a
/// transaction still open for the read table's write.
enum Decided<A> {
    Unchanged(A),
    Appended(StoreTransaction, A),
}

/// One stream of the tenant's, written on behalf of `actor`.
struct Stream<'a> {
    store: &'a EventStore,
    tenant: &'a TenantId,
    stream_id: String,
    actor: &'a Actor,
}

impl Stream<'_> {
    /// Loads the stream, decides, and appends in a new transaction; retries
    /// when another writer moved the stream first.
    async fn decide_and_append<A>(
        &self,
        command: impl Fn() -> A::Command,
        upcast: impl Fn(&str, i16, Value) -> Result<A::Event, DomainError> + Copy,
        event_type: impl Fn(&A::Event) -> &'static str + Copy,
        schema_version: i16,
    ) -> Result<Decided<A>, CommandError>
    where
        A: Aggregate<Error = DomainError>,
        A::Event: Serialize,
    {
        for _ in 0..MAX_CONFLICT_RETRIES {
            let recorded = self.store.read_stream(&self.stream_id, 1).await?;
            let mut state = A::fold(&decode(&recorded, upcast)?);
            let events = state.decide(command(), Utc::now())?;
            if events.is_empty() {
                return Ok(Decided::Unchanged(state));
            }
            let new_events = envelopes(
                &events,
                event_type,
                schema_version,
                self.tenant.as_str(),
                self.actor,
            )?;
            for event in &events {
                state.apply(event);
            }
            let expected = match recorded.len() {
                0 => ExpectedVersion::NoStream,
                version => ExpectedVersion::Exact(version as i64),
            };
            let mut tx = self.store.begin().await?;
            let appended = tx
                .append(&[StreamAppend {
                    stream_id: self.stream_id.clone(),
                    expected,
                    events: new_events,
                }])
                .await;
            match appended {
                Ok(_) => return Ok(Decided::Appended(tx, state)),
                Err(error) => {
                    tx.rollback().await.ok();
                    if !error.is_conflict() {
                        return Err(error.into());
                    }
                }
            }
        }
        Err(CommandError::Store(StoreError::TransactionAborted))
    }
}

/// Commits when the read table's write succeeded, else rolls the events back too.
async fn commit(
    tx: StoreTransaction,
    written: Result<(), sqlx::Error>,
) -> Result<(), CommandError> {
    match written {
        Ok(()) => Ok(tx.commit().await?),
        Err(error) => {
            tx.rollback().await.ok();
            Err(error.into())
        }
    }
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
