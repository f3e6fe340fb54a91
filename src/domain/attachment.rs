//! Email attachments as a request names them: a file fetched from
//! a URL at send time, or bytes given inline as base64.
//!
//! Inline bytes live in the `NotificationRequested` event, so their size is
//! bounded here, whatever a tenant's cap; larger files go by URL.

use std::collections::BTreeMap;
use std::fmt;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde::{Deserialize, Serialize};

use super::ValidationErrors;
use super::values::{Alphabet, HttpUrl, TenantId, ValueError, text_value};

/// Attachments one notification may carry.
pub const MAX_ATTACHMENTS: usize = 10;
/// Decoded size of one inline attachment.
pub const MAX_INLINE_ATTACHMENT_BYTES: usize = 5 * 1024 * 1024;
/// Decoded size of all inline attachments of one notification.
pub const MAX_INLINE_ATTACHMENTS_BYTES: usize = 10 * 1024 * 1024;

/// One file to attach to the email.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AttachmentSpec {
    pub filename: AttachmentFilename,
    /// Without it, the type comes from the URL's answer or the file name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content_type: Option<MediaType>,
    pub source: AttachmentSource,
}

impl AttachmentSpec {
    /// Decoded bytes if inline, 0 for a URL (its size is known only when fetched).
    pub fn inline_len(&self) -> usize {
        match &self.source {
            AttachmentSource::Inline(data) => data.len(),
            AttachmentSource::Url(_) => 0,
        }
    }
}

/// Where an attachment's bytes come from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AttachmentSource {
    /// Fetched when the email is sent, so a signed URL must outlive the queue.
    Url(HttpUrl),
    Inline(InlineData),
}

/// A file name as the recipient sees it: 1–255 characters, no control
/// characters, no path separators, not `.` or `..`, so no mail client or
/// download folder can read it as a path.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct AttachmentFilename(String);

impl AttachmentFilename {
    pub const MAX_CHARS: usize = 255;

    pub fn parse(s: &str) -> Result<Self, ValueError> {
        Alphabet::Text.check(s, Self::MAX_CHARS)?;
        if s.contains(['/', '\\']) {
            return Err(ValueError::Invalid(
                "must not contain path separators ('/' or '\\')".into(),
            ));
        }
        if s.trim() != s {
            return Err(ValueError::Invalid(
                "must not start or end with whitespace".into(),
            ));
        }
        if matches!(s, "." | "..") {
            return Err(ValueError::Invalid("must name a file".into()));
        }
        Ok(Self(s.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

text_value!(AttachmentFilename);

/// A MIME type without parameters (`application/pdf`), kept in lower case:
/// RFC 2045 tokens on both sides of the slash, at most 127 characters.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct MediaType(String);

impl MediaType {
    pub const MAX_CHARS: usize = 127;

    pub fn parse(s: &str) -> Result<Self, ValueError> {
        if s.is_empty() {
            return Err(ValueError::Empty);
        }
        if s.len() > Self::MAX_CHARS {
            return Err(ValueError::too_many_chars(Self::MAX_CHARS));
        }
        let is_token = |part: &str| !part.is_empty() && part.chars().all(is_token_char);
        match s.split_once('/') {
            Some((kind, subtype)) if is_token(kind) && is_token(subtype) => {
                Ok(Self(s.to_ascii_lowercase()))
            }
            _ => Err(ValueError::Invalid(
                "must be a MIME type such as application/pdf, without parameters".into(),
            )),
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// RFC 2045: any visible ASCII character except the `tspecials`.
fn is_token_char(c: char) -> bool {
    c.is_ascii_graphic() && !"()<>@,;:\\\"/[]?=".contains(c)
}

text_value!(MediaType);

/// Decoded inline bytes, 1 to [`MAX_INLINE_ATTACHMENT_BYTES`]; standard
/// padded base64 in JSON, so the same file always serialises the same way.
#[derive(Clone, PartialEq, Eq)]
pub struct InlineData(Vec<u8>);

impl InlineData {
    /// Decodes standard base64; line breaks and other ASCII whitespace, as in
    /// MIME bodies, are ignored.
    pub fn parse(base64: &str) -> Result<Self, ValueError> {
        let compact: String = base64
            .chars()
            .filter(|c| !c.is_ascii_whitespace())
            .collect();
        if compact.is_empty() {
            return Err(ValueError::Empty);
        }
        // Refuse before decoding, so an oversized body is never allocated twice.
        if compact.len() / 4 * 3 > MAX_INLINE_ATTACHMENT_BYTES + 3 {
            return Err(ValueError::too_many_bytes(MAX_INLINE_ATTACHMENT_BYTES));
        }
        let bytes = STANDARD.decode(&compact).map_err(|_| {
            ValueError::Invalid("is not valid base64 (standard alphabet, padded)".into())
        })?;
        if bytes.len() > MAX_INLINE_ATTACHMENT_BYTES {
            return Err(ValueError::too_many_bytes(MAX_INLINE_ATTACHMENT_BYTES));
        }
        Ok(Self(bytes))
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

// The bytes may be a personal document: a log line gets the size only.
impl fmt::Debug for InlineData {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "InlineData(<{} bytes>)", self.0.len())
    }
}

impl Serialize for InlineData {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&STANDARD.encode(&self.0))
    }
}

impl<'de> Deserialize<'de> for InlineData {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let raw = String::deserialize(deserializer)?;
        Self::parse(&raw)
            .map_err(|error| serde::de::Error::custom(format!("invalid InlineData: {error}")))
    }
}

/// What servers say when they do not know a file's type: the file name tells more.
pub const UNKNOWN_TYPES: [&str; 2] = ["application/octet-stream", "binary/octet-stream"];

/// `[attachments]` in config.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AttachmentsConfig {
    /// Total bytes of one email's attachments, inline and fetched together.
    pub max_bytes: usize,
    /// Caps that replace `max_bytes` for some tenants (`{ t_acme = 20971520 }`).
    pub tenant_max_bytes: BTreeMap<TenantId, usize>,
    /// MIME types an attachment may have; anything else is refused.
    pub allowed_content_types: Vec<MediaType>,
    /// Time to fetch one URL attachment, body included.
    /// (Which addresses a URL may reach is `[egress] allow`'s to say.)
    pub fetch_timeout_seconds: u64,
}

impl Default for AttachmentsConfig {
    fn default() -> Self {
        AttachmentsConfig {
            max_bytes: 10 * 1024 * 1024,
            tenant_max_bytes: BTreeMap::new(),
            allowed_content_types: [
                "application/pdf",
                "image/png",
                "image/jpeg",
                "image/gif",
                "image/webp",
                "text/plain",
                "text/csv",
                "text/calendar",
                "application/zip",
            ]
            .into_iter()
            .filter_map(|raw| MediaType::parse(raw).ok())
            .collect(),
            fetch_timeout_seconds: 30,
        }
    }
}

impl AttachmentsConfig {
    /// The tenant's cap on one email's attachments.
    pub fn max_bytes_for(&self, tenant: &TenantId) -> usize {
        self.tenant_max_bytes
            .get(tenant)
            .copied()
            .unwrap_or(self.max_bytes)
    }

    pub fn allows(&self, content_type: &str) -> bool {
        self.allowed_content_types
            .iter()
            .any(|allowed| allowed.as_str() == content_type)
    }

    /// What can be judged when the send is requested: inline sizes against
    /// the tenant's cap, and the types of inline attachments and of URL ones
    /// that declare theirs. URL sizes are only known when fetched.
    pub fn validate(
        &self,
        tenant: &TenantId,
        specs: &[AttachmentSpec],
    ) -> Result<(), ValidationErrors> {
        let mut errors = ValidationErrors::default();
        let cap = self.max_bytes_for(tenant);
        let inline: usize = specs.iter().map(AttachmentSpec::inline_len).sum();
        if inline > cap {
            errors.add(
                "attachments",
                format!(
                    "inline attachments total {inline} bytes, over this tenant's cap of {cap} bytes"
                ),
            );
        }
        for (index, spec) in specs.iter().enumerate() {
            let declared = spec.content_type.as_ref().map(MediaType::as_str);
            let content_type = match (&spec.source, declared) {
                (_, Some(declared)) => declared,
                (AttachmentSource::Inline(_), None) => guess_from_filename(spec.filename.as_str()),
                (AttachmentSource::Url(_), None) => continue,
            };
            if !self.allows(content_type) {
                errors.add(
                    format!("attachments[{index}].content_type"),
                    refusal(content_type, declared.is_some()),
                );
            }
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(errors)
        }
    }
}

/// The types of the default allow-list by their usual extensions.
pub fn guess_from_filename(filename: &str) -> &'static str {
    let extension = filename
        .rsplit_once('.')
        .map(|(_, extension)| extension.to_ascii_lowercase());
    match extension.as_deref() {
        Some("pdf") => "application/pdf",
        Some("png") => "image/png",
        Some("jpg" | "jpeg") => "image/jpeg",
        Some("gif") => "image/gif",
        Some("webp") => "image/webp",
        Some("txt") => "text/plain",
        Some("csv") => "text/csv",
        Some("ics") => "text/calendar",
        Some("zip") => "application/zip",
        _ => UNKNOWN_TYPES[0],
    }
}

pub fn refusal(content_type: &str, declared: bool) -> String {
    if !declared && content_type == UNKNOWN_TYPES[0] {
        "has no known type: give content_type".to_string()
    } else {
        format!("content type {content_type} is not allowed")
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn filenames_cannot_be_paths_or_carry_control_characters() {
        for good in ["invoice.pdf", "Reçu n°12 (final).PDF", ".profile", "a..b"] {
            assert_eq!(AttachmentFilename::parse(good).unwrap().as_str(), good);
        }
        for bad in [
            "",
            " ",
            ".",
            "..",
            "../etc/passwd",
            "dir/file.pdf",
            "C:\\file.pdf",
            "a\r\nb.pdf",
            "tab\t.pdf",
            " padded.pdf",
            "padded.pdf ",
        ] {
            assert!(AttachmentFilename::parse(bad).is_err(), "{bad:?}");
        }
        assert!(AttachmentFilename::parse(&"a".repeat(255)).is_ok());
        assert!(AttachmentFilename::parse(&"a".repeat(256)).is_err());
    }

    #[test]
    fn media_types_are_type_slash_subtype_in_lower_case() {
        assert_eq!(
            MediaType::parse("Application/PDF").unwrap().as_str(),
            "application/pdf"
        );
        assert!(MediaType::parse("application/vnd.ms-excel").is_ok());
        assert!(MediaType::parse("image/svg+xml").is_ok());
        for bad in [
            "",
            "pdf",
            "application/",
            "/pdf",
            "text/plain; charset=utf-8",
            "text/pl ain",
            "a/b/c",
            "text/plain\r\nX: y",
        ] {
            assert!(MediaType::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn inline_data_decodes_base64_with_line_breaks_and_refuses_the_rest() {
        assert_eq!(
            InlineData::parse("aGVs\r\nbG8=").unwrap().as_bytes(),
            b"hello"
        );
        assert_eq!(InlineData::parse(""), Err(ValueError::Empty));
        assert!(InlineData::parse("not base64!").is_err());
        assert!(InlineData::parse("aGVsbG8").is_err(), "padding is required");
        let at_limit = STANDARD.encode(vec![7u8; MAX_INLINE_ATTACHMENT_BYTES]);
        assert_eq!(
            InlineData::parse(&at_limit).unwrap().len(),
            MAX_INLINE_ATTACHMENT_BYTES
        );
        let over = STANDARD.encode(vec![7u8; MAX_INLINE_ATTACHMENT_BYTES + 1]);
        assert_eq!(
            InlineData::parse(&over),
            Err(ValueError::too_many_bytes(MAX_INLINE_ATTACHMENT_BYTES))
        );
    }

    #[test]
    fn serialises_canonically_and_deserialises_through_parse() {
        let spec = AttachmentSpec {
            filename: AttachmentFilename::parse("a.txt").unwrap(),
            content_type: Some(MediaType::parse("text/plain").unwrap()),
            source: AttachmentSource::Inline(InlineData::parse("aGVs bG8=").unwrap()),
        };
        let value = serde_json::to_value(&spec).unwrap();
        assert_eq!(
            value,
            json!({"filename": "a.txt", "content_type": "text/plain",
                   "source": {"inline": "aGVsbG8="}})
        );
        assert_eq!(
            serde_json::from_value::<AttachmentSpec>(value).unwrap(),
            spec
        );
        assert!(
            serde_json::from_value::<AttachmentSpec>(
                json!({"filename": "../x", "source": {"url": "https://example.com/x"}})
            )
            .is_err()
        );
        assert!(
            serde_json::from_value::<AttachmentSpec>(
                json!({"filename": "x", "source": {"url": "file:///etc/passwd"}})
            )
            .is_err()
        );
    }
}
