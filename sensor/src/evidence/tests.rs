use std::net::Ipv4Addr;

use super::*;
use crate::record::{AlertKind, DetectorKind, Severity};

fn alert(id: u64, src: Option<Ipv4Addr>, dst: Option<Ipv4Addr>, first: u64) -> Alert {
    Alert {
        state: crate::record::AlertState::Open,
        merged_into: None,
        id,
        kind: AlertKind::PortScan,
        severity: Severity::High,
        detector: DetectorKind::Rule,
        src_ip: src.map(IpAddr::V4),
        dst_ip: dst.map(IpAddr::V4),
        first_seen_ns: first,
        last_seen_ns: first,
        count: 1,
        score: None,
        peak_rate: 0.0,
        evidence: crate::detect::evidence::Evidence::None,
        model_anomalies: 0,
        model_max_score: 0.0,
        last_rate: 0.0,
        history: Vec::new(),
    }
}

fn a16(last: u8) -> [u8; 16] {
    addr16(IpAddr::V4(Ipv4Addr::new(10, 0, 0, last)))
}

fn tmp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("sensor-ev-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

#[test]
fn file_names_are_checked_strictly() {
    assert!(is_file_name(&file_name("0a1b2c3d-3", 17)));
    assert!(is_file_name("alert-3-17.pcap"), "names before the tag");
    for bad in [
        "alert-3-17.pcapx",
        "alert-3.pcap",
        "alert-3-17-1.pcap",
        "alert-0a1b2c3g-3-17.pcap",
        "alert-0a1b2c3d4-3-17.pcap",
        "alert--17.pcap",
        "alert-3-../x.pcap",
        "../alert-3-17.pcap",
        "alert-3-1a.pcap",
        "",
    ] {
        assert!(!is_file_name(bad), "{bad:?} accepted");
    }
}

#[test]
fn a_source_alert_takes_both_directions_a_victim_alert_what_reaches_the_victim() {
    let src = Target::of(&alert(1, Some(Ipv4Addr::new(10, 0, 0, 9)), None, 0)).expect("t");
    assert!(src.matches(&a16(9), &a16(1)) && src.matches(&a16(1), &a16(9)));
    assert!(!src.matches(&a16(1), &a16(2)));
    let vic = Target::of(&alert(2, None, Some(Ipv4Addr::new(10, 0, 0, 1)), 0)).expect("t");
    assert!(vic.matches(&a16(7), &a16(1)) && !vic.matches(&a16(1), &a16(7)));
    assert!(Target::of(&alert(3, None, None, 0)).is_none());
}

#[test]
fn windows_budgets_and_the_total_cap_bound_what_is_kept() {
    let dir = tmp("caps");
    let cfg = EvidenceConfig {
        max_packets: 3,
        max_seconds: 10,
        max_file_bytes: 4096,
        // Under the config's own minimum, to see rotation with small files.
        total_bytes: 1000,
        ..EvidenceConfig::default()
    };
    let mut r =
        Recorder::new(cfg, dir.clone(), "5".into(), Window::FromFirstSeen).expect("recorder");
    let t0 = 1_000 * NS;
    let name = r
        .alert_opened(&alert(1, Some(Ipv4Addr::new(10, 0, 0, 9)), None, t0))
        .expect("recorded");
    assert_eq!(name, "alert-5-1.pcap");
    let frame = [0u8; 300];
    let (s, d) = (a16(9), a16(1));
    // Before the window (the second before the alert is in it), another host's packet, then five in the window: three fit.
    r.packet(t0 - 2 * NS, 300, &frame, 1, Some((&s, &d)), None);
    r.packet(t0, 300, &frame, 1, Some((&a16(4), &d)), None);
    for i in 0..5 {
        r.packet(t0 + i * NS, 300, &frame, 1, Some((&d, &s)), None);
    }
    let st = r.stats();
    assert_eq!((st.packets, st.cut_short, st.files), (3, 1, 1), "{st:?}");
    assert!(
        r.watches().is_empty(),
        "a spent budget stops the kernel copy"
    );
    r.expire(t0 + NS);
    assert!(!r.is_recording());
    let len = std::fs::metadata(dir.join(&name)).expect("file").len();
    assert_eq!(len, 24 + 3 * (16 + 256), "snaplen 256 applied");
    // A second alert's file pushes the directory over the cap: the older file goes.
    let n2 = r
        .alert_opened(&alert(2, None, Some(Ipv4Addr::new(10, 0, 0, 1)), t0))
        .expect("recorded");
    for i in 0..3 {
        r.packet(t0 + i, 300, &frame, 1, Some((&s, &d)), None);
    }
    r.packet(t0 + 11 * NS, 300, &frame, 1, Some((&s, &d)), None);
    r.finish();
    assert!(dir.join(&n2).exists() && !dir.join(&name).exists());
    assert_eq!(r.stats().rotated, 1);
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn no_capture_or_too_many_recordings_promise_no_file() {
    let dir = tmp("admit");
    let cfg = EvidenceConfig {
        max_open: 1,
        ..EvidenceConfig::default()
    };
    let mut r = Recorder::new(cfg, dir.clone(), "1".into(), Window::FromOpen).expect("recorder");
    let a = alert(1, Some(Ipv4Addr::new(10, 0, 0, 9)), None, 0);
    assert_eq!(
        r.alert_opened(&a),
        None,
        "nothing attached that can copy packets"
    );
    r.set_capturing(true);
    assert!(r.alert_opened(&a).is_some());
    assert!(r.take_changed() && !r.take_changed());
    let b = alert(2, Some(Ipv4Addr::new(10, 0, 0, 8)), None, 0);
    assert_eq!(r.alert_opened(&b), None);
    assert_eq!(r.stats().refused, 1);
    assert_eq!(r.alert_closed(1).as_deref(), Some("alert-1-1.pcap"));
    assert_eq!(r.alert_closed(2), None);
    let w = r.watches();
    let flags = w.get(&a16(9)).expect("watched").0;
    assert_eq!(
        flags,
        sensor_common::watch::AS_SRC | sensor_common::watch::AS_DST
    );
    std::fs::remove_dir_all(&dir).ok();
}
