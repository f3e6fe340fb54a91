//! `smtp`: email through an SMTP relay with lettre, over a pool of
//! connections shared by every send.
//!
//! Each email carries `X-Herald-Notification-Id` and a `Message-ID` made from
//! the notification id, identical on every attempt, so a receiver that saw
//! one copy can drop the next.

use std::time::Duration;

use futures::future::BoxFuture;
use lettre::message::header::{ContentType, HeaderName, HeaderValue};
use lettre::message::{Mailbox, MultiPart, SinglePart};
use lettre::transport::smtp::PoolConfig;
use lettre::transport::smtp::authentication::Credentials;
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use serde::{Deserialize, Serialize};

use super::{
    Attachment, Destination, OutboundMessage, Provider, Receipt, at_least_one, wrong_channel,
};
use crate::domain::values::Channel;
use crate::egress::SendError;
use crate::signing::Secret;

/// `[providers.NAME]` with `kind = "smtp"`. Only `from` has no default.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SmtpConfig {
    /// Relay host name; with TLS it is also the name the certificate must carry.
    pub host: String,
    /// Unset: 587 for `starttls`, 465 for `tls`, 25 for `none`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    pub tls: SmtpTls,
    /// Set both `username` and `password`, or neither.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub password: Option<Secret>,
    /// The sender, `no-reply@example.com` or `Example <no-reply@example.com>`;
    /// its domain also names the `Message-ID`s.
    pub from: String,
    /// Display name for `from`; replaces one written in `from`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub from_name: Option<String>,
    /// Limit on each SMTP command, connecting included.
    pub timeout_seconds: u64,
    /// Connections kept open to the relay for reuse; a send that finds none
    /// idle opens one of its own, closed after it if the pool is full.
    pub pool_max_size: u32,
}

impl Default for SmtpConfig {
    fn default() -> Self {
        SmtpConfig {
            host: "localhost".to_string(),
            port: None,
            // Never plaintext by accident: `none` has to be asked for.
            tls: SmtpTls::Starttls,
            username: None,
            password: None,
            from: String::new(),
            from_name: None,
            timeout_seconds: 30,
            pool_max_size: 10,
        }
    }
}

/// How the connection to the relay is protected.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SmtpTls {
    /// Plain connect, then STARTTLS, which the relay must offer (submission, 587).
    #[default]
    Starttls,
    /// TLS from the first byte (submissions, 465).
    Tls,
    /// No encryption: a relay on loopback or a trusted network only.
    None,
}

impl SmtpTls {
    fn default_port(self) -> u16 {
        match self {
            SmtpTls::Starttls => 587,
            SmtpTls::Tls => 465,
            SmtpTls::None => 25,
        }
    }
}

/// Headers Herald writes itself; one from the dispatcher would silently
/// replace them (or change the envelope), so such a message is refused.
const RESERVED_HEADERS: [&str; 12] = [
    "From",
    "Sender",
    "To",
    "Cc",
    "Bcc",
    "Subject",
    "Date",
    "Message-ID",
    "MIME-Version",
    "Content-Type",
    "Content-Transfer-Encoding",
    NOTIFICATION_ID_HEADER,
];

const NOTIFICATION_ID_HEADER: &str = "X-Herald-Notification-Id";

/// RFC 5322's suggested line length, for a subject cut from the text.
const SUBJECT_MAX_CHARS: usize = 78;

pub struct SmtpProvider {
    name: String,
    transport: AsyncSmtpTransport<Tokio1Executor>,
    from: Mailbox,
    /// Scrubbed from error messages, in case a relay ever echoes it.
    password: Option<Secret>,
}

impl SmtpProvider {
    /// Must run inside a Tokio runtime: the pool starts its cleanup task here.
    pub fn new(name: &str, config: &SmtpConfig) -> anyhow::Result<Self> {
        let from = sender(config).map_err(|error| anyhow::anyhow!("provider {name}: {error}"))?;
        at_least_one(name, "pool_max_size", u64::from(config.pool_max_size))?;
        at_least_one(name, "timeout_seconds", config.timeout_seconds)?;
        let builder = match config.tls {
            SmtpTls::Starttls => AsyncSmtpTransport::<Tokio1Executor>::starttls_relay(&config.host),
            SmtpTls::Tls => AsyncSmtpTransport::<Tokio1Executor>::relay(&config.host),
            SmtpTls::None => Ok(AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(
                &config.host,
            )),
        }
        .map_err(|error| anyhow::anyhow!("provider {name}: host {:?}: {error}", config.host))?;
        let mut builder = builder
            .port(config.port.unwrap_or(config.tls.default_port()))
            .timeout(Some(Duration::from_secs(config.timeout_seconds)))
            .pool_config(PoolConfig::new().max_size(config.pool_max_size));
        match (&config.username, &config.password) {
            (Some(username), Some(password)) => {
                builder = builder.credentials(Credentials::new(
                    username.clone(),
                    password.expose().to_string(),
                ));
            }
            (None, None) => {}
            _ => anyhow::bail!("provider {name}: set both username and password, or neither"),
        }
        Ok(SmtpProvider {
            name: name.to_string(),
            transport: builder.build(),
            from,
            password: config.password.clone(),
        })
    }

    fn failure(&self, error: &lettre::transport::smtp::Error) -> SendError {
        let mut text = format!("SMTP: {error}");
        if let Some(password) = self.password.as_ref().map(Secret::expose)
            && !password.is_empty()
        {
            text = text.replace(password, "****");
        }
        // A 5xx reply refuses this message for good, and a client error is a
        // relay that lacks what we need (STARTTLS, an AUTH mechanism, SMTPUTF8):
        // waiting changes neither. A 4xx, network, TLS or timeout may pass later.
        // Authentication refused (530, 534, 535) is the provider account's
        // problem, not the message's: transient, so it counts against the
        // breaker and the traffic fails over, instead of every message
        // marking this provider failed for good.
        let refused_login = error
            .status()
            .is_some_and(|code| ["530", "534", "535"].contains(&code.to_string().as_str()));
        if refused_login {
            SendError::transient(text)
        } else if error.is_permanent() || error.is_client() {
            SendError::permanent(text)
        } else {
            SendError::transient(text)
        }
    }
}

/// The `From` mailbox, checked at startup so a typo stops Herald, not a send.
fn sender(config: &SmtpConfig) -> Result<Mailbox, String> {
    if config.from.trim().is_empty() {
        return Err("`from` is required (the sender address)".to_string());
    }
    let mut from: Mailbox = config
        .from
        .parse()
        .map_err(|error| format!("`from` {:?} is not an email address ({error})", config.from))?;
    if let Some(name) = &config.from_name {
        from.name = Some(name.clone());
    }
    Ok(from)
}

/// The stable `Message-ID` of a notification's email.
fn message_id(message: &OutboundMessage, from: &Mailbox) -> String {
    format!("<{}@{}>", message.notification_id, from.email.domain())
}

/// The title, else the first line of text (cut to a subject's length), else
/// a generic subject: an email without a subject reads as spam to many filters.
fn subject(message: &OutboundMessage) -> String {
    if let Some(title) = message.title.as_deref().map(str::trim)
        && !title.is_empty()
    {
        return title.to_string();
    }
    let Some(line) = message
        .text
        .as_deref()
        .and_then(|text| text.lines().map(str::trim).find(|line| !line.is_empty()))
    else {
        return "Notification".to_string();
    };
    match line.char_indices().nth(SUBJECT_MAX_CHARS) {
        Some((cut, _)) => format!("{}…", line[..cut].trim_end()),
        None => line.to_string(),
    }
}

/// The email for `message`, ready for the transport.
fn email(message: &OutboundMessage, from: &Mailbox) -> Result<Message, SendError> {
    let Destination::Email(to) = &message.destination else {
        return Err(wrong_channel("smtp", &message.destination));
    };
    let mut builder = Message::builder()
        .from(from.clone())
        .to(Mailbox::new(None, to.as_address().clone()))
        .subject(subject(message))
        .message_id(Some(message_id(message, from)))
        .raw_header(HeaderValue::new(
            HeaderName::new_from_ascii_str(NOTIFICATION_ID_HEADER),
            message.notification_id.to_string(),
        ));
    for (name, value) in &message.headers {
        builder = builder.raw_header(extra_header(name, value)?);
    }
    let text = || SinglePart::plain(message.text.clone().unwrap_or_default());
    let body = match &message.html {
        Some(html) if message.text.is_some() => Body::Multi(
            MultiPart::alternative()
                .singlepart(text())
                .singlepart(SinglePart::html(html.clone())),
        ),
        Some(html) => Body::Single(
            SinglePart::builder()
                .header(ContentType::TEXT_HTML)
                .body(html.clone()),
        ),
        None => Body::Single(text()),
    };
    let built = match (body, message.attachments.is_empty()) {
        (Body::Single(part), true) => builder.singlepart(part),
        (Body::Multi(parts), true) => builder.multipart(parts),
        // The body first, so clients show it and list the files after it.
        (body, false) => {
            let mut mixed = match body {
                Body::Single(part) => MultiPart::mixed().singlepart(part),
                Body::Multi(parts) => MultiPart::mixed().multipart(parts),
            };
            for attachment in &message.attachments {
                mixed = mixed.singlepart(attachment_part(attachment)?);
            }
            builder.multipart(mixed)
        }
    };
    built.map_err(|error| SendError::permanent(format!("cannot build the email: {error}")))
}

/// An email body before attachments: one part, or text and HTML alternatives.
enum Body {
    Single(SinglePart),
    Multi(MultiPart),
}

/// lettre picks the transfer encoding (base64 for binary) and encodes the
/// file name (RFC 2231), so neither can break the MIME structure.
fn attachment_part(attachment: &Attachment) -> Result<SinglePart, SendError> {
    let content_type = ContentType::parse(&attachment.content_type).map_err(|_| {
        SendError::permanent(format!(
            "attachment {}: invalid content type {:?}",
            attachment.filename, attachment.content_type
        ))
    })?;
    Ok(
        lettre::message::Attachment::new(attachment.filename.clone())
            .body(attachment.bytes.clone(), content_type),
    )
}

/// One dispatcher header. lettre encodes the value (RFC 2047), so a line
/// break in it cannot start a new header; the name is checked here.
fn extra_header(name: &str, value: &str) -> Result<HeaderValue, SendError> {
    // RFC 5322 field names: printable ASCII without ':'.
    let valid = !name.is_empty() && name.bytes().all(|b| (33..=126).contains(&b) && b != b':');
    if !valid {
        return Err(SendError::permanent(format!(
            "invalid email header name {name:?}"
        )));
    }
    if RESERVED_HEADERS
        .iter()
        .any(|reserved| reserved.eq_ignore_ascii_case(name))
    {
        return Err(SendError::permanent(format!(
            "email header {name} is set by Herald and cannot be overridden"
        )));
    }
    let name = HeaderName::new_from_ascii(name.to_string())
        .map_err(|_| SendError::permanent(format!("invalid email header name {name:?}")))?;
    Ok(HeaderValue::new(name, value.to_string()))
}

impl Provider for SmtpProvider {
    fn name(&self) -> &str {
        &self.name
    }

    fn supports(&self, channel: Channel) -> bool {
        channel == Channel::Email
    }

    fn send<'a>(
        &'a self,
        message: &'a OutboundMessage,
    ) -> BoxFuture<'a, Result<Receipt, SendError>> {
        Box::pin(async move {
            let email = email(message, &self.from)?;
            let message_id = message_id(message, &self.from);
            let response = self
                .transport
                .send(email)
                .await
                .map_err(|error| self.failure(&error))?;
            tracing::debug!(
                provider = %self.name,
                notification_id = %message.notification_id,
                reply = response.first_line().unwrap_or(""),
                "smtp relay accepted"
            );
            Ok(Receipt {
                provider_message_id: Some(message_id),
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::values::{EmailAddress, NotificationId, PhoneNumber, Priority, TenantId};

    fn outbound() -> OutboundMessage {
        OutboundMessage {
            notification_id: NotificationId::new(),
            tenant_id: TenantId::parse("acme").unwrap(),
            attempt: 1,
            destination: Destination::Email(EmailAddress::parse("ada@example.com").unwrap()),
            priority: Priority::Normal,
            category: None,
            tags: vec![],
            title: Some("Welcome".to_string()),
            text: Some("Hello Ada".to_string()),
            html: Some("<p>Hello Ada</p>".to_string()),
            cta_url: None,
            data: None,
            headers: vec![],
            signing_secrets: vec![],
            attachments: Vec::new(),
        }
    }

    fn from() -> Mailbox {
        "Herald <no-reply@herald.test>".parse().unwrap()
    }

    fn rendered(message: &OutboundMessage) -> String {
        String::from_utf8(email(message, &from()).unwrap().formatted()).unwrap()
    }

    #[test]
    fn text_and_html_go_as_multipart_alternative() {
        let message = outbound();
        let raw = rendered(&message);
        assert!(raw.contains("Content-Type: multipart/alternative"), "{raw}");
        assert!(raw.contains("Content-Type: text/plain"), "{raw}");
        assert!(raw.contains("Content-Type: text/html"), "{raw}");
        assert!(raw.contains("Subject: Welcome\r\n"), "{raw}");
        assert!(raw.contains("To: ada@example.com\r\n"), "{raw}");
        assert!(
            raw.contains(&format!(
                "Message-ID: <{}@herald.test>\r\n",
                message.notification_id
            )),
            "{raw}"
        );
        assert!(
            raw.contains(&format!(
                "X-Herald-Notification-Id: {}\r\n",
                message.notification_id
            )),
            "{raw}"
        );
    }

    #[test]
    fn one_body_goes_as_a_single_part() {
        let mut message = outbound();
        message.html = None;
        let raw = rendered(&message);
        assert!(!raw.contains("multipart"), "{raw}");
        assert!(raw.contains("Content-Type: text/plain"), "{raw}");

        let mut message = outbound();
        message.text = None;
        let raw = rendered(&message);
        assert!(!raw.contains("multipart"), "{raw}");
        assert!(raw.contains("Content-Type: text/html"), "{raw}");
    }

    #[test]
    fn attachments_follow_the_body_in_multipart_mixed() {
        let mut message = outbound();
        message.attachments = vec![
            Attachment {
                filename: "Reçu \"final\".pdf".to_string(),
                content_type: "application/pdf".to_string(),
                bytes: b"%PDF-1.4 \x00\xff".to_vec(),
            },
            Attachment {
                filename: "notes.txt".to_string(),
                content_type: "text/plain".to_string(),
                bytes: b"hello".to_vec(),
            },
        ];
        let raw = rendered(&message);
        let at = |needle: &str| {
            raw.find(needle)
                .unwrap_or_else(|| panic!("{needle} in {raw}"))
        };
        assert!(at("Content-Type: multipart/mixed") < at("Content-Type: multipart/alternative"));
        assert!(at("Content-Type: text/html") < at("Content-Type: application/pdf"));
        assert!(at("Content-Type: application/pdf") < at("filename=\"notes.txt\""));
        assert!(
            raw.contains("filename*"),
            "the non-ASCII name is RFC 2231 encoded: {raw}"
        );

        message.html = None;
        let raw = rendered(&message);
        assert!(raw.contains("Content-Type: multipart/mixed"), "{raw}");
        assert!(!raw.contains("multipart/alternative"), "{raw}");

        message.attachments[0].content_type = "not a type".to_string();
        assert!(email(&message, &from()).unwrap_err().is_permanent());
    }

    #[test]
    fn the_message_id_is_the_same_on_every_attempt() {
        let first = outbound();
        let mut retry = first.clone();
        retry.attempt = 2;
        assert_eq!(message_id(&first, &from()), message_id(&retry, &from()));
    }

    #[test]
    fn subject_falls_back_to_the_first_line_then_a_default() {
        let mut message = outbound();
        message.title = None;
        message.text = Some("\n  Your code is 123456  \nIt expires soon".to_string());
        assert_eq!(subject(&message), "Your code is 123456");
        message.text = Some("é".repeat(100));
        assert_eq!(subject(&message), format!("{}…", "é".repeat(78)));
        message.text = None;
        assert_eq!(subject(&message), "Notification");
    }

    #[test]
    fn extra_headers_are_added_and_cannot_inject_or_override() {
        let mut message = outbound();
        message.headers = vec![
            (
                "List-Unsubscribe".to_string(),
                "<https://herald.test/u/1>".to_string(),
            ),
            (
                "List-Unsubscribe-Post".to_string(),
                "List-Unsubscribe=One-Click".to_string(),
            ),
        ];
        let raw = rendered(&message);
        assert!(
            raw.contains("List-Unsubscribe: <https://herald.test/u/1>\r\n"),
            "{raw}"
        );
        assert!(
            raw.contains("List-Unsubscribe-Post: List-Unsubscribe=One-Click\r\n"),
            "{raw}"
        );

        message.headers = vec![("X-Note".to_string(), "a\r\nBcc: eve@evil.test".to_string())];
        let raw = rendered(&message);
        assert!(!raw.contains("\r\nBcc:"), "{raw}");

        for name in ["bcc", "Message-Id", "Bad\r\nName", "Has Space", ""] {
            message.headers = vec![(name.to_string(), "x".to_string())];
            let error = email(&message, &from()).unwrap_err();
            assert!(error.is_permanent(), "{name:?}: {error}");
        }
    }

    #[test]
    fn a_non_email_destination_is_permanent() {
        let mut message = outbound();
        message.destination = Destination::Sms(PhoneNumber::parse("+447700900123").unwrap());
        assert!(email(&message, &from()).unwrap_err().is_permanent());
    }

    #[test]
    fn the_sender_is_checked_and_named() {
        let mut config = SmtpConfig {
            from: "no-reply@herald.test".to_string(),
            from_name: Some("Herald".to_string()),
            ..SmtpConfig::default()
        };
        assert_eq!(
            sender(&config).unwrap().to_string(),
            "Herald <no-reply@herald.test>"
        );
        config.from = "not an address".to_string();
        assert!(
            sender(&config)
                .unwrap_err()
                .contains("not an email address")
        );
        config.from = String::new();
        assert!(sender(&config).unwrap_err().contains("required"));
    }

    #[test]
    fn config_reads_toml_and_never_shows_the_password() {
        let config: SmtpConfig = toml::from_str(
            r#"
                host = "smtp.herald.test"
                tls = "tls"
                username = "herald"
                password = "hunter2"
                from = "no-reply@herald.test"
            "#,
        )
        .unwrap();
        assert_eq!(config.tls, SmtpTls::Tls);
        assert_eq!(config.port, None);
        assert_eq!(config.timeout_seconds, 30);
        let shown = toml::to_string(&config).unwrap();
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(!format!("{config:?}").contains("hunter2"));
        assert!(toml::from_str::<SmtpConfig>("tls = \"ssl\"").is_err());
        assert!(toml::from_str::<SmtpConfig>("hots = \"x\"").is_err());
    }
}
