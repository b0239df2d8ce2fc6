//! Rule tests on hand-made flow events.

use super::*;
use sensor_common::{HostStats, proto};

use crate::detect::alert::{Alert, AlertKind, Severity};

const A: IpAddr = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1));
const B: IpAddr = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 2));

fn ev(ts_ms: u64, src: IpAddr, dst: IpAddr, port: u16, proto_: u8) -> FlowEvent {
    FlowEvent {
        ts_ns: ts_ms * 1_000_000,
        src,
        dst,
        src_port: 40000,
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
    run_with(&mut Rules::new(RuleConfig::default()), events)
}

fn kinds(a: &[Alert]) -> Vec<AlertKind> {
    a.iter().map(|a| a.kind).collect()
}

fn any_scan(a: &[Alert]) -> bool {
    a.iter()
        .any(|a| matches!(a.kind, AlertKind::PortScan | AlertKind::HostSweep))
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
    assert_eq!((alerts[0].src_ip, alerts[0].dst_ip), (Some(A), Some(B)));
    // Updated at most once a data second (2 s of probes here), and its final evidence counts
    // every port: the growth held back within a second is fired by the next tick or the end.
    assert!(alerts[0].count <= 3, "{:?}", alerts[0]);
    assert_eq!(alerts[0].evidence.json()["ports"], 200, "{:?}", alerts[0]);
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

/// ARP requests for 60 addresses nobody holds are a sweep; a router resolving 60 neighbours
/// that all answer is not.
#[test]
fn arp_requests_answered_by_their_targets_are_no_sweep() {
    let hosts = |i: u32| IpAddr::V4(Ipv4Addr::from(0x0a01_0000 + i));
    let arp = |ts: u64, i: u32, request: bool| FlowEvent {
        family: family::ARP,
        proto: 0,
        src_port: 0,
        dst_port: 0,
        key_dst_port: if request { 1 } else { 2 },
        new_flow: request,
        from_src: request,
        syn: 0,
        ..ev(ts, A, hosts(i), 0, 0)
    };
    let asks: Vec<_> = (0..60).map(|i| arp(u64::from(i) * 5, i, true)).collect();
    let alerts = run(&asks);
    assert_eq!(kinds(&alerts), vec![AlertKind::HostSweep], "60 unanswered");
    let mut answered = Vec::new();
    for i in 0..60u32 {
        answered.push(arp(u64::from(i) * 5, i, true));
        answered.push(arp(u64::from(i) * 5 + 1, i, false));
    }
    assert!(
        kinds(&run(&answered)).is_empty(),
        "answered neighbour resolution"
    );
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

/// One flooder at an open port (the victim answers SYN-ACK, the flooder's stack answers RST)
/// while 200 clients keep completing handshakes, a quarter of the port's attempts: a SYN
/// flood by that source, not a DDoS, and not hidden by the clients' completions.
#[test]
fn clients_beside_a_single_flooder_are_not_its_sources() {
    let mut events: Vec<_> = (0..600u64)
        .map(|i| FlowEvent {
            src_port: 1024 + i as u16,
            ..ev(i * 5, A, B, 80, proto::TCP)
        })
        .collect();
    for c in 0..200u64 {
        let client = ip(10, 9, (c / 250) as u8, (c % 250) as u8 + 1);
        events.push(ev(c * 15, client, B, 80, proto::TCP));
        events.push(FlowEvent {
            new_flow: false,
            syn: 0,
            completed: true,
            ..ev(c * 15 + 1, client, B, 80, proto::TCP)
        });
        // The flooder's RSTs to the victim's SYN-ACKs: no completion.
        events.push(FlowEvent {
            new_flow: false,
            syn: 0,
            rst: 1,
            ..ev(c * 15 + 2, A, B, 80, proto::TCP)
        });
    }
    events.sort_by_key(|e| e.ts_ns);
    let a = run(&events);
    assert_eq!(kinds(&a), vec![AlertKind::SynFlood], "{a:?}");
    assert_eq!((a[0].src_ip, a[0].dst_ip), (Some(A), Some(B)));
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
    let mut book = AlertBook::new(30 * NS, 1000);
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
    let mut book = AlertBook::new(30 * NS, 1000);
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
            && a.iter()
                .all(|a| a.kind == AlertKind::Ddos && a.dst_ip == Some(B) && a.src_ip.is_none()),
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
    let mut book = AlertBook::new(30 * NS, 1000);
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

fn ip(a: u8, b: u8, c: u8, d: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(a, b, c, d))
}

/// An unsolicited UDP reply: from `src`'s service `port` to a high port of the victim, in a
/// flow the reflector started.
fn reply(ts_ms: u64, src: IpAddr, port: u16, victim_port: u16) -> FlowEvent {
    FlowEvent {
        src_port: port,
        bytes: 1200,
        ..ev(ts_ms, src, B, victim_port, proto::UDP)
    }
}

#[test]
fn reflected_floods_are_ddos_with_the_service_and_never_port_scans() {
    // 50 DNS reflectors, 40 replies each within 2 s, to random high ports of B.
    let mut events = Vec::new();
    for i in 0..2000u64 {
        let src = ip(192, 0, 2, (i % 50) as u8 + 1);
        events.push(reply(i, src, 53, 1024 + (i * 7919 % 60_000) as u16));
    }
    let alerts = run(&events);
    assert!(
        !kinds(&alerts).contains(&AlertKind::PortScan),
        "a reflector is not a scanner: {alerts:?}"
    );
    let d = alerts
        .iter()
        .find(|a| a.kind == AlertKind::Ddos && a.dst_ip == Some(B))
        .unwrap_or_else(|| panic!("no ddos on the victim: {alerts:?}"));
    assert_eq!(
        d.evidence.json()["vector"],
        "udp_reflection",
        "{}",
        d.evidence
    );
    assert_eq!(
        d.evidence.json()["reflected_service"]["port"],
        53,
        "{}",
        d.evidence
    );
    assert_eq!(d.evidence.json()["reflected_service"]["name"], "dns");
    // A high-port service (memcached) from a handful of reflectors: still no port scan, even
    // for the replies that happen to reach ports below the service's.
    let events: Vec<_> = (0..3000u64)
        .map(|i| {
            reply(
                i,
                ip(198, 51, 100, (i % 5) as u8 + 1),
                11211,
                1024 + (i * 104_729 % 64_000) as u16,
            )
        })
        .collect();
    let alerts = run(&events);
    assert!(!kinds(&alerts).contains(&AlertKind::PortScan), "{alerts:?}");
    assert!(
        alerts
            .iter()
            .any(|a| matches!(a.kind, AlertKind::UdpFlood | AlertKind::Ddos)
                && a.dst_ip == Some(B)
                && a.evidence.json()["reflected_service"]["port"] == 11211),
        "{alerts:?}"
    );
}

#[test]
fn non_first_fragments_count_toward_the_victim_without_ports() {
    // Large replies arrive mostly as non-first fragments: UDP with ports 0.
    let events: Vec<_> = (0..3000u64)
        .map(|i| FlowEvent {
            src_port: 0,
            dst_port: 0,
            key_dst_port: 0,
            new_flow: i < 30,
            ..ev(i, ip(203, 0, 113, (i % 30) as u8 + 1), B, 0, proto::UDP)
        })
        .collect();
    let alerts = run(&events);
    assert!(!kinds(&alerts).contains(&AlertKind::PortScan), "{alerts:?}");
    assert!(
        alerts
            .iter()
            .any(|a| a.kind == AlertKind::Ddos && a.dst_ip == Some(B)),
        "fragments from 30 sources at 1,000/s are a DDoS: {alerts:?}"
    );
}

#[test]
fn low_and_slow_reflection_surfaces_at_low_severity() {
    // 20 reflectors, one reply every 2 s in all, for 15 minutes: far below any flood rate.
    let events: Vec<_> = (0..450u64)
        .map(|i| {
            reply(
                i * 2000,
                ip(192, 0, 2, (i % 20) as u8 + 1),
                123,
                30_000 + i as u16,
            )
        })
        .collect();
    let alerts = run(&events);
    let d = alerts
        .iter()
        .find(|a| a.kind == AlertKind::Ddos)
        .unwrap_or_else(|| panic!("low-and-slow reflection missed: {alerts:?}"));
    assert_eq!((d.severity, d.dst_ip), (Severity::Low, Some(B)));
    assert_eq!(d.evidence.json()["slow"], true);
    assert_eq!(d.evidence.json()["reflected_service"]["name"], "ntp");
    // The same replies to a host that asked for them (it sends UDP back) are no reflection.
    let mut asked = events.clone();
    for i in 0..450u64 {
        asked.push(FlowEvent {
            src: B,
            dst: ip(192, 0, 2, (i % 20) as u8 + 1),
            src_port: 30_000 + i as u16,
            dst_port: 123,
            key_dst_port: 123,
            ..ev(i * 2000 + 1, B, A, 123, proto::UDP)
        });
    }
    asked.sort_by_key(|e| e.ts_ns);
    assert!(kinds(&run(&asked)).is_empty(), "{:?}", run(&asked));
}

#[test]
fn slow_scans_and_sweeps_count_unanswered_probes_over_the_long_window() {
    // 150 ports, one every 5 s (12.5 minutes): under 20 per minute, so only the long window
    // sees it.
    let scan: Vec<_> = (0..150u64)
        .map(|p| ev(p * 5000, A, B, 1 + p as u16, proto::TCP))
        .collect();
    let alerts = run(&scan);
    assert_eq!(kinds(&alerts), vec![AlertKind::PortScan], "{alerts:?}");
    assert_eq!(alerts[0].evidence.json()["slow"], true);
    assert_eq!(alerts[0].severity, Severity::Low);
    // One alert that grows with the scan, not one frozen at the threshold.
    assert!(
        alerts[0].evidence.json()["probes"].as_u64() > Some(100) && alerts[0].count > 1,
        "{:?}",
        alerts[0]
    );
    // The same connections, each completed: a client, not a scanner.
    let mut served = Vec::new();
    for p in 0..150u64 {
        served.push(ev(p * 5000, A, B, 1 + p as u16, proto::TCP));
        served.push(FlowEvent {
            new_flow: false,
            syn: 0,
            completed: true,
            ..ev(p * 5000 + 1, A, B, 1 + p as u16, proto::TCP)
        });
    }
    assert!(kinds(&run(&served)).is_empty(), "{:?}", run(&served));
    // A slow sweep: 150 hosts on one port, one every 5 s, unanswered.
    let sweep: Vec<_> = (0..150u64)
        .map(|h| {
            ev(
                h * 5000,
                A,
                ip(10, 1, (h / 200) as u8, (h % 200) as u8 + 1),
                445,
                proto::TCP,
            )
        })
        .collect();
    let alerts = run(&sweep);
    assert_eq!(kinds(&alerts), vec![AlertKind::HostSweep], "{alerts:?}");
    assert_eq!(alerts[0].evidence.json()["slow"], true);
}

#[test]
fn a_client_completing_every_handshake_with_many_servers_is_no_sweep() {
    // A crawler: 100 servers within a minute, each handshake completed.
    let mut events = Vec::new();
    for h in 0..100u64 {
        let server = ip(10, 2, 0, h as u8 + 1);
        events.push(ev(h * 500, A, server, 443, proto::TCP));
        events.push(FlowEvent {
            new_flow: false,
            syn: 0,
            completed: true,
            ..ev(h * 500 + 20, A, server, 443, proto::TCP)
        });
    }
    assert!(kinds(&run(&events)).is_empty(), "{:?}", run(&events));
}

#[test]
fn answered_udp_with_many_peers_is_no_ddos_and_unanswered_is() {
    // 150 peers send B 20 packets/s each (3,000/s); B answers every one of them.
    let mut exchange = Vec::new();
    for i in 0..6000u64 {
        let peer = ip(100, 64, (i % 150 / 100) as u8, (i % 150 % 100) as u8 + 1);
        let mut q = ev(i / 3, peer, B, 27015, proto::UDP);
        q.new_flow = i < 150;
        exchange.push(q);
        exchange.push(FlowEvent {
            from_src: false,
            new_flow: false,
            ..ev(i / 3, peer, B, 27015, proto::UDP)
        });
    }
    let alerts = run(&exchange);
    assert!(
        !alerts.iter().any(|a| matches!(
            a.kind,
            AlertKind::Ddos | AlertKind::UdpFlood | AlertKind::PortScan
        )),
        "a game server with 150 players: {alerts:?}"
    );
    let unanswered: Vec<_> = exchange.iter().filter(|e| e.from_src).copied().collect();
    assert!(
        kinds(&run(&unanswered)).contains(&AlertKind::Ddos),
        "the same traffic unanswered is a DDoS"
    );
}

#[test]
fn syn_ack_reflection_is_a_ddos_not_a_scan() {
    // 40 reflectors' SYN-ACKs (flows that open with one) to B's random ports; B sends RSTs.
    let mut events = Vec::new();
    for i in 0..3000u64 {
        let refl = ip(192, 0, 2, (i % 40) as u8 + 1);
        let port = 1024 + (i * 7919 % 60_000) as u16;
        // The table makes B the initiator of a flow that opened with a SYN-ACK.
        events.push(FlowEvent {
            from_src: false,
            syn: 0,
            syn_ack: 1,
            src_port: port,
            ..ev(i / 3, B, refl, 80, proto::TCP)
        });
        events.push(FlowEvent {
            new_flow: false,
            syn: 0,
            rst: 1,
            src_port: port,
            ..ev(i / 3, B, refl, 80, proto::TCP)
        });
    }
    let alerts = run(&events);
    assert!(!any_scan(&alerts), "{alerts:?}");
    let d = alerts
        .iter()
        .find(|a| a.kind == AlertKind::Ddos && a.dst_ip == Some(B))
        .unwrap_or_else(|| panic!("no ddos: {alerts:?}"));
    assert_eq!(
        d.evidence.json()["vector"],
        "tcp_syn_ack_reflection",
        "{}",
        d.evidence
    );
    assert_eq!(d.evidence.json()["reflected_service"]["port"], 80);
}

#[test]
fn stealth_probes_count_and_data_does_not() {
    // FIN/NULL/Xmas/ACK probes: one header-only packet, no SYN.
    let fin: Vec<_> = (0..100u64)
        .map(|p| FlowEvent {
            syn: 0,
            bytes: 54,
            ..ev(p * 10, A, B, 1 + p as u16, proto::TCP)
        })
        .collect();
    assert_eq!(kinds(&run(&fin)), vec![AlertKind::PortScan]);
    // Joining 100 established connections mid-way (data, no SYN) is not a scan.
    let joined: Vec<_> = (0..100u64)
        .map(|p| FlowEvent {
            syn: 0,
            bytes: 1400,
            ..ev(p * 10, A, B, 1 + p as u16, proto::TCP)
        })
        .collect();
    assert!(kinds(&run(&joined)).is_empty());
}

#[test]
fn a_flooded_servers_answers_are_no_scan() {
    // B's port 80 answers a flood from A and 25 bots: RSTs and challenge ACKs to the flood's
    // source ports, each a new flow of B's (the flow map kept no room for the SYNs).
    let mut events = Vec::new();
    for i in 0..2000u64 {
        let to = if i % 2 == 0 {
            A
        } else {
            ip(10, 0, 1, (i % 25) as u8 + 1)
        };
        events.push(FlowEvent {
            syn: 0,
            rst: i % 3,
            src_port: 80,
            ..ev(i, B, to, 1024 + (i * 7919 % 60_000) as u16, proto::TCP)
        });
    }
    // (The same lone packets from a client port to services are an ACK scan: see
    // `stealth_probes_count_and_data_does_not`.)
    let alerts = run(&events);
    assert!(!any_scan(&alerts), "{alerts:?}");
}

/// Events through the rules and the book as the detector drives them, then data time moving
/// on second by second to `end_ms` (alerts close when quiet), then the end of the data. Every
/// alert that was opened, as closed or merged, in id order.
fn run_until(events: &[FlowEvent], end_ms: u64) -> Vec<Alert> {
    let mut r = Rules::new(RuleConfig::default());
    let mut book = AlertBook::new(30 * NS, 1000);
    let mut next = 0;
    for e in events {
        r.on_event(e, &mut book);
        if e.ts_ns >= next {
            r.tick(e.ts_ns, &mut book);
            r.settle(e.ts_ns, &mut book);
            book.close_quiet(e.ts_ns);
            next = e.ts_ns + NS;
        }
    }
    let mut t = events.last().map_or(0, |e| e.ts_ns);
    while t < end_ms * 1_000_000 {
        t += NS;
        r.tick(t, &mut book);
        r.settle(t, &mut book);
        book.close_quiet(t);
    }
    r.flush(t, &mut book);
    book.flush();
    let mut all = book.take_closed();
    all.sort_by_key(|a| a.id);
    all
}

/// The incidents an operator sees: alerts not merged into another.
fn incidents(a: &[Alert]) -> Vec<&Alert> {
    a.iter()
        .filter(|a| a.state != crate::record::AlertState::Merged)
        .collect()
}

#[test]
fn a_fast_scan_is_one_alert_whatever_its_long_window_sees_later() {
    // nmap -T4 of 1,000 ports: every probe unanswered, all within 2 s; then 3 minutes of data
    // time (the fast alert closes after 30 s quiet; the 15-minute window still holds them).
    let probes: Vec<_> = (0..1000)
        .map(|p| ev(p * 2, A, B, 1 + p as u16, proto::TCP))
        .collect();
    let all = run_until(&probes, 180_000);
    assert_eq!(kinds(&all), vec![AlertKind::PortScan], "{all:?}");
    assert!(
        all[0].evidence.json()["ports"].as_u64() >= Some(900),
        "{:?}",
        all[0]
    );
    assert!(
        all[0].evidence.json().get("slow").is_none(),
        "{:?}",
        all[0].evidence
    );
    // A scan that goes on slowly past the fast alert is reported once its own part reaches
    // the long window's threshold: 150 more ports, one every 4 s (too slow for the fast
    // rule), after the first closed.
    let mut more = probes.clone();
    more.extend((0..150).map(|p| ev(120_000 + p * 4_000, A, B, 2000 + p as u16, proto::TCP)));
    let all = run_until(&more, 700_000);
    assert_eq!(
        kinds(&all),
        vec![AlertKind::PortScan, AlertKind::PortScan],
        "{all:?}"
    );
    assert_eq!(all[1].evidence.json()["slow"], true, "{:?}", all[1]);
}

#[test]
fn a_spike_of_an_attacks_endpoints_is_part_of_the_attack() {
    // The scanner sends 1,000 probes in one second: its own tx spikes against no baseline.
    let probes: Vec<_> = (0..1000)
        .map(|p| ev(p, A, B, 1 + p as u16, proto::TCP))
        .collect();
    let all = run_until(&probes, 120_000);
    assert_eq!(kinds(&all), vec![AlertKind::PortScan], "{all:?}");
    // The same second of packets between hosts no attack alert names is a spike.
    let c = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 3));
    let d = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 4));
    let bulk: Vec<_> = (0..1500)
        .map(|i| FlowEvent {
            new_flow: i == 0,
            syn: u64::from(i == 0),
            ..ev(i * 2 / 3, c, d, 443, proto::TCP)
        })
        .collect();
    let all = run_until(&bulk, 20_000);
    assert!(
        !all.is_empty() && all.iter().all(|a| a.kind == AlertKind::TrafficSpike),
        "{all:?}"
    );
    // Stamped with the second that spiked, not with when it was judged.
    assert!(all[0].first_seen_ns < 2 * NS, "{:?}", all[0]);
}

#[test]
fn a_udp_flood_to_random_ports_is_a_flood_not_also_a_scan() {
    // One source, 5,000 UDP packets a second for 3 s, each to another port of the victim.
    let flood: Vec<_> = (0..15_000u64)
        .map(|i| FlowEvent {
            src_port: 1024 + (i % 50_000) as u16,
            bytes: 120,
            ..ev(i / 5, A, B, 1 + ((i * 7919) % 65_000) as u16, proto::UDP)
        })
        .collect();
    let all = run_until(&flood, 60_000);
    let seen = incidents(&all);
    assert_eq!(
        seen.iter().map(|a| a.kind).collect::<Vec<_>>(),
        vec![AlertKind::UdpFlood],
        "{all:?}"
    );
    // The scan the first packets looked like was folded into the flood, never left open.
    for a in all.iter().filter(|a| a.kind == AlertKind::PortScan) {
        assert_eq!(a.merged_into, Some(seen[0].id), "{a:?}");
    }
}

#[test]
fn a_victim_flooded_by_a_growing_crowd_is_one_incident() {
    // SYNs into B:80 from one source for a second, then from 25.
    let bot = |i: u64| IpAddr::V4(Ipv4Addr::new(10, 9, 0, 1 + (i % 25) as u8));
    let mut flood: Vec<_> = (0..1000u64).map(|i| ev(i, A, B, 80, proto::TCP)).collect();
    flood.extend((0..5000u64).map(|i| ev(1000 + i / 2, bot(i), B, 80, proto::TCP)));
    let all = run_until(&flood, 60_000);
    let seen = incidents(&all);
    assert_eq!(seen.len(), 1, "{all:?}");
    assert_eq!(seen[0].kind, AlertKind::Ddos);
    assert_eq!((seen[0].src_ip, seen[0].dst_ip), (None, Some(B)));
    let merged: Vec<&Alert> = all.iter().filter(|a| a.id != seen[0].id).collect();
    assert!(!merged.is_empty(), "the single-source flood opened first");
    // Each merged alert leads to the incident (directly, or through the one it was merged
    // into before that was merged in turn).
    let root = |a: &Alert| {
        let mut into = a.merged_into;
        let mut id = a.id;
        while let Some(next) = into {
            id = next;
            into = all
                .iter()
                .find(|b| b.id == next)
                .and_then(|b| b.merged_into);
        }
        id
    };
    for a in merged {
        assert_eq!(root(a), seen[0].id, "{a:?}");
        assert!(seen[0].first_seen_ns <= a.first_seen_ns, "{a:?}");
    }
    let sources = seen[0].evidence.json()["sample_sources"]
        .as_array()
        .map(Vec::len);
    assert!(sources >= Some(10), "{:?}", seen[0].evidence);
}

#[test]
fn an_open_alert_is_updated_at_most_once_a_data_second_while_it_grows() {
    let mut r = Rules::new(RuleConfig::default());
    let mut book = AlertBook::new(30 * NS, 1000);
    let mut updates: Vec<Alert> = Vec::new();
    let mut next = 0;
    // 600 ports over 6 s.
    for p in 0..600u64 {
        let e = ev(p * 10, A, B, 1 + p as u16, proto::TCP);
        r.on_event(&e, &mut book);
        if e.ts_ns >= next {
            r.tick(e.ts_ns, &mut book);
            r.settle(e.ts_ns, &mut book);
            book.close_quiet(e.ts_ns);
            updates.extend(book.take_updated());
            next = e.ts_ns + NS;
        }
    }
    let opened = book.take_opened();
    assert_eq!(opened.len(), 1);
    assert!(
        (4..=7).contains(&updates.len()),
        "{} updates in 6 s",
        updates.len()
    );
    let ports: Vec<u64> = updates
        .iter()
        .map(|a| a.evidence.json()["ports"].as_u64().unwrap_or(0))
        .collect();
    assert!(ports.windows(2).all(|w| w[0] < w[1]), "{ports:?}");
    assert!(ports.last() >= Some(&500), "{ports:?}");
    assert!(
        updates
            .iter()
            .all(|a| a.id == opened[0].id && a.state == crate::record::AlertState::Open)
    );
}

#[test]
fn a_tcp_scan_beside_a_udp_flood_of_the_same_pair_is_two_attacks() {
    // 200 TCP ports in 2 s, then a UDP flood to one port, same source and victim.
    let mut events: Vec<_> = (0..200u64)
        .map(|p| ev(p * 10, A, B, 1 + p as u16, proto::TCP))
        .collect();
    events.extend((0..10_000u64).map(|i| FlowEvent {
        src_port: 1024 + (i % 50_000) as u16,
        ..ev(5_000 + i / 5, A, B, 9999, proto::UDP)
    }));
    let all = run_until(&events, 60_000);
    let seen: Vec<AlertKind> = incidents(&all).iter().map(|a| a.kind).collect();
    assert_eq!(
        seen,
        vec![AlertKind::PortScan, AlertKind::UdpFlood],
        "{all:?}"
    );
}

#[test]
fn a_scanned_hosts_answers_are_part_of_the_scan_for_the_model() {
    let mut book = AlertBook::new(30 * NS, 1000);
    book.fire(crate::detect::alert::Firing {
        kind: AlertKind::PortScan,
        detector: crate::detect::alert::DetectorKind::Rule,
        src_ip: Some(A),
        dst_ip: Some(B),
        ts_ns: NS,
        severity: Severity::High,
        rate: 100.0,
        score: None,
        evidence: crate::detect::alert::Evidence::None,
    });
    // The victim's RSTs, seen as a flow of its own (victim -> scanner), and a probe.
    assert!(book.attach_model(B, A, 0.8), "the answer is the scan's");
    assert!(book.attach_model(A, B, 0.9), "the probe is the scan's");
    let c = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 3));
    assert!(
        !book.attach_model(c, A, 0.9),
        "another host's flow to the scanner is not the scan"
    );
    assert!(!book.attach_model(c, IpAddr::V4(Ipv4Addr::new(10, 0, 0, 4)), 0.9));
    book.flush();
    let a = &book.take_closed()[0];
    assert!(a.model_anomalies >= 2, "{a:?}");
    // Closed: the answers of its target that finish later are still the scan's.
    assert!(book.closed_attack_claims(B, A, NS));
    assert!(!book.closed_attack_claims(c, A, NS));
}

/// The model flags the first sessions of an attack before the rule's count is reached: when
/// the attack's alert opens, that model alert is folded into it (one alert per attack); a
/// model alert about another host stays.
#[test]
fn an_earlier_model_alert_about_the_attacker_is_folded_into_the_attack() {
    use crate::detect::alert::{DetectorKind, Evidence, Firing};
    let mut book = AlertBook::new(30 * NS, 1000);
    let model = |src: IpAddr, dst: IpAddr| Firing {
        kind: AlertKind::MlAnomaly,
        detector: DetectorKind::Ml,
        src_ip: Some(src),
        dst_ip: Some(dst),
        ts_ns: NS,
        severity: Severity::Medium,
        rate: 0.9,
        score: Some(0.9),
        evidence: Evidence::None,
    };
    let c = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 3));
    book.fire(model(A, B));
    book.fire(model(c, B));
    book.fire(Firing {
        kind: AlertKind::BruteForce,
        detector: DetectorKind::Rule,
        src_ip: Some(A),
        dst_ip: Some(B),
        ts_ns: 2 * NS,
        severity: Severity::Medium,
        rate: 20.0,
        score: None,
        evidence: Evidence::None,
    });
    book.flush();
    let all = book.take_closed();
    let state = |k: AlertKind, src: IpAddr| {
        all.iter()
            .find(|a| a.kind == k && a.src_ip == Some(src))
            .map(|a| a.state)
    };
    use crate::record::AlertState;
    assert_eq!(
        state(AlertKind::MlAnomaly, A),
        Some(AlertState::Merged),
        "{all:?}"
    );
    assert_eq!(state(AlertKind::MlAnomaly, c), Some(AlertState::Closed));
    assert_eq!(state(AlertKind::BruteForce, A), Some(AlertState::Closed));
}

/// A worm probing random addresses on a few ports, one SYN every 3 s for 7 minutes, none
/// answered: 140 hosts, 28 on any one port. A sweep, whatever ports it spreads them over; a
/// peer-to-peer client failing to reach 140 peers, each at its own port, is not.
#[test]
fn a_sweep_spread_over_a_few_ports_is_a_sweep_and_peers_at_their_own_ports_are_not() {
    let ports = [23, 2323, 8080, 80, 81];
    let worm: Vec<_> = (0..140u64)
        .map(|h| {
            ev(
                h * 3000,
                A,
                ip(
                    100,
                    64 + (h % 7) as u8,
                    (h * 37 % 251) as u8,
                    (h * 11 % 250) as u8 + 1,
                ),
                ports[(h * 7 % 5) as usize],
                proto::TCP,
            )
        })
        .collect();
    let alerts = run(&worm);
    assert_eq!(kinds(&alerts), vec![AlertKind::HostSweep], "{alerts:?}");
    let e = alerts[0].evidence.json();
    assert_eq!(
        (e["probe"].as_str(), e["slow"].as_bool()),
        (Some("tcp/*"), Some(true))
    );
    assert_eq!(
        e["sample_ports"],
        serde_json::json!([23, 80, 81, 2323, 8080])
    );
    assert!(e["hosts"].as_u64() >= Some(100), "{e}");
    let p2p: Vec<_> = (0..140u64)
        .map(|h| FlowEvent {
            dst_port: 20_000 + h as u16 * 3,
            key_dst_port: 20_000 + h as u16 * 3,
            ..ev(h * 3000, A, ip(100, 70, 0, h as u8 + 1), 0, proto::TCP)
        })
        .collect();
    assert!(kinds(&run(&p2p)).is_empty(), "{:?}", run(&p2p));
}

/// A monitoring server pinging the same 200 hosts every 2 s, every echo answered, and
/// connecting to their ssh: it revisits hosts it knows, it discovers nothing.
#[test]
fn a_monitor_revisiting_answered_hosts_is_no_sweep() {
    let mut events = Vec::new();
    for round in 0..30u64 {
        for h in 0..200u64 {
            let t = round * 2000 + h * 5;
            let host = ip(10, 3, (h / 250) as u8, (h % 250) as u8 + 1);
            let echo = FlowEvent {
                key_dst_port: 8 << 8,
                dst_port: 0,
                src_port: 0,
                new_flow: round == 0,
                syn: 0,
                ..ev(t, A, host, 0, proto::ICMP)
            };
            events.push(echo);
            events.push(FlowEvent {
                from_src: false,
                new_flow: false,
                ..echo
            });
            if round % 10 == 0 {
                events.push(FlowEvent {
                    src_port: 50_000 + round as u16,
                    ..ev(t + 1, A, host, 22, proto::TCP)
                });
                events.push(FlowEvent {
                    src_port: 50_000 + round as u16,
                    new_flow: false,
                    syn: 0,
                    completed: true,
                    ..ev(t + 2, A, host, 22, proto::TCP)
                });
            }
        }
    }
    events.sort_by_key(|e| e.ts_ns);
    assert!(kinds(&run(&events)).is_empty(), "{:?}", run(&events));
    // The same echo requests to 200 addresses that hold nobody: a ping sweep.
    let sweep: Vec<_> = (0..200u64)
        .map(|h| FlowEvent {
            key_dst_port: 8 << 8,
            dst_port: 0,
            src_port: 0,
            syn: 0,
            ..ev(h * 5, A, ip(10, 4, 0, h as u8 + 1), 0, proto::ICMP)
        })
        .collect();
    assert_eq!(kinds(&run(&sweep)), vec![AlertKind::HostSweep]);
}

/// Low-rate TCP reflection: SYN-ACKs nobody asked for from 60 reflectors into one host, about
/// one a second for 14 minutes (the host RSTs them): surfaces at low severity, as UDP's does.
/// The same SYN-ACKs answering the host's own SYNs are its connections.
#[test]
fn low_rate_syn_ack_reflection_surfaces_at_low_severity() {
    let mut events = Vec::new();
    for i in 0..840u64 {
        let refl = ip(198, 51, 100, (i % 60) as u8 + 1);
        let port = 1024 + (i * 7919 % 60_000) as u16;
        events.push(FlowEvent {
            from_src: false,
            syn: 0,
            syn_ack: 1,
            src_port: port,
            ..ev(i * 1000, B, refl, 443, proto::TCP)
        });
        events.push(FlowEvent {
            new_flow: false,
            syn: 0,
            rst: 1,
            src_port: port,
            ..ev(i * 1000 + 1, B, refl, 443, proto::TCP)
        });
    }
    let alerts = run(&events);
    assert!(!any_scan(&alerts), "{alerts:?}");
    let d = alerts
        .iter()
        .find(|a| a.kind == AlertKind::Ddos && a.dst_ip == Some(B))
        .unwrap_or_else(|| panic!("low-rate SYN-ACK reflection missed: {alerts:?}"));
    assert_eq!(d.severity, Severity::Low);
    let e = d.evidence.json();
    assert_eq!(
        (e["vector"].as_str(), e["slow"].as_bool()),
        (Some("tcp_syn_ack_reflection"), Some(true)),
        "{e}"
    );
    // B's own connections: its SYN first, then the SYN-ACK, then its ACK.
    let mut asked = Vec::new();
    for i in 0..840u64 {
        let server = ip(198, 51, 100, (i % 60) as u8 + 1);
        let port = 1024 + (i * 7919 % 60_000) as u16;
        asked.push(FlowEvent {
            src_port: port,
            ..ev(i * 1000, B, server, 443, proto::TCP)
        });
        asked.push(FlowEvent {
            from_src: false,
            new_flow: false,
            syn: 0,
            syn_ack: 1,
            src_port: port,
            ..ev(i * 1000 + 1, B, server, 443, proto::TCP)
        });
        asked.push(FlowEvent {
            new_flow: false,
            syn: 0,
            completed: true,
            src_port: port,
            ..ev(i * 1000 + 2, B, server, 443, proto::TCP)
        });
    }
    assert!(kinds(&run(&asked)).is_empty(), "{:?}", run(&asked));
}

/// Data time (ms) at which the first alert of `kind` opened, driving the rules as the detector
/// does (settling every `SETTLE_NS`, the second's tick every second), then 3 s of quiet;
/// `None` if it never did.
fn opened_at(events: &[FlowEvent], kind: AlertKind) -> Option<u64> {
    first_open(events, kind).map(|(ms, _)| ms)
}

/// The first alert of `kind` as it opened, and when (see [`opened_at`]).
fn first_open(events: &[FlowEvent], kind: AlertKind) -> Option<(u64, Alert)> {
    let mut r = Rules::new(RuleConfig::default());
    let mut book = AlertBook::new(30 * NS, 1000);
    let (mut settle, mut second) = (0, 0);
    for e in events {
        r.on_event(e, &mut book);
        if e.ts_ns >= settle {
            r.settle(e.ts_ns, &mut book);
            settle = e.ts_ns + SETTLE_NS;
        }
        if e.ts_ns >= second {
            r.tick(e.ts_ns, &mut book);
            second = e.ts_ns + NS;
        }
        if let Some(a) = book.open_alerts().find(|a| a.kind == kind) {
            return Some((e.ts_ns / 1_000_000, a.clone()));
        }
    }
    // Then 3 s of data time without traffic (live, polls keep coming).
    let last = events.last().map_or(0, |e| e.ts_ns);
    for t in (1..=30).map(|i| last + i * SETTLE_NS) {
        r.settle(t, &mut book);
        if t >= second {
            r.tick(t, &mut book);
            second = t + NS;
        }
        if let Some(a) = book.open_alerts().find(|a| a.kind == kind) {
            return Some((t / 1_000_000, a.clone()));
        }
    }
    None
}

/// Echo requests to `hosts` addresses from A, one every 2 ms from `t0`; `answered` of them
/// (every n-th) answered after `rtt_ms`.
fn echo_sweep(t0: u64, hosts: u64, every: u64, rtt_ms: u64) -> Vec<FlowEvent> {
    let mut events = Vec::new();
    for h in 0..hosts {
        let echo = FlowEvent {
            key_dst_port: 8 << 8,
            dst_port: 0,
            src_port: 0,
            syn: 0,
            ..ev(
                t0 + h * 2,
                A,
                ip(10, 4, (h / 250) as u8, (h % 250) as u8 + 1),
                0,
                proto::ICMP,
            )
        };
        events.push(echo);
        if every > 0 && h % every == 0 {
            events.push(FlowEvent {
                ts_ns: echo.ts_ns + rtt_ms * 1_000_000,
                from_src: false,
                new_flow: false,
                ..echo
            });
        }
    }
    events.sort_by_key(|e| e.ts_ns);
    events
}

/// A sweep whose few live hosts answer within a millisecond is judged a round trip's grace
/// after its probes (the shortest grace), not the full second; a sweep nobody answers waits
/// the second; a monitor whose answers take 150 ms is given 600 ms and is still no sweep.
#[test]
fn a_sweep_is_judged_on_the_grace_its_own_answers_set() {
    // 250 addresses in 500 ms, every 25th answers after 1 ms: the 50th silent host's grace
    // (100 ms) ends at ~200 ms.
    let at = opened_at(&echo_sweep(0, 250, 25, 1), AlertKind::HostSweep).expect("sweep missed");
    assert!(at < 400, "fast sweep judged at {at} ms");
    // Nobody answers: probes count after 1 s.
    let at = opened_at(&echo_sweep(0, 250, 0, 0), AlertKind::HostSweep).expect("sweep missed");
    assert!((1000..1500).contains(&at), "silent sweep judged at {at} ms");
    // Every host answers, 150 ms later: no sweep, though each echo waits 150 ms.
    assert_eq!(
        opened_at(&echo_sweep(0, 250, 1, 150), AlertKind::HostSweep),
        None
    );
}

/// SYNs refused by the victim (RST) or abandoned by their source fail for certain: the flood
/// is judged as soon as the attempts pass the threshold, not a second later.
#[test]
fn refused_syn_attempts_settle_a_syn_flood_at_once() {
    let mut events = Vec::new();
    for i in 0..300u64 {
        let syn = FlowEvent {
            src_port: 1024 + i as u16,
            ..ev(i, A, B, 80, proto::TCP)
        };
        events.push(syn);
        events.push(FlowEvent {
            from_src: false,
            new_flow: false,
            syn: 0,
            rst: 1,
            ts_ns: syn.ts_ns + 100_000,
            ..syn
        });
    }
    let at = opened_at(&events, AlertKind::SynFlood).expect("SYN flood missed");
    assert!(at < 150, "refused flood judged at {at} ms");
    // The same attempts with no answer at all wait out the grace.
    let silent: Vec<_> = events.iter().filter(|e| e.from_src).copied().collect();
    let mut longer = silent.clone();
    longer.extend((300..1500u64).map(|i| FlowEvent {
        src_port: 1024 + i as u16,
        ..ev(i, A, B, 80, proto::TCP)
    }));
    let at = opened_at(&longer, AlertKind::SynFlood).expect("silent flood missed");
    assert!(
        at >= 1000,
        "silent flood judged at {at} ms, before its grace"
    );
}

/// A server answering a spoofed SYN flood with SYN-ACKs only is not answering: a DDoS from the
/// first poll's worth of attempts, without waiting for any source to settle.
#[test]
fn syn_acks_to_a_spoofed_flood_are_no_answers() {
    let mut events = Vec::new();
    for i in 0..3000u64 {
        let src = IpAddr::V4(Ipv4Addr::from(0x0b00_0000 + i as u32));
        let syn = FlowEvent {
            src_port: 1024 + i as u16,
            ..ev(i / 5, src, B, 80, proto::TCP)
        };
        events.push(syn);
        events.push(FlowEvent {
            from_src: false,
            new_flow: false,
            syn: 0,
            syn_ack: 1,
            ..syn
        });
    }
    let (at, a) = first_open(&events, AlertKind::Ddos).expect("spoofed flood missed");
    assert!(at < 500, "spoofed flood judged at {at} ms");
    // Named as what it is when it opens (mitigation acts then), so that SYNs to that port
    // are limited, not all traffic.
    let ev = a.evidence.json();
    assert_eq!(
        (ev["vector"].as_str(), ev["dst_port"].as_u64()),
        (Some("tcp_syn"), Some(80)),
        "{ev}"
    );
}

/// A UDP flood at 5,000 packets/s is judged on its rate once it has run 200 ms, long before
/// 2,000 packets fill the window; a 300-packet burst in 100 ms is no flood, nor is a steady
/// 800 packets/s.
#[test]
fn a_flood_is_judged_on_its_rate_before_its_window_fills() {
    // One update per 100 ms poll, as live: 500 packets each.
    let polls = |n: u64, per: u64| -> Vec<FlowEvent> {
        (1..=n)
            .map(|i| FlowEvent {
                new_flow: i == 1,
                packets: per,
                ..ev(i * 100, A, B, 9999, proto::UDP)
            })
            .collect()
    };
    let at = opened_at(&polls(10, 500), AlertKind::UdpFlood).expect("flood missed");
    assert!(at <= 300, "5,000 pps judged at {at} ms");
    assert_eq!(opened_at(&polls(1, 300), AlertKind::UdpFlood), None);
    assert_eq!(opened_at(&polls(2, 150), AlertKind::UdpFlood), None);
    assert_eq!(
        opened_at(&polls(100, 80), AlertKind::UdpFlood),
        None,
        "800 pps"
    );
    // ICMP requests the same way.
    let icmp: Vec<_> = (1..=10u64)
        .map(|i| FlowEvent {
            new_flow: i == 1,
            packets: 500,
            key_dst_port: 8 << 8,
            dst_port: 0,
            src_port: 0,
            syn: 0,
            ..ev(i * 100, A, B, 0, proto::ICMP)
        })
        .collect();
    let at = opened_at(&icmp, AlertKind::IcmpFlood).expect("ICMP flood missed");
    assert!(at <= 300, "ICMP at 5,000 pps judged at {at} ms");
}

fn run_with(r: &mut Rules, events: &[FlowEvent]) -> Vec<Alert> {
    let mut book = AlertBook::new(30 * NS, 1000);
    for e in events {
        r.on_event(e, &mut book);
        r.tick(e.ts_ns, &mut book);
        r.settle(e.ts_ns, &mut book);
    }
    let end = events.last().map_or(0, |e| e.ts_ns);
    r.flush(end, &mut book);
    book.flush();
    book.take_closed()
}

/// The same traffic is a flood into a host of a group with `[rules]`'s thresholds and no
/// flood into one of a group whose thresholds are higher (FastNetMon's hostgroups): per
/// protocol, and for SYN floods and spikes as well.
#[test]
fn the_same_traffic_alerts_in_one_hostgroup_and_not_in_another_with_higher_thresholds() {
    use crate::networks::{GroupThresholds, HostgroupConfig, NetworksConfig};
    let busy = IpAddr::V4(Ipv4Addr::new(10, 0, 1, 2));
    let nets = NetworksConfig {
        home: vec!["10.0.0.0/16".into()],
        hostgroups: vec![HostgroupConfig {
            name: "cdn".into(),
            prefixes: vec!["10.0.1.0/24".into()],
            thresholds: GroupThresholds {
                udp_pps: Some(5_000),
                syn_flood_syns: Some(1_000),
                spike_pps: Some(50_000),
                ..GroupThresholds::default()
            },
            ..HostgroupConfig::default()
        }],
    }
    .build();
    // 2,000 unanswered UDP packets a second for 1.5 s; 300 failing SYNs from one source.
    let traffic = |victim: IpAddr| -> Vec<FlowEvent> {
        let mut v: Vec<FlowEvent> = (0..3000)
            .map(|i| FlowEvent {
                new_flow: i == 0,
                ..ev(i / 2, A, victim, 53, proto::UDP)
            })
            .collect();
        v.extend((0..300).map(|i| FlowEvent {
            src_port: 1000 + i as u16,
            ..ev(1500 + i, ip(198, 51, 100, 9), victim, 80, proto::TCP)
        }));
        v.sort_by_key(|e| e.ts_ns);
        v
    };
    let mut r = Rules::new(RuleConfig::default());
    r.set_networks(&nets);
    let plain = kinds(&run_with(&mut r, &traffic(B)));
    assert!(
        plain.contains(&AlertKind::UdpFlood) && plain.contains(&AlertKind::SynFlood),
        "outside the group, [rules]' thresholds: {plain:?}"
    );
    let mut r = Rules::new(RuleConfig::default());
    r.set_networks(&nets);
    // (The sender's own spike is about the sender, outside the group.)
    let cdn: Vec<AlertKind> = run_with(&mut r, &traffic(busy))
        .into_iter()
        .filter(|a| a.dst_ip == Some(busy))
        .map(|a| a.kind)
        .collect();
    assert!(
        cdn.is_empty(),
        "inside the group, 2,000 pps and 300 SYNs are below its thresholds: {cdn:?}"
    );
}

/// A bandwidth threshold: 200 large datagrams a second (far below 1,000 pps) at 1,400 bytes
/// fill 2.2 Mbit/s, a flood where `flood_mbps` is 2; the same packets are none without it.
#[test]
fn a_bandwidth_threshold_makes_a_flood_of_few_large_packets() {
    let big: Vec<_> = (0..600)
        .map(|i| FlowEvent {
            new_flow: i == 0,
            bytes: 1_400,
            ..ev(i * 5, A, B, 4444, proto::UDP)
        })
        .collect();
    assert!(kinds(&run(&big)).is_empty(), "200 pps is no flood by count");
    let mut r = Rules::new(RuleConfig {
        flood_mbps: 2,
        ..RuleConfig::default()
    });
    let a = run_with(&mut r, &big);
    assert_eq!(kinds(&a), vec![AlertKind::UdpFlood]);
    let mbps = a[0].evidence.json()["rate_mbps"].as_f64().unwrap_or(0.0);
    assert!((2.0..2.5).contains(&mbps), "{mbps} Mbit/s: {:?}", a[0]);
}
