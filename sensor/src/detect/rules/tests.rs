//! Rule tests on hand-made flow events.

use super::*;
use sensor_common::{HostStats, proto};

use crate::detect::alert::{Alert, AlertKind};

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
    let mut book = AlertBook::new(30 * NS, 1000);
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
