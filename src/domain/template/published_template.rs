//! The `PublishedTemplate` aggregate: one tenant's template key and its
//! numbered, immutable versions.
//!
//! | command | legal when | records |
//! |---|---|---|
//! | Publish | always; the same body as the latest version records nothing | TemplatePublished (version n + 1) |

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::definition::TemplateDefinition;
use crate::domain::aggregate::Aggregate;
use crate::domain::domain_error::DomainError;
use crate::domain::tagged_payload::upcast_current;
use crate::domain::values::{TemplateKey, TemplateVersion, TenantId};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type")]
pub enum TemplateEvent {
    #[serde(rename = "TemplatePublished")]
    Published {
        tenant_id: TenantId,
        key: TemplateKey,
        version: TemplateVersion,
        definition: TemplateDefinition,
    },
}

impl TemplateEvent {
    pub const SCHEMA_VERSION: i16 = 1;

    pub const EVENT_TYPES: [&'static str; 1] = ["TemplatePublished"];

    pub fn event_type(&self) -> &'static str {
        match self {
            TemplateEvent::Published { .. } => "TemplatePublished",
        }
    }

    /// Reads a stored event of any schema version into today's shape.
    pub fn upcast(
        event_type: &str,
        schema_version: i16,
        payload: Value,
    ) -> Result<TemplateEvent, DomainError> {
        upcast_current(
            event_type,
            schema_version,
            payload,
            &Self::EVENT_TYPES,
            Self::SCHEMA_VERSION,
        )
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum TemplateCommand {
    Publish {
        tenant_id: TenantId,
        key: TemplateKey,
        definition: TemplateDefinition,
    },
}

/// A template's state; `Default` is one never published.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PublishedTemplate {
    latest: Option<(TemplateVersion, TemplateDefinition)>,
}

impl PublishedTemplate {
    pub fn latest_version(&self) -> Option<TemplateVersion> {
        self.latest.as_ref().map(|(version, _)| *version)
    }
}

impl Aggregate for PublishedTemplate {
    type Command = TemplateCommand;
    type Event = TemplateEvent;
    type Error = DomainError;

    fn apply(&mut self, event: &TemplateEvent) {
        match event {
            TemplateEvent::Published {
                version,
                definition,
                ..
            } => self.latest = Some((*version, definition.clone())),
        }
    }

    fn decide(
        &self,
        command: TemplateCommand,
        _now: DateTime<Utc>,
    ) -> Result<Vec<TemplateEvent>, DomainError> {
        match command {
            TemplateCommand::Publish {
                tenant_id,
                key,
                definition,
            } => {
                let version = match &self.latest {
                    // Publishing what is already the latest is a retry, not a new version.
                    Some((_, latest)) if *latest == definition => return Ok(Vec::new()),
                    Some((latest, _)) => latest.next(),
                    None => Some(TemplateVersion::FIRST),
                }
                .ok_or(DomainError::InvalidCommand(
                    "the template has used up its version numbers",
                ))?;
                Ok(vec![TemplateEvent::Published {
                    tenant_id,
                    key,
                    version,
                    definition,
                }])
            }
        }
    }
}
