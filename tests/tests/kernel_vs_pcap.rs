//! The kernel path and the pcap fallback must see the same traffic the same way: every frame
//! runs through the XDP program (`BPF_PROG_TEST_RUN`) and through the userspace parser, and the
//! per-directional-key counters and the per-class counters must be identical.

use std::collections::BTreeMap;

use rand::{Rng as _, SeedableRng as _, rngs::StdRng};
use sensor::{
    kernel::{KernelConfig, SensorProgram},
    packet::{Outcome, parse_ethernet},
    source::pcap::{LinkLayer, open_file},
};
use sensor_common::{FlowKey, family};
use sensor_tests::{XDP_PASS, load_or_skip, run, with_dispatcher};

/// What the userspace parser makes of a set of frames, in the kernel map's terms.
/// Per flow: packets, bytes, SYN, SYN-ACK, FIN, RST, sum of squared frame lengths.
type Counts = (u64, u64, u32, u32, u32, u32, u64);

#[derive(Default)]
struct Expected {
    flows: BTreeMap<FlowKey, Counts>,
    non_ip: u64,
    errors: u64,
}

fn expect(frames: &[Vec<u8>]) -> Expected {
    let mut e = Expected::default();
    for f in frames {
        match parse_ethernet(f) {
            Outcome::Flow(p) => {
                let s = e.flows.entry(p.key).or_default();
                let fl = p.tcp_flags;
                s.0 += 1;
                s.1 += f.len() as u64;
                s.2 += u32::from(fl & 0x12 == 0x02);
                s.3 += u32::from(fl & 0x12 == 0x12);
                s.4 += u32::from(fl & 0x01 != 0);
                s.5 += u32::from(fl & 0x04 != 0);
                s.6 += (f.len() as u64).pow(2);
                if p.key.family == family::ARP {
                    e.non_ip += 1;
                }
            }
            Outcome::NonIp => e.non_ip += 1,
            Outcome::Error => e.errors += 1,
        }
    }
    e
}

fn compare(what: &str, prog: &mut SensorProgram, frames: &[Vec<u8>]) {
    prog.reset().expect("reset maps");
    for (i, f) in frames.iter().enumerate() {
        assert_eq!(run(prog, f), XDP_PASS, "{what}: frame {i} not passed");
    }
    let want = expect(frames);
    let got: BTreeMap<FlowKey, Counts> = prog
        .flows()
        .expect("flows")
        .into_iter()
        .map(|(k, s)| {
            (
                k,
                (s.packets, s.bytes, s.syn, s.syn_ack, s.fin, s.rst, s.len_sq),
            )
        })
        .collect();
    let c = prog.counters().expect("counters");
    assert_eq!(
        c.flow_insert_full + c.flow_insert_other,
        0,
        "{what}: flow map too small for the test"
    );
    if got != want.flows {
        let only_k: Vec<_> = got
            .iter()
            .filter(|(k, v)| want.flows.get(k) != Some(v))
            .collect();
        let only_u: Vec<_> = want
            .flows
            .iter()
            .filter(|(k, v)| got.get(k) != Some(v))
            .collect();
        panic!(
            "{what}: {} kernel keys and {} userspace keys differ (kernel {} keys, userspace {})\n\
             kernel: {:#?}\nuserspace: {:#?}",
            only_k.len(),
            only_u.len(),
            got.len(),
            want.flows.len(),
            &only_k[..only_k.len().min(5)],
            &only_u[..only_u.len().min(5)]
        );
    }
    assert_eq!(
        (c.non_ip_packets, c.parse_errors),
        (want.non_ip, want.errors),
        "{what}: class counters"
    );
    assert_eq!(c.packets, frames.len() as u64);
}

#[test]
fn kernel_and_fallback_agree_on_real_captures() {
    let Some(dir) = sensor_tests::corpora() else {
        sensor_tests::skip(
            "kernel_and_fallback_agree_on_real_captures",
            "../shared/corpora is absent",
        );
        return;
    };
    let Some(mut prog) = load_or_skip(
        "kernel_vs_pcap",
        KernelConfig {
            flows: 65_536,
            ..KernelConfig::default()
        },
    ) else {
        return;
    };
    let _dispatcher = with_dispatcher(&mut prog);
    // VLAN/QinQ, IPv6 with extension headers and fragments, tunnels, ARP, TCP life cycles.
    let files = [
        "ndpi/pcap/4in4tunnel.pcap",
        "ndpi/pcap/6in6tunnel.pcap",
        "ndpi/pcap/bot.pcap",
        "ndpi/pcap/cpha.pcap",
        "ndpi/pcap/dns_fragmented.pcap",
        "ndpi/pcap/1kxun.pcap",
        "ndpi/pcap/ip_fragmented_garbage.pcap",
        "ndpi/pcap/discord_mid_flow.pcap",
        "generated/nmap_sn_sweep_arp.pcap",
        "generated/nmap_sS_top1000.pcap",
        "zeek/wikipedia.pcap",
    ];
    let mut checked = 0;
    for f in files {
        let path = dir.join(f);
        if !path.is_file() {
            continue;
        }
        let (mut cap, link) = open_file(&path).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            link,
            LinkLayer::Ethernet,
            "{f}: the kernel path sees Ethernet frames"
        );
        let mut frames = Vec::new();
        while let Ok(p) = cap.next_packet() {
            // BPF_PROG_TEST_RUN refuses frames under 14 bytes and over a page.
            if (14..=3500).contains(&p.data.len()) {
                frames.push(p.data.to_vec());
            }
        }
        assert!(!frames.is_empty(), "{f}: no frames");
        compare(f, &mut prog, &frames);
        checked += 1;
    }
    assert!(
        checked >= 8,
        "only {checked} captures found under {}",
        dir.display()
    );
}

#[test]
fn kernel_and_fallback_agree_on_random_frames() {
    let Some(mut prog) = load_or_skip(
        "kernel_vs_pcap",
        KernelConfig {
            flows: 65_536,
            ..KernelConfig::default()
        },
    ) else {
        return;
    };
    let _dispatcher = with_dispatcher(&mut prog);
    let mut rng = StdRng::seed_from_u64(0xd1ff);
    let mut frames = Vec::new();
    for i in 0..20_000u32 {
        let len = rng.random_range(14..=200);
        let mut f: Vec<u8> = (0..len).map(|_| rng.random()).collect();
        // Bias towards the interesting EtherTypes and header shapes.
        let et: [u8; 2] = match i % 8 {
            0 | 1 => [0x08, 0x00],
            2 | 3 => [0x86, 0xdd],
            4 => [0x81, 0x00],
            6 if i % 16 == 6 => [0x88, 0x64],
            5 => [0x08, 0x06],
            _ => [f[12], f[13]],
        };
        f[12..14].copy_from_slice(&et);
        if len > 20 && i % 2 == 0 {
            f[14] = if et == [0x86, 0xdd] {
                0x60
            } else {
                0x45 + (i % 3) as u8
            };
        }
        if len > 20 && i % 8 == 4 {
            f[16..18].copy_from_slice(&[0x08, 0x00]);
            f[18] = 0x45;
        }
        frames.push(f);
    }
    compare("random frames", &mut prog, &frames);
}
