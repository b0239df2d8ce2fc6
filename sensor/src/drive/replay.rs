//! Capture files as a source: read in order, through one flow table and the pipeline, with a
//! progress bar and a summary.

use std::{
    collections::BTreeMap,
    io::{self, IsTerminal as _},
    path::PathBuf,
    time::{Duration, Instant},
};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::{
    config::Config,
    detect::{AlertKind, Detector, RuleConfig, ml::features::N_FEATURES, ml::model::Model},
    flow::{FlowConfig, FlowTable, TableStats},
    packet::Parsed,
    pipeline::Pipeline,
    sink::{Sink, SinkError},
    source::pcap::{self, CaptureError, PacketSink, ReadStats},
};

/// Why a replay failed. `BadInput` is the user's to fix (exit status 2).
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    #[error(transparent)]
    BadInput(#[from] CaptureError),
    #[error(transparent)]
    Output(#[from] SinkError),
    #[error(transparent)]
    Model(#[from] crate::detect::ml::model::ModelError),
    #[error(transparent)]
    History(#[from] crate::history::HistoryError),
}

/// Result of a whole replay.
#[derive(Debug, Default)]
pub struct ReplaySummary {
    pub files: usize,
    pub read: ReadStats,
    pub flows: u64,
    pub table: TableStats,
    pub alerts: BTreeMap<AlertKind, u64>,
    /// Feature rows of finished flows, when `collect_features` was set.
    pub features: Vec<[f64; N_FEATURES]>,
    /// Source and end time of each feature row.
    pub feature_meta: Vec<crate::detect::ml::model::RowMeta>,
    pub elapsed: Duration,
    /// (file, reason) for files cut short.
    pub truncated: Vec<(PathBuf, String)>,
    /// The online model after the replay (a learner holds what it learnt).
    pub online: Option<crate::detect::ml::online::Online>,
    /// What the evidence recorder wrote, when it was on.
    pub evidence: Option<crate::evidence::EvidenceStats>,
}

impl ReplaySummary {
    pub fn packets_per_second(&self) -> f64 {
        self.read.packets as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

/// What a replay runs; where its results go are the sinks handed to [`replay`].
pub struct ReplayOptions {
    pub flow: FlowConfig,
    /// Rule thresholds; `None` replays flows only.
    pub rules: Option<RuleConfig>,
    /// Model that scores finished flows (with `rules` set).
    pub model: Option<Model>,
    /// Keep every finished flow's feature row (training).
    pub collect_features: bool,
    /// Model alert budget and per-victim aggregation.
    pub volume: crate::detect::AlertVolume,
    /// `[networks]`: alerts' direction and hostgroup.
    pub networks: crate::networks::Networks,
    /// `[geo]`: where alerts' remote sides are (read at the first alert).
    pub geo: crate::geo::Geo,
    /// The online model, learning or judging every flow event (with `rules` set).
    pub online: Option<crate::detect::ml::online::Online>,
    /// Writes a pcap file of each alert's packets (a second read of the files).
    pub evidence: Option<crate::evidence::Recorder>,
    /// Keeps what the rules saw, for dry runs of rule changes (`--history`).
    pub history: Option<crate::history::Writer>,
}

impl ReplayOptions {
    /// Detection as `config` sets it (flow timeouts, rule thresholds), no model.
    pub fn new(config: &Config) -> Self {
        Self {
            flow: config.flow.table(),
            rules: Some(config.rules.clone()),
            model: None,
            collect_features: false,
            volume: config.model.volume(),
            networks: config.networks.build(),
            geo: crate::geo::Geo::lazy(&config.geo.dir),
            online: None,
            evidence: None,
            history: None,
        }
    }

    /// Flows only: no rules, no model.
    pub fn flows_only(config: &Config) -> Self {
        Self {
            rules: None,
            ..Self::new(config)
        }
    }

    pub fn with_model(mut self, model: Option<Model>) -> Self {
        self.model = model;
        self
    }

    pub fn with_online(mut self, online: Option<crate::detect::ml::online::Online>) -> Self {
        self.online = online;
        self
    }

    /// Records each alert's packets with `rec` (created with [`crate::evidence::Window::FromFirstSeen`]).
    pub fn with_evidence(mut self, rec: Option<crate::evidence::Recorder>) -> Self {
        self.evidence = rec;
        self
    }

    /// Keeps every call into the rules in `w` (with rules on).
    pub fn with_history(mut self, w: Option<crate::history::Writer>) -> Self {
        self.history = w;
        self
    }

    /// Keep the feature row of every finished flow (for training).
    pub fn collecting(mut self) -> Self {
        self.collect_features = true;
        self
    }
}

/// The pipeline as the packet reader's sink.
struct Feed<'p, 'a> {
    table: &'p mut FlowTable,
    pipe: &'p mut Pipeline<'a>,
}

impl PacketSink for Feed<'_, '_> {
    fn packets(&mut self, batch: &[(Parsed, u32, u64)]) {
        self.pipe.packets(self.table, batch);
    }
}

/// Replays `files` in order through one flow table (timeouts run on packet time) and, unless
/// `rules` is `None`, the detector. A progress bar is drawn when stderr is a terminal.
pub fn replay<'a>(
    files: &[PathBuf],
    opts: ReplayOptions,
    sinks: Vec<Box<dyn Sink + 'a>>,
) -> Result<ReplaySummary, ReplayError> {
    // Open every file first: a bad path fails before any output is written.
    let mut opened = Vec::with_capacity(files.len());
    for path in files {
        opened.push((path, pcap::open_file(path)?));
    }
    let total: u64 = files
        .iter()
        .filter_map(|p| std::fs::metadata(p).ok())
        .map(|m| m.len())
        .sum();
    let bar = if io::stderr().is_terminal() {
        let b = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr());
        if let Ok(style) =
            ProgressStyle::with_template("{bar:40} {bytes}/{total_bytes} {bytes_per_sec} {msg}")
        {
            b.set_style(style);
        }
        b
    } else {
        ProgressBar::hidden()
    };

    let start = Instant::now();
    let mut table = FlowTable::new(opts.flow);
    table.record_events(opts.rules.is_some());
    let detector = opts.rules.map(|r| {
        let d = Detector::new(r)
            .with_model(opts.model)
            .with_online(opts.online)
            .with_volume(opts.volume)
            .with_networks(opts.networks)
            .with_geo(opts.geo);
        if opts.collect_features {
            d.collecting()
        } else {
            d
        }
    });
    let mut pipe = Pipeline::new(detector, sinks);
    if let Some(w) = opts.history {
        pipe.set_history(w);
    }
    if let Some(rec) = opts.evidence {
        pipe.set_recorder(rec);
    }
    let mut summary = ReplaySummary {
        files: files.len(),
        ..ReplaySummary::default()
    };
    for (path, (mut cap, link)) in opened {
        bar.set_message(path.display().to_string());
        let mut pending = 0u64;
        let st = pcap::feed(
            &mut cap,
            link,
            &mut Feed {
                table: &mut table,
                pipe: &mut pipe,
            },
            |n| {
                pending += n;
                if pending >= 1 << 20 {
                    bar.inc(pending);
                    pending = 0;
                }
            },
            || false,
        );
        bar.inc(pending);
        if let Some(reason) = &st.truncated {
            tracing::warn!(file = %path.display(), %reason, "capture ends mid-record; keeping the packets read before it");
            summary.truncated.push((path.clone(), reason.clone()));
        }
        summary.read.add(&st);
    }
    let totals = pipe.finish(&mut table);
    bar.finish_and_clear();
    let totals = totals?;
    summary.flows = totals.flows;
    summary.alerts = totals.alerts;
    if let Some(d) = pipe.detector_mut() {
        summary.features = d.take_collected();
        summary.feature_meta = d.take_collected_meta();
        summary.online = d.take_online();
    }
    if let Some(mut rec) = pipe.take_recorder() {
        crate::evidence::second_pass::second_pass(&mut rec, files)?;
        summary.evidence = Some(rec.stats());
    }
    summary.table = table.stats();
    summary.elapsed = start.elapsed();
    Ok(summary)
}

/// How `train_online` learns.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct OnlineTrain {
    pub params: crate::detect::ml::kitnet::KitParams,
    /// Passes of the autoencoders over the baseline.
    pub epochs: usize,
    pub contamination: f64,
    pub max_alerts_per_hour: Option<f64>,
}

/// Trains the online model on baseline `files` with `config`'s flow and rule settings: one
/// pass maps the features (correlations over the whole baseline), `epochs` passes train the
/// autoencoders online, event by event, and a last pass scores the baseline for the
/// threshold (contamination quantile or false-alert budget).
pub fn train_online(
    files: &[PathBuf],
    config: &Config,
    t: OnlineTrain,
) -> Result<crate::detect::ml::online::OnlineModel, ReplayError> {
    use crate::detect::ml::{
        model::ModelError,
        online::{Online, model_from},
    };
    let cap = config.rules.max_tracked;
    let params = crate::detect::ml::kitnet::KitParams {
        mapping_samples: usize::MAX,
        ..t.params
    };
    let pass = |online: Online| -> Result<Online, ReplayError> {
        replay(
            files,
            ReplayOptions::new(config).with_online(Some(online)),
            Vec::new(),
        )?
        .online
        .ok_or(ReplayError::Model(ModelError::TooFewEvents(0)))
    };
    let mapped = pass(Online::learner(params, cap))?;
    let events = mapped.events as usize;
    if events < 64 {
        return Err(ModelError::TooFewEvents(events).into());
    }
    let mut trainer = mapped
        .into_trainer()
        .ok_or(ReplayError::Model(ModelError::TooFewEvents(events)))?;
    trainer.end_mapping();
    for _ in 0..t.epochs.max(1) {
        trainer = pass(Online::resume(trainer, cap))?
            .into_trainer()
            .ok_or(ReplayError::Model(ModelError::TooFewEvents(events)))?;
    }
    let net = trainer
        .finish()
        .ok_or(ReplayError::Model(ModelError::TooFewEvents(events)))?;
    let sources = files.iter().map(|p| p.display().to_string()).collect();
    let mut model = model_from(
        net,
        crate::detect::ml::kitnet::KitParams {
            mapping_samples: events,
            ..t.params
        },
        events,
        sources,
    );
    model.training.learnt = events * t.epochs.max(1);
    let mut judged = pass(Online::judge(model.clone(), cap).collecting())?;
    let (scores, meta) = judged.take_collected();
    model.calibrate(
        &scores,
        &meta,
        t.contamination,
        t.max_alerts_per_hour,
        config.rules.quiet_close_s * 1_000_000_000,
    );
    Ok(model)
}

/// Replays `files` with `config`'s rules (no model, no output) to write their rules history
/// into `dir`: what a dry run of changed rules on a capture reads.
pub fn record_history(
    files: &[PathBuf],
    config: &Config,
    dir: &std::path::Path,
) -> Result<ReplaySummary, ReplayError> {
    let w = crate::history::Writer::new(&config.history, dir.to_path_buf())?;
    replay(
        files,
        ReplayOptions::new(config).with_history(Some(w)),
        Vec::new(),
    )
}
