//! L2-L4 parsing: Ethernet, up to two VLAN tags, PPPoE, IPv4 (fragments), IPv6 (extension
//! headers), TCP/UDP/ICMP, ARP, into the five key words of a flow. Every header read goes
//! through [`ptr_at`]'s bounds check; the userspace twin is `sensor::packet`.

use core::{arch::asm, mem::size_of};

use aya_ebpf::programs::XdpContext;
use network_types::{
    eth::EthHdr,
    ip::{Ipv4Hdr, Ipv6Hdr},
    tcp::TcpHdr,
    udp::UdpHdr,
    vlan::VlanHdr,
};
use sensor_common::{
    FlowKey, MAX_IPV6_EXT_HEADERS as MAX_IPV6_EXT,
    ether_type::{self as eth_type, is_vlan},
    family, ppp, proto,
};

// Header constants are shared with the userspace parser (sensor-common), so the two cannot
// disagree on what a frame is.
const ETH_P_IPV4: u16 = eth_type::IPV4;
const ETH_P_IPV6: u16 = eth_type::IPV6;
const ETH_P_ARP: u16 = eth_type::ARP;
const ETH_P_PPPOE_SESSION: u16 = eth_type::PPPOE_SESSION;
const PPP_IPV4: u16 = ppp::IPV4;
const PPP_IPV6: u16 = ppp::IPV6;

/// What one packet contributes, once parsed. The key is kept as the five little-endian words
/// of a [`FlowKey`] (the layout `sensor_common::key_words` describes): it is built, hashed,
/// compared and copied a word at a time, never a byte at a time.
#[repr(C, align(8))]
pub(crate) struct Packet {
    pub(crate) words: [u64; 5],
    pub(crate) tcp_flags: u8,
    /// 1 for ICMP/ICMPv6 echo requests.
    pub(crate) echo: u8,
    /// 1 for a non-first IP fragment (no L4 header, ports 0).
    pub(crate) fragment: u8,
}

impl Packet {
    pub(crate) fn key(&self) -> &FlowKey {
        // SAFETY: `FlowKey` is 40 bytes of plain integers with alignment 2; `words` is 40
        // bytes aligned to 8.
        unsafe { &*self.words.as_ptr().cast::<FlowKey>() }
    }

    pub(crate) fn proto(&self) -> u8 {
        (self.words[4] >> 32) as u8
    }

    pub(crate) fn family(&self) -> u8 {
        (self.words[4] >> 40) as u8
    }
}

/// Word 4 of a key: ports (host order), protocol and family; padding 0.
#[inline(always)]
pub(crate) fn tail_word(src_port: u16, dst_port: u16, proto: u8, family: u8) -> u64 {
    u64::from(src_port)
        | (u64::from(dst_port) << 16)
        | (u64::from(proto) << 32)
        | (u64::from(family) << 40)
}

/// The key word of an IPv4-mapped address (`::ffff:a.b.c.d`, bytes 8..16) from the address as
/// loaded from the packet: bytes `0 0 ff ff a b c d`.
#[inline(always)]
pub(crate) fn v4_word(addr: u32) -> u64 {
    0xffff_0000 | (u64::from(addr) << 32)
}

/// Parses L2 to L4. `Ok(None)`: a frame that is fine but has no flow (non-IP, non-ARP).
#[inline(always)]
pub(crate) fn parse(ctx: &XdpContext) -> Result<Option<Packet>, ()> {
    let eth: *const EthHdr = ptr_at(ctx, 0)?;
    // SAFETY: `ptr_at` checked that these header bytes lie within the packet.
    let mut ether_type = u16::from_be(unsafe { (*eth).ether_type });
    let mut off = EthHdr::LEN;
    // Up to two VLAN tags (802.1Q, 802.1ad/QinQ), unrolled for the verifier.
    if is_vlan(ether_type) {
        let vlan: *const VlanHdr = ptr_at(ctx, off)?;
        // SAFETY: `ptr_at` checked that these header bytes lie within the packet.
        ether_type = u16::from_be(unsafe { (*vlan).ether_type });
        off += VlanHdr::LEN;
        if is_vlan(ether_type) {
            let vlan: *const VlanHdr = ptr_at(ctx, off)?;
            // SAFETY: `ptr_at` checked that these header bytes lie within the packet.
            ether_type = u16::from_be(unsafe { (*vlan).ether_type });
            off += VlanHdr::LEN;
        }
    }

    // PPPoE session (DSL uplinks): 6-byte header and a 2-byte PPP protocol before the IP header.
    if ether_type == ETH_P_PPPOE_SESSION {
        let ppp: *const [u8; 8] = ptr_at(ctx, off)?;
        // SAFETY: `ptr_at` checked that these header bytes lie within the packet.
        ether_type = match u16::from_be_bytes(unsafe { [(*ppp)[6], (*ppp)[7]] }) {
            PPP_IPV4 => ETH_P_IPV4,
            PPP_IPV6 => ETH_P_IPV6,
            _ => return Ok(None),
        };
        off += 8;
    }

    // Key words 0-3 (addresses); word 4 is assembled at the end.
    let mut w = [0u64; 5];
    let fam;
    let l4_proto;
    let l4_off;
    let mut first_fragment = true;
    match ether_type {
        ETH_P_IPV4 => {
            let ip: *const Ipv4Hdr = ptr_at(ctx, off)?;
            // SAFETY: `ptr_at` checked that these header bytes lie within the packet.
            let vihl = unsafe { (*ip).vihl };
            let ihl = ((vihl & 0x0f) as usize) * 4;
            if vihl >> 4 != 4 || ihl < Ipv4Hdr::LEN {
                return Err(());
            }
            // Options must be present in full, like the rest of the header.
            ptr_at::<u8>(ctx, off + ihl - 1)?;
            // SAFETY: `ptr_at` checked that these header bytes lie within the packet.
            let frag = u16::from_be_bytes(unsafe { (*ip).frags }) & 0x1fff;
            first_fragment = frag == 0;
            // SAFETY: `ptr_at` checked that these header bytes lie within the packet.
            l4_proto = unsafe { (*ip).proto };
            fam = family::IPV4;
            // SAFETY: within the 20 bytes `ptr_at` checked (source at 12, destination at 16).
            let ip = ip.cast::<u8>();
            // SAFETY: an unaligned load within the header bytes `ptr_at` checked.
            w[1] = v4_word(unsafe { load32(ip.add(12)) });
            // SAFETY: an unaligned load within the header bytes `ptr_at` checked.
            w[3] = v4_word(unsafe { load32(ip.add(16)) });
            l4_off = off + ihl;
        }
        ETH_P_IPV6 => {
            let ip: *const Ipv6Hdr = ptr_at(ctx, off)?;
            // SAFETY: `ptr_at` checked that these header bytes lie within the packet.
            if unsafe { (*ip).vcf[0] } >> 4 != 6 {
                return Err(());
            }
            fam = family::IPV6;
            // SAFETY: within the 40 bytes `ptr_at` checked (source at 8, destination at 24).
            let b = ip.cast::<u8>();
            // SAFETY: an unaligned load within the header bytes `ptr_at` checked.
            unsafe {
                w[0] = load64(b.add(8));
                w[1] = load64(b.add(16));
                w[2] = load64(b.add(24));
                w[3] = load64(b.add(32));
            }
            // SAFETY: `ptr_at` checked that these header bytes lie within the packet.
            let mut next = unsafe { (*ip).next_hdr };
            let mut pos = off + Ipv6Hdr::LEN;
            for _ in 0..MAX_IPV6_EXT {
                match next {
                    // Hop-by-hop, routing, destination options: length in 8-byte units.
                    0 | 43 | 60 => {
                        let h: *const [u8; 2] = ptr_at(ctx, pos)?;
                        // SAFETY: `ptr_at` checked that these header bytes lie within the packet.
                        next = unsafe { (*h)[0] };
                        // SAFETY: `ptr_at` checked that these header bytes lie within the packet.
                        pos += (unsafe { (*h)[1] } as usize + 1) * 8;
                    }
                    // Fragment header: fixed 8 bytes; only offset 0 carries the L4 header.
                    44 => {
                        let h: *const [u8; 4] = ptr_at(ctx, pos)?;
                        // SAFETY: `ptr_at` checked that these header bytes lie within the packet.
                        next = unsafe { (*h)[0] };
                        // SAFETY: `ptr_at` checked that these header bytes lie within the packet.
                        let offset = u16::from_be_bytes(unsafe { [(*h)[2], (*h)[3]] }) >> 3;
                        first_fragment = first_fragment && offset == 0;
                        pos += 8;
                    }
                    // Authentication header: length in 4-byte units, minus 2.
                    51 => {
                        let h: *const [u8; 2] = ptr_at(ctx, pos)?;
                        // SAFETY: `ptr_at` checked that these header bytes lie within the packet.
                        next = unsafe { (*h)[0] };
                        // SAFETY: `ptr_at` checked that these header bytes lie within the packet.
                        pos += (unsafe { (*h)[1] } as usize + 2) * 4;
                    }
                    _ => break,
                }
            }
            l4_proto = next;
            l4_off = pos;
        }
        ETH_P_ARP => {
            // htype(2) ptype(2) hlen plen oper(2) sha(6) spa(4) tha(6) tpa(4), Ethernet/IPv4 only.
            let arp: *const [u8; 28] = ptr_at(ctx, off)?;
            // SAFETY: `ptr_at` checked that these header bytes lie within the packet.
            let a = unsafe { &*arp };
            if a[2] != 0x08 || a[3] != 0x00 || a[4] != 6 || a[5] != 4 {
                return Ok(None);
            }
            // SAFETY: within the 28 bytes `ptr_at` checked.
            let b = arp.cast::<u8>();
            // SAFETY: an unaligned load within the header bytes `ptr_at` checked.
            w[1] = v4_word(unsafe { load32(b.add(14)) });
            // SAFETY: an unaligned load within the header bytes `ptr_at` checked.
            w[3] = v4_word(unsafe { load32(b.add(24)) });
            w[4] = tail_word(0, u16::from_be_bytes([a[6], a[7]]), 0, family::ARP);
            return Ok(Some(Packet {
                words: w,
                tcp_flags: 0,
                echo: 0,
                fragment: 0,
            }));
        }
        _ => return Ok(None),
    }

    let mut tcp_flags = 0;
    let mut echo = 0;
    let (mut sport, mut dport) = (0, 0);
    match l4_proto {
        proto::TCP | proto::UDP => {
            if first_fragment {
                // Both headers start with the two ports; TCP's flags are byte 13.
                let ports: *const [u8; 4] = ptr_at(ctx, l4_off)?;
                // SAFETY: `ptr_at` checked that these header bytes lie within the packet.
                let p = unsafe { *ports };
                sport = u16::from_be_bytes([p[0], p[1]]);
                dport = u16::from_be_bytes([p[2], p[3]]);
                if l4_proto == proto::TCP {
                    let tcp: *const TcpHdr = ptr_at(ctx, l4_off)?;
                    // SAFETY: `ptr_at` checked that these header bytes lie within the packet.
                    tcp_flags = unsafe { *(tcp as *const u8).add(13) };
                } else {
                    ptr_at::<UdpHdr>(ctx, l4_off)?;
                }
            }
        }
        proto::ICMP | proto::ICMPV6 => {
            if first_fragment {
                let icmp: *const [u8; 2] = ptr_at(ctx, l4_off)?;
                // SAFETY: `ptr_at` checked that these header bytes lie within the packet.
                let (ty, code) = unsafe { ((*icmp)[0], (*icmp)[1]) };
                dport = u16::from_be_bytes([ty, code]);
                echo = u8::from(
                    (l4_proto == proto::ICMP && ty == 8)
                        || (l4_proto == proto::ICMPV6 && ty == 128),
                );
            }
        }
        _ => {}
    }
    w[4] = tail_word(sport, dport, l4_proto, fam);
    Ok(Some(Packet {
        words: w,
        tcp_flags,
        echo,
        fragment: u8::from(!first_fragment),
    }))
}

/// One 4-byte load from packet memory, as the bytes lie (a little-endian `u32` of them).
///
/// Why assembly: header fields sit at any 2-byte offset, so Rust can only read them through
/// byte arrays or `read_unaligned`, which the BPF backend splits into single-byte loads and
/// shifts (about 80 instructions for an IPv6 key, and store-forwarding stalls when the bytes
/// are put back together as words). One `ldxw` is what C programs get from `ip->saddr`;
/// the verifier allows unaligned packet loads on this architecture (no strict alignment), and
/// x86 performs them at full speed.
///
/// # Safety
/// `p` must be a packet pointer whose next 4 bytes `ptr_at` has checked.
#[inline(always)]
unsafe fn load32(p: *const u8) -> u32 {
    let v: u64;
    // SAFETY: a read of 4 bytes the caller checked; no other effect.
    unsafe {
        asm!("{0} = *(u32 *)({1} + 0)", lateout(reg) v, in(reg) p,
             options(readonly, nostack, preserves_flags));
    }
    v as u32
}

/// One 8-byte load from packet memory, as the bytes lie; see [`load32`] for why.
///
/// # Safety
/// `p` must be a packet pointer whose next 8 bytes `ptr_at` has checked.
#[inline(always)]
unsafe fn load64(p: *const u8) -> u64 {
    let v: u64;
    // SAFETY: a read of 8 bytes the caller checked; no other effect.
    unsafe {
        asm!("{0} = *(u64 *)({1} + 0)", lateout(reg) v, in(reg) p,
             options(readonly, nostack, preserves_flags));
    }
    v
}

/// Bounds-checked pointer to a `T` at `offset` in the packet; the only way headers are read.
#[inline(always)]
pub(crate) fn ptr_at<T>(ctx: &XdpContext, offset: usize) -> Result<*const T, ()> {
    let start = ctx.data();
    let end = ctx.data_end();
    if start + offset + size_of::<T>() > end {
        return Err(());
    }
    Ok((start + offset) as *const T)
}
