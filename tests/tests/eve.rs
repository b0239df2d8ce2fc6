//! EVE JSON output: real captures replayed into an EVE file, each line checked against the
//! fields and types Suricata's EVE schema gives them, the Community IDs checked against
//! tshark's own implementation over the same packets, and size-based rotation.

use std::{
    collections::BTreeSet,
    net::IpAddr,
    path::{Path, PathBuf},
    sync::atomic::Ordering,
};

use sensor::{
    config::Config,
    drive::replay::{ReplayOptions, replay},
    sink::eve::{EveConfig, EveSink, EveWriter},
};
use serde_json::Value;

fn tmp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("sensor-eve-{}-{name}", std::process::id()));
    let _ignored = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).expect("dir");
    d
}

/// Replays `files` into an EVE file with `cfg`; the summary's (alerts, flows) and the lines.
fn replay_to_eve(files: &[PathBuf], cfg: EveConfig) -> (u64, u64, Vec<Value>) {
    let path = cfg.path.clone().expect("path");
    let w = EveWriter::start(&cfg)
        .expect("open the EVE file")
        .expect("a writer");
    let s = replay(
        files,
        ReplayOptions::new(&Config::default()),
        vec![Box::new(EveSink::new(&w, true))],
    )
    .expect("replay");
    let stats = std::sync::Arc::clone(w.stats());
    drop(w);
    assert_eq!(
        stats.dropped.load(Ordering::Relaxed),
        0,
        "replay drops nothing"
    );
    let lines = read_lines(&path);
    assert_eq!(stats.events.load(Ordering::Relaxed), lines.len() as u64);
    (s.alerts.values().sum(), s.flows, lines)
}

fn read_lines(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .expect("read EVE file")
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect()
}

fn is_suricata_time(v: &Value) -> bool {
    // 2026-11-27T12:00:34.024124+0000
    v.as_str().is_some_and(|s| {
        let b = s.as_bytes();
        s.len() == 31
            && b[4] == b'-'
            && b[10] == b'T'
            && b[19] == b'.'
            && s.ends_with("+0000")
            && [0..4, 5..7, 8..10, 11..13, 14..16, 17..19, 20..26]
                .into_iter()
                .all(|r| b[r].iter().all(u8::is_ascii_digit))
    })
}

/// What Suricata's EVE schema says of the fields the sensor writes (types, forms, ranges).
fn check_event(e: &Value) {
    let ctx = || e.to_string();
    assert!(is_suricata_time(&e["timestamp"]), "timestamp: {}", ctx());
    assert!(
        e["flow_id"].as_u64().is_some_and(|i| i > 0 && i < 1 << 53),
        "flow_id: {}",
        ctx()
    );
    assert!(
        e["host"].as_str().is_some_and(|h| !h.is_empty()),
        "{}",
        ctx()
    );
    for k in ["src_ip", "dest_ip"] {
        if !e[k].is_null() {
            assert!(
                e[k].as_str()
                    .and_then(|s| s.parse::<IpAddr>().ok())
                    .is_some(),
                "{k}: {}",
                ctx()
            );
        }
    }
    for k in ["src_port", "dest_port"] {
        if !e[k].is_null() {
            assert!(e[k].as_u64().is_some_and(|p| p <= 65535), "{k}: {}", ctx());
        }
    }
    if let Some(c) = e["community_id"].as_str() {
        assert!(
            c.starts_with("1:") && c.len() == 30,
            "community_id: {}",
            ctx()
        );
    }
    match e["event_type"].as_str() {
        Some("flow") => {
            let f = &e["flow"];
            for k in [
                "pkts_toserver",
                "pkts_toclient",
                "bytes_toserver",
                "bytes_toclient",
                "age",
            ] {
                assert!(f[k].is_u64(), "flow.{k}: {}", ctx());
            }
            assert!(
                is_suricata_time(&f["start"]) && is_suricata_time(&f["end"]),
                "{}",
                ctx()
            );
            assert!(
                ["new", "established", "closed"].contains(&f["state"].as_str().unwrap_or("")),
                "{}",
                ctx()
            );
            assert!(f["alerted"].is_boolean(), "{}", ctx());
            assert!(
                e["proto"].is_string() && e["src_ip"].is_string(),
                "{}",
                ctx()
            );
            if e["proto"] == "TCP" {
                assert!(
                    e["tcp"]["tcp_flags"]
                        .as_str()
                        .is_some_and(|h| u8::from_str_radix(h, 16).is_ok()),
                    "{}",
                    ctx()
                );
                assert!(
                    e["src_port"].is_u64() && e["dest_port"].is_u64(),
                    "{}",
                    ctx()
                );
            }
        }
        Some("alert") => {
            let a = &e["alert"];
            assert_eq!(a["action"], "allowed");
            assert!(a["gid"].is_u64() && a["rev"].is_u64(), "{}", ctx());
            assert!(
                a["signature_id"].as_u64().is_some_and(|s| s > 9_000_000),
                "{}",
                ctx()
            );
            assert!(
                a["signature"]
                    .as_str()
                    .is_some_and(|s| s.starts_with("SENSOR "))
            );
            assert!(a["category"].is_string(), "{}", ctx());
            assert!(
                a["severity"].as_u64().is_some_and(|s| (1..=3).contains(&s)),
                "{}",
                ctx()
            );
            assert!(
                a["metadata"].as_object().is_some_and(|m| m
                    .values()
                    .all(|v| v.as_array().is_some_and(|l| l.iter().all(Value::is_string)))),
                "metadata values are lists of strings: {}",
                ctx()
            );
            assert_eq!(a["metadata"]["kind"][0], e["sensor"]["kind"], "{}", ctx());
        }
        other => panic!("event_type {other:?}: {}", ctx()),
    }
}

/// tshark's Community IDs of every IP packet of `files` (its own implementation).
fn tshark_ids(files: &[PathBuf]) -> Option<BTreeSet<String>> {
    let mut ids = BTreeSet::new();
    for f in files {
        if !Path::new("/usr/bin/tshark").exists() {
            assert!(
                !sensor_tests::kernel_tests_required(),
                "tshark missing (cargo xtask setup installs it)"
            );
            sensor_tests::skip("EVE Community IDs against tshark", "no tshark");
            return None;
        }
        let out = std::process::Command::new("tshark")
            .args(["-n", "--enable-protocol", "communityid", "-r"])
            .arg(f)
            .args(["-T", "fields", "-e", "communityid"])
            .output()
            .expect("run tshark");
        assert!(out.status.success(), "tshark on {}", f.display());
        ids.extend(
            String::from_utf8_lossy(&out.stdout)
                .lines()
                .filter(|l| !l.is_empty())
                .map(str::to_owned),
        );
    }
    Some(ids)
}

#[test]
fn replayed_captures_become_suricata_eve_with_tsharks_community_ids() {
    let Some(c) = sensor_tests::corpora() else {
        sensor_tests::skip("EVE JSON", "../shared/corpora is absent");
        return;
    };
    // A scan, a flood, benign web traffic over IPv4 and IPv6 with ICMPv6.
    let files: Vec<PathBuf> = [
        "generated/nmap_sS_top1000.pcap",
        "generated/hping3_icmpflood_20k.pcap",
        "generated/nmap_sU_udp100.pcap",
        "zeek/wikipedia.pcap",
    ]
    .iter()
    .map(|f| c.join(f))
    .collect();
    let dir = tmp("replay");
    let cfg = EveConfig {
        path: Some(dir.join("eve.json")),
        sensor_name: Some("gw-test".into()),
        ..EveConfig::default()
    };
    let (alerts, flows, lines) = replay_to_eve(&files, cfg);
    for e in &lines {
        check_event(e);
    }
    let count = |t: &str| lines.iter().filter(|e| e["event_type"] == t).count() as u64;
    assert_eq!(count("alert"), alerts, "one alert event per alert");
    // The UDP scan is the same attacker and target as the SYN scan: the same port_scan alert.
    assert!(alerts >= 2, "the scan's and the flood's alerts: {alerts}");
    // Every flow but ARP's (not an IP flow to Suricata) is a flow event.
    assert!(
        count("flow") <= flows && count("flow") + 50 >= flows,
        "{} of {flows}",
        count("flow")
    );
    assert!(lines.iter().all(|e| e["host"] == "gw-test"));
    assert!(lines.iter().any(
        |e| e["proto"] == "IPv6-ICMP" || e["src_ip"].as_str().is_some_and(|s| s.contains(':'))
    ));
    let scan = lines
        .iter()
        .find(|e| e["alert"]["metadata"]["kind"][0] == "port_scan")
        .expect("the scan's alert event");
    assert_eq!(
        (&scan["src_ip"], &scan["alert"]["category"]),
        (
            &Value::from("10.99.0.1"),
            &Value::from("Detection of a Network Scan")
        )
    );

    // The Community IDs of the flow events are exactly those tshark computes for the packets.
    let ours: BTreeSet<String> = lines
        .iter()
        .filter(|e| e["event_type"] == "flow")
        .filter_map(|e| e["community_id"].as_str().map(str::to_owned))
        .collect();
    assert!(ours.len() > 1000, "{} flow Community IDs", ours.len());
    if let Some(theirs) = tshark_ids(&files) {
        let missing: Vec<_> = theirs.difference(&ours).take(5).collect();
        let extra: Vec<_> = ours.difference(&theirs).take(5).collect();
        assert!(
            missing.is_empty() && extra.is_empty(),
            "{} ids (tshark {}): missing {missing:?}, not tshark's {extra:?}",
            ours.len(),
            theirs.len()
        );
    }
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn the_eve_file_rotates_by_size_and_keeps_whole_lines() {
    let Some(c) = sensor_tests::corpora() else {
        sensor_tests::skip("EVE rotation", "../shared/corpora is absent");
        return;
    };
    let dir = tmp("rotate");
    let path = dir.join("eve.json");
    let cfg = EveConfig {
        path: Some(path.clone()),
        max_file_bytes: 4096,
        keep: 2,
        ..EveConfig::default()
    };
    let w = EveWriter::start(&cfg).expect("open").expect("writer");
    replay(
        &[c.join("generated/nmap_sS_top1000.pcap")],
        ReplayOptions::new(&Config::default()),
        vec![Box::new(EveSink::new(&w, true))],
    )
    .expect("replay");
    let stats = std::sync::Arc::clone(w.stats());
    drop(w);
    assert!(
        stats.rotations.load(Ordering::Relaxed) >= 3,
        "1,000 flows in 4 KiB files"
    );
    let name = |i: u32| PathBuf::from(format!("{}.{i}", path.display()));
    assert!(path.is_file() && name(1).is_file() && name(2).is_file());
    assert!(!name(3).exists(), "keep = 2 old files");
    for p in [path.clone(), name(1), name(2)] {
        let lines = read_lines(&p);
        assert!(!lines.is_empty(), "{}", p.display());
        lines.iter().for_each(check_event);
        let len = std::fs::metadata(&p).expect("meta").len();
        assert!(len <= 4096, "{}: {len} bytes", p.display());
    }
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn an_eve_path_that_cannot_be_opened_is_an_error_naming_it() {
    let cfg = EveConfig {
        path: Some(PathBuf::from("/nonexistent-dir/eve.json")),
        ..EveConfig::default()
    };
    let e = EveWriter::start(&cfg).err().expect("no such directory");
    let msg = format!("{e}");
    assert!(msg.contains("/nonexistent-dir/eve.json"), "{msg}");
    assert!(
        EveWriter::start(&EveConfig::default())
            .expect("no path")
            .is_none()
    );
}
