use std::net::Ipv4Addr;

use super::*;
use crate::packet::{Parsed, tcp};

const S: u64 = 1_000_000_000;

fn v4(a: u8) -> [u8; 16] {
    Ipv4Addr::new(10, 0, 0, a).to_ipv6_mapped().octets()
}

fn pkt(src: u8, dst: u8, sport: u16, dport: u16, proto_: u8, flags: u8) -> Parsed {
    Parsed {
        key: FlowKey {
            src_addr: v4(src),
            dst_addr: v4(dst),
            src_port: sport,
            dst_port: dport,
            proto: proto_,
            family: family::IPV4,
            _pad: [0; 2],
        },
        tcp_flags: flags,
        echo: false,
        fragment: false,
    }
}

fn run(cfg: FlowConfig, packets: &[(u64, Parsed)]) -> (Vec<Flow>, FlowTable) {
    let mut t = FlowTable::new(cfg);
    let mut out = Vec::new();
    for (ts, p) in packets {
        t.packet(p, 100, *ts, &mut |f| out.push(f));
    }
    (out, t)
}

fn drain(mut t: FlowTable, mut out: Vec<Flow>) -> Vec<Flow> {
    t.flush(&mut |f| out.push(f));
    out
}

/// Completion events: with both sides in view the SYN-ACK is needed; with only the
/// client's side in view (asymmetric routing, one interface watched), its ACK after its SYN
/// is the proof that it was answered.
#[test]
fn handshakes_complete_on_the_answer_or_on_the_clients_ack_when_alone() {
    let completed = |packets: &[(u64, Parsed)]| {
        let mut t = FlowTable::new(FlowConfig::default());
        t.record_events(true);
        for (ts, p) in packets {
            t.packet(p, 60, *ts, &mut |_| {});
        }
        t.take_events().filter(|e| e.completed).count()
    };
    let syn = pkt(1, 2, 40000, 443, proto::TCP, tcp::SYN);
    let ack = pkt(1, 2, 40000, 443, proto::TCP, tcp::ACK);
    let syn_ack = pkt(2, 1, 443, 40000, proto::TCP, tcp::SYN | tcp::ACK);
    let rst = pkt(2, 1, 443, 40000, proto::TCP, tcp::RST | tcp::ACK);
    assert_eq!(completed(&[(S, syn), (S + 1, syn_ack), (S + 2, ack)]), 1);
    assert_eq!(completed(&[(S, syn), (S + 2, ack)]), 1, "client side only");
    assert_eq!(
        completed(&[(S, syn), (S + 1, rst), (S + 2, ack)]),
        0,
        "refused"
    );
    assert_eq!(completed(&[(S, syn), (S + 1, syn)]), 0, "a retransmission");
    assert_eq!(completed(&[(S, ack)]), 0, "an ACK probe");
}

/// A flow's packets of one second and one direction become one event with their sums;
/// a new second, the other direction, a new flow or taking the events starts another.
#[test]
fn events_merge_per_flow_direction_and_second() {
    let mut t = FlowTable::new(FlowConfig::default());
    t.record_events(true);
    let syn = pkt(1, 2, 40000, 80, proto::TCP, tcp::SYN);
    let syn_ack = pkt(2, 1, 80, 40000, proto::TCP, tcp::SYN | tcp::ACK);
    let ack = pkt(1, 2, 40000, 80, proto::TCP, tcp::ACK);
    let other = pkt(3, 2, 40001, 80, proto::TCP, tcp::SYN);
    for (ts, p) in [
        (S, syn),
        (S + 1, other),
        (S + 2, syn_ack),
        (S + 3, ack),
        (S + 4, ack),
        (2 * S, ack),
    ] {
        t.packet(&p, 60, ts, &mut |_| {});
    }
    let got: Vec<(u64, bool, bool, u64, u64, bool)> = t
        .take_events()
        .map(|e| {
            (
                e.ts_ns,
                e.new_flow,
                e.from_src,
                e.packets,
                e.syn,
                e.completed,
            )
        })
        .collect();
    assert_eq!(
        got,
        [
            // SYN and two ACKs of the first second, one event; the handshake completed.
            (S + 4, true, true, 3, 1, true),
            (S + 1, true, true, 1, 1, false),
            (S + 2, false, false, 1, 0, false),
            (2 * S, false, true, 1, 0, false),
        ]
    );
    t.packet(&ack, 60, 2 * S + 1, &mut |_| {});
    assert_eq!(
        t.take_events().map(|e| e.packets).collect::<Vec<_>>(),
        [1],
        "events already taken are never merged into"
    );
}

#[test]
fn first_packet_sender_is_the_source_and_directions_are_counted() {
    let (out, t) = run(
        FlowConfig::default(),
        &[
            (S, pkt(1, 2, 40000, 80, proto::TCP, tcp::SYN)),
            (S + 1, pkt(2, 1, 80, 40000, proto::TCP, tcp::SYN | tcp::ACK)),
            (S + 2, pkt(1, 2, 40000, 80, proto::TCP, tcp::ACK)),
        ],
    );
    let flows = drain(t, out);
    assert_eq!(flows.len(), 1);
    let f = &flows[0];
    assert_eq!(
        (f.src, f.src_port, f.dst_port),
        (IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1)), 40000, 80)
    );
    assert_eq!(
        (f.fwd.packets, f.rev.packets, f.fwd.bytes, f.rev.bytes),
        (2, 1, 200, 100)
    );
    assert_eq!((f.syn, f.syn_ack, f.ack_only), (1, 1, 1));
    assert_eq!(f.iat_us.n, 2);
}

#[test]
fn a_capture_starting_with_the_syn_ack_credits_the_syn_sender() {
    let (out, t) = run(
        FlowConfig::default(),
        &[
            (S, pkt(2, 1, 80, 40000, proto::TCP, tcp::SYN | tcp::ACK)),
            (S + 1, pkt(1, 2, 40000, 80, proto::TCP, tcp::ACK)),
        ],
    );
    let f = &drain(t, out)[0];
    assert_eq!(
        (f.src_port, f.dst_port, f.fwd.packets, f.rev.packets),
        (40000, 80, 1, 1)
    );
}

#[test]
fn a_later_syn_from_the_other_side_makes_it_the_initiator() {
    let (out, t) = run(
        FlowConfig::default(),
        &[
            (S, pkt(2, 1, 80, 40000, proto::TCP, tcp::ACK)),
            (S + 1, pkt(1, 2, 40000, 80, proto::TCP, tcp::SYN)),
        ],
    );
    let f = &drain(t, out)[0];
    assert_eq!(
        (f.src_port, f.dst_port, f.fwd.packets, f.rev.packets),
        (40000, 80, 1, 1)
    );
}

#[test]
fn idle_timeout_runs_on_packet_time() {
    let cfg = FlowConfig {
        idle_timeout: Duration::from_secs(60),
        ..FlowConfig::default()
    };
    let p = pkt(1, 2, 1000, 53, proto::UDP, 0);
    let (out, t) = run(cfg, &[(10 * S, p), (20 * S, p), (200 * S, p)]);
    assert_eq!(out.len(), 1, "the gap of 180 s ends the first flow");
    assert_eq!((out[0].packets(), out[0].end), (2, EndReason::Idle));
    let all = drain(t, out);
    assert_eq!((all[1].packets(), all[1].first_seen_ns), (1, 200 * S));
}

#[test]
fn active_timeout_reports_long_flows_while_they_last() {
    let cfg = FlowConfig {
        active_timeout: Duration::from_secs(100),
        ..FlowConfig::default()
    };
    let p = pkt(1, 2, 1000, 53, proto::UDP, 0);
    let packets: Vec<_> = (0..=35).map(|i| (i * 10 * S, p)).collect();
    let (out, t) = run(cfg, &packets);
    assert!(
        out.len() >= 3,
        "350 s at a 100 s active timeout: {} records",
        out.len()
    );
    assert!(out.iter().all(|f| f.end == EndReason::ActiveTimeout));
    let total: u64 = drain(t, out).iter().map(Flow::packets).sum();
    assert_eq!(total, 36, "no packet lost or counted twice across restarts");
}

#[test]
fn closed_connections_finish_after_the_close_timeout_and_late_packets_stay_in_them() {
    let cfg = FlowConfig {
        close_timeout: Duration::from_secs(10),
        ..FlowConfig::default()
    };
    let p = |a, b, sp, dp, fl| pkt(a, b, sp, dp, proto::TCP, fl);
    let (out, t) = run(
        cfg,
        &[
            (S, p(1, 2, 5, 80, tcp::SYN)),
            (S, p(2, 1, 80, 5, tcp::SYN | tcp::ACK)),
            (S, p(1, 2, 5, 80, tcp::ACK)),
            (2 * S, p(1, 2, 5, 80, tcp::FIN | tcp::ACK)),
            (2 * S, p(2, 1, 80, 5, tcp::FIN | tcp::ACK)),
            // A late retransmission within the close timeout joins the same flow.
            (5 * S, p(1, 2, 5, 80, tcp::ACK)),
            // An open connection on another port is not affected.
            (5 * S, p(1, 2, 6, 80, tcp::SYN)),
            (5 * S, p(2, 1, 80, 6, tcp::SYN | tcp::ACK)),
            (5 * S, p(1, 2, 6, 80, tcp::ACK)),
            (30 * S, pkt(3, 4, 7, 7, proto::UDP, 0)),
        ],
    );
    assert_eq!(out.len(), 1, "only the closed connection ends: {out:?}");
    assert_eq!((out[0].packets(), out[0].end), (6, EndReason::Closed));
    assert_eq!(t.len(), 2);
}

/// Seen from one side only (a host's ingress), a scan's probes and a client's closed
/// connection end at the close timeout, not the idle timeout: the answers (RST, the
/// other FIN) passed where the sensor does not look. An answered flow is not cut short.
#[test]
fn one_sided_probes_and_closes_finish_at_the_close_timeout() {
    let p = |a, b, sp, dp, fl| pkt(a, b, sp, dp, proto::TCP, fl);
    let (out, t) = run(
        FlowConfig::default(),
        &[
            // A SYN probe and its retransmission, nothing back.
            (S, p(1, 2, 5, 22, tcp::SYN)),
            (2 * S, p(1, 2, 5, 22, tcp::SYN)),
            // A client's side of a whole connection: SYN, ACK, data, FIN.
            (S, p(1, 2, 6, 80, tcp::SYN)),
            (S, p(1, 2, 6, 80, tcp::ACK)),
            (S, p(1, 2, 6, 80, tcp::PSH | tcp::ACK)),
            (2 * S, p(1, 2, 6, 80, tcp::FIN | tcp::ACK)),
            // A connection seen both ways, idle but open: stays.
            (S, p(1, 3, 7, 443, tcp::SYN)),
            (S, p(3, 1, 443, 7, tcp::SYN | tcp::ACK)),
            (S, p(1, 3, 7, 443, tcp::ACK)),
            (15 * S, pkt(8, 9, 7, 7, proto::UDP, 0)),
        ],
    );
    let mut ended: Vec<(u16, u64, EndReason)> = out
        .iter()
        .map(|f| (f.dst_port, f.packets(), f.end))
        .collect();
    ended.sort_unstable_by_key(|e| e.0);
    assert_eq!(
        ended,
        vec![(22, 2, EndReason::Closed), (80, 4, EndReason::Closed)],
        "{out:?}"
    );
    assert_eq!(t.len(), 2, "the answered connection and the UDP flow stay");
}

#[test]
fn the_flow_cap_drops_and_counts_new_flows() {
    let cfg = FlowConfig {
        max_flows: 2,
        ..FlowConfig::default()
    };
    let (out, t) = run(
        cfg,
        &[
            (S, pkt(1, 2, 1, 1, proto::UDP, 0)),
            (S, pkt(1, 2, 2, 2, proto::UDP, 0)),
            (S, pkt(1, 2, 3, 3, proto::UDP, 0)),
            (S, pkt(1, 2, 3, 3, proto::UDP, 0)),
            (S, pkt(1, 2, 1, 1, proto::UDP, 0)),
        ],
    );
    assert_eq!(t.len(), 2);
    assert_eq!(
        (
            t.stats().dropped_flows_by_cap,
            t.stats().dropped_packets_by_cap
        ),
        (2, 2)
    );
    assert_eq!(drain(t, out).iter().map(Flow::packets).sum::<u64>(), 3);
}

#[test]
fn icmp_echo_and_reply_are_one_flow_and_port_reuse_splits_tcp() {
    let mut req = pkt(1, 2, 0, 8 << 8, proto::ICMP, 0);
    req.echo = true;
    let rep = pkt(2, 1, 0, 0, proto::ICMP, 0);
    let (out, t) = run(
        FlowConfig::default(),
        &[
            (S, req),
            (S + 5, rep),
            (2 * S, pkt(1, 2, 5, 80, proto::TCP, tcp::SYN)),
            (2 * S, pkt(2, 1, 80, 5, proto::TCP, tcp::RST | tcp::ACK)),
            (3 * S, pkt(1, 2, 5, 80, proto::TCP, tcp::SYN)),
        ],
    );
    assert_eq!(
        out.len(),
        1,
        "the second SYN after RST starts a new connection"
    );
    assert_eq!(out[0].end, EndReason::Reused);
    let all = drain(t, out);
    let icmp = all
        .iter()
        .find(|f| f.proto == proto::ICMP)
        .expect("icmp flow");
    assert_eq!(
        (
            icmp.fwd.packets,
            icmp.rev.packets,
            icmp.echo_requests,
            icmp.dst_port
        ),
        (1, 1, 1, 8 << 8)
    );
    assert_eq!(all.len(), 3);
}

#[test]
fn moments_merge_constant_groups_exactly() {
    let mut a = Moments::default();
    let mut b = Moments::default();
    for x in [3.0, 3.0, 3.0, 7.0, 7.0] {
        a.push(x);
    }
    b.push_n(3.0, 3);
    b.push_n(7.0, 2);
    assert!((a.mean - b.mean).abs() < 1e-12 && (a.std() - b.std()).abs() < 1e-12);
}

/// A kernel delta's sums (packets, bytes, squared lengths) give the same length spread as
/// the packets one by one, whatever the mix: what makes live and replay flows agree.
#[test]
fn moments_from_sums_match_the_packets() {
    let lens = [66.0, 1514.0, 66.0, 66.0, 900.0, 1514.0, 54.0];
    let mut a = Moments::default();
    for x in lens {
        a.push(x);
    }
    let mut b = Moments::default();
    for part in [&lens[..3], &lens[3..4], &lens[4..]] {
        let sum: f64 = part.iter().sum();
        let sq: f64 = part.iter().map(|x| x * x).sum();
        b.push_sums(part.len() as u64, sum, sq);
    }
    assert_eq!(a.n, b.n);
    assert!((a.mean - b.mean).abs() < 1e-9, "{a:?} {b:?}");
    assert!((a.std() - b.std()).abs() < 1e-9, "{a:?} {b:?}");
}
