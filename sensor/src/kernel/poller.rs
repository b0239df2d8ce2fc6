//! The live path's map poller: every interval it takes what the XDP program counted out of the
//! kernel maps and merges it into the flow table.
//!
//! Each poll *drains* the flow map (`BPF_MAP_LOOKUP_AND_DELETE_BATCH`): an entry holds exactly
//! the packets since the previous poll, so the deltas need no bookkeeping of earlier values,
//! an entry never goes stale, and the kernel map only has to hold the flows active within one
//! interval (a flood fills it per interval, not forever). Active flows are re-inserted by the
//! kernel on their next packet. Userspace owns flow lifetime (idle/active timeouts).
//!
//! Counts of established flows mostly wait in the per-CPU flow cache rather than in the map:
//! each poll first closes the cache epoch (the program moves to the other bank) and takes the
//! closed bank's slots, then drains the map. A count is in exactly one of the two (a slot
//! taken by another flow was flushed into the map first), so adding both never counts a
//! packet twice (docs/DESIGN.md, "Flow cache").

use std::time::{Duration, Instant};

use sensor_common::{FlowKey, FlowStats, GlobalCounters, HostKey, HostStats, family, proto};

use crate::{
    flow::{Delta, Flow, FlowTable},
    kernel::{DrainBuffers, KernelError, SensorProgram},
    metrics::{Counter, Gauge, Registry},
};

/// Offset that turns `CLOCK_MONOTONIC` nanoseconds (kernel timestamps) into Unix nanoseconds.
/// Read at every poll, so clock steps (NTP) are followed.
pub fn monotonic_to_unix_offset() -> i128 {
    fn read(clock: libc::clockid_t) -> i128 {
        let mut ts = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: valid pointer to a local timespec.
        unsafe { libc::clock_gettime(clock, &mut ts) };
        i128::from(ts.tv_sec) * 1_000_000_000 + i128::from(ts.tv_nsec)
    }
    read(libc::CLOCK_REALTIME) - read(libc::CLOCK_MONOTONIC)
}

fn to_unix(mono_ns: u64, offset: i128) -> u64 {
    (i128::from(mono_ns) + offset).clamp(0, i128::from(u64::MAX)) as u64
}

/// What one poll took out of the kernel.
#[derive(Clone, Debug, Default)]
pub struct PollStats {
    /// Kernel flow entries drained.
    pub entries: usize,
    pub packets: u64,
    /// Per-host overflow counters drained (packets the flow map could not take).
    pub dst_overflow: Vec<(HostKey, HostStats)>,
    pub src_overflow: Vec<(HostKey, HostStats)>,
    /// Global counters since the sensor was loaded, and since the previous poll.
    pub counters: GlobalCounters,
    pub counters_delta: GlobalCounters,
    /// Time the poll took (syscalls plus merging).
    pub duration: Duration,
}

/// The kernel's counters on `/metrics`: the program counts them per CPU, each poll copies the
/// totals.
pub struct KernelMetrics {
    polls: Counter,
    poll_latency_us: Gauge,
    packets: Counter,
    bytes: Counter,
    parse_errors: Counter,
    insert_full: Counter,
    insert_other: Counter,
    overflow_lost: Counter,
    blocked_packets: Counter,
    blocked_bytes: Counter,
    rate_limited_packets: Counter,
    rate_limited_bytes: Counter,
    evidence_copied: Counter,
    evidence_lost: Counter,
}

impl KernelMetrics {
    pub fn new(m: &Registry) -> Self {
        Self {
            polls: m.counter("sensor_polls_total", "Map polls."),
            poll_latency_us: m.gauge(
                "sensor_poll_latency_microseconds",
                "Duration of the last map poll.",
            ),
            packets: m.counter(
                "sensor_kernel_packets_total",
                "Packets the XDP program saw.",
            ),
            bytes: m.counter("sensor_kernel_bytes_total", "Bytes the XDP program saw."),
            parse_errors: m.counter(
                "sensor_kernel_parse_errors_total",
                "Frames the XDP program could not parse.",
            ),
            insert_full: m.counter(
                "sensor_kernel_flow_map_full_total",
                "Flow inserts refused: map full.",
            ),
            insert_other: m.counter(
                "sensor_kernel_flow_map_errors_total",
                "Flow inserts refused: other errors.",
            ),
            overflow_lost: m.counter(
                "sensor_kernel_overflow_lost_total",
                "Packets lost by the per-host overflow maps too.",
            ),
            blocked_packets: m.counter(
                "sensor_xdp_blocked_packets_total",
                "Packets the XDP blocklist dropped.",
            ),
            blocked_bytes: m.counter(
                "sensor_xdp_blocked_bytes_total",
                "Bytes the XDP blocklist dropped.",
            ),
            rate_limited_packets: m.counter(
                "sensor_xdp_rate_limited_packets_total",
                "Packets the XDP per-destination rate limits dropped.",
            ),
            rate_limited_bytes: m.counter(
                "sensor_xdp_rate_limited_bytes_total",
                "Bytes the XDP per-destination rate limits dropped.",
            ),
            evidence_copied: m.counter(
                "sensor_evidence_copied_packets_total",
                "Packets the XDP program copied for alert evidence.",
            ),
            evidence_lost: m.counter(
                "sensor_evidence_lost_packets_total",
                "Evidence packets lost: the kernel ring buffer was full.",
            ),
        }
    }

    /// One poll's totals.
    pub fn record(&self, s: &PollStats) {
        let c = &s.counters;
        self.polls.inc();
        self.poll_latency_us.set(s.duration.as_micros() as u64);
        self.packets.set_total(c.packets);
        self.bytes.set_total(c.bytes);
        self.parse_errors.set_total(c.parse_errors);
        self.insert_full.set_total(c.flow_insert_full);
        self.insert_other.set_total(c.flow_insert_other);
        self.overflow_lost
            .set_total(c.dst_insert_failures + c.src_insert_failures);
        self.blocked_packets.set_total(c.blocked_packets);
        self.blocked_bytes.set_total(c.blocked_bytes);
        self.rate_limited_packets.set_total(c.rate_limited_packets);
        self.rate_limited_bytes.set_total(c.rate_limited_bytes);
        self.evidence_copied.set_total(c.evidence_packets);
        self.evidence_lost.set_total(c.evidence_lost);
    }
}

/// Drains the sensor's maps into a flow table.
pub struct Poller {
    flows: DrainBuffers<FlowKey, FlowStats>,
    /// Counts taken from the closed cache bank (every CPU's slots).
    cached: Vec<(FlowKey, FlowStats)>,
    dst: DrainBuffers<HostKey, HostStats>,
    src: DrainBuffers<HostKey, HostStats>,
    last_counters: GlobalCounters,
}

impl Default for Poller {
    fn default() -> Self {
        Self::new()
    }
}

impl Poller {
    pub fn new() -> Self {
        Self {
            flows: DrainBuffers::new(4096),
            cached: Vec::new(),
            dst: DrainBuffers::new(1024),
            src: DrainBuffers::new(1024),
            last_counters: GlobalCounters::default(),
        }
    }

    /// Whether the kernel's batch lookup-and-delete is in use (it is from Linux 5.6 on).
    pub fn batched(&self) -> bool {
        self.flows.batched()
    }

    /// One poll: drain the maps, merge flows into `table`, finished flows into `out`.
    pub fn poll(
        &mut self,
        prog: &mut SensorProgram,
        table: &mut FlowTable,
        out: &mut impl FnMut(Flow),
    ) -> Result<PollStats, KernelError> {
        let start = Instant::now();
        let offset = monotonic_to_unix_offset();
        // Cache first: a slot flushed into the map while this poll runs is then still in the
        // map for the drain (or the next one), never in neither.
        self.cached.clear();
        prog.take_cache(&mut self.cached)?;
        prog.drain_flows(&mut self.flows)?;
        prog.drain_dst_hosts(&mut self.dst)?;
        prog.drain_src_hosts(&mut self.src)?;
        let counters = prog.counters()?;

        // Oldest first, so the table's data clock moves forward as the traffic did; one flow
        // may come from the map and from several CPUs' slots.
        let entries = self.flows.entries.len() + self.cached.len();
        self.flows.entries.append(&mut self.cached);
        self.flows
            .entries
            .sort_unstable_by_key(|(_, s)| s.first_seen_ns);
        let mut packets = 0;
        for (k, s) in &self.flows.entries {
            packets += s.packets;
            table.update(k, &delta(k, s, offset), false, out);
        }
        let now_mono = {
            let mut ts = libc::timespec {
                tv_sec: 0,
                tv_nsec: 0,
            };
            // SAFETY: valid pointer to a local timespec.
            unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
            ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
        };
        // Time passes even without packets: let idle flows expire.
        table.advance_to(to_unix(now_mono, offset), out);

        let counters_delta = counters.delta_since(&self.last_counters);
        self.last_counters = counters;
        Ok(PollStats {
            entries,
            packets,
            dst_overflow: self.dst.entries.clone(),
            src_overflow: self.src.entries.clone(),
            counters,
            counters_delta,
            duration: start.elapsed(),
        })
    }
}

fn delta(k: &FlowKey, s: &FlowStats, offset: i128) -> Delta {
    let echo_type = match k.proto {
        proto::ICMP => 8,
        proto::ICMPV6 => 128,
        _ => 0,
    };
    let echo = k.family != family::ARP && echo_type != 0 && k.dst_port >> 8 == echo_type;
    Delta {
        packets: s.packets,
        bytes: s.bytes,
        first_ns: to_unix(s.first_seen_ns, offset),
        last_ns: to_unix(s.last_seen_ns, offset),
        syn: u64::from(s.syn),
        syn_ack: u64::from(s.syn_ack),
        fin: u64::from(s.fin),
        rst: u64::from(s.rst),
        psh: u64::from(s.psh),
        ack_only: u64::from(s.ack_only),
        // ICMP keys carry the type: a whole entry is echo requests or none.
        echo: if echo { s.packets } else { 0 },
        fragments: 0,
        len_sq: s.len_sq as f64,
        min_len: u32::from(s.min_len),
        max_len: u32::from(s.max_len),
    }
}
