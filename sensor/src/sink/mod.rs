//! Outputs of the pipeline. Each implements [`Sink`]; the pipeline hands every sink the same
//! records at the same moments, on every path (replay, XDP, libpcap):
//!
//! - a finished flow when the table finishes it (a small flow of an attack an alert reports,
//!   past the alert's first rows of them, comes as an attack flow: the store sums those into
//!   the alert's attack-flow rows instead of a row each);
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
pub mod worker;

use std::{io, path::PathBuf};

use crate::{
    check::Invalid,
    metrics::Registry,
    mitigate::MitigationEvent,
    record::{AlertRecord, AnomalyRow, AttackFlowRow, FlowRecord, StatsRow},
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
    #[error(transparent)]
    Invalid(#[from] Invalid),
    /// An output (syslog, IPFIX, email) that could not start: the message says which.
    #[error("{0}")]
    Start(String),
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
    /// A small flow of an attack that the pipeline also sums into the attack's row (see
    /// `pipeline::attack_flows`): a sink that stores rows leaves it out (the summed row tells
    /// it); the others take it as any flow.
    fn summed_flow(&mut self, rec: &FlowRecord, last_seen_ns: u64) -> Result<(), SinkError> {
        self.flow(rec, last_seen_ns)
    }
    /// An attack's small flows summed over one protocol and 10 s (sinks that store rows).
    fn attack_flows(&mut self, _row: &AttackFlowRow) -> Result<(), SinkError> {
        Ok(())
    }
    fn alert_opened(&mut self, _rec: &AlertRecord, _last_seen_ns: u64) -> Result<(), SinkError> {
        Ok(())
    }
    /// An open alert whose figures changed (at most once a data second per alert): sinks that
    /// show an attack while it runs (the store, so the API and the dashboard) take it; event
    /// streams keep their open and close events (docs/DETECTION.md, "Incidents").
    fn alert_updated(&mut self, _rec: &AlertRecord, _last_seen_ns: u64) -> Result<(), SinkError> {
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
    /// A change of the rules (who, when, what): the audit table.
    fn rule_change(&mut self, _c: &crate::ruleset::RuleChange) -> Result<(), SinkError> {
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
    fn summed_flow(&mut self, rec: &FlowRecord, last_seen_ns: u64) -> Result<(), SinkError> {
        (**self).summed_flow(rec, last_seen_ns)
    }
    fn attack_flows(&mut self, row: &AttackFlowRow) -> Result<(), SinkError> {
        (**self).attack_flows(row)
    }
    fn alert_opened(&mut self, rec: &AlertRecord, last_seen_ns: u64) -> Result<(), SinkError> {
        (**self).alert_opened(rec, last_seen_ns)
    }
    fn alert_updated(&mut self, rec: &AlertRecord, last_seen_ns: u64) -> Result<(), SinkError> {
        (**self).alert_updated(rec, last_seen_ns)
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

/// An output that takes alerts one at a time and never blocks (webhook, syslog, email).
pub trait AlertOutput {
    fn send(&self, a: &AlertRecord);
}

/// An [`AlertOutput`] as a pipeline output: each alert when it opens (live, or the webhook's
/// immediacy), or once in its final state when it closes (`at_close`, replay).
pub struct AlertSink<'a> {
    pub out: &'a dyn AlertOutput,
    pub at_close: bool,
}

impl Sink for AlertSink<'_> {
    fn alert_opened(&mut self, rec: &AlertRecord, _: u64) -> Result<(), SinkError> {
        if !self.at_close {
            self.out.send(rec);
        }
        Ok(())
    }
    fn alert_closed(&mut self, rec: &AlertRecord, _: u64) -> Result<(), SinkError> {
        if self.at_close {
            self.out.send(rec);
        }
        Ok(())
    }
}

/// A config section that builds its output (the shape of vector's `SinkConfig::build`):
/// an output is its own file, implementing this for its section, plus one entry in
/// `Config::outputs`.
pub trait OutputConfig {
    /// Values serde cannot check (addresses, ranges), named by key.
    fn check(&self) -> Result<(), Invalid>;
    /// The running output, or `None` when the section leaves it off. It declares its
    /// counters in `metrics`. A bad value or a file that cannot be opened is an error here,
    /// before anything runs.
    fn build(&self, metrics: &Registry) -> Result<Option<Box<dyn Output>>, SinkError>;
}

/// A running network or file output.
pub trait Output {
    /// Its pipeline sink. Live never waits for an output and hands each alert over when it
    /// opens; replay waits for queue space and hands over each alert in its final state.
    fn sink(&self, live: bool) -> Box<dyn Sink + '_>;
    /// Delivers what is queued and stops; a line for replay's summary, if it has one.
    fn close(self: Box<Self>) -> Option<String> {
        None
    }
}

/// The outputs the config turns on, started together; [`Outputs::close`] (or dropping them)
/// delivers what they hold.
#[derive(Default)]
pub struct Outputs(Vec<Box<dyn Output>>);

impl Outputs {
    /// Builds every section that is on; the first that fails stops the start.
    pub fn start(sections: &[&dyn OutputConfig], metrics: &Registry) -> Result<Self, SinkError> {
        let mut v = Vec::new();
        for s in sections {
            if let Some(o) = s.build(metrics)? {
                v.push(o);
            }
        }
        Ok(Self(v))
    }

    /// Their sinks, in the config's order.
    pub fn sinks(&self, live: bool) -> Vec<Box<dyn Sink + '_>> {
        self.0.iter().map(|o| o.sink(live)).collect()
    }

    /// Drains and stops each; their summary lines.
    pub fn close(self) -> Vec<String> {
        self.0.into_iter().filter_map(Output::close).collect()
    }
}
