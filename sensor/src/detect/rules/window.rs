//! Windows over data time that the rules count in.

use std::collections::VecDeque;

use super::NS;
use crate::detect::FastMap;

/// Counts per second of data time over the last `len` seconds.
#[derive(Clone, Debug)]
pub(super) struct SecWindow {
    pub(super) first_sec: u64,
    pub(super) last_sec: u64,
    buckets: VecDeque<u64>,
    pub(super) sum: u64,
    len: usize,
}

impl SecWindow {
    pub(super) fn new(len: u64) -> Self {
        Self {
            first_sec: 0,
            last_sec: 0,
            buckets: VecDeque::new(),
            sum: 0,
            len: len.max(1) as usize,
        }
    }

    pub(super) fn advance(&mut self, sec: u64) {
        if self.buckets.is_empty() {
            self.first_sec = sec;
            self.last_sec = sec;
            self.buckets.push_back(0);
            return;
        }
        if sec <= self.last_sec {
            return;
        }
        let gap = (sec - self.last_sec).min(self.len as u64 + 1);
        for _ in 0..gap {
            self.buckets.push_back(0);
            if self.buckets.len() > self.len {
                self.sum -= self.buckets.pop_front().unwrap_or(0);
            }
        }
        self.last_sec = sec;
        if self.sum == 0 {
            // Nothing left in the window: what comes next starts a new span (a host quiet for
            // a while is not averaged over its silence).
            self.first_sec = sec;
        }
    }

    pub(super) fn add(&mut self, sec: u64, n: u64) {
        self.advance(sec);
        let back = (self.last_sec - sec.min(self.last_sec)) as usize;
        if back < self.buckets.len() {
            let i = self.buckets.len() - 1 - back;
            self.buckets[i] += n;
            self.sum += n;
        }
    }

    pub(super) fn sum_at(&mut self, sec: u64) -> u64 {
        self.advance(sec);
        self.sum
    }

    /// Seconds the window really covers (short captures do not fill it).
    pub(super) fn span(&self) -> u64 {
        (self.last_sec - self.first_sec + 1).min(self.len as u64)
    }

    pub(super) fn rate(&self) -> f64 {
        self.sum as f64 / self.span() as f64
    }
}

/// An uninterrupted run of traffic (no gap of a second or more) and its rate: a flood is a
/// rate, which a run shows precisely well before the per-second window fills.
#[derive(Clone, Copy, Debug, Default)]
pub(super) struct Run {
    start_ns: u64,
    last_ns: u64,
    /// Packets of the update that started the run (they came before `start_ns`, from a
    /// poll's worth of traffic) and of the whole run.
    start_packets: u64,
    packets: u64,
}

impl Run {
    /// Longest pause inside one run.
    const GAP_NS: u64 = NS;

    pub(super) fn add(&mut self, ts: u64, n: u64) {
        if self.packets == 0 || ts > self.last_ns + Self::GAP_NS {
            *self = Self {
                start_ns: ts,
                last_ns: ts,
                start_packets: n,
                packets: n,
            };
            return;
        }
        self.last_ns = self.last_ns.max(ts);
        self.packets += n;
    }

    /// Packets a second over the run (its first update's packets left out, as above).
    pub(super) fn rate(&self) -> f64 {
        let span = self.last_ns - self.start_ns;
        if span == 0 {
            return 0.0;
        }
        (self.packets - self.start_packets) as f64 * NS as f64 / span as f64
    }

    /// Whether the run has lasted `min_ns` at `pps` or more and holds `min_packets`. The
    /// first update's packets are not in the rate: they may span the poll before it.
    pub(super) fn sustained(&self, now: u64, min_ns: u64, pps: u64, min_packets: u64) -> bool {
        let span = self.last_ns - self.start_ns;
        now <= self.last_ns + Self::GAP_NS
            && span >= min_ns.max(1)
            && self.packets >= min_packets
            && (self.packets - self.start_packets) as f64 >= pps as f64 * span as f64 / NS as f64
    }
}

/// Last-seen times of distinct items, pruned to a window.
///
/// Pruning walks every item, so it runs only when the oldest item may have left the window
/// and at most every 1/16 of the window: counting on every event of a random-source flood
/// (thousands of items) would otherwise be quadratic. A count may therefore include items
/// up to 1/16 of the window older than it.
#[derive(Clone, Debug)]
pub(super) struct Distinct<T: std::hash::Hash + Eq + Copy> {
    pub(super) seen: FastMap<T, u64>,
    oldest: u64,
    pruned_at: u64,
    /// Data second of the last firing: an alert is updated at most once a second per key, so
    /// a scan of 60,000 ports costs its evidence once a second, not once a port.
    fired_s: Option<u64>,
    /// Items counted at the last firing.
    pub(super) fired_n: usize,
    /// A firing was held back this second (the key waits in the rules' pending list).
    pub(super) pending: bool,
}

impl<T: std::hash::Hash + Eq + Copy> Default for Distinct<T> {
    fn default() -> Self {
        Self {
            seen: FastMap::default(),
            oldest: u64::MAX,
            pruned_at: 0,
            fired_s: None,
            fired_n: 0,
            pending: false,
        }
    }
}

impl<T: std::hash::Hash + Eq + Copy> Distinct<T> {
    pub(super) fn add(&mut self, item: T, ts: u64, cap: usize) {
        if self.seen.len() < cap || self.seen.contains_key(&item) {
            self.seen.insert(item, ts);
            self.oldest = self.oldest.min(ts);
        }
    }

    /// Distinct items seen within `window_ns` before `now`.
    pub(super) fn count(&mut self, now: u64, window_ns: u64, threshold: usize) -> usize {
        if self.seen.len() >= threshold
            && now.saturating_sub(self.oldest) >= window_ns
            && now.saturating_sub(self.pruned_at) >= window_ns / 16
        {
            self.seen.retain(|_, t| now.saturating_sub(*t) < window_ns);
            self.oldest = self.seen.values().copied().min().unwrap_or(u64::MAX);
            self.pruned_at = now;
        }
        self.seen.len()
    }

    /// Whether the key may fire at `now` (not yet in this data second); marks it fired.
    pub(super) fn may_fire(&mut self, now: u64) -> bool {
        let sec = now / NS;
        if self.fired_s == Some(sec) {
            return false;
        }
        self.fired_s = Some(sec);
        true
    }

    /// Lifts the once-a-second limit (end of data: the final state is fired now).
    pub(super) fn allow_fire(&mut self) {
        self.fired_s = None;
    }

    pub(super) fn sample(&self, n: usize) -> Vec<T>
    where
        T: Ord,
    {
        smallest(self.seen.keys().copied(), n)
    }
}

/// The `n` smallest items, sorted: one pass, no copy of the whole set (trackers hold up to
/// 65,536 items; evidence shows ten).
pub(super) fn smallest<T: Ord + Copy>(items: impl Iterator<Item = T>, n: usize) -> Vec<T> {
    let mut v: Vec<T> = Vec::with_capacity(n + 1);
    for it in items {
        if v.len() == n && v.last().is_some_and(|l| it >= *l) {
            continue;
        }
        let at = v.partition_point(|x| *x < it);
        v.insert(at, it);
        v.truncate(n);
    }
    v
}
