//! The live side of evidence: the recorder's addresses into the XDP program's watch map, and
//! the packets the program copied out of the evidence ring into the recorder.

use std::collections::BTreeMap;

use sensor_common::{WatchEntry, gates};

use super::{KernelError, SensorProgram, poller::monotonic_to_unix_offset};
use crate::{
    evidence::{LINKTYPE_ETHERNET, Recorder},
    metrics::{Counter, Registry},
    packet::{Outcome, parse_ethernet},
};

/// What is in the kernel's watch map, kept in step with the recorder.
#[derive(Debug, Default)]
pub struct KernelWatch {
    /// Per address: (flags, alert id, window end in Unix ns, packets budget, bytes budget).
    installed: BTreeMap<[u8; 16], (u32, u64, u64, u64, u64)>,
    /// Whether a loaded program has been given the state once.
    loaded: bool,
    /// Matching packets the kernel did not copy because their entry's budget was spent,
    /// summed from the entries it gave back (ring losses are a global kernel counter).
    skipped: Counter,
}

impl KernelWatch {
    pub fn new(m: &Registry) -> Self {
        Self {
            skipped: m.counter(
                "sensor_evidence_skipped_packets_total",
                "Packets of recorded alerts the kernel did not copy: their budget was spent.",
            ),
            ..Self::default()
        }
    }

    /// Writes the recorder's watches into `prog` when they changed (or the program is new),
    /// and turns the program's evidence path on exactly while something is watched.
    pub fn sync(
        &mut self,
        rec: &mut Recorder,
        prog: &mut SensorProgram,
    ) -> Result<(), KernelError> {
        let changed = rec.take_changed();
        if !changed && self.loaded {
            return Ok(());
        }
        let r = self.apply(rec, prog);
        // A failed update is tried again at the next poll.
        self.loaded = r.is_ok();
        r
    }

    fn apply(&mut self, rec: &Recorder, prog: &mut SensorProgram) -> Result<(), KernelError> {
        let want = rec.watches();
        let offset = monotonic_to_unix_offset();
        let gone: Vec<[u8; 16]> = self
            .installed
            .iter()
            .filter(|(a, v)| want.get(*a) != Some(*v))
            .map(|(a, _)| *a)
            .collect();
        for a in gone {
            if let Some(last) = prog.unwatch(a)? {
                self.skipped.add(last.skipped);
            }
            self.installed.remove(&a);
        }
        for (a, v) in &want {
            if self.installed.get(a) == Some(v) {
                continue;
            }
            let (flags, alert_id, end_ns, max_packets, max_bytes) = *v;
            let expires = (i128::from(end_ns) - offset).max(0) as u64;
            prog.watch(
                *a,
                WatchEntry {
                    alert_id,
                    expires_ns: expires,
                    max_packets,
                    max_bytes,
                    flags,
                    snaplen: rec.config().snaplen,
                    ..WatchEntry::default()
                },
            )?;
            self.installed.insert(*a, *v);
        }
        prog.set_gate(gates::WATCH, !self.installed.is_empty())
    }

    /// Moves what the kernel copied into the recorder; returns how many packets.
    pub fn drain(rec: &mut Recorder, prog: &mut SensorProgram) -> usize {
        let offset = monotonic_to_unix_offset();
        prog.drain_evidence(|r| {
            let cap = (r.cap_len as usize).min(r.data.len());
            let data = &r.data[..cap];
            let ts = (i128::from(r.ts_ns) + offset).max(0) as u64;
            match parse_ethernet(data) {
                Outcome::Flow(p) => rec.packet(
                    ts,
                    r.wire_len,
                    data,
                    LINKTYPE_ETHERNET,
                    Some((&p.key.src_addr, &p.key.dst_addr)),
                    Some(r.alert_id),
                ),
                // Headers past the copied bytes: the kernel matched it for this alert.
                _ => rec.packet(
                    ts,
                    r.wire_len,
                    data,
                    LINKTYPE_ETHERNET,
                    None,
                    Some(r.alert_id),
                ),
            }
        })
    }

    /// Removes every watch (shutdown).
    pub fn clear(&mut self, prog: &mut SensorProgram) -> Result<(), KernelError> {
        for a in std::mem::take(&mut self.installed).into_keys() {
            if let Some(last) = prog.unwatch(a)? {
                self.skipped.add(last.skipped);
            }
        }
        prog.set_gate(gates::WATCH, false)
    }
}
