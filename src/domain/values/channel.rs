use std::fmt;

use serde::{Deserialize, Serialize};

use super::ValueError;

/// A way to reach a recipient.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    Serialize,
    Deserialize,
    utoipa::ToSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Channel {
    Email,
    Sms,
    Push,
    Webhook,
    Ntfy,
    InApp,
}

impl Channel {
    pub const ALL: [Channel; 6] = [
        Channel::Email,
        Channel::Sms,
        Channel::Push,
        Channel::Webhook,
        Channel::Ntfy,
        Channel::InApp,
    ];

    pub fn parse(s: &str) -> Result<Self, ValueError> {
        Self::ALL
            .into_iter()
            .find(|channel| channel.as_str() == s)
            .ok_or_else(|| {
                ValueError::Invalid(format!(
                    "unknown channel {s:?}; expected one of email, sms, push, webhook, ntfy, in_app"
                ))
            })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Channel::Email => "email",
            Channel::Sms => "sms",
            Channel::Push => "push",
            Channel::Webhook => "webhook",
            Channel::Ntfy => "ntfy",
            Channel::InApp => "in_app",
        }
    }
}

impl fmt::Display for Channel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_as_str_and_serde_agree() {
        for channel in Channel::ALL {
            assert_eq!(Channel::parse(channel.as_str()), Ok(channel));
            assert_eq!(
                serde_json::to_value(channel).unwrap(),
                serde_json::json!(channel.as_str())
            );
        }
        assert!(Channel::parse("whatsapp").is_err());
        assert!(Channel::parse("EMAIL").is_err());
    }
}
