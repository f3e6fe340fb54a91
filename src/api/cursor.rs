//! Paging shared by GraphQL and the REST twin: cursors by row id (a cursor
//! from one API works in the other), the page size, filter values.

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
