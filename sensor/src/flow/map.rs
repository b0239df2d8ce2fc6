//! The flow table's storage: a linear-probing index of 8-byte slots over a dense slab of
//! entries.
//!
//! Hand-written because it buys speed where it matters: with 100k+ flows alive, a lookup in a
//! general hash map is a cache (and, on VMs, TLB) miss into a large table, and nothing lets the
//! caller start that miss early. Here the index is small (it stays in cache), the hash is
//! computed once and kept, and `prefetch` lets the replay loop start the memory reads for a
//! batch of packets before it processes them, so the misses overlap instead of queuing.

use std::hash::BuildHasher as _;

use rustc_hash::FxBuildHasher;

use crate::flow::BiKey;

#[derive(Clone, Copy, Default)]
struct Slot {
    /// High half of the hash, to skip most non-matching entries without touching the slab.
    tag: u32,
    /// Slab index + 1; 0 marks an empty slot.
    idx: u32,
}

struct Entry<V> {
    key: BiKey,
    hash: u64,
    value: Option<V>,
}

/// Map from [`BiKey`] to `V` with stable entry ids (valid until the entry is removed).
pub struct FlowMap<V> {
    index: Vec<Slot>,
    mask: usize,
    slab: Vec<Entry<V>>,
    free: Vec<u32>,
    len: usize,
}

pub type EntryId = u32;

impl<V> FlowMap<V> {
    pub fn with_capacity(n: usize) -> Self {
        let slots = (n.max(16) * 2).next_power_of_two();
        Self {
            index: vec![Slot::default(); slots],
            mask: slots - 1,
            slab: Vec::with_capacity(n),
            free: Vec::new(),
            len: 0,
        }
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn hash(key: &BiKey) -> u64 {
        FxBuildHasher.hash_one(key)
    }

    /// First stage of a batched lookup: start loading the index slot of `hash`.
    #[inline]
    pub fn prefetch_slot(&self, hash: u64) {
        prefetch(self.index.as_ptr().wrapping_add(hash as usize & self.mask));
    }

    /// Second stage, once the slot has had time to arrive: start loading its entry.
    #[inline]
    pub fn prefetch_entry(&self, hash: u64) {
        let idx = self.index[hash as usize & self.mask].idx;
        if idx != 0 {
            prefetch(self.slab.as_ptr().wrapping_add(idx as usize - 1));
        }
    }

    pub fn find(&self, hash: u64, key: &BiKey) -> Option<EntryId> {
        let tag = (hash >> 32) as u32;
        let mut i = hash as usize & self.mask;
        loop {
            let s = self.index[i];
            if s.idx == 0 {
                return None;
            }
            if s.tag == tag && self.slab[s.idx as usize - 1].key == *key {
                return Some(s.idx - 1);
            }
            i = (i + 1) & self.mask;
        }
    }

    /// Inserts a key known to be absent.
    pub fn insert(&mut self, hash: u64, key: BiKey, value: V) -> EntryId {
        if (self.len + 1) * 2 > self.index.len() {
            self.grow();
        }
        let entry = Entry {
            key,
            hash,
            value: Some(value),
        };
        let id = match self.free.pop() {
            Some(id) => {
                self.slab[id as usize] = entry;
                id
            }
            None => {
                self.slab.push(entry);
                (self.slab.len() - 1) as u32
            }
        };
        self.place(hash, id);
        self.len += 1;
        id
    }

    fn place(&mut self, hash: u64, id: EntryId) {
        let mut i = hash as usize & self.mask;
        while self.index[i].idx != 0 {
            i = (i + 1) & self.mask;
        }
        self.index[i] = Slot {
            tag: (hash >> 32) as u32,
            idx: id + 1,
        };
    }

    fn grow(&mut self) {
        let slots = self.index.len() * 2;
        self.index = vec![Slot::default(); slots];
        self.mask = slots - 1;
        for id in 0..self.slab.len() {
            if self.slab[id].value.is_some() {
                self.place(self.slab[id].hash, id as u32);
            }
        }
    }

    pub fn get_mut(&mut self, id: EntryId) -> &mut V {
        self.slab[id as usize]
            .value
            .as_mut()
            .expect("live entry id")
    }

    /// Removes an entry, closing the gap in its probe run (backward-shift deletion, so no
    /// tombstones accumulate).
    pub fn remove(&mut self, id: EntryId) -> Option<V> {
        let hash = self.slab.get(id as usize)?.hash;
        let value = self.slab[id as usize].value.take()?;
        let mut i = hash as usize & self.mask;
        while self.index[i].idx != id + 1 {
            i = (i + 1) & self.mask;
        }
        let mut j = i;
        loop {
            j = (j + 1) & self.mask;
            let s = self.index[j];
            if s.idx == 0 {
                break;
            }
            let home = self.slab[s.idx as usize - 1].hash as usize & self.mask;
            // Move `s` into the hole unless its home lies cyclically in (i, j].
            let stays = if i <= j {
                i < home && home <= j
            } else {
                i < home || home <= j
            };
            if !stays {
                self.index[i] = s;
                i = j;
            }
        }
        self.index[i] = Slot::default();
        self.free.push(id);
        self.len -= 1;
        Some(value)
    }

    pub fn values(&self) -> impl Iterator<Item = &V> {
        self.slab.iter().filter_map(|e| e.value.as_ref())
    }

    /// Ids of all live entries (a snapshot, so the caller may remove while walking it).
    pub fn ids(&self) -> Vec<EntryId> {
        (0..self.slab.len() as u32)
            .filter(|&i| self.slab[i as usize].value.is_some())
            .collect()
    }

    /// Takes a value out without fixing the index: only for emptying the whole map, which
    /// `clear` must then follow.
    pub fn take(&mut self, id: EntryId) -> Option<V> {
        self.slab.get_mut(id as usize)?.value.take()
    }

    /// Forgets every entry (after `take`-ing them all, or to drop them).
    pub fn clear(&mut self) {
        self.index.fill(Slot::default());
        self.free.clear();
        self.slab.clear();
        self.len = 0;
    }

    /// Takes every value out, leaving the map empty.
    pub fn drain(&mut self) -> Vec<V> {
        self.index.fill(Slot::default());
        self.free.clear();
        self.len = 0;
        self.slab.drain(..).filter_map(|e| e.value).collect()
    }
}

#[inline]
fn prefetch<T>(p: *const T) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: prefetching is a hint; it never faults, whatever the address.
    unsafe {
        core::arch::x86_64::_mm_prefetch(p.cast::<i8>(), core::arch::x86_64::_MM_HINT_T0);
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = p;
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use rand::{Rng as _, SeedableRng as _, rngs::StdRng};

    use super::*;

    fn key(n: u32) -> BiKey {
        let mut k = BiKey {
            lo_addr: [0; 16],
            hi_addr: [0; 16],
            lo_port: 0,
            hi_port: 0,
            proto: 6,
            family: 4,
        };
        k.lo_addr[12..].copy_from_slice(&n.to_be_bytes());
        k.hi_port = (n % 7) as u16;
        k
    }

    /// Random inserts and removals against std's HashMap, through several growths, with a
    /// tiny index so probe runs wrap around the end.
    #[test]
    fn behaves_like_a_hash_map() {
        let mut rng = StdRng::seed_from_u64(7);
        let mut m: FlowMap<u32> = FlowMap::with_capacity(4);
        let mut ids: HashMap<u32, EntryId> = HashMap::new();
        for step in 0..200_000u32 {
            let n = rng.random_range(0..3000);
            let k = key(n);
            let h = FlowMap::<u32>::hash(&k);
            match (m.find(h, &k), ids.get(&n)) {
                (Some(id), Some(&want)) => {
                    assert_eq!(id, want, "step {step}");
                    if rng.random_bool(0.5) {
                        assert_eq!(m.remove(id), Some(n));
                        ids.remove(&n);
                    } else {
                        *m.get_mut(id) = n;
                    }
                }
                (None, None) => {
                    ids.insert(n, m.insert(h, k, n));
                }
                (got, want) => panic!("step {step}: key {n}: map {got:?}, reference {want:?}"),
            }
            assert_eq!(m.len(), ids.len());
        }
        let mut left: Vec<u32> = m.drain();
        left.sort_unstable();
        let mut want: Vec<u32> = ids.keys().copied().collect();
        want.sort_unstable();
        assert_eq!(left, want);
        assert!(m.is_empty());
    }
}
