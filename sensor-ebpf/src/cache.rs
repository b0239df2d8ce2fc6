//! Counting a packet into its flow: this CPU's slot of the flow cache on a hit, the shared
//! `FLOWS` map when a slot changes hands, and the per-host maps when `FLOWS` cannot take a
//! flow (so a flood that fills the flow map stays measurable per victim).

use aya_ebpf::{bindings::BPF_NOEXIST, maps::HashMap};
use sensor_common::{
    CacheSlot, FlowKey, FlowStats, GlobalCounters, HostKey, HostStats, family, proto,
    tcp_flags::{
        ACK as TCP_ACK, FIN as TCP_FIN, PSH as TCP_PSH, RST as TCP_RST, SYN as TCP_SYN,
        URG as TCP_URG,
    },
};

use crate::{
    maps::{DST_HOSTS, FLOWS, SCRATCH, SRC_HOSTS, add32, add64},
    parse::Packet,
};

const EEXIST: i32 = 17;
const ENOMEM: i32 = 12;
const E2BIG: i32 = 7;

/// Adds the packet to its cache slot if the slot holds its flow in this epoch. `tick` is the
/// coarse clock, which lags the precise one the slot was opened with by up to a tick: the
/// slot's last-seen time only moves forward, so it never precedes its first-seen time.
#[inline(always)]
pub(crate) fn cache_hit(
    slot: *mut CacheSlot,
    pkt: &Packet,
    len: u64,
    len16: u16,
    tick: u64,
    epoch: u32,
) -> bool {
    // SAFETY: `slot` is this CPU's element of a per-CPU array; XDP runs with preemption off,
    // so nothing else writes it during this run, and the agent reads only the other bank.
    let s = unsafe { &mut *slot };
    if s.epoch != epoch || s.stats.packets == 0 {
        return false;
    }
    // SAFETY: the slot's key starts 8-byte aligned (a map value) and is 40 bytes of plain
    // integers.
    let same = unsafe {
        let a = &*(&raw const s.key).cast::<[u64; 5]>();
        let b = &pkt.words;
        a[0] == b[0] && a[1] == b[1] && a[2] == b[2] && a[3] == b[3] && a[4] == b[4]
    };
    if !same {
        return false;
    }
    let st = &mut s.stats;
    st.packets += 1;
    st.bytes += len;
    st.len_sq += len * len;
    if tick > st.last_seen_ns {
        st.last_seen_ns = tick;
    }
    // Only the counters this packet moves are touched (most packets move one, or none).
    let f = pkt.tcp_flags;
    if f & (TCP_SYN | TCP_FIN | TCP_RST | TCP_PSH) == 0 {
        if f & (TCP_ACK | TCP_URG) == TCP_ACK {
            st.ack_only += 1;
        }
    } else {
        if f & TCP_SYN != 0 {
            if f & TCP_ACK != 0 {
                st.syn_ack += 1;
            } else {
                st.syn += 1;
            }
        }
        if f & TCP_FIN != 0 {
            st.fin += 1;
        }
        if f & TCP_RST != 0 {
            st.rst += 1;
        }
        if f & TCP_PSH != 0 {
            st.psh += 1;
        }
    }
    if len16 < st.min_len {
        st.min_len = len16;
    }
    if len16 > st.max_len {
        st.max_len = len16;
    }
    true
}

/// A packet whose slot holds another flow (or nothing) of this epoch: the held counts are
/// flushed to `FLOWS` (or to the per-host maps when `FLOWS` refuses them), and the slot is
/// the packet's flow's from now on.
#[inline(always)]
pub(crate) fn cache_take(
    slot: *mut CacheSlot,
    pkt: &Packet,
    first: FlowStats,
    epoch: u32,
    c: &mut GlobalCounters,
) {
    // SAFETY: as in `cache_hit`.
    let s = unsafe { &mut *slot };
    let held = s.epoch == epoch && s.stats.packets != 0;
    if held && merge_flow(&s.key, &s.stats, c).is_err() {
        overflow(&s.key, &s.stats, c);
    }
    // SAFETY: as in `cache_hit`; whole-word copies of the 40-byte key.
    unsafe {
        *(&raw mut s.key).cast::<[u64; 5]>() = pkt.words;
    }
    s.epoch = epoch;
    s.stats = first;
}

/// Counts the `FLOWS` map could not take, per destination and per source (not for ARP: its
/// "addresses" are neighbours being resolved, not traffic to measure). A function of its own
/// (a BPF-to-BPF call): its temporaries get their own stack frame.
#[inline(never)]
pub(crate) fn overflow(key: &FlowKey, s: &FlowStats, c: &mut GlobalCounters) {
    if key.family == family::ARP {
        return;
    }
    let Some(scratch) = SCRATCH.get_ptr_mut(0) else {
        c.dst_insert_failures += 1;
        c.src_insert_failures += 1;
        return;
    };
    // SAFETY: per-CPU scratch; `s` never points into it (it is a cache slot or `fresh`).
    let (add, hk) = unsafe { (&mut (*scratch).host, &mut (*scratch).host_key) };
    let is_tcp = key.proto == proto::TCP;
    let icmp = key.proto == proto::ICMP || key.proto == proto::ICMPV6;
    let echo_type = if key.proto == proto::ICMP { 8 } else { 128 };
    *add = HostStats {
        packets: s.packets,
        bytes: s.bytes,
        first_seen_ns: s.first_seen_ns,
        last_seen_ns: s.last_seen_ns,
        syn: if is_tcp { u64::from(s.syn) } else { 0 },
        syn_ack: if is_tcp { u64::from(s.syn_ack) } else { 0 },
        rst: if is_tcp { u64::from(s.rst) } else { 0 },
        udp: if key.proto == proto::UDP {
            s.packets
        } else {
            0
        },
        icmp: if icmp { s.packets } else { 0 },
        // ICMP keys carry the type: the whole entry is echo requests or none.
        icmp_echo: if icmp && key.dst_port >> 8 == echo_type {
            s.packets
        } else {
            0
        },
    };
    *hk = HostKey {
        addr: key.dst_addr,
        family: key.family,
        _pad: [0; 3],
    };
    if update_host(&DST_HOSTS, hk, add).is_err() {
        c.dst_insert_failures += 1;
    }
    hk.addr = key.src_addr;
    if update_host(&SRC_HOSTS, hk, add).is_err() {
        c.src_insert_failures += 1;
    }
}

/// Flag counters of one TCP flags byte: (syn, syn_ack, fin, rst, psh, ack_only).
#[inline(always)]
pub(crate) fn flag_counts(f: u8) -> (u32, u32, u32, u32, u32, u32) {
    let syn = f & TCP_SYN != 0;
    let ack = f & TCP_ACK != 0;
    (
        u32::from(syn && !ack),
        u32::from(syn && ack),
        u32::from(f & TCP_FIN != 0),
        u32::from(f & TCP_RST != 0),
        u32::from(f & TCP_PSH != 0),
        u32::from(ack && f & (TCP_SYN | TCP_FIN | TCP_RST | TCP_PSH | TCP_URG) == 0),
    )
}

/// Adds counts to a flow in `FLOWS` (a packet, or a cache slot's counts); `Err` when the map
/// could not take them (counted by cause). Not inlined, for the same reason as `overflow`.
#[inline(never)]
pub(crate) fn merge_flow(key: &FlowKey, add: &FlowStats, c: &mut GlobalCounters) -> Result<(), ()> {
    // SAFETY: `s` is a map value of this run's lookup or insert, alive while it runs; the counters are atomic adds.
    let apply = |s: *mut FlowStats| unsafe {
        add64(&raw mut (*s).packets, add.packets);
        add64(&raw mut (*s).bytes, add.bytes);
        add64(&raw mut (*s).len_sq, add.len_sq);
        if add.last_seen_ns > (*s).last_seen_ns {
            (*s).last_seen_ns = add.last_seen_ns;
        }
        if add.syn != 0 {
            add32(&raw mut (*s).syn, add.syn);
        }
        if add.syn_ack != 0 {
            add32(&raw mut (*s).syn_ack, add.syn_ack);
        }
        if add.fin != 0 {
            add32(&raw mut (*s).fin, add.fin);
        }
        if add.rst != 0 {
            add32(&raw mut (*s).rst, add.rst);
        }
        if add.psh != 0 {
            add32(&raw mut (*s).psh, add.psh);
        }
        if add.ack_only != 0 {
            add32(&raw mut (*s).ack_only, add.ack_only);
        }
        if add.min_len < (*s).min_len {
            (*s).min_len = add.min_len;
        }
        if add.max_len > (*s).max_len {
            (*s).max_len = add.max_len;
        }
    };
    // Insert first: the poller drains the map every poll, so a flow flushed here is usually
    // not in it (one hash walk instead of a failed lookup and an insert). The kernel checks
    // for the key before it takes a free element, so a full map still updates the flows it
    // holds.
    match FLOWS.insert(key, add, u64::from(BPF_NOEXIST)) {
        Ok(()) => return Ok(()),
        Err(e) if e == -EEXIST => {
            if let Some(s) = FLOWS.get_ptr_mut(key) {
                apply(s);
                return Ok(());
            }
            // The poller drained it between the insert and the lookup: insert it again.
            c.flow_insert_races += 1;
            match FLOWS.insert(key, add, u64::from(BPF_NOEXIST)) {
                Ok(()) => return Ok(()),
                Err(e) if e == -E2BIG || e == -ENOMEM => c.flow_insert_full += 1,
                Err(_) => c.flow_insert_other += 1,
            }
        }
        Err(e) if e == -E2BIG || e == -ENOMEM => c.flow_insert_full += 1,
        Err(_) => c.flow_insert_other += 1,
    }
    Err(())
}

#[inline(always)]
pub(crate) fn update_host(
    map: &HashMap<HostKey, HostStats>,
    key: &HostKey,
    add: &HostStats,
) -> Result<(), ()> {
    // SAFETY: `s` is a map value of this run's lookup or insert, alive while it runs; the counters are atomic adds.
    let apply = |s: *mut HostStats| unsafe {
        add64(&raw mut (*s).packets, add.packets);
        add64(&raw mut (*s).bytes, add.bytes);
        if add.last_seen_ns > (*s).last_seen_ns {
            (*s).last_seen_ns = add.last_seen_ns;
        }
        if add.syn != 0 {
            add64(&raw mut (*s).syn, add.syn);
        }
        if add.syn_ack != 0 {
            add64(&raw mut (*s).syn_ack, add.syn_ack);
        }
        if add.rst != 0 {
            add64(&raw mut (*s).rst, add.rst);
        }
        if add.udp != 0 {
            add64(&raw mut (*s).udp, add.udp);
        }
        if add.icmp != 0 {
            add64(&raw mut (*s).icmp, add.icmp);
        }
        if add.icmp_echo != 0 {
            add64(&raw mut (*s).icmp_echo, add.icmp_echo);
        }
    };
    if let Some(s) = map.get_ptr_mut(key) {
        apply(s);
        return Ok(());
    }
    match map.insert(key, add, u64::from(BPF_NOEXIST)) {
        Ok(()) => Ok(()),
        Err(e) if e == -EEXIST => map.get_ptr_mut(key).map(apply).ok_or(()),
        Err(_) => Err(()),
    }
}
