//! Which addresses a tenant's URL may never reach: everything that is not a
//! global unicast address, and the cloud metadata services.
//!
//! `IpAddr::is_global` would say most of this but is still unstable, and it
//! has no notion of metadata, NAT64 or 6to4 (prefixes that lead back into
//! IPv4 networks), so the ranges are listed here.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Why an address is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Blocked {
    Unspecified,
    Loopback,
    /// RFC 1918, IPv6 unique local (fc00::/7) and site-local.
    Private,
    LinkLocal,
    /// 100.64.0.0/10, carrier-grade NAT.
    Shared,
    Multicast,
    Broadcast,
    Documentation,
    Benchmarking,
    /// Reserved, IETF protocol assignments, outside the allocated unicast space.
    Reserved,
    /// 169.254.169.254 and fd00:ec2::254: credentials of the machine's cloud role.
    Metadata,
    /// 64:ff9b::/96 and 64:ff9b:1::/48 translate to IPv4 addresses.
    Nat64,
    /// 2002::/16 embeds an IPv4 address; Teredo (2001::/32) as well.
    SixToFour,
}

impl fmt::Display for Blocked {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Blocked::Unspecified => "unspecified",
            Blocked::Loopback => "loopback",
            Blocked::Private => "private",
            Blocked::LinkLocal => "link-local",
            Blocked::Shared => "shared (carrier-grade NAT)",
            Blocked::Multicast => "multicast",
            Blocked::Broadcast => "broadcast",
            Blocked::Documentation => "documentation",
            Blocked::Benchmarking => "benchmarking",
            Blocked::Reserved => "reserved",
            Blocked::Metadata => "cloud metadata",
            Blocked::Nat64 => "NAT64",
            Blocked::SixToFour => "6to4",
        })
    }
}

/// `None` for a public address; otherwise the kind of address it is.
/// IPv4-mapped and IPv4-compatible IPv6 addresses are judged as the IPv4
/// address they carry.
pub fn blocked(ip: IpAddr) -> Option<Blocked> {
    match ip {
        IpAddr::V4(ip) => blocked_v4(ip),
        IpAddr::V6(ip) => blocked_v6(ip),
    }
}

fn blocked_v4(ip: Ipv4Addr) -> Option<Blocked> {
    let [a, b, c, _] = ip.octets();
    let kind = if ip.is_unspecified() || a == 0 {
        Blocked::Unspecified
    } else if ip.is_loopback() {
        Blocked::Loopback
    } else if ip.is_private() {
        Blocked::Private
    } else if ip == Ipv4Addr::new(169, 254, 169, 254) {
        Blocked::Metadata
    } else if ip.is_link_local() {
        Blocked::LinkLocal
    } else if a == 100 && (64..128).contains(&b) {
        Blocked::Shared
    } else if ip.is_broadcast() {
        Blocked::Broadcast
    } else if ip.is_multicast() {
        Blocked::Multicast
    } else if ip.is_documentation() {
        Blocked::Documentation
    } else if a == 198 && (b == 18 || b == 19) {
        Blocked::Benchmarking
    } else if a >= 240 || (a == 192 && b == 0 && c == 0) || (a == 192 && b == 88 && c == 99) {
        // 240/4 reserved, 192.0.0.0/24 IETF assignments, 192.88.99.0/24 6to4 relays.
        Blocked::Reserved
    } else {
        return None;
    };
    Some(kind)
}

fn blocked_v6(ip: Ipv6Addr) -> Option<Blocked> {
    let s = ip.segments();
    if ip.is_unspecified() {
        return Some(Blocked::Unspecified);
    }
    if ip.is_loopback() {
        return Some(Blocked::Loopback);
    }
    // ::ffff:a.b.c.d (mapped) and ::a.b.c.d (compatible, deprecated).
    if let Some(v4) = ip.to_ipv4() {
        return blocked_v4(v4);
    }
    let kind = if ip == Ipv6Addr::new(0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x254) {
        Blocked::Metadata
    } else if ip.is_multicast() {
        Blocked::Multicast
    } else if (s[0] & 0xfe00) == 0xfc00 || (s[0] & 0xffc0) == 0xfec0 {
        Blocked::Private
    } else if (s[0] & 0xffc0) == 0xfe80 {
        Blocked::LinkLocal
    } else if s[0] == 0x64 && s[1] == 0xff9b && (s[2..6] == [0, 0, 0, 0] || s[2] == 1) {
        Blocked::Nat64
    } else if s[0] == 0x2002 || (s[0] == 0x2001 && s[1] == 0) {
        Blocked::SixToFour
    } else if (s[0] == 0x2001 && s[1] == 0x0db8) || (s[0] & 0xfff0) == 0x3ff0 {
        // 2001:db8::/32 and 3fff::/20.
        Blocked::Documentation
    } else if s[0] == 0x2001 && s[1] == 2 && s[2] == 0 {
        Blocked::Benchmarking
    } else if (s[0] & 0xe000) != 0x2000 {
        // Only 2000::/3 is allocated as global unicast.
        Blocked::Reserved
    } else {
        return None;
    };
    Some(kind)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kind(ip: &str) -> Option<Blocked> {
        blocked(ip.parse().unwrap())
    }

    #[test]
    fn global_unicast_addresses_are_public() {
        for public in [
            "93.184.216.34",
            "8.8.8.8",
            "1.1.1.1",
            "100.128.0.1",
            "172.32.0.1",
            "2606:4700::1111",
            "2a00:1450:4001::200e",
            "::ffff:8.8.8.8",
        ] {
            assert_eq!(kind(public), None, "{public}");
        }
    }

    #[test]
    fn every_listed_range_is_refused_with_its_kind() {
        use Blocked::*;
        for (ip, expected) in [
            ("0.0.0.0", Unspecified),
            ("0.1.2.3", Unspecified),
            ("127.0.0.1", Loopback),
            ("127.255.0.9", Loopback),
            ("10.1.2.3", Private),
            ("172.16.0.1", Private),
            ("172.31.255.255", Private),
            ("192.168.1.1", Private),
            ("169.254.169.254", Metadata),
            ("169.254.1.1", LinkLocal),
            ("100.64.0.1", Shared),
            ("100.127.255.254", Shared),
            ("255.255.255.255", Broadcast),
            ("224.0.0.1", Multicast),
            ("239.1.1.1", Multicast),
            ("192.0.2.1", Documentation),
            ("198.51.100.7", Documentation),
            ("203.0.113.9", Documentation),
            ("198.18.0.1", Benchmarking),
            ("198.19.255.1", Benchmarking),
            ("240.0.0.1", Reserved),
            ("192.0.0.8", Reserved),
            ("192.88.99.1", Reserved),
            ("::", Unspecified),
            ("::1", Loopback),
            ("fd00::1", Private),
            ("fc00::1", Private),
            ("fec0::1", Private),
            ("fe80::1", LinkLocal),
            ("ff02::1", Multicast),
            ("fd00:ec2::254", Metadata),
            ("64:ff9b::7f00:1", Nat64),
            ("64:ff9b::808:808", Nat64),
            ("64:ff9b:1::1", Nat64),
            ("2002:7f00:1::1", SixToFour),
            ("2001:0:4136:e378::1", SixToFour),
            ("2001:db8::1", Documentation),
            ("3fff::1", Documentation),
            ("2001:2::1", Benchmarking),
            ("100::1", Reserved),
            ("4000::1", Reserved),
        ] {
            assert_eq!(kind(ip), Some(expected), "{ip}");
        }
    }

    #[test]
    fn mapped_and_compatible_forms_are_judged_as_their_ipv4_address() {
        use Blocked::*;
        for (ip, expected) in [
            ("::ffff:127.0.0.1", Loopback),
            ("::ffff:10.0.0.1", Private),
            ("::ffff:169.254.169.254", Metadata),
            ("::ffff:100.64.0.1", Shared),
            ("::ffff:0.0.0.0", Unspecified),
            ("::127.0.0.1", Loopback),
            ("::169.254.169.254", Metadata),
            ("::192.168.0.1", Private),
        ] {
            assert_eq!(kind(ip), Some(expected), "{ip}");
        }
    }
}
