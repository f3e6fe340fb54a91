//! Page cursors by row id, and the page size, shared by GraphQL and the
//! REST twin: a cursor from one API works in the other.

use base64::Engine;

use super::error::ApiError;

/// A page of any list holds at most this many rows.
pub const MAX_PAGE: usize = 100;

pub fn encode_cursor(id: &uuid::Uuid) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(id.as_bytes())
}

pub fn decode_cursor(cursor: &str) -> Result<uuid::Uuid, ApiError> {
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(cursor)
        .ok()
        .and_then(|bytes| uuid::Uuid::from_slice(&bytes).ok())
        .ok_or_else(|| ApiError::field("after", "not a cursor from this API"))
}
