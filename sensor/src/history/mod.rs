//! The rules history: every call the pipeline makes into the rules (flow events, finished
//! flows, overflow counters, ticks, batch ends), kept on disk in bounded segment files, so a
//! change to the rules can be tried on recent traffic before it is applied: a dry run
//! ([`dry_run`]) feeds the same calls to detectors built from the current and from the
//! changed rules, and says which alerts the change would raise and which it would no longer
//! raise. Written by `sensor run` (`[history]`) and by `sensor replay --history DIR`.
//!
//! Events rather than packets: a second of a flow is one record whatever its packet count,
//! which is what makes an hour a few megabytes (docs/BENCHMARKS.md, "Rules history and dry
//! run"), and what the rules read is exactly this (the model reads more, and a dry run does
//! not judge it).

pub mod codec;
pub mod dry_run;
pub mod reader;
pub mod writer;

#[cfg(test)]
mod tests;

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

pub use self::{
    codec::Record,
    reader::{Segment, segments},
    writer::Writer,
};

/// `[history]`: the on-disk history of what the rules saw, for dry runs of rule changes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HistoryConfig {
    /// Off: no history is written and the dry run has nothing to run on.
    pub enabled: bool,
    /// Where the segment files go (default: `history` in the data directory).
    pub dir: Option<PathBuf>,
    /// Most megabytes on disk; the oldest segments are deleted beyond it.
    pub max_mb: u64,
    /// Seconds of data per segment file (the unit in which old history is deleted).
    pub segment_s: u64,
    /// Flow events and finished flows kept per data second at most: a flood of new flows
    /// (millions a second) would otherwise write tens of MB/s; the rest are counted, and a dry
    /// run over those seconds says how many it did not see.
    pub max_records_per_s: u64,
}

impl Default for HistoryConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            dir: None,
            max_mb: 1024,
            segment_s: 600,
            max_records_per_s: 200_000,
        }
    }
}

impl HistoryConfig {
    /// The directory, given the data directory.
    pub fn dir_in(&self, data_dir: &std::path::Path) -> PathBuf {
        self.dir.clone().unwrap_or_else(|| data_dir.join("history"))
    }

    /// Refusals naming the key.
    pub fn check(&self) -> Result<(), crate::check::Invalid> {
        use crate::check::Invalid;
        if self.max_mb == 0 {
            return Err(Invalid::new(
                "history.max_mb",
                "must be at least 1 (turn the history off with enabled = false)",
            ));
        }
        if self.max_records_per_s == 0 {
            return Err(Invalid::new(
                "history.max_records_per_s",
                "must be at least 1 (turn the history off with enabled = false)",
            ));
        }
        if !(10..=86_400).contains(&self.segment_s) {
            return Err(Invalid::new(
                "history.segment_s",
                "must be between 10 and 86400 seconds",
            ));
        }
        Ok(())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum HistoryError {
    #[error("cannot read the rules history in {dir}")]
    Read {
        dir: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot write the rules history in {dir}")]
    Write {
        dir: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}")]
    Range(String),
}
