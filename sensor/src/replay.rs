//! `sensor replay`: capture files through the flow pipeline, with progress and a summary.

use std::{
    fs::File,
    io::{self, BufWriter, IsTerminal as _, Write},
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::{
    capture::{self, CaptureError, ReadStats},
    flow::{Flow, FlowConfig, FlowTable, TableStats},
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

/// Where finished flows go.
pub enum FlowSink {
    None,
    Jsonl {
        path: PathBuf,
        out: Box<dyn Write>,
    },
    /// The reader went away (`| head`): the replay finishes and writes nothing more.
    Closed,
}

impl FlowSink {
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

    fn write(&mut self, f: &Flow) -> Result<(), ReplayError> {
        let Self::Jsonl { out, .. } = self else {
            return Ok(());
        };
        let mut line = serde_json::to_vec(&FlowRecord::from(f)).map_err(io::Error::other);
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
    pub elapsed: Duration,
    /// (file, reason) for files cut short.
    pub truncated: Vec<(PathBuf, String)>,
}

impl ReplaySummary {
    pub fn packets_per_second(&self) -> f64 {
        self.read.packets as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

/// Replays `files` in order through one flow table (timeouts run on packet time), writing
/// finished flows to `sink`. A progress bar is drawn when stderr is a terminal.
pub fn replay(
    files: &[PathBuf],
    cfg: FlowConfig,
    sink: &mut FlowSink,
) -> Result<ReplaySummary, ReplayError> {
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
    let mut table = FlowTable::new(cfg);
    let mut summary = ReplaySummary {
        files: files.len(),
        ..ReplaySummary::default()
    };
    let mut write_err = None;
    let mut emit = |f: Flow| {
        if write_err.is_none()
            && let Err(e) = sink.write(&f)
        {
            write_err = Some(e);
        }
    };
    let mut flows = 0u64;
    for (path, (mut cap, link)) in opened {
        bar.set_message(path.display().to_string());
        let mut pending = 0u64;
        let st = capture::feed(
            &mut cap,
            link,
            &mut table,
            &mut |f| {
                flows += 1;
                emit(f)
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
    table.flush(&mut |f| {
        flows += 1;
        emit(f)
    });
    bar.finish_and_clear();
    if let Some(e) = write_err {
        return Err(e);
    }
    sink.finish()?;
    summary.flows = flows;
    summary.table = table.stats();
    summary.elapsed = start.elapsed();
    Ok(summary)
}
