//! Beaconing (MITRE ATT&CK T1071, command and control), from finished flows: one host opening
//! connections to one endpoint at a regular period (with jitter), moving about the same bytes
//! each time. Scored as RITA scores it: how symmetric and how tight the intervals are
//! (Bowley skewness, median absolute deviation against the median) and the same for the sizes.
//!
//! What beacons and is not command and control, and how it is told apart: infrastructure many
//! hosts contact on a timer (NTP, resolvers, update checks) by **prevalence** (an endpoint
//! that `beacon_max_sources` or more sources contact is nobody's implant), a metrics scraper
//! polling its targets by **fan-out** (a source polling `beacon_max_sources` or more
//! destinations on one port is a poller), the **home networks** when configured
//! (`beacon_home`: only a home host contacting an endpoint outside them), and an
//! **allowlist** of destinations (`beacon_allow`). A series from one source port is a
//! service's socket, not a client calling home. At least `beacon_min_connections` (20) are
//! needed: fewer intervals say little about a period. Memory: `KEEP` connections per pair, at
//! most `max_tracked / 4` pairs, evicted once quiet for `beacon_window_s`.

use std::{collections::VecDeque, net::IpAddr};

use ipnet::IpNet;
use sensor_common::proto;

use super::{NS, Rules};
use crate::{
    detect::{
        FastMap,
        alert::{AlertBook, AlertKind, DetectorKind, Firing, Severity},
        evidence::{BeaconEvidence, Evidence},
    },
    flow::{EndReason, Flow},
};

/// Connections kept per pair (the newest).
const KEEP: usize = 48;
/// Distinct sources (or destinations) kept per endpoint (or source and port): past the
/// threshold more add nothing.
const PEERS_MAX: usize = 64;

/// One pair's connections: start times, sizes and source ports, newest last.
struct Series {
    starts: VecDeque<u64>,
    bytes: VecDeque<u64>,
    ports: VecDeque<u16>,
    last_ns: u64,
    /// Whether the rule fired for this pair: once while the pair is tracked (a beacon's
    /// period is longer than an alert's quiet close, so firing each call would open an
    /// alert per call).
    fired: bool,
}

/// The beaconing trackers.
#[derive(Default)]
pub(super) struct Beacons {
    /// (source, destination, port, protocol).
    pairs: FastMap<(IpAddr, IpAddr, u16, u8), Series>,
    /// (destination, port, protocol) -> sources contacting it, last seen.
    sources: FastMap<(IpAddr, u16, u8), FastMap<IpAddr, u64>>,
    /// (source, port, protocol) -> destinations it contacts, last seen.
    targets: FastMap<(IpAddr, u16, u8), FastMap<IpAddr, u64>>,
    /// `beacon_home` and `beacon_allow`, parsed once.
    nets: Option<(Vec<IpNet>, Vec<IpNet>)>,
}

fn note(m: &mut FastMap<IpAddr, u64>, ip: IpAddr, now: u64) {
    if m.len() < PEERS_MAX || m.contains_key(&ip) {
        m.insert(ip, now);
    }
}

/// The quartiles of `v` (sorted).
fn quartiles(v: &[f64]) -> (f64, f64, f64) {
    let q = |p: f64| v[((v.len() - 1) as f64 * p).round() as usize];
    (q(0.25), q(0.5), q(0.75))
}

/// RITA's two scores of a series: 1 for a perfectly regular one, towards 0 for a random one.
/// Skew: Bowley's, 0 for a symmetric spread. Dispersion: the median absolute deviation
/// against the median.
fn regularity(mut v: Vec<f64>) -> (f64, f64, f64) {
    v.sort_by(f64::total_cmp);
    let (q1, q2, q3) = quartiles(&v);
    let bowley = if q3 - q1 > 0.0 {
        (q1 + q3 - 2.0 * q2) / (q3 - q1)
    } else {
        0.0
    };
    let mut dev: Vec<f64> = v.iter().map(|x| (x - q2).abs()).collect();
    dev.sort_by(f64::total_cmp);
    let madm = dev[dev.len() / 2];
    let dispersion = if q2 > 0.0 { madm / q2 } else { 1.0 };
    (1.0 - bowley.abs(), (1.0 - dispersion).max(0.0), q2)
}

impl Rules {
    /// A finished flow: one connection of its pair's series.
    pub(super) fn beacon(&mut self, f: &Flow, book: &mut AlertBook) {
        let cfg = &self.cfg;
        if cfg.beacon_min_connections == 0
            || !(f.proto == proto::TCP || f.proto == proto::UDP)
            || f.end == EndReason::ActiveTimeout
        {
            return;
        }
        let (home, allow) = self.beacons.nets.get_or_insert_with(|| {
            let parse = |v: &[String]| v.iter().filter_map(|s| s.parse().ok()).collect();
            (parse(&cfg.beacon_home), parse(&cfg.beacon_allow))
        });
        let inside = |ip: &IpAddr| home.iter().any(|n| n.contains(ip));
        if (!home.is_empty() && (!inside(&f.src) || inside(&f.dst)))
            || allow.iter().any(|n| n.contains(&f.dst))
        {
            return;
        }
        let now = f.first_seen_ns;
        let b = &mut self.beacons;
        let cap = (cfg.max_tracked / 4).max(1);
        let endpoint = (f.dst, f.dst_port, f.proto);
        let from = (f.src, f.dst_port, f.proto);
        if b.sources.len() < cap || b.sources.contains_key(&endpoint) {
            note(b.sources.entry(endpoint).or_default(), f.src, now);
        }
        if b.targets.len() < cap || b.targets.contains_key(&from) {
            note(b.targets.entry(from).or_default(), f.dst, now);
        }
        let key = (f.src, f.dst, f.dst_port, f.proto);
        if !b.pairs.contains_key(&key) && b.pairs.len() >= cap {
            self.untracked += 1;
            return;
        }
        let s = b.pairs.entry(key).or_insert_with(|| Series {
            starts: VecDeque::with_capacity(KEEP),
            bytes: VecDeque::with_capacity(KEEP),
            ports: VecDeque::with_capacity(KEEP),
            last_ns: 0,
            fired: false,
        });
        if s.starts.len() == KEEP {
            s.starts.pop_front();
            s.bytes.pop_front();
            s.ports.pop_front();
        }
        s.starts.push_back(now);
        s.bytes.push_back(f.fwd.bytes + f.rev.bytes);
        s.ports.push_back(f.src_port);
        s.last_ns = s.last_ns.max(f.last_seen_ns);
        let n = s.starts.len();
        if n < cfg.beacon_min_connections || s.fired {
            return;
        }
        // Infrastructure many hosts contact, a poller's targets: not an implant's endpoint.
        let window = cfg.beacon_window_s * NS;
        let recent = |m: Option<&FastMap<IpAddr, u64>>| {
            m.map_or(0, |m| {
                m.values()
                    .filter(|t| now.saturating_sub(**t) < window)
                    .count()
            })
        };
        if recent(b.sources.get(&endpoint)) >= cfg.beacon_max_sources
            || recent(b.targets.get(&from)) >= cfg.beacon_max_sources
        {
            return;
        }
        // A client calling home opens a new socket (a new ephemeral port) each time; calls
        // from one port are a service's long-lived socket (a server's heartbeat to a
        // directory, NTP's 123 -> 123), not a client's.
        let mut ports: Vec<u16> = s.ports.iter().copied().collect();
        ports.sort_unstable();
        ports.dedup();
        if 2 * ports.len() < n {
            return;
        }
        let mut starts: Vec<u64> = s.starts.iter().copied().collect();
        starts.sort_unstable();
        let gaps: Vec<f64> = starts
            .windows(2)
            .map(|w| (w[1] - w[0]) as f64 / NS as f64)
            .collect();
        let (ts_skew, ts_disp, period) = regularity(gaps);
        if period < cfg.beacon_min_period_s as f64 {
            return;
        }
        let (ds_skew, ds_disp, size) = regularity(s.bytes.iter().map(|b| *b as f64).collect());
        let score = (ts_skew + ts_disp + ds_skew + ds_disp) / 4.0;
        if score < cfg.beacon_min_score {
            return;
        }
        s.fired = true;
        book.fire(Firing {
            kind: AlertKind::Beaconing,
            detector: DetectorKind::Rule,
            src_ip: Some(f.src),
            dst_ip: Some(f.dst),
            ts_ns: now,
            severity: if score >= 0.9 {
                Severity::Medium
            } else {
                Severity::Low
            },
            rate: score,
            score: Some((score * 1000.0).round() / 1000.0),
            evidence: Evidence::Beacon(BeaconEvidence {
                connections: n,
                port: f.dst_port,
                proto: if f.proto == proto::TCP { "tcp" } else { "udp" },
                period_s: (period * 10.0).round() / 10.0,
                jitter: ((1.0 - ts_disp) * 1000.0).round() / 1000.0,
                median_bytes: size as u64,
                score: (score * 1000.0).round() / 1000.0,
            }),
        });
    }

    pub(super) fn beacon_prune(&mut self, now: u64) {
        let w = self.cfg.beacon_window_s * NS;
        let b = &mut self.beacons;
        b.pairs.retain(|_, s| now.saturating_sub(s.last_ns) < w);
        for m in [&mut b.sources, &mut b.targets] {
            m.retain(|_, peers| {
                peers.retain(|_, t| now.saturating_sub(*t) < w);
                !peers.is_empty()
            });
            crate::detect::shrink(m);
        }
        crate::detect::shrink(&mut b.pairs);
    }
}
