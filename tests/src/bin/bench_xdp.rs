//! `cargo xtask bench-xdp`: ns/packet of the sensor's XDP program and of an empty `XDP_PASS`
//! program, both measured with `BPF_PROG_TEST_RUN` in the same run over the same corpus of
//! distinct flows (mixed TCP/UDP/ICMP, IPv4/IPv6).
//!
//! Each frame is run `--repeat` times in one syscall (a burst of one flow: the first run of the
//! first round inserts the flow, the rest update it); rounds walk the whole corpus so the maps
//! hold every flow, as on a busy gateway. The kernel reports whole ns per run, so the average is
//! taken over every call, weighted by its repeat count.
//!
//! Then the same with mitigation on: `--blocklist N` (default 10,000) prefixes in the kernel
//! blocklist that no corpus packet matches (what every benign packet pays while a mitigation
//! is in force), and with two more entries that block every corpus source (the drop path).
//! Last, evidence recording: watched addresses no packet has, then every packet copied.

use std::{
    net::{Ipv4Addr, Ipv6Addr},
    time::Duration,
};

use anyhow::{Context as _, bail};
use aya::{
    programs::{TestRun as _, TestRunOptions, Xdp, XdpMode},
    test_helpers::NetNsGuard,
};
use sensor::kernel::{KernelConfig, SensorProgram};
use sensor_tests::{
    Frame, XDP_PASS, icmp4_echo, icmp6_echo, netns::sh, tcp_flags, tcp4, tcp6, udp4, udp6,
};

struct Args {
    flows: usize,
    repeat: u32,
    rounds: usize,
    coarse: bool,
    cache_slots: u32,
    blocklist: u32,
    /// The three comparable shapes first (hit, 4,096 x 256, cold), each beside the empty
    /// program.
    shapes: bool,
    /// Another XDP program (`OBJECT.o[:PROGRAM]`) run through the same shapes' frames, beside
    /// the sensor: a peer's flow program, or an older build of this one.
    peer: Option<(String, Option<String>)>,
    /// `NAME=VALUE` globals set in the peer's object before it loads (its configuration).
    peer_globals: Vec<(String, u32)>,
}

fn parse_args() -> anyhow::Result<Args> {
    let mut a = Args {
        flows: 65_536,
        repeat: 16,
        rounds: 3,
        coarse: false,
        cache_slots: sensor_common::DEFAULT_CACHE_SLOTS,
        blocklist: 10_000,
        shapes: false,
        peer: None,
        peer_globals: Vec::new(),
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        if flag == "--coarse-time" {
            a.coarse = true;
            continue;
        }
        if flag == "--shapes" {
            a.shapes = true;
            continue;
        }
        let value = it.next().with_context(|| format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--flows" => a.flows = value.parse().context("--flows")?,
            "--repeat" => a.repeat = value.parse().context("--repeat")?,
            "--rounds" => a.rounds = value.parse().context("--rounds")?,
            "--cache-slots" => a.cache_slots = value.parse().context("--cache-slots")?,
            "--blocklist" => a.blocklist = value.parse().context("--blocklist")?,
            "--peer" => {
                let (obj, prog) = match value.rsplit_once(':') {
                    Some((o, p)) => (o.to_owned(), Some(p.to_owned())),
                    None => (value.clone(), None),
                };
                a.peer = Some((obj, prog));
                a.shapes = true;
            }
            "--peer-global" => {
                let (k, v) = value
                    .split_once('=')
                    .context("--peer-global takes NAME=VALUE")?;
                a.peer_globals.push((
                    k.to_owned(),
                    v.parse().context("--peer-global value (u32)")?,
                ));
            }
            other => bail!(
                "unknown option {other} (known: --flows N --repeat N --rounds N --cache-slots N \
                 --blocklist N --coarse-time --shapes --peer OBJECT.o[:PROGRAM] \
                 --peer-global NAME=VALUE)"
            ),
        }
    }
    if a.flows == 0 || a.repeat == 0 || a.rounds == 0 {
        bail!("--flows, --repeat and --rounds must be positive");
    }
    Ok(a)
}

/// `n` frames, each of a distinct flow: 2,048 clients talking to 64 servers, a mix of
/// TCP (50%), UDP (30%) and ICMP echo (20%), one third IPv6.
fn corpus(n: usize) -> Vec<Frame> {
    (0..n)
        .map(|i| {
            let client = (i % 2048) as u32;
            let server = ((i / 2048) % 64) as u32;
            let sport = 1024 + (i / (2048 * 64)) as u16;
            let dport = [80, 443, 53, 8080, 22][i % 5];
            let c4 = Ipv4Addr::from(0x0a10_0000 + client);
            let s4 = Ipv4Addr::from(0xc633_6400 + server);
            let c6 = Ipv6Addr::new(
                0x2001,
                0xdb8,
                1,
                0,
                0,
                0,
                (client >> 16) as u16,
                client as u16,
            );
            let s6 = Ipv6Addr::new(0x2001, 0xdb8, 2, 0, 0, 0, 0, server as u16);
            let v6 = i % 3 == 2;
            match (i % 10, v6) {
                (0..=4, false) => tcp4(c4, s4, sport, dport, tcp_flags::ACK | tcp_flags::PSH, 64),
                (0..=4, true) => tcp6(c6, s6, sport, dport, tcp_flags::ACK | tcp_flags::PSH, 64),
                (5..=7, false) => udp4(c4, s4, sport, dport, 48),
                (5..=7, true) => udp6(c6, s6, sport, dport, 48),
                (_, false) => icmp4_echo(c4, s4, sport, i as u16),
                (_, true) => icmp6_echo(c6, s6, sport, i as u16),
            }
        })
        .collect()
}

/// Mean ns per packet over `rounds` passes of the corpus; every run must give `verdict`.
/// The evidence ring is drained every 64 frames (outside the timed runs), as the agent does
/// every poll, so a recording run measures the copy and not a full ring.
fn measure(
    prog: &mut SensorProgram,
    baseline: bool,
    frames: &[Frame],
    repeat: u32,
    rounds: usize,
    verdict: u32,
) -> anyhow::Result<f64> {
    let mut total = Duration::ZERO;
    let mut packets = 0u64;
    for _ in 0..rounds {
        for chunk in frames.chunks(64) {
            let xdp: &Xdp = if baseline {
                prog.baseline()?
            } else {
                prog.xdp()?
            };
            for f in chunk {
                let r = xdp
                    .test_run(TestRunOptions {
                        data_in: Some(&f.bytes),
                        repeat,
                        ..TestRunOptions::default()
                    })
                    .context("BPF_PROG_TEST_RUN")?;
                if r.return_value != verdict {
                    bail!("program returned {} instead of {verdict}", r.return_value);
                }
                total += r.duration * repeat;
                packets += u64::from(repeat);
            }
            prog.drain_evidence(|_| ());
        }
    }
    Ok(total.as_nanos() as f64 / packets as f64)
}

const XDP_DROP: u32 = 1;

/// Three alternating trials of the sensor and the empty program (drift in machine load hits
/// both alike); the medians.
fn trials(
    prog: &mut SensorProgram,
    frames: &[Frame],
    args: &Args,
    name: &str,
    verdict: u32,
) -> anyhow::Result<(f64, f64)> {
    let mut sensor_ns = Vec::new();
    let mut empty_ns = Vec::new();
    for trial in 0..3 {
        prog.reset().context("resetting maps")?;
        empty_ns.push(measure(
            prog,
            true,
            frames,
            args.repeat,
            args.rounds,
            XDP_PASS,
        )?);
        sensor_ns.push(measure(
            prog,
            false,
            frames,
            args.repeat,
            args.rounds,
            verdict,
        )?);
        println!(
            "trial {trial}: {name}={:.2} ns/pkt empty={:.2} ns/pkt",
            sensor_ns[trial], empty_ns[trial]
        );
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    Ok((median(&mut sensor_ns), median(&mut empty_ns)))
}

/// `n` blocklist entries outside the corpus's addresses: IPv4 /32s and /24s in 100.64.0.0/10
/// and IPv6 /64s in 2001:db8:ff00::/40 (a mix as alerts and operators would leave), spread by
/// a fixed LCG so runs compare.
fn fill_blocklist(prog: &mut SensorProgram, n: u32) -> anyhow::Result<()> {
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    for i in 0..n {
        x = x
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        let r = (x >> 24) as u32;
        match i % 4 {
            0 => {
                let a = Ipv4Addr::from(0x6440_0000 | (r & 0x003f_ff00));
                prog.block(a.to_ipv6_mapped().octets(), 96 + 24, 0)?;
            }
            1 => {
                let seg = (r >> 8) as u16;
                let a = Ipv6Addr::new(0x2001, 0xdb8, 0xff00 | (r & 0xff) as u16, seg, 0, 0, 0, 0);
                prog.block(a.octets(), 64, 0)?;
            }
            _ => {
                let a = Ipv4Addr::from(0x6440_0000 | (r & 0x003f_ffff));
                prog.block(a.to_ipv6_mapped().octets(), 128, 0)?;
            }
        }
    }
    let held = prog.blocklist()?.len();
    println!("blocklist: {held} entries (of {n} inserted; duplicates collapse)");
    Ok(())
}

fn main() -> anyhow::Result<()> {
    let args = parse_args()?;
    let frames = corpus(args.flows);
    let sizes = KernelConfig {
        flows: (args.flows as u32).next_power_of_two().max(262_144),
        hosts: 65_536,
        coarse_time: args.coarse,
        cache_slots: args.cache_slots,
        block_entries: (args.blocklist + 16).max(sensor_common::DEFAULT_BLOCK_ENTRIES),
        watch_entries: 256,
        ..KernelConfig::default()
    };
    let mut prog = SensorProgram::load(sizes).context("loading the sensor (run as root)")?;
    // BPF_PROG_TEST_RUN adds an XDP program to the kernel's XDP dispatcher for each call and
    // removes it after, paying an RCU grace period (milliseconds) per call unless the program
    // is already there. Attaching both programs in driver mode to a veth pair that is down, in
    // a namespace of our own, keeps them in the dispatcher; no packet ever reaches them.
    let _netns = NetNsGuard::new().context("creating a private network namespace")?;
    sh(&[
        "ip", "link", "add", "bench0", "type", "veth", "peer", "name", "bench1",
    ]);
    prog.xdp()?
        .attach("bench0", XdpMode::Driver)
        .context("attaching the sensor to bench0")?;
    prog.baseline()?
        .attach("bench1", XdpMode::Driver)
        .context("attaching the baseline to bench1")?;
    if args.peer.is_some() {
        sh(&[
            "ip", "link", "add", "bench2", "type", "veth", "peer", "name", "bench3",
        ]);
    }
    println!(
        "corpus: {} distinct flows, {} rounds x repeat {} = {} packets per program, {} clock, flow cache {}",
        frames.len(),
        args.rounds,
        args.repeat,
        frames.len() as u64 * args.rounds as u64 * u64::from(args.repeat),
        if args.coarse { "coarse" } else { "precise" },
        match prog.config().cache_slots {
            0 => "off".to_owned(),
            n => format!("{n} slots per CPU"),
        }
    );

    if args.shapes {
        shapes(&mut prog, &args)?;
    }
    let (s, e) = trials(&mut prog, &frames, &args, "sensor", XDP_PASS)?;
    let flows = prog.flows()?.len();
    let c = prog.counters()?;
    if flows != frames.len() || c.flow_insert_full + c.flow_insert_other != 0 {
        bail!(
            "sensor kept {flows} of {} flows ({c:?}); the measurement is not of a full corpus",
            frames.len()
        );
    }
    println!("flow map after run: {flows} flows, 0 insert failures");
    println!(
        "one core at {s:.1} ns/packet: {:.1} Mpps (10 GbE line rate at 64-byte frames: 14.9 Mpps)",
        1e3 / s
    );
    println!("xdp ns/pkt: sensor={s:.2} empty={e:.2} ratio={:.2}", s / e);
    if args.blocklist == 0 {
        return Ok(());
    }

    // Mitigation in force: N prefixes that no corpus packet matches.
    let n = args.blocklist;
    fill_blocklist(&mut prog, n)?;
    prog.set_gates(sensor_common::gates::BLOCKLIST)?;
    let name = format!("sensor+blocklist{n}");
    let (s, e) = trials(&mut prog, &frames, &args, &name, XDP_PASS)?;
    if prog.counters()?.blocked_packets != 0 {
        bail!("the blocklist dropped corpus packets it must not match");
    }
    println!("xdp ns/pkt: {name}={s:.2} empty={e:.2} ratio={:.2}", s / e);
    // ... and two more that block every corpus source: the drop path.
    prog.block(
        Ipv4Addr::new(10, 16, 0, 0).to_ipv6_mapped().octets(),
        96 + 16,
        0,
    )?;
    prog.block(
        Ipv6Addr::new(0x2001, 0xdb8, 1, 0, 0, 0, 0, 0).octets(),
        48,
        0,
    )?;
    let name = format!("sensor+blocklist{n}-dropping");
    let (s, e) = trials(&mut prog, &frames, &args, &name, XDP_DROP)?;
    println!("xdp ns/pkt: {name}={s:.2} empty={e:.2} ratio={:.2}", s / e);
    evidence(&mut prog, &frames, &args)
}

/// The shapes a flow program is compared on, each with the empty program beside it: one flow
/// repeated (every packet a hit of an established flow), 4,096 flows x 256 packets (bursts),
/// and cold (200,000 flows, each packet the first of its flow). Another flow program run
/// through the same frames the same way (`BPF_PROG_TEST_RUN`, the same repeat counts) gives
/// figures to set beside these (docs/BENCHMARKS.md, "Comparing another flow program").
fn shapes(prog: &mut SensorProgram, args: &Args) -> anyhow::Result<()> {
    for (name, flows, repeat, rounds) in [
        ("hit (1 flow x 4096, 64 rounds)", 1, 4096, 64),
        ("burst (4096 flows x 256)", 4096, 256, 1),
        ("cold (200000 flows x 1)", 200_000, 1, 1),
    ] {
        let frames = corpus(flows);
        let a = Args {
            repeat,
            rounds,
            peer: None,
            peer_globals: Vec::new(),
            ..*args
        };
        let (s, e) = trials(prog, &frames, &a, "sensor", XDP_PASS)?;
        let kept = prog.flows()?.len();
        if kept != flows {
            bail!("{name}: the flow map holds {kept} of {flows} flows");
        }
        println!(
            "shape {name}: sensor={s:.2} empty={e:.2} ns/pkt ratio={:.2}; {:.1} Mpps per core",
            s / e,
            1e3 / s
        );
        if let Some((obj, p)) = &args.peer {
            let mut ns = Vec::new();
            for _ in 0..3 {
                ns.push(peer_run(
                    prog,
                    (obj, p.as_deref()),
                    &args.peer_globals,
                    &frames,
                    repeat,
                    rounds,
                )?);
            }
            ns.sort_by(f64::total_cmp);
            let pn = ns[1];
            println!(
                "shape {name}: peer={pn:.2} empty={e:.2} ns/pkt ratio={:.2}; {:.1} Mpps per core; peer/sensor={:.2}",
                pn / e,
                1e3 / pn,
                pn / s
            );
        }
    }
    Ok(())
}

/// Mean ns per packet of another program over the frames: an XDP program (kept in the
/// dispatcher on a down veth of its own for the run) or a TC classifier (netobserv-ebpf-agent's
/// flow program is one; its test run needs no attachment), loaded fresh (empty maps) from its
/// object file; the loop is the sensor's (`measure`), its ring drain every 64 frames included.
fn peer_run(
    sensor: &mut SensorProgram,
    (obj, name): (&str, Option<&str>),
    globals: &[(String, u32)],
    frames: &[Frame],
    repeat: u32,
    rounds: usize,
) -> anyhow::Result<f64> {
    use aya::programs::{Program, SchedClassifier};
    // Maps a peer pins (netobserv pins some by name) go to a bpffs of this run's own, mounted
    // for this load and unmounted after (its pins go with it, so every trial starts empty).
    struct BpfFs(std::path::PathBuf);
    impl Drop for BpfFs {
        fn drop(&mut self) {
            let _ignored = std::process::Command::new("umount").arg(&self.0).status();
            let _ignored = std::fs::remove_dir(&self.0);
        }
    }
    let pins =
        BpfFs(std::env::temp_dir().join(format!("sensor-bench-bpffs-{}", std::process::id())));
    std::fs::create_dir_all(&pins.0)?;
    sh(&[
        "mount",
        "-t",
        "bpf",
        "bpf",
        pins.0.to_str().context("temp path")?,
    ]);
    let mut loader = aya::EbpfLoader::new();
    loader.default_map_pin_directory(&pins.0);
    for (k, v) in globals {
        loader.override_global(k.as_str(), v, true);
    }
    let mut ebpf = loader
        .load_file(obj)
        .with_context(|| format!("loading {obj}"))?;
    let name = match name {
        Some(n) => n.to_owned(),
        None => ebpf
            .programs()
            .find(|(_, p)| matches!(p, Program::Xdp(_)))
            .map(|(n, _)| n.to_owned())
            .with_context(|| format!("{obj} has no XDP program: name one (OBJECT.o:PROGRAM)"))?,
    };
    let prog = ebpf
        .program_mut(&name)
        .with_context(|| format!("no program {name} in {obj}"))?;
    let time = |run: &dyn Fn(&[u8]) -> anyhow::Result<Duration>,
                sensor: &mut SensorProgram|
     -> anyhow::Result<f64> {
        let mut total = Duration::ZERO;
        let mut packets = 0u64;
        for _ in 0..rounds {
            for chunk in frames.chunks(64) {
                for f in chunk {
                    total += run(&f.bytes)? * repeat;
                    packets += u64::from(repeat);
                }
                sensor.drain_evidence(|_| ());
            }
        }
        Ok(total.as_nanos() as f64 / packets as f64)
    };
    fn opts(data: &[u8], repeat: u32) -> TestRunOptions<'_> {
        TestRunOptions {
            data_in: Some(data),
            repeat,
            ..TestRunOptions::default()
        }
    }
    match prog {
        Program::Xdp(xdp) => {
            xdp.load().with_context(|| format!("loading {name}"))?;
            let link = xdp
                .attach("bench2", XdpMode::Driver)
                .context("attaching the peer to bench2")?;
            let ns = {
                let xdp = &*xdp;
                time(
                    &|d| {
                        Ok(xdp
                            .test_run(opts(d, repeat))
                            .context("BPF_PROG_TEST_RUN (peer)")?
                            .duration)
                    },
                    sensor,
                )?
            };
            xdp.detach(link).context("detaching the peer")?;
            Ok(ns)
        }
        Program::SchedClassifier(tc) => {
            tc.load().with_context(|| format!("loading {name}"))?;
            let tc: &SchedClassifier = tc;
            time(
                &|d| {
                    Ok(tc
                        .test_run(opts(d, repeat))
                        .context("BPF_PROG_TEST_RUN (peer)")?
                        .duration)
                },
                sensor,
            )
        }
        _ => bail!("{name} in {obj} is neither an XDP program nor a TC classifier"),
    }
}

/// Evidence on (mitigation off): 128 watched addresses no corpus packet has (what every
/// packet pays while alerts are recorded), then the 128 corpus servers watched as victims, so
/// every packet is copied into the ring (a flood's victim recorded).
fn evidence(prog: &mut SensorProgram, frames: &[Frame], args: &Args) -> anyhow::Result<()> {
    use sensor_common::{WatchEntry, gates, watch};
    prog.set_gates(gates::WATCH)?;
    let entry = WatchEntry {
        alert_id: 1,
        expires_ns: u64::MAX,
        max_packets: u64::MAX,
        max_bytes: u64::MAX,
        flags: watch::AS_SRC | watch::AS_DST,
        snaplen: sensor_common::EVIDENCE_SNAPLEN as u32,
        ..WatchEntry::default()
    };
    for i in 0..128u32 {
        prog.watch(
            Ipv4Addr::from(0x6440_0000 | i).to_ipv6_mapped().octets(),
            entry,
        )?;
    }
    let name = "sensor+watch128";
    let (s, e) = trials(prog, frames, args, name, XDP_PASS)?;
    if prog.counters()?.evidence_packets != 0 {
        bail!("the watch map matched corpus packets it must not match");
    }
    println!("xdp ns/pkt: {name}={s:.2} empty={e:.2} ratio={:.2}", s / e);
    for i in 0..128u32 {
        prog.unwatch(Ipv4Addr::from(0x6440_0000 | i).to_ipv6_mapped().octets())?;
    }
    for server in 0..64u32 {
        let v4 = Ipv4Addr::from(0xc633_6400 + server);
        let v6 = Ipv6Addr::new(0x2001, 0xdb8, 2, 0, 0, 0, 0, server as u16);
        for a in [v4.to_ipv6_mapped().octets(), v6.octets()] {
            prog.watch(
                a,
                WatchEntry {
                    flags: watch::AS_DST,
                    ..entry
                },
            )?;
        }
    }
    let name = "sensor+watch-copying";
    let (s, e) = trials(prog, frames, args, name, XDP_PASS)?;
    let c = prog.counters()?;
    let per_trial = frames.len() as u64 * args.rounds as u64 * u64::from(args.repeat);
    if c.evidence_packets < per_trial || c.evidence_lost != 0 {
        bail!(
            "{} packets copied and {} lost of {per_trial}: the copy path was not what ran",
            c.evidence_packets,
            c.evidence_lost
        );
    }
    println!("xdp ns/pkt: {name}={s:.2} empty={e:.2} ratio={:.2}", s / e);
    Ok(())
}
