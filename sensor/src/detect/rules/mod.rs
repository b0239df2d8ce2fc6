//! Threshold rules on flow events, in data time: port scan, host sweep, SYN flood, UDP/ICMP
//! flood, DDoS, traffic spike. Thresholds come from the TOML config (defaults as the old tool).
//!
//! Principles rather than tuning: a scan is many *distinct* targets from one initiator (new
//! flows, so answers never count as probes); a flood is a rate into one victim that gets almost
//! nothing back; a DDoS is such a rate from many sources; a spike is a rate above the host's own
//! recent baseline.

mod beacon;
mod brute;
pub mod custom;
mod flood;
mod scan;
mod slow;
mod spike;
#[cfg(test)]
mod tests;
mod window;

use std::net::{IpAddr, Ipv4Addr};

use crate::detect::FastMap;

use sensor_common::{HostKey, family};
use serde::{Deserialize, Serialize};

use self::{
    flood::{HostState, SynState},
    scan::{Probe, Sweep},
    window::Distinct,
};
use super::alert::AlertBook;
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
    /// ...while it answers fewer than this share of them. A flood also when the UDP or ICMP
    /// it receives passes this many megabits per second, whatever its packet rate (0: off).
    pub flood_mbps: u64,
    pub flood_max_reply_ratio: f64,
    /// Packets per second into one host, from at least `ddos_sources` sources, for a DDoS...
    pub ddos_pps: u64,
    pub ddos_sources: usize,
    pub ddos_window_s: u64,
    /// ...while the host answers fewer than this share of them (RSTs and ICMP errors are not
    /// answers).
    pub ddos_max_answer_ratio: f64,
    /// Slow scans and sweeps: unanswered probes of distinct ports of one host, or of distinct
    /// hosts, from one source within the long window...
    pub slow_scan_ports: usize,
    pub slow_sweep_hosts: usize,
    /// ...of this many seconds (also the window of low-and-slow reflection).
    pub slow_window_s: u64,
    /// Low-and-slow reflection: unsolicited replies to one host from at least this many
    /// sources...
    pub slow_reflection_sources: usize,
    /// ...and this many packets within the long window, with (almost) no UDP sent back.
    pub slow_reflection_packets: u64,
    /// Packets per second to or from a host for a spike...
    pub spike_pps: u64,
    /// ...and this many times its recent baseline (an exponential average of its past seconds).
    pub spike_factor: f64,
    pub spike_baseline_alpha: f64,
    /// Password guessing: short sessions to a login service from one source (failing the
    /// same way) within the window... (docs/DETECTION.md, "Password guessing")
    pub brute_force_attempts: u64,
    pub brute_force_window_s: u64,
    /// ...a session under this many seconds (one that logged in goes on)...
    pub brute_force_max_session_s: u64,
    /// ...or three times as many from at least this many sources at one service...
    pub brute_force_sources: usize,
    /// ...to these ports: services whose sessions start with a login.
    pub brute_force_ports: Vec<u16>,
    /// Beaconing: at least this many connections of one host to one endpoint (0: off)...
    pub beacon_min_connections: usize,
    /// ...a median period of at least this many seconds...
    pub beacon_min_period_s: u64,
    /// ...scoring at least this for the regularity of their intervals and sizes (0 to 1)...
    pub beacon_min_score: f64,
    /// ...kept this long after a pair's last connection...
    pub beacon_window_s: u64,
    /// ...to an endpoint fewer sources than this contact, from a source polling fewer
    /// destinations than this on the port (infrastructure and pollers beacon too)...
    pub beacon_max_sources: usize,
    /// ...from inside these networks to outside them (empty: any pair)...
    pub beacon_home: Vec<String>,
    /// ...never to these (CIDR).
    pub beacon_allow: Vec<String>,
    /// An alert closes after this many seconds without firing.
    pub quiet_close_s: u64,
    /// Most keys each tracker holds; beyond it new keys are not tracked (counted).
    pub max_tracked: usize,
    /// Operator rules (`[[rules.custom]]`), beside the built-in ones.
    pub custom: Vec<custom::CustomRule>,
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
            flood_mbps: 0,
            flood_max_reply_ratio: 0.05,
            ddos_pps: 1000,
            ddos_sources: 20,
            ddos_window_s: 10,
            ddos_max_answer_ratio: 0.2,
            slow_scan_ports: 100,
            slow_sweep_hosts: 100,
            slow_window_s: 900,
            slow_reflection_sources: 10,
            slow_reflection_packets: 300,
            spike_pps: 1000,
            spike_factor: 3.0,
            spike_baseline_alpha: 0.3,
            brute_force_attempts: 20,
            brute_force_window_s: 1800,
            brute_force_max_session_s: 30,
            brute_force_sources: 10,
            brute_force_ports: vec![
                21, 22, 23, 110, 143, 389, 445, 465, 587, 993, 995, 1433, 1521, 3306, 3389, 5432,
                5900, 5985, 5986,
            ],
            beacon_min_connections: 20,
            beacon_min_period_s: 5,
            beacon_min_score: 0.8,
            beacon_window_s: 86_400,
            beacon_max_sources: 3,
            beacon_home: Vec::new(),
            beacon_allow: Vec::new(),
            quiet_close_s: 30,
            max_tracked: 200_000,
            custom: Vec::new(),
        }
    }
}

const NS: u64 = 1_000_000_000;

/// How often (data time) the rules look again at what waits for time to pass: probes and SYN
/// attempts whose answer grace may have run out. Live, that is every poll.
pub const SETTLE_NS: u64 = 100_000_000;

/// Overflow packets (in one poll) before an untracked host gets per-host state.
const OVERFLOW_MIN_PACKETS: u64 = 8;

/// One victim's flood thresholds: `[rules]`'s, with its hostgroup's where it sets them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Limits {
    pub(super) syn_flood_syns: u64,
    pub(super) udp_pps: u64,
    pub(super) icmp_pps: u64,
    /// Bytes per second (0: no bandwidth threshold).
    pub(super) udp_bytes: u64,
    pub(super) icmp_bytes: u64,
    pub(super) ddos_pps: u64,
    pub(super) spike_pps: u64,
}

impl Limits {
    fn of(cfg: &RuleConfig, g: Option<&crate::networks::GroupThresholds>) -> Self {
        let g = g.copied().unwrap_or_default();
        let bytes = |mbps: u64| mbps * 1_000_000 / 8;
        Self {
            syn_flood_syns: g.syn_flood_syns.unwrap_or(cfg.syn_flood_syns),
            udp_pps: g.udp_pps.unwrap_or(cfg.flood_pps),
            icmp_pps: g.icmp_pps.unwrap_or(cfg.flood_pps),
            udp_bytes: bytes(g.udp_mbps.unwrap_or(cfg.flood_mbps)),
            icmp_bytes: bytes(g.icmp_mbps.unwrap_or(cfg.flood_mbps)),
            ddos_pps: g.ddos_pps.unwrap_or(cfg.ddos_pps),
            spike_pps: g.spike_pps.unwrap_or(cfg.spike_pps),
        }
    }
}

/// `host`'s thresholds: `plain` unless its hostgroup sets its own.
pub(super) fn victim_limits(
    cfg: &RuleConfig,
    plain: Limits,
    groups: Option<&crate::networks::Networks>,
    host: IpAddr,
) -> Limits {
    match groups.and_then(|n| n.group(host)) {
        Some(g) => Limits::of(cfg, Some(&g.thresholds)),
        None => plain,
    }
}

/// The rule engine.
pub struct Rules {
    cfg: RuleConfig,
    /// `[rules]`'s thresholds for every victim outside a hostgroup that sets its own.
    limits: Limits,
    /// Hostgroups with thresholds of their own (none: every victim has `limits`).
    groups: Option<crate::networks::Networks>,
    /// The operator rules, and the networks their direction and hostgroup are judged by.
    custom: custom::Custom,
    networks: Option<crate::networks::Networks>,
    scans: FastMap<(IpAddr, IpAddr), (Distinct<u16>, u8)>,
    /// Scans that grew while their firing was held back this second.
    scans_pending: Vec<(IpAddr, IpAddr)>,
    sweeps: FastMap<(IpAddr, Probe), Sweep>,
    /// Sweeps big enough to fire once their probes settle.
    sweeps_held: Vec<(IpAddr, Probe)>,
    syn: FastMap<(IpAddr, u16), SynState>,
    /// SYN floods past their threshold whose failing sources have not settled yet.
    syn_held: Vec<(IpAddr, u16)>,
    hosts: FastMap<IpAddr, HostState>,
    slow: slow::Slow,
    brute: brute::Brute,
    beacons: beacon::Beacons,
    /// Traffic spikes waiting out their hold (see `alert::SPIKE_HOLD_NS`).
    spikes_held: Vec<crate::detect::alert::Firing>,
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
            limits: Limits::of(&cfg, None),
            groups: None,
            custom: custom::Custom::new(&cfg.custom),
            networks: None,
            cfg,
            scans: FastMap::default(),
            scans_pending: Vec::new(),
            sweeps: FastMap::default(),
            sweeps_held: Vec::new(),
            syn: FastMap::default(),
            syn_held: Vec::new(),
            hosts: FastMap::default(),
            slow: slow::Slow::default(),
            brute: brute::Brute::default(),
            beacons: beacon::Beacons::default(),
            spikes_held: Vec::new(),
            next_prune_ns: 0,
            untracked: 0,
        }
    }

    pub fn config(&self) -> &RuleConfig {
        &self.cfg
    }

    /// Victims in hostgroups with thresholds of their own are judged by them.
    pub fn set_networks(&mut self, n: &crate::networks::Networks) {
        self.groups = n.has_thresholds().then(|| n.clone());
        self.networks = (!self.custom.is_empty()).then(|| n.clone());
    }

    /// `host`'s thresholds as a victim (looked up when its state is made, not per packet).
    pub(super) fn limits(&self, host: IpAddr) -> Limits {
        victim_limits(&self.cfg, self.limits, self.groups.as_ref(), host)
    }

    /// Feeds one flow event.
    pub fn on_event(&mut self, ev: &FlowEvent, book: &mut AlertBook) {
        let now = ev.ts_ns;
        let sec = now / NS;
        if now >= self.next_prune_ns {
            self.prune(now);
            self.next_prune_ns = now + 10 * NS;
        }

        if !self.custom.is_empty() {
            let cap = self.cfg.max_tracked;
            self.custom.on_event(ev, self.networks.as_ref(), cap, book);
        }
        self.port_scan(ev, now, book);
        self.host_sweep(ev, now, book);
        if ev.family == family::ARP {
            return;
        }
        self.syn_flood(ev, now, sec, book);
        self.host_rates(ev, now, sec, book);
    }
    /// Ends every open second (end of data): spikes in the last second are judged too.
    pub fn flush(&mut self, now: u64, book: &mut AlertBook) {
        let keys: Vec<(IpAddr, Probe)> = self.sweeps.keys().copied().collect();
        for key in keys {
            self.eval_sweep(key, now, true, false, book);
        }
        // The last second's held-back scan growth, with the data's last timestamp.
        for key in std::mem::take(&mut self.scans_pending) {
            if let Some((d, _)) = self.scans.get_mut(&key) {
                d.pending = false;
                d.allow_fire();
            }
            self.judge_scan(key, now, true, book);
        }
        self.slow_judge(now, true, book);
        self.syn_floods_tick(now, true, book);
        let cfg = self.cfg.clone();
        for (host, h) in &mut self.hosts {
            if h.spike.started {
                Self::close_second(&cfg, *host, &mut h.spike, &mut self.spikes_held);
                h.spike.rx = 0;
                h.spike.tx = 0;
            }
        }
        self.release_spikes(now, true, book);
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
        crate::detect::shrink(&mut self.scans);
        crate::detect::shrink(&mut self.sweeps);
        crate::detect::shrink(&mut self.syn);
        crate::detect::shrink(&mut self.hosts);
        self.slow_prune(now);
        self.brute_prune(now);
        self.custom.prune(now);
        self.beacon_prune(now);
    }
}

fn host_ip(k: &HostKey) -> IpAddr {
    let v6 = std::net::Ipv6Addr::from(k.addr);
    match k.family {
        family::IPV6 => IpAddr::V6(v6),
        _ => IpAddr::V4(v6.to_ipv4_mapped().unwrap_or(Ipv4Addr::UNSPECIFIED)),
    }
}
