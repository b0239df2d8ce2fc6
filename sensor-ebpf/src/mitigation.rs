//! Dropping what the agent asked to drop: blocked source prefixes and per-destination rate
//! limits (GCRA). Only a matching, unexpired entry drops; everything else passes.

use aya_ebpf::{bindings::xdp_action, maps::lpm_trie::Key as LpmKey};
use sensor_common::{
    BlockEntry, GlobalCounters, RateKey, family, gates,
    tcp_flags::{ACK as TCP_ACK, SYN as TCP_SYN},
};

use crate::{
    maps::{BLOCKLIST, RATE_LIMITS, add64},
    parse::Packet,
};

/// The mitigation verdict of an IP packet: `XDP_DROP` when its source is in an unexpired
/// blocklist entry, or when it exceeds an unexpired rate limit toward its destination.
/// A function of its own (a BPF-to-BPF call): its keys get their own stack frame, and the
/// fast path carries none of it while no entry exists.
#[inline(never)]
pub(crate) fn mitigate(pkt: &Packet, bits: u64, len: u64, now: u64, c: &mut GlobalCounters) -> u32 {
    let fam = pkt.family();
    if fam != family::IPV4 && fam != family::IPV6 {
        // ARP and the like: never dropped (the gateway must keep resolving neighbours).
        return xdp_action::XDP_PASS;
    }
    let live = |expires: u64| expires == 0 || now < expires;
    if bits & gates::BLOCKLIST != 0 {
        // SAFETY: two u64 words are 16 plain bytes.
        let src: [u8; 16] =
            unsafe { core::mem::transmute::<[u64; 2], [u8; 16]>([pkt.words[0], pkt.words[1]]) };
        if let Some(e) = BLOCKLIST.get(LpmKey::new(128, src)) {
            let e = (e as *const BlockEntry).cast_mut();
            // SAFETY: a map value the kernel keeps alive for this run; counters are atomic.
            if live(unsafe { (*e).expires_ns }) {
                // SAFETY: a map value the kernel keeps alive for this run; the counters are atomic adds.
                unsafe {
                    add64(&raw mut (*e).packets, 1);
                    add64(&raw mut (*e).bytes, len);
                }
                c.blocked_packets += 1;
                c.blocked_bytes += len;
                return xdp_action::XDP_DROP;
            }
        }
    }
    if bits & gates::RATE_LIMITS != 0 {
        let mut rk = RateKey {
            // SAFETY: as above.
            addr: unsafe {
                core::mem::transmute::<[u64; 2], [u8; 16]>([pkt.words[2], pkt.words[3]])
            },
            proto: pkt.proto(),
            _pad: [0; 3],
        };
        let mut r = RATE_LIMITS.get_ptr_mut(&rk);
        if r.is_none() {
            rk.proto = 0;
            r = RATE_LIMITS.get_ptr_mut(&rk);
        }
        if let Some(r) = r {
            // SAFETY: a map value the kernel keeps alive for this run. `tat_ns` is a plain
            // store (see `RateLimit`); the counters are atomic.
            let r = unsafe { &mut *r };
            let dport = (pkt.words[4] >> 16) as u16;
            let matches = live(r.expires_ns)
                && (r.syn_only == 0 || pkt.tcp_flags & (TCP_SYN | TCP_ACK) == TCP_SYN)
                && (r.dst_port == 0 || r.dst_port == dport);
            if matches {
                let tat = if r.tat_ns > now { r.tat_ns } else { now };
                if tat - now > r.burst_ns {
                    add64(&raw mut r.dropped, 1);
                    add64(&raw mut r.dropped_bytes, len);
                    c.rate_limited_packets += 1;
                    c.rate_limited_bytes += len;
                    return xdp_action::XDP_DROP;
                }
                r.tat_ns = tat + r.interval_ns;
                add64(&raw mut r.passed, 1);
            }
        }
    }
    xdp_action::XDP_PASS
}
