//! The XDP program's mitigation maps on crafted frames (`BPF_PROG_TEST_RUN`): which packets a
//! blocklist entry or a rate limit drops, that every other packet passes, that expiry is
//! honoured in the kernel, and that dropped packets are still counted in their flows (so
//! detection keeps seeing the attack). Also the evidence watch: which packets are copied to the
//! evidence ring, how many bytes, and the budget.

use std::net::{Ipv4Addr, Ipv6Addr};

use sensor::kernel::SensorProgram;
use sensor_common::{RateKey, RateLimit, WatchEntry, gates, proto, tcp_flags, watch};
use sensor_tests::*;

const ATTACKER: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 7);
const NEIGHBOUR: Ipv4Addr = Ipv4Addr::new(203, 0, 114, 7);
const VICTIM: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 20);
const CLIENT: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 10);
const ATTACKER6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0xbad, 0, 0, 0, 0, 1);
const VICTIM6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 1, 0, 0, 0, 0, 0xb);
const XDP_DROP: u32 = 1;

macro_rules! program {
    () => {
        match load_or_skip(module_path!(), TEST_SIZES) {
            Some(p) => p,
            None => return,
        }
    };
}

/// `CLOCK_MONOTONIC` now, the clock `bpf_ktime_get_ns` reads.
fn mono_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: a valid timespec to fill.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

fn syn(src: Ipv4Addr, dst: Ipv4Addr, sport: u16, dport: u16) -> Frame {
    tcp4(src, dst, sport, dport, tcp_flags::SYN, 0)
}

#[test]
fn blocklist_drops_the_blocked_source_side_only_and_counts_what_it_dropped() {
    let mut p = program!();
    let hour = mono_ns() + 3_600_000_000_000;
    // 203.0.113.0/24 and 2001:db8:bad::/48.
    p.block(mapped(ATTACKER), 96 + 24, hour).expect("block v4");
    p.block(ATTACKER6.octets(), 48, hour).expect("block v6");
    let from_attacker = syn(ATTACKER, VICTIM, 40000, 80);
    // Entries alone do nothing until the program is told they exist (the fast-path gate).
    assert_eq!(
        run(&mut p, &from_attacker.bytes),
        XDP_PASS,
        "dropped with the mitigation bit clear"
    );
    p.set_gates(gates::BLOCKLIST).expect("enable");
    let attacker_in_prefix = syn(Ipv4Addr::new(203, 0, 113, 250), VICTIM, 40001, 80);
    let to_attacker = tcp4(VICTIM, ATTACKER, 80, 40000, tcp_flags::SYN | 0x10, 0);
    let neighbour = syn(NEIGHBOUR, VICTIM, 40002, 80);
    let v6 = tcp6(ATTACKER6, VICTIM6, 5000, 443, tcp_flags::SYN, 10);
    let v6_reply = tcp6(VICTIM6, ATTACKER6, 443, 5000, tcp_flags::SYN | 0x10, 0);
    let arp_from_attacker = arp(1, ATTACKER, VICTIM);
    for (f, want, what) in [
        (&from_attacker, XDP_DROP, "blocked source"),
        (&attacker_in_prefix, XDP_DROP, "another address in the /24"),
        (&to_attacker, XDP_PASS, "packet to the blocked address"),
        (&neighbour, XDP_PASS, "address outside the prefix"),
        (&v6, XDP_DROP, "IPv6 source in the /48"),
        (&v6_reply, XDP_PASS, "IPv6 packet to the blocked address"),
        (&arp_from_attacker, XDP_PASS, "ARP from the blocked address"),
    ] {
        assert_eq!(run(&mut p, &f.bytes), want, "{what}");
    }
    let c = p.counters().expect("counters");
    let dropped_bytes =
        (from_attacker.bytes.len() + attacker_in_prefix.bytes.len() + v6.bytes.len()) as u64;
    assert_eq!(
        (c.blocked_packets, c.blocked_bytes, c.rate_limited_packets),
        (3, dropped_bytes, 0),
        "global drop counters"
    );
    let entries = p.blocklist().expect("read blocklist");
    let v4 = entries
        .iter()
        .find(|(a, l, _)| *l == 120 && a[..15] == mapped(ATTACKER)[..15])
        .expect("v4 entry listed");
    assert_eq!(
        (v4.2.packets, v4.2.expires_ns),
        (2, hour),
        "v4 entry counters"
    );
    let e6 = entries.iter().find(|(_, l, _)| *l == 48).expect("v6 entry");
    assert_eq!(e6.2.packets, 1, "v6 entry counters");
    // Dropped packets still make their flows: the rules keep seeing the attack (this flow:
    // one packet passed before the gate opened, one dropped after).
    let flows = p.flows().expect("flows");
    let k = key4(ATTACKER, VICTIM, 40000, 80, proto::TCP);
    assert_eq!(
        flows.get(&k).map(|s| (s.packets, s.syn)),
        Some((2, 2)),
        "dropped SYN counted in its flow"
    );
    assert_eq!(c.packets, 8, "every packet counted once");
    // Removed: the source passes again.
    let last = p
        .unblock(mapped(ATTACKER), 120)
        .expect("unblock")
        .expect("entry existed");
    assert_eq!(last.packets, 2, "counters returned on removal");
    assert_eq!(run(&mut p, &from_attacker.bytes), XDP_PASS, "after unblock");
    assert!(
        p.unblock(mapped(ATTACKER), 120)
            .expect("second unblock")
            .is_none(),
        "removing twice reports nothing"
    );
}

#[test]
fn expired_entries_stop_dropping_in_the_kernel_before_any_sweep() {
    let mut p = program!();
    p.set_gates(gates::BLOCKLIST | gates::RATE_LIMITS)
        .expect("enable");
    let past = mono_ns() - 1;
    p.block(mapped(ATTACKER), 128, past).expect("block");
    p.rate_limit(
        RateKey {
            addr: mapped(VICTIM),
            proto: 0,
            _pad: [0; 3],
        },
        RateLimit {
            interval_ns: u64::MAX / 4,
            expires_ns: past,
            ..RateLimit::default()
        },
    )
    .expect("rate limit");
    for i in 0..5 {
        let f = syn(ATTACKER, VICTIM, 1000 + i, 80);
        assert_eq!(run(&mut p, &f.bytes), XDP_PASS, "packet {i} after expiry");
    }
    // An entry with expiry 0 never expires.
    p.block(mapped(ATTACKER), 128, 0).expect("block forever");
    assert_eq!(
        run(&mut p, &syn(ATTACKER, VICTIM, 2000, 80).bytes),
        XDP_DROP,
        "entry without expiry"
    );
}

fn limit(p: &mut SensorProgram, proto: u8, syn_only: bool, dst_port: u16, burst: u64) {
    let interval = 1_000_000_000; // 1 packet/s: nothing refills during the test
    p.rate_limit(
        RateKey {
            addr: mapped(VICTIM),
            proto,
            _pad: [0; 3],
        },
        RateLimit {
            interval_ns: interval,
            burst_ns: burst * interval,
            expires_ns: mono_ns() + 3_600_000_000_000,
            dst_port,
            syn_only: u8::from(syn_only),
            ..RateLimit::default()
        },
    )
    .expect("rate limit");
}

#[test]
fn syn_rate_limit_toward_a_victim_drops_the_excess_and_spares_established_traffic() {
    let mut p = program!();
    p.set_gates(gates::RATE_LIMITS).expect("enable");
    // 1 SYN/s with a burst of 2 more: the first 3 SYNs to port 80 pass, the rest drop.
    limit(&mut p, proto::TCP, true, 80, 2);
    let verdicts: Vec<u32> = (0..10)
        .map(|i| {
            // Sources differ each time, as in a spoofed flood.
            let src = Ipv4Addr::from(0x0a00_0000 + i);
            run(&mut p, &syn(src, VICTIM, 1024 + i as u16, 80).bytes)
        })
        .collect();
    assert_eq!(
        verdicts,
        [
            XDP_PASS, XDP_PASS, XDP_PASS, XDP_DROP, XDP_DROP, XDP_DROP, XDP_DROP, XDP_DROP,
            XDP_DROP, XDP_DROP
        ],
        "verdicts of 10 SYNs at a 1/s limit with burst 2"
    );
    // Established traffic, other ports, other protocols and other hosts are not limited.
    let ack = tcp4(CLIENT, VICTIM, 5555, 80, 0x10, 100);
    let syn_other_port = syn(CLIENT, VICTIM, 5556, 22);
    let udp = udp4(CLIENT, VICTIM, 5557, 80, 10);
    let other_host = syn(CLIENT, NEIGHBOUR, 5558, 80);
    for (f, what) in [
        (&ack, "ACK to the limited port"),
        (&syn_other_port, "SYN to another port"),
        (&udp, "UDP to the victim"),
        (&other_host, "SYN to another host"),
    ] {
        assert_eq!(run(&mut p, &f.bytes), XDP_PASS, "{what}");
    }
    let limits = p.rate_limits().expect("read rate limits");
    let (_, l) = limits.iter().next().expect("one limit");
    assert_eq!((l.passed, l.dropped), (3, 7), "limit counters");
    let c = p.counters().expect("counters");
    assert_eq!(
        (c.rate_limited_packets, c.blocked_packets),
        (7, 0),
        "global counters"
    );
}

#[test]
fn protocol_wide_limit_applies_when_no_protocol_entry_matches() {
    let mut p = program!();
    p.set_gates(gates::RATE_LIMITS).expect("enable");
    // Any protocol toward the victim, no burst: one packet passes, the next drops.
    limit(&mut p, 0, false, 0, 0);
    let a = udp4(ATTACKER, VICTIM, 1, 53, 100);
    let b = icmp4_echo(ATTACKER, VICTIM, 1, 1);
    assert_eq!(run(&mut p, &a.bytes), XDP_PASS, "first packet");
    assert_eq!(
        run(&mut p, &b.bytes),
        XDP_DROP,
        "second packet, other protocol"
    );
    // A protocol-specific entry takes precedence over the wide one.
    limit(&mut p, proto::UDP, false, 0, 5);
    assert_eq!(run(&mut p, &a.bytes), XDP_PASS, "UDP under its own limit");
    assert!(
        p.remove_rate_limit(RateKey {
            addr: mapped(VICTIM),
            proto: 0,
            _pad: [0; 3],
        })
        .expect("remove")
        .is_some_and(|l| l.dropped == 1),
        "removal returns the last counters"
    );
    assert_eq!(run(&mut p, &b.bytes), XDP_PASS, "ICMP after removal");
}

fn watch_entry(
    alert_id: u64,
    flags: u32,
    max_packets: u64,
    snaplen: u32,
    expires: u64,
) -> WatchEntry {
    WatchEntry {
        alert_id,
        expires_ns: expires,
        max_packets,
        max_bytes: 1 << 20,
        flags,
        snaplen,
        ..WatchEntry::default()
    }
}

#[test]
fn watched_packets_are_copied_to_the_evidence_ring_within_their_budget() {
    let mut p = program!();
    let hour = mono_ns() + 3_600_000_000_000;
    p.watch(
        mapped(ATTACKER),
        watch_entry(42, watch::AS_SRC, 3, 64, hour),
    )
    .expect("watch attacker");
    p.watch(
        mapped(VICTIM),
        watch_entry(43, watch::AS_DST, 10, 256, hour),
    )
    .expect("watch victim");
    p.set_gates(gates::WATCH).expect("gate");
    let from_attacker: Vec<Frame> = (0..5)
        .map(|i| tcp4(ATTACKER, NEIGHBOUR, 1000 + i, 22, tcp_flags::SYN, 100))
        .collect();
    let to_attacker = tcp4(NEIGHBOUR, ATTACKER, 22, 1000, tcp_flags::SYN | 0x10, 0);
    let to_victim = udp4(CLIENT, VICTIM, 5000, 53, 300);
    let from_victim = udp4(VICTIM, CLIENT, 53, 5000, 20);
    let other = udp4(CLIENT, NEIGHBOUR, 5000, 53, 20);
    for f in from_attacker
        .iter()
        .chain([&to_attacker, &to_victim, &from_victim, &other])
    {
        assert_eq!(run(&mut p, &f.bytes), XDP_PASS, "evidence never drops");
    }
    let mut recs = Vec::new();
    p.drain_evidence(|r| recs.push(*r));
    let got: Vec<(u64, u32, u32)> = recs
        .iter()
        .map(|r| (r.alert_id, r.wire_len, r.cap_len))
        .collect();
    let a_len = from_attacker[0].bytes.len() as u32;
    let v_len = to_victim.bytes.len() as u32;
    assert_eq!(
        got,
        vec![
            (42, a_len, 64),
            (42, a_len, 64),
            (42, a_len, 64),
            (43, v_len, 256)
        ],
        "3 attacker packets (budget), then the one to the victim, each cut to its snaplen"
    );
    assert_eq!(
        &recs[0].data[..64],
        &from_attacker[0].bytes[..64],
        "bytes as sent"
    );
    assert_eq!(&recs[3].data[..256], &to_victim.bytes[..256]);
    assert!(
        recs.windows(2)
            .all(|w| w[0].ts_ns <= w[1].ts_ns && w[0].ts_ns > 0),
        "timestamps in order"
    );
    let w = p.watched().expect("watch map");
    let a = w[&mapped(ATTACKER)];
    assert_eq!(
        (a.packets, a.bytes, a.skipped, a.lost),
        (3, 3 * 64, 2, 0),
        "attacker entry"
    );
    let c = p.counters().expect("counters");
    assert_eq!((c.evidence_packets, c.evidence_lost), (4, 0));
    // Expired or removed: nothing more is copied.
    p.watch(
        mapped(VICTIM),
        watch_entry(44, watch::AS_DST, 10, 256, mono_ns() - 1),
    )
    .expect("expired watch");
    assert!(p.unwatch(mapped(ATTACKER)).expect("unwatch").is_some());
    run(&mut p, &to_victim.bytes);
    run(&mut p, &from_attacker[0].bytes);
    assert_eq!(
        p.drain_evidence(|_| {}),
        0,
        "nothing after expiry and removal"
    );
}
