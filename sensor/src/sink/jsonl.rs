//! JSON Lines output (`--flows-jsonl`, `--alerts-jsonl`): one object per line, to a file or
//! standard output. A reader that goes away (`| head`) ends the output quietly.

use std::{
    fs::File,
    io::{self, BufWriter, Write},
    path::{Path, PathBuf},
};

use super::{EndTotals, Sink, SinkError};
use crate::record::{AlertRecord, FlowRecord};

/// What a JSONL file holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Content {
    /// Every finished flow.
    Flows,
    /// Every alert once, in its final state (written when it closes).
    Alerts,
}

enum Out {
    Open {
        path: PathBuf,
        out: Box<dyn Write>,
    },
    /// The reader went away: nothing more is written.
    Closed,
}

/// A JSONL file of flows or of alerts.
pub struct JsonlSink {
    content: Content,
    out: Out,
}

impl JsonlSink {
    /// Creates (truncates) `path`; `-` is standard output.
    pub fn create(path: &Path, content: Content) -> Result<Self, SinkError> {
        let out: Box<dyn Write> = if path == Path::new("-") {
            Box::new(BufWriter::new(io::stdout().lock()))
        } else {
            let f = File::create(path).map_err(|source| SinkError::Output {
                path: path.to_path_buf(),
                source,
            })?;
            Box::new(BufWriter::with_capacity(1 << 20, f))
        };
        Ok(Self {
            content,
            out: Out::Open {
                path: path.to_path_buf(),
                out,
            },
        })
    }

    fn write(&mut self, record: &impl serde::Serialize) -> Result<(), SinkError> {
        let Out::Open { out, .. } = &mut self.out else {
            return Ok(());
        };
        let r = serde_json::to_vec(record)
            .map_err(io::Error::other)
            .and_then(|mut line| {
                line.push(b'\n');
                out.write_all(&line)
            });
        self.check(r)
    }

    /// A closed pipe ends the output quietly; any other write error is the caller's.
    fn check(&mut self, r: io::Result<()>) -> Result<(), SinkError> {
        match r {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::BrokenPipe => {
                self.out = Out::Closed;
                Ok(())
            }
            Err(source) => match &self.out {
                Out::Open { path, .. } => Err(SinkError::Output {
                    path: path.clone(),
                    source,
                }),
                Out::Closed => Ok(()),
            },
        }
    }
}

impl Sink for JsonlSink {
    fn wants_flows(&self) -> bool {
        self.content == Content::Flows && matches!(self.out, Out::Open { .. })
    }

    fn flow(&mut self, rec: &FlowRecord, _last_seen_ns: u64) -> Result<(), SinkError> {
        if self.content != Content::Flows {
            return Ok(());
        }
        self.write(rec)
    }

    fn alert_closed(&mut self, rec: &AlertRecord, _last_seen_ns: u64) -> Result<(), SinkError> {
        if self.content != Content::Alerts {
            return Ok(());
        }
        self.write(rec)
    }

    fn finish(&mut self, _totals: EndTotals) -> Result<(), SinkError> {
        let Out::Open { out, .. } = &mut self.out else {
            return Ok(());
        };
        let r = out.flush();
        self.check(r)
    }
}
