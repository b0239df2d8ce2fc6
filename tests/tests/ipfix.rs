//! IPFIX export decoded by an independent decoder: a replay's flows are exported over UDP to a
//! socket of the test, the datagrams are saved as a capture and tshark's CFLOW dissector reads
//! them back; what it decodes must be exactly the flows the pipeline finished, one record per
//! direction. Over TCP the stream is a sequence of well-formed messages, templates first; a
//! dead collector is counted.

use std::{
    collections::BTreeMap,
    io::Read as _,
    net::{TcpListener, UdpSocket},
    path::Path,
    sync::atomic::Ordering,
    time::Duration,
};

use sensor::{
    config::Config,
    drive::replay::{ReplayOptions, replay},
    sink::ipfix::{Ipfix, IpfixConfig, IpfixSink},
};
use sensor_tests::FlowRecords;

/// (src, dst, sport, dport, proto) -> (octets, packets), summed.
type Records = BTreeMap<(String, String, u16, u16, u8), (u64, u64)>;

/// What the exporter should have sent for these flows: one record per direction.
fn expected(flows: &[sensor::record::FlowRecord]) -> Records {
    let mut m = Records::new();
    for f in flows.iter().filter(|f| f.family != "arp") {
        let icmp = matches!(f.proto, 1 | 58);
        if f.packets_fwd > 0 {
            let e = m
                .entry((
                    f.src_ip.clone(),
                    f.dst_ip.clone(),
                    f.src_port,
                    f.dst_port,
                    f.proto,
                ))
                .or_default();
            e.0 += f.bytes_fwd;
            e.1 += f.packets_fwd;
        }
        if f.packets_rev > 0 {
            let (sp, dp) = if icmp {
                (0, f.dst_port)
            } else {
                (f.dst_port, f.src_port)
            };
            let e = m
                .entry((f.dst_ip.clone(), f.src_ip.clone(), sp, dp, f.proto))
                .or_default();
            e.0 += f.bytes_rev;
            e.1 += f.packets_rev;
        }
    }
    m
}

/// A UDP datagram to port 4739 as an Ethernet frame (addresses are the loopback's).
fn frame(payload: &[u8]) -> Vec<u8> {
    let mut f = vec![0u8; 12];
    f.extend_from_slice(&[0x08, 0x00]);
    let total = 20 + 8 + payload.len();
    f.extend_from_slice(&[
        0x45,
        0,
        (total >> 8) as u8,
        total as u8,
        0,
        0,
        0x40,
        0,
        64,
        17,
        0,
        0,
    ]);
    f.extend_from_slice(&[127, 0, 0, 1, 127, 0, 0, 1]);
    let udp = 8 + payload.len();
    f.extend_from_slice(&[0xc3, 0x50, 0x12, 0x83, (udp >> 8) as u8, udp as u8, 0, 0]);
    f.extend_from_slice(payload);
    f
}

fn tshark_missing() -> bool {
    if Path::new("/usr/bin/tshark").exists() {
        return false;
    }
    assert!(
        !sensor_tests::kernel_tests_required(),
        "tshark missing (cargo xtask setup installs it)"
    );
    sensor_tests::skip("IPFIX decoded by tshark", "no tshark");
    true
}

#[test]
fn a_replays_flows_decode_in_tshark_as_exactly_those_flows() {
    let Some(c) = sensor_tests::corpora() else {
        sensor_tests::skip("IPFIX export", "../shared/corpora is absent");
        return;
    };
    if tshark_missing() {
        return;
    }
    let collector = UdpSocket::bind("127.0.0.1:0").expect("bind");
    collector
        .set_read_timeout(Some(Duration::from_millis(500)))
        .expect("timeout");
    // Large enough for every datagram of the replay while it runs.
    let cfg = IpfixConfig {
        collector: format!("udp://{}", collector.local_addr().expect("addr")),
        observation_domain: 77,
        ..IpfixConfig::default()
    };
    let x = Ipfix::start(&cfg).expect("config").expect("exporter");
    let mut flows = FlowRecords::default();
    // IPv4 scan, IPv4 ICMP flood, benign IPv4 and IPv6 web traffic.
    let files: Vec<_> = [
        "generated/nmap_sS_top1000.pcap",
        "generated/hping3_icmpflood_20k.pcap",
        "zeek/wikipedia.pcap",
    ]
    .iter()
    .map(|f| c.join(f))
    .collect();
    let recv = std::thread::spawn(move || {
        let mut got = Vec::new();
        let mut buf = [0u8; 65_536];
        while let Ok(n) = collector.recv(&mut buf) {
            got.push(buf[..n].to_vec());
        }
        got
    });
    replay(
        &files,
        ReplayOptions::flows_only(&Config::default()),
        vec![Box::new(&mut flows), Box::new(IpfixSink::new(&x, true))],
    )
    .expect("replay");
    let stats = std::sync::Arc::clone(x.stats());
    drop(x);
    let datagrams = recv.join().expect("receiver");
    let want = expected(&flows.0);
    let records: u64 = stats.records.load(Ordering::Relaxed);
    assert_eq!(stats.dropped.load(Ordering::Relaxed), 0);
    assert!(records > 1000, "{records} records");
    assert!(
        datagrams.iter().all(|d| d.len() <= 1400),
        "messages stay under the MTU"
    );
    assert!(
        want.keys().any(|k| k.0.contains(':')),
        "IPv6 flows in the set"
    );

    let dir = std::env::temp_dir().join(format!("sensor-ipfix-{}", std::process::id()));
    let _ignored = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("dir");
    let file = dir.join("ipfix.pcap");
    let mut w = sensor::evidence::pcap::PcapWriter::create(&file, 1, 65_535).expect("pcap");
    for (i, d) in datagrams.iter().enumerate() {
        let f = frame(d);
        w.write(
            1_700_000_000_000_000_000 + i as u64 * 1000,
            f.len() as u32,
            &f,
        )
        .expect("write");
    }
    w.finish().expect("finish");
    let out = std::process::Command::new("tshark")
        .args(["-n", "-r"])
        .arg(&file)
        .args([
            "-d",
            "udp.port==4739,cflow",
            "-T",
            "fields",
            "-E",
            "aggregator=;",
        ])
        .args([
            "-e",
            "cflow.version",
            "-e",
            "cflow.od_id",
            "-e",
            "_ws.malformed",
        ])
        .args([
            "-e",
            "cflow.srcaddr",
            "-e",
            "cflow.srcaddrv6",
            "-e",
            "cflow.dstaddr",
            "-e",
            "cflow.dstaddrv6",
        ])
        .args([
            "-e",
            "cflow.srcport",
            "-e",
            "cflow.dstport",
            "-e",
            "cflow.protocol",
        ])
        .args(["-e", "cflow.octets", "-e", "cflow.packets"])
        .output()
        .expect("tshark");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    let mut got = Records::new();
    for line in text.lines() {
        let col: Vec<Vec<&str>> = line
            .split('\t')
            .map(|c| {
                if c.is_empty() {
                    Vec::new()
                } else {
                    c.split(';').collect()
                }
            })
            .collect();
        assert_eq!(col[0].first().copied(), Some("10"), "IPFIX version: {line}");
        assert_eq!(
            col[1].first().copied(),
            Some("77"),
            "observation domain: {line}"
        );
        assert!(
            col[2].is_empty(),
            "tshark found a malformed message: {line}"
        );
        let src = if col[3].is_empty() { &col[4] } else { &col[3] };
        let dst = if col[5].is_empty() { &col[6] } else { &col[5] };
        for i in 0..src.len() {
            let n = |c: &Vec<&str>| c[i].parse::<u64>().expect("number");
            let e = got
                .entry((
                    src[i].to_owned(),
                    dst[i].to_owned(),
                    n(&col[7]) as u16,
                    n(&col[8]) as u16,
                    n(&col[9]) as u8,
                ))
                .or_default();
            e.0 += n(&col[10]);
            e.1 += n(&col[11]);
        }
    }
    let n_got: usize = got.len();
    assert_eq!(
        got.len(),
        want.len(),
        "distinct records decoded {n_got} vs flows' directions {}",
        want.len()
    );
    let diff: Vec<_> = want
        .iter()
        .filter(|(k, v)| got.get(*k) != Some(v))
        .take(5)
        .collect();
    assert!(diff.is_empty(), "not decoded as exported: {diff:?}");
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn over_tcp_the_stream_is_messages_with_templates_first() {
    let Some(c) = sensor_tests::corpora() else {
        sensor_tests::skip("IPFIX over TCP", "../shared/corpora is absent");
        return;
    };
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    let reader = std::thread::spawn(move || {
        let (mut s, _) = listener.accept().expect("accept");
        let mut all = Vec::new();
        s.read_to_end(&mut all).expect("read");
        all
    });
    let x = Ipfix::start(&IpfixConfig {
        collector: format!("tcp://{addr}"),
        ..IpfixConfig::default()
    })
    .expect("config")
    .expect("exporter");
    let mut flows = FlowRecords::default();
    replay(
        &[c.join("generated/nmap_sS_top1000.pcap")],
        ReplayOptions::flows_only(&Config::default()),
        vec![Box::new(&mut flows), Box::new(IpfixSink::new(&x, true))],
    )
    .expect("replay");
    // Dropping the exporter joins its thread, so the counter is final only after.
    let stats = std::sync::Arc::clone(x.stats());
    drop(x);
    let records = stats.records.load(Ordering::Relaxed);
    let bytes = reader.join().expect("reader");
    let (mut off, mut data, mut seq_next, mut first) = (0usize, 0u64, 0u32, true);
    while off < bytes.len() {
        let m = &bytes[off..];
        assert_eq!(u16::from_be_bytes([m[0], m[1]]), 10, "version at {off}");
        let len = usize::from(u16::from_be_bytes([m[2], m[3]]));
        let seq = u32::from_be_bytes([m[8], m[9], m[10], m[11]]);
        let set = u16::from_be_bytes([m[16], m[17]]);
        if first {
            assert_eq!(set, 2, "the first message holds the templates");
            first = false;
        }
        if set >= 256 {
            assert_eq!(seq, seq_next, "sequence numbers count data records");
            let n = (len - 20) as u64 / 48;
            data += n;
            seq_next = seq_next.wrapping_add(n as u32);
        }
        off += len;
    }
    assert_eq!(off, bytes.len(), "the stream ends on a message boundary");
    assert_eq!(data, records);
    let directions: u64 = flows
        .0
        .iter()
        .filter(|f| f.family != "arp")
        .map(|f| u64::from(f.packets_fwd > 0) + u64::from(f.packets_rev > 0))
        .sum();
    assert_eq!(
        data, directions,
        "one record per direction that carried packets"
    );
}

#[test]
fn a_dead_collector_is_counted_and_a_bad_one_refused() {
    let closed = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("port");
    if let Some(c) = sensor_tests::corpora() {
        let x = Ipfix::start(&IpfixConfig {
            collector: format!("tcp://{closed}"),
            ..IpfixConfig::default()
        })
        .expect("config")
        .expect("exporter");
        replay(
            &[c.join("generated/nmap_sS_top1000.pcap")],
            ReplayOptions::flows_only(&Config::default()),
            vec![Box::new(IpfixSink::new(&x, true))],
        )
        .expect("a dead collector does not fail the replay");
        let stats = std::sync::Arc::clone(x.stats());
        drop(x);
        assert_eq!(stats.records.load(Ordering::Relaxed), 0);
        assert!(stats.errors.load(Ordering::Relaxed) >= 1);
        assert!(
            stats.dropped.load(Ordering::Relaxed) > 1000,
            "every record counted"
        );
    }
    for bad in ["127.0.0.1:4739", "sctp://h:4739", "udp://h:port"] {
        let e = Ipfix::start(&IpfixConfig {
            collector: bad.into(),
            ..IpfixConfig::default()
        })
        .err()
        .expect(bad);
        assert!(
            matches!(&e, sensor::sink::SinkError::Invalid(i) if i.key == "ipfix.collector"),
            "{e}"
        );
    }
}

/// An existing collector: nfcapd (nfdump, Debian's) receives the export over UDP and stores
/// it; `nfdump` reads back exactly the pipeline's flows, one record per direction, with no
/// sequence error. This is the collector snippet docs/INTEGRATION.md gives.
#[test]
fn nfcapd_stores_exactly_the_exported_flows() {
    let Some(c) = sensor_tests::corpora() else {
        sensor_tests::skip("IPFIX into nfcapd", "../shared/corpora is absent");
        return;
    };
    if !Path::new("/usr/bin/nfcapd").exists() {
        assert!(
            !sensor_tests::kernel_tests_required(),
            "nfdump missing (cargo xtask setup installs it)"
        );
        sensor_tests::skip("IPFIX into nfcapd", "no nfcapd");
        return;
    }
    let dir = std::env::temp_dir().join(format!("sensor-nfcapd-{}", std::process::id()));
    let _ignored = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("dir");
    let port = UdpSocket::bind("127.0.0.1:0")
        .and_then(|s| s.local_addr())
        .expect("port")
        .port();
    let nfcapd = std::process::Command::new("nfcapd")
        .args([
            "-b",
            "127.0.0.1",
            "-p",
            &port.to_string(),
            "-t",
            "3600",
            "-w",
        ])
        .arg(&dir)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("start nfcapd");
    std::thread::sleep(Duration::from_millis(500));
    let x = Ipfix::start(&IpfixConfig {
        collector: format!("udp://127.0.0.1:{port}"),
        ..IpfixConfig::default()
    })
    .expect("config")
    .expect("exporter");
    let mut flows = FlowRecords::default();
    replay(
        &[
            c.join("generated/nmap_sS_top1000.pcap"),
            c.join("zeek/wikipedia.pcap"),
            c.join("generated/hping3_icmpflood_20k.pcap"),
        ],
        ReplayOptions::flows_only(&Config::default()),
        vec![Box::new(&mut flows), Box::new(IpfixSink::new(&x, true))],
    )
    .expect("replay");
    drop(x);
    std::thread::sleep(Duration::from_millis(500));
    // SIGTERM: nfcapd writes its file and reports what it received.
    // SAFETY: kill(2) on the child's pid, a plain syscall.
    unsafe { libc::kill(nfcapd.id() as i32, libc::SIGTERM) };
    let out = nfcapd.wait_with_output().expect("nfcapd");
    let log = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(log.contains("Sequence Errors: 0, Bad Packets: 0"), "{log}");
    let dump = std::process::Command::new("nfdump")
        .arg("-R")
        .arg(&dir)
        .args(["-q", "-6", "-o", "fmt:%sa|%da|%sp|%dp|%pr|%ibyt|%ipkt"])
        .output()
        .expect("nfdump");
    let text = String::from_utf8_lossy(&dump.stdout);
    let mut got = Records::new();
    for line in text.lines().filter(|l| l.contains('|')) {
        let f: Vec<&str> = line.split('|').map(str::trim).collect();
        // ICMP type and code print as "type.code".
        let port = |s: &str| match s.split_once('.') {
            Some((t, c)) => t.parse::<u16>().unwrap_or(0) * 256 + c.parse::<u16>().unwrap_or(0),
            None => s.parse().unwrap_or(0),
        };
        let proto = match f[4] {
            "TCP" => 6,
            "UDP" => 17,
            "ICMP" => 1,
            "ICMP6" => 58,
            other => other.parse().unwrap_or(0),
        };
        let e = got
            .entry((
                f[0].to_owned(),
                f[1].to_owned(),
                port(f[2]),
                port(f[3]),
                proto,
            ))
            .or_default();
        e.0 += f[5].parse::<u64>().expect("bytes");
        e.1 += f[6].parse::<u64>().expect("packets");
    }
    let want = expected(&flows.0);
    assert!(want.len() > 2000);
    let diff: Vec<_> = want
        .iter()
        .filter(|(k, v)| got.get(*k) != Some(v))
        .take(5)
        .collect();
    assert!(
        diff.is_empty() && got.len() == want.len(),
        "nfdump has {} records, the flows {}; differing: {diff:?}",
        got.len(),
        want.len()
    );
    std::fs::remove_dir_all(&dir).ok();
}
