//! The output contract: what a finished flow, an alert, an anomaly and a second of traffic look
//! like in JSONL, in the database and in the API. Detection produces these, the sinks and the
//! API consume them; neither side needs the other's types.

use std::net::IpAddr;

use chrono::{DateTime, SecondsFormat};
use serde::{Deserialize, Serialize};

use crate::flow::{EndReason, Flow};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum AlertKind {
    PortScan,
    HostSweep,
    SynFlood,
    UdpFlood,
    IcmpFlood,
    TrafficSpike,
    Ddos,
    MlAnomaly,
    /// Password guessing (many short, failing sessions to a login service).
    BruteForce,
    /// One host contacting one endpoint at a regular period (command and control).
    Beaconing,
    /// The BGP session to an upstream router (or the speaker itself) is down: upstream
    /// mitigation cannot reach it (XDP mitigation goes on).
    BgpSessionDown,
    /// An operator rule's (`[[rules.custom]]`), by the index of its name in [`CUSTOM_KINDS`].
    Custom(u16),
}

/// Operator rules' kind names, registered once per process as the rules are built (names are
/// few and live as long as the process).
static CUSTOM_KINDS: std::sync::RwLock<Vec<&'static str>> = std::sync::RwLock::new(Vec::new());

impl Serialize for AlertKind {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for AlertKind {
    /// A built-in kind, or an operator rule's registered before (a typo in the config is an
    /// error, not a new kind).
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let name = String::deserialize(d)?;
        Self::from_name(&name).ok_or_else(|| {
            serde::de::Error::custom(format!(
                "unknown alert kind `{name}` (one of {})",
                Self::ALL.map(Self::as_str).join(", ")
            ))
        })
    }
}

impl utoipa::PartialSchema for AlertKind {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        utoipa::openapi::schema::ObjectBuilder::new()
            .schema_type(utoipa::openapi::schema::Type::String)
            .description(Some(
                "A built-in kind (port_scan, host_sweep, syn_flood, udp_flood, icmp_flood, \
                 traffic_spike, ddos, ml_anomaly, brute_force, beaconing, bgp_session_down) or \
                 the name of an operator rule ([[rules.custom]])",
            ))
            .examples(["port_scan"])
            .into()
    }
}

impl utoipa::ToSchema for AlertKind {}

impl AlertKind {
    pub const ALL: [Self; 11] = [
        Self::PortScan,
        Self::HostSweep,
        Self::SynFlood,
        Self::UdpFlood,
        Self::IcmpFlood,
        Self::TrafficSpike,
        Self::Ddos,
        Self::MlAnomaly,
        Self::BruteForce,
        Self::Beaconing,
        Self::BgpSessionDown,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::PortScan => "port_scan",
            Self::HostSweep => "host_sweep",
            Self::SynFlood => "syn_flood",
            Self::UdpFlood => "udp_flood",
            Self::IcmpFlood => "icmp_flood",
            Self::TrafficSpike => "traffic_spike",
            Self::Ddos => "ddos",
            Self::MlAnomaly => "ml_anomaly",
            Self::BruteForce => "brute_force",
            Self::Beaconing => "beaconing",
            Self::BgpSessionDown => "bgp_session_down",
            Self::Custom(i) => CUSTOM_KINDS
                .read()
                .ok()
                .and_then(|v| v.get(usize::from(i)).copied())
                .unwrap_or("custom"),
        }
    }

    /// The kind an operator rule named `name` raises (registered on first use).
    pub fn custom(name: &str) -> Self {
        let mut v = CUSTOM_KINDS
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(i) = v.iter().position(|n| *n == name) {
            return Self::Custom(i as u16);
        }
        v.push(Box::leak(name.to_owned().into_boxed_str()));
        Self::Custom((v.len() - 1).min(usize::from(u16::MAX)) as u16)
    }

    /// A built-in kind or a registered operator rule's, by name.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL
            .into_iter()
            .find(|k| k.as_str() == name)
            .or_else(|| {
                let v = CUSTOM_KINDS.read().ok()?;
                v.iter()
                    .position(|n| *n == name)
                    .map(|i| Self::Custom(i as u16))
            })
    }

    /// Every kind an alert may have in this process: the built-in ones and the operator
    /// rules' registered so far.
    pub fn names() -> Vec<&'static str> {
        let mut out: Vec<&'static str> = Self::ALL.iter().map(|k| k.as_str()).collect();
        if let Ok(v) = CUSTOM_KINDS.read() {
            out.extend(v.iter().copied());
        }
        out
    }
}

#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, utoipa::ToSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    Normal,
    Low,
    Medium,
    High,
    Critical,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Normal => "normal",
            Self::Low => "low",
            Self::Medium => "medium",
            Self::High => "high",
            Self::Critical => "critical",
        }
    }

    /// Severity of a rule from how far past its threshold the observation is.
    pub fn from_ratio(observed_over_threshold: f64) -> Self {
        match observed_over_threshold {
            r if r >= 10.0 => Self::Critical,
            r if r >= 3.0 => Self::High,
            r if r >= 1.5 => Self::Medium,
            _ => Self::Low,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum DetectorKind {
    Rule,
    Ml,
    /// The sensor's own health (its BGP sessions), not the traffic.
    Health,
}

impl DetectorKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Rule => "rule",
            Self::Ml => "ml",
            Self::Health => "health",
        }
    }
}

/// Where an alert (an incident) stands.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum AlertState {
    /// The attack is running: the record is updated while its figures change.
    Open,
    /// Quiet for the close period (or the data ended): final figures. Records written before
    /// incidents had a state were written at close, so this is also the default.
    #[default]
    Closed,
    /// Folded into a larger incident about the same attack (`merged_into`), which carries
    /// its counts from then on: not an attack of its own.
    Merged,
}

impl AlertState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Open => "open",
            Self::Closed => "closed",
            Self::Merged => "merged",
        }
    }
}

/// The JSON form of an [`Alert`].
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
pub struct AlertRecord {
    pub id: u64,
    /// Open while the attack lasts, then closed; merged when a larger incident took it over.
    #[serde(default)]
    pub state: AlertState,
    /// The run-local id of the incident this alert was merged into.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub merged_into: Option<u64>,
    pub kind: AlertKind,
    pub severity: Severity,
    pub detector: DetectorKind,
    #[schema(value_type = Option<String>, example = "192.0.2.7")]
    pub src_ip: Option<IpAddr>,
    #[schema(value_type = Option<String>, example = "198.51.100.1")]
    pub dst_ip: Option<IpAddr>,
    /// RFC 3339, microseconds, UTC.
    pub first_seen: String,
    pub last_seen: String,
    pub count: u64,
    pub score: Option<f64>,
    /// What happened, in one sentence an operator reads without opening the evidence (built
    /// from it by [`summary`]).
    #[serde(default)]
    pub summary: String,
    /// What the detector measured, by kind (docs/DETECTION.md, "Evidence").
    #[schema(value_type = Object)]
    pub evidence: serde_json::Value,
    /// The alert's rate over time while it was open: `[unix ms, rate]` per update (rate as the
    /// kind measures it: packets/s for floods, ports or hosts for scans and sweeps).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schema(value_type = Vec<Vec<f64>>)]
    pub rate_history: Vec<(u64, f64)>,
    /// The alert's packet evidence file in `DATA_DIR/evidence` (`GET /api/alerts/{id}/pcap`),
    /// when its packets are recorded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pcap: Option<String>,
    /// Which way it went, seen from `[networks] home` (absent without home networks).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub direction: Option<crate::networks::Direction>,
    /// The `[networks]` hostgroup of its side of ours (the victim's, or the source's when one
    /// of ours attacks out).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hostgroup: Option<String>,
    /// Country and autonomous system of its remote side (the attacker, or the target of one of
    /// ours attacking out), from the offline databases of `[geo]` (absent without them).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remote: Option<crate::geo::Origin>,
}

/// Small flows of one attack alert summed over one protocol and 10 s of data time (table
/// `attack_flows`, linked to the alert row by its key): what a flood's flows say once their
/// count is known.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AttackFlowRow {
    /// The alert's run-local id.
    pub alert: u64,
    /// Start of the row's time slot (ns).
    pub ts: u64,
    pub last_seen: u64,
    pub proto: u8,
    pub flows: u64,
    pub packets: u64,
    pub bytes: u64,
}

/// One second (or interval) of traffic, for the charts.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatsRow {
    /// Start of the interval, ns since the epoch.
    pub ts: u64,
    pub seconds: u64,
    pub packets: u64,
    pub bytes: u64,
    pub tcp: u64,
    pub udp: u64,
    pub icmp: u64,
    pub other: u64,
    pub flows: u64,
}

impl StatsRow {
    /// Counts one packet of IP protocol `proto` (0 for non-IP) and `len` bytes.
    pub fn count(&mut self, proto: u8, len: u32) {
        self.packets += 1;
        self.bytes += u64::from(len);
        match proto {
            6 => self.tcp += 1,
            17 => self.udp += 1,
            1 | 58 => self.icmp += 1,
            _ => self.other += 1,
        }
    }

    /// Adds the kernel's counters of one poll.
    pub fn add_counters(&mut self, d: &sensor_common::GlobalCounters) {
        self.packets += d.packets;
        self.bytes += d.bytes;
        self.tcp += d.tcp_packets;
        self.udp += d.udp_packets;
        self.icmp += d.icmp_packets;
        self.other += d.other_ip_packets + d.non_ip_packets;
    }
}

/// One anomalous flow as the model judged it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AnomalyRow {
    pub ts: u64,
    pub src_ip: String,
    pub dst_ip: String,
    pub score: f64,
    pub severity: String,
    /// The flow and the top features, as JSON text (serialized once, where judged).
    pub record: String,
}

/// One finished flow, as written one per line by `--flows-jsonl`.
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct FlowRecord {
    pub src_ip: String,
    pub dst_ip: String,
    pub src_port: u16,
    pub dst_port: u16,
    /// IP protocol number (0 for ARP, whose `family` is "arp").
    pub proto: u8,
    pub family: &'static str,
    pub packets_fwd: u64,
    pub packets_rev: u64,
    pub bytes_fwd: u64,
    pub bytes_rev: u64,
    /// RFC 3339, microseconds, UTC.
    pub first_seen: String,
    pub last_seen: String,
    pub duration_s: f64,
    pub syn: u64,
    pub syn_ack: u64,
    pub fin: u64,
    pub rst: u64,
    pub psh: u64,
    pub ack_only: u64,
    pub echo_requests: u64,
    pub fragments: u64,
    pub min_len: u32,
    pub max_len: u32,
    pub mean_len: f64,
    pub std_len: f64,
    /// Inter-arrival time statistics in µs (null when the source had no per-packet times).
    pub mean_iat_us: Option<f64>,
    pub std_iat_us: Option<f64>,
    pub end: EndReason,
    /// The model's anomaly score in [0, 1] (absent when no model is loaded): every flow
    /// carries it, so an analyst can rank flows, not only read the anomalies.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub score: Option<f64>,
    /// Whether the score reached the model's threshold.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub anomalous: Option<bool>,
}

/// RFC 3339 with microseconds in UTC for ns since the epoch.
pub fn rfc3339_us(ns: u64) -> String {
    DateTime::from_timestamp_nanos(ns.min(i64::MAX as u64) as i64)
        .to_rfc3339_opts(SecondsFormat::Micros, true)
}

impl From<&Flow> for FlowRecord {
    fn from(f: &Flow) -> Self {
        let iat = (f.iat_us.n > 0).then_some(f.iat_us);
        Self {
            src_ip: f.src.to_string(),
            dst_ip: f.dst.to_string(),
            src_port: f.src_port,
            dst_port: f.dst_port,
            proto: f.proto,
            family: match f.family {
                sensor_common::family::IPV6 => "ipv6",
                sensor_common::family::ARP => "arp",
                _ => "ipv4",
            },
            packets_fwd: f.fwd.packets,
            packets_rev: f.rev.packets,
            bytes_fwd: f.fwd.bytes,
            bytes_rev: f.rev.bytes,
            first_seen: rfc3339_us(f.first_seen_ns),
            last_seen: rfc3339_us(f.last_seen_ns),
            duration_s: f.duration().as_secs_f64(),
            syn: u64::from(f.syn),
            syn_ack: u64::from(f.syn_ack),
            fin: u64::from(f.fin),
            rst: u64::from(f.rst),
            psh: u64::from(f.psh),
            ack_only: u64::from(f.ack_only),
            echo_requests: u64::from(f.echo_requests),
            fragments: u64::from(f.fragments),
            min_len: if f.packets() == 0 { 0 } else { f.min_len },
            max_len: f.max_len,
            mean_len: f.len.mean,
            std_len: f.len.std(),
            mean_iat_us: iat.map(|m| m.mean),
            std_iat_us: iat.map(|m| m.std()),
            end: f.end,
            score: None,
            anomalous: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_are_rfc3339_with_microseconds() {
        assert_eq!(
            rfc3339_us(1_700_000_000_123_456_789),
            "2023-11-14T22:13:20.123456Z"
        );
        assert_eq!(rfc3339_us(0), "1970-01-01T00:00:00.000000Z");
    }
}
