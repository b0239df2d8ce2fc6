//! What may never be blocked: the configured allowlist, the sensor host's own addresses, the
//! next hops of its routes, and addresses that are not endpoints at all (loopback,
//! unspecified, multicast, broadcast, IPv6 link-local: blocking them breaks the gateway, not
//! an attacker).
//!
//! The host's addresses and routes are read from the kernel (`getifaddrs`, `/proc/net/route`,
//! `/proc/net/ipv6_route`) and re-read every minute, so an address added later is protected
//! too.

use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    time::{Duration, Instant},
};

use ipnet::IpNet;

const REFRESH: Duration = Duration::from_secs(60);

/// Prefixes that no block may cover.
pub struct Allowlist {
    configured: Vec<IpNet>,
    /// Host addresses and next hops, with where each came from.
    host: Vec<(IpAddr, &'static str)>,
    read_at: Option<Instant>,
}

impl Allowlist {
    pub fn new(configured: Vec<IpNet>) -> Self {
        Self {
            configured,
            host: Vec::new(),
            read_at: None,
        }
    }

    /// Re-reads the host's addresses and next hops when the last reading is a minute old.
    pub fn refresh(&mut self) {
        if self.read_at.is_some_and(|t| t.elapsed() < REFRESH) {
            return;
        }
        self.read_at = Some(Instant::now());
        let mut host: Vec<(IpAddr, &'static str)> = local_addresses()
            .into_iter()
            .map(|a| (a, "an address of this host"))
            .collect();
        host.extend(
            next_hops()
                .into_iter()
                .map(|a| (a, "a next hop of this host")),
        );
        host.sort();
        host.dedup();
        self.host = host;
    }

    /// Why `net` may not be blocked, or `None` when it may.
    pub fn refusal(&mut self, net: &IpNet) -> Option<String> {
        self.refresh();
        if let Some(why) = not_an_endpoint(net) {
            return Some(format!("{net} {why}"));
        }
        if let Some(a) = self
            .configured
            .iter()
            .find(|a| a.contains(net) || net.contains(*a))
        {
            return Some(format!("{net} overlaps the allowlist entry {a}"));
        }
        self.host
            .iter()
            .find(|(a, _)| net.contains(a))
            .map(|(a, what)| format!("{net} covers {a}, {what}"))
    }

    /// The host addresses and next hops protected now (for the API).
    pub fn protected(&mut self) -> Vec<String> {
        self.refresh();
        self.configured
            .iter()
            .map(ToString::to_string)
            .chain(self.host.iter().map(|(a, _)| a.to_string()))
            .collect()
    }
}

fn not_an_endpoint(net: &IpNet) -> Option<&'static str> {
    let a = net.network();
    let special = match a {
        IpAddr::V4(v) => {
            v.is_loopback()
                || v.is_unspecified()
                || v.is_multicast()
                || v == Ipv4Addr::BROADCAST
                || net.prefix_len() < 8
        }
        IpAddr::V6(v) => {
            v.is_loopback()
                || v.is_unspecified()
                || v.is_multicast()
                || (v.segments()[0] & 0xffc0) == 0xfe80
                || net.prefix_len() < 16
        }
    };
    special.then_some(
        "is not a traffic source that can be blocked (loopback, unspecified, multicast, \
         broadcast, link-local, or wider than /8 (IPv4) or /16 (IPv6))",
    )
}

/// Every address configured on an interface of this network namespace.
pub fn local_addresses() -> Vec<IpAddr> {
    let mut out = Vec::new();
    let mut list: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs fills `list` with a linked list that freeifaddrs releases below; each
    // `ifa_addr` is null or points to a sockaddr of the family it states.
    unsafe {
        if libc::getifaddrs(&mut list) != 0 {
            return out;
        }
        let mut p = list;
        while !p.is_null() {
            let sa = (*p).ifa_addr;
            if !sa.is_null() {
                match i32::from((*sa).sa_family) {
                    libc::AF_INET => {
                        let s = &*sa.cast::<libc::sockaddr_in>();
                        out.push(IpAddr::V4(Ipv4Addr::from(u32::from_be(s.sin_addr.s_addr))));
                    }
                    libc::AF_INET6 => {
                        let s = &*sa.cast::<libc::sockaddr_in6>();
                        out.push(IpAddr::V6(Ipv6Addr::from(s.sin6_addr.s6_addr)));
                    }
                    _ => {}
                }
            }
            p = (*p).ifa_next;
        }
        libc::freeifaddrs(list);
    }
    out
}

/// Gateways of this namespace's routes (IPv4 and IPv6 main tables).
pub fn next_hops() -> Vec<IpAddr> {
    let mut out = Vec::new();
    if let Ok(t) = std::fs::read_to_string("/proc/net/route") {
        out.extend(parse_route4(&t));
    }
    if let Ok(t) = std::fs::read_to_string("/proc/net/ipv6_route") {
        out.extend(parse_route6(&t));
    }
    out
}

/// `/proc/net/route`: Iface Destination Gateway ... with addresses as host-order hex of the
/// network-order bytes.
fn parse_route4(text: &str) -> Vec<IpAddr> {
    text.lines()
        .skip(1)
        .filter_map(|l| l.split_whitespace().nth(2))
        .filter_map(|g| u32::from_str_radix(g, 16).ok())
        .filter(|&g| g != 0)
        .map(|g| IpAddr::V4(Ipv4Addr::from(g.to_le_bytes())))
        .collect()
}

/// `/proc/net/ipv6_route`: dst len src len next_hop metric ... (32 hex digits each).
fn parse_route6(text: &str) -> Vec<IpAddr> {
    text.lines()
        .filter_map(|l| l.split_whitespace().nth(4))
        .filter_map(|h| u128::from_str_radix(h, 16).ok())
        .filter(|&h| h != 0)
        .map(|h| IpAddr::V6(Ipv6Addr::from(h)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn route_tables_give_their_gateways() {
        let v4 = "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\n\
                  eth0\t00000000\t0102A8C0\t0003\t0\t0\t0\t00000000\n\
                  eth0\t0002A8C0\t00000000\t0001\t0\t0\t0\t00FFFFFF\n";
        assert_eq!(
            parse_route4(v4),
            vec![IpAddr::V4(Ipv4Addr::new(192, 168, 2, 1))]
        );
        let v6 = "00000000000000000000000000000000 00 00000000000000000000000000000000 00 \
                  fe800000000000000000000000000001 00000400 00000001 00000000 00000003 eth0\n\
                  20010db8000000000000000000000000 40 00000000000000000000000000000000 00 \
                  00000000000000000000000000000000 00000100 00000001 00000000 00000001 eth0\n";
        assert_eq!(
            parse_route6(v6),
            vec!["fe80::1".parse::<IpAddr>().expect("addr")]
        );
    }

    #[test]
    fn host_addresses_next_hops_and_special_ranges_are_refused() {
        let mut a = Allowlist::new(vec!["10.9.0.0/16".parse().expect("net")]);
        a.host = vec![("192.0.2.1".parse().expect("ip"), "an address of this host")];
        a.read_at = Some(Instant::now());
        let refused = |a: &mut Allowlist, s: &str| a.refusal(&s.parse().expect("net"));
        assert!(refused(&mut a, "192.0.2.1/32").is_some_and(|r| r.contains("this host")));
        assert!(
            refused(&mut a, "192.0.2.0/24").is_some(),
            "prefix covering it"
        );
        assert!(
            refused(&mut a, "10.9.3.4/32").is_some(),
            "inside the allowlist"
        );
        assert!(
            refused(&mut a, "10.0.0.0/8").is_some(),
            "covering the allowlist"
        );
        for s in [
            "127.0.0.1/32",
            "0.0.0.0/0",
            "224.0.0.5/32",
            "fe80::1/128",
            "::/0",
            "1.0.0.0/7",
        ] {
            assert!(refused(&mut a, s).is_some(), "{s} must be refused");
        }
        for s in ["203.0.113.7/32", "198.51.100.0/24", "2001:db8:bad::/48"] {
            assert_eq!(refused(&mut a, s), None, "{s} may be blocked");
        }
    }
}
