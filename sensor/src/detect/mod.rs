//! Detection: threshold rules on flow events and an Isolation Forest on finished flows, both
//! reporting into one book of alerts.

pub mod alert;
pub mod rules;

use sensor_common::{HostKey, HostStats};

pub use self::{
    alert::{Alert, AlertBook, AlertKind, AlertRecord, Severity},
    rules::{RuleConfig, Rules},
};
use crate::flow::{Flow, FlowEvent};

/// Everything that turns flows into alerts.
pub struct Detector {
    pub rules: Rules,
    pub book: AlertBook,
    last_ns: u64,
    next_close_ns: u64,
}

impl Detector {
    pub fn new(cfg: RuleConfig) -> Self {
        let quiet = cfg.quiet_close_s * 1_000_000_000;
        Self {
            rules: Rules::new(cfg),
            book: AlertBook::new(quiet),
            last_ns: 0,
            next_close_ns: 0,
        }
    }

    pub fn on_event(&mut self, ev: &FlowEvent) {
        self.rules.on_event(ev, &mut self.book);
        self.tick(ev.ts_ns);
    }

    pub fn on_overflow(&mut self, ts_ns: u64, dst: &HostKey, s: &HostStats) {
        self.rules.on_overflow(ts_ns, dst, s, &mut self.book);
        self.tick(ts_ns);
    }

    /// A finished flow (for the model).
    pub fn on_flow(&mut self, _f: &Flow) {}

    /// Moves data time forward: closes alerts that went quiet.
    pub fn tick(&mut self, now_ns: u64) {
        self.last_ns = self.last_ns.max(now_ns);
        if self.last_ns >= self.next_close_ns {
            self.rules.tick(self.last_ns, &mut self.book);
            self.book.close_quiet(self.last_ns);
            self.next_close_ns = self.last_ns + 1_000_000_000;
        }
    }

    /// End of data: judge the last second, close every alert.
    pub fn flush(&mut self) {
        self.rules.flush(self.last_ns, &mut self.book);
        self.book.flush();
    }
}
