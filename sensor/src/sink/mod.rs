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
    /// An output (syslog, IPFIX, email) that could not start: the message names the key.
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

/// The config's network and file outputs (`[webhook]`, `[eve]`, `[syslog]`, `[ipfix]`,
/// `[email]`), started together; dropping them delivers what they hold.
pub struct Outputs {
    pub webhook: Option<webhook::Webhook>,
    pub eve: Option<eve::EveWriter>,
    pub syslog: Option<syslog::Syslog>,
    pub ipfix: Option<ipfix::Ipfix>,
    pub email: Option<email::Email>,
}

impl Outputs {
    /// Starts what the config turns on; a bad setting or an EVE file that cannot be opened is
    /// an error before anything runs.
    pub fn start(c: &crate::config::Config) -> Result<Self, SinkError> {
        Ok(Self {
            webhook: webhook::Webhook::start(&c.webhook),
            eve: eve::EveWriter::start(&c.eve)?,
            syslog: syslog::Syslog::start(&c.syslog).map_err(SinkError::Start)?,
            ipfix: ipfix::Ipfix::start(&c.ipfix).map_err(SinkError::Start)?,
            email: email::Email::start(&c.email).map_err(SinkError::Start)?,
        })
    }

    /// Their sinks. Live never waits for an output and hands each alert over when it opens;
    /// replay waits for queue space and hands over each alert in its final state (the webhook
    /// posts at open on both).
    pub fn sinks(&self, live: bool) -> Vec<Box<dyn Sink + '_>> {
        let mut v: Vec<Box<dyn Sink + '_>> = Vec::new();
        if let Some(w) = &self.webhook {
            v.push(Box::new(AlertSink {
                out: w,
                at_close: false,
            }));
        }
        if let Some(e) = &self.eve {
            v.push(Box::new(eve::EveSink::new(e, !live)));
        }
        for out in [
            self.syslog.as_ref().map(|s| s as &dyn AlertOutput),
            self.email.as_ref().map(|e| e as &dyn AlertOutput),
        ]
        .into_iter()
        .flatten()
        {
            v.push(Box::new(AlertSink {
                out,
                at_close: !live,
            }));
        }
        if let Some(x) = &self.ipfix {
            v.push(Box::new(ipfix::IpfixSink::new(x, !live)));
        }
        v
    }
}
