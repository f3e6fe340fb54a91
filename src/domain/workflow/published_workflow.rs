//! The `PublishedWorkflow` aggregate: one tenant's workflow key and its
//! numbered, immutable versions.
//!
//! | command | legal when | records |
//! |---|---|---|
//! | Publish | always; the same steps as the latest version record nothing | WorkflowPublished (version n + 1) |

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::definition::WorkflowDefinition;
use super::workflow_key::WorkflowKey;
use super::workflow_version::WorkflowVersion;
use crate::domain::aggregate::Aggregate;
use crate::domain::domain_error::DomainError;
use crate::domain::tagged_payload::upcast_current;
use crate::domain::values::TenantId;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type")]
pub enum WorkflowEvent {
    #[serde(rename = "WorkflowPublished")]
    Published {
        tenant_id: TenantId,
        key: WorkflowKey,
        version: WorkflowVersion,
        definition: WorkflowDefinition,
        published_at: DateTime<Utc>,
    },
}

impl WorkflowEvent {
    pub const SCHEMA_VERSION: i16 = 1;

    pub const EVENT_TYPES: [&'static str; 1] = ["WorkflowPublished"];

    pub fn event_type(&self) -> &'static str {
        match self {
            WorkflowEvent::Published { .. } => "WorkflowPublished",
        }
    }

    /// Reads a stored event of any schema version into today's shape.
    pub fn upcast(
        event_type: &str,
        schema_version: i16,
        payload: Value,
    ) -> Result<WorkflowEvent, DomainError> {
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
pub enum WorkflowCommand {
    /// `definition` comes from [`PublishWorkflow::parse`](super::PublishWorkflow::parse).
    Publish {
        tenant_id: TenantId,
        definition: WorkflowDefinition,
    },
}

/// A workflow's state; `Default` is one never published.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PublishedWorkflow {
    latest: Option<(WorkflowVersion, WorkflowDefinition)>,
}

impl PublishedWorkflow {
    pub fn latest(&self) -> Option<(WorkflowVersion, &WorkflowDefinition)> {
        self.latest
            .as_ref()
            .map(|(version, definition)| (*version, definition))
    }
}

impl Aggregate for PublishedWorkflow {
    type Command = WorkflowCommand;
    type Event = WorkflowEvent;
    type Error = DomainError;

    fn apply(&mut self, event: &WorkflowEvent) {
        match event {
            WorkflowEvent::Published {
                version,
                definition,
                ..
            } => self.latest = Some((*version, definition.clone())),
        }
    }

    fn decide(
        &self,
        command: WorkflowCommand,
        now: DateTime<Utc>,
    ) -> Result<Vec<WorkflowEvent>, DomainError> {
        match command {
            WorkflowCommand::Publish {
                tenant_id,
                definition,
            } => {
                let version = match &self.latest {
                    // Publishing what is already the latest is a retry, not a new version.
                    Some((_, latest)) if *latest == definition => return Ok(Vec::new()),
                    Some((latest, _)) => latest.next(),
                    None => Some(WorkflowVersion::FIRST),
                }
                .ok_or(DomainError::InvalidCommand(
                    "the workflow has used up its version numbers",
                ))?;
                Ok(vec![WorkflowEvent::Published {
                    tenant_id,
                    key: definition.key().clone(),
                    version,
                    definition,
                    published_at: now,
                }])
            }
        }
    }
}
