//! Tenants and their API keys: events in the log, with the `tenants` and
//! `api_keys` tables kept in step for authentication.

use base64::Engine;
use chrono::{DateTime, Utc};
use rand::Rng;
use sqlx::PgConnection;

use super::limits::Limits;
use super::pipeline::{Applied, Loaded, Step, Stream, Transaction};
use super::{Actor, CommandError};
use crate::domain::values::{ApiKeyId, DisplayName, TenantId};
use crate::domain::{
    Aggregate, Scope, Tenant, TenantCommand, TenantEvent, TenantLimits, ValidationErrors,
    hash_api_key,
};
use crate::eventstore::EventStore;

/// A key as its owner sees it once: the secret is never shown again.
#[derive(Debug, Clone, serde::Serialize)]
pub struct IssuedKey {
    pub key_id: ApiKeyId,
    pub api_key: String,
    pub scopes: Vec<Scope>,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct CreatedTenant {
    pub tenant_id: TenantId,
    pub api_key: String,
    pub key_id: ApiKeyId,
}

/// An authenticated caller.
#[derive(Debug, Clone)]
pub struct Principal {
    pub tenant_id: TenantId,
    pub key_id: ApiKeyId,
    pub scopes: Vec<Scope>,
}

impl Principal {
    pub fn allows(&self, required: Scope) -> bool {
        self.scopes.iter().any(|scope| scope.allows(required))
    }
}

/// A listed key, never with its secret.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ApiKeyRow {
    pub key_id: uuid::Uuid,
    pub name: String,
    pub prefix: String,
    pub scopes: Vec<String>,
    pub created_at: DateTime<Utc>,
    pub revoked_at: Option<DateTime<Utc>>,
}

pub(super) fn stream_id(tenant_id: &TenantId) -> String {
    format!("tenant-{tenant_id}")
}

/// 32 random bytes: far beyond guessing, so a plain SHA-256 is a safe lookup key.
fn new_secret() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    format!(
        "hk_{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    )
}

fn new_tenant_id() -> TenantId {
    const ALPHABET: &[u8] = b"abcdefghijkmnpqrstuvwxyz23456789";
    let mut rng = rand::rng();
    let suffix: String = (0..12)
        .map(|_| ALPHABET[(rng.next_u32() as usize) % ALPHABET.len()] as char)
        .collect();
    TenantId::parse(&format!("t_{suffix}")).expect("generated tenant ids are slugs")
}

fn display_name(field: &str, raw: &str) -> Result<DisplayName, CommandError> {
    DisplayName::parse(raw).map_err(|e| {
        let mut errors = ValidationErrors::default();
        errors.add(field, e.to_string());
        CommandError::Validation(errors)
    })
}

/// Creates a tenant with a first key that has every scope.
pub async fn create_tenant(
    store: &EventStore,
    name: &str,
    actor: &Actor,
) -> Result<CreatedTenant, CommandError> {
    let tenant_id = new_tenant_id();
    let name = display_name("name", name)?;
    let key_id = ApiKeyId::new();
    let secret = new_secret();
    let tenant = Tenant::default();
    let mut events = tenant.decide(TenantCommand::Create {
        tenant_id: tenant_id.clone(),
        name: name.clone(),
    })?;
    let created = Tenant::fold(&events);
    events.extend(created.decide(TenantCommand::IssueApiKey {
        key_id,
        name: display_name("name", "admin")?,
        scopes: vec![Scope::Admin],
        secret: secret.clone(),
    })?);
    Stream::new(store, stream_id(&tenant_id), &tenant_id, actor)
        .append(Loaded::default(), events, &keep_tables_in_step)
        .await?;
    Ok(CreatedTenant {
        tenant_id,
        api_key: secret,
        key_id,
    })
}

pub async fn issue_api_key(
    store: &EventStore,
    tenant_id: &TenantId,
    name: &str,
    scopes: Vec<Scope>,
    actor: &Actor,
) -> Result<IssuedKey, CommandError> {
    let name = display_name("name", name)?;
    let key_id = ApiKeyId::new();
    let secret = new_secret();
    decide_and_append(store, tenant_id, actor, || TenantCommand::IssueApiKey {
        key_id,
        name: name.clone(),
        scopes: scopes.clone(),
        secret: secret.clone(),
    })
    .await?;
    Ok(IssuedKey {
        key_id,
        api_key: secret,
        scopes,
    })
}

pub async fn revoke_api_key(
    store: &EventStore,
    tenant_id: &TenantId,
    key_id: ApiKeyId,
    actor: &Actor,
) -> Result<(), CommandError> {
    decide_and_append(store, tenant_id, actor, || TenantCommand::RevokeApiKey {
        key_id,
    })
    .await
}

/// Replaces the tenant's limit overrides (the whole set); a tenant that is
/// not an operator's may only lower `[limits]`. Processes caching effective
/// limits see the change within a few seconds.
pub async fn set_limits(
    store: &EventStore,
    tenant_id: &TenantId,
    limits: TenantLimits,
    operator: &Limits,
    actor: &Actor,
) -> Result<(), CommandError> {
    decide_and_append(store, tenant_id, actor, || TenantCommand::SetLimits {
        limits: limits.clone(),
        authority: operator.authority(tenant_id),
        operator_limits: Box::new(operator.config().clone()),
    })
    .await
}

async fn decide_and_append(
    store: &EventStore,
    tenant_id: &TenantId,
    actor: &Actor,
    command: impl Fn() -> TenantCommand + Sync,
) -> Result<(), CommandError> {
    Stream::new(store, stream_id(tenant_id), tenant_id, actor)
        .execute(
            |tenant: &Tenant| match tenant.id() {
                None => Err(CommandError::NotFound("tenant")),
                Some(_) => Ok(tenant.decide(command())?),
            },
            keep_tables_in_step,
        )
        .await?;
    Ok(())
}

/// The `tenants` and `api_keys` tables follow the tenant's events.
fn keep_tables_in_step<'c>(
    tx: &'c mut Transaction<'_>,
    applied: &'c Applied<Tenant>,
) -> Step<'c, ()> {
    Box::pin(async move {
        let now = Utc::now();
        let tenant_id = applied
            .state
            .id()
            .expect("a tenant's tables are written only once it was created");
        for event in &applied.events {
            keep_table_in_step(tx.connection(), tenant_id, event, now).await?;
        }
        Ok(())
    })
}

async fn keep_table_in_step(
    conn: &mut PgConnection,
    tenant_id: &TenantId,
    event: &TenantEvent,
    now: DateTime<Utc>,
) -> Result<(), sqlx::Error> {
    match event {
        TenantEvent::TenantCreated { tenant_id, name } => {
            sqlx::query("INSERT INTO tenants (tenant_id, name, created_at) VALUES ($1, $2, $3)")
                .bind(tenant_id.as_str())
                .bind(name.as_str())
                .bind(now)
                .execute(conn)
                .await?;
        }
        TenantEvent::ApiKeyIssued {
            key_id,
            name,
            scopes,
            key_hash,
            prefix,
        } => {
            let scopes: Vec<&str> = scopes.iter().map(|s| s.as_str()).collect();
            sqlx::query(
                "INSERT INTO api_keys (key_id, tenant_id, name, prefix, key_hash, scopes, created_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7)",
            )
            .bind(key_id.as_uuid())
            .bind(tenant_id.as_str())
            .bind(name.as_str())
            .bind(prefix)
            .bind(key_hash)
            .bind(&scopes)
            .bind(now)
            .execute(conn)
            .await?;
        }
        TenantEvent::ApiKeyRevoked { key_id } => {
            sqlx::query("UPDATE api_keys SET revoked_at = $2 WHERE key_id = $1")
                .bind(key_id.as_uuid())
                .bind(now)
                .execute(conn)
                .await?;
        }
        TenantEvent::TenantLimitsSet { limits } => {
            sqlx::query(
                "INSERT INTO tenant_limits (tenant_id, limits, updated_at) VALUES ($1, $2, $3) \
                 ON CONFLICT (tenant_id) DO UPDATE SET limits = EXCLUDED.limits, updated_at = EXCLUDED.updated_at",
            )
            .bind(tenant_id.as_str())
            .bind(sqlx::types::Json(limits))
            .bind(now)
            .execute(conn)
            .await?;
        }
        // A warning with no table: the send path's quota check appends it.
        TenantEvent::QuotaSoftCapReached { .. } => {}
    }
    Ok(())
}

/// The caller behind a secret, unless the key is unknown or revoked.
pub async fn authenticate(
    pool: &sqlx::PgPool,
    secret: &str,
) -> Result<Option<Principal>, sqlx::Error> {
    let row: Option<(uuid::Uuid, String, Vec<String>)> = sqlx::query_as(
        "SELECT key_id, tenant_id, scopes FROM api_keys WHERE key_hash = $1 AND revoked_at IS NULL",
    )
    .bind(hash_api_key(secret))
    .fetch_optional(pool)
    .await?;
    Ok(row.and_then(|(key_id, tenant_id, scopes)| {
        Some(Principal {
            tenant_id: TenantId::parse(&tenant_id).ok()?,
            key_id: ApiKeyId::parse(&key_id.to_string()).ok()?,
            scopes: scopes.iter().filter_map(|s| Scope::parse(s).ok()).collect(),
        })
    }))
}

pub async fn list_api_keys(
    pool: &sqlx::PgPool,
    tenant_id: &TenantId,
) -> Result<Vec<ApiKeyRow>, sqlx::Error> {
    sqlx::query_as(
        "SELECT key_id, name, prefix, scopes, created_at, revoked_at FROM api_keys \
         WHERE tenant_id = $1 ORDER BY created_at, key_id",
    )
    .bind(tenant_id.as_str())
    .fetch_all(pool)
    .await
}
