//! Values: each type's constructor parses, so holding one proves it is valid.
//!
//! Every free-form value has a size limit. Serde goes through the same
//! `parse`, so a stored event cannot smuggle in a value the API would refuse.

/// Display, `FromStr`, `AsRef<str>` and string serde for a type with
/// `parse(&str) -> Result<Self, ValueError>` and `as_str(&self) -> &str`.
macro_rules! text_value {
    ($name:ident) => {
        impl ::std::fmt::Display for $name {
            fn fmt(&self, f: &mut ::std::fmt::Formatter<'_>) -> ::std::fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl ::std::str::FromStr for $name {
            type Err = $crate::domain::values::ValueError;

            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Self::parse(s)
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                self.as_str()
            }
        }

        impl ::serde::Serialize for $name {
            fn serialize<S: ::serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.serialize_str(self.as_str())
            }
        }

        impl<'de> ::serde::Deserialize<'de> for $name {
            fn deserialize<D: ::serde::Deserializer<'de>>(
                deserializer: D,
            ) -> Result<Self, D::Error> {
                let raw = String::deserialize(deserializer)?;
                Self::parse(&raw).map_err(|error| {
                    ::serde::de::Error::custom(format!("invalid {}: {error}", stringify!($name)))
                })
            }
        }
    };
}

/// A `Debug` that hides the value: these types hold personal data (addresses,
/// message bodies) that logs and traces must never carry (personal data is
/// masked), and `{:?}` is how such data usually slips into a log line.
macro_rules! redacted_debug {
    ($name:ident) => {
        impl ::std::fmt::Debug for $name {
            fn fmt(&self, f: &mut ::std::fmt::Formatter<'_>) -> ::std::fmt::Result {
                write!(
                    f,
                    concat!(stringify!($name), "(<redacted: {} chars>)"),
                    self.as_str().chars().count()
                )
            }
        }
    };
}

/// A UUID newtype; new ids are UUIDv7, so they sort by creation time and
/// index well.
macro_rules! uuid_id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(
            Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, ::serde::Serialize, ::serde::Deserialize,
        )]
        #[serde(transparent)]
        pub struct $name(::uuid::Uuid);

        impl $name {
            #[allow(clippy::new_without_default)] // a default id would be a random one: say so at the call site
            pub fn new() -> Self {
                Self(::uuid::Uuid::now_v7())
            }

            pub fn parse(s: &str) -> Result<Self, $crate::domain::values::ValueError> {
                ::uuid::Uuid::parse_str(s)
                    .map(Self)
                    .map_err(|_| $crate::domain::values::ValueError::Invalid("is not a UUID".into()))
            }

            pub fn as_uuid(&self) -> ::uuid::Uuid {
                self.0
            }
        }

        impl From<::uuid::Uuid> for $name {
            fn from(uuid: ::uuid::Uuid) -> Self {
                Self(uuid)
            }
        }

        impl ::std::fmt::Display for $name {
            fn fmt(&self, f: &mut ::std::fmt::Formatter<'_>) -> ::std::fmt::Result {
                self.0.fmt(f)
            }
        }
    };
}

/// A `String` newtype limited to `max` characters of one [`Alphabet`].
macro_rules! bounded_string {
    ($(#[$doc:meta])* $name:ident, $max:expr, $alphabet:expr) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(String);

        impl $name {
            pub const MAX_CHARS: usize = $max;
            /// What `parse` accepts, as a JSON Schema `pattern`.
            pub const PATTERN: &'static str = $alphabet.pattern();

            pub fn parse(s: &str) -> Result<Self, $crate::domain::values::ValueError> {
                $alphabet.check(s, Self::MAX_CHARS)?;
                Ok(Self(s.to_owned()))
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        $crate::domain::values::text_value!($name);
    };
}

/// A published version's number, counted from 1.
macro_rules! version_number {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(
            Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, ::serde::Serialize, ::serde::Deserialize,
        )]
        #[serde(try_from = "u32", into = "u32")]
        pub struct $name(u32);

        impl $name {
            pub const FIRST: $name = $name(1);

            pub fn parse(version: u32) -> Result<Self, $crate::domain::values::ValueError> {
                if version == 0 {
                    return Err($crate::domain::values::ValueError::Invalid(
                        "must be at least 1".into(),
                    ));
                }
                Ok(Self(version))
            }

            pub fn get(self) -> u32 {
                self.0
            }

            /// The version after this one; `None` once the numbers run out.
            pub fn next(self) -> Option<Self> {
                self.0.checked_add(1).map(Self)
            }
        }

        impl TryFrom<u32> for $name {
            type Error = $crate::domain::values::ValueError;

            fn try_from(version: u32) -> Result<Self, Self::Error> {
                Self::parse(version)
            }
        }

        impl From<$name> for u32 {
            fn from(version: $name) -> u32 {
                version.0
            }
        }

        impl ::std::fmt::Display for $name {
            fn fmt(&self, f: &mut ::std::fmt::Formatter<'_>) -> ::std::fmt::Result {
                write!(f, "v{}", self.0)
            }
        }
    };
}

pub(crate) use {bounded_string, text_value, uuid_id, version_number};

mod alphabet;
mod api_key_id;
mod category;
mod channel;
mod display_name;
mod email_address;
mod entity_id;
mod entity_type;
mod external_event_id;
mod external_event_type;
mod html_body;
mod http_url;
mod idempotency_key;
mod json_object;
mod locale;
mod notification_id;
mod ntfy_topic;
mod phone_number;
mod priority;
mod push_target;
mod recipient_id;
mod segment;
mod source_name;
mod tag;
mod template_key;
mod template_version;
mod tenant_id;
mod text_body;
mod timezone;
mod title;
mod trace_id;
mod value_error;

pub(crate) use alphabet::Alphabet;
pub use api_key_id::ApiKeyId;
pub use category::Category;
pub use channel::Channel;
pub use display_name::DisplayName;
pub use email_address::EmailAddress;
pub use entity_id::EntityId;
pub use entity_type::EntityType;
pub use external_event_id::ExternalEventId;
pub use external_event_type::ExternalEventType;
pub use html_body::HtmlBody;
pub use http_url::HttpUrl;
pub use idempotency_key::IdempotencyKey;
pub use json_object::{JsonObject, holds_nul};
pub use locale::Locale;
pub use notification_id::NotificationId;
pub use ntfy_topic::NtfyTopic;
pub use phone_number::PhoneNumber;
pub use priority::Priority;
pub use push_target::PushTarget;
pub use recipient_id::RecipientId;
pub use segment::Segment;
pub use source_name::SourceName;
pub use tag::Tag;
pub use template_key::TemplateKey;
pub use template_version::TemplateVersion;
pub use tenant_id::TenantId;
pub use text_body::TextBody;
pub use timezone::Timezone;
pub use title::Title;
pub use trace_id::TraceId;
pub use value_error::ValueError;
