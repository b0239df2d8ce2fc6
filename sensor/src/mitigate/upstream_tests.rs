//! The upstream policy against a speaker double that keeps a RIB and sessions in memory.

use std::{
    collections::BTreeMap,
    net::IpAddr,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use super::*;
use crate::{
    detect::evidence::{FloodEvidence, ReflectedService, Sources},
    mitigate::bgp::BgpError,
    networks::{GroupBgp, HostgroupConfig, NetworksConfig},
    record::{AlertState, DetectorKind, Severity},
};

#[derive(Default)]
struct Fake {
    rib: BTreeMap<Route, FlowAction>,
    peers: Vec<Peer>,
    unreachable: bool,
}

#[derive(Clone, Default)]
struct FakeSpeaker(Arc<Mutex<Fake>>);

impl FakeSpeaker {
    fn with<T>(&self, f: impl FnOnce(&mut Fake) -> T) -> T {
        f(&mut self.0.lock().expect("fake speaker"))
    }
}

fn down() -> BgpError {
    BgpError::Refused {
        args: "neighbor -j".into(),
        message: "connection refused".into(),
    }
}

impl Speaker for FakeSpeaker {
    fn announce(&mut self, r: &Route, action: FlowAction) -> Result<(), BgpError> {
        self.with(|f| {
            if f.unreachable {
                return Err(down());
            }
            f.rib.insert(r.clone(), action);
            Ok(())
        })
    }
    fn withdraw(&mut self, r: &Route) -> Result<(), BgpError> {
        self.with(|f| {
            f.rib.remove(r);
            Ok(())
        })
    }
    fn routes(&mut self) -> Result<Vec<Route>, BgpError> {
        self.with(|f| {
            if f.unreachable {
                return Err(down());
            }
            Ok(f.rib.keys().cloned().collect())
        })
    }
    fn peers(&mut self) -> Result<Vec<Peer>, BgpError> {
        self.with(|f| {
            if f.unreachable {
                return Err(down());
            }
            Ok(f.peers.clone())
        })
    }
}

fn ip(s: &str) -> IpAddr {
    s.parse().expect("address")
}

fn peer(up: bool) -> Peer {
    Peer {
        address: ip("10.99.0.1"),
        asn: 65000,
        established: up,
        state: if up { "established" } else { "active" }.into(),
    }
}

fn networks() -> Networks {
    NetworksConfig {
        home: vec!["10.20.0.0/24".into()],
        hostgroups: vec![
            HostgroupConfig {
                name: "office".into(),
                prefixes: vec!["10.20.0.128/25".into()],
                bgp: GroupBgp {
                    flowspec_pps: Some(50_000),
                    ..GroupBgp::default()
                },
                ..HostgroupConfig::default()
            },
            HostgroupConfig {
                name: "lab".into(),
                prefixes: vec!["10.20.0.64/26".into()],
                bgp: GroupBgp {
                    announce: Some(false),
                    ..GroupBgp::default()
                },
                ..HostgroupConfig::default()
            },
        ],
    }
    .build()
}

fn upstream(cfg: BgpConfig) -> (Upstream, FakeSpeaker) {
    let fake = FakeSpeaker::default();
    fake.with(|f| f.peers = vec![peer(true)]);
    let u = Upstream::with_speaker(
        BgpConfig {
            enabled: true,
            check_ms: 100,
            ..cfg
        },
        networks(),
        Vec::new(),
        Box::new(fake.clone()),
    );
    (u, fake)
}

/// An NTP reflection flood into `victim` at `pps`.
fn reflection(id: u64, victim: &str, pps: f64) -> Alert {
    let mut ev = FloodEvidence::new(Vector::UdpReflection, Sources::Counted(40));
    ev.reflected_service = Some(ReflectedService {
        port: 123,
        name: Some("ntp"),
        share: 0.97,
    });
    Alert {
        id,
        state: AlertState::Open,
        merged_into: None,
        kind: AlertKind::Ddos,
        severity: Severity::High,
        detector: DetectorKind::Rule,
        src_ip: None,
        dst_ip: Some(ip(victim)),
        first_seen_ns: 1,
        last_seen_ns: 1,
        count: 1,
        score: None,
        peak_rate: pps,
        evidence: Evidence::Flood(ev),
        model_anomalies: 0,
        model_max_score: 0.0,
        last_rate: pps,
        history: Vec::new(),
    }
}

/// Ticks until `done` holds (the speaker works on its own thread); panics after 5 s.
fn until(u: &mut Upstream, what: &str, mut done: impl FnMut(&mut Upstream) -> bool) {
    let start = Instant::now();
    loop {
        u.tick();
        if done(u) {
            return;
        }
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "waited 5 s for {what}; audit so far: {:?}",
            u.events
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn actions(u: &Upstream) -> Vec<(String, String)> {
    u.events
        .iter()
        .map(|e| (e.action.clone(), e.target.clone()))
        .collect()
}

#[test]
fn a_reflection_flood_is_dropped_upstream_by_its_narrowest_rule_and_rtbh_only_above_its_level() {
    let (mut u, fake) = upstream(BgpConfig {
        rtbh_pps: 100_000,
        ..BgpConfig::default()
    });
    u.alert(&reflection(1, "10.20.0.5", 20_000.0));
    let fs = Route::FlowSpec(FlowMatch {
        dst: ip("10.20.0.5"),
        src: None,
        proto: Some(sensor_common::proto::UDP),
        src_port: Some(123),
        dst_port: None,
        tcp_flags: None,
    });
    until(&mut u, "the FlowSpec announce", |u| {
        actions(u).contains(&("announce".into(), fs.to_string()))
    });
    assert_eq!(fs.to_string(), "flowspec:10.20.0.5/32 udp src-port 123");
    assert_eq!(
        fake.with(|f| f.rib.clone()),
        BTreeMap::from([(fs.clone(), FlowAction::Discard)]),
        "below the RTBH level, the FlowSpec rule alone"
    );
    // The attack grows past the last level: the victim's /32 is blackholed too.
    u.alert(&reflection(1, "10.20.0.5", 150_000.0));
    until(&mut u, "the RTBH announce", |u| {
        actions(u).contains(&("announce".into(), "rtbh:10.20.0.5/32".into()))
    });
    assert!(fake.with(|f| f.rib.contains_key(&Route::Rtbh(ip("10.20.0.5")))));
    let view = u.view();
    assert_eq!(view["announcements"].as_array().map(Vec::len), Some(2));
    assert_eq!(view["sessions"][0]["established"], true, "{view}");
    // Open: renewed at expiry. Closed: withdrawn once the TTL runs out.
    let far = unix_now_ns() + 2 * u.cfg.ttl_s * NS;
    u.tick_at(far);
    assert!(actions(&u).iter().any(|(a, _)| a == "renew"));
    u.alert_closed(1);
    u.tick_at(far + 2 * u.cfg.ttl_s * NS);
    until(&mut u, "both withdrawals", |u| {
        actions(u).iter().filter(|(a, _)| a == "withdraw").count() == 2
    });
    assert!(fake.with(|f| f.rib.is_empty()), "nothing left upstream");
}

#[test]
fn nothing_is_announced_outside_home_from_inside_for_an_allowed_host_or_past_the_cap() {
    let fake = FakeSpeaker::default();
    let mut u = Upstream::with_speaker(
        BgpConfig {
            enabled: true,
            max_announcements: 1,
            check_ms: 100,
            ..BgpConfig::default()
        },
        networks(),
        vec!["10.20.0.9/32".parse().expect("prefix")],
        Box::new(fake.clone()),
    );
    // Outside home: one of ours flooding out, never an announcement about it.
    u.alert(&reflection(1, "203.0.113.9", 90_000.0));
    u.alert(&reflection(1, "203.0.113.9", 95_000.0));
    // From one of ours to one of ours: the upstream never sees it.
    let mut internal = reflection(2, "10.20.0.6", 90_000.0);
    internal.src_ip = Some(ip("10.20.0.7"));
    u.alert(&internal);
    // Allowlisted; a group that announces nothing; a group whose level is not reached.
    u.alert(&reflection(3, "10.20.0.9", 90_000.0));
    u.alert(&reflection(4, "10.20.0.70", 90_000.0));
    u.alert(&reflection(5, "10.20.0.200", 40_000.0));
    // One in flight at most.
    u.alert(&reflection(6, "10.20.0.10", 90_000.0));
    u.alert(&reflection(7, "10.20.0.11", 90_000.0));
    until(&mut u, "the one announce", |u| {
        actions(u).iter().any(|(a, _)| a == "announce")
    });
    let refused: Vec<(Option<u64>, String)> = u
        .events
        .iter()
        .filter(|e| e.action == "refuse")
        .map(|e| (e.alert_id, e.reason.clone()))
        .collect();
    assert_eq!(refused.len(), 5, "one row per refused alert: {refused:#?}");
    for (id, needle) in [
        (1, "outside [networks] home"),
        (2, "is one of ours"),
        (3, "allowlist"),
        (4, "announces nothing"),
        (7, "max_announcements"),
    ] {
        assert!(
            refused
                .iter()
                .any(|(a, r)| *a == Some(id) && r.contains(needle)),
            "alert {id} refused for {needle:?}: {refused:#?}"
        );
    }
    let rib = fake.with(|f| f.rib.clone());
    assert_eq!(rib.len(), 1, "{rib:?}");
    assert_eq!(rib.keys().next().map(Route::victim), Some(ip("10.20.0.10")));
}

#[test]
fn a_restarted_speaker_gets_its_routes_back_and_a_down_session_is_reported() {
    let fake = FakeSpeaker::default();
    // Left by an earlier run: a home victim's rule is withdrawn at start, another is not ours.
    let stale = Route::Rtbh(ip("10.20.0.33"));
    let foreign = Route::Rtbh(ip("198.51.100.1"));
    fake.with(|f| {
        f.peers = vec![peer(true)];
        f.rib.insert(stale.clone(), FlowAction::Discard);
        f.rib.insert(foreign.clone(), FlowAction::Discard);
    });
    let mut u = Upstream::with_speaker(
        BgpConfig {
            enabled: true,
            check_ms: 100,
            session_alert_s: 0,
            ..BgpConfig::default()
        },
        networks(),
        Vec::new(),
        Box::new(fake.clone()),
    );
    until(&mut u, "the stale route's withdrawal", |u| {
        actions(u).contains(&("withdraw".into(), stale.to_string()))
    });
    assert!(
        fake.with(|f| f.rib.contains_key(&foreign)),
        "not ours: kept"
    );
    u.alert(&reflection(1, "10.20.0.5", 20_000.0));
    until(&mut u, "the announce", |u| {
        actions(u).iter().any(|(a, _)| a == "announce")
    });
    // gobgpd restarts: its RIB is empty; the sensor puts its route back.
    fake.with(|f| f.rib.clear());
    until(&mut u, "the route put back", |u| {
        actions(u).iter().any(|(a, _)| a == "reannounce")
    });
    assert_eq!(fake.with(|f| f.rib.len()), 1);
    // The neighbour goes down: an audit row and, past session_alert_s, an alert's figures.
    fake.with(|f| f.peers = vec![peer(false)]);
    until(&mut u, "the session down row", |u| {
        actions(u).contains(&("session_down".into(), "bgp:10.99.0.1".into()))
    });
    let (down, back) = u.session_alerts(unix_now_ns() + NS);
    assert!(back.is_empty());
    let d = down.first().expect("the down session");
    assert_eq!(d.peer, Some(ip("10.99.0.1")));
    assert_eq!(d.held, 1, "the announcement waits in the speaker");
    let e = d.evidence(d.since_ns + 12 * NS);
    assert_eq!(
        (e.down_s, e.peer_asn, e.state.as_str()),
        (12, Some(65000), "active")
    );
    // Back up: the alert closes.
    fake.with(|f| f.peers = vec![peer(true)]);
    // (The first session_up row is from the start.)
    until(&mut u, "the session up row", |u| {
        let up = ("session_up".to_owned(), "bgp:10.99.0.1".to_owned());
        actions(u).iter().filter(|a| **a == up).count() == 2
    });
    let (down, back) = u.session_alerts(unix_now_ns() + 2 * NS);
    assert!(down.is_empty());
    assert_eq!(back, vec![Some(ip("10.99.0.1"))]);
    // The speaker itself gone: reported as such.
    fake.with(|f| f.unreachable = true);
    until(&mut u, "the speaker down row", |u| {
        actions(u).contains(&("session_down".into(), "bgp:speaker".into()))
    });
}

#[test]
fn a_syn_flood_matches_syns_to_its_port_and_a_single_source_its_source() {
    let mut ev = FloodEvidence::new(Vector::TcpSyn, Sources::Counted(1));
    ev.dst_port = Some(443);
    let mut a = reflection(1, "10.20.0.5", 5_000.0);
    a.kind = AlertKind::SynFlood;
    a.src_ip = Some(ip("198.51.100.7"));
    a.evidence = Evidence::Flood(ev);
    let m = flow_match(&a, ip("10.20.0.5")).expect("a SYN flood has its match");
    assert_eq!(
        Route::FlowSpec(m).to_string(),
        "flowspec:10.20.0.5/32 from 198.51.100.7/32 tcp dst-port 443 flags S"
    );
    // Every protocol at once: nothing narrower than the host, left to the RTBH level.
    a.evidence = Evidence::Flood(FloodEvidence::new(Vector::Any, Sources::Counted(90)));
    a.kind = AlertKind::Ddos;
    assert_eq!(flow_match(&a, ip("10.20.0.5")), None);
}

#[test]
fn bad_bgp_settings_are_refused_by_key() {
    let on = BgpConfig {
        enabled: true,
        ..BgpConfig::default()
    };
    assert_eq!(on.check(false).expect_err("no home").key, "bgp.enabled");
    assert!(on.check(true).is_ok());
    for (cfg, key) in [
        (
            BgpConfig {
                communities: vec!["65535:66666".into()],
                ..on.clone()
            },
            "bgp.communities",
        ),
        (
            BgpConfig {
                kinds: vec![AlertKind::PortScan],
                ..on.clone()
            },
            "bgp.kinds",
        ),
        (
            BgpConfig {
                flowspec_pps: 10_000,
                rtbh_pps: 5_000,
                ..on.clone()
            },
            "bgp.rtbh_pps",
        ),
        (
            BgpConfig {
                ttl_s: 0,
                ..on.clone()
            },
            "bgp.ttl_s",
        ),
    ] {
        assert_eq!(cfg.check(true).expect_err(key).key, key);
    }
}

/// A flood taken over by a larger incident (its DDoS) asks for the same rule: one announcement,
/// kept by the incident once the first alert has closed, and the audit says who keeps it.
#[test]
fn a_rule_asked_for_by_two_alerts_is_announced_once_and_handed_over() {
    let (mut u, fake) = upstream(BgpConfig::default());
    u.alert(&reflection(1, "10.20.0.5", 20_000.0));
    u.alert(&reflection(2, "10.20.0.5", 30_000.0));
    until(&mut u, "the announce", |u| {
        actions(u).iter().any(|(a, _)| a == "announce")
    });
    assert_eq!(fake.with(|f| f.rib.len()), 1);
    assert!(
        !actions(&u).iter().any(|(a, _)| a == "renew"),
        "no handover while 1 is open"
    );
    u.alert_closed(1);
    u.alert(&reflection(2, "10.20.0.5", 30_000.0));
    let renew = u
        .events
        .iter()
        .find(|e| e.action == "renew")
        .expect("the handover's row");
    assert_eq!(renew.alert_id, Some(2));
    assert!(
        renew.reason.contains("now kept by ddos alert 2"),
        "{renew:?}"
    );
    // Kept while 2 is open; withdrawn once it closes and the TTL runs out.
    let far = unix_now_ns() + 2 * u.cfg.ttl_s * NS;
    u.tick_at(far);
    assert_eq!(fake.with(|f| f.rib.len()), 1);
    u.alert_closed(2);
    u.tick_at(far + 2 * u.cfg.ttl_s * NS);
    until(&mut u, "the withdrawal", |u| {
        actions(u).iter().any(|(a, _)| a == "withdraw")
    });
}
