//! The suppression list: add, remove, list, and the batched lookup the dispatcher uses.
//!
//! One stream per address (`suppression-<tenant>-<hash>`), with the
//! `suppressions` table kept in step in the same transaction: the table is
//! what the dispatcher consults before every send.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use sqlx::{PgConnection, PgPool};

use super::pipeline::Stream;
use super::{Actor, CommandError};
use crate::domain::Aggregate;
use crate::domain::suppression::{
    AddSuppression, SuppressedAddress, Suppression, SuppressionCommand, SuppressionReason,
    SuppressionSpec, parse_note, stream_id,
};
use crate::domain::values::{Channel, TenantId};
use crate::eventstore::EventStore;

/// An entry as listed.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct SuppressionRow {
    pub address_key: String,
    pub channel: String,
    pub address: String,
    pub reason: String,
    pub note: Option<String>,
    pub created_at: DateTime<Utc>,
}

/// What `list` narrows to; every field is optional.
#[derive(Debug, Clone, Default)]
pub struct SuppressionFilter {
    pub channel: Option<Channel>,
    pub reason: Option<SuppressionReason>,
    /// Case-insensitive substring of the address.
    pub address_contains: Option<String>,
}

/// Where the previous page ended.
#[derive(Debug, Clone, PartialEq)]
pub struct SuppressionCursor {
    pub created_at: DateTime<Utc>,
    pub address_key: String,
}

/// Puts `address` on the tenant's list; nothing happens when it is already
/// there (the first reason stands).
pub async fn add(
    store: &EventStore,
    tenant: &TenantId,
    address: SuppressedAddress,
    reason: SuppressionReason,
    note: Option<String>,
    actor: &Actor,
) -> Result<(), CommandError> {
    let note = parse_note(note).map_err(|error| {
        let mut errors = crate::domain::ValidationErrors::default();
        errors.add("note", error.to_string());
        CommandError::Validation(errors)
    })?;
    let spec = SuppressionSpec {
        address,
        reason,
        note,
    };
    add_spec(store, tenant, spec, actor).await.map(|_| ())
}

/// A manual entry from the API; returns the entry as it stands.
pub async fn add_manual(
    store: &EventStore,
    tenant: &TenantId,
    input: AddSuppression,
    actor: &Actor,
) -> Result<SuppressionRow, CommandError> {
    let spec = input.parse()?;
    add_spec(store, tenant, spec, actor).await
}

async fn add_spec(
    store: &EventStore,
    tenant: &TenantId,
    spec: SuppressionSpec,
    actor: &Actor,
) -> Result<SuppressionRow, CommandError> {
    let address = spec.address.clone();
    decide_and_append(store, tenant, &address, actor, || SuppressionCommand::Add {
        tenant_id: tenant.clone(),
        spec: spec.clone(),
    })
    .await?;
    get(store.pool(), tenant, &address)
        .await?
        .ok_or(CommandError::NotFound("suppression"))
}

/// Takes `address` off the tenant's list; `NotFound` when it is not on it.
pub async fn remove(
    store: &EventStore,
    tenant: &TenantId,
    address: &SuppressedAddress,
    actor: &Actor,
) -> Result<(), CommandError> {
    decide_and_append(store, tenant, address, actor, || SuppressionCommand::Remove).await
}

/// Which of `addresses` are on the tenant's list, and why; one query. The
/// keys are the addresses as passed (they compare in canonical form).
pub async fn suppressed(
    pool: &PgPool,
    tenant: &TenantId,
    addresses: &[SuppressedAddress],
) -> Result<HashMap<SuppressedAddress, SuppressionReason>, sqlx::Error> {
    if addresses.is_empty() {
        return Ok(HashMap::new());
    }
    let keys: Vec<String> = addresses.iter().map(SuppressedAddress::key).collect();
    let rows: Vec<(String, String)> = sqlx::query_as(
        "SELECT address_key, reason FROM suppressions \
         WHERE tenant_id = $1 AND address_key = ANY($2)",
    )
    .bind(tenant.as_str())
    .bind(&keys)
    .fetch_all(pool)
    .await?;
    let reasons: HashMap<String, SuppressionReason> = rows
        .into_iter()
        .map(|(key, reason)| {
            // The table's CHECK admits only known reasons; should one ever
            // fail to read, the address stays suppressed.
            let reason = SuppressionReason::parse(&reason).unwrap_or_else(|error| {
                tracing::error!(%error, "unreadable suppression reason");
                SuppressionReason::Manual
            });
            (key, reason)
        })
        .collect();
    Ok(addresses
        .iter()
        .filter_map(|address| {
            reasons
                .get(&address.key())
                .map(|reason| (address.clone(), *reason))
        })
        .collect())
}

/// One entry of the tenant's list.
pub async fn get(
    pool: &PgPool,
    tenant: &TenantId,
    address: &SuppressedAddress,
) -> Result<Option<SuppressionRow>, sqlx::Error> {
    sqlx::query_as(
        "SELECT address_key, channel, address, reason, note, created_at FROM suppressions \
         WHERE tenant_id = $1 AND address_key = $2",
    )
    .bind(tenant.as_str())
    .bind(address.key())
    .fetch_optional(pool)
    .await
}

/// A page of the tenant's list, newest first, and whether more follow.
pub async fn list(
    pool: &PgPool,
    tenant: &TenantId,
    filter: &SuppressionFilter,
    first: usize,
    after: Option<&SuppressionCursor>,
) -> Result<(Vec<SuppressionRow>, bool), sqlx::Error> {
    let contains = filter
        .address_contains
        .as_deref()
        .map(|text| format!("%{}%", escape_like(&text.to_lowercase())));
    let rows = sqlx::query_as(
        "SELECT address_key, channel, address, reason, note, created_at FROM suppressions \
         WHERE tenant_id = $1 \
           AND ($2::text IS NULL OR channel = $2) \
           AND ($3::text IS NULL OR reason = $3) \
           AND ($4::text IS NULL OR lower(address) LIKE $4) \
           AND ($5::timestamptz IS NULL OR (created_at, address_key) < ($5, $6)) \
         ORDER BY created_at DESC, address_key DESC \
         LIMIT $7",
    )
    .bind(tenant.as_str())
    .bind(filter.channel.map(Channel::as_str))
    .bind(filter.reason.map(SuppressionReason::as_str))
    .bind(contains)
    .bind(after.map(|c| c.created_at))
    .bind(after.map(|c| c.address_key.clone()))
    .bind(first as i64 + 1)
    .fetch_all(pool)
    .await?;
    Ok(crate::projections::split_page(rows, first))
}

fn escape_like(text: &str) -> String {
    text.replace('\\', "\\\\")
        .replace('%', "\\%")
        .replace('_', "\\_")
}

/// Decides on the address's stream and keeps its row in step.
async fn decide_and_append(
    store: &EventStore,
    tenant: &TenantId,
    address: &SuppressedAddress,
    actor: &Actor,
    command: impl Fn() -> SuppressionCommand + Sync,
) -> Result<(), CommandError> {
    let stream = Stream::new(store, stream_id(tenant, address), tenant, actor);
    stream
        .execute(
            |state: &Suppression| {
                let command = command();
                if command == SuppressionCommand::Remove && state.entry().is_none() {
                    return Err(CommandError::NotFound("suppression"));
                }
                Ok(state.decide(command, Utc::now())?)
            },
            |tx, applied| {
                Box::pin(async move {
                    Ok(
                        keep_table_in_step(tx.connection(), tenant, address, &applied.state)
                            .await?,
                    )
                })
            },
        )
        .await?;
    Ok(())
}

async fn keep_table_in_step(
    conn: &mut PgConnection,
    tenant: &TenantId,
    address: &SuppressedAddress,
    state: &Suppression,
) -> Result<(), sqlx::Error> {
    match state.entry() {
        Some(entry) => {
            sqlx::query(
                "INSERT INTO suppressions (tenant_id, address_key, channel, address, reason, note, created_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7) \
                 ON CONFLICT (tenant_id, address_key) DO UPDATE \
                     SET channel = EXCLUDED.channel, address = EXCLUDED.address, reason = EXCLUDED.reason, \
                         note = EXCLUDED.note, created_at = EXCLUDED.created_at",
            )
            .bind(tenant.as_str())
            .bind(entry.address.key())
            .bind(entry.address.channel().as_str())
            .bind(entry.address.as_str())
            .bind(entry.reason.as_str())
            .bind(&entry.note)
            .bind(entry.since)
            .execute(conn)
            .await?;
        }
        None => {
            sqlx::query("DELETE FROM suppressions WHERE tenant_id = $1 AND address_key = $2")
                .bind(tenant.as_str())
                .bind(address.key())
                .execute(conn)
                .await?;
        }
    }
    Ok(())
}
