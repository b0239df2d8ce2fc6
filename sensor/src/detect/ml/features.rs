//! Flow features for the model: the old tool's 13 statistics plus direction balance and the
//! source's recent fan-out, every one finite (a NaN or infinity never reaches the model).

use std::{collections::HashMap, net::IpAddr};

use crate::flow::{Flow, FlowEvent};

/// Feature names, in vector order. Stored in model files and checked when one is loaded.
pub const FEATURE_NAMES: [&str; 17] = [
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
    "std_iat_us",
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
    targets: HashMap<IpAddr, HashMap<(IpAddr, u16), u64>>,
    window_ns: u64,
    cap: usize,
}

impl SourceContext {
    pub fn new(window_ns: u64, cap: usize) -> Self {
        Self {
            targets: HashMap::new(),
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
        if t.len() < 65_536 {
            t.insert((ev.dst, ev.dst_port), ev.ts_ns);
        }
    }

    /// Distinct ports and hosts `src` opened flows to within the window before `now`.
    pub fn fan_out(&mut self, src: IpAddr, now: u64) -> (usize, usize) {
        let Some(t) = self.targets.get_mut(&src) else {
            return (0, 0);
        };
        let w = self.window_ns;
        t.retain(|_, ts| now.saturating_sub(*ts) < w);
        let mut ports: Vec<u16> = t.keys().map(|k| k.1).collect();
        ports.sort_unstable();
        ports.dedup();
        let mut hosts: Vec<IpAddr> = t.keys().map(|k| k.0).collect();
        hosts.sort_unstable();
        hosts.dedup();
        (ports.len(), hosts.len())
    }

    pub fn prune(&mut self, now: u64) {
        let w = self.window_ns;
        self.targets.retain(|_, t| {
            t.retain(|_, ts| now.saturating_sub(*ts) < w);
            !t.is_empty()
        });
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
        l(f.mean_iat_us.unwrap_or(0.0)),
        l(f.std_iat_us.unwrap_or(0.0)),
        f.syn as f64 / packets,
        f.fin as f64 / packets,
        f.rst as f64 / packets,
        l(f.packets_rev as f64 / (f.packets_fwd as f64 + 1.0)),
        l(ports as f64),
        l(hosts as f64),
    ];
    v.map(|x| if x.is_finite() { x } else { 0.0 })
}
