//! The embedded XDP object: loading it with chosen map sizes and reading its maps.
//!
//! Everything that touches kernel maps goes through [`SensorProgram`], so tests, benchmarks and
//! the agent read the same counters the same way.

use std::{borrow::Borrow, collections::BTreeMap, hash::Hash};

use aya::{
    Ebpf, EbpfLoader, Pod,
    maps::{
        Array, HashMap, LpmTrie, Map, MapData, MapError, PerCpuArray, RingBuf,
        lpm_trie::Key as LpmKey,
    },
    programs::{ProgramError, Xdp},
};
use sensor_common::{
    BlockEntry, CacheSlot, DEFAULT_BLOCK_ENTRIES, DEFAULT_CACHE_SLOTS, DEFAULT_EVIDENCE_RING,
    DEFAULT_FLOW_ENTRIES, DEFAULT_HOST_ENTRIES, DEFAULT_RATE_ENTRIES, DEFAULT_WATCH_ENTRIES,
    EvidenceRecord, FlowKey, FlowStats, GLOBAL_CACHE_SLOTS, GLOBAL_COARSE_TIME, GlobalCounters,
    HostKey, HostStats, RateKey, RateLimit, WatchEntry, XDP_BASELINE_PROGRAM, XDP_PROGRAM, maps,
};

use super::batch::{DrainBuffers, drain_batched, lookup_batch_percpu};

/// The XDP object built by `build.rs`, aligned so aya can parse it in place.
pub static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/sensor"));

/// Why the kernel side could not be set up or read.
#[derive(Debug, thiserror::Error)]
pub enum KernelError {
    #[error(
        "this binary carries no XDP object: it was built with AYA_BUILD_SKIP=1; rebuild without it \
         (cargo xtask setup installs what the eBPF build needs)"
    )]
    NoObject,
    #[error("parsing or creating maps from the XDP object failed")]
    Load(#[from] aya::EbpfError),
    #[error("program `{0}` is missing from the XDP object")]
    MissingProgram(&'static str),
    #[error(
        "the kernel refused program `{name}` (needs CAP_BPF and CAP_NET_ADMIN, or root, and a \
         kernel with BTF): {source}"
    )]
    Program {
        name: &'static str,
        #[source]
        source: ProgramError,
    },
    #[error("map `{0}` is missing from the XDP object")]
    MissingMap(&'static str),
    #[error("map `{name}`")]
    Map {
        name: &'static str,
        #[source]
        source: MapError,
    },
}

/// Kernel-side settings (map sizes, clock), fixed when the object is loaded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KernelConfig {
    /// Entries of the 5-tuple flow map.
    pub flows: u32,
    /// Entries of each per-host overflow map (by destination, by source).
    pub hosts: u32,
    /// Stamp flows with the coarse clock (one scheduler tick of resolution, cheaper per packet).
    pub coarse_time: bool,
    /// Slots per bank of the per-CPU flow cache (rounded up to a power of two; 0: no cache,
    /// every packet goes to the flow map).
    pub cache_slots: u32,
    /// Entries of the blocklist trie (blocked source prefixes).
    pub block_entries: u32,
    /// Entries of the per-destination rate-limit map.
    pub rate_entries: u32,
    /// Entries of the evidence watch map (addresses of open alerts).
    pub watch_entries: u32,
    /// Bytes of the evidence ring buffer (rounded up to a power of two, at least a page).
    pub evidence_ring: u32,
}

impl Default for KernelConfig {
    fn default() -> Self {
        Self {
            flows: DEFAULT_FLOW_ENTRIES,
            hosts: DEFAULT_HOST_ENTRIES,
            coarse_time: false,
            cache_slots: DEFAULT_CACHE_SLOTS,
            block_entries: DEFAULT_BLOCK_ENTRIES,
            rate_entries: DEFAULT_RATE_ENTRIES,
            watch_entries: DEFAULT_WATCH_ENTRIES,
            evidence_ring: DEFAULT_EVIDENCE_RING,
        }
    }
}

/// The loaded (not necessarily attached) sensor program and its maps.
pub struct SensorProgram {
    ebpf: Ebpf,
    config: KernelConfig,
    /// The cache epoch the program writes now (bank `epoch & 1`).
    epoch: u64,
    /// The `GATES` word as last written.
    gates: u64,
    /// The evidence ring, mapped once (taken out of the object's maps).
    evidence: Option<RingBuf<MapData>>,
    /// Reused buffers of the cache reads.
    cache_keys: Vec<u32>,
    cache_values: Vec<CacheSlot>,
}

impl SensorProgram {
    /// Loads the object and verifies `sensor_xdp` in the kernel. Attaching is the caller's job.
    pub fn load(config: KernelConfig) -> Result<Self, KernelError> {
        if OBJECT.is_empty() {
            return Err(KernelError::NoObject);
        }
        raise_memlock_limit();
        let coarse = u8::from(config.coarse_time);
        let mut config = config;
        config.cache_slots = match config.cache_slots {
            0 => 0,
            n => n.min(1 << 20).next_power_of_two(),
        };
        let slots = config.cache_slots;
        let ebpf = EbpfLoader::new()
            .override_global(GLOBAL_COARSE_TIME, &coarse, true)
            .override_global(GLOBAL_CACHE_SLOTS, &slots, true)
            .map_max_entries(maps::FLOWS, config.flows)
            .map_max_entries(maps::DST_HOSTS, config.hosts)
            .map_max_entries(maps::SRC_HOSTS, config.hosts)
            .map_max_entries(maps::FLOW_CACHE, 2 * slots.max(1))
            .map_max_entries(maps::BLOCKLIST, config.block_entries.max(1))
            .map_max_entries(maps::RATE_LIMITS, config.rate_entries.max(1))
            .map_max_entries(maps::WATCH, config.watch_entries.max(1))
            .map_max_entries(
                maps::EVIDENCE,
                config
                    .evidence_ring
                    .clamp(4096, 1 << 30)
                    .next_power_of_two(),
            )
            .load(OBJECT)?;
        let mut this = Self {
            ebpf,
            config,
            epoch: 0,
            gates: 0,
            evidence: None,
            cache_keys: Vec::new(),
            cache_values: Vec::new(),
        };
        this.load_program(XDP_PROGRAM)?;
        let name = maps::EVIDENCE;
        let ring = this
            .ebpf
            .take_map(name)
            .ok_or(KernelError::MissingMap(name))?;
        this.evidence =
            Some(RingBuf::try_from(ring).map_err(|source| KernelError::Map { name, source })?);
        Ok(this)
    }

    pub fn config(&self) -> KernelConfig {
        self.config
    }

    /// The sensor's XDP program.
    pub fn xdp(&mut self) -> Result<&mut Xdp, KernelError> {
        self.program_mut(XDP_PROGRAM)
    }

    /// A do-nothing XDP program from the same object, loaded on first use; the baseline that
    /// benchmarks measure next to the sensor.
    pub fn baseline(&mut self) -> Result<&mut Xdp, KernelError> {
        if self.program_mut(XDP_BASELINE_PROGRAM)?.fd().is_err() {
            self.load_program(XDP_BASELINE_PROGRAM)?;
        }
        self.program_mut(XDP_BASELINE_PROGRAM)
    }

    fn load_program(&mut self, name: &'static str) -> Result<(), KernelError> {
        self.program_mut(name)?
            .load()
            .map_err(|source| KernelError::Program { name, source })
    }

    fn program_mut(&mut self, name: &'static str) -> Result<&mut Xdp, KernelError> {
        self.ebpf
            .program_mut(name)
            .ok_or(KernelError::MissingProgram(name))?
            .try_into()
            .map_err(|source| KernelError::Program { name, source })
    }

    /// Global counters summed over all CPUs.
    pub fn counters(&self) -> Result<GlobalCounters, KernelError> {
        let name = maps::COUNTERS;
        let map = self.ebpf.map(name).ok_or(KernelError::MissingMap(name))?;
        let array = PerCpuArray::<&MapData, GlobalCounters>::try_from(map)
            .map_err(|source| KernelError::Map { name, source })?;
        let per_cpu = array
            .get(&0, 0)
            .map_err(|source| KernelError::Map { name, source })?;
        let mut total = GlobalCounters::default();
        for c in per_cpu.iter() {
            total.add(c);
        }
        Ok(total)
    }

    /// What the kernel holds per flow now: the flow map plus the counts waiting in every CPU's
    /// cache slots of the current epoch, merged, ordered by key.
    pub fn flows(&self) -> Result<BTreeMap<FlowKey, FlowStats>, KernelError> {
        let mut all: BTreeMap<FlowKey, FlowStats> = self.snapshot(maps::FLOWS)?;
        let mut cached = Vec::new();
        self.read_cache(self.epoch, &mut Vec::new(), &mut Vec::new(), &mut cached)?;
        for (k, s) in cached {
            all.entry(k).and_modify(|e| merge_stats(e, &s)).or_insert(s);
        }
        Ok(all)
    }

    /// Closes the cache epoch: the program moves to the other bank, and the counts of the
    /// closed one (every CPU's) are appended to `out`. Each count is in exactly one place: in
    /// a slot of its epoch, or flushed into the flow map when its slot was taken.
    pub fn take_cache(&mut self, out: &mut Vec<(FlowKey, FlowStats)>) -> Result<(), KernelError> {
        if self.config.cache_slots == 0 {
            return Ok(());
        }
        let closed = self.epoch;
        self.set_epoch(closed + 1)?;
        // A run that read the old epoch finishes within microseconds (XDP runs to completion
        // with preemption off); give it far more before reading its bank.
        std::thread::sleep(std::time::Duration::from_micros(200));
        let (mut keys, mut values) = (
            std::mem::take(&mut self.cache_keys),
            std::mem::take(&mut self.cache_values),
        );
        let r = self.read_cache(closed, &mut keys, &mut values, out);
        (self.cache_keys, self.cache_values) = (keys, values);
        r
    }

    fn set_epoch(&mut self, epoch: u64) -> Result<(), KernelError> {
        self.set_word(maps::CACHE_EPOCH, epoch)?;
        self.epoch = epoch;
        Ok(())
    }

    /// Writes the one `u64` of a single-entry array map (the program's control words).
    fn set_word(&mut self, name: &'static str, value: u64) -> Result<(), KernelError> {
        let map = self
            .ebpf
            .map_mut(name)
            .ok_or(KernelError::MissingMap(name))?;
        let mut a = Array::<&mut MapData, u64>::try_from(map)
            .map_err(|source| KernelError::Map { name, source })?;
        a.set(0, value, 0)
            .map_err(|source| KernelError::Map { name, source })
    }

    /// Appends the counts held in the cache bank of `epoch` (slots tagged with it).
    fn read_cache(
        &self,
        epoch: u64,
        keys: &mut Vec<u32>,
        values: &mut Vec<CacheSlot>,
        out: &mut Vec<(FlowKey, FlowStats)>,
    ) -> Result<(), KernelError> {
        let slots = self.config.cache_slots as usize;
        if slots == 0 {
            return Ok(());
        }
        let name = maps::FLOW_CACHE;
        let io = |e: std::io::Error| KernelError::Map {
            name,
            source: MapError::IoError(e),
        };
        let cpus = aya::util::nr_cpus().map_err(|(_, e)| io(e))?;
        let bank = (epoch & 1) as usize;
        let map = self.ebpf.map(name).ok_or(KernelError::MissingMap(name))?;
        let Map::PerCpuArray(data) = map else {
            return Err(KernelError::Map {
                name,
                source: MapError::InvalidMapType { map_type: 0 },
            });
        };
        keys.resize(slots, 0);
        values.resize(slots * cpus, CacheSlot::default());
        match lookup_batch_percpu(data, (bank * slots) as u32, keys, values) {
            Ok(()) => {}
            // Kernels before 5.6: one lookup per slot.
            Err(e) if matches!(e.raw_os_error(), Some(libc::EINVAL | libc::ENOTSUP | 524)) => {
                let array = PerCpuArray::<&MapData, CacheSlot>::try_from(map)
                    .map_err(|source| KernelError::Map { name, source })?;
                for i in 0..slots {
                    let v = array
                        .get(&((bank * slots + i) as u32), 0)
                        .map_err(|source| KernelError::Map { name, source })?;
                    for (c, slot) in v.iter().enumerate() {
                        values[i * cpus + c] = *slot;
                    }
                }
            }
            Err(e) => return Err(io(e)),
        }
        let tag = epoch as u32;
        out.extend(
            values
                .iter()
                .filter(|s| s.epoch == tag && s.stats.packets != 0)
                .map(|s| (s.key, s.stats)),
        );
        Ok(())
    }

    /// Snapshot of the per-destination overflow counters.
    pub fn dst_hosts(&self) -> Result<BTreeMap<HostKey, HostStats>, KernelError> {
        self.snapshot(maps::DST_HOSTS)
    }

    /// Snapshot of the per-source overflow counters.
    pub fn src_hosts(&self) -> Result<BTreeMap<HostKey, HostStats>, KernelError> {
        self.snapshot(maps::SRC_HOSTS)
    }

    fn snapshot<K: Pod + Ord + Hash, V: Pod>(
        &self,
        name: &'static str,
    ) -> Result<BTreeMap<K, V>, KernelError> {
        let map = self.ebpf.map(name).ok_or(KernelError::MissingMap(name))?;
        let hash = HashMap::<&MapData, K, V>::try_from(map)
            .map_err(|source| KernelError::Map { name, source })?;
        hash.iter()
            .map(|kv| kv.map_err(|source| KernelError::Map { name, source }))
            .collect()
    }

    /// Takes every entry out of the flow map: what the kernel counted since the last drain.
    pub fn drain_flows(
        &mut self,
        buf: &mut DrainBuffers<FlowKey, FlowStats>,
    ) -> Result<(), KernelError> {
        self.drain(maps::FLOWS, buf)
    }

    /// Takes every entry out of the per-destination overflow map.
    pub fn drain_dst_hosts(
        &mut self,
        buf: &mut DrainBuffers<HostKey, HostStats>,
    ) -> Result<(), KernelError> {
        self.drain(maps::DST_HOSTS, buf)
    }

    /// Takes every entry out of the per-source overflow map.
    pub fn drain_src_hosts(
        &mut self,
        buf: &mut DrainBuffers<HostKey, HostStats>,
    ) -> Result<(), KernelError> {
        self.drain(maps::SRC_HOSTS, buf)
    }

    fn drain<K: Pod + Borrow<K>, V: Pod>(
        &mut self,
        name: &'static str,
        buf: &mut DrainBuffers<K, V>,
    ) -> Result<(), KernelError> {
        buf.entries.clear();
        let map = self.ebpf.map(name).ok_or(KernelError::MissingMap(name))?;
        let Map::HashMap(data) = map else {
            return Err(KernelError::Map {
                name,
                source: MapError::InvalidMapType { map_type: 0 },
            });
        };
        if !buf.no_batch {
            match drain_batched(data, buf) {
                Ok(()) => return Ok(()),
                // Kernels before 5.6 have no batch operations on hash maps.
                Err(e) if matches!(e.raw_os_error(), Some(libc::EINVAL | libc::ENOTSUP | 524)) => {
                    tracing::info!(
                        map = name,
                        "no batch map operations here; draining key by key"
                    );
                    buf.no_batch = true;
                }
                Err(e) => {
                    return Err(KernelError::Map {
                        name,
                        source: MapError::IoError(e),
                    });
                }
            }
        }
        self.drain_one_by_one(name, buf)
    }

    fn drain_one_by_one<K: Pod + Borrow<K>, V: Pod>(
        &mut self,
        name: &'static str,
        buf: &mut DrainBuffers<K, V>,
    ) -> Result<(), KernelError> {
        let map = self
            .ebpf
            .map_mut(name)
            .ok_or(KernelError::MissingMap(name))?;
        let mut hash = HashMap::<&mut MapData, K, V>::try_from(map)
            .map_err(|source| KernelError::Map { name, source })?;
        let keys: Vec<K> = hash
            .keys()
            .collect::<Result<_, _>>()
            .map_err(|source| KernelError::Map { name, source })?;
        for k in keys {
            // Read then delete: packets counted in between are lost (the batch path avoids it).
            let Ok(v) = hash.get(&k, 0) else { continue };
            match hash.remove(&k) {
                Ok(()) | Err(MapError::KeyNotFound) => buf.entries.push((k, v)),
                Err(source) => return Err(KernelError::Map { name, source }),
            }
        }
        Ok(())
    }

    /// Adds or replaces a blocklist entry: packets from `addr`/`prefix_len` (16-byte form, bits
    /// over it) are dropped until `expires_ns` (`CLOCK_MONOTONIC`; 0 never).
    pub fn block(
        &mut self,
        addr: [u8; 16],
        prefix_len: u32,
        expires_ns: u64,
    ) -> Result<(), KernelError> {
        let name = maps::BLOCKLIST;
        let mut trie = self.trie_mut()?;
        let entry = BlockEntry {
            expires_ns,
            ..BlockEntry::default()
        };
        trie.insert(&LpmKey::new(prefix_len, addr), entry, 0)
            .map_err(|source| KernelError::Map { name, source })
    }

    /// Removes a blocklist entry; returns its counters, or `None` when there was none.
    pub fn unblock(
        &mut self,
        addr: [u8; 16],
        prefix_len: u32,
    ) -> Result<Option<BlockEntry>, KernelError> {
        let name = maps::BLOCKLIST;
        let mut trie = self.trie_mut()?;
        let key = LpmKey::new(prefix_len, addr);
        let last = trie.get(&key, 0).ok();
        match trie.remove(&key) {
            Ok(()) => Ok(last),
            Err(e) if is_not_found(&e) => Ok(None),
            Err(source) => Err(KernelError::Map { name, source }),
        }
    }

    /// Every blocklist entry: (address, prefix length, entry with its drop counters).
    pub fn blocklist(&self) -> Result<Vec<([u8; 16], u32, BlockEntry)>, KernelError> {
        let name = maps::BLOCKLIST;
        let map = self.ebpf.map(name).ok_or(KernelError::MissingMap(name))?;
        let trie = LpmTrie::<&MapData, [u8; 16], BlockEntry>::try_from(map)
            .map_err(|source| KernelError::Map { name, source })?;
        trie.iter()
            .map(|kv| {
                kv.map(|(k, v)| (k.data(), k.prefix_len(), v))
                    .map_err(|source| KernelError::Map { name, source })
            })
            .collect()
    }

    fn trie_mut(&mut self) -> Result<LpmTrie<&mut MapData, [u8; 16], BlockEntry>, KernelError> {
        let name = maps::BLOCKLIST;
        let map = self
            .ebpf
            .map_mut(name)
            .ok_or(KernelError::MissingMap(name))?;
        LpmTrie::try_from(map).map_err(|source| KernelError::Map { name, source })
    }

    /// Adds or replaces a rate limit (its bucket starts full).
    pub fn rate_limit(&mut self, key: RateKey, limit: RateLimit) -> Result<(), KernelError> {
        let name = maps::RATE_LIMITS;
        let mut map = self.rate_map_mut()?;
        map.insert(key, limit, 0)
            .map_err(|source| KernelError::Map { name, source })
    }

    /// Removes a rate limit; returns its last state, or `None` when there was none.
    pub fn remove_rate_limit(&mut self, key: RateKey) -> Result<Option<RateLimit>, KernelError> {
        let name = maps::RATE_LIMITS;
        let mut map = self.rate_map_mut()?;
        let last = map.get(&key, 0).ok();
        match map.remove(&key) {
            Ok(()) => Ok(last),
            Err(e) if is_not_found(&e) => Ok(None),
            Err(source) => Err(KernelError::Map { name, source }),
        }
    }

    /// Every rate limit with its counters.
    pub fn rate_limits(&self) -> Result<BTreeMap<RateKey, RateLimit>, KernelError> {
        self.snapshot(maps::RATE_LIMITS)
    }

    fn rate_map_mut(&mut self) -> Result<HashMap<&mut MapData, RateKey, RateLimit>, KernelError> {
        let name = maps::RATE_LIMITS;
        let map = self
            .ebpf
            .map_mut(name)
            .ok_or(KernelError::MissingMap(name))?;
        HashMap::try_from(map).map_err(|source| KernelError::Map { name, source })
    }

    /// Watches `addr` (16-byte form) for alert evidence: matching packets are copied to the
    /// evidence ring per `entry` (its counters start at 0).
    pub fn watch(&mut self, addr: [u8; 16], entry: WatchEntry) -> Result<(), KernelError> {
        let name = maps::WATCH;
        let mut map = self.watch_map_mut()?;
        map.insert(addr, entry, 0)
            .map_err(|source| KernelError::Map { name, source })
    }

    /// Stops watching `addr`; its last counters, or `None` when it was not watched.
    pub fn unwatch(&mut self, addr: [u8; 16]) -> Result<Option<WatchEntry>, KernelError> {
        let name = maps::WATCH;
        let mut map = self.watch_map_mut()?;
        let last = map.get(&addr, 0).ok();
        match map.remove(&addr) {
            Ok(()) => Ok(last),
            Err(e) if is_not_found(&e) => Ok(None),
            Err(source) => Err(KernelError::Map { name, source }),
        }
    }

    /// Every watched address with its counters.
    pub fn watched(&self) -> Result<BTreeMap<[u8; 16], WatchEntry>, KernelError> {
        self.snapshot(maps::WATCH)
    }

    fn watch_map_mut(
        &mut self,
    ) -> Result<HashMap<&mut MapData, [u8; 16], WatchEntry>, KernelError> {
        let name = maps::WATCH;
        let map = self
            .ebpf
            .map_mut(name)
            .ok_or(KernelError::MissingMap(name))?;
        HashMap::try_from(map).map_err(|source| KernelError::Map { name, source })
    }

    /// Hands every record waiting in the evidence ring to `f`, oldest first; returns how many.
    pub fn drain_evidence(&mut self, mut f: impl FnMut(&EvidenceRecord)) -> usize {
        let Some(ring) = self.evidence.as_mut() else {
            return 0;
        };
        let mut n = 0;
        while let Some(item) = ring.next() {
            if item.len() >= std::mem::size_of::<EvidenceRecord>() {
                // SAFETY: the kernel wrote a whole `EvidenceRecord` (plain integers and bytes)
                // here; read unaligned, as the ring gives no alignment promise to us.
                let rec = unsafe { item.as_ptr().cast::<EvidenceRecord>().read_unaligned() };
                f(&rec);
                n += 1;
            }
        }
        n
    }

    /// Turns one gate (`sensor_common::gates` bit) on or off, keeping the others.
    pub fn set_gate(&mut self, bit: u64, on: bool) -> Result<(), KernelError> {
        let bits = if on {
            self.gates | bit
        } else {
            self.gates & !bit
        };
        if bits == self.gates {
            return Ok(());
        }
        self.set_gates(bits)
    }

    /// Tells the program which optional maps hold entries (`sensor_common::gates` bits); with
    /// 0 it looks up none of them.
    pub fn set_gates(&mut self, bits: u64) -> Result<(), KernelError> {
        self.set_word(maps::GATES, bits)?;
        self.gates = bits;
        Ok(())
    }

    /// Empties the flow and host maps and zeroes the counters (tests and benchmarks start from
    /// a known state with this).
    pub fn reset(&mut self) -> Result<(), KernelError> {
        // Two epochs on: every slot's tag is stale, the bank parity unchanged.
        if self.config.cache_slots != 0 {
            self.set_epoch(self.epoch + 2)?;
        }
        self.drain_flows(&mut DrainBuffers::new(4096))?;
        self.drain_dst_hosts(&mut DrainBuffers::new(4096))?;
        self.drain_src_hosts(&mut DrainBuffers::new(4096))?;
        let name = maps::COUNTERS;
        let map = self
            .ebpf
            .map_mut(name)
            .ok_or(KernelError::MissingMap(name))?;
        let mut array = PerCpuArray::<&mut MapData, GlobalCounters>::try_from(map)
            .map_err(|source| KernelError::Map { name, source })?;
        let cpus = aya::util::nr_cpus().map_err(|(_, e)| KernelError::Map {
            name,
            source: MapError::IoError(e),
        })?;
        let zeros = aya::maps::PerCpuValues::try_from(vec![GlobalCounters::default(); cpus])
            .map_err(|e| KernelError::Map {
                name,
                source: MapError::IoError(e),
            })?;
        array
            .set(0, zeros, 0)
            .map_err(|source| KernelError::Map { name, source })
    }
}

/// A removal of a key that is not there (aya reports it either way).
fn is_not_found(e: &MapError) -> bool {
    match e {
        MapError::KeyNotFound => true,
        MapError::SyscallError(s) => s.io_error.raw_os_error() == Some(libc::ENOENT),
        _ => false,
    }
}

/// Kernels before 5.11 charge BPF maps to RLIMIT_MEMLOCK; raise it so large maps load there too.
/// Newer kernels account to the memory cgroup and ignore it, so failure is not an error.
fn raise_memlock_limit() {
    let unlimited = libc::rlimit {
        rlim_cur: libc::RLIM_INFINITY,
        rlim_max: libc::RLIM_INFINITY,
    };
    // SAFETY: plain syscall with a valid pointer to a local.
    if unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &unlimited) } != 0 {
        tracing::debug!("could not raise RLIMIT_MEMLOCK; fine on kernels >= 5.11");
    }
}

/// Adds one flow's counts to another's (cache slots of several CPUs, or a slot and the map).
pub fn merge_stats(into: &mut FlowStats, s: &FlowStats) {
    if into.packets == 0 {
        *into = *s;
        return;
    }
    into.packets += s.packets;
    into.bytes += s.bytes;
    into.len_sq += s.len_sq;
    into.first_seen_ns = into.first_seen_ns.min(s.first_seen_ns);
    into.last_seen_ns = into.last_seen_ns.max(s.last_seen_ns);
    into.syn += s.syn;
    into.syn_ack += s.syn_ack;
    into.fin += s.fin;
    into.rst += s.rst;
    into.psh += s.psh;
    into.ack_only += s.ack_only;
    into.min_len = into.min_len.min(s.min_len);
    into.max_len = into.max_len.max(s.max_len);
}
