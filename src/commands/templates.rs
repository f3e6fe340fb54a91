//! Templates: publish, list, pin a version at request time, render at dispatch.
//!
//! Versions live in `template-<tenant>:<key>` streams and the tenant's
//! partials and layouts in `template-partials-<tenant>` (`:` is in neither
//! alphabet, so no two streams share a name). The `templates`,
//! `template_versions` and `template_partials` tables are written in the
//! append's transaction, so a send right after a publish sees the version.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};

use chrono::{DateTime, Utc};
use serde_json::{Map, Value};
use sqlx::types::Json;
use sqlx::{PgConnection, PgPool};

use super::pipeline::{Executed, Stream};
use super::{Actor, CommandError};
use crate::domain::template::{
    CompiledTemplate, PartialCommand, PartialEvent, PartialKind, PartialLibrary, PublishTemplate,
    PublishedTemplate, RenderedTemplate, TemplateCommand, TemplateDefinition, TemplateEvent,
    UpsertPartial, VariableSpec, check_variables,
};
use crate::domain::values::{Locale, TemplateKey, TemplateVersion, TenantId};
use crate::domain::{Aggregate, TemplateRef, ValidationErrors};
use crate::eventstore::EventStore;

pub fn stream_id(tenant_id: &TenantId, key: &TemplateKey) -> String {
    format!("template-{tenant_id}:{key}")
}

pub fn partials_stream_id(tenant_id: &TenantId) -> String {
    format!("template-partials-{tenant_id}")
}

/// A template as listed.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct TemplateRow {
    pub template_key: String,
    pub latest_version: i32,
    pub default_locale: String,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// One published version, whole.
#[derive(Debug, Clone)]
pub struct StoredVersion {
    pub key: TemplateKey,
    pub version: TemplateVersion,
    pub definition: TemplateDefinition,
    pub published_at: DateTime<Utc>,
}

#[derive(sqlx::FromRow)]
struct VersionRow {
    template_key: String,
    version: i32,
    definition: Json<TemplateDefinition>,
    published_at: DateTime<Utc>,
}

impl TryFrom<VersionRow> for StoredVersion {
    type Error = sqlx::Error;

    fn try_from(row: VersionRow) -> Result<Self, sqlx::Error> {
        let corrupt = |what: &str| sqlx::Error::Decode(format!("template_versions: {what}").into());
        Ok(StoredVersion {
            key: TemplateKey::parse(&row.template_key).map_err(|_| corrupt("template_key"))?,
            version: u32::try_from(row.version)
                .ok()
                .and_then(|v| TemplateVersion::parse(v).ok())
                .ok_or_else(|| corrupt("version"))?,
            definition: row.definition.0,
            published_at: row.published_at,
        })
    }
}

/// A partial or layout as listed.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct PartialRow {
    pub kind: String,
    pub name: String,
    pub body: String,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// Publishes a new version (or, when `input` is the latest version again,
/// returns that one). The tenant's partials and layouts it uses are copied
/// into the version as they are now.
pub async fn publish(
    store: &EventStore,
    tenant_id: &TenantId,
    input: PublishTemplate,
    actor: &Actor,
) -> Result<StoredVersion, CommandError> {
    let partials = partial_bodies(store.pool(), tenant_id).await?;
    let (key, definition) = input.parse(&partials)?;
    let stream = Stream::new(store, stream_id(tenant_id, &key), tenant_id, actor);
    let executed = stream
        .execute(
            |template: &PublishedTemplate| {
                let command = TemplateCommand::Publish {
                    tenant_id: tenant_id.clone(),
                    key: key.clone(),
                    definition: definition.clone(),
                };
                Ok(template.decide(command, Utc::now())?)
            },
            |tx, applied| {
                Box::pin(async move {
                    let mut stored = None;
                    for event in &applied.events {
                        stored = Some(write_version(tx.connection(), event).await?);
                    }
                    Ok(stored)
                })
            },
        )
        .await?;
    match executed {
        Executed::Appended(stored) => stored,
        Executed::Unchanged(template) => {
            let latest = template.state.latest_version();
            version(store.pool(), tenant_id, &key, latest).await?
        }
    }
    .ok_or(CommandError::NotFound("template version"))
}

/// Writes a published version and moves its template's latest version.
async fn write_version(
    conn: &mut PgConnection,
    event: &TemplateEvent,
) -> Result<StoredVersion, sqlx::Error> {
    let TemplateEvent::Published {
        tenant_id,
        key,
        version,
        definition,
    } = event;
    let now = Utc::now();
    let number = i32::try_from(version.get())
        .map_err(|_| sqlx::Error::Protocol("template version out of range".into()))?;
    sqlx::query(
        "INSERT INTO templates \
             (tenant_id, template_key, latest_version, default_locale, created_at, updated_at) \
         VALUES ($1, $2, $3, $4, $5, $5) \
         ON CONFLICT (tenant_id, template_key) DO UPDATE \
             SET latest_version = EXCLUDED.latest_version, \
                 default_locale = EXCLUDED.default_locale, \
                 updated_at = EXCLUDED.updated_at",
    )
    .bind(tenant_id.as_str())
    .bind(key.as_str())
    .bind(number)
    .bind(definition.default_locale.as_str())
    .bind(now)
    .execute(&mut *conn)
    .await?;
    sqlx::query(
        "INSERT INTO template_versions (tenant_id, template_key, version, definition, published_at) \
         VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(tenant_id.as_str())
    .bind(key.as_str())
    .bind(number)
    .bind(Json(definition))
    .bind(now)
    .execute(&mut *conn)
    .await?;
    Ok(StoredVersion {
        key: key.clone(),
        version: *version,
        definition: definition.clone(),
        published_at: now,
    })
}

/// Creates or replaces one of the tenant's partials or layouts. Published
/// versions keep the copy they were published with.
pub async fn upsert_partial(
    store: &EventStore,
    tenant_id: &TenantId,
    input: UpsertPartial,
    actor: &Actor,
) -> Result<PartialRow, CommandError> {
    let kind = input.kind;
    let stream = Stream::new(store, partials_stream_id(tenant_id), tenant_id, actor);
    let executed = stream
        .execute(
            |library: &PartialLibrary| {
                let (name, body) = library.parse(input.clone())?;
                let command = PartialCommand::Upsert {
                    tenant_id: tenant_id.clone(),
                    kind,
                    name,
                    body,
                };
                Ok(library.decide(command, Utc::now())?)
            },
            |tx, applied| {
                Box::pin(async move {
                    let mut row = None;
                    for PartialEvent::Upserted {
                        tenant_id,
                        kind,
                        name,
                        body,
                    } in &applied.events
                    {
                        row = Some(
                            write_partial(tx.connection(), tenant_id, *kind, name.as_str(), body)
                                .await?,
                        );
                    }
                    Ok(row)
                })
            },
        )
        .await?;
    match executed {
        Executed::Appended(row) => row,
        Executed::Unchanged(library) => {
            let (name, _) = library.state.parse(input)?;
            partial(store.pool(), tenant_id, kind, name.as_str()).await?
        }
    }
    .ok_or(CommandError::NotFound("template partial"))
}

async fn write_partial(
    conn: &mut PgConnection,
    tenant_id: &TenantId,
    kind: PartialKind,
    name: &str,
    body: &str,
) -> Result<PartialRow, sqlx::Error> {
    sqlx::query_as(
        "INSERT INTO template_partials (tenant_id, kind, name, body, created_at, updated_at) \
         VALUES ($1, $2, $3, $4, $5, $5) \
         ON CONFLICT (tenant_id, kind, name) DO UPDATE \
             SET body = EXCLUDED.body, updated_at = EXCLUDED.updated_at \
         RETURNING kind, name, body, created_at, updated_at",
    )
    .bind(tenant_id.as_str())
    .bind(kind.as_str())
    .bind(name)
    .bind(body)
    .bind(Utc::now())
    .fetch_one(conn)
    .await
}

/// The tenant's partials and layouts, by kind and name.
pub async fn partials(pool: &PgPool, tenant_id: &TenantId) -> Result<Vec<PartialRow>, sqlx::Error> {
    sqlx::query_as(
        "SELECT kind, name, body, created_at, updated_at FROM template_partials \
         WHERE tenant_id = $1 ORDER BY kind, name",
    )
    .bind(tenant_id.as_str())
    .fetch_all(pool)
    .await
}

async fn partial(
    pool: &PgPool,
    tenant_id: &TenantId,
    kind: PartialKind,
    name: &str,
) -> Result<Option<PartialRow>, sqlx::Error> {
    sqlx::query_as(
        "SELECT kind, name, body, created_at, updated_at FROM template_partials \
         WHERE tenant_id = $1 AND kind = $2 AND name = $3",
    )
    .bind(tenant_id.as_str())
    .bind(kind.as_str())
    .bind(name)
    .fetch_optional(pool)
    .await
}

/// Bodies by the name templates use (`partial:footer`, `layout:base`).
async fn partial_bodies(
    pool: &PgPool,
    tenant_id: &TenantId,
) -> Result<BTreeMap<String, String>, sqlx::Error> {
    Ok(partials(pool, tenant_id)
        .await?
        .into_iter()
        .map(|row| (format!("{}:{}", row.kind, row.name), row.body))
        .collect())
}

/// A page of the tenant's templates by key, after the key `after`; and
/// whether more follow.
pub async fn list(
    pool: &PgPool,
    tenant_id: &TenantId,
    first: usize,
    after: Option<&str>,
) -> Result<(Vec<TemplateRow>, bool), sqlx::Error> {
    let rows = sqlx::query_as(
        "SELECT template_key, latest_version, default_locale, created_at, updated_at \
         FROM templates WHERE tenant_id = $1 AND ($2::text IS NULL OR template_key > $2) \
         ORDER BY template_key LIMIT $3",
    )
    .bind(tenant_id.as_str())
    .bind(after)
    .bind(first as i64 + 1)
    .fetch_all(pool)
    .await?;
    Ok(crate::projections::split_page(rows, first))
}

pub async fn get(
    pool: &PgPool,
    tenant_id: &TenantId,
    key: &TemplateKey,
) -> Result<Option<TemplateRow>, sqlx::Error> {
    sqlx::query_as(
        "SELECT template_key, latest_version, default_locale, created_at, updated_at \
         FROM templates WHERE tenant_id = $1 AND template_key = $2",
    )
    .bind(tenant_id.as_str())
    .bind(key.as_str())
    .fetch_optional(pool)
    .await
}

/// Every version of a template, newest first.
pub async fn versions(
    pool: &PgPool,
    tenant_id: &TenantId,
    key: &TemplateKey,
) -> Result<Vec<StoredVersion>, sqlx::Error> {
    let rows: Vec<VersionRow> = sqlx::query_as(
        "SELECT template_key, version, definition, published_at FROM template_versions \
         WHERE tenant_id = $1 AND template_key = $2 ORDER BY version DESC",
    )
    .bind(tenant_id.as_str())
    .bind(key.as_str())
    .fetch_all(pool)
    .await?;
    rows.into_iter().map(StoredVersion::try_from).collect()
}

/// One version; `None` for the version the latest is.
pub async fn version(
    pool: &PgPool,
    tenant_id: &TenantId,
    key: &TemplateKey,
    version: Option<TemplateVersion>,
) -> Result<Option<StoredVersion>, sqlx::Error> {
    let row: Option<VersionRow> = sqlx::query_as(
        "SELECT v.template_key, v.version, v.definition, v.published_at \
         FROM templates t JOIN template_versions v \
             ON v.tenant_id = t.tenant_id AND v.template_key = t.template_key \
         WHERE t.tenant_id = $1 AND t.template_key = $2 \
             AND v.version = COALESCE($3, t.latest_version)",
    )
    .bind(tenant_id.as_str())
    .bind(key.as_str())
    .bind(version.map(|v| v.get() as i64))
    .fetch_optional(pool)
    .await?;
    row.map(StoredVersion::try_from).transpose()
}

/// Fixes the version at request time: `template.version` None -> latest published. Checks the variables
/// against that version's schema. Errors: CommandError::Validation naming `template.key` (no published
/// template), `template.version` (no such version), `template.variables.<name>`.
pub async fn pin(
    pool: &PgPool,
    tenant: &TenantId,
    template: &TemplateRef,
) -> Result<TemplateRef, CommandError> {
    Pins::default().pin(pool, tenant, template).await
}

/// Pins many sends of one tenant (a batch, a campaign's chunk): each
/// template version's schema is read once.
#[derive(Default)]
pub struct Pins {
    schemas: HashMap<(TemplateKey, Option<TemplateVersion>), (TemplateVersion, Arc<Schema>)>,
}

type Schema = BTreeMap<String, VariableSpec>;

impl Pins {
    /// As [`pin`].
    pub async fn pin(
        &mut self,
        pool: &PgPool,
        tenant: &TenantId,
        template: &TemplateRef,
    ) -> Result<TemplateRef, CommandError> {
        let asked = (template.key.clone(), template.version);
        let (version, schema) = match self.schemas.get(&asked) {
            Some(found) => found.clone(),
            None => {
                let found = schema_of(pool, tenant, template).await?;
                self.schemas.insert(asked, found.clone());
                found
            }
        };
        check_variables(&schema, template.variables.as_map())?;
        Ok(TemplateRef {
            version: Some(version),
            ..template.clone()
        })
    }
}

async fn schema_of(
    pool: &PgPool,
    tenant: &TenantId,
    template: &TemplateRef,
) -> Result<(TemplateVersion, Arc<Schema>), CommandError> {
    // Only the schema: a send need not read every part of every locale.
    let row: Option<(i32, Json<Schema>)> = sqlx::query_as(
        "SELECT v.version, v.definition -> 'variables' \
         FROM templates t JOIN template_versions v \
             ON v.tenant_id = t.tenant_id AND v.template_key = t.template_key \
         WHERE t.tenant_id = $1 AND t.template_key = $2 \
             AND v.version = COALESCE($3, t.latest_version)",
    )
    .bind(tenant.as_str())
    .bind(template.key.as_str())
    .bind(template.version.map(|v| v.get() as i64))
    .fetch_optional(pool)
    .await?;
    let Some((number, schema)) = row else {
        let mut errors = ValidationErrors::default();
        match template.version {
            Some(version) if get(pool, tenant, &template.key).await?.is_some() => errors.add(
                "template.version",
                format!("template {} has no version {}", template.key, version.get()),
            ),
            _ => errors.add(
                "template.key",
                format!("no published template {}", template.key),
            ),
        }
        return Err(errors.into());
    };
    let version = u32::try_from(number)
        .ok()
        .and_then(|n| TemplateVersion::parse(n).ok())
        .ok_or_else(|| {
            CommandError::Database(sqlx::Error::Decode("template_versions: version".into()))
        })?;
    Ok((version, Arc::new(schema.0)))
}

#[derive(Debug, thiserror::Error)]
pub enum RenderFailure {
    /// The pinned version does not exist (or the ref was never pinned).
    #[error("template {key} version {version:?} not found")]
    NotFound {
        key: TemplateKey,
        version: Option<TemplateVersion>,
    },
    /// The variables or a part refused to render; retrying cannot help.
    #[error("cannot render the template: {0}")]
    Render(String),
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
}

impl RenderFailure {
    /// Whether trying again later could succeed.
    pub fn is_permanent(&self) -> bool {
        !matches!(self, RenderFailure::Database(_))
    }
}

type CacheKey = (TenantId, TemplateKey, TemplateVersion);

/// Compiled published versions, cached (they are immutable; bound the cache size).
pub struct TemplateCache {
    capacity: usize,
    state: Mutex<CacheState>,
}

#[derive(Default)]
struct CacheState {
    /// Each entry with the tick it was last used at; the least recent goes first.
    entries: HashMap<CacheKey, (Arc<CompiledTemplate>, u64)>,
    tick: u64,
}

impl TemplateCache {
    pub fn new(capacity: usize) -> Self {
        TemplateCache {
            capacity: capacity.max(1),
            state: Mutex::new(CacheState::default()),
        }
    }

    /// `template.version` must be Some (pinned). `locales`: preference order. `herald`: reserved variables.
    /// `template.locale`, when set, is tried before `locales`.
    pub async fn render(
        &self,
        pool: &PgPool,
        tenant: &TenantId,
        template: &TemplateRef,
        locales: &[Locale],
        herald: &Map<String, Value>,
    ) -> Result<RenderedTemplate, RenderFailure> {
        let Some(version) = template.version else {
            return Err(RenderFailure::NotFound {
                key: template.key.clone(),
                version: None,
            });
        };
        let compiled = self.compiled(pool, tenant, &template.key, version).await?;
        let preferred: Vec<Locale> = template
            .locale
            .iter()
            .chain(
                locales
                    .iter()
                    .filter(|l| Some(*l) != template.locale.as_ref()),
            )
            .cloned()
            .collect();
        compiled
            .render(template.variables.as_map(), &preferred, herald)
            .map_err(|error| RenderFailure::Render(error.to_string()))
    }

    async fn compiled(
        &self,
        pool: &PgPool,
        tenant: &TenantId,
        key: &TemplateKey,
        version: TemplateVersion,
    ) -> Result<Arc<CompiledTemplate>, RenderFailure> {
        let cache_key = (tenant.clone(), key.clone(), version);
        if let Some(hit) = self.lookup(&cache_key) {
            return Ok(hit);
        }
        let stored = self::version(pool, tenant, key, Some(version))
            .await?
            .ok_or_else(|| RenderFailure::NotFound {
                key: key.clone(),
                version: Some(version),
            })?;
        let compiled = CompiledTemplate::compile(stored.definition)
            .map_err(|errors| RenderFailure::Render(errors.to_string()))?;
        let compiled = Arc::new(compiled);
        self.insert(cache_key, compiled.clone());
        Ok(compiled)
    }

    /// The cache's state, and the tick of the use that locks it.
    fn lock_for_use(&self) -> (MutexGuard<'_, CacheState>, u64) {
        let mut state = self
            .state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        state.tick += 1;
        let tick = state.tick;
        (state, tick)
    }

    fn lookup(&self, key: &CacheKey) -> Option<Arc<CompiledTemplate>> {
        let (mut state, tick) = self.lock_for_use();
        state.entries.get_mut(key).map(|(compiled, used)| {
            *used = tick;
            compiled.clone()
        })
    }

    fn insert(&self, key: CacheKey, compiled: Arc<CompiledTemplate>) {
        let (mut state, tick) = self.lock_for_use();
        if !state.entries.contains_key(&key) && state.entries.len() >= self.capacity {
            // A scan is fine at the sizes a process keeps; misses compile anyway.
            let oldest = state
                .entries
                .iter()
                .min_by_key(|(_, (_, used))| *used)
                .map(|(key, _)| key.clone());
            if let Some(oldest) = oldest {
                state.entries.remove(&oldest);
            }
        }
        state.entries.insert(key, (compiled, tick));
    }
}

/// Previews of the APIs render through the dispatcher's code path, with a
/// cache of their own.
static PREVIEWS: std::sync::LazyLock<TemplateCache> =
    std::sync::LazyLock::new(|| TemplateCache::new(256));

/// The APIs' preview for a tenant: `herald.tenant_id` is set, the other
/// `herald.*` values render empty.
pub async fn preview_for_tenant(
    pool: &PgPool,
    tenant_id: &TenantId,
    template: &TemplateRef,
) -> Result<(TemplateVersion, RenderedTemplate), CommandError> {
    let mut herald = Map::new();
    herald.insert("tenant_id".into(), Value::String(tenant_id.to_string()));
    preview(&PREVIEWS, pool, tenant_id, template, &herald).await
}

/// A preview: the version rendered, exactly as dispatch would render it
/// with `herald` as the reserved values.
pub async fn preview(
    cache: &TemplateCache,
    pool: &PgPool,
    tenant_id: &TenantId,
    template: &TemplateRef,
    herald: &Map<String, Value>,
) -> Result<(TemplateVersion, RenderedTemplate), CommandError> {
    let pinned = pin(pool, tenant_id, template).await?;
    let version = pinned
        .version
        .ok_or(CommandError::NotFound("template version"))?;
    match cache.render(pool, tenant_id, &pinned, &[], herald).await {
        Ok(rendered) => Ok((version, rendered)),
        Err(RenderFailure::Database(error)) => Err(error.into()),
        Err(RenderFailure::NotFound { .. }) => Err(CommandError::NotFound("template version")),
        Err(RenderFailure::Render(message)) => {
            let mut errors = ValidationErrors::default();
            errors.add("template", message);
            Err(errors.into())
        }
    }
}
