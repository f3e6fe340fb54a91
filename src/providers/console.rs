//! `console`: logs each message instead of sending it (development).

use futures::future::BoxFuture;
use serde::{Deserialize, Serialize};

use super::{OutboundMessage, Provider, Receipt};
use crate::domain::values::Channel;
use crate::egress::SendError;

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ConsoleConfig {
    /// Also log the message text (never addresses); off by default because
    /// bodies may hold personal data.
    pub show_text: bool,
}

pub struct ConsoleProvider {
    name: String,
    show_text: bool,
}

impl ConsoleProvider {
    pub fn new(name: &str, config: &ConsoleConfig) -> Self {
        ConsoleProvider {
            name: name.to_string(),
            show_text: config.show_text,
        }
    }
}

impl Provider for ConsoleProvider {
    fn name(&self) -> &str {
        &self.name
    }

    fn supports(&self, _channel: Channel) -> bool {
        true
    }

    fn send<'a>(
        &'a self,
        message: &'a OutboundMessage,
    ) -> BoxFuture<'a, Result<Receipt, SendError>> {
        Box::pin(async move {
            let channel = message.destination.channel();
            if self.show_text {
                tracing::info!(
                    provider = %self.name,
                    notification_id = %message.notification_id,
                    %channel,
                    attempt = message.attempt,
                    title = message.title.as_deref().unwrap_or(""),
                    text = message.text.as_deref().unwrap_or(""),
                    "console delivery"
                );
            } else {
                tracing::info!(
                    provider = %self.name,
                    notification_id = %message.notification_id,
                    %channel,
                    attempt = message.attempt,
                    "console delivery"
                );
            }
            Ok(Receipt {
                provider_message_id: Some(format!("console-{}", message.notification_id)),
            })
        })
    }
}
