//! `twilio`: SMS through Twilio's Messages API
//! (<https://www.twilio.com/docs/messaging/api/message-resource>):
//! `POST {base_url}/2010-04-01/Accounts/{sid}/Messages.json`, form-encoded,
//! with HTTP Basic auth (account SID and auth token).
//!
//! Every message names a `StatusCallback`, Herald's
//! `POST /webhooks/twilio/{name}`, where Twilio reports delivery; those
//! callbacks are checked against the same auth token (`api::receipts`).
//! Twilio's API keeps no idempotency key, so the notification id goes as
//! the `X-Herald-Notification-Id` header only, for logs and proxies.

use futures::future::BoxFuture;
use serde::{Deserialize, Serialize};
use url::Url;

use super::{
    Destination, OutboundMessage, Provider, Receipt, at_least_one, sms_text, wrong_channel,
};
use crate::domain::values::{Channel, HttpUrl, PhoneNumber};
use crate::egress::{
    EgressError, SendError, operator_client, read_capped, send_error, status_error,
};
use crate::signing::Secret;

/// The path of Twilio's status callbacks under Herald's public URL; the
/// provider's name follows.
pub const CALLBACK_PATH: [&str; 2] = ["webhooks", "twilio"];

/// `[providers.NAME]` with `kind = "twilio"`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TwilioConfig {
    /// `AC...`: names the account in the URL and is the Basic auth user.
    pub account_sid: String,
    /// The Basic auth password; also the key Twilio signs callbacks with.
    pub auth_token: Secret,
    /// `MG...`: send through a Messaging Service (its sender pool chooses
    /// the number). Set this or `from`, not both.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub messaging_service_sid: Option<String>,
    /// The sender: an E.164 number (or alphanumeric sender ID) of the account.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    /// Another API than Twilio's (a local stand-in for tests).
    #[serde(default = "default_base_url")]
    pub base_url: HttpUrl,
    /// Where Twilio posts status callbacks, exactly as Twilio will call it
    /// (its signature covers this URL). Unset: `links.public_base_url`
    /// followed by `/webhooks/twilio/NAME`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status_callback_url: Option<HttpUrl>,
    /// The whole call; longer fails as transient.
    #[serde(default = "default_timeout_seconds")]
    pub timeout_seconds: u64,
}

fn default_base_url() -> HttpUrl {
    HttpUrl::parse("https://api.twilio.com").expect("a valid default URL")
}

fn default_timeout_seconds() -> u64 {
    10
}

impl TwilioConfig {
    /// A config with only the required settings, the others at their defaults.
    pub fn new(account_sid: &str, auth_token: Secret) -> TwilioConfig {
        TwilioConfig {
            account_sid: account_sid.to_string(),
            auth_token,
            messaging_service_sid: None,
            from: None,
            base_url: default_base_url(),
            status_callback_url: None,
            timeout_seconds: default_timeout_seconds(),
        }
    }

    /// Why this configuration cannot send, if it cannot.
    pub fn problem(&self) -> Option<&'static str> {
        let usable =
            |value: &Option<String>| value.as_deref().is_some_and(|v| !v.trim().is_empty());
        if self.account_sid.trim().is_empty() || self.auth_token.expose().is_empty() {
            return Some("account_sid and auth_token must not be empty");
        }
        if self.account_sid.bytes().any(|b| !b.is_ascii_alphanumeric()) {
            return Some("account_sid must be letters and digits (AC...)");
        }
        match (usable(&self.messaging_service_sid), usable(&self.from)) {
            (true, true) => Some("set messaging_service_sid or from, not both"),
            (false, false) => Some(
                "set messaging_service_sid (a Messaging Service, MG...) or from (a sender number)",
            ),
            _ => None,
        }
    }

    /// Sets `status_callback_url`, when it is not configured, to
    /// `public_base` followed by `/webhooks/twilio/{name}`.
    pub fn resolve_callback_url(&mut self, name: &str, public_base: Option<&HttpUrl>) {
        if self.status_callback_url.is_some() {
            return;
        }
        let Some(base) = public_base else { return };
        let mut url = base.as_url().clone();
        url.set_query(None);
        url.set_fragment(None);
        if let Ok(mut segments) = url.path_segments_mut() {
            segments.pop_if_empty().extend(CALLBACK_PATH).push(name);
        }
        self.status_callback_url = HttpUrl::parse(url.as_str()).ok();
    }
}

/// Twilio answers with the message resource, a few KB; errors are smaller.
const MAX_ANSWER_BYTES: usize = 64 * 1024;

/// How the message names its sender.
#[derive(Debug, Clone, PartialEq)]
enum Sender {
    MessagingService(String),
    From(String),
}

pub struct TwilioProvider {
    name: String,
    client: reqwest::Client,
    messages_url: Url,
    account_sid: String,
    auth_token: Secret,
    sender: Sender,
    status_callback: Option<Url>,
}

impl TwilioProvider {
    /// Without `status_callback_url` (see
    /// [`TwilioConfig::resolve_callback_url`]) messages ask for no callbacks.
    pub fn new(name: &str, config: &TwilioConfig) -> anyhow::Result<Self> {
        if let Some(problem) = config.problem() {
            anyhow::bail!("provider {name}: {problem}");
        }
        at_least_one(name, "timeout_seconds", config.timeout_seconds)?;
        let sender = match (&config.messaging_service_sid, &config.from) {
            (Some(sid), _) if !sid.trim().is_empty() => {
                Sender::MessagingService(sid.trim().to_string())
            }
            (_, Some(from)) => Sender::From(from.trim().to_string()),
            _ => unreachable!("problem() requires one sender"),
        };
        let user_agent = concat!("Herald/", env!("CARGO_PKG_VERSION"));
        let client = operator_client(config.timeout_seconds, user_agent)
            .map_err(|error| anyhow::anyhow!("provider {name}: {error}"))?;
        Ok(TwilioProvider {
            name: name.to_string(),
            client,
            messages_url: messages_url(&config.base_url, &config.account_sid),
            account_sid: config.account_sid.clone(),
            auth_token: config.auth_token.clone(),
            sender,
            status_callback: config
                .status_callback_url
                .as_ref()
                .map(|url| url.as_url().clone()),
        })
    }

    /// The form fields of one message, in the order they are sent.
    fn form(&self, to: &PhoneNumber, message: &OutboundMessage) -> Result<String, SendError> {
        let body = sms_text(message)?;
        let mut form = url::form_urlencoded::Serializer::new(String::new());
        form.append_pair("To", to.as_str());
        form.append_pair("Body", &body);
        match &self.sender {
            Sender::MessagingService(sid) => form.append_pair("MessagingServiceSid", sid),
            Sender::From(from) => form.append_pair("From", from),
        };
        if let Some(callback) = &self.status_callback {
            form.append_pair("StatusCallback", callback.as_str());
        }
        Ok(form.finish())
    }

    async fn create(
        &self,
        to: &PhoneNumber,
        message: &OutboundMessage,
    ) -> Result<Receipt, SendError> {
        let form = self.form(to, message)?;
        let response = self
            .client
            .post(self.messages_url.clone())
            .basic_auth(&self.account_sid, Some(self.auth_token.expose()))
            .header(
                reqwest::header::CONTENT_TYPE,
                "application/x-www-form-urlencoded",
            )
            .header("accept", "application/json")
            .header(
                "x-herald-notification-id",
                message.notification_id.to_string(),
            )
            .body(form)
            .send()
            .await
            .map_err(|error| send_error("twilio", EgressError::from_reqwest(&error)))?;
        let status = response.status();
        let headers = response.headers().clone();
        let answer = read_capped(response, MAX_ANSWER_BYTES).await;
        if status.is_success() {
            // Twilio has taken the message: without a readable sid the
            // receipt has no id to match callbacks by, but sending it again
            // would send a second SMS.
            let provider_message_id = serde_json::from_slice::<Created>(&answer)
                .ok()
                .map(|created| created.sid);
            if provider_message_id.is_none() {
                tracing::warn!(provider = %self.name, "Twilio took the message but its answer has no sid");
            }
            return Ok(Receipt {
                provider_message_id,
            });
        }
        Err(classify(status, &headers, &answer))
    }
}

/// `{base}/2010-04-01/Accounts/{sid}/Messages.json`, keeping a path prefix.
fn messages_url(base: &HttpUrl, account_sid: &str) -> Url {
    let mut url = base.as_url().clone();
    url.path_segments_mut()
        .expect("an http(s) URL has a path")
        .pop_if_empty()
        .extend(["2010-04-01", "Accounts", account_sid, "Messages.json"]);
    url
}

#[derive(Deserialize)]
struct Created {
    sid: String,
}

/// Twilio's error body: `{"code": 21211, "message": "...", "more_info": "...", "status": 400}`.
#[derive(Deserialize)]
struct TwilioError {
    code: Option<u64>,
    #[serde(default)]
    message: Option<String>,
}

/// Error codes that come with a 4xx but go away by waiting
/// (<https://www.twilio.com/docs/api/errors>): 20429 too many requests,
/// 20500 and 20503 Twilio's own failures, 30001 queue overflow.
const TRANSIENT_CODES: [u64; 4] = [20429, 20500, 20503, 30001];

/// A refusal, by whether waiting helps: 408, 429 and 5xx (and the error
/// codes above) are transient; any other answer, e.g. 21211 (an invalid
/// `To`), 21610 (the recipient replied STOP) or 20003 (bad credentials),
/// will be the same next time. The message names Twilio's code and its
/// text (capped), never the credentials.
fn classify(
    status: reqwest::StatusCode,
    headers: &reqwest::header::HeaderMap,
    answer: &[u8],
) -> SendError {
    let error = serde_json::from_slice::<TwilioError>(answer).ok();
    let code = error.as_ref().and_then(|error| error.code);
    let base = status_error("twilio", status, headers);
    let Some(code) = code else {
        return base;
    };
    let detail: String = error
        .and_then(|error| error.message)
        .unwrap_or_default()
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(200)
        .collect();
    let message = format!("twilio error {code}: {detail} (HTTP {})", status.as_u16());
    match base {
        SendError::Transient { retry_after, .. } => SendError::Transient {
            message,
            retry_after,
        },
        SendError::Permanent { .. } if TRANSIENT_CODES.contains(&code) => {
            SendError::transient(message)
        }
        SendError::Permanent { .. } => SendError::permanent(message),
    }
}

impl Provider for TwilioProvider {
    fn name(&self) -> &str {
        &self.name
    }

    fn supports(&self, channel: Channel) -> bool {
        channel == Channel::Sms
    }

    fn send<'a>(
        &'a self,
        message: &'a OutboundMessage,
    ) -> BoxFuture<'a, Result<Receipt, SendError>> {
        Box::pin(async move {
            match &message.destination {
                Destination::Sms(to) => self.create(to, message).await,
                other => Err(wrong_channel("twilio", other)),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use reqwest::StatusCode;
    use reqwest::header::{HeaderMap, HeaderValue, RETRY_AFTER};

    use super::*;
    use crate::domain::values::{EmailAddress, NotificationId, Priority, TenantId};

    const TOKEN: &str = "twilio-auth-token-0123";

    fn config() -> TwilioConfig {
        TwilioConfig {
            from: Some("+15005550006".into()),
            ..TwilioConfig::new("AC0123456789abcdef", Secret::new(TOKEN))
        }
    }

    fn outbound(destination: Destination) -> OutboundMessage {
        OutboundMessage {
            notification_id: NotificationId::new(),
            tenant_id: TenantId::parse("acme").unwrap(),
            attempt: 1,
            destination,
            priority: Priority::High,
            category: None,
            tags: vec![],
            title: Some("Your code".to_string()),
            text: Some("384921 & more".to_string()),
            html: None,
            cta_url: None,
            data: None,
            headers: vec![],
            signing_secrets: vec![],
            attachments: Vec::new(),
        }
    }

    #[test]
    fn config_reads_toml_and_never_shows_the_token() {
        let config: TwilioConfig = toml::from_str(
            r#"
                account_sid = "AC0123"
                auth_token = "s3cret-token"
                messaging_service_sid = "MG0123"
            "#,
        )
        .unwrap();
        assert_eq!(config.base_url.as_str(), "https://api.twilio.com/");
        assert_eq!(config.timeout_seconds, 10);
        assert_eq!(config.problem(), None);
        let shown = toml::to_string(&config).unwrap();
        assert!(!shown.contains("s3cret-token"), "{shown}");
        assert!(!format!("{config:?}").contains("s3cret-token"));
        assert!(toml::from_str::<TwilioConfig>("account_sid = \"AC1\"").is_err());
        assert!(
            toml::from_str::<TwilioConfig>(
                "account_sid = \"AC1\"\nauth_token = \"t\"\nfrm = \"+1\""
            )
            .is_err()
        );
    }

    #[test]
    fn exactly_one_sender_is_required() {
        let neither = TwilioConfig::new("AC1", Secret::new(TOKEN));
        let error = TwilioProvider::new("sms-main", &neither).err().unwrap();
        assert!(
            error
                .to_string()
                .starts_with("provider sms-main: set messaging_service_sid"),
            "{error}"
        );
        let both = TwilioConfig {
            messaging_service_sid: Some("MG1".into()),
            from: Some("+15005550006".into()),
            ..neither.clone()
        };
        let error = TwilioProvider::new("sms-main", &both).err().unwrap();
        assert!(error.to_string().contains("not both"), "{error}");
        let bad_sid = TwilioConfig {
            account_sid: "AC1/../x".into(),
            ..config()
        };
        assert!(TwilioProvider::new("sms-main", &bad_sid).is_err());
        assert!(TwilioProvider::new("sms-main", &config()).is_ok());
    }

    fn resolved(mut config: TwilioConfig, public: Option<&str>) -> Option<String> {
        let public = public.map(|url| HttpUrl::parse(url).unwrap());
        config.resolve_callback_url("sms-main", public.as_ref());
        config
            .status_callback_url
            .map(|url| url.as_str().to_string())
    }

    #[test]
    fn the_callback_url_is_configured_or_made_from_the_public_url() {
        assert_eq!(
            resolved(config(), Some("https://herald.example/base/")).as_deref(),
            Some("https://herald.example/base/webhooks/twilio/sms-main")
        );
        assert_eq!(
            resolved(config(), Some("http://127.0.0.1:8080")).as_deref(),
            Some("http://127.0.0.1:8080/webhooks/twilio/sms-main")
        );
        assert_eq!(resolved(config(), None), None);
        let configured = TwilioConfig {
            status_callback_url: Some(HttpUrl::parse("https://hooks.example/t?x=1").unwrap()),
            ..config()
        };
        assert_eq!(
            resolved(configured, Some("https://herald.example/")).as_deref(),
            Some("https://hooks.example/t?x=1")
        );
    }

    #[test]
    fn the_form_names_to_body_sender_and_callback() {
        let mut with_callback = config();
        with_callback
            .resolve_callback_url("sms", HttpUrl::parse("http://127.0.0.1:8080").ok().as_ref());
        let provider = TwilioProvider::new("sms", &with_callback).unwrap();
        let to = PhoneNumber::parse("+447700900123").unwrap();
        let form = provider
            .form(&to, &outbound(Destination::Sms(to.clone())))
            .unwrap();
        assert_eq!(
            form,
            "To=%2B447700900123&Body=384921+%26+more&From=%2B15005550006&\
             StatusCallback=http%3A%2F%2F127.0.0.1%3A8080%2Fwebhooks%2Ftwilio%2Fsms"
        );
        let service = TwilioConfig {
            from: None,
            messaging_service_sid: Some("MG42".into()),
            ..config()
        };
        let provider = TwilioProvider::new("sms", &service).unwrap();
        let form = provider
            .form(&to, &outbound(Destination::Sms(to.clone())))
            .unwrap();
        assert_eq!(
            form,
            "To=%2B447700900123&Body=384921+%26+more&MessagingServiceSid=MG42"
        );
        assert_eq!(
            provider.messages_url.as_str(),
            "https://api.twilio.com/2010-04-01/Accounts/AC0123456789abcdef/Messages.json"
        );
    }

    #[tokio::test]
    async fn other_channels_are_permanent() {
        let provider = TwilioProvider::new("sms", &config()).unwrap();
        let email = outbound(Destination::Email(
            EmailAddress::parse("ada@example.com").unwrap(),
        ));
        assert!(provider.send(&email).await.unwrap_err().is_permanent());
        assert!(provider.supports(Channel::Sms));
        assert!(!provider.supports(Channel::Push));
    }

    #[test]
    fn answers_are_classified_as_twilio_documents_them() {
        let none = HeaderMap::new();
        let body = |code: u64, status: u16| {
            format!(
                r#"{{"code":{code},"message":"The 'To' number is not valid.","more_info":"https://www.twilio.com/docs/errors/{code}","status":{status}}}"#
            )
        };
        let invalid = classify(StatusCode::BAD_REQUEST, &none, body(21211, 400).as_bytes());
        assert_eq!(
            invalid,
            SendError::permanent("twilio error 21211: The 'To' number is not valid. (HTTP 400)")
        );
        assert!(
            classify(StatusCode::BAD_REQUEST, &none, body(21610, 400).as_bytes()).is_permanent()
        );
        assert!(
            classify(StatusCode::UNAUTHORIZED, &none, body(20003, 401).as_bytes()).is_permanent()
        );
        assert!(classify(StatusCode::BAD_REQUEST, &none, b"<html>").is_permanent());
        let mut later = HeaderMap::new();
        later.insert(RETRY_AFTER, HeaderValue::from_static("7"));
        assert_eq!(
            classify(
                StatusCode::TOO_MANY_REQUESTS,
                &later,
                body(20429, 429).as_bytes()
            ),
            SendError::Transient {
                message: "twilio error 20429: The 'To' number is not valid. (HTTP 429)".into(),
                retry_after: Some(std::time::Duration::from_secs(7)),
            }
        );
        assert!(!classify(StatusCode::INTERNAL_SERVER_ERROR, &none, b"").is_permanent());
        assert!(
            !classify(
                StatusCode::SERVICE_UNAVAILABLE,
                &none,
                body(20503, 503).as_bytes()
            )
            .is_permanent()
        );
        assert!(
            !classify(StatusCode::BAD_REQUEST, &none, body(20429, 400).as_bytes()).is_permanent()
        );
    }
}
