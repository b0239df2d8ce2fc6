//! The writer thread: owns the write connection, commits what queued in one transaction,
//! holds rows in memory while the database fails and retries with backoff, checkpoints the
//! WAL and applies retention.

use std::{
    path::{Path, PathBuf},
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicI64, Ordering},
        mpsc,
    },
    time::{Duration, Instant},
};

use rusqlite::{Connection, params};

use super::{
    BATCH_ROWS, BATCH_TIME, Msg, PRIORITY_POLL, RETENTION_EVERY, RETRY_MAX, Retention, StoreError,
    WriterStats, open_rw,
};
use crate::report::Report;

pub(super) fn now_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

/// The writer thread's state.
pub(super) struct Writer {
    /// `None` until the database opens (it could not at start).
    pub(super) conn: Option<Connection>,
    pub(super) path: PathBuf,
    pub(super) st: Arc<WriterStats>,
    pub(super) retention: Retention,
    /// The store's current session, shared with its handle.
    pub(super) session: Arc<AtomicI64>,
    /// The session rows without one are filed under (set when its start is committed).
    pub(super) current: i64,
    /// Rows in arrival order: the next batch, or what failed and is retried.
    pub(super) pending: Vec<Msg>,
    /// Taken from the priority lane, committed before `pending`.
    pub(super) priority: Vec<Msg>,
    /// Flows, anomalies and statistics in `pending` (what may be dropped under pressure).
    pub(super) droppable: usize,
    /// At most this many of those are held ([`PENDING_ROWS`]; smaller in tests).
    pub(super) cap: usize,
    /// When the current failure began.
    pub(super) failing: Option<Instant>,
    pub(super) next_try: Instant,
    pub(super) backoff: Duration,
    /// Set by the WAL copier after a passive copy: time to truncate.
    pub(super) copied: Arc<AtomicBool>,
    /// The copier's period ([`super::CHECKPOINT_EVERY`]; shorter in tests).
    pub(super) checkpoint_every: Duration,
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

    /// Takes what waits on the priority lane; whether there was anything.
    fn take_priority(&mut self, priority: &mpsc::Receiver<Msg>) -> bool {
        let before = self.priority.len();
        self.priority.extend(priority.try_iter());
        self.priority.len() > before
    }

    /// Commits the priority rows ahead of the others. While the database fails they join the
    /// held rows in arrival order: those may hold the session they belong to, which must be
    /// written first. Returns whether a commit was tried now and failed.
    fn commit_priority(&mut self) -> bool {
        if self.priority.is_empty() {
            return false;
        }
        let first = std::mem::take(&mut self.priority);
        if self.failing.is_some() {
            self.pending.extend(first);
            return false;
        }
        let rest = std::mem::replace(&mut self.pending, first);
        let droppable = std::mem::take(&mut self.droppable);
        self.attempt();
        // On failure `attempt` kept the priority rows (none of them droppable) in `pending`.
        self.pending.extend(rest);
        self.droppable += droppable;
        self.failing.is_some()
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

    pub(super) fn run(mut self, rx: mpsc::Receiver<Msg>, priority: mpsc::Receiver<Msg>) {
        let mut last_retention = Instant::now();
        let mut last_checkpoint = Instant::now();
        let mut closed = false;
        while !closed {
            // A message someone waits for (a session's id, a sync) is committed at once, the
            // first of a batch included (it used to wait out the batch time: 100 ms on every
            // replay's start); so is an alert or an audit row.
            let mut urgent = self.take_priority(&priority);
            while self.pending.is_empty() && !urgent {
                match rx.recv_timeout(PRIORITY_POLL) {
                    Ok(m) => urgent = self.add(m),
                    Err(mpsc::RecvTimeoutError::Timeout) => urgent = self.take_priority(&priority),
                    Err(mpsc::RecvTimeoutError::Disconnected) => {
                        closed = true;
                        break;
                    }
                }
            }
            // Gather: for the batch time while healthy (at once if someone waits), until the
            // next retry while failing.
            let deadline = if self.failing.is_some() {
                self.next_try
            } else {
                Instant::now() + BATCH_TIME
            };
            while !closed
                && (self.failing.is_some() || (self.pending.len() < BATCH_ROWS && !urgent))
            {
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    break;
                }
                match rx.recv_timeout(left.min(PRIORITY_POLL)) {
                    Ok(m) => urgent |= self.add(m),
                    Err(mpsc::RecvTimeoutError::Timeout) => {}
                    Err(mpsc::RecvTimeoutError::Disconnected) => {
                        closed = true;
                        break;
                    }
                }
                urgent |= self.take_priority(&priority) && self.failing.is_none();
            }
            self.take_priority(&priority);
            self.shed();
            if !self.commit_priority() {
                self.attempt();
            }
            // Truncate right after the copier's passive copy (little is left to copy then), or
            // now and then on our own if it cannot copy.
            if self.failing.is_none()
                && (self.copied.swap(false, Ordering::Relaxed)
                    || last_checkpoint.elapsed() >= 3 * self.checkpoint_every)
            {
                last_checkpoint = Instant::now();
                if let Some(c) = &self.conn {
                    let started = Instant::now();
                    checkpoint(c, &self.path);
                    self.st
                        .checkpoint_max_us
                        .fetch_max(started.elapsed().as_micros() as u64, Ordering::Relaxed);
                }
            }
            if self.failing.is_none() && last_retention.elapsed() >= RETENTION_EVERY {
                last_retention = Instant::now();
                if let Some(c) = &self.conn
                    && let Err(e) = apply_retention(c, self.retention, now_ns())
                {
                    tracing::warn!(error = %Report(&e), "retention cleanup failed");
                }
            }
        }
        self.take_priority(&priority);
        self.commit_priority();
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
                Err(e) => Err(Report(&e).to_string()),
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
                Msg::RuleChange(c, sid) => {
                    let sid = file(*sid, *session);
                    tx.prepare_cached(
                        "INSERT INTO rule_changes (ts, actor, remote, changes, before, after, file, session_id)
                         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                    )?
                    .execute(params![
                        c.ts_ns as i64,
                        c.actor,
                        c.remote,
                        serde_json::to_string(&c.changes).unwrap_or_default(),
                        c.before,
                        c.after,
                        c.file,
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
        Err(e) => tracing::warn!(error = %Report(&e), "WAL checkpoint failed"),
    }
}

/// The WAL copier's thread: every `every` ([`super::CHECKPOINT_EVERY`]) a passive checkpoint on a connection of
/// its own copies what the WAL holds into the database beside the writer (it waits for
/// nobody, and nobody waits for it), then tells the writer to truncate. Under a flood the copy
/// is hundreds of MB; done by the writer it held every row and alert behind it for seconds.
pub(super) fn copy_wal(db: &Path, every: Duration, copied: &AtomicBool, stop: &mpsc::Receiver<()>) {
    let mut conn: Option<Connection> = None;
    while let Err(mpsc::RecvTimeoutError::Timeout) = stop.recv_timeout(every) {
        if conn.is_none() {
            // Never creates the file nor migrates it: that is the writer's.
            conn = Connection::open_with_flags(
                db,
                rusqlite::OpenFlags::SQLITE_OPEN_READ_WRITE
                    | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
            )
            .ok();
        }
        let Some(c) = &conn else { continue };
        match c.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| r.get::<_, i64>(0)) {
            Ok(_) => copied.store(true, Ordering::Relaxed),
            Err(e) => {
                tracing::debug!(error = %Report(&e), "passive WAL copy failed; retried later");
                conn = None;
            }
        }
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
