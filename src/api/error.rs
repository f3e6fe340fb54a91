//! API errors and their one mapping to the wire: a GraphQL `extensions.code`,
//! or an HTTP status with the same code for the REST twin. Internal details
//! are logged with an id and never sent to the client.

use async_graphql::ErrorExtensions;
use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;
use uuid::Uuid;

use crate::commands::CommandError;
use crate::domain::{DomainError, FieldError, Scope, ValidationErrors};
use crate::eventstore::StoreError;

/// Deliberately not `Display`: async-graphql converts any `Display` error
/// into a GraphQL error without a code, so `?` must go through the one
/// conversion below instead.
#[derive(Debug)]
pub enum ApiError {
    Unauthenticated,
    Forbidden(&'static str),
    /// A feed token used beyond its one recipient's in-app feed.
    FeedTokenOnly,
    Validation(Vec<FieldError>),
    NotFound(&'static str),
    Conflict(String),
    IdempotencyConflict,
    /// The key's request rate (`api_rate`); a token is back in `retry_after` seconds.
    RateLimited {
        retry_after: u64,
    },
    /// The tenant holds as many of something (sockets, subscriptions) as it
    /// may; ending one makes room.
    LimitExceeded(String),
    /// A hard cap of the tenant's; retrying before `resets_at` is pointless.
    QuotaExceeded {
        message: String,
        resets_at: chrono::DateTime<chrono::Utc>,
    },
    /// The body is not in the media type the route reads (it names that one).
    UnsupportedMediaType(&'static str),
    /// The client sent nothing for too long.
    Timeout,
    /// The body is not a request the route can read at all (not JSON, not
    /// UTF-8, cut short); a readable request with bad values is `Validation`.
    BadRequest(String),
    /// The body is larger than `max_request_bytes`.
    PayloadTooLarge,
    /// PostgreSQL cannot be reached (see `DatabaseHealth`), or gave no
    /// connection within the pool's acquire timeout: the same request can be
    /// sent again shortly.
    Unavailable,
    /// A notification's stream holds an event that cannot be read, and the
    /// answer needs it; an operator must repair the event first.
    UnreadableStream(crate::commands::notifications::Unreadable),
    /// Carries the id under which the cause was logged.
    Internal(String),
}

/// `Retry-After` while the database is unreachable: about how long the
/// health probe takes to notice it is back, plus a restart's usual length.
const UNAVAILABLE_RETRY_SECONDS: u64 = 2;

fn summary(errors: &[FieldError]) -> String {
    errors
        .iter()
        .map(|e| e.to_string())
        .collect::<Vec<_>>()
        .join("; ")
}

impl ApiError {
    pub fn message(&self) -> String {
        match self {
            ApiError::Unauthenticated => {
                "a valid API key is required (Authorization: Bearer <key>)".into()
            }
            ApiError::Forbidden(scope) => format!("this API key lacks the {scope} scope"),
            ApiError::FeedTokenOnly => {
                "a feed token only reads and marks its own recipient's in-app feed".into()
            }
            ApiError::Validation(fields) => format!("invalid input: {}", summary(fields)),
            ApiError::NotFound(what) => format!("{what} not found"),
            ApiError::Conflict(message) => message.clone(),
            ApiError::IdempotencyConflict => {
                "the idempotency key was already used for a different request".into()
            }
            ApiError::RateLimited { retry_after } => {
                format!("too many requests for this API key; retry in {retry_after} s")
            }
            ApiError::LimitExceeded(message) => message.clone(),
            ApiError::QuotaExceeded { message, .. } => message.clone(),
            ApiError::UnsupportedMediaType(expected) => {
                format!("send the body as Content-Type: {expected}")
            }
            ApiError::Timeout => "the request body stopped arriving".into(),
            ApiError::BadRequest(message) => message.clone(),
            ApiError::PayloadTooLarge => {
                "the request body is larger than this server accepts".into()
            }
            ApiError::Unavailable => format!(
                "the database is unreachable or overloaded; retry in \
                 {UNAVAILABLE_RETRY_SECONDS} s (an Idempotency-Key makes a send safe to repeat)"
            ),
            ApiError::UnreadableStream(unreadable) => format!(
                "the notification cannot be decided until an operator repairs its {unreadable}"
            ),
            ApiError::Internal(id) => format!("internal error (id {id})"),
        }
    }

    pub fn code(&self) -> &'static str {
        match self {
            ApiError::Unauthenticated => "UNAUTHENTICATED",
            ApiError::Forbidden(_) | ApiError::FeedTokenOnly => "FORBIDDEN",
            ApiError::Validation(_) => "VALIDATION",
            ApiError::NotFound(_) => "NOT_FOUND",
            ApiError::Conflict(_) => "CONFLICT",
            ApiError::IdempotencyConflict => "IDEMPOTENCY_CONFLICT",
            ApiError::RateLimited { .. } => "RATE_LIMITED",
            ApiError::LimitExceeded(_) => "LIMIT_EXCEEDED",
            ApiError::QuotaExceeded { .. } => "QUOTA_EXCEEDED",
            ApiError::UnsupportedMediaType(_) => "UNSUPPORTED_MEDIA_TYPE",
            ApiError::Timeout => "TIMEOUT",
            ApiError::BadRequest(_) => "BAD_REQUEST",
            ApiError::PayloadTooLarge => "PAYLOAD_TOO_LARGE",
            ApiError::Unavailable => "UNAVAILABLE",
            ApiError::UnreadableStream(_) => "UNREADABLE_STREAM",
            ApiError::Internal(_) => "INTERNAL",
        }
    }

    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::Unauthenticated => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden(_) | ApiError::FeedTokenOnly => StatusCode::FORBIDDEN,
            ApiError::Validation(_) => StatusCode::BAD_REQUEST,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::Conflict(_)
            | ApiError::IdempotencyConflict
            | ApiError::UnreadableStream(_) => StatusCode::CONFLICT,
            ApiError::RateLimited { .. }
            | ApiError::LimitExceeded(_)
            | ApiError::QuotaExceeded { .. } => StatusCode::TOO_MANY_REQUESTS,
            ApiError::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::Timeout => StatusCode::REQUEST_TIMEOUT,
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    pub fn forbidden(scope: Scope) -> ApiError {
        ApiError::Forbidden(scope.as_str())
    }

    pub fn field(path: &str, message: impl Into<String>) -> ApiError {
        ApiError::Validation(vec![FieldError {
            path: path.to_string(),
            message: message.into(),
        }])
    }

    /// Logs the cause under an id the client can quote, and hides it.
    pub fn internal(cause: impl std::fmt::Display) -> ApiError {
        let id = Uuid::now_v7();
        tracing::error!(error_id = %id, error = %cause, "internal error");
        ApiError::Internal(id.to_string())
    }

    /// Seconds before a retry can succeed (`Retry-After`), for a refusal that passes.
    pub fn retry_after(&self) -> Option<u64> {
        match self {
            ApiError::RateLimited { retry_after } => Some(*retry_after),
            ApiError::QuotaExceeded { resets_at, .. } => {
                Some((*resets_at - chrono::Utc::now()).num_seconds().max(1) as u64)
            }
            ApiError::Unavailable => Some(UNAVAILABLE_RETRY_SECONDS),
            _ => None,
        }
    }

    /// Sets `Retry-After` on `response` when the error passes with time.
    pub fn set_retry_after<B>(&self, response: &mut axum::http::Response<B>) {
        if let Some(seconds) = self.retry_after() {
            response.headers_mut().insert(
                axum::http::header::RETRY_AFTER,
                axum::http::HeaderValue::from(seconds),
            );
        }
    }

    fn fields(&self) -> Option<&[FieldError]> {
        match self {
            ApiError::Validation(fields) => Some(fields),
            _ => None,
        }
    }
}

impl From<ValidationErrors> for ApiError {
    fn from(errors: ValidationErrors) -> Self {
        ApiError::Validation(errors.errors().to_vec())
    }
}

impl From<CommandError> for ApiError {
    fn from(error: CommandError) -> Self {
        match error {
            CommandError::Validation(errors) => errors.into(),
            CommandError::NotFound(what) => ApiError::NotFound(what),
            CommandError::IdempotencyConflict => ApiError::IdempotencyConflict,
            CommandError::QuotaExceeded { resets_at, .. } => ApiError::QuotaExceeded {
                message: error.to_string(),
                resets_at,
            },
            CommandError::Domain(domain) => match domain {
                DomainError::TenantNotCreated => ApiError::NotFound("tenant"),
                DomainError::AboveOperatorLimits(fields) => fields.into(),
                DomainError::UnknownApiKey(_) => ApiError::NotFound("API key"),
                other => ApiError::Conflict(other.to_string()),
            },
            CommandError::Store(store) if store.is_conflict() => {
                ApiError::Conflict("the resource changed concurrently; retry".into())
            }
            CommandError::Store(StoreError::InvalidBatch(message)) => ApiError::internal(message),
            CommandError::UnreadableStream(unreadable) => ApiError::UnreadableStream(unreadable),
            CommandError::Store(StoreError::Database(error)) | CommandError::Database(error) => {
                error.into()
            }
            other => ApiError::internal(other),
        }
    }
}

impl From<sqlx::Error> for ApiError {
    fn from(error: sqlx::Error) -> Self {
        if crate::database::is_unreachable(&error) {
            tracing::warn!(%error, "the database is unreachable");
            ApiError::Unavailable
        } else {
            ApiError::internal(error)
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(error: StoreError) -> Self {
        CommandError::from(error).into()
    }
}

impl From<ApiError> for async_graphql::Error {
    fn from(error: ApiError) -> Self {
        async_graphql::Error::new(error.message()).extend_with(|_, extensions| {
            extensions.set("code", error.code());
            if let Some(fields) = error.fields() {
                let fields: Vec<async_graphql::Value> = fields
                    .iter()
                    .map(|f| {
                        let mut field = async_graphql::indexmap::IndexMap::new();
                        field.insert(async_graphql::Name::new("path"), f.path.clone().into());
                        field.insert(
                            async_graphql::Name::new("message"),
                            f.message.clone().into(),
                        );
                        async_graphql::Value::Object(field)
                    })
                    .collect();
                extensions.set("fields", fields);
            }
            if let ApiError::Internal(id) = &error {
                extensions.set("errorId", id.as_str());
            }
            if let ApiError::UnreadableStream(unreadable) = &error
                && let Ok(value) = async_graphql::Value::from_json(unreadable.view())
            {
                extensions.set("unreadable", value);
            }
            if let ApiError::QuotaExceeded { resets_at, .. } = &error {
                extensions.set("resetsAt", resets_at.to_rfc3339());
            }
            if let ApiError::RateLimited { .. } | ApiError::Unavailable = &error
                && let Some(retry_after) = error.retry_after()
            {
                extensions.set("retryAfter", retry_after);
            }
        })
    }
}

/// The REST twin's error body, `{"error": {...}}`, with the HTTP status of
/// its code (`ToSchema`: the OpenAPI document's `ErrorBody`).
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct ErrorDetail {
    /// `VALIDATION`, `BAD_REQUEST`, `UNAUTHENTICATED`, `FORBIDDEN`,
    /// `NOT_FOUND`, `CONFLICT`, `IDEMPOTENCY_CONFLICT`, `RATE_LIMITED`,
    /// `QUOTA_EXCEEDED`, `LIMIT_EXCEEDED`, `PAYLOAD_TOO_LARGE`,
    /// `UNSUPPORTED_MEDIA_TYPE`, `TIMEOUT`, `UNREADABLE_STREAM`,
    /// `UNAVAILABLE` or `INTERNAL`.
    pub code: &'static str,
    pub message: String,
    /// For `VALIDATION`: each bad field.
    pub fields: Option<Vec<FieldError>>,
    /// For `INTERNAL`: the id the cause was logged under.
    pub error_id: Option<String>,
    /// For `UNREADABLE_STREAM`: the event that cannot be read (position,
    /// version, type, error).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub unreadable: Option<serde_json::Value>,
}

impl ErrorDetail {
    pub fn of(error: &ApiError) -> ErrorDetail {
        ErrorDetail {
            code: error.code(),
            message: error.message(),
            fields: error.fields().map(<[FieldError]>::to_vec),
            error_id: match error {
                ApiError::Internal(id) => Some(id.clone()),
                _ => None,
            },
            unreadable: match error {
                ApiError::UnreadableStream(unreadable) => Some(unreadable.view()),
                _ => None,
            },
        }
    }
}

impl ApiError {
    /// The REST body: `{"error": {code, message, fields, error_id}}`, and
    /// `unreadable` (position, version, type, error) for `UNREADABLE_STREAM`.
    pub fn body(&self) -> serde_json::Value {
        json!(ErrorBody {
            error: ErrorDetail::of(self),
        })
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = (self.status(), Json(self.body())).into_response();
        self.set_retry_after(&mut response);
        response
    }
}
