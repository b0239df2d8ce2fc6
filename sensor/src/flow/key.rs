//! What identifies a flow and what one update adds to it: the direction-free key (ICMP replies
//! share their query's) and the delta of a packet or of a kernel poll.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use sensor_common::{FlowKey, family, proto};

use crate::packet::{Parsed, tcp};

/// Direction-free identity of a conversation: the two endpoints in a fixed order.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BiKey {
    pub lo_addr: [u8; 16],
    pub hi_addr: [u8; 16],
    pub lo_port: u16,
    pub hi_port: u16,
    pub proto: u8,
    pub family: u8,
}

/// ICMP replies share the flow of their request: map each query/reply type to the query.
fn icmp_query_port(proto_: u8, port: u16) -> u16 {
    let (ty, code) = ((port >> 8) as u8, port as u8);
    let query = match (proto_, ty) {
        (proto::ICMP, 0) => 8,
        (proto::ICMP, 14) => 13,
        (proto::ICMP, 16) => 15,
        (proto::ICMP, 18) => 17,
        (proto::ICMPV6, 129) => 128,
        _ => ty,
    };
    u16::from(query) << 8 | u16::from(code)
}

impl BiKey {
    /// The canonical key of a directional kernel key, and whether `k` runs lo -> hi.
    pub fn of(k: &FlowKey) -> (Self, bool) {
        let mut dst_port = k.dst_port;
        if k.family != family::ARP && (k.proto == proto::ICMP || k.proto == proto::ICMPV6) {
            dst_port = icmp_query_port(k.proto, dst_port);
        }
        if k.family == family::ARP {
            // Requests and replies of one address pair are one exchange.
            dst_port = 0;
        }
        let a = (k.src_addr, k.src_port);
        let b = (k.dst_addr, dst_port);
        // ICMP "ports" are not endpoint properties: order by address only, keep the type.
        let icmp_like =
            k.family == family::ARP || k.proto == proto::ICMP || k.proto == proto::ICMPV6;
        let forward = if icmp_like { a.0 <= b.0 } else { a <= b };
        let (lo, hi) = if forward { (a, b) } else { (b, a) };
        let (lo_port, hi_port) = if icmp_like {
            (0, dst_port)
        } else {
            (lo.1, hi.1)
        };
        (
            Self {
                lo_addr: lo.0,
                hi_addr: hi.0,
                lo_port,
                hi_port,
                proto: k.proto,
                family: k.family,
            },
            forward,
        )
    }
}

pub(super) fn addr(bytes: [u8; 16], fam: u8) -> IpAddr {
    let v6 = Ipv6Addr::from(bytes);
    match fam {
        family::IPV6 => IpAddr::V6(v6),
        _ => IpAddr::V4(v6.to_ipv4_mapped().unwrap_or(Ipv4Addr::UNSPECIFIED)),
    }
}

/// What one update adds to a flow (one packet, or a kernel delta of several).
#[derive(Clone, Copy, Debug, Default)]
pub struct Delta {
    pub packets: u64,
    pub bytes: u64,
    pub first_ns: u64,
    pub last_ns: u64,
    pub syn: u64,
    pub syn_ack: u64,
    pub fin: u64,
    pub rst: u64,
    pub psh: u64,
    pub ack_only: u64,
    pub echo: u64,
    pub fragments: u64,
    /// Sum of the squared lengths (0: unknown, the delta's packets count as its mean length).
    pub len_sq: f64,
    pub min_len: u32,
    pub max_len: u32,
}

impl Delta {
    /// One packet of `len` wire bytes at `ts_ns`.
    pub fn packet(p: &Parsed, len: u32, ts_ns: u64) -> Self {
        let f = p.tcp_flags;
        let syn = f & tcp::SYN != 0;
        let ack = f & tcp::ACK != 0;
        Self {
            packets: 1,
            bytes: u64::from(len),
            first_ns: ts_ns,
            last_ns: ts_ns,
            syn: u64::from(syn && !ack),
            syn_ack: u64::from(syn && ack),
            fin: u64::from(f & tcp::FIN != 0),
            rst: u64::from(f & tcp::RST != 0),
            psh: u64::from(f & tcp::PSH != 0),
            ack_only: u64::from(
                ack && f & (tcp::SYN | tcp::FIN | tcp::RST | tcp::PSH | tcp::URG) == 0,
            ),
            echo: u64::from(p.echo),
            fragments: u64::from(p.fragment),
            len_sq: f64::from(len) * f64::from(len),
            min_len: len,
            max_len: len,
        }
    }
}
