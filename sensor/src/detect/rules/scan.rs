//! Scans and sweeps: many *distinct* targets from one initiator, counted among new flows only
//! (answers never count as probes); TCP/UDP probes count once they went unanswered.

use std::{collections::HashMap, net::IpAddr};

use sensor_common::{family, proto};
use serde_json::json;

use super::{NS, Rules, window::Distinct};
use crate::{
    detect::alert::{AlertBook, AlertKind, DetectorKind, Firing, Severity},
    flow::FlowEvent,
};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(super) enum Probe {
    IcmpEcho,
    Arp,
    Tcp(u16),
    Udp(u16),
}

impl Probe {
    fn label(self) -> String {
        match self {
            Self::IcmpEcho => "icmp_echo".into(),
            Self::Arp => "arp".into(),
            Self::Tcp(p) => format!("tcp/{p}"),
            Self::Udp(p) => format!("udp/{p}"),
        }
    }
}

/// Hosts one source probed one way: when, and whether they answered.
#[derive(Default)]
pub(super) struct Sweep {
    pub(super) hosts: HashMap<IpAddr, (u64, bool)>,
    /// Hosts counted when the rule last fired: it fires again only when the sweep grows.
    pub(super) fired_at: usize,
}

impl Sweep {
    fn answer(&mut self, host: IpAddr) {
        if let Some(h) = self.hosts.get_mut(&host) {
            h.1 = true;
        }
    }
}

/// How long a TCP/UDP probe may go unanswered before it counts towards a sweep.
const ANSWER_GRACE_NS: u64 = NS;

impl Rules {
    fn probe(ev: &FlowEvent) -> Option<Probe> {
        if !ev.new_flow || !ev.from_src {
            return None;
        }
        if ev.family == family::ARP {
            return (ev.key_dst_port == 1).then_some(Probe::Arp);
        }
        match ev.proto {
            proto::ICMP if ev.key_dst_port >> 8 == 8 => Some(Probe::IcmpEcho),
            proto::ICMPV6 if ev.key_dst_port >> 8 == 128 => Some(Probe::IcmpEcho),
            // A SYN, or a bare ACK (an "ACK ping"): not the middle of a connection we joined.
            proto::TCP if ev.syn > 0 || ev.packets == 1 => Some(Probe::Tcp(ev.dst_port)),
            proto::UDP => Some(Probe::Udp(ev.dst_port)),
            _ => None,
        }
    }

    /// Port scan: distinct destination ports on one host among new flows from one source.
    pub(super) fn port_scan(&mut self, ev: &FlowEvent, now: u64, book: &mut AlertBook) {
        let cap = self.cfg.max_tracked;
        let probing_ports = ev.new_flow
            && ev.from_src
            && ev.family != family::ARP
            && ((ev.proto == proto::TCP && (ev.syn > 0 || ev.packets == 1))
                || ev.proto == proto::UDP);
        if probing_ports {
            let tracked = self.scans.len() < cap;
            // Only a port not probed before continues a scan; repeats to a known port do not.
            let fresh = self
                .scans
                .get(&(ev.src, ev.dst))
                .is_none_or(|e| !e.0.seen.contains_key(&ev.dst_port));
            match self.scans.get_mut(&(ev.src, ev.dst)) {
                Some(e) => e.0.add(ev.dst_port, now, 65_536),
                None if tracked => {
                    let mut d = Distinct::default();
                    d.add(ev.dst_port, now, 65_536);
                    self.scans.insert((ev.src, ev.dst), (d, ev.proto));
                }
                None => self.untracked += 1,
            }
            if let Some((ports, p)) = self.scans.get_mut(&(ev.src, ev.dst)) {
                let n = ports.count(
                    now,
                    self.cfg.port_scan_window_s * NS,
                    self.cfg.port_scan_ports,
                );
                if fresh && n >= self.cfg.port_scan_ports {
                    book.fire(Firing {
                        kind: AlertKind::PortScan,
                        detector: DetectorKind::Rule,
                        src_ip: Some(ev.src),
                        dst_ip: Some(ev.dst),
                        ts_ns: now,
                        severity: Severity::from_ratio(n as f64 / self.cfg.port_scan_ports as f64),
                        rate: n as f64,
                        score: None,
                        evidence: json!({
                            "ports": n,
                            "sample_ports": ports.sample(10),
                            "proto": if *p == proto::TCP { "tcp" } else { "udp" },
                            "window_s": self.cfg.port_scan_window_s,
                        }),
                    });
                }
            }
        }
    }

    /// Host sweep: distinct hosts probed the same way by one source.
    pub(super) fn host_sweep(&mut self, ev: &FlowEvent, now: u64, book: &mut AlertBook) {
        let cap = self.cfg.max_tracked;
        if let Some(probe) = Self::probe(ev) {
            let key = (ev.src, probe);
            if !self.sweeps.contains_key(&key) && self.sweeps.len() >= cap {
                self.untracked += 1;
            } else {
                let sweep = self.sweeps.entry(key).or_default();
                if sweep.hosts.len() < 65_536 || sweep.hosts.contains_key(&ev.dst) {
                    sweep.hosts.insert(ev.dst, (now, false));
                }
                self.eval_sweep(key, now, false, book);
            }
        }
        // Answers take TCP/UDP probes out of a sweep: a P2P client that reaches 50 peers is not
        // sweeping; a sweep is mostly met with silence, RSTs, or handshakes it never finishes.
        if ev.proto == proto::TCP && ev.completed {
            if let Some(s) = self.sweeps.get_mut(&(ev.src, Probe::Tcp(ev.dst_port))) {
                s.answer(ev.dst);
            }
        } else if ev.proto == proto::UDP
            && !ev.from_src
            && let Some(s) = self.sweeps.get_mut(&(ev.src, Probe::Udp(ev.dst_port)))
        {
            s.answer(ev.dst);
        }
    }

    /// Judges one source's sweep. ICMP echo and ARP requests count at once; TCP/UDP probes
    /// count once they went unanswered for `ANSWER_GRACE_NS` (or at the end of the data).
    pub(super) fn eval_sweep(
        &mut self,
        key: (IpAddr, Probe),
        now: u64,
        end: bool,
        book: &mut AlertBook,
    ) {
        let window = self.cfg.host_sweep_window_s * NS;
        let Some(sweep) = self.sweeps.get_mut(&key) else {
            return;
        };
        let immediate = matches!(key.1, Probe::IcmpEcho | Probe::Arp);
        if sweep.hosts.len() < self.cfg.host_sweep_hosts {
            return;
        }
        sweep
            .hosts
            .retain(|_, (t, _)| now.saturating_sub(*t) < window);
        let mut hosts: Vec<IpAddr> = sweep
            .hosts
            .iter()
            .filter(|(_, (t, answered))| {
                immediate || (!answered && (end || now.saturating_sub(*t) >= ANSWER_GRACE_NS))
            })
            .map(|(h, _)| *h)
            .collect();
        let n = hosts.len();
        if n < self.cfg.host_sweep_hosts {
            sweep.fired_at = 0;
            return;
        }
        if n <= sweep.fired_at {
            return;
        }
        sweep.fired_at = n;
        // The alert is as recent as the newest probe it counts, not the clock of this check.
        let newest = hosts
            .iter()
            .filter_map(|h| sweep.hosts.get(h))
            .map(|(t, _)| *t)
            .max()
            .unwrap_or(now);
        hosts.sort_unstable();
        hosts.truncate(10);
        book.fire(Firing {
            kind: AlertKind::HostSweep,
            detector: DetectorKind::Rule,
            src_ip: Some(key.0),
            dst_ip: None,
            ts_ns: newest,
            severity: Severity::from_ratio(n as f64 / self.cfg.host_sweep_hosts as f64),
            rate: n as f64,
            score: None,
            evidence: json!({
                "hosts": n,
                "sample_hosts": hosts,
                "probe": key.1.label(),
                "window_s": self.cfg.host_sweep_window_s,
            }),
        });
    }

    /// Time passes (every second of data time): TCP/UDP probes left unanswered now count.
    pub fn tick(&mut self, now: u64, book: &mut AlertBook) {
        let pending: Vec<(IpAddr, Probe)> = self
            .sweeps
            .iter()
            .filter(|(k, s)| {
                matches!(k.1, Probe::Tcp(_) | Probe::Udp(_))
                    && s.hosts.len() >= self.cfg.host_sweep_hosts
            })
            .map(|(k, _)| *k)
            .collect();
        for key in pending {
            self.eval_sweep(key, now, false, book);
        }
    }
}
