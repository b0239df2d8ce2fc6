//! Detection: threshold rules on flow events and an Isolation Forest on finished flows, both
//! reporting into one book of alerts.

pub mod alert;
pub mod ml;
pub mod rules;

use sensor_common::{HostKey, HostStats};

use self::ml::{
    features::{N_FEATURES, SourceContext, features},
    model::Model,
};
pub use self::{
    alert::{Alert, AlertBook, AlertKind, AlertRecord, Severity},
    rules::{RuleConfig, Rules},
};
use crate::{
    flow::{Flow, FlowEvent},
    record::AnomalyRow,
};

/// Detector state keyed by addresses and ports: std's map with foldhash, several times
/// faster than SipHash on such small keys, seeded per map so that crafted collisions stay out
/// of an attacker's reach.
pub(crate) type FastMap<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;

/// One of the features that isolated an anomalous flow.
#[derive(Clone, Copy, Debug, serde::Serialize)]
struct TopFeature {
    feature: &'static str,
    /// Share of the isolation credited to it (shares of all features sum to 1).
    share: f64,
    value: f64,
    /// Standard deviations from the training mean.
    z: f64,
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

/// The evidence of an `ml_anomaly` alert.
#[derive(serde::Serialize)]
struct AnomalyEvidence<'a> {
    top_features: &'a [TopFeature],
    threshold: f64,
    flow: EvidenceFlow,
}

#[derive(serde::Serialize)]
struct EvidenceFlow {
    proto: u8,
    src_port: u16,
    dst_port: u16,
    packets: u64,
    bytes: u64,
    duration_s: f64,
}

/// Anomalies held between two drains at most; the pipeline drains after every batch, so only a
/// consumer that stopped draining reaches it (the excess is counted, not kept).
const MAX_PENDING_ANOMALIES: usize = 100_000;

/// Everything that turns flows into alerts.
pub struct Detector {
    pub rules: Rules,
    pub book: AlertBook,
    model: Option<Model>,
    context: SourceContext,
    /// Raw feature rows of finished flows, when collecting for training.
    collected: Option<Vec<[f64; N_FEATURES]>>,
    /// Anomalous flows judged since the last `take_anomalies`, for the store.
    anomalies: Vec<AnomalyRow>,
    /// Anomalies not kept because `MAX_PENDING_ANOMALIES` were waiting.
    pub anomalies_dropped: u64,
    last_ns: u64,
    next_close_ns: u64,
}

impl Detector {
    pub fn new(cfg: RuleConfig) -> Self {
        let quiet = cfg.quiet_close_s * 1_000_000_000;
        let window = cfg.port_scan_window_s * 1_000_000_000;
        let cap = cfg.max_tracked;
        Self {
            rules: Rules::new(cfg),
            book: AlertBook::new(quiet, cap),
            model: None,
            context: SourceContext::new(window, cap),
            collected: None,
            anomalies: Vec::new(),
            anomalies_dropped: 0,
            last_ns: 0,
            next_close_ns: 0,
        }
    }

    /// Scores finished flows with `model` (alerts of kind `ml_anomaly`).
    pub fn with_model(mut self, model: Option<Model>) -> Self {
        self.model = model;
        self
    }

    /// Keeps the feature rows of finished flows, for `sensor train`.
    pub fn collecting(mut self) -> Self {
        self.collected = Some(Vec::new());
        self
    }

    pub fn take_collected(&mut self) -> Vec<[f64; N_FEATURES]> {
        self.collected.take().unwrap_or_default()
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

    pub fn on_event(&mut self, ev: &FlowEvent) {
        self.rules.on_event(ev, &mut self.book);
        self.context.on_event(ev);
        self.tick(ev.ts_ns);
    }

    pub fn on_overflow(&mut self, ts_ns: u64, dst: &HostKey, s: &HostStats) {
        self.rules.on_overflow(ts_ns, dst, s, &mut self.book);
        self.tick(ts_ns);
    }

    /// A finished flow: feature row for training, or a score against the model.
    pub fn on_flow(&mut self, f: &Flow) {
        if self.model.is_none() && self.collected.is_none() {
            return;
        }
        let raw = features(f, self.context.fan_out(f.src, f.last_seen_ns));
        if let Some(rows) = &mut self.collected {
            rows.push(raw);
        }
        let Some(model) = &self.model else { return };
        let v = model.judge(&raw);
        if v.severity == Severity::Normal {
            return;
        }
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
        // An aggregated anomaly alert keeps the evidence of its most anomalous flow: build it
        // only when this flow is that one.
        let evidence = if self
            .book
            .peak_rate(AlertKind::MlAnomaly, Some(f.src), None)
            .is_some_and(|peak| v.score < peak)
        {
            serde_json::Value::Null
        } else {
            serde_json::to_value(AnomalyEvidence {
                top_features: &top,
                threshold: (model.threshold * 10_000.0).round() / 10_000.0,
                flow: EvidenceFlow {
                    proto: f.proto,
                    src_port: f.src_port,
                    dst_port: f.dst_port,
                    packets: f.packets(),
                    bytes: f.bytes(),
                    duration_s: f.duration().as_secs_f64(),
                },
            })
            .unwrap_or_default()
        };
        self.book.fire(alert::Firing {
            kind: AlertKind::MlAnomaly,
            detector: alert::DetectorKind::Ml,
            src_ip: Some(f.src),
            dst_ip: Some(f.dst),
            ts_ns: f.last_seen_ns,
            severity: v.severity,
            rate: v.score,
            score: Some((v.score * 10_000.0).round() / 10_000.0),
            evidence,
        });
    }

    /// Moves data time forward: closes alerts that went quiet.
    pub fn tick(&mut self, now_ns: u64) {
        self.last_ns = self.last_ns.max(now_ns);
        if self.last_ns >= self.next_close_ns {
            self.rules.tick(self.last_ns, &mut self.book);
            self.book.close_quiet(self.last_ns);
            self.context.prune(self.last_ns);
            self.next_close_ns = self.last_ns + 1_000_000_000;
        }
    }

    /// End of data: judge the last second, close every alert.
    pub fn flush(&mut self) {
        self.rules.flush(self.last_ns, &mut self.book);
        self.book.flush();
    }
}
