//! IPFIX export (RFC 7011) of finished flows to a collector (`[ipfix] collector`), over UDP or
//! TCP, so an existing flow collector (nfcapd, pmacct, ntopng, Elastic's netflow input, a
//! SIEM's) stores the gateway's flows with no sensor-specific glue.
//!
//! Each finished flow becomes one data record per direction that carried packets (IPFIX
//! records are unidirectional: initiator to responder, then the answer), with standard
//! information elements only: addresses (IPv4 template 256, IPv6 template 257), ports (for
//! ICMP the destination port holds type * 256 + code, as exporters do), protocol,
//! `tcpControlBits`, `octetDeltaCount`, `packetDeltaCount`, `flowStartMilliseconds`,
//! `flowEndMilliseconds`, `flowEndReason`. The sensor counts TCP flags per flow, not per
//! direction: SYN is the initiator's, SYN+ACK the responder's, FIN, RST and PSH are reported
//! on both when the flow had them.
//!
//! Messages are built on the pipeline's thread (sequence numbers count data records, per
//! RFC 7011) and sent by a thread of their own through a bounded queue: a full queue counts
//! the flows dropped. Templates go before the first data, again every `template_refresh_s`
//! over UDP (a collector that restarts learns them), and at every new TCP connection.

use std::{
    io::Write as _,
    net::{IpAddr, TcpStream, ToSocketAddrs as _, UdpSocket},
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
        mpsc,
    },
    time::{Duration, Instant},
};

use serde::{Deserialize, Serialize};

use super::{EndTotals, Output, OutputConfig, Sink, SinkError, worker::Worker};
use crate::report::Report;
use crate::{check::Invalid, flow::EndReason, metrics::Registry, record::FlowRecord};

/// `[ipfix]` in the config file.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct IpfixConfig {
    /// `udp://HOST:PORT` or `tcp://HOST:PORT` (4739 is IPFIX's port); no export when empty.
    pub collector: String,
    /// The observation domain the records belong to (one per sensor, or per interface group).
    pub observation_domain: u32,
    /// Seconds between template re-sends over UDP.
    pub template_refresh_s: u64,
    /// Largest message (bytes): under the path MTU for UDP.
    pub max_message_bytes: usize,
    /// Messages waiting for the sender at most.
    pub queue: usize,
}

impl Default for IpfixConfig {
    fn default() -> Self {
        Self {
            collector: String::new(),
            observation_domain: 1,
            template_refresh_s: 60,
            max_message_bytes: 1400,
            queue: 4096,
        }
    }
}

impl IpfixConfig {
    /// (`true` for TCP, the address), or `None` when off.
    fn parse(&self) -> Result<Option<(bool, String)>, Invalid> {
        if self.collector.is_empty() {
            return Ok(None);
        }
        let (tcp, addr) = if let Some(a) = self.collector.strip_prefix("udp://") {
            (false, a)
        } else if let Some(a) = self.collector.strip_prefix("tcp://") {
            (true, a)
        } else {
            return Err(Invalid::new(
                "ipfix.collector",
                format!(
                    "{:?}: use udp://HOST:PORT or tcp://HOST:PORT",
                    self.collector
                ),
            ));
        };
        if addr
            .rsplit_once(':')
            .is_none_or(|(h, p)| h.is_empty() || p.parse::<u16>().is_err())
        {
            return Err(Invalid::new(
                "ipfix.collector",
                format!("{:?}: HOST:PORT expected", self.collector),
            ));
        }
        Ok(Some((tcp, addr.to_owned())))
    }

    pub fn check(&self) -> Result<(), Invalid> {
        if !(256..=65_535).contains(&self.max_message_bytes) {
            return Err(Invalid::new(
                "ipfix.max_message_bytes",
                format!(
                    "must be within 256 and 65535, not {}",
                    self.max_message_bytes
                ),
            ));
        }
        if self.template_refresh_s == 0 {
            return Err(Invalid::new("ipfix.template_refresh_s", "must be positive"));
        }
        if self.queue == 0 {
            return Err(Invalid::new("ipfix.queue", "must be positive"));
        }
        self.parse().map(|_| ())
    }
}

#[derive(Debug, Default)]
pub struct IpfixStats {
    /// Data records sent.
    pub records: AtomicU64,
    pub messages: AtomicU64,
    /// Records not sent: queue full or the collector failed.
    pub dropped: AtomicU64,
    pub errors: AtomicU64,
}

const VERSION: u16 = 10;
const HEADER: usize = 16;
const TEMPLATE_V4: u16 = 256;
const TEMPLATE_V6: u16 = 257;

/// (information element id, length) of each template's fields, in record order.
fn fields(v6: bool) -> [(u16, u16); 11] {
    let (src, dst, len) = if v6 { (27, 28, 16) } else { (8, 12, 4) };
    [
        (src, len),
        (dst, len),
        (7, 2),   // sourceTransportPort
        (11, 2),  // destinationTransportPort
        (4, 1),   // protocolIdentifier
        (6, 2),   // tcpControlBits
        (1, 8),   // octetDeltaCount
        (2, 8),   // packetDeltaCount
        (152, 8), // flowStartMilliseconds
        (153, 8), // flowEndMilliseconds
        (136, 1), // flowEndReason
    ]
}

fn record_len(v6: bool) -> usize {
    fields(v6).iter().map(|f| usize::from(f.1)).sum()
}

/// The template set of both templates.
fn template_set() -> Vec<u8> {
    let mut s = vec![0, 2, 0, 0];
    for (id, v6) in [(TEMPLATE_V4, false), (TEMPLATE_V6, true)] {
        let f = fields(v6);
        s.extend_from_slice(&id.to_be_bytes());
        s.extend_from_slice(&(f.len() as u16).to_be_bytes());
        for (ie, len) in f {
            s.extend_from_slice(&ie.to_be_bytes());
            s.extend_from_slice(&len.to_be_bytes());
        }
    }
    let n = s.len() as u16;
    s[2..4].copy_from_slice(&n.to_be_bytes());
    s
}

fn header(len: usize, seq: u32, domain: u32) -> [u8; HEADER] {
    let mut h = [0u8; HEADER];
    h[0..2].copy_from_slice(&VERSION.to_be_bytes());
    h[2..4].copy_from_slice(&(len as u16).to_be_bytes());
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as u32);
    h[4..8].copy_from_slice(&now.to_be_bytes());
    h[8..12].copy_from_slice(&seq.to_be_bytes());
    h[12..16].copy_from_slice(&domain.to_be_bytes());
    h
}

/// The sender thread and its queue.
pub struct Ipfix {
    worker: Worker<(Vec<u8>, u64)>,
    stats: Arc<IpfixStats>,
    cfg: IpfixConfig,
}

impl Ipfix {
    /// Starts the sender, or `None` when no collector is configured.
    pub fn start(cfg: &IpfixConfig) -> Result<Option<Self>, SinkError> {
        cfg.check()?;
        let Some((tcp, addr)) = cfg.parse()? else {
            return Ok(None);
        };
        let stats = Arc::new(IpfixStats::default());
        let st = Arc::clone(&stats);
        let (domain, refresh) = (
            cfg.observation_domain,
            Duration::from_secs(cfg.template_refresh_s),
        );
        let worker = Worker::spawn(
            "ipfix",
            cfg.queue,
            move |rx: mpsc::Receiver<(Vec<u8>, u64)>| {
                let mut c = Sender {
                    tcp,
                    addr,
                    udp: None,
                    stream: None,
                    templates_sent: None,
                    refresh,
                    domain,
                    logged: None,
                };
                for (msg, records) in rx {
                    c.send(&msg, records, &st);
                }
            },
        )
        .map_err(|e| SinkError::Start(format!("starting the IPFIX sender: {e}")))?;
        Ok(Some(Self {
            worker,
            stats,
            cfg: cfg.clone(),
        }))
    }

    pub fn stats(&self) -> &Arc<IpfixStats> {
        &self.stats
    }
}

impl OutputConfig for IpfixConfig {
    fn check(&self) -> Result<(), Invalid> {
        IpfixConfig::check(self)
    }

    fn build(&self, metrics: &Registry) -> Result<Option<Box<dyn Output>>, SinkError> {
        let Some(x) = Ipfix::start(self)? else {
            return Ok(None);
        };
        metrics.counters_of(
            &x.stats,
            &[
                (
                    "sensor_ipfix_records_total",
                    "IPFIX data records sent.",
                    |s| s.records.load(Ordering::Relaxed),
                ),
                ("sensor_ipfix_messages_total", "IPFIX messages sent.", |s| {
                    s.messages.load(Ordering::Relaxed)
                }),
                (
                    "sensor_ipfix_dropped_total",
                    "IPFIX records not sent: queue full or the collector failed.",
                    |s| s.dropped.load(Ordering::Relaxed),
                ),
                ("sensor_ipfix_errors_total", "IPFIX send failures.", |s| {
                    s.errors.load(Ordering::Relaxed)
                }),
            ],
        );
        Ok(Some(Box::new(x)))
    }
}

impl Output for Ipfix {
    fn sink(&self, live: bool) -> Box<dyn Sink + '_> {
        Box::new(IpfixSink::new(self, !live))
    }
}

/// The collector side: templates when they are due, then the message.
struct Sender {
    tcp: bool,
    addr: String,
    udp: Option<UdpSocket>,
    stream: Option<TcpStream>,
    /// When the templates last went out on this connection (UDP: this socket).
    templates_sent: Option<Instant>,
    refresh: Duration,
    domain: u32,
    logged: Option<Instant>,
}

impl Sender {
    fn send(&mut self, msg: &[u8], records: u64, st: &IpfixStats) {
        match self.try_send(msg) {
            Ok(()) => {
                st.records.fetch_add(records, Ordering::Relaxed);
                st.messages.fetch_add(1, Ordering::Relaxed);
            }
            Err(e) => {
                self.stream = None;
                self.templates_sent = None;
                st.errors.fetch_add(1, Ordering::Relaxed);
                st.dropped.fetch_add(records, Ordering::Relaxed);
                if self
                    .logged
                    .is_none_or(|t| t.elapsed() >= Duration::from_secs(60))
                {
                    self.logged = Some(Instant::now());
                    tracing::warn!(collector = %self.addr, error = %Report(&e),
                        "IPFIX export failed (further failures are counted in sensor_ipfix_errors_total)");
                }
            }
        }
    }

    fn try_send(&mut self, msg: &[u8]) -> std::io::Result<()> {
        let to = self
            .addr
            .to_socket_addrs()?
            .next()
            .ok_or_else(|| std::io::Error::other("no address"))?;
        let due = self
            .templates_sent
            .is_none_or(|t| t.elapsed() >= self.refresh);
        if due {
            // A templates-only message carries the sequence number of the data after it.
            let set = template_set();
            let seq = u32::from_be_bytes([msg[8], msg[9], msg[10], msg[11]]);
            let mut t = header(HEADER + set.len(), seq, self.domain).to_vec();
            t.extend_from_slice(&set);
            self.raw(&to, &t)?;
            self.templates_sent = Some(Instant::now());
        }
        self.raw(&to, msg)
    }

    fn raw(&mut self, to: &std::net::SocketAddr, bytes: &[u8]) -> std::io::Result<()> {
        if self.tcp {
            if self.stream.is_none() {
                let s = TcpStream::connect_timeout(to, Duration::from_secs(5))?;
                s.set_write_timeout(Some(Duration::from_secs(5)))?;
                // A failure dropped the old connection and the templates' record with it, so
                // a new connection starts with them.
                self.stream = Some(s);
            }
            match &mut self.stream {
                Some(s) => s.write_all(bytes),
                None => Ok(()),
            }
        } else {
            if self.udp.is_none() {
                let s = UdpSocket::bind(if to.is_ipv4() { "0.0.0.0:0" } else { "[::]:0" })?;
                s.connect(to)?;
                self.udp = Some(s);
            }
            match &self.udp {
                Some(s) => s.send(bytes).map(|_| ()),
                None => Ok(()),
            }
        }
    }
}

/// IPFIX as a pipeline output.
pub struct IpfixSink<'a> {
    x: &'a Ipfix,
    /// Replay waits for queue space; live counts a drop instead.
    block: bool,
    /// Data records exported before the message being built (RFC 7011 sequence number).
    seq: u32,
    v4: Vec<u8>,
    v6: Vec<u8>,
}

impl<'a> IpfixSink<'a> {
    pub fn new(x: &'a Ipfix, block: bool) -> Self {
        Self {
            x,
            block,
            seq: 0,
            v4: Vec::new(),
            v6: Vec::new(),
        }
    }

    /// Records that fit one message beside the header and a set header.
    fn per_message(&self, v6: bool) -> usize {
        ((self.x.cfg.max_message_bytes - HEADER - 4) / record_len(v6)).max(1)
    }

    fn add(&mut self, v6: bool, rec: &[u8]) {
        let per = self.per_message(v6);
        let buf = if v6 { &mut self.v6 } else { &mut self.v4 };
        buf.extend_from_slice(rec);
        if buf.len() / record_len(v6) >= per {
            self.flush_family(v6);
        }
    }

    fn flush_family(&mut self, v6: bool) {
        let data = std::mem::take(if v6 { &mut self.v6 } else { &mut self.v4 });
        if data.is_empty() {
            return;
        }
        let n = (data.len() / record_len(v6)) as u64;
        let len = HEADER + 4 + data.len();
        let mut msg = header(len, self.seq, self.x.cfg.observation_domain).to_vec();
        msg.extend_from_slice(&(if v6 { TEMPLATE_V6 } else { TEMPLATE_V4 }).to_be_bytes());
        msg.extend_from_slice(&((4 + data.len()) as u16).to_be_bytes());
        msg.extend_from_slice(&data);
        self.seq = self.seq.wrapping_add(n as u32);
        let sent = if self.block {
            self.x.worker.send((msg, n))
        } else {
            self.x.worker.try_send((msg, n))
        };
        if !sent {
            self.x.stats.dropped.fetch_add(n, Ordering::Relaxed);
        }
    }

    fn flush(&mut self) {
        self.flush_family(false);
        self.flush_family(true);
    }
}

/// RFC 5102 flowEndReason: 1 idle timeout, 2 active timeout, 3 end of flow detected, 4 forced
/// end (shutdown).
fn end_reason(e: EndReason) -> u8 {
    match e {
        EndReason::Idle => 1,
        EndReason::ActiveTimeout => 2,
        EndReason::Closed | EndReason::Reused => 3,
        EndReason::Active | EndReason::Flush => 4,
    }
}

/// One data record in template order.
#[allow(
    clippy::too_many_arguments,
    reason = "one record's fields, in template order"
)]
fn record(
    src: IpAddr,
    dst: IpAddr,
    sport: u16,
    dport: u16,
    proto: u8,
    flags: u16,
    bytes: u64,
    packets: u64,
    start_ms: u64,
    end_ms: u64,
    reason: u8,
) -> Vec<u8> {
    let mut r = Vec::with_capacity(72);
    for a in [src, dst] {
        match a {
            IpAddr::V4(v) => r.extend_from_slice(&v.octets()),
            IpAddr::V6(v) => r.extend_from_slice(&v.octets()),
        }
    }
    r.extend_from_slice(&sport.to_be_bytes());
    r.extend_from_slice(&dport.to_be_bytes());
    r.push(proto);
    r.extend_from_slice(&flags.to_be_bytes());
    r.extend_from_slice(&bytes.to_be_bytes());
    r.extend_from_slice(&packets.to_be_bytes());
    r.extend_from_slice(&start_ms.to_be_bytes());
    r.extend_from_slice(&end_ms.to_be_bytes());
    r.push(reason);
    r
}

fn ms_of(rfc3339: &str) -> u64 {
    chrono::DateTime::parse_from_rfc3339(rfc3339).map_or(0, |d| d.timestamp_millis().max(0) as u64)
}

impl Sink for IpfixSink<'_> {
    fn wants_flows(&self) -> bool {
        true
    }
    fn flow(&mut self, f: &FlowRecord, last_seen_ns: u64) -> Result<(), SinkError> {
        // ARP (keyed by the addresses it resolves) is not an IP flow.
        if f.family == "arp" {
            return Ok(());
        }
        let (Ok(src), Ok(dst)) = (f.src_ip.parse::<IpAddr>(), f.dst_ip.parse::<IpAddr>()) else {
            return Ok(());
        };
        if src.is_ipv4() != dst.is_ipv4() {
            return Ok(());
        }
        let v6 = src.is_ipv6();
        let (start, end) = (ms_of(&f.first_seen), last_seen_ns / 1_000_000);
        let reason = end_reason(f.end);
        let tcp = f.proto == 6;
        let both = u16::from(f.fin > 0) | u16::from(f.rst > 0) << 2 | u16::from(f.psh > 0) << 3;
        let fwd_flags = if tcp {
            both | u16::from(f.syn > 0) << 1
                | u16::from(f.ack_only > 0 || f.packets_fwd > f.syn) << 4
        } else {
            0
        };
        if f.packets_fwd > 0 {
            let r = record(
                src,
                dst,
                f.src_port,
                f.dst_port,
                f.proto,
                fwd_flags,
                f.bytes_fwd,
                f.packets_fwd,
                start,
                end,
                reason,
            );
            self.add(v6, &r);
        }
        if f.packets_rev > 0 {
            // The answer: ports swapped (for ICMP the destination port is the type and code
            // of the initiator's messages, kept as is).
            let icmp = matches!(f.proto, 1 | 58);
            let (sp, dp) = if icmp {
                (0, f.dst_port)
            } else {
                (f.dst_port, f.src_port)
            };
            let rev_flags = if tcp {
                both | u16::from(f.syn_ack > 0) << 1 | 1 << 4
            } else {
                0
            };
            let r = record(
                dst,
                src,
                sp,
                dp,
                f.proto,
                rev_flags,
                f.bytes_rev,
                f.packets_rev,
                start,
                end,
                reason,
            );
            self.add(v6, &r);
        }
        Ok(())
    }
    fn tick(&mut self) -> Result<(), SinkError> {
        self.flush();
        Ok(())
    }
    fn finish(&mut self, _t: EndTotals) -> Result<(), SinkError> {
        self.flush();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates_and_records_have_the_lengths_they_declare() {
        let t = template_set();
        assert_eq!(u16::from_be_bytes([t[2], t[3]]) as usize, t.len());
        // Set header, then per template 4 bytes of header and 4 per field.
        assert_eq!(t.len(), 4 + 2 * (4 + 11 * 4));
        assert_eq!(record_len(false), 48);
        assert_eq!(record_len(true), 72);
        let r = record(
            "10.0.0.1".parse().expect("ip"),
            "10.0.0.2".parse().expect("ip"),
            1,
            2,
            6,
            0x12,
            3,
            4,
            5,
            6,
            1,
        );
        assert_eq!(r.len(), 48);
    }
}
