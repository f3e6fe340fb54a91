//! Integration tests: attachments. One inline and one fetched file, loaded by
//! `Attachments::load` and sent by the `smtp` driver to aiosmtpd, come out of
//! Python's email parser intact.

use std::path::{Path, PathBuf};
use std::process::Command;

use axum::Router;
use axum::http::header;
use axum::routing::get;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use herald::domain::attachment::AttachmentSpec;
use herald::domain::attachment::AttachmentsConfig;
use herald::domain::values::{EmailAddress, NotificationId, Priority, TenantId};
use herald::providers::smtp::{SmtpConfig, SmtpProvider, SmtpTls};
use herald::providers::{Destination, OutboundMessage, Provider};
use herald::workers::attachments::Attachments;
use serde_json::{Value, json};

use crate::peers::{self, Peer};
use crate::support::{TestApp, error_codes};

/// Every byte value, so a transfer encoding that mangles any of them shows.
fn pdf() -> Vec<u8> {
    let mut bytes = b"%PDF-1.4\n".to_vec();
    bytes.extend((0..=255u8).cycle().take(70_000));
    bytes
}

/// Serves `pdf()` at `/receipts/r-123.pdf`, as a storage bucket would.
async fn file_server() -> String {
    let app = Router::new().route(
        "/receipts/r-123.pdf",
        get(|| async { ([(header::CONTENT_TYPE, "application/pdf")], pdf()) }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    format!("http://{address}")
}

/// aiosmtpd writing what it receives to the maildir `mailbox`.
async fn aiosmtpd(mailbox: &Path) -> Peer {
    peers::aiosmtpd(
        &["aiosmtpd.handlers.Mailbox", mailbox.to_str().unwrap()],
        &[],
    )
    .await
}

/// The one delivered email as Python's `email` package reads it: the
/// top-level type and each leaf part's type, file name and decoded bytes.
fn parsed(maildir: &Path) -> Value {
    let files: Vec<PathBuf> = std::fs::read_dir(maildir.join("new"))
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .collect();
    assert_eq!(files.len(), 1, "one message in {}", maildir.display());
    let script = r#"
import base64, email, json, sys
from email import policy
with open(sys.argv[1], "rb") as f:
    message = email.message_from_binary_file(f, policy=policy.default)
parts = [
    {"type": part.get_content_type(), "filename": part.get_filename(),
     "base64": base64.b64encode(part.get_payload(decode=True)).decode()}
    for part in message.walk() if not part.is_multipart()
]
print(json.dumps({"type": message.get_content_type(),
                  "children": [p.get_content_type() for p in message.iter_parts()],
                  "parts": parts}))
"#;
    let output = Command::new(crate::peers::python())
        .args(["-c", script, files[0].to_str().unwrap()])
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).unwrap()
}

#[tokio::test]
async fn an_inline_and_a_fetched_file_arrive_intact_in_multipart_mixed() {
    let base = file_server().await;
    let maildir = std::env::temp_dir().join(format!("herald-attach-{}", NotificationId::new()));
    let peer = aiosmtpd(&maildir).await;

    let notes = "Date,Amount\n2025-10-29,42.00\n".as_bytes();
    let specs: Vec<AttachmentSpec> = serde_json::from_value(json!([
        {"filename": "notes.csv", "source": {"inline": STANDARD.encode(notes)}},
        {"filename": "Reçu r-123.pdf", "source": {"url": format!("{base}/receipts/r-123.pdf")}},
    ]))
    .unwrap();
    let tenant = TenantId::parse("acme").unwrap();
    // The file server listens on loopback.
    let egress = herald::egress::Egress::new(&crate::support::loopback_egress());
    let attachments = Attachments::new(&AttachmentsConfig::default(), &egress)
        .load(&tenant, &specs)
        .await
        .unwrap();

    let message = OutboundMessage {
        notification_id: NotificationId::new(),
        tenant_id: tenant,
        attempt: 1,
        destination: Destination::Email(EmailAddress::parse("ada@example.com").unwrap()),
        priority: Priority::Normal,
        category: None,
        tags: vec![],
        title: Some("Your receipt".to_string()),
        text: Some("Your receipt is attached.".to_string()),
        html: Some("<p>Your receipt is attached.</p>".to_string()),
        cta_url: None,
        data: None,
        headers: vec![],
        signing_secrets: vec![],
        attachments,
    };
    let config = SmtpConfig {
        host: "127.0.0.1".to_string(),
        port: Some(peer.port),
        tls: SmtpTls::None,
        from: "no-reply@herald.test".to_string(),
        timeout_seconds: 5,
        ..SmtpConfig::default()
    };
    SmtpProvider::new("smtp-test", &config)
        .unwrap()
        .send(&message)
        .await
        .unwrap();

    let email = parsed(&maildir);
    let _ = std::fs::remove_dir_all(&maildir);
    assert_eq!(email["type"], "multipart/mixed", "{email}");
    assert_eq!(
        email["children"],
        json!(["multipart/alternative", "text/csv", "application/pdf"]),
        "the body first, then the files in the request's order"
    );
    let parts = email["parts"].as_array().unwrap();
    let summary: Vec<(&str, Option<&str>)> = parts
        .iter()
        .map(|part| (part["type"].as_str().unwrap(), part["filename"].as_str()))
        .collect();
    assert_eq!(
        summary,
        [
            ("text/plain", None),
            ("text/html", None),
            ("text/csv", Some("notes.csv")),
            ("application/pdf", Some("Reçu r-123.pdf")),
        ]
    );
    let bytes = |index: usize| {
        STANDARD
            .decode(parts[index]["base64"].as_str().unwrap())
            .unwrap()
    };
    assert_eq!(bytes(2), notes);
    assert_eq!(bytes(3), pdf());
}

const SEND: &str = r#"mutation($input: SendNotificationInput!) {
  sendNotification(input: $input) { notification { request } }
}"#;

#[tokio::test]
async fn graphql_sends_name_each_bad_attachment_and_keep_good_ones() {
    let app = TestApp::start().await;
    let (_, key) = app.tenant().await;
    let input = |channels: Value, attachments: Value| {
        json!({ "input": {
            "recipient": { "email": "ada@example.com", "phone": "+447700900123" },
            "channels": channels,
            "content": { "title": "Your receipt", "text": "Attached." },
            "attachments": attachments,
        }})
    };

    let response = app
        .graphql(
            Some(&key),
            SEND,
            input(
                json!(["EMAIL"]),
                json!([
                    { "filename": "../receipt.pdf", "url": "https://files.example.com/r.pdf" },
                    { "filename": "notes.csv", "contentBase64": "%%%" },
                    { "filename": "a.pdf", "contentType": "pdf", "url": "ftp://files.example.com/a.pdf" },
                ]),
            ),
        )
        .await;
    assert_eq!(error_codes(&response), ["VALIDATION"], "{response}");
    let paths: Vec<&str> = response["errors"][0]["extensions"]["fields"]
        .as_array()
        .unwrap()
        .iter()
        .map(|field| field["path"].as_str().unwrap())
        .collect();
    assert_eq!(
        paths,
        [
            "attachments[0].filename",
            "attachments[1].content_base64",
            "attachments[2].content_type",
            "attachments[2].url",
        ]
    );

    let response = app
        .graphql(
            Some(&key),
            SEND,
            input(
                json!(["SMS"]),
                json!([{ "filename": "a.pdf", "url": "https://files.example.com/a.pdf" }]),
            ),
        )
        .await;
    assert_eq!(
        response["errors"][0]["extensions"]["fields"][0]["path"], "attachments",
        "{response}"
    );

    let response = app
        .graphql(
            Some(&key),
            SEND,
            input(
                json!(["EMAIL"]),
                json!([
                    { "filename": "r-123.pdf", "url": "https://files.example.com/r-123.pdf?sig=abc" },
                    { "filename": "notes.csv", "contentType": "text/csv", "contentBase64": "aGVs\nbG8=" },
                ]),
            ),
        )
        .await;
    assert_eq!(
        response["data"]["sendNotification"]["notification"]["request"]["attachments"],
        json!([
            { "filename": "r-123.pdf",
              "source": { "url": "https://files.example.com/r-123.pdf?sig=abc" } },
            { "filename": "notes.csv", "content_type": "text/csv",
              "source": { "inline": "aGVsbG8=" } },
        ]),
        "{response}"
    );
}
