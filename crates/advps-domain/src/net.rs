//! IPv4 ranges for address pools: parsing a CIDR and listing the addresses
//! a pool may hand out; and which addresses are globally reachable, so
//! outbound requests (webhooks) can refuse the rest.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// The largest pool accepted (a /16), so a typo cannot fill the database.
pub const MAX_POOL_SIZE: u32 = 65_536;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PoolError {
    #[error("'{0}' is not a CIDR like 198.51.100.0/24")]
    Cidr(String),
    #[error("'{0}' is not an IPv4 address")]
    Address(String),
    #[error("{0} is outside {1}")]
    Outside(Ipv4Addr, String),
    #[error("the range is empty")]
    Empty,
    #[error("the pool is larger than {MAX_POOL_SIZE} addresses")]
    TooLarge,
}

/// A parsed `a.b.c.d/n`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    pub network: Ipv4Addr,
    pub prefix: u8,
}

impl Cidr {
    pub fn parse(raw: &str) -> Result<Cidr, PoolError> {
        let (addr, prefix) = raw
            .trim()
            .split_once('/')
            .ok_or_else(|| PoolError::Cidr(raw.into()))?;
        let addr: Ipv4Addr = addr.parse().map_err(|_| PoolError::Cidr(raw.into()))?;
        let prefix: u8 = prefix.parse().map_err(|_| PoolError::Cidr(raw.into()))?;
        if prefix > 32 {
            return Err(PoolError::Cidr(raw.into()));
        }
        let mask = Self::mask(prefix);
        Ok(Cidr {
            network: Ipv4Addr::from(u32::from(addr) & mask),
            prefix,
        })
    }

    fn mask(prefix: u8) -> u32 {
        if prefix == 0 {
            0
        } else {
            u32::MAX << (32 - u32::from(prefix))
        }
    }

    pub fn contains(&self, addr: Ipv4Addr) -> bool {
        u32::from(addr) & Self::mask(self.prefix) == u32::from(self.network)
    }

    /// First and last host addresses (network and broadcast left out for
    /// prefixes up to /30).
    pub fn host_bounds(&self) -> (u32, u32) {
        let net = u32::from(self.network);
        let size = 1u64 << (32 - u32::from(self.prefix));
        let last = (u64::from(net) + size - 1) as u32;
        if self.prefix >= 31 {
            (net, last)
        } else {
            (net + 1, last - 1)
        }
    }
}

impl std::fmt::Display for Cidr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix)
    }
}

/// The addresses of a pool: the CIDR's hosts (or `range` "first-last"
/// within it), without the gateway.
pub fn pool_addresses(
    cidr: &Cidr,
    gateway: Ipv4Addr,
    range: Option<&str>,
) -> Result<Vec<Ipv4Addr>, PoolError> {
    if !cidr.contains(gateway) {
        return Err(PoolError::Outside(gateway, cidr.to_string()));
    }
    let (mut first, mut last) = cidr.host_bounds();
    if let Some(range) = range {
        let (a, b) = range
            .split_once('-')
            .ok_or_else(|| PoolError::Address(range.into()))?;
        let a: Ipv4Addr = a.trim().parse().map_err(|_| PoolError::Address(a.into()))?;
        let b: Ipv4Addr = b.trim().parse().map_err(|_| PoolError::Address(b.into()))?;
        for addr in [a, b] {
            if !cidr.contains(addr) {
                return Err(PoolError::Outside(addr, cidr.to_string()));
            }
        }
        first = first.max(u32::from(a));
        last = last.min(u32::from(b));
    }
    if first > last {
        return Err(PoolError::Empty);
    }
    if u64::from(last - first) + 1 > u64::from(MAX_POOL_SIZE) {
        return Err(PoolError::TooLarge);
    }
    let gw = u32::from(gateway);
    let out: Vec<Ipv4Addr> = (first..=last)
        .filter(|&a| a != gw)
        .map(Ipv4Addr::from)
        .collect();
    if out.is_empty() {
        return Err(PoolError::Empty);
    }
    Ok(out)
}

/// The special-purpose or otherwise non-public range `ip` lies in, or `None`
/// when it is globally reachable.
///
/// Follows the IANA IPv4 and IPv6 special-purpose address registries: every
/// block not marked globally reachable is named here, plus multicast, and
/// IPv6 outside global unicast 2000::/3. Addresses that embed an IPv4
/// address (IPv4-mapped ::ffff:0:0/96, IPv4-compatible ::/96, NAT64
/// 64:ff9b::/96, 6to4 2002::/16) are judged by that IPv4 address. Whole
/// blocks are refused where the registry lets a few sub-blocks through
/// (192.0.0.0/24, 2001::/23): none of those is a sensible destination.
pub fn non_global_range(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(v4) => non_global_v4(v4),
        IpAddr::V6(v6) => non_global_v6(v6),
    }
}

/// Whether `ip` is globally reachable (see [`non_global_range`]).
pub fn is_globally_reachable(ip: IpAddr) -> bool {
    non_global_range(ip).is_none()
}

fn in_v4(ip: Ipv4Addr, net: [u8; 4], prefix: u32) -> bool {
    let mask = if prefix == 0 {
        0
    } else {
        u32::MAX << (32 - prefix)
    };
    u32::from(ip) & mask == u32::from(Ipv4Addr::from(net))
}

fn non_global_v4(ip: Ipv4Addr) -> Option<&'static str> {
    const RANGES: [([u8; 4], u32, &str); 16] = [
        ([0, 0, 0, 0], 8, "0.0.0.0/8 (this network)"),
        ([10, 0, 0, 0], 8, "10.0.0.0/8 (private)"),
        ([100, 64, 0, 0], 10, "100.64.0.0/10 (shared address space)"),
        ([127, 0, 0, 0], 8, "127.0.0.0/8 (loopback)"),
        ([169, 254, 0, 0], 16, "169.254.0.0/16 (link-local)"),
        ([172, 16, 0, 0], 12, "172.16.0.0/12 (private)"),
        (
            [192, 0, 0, 0],
            24,
            "192.0.0.0/24 (IETF protocol assignments)",
        ),
        ([192, 0, 2, 0], 24, "192.0.2.0/24 (documentation)"),
        ([192, 88, 99, 0], 24, "192.88.99.0/24 (6to4 relay anycast)"),
        ([192, 168, 0, 0], 16, "192.168.0.0/16 (private)"),
        ([198, 18, 0, 0], 15, "198.18.0.0/15 (benchmarking)"),
        ([198, 51, 100, 0], 24, "198.51.100.0/24 (documentation)"),
        ([203, 0, 113, 0], 24, "203.0.113.0/24 (documentation)"),
        ([224, 0, 0, 0], 4, "224.0.0.0/4 (multicast)"),
        (
            [255, 255, 255, 255],
            32,
            "255.255.255.255/32 (limited broadcast)",
        ),
        ([240, 0, 0, 0], 4, "240.0.0.0/4 (reserved)"),
    ];
    RANGES
        .iter()
        .find(|(net, prefix, _)| in_v4(ip, *net, *prefix))
        .map(|(_, _, name)| *name)
}

fn in_v6(ip: Ipv6Addr, net: [u16; 8], prefix: u32) -> bool {
    let mask = if prefix == 0 {
        0
    } else {
        u128::MAX << (128 - prefix)
    };
    u128::from(ip) & mask == u128::from(Ipv6Addr::from(net))
}

fn non_global_v6(ip: Ipv6Addr) -> Option<&'static str> {
    let bits = u128::from(ip);
    let low32 = Ipv4Addr::from(bits as u32);
    // Forms that carry an IPv4 address: judged by it. :: and ::1 lie in
    // ::/96 and so are judged as 0.0.0.0 and 0.0.0.1 (this network), but
    // are named for what they are.
    if ip == Ipv6Addr::UNSPECIFIED {
        return Some("::/128 (unspecified)");
    }
    if ip == Ipv6Addr::LOCALHOST {
        return Some("::1/128 (loopback)");
    }
    let embedded = if in_v6(ip, [0, 0, 0, 0, 0, 0xffff, 0, 0], 96) {
        Some((
            low32,
            "::ffff:0:0/96 (IPv4-mapped) of a non-global IPv4 address",
        ))
    } else if in_v6(ip, [0; 8], 96) {
        Some((
            low32,
            "::/96 (IPv4-compatible) of a non-global IPv4 address",
        ))
    } else if in_v6(ip, [0x64, 0xff9b, 0, 0, 0, 0, 0, 0], 96) {
        Some((low32, "64:ff9b::/96 (NAT64) of a non-global IPv4 address"))
    } else if in_v6(ip, [0x2002, 0, 0, 0, 0, 0, 0, 0], 16) {
        let v4 = Ipv4Addr::from((bits >> 80) as u32);
        Some((v4, "2002::/16 (6to4) of a non-global IPv4 address"))
    } else {
        None
    };
    if let Some((v4, name)) = embedded {
        return non_global_v4(v4).map(|_| name);
    }
    const RANGES: [([u16; 8], u32, &str); 11] = [
        (
            [0x64, 0xff9b, 1, 0, 0, 0, 0, 0],
            48,
            "64:ff9b:1::/48 (local-use NAT64)",
        ),
        ([0x100, 0, 0, 0, 0, 0, 0, 0], 64, "100::/64 (discard-only)"),
        (
            [0x100, 0, 0, 1, 0, 0, 0, 0],
            64,
            "100:0:0:1::/64 (dummy prefix)",
        ),
        (
            [0x2001, 0, 0, 0, 0, 0, 0, 0],
            23,
            "2001::/23 (IETF protocol assignments)",
        ),
        (
            [0x2001, 0xdb8, 0, 0, 0, 0, 0, 0],
            32,
            "2001:db8::/32 (documentation)",
        ),
        (
            [0x3fff, 0, 0, 0, 0, 0, 0, 0],
            20,
            "3fff::/20 (documentation)",
        ),
        (
            [0x5f00, 0, 0, 0, 0, 0, 0, 0],
            16,
            "5f00::/16 (segment routing SIDs)",
        ),
        ([0xfc00, 0, 0, 0, 0, 0, 0, 0], 7, "fc00::/7 (unique local)"),
        ([0xfe80, 0, 0, 0, 0, 0, 0, 0], 10, "fe80::/10 (link-local)"),
        (
            [0xfec0, 0, 0, 0, 0, 0, 0, 0],
            10,
            "fec0::/10 (site-local, deprecated)",
        ),
        ([0xff00, 0, 0, 0, 0, 0, 0, 0], 8, "ff00::/8 (multicast)"),
    ];
    if let Some((_, _, name)) = RANGES
        .iter()
        .find(|(net, prefix, _)| in_v6(ip, *net, *prefix))
    {
        return Some(name);
    }
    if !in_v6(ip, [0x2000, 0, 0, 0, 0, 0, 0, 0], 3) {
        return Some("outside 2000::/3 (not global unicast)");
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_24_gives_253_addresses_without_gateway() {
        let cidr = Cidr::parse("198.51.100.7/24").unwrap();
        assert_eq!(cidr.to_string(), "198.51.100.0/24");
        let all = pool_addresses(&cidr, "198.51.100.1".parse().unwrap(), None).unwrap();
        assert_eq!(all.len(), 253);
        assert_eq!(all[0], Ipv4Addr::new(198, 51, 100, 2));
        assert_eq!(*all.last().unwrap(), Ipv4Addr::new(198, 51, 100, 254));
    }

    #[test]
    fn ranges_are_clipped_and_checked() {
        let cidr = Cidr::parse("198.51.100.0/24").unwrap();
        let gw = "198.51.100.1".parse().unwrap();
        let some = pool_addresses(&cidr, gw, Some("198.51.100.100-198.51.100.102")).unwrap();
        assert_eq!(some.len(), 3);
        assert!(pool_addresses(&cidr, gw, Some("198.51.101.1-198.51.101.2")).is_err());
        assert!(pool_addresses(&cidr, "10.0.0.1".parse().unwrap(), None).is_err());
        assert_eq!(
            pool_addresses(&cidr, gw, Some("198.51.100.9-198.51.100.5")),
            Err(PoolError::Empty)
        );
        assert_eq!(
            pool_addresses(
                &Cidr::parse("10.0.0.0/8").unwrap(),
                "10.0.0.1".parse().unwrap(),
                None
            ),
            Err(PoolError::TooLarge)
        );
        assert!(Cidr::parse("198.51.100.0").is_err());
        assert!(Cidr::parse("198.51.100.0/33").is_err());
    }

    fn refused(ip: &str) -> bool {
        !is_globally_reachable(ip.parse().unwrap())
    }

    #[test]
    fn ipv4_special_purpose_ranges_are_refused_edge_to_edge() {
        // (first, last, the address just below, the address just above)
        let ranges = [
            ("0.0.0.0", "0.255.255.255", None, Some("1.0.0.0")),
            (
                "10.0.0.0",
                "10.255.255.255",
                Some("9.255.255.255"),
                Some("11.0.0.0"),
            ),
            (
                "100.64.0.0",
                "100.127.255.255",
                Some("100.63.255.255"),
                Some("100.128.0.0"),
            ),
            (
                "127.0.0.0",
                "127.255.255.255",
                Some("126.255.255.255"),
                Some("128.0.0.0"),
            ),
            (
                "169.254.0.0",
                "169.254.255.255",
                Some("169.253.255.255"),
                Some("169.255.0.0"),
            ),
            (
                "172.16.0.0",
                "172.31.255.255",
                Some("172.15.255.255"),
                Some("172.32.0.0"),
            ),
            (
                "192.0.0.0",
                "192.0.0.255",
                Some("191.255.255.255"),
                Some("192.0.1.0"),
            ),
            (
                "192.0.2.0",
                "192.0.2.255",
                Some("192.0.1.255"),
                Some("192.0.3.0"),
            ),
            (
                "192.88.99.0",
                "192.88.99.255",
                Some("192.88.98.255"),
                Some("192.88.100.0"),
            ),
            (
                "192.168.0.0",
                "192.168.255.255",
                Some("192.167.255.255"),
                Some("192.169.0.0"),
            ),
            (
                "198.18.0.0",
                "198.19.255.255",
                Some("198.17.255.255"),
                Some("198.20.0.0"),
            ),
            (
                "198.51.100.0",
                "198.51.100.255",
                Some("198.51.99.255"),
                Some("198.51.101.0"),
            ),
            (
                "203.0.113.0",
                "203.0.113.255",
                Some("203.0.112.255"),
                Some("203.0.114.0"),
            ),
            (
                "224.0.0.0",
                "239.255.255.255",
                Some("223.255.255.255"),
                None,
            ),
            ("240.0.0.0", "255.255.255.254", None, None),
            ("255.255.255.255", "255.255.255.255", None, None),
        ];
        for (first, last, below, above) in ranges {
            assert!(refused(first), "{first}");
            assert!(refused(last), "{last}");
            for outside in [below, above].into_iter().flatten() {
                assert!(!refused(outside), "{outside} is global");
            }
        }
        // Globally reachable special-purpose blocks stay allowed.
        for ip in [
            "192.31.196.1",
            "192.52.193.1",
            "192.175.48.1",
            "1.1.1.1",
            "8.8.8.8",
        ] {
            assert!(!refused(ip), "{ip}");
        }
        assert_eq!(
            non_global_range("198.19.0.1".parse().unwrap()),
            Some("198.18.0.0/15 (benchmarking)")
        );
        assert_eq!(
            non_global_range("255.255.255.255".parse().unwrap()),
            Some("255.255.255.255/32 (limited broadcast)")
        );
    }

    #[test]
    fn ipv6_special_purpose_ranges_are_refused_edge_to_edge() {
        let ranges = [
            ("::", "::", None, None),
            ("::1", "::1", None, None),
            (
                "64:ff9b:1::",
                "64:ff9b:1:ffff:ffff:ffff:ffff:ffff",
                None,
                None,
            ),
            ("100::", "100::ffff:ffff:ffff:ffff", None, None),
            ("100:0:0:1::", "100:0:0:1:ffff:ffff:ffff:ffff", None, None),
            (
                "2001::",
                "2001:1ff:ffff:ffff:ffff:ffff:ffff:ffff",
                Some("2000:ffff:ffff:ffff:ffff:ffff:ffff:ffff"),
                Some("2001:200::"),
            ),
            (
                "2001:db8::",
                "2001:db8:ffff:ffff:ffff:ffff:ffff:ffff",
                Some("2001:db7:ffff:ffff:ffff:ffff:ffff:ffff"),
                Some("2001:db9::"),
            ),
            (
                "3fff::",
                "3fff:fff:ffff:ffff:ffff:ffff:ffff:ffff",
                Some("3ffe:ffff:ffff:ffff:ffff:ffff:ffff:ffff"),
                Some("3fff:1000::"),
            ),
            (
                "5f00::",
                "5f00:ffff:ffff:ffff:ffff:ffff:ffff:ffff",
                None,
                None,
            ),
            (
                "fc00::",
                "fdff:ffff:ffff:ffff:ffff:ffff:ffff:ffff",
                None,
                None,
            ),
            (
                "fe80::",
                "febf:ffff:ffff:ffff:ffff:ffff:ffff:ffff",
                None,
                None,
            ),
            (
                "fec0::",
                "feff:ffff:ffff:ffff:ffff:ffff:ffff:ffff",
                None,
                None,
            ),
            (
                "ff00::",
                "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff",
                None,
                None,
            ),
            // Outside global unicast altogether.
            (
                "4000::",
                "4000::1",
                Some("3fff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"),
                None,
            ),
            (
                "1fff:ffff:ffff:ffff:ffff:ffff:ffff:ffff",
                "1fff::",
                None,
                Some("2000::"),
            ),
        ];
        for (first, last, below, above) in ranges {
            assert!(refused(first), "{first}");
            assert!(refused(last), "{last}");
            for outside in [below, above].into_iter().flatten() {
                assert!(!refused(outside), "{outside} is global");
            }
        }
        for ip in ["2606:4700::1111", "2a00:1450:4001::200e", "2620:4f:8000::1"] {
            assert!(!refused(ip), "{ip}");
        }
        assert_eq!(
            non_global_range("::1".parse().unwrap()),
            Some("::1/128 (loopback)")
        );
    }

    #[test]
    fn embedded_ipv4_is_judged_by_the_ipv4_address() {
        for form in ["::ffff:{}", "::{}", "64:ff9b::{}"] {
            for bad in [
                "127.0.0.1",
                "10.0.0.1",
                "169.254.169.254",
                "198.18.0.1",
                "192.168.1.1",
                "0.0.0.0",
            ] {
                let ip = form.replace("{}", bad);
                assert!(refused(&ip), "{ip}");
            }
            for good in ["1.1.1.1", "8.8.8.8", "93.184.216.34"] {
                let ip = form.replace("{}", good);
                assert!(!refused(&ip), "{ip}");
            }
        }
        // 6to4 carries the IPv4 address in bits 16..48.
        for bad in [
            "2002:7f00:1::",
            "2002:a00:1::1",
            "2002:a9fe:a9fe::",
            "2002:c612:1::",
            "2002:c0a8:101::",
        ] {
            assert!(refused(bad), "{bad}");
        }
        for good in ["2002:101:101::1", "2002:808:808::"] {
            assert!(!refused(good), "{good}");
        }
        assert_eq!(
            non_global_range("::ffff:127.0.0.1".parse().unwrap()),
            Some("::ffff:0:0/96 (IPv4-mapped) of a non-global IPv4 address")
        );
        assert_eq!(
            non_global_range("64:ff9b::a00:1".parse().unwrap()),
            Some("64:ff9b::/96 (NAT64) of a non-global IPv4 address")
        );
        // Just outside the /96 forms: no IPv4 inside, judged as IPv6.
        assert!(refused("::1:0:0:0"), "outside 2000::/3");
        assert!(refused("64:ff9b:0:0:0:1::1"), "outside 2000::/3");
    }
}
