//! One `ALERT ...` line on standard error per alert as it opens: the running log of a live
//! sensor (journald keeps it under systemd).

use super::{Sink, SinkError};
use crate::{mitigate::MitigationEvent, record::AlertRecord};

/// Writes each opened alert as one line.
#[derive(Debug, Default)]
pub struct LogSink;

impl Sink for LogSink {
    fn alert_opened(&mut self, a: &AlertRecord, _last_seen_ns: u64) -> Result<(), SinkError> {
        eprintln!(
            "ALERT {} {} {} -> {} ({})",
            a.kind.as_str(),
            a.severity.as_str(),
            a.src_ip.map_or("many".into(), |i| i.to_string()),
            a.dst_ip.map_or("many".into(), |i| i.to_string()),
            a.evidence
        );
        Ok(())
    }

    fn mitigation(&mut self, e: &MitigationEvent) -> Result<(), SinkError> {
        eprintln!(
            "MITIGATION {} {} ({}; dropped {} packets)",
            e.action, e.target, e.reason, e.packets
        );
        Ok(())
    }
}
