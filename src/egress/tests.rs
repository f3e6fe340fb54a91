use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::response::Redirect;
use axum::routing::get;
use reqwest::Method;

use super::*;

/// Answers each lookup with the next scripted answer; the last one repeats.
struct Scripted(Mutex<VecDeque<Vec<IpAddr>>>);

impl Scripted {
    fn new(answers: &[&[&str]]) -> Arc<Scripted> {
        Arc::new(Scripted(Mutex::new(
            answers
                .iter()
                .map(|ips| ips.iter().map(|ip| ip.parse().unwrap()).collect())
                .collect(),
        )))
    }
}

impl Lookup for Scripted {
    fn lookup(&self, _host: &str) -> BoxFuture<'static, io::Result<Vec<IpAddr>>> {
        let mut answers = self.0.lock().unwrap();
        let answer = if answers.len() > 1 {
            answers.pop_front().unwrap()
        } else {
            answers.front().cloned().unwrap_or_default()
        };
        Box::pin(async move { Ok(answer) })
    }
}

fn allow(rules: &[&str]) -> EgressConfig {
    EgressConfig {
        allow: rules.iter().map(|rule| rule.parse().unwrap()).collect(),
    }
}

fn options(max_redirects: usize) -> ClientOptions {
    ClientOptions {
        timeout: Duration::from_secs(5),
        user_agent: "test".into(),
        max_redirects,
    }
}

/// A server counting its requests; `/to?url=...` redirects there.
async fn server(hits: Arc<AtomicUsize>) -> SocketAddr {
    let app = Router::new()
        .route(
            "/",
            get(move || async move {
                hits.fetch_add(1, Ordering::SeqCst);
                "internal secret"
            }),
        )
        .route(
            "/to",
            get(
                |axum::extract::Query(q): axum::extract::Query<
                    std::collections::HashMap<String, String>,
                >| async move { Redirect::temporary(&q["url"]) },
            ),
        )
        .route("/loop", get(|| async { Redirect::temporary("/loop") }));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    address
}

async fn get_url(client: &EgressClient, url: &str) -> Result<reqwest::Response, EgressError> {
    client.send(client.request(Method::GET, url)).await
}

#[tokio::test]
async fn a_name_that_rebinds_to_loopback_passes_registration_but_never_connects() {
    let hits = Arc::new(AtomicUsize::new(0));
    let target = server(hits.clone()).await;
    // Registration and the check before the request see a public address;
    // the connection's own lookup then gets loopback.
    let egress = Egress::with_lookup(
        &EgressConfig::default(),
        Scripted::new(&[&["93.184.216.34"], &["93.184.216.34"], &["127.0.0.1"]]),
    );
    let url = format!("http://rebind.example:{}/", target.port());
    assert_eq!(egress.check_url(&url.parse().unwrap()).await, Ok(()));
    let client = egress.client(&options(0)).unwrap();
    let error = get_url(&client, &url).await.unwrap_err();
    assert_eq!(
        error,
        EgressError::Refused(EgressRefusal::Name {
            host: "rebind.example".into()
        })
    );
    assert_eq!(hits.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn loopback_metadata_and_names_resolving_to_them_are_refused_at_registration() {
    let egress = Egress::with_lookup(&EgressConfig::default(), Scripted::new(&[&["127.0.0.1"]]));
    for (url, kind) in [
        ("http://127.0.0.1:9000/hook", Blocked::Loopback),
        (
            "http://169.254.169.254/latest/meta-data/",
            Blocked::Metadata,
        ),
        ("http://[::ffff:127.0.0.1]/", Blocked::Loopback),
        ("http://[fd00:ec2::254]/", Blocked::Metadata),
        ("http://localhost:8080/", Blocked::Loopback),
    ] {
        let refused = egress.check_url(&url.parse().unwrap()).await.unwrap_err();
        assert!(
            matches!(refused, EgressRefusal::Address { kind: k, .. } if k == kind),
            "{url}: {refused:?}"
        );
        assert!(refused.to_string().contains("[egress] allow"), "{refused}");
    }
    let public = Egress::with_lookup(&EgressConfig::default(), Scripted::new(&[&["8.8.8.8"]]));
    assert_eq!(
        public
            .check_url(&"https://hooks.example/x".parse().unwrap())
            .await,
        Ok(())
    );
    // One refused address among several is enough.
    let mixed = Egress::with_lookup(
        &EgressConfig::default(),
        Scripted::new(&[&["8.8.8.8", "10.0.0.1"]]),
    );
    assert!(
        mixed
            .check_url(&"https://hooks.example/x".parse().unwrap())
            .await
            .is_err()
    );
}

#[tokio::test]
async fn an_allowed_ip_and_port_works_and_another_port_of_the_same_ip_is_refused() {
    let hits = Arc::new(AtomicUsize::new(0));
    let allowed = server(hits.clone()).await;
    let other = server(hits.clone()).await;
    let egress = Egress::new(&allow(&[&allowed.to_string()]));
    let client = egress.client(&options(0)).unwrap();
    let answer = get_url(&client, &format!("http://{allowed}/"))
        .await
        .unwrap();
    assert_eq!(answer.text().await.unwrap(), "internal secret");
    let refused = get_url(&client, &format!("http://{other}/"))
        .await
        .unwrap_err();
    assert!(
        matches!(refused, EgressError::Refused(EgressRefusal::Address { port, .. }) if port == other.port()),
        "{refused:?}"
    );
    assert_eq!(hits.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn every_redirect_hop_is_judged_and_loops_end() {
    let hits = Arc::new(AtomicUsize::new(0));
    let allowed = server(Arc::default()).await;
    let internal = server(hits.clone()).await;
    let egress = Egress::new(&allow(&[&allowed.to_string()]));
    let client = egress.client(&options(3)).unwrap();
    for target in [
        format!("http://{internal}/"),
        format!("http://localhost:{}/", internal.port()),
        "http://169.254.169.254/latest/meta-data/".to_string(),
    ] {
        let url = format!("http://{allowed}/to?url={target}");
        let error = get_url(&client, &url).await.unwrap_err();
        assert!(
            matches!(error, EgressError::Refused(_)),
            "{target}: {error:?}"
        );
        assert!(!error.to_string().contains("internal secret"));
    }
    assert_eq!(hits.load(Ordering::SeqCst), 0);
    let looped = get_url(&client, &format!("http://{allowed}/loop"))
        .await
        .unwrap_err();
    assert_eq!(looped, EgressError::TooManyRedirects(3));
    // A client that follows nothing hands the redirect back.
    let unfollowed = egress.client(&options(0)).unwrap();
    let answer = get_url(&unfollowed, &format!("http://{allowed}/loop"))
        .await
        .unwrap();
    assert_eq!(answer.status(), reqwest::StatusCode::TEMPORARY_REDIRECT);
}

#[tokio::test]
async fn network_failures_are_classified_without_their_text() {
    let closed = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap()
    };
    let egress = Egress::new(&allow(&["127.0.0.0/8"]));
    let client = egress.client(&options(0)).unwrap();
    let error = get_url(&client, &format!("http://{closed}/"))
        .await
        .unwrap_err();
    assert_eq!(error, EgressError::ConnectionRefused);
    assert!(error.is_transient());
    let refused = get_url(&client, "ftp://example.com/").await.unwrap_err();
    assert_eq!(refused, EgressError::Refused(EgressRefusal::Scheme));
    assert!(!refused.is_transient());
}

#[test]
fn config_parses_rules_and_names_a_bad_one() {
    let config: EgressConfig =
        toml::from_str(r#"allow = ["127.0.0.1:9000", "10.20.0.0/16", "[::1]:8080"]"#).unwrap();
    assert_eq!(config.allow.len(), 3);
    let error = toml::from_str::<EgressConfig>(r#"allow = ["intranet:80"]"#)
        .unwrap_err()
        .to_string();
    assert!(error.contains("\"intranet:80\""), "{error}");
    assert!(toml::from_str::<EgressConfig>("allowed = []").is_err());
}
