//! The compiled XDP program run on crafted frames with `BPF_PROG_TEST_RUN`; every test asserts
//! the exact map contents the frames must leave behind, and `XDP_PASS` for every frame.
//!
//! Run single-threaded (`cargo xtask test` does): each test loads its own object and maps.

use std::net::{Ipv4Addr, Ipv6Addr};

use rand::{Rng as _, SeedableRng as _, rngs::StdRng};
use sensor::kernel::{KernelConfig, SensorProgram};
use sensor_common::{FlowKey, FlowStats, GlobalCounters, HostStats, family, proto};
use sensor_tests::*;

const A: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 10);
const B: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 20);
const A6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0xa);
const B6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 1, 0, 0, 0, 0xb);

macro_rules! program {
    () => {
        program!(TEST_SIZES)
    };
    ($sizes:expr) => {
        match load_or_skip(module_path!(), $sizes) {
            Some(p) => p,
            None => return,
        }
    };
}

fn pass_all(prog: &mut SensorProgram, frames: &[&Frame]) {
    for f in frames {
        assert_eq!(
            run(prog, &f.bytes),
            XDP_PASS,
            "frame of {} bytes not passed",
            f.bytes.len()
        );
    }
}

/// The single flow in the map, asserting there is exactly one.
fn only_flow(prog: &SensorProgram) -> (FlowKey, FlowStats) {
    let flows = prog.flows().expect("read flow map");
    assert_eq!(flows.len(), 1, "expected exactly one flow, got {flows:#?}");
    flows.into_iter().next().expect("one flow")
}

fn expect_stats(s: &FlowStats, packets: u64, bytes: u64) {
    assert_eq!(
        (s.packets, s.bytes),
        (packets, bytes),
        "packets/bytes of {s:?}"
    );
    assert!(
        s.first_seen_ns > 0 && s.first_seen_ns <= s.last_seen_ns,
        "timestamps of {s:?}"
    );
}

/// Every one of `n` frames is in exactly one class.
fn assert_one_class_each(c: &GlobalCounters, n: u64) {
    assert_eq!(
        c.tcp_packets
            + c.udp_packets
            + c.icmp_packets
            + c.other_ip_packets
            + c.non_ip_packets
            + c.parse_errors,
        n,
        "every frame must land in exactly one class: {c:?}"
    );
}

fn counters(prog: &SensorProgram) -> GlobalCounters {
    prog.counters().expect("read counters")
}

#[test]
fn tcp_ipv4_handshake_and_flags() {
    let mut p = program!();
    let syn = tcp4(A, B, 40000, 443, tcp_flags::SYN, 0);
    let ack = tcp4(A, B, 40000, 443, tcp_flags::ACK, 0);
    let data = tcp4(A, B, 40000, 443, tcp_flags::PSH | tcp_flags::ACK, 500);
    let fin = tcp4(A, B, 40000, 443, tcp_flags::FIN | tcp_flags::ACK, 0);
    let rst = tcp4(A, B, 40000, 443, tcp_flags::RST, 0);
    let synack = tcp4(A, B, 40000, 443, tcp_flags::SYN | tcp_flags::ACK, 0);
    pass_all(&mut p, &[&syn, &ack, &data, &fin, &rst, &synack]);

    let (key, s) = only_flow(&p);
    assert_eq!(key, key4(A, B, 40000, 443, proto::TCP));
    let bytes: usize = [&syn, &ack, &data, &fin, &rst, &synack]
        .iter()
        .map(|f| f.bytes.len())
        .sum();
    expect_stats(&s, 6, bytes as u64);
    assert_eq!(
        (s.syn, s.syn_ack, s.fin, s.rst, s.psh, s.ack_only),
        (1, 1, 1, 1, 1, 1),
        "flag counters of {s:?}"
    );
    assert_eq!(
        (s.min_len as usize, s.max_len as usize),
        (syn.bytes.len(), data.bytes.len())
    );

    // Everything fit in the flow map, so nothing overflowed to the per-host maps.
    assert!(p.dst_hosts().expect("dst hosts").is_empty());
    assert!(p.src_hosts().expect("src hosts").is_empty());

    let c = counters(&p);
    assert_eq!(
        (c.packets, c.tcp_packets, c.ipv4_packets, c.parse_errors),
        (6, 6, 6, 0)
    );
    assert_eq!((c.bytes, c.tcp_bytes), (bytes as u64, bytes as u64));
}

#[test]
fn udp_icmp_and_other_protocols_both_families() {
    let mut p = program!();
    let u4 = udp4(A, B, 5353, 53, 40);
    let u6 = udp6(A6, B6, 5353, 53, 40);
    let e4 = icmp4_echo(A, B, 7, 1);
    let e6 = icmp6_echo(A6, B6, 7, 1);
    let gre = ipv4_proto(A, B, 47);
    pass_all(&mut p, &[&u4, &u4, &u6, &e4, &e6, &gre]);

    let flows = p.flows().expect("flows");
    let get = |k: &FlowKey| {
        flows
            .get(k)
            .copied()
            .unwrap_or_else(|| panic!("missing flow {k:?} in {flows:#?}"))
    };
    expect_stats(
        &get(&key4(A, B, 5353, 53, proto::UDP)),
        2,
        2 * u4.bytes.len() as u64,
    );
    expect_stats(
        &get(&key6(A6, B6, 5353, 53, proto::UDP)),
        1,
        u6.bytes.len() as u64,
    );
    // ICMP: src_port 0, dst_port type << 8 | code (echo request = 8, ICMPv6 = 128).
    expect_stats(
        &get(&key4(A, B, 0, 8 << 8, proto::ICMP)),
        1,
        e4.bytes.len() as u64,
    );
    expect_stats(
        &get(&key6(A6, B6, 0, 128 << 8, proto::ICMPV6)),
        1,
        e6.bytes.len() as u64,
    );
    expect_stats(&get(&key4(A, B, 0, 0, 47)), 1, gre.bytes.len() as u64);
    assert_eq!(flows.len(), 5);

    let c = counters(&p);
    assert_eq!(
        (
            c.packets,
            c.udp_packets,
            c.icmp_packets,
            c.other_ip_packets,
            c.ipv4_packets,
            c.ipv6_packets
        ),
        (6, 3, 2, 1, 4, 2)
    );
}

#[test]
fn vlan_and_qinq_tags_are_looked_through() {
    let mut p = program!();
    let plain = tcp4(A, B, 1234, 80, tcp_flags::SYN, 0);
    let single = with_vlans(&plain, &[(0x8100, 10)]);
    let qinq = with_vlans(&plain, &[(0x88a8, 100), (0x8100, 10)]);
    let old_qinq = with_vlans(&udp6(A6, B6, 1, 2, 0), &[(0x9100, 5), (0x8100, 6)]);
    pass_all(&mut p, &[&plain, &single, &qinq, &old_qinq]);

    let flows = p.flows().expect("flows");
    let tcp = flows
        .get(&key4(A, B, 1234, 80, proto::TCP))
        .expect("tagged TCP folded into one flow");
    expect_stats(
        tcp,
        3,
        (plain.bytes.len() + single.bytes.len() + qinq.bytes.len()) as u64,
    );
    assert_eq!(tcp.syn, 3);
    assert!(
        flows.contains_key(&key6(A6, B6, 1, 2, proto::UDP)),
        "QinQ IPv6 flow: {flows:#?}"
    );
    assert_eq!(flows.len(), 2);
    assert_eq!(counters(&p).parse_errors, 0);
}

#[test]
fn pppoe_sessions_are_looked_through() {
    let mut p = program!();
    let v4 = with_pppoe(&tcp4(A, B, 1234, 443, tcp_flags::SYN, 0), 0x0021);
    let v6 = with_pppoe(&udp6(A6, B6, 5000, 53, 20), 0x0057);
    let lcp = with_pppoe(&udp6(A6, B6, 5000, 53, 20), 0xc021); // PPP LCP: no IP inside
    let tagged = with_vlans(&v4, &[(0x8100, 7)]);
    pass_all(&mut p, &[&v4, &v6, &lcp, &tagged]);
    let flows = p.flows().expect("flows");
    expect_stats(
        flows
            .get(&key4(A, B, 1234, 443, proto::TCP))
            .expect("PPPoE IPv4 flow"),
        2,
        (v4.bytes.len() + tagged.bytes.len()) as u64,
    );
    assert!(
        flows.contains_key(&key6(A6, B6, 5000, 53, proto::UDP)),
        "PPPoE IPv6 flow: {flows:#?}"
    );
    assert_eq!(flows.len(), 2);
    let c = counters(&p);
    assert_eq!((c.non_ip_packets, c.parse_errors), (1, 0));
    for cut in 14..v4.header_len {
        assert_eq!(run(&mut p, &v4.bytes[..cut]), XDP_PASS);
    }
    assert_eq!(counters(&p).parse_errors, (v4.header_len - 14) as u64);
}

#[test]
fn ipv6_extension_headers_are_skipped() {
    let mut p = program!();
    let chain = udp6_ext(
        A6,
        B6,
        1000,
        2000,
        &[
            ext_options(0, 0),
            ext_options(60, 1),
            ext_options(43, 2),
            ext_options(60, 0),
        ],
    );
    let first_frag = udp6_ext(
        A6,
        B6,
        1000,
        2000,
        &[ext_options(0, 0), ext_fragment(0, true)],
    );
    let later_frag = udp6_ext(A6, B6, 1000, 2000, &[ext_fragment(185, false)]);
    pass_all(&mut p, &[&chain, &first_frag, &later_frag]);

    let flows = p.flows().expect("flows");
    let ported = flows
        .get(&key6(A6, B6, 1000, 2000, proto::UDP))
        .expect("ports read behind the chain");
    expect_stats(
        ported,
        2,
        (chain.bytes.len() + first_frag.bytes.len()) as u64,
    );
    let frag = flows
        .get(&key6(A6, B6, 0, 0, proto::UDP))
        .expect("non-first fragment under port 0");
    expect_stats(frag, 1, later_frag.bytes.len() as u64);
    assert_eq!(flows.len(), 2);
    let c = counters(&p);
    assert_eq!((c.fragments, c.udp_packets, c.parse_errors), (1, 3, 0));
}

#[test]
fn ipv4_options_and_fragments() {
    let mut p = program!();
    let opts = udp4_raw(A, B, 111, 222, 0, &[1, 1, 1, 0, 0x94, 4, 0, 0]); // NOP NOP NOP EOL, router alert
    let first = udp4_raw(A, B, 111, 222, 0x2000, &[]); // MF, offset 0
    let later = udp4_raw(A, B, 111, 222, 185, &[]); // offset 185*8, last
    pass_all(&mut p, &[&opts, &first, &later]);

    let flows = p.flows().expect("flows");
    let ported = flows
        .get(&key4(A, B, 111, 222, proto::UDP))
        .expect("ports behind options / first fragment");
    expect_stats(ported, 2, (opts.bytes.len() + first.bytes.len()) as u64);
    let frag = flows
        .get(&key4(A, B, 0, 0, proto::UDP))
        .expect("later fragment under port 0");
    expect_stats(frag, 1, later.bytes.len() as u64);
    assert_eq!(flows.len(), 2);
    assert_eq!(counters(&p).fragments, 1);
}

#[test]
fn arp_is_a_flow_and_other_ethertypes_are_counted() {
    let mut p = program!();
    let req = arp(1, A, B);
    let reply = arp(2, B, A);
    let lldp = non_ip(0x88cc);
    pass_all(&mut p, &[&req, &req, &reply, &lldp]);

    let flows = p.flows().expect("flows");
    let arp_key = |s, t, op| FlowKey {
        src_addr: mapped(s),
        dst_addr: mapped(t),
        dst_port: op,
        family: family::ARP,
        ..FlowKey::default()
    };
    expect_stats(
        flows.get(&arp_key(A, B, 1)).expect("ARP request flow"),
        2,
        2 * req.bytes.len() as u64,
    );
    expect_stats(
        flows.get(&arp_key(B, A, 2)).expect("ARP reply flow"),
        1,
        reply.bytes.len() as u64,
    );
    assert_eq!(flows.len(), 2);
    assert!(
        p.dst_hosts().expect("dst").is_empty(),
        "ARP must not count as IP traffic to a host"
    );
    let c = counters(&p);
    assert_eq!(
        (c.packets, c.non_ip_packets, c.parse_errors, c.ipv4_packets),
        (4, 4, 0, 0)
    );
}

#[test]
fn truncated_at_every_header_offset_is_passed_and_counted_as_parse_error() {
    let mut p = program!();
    let frames = [
        tcp4(A, B, 1, 2, tcp_flags::SYN, 0),
        with_vlans(
            &tcp6(A6, B6, 1, 2, tcp_flags::ACK, 0),
            &[(0x88a8, 1), (0x8100, 2)],
        ),
        udp4_raw(A, B, 1, 2, 0, &[1, 1, 1, 1]),
        udp6_ext(A6, B6, 1, 2, &[ext_options(0, 1), ext_fragment(0, true)]),
        icmp4_echo(A, B, 1, 1),
        icmp6_echo(A6, B6, 1, 1),
        arp(1, A, B),
    ];
    let mut expected_errors = 0;
    for f in &frames {
        // The kernel rejects test frames shorter than an Ethernet header; XDP never sees them.
        for cut in 14..f.header_len {
            assert_eq!(
                run(&mut p, &f.bytes[..cut]),
                XDP_PASS,
                "cut at {cut} of {f:?}"
            );
            expected_errors += 1;
            let c = counters(&p);
            assert_eq!(
                c.parse_errors, expected_errors,
                "cut at {cut} of {:02x?} not a parse error",
                f.bytes
            );
        }
        assert!(
            p.flows().expect("flows").is_empty(),
            "a truncated frame created a flow"
        );
        // The whole header parses.
        assert_eq!(run(&mut p, &f.bytes[..f.header_len]), XDP_PASS);
        assert_eq!(
            counters(&p).parse_errors,
            expected_errors,
            "full header of {f:?} rejected"
        );
        assert_eq!(
            p.flows().expect("flows").len(),
            1,
            "full header of {f:?} made no flow"
        );
        p.reset().expect("reset maps");
        expected_errors = 0;
    }
    let short = aya::programs::TestRun::test_run(
        p.xdp().expect("xdp"),
        aya::programs::TestRunOptions {
            data_in: Some(&[0u8; 13]),
            ..Default::default()
        },
    );
    assert!(
        short.is_err(),
        "the kernel should refuse a 13-byte XDP test frame"
    );
}

#[test]
fn random_garbage_is_passed_and_every_packet_accounted() {
    let mut p = program!(KernelConfig {
        flows: 8192,
        hosts: 8192,
        ..TEST_SIZES
    });
    let mut rng = StdRng::seed_from_u64(0x5e4502);
    let n = 3000u64;
    for i in 0..n {
        let len = rng.random_range(14..=1514);
        let mut f: Vec<u8> = (0..len).map(|_| rng.random()).collect();
        // Steer a third towards IP/VLAN EtherTypes so the deeper parsers see garbage too.
        match i % 6 {
            0 => f[12..14].copy_from_slice(&[0x08, 0x00]),
            1 => f[12..14].copy_from_slice(&[0x86, 0xdd]),
            2 => f[12..14].copy_from_slice(&[0x81, 0x00]),
            _ => {}
        }
        if i % 12 == 0 && len > 14 {
            f[14] = 0x45; // plausible IPv4 version/IHL
        }
        assert_eq!(run(&mut p, &f), XDP_PASS, "garbage frame {i} not passed");
    }
    let c = counters(&p);
    assert_eq!(c.packets, n);
    let overflow: u64 = p
        .dst_hosts()
        .expect("dst")
        .values()
        .map(|h| h.packets)
        .sum();
    assert_one_class_each(&c, n);
    assert!(
        c.parse_errors > 0 && c.ipv4_packets + c.ipv6_packets > 0,
        "garbage exercised too little: {c:?}"
    );
    let flows = p.flows().expect("flows");
    let ip_flow_packets: u64 = flows
        .iter()
        .filter(|(k, _)| k.family != family::ARP)
        .map(|(_, s)| s.packets)
        .sum();
    assert_eq!(
        ip_flow_packets + overflow + c.dst_insert_failures,
        c.tcp_packets + c.udp_packets + c.icmp_packets + c.other_ip_packets,
        "every parsed IP packet is in a flow, in the overflow counters, or counted as lost: {c:?}"
    );
}

#[test]
fn full_flow_map_counts_failures_and_keeps_per_destination_counters() {
    // The map's own overflow path: no cache in front (every packet goes to the map).
    let mut p = program!(KernelConfig {
        flows: 16,
        cache_slots: 0,
        ..TEST_SIZES
    });
    // A spoofed-source SYN flood: 200 sources, one victim.
    let victim = B;
    for i in 0..200u32 {
        let src = Ipv4Addr::from(0x0a00_0000 + i);
        let f = tcp4(src, victim, 1024 + i as u16, 80, tcp_flags::SYN, 0);
        assert_eq!(run(&mut p, &f.bytes), XDP_PASS);
    }
    let c = counters(&p);
    let flows = p.flows().expect("flows");
    assert_eq!(flows.len(), 16, "flow map should be exactly full");
    assert_eq!(
        c.flow_insert_full,
        200 - 16,
        "each refused insert counted as map-full: {c:?}"
    );
    // The 184 packets the flow map refused are counted against their victim instead.
    let d: HostStats = *p
        .dst_hosts()
        .expect("dst")
        .get(&host4(victim))
        .expect("victim still counted");
    assert_eq!(
        (d.packets, d.syn, d.udp),
        (184, 184, 0),
        "per-destination SYNs must survive a full flow map"
    );
    let in_flows: u64 = flows.values().map(|s| s.packets).sum();
    assert_eq!(
        in_flows + d.packets,
        200,
        "each packet counted exactly once"
    );
    let src = p.src_hosts().expect("src");
    assert_eq!(src.len(), 184);
    assert!(src.values().all(|h| h.packets == 1 && h.syn == 1));
    assert_eq!(c.dst_insert_failures + c.src_insert_failures, 0);
}

/// Both clocks stamp flows in the CLOCK_MONOTONIC domain the agent converts from.
#[test]
fn timestamps_follow_the_selected_monotonic_clock() {
    fn now(clock: libc::clockid_t) -> u64 {
        let mut ts = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: valid pointer to a local timespec.
        assert_eq!(unsafe { libc::clock_gettime(clock, &mut ts) }, 0);
        ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
    }
    for coarse in [false, true] {
        let mut p = program!(KernelConfig {
            coarse_time: coarse,
            ..TEST_SIZES
        });
        let clock = if coarse {
            libc::CLOCK_MONOTONIC_COARSE
        } else {
            libc::CLOCK_MONOTONIC
        };
        let before = now(clock);
        let f = udp4(A, B, 1, 2, 10);
        pass_all(&mut p, &[&f]);
        std::thread::sleep(std::time::Duration::from_millis(30));
        pass_all(&mut p, &[&f]);
        let after = now(clock);
        let (_, s) = only_flow(&p);
        assert!(
            before <= s.first_seen_ns && s.last_seen_ns <= after,
            "coarse={coarse}: {s:?} outside [{before}, {after}]"
        );
        assert!(
            s.last_seen_ns - s.first_seen_ns >= 20_000_000,
            "coarse={coarse}: 30 ms gap lost: {s:?}"
        );
    }
}

/// The precise clock opens a flow's slot, the coarse clock (a tick or so behind) moves it on:
/// packets right after the first never put `last_seen` before `first_seen`, and a packet later
/// moves it to within a few ms of its arrival.
#[test]
fn hits_move_last_seen_with_the_coarse_clock_never_before_first_seen() {
    fn clock(id: libc::clockid_t, res: bool) -> u64 {
        let mut ts = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: valid pointer to a local timespec.
        let r = unsafe {
            if res {
                libc::clock_getres(id, &mut ts)
            } else {
                libc::clock_gettime(id, &mut ts)
            }
        };
        assert_eq!(r, 0);
        ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
    }
    let tick = clock(libc::CLOCK_MONOTONIC_COARSE, true);
    let mut p = program!(TEST_SIZES);
    let f = udp4(A, B, 1, 2, 10);
    let before = clock(libc::CLOCK_MONOTONIC, false);
    pass_all(&mut p, &[&f, &f, &f]);
    let (_, s) = only_flow(&p);
    assert_eq!(s.packets, 3);
    assert!(
        before <= s.first_seen_ns && s.first_seen_ns <= s.last_seen_ns,
        "{s:?} (started at {before})"
    );
    std::thread::sleep(std::time::Duration::from_millis(50));
    let sent = clock(libc::CLOCK_MONOTONIC, false);
    pass_all(&mut p, &[&f]);
    let done = clock(libc::CLOCK_MONOTONIC, false);
    let (_, s) = only_flow(&p);
    assert_eq!(s.packets, 4);
    // The coarse clock is the time of the last timekeeping update: a tick behind at most on a
    // busy CPU, measured up to ~1.5 ticks here on a guest whose idle CPUs skip ticks.
    assert!(
        s.last_seen_ns + 3 * tick >= sent && s.last_seen_ns <= done,
        "last_seen {} not within 3 ticks ({tick} ns each) of [{sent}, {done}]",
        s.last_seen_ns
    );
    eprintln!(
        "coarse clock behind the packet's arrival by {:.2} ms (tick {:.1} ms)",
        sent.saturating_sub(s.last_seen_ns) as f64 / 1e6,
        tick as f64 / 1e6
    );
}

/// A million frames made from valid ones and then broken the ways real traffic and attackers
/// break them: random bytes rewritten, cut at a random length, IPv4 IHL and total length
/// lied about, VLAN stacks deeper than the two the parser looks through, IPv6 extension chains
/// longer than its bound. Every one is passed, and every one lands in exactly one class.
#[test]
fn a_million_mutated_frames_are_passed_and_accounted() {
    let mut p = program!(KernelConfig {
        flows: 65_536,
        hosts: 8192,
        ..TEST_SIZES
    });
    let _dispatcher = with_dispatcher(&mut p);
    let (a4, b4) = (Ipv4Addr::new(10, 1, 0, 1), Ipv4Addr::new(10, 1, 0, 2));
    let (a6, b6): (Ipv6Addr, Ipv6Addr) = (
        "2001:db8::1".parse().expect("v6"),
        "2001:db8::2".parse().expect("v6"),
    );
    let long_chain: Vec<(u8, Vec<u8>)> = (0..sensor_common::MAX_IPV6_EXT_HEADERS + 3)
        .map(|i| ext_options(if i == 0 { 0 } else { 60 }, 0))
        .collect();
    let base = udp4(a4, b4, 1000, 53, 32);
    let templates: Vec<Frame> = vec![
        tcp4(a4, b4, 40000, 80, tcp_flags::SYN, 0),
        tcp6(a6, b6, 40000, 443, tcp_flags::ACK, 100),
        base.clone(),
        udp6(a6, b6, 5353, 5353, 64),
        icmp4_echo(a4, b4, 7, 1),
        icmp6_echo(a6, b6, 7, 1),
        udp6_ext(a6, b6, 1, 2, &[ext_options(0, 1), ext_fragment(0, true)]),
        udp6_ext(a6, b6, 1, 2, &long_chain),
        with_vlans(&base, &[(100, 0x8100), (200, 0x8100)]),
        with_vlans(
            &base,
            &[
                (1, 0x88a8),
                (2, 0x8100),
                (3, 0x8100),
                (4, 0x8100),
                (5, 0x8100),
            ],
        ),
        with_pppoe(&base, 0x0021),
        arp(1, a4, b4),
    ];
    let mut rng = StdRng::seed_from_u64(0x0015_0001);
    let n = 1_000_000u64;
    for i in 0..n {
        let t = &templates[(i as usize) % templates.len()];
        let mut f = t.bytes.clone();
        match rng.random_range(0..5u8) {
            // A few bytes rewritten, mostly inside the headers.
            0 => {
                for _ in 0..rng.random_range(1..=4) {
                    let at = rng.random_range(0..f.len().min(96));
                    f[at] = rng.random();
                }
            }
            // Cut short anywhere past the Ethernet header.
            1 => f.truncate(rng.random_range(14..=f.len())),
            // IPv4 header length and total length lied about (where there is an IPv4 header
            // right after Ethernet).
            2 if f[12..14] == [0x08, 0x00] && f.len() > 18 => {
                f[14] = 0x40 | rng.random_range(0..16u8);
                let tl: u16 = rng.random();
                f[16..18].copy_from_slice(&tl.to_be_bytes());
            }
            // Extra bytes after the packet, or a different EtherType under the same body.
            3 => {
                let extra = rng.random_range(0..64);
                f.extend((0..extra).map(|_| rng.random::<u8>()));
                if rng.random_bool(0.3) {
                    let et: u16 = rng.random();
                    f[12..14].copy_from_slice(&et.to_be_bytes());
                }
            }
            // Left as built (deep VLAN stacks and long extension chains are hostile as is).
            _ => {}
        }
        if f.len() < 14 {
            f.resize(14, 0);
        }
        assert_eq!(run(&mut p, &f), XDP_PASS, "frame {i} not passed: {f:02x?}");
    }
    let c = counters(&p);
    assert_eq!(c.packets, n, "{c:?}");
    assert_one_class_each(&c, n);
    eprintln!(
        "1M mutated frames: tcp {} udp {} icmp {} other IP {} non-IP {} parse errors {}",
        c.tcp_packets,
        c.udp_packets,
        c.icmp_packets,
        c.other_ip_packets,
        c.non_ip_packets,
        c.parse_errors
    );
    assert!(
        c.parse_errors > 10_000 && c.tcp_packets > 10_000 && c.non_ip_packets > 10_000,
        "the mutations exercised too little: {c:?}"
    );
    assert_eq!(
        c.blocked_packets + c.rate_limited_packets,
        0,
        "nothing may be dropped"
    );
}
