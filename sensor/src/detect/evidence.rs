//! What each kind of alert measured, as types: the rules fill them, the alert book keeps the
//! peak one, mitigation and packet recording read their fields. They serialize to the JSON
//! the API has always given (`evidence` in the alert contract); the record adds `peak_rate`
//! and the model anomalies attached.

use std::net::IpAddr;

use serde::{Deserialize as _, Serialize};

/// Why an alert fired.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
#[serde(untagged)]
pub enum Evidence {
    Scan(ScanEvidence),
    Sweep(SweepEvidence),
    Flood(FloodEvidence),
    Spike(SpikeEvidence),
    BruteForce(BruteForceEvidence),
    Beacon(BeaconEvidence),
    Model(ModelEvidence),
    Online(OnlineEvidence),
    /// Model alerts past the per-minute budget, counted into one.
    Budget(BudgetEvidence),
    /// A BGP session of the upstream mitigation down.
    Session(SessionEvidence),
    /// An operator rule's count past its threshold.
    Custom(CustomEvidence),
    /// Not built: an aggregated model alert keeps its peak flow's evidence, and a lower one
    /// carries none.
    #[default]
    None,
}

/// Distinct ports of one host probed by one source.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ScanEvidence {
    /// Distinct ports counted (the fast window), or unanswered ports kept (the slow one).
    pub ports: usize,
    /// Unanswered probes over the slow window (ports past the kept ones included).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub probes: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unanswered: Option<bool>,
    pub sample_ports: Vec<u16>,
    /// `tcp` or `udp` (the fast window knows it).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub proto: Option<&'static str>,
    pub window_s: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub slow: Option<bool>,
}

/// Connections of one host to one endpoint at a regular period.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct BeaconEvidence {
    /// Connections scored (the newest, at most 48).
    pub connections: usize,
    pub port: u16,
    pub proto: &'static str,
    /// Median interval between connections.
    pub period_s: f64,
    /// Median deviation of the intervals from that period, as a share of it.
    pub jitter: f64,
    pub median_bytes: u64,
    /// Regularity of intervals and sizes, 0 to 1 (RITA's scoring).
    pub score: f64,
}

/// Short sessions to a login service that failed the same way.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct BruteForceEvidence {
    /// Sessions counted within the window.
    pub attempts: u64,
    pub port: u16,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub service: Option<&'static str>,
    /// Distinct sources of those sessions.
    pub sources: usize,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub sample_sources: Vec<IpAddr>,
    /// Medians of the newest sessions: what the client sent, what the server answered, how
    /// long each lasted.
    pub median_client_bytes: u64,
    pub median_server_bytes: u64,
    pub median_duration_ms: u64,
    pub window_s: u64,
}

/// Distinct hosts probed one way by one source.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct SweepEvidence {
    pub hosts: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub probes: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unanswered: Option<bool>,
    pub sample_hosts: Vec<IpAddr>,
    /// `icmp_echo`, `arp`, `tcp/PORT`, `udp/PORT`, or `tcp/*`, `udp/*` across a few ports.
    pub probe: String,
    pub window_s: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub slow: Option<bool>,
    /// The ports a sweep across ports tried (`tcp/*`, `udp/*`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub sample_ports: Vec<u16>,
}

/// What a flood or DDoS carried.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Vector {
    TcpSyn,
    Udp,
    Icmp,
    /// Every protocol into the victim (the DDoS rule's own count).
    Any,
    UdpReflection,
    TcpSynAckReflection,
}

impl Vector {
    /// The IP protocol the vector travels on (none for `Any`).
    pub fn proto(self) -> Option<u8> {
        use sensor_common::proto;
        match self {
            Self::TcpSyn | Self::TcpSynAckReflection => Some(proto::TCP),
            Self::Udp | Self::UdpReflection => Some(proto::UDP),
            Self::Icmp => Some(proto::ICMP),
            Self::Any => None,
        }
    }
}

/// What an operator rule counted.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct CustomEvidence {
    pub rule: String,
    /// What it counts (`new connections`, `distinct destination ports`, ...).
    pub counted: &'static str,
    pub value: u64,
    pub threshold: u64,
    pub window_s: u64,
    /// The share of what the key sent that was answered (rules with `max_answered_ratio`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub answered_ratio: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub proto: Option<&'static str>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub dst_ports: Vec<u16>,
}

/// A BGP session the sensor's speaker cannot use.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct SessionEvidence {
    /// The neighbour (absent: the speaker itself does not answer).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub peer: Option<IpAddr>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub peer_asn: Option<u32>,
    /// BGP state, or why the speaker cannot be asked.
    pub state: String,
    pub down_s: u64,
    /// Announcements in force (the speaker sends them once the session is back).
    pub announcements: usize,
}

/// How many sources: counted, or unknown (packets the flow map could not take).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum Sources {
    Counted(usize),
    Unknown(&'static str),
}

/// The service a reflected flood came from.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ReflectedService {
    pub port: u16,
    pub name: Option<&'static str>,
    /// Share of the unsolicited replies that came from it.
    pub share: f64,
}

/// A rate into one victim that gets (almost) nothing back.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct FloodEvidence {
    pub vector: Vector,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dst_port: Option<u16>,
    /// SYN floods: connection attempts and how many completed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub attempts: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub completed: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub packets: Option<u64>,
    /// What the victim sent back: replies of the flooded protocol (UDP/ICMP floods) ...
    #[serde(skip_serializing_if = "Option::is_none")]
    pub replies: Option<u64>,
    /// ... or answers of any protocol (DDoS: RSTs and ICMP errors are not answers).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub answers: Option<u64>,
    pub sources: Sources,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub sample_sources: Vec<IpAddr>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub overflow_packets: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub overflow_syns: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rate_pps: Option<f64>,
    /// Megabits per second received (where a bandwidth threshold is set).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rate_mbps: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub window_s: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub slow: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unsolicited_packets: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reflectors: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reflected_service: Option<ReflectedService>,
}

impl FloodEvidence {
    /// A flood of `vector` from `sources`; the rule fills in what it measured.
    pub fn new(vector: Vector, sources: Sources) -> Self {
        Self {
            vector,
            dst_port: None,
            attempts: None,
            completed: None,
            packets: None,
            replies: None,
            answers: None,
            sources,
            sample_sources: Vec::new(),
            overflow_packets: None,
            overflow_syns: None,
            rate_pps: None,
            rate_mbps: None,
            window_s: None,
            slow: None,
            unsolicited_packets: None,
            reflectors: None,
            reflected_service: None,
        }
    }
}

/// A host's packets in one second against its own baseline.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct SpikeEvidence {
    pub pps: u64,
    pub baseline_pps: f64,
    /// `rx` or `tx`: the direction that spiked most.
    pub direction: &'static str,
    pub rx_pps: u64,
    pub tx_pps: u64,
}

/// One of the features that isolated an anomalous flow (Isolation Forest).
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct TopFeature {
    pub feature: &'static str,
    /// Share of the isolation credited to it (shares of all features sum to 1).
    pub share: f64,
    pub value: f64,
    /// Standard deviations from the training mean.
    pub z: f64,
}

/// The flow an Isolation Forest alert is about.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct EvidenceFlow {
    pub src_ip: IpAddr,
    pub proto: u8,
    pub src_port: u16,
    pub dst_port: u16,
    pub packets: u64,
    pub bytes: u64,
    pub duration_s: f64,
}

/// The evidence of an `ml_anomaly` alert of the Isolation Forest: its most anomalous flow.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ModelEvidence {
    pub top_features: Vec<TopFeature>,
    pub threshold: f64,
    pub flow: EvidenceFlow,
}

/// A feature that explains an online-model anomaly.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct OnlineFeature {
    pub feature: &'static str,
    /// Share of the reconstruction error (shares of all features sum to 1).
    pub share: f64,
    pub value: f64,
}

/// The flow event the online model judged, in the shape of a flow record's endpoints (the
/// dashboard and API read `flow.src_ip` and `flow.last_seen` from every anomaly).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct OnlineEvent {
    pub src_ip: IpAddr,
    pub dst_ip: IpAddr,
    pub proto: u8,
    pub src_port: u16,
    pub dst_port: u16,
    /// Sent by the flow's initiator.
    pub from_src: bool,
    pub packets: u64,
    pub bytes: u64,
    pub last_seen: String,
}

/// The evidence of an `ml_anomaly` alert of the online model.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct OnlineEvidence {
    /// Always `kitnet`.
    pub model: &'static str,
    pub top_features: Vec<OnlineFeature>,
    pub threshold: f64,
    pub flow: OnlineEvent,
}

/// Model alerts past the per-minute budget.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct BudgetEvidence {
    /// Always true: tells this alert from a flow's.
    pub summary: bool,
    pub reason: &'static str,
    pub budget_per_minute: usize,
}

impl Evidence {
    /// The vector of a flood or DDoS.
    pub fn vector(&self) -> Option<Vector> {
        match self {
            Self::Flood(f) => Some(f.vector),
            _ => None,
        }
    }

    /// The IP protocol the alert is about, where its evidence says: a scan's, a flood's vector.
    pub fn proto(&self) -> Option<u8> {
        use sensor_common::proto;
        match self {
            Self::Scan(s) => match s.proto {
                Some("tcp") => Some(proto::TCP),
                Some("udp") => Some(proto::UDP),
                _ => None,
            },
            Self::Flood(f) => f.vector.proto(),
            _ => None,
        }
    }

    /// The window the rule measured over, in seconds (packets before the alert opened that
    /// made it cross its threshold lie within it).
    pub fn window_s(&self) -> Option<u64> {
        match self {
            Self::Scan(s) => Some(s.window_s),
            Self::Sweep(s) => Some(s.window_s),
            Self::Flood(f) => f.window_s,
            Self::BruteForce(b) => Some(b.window_s),
            _ => None,
        }
    }

    /// The JSON the alert contract shows.
    pub fn json(&self) -> serde_json::Value {
        serde_json::to_value(self).unwrap_or(serde_json::Value::Null)
    }
}

/// As its JSON (logs, test messages).
impl std::fmt::Display for Evidence {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.json())
    }
}

/// A number with thousands separators (1,000), as operators read counts.
fn grouped(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::with_capacity(s.len() + s.len() / 3);
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn who(ip: Option<IpAddr>) -> String {
    ip.map_or_else(|| "many hosts".to_owned(), |i| i.to_string())
}

/// One sentence for an alert: what, who, how big, from its evidence (fields an alert lacks
/// are left out, never guessed). The record carries it as `summary`, so every reader (the
/// dashboard, the log, a SIEM) gets the same words.
pub fn summary(a: &crate::detect::Alert) -> String {
    use crate::record::AlertKind;
    let (src, dst) = (a.src_ip, a.dst_ip);
    let from = |sources: Option<&Sources>| match (src, sources) {
        (Some(s), _) => format!("from {s}"),
        (None, Some(Sources::Counted(k))) if *k > 1 => {
            format!("from {} sources", grouped(*k as u64))
        }
        (None, Some(Sources::Unknown(_))) => "from unknown sources (flow map full)".to_owned(),
        (None, _) => "from many sources".to_owned(),
    };
    let slow = |s: Option<bool>| if s == Some(true) { "Slow " } else { "" };
    let mut s = match (&a.evidence, a.kind) {
        (Evidence::Scan(e), _) => {
            let proto = e
                .proto
                .map_or(String::new(), |p| format!("{} ", p.to_uppercase()));
            let mut s = format!(
                "{}{proto}scan of {} ports of {} {}",
                slow(e.slow),
                grouped(e.ports as u64),
                who(dst),
                from(None)
            );
            if let Some(p) = e.probes {
                s.push_str(&format!(", {} unanswered probes", grouped(p as u64)));
            }
            s.push_str(&format!(" within {} s", e.window_s));
            s
        }
        (Evidence::Sweep(e), _) => {
            let probe = if e.sample_ports.is_empty() {
                e.probe.clone()
            } else {
                let ports: Vec<String> = e.sample_ports.iter().map(u16::to_string).collect();
                format!("{} ({})", e.probe, ports.join(", "))
            };
            format!(
                "{}{probe} sweep of {} hosts {} within {} s",
                slow(e.slow),
                grouped(e.hosts as u64),
                from(None),
                e.window_s
            )
        }
        (Evidence::Flood(e), kind) => {
            let vector = match e.vector {
                Vector::TcpSyn => "SYN",
                Vector::Udp => "UDP",
                Vector::Icmp => "ICMP",
                Vector::UdpReflection => "UDP reflection",
                Vector::TcpSynAckReflection => "SYN-ACK reflection",
                Vector::Any => "packet",
            };
            let what = if kind == AlertKind::Ddos {
                format!("DDoS ({vector})")
            } else {
                format!("{vector} flood")
            };
            let port = e.dst_port.map_or(String::new(), |p| format!(" port {p}"));
            let mut s = format!("{what} into {}{port} {}", who(dst), from(Some(&e.sources)));
            if let Some(n) = e.attempts {
                let done = e.completed.unwrap_or(0);
                let pct = 100.0 * n.saturating_sub(done) as f64 / n.max(1) as f64;
                s.push_str(&format!(
                    ", {} attempts, {pct:.0}% never completed",
                    grouped(n)
                ));
            } else if let Some(p) = e.packets {
                s.push_str(&format!(
                    ", {} packets in {} s, {} answered",
                    grouped(p),
                    e.window_s.unwrap_or(0),
                    grouped(e.replies.or(e.answers).unwrap_or(0))
                ));
            } else if let Some(n) = e.overflow_syns {
                s.push_str(&format!(
                    ", {} SYNs the flow map could not hold",
                    grouped(n)
                ));
            }
            if let Some(r) = &e.reflected_service {
                s.push_str(&format!(
                    ", reflected off {}port {}",
                    r.name.map_or(String::new(), |n| format!("{n} ")),
                    r.port
                ));
            }
            s
        }
        (Evidence::Spike(e), _) => {
            let (host, dir) = match (src, dst) {
                (Some(h), _) => (h.to_string(), "sent"),
                (None, Some(h)) => (h.to_string(), "received"),
                _ => ("a host".to_owned(), "moved"),
            };
            format!(
                "{host} {dir} {} packets/s against a baseline of {}",
                grouped(e.pps),
                grouped(e.baseline_pps.round() as u64)
            )
        }
        (Evidence::BruteForce(e), _) => {
            let service = e.service.map_or_else(
                || format!("tcp/{}", e.port),
                |n| format!("{n} (tcp/{})", e.port),
            );
            format!(
                "Password guessing on {service} of {} {}: {} short sessions within {} s, the \
                 server answering ~{} bytes each",
                who(dst),
                from(Some(&Sources::Counted(e.sources))),
                grouped(e.attempts),
                e.window_s,
                grouped(e.median_server_bytes)
            )
        }
        (Evidence::Beacon(e), _) => format!(
            "Beaconing from {} to {} ({}/{}): {} connections every {} s (jitter {:.0}%), \
             ~{} bytes each, regularity {:.2}",
            who(src),
            who(dst),
            e.proto,
            e.port,
            e.connections,
            e.period_s,
            e.jitter * 100.0,
            grouped(e.median_bytes),
            e.score
        ),
        (Evidence::Budget(_), _) => "Model alerts past the per-minute budget, counted here".into(),
        (Evidence::Custom(e), _) => format!(
            "Operator rule {}: {} {} {}{}{} within {} s (threshold {})",
            e.rule,
            grouped(e.value),
            e.counted,
            // The rule's key: its source, its destination, or both (a side it does not key
            // on is not one address, and is left out).
            if src.is_some() {
                from(None)
            } else {
                String::new()
            },
            match (src, dst) {
                (Some(_), Some(d)) => format!(" to {d}"),
                (None, Some(d)) => format!("to {d}"),
                _ => String::new(),
            },
            match (e.proto, e.dst_ports.as_slice()) {
                (Some(p), []) => format!(" ({p})"),
                (Some(p), ports) => format!(
                    " ({p}/{})",
                    ports
                        .iter()
                        .map(ToString::to_string)
                        .collect::<Vec<_>>()
                        .join(",")
                ),
                (None, _) => String::new(),
            },
            e.window_s,
            grouped(e.threshold)
        ),
        (Evidence::Session(e), _) => format!(
            "BGP session to {} down for {} s ({}): {} upstream announcement(s) wait for it; \
             XDP mitigation goes on",
            match (e.peer, e.peer_asn) {
                (Some(p), Some(asn)) => format!("{p} (AS {asn})"),
                (Some(p), None) => p.to_string(),
                (None, _) => "the speaker".into(),
            },
            e.down_s,
            e.state,
            e.announcements
        ),
        (Evidence::Model(e), _) => model_sentence(
            &from(None),
            dst,
            "isolation forest",
            e.flow.dst_port,
            a.score,
            e.top_features.iter().map(|t| t.feature),
        ),
        (Evidence::Online(e), _) => model_sentence(
            &from(None),
            dst,
            "kitnet",
            e.flow.dst_port,
            a.score,
            e.top_features.iter().map(|t| t.feature),
        ),
        (Evidence::None, kind) => format!("{} {} to {}", kind.as_str(), from(None), who(dst)),
    };
    if a.peak_rate > 0.0 && matches!(a.evidence, Evidence::Flood(_)) {
        s.push_str(&format!(
            ", peak {} packets/s",
            grouped(a.peak_rate.round() as u64)
        ));
    }
    if a.model_anomalies > 0 {
        s.push_str(&format!(
            "; the model also flagged {} of its flows",
            grouped(a.model_anomalies)
        ));
    }
    s
}

fn model_sentence<'a>(
    from: &str,
    dst: Option<IpAddr>,
    model: &str,
    port: u16,
    score: Option<f64>,
    top: impl Iterator<Item = &'a str>,
) -> String {
    let top: Vec<&str> = top.take(3).collect();
    let mut s = format!("Unusual flow {from} to {} port {port} ({model}", who(dst));
    if let Some(sc) = score {
        s.push_str(&format!(", score {sc:.3}"));
    }
    s.push(')');
    if !top.is_empty() {
        s.push_str(&format!(": {}", top.join(", ")));
    }
    s
}

/// What the outputs read of a stored or received alert record's evidence, typed: the flow of
/// a model alert, the protocol of a scan, the vector of a flood.
#[derive(Debug, Default, serde::Deserialize)]
pub struct EvidenceView {
    #[serde(default)]
    pub flow: Option<FlowView>,
    /// A scan's `tcp` or `udp`.
    #[serde(default)]
    pub proto: Option<String>,
    #[serde(default)]
    pub vector: Option<Vector>,
}

/// The ports and protocol of a model alert's flow.
#[derive(Debug, Default, serde::Deserialize)]
pub struct FlowView {
    pub proto: Option<u8>,
    pub src_port: Option<u16>,
    pub dst_port: Option<u16>,
}

impl EvidenceView {
    /// The view of a record's evidence (empty where it holds none of these).
    pub fn of(evidence: &serde_json::Value) -> Self {
        Self::deserialize(evidence).unwrap_or_default()
    }

    /// The IP protocol the alert is about, when its evidence says.
    pub fn proto(&self) -> Option<u8> {
        use sensor_common::proto;
        self.flow
            .as_ref()
            .and_then(|f| f.proto)
            .or(match self.proto.as_deref() {
                Some("tcp") => Some(proto::TCP),
                Some("udp") => Some(proto::UDP),
                _ => None,
            })
            .or_else(|| self.vector.and_then(Vector::proto))
    }
}
