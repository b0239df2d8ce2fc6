//! Floods and DDoS: a rate into one victim that gets almost nothing back (SYN attempts that
//! never complete, UDP that is not answered, ICMP requests), from one source or many, and the
//! kernel's overflow counters when a flood fills the flow map.
//!
//! Reflection: replies nobody asked for. A flow the remote side started, from a service's port
//! to a client-side port (`scan::reply_shaped`), or carrying no ports at all (the non-first
//! fragments of large replies), or opening with a SYN-ACK, is an unsolicited reply; many
//! sources sending them from one port to one host is a reflected flood of that service. The
//! DDoS verdict needs the victim not to answer (RSTs and ICMP errors are not answers): a host
//! trading answered traffic with hundreds of peers is busy, not attacked.

use std::net::IpAddr;

use sensor_common::{HostKey, HostStats, proto};

use super::{
    Limits, NS, OVERFLOW_MIN_PACKETS, RuleConfig, Rules, SETTLE_NS, host_ip, packet_dst, scan,
    spike::Spike,
    victim_limits,
    window::{Distinct, Run, SecWindow},
};
use crate::{
    detect::{
        FastMap,
        alert::{AlertBook, AlertKind, DetectorKind, Firing, Severity},
        evidence::{Evidence, FloodEvidence, ReflectedService, Sources, Vector},
    },
    flow::FlowEvent,
};

pub(super) struct SynState {
    /// The victim's threshold (half-open attempts in the window).
    pub(super) min: u64,
    pub(super) syns: SecWindow,
    pub(super) done: SecWindow,
    /// Sources whose attempts are failing.
    /// A source leaves when one of its handshakes completes: a client beside the flood is no
    /// flooder; a flooder never completes (its stack's RSTs to the victim's SYN-ACKs
    /// included). It counts once an attempt of its failed for certain (refused by the victim,
    /// or reset by the source itself) or went unanswered for the answer grace, as a sweep's
    /// probes do, so clients in mid-handshake are never counted.
    pub(super) failing: FastMap<IpAddr, Failer>,
    /// The last judgment: (settle slot, its verdict).
    judged: Option<(u64, Failing)>,
    /// Waiting in the rules' list for its sources to settle.
    held: bool,
}

/// One source's failing attempts at a port.
#[derive(Clone, Copy, Debug)]
pub(super) struct Failer {
    /// The first failing attempt, and the latest.
    first: u64,
    last: u64,
    attempts: u64,
    /// An attempt was refused (RST from the victim) or abandoned (RST from the source).
    certain: bool,
}

/// The sources whose attempts fail, as judged at one moment.
#[derive(Clone, Copy, Debug, Default)]
struct Failing {
    /// Sources whose failing attempt has settled.
    sources: usize,
    /// The one, when only one.
    single: Option<IpAddr>,
    /// Their attempts.
    attempts: u64,
}

impl SynState {
    /// Failing sources settled at `now` (all of them at the end of the data), and the one
    /// when only one is: counted at most once a settle slot (a flood sends thousands of
    /// attempts a second; the set holds up to 4,096 sources).
    fn judge(&mut self, now: u64, window_ns: u64, end: bool) -> Failing {
        let slot = now / SETTLE_NS;
        if !end
            && let Some((s, f)) = self.judged
            && s == slot
        {
            return f;
        }
        self.failing
            .retain(|_, f| now.saturating_sub(f.last) < window_ns);
        let settled =
            |f: &Failer| end || f.certain || now.saturating_sub(f.first) >= scan::ANSWER_GRACE_NS;
        let mut f = Failing::default();
        for (src, x) in &self.failing {
            if settled(x) {
                f.sources += 1;
                f.single = Some(*src);
                f.attempts += x.attempts;
            }
        }
        if f.sources != 1 {
            f.single = None;
        }
        self.judged = Some((slot, f));
        f
    }

    fn sample(&self, n: usize) -> Vec<IpAddr> {
        super::window::smallest(self.failing.keys().copied(), n)
    }
}

pub(super) struct HostState {
    /// Its thresholds as a victim.
    pub(super) lim: Limits,
    pub(super) rx_udp: SecWindow,
    /// Bytes of UDP and ICMP received (the bandwidth thresholds).
    pub(super) rx_udp_bytes: SecWindow,
    pub(super) rx_icmp_bytes: SecWindow,
    pub(super) tx_udp: SecWindow,
    pub(super) rx_icmp: SecWindow,
    pub(super) tx_icmp: SecWindow,
    /// The runs of UDP and ICMP requests received (a flood's rate before its window fills).
    pub(super) udp_run: Run,
    pub(super) icmp_run: Run,
    pub(super) rx_all: SecWindow,
    pub(super) sources: Distinct<IpAddr>,
    /// Packets the flow map could not take (sources unknown: a flood filling the map).
    pub(super) overflow: SecWindow,
    pub(super) spike: Spike,
    pub(super) last_ns: u64,
    /// Packets the host sent that answer something (RSTs and ICMP errors excluded).
    pub(super) tx_answers: SecWindow,
    /// Connection attempts received (SYNs), and the ports they went to: a many-source flood
    /// of them is a SYN flood, limited as one.
    pub(super) rx_syn: SecWindow,
    pub(super) syn_ports: PortTally,
    /// Unsolicited replies received (see the module notes).
    pub(super) unsolicited: SecWindow,
    /// Of those, SYN-ACKs.
    pub(super) unsolicited_syn_ack: SecWindow,
    /// Sources of unsolicited replies.
    pub(super) reflectors: Distinct<IpAddr>,
    /// The service ports unsolicited replies came from, with packet counts.
    pub(super) reflected_ports: PortTally,
    /// The long window, once unsolicited replies arrive (low-and-slow reflection): UDP's,
    /// then TCP's (SYN-ACKs).
    pub(super) slow: [Option<Box<SlowReflection>>; 2],
}

/// The few most frequent ports of a stream (space-saving: a new port replaces the smallest).
#[derive(Default)]
pub(super) struct PortTally {
    slots: [(u16, u64); 4],
}

impl PortTally {
    fn add(&mut self, port: u16, n: u64) {
        if let Some(s) = self.slots.iter_mut().find(|s| s.0 == port && s.1 > 0) {
            s.1 += n;
            return;
        }
        if let Some(min) = self.slots.iter_mut().min_by_key(|s| s.1) {
            *min = (port, min.1 + n);
        }
    }

    /// The top port and its share of all counted.
    fn top(&self) -> Option<(u16, f64)> {
        let total: u64 = self.slots.iter().map(|s| s.1).sum();
        let best = self.slots.iter().max_by_key(|s| s.1)?;
        (best.1 > 0).then(|| (best.0, best.1 as f64 / total as f64))
    }
}

/// Unsolicited replies of one protocol over the long window, in one-minute buckets.
pub(super) struct SlowReflection {
    packets: SecWindow,
    /// What the host sent in the same protocol and minutes that answers something (its RSTs
    /// to SYN-ACKs it never asked for do not): a victim asked nothing.
    tx: SecWindow,
    sources: Distinct<IpAddr>,
}

/// The slot of `proto_`'s slow reflection window.
fn slow_slot(proto_: u8) -> Option<usize> {
    match proto_ {
        proto::UDP => Some(0),
        proto::TCP => Some(1),
        _ => None,
    }
}

/// A service's name, for evidence only (detection never looks at it).
fn service_name(port: u16) -> Option<&'static str> {
    Some(match port {
        17 => "qotd",
        19 => "chargen",
        53 => "dns",
        69 => "tftp",
        80 => "http",
        111 => "portmap",
        123 => "ntp",
        137 => "netbios",
        161 => "snmp",
        389 => "cldap",
        443 => "https",
        520 => "rip",
        1900 => "ssdp",
        3702 => "ws-discovery",
        5353 => "mdns",
        11211 => "memcached",
        _ => return None,
    })
}

/// ICMP types that report an error (unreachable, time exceeded, parameter problem, ...): a
/// host sending these is refusing traffic, not answering it.
fn icmp_error(proto_: u8, key_dst_port: u16) -> bool {
    let t = key_dst_port >> 8;
    match proto_ {
        proto::ICMP => matches!(t, 3 | 4 | 5 | 11 | 12),
        proto::ICMPV6 => matches!(t, 1..=4),
        _ => false,
    }
}

/// Whether `ev`, received by `host` (`ev` from the other side), is an unsolicited reply, and
/// from which service port (0: unknown, as in a fragment).
fn unsolicited(ev: &FlowEvent) -> Option<u16> {
    match ev.proto {
        // The remote started the flow (it is the flow's source).
        proto::UDP if ev.from_src && scan::reply_shaped(ev.src_port, ev.dst_port) => {
            Some(ev.src_port)
        }
        proto::UDP if ev.from_src && ev.src_port == 0 && ev.dst_port == 0 => Some(0),
        // A flow that opened with a SYN-ACK: the table made the receiver its initiator.
        proto::TCP if !ev.from_src && ev.new_flow && ev.syn_ack > 0 && ev.syn == 0 => {
            Some(ev.dst_port)
        }
        _ => None,
    }
}

impl HostState {
    /// The port many reflectors flood this host from, once at least `min_sources` did.
    pub(super) fn reflection_port(&self, min_sources: usize) -> Option<u16> {
        if self.reflectors.seen.len() < min_sources {
            return None;
        }
        self.reflected_ports
            .top()
            .filter(|(p, share)| *p != 0 && *share >= 0.5)
            .map(|(p, _)| p)
    }
}

impl HostState {
    pub(super) fn new(cfg: &RuleConfig, lim: Limits, now: u64) -> Self {
        let (fw, dw) = (cfg.flood_window_s, cfg.ddos_window_s);
        Self {
            lim,
            rx_udp: SecWindow::new(fw),
            rx_udp_bytes: SecWindow::new(fw),
            rx_icmp_bytes: SecWindow::new(fw),
            tx_udp: SecWindow::new(fw),
            rx_icmp: SecWindow::new(fw),
            tx_icmp: SecWindow::new(fw),
            udp_run: Run::default(),
            icmp_run: Run::default(),
            rx_all: SecWindow::new(dw),
            sources: Distinct::default(),
            overflow: SecWindow::new(dw),
            spike: Spike {
                pps: lim.spike_pps,
                ..Spike::default()
            },
            last_ns: now,
            tx_answers: SecWindow::new(dw),
            rx_syn: SecWindow::new(dw),
            syn_ports: PortTally::default(),
            unsolicited: SecWindow::new(dw),
            unsolicited_syn_ack: SecWindow::new(dw),
            reflectors: Distinct::default(),
            reflected_ports: PortTally::default(),
            slow: [None, None],
        }
    }
}

impl Rules {
    /// SYN flood: SYNs to one port that do not turn into connections.
    pub(super) fn syn_flood(&mut self, ev: &FlowEvent, now: u64, sec: u64, book: &mut AlertBook) {
        if ev.proto != proto::TCP {
            return;
        }
        let key = (ev.dst, ev.dst_port);
        if ev.rst > 0 && !ev.completed {
            // A RST on a handshake that never completed: refused by the victim, or given up by
            // the source (a flooder's own stack resets the SYN-ACKs it gets). That attempt has
            // failed for certain; its source need not wait out the grace.
            if let Some(st) = self.syn.get_mut(&key)
                && let Some(f) = st.failing.get_mut(&ev.src)
            {
                f.certain = true;
            }
        }
        if !(ev.from_src && ((ev.new_flow && ev.syn > 0) || ev.completed)) {
            return;
        }
        let cap = self.cfg.max_tracked;
        if !self.syn.contains_key(&key) && self.syn.len() >= cap {
            self.untracked += 1;
            return;
        }
        let w = self.cfg.syn_flood_window_s;
        let min = self.limits(key.0).syn_flood_syns;
        let st = self.syn.entry(key).or_insert_with(|| SynState {
            min,
            syns: SecWindow::new(w),
            done: SecWindow::new(w),
            failing: FastMap::default(),
            judged: None,
            held: false,
        });
        // Attempts, not packets: a retransmitted SYN is the same attempt.
        st.syns.add(sec, u64::from(ev.new_flow && ev.syn > 0));
        st.done.add(sec, u64::from(ev.completed));
        if ev.completed {
            st.failing.remove(&ev.src);
        } else if st.failing.len() < 4096 || st.failing.contains_key(&ev.src) {
            let attempt = u64::from(ev.new_flow && ev.syn > 0);
            // The source's own RST in the same update (SYN, SYN-ACK back, RST within a poll).
            let certain = ev.rst > 0;
            st.failing
                .entry(ev.src)
                .and_modify(|f| {
                    f.last = now;
                    f.attempts += attempt;
                    f.certain |= certain;
                })
                .or_insert(Failer {
                    first: now,
                    last: now,
                    attempts: attempt,
                    certain,
                });
        }
        if Self::judge_syn_flood(&self.cfg, key, st, now, sec, false, book) && !st.held {
            st.held = true;
            self.syn_held.push(key);
        }
    }

    /// Fires the SYN flood of `key` when its attempts pass the threshold and mostly fail,
    /// once a failing source has settled (`end`: the data is over, every attempt has).
    /// Returns whether it waits for sources to settle.
    fn judge_syn_flood(
        cfg: &RuleConfig,
        key: (IpAddr, u16),
        st: &mut SynState,
        now: u64,
        sec: u64,
        end: bool,
        book: &mut AlertBook,
    ) -> bool {
        let w = cfg.syn_flood_window_s;
        let attempts = st.syns.sum_at(sec);
        let done = st.done.sum_at(sec);
        let half_open = attempts.saturating_sub(done);
        if half_open < st.min {
            return false;
        }
        // A busy server also has many half-open attempts at once (a full backlog makes
        // clients retransmit), but most of them complete; a flood's almost never do. Judged
        // on the port's attempts, and on the failing sources' alone: clients completing
        // beside a flooder do not hide it.
        let mostly_failing = (done as f64) < cfg.syn_flood_max_completion_ratio * attempts as f64;
        let Failing {
            sources,
            single,
            attempts: failed,
        } = st.judge(now, w * NS, end);
        if sources == 0 {
            // Nobody's attempt has failed for certain yet: judged again at the next settle.
            return true;
        }
        if !(mostly_failing || failed >= st.min) {
            // The attempts that fail are a busy server's few.
            return false;
        }
        let many = sources >= cfg.ddos_sources;
        book.fire(Firing {
            kind: if many {
                AlertKind::Ddos
            } else {
                AlertKind::SynFlood
            },
            detector: DetectorKind::Rule,
            src_ip: single,
            dst_ip: Some(key.0),
            ts_ns: now,
            severity: Severity::from_ratio(half_open as f64 / st.min as f64),
            rate: st.syns.rate(),
            score: None,
            evidence: Evidence::Flood(FloodEvidence {
                dst_port: Some(key.1),
                attempts: Some(st.syns.sum),
                completed: Some(st.done.sum),
                sample_sources: st.sample(10),
                rate_pps: Some(st.syns.rate().round()),
                window_s: Some(w),
                ..FloodEvidence::new(Vector::TcpSyn, Sources::Counted(sources))
            }),
        });
        false
    }

    /// SYN floods held back for their sources to settle, judged at each settle and at the end.
    pub(super) fn syn_floods_tick(&mut self, now: u64, end: bool, book: &mut AlertBook) {
        let sec = now / NS;
        for key in std::mem::take(&mut self.syn_held) {
            let Some(st) = self.syn.get_mut(&key) else {
                continue;
            };
            st.held = Self::judge_syn_flood(&self.cfg, key, st, now, sec, end, book) && !end;
            if st.held {
                self.syn_held.push(key);
            }
        }
    }

    /// Per-host rates: floods, DDoS, spikes.
    pub(super) fn host_rates(&mut self, ev: &FlowEvent, now: u64, sec: u64, book: &mut AlertBook) {
        let cap = self.cfg.max_tracked;
        let (pkt_src, pkt_dst) = packet_dst(ev);
        for (host, rx) in [(pkt_dst, true), (pkt_src, false)] {
            if !self.hosts.contains_key(&host) && self.hosts.len() >= cap {
                self.untracked += 1;
                continue;
            }
            let (cfg, plain, groups) = (&self.cfg, self.limits, self.groups.as_ref());
            let h = self.hosts.entry(host).or_insert_with(|| {
                HostState::new(cfg, victim_limits(cfg, plain, groups, host), now)
            });
            h.last_ns = now;
            let n = ev.packets;
            match (ev.proto, rx) {
                (proto::UDP, true) => {
                    h.rx_udp.add(sec, n);
                    h.rx_udp_bytes.add(sec, ev.bytes);
                    h.udp_run.add(now, n);
                }
                (proto::UDP, false) => h.tx_udp.add(sec, n),
                // ICMP flows run requester -> responder: only requests make a flood (victims
                // answer echo requests, so replies say nothing against it).
                (proto::ICMP | proto::ICMPV6, true) if ev.from_src => {
                    h.rx_icmp.add(sec, n);
                    h.rx_icmp_bytes.add(sec, ev.bytes);
                    h.icmp_run.add(now, n);
                }
                (proto::ICMP | proto::ICMPV6, false) if ev.from_src => h.tx_icmp.add(sec, n),
                _ => {}
            }
            if rx {
                h.rx_all.add(sec, n);
                if ev.proto == proto::TCP && ev.from_src && ev.syn > 0 && ev.syn_ack == 0 {
                    let syns = ev.syn.min(n);
                    h.rx_syn.add(sec, syns);
                    h.syn_ports.add(ev.dst_port, syns);
                }
                if h.rx_all.sum >= h.lim.ddos_pps {
                    h.sources.add(pkt_src, now, 100_000);
                }
                if let Some(port) = unsolicited(ev) {
                    h.unsolicited.add(sec, n);
                    if ev.proto == proto::TCP {
                        h.unsolicited_syn_ack.add(sec, n);
                    }
                    if port != 0 {
                        h.reflected_ports.add(port, n);
                    }
                    h.reflectors.add(pkt_src, now, 4096);
                    if slow_slot(ev.proto).is_some() {
                        Self::slow_reflection(&self.cfg, host, pkt_src, h, ev, now, book);
                    }
                }
            } else {
                // A SYN-ACK offers a connection; it answers nothing until the peer takes it up
                // (a server under a spoofed SYN flood sends nothing else).
                let errors = match ev.proto {
                    proto::TCP => (ev.rst + ev.syn_ack).min(n),
                    p if icmp_error(p, ev.key_dst_port) => n,
                    _ => 0,
                };
                h.tx_answers.add(sec, n - errors);
                if let Some(i) = slow_slot(ev.proto)
                    && let Some(slow) = &mut h.slow[i]
                {
                    slow.tx.add(sec / 60, n - errors);
                }
            }
            Self::spike(
                &self.cfg,
                host,
                &mut h.spike,
                sec,
                if rx { (n, 0) } else { (0, n) },
                &mut self.spikes_held,
            );
            if rx {
                Self::floods(&self.cfg, host, Some(pkt_src), h, sec, now, book);
            }
        }
    }

    /// `src`: the packet's source, `None` for packets the flow map could not take (unknown).
    fn floods(
        cfg: &RuleConfig,
        host: IpAddr,
        src: Option<IpAddr>,
        h: &mut HostState,
        sec: u64,
        now: u64,
        book: &mut AlertBook,
    ) {
        let sources = h
            .sources
            .count(now, cfg.ddos_window_s * NS, cfg.ddos_sources);
        let many = sources >= cfg.ddos_sources;
        // A flood is a rate: one that has run a tenth of the window at the flood rate, with a
        // quarter of the window's volume, is judged then rather than when the window fills
        // (200 ms and 500 packets at the defaults, against 2 s and 2,000).
        let run_min_ns = cfg.flood_window_s * NS / 10;
        let lim = h.lim;
        for (kind, rx, rx_bytes, tx, run, vector, pps, bytes_min) in [
            (
                AlertKind::UdpFlood,
                &mut h.rx_udp,
                &mut h.rx_udp_bytes,
                &mut h.tx_udp,
                h.udp_run,
                Vector::Udp,
                lim.udp_pps,
                lim.udp_bytes,
            ),
            (
                AlertKind::IcmpFlood,
                &mut h.rx_icmp,
                &mut h.rx_icmp_bytes,
                &mut h.tx_icmp,
                h.icmp_run,
                Vector::Icmp,
                lim.icmp_pps,
                lim.icmp_bytes,
            ),
        ] {
            let flood_min = pps * cfg.flood_window_s;
            let inbound = rx.sum_at(sec);
            let replies = tx.sum_at(sec);
            // UDP: a victim answers (almost) nothing. ICMP counts requests only (see above).
            let one_sided = kind == AlertKind::IcmpFlood
                || (replies as f64) < cfg.flood_max_reply_ratio * inbound as f64;
            let fast = run.sustained(now, run_min_ns, pps, flood_min / 4);
            // Bandwidth: big packets fill a link long before their count is a flood's.
            let volume = rx_bytes.sum_at(sec);
            let heavy = bytes_min > 0 && volume >= bytes_min * cfg.flood_window_s;
            if (inbound >= flood_min || fast || heavy) && one_sided {
                let rate = rx.rate().max(run.rate());
                let mbps = rx_bytes.rate() * 8.0 / 1e6;
                let mut evidence = FloodEvidence {
                    packets: Some(inbound),
                    replies: Some(replies),
                    rate_pps: Some(rate.round()),
                    rate_mbps: (bytes_min > 0).then_some((mbps * 10.0).round() / 10.0),
                    window_s: Some(cfg.flood_window_s),
                    ..FloodEvidence::new(vector, Sources::Counted(sources))
                };
                if kind == AlertKind::UdpFlood {
                    reflection_evidence(
                        &mut evidence,
                        h.unsolicited.sum_at(sec),
                        inbound,
                        &h.reflected_ports,
                        h.reflectors.seen.len(),
                        Vector::UdpReflection,
                    );
                }
                let over = if heavy {
                    (volume as f64 / (bytes_min * cfg.flood_window_s) as f64).max(rate / pps as f64)
                } else {
                    rate / pps as f64
                };
                book.fire(Firing {
                    kind: if many { AlertKind::Ddos } else { kind },
                    detector: DetectorKind::Rule,
                    src_ip: src.filter(|_| !many),
                    dst_ip: Some(host),
                    ts_ns: now,
                    severity: Severity::from_ratio(over),
                    rate,
                    score: None,
                    evidence: Evidence::Flood(evidence),
                });
            }
        }
        // DDoS of any protocol: a high rate from many sources that the victim does not answer
        // (or one that fills the flow map). Answers are what a busy server is made of.
        let received = h.rx_all.sum_at(sec);
        let total = received + h.overflow.sum_at(sec);
        let rate = total as f64 / h.rx_all.span().max(h.overflow.span()) as f64;
        let answers = h.tx_answers.sum_at(sec);
        let unanswered = (answers as f64) < cfg.ddos_max_answer_ratio * received as f64;
        if rate >= h.lim.ddos_pps as f64 && ((many && unanswered) || h.overflow.sum > 0) {
            let syn_acks = h.unsolicited_syn_ack.sum_at(sec);
            let mut evidence = FloodEvidence {
                packets: Some(total),
                answers: Some(answers),
                sample_sources: h.sources.sample(10),
                overflow_packets: Some(h.overflow.sum),
                rate_pps: Some(rate.round()),
                window_s: Some(cfg.ddos_window_s),
                ..FloodEvidence::new(Vector::Any, Sources::Counted(sources))
            };
            let vector = if 2 * syn_acks >= received {
                Vector::TcpSynAckReflection
            } else {
                Vector::UdpReflection
            };
            reflection_evidence(
                &mut evidence,
                h.unsolicited.sum_at(sec),
                received,
                &h.reflected_ports,
                h.reflectors.seen.len(),
                vector,
            );
            if evidence.vector == Vector::Any && 2 * h.rx_syn.sum_at(sec) >= received {
                // Mostly connection attempts: a SYN flood from many (or forged) sources, at the
                // port most of them go to.
                evidence.vector = Vector::TcpSyn;
                evidence.dst_port = h
                    .syn_ports
                    .top()
                    .filter(|(_, share)| *share >= 0.5)
                    .map(|(port, _)| port);
            }
            book.fire(Firing {
                kind: AlertKind::Ddos,
                detector: DetectorKind::Rule,
                src_ip: None,
                dst_ip: Some(host),
                ts_ns: now,
                severity: Severity::from_ratio(rate / h.lim.ddos_pps as f64),
                rate,
                score: None,
                evidence: Evidence::Flood(evidence),
            });
        }
    }

    /// Low-and-slow reflection: unsolicited replies (UDP from a service port, or SYN-ACKs)
    /// from many sources over the long window, at rates far below the flood thresholds, to a
    /// host that sent (almost) nothing back in that protocol that answers them.
    #[allow(
        clippy::too_many_arguments,
        reason = "the caller's parts, borrowed apart"
    )]
    fn slow_reflection(
        cfg: &RuleConfig,
        host: IpAddr,
        src: IpAddr,
        h: &mut HostState,
        ev: &FlowEvent,
        now: u64,
        book: &mut AlertBook,
    ) {
        let Some(slot) = slow_slot(ev.proto) else {
            return;
        };
        let buckets = cfg.slow_window_s.div_ceil(60).max(1);
        let slow = h.slow[slot].get_or_insert_with(|| {
            Box::new(SlowReflection {
                packets: SecWindow::new(buckets),
                tx: SecWindow::new(buckets),
                sources: Distinct::default(),
            })
        });
        let minute = now / NS / 60;
        slow.packets.add(minute, ev.packets);
        slow.sources.add(src, now, 1024);
        let packets = slow.packets.sum_at(minute);
        if packets < cfg.slow_reflection_packets {
            return;
        }
        let sources = slow
            .sources
            .count(now, cfg.slow_window_s * NS, cfg.slow_reflection_sources);
        let replies = slow.tx.sum_at(minute);
        if sources < cfg.slow_reflection_sources
            || (replies as f64) >= cfg.flood_max_reply_ratio * packets as f64
        {
            return;
        }
        let vector = if slot == 0 {
            Vector::UdpReflection
        } else {
            Vector::TcpSynAckReflection
        };
        let mut evidence = FloodEvidence {
            packets: Some(packets),
            replies: Some(replies),
            window_s: Some(cfg.slow_window_s),
            slow: Some(true),
            ..FloodEvidence::new(vector, Sources::Counted(sources))
        };
        reflection_evidence(
            &mut evidence,
            packets,
            packets,
            &h.reflected_ports,
            sources,
            vector,
        );
        book.fire(Firing {
            kind: AlertKind::Ddos,
            detector: DetectorKind::Rule,
            src_ip: None,
            dst_ip: Some(host),
            ts_ns: now,
            severity: Severity::Low,
            rate: packets as f64 / (cfg.slow_window_s.max(1) as f64),
            score: None,
            evidence: Evidence::Flood(evidence),
        });
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
        if !self.hosts.contains_key(&host) {
            let lim = self.limits(host);
            self.hosts
                .insert(host, HostState::new(&self.cfg, lim, ts_ns));
        }
        let Some(h) = self.hosts.get_mut(&host) else {
            return;
        };
        h.overflow.add(sec, s.packets);
        h.rx_udp.add(sec, s.udp);
        h.rx_icmp.add(sec, s.icmp);
        Self::floods(&self.cfg, host, None, h, sec, ts_ns, book);
        let syn_min = h.lim.syn_flood_syns;
        if s.syn >= syn_min {
            book.fire(Firing {
                kind: AlertKind::Ddos,
                detector: DetectorKind::Rule,
                src_ip: None,
                dst_ip: Some(host),
                ts_ns,
                severity: Severity::from_ratio(s.syn as f64 / syn_min as f64),
                rate: s.syn as f64,
                score: None,
                evidence: Evidence::Flood(FloodEvidence {
                    overflow_syns: Some(s.syn),
                    ..FloodEvidence::new(
                        Vector::TcpSyn,
                        Sources::Unknown("unknown (flow map full)"),
                    )
                }),
            });
        }
    }
}

/// Adds what is known of a reflection to a flood's evidence: the reflected service (the port
/// most unsolicited replies came from) when unsolicited replies are most of what arrived.
fn reflection_evidence(
    evidence: &mut FloodEvidence,
    unsolicited: u64,
    received: u64,
    ports: &PortTally,
    reflectors: usize,
    vector: Vector,
) {
    // One source sending from a low port to a higher one is a flood shaped like replies, not
    // a reflection: that takes several reflectors.
    if received == 0 || 2 * unsolicited < received || reflectors < scan::REFLECTORS_MIN {
        return;
    }
    evidence.vector = vector;
    evidence.unsolicited_packets = Some(unsolicited);
    evidence.reflectors = Some(reflectors);
    evidence.reflected_service = ports.top().map(|(port, share)| ReflectedService {
        port,
        name: service_name(port),
        share: (share * 100.0).round() / 100.0,
    });
}
