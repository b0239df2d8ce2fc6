//! SQLite storage: flows, alerts, anomalies, statistics, capture sessions and model versions.
//!
//! One writer thread owns the write connection and commits whatever has queued in one
//! transaction (up to 100 ms or 10,000 rows), so ingest hands rows over a channel and never
//! waits on the disk; readers (the API) use their own connections, which WAL mode lets run
//! beside the writer. The schema is versioned with `PRAGMA user_version` and migrated forward on
//! open. Retention by age and by row count runs in the writer every minute.
//!
//! The writer outlives a failing database (disk full, data directory read-only, the file
//! locked by another process, or not openable at all): the rows it could not commit stay in
//! memory (alerts, audit rows and sessions always; flows, anomalies and statistics up to
//! [`PENDING_ROWS`], the oldest dropped and counted first), it retries with backoff, and
//! writes them in order once the database takes writes again. Detection and the API never
//! wait for it.

use std::{
    os::unix::fs::OpenOptionsExt as _,
    path::{Path, PathBuf},
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicI64, AtomicU64, AtomicUsize, Ordering},
        mpsc,
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use rusqlite::{Connection, OpenFlags};
use serde::{Deserialize, Serialize};

pub mod read;
mod schema;
mod sink;
mod writer;

use self::writer::{Writer, now_ns};
pub use self::{sink::StoreSink, writer::apply_retention};

use self::schema::MIGRATIONS;
pub use self::schema::SCHEMA_VERSION;
pub use crate::record::{AnomalyRow, StatsRow};
use crate::report::Report;
use crate::{
    metrics::Registry,
    mitigate::MitigationEvent,
    record::{AlertRecord, AttackFlowRow, FlowRecord},
};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{path}: cannot create the database file")]
    Create {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}")]
    Sqlite {
        path: PathBuf,
        #[source]
        source: rusqlite::Error,
    },
    #[error(
        "{path}: database schema version {found} is newer than this sensor's ({SCHEMA_VERSION})"
    )]
    Newer { path: PathBuf, found: i64 },
    #[error("the database writer has stopped")]
    WriterGone,
    /// The database does not take writes right now; rows are held in memory meanwhile.
    #[error("{path}: database unavailable ({reason}); {pending} row(s) held in memory")]
    Unavailable {
        path: PathBuf,
        reason: String,
        pending: usize,
    },
}

/// Retention limits (`[store]` in the config file).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Retention {
    /// Rows older than this (by last_seen/ts) are deleted.
    pub max_age_days: u64,
    /// Most rows kept per table; the oldest go first.
    pub max_rows: u64,
}

impl Default for Retention {
    fn default() -> Self {
        Self {
            max_age_days: 30,
            max_rows: 10_000_000,
        }
    }
}

enum Msg {
    // Boxed: rows cross to the writer thread, and a small message keeps the batches that
    // carry them in the allocator's small, cached size classes.
    Flow(Box<FlowRecord>, u64, u64),
    Alert(Box<AlertRecord>, u64, u64),
    Anomaly(Box<AnomalyRow>),
    Stats(StatsRow),
    Mitigation(Box<MitigationEvent>, u64),
    RuleChange(Box<crate::ruleset::RuleChange>, u64),
    AttackFlows(Box<AttackFlowRow>, u64),
    SessionStart(String, String, mpsc::Sender<Result<i64, StoreError>>),
    SessionEnd(i64, u64, u64),
    Model(String, f64, u64, String),
    Sync(mpsc::Sender<Result<(), StoreError>>),
    /// Many rows in one message: one wake-up of the writer for all of them.
    Batch(Vec<Msg>),
}

/// Counters of the writer, for `/metrics` and status.
#[derive(Default)]
pub struct WriterStats {
    /// Rows handed over and not yet committed (in the queue or held after a failure).
    pub queued: AtomicUsize,
    pub written: AtomicU64,
    /// Rows lost: refused by the full queue (live), or the oldest flows/anomalies/statistics
    /// beyond what is held in memory while the database fails.
    pub dropped: AtomicU64,
    pub commits: AtomicU64,
    /// Failed commits (each retry counts).
    pub errors: AtomicU64,
    /// Rows held in memory because the database failed.
    pub pending: AtomicUsize,
    /// When the current failure began (ns since the epoch); 0 while writes succeed.
    pub failing_since_ns: AtomicU64,
    /// The current failure, for status and logs.
    pub last_error: std::sync::Mutex<String>,
    /// Longest the writer spent truncating the WAL (what it writes next waits that long).
    pub checkpoint_max_us: AtomicU64,
}

impl WriterStats {
    /// The writer's numbers on `/metrics`, read from these fields at scrape time.
    pub fn register(self: &Arc<Self>, m: &Registry) {
        let n = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let u = |a: &AtomicUsize| a.load(Ordering::Relaxed) as u64;
        let s = Arc::clone(self);
        m.gauge_fn(
            "sensor_db_queue_depth",
            "Rows waiting for the database writer.",
            move || u(&s.queued),
        );
        m.counters_of(
            self,
            &[(
                "sensor_db_dropped_total",
                "Rows lost: refused by the full queue, or beyond what is held in memory while \
                 the database fails.",
                |s| s.dropped.load(Ordering::Relaxed),
            )],
        );
        let s = Arc::clone(self);
        m.gauge_fn(
            "sensor_db_failing",
            "1 while the database does not take writes (rows are held in memory and retried).",
            move || u64::from(n(&s.failing_since_ns) != 0),
        );
        let s = Arc::clone(self);
        m.gauge_fn(
            "sensor_db_pending_rows",
            "Rows held in memory because the database failed.",
            move || u(&s.pending),
        );
        let s = Arc::clone(self);
        m.gauge_fn(
            "sensor_db_checkpoint_max_microseconds",
            "Longest time the writer spent truncating the WAL (rows and alerts wait behind it).",
            move || n(&s.checkpoint_max_us),
        );
        m.counters_of(
            self,
            &[(
                "sensor_db_write_errors_total",
                "Failed database commits (each retry counts).",
                |s| s.errors.load(Ordering::Relaxed),
            )],
        );
    }

    /// `Some(reason)` while the database does not take writes.
    pub fn failure(&self) -> Option<String> {
        (self.failing_since_ns.load(Ordering::Relaxed) != 0).then(|| {
            self.last_error
                .lock()
                .map(|e| e.clone())
                .unwrap_or_default()
        })
    }
}

/// Flows, anomalies and statistics held in memory at most while the database fails (alerts,
/// audit rows and sessions are always kept): some minutes of a busy gateway, ~100 MB.
pub const PENDING_ROWS: usize = 200_000;
/// Longest wait between retries of a failing database.
const RETRY_MAX: Duration = Duration::from_secs(5);

/// Handle to the writer thread. Dropping it flushes and stops the writer.
pub struct Store {
    path: PathBuf,
    tx: Option<mpsc::SyncSender<Msg>>,
    /// Alerts and audit rows: a lane of their own, committed ahead of the rows queued on
    /// `tx`, so that a flood's backlog of flow rows (up to ~260k) never delays an alert on the
    /// API nor drops one.
    priority: Option<mpsc::Sender<Msg>>,
    stats: Arc<WriterStats>,
    join: Option<JoinHandle<()>>,
    /// The WAL copier: stopped by dropping its sender.
    copier: Option<(mpsc::Sender<()>, JoinHandle<()>)>,
    /// Capture session later rows belong to (0: none); the writer sets it when a session
    /// it could not create at first is committed.
    session: Arc<AtomicI64>,
}

/// Creates the file with mode 0600 (it holds who talked to whom) before SQLite opens it.
fn create_private(path: &Path) -> Result<(), StoreError> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|source| StoreError::Create {
            path: path.into(),
            source,
        })?;
    }
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(path)
        .map(drop)
        .map_err(|source| StoreError::Create {
            path: path.into(),
            source,
        })
}

/// Opens (creating and migrating) the database for writing.
pub fn open_rw(path: &Path) -> Result<Connection, StoreError> {
    create_private(path)?;
    let sql = |source| StoreError::Sqlite {
        path: path.into(),
        source,
    };
    let mut c = Connection::open(path).map_err(sql)?;
    // Short: only our own API readers and checkpoints contend (WAL), and a file another
    // process holds locked is retried by the writer rather than waited on.
    c.busy_timeout(Duration::from_secs(1)).map_err(sql)?;
    c.pragma_update(None, "journal_mode", "WAL").map_err(sql)?;
    // A WAL reset by a checkpoint is cut back to this size rather than kept at its peak.
    c.pragma_update(None, "journal_size_limit", 64 * 1024 * 1024)
        .map_err(sql)?;
    c.pragma_update(None, "synchronous", "NORMAL")
        .map_err(sql)?;
    let version: i64 = c
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .map_err(sql)?;
    if version > SCHEMA_VERSION {
        return Err(StoreError::Newer {
            path: path.into(),
            found: version,
        });
    }
    for (v, m) in MIGRATIONS.iter().enumerate().skip(version as usize) {
        let tx = c.transaction().map_err(sql)?;
        tx.execute_batch(m).map_err(sql)?;
        tx.pragma_update(None, "user_version", v as i64 + 1)
            .map_err(sql)?;
        tx.commit().map_err(sql)?;
    }
    Ok(c)
}

/// Opens the database for reading (the API).
pub fn open_ro(path: &Path) -> Result<Connection, StoreError> {
    let c = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(|source| StoreError::Sqlite {
        path: path.into(),
        source,
    })?;
    // Short: an API read waits this long on a database another process holds locked.
    c.busy_timeout(Duration::from_secs(2))
        .map_err(|source| StoreError::Sqlite {
            path: path.into(),
            source,
        })?;
    Ok(c)
}

const BATCH_ROWS: usize = 10_000;
/// Messages the writer's queue holds. Rows travel in batches of up to [`SINK_BATCH`], so this
/// is up to ~260k rows of backlog; the channel preallocates its slots, so a bigger bound costs
/// memory (and page faults) at every open.
const QUEUE_MESSAGES: usize = 1024;
const BATCH_TIME: Duration = Duration::from_millis(100);
/// How often the writer looks at the priority lane while it waits on the other.
const PRIORITY_POLL: Duration = Duration::from_millis(10);
const RETENTION_EVERY: Duration = Duration::from_secs(60);
/// How often the WAL is copied back into the database (by a thread of its own, beside the
/// writer) and then truncated (by the writer, with little left to copy).
///
/// SQLite's automatic checkpoints never restart the WAL while some reader is in it, and an
/// API read without pause (a dashboard, a scraper) always is: the soak found the WAL at
/// 9.8 GB after six minutes of a flood. A TRUNCATE checkpoint waits (the busy timeout) for
/// the readers that started before it, and readers that start after read the file.
const CHECKPOINT_EVERY: Duration = Duration::from_secs(10);

impl Store {
    /// Opens the database and starts the writer thread.
    pub fn open(path: &Path, retention: Retention) -> Result<Self, StoreError> {
        let conn = open_rw(path)?;
        Self::start(path, retention, Some(conn))
    }

    /// Like [`Store::open`], but a database that cannot be opened now (read-only or full
    /// data directory, locked file) is not fatal: the writer holds rows in memory and keeps
    /// trying. For the live sensor, whose detection must not wait for its disk. A database
    /// of a newer schema is still refused.
    pub fn open_or_retry(path: &Path, retention: Retention) -> Result<Self, StoreError> {
        match open_rw(path) {
            Ok(conn) => Self::start(path, retention, Some(conn)),
            Err(e @ StoreError::Newer { .. }) => Err(e),
            Err(e) => {
                tracing::error!(error = %Report(&e), "database unavailable at start; rows are held in memory until it opens");
                let s = Self::start(path, retention, None)?;
                s.stats.failing_since_ns.store(now_ns(), Ordering::Relaxed);
                if let Ok(mut last) = s.stats.last_error.lock() {
                    *last = Report(&e).to_string();
                }
                Ok(s)
            }
        }
    }

    fn start(
        path: &Path,
        retention: Retention,
        conn: Option<Connection>,
    ) -> Result<Self, StoreError> {
        Self::start_with(path, retention, conn, PENDING_ROWS, CHECKPOINT_EVERY)
    }

    #[cfg(test)]
    fn start_with_cap(
        path: &Path,
        retention: Retention,
        conn: Option<Connection>,
        cap: usize,
    ) -> Result<Self, StoreError> {
        Self::start_with(path, retention, conn, cap, CHECKPOINT_EVERY)
    }

    fn start_with(
        path: &Path,
        retention: Retention,
        conn: Option<Connection>,
        cap: usize,
        checkpoint_every: Duration,
    ) -> Result<Self, StoreError> {
        let (tx, rx) = mpsc::sync_channel(QUEUE_MESSAGES);
        let (priority, priority_rx) = mpsc::channel();
        let stats = Arc::new(WriterStats::default());
        let copied = Arc::new(AtomicBool::new(false));
        let (copier_stop, stop_rx) = mpsc::channel();
        let copier = {
            let (db, copied) = (path.to_path_buf(), Arc::clone(&copied));
            std::thread::Builder::new()
                .name("store-wal-copy".into())
                .spawn(move || writer::copy_wal(&db, checkpoint_every, &copied, &stop_rx))
                .map_err(|source| StoreError::Create {
                    path: path.into(),
                    source,
                })?
        };
        let session = Arc::new(AtomicI64::new(0));
        let w = Writer {
            conn,
            path: path.to_path_buf(),
            st: Arc::clone(&stats),
            retention,
            session: Arc::clone(&session),
            current: 0,
            pending: Vec::new(),
            priority: Vec::new(),
            droppable: 0,
            cap,
            failing: None,
            next_try: Instant::now(),
            backoff: Duration::ZERO,
            copied,
            checkpoint_every,
        };
        let join = std::thread::Builder::new()
            .name("store-writer".into())
            .spawn(move || w.run(rx, priority_rx))
            .map_err(|source| StoreError::Create {
                path: path.into(),
                source,
            })?;
        Ok(Self {
            path: path.into(),
            tx: Some(tx),
            priority: Some(priority),
            stats,
            join: Some(join),
            copier: Some((copier_stop, copier)),
            session,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn stats(&self) -> &Arc<WriterStats> {
        &self.stats
    }

    fn send(&self, m: Msg, block: bool) -> Result<(), StoreError> {
        let n = match &m {
            Msg::Batch(v) if v.is_empty() => return Ok(()),
            Msg::Batch(v) => v.len(),
            _ => 1,
        };
        let tx = self.tx.as_ref().ok_or(StoreError::WriterGone)?;
        self.stats.queued.fetch_add(n, Ordering::Relaxed);
        let r = if block {
            tx.send(m).map_err(|_| StoreError::WriterGone)
        } else {
            match tx.try_send(m) {
                Ok(()) => Ok(()),
                Err(mpsc::TrySendError::Full(_)) => {
                    // Live ingest never waits on the disk; what the queue cannot take is counted.
                    self.stats.dropped.fetch_add(n as u64, Ordering::Relaxed);
                    self.stats.queued.fetch_sub(n, Ordering::Relaxed);
                    return Ok(());
                }
                Err(mpsc::TrySendError::Disconnected(_)) => Err(StoreError::WriterGone),
            }
        };
        if r.is_err() {
            self.stats.queued.fetch_sub(n, Ordering::Relaxed);
        }
        r
    }

    /// Starts a capture session (a replay, or a live capture) that later rows belong to.
    /// While the database fails this is `Unavailable`, and the session is still created
    /// (first) once it takes writes; the rows queued meanwhile are then filed under it.
    pub fn start_session(&self, kind: &str, source: &str) -> Result<i64, StoreError> {
        let (tx, rx) = mpsc::channel();
        self.send(Msg::SessionStart(kind.into(), source.into(), tx), true)?;
        let id = rx.recv().map_err(|_| StoreError::WriterGone)??;
        self.session.store(id, Ordering::Relaxed);
        Ok(id)
    }

    pub fn end_session(&self, packets: u64, flows: u64) -> Result<(), StoreError> {
        // 0: the session's start is not committed yet (the database failed); the writer ends
        // the one it creates.
        let id = self.session.swap(0, Ordering::Relaxed);
        self.send(Msg::SessionEnd(id, packets, flows), true)
    }

    /// What this database's evidence files are named with: a tag of its path and the session
    /// (alert ids are unique within a session; the tag keeps two databases sharing a data
    /// directory from naming a file alike, which would lose one alert's packets).
    pub fn evidence_prefix(&self) -> String {
        let path = std::path::absolute(&self.path).unwrap_or_else(|_| self.path.clone());
        // FNV-1a: stable across runs and builds (std's hasher is not).
        let tag = path
            .as_os_str()
            .as_encoded_bytes()
            .iter()
            .fold(0x811c_9dc5_u32, |h, b| {
                (h ^ u32::from(*b)).wrapping_mul(0x0100_0193)
            });
        format!("{tag:08x}-{}", self.sid())
    }

    /// The capture session later rows belong to (0 before the first): alert ids are unique
    /// within it, so evidence files are named after both.
    pub fn sid(&self) -> u64 {
        self.session.load(Ordering::Relaxed).max(0) as u64
    }

    /// Queues a finished flow; `block` waits for queue space (replay) instead of counting a drop
    /// (live).
    pub fn flow(&self, f: FlowRecord, last_seen_ns: u64, block: bool) -> Result<(), StoreError> {
        self.send(Msg::Flow(Box::new(f), last_seen_ns, self.sid()), block)
    }

    /// Queues an alert (its row as it stands) on the priority lane: never waits, never dropped.
    pub fn alert(&self, a: AlertRecord, last_seen_ns: u64) -> Result<(), StoreError> {
        self.send_priority(Msg::Alert(Box::new(a), last_seen_ns, self.sid()))
    }

    /// Queues a mitigation audit row on the priority lane.
    pub fn mitigation(&self, e: MitigationEvent) -> Result<(), StoreError> {
        self.send_priority(Msg::Mitigation(Box::new(e), self.sid()))
    }

    /// Queues a rules-change audit row on the priority lane.
    pub fn rule_change(&self, c: crate::ruleset::RuleChange) -> Result<(), StoreError> {
        self.send_priority(Msg::RuleChange(Box::new(c), self.sid()))
    }

    fn send_priority(&self, m: Msg) -> Result<(), StoreError> {
        let tx = self.priority.as_ref().ok_or(StoreError::WriterGone)?;
        self.stats.queued.fetch_add(1, Ordering::Relaxed);
        tx.send(m).map_err(|_| {
            self.stats.queued.fetch_sub(1, Ordering::Relaxed);
            StoreError::WriterGone
        })
    }

    pub fn anomaly(&self, a: AnomalyRow, block: bool) -> Result<(), StoreError> {
        self.send(Msg::Anomaly(Box::new(a)), block)
    }

    pub fn stats_row(&self, s: StatsRow, block: bool) -> Result<(), StoreError> {
        self.send(Msg::Stats(s), block)
    }

    pub fn model_version(
        &self,
        path: &str,
        threshold: f64,
        flows: u64,
        metadata: String,
    ) -> Result<(), StoreError> {
        self.send(Msg::Model(path.into(), threshold, flows, metadata), true)
    }

    /// Waits until everything queued so far is committed; `Unavailable` at once while the
    /// database fails (the rows stay held).
    pub fn sync(&self) -> Result<(), StoreError> {
        let (tx, rx) = mpsc::channel();
        self.send(Msg::Sync(tx), true)?;
        rx.recv().map_err(|_| StoreError::WriterGone)?
    }
}

impl Drop for Store {
    fn drop(&mut self) {
        if let Some((stop, j)) = self.copier.take() {
            drop(stop);
            let _ignored = j.join();
        }
        drop(self.priority.take());
        drop(self.tx.take());
        if let Some(j) = self.join.take() {
            let _ignored = j.join();
        }
    }
}

#[cfg(test)]
mod tests;
