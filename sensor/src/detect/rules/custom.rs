//! Operator rules (`[[rules.custom]]`): what an operator wants to hear about that the
//! built-in rules do not name, in a small declarative form (Suricata's threshold.config and
//! Zeek's notices in spirit): match flow updates on protocol, ports, a connection attempt,
//! direction and hostgroup; count packets, bytes, new connections or distinct ports, hosts
//! or sources per source, destination or pair over a window; compare with a threshold (and
//! optionally with the share of the traffic answered); raise an alert of the rule's own kind
//! and severity. Alerts go through the same incident book as the built-in ones.

use std::net::IpAddr;

use sensor_common::proto;
use serde::{Deserialize, Serialize};

use super::{
    NS,
    window::{Distinct, SecWindow},
};
use crate::{
    check::Invalid,
    detect::{
        FastMap,
        alert::{AlertBook, AlertKind, DetectorKind, Firing, Severity},
        evidence::{CustomEvidence, Evidence},
    },
    flow::FlowEvent,
    networks::{Direction, Networks},
};

/// The protocol a rule matches.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RuleProto {
    Tcp,
    Udp,
    Icmp,
}

impl RuleProto {
    fn name(self) -> &'static str {
        match self {
            Self::Tcp => "tcp",
            Self::Udp => "udp",
            Self::Icmp => "icmp",
        }
    }
}

/// What a rule counts per key within its window.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Count {
    Packets,
    Bytes,
    /// New connections (flows the key's side opened).
    Flows,
    DistinctDstPorts,
    DistinctDstHosts,
    DistinctSources,
}

impl Count {
    fn what(self) -> &'static str {
        match self {
            Self::Packets => "packets",
            Self::Bytes => "bytes",
            Self::Flows => "new connections",
            Self::DistinctDstPorts => "distinct destination ports",
            Self::DistinctDstHosts => "distinct destination hosts",
            Self::DistinctSources => "distinct sources",
        }
    }
}

/// What a rule counts by.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Per {
    #[default]
    Src,
    Dst,
    Pair,
}

/// `[[rules.custom]]`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CustomRule {
    /// The alert kind it raises (`[a-z][a-z0-9_]*`, not a built-in kind).
    pub name: String,
    #[serde(default = "medium")]
    pub severity: Severity,
    #[serde(default)]
    pub proto: Option<RuleProto>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dst_ports: Vec<u16>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub src_ports: Vec<u16>,
    /// Only connection attempts (TCP SYN without ACK).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub syn_only: bool,
    /// Only traffic going this way (needs `[networks] home`).
    #[serde(default)]
    pub direction: Option<Direction>,
    /// Only traffic whose side of ours is in this hostgroup.
    #[serde(default)]
    pub hostgroup: Option<String>,
    pub count: Count,
    #[serde(default)]
    pub per: Per,
    pub window_s: u64,
    pub threshold: u64,
    /// Only while the answered share of what the key sent stays below this (0 to 1).
    #[serde(default)]
    pub max_answered_ratio: Option<f64>,
}

fn medium() -> Severity {
    Severity::Medium
}

/// Built-in kinds' names, which an operator rule may not take.
fn builtin(name: &str) -> bool {
    AlertKind::ALL.iter().any(|k| k.as_str() == name)
}

impl CustomRule {
    /// Checks one rule (`networks`: the configured networks, for `direction` and
    /// `hostgroup`); the message names the rule and the field.
    pub fn check(&self, known_groups: &[String], home_set: bool) -> Result<(), Invalid> {
        let bad = |field: &str, why: String| {
            Invalid::new(
                "rules.custom",
                format!("rule `{}`: {field} {why}", self.name),
            )
        };
        let ok_name = self.name.len() <= 40
            && self.name.starts_with(|c: char| c.is_ascii_lowercase())
            && self
                .name
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
        if !ok_name {
            return Err(Invalid::new(
                "rules.custom",
                format!(
                    "name `{}` must be lowercase letters, digits and _ (at most 40, a letter first)",
                    self.name
                ),
            ));
        }
        if builtin(&self.name) {
            return Err(bad("name", "is a built-in alert kind".into()));
        }
        if self.window_s == 0 || self.window_s > 86_400 {
            return Err(bad(
                "window_s",
                format!("must be within 1 and 86400, not {}", self.window_s),
            ));
        }
        if self.threshold == 0 {
            return Err(bad("threshold", "must be positive".into()));
        }
        if (!self.dst_ports.is_empty() || !self.src_ports.is_empty())
            && !matches!(self.proto, Some(RuleProto::Tcp | RuleProto::Udp))
        {
            return Err(bad(
                "dst_ports/src_ports",
                "need proto = \"tcp\" or \"udp\"".into(),
            ));
        }
        if self.syn_only && self.proto != Some(RuleProto::Tcp) {
            return Err(bad("syn_only", "needs proto = \"tcp\"".into()));
        }
        if self.direction.is_some() && !home_set {
            return Err(bad("direction", "needs [networks] home".into()));
        }
        if let Some(g) = &self.hostgroup
            && !known_groups.contains(g)
        {
            return Err(bad(
                "hostgroup",
                format!("`{g}` is not a [[networks.hostgroups]] name"),
            ));
        }
        if let Some(r) = self.max_answered_ratio
            && !(0.0..=1.0).contains(&r)
        {
            return Err(bad(
                "max_answered_ratio",
                format!("must be within 0 and 1, not {r}"),
            ));
        }
        Ok(())
    }

    fn matches(&self, ev: &FlowEvent) -> bool {
        let proto_ok = match self.proto {
            None => true,
            Some(RuleProto::Tcp) => ev.proto == proto::TCP,
            Some(RuleProto::Udp) => ev.proto == proto::UDP,
            Some(RuleProto::Icmp) => matches!(ev.proto, proto::ICMP | proto::ICMPV6),
        };
        proto_ok
            && (self.dst_ports.is_empty() || self.dst_ports.contains(&ev.dst_port))
            && (self.src_ports.is_empty() || self.src_ports.contains(&ev.src_port))
    }
}

type Key = (Option<IpAddr>, Option<IpAddr>);

/// One key's counts within the window.
struct KeyState {
    count: SecWindow,
    answers: SecWindow,
    sent: SecWindow,
    distinct: Distinct<(IpAddr, u16)>,
    last_ns: u64,
    fired_sec: Option<u64>,
}

/// The operator rules and their counts.
#[derive(Default)]
pub(super) struct Custom {
    rules: Vec<(CustomRule, AlertKind, FastMap<Key, KeyState>)>,
    pub(super) untracked: u64,
}

impl Custom {
    pub(super) fn new(rules: &[CustomRule]) -> Self {
        Self {
            rules: rules
                .iter()
                .map(|r| (r.clone(), AlertKind::custom(&r.name), FastMap::default()))
                .collect(),
            untracked: 0,
        }
    }

    pub(super) fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    pub(super) fn on_event(
        &mut self,
        ev: &FlowEvent,
        networks: Option<&Networks>,
        cap: usize,
        book: &mut AlertBook,
    ) {
        let now = ev.ts_ns;
        let sec = now / NS;
        for (rule, kind, keys) in &mut self.rules {
            if !rule.matches(ev) {
                continue;
            }
            if let Some(n) = networks {
                if rule.direction.is_some()
                    && n.direction(Some(ev.src), Some(ev.dst)) != rule.direction
                {
                    continue;
                }
                if let Some(g) = &rule.hostgroup
                    && n.alert_hostgroup(Some(ev.src), Some(ev.dst)) != Some(g.as_str())
                {
                    continue;
                }
            }
            let key: Key = match rule.per {
                Per::Src => (Some(ev.src), None),
                Per::Dst => (None, Some(ev.dst)),
                Per::Pair => (Some(ev.src), Some(ev.dst)),
            };
            if !keys.contains_key(&key) && keys.len() >= cap {
                self.untracked += 1;
                continue;
            }
            let st = keys.entry(key).or_insert_with(|| KeyState {
                count: SecWindow::new(rule.window_s),
                answers: SecWindow::new(rule.window_s),
                sent: SecWindow::new(rule.window_s),
                distinct: Distinct::default(),
                last_ns: now,
                fired_sec: None,
            });
            st.last_ns = now;
            if !ev.from_src {
                // The responder's packets: answers to what the key's side sent.
                st.answers.add(sec, ev.packets);
                continue;
            }
            let attempt = ev.syn > 0 && ev.syn_ack == 0;
            if rule.syn_only && !attempt {
                continue;
            }
            st.sent.add(sec, ev.packets);
            let window_ns = rule.window_s * NS;
            let value = match rule.count {
                Count::Packets => {
                    st.count.add(sec, ev.packets);
                    st.count.sum_at(sec)
                }
                Count::Bytes => {
                    st.count.add(sec, ev.bytes);
                    st.count.sum_at(sec)
                }
                Count::Flows => {
                    st.count.add(sec, u64::from(ev.new_flow));
                    st.count.sum_at(sec)
                }
                Count::DistinctDstPorts => {
                    st.distinct.add((ev.dst, ev.dst_port), now, 100_000);
                    st.distinct.count(now, window_ns, usize::MAX) as u64
                }
                Count::DistinctDstHosts => {
                    st.distinct.add((ev.dst, 0), now, 100_000);
                    st.distinct.count(now, window_ns, usize::MAX) as u64
                }
                Count::DistinctSources => {
                    st.distinct.add((ev.src, 0), now, 100_000);
                    st.distinct.count(now, window_ns, usize::MAX) as u64
                }
            };
            if value < rule.threshold || st.fired_sec == Some(sec) {
                continue;
            }
            let sent = st.sent.sum_at(sec).max(1);
            let answered = st.answers.sum_at(sec) as f64 / sent as f64;
            if rule.max_answered_ratio.is_some_and(|r| answered >= r) {
                continue;
            }
            st.fired_sec = Some(sec);
            book.fire(Firing {
                kind: *kind,
                detector: DetectorKind::Rule,
                src_ip: key.0,
                dst_ip: key.1,
                ts_ns: now,
                severity: rule.severity,
                rate: value as f64,
                score: None,
                evidence: Evidence::Custom(CustomEvidence {
                    rule: rule.name.clone(),
                    counted: rule.count.what(),
                    value,
                    threshold: rule.threshold,
                    window_s: rule.window_s,
                    answered_ratio: rule
                        .max_answered_ratio
                        .map(|_| (answered * 1000.0).round() / 1000.0),
                    proto: rule.proto.map(RuleProto::name),
                    dst_ports: rule.dst_ports.clone(),
                }),
            });
        }
    }

    /// Keys quiet for their window are forgotten.
    pub(super) fn prune(&mut self, now: u64) {
        for (rule, _, keys) in &mut self.rules {
            let w = rule.window_s * NS;
            keys.retain(|_, st| now.saturating_sub(st.last_ns) < w);
            crate::detect::shrink(keys);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flow::FlowEvent;
    use sensor_common::family;

    fn rdp_rule() -> CustomRule {
        toml::from_str(
            r#"
            name = "rdp_connections"
            severity = "high"
            proto = "tcp"
            dst_ports = [3389]
            syn_only = true
            count = "flows"
            per = "src"
            window_s = 60
            threshold = 50
            "#,
        )
        .expect("the issue's example parses")
    }

    fn conn(ms: u64, src: [u8; 4], sport: u16) -> FlowEvent {
        FlowEvent {
            ts_ns: ms * 1_000_000,
            src: IpAddr::from(src),
            dst: IpAddr::from([10, 0, 0, 5]),
            src_port: sport,
            dst_port: 3389,
            proto: proto::TCP,
            family: family::IPV4,
            key_dst_port: 3389,
            new_flow: true,
            from_src: true,
            packets: 1,
            bytes: 60,
            syn: 1,
            syn_ack: 0,
            rst: 0,
            completed: false,
        }
    }

    /// The issue's example: more than 50 new connections a minute to tcp/3389 from one source.
    #[test]
    fn an_operator_rule_counts_new_connections_per_source_over_its_window() {
        let rules = [rdp_rule()];
        let run = |events: &[FlowEvent]| {
            let mut c = Custom::new(&rules);
            let mut book = AlertBook::new(30 * NS, 100);
            for e in events {
                c.on_event(e, None, 1000, &mut book);
            }
            book.flush();
            book.take_closed()
        };
        // 60 connections in 50 s from one source: one alert of the rule's own kind.
        let burst: Vec<FlowEvent> = (0..60)
            .map(|i| conn(1_000 + i * 800, [203, 0, 113, 7], 40_000 + i as u16))
            .collect();
        let alerts = run(&burst);
        assert_eq!(alerts.len(), 1, "{alerts:?}");
        let a = &alerts[0];
        assert_eq!(a.kind.as_str(), "rdp_connections");
        assert_eq!(a.kind, AlertKind::custom("rdp_connections"));
        assert_eq!(
            (a.src_ip, a.dst_ip),
            (Some(IpAddr::from([203, 0, 113, 7])), None)
        );
        assert_eq!(a.severity, Severity::High);
        let e = a.evidence.json();
        assert_eq!(
            (e["value"].as_u64(), e["threshold"].as_u64()),
            (Some(60), Some(50)),
            "{e}"
        );
        // The same 60 spread over 3 minutes, or from 30 sources, or to another port: none.
        let slow: Vec<FlowEvent> = (0..60)
            .map(|i| conn(1_000 + i * 3_000, [203, 0, 113, 7], 40_000 + i as u16))
            .collect();
        assert!(run(&slow).is_empty(), "20 a minute is below 50");
        let spread: Vec<FlowEvent> = (0..60)
            .map(|i| {
                conn(
                    1_000 + i * 800,
                    [203, 0, 113, (i % 30) as u8],
                    40_000 + i as u16,
                )
            })
            .collect();
        assert!(run(&spread).is_empty(), "per source: two each");
        let other: Vec<FlowEvent> = burst
            .iter()
            .map(|e| FlowEvent { dst_port: 22, ..*e })
            .collect();
        assert!(run(&other).is_empty(), "port 22 is not the rule's");
    }

    #[test]
    fn bad_rules_are_refused_naming_the_rule_and_the_field() {
        let groups = vec!["web".to_owned()];
        let ok = rdp_rule();
        assert!(ok.check(&groups, false).is_ok());
        for (rule, needle) in [
            (
                CustomRule {
                    name: "port_scan".into(),
                    ..ok.clone()
                },
                "built-in",
            ),
            (
                CustomRule {
                    name: "RDP!".into(),
                    ..ok.clone()
                },
                "lowercase",
            ),
            (
                CustomRule {
                    window_s: 0,
                    ..ok.clone()
                },
                "window_s",
            ),
            (
                CustomRule {
                    threshold: 0,
                    ..ok.clone()
                },
                "threshold",
            ),
            (
                CustomRule {
                    proto: None,
                    ..ok.clone()
                },
                "dst_ports",
            ),
            (
                CustomRule {
                    proto: Some(RuleProto::Udp),
                    dst_ports: vec![],
                    ..ok.clone()
                },
                "syn_only",
            ),
            (
                CustomRule {
                    hostgroup: Some("db".into()),
                    ..ok.clone()
                },
                "hostgroup",
            ),
            (
                CustomRule {
                    direction: Some(Direction::Incoming),
                    ..ok.clone()
                },
                "direction",
            ),
            (
                CustomRule {
                    max_answered_ratio: Some(1.5),
                    ..ok.clone()
                },
                "max_answered_ratio",
            ),
        ] {
            let e = rule.check(&groups, false).expect_err(needle);
            assert_eq!(e.key, "rules.custom");
            assert!(e.problem.contains(needle), "{needle}: {e}");
        }
        let unknown: Result<CustomRule, _> = toml::from_str(
            "name = \"x\"\ncount = \"flows\"\nwindow_s = 60\nthreshold = 5\nthreshhold = 6\n",
        );
        assert!(unknown.is_err(), "a misspelt field is an error");
        let bad_count: Result<CustomRule, _> =
            toml::from_str("name = \"x\"\ncount = \"flow\"\nwindow_s = 60\nthreshold = 5\n");
        assert!(bad_count.is_err());
    }
}
