//! libpcap fallback: capture files (pcap and pcapng) and live interfaces where XDP cannot
//! attach, fed packet by packet into the same flow table as the kernel path.

use std::path::{Path, PathBuf};

use pcap::{Activated, Capture, Linktype, Precision};

use crate::{
    flow::{Flow, FlowTable},
    packet::{Outcome, Parsed, parse_ether_type, parse_ethernet, parse_ip},
};

/// Where `feed` hands parsed packets: `(packet, wire length, timestamp ns)`, in order.
pub trait PacketSink {
    fn packets(&mut self, batch: &[(Parsed, u32, u64)]);
}

/// A flow table with a place for the flows it finishes.
pub struct TableSink<'a, F: FnMut(Flow)> {
    pub table: &'a mut FlowTable,
    pub out: F,
}

impl<F: FnMut(Flow)> PacketSink for TableSink<'_, F> {
    fn packets(&mut self, batch: &[(Parsed, u32, u64)]) {
        self.table.packets(batch, &mut self.out);
    }
}

/// Why a capture could not be read. Every variant names the file.
#[derive(Debug, thiserror::Error)]
pub enum CaptureError {
    #[error("{path}: cannot open as a capture file: {reason}")]
    Open { path: PathBuf, reason: String },
    #[error(
        "{path}: link type {linktype} ({name}) is not supported (supported: Ethernet, Linux cooked \
         SLL/SLL2, raw IP, BSD loopback)"
    )]
    UnsupportedLinkType {
        path: PathBuf,
        linktype: i32,
        name: String,
    },
}

/// The link layers the fallback understands, with where the network layer starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LinkLayer {
    Ethernet,
    /// Linux cooked v1: 16-byte header, EtherType at 14.
    LinuxSll,
    /// Linux cooked v2: 20-byte header, EtherType at 0.
    LinuxSll2,
    /// Bare IPv4/IPv6.
    RawIp,
    /// BSD loopback: 4-byte address family (host order for NULL, network order for LOOP).
    Null {
        big_endian: bool,
    },
}

impl LinkLayer {
    pub fn from_linktype(l: Linktype) -> Option<Self> {
        Some(match l.0 {
            1 => Self::Ethernet,
            113 => Self::LinuxSll,
            276 => Self::LinuxSll2,
            12 | 14 | 101 | 228 | 229 => Self::RawIp,
            0 => Self::Null {
                big_endian: cfg!(target_endian = "big"),
            },
            108 => Self::Null { big_endian: true },
            _ => return None,
        })
    }

    /// Parses one captured frame of this link layer.
    pub fn parse(self, data: &[u8]) -> Outcome {
        match self {
            Self::Ethernet => parse_ethernet(data),
            Self::LinuxSll => match data.get(14..16) {
                Some(et) => parse_ether_type(u16::from_be_bytes([et[0], et[1]]), data, 16),
                None => Outcome::Error,
            },
            Self::LinuxSll2 => match data.get(0..2) {
                Some(et) => parse_ether_type(u16::from_be_bytes([et[0], et[1]]), data, 20),
                None => Outcome::Error,
            },
            Self::RawIp => parse_ip(data),
            Self::Null { big_endian } => {
                let Some(f) = data.get(0..4) else {
                    return Outcome::Error;
                };
                let fam = if big_endian {
                    u32::from_be_bytes([f[0], f[1], f[2], f[3]])
                } else {
                    u32::from_le_bytes([f[0], f[1], f[2], f[3]])
                };
                match fam {
                    // AF_INET; AF_INET6 as BSDs, Darwin and Linux number it.
                    2 | 24 | 28 | 30 | 10 => parse_ip(&data[4..]),
                    _ => Outcome::NonIp,
                }
            }
        }
    }
}

/// What reading one capture produced.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct ReadStats {
    pub packets: u64,
    /// Wire bytes (the original length of each packet, not the captured part).
    pub bytes: u64,
    pub flow_packets: u64,
    pub non_ip: u64,
    pub parse_errors: u64,
    /// Set when the file ended in the middle of a record: the packets before it still count.
    pub truncated: Option<String>,
}

impl ReadStats {
    pub fn add(&mut self, o: &Self) {
        self.packets += o.packets;
        self.bytes += o.bytes;
        self.flow_packets += o.flow_packets;
        self.non_ip += o.non_ip;
        self.parse_errors += o.parse_errors;
    }
}

/// Opens a capture file with nanosecond timestamps, checking its link type.
pub fn open_file(path: &Path) -> Result<(Capture<pcap::Offline>, LinkLayer), CaptureError> {
    let cap = Capture::from_file_with_precision(path, Precision::Nano).map_err(|e| {
        CaptureError::Open {
            path: path.to_path_buf(),
            reason: e.to_string(),
        }
    })?;
    let lt = cap.get_datalink();
    let link = LinkLayer::from_linktype(lt).ok_or_else(|| CaptureError::UnsupportedLinkType {
        path: path.to_path_buf(),
        linktype: lt.0,
        name: lt.get_name().unwrap_or_else(|_| "unknown".into()),
    })?;
    Ok((cap, link))
}

/// Opens a live capture on `iface` (the fallback where XDP cannot attach): immediate delivery,
/// nanosecond timestamps, a read timeout so the caller can stop it.
pub fn open_live(
    iface: &str,
    snaplen: i32,
) -> Result<(Capture<pcap::Active>, LinkLayer), CaptureError> {
    let path = PathBuf::from(iface);
    let open_err = |e: pcap::Error| CaptureError::Open {
        path: path.clone(),
        reason: e.to_string(),
    };
    let cap = Capture::from_device(iface)
        .map_err(open_err)?
        .snaplen(snaplen)
        .immediate_mode(true)
        .buffer_size(16 << 20)
        .timeout(100)
        .precision(Precision::Nano)
        .open()
        .map_err(open_err)?
        // Non-blocking, so `feed` can notice a stop request while the link is quiet (the read
        // timeout alone does not wake a blocked read on every Linux libpcap).
        .setnonblock()
        .map_err(open_err)?;
    let lt = cap.get_datalink();
    let link = LinkLayer::from_linktype(lt).ok_or_else(|| CaptureError::UnsupportedLinkType {
        path: path.clone(),
        linktype: lt.0,
        name: lt.get_name().unwrap_or_else(|_| "unknown".into()),
    })?;
    Ok((cap, link))
}

/// Latest packet time taken from a file (2^62 ns, in the year 2116); later ones are clamped to
/// it, so that windows and timeouts added to packet times cannot overflow. (Found by the pcap
/// fuzz target: a record time of ~2^63 s.)
pub const MAX_TS_NS: u64 = 1 << 62;

/// A record's time in ns (`open_file` reads at nanosecond precision), clamped to
/// [`MAX_TS_NS`].
pub fn packet_time_ns(h: &pcap::PacketHeader) -> u64 {
    (h.ts.tv_sec.max(0) as u64)
        .saturating_mul(1_000_000_000)
        .saturating_add(h.ts.tv_usec.max(0) as u64)
        .min(MAX_TS_NS)
}

/// Feeds every packet of `cap` into `sink`. `on_packet` sees each
/// record's size on disk (for progress). Reading stops at the end of the data, or (live) when
/// `stop` says so; it is asked at every read timeout and every 1,024 packets. A read error (a
/// file cut mid-record) ends the read with `truncated` set instead of failing, so the flows
/// read so far are kept.
pub fn feed<T: Activated + ?Sized>(
    cap: &mut Capture<T>,
    link: LinkLayer,
    sink: &mut impl PacketSink,
    mut on_packet: impl FnMut(u64),
    stop: impl Fn() -> bool,
) -> ReadStats {
    const BATCH: usize = 64;
    let mut st = ReadStats::default();
    let mut batch = Vec::with_capacity(BATCH);
    loop {
        if st.packets % 1024 == 0 && stop() {
            break;
        }
        let pkt = match cap.next_packet() {
            Ok(p) => p,
            Err(pcap::Error::NoMorePackets) => break,
            // Live and quiet: nothing to read right now.
            Err(pcap::Error::TimeoutExpired) => {
                // Nothing waiting: hand over what we hold rather than let it sit.
                sink.packets(&batch);
                batch.clear();
                if stop() {
                    break;
                }
                std::thread::sleep(std::time::Duration::from_micros(200));
                continue;
            }
            Err(e) => {
                st.truncated = Some(e.to_string());
                break;
            }
        };
        let h = pkt.header;
        let ts_ns = packet_time_ns(h);
        st.packets += 1;
        st.bytes += u64::from(h.len);
        on_packet(16 + u64::from(h.caplen));
        match link.parse(pkt.data) {
            Outcome::Flow(p) => {
                st.flow_packets += 1;
                batch.push((p, h.len, ts_ns));
                if batch.len() == BATCH {
                    sink.packets(&batch);
                    batch.clear();
                }
            }
            Outcome::NonIp => st.non_ip += 1,
            Outcome::Error => st.parse_errors += 1,
        }
    }
    sink.packets(&batch);
    st
}
