//! Traffic spikes: a host's packets in one second against an exponential average of its own
//! past seconds.

use std::net::IpAddr;

use super::{RuleConfig, Rules};
use crate::detect::{
    alert::{AlertBook, AlertKind, DetectorKind, Firing, SPIKE_HOLD_NS, Severity},
    evidence::{Evidence, SpikeEvidence},
};

#[derive(Default)]
pub(super) struct Spike {
    /// The host's threshold (packets in a second).
    pub(super) pps: u64,
    pub(super) sec: u64,
    pub(super) rx: u64,
    pub(super) tx: u64,
    pub(super) base_rx: f64,
    pub(super) base_tx: f64,
    pub(super) started: bool,
}

impl Rules {
    pub(super) fn spike(
        cfg: &RuleConfig,
        host: IpAddr,
        s: &mut Spike,
        sec: u64,
        (rx, tx): (u64, u64),
        held: &mut Vec<Firing>,
    ) {
        if !s.started {
            s.started = true;
            s.sec = sec;
        }
        if sec > s.sec {
            Self::roll(cfg, host, s, sec, held);
        }
        s.rx += rx;
        s.tx += tx;
    }

    /// Judges the host's counted second and starts second `sec`; the seconds without traffic
    /// in between pull the baseline towards zero.
    fn roll(cfg: &RuleConfig, host: IpAddr, s: &mut Spike, sec: u64, held: &mut Vec<Firing>) {
        Self::close_second(cfg, host, s, held);
        let idle = (sec - s.sec - 1).min(64) as i32;
        let keep = (1.0 - cfg.spike_baseline_alpha).powi(idle);
        s.base_rx *= keep;
        s.base_tx *= keep;
        s.sec = sec;
        s.rx = 0;
        s.tx = 0;
    }

    /// Judges a finished second of one host against its baseline, then folds it in. A spike
    /// is held (`held`) for [`SPIKE_HOLD_NS`], stamped with its own second.
    pub(super) fn close_second(
        cfg: &RuleConfig,
        host: IpAddr,
        s: &mut Spike,
        held: &mut Vec<Firing>,
    ) {
        let over = |count: u64, base: f64| count >= s.pps && count as f64 > cfg.spike_factor * base;
        // One alert per host, in the direction that spiked most.
        let spiked = [(s.rx, s.base_rx, "rx"), (s.tx, s.base_tx, "tx")]
            .into_iter()
            .filter(|(c, b, _)| over(*c, *b))
            .max_by_key(|(c, _, _)| *c);
        if let Some((count, base, dir)) = spiked {
            let c = count as f64;
            let (src_ip, dst_ip) = if dir == "rx" {
                (None, Some(host))
            } else {
                (Some(host), None)
            };
            held.push(Firing {
                kind: AlertKind::TrafficSpike,
                detector: DetectorKind::Rule,
                src_ip,
                dst_ip,
                ts_ns: s.sec * super::NS,
                severity: Severity::from_ratio(c / s.pps.max(1) as f64),
                rate: c,
                score: None,
                evidence: Evidence::Spike(SpikeEvidence {
                    pps: count,
                    baseline_pps: base.round(),
                    direction: dir,
                    rx_pps: s.rx,
                    tx_pps: s.tx,
                }),
            });
        }
        let a = cfg.spike_baseline_alpha;
        s.base_rx = a * s.rx as f64 + (1.0 - a) * s.base_rx;
        s.base_tx = a * s.tx as f64 + (1.0 - a) * s.base_tx;
    }
}

impl Rules {
    /// Judges every host's second that data time has left behind (a host that went quiet
    /// would otherwise have its last busy second judged only when it next sends, or at the end
    /// of the data, long after the attack it was part of).
    pub(super) fn close_spike_seconds(&mut self, now: u64) {
        let sec = now / super::NS;
        let cfg = &self.cfg;
        for (host, h) in &mut self.hosts {
            let s = &mut h.spike;
            if s.started && s.sec < sec && s.rx + s.tx > 0 {
                Self::roll(cfg, *host, s, sec, &mut self.spikes_held);
            }
        }
    }

    /// Raises the held spikes whose hold is over as of `now` (all of them at the end of the
    /// data), except those of a host an attack alert was about at that second: the attack's
    /// packets are what spiked, and its alert tells it.
    pub(super) fn release_spikes(&mut self, now: u64, end: bool, book: &mut AlertBook) {
        if self.spikes_held.is_empty() {
            return;
        }
        let (due, wait): (Vec<Firing>, Vec<Firing>) = std::mem::take(&mut self.spikes_held)
            .into_iter()
            .partition(|f| end || f.ts_ns.saturating_add(SPIKE_HOLD_NS) <= now);
        self.spikes_held = wait;
        for f in due {
            let Some(host) = f.src_ip.or(f.dst_ip) else {
                continue;
            };
            if !book.attacked_at(host, f.ts_ns) {
                book.fire(f);
            }
        }
    }
}
