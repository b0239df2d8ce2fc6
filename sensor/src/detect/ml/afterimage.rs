//! Damped incremental statistics over flow events, per host, per channel (host pair) and per
//! socket (flow), after Kitsune's AfterImage (Mirsky et al., NDSS 2018): every statistic is a
//! decayed sum, so one event updates it in O(1) and old traffic fades instead of being stored.
//!
//! Kitsune updates per packet; the sensor's unit is the flow event (one flow, one direction,
//! at most one data second: what both the XDP poller and the libpcap paths produce). An event
//! of `n` packets and `b` bytes counts as `n` packets of `b / n` bytes. Weights decay with
//! `2^(-λ Δt)` at three rates (half-lives of 1, 10 and 100 s).
//!
//! Memory is bounded: each map holds at most `cap` keys (an event with a new key beyond it is
//! judged against a fresh state, and counted), sockets leave when their flow finishes, hosts
//! and channels leave once idle for `IDLE_NS`.

#![allow(
    clippy::needless_range_loop,
    reason = "index-parallel arrays (weights, sums, decay rates): indices read as the maths"
)]

use std::{net::IpAddr, sync::LazyLock};

use crate::{detect::FastMap, flow::FlowEvent};

/// Decay rates λ per second.
pub const LAMBDAS: [f64; 3] = [1.0, 0.1, 0.01];
const L: usize = LAMBDAS.len();

/// Features per decay rate: sender host 8, receiver host 6, channel 10, socket 7.
const PER_LAMBDA: usize = 31;
pub const N_KIT: usize = PER_LAMBDA * L;

/// Hosts and channels idle this long are forgotten (their slowest weights are down to 1/64).
const IDLE_NS: u64 = 600_000_000_000;
const NS: f64 = 1e9;

/// Feature names in vector order, e.g. `sender_pkts_l1` (λ = 1/s) or `socket_pcc_l0.01`.
pub static KIT_NAMES: LazyLock<Vec<String>> = LazyLock::new(|| {
    const BASE: [&str; PER_LAMBDA] = [
        "sender_pkts",
        "sender_size_mean",
        "sender_size_std",
        "sender_new_flows",
        "sender_syns",
        "sender_rsts",
        "sender_replies_pkts",
        "sender_replies_size_mean",
        "receiver_pkts",
        "receiver_size_mean",
        "receiver_size_std",
        "receiver_new_flows",
        "receiver_syns",
        "receiver_sent_pkts",
        "channel_pkts",
        "channel_size_mean",
        "channel_size_std",
        "channel_magnitude",
        "channel_radius",
        "channel_cov",
        "channel_pcc",
        "channel_gap_events",
        "channel_gap_mean_s",
        "channel_gap_std_s",
        "socket_pkts",
        "socket_size_mean",
        "socket_size_std",
        "socket_magnitude",
        "socket_radius",
        "socket_cov",
        "socket_pcc",
    ];
    LAMBDAS
        .iter()
        .flat_map(|l| BASE.iter().map(move |b| format!("{b}_l{l}")))
        .collect()
});

/// Decay factors `2^(-λ Δt)` for a step of `dt_ns`. The statistics of one host, channel or
/// socket mostly step by the same `dt` in one update: the last step's factors are reused.
fn factors(dt_ns: u64) -> [f64; L] {
    thread_local! {
        static LAST: std::cell::Cell<(u64, [f64; L])> = const { std::cell::Cell::new((0, [1.0; L])) };
    }
    LAST.with(|last| {
        let (d, f) = last.get();
        if d == dt_ns {
            return f;
        }
        let dt = dt_ns as f64 / NS;
        let f = LAMBDAS.map(|l| (-l * dt).exp2());
        last.set((dt_ns, f));
        f
    })
}

/// One damped 1-D statistic per decay rate: weight, linear sum, squared sum.
#[derive(Clone, Copy, Default)]
struct Stat {
    t: u64,
    w: [f64; L],
    ls: [f64; L],
    ss: [f64; L],
}

impl Stat {
    fn decay(&mut self, t: u64) {
        if t <= self.t {
            return;
        }
        if self.t != 0 {
            let f = factors(t - self.t);
            for i in 0..L {
                self.w[i] *= f[i];
                self.ls[i] *= f[i];
                self.ss[i] *= f[i];
            }
        }
        self.t = t;
    }

    /// Adds `n` samples summing to `sum` with squares summing to `sq`.
    fn add(&mut self, t: u64, n: f64, sum: f64, sq: f64) {
        self.decay(t);
        for i in 0..L {
            self.w[i] += n;
            self.ls[i] += sum;
            self.ss[i] += sq;
        }
    }

    fn mean(&self, i: usize) -> f64 {
        if self.w[i] > 1e-12 {
            self.ls[i] / self.w[i]
        } else {
            0.0
        }
    }

    fn var(&self, i: usize) -> f64 {
        if self.w[i] > 1e-12 {
            (self.ss[i] / self.w[i] - self.mean(i).powi(2)).abs()
        } else {
            0.0
        }
    }
}

/// Damped counts per decay rate (new flows, SYNs, RSTs).
#[derive(Clone, Copy, Default)]
struct Count {
    t: u64,
    c: [f64; L],
}

impl Count {
    fn add(&mut self, t: u64, n: f64) {
        self.decay(t);
        for c in &mut self.c {
            *c += n;
        }
    }

    fn decay(&mut self, t: u64) {
        if t > self.t {
            if self.t != 0 {
                let f = factors(t - self.t);
                for i in 0..L {
                    self.c[i] *= f[i];
                }
            }
            self.t = t;
        }
    }
}

/// What a host sent and received.
#[derive(Clone, Copy, Default)]
struct Host {
    sent: Stat,
    received: Stat,
    sent_new: Count,
    sent_syn: Count,
    sent_rst: Count,
    recv_new: Count,
    recv_syn: Count,
}

/// Both directions of a channel or socket, and their damped covariance (Kitsune's 2-D
/// statistics: residual products of one direction's sizes with the other's last residual).
#[derive(Clone, Copy, Default)]
struct Pair {
    dir: [Stat; 2],
    last_residual: [f64; 2],
    cov: Count,
    cov_w: Count,
    /// Gaps between events of each direction (channels only).
    gaps: [Stat; 2],
    last_event: [u64; 2],
    last_seen: u64,
}

impl Pair {
    /// An event of `n` packets of mean size `x` in direction `d`.
    fn add(&mut self, d: usize, t: u64, n: f64, x: f64, gaps: bool) {
        self.dir[d].add(t, n, n * x, n * x * x);
        self.dir[1 - d].decay(t);
        self.cov.decay(t);
        self.cov_w.decay(t);
        // Residual against the mean of the largest window (the steadiest reference).
        let r = x - self.dir[d].mean(L - 1);
        let other = self.last_residual[1 - d];
        for i in 0..L {
            self.cov.c[i] += n * r * other;
            self.cov_w.c[i] += n;
        }
        self.last_residual[d] = r;
        if gaps {
            if self.last_event[d] != 0 && t > self.last_event[d] {
                let g = (t - self.last_event[d]) as f64 / NS;
                self.gaps[d].add(t, 1.0, g, g * g);
            } else {
                self.gaps[d].decay(t);
            }
            self.last_event[d] = t;
        }
        self.last_seen = t;
    }

    /// Weight, mean, std, magnitude, radius, covariance, correlation of direction `d`.
    fn features(&self, d: usize, i: usize, out: &mut Vec<f64>) {
        let (a, b) = (&self.dir[d], &self.dir[1 - d]);
        let (va, vb) = (a.var(i), b.var(i));
        out.push(a.w[i]);
        out.push(a.mean(i));
        out.push(va.sqrt());
        out.push((a.mean(i).powi(2) + b.mean(i).powi(2)).sqrt());
        out.push((va + vb).sqrt());
        let cov = if self.cov_w.c[i] > 1e-12 {
            self.cov.c[i] / self.cov_w.c[i]
        } else {
            0.0
        };
        out.push(cov);
        let sd = (va * vb).sqrt();
        out.push(if sd > 1e-12 {
            (cov / sd).clamp(-1.0, 1.0)
        } else {
            0.0
        });
    }
}

/// Direction-independent key of a host pair: the lower address first.
fn ordered(a: IpAddr, b: IpAddr) -> ((IpAddr, IpAddr), usize) {
    if a <= b { ((a, b), 0) } else { ((b, a), 1) }
}

/// A flow's key without direction.
pub type SocketKey = (IpAddr, IpAddr, u16, u16, u8);

pub fn socket_key(src: IpAddr, dst: IpAddr, sport: u16, dport: u16, proto: u8) -> SocketKey {
    (src, dst, sport, dport, proto)
}

/// A socket's statistics and the highest score one of its events reached.
#[derive(Clone, Copy, Default)]
pub struct Socket {
    pair: Pair,
    pub max_score: f64,
    /// An anomaly was already reported for this flow.
    pub reported: bool,
}

/// Keys refused because a map was full.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Untracked {
    pub hosts: u64,
    pub channels: u64,
    pub sockets: u64,
}

/// The incremental statistics of everything seen, and the feature vector of each event.
pub struct Extractor {
    hosts: FastMap<IpAddr, Host>,
    channels: FastMap<(IpAddr, IpAddr), Pair>,
    sockets: FastMap<SocketKey, Socket>,
    cap: usize,
    pub untracked: Untracked,
    pruned_at: u64,
}

impl Extractor {
    pub fn new(cap: usize) -> Self {
        Self {
            hosts: FastMap::default(),
            channels: FastMap::default(),
            sockets: FastMap::default(),
            cap: cap.max(1),
            untracked: Untracked::default(),
            pruned_at: 0,
        }
    }

    /// Updates the statistics with `ev` and writes its features into `out` (cleared first).
    /// Returns the event's socket, for the caller's per-flow bookkeeping (None when the socket
    /// map was full).
    pub fn update(&mut self, ev: &FlowEvent, out: &mut Vec<f64>) -> Option<&mut Socket> {
        out.clear();
        let t = ev.ts_ns.max(1);
        let n = ev.packets.max(1) as f64;
        let x = ev.bytes as f64 / n;
        let (sender, receiver) = if ev.from_src {
            (ev.src, ev.dst)
        } else {
            (ev.dst, ev.src)
        };
        let new = if ev.new_flow && ev.from_src { 1.0 } else { 0.0 };
        let (syn, rst) = (ev.syn as f64, ev.rst as f64);

        let mut s = take(&mut self.hosts, sender, self.cap, &mut self.untracked.hosts);
        s.sent.add(t, n, n * x, n * x * x);
        s.received.decay(t);
        s.sent_new.add(t, new);
        s.sent_syn.add(t, syn);
        s.sent_rst.add(t, rst);
        let mut r = if receiver == sender {
            s
        } else {
            take(
                &mut self.hosts,
                receiver,
                self.cap,
                &mut self.untracked.hosts,
            )
        };
        r.received.add(t, n, n * x, n * x * x);
        r.sent.decay(t);
        r.recv_new.add(t, new);
        r.recv_syn.add(t, syn);
        if receiver == sender {
            s = r;
        }

        let (ck, cd) = ordered(sender, receiver);
        let mut ch = take(
            &mut self.channels,
            ck,
            self.cap,
            &mut self.untracked.channels,
        );
        ch.add(cd, t, n, x, true);

        let sk = socket_key(ev.src, ev.dst, ev.src_port, ev.dst_port, ev.proto);
        let sd = usize::from(!ev.from_src);
        let tracked = self.sockets.contains_key(&sk) || self.sockets.len() < self.cap;
        let mut scratch = Socket::default();
        let so = if tracked {
            self.sockets.entry(sk).or_default()
        } else {
            self.untracked.sockets += 1;
            &mut scratch
        };
        so.pair.add(sd, t, n, x, false);

        for i in 0..L {
            out.push(s.sent.w[i]);
            out.push(s.sent.mean(i));
            out.push(s.sent.var(i).sqrt());
            out.push(s.sent_new.c[i]);
            out.push(s.sent_syn.c[i]);
            out.push(s.sent_rst.c[i]);
            out.push(s.received.w[i]);
            out.push(s.received.mean(i));
            out.push(r.received.w[i]);
            out.push(r.received.mean(i));
            out.push(r.received.var(i).sqrt());
            out.push(r.recv_new.c[i]);
            out.push(r.recv_syn.c[i]);
            out.push(r.sent.w[i]);
            ch.features(cd, i, out);
            let g = &ch.gaps[cd];
            out.push(g.w[i]);
            out.push(g.mean(i));
            out.push(g.var(i).sqrt());
            so.pair.features(sd, i, out);
        }
        debug_assert_eq!(out.len(), N_KIT);
        put(&mut self.hosts, sender, s, self.cap);
        if receiver != sender {
            put(&mut self.hosts, receiver, r, self.cap);
        }
        put(&mut self.channels, ck, ch, self.cap);
        if tracked {
            self.sockets.get_mut(&sk)
        } else {
            None
        }
    }

    /// The flow finished: its socket statistics go (returned for its final score).
    pub fn finish(&mut self, key: &SocketKey) -> Option<Socket> {
        self.sockets.remove(key)
    }

    /// Forgets hosts and channels idle for `IDLE_NS`, and sockets of flows that never
    /// finished through `finish` (dropped by a full flow table) after the same time.
    pub fn prune(&mut self, now: u64) {
        if now.saturating_sub(self.pruned_at) < IDLE_NS / 10 {
            return;
        }
        self.pruned_at = now;
        self.hosts.retain(|_, h| {
            now.saturating_sub(h.sent.t.max(h.received.t).max(h.sent_new.t)) < IDLE_NS
        });
        self.channels
            .retain(|_, c| now.saturating_sub(c.last_seen) < IDLE_NS);
        self.sockets
            .retain(|_, s| now.saturating_sub(s.pair.last_seen) < IDLE_NS);
    }

    /// Keys held: hosts, channels, sockets.
    pub fn sizes(&self) -> (usize, usize, usize) {
        (self.hosts.len(), self.channels.len(), self.sockets.len())
    }
}

/// The state of `k` (a copy; a fresh one when absent), counting a refusal when the map is full.
fn take<K: std::hash::Hash + Eq, V: Copy + Default>(
    m: &mut FastMap<K, V>,
    k: K,
    cap: usize,
    refused: &mut u64,
) -> V {
    match m.get(&k) {
        Some(v) => *v,
        None => {
            if m.len() >= cap {
                *refused += 1;
            }
            V::default()
        }
    }
}

/// Stores `v` under `k` unless that would grow the map past `cap`.
fn put<K: std::hash::Hash + Eq, V>(m: &mut FastMap<K, V>, k: K, v: V, cap: usize) {
    if let Some(slot) = m.get_mut(&k) {
        *slot = v;
    } else if m.len() < cap {
        m.insert(k, v);
    }
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use super::*;

    const S: u64 = 1_000_000_000;

    fn ev(
        src: u8,
        dst: u8,
        sport: u16,
        ts: u64,
        pkts: u64,
        bytes: u64,
        from_src: bool,
    ) -> FlowEvent {
        FlowEvent {
            ts_ns: ts,
            src: IpAddr::V4(Ipv4Addr::new(10, 0, 0, src)),
            dst: IpAddr::V4(Ipv4Addr::new(10, 0, 0, dst)),
            src_port: sport,
            dst_port: 80,
            proto: 6,
            family: 4,
            key_dst_port: 80,
            new_flow: from_src,
            from_src,
            packets: pkts,
            bytes,
            syn: 0,
            syn_ack: 0,
            rst: 0,
            completed: false,
        }
    }

    fn idx(name: &str) -> usize {
        KIT_NAMES
            .iter()
            .position(|n| n == name)
            .unwrap_or_else(|| panic!("no feature {name}"))
    }

    #[test]
    fn names_match_the_vector() {
        let mut x = Extractor::new(10);
        let mut out = Vec::new();
        x.update(&ev(1, 2, 1000, S, 3, 300, true), &mut out);
        assert_eq!(out.len(), KIT_NAMES.len());
        assert!(out.iter().all(|v| v.is_finite()));
    }

    /// Weights decay with the half-life of their rate: after 1 s the 1/s window holds half.
    #[test]
    fn weights_halve_per_half_life() {
        let mut x = Extractor::new(10);
        let mut out = Vec::new();
        x.update(&ev(1, 2, 1000, S, 10, 1000, true), &mut out);
        assert_eq!(out[idx("sender_pkts_l1")], 10.0);
        assert_eq!(out[idx("sender_size_mean_l1")], 100.0);
        x.update(&ev(1, 2, 1000, 2 * S, 10, 1000, true), &mut out);
        // 10 halved, plus 10.
        assert!((out[idx("sender_pkts_l1")] - 15.0).abs() < 1e-9, "{out:?}");
        assert!((out[idx("sender_pkts_l0.01")] - (10.0 * 0.5f64.powf(0.01) + 10.0)).abs() < 1e-9);
        assert!(
            out[idx("sender_size_std_l1")].abs() < 1e-6,
            "same sizes: no spread"
        );
    }

    /// Replies feed the other direction: the 2-D statistics see both sides of a socket.
    #[test]
    fn replies_fill_the_other_direction() {
        let mut x = Extractor::new(10);
        let mut out = Vec::new();
        x.update(&ev(1, 2, 1000, S, 1, 100, true), &mut out);
        assert_eq!(out[idx("socket_magnitude_l1")], 100.0);
        x.update(&ev(1, 2, 1000, S + 1000, 1, 1400, false), &mut out);
        let m = out[idx("socket_magnitude_l1")];
        assert!(
            (m - (100f64.powi(2) + 1400f64.powi(2)).sqrt()).abs() < 1e-3,
            "{m}"
        );
        // The receiver of the reply (host 1) has sent packets: its "sent" shows them.
        assert!(out[idx("receiver_sent_pkts_l1")] > 0.9);
        assert!(
            x.finish(&socket_key(
                IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1)),
                IpAddr::V4(Ipv4Addr::new(10, 0, 0, 2)),
                1000,
                80,
                6
            ))
            .is_some()
        );
    }

    /// A full map refuses new keys (counted) and still yields features; idle keys go.
    #[test]
    fn maps_are_bounded_and_pruned() {
        let mut x = Extractor::new(4);
        let mut out = Vec::new();
        for i in 0..50u8 {
            x.update(&ev(i, 200, 1000 + u16::from(i), S, 1, 60, true), &mut out);
            assert_eq!(out.len(), N_KIT);
        }
        let (h, c, s) = x.sizes();
        assert!(h <= 4 && c <= 4 && s <= 4, "{h} {c} {s}");
        assert!(x.untracked.hosts > 0 && x.untracked.sockets > 0);
        x.prune(S + IDLE_NS + S);
        assert_eq!(x.sizes(), (0, 0, 0));
    }
}
