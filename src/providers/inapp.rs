//! `inapp`: the message is delivered by being recorded. Its `NotificationSent`
//! event (channel `in_app`) is what the `inapp_feed` read model folds into a
//! recipient's feed, so the feed is rebuilt from the log like any projection.

use futures::future::BoxFuture;
use serde::{Deserialize, Serialize};

use super::{Destination, OutboundMessage, Provider, Receipt, wrong_channel};
use crate::domain::values::Channel;
use crate::egress::SendError;

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct InAppConfig {}

pub struct InAppProvider {
    name: String,
}

impl InAppProvider {
    pub fn new(name: &str, _config: &InAppConfig) -> Self {
        InAppProvider {
            name: name.to_string(),
        }
    }
}

impl Provider for InAppProvider {
    fn name(&self) -> &str {
        &self.name
    }

    fn supports(&self, channel: Channel) -> bool {
        channel == Channel::InApp
    }

    fn send<'a>(
        &'a self,
        message: &'a OutboundMessage,
    ) -> BoxFuture<'a, Result<Receipt, SendError>> {
        Box::pin(async move {
            match &message.destination {
                Destination::InApp(_) => Ok(Receipt {
                    provider_message_id: Some(message.notification_id.to_string()),
                }),
                other => Err(wrong_channel("inapp", other)),
            }
        })
    }
}
