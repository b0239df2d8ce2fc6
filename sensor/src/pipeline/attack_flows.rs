//! The small flows of an attack, summed: a flood's millions of one-packet flows say what
//! their count says. The detector picks which flows are summed (those of an attack a rule
//! alert reports, past that alert's first rows of them); this transform adds them up per
//! alert, protocol and 10 s of data time into [`AttackFlowRow`]s for the sinks that store
//! rows, while the sinks that take every flow still get each one.

use std::collections::BTreeMap;

use crate::record::{AttackFlowRow, FlowRecord};

/// Data time one attack-flow row sums at most.
pub const ATTACK_ROW_NS: u64 = 10_000_000_000;

/// The rows of the current time slot, by alert and protocol.
#[derive(Debug, Default)]
pub struct AttackSums {
    rows: BTreeMap<(u64, u8), AttackFlowRow>,
    /// Start of the slot being summed (ns).
    slot: u64,
}

impl AttackSums {
    /// Data time reached `ts_ns`: the rows of an earlier slot, finished.
    pub fn advance(&mut self, ts_ns: u64) -> Vec<AttackFlowRow> {
        let slot = ts_ns / ATTACK_ROW_NS * ATTACK_ROW_NS;
        if slot > self.slot {
            self.slot = slot;
            return self.take();
        }
        Vec::new()
    }

    /// A flow of alert `alert` (run-local id) summed into its row of this slot.
    pub fn add(&mut self, rec: &FlowRecord, last_seen_ns: u64, alert: u64) {
        let slot = self.slot;
        let r = self
            .rows
            .entry((alert, rec.proto))
            .or_insert(AttackFlowRow {
                alert,
                ts: slot,
                proto: rec.proto,
                ..AttackFlowRow::default()
            });
        r.last_seen = r.last_seen.max(last_seen_ns);
        r.flows += 1;
        r.packets += rec.packets_fwd + rec.packets_rev;
        r.bytes += rec.bytes_fwd + rec.bytes_rev;
    }

    /// Every row summed so far (the end of the data).
    pub fn take(&mut self) -> Vec<AttackFlowRow> {
        std::mem::take(&mut self.rows).into_values().collect()
    }
}
