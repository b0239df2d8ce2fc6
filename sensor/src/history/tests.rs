use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    path::{Path, PathBuf},
};

use sensor_common::{HostKey, HostStats, family, proto};

use super::{
    HistoryConfig, Record,
    codec::{Decoder, Encoder},
    dry_run::{Ctx, alerts, dry_run},
    reader::{for_each, load, segments},
    writer::Writer,
};
use crate::{
    config::Config,
    detect::rules::custom::CustomRule,
    drive::replay::{ReplayOptions, replay},
    flow::{DirStats, EndReason, FlowEvent, FlowFacts},
    record::{AlertRecord, AlertState},
    sink::{Sink, SinkError},
};

const S: u64 = 1_000_000_000;

fn tmp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("sensor-history-{}-{name}", std::process::id()));
    let _ignored = std::fs::remove_dir_all(&d);
    d
}

fn event(i: u64, v6: bool) -> FlowEvent {
    let (src, dst): (IpAddr, IpAddr) = if v6 {
        (
            Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, i as u16).into(),
            Ipv6Addr::LOCALHOST.into(),
        )
    } else {
        (
            Ipv4Addr::from(0x0a00_0000 + i as u32).into(),
            Ipv4Addr::new(192, 0, 2, 1).into(),
        )
    };
    FlowEvent {
        // Not in order within a batch: deltas go back as well as forward.
        ts_ns: 1_700_000_000 * S + i * 7_919_000 - (i % 3) * 5_000_000,
        src,
        dst,
        src_port: 40_000 + i as u16,
        dst_port: (i % 1024) as u16,
        proto: if i.is_multiple_of(2) {
            proto::TCP
        } else {
            proto::UDP
        },
        family: if v6 { family::IPV6 } else { family::IPV4 },
        key_dst_port: 7,
        new_flow: i.is_multiple_of(5),
        from_src: !i.is_multiple_of(3),
        packets: i * 3 + 1,
        bytes: i * 1_000_003,
        syn: i % 2,
        syn_ack: i % 4 / 3,
        rst: u64::MAX - i,
        completed: i.is_multiple_of(7),
    }
}

fn records() -> Vec<Record> {
    let mut out = Vec::new();
    for i in 0..500u64 {
        out.push(Record::Event(event(i, i.is_multiple_of(11))));
        if i.is_multiple_of(10) {
            let e = event(i, i.is_multiple_of(20));
            out.push(Record::Flow(FlowFacts {
                src: e.src,
                dst: e.dst,
                src_port: e.src_port,
                dst_port: e.dst_port,
                proto: e.proto,
                family: e.family,
                fwd: DirStats {
                    packets: i,
                    bytes: i * 60,
                },
                rev: DirStats {
                    packets: 2 * i,
                    bytes: u64::MAX,
                },
                first_seen_ns: e.ts_ns - i * S,
                last_seen_ns: e.ts_ns,
                end: [EndReason::Idle, EndReason::Closed, EndReason::ActiveTimeout][i as usize % 3],
                completed: i.is_multiple_of(20),
            }));
            out.push(Record::Settle);
        }
        if i.is_multiple_of(50) {
            out.push(Record::Overflow {
                ts_ns: event(i, false).ts_ns,
                key: HostKey {
                    addr: Ipv4Addr::new(10, 1, 2, i as u8).to_ipv6_mapped().octets(),
                    family: family::IPV4,
                    _pad: [0; 3],
                },
                stats: HostStats {
                    packets: i,
                    bytes: i * 64,
                    first_seen_ns: 5,
                    last_seen_ns: 1_700_000_000 * S,
                    syn: i,
                    syn_ack: 0,
                    rst: 1,
                    udp: 2,
                    icmp: 3,
                    icmp_echo: 4,
                },
            });
            out.push(Record::Tick(event(i, false).ts_ns + S));
            out.push(Record::Gap {
                ts_ns: event(i, false).ts_ns + S + 1,
                dropped: i * 1_000,
            });
        }
    }
    out.push(Record::End);
    out
}

#[test]
fn records_read_back_as_written_and_a_cut_record_ends_the_read() {
    let recs = records();
    let mut buf = Vec::new();
    let mut enc = Encoder::default();
    for r in &recs {
        enc.put(r, &mut buf);
    }
    let mut d = Decoder::new(&buf);
    let mut back = Vec::new();
    while let Some(r) = d.next_record().expect("whole records") {
        back.push(r);
    }
    assert_eq!(back, recs);
    // Compact: an IPv4 event of one second takes a few dozen bytes, not the ~90 of its struct.
    let per = buf.len() / recs.len();
    assert!(per < 45, "{per} bytes per record");
    // Cut in the middle of the last event: everything before it reads, then the cut is named.
    let cut = &buf[..buf.len() - 20];
    let mut d = Decoder::new(cut);
    let mut n = 0;
    let err = loop {
        match d.next_record() {
            Ok(Some(_)) => n += 1,
            Ok(None) => panic!("a cut record must not read as the end"),
            Err(e) => break e,
        }
    };
    assert!(n > 0 && n < recs.len(), "{n} records before the cut");
    assert!(err.offset < cut.len());
    // A byte that is no kind of record.
    assert!(Decoder::new(&[99, 1, 2]).next_record().is_err());
}

fn config(max_mb: u64, segment_s: u64) -> HistoryConfig {
    HistoryConfig {
        max_mb,
        segment_s,
        ..HistoryConfig::default()
    }
}

/// Past `max_records_per_s`, a second's flow events are counted, not kept, and a dry run over
/// it says how many it did not see; the next second is kept again.
#[test]
fn a_flood_of_records_past_the_rate_cap_is_counted_not_kept() {
    let dir = tmp("cap");
    let cfg = HistoryConfig {
        max_records_per_s: 100,
        ..config(16, 60)
    };
    let mut w = Writer::new(&cfg, dir.clone()).expect("writer");
    let t0 = 1_700_000_000 * S;
    for sec in 0..3u64 {
        let n = if sec == 1 { 1_000 } else { 50 };
        for i in 0..n {
            let mut e = event(i, false);
            e.ts_ns = t0 + sec * S + i * 1_000;
            w.put(&Record::Event(e));
        }
        w.put(&Record::Tick(t0 + sec * S + S / 2));
    }
    w.flush();
    let segs = load(&dir, 0, u64::MAX).expect("load");
    let st = for_each(&segs, 0, u64::MAX, |_| {});
    assert_eq!(st.events, 50 + 100 + 50, "{st:?}");
    assert_eq!(st.dropped, 900, "{st:?}");
    drop(w);
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn segments_rotate_with_data_time_and_the_oldest_go_beyond_the_bound() {
    let dir = tmp("rotate");
    let mut w = Writer::new(&config(1, 10), dir.clone()).expect("writer");
    // 100 s of data, 2,000 events a second: ~4-6 MB, against a 1 MB bound.
    let t0 = 1_700_000_000 * S;
    for sec in 0..100u64 {
        for i in 0..2_000u64 {
            let mut e = event(i, false);
            e.ts_ns = t0 + sec * S + i * 1_000;
            w.put(&Record::Event(e));
        }
        w.put(&Record::Settle);
        w.put(&Record::Tick(t0 + sec * S + S / 2));
    }
    w.flush();
    let segs = segments(&dir).expect("list");
    let total: u64 = segs.iter().map(|s| s.bytes).sum();
    assert!(
        total <= 1 << 20,
        "{total} bytes kept against a bound of 1 MiB"
    );
    assert!(segs.len() >= 3, "{} segments", segs.len());
    // What is kept is the newest data, contiguous up to the end.
    let last = segs.last().expect("a segment");
    assert!(
        last.first_ns >= t0 + 90 * S,
        "newest segment starts {}",
        last.first_ns
    );
    let loaded = load(&dir, 0, u64::MAX).expect("load");
    let mut events = 0;
    let mut last_ts = 0;
    let st = for_each(&loaded, 0, u64::MAX, |r| {
        if let Record::Event(e) = r {
            events += 1;
            last_ts = last_ts.max(e.ts_ns);
        }
    });
    assert_eq!(st.truncated, 0);
    assert_eq!(st.events, events);
    assert_eq!(last_ts, t0 + 99 * S + 1_999 * 1_000);
    // A range inside the kept data reads only its records.
    let from = t0 + 95 * S;
    let to = t0 + 96 * S - 1;
    let part = load(&dir, from, to).expect("load");
    let st = for_each(&part, from, to, |_| {});
    assert_eq!(st.events, 2_000, "one second of events");
    drop(w);
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn a_history_directory_that_cannot_be_made_is_an_error_naming_it() {
    let file = tmp("not-a-dir");
    std::fs::write(&file, b"x").expect("write");
    let e = Writer::new(&config(1, 60), file.join("sub"))
        .err()
        .expect("refused");
    assert!(e.to_string().contains("not-a-dir"), "{e}");
    std::fs::remove_file(&file).ok();
}

/// Alerts as they end (closed or merged), for comparing runs.
#[derive(Default)]
struct Collect(Vec<AlertRecord>);

impl Sink for &mut Collect {
    fn alert_closed(&mut self, rec: &AlertRecord, _: u64) -> Result<(), SinkError> {
        self.0.push(rec.clone());
        Ok(())
    }
}

/// What an operator compares: which alerts, when, how big, in words.
fn digest(v: &[AlertRecord]) -> Vec<String> {
    let mut out: Vec<String> = v
        .iter()
        .filter(|r| r.state != AlertState::Merged)
        .map(|r| {
            format!(
                "{} {:?} {:?} {} {} n={} {:?} | {}",
                r.kind.as_str(),
                r.src_ip,
                r.dst_ip,
                r.first_seen,
                r.last_seen,
                r.count,
                r.severity,
                r.summary
            )
        })
        .collect();
    out.sort();
    out
}

fn replay_with(files: &[PathBuf], cfg: &Config, history: Option<&Path>) -> Vec<AlertRecord> {
    let mut c = Collect::default();
    let w = history.map(|d| Writer::new(&cfg.history, d.to_path_buf()).expect("history"));
    let opts = ReplayOptions::new(cfg).with_history(w);
    replay(files, opts, vec![Box::new(&mut c)]).expect("replay");
    c.0
}

/// The check: a dry run of changed rules over the history a replay wrote raises exactly
/// what a replay of the same captures with the changed rules raises. Real-tool captures: a SYN
/// scan, a SYN flood, a ping-and-SYN sweep, benign HTTP.
#[test]
fn a_dry_run_over_the_history_equals_a_replay_with_the_changed_rules() {
    let corpus = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/corpora/generated");
    if !corpus.join("nmap_sS_top1000.pcap").exists() {
        eprintln!("skipped: ../shared/corpora/generated is not on this machine");
        return;
    };
    let files: Vec<PathBuf> = [
        "benign_http_200req.pcap",
        "nmap_sS_top1000.pcap",
        "hping3_synflood_20k.pcap",
        "nmap_sn_sweep_ip.pcap",
        "hping3_udpflood_20k.pcap",
    ]
    .iter()
    .map(|f| corpus.join(f))
    .collect();
    let dir = tmp("equal");
    let current = Config::default();
    let written = replay_with(&files, &current, Some(&dir));
    // The changed rules: no port scan below 2,000 ports (fast or slow), a lower SYN-flood bar, and an
    // operator rule counting new connections per source.
    let mut changed = current.clone();
    changed.rules.port_scan_ports = 2_000;
    changed.rules.slow_scan_ports = 2_000;
    changed.rules.syn_flood_syns = 50;
    let rule: CustomRule = toml::from_str(
        "name = \"many_connections\"\ncount = \"flows\"\nwindow_s = 60\nthreshold = 100\n",
    )
    .expect("rule");
    changed.rules.custom.push(rule);
    let ctx = Ctx {
        networks: changed.networks.build(),
        geo: crate::geo::Geo::default(),
    };
    let (st, dry) = alerts(&dir, 0, u64::MAX, &changed.rules, &ctx).expect("dry run");
    assert!(st.events > 1_000 && st.flows > 100, "{st:?}");
    assert_eq!(st.truncated, 0);
    let replayed = replay_with(&files, &changed, None);
    assert_eq!(digest(&dry), digest(&replayed));
    let kinds: Vec<&str> = dry.iter().map(|r| r.kind.as_str()).collect();
    assert!(!kinds.contains(&"port_scan"), "{kinds:?}");
    assert!(kinds.contains(&"many_connections"), "{kinds:?}");
    // The current rules over the history raise what the replay that wrote it raised.
    let (_, same) = alerts(&dir, 0, u64::MAX, &current.rules, &ctx).expect("dry run");
    assert_eq!(digest(&same), digest(&written));
    // Side by side: the scan goes, the operator rule comes, the sweep stays.
    let d = dry_run(&dir, 0, u64::MAX, &current.rules, &changed.rules, &ctx).expect("dry run");
    let names = |v: &[AlertRecord]| {
        v.iter()
            .map(|r| r.kind.as_str().to_owned())
            .collect::<Vec<_>>()
    };
    assert!(
        names(&d.would_not_raise).contains(&"port_scan".to_owned()),
        "{d:?}"
    );
    assert!(
        names(&d.would_raise).contains(&"many_connections".to_owned()),
        "{d:?}"
    );
    assert!(
        names(&d.unchanged).contains(&"host_sweep".to_owned()),
        "{d:?}"
    );
    assert_eq!(
        d.unchanged_total + d.would_not_raise_total,
        d.current_alerts,
        "every current alert is kept or gone"
    );
    std::fs::remove_dir_all(&dir).ok();
}
