//! The second model: KitNET over AfterImage statistics of flow events, trained online on a
//! baseline and saved as versioned JSON beside (not instead of) the Isolation Forest model.
//!
//! Where the forest judges a flow once it has finished, this one judges every flow event as
//! it comes (one flow, one direction, one data second), against the recent behaviour of its
//! sender, its receiver, their channel and its socket: it can speak while a flow is still
//! running, and it sees what a single flow's totals cannot (a host's rate of new flows, its
//! replies, the covariance of the two directions). A finished flow's score is the highest
//! score of its events.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::{
    afterimage::{Extractor, KIT_NAMES, LAMBDAS, N_KIT, SocketKey, socket_key},
    kitnet::{KitNet, KitParams, Scratch, Trainer},
    model::{ModelError, RowMeta, alerts_per_hour, budget_threshold, load_json, save_json},
};
use crate::{flow::FlowEvent, record::Severity};

pub const ONLINE_FORMAT: &str = "gateway-sensor-kitnet";
pub const ONLINE_VERSION: u32 = 1;

/// Where an online model came from.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct OnlineTraining {
    pub events: usize,
    /// Events the autoencoders learnt from (after feature mapping).
    pub learnt: usize,
    pub sources: Vec<String>,
    pub trained_at: String,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct OnlineModel {
    pub format: String,
    pub version: u32,
    pub features: Vec<String>,
    pub lambdas: Vec<f64>,
    pub params: KitParams,
    pub net: KitNet,
    /// Event scores at or above this are anomalies.
    pub threshold: f64,
    pub contamination: f64,
    pub threshold_rule: String,
    pub max_alerts_per_hour: Option<f64>,
    pub expected_alerts_per_hour: Option<f64>,
    /// Why the asked-for rule was not used (a baseline too short for an alert budget).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub threshold_note: Option<String>,
    pub training: OnlineTraining,
}

/// Heavy-tailed counts and sizes on a log scale (sign kept for covariances), so that min-max
/// scaling learnt on a baseline keeps resolution where benign values lie.
fn transform(x: &mut [f64]) {
    for v in x {
        *v = v.signum() * v.abs().ln_1p();
    }
}

impl OnlineModel {
    /// Severity from how many times the threshold a score is (documented cut points:
    /// critical >= 4x, high >= 2x, medium >= 1.5x, low above the threshold).
    pub fn severity(&self, score: f64) -> Severity {
        if score < self.threshold {
            return Severity::Normal;
        }
        match score / self.threshold.max(1e-12) {
            r if r >= 4.0 => Severity::Critical,
            r if r >= 2.0 => Severity::High,
            r if r >= 1.5 => Severity::Medium,
            _ => Severity::Low,
        }
    }

    /// Sets the threshold from baseline event `scores` (with `meta` in the same order): the
    /// (1 - contamination) quantile, or the lowest score keeping the baseline within
    /// `per_hour` model alerts an hour; records the expected rate either way.
    pub fn calibrate(
        &mut self,
        scores: &[f64],
        meta: &[RowMeta],
        contamination: f64,
        per_hour: Option<f64>,
        quiet_ns: u64,
    ) {
        if scores.is_empty() || scores.len() != meta.len() {
            return;
        }
        let mut sorted = scores.to_vec();
        sorted.sort_by(f64::total_cmp);
        let c = contamination.clamp(0.0, 0.5);
        let k = (((1.0 - c) * sorted.len() as f64).ceil() as usize).min(sorted.len() - 1);
        self.threshold = sorted[k];
        self.contamination = c;
        self.threshold_rule = "contamination".into();
        let mut by_time: Vec<usize> = (0..scores.len()).collect();
        by_time.sort_by_key(|&i| meta[i].ts_ns);
        let (per_hour, note) = super::model::usable_budget(meta, per_hour);
        self.threshold_note = note;
        if let Some(budget) = per_hour {
            self.threshold = budget_threshold(scores, meta, &by_time, budget, quiet_ns)
                .unwrap_or_else(|| sorted.last().map_or(1.0, |s| s * 2.0));
            self.threshold_rule = "max_alerts_per_hour".into();
            self.max_alerts_per_hour = Some(budget);
        }
        // A zero threshold would call every event anomalous.
        self.threshold = self.threshold.max(1e-9);
        let rate = alerts_per_hour(scores, meta, &by_time, self.threshold, quiet_ns);
        self.expected_alerts_per_hour = Some((rate * 100.0).round() / 100.0);
    }

    /// What `/api/status` shows of it.
    pub fn summary(&self) -> serde_json::Value {
        serde_json::json!({
            "kind": "kitnet",
            "threshold": self.threshold,
            "threshold_rule": self.threshold_rule,
            "contamination": self.contamination,
            "max_alerts_per_hour": self.max_alerts_per_hour,
            "expected_alerts_per_hour": self.expected_alerts_per_hour,
            "threshold_note": self.threshold_note,
            "ensemble": self.net.ensemble.len(),
            "trained_events": self.training.events,
            "trained_at": self.training.trained_at,
        })
    }

    pub fn save(&self, path: &Path) -> Result<(), ModelError> {
        save_json(self, path)
    }

    pub fn load(path: &Path) -> Result<Self, ModelError> {
        let m: Self = load_json(
            path,
            ONLINE_FORMAT,
            ONLINE_VERSION,
            " (an online model from `sensor train --kind kitnet`)",
        )?;
        let corrupt = |reason: String| ModelError::Corrupt {
            path: PathBuf::from(path),
            reason,
        };
        if m.features != *KIT_NAMES || m.lambdas != LAMBDAS {
            return Err(ModelError::Features {
                path: path.into(),
                found: m.features,
            });
        }
        if !m.net.consistent(N_KIT) || !m.threshold.is_finite() || m.threshold <= 0.0 {
            return Err(corrupt("inconsistent ensemble or threshold".into()));
        }
        Ok(m)
    }
}

/// One anomalous event, explained.
#[derive(Clone, Debug, PartialEq)]
pub struct EventVerdict {
    pub score: f64,
    pub severity: Severity,
    pub threshold: f64,
    /// (feature, share of the reconstruction error, raw value), largest share first.
    pub top: Vec<(&'static str, f64, f64)>,
}

enum Mode {
    Learn(Box<Trainer>),
    Judge(Box<OnlineModel>),
}

/// The online model at work: the statistics it keeps and the ensemble learning or judging.
pub struct Online {
    extractor: Extractor,
    mode: Mode,
    raw: Vec<f64>,
    x: Vec<f64>,
    scratch: Scratch,
    /// Event scores with their source and time, when collecting for a threshold.
    collected: Option<(Vec<f64>, Vec<RowMeta>)>,
    pub events: u64,
}

impl Online {
    /// Learns from every event (`sensor train --kind kitnet`).
    pub fn learner(params: KitParams, cap: usize) -> Self {
        Self::with_mode(Mode::Learn(Box::new(Trainer::new(N_KIT, params))), cap)
    }

    /// Judges every event with `model`.
    pub fn judge(model: OnlineModel, cap: usize) -> Self {
        Self::with_mode(Mode::Judge(Box::new(model)), cap)
    }

    fn with_mode(mode: Mode, cap: usize) -> Self {
        Self {
            extractor: Extractor::new(cap),
            mode,
            raw: Vec::with_capacity(N_KIT),
            x: Vec::with_capacity(N_KIT),
            scratch: Scratch::default(),
            collected: None,
            events: 0,
        }
    }

    /// Keeps every judged event's score (for the threshold of a freshly trained model).
    pub fn collecting(mut self) -> Self {
        self.collected = Some((Vec::new(), Vec::new()));
        self
    }

    pub fn take_collected(&mut self) -> (Vec<f64>, Vec<RowMeta>) {
        self.collected.take().unwrap_or_default()
    }

    pub fn model(&self) -> Option<&OnlineModel> {
        match &self.mode {
            Mode::Judge(m) => Some(m),
            Mode::Learn(_) => None,
        }
    }

    /// The learner's trainer (to go on learning over the next pass of the baseline).
    pub fn into_trainer(self) -> Option<Trainer> {
        match self.mode {
            Mode::Learn(t) => Some(*t),
            Mode::Judge(_) => None,
        }
    }

    /// Learns with `trainer` over a fresh pass (new statistics, same ensemble).
    pub fn resume(trainer: Trainer, cap: usize) -> Self {
        Self::with_mode(Mode::Learn(Box::new(trainer)), cap)
    }

    /// Updates the statistics with `ev`; judging, returns the verdict of the first anomalous
    /// event of each flow (later ones only raise the flow's score).
    pub fn observe(&mut self, ev: &FlowEvent) -> Option<EventVerdict> {
        self.events += 1;
        let sock = self.extractor.update(ev, &mut self.raw);
        self.x.clear();
        self.x.extend_from_slice(&self.raw);
        transform(&mut self.x);
        match &mut self.mode {
            Mode::Learn(t) => {
                t.learn(&self.x);
                None
            }
            Mode::Judge(m) => {
                let score = m.net.score(&self.x, &mut self.scratch);
                if let Some((s, meta)) = &mut self.collected {
                    s.push(score);
                    meta.push(RowMeta {
                        src: ev.src,
                        ts_ns: ev.ts_ns,
                    });
                }
                let severity = m.severity(score);
                let first = match sock {
                    Some(so) => {
                        so.max_score = so.max_score.max(score);
                        let first = severity != Severity::Normal && !so.reported;
                        so.reported |= first;
                        first
                    }
                    None => severity != Severity::Normal,
                };
                if !first {
                    return None;
                }
                let err = self.scratch.feature_errors();
                let total: f64 = err.iter().sum::<f64>().max(1e-300);
                // The three largest, in one pass (most events' attribution is read by nobody
                // but the anomaly row).
                let mut best: [Option<usize>; 3] = [None; 3];
                for i in 0..err.len() {
                    let mut cur = i;
                    for slot in &mut best {
                        match *slot {
                            Some(b) if err[b] >= err[cur] => {}
                            Some(b) => {
                                *slot = Some(cur);
                                cur = b;
                            }
                            None => {
                                *slot = Some(cur);
                                break;
                            }
                        }
                    }
                }
                let top: Vec<(&'static str, f64, f64)> = best
                    .iter()
                    .flatten()
                    .map(|&i| (KIT_NAMES[i].as_str(), err[i] / total, self.raw[i]))
                    .collect();
                Some(EventVerdict {
                    score,
                    severity,
                    threshold: m.threshold,
                    top,
                })
            }
        }
    }

    /// A flow finished: the highest score of its events (judging), and its socket goes.
    pub fn finish(&mut self, key: &SocketKey) -> Option<(f64, bool)> {
        let so = self.extractor.finish(key);
        let m = self.model()?;
        let s = so.map_or(0.0, |s| s.max_score);
        Some((s, s >= m.threshold))
    }

    pub fn prune(&mut self, now: u64) {
        self.extractor.prune(now);
    }

    pub fn untracked(&self) -> super::afterimage::Untracked {
        self.extractor.untracked
    }
}

impl std::fmt::Debug for Online {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Online")
            .field("learning", &matches!(self.mode, Mode::Learn(_)))
            .field("events", &self.events)
            .field("keys", &self.extractor.sizes())
            .finish()
    }
}

/// A flow's socket key, as the extractor files its events.
pub fn flow_socket(f: &crate::flow::Flow) -> SocketKey {
    socket_key(f.src, f.dst, f.src_port, f.dst_port, f.proto)
}

/// Builds a judging model from a trained ensemble (threshold set by `calibrate` next).
pub fn model_from(
    net: KitNet,
    params: KitParams,
    events: usize,
    sources: Vec<String>,
) -> OnlineModel {
    OnlineModel {
        format: ONLINE_FORMAT.into(),
        version: ONLINE_VERSION,
        features: KIT_NAMES.clone(),
        lambdas: LAMBDAS.to_vec(),
        params,
        net,
        threshold: 1.0,
        contamination: 0.0,
        threshold_rule: "contamination".into(),
        max_alerts_per_hour: None,
        expected_alerts_per_hour: None,
        threshold_note: None,
        training: OnlineTraining {
            events,
            learnt: events.saturating_sub(params.mapping_samples),
            sources,
            trained_at: crate::record::rfc3339_us(
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_nanos() as u64),
            ),
        },
    }
}
