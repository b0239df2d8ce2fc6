//! Mitigation upstream (`[bgp]`, off by default): when a flood into one of our hosts passes
//! its hostgroup's level, the upstream routers are asked over BGP to drop it before it
//! reaches the gateway's uplink: a FlowSpec rule first (the narrowest match that stops the
//! attack), the victim's blackhole route (RTBH) above the last level when configured.
//!
//! Policy (docs/DEPLOY.md, "What the sensor announces"):
//! - only alerts of `[bgp] kinds` whose victim is inside `[networks] home`, from outside it
//!   (an attack from one of ours is reported, never announced), and never a victim the
//!   allowlist protects;
//! - levels per hostgroup, on the attack's peak packet rate: XDP at the gateway acts first
//!   (`[mitigation]`), FlowSpec from `flowspec_pps`, RTBH from `rtbh_pps`; no step back while
//!   the alert is open;
//! - every announcement has a TTL, renewed while its alert stays open and withdrawn once it
//!   runs out after the alert closed; at most `max_announcements` at once; all withdrawn when
//!   the sensor stops;
//! - each announce, withdraw and refusal is an audit row (the `mitigations` table,
//!   `/api/upstream`), the speaker's sessions are watched, and a session down for
//!   `session_alert_s` is an alert of its own while XDP mitigation goes on.

use std::{
    collections::{BTreeMap, HashSet},
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    path::PathBuf,
    time::Duration,
};

use ipnet::IpNet;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::{
    Allowlist, MitigationEvent,
    bgp::{BgpError, FlowAction, FlowMatch, Gobgp, PathAttrs, Peer, Route, Speaker, TcpFlags},
    speaker::{Intent, Report, SpeakerThread},
};
use crate::{
    check::Invalid,
    detect::{
        AlertKind,
        alert::Alert,
        evidence::{Evidence, Vector},
    },
    metrics::{Counter, Gauge, Registry},
    networks::{FlowspecAction, Networks},
    record::rfc3339_us,
};

const NS: u64 = 1_000_000_000;

/// `[bgp]` in the config file.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BgpConfig {
    /// Announce at all (needs `[networks] home` and a running gobgpd).
    pub enabled: bool,
    /// The GoBGP client the speaker is driven with.
    pub gobgp: PathBuf,
    /// gobgpd's gRPC API as its `--api-hosts` has it (`HOST:PORT` or `unix:///PATH`).
    pub api: String,
    /// Alert kinds that may be announced.
    pub kinds: Vec<AlertKind>,
    /// The attack's packet rate from which a FlowSpec rule is announced (0: at once).
    pub flowspec_pps: u64,
    pub flowspec_action: FlowspecAction,
    /// Bytes per second a `rate-limit` rule lets through.
    pub flowspec_rate_bytes: u64,
    /// The rate from which the victim's host route is blackholed (0: never).
    pub rtbh_pps: u64,
    /// Next hops of RTBH routes (the upstream routes them to its discard interface).
    pub next_hop: Ipv4Addr,
    pub next_hop_v6: Ipv6Addr,
    /// Communities of RTBH routes: RFC 7999's BLACKHOLE plus what the upstream agreed.
    pub communities: Vec<String>,
    /// Seconds an announcement lives after its alert closed (renewed while it is open).
    pub ttl_s: u64,
    /// Announcements in flight at most; more are refused (audited).
    pub max_announcements: usize,
    /// A neighbour not established for this long is an alert.
    pub session_alert_s: u64,
    /// How often the speaker's sessions and RIB are checked (milliseconds).
    pub check_ms: u64,
}

impl Default for BgpConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            gobgp: PathBuf::from("gobgp"),
            api: "127.0.0.1:50051".into(),
            kinds: vec![
                AlertKind::SynFlood,
                AlertKind::UdpFlood,
                AlertKind::IcmpFlood,
                AlertKind::Ddos,
            ],
            flowspec_pps: 0,
            flowspec_action: FlowspecAction::Discard,
            flowspec_rate_bytes: 125_000,
            rtbh_pps: 0,
            // RFC 5737 TEST-NET-1 and RFC 6666's discard prefix: routed to null upstream.
            next_hop: Ipv4Addr::new(192, 0, 2, 1),
            next_hop_v6: Ipv6Addr::new(0x100, 0, 0, 0, 0, 0, 0, 1),
            communities: vec!["65535:666".into()],
            ttl_s: 600,
            max_announcements: 32,
            session_alert_s: 30,
            check_ms: 1000,
        }
    }
}

/// Well-known community names GoBGP takes besides `ASN:VALUE`.
const COMMUNITY_NAMES: [&str; 4] = ["blackhole", "no-export", "no-advertise", "no-peer"];

impl BgpConfig {
    /// Range checks serde cannot do; `home_set`: whether `[networks] home` has prefixes.
    pub fn check(&self, home_set: bool) -> Result<(), Invalid> {
        if !self.enabled {
            return Ok(());
        }
        if !home_set {
            return Err(Invalid::new(
                "bgp.enabled",
                "needs `[networks] home`: the sensor announces only hosts of the networks it protects",
            ));
        }
        if let Some(k) = self.kinds.iter().find(|k| {
            !matches!(
                k,
                AlertKind::SynFlood | AlertKind::UdpFlood | AlertKind::IcmpFlood | AlertKind::Ddos
            )
        }) {
            return Err(Invalid::new(
                "bgp.kinds",
                format!(
                    "cannot hold {}: only floods (syn_flood, udp_flood, icmp_flood, ddos) are dropped upstream",
                    k.as_str()
                ),
            ));
        }
        for c in &self.communities {
            let ok = COMMUNITY_NAMES.contains(&c.as_str())
                || c.split_once(':')
                    .is_some_and(|(a, v)| a.parse::<u16>().is_ok() && v.parse::<u16>().is_ok());
            if !ok {
                return Err(Invalid::new(
                    "bgp.communities",
                    format!(
                        "`{c}` is not ASN:VALUE (two 16-bit numbers, like 65535:666) or a well-known name"
                    ),
                ));
            }
        }
        if self.ttl_s == 0 || self.ttl_s > super::MAX_TTL_S {
            return Err(Invalid::new(
                "bgp.ttl_s",
                format!(
                    "must be within 1 and {}, not {}",
                    super::MAX_TTL_S,
                    self.ttl_s
                ),
            ));
        }
        if self.max_announcements == 0 {
            return Err(Invalid::new("bgp.max_announcements", "must be positive"));
        }
        if self.flowspec_rate_bytes == 0 {
            return Err(Invalid::new("bgp.flowspec_rate_bytes", "must be positive"));
        }
        if self.check_ms < 100 {
            return Err(Invalid::new("bgp.check_ms", "must be at least 100"));
        }
        if self.rtbh_pps != 0 && self.rtbh_pps < self.flowspec_pps {
            return Err(Invalid::new(
                "bgp.rtbh_pps",
                "must be above flowspec_pps: RTBH is the last level",
            ));
        }
        Ok(())
    }

    /// The speaker these settings drive.
    pub fn speaker(&self) -> Gobgp {
        Gobgp {
            program: self.gobgp.clone(),
            api: self.api.clone(),
            attrs: PathAttrs {
                next_hop_v4: IpAddr::V4(self.next_hop),
                next_hop_v6: IpAddr::V6(self.next_hop_v6),
                rtbh_communities: self.communities.clone(),
            },
        }
    }
}

/// One victim's levels: `[bgp]` with its hostgroup's overrides.
#[derive(Clone, Debug, PartialEq)]
struct Levels {
    group: Option<String>,
    announce: bool,
    flowspec_pps: u64,
    action: FlowAction,
    rtbh_pps: u64,
}

struct Announced {
    action: FlowAction,
    /// The alert that asked for it last.
    alert: u64,
    kind: AlertKind,
    added_ns: u64,
    /// Unix ns after which it is withdrawn unless its alert is open.
    expires_ns: u64,
    reason: String,
    /// Whether the speaker took it (false until it answers, or when it refused).
    in_speaker: bool,
    error: Option<String>,
}

/// The state of the speaker's sessions.
#[derive(Clone, Debug, Default)]
struct Sessions {
    peers: Vec<Peer>,
    /// Why the speaker could not be asked.
    error: Option<String>,
    /// Per neighbour (and the speaker itself as `None`): since when it is not established.
    down_since: BTreeMap<Option<IpAddr>, u64>,
}

/// A session down long enough to be an alert.
#[derive(Clone, Debug, PartialEq)]
pub struct DownSession {
    /// The neighbour; `None` when the speaker itself does not answer.
    pub peer: Option<IpAddr>,
    pub asn: u32,
    pub state: String,
    pub since_ns: u64,
    /// Announcements waiting for it (held by the speaker, sent when it is back).
    pub held: usize,
}

impl DownSession {
    /// What the alert about it says.
    pub fn evidence(&self, now_ns: u64) -> crate::detect::evidence::SessionEvidence {
        crate::detect::evidence::SessionEvidence {
            peer: self.peer,
            peer_asn: (self.asn != 0).then_some(self.asn),
            state: self.state.clone(),
            down_s: now_ns.saturating_sub(self.since_ns) / NS,
            announcements: self.held,
        }
    }
}

/// The upstream policy and its speaker.
pub struct Upstream {
    cfg: BgpConfig,
    networks: Networks,
    allow: Allowlist,
    active: BTreeMap<Route, Announced>,
    /// Alerts open that own announcements.
    open: HashSet<u64>,
    /// Alerts already refused (one audit row each).
    refused: HashSet<(u64, &'static str)>,
    speaker: SpeakerThread,
    sessions: Sessions,
    started_ns: u64,
    events: Vec<MitigationEvent>,
    metrics: Option<UpstreamMetrics>,
    /// Withdrawals sent, with their reason, until the speaker confirms them.
    pending_reasons: BTreeMap<Route, (String, u64, AlertKind)>,
    /// Sessions that are an alert now.
    alerting: HashSet<Option<IpAddr>>,
    refused_total: u64,
    last_fire_sec: u64,
}

fn unix_now_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

/// The FlowSpec match that stops what the alert measured and little else; `None` for a flood
/// of every protocol at once, where nothing narrower than the whole host would stop it (that
/// is the RTBH level's to decide).
pub fn flow_match(a: &Alert, victim: IpAddr) -> Option<FlowMatch> {
    let mut m = FlowMatch {
        dst: victim,
        src: a.src_ip,
        proto: None,
        src_port: None,
        dst_port: None,
        tcp_flags: None,
    };
    let icmp = if victim.is_ipv6() {
        sensor_common::proto::ICMPV6
    } else {
        sensor_common::proto::ICMP
    };
    let flood = match &a.evidence {
        Evidence::Flood(f) => Some(f),
        _ => None,
    };
    let vector = flood.map(|f| f.vector).or(match a.kind {
        AlertKind::SynFlood => Some(Vector::TcpSyn),
        AlertKind::UdpFlood => Some(Vector::Udp),
        AlertKind::IcmpFlood => Some(Vector::Icmp),
        _ => None,
    });
    match vector {
        Some(Vector::TcpSyn) => {
            m.proto = Some(sensor_common::proto::TCP);
            m.tcp_flags = Some(TcpFlags::Syn);
            m.dst_port = flood.and_then(|f| f.dst_port);
        }
        Some(Vector::TcpSynAckReflection) => {
            m.proto = Some(sensor_common::proto::TCP);
            m.tcp_flags = Some(TcpFlags::SynAck);
        }
        Some(Vector::UdpReflection) => {
            m.proto = Some(sensor_common::proto::UDP);
            m.src_port = flood
                .and_then(|f| f.reflected_service.as_ref())
                .map(|s| s.port);
        }
        Some(Vector::Udp) => {
            m.proto = Some(sensor_common::proto::UDP);
            m.dst_port = flood.and_then(|f| f.dst_port);
        }
        Some(Vector::Icmp) => m.proto = Some(icmp),
        Some(Vector::Any) | None => return None,
    }
    Some(m)
}

impl Upstream {
    /// Starts the speaker's thread (it withdraws what a previous run left, then watches).
    /// Fails only when the GoBGP client cannot run; a daemon that does not answer yet is
    /// reported (and alerted on) while the sensor runs.
    pub fn new(cfg: BgpConfig, networks: Networks, allow: Vec<IpNet>) -> Result<Self, BgpError> {
        let speaker = cfg.speaker();
        speaker.check()?;
        Ok(Self::with_speaker(cfg, networks, allow, Box::new(speaker)))
    }

    pub fn with_speaker(
        cfg: BgpConfig,
        networks: Networks,
        allow: Vec<IpNet>,
        speaker: Box<dyn Speaker>,
    ) -> Self {
        let home = networks.clone();
        let thread = SpeakerThread::start(
            speaker,
            Duration::from_millis(cfg.check_ms),
            move |r: &Route| home.is_home(r.victim()),
        );
        Self {
            cfg,
            networks,
            allow: Allowlist::new(allow),
            active: BTreeMap::new(),
            open: HashSet::new(),
            refused: HashSet::new(),
            speaker: thread,
            sessions: Sessions::default(),
            started_ns: unix_now_ns(),
            events: Vec::new(),
            metrics: None,
            pending_reasons: BTreeMap::new(),
            alerting: HashSet::new(),
            refused_total: 0,
            last_fire_sec: 0,
        }
    }

    pub fn publish_metrics(&mut self, m: &Registry) {
        self.metrics = Some(UpstreamMetrics::new(m));
    }

    pub fn take_events(&mut self) -> Vec<MitigationEvent> {
        std::mem::take(&mut self.events)
    }

    fn levels(&self, victim: IpAddr) -> Levels {
        let group = self.networks.group(victim);
        let b = group.map(|g| g.bgp).unwrap_or_default();
        let action = match b.flowspec_action.unwrap_or(self.cfg.flowspec_action) {
            FlowspecAction::Discard => FlowAction::Discard,
            FlowspecAction::RateLimit => FlowAction::RateLimit {
                bytes_per_s: b
                    .flowspec_rate_bytes
                    .unwrap_or(self.cfg.flowspec_rate_bytes),
            },
        };
        Levels {
            group: group.map(|g| g.name.clone()),
            announce: b.announce.unwrap_or(true),
            flowspec_pps: b.flowspec_pps.unwrap_or(self.cfg.flowspec_pps),
            action,
            rtbh_pps: b.rtbh_pps.unwrap_or(self.cfg.rtbh_pps),
        }
    }

    fn row(&mut self, action: &str, target: String, a: Option<(u64, AlertKind)>, reason: String) {
        self.row_expiring(action, target, a, reason, None);
    }

    fn row_expiring(
        &mut self,
        action: &str,
        target: String,
        a: Option<(u64, AlertKind)>,
        reason: String,
        expires_ns: Option<u64>,
    ) {
        self.events.push(MitigationEvent {
            ts_ns: unix_now_ns(),
            action: action.into(),
            target,
            expires_ns,
            reason,
            origin: if a.is_some() { "alert" } else { "sensor" }.into(),
            alert_id: a.map(|(id, _)| id),
            alert_kind: a.map(|(_, k)| k),
            packets: 0,
            bytes: 0,
        });
    }

    /// One audit row per alert and reason for what is not announced.
    fn refuse(&mut self, a: &Alert, what: &'static str, target: String, why: String) {
        if self.refused.insert((a.id, what)) {
            self.refused_total += 1;
            tracing::info!(alert = a.id, %target, why, "not announced upstream");
            self.row("refuse", target, Some((a.id, a.kind)), why);
        }
    }

    /// An alert opened or grew: announce what its level asks for.
    pub fn alert(&mut self, a: &Alert) {
        if !self.cfg.kinds.contains(&a.kind) {
            return;
        }
        let Some(victim) = a.dst_ip else {
            return;
        };
        let host = IpNet::from(victim);
        let named = format!("upstream:{host}");
        if !self.networks.is_home(victim) {
            return self.refuse(
                a,
                "outside",
                named.clone(),
                format!("{victim} is outside [networks] home: only our own hosts are announced"),
            );
        }
        if let Some(src) = a.src_ip.filter(|s| self.networks.is_home(*s)) {
            return self.refuse(
                a,
                "internal",
                named.clone(),
                format!("the source {src} is one of ours: upstream routers never see it"),
            );
        }
        if let Some(why) = self.allow.refusal(&host) {
            return self.refuse(a, "allow", named, why);
        }
        let lv = self.levels(victim);
        if !lv.announce {
            return self.refuse(
                a,
                "group",
                named.clone(),
                format!(
                    "hostgroup {} announces nothing (bgp.announce = false)",
                    lv.group.as_deref().unwrap_or("?")
                ),
            );
        }
        let rate = a.peak_rate;
        let group = lv
            .group
            .as_deref()
            .map_or_else(String::new, |g| format!(", hostgroup {g}"));
        let reason = |level: &str, pps: u64| {
            format!(
                "{} alert {}: peak {rate:.0} pps, {level} from {pps} pps{group}",
                a.kind.as_str(),
                a.id,
            )
        };
        if rate >= lv.flowspec_pps as f64 {
            let reason = reason("FlowSpec", lv.flowspec_pps);
            match flow_match(a, victim) {
                Some(m) => self.want(Route::FlowSpec(m), lv.action, a, reason),
                None => self.refuse(
                    a,
                    "any",
                    named.clone(),
                    "a flood of every protocol: no FlowSpec rule narrower than the whole host \
                     (the RTBH level decides)"
                        .into(),
                ),
            }
        }
        if lv.rtbh_pps > 0 && rate >= lv.rtbh_pps as f64 {
            let reason = reason("RTBH", lv.rtbh_pps);
            self.want(Route::Rtbh(victim), FlowAction::Discard, a, reason);
        }
    }

    fn want(&mut self, route: Route, action: FlowAction, a: &Alert, reason: String) {
        let now = unix_now_ns();
        let expires = now + self.cfg.ttl_s * NS;
        if let Some(e) = self.active.get_mut(&route) {
            e.expires_ns = e.expires_ns.max(expires);
            // Another alert about the same attack (a flood taken over by its DDoS) keeps the
            // route renewed once the one that asked first has closed; the audit says so.
            let handover = e.alert != a.id && !self.open.contains(&e.alert);
            if handover {
                e.alert = a.id;
                e.kind = a.kind;
                e.reason = reason;
            }
            let exp = e.expires_ns;
            if e.action != action {
                e.action = action;
                self.speaker.send(Intent::Announce(route.clone(), action));
            }
            self.open.insert(a.id);
            if handover {
                self.row_expiring(
                    "renew",
                    route.to_string(),
                    Some((a.id, a.kind)),
                    format!("now kept by {} alert {}", a.kind.as_str(), a.id),
                    Some(exp),
                );
            }
            return;
        }
        if self.active.len() >= self.cfg.max_announcements {
            let what = if matches!(route, Route::Rtbh(_)) {
                "cap-rtbh"
            } else {
                "cap-flowspec"
            };
            return self.refuse(
                a,
                what,
                route.to_string(),
                format!(
                    "{} announcements in flight (bgp.max_announcements)",
                    self.active.len()
                ),
            );
        }
        self.open.insert(a.id);
        tracing::warn!(alert = a.id, route = %route, "announcing upstream");
        self.active.insert(
            route.clone(),
            Announced {
                action,
                alert: a.id,
                kind: a.kind,
                added_ns: now,
                expires_ns: expires,
                reason,
                in_speaker: false,
                error: None,
            },
        );
        self.speaker.send(Intent::Announce(route, action));
    }

    pub fn alert_closed(&mut self, id: u64) {
        self.open.remove(&id);
        self.refused.retain(|(a, _)| *a != id);
    }

    /// Renews what open alerts own, withdraws what ran out; reads the speaker's reports.
    pub fn tick(&mut self) {
        self.tick_at(unix_now_ns());
    }

    fn tick_at(&mut self, now: u64) {
        let due: Vec<Route> = self
            .active
            .iter()
            .filter(|(_, e)| e.expires_ns <= now)
            .map(|(r, _)| r.clone())
            .collect();
        for r in due {
            let open = self
                .active
                .get(&r)
                .is_some_and(|e| self.open.contains(&e.alert));
            if open {
                if let Some(e) = self.active.get_mut(&r) {
                    e.expires_ns = now + self.cfg.ttl_s * NS;
                }
                let (id, kind, exp) = {
                    let e = &self.active[&r];
                    (e.alert, e.kind, e.expires_ns)
                };
                self.row_expiring(
                    "renew",
                    r.to_string(),
                    Some((id, kind)),
                    "its alert is still open".into(),
                    Some(exp),
                );
            } else {
                self.withdraw(&r, "its TTL ran out after its alert closed");
            }
        }
        for rep in self.speaker.reports() {
            self.report(rep, now);
        }
        self.publish();
    }

    /// Withdraws a route by its name (`/api/upstream`); not renewed by its alert.
    pub fn remove(&mut self, target: &str) -> Option<Value> {
        let r = self
            .active
            .keys()
            .find(|r| r.to_string() == target)
            .cloned()?;
        self.withdraw(&r, "withdrawn by hand");
        Some(json!({ "target": target, "withdrawn": true }))
    }

    fn withdraw(&mut self, r: &Route, why: &str) {
        if let Some(e) = self.active.remove(r) {
            tracing::info!(route = %r, why, "withdrawing upstream");
            self.speaker.send(Intent::Withdraw(r.clone()));
            // The row is written when the speaker confirms; the reason travels with it here.
            self.pending_reasons
                .insert(r.clone(), (why.to_owned(), e.alert, e.kind));
        }
    }
}

fn peer_name(p: Option<IpAddr>) -> String {
    p.map_or_else(|| "bgp:speaker".to_owned(), |a| format!("bgp:{a}"))
}

impl Upstream {
    fn report(&mut self, rep: Report, now: u64) {
        match rep {
            Report::Announced(r, res) | Report::Restored(r, res)
                if !self.active.contains_key(&r) =>
            {
                // Withdrawn before the speaker answered: the withdrawal's row says so.
                drop((r, res));
            }
            Report::Announced(r, res) => {
                let e = self.active.get_mut(&r).expect("checked above");
                let a = Some((e.alert, e.kind));
                let (reason, exp) = (e.reason.clone(), e.expires_ns);
                e.in_speaker = res.is_ok();
                e.error = res.as_ref().err().cloned();
                match res {
                    Ok(()) => {
                        self.count(|m| &m.announced);
                        self.row_expiring("announce", r.to_string(), a, reason, Some(exp));
                    }
                    Err(err) => {
                        self.count(|m| &m.errors);
                        tracing::error!(route = %r, error = err, "the BGP speaker did not take an announcement (retried every check)");
                        self.row("announce_failed", r.to_string(), a, err);
                    }
                }
            }
            Report::Restored(r, res) => {
                let e = self.active.get_mut(&r).expect("checked above");
                let a = Some((e.alert, e.kind));
                e.in_speaker = res.is_ok();
                e.error = res.as_ref().err().cloned();
                if res.is_ok() {
                    self.count(|m| &m.announced);
                    self.row(
                        "reannounce",
                        r.to_string(),
                        a,
                        "missing from the speaker's RIB (it restarted, or an earlier announce failed): put back".into(),
                    );
                }
            }
            Report::Withdrawn(r, res) => {
                let (why, id, kind) = self
                    .pending_reasons
                    .remove(&r)
                    .unwrap_or_else(|| ("withdrawn".into(), 0, AlertKind::Ddos));
                let a = (id != 0).then_some((id, kind));
                match res {
                    Ok(()) => {
                        self.count(|m| &m.withdrawn);
                        self.row("withdraw", r.to_string(), a, why);
                    }
                    Err(err) => {
                        self.count(|m| &m.errors);
                        tracing::error!(route = %r, error = err, "the BGP speaker did not take a withdrawal");
                        self.row("withdraw_failed", r.to_string(), a, format!("{why}; {err}"));
                    }
                }
            }
            Report::Stale(r, res) => {
                let why = "left in the speaker by an earlier run that stopped without withdrawing";
                match res {
                    Ok(()) => {
                        self.count(|m| &m.withdrawn);
                        self.row("withdraw", r.to_string(), None, why.into());
                    }
                    Err(err) => self.row(
                        "withdraw_failed",
                        r.to_string(),
                        None,
                        format!("{why}; {err}"),
                    ),
                }
            }
            Report::Peers(res) => self.peers(res, now),
        }
    }

    fn peers(&mut self, res: Result<Vec<Peer>, String>, now: u64) {
        let since = |s: &Sessions, k: Option<IpAddr>| s.down_since.get(&k).copied().unwrap_or(now);
        match res {
            Err(e) => {
                if self.sessions.error.is_none() {
                    tracing::error!(error = e, "the BGP speaker does not answer");
                    self.row("session_down", peer_name(None), None, e.clone());
                }
                let t = since(&self.sessions, None).min(now);
                self.sessions.down_since.insert(None, t);
                self.sessions.error = Some(e);
            }
            Ok(peers) => {
                if self.sessions.error.take().is_some() {
                    self.row(
                        "session_up",
                        peer_name(None),
                        None,
                        "the speaker answers again".into(),
                    );
                }
                self.sessions.down_since.remove(&None);
                for p in &peers {
                    let key = Some(p.address);
                    let was = self
                        .sessions
                        .peers
                        .iter()
                        .find(|q| q.address == p.address)
                        .map(|q| q.established);
                    if p.established {
                        self.sessions.down_since.remove(&key);
                        if was != Some(true) {
                            tracing::info!(peer = %p.address, "BGP session established");
                            self.row(
                                "session_up",
                                peer_name(key),
                                None,
                                format!(
                                    "established with AS {}; {} announcement(s) in the speaker",
                                    p.asn,
                                    self.active.len()
                                ),
                            );
                        }
                    } else {
                        // Down since the sensor started, or since it was last seen up.
                        let t = if was.is_none() && self.sessions.peers.is_empty() {
                            self.started_ns
                        } else {
                            now
                        };
                        self.sessions.down_since.entry(key).or_insert(t);
                        if was == Some(true) {
                            tracing::error!(peer = %p.address, state = p.state, "BGP session down");
                            self.row(
                                "session_down",
                                peer_name(key),
                                None,
                                format!("{} (AS {}); XDP mitigation goes on", p.state, p.asn),
                            );
                        }
                    }
                }
                // Neighbours no longer configured are no longer watched.
                self.sessions
                    .down_since
                    .retain(|k, _| k.is_none_or(|a| peers.iter().any(|p| p.address == a)));
                self.sessions.peers = peers;
            }
        }
    }

    /// Sessions down for `session_alert_s` (to fire, again while they stay down), and those
    /// that were and are back (to close).
    pub fn session_alerts(&mut self, now: u64) -> (Vec<DownSession>, Vec<Option<IpAddr>>) {
        let after = self.cfg.session_alert_s * NS;
        let held = self.active.len();
        let down: Vec<DownSession> = self
            .sessions
            .down_since
            .iter()
            .filter(|(_, t)| now.saturating_sub(**t) >= after)
            .map(|(k, t)| {
                let p = k.and_then(|a| self.sessions.peers.iter().find(|p| p.address == a));
                DownSession {
                    peer: *k,
                    asn: p.map_or(0, |p| p.asn),
                    state: p.map_or_else(
                        || "the speaker does not answer".to_owned(),
                        |p| p.state.clone(),
                    ),
                    since_ns: *t,
                    held,
                }
            })
            .collect();
        let now_down: HashSet<Option<IpAddr>> = down.iter().map(|d| d.peer).collect();
        // Fired once a second while down (each firing refreshes the alert's figures).
        let down = if now / NS > self.last_fire_sec
            || down.iter().any(|d| !self.alerting.contains(&d.peer))
        {
            self.last_fire_sec = now / NS;
            down
        } else {
            Vec::new()
        };
        let back: Vec<Option<IpAddr>> = self
            .alerting
            .iter()
            .filter(|k| !now_down.contains(k))
            .copied()
            .collect();
        self.alerting = now_down;
        (down, back)
    }

    /// Everything withdrawn (the sensor stops): the upstream must not drop traffic for an
    /// attack nobody watches any more.
    pub fn shutdown(&mut self) {
        let all: Vec<Route> = self.active.keys().cloned().collect();
        for r in &all {
            self.withdraw(r, "the sensor stopped");
        }
        let now = unix_now_ns();
        for rep in self.speaker.stop() {
            self.report(rep, now);
        }
        for ev in &mut self.events {
            if ev.action == "withdraw" && ev.reason == "the sensor stopped" {
                ev.action = "stop".into();
            }
        }
        self.publish();
    }

    /// The API's view: sessions, announcements, levels.
    pub fn view(&self) -> Value {
        let now = unix_now_ns();
        let announcements: Vec<Value> = self
            .active
            .iter()
            .map(|(r, e)| {
                let (kind, m) = match r {
                    Route::Rtbh(_) => ("rtbh", Value::Null),
                    Route::FlowSpec(m) => ("flowspec", json!(m)),
                };
                json!({
                    "target": r.to_string(),
                    "kind": kind,
                    "victim": r.victim().to_string(),
                    "hostgroup": self.networks.hostgroup(r.victim()),
                    "match": m,
                    "action": match (r, e.action) {
                        (Route::Rtbh(_), _) => json!({"action": "blackhole", "communities": self.cfg.communities}),
                        (_, a) => json!(a),
                    },
                    "alert_id": e.alert,
                    "alert_kind": e.kind,
                    "added": rfc3339_us(e.added_ns),
                    "expires": rfc3339_us(e.expires_ns),
                    "expires_in_s": e.expires_ns.saturating_sub(now) / NS,
                    "renewed_while_open": self.open.contains(&e.alert),
                    "in_speaker": e.in_speaker,
                    "error": e.error,
                    "reason": e.reason,
                })
            })
            .collect();
        let sessions: Vec<Value> = self
            .sessions
            .peers
            .iter()
            .map(|p| {
                json!({
                    "peer": p.address.to_string(),
                    "asn": p.asn,
                    "state": p.state,
                    "established": p.established,
                    "down_since": self.sessions.down_since.get(&Some(p.address)).map(|t| rfc3339_us(*t)),
                })
            })
            .collect();
        json!({
            "enabled": true,
            "speaker": format!("gobgpd at {}", self.cfg.api),
            "speaker_error": self.sessions.error,
            "sessions": sessions,
            "announcements": announcements,
            "max_announcements": self.cfg.max_announcements,
            "ttl_s": self.cfg.ttl_s,
            "levels": {
                "flowspec_pps": self.cfg.flowspec_pps,
                "rtbh_pps": self.cfg.rtbh_pps,
                "kinds": self.cfg.kinds,
            },
        })
    }

    fn count(&self, f: impl Fn(&UpstreamMetrics) -> &Counter) {
        if let Some(m) = &self.metrics {
            f(m).inc();
        }
    }

    fn publish(&self) {
        if let Some(m) = &self.metrics {
            let (fs, rtbh) = self.active.keys().fold((0, 0), |(f, r), k| match k {
                Route::FlowSpec(_) => (f + 1, r),
                Route::Rtbh(_) => (f, r + 1),
            });
            m.flowspec.set(fs);
            m.rtbh.set(rtbh);
            m.established
                .set(self.sessions.peers.iter().filter(|p| p.established).count() as u64);
            m.down.set(self.sessions.down_since.len() as u64);
            m.refused.set_total(self.refused_total);
        }
    }
}

/// The upstream's figures on `/metrics`.
pub struct UpstreamMetrics {
    flowspec: Gauge,
    rtbh: Gauge,
    established: Gauge,
    down: Gauge,
    announced: Counter,
    withdrawn: Counter,
    refused: Counter,
    errors: Counter,
}

impl UpstreamMetrics {
    fn new(m: &Registry) -> Self {
        Self {
            flowspec: m.gauge(
                "sensor_bgp_flowspec_announcements",
                "FlowSpec rules the sensor has announced upstream now.",
            ),
            rtbh: m.gauge(
                "sensor_bgp_rtbh_announcements",
                "Blackholed (RTBH) host routes the sensor has announced upstream now.",
            ),
            established: m.gauge(
                "sensor_bgp_sessions_established",
                "BGP neighbours of the sensor's speaker in state established.",
            ),
            down: m.gauge(
                "sensor_bgp_sessions_down",
                "BGP neighbours not established (and the speaker itself when it does not answer).",
            ),
            announced: m.counter(
                "sensor_bgp_announced_total",
                "Announcements the speaker took (put back after a restart included).",
            ),
            withdrawn: m.counter(
                "sensor_bgp_withdrawn_total",
                "Announcements withdrawn.",
            ),
            refused: m.counter(
                "sensor_bgp_refused_total",
                "Alerts not announced: victim outside home, source of ours, allowlisted, or the cap.",
            ),
            errors: m.counter(
                "sensor_bgp_speaker_errors_total",
                "Announcements and withdrawals the speaker did not take.",
            ),
        }
    }
}

#[cfg(test)]
#[path = "upstream_tests.rs"]
mod tests;
