//! The reqwest client behind [`Egress`]: a resolver that drops refused
//! addresses, no proxy from the environment (a proxy would connect for us,
//! unchecked), and redirects followed by hand so every hop is judged.

use std::error::Error as _;
use std::time::Duration;

use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use reqwest::header::LOCATION;
use reqwest::{Method, Request, Response, StatusCode};

use super::{Egress, EgressRefusal};

/// How one client behaves; each caller has its own timeout and agent.
#[derive(Debug, Clone)]
pub struct ClientOptions {
    /// One request (connect, send, answer) per hop; longer fails as `TimedOut`.
    pub timeout: Duration,
    pub user_agent: String,
    /// Redirects followed by a GET; 0 hands a redirect back as the answer
    /// (a POST is never redirected: it would be re-sent somewhere unchecked).
    pub max_redirects: usize,
}

/// Why a call got no usable answer: a reason class only, never a URL (they
/// often carry tokens) nor anything the target said.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EgressError {
    #[error("refused: {0}")]
    Refused(#[from] EgressRefusal),
    #[error("the host name did not resolve")]
    Unresolved,
    #[error("timed out")]
    TimedOut,
    #[error("connection refused")]
    ConnectionRefused,
    #[error("could not connect")]
    Unreachable,
    #[error("more than {0} redirects")]
    TooManyRedirects(usize),
    #[error("a redirect without a valid Location")]
    BadRedirect,
    #[error("the request could not be built")]
    Request,
    #[error("the connection failed")]
    Failed,
}

impl EgressError {
    /// Worth trying again later: the network, not the request, failed.
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            EgressError::Unresolved
                | EgressError::TimedOut
                | EgressError::ConnectionRefused
                | EgressError::Unreachable
                | EgressError::Failed
        )
    }

    /// Classifies a reqwest error by its causes, keeping none of their text.
    pub fn from_reqwest(error: &reqwest::Error) -> EgressError {
        let mut source = error.source();
        while let Some(inner) = source {
            if let Some(refused) = inner.downcast_ref::<EgressRefusal>() {
                return EgressError::Refused(refused.clone());
            }
            if let Some(io) = inner.downcast_ref::<std::io::Error>()
                && io.kind() == std::io::ErrorKind::ConnectionRefused
            {
                return EgressError::ConnectionRefused;
            }
            source = inner.source();
        }
        if error.is_timeout() {
            EgressError::TimedOut
        } else if error.is_builder() {
            EgressError::Request
        } else if error.is_connect() {
            EgressError::Unreachable
        } else {
            EgressError::Failed
        }
    }
}

/// A client that only reaches what the policy admits.
#[derive(Clone, Debug)]
pub struct EgressClient {
    egress: Egress,
    http: reqwest::Client,
    max_redirects: usize,
}

impl Egress {
    pub fn client(&self, options: &ClientOptions) -> Result<EgressClient, EgressError> {
        let http = reqwest::Client::builder()
            .timeout(options.timeout.max(Duration::from_millis(1)))
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .dns_resolver(Guarded(self.clone()))
            .user_agent(options.user_agent.as_str())
            .build()
            .map_err(|_| EgressError::Request)?;
        Ok(EgressClient {
            egress: self.clone(),
            http,
            max_redirects: options.max_redirects,
        })
    }
}

impl EgressClient {
    /// A request to fill in and hand to [`EgressClient::send`].
    pub fn request(&self, method: Method, url: &str) -> reqwest::RequestBuilder {
        self.http.request(method, url)
    }

    /// Judges the target, sends, and follows a GET's redirects (judging each
    /// hop) up to the client's limit. A redirect past the limit fails; with a
    /// limit of 0 it is the answer.
    pub async fn send(&self, request: reqwest::RequestBuilder) -> Result<Response, EgressError> {
        let mut request = request.build().map_err(|_| EgressError::Request)?;
        let mut hops = 0;
        loop {
            self.egress.check(request.url()).await?;
            let next = follow_up(&request);
            let response = self
                .http
                .execute(request)
                .await
                .map_err(|error| EgressError::from_reqwest(&error))?;
            let Some(mut next) = next.filter(|_| self.max_redirects > 0) else {
                return Ok(response);
            };
            if !is_redirect(response.status()) {
                return Ok(response);
            }
            if hops == self.max_redirects {
                return Err(EgressError::TooManyRedirects(self.max_redirects));
            }
            hops += 1;
            let location = response
                .headers()
                .get(LOCATION)
                .and_then(|value| value.to_str().ok())
                .and_then(|value| response.url().join(value).ok())
                .ok_or(EgressError::BadRedirect)?;
            *next.url_mut() = location;
            request = next;
        }
    }
}

/// A plain client for a server the operator configured (an ntfy server,
/// SNS's certificate hosts): not guarded, since no tenant chose the URL.
/// Redirects are not followed: a redirected POST would be re-sent as a GET
/// or to a host nobody configured.
pub fn operator_client(timeout_seconds: u64, user_agent: &str) -> reqwest::Result<reqwest::Client> {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(timeout_seconds))
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(user_agent)
        .build()
}

/// The start of an answer, at most `max_bytes`; a failed read ends it early
/// because the status already decided the outcome. Reading it lets the
/// connection go back to the pool.
pub async fn read_capped(mut response: Response, max_bytes: usize) -> Vec<u8> {
    let mut body = Vec::new();
    while body.len() < max_bytes {
        match response.chunk().await {
            Ok(Some(chunk)) => {
                let room = max_bytes - body.len();
                body.extend_from_slice(&chunk[..chunk.len().min(room)]);
            }
            Ok(None) | Err(_) => break,
        }
    }
    body
}

/// The same GET to another URL; other methods are not followed.
fn follow_up(request: &Request) -> Option<Request> {
    (request.method() == Method::GET)
        .then(|| request.try_clone())
        .flatten()
}

fn is_redirect(status: StatusCode) -> bool {
    matches!(status.as_u16(), 301 | 302 | 303 | 307 | 308)
}

/// The connect-time resolver: the policy's lookup with refused addresses
/// dropped. It never learns the port, so a `IP:PORT` rule admits its address
/// here on any port; the port was judged just before by `check`.
struct Guarded(Egress);

impl Resolve for Guarded {
    fn resolve(&self, name: Name) -> Resolving {
        let egress = self.0.clone();
        let host = name.as_str().to_string();
        Box::pin(async move {
            let admitted: Vec<std::net::SocketAddr> = egress
                .lookup
                .lookup(&host)
                .await?
                .into_iter()
                .filter(|ip| egress.admits(*ip))
                .map(|ip| std::net::SocketAddr::new(ip, 0))
                .collect();
            if admitted.is_empty() {
                return Err(EgressRefusal::Name { host }.into());
            }
            Ok(Box::new(admitted.into_iter()) as Addrs)
        })
    }
}
