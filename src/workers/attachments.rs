//! Email attachments: fetched by URL at send time (size and type limits) or
//! decoded from base64, checked against the tenant's size cap (seed 002).
//!
//! URL bodies are read in chunks and dropped as soon as they pass the cap, so
//! a huge or endless answer costs at most the cap in memory.

use std::error::Error as _;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use reqwest::header::{CONTENT_LENGTH, CONTENT_TYPE};

use crate::domain::attachment::{
    AttachmentSource, AttachmentSpec, AttachmentsConfig, UNKNOWN_TYPES, guess_from_filename,
    refusal,
};
use crate::domain::values::{HttpUrl, TenantId};
use crate::providers::webhook::{read_capped, request_error, status_error};
use crate::providers::{Attachment, SendError};

/// Redirects followed before a fetch fails.
const MAX_REDIRECTS: usize = 3;
/// How much of an error answer is quoted in the failure.
const ERROR_ANSWER_BYTES: usize = 1024;

/// Loads the attachments of one email; shared by every dispatch loop.
#[derive(Debug, Clone)]
pub struct Attachments {
    client: reqwest::Client,
    config: AttachmentsConfig,
}

impl Attachments {
    pub fn new(config: &AttachmentsConfig) -> Self {
        let allow_private = config.allow_private_networks;
        let mut builder = reqwest::Client::builder()
            .timeout(Duration::from_secs(config.fetch_timeout_seconds.max(1)))
            // Storage services redirect to a signed or regional URL now and then.
            .redirect(reqwest::redirect::Policy::custom(move |attempt| {
                if attempt.previous().len() > MAX_REDIRECTS {
                    attempt.error(format!("more than {MAX_REDIRECTS} redirects"))
                } else if let Err(refused) = check_literal_host(attempt.url(), allow_private) {
                    attempt.error(refused)
                } else {
                    attempt.follow()
                }
            }))
            .user_agent(concat!("Herald-Attachments/", env!("CARGO_PKG_VERSION")));
        if !allow_private {
            builder = builder.dns_resolver(PublicOnly);
        }
        let client = builder
            .build()
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
        check_literal_host(url.as_url(), self.config.allow_private_networks)
            .map_err(|refused| SendError::permanent(format!("{service}: {refused}")))?;
        let mut response = self
            .client
            .get(url.as_str())
            .send()
            .await
            .map_err(|error| fetch_error(&service, error))?;
        let status = response.status();
        if !status.is_success() {
            let headers = response.headers().clone();
            let answer = read_capped(response, ERROR_ANSWER_BYTES).await;
            return Err(status_error(&service, status, &headers, &answer, &[]));
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
        while let Some(chunk) = response
            .chunk()
            .await
            .map_err(|error| fetch_error(&service, error))?
        {
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

/// A refused address or a redirect loop fails for good; anything else as a
/// webhook call would.
fn fetch_error(service: &str, error: reqwest::Error) -> SendError {
    let mut source = error.source();
    while let Some(inner) = source {
        if let Some(refused) = inner.downcast_ref::<PrivateAddress>() {
            return SendError::permanent(format!("{service}: {refused}"));
        }
        if error.is_redirect() && inner.source().is_none() {
            return SendError::permanent(format!("{service}: {inner}"));
        }
        source = inner.source();
    }
    request_error(service, error)
}

/// A URL that leads to a non-public address.
#[derive(Debug, thiserror::Error)]
#[error("{0} is not a public address")]
struct PrivateAddress(String);

/// Hosts written as IP addresses never reach the resolver, so they are
/// checked here, on the first URL and on every redirect.
fn check_literal_host(url: &url::Url, allow_private: bool) -> Result<(), PrivateAddress> {
    let ip = match url.host() {
        Some(url::Host::Ipv4(ip)) => IpAddr::V4(ip),
        Some(url::Host::Ipv6(ip)) => IpAddr::V6(ip),
        _ => return Ok(()),
    };
    if allow_private || is_public(ip) {
        Ok(())
    } else {
        Err(PrivateAddress(ip.to_string()))
    }
}

/// The system resolver with every non-public address dropped, so a name
/// cannot lead to an internal service either, even one that changes its
/// answer between a check and the connection.
struct PublicOnly;

impl Resolve for PublicOnly {
    fn resolve(&self, name: Name) -> Resolving {
        let host = name.as_str().to_string();
        Box::pin(async move {
            let public: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0))
                .await?
                .filter(|address| is_public(address.ip()))
                .collect();
            if public.is_empty() {
                return Err(PrivateAddress(host).into());
            }
            Ok(Box::new(public.into_iter()) as Addrs)
        })
    }
}

/// Not loopback, private, link-local, shared, documentation, multicast or
/// otherwise reserved (the stable subset of `IpAddr::is_global`).
fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(ip) => is_public_v4(ip),
        IpAddr::V6(ip) => match ip.to_ipv4_mapped() {
            Some(mapped) => is_public_v4(mapped),
            None => is_public_v6(ip),
        },
    }
}

fn is_public_v4(ip: Ipv4Addr) -> bool {
    let [a, b, ..] = ip.octets();
    !(ip.is_unspecified()
        || ip.is_loopback()
        || ip.is_private()
        || ip.is_link_local()
        || ip.is_broadcast()
        || ip.is_documentation()
        || ip.is_multicast()
        || a == 0
        || a >= 240
        // 100.64.0.0/10, carrier-grade NAT; 198.18.0.0/15, benchmarking.
        || (a == 100 && (64..128).contains(&b))
        || (a == 198 && (b == 18 || b == 19)))
}

fn is_public_v6(ip: Ipv6Addr) -> bool {
    let first = ip.segments()[0];
    !(ip.is_unspecified()
        || ip.is_loopback()
        || ip.is_multicast()
        // fc00::/7 unique local, fe80::/10 link-local, 2001:db8::/32 documentation.
        || (first & 0xfe00) == 0xfc00
        || (first & 0xffc0) == 0xfe80
        || (first == 0x2001 && ip.segments()[1] == 0x0db8))
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
            // The test server listens on loopback.
            allow_private_networks: true,
            ..AttachmentsConfig::default()
        }
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
        Attachments::new(&config())
            .load(
                &tenant(tenant_id),
                &[spec(json!({"filename": filename, "source": {"url": url}}))],
            )
            .await
    }

    #[tokio::test]
    async fn fetches_a_url_and_decodes_inline_in_order() {
        let base = server(Arc::default()).await;
        let loaded = Attachments::new(&config())
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
                message: "attachment a.pdf answered 503 Service Unavailable: later".into(),
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
        let error = Attachments::new(&config())
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
        let guarded = Attachments::new(&AttachmentsConfig {
            allow_private_networks: false,
            ..config()
        });
        for url in [
            format!("{base}/invoice"),
            format!("http://localhost:{port}/invoice"),
            format!("http://[::ffff:127.0.0.1]:{port}/invoice"),
            "http://169.254.169.254/latest/meta-data/".to_string(),
        ] {
            let specs = [spec(json!({"filename": "a.pdf", "source": {"url": url}}))];
            let error = guarded.load(&tenant("t_001"), &specs).await.unwrap_err();
            assert!(error.is_permanent(), "{url}: {error:?}");
            assert!(
                error.to_string().contains("is not a public address"),
                "{url}: {error}"
            );
        }
    }

    #[test]
    fn only_global_addresses_are_public() {
        for public in [
            "93.184.216.34",
            "8.8.8.8",
            "2606:4700::1111",
            "::ffff:8.8.8.8",
        ] {
            assert!(is_public(public.parse().unwrap()), "{public}");
        }
        for private in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "255.255.255.255",
            "224.0.0.1",
            "::1",
            "::",
            "fd00::1",
            "fe80::1",
            "::ffff:10.0.0.1",
            "2001:db8::1",
        ] {
            assert!(!is_public(private.parse().unwrap()), "{private}");
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
