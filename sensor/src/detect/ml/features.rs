//! Flow features for the model: the old tool's 13 statistics plus direction balance and the
//! source's recent fan-out, every one finite (a NaN or infinity never reaches the model).

use std::net::IpAddr;

use crate::detect::FastMap;

use crate::flow::{Flow, FlowEvent};

/// Feature names, in vector order. Stored in model files and checked when one is loaded.
pub const FEATURE_NAMES: [&str; 16] = [
    "duration_s",
    "packets_fwd",
    "packets_rev",
    "bytes_fwd",
    "bytes_rev",
    "packets_per_s",
    "bytes_per_s",
    "mean_len",
    "std_len",
    "mean_iat_us",
    "syn_ratio",
    "fin_ratio",
    "rst_ratio",
    "rev_fwd_packet_ratio",
    "src_distinct_ports",
    "src_distinct_hosts",
];

pub const N_FEATURES: usize = FEATURE_NAMES.len();

/// Shortest duration used for rates: one-packet flows have duration 0.
const MIN_DURATION_S: f64 = 1e-3;

/// What a source did recently: distinct (host, port) targets of its new flows.
#[derive(Default)]
pub struct SourceContext {
    targets: FastMap<IpAddr, Targets>,
    window_ns: u64,
    cap: usize,
}

/// One source's targets, with the distinct ports and hosts among them counted as they come
/// and go, so a fan-out costs O(1) rather than a sort of everything the source touched (a
/// source opening thousands of flows made that quadratic).
struct Targets {
    seen: FastMap<(IpAddr, u16), u64>,
    ports: FastMap<u16, u32>,
    hosts: FastMap<IpAddr, u32>,
    oldest: u64,
    pruned_at: u64,
}

impl Default for Targets {
    fn default() -> Self {
        Self {
            seen: FastMap::default(),
            ports: FastMap::default(),
            hosts: FastMap::default(),
            oldest: u64::MAX,
            pruned_at: 0,
        }
    }
}

impl Targets {
    fn insert(&mut self, key: (IpAddr, u16), ts: u64) {
        if self.seen.insert(key, ts).is_none() {
            *self.ports.entry(key.1).or_default() += 1;
            *self.hosts.entry(key.0).or_default() += 1;
        }
        self.oldest = self.oldest.min(ts);
    }

    /// Drops targets older than the window. Walks every target, so it runs only when the
    /// oldest may have expired, and at most every 1/16 of the window unless `force`: a count
    /// may include targets up to 1/16 of the window older than it.
    fn prune(&mut self, now: u64, window_ns: u64, force: bool) {
        if now.saturating_sub(self.oldest) < window_ns
            || (!force && now.saturating_sub(self.pruned_at) < window_ns / 16)
        {
            return;
        }
        self.pruned_at = now;
        let (ports, hosts) = (&mut self.ports, &mut self.hosts);
        let mut oldest = u64::MAX;
        self.seen.retain(|(h, p), ts| {
            if now.saturating_sub(*ts) < window_ns {
                oldest = oldest.min(*ts);
                return true;
            }
            release(ports, p);
            release(hosts, h);
            false
        });
        self.oldest = oldest;
    }
}

/// Drops one reference to `k`, and the entry at zero.
fn release<K: std::hash::Hash + Eq>(m: &mut FastMap<K, u32>, k: &K) {
    if let Some(n) = m.get_mut(k) {
        *n -= 1;
        if *n == 0 {
            m.remove(k);
        }
    }
}

impl SourceContext {
    pub fn new(window_ns: u64, cap: usize) -> Self {
        Self {
            targets: FastMap::default(),
            window_ns,
            cap,
        }
    }

    pub fn on_event(&mut self, ev: &FlowEvent) {
        if !(ev.new_flow && ev.from_src) {
            return;
        }
        if self.targets.len() >= self.cap && !self.targets.contains_key(&ev.src) {
            return;
        }
        let t = self.targets.entry(ev.src).or_default();
        if t.seen.len() < 65_536 {
            t.insert((ev.dst, ev.dst_port), ev.ts_ns);
        }
    }

    /// Distinct ports and hosts `src` opened flows to within the window before `now`.
    pub fn fan_out(&mut self, src: IpAddr, now: u64) -> (usize, usize) {
        let Some(t) = self.targets.get_mut(&src) else {
            return (0, 0);
        };
        t.prune(now, self.window_ns, false);
        (t.ports.len(), t.hosts.len())
    }

    pub fn prune(&mut self, now: u64) {
        let w = self.window_ns;
        self.targets.retain(|_, t| {
            t.prune(now, w, true);
            !t.seen.is_empty()
        });
        crate::detect::shrink(&mut self.targets);
    }
}

/// The numbers of a flow that features are made of: what a live `Flow` holds and what a
/// stored flow record keeps, so a model trained from the database sees the same features as one
/// trained from a capture.
#[derive(Clone, Copy, Debug, Default, PartialEq, serde::Deserialize)]
#[serde(default)]
pub struct FlowNumbers {
    pub duration_s: f64,
    pub packets_fwd: u64,
    pub packets_rev: u64,
    pub bytes_fwd: u64,
    pub bytes_rev: u64,
    pub mean_len: f64,
    pub std_len: f64,
    pub mean_iat_us: Option<f64>,
    pub std_iat_us: Option<f64>,
    pub syn: u64,
    pub fin: u64,
    pub rst: u64,
}

impl From<&Flow> for FlowNumbers {
    fn from(f: &Flow) -> Self {
        let iat = (f.iat_us.n > 0).then_some(f.iat_us);
        Self {
            duration_s: f.duration().as_secs_f64(),
            packets_fwd: f.fwd.packets,
            packets_rev: f.rev.packets,
            bytes_fwd: f.fwd.bytes,
            bytes_rev: f.rev.bytes,
            mean_len: f.len.mean,
            std_len: f.len.std(),
            mean_iat_us: iat.map(|m| m.mean),
            std_iat_us: iat.map(|m| m.std()),
            syn: u64::from(f.syn),
            fin: u64::from(f.fin),
            rst: u64::from(f.rst),
        }
    }
}

/// The raw (unscaled) feature vector of a finished flow.
pub fn features(f: &Flow, fan_out: (usize, usize)) -> [f64; N_FEATURES] {
    number_features(&FlowNumbers::from(f), fan_out)
}

/// Features from a flow's numbers. Counts and rates go through `ln(1 + x)`: they span orders
/// of magnitude, and random splits on a log scale separate 10 from 1,000 as readily as 1,000
/// from 100,000.
pub fn number_features(f: &FlowNumbers, (ports, hosts): (usize, usize)) -> [f64; N_FEATURES] {
    let dur = f.duration_s.max(0.0);
    let d = dur.max(MIN_DURATION_S);
    let packets = (f.packets_fwd + f.packets_rev).max(1) as f64;
    let l = |x: f64| x.max(0.0).ln_1p();
    let v = [
        l(dur),
        l(f.packets_fwd as f64),
        l(f.packets_rev as f64),
        l(f.bytes_fwd as f64),
        l(f.bytes_rev as f64),
        l(packets / d),
        l((f.bytes_fwd + f.bytes_rev) as f64 / d),
        l(f.mean_len),
        l(f.std_len),
        // The mean gap is the duration over the gaps, exactly (the gaps sum to the duration):
        // kernel flows, which carry no per-packet times, get it too. The gaps' spread is not a
        // feature: only replay and libpcap know it, and a model trained on one path would
        // misjudge every flow of the other (docs/DETECTION.md).
        l(f.mean_iat_us.unwrap_or_else(|| {
            if packets >= 2.0 {
                dur * 1e6 / (packets - 1.0)
            } else {
                0.0
            }
        })),
        f.syn as f64 / packets,
        f.fin as f64 / packets,
        f.rst as f64 / packets,
        l(f.packets_rev as f64 / (f.packets_fwd as f64 + 1.0)),
        l(ports as f64),
        l(hosts as f64),
    ];
    v.map(|x| if x.is_finite() { x } else { 0.0 })
}
