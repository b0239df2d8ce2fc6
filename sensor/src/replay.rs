//! `sensor replay`: capture files through the flow pipeline, with progress and a summary.

use std::{
    fs::File,
    io::{self, BufWriter, IsTerminal as _, Write},
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use std::collections::BTreeMap;

use crate::{
    capture::{self, CaptureError, PacketSink, ReadStats},
    detect::{AlertKind, AlertRecord, Detector, RuleConfig, features::N_FEATURES, model::Model},
    flow::{Flow, FlowConfig, FlowTable, TableStats},
    packet::Parsed,
    record::FlowRecord,
};

/// Why a replay failed. `BadInput` is the user's to fix (exit status 2).
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    #[error(transparent)]
    BadInput(#[from] CaptureError),
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
}

/// Table, detector and outputs, fed batch by batch.
struct Pipeline<'a> {
    table: FlowTable,
    detector: Option<Detector>,
    flows_out: &'a mut JsonlSink,
    alerts_out: &'a mut JsonlSink,
    finished: Vec<Flow>,
    flows: u64,
    alerts: BTreeMap<AlertKind, u64>,
    err: Option<ReplayError>,
}

impl PacketSink for Pipeline<'_> {
    fn packets(&mut self, batch: &[(Parsed, u32, u64)]) {
        let finished = &mut self.finished;
        self.table.packets(batch, &mut |f| finished.push(f));
        self.process();
    }
}

impl Pipeline<'_> {
    fn process(&mut self) {
        if let Some(d) = &mut self.detector {
            for ev in self.table.take_events() {
                d.on_event(&ev);
            }
        }
        for f in std::mem::take(&mut self.finished) {
            Self::finished_flow(
                f,
                &mut self.detector,
                self.flows_out,
                &mut self.flows,
                &mut self.err,
            );
        }
        if let Some(d) = &mut self.detector {
            for a in d.book.take_closed() {
                *self.alerts.entry(a.kind).or_default() += 1;
                if self.err.is_none()
                    && let Err(e) = self.alerts_out.write(&AlertRecord::from(&a))
                {
                    self.err = Some(e);
                }
            }
        }
    }

    fn finished_flow(
        f: Flow,
        detector: &mut Option<Detector>,
        flows_out: &mut JsonlSink,
        flows: &mut u64,
        err: &mut Option<ReplayError>,
    ) {
        *flows += 1;
        if let Some(d) = detector {
            d.on_flow(&f);
        }
        // Formatting a record costs more than counting the flow: only when it is written.
        if err.is_none()
            && matches!(flows_out, JsonlSink::Jsonl { .. })
            && let Err(e) = flows_out.write(&FlowRecord::from(&f))
        {
            *err = Some(e);
        }
    }

    fn finish(&mut self) {
        self.process();
        // Flows still held go straight to their consumers, not through a buffer of them all.
        let Self {
            table,
            detector,
            flows_out,
            flows,
            err,
            ..
        } = self;
        table.flush(&mut |f| Self::finished_flow(f, detector, flows_out, flows, err));
        self.process();
        if let Some(d) = &mut self.detector {
            d.flush();
        }
        self.process();
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
        flows_out: opts.flows_out,
        alerts_out: opts.alerts_out,
        finished: Vec::new(),
        flows: 0,
        alerts: BTreeMap::new(),
        err: None,
    };
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
    if let Some(e) = pipe.err.take() {
        return Err(e);
    }
    pipe.flows_out.finish()?;
    pipe.alerts_out.finish()?;
    summary.flows = pipe.flows;
    summary.alerts = pipe.alerts;
    if let Some(d) = &mut pipe.detector {
        summary.features = d.take_collected();
    }
    summary.table = pipe.table.stats();
    summary.elapsed = start.elapsed();
    Ok(summary)
}
