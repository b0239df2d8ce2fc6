//! The history's record format: one byte of kind, then the record, integers as LEB128
//! varints and times as signed deltas from the previous record of the segment.
//!
//! Hand-written rather than serde + a binary format: a record is 25-35 bytes where a generic
//! encoding of the same struct takes ~90 (addresses as 4 bytes for IPv4, counters of one second
//! in one or two bytes), and decoding is a byte walk with no allocation, which is what makes an
//! hour of history replay in seconds (docs/BENCHMARKS.md, "Rules history and dry run").

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use sensor_common::{HostKey, HostStats};

use crate::flow::{DirStats, EndReason, FlowEvent, FlowFacts};

/// First bytes of a segment file: the format and its version.
pub const MAGIC: &[u8; 8] = b"SNSRHST1";

/// One call the pipeline made into the detector, in the order it made them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Record {
    Event(FlowEvent),
    /// A finished flow (what the rules read of it).
    Flow(FlowFacts),
    /// Packets the kernel's flow map could not take, for one destination.
    Overflow {
        ts_ns: u64,
        key: HostKey,
        stats: HostStats,
    },
    /// Data time moved on (quiet alerts close).
    Tick(u64),
    /// The end of a batch: what waits for its answer grace is judged.
    Settle,
    /// The end of a run (a replay's end, the sensor stopped): every alert closed.
    End,
    /// Flow events and finished flows of the second ending at `ts_ns` that were not kept
    /// (`[history] max_records_per_s`): a dry run over it says so.
    Gap {
        ts_ns: u64,
        dropped: u64,
    },
}

const EVENT: u8 = 1;
const FLOW: u8 = 2;
const OVERFLOW: u8 = 3;
const TICK: u8 = 4;
const SETTLE: u8 = 5;
const END: u8 = 6;
const GAP: u8 = 7;

// Flag bits of events and flows.
const NEW_FLOW: u8 = 1;
const FROM_SRC: u8 = 2;
const COMPLETED: u8 = 4;
const SRC_V6: u8 = 8;
const DST_V6: u8 = 16;

impl Record {
    /// Data time of the record, if it carries one.
    pub fn ts_ns(&self) -> Option<u64> {
        match self {
            Self::Event(e) => Some(e.ts_ns),
            Self::Flow(f) => Some(f.last_seen_ns),
            Self::Overflow { ts_ns, .. } | Self::Tick(ts_ns) | Self::Gap { ts_ns, .. } => {
                Some(*ts_ns)
            }
            Self::Settle | Self::End => None,
        }
    }
}

/// Appends records to a buffer; times are deltas from the previous record's.
#[derive(Debug, Default)]
pub struct Encoder {
    last_ts: u64,
}

impl Encoder {
    pub fn put(&mut self, r: &Record, out: &mut Vec<u8>) {
        match r {
            Record::Event(e) => {
                let mut flags = 0;
                if e.new_flow {
                    flags |= NEW_FLOW;
                }
                if e.from_src {
                    flags |= FROM_SRC;
                }
                if e.completed {
                    flags |= COMPLETED;
                }
                flags |= addr_flags(e.src, e.dst);
                out.extend_from_slice(&[EVENT, flags]);
                self.ts(e.ts_ns, out);
                put_addr(e.src, out);
                put_addr(e.dst, out);
                out.extend_from_slice(&e.src_port.to_le_bytes());
                out.extend_from_slice(&e.dst_port.to_le_bytes());
                out.extend_from_slice(&e.key_dst_port.to_le_bytes());
                out.extend_from_slice(&[e.proto, e.family]);
                for v in [e.packets, e.bytes, e.syn, e.syn_ack, e.rst] {
                    varint(v, out);
                }
            }
            Record::Flow(f) => {
                let mut flags = addr_flags(f.src, f.dst);
                if f.completed {
                    flags |= COMPLETED;
                }
                out.extend_from_slice(&[FLOW, flags, end_code(f.end)]);
                self.ts(f.last_seen_ns, out);
                varint(f.last_seen_ns.saturating_sub(f.first_seen_ns), out);
                put_addr(f.src, out);
                put_addr(f.dst, out);
                out.extend_from_slice(&f.src_port.to_le_bytes());
                out.extend_from_slice(&f.dst_port.to_le_bytes());
                out.extend_from_slice(&[f.proto, f.family]);
                for v in [f.fwd.packets, f.fwd.bytes, f.rev.packets, f.rev.bytes] {
                    varint(v, out);
                }
            }
            Record::Overflow { ts_ns, key, stats } => {
                out.push(OVERFLOW);
                self.ts(*ts_ns, out);
                out.extend_from_slice(&key.addr);
                out.push(key.family);
                let s = stats;
                for v in [
                    s.packets,
                    s.bytes,
                    s.first_seen_ns,
                    s.last_seen_ns,
                    s.syn,
                    s.syn_ack,
                    s.rst,
                    s.udp,
                    s.icmp,
                    s.icmp_echo,
                ] {
                    varint(v, out);
                }
            }
            Record::Tick(ts) => {
                out.push(TICK);
                self.ts(*ts, out);
            }
            Record::Settle => out.push(SETTLE),
            Record::End => out.push(END),
            Record::Gap { ts_ns, dropped } => {
                out.push(GAP);
                self.ts(*ts_ns, out);
                varint(*dropped, out);
            }
        }
    }

    fn ts(&mut self, ts: u64, out: &mut Vec<u8>) {
        let d = ts.wrapping_sub(self.last_ts) as i64;
        varint(((d << 1) ^ (d >> 63)) as u64, out);
        self.last_ts = ts;
    }
}

/// Reads records back from a segment's bytes (after the magic).
pub struct Decoder<'a> {
    buf: &'a [u8],
    at: usize,
    last_ts: u64,
}

/// A record that does not decode: the bytes after it are not read (a segment cut short by a
/// crash ends in one).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Truncated {
    pub offset: usize,
}

impl<'a> Decoder<'a> {
    pub fn new(buf: &'a [u8]) -> Self {
        Self {
            buf,
            at: 0,
            last_ts: 0,
        }
    }

    /// The next record; `Ok(None)` at the end, `Err` at bytes that are not a whole record.
    pub fn next_record(&mut self) -> Result<Option<Record>, Truncated> {
        if self.at >= self.buf.len() {
            return Ok(None);
        }
        let start = self.at;
        let mut r = Reader {
            buf: self.buf,
            at: self.at,
        };
        let rec = (|| {
            Some(match r.u8()? {
                EVENT => {
                    let flags = r.u8()?;
                    let ts_ns = r.ts(&mut self.last_ts)?;
                    let src = r.addr(flags & SRC_V6 != 0)?;
                    let dst = r.addr(flags & DST_V6 != 0)?;
                    let (src_port, dst_port, key_dst_port) = (r.u16()?, r.u16()?, r.u16()?);
                    let (proto, family) = (r.u8()?, r.u8()?);
                    Record::Event(FlowEvent {
                        ts_ns,
                        src,
                        dst,
                        src_port,
                        dst_port,
                        proto,
                        family,
                        key_dst_port,
                        new_flow: flags & NEW_FLOW != 0,
                        from_src: flags & FROM_SRC != 0,
                        packets: r.varint()?,
                        bytes: r.varint()?,
                        syn: r.varint()?,
                        syn_ack: r.varint()?,
                        rst: r.varint()?,
                        completed: flags & COMPLETED != 0,
                    })
                }
                FLOW => {
                    let flags = r.u8()?;
                    let end = end_of(r.u8()?)?;
                    let last_seen_ns = r.ts(&mut self.last_ts)?;
                    let first_seen_ns = last_seen_ns.checked_sub(r.varint()?)?;
                    let src = r.addr(flags & SRC_V6 != 0)?;
                    let dst = r.addr(flags & DST_V6 != 0)?;
                    let (src_port, dst_port) = (r.u16()?, r.u16()?);
                    let (proto, family) = (r.u8()?, r.u8()?);
                    Record::Flow(FlowFacts {
                        src,
                        dst,
                        src_port,
                        dst_port,
                        proto,
                        family,
                        fwd: DirStats {
                            packets: r.varint()?,
                            bytes: r.varint()?,
                        },
                        rev: DirStats {
                            packets: r.varint()?,
                            bytes: r.varint()?,
                        },
                        first_seen_ns,
                        last_seen_ns,
                        end,
                        completed: flags & COMPLETED != 0,
                    })
                }
                OVERFLOW => {
                    let ts_ns = r.ts(&mut self.last_ts)?;
                    let addr: [u8; 16] = r.take(16)?.try_into().ok()?;
                    let key = HostKey {
                        addr,
                        family: r.u8()?,
                        _pad: [0; 3],
                    };
                    let stats = HostStats {
                        packets: r.varint()?,
                        bytes: r.varint()?,
                        first_seen_ns: r.varint()?,
                        last_seen_ns: r.varint()?,
                        syn: r.varint()?,
                        syn_ack: r.varint()?,
                        rst: r.varint()?,
                        udp: r.varint()?,
                        icmp: r.varint()?,
                        icmp_echo: r.varint()?,
                    };
                    Record::Overflow { ts_ns, key, stats }
                }
                TICK => Record::Tick(r.ts(&mut self.last_ts)?),
                SETTLE => Record::Settle,
                END => Record::End,
                GAP => Record::Gap {
                    ts_ns: r.ts(&mut self.last_ts)?,
                    dropped: r.varint()?,
                },
                _ => return None,
            })
        })();
        match rec {
            Some(rec) => {
                self.at = r.at;
                Ok(Some(rec))
            }
            None => Err(Truncated { offset: start }),
        }
    }
}

struct Reader<'a> {
    buf: &'a [u8],
    at: usize,
}

impl Reader<'_> {
    fn take(&mut self, n: usize) -> Option<&[u8]> {
        let s = self.buf.get(self.at..self.at.checked_add(n)?)?;
        self.at += n;
        Some(s)
    }
    fn u8(&mut self) -> Option<u8> {
        let b = *self.buf.get(self.at)?;
        self.at += 1;
        Some(b)
    }
    fn u16(&mut self) -> Option<u16> {
        Some(u16::from_le_bytes(self.take(2)?.try_into().ok()?))
    }
    fn varint(&mut self) -> Option<u64> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let b = self.u8()?;
            v |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Some(v);
            }
        }
        None
    }
    fn ts(&mut self, last: &mut u64) -> Option<u64> {
        let z = self.varint()?;
        let d = ((z >> 1) as i64) ^ -((z & 1) as i64);
        *last = last.wrapping_add(d as u64);
        Some(*last)
    }
    fn addr(&mut self, v6: bool) -> Option<IpAddr> {
        Some(if v6 {
            let b: [u8; 16] = self.take(16)?.try_into().ok()?;
            IpAddr::V6(Ipv6Addr::from(b))
        } else {
            let b: [u8; 4] = self.take(4)?.try_into().ok()?;
            IpAddr::V4(Ipv4Addr::from(b))
        })
    }
}

fn varint(mut v: u64, out: &mut Vec<u8>) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn addr_flags(src: IpAddr, dst: IpAddr) -> u8 {
    let mut f = 0;
    if src.is_ipv6() {
        f |= SRC_V6;
    }
    if dst.is_ipv6() {
        f |= DST_V6;
    }
    f
}

fn put_addr(a: IpAddr, out: &mut Vec<u8>) {
    match a {
        IpAddr::V4(v4) => out.extend_from_slice(&v4.octets()),
        IpAddr::V6(v6) => out.extend_from_slice(&v6.octets()),
    }
}

fn end_code(e: EndReason) -> u8 {
    match e {
        EndReason::Active => 0,
        EndReason::Idle => 1,
        EndReason::ActiveTimeout => 2,
        EndReason::Reused => 3,
        EndReason::Closed => 4,
        EndReason::Flush => 5,
    }
}

fn end_of(b: u8) -> Option<EndReason> {
    Some(match b {
        0 => EndReason::Active,
        1 => EndReason::Idle,
        2 => EndReason::ActiveTimeout,
        3 => EndReason::Reused,
        4 => EndReason::Closed,
        5 => EndReason::Flush,
        _ => return None,
    })
}
