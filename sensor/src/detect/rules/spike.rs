//! Traffic spikes: a host's packets in one second against an exponential average of its own
//! past seconds.

use std::net::IpAddr;

use serde_json::json;

use super::{RuleConfig, Rules, flood::HostState};
use crate::detect::alert::{AlertBook, AlertKind, DetectorKind, Firing, Severity};

#[derive(Default)]
pub(super) struct Spike {
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
        h: &mut HostState,
        sec: u64,
        (rx, tx): (u64, u64),
        now: u64,
        book: &mut AlertBook,
    ) {
        let s = &mut h.spike;
        if !s.started {
            s.started = true;
            s.sec = sec;
        }
        if sec > s.sec {
            Self::close_second(cfg, host, s, now, book);
            // Seconds without traffic pull the baseline towards zero.
            let idle = (sec - s.sec - 1).min(64) as i32;
            let keep = (1.0 - cfg.spike_baseline_alpha).powi(idle);
            s.base_rx *= keep;
            s.base_tx *= keep;
            s.sec = sec;
            s.rx = 0;
            s.tx = 0;
        }
        s.rx += rx;
        s.tx += tx;
    }

    /// Judges a finished second of one host against its baseline, then folds it in.
    pub(super) fn close_second(
        cfg: &RuleConfig,
        host: IpAddr,
        s: &mut Spike,
        now: u64,
        book: &mut AlertBook,
    ) {
        // A host already in an attack alert needs no second alert for the same packets.
        let explained = book.involves(&crate::detect::alert::ATTACK_KINDS, host);
        let over = |count: u64, base: f64| {
            count >= cfg.spike_pps && count as f64 > cfg.spike_factor * base
        };
        // One alert per host, in the direction that spiked most.
        let spiked = [(s.rx, s.base_rx, "rx"), (s.tx, s.base_tx, "tx")]
            .into_iter()
            .filter(|(c, b, _)| over(*c, *b))
            .max_by_key(|(c, _, _)| *c);
        if let (false, Some((count, base, dir))) = (explained, spiked) {
            let c = count as f64;
            let (src_ip, dst_ip) = if dir == "rx" {
                (None, Some(host))
            } else {
                (Some(host), None)
            };
            book.fire(Firing {
                kind: AlertKind::TrafficSpike,
                detector: DetectorKind::Rule,
                src_ip,
                dst_ip,
                ts_ns: now,
                severity: Severity::from_ratio(c / cfg.spike_pps as f64),
                rate: c,
                score: None,
                evidence: json!({
                    "pps": count,
                    "baseline_pps": base.round(),
                    "direction": dir,
                    "rx_pps": s.rx,
                    "tx_pps": s.tx,
                }),
            });
        }
        let a = cfg.spike_baseline_alpha;
        s.base_rx = a * s.rx as f64 + (1.0 - a) * s.base_rx;
        s.base_tx = a * s.tx as f64 + (1.0 - a) * s.base_tx;
    }
}
