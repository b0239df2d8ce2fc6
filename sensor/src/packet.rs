//! Userspace twin of the XDP program's parser: one frame in, the same [`FlowKey`] out.
//!
//! Hand-written on purpose rather than built on a general packet library: the pcap fallback
//! must key every packet exactly as the kernel does (same VLAN depth, same extension-header
//! limit, same truncation rules, same ICMP and ARP conventions), so that replaying a capture
//! and watching the same traffic live give the same flows. Kernel tests run the XDP program and
//! this parser side by side on crafted frames, random garbage and real captures and require
//! identical results. It is also allocation-free, which the replay throughput needs.

use sensor_common::{
    FlowKey, MAX_IPV6_EXT_HEADERS as MAX_IPV6_EXT, MAX_VLAN_TAGS,
    ether_type::{self, is_vlan},
    family, ppp, proto, v4_mapped,
};

/// TCP flag bits, as the kernel side names them.
pub use sensor_common::tcp_flags as tcp;

const ETH_P_IPV4: u16 = ether_type::IPV4;
const ETH_P_IPV6: u16 = ether_type::IPV6;
const ETH_P_ARP: u16 = ether_type::ARP;
const ETH_P_PPPOE_SESSION: u16 = ether_type::PPPOE_SESSION;
const PPP_IPV4: u16 = ppp::IPV4;
const PPP_IPV6: u16 = ppp::IPV6;

/// What one parsed frame contributes to its flow.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Parsed {
    pub key: FlowKey,
    pub tcp_flags: u8,
    /// ICMP/ICMPv6 echo request.
    pub echo: bool,
    /// Non-first IP fragment (ports 0).
    pub fragment: bool,
}

/// The three outcomes the kernel distinguishes, with the same counters behind them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    Flow(Parsed),
    /// A well-formed frame of an EtherType that carries no flow.
    NonIp,
    /// Cut short or malformed where a header was needed.
    Error,
}

/// Parses an Ethernet II frame.
pub fn parse_ethernet(frame: &[u8]) -> Outcome {
    match be16(frame, 12) {
        Some(et) => parse_ether_type(et, frame, 14),
        None => Outcome::Error,
    }
}

/// Parses from an EtherType whose payload starts at `off` (after Ethernet, Linux cooked, ...),
/// looking through up to two VLAN tags and a PPPoE session header like the kernel.
pub fn parse_ether_type(mut ether_type: u16, data: &[u8], mut off: usize) -> Outcome {
    for _ in 0..MAX_VLAN_TAGS {
        if !is_vlan(ether_type) {
            break;
        }
        match be16(data, off + 2) {
            Some(et) => ether_type = et,
            None => return Outcome::Error,
        }
        off += 4;
    }
    if ether_type == ETH_P_PPPOE_SESSION {
        let Some(ppp) = data.get(off..off + 8) else {
            return Outcome::Error;
        };
        ether_type = match u16::from_be_bytes([ppp[6], ppp[7]]) {
            PPP_IPV4 => ETH_P_IPV4,
            PPP_IPV6 => ETH_P_IPV6,
            _ => return Outcome::NonIp,
        };
        off += 8;
    }
    match ether_type {
        ETH_P_IPV4 => parse_ipv4(data, off),
        ETH_P_IPV6 => parse_ipv6(data, off),
        ETH_P_ARP => parse_arp(data, off),
        _ => Outcome::NonIp,
    }
}

/// Parses a bare IP packet (raw-IP link types), choosing the version from the first nibble.
pub fn parse_ip(data: &[u8]) -> Outcome {
    match data.first().map(|b| b >> 4) {
        Some(4) => parse_ipv4(data, 0),
        Some(6) => parse_ipv6(data, 0),
        Some(_) => Outcome::NonIp,
        None => Outcome::Error,
    }
}

fn be16(d: &[u8], off: usize) -> Option<u16> {
    Some(u16::from_be_bytes([*d.get(off)?, *d.get(off + 1)?]))
}

fn parse_ipv4(d: &[u8], off: usize) -> Outcome {
    let Some(h) = d.get(off..off + 20) else {
        return Outcome::Error;
    };
    let ihl = usize::from(h[0] & 0x0f) * 4;
    if h[0] >> 4 != 4 || ihl < 20 || d.len() < off + ihl {
        return Outcome::Error;
    }
    let frag = u16::from_be_bytes([h[6], h[7]]) & 0x1fff;
    let key = FlowKey {
        src_addr: v4_mapped([h[12], h[13], h[14], h[15]]),
        dst_addr: v4_mapped([h[16], h[17], h[18], h[19]]),
        proto: h[9],
        family: family::IPV4,
        ..FlowKey::default()
    };
    l4(d, off + ihl, key, frag == 0)
}

fn parse_ipv6(d: &[u8], off: usize) -> Outcome {
    let Some(h) = d.get(off..off + 40) else {
        return Outcome::Error;
    };
    if h[0] >> 4 != 6 {
        return Outcome::Error;
    }
    let mut key = FlowKey {
        family: family::IPV6,
        ..FlowKey::default()
    };
    key.src_addr.copy_from_slice(&h[8..24]);
    key.dst_addr.copy_from_slice(&h[24..40]);
    let mut next = h[6];
    let mut pos = off + 40;
    let mut first_fragment = true;
    for _ in 0..MAX_IPV6_EXT {
        match next {
            0 | 43 | 60 => {
                let Some(e) = d.get(pos..pos + 2) else {
                    return Outcome::Error;
                };
                next = e[0];
                pos += (usize::from(e[1]) + 1) * 8;
            }
            44 => {
                let Some(e) = d.get(pos..pos + 4) else {
                    return Outcome::Error;
                };
                next = e[0];
                first_fragment &= u16::from_be_bytes([e[2], e[3]]) >> 3 == 0;
                pos += 8;
            }
            51 => {
                let Some(e) = d.get(pos..pos + 2) else {
                    return Outcome::Error;
                };
                next = e[0];
                pos += (usize::from(e[1]) + 2) * 4;
            }
            _ => break,
        }
    }
    key.proto = next;
    l4(d, pos, key, first_fragment)
}

fn l4(d: &[u8], off: usize, mut key: FlowKey, first_fragment: bool) -> Outcome {
    let mut tcp_flags = 0;
    let mut echo = false;
    if first_fragment {
        match key.proto {
            proto::TCP => {
                let Some(t) = d.get(off..off + 20) else {
                    return Outcome::Error;
                };
                key.src_port = u16::from_be_bytes([t[0], t[1]]);
                key.dst_port = u16::from_be_bytes([t[2], t[3]]);
                tcp_flags = t[13];
            }
            proto::UDP => {
                let Some(u) = d.get(off..off + 8) else {
                    return Outcome::Error;
                };
                key.src_port = u16::from_be_bytes([u[0], u[1]]);
                key.dst_port = u16::from_be_bytes([u[2], u[3]]);
            }
            proto::ICMP | proto::ICMPV6 => {
                let Some(i) = d.get(off..off + 2) else {
                    return Outcome::Error;
                };
                key.dst_port = u16::from_be_bytes([i[0], i[1]]);
                echo = (key.proto == proto::ICMP && i[0] == 8)
                    || (key.proto == proto::ICMPV6 && i[0] == 128);
            }
            _ => {}
        }
    }
    Outcome::Flow(Parsed {
        key,
        tcp_flags,
        echo,
        fragment: !first_fragment,
    })
}

fn parse_arp(d: &[u8], off: usize) -> Outcome {
    let Some(a) = d.get(off..off + 28) else {
        return Outcome::Error;
    };
    if a[2..6] != [0x08, 0x00, 6, 4] {
        return Outcome::NonIp;
    }
    let key = FlowKey {
        src_addr: v4_mapped([a[14], a[15], a[16], a[17]]),
        dst_addr: v4_mapped([a[24], a[25], a[26], a[27]]),
        dst_port: u16::from_be_bytes([a[6], a[7]]),
        family: family::ARP,
        ..FlowKey::default()
    };
    Outcome::Flow(Parsed {
        key,
        tcp_flags: 0,
        echo: false,
        fragment: false,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn udp4_frame() -> Vec<u8> {
        let mut f = vec![0u8; 12];
        f.extend_from_slice(&[
            0x08, 0x00, 0x45, 0, 0, 36, 0, 0, 0, 0, 64, 17, 0, 0, 10, 0, 0, 1, 10, 0, 0, 2,
        ]);
        f.extend_from_slice(&[0x13, 0x88, 0x00, 0x35, 0, 16, 0, 0]);
        f.extend_from_slice(&[0u8; 8]);
        f
    }

    #[test]
    fn udp_key_and_every_truncation() {
        let f = udp4_frame();
        let Outcome::Flow(p) = parse_ethernet(&f) else {
            panic!("not a flow")
        };
        assert_eq!(
            (p.key.src_port, p.key.dst_port, p.key.proto, p.key.family),
            (5000, 53, 17, 4)
        );
        assert_eq!(&p.key.src_addr[10..], &[0xff, 0xff, 10, 0, 0, 1]);
        for cut in 0..42 {
            assert_eq!(parse_ethernet(&f[..cut]), Outcome::Error, "cut at {cut}");
        }
    }

    #[test]
    fn raw_ip_and_vlan_entry_points_agree() {
        let f = udp4_frame();
        let eth = parse_ethernet(&f);
        assert_eq!(parse_ip(&f[14..]), eth);
        let mut tagged = f[..12].to_vec();
        tagged.extend_from_slice(&[0x81, 0x00, 0, 7]);
        tagged.extend_from_slice(&f[12..]);
        assert_eq!(parse_ethernet(&tagged), eth);
        assert_eq!(
            parse_ethernet(&{
                let mut x = f.clone();
                x[12] = 0x88;
                x[13] = 0xcc;
                x
            }),
            Outcome::NonIp
        );
    }
}
