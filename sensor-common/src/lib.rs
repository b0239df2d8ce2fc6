//! Plain-old-data types that the XDP program writes into kernel maps and the agent reads back.
//!
//! Every type here is `#[repr(C)]`, holds integers and byte arrays only, spells out its
//! padding, and has its size pinned by a const assertion: the kernel and userspace see the same
//! bytes, and a layout change is a compile error on both sides rather than garbage at runtime.
#![no_std]

use core::mem::size_of;

/// Address family tags stored in [`FlowKey::family`] and [`HostKey::family`].
pub mod family {
    /// ARP: addresses are the sender/target protocol addresses (IPv4-mapped), `dst_port` is the
    /// ARP opcode. Kept in the flow map so host sweeps done by ARP are visible.
    pub const ARP: u8 = 1;
    /// IPv4; addresses are stored IPv4-mapped (`::ffff:a.b.c.d`).
    pub const IPV4: u8 = 4;
    /// IPv6.
    pub const IPV6: u8 = 6;
}

/// IP protocol numbers the program distinguishes.
pub mod proto {
    pub const ICMP: u8 = 1;
    pub const TCP: u8 = 6;
    pub const UDP: u8 = 17;
    pub const ICMPV6: u8 = 58;
}

/// EtherTypes both parsers (kernel and userspace) follow.
pub mod ether_type {
    pub const IPV4: u16 = 0x0800;
    pub const IPV6: u16 = 0x86DD;
    pub const ARP: u16 = 0x0806;
    /// 802.1Q customer tag.
    pub const VLAN_8021Q: u16 = 0x8100;
    /// 802.1ad service tag (QinQ outer tag).
    pub const VLAN_8021AD: u16 = 0x88A8;
    /// Pre-standard QinQ outer tag still seen on older switches.
    pub const VLAN_QINQ_OLD: u16 = 0x9100;
    pub const PPPOE_SESSION: u16 = 0x8864;

    /// Whether `et` is one of the VLAN tag types the parsers look through.
    pub const fn is_vlan(et: u16) -> bool {
        et == VLAN_8021Q || et == VLAN_8021AD || et == VLAN_QINQ_OLD
    }
}

/// PPP protocol numbers inside a PPPoE session.
pub mod ppp {
    pub const IPV4: u16 = 0x0021;
    pub const IPV6: u16 = 0x0057;
}

/// TCP flag bits (byte 13 of the TCP header).
pub mod tcp_flags {
    pub const FIN: u8 = 0x01;
    pub const SYN: u8 = 0x02;
    pub const RST: u8 = 0x04;
    pub const PSH: u8 = 0x08;
    pub const ACK: u8 = 0x10;
    pub const URG: u8 = 0x20;
}

/// VLAN tags both parsers look through before giving up on a frame.
pub const MAX_VLAN_TAGS: usize = 2;
/// IPv6 extension headers walked before giving up (RFC 8200 order has at most 6 before L4).
pub const MAX_IPV6_EXT_HEADERS: usize = 6;

/// An IPv4 address in the IPv4-mapped IPv6 form (`::ffff:a.b.c.d`) that keys store.
#[inline(always)]
pub const fn v4_mapped(a: [u8; 4]) -> [u8; 16] {
    [
        0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, a[0], a[1], a[2], a[3],
    ]
}

/// Names of the kernel maps, shared so that loader and program cannot drift apart.
pub mod maps {
    /// Directional 5-tuple -> [`FlowStats`](crate::FlowStats).
    pub const FLOWS: &str = "FLOWS";
    /// Destination address -> [`HostStats`](crate::HostStats) of packets sent to it that
    /// `FLOWS` could not take.
    pub const DST_HOSTS: &str = "DST_HOSTS";
    /// Source address -> [`HostStats`](crate::HostStats) of packets it sent that `FLOWS` could
    /// not take.
    pub const SRC_HOSTS: &str = "SRC_HOSTS";
    /// Per-CPU array with one [`GlobalCounters`](crate::GlobalCounters).
    pub const COUNTERS: &str = "COUNTERS";
    /// Per-CPU direct-mapped flow cache in front of `FLOWS`: two banks of
    /// [`CacheSlot`](crate::CacheSlot)s, bank `epoch & 1` written by the program.
    pub const FLOW_CACHE: &str = "FLOW_CACHE";
    /// Array with one `u64`: the poll epoch (set by the agent, read by the program).
    pub const CACHE_EPOCH: &str = "CACHE_EPOCH";
    /// LPM trie of blocked source prefixes (16-byte addresses, IPv4-mapped for IPv4) ->
    /// [`BlockEntry`](crate::BlockEntry).
    pub const BLOCKLIST: &str = "BLOCKLIST";
    /// Per-destination rate limits: [`RateKey`](crate::RateKey) ->
    /// [`RateLimit`](crate::RateLimit).
    pub const RATE_LIMITS: &str = "RATE_LIMITS";
    /// Array with one `u64` of [`gates`](crate::gates) bits: which of the optional maps
    /// (blocklist, rate limits, evidence watch) hold entries, so the program looks them up only
    /// then.
    pub const GATES: &str = "GATES";
    /// Addresses whose packets are copied to `EVIDENCE` ->
    /// [`WatchEntry`](crate::WatchEntry) (16-byte address key).
    pub const WATCH: &str = "WATCH";
    /// Ring buffer of [`EvidenceRecord`](crate::EvidenceRecord)s: the first bytes of watched
    /// packets, for the alerts' pcap files.
    pub const EVIDENCE: &str = "EVIDENCE";
}

/// Bits of the `GATES` word.
pub mod gates {
    /// `BLOCKLIST` holds entries.
    pub const BLOCKLIST: u64 = 1;
    /// `RATE_LIMITS` holds entries.
    pub const RATE_LIMITS: u64 = 2;
    /// `WATCH` holds entries.
    pub const WATCH: u64 = 4;
}

/// Bytes of a packet an evidence record holds at most.
pub const EVIDENCE_SNAPLEN: usize = 256;
/// Default size of the evidence ring buffer (bytes; a power of two).
pub const DEFAULT_EVIDENCE_RING: u32 = 4 << 20;
/// Default size of the watch map (entries).
pub const DEFAULT_WATCH_ENTRIES: u32 = 1024;

/// `WatchEntry::flags`: match the address as the packet's source / destination.
pub mod watch {
    pub const AS_SRC: u32 = 1;
    pub const AS_DST: u32 = 2;
}

/// One watched address: packets from it (and/or to it, per `flags`) are copied to the evidence
/// ring for alert `alert_id` until `expires_ns` or the budget is spent.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WatchEntry {
    pub alert_id: u64,
    /// `CLOCK_MONOTONIC` ns after which nothing more is copied.
    pub expires_ns: u64,
    /// Packets and bytes copied so far (atomic adds).
    pub packets: u64,
    pub bytes: u64,
    /// Budget: packets and copied bytes at most (checked before each copy; under a race on
    /// several CPUs a few more may go).
    pub max_packets: u64,
    pub max_bytes: u64,
    /// Matching packets not copied: over the budget / the ring buffer was full.
    pub skipped: u64,
    pub lost: u64,
    /// [`watch`] bits.
    pub flags: u32,
    /// Bytes copied per packet at most (<= [`EVIDENCE_SNAPLEN`]).
    pub snaplen: u32,
}
const _: () = assert!(size_of::<WatchEntry>() == 72);

/// One copied packet in the evidence ring.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EvidenceRecord {
    pub alert_id: u64,
    /// `CLOCK_MONOTONIC` ns.
    pub ts_ns: u64,
    /// Length on the wire, and bytes of it in `data`.
    pub wire_len: u32,
    pub cap_len: u32,
    pub data: [u8; EVIDENCE_SNAPLEN],
}
const _: () = assert!(size_of::<EvidenceRecord>() == 24 + EVIDENCE_SNAPLEN);

/// Default size of the blocklist trie (entries).
pub const DEFAULT_BLOCK_ENTRIES: u32 = 16_384;
/// Default size of the rate-limit map (entries).
pub const DEFAULT_RATE_ENTRIES: u32 = 1_024;

/// Addresses in the blocklist trie are the 16-byte form keys use (IPv4-mapped for IPv4, so an
/// IPv4 /n is a prefix of length 96 + n); the trie key is aya's `lpm_trie::Key<[u8; 16]>`.
pub const BLOCK_KEY_BYTES: usize = 16;

/// One blocked source prefix: packets from it are dropped until `expires_ns`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BlockEntry {
    /// `CLOCK_MONOTONIC` ns after which the entry no longer drops (checked per packet, so an
    /// entry stops acting on time even if the agent is late to sweep it); 0: never expires.
    pub expires_ns: u64,
    /// Packets and bytes dropped by this entry (atomic adds).
    pub packets: u64,
    pub bytes: u64,
}
const _: () = assert!(size_of::<BlockEntry>() == 24);

/// Key of the rate-limit map: the protected destination and the protocol limited (0: every
/// IP protocol).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RateKey {
    pub addr: [u8; 16],
    pub proto: u8,
    pub _pad: [u8; 3],
}
const _: () = assert!(size_of::<RateKey>() == 20);

/// A rate limit toward one destination, as a GCRA (virtual scheduling) bucket: a packet passes
/// when the theoretical arrival time `tat_ns` is at most `burst_ns` ahead of now, and moves it
/// `interval_ns` on. One state word, no division on the packet path.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RateLimit {
    /// 1e9 / packets per second.
    pub interval_ns: u64,
    /// How far ahead of now `tat_ns` may run: the burst allowed, in time.
    pub burst_ns: u64,
    /// Theoretical arrival time of the next conforming packet (plain stores: under a race on
    /// two CPUs a packet or two more pass; never fewer).
    pub tat_ns: u64,
    /// As [`BlockEntry::expires_ns`].
    pub expires_ns: u64,
    /// Packets that matched and passed / were dropped, and the bytes dropped (atomic adds).
    pub passed: u64,
    pub dropped: u64,
    pub dropped_bytes: u64,
    /// Only this destination port (TCP/UDP; 0: any).
    pub dst_port: u16,
    /// 1: only TCP SYNs without ACK count (a SYN flood; established connections untouched).
    pub syn_only: u8,
    pub _pad: [u8; 5],
}
const _: () = assert!(size_of::<RateLimit>() == 64);

/// Name of the read-only global holding the cache's slots per bank (a power of two; 0 turns
/// the cache off and every packet goes to `FLOWS`).
pub const GLOBAL_CACHE_SLOTS: &str = "CACHE_SLOTS";

/// Default slots per bank of the flow cache, per CPU.
pub const DEFAULT_CACHE_SLOTS: u32 = 1024;

/// Name of the read-only global that selects coarse timestamps (`u8`, 0 or 1).
pub const GLOBAL_COARSE_TIME: &str = "COARSE_TIME";

/// Name of the XDP program in the object file.
pub const XDP_PROGRAM: &str = "sensor_xdp";
/// Name of the do-nothing XDP program used as the benchmark baseline.
pub const XDP_BASELINE_PROGRAM: &str = "baseline_pass";

/// Default size of the flow map (entries).
pub const DEFAULT_FLOW_ENTRIES: u32 = 262_144;
/// Default size of each per-host map (entries).
pub const DEFAULT_HOST_ENTRIES: u32 = 65_536;

/// One direction of a conversation exactly as the kernel saw it (not canonicalised: the agent
/// merges both directions, so the kernel never has to decide who initiated).
///
/// Ports are in host byte order. For ICMP/ICMPv6 `src_port` is 0 and `dst_port` is
/// `type << 8 | code` (the NetFlow convention). Non-first IP fragments and protocols without
/// ports use 0/0.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FlowKey {
    pub src_addr: [u8; 16],
    pub dst_addr: [u8; 16],
    pub src_port: u16,
    pub dst_port: u16,
    pub proto: u8,
    pub family: u8,
    pub _pad: [u8; 2],
}
const _: () = assert!(size_of::<FlowKey>() == 40);

/// Cumulative counters of one [`FlowKey`] since the kernel inserted it.
///
/// `packets`, `bytes` and the flag counters are updated with atomic adds, so they are exact
/// even when several CPUs hit one flow. `last_seen_ns`, `min_len` and `max_len` are plain
/// stores: under a race they may be off by one packet, never torn.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FlowStats {
    pub packets: u64,
    /// Frame bytes as the driver delivered them (L2 header included, FCS excluded).
    pub bytes: u64,
    /// `CLOCK_MONOTONIC` nanoseconds (`bpf_ktime_get_ns`).
    pub first_seen_ns: u64,
    pub last_seen_ns: u64,
    /// SYN without ACK: connection attempts.
    pub syn: u32,
    pub syn_ack: u32,
    pub fin: u32,
    pub rst: u32,
    pub psh: u32,
    /// ACK with none of SYN/FIN/RST/PSH/URG.
    pub ack_only: u32,
    pub min_len: u16,
    pub max_len: u16,
    pub _pad: [u8; 4],
    /// Sum of the squared frame lengths: with `bytes` and `packets` it gives the exact length
    /// spread on every path (sums add across CPUs, directions and polls).
    pub len_sq: u64,
}
const _: () = assert!(size_of::<FlowStats>() == 72);

/// One slot of the per-CPU flow cache: the flow it holds and its counts not yet in `FLOWS`.
/// Counts belong to the poll epoch in `epoch`; a slot of another epoch is empty.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CacheSlot {
    pub key: FlowKey,
    /// Low 32 bits of the epoch the counts were taken in.
    pub epoch: u32,
    pub _pad: [u8; 4],
    pub stats: FlowStats,
}
const _: () = assert!(size_of::<CacheSlot>() == 120);

/// A flow key as five little-endian words (its 40 bytes in order): what the program hashes and
/// compares (it reads them as aligned words; here they are assembled from the bytes).
pub fn key_words(key: &FlowKey) -> [u64; 5] {
    let mut b = [0u8; 40];
    b[..16].copy_from_slice(&key.src_addr);
    b[16..32].copy_from_slice(&key.dst_addr);
    b[32..34].copy_from_slice(&key.src_port.to_ne_bytes());
    b[34..36].copy_from_slice(&key.dst_port.to_ne_bytes());
    b[36] = key.proto;
    b[37] = key.family;
    b[38..40].copy_from_slice(&key._pad);
    let w = |i: usize| {
        let mut x = [0u8; 8];
        x.copy_from_slice(&b[i * 8..i * 8 + 8]);
        u64::from_ne_bytes(x)
    };
    [w(0), w(1), w(2), w(3), w(4)]
}

/// The cache slot of a key (as [`key_words`]) among `slots` (a power of two): MurmurHash3's
/// 64-bit finaliser over the folded words, so every input bit reaches the low bits the mask
/// keeps (IPv4-mapped addresses vary only in their last bytes). The same code runs in the
/// program and in userspace (tests craft collisions with it).
#[inline(always)]
pub const fn cache_index(w: &[u64; 5], slots: u32) -> u32 {
    let s = w[1] ^ w[0].rotate_left(29);
    let d = w[3] ^ w[2].rotate_left(29);
    let mut h = s ^ d.rotate_left(32) ^ w[4].wrapping_mul(0x9E37_79B9_7F4A_7C15);
    h ^= h >> 33;
    h = h.wrapping_mul(0xFF51_AFD7_ED55_8CCD);
    h ^= h >> 33;
    h = h.wrapping_mul(0xC4CE_B9FE_1A85_EC53);
    h ^= h >> 33;
    (h as u32) & slots.wrapping_sub(1)
}

/// Key of the per-host maps.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct HostKey {
    pub addr: [u8; 16],
    pub family: u8,
    pub _pad: [u8; 3],
}
const _: () = assert!(size_of::<HostKey>() == 20);

/// Overflow counters of one host: what it received (in `DST_HOSTS`) or sent (in `SRC_HOSTS`)
/// in packets that the flow map could not take.
///
/// Every IP packet is counted exactly once: in its flow, or here. These maps are keyed by one
/// address, so a spoofed-source flood that fills the flow map cannot starve `DST_HOSTS`: SYN
/// and packet rates per victim stay measurable, and the common path pays for one map update.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HostStats {
    pub packets: u64,
    pub bytes: u64,
    pub first_seen_ns: u64,
    pub last_seen_ns: u64,
    /// TCP SYN without ACK.
    pub syn: u64,
    pub syn_ack: u64,
    pub rst: u64,
    pub udp: u64,
    /// ICMP and ICMPv6 packets.
    pub icmp: u64,
    /// ICMP/ICMPv6 echo requests.
    pub icmp_echo: u64,
}
const _: () = assert!(size_of::<HostStats>() == 80);

/// Global per-CPU counters; the agent sums the CPUs.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GlobalCounters {
    pub packets: u64,
    pub bytes: u64,
    pub tcp_packets: u64,
    pub tcp_bytes: u64,
    pub udp_packets: u64,
    pub udp_bytes: u64,
    /// ICMP and ICMPv6.
    pub icmp_packets: u64,
    pub icmp_bytes: u64,
    /// IP packets of any other protocol (GRE, ESP, SCTP, ...).
    pub other_ip_packets: u64,
    pub other_ip_bytes: u64,
    /// ARP and every other non-IP EtherType.
    pub non_ip_packets: u64,
    pub non_ip_bytes: u64,
    pub ipv4_packets: u64,
    pub ipv6_packets: u64,
    /// Non-first fragments (counted under a port-0 key).
    pub fragments: u64,
    /// Frames whose headers were cut short or malformed; they are passed, not counted in flows.
    pub parse_errors: u64,
    /// Flow inserts refused because the map was full (`E2BIG`/`ENOMEM`).
    pub flow_insert_full: u64,
    /// Flow inserts refused for any other reason (`EBUSY`, ...).
    pub flow_insert_other: u64,
    /// Lost insert races (`EEXIST`), resolved by updating the winner's entry.
    pub flow_insert_races: u64,
    /// Overflow packets that `DST_HOSTS` / `SRC_HOSTS` could not take either.
    pub dst_insert_failures: u64,
    pub src_insert_failures: u64,
    /// Packets and bytes dropped by the blocklist.
    pub blocked_packets: u64,
    pub blocked_bytes: u64,
    /// Packets and bytes dropped by a rate limit.
    pub rate_limited_packets: u64,
    pub rate_limited_bytes: u64,
    /// Packets copied to the evidence ring, and watched packets the full ring refused.
    pub evidence_packets: u64,
    pub evidence_lost: u64,
}
const _: () = assert!(size_of::<GlobalCounters>() == 27 * 8);

/// Calls `$m!` with every field of [`GlobalCounters`], so field-wise operations list them once.
macro_rules! counter_fields {
    ($m:ident) => {
        $m!(
            packets,
            bytes,
            tcp_packets,
            tcp_bytes,
            udp_packets,
            udp_bytes,
            icmp_packets,
            icmp_bytes,
            other_ip_packets,
            other_ip_bytes,
            non_ip_packets,
            non_ip_bytes,
            ipv4_packets,
            ipv6_packets,
            fragments,
            parse_errors,
            flow_insert_full,
            flow_insert_other,
            flow_insert_races,
            dst_insert_failures,
            src_insert_failures,
            blocked_packets,
            blocked_bytes,
            rate_limited_packets,
            rate_limited_bytes,
            evidence_packets,
            evidence_lost
        )
    };
}

impl GlobalCounters {
    /// Field-wise sum, used to fold the per-CPU copies.
    pub fn add(&mut self, o: &Self) {
        macro_rules! add { ($($f:ident),*) => { $(self.$f = self.$f.wrapping_add(o.$f);)* } }
        counter_fields!(add);
    }

    /// Field-wise difference to an earlier reading (counters only grow; wraps like them).
    pub fn delta_since(&self, earlier: &Self) -> Self {
        let mut d = *self;
        macro_rules! sub { ($($f:ident),*) => { $(d.$f = self.$f.wrapping_sub(earlier.$f);)* } }
        counter_fields!(sub);
        d
    }
}

#[cfg(feature = "user")]
mod user {
    use super::*;
    // SAFETY (each impl): the type is repr(C) with integer and byte-array fields only and its
    // padding spelled out as fields, so every bit pattern is valid and no byte is uninitialised.
    // SAFETY: see above.
    unsafe impl aya::Pod for FlowKey {}
    // SAFETY: see above.
    unsafe impl aya::Pod for FlowStats {}
    // SAFETY: see above.
    unsafe impl aya::Pod for HostKey {}
    // SAFETY: see above.
    unsafe impl aya::Pod for HostStats {}
    // SAFETY: see above.
    unsafe impl aya::Pod for GlobalCounters {}
    // SAFETY: see above.
    unsafe impl aya::Pod for CacheSlot {}
    // SAFETY: see above.
    unsafe impl aya::Pod for BlockEntry {}
    // SAFETY: see above.
    unsafe impl aya::Pod for RateKey {}
    // SAFETY: see above.
    unsafe impl aya::Pod for RateLimit {}
    // SAFETY: see above.
    unsafe impl aya::Pod for WatchEntry {}
    // SAFETY: see above.
    unsafe impl aya::Pod for EvidenceRecord {}
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Flows spread over the slots: 65,536 distinct keys fill at least 97% of 4,096 slots
    /// with no slot holding more than 40 (a uniform hash: 16 on average).
    #[test]
    fn cache_index_spreads_flows() {
        let mut load = [0u32; 4096];
        for i in 0..65_536u32 {
            let k = FlowKey {
                src_addr: v4_mapped((0x0a10_0000 + i % 2048).to_be_bytes()),
                dst_addr: v4_mapped((0xc633_6400 + (i / 2048) % 64).to_be_bytes()),
                src_port: 1024 + (i / (2048 * 64)) as u16,
                dst_port: 443,
                proto: proto::TCP,
                family: family::IPV4,
                _pad: [0; 2],
            };
            load[cache_index(&key_words(&k), 4096) as usize] += 1;
        }
        let used = load.iter().filter(|&&n| n > 0).count();
        let max = load.iter().copied().max().unwrap_or(0);
        assert!(
            used >= 4096 * 97 / 100 && max <= 40,
            "used {used}, max {max}"
        );
    }

    #[test]
    fn counters_add_every_field() {
        // Fill each u64 with its index + 1 through the byte view, so a field missing from
        // `add` leaves a zero behind.
        let mut one = GlobalCounters::default();
        let words = size_of::<GlobalCounters>() / 8;
        let p = (&raw mut one).cast::<u64>();
        for i in 0..words {
            // SAFETY: GlobalCounters is repr(C) and made of `words` u64 fields.
            unsafe { p.add(i).write(i as u64 + 1) };
        }
        let mut sum = GlobalCounters::default();
        sum.add(&one);
        sum.add(&one);
        let q = (&raw const sum).cast::<u64>();
        for i in 0..words {
            // SAFETY: as above: `sum` is `words` u64 fields.
            let v = unsafe { q.add(i).read() };
            assert_eq!(v, 2 * (i as u64 + 1), "field {i} not summed");
        }
    }

    #[test]
    fn keys_have_no_implicit_padding() {
        // Field sizes add up to the struct size: nothing the compiler could leave uninitialised
        // (which would make equal keys hash differently in the kernel).
        assert_eq!(16 + 16 + 2 + 2 + 1 + 1 + 2, size_of::<FlowKey>());
        assert_eq!(16 + 1 + 3, size_of::<HostKey>());
        assert_eq!(4 * 8 + 6 * 4 + 2 + 2 + 4 + 8, size_of::<FlowStats>());
        assert_eq!(40 + 4 + 4 + size_of::<FlowStats>(), size_of::<CacheSlot>());
        assert_eq!(16 + 1 + 3, size_of::<RateKey>());
        assert_eq!(7 * 8 + 2 + 1 + 5, size_of::<RateLimit>());
    }
}
