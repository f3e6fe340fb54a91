//! `ntfy` driver (being built).

use futures::future::BoxFuture;
use serde::{Deserialize, Serialize};

use super::{OutboundMessage, Provider, Receipt, SendError};
use crate::domain::values::Channel;

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NtfyConfig {}

pub struct NtfyProvider {
    name: String,
}

impl NtfyProvider {
    pub fn new(name: &str, _config: &NtfyConfig) -> anyhow::Result<Self> {
        Ok(NtfyProvider {
            name: name.to_string(),
        })
    }
}

impl Provider for NtfyProvider {
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
