//! The store as a pipeline output.

use super::{Msg, Store, StoreError};
use crate::{
    mitigate::MitigationEvent,
    record::{AlertRecord, AnomalyRow, AttackFlowRow, FlowRecord, StatsRow},
};

/// The store as a pipeline output, for one capture session. Flows, anomalies and statistics
/// are handed to the writer in batches (a wake-up per row cost more than the row); alerts go
/// at once, and the batch goes at every tick (each live poll) and at the end.
pub struct StoreSink<'a> {
    store: &'a Store,
    /// Replay waits for queue space; live ingest counts a drop instead of waiting on the disk.
    block: bool,
    buf: Vec<Msg>,
}

/// Rows a sink gathers before it hands them over.
const SINK_BATCH: usize = 256;

impl StoreSink<'_> {
    fn push(&mut self, m: Msg) -> Result<(), crate::sink::SinkError> {
        self.buf.push(m);
        if self.buf.len() >= SINK_BATCH {
            self.hand_over()?;
        }
        Ok(())
    }

    fn hand_over(&mut self) -> Result<(), crate::sink::SinkError> {
        let rows = std::mem::replace(&mut self.buf, Vec::with_capacity(SINK_BATCH));
        Ok(self.store.send(Msg::Batch(rows), self.block)?)
    }
}

impl<'a> StoreSink<'a> {
    /// Starts a capture session (`kind` "replay" or "live", `source` what it reads).
    pub fn new(
        store: &'a Store,
        kind: &str,
        source: &str,
        block: bool,
    ) -> Result<Self, StoreError> {
        match store.start_session(kind, source) {
            Ok(_) => {}
            // Live ingest goes on: the session is created once the database takes writes.
            Err(StoreError::Unavailable { .. }) if !block => {}
            Err(e) => return Err(e),
        }
        Ok(Self {
            store,
            block,
            buf: Vec::with_capacity(SINK_BATCH),
        })
    }
}

impl crate::sink::Sink for StoreSink<'_> {
    fn wants_flows(&self) -> bool {
        true
    }
    fn wants_stats(&self) -> bool {
        true
    }
    fn flow(&mut self, rec: &FlowRecord, last_seen_ns: u64) -> Result<(), crate::sink::SinkError> {
        let sid = self.store.sid();
        self.push(Msg::Flow(Box::new(rec.clone()), last_seen_ns, sid))
    }
    /// No row of its own: it is in the alert's summed row.
    fn summed_flow(
        &mut self,
        _rec: &FlowRecord,
        _last_seen_ns: u64,
    ) -> Result<(), crate::sink::SinkError> {
        Ok(())
    }
    fn attack_flows(&mut self, row: &AttackFlowRow) -> Result<(), crate::sink::SinkError> {
        let sid = self.store.sid();
        self.push(Msg::AttackFlows(Box::new(*row), sid))
    }
    fn alert_opened(
        &mut self,
        rec: &AlertRecord,
        last_seen_ns: u64,
    ) -> Result<(), crate::sink::SinkError> {
        // Rows of the same flows first: committed before the alert unless a backlog holds
        // them (a flood's), which the alert does not wait for (the priority lane).
        self.hand_over()?;
        Ok(self.store.alert(rec.clone(), last_seen_ns)?)
    }
    /// The same row as at open (upsert on the session's alert key), with the figures so far.
    fn alert_updated(
        &mut self,
        rec: &AlertRecord,
        last_seen_ns: u64,
    ) -> Result<(), crate::sink::SinkError> {
        self.alert_opened(rec, last_seen_ns)
    }
    /// The same row as at open (upsert on the session's alert key), now in its final state.
    fn alert_closed(
        &mut self,
        rec: &AlertRecord,
        last_seen_ns: u64,
    ) -> Result<(), crate::sink::SinkError> {
        self.alert_updated(rec, last_seen_ns)
    }
    fn anomaly(&mut self, a: &AnomalyRow) -> Result<(), crate::sink::SinkError> {
        self.push(Msg::Anomaly(Box::new(a.clone())))
    }
    fn stats(&mut self, s: &StatsRow) -> Result<(), crate::sink::SinkError> {
        self.push(Msg::Stats(*s))
    }
    /// Audit rows are never dropped nor held behind a backlog (they are rare, and an operator
    /// must be able to tell who blocked what, when).
    fn mitigation(&mut self, e: &MitigationEvent) -> Result<(), crate::sink::SinkError> {
        self.hand_over()?;
        Ok(self.store.mitigation(e.clone())?)
    }
    fn rule_change(
        &mut self,
        c: &crate::ruleset::RuleChange,
    ) -> Result<(), crate::sink::SinkError> {
        self.hand_over()?;
        Ok(self.store.rule_change(c.clone())?)
    }
    fn tick(&mut self) -> Result<(), crate::sink::SinkError> {
        self.hand_over()
    }
    fn finish(&mut self, t: crate::sink::EndTotals) -> Result<(), crate::sink::SinkError> {
        self.hand_over()?;
        self.store.end_session(t.packets, t.flows)?;
        Ok(self.store.sync()?)
    }
}
