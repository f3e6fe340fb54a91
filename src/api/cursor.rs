//! Paging shared by GraphQL and the REST twin: one cursor codec for every
//! list (a cursor from one API works in the other), the page size, filter
//! values.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::error::ApiError;
use crate::commands::suppressions::SuppressionCursor;
use crate::domain::values::TemplateKey;
use crate::eventstore::Checkpoint;

/// A page of any list holds at most this many rows.
pub const MAX_PAGE: usize = 100;

/// `size` rows a page, or `VALIDATION` on `field`.
pub fn page_size(field: &str, size: i64) -> Result<usize, ApiError> {
    usize::try_from(size)
        .ok()
        .filter(|size| (1..=MAX_PAGE).contains(size))
        .ok_or_else(|| ApiError::field(field, format!("must be between 1 and {MAX_PAGE}")))
}

/// Where a list resumes. Clients hold it as URL-safe base64 of these bytes,
/// opaque to them, so the keys may change without a new API.
pub trait Cursor: Sized {
    fn to_bytes(&self) -> Vec<u8>;
    fn from_bytes(bytes: &[u8]) -> Option<Self>;
}

pub fn encode(key: &impl Cursor) -> String {
    URL_SAFE_NO_PAD.encode(key.to_bytes())
}

/// The `after` argument; a cursor this API did not hand out is `VALIDATION`.
pub fn decode<C: Cursor>(after: Option<&str>) -> Result<Option<C>, ApiError> {
    after
        .map(|cursor| {
            URL_SAFE_NO_PAD
                .decode(cursor)
                .ok()
                .and_then(|bytes| C::from_bytes(&bytes))
                .ok_or_else(|| ApiError::field("after", "not a cursor from this API"))
        })
        .transpose()
}

/// A row id, as its 16 bytes: most lists page by one.
impl Cursor for Uuid {
    fn to_bytes(&self) -> Vec<u8> {
        self.as_bytes().to_vec()
    }

    fn from_bytes(bytes: &[u8]) -> Option<Self> {
        Uuid::from_slice(bytes).ok()
    }
}

// The other keys are written as text.

/// A template key, the one list paged by text: read back only as a key,
/// so no other text (a NUL, say) reaches the database.
impl Cursor for String {
    fn to_bytes(&self) -> Vec<u8> {
        self.as_bytes().to_vec()
    }

    fn from_bytes(bytes: &[u8]) -> Option<Self> {
        let key = std::str::from_utf8(bytes).ok()?;
        TemplateKey::parse(key).ok()?;
        Some(key.to_string())
    }
}

/// A log position (an in-app item's delivery).
impl Cursor for i64 {
    fn to_bytes(&self) -> Vec<u8> {
        self.to_string().into_bytes()
    }

    fn from_bytes(bytes: &[u8]) -> Option<Self> {
        std::str::from_utf8(bytes).ok()?.parse().ok()
    }
}

/// A replay's place in the log's read order, `transaction:position`.
impl Cursor for Checkpoint {
    fn to_bytes(&self) -> Vec<u8> {
        self.to_string().into_bytes()
    }

    fn from_bytes(bytes: &[u8]) -> Option<Self> {
        let (transaction_id, global_position) = std::str::from_utf8(bytes).ok()?.split_once(':')?;
        Some(Checkpoint {
            transaction_id: transaction_id.parse().ok()?,
            global_position: global_position.parse().ok()?,
        })
    }
}

/// A suppression, `created-at-micros:address-key`.
impl Cursor for SuppressionCursor {
    fn to_bytes(&self) -> Vec<u8> {
        format!(
            "{}:{}",
            self.created_at.timestamp_micros(),
            self.address_key
        )
        .into_bytes()
    }

    fn from_bytes(bytes: &[u8]) -> Option<Self> {
        let (micros, key) = std::str::from_utf8(bytes).ok()?.split_once(':')?;
        Some(SuppressionCursor {
            created_at: DateTime::from_timestamp_micros(micros.parse().ok()?)?,
            address_key: key.to_string(),
        })
    }
}

/// A dead letter, `dead-lettered-at|notification-id`.
impl Cursor for (DateTime<Utc>, Uuid) {
    fn to_bytes(&self) -> Vec<u8> {
        format!("{}|{}", self.0.to_rfc3339(), self.1).into_bytes()
    }

    fn from_bytes(bytes: &[u8]) -> Option<Self> {
        let (at, id) = std::str::from_utf8(bytes).ok()?.split_once('|')?;
        Some((
            DateTime::parse_from_rfc3339(at).ok()?.with_timezone(&Utc),
            Uuid::parse_str(id).ok()?,
        ))
    }
}

/// A list filter's value (a recipient id, a tag) parsed as a notification's
/// own would be, so a value no notification can carry (a NUL, say) is
/// `VALIDATION` on `field` rather than a database error.
pub fn filter_value<T: ToString, E: ToString>(
    field: &str,
    raw: Option<String>,
    parse: impl Fn(&str) -> Result<T, E>,
) -> Result<Option<String>, ApiError> {
    raw.map(|raw| {
        parse(&raw)
            .map(|value| value.to_string())
            .map_err(|error| ApiError::field(field, error.to_string()))
    })
    .transpose()
}
