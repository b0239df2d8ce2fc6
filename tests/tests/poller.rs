//! The live path end to end at the library level: XDP on a veth counts real traffic, the poller
//! drains the kernel maps into the flow table, and what comes out matches what was sent.

use std::{
    net::Ipv4Addr,
    time::{SystemTime, UNIX_EPOCH},
};

use aya::programs::XdpMode;
use sensor::{
    flow::{Flow, FlowConfig, FlowTable},
    kernel::{KernelConfig, Poller},
};
use sensor_common::proto;
use sensor_tests::{
    TEST_SIZES, XDP_PASS, host4, load_or_skip, netns::VethPair, run, tcp_flags, tcp4,
    with_dispatcher,
};

fn unix_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_nanos() as u64
}

#[test]
fn poller_merges_kernel_deltas_into_flows_across_polls() {
    let Some(mut prog) = load_or_skip("poller", TEST_SIZES) else {
        return;
    };
    let lab = VethPair::create();
    prog.xdp()
        .expect("program")
        .attach(lab.local, XdpMode::Skb)
        .expect("attach to the test veth");
    let mut table = FlowTable::new(FlowConfig::default());
    let mut poller = Poller::new();
    let mut finished: Vec<Flow> = Vec::new();

    let before = unix_ns();
    lab.peer
        .send_udp(lab.peer_addr, lab.local_addr, 40001, 9999, 25, 100);
    let ping = lab.peer.exec(&[
        "ping",
        "-c",
        "3",
        "-i",
        "0.05",
        "-q",
        &lab.local_addr.to_string(),
    ]);
    assert!(ping.contains("3 received"), "{ping}");
    let s1 = poller
        .poll(&mut prog, &mut table, &mut |f| finished.push(f))
        .expect("first poll");
    assert!(
        s1.packets >= 28,
        "first poll drained {} packets",
        s1.packets
    );
    assert!(
        prog.flows().expect("flows").is_empty(),
        "a poll must leave the kernel flow map empty"
    );
    assert!(
        poller.batched(),
        "this kernel (>= 5.6) supports batch lookup-and-delete"
    );

    lab.peer
        .send_udp(lab.peer_addr, lab.local_addr, 40001, 9999, 10, 100);
    let s2 = poller
        .poll(&mut prog, &mut table, &mut |f| finished.push(f))
        .expect("second poll");
    let after = unix_ns();
    assert!(s2.packets >= 10);
    assert!(
        finished.is_empty(),
        "nothing may finish within seconds: {finished:?}"
    );

    let udp = table
        .active()
        .find(|f| f.proto == proto::UDP && f.dst_port == 9999)
        .unwrap_or_else(|| panic!("UDP flow missing"));
    assert_eq!(
        udp.src,
        std::net::IpAddr::V4(lab.peer_addr),
        "the sender is the source"
    );
    assert_eq!(
        (udp.fwd.packets, udp.fwd.bytes, udp.rev.packets),
        (35, 35 * 142, 0),
        "merged across polls"
    );
    assert!(
        before <= udp.first_seen_ns && udp.last_seen_ns <= after,
        "kernel times converted to Unix time"
    );
    assert!(udp.last_seen_ns > udp.first_seen_ns);

    let icmp = table
        .active()
        .find(|f| f.proto == proto::ICMP)
        .expect("ICMP flow");
    assert_eq!(
        (icmp.fwd.packets, icmp.echo_requests, icmp.dst_port),
        (3, 3, 8 << 8)
    );
    assert_eq!(
        s2.counters.packets,
        s1.counters.packets + s2.counters_delta.packets
    );
}

/// The flow map's own overflow path, without the cache in front (every packet to the map).
#[test]
fn overflow_counters_reach_userspace_and_the_map_refills_after_a_drain() {
    let Some(mut prog) = load_or_skip(
        "poller",
        KernelConfig {
            flows: 16,
            cache_slots: 0,
            ..TEST_SIZES
        },
    ) else {
        return;
    };
    let _d = with_dispatcher(&mut prog);
    let mut table = FlowTable::new(FlowConfig::default());
    let mut poller = Poller::new();
    let victim = Ipv4Addr::new(198, 51, 100, 7);
    let flood = |prog: &mut sensor::kernel::SensorProgram, base: u32| {
        for i in 0..200u32 {
            let f = tcp4(
                Ipv4Addr::from(0x0a00_0000 + base + i),
                victim,
                2000,
                80,
                tcp_flags::SYN,
                0,
            );
            assert_eq!(run(prog, &f.bytes), XDP_PASS);
        }
    };
    for round in 0..2u32 {
        flood(&mut prog, round * 1000);
        let s = poller
            .poll(&mut prog, &mut table, &mut |_| {})
            .expect("poll");
        assert_eq!(
            s.entries, 16,
            "round {round}: the drained map takes 16 new flows again"
        );
        let d = s
            .dst_overflow
            .iter()
            .find(|(k, _)| *k == host4(victim))
            .expect("victim in overflow");
        assert_eq!((d.1.packets, d.1.syn), (184, 184), "round {round}");
        assert_eq!(s.counters_delta.flow_insert_full, 184);
    }
    assert_eq!(table.len(), 32);
}

/// With the cache in front: a spoofed flood of far more sources than the cache has slots
/// evicts flows into a 16-entry map, which fills; what it refuses is counted per victim. Every
/// packet is in exactly one place across two polls: a flow (from the map or a slot) or the
/// victim's overflow counters.
#[test]
fn a_flood_through_the_cache_fills_the_map_and_stays_counted_per_victim() {
    let Some(mut prog) = load_or_skip(
        "poller",
        KernelConfig {
            flows: 16,
            cache_slots: 64,
            ..TEST_SIZES
        },
    ) else {
        return;
    };
    let _d = with_dispatcher(&mut prog);
    let mut table = FlowTable::new(FlowConfig::default());
    let mut poller = Poller::new();
    let victim = Ipv4Addr::new(198, 51, 100, 7);
    let n = 2_000u32;
    for round in 0..2u32 {
        for i in 0..n {
            let f = tcp4(
                Ipv4Addr::from(0x0a00_0000 + round * 10_000 + i),
                victim,
                2000,
                80,
                tcp_flags::SYN,
                0,
            );
            assert_eq!(run(&mut prog, &f.bytes), XDP_PASS);
        }
        let s = poller
            .poll(&mut prog, &mut table, &mut |_| {})
            .expect("poll");
        let over: u64 = s
            .dst_overflow
            .iter()
            .filter(|(k, _)| *k == host4(victim))
            .map(|(_, h)| h.packets)
            .sum();
        assert!(
            over > 0,
            "round {round}: the map filled, the victim counted"
        );
        assert_eq!(
            s.packets + over,
            u64::from(n),
            "round {round}: each packet in a flow or in the victim's overflow ({} in flows)",
            s.packets
        );
        assert!(
            s.counters_delta.flow_insert_full > 0,
            "round {round}: {:?}",
            s.counters_delta
        );
        assert!(s.entries > 16, "slots add flows beyond the map's 16");
    }
}

/// The libpcap fallback on a live interface (where XDP could not attach) feeds the same table.
#[test]
fn live_pcap_capture_feeds_the_same_flow_table() {
    if load_or_skip("live pcap", TEST_SIZES).is_none() {
        return; // same privileges needed (raw sockets in a namespace)
    }
    let lab = VethPair::create();
    let (mut cap, link) = sensor::source::pcap::open_live(lab.local, 256)
        .expect("open live capture on the test veth");
    let mut table = FlowTable::new(FlowConfig::default());
    let done = std::sync::atomic::AtomicBool::new(false);
    let st = std::thread::scope(|s| {
        let reader = s.spawn(|| {
            let mut sink = sensor::source::pcap::TableSink {
                table: &mut table,
                out: |_| {},
            };
            sensor::source::pcap::feed(
                &mut cap,
                link,
                &mut sink,
                |_| {},
                || done.load(std::sync::atomic::Ordering::Relaxed),
            )
        });
        std::thread::sleep(std::time::Duration::from_millis(200));
        lab.peer
            .send_udp(lab.peer_addr, lab.local_addr, 40002, 9998, 20, 64);
        std::thread::sleep(std::time::Duration::from_millis(300));
        done.store(true, std::sync::atomic::Ordering::Relaxed);
        reader.join().expect("capture thread")
    });
    assert!(st.packets >= 20, "{st:?}");
    let udp = table
        .active()
        .find(|f| f.dst_port == 9998)
        .expect("UDP flow from the live capture");
    assert_eq!(
        (udp.fwd.packets, udp.fwd.bytes),
        (20, 20 * (14 + 20 + 8 + 64))
    );
    assert!(
        udp.iat_us.n == 19,
        "per-packet inter-arrival times on the pcap path"
    );
}
