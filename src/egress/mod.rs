//! The guarded outbound HTTP client (docs/security.md): every call Herald makes
//! to a URL a tenant gave (webhook endpoints, callbacks, CSV and attachment
//! URLs) goes through it, so none reaches the operator's own network.
//!
//! Three checks, because a name can change its answer: a URL is judged when
//! it is registered ([`Egress::check_url`]); every (address, port) a name
//! resolves to is judged again before each request and each redirect hop;
//! and the client's own resolver drops refused addresses at connect time,
//! so a name that rebinds to 127.0.0.1 between the check and the connection
//! still cannot get there. The operator opts in to their own networks with
//! `[egress] allow`. Errors name a reason class only, never what a refused
//! or failed target answered.
//!
//! Beside it, what every caller of an outside service shares: a plain client
//! for the operator's own servers ([`operator_client`]), a size-capped read
//! of an answer ([`read_capped`]), and [`SendError`], a failed call
//! classified for the retry policy.

mod address;
mod allow;
mod client;
mod send_error;

use std::io;
use std::net::IpAddr;
use std::sync::Arc;

use futures::future::BoxFuture;
use serde::{Deserialize, Serialize};

pub use self::address::{Blocked, blocked};
pub use self::allow::{AllowRule, BadAllowRule};
pub use self::client::{ClientOptions, EgressClient, EgressError, operator_client, read_capped};
pub use self::send_error::{SendError, send_error, status_error};

/// `[egress]` in the configuration.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EgressConfig {
    /// Non-public addresses tenants' URLs may reach anyway: `IP:PORT`,
    /// `[IPv6]:PORT` or a network. Empty: none.
    pub allow: Vec<AllowRule>,
}

/// Name resolution, replaceable so a test can script a name that changes
/// its answer.
pub trait Lookup: Send + Sync + 'static {
    fn lookup(&self, host: &str) -> BoxFuture<'static, io::Result<Vec<IpAddr>>>;
}

/// The system resolver (`getaddrinfo`, as reqwest's own default).
struct SystemLookup;

impl Lookup for SystemLookup {
    fn lookup(&self, host: &str) -> BoxFuture<'static, io::Result<Vec<IpAddr>>> {
        let host = host.to_string();
        Box::pin(async move {
            Ok(tokio::net::lookup_host((host.as_str(), 0))
                .await?
                .map(|address| address.ip())
                .collect())
        })
    }
}

/// A URL refused because of where it leads.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EgressRefusal {
    #[error(
        "resolves to a {kind} address ({ip}, port {port}); the operator can allow it with [egress] allow"
    )]
    Address {
        kind: Blocked,
        ip: IpAddr,
        port: u16,
    },
    /// At connect time the port is unknown.
    #[error("{host} resolves only to non-public addresses")]
    Name { host: String },
    #[error("only http and https URLs are fetched")]
    Scheme,
    #[error("the URL has no host")]
    NoHost,
}

/// The address policy and the resolver; cheap to clone, one per process.
#[derive(Clone)]
pub struct Egress {
    allow: Arc<[AllowRule]>,
    lookup: Arc<dyn Lookup>,
}

impl std::fmt::Debug for Egress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Egress")
            .field("allow", &self.allow)
            .finish_non_exhaustive()
    }
}

/// Nothing private reachable (tests, tools).
impl Default for Egress {
    fn default() -> Self {
        Egress::new(&EgressConfig::default())
    }
}

impl Egress {
    pub fn new(config: &EgressConfig) -> Egress {
        Egress::with_lookup(config, Arc::new(SystemLookup))
    }

    pub fn with_lookup(config: &EgressConfig, lookup: Arc<dyn Lookup>) -> Egress {
        Egress {
            allow: config.allow.clone().into(),
            lookup,
        }
    }

    /// The registration-time check: a clear refusal for a URL that leads to
    /// a refused address. A name that does not resolve (yet) passes: it is
    /// judged again before every request.
    pub async fn check_url(&self, url: &url::Url) -> Result<(), EgressRefusal> {
        match self.check(url).await {
            Ok(()) | Err(EgressError::Unresolved) => Ok(()),
            Err(EgressError::Refused(refusal)) => Err(refusal),
            Err(_) => Ok(()),
        }
    }

    /// Every address the URL's host resolves to, with the URL's port,
    /// must be public or allowed.
    async fn check(&self, url: &url::Url) -> Result<(), EgressError> {
        if !matches!(url.scheme(), "http" | "https") {
            return Err(EgressRefusal::Scheme.into());
        }
        let port = url.port_or_known_default().unwrap_or(80);
        let addresses = match url.host() {
            Some(url::Host::Ipv4(ip)) => vec![IpAddr::V4(ip)],
            Some(url::Host::Ipv6(ip)) => vec![IpAddr::V6(ip)],
            Some(url::Host::Domain(name)) => self
                .lookup
                .lookup(name)
                .await
                .map_err(|_| EgressError::Unresolved)?,
            None => return Err(EgressRefusal::NoHost.into()),
        };
        if addresses.is_empty() {
            return Err(EgressError::Unresolved);
        }
        for ip in addresses {
            self.judge(ip, port)?;
        }
        Ok(())
    }

    fn judge(&self, ip: IpAddr, port: u16) -> Result<(), EgressRefusal> {
        match blocked(ip) {
            Some(kind) if !self.allow.iter().any(|rule| rule.allows(ip, port)) => {
                Err(EgressRefusal::Address { kind, ip, port })
            }
            _ => Ok(()),
        }
    }

    /// The connect-time judgement, without a port.
    fn admits(&self, ip: IpAddr) -> bool {
        blocked(ip).is_none() || self.allow.iter().any(|rule| rule.allows_some_port(ip))
    }
}

#[cfg(test)]
mod tests;
