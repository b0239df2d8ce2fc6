//! The maps the agent reads and writes, the loader's tunables, and the atomic add into a map
//! value that every room uses. Names are the contract with `sensor::kernel` (see
//! `sensor_common`'s map-name constants); sizes are the defaults the loader overrides.

use core::intrinsics::{AtomicOrdering, atomic_xadd};

use aya_ebpf::{
    Global,
    macros::map,
    maps::{Array, HashMap, LpmTrie, PerCpuArray, RingBuf},
};
use sensor_common::{
    BlockEntry, CacheSlot, DEFAULT_BLOCK_ENTRIES, DEFAULT_CACHE_SLOTS, DEFAULT_EVIDENCE_RING,
    DEFAULT_FLOW_ENTRIES, DEFAULT_HOST_ENTRIES, DEFAULT_RATE_ENTRIES, DEFAULT_WATCH_ENTRIES,
    FlowKey, FlowStats, GlobalCounters, HostKey, HostStats, RateKey, RateLimit, WatchEntry,
};

// Plain hashes, preallocated: fixed memory known at load time, no allocation on the packet
// path, and atomic adds keep counts exact without per-CPU copies. Sizes are overridden by the
// loader. docs/DESIGN.md explains the choice against LRU and per-CPU hashes.
#[map(name = "FLOWS")]
pub(crate) static FLOWS: HashMap<FlowKey, FlowStats> =
    HashMap::with_max_entries(DEFAULT_FLOW_ENTRIES, 0);

#[map(name = "DST_HOSTS")]
pub(crate) static DST_HOSTS: HashMap<HostKey, HostStats> =
    HashMap::with_max_entries(DEFAULT_HOST_ENTRIES, 0);

#[map(name = "SRC_HOSTS")]
pub(crate) static SRC_HOSTS: HashMap<HostKey, HostStats> =
    HashMap::with_max_entries(DEFAULT_HOST_ENTRIES, 0);

#[map(name = "COUNTERS")]
pub(crate) static COUNTERS: PerCpuArray<GlobalCounters> = PerCpuArray::with_max_entries(1, 0);

/// Two banks of `CACHE_SLOTS` slots per CPU; the loader sizes it. Array lookups are inlined
/// by the verifier: a hit costs a few loads and stores, no hash, no lock, no atomic.
#[map(name = "FLOW_CACHE")]
pub(crate) static FLOW_CACHE: PerCpuArray<CacheSlot> =
    PerCpuArray::with_max_entries(2 * DEFAULT_CACHE_SLOTS, 0);

/// The poll epoch: bank `epoch & 1` is written; the agent advances it at each poll and then
/// reads the bank it closed.
#[map(name = "CACHE_EPOCH")]
pub(crate) static CACHE_EPOCH: Array<u64> = Array::with_max_entries(1, 0);

/// Blocked source prefixes (a longest-prefix match over 16-byte addresses).
#[map(name = "BLOCKLIST")]
pub(crate) static BLOCKLIST: LpmTrie<[u8; 16], BlockEntry> =
    LpmTrie::with_max_entries(DEFAULT_BLOCK_ENTRIES, 0);

/// Rate limits toward protected destinations, by (destination, protocol or 0 for any).
#[map(name = "RATE_LIMITS")]
pub(crate) static RATE_LIMITS: HashMap<RateKey, RateLimit> =
    HashMap::with_max_entries(DEFAULT_RATE_ENTRIES, 0);

/// Which optional maps hold entries (`sensor_common::gates` bits): with none, a packet pays
/// one array load for all of them and no map lookup.
#[map(name = "GATES")]
pub(crate) static GATES: Array<u64> = Array::with_max_entries(1, 0);

/// Addresses of open alerts whose packets are copied as evidence.
#[map(name = "WATCH")]
pub(crate) static WATCH: HashMap<[u8; 16], WatchEntry> =
    HashMap::with_max_entries(DEFAULT_WATCH_ENTRIES, 0);

/// The first bytes of watched packets, for the agent to write into the alerts' pcap files.
/// A ring buffer, not per-packet events: bounded memory, and a full ring is counted, never
/// waited on.
#[map(name = "EVIDENCE")]
pub(crate) static EVIDENCE: RingBuf = RingBuf::with_byte_size(DEFAULT_EVIDENCE_RING, 0);

/// Per-CPU scratch for values handed to map helpers: the BPF stack is 512 bytes for the whole
/// call chain, and a flow's and a host's counts together would take a third of it.
#[map(name = "SCRATCH")]
pub(crate) static SCRATCH: PerCpuArray<Scratch> = PerCpuArray::with_max_entries(1, 0);

#[repr(C)]
pub(crate) struct Scratch {
    pub(crate) fresh: FlowStats,
    pub(crate) host: HostStats,
    pub(crate) host_key: HostKey,
}

/// Slots per bank, a power of two, set by the loader; 0 turns the cache off (every packet
/// goes to `FLOWS` as it comes).
#[unsafe(no_mangle)]
pub(crate) static CACHE_SLOTS: Global<u32> = Global::new(DEFAULT_CACHE_SLOTS);

/// Set to 1 by the loader to stamp flows with `bpf_ktime_get_coarse_ns` (one tick of
/// resolution, about 20 ns/packet cheaper here) instead of `bpf_ktime_get_ns`. A read-only
/// global: the verifier sees its value and drops the branch not taken.
#[unsafe(no_mangle)]
pub(crate) static COARSE_TIME: Global<u8> = Global::new(0);

/// An atomic add into a map value (other CPUs may add to the same one).
#[inline(always)]
pub(crate) fn add64(p: *mut u64, v: u64) {
    // SAFETY: `p` points into a map value the kernel keeps alive for this program run.
    unsafe { atomic_xadd::<u64, u64, { AtomicOrdering::Relaxed }>(p, v) };
}

/// As [`add64`], for the 32-bit flag counters.
#[inline(always)]
pub(crate) fn add32(p: *mut u32, v: u32) {
    // SAFETY: as for `add64`.
    unsafe { atomic_xadd::<u32, u32, { AtomicOrdering::Relaxed }>(p, v) };
}
