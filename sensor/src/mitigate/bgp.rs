//! What the sensor asks its upstream routers to drop, and the BGP speaker that tells them.
//!
//! The sensor speaks no BGP itself: it drives GoBGP (`gobgpd`, Debian's package) through the
//! `gobgp` command, the daemon's own gRPC client shipped beside it (docs/DESIGN.md, "Upstream
//! mitigation"). A call costs one process start (~10 ms here) and happens a handful of times
//! per attack on the speaker's own thread, never per packet; in exchange the build needs no
//! protobuf compiler and the client always matches the daemon's version.

use std::{
    fmt,
    net::IpAddr,
    path::PathBuf,
    process::{Command, Stdio},
    time::Duration,
};

use ipnet::IpNet;
use sensor_common::proto;
use serde::{Deserialize, Serialize};
use serde_json::Value;

#[derive(Debug, thiserror::Error)]
pub enum BgpError {
    #[error("running {program}")]
    Spawn {
        program: String,
        source: std::io::Error,
    },
    #[error("the BGP speaker refused `{args}`: {message}")]
    Refused { args: String, message: String },
    #[error("the BGP speaker's answer to `{args}` is not what GoBGP 3 prints: {message}")]
    Unreadable { args: String, message: String },
}

/// TCP flags a FlowSpec rule matches exactly (RFC 8955 4.2.2.9, the `=` operator).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TcpFlags {
    /// A connection attempt (a SYN flood's packets).
    Syn,
    /// A handshake's answer (SYN-ACK reflection).
    SynAck,
}

impl TcpFlags {
    fn bits(self) -> u64 {
        match self {
            Self::Syn => 0x02,
            Self::SynAck => 0x12,
        }
    }

    fn gobgp(self) -> &'static str {
        match self {
            Self::Syn => "=S",
            Self::SynAck => "=SA",
        }
    }
}

/// The match of one FlowSpec rule (RFC 8955 for IPv4, 8956 for IPv6): always a victim host of
/// ours, narrowed by what the attack is made of.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct FlowMatch {
    pub dst: IpAddr,
    /// The attacker, when a single source floods.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub src: Option<IpAddr>,
    /// IP protocol (None: every protocol, a DDoS of everything at once).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub proto: Option<u8>,
    /// The reflected service's port (e.g. 123 for NTP reflection).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub src_port: Option<u16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dst_port: Option<u16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tcp_flags: Option<TcpFlags>,
}

/// A route the sensor announces: its identity (the NLRI), what the upstream's RIB is keyed by.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Route {
    /// RFC 7999 remote-triggered blackhole: the victim's host route with the blackhole
    /// community; the upstream drops everything toward it.
    Rtbh(IpAddr),
    FlowSpec(FlowMatch),
}

/// What a FlowSpec rule does to what it matches (the traffic-rate extended community).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", tag = "action")]
pub enum FlowAction {
    Discard,
    /// Lets this many bytes per second through (RFC 8955's traffic-rate unit).
    RateLimit {
        bytes_per_s: u64,
    },
}

fn proto_word(p: u8) -> String {
    match p {
        proto::TCP => "tcp".into(),
        proto::UDP => "udp".into(),
        proto::ICMP => "icmp".into(),
        proto::ICMPV6 => "ipv6-icmp".into(),
        p => p.to_string(),
    }
}

fn host_net(ip: IpAddr) -> IpNet {
    IpNet::from(ip)
}

impl fmt::Display for Route {
    /// The audit log's and the API's name of a route.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Rtbh(ip) => write!(f, "rtbh:{}", host_net(*ip)),
            Self::FlowSpec(m) => {
                write!(f, "flowspec:{}", host_net(m.dst))?;
                if let Some(s) = m.src {
                    write!(f, " from {}", host_net(s))?;
                }
                if let Some(p) = m.proto {
                    write!(f, " {}", proto_word(p))?;
                }
                if let Some(p) = m.src_port {
                    write!(f, " src-port {p}")?;
                }
                if let Some(p) = m.dst_port {
                    write!(f, " dst-port {p}")?;
                }
                if let Some(t) = m.tcp_flags {
                    write!(f, " flags {}", &t.gobgp()[1..])?;
                }
                Ok(())
            }
        }
    }
}

impl Route {
    /// The victim the route protects.
    pub fn victim(&self) -> IpAddr {
        match self {
            Self::Rtbh(ip) => *ip,
            Self::FlowSpec(m) => m.dst,
        }
    }

    fn family(&self) -> &'static str {
        match (self, self.victim()) {
            (Self::Rtbh(_), IpAddr::V4(_)) => "ipv4",
            (Self::Rtbh(_), IpAddr::V6(_)) => "ipv6",
            (Self::FlowSpec(_), IpAddr::V4(_)) => "ipv4-flowspec",
            (Self::FlowSpec(_), IpAddr::V6(_)) => "ipv6-flowspec",
        }
    }

    /// The words after `gobgp global rib -a FAMILY add|del` that name this route.
    fn nlri_args(&self) -> Vec<String> {
        match self {
            Self::Rtbh(ip) => vec![host_net(*ip).to_string()],
            Self::FlowSpec(m) => {
                let mut a = vec!["match".into(), "destination".into()];
                a.push(host_net(m.dst).to_string());
                if m.dst.is_ipv6() {
                    a.push("0".into()); // RFC 8956 prefix offset
                }
                if let Some(s) = m.src {
                    a.extend(["source".into(), host_net(s).to_string()]);
                    if s.is_ipv6() {
                        a.push("0".into());
                    }
                }
                if let Some(p) = m.proto {
                    // RFC 8956 calls it next-header; GoBGP takes `protocol` for both.
                    a.extend(["protocol".into(), proto_word(p)]);
                }
                if let Some(p) = m.dst_port {
                    a.extend(["destination-port".into(), format!("=={p}")]);
                }
                if let Some(p) = m.src_port {
                    a.extend(["source-port".into(), format!("=={p}")]);
                }
                if let Some(t) = m.tcp_flags {
                    a.extend(["tcp-flags".into(), t.gobgp().into()]);
                }
                a
            }
        }
    }
}

/// Path attributes of the sensor's announcements (`[bgp]`).
#[derive(Clone, Debug, PartialEq)]
pub struct PathAttrs {
    pub next_hop_v4: IpAddr,
    pub next_hop_v6: IpAddr,
    /// RTBH communities (RFC 7999's 65535:666 by default, plus what the upstream agreed).
    pub rtbh_communities: Vec<String>,
}

/// One BGP neighbour of the speaker.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Peer {
    pub address: IpAddr,
    pub asn: u32,
    pub established: bool,
    /// BGP FSM state as GoBGP names it (idle, connect, active, opensent, openconfirm,
    /// established).
    pub state: String,
}

/// Where announcements go: the real speaker, or a test's double.
pub trait Speaker: Send {
    fn announce(&mut self, r: &Route, action: FlowAction) -> Result<(), BgpError>;
    fn withdraw(&mut self, r: &Route) -> Result<(), BgpError>;
    /// The routes of the families the sensor announces that the speaker holds now.
    fn routes(&mut self) -> Result<Vec<Route>, BgpError>;
    fn peers(&mut self) -> Result<Vec<Peer>, BgpError>;
}

/// GoBGP driven through its `gobgp` client.
pub struct Gobgp {
    pub program: PathBuf,
    /// The daemon's gRPC address as its `--api-hosts` has it: `HOST:PORT`, or
    /// `unix:///PATH` for a socket file.
    pub api: String,
    pub attrs: PathAttrs,
}

/// Longest a `gobgp` call may take before it counts as failed (the daemon is local).
const CALL_TIMEOUT: Duration = Duration::from_secs(5);

impl Gobgp {
    /// Whether the client runs at all (installed, executable): checked at start, so a missing
    /// client is a configuration error rather than a session that never comes up.
    pub fn check(&self) -> Result<(), BgpError> {
        Command::new(&self.program)
            .arg("--help")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .map_err(|source| BgpError::Spawn {
                program: format!(
                    "{} (bgp.gobgp; Debian's gobgpd package installs it)",
                    self.program.display()
                ),
                source,
            })
            .map(drop)
    }

    fn run(&self, args: &[String]) -> Result<String, BgpError> {
        let mut cmd = Command::new(&self.program);
        match self.api.rsplit_once(':') {
            _ if self.api.starts_with("unix://") => cmd.args(["--target", &self.api]),
            Some((host, port)) => {
                cmd.args(["--host", host.trim_matches(['[', ']']), "--port", port])
            }
            None => cmd.args(["--host", &self.api]),
        };
        cmd.args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let spawn = |source| BgpError::Spawn {
            program: self.program.display().to_string(),
            source,
        };
        let mut child = cmd.spawn().map_err(spawn)?;
        let started = std::time::Instant::now();
        loop {
            if child.try_wait().map_err(spawn)?.is_some() {
                break;
            }
            if started.elapsed() > CALL_TIMEOUT {
                let _ignored = child.kill();
                let _ignored = child.wait();
                return Err(BgpError::Refused {
                    args: args.join(" "),
                    message: format!("no answer within {} s", CALL_TIMEOUT.as_secs()),
                });
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        let out = child.wait_with_output().map_err(spawn)?;
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        if !out.status.success() {
            let err = String::from_utf8_lossy(&out.stderr);
            let msg = err.lines().chain(text.lines()).next().unwrap_or("").trim();
            return Err(BgpError::Refused {
                args: args.join(" "),
                message: if msg.is_empty() {
                    format!("exit {}", out.status)
                } else {
                    msg.to_owned()
                },
            });
        }
        Ok(text)
    }

    fn rib_args(family: &str, op: &str) -> Vec<String> {
        ["global", "rib", "-a", family, op]
            .map(String::from)
            .to_vec()
    }
}

impl Speaker for Gobgp {
    fn announce(&mut self, r: &Route, action: FlowAction) -> Result<(), BgpError> {
        let mut args = Self::rib_args(r.family(), "add");
        args.extend(r.nlri_args());
        match r {
            Route::Rtbh(ip) => {
                let hop = if ip.is_ipv4() {
                    self.attrs.next_hop_v4
                } else {
                    self.attrs.next_hop_v6
                };
                args.extend(["nexthop".into(), hop.to_string()]);
                if !self.attrs.rtbh_communities.is_empty() {
                    args.extend(["community".into(), self.attrs.rtbh_communities.join(",")]);
                }
            }
            Route::FlowSpec(_) => {
                args.push("then".into());
                match action {
                    FlowAction::Discard => args.push("discard".into()),
                    FlowAction::RateLimit { bytes_per_s } => {
                        args.extend(["rate-limit".into(), bytes_per_s.to_string()]);
                    }
                }
            }
        }
        self.run(&args).map(drop)
    }

    fn withdraw(&mut self, r: &Route) -> Result<(), BgpError> {
        let mut args = Self::rib_args(r.family(), "del");
        args.extend(r.nlri_args());
        self.run(&args).map(drop)
    }

    fn routes(&mut self) -> Result<Vec<Route>, BgpError> {
        let mut out = Vec::new();
        for family in ["ipv4", "ipv6", "ipv4-flowspec", "ipv6-flowspec"] {
            let mut args = vec!["global".into(), "rib".into(), "-a".into(), family.into()];
            args.push("-j".into());
            let text = self.run(&args)?;
            let v: Value = serde_json::from_str(text.trim()).map_err(|e| BgpError::Unreadable {
                args: args.join(" "),
                message: e.to_string(),
            })?;
            let Some(map) = v.as_object() else { continue };
            for paths in map.values() {
                let Some(path) = paths.as_array().and_then(|p| p.first()) else {
                    continue;
                };
                if let Some(r) = parse_route(path, family.ends_with("flowspec")) {
                    out.push(r);
                }
            }
        }
        Ok(out)
    }

    fn peers(&mut self) -> Result<Vec<Peer>, BgpError> {
        let args: Vec<String> = vec!["neighbor".into(), "-j".into()];
        let text = self.run(&args)?;
        parse_peers(&text).map_err(|message| BgpError::Unreadable {
            args: args.join(" "),
            message,
        })
    }
}

/// A path of `gobgp global rib -j` as a route the sensor could have announced: a host route
/// (RTBH) or a FlowSpec rule whose destination is one host. Anything else is not the sensor's.
fn parse_route(path: &Value, flowspec: bool) -> Option<Route> {
    let nlri = &path["nlri"];
    let host = |p: &str| -> Option<IpAddr> {
        let net: IpNet = p.parse().ok()?;
        (net.prefix_len() == net.max_prefix_len()).then_some(net.addr())
    };
    if !flowspec {
        return host(nlri["prefix"].as_str()?).map(Route::Rtbh);
    }
    let mut m = FlowMatch {
        dst: IpAddr::from([0, 0, 0, 0]),
        src: None,
        proto: None,
        src_port: None,
        dst_port: None,
        tcp_flags: None,
    };
    let mut dst = None;
    for c in nlri["value"].as_array()? {
        let first = || {
            c["value"]
                .as_array()
                .and_then(|v| v.first())
                .and_then(|x| x["value"].as_u64())
        };
        match c["type"].as_u64()? {
            1 => dst = Some(host(c["value"]["prefix"].as_str()?)?),
            2 => m.src = Some(host(c["value"]["prefix"].as_str()?)?),
            3 => m.proto = Some(u8::try_from(first()?).ok()?),
            5 => m.dst_port = Some(u16::try_from(first()?).ok()?),
            6 => m.src_port = Some(u16::try_from(first()?).ok()?),
            9 => {
                m.tcp_flags = Some(match first()? {
                    0x02 => TcpFlags::Syn,
                    0x12 => TcpFlags::SynAck,
                    _ => return None,
                });
            }
            _ => return None,
        }
    }
    m.dst = dst?;
    Some(Route::FlowSpec(m))
}

/// `gobgp neighbor -j`: its neighbours and their session state (GoBGP's API enum: 1 idle,
/// 2 connect, 3 active, 4 opensent, 5 openconfirm, 6 established).
fn parse_peers(text: &str) -> Result<Vec<Peer>, String> {
    let v: Value = serde_json::from_str(text.trim()).map_err(|e| e.to_string())?;
    let Some(list) = v.as_array() else {
        return if v.is_null() {
            Ok(Vec::new())
        } else {
            Err("not a list of neighbours".into())
        };
    };
    list.iter()
        .map(|n| {
            let address = n["conf"]["neighbor_address"]
                .as_str()
                .and_then(|a| a.parse().ok())
                .ok_or("a neighbour without an address")?;
            let state = match n["state"]["session_state"].as_u64().unwrap_or(0) {
                1 => "idle",
                2 => "connect",
                3 => "active",
                4 => "opensent",
                5 => "openconfirm",
                6 => "established",
                _ => "unknown",
            };
            Ok(Peer {
                address,
                asn: n["conf"]["peer_asn"].as_u64().unwrap_or(0) as u32,
                established: state == "established",
                state: state.into(),
            })
        })
        .collect()
}

impl TcpFlags {
    /// The flag bits as RFC 8955 encodes them (what the upstream's RIB shows).
    pub fn value(self) -> u64 {
        self.bits()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(dst: &str) -> FlowMatch {
        FlowMatch {
            dst: dst.parse().unwrap(),
            src: None,
            proto: None,
            src_port: None,
            dst_port: None,
            tcp_flags: None,
        }
    }

    #[test]
    fn flowspec_words_are_gobgps() {
        let r = Route::FlowSpec(FlowMatch {
            proto: Some(proto::UDP),
            src_port: Some(123),
            ..m("10.20.0.5")
        });
        assert_eq!(
            r.nlri_args().join(" "),
            "match destination 10.20.0.5/32 protocol udp source-port ==123"
        );
        assert_eq!(r.to_string(), "flowspec:10.20.0.5/32 udp src-port 123");
        let r = Route::FlowSpec(FlowMatch {
            src: Some("2001:db8::9".parse().unwrap()),
            proto: Some(proto::TCP),
            dst_port: Some(80),
            tcp_flags: Some(TcpFlags::Syn),
            ..m("2001:db8::5")
        });
        assert_eq!(
            r.nlri_args().join(" "),
            "match destination 2001:db8::5/128 0 source 2001:db8::9/128 0 protocol tcp \
             destination-port ==80 tcp-flags =S"
        );
        assert_eq!(r.family(), "ipv6-flowspec");
        assert_eq!(Route::Rtbh("10.1.2.3".parse().unwrap()).family(), "ipv4");
    }

    #[test]
    fn the_speakers_rib_reads_back_as_routes() {
        // As gobgp 3.10 prints `global rib -a ipv4-flowspec -j` (one path per rule).
        let path: Value = serde_json::from_str(
            r#"{"nlri":{"value":[{"type":1,"value":{"prefix":"10.20.0.6/32"}},
            {"type":3,"value":[{"op":129,"value":6}]},{"type":5,"value":[{"op":129,"value":80}]},
            {"type":9,"value":[{"op":129,"value":2}]}]},"best":true}"#,
        )
        .unwrap();
        assert_eq!(
            parse_route(&path, true),
            Some(Route::FlowSpec(FlowMatch {
                proto: Some(proto::TCP),
                dst_port: Some(80),
                tcp_flags: Some(TcpFlags::Syn),
                ..m("10.20.0.6")
            }))
        );
        let v6: Value = serde_json::from_str(
            r#"{"nlri":{"value":[{"type":1,"value":{"prefix":"2001:db8::5/128"},"offset":0},
            {"type":3,"value":[{"op":129,"value":17}]},{"type":6,"value":[{"op":129,"value":53}]}]}}"#,
        )
        .unwrap();
        assert_eq!(
            parse_route(&v6, true),
            Some(Route::FlowSpec(FlowMatch {
                proto: Some(proto::UDP),
                src_port: Some(53),
                ..m("2001:db8::5")
            }))
        );
        // A /24 is no route of the sensor's; a host route is.
        let net: Value = serde_json::from_str(r#"{"nlri":{"prefix":"10.20.0.0/24"}}"#).unwrap();
        assert_eq!(parse_route(&net, false), None);
        let host: Value = serde_json::from_str(r#"{"nlri":{"prefix":"10.20.0.7/32"}}"#).unwrap();
        assert_eq!(
            parse_route(&host, false),
            Some(Route::Rtbh("10.20.0.7".parse().unwrap()))
        );
    }

    #[test]
    fn neighbours_and_their_state() {
        let text = r#"[{"conf":{"neighbor_address":"10.99.0.1","peer_asn":65000},
            "state":{"session_state":6}},{"conf":{"neighbor_address":"10.99.0.3","peer_asn":65002},
            "state":{"session_state":3}}]"#;
        let peers = parse_peers(text).unwrap();
        assert_eq!(peers.len(), 2);
        assert!(peers[0].established);
        assert_eq!(peers[1].state, "active");
        assert!(!peers[1].established);
        assert_eq!(parse_peers("null").unwrap(), Vec::new());
        assert!(parse_peers("{}").is_err());
    }
}
