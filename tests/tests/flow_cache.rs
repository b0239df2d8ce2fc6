//! The per-CPU flow cache in front of the flow map, on crafted frames with
//! `BPF_PROG_TEST_RUN`: flows that share a slot evict each other into the map without losing
//! or doubling a packet; closing an epoch takes the slots' counts exactly once; one flow on
//! two CPUs is two slots the poller adds up.

use std::net::Ipv4Addr;

use sensor::kernel::{DrainBuffers, KernelConfig, SensorProgram};
use sensor_common::{FlowKey, FlowStats, cache_index, family, key_words, proto, v4_mapped};
use sensor_tests::*;

const A: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 10);
const B: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 20);
const SLOTS: u32 = 64;

fn program() -> Option<SensorProgram> {
    load_or_skip(
        "flow_cache",
        KernelConfig {
            cache_slots: SLOTS,
            ..TEST_SIZES
        },
    )
}

fn udp_key(sport: u16) -> FlowKey {
    FlowKey {
        src_addr: v4_mapped(A.octets()),
        dst_addr: v4_mapped(B.octets()),
        src_port: sport,
        dst_port: 53,
        proto: proto::UDP,
        family: family::IPV4,
        _pad: [0; 2],
    }
}

/// Two source ports whose flows share one cache slot.
fn colliding_ports() -> (u16, u16) {
    let first = cache_index(&key_words(&udp_key(1000)), SLOTS);
    let other = (1001..u16::MAX)
        .find(|&p| cache_index(&key_words(&udp_key(p)), SLOTS) == first)
        .expect("a colliding port among 64 slots");
    (1000, other)
}

fn send(p: &mut SensorProgram, sport: u16, n: u32) {
    let f = udp4(A, B, sport, 53, 20);
    for _ in 0..n {
        assert_eq!(run(p, &f.bytes), XDP_PASS);
    }
}

/// Pins the calling thread to `cpu` (test runs execute on the calling CPU).
fn pin(cpu: usize) -> bool {
    // SAFETY: a zeroed cpu_set_t is valid; CPU_SET and sched_setaffinity get valid pointers.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        libc::sched_setaffinity(0, size_of::<libc::cpu_set_t>(), &set) == 0
    }
}

fn total(entries: &[(FlowKey, FlowStats)], key: &FlowKey) -> u64 {
    entries
        .iter()
        .filter(|(k, _)| k == key)
        .map(|(_, s)| s.packets)
        .sum()
}

/// Interleaved packets of two flows in one slot: each packet of one evicts the other into the
/// map. The merged view (map + slots) counts both exactly; the slot holds the last one's
/// latest packets, the map everything flushed before.
#[test]
fn flows_sharing_a_slot_evict_each_other_without_losing_a_packet() {
    let Some(mut p) = program() else { return };
    let (a, b) = colliding_ports();
    for _ in 0..5 {
        send(&mut p, a, 3);
        send(&mut p, b, 2);
    }
    let flows = p.flows().expect("flows");
    assert_eq!(flows[&udp_key(a)].packets, 15, "{flows:#?}");
    assert_eq!(flows[&udp_key(b)].packets, 10, "{flows:#?}");
    assert_eq!(flows[&udp_key(a)].bytes, 15 * (14 + 20 + 8 + 20));

    let mut cached = Vec::new();
    p.take_cache(&mut cached).expect("cache");
    let mut map = DrainBuffers::new(64);
    p.drain_flows(&mut map).expect("drain");
    assert_eq!(
        total(&cached, &udp_key(b)),
        2,
        "the slot holds b's last burst: {cached:?}"
    );
    assert_eq!(total(&cached, &udp_key(a)), 0, "a was evicted");
    assert_eq!(total(&map.entries, &udp_key(a)), 15, "a's bursts, flushed");
    assert_eq!(total(&map.entries, &udp_key(b)), 8, "b's first four bursts");
}

/// Closing an epoch hands its counts over once: packets after it start the next epoch's
/// slot, and what was taken is never taken again.
#[test]
fn an_epoch_closed_during_traffic_hands_each_count_over_once() {
    let Some(mut p) = program() else { return };
    let mut seen = 0;
    for round in 1..=4u32 {
        send(&mut p, 4000, round);
        let mut cached = Vec::new();
        p.take_cache(&mut cached).expect("cache");
        let mut map = DrainBuffers::new(64);
        p.drain_flows(&mut map).expect("drain");
        let got = total(&cached, &udp_key(4000)) + total(&map.entries, &udp_key(4000));
        assert_eq!(got, u64::from(round), "round {round}");
        seen += got;
        assert!(
            p.flows().expect("flows").is_empty(),
            "nothing left after the poll"
        );
    }
    assert_eq!(seen, 10);
    assert_eq!(p.counters().expect("counters").packets, 10);
}

/// One flow on two CPUs: each CPU's slot holds its share; the merged view adds them.
#[test]
fn a_flow_on_two_cpus_is_two_slots_added_up() {
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    if cpus < 2 {
        skip("a_flow_on_two_cpus", "one CPU");
        return;
    }
    let Some(mut p) = program() else { return };
    // A thread of its own, so the pinning ends with it.
    let (cached, merged) = std::thread::scope(|s| {
        s.spawn(|| {
            assert!(pin(0), "pin to CPU 0");
            send(&mut p, 5000, 3);
            assert!(pin(1), "pin to CPU 1");
            send(&mut p, 5000, 4);
            let merged = p.flows().expect("flows")[&udp_key(5000)].packets;
            let mut cached = Vec::new();
            p.take_cache(&mut cached).expect("cache");
            (cached, merged)
        })
        .join()
        .expect("pinned thread")
    });
    assert_eq!(merged, 7);
    let shares: Vec<u64> = cached
        .iter()
        .filter(|(k, _)| *k == udp_key(5000))
        .map(|(_, s)| s.packets)
        .collect();
    assert_eq!(shares.len(), 2, "one slot per CPU: {cached:?}");
    assert_eq!(shares.iter().sum::<u64>(), 7);
}
