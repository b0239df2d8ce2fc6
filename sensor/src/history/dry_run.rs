//! A dry run: the history of a time range through detectors built from the current rules and
//! from changed ones, side by side. Nothing of the live pipeline is touched: the detectors are
//! new, on their own threads, and read the segment files.
//!
//! Both sides start cold at the range's start (what an attack did before it is not known to
//! either), and judge with the rules only: model alerts depend on no rule and are left out.
//! The alerts the sensor did raise over the range are for the caller to add (the store has
//! them); comparing the two dry-run sides is what isolates the change.

use std::{collections::HashMap, net::IpAddr, path::Path, time::Instant};

use serde::Serialize;

use crate::{
    detect::{Detector, RuleConfig},
    geo::Geo,
    networks::Networks,
    record::{AlertKind, AlertRecord, AlertState, rfc3339_us},
};

use super::{
    HistoryError, Record,
    reader::{ReadStats, for_each, load},
};

/// Alerts listed per category at most (the totals count them all).
pub const MAX_LISTED: usize = 500;

/// An alert of one side: its times (for matching) and its record.
struct Found {
    first_ns: u64,
    last_ns: u64,
    rec: AlertRecord,
}

/// What one set of rules raises over the records of a range (merged alerts left out: their
/// incident stands for them).
fn judge(
    segs: &[Vec<u8>],
    from_ns: u64,
    to_ns: u64,
    rules: &RuleConfig,
    ctx: &Ctx,
) -> (ReadStats, Vec<Found>) {
    let build = || {
        Detector::new(rules.clone())
            .with_networks(ctx.networks.clone())
            .with_geo(ctx.geo.clone())
    };
    let mut d = build();
    let mut run = 0u32;
    let mut found: HashMap<(u32, u64), Found> = HashMap::new();
    let stats = for_each(segs, from_ns, to_ns, |r| match r {
        Record::Event(e) => d.on_event(e),
        Record::Flow(f) => {
            d.on_flow(&crate::flow::Flow::from_facts(f));
        }
        Record::Overflow { ts_ns, key, stats } => d.on_overflow(*ts_ns, key, stats),
        Record::Tick(t) => {
            d.tick(*t);
            d.settle();
            drain(&mut d, run, &mut found);
        }
        Record::Gap { .. } => {}
        Record::Settle => {
            d.settle();
            drain(&mut d, run, &mut found);
        }
        Record::End => {
            // The sensor stopped here: what it had open closed, and it started afresh.
            d.flush();
            drain(&mut d, run, &mut found);
            d = build();
            run += 1;
        }
    });
    d.flush();
    drain(&mut d, run, &mut found);
    let mut out: Vec<Found> = found
        .into_values()
        .filter(|f| f.rec.state != AlertState::Merged)
        .collect();
    out.sort_by_key(|f| (f.first_ns, f.rec.kind));
    (stats, out)
}

/// Every alert the detector opened, updated or closed since the last call, by run and id
/// (its latest figures win).
fn drain(d: &mut Detector, run: u32, found: &mut HashMap<(u32, u64), Found>) {
    let mut changed = d.book.take_opened();
    changed.extend(d.book.take_updated());
    changed.extend(d.book.take_closed());
    for a in changed {
        let rec = d.record(&a);
        found.insert(
            (run, a.id),
            Found {
                first_ns: a.first_seen_ns,
                last_ns: a.last_seen_ns,
                rec,
            },
        );
    }
    // Anomaly rows are the model's: none here, but the list must not grow.
    d.take_anomalies();
}

/// What the detectors of both sides share.
pub struct Ctx {
    pub networks: Networks,
    pub geo: Geo,
}

/// The result: what the change would raise that the current rules do not, what it would no
/// longer raise, and what both raise.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct DryRun {
    /// The range asked for, RFC 3339.
    pub from: String,
    pub to: String,
    /// What the history held for it (twice read: once per side).
    pub history: ReadStats,
    pub elapsed_ms: u64,
    /// Incidents each side raised.
    pub current_alerts: usize,
    pub candidate_alerts: usize,
    /// Raised by the changed rules only.
    pub would_raise: Vec<AlertRecord>,
    pub would_raise_total: usize,
    /// Raised by the current rules only.
    pub would_not_raise: Vec<AlertRecord>,
    pub would_not_raise_total: usize,
    /// Raised by both (the changed rules' figures).
    pub unchanged: Vec<AlertRecord>,
    pub unchanged_total: usize,
}

/// Runs the history of `[from_ns, to_ns]` in `dir` through `current` and `candidate`, one
/// thread each.
pub fn dry_run(
    dir: &Path,
    from_ns: u64,
    to_ns: u64,
    current: &RuleConfig,
    candidate: &RuleConfig,
    ctx: &Ctx,
) -> Result<DryRun, HistoryError> {
    if from_ns > to_ns {
        return Err(HistoryError::Range(
            "the range ends before it starts (from is after to)".into(),
        ));
    }
    let started = Instant::now();
    let segs = load(dir, from_ns, to_ns)?;
    let ((stats, now), (_, new)) = std::thread::scope(|s| {
        let cur = s.spawn(|| judge(&segs, from_ns, to_ns, current, ctx));
        let new = judge(&segs, from_ns, to_ns, candidate, ctx);
        (cur.join().expect("dry-run thread panicked"), new)
    });
    Ok(compare(
        from_ns,
        to_ns,
        stats,
        now,
        new,
        started.elapsed().as_millis() as u64,
    ))
}

/// Pairs each alert of the changed rules with one of the current rules of the same kind,
/// source and destination whose time overlaps it (a second of slack either way).
fn compare(
    from_ns: u64,
    to_ns: u64,
    history: ReadStats,
    current: Vec<Found>,
    candidate: Vec<Found>,
    elapsed_ms: u64,
) -> DryRun {
    const SLACK: u64 = 1_000_000_000;
    type Key = (AlertKind, Option<IpAddr>, Option<IpAddr>);
    let mut by_key: HashMap<Key, Vec<usize>> = HashMap::new();
    for (i, f) in current.iter().enumerate() {
        by_key
            .entry((f.rec.kind, f.rec.src_ip, f.rec.dst_ip))
            .or_default()
            .push(i);
    }
    let mut used = vec![false; current.len()];
    let (mut raise, mut same) = (Vec::new(), Vec::new());
    let (current_alerts, candidate_alerts) = (current.len(), candidate.len());
    for c in candidate {
        let hit = by_key
            .get(&(c.rec.kind, c.rec.src_ip, c.rec.dst_ip))
            .and_then(|idx| {
                idx.iter().copied().find(|&i| {
                    let p = &current[i];
                    !used[i]
                        && c.first_ns <= p.last_ns.saturating_add(SLACK)
                        && p.first_ns <= c.last_ns.saturating_add(SLACK)
                })
            });
        match hit {
            Some(i) => {
                used[i] = true;
                same.push(c.rec);
            }
            None => raise.push(c.rec),
        }
    }
    let gone: Vec<AlertRecord> = current
        .into_iter()
        .zip(used)
        .filter(|(_, u)| !u)
        .map(|(f, _)| f.rec)
        .collect();
    let cap = |mut v: Vec<AlertRecord>| {
        let n = v.len();
        v.truncate(MAX_LISTED);
        (v, n)
    };
    let (would_raise, would_raise_total) = cap(raise);
    let (would_not_raise, would_not_raise_total) = cap(gone);
    let (unchanged, unchanged_total) = cap(same);
    DryRun {
        from: rfc3339_us(from_ns),
        to: rfc3339_us(to_ns),
        history,
        elapsed_ms,
        current_alerts,
        candidate_alerts,
        would_raise,
        would_raise_total,
        would_not_raise,
        would_not_raise_total,
        unchanged,
        unchanged_total,
    }
}

/// The alerts one set of rules raises over the range (for tests and `sensor dry-run --json`).
pub fn alerts(
    dir: &Path,
    from_ns: u64,
    to_ns: u64,
    rules: &RuleConfig,
    ctx: &Ctx,
) -> Result<(ReadStats, Vec<AlertRecord>), HistoryError> {
    let segs = load(dir, from_ns, to_ns)?;
    let (st, found) = judge(&segs, from_ns, to_ns, rules, ctx);
    Ok((st, found.into_iter().map(|f| f.rec).collect()))
}
