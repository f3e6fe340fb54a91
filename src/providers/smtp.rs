//! `smtp` driver (being built).

use futures::future::BoxFuture;
use serde::{Deserialize, Serialize};

use super::{OutboundMessage, Provider, Receipt, SendError};
use crate::domain::values::Channel;

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SmtpConfig {}

pub struct SmtpProvider {
    name: String,
}

impl SmtpProvider {
    pub fn new(name: &str, _config: &SmtpConfig) -> anyhow::Result<Self> {
        Ok(SmtpProvider {
            name: name.to_string(),
        })
    }
}

impl Provider for SmtpProvider {
    fn name(&self) -> &str {
        &self.name
    }

    fn supports(&self, _channel: Channel) -> bool {
        false
    }

    fn send<'a>(
        &'a self,
        _message: &'a OutboundMessage,
    ) -> BoxFuture<'a, Result<Receipt, SendError>> {
        Box::pin(async move { Err(SendError::permanent("not built yet")) })
    }
}
