//! Scans and sweeps: many *distinct* targets from one initiator, counted among new flows only
//! (answers never count as probes); TCP/UDP probes count once they went unanswered.

use std::net::IpAddr;

use crate::detect::FastMap;

use sensor_common::{family, proto};

use super::{NS, Rules, SETTLE_NS, window::Distinct};
use crate::{
    detect::{
        alert::{AlertBook, AlertKind, DetectorKind, Firing, Severity},
        evidence::{Evidence, ScanEvidence, SweepEvidence},
    },
    flow::FlowEvent,
};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(super) enum Probe {
    IcmpEcho,
    Arp,
    Tcp(u16),
    Udp(u16),
    /// TCP probes to whatever port (the long window's sweep across a few ports, see `slow`).
    TcpAny,
    UdpAny,
}

impl Probe {
    pub(super) fn label(self) -> String {
        match self {
            Self::IcmpEcho => "icmp_echo".into(),
            Self::Arp => "arp".into(),
            Self::Tcp(p) => format!("tcp/{p}"),
            Self::Udp(p) => format!("udp/{p}"),
            Self::TcpAny => "tcp/*".into(),
            Self::UdpAny => "udp/*".into(),
        }
    }
}

/// What became of a probe.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Fate {
    /// No answer yet.
    Pending,
    /// The host answered (an echo reply, a completed handshake, a UDP reply, an ARP reply).
    Answered,
    /// The host refused it (a RST): it is there, but the probe found nothing open.
    Refused,
}

/// Hosts one source probed one way: when, and what became of the probe.
#[derive(Default)]
pub(super) struct Sweep {
    pub(super) hosts: FastMap<IpAddr, (u64, Fate)>,
    /// Hosts counted when the rule last fired: it fires again only when the sweep grows.
    pub(super) fired_at: usize,
    /// Settle slot (`SETTLE_NS`) of the last pass over `hosts`.
    pub(super) judged: Option<u64>,
    /// Replies seen (answers or refusals), and the longest a host took to reply: how long
    /// this source's probes take to come back when they do (see [`Sweep::grace`]).
    replies: u32,
    reply_delay_max: u64,
    /// In the rules' list of sweeps waiting for their probes to settle.
    pub(super) held: bool,
}

impl Sweep {
    fn answer(&mut self, host: IpAddr, now: u64) {
        self.reply(host, now, Fate::Answered);
    }

    fn refuse(&mut self, host: IpAddr, now: u64) {
        self.reply(host, now, Fate::Refused);
    }

    /// A reply from `host`: the first one (to a pending probe) teaches the round trip; an
    /// answer after a refusal still makes the host answered.
    fn reply(&mut self, host: IpAddr, now: u64, fate: Fate) {
        let Some(h) = self.hosts.get_mut(&host) else {
            return;
        };
        let delay = (h.1 == Fate::Pending).then(|| now.saturating_sub(h.0));
        if h.1 != Fate::Answered {
            h.1 = fate;
        }
        if let Some(d) = delay {
            self.replied(d);
        }
    }

    fn replied(&mut self, delay: u64) {
        self.replies = self.replies.saturating_add(1);
        self.reply_delay_max = self.reply_delay_max.max(delay);
    }

    /// How long a probe goes unanswered before it counts: a reply takes a round trip, so
    /// once this source's probes have come back a few times (answered or refused), four times
    /// the slowest of those replies (at least `MIN_GRACE_NS`); before that, `ANSWER_GRACE_NS`,
    /// the TCP retransmission timer's first second. A monitor's hosts answer within the grace
    /// its own answers set; a sweep's silent addresses never do.
    pub(super) fn grace(&self) -> u64 {
        if self.replies >= GRACE_REPLIES {
            (4 * self.reply_delay_max).clamp(MIN_GRACE_NS, ANSWER_GRACE_NS)
        } else {
            ANSWER_GRACE_NS
        }
    }
}

/// How long a probe may go unanswered before it counts towards a sweep, when its source's own
/// answers say nothing yet.
pub(super) const ANSWER_GRACE_NS: u64 = NS;

/// The shortest grace learnt from answers. Probes are judged at the end of a batch of data
/// (a poll), so an answer within the grace is always seen first.
pub(super) const MIN_GRACE_NS: u64 = 50_000_000;

/// Replies a source needs before its grace is learnt from them.
const GRACE_REPLIES: u32 = 3;

/// Reflectors sending unsolicited replies from one port to a host before that port's traffic
/// to it stops counting as probes (whatever its ports look like).
pub(super) const REFLECTORS_MIN: usize = 3;

/// The shape of a reply, never of a probe: sent from a service's port (well-known or
/// registered, below the dynamic range) to a higher, client-side port. Reflected floods arrive
/// like this, one reflector hitting many of the victim's ports from one service port; counted
/// as probes they would make every reflector a "port scanner".
pub(super) fn reply_shaped(src_port: u16, dst_port: u16) -> bool {
    src_port != 0 && src_port < 49_152 && src_port < dst_port && dst_port >= 1024
}

/// A TCP packet that probes: a SYN, or a lone packet without payload (FIN, NULL, Xmas and ACK
/// scans send one, twice at most with a retransmission), never a SYN-ACK (always a reply).
/// Data-bearing packets are a connection we joined mid-way. Without a SYN, a RST (no scan
/// sends one: it answers or tears down) or a packet shaped as a reply (from a service port to
/// a client port) is a host answering: a flooded server's RSTs and challenge ACKs to the
/// flood's many source ports, whose SYNs the flow map had no room for, are no port scan.
pub(super) fn tcp_probe(ev: &FlowEvent) -> bool {
    ev.syn_ack == 0
        && (ev.syn > 0
            || (ev.rst == 0
                && !reply_shaped(ev.src_port, ev.dst_port)
                && ev.packets <= 2
                && ev.bytes <= ev.packets * PROBE_MAX_FRAME))
}

/// Largest frame of a header-only TCP probe: Ethernet, two VLAN tags, IPv6, TCP with options.
const PROBE_MAX_FRAME: u64 = 14 + 8 + 40 + 60;

/// A UDP packet that probes: addressed to a service rather than shaped as a reply.
pub(super) fn udp_probe(ev: &FlowEvent) -> bool {
    !reply_shaped(ev.src_port, ev.dst_port)
}

impl Rules {
    pub(super) fn probe(ev: &FlowEvent) -> Option<Probe> {
        if !ev.new_flow || !ev.from_src {
            return None;
        }
        if ev.family == family::ARP {
            return (ev.key_dst_port == 1).then_some(Probe::Arp);
        }
        match ev.proto {
            proto::ICMP if ev.key_dst_port >> 8 == 8 => Some(Probe::IcmpEcho),
            proto::ICMPV6 if ev.key_dst_port >> 8 == 128 => Some(Probe::IcmpEcho),
            // A SYN, or a lone header-only packet (an "ACK ping"): not a connection we joined.
            proto::TCP if tcp_probe(ev) => Some(Probe::Tcp(ev.dst_port)),
            proto::UDP if udp_probe(ev) => Some(Probe::Udp(ev.dst_port)),
            _ => None,
        }
    }

    /// Port scan: distinct destination ports on one host among new flows from one source.
    pub(super) fn port_scan(&mut self, ev: &FlowEvent, now: u64, book: &mut AlertBook) {
        let cap = self.cfg.max_tracked;
        let probing_ports = ev.new_flow
            && ev.from_src
            && ev.family != family::ARP
            && ((ev.proto == proto::TCP && tcp_probe(ev))
                || (ev.proto == proto::UDP && udp_probe(ev) && !self.reflected(ev)));
        if probing_ports {
            self.slow_probe_port(ev, now);
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
            if fresh {
                self.judge_scan((ev.src, ev.dst), now, false, book);
            }
        }
    }

    /// Fires the port scan of `key` when it has reached the threshold: at most once a data
    /// second per key on the packet path (`timer` false); a growth held back is fired by the
    /// next second's tick (`timer` true), so the evidence trails the scan by a second at most.
    pub(super) fn judge_scan(
        &mut self,
        key: (IpAddr, IpAddr),
        now: u64,
        timer: bool,
        book: &mut AlertBook,
    ) {
        let (window, threshold) = (self.cfg.port_scan_window_s, self.cfg.port_scan_ports);
        let Some((ports, p)) = self.scans.get_mut(&key) else {
            return;
        };
        let n = ports.count(now, window * NS, threshold);
        if n < threshold || (timer && n <= ports.fired_n) {
            return;
        }
        if !ports.may_fire(now) {
            if !ports.pending {
                ports.pending = true;
                self.scans_pending.push(key);
            }
            return;
        }
        ports.fired_n = n;
        book.fire(Firing {
            kind: AlertKind::PortScan,
            detector: DetectorKind::Rule,
            src_ip: Some(key.0),
            dst_ip: Some(key.1),
            ts_ns: now,
            severity: Severity::from_ratio(n as f64 / threshold as f64),
            rate: n as f64,
            score: None,
            evidence: Evidence::Scan(ScanEvidence {
                ports: n,
                probes: None,
                unanswered: None,
                sample_ports: ports.sample(10),
                proto: Some(if *p == proto::TCP { "tcp" } else { "udp" }),
                window_s: window,
                slow: None,
            }),
        });
    }

    /// Host sweep: distinct hosts probed the same way by one source.
    pub(super) fn host_sweep(&mut self, ev: &FlowEvent, now: u64, book: &mut AlertBook) {
        let cap = self.cfg.max_tracked;
        if let Some(probe) = Self::probe(ev) {
            self.slow_probe_host(ev, probe, now);
            let key = (ev.src, probe);
            if !self.sweeps.contains_key(&key) && self.sweeps.len() >= cap {
                self.untracked += 1;
            } else {
                let sweep = self.sweeps.entry(key).or_default();
                if sweep.hosts.len() < 65_536 || sweep.hosts.contains_key(&ev.dst) {
                    sweep.hosts.insert(ev.dst, (now, Fate::Pending));
                }
                if !sweep.held && sweep.hosts.len() >= self.cfg.host_sweep_hosts {
                    sweep.held = true;
                    self.sweeps_held.push(key);
                }
                self.eval_sweep(key, now, false, false, book);
            }
        }
        // Answers take TCP/UDP probes out of a sweep: a P2P client that reaches 50 peers is not
        // sweeping; a sweep is mostly met with silence, RSTs, or handshakes it never finishes.
        // An ARP request its target answers is neighbour resolution (a router resolving the
        // hosts it forwards to asks for every one of them); a sweep asks mostly for nobody.
        if ev.family == family::ARP {
            if !ev.from_src
                && let Some(s) = self.sweeps.get_mut(&(ev.src, Probe::Arp))
            {
                s.answer(ev.dst, now);
            }
        } else if ev.proto == proto::TCP && ev.completed {
            if let Some(s) = self.sweeps.get_mut(&(ev.src, Probe::Tcp(ev.dst_port))) {
                s.answer(ev.dst, now);
            }
        } else if ev.proto == proto::TCP && !ev.from_src && ev.rst > 0 {
            // Refused: the probe's fate is known now, no need to wait for an answer.
            if let Some(s) = self.sweeps.get_mut(&(ev.src, Probe::Tcp(ev.dst_port))) {
                s.refuse(ev.dst, now);
            }
        } else if ev.proto == proto::UDP
            && !ev.from_src
            && let Some(s) = self.sweeps.get_mut(&(ev.src, Probe::Udp(ev.dst_port)))
        {
            s.answer(ev.dst, now);
        } else if matches!(ev.proto, proto::ICMP | proto::ICMPV6)
            && !ev.from_src
            && let Some(s) = self.sweeps.get_mut(&(ev.src, Probe::IcmpEcho))
        {
            // An echo reply (it joins its request's flow). A monitor pinging the same answered
            // hosts every few seconds is revisiting them, not discovering them.
            s.answer(ev.dst, now);
        }
        self.slow_answer(ev);
    }

    /// Whether `ev` comes from the port this host is being flooded from by many reflectors:
    /// part of a reflection, not a probe, whatever its ports look like.
    fn reflected(&self, ev: &FlowEvent) -> bool {
        self.hosts
            .get(&ev.dst)
            .and_then(|h| h.reflection_port(REFLECTORS_MIN))
            .is_some_and(|p| p == ev.src_port)
    }

    /// Judges one source's sweep: probes count once refused or unanswered for the sweep's
    /// grace ([`Sweep::grace`]; all of them at the end of the data). A sweep discovers, and
    /// most of the addresses it tries hold nobody; hosts that answer are known to the source.
    pub(super) fn eval_sweep(
        &mut self,
        key: (IpAddr, Probe),
        now: u64,
        end: bool,
        timer: bool,
        book: &mut AlertBook,
    ) {
        let window = self.cfg.host_sweep_window_s * NS;
        let Some(sweep) = self.sweeps.get_mut(&key) else {
            return;
        };
        if sweep.hosts.len() < self.cfg.host_sweep_hosts {
            return;
        }
        // A pass over the hosts at most once a settle slot per key from the packet path; the
        // settle pass (`end` or a timer call) judges what was held back.
        let slot = now / SETTLE_NS;
        if !end && !timer && sweep.judged == Some(slot) {
            return;
        }
        sweep.judged = Some(slot);
        sweep
            .hosts
            .retain(|_, (t, _)| now.saturating_sub(*t) < window);
        let grace = sweep.grace();
        let counted = |(t, fate): &(u64, Fate)| match fate {
            Fate::Answered => false,
            Fate::Refused => true,
            Fate::Pending => end || now.saturating_sub(*t) >= grace,
        };
        // The alert is as recent as the newest probe it counts, not the clock of this check.
        let (n, newest) = sweep
            .hosts
            .values()
            .filter(|v| counted(v))
            .fold((0usize, 0u64), |(n, newest), (t, _)| {
                (n + 1, newest.max(*t))
            });
        if n < self.cfg.host_sweep_hosts {
            sweep.fired_at = 0;
            return;
        }
        if n <= sweep.fired_at {
            return;
        }
        sweep.fired_at = n;
        let hosts = super::window::smallest(
            sweep
                .hosts
                .iter()
                .filter(|(_, v)| counted(v))
                .map(|(h, _)| *h),
            10,
        );
        book.fire(Firing {
            kind: AlertKind::HostSweep,
            detector: DetectorKind::Rule,
            src_ip: Some(key.0),
            dst_ip: None,
            ts_ns: newest,
            severity: Severity::from_ratio(n as f64 / self.cfg.host_sweep_hosts as f64),
            rate: n as f64,
            score: None,
            evidence: Evidence::Sweep(SweepEvidence {
                hosts: n,
                probes: None,
                unanswered: None,
                sample_hosts: hosts,
                probe: key.1.label(),
                window_s: self.cfg.host_sweep_window_s,
                slow: None,
                sample_ports: Vec::new(),
            }),
        });
    }

    /// Port scans whose growth was held back this second fire now.
    pub(super) fn scans_pending_fire(&mut self, now: u64, book: &mut AlertBook) {
        for key in std::mem::take(&mut self.scans_pending) {
            if let Some((d, _)) = self.scans.get_mut(&key) {
                d.pending = false;
            }
            self.judge_scan(key, now, true, book);
        }
    }

    /// Time passes (every `SETTLE_NS` of data time): probes and SYN attempts left unanswered
    /// long enough now count, so sweeps and floods waiting on them are judged.
    pub fn settle(&mut self, now: u64, book: &mut AlertBook) {
        let held = std::mem::take(&mut self.sweeps_held);
        for key in held {
            let big = self
                .sweeps
                .get(&key)
                .is_some_and(|s| s.hosts.len() >= self.cfg.host_sweep_hosts);
            if !big {
                if let Some(s) = self.sweeps.get_mut(&key) {
                    s.held = false;
                }
                continue;
            }
            self.eval_sweep(key, now, false, true, book);
            self.sweeps_held.push(key);
        }
        self.syn_floods_tick(now, false, book);
    }

    /// Every second of data time: scans held back this second, the slow windows, spikes
    /// (what waits for answers is judged by `settle`, at the end of a batch of data).
    pub fn tick(&mut self, now: u64, book: &mut AlertBook) {
        self.scans_pending_fire(now, book);
        self.slow_tick(now, book);
        self.close_spike_seconds(now);
        self.release_spikes(now, false, book);
    }
}
