use std::net::{IpAddr, Ipv4Addr};

use sensor_common::{FlowKey, family, proto};

use super::*;
use crate::{
    detect::ml::iforest::ForestParams,
    flow::{FlowConfig, FlowTable},
    packet::{Parsed, tcp},
};

const S: u64 = 1_000_000_000;

fn key(src: Ipv4Addr, dst: Ipv4Addr, sport: u16, dport: u16) -> FlowKey {
    FlowKey {
        src_addr: src.to_ipv6_mapped().octets(),
        dst_addr: dst.to_ipv6_mapped().octets(),
        src_port: sport,
        dst_port: dport,
        proto: proto::TCP,
        family: family::IPV4,
        _pad: [0; 2],
    }
}

fn pkt(k: FlowKey, flags: u8) -> Parsed {
    Parsed {
        key: k,
        tcp_flags: flags,
        echo: false,
        fragment: false,
    }
}

fn reverse(k: FlowKey) -> FlowKey {
    FlowKey {
        src_addr: k.dst_addr,
        dst_addr: k.src_addr,
        src_port: k.dst_port,
        dst_port: k.src_port,
        ..k
    }
}

/// Web sessions: handshake, a request, a few answers, FIN both ways; as packets in time
/// order, starting at `t0`.
fn web_packets(n: u32, t0: u64) -> Vec<(Parsed, u32, u64)> {
    let server = Ipv4Addr::new(10, 1, 0, 1);
    let mut out = Vec::new();
    for i in 0..n {
        let c = Ipv4Addr::from(0x0a00_0000 + 1 + i % 200);
        let k = key(c, server, 20_000 + i as u16, 80);
        let r = reverse(k);
        let mut at = t0 + u64::from(i) * S / 10;
        let answers = 2 + i % 7;
        let mut send = |p: Parsed, len: u32| {
            at += 3_000_000;
            out.push((p, len, at));
        };
        send(pkt(k, tcp::SYN), 74);
        send(pkt(r, tcp::SYN | tcp::ACK), 74);
        send(pkt(k, tcp::ACK), 66);
        send(pkt(k, tcp::PSH | tcp::ACK), 400);
        for _ in 0..answers {
            send(pkt(r, tcp::ACK), 1400 + i % 66);
        }
        send(pkt(k, tcp::FIN | tcp::ACK), 66);
        send(pkt(r, tcp::FIN | tcp::ACK), 66);
    }
    out.sort_by_key(|p| p.2);
    out
}

fn web_flows(n: u32) -> Vec<crate::flow::Flow> {
    let mut t = FlowTable::new(FlowConfig::default());
    let mut out = Vec::new();
    for (p, len, at) in web_packets(n, 0) {
        t.packet(&p, len, at, &mut |f| out.push(f));
    }
    t.flush(&mut |f| out.push(f));
    out
}

/// Packets through a flow table into `d`, as the pipeline does: events, then the flows
/// they finished. Returns the finished flows' scores.
fn drive(d: &mut Detector, packets: &[(Parsed, u32, u64)]) -> Vec<Option<FlowScore>> {
    let mut t = FlowTable::new(FlowConfig::default());
    t.record_events(true);
    let mut flows = Vec::new();
    let mut scores = Vec::new();
    for (p, len, at) in packets {
        t.packet(p, *len, *at, &mut |f| flows.push(f));
        for ev in t.take_events() {
            d.on_event(&ev);
        }
        for f in flows.drain(..) {
            scores.push(d.on_flow(&f));
        }
    }
    t.flush(&mut |f| flows.push(f));
    for ev in t.take_events() {
        d.on_event(&ev);
    }
    for f in flows.drain(..) {
        scores.push(d.on_flow(&f));
    }
    d.flush();
    scores
}

/// An online model trained on web sessions, its threshold at the highest baseline score.
fn online_model() -> ml::online::OnlineModel {
    use ml::{kitnet::KitParams, online::Online};
    let params = KitParams {
        mapping_samples: 2_000,
        ..KitParams::default()
    };
    let baseline = web_packets(1_500, 0);
    let mut d =
        Detector::new(RuleConfig::default()).with_online(Some(Online::learner(params, 10_000)));
    drive(&mut d, &baseline);
    let trainer = d
        .take_online()
        .and_then(Online::into_trainer)
        .expect("a learner");
    let events = trainer.seen();
    let net = trainer.finish().expect("mapped and trained");
    let mut m = ml::online::model_from(net, params, events, Vec::new());
    let mut d = Detector::new(RuleConfig::default())
        .with_online(Some(Online::judge(m.clone(), 10_000).collecting()));
    drive(&mut d, &baseline);
    let (scores, meta) = d
        .take_online()
        .map(|mut o| o.take_collected())
        .expect("judge");
    m.calibrate(&scores, &meta, 0.0, None, 30 * S);
    m
}

fn model() -> Model {
    let flows = web_flows(600);
    let rows: Vec<[f64; N_FEATURES]> = flows.iter().map(|f| features(f, (1, 1))).collect();
    Model::train(&rows, ForestParams::default(), 0.01, Vec::new()).expect("train")
}

/// 40,000 forged sources, one SYN each, at one victim.
fn spoofed_flood(d: &mut Detector) {
    let mut t = FlowTable::new(FlowConfig::default());
    t.record_events(true);
    let victim = Ipv4Addr::new(10, 9, 9, 9);
    let mut flows = Vec::new();
    for i in 0..40_000u32 {
        let src = Ipv4Addr::from(0xc000_0000 ^ i.wrapping_mul(2_654_435_761));
        let ts = 100 * S + u64::from(i) * 100_000;
        t.packet(
            &pkt(key(src, victim, 1024 + (i % 60_000) as u16, 80), tcp::SYN),
            60,
            ts,
            &mut |f| flows.push(f),
        );
        for ev in t.take_events() {
            d.on_event(&ev);
        }
    }
    t.flush(&mut |f| flows.push(f));
    for f in &flows {
        d.on_flow(f);
    }
    d.flush();
}

/// Model alerts in their final state (the flood flushed every alert closed).
fn ml_alerts(d: &mut Detector) -> Vec<Alert> {
    let mut all = d.book.take_closed();
    all.retain(|a| a.kind == AlertKind::MlAnomaly);
    all
}

/// Rules that never fire on the flood: only the model speaks.
fn quiet_rules() -> RuleConfig {
    RuleConfig {
        ddos_pps: u64::MAX / 4,
        syn_flood_syns: u64::MAX / 4,
        host_sweep_hosts: usize::MAX / 4,
        slow_sweep_hosts: usize::MAX / 4,
        ..RuleConfig::default()
    }
}

/// The case: a spoofed flood the model finds odd flow by flow. Below the rules'
/// thresholds its anomalies become one alert about the victim (after the first few
/// sources), not one per forged source; with the DDoS rule firing they attach to it.
#[test]
fn a_forged_source_flood_gives_a_handful_of_model_alerts() {
    let quiet = quiet_rules();
    let mut d = Detector::new(quiet).with_model(Some(model()));
    spoofed_flood(&mut d);
    let alerts = ml_alerts(&mut d);
    assert!(
        !alerts.is_empty() && alerts.len() <= 12,
        "{} model alerts: {:?}",
        alerts.len(),
        alerts
            .iter()
            .map(|a| (a.src_ip, a.dst_ip))
            .take(20)
            .collect::<Vec<_>>()
    );
    let victim = IpAddr::V4(Ipv4Addr::new(10, 9, 9, 9));
    assert!(
        alerts
            .iter()
            .any(|a| a.src_ip.is_none() && a.dst_ip == Some(victim)),
        "one alert names the victim"
    );

    let mut d = Detector::new(RuleConfig::default()).with_model(Some(model()));
    spoofed_flood(&mut d);
    let all = d.book.take_closed();
    let ddos = all
        .iter()
        .filter(|a| a.kind == AlertKind::Ddos)
        .max_by_key(|a| a.model_anomalies)
        .expect("the DDoS rule fires");
    assert!(ddos.model_anomalies > 30_000, "{}", ddos.model_anomalies);
    // Explained rows: the first EXPLAINED_PER_ALERT of the alert, and those before it
    // opened; the rest are only counted.
    let rows = d.take_anomalies().len() as u64;
    assert!(
        rows < ddos.model_anomalies / 10 && d.anomalies_folded > 0,
        "{rows} anomaly rows, {} folded, {} attached",
        d.anomalies_folded,
        ddos.model_anomalies
    );
    let ml = all
        .iter()
        .filter(|a| a.kind == AlertKind::MlAnomaly)
        .count();
    assert!(ml <= 12, "{ml} model alerts beside the DDoS alert");
}

/// Past the budget, new model alerts fold into one summary alert that counts them.
#[test]
fn the_alert_budget_turns_the_excess_into_one_summary() {
    let quiet = quiet_rules();
    // Every source a victim of its own: no per-victim aggregation can hide the volume.
    let mut d = Detector::new(quiet)
        .with_model(Some(model()))
        .with_volume(AlertVolume {
            per_minute: 5,
            victim_sources: 1_000,
        });
    spoofed_flood(&mut d);
    let alerts = ml_alerts(&mut d);
    let summaries: Vec<&Alert> = alerts
        .iter()
        .filter(|a| matches!(a.evidence, Evidence::Budget(_)))
        .collect();
    assert_eq!(summaries.len(), 1, "{alerts:?}");
    assert!(summaries[0].count > 1_000, "{:?}", summaries[0]);
    assert!(alerts.len() <= 6, "{} alerts", alerts.len());
}

/// The online model judges flows as they run: fresh web sessions stay below its
/// threshold, a port scan's probes do not; each flow carries its highest event score,
/// and the anomaly names the model and the features that explain it.
#[test]
fn the_online_model_flags_a_scan_and_not_web_sessions() {
    let m = online_model();
    let judge = |m: &ml::online::OnlineModel| {
        Detector::new(quiet_rules()).with_online(Some(ml::online::Online::judge(m.clone(), 10_000)))
    };
    let mut d = judge(&m);
    let scores = drive(&mut d, &web_packets(300, 1_000 * S));
    let flagged = scores
        .iter()
        .filter(|s| s.is_some_and(|s| s.anomalous))
        .count();
    assert!(scores.iter().all(Option::is_some), "every flow is scored");
    let which: Vec<usize> = scores
        .iter()
        .enumerate()
        .filter(|(_, s)| s.is_some_and(|s| s.anomalous))
        .map(|(i, _)| i)
        .collect();
    assert!(
        flagged <= 3,
        "{flagged} of 300 web sessions flagged (threshold {}): {which:?}",
        m.threshold
    );

    let mut d = judge(&m);
    let scanner = Ipv4Addr::new(10, 7, 7, 7);
    let target = Ipv4Addr::new(10, 1, 0, 9);
    let mut probes = Vec::new();
    for port in 1..=1_000u16 {
        let k = key(scanner, target, 40_000, port);
        let at = 2_000 * S + u64::from(port) * 200_000;
        probes.push((pkt(k, tcp::SYN), 60, at));
        probes.push((pkt(reverse(k), tcp::RST | tcp::ACK), 54, at + 50_000));
    }
    let scores = drive(&mut d, &probes);
    let flagged = scores
        .iter()
        .filter(|s| s.is_some_and(|s| s.anomalous))
        .count();
    assert!(flagged > 500, "{flagged} of 1000 probes flagged");
    let anomalies = d.take_anomalies();
    assert!(!anomalies.is_empty());
    let doc: serde_json::Value = serde_json::from_str(&anomalies[0].record).expect("json");
    assert_eq!(doc["model"], "kitnet");
    assert_eq!(doc["flow"]["src_ip"], "10.7.7.7");
    assert!(
        doc["top_features"]
            .as_array()
            .is_some_and(|t| !t.is_empty())
    );
    let alerts = ml_alerts(&mut d);
    assert!(
        !alerts.is_empty() && alerts.len() <= 3,
        "one scanner, {} model alerts",
        alerts.len()
    );
    assert_eq!(
        alerts[0].evidence.json()["model"],
        "kitnet",
        "{:?}",
        alerts[0].evidence
    );
}

/// The volume rules hold for the online model too: 40,000 forged sources give a handful
/// of alerts about the victim.
#[test]
fn a_forged_source_flood_gives_a_handful_of_online_model_alerts() {
    let m = online_model();
    let mut d =
        Detector::new(quiet_rules()).with_online(Some(ml::online::Online::judge(m, 10_000)));
    spoofed_flood(&mut d);
    let alerts = ml_alerts(&mut d);
    assert!(
        !alerts.is_empty() && alerts.len() <= 12,
        "{} online model alerts",
        alerts.len()
    );
    let victim = IpAddr::V4(Ipv4Addr::new(10, 9, 9, 9));
    assert!(
        alerts
            .iter()
            .any(|a| a.src_ip.is_none() && a.dst_ip == Some(victim))
    );
}

/// Online model files round-trip; a forest file or a damaged one is a named error.
#[test]
fn online_model_files_round_trip_and_bad_files_are_named() {
    use ml::{model::ModelError, online::OnlineModel};
    let m = online_model();
    let dir = std::env::temp_dir().join(format!("sensor-online-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let p = dir.join("online.json");
    m.save(&p).expect("save");
    assert_eq!(OnlineModel::load(&p).expect("load"), m);
    let f = dir.join("forest.json");
    model().save(&f).expect("save forest");
    let e = OnlineModel::load(&f).expect_err("a forest is no online model");
    assert!(matches!(e, ModelError::Corrupt { .. }), "{e}");
    assert!(e.to_string().contains("kitnet"), "{e}");
    let mut v: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&p).expect("read")).expect("json");
    v["net"]["clusters"][0][0] = serde_json::json!(10_000);
    std::fs::write(&p, v.to_string()).expect("write");
    assert!(matches!(
        OnlineModel::load(&p),
        Err(ModelError::Corrupt { .. })
    ));
    v["version"] = serde_json::json!(99);
    std::fs::write(&p, v.to_string()).expect("write");
    assert!(matches!(
        OnlineModel::load(&p),
        Err(ModelError::Version { found: 99, .. })
    ));
    let _ignored = std::fs::remove_dir_all(&dir);
}

#[allow(
    clippy::too_many_arguments,
    reason = "a session's parts, named at each call"
)]
/// One TCP session: handshake, `up` bytes from the client in 500-byte packets, `down` from the
/// server, FIN both ways, spread over `secs` seconds from `t0`.
fn session(
    c: Ipv4Addr,
    s: Ipv4Addr,
    sport: u16,
    port: u16,
    t0: u64,
    up: u32,
    down: u32,
    secs: u64,
) -> Vec<(Parsed, u32, u64)> {
    let k = key(c, s, sport, port);
    let r = reverse(k);
    let mut p = vec![
        (pkt(k, tcp::SYN), 74),
        (pkt(r, tcp::SYN | tcp::ACK), 74),
        (pkt(k, tcp::ACK), 66),
    ];
    let (mut u, mut d) = (up, down);
    while u > 0 || d > 0 {
        if u > 0 {
            p.push((pkt(k, tcp::PSH | tcp::ACK), u.min(500) + 66));
            u = u.saturating_sub(500);
        }
        if d > 0 {
            p.push((pkt(r, tcp::PSH | tcp::ACK), d.min(500) + 66));
            d = d.saturating_sub(500);
        }
    }
    p.push((pkt(r, tcp::FIN | tcp::ACK), 66));
    p.push((pkt(k, tcp::FIN | tcp::ACK), 66));
    let step = secs * S / p.len() as u64;
    p.into_iter()
        .enumerate()
        .map(|(i, (q, len))| (q, len, t0 + i as u64 * step))
        .collect()
}

fn rule_alerts(packets: Vec<(Parsed, u32, u64)>) -> Vec<Alert> {
    let mut packets = packets;
    packets.sort_by_key(|p| p.2);
    let mut d = Detector::new(RuleConfig::default());
    drive(&mut d, &packets);
    d.book.flush();
    d.book.take_closed()
}

/// hydra against an ssh server: 60 sessions in 5 minutes, each about the same size and two
/// seconds long. Password guessing by that source; and the slow variant, one a minute.
#[test]
fn short_failing_sessions_to_a_login_service_are_password_guessing() {
    let (a, srv) = (Ipv4Addr::new(10, 9, 0, 7), Ipv4Addr::new(10, 1, 0, 22));
    let fast: Vec<_> = (0..60u32)
        .flat_map(|i| {
            session(
                a,
                srv,
                40_000 + i as u16,
                22,
                u64::from(i) * 5 * S,
                1500 + i % 40,
                2100 + i % 30,
                2,
            )
        })
        .collect();
    let alerts = rule_alerts(fast);
    let b: Vec<_> = alerts
        .iter()
        .filter(|x| x.kind == AlertKind::BruteForce)
        .collect();
    assert_eq!(b.len(), 1, "{alerts:?}");
    assert_eq!(
        (b[0].src_ip, b[0].dst_ip),
        (Some(IpAddr::V4(a)), Some(IpAddr::V4(srv)))
    );
    let e = b[0].evidence.json();
    assert_eq!(
        (e["port"].as_u64(), e["service"].as_str()),
        (Some(22), Some("ssh")),
        "{e}"
    );
    assert!(e["attempts"].as_u64() >= Some(20), "{e}");
    assert!(
        crate::detect::evidence::summary(b[0])
            .starts_with("Password guessing on ssh (tcp/22) of 10.1.0.22 from 10.9.0.7"),
        "{}",
        crate::detect::evidence::summary(b[0])
    );
    let slow: Vec<_> = (0..25u32)
        .flat_map(|i| {
            session(
                a,
                srv,
                41_000 + i as u16,
                22,
                u64::from(i) * 60 * S,
                1500,
                2100,
                2,
            )
        })
        .collect();
    assert!(
        rule_alerts(slow)
            .iter()
            .any(|x| x.kind == AlertKind::BruteForce),
        "one a minute for 25 minutes"
    );
}

/// Guessing spread over 15 sources, five tries each (none reported alone): `*` at the service.
#[test]
fn guessing_from_many_sources_at_one_service_is_one_alert_without_a_source() {
    let srv = Ipv4Addr::new(10, 1, 0, 21);
    let mut p = Vec::new();
    for s in 0..15u32 {
        for i in 0..5u32 {
            let c = Ipv4Addr::new(198, 51, 100, s as u8 + 1);
            p.extend(session(
                c,
                srv,
                30_000 + (s * 5 + i) as u16,
                21,
                u64::from(s * 5 + i) * 3 * S,
                300,
                450,
                1,
            ));
        }
    }
    let alerts = rule_alerts(p);
    let b: Vec<_> = alerts
        .iter()
        .filter(|x| x.kind == AlertKind::BruteForce)
        .collect();
    assert_eq!(b.len(), 1, "{alerts:?}");
    assert_eq!((b[0].src_ip, b[0].dst_ip), (None, Some(IpAddr::V4(srv))));
    assert_eq!(b[0].evidence.json()["sources"], 15);
}

/// What password guessing is not: an admin opening a session on each of 40 servers, a user
/// reconnecting a dozen times in 10 minutes, 25 file transfers, sessions whose answers
/// differ every time.
#[test]
fn admins_users_transfers_and_varied_sessions_are_not_password_guessing() {
    let a = Ipv4Addr::new(10, 9, 0, 8);
    let fan_out: Vec<_> = (0..40u32)
        .flat_map(|i| {
            session(
                a,
                Ipv4Addr::new(10, 2, 0, i as u8 + 1),
                42_000 + i as u16,
                22,
                u64::from(i) * S,
                1500,
                2100,
                2,
            )
        })
        .collect();
    let srv = Ipv4Addr::new(10, 1, 0, 22);
    let reconnects: Vec<_> = (0..12u32)
        .flat_map(|i| {
            session(
                a,
                srv,
                43_000 + i as u16,
                22,
                u64::from(i) * 50 * S,
                1500,
                2100,
                2,
            )
        })
        .collect();
    let transfers: Vec<_> = (0..25u32)
        .flat_map(|i| {
            session(
                a,
                srv,
                44_000 + i as u16,
                22,
                u64::from(i) * 20 * S,
                1500,
                200_000,
                10,
            )
        })
        .collect();
    let varied: Vec<_> = (0..40u32)
        .flat_map(|i| {
            session(
                a,
                srv,
                45_000 + i as u16,
                22,
                u64::from(i) * 10 * S,
                1500,
                500 + (i * 7919) % 20_000,
                2,
            )
        })
        .collect();
    for (what, p) in [
        ("fan-out", fan_out),
        ("reconnects", reconnects),
        ("transfers", transfers),
        ("varied", varied),
    ] {
        let alerts = rule_alerts(p);
        assert!(
            !alerts.iter().any(|x| x.kind == AlertKind::BruteForce),
            "{what}: {alerts:?}"
        );
    }
}

fn beacon_alerts(cfg: RuleConfig, packets: Vec<(Parsed, u32, u64)>) -> Vec<Alert> {
    let mut packets = packets;
    packets.sort_by_key(|p| p.2);
    let mut d = Detector::new(cfg);
    drive(&mut d, &packets);
    d.book.flush();
    let mut all = d.book.take_closed();
    all.retain(|a| a.kind == AlertKind::Beaconing);
    all
}

/// An implant calling home every minute with 10% jitter, about the same bytes each time.
#[test]
fn a_host_calling_one_endpoint_on_a_period_with_jitter_is_beaconing() {
    let (a, c2) = (Ipv4Addr::new(10, 9, 0, 5), Ipv4Addr::new(203, 0, 113, 9));
    let calls: Vec<_> = (0..24u64)
        .flat_map(|i| {
            let jitter = (i * i * 7919 % 13) as i64 - 6; // -6 .. +6 s
            let t = (i * 60) as i64 + jitter;
            session(
                a,
                c2,
                50_000 + i as u16,
                443,
                (t + 100) as u64 * S,
                300 + (i % 3) as u32,
                900,
                1,
            )
        })
        .collect();
    let b = beacon_alerts(RuleConfig::default(), calls.clone());
    assert_eq!(b.len(), 1, "{b:?}");
    assert_eq!(
        (b[0].src_ip, b[0].dst_ip),
        (Some(IpAddr::V4(a)), Some(IpAddr::V4(c2)))
    );
    let e = b[0].evidence.json();
    assert!(
        (55.0..=65.0).contains(&e["period_s"].as_f64().unwrap_or(0.0)),
        "{e}"
    );
    assert!(
        crate::detect::evidence::summary(&b[0])
            .starts_with("Beaconing from 10.9.0.5 to 203.0.113.9 (tcp/443)"),
        "{}",
        crate::detect::evidence::summary(&b[0])
    );
    // The same calls into the home network from outside it: not an implant inside.
    let home = RuleConfig {
        beacon_home: vec!["203.0.113.0/24".into()],
        ..RuleConfig::default()
    };
    assert!(beacon_alerts(home, calls.clone()).is_empty());
    let allowed = RuleConfig {
        beacon_allow: vec!["203.0.113.9/32".into()],
        ..RuleConfig::default()
    };
    assert!(beacon_alerts(allowed, calls).is_empty());
}

/// What beacons and is not command and control: a time server five hosts poll, a scraper
/// polling ten targets, a user visiting a site at random moments.
#[test]
fn infrastructure_pollers_and_random_visits_are_not_beaconing() {
    let ntp = Ipv4Addr::new(192, 0, 2, 123);
    let infra: Vec<_> = (0..5u32)
        .flat_map(|h| {
            (0..16u64).flat_map(move |i| {
                session(
                    Ipv4Addr::new(10, 9, 1, h as u8 + 1),
                    ntp,
                    40_000 + i as u16,
                    123,
                    (i * 64 + u64::from(h)) * S,
                    90,
                    90,
                    1,
                )
            })
        })
        .collect();
    assert!(
        beacon_alerts(RuleConfig::default(), infra).is_empty(),
        "time server"
    );
    let scraper = Ipv4Addr::new(10, 9, 2, 1);
    let polls: Vec<_> = (0..10u32)
        .flat_map(|t| {
            (0..16u64).flat_map(move |i| {
                session(
                    scraper,
                    Ipv4Addr::new(10, 9, 3, t as u8 + 1),
                    41_000 + (t * 16) as u16 + i as u16,
                    9100,
                    (i * 15 + u64::from(t)) * S,
                    200,
                    4000,
                    1,
                )
            })
        })
        .collect();
    assert!(
        beacon_alerts(RuleConfig::default(), polls).is_empty(),
        "scraper"
    );
    let user = Ipv4Addr::new(10, 9, 4, 1);
    let visits: Vec<_> = (0..20u64)
        .flat_map(|i| {
            let t = i * i * 37 % 3000 + i * 50;
            session(
                user,
                Ipv4Addr::new(198, 51, 100, 80),
                42_000 + i as u16,
                443,
                t * S,
                500,
                2000 + (i * 7919 % 30_000) as u32,
                2,
            )
        })
        .collect();
    assert!(
        beacon_alerts(RuleConfig::default(), visits).is_empty(),
        "random visits"
    );
    // A server's heartbeat to a directory every 10 minutes, always from its service port.
    let heartbeat: Vec<_> = (0..24u64)
        .flat_map(|i| {
            session(
                Ipv4Addr::new(10, 9, 5, 1),
                Ipv4Addr::new(198, 51, 100, 7),
                2011,
                2010,
                i * 600 * S,
                108,
                108,
                1,
            )
        })
        .collect();
    assert!(
        beacon_alerts(RuleConfig::default(), heartbeat).is_empty(),
        "a service's heartbeat"
    );
}

/// An alert's record says which way the attack went and which group its victim is in, from
/// `[networks]`; without home networks it says neither.
#[test]
fn an_alert_record_carries_direction_and_hostgroup() {
    use crate::networks::{Direction, HostgroupConfig, NetworksConfig};
    let nets = NetworksConfig {
        home: vec!["10.9.9.0/24".into()],
        hostgroups: vec![HostgroupConfig {
            name: "web".into(),
            prefixes: vec!["10.9.9.9".into()],
            ..HostgroupConfig::default()
        }],
    };
    let mut d = Detector::new(RuleConfig::default()).with_networks(nets.build());
    spoofed_flood(&mut d);
    let closed = d.book.take_closed();
    let ddos = closed
        .iter()
        .find(|a| a.kind == AlertKind::Ddos)
        .expect("the flood's alert");
    let rec = d.record(ddos);
    assert_eq!(rec.direction, Some(Direction::Incoming), "{rec:?}");
    assert_eq!(rec.hostgroup.as_deref(), Some("web"));
    let json = serde_json::to_value(&rec).expect("json");
    assert_eq!(
        (json["direction"].as_str(), json["hostgroup"].as_str()),
        (Some("incoming"), Some("web"))
    );
    let plain = Detector::new(RuleConfig::default()).record(ddos);
    assert_eq!((plain.direction, plain.hostgroup.as_deref()), (None, None));
    let json = serde_json::to_value(&plain).expect("json");
    assert!(json.get("direction").is_none(), "{json}");
}

/// An alert's record says where its remote side is (`[geo]`): the attacker of an incoming
/// attack, whom one of ours attacks when it goes out; nothing without the data.
#[test]
fn an_alert_record_carries_its_remote_sides_country_and_as() {
    use crate::networks::NetworksConfig;
    let dir = std::env::temp_dir().join(format!("sensor-geo-rec-{}", std::process::id()));
    let _ignored = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("dir");
    std::fs::write(
        dir.join("asn-ipv4.csv"),
        "8.8.4.0,8.8.4.255,64500,Example Net\n",
    )
    .expect("csv");
    let geo = crate::geo::load(&dir).expect("loads").expect("has data");
    let nets = NetworksConfig {
        home: vec!["10.9.9.0/24".into()],
        ..NetworksConfig::default()
    };
    let d = Detector::new(RuleConfig::default())
        .with_networks(nets.build())
        .with_geo(crate::geo::Geo::loaded(Some(geo)));
    let (ours, theirs): (IpAddr, IpAddr) =
        ("10.9.9.9".parse().unwrap(), "8.8.4.7".parse().unwrap());
    let alert = |src: IpAddr, dst: IpAddr| alert::Alert {
        id: 1,
        state: crate::record::AlertState::Open,
        merged_into: None,
        kind: AlertKind::PortScan,
        severity: crate::record::Severity::High,
        detector: alert::DetectorKind::Rule,
        src_ip: Some(src),
        dst_ip: Some(dst),
        first_seen_ns: S,
        last_seen_ns: S,
        count: 1,
        score: None,
        peak_rate: 20.0,
        evidence: Evidence::None,
        model_anomalies: 0,
        model_max_score: 0.0,
        last_rate: 20.0,
        history: Vec::new(),
    };
    for (a, what) in [
        (alert(theirs, ours), "incoming: the attacker"),
        (alert(ours, theirs), "outgoing: its target"),
    ] {
        let r = d
            .record(&a)
            .remote
            .unwrap_or_else(|| panic!("{what}: no origin"));
        assert_eq!(
            (r.ip, r.asn, r.as_org.as_deref()),
            (theirs, Some(64500), Some("Example Net")),
            "{what}"
        );
    }
    let plain = Detector::new(RuleConfig::default()).record(&alert(theirs, ours));
    assert!(plain.remote.is_none());
    // A private attacker has no origin to look up.
    let lan: IpAddr = "192.168.1.5".parse().unwrap();
    assert!(d.record(&alert(lan, ours)).remote.is_none());
    assert!(
        serde_json::to_value(&plain)
            .expect("json")
            .get("remote")
            .is_none()
    );
    let _ignored = std::fs::remove_dir_all(&dir);
}

/// An operator rule through the whole detector (flow table events): the issue's "more than 50
/// new connections a minute to tcp/3389 from one source", which no built-in rule names; the
/// alert's kind is the rule's name in the record and its sentence says what was counted.
#[test]
fn an_operator_rule_raises_its_own_kind_through_the_detector() {
    let rule: crate::detect::rules::custom::CustomRule = toml::from_str(
        "name = \"rdp_connections\"\nseverity = \"high\"\nproto = \"tcp\"\ndst_ports = [3389]\n\
         syn_only = true\ncount = \"flows\"\nwindow_s = 60\nthreshold = 50\n",
    )
    .expect("rule");
    let mut d = Detector::new(RuleConfig {
        custom: vec![rule],
        ..RuleConfig::default()
    });
    let mut t = FlowTable::new(FlowConfig::default());
    t.record_events(true);
    let (src, victim) = (Ipv4Addr::new(198, 51, 100, 7), Ipv4Addr::new(10, 9, 9, 9));
    let mut flows = Vec::new();
    for i in 0..60u16 {
        let ts = 100 * S + u64::from(i) * 800_000_000;
        t.packet(
            &pkt(key(src, victim, 40_000 + i, 3389), tcp::SYN),
            60,
            ts,
            &mut |f| flows.push(f),
        );
        for ev in t.take_events() {
            d.on_event(&ev);
        }
        d.tick(ts);
    }
    d.flush();
    let closed = d.book.take_closed();
    let kinds: Vec<&str> = closed.iter().map(|a| a.kind.as_str()).collect();
    assert_eq!(
        kinds,
        vec!["rdp_connections"],
        "no built-in rule names it: {kinds:?}"
    );
    let rec = d.record(&closed[0]);
    let json = serde_json::to_value(&rec).expect("json");
    assert_eq!(json["kind"], "rdp_connections");
    assert_eq!(json["severity"], "high");
    assert!(
        rec.summary
            .starts_with("Operator rule rdp_connections: 60 new connections from 198.51.100.7"),
        "{}",
        rec.summary
    );
}
