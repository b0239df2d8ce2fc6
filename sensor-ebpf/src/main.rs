//! XDP flow aggregator.
//!
//! Per packet: parse L2-L4 (Ethernet, VLAN, PPPoE), count it in the per-CPU global counters and
//! add it to its directional 5-tuple in this CPU's slot of the flow cache (`FLOW_CACHE`, a
//! per-CPU direct-mapped array: packets of an established flow touch no hash map). When
//! another flow takes the slot, the counts it held are flushed into the shared `FLOWS` map;
//! when `FLOWS` cannot take them (full, or the insert failed), they go to their destination in
//! `DST_HOSTS` and their source in `SRC_HOSTS` instead, so that a flood that fills the flow map
//! stays measurable per victim. The agent polls the maps and the cache bank of the epoch it
//! closes (docs/DESIGN.md, "Flow cache"). Nothing is sent to userspace per packet.
//!
//! Mitigation (opt-in, docs/DESIGN.md "Mitigation"): when the agent has put entries in
//! `BLOCKLIST` (source prefixes) or `RATE_LIMITS` (per-destination limits), matching packets
//! are dropped, after they are counted like any other, so detection keeps seeing the attack.
//! Only a matching, unexpired entry drops; every other path, failures included, ends in
//! `XDP_PASS`: the sensor must never drop traffic because of its own failure.
#![no_std]
#![no_main]
// The bpf target has no atomic RMW in `core::sync::atomic`; the intrinsic lowers to BPF_ATOMIC.
#![feature(core_intrinsics)]
// Packet words are read with one `ldx` each (`load`): see there.
#![feature(asm_experimental_arch)]
#![allow(internal_features)]
// Map lookups take a pointer to a key on the stack: the explicit borrow says so.
#![allow(
    clippy::needless_borrows_for_generic_args,
    reason = "map helpers take the key's stack address"
)]
// The fragment check guards the L4 read of each protocol arm alike.
#![allow(
    clippy::collapsible_match,
    reason = "the first-fragment check reads the same in every L4 arm"
)]

mod cache;
mod evidence;
mod maps;
mod mitigation;
mod parse;

use aya_ebpf::{
    bindings::xdp_action,
    helpers::{bpf_ktime_get_coarse_ns, bpf_ktime_get_ns},
    macros::xdp,
    programs::XdpContext,
};
use sensor_common::{FlowStats, GlobalCounters, cache_index, family, gates, proto};

use crate::{
    cache::{cache_hit, cache_take, flag_counts, merge_flow, overflow},
    evidence::evidence,
    maps::{CACHE_EPOCH, CACHE_SLOTS, COARSE_TIME, COUNTERS, FLOW_CACHE, GATES, SCRATCH},
    mitigation::mitigate,
    parse::{Packet, parse},
};

#[xdp]
pub fn sensor_xdp(ctx: XdpContext) -> u32 {
    // An error only says the packet was not understood (it is already counted): pass it.
    try_sensor_xdp(&ctx).unwrap_or(xdp_action::XDP_PASS)
}

/// Baseline for benchmarks: the cheapest possible XDP program, measured in the same run.
#[xdp]
pub fn baseline_pass(_ctx: XdpContext) -> u32 {
    xdp_action::XDP_PASS
}

/// Parses, mitigates (when asked to) and counts one packet; the verdict is `XDP_DROP` only for
/// a packet a mitigation entry matched.
fn try_sensor_xdp(ctx: &XdpContext) -> Result<u32, ()> {
    let counters = COUNTERS.get_ptr_mut(0).ok_or(())?;
    // SAFETY: per-CPU slot; XDP runs with preemption off, so nothing else writes it now.
    let c = unsafe { &mut *counters };
    let len = (ctx.data_end() - ctx.data()) as u64;
    c.packets += 1;
    c.bytes += len;

    // Classes are counted only for packets parsed in full, so that
    // packets == tcp + udp + icmp + other_ip + non_ip + parse_errors always holds.
    let pkt = match parse(ctx) {
        Ok(Some(pkt)) => pkt,
        Ok(None) => {
            c.non_ip_packets += 1;
            c.non_ip_bytes += len;
            return Ok(xdp_action::XDP_PASS);
        }
        Err(()) => {
            c.parse_errors += 1;
            return Err(());
        }
    };
    count_class(&pkt, len, c);
    // Two clocks (docs/DESIGN.md, "Timestamps"): the coarse one (the last tick, a load) for a
    // packet of the flow its cache slot holds, which only moves that flow's last-seen time;
    // the precise one (a clocksource read) where a time is the start of something: a packet
    // that opens a slot or a map entry, evidence, mitigation. `--coarse-time` uses the
    // coarse one everywhere.
    // SAFETY: the time helpers take no arguments and touch no memory.
    let tick = unsafe { bpf_ktime_get_coarse_ns() };
    let precise = || {
        if COARSE_TIME.load() != 0 {
            tick
        } else {
            // SAFETY: as above.
            unsafe { bpf_ktime_get_ns() }
        }
    };
    let verdict = match GATES.get(0) {
        Some(&bits) if bits != 0 => {
            let now = precise();
            if bits & gates::WATCH != 0 {
                evidence(ctx, &pkt, len, now, c);
            }
            if bits & (gates::BLOCKLIST | gates::RATE_LIMITS) != 0 {
                mitigate(&pkt, bits, len, now, c)
            } else {
                xdp_action::XDP_PASS
            }
        }
        _ => xdp_action::XDP_PASS,
    };
    let len16 = if len > u16::MAX as u64 {
        u16::MAX
    } else {
        len as u16
    };

    let slots = CACHE_SLOTS.load();
    let mut cached = None;
    if slots != 0
        && let Some(epoch) = CACHE_EPOCH.get(0)
    {
        let epoch = *epoch as u32;
        let idx = (epoch & 1) * slots + cache_index(&pkt.words, slots);
        if let Some(slot) = FLOW_CACHE.get_ptr_mut(idx) {
            // The common case, a packet of the flow the slot holds: a few adds, no hash map.
            if cache_hit(slot, &pkt, len, len16, tick, epoch) {
                return Ok(verdict);
            }
            cached = Some((slot, epoch));
        }
    }
    let now = precise();
    let (syn, syn_ack, fin, rst, psh, ack_only) = flag_counts(pkt.tcp_flags);
    let first = FlowStats {
        packets: 1,
        bytes: len,
        first_seen_ns: now,
        last_seen_ns: now,
        syn,
        syn_ack,
        fin,
        rst,
        psh,
        ack_only,
        min_len: len16,
        max_len: len16,
        _pad: [0; 4],
        len_sq: len * len,
    };
    match cached {
        // The slot is the flow's from now on: its counts are written in place.
        Some((slot, epoch)) => cache_take(slot, &pkt, first, epoch, c),
        None => {
            let scratch = SCRATCH.get_ptr_mut(0).ok_or(())?;
            // SAFETY: per-CPU scratch, this run's alone (preemption is off).
            let fresh = unsafe { &mut (*scratch).fresh };
            *fresh = first;
            if merge_flow(pkt.key(), fresh, c).is_err() {
                overflow(pkt.key(), fresh, c);
            }
        }
    }
    Ok(verdict)
}

#[inline(always)]
fn count_class(pkt: &Packet, len: u64, c: &mut GlobalCounters) {
    match pkt.family() {
        family::IPV4 => c.ipv4_packets += 1,
        family::IPV6 => c.ipv6_packets += 1,
        _ => {
            c.non_ip_packets += 1;
            c.non_ip_bytes += len;
            return;
        }
    }
    c.fragments += u64::from(pkt.fragment);
    match pkt.proto() {
        proto::TCP => {
            c.tcp_packets += 1;
            c.tcp_bytes += len;
        }
        proto::UDP => {
            c.udp_packets += 1;
            c.udp_bytes += len;
        }
        proto::ICMP | proto::ICMPV6 => {
            c.icmp_packets += 1;
            c.icmp_bytes += len;
        }
        _ => {
            c.other_ip_packets += 1;
            c.other_ip_bytes += len;
        }
    }
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo<'_>) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
