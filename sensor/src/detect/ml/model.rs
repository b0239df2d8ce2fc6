//! The anomaly model: a fitted standard scaler, an Isolation Forest, the score threshold that
//! the training `contamination` implies, and what it was trained on; saved as versioned JSON.

use std::path::{Path, PathBuf};

use ndarray::{Array1, Array2, ArrayView1, Axis};
use serde::{Deserialize, Serialize};

use crate::record::Severity;

use super::{
    features::{FEATURE_NAMES, N_FEATURES},
    iforest::{ForestParams, IsolationForest},
};

/// Format tag and version written into every model file.
pub const MODEL_FORMAT: &str = "gateway-sensor-iforest";
pub const MODEL_VERSION: u32 = 1;

#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error("{path}: cannot read the model file")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: cannot write the model file")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: not a valid model file ({reason})")]
    Corrupt { path: PathBuf, reason: String },
    #[error(
        "{path}: model format version {found}; this sensor reads version {MODEL_VERSION} (retrain with `sensor train`)"
    )]
    Version { path: PathBuf, found: u32 },
    #[error(
        "{path}: the model's features {found:?} differ from this sensor's (retrain with `sensor train`)"
    )]
    Features { path: PathBuf, found: Vec<String> },
    #[error("cannot train on {0} flows: at least 16 are needed")]
    TooFewFlows(usize),
    #[error("cannot train the online model on {0} flow events: at least 64 are needed")]
    TooFewEvents(usize),
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Scaler {
    pub mean: Vec<f64>,
    pub std: Vec<f64>,
}

impl Scaler {
    fn fit(x: &Array2<f64>) -> Self {
        let mean = x
            .mean_axis(Axis(0))
            .map(|m| m.to_vec())
            .unwrap_or_else(|| vec![0.0; x.ncols()]);
        // A constant feature keeps unit scale instead of dividing by zero.
        let std = x
            .std_axis(Axis(0), 0.0)
            .iter()
            .map(|s| if *s > 1e-12 { *s } else { 1.0 })
            .collect();
        Self { mean, std }
    }

    pub fn transform(&self, raw: &[f64]) -> Array1<f64> {
        Array1::from_iter(
            raw.iter()
                .zip(self.mean.iter().zip(&self.std))
                .map(|(x, (m, s))| (x - m) / s),
        )
    }
}

/// Where a model came from.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Training {
    pub flows: usize,
    pub sources: Vec<String>,
    pub params: ForestParams,
    pub trained_at: String,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Model {
    pub format: String,
    pub version: u32,
    pub features: Vec<String>,
    pub scaler: Scaler,
    pub forest: IsolationForest,
    pub contamination: f64,
    /// Scores at or above this are anomalies: the (1 - contamination) quantile of the
    /// training scores, or the lowest score keeping the baseline's model alerts within
    /// `max_alerts_per_hour`.
    pub threshold: f64,
    pub training: Training,
    /// How the threshold was chosen: "contamination" or "max_alerts_per_hour".
    #[serde(default = "contamination_rule")]
    pub threshold_rule: String,
    /// The false-alert budget the threshold was chosen for (alerts per hour of baseline).
    #[serde(default)]
    pub max_alerts_per_hour: Option<f64>,
    /// Model alerts per hour the training baseline raises at this threshold (per-source
    /// alerts closing after the quiet period), when the rows' times were known.
    #[serde(default)]
    pub expected_alerts_per_hour: Option<f64>,
    /// Why the asked-for rule was not used (a baseline too short for an alert budget).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub threshold_note: Option<String>,
}

/// Baseline an alert budget needs: alerts per hour counted on less than this much traffic
/// time are noise (one alert in 30 s is "120 an hour").
pub const MIN_BUDGET_BASELINE_S: u64 = 600;

/// The budget calibration may apply to a baseline of these rows, or why not.
pub fn usable_budget(meta: &[RowMeta], per_hour: Option<f64>) -> (Option<f64>, Option<String>) {
    let Some(b) = per_hour.filter(|b| b.is_finite() && *b >= 0.0) else {
        return (None, None);
    };
    let (lo, hi) = meta.iter().fold((u64::MAX, 0), |(lo, hi), m| {
        (lo.min(m.ts_ns), hi.max(m.ts_ns))
    });
    let span_s = hi.saturating_sub(lo) / 1_000_000_000;
    if span_s >= MIN_BUDGET_BASELINE_S {
        (Some(b), None)
    } else {
        (
            None,
            Some(format!(
                "baseline spans {span_s} s, under the {MIN_BUDGET_BASELINE_S} s an alert budget \
                 ({b}/hour) needs: threshold from the contamination quantile instead; train on a \
                 longer baseline for a budgeted threshold"
            )),
        )
    }
}

fn contamination_rule() -> String {
    "contamination".into()
}

/// Where and when a training row's flow was: what turns anomalous rows into alerts.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RowMeta {
    pub src: std::net::IpAddr,
    pub ts_ns: u64,
}

/// Model alerts per hour that `scores` at `threshold` would raise: anomalies aggregate per
/// source into one alert until `quiet_ns` pass without one. `by_time` orders the rows.
pub(crate) fn alerts_per_hour(
    scores: &[f64],
    meta: &[RowMeta],
    by_time: &[usize],
    threshold: f64,
    quiet_ns: u64,
) -> f64 {
    let mut last: std::collections::HashMap<std::net::IpAddr, u64> = Default::default();
    let mut opened = 0u64;
    for &i in by_time {
        if scores[i] < threshold {
            continue;
        }
        let m = meta[i];
        match last.insert(m.src, m.ts_ns) {
            Some(t) if m.ts_ns.saturating_sub(t) < quiet_ns => {}
            _ => opened += 1,
        }
    }
    opened as f64 / baseline_hours(meta, by_time)
}

/// The lowest of `scores` at which the baseline (rows `meta`, time order `by_time`) raises at
/// most `budget` model alerts an hour; `None` when even the highest alone is over budget.
pub(crate) fn budget_threshold(
    scores: &[f64],
    meta: &[RowMeta],
    by_time: &[usize],
    budget: f64,
    quiet_ns: u64,
) -> Option<f64> {
    let mut sorted = scores.to_vec();
    sorted.sort_by(f64::total_cmp);
    sorted.dedup();
    // Alerts fall as the threshold rises (up to quiet-period effects): the lowest candidate
    // within budget, by bisection over the distinct scores.
    let within = |t: f64| alerts_per_hour(scores, meta, by_time, t, quiet_ns) <= budget;
    let (mut lo, mut hi) = (0usize, sorted.len());
    while lo < hi {
        let mid = (lo + hi) / 2;
        if within(sorted[mid]) {
            hi = mid;
        } else {
            lo = mid + 1;
        }
    }
    // The alert count is not strictly monotone in the threshold (removing one anomaly can
    // split a source's alert in two): step up until the budget truly holds.
    while lo < sorted.len() && !within(sorted[lo]) {
        lo += 1;
    }
    sorted.get(lo).copied()
}

/// Writes `value` as JSON to `path` through a temporary file and a rename: a crash never
/// leaves half a model where a whole one was.
pub(crate) fn save_json<T: Serialize>(value: &T, path: &Path) -> Result<(), ModelError> {
    let text = serde_json::to_vec(value).map_err(|e| ModelError::Write {
        path: path.into(),
        source: e.into(),
    })?;
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).map_err(|source| ModelError::Write {
        path: path.into(),
        source,
    })?;
    std::fs::rename(&tmp, path).map_err(|source| ModelError::Write {
        path: path.into(),
        source,
    })
}

/// Reads a model file and parses it after checking its header (`format`, `version`) first,
/// so another kind's or version's file says so instead of failing to parse. `hint` tells what
/// file `format` is.
pub(crate) fn load_json<T: serde::de::DeserializeOwned>(
    path: &Path,
    format: &str,
    version: u32,
    hint: &str,
) -> Result<T, ModelError> {
    let bytes = std::fs::read(path).map_err(|source| ModelError::Read {
        path: path.into(),
        source,
    })?;
    parse_json(&bytes, path, format, version, hint)
}

/// [`load_json`] on bytes already read; `path` names them in errors.
pub(crate) fn parse_json<T: serde::de::DeserializeOwned>(
    bytes: &[u8],
    path: &Path,
    format: &str,
    version: u32,
    hint: &str,
) -> Result<T, ModelError> {
    #[derive(Deserialize)]
    struct Header {
        format: String,
        version: u32,
    }
    let corrupt = |reason: String| ModelError::Corrupt {
        path: path.into(),
        reason,
    };
    let h: Header = serde_json::from_slice(bytes).map_err(|e| corrupt(e.to_string()))?;
    if h.format != format {
        return Err(corrupt(format!(
            "format is {:?}, expected {format:?}{hint}",
            h.format
        )));
    }
    if h.version != version {
        return Err(ModelError::Version {
            path: path.into(),
            found: h.version,
        });
    }
    serde_json::from_slice(bytes).map_err(|e| corrupt(e.to_string()))
}

/// Hours of traffic the baseline holds: the time between consecutive flow ends, each gap
/// counted up to a minute (several captures, days apart, are their hours of traffic, not the
/// days between them), at least a minute in all (a capture of a few seconds does not turn one
/// alert into thousands an hour).
fn baseline_hours(meta: &[RowMeta], by_time: &[usize]) -> f64 {
    const GAP_NS: u64 = 60_000_000_000;
    let active: u64 = by_time
        .windows(2)
        .map(|w| {
            meta[w[1]]
                .ts_ns
                .saturating_sub(meta[w[0]].ts_ns)
                .min(GAP_NS)
        })
        .sum();
    (active as f64 / 3.6e12).max(1.0 / 60.0)
}

/// One scored flow.
#[derive(Clone, Debug, PartialEq)]
pub struct Verdict {
    pub score: f64,
    pub severity: Severity,
    /// (feature, share of the isolation, raw value, z-score), largest share first.
    pub top: Vec<(&'static str, f64, f64, f64)>,
}

impl Model {
    /// Fits scaler and forest on raw feature rows.
    pub fn train(
        rows: &[[f64; N_FEATURES]],
        params: ForestParams,
        contamination: f64,
        sources: Vec<String>,
    ) -> Result<Self, ModelError> {
        if rows.len() < 16 {
            return Err(ModelError::TooFewFlows(rows.len()));
        }
        // The forest samples rows by index: fitted on the rows in a fixed order, a seed gives
        // the same model whatever order the flows finished in (hash-seeded tables make that
        // order differ from run to run).
        let mut sorted = rows.to_vec();
        sorted.sort_by(|a, b| {
            a.iter()
                .zip(b)
                .map(|(x, y)| x.total_cmp(y))
                .find(|o| o.is_ne())
                .unwrap_or(std::cmp::Ordering::Equal)
        });
        let rows = &sorted[..];
        let raw = Array2::from_shape_fn((rows.len(), N_FEATURES), |(i, j)| rows[i][j]);
        let scaler = Scaler::fit(&raw);
        let scaled = Array2::from_shape_fn(raw.dim(), |(i, j)| {
            (raw[[i, j]] - scaler.mean[j]) / scaler.std[j]
        });
        let forest = IsolationForest::fit(scaled.view(), params);
        let mut scores = forest.score_all(scaled.view());
        scores.sort_by(f64::total_cmp);
        let c = contamination.clamp(0.0, 0.5);
        let k = (((1.0 - c) * scores.len() as f64).ceil() as usize).min(scores.len() - 1);
        let threshold = scores[k];
        Ok(Self {
            format: MODEL_FORMAT.into(),
            version: MODEL_VERSION,
            features: FEATURE_NAMES.iter().map(|s| (*s).to_owned()).collect(),
            scaler,
            forest,
            contamination: c,
            threshold,
            threshold_rule: contamination_rule(),
            max_alerts_per_hour: None,
            expected_alerts_per_hour: None,
            threshold_note: None,
            training: Training {
                flows: rows.len(),
                sources,
                params,
                trained_at: crate::record::rfc3339_us(
                    std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)
                        .map_or(0, |d| d.as_nanos() as u64),
                ),
            },
        })
    }

    /// What `/api/status` shows of a loaded model: its threshold and why.
    pub fn summary(&self) -> serde_json::Value {
        serde_json::json!({
            "threshold": self.threshold,
            "threshold_rule": self.threshold_rule,
            "contamination": self.contamination,
            "max_alerts_per_hour": self.max_alerts_per_hour,
            "expected_alerts_per_hour": self.expected_alerts_per_hour,
            "threshold_note": self.threshold_note,
            "trained_flows": self.training.flows,
            "trained_at": self.training.trained_at,
        })
    }

    /// Sets the threshold from a false-alert budget: the lowest training score at which the
    /// baseline (`rows`, with `meta` in the same order) raises at most `per_hour` model
    /// alerts per hour; with `per_hour` `None` it only records the contamination threshold's
    /// expected rate. `quiet_ns` is the alert book's quiet period.
    pub fn calibrate(
        &mut self,
        rows: &[[f64; N_FEATURES]],
        meta: &[RowMeta],
        per_hour: Option<f64>,
        quiet_ns: u64,
    ) {
        if meta.len() != rows.len() || rows.is_empty() {
            return;
        }
        let scores: Vec<f64> = rows.iter().map(|r| self.score_raw(r)).collect();
        let mut by_time: Vec<usize> = (0..rows.len()).collect();
        by_time.sort_by_key(|&i| meta[i].ts_ns);
        let (per_hour, note) = usable_budget(meta, per_hour);
        self.threshold_note = note;
        if let Some(budget) = per_hour {
            // Above every training score when even the highest alone is over budget.
            self.threshold = budget_threshold(&scores, meta, &by_time, budget, quiet_ns)
                .unwrap_or_else(|| {
                    scores
                        .iter()
                        .copied()
                        .max_by(f64::total_cmp)
                        .map_or(1.0, |s| (s + 1.0) / 2.0)
                });
            self.threshold_rule = "max_alerts_per_hour".into();
            self.max_alerts_per_hour = Some(budget);
        }
        let rate = alerts_per_hour(&scores, meta, &by_time, self.threshold, quiet_ns);
        self.expected_alerts_per_hour = Some((rate * 100.0).round() / 100.0);
    }

    /// Severity from how far a score lies between the threshold and 1 (documented cut points:
    /// critical >= 50% of the way, high >= 30%, medium >= 15%, low above the threshold).
    pub fn severity(&self, score: f64) -> Severity {
        if score < self.threshold {
            return Severity::Normal;
        }
        let e = (score - self.threshold) / (1.0 - self.threshold).max(1e-9);
        match e {
            e if e >= 0.5 => Severity::Critical,
            e if e >= 0.3 => Severity::High,
            e if e >= 0.15 => Severity::Medium,
            _ => Severity::Low,
        }
    }

    pub fn score_raw(&self, raw: &[f64; N_FEATURES]) -> f64 {
        self.forest.score(self.scaler.transform(raw).view())
    }

    /// Scores a raw feature vector and explains it.
    pub fn judge(&self, raw: &[f64; N_FEATURES]) -> Verdict {
        let x = self.scaler.transform(raw);
        let score = self.forest.score(x.view());
        let severity = self.severity(score);
        // Attribution explains an anomaly; a normal flow needs none (most flows are normal).
        if severity == Severity::Normal {
            return Verdict {
                score,
                severity,
                top: Vec::new(),
            };
        }
        Verdict {
            score,
            severity,
            top: self.explain(raw, x.view()),
        }
    }

    /// Score and severity only: [`Model::judge`] without the explanation (for flows whose
    /// explanation is not needed, see `Detector::on_flow`).
    pub fn assess(&self, raw: &[f64; N_FEATURES]) -> (f64, Severity, Array1<f64>) {
        let x = self.scaler.transform(raw);
        let score = self.forest.score(x.view());
        (score, self.severity(score), x)
    }

    /// The three features that did most of the isolating: (name, share, raw, z-score).
    pub fn explain(
        &self,
        raw: &[f64; N_FEATURES],
        x: ArrayView1<'_, f64>,
    ) -> Vec<(&'static str, f64, f64, f64)> {
        let share = self.forest.attribution(x);
        let mut top: Vec<(&'static str, f64, f64, f64)> = (0..N_FEATURES)
            .map(|i| (FEATURE_NAMES[i], share[i], raw[i], x[i]))
            .collect();
        top.sort_by(|a, b| b.1.total_cmp(&a.1));
        top.truncate(3);
        top
    }

    pub fn scaled(&self, raw: &[f64]) -> Array1<f64> {
        self.scaler.transform(raw)
    }

    pub fn score_view(&self, x: ArrayView1<'_, f64>) -> f64 {
        self.forest.score(x)
    }

    pub fn save(&self, path: &Path) -> Result<(), ModelError> {
        save_json(self, path)
    }

    pub fn load(path: &Path) -> Result<Self, ModelError> {
        let bytes = std::fs::read(path).map_err(|source| ModelError::Read {
            path: path.into(),
            source,
        })?;
        Self::from_slice(&bytes, path)
    }

    /// Parses and checks a model file's bytes (`path` names them in errors): what is accepted
    /// here can be scored without a panic or an endless walk.
    pub fn from_slice(bytes: &[u8], path: &Path) -> Result<Self, ModelError> {
        let m: Self = parse_json(bytes, path, MODEL_FORMAT, MODEL_VERSION, "")?;
        let corrupt = |reason: String| ModelError::Corrupt {
            path: path.into(),
            reason,
        };
        if m.features != FEATURE_NAMES {
            return Err(ModelError::Features {
                path: path.into(),
                found: m.features,
            });
        }
        let n = m.features.len();
        // Children must lie after their parent: then every walk ends at a leaf.
        let nodes_ok = m.forest.trees.iter().all(|t| {
            !t.nodes.is_empty()
                && t.sizes.len() == t.nodes.len()
                && t.nodes.iter().enumerate().all(|(i, nd)| {
                    nd.feature == u32::MAX
                        || ((nd.feature as usize) < n
                            && (nd.left as usize) > i
                            && (nd.left as usize) + 1 < t.nodes.len())
                })
        });
        if m.scaler.mean.len() != n
            || m.scaler.std.len() != n
            || !nodes_ok
            || m.forest.features != n
        {
            return Err(corrupt("inconsistent scaler or tree structure".into()));
        }
        Ok(m)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rows(n: usize) -> Vec<[f64; N_FEATURES]> {
        use rand::{Rng as _, SeedableRng as _};
        let mut rng = rand::rngs::StdRng::seed_from_u64(3);
        (0..n)
            .map(|_| std::array::from_fn(|_| rng.random_range(0.0..10.0)))
            .collect()
    }

    /// A budget of N alerts an hour picks a threshold at which the baseline raises at most N,
    /// stored with the model; the contamination threshold's rate is recorded too.
    #[test]
    fn the_alert_budget_sets_the_threshold() {
        let r = rows(3_600);
        // One flow a second for an hour, from 300 sources in turn.
        let meta: Vec<RowMeta> = (0..r.len())
            .map(|i| RowMeta {
                src: std::net::IpAddr::V4(std::net::Ipv4Addr::from(0x0a00_0000 + (i % 300) as u32)),
                ts_ns: i as u64 * 1_000_000_000,
            })
            .collect();
        let quiet = 30_000_000_000;
        let mut m = Model::train(&r, ForestParams::default(), 0.1, vec![]).expect("train");
        let by_contamination = m.threshold;
        m.calibrate(&r, &meta, None, quiet);
        let rate = m.expected_alerts_per_hour.expect("rate");
        assert!(rate > 100.0, "10% of 3,600 flows an hour: {rate}");
        assert_eq!(m.threshold_rule, "contamination");
        m.calibrate(&r, &meta, Some(10.0), quiet);
        let rate = m.expected_alerts_per_hour.expect("rate");
        assert!(rate <= 10.0 && rate > 0.0, "{rate}");
        assert!(m.threshold > by_contamination);
        assert_eq!(
            (m.threshold_rule.as_str(), m.max_alerts_per_hour),
            ("max_alerts_per_hour", Some(10.0))
        );
        // Zero: above every baseline score.
        m.calibrate(&r, &meta, Some(0.0), quiet);
        assert_eq!(m.expected_alerts_per_hour, Some(0.0));
        assert_eq!(m.threshold_note, None);
        // The same flows within 36 s: too short to count alerts per hour on; the quantile
        // decides, and the model says why.
        let short: Vec<RowMeta> = meta
            .iter()
            .map(|m| RowMeta {
                ts_ns: m.ts_ns / 100,
                ..*m
            })
            .collect();
        let mut m = Model::train(&r, ForestParams::default(), 0.1, vec![]).expect("train");
        m.calibrate(&r, &short, Some(1.0), quiet);
        assert_eq!(m.threshold_rule, "contamination");
        assert_eq!(m.threshold, by_contamination);
        let note = m.threshold_note.as_deref().unwrap_or_default();
        assert!(note.contains("baseline spans 35 s"), "{note}");
    }

    #[test]
    fn save_load_round_trip_and_bad_files_are_named_errors() {
        let dir = std::env::temp_dir().join(format!("sensor-model-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("tmp dir");
        let p = dir.join("m.json");
        let m = Model::train(
            &rows(300),
            ForestParams {
                trees: 10,
                ..ForestParams::default()
            },
            0.1,
            vec![],
        )
        .expect("train");
        m.save(&p).expect("save");
        assert_eq!(Model::load(&p).expect("load"), m);

        let mut other = serde_json::to_value(&m).expect("json");
        other["version"] = 99.into();
        std::fs::write(&p, other.to_string()).expect("write");
        assert!(matches!(
            Model::load(&p),
            Err(ModelError::Version { found: 99, .. })
        ));

        std::fs::write(
            &p,
            b"{\"format\": \"gateway-sensor-iforest\", \"version\": 1, \"features\": [",
        )
        .expect("w");
        let e = Model::load(&p).expect_err("truncated");
        assert!(
            matches!(e, ModelError::Corrupt { .. }) && e.to_string().contains("m.json"),
            "{e}"
        );

        let mut bad = serde_json::to_value(&m).expect("json");
        bad["forest"]["trees"][0]["nodes"][0]["left"] = 1_000_000.into();
        std::fs::write(&p, bad.to_string()).expect("write");
        assert!(
            matches!(Model::load(&p), Err(ModelError::Corrupt { .. })),
            "out-of-range child index"
        );
        std::fs::remove_dir_all(&dir).ok();
        assert!(matches!(
            Model::train(&rows(3), ForestParams::default(), 0.1, vec![]),
            Err(ModelError::TooFewFlows(3))
        ));
    }

    #[test]
    fn contamination_sets_the_share_of_training_flows_above_the_threshold() {
        let r = rows(1000);
        let m = Model::train(&r, ForestParams::default(), 0.1, vec![]).expect("train");
        let above = r.iter().filter(|x| m.score_raw(x) >= m.threshold).count();
        assert!(
            (80..=130).contains(&above),
            "{above} of 1000 at contamination 0.1"
        );
        assert_eq!(m.severity(m.threshold - 0.01), Severity::Normal);
        assert_eq!(m.severity(1.0), Severity::Critical);
    }
}
