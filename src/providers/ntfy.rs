//! `ntfy`: publishes to a topic on an ntfy server (ntfy.sh or self-hosted) with ntfy's
//! header API: `POST {server}/{topic}`, the text as the body, the rest as
//! `X-` headers (<https://docs.ntfy.sh/publish/>).

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use futures::future::BoxFuture;
use reqwest::header::{AUTHORIZATION, CONTENT_TYPE, HeaderValue};
use serde::{Deserialize, Serialize};
use url::Url;

use super::{Destination, OutboundMessage, Provider, Receipt, at_least_one, wrong_channel};
use crate::domain::values::{Channel, HttpUrl, NtfyTopic, Priority, Tag};
use crate::egress::{
    EgressError, SendError, operator_client, read_capped, send_error, status_error,
};
use crate::signing::Secret;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NtfyConfig {
    /// The ntfy server; a path prefix (`https://example.com/ntfy/`) is kept.
    pub server_url: HttpUrl,
    /// An ntfy access token (`tk_...`), sent as `Authorization: Bearer`.
    pub token: Option<Secret>,
    /// The whole call; longer fails as transient.
    pub timeout_seconds: u64,
    /// Tags added to every message's own (ntfy shows emoji short codes such
    /// as `warning` as icons).
    pub tags: Vec<Tag>,
}

impl Default for NtfyConfig {
    fn default() -> Self {
        NtfyConfig {
            server_url: HttpUrl::parse("https://ntfy.sh").expect("a valid default URL"),
            token: None,
            timeout_seconds: 10,
            tags: Vec::new(),
        }
    }
}

/// ntfy answers with the stored message; its id is all Herald keeps.
const MAX_ANSWER_BYTES: usize = 64 * 1024;

pub struct NtfyProvider {
    name: String,
    client: reqwest::Client,
    server_url: HttpUrl,
    /// Built once, marked sensitive so HTTP debug output hides it.
    authorization: Option<HeaderValue>,
    tags: Vec<Tag>,
}

impl NtfyProvider {
    pub fn new(name: &str, config: &NtfyConfig) -> anyhow::Result<Self> {
        at_least_one(name, "timeout_seconds", config.timeout_seconds)?;
        let authorization = match &config.token {
            Some(token) => {
                let mut value = HeaderValue::from_str(&format!("Bearer {}", token.expose()))
                    .ok()
                    .filter(|_| !token.expose().is_empty())
                    .ok_or_else(|| {
                        anyhow::anyhow!("provider {name}: token must be non-empty printable ASCII")
                    })?;
                value.set_sensitive(true);
                Some(value)
            }
            None => None,
        };
        let user_agent = concat!("Herald/", env!("CARGO_PKG_VERSION"));
        let client = operator_client(config.timeout_seconds, user_agent)
            .map_err(|error| anyhow::anyhow!("provider {name}: {error}"))?;
        Ok(NtfyProvider {
            name: name.to_string(),
            client,
            server_url: config.server_url.clone(),
            authorization,
            tags: config.tags.clone(),
        })
    }

    async fn publish(
        &self,
        topic: &NtfyTopic,
        message: &OutboundMessage,
    ) -> Result<Receipt, SendError> {
        let mut request = self
            .client
            .post(topic_url(&self.server_url, topic))
            .header(CONTENT_TYPE, "text/plain; charset=utf-8")
            .header("x-priority", ntfy_priority(message.priority).to_string())
            // ntfy keeps no idempotency keys; the id lets a proxy in front of
            // it, or its logs, tell a retry from a new message.
            .header(
                "x-herald-notification-id",
                message.notification_id.to_string(),
            )
            .body(message.text.clone().unwrap_or_default());
        if let Some(title) = &message.title {
            request = request.header("x-title", header_text(title));
        }
        let tags: Vec<&str> = self
            .tags
            .iter()
            .chain(&message.tags)
            .map(Tag::as_str)
            .collect();
        if !tags.is_empty() {
            request = request.header("x-tags", header_text(&tags.join(",")));
        }
        if let Some(cta_url) = &message.cta_url {
            request = request.header("x-click", cta_url.as_str());
        }
        if let Some(authorization) = &self.authorization {
            request = request.header(AUTHORIZATION, authorization.clone());
        }
        let response = request
            .send()
            .await
            .map_err(|error| send_error("ntfy", EgressError::from_reqwest(&error)))?;
        let status = response.status();
        let headers = response.headers().clone();
        let answer = read_capped(response, MAX_ANSWER_BYTES).await;
        if status.is_success() {
            // The message is published even if the answer is not ntfy's JSON;
            // failing here would only make the dispatcher publish it twice.
            let provider_message_id = serde_json::from_slice::<Published>(&answer)
                .ok()
                .map(|published| published.id);
            return Ok(Receipt {
                provider_message_id,
            });
        }
        Err(status_error("ntfy", status, &headers))
    }
}

#[derive(Deserialize)]
struct Published {
    id: String,
}

impl Provider for NtfyProvider {
    fn name(&self) -> &str {
        &self.name
    }

    fn supports(&self, channel: Channel) -> bool {
        channel == Channel::Ntfy
    }

    fn send<'a>(
        &'a self,
        message: &'a OutboundMessage,
    ) -> BoxFuture<'a, Result<Receipt, SendError>> {
        Box::pin(async move {
            match &message.destination {
                Destination::Ntfy(topic) => self.publish(topic, message).await,
                other => Err(wrong_channel("ntfy", other)),
            }
        })
    }
}

/// The topic under the server URL, keeping any path prefix.
fn topic_url(server_url: &HttpUrl, topic: &NtfyTopic) -> Url {
    let mut url = server_url.as_url().clone();
    url.path_segments_mut()
        .expect("an http(s) URL has a path")
        .pop_if_empty()
        .push(topic.as_str());
    url
}

/// ntfy's 1 (min) to 5 (max), centred on its default 3. HIGH takes 4
/// (high: long vibration, pop-over) rather than 5, which ntfy keeps for
/// emergencies that buzz on and on; LOW takes 2 (low: no sound or vibration).
fn ntfy_priority(priority: Priority) -> u8 {
    match priority {
        Priority::High => 4,
        Priority::Normal => 3,
        Priority::Low => 2,
    }
}

/// Header values are bytes, so text that is not plain printable ASCII goes
/// as an RFC 2047 encoded word, which ntfy (2.4 and later) decodes.
fn header_text(text: &str) -> HeaderValue {
    let plain = text.bytes().all(|byte| (0x20..0x7f).contains(&byte)) && !text.contains("=?");
    let value = if plain {
        text.to_string()
    } else {
        format!("=?UTF-8?B?{}?=", STANDARD.encode(text))
    };
    HeaderValue::from_str(&value).expect("ASCII is a valid header value")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn puts_the_topic_under_the_server_url() {
        let topic = NtfyTopic::parse("alerts").unwrap();
        for (server, expected) in [
            ("https://ntfy.sh", "https://ntfy.sh/alerts"),
            (
                "https://example.com/ntfy",
                "https://example.com/ntfy/alerts",
            ),
            (
                "https://example.com/ntfy/",
                "https://example.com/ntfy/alerts",
            ),
        ] {
            let server = HttpUrl::parse(server).unwrap();
            assert_eq!(topic_url(&server, &topic).as_str(), expected);
        }
    }

    #[test]
    fn maps_priorities_around_ntfys_default() {
        assert_eq!(ntfy_priority(Priority::High), 4);
        assert_eq!(ntfy_priority(Priority::Normal), 3);
        assert_eq!(ntfy_priority(Priority::Low), 2);
    }

    #[test]
    fn encodes_header_text_only_when_needed() {
        assert_eq!(header_text("Disk full"), "Disk full");
        assert_eq!(header_text("Café"), "=?UTF-8?B?Q2Fmw6k=?=");
        assert_eq!(header_text("a\nb"), "=?UTF-8?B?YQpi?=");
        // Literal text that looks encoded is encoded, so ntfy shows it as typed.
        assert_eq!(header_text("=?x?="), "=?UTF-8?B?PT94Pz0=?=");
    }

    #[test]
    fn refuses_a_token_that_cannot_be_a_header() {
        for bad in ["", "tk_a\nb"] {
            let config = NtfyConfig {
                token: Some(Secret::new(bad)),
                ..NtfyConfig::default()
            };
            let error = NtfyProvider::new("ntfy-main", &config).err().unwrap();
            assert_eq!(
                error.to_string(),
                "provider ntfy-main: token must be non-empty printable ASCII"
            );
        }
    }
}
