//! Floods and DDoS: a rate into one victim that gets almost nothing back (SYN attempts that
//! never complete, UDP that is not answered, ICMP requests), from one source or many, and the
//! kernel's overflow counters when a flood fills the flow map.

use std::net::{IpAddr, Ipv4Addr};

use sensor_common::{HostKey, HostStats, proto};
use serde_json::json;

use super::{
    NS, OVERFLOW_MIN_PACKETS, RuleConfig, Rules, host_ip, packet_dst,
    spike::Spike,
    window::{Distinct, SecWindow},
};
use crate::{
    detect::alert::{AlertBook, AlertKind, DetectorKind, Firing, Severity},
    flow::FlowEvent,
};

pub(super) struct SynState {
    pub(super) syns: SecWindow,
    pub(super) done: SecWindow,
    pub(super) sources: Distinct<IpAddr>,
}

pub(super) struct HostState {
    pub(super) rx_udp: SecWindow,
    pub(super) tx_udp: SecWindow,
    pub(super) rx_icmp: SecWindow,
    pub(super) tx_icmp: SecWindow,
    pub(super) rx_all: SecWindow,
    pub(super) sources: Distinct<IpAddr>,
    /// Packets the flow map could not take (sources unknown: a flood filling the map).
    pub(super) overflow: SecWindow,
    pub(super) spike: Spike,
    pub(super) last_ns: u64,
}

impl HostState {
    pub(super) fn new(cfg: &RuleConfig, now: u64) -> Self {
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

impl Rules {
    /// SYN flood: SYNs to one port that do not turn into connections.
    pub(super) fn syn_flood(&mut self, ev: &FlowEvent, now: u64, sec: u64, book: &mut AlertBook) {
        let cap = self.cfg.max_tracked;
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
}
