//! Outputs of the pipeline. Each implements [`Sink`]; the pipeline hands every sink the same
//! records at the same moments, on every path (replay, XDP, libpcap):
//!
//! - a finished flow when the table finishes it;
//! - an alert when it opens (so live consumers see it within one poll) and again, in its final
//!   state, when it closes;
//! - an anomaly when the model judges a flow anomalous;
//! - a per-second statistics row when its second has ended;
//! - a mitigation event (block, renewal, removal, expiry, refusal) when it happens (live).
//!
//! What a sink does with them is its own: the store writes an alert at open and updates the
//! same row at close, the webhook and the log act at open, an alerts JSONL file holds each
//! alert once, in its final state.

pub mod email;
pub mod eve;
pub mod ipfix;
pub mod jsonl;
pub mod log;
pub mod store;
pub mod syslog;
pub mod webhook;

use std::{io, path::PathBuf};

use crate::{
    mitigate::MitigationEvent,
    record::{AlertRecord, AnomalyRow, FlowRecord, StatsRow},
};

/// Why a sink could not take a record.
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    #[error("writing {path}")]
    Output {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("database")]
    Store(#[from] store::StoreError),
}

/// Totals a sink may want when the pipeline ends (a capture session's summary).
#[derive(Clone, Copy, Debug, Default)]
pub struct EndTotals {
    pub packets: u64,
    pub flows: u64,
}

/// One output of the pipeline. Every method has a do-nothing default, so a sink implements
/// only what it takes.
pub trait Sink {
    /// Whether this sink takes flow records (building one costs more than counting the flow).
    fn wants_flows(&self) -> bool {
        false
    }
    /// Whether this sink takes per-second statistics (counting them costs a little per packet).
    fn wants_stats(&self) -> bool {
        false
    }
    fn flow(&mut self, _rec: &FlowRecord, _last_seen_ns: u64) -> Result<(), SinkError> {
        Ok(())
    }
    fn alert_opened(&mut self, _rec: &AlertRecord, _last_seen_ns: u64) -> Result<(), SinkError> {
        Ok(())
    }
    fn alert_closed(&mut self, _rec: &AlertRecord, _last_seen_ns: u64) -> Result<(), SinkError> {
        Ok(())
    }
    fn anomaly(&mut self, _a: &AnomalyRow) -> Result<(), SinkError> {
        Ok(())
    }
    fn stats(&mut self, _s: &StatsRow) -> Result<(), SinkError> {
        Ok(())
    }
    fn mitigation(&mut self, _e: &MitigationEvent) -> Result<(), SinkError> {
        Ok(())
    }
    /// Data time moved on (every live poll): hand over what is buffered.
    fn tick(&mut self) -> Result<(), SinkError> {
        Ok(())
    }
    /// End of the data: flush what is buffered.
    fn finish(&mut self, _totals: EndTotals) -> Result<(), SinkError> {
        Ok(())
    }
}

/// A borrowed sink is a sink (the caller keeps it, and reads it after the pipeline ends).
impl<S: Sink + ?Sized> Sink for &mut S {
    fn wants_flows(&self) -> bool {
        (**self).wants_flows()
    }
    fn wants_stats(&self) -> bool {
        (**self).wants_stats()
    }
    fn flow(&mut self, rec: &FlowRecord, last_seen_ns: u64) -> Result<(), SinkError> {
        (**self).flow(rec, last_seen_ns)
    }
    fn alert_opened(&mut self, rec: &AlertRecord, last_seen_ns: u64) -> Result<(), SinkError> {
        (**self).alert_opened(rec, last_seen_ns)
    }
    fn alert_closed(&mut self, rec: &AlertRecord, last_seen_ns: u64) -> Result<(), SinkError> {
        (**self).alert_closed(rec, last_seen_ns)
    }
    fn anomaly(&mut self, a: &AnomalyRow) -> Result<(), SinkError> {
        (**self).anomaly(a)
    }
    fn stats(&mut self, s: &StatsRow) -> Result<(), SinkError> {
        (**self).stats(s)
    }
    fn mitigation(&mut self, e: &MitigationEvent) -> Result<(), SinkError> {
        (**self).mitigation(e)
    }
    fn tick(&mut self) -> Result<(), SinkError> {
        (**self).tick()
    }
    fn finish(&mut self, totals: EndTotals) -> Result<(), SinkError> {
        (**self).finish(totals)
    }
}
