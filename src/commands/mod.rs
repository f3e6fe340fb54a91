//! The command side: load an aggregate from its stream, let the domain decide,
//! append the events, and keep the read tables that must be current in the
//! same transaction. Used by the API and by the CLI alike.

pub mod campaigns;
pub mod group_commit;
pub mod inapp_feed;
pub mod ingest;
pub mod limits;
pub mod links;
pub mod notifications;
mod pipeline;
pub mod receipts;
pub mod recipients;
pub mod schedules;
pub mod suppressions;
pub mod templates;
pub mod tenants;
pub mod webhook_endpoints;
pub mod workflows;

use serde_json::{Value, json};
use uuid::Uuid;

use crate::domain::{DomainError, ValidationErrors};
use crate::eventstore::StoreError;
use crate::telemetry::trace::TracePoint;

#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    #[error("invalid input")]
    Validation(ValidationErrors),
    #[error(transparent)]
    Domain(#[from] DomainError),
    #[error("{0} not found")]
    NotFound(&'static str),
    #[error("the idempotency key was used for a different request")]
    IdempotencyConflict,
    /// A hard cap of the tenant's; nothing was counted.
    #[error("the tenant's {quota} quota of {limit} is used up until {resets_at}")]
    QuotaExceeded {
        quota: crate::domain::Quota,
        limit: f64,
        resets_at: chrono::DateTime<chrono::Utc>,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    #[error("stored event {position} cannot be read: {reason}")]
    CorruptEvent { position: i64, reason: String },
    /// A notification whose stream holds an event that cannot be read: what
    /// needs its whole state (a command, or any read when the request itself
    /// is the unreadable event) waits until an operator repairs the event.
    #[error("{0}")]
    UnreadableStream(notifications::Unreadable),
}

impl From<ValidationErrors> for CommandError {
    fn from(errors: ValidationErrors) -> Self {
        CommandError::Validation(errors)
    }
}

/// Refuses, each as a `VALIDATION` error on its field, the URLs a tenant
/// gave that lead where Herald never calls (docs/security.md). They are judged
/// again before every request; this makes the mistake visible at once.
pub async fn check_urls<'a>(
    egress: &crate::egress::Egress,
    urls: impl IntoIterator<Item = (String, &'a url::Url)>,
) -> Result<(), CommandError> {
    let mut errors = ValidationErrors::default();
    for (path, url) in urls {
        if let Err(refused) = egress.check_url(url).await {
            errors.add(path, refused.to_string());
        }
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(CommandError::Validation(errors))
    }
}

/// Who or what caused a change, recorded in every event's metadata.
#[derive(Debug, Clone)]
pub struct Actor {
    /// `api-key:<id>`, `cli`, or a worker's name.
    pub name: String,
    pub correlation_id: Uuid,
    /// The trace the change belongs to (`trace_id` and `span_id` in the
    /// metadata); a notification's events all carry the notification's.
    pub trace: Option<TracePoint>,
}

impl Actor {
    /// An actor in the trace of the work in hand ([`TracePoint::current`]):
    /// an API request's, none for a worker started outside any.
    pub fn new(name: impl Into<String>) -> Actor {
        Actor {
            name: name.into(),
            correlation_id: Uuid::now_v7(),
            trace: TracePoint::current(),
        }
    }

    /// The same actor, its changes recorded at `trace`.
    pub fn at(&self, trace: Option<TracePoint>) -> Actor {
        Actor {
            trace,
            ..self.clone()
        }
    }

    fn metadata(&self) -> Value {
        let mut metadata = serde_json::Map::new();
        metadata.insert("actor".into(), json!(self.name));
        metadata.insert("correlation_id".into(), json!(self.correlation_id));
        match &self.trace {
            Some(trace) => trace.write(&mut metadata),
            None => {
                metadata.insert("trace_id".into(), Value::Null);
            }
        }
        Value::Object(metadata)
    }
}
