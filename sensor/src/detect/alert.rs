//! Alert bookkeeping: turns a rule firing thousands of times into one open alert that is
//! updated, then closed after a quiet period. The alert's output form (kinds, severities,
//! [`AlertRecord`]) is in [`crate::record`], shared with the store and the API.

use std::net::IpAddr;

use crate::detect::FastMap;

pub use crate::detect::evidence::Evidence;
use crate::record::rfc3339_us;
pub use crate::record::{AlertKind, AlertRecord, AlertState, DetectorKind, Severity};

/// One alert, as stored and as written (`first_seen`/`last_seen` in RFC 3339 on output).
#[derive(Clone, Debug, PartialEq)]
pub struct Alert {
    pub id: u64,
    pub state: AlertState,
    /// The incident this alert was folded into (state `Merged`).
    pub merged_into: Option<u64>,
    pub kind: AlertKind,
    pub severity: Severity,
    pub detector: DetectorKind,
    /// `None` when many sources are involved.
    pub src_ip: Option<IpAddr>,
    /// `None` when many destinations are involved.
    pub dst_ip: Option<IpAddr>,
    pub first_seen_ns: u64,
    pub last_seen_ns: u64,
    /// Times the detector fired while the alert was open.
    pub count: u64,
    /// Anomaly score (ml only).
    pub score: Option<f64>,
    /// Highest rate seen (packets/s or probes/s, per kind).
    pub peak_rate: f64,
    pub evidence: Evidence,
    /// Model anomalies this (rule) alert already explains: the flows of a flood or a scan
    /// the model also found odd, attached here instead of raising alerts of their own.
    pub model_anomalies: u64,
    /// Highest model score among them.
    pub model_max_score: f64,
    /// The rate of its latest firing, and the rate over time while it was open: one point
    /// (data time, rate) per update, halved when full (see [`HISTORY_POINTS`]).
    pub last_rate: f64,
    pub history: Vec<(u64, f64)>,
}

/// Points of an alert's rate history kept at most: every other one is dropped when it fills,
/// so a long attack keeps its whole span at a coarser step (and its record stays small).
pub const HISTORY_POINTS: usize = 120;

impl Alert {
    fn record_rate(&mut self, ts_ns: u64) {
        if self.history.len() >= HISTORY_POINTS {
            let mut i = 0;
            self.history.retain(|_| {
                i += 1;
                i % 2 == 1
            });
        }
        self.history.push((ts_ns, self.last_rate));
    }
}

/// The kinds that are attack verdicts about endpoints: what a model anomaly attaches to, and
/// what makes a traffic spike already explained.
pub const ATTACK_KINDS: [AlertKind; 7] = [
    AlertKind::PortScan,
    AlertKind::BruteForce,
    AlertKind::HostSweep,
    AlertKind::SynFlood,
    AlertKind::UdpFlood,
    AlertKind::IcmpFlood,
    AlertKind::Ddos,
];

impl From<&Alert> for AlertRecord {
    fn from(a: &Alert) -> Self {
        let mut evidence = a.evidence.json();
        if let serde_json::Value::Object(m) = &mut evidence {
            m.insert(
                "peak_rate".into(),
                serde_json::json!((a.peak_rate * 10.0).round() / 10.0),
            );
            if a.model_anomalies > 0 {
                m.insert("model_anomalies".into(), a.model_anomalies.into());
                m.insert(
                    "model_max_score".into(),
                    serde_json::json!((a.model_max_score * 10_000.0).round() / 10_000.0),
                );
            }
        }
        Self {
            id: a.id,
            state: a.state,
            merged_into: a.merged_into,
            kind: a.kind,
            severity: a.severity,
            detector: a.detector,
            src_ip: a.src_ip,
            dst_ip: a.dst_ip,
            first_seen: rfc3339_us(a.first_seen_ns),
            last_seen: rfc3339_us(a.last_seen_ns),
            count: a.count,
            score: a.score,
            summary: crate::detect::evidence::summary(a),
            evidence,
            rate_history: a
                .history
                .iter()
                .map(|&(ts, r)| (ts / 1_000_000, (r * 10.0).round() / 10.0))
                .collect(),
            pcap: None,
            direction: None,
            hostgroup: None,
            remote: None,
        }
    }
}

/// What a detector reports each time its condition holds.
#[derive(Clone, Debug)]
pub struct Firing {
    pub kind: AlertKind,
    pub detector: DetectorKind,
    pub src_ip: Option<IpAddr>,
    pub dst_ip: Option<IpAddr>,
    pub ts_ns: u64,
    pub severity: Severity,
    pub rate: f64,
    pub score: Option<f64>,
    pub evidence: Evidence,
}

type AlertKey = (AlertKind, Option<IpAddr>, Option<IpAddr>);

/// The kinds that are a rate into one victim.
const FLOOD_KINDS: [AlertKind; 4] = [
    AlertKind::SynFlood,
    AlertKind::UdpFlood,
    AlertKind::IcmpFlood,
    AlertKind::Ddos,
];

fn is_flood(k: AlertKind) -> bool {
    FLOOD_KINDS.contains(&k)
}

/// Whether an open incident `i` already reports what a firing `f` says, so that the firing
/// counts into it instead of opening an alert of its own: a flood into a victim that a
/// broader flood incident about the same victim covers (the same kind, or a DDoS, from every
/// source or from this one), or a port scan by a source that is flooding that very host (a
/// flood to random ports reaches many ports; it is one attack, not also a scan), when the
/// scan's protocol is the flood's (a TCP scan beside a UDP flood is two attacks).
fn covers(
    i: &Alert,
    kind: AlertKind,
    src: Option<IpAddr>,
    dst: Option<IpAddr>,
    ev: &Evidence,
) -> bool {
    if dst.is_none() || i.dst_ip != dst || !is_flood(i.kind) {
        return false;
    }
    if is_flood(kind) {
        return (i.kind == kind || i.kind == AlertKind::Ddos)
            && (i.src_ip.is_none() || i.src_ip == src);
    }
    let same_proto = match (i.evidence.proto(), ev.proto()) {
        (Some(a), Some(b)) => a == b,
        // A DDoS of every protocol, or a slow scan (its probes of either protocol).
        _ => true,
    };
    kind == AlertKind::PortScan && src.is_some() && i.src_ip == src && same_proto
}

/// Whether the model alert `m` is about the attack `a` reports: from its attacker (toward its
/// victim, or anywhere for a sweep), or into its victim when neither names a source.
fn same_attack(a: &Alert, m: &Alert) -> bool {
    match a.src_ip {
        Some(s) => {
            m.src_ip == Some(s)
                && (a.dst_ip.is_none() || m.dst_ip.is_none() || m.dst_ip == a.dst_ip)
        }
        None => a.dst_ip.is_some() && m.src_ip.is_none() && m.dst_ip == a.dst_ip,
    }
}

/// Whether a flow `src` -> `dst` is part of the attack alert `a` reports: into its victim, from
/// its attacker, or a target's answer back to the attacker (a scanned host's RSTs can make a
/// flow of their own that runs victim -> attacker).
fn about_attack(a: &Alert, src: IpAddr, dst: IpAddr) -> bool {
    ATTACK_KINDS.contains(&a.kind)
        && (a.dst_ip == Some(dst)
            || a.src_ip == Some(src)
            || (a.src_ip == Some(dst) && a.dst_ip.is_none_or(|v| v == src)))
}

/// Data time a traffic spike waits before it is raised: an attack rule that judges over a
/// window (a flood's rate, a scan's distinct ports) may confirm the attack behind it in the
/// meantime, and then the spike is that attack's, not an alert of its own.
pub const SPIKE_HOLD_NS: u64 = 3_000_000_000;

/// Small flows of an attack alert (see [`AlertBook::attack_flow`]) that get a stored row of
/// their own; the rest are summed into the alert's attack-flow rows.
pub const ATTACK_FLOW_ROWS: u64 = 1_000;
/// A flow of at most this many packets (both directions) is "small": a probe, a flood packet
/// and its answer, a handshake that went nowhere. Its row says nothing a count does not.
pub const SMALL_FLOW_PACKETS: u64 = 4;
/// How long a closed attack alert still claims the flows that began while it was open: they
/// finish up to a flow idle timeout (120 s by default) after their last packet.
const CLAIM_AFTER_CLOSE_NS: u64 = 600 * 1_000_000_000;
/// Attack alerts whose flows are tracked at most (open and recently closed).
const MAX_TRACKED: usize = 8_192;

/// An attack alert whose flows are being counted.
struct Tracked {
    /// Who the flows are matched by: the alert's source, or its victim when it has none.
    by: Endpoint,
    /// The alert's victim (none for a sweep).
    victim: Option<IpAddr>,
    last_seen_ns: u64,
    /// Data time it closed (0 while open).
    closed_ns: u64,
    /// Small flows of it stored as rows so far.
    rows: u64,
}

#[derive(Clone, Copy, PartialEq, Eq, Hash)]
enum Endpoint {
    Src(IpAddr),
    Dst(IpAddr),
}

/// Open alerts, keyed by kind and endpoints.
pub struct AlertBook {
    open: FastMap<AlertKey, Alert>,
    next_id: u64,
    quiet_ns: u64,
    /// Most alerts open at once: state stays bounded whatever the traffic.
    max_open: usize,
    /// Firings that would have opened an alert while `max_open` were open.
    pub suppressed: u64,
    /// Alerts opened since the last `take_opened` (live consumers push these at once).
    opened: Vec<Alert>,
    /// Alerts closed (quiet) or flushed, in closing order.
    closed: Vec<Alert>,
    /// Attack alerts by id, for summing their small flows.
    tracked: FastMap<u64, Tracked>,
    /// The newest tracked alert per endpoint.
    claims: FastMap<Endpoint, u64>,
    /// Open alerts whose figures changed since their last update went out.
    dirty: FastMap<AlertKey, ()>,
    /// Updates of open alerts, at most one per alert and data second ([`AlertBook::take_updated`]).
    updated: Vec<Alert>,
    /// Per endpoint of an attack alert, the data time its attacks began and were last seen:
    /// a spike of that host within an attack (and its quiet period) is part of it.
    attacked: FastMap<IpAddr, (u64, u64)>,
    /// Alerts merged into a larger incident so far.
    pub merged: u64,
}

impl AlertBook {
    pub fn new(quiet_ns: u64, max_open: usize) -> Self {
        Self {
            open: FastMap::default(),
            next_id: 1,
            quiet_ns,
            max_open: max_open.max(1),
            suppressed: 0,
            opened: Vec::new(),
            closed: Vec::new(),
            tracked: FastMap::default(),
            claims: FastMap::default(),
            dirty: FastMap::default(),
            updated: Vec::new(),
            attacked: FastMap::default(),
            merged: 0,
        }
    }

    /// Alerts close after this long without firing from now on (open ones stay open).
    pub fn set_quiet(&mut self, quiet_ns: u64) {
        self.quiet_ns = quiet_ns;
    }

    /// Whether `ip` was an endpoint of an attack alert at data time `ts_ns`: between
    /// [`SPIKE_HOLD_NS`] before the attack's first firing and the quiet period after its last.
    pub fn attacked_at(&self, ip: IpAddr, ts_ns: u64) -> bool {
        self.attacked.get(&ip).is_some_and(|&(first, last)| {
            ts_ns.saturating_add(SPIKE_HOLD_NS) >= first
                && ts_ns <= last.saturating_add(self.quiet_ns)
        })
    }

    fn note_attack(&mut self, kind: AlertKind, src: Option<IpAddr>, dst: Option<IpAddr>, ts: u64) {
        if !ATTACK_KINDS.contains(&kind) {
            return;
        }
        for ip in [src, dst].into_iter().flatten() {
            let e = self.attacked.entry(ip).or_insert((ts, ts));
            e.0 = e.0.min(ts);
            e.1 = e.1.max(ts);
        }
    }

    /// The open incident a firing counts into: its own key, or one that covers it.
    fn incident_for(&self, key: &AlertKey, f: &Firing) -> Option<AlertKey> {
        if self.open.contains_key(key) {
            return Some(*key);
        }
        if !is_flood(f.kind) && f.kind != AlertKind::PortScan {
            return None;
        }
        self.open
            .iter()
            .find(|(_, i)| covers(i, f.kind, f.src_ip, f.dst_ip, &f.evidence))
            .map(|(k, _)| *k)
    }

    /// Open alerts a newly opened incident `a` takes over: narrower floods into its victim, a
    /// scan of that victim by its flooding source, traffic spikes of its endpoints, and model
    /// alerts about its attacker (and victim): the model saw the attack's first flows before
    /// the rule's count was reached.
    fn subsumed_by(&self, a: &Alert) -> Vec<AlertKey> {
        if !ATTACK_KINDS.contains(&a.kind) {
            return Vec::new();
        }
        let ends = [a.src_ip, a.dst_ip];
        let mut keys: Vec<(u64, AlertKey)> = self
            .open
            .iter()
            .filter(|(_, j)| j.id != a.id)
            .filter(|(_, j)| {
                (j.kind == AlertKind::TrafficSpike
                    && ends
                        .iter()
                        .flatten()
                        .any(|e| j.src_ip == Some(*e) || j.dst_ip == Some(*e)))
                    || (is_flood(a.kind) && covers(a, j.kind, j.src_ip, j.dst_ip, &j.evidence))
                    || (j.kind == AlertKind::MlAnomaly && same_attack(a, j))
            })
            .map(|(k, j)| (j.id, *k))
            .collect();
        keys.sort_unstable();
        keys.into_iter().map(|(_, k)| k).collect()
    }

    /// Folds the open alerts under `keys` into the incident under `into`: its counts grow by
    /// theirs, they close as merged (every output hears of it, and what acted on them stops).
    fn merge(&mut self, into: AlertKey, keys: Vec<AlertKey>) {
        for k in keys {
            let Some(mut j) = self.open.remove(&k) else {
                continue;
            };
            self.dirty.remove(&k);
            let Some(i) = self.open.get_mut(&into) else {
                self.open.insert(k, j);
                return;
            };
            i.count += j.count;
            i.first_seen_ns = i.first_seen_ns.min(j.first_seen_ns);
            i.last_seen_ns = i.last_seen_ns.max(j.last_seen_ns);
            i.severity = i.severity.max(j.severity);
            i.model_anomalies += j.model_anomalies;
            i.model_max_score = i.model_max_score.max(j.model_max_score);
            j.state = AlertState::Merged;
            j.merged_into = Some(i.id);
            self.dirty.insert(into, ());
            self.merged += 1;
            self.untrack(j.id, j.last_seen_ns, j.last_seen_ns);
            self.closed.push(j);
        }
    }

    /// Open alerts whose figures changed since their last update, taken once per data second
    /// by [`AlertBook::close_quiet`]: the store, the API and the dashboard follow an attack
    /// while it runs.
    pub fn take_updated(&mut self) -> Vec<Alert> {
        std::mem::take(&mut self.updated)
    }

    /// The attack alert a finished flow `src` -> `dst` that began at `first_seen_ns` belongs
    /// to: one from its source (a scan, a sweep, a single-source flood) or, for an alert whose
    /// sources are many or forged, into its victim; open, or closed recently with the flow
    /// begun while it was open. `Some(id)` once that alert has stored [`ATTACK_FLOW_ROWS`]
    /// small flows (this one is to be summed into it), `None` when the flow gets its own row.
    pub fn attack_flow(&mut self, src: IpAddr, dst: IpAddr, first_seen_ns: u64) -> Option<u64> {
        let id = [Endpoint::Src(src), Endpoint::Dst(dst)]
            .iter()
            .filter_map(|e| self.claims.get(e).copied())
            .find(|id| {
                self.tracked
                    .get(id)
                    .is_some_and(|t| t.closed_ns == 0 || first_seen_ns <= t.last_seen_ns)
            })?;
        let t = self.tracked.get_mut(&id)?;
        if t.rows < ATTACK_FLOW_ROWS {
            t.rows += 1;
            return None;
        }
        Some(id)
    }

    /// Whether a flow `src` -> `dst` begun at `first_seen_ns` belongs to an attack alert that
    /// has closed since (its flows finish up to an idle timeout after its last packet): the
    /// model's verdict on it is evidence of that attack, not a new alert.
    pub fn closed_attack_claims(&self, src: IpAddr, dst: IpAddr, first_seen_ns: u64) -> bool {
        let closed = |t: &&Tracked| t.closed_ns != 0 && first_seen_ns <= t.last_seen_ns;
        let direct = [Endpoint::Src(src), Endpoint::Dst(dst)]
            .iter()
            .filter_map(|e| self.claims.get(e))
            .filter_map(|id| self.tracked.get(id))
            .any(|t| closed(&t));
        // A target's answer back to the attacker (see `about_attack`).
        let answer = self
            .claims
            .get(&Endpoint::Src(dst))
            .and_then(|id| self.tracked.get(id))
            .is_some_and(|t| closed(&t) && t.victim.is_none_or(|v| v == src));
        direct || answer
    }

    /// Starts counting the flows of a newly opened attack alert.
    fn track(&mut self, a: &Alert) {
        if !ATTACK_KINDS.contains(&a.kind) {
            return;
        }
        let by = match (a.src_ip, a.dst_ip) {
            (Some(s), _) => Endpoint::Src(s),
            (None, Some(d)) => Endpoint::Dst(d),
            (None, None) => return,
        };
        if self.tracked.len() >= MAX_TRACKED {
            // Room by forgetting the oldest closed alerts (open ones always stay).
            let excess = self.tracked.len() - MAX_TRACKED / 2;
            let oldest = self.closed_before(u64::MAX);
            self.forget(oldest.into_iter().take(excess).map(|(_, id)| id));
        }
        self.tracked.insert(
            a.id,
            Tracked {
                by,
                victim: a.dst_ip,
                last_seen_ns: a.last_seen_ns,
                closed_ns: 0,
                rows: 0,
            },
        );
        self.claims.insert(by, a.id);
    }

    /// A tracked alert closed at `now_ns` with its last firing at `last_seen_ns`.
    fn untrack(&mut self, id: u64, last_seen_ns: u64, now_ns: u64) {
        if let Some(t) = self.tracked.get_mut(&id) {
            t.last_seen_ns = last_seen_ns;
            t.closed_ns = now_ns.max(1);
        }
    }

    /// Closed alerts (close time, id) that closed before `before_ns`, oldest first.
    fn closed_before(&self, before_ns: u64) -> Vec<(u64, u64)> {
        let mut done: Vec<(u64, u64)> = self
            .tracked
            .iter()
            .filter(|(_, t)| t.closed_ns != 0 && t.closed_ns < before_ns)
            .map(|(id, t)| (t.closed_ns, *id))
            .collect();
        done.sort_unstable();
        done
    }

    /// Stops tracking these alerts; an endpoint's claim goes with its newest alert.
    fn forget(&mut self, ids: impl IntoIterator<Item = u64>) {
        for id in ids {
            if let Some(t) = self.tracked.remove(&id)
                && self.claims.get(&t.by) == Some(&id)
            {
                self.claims.remove(&t.by);
            }
        }
    }

    pub fn fire(&mut self, f: Firing) {
        // Model anomalies aggregate per source: a sweep's 250 odd flows are one alert, whose
        // destination becomes null once it spans several. A firing without a source is keyed
        // by its destination (many or forged sources at one victim), or by neither (the
        // budget's summary alert).
        let key = if f.kind == AlertKind::MlAnomaly {
            (
                f.kind,
                f.src_ip,
                if f.src_ip.is_some() { None } else { f.dst_ip },
            )
        } else {
            (f.kind, f.src_ip, f.dst_ip)
        };
        self.note_attack(f.kind, f.src_ip, f.dst_ip, f.ts_ns);
        let full = self.open.len() >= self.max_open;
        let incident = self.incident_for(&key, &f);
        match incident.and_then(|k| self.open.get_mut(&k).map(|a| (k, a))) {
            Some((k, a)) => {
                let own = k == key;
                if own && a.dst_ip != f.dst_ip {
                    a.dst_ip = None;
                }
                a.last_seen_ns = a.last_seen_ns.max(f.ts_ns);
                a.count += 1;
                a.severity = a.severity.max(f.severity);
                if own {
                    a.last_rate = f.rate;
                }
                // A covering incident keeps its own evidence (a broader view of the attack).
                if own && f.rate >= a.peak_rate {
                    a.peak_rate = f.rate;
                    a.evidence = f.evidence;
                }
                if let (Some(s), Some(prev)) = (f.score, a.score) {
                    a.score = Some(s.max(prev));
                }
                self.dirty.insert(k, ());
            }
            None if full => self.suppressed += 1,
            None => {
                let a = Alert {
                    id: self.next_id,
                    state: AlertState::Open,
                    merged_into: None,
                    kind: f.kind,
                    severity: f.severity,
                    detector: f.detector,
                    src_ip: f.src_ip,
                    dst_ip: f.dst_ip,
                    first_seen_ns: f.ts_ns,
                    last_seen_ns: f.ts_ns,
                    count: 1,
                    score: f.score,
                    peak_rate: f.rate,
                    evidence: f.evidence,
                    model_anomalies: 0,
                    model_max_score: 0.0,
                    last_rate: f.rate,
                    history: vec![(f.ts_ns, f.rate)],
                };
                self.next_id += 1;
                self.track(&a);
                let taken = self.subsumed_by(&a);
                self.opened.push(a.clone());
                self.open.insert(key, a);
                self.merge(key, taken);
                // The opening record goes out as it is; what the merge added is its first update.
            }
        }
    }

    /// The peak rate of the open alert under this key (`MlAnomaly` keys have no destination),
    /// whose evidence a firing replaces only by reaching it.
    pub fn peak_rate(
        &self,
        kind: AlertKind,
        src: Option<IpAddr>,
        dst: Option<IpAddr>,
    ) -> Option<f64> {
        self.open.get(&(kind, src, dst)).map(|a| a.peak_rate)
    }

    /// Attaches a model anomaly of a flow `src` -> `dst` to an open rule alert about the same
    /// attack (the flood into `dst`, the scan by `src`); false when none is open.
    pub fn attach_model(&mut self, src: IpAddr, dst: IpAddr, score: f64) -> bool {
        let Some((k, a)) = self
            .open
            .iter_mut()
            .find(|(_, a)| about_attack(a, src, dst))
        else {
            return false;
        };
        a.model_anomalies += 1;
        a.model_max_score = a.model_max_score.max(score);
        self.dirty.insert(*k, ());
        true
    }

    /// Model anomalies attached so far to the open rule alert `attach_model` would attach an
    /// anomaly of `src` -> `dst` to; `None` when no such alert is open.
    pub fn attached_model(&self, src: IpAddr, dst: IpAddr) -> Option<u64> {
        self.open
            .values()
            .find(|a| about_attack(a, src, dst))
            .map(|a| a.model_anomalies)
    }

    /// Whether an alert of `kind` between exactly these endpoints is open.
    pub fn is_open(&self, kind: AlertKind, src: Option<IpAddr>, dst: Option<IpAddr>) -> bool {
        self.open.contains_key(&(kind, src, dst))
    }

    /// Closes the open alert under this key now (what it reported is over: a BGP session back
    /// up), without waiting for the quiet period.
    pub fn close(
        &mut self,
        kind: AlertKind,
        src: Option<IpAddr>,
        dst: Option<IpAddr>,
        now_ns: u64,
    ) {
        let k = (kind, src, dst);
        self.dirty.remove(&k);
        if let Some(mut a) = self.open.remove(&k) {
            a.last_seen_ns = a.last_seen_ns.max(now_ns);
            self.untrack(a.id, a.last_seen_ns, now_ns);
            a.state = AlertState::Closed;
            self.closed.push(a);
        }
    }

    /// Closes alerts quiet for the configured period as of `now_ns`.
    pub fn close_quiet(&mut self, now_ns: u64) {
        let quiet = self.quiet_ns;
        let done: Vec<AlertKey> = self
            .open
            .iter()
            .filter(|(_, a)| now_ns.saturating_sub(a.last_seen_ns) >= quiet)
            .map(|(k, _)| *k)
            .collect();
        for k in done {
            self.dirty.remove(&k);
            if let Some(mut a) = self.open.remove(&k) {
                self.untrack(a.id, a.last_seen_ns, now_ns);
                a.state = AlertState::Closed;
                self.closed.push(a);
            }
        }
        let expired = self.closed_before(now_ns.saturating_sub(CLAIM_AFTER_CLOSE_NS));
        self.forget(expired.into_iter().map(|(_, id)| id));
        // Changed open alerts go out as updates (once per data second: this runs once a second),
        // each with a point of its rate history.
        let keys: Vec<AlertKey> = self.dirty.drain().map(|(k, ())| k).collect();
        let mut changed: Vec<Alert> = keys
            .iter()
            .filter_map(|k| {
                let a = self.open.get_mut(k)?;
                a.record_rate(a.last_seen_ns);
                Some(a.clone())
            })
            .collect();
        changed.sort_unstable_by_key(|a| a.id);
        self.updated.extend(changed);
        let keep = self.quiet_ns.saturating_add(SPIKE_HOLD_NS);
        self.attacked
            .retain(|_, (_, last)| now_ns.saturating_sub(*last) <= keep);
        crate::detect::shrink(&mut self.attacked);
    }

    /// Closes everything (end of a replay, shutdown).
    pub fn flush(&mut self) {
        let mut all: Vec<Alert> = self.open.drain().map(|(_, a)| a).collect();
        all.sort_by_key(|a| a.id);
        self.dirty.clear();
        for a in &mut all {
            self.untrack(a.id, a.last_seen_ns, a.last_seen_ns);
            a.state = AlertState::Closed;
        }
        self.closed.extend(all);
    }

    pub fn take_opened(&mut self) -> Vec<Alert> {
        std::mem::take(&mut self.opened)
    }

    pub fn take_closed(&mut self) -> Vec<Alert> {
        std::mem::take(&mut self.closed)
    }

    pub fn open_alerts(&self) -> impl Iterator<Item = &Alert> {
        self.open.values()
    }
}
