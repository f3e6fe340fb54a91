//! `[egress] allow`: the operator's own networks that tenants' URLs may
//! reach after all, as `IP:PORT` (`[IPv6]:PORT`) or a network (`10.20.0.0/16`,
//! or one address).

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;

use ipnet::IpNet;

/// One allow rule; parsing is the only way in, so a bad entry stops the
/// configuration from loading.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum AllowRule {
    /// One port of one address.
    Socket(SocketAddr),
    /// Every port of every address in the network.
    Network(IpNet),
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "[egress] allow: {0:?} is neither IP:PORT ([IPv6]:PORT) nor a network (10.20.0.0/16, or one IP)"
)]
pub struct BadAllowRule(String);

impl AllowRule {
    /// Whether a connection to `ip` on `port` is allowed by this rule.
    pub fn allows(&self, ip: IpAddr, port: u16) -> bool {
        let ip = ip.to_canonical();
        match self {
            AllowRule::Socket(socket) => socket.ip().to_canonical() == ip && socket.port() == port,
            AllowRule::Network(net) => net.contains(&ip),
        }
    }

    /// Whether the rule allows `ip` on some port: all a resolver can check,
    /// because it never learns the port.
    pub fn allows_some_port(&self, ip: IpAddr) -> bool {
        match self {
            AllowRule::Socket(socket) => socket.ip().to_canonical() == ip.to_canonical(),
            AllowRule::Network(net) => net.contains(&ip.to_canonical()),
        }
    }
}

impl FromStr for AllowRule {
    type Err = BadAllowRule;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        if let Ok(socket) = s.parse::<SocketAddr>() {
            return Ok(AllowRule::Socket(socket));
        }
        if let Ok(net) = s.parse::<IpNet>() {
            return Ok(AllowRule::Network(net.trunc()));
        }
        if let Ok(ip) = s.parse::<IpAddr>() {
            return Ok(AllowRule::Network(IpNet::from(ip)));
        }
        Err(BadAllowRule(s.to_string()))
    }
}

impl TryFrom<String> for AllowRule {
    type Error = BadAllowRule;

    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl fmt::Display for AllowRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AllowRule::Socket(socket) => socket.fmt(f),
            AllowRule::Network(net) => net.fmt(f),
        }
    }
}

impl From<AllowRule> for String {
    fn from(rule: AllowRule) -> Self {
        rule.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(s: &str) -> AllowRule {
        s.parse().unwrap()
    }

    #[test]
    fn sockets_allow_one_port_and_networks_every_port() {
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        let socket = rule("127.0.0.1:9000");
        assert!(socket.allows(ip("127.0.0.1"), 9000));
        assert!(socket.allows(ip("::ffff:127.0.0.1"), 9000));
        assert!(!socket.allows(ip("127.0.0.1"), 9001));
        assert!(socket.allows_some_port(ip("127.0.0.1")));
        assert!(!socket.allows_some_port(ip("127.0.0.2")));

        let net = rule("10.20.0.0/16");
        assert!(net.allows(ip("10.20.3.4"), 443));
        assert!(!net.allows(ip("10.21.0.1"), 443));
        assert!(rule("[::1]:8080").allows(ip("::1"), 8080));
        assert!(rule("fd00::/8").allows(ip("fd12::1"), 1));
        assert!(rule("192.168.1.5").allows(ip("192.168.1.5"), 22));
        assert_eq!(rule("10.20.1.2/16").to_string(), "10.20.0.0/16");
    }

    #[test]
    fn anything_else_is_refused_with_the_entry_named() {
        for bad in ["localhost:80", "10.0.0.0/33", "", "127.0.0.1:port", "*"] {
            let error = bad.parse::<AllowRule>().unwrap_err().to_string();
            assert!(error.contains(&format!("{bad:?}")), "{error}");
        }
    }
}
