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
        atomic::{AtomicI64, AtomicU64, AtomicUsize, Ordering},
        mpsc,
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use rusqlite::{Connection, OpenFlags, params};
use serde::{Deserialize, Serialize};

pub mod read;
mod schema;

use self::schema::MIGRATIONS;
pub use self::schema::SCHEMA_VERSION;
pub use crate::record::{AnomalyRow, StatsRow};
use crate::{
    mitigate::MitigationEvent,
    record::{AlertRecord, FlowRecord},
};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{path}: cannot create the database file: {source}")]
    Create {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: {source}")]
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
}

impl WriterStats {
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
    stats: Arc<WriterStats>,
    join: Option<JoinHandle<()>>,
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
const RETENTION_EVERY: Duration = Duration::from_secs(60);
/// How often the writer checkpoints the WAL back into the database and truncates it.
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
                tracing::error!(error = %e, "database unavailable at start; rows are held in memory until it opens");
                let s = Self::start(path, retention, None)?;
                s.stats.failing_since_ns.store(now_ns(), Ordering::Relaxed);
                if let Ok(mut last) = s.stats.last_error.lock() {
                    *last = e.to_string();
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
        Self::start_with_cap(path, retention, conn, PENDING_ROWS)
    }

    fn start_with_cap(
        path: &Path,
        retention: Retention,
        conn: Option<Connection>,
        cap: usize,
    ) -> Result<Self, StoreError> {
        let (tx, rx) = mpsc::sync_channel(QUEUE_MESSAGES);
        let stats = Arc::new(WriterStats::default());
        let session = Arc::new(AtomicI64::new(0));
        let w = Writer {
            conn,
            path: path.to_path_buf(),
            st: Arc::clone(&stats),
            retention,
            session: Arc::clone(&session),
            current: 0,
            pending: Vec::new(),
            droppable: 0,
            cap,
            failing: None,
            next_try: Instant::now(),
            backoff: Duration::ZERO,
        };
        let join = std::thread::Builder::new()
            .name("store-writer".into())
            .spawn(move || w.run(rx))
            .map_err(|source| StoreError::Create {
                path: path.into(),
                source,
            })?;
        Ok(Self {
            path: path.into(),
            tx: Some(tx),
            stats,
            join: Some(join),
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

    pub fn alert(&self, a: AlertRecord, last_seen_ns: u64, block: bool) -> Result<(), StoreError> {
        self.send(Msg::Alert(Box::new(a), last_seen_ns, self.sid()), block)
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
        drop(self.tx.take());
        if let Some(j) = self.join.take() {
            let _ignored = j.join();
        }
    }
}

fn now_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

/// The writer thread's state.
struct Writer {
    /// `None` until the database opens (it could not at start).
    conn: Option<Connection>,
    path: PathBuf,
    st: Arc<WriterStats>,
    retention: Retention,
    /// The store's current session, shared with its handle.
    session: Arc<AtomicI64>,
    /// The session rows without one are filed under (set when its start is committed).
    current: i64,
    /// Rows in arrival order: the next batch, or what failed and is retried.
    pending: Vec<Msg>,
    /// Flows, anomalies and statistics in `pending` (what may be dropped under pressure).
    droppable: usize,
    /// At most this many of those are held ([`PENDING_ROWS`]; smaller in tests).
    cap: usize,
    /// When the current failure began.
    failing: Option<Instant>,
    next_try: Instant,
    backoff: Duration,
}

impl Writer {
    fn unavailable(&self) -> StoreError {
        StoreError::Unavailable {
            path: self.path.clone(),
            reason: self.st.failure().unwrap_or_default(),
            pending: self.pending.len(),
        }
    }

    /// Takes one message: flattens batches; while failing, answers whoever waits at once.
    fn add(&mut self, m: Msg) -> bool {
        match m {
            Msg::Batch(v) => v.into_iter().fold(false, |u, m| self.add(m) | u),
            Msg::Sync(done) if self.failing.is_some() => {
                let _ignored = done.send(Err(self.unavailable()));
                self.st.queued.fetch_sub(1, Ordering::Relaxed);
                false
            }
            Msg::SessionStart(kind, source, reply) if self.failing.is_some() => {
                let _ignored = reply.send(Err(self.unavailable()));
                // Created (with nobody waiting) once the database takes writes.
                let (orphan, _) = mpsc::channel();
                self.pending.push(Msg::SessionStart(kind, source, orphan));
                false
            }
            m => {
                let urgent = matches!(m, Msg::Sync(_) | Msg::SessionStart(..));
                if matches!(m, Msg::Flow(..) | Msg::Anomaly(_) | Msg::Stats(_)) {
                    self.droppable += 1;
                }
                self.pending.push(m);
                urgent
            }
        }
    }

    /// Keeps what is held within [`PENDING_ROWS`] flows/anomalies/statistics, dropping the
    /// oldest of those (never alerts, audit rows or sessions).
    fn shed(&mut self) {
        let excess = self.droppable.saturating_sub(self.cap);
        if excess == 0 {
            return;
        }
        let mut left = excess;
        self.pending.retain(|m| {
            if left > 0 && matches!(m, Msg::Flow(..) | Msg::Anomaly(_) | Msg::Stats(_)) {
                left -= 1;
                false
            } else {
                true
            }
        });
        self.droppable -= excess;
        self.st.dropped.fetch_add(excess as u64, Ordering::Relaxed);
        self.st.queued.fetch_sub(excess, Ordering::Relaxed);
    }

    fn run(mut self, rx: mpsc::Receiver<Msg>) {
        let mut last_retention = Instant::now();
        let mut last_checkpoint = Instant::now();
        let mut closed = false;
        while !closed {
            if self.pending.is_empty() {
                match rx.recv() {
                    Ok(m) => {
                        self.add(m);
                    }
                    Err(_) => break,
                }
            }
            // Gather: for the batch time while healthy (at once if someone waits), until the
            // next retry while failing.
            let deadline = if self.failing.is_some() {
                self.next_try
            } else {
                Instant::now() + BATCH_TIME
            };
            let mut urgent = false;
            while self.failing.is_some() || (self.pending.len() < BATCH_ROWS && !urgent) {
                match rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
                    Ok(m) => urgent |= self.add(m),
                    Err(mpsc::RecvTimeoutError::Timeout) => break,
                    Err(mpsc::RecvTimeoutError::Disconnected) => {
                        closed = true;
                        break;
                    }
                }
            }
            self.shed();
            self.attempt();
            if self.failing.is_none() && last_checkpoint.elapsed() >= CHECKPOINT_EVERY {
                last_checkpoint = Instant::now();
                if let Some(c) = &self.conn {
                    checkpoint(c, &self.path);
                }
            }
            if self.failing.is_none() && last_retention.elapsed() >= RETENTION_EVERY {
                last_retention = Instant::now();
                if let Some(c) = &self.conn
                    && let Err(e) = apply_retention(c, self.retention, now_ns())
                {
                    tracing::warn!(error = %e, "retention cleanup failed");
                }
            }
        }
        if !self.pending.is_empty() {
            // The handle is gone (shutdown): one last try, then what is left is lost.
            self.attempt();
            let n = self.pending.len();
            if n > 0 {
                self.st.dropped.fetch_add(n as u64, Ordering::Relaxed);
                tracing::error!(db = %self.path.display(), rows = n, reason = %self.st.failure().unwrap_or_default(), "database unavailable at shutdown; rows held in memory are lost");
            }
        }
    }

    /// Commits what is pending (opening the database first if it is not open yet); on
    /// failure keeps it and schedules the next try.
    fn attempt(&mut self) {
        if self.pending.is_empty() {
            return;
        }
        let r = match &mut self.conn {
            Some(c) => commit(c, &mut self.pending, &self.st, &mut self.current),
            None => match open_rw(&self.path) {
                Ok(mut c) => {
                    let r = commit(&mut c, &mut self.pending, &self.st, &mut self.current);
                    self.conn = Some(c);
                    r
                }
                Err(e) => Err(e.to_string()),
            },
        };
        match r {
            Ok(n) => {
                self.st.queued.fetch_sub(n, Ordering::Relaxed);
                self.droppable = 0;
                self.session.store(self.current, Ordering::Relaxed);
                if let Some(since) = self.failing.take() {
                    tracing::info!(db = %self.path.display(), rows = n, after_s = since.elapsed().as_secs_f64(), "database takes writes again; rows held in memory written");
                    self.st.failing_since_ns.store(0, Ordering::Relaxed);
                }
                self.backoff = Duration::ZERO;
                self.st.pending.store(0, Ordering::Relaxed);
            }
            Err(e) => {
                self.st.errors.fetch_add(1, Ordering::Relaxed);
                // Opened afresh at the next try: a connection that saw an I/O error (a file
                // system remounted read-only, say) may not recover in place.
                self.conn = None;
                if self.failing.is_none() {
                    tracing::error!(db = %self.path.display(), error = %e, "database write failed; holding rows in memory and retrying");
                    self.failing = Some(Instant::now());
                    self.st.failing_since_ns.store(now_ns(), Ordering::Relaxed);
                    // Whoever waits is told now, not after the retry.
                    let waiting = std::mem::take(&mut self.pending);
                    self.droppable = 0;
                    if let Ok(mut last) = self.st.last_error.lock() {
                        *last = e.clone();
                    }
                    for m in waiting {
                        self.add(m);
                    }
                }
                if let Ok(mut last) = self.st.last_error.lock() {
                    *last = e;
                }
                self.backoff = (self.backoff * 2).clamp(Duration::from_millis(250), RETRY_MAX);
                self.next_try = Instant::now() + self.backoff;
                self.st.pending.store(self.pending.len(), Ordering::Relaxed);
            }
        }
    }
}

/// Writes `batch` in one transaction and clears it; on an error nothing is written and the
/// batch is kept (for the retry). Returns the rows written. `current` is the session rows
/// without one are filed under; sessions started in the batch update it.
fn commit(
    c: &mut Connection,
    batch: &mut Vec<Msg>,
    st: &WriterStats,
    current: &mut i64,
) -> Result<usize, String> {
    let mut session = *current;
    let started = write_batch(c, batch, &mut session).map_err(|e| e.to_string())?;
    *current = session;
    let n = batch.len();
    let mut ids = started.into_iter();
    for m in batch.drain(..) {
        match m {
            Msg::SessionStart(_, _, reply) => {
                let _ignored = reply.send(ids.next().ok_or(StoreError::WriterGone));
            }
            Msg::Sync(done) => {
                let _ignored = done.send(Ok(()));
            }
            _ => {}
        }
    }
    st.written.fetch_add(n as u64, Ordering::Relaxed);
    st.commits.fetch_add(1, Ordering::Relaxed);
    Ok(n)
}

/// The rows of `batch` in one transaction; the ids of the sessions it started, in order.
fn write_batch(c: &mut Connection, batch: &[Msg], session: &mut i64) -> rusqlite::Result<Vec<i64>> {
    let tx = c.transaction()?;
    let mut started = Vec::new();
    // Rows sent before their session could be created carry none: they belong to it.
    let file = |sid: u64, session: i64| if sid == 0 { session.max(0) as u64 } else { sid };
    {
        let mut flow = tx.prepare_cached(
            "INSERT INTO flows (first_seen, last_seen, src_ip, dst_ip, src_port, dst_port, proto, packets, bytes, session_id, record, score)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
        )?;
        let mut alert = tx.prepare_cached(
            "INSERT INTO alerts (kind, severity, detector, src_ip, dst_ip, first_seen, last_seen, count, score, session_id, record, alert_key,
               state, merged_into, rev)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13,
               (SELECT id FROM alerts WHERE alert_key = ?14), (SELECT coalesce(max(rev), 0) + 1 FROM alerts))
             ON CONFLICT(alert_key) DO UPDATE SET severity = excluded.severity, src_ip = excluded.src_ip,
               dst_ip = excluded.dst_ip, first_seen = excluded.first_seen, last_seen = excluded.last_seen,
               count = excluded.count, score = excluded.score, record = excluded.record,
               state = excluded.state, merged_into = excluded.merged_into, rev = excluded.rev",
        )?;
        for m in batch {
            match m {
                Msg::Flow(f, last_ns, sid) => {
                    let sid = file(*sid, *session);
                    let first_ns = chrono::DateTime::parse_from_rfc3339(&f.first_seen)
                        .ok()
                        .and_then(|d| d.timestamp_nanos_opt())
                        .unwrap_or(0);
                    flow.execute(params![
                        first_ns,
                        *last_ns as i64,
                        f.src_ip,
                        f.dst_ip,
                        f.src_port,
                        f.dst_port,
                        f.proto,
                        (f.packets_fwd + f.packets_rev) as i64,
                        (f.bytes_fwd + f.bytes_rev) as i64,
                        (sid > 0).then_some(sid as i64),
                        serde_json::to_string(f).unwrap_or_default(),
                        f.score,
                    ])?;
                }
                Msg::Alert(a, last_ns, sid) => {
                    let sid = file(*sid, *session);
                    let first_ns = chrono::DateTime::parse_from_rfc3339(&a.first_seen)
                        .ok()
                        .and_then(|d| d.timestamp_nanos_opt())
                        .unwrap_or(0);
                    let text =
                        |v: &serde_json::Value| v.as_str().map(str::to_owned).unwrap_or_default();
                    let j = serde_json::to_value(a).unwrap_or_default();
                    alert.execute(params![
                        text(&j["kind"]),
                        text(&j["severity"]),
                        text(&j["detector"]),
                        a.src_ip.map(|i| i.to_string()),
                        a.dst_ip.map(|i| i.to_string()),
                        first_ns,
                        *last_ns as i64,
                        a.count as i64,
                        a.score,
                        (sid > 0).then_some(sid as i64),
                        j.to_string(),
                        // Rows before sessions existed had no key (written once, closed).
                        (sid > 0).then(|| format!("{sid}-{}", a.id)),
                        a.state.as_str(),
                        a.merged_into
                            .filter(|_| sid > 0)
                            .map(|m| format!("{sid}-{m}")),
                    ])?;
                }
                Msg::Anomaly(a) => {
                    tx.prepare_cached(
                        "INSERT INTO anomalies (ts, src_ip, dst_ip, score, severity, record) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                    )?
                    .execute(params![a.ts as i64, a.src_ip, a.dst_ip, a.score, a.severity, a.record])?;
                }
                Msg::Stats(s) => {
                    tx.prepare_cached(
                        "INSERT INTO statistics (ts, seconds, packets, bytes, tcp, udp, icmp, other, flows)
                         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
                    )?
                    .execute(params![
                        s.ts as i64,
                        s.seconds as i64,
                        s.packets as i64,
                        s.bytes as i64,
                        s.tcp as i64,
                        s.udp as i64,
                        s.icmp as i64,
                        s.other as i64,
                        s.flows as i64
                    ])?;
                }
                Msg::AttackFlows(r, sid) => {
                    let sid = file(*sid, *session);
                    tx.prepare_cached(
                        "INSERT INTO attack_flows (alert_key, ts, last_seen, proto, flows, packets, bytes, session_id)
                         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                    )?
                    .execute(params![
                        // The alert's row key in this session (see alerts.alert_key).
                        (sid > 0).then(|| format!("{sid}-{}", r.alert)),
                        r.ts as i64,
                        r.last_seen as i64,
                        r.proto,
                        r.flows as i64,
                        r.packets as i64,
                        r.bytes as i64,
                        (sid > 0).then_some(sid as i64),
                    ])?;
                }
                Msg::Mitigation(e, sid) => {
                    let sid = file(*sid, *session);
                    tx.prepare_cached(
                        "INSERT INTO mitigations (ts, action, target, expires, reason, origin, alert_key, alert_kind, packets, bytes, session_id)
                         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
                    )?
                    .execute(params![
                        e.ts_ns as i64,
                        e.action,
                        e.target,
                        e.expires_ns.map(|t| t as i64),
                        e.reason,
                        e.origin,
                        // The alert's row key in this session (see alerts.alert_key).
                        e.alert_id.filter(|_| sid > 0).map(|id| format!("{sid}-{id}")),
                        e.alert_kind.map(|k| k.as_str()),
                        e.packets as i64,
                        e.bytes as i64,
                        (sid > 0).then_some(sid as i64),
                    ])?;
                }
                Msg::SessionStart(kind, source, _) => {
                    tx.execute(
                        "INSERT INTO capture_sessions (started, kind, source) VALUES (?1, ?2, ?3)",
                        params![now_ns() as i64, kind, source],
                    )?;
                    *session = tx.last_insert_rowid();
                    started.push(*session);
                }
                Msg::SessionEnd(id, packets, flows) => {
                    // Ended before the database let its start be known: the current one.
                    let id = if *id > 0 { *id } else { *session };
                    tx.execute(
                        "UPDATE capture_sessions SET ended = ?1, packets = ?2, flows = ?3 WHERE id = ?4",
                        params![now_ns() as i64, *packets as i64, *flows as i64, id],
                    )?;
                    *session = 0;
                }
                Msg::Model(path, threshold, flows, meta) => {
                    tx.execute(
                        "INSERT INTO model_versions (created, path, threshold, flows, metadata) VALUES (?1, ?2, ?3, ?4, ?5)",
                        params![now_ns() as i64, path, threshold, *flows as i64, meta],
                    )?;
                }
                // Answered after the commit; batches are flattened by the writer.
                Msg::Sync(_) | Msg::Batch(_) => {}
            }
        }
    }
    tx.commit()?;
    Ok(started)
}

/// WAL size past which the checkpoint waits for readers as long as an API read may last.
const WAL_PATIENCE_BYTES: u64 = 256 << 20;

/// Checkpoints the WAL into the database and truncates it; a checkpoint that could not finish
/// (a reader held on past the busy timeout) is tried again next time. Once the WAL is big, it
/// waits out the readers (API reads are cut at 5 s), holding the writer up that long rather
/// than letting the WAL fill the disk.
fn checkpoint(c: &Connection, db: &Path) {
    let mut wal = db.as_os_str().to_owned();
    wal.push("-wal");
    let big = std::fs::metadata(&wal).is_ok_and(|m| m.len() > WAL_PATIENCE_BYTES);
    if big {
        let _ignored = c.busy_timeout(Duration::from_secs(10));
    }
    let r = c.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |r| {
        r.get::<_, i64>(0)
    });
    if big {
        let _ignored = c.busy_timeout(Duration::from_secs(1));
    }
    match r {
        Ok(0) => {}
        Ok(_) => tracing::debug!("WAL checkpoint could not finish (readers); retried later"),
        Err(e) => tracing::warn!(error = %e, "WAL checkpoint failed"),
    }
}

/// Deletes rows older than the age limit, then the oldest beyond the row limit, per table.
pub fn apply_retention(c: &Connection, r: Retention, now_ns: u64) -> rusqlite::Result<u64> {
    let cutoff = now_ns.saturating_sub(r.max_age_days * 86_400 * 1_000_000_000) as i64;
    let mut deleted = 0;
    for (table, col) in [
        ("flows", "last_seen"),
        ("alerts", "last_seen"),
        ("anomalies", "ts"),
        ("statistics", "ts"),
        ("mitigations", "ts"),
        ("attack_flows", "last_seen"),
    ] {
        deleted += c.execute(&format!("DELETE FROM {table} WHERE {col} < ?1"), [cutoff])? as u64;
        deleted += c.execute(
            &format!("DELETE FROM {table} WHERE id <= (SELECT id FROM {table} ORDER BY id DESC LIMIT 1 OFFSET ?1)"),
            [r.max_rows as i64],
        )? as u64;
    }
    Ok(deleted)
}

/// The store as a pipeline output, for one capture session. Flows, anomalies and statistics
/// are handed to the writer in batches (a wake-up per row cost more than the row); alerts go
/// at once, and the batch goes at every tick (each live poll) and at the end.
pub struct StoreSink<'a> {
    store: &'a Store,
    /// Replay waits for queue space; live ingest counts a drop instead of waiting on the disk.
    block: bool,
    buf: Vec<Msg>,
    /// Attack flows being summed in the current time slot, by alert and protocol.
    attack: std::collections::BTreeMap<(u64, u8), AttackFlowRow>,
    /// The slot they belong to (ns).
    slot: u64,
}

/// Rows a sink gathers before it hands them over.
const SINK_BATCH: usize = 256;
/// Data time one attack-flow row sums at most.
const ATTACK_ROW_NS: u64 = 10_000_000_000;

/// Small flows of one attack alert summed over one protocol and [`ATTACK_ROW_NS`] of data time
/// (table `attack_flows`, linked to the alert row by its key).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AttackFlowRow {
    /// The alert's run-local id.
    pub alert: u64,
    /// Start of the row's time slot (ns).
    pub ts: u64,
    pub last_seen: u64,
    pub proto: u8,
    pub flows: u64,
    pub packets: u64,
    pub bytes: u64,
}

impl StoreSink<'_> {
    fn push(&mut self, m: Msg) -> Result<(), crate::sink::SinkError> {
        self.buf.push(m);
        if self.buf.len() >= SINK_BATCH {
            self.hand_over()?;
        }
        Ok(())
    }

    /// Data time reached `ts_ns`: the attack-flow sums of an earlier slot are rows now.
    fn advance(&mut self, ts_ns: u64) -> Result<(), crate::sink::SinkError> {
        let slot = ts_ns / ATTACK_ROW_NS * ATTACK_ROW_NS;
        if slot > self.slot {
            self.slot = slot;
            self.sum_rows()?;
        }
        Ok(())
    }

    /// The attack-flow sums so far as rows.
    fn sum_rows(&mut self) -> Result<(), crate::sink::SinkError> {
        let sid = self.store.sid();
        for (_, r) in std::mem::take(&mut self.attack) {
            self.push(Msg::AttackFlows(Box::new(r), sid))?;
        }
        Ok(())
    }

    fn hand_over(&mut self) -> Result<(), crate::sink::SinkError> {
        let rows = std::mem::replace(&mut self.buf, Vec::with_capacity(SINK_BATCH));
        Ok(self.store.send(Msg::Batch(rows), self.block)?)
    }
}

impl<'a> StoreSink<'a> {
    /// Starts a capture session (`kind` "replay" or "live", `source` what it reads).
    pub fn new(
        store: &'a Store,
        kind: &str,
        source: &str,
        block: bool,
    ) -> Result<Self, StoreError> {
        match store.start_session(kind, source) {
            Ok(_) => {}
            // Live ingest goes on: the session is created once the database takes writes.
            Err(StoreError::Unavailable { .. }) if !block => {}
            Err(e) => return Err(e),
        }
        Ok(Self {
            store,
            block,
            buf: Vec::with_capacity(SINK_BATCH),
            attack: Default::default(),
            slot: 0,
        })
    }
}

impl crate::sink::Sink for StoreSink<'_> {
    fn wants_flows(&self) -> bool {
        true
    }
    fn wants_stats(&self) -> bool {
        true
    }
    fn flow(&mut self, rec: &FlowRecord, last_seen_ns: u64) -> Result<(), crate::sink::SinkError> {
        self.advance(last_seen_ns)?;
        let sid = self.store.sid();
        self.push(Msg::Flow(Box::new(rec.clone()), last_seen_ns, sid))
    }
    /// Summed into the alert's row of this protocol and time slot.
    fn attack_flow(
        &mut self,
        rec: &FlowRecord,
        last_seen_ns: u64,
        alert: u64,
    ) -> Result<(), crate::sink::SinkError> {
        self.advance(last_seen_ns)?;
        let slot = self.slot;
        let r = self
            .attack
            .entry((alert, rec.proto))
            .or_insert(AttackFlowRow {
                alert,
                ts: slot,
                proto: rec.proto,
                ..AttackFlowRow::default()
            });
        r.last_seen = r.last_seen.max(last_seen_ns);
        r.flows += 1;
        r.packets += rec.packets_fwd + rec.packets_rev;
        r.bytes += rec.bytes_fwd + rec.bytes_rev;
        Ok(())
    }
    fn alert_opened(
        &mut self,
        rec: &AlertRecord,
        last_seen_ns: u64,
    ) -> Result<(), crate::sink::SinkError> {
        // Rows of the same flows first, so the database never shows an alert before them.
        self.hand_over()?;
        Ok(self.store.alert(rec.clone(), last_seen_ns, self.block)?)
    }
    /// The same row as at open (upsert on the session's alert key), with the figures so far.
    fn alert_updated(
        &mut self,
        rec: &AlertRecord,
        last_seen_ns: u64,
    ) -> Result<(), crate::sink::SinkError> {
        self.hand_over()?;
        Ok(self.store.alert(rec.clone(), last_seen_ns, self.block)?)
    }
    /// The same row as at open (upsert on the session's alert key), now in its final state.
    fn alert_closed(
        &mut self,
        rec: &AlertRecord,
        last_seen_ns: u64,
    ) -> Result<(), crate::sink::SinkError> {
        self.alert_updated(rec, last_seen_ns)
    }
    fn anomaly(&mut self, a: &AnomalyRow) -> Result<(), crate::sink::SinkError> {
        self.push(Msg::Anomaly(Box::new(a.clone())))
    }
    fn stats(&mut self, s: &StatsRow) -> Result<(), crate::sink::SinkError> {
        self.push(Msg::Stats(*s))
    }
    /// Audit rows are never dropped: they wait for queue space even on the live path (they
    /// are rare, and an operator must be able to tell who blocked what).
    fn mitigation(&mut self, e: &MitigationEvent) -> Result<(), crate::sink::SinkError> {
        self.hand_over()?;
        let sid = self.store.sid();
        Ok(self
            .store
            .send(Msg::Mitigation(Box::new(e.clone()), sid), true)?)
    }
    fn tick(&mut self) -> Result<(), crate::sink::SinkError> {
        self.hand_over()
    }
    fn finish(&mut self, t: crate::sink::EndTotals) -> Result<(), crate::sink::SinkError> {
        self.sum_rows()?;
        self.hand_over()?;
        self.store.end_session(t.packets, t.flows)?;
        Ok(self.store.sync()?)
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt as _;

    use super::*;

    fn tmp(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("sensor-store-{}-{name}", std::process::id()));
        let _ignored = std::fs::remove_dir_all(&d);
        d.join("sensor.db")
    }

    #[test]
    fn creates_private_wal_database_and_migrates_once() {
        let p = tmp("create");
        drop(open_rw(&p).expect("create"));
        let mode = std::fs::metadata(&p).expect("exists").permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let c = open_rw(&p).expect("reopen");
        let v: i64 = c
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .expect("version");
        let wal: String = c
            .query_row("PRAGMA journal_mode", [], |r| r.get(0))
            .expect("mode");
        assert_eq!((v, wal.as_str()), (SCHEMA_VERSION, "wal"));
        c.pragma_update(None, "user_version", 99).expect("bump");
        drop(c);
        assert!(matches!(
            open_rw(&p),
            Err(StoreError::Newer { found: 99, .. })
        ));
        std::fs::remove_dir_all(p.parent().expect("dir")).ok();
    }

    /// Two databases in one data directory (two `sensor replay --db X` there) name their
    /// alerts' evidence files apart, and each keeps its name across opens.
    #[test]
    fn databases_sharing_a_directory_name_evidence_apart() {
        let a = tmp("prefix");
        let b = a.with_file_name("other.db");
        let sa = Store::open(&a, Retention::default()).expect("a");
        let sb = Store::open(&b, Retention::default()).expect("b");
        let (pa, pb) = (sa.evidence_prefix(), sb.evidence_prefix());
        assert_ne!(pa, pb);
        let file = crate::evidence::file_name(&pa, 1);
        assert!(crate::evidence::is_file_name(&file), "{file}");
        drop(sa);
        let again = Store::open(&a, Retention::default()).expect("a again");
        assert_eq!(again.evidence_prefix(), pa);
        drop((again, sb));
        std::fs::remove_dir_all(a.parent().expect("dir")).ok();
    }

    /// Scored flows are listed highest score first, paged by (score, id); unscored ones only
    /// in time order; `min_score` filters.
    #[test]
    fn flows_rank_by_score_with_cursor_pages() {
        use crate::sink::store::read::{Filter, Table, list};
        let p = tmp("score");
        {
            let s = Store::open(&p, Retention::default()).expect("open");
            let mut t = crate::flow::FlowTable::new(crate::flow::FlowConfig::default());
            let k = sensor_common::FlowKey {
                src_addr: std::net::Ipv4Addr::new(10, 0, 0, 1)
                    .to_ipv6_mapped()
                    .octets(),
                dst_addr: std::net::Ipv4Addr::new(10, 0, 0, 2)
                    .to_ipv6_mapped()
                    .octets(),
                src_port: 1000,
                dst_port: 80,
                proto: sensor_common::proto::UDP,
                family: sensor_common::family::IPV4,
                _pad: [0; 2],
            };
            let pk = crate::packet::Parsed {
                key: k,
                tcp_flags: 0,
                echo: false,
                fragment: false,
            };
            let mut flow = None;
            t.packet(&pk, 60, 1_000, &mut |_| {});
            t.flush(&mut |f| flow = Some(f));
            let base = FlowRecord::from(&flow.expect("one flow"));
            // Scores 0.10 .. 0.90 on ids 1..9 (0.5 twice), then one unscored.
            for (i, sc) in [0.1, 0.9, 0.5, 0.3, 0.5, 0.7, 0.2, 0.8, 0.6]
                .iter()
                .enumerate()
            {
                let r = FlowRecord {
                    score: Some(*sc),
                    anomalous: Some(*sc >= 0.6),
                    ..base.clone()
                };
                s.flow(r, 1_000 + i as u64, true).expect("flow");
            }
            s.flow(base.clone(), 2_000, true).expect("unscored");
            s.sync().expect("sync");
        }
        let c = open_rw(&p).expect("reopen");
        let page = |cursor: Option<i64>, cursor_score: Option<f64>| {
            list(
                &c,
                Table::Flows,
                &Filter {
                    limit: 4,
                    by_score: true,
                    cursor,
                    cursor_score,
                    ..Filter::default()
                },
            )
            .expect("list")
        };
        let scores = |v: &serde_json::Value| -> Vec<f64> {
            v["items"]
                .as_array()
                .expect("items")
                .iter()
                .map(|i| i["score"].as_f64().expect("score"))
                .collect()
        };
        let first = page(None, None);
        assert_eq!(scores(&first), [0.9, 0.8, 0.7, 0.6]);
        let cur = first["next_cursor"].as_str().expect("score cursor");
        let (s, id) = cur.split_once('_').expect("score_id");
        let second = page(id.parse().ok(), s.parse().ok());
        assert_eq!(scores(&second), [0.5, 0.5, 0.3, 0.2]);
        let all = list(
            &c,
            Table::Flows,
            &Filter {
                limit: 100,
                ..Filter::default()
            },
        )
        .expect("list");
        assert_eq!(
            all["items"].as_array().map(Vec::len),
            Some(10),
            "time order lists every flow"
        );
        let high = list(
            &c,
            Table::Flows,
            &Filter {
                limit: 100,
                min_score: Some(0.75),
                ..Filter::default()
            },
        )
        .expect("list");
        assert_eq!(scores(&high).len(), 2);
        std::fs::remove_dir_all(p.parent().expect("dir")).ok();
    }

    #[test]
    fn reopening_an_existing_database_keeps_its_rows() {
        let p = tmp("reopen");
        {
            let s = Store::open(&p, Retention::default()).expect("open");
            s.stats_row(
                StatsRow {
                    ts: 1,
                    seconds: 1,
                    packets: 5,
                    ..StatsRow::default()
                },
                true,
            )
            .expect("row");
            s.sync().expect("sync");
        }
        // A database at version 0 (e.g. an empty file someone created) is migrated too.
        let empty = p.with_file_name("empty.db");
        std::fs::write(&empty, b"").expect("empty file");
        let c = open_rw(&empty).expect("migrate empty");
        let tables: i64 = c
            .query_row(
                "SELECT count(*) FROM sqlite_master WHERE type = 'table'",
                [],
                |r| r.get(0),
            )
            .expect("tables");
        // flows, alerts, anomalies, statistics, capture_sessions, model_versions, mitigations,
        // attack_flows.
        assert_eq!(tables, 8);
        let c = open_rw(&p).expect("reopen");
        let n: i64 = c
            .query_row("SELECT sum(packets) FROM statistics", [], |r| r.get(0))
            .expect("sum");
        assert_eq!(n, 5);
        std::fs::remove_dir_all(p.parent().expect("dir")).ok();
    }

    #[test]
    fn a_version_1_database_with_data_is_migrated_to_the_current_schema() {
        let p = tmp("v1");
        std::fs::create_dir_all(p.parent().expect("dir")).expect("dir");
        {
            let c = Connection::open(&p).expect("create v1");
            c.execute_batch(MIGRATIONS[0]).expect("v1 schema");
            c.pragma_update(None, "user_version", 1).expect("version");
            c.execute(
                "INSERT INTO alerts (kind, severity, detector, first_seen, last_seen, count, record) VALUES ('port_scan', 'high', 'rule', 1, 2, 3, '{}')",
                [],
            )
            .expect("old alert");
        }
        let c = open_rw(&p).expect("migrate");
        let v: i64 = c
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .expect("version");
        let (n, key): (i64, Option<String>) = c
            .query_row("SELECT count(*), max(alert_key) FROM alerts", [], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })
            .expect("rows");
        assert_eq!(
            (v, n, key),
            (SCHEMA_VERSION, 1, None),
            "old rows kept, new column added"
        );
        std::fs::remove_dir_all(p.parent().expect("dir")).ok();
    }

    /// A database locked by another connection: rows wait in memory, the oldest statistics
    /// rows beyond the cap are dropped and counted; what is held lands once the lock goes.
    #[test]
    fn a_locked_database_holds_rows_sheds_the_oldest_and_recovers() {
        let p = tmp("locked");
        drop(open_rw(&p).expect("create"));
        let holder = Connection::open(&p).expect("other connection");
        holder.execute_batch("BEGIN EXCLUSIVE").expect("lock");
        let s = Store::start_with_cap(&p, Retention::default(), Some(open_rw(&p).expect("rw")), 10)
            .expect("store");
        let row = |i: u64| StatsRow {
            ts: i,
            seconds: 1,
            packets: i,
            ..StatsRow::default()
        };
        for i in 0..25 {
            s.stats_row(row(i), true).expect("queued");
        }
        let err = s.sync().expect_err("nothing commits while locked");
        assert!(
            matches!(&err, StoreError::Unavailable { reason, .. } if reason.contains("locked")),
            "{err}"
        );
        assert!(s.stats().failure().is_some());
        // The cap is applied at every retry: of the 30 rows, the oldest 20 are dropped.
        std::thread::sleep(Duration::from_millis(1500));
        for i in 25..30 {
            s.stats_row(row(i), true).expect("queued");
        }
        std::thread::sleep(Duration::from_millis(1500));
        assert_eq!(s.stats().dropped.load(Ordering::Relaxed), 20);
        holder.execute_batch("COMMIT").expect("unlock");
        let mut ok = false;
        for _ in 0..100 {
            if s.sync().is_ok() {
                ok = true;
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        assert!(ok, "writes resume once the lock is released");
        assert!(s.stats().failure().is_none());
        let (n, min): (i64, i64) = holder
            .query_row("SELECT count(*), min(ts) FROM statistics", [], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })
            .expect("rows");
        // The newest 10 kept, in order.
        assert_eq!((n, min), (10, 20));
        drop(s);
        std::fs::remove_dir_all(p.parent().expect("dir")).ok();
    }

    #[test]
    fn retention_deletes_by_age_and_by_count() {
        let p = tmp("retention");
        let c = open_rw(&p).expect("open");
        let day = 86_400 * 1_000_000_000i64;
        for i in 0..10i64 {
            c.execute(
                "INSERT INTO statistics (ts, seconds, packets, bytes, tcp, udp, icmp, other, flows) VALUES (?1, 1, 0, 0, 0, 0, 0, 0, 0)",
                [100 * day + i * day],
            )
            .expect("insert");
        }
        let now = (110 * day) as u64;
        // Age: 7 days keeps ts >= day 103 (7 rows); count: at most 5 rows.
        apply_retention(
            &c,
            Retention {
                max_age_days: 7,
                max_rows: 5,
            },
            now,
        )
        .expect("retention");
        let (n, min): (i64, i64) = c
            .query_row("SELECT count(*), min(ts) FROM statistics", [], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })
            .expect("q");
        assert_eq!((n, min / day), (5, 105));
        std::fs::remove_dir_all(p.parent().expect("dir")).ok();
    }
}
