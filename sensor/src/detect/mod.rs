//! Detection: threshold rules on flow events and an Isolation Forest on finished flows, both
//! reporting into one book of alerts.

pub mod alert;
pub mod evidence;
pub mod ml;
pub mod rules;

use sensor_common::{HostKey, HostStats};

use self::evidence::{
    BudgetEvidence, Evidence, EvidenceFlow, ModelEvidence, OnlineEvent, OnlineEvidence,
    OnlineFeature, TopFeature,
};
use self::ml::{
    features::{N_FEATURES, SourceContext, features},
    model::Model,
    online::{EventVerdict, Online},
};
pub use self::{
    alert::{Alert, AlertBook, AlertKind, AlertRecord, Severity},
    rules::{RuleConfig, Rules},
};
use crate::{
    flow::{Flow, FlowEvent},
    metrics::{Counter, Registry},
    record::AnomalyRow,
};

/// Detector state keyed by addresses and ports: std's map with foldhash, several times
/// faster than SipHash on such small keys, seeded per map so that crafted collisions stay out
/// of an attacker's reach.
pub(crate) type FastMap<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;

/// Gives back a pruned map's room once it holds under a quarter of it: a forged-source flood
/// grows per-host state to its cap for a minute, and a map keeps its peak capacity otherwise.
pub(crate) fn shrink<K: Eq + std::hash::Hash, V>(m: &mut FastMap<K, V>) {
    if m.capacity() > 4 * m.len().max(1_024) {
        m.shrink_to(2 * m.len());
    }
}

/// Link-layer control chatter: ARP, ICMPv6 neighbour discovery and multicast listener
/// messages (types 130-137, 143), IGMP. Hosts send it on their own schedule (a router's
/// solicitation, a new address's duplicate detection), it never leaves the link, and the rules
/// judge ARP sweeps on their own: the models score it but never raise it as an anomaly, which
/// on a quiet baseline it would be at every interface that comes up.
pub fn link_chatter(family: u8, proto_: u8, icmp_port: u16) -> bool {
    use sensor_common::{family as fam, proto as p};
    family == fam::ARP
        || proto_ == 2
        || (proto_ == p::ICMPV6 && matches!(icmp_port >> 8, 130..=137 | 143))
}

/// The model's verdict on one finished flow, for its record.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct FlowScore {
    pub score: f64,
    pub anomalous: bool,
}

/// An anomaly as stored: the flow, why it stood out, and against what threshold.
#[derive(serde::Serialize)]
struct AnomalyDoc<'a> {
    flow: crate::record::FlowRecord,
    top_features: &'a [TopFeature],
    score: f64,
    severity: &'static str,
    threshold: f64,
}

#[derive(serde::Serialize)]
struct OnlineDoc<'a> {
    model: &'static str,
    flow: &'a OnlineEvent,
    top_features: &'a [OnlineFeature],
    score: f64,
    severity: &'static str,
    threshold: f64,
}

/// Anomalies held between two drains at most; the pipeline drains after every batch, so only a
/// consumer that stopped draining reaches it (the excess is counted, not kept).
const MAX_PENDING_ANOMALIES: usize = 100_000;

/// Anomalies of an attack a rule alert already reports that still get their own explained
/// row; the rest are counted into the alert (`model_anomalies`) and `anomalies_folded`.
pub const EXPLAINED_PER_ALERT: u64 = 100;

/// Everything that turns flows into alerts.
pub struct Detector {
    pub rules: Rules,
    pub book: AlertBook,
    model: Option<Model>,
    /// The online second model (KitNET over event statistics), learning or judging.
    online: Option<Online>,
    context: SourceContext,
    /// Raw feature rows of finished flows, when collecting for training.
    collected: Option<Vec<[f64; N_FEATURES]>>,
    /// Source and end time of each collected row (to tell what a threshold would alert on).
    collected_meta: Vec<ml::model::RowMeta>,
    /// Anomalous flows judged since the last `take_anomalies`, for the store.
    anomalies: Vec<AnomalyRow>,
    /// Anomalies not kept because `MAX_PENDING_ANOMALIES` were waiting.
    pub anomalies_dropped: u64,
    /// Anomalies counted into the rule alert they belong to without a row of their own.
    pub anomalies_folded: u64,
    /// Small flows of an attack summed into its alert's attack-flow rows instead of a row each.
    pub flows_summed: u64,
    last_ns: u64,
    next_close_ns: u64,
    /// Next data time the rules settle what waits for time (`rules::SETTLE_NS`).
    next_settle_ns: u64,
    /// `[networks]`: each alert's direction and hostgroup.
    networks: crate::networks::Networks,
    /// Country and AS data for alerts' remote sides.
    geo: crate::geo::Geo,
    volume: Volume,
}

/// The detector's own counters on `/metrics` (what it could not keep, and what it folded).
pub struct DetectMetrics {
    anomalies_dropped: Counter,
    anomalies_folded: Counter,
    flows_summed: Counter,
    alerts_suppressed: Counter,
    rules_untracked: Counter,
}

impl DetectMetrics {
    pub fn new(m: &Registry) -> Self {
        Self {
            anomalies_dropped: m.counter(
                "sensor_anomalies_dropped_total",
                "Anomalies not kept: the detector's buffer was full.",
            ),
            anomalies_folded: m.counter(
                "sensor_anomalies_folded_total",
                "Model anomalies inside an attack a rule alert reports, counted into that \
                 alert without a row of their own.",
            ),
            flows_summed: m.counter(
                "sensor_flows_summed_total",
                "Small flows of an attack a rule alert reports, past its first 1000 rows of \
                 them, summed into the alert's attack_flows rows instead of a row each.",
            ),
            alerts_suppressed: m.counter(
                "sensor_alerts_suppressed_total",
                "Firings that could not open an alert: too many open.",
            ),
            rules_untracked: m.counter(
                "sensor_rules_untracked_total",
                "New keys the rules did not track: a tracker was full.",
            ),
        }
    }

    pub fn publish(&self, d: &Detector) {
        self.anomalies_dropped.set_total(d.anomalies_dropped);
        self.anomalies_folded.set_total(d.anomalies_folded);
        self.flows_summed.set_total(d.flows_summed);
        self.alerts_suppressed.set_total(d.book.suppressed);
        self.rules_untracked.set_total(d.rules.untracked);
    }
}

/// How many model alerts may open, and when a destination's anomalies become one alert.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AlertVolume {
    pub per_minute: usize,
    pub victim_sources: usize,
}

impl Default for AlertVolume {
    fn default() -> Self {
        Self {
            per_minute: 30,
            victim_sources: 10,
        }
    }
}

/// Most destinations whose anomalous sources are counted (memory bound; beyond it the
/// per-source alerts and the budget still hold).
const MAX_VICTIMS: usize = 100_000;

/// Model-alert volume state: the budget's minute, and per destination the distinct sources
/// of its anomalies in the last minute (up to `victim_sources`).
#[derive(Default)]
struct Volume {
    cfg: AlertVolume,
    minute: u64,
    opened: usize,
    victims: FastMap<std::net::IpAddr, (u64, Vec<std::net::IpAddr>)>,
}

impl Volume {
    /// Notes an anomaly `src` -> `dst` at `ts`; whether `dst` has many anomalous sources.
    fn many_sources(&mut self, src: std::net::IpAddr, dst: std::net::IpAddr, ts: u64) -> bool {
        let need = self.cfg.victim_sources;
        if !self.victims.contains_key(&dst) && self.victims.len() >= MAX_VICTIMS {
            return false;
        }
        let (since, seen) = self.victims.entry(dst).or_insert((ts, Vec::new()));
        if ts.saturating_sub(*since) >= MINUTE_NS && seen.len() < need {
            *since = ts;
            seen.clear();
        }
        if seen.len() < need && !seen.contains(&src) {
            seen.push(src);
        }
        seen.len() >= need
    }

    /// Whether another model alert may open at `ts` (and counts it).
    fn may_open(&mut self, ts: u64) -> bool {
        let minute = ts / MINUTE_NS;
        if minute != self.minute {
            self.minute = minute;
            self.opened = 0;
        }
        if self.opened >= self.cfg.per_minute {
            return false;
        }
        self.opened += 1;
        true
    }

    fn prune(&mut self, now: u64) {
        self.victims
            .retain(|_, (since, _)| now.saturating_sub(*since) < 2 * MINUTE_NS);
    }
}

const MINUTE_NS: u64 = 60_000_000_000;

impl Detector {
    pub fn new(cfg: RuleConfig) -> Self {
        let quiet = cfg.quiet_close_s * 1_000_000_000;
        let window = cfg.port_scan_window_s * 1_000_000_000;
        let cap = cfg.max_tracked;
        Self {
            rules: Rules::new(cfg),
            book: AlertBook::new(quiet, cap),
            model: None,
            online: None,
            context: SourceContext::new(window, cap),
            collected: None,
            collected_meta: Vec::new(),
            anomalies: Vec::new(),
            anomalies_dropped: 0,
            anomalies_folded: 0,
            flows_summed: 0,
            last_ns: 0,
            next_close_ns: 0,
            next_settle_ns: 0,
            networks: crate::networks::Networks::default(),
            geo: crate::geo::Geo::default(),
            volume: Volume::default(),
        }
    }

    /// Sets the model-alert budget and the per-victim aggregation.
    pub fn with_networks(mut self, n: crate::networks::Networks) -> Self {
        self.rules.set_networks(&n);
        self.networks = n;
        self
    }

    /// Looks up the country and AS of alerts' remote sides in `geo`.
    pub fn with_geo(mut self, geo: crate::geo::Geo) -> Self {
        self.geo = geo;
        self
    }

    /// An alert as its outputs read it: direction and hostgroup from `[networks]`, where its
    /// remote side comes from (`[geo]`).
    pub fn record(&self, a: &Alert) -> crate::record::AlertRecord {
        use crate::networks::Direction;
        let mut rec = crate::record::AlertRecord::from(a);
        rec.direction = self.networks.direction(a.src_ip, a.dst_ip);
        rec.hostgroup = self
            .networks
            .alert_hostgroup(a.src_ip, a.dst_ip)
            .map(str::to_owned);
        // The attacker; for one of ours attacking out, whom it attacks. Only global addresses
        // have an origin (the databases are not even read for a private one).
        let remote = match rec.direction {
            Some(Direction::Outgoing) => a.dst_ip,
            Some(Direction::Internal) => None,
            _ => a.src_ip,
        }
        .filter(|ip| crate::geo::is_global(*ip));
        if let Some(ip) = remote
            && let Some(geo) = self.geo.get()
        {
            rec.remote = geo.lookup(ip);
        }
        rec
    }

    pub fn with_volume(mut self, v: AlertVolume) -> Self {
        self.volume.cfg = v;
        self
    }

    /// Scores finished flows with `model` (alerts of kind `ml_anomaly`).
    pub fn with_model(mut self, model: Option<Model>) -> Self {
        self.model = model;
        self
    }

    /// Runs the online model on every flow event (judging: alerts of kind `ml_anomaly` with
    /// `"model": "kitnet"` in their evidence; learning: `sensor train --kind kitnet`).
    pub fn with_online(mut self, online: Option<Online>) -> Self {
        self.online = online;
        self
    }

    pub fn online(&self) -> Option<&Online> {
        self.online.as_ref()
    }

    pub fn take_online(&mut self) -> Option<Online> {
        self.online.take()
    }

    /// Keeps the feature rows of finished flows, for `sensor train`.
    pub fn collecting(mut self) -> Self {
        self.collected = Some(Vec::new());
        self
    }

    pub fn take_collected(&mut self) -> Vec<[f64; N_FEATURES]> {
        self.collected.take().unwrap_or_default()
    }

    /// Source and time of each collected row, in the same order.
    pub fn take_collected_meta(&mut self) -> Vec<ml::model::RowMeta> {
        std::mem::take(&mut self.collected_meta)
    }

    pub fn take_anomalies(&mut self) -> Vec<AnomalyRow> {
        std::mem::take(&mut self.anomalies)
    }

    pub fn model(&self) -> Option<&Model> {
        self.model.as_ref()
    }

    /// Replaces the model (training from the dashboard): flows finished from now on are judged
    /// by the new one; open alerts stay open.
    pub fn set_model(&mut self, model: Option<Model>) {
        self.model = model;
    }

    /// Replaces the rules (the editor's apply): their counting starts afresh, open alerts stay
    /// open (an attack still running fires into its incident again) and close when quiet under
    /// the new rules.
    pub fn set_rules(&mut self, cfg: RuleConfig) {
        self.book.set_quiet(cfg.quiet_close_s * 1_000_000_000);
        self.rules = Rules::new(cfg);
        self.rules.set_networks(&self.networks);
    }

    pub fn rules(&self) -> &RuleConfig {
        self.rules.config()
    }

    pub fn on_event(&mut self, ev: &FlowEvent) {
        self.rules.on_event(ev, &mut self.book);
        self.context.on_event(ev);
        if let Some(v) = self.online.as_mut().and_then(|o| o.observe(ev))
            && !link_chatter(ev.family, ev.proto, ev.key_dst_port)
        {
            self.online_anomaly(ev, &v);
        }
        self.tick(ev.ts_ns);
    }

    /// The first anomalous event of a flow: an anomaly row and a model alert.
    fn online_anomaly(&mut self, ev: &FlowEvent, v: &EventVerdict) {
        let top: Vec<OnlineFeature> = v
            .top
            .iter()
            .map(|&(feature, share, value)| OnlineFeature {
                feature,
                share: (share * 1000.0).round() / 1000.0,
                value: (value * 1000.0).round() / 1000.0,
            })
            .collect();
        let threshold = (v.threshold * 10_000.0).round() / 10_000.0;
        let event = OnlineEvent {
            src_ip: ev.src,
            dst_ip: ev.dst,
            proto: ev.proto,
            src_port: ev.src_port,
            dst_port: ev.dst_port,
            from_src: ev.from_src,
            packets: ev.packets,
            bytes: ev.bytes,
            last_seen: crate::record::rfc3339_us(ev.ts_ns),
        };
        let severity = v.severity.as_str();
        if self.anomalies.len() >= MAX_PENDING_ANOMALIES {
            self.anomalies_dropped += 1;
        } else {
            let doc = OnlineDoc {
                model: "kitnet",
                flow: &event,
                top_features: &top,
                score: (v.score * 10_000.0).round() / 10_000.0,
                severity,
                threshold,
            };
            self.anomalies.push(AnomalyRow {
                ts: ev.ts_ns,
                src_ip: ev.src.to_string(),
                dst_ip: ev.dst.to_string(),
                score: v.score,
                severity: severity.to_owned(),
                record: serde_json::to_string(&doc).unwrap_or_default(),
            });
        }
        self.raise(
            ev.src,
            ev.dst,
            ev.ts_ns,
            ev.ts_ns,
            v.score,
            v.severity,
            || {
                Evidence::Online(OnlineEvidence {
                    model: "kitnet",
                    top_features: top,
                    threshold,
                    flow: event,
                })
            },
        );
    }

    pub fn on_overflow(&mut self, ts_ns: u64, dst: &HostKey, s: &HostStats) {
        self.rules.on_overflow(ts_ns, dst, s, &mut self.book);
        self.tick(ts_ns);
    }

    /// A finished flow: feature row for training, or a score against the model.
    pub fn on_flow(&mut self, f: &Flow) -> Option<FlowScore> {
        self.rules.on_finished(f, &mut self.book);
        let chatter = link_chatter(f.family, f.proto, f.dst_port);
        let online = self
            .online
            .as_mut()
            .and_then(|o| o.finish(&ml::online::flow_socket(f)))
            .map(|(score, anomalous)| FlowScore {
                score,
                anomalous: anomalous && !chatter,
            });
        if self.model.is_none() && self.collected.is_none() {
            return online;
        }
        let raw = features(f, self.context.fan_out(f.src, f.last_seen_ns));
        if let Some(rows) = &mut self.collected {
            rows.push(raw);
            self.collected_meta.push(ml::model::RowMeta {
                src: f.src,
                ts_ns: f.last_seen_ns,
            });
        }
        let model = self.model.as_ref()?;
        let (score, severity, x) = model.assess(&raw);
        let scored = FlowScore {
            score,
            anomalous: severity != Severity::Normal && !chatter,
        };
        if !scored.anomalous {
            return Some(scored);
        }
        // Inside an attack a rule already reports, an anomaly is evidence of that alert (it
        // counts there, and the flow row keeps its score); past the first few, explaining
        // each and storing it again says the same thing once per flow of a flood.
        if self
            .book
            .attached_model(f.src, f.dst)
            .is_some_and(|n| n >= EXPLAINED_PER_ALERT)
        {
            self.book.attach_model(f.src, f.dst, score);
            self.anomalies_folded += 1;
            return Some(scored);
        }
        let v = ml::model::Verdict {
            score,
            severity,
            top: model.explain(&raw, x.view()),
        };
        let top: Vec<TopFeature> = v
            .top
            .iter()
            .map(|&(feature, share, value, z)| TopFeature {
                feature,
                share: (share * 1000.0).round() / 1000.0,
                value: (value * 1000.0).round() / 1000.0,
                z: (z * 100.0).round() / 100.0,
            })
            .collect();
        let severity = v.severity.as_str();
        if self.anomalies.len() >= MAX_PENDING_ANOMALIES {
            self.anomalies_dropped += 1;
        } else {
            let doc = AnomalyDoc {
                flow: crate::record::FlowRecord::from(f),
                top_features: &top,
                score: v.score,
                severity,
                threshold: model.threshold,
            };
            self.anomalies.push(AnomalyRow {
                ts: f.last_seen_ns,
                src_ip: f.src.to_string(),
                dst_ip: f.dst.to_string(),
                score: v.score,
                severity: severity.to_owned(),
                record: serde_json::to_string(&doc).unwrap_or_default(),
            });
        }
        let threshold = (model.threshold * 10_000.0).round() / 10_000.0;
        self.raise(
            f.src,
            f.dst,
            f.first_seen_ns,
            f.last_seen_ns,
            v.score,
            v.severity,
            || {
                Evidence::Model(ModelEvidence {
                    top_features: top,
                    threshold,
                    flow: EvidenceFlow {
                        src_ip: f.src,
                        proto: f.proto,
                        src_port: f.src_port,
                        dst_port: f.dst_port,
                        packets: f.packets(),
                        bytes: f.bytes(),
                        duration_s: f.duration().as_secs_f64(),
                    },
                })
            },
        );
        Some(scored)
    }

    /// A model anomaly of `src` -> `dst` into the book, aggregated as an operator reads it:
    /// evidence of an open rule alert about the same attack; one alert about the destination
    /// when its anomalous sources are many; within the per-minute budget, the excess counted
    /// into one summary alert. `evidence` is built only when this anomaly is its alert's peak.
    #[allow(
        clippy::too_many_arguments,
        reason = "one anomaly's parts, from two models"
    )]
    fn raise(
        &mut self,
        src: std::net::IpAddr,
        dst: std::net::IpAddr,
        first_seen: u64,
        ts: u64,
        score: f64,
        severity: Severity,
        evidence: impl FnOnce() -> Evidence,
    ) {
        // An anomaly inside an attack a rule already reports is evidence of that alert; so is
        // one of a flow that began while such an alert was open and finished after it closed.
        if self.book.attach_model(src, dst, score) {
            return;
        }
        if self.book.closed_attack_claims(src, dst, first_seen) {
            self.anomalies_folded += 1;
            return;
        }
        // Many (or forged) sources at one destination: one alert about the destination.
        let (src, dst) = if self.volume.many_sources(src, dst, ts) {
            (None, Some(dst))
        } else {
            (Some(src), Some(dst))
        };
        let key_dst = if src.is_some() { None } else { dst };
        let peak = self.book.peak_rate(AlertKind::MlAnomaly, src, key_dst);
        if peak.is_none() && !self.volume.may_open(ts) {
            // Over the budget: counted into one summary alert, never dropped in silence.
            self.book.fire(alert::Firing {
                kind: AlertKind::MlAnomaly,
                detector: alert::DetectorKind::Ml,
                src_ip: None,
                dst_ip: None,
                ts_ns: ts,
                severity: Severity::Low,
                rate: 0.0,
                score: Some((score * 10_000.0).round() / 10_000.0),
                evidence: Evidence::Budget(BudgetEvidence {
                    summary: true,
                    reason: "model alert budget reached",
                    budget_per_minute: self.volume.cfg.per_minute,
                }),
            });
            return;
        }
        // An aggregated anomaly alert keeps the evidence of its most anomalous flow: build it
        // only when this flow is that one.
        let evidence = if peak.is_some_and(|p| score < p) {
            Evidence::None
        } else {
            evidence()
        };
        self.book.fire(alert::Firing {
            kind: AlertKind::MlAnomaly,
            detector: alert::DetectorKind::Ml,
            src_ip: src,
            dst_ip: dst,
            ts_ns: ts,
            severity,
            rate: score,
            score: Some((score * 10_000.0).round() / 10_000.0),
            evidence,
        });
    }

    /// The attack alert whose stored rows a finished flow is summed into instead of a row of
    /// its own: a small flow (at most [`alert::SMALL_FLOW_PACKETS`]) of an attack a rule alert
    /// reports, once that alert has [`alert::ATTACK_FLOW_ROWS`] of them stored. A flood's
    /// millions of one-packet flows say what their count says; the flows that carried a
    /// conversation keep their rows whatever happens around them.
    pub fn attack_flow(&mut self, f: &Flow) -> Option<u64> {
        if f.fwd.packets + f.rev.packets > alert::SMALL_FLOW_PACKETS {
            return None;
        }
        let id = self.book.attack_flow(f.src, f.dst, f.first_seen_ns)?;
        self.flows_summed += 1;
        Some(id)
    }

    /// Moves data time forward: closes alerts that went quiet.
    pub fn tick(&mut self, now_ns: u64) {
        self.last_ns = self.last_ns.max(now_ns);
        if self.last_ns >= self.next_close_ns {
            self.rules.tick(self.last_ns, &mut self.book);
            self.book.close_quiet(self.last_ns);
            self.context.prune(self.last_ns);
            self.volume.prune(self.last_ns);
            if let Some(o) = &mut self.online {
                o.prune(self.last_ns);
            }
            self.next_close_ns = self.last_ns + 1_000_000_000;
        }
    }

    /// End of a batch of data (a poll, a second of a capture): what waits for time to pass
    /// (probes and SYN attempts past their answer grace) is judged, at most every
    /// `rules::SETTLE_NS`. Only here, never between the events of a batch: they come ordered
    /// by their first packet, so a probe's answer later in the batch is not yet seen while an
    /// earlier flow's last packet already says the probe's grace is over.
    pub fn settle(&mut self) {
        if self.last_ns >= self.next_settle_ns {
            self.rules.settle(self.last_ns, &mut self.book);
            self.next_settle_ns = self.last_ns + rules::SETTLE_NS;
        }
    }

    /// A BGP session of the upstream mitigation is down (`peer` None: the speaker itself):
    /// an alert, fired again while it stays down so its figures stay current.
    pub fn session_down(
        &mut self,
        peer: Option<std::net::IpAddr>,
        e: evidence::SessionEvidence,
        now_ns: u64,
    ) {
        self.book.fire(alert::Firing {
            kind: AlertKind::BgpSessionDown,
            detector: alert::DetectorKind::Health,
            src_ip: None,
            dst_ip: peer,
            ts_ns: now_ns,
            severity: Severity::High,
            rate: e.down_s as f64,
            score: None,
            evidence: Evidence::Session(e),
        });
    }

    /// The session is back: its alert closes now.
    pub fn session_up(&mut self, peer: Option<std::net::IpAddr>, now_ns: u64) {
        self.book
            .close(AlertKind::BgpSessionDown, None, peer, now_ns);
    }

    /// End of data: judge the last second, close every alert.
    pub fn flush(&mut self) {
        self.rules.flush(self.last_ns, &mut self.book);
        self.book.flush();
    }
}

#[cfg(test)]
mod tests;
