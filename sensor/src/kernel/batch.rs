//! Draining a hash map in one system call per chunk (`BPF_MAP_LOOKUP_AND_DELETE_BATCH`, Linux
//! 5.6+), and reading a per-CPU array the same way: aya 0.14 has no batch operations, so the
//! `bpf(2)` calls are made here, on the map's file descriptor.

use std::{
    mem::size_of,
    os::fd::{AsFd as _, AsRawFd as _},
};

use aya::{Pod, maps::MapData};
use sensor_common::CacheSlot;

/// Reusable buffers for draining a map, so polling does not allocate per poll.
pub struct DrainBuffers<K, V> {
    /// Entries taken by the last drain.
    pub entries: Vec<(K, V)>,
    keys: Vec<K>,
    values: Vec<V>,
    pub(super) no_batch: bool,
}

impl<K: Pod + Default, V: Pod + Default> DrainBuffers<K, V> {
    pub fn new(chunk: usize) -> Self {
        Self {
            entries: Vec::new(),
            keys: vec![K::default(); chunk],
            values: vec![V::default(); chunk],
            no_batch: false,
        }
    }

    /// Whether drains use the kernel's batch operation (false after falling back).
    pub fn batched(&self) -> bool {
        !self.no_batch
    }
}

/// `union bpf_attr` as used by the `BPF_MAP_*_BATCH` commands.
#[repr(C)]
#[derive(Default)]
struct BatchAttr {
    in_batch: u64,
    out_batch: u64,
    keys: u64,
    values: u64,
    count: u32,
    map_fd: u32,
    elem_flags: u64,
    flags: u64,
}

const BPF_MAP_LOOKUP_AND_DELETE_BATCH: libc::c_long = 25;
const BPF_MAP_LOOKUP_BATCH: libc::c_long = 24;

/// `BPF_MAP_LOOKUP_BATCH` of `keys.len()` consecutive elements of a per-CPU array from index
/// `start`, every CPU's value (`values` holds `keys.len() x CPUs`, key-major). One syscall for
/// the whole bank instead of one per slot.
pub(super) fn lookup_batch_percpu(
    data: &MapData,
    start: u32,
    keys: &mut [u32],
    values: &mut [CacheSlot],
) -> std::io::Result<()> {
    let fd = data.fd().as_fd().as_raw_fd();
    // The batch starts after `in_batch`: the key before `start`, or the map's beginning.
    let prev = u64::from(start.wrapping_sub(1));
    let mut token_out = 0u64;
    let mut attr = BatchAttr {
        in_batch: if start == 0 {
            0
        } else {
            (&raw const prev) as u64
        },
        out_batch: (&raw mut token_out) as u64,
        keys: keys.as_mut_ptr() as u64,
        values: values.as_mut_ptr() as u64,
        count: keys.len() as u32,
        map_fd: fd as u32,
        ..BatchAttr::default()
    };
    // SAFETY: attr points at buffers of `count` keys and `count x CPUs` values (a 120-byte
    // slot is already a multiple of 8, the per-CPU stride) that outlive the call; the tokens
    // are 8 bytes (an array's key is 4, little-endian first).
    let rc = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_MAP_LOOKUP_BATCH,
            &raw mut attr,
            size_of::<BatchAttr>() as u32,
        )
    };
    if rc < 0 {
        let e = std::io::Error::last_os_error();
        // The end of the map was reached with every element copied.
        if e.raw_os_error() == Some(libc::ENOENT) && attr.count as usize == keys.len() {
            return Ok(());
        }
        return Err(e);
    }
    if attr.count as usize != keys.len() {
        return Err(std::io::Error::other(format!(
            "batch lookup copied {} of {} cache slots",
            attr.count,
            keys.len()
        )));
    }
    Ok(())
}

/// `BPF_MAP_LOOKUP_AND_DELETE_BATCH` over the whole map. Each element is copied and deleted
/// under its bucket lock, so a packet is either in what we took or in the map afterwards. aya
/// 0.14 has no batch API, hence the raw syscall.
pub(super) fn drain_batched<K: Pod, V: Pod>(
    data: &MapData,
    buf: &mut DrainBuffers<K, V>,
) -> std::io::Result<()> {
    let fd = data.fd().as_fd().as_raw_fd();
    let mut token_in = 0u64;
    let mut token_out = 0u64;
    let mut first = true;
    loop {
        let mut attr = BatchAttr {
            in_batch: if first {
                0
            } else {
                (&raw const token_in) as u64
            },
            out_batch: (&raw mut token_out) as u64,
            keys: buf.keys.as_mut_ptr() as u64,
            values: buf.values.as_mut_ptr() as u64,
            count: buf.keys.len() as u32,
            map_fd: fd as u32,
            ..BatchAttr::default()
        };
        // SAFETY: attr points at buffers of `count` keys and values that outlive the call, and
        // the tokens are 8 bytes (the hash map's token is 4).
        let rc = unsafe {
            libc::syscall(
                libc::SYS_bpf,
                BPF_MAP_LOOKUP_AND_DELETE_BATCH,
                &raw mut attr,
                size_of::<BatchAttr>() as u32,
            )
        };
        let err = (rc < 0).then(std::io::Error::last_os_error);
        let n = attr.count as usize;
        buf.entries.extend(
            buf.keys[..n]
                .iter()
                .copied()
                .zip(buf.values[..n].iter().copied()),
        );
        match err {
            None => {}
            Some(e) if e.raw_os_error() == Some(libc::ENOENT) => return Ok(()),
            // One bucket holds more entries than the buffer: grow it and retry this step.
            Some(e) if e.raw_os_error() == Some(libc::ENOSPC) => {
                let grown = buf.keys.len() * 2;
                buf.keys.resize(grown, buf.keys[0]);
                buf.values.resize(grown, buf.values[0]);
                continue;
            }
            Some(e) => return Err(e),
        }
        token_in = token_out;
        first = false;
    }
}
