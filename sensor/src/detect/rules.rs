//! Threshold rules on flow events, in data time: port scan, host sweep, SYN flood, UDP/ICMP
//! flood, DDoS, traffic spike. Thresholds come from the TOML config (defaults as the old tool).
//!
//! Principles rather than tuning: a scan is many *distinct* targets from one initiator (new
//! flows, so answers never count as probes); a flood is a rate into one victim that gets almost
//! nothing back; a DDoS is such a rate from many sources; a spike is a rate above the host's own
//! recent baseline.

use std::{
    collections::{HashMap, VecDeque},
    net::{IpAddr, Ipv4Addr},
};

use sensor_common::{HostKey, HostStats, family, proto};
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::alert::{AlertBook, AlertKind, DetectorKind, Firing, Severity};
use crate::flow::FlowEvent;

/// Rule thresholds (`[rules]` in the config file).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RuleConfig {
    /// Distinct destination ports on one host from one source...
    pub port_scan_ports: usize,
    /// ...within this many seconds.
    pub port_scan_window_s: u64,
    /// Distinct destination hosts probed by one source...
    pub host_sweep_hosts: usize,
    pub host_sweep_window_s: u64,
    /// SYNs to one destination port without handshake completion...
    pub syn_flood_syns: u64,
    pub syn_flood_window_s: u64,
    /// ...while fewer than this share of the attempts in the window completed.
    pub syn_flood_max_completion_ratio: f64,
    /// UDP or ICMP packets per second into one host for a flood...
    pub flood_pps: u64,
    pub flood_window_s: u64,
    /// ...while it answers fewer than this share of them.
    pub flood_max_reply_ratio: f64,
    /// Packets per second into one host, from at least `ddos_sources` sources, for a DDoS.
    pub ddos_pps: u64,
    pub ddos_sources: usize,
    pub ddos_window_s: u64,
    /// Packets per second to or from a host for a spike...
    pub spike_pps: u64,
    /// ...and this many times its recent baseline (an exponential average of its past seconds).
    pub spike_factor: f64,
    pub spike_baseline_alpha: f64,
    /// An alert closes after this many seconds without firing.
    pub quiet_close_s: u64,
    /// Most keys each tracker holds; beyond it new keys are not tracked (counted).
    pub max_tracked: usize,
}

impl Default for RuleConfig {
    fn default() -> Self {
        Self {
            port_scan_ports: 20,
            port_scan_window_s: 60,
            host_sweep_hosts: 50,
            host_sweep_window_s: 60,
            syn_flood_syns: 100,
            syn_flood_window_s: 10,
            syn_flood_max_completion_ratio: 0.2,
            flood_pps: 1000,
            flood_window_s: 2,
            flood_max_reply_ratio: 0.05,
            ddos_pps: 1000,
            ddos_sources: 20,
            ddos_window_s: 10,
            spike_pps: 1000,
            spike_factor: 3.0,
            spike_baseline_alpha: 0.3,
            quiet_close_s: 30,
            max_tracked: 200_000,
        }
    }
}

const NS: u64 = 1_000_000_000;

/// Overflow packets (in one poll) before an untracked host gets per-host state.
const OVERFLOW_MIN_PACKETS: u64 = 8;

/// Counts per second of data time over the last `len` seconds.
#[derive(Clone, Debug)]
struct SecWindow {
    first_sec: u64,
    last_sec: u64,
    buckets: VecDeque<u64>,
    sum: u64,
    len: usize,
}

impl SecWindow {
    fn new(len: u64) -> Self {
        Self {
            first_sec: 0,
            last_sec: 0,
            buckets: VecDeque::new(),
            sum: 0,
            len: len.max(1) as usize,
        }
    }

    fn advance(&mut self, sec: u64) {
        if self.buckets.is_empty() {
            self.first_sec = sec;
            self.last_sec = sec;
            self.buckets.push_back(0);
            return;
        }
        if sec <= self.last_sec {
            return;
        }
        let gap = (sec - self.last_sec).min(self.len as u64 + 1);
        for _ in 0..gap {
            self.buckets.push_back(0);
            if self.buckets.len() > self.len {
                self.sum -= self.buckets.pop_front().unwrap_or(0);
            }
        }
        self.last_sec = sec;
    }

    fn add(&mut self, sec: u64, n: u64) {
        self.advance(sec);
        let back = (self.last_sec - sec.min(self.last_sec)) as usize;
        if back < self.buckets.len() {
            let i = self.buckets.len() - 1 - back;
            self.buckets[i] += n;
            self.sum += n;
        }
    }

    fn sum_at(&mut self, sec: u64) -> u64 {
        self.advance(sec);
        self.sum
    }

    /// Seconds the window really covers (short captures do not fill it).
    fn span(&self) -> u64 {
        (self.last_sec - self.first_sec + 1).min(self.len as u64)
    }

    fn rate(&self) -> f64 {
        self.sum as f64 / self.span() as f64
    }
}

/// Last-seen times of distinct items, pruned to a window.
///
/// Pruning walks every item, so it runs only when the oldest item may have left the window
/// and at most every 1/16 of the window: counting on every event of a random-source flood
/// (thousands of items) would otherwise be quadratic. A count may therefore include items
/// up to 1/16 of the window older than it.
#[derive(Clone, Debug)]
struct Distinct<T: std::hash::Hash + Eq + Copy> {
    seen: HashMap<T, u64>,
    oldest: u64,
    pruned_at: u64,
}

impl<T: std::hash::Hash + Eq + Copy> Default for Distinct<T> {
    fn default() -> Self {
        Self {
            seen: HashMap::new(),
            oldest: u64::MAX,
            pruned_at: 0,
        }
    }
}

impl<T: std::hash::Hash + Eq + Copy> Distinct<T> {
    fn add(&mut self, item: T, ts: u64, cap: usize) {
        if self.seen.len() < cap || self.seen.contains_key(&item) {
            self.seen.insert(item, ts);
            self.oldest = self.oldest.min(ts);
        }
    }

    /// Distinct items seen within `window_ns` before `now`.
    fn count(&mut self, now: u64, window_ns: u64, threshold: usize) -> usize {
        if self.seen.len() >= threshold
            && now.saturating_sub(self.oldest) >= window_ns
            && now.saturating_sub(self.pruned_at) >= window_ns / 16
        {
            self.seen.retain(|_, t| now.saturating_sub(*t) < window_ns);
            self.oldest = self.seen.values().copied().min().unwrap_or(u64::MAX);
            self.pruned_at = now;
        }
        self.seen.len()
    }

    fn sample(&self, n: usize) -> Vec<T>
    where
        T: Ord,
    {
        let mut v: Vec<T> = self.seen.keys().copied().collect();
        v.sort_unstable();
        v.truncate(n);
        v
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Probe {
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
struct Sweep {
    hosts: HashMap<IpAddr, (u64, bool)>,
    /// Hosts counted when the rule last fired: it fires again only when the sweep grows.
    fired_at: usize,
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

struct SynState {
    syns: SecWindow,
    done: SecWindow,
    sources: Distinct<IpAddr>,
}

struct HostState {
    rx_udp: SecWindow,
    tx_udp: SecWindow,
    rx_icmp: SecWindow,
    tx_icmp: SecWindow,
    rx_all: SecWindow,
    sources: Distinct<IpAddr>,
    /// Packets the flow map could not take (sources unknown: a flood filling the map).
    overflow: SecWindow,
    spike: Spike,
    last_ns: u64,
}

impl HostState {
    fn new(cfg: &RuleConfig, now: u64) -> Self {
        let (fw, dw) = (cfg.flood_window_s, cfg.ddos_window_s);
        Self {
            rx_udp: SecWindow::new(fw),
            tx_udp: SecWindow::new(fw),
            rx_icmp: SecWindow::new(fw),
            tx_icmp: SecWindow::new(fw),
            rx_all: SecWindow::new(dw),
            sources: Distinct::default(),
            overflow: SecWindow::new(dw),
            spike: Spike::default(),
            last_ns: now,
        }
    }
}

#[derive(Default)]
struct Spike {
    sec: u64,
    rx: u64,
    tx: u64,
    base_rx: f64,
    base_tx: f64,
    started: bool,
}

/// The rule engine.
pub struct Rules {
    cfg: RuleConfig,
    scans: HashMap<(IpAddr, IpAddr), (Distinct<u16>, u8)>,
    sweeps: HashMap<(IpAddr, Probe), Sweep>,
    syn: HashMap<(IpAddr, u16), SynState>,
    hosts: HashMap<IpAddr, HostState>,
    next_prune_ns: u64,
    /// New keys refused because a tracker held `max_tracked`.
    pub untracked: u64,
}

fn packet_dst(ev: &FlowEvent) -> (IpAddr, IpAddr) {
    if ev.from_src {
        (ev.src, ev.dst)
    } else {
        (ev.dst, ev.src)
    }
}

impl Rules {
    pub fn new(cfg: RuleConfig) -> Self {
        Self {
            cfg,
            scans: HashMap::new(),
            sweeps: HashMap::new(),
            syn: HashMap::new(),
            hosts: HashMap::new(),
            next_prune_ns: 0,
            untracked: 0,
        }
    }

    pub fn config(&self) -> &RuleConfig {
        &self.cfg
    }

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

    /// Feeds one flow event.
    pub fn on_event(&mut self, ev: &FlowEvent, book: &mut AlertBook) {
        let now = ev.ts_ns;
        let sec = now / NS;
        let cap = self.cfg.max_tracked;
        if now >= self.next_prune_ns {
            self.prune(now);
            self.next_prune_ns = now + 10 * NS;
        }

        // Port scan: distinct destination ports on one host among new flows from one source.
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

        // Host sweep: distinct hosts probed the same way by one source.
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

        if ev.family == family::ARP {
            return;
        }
        // SYN flood: SYNs to one port that do not turn into connections.
        if ev.proto == proto::TCP && ev.from_src && ((ev.new_flow && ev.syn > 0) || ev.completed) {
            let key = (ev.dst, ev.dst_port);
            if !self.syn.contains_key(&key) && self.syn.len() >= cap {
                self.untracked += 1;
            } else {
                let w = self.cfg.syn_flood_window_s;
                let st = self.syn.entry(key).or_insert_with(|| SynState {
                    syns: SecWindow::new(w),
                    done: SecWindow::new(w),
                    sources: Distinct::default(),
                });
                // Attempts, not packets: a retransmitted SYN is the same attempt.
                st.syns.add(sec, u64::from(ev.new_flow && ev.syn > 0));
                st.done.add(sec, u64::from(ev.completed));
                if ev.syn > 0 {
                    st.sources.add(ev.src, now, 4096);
                }
                let attempts = st.syns.sum_at(sec);
                let done = st.done.sum_at(sec);
                let half_open = attempts.saturating_sub(done);
                // A busy server also has many half-open attempts at once (a full backlog makes
                // clients retransmit), but most of them complete; a flood's almost never do.
                let failing =
                    (done as f64) < self.cfg.syn_flood_max_completion_ratio * attempts as f64;
                if half_open >= self.cfg.syn_flood_syns && failing {
                    let sources = st.sources.count(now, w * NS, 2);
                    let many = sources >= self.cfg.ddos_sources;
                    book.fire(Firing {
                        kind: if many {
                            AlertKind::Ddos
                        } else {
                            AlertKind::SynFlood
                        },
                        detector: DetectorKind::Rule,
                        src_ip: (sources == 1).then_some(ev.src),
                        dst_ip: Some(ev.dst),
                        ts_ns: now,
                        severity: Severity::from_ratio(
                            half_open as f64 / self.cfg.syn_flood_syns as f64,
                        ),
                        rate: st.syns.rate(),
                        score: None,
                        evidence: json!({
                            "vector": "tcp_syn",
                            "dst_port": ev.dst_port,
                            "attempts": st.syns.sum,
                            "completed": st.done.sum,
                            "sources": sources,
                            "rate_pps": st.syns.rate().round(),
                            "window_s": w,
                        }),
                    });
                }
            }
        }

        // Per-host rates: floods, DDoS, spikes.
        let (pkt_src, pkt_dst) = packet_dst(ev);
        for (host, rx) in [(pkt_dst, true), (pkt_src, false)] {
            if !self.hosts.contains_key(&host) && self.hosts.len() >= cap {
                self.untracked += 1;
                continue;
            }
            let h = self
                .hosts
                .entry(host)
                .or_insert_with(|| HostState::new(&self.cfg, now));
            h.last_ns = now;
            let n = ev.packets;
            match (ev.proto, rx) {
                (proto::UDP, true) => h.rx_udp.add(sec, n),
                (proto::UDP, false) => h.tx_udp.add(sec, n),
                // ICMP flows run requester -> responder: only requests make a flood (victims
                // answer echo requests, so replies say nothing against it).
                (proto::ICMP | proto::ICMPV6, true) if ev.from_src => h.rx_icmp.add(sec, n),
                (proto::ICMP | proto::ICMPV6, false) if ev.from_src => h.tx_icmp.add(sec, n),
                _ => {}
            }
            if rx {
                h.rx_all.add(sec, n);
                if h.rx_all.sum >= self.cfg.ddos_pps {
                    h.sources.add(pkt_src, now, 100_000);
                }
            }
            Self::spike(
                &self.cfg,
                host,
                h,
                sec,
                if rx { (n, 0) } else { (0, n) },
                now,
                book,
            );
            if rx {
                Self::floods(&self.cfg, host, pkt_src, h, sec, now, book);
            }
        }
    }

    fn floods(
        cfg: &RuleConfig,
        host: IpAddr,
        src: IpAddr,
        h: &mut HostState,
        sec: u64,
        now: u64,
        book: &mut AlertBook,
    ) {
        let sources = h
            .sources
            .count(now, cfg.ddos_window_s * NS, cfg.ddos_sources);
        let many = sources >= cfg.ddos_sources;
        let flood_min = cfg.flood_pps * cfg.flood_window_s;
        for (kind, rx, tx, vector) in [
            (AlertKind::UdpFlood, &mut h.rx_udp, &mut h.tx_udp, "udp"),
            (AlertKind::IcmpFlood, &mut h.rx_icmp, &mut h.tx_icmp, "icmp"),
        ] {
            let inbound = rx.sum_at(sec);
            let replies = tx.sum_at(sec);
            // UDP: a victim answers (almost) nothing. ICMP counts requests only (see above).
            let one_sided = kind == AlertKind::IcmpFlood
                || (replies as f64) < cfg.flood_max_reply_ratio * inbound as f64;
            if inbound >= flood_min && one_sided {
                let rate = rx.rate();
                book.fire(Firing {
                    kind: if many { AlertKind::Ddos } else { kind },
                    detector: DetectorKind::Rule,
                    src_ip: (!many).then_some(src),
                    dst_ip: Some(host),
                    ts_ns: now,
                    severity: Severity::from_ratio(rate / cfg.flood_pps as f64),
                    rate,
                    score: None,
                    evidence: json!({
                        "vector": vector,
                        "packets": inbound,
                        "replies": replies,
                        "sources": sources,
                        "rate_pps": rate.round(),
                        "window_s": cfg.flood_window_s,
                    }),
                });
            }
        }
        // DDoS of any protocol: a high rate from many sources (or one that fills the flow map).
        let total = h.rx_all.sum_at(sec) + h.overflow.sum_at(sec);
        let rate = total as f64 / h.rx_all.span().max(h.overflow.span()) as f64;
        if rate >= cfg.ddos_pps as f64 && (many || h.overflow.sum > 0) {
            book.fire(Firing {
                kind: AlertKind::Ddos,
                detector: DetectorKind::Rule,
                src_ip: None,
                dst_ip: Some(host),
                ts_ns: now,
                severity: Severity::from_ratio(rate / cfg.ddos_pps as f64),
                rate,
                score: None,
                evidence: json!({
                    "vector": "any",
                    "packets": total,
                    "sources": sources,
                    "overflow_packets": h.overflow.sum,
                    "rate_pps": rate.round(),
                    "window_s": cfg.ddos_window_s,
                }),
            });
        }
    }

    fn spike(
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
    fn close_second(cfg: &RuleConfig, host: IpAddr, s: &mut Spike, now: u64, book: &mut AlertBook) {
        // A host already in an attack alert needs no second alert for the same packets.
        let explained = book.involves(
            &[
                AlertKind::PortScan,
                AlertKind::HostSweep,
                AlertKind::SynFlood,
                AlertKind::UdpFlood,
                AlertKind::IcmpFlood,
                AlertKind::Ddos,
            ],
            host,
        );
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

    /// Judges one source's sweep. ICMP echo and ARP requests count at once; TCP/UDP probes
    /// count once they went unanswered for `ANSWER_GRACE_NS` (or at the end of the data).
    fn eval_sweep(&mut self, key: (IpAddr, Probe), now: u64, end: bool, book: &mut AlertBook) {
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

    /// Packets the kernel's flow map could not take, counted per destination: they still make
    /// up floods and DDoS (their sources are unknown, which is itself the sign of spoofing).
    pub fn on_overflow(&mut self, ts_ns: u64, dst: &HostKey, s: &HostStats, book: &mut AlertBook) {
        let host = host_ip(dst);
        let sec = ts_ns / NS;
        // A flood's backscatter (SYN-ACKs to millions of spoofed addresses) also overflows,
        // one or two packets per address: such a host cannot be a flood victim, and tracking
        // each would grow without bound. New hosts need a few packets and respect the cap.
        if !self.hosts.contains_key(&host)
            && (s.packets < OVERFLOW_MIN_PACKETS || self.hosts.len() >= self.cfg.max_tracked)
        {
            self.untracked += 1;
            return;
        }
        let h = self
            .hosts
            .entry(host)
            .or_insert_with(|| HostState::new(&self.cfg, ts_ns));
        h.overflow.add(sec, s.packets);
        h.rx_udp.add(sec, s.udp);
        h.rx_icmp.add(sec, s.icmp);
        Self::floods(
            &self.cfg,
            host,
            IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            h,
            sec,
            ts_ns,
            book,
        );
        if s.syn >= self.cfg.syn_flood_syns {
            book.fire(Firing {
                kind: AlertKind::Ddos,
                detector: DetectorKind::Rule,
                src_ip: None,
                dst_ip: Some(host),
                ts_ns,
                severity: Severity::from_ratio(s.syn as f64 / self.cfg.syn_flood_syns as f64),
                rate: s.syn as f64,
                score: None,
                evidence: json!({ "vector": "tcp_syn", "overflow_syns": s.syn, "sources": "unknown (flow map full)" }),
            });
        }
    }

    /// Ends every open second (end of data): spikes in the last second are judged too.
    pub fn flush(&mut self, now: u64, book: &mut AlertBook) {
        let keys: Vec<(IpAddr, Probe)> = self.sweeps.keys().copied().collect();
        for key in keys {
            self.eval_sweep(key, now, true, book);
        }
        let cfg = self.cfg.clone();
        for (host, h) in &mut self.hosts {
            if h.spike.started {
                Self::close_second(&cfg, *host, &mut h.spike, now, book);
                h.spike.rx = 0;
                h.spike.tx = 0;
            }
        }
    }

    fn prune(&mut self, now: u64) {
        let ps = self.cfg.port_scan_window_s * NS;
        let hs = self.cfg.host_sweep_window_s * NS;
        let long = 2
            * self
                .cfg
                .ddos_window_s
                .max(self.cfg.syn_flood_window_s)
                .max(60)
            * NS;
        self.scans.retain(|_, (d, _)| {
            d.seen.retain(|_, t| now.saturating_sub(*t) < ps);
            !d.seen.is_empty()
        });
        self.sweeps.retain(|_, d| {
            d.hosts.retain(|_, (t, _)| now.saturating_sub(*t) < hs);
            !d.hosts.is_empty()
        });
        self.syn
            .retain(|_, s| now / NS <= s.syns.last_sec + 2 * self.cfg.syn_flood_window_s);
        self.hosts
            .retain(|_, h| now.saturating_sub(h.last_ns) < long);
    }
}

fn host_ip(k: &HostKey) -> IpAddr {
    let v6 = std::net::Ipv6Addr::from(k.addr);
    match k.family {
        family::IPV6 => IpAddr::V6(v6),
        _ => IpAddr::V4(v6.to_ipv4_mapped().unwrap_or(Ipv4Addr::UNSPECIFIED)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::detect::alert::Alert;

    const A: IpAddr = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1));
    const B: IpAddr = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 2));

    fn ev(ts_ms: u64, src: IpAddr, dst: IpAddr, port: u16, proto_: u8) -> FlowEvent {
        FlowEvent {
            ts_ns: ts_ms * 1_000_000,
            src,
            dst,
            dst_port: port,
            proto: proto_,
            family: family::IPV4,
            key_dst_port: port,
            new_flow: true,
            from_src: true,
            packets: 1,
            bytes: 60,
            syn: u64::from(proto_ == proto::TCP),
            syn_ack: 0,
            rst: 0,
            completed: false,
        }
    }

    fn run(events: &[FlowEvent]) -> Vec<Alert> {
        let mut r = Rules::new(RuleConfig::default());
        let mut book = AlertBook::new(30 * NS);
        for e in events {
            r.on_event(e, &mut book);
            r.tick(e.ts_ns, &mut book);
        }
        let end = events.last().map_or(0, |e| e.ts_ns);
        r.flush(end, &mut book);
        book.flush();
        book.take_closed()
    }

    fn kinds(a: &[Alert]) -> Vec<AlertKind> {
        a.iter().map(|a| a.kind).collect()
    }

    #[test]
    fn port_scan_fires_at_the_threshold_and_aggregates_into_one_alert() {
        let probes: Vec<_> = (0..19)
            .map(|p| ev(p * 10, A, B, 1000 + p as u16, proto::TCP))
            .collect();
        assert!(
            kinds(&run(&probes)).is_empty(),
            "19 ports is below the threshold"
        );
        let probes: Vec<_> = (0..200)
            .map(|p| ev(p * 10, A, B, 1000 + p as u16, proto::TCP))
            .collect();
        let alerts = run(&probes);
        assert_eq!(kinds(&alerts), vec![AlertKind::PortScan]);
        assert_eq!(
            (alerts[0].src_ip, alerts[0].dst_ip, alerts[0].count),
            (Some(A), Some(B), 181)
        );
        // Spread beyond the window, the same ports are no scan.
        let slow: Vec<_> = (0..40)
            .map(|p| ev(p * 4_000, A, B, 1000 + p as u16, proto::TCP))
            .collect();
        assert!(
            kinds(&run(&slow)).is_empty(),
            "20 ports take 80 s here, longer than 60 s"
        );
    }

    #[test]
    fn answers_from_the_responder_are_not_probes() {
        // A DNS server answering 100 queries from random client ports is not scanning.
        let answers: Vec<_> = (0..100)
            .map(|i| FlowEvent {
                from_src: false,
                new_flow: false,
                ..ev(i * 10, B, A, 53, proto::UDP)
            })
            .collect();
        assert!(kinds(&run(&answers)).is_empty());
    }

    #[test]
    fn host_sweep_counts_unanswered_probes_only() {
        let hosts = |i: u32| IpAddr::V4(Ipv4Addr::from(0x0a01_0000 + i));
        let probes: Vec<_> = (0..60)
            .map(|i| ev(u64::from(i) * 5, A, hosts(i), 80, proto::TCP))
            .collect();
        let alerts = run(&probes);
        assert_eq!(
            kinds(&alerts),
            vec![AlertKind::HostSweep],
            "60 unanswered SYNs to port 80"
        );
        assert_eq!(alerts[0].src_ip, Some(A));
        // The same 60 connections completing (a P2P client reaching its peers): no sweep.
        let mut with_answers = Vec::new();
        for i in 0..60u32 {
            with_answers.push(ev(u64::from(i) * 5, A, hosts(i), 80, proto::TCP));
            with_answers.push(FlowEvent {
                new_flow: false,
                syn: 0,
                completed: true,
                ..ev(u64::from(i) * 5 + 2, A, hosts(i), 80, proto::TCP)
            });
        }
        assert!(kinds(&run(&with_answers)).is_empty());
    }

    #[test]
    fn syn_flood_needs_attempts_that_fail() {
        let flood: Vec<_> = (0..150)
            .map(|i| FlowEvent {
                ..ev(
                    i,
                    IpAddr::V4(Ipv4Addr::from(0x0b00_0000 + i as u32)),
                    B,
                    80,
                    proto::TCP,
                )
            })
            .collect();
        // The same attempts from 150 distinct sources are a DDoS.
        assert_eq!(kinds(&run(&flood)), vec![AlertKind::Ddos]);
        let single: Vec<_> = (0..150).map(|i| ev(i, A, B, 80, proto::TCP)).collect();
        let a = run(&single);
        assert_eq!(kinds(&a), vec![AlertKind::SynFlood]);
        assert_eq!((a[0].src_ip, a[0].dst_ip), (Some(A), Some(B)));
        // The same attempts all completing are a busy server, not a flood.
        let mut busy = Vec::new();
        for i in 0..150 {
            busy.push(ev(i * 2, A, B, 80, proto::TCP));
            busy.push(FlowEvent {
                new_flow: false,
                syn: 0,
                completed: true,
                ..ev(i * 2 + 1, A, B, 80, proto::TCP)
            });
        }
        assert!(kinds(&run(&busy)).is_empty());
    }

    #[test]
    fn floods_need_rate_and_silence_and_spikes_need_a_baseline() {
        let udp: Vec<_> = (0..3000)
            .map(|i| FlowEvent {
                new_flow: i == 0,
                ..ev(i / 2, A, B, 53, proto::UDP)
            })
            .collect();
        let a = run(&udp);
        assert_eq!(kinds(&a), vec![AlertKind::UdpFlood]);
        // The same rate answered one for one is a busy service; only a spike remains.
        let mut answered = Vec::new();
        for i in 0..3000u64 {
            answered.push(FlowEvent {
                new_flow: i == 0,
                ..ev(i / 2, A, B, 53, proto::UDP)
            });
            answered.push(FlowEvent {
                new_flow: false,
                from_src: false,
                ..ev(i / 2, A, B, 53, proto::UDP)
            });
        }
        assert!(
            kinds(&run(&answered))
                .iter()
                .all(|k| *k == AlertKind::TrafficSpike)
        );
        // A steady 1,500 pps for a minute is that host's normal: one spike when it starts.
        let steady: Vec<_> = (0..90_000u64)
            .map(|i| FlowEvent {
                new_flow: false,
                from_src: i % 2 == 0,
                ..ev(i * 2 / 3, A, B, 443, proto::TCP)
            })
            .collect();
        let spikes = run(&steady)
            .into_iter()
            .filter(|a| a.kind == AlertKind::TrafficSpike)
            .count();
        assert!(spikes <= 2, "{spikes} spike alerts for a steady rate");
    }

    #[test]
    fn alerts_close_after_the_quiet_period() {
        let mut r = Rules::new(RuleConfig::default());
        let mut book = AlertBook::new(30 * NS);
        for p in 0..25 {
            r.on_event(&ev(p, A, B, 2000 + p as u16, proto::TCP), &mut book);
        }
        assert_eq!(book.take_opened().len(), 1, "opened once");
        book.close_quiet(29 * NS);
        assert!(book.take_closed().is_empty());
        book.close_quiet(31 * NS);
        assert_eq!(kinds(&book.take_closed()), vec![AlertKind::PortScan]);
    }

    #[test]
    fn packets_the_flow_map_refused_still_make_a_ddos() {
        let mut r = Rules::new(RuleConfig::default());
        let mut book = AlertBook::new(30 * NS);
        let victim = HostKey {
            addr: Ipv4Addr::new(10, 0, 0, 2).to_ipv6_mapped().octets(),
            family: family::IPV4,
            _pad: [0; 3],
        };
        let s = HostStats {
            packets: 5000,
            syn: 5000,
            ..HostStats::default()
        };
        r.on_overflow(NS, &victim, &s, &mut book);
        book.flush();
        let a = book.take_closed();
        assert!(
            !a.is_empty()
                && a.iter().all(|a| a.kind == AlertKind::Ddos
                    && a.dst_ip == Some(B)
                    && a.src_ip.is_none()),
            "{a:?}"
        );
    }

    #[test]
    fn backscatter_to_spoofed_addresses_does_not_grow_host_state() {
        let cfg = RuleConfig {
            max_tracked: 1000,
            ..RuleConfig::default()
        };
        let mut r = Rules::new(cfg);
        let mut book = AlertBook::new(30 * NS);
        // One SYN-ACK each to 100k spoofed addresses, then a real victim's overflow.
        for i in 0..100_000u32 {
            let k = HostKey {
                addr: Ipv4Addr::from(0x0b00_0000 + i).to_ipv6_mapped().octets(),
                family: family::IPV4,
                _pad: [0; 3],
            };
            let s = HostStats {
                packets: 1,
                ..HostStats::default()
            };
            r.on_overflow(NS, &k, &s, &mut book);
        }
        assert!(r.hosts.is_empty(), "{} hosts tracked", r.hosts.len());
        assert_eq!(r.untracked, 100_000);
        let victim = HostKey {
            addr: Ipv4Addr::new(10, 0, 0, 2).to_ipv6_mapped().octets(),
            family: family::IPV4,
            _pad: [0; 3],
        };
        let s = HostStats {
            packets: 5000,
            syn: 5000,
            ..HostStats::default()
        };
        r.on_overflow(NS, &victim, &s, &mut book);
        assert_eq!(r.hosts.len(), 1);
    }
}
