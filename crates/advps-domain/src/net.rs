//! IPv4 ranges for address pools: parsing a CIDR and listing the addresses
//! a pool may hand out.

use std::net::Ipv4Addr;

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
}
