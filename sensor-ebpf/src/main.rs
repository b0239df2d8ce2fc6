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

use core::{
    arch::asm,
    intrinsics::{AtomicOrdering, atomic_xadd},
    mem::size_of,
};

use aya_ebpf::{
    bindings::{BPF_NOEXIST, xdp_action},
    helpers::{bpf_ktime_get_coarse_ns, bpf_ktime_get_ns},
    macros::{map, xdp},
    maps::{Array, HashMap, LpmTrie, PerCpuArray, RingBuf, lpm_trie::Key as LpmKey},
    programs::XdpContext,
};
use network_types::{
    eth::EthHdr,
    ip::{Ipv4Hdr, Ipv6Hdr},
    tcp::TcpHdr,
    udp::UdpHdr,
    vlan::VlanHdr,
};
use sensor_common::{
    BlockEntry, CacheSlot, DEFAULT_BLOCK_ENTRIES, DEFAULT_CACHE_SLOTS, DEFAULT_EVIDENCE_RING,
    DEFAULT_FLOW_ENTRIES, DEFAULT_HOST_ENTRIES, DEFAULT_RATE_ENTRIES, DEFAULT_WATCH_ENTRIES,
    EVIDENCE_SNAPLEN, EvidenceRecord, FlowKey, FlowStats, GlobalCounters, HostKey, HostStats,
    MAX_IPV6_EXT_HEADERS as MAX_IPV6_EXT, RateKey, RateLimit, WatchEntry, cache_index,
    ether_type::{self as eth_type, is_vlan},
    family, gates, ppp, proto,
    tcp_flags::{
        ACK as TCP_ACK, FIN as TCP_FIN, PSH as TCP_PSH, RST as TCP_RST, SYN as TCP_SYN,
        URG as TCP_URG,
    },
    watch,
};

// Plain hashes, preallocated: fixed memory known at load time, no allocation on the packet
// path, and atomic adds keep counts exact without per-CPU copies. Sizes are overridden by the
// loader. docs/DESIGN.md explains the choice against LRU and per-CPU hashes.
#[map(name = "FLOWS")]
static FLOWS: HashMap<FlowKey, FlowStats> = HashMap::with_max_entries(DEFAULT_FLOW_ENTRIES, 0);

#[map(name = "DST_HOSTS")]
static DST_HOSTS: HashMap<HostKey, HostStats> = HashMap::with_max_entries(DEFAULT_HOST_ENTRIES, 0);

#[map(name = "SRC_HOSTS")]
static SRC_HOSTS: HashMap<HostKey, HostStats> = HashMap::with_max_entries(DEFAULT_HOST_ENTRIES, 0);

#[map(name = "COUNTERS")]
static COUNTERS: PerCpuArray<GlobalCounters> = PerCpuArray::with_max_entries(1, 0);

/// Two banks of `CACHE_SLOTS` slots per CPU; the loader sizes it. Array lookups are inlined
/// by the verifier: a hit costs a few loads and stores, no hash, no lock, no atomic.
#[map(name = "FLOW_CACHE")]
static FLOW_CACHE: PerCpuArray<CacheSlot> =
    PerCpuArray::with_max_entries(2 * DEFAULT_CACHE_SLOTS, 0);

/// The poll epoch: bank `epoch & 1` is written; the agent advances it at each poll and then
/// reads the bank it closed.
#[map(name = "CACHE_EPOCH")]
static CACHE_EPOCH: Array<u64> = Array::with_max_entries(1, 0);

/// Blocked source prefixes (a longest-prefix match over 16-byte addresses).
#[map(name = "BLOCKLIST")]
static BLOCKLIST: LpmTrie<[u8; 16], BlockEntry> =
    LpmTrie::with_max_entries(DEFAULT_BLOCK_ENTRIES, 0);

/// Rate limits toward protected destinations, by (destination, protocol or 0 for any).
#[map(name = "RATE_LIMITS")]
static RATE_LIMITS: HashMap<RateKey, RateLimit> =
    HashMap::with_max_entries(DEFAULT_RATE_ENTRIES, 0);

/// Which optional maps hold entries (`sensor_common::gates` bits): with none, a packet pays
/// one array load for all of them and no map lookup.
#[map(name = "GATES")]
static GATES: Array<u64> = Array::with_max_entries(1, 0);

/// Addresses of open alerts whose packets are copied as evidence.
#[map(name = "WATCH")]
static WATCH: HashMap<[u8; 16], WatchEntry> = HashMap::with_max_entries(DEFAULT_WATCH_ENTRIES, 0);

/// The first bytes of watched packets, for the agent to write into the alerts' pcap files.
/// A ring buffer, not per-packet events: bounded memory, and a full ring is counted, never
/// waited on.
#[map(name = "EVIDENCE")]
static EVIDENCE: RingBuf = RingBuf::with_byte_size(DEFAULT_EVIDENCE_RING, 0);

/// Per-CPU scratch for values handed to map helpers: the BPF stack is 512 bytes for the whole
/// call chain, and a flow's and a host's counts together would take a third of it.
#[map(name = "SCRATCH")]
static SCRATCH: PerCpuArray<Scratch> = PerCpuArray::with_max_entries(1, 0);

#[repr(C)]
struct Scratch {
    fresh: FlowStats,
    host: HostStats,
    host_key: HostKey,
}

/// Slots per bank, a power of two, set by the loader; 0 turns the cache off (every packet
/// goes to `FLOWS` as it comes).
#[unsafe(no_mangle)]
static CACHE_SLOTS: u32 = DEFAULT_CACHE_SLOTS;

/// Set to 1 by the loader to stamp flows with `bpf_ktime_get_coarse_ns` (one tick of
/// resolution, about 20 ns/packet cheaper here) instead of `bpf_ktime_get_ns`. A read-only
/// global: the verifier sees its value and drops the branch not taken.
#[unsafe(no_mangle)]
static COARSE_TIME: u8 = 0;

// Header constants are shared with the userspace parser (sensor-common), so the two cannot
// disagree on what a frame is.
const ETH_P_IPV4: u16 = eth_type::IPV4;
const ETH_P_IPV6: u16 = eth_type::IPV6;
const ETH_P_ARP: u16 = eth_type::ARP;
const ETH_P_PPPOE_SESSION: u16 = eth_type::PPPOE_SESSION;
const PPP_IPV4: u16 = ppp::IPV4;
const PPP_IPV6: u16 = ppp::IPV6;

const EEXIST: i32 = 17;
const ENOMEM: i32 = 12;
const E2BIG: i32 = 7;

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

/// What one packet contributes, once parsed. The key is kept as the five little-endian words
/// of a [`FlowKey`] (the layout `sensor_common::key_words` describes): it is built, hashed,
/// compared and copied a word at a time, never a byte at a time.
#[repr(C, align(8))]
struct Packet {
    words: [u64; 5],
    tcp_flags: u8,
    /// 1 for ICMP/ICMPv6 echo requests.
    echo: u8,
    /// 1 for a non-first IP fragment (no L4 header, ports 0).
    fragment: u8,
}

impl Packet {
    fn key(&self) -> &FlowKey {
        // SAFETY: `FlowKey` is 40 bytes of plain integers with alignment 2; `words` is 40
        // bytes aligned to 8.
        unsafe { &*self.words.as_ptr().cast::<FlowKey>() }
    }

    fn proto(&self) -> u8 {
        (self.words[4] >> 32) as u8
    }

    fn family(&self) -> u8 {
        (self.words[4] >> 40) as u8
    }
}

/// Word 4 of a key: ports (host order), protocol and family; padding 0.
#[inline(always)]
fn tail_word(src_port: u16, dst_port: u16, proto: u8, family: u8) -> u64 {
    u64::from(src_port)
        | (u64::from(dst_port) << 16)
        | (u64::from(proto) << 32)
        | (u64::from(family) << 40)
}

/// The key word of an IPv4-mapped address (`::ffff:a.b.c.d`, bytes 8..16) from the address as
/// loaded from the packet: bytes `0 0 ff ff a b c d`.
#[inline(always)]
fn v4_word(addr: u32) -> u64 {
    0xffff_0000 | (u64::from(addr) << 32)
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
    // SAFETY: reading a global; volatile so the compiler keeps the load the loader patches.
    let coarse = unsafe { core::ptr::read_volatile(&raw const COARSE_TIME) } != 0;
    // SAFETY: the time helpers take no arguments and touch no memory.
    let now = unsafe {
        if coarse {
            bpf_ktime_get_coarse_ns()
        } else {
            bpf_ktime_get_ns()
        }
    };
    let verdict = match GATES.get(0) {
        Some(&bits) if bits != 0 => {
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

    // SAFETY: reading a global the loader patches; volatile keeps the load.
    let slots = unsafe { core::ptr::read_volatile(&raw const CACHE_SLOTS) };
    let mut cached = None;
    if slots != 0
        && let Some(epoch) = CACHE_EPOCH.get(0)
    {
        let epoch = *epoch as u32;
        let idx = (epoch & 1) * slots + cache_index(&pkt.words, slots);
        if let Some(slot) = FLOW_CACHE.get_ptr_mut(idx) {
            // The common case, a packet of the flow the slot holds: a few adds, no hash map.
            if cache_hit(slot, &pkt, len, len16, now, epoch) {
                return Ok(verdict);
            }
            cached = Some((slot, epoch));
        }
    }
    let scratch = SCRATCH.get_ptr_mut(0).ok_or(())?;
    // SAFETY: per-CPU scratch, this run's alone (preemption is off).
    let fresh = unsafe { &mut (*scratch).fresh };
    let (syn, syn_ack, fin, rst, psh, ack_only) = flag_counts(pkt.tcp_flags);
    *fresh = FlowStats {
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
        Some((slot, epoch)) => cache_take(slot, &pkt, fresh, epoch, c),
        None => {
            if merge_flow(pkt.key(), fresh, c).is_err() {
                overflow(pkt.key(), fresh, c);
            }
        }
    }
    Ok(verdict)
}

/// The mitigation verdict of an IP packet: `XDP_DROP` when its source is in an unexpired
/// blocklist entry, or when it exceeds an unexpired rate limit toward its destination.
/// A function of its own (a BPF-to-BPF call): its keys get their own stack frame, and the
/// fast path carries none of it while no entry exists.
#[inline(never)]
fn mitigate(pkt: &Packet, bits: u64, len: u64, now: u64, c: &mut GlobalCounters) -> u32 {
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

/// Adds the packet to its cache slot if the slot holds its flow in this epoch.
#[inline(always)]
fn cache_hit(
    slot: *mut CacheSlot,
    pkt: &Packet,
    len: u64,
    len16: u16,
    now: u64,
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
    st.last_seen_ns = now;
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
fn cache_take(
    slot: *mut CacheSlot,
    pkt: &Packet,
    fresh: &FlowStats,
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
    s.stats = *fresh;
}

/// Counts the `FLOWS` map could not take, per destination and per source (not for ARP: its
/// "addresses" are neighbours being resolved, not traffic to measure). A function of its own
/// (a BPF-to-BPF call): its temporaries get their own stack frame.
#[inline(never)]
fn overflow(key: &FlowKey, s: &FlowStats, c: &mut GlobalCounters) {
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

/// Copies the first bytes of a packet to the evidence ring when its source (or destination)
/// is watched, within the watch entry's time and budget. The copy happens whatever the
/// mitigation verdict: evidence of a blocked flood is evidence too.
#[inline(never)]
fn evidence(ctx: &XdpContext, pkt: &Packet, len: u64, now: u64, c: &mut GlobalCounters) {
    let fam = pkt.family();
    if fam != family::IPV4 && fam != family::IPV6 {
        return;
    }
    // SAFETY: two u64 words are 16 plain bytes.
    let src: [u8; 16] =
        unsafe { core::mem::transmute::<[u64; 2], [u8; 16]>([pkt.words[0], pkt.words[1]]) };
    let mut hit = WATCH
        .get_ptr_mut(&src)
        // SAFETY: a map value the kernel keeps alive for this run.
        .filter(|w| unsafe { (**w).flags } & watch::AS_SRC != 0);
    if hit.is_none() {
        // SAFETY: as above.
        let dst: [u8; 16] =
            unsafe { core::mem::transmute::<[u64; 2], [u8; 16]>([pkt.words[2], pkt.words[3]]) };
        hit = WATCH
            .get_ptr_mut(&dst)
            // SAFETY: a map value the kernel keeps alive for this run.
            .filter(|w| unsafe { (**w).flags } & watch::AS_DST != 0);
    }
    let Some(w) = hit else { return };
    // SAFETY: a map value the kernel keeps alive for this run; counters are atomic adds, the
    // budget fields are only read.
    let w = unsafe { &mut *w };
    if now >= w.expires_ns {
        return;
    }
    let snap = if w.snaplen as usize > EVIDENCE_SNAPLEN {
        EVIDENCE_SNAPLEN as u64
    } else {
        u64::from(w.snaplen)
    };
    let cap = if len < snap { len } else { snap };
    if cap == 0 {
        return;
    }
    if w.packets >= w.max_packets || w.bytes + cap > w.max_bytes {
        add64(&raw mut w.skipped, 1);
        return;
    }
    let Some(mut rec) = EVIDENCE.reserve::<EvidenceRecord>(0) else {
        add64(&raw mut w.lost, 1);
        c.evidence_lost += 1;
        return;
    };
    let r = rec.as_mut_ptr();
    // SAFETY: `r` is the reserved record, ours until submitted; `cap` is within 1..=256, the
    // size of `data`, and within the packet (`cap <= len`).
    let copied = unsafe {
        (*r).alert_id = w.alert_id;
        (*r).ts_ns = now;
        (*r).wire_len = len as u32;
        (*r).cap_len = cap as u32;
        let n = (cap as u32) & (EVIDENCE_SNAPLEN as u32 * 2 - 1);
        n != 0
            && n as usize <= EVIDENCE_SNAPLEN
            && aya_ebpf::helpers::generated::bpf_xdp_load_bytes(
                ctx.ctx,
                0,
                (&raw mut (*r).data).cast(),
                n,
            ) == 0
    };
    if copied {
        rec.submit(0);
        add64(&raw mut w.packets, 1);
        add64(&raw mut w.bytes, cap);
        c.evidence_packets += 1;
    } else {
        rec.discard(0);
        add64(&raw mut w.lost, 1);
        c.evidence_lost += 1;
    }
}

/// Parses L2 to L4. `Ok(None)`: a frame that is fine but has no flow (non-IP, non-ARP).
#[inline(always)]
fn parse(ctx: &XdpContext) -> Result<Option<Packet>, ()> {
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

/// Bounds-checked pointer to a `T` at `offset` in the packet; the only way headers are read.
#[inline(always)]
fn ptr_at<T>(ctx: &XdpContext, offset: usize) -> Result<*const T, ()> {
    let start = ctx.data();
    let end = ctx.data_end();
    if start + offset + size_of::<T>() > end {
        return Err(());
    }
    Ok((start + offset) as *const T)
}

#[inline(always)]
fn add64(p: *mut u64, v: u64) {
    // SAFETY: `p` points into a map value the kernel keeps alive for this program run.
    unsafe { atomic_xadd::<u64, u64, { AtomicOrdering::Relaxed }>(p, v) };
}

#[inline(always)]
fn add32(p: *mut u32, v: u32) {
    // SAFETY: as for `add64`.
    unsafe { atomic_xadd::<u32, u32, { AtomicOrdering::Relaxed }>(p, v) };
}

/// Flag counters of one TCP flags byte: (syn, syn_ack, fin, rst, psh, ack_only).
#[inline(always)]
fn flag_counts(f: u8) -> (u32, u32, u32, u32, u32, u32) {
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
fn merge_flow(key: &FlowKey, add: &FlowStats, c: &mut GlobalCounters) -> Result<(), ()> {
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
    if let Some(s) = FLOWS.get_ptr_mut(key) {
        apply(s);
        return Ok(());
    }
    match FLOWS.insert(key, add, u64::from(BPF_NOEXIST)) {
        Ok(()) => return Ok(()),
        Err(e) if e == -EEXIST => {
            // Another CPU inserted the same key between our lookup and insert.
            c.flow_insert_races += 1;
            if let Some(s) = FLOWS.get_ptr_mut(key) {
                apply(s);
                return Ok(());
            }
            // ... and userspace evicted it again in between.
            c.flow_insert_other += 1;
        }
        Err(e) if e == -E2BIG || e == -ENOMEM => c.flow_insert_full += 1,
        Err(_) => c.flow_insert_other += 1,
    }
    Err(())
}

#[inline(always)]
fn update_host(
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

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo<'_>) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
