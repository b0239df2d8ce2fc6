//! The networks the sensor protects (`[networks]`): which side of an alert is ours, and the
//! named groups of prefixes (hostgroups) an operator sets apart. An alert says whether it
//! came in, went out (a host of ours attacking), stayed inside, or neither, and which group
//! its side of ours belongs to.

use std::net::IpAddr;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use crate::check::Invalid;

/// `[networks]` in the config file.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NetworksConfig {
    /// Prefixes the sensor protects (Suricata's HOME_NET, FastNetMon's networks_list). Empty:
    /// alerts carry no direction.
    pub home: Vec<String>,
    /// Named sets of prefixes; an address belongs to the group of its most specific prefix.
    pub hostgroups: Vec<HostgroupConfig>,
}

/// `[[networks.hostgroups]]`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HostgroupConfig {
    pub name: String,
    pub prefixes: Vec<String>,
    /// Flood thresholds for the group's hosts as victims (unset: `[rules]`'s).
    pub thresholds: GroupThresholds,
    /// Upstream mitigation for the group's hosts (unset: `[bgp]`'s).
    pub bgp: GroupBgp,
}

/// `[networks.hostgroups.thresholds]`: what a host of the group must receive before it is a
/// flood's victim, per protocol (FastNetMon's per-hostgroup thresholds). A busy web farm and a
/// quiet office take different numbers.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GroupThresholds {
    /// Half-open TCP connection attempts to one port within `rules.syn_flood_window_s`.
    pub syn_flood_syns: Option<u64>,
    /// UDP packets per second (one-sided) for a UDP flood.
    pub udp_pps: Option<u64>,
    /// ICMP echo requests per second for an ICMP flood.
    pub icmp_pps: Option<u64>,
    /// UDP megabits per second (one-sided) for a UDP flood, whatever the packet rate.
    pub udp_mbps: Option<u64>,
    /// ICMP megabits per second for an ICMP flood.
    pub icmp_mbps: Option<u64>,
    /// Packets per second of every protocol from many sources for a DDoS.
    pub ddos_pps: Option<u64>,
    /// Packets per second for a traffic spike.
    pub spike_pps: Option<u64>,
}

/// What a FlowSpec rule does (`flowspec_action`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum FlowspecAction {
    #[default]
    Discard,
    /// Traffic-rate at `flowspec_rate_bytes` per second.
    RateLimit,
}

/// `[networks.hostgroups.bgp]`: the group's escalation levels.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GroupBgp {
    /// false: nothing about the group's hosts is announced (XDP mitigation still acts).
    pub announce: Option<bool>,
    /// The attack's packet rate from which a FlowSpec rule is announced.
    pub flowspec_pps: Option<u64>,
    pub flowspec_action: Option<FlowspecAction>,
    pub flowspec_rate_bytes: Option<u64>,
    /// The rate from which the victim is blackholed (RTBH); 0: never.
    pub rtbh_pps: Option<u64>,
}

impl NetworksConfig {
    pub fn check(&self) -> Result<(), Invalid> {
        for p in &self.home {
            parse(p).map_err(|e| Invalid::new("networks.home", e))?;
        }
        let mut names = std::collections::HashSet::new();
        for g in &self.hostgroups {
            if g.name.trim().is_empty() {
                return Err(Invalid::new(
                    "networks.hostgroups",
                    "needs a name for every group",
                ));
            }
            if !names.insert(g.name.as_str()) {
                return Err(Invalid::new(
                    "networks.hostgroups",
                    format!("names `{}` twice", g.name),
                ));
            }
            if g.prefixes.is_empty() {
                return Err(Invalid::new(
                    "networks.hostgroups",
                    format!("`{}` has no prefixes", g.name),
                ));
            }
            for p in &g.prefixes {
                parse(p).map_err(|e| Invalid::new("networks.hostgroups", e))?;
            }
            let t = &g.thresholds;
            for (what, v) in [
                ("syn_flood_syns", t.syn_flood_syns),
                ("udp_pps", t.udp_pps),
                ("icmp_pps", t.icmp_pps),
                ("udp_mbps", t.udp_mbps),
                ("icmp_mbps", t.icmp_mbps),
                ("ddos_pps", t.ddos_pps),
                ("spike_pps", t.spike_pps),
                ("flowspec_rate_bytes", g.bgp.flowspec_rate_bytes),
            ] {
                if v == Some(0) {
                    return Err(Invalid::new(
                        "networks.hostgroups",
                        format!("`{}`: {what} must be positive", g.name),
                    ));
                }
            }
        }
        Ok(())
    }

    /// The parsed form (prefixes that do not parse are left out: `check` refuses them first).
    pub fn build(&self) -> Networks {
        let home = self.home.iter().filter_map(|p| parse(p).ok()).collect();
        let mut groups: Vec<(std::sync::Arc<HostgroupConfig>, IpNet)> = self
            .hostgroups
            .iter()
            .flat_map(|g| {
                let shared = std::sync::Arc::new(g.clone());
                g.prefixes
                    .iter()
                    .filter_map(|p| parse(p).ok())
                    .map(|n| (std::sync::Arc::clone(&shared), n))
                    .collect::<Vec<_>>()
            })
            .collect();
        // Most specific first: the first match is the one that counts.
        groups.sort_by_key(|(_, n)| std::cmp::Reverse(n.prefix_len()));
        Networks { home, groups }
    }
}

/// A prefix (`192.0.2.0/24`, `2001:db8::/32`) or one address (a /32 or /128).
fn parse(s: &str) -> Result<IpNet, String> {
    let s = s.trim();
    s.parse::<IpNet>()
        .or_else(|_| s.parse::<IpAddr>().map(IpNet::from))
        .map(|n| n.trunc())
        .map_err(|_| format!("`{s}` is not a prefix (192.0.2.0/24, 2001:db8::/32) or an address"))
}

/// Which way an alert's traffic went, seen from the networks the sensor protects.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    /// From outside into a home network.
    Incoming,
    /// From a home host to the outside: one of ours attacking (never a reason to announce
    /// our own addresses upstream).
    Outgoing,
    /// Between home hosts.
    Internal,
    /// Neither side is ours (transit traffic the gateway forwards).
    External,
}

/// `[networks]`, parsed.
#[derive(Clone, Debug, Default)]
pub struct Networks {
    home: Vec<IpNet>,
    /// (group, prefix), most specific prefix first.
    groups: Vec<(std::sync::Arc<HostgroupConfig>, IpNet)>,
}

impl Networks {
    pub fn is_home(&self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        self.home.iter().any(|n| n.contains(&ip))
    }

    /// The direction of an alert from `src` to `dst` (either may be unknown: many sources, many
    /// targets). `None` without home networks, or when the one known side is not ours.
    pub fn direction(&self, src: Option<IpAddr>, dst: Option<IpAddr>) -> Option<Direction> {
        if self.home.is_empty() {
            return None;
        }
        match (src.map(|s| self.is_home(s)), dst.map(|d| self.is_home(d))) {
            (Some(true), Some(true)) => Some(Direction::Internal),
            (Some(false) | None, Some(true)) => Some(Direction::Incoming),
            (Some(true), Some(false) | None) => Some(Direction::Outgoing),
            (Some(false), Some(false)) => Some(Direction::External),
            _ => None,
        }
    }

    /// The group of `ip`'s most specific prefix.
    pub fn hostgroup(&self, ip: IpAddr) -> Option<&str> {
        self.group(ip).map(|g| g.name.as_str())
    }

    /// The configuration of `ip`'s group (its thresholds and mitigation policy).
    pub fn group(&self, ip: IpAddr) -> Option<&HostgroupConfig> {
        let ip = canonical(ip);
        self.groups
            .iter()
            .find(|(_, n)| n.contains(&ip))
            .map(|(g, _)| &**g)
    }

    /// Whether any group sets its own flood thresholds.
    pub fn has_thresholds(&self) -> bool {
        self.groups
            .iter()
            .any(|(g, _)| g.thresholds != GroupThresholds::default())
    }

    /// Whether no home network is set.
    pub fn home_is_empty(&self) -> bool {
        self.home.is_empty()
    }

    /// The group of an alert: its home side's (the victim's, or the source's when one of ours
    /// attacks out); without home networks, the destination's, else the source's.
    pub fn alert_hostgroup(&self, src: Option<IpAddr>, dst: Option<IpAddr>) -> Option<&str> {
        let ours = match self.direction(src, dst) {
            Some(Direction::Outgoing) => src,
            Some(_) => dst.or(src),
            None => dst.or(src),
        };
        ours.and_then(|ip| self.hostgroup(ip))
            .or_else(|| src.and_then(|ip| self.hostgroup(ip)))
    }
}

/// IPv4-mapped IPv6 addresses as the IPv4 address they carry.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("address")
    }

    fn nets() -> Networks {
        NetworksConfig {
            home: vec![
                "10.77.1.0/24".into(),
                "2001:db8::/32".into(),
                "192.0.2.7".into(),
            ],
            hostgroups: vec![
                HostgroupConfig {
                    name: "servers".into(),
                    prefixes: vec!["10.77.1.0/24".into()],
                    ..HostgroupConfig::default()
                },
                HostgroupConfig {
                    name: "web".into(),
                    prefixes: vec!["10.77.1.10/32".into()],
                    ..HostgroupConfig::default()
                },
            ],
        }
        .build()
    }

    #[test]
    fn an_alert_says_which_way_it_went() {
        let n = nets();
        let (home, out) = (Some(ip("10.77.1.5")), Some(ip("203.0.113.9")));
        assert_eq!(n.direction(out, home), Some(Direction::Incoming));
        assert_eq!(n.direction(home, out), Some(Direction::Outgoing));
        assert_eq!(
            n.direction(home, Some(ip("192.0.2.7"))),
            Some(Direction::Internal)
        );
        assert_eq!(
            n.direction(out, Some(ip("198.51.100.1"))),
            Some(Direction::External)
        );
        // Many sources into one of ours; one of ours sweeping many hosts.
        assert_eq!(n.direction(None, home), Some(Direction::Incoming));
        assert_eq!(n.direction(home, None), Some(Direction::Outgoing));
        assert_eq!(n.direction(out, None), None);
        assert_eq!(
            n.direction(None, Some(ip("2001:db8::1"))),
            Some(Direction::Incoming)
        );
        // IPv4-mapped addresses are their IPv4 address.
        assert!(n.is_home(ip("::ffff:10.77.1.5")));
        assert_eq!(Networks::default().direction(out, home), None);
    }

    #[test]
    fn the_most_specific_group_wins_and_names_our_side() {
        let n = nets();
        assert_eq!(n.hostgroup(ip("10.77.1.10")), Some("web"));
        assert_eq!(n.hostgroup(ip("10.77.1.11")), Some("servers"));
        assert_eq!(n.hostgroup(ip("203.0.113.9")), None);
        let out = Some(ip("203.0.113.9"));
        assert_eq!(n.alert_hostgroup(out, Some(ip("10.77.1.10"))), Some("web"));
        assert_eq!(
            n.alert_hostgroup(Some(ip("10.77.1.11")), out),
            Some("servers")
        );
    }

    #[test]
    fn bad_prefixes_and_groups_are_refused_by_key() {
        let bad = |c: NetworksConfig| c.check().expect_err("refused");
        let e = bad(NetworksConfig {
            home: vec!["10.0.0.0/33".into()],
            ..NetworksConfig::default()
        });
        assert_eq!(e.key, "networks.home");
        assert!(e.problem.contains("10.0.0.0/33"), "{e}");
        let g = |name: &str, p: &[&str]| HostgroupConfig {
            name: name.into(),
            prefixes: p.iter().map(|s| (*s).to_owned()).collect(),
            ..HostgroupConfig::default()
        };
        let zero = HostgroupConfig {
            thresholds: GroupThresholds {
                udp_pps: Some(0),
                ..GroupThresholds::default()
            },
            ..g("z", &["10.0.0.0/8"])
        };
        for groups in [
            vec![zero],
            vec![g("", &["10.0.0.0/8"])],
            vec![g("a", &[])],
            vec![g("a", &["10.0.0.0/8"]), g("a", &["10.1.0.0/16"])],
            vec![g("a", &["ten"])],
        ] {
            let e = bad(NetworksConfig {
                hostgroups: groups,
                ..NetworksConfig::default()
            });
            assert_eq!(e.key, "networks.hostgroups", "{e}");
        }
        assert!(nets_config_ok());
    }

    fn nets_config_ok() -> bool {
        NetworksConfig {
            home: vec!["10.77.1.0/24".into(), "192.0.2.7".into()],
            hostgroups: Vec::new(),
        }
        .check()
        .is_ok()
    }
}
