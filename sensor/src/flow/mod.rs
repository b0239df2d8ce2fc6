//! Bidirectional flow table fed by packets (pcap path) or by kernel counter deltas (XDP path).
//!
//! Time is the data's own (packet timestamps in replay, kernel timestamps live): idle and active
//! timeouts never look at the wall clock, so a capture replayed at any speed gives the same
//! flows. Memory is bounded by `max_flows`; flows refused by the cap are counted.

use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    time::Duration,
};

use sensor_common::{FlowKey, family, proto};

pub mod map;

use crate::{
    flow::map::FlowMap,
    packet::{Parsed, tcp},
};

/// Flow-table limits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FlowConfig {
    /// A flow with no packet for this long is finished.
    pub idle_timeout: Duration,
    /// A flow older than this is reported and restarted, so long flows show up while they last.
    pub active_timeout: Duration,
    /// A TCP connection closed (FIN both ways, or RST) is finished after this long without a
    /// packet, so closed connections reach the store in seconds rather than after the idle
    /// timeout; the wait keeps late retransmissions in the same flow.
    pub close_timeout: Duration,
    /// Most flows held at once; packets of new flows beyond it are counted, not tracked.
    pub max_flows: usize,
}

impl Default for FlowConfig {
    fn default() -> Self {
        Self {
            idle_timeout: Duration::from_secs(120),
            active_timeout: Duration::from_secs(300),
            close_timeout: Duration::from_secs(10),
            max_flows: 1_000_000,
        }
    }
}

/// Direction-free identity of a conversation: the two endpoints in a fixed order.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BiKey {
    pub lo_addr: [u8; 16],
    pub hi_addr: [u8; 16],
    pub lo_port: u16,
    pub hi_port: u16,
    pub proto: u8,
    pub family: u8,
}

/// ICMP replies share the flow of their request: map each query/reply type to the query.
fn icmp_query_port(proto_: u8, port: u16) -> u16 {
    let (ty, code) = ((port >> 8) as u8, port as u8);
    let query = match (proto_, ty) {
        (proto::ICMP, 0) => 8,
        (proto::ICMP, 14) => 13,
        (proto::ICMP, 16) => 15,
        (proto::ICMP, 18) => 17,
        (proto::ICMPV6, 129) => 128,
        _ => ty,
    };
    u16::from(query) << 8 | u16::from(code)
}

impl BiKey {
    /// The canonical key of a directional kernel key, and whether `k` runs lo -> hi.
    pub fn of(k: &FlowKey) -> (Self, bool) {
        let mut dst_port = k.dst_port;
        if k.family != family::ARP && (k.proto == proto::ICMP || k.proto == proto::ICMPV6) {
            dst_port = icmp_query_port(k.proto, dst_port);
        }
        if k.family == family::ARP {
            // Requests and replies of one address pair are one exchange.
            dst_port = 0;
        }
        let a = (k.src_addr, k.src_port);
        let b = (k.dst_addr, dst_port);
        // ICMP "ports" are not endpoint properties: order by address only, keep the type.
        let icmp_like =
            k.family == family::ARP || k.proto == proto::ICMP || k.proto == proto::ICMPV6;
        let forward = if icmp_like { a.0 <= b.0 } else { a <= b };
        let (lo, hi) = if forward { (a, b) } else { (b, a) };
        let (lo_port, hi_port) = if icmp_like {
            (0, dst_port)
        } else {
            (lo.1, hi.1)
        };
        (
            Self {
                lo_addr: lo.0,
                hi_addr: hi.0,
                lo_port,
                hi_port,
                proto: k.proto,
                family: k.family,
            },
            forward,
        )
    }
}

/// Streaming mean and variance (Welford).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Moments {
    pub n: u64,
    pub mean: f64,
    m2: f64,
}

impl Moments {
    pub fn push(&mut self, x: f64) {
        self.n += 1;
        let d = x - self.mean;
        self.mean += d / self.n as f64;
        self.m2 += d * (x - self.mean);
    }

    /// Adds `n` copies of `x` (a kernel delta knows only the mean length of its packets).
    pub fn push_n(&mut self, x: f64, n: u64) {
        if n == 0 {
            return;
        }
        let total = self.n + n;
        let d = x - self.mean;
        self.mean += d * n as f64 / total as f64;
        self.m2 += d * d * self.n as f64 * n as f64 / total as f64;
        self.n = total;
    }

    /// Adds `n` values known only by their sum and sum of squares (a kernel delta), exactly
    /// (Chan et al.'s pairwise update).
    pub fn push_sums(&mut self, n: u64, sum: f64, sum_sq: f64) {
        if n == 0 {
            return;
        }
        let nb = n as f64;
        let mean_b = sum / nb;
        let m2_b = (sum_sq - sum * sum / nb).max(0.0);
        let total = self.n + n;
        let d = mean_b - self.mean;
        self.mean += d * nb / total as f64;
        self.m2 += m2_b + d * d * self.n as f64 * nb / total as f64;
        self.n = total;
    }

    /// Population standard deviation; 0 for fewer than two values.
    pub fn std(&self) -> f64 {
        if self.n < 2 {
            0.0
        } else {
            (self.m2 / self.n as f64).sqrt()
        }
    }
}

/// One direction's counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DirStats {
    pub packets: u64,
    pub bytes: u64,
}

/// A bidirectional flow. `src` is the initiator: the sender of the first packet, or of the SYN
/// when the capture starts mid-handshake.
#[derive(Clone, Debug, PartialEq)]
pub struct Flow {
    pub src: IpAddr,
    pub dst: IpAddr,
    pub src_port: u16,
    pub dst_port: u16,
    pub proto: u8,
    pub family: u8,
    pub fwd: DirStats,
    pub rev: DirStats,
    /// Data time, ns since the Unix epoch.
    pub first_seen_ns: u64,
    pub last_seen_ns: u64,
    // Flag counts are u32 (saturating): a million flows held live is the scale target, and
    // these eight fields are an eighth of a flow's size.
    pub syn: u32,
    pub syn_ack: u32,
    pub fin: u32,
    pub rst: u32,
    pub psh: u32,
    pub ack_only: u32,
    pub echo_requests: u32,
    pub fragments: u32,
    pub min_len: u32,
    pub max_len: u32,
    /// Packet lengths (per packet in replay; per delta's mean live).
    pub len: Moments,
    /// Inter-arrival times in µs, both directions together (replay only: the kernel keeps no
    /// per-packet times).
    pub iat_us: Moments,
    /// Why the record was emitted.
    pub end: EndReason,
    /// Whether `src` sent lo -> hi of the canonical key.
    fwd_is_lo: bool,
    fwd_sent_syn: bool,
    fin_fwd: bool,
    fin_rev: bool,
    handshake_done: bool,
    /// Where this flow's pending events sit in the table's event list.
    ev: EventSlot,
}

/// The events of one flow not yet taken by the detector, one per direction: later packets of
/// the same second merge into them. Bookkeeping of the table, not part of a flow's value, so
/// it compares equal always (a flow's identity and counters decide equality).
#[derive(Clone, Copy, Debug, Default)]
struct EventSlot {
    /// The table's event generation these indexes belong to (0: none).
    generation: u32,
    /// Index + 1 into the event list, per direction (forward, reverse); 0: none.
    at: [u32; 2],
}

impl PartialEq for EventSlot {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

/// Why a flow record was emitted.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum EndReason {
    Active,
    Idle,
    ActiveTimeout,
    /// A new SYN reused the 5-tuple of a connection already closed (FIN both ways, or RST).
    Reused,
    /// Closed (FIN both ways, or RST) and then quiet for the close timeout.
    Closed,
    Flush,
}

impl Flow {
    pub fn packets(&self) -> u64 {
        self.fwd.packets + self.rev.packets
    }

    pub fn bytes(&self) -> u64 {
        self.fwd.bytes + self.rev.bytes
    }

    pub fn duration(&self) -> Duration {
        Duration::from_nanos(self.last_seen_ns.saturating_sub(self.first_seen_ns))
    }
}

fn addr(bytes: [u8; 16], fam: u8) -> IpAddr {
    let v6 = Ipv6Addr::from(bytes);
    match fam {
        family::IPV6 => IpAddr::V6(v6),
        _ => IpAddr::V4(v6.to_ipv4_mapped().unwrap_or(Ipv4Addr::UNSPECIFIED)),
    }
}

/// What one update adds to a flow (one packet, or a kernel delta of several).
#[derive(Clone, Copy, Debug, Default)]
pub struct Delta {
    pub packets: u64,
    pub bytes: u64,
    pub first_ns: u64,
    pub last_ns: u64,
    pub syn: u64,
    pub syn_ack: u64,
    pub fin: u64,
    pub rst: u64,
    pub psh: u64,
    pub ack_only: u64,
    pub echo: u64,
    pub fragments: u64,
    /// Sum of the squared lengths (0: unknown, the delta's packets count as its mean length).
    pub len_sq: f64,
    pub min_len: u32,
    pub max_len: u32,
}

impl Delta {
    /// One packet of `len` wire bytes at `ts_ns`.
    pub fn packet(p: &Parsed, len: u32, ts_ns: u64) -> Self {
        let f = p.tcp_flags;
        let syn = f & tcp::SYN != 0;
        let ack = f & tcp::ACK != 0;
        Self {
            packets: 1,
            bytes: u64::from(len),
            first_ns: ts_ns,
            last_ns: ts_ns,
            syn: u64::from(syn && !ack),
            syn_ack: u64::from(syn && ack),
            fin: u64::from(f & tcp::FIN != 0),
            rst: u64::from(f & tcp::RST != 0),
            psh: u64::from(f & tcp::PSH != 0),
            ack_only: u64::from(
                ack && f & (tcp::SYN | tcp::FIN | tcp::RST | tcp::PSH | tcp::URG) == 0,
            ),
            echo: u64::from(p.echo),
            fragments: u64::from(p.fragment),
            len_sq: f64::from(len) * f64::from(len),
            min_len: len,
            max_len: len,
        }
    }
}

/// One update of one flow, for detectors that work on rates and fan-out rather than on
/// finished flows. Oriented like the flow: `src` is the initiator.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FlowEvent {
    /// Data time of the update's last packet, ns since the epoch.
    pub ts_ns: u64,
    pub src: IpAddr,
    pub dst: IpAddr,
    /// The initiator's port (0 for ICMP, ARP and non-first fragments).
    pub src_port: u16,
    pub dst_port: u16,
    pub proto: u8,
    pub family: u8,
    /// `dst_port` of the directional key as seen (ICMP type/code, ARP opcode).
    pub key_dst_port: u16,
    /// The first update of this flow.
    pub new_flow: bool,
    /// Sent by the initiator (else by the responder).
    pub from_src: bool,
    pub packets: u64,
    pub bytes: u64,
    pub syn: u64,
    pub syn_ack: u64,
    pub rst: u64,
    /// This update completed the flow's TCP handshake.
    pub completed: bool,
}

/// Counters of the table itself.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct TableStats {
    pub flows_created: u64,
    pub flows_emitted: u64,
    /// Packets of new flows refused because `max_flows` were active.
    pub dropped_packets_by_cap: u64,
    pub dropped_flows_by_cap: u64,
}

/// The flow table.
pub struct FlowTable {
    cfg: FlowConfig,
    flows: FlowMap<Flow>,
    /// Latest data time seen, ns.
    now_ns: u64,
    next_sweep_ns: u64,
    stats: TableStats,
    record_events: bool,
    events: Vec<FlowEvent>,
    /// Bumped each time the events are taken, which invalidates every flow's [`EventSlot`].
    event_generation: u32,
}

/// Shortest data-time interval between timeout sweeps. Sweeps only free memory and emit
/// finished flows early; the timeouts themselves are also applied when a packet arrives.
const MIN_SWEEP_NS: u64 = 1_000_000_000;

impl FlowTable {
    pub fn new(cfg: FlowConfig) -> Self {
        // Start big enough for a busy link so the table rarely rehashes while traffic flows.
        let n = cfg.max_flows.min(1 << 16);
        Self::with_capacity(cfg, n)
    }

    /// A table sized for `n` flows from the start (at most `max_flows`): live, `n` is the
    /// kernel flow map's size, so a flood filling the map never makes the table grow (a
    /// doubling of a million-flow table copies hundreds of megabytes inside one poll). The
    /// storage is reserved, not touched: memory is resident only as flows arrive.
    pub fn with_capacity(cfg: FlowConfig, n: usize) -> Self {
        let flows = FlowMap::with_capacity(n.min(cfg.max_flows).max(16));
        Self {
            cfg,
            flows,
            now_ns: 0,
            next_sweep_ns: 0,
            stats: TableStats::default(),
            record_events: false,
            events: Vec::new(),
            event_generation: 1,
        }
    }

    pub fn len(&self) -> usize {
        self.flows.len()
    }

    pub fn is_empty(&self) -> bool {
        self.flows.is_empty()
    }

    pub fn stats(&self) -> TableStats {
        self.stats
    }

    /// Adds one packet; finished flows go to `out`.
    pub fn packet(&mut self, p: &Parsed, wire_len: u32, ts_ns: u64, out: &mut impl FnMut(Flow)) {
        let d = Delta::packet(p, wire_len, ts_ns);
        self.update(&p.key, &d, true, out);
    }

    /// Adds packets `(parsed, wire length, timestamp)` in order, exactly as `packet` one by
    /// one would, but starts the memory reads of each group before processing it, so the cache
    /// misses of a busy table overlap.
    pub fn packets(&mut self, batch: &[(Parsed, u32, u64)], out: &mut impl FnMut(Flow)) {
        const GROUP: usize = 16;
        let mut keys = [(BiKey::default(), false, 0u64); GROUP];
        for group in batch.chunks(GROUP) {
            for (slot, (p, _, _)) in keys.iter_mut().zip(group) {
                let (bk, lo_to_hi) = BiKey::of(&p.key);
                let h = FlowMap::<Flow>::hash(&bk);
                self.flows.prefetch_slot(h);
                *slot = (bk, lo_to_hi, h);
            }
            for (_, _, h) in &keys[..group.len()] {
                self.flows.prefetch_entry(*h);
            }
            for ((bk, lo_to_hi, h), (p, len, ts)) in keys.iter().zip(group) {
                let d = Delta::packet(p, *len, *ts);
                self.update_hashed(*bk, *lo_to_hi, *h, p.key.dst_port, &d, true, out);
            }
        }
    }

    /// Adds `d` to the flow of directional key `k`. `per_packet` says `d` is a single packet, so
    /// length and inter-arrival moments are exact.
    pub fn update(&mut self, k: &FlowKey, d: &Delta, per_packet: bool, out: &mut impl FnMut(Flow)) {
        let (bk, lo_to_hi) = BiKey::of(k);
        let h = FlowMap::<Flow>::hash(&bk);
        self.update_hashed(bk, lo_to_hi, h, k.dst_port, d, per_packet, out);
    }

    #[allow(
        clippy::too_many_arguments,
        reason = "the hot path passes precomputed parts"
    )]
    fn update_hashed(
        &mut self,
        bk: BiKey,
        lo_to_hi: bool,
        h: u64,
        k_dst_port: u16,
        d: &Delta,
        per_packet: bool,
        out: &mut impl FnMut(Flow),
    ) {
        self.advance_to(d.last_ns, out);
        let idle = self.cfg.idle_timeout.as_nanos() as u64;
        let active = self.cfg.active_timeout.as_nanos() as u64;
        let close = self.cfg.close_timeout.as_nanos() as u64;
        let flow = match self.flows.find(h, &bk) {
            Some(id) => {
                // Timeouts are applied here too, so results never depend on when sweeps ran.
                let f = self.flows.get_mut(id);
                let closed_quiet = ended(f) && d.first_ns >= f.last_seen_ns.saturating_add(close);
                if closed_quiet || d.first_ns >= f.last_seen_ns.saturating_add(idle) {
                    let mut done = new_flow(&bk, lo_to_hi, d.first_ns);
                    std::mem::swap(&mut done, f);
                    done.end =
                        if ended(&done) && d.first_ns < done.last_seen_ns.saturating_add(idle) {
                            EndReason::Closed
                        } else {
                            EndReason::Idle
                        };
                    self.stats.flows_emitted += 1;
                    self.stats.flows_created += 1;
                    out(done);
                } else if d.first_ns >= f.first_seen_ns.saturating_add(active) {
                    let mut done = f.clone();
                    done.end = EndReason::ActiveTimeout;
                    self.stats.flows_emitted += 1;
                    out(done);
                    restart(f, d.first_ns);
                }
                f
            }
            None => {
                if self.flows.len() >= self.cfg.max_flows {
                    self.stats.dropped_flows_by_cap += 1;
                    self.stats.dropped_packets_by_cap += d.packets;
                    return;
                }
                self.stats.flows_created += 1;
                // A first packet that is a SYN-ACK was sent by the responder.
                let initiator_is_sender = !(d.syn_ack > 0 && d.syn == 0);
                let id = self.flows.insert(
                    h,
                    bk,
                    new_flow(&bk, lo_to_hi == initiator_is_sender, d.first_ns),
                );
                self.flows.get_mut(id)
            }
        };
        if d.syn > 0 && flow.proto == proto::TCP && flow.family != family::ARP && closed(flow) {
            // The 5-tuple is being reused for a new connection: finish the old one.
            let mut done = new_flow(&bk, lo_to_hi, d.first_ns);
            std::mem::swap(&mut done, flow);
            done.end = EndReason::Reused;
            self.stats.flows_emitted += 1;
            self.stats.flows_created += 1;
            out(done);
        }
        let from_fwd = lo_to_hi == flow.fwd_is_lo;
        if !from_fwd && d.syn > 0 && !flow.fwd_sent_syn {
            flip(flow);
        }
        let from_fwd = lo_to_hi == flow.fwd_is_lo;
        let new_flow = flow.packets() == 0;
        apply(flow, d, from_fwd, per_packet);
        // The initiator's ACK (or data) after the responder's SYN-ACK completes a handshake.
        // Where only the initiator's side is seen (asymmetric routing, one interface watched),
        // its ACK after its own SYN is the proof: a client proceeds only once answered.
        let answered = flow.syn_ack > 0 || (flow.rev.packets == 0 && flow.fwd_sent_syn);
        let completed = from_fwd
            && flow.proto == proto::TCP
            && !flow.handshake_done
            && answered
            && (d.ack_only > 0 || d.psh > 0 || (d.packets > d.syn + d.syn_ack + d.rst + d.fin));
        if completed {
            flow.handshake_done = true;
        }
        if self.record_events {
            let ev = FlowEvent {
                ts_ns: d.last_ns,
                src: flow.src,
                dst: flow.dst,
                src_port: flow.src_port,
                dst_port: flow.dst_port,
                proto: flow.proto,
                family: flow.family,
                key_dst_port: k_dst_port,
                new_flow,
                from_src: from_fwd,
                packets: d.packets,
                bytes: d.bytes,
                syn: d.syn,
                syn_ack: d.syn_ack,
                rst: d.rst,
                completed,
            };
            record_event(&mut self.events, self.event_generation, &mut flow.ev, ev);
        }
    }

    /// Turns per-update [`FlowEvent`]s on (detection needs them; plain replay does not).
    pub fn record_events(&mut self, on: bool) {
        self.record_events = on;
    }

    pub fn records_events(&self) -> bool {
        self.record_events
    }

    /// Events recorded since the last call, in the order of their first packet.
    pub fn take_events(&mut self) -> std::vec::Drain<'_, FlowEvent> {
        self.event_generation = self.event_generation.wrapping_add(1).max(1);
        self.events.drain(..)
    }

    /// Events waiting to be taken.
    pub fn pending_events(&self) -> usize {
        self.events.len()
    }

    /// Data second of the oldest pending event.
    pub fn pending_since_s(&self) -> Option<u64> {
        self.events.first().map(|e| e.ts_ns / NS)
    }

    fn sweep_interval_ns(&self) -> u64 {
        let shortest = self
            .cfg
            .idle_timeout
            .min(self.cfg.active_timeout)
            .min(self.cfg.close_timeout)
            .as_nanos() as u64;
        (shortest / 8).max(MIN_SWEEP_NS)
    }

    /// Emits flows idle past the timeout and restarts those past the active timeout.
    pub fn sweep(&mut self, out: &mut impl FnMut(Flow)) {
        let now = self.now_ns;
        let idle = self.cfg.idle_timeout.as_nanos() as u64;
        let active = self.cfg.active_timeout.as_nanos() as u64;
        let close = self.cfg.close_timeout.as_nanos() as u64;
        let mut emitted = 0;
        for id in self.flows.ids() {
            let f = self.flows.get_mut(id);
            let quiet = now.saturating_sub(f.last_seen_ns);
            let closed_quiet = quiet >= close && ended(f);
            if closed_quiet || quiet >= idle {
                if let Some(mut done) = self.flows.remove(id) {
                    done.end = if quiet < idle {
                        EndReason::Closed
                    } else {
                        EndReason::Idle
                    };
                    out(done);
                    emitted += 1;
                }
            } else if now.saturating_sub(f.first_seen_ns) >= active {
                let mut done = f.clone();
                done.end = EndReason::ActiveTimeout;
                out(done);
                emitted += 1;
                restart(f, now);
            }
        }
        self.stats.flows_emitted += emitted;
    }

    /// Moves the data clock to `now_ns` without a packet (live: the poll time), running a
    /// timeout sweep when one is due.
    pub fn advance_to(&mut self, now_ns: u64, out: &mut impl FnMut(Flow)) {
        if now_ns > self.now_ns {
            self.now_ns = now_ns;
        }
        if self.now_ns >= self.next_sweep_ns {
            self.sweep(out);
            self.next_sweep_ns = self.now_ns + self.sweep_interval_ns();
        }
    }

    /// Emits every flow still held (end of a replay, shutdown).
    pub fn flush(&mut self, out: &mut impl FnMut(Flow)) {
        // Order by start without moving the flows themselves (they are large).
        let mut order: Vec<(u64, u32)> = self
            .flows
            .ids()
            .into_iter()
            .map(|id| (self.flows.get_mut(id).first_seen_ns, id))
            .collect();
        order.sort_unstable();
        self.stats.flows_emitted += order.len() as u64;
        for mut f in order.into_iter().filter_map(|(_, id)| self.flows.take(id)) {
            f.end = EndReason::Flush;
            out(f);
        }
        self.flows.clear();
    }

    /// Flows currently held (for live views).
    pub fn active(&self) -> impl Iterator<Item = &Flow> {
        self.flows.values()
    }
}

/// Adds `ev` to the pending `events`, merged into the same flow's pending event of the same
/// direction and second when there is one: the rules count per second, and a busy flow then
/// costs them one event per second instead of one per packet (the kernel path's polled
/// deltas arrive merged the same way).
fn record_event(events: &mut Vec<FlowEvent>, generation: u32, slot: &mut EventSlot, ev: FlowEvent) {
    let dir = usize::from(!ev.from_src);
    if ev.new_flow || slot.generation != generation {
        *slot = EventSlot {
            generation,
            at: [0, 0],
        };
    } else if let Some(e) = slot.at[dir]
        .checked_sub(1)
        .and_then(|i| events.get_mut(i as usize))
        && e.ts_ns / NS == ev.ts_ns / NS
        && e.key_dst_port == ev.key_dst_port
        && e.from_src == ev.from_src
    {
        e.ts_ns = e.ts_ns.max(ev.ts_ns);
        e.packets += ev.packets;
        e.bytes += ev.bytes;
        e.syn += ev.syn;
        e.syn_ack += ev.syn_ack;
        e.rst += ev.rst;
        e.completed |= ev.completed;
        return;
    }
    events.push(ev);
    slot.at[dir] = u32::try_from(events.len()).unwrap_or(0);
}

const NS: u64 = 1_000_000_000;

fn new_flow(k: &BiKey, fwd_is_lo: bool, ts: u64) -> Flow {
    let (s, d, sp, dp) = if fwd_is_lo {
        (k.lo_addr, k.hi_addr, k.lo_port, k.hi_port)
    } else {
        (k.hi_addr, k.lo_addr, k.hi_port, k.lo_port)
    };
    let icmp_like = k.family == family::ARP || k.proto == proto::ICMP || k.proto == proto::ICMPV6;
    Flow {
        src: addr(s, k.family),
        dst: addr(d, k.family),
        src_port: if icmp_like { 0 } else { sp },
        dst_port: if icmp_like { k.hi_port } else { dp },
        proto: k.proto,
        family: k.family,
        fwd: DirStats::default(),
        rev: DirStats::default(),
        first_seen_ns: ts,
        last_seen_ns: ts,
        syn: 0,
        syn_ack: 0,
        fin: 0,
        rst: 0,
        psh: 0,
        ack_only: 0,
        echo_requests: 0,
        fragments: 0,
        min_len: u32::MAX,
        max_len: 0,
        len: Moments::default(),
        iat_us: Moments::default(),
        end: EndReason::Active,
        fwd_is_lo,
        fwd_sent_syn: false,
        fin_fwd: false,
        fin_rev: false,
        handshake_done: false,
        ev: EventSlot::default(),
    }
}

/// The responder turned out to be the initiator (its SYN arrived after our first packet).
fn flip(f: &mut Flow) {
    // Pending events were oriented the old way round.
    f.ev = EventSlot::default();
    std::mem::swap(&mut f.src, &mut f.dst);
    if f.family != family::ARP && f.proto != proto::ICMP && f.proto != proto::ICMPV6 {
        std::mem::swap(&mut f.src_port, &mut f.dst_port);
    }
    std::mem::swap(&mut f.fwd, &mut f.rev);
    f.fwd_is_lo = !f.fwd_is_lo;
}

fn closed(f: &Flow) -> bool {
    f.rst > 0 || (f.fin_fwd && f.fin_rev)
}

/// Whether a TCP flow is over once quiet for the close timeout: closed (RST, FIN both ways),
/// or, where only the initiator's side is seen (a host's own interface sees its ingress, one
/// leg of an asymmetric path), ended by the initiator's FIN or made of nothing but SYNs: the
/// RST or FIN that answered it passed where the sensor does not look, and a handshake attempt
/// that went quiet has failed. Live scans' flows then finish in seconds, as in a replay of a
/// capture holding both directions.
fn ended(f: &Flow) -> bool {
    closed(f)
        || (f.proto == proto::TCP
            && f.family != family::ARP
            && f.rev.packets == 0
            && (f.fin_fwd || (f.syn > 0 && u64::from(f.syn) >= f.fwd.packets)))
}

fn restart(f: &mut Flow, now: u64) {
    f.fwd = DirStats::default();
    f.rev = DirStats::default();
    f.first_seen_ns = now;
    f.last_seen_ns = now;
    (
        f.syn,
        f.syn_ack,
        f.fin,
        f.rst,
        f.psh,
        f.ack_only,
        f.echo_requests,
        f.fragments,
    ) = (0, 0, 0, 0, 0, 0, 0, 0);
    f.min_len = u32::MAX;
    f.max_len = 0;
    f.len = Moments::default();
    f.iat_us = Moments::default();
}

fn apply(f: &mut Flow, d: &Delta, from_fwd: bool, per_packet: bool) {
    let had_packets = f.fwd.packets + f.rev.packets > 0;
    let dir = if from_fwd { &mut f.fwd } else { &mut f.rev };
    dir.packets += d.packets;
    dir.bytes += d.bytes;
    if per_packet && had_packets && d.first_ns >= f.last_seen_ns {
        f.iat_us.push((d.first_ns - f.last_seen_ns) as f64 / 1000.0);
    }
    if !had_packets || d.first_ns < f.first_seen_ns {
        f.first_seen_ns = d.first_ns;
    }
    if d.last_ns > f.last_seen_ns {
        f.last_seen_ns = d.last_ns;
    }
    let add = |c: &mut u32, n: u64| *c = c.saturating_add(u32::try_from(n).unwrap_or(u32::MAX));
    add(&mut f.syn, d.syn);
    add(&mut f.syn_ack, d.syn_ack);
    add(&mut f.fin, d.fin);
    add(&mut f.rst, d.rst);
    add(&mut f.psh, d.psh);
    add(&mut f.ack_only, d.ack_only);
    add(&mut f.echo_requests, d.echo);
    add(&mut f.fragments, d.fragments);
    if from_fwd && d.syn > 0 {
        f.fwd_sent_syn = true;
    }
    if d.fin > 0 {
        if from_fwd {
            f.fin_fwd = true
        } else {
            f.fin_rev = true
        }
    }
    f.min_len = f.min_len.min(d.min_len);
    f.max_len = f.max_len.max(d.max_len);
    if d.packets == 1 {
        f.len.push(d.bytes as f64);
    } else if d.len_sq > 0.0 {
        f.len.push_sums(d.packets, d.bytes as f64, d.len_sq);
    } else if d.packets > 0 {
        f.len.push_n(d.bytes as f64 / d.packets as f64, d.packets);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::packet::Parsed;

    const S: u64 = 1_000_000_000;

    fn v4(a: u8) -> [u8; 16] {
        Ipv4Addr::new(10, 0, 0, a).to_ipv6_mapped().octets()
    }

    fn pkt(src: u8, dst: u8, sport: u16, dport: u16, proto_: u8, flags: u8) -> Parsed {
        Parsed {
            key: FlowKey {
                src_addr: v4(src),
                dst_addr: v4(dst),
                src_port: sport,
                dst_port: dport,
                proto: proto_,
                family: family::IPV4,
                _pad: [0; 2],
            },
            tcp_flags: flags,
            echo: false,
            fragment: false,
        }
    }

    fn run(cfg: FlowConfig, packets: &[(u64, Parsed)]) -> (Vec<Flow>, FlowTable) {
        let mut t = FlowTable::new(cfg);
        let mut out = Vec::new();
        for (ts, p) in packets {
            t.packet(p, 100, *ts, &mut |f| out.push(f));
        }
        (out, t)
    }

    fn drain(mut t: FlowTable, mut out: Vec<Flow>) -> Vec<Flow> {
        t.flush(&mut |f| out.push(f));
        out
    }

    /// Completion events: with both sides in view the SYN-ACK is needed; with only the
    /// client's side in view (asymmetric routing, one interface watched), its ACK after its SYN
    /// is the proof that it was answered.
    #[test]
    fn handshakes_complete_on_the_answer_or_on_the_clients_ack_when_alone() {
        let completed = |packets: &[(u64, Parsed)]| {
            let mut t = FlowTable::new(FlowConfig::default());
            t.record_events(true);
            for (ts, p) in packets {
                t.packet(p, 60, *ts, &mut |_| {});
            }
            t.take_events().filter(|e| e.completed).count()
        };
        let syn = pkt(1, 2, 40000, 443, proto::TCP, tcp::SYN);
        let ack = pkt(1, 2, 40000, 443, proto::TCP, tcp::ACK);
        let syn_ack = pkt(2, 1, 443, 40000, proto::TCP, tcp::SYN | tcp::ACK);
        let rst = pkt(2, 1, 443, 40000, proto::TCP, tcp::RST | tcp::ACK);
        assert_eq!(completed(&[(S, syn), (S + 1, syn_ack), (S + 2, ack)]), 1);
        assert_eq!(completed(&[(S, syn), (S + 2, ack)]), 1, "client side only");
        assert_eq!(
            completed(&[(S, syn), (S + 1, rst), (S + 2, ack)]),
            0,
            "refused"
        );
        assert_eq!(completed(&[(S, syn), (S + 1, syn)]), 0, "a retransmission");
        assert_eq!(completed(&[(S, ack)]), 0, "an ACK probe");
    }

    /// A flow's packets of one second and one direction become one event with their sums;
    /// a new second, the other direction, a new flow or taking the events starts another.
    #[test]
    fn events_merge_per_flow_direction_and_second() {
        let mut t = FlowTable::new(FlowConfig::default());
        t.record_events(true);
        let syn = pkt(1, 2, 40000, 80, proto::TCP, tcp::SYN);
        let syn_ack = pkt(2, 1, 80, 40000, proto::TCP, tcp::SYN | tcp::ACK);
        let ack = pkt(1, 2, 40000, 80, proto::TCP, tcp::ACK);
        let other = pkt(3, 2, 40001, 80, proto::TCP, tcp::SYN);
        for (ts, p) in [
            (S, syn),
            (S + 1, other),
            (S + 2, syn_ack),
            (S + 3, ack),
            (S + 4, ack),
            (2 * S, ack),
        ] {
            t.packet(&p, 60, ts, &mut |_| {});
        }
        let got: Vec<(u64, bool, bool, u64, u64, bool)> = t
            .take_events()
            .map(|e| {
                (
                    e.ts_ns,
                    e.new_flow,
                    e.from_src,
                    e.packets,
                    e.syn,
                    e.completed,
                )
            })
            .collect();
        assert_eq!(
            got,
            [
                // SYN and two ACKs of the first second, one event; the handshake completed.
                (S + 4, true, true, 3, 1, true),
                (S + 1, true, true, 1, 1, false),
                (S + 2, false, false, 1, 0, false),
                (2 * S, false, true, 1, 0, false),
            ]
        );
        t.packet(&ack, 60, 2 * S + 1, &mut |_| {});
        assert_eq!(
            t.take_events().map(|e| e.packets).collect::<Vec<_>>(),
            [1],
            "events already taken are never merged into"
        );
    }

    #[test]
    fn first_packet_sender_is_the_source_and_directions_are_counted() {
        let (out, t) = run(
            FlowConfig::default(),
            &[
                (S, pkt(1, 2, 40000, 80, proto::TCP, tcp::SYN)),
                (S + 1, pkt(2, 1, 80, 40000, proto::TCP, tcp::SYN | tcp::ACK)),
                (S + 2, pkt(1, 2, 40000, 80, proto::TCP, tcp::ACK)),
            ],
        );
        let flows = drain(t, out);
        assert_eq!(flows.len(), 1);
        let f = &flows[0];
        assert_eq!(
            (f.src, f.src_port, f.dst_port),
            (IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1)), 40000, 80)
        );
        assert_eq!(
            (f.fwd.packets, f.rev.packets, f.fwd.bytes, f.rev.bytes),
            (2, 1, 200, 100)
        );
        assert_eq!((f.syn, f.syn_ack, f.ack_only), (1, 1, 1));
        assert_eq!(f.iat_us.n, 2);
    }

    #[test]
    fn a_capture_starting_with_the_syn_ack_credits_the_syn_sender() {
        let (out, t) = run(
            FlowConfig::default(),
            &[
                (S, pkt(2, 1, 80, 40000, proto::TCP, tcp::SYN | tcp::ACK)),
                (S + 1, pkt(1, 2, 40000, 80, proto::TCP, tcp::ACK)),
            ],
        );
        let f = &drain(t, out)[0];
        assert_eq!(
            (f.src_port, f.dst_port, f.fwd.packets, f.rev.packets),
            (40000, 80, 1, 1)
        );
    }

    #[test]
    fn a_later_syn_from_the_other_side_makes_it_the_initiator() {
        let (out, t) = run(
            FlowConfig::default(),
            &[
                (S, pkt(2, 1, 80, 40000, proto::TCP, tcp::ACK)),
                (S + 1, pkt(1, 2, 40000, 80, proto::TCP, tcp::SYN)),
            ],
        );
        let f = &drain(t, out)[0];
        assert_eq!(
            (f.src_port, f.dst_port, f.fwd.packets, f.rev.packets),
            (40000, 80, 1, 1)
        );
    }

    #[test]
    fn idle_timeout_runs_on_packet_time() {
        let cfg = FlowConfig {
            idle_timeout: Duration::from_secs(60),
            ..FlowConfig::default()
        };
        let p = pkt(1, 2, 1000, 53, proto::UDP, 0);
        let (out, t) = run(cfg, &[(10 * S, p), (20 * S, p), (200 * S, p)]);
        assert_eq!(out.len(), 1, "the gap of 180 s ends the first flow");
        assert_eq!((out[0].packets(), out[0].end), (2, EndReason::Idle));
        let all = drain(t, out);
        assert_eq!((all[1].packets(), all[1].first_seen_ns), (1, 200 * S));
    }

    #[test]
    fn active_timeout_reports_long_flows_while_they_last() {
        let cfg = FlowConfig {
            active_timeout: Duration::from_secs(100),
            ..FlowConfig::default()
        };
        let p = pkt(1, 2, 1000, 53, proto::UDP, 0);
        let packets: Vec<_> = (0..=35).map(|i| (i * 10 * S, p)).collect();
        let (out, t) = run(cfg, &packets);
        assert!(
            out.len() >= 3,
            "350 s at a 100 s active timeout: {} records",
            out.len()
        );
        assert!(out.iter().all(|f| f.end == EndReason::ActiveTimeout));
        let total: u64 = drain(t, out).iter().map(Flow::packets).sum();
        assert_eq!(total, 36, "no packet lost or counted twice across restarts");
    }

    #[test]
    fn closed_connections_finish_after_the_close_timeout_and_late_packets_stay_in_them() {
        let cfg = FlowConfig {
            close_timeout: Duration::from_secs(10),
            ..FlowConfig::default()
        };
        let p = |a, b, sp, dp, fl| pkt(a, b, sp, dp, proto::TCP, fl);
        let (out, t) = run(
            cfg,
            &[
                (S, p(1, 2, 5, 80, tcp::SYN)),
                (S, p(2, 1, 80, 5, tcp::SYN | tcp::ACK)),
                (S, p(1, 2, 5, 80, tcp::ACK)),
                (2 * S, p(1, 2, 5, 80, tcp::FIN | tcp::ACK)),
                (2 * S, p(2, 1, 80, 5, tcp::FIN | tcp::ACK)),
                // A late retransmission within the close timeout joins the same flow.
                (5 * S, p(1, 2, 5, 80, tcp::ACK)),
                // An open connection on another port is not affected.
                (5 * S, p(1, 2, 6, 80, tcp::SYN)),
                (5 * S, p(2, 1, 80, 6, tcp::SYN | tcp::ACK)),
                (5 * S, p(1, 2, 6, 80, tcp::ACK)),
                (30 * S, pkt(3, 4, 7, 7, proto::UDP, 0)),
            ],
        );
        assert_eq!(out.len(), 1, "only the closed connection ends: {out:?}");
        assert_eq!((out[0].packets(), out[0].end), (6, EndReason::Closed));
        assert_eq!(t.len(), 2);
    }

    /// Seen from one side only (a host's ingress), a scan's probes and a client's closed
    /// connection end at the close timeout, not the idle timeout: the answers (RST, the
    /// other FIN) passed where the sensor does not look. An answered flow is not cut short.
    #[test]
    fn one_sided_probes_and_closes_finish_at_the_close_timeout() {
        let p = |a, b, sp, dp, fl| pkt(a, b, sp, dp, proto::TCP, fl);
        let (out, t) = run(
            FlowConfig::default(),
            &[
                // A SYN probe and its retransmission, nothing back.
                (S, p(1, 2, 5, 22, tcp::SYN)),
                (2 * S, p(1, 2, 5, 22, tcp::SYN)),
                // A client's side of a whole connection: SYN, ACK, data, FIN.
                (S, p(1, 2, 6, 80, tcp::SYN)),
                (S, p(1, 2, 6, 80, tcp::ACK)),
                (S, p(1, 2, 6, 80, tcp::PSH | tcp::ACK)),
                (2 * S, p(1, 2, 6, 80, tcp::FIN | tcp::ACK)),
                // A connection seen both ways, idle but open: stays.
                (S, p(1, 3, 7, 443, tcp::SYN)),
                (S, p(3, 1, 443, 7, tcp::SYN | tcp::ACK)),
                (S, p(1, 3, 7, 443, tcp::ACK)),
                (15 * S, pkt(8, 9, 7, 7, proto::UDP, 0)),
            ],
        );
        let mut ended: Vec<(u16, u64, EndReason)> = out
            .iter()
            .map(|f| (f.dst_port, f.packets(), f.end))
            .collect();
        ended.sort_unstable_by_key(|e| e.0);
        assert_eq!(
            ended,
            vec![(22, 2, EndReason::Closed), (80, 4, EndReason::Closed)],
            "{out:?}"
        );
        assert_eq!(t.len(), 2, "the answered connection and the UDP flow stay");
    }

    #[test]
    fn the_flow_cap_drops_and_counts_new_flows() {
        let cfg = FlowConfig {
            max_flows: 2,
            ..FlowConfig::default()
        };
        let (out, t) = run(
            cfg,
            &[
                (S, pkt(1, 2, 1, 1, proto::UDP, 0)),
                (S, pkt(1, 2, 2, 2, proto::UDP, 0)),
                (S, pkt(1, 2, 3, 3, proto::UDP, 0)),
                (S, pkt(1, 2, 3, 3, proto::UDP, 0)),
                (S, pkt(1, 2, 1, 1, proto::UDP, 0)),
            ],
        );
        assert_eq!(t.len(), 2);
        assert_eq!(
            (
                t.stats().dropped_flows_by_cap,
                t.stats().dropped_packets_by_cap
            ),
            (2, 2)
        );
        assert_eq!(drain(t, out).iter().map(Flow::packets).sum::<u64>(), 3);
    }

    #[test]
    fn icmp_echo_and_reply_are_one_flow_and_port_reuse_splits_tcp() {
        let mut req = pkt(1, 2, 0, 8 << 8, proto::ICMP, 0);
        req.echo = true;
        let rep = pkt(2, 1, 0, 0, proto::ICMP, 0);
        let (out, t) = run(
            FlowConfig::default(),
            &[
                (S, req),
                (S + 5, rep),
                (2 * S, pkt(1, 2, 5, 80, proto::TCP, tcp::SYN)),
                (2 * S, pkt(2, 1, 80, 5, proto::TCP, tcp::RST | tcp::ACK)),
                (3 * S, pkt(1, 2, 5, 80, proto::TCP, tcp::SYN)),
            ],
        );
        assert_eq!(
            out.len(),
            1,
            "the second SYN after RST starts a new connection"
        );
        assert_eq!(out[0].end, EndReason::Reused);
        let all = drain(t, out);
        let icmp = all
            .iter()
            .find(|f| f.proto == proto::ICMP)
            .expect("icmp flow");
        assert_eq!(
            (
                icmp.fwd.packets,
                icmp.rev.packets,
                icmp.echo_requests,
                icmp.dst_port
            ),
            (1, 1, 1, 8 << 8)
        );
        assert_eq!(all.len(), 3);
    }

    #[test]
    fn moments_merge_constant_groups_exactly() {
        let mut a = Moments::default();
        let mut b = Moments::default();
        for x in [3.0, 3.0, 3.0, 7.0, 7.0] {
            a.push(x);
        }
        b.push_n(3.0, 3);
        b.push_n(7.0, 2);
        assert!((a.mean - b.mean).abs() < 1e-12 && (a.std() - b.std()).abs() < 1e-12);
    }

    /// A kernel delta's sums (packets, bytes, squared lengths) give the same length spread as
    /// the packets one by one, whatever the mix: what makes live and replay flows agree.
    #[test]
    fn moments_from_sums_match_the_packets() {
        let lens = [66.0, 1514.0, 66.0, 66.0, 900.0, 1514.0, 54.0];
        let mut a = Moments::default();
        for x in lens {
            a.push(x);
        }
        let mut b = Moments::default();
        for part in [&lens[..3], &lens[3..4], &lens[4..]] {
            let sum: f64 = part.iter().sum();
            let sq: f64 = part.iter().map(|x| x * x).sum();
            b.push_sums(part.len() as u64, sum, sq);
        }
        assert_eq!(a.n, b.n);
        assert!((a.mean - b.mean).abs() < 1e-9, "{a:?} {b:?}");
        assert!((a.std() - b.std()).abs() < 1e-9, "{a:?} {b:?}");
    }
}
