//! Reads the history back: which segments there are, and the records of a time range.

use std::{
    fs,
    path::{Path, PathBuf},
};

use super::{
    HistoryError,
    codec::{Decoder, MAGIC, Record},
};

/// One segment file: `<data time of its first record, ns>.hist`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Segment {
    pub path: PathBuf,
    pub first_ns: u64,
    pub bytes: u64,
}

/// The segments in `dir`, oldest first (none when the directory does not exist).
pub fn segments(dir: &Path) -> Result<Vec<Segment>, HistoryError> {
    let rd = match fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => {
            return Err(HistoryError::Read {
                dir: dir.into(),
                source,
            });
        }
    };
    let mut out = Vec::new();
    for entry in rd.flatten() {
        let path = entry.path();
        let Some(first_ns) = path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_suffix(".hist"))
            .and_then(|n| n.parse::<u64>().ok())
        else {
            continue;
        };
        let bytes = entry.metadata().map(|m| m.len()).unwrap_or(0);
        out.push(Segment {
            path,
            first_ns,
            bytes,
        });
    }
    out.sort_by_key(|s| s.first_ns);
    Ok(out)
}

/// What a read of a range found.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
pub struct ReadStats {
    pub segments: usize,
    pub bytes: u64,
    /// Records handed over (those inside the range).
    pub records: u64,
    pub events: u64,
    pub flows: u64,
    /// Runs of the sensor that ended inside the range (each restarts the detectors).
    pub runs_ended: u64,
    /// Data time of the first and last record inside the range, ns.
    pub first_ns: Option<u64>,
    pub last_ns: Option<u64>,
    /// Segments that ended in a record cut short (a crash, a full disk): read up to it.
    pub truncated: usize,
    /// Records not kept in the range because of `[history] max_records_per_s` (the dry run
    /// is then missing part of those seconds).
    pub dropped: u64,
    /// Segments that are not history files (bad magic): skipped.
    pub skipped: usize,
}

/// The bytes of the segments that hold data of `[from_ns, to_ns]`, oldest first.
pub fn load(dir: &Path, from_ns: u64, to_ns: u64) -> Result<Vec<Vec<u8>>, HistoryError> {
    let all = segments(dir)?;
    let mut out = Vec::new();
    for (i, s) in all.iter().enumerate() {
        // A segment holds data from its first record until the next one starts.
        let ends = all.get(i + 1).map_or(u64::MAX, |n| n.first_ns);
        if s.first_ns > to_ns || ends <= from_ns {
            continue;
        }
        match fs::read(&s.path) {
            Ok(b) => out.push(b),
            // Deleted by the writer's bound since the listing: older than what is kept now.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(source) => {
                return Err(HistoryError::Read {
                    dir: dir.into(),
                    source,
                });
            }
        }
    }
    Ok(out)
}

/// Hands every record of `[from_ns, to_ns]` in `segs` to `f`, in the order written. A record
/// without a time (a batch end, a run's end) belongs to the time of the record before it.
pub fn for_each(
    segs: &[Vec<u8>],
    from_ns: u64,
    to_ns: u64,
    mut f: impl FnMut(&Record),
) -> ReadStats {
    let mut st = ReadStats::default();
    for seg in segs {
        let Some(body) = seg.strip_prefix(MAGIC.as_slice()) else {
            st.skipped += 1;
            continue;
        };
        st.segments += 1;
        st.bytes += seg.len() as u64;
        let mut d = Decoder::new(body);
        let mut now = 0u64;
        loop {
            let rec = match d.next_record() {
                Ok(Some(r)) => r,
                Ok(None) => break,
                Err(_) => {
                    st.truncated += 1;
                    break;
                }
            };
            if let Some(t) = rec.ts_ns() {
                now = t;
            }
            if now < from_ns || now > to_ns {
                continue;
            }
            st.records += 1;
            match rec {
                Record::Event(_) => st.events += 1,
                Record::Flow(_) => st.flows += 1,
                Record::End => st.runs_ended += 1,
                Record::Gap { dropped, .. } => st.dropped += dropped,
                _ => {}
            }
            if rec.ts_ns().is_some() {
                st.first_ns.get_or_insert(now);
                st.last_ns = Some(st.last_ns.map_or(now, |l| l.max(now)));
            }
            f(&rec);
        }
    }
    st
}
