//! The `smtp` driver against aiosmtpd: what a real SMTP server receives, and
//! how its refusals are classified.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use herald::domain::values::{EmailAddress, NotificationId, Priority, TenantId};
use herald::egress::SendError;
use herald::providers::smtp::{SmtpConfig, SmtpProvider, SmtpTls};
use herald::providers::{Destination, OutboundMessage, Provider};
use herald::signing::Secret;

use crate::peers::{Peer, aiosmtpd, free_port};

fn config(port: u16) -> SmtpConfig {
    SmtpConfig {
        host: "127.0.0.1".to_string(),
        port: Some(port),
        tls: SmtpTls::None,
        from: "no-reply@herald.test".to_string(),
        from_name: Some("Herald".to_string()),
        timeout_seconds: 5,
        ..SmtpConfig::default()
    }
}

fn message(text: &str) -> OutboundMessage {
    OutboundMessage {
        notification_id: NotificationId::new(),
        tenant_id: TenantId::parse("acme").unwrap(),
        attempt: 1,
        destination: Destination::Email(EmailAddress::parse("ada@example.com").unwrap()),
        priority: Priority::Normal,
        category: None,
        tags: vec![],
        title: Some("Welcome to Herald".to_string()),
        text: Some(text.to_string()),
        html: Some("<p>Hello <b>Ada</b></p>".to_string()),
        cta_url: None,
        data: None,
        headers: vec![
            (
                "List-Unsubscribe".to_string(),
                "<https://herald.test/unsubscribe/ada>, <mailto:unsubscribe@herald.test>"
                    .to_string(),
            ),
            (
                "List-Unsubscribe-Post".to_string(),
                "List-Unsubscribe=One-Click".to_string(),
            ),
        ],
        signing_secrets: vec![],
        attachments: Vec::new(),
    }
}

/// A directory of its own under the temp dir, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> TempDir {
        let path = std::env::temp_dir().join(format!("herald-smtp-{}", NotificationId::new()));
        std::fs::create_dir_all(&path).unwrap();
        TempDir(path)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The one message delivered to the maildir, as (unfolded headers, raw text).
fn delivered(maildir: &Path) -> (BTreeMap<String, String>, String) {
    let files: Vec<_> = std::fs::read_dir(maildir.join("new"))
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .collect();
    assert_eq!(files.len(), 1, "one message in {}", maildir.display());
    let raw = std::fs::read_to_string(&files[0])
        .unwrap()
        .replace("\r\n", "\n");
    let head = raw.split("\n\n").next().unwrap();
    let mut headers = BTreeMap::new();
    let mut last = String::new();
    for line in head.lines() {
        if line.starts_with([' ', '\t']) {
            let value: &mut String = headers.get_mut(&last).unwrap();
            value.push(' ');
            value.push_str(line.trim());
        } else if let Some((name, value)) = line.split_once(':') {
            last = name.to_ascii_lowercase();
            headers.insert(last.clone(), value.trim().to_string());
        }
    }
    (headers, raw)
}

#[tokio::test]
async fn aiosmtpd_receives_the_full_message() {
    let maildir = TempDir::new();
    let mailbox = maildir.0.join("mail");
    let peer = aiosmtpd(
        &["aiosmtpd.handlers.Mailbox", mailbox.to_str().unwrap()],
        &[],
    )
    .await;
    let provider = SmtpProvider::new("smtp-test", &config(peer.port)).unwrap();
    let message = message("Hello Ada");

    let receipt = provider.send(&message).await.unwrap();

    let (headers, raw) = delivered(&mailbox);
    let message_id = format!("<{}@herald.test>", message.notification_id);
    assert_eq!(receipt.provider_message_id.as_deref(), Some(&*message_id));
    assert_eq!(headers["from"], "Herald <no-reply@herald.test>");
    assert_eq!(headers["to"], "ada@example.com");
    assert_eq!(headers["x-rcptto"], "ada@example.com", "the SMTP envelope");
    assert_eq!(headers["subject"], "Welcome to Herald");
    assert_eq!(headers["message-id"], message_id);
    assert_eq!(
        headers["x-herald-notification-id"],
        message.notification_id.to_string()
    );
    assert_eq!(
        headers["list-unsubscribe"],
        "<https://herald.test/unsubscribe/ada>, <mailto:unsubscribe@herald.test>"
    );
    assert_eq!(
        headers["list-unsubscribe-post"],
        "List-Unsubscribe=One-Click"
    );
    assert!(
        headers["content-type"].starts_with("multipart/alternative"),
        "{raw}"
    );
    let text_part = raw.find("Content-Type: text/plain").expect(&raw);
    let html_part = raw.find("Content-Type: text/html").expect(&raw);
    assert!(
        text_part < html_part,
        "plain text first, HTML preferred: {raw}"
    );
    assert!(raw.contains("Hello Ada"), "{raw}");
    assert!(raw.contains("<p>Hello <b>Ada</b></p>"), "{raw}");
}

#[tokio::test]
async fn a_closed_port_is_transient() {
    let provider = SmtpProvider::new("smtp-test", &config(free_port())).unwrap();
    let error = provider.send(&message("Hello")).await.unwrap_err();
    assert!(matches!(error, SendError::Transient { .. }), "{error:?}");
}

#[tokio::test]
async fn a_reply_4xx_is_transient() {
    let peer = aiosmtpd(&["smtp_tempfail.TempFail"], &[]).await;
    let provider = SmtpProvider::new("smtp-test", &config(peer.port)).unwrap();
    let error = provider.send(&message("Hello")).await.unwrap_err();
    assert!(
        matches!(&error, SendError::Transient { message, .. } if message.contains("451")),
        "{error:?}"
    );
}

#[tokio::test]
async fn a_reply_5xx_is_permanent() {
    // aiosmtpd answers 552 to a message over its SIZE limit.
    let peer = aiosmtpd(&["aiosmtpd.handlers.Sink"], &["-s", "1024"]).await;
    let provider = SmtpProvider::new("smtp-test", &config(peer.port)).unwrap();
    let error = provider
        .send(&message(&"too long ".repeat(500)))
        .await
        .unwrap_err();
    assert!(
        matches!(&error, SendError::Permanent { message } if message.contains("552")),
        "{error:?}"
    );
}

#[tokio::test]
async fn credentials_a_relay_cannot_take_fail_without_showing_the_password() {
    // Over plaintext aiosmtpd offers no AUTH mechanism at all.
    let peer = aiosmtpd(&["aiosmtpd.handlers.Sink"], &[]).await;
    let config = SmtpConfig {
        username: Some("herald".to_string()),
        password: Some(Secret::new("hunter2-secret")),
        ..config(peer.port)
    };
    let provider = SmtpProvider::new("smtp-test", &config).unwrap();
    let error = provider.send(&message("Hello")).await.unwrap_err();
    assert!(error.is_permanent(), "{error:?}");
    assert!(!format!("{error:?}").contains("hunter2"), "{error:?}");
}

#[tokio::test]
async fn a_bad_sender_or_half_credentials_stop_startup() {
    let bad_from = SmtpConfig {
        from: "not an address".to_string(),
        ..config(25)
    };
    let error = SmtpProvider::new("smtp-main", &bad_from).err().unwrap();
    assert!(error.to_string().contains("smtp-main"), "{error}");
    assert!(error.to_string().contains("`from`"), "{error}");

    let half = SmtpConfig {
        username: Some("herald".to_string()),
        ..config(25)
    };
    assert!(SmtpProvider::new("smtp-main", &half).is_err());
}

#[tokio::test]
async fn a_refused_login_is_the_providers_problem_not_the_messages() {
    let port = free_port();
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/peers/smtp_auth_refusing.py"
    );
    let _peer = Peer::spawn_python(
        "aiosmtpd refusing logins",
        &[script, &port.to_string()],
        port,
    )
    .await;
    let config = SmtpConfig {
        username: Some("herald".to_string()),
        password: Some(Secret::new("hunter2-secret")),
        ..config(port)
    };
    let provider = SmtpProvider::new("smtp-test", &config).unwrap();
    let error = provider.send(&message("Hello")).await.unwrap_err();
    // Transient: it counts against the breaker, which fails traffic over.
    assert!(
        matches!(&error, SendError::Transient { message, .. } if message.contains("535")),
        "{error:?}"
    );
    assert!(!format!("{error:?}").contains("hunter2"), "{error:?}");
}
