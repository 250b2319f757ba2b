//! Which addresses a sandbox may never reach, whatever its policy: this host,
//! other sandboxes, loopback, link-local (cloud metadata), multicast, and
//! private ranges the operator has not opened. Checked on the address the proxy
//! is about to dial, after resolution, so a name that resolves (or is rebound)
//! to an internal address is refused.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// An address block, e.g. `10.0.0.0/8`, `2001:db8::/32`, or one address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    pub addr: IpAddr,
    pub prefix: u8,
}

impl Cidr {
    /// Parses `ADDR/LEN` or a bare address (a /32 or /128).
    pub fn parse(s: &str) -> Option<Self> {
        let (a, p) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let addr: IpAddr = a.parse().ok()?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match p {
            Some(p) if !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) => p.parse().ok()?,
            Some(_) => return None,
            None => max,
        };
        (prefix <= max).then_some(Self { addr, prefix })
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, normalize(ip)) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = if self.prefix == 0 { 0 } else { u32::MAX << (32 - self.prefix as u32) };
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = if self.prefix == 0 { 0 } else { u128::MAX << (128 - self.prefix as u32) };
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

impl std::fmt::Display for Cidr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

/// An IPv4-mapped IPv6 address is checked as the IPv4 address it is.
pub fn normalize(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
        v4 => v4,
    }
}

/// Ranges that are private to some network; reachable only where the operator
/// lists them (`--net-allow-private`).
const PRIVATE: &[&str] = &[
    "0.0.0.0/8",
    "10.0.0.0/8",
    "100.64.0.0/10",
    "172.16.0.0/12",
    "192.0.0.0/24",
    "192.168.0.0/16",
    "198.18.0.0/15",
    "240.0.0.0/4",
    "fc00::/7",
];

pub struct AddressGuard {
    /// Private ranges the operator opened.
    pub allowed_private: Vec<Cidr>,
    /// The daemon's sandbox subnet: other sessions live there.
    pub sandbox_subnet: Cidr,
}

impl AddressGuard {
    /// Why `ip` may not be dialled from a sandbox, or Ok.
    pub fn check(&self, ip: IpAddr) -> Result<(), String> {
        let ip = normalize(ip);
        if self.sandbox_subnet.contains(ip) {
            return Err(format!("{ip} is a Paddock sandbox address (sessions cannot reach each other)"));
        }
        if ip.is_loopback() || ip.is_unspecified() {
            return Err(format!("{ip} is a loopback address"));
        }
        let link_local = match ip {
            IpAddr::V4(v4) => v4.is_link_local(),
            IpAddr::V6(v6) => (v6.segments()[0] & 0xffc0) == 0xfe80,
        };
        if link_local {
            return Err(format!("{ip} is link-local (where cloud metadata services live)"));
        }
        if ip.is_multicast() || ip == IpAddr::V4(Ipv4Addr::BROADCAST) {
            return Err(format!("{ip} is a multicast or broadcast address"));
        }
        if local_addresses().contains(&ip) {
            return Err(format!("{ip} is an address of the Paddock host"));
        }
        let private = PRIVATE.iter().filter_map(|c| Cidr::parse(c)).any(|c| c.contains(ip));
        if private && !self.allowed_private.iter().any(|c| c.contains(ip)) {
            return Err(format!(
                "{ip} is a private address (the operator has not opened it with --net-allow-private)"
            ));
        }
        Ok(())
    }
}

/// Every address configured on this host's interfaces, now (they change).
fn local_addresses() -> Vec<IpAddr> {
    let mut out = Vec::new();
    let mut head: *mut libc::ifaddrs = std::ptr::null_mut();
    if unsafe { libc::getifaddrs(&mut head) } != 0 {
        return out;
    }
    let mut cur = head;
    while !cur.is_null() {
        let ifa = unsafe { &*cur };
        if !ifa.ifa_addr.is_null() {
            match unsafe { (*ifa.ifa_addr).sa_family } as i32 {
                libc::AF_INET => {
                    let sin = unsafe { &*(ifa.ifa_addr as *const libc::sockaddr_in) };
                    out.push(IpAddr::V4(Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr))));
                }
                libc::AF_INET6 => {
                    let sin6 = unsafe { &*(ifa.ifa_addr as *const libc::sockaddr_in6) };
                    out.push(IpAddr::V6(Ipv6Addr::from(sin6.sin6_addr.s6_addr)));
                }
                _ => {}
            }
        }
        cur = ifa.ifa_next;
    }
    unsafe { libc::freeifaddrs(head) };
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn guard() -> AddressGuard {
        AddressGuard {
            allowed_private: vec![Cidr::parse("172.29.5.0/24").unwrap()],
            sandbox_subnet: Cidr::parse("10.88.0.0/16").unwrap(),
        }
    }

    #[test]
    fn internal_addresses_are_refused() {
        let g = guard();
        for ip in
            ["127.0.0.1", "169.254.169.254", "10.88.0.6", "192.168.1.1", "::1", "fe80::1", "::ffff:127.0.0.1"]
        {
            assert!(g.check(ip.parse().unwrap()).is_err(), "{ip}");
        }
        assert!(g.check("172.29.5.9".parse().unwrap()).is_ok());
        assert!(g.check("172.29.6.9".parse().unwrap()).is_err());
    }

    #[test]
    fn cidr_parsing() {
        assert!(Cidr::parse("10.0.0.0/33").is_none());
        assert!(Cidr::parse("10.0.0.0/").is_none());
        assert!(Cidr::parse("2001:db8::/32").unwrap().contains("2001:db8::5".parse().unwrap()));
        assert!(!Cidr::parse("10.1.0.0/16").unwrap().contains("10.2.0.1".parse().unwrap()));
    }
}
