//! `sensor replay`: capture files through the flow pipeline, with progress and a summary.

use std::{
    fs::File,
    io::{self, BufWriter, IsTerminal as _, Write},
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use std::collections::BTreeMap;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::{
    capture::{self, CaptureError, PacketSink, ReadStats},
    detect::{AlertKind, AlertRecord, Detector, RuleConfig, features::N_FEATURES, model::Model},
    flow::{Flow, FlowConfig, FlowTable, TableStats},
    packet::Parsed,
    record::FlowRecord,
    store::{StatsRow, Store, StoreError},
    webhook::Webhook,
};

/// Why a replay failed. `BadInput` is the user's to fix (exit status 2).
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    #[error(transparent)]
    BadInput(#[from] CaptureError),
    #[error("database")]
    Store(#[from] StoreError),
    #[error("writing {path}")]
    Output {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// Where records (flows, alerts) go: nowhere, or one JSON object per line.
pub enum JsonlSink {
    None,
    Jsonl {
        path: PathBuf,
        out: Box<dyn Write>,
    },
    /// The reader went away (`| head`): the replay finishes and writes nothing more.
    Closed,
}

impl JsonlSink {
    /// `-` is standard output.
    pub fn jsonl(path: &Path) -> Result<Self, ReplayError> {
        let out: Box<dyn Write> = if path == Path::new("-") {
            Box::new(BufWriter::new(io::stdout().lock()))
        } else {
            let f = File::create(path).map_err(|source| ReplayError::Output {
                path: path.to_path_buf(),
                source,
            })?;
            Box::new(BufWriter::with_capacity(1 << 20, f))
        };
        Ok(Self::Jsonl {
            path: path.to_path_buf(),
            out,
        })
    }

    fn write(&mut self, record: &impl serde::Serialize) -> Result<(), ReplayError> {
        let Self::Jsonl { out, .. } = self else {
            return Ok(());
        };
        let mut line = serde_json::to_vec(record).map_err(io::Error::other);
        if let Ok(l) = &mut line {
            l.push(b'\n');
        }
        let r = line.and_then(|l| out.write_all(&l));
        self.check(r)
    }

    fn finish(&mut self) -> Result<(), ReplayError> {
        let Self::Jsonl { out, .. } = self else {
            return Ok(());
        };
        let r = out.flush();
        self.check(r)
    }

    /// A closed pipe ends the output quietly; any other write error is the caller's.
    fn check(&mut self, r: io::Result<()>) -> Result<(), ReplayError> {
        match r {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::BrokenPipe => {
                *self = Self::Closed;
                Ok(())
            }
            Err(source) => match self {
                Self::Jsonl { path, .. } => Err(ReplayError::Output {
                    path: path.clone(),
                    source,
                }),
                _ => Ok(()),
            },
        }
    }
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
    pub elapsed: Duration,
    /// (file, reason) for files cut short.
    pub truncated: Vec<(PathBuf, String)>,
}

impl ReplaySummary {
    pub fn packets_per_second(&self) -> f64 {
        self.read.packets as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

/// What a replay runs and where its output goes.
pub struct ReplayOptions<'a> {
    pub flow: FlowConfig,
    /// Rule thresholds; `None` replays flows only.
    pub rules: Option<RuleConfig>,
    /// Model that scores finished flows (with `rules` set).
    pub model: Option<Model>,
    /// Keep every finished flow's feature row (training).
    pub collect_features: bool,
    pub flows_out: &'a mut JsonlSink,
    pub alerts_out: &'a mut JsonlSink,
    /// Database for flows, alerts, anomalies and per-second statistics.
    pub store: Option<&'a mut Store>,
    /// Where each alert is also POSTed.
    pub webhook: Option<&'a Webhook>,
}

/// Table, detector and outputs, fed batch by batch.
struct Pipeline<'a> {
    table: FlowTable,
    detector: Option<Detector>,
    out: Outputs<'a>,
    finished: Vec<Flow>,
    second: StatsRow,
}

/// Where results go, and what went there.
struct Outputs<'a> {
    flows_out: &'a mut JsonlSink,
    alerts_out: &'a mut JsonlSink,
    store: Option<&'a mut Store>,
    webhook: Option<&'a Webhook>,
    flows: u64,
    alerts: BTreeMap<AlertKind, u64>,
    err: Option<ReplayError>,
}

impl Outputs<'_> {
    fn fail(&mut self, e: impl Into<ReplayError>) {
        self.err.get_or_insert(e.into());
    }

    fn flow(&mut self, f: Flow, detector: &mut Option<Detector>) {
        self.flows += 1;
        if let Some(d) = detector {
            d.on_flow(&f);
        }
        // Formatting a record costs more than counting the flow: only when it goes somewhere.
        let to_jsonl = matches!(self.flows_out, JsonlSink::Jsonl { .. });
        if self.err.is_some() || (!to_jsonl && self.store.is_none()) {
            return;
        }
        let rec = FlowRecord::from(&f);
        if to_jsonl && let Err(e) = self.flows_out.write(&rec) {
            self.fail(e);
        }
        if let Some(st) = &self.store
            && let Err(e) = st.flow(rec, f.last_seen_ns, true)
        {
            self.fail(e);
        }
    }

    fn detections(&mut self, d: &mut Detector) {
        for a in d.book.take_closed() {
            *self.alerts.entry(a.kind).or_default() += 1;
            let rec = AlertRecord::from(&a);
            if let Some(w) = self.webhook {
                w.send(&rec);
            }
            if let Err(e) = self.alerts_out.write(&rec) {
                self.fail(e);
            }
            if let Some(st) = &self.store
                && let Err(e) = st.alert(rec, a.last_seen_ns, true)
            {
                self.fail(e);
            }
        }
        for an in d.take_anomalies() {
            if let Some(st) = &self.store
                && let Err(e) = st.anomaly(an, true)
            {
                self.fail(e);
            }
        }
    }

    fn second(&mut self, s: StatsRow) {
        if s.packets == 0 {
            return;
        }
        if let Some(st) = &self.store
            && let Err(e) = st.stats_row(s, true)
        {
            self.fail(e);
        }
    }
}

impl PacketSink for Pipeline<'_> {
    fn packets(&mut self, batch: &[(Parsed, u32, u64)]) {
        if self.out.store.is_some() {
            for (p, len, ts) in batch {
                self.count_second(p, *len, *ts);
            }
        }
        let finished = &mut self.finished;
        self.table.packets(batch, &mut |f| finished.push(f));
        self.process();
    }
}

impl Pipeline<'_> {
    /// Adds a packet to the per-second statistics, writing each second as it ends.
    fn count_second(&mut self, p: &Parsed, len: u32, ts: u64) {
        let sec = ts / 1_000_000_000 * 1_000_000_000;
        if sec != self.second.ts {
            self.out.second(self.second);
            self.second = StatsRow {
                ts: sec,
                seconds: 1,
                ..StatsRow::default()
            };
        }
        self.second.count(p.key.proto, len);
    }

    fn process(&mut self) {
        if let Some(d) = &mut self.detector {
            for ev in self.table.take_events() {
                d.on_event(&ev);
            }
        }
        for f in std::mem::take(&mut self.finished) {
            self.second.flows += 1;
            self.out.flow(f, &mut self.detector);
        }
        if let Some(d) = &mut self.detector {
            self.out.detections(d);
        }
    }

    fn finish(&mut self) {
        self.process();
        // Flows still held go straight to their consumers, not through a buffer of them all.
        let Self {
            table,
            detector,
            out,
            ..
        } = self;
        table.flush(&mut |f| out.flow(f, detector));
        if let Some(d) = &mut self.detector {
            d.flush();
            self.out.detections(d);
        }
        self.out.second(self.second);
    }
}

/// Replays `files` in order through one flow table (timeouts run on packet time) and, unless
/// `rules` is `None`, the detector. A progress bar is drawn when stderr is a terminal.
pub fn replay(files: &[PathBuf], opts: ReplayOptions<'_>) -> Result<ReplaySummary, ReplayError> {
    // Open every file first: a bad path fails before any output is written.
    let mut opened = Vec::with_capacity(files.len());
    for path in files {
        opened.push((path, capture::open_file(path)?));
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
    let mut pipe = Pipeline {
        table,
        detector: opts.rules.map(|r| {
            let d = Detector::new(r).with_model(opts.model);
            if opts.collect_features {
                d.collecting()
            } else {
                d
            }
        }),
        out: Outputs {
            flows_out: opts.flows_out,
            alerts_out: opts.alerts_out,
            store: opts.store,
            webhook: opts.webhook,
            flows: 0,
            alerts: BTreeMap::new(),
            err: None,
        },
        finished: Vec::new(),
        second: StatsRow::default(),
    };
    if let Some(st) = pipe.out.store.as_deref_mut() {
        let source = files
            .iter()
            .map(|p| p.display().to_string())
            .collect::<Vec<_>>()
            .join(" ");
        st.start_session("replay", &source)?;
    }
    let mut summary = ReplaySummary {
        files: files.len(),
        ..ReplaySummary::default()
    };
    for (path, (mut cap, link)) in opened {
        bar.set_message(path.display().to_string());
        let mut pending = 0u64;
        let st = capture::feed(
            &mut cap,
            link,
            &mut pipe,
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
    pipe.finish();
    bar.finish_and_clear();
    if let Some(e) = pipe.out.err.take() {
        return Err(e);
    }
    pipe.out.flows_out.finish()?;
    pipe.out.alerts_out.finish()?;
    if let Some(st) = pipe.out.store.as_deref_mut() {
        st.end_session(summary.read.packets, pipe.out.flows)?;
        st.sync()?;
    }
    summary.flows = pipe.out.flows;
    summary.alerts = std::mem::take(&mut pipe.out.alerts);
    if let Some(d) = &mut pipe.detector {
        summary.features = d.take_collected();
    }
    summary.table = pipe.table.stats();
    summary.elapsed = start.elapsed();
    Ok(summary)
}
