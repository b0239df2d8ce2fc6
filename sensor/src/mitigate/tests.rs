use super::*;
use crate::{
    detect::evidence::{Evidence, FloodEvidence, Sources, Vector},
    record::{DetectorKind, Severity},
};

fn flood(v: Vector, dst_port: Option<u16>) -> Evidence {
    Evidence::Flood(FloodEvidence {
        dst_port,
        ..FloodEvidence::new(v, Sources::Counted(1))
    })
}

fn alert(kind: AlertKind, src: Option<&str>, dst: &str, evidence: Evidence) -> Alert {
    Alert {
        state: crate::record::AlertState::Open,
        merged_into: None,
        id: 7,
        kind,
        severity: Severity::High,
        detector: DetectorKind::Rule,
        src_ip: src.map(|s| s.parse().expect("ip")),
        dst_ip: Some(dst.parse().expect("ip")),
        first_seen_ns: 0,
        last_seen_ns: 0,
        count: 1,
        score: None,
        peak_rate: 0.0,
        evidence,
        model_anomalies: 0,
        model_max_score: 0.0,
        last_rate: 0.0,
        history: Vec::new(),
    }
}

fn mitigator(kinds: &[AlertKind]) -> Mitigator {
    Mitigator::new(MitigationConfig {
        kinds: kinds.to_vec(),
        ..MitigationConfig::default()
    })
}

#[test]
fn single_source_alerts_block_the_source_never_the_victim() {
    let mut m = mitigator(&[AlertKind::SynFlood, AlertKind::PortScan]);
    let a = alert(
        AlertKind::SynFlood,
        Some("203.0.113.7"),
        "198.51.100.20",
        flood(Vector::TcpSyn, None),
    );
    m.alert_opened(&a, None);
    let list = m.list(None).expect("list");
    assert_eq!(list.len(), 1, "{list:?}");
    assert_eq!(list[0]["target"], "203.0.113.7/32");
    assert_eq!(list[0]["enforced"], false, "no program loaded");
    let ev = m.take_events();
    assert_eq!(
        (ev[0].action.as_str(), ev[0].alert_id),
        ("block", Some(7)),
        "{ev:?}"
    );
    // A kind not listed does nothing.
    m.alert_opened(
        &alert(
            AlertKind::HostSweep,
            Some("203.0.113.9"),
            "198.51.100.1",
            Evidence::None,
        ),
        None,
    );
    assert_eq!(m.entries(), (1, 0));
}

#[test]
fn spoofed_floods_limit_the_flooded_protocol_toward_the_victim() {
    let mut m = mitigator(&[AlertKind::Ddos, AlertKind::SynFlood]);
    m.alert_opened(
        &alert(
            AlertKind::Ddos,
            None,
            "198.51.100.20",
            flood(Vector::TcpSyn, Some(80)),
        ),
        None,
    );
    let list = m.list(None).expect("list");
    assert_eq!(list.len(), 1);
    let l = &list[0];
    assert_eq!(
        (&l["target"], &l["proto"], &l["syn_only"], &l["dst_port"]),
        (
            &json!("rate:198.51.100.20/tcp"),
            &json!("tcp"),
            &json!(true),
            &json!(80)
        ),
        "{l}"
    );
    assert_eq!(m.entries(), (0, 1), "no source blocked");
    m.alert_opened(
        &alert(
            AlertKind::Ddos,
            None,
            "198.51.100.21",
            flood(Vector::Any, None),
        ),
        None,
    );
    assert!(
        m.list(None)
            .expect("list")
            .iter()
            .any(|l| l["target"] == "rate:198.51.100.21/any")
    );
}

#[test]
fn allowlisted_and_special_sources_are_refused_with_an_audit_row() {
    let mut m = Mitigator::new(MitigationConfig {
        kinds: vec![AlertKind::PortScan],
        allow: vec!["192.0.2.0/24".parse().expect("net")],
        ..MitigationConfig::default()
    });
    m.alert_opened(
        &alert(
            AlertKind::PortScan,
            Some("192.0.2.50"),
            "198.51.100.20",
            Evidence::None,
        ),
        None,
    );
    assert_eq!(m.entries(), (0, 0));
    let ev = m.take_events();
    assert_eq!(ev.len(), 1);
    assert_eq!(ev[0].action, "refuse");
    assert!(ev[0].reason.contains("allowlist"), "{}", ev[0].reason);
    let r = m.block(
        parse_prefix("127.0.0.1").expect("parse"),
        60,
        "api".into(),
        Origin::Api,
        None,
    );
    assert!(matches!(r, Err(MitigateError::Refused(_))), "{r:?}");
}

#[test]
fn expiry_removes_api_entries_and_renews_entries_of_open_alerts() {
    let mut m = mitigator(&[AlertKind::PortScan]);
    m.block(
        parse_prefix("203.0.113.0/24").expect("net"),
        60,
        "by hand".into(),
        Origin::Api,
        None,
    )
    .expect("block");
    m.alert_opened(
        &alert(
            AlertKind::PortScan,
            Some("198.51.100.66"),
            "192.0.2.1",
            Evidence::None,
        ),
        None,
    );
    // Both expired now.
    for e in m.blocks.values_mut() {
        e.expires_ns = 1;
    }
    m.take_events();
    m.sweep(None).expect("sweep");
    let ev = m.take_events();
    let actions: Vec<(&str, &str)> = ev
        .iter()
        .map(|e| (e.action.as_str(), e.target.as_str()))
        .collect();
    assert!(
        actions.contains(&("expire", "203.0.113.0/24")),
        "{actions:?}"
    );
    assert!(
        actions.contains(&("renew", "198.51.100.66/32")),
        "{actions:?}"
    );
    assert_eq!(m.entries(), (1, 0));
    // Once the alert closes, its entry expires for good.
    m.alert_closed(7);
    for e in m.blocks.values_mut() {
        e.expires_ns = 1;
    }
    m.sweep(None).expect("sweep");
    assert_eq!(m.entries(), (0, 0));
    assert_eq!(m.take_events()[0].action, "expire");
}

#[test]
fn prefixes_parse_normalised_and_bad_ones_are_explained() {
    assert_eq!(
        parse_prefix("203.0.113.7").expect("p").to_string(),
        "203.0.113.7/32"
    );
    assert_eq!(
        parse_prefix("203.0.113.7/24").expect("p").to_string(),
        "203.0.113.0/24"
    );
    assert_eq!(
        parse_prefix("::ffff:203.0.113.7").expect("p").to_string(),
        "203.0.113.7/32"
    );
    assert_eq!(
        parse_prefix("2001:db8::1/48").expect("p").to_string(),
        "2001:db8::/48"
    );
    let e = parse_prefix("203.0.113.300").expect_err("bad");
    assert!(e.to_string().contains("not an address"), "{e}");
    assert_eq!(
        kernel_key(&parse_prefix("10.1.2.0/24").expect("p")),
        (
            std::net::Ipv4Addr::new(10, 1, 2, 0)
                .to_ipv6_mapped()
                .octets(),
            120
        )
    );
}
