//! Bidirectional flow table fed by packets (pcap path) or by kernel counter deltas (XDP path).
//!
//! Time is the data's own (packet timestamps in replay, kernel timestamps live): idle and active
//! timeouts never look at the wall clock, so a capture replayed at any speed gives the same
//! flows. Memory is bounded by `max_flows`; flows refused by the cap are counted.

use std::{net::IpAddr, time::Duration};

use sensor_common::{FlowKey, family, proto};

mod key;
pub mod map;

use self::key::addr;
pub use self::key::{BiKey, Delta};

use crate::{flow::map::FlowMap, packet::Parsed};

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
    /// Whether its TCP handshake completed.
    pub fn completed(&self) -> bool {
        self.handshake_done
    }

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

/// What the rules read of a finished flow (password guessing, beaconing): all the rules
/// history keeps of one, so a dry run feeds the rules what they saw live.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FlowFacts {
    pub src: IpAddr,
    pub dst: IpAddr,
    pub src_port: u16,
    pub dst_port: u16,
    pub proto: u8,
    pub family: u8,
    pub fwd: DirStats,
    pub rev: DirStats,
    pub first_seen_ns: u64,
    pub last_seen_ns: u64,
    pub end: EndReason,
    pub completed: bool,
}

impl Flow {
    pub fn facts(&self) -> FlowFacts {
        FlowFacts {
            src: self.src,
            dst: self.dst,
            src_port: self.src_port,
            dst_port: self.dst_port,
            proto: self.proto,
            family: self.family,
            fwd: self.fwd,
            rev: self.rev,
            first_seen_ns: self.first_seen_ns,
            last_seen_ns: self.last_seen_ns,
            end: self.end,
            completed: self.handshake_done,
        }
    }

    /// A flow carrying `f` (what the rules read) and nothing else.
    pub fn from_facts(f: &FlowFacts) -> Self {
        Self {
            src: f.src,
            dst: f.dst,
            src_port: f.src_port,
            dst_port: f.dst_port,
            proto: f.proto,
            family: f.family,
            fwd: f.fwd,
            rev: f.rev,
            first_seen_ns: f.first_seen_ns,
            last_seen_ns: f.last_seen_ns,
            syn: 0,
            syn_ack: 0,
            fin: 0,
            rst: 0,
            psh: 0,
            ack_only: 0,
            echo_requests: 0,
            fragments: 0,
            min_len: 0,
            max_len: 0,
            len: Moments::default(),
            iat_us: Moments::default(),
            end: f.end,
            fwd_is_lo: true,
            fwd_sent_syn: false,
            fin_fwd: false,
            fin_rev: false,
            handshake_done: f.completed,
            ev: EventSlot::default(),
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
mod tests;
