//! Slow scans and sweeps: one source probing many ports of a host, or many hosts, below the
//! one-minute windows (nmap -T1/-T2, a worm pacing itself), counted over a long window
//! (`slow_window_s`, 15 minutes by default; Zeek's old scan policy used 5).
//!
//! Only *unanswered* probes count, as a scan is mostly met with silence, RSTs or unreachables
//! while a client's connections complete: a probe leaves the tracker when its answer arrives (a
//! completed handshake, a UDP reply, an echo reply, an ARP reply), so memory holds the failures
//! only, and a busy but healthy client never accumulates anything. Memory is bounded twice:
//! at most `max_tracked / 4` source keys per tracker, and per key no more items than the
//! threshold needs (a key that reached it has fired; more items add nothing but a count:
//! `probes` in the evidence, which keeps the alert open and growing while the scan goes on).

use std::{hash::Hash, net::IpAddr};

use crate::detect::FastMap;

use sensor_common::{family, proto};

use super::{
    NS, Rules,
    scan::{ANSWER_GRACE_NS, Probe},
};
use crate::{
    detect::{
        alert::{AlertBook, AlertKind, DetectorKind, Firing, Severity},
        evidence::{Evidence, ScanEvidence, SweepEvidence},
    },
    flow::FlowEvent,
};

/// Unanswered probes of one key: item -> time of the probe.
pub(super) struct Unanswered<T: Hash + Eq + Copy> {
    items: FastMap<T, u64>,
    /// Probes counted when the rule last fired: it fires again only when the count grows.
    fired_at: usize,
    /// Probes a fast alert of the same pair already reported (counted while it was open):
    /// the long window reports only what reaches its threshold beyond them.
    absorbed: usize,
    /// Items refused because the key held its cap.
    over: u64,
    /// Time of the newest of those.
    over_ns: u64,
}

impl<T: Hash + Eq + Copy + Ord> Unanswered<T> {
    fn new() -> Self {
        Self {
            items: FastMap::default(),
            fired_at: 0,
            absorbed: 0,
            over: 0,
            over_ns: 0,
        }
    }

    fn probe(&mut self, item: T, ts: u64, cap: usize) {
        if self.items.len() < cap || self.items.contains_key(&item) {
            self.items.entry(item).or_insert(ts);
        } else {
            self.over += 1;
            self.over_ns = self.over_ns.max(ts);
        }
    }

    fn answer(&mut self, item: &T) {
        self.items.remove(item);
    }

    fn prune(&mut self, now: u64, window_ns: u64) {
        self.items.retain(|_, t| now.saturating_sub(*t) < window_ns);
    }

    /// Probes older than the answer grace (newer ones may still be answered), and the newest
    /// of them.
    fn settled(&self, now: u64, end: bool) -> (usize, u64) {
        let settled = |t: &u64| end || now.saturating_sub(*t) >= ANSWER_GRACE_NS;
        let (n, newest) = self
            .items
            .values()
            .filter(|t| settled(t))
            .fold((0, 0), |(n, newest), t| (n + 1, newest.max(*t)));
        // Probes past the cap are only counted (all of them), and the newest dates the scan.
        (n, newest.max(self.over_ns))
    }

    fn sample(&self, n: usize) -> Vec<T> {
        let mut v: Vec<T> = self.items.keys().copied().collect();
        v.sort_unstable();
        v.truncate(n);
        v
    }
}

/// The long-window trackers.
#[derive(Default)]
pub(super) struct Slow {
    /// (source, host) -> unanswered destination ports.
    scans: FastMap<(IpAddr, IpAddr), Unanswered<u16>>,
    /// (source, probe kind) -> unanswered hosts.
    sweeps: FastMap<(IpAddr, Probe), Unanswered<IpAddr>>,
    /// Ports of the `TcpAny`/`UdpAny` sweeps (at most `SPREAD_PORTS_MAX` + 1 kept).
    spread_ports: FastMap<(IpAddr, Probe), FastMap<u16, ()>>,
}

/// A sweep across ports looks for a few services on many hosts (a worm trying telnet, its
/// alternate port and a web port on random addresses): on average at least this many hosts
/// per port. A peer-to-peer client that fails to reach its peers tries each at its own port.
const SPREAD_HOSTS_PER_PORT: usize = 8;
/// Ports a spread sweep keeps track of; past them it is no longer "a few".
const SPREAD_PORTS_MAX: usize = 32;

impl Rules {
    fn slow_key_cap(&self) -> usize {
        (self.cfg.max_tracked / 4).max(1)
    }

    /// A probe to a port of `ev.dst` (the caller decided it is one).
    pub(super) fn slow_probe_port(&mut self, ev: &FlowEvent, now: u64) {
        let cap = self.slow_key_cap();
        let key = (ev.src, ev.dst);
        if !self.slow.scans.contains_key(&key) && self.slow.scans.len() >= cap {
            self.untracked += 1;
            return;
        }
        let per_key = self.cfg.slow_scan_ports.max(1);
        self.slow
            .scans
            .entry(key)
            .or_insert_with(Unanswered::new)
            .probe(ev.dst_port, now, per_key);
    }

    /// A probe of host `ev.dst` (the caller decided it is one).
    pub(super) fn slow_probe_host(&mut self, ev: &FlowEvent, probe: Probe, now: u64) {
        let cap = self.slow_key_cap();
        let key = (ev.src, probe);
        if !self.slow.sweeps.contains_key(&key) && self.slow.sweeps.len() >= cap {
            self.untracked += 1;
            return;
        }
        let per_key = self.cfg.slow_sweep_hosts.max(1);
        self.slow
            .sweeps
            .entry(key)
            .or_insert_with(Unanswered::new)
            .probe(ev.dst, now, per_key);
        // The same probe counted across ports: a source reaching many hosts unanswered is
        // sweeping, whatever ports it spreads them over.
        let any = match probe {
            Probe::Tcp(_) => Probe::TcpAny,
            Probe::Udp(_) => Probe::UdpAny,
            _ => return,
        };
        let key = (ev.src, any);
        if !self.slow.sweeps.contains_key(&key) && self.slow.sweeps.len() >= cap {
            self.untracked += 1;
            return;
        }
        self.slow
            .sweeps
            .entry(key)
            .or_insert_with(Unanswered::new)
            .probe(ev.dst, now, per_key);
        let ports = self.slow.spread_ports.entry(key).or_default();
        if ports.len() <= SPREAD_PORTS_MAX {
            ports.insert(ev.dst_port, ());
        }
    }

    /// Answers take probes out: a completed handshake, any reply of the probed host.
    pub(super) fn slow_answer(&mut self, ev: &FlowEvent) {
        if self.slow.scans.is_empty() && self.slow.sweeps.is_empty() {
            return;
        }
        let replied = !ev.from_src && ev.rst == 0;
        let answered = match ev.proto {
            _ if ev.family == family::ARP => replied,
            proto::TCP => ev.completed,
            // ICMP replies join the request's flow; unreachables are flows of their own.
            proto::UDP | proto::ICMP | proto::ICMPV6 => replied,
            _ => false,
        };
        if !answered {
            return;
        }
        if let Some(u) = self.slow.scans.get_mut(&(ev.src, ev.dst)) {
            u.answer(&ev.dst_port);
        }
        let probe = if ev.family == family::ARP {
            Probe::Arp
        } else {
            match ev.proto {
                proto::TCP => Probe::Tcp(ev.dst_port),
                proto::UDP => Probe::Udp(ev.dst_port),
                _ => Probe::IcmpEcho,
            }
        };
        if let Some(u) = self.slow.sweeps.get_mut(&(ev.src, probe)) {
            u.answer(&ev.dst);
        }
        let any = match probe {
            Probe::Tcp(_) => Probe::TcpAny,
            Probe::Udp(_) => Probe::UdpAny,
            _ => return,
        };
        if let Some(u) = self.slow.sweeps.get_mut(&(ev.src, any)) {
            u.answer(&ev.dst);
        }
    }

    /// Every second of data time: keys with enough settled, unanswered probes fire.
    pub(super) fn slow_tick(&mut self, now: u64, book: &mut AlertBook) {
        self.slow_judge(now, false, book);
    }

    /// Judges every key that may have reached its threshold (`end`: the data ended, so no
    /// answer can still come).
    pub(super) fn slow_judge(&mut self, now: u64, end: bool, book: &mut AlertBook) {
        let window = self.cfg.slow_window_s;
        let (ports_min, hosts_min) = (self.cfg.slow_scan_ports, self.cfg.slow_sweep_hosts);
        for ((src, dst), u) in &mut self.slow.scans {
            // A fast scan's own alert already tells it: while it is open, the probes are its
            // (absorbed, never reported again); the long window reports only a scan that goes
            // on past it, once that part alone reaches the threshold.
            if u.fired_at == 0 && book.is_open(AlertKind::PortScan, Some(*src), Some(*dst)) {
                u.absorbed = u.items.len() + u.over as usize;
                continue;
            }
            if u.items.len() < ports_min {
                continue;
            }
            let (n, newest) = u.settled(now, end);
            // Probes past the key's cap are counted, not kept: the alert still grows with them.
            let probes = n + u.over as usize;
            if n < ports_min || probes <= u.fired_at || probes < u.absorbed + ports_min {
                continue;
            }
            u.fired_at = probes;
            book.fire(Firing {
                kind: AlertKind::PortScan,
                detector: DetectorKind::Rule,
                src_ip: Some(*src),
                dst_ip: Some(*dst),
                ts_ns: newest,
                severity: slow_severity(probes, ports_min),
                rate: probes as f64,
                score: None,
                evidence: Evidence::Scan(ScanEvidence {
                    ports: n,
                    probes: Some(probes),
                    unanswered: Some(true),
                    sample_ports: u.sample(10),
                    proto: None,
                    window_s: window,
                    slow: Some(true),
                }),
            });
        }
        for ((src, probe), u) in &mut self.slow.sweeps {
            if u.fired_at == 0 && book.is_open(AlertKind::HostSweep, Some(*src), None) {
                u.absorbed = u.items.len() + u.over as usize;
                continue;
            }
            if u.items.len() < hosts_min {
                continue;
            }
            let (n, newest) = u.settled(now, end);
            let probes = n + u.over as usize;
            if n < hosts_min || probes <= u.fired_at || probes < u.absorbed + hosts_min {
                continue;
            }
            let mut sample_ports = Vec::new();
            if matches!(probe, Probe::TcpAny | Probe::UdpAny) {
                let ports = self.slow.spread_ports.get(&(*src, *probe));
                let distinct = ports.map_or(0, FastMap::len);
                if distinct > SPREAD_PORTS_MAX || distinct * SPREAD_HOSTS_PER_PORT > n {
                    continue;
                }
                sample_ports =
                    ports.map_or_else(Vec::new, |p| super::window::smallest(p.keys().copied(), 10));
            }
            u.fired_at = probes;
            book.fire(Firing {
                kind: AlertKind::HostSweep,
                detector: DetectorKind::Rule,
                src_ip: Some(*src),
                dst_ip: None,
                ts_ns: newest,
                severity: slow_severity(probes, hosts_min),
                rate: probes as f64,
                score: None,
                evidence: Evidence::Sweep(SweepEvidence {
                    hosts: n,
                    probes: Some(probes),
                    unanswered: Some(true),
                    sample_hosts: u.sample(10),
                    probe: probe.label(),
                    window_s: window,
                    slow: Some(true),
                    sample_ports,
                }),
            });
        }
    }

    pub(super) fn slow_prune(&mut self, now: u64) {
        let w = self.cfg.slow_window_s * NS;
        self.slow.scans.retain(|_, u| {
            u.prune(now, w);
            !u.items.is_empty()
        });
        self.slow.sweeps.retain(|_, u| {
            u.prune(now, w);
            !u.items.is_empty()
        });
        let sweeps = &self.slow.sweeps;
        self.slow.spread_ports.retain(|k, _| sweeps.contains_key(k));
    }
}

/// A slow scan is a finding, not an emergency: low, or medium past three times the threshold.
fn slow_severity(n: usize, threshold: usize) -> Severity {
    if n >= 3 * threshold.max(1) {
        Severity::Medium
    } else {
        Severity::Low
    }
}
