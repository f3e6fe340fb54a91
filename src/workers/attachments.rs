//! Email attachments: fetched by URL at send time (size and type limits) or
//! decoded from base64, checked against the tenant's size cap.
//!
//! URL bodies are read in chunks and dropped as soon as they pass the cap, so
//! a huge or endless answer costs at most the cap in memory.

use std::time::Duration;

use reqwest::Method;
use reqwest::header::{CONTENT_LENGTH, CONTENT_TYPE};

use crate::domain::attachment::{
    AttachmentSource, AttachmentSpec, AttachmentsConfig, UNKNOWN_TYPES, guess_from_filename,
    refusal,
};
use crate::domain::values::{HttpUrl, TenantId};
use crate::egress::{
    ClientOptions, Egress, EgressClient, SendError, read_capped, send_error, status_error,
};
use crate::providers::Attachment;

/// Redirects followed before a fetch fails: storage services redirect to a
/// signed or regional URL now and then.
const MAX_REDIRECTS: usize = 3;
/// How much of an error answer is read (and dropped).
const ERROR_ANSWER_BYTES: usize = 1024;

/// Loads the attachments of one email; shared by every dispatch loop.
#[derive(Debug, Clone)]
pub struct Attachments {
    client: EgressClient,
    config: AttachmentsConfig,
}

impl Attachments {
    /// URLs are fetched through `egress`, which judges every redirect hop.
    pub fn new(config: &AttachmentsConfig, egress: &Egress) -> Self {
        let client = egress
            .client(&ClientOptions {
                timeout: Duration::from_secs(config.fetch_timeout_seconds.max(1)),
                user_agent: concat!("Herald-Attachments/", env!("CARGO_PKG_VERSION")).into(),
                max_redirects: MAX_REDIRECTS,
            })
            // Only a TLS backend that cannot start fails here, and then no
            // provider could send anything either.
            .expect("the attachment HTTP client has static settings");
        Attachments {
            client,
            config: config.clone(),
        }
    }

    /// Fetches URL attachments (streaming, stopping at the cap), decodes
    /// inline ones, checks content types and the tenant's total cap.
    ///
    /// Permanent: a 4xx answer, a disallowed type, over the cap. Transient:
    /// a 408, 429 or 5xx answer (with its `Retry-After`), a timeout, no connection.
    pub async fn load(
        &self,
        tenant: &TenantId,
        specs: &[AttachmentSpec],
    ) -> Result<Vec<Attachment>, SendError> {
        let cap = self.config.max_bytes_for(tenant);
        let mut loaded: Vec<Attachment> = Vec::with_capacity(specs.len());
        let mut total = 0;
        for spec in specs {
            let room = cap - total;
            let attachment = match &spec.source {
                AttachmentSource::Inline(data) => {
                    if data.len() > room {
                        return Err(over_cap(cap));
                    }
                    let content_type = resolve_type(spec, None);
                    self.check_type(spec, content_type)?;
                    Attachment {
                        filename: spec.filename.as_str().to_string(),
                        content_type: content_type.to_string(),
                        bytes: data.as_bytes().to_vec(),
                    }
                }
                AttachmentSource::Url(url) => self.fetch(spec, url, room, cap).await?,
            };
            total += attachment.bytes.len();
            loaded.push(attachment);
        }
        Ok(loaded)
    }

    async fn fetch(
        &self,
        spec: &AttachmentSpec,
        url: &HttpUrl,
        room: usize,
        cap: usize,
    ) -> Result<Attachment, SendError> {
        let service = format!("attachment {}", spec.filename.as_str());
        let mut response = self
            .client
            .send(self.client.request(Method::GET, url.as_str()))
            .await
            .map_err(|error| send_error(&service, error))?;
        let status = response.status();
        if !status.is_success() {
            let headers = response.headers().clone();
            read_capped(response, ERROR_ANSWER_BYTES).await;
            return Err(status_error(&service, status, &headers));
        }
        let served = response
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.split(';').next())
            .map(|essence| essence.trim().to_ascii_lowercase());
        let content_type = resolve_type(spec, served.as_deref()).to_string();
        self.check_type(spec, &content_type)?;
        // A declared length over the cap is refused before any byte is read.
        let declared_len = response
            .headers()
            .get(CONTENT_LENGTH)
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.parse::<u64>().ok());
        if declared_len.is_some_and(|len| len > room as u64) {
            return Err(over_cap(cap));
        }
        let expected = declared_len.and_then(|len| usize::try_from(len).ok());
        let mut bytes = Vec::with_capacity(expected.unwrap_or(0));
        while let Some(chunk) = response.chunk().await.map_err(|error| {
            send_error(&service, crate::egress::EgressError::from_reqwest(&error))
        })? {
            if chunk.len() > room - bytes.len() {
                return Err(over_cap(cap));
            }
            bytes.extend_from_slice(&chunk);
        }
        Ok(Attachment {
            filename: spec.filename.as_str().to_string(),
            content_type,
            bytes,
        })
    }

    fn check_type(&self, spec: &AttachmentSpec, content_type: &str) -> Result<(), SendError> {
        if self.config.allows(content_type) {
            return Ok(());
        }
        Err(SendError::permanent(format!(
            "attachment {}: {}",
            spec.filename.as_str(),
            refusal(content_type, spec.content_type.is_some())
        )))
    }
}

/// The declared type, else a served one that says something, else the
/// file name's extension.
fn resolve_type<'a>(spec: &'a AttachmentSpec, served: Option<&'a str>) -> &'a str {
    if let Some(declared) = &spec.content_type {
        return declared.as_str();
    }
    match served {
        Some(served) if !served.is_empty() && !UNKNOWN_TYPES.contains(&served) => served,
        _ => guess_from_filename(spec.filename.as_str()),
    }
}

fn over_cap(cap: usize) -> SendError {
    SendError::permanent(format!(
        "attachments exceed this tenant's cap of {cap} bytes"
    ))
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use axum::Router;
    use axum::body::{Body, Bytes};
    use axum::http::{StatusCode, header};
    use axum::response::{IntoResponse, Redirect};
    use axum::routing::get;
    use serde_json::json;

    use super::*;

    const PDF: &[u8] = b"%PDF-1.4 a tiny document";

    fn tenant(id: &str) -> TenantId {
        TenantId::parse(id).unwrap()
    }

    fn spec(value: serde_json::Value) -> AttachmentSpec {
        serde_json::from_value(value).unwrap()
    }

    fn config() -> AttachmentsConfig {
        AttachmentsConfig {
            max_bytes: 4096,
            tenant_max_bytes: BTreeMap::from([(tenant("t_big"), 64 * 1024)]),
            fetch_timeout_seconds: 2,
            ..AttachmentsConfig::default()
        }
    }

    /// The test server listens on loopback, which the operator allows here.
    fn loopback_allowed() -> Attachments {
        let egress = Egress::new(&crate::egress::EgressConfig {
            allow: vec!["127.0.0.0/8".parse().unwrap()],
        });
        Attachments::new(&config(), &egress)
    }

    /// A file server with one route per behaviour; `/endless` counts what it produced.
    async fn server(produced: Arc<AtomicUsize>) -> String {
        let app = Router::new()
            .route(
                "/invoice",
                get(|| async { ([(header::CONTENT_TYPE, "application/pdf")], PDF) }),
            )
            .route(
                "/unnamed",
                get(|| async { ([(header::CONTENT_TYPE, "application/octet-stream")], PDF) }),
            )
            .route(
                "/page",
                get(|| async {
                    (
                        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
                        "<p>hi</p>",
                    )
                }),
            )
            .route("/missing", get(|| async { StatusCode::NOT_FOUND }))
            .route("/moved", get(|| async { Redirect::temporary("/invoice") }))
            .route("/loop", get(|| async { Redirect::temporary("/loop") }))
            .route(
                "/busy",
                get(|| async {
                    (
                        StatusCode::SERVICE_UNAVAILABLE,
                        [(header::RETRY_AFTER, "7")],
                        "later",
                    )
                }),
            )
            .route(
                "/large",
                get(|| async {
                    (
                        [(header::CONTENT_TYPE, "application/pdf")],
                        vec![b'x'; 8192],
                    )
                }),
            )
            .route(
                "/slow",
                get(|| async {
                    tokio::time::sleep(Duration::from_secs(10)).await;
                    "late"
                }),
            )
            .route(
                "/endless",
                get(move || async move {
                    let chunks = futures::stream::repeat_with(move || {
                        produced.fetch_add(1024, Ordering::Relaxed);
                        Ok::<_, std::io::Error>(Bytes::from(vec![b'x'; 1024]))
                    });
                    (
                        [(header::CONTENT_TYPE, "application/pdf")],
                        Body::from_stream(chunks),
                    )
                        .into_response()
                }),
            );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        format!("http://{address}")
    }

    async fn load_one(
        url: &str,
        filename: &str,
        tenant_id: &str,
    ) -> Result<Vec<Attachment>, SendError> {
        loopback_allowed()
            .load(
                &tenant(tenant_id),
                &[spec(json!({"filename": filename, "source": {"url": url}}))],
            )
            .await
    }

    #[tokio::test]
    async fn fetches_a_url_and_decodes_inline_in_order() {
        let base = server(Arc::default()).await;
        let loaded = loopback_allowed()
            .load(
                &tenant("t_001"),
                &[
                    spec(json!({"filename": "notes.txt", "source": {"inline": "aGVsbG8="}})),
                    spec(json!({"filename": "invoice.pdf", "source": {"url": format!("{base}/invoice")}})),
                    spec(json!({"filename": "copy", "source": {"url": format!("{base}/unnamed")},
                                "content_type": "application/pdf"})),
                ],
            )
            .await
            .unwrap();
        let summary: Vec<(&str, &str, &[u8])> = loaded
            .iter()
            .map(|a| {
                (
                    a.filename.as_str(),
                    a.content_type.as_str(),
                    a.bytes.as_slice(),
                )
            })
            .collect();
        assert_eq!(
            summary,
            [
                ("notes.txt", "text/plain", b"hello".as_slice()),
                ("invoice.pdf", "application/pdf", PDF),
                ("copy", "application/pdf", PDF),
            ]
        );
    }

    #[tokio::test]
    async fn an_unknown_served_type_falls_back_to_the_file_name() {
        let base = server(Arc::default()).await;
        let loaded = load_one(&format!("{base}/unnamed"), "scan.PDF", "t_001")
            .await
            .unwrap();
        assert_eq!(loaded[0].content_type, "application/pdf");
        let error = load_one(&format!("{base}/unnamed"), "scan", "t_001")
            .await
            .unwrap_err();
        assert!(error.is_permanent(), "{error:?}");
        assert!(error.to_string().contains("give content_type"), "{error}");
    }

    #[tokio::test]
    async fn a_404_is_permanent_and_a_503_transient_with_its_retry_after() {
        let base = server(Arc::default()).await;
        let missing = load_one(&format!("{base}/missing"), "a.pdf", "t_001")
            .await
            .unwrap_err();
        assert!(missing.is_permanent(), "{missing:?}");
        assert!(missing.to_string().contains("404"), "{missing}");
        let busy = load_one(&format!("{base}/busy"), "a.pdf", "t_001")
            .await
            .unwrap_err();
        assert_eq!(
            busy,
            SendError::Transient {
                message: "attachment a.pdf answered HTTP 503 (server error)".into(),
                retry_after: Some(Duration::from_secs(7)),
            }
        );
    }

    #[tokio::test]
    async fn a_few_redirects_are_followed_and_a_loop_is_permanent() {
        let base = server(Arc::default()).await;
        let moved = load_one(&format!("{base}/moved"), "a.pdf", "t_001")
            .await
            .unwrap();
        assert_eq!(moved[0].bytes, PDF);
        let looped = load_one(&format!("{base}/loop"), "a.pdf", "t_001")
            .await
            .unwrap_err();
        assert!(looped.is_permanent(), "{looped:?}");
        assert!(looped.to_string().contains("redirects"), "{looped}");
    }

    #[tokio::test]
    async fn timeouts_and_closed_ports_are_transient() {
        let base = server(Arc::default()).await;
        let slow = load_one(&format!("{base}/slow"), "a.pdf", "t_001")
            .await
            .unwrap_err();
        assert!(!slow.is_permanent(), "{slow:?}");
        let closed = {
            let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            listener.local_addr().unwrap()
        };
        let refused = load_one(&format!("http://{closed}/a.pdf"), "a.pdf", "t_001")
            .await
            .unwrap_err();
        assert!(!refused.is_permanent(), "{refused:?}");
    }

    #[tokio::test]
    async fn a_disallowed_type_is_permanent() {
        let base = server(Arc::default()).await;
        let error = load_one(&format!("{base}/page"), "page.pdf", "t_001")
            .await
            .unwrap_err();
        assert_eq!(
            error,
            SendError::permanent("attachment page.pdf: content type text/html is not allowed")
        );
    }

    #[tokio::test]
    async fn the_tenant_cap_counts_every_attachment_and_stops_an_endless_body() {
        let produced = Arc::new(AtomicUsize::new(0));
        let base = server(produced.clone()).await;
        let large = load_one(&format!("{base}/large"), "a.pdf", "t_001")
            .await
            .unwrap_err();
        assert_eq!(
            large,
            SendError::permanent("attachments exceed this tenant's cap of 4096 bytes")
        );
        assert_eq!(
            load_one(&format!("{base}/large"), "a.pdf", "t_big")
                .await
                .unwrap()[0]
                .bytes
                .len(),
            8192
        );

        let endless = load_one(&format!("{base}/endless"), "a.pdf", "t_big")
            .await
            .unwrap_err();
        assert!(
            endless.to_string().contains("cap of 65536 bytes"),
            "{endless}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
        // Socket buffers hold a few MiB at most; an unbounded read would go on.
        assert!(produced.load(Ordering::Relaxed) < 16 * 1024 * 1024);

        // Two inline files that fit one by one but not together.
        let half =
            base64::Engine::encode(&base64::engine::general_purpose::STANDARD, vec![1u8; 3000]);
        let two = [
            spec(json!({"filename": "a.txt", "source": {"inline": half}})),
            spec(json!({"filename": "b.txt", "source": {"inline": half}})),
        ];
        let error = loopback_allowed()
            .load(&tenant("t_001"), &two)
            .await
            .unwrap_err();
        assert!(error.is_permanent(), "{error:?}");
    }

    #[test]
    fn validate_judges_inline_sizes_and_declared_types_at_request_time() {
        let config = config();
        let half =
            base64::Engine::encode(&base64::engine::general_purpose::STANDARD, vec![1u8; 3000]);
        let specs = [
            spec(json!({"filename": "a.txt", "source": {"inline": half}})),
            spec(json!({"filename": "b.bin", "source": {"inline": half}})),
            spec(
                json!({"filename": "c", "source": {"url": "https://example.com/c"},
                        "content_type": "text/html"}),
            ),
            spec(json!({"filename": "d", "source": {"url": "https://example.com/d"}})),
        ];
        let errors = config.validate(&tenant("t_001"), &specs).unwrap_err();
        assert_eq!(
            errors.at("attachments"),
            ["inline attachments total 6000 bytes, over this tenant's cap of 4096 bytes"]
        );
        assert_eq!(
            errors.at("attachments[1].content_type"),
            ["has no known type: give content_type"]
        );
        assert_eq!(
            errors.at("attachments[2].content_type"),
            ["content type text/html is not allowed"]
        );
        assert_eq!(errors.errors().len(), 3);
        assert!(config.validate(&tenant("t_big"), &specs[..1]).is_ok());
    }

    #[tokio::test]
    async fn private_addresses_are_refused_unless_allowed() {
        let base = server(Arc::default()).await;
        let port = base.rsplit(':').next().unwrap();
        let guarded = Attachments::new(&config(), &Egress::new(&Default::default()));
        for url in [
            format!("{base}/invoice"),
            format!("http://localhost:{port}/invoice"),
            format!("http://[::ffff:127.0.0.1]:{port}/invoice"),
            "http://169.254.169.254/latest/meta-data/".to_string(),
        ] {
            let specs = [spec(json!({"filename": "a.pdf", "source": {"url": url}}))];
            let error = guarded.load(&tenant("t_001"), &specs).await.unwrap_err();
            assert!(error.is_permanent(), "{url}: {error:?}");
            assert!(error.to_string().contains("refused"), "{url}: {error}");
        }
    }

    #[test]
    fn tenant_caps_override_the_default() {
        let config = config();
        assert_eq!(config.max_bytes_for(&tenant("t_001")), 4096);
        assert_eq!(config.max_bytes_for(&tenant("t_big")), 64 * 1024);
    }

    #[test]
    fn config_reads_toml_and_refuses_bad_types_and_tenants() {
        let config: AttachmentsConfig = toml::from_str(
            r#"
                tenant_max_bytes = { t_acme = 20971520 }
                allowed_content_types = ["application/pdf", "Text/CSV"]
            "#,
        )
        .unwrap();
        assert_eq!(config.max_bytes_for(&tenant("t_acme")), 20 * 1024 * 1024);
        assert_eq!(config.max_bytes_for(&tenant("t_001")), 10 * 1024 * 1024);
        assert!(config.allows("text/csv"));
        assert!(!config.allows("image/png"));
        assert!(toml::from_str::<AttachmentsConfig>("allowed_content_types = [\"pdf\"]").is_err());
        assert!(toml::from_str::<AttachmentsConfig>("tenant_max_bytes = { ACME = 1 }").is_err());
        assert!(toml::from_str::<AttachmentsConfig>("max_byte = 1").is_err());
    }
}
