//! One `ALERT ...` line on standard error per alert as it opens and one `CLOSED ...` line as
//! it ends, each with its sentence: the running log of a live sensor (journald keeps it under
//! systemd). Updates in between are for the API and the dashboard, not the log.

use super::{Sink, SinkError};
use crate::{mitigate::MitigationEvent, record::AlertRecord};

/// Writes each opened alert as one line.
#[derive(Debug, Default)]
pub struct LogSink;

impl Sink for LogSink {
    fn alert_opened(&mut self, a: &AlertRecord, _last_seen_ns: u64) -> Result<(), SinkError> {
        eprintln!(
            "ALERT #{} {} {}: {}",
            a.id,
            a.kind.as_str(),
            a.severity.as_str(),
            a.summary
        );
        Ok(())
    }

    fn rule_change(&mut self, c: &crate::ruleset::RuleChange) -> Result<(), SinkError> {
        eprintln!("RULES changed by {}: {}", c.actor, c.changes.join("; "));
        Ok(())
    }

    fn alert_closed(&mut self, a: &AlertRecord, _last_seen_ns: u64) -> Result<(), SinkError> {
        match a.merged_into {
            Some(into) => eprintln!("MERGED #{} {} into #{into}", a.id, a.kind.as_str()),
            None => eprintln!(
                "CLOSED #{} {} {} after {} firings, last seen {}: {}",
                a.id,
                a.kind.as_str(),
                a.severity.as_str(),
                a.count,
                a.last_seen,
                a.summary
            ),
        }
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
