use std::net::{Ipv4Addr, Ipv6Addr};

use super::*;

/// The spec's published vectors (corelight/community-id-spec, baseline/README.md and
/// baseline_deflt.json, seed 0), passed the way the sensor keys flows (ICMP type and code
/// in the destination port).
#[test]
fn community_id_matches_the_specs_test_vectors() {
    let v4 = |a, b, c, d| IpAddr::V4(Ipv4Addr::new(a, b, c, d));
    let v6 = |s: &str| IpAddr::V6(s.parse::<Ipv6Addr>().expect("v6"));
    let cases = [
        (
            v4(1, 2, 3, 4),
            v4(5, 6, 7, 8),
            6,
            1122,
            3344,
            "1:wCb3OG7yAFWelaUydu0D+125CLM=",
        ),
        (
            v4(5, 6, 7, 8),
            v4(1, 2, 3, 4),
            6,
            3344,
            1122,
            "1:wCb3OG7yAFWelaUydu0D+125CLM=",
        ),
        (
            v4(1, 2, 3, 4),
            v4(5, 6, 7, 8),
            17,
            1122,
            3344,
            "1:0Mu9InQx6z4ZiCZM/7HXi2WMhOg=",
        ),
        (
            v4(1, 2, 3, 4),
            v4(5, 6, 7, 8),
            132,
            1122,
            3344,
            "1:EKt4MsxuyaE6mL+hmrEkQ9csDD8=",
        ),
        // ICMP echo request (type 8) and its reply (type 0): one id.
        (
            v4(1, 2, 3, 4),
            v4(5, 6, 7, 8),
            1,
            0,
            8 << 8,
            "1:crodRHL2FEsHjbv3UkRrfbs4bZ0=",
        ),
        (
            v4(5, 6, 7, 8),
            v4(1, 2, 3, 4),
            1,
            0,
            0,
            "1:crodRHL2FEsHjbv3UkRrfbs4bZ0=",
        ),
        // Time exceeded (type 11): one-way.
        (
            v4(1, 2, 3, 4),
            v4(5, 6, 7, 8),
            1,
            0,
            11 << 8,
            "1:f/YiSyWqczrTgfUCZlBUnvHRcPk=",
        ),
        (
            v4(192, 168, 1, 52),
            v4(8, 8, 8, 8),
            17,
            54585,
            53,
            "1:d/FP5EW3wiY1vCndhwleRRKHowQ=",
        ),
        (
            v4(128, 232, 110, 120),
            v4(66, 35, 250, 204),
            6,
            34855,
            80,
            "1:LQU9qZlK+B5F3KDmev6m5PMibrg=",
        ),
        (
            v6("2001:470:e5bf:dead:4957:2174:e82c:4887"),
            v6("2607:f8b0:400c:c03::1a"),
            6,
            63943,
            25,
            "1:/qFaeAR+gFe1KYjMzVDsMv+wgU4=",
        ),
        // ICMPv6 router solicitation (133) to all routers, and neighbour discovery.
        (
            v6("fe80::200:86ff:fe05:80da"),
            v6("ff02::2"),
            58,
            0,
            133 << 8,
            "1:hO+sN4H+MG5MY/8hIrXPqc4ZQz0=",
        ),
        (
            v6("3ffe:507:0:1:200:86ff:fe05:80da"),
            v6("3ffe:501:0:1001::2"),
            58,
            0,
            128 << 8,
            "1:+TW+HtLHvV1xnGhV1lv7XoJrqQg=",
        ),
        // No ports (RSVP).
        (
            v4(10, 1, 12, 1),
            v4(10, 1, 12, 2),
            46,
            0,
            0,
            "1:KHlLkgoJW7ifUTyTSgyVfkFHzKw=",
        ),
    ];
    for (s, d, p, sp, dp, want) in cases {
        assert_eq!(
            community_id(s, d, p, sp, dp).as_deref(),
            Some(want),
            "{s} -> {d} proto {p} {sp}/{dp}"
        );
    }
}

#[test]
fn timestamps_have_suricatas_form() {
    assert_eq!(
        timestamp(1_764_748_800_123_456_789),
        "2025-12-03T08:00:00.123456+0000"
    );
}

/// `[networks]` and `[geo]` reach a SIEM in the alert's rule metadata, as lists of strings.
#[test]
fn an_alerts_direction_and_hostgroup_are_in_its_metadata() {
    use crate::detect::{
        Severity,
        alert::{AlertKind, DetectorKind},
    };
    let mut a = AlertRecord {
        id: 3,
        state: crate::record::AlertState::Open,
        merged_into: None,
        kind: AlertKind::Ddos,
        severity: Severity::High,
        detector: DetectorKind::Rule,
        src_ip: None,
        dst_ip: Some(IpAddr::V4(Ipv4Addr::new(10, 77, 1, 10))),
        first_seen: "2026-01-01T00:00:00.000000Z".into(),
        last_seen: "2026-01-01T00:00:01.000000Z".into(),
        count: 1,
        score: None,
        summary: String::new(),
        evidence: serde_json::json!({}),
        rate_history: Vec::new(),
        pcap: None,
        direction: Some(crate::networks::Direction::Incoming),
        hostgroup: Some("web".into()),
        remote: Some(crate::geo::Origin {
            ip: IpAddr::V4(Ipv4Addr::new(8, 8, 8, 8)),
            country: Some("US".into()),
            asn: Some(15169),
            as_org: Some("Google LLC".into()),
        }),
    };
    let v = serde_json::to_value(alert_event(&a, "gw")).expect("json");
    let m = &v["alert"]["metadata"];
    assert_eq!(m["direction"], serde_json::json!(["incoming"]), "{v}");
    assert_eq!(m["hostgroup"], serde_json::json!(["web"]), "{v}");
    assert_eq!(m["remote_country"], serde_json::json!(["US"]), "{v}");
    assert_eq!(m["remote_asn"], serde_json::json!(["15169"]), "{v}");
    assert_eq!(m["remote_as_org"], serde_json::json!(["Google LLC"]), "{v}");
    a.direction = None;
    a.hostgroup = None;
    let v = serde_json::to_value(alert_event(&a, "gw")).expect("json");
    assert!(v["alert"]["metadata"].get("direction").is_none(), "{v}");
}
