//! Templates: `templates`, `template(key)`, `templatePartials`,
//! `previewTemplate`, `publishTemplate`, `upsertTemplatePartial`.
//! Publishing and partials need `admin`; reading and previewing need `read`.

use async_graphql::{
    ComplexObject, Context, Enum, InputObject, Json, Object, Result, SimpleObject,
};
use chrono::{DateTime, Utc};
use serde_json::Value;

use super::connection::Connection;
use super::{ApiError, api, require, run};
use crate::api::cursor::{self, page_size};
use crate::commands::templates::{self, PartialRow, StoredVersion, TemplateRow};
use crate::domain::template::{
    EmailParts, LocaleInput, LocaleParts, PartialKind, PublishTemplate, RenderedEmail,
    RenderedTemplate, RenderedTitled, TitledParts, UpsertPartial, VariableInput,
};
use crate::domain::values::{JsonObject, Locale, TemplateKey, TemplateVersion};
use crate::domain::{MAX_VARIABLES_BYTES, Scope, TemplateRef};

#[derive(Enum, Copy, Clone, Eq, PartialEq, Debug)]
#[graphql(
    name = "TemplateVariableType",
    remote = "crate::domain::template::VariableType"
)]
pub enum VariableTypeGql {
    String,
    Number,
    Boolean,
    Object,
    Array,
    /// Any value but null.
    Any,
}

/// A partial is included (`{% include "partial:footer" %}`); a layout is
/// extended by an email's HTML (`{% extends "layout:base" %}`).
#[derive(Enum, Copy, Clone, Eq, PartialEq, Debug)]
#[graphql(
    name = "TemplatePartialKind",
    remote = "crate::domain::template::PartialKind"
)]
pub enum PartialKindGql {
    Partial,
    Layout,
}

#[derive(InputObject)]
pub struct TemplateVariableInput {
    /// An identifier: a letter or `_`, then letters, digits or `_`.
    pub name: String,
    #[graphql(name = "type")]
    pub kind: VariableTypeGql,
    #[graphql(default = true)]
    pub required: bool,
}

#[derive(InputObject)]
pub struct TemplateEmailInput {
    pub subject: String,
    /// Auto-escaped; may `{% extends "layout:<name>" %}`.
    pub html: Option<String>,
    pub text: Option<String>,
}

/// One locale's parts; give any subset of the channels.
#[derive(InputObject)]
pub struct TemplateLocaleInput {
    /// A BCP 47 tag, e.g. `fr` or `fr-CA`.
    pub locale: String,
    pub email: Option<TemplateEmailInput>,
    pub sms: Option<TemplateSms>,
    pub push: Option<TemplateTitled>,
    /// A JSON object whose strings are templates; a string that is only
    /// `{{ name }}` keeps the variable's JSON type.
    pub webhook: Option<Json<Value>>,
    pub ntfy: Option<TemplateTitled>,
    pub in_app: Option<TemplateTitled>,
}

#[derive(InputObject)]
pub struct PublishTemplateInput {
    pub key: String,
    /// Must be one of `locales`; the last step of every fallback chain.
    pub default_locale: String,
    /// The variables the parts may use (besides `herald`); may be empty.
    pub variables: Vec<TemplateVariableInput>,
    pub locales: Vec<TemplateLocaleInput>,
}

impl PublishTemplateInput {
    fn into_domain(self) -> Result<PublishTemplate, ApiError> {
        let titled = |t: TemplateTitled| TitledParts {
            title: t.title,
            body: t.body,
        };
        let locales = self
            .locales
            .into_iter()
            .enumerate()
            .map(|(index, l)| {
                let webhook = match l.webhook.map(|w| w.0) {
                    None => None,
                    Some(Value::Object(map)) => Some(map),
                    Some(_) => {
                        return Err(ApiError::field(
                            &format!("template.locales[{index}].webhook"),
                            "must be a JSON object",
                        ));
                    }
                };
                Ok(LocaleInput {
                    locale: l.locale,
                    parts: LocaleParts {
                        email: l.email.map(|e| EmailParts {
                            subject: e.subject,
                            html: e.html,
                            text: e.text,
                        }),
                        sms: l.sms.map(|s| s.text),
                        push: l.push.map(titled),
                        webhook,
                        ntfy: l.ntfy.map(titled),
                        in_app: l.in_app.map(titled),
                    },
                })
            })
            .collect::<Result<_, ApiError>>()?;
        Ok(PublishTemplate {
            key: self.key,
            default_locale: self.default_locale,
            variables: self
                .variables
                .into_iter()
                .map(|v| VariableInput {
                    name: v.name,
                    kind: v.kind.into(),
                    required: v.required,
                })
                .collect(),
            locales,
        })
    }
}

#[derive(SimpleObject)]
pub struct TemplateVariable {
    pub name: String,
    #[graphql(name = "type")]
    pub kind: VariableTypeGql,
    pub required: bool,
}

#[derive(SimpleObject)]
pub struct TemplateEmail {
    pub subject: String,
    pub html: Option<String>,
    pub text: Option<String>,
}

#[derive(SimpleObject, InputObject)]
#[graphql(input_name = "TemplateSmsInput")]
pub struct TemplateSms {
    pub text: String,
}

#[derive(SimpleObject, InputObject)]
#[graphql(input_name = "TemplateTitledInput")]
pub struct TemplateTitled {
    pub title: Option<String>,
    pub body: String,
}

/// One locale's template sources.
#[derive(SimpleObject)]
pub struct TemplateLocaleParts {
    pub locale: String,
    pub email: Option<TemplateEmail>,
    pub sms: Option<TemplateSms>,
    pub push: Option<TemplateTitled>,
    pub webhook: Option<Json<Value>>,
    pub ntfy: Option<TemplateTitled>,
    pub in_app: Option<TemplateTitled>,
}

fn titled_source(t: &TitledParts) -> TemplateTitled {
    TemplateTitled {
        title: t.title.clone(),
        body: t.body.clone(),
    }
}

/// One immutable published version.
#[derive(SimpleObject)]
#[graphql(name = "TemplateVersion")]
pub struct TemplateVersionNode {
    pub key: String,
    pub number: i32,
    pub published_at: DateTime<Utc>,
    pub default_locale: String,
    pub locales: Vec<String>,
    pub variables: Vec<TemplateVariable>,
    pub parts: Vec<TemplateLocaleParts>,
    /// The partials and layouts copied in at publish time (`partial:footer`).
    pub partials: Vec<String>,
}

impl From<StoredVersion> for TemplateVersionNode {
    fn from(stored: StoredVersion) -> Self {
        let definition = stored.definition;
        TemplateVersionNode {
            key: stored.key.to_string(),
            number: stored.version.get() as i32,
            published_at: stored.published_at,
            default_locale: definition.default_locale.to_string(),
            locales: definition.locales.keys().map(Locale::to_string).collect(),
            variables: definition
                .variables
                .iter()
                .map(|(name, spec)| TemplateVariable {
                    name: name.clone(),
                    kind: spec.kind.into(),
                    required: spec.required,
                })
                .collect(),
            parts: definition
                .locales
                .iter()
                .map(|(locale, parts)| TemplateLocaleParts {
                    locale: locale.to_string(),
                    email: parts.email.as_ref().map(|e| TemplateEmail {
                        subject: e.subject.clone(),
                        html: e.html.clone(),
                        text: e.text.clone(),
                    }),
                    sms: parts
                        .sms
                        .as_ref()
                        .map(|text| TemplateSms { text: text.clone() }),
                    push: parts.push.as_ref().map(titled_source),
                    webhook: parts
                        .webhook
                        .as_ref()
                        .map(|w| Json(Value::Object(w.clone()))),
                    ntfy: parts.ntfy.as_ref().map(titled_source),
                    in_app: parts.in_app.as_ref().map(titled_source),
                })
                .collect(),
            partials: definition.snippets.keys().cloned().collect(),
        }
    }
}

#[derive(SimpleObject)]
#[graphql(complex)]
pub struct Template {
    pub key: String,
    pub latest_version: i32,
    pub default_locale: String,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl From<TemplateRow> for Template {
    fn from(row: TemplateRow) -> Self {
        Template {
            key: row.template_key,
            latest_version: row.latest_version,
            default_locale: row.default_locale,
            created_at: row.created_at,
            updated_at: row.updated_at,
        }
    }
}

#[ComplexObject]
impl Template {
    /// Every published version, newest first.
    async fn versions(&self, ctx: &Context<'_>) -> Result<Vec<TemplateVersionNode>, ApiError> {
        let principal = require(ctx, Scope::Read)?;
        let key = parse_key("key", &self.key)?;
        let versions =
            templates::versions(api(ctx)?.store.pool(), &principal.tenant_id, &key).await?;
        Ok(versions.into_iter().map(Into::into).collect())
    }
}

#[derive(SimpleObject)]
pub struct TemplatePartial {
    pub kind: PartialKindGql,
    pub name: String,
    pub body: String,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl TryFrom<PartialRow> for TemplatePartial {
    type Error = ApiError;

    fn try_from(row: PartialRow) -> Result<Self, ApiError> {
        let kind = PartialKind::parse(&row.kind).map_err(ApiError::internal)?;
        Ok(TemplatePartial {
            kind: kind.into(),
            name: row.name,
            body: row.body,
            created_at: row.created_at,
            updated_at: row.updated_at,
        })
    }
}

/// Every part of one version rendered, as dispatch would render it.
#[derive(SimpleObject)]
pub struct TemplatePreview {
    pub key: String,
    pub version: i32,
    /// The locale the fallback chain chose.
    pub locale: String,
    pub email: Option<TemplateEmail>,
    pub sms: Option<TemplateSms>,
    pub push: Option<TemplateTitled>,
    pub webhook: Option<Json<Value>>,
    pub ntfy: Option<TemplateTitled>,
    pub in_app: Option<TemplateTitled>,
}

fn titled_rendered(t: RenderedTitled) -> TemplateTitled {
    TemplateTitled {
        title: t.title,
        body: t.body,
    }
}

impl TemplatePreview {
    fn new(key: &TemplateKey, version: TemplateVersion, rendered: RenderedTemplate) -> Self {
        TemplatePreview {
            key: key.to_string(),
            version: version.get() as i32,
            locale: rendered.locale.to_string(),
            email: rendered.email.map(|e: RenderedEmail| TemplateEmail {
                subject: e.subject,
                html: e.html,
                text: e.text,
            }),
            sms: rendered.sms.map(|text| TemplateSms { text }),
            push: rendered.push.map(titled_rendered),
            webhook: rendered.webhook.map(|w| Json(Value::Object(w))),
            ntfy: rendered.ntfy.map(titled_rendered),
            in_app: rendered.in_app.map(titled_rendered),
        }
    }
}

fn parse_key(field: &str, key: &str) -> Result<TemplateKey, ApiError> {
    TemplateKey::parse(key.trim()).map_err(|e| ApiError::field(field, e.to_string()))
}

fn parse_version(field: &str, version: Option<i32>) -> Result<Option<TemplateVersion>, ApiError> {
    version
        .map(|v| {
            u32::try_from(v)
                .ok()
                .and_then(|v| TemplateVersion::parse(v).ok())
                .ok_or_else(|| ApiError::field(field, "must be at least 1"))
        })
        .transpose()
}

#[derive(Default)]
pub struct TemplatesQuery;

#[Object]
impl TemplatesQuery {
    /// The tenant's templates by key (requires `read`).
    async fn templates(
        &self,
        ctx: &Context<'_>,
        #[graphql(default = 20)] first: i32,
        after: Option<String>,
    ) -> Result<Connection<Template>, ApiError> {
        let principal = require(ctx, Scope::Read)?;
        let first = page_size("first", first.into())?;
        let after: Option<String> = cursor::decode(after.as_deref())?;
        let page = templates::list(
            api(ctx)?.store.pool(),
            &principal.tenant_id,
            first,
            after.as_deref(),
        )
        .await?;
        Ok(Connection::page(
            page,
            |row| row.template_key.clone(),
            Template::from,
        ))
    }

    /// One template with its versions (requires `read`); null when the
    /// tenant never published it.
    async fn template(&self, ctx: &Context<'_>, key: String) -> Result<Option<Template>, ApiError> {
        let principal = require(ctx, Scope::Read)?;
        let key = parse_key("key", &key)?;
        let row = templates::get(api(ctx)?.store.pool(), &principal.tenant_id, &key).await?;
        Ok(row.map(Into::into))
    }

    /// The tenant's partials and layouts (requires `read`).
    async fn template_partials(&self, ctx: &Context<'_>) -> Result<Vec<TemplatePartial>, ApiError> {
        let principal = require(ctx, Scope::Read)?;
        let rows = templates::partials(api(ctx)?.store.pool(), &principal.tenant_id).await?;
        rows.into_iter().map(TemplatePartial::try_from).collect()
    }

    /// Renders every part of a version (the latest when `version` is
    /// absent) in `locale` or its fallback, without sending (requires
    /// `read`). Variables are checked as a send checks them; `herald.*`
    /// values other than `tenant_id` render empty.
    async fn preview_template(
        &self,
        ctx: &Context<'_>,
        key: String,
        version: Option<i32>,
        locale: Option<String>,
        variables: Option<Json<Value>>,
    ) -> Result<TemplatePreview, ApiError> {
        let principal = require(ctx, Scope::Read)?;
        let template = TemplateRef {
            key: parse_key("template.key", &key)?,
            version: parse_version("template.version", version)?,
            locale: locale
                .map(|l| Locale::parse(l.trim()))
                .transpose()
                .map_err(|e| ApiError::field("template.locale", e.to_string()))?,
            variables: match variables {
                None => JsonObject::default(),
                Some(Json(value)) => JsonObject::parse(value, MAX_VARIABLES_BYTES)
                    .map_err(|e| ApiError::field("template.variables", e.to_string()))?,
            },
        };
        let (version, rendered) =
            templates::preview_for_tenant(api(ctx)?.store.pool(), &principal.tenant_id, &template)
                .await?;
        Ok(TemplatePreview::new(&template.key, version, rendered))
    }
}

#[derive(Default)]
pub struct TemplatesMutation;

#[Object]
impl TemplatesMutation {
    /// Publishes a new immutable version (requires `admin`): number n + 1,
    /// with the partials and layouts it uses copied in as they are now.
    /// Publishing the latest version's content again returns that version.
    async fn publish_template(
        &self,
        ctx: &Context<'_>,
        input: PublishTemplateInput,
    ) -> Result<TemplateVersionNode, ApiError> {
        let principal = require(ctx, Scope::Admin)?;
        let published = run(ctx, principal, input.into_domain()?, templates::publish).await?;
        Ok(published.into())
    }

    /// Creates or replaces a partial or layout (requires `admin`). Published
    /// versions keep the copy they were published with.
    async fn upsert_template_partial(
        &self,
        ctx: &Context<'_>,
        name: String,
        body: String,
        #[graphql(default_with = "PartialKindGql::Partial")] kind: PartialKindGql,
    ) -> Result<TemplatePartial, ApiError> {
        let principal = require(ctx, Scope::Admin)?;
        let input = UpsertPartial {
            kind: kind.into(),
            name,
            body,
        };
        let row = run(ctx, principal, input, templates::upsert_partial).await?;
        row.try_into()
    }
}
