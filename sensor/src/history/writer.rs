//! Appends the pipeline's calls into the rules to segment files, and keeps the directory
//! under its size bound. A write that fails is counted and logged, and the history resumes
//! with the next segment: detection never waits on, or stops for, the history.

use std::{
    fs::{self, File},
    io::Write as _,
    path::{Path, PathBuf},
};

use crate::{
    metrics::{Counter, Gauge, Registry},
    report::Report,
};

use super::{
    HistoryConfig, HistoryError,
    codec::{Encoder, MAGIC, Record},
    reader::segments,
};

const NS: u64 = 1_000_000_000;
/// Encoded bytes held before a write (and at most a second's worth: see `put`).
const BUFFER: usize = 256 * 1024;

/// The history's counters on `/metrics`.
#[derive(Clone, Default)]
pub struct HistoryMetrics {
    bytes: Gauge,
    records: Counter,
    dropped: Counter,
    write_errors: Counter,
    deleted: Counter,
}

impl HistoryMetrics {
    pub fn new(m: &Registry) -> Self {
        Self {
            bytes: m.gauge(
                "sensor_history_bytes",
                "Bytes of rules history on disk (for dry runs of rule changes).",
            ),
            records: m.counter(
                "sensor_history_records_total",
                "Records (flow events, finished flows, ticks) written to the rules history.",
            ),
            dropped: m.counter(
                "sensor_history_records_dropped_total",
                "Flow events and finished flows not kept: past history.max_records_per_s.",
            ),
            write_errors: m.counter(
                "sensor_history_write_errors_total",
                "Writes to the rules history that failed (history resumes with the next segment).",
            ),
            deleted: m.counter(
                "sensor_history_segments_deleted_total",
                "History segments deleted to stay under history.max_mb.",
            ),
        }
    }
}

/// The open segment.
struct Open {
    file: File,
    path: PathBuf,
    /// Data time of its first record.
    start_ns: u64,
    bytes: u64,
}

pub struct Writer {
    dir: PathBuf,
    max_bytes: u64,
    segment_ns: u64,
    enc: Encoder,
    buf: Vec<u8>,
    open: Option<Open>,
    /// Data time of the last timed record.
    last_ns: u64,
    /// Second of the last write out (the buffer goes to disk once a second at least, so a dry
    /// run sees data up to the last second).
    flushed_s: u64,
    /// Bytes of the closed segments in the directory.
    closed_bytes: u64,
    /// After a failed write: no record is kept until this data time (the next segment).
    broken_until_ns: Option<u64>,
    max_per_s: u64,
    /// The data second being counted against `max_per_s`, its records, and those dropped.
    rate_s: u64,
    rate_n: u64,
    rate_dropped: u64,
    metrics: HistoryMetrics,
}

impl Writer {
    /// A writer into `dir` (created). Segments already there (a previous run's) count toward
    /// the bound.
    pub fn new(cfg: &HistoryConfig, dir: PathBuf) -> Result<Self, HistoryError> {
        let err = |source| HistoryError::Write {
            dir: dir.clone(),
            source,
        };
        fs::create_dir_all(&dir).map_err(err)?;
        let closed_bytes = segments(&dir)?.iter().map(|s| s.bytes).sum();
        Ok(Self {
            max_bytes: cfg.max_mb.saturating_mul(1 << 20),
            segment_ns: cfg.segment_s.max(1) * NS,
            dir,
            enc: Encoder::default(),
            buf: Vec::with_capacity(BUFFER + 4096),
            open: None,
            last_ns: 0,
            flushed_s: 0,
            closed_bytes,
            broken_until_ns: None,
            max_per_s: cfg.max_records_per_s.max(1),
            rate_s: 0,
            rate_n: 0,
            rate_dropped: 0,
            metrics: HistoryMetrics::default(),
        })
    }

    /// Counts into `m` from now on.
    pub fn publish_metrics(&mut self, m: &Registry) {
        self.metrics = HistoryMetrics::new(m);
        self.metrics.bytes.set(self.closed_bytes);
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn put(&mut self, r: &Record) {
        let ts = r.ts_ns();
        if let Some(t) = ts {
            self.last_ns = self.last_ns.max(t);
        }
        let sec = self.last_ns / NS;
        if sec != self.rate_s {
            // A second that lost records says how many before the next one starts.
            if self.rate_dropped > 0 {
                let gap = Record::Gap {
                    ts_ns: self.rate_s * NS + NS - 1,
                    dropped: self.rate_dropped,
                };
                self.rate_dropped = 0;
                self.put(&gap);
            }
            self.rate_s = sec;
            self.rate_n = 0;
        }
        if matches!(r, Record::Event(_) | Record::Flow(_)) {
            self.rate_n += 1;
            if self.rate_n > self.max_per_s {
                self.rate_dropped += 1;
                self.metrics.dropped.inc();
                return;
            }
        }
        if let Some(until) = self.broken_until_ns {
            if self.last_ns < until {
                return;
            }
            self.broken_until_ns = None;
        }
        let rotate = match &self.open {
            None => true,
            Some(o) => {
                ts.is_some()
                    && (self.last_ns >= o.start_ns + self.segment_ns
                        // One segment stays a small part of the bound, so deleting the oldest
                        // frees room even when a flood writes fast.
                        || o.bytes + self.buf.len() as u64 > self.max_bytes / 8)
            }
        };
        if rotate {
            // Records before the first timed one (a batch end at start-up) have no time to
            // name a segment by, and change nothing a detector starting fresh would do.
            if ts.is_none() {
                return;
            }
            self.rotate();
            if self.open.is_none() {
                return;
            }
        }
        self.enc.put(r, &mut self.buf);
        self.metrics.records.inc();
        let sec = self.last_ns / NS;
        if self.buf.len() >= BUFFER || (matches!(r, Record::Tick(_)) && sec != self.flushed_s) {
            self.flushed_s = sec;
            self.write_out();
        }
    }

    /// Writes what is buffered: readers (a dry run) see every record put so far.
    pub fn flush(&mut self) {
        self.write_out();
    }

    /// Writes what is buffered and syncs it to disk (end of a run).
    pub fn sync(&mut self) {
        self.write_out();
        if let Some(o) = &self.open
            && let Err(e) = o.file.sync_data()
        {
            self.failed(&e);
        }
    }

    fn write_out(&mut self) {
        if self.buf.is_empty() {
            return;
        }
        let Some(o) = &mut self.open else {
            self.buf.clear();
            return;
        };
        match o.file.write_all(&self.buf) {
            Ok(()) => {
                o.bytes += self.buf.len() as u64;
                self.buf.clear();
                self.metrics.bytes.set(self.closed_bytes + o.bytes);
            }
            Err(e) => self.failed(&e),
        }
    }

    /// Closes the open segment, opens the next one at the current data time, deletes the
    /// oldest beyond the bound.
    fn rotate(&mut self) {
        self.write_out();
        if let Some(o) = self.open.take() {
            self.closed_bytes += o.bytes;
        }
        self.enc = Encoder::default();
        let start = self.last_ns;
        let path = self.dir.join(format!("{start:020}.hist"));
        let opened = fs::OpenOptions::new()
            .create_new(true)
            .write(true)
            .open(&path)
            .and_then(|mut f| f.write_all(MAGIC).map(|()| f));
        match opened {
            Ok(file) => {
                self.open = Some(Open {
                    file,
                    path,
                    start_ns: start,
                    bytes: MAGIC.len() as u64,
                });
            }
            Err(e) => {
                self.failed(&e);
                return;
            }
        }
        self.enforce_bound();
    }

    fn enforce_bound(&mut self) {
        let Ok(all) = segments(&self.dir) else { return };
        let current = self.open.as_ref().map(|o| o.path.clone());
        let mut total: u64 = all.iter().map(|s| s.bytes).sum();
        for s in &all {
            if total <= self.max_bytes {
                break;
            }
            if Some(&s.path) == current.as_ref() {
                continue;
            }
            if fs::remove_file(&s.path).is_ok() {
                total -= s.bytes;
                self.metrics.deleted.inc();
            }
        }
        let open = self.open.as_ref().map_or(0, |o| o.bytes);
        self.closed_bytes = total.saturating_sub(open);
        self.metrics.bytes.set(total);
    }

    fn failed(&mut self, e: &std::io::Error) {
        self.metrics.write_errors.inc();
        tracing::warn!(
            dir = %self.dir.display(),
            error = %Report(e),
            "rules history: a write failed; history resumes with the next segment"
        );
        // What was written stays readable (a dry run stops at a record cut short).
        if let Some(o) = self.open.take() {
            self.closed_bytes += o.bytes;
        }
        self.buf.clear();
        let next = (self.last_ns / self.segment_ns + 1) * self.segment_ns;
        self.broken_until_ns = Some(next);
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        self.flush();
    }
}
