//! EVE JSON output (`--eve-json PATH`): Suricata's event format, one JSON object per line, so
//! the shippers and SIEM pipelines that already ingest Suricata (Filebeat's suricata module,
//! Vector, Splunk's Suricata add-on, Logstash) take the sensor's events with no glue.
//!
//! Two event types: `flow` for every finished flow (counters per direction, start and end,
//! TCP flags), `alert` once per alert (`signature`, `category` and `severity` mapped from its
//! kind and severity; the sensor's own record under `sensor`): live when it opens, in replay
//! in its final state. Both carry the
//! Community ID (v1) of their 5-tuple, so an alert here, a flow in Zeek and a packet in
//! Wireshark can be joined on one key.
//!
//! Lines are formatted on the pipeline's thread and written by a thread of their own through a
//! bounded queue: live capture never waits on the disk (a full queue counts the lines
//! dropped), replay waits. The file is rotated by size: `PATH` becomes `PATH.1`, `PATH.1`
//! becomes `PATH.2`, up to `keep` old files.

use std::{
    fs::{File, OpenOptions},
    io::{BufWriter, Write as _},
    net::IpAddr,
    path::{Path, PathBuf},
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
        mpsc,
    },
    time::{Duration, Instant},
};

use chrono::DateTime;
use serde::{Deserialize, Serialize};

use super::{EndTotals, Output, OutputConfig, Sink, SinkError, worker::Worker};
use crate::report::Report;
use crate::{
    check::Invalid,
    flow::EndReason,
    metrics::Registry,
    record::{AlertKind, AlertRecord, FlowRecord, Severity},
};

/// `[eve]` in the config file.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EveConfig {
    /// The EVE file (`--eve-json`); none when unset.
    pub path: Option<PathBuf>,
    /// Rotate when the file reaches this size.
    pub max_file_bytes: u64,
    /// Rotated files kept (`PATH.1` .. `PATH.keep`); 0 truncates instead.
    pub keep: u32,
    /// Batches of lines waiting for the writer at most (a batch is one poll's worth, or 256 KiB).
    pub queue: usize,
    /// Write `flow` events (alerts are always written).
    pub flows: bool,
    /// The `host` field: which sensor wrote the event (default: the host name).
    pub sensor_name: Option<String>,
}

impl Default for EveConfig {
    fn default() -> Self {
        Self {
            path: None,
            max_file_bytes: 100 << 20,
            keep: 5,
            queue: 1024,
            flows: true,
            sensor_name: None,
        }
    }
}

impl OutputConfig for EveConfig {
    fn build(&self, metrics: &Registry) -> Result<Option<Box<dyn Output>>, SinkError> {
        let Some(e) = EveWriter::start(self)? else {
            return Ok(None);
        };
        metrics.counters_of(
            &e.stats,
            &[
                ("sensor_eve_events_total", "EVE JSON events written.", |s| {
                    s.events.load(Ordering::Relaxed)
                }),
                (
                    "sensor_eve_dropped_total",
                    "EVE JSON events not written: queue full or the file failed.",
                    |s| s.dropped.load(Ordering::Relaxed),
                ),
                (
                    "sensor_eve_rotations_total",
                    "EVE JSON file rotations.",
                    |s| s.rotations.load(Ordering::Relaxed),
                ),
                ("sensor_eve_errors_total", "EVE JSON write failures.", |s| {
                    s.errors.load(Ordering::Relaxed)
                }),
            ],
        );
        Ok(Some(Box::new(e)))
    }

    fn check(&self) -> Result<(), Invalid> {
        if self.max_file_bytes < 4096 {
            return Err(Invalid::new(
                "eve.max_file_bytes",
                format!("must be at least 4096, not {}", self.max_file_bytes),
            ));
        }
        if self.queue == 0 {
            return Err(Invalid::new("eve.queue", "must be positive"));
        }
        if self.keep > 1000 {
            return Err(Invalid::new(
                "eve.keep",
                format!("must be at most 1000, not {}", self.keep),
            ));
        }
        Ok(())
    }
}

/// What the writer did, for `/metrics`.
#[derive(Debug, Default)]
pub struct EveStats {
    pub events: AtomicU64,
    /// Events not written: the queue was full (live) or the file could not be written.
    pub dropped: AtomicU64,
    pub rotations: AtomicU64,
    pub errors: AtomicU64,
}

/// The writer thread and its queue.
pub struct EveWriter {
    worker: Worker<Vec<u8>>,
    stats: Arc<EveStats>,
    path: PathBuf,
    host: String,
    flows: bool,
}

impl EveWriter {
    /// Opens (appends to) the file at once, so a bad path is an error before anything runs;
    /// `None` when no path is configured.
    pub fn start(cfg: &EveConfig) -> Result<Option<Self>, SinkError> {
        let Some(path) = cfg.path.clone() else {
            return Ok(None);
        };
        let file = open(&path).map_err(|source| SinkError::Output {
            path: path.clone(),
            source,
        })?;
        let size = file.metadata().map_or(0, |m| m.len());
        let stats = Arc::new(EveStats::default());
        let st = Arc::clone(&stats);
        let (max, keep) = (cfg.max_file_bytes, cfg.keep);
        let worker = Worker::spawn("eve", cfg.queue, move |rx: mpsc::Receiver<Vec<u8>>| {
            let mut out = EveFile {
                path,
                file: Some(BufWriter::with_capacity(1 << 20, file)),
                size,
                max,
                keep,
                logged: None,
            };
            while let Ok(lines) = rx.recv() {
                out.write(&lines, &st);
                // Everything queued now goes out before the buffer is flushed.
                while let Ok(lines) = rx.try_recv() {
                    out.write(&lines, &st);
                }
                out.flush(&st);
            }
            out.flush(&st);
        })
        .map_err(|source| SinkError::Output {
            path: cfg.path.clone().unwrap_or_default(),
            source,
        })?;
        let host = cfg.sensor_name.clone().unwrap_or_else(host_name);
        Ok(Some(Self {
            worker,
            stats,
            path: cfg.path.clone().unwrap_or_default(),
            host,
            flows: cfg.flows,
        }))
    }

    pub fn stats(&self) -> &Arc<EveStats> {
        &self.stats
    }
}

impl Output for EveWriter {
    fn sink(&self, live: bool) -> Box<dyn Sink + '_> {
        Box::new(EveSink::new(self, !live))
    }

    /// "N EVE JSON event(s) in PATH", once the queue is written.
    fn close(self: Box<Self>) -> Option<String> {
        let (st, path) = (Arc::clone(&self.stats), self.path.clone());
        // Dropping the writer writes what is queued.
        drop(self);
        Some(format!(
            "{} EVE JSON event(s) in {}{}",
            st.events.load(Ordering::Relaxed),
            path.display(),
            match st.dropped.load(Ordering::Relaxed) {
                0 => String::new(),
                d => format!(" ({d} not written: see the log)"),
            }
        ))
    }
}

fn open(path: &Path) -> std::io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt as _;
    OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o640)
        .open(path)
}

/// This host's name (the default `host` of EVE events and HOSTNAME of syslog messages).
pub(crate) fn host_name() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: `buf` is writable for its length; gethostname NUL-terminates within it or fails.
    let r = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if r != 0 {
        return "sensor".into();
    }
    let end = buf.iter().position(|b| *b == 0).unwrap_or(buf.len());
    String::from_utf8_lossy(&buf[..end]).into_owned()
}

/// The file side of the writer thread.
struct EveFile {
    path: PathBuf,
    file: Option<BufWriter<File>>,
    size: u64,
    max: u64,
    keep: u32,
    logged: Option<Instant>,
}

impl EveFile {
    /// Writes whole lines, rotating between two lines where the next would pass the size.
    fn write(&mut self, mut lines: &[u8], st: &EveStats) {
        while !lines.is_empty() {
            let room = self.max.saturating_sub(self.size) as usize;
            // The longest run of whole lines that fits.
            let cut = if room >= lines.len() {
                lines.len()
            } else {
                lines[..room]
                    .iter()
                    .rposition(|b| *b == b'\n')
                    .map_or(0, |i| i + 1)
            };
            let cut = match cut {
                0 if self.size > 0 => {
                    self.rotate(st);
                    continue;
                }
                // A line longer than the limit goes alone into a fresh file.
                0 => lines
                    .iter()
                    .position(|b| *b == b'\n')
                    .map_or(lines.len(), |i| i + 1),
                n => n,
            };
            let (chunk, rest) = lines.split_at(cut);
            lines = rest;
            let n = chunk.iter().filter(|b| **b == b'\n').count() as u64;
            let r = match &mut self.file {
                Some(f) => f.write_all(chunk),
                None => Err(std::io::Error::other("the file could not be reopened")),
            };
            match r {
                Ok(()) => {
                    self.size += chunk.len() as u64;
                    st.events.fetch_add(n, Ordering::Relaxed);
                }
                Err(e) => {
                    st.dropped.fetch_add(n, Ordering::Relaxed);
                    self.fail(&e, st);
                }
            }
        }
    }

    fn flush(&mut self, st: &EveStats) {
        if let Some(f) = &mut self.file
            && let Err(e) = f.flush()
        {
            self.fail(&e, st);
        }
    }

    /// A failure is logged once a minute; the counters have every one.
    fn fail(&mut self, e: &std::io::Error, st: &EveStats) {
        st.errors.fetch_add(1, Ordering::Relaxed);
        if self
            .logged
            .is_none_or(|t| t.elapsed() >= Duration::from_secs(60))
        {
            self.logged = Some(Instant::now());
            tracing::error!(file = %self.path.display(), error = %Report(&e),
                "writing EVE JSON failed (further failures are counted in sensor_eve_errors_total)");
        }
    }

    /// `PATH.{keep-1}` -> `PATH.{keep}`, ..., `PATH` -> `PATH.1`, then a new `PATH`.
    fn rotate(&mut self, st: &EveStats) {
        self.flush(st);
        self.file = None;
        let name = |i: u32| {
            let mut p = self.path.clone().into_os_string();
            p.push(format!(".{i}"));
            PathBuf::from(p)
        };
        if self.keep == 0 {
            let _ignored = std::fs::remove_file(&self.path);
        } else {
            for i in (1..self.keep).rev() {
                let _ignored = std::fs::rename(name(i), name(i + 1));
            }
            let _ignored = std::fs::rename(&self.path, name(1));
        }
        match open(&self.path) {
            Ok(f) => {
                self.file = Some(BufWriter::with_capacity(1 << 20, f));
                self.size = 0;
                st.rotations.fetch_add(1, Ordering::Relaxed);
            }
            Err(e) => self.fail(&e, st),
        }
    }
}

/// The EVE writer as a pipeline output.
pub struct EveSink<'a> {
    w: &'a EveWriter,
    /// Replay waits for queue space and writes each alert once in its final state (when it
    /// closes); live counts a drop instead of waiting, and writes each alert when it opens,
    /// so a SIEM has it within a poll.
    block: bool,
    buf: Vec<u8>,
    lines: u64,
}

/// Bytes of lines a sink gathers before it hands them to the writer.
const BATCH_BYTES: usize = 256 << 10;

impl<'a> EveSink<'a> {
    pub fn new(w: &'a EveWriter, block: bool) -> Self {
        Self {
            w,
            block,
            buf: Vec::with_capacity(BATCH_BYTES + 4096),
            lines: 0,
        }
    }

    fn push(&mut self, ev: &impl Serialize) {
        if serde_json::to_writer(&mut self.buf, ev).is_ok() {
            self.buf.push(b'\n');
            self.lines += 1;
        }
        if self.buf.len() >= BATCH_BYTES {
            self.hand_over();
        }
    }

    fn hand_over(&mut self) {
        if self.lines == 0 {
            return;
        }
        let batch = std::mem::replace(&mut self.buf, Vec::with_capacity(BATCH_BYTES + 4096));
        let n = std::mem::take(&mut self.lines);
        let sent = if self.block {
            self.w.worker.send(batch)
        } else {
            self.w.worker.try_send(batch)
        };
        if !sent {
            self.w.stats.dropped.fetch_add(n, Ordering::Relaxed);
        }
    }
}

impl Sink for EveSink<'_> {
    fn wants_flows(&self) -> bool {
        self.w.flows
    }
    fn flow(&mut self, rec: &FlowRecord, last_seen_ns: u64) -> Result<(), SinkError> {
        if let Some(ev) = flow_event(rec, last_seen_ns, &self.w.host) {
            self.push(&ev);
        }
        Ok(())
    }
    fn alert_opened(&mut self, rec: &AlertRecord, _last_seen_ns: u64) -> Result<(), SinkError> {
        if !self.block {
            let ev = alert_event(rec, &self.w.host);
            self.push(&ev);
            self.hand_over();
        }
        Ok(())
    }
    fn alert_closed(&mut self, rec: &AlertRecord, _last_seen_ns: u64) -> Result<(), SinkError> {
        if self.block {
            let ev = alert_event(rec, &self.w.host);
            self.push(&ev);
        }
        Ok(())
    }
    fn tick(&mut self) -> Result<(), SinkError> {
        self.hand_over();
        Ok(())
    }
    fn finish(&mut self, _t: EndTotals) -> Result<(), SinkError> {
        self.hand_over();
        Ok(())
    }
}

/// One EVE event (the fields Suricata writes that the sensor has).
#[derive(Serialize)]
struct Event<'a> {
    timestamp: String,
    flow_id: u64,
    event_type: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    src_ip: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    src_port: Option<u16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    dest_ip: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    dest_port: Option<u16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    proto: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    icmp_type: Option<u8>,
    #[serde(skip_serializing_if = "Option::is_none")]
    icmp_code: Option<u8>,
    #[serde(skip_serializing_if = "Option::is_none")]
    community_id: Option<String>,
    host: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    flow: Option<FlowPart>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tcp: Option<TcpPart>,
    #[serde(skip_serializing_if = "Option::is_none")]
    alert: Option<AlertPart>,
    /// The sensor's own alert record (kind, evidence, the evidence pcap, ...).
    #[serde(skip_serializing_if = "Option::is_none")]
    sensor: Option<&'a AlertRecord>,
}

#[derive(Serialize)]
struct FlowPart {
    pkts_toserver: u64,
    pkts_toclient: u64,
    bytes_toserver: u64,
    bytes_toclient: u64,
    start: String,
    end: String,
    age: u64,
    state: &'static str,
    reason: &'static str,
    alerted: bool,
}

#[derive(Serialize)]
struct TcpPart {
    tcp_flags: String,
    syn: bool,
    fin: bool,
    rst: bool,
    psh: bool,
    ack: bool,
}

#[derive(Serialize)]
struct AlertPart {
    action: &'static str,
    gid: u32,
    signature_id: u32,
    rev: u32,
    signature: &'static str,
    category: &'static str,
    severity: u8,
    metadata: AlertMeta,
}

/// Suricata's rule metadata form: every value a list of strings.
#[derive(Serialize)]
struct AlertMeta {
    kind: [&'static str; 1],
    detector: [&'static str; 1],
    sensor_severity: [&'static str; 1],
    /// `[networks]`: which way it went and the group of our side, when known.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    direction: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    hostgroup: Vec<String>,
    /// `[geo]`: the remote side's country (ISO 3166-1 alpha-2), AS number and organisation.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    remote_country: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    remote_asn: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    remote_as_org: Vec<String>,
}

/// Suricata's timestamp form: microseconds and a numeric UTC offset
/// (`2026-12-03T08:04:11.123456+0000`).
pub fn timestamp(ns: u64) -> String {
    timestamp_of(&crate::record::rfc3339_us(ns)).unwrap_or_default()
}

/// The records' own RFC 3339 form (microseconds, `Z`) in Suricata's: the same digits with the
/// offset spelled `+0000`. (chrono's strftime was an eighth of a flood replay's time.)
fn timestamp_of(rfc3339: &str) -> Option<String> {
    match rfc3339.strip_suffix('Z') {
        Some(base) if base.len() == 26 => Some(format!("{base}+0000")),
        _ => {
            let ns = DateTime::parse_from_rfc3339(rfc3339)
                .ok()?
                .timestamp_nanos_opt()?;
            let utc = crate::record::rfc3339_us(ns.max(0) as u64);
            utc.strip_suffix('Z').map(|b| format!("{b}+0000"))
        }
    }
}

/// Suricata's protocol names (its `proto` field).
fn proto_name(p: u8) -> String {
    match p {
        1 => "ICMP".into(),
        6 => "TCP".into(),
        17 => "UDP".into(),
        58 => "IPv6-ICMP".into(),
        132 => "SCTP".into(),
        n => n.to_string(),
    }
}

/// Community ID v1 (seed 0) of a flow as the sensor keys it. ICMP flows carry type and code in
/// the destination port (`type << 8 | code`), which the spec wants as the port pair.
pub fn community_id(src: IpAddr, dst: IpAddr, proto: u8, sport: u16, dport: u16) -> Option<String> {
    let (s, d) = match proto {
        6 | 17 | 132 => (Some(sport), Some(dport)),
        1 | 58 => (Some(dport >> 8), Some(dport & 0xff)),
        _ => (None, None),
    };
    community_id::calculate_community_id(0, src, dst, s, d, proto, false).ok()
}

/// A stable id for events of one flow (or one alert): FNV-1a over what identifies it, kept
/// within 2^53 so JavaScript consumers (Kibana) read it exactly.
fn flow_id(parts: &[&[u8]]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for p in parts {
        for b in *p {
            h ^= u64::from(*b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
        h ^= 0xff;
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    (h & ((1 << 53) - 1)).max(1)
}

fn flow_event<'a>(f: &FlowRecord, last_seen_ns: u64, host: &'a str) -> Option<Event<'a>> {
    // Suricata logs IP flows only; ARP is not a flow to a SIEM.
    if f.family == "arp" {
        return None;
    }
    let (src, dst): (IpAddr, IpAddr) = (f.src_ip.parse().ok()?, f.dst_ip.parse().ok()?);
    let ports = matches!(f.proto, 6 | 17 | 132);
    let icmp = matches!(f.proto, 1 | 58);
    let start = timestamp_of(&f.first_seen).unwrap_or_default();
    let closed = matches!(f.end, EndReason::Closed | EndReason::Reused);
    let tcp = (f.proto == 6).then(|| {
        let (syn, fin, rst, psh) = (f.syn + f.syn_ack > 0, f.fin > 0, f.rst > 0, f.psh > 0);
        let ack = f.syn_ack + f.ack_only > 0 || f.packets_rev > 0 && !rst;
        let bits = u8::from(fin)
            | u8::from(syn) << 1
            | u8::from(rst) << 2
            | u8::from(psh) << 3
            | u8::from(ack) << 4;
        TcpPart {
            tcp_flags: format!("{bits:02x}"),
            syn,
            fin,
            rst,
            psh,
            ack,
        }
    });
    Some(Event {
        timestamp: timestamp(last_seen_ns),
        flow_id: flow_id(&[
            f.src_ip.as_bytes(),
            f.dst_ip.as_bytes(),
            &f.src_port.to_be_bytes(),
            &f.dst_port.to_be_bytes(),
            &[f.proto],
            f.first_seen.as_bytes(),
        ]),
        event_type: "flow",
        src_ip: Some(f.src_ip.clone()),
        src_port: ports.then_some(f.src_port),
        dest_ip: Some(f.dst_ip.clone()),
        dest_port: ports.then_some(f.dst_port),
        proto: Some(proto_name(f.proto)),
        icmp_type: icmp.then_some((f.dst_port >> 8) as u8),
        icmp_code: icmp.then_some(f.dst_port as u8),
        community_id: community_id(src, dst, f.proto, f.src_port, f.dst_port),
        host,
        flow: Some(FlowPart {
            pkts_toserver: f.packets_fwd,
            pkts_toclient: f.packets_rev,
            bytes_toserver: f.bytes_fwd,
            bytes_toclient: f.bytes_rev,
            start,
            end: timestamp(last_seen_ns),
            age: f.duration_s.max(0.0) as u64,
            state: if closed {
                "closed"
            } else if f.packets_rev > 0 {
                "established"
            } else {
                "new"
            },
            reason: match f.end {
                EndReason::Idle | EndReason::Closed => "timeout",
                EndReason::ActiveTimeout | EndReason::Reused => "forced",
                EndReason::Active | EndReason::Flush => "shutdown",
            },
            alerted: f.anomalous == Some(true),
        }),
        tcp,
        alert: None,
        sensor: None,
    })
}

/// Signature id, signature and category (Suricata's classification names) of an alert kind.
/// The ids are in a block of their own (9,000,001 on) so they never collide with ET or
/// Suricata's rule sets.
fn signature(kind: AlertKind) -> (u32, &'static str, &'static str) {
    const SCAN: &str = "Detection of a Network Scan";
    const DOS: &str = "Attempted Denial of Service";
    const BAD: &str = "Potentially Bad Traffic";
    match kind {
        AlertKind::PortScan => (9_000_001, "SENSOR SCAN port scan", SCAN),
        AlertKind::HostSweep => (9_000_002, "SENSOR SCAN host sweep", SCAN),
        AlertKind::SynFlood => (9_000_003, "SENSOR DOS SYN flood", DOS),
        AlertKind::UdpFlood => (9_000_004, "SENSOR DOS UDP flood", DOS),
        AlertKind::IcmpFlood => (9_000_005, "SENSOR DOS ICMP flood", DOS),
        AlertKind::TrafficSpike => (9_000_006, "SENSOR POLICY traffic spike", BAD),
        AlertKind::Ddos => (9_000_007, "SENSOR DOS distributed flood", DOS),
        AlertKind::MlAnomaly => (9_000_008, "SENSOR ANOMALY flow unlike the baseline", BAD),
        AlertKind::Beaconing => (
            9_000_010,
            "SENSOR TROJAN periodic beaconing to one endpoint",
            "A Network Trojan was detected",
        ),
        // An operator rule: its own id, stable across runs (from its name).
        AlertKind::Custom(_) => (
            9_100_000
                + kind
                    .as_str()
                    .bytes()
                    .fold(0u32, |h, b| h.wrapping_mul(31).wrapping_add(u32::from(b)))
                    % 100_000,
            "SENSOR CUSTOM operator rule",
            BAD,
        ),
        AlertKind::BgpSessionDown => (
            9_000_011,
            "SENSOR HEALTH BGP session to the upstream down",
            "Generic Protocol Command Decode",
        ),
        AlertKind::BruteForce => (
            9_000_009,
            "SENSOR ATTEMPTED-USER password guessing",
            "Attempted User Privilege Gain",
        ),
    }
}

/// Suricata's severity: 1 is the most severe.
fn severity(s: Severity) -> u8 {
    match s {
        Severity::Critical | Severity::High => 1,
        Severity::Medium => 2,
        Severity::Low | Severity::Normal => 3,
    }
}

fn alert_event<'a>(a: &'a AlertRecord, host: &'a str) -> Event<'a> {
    // A model alert names its peak flow; a rule alert its protocol (a flow's ports it has not).
    let view = crate::detect::evidence::EvidenceView::of(&a.evidence);
    let proto = view.proto();
    let sport = view.flow.as_ref().and_then(|f| f.src_port);
    let dport = view.flow.as_ref().and_then(|f| f.dst_port);
    let community = match (a.src_ip, a.dst_ip, proto, sport, dport) {
        (Some(s), Some(d), Some(p), Some(sp), Some(dp)) => community_id(s, d, p, sp, dp),
        _ => None,
    };
    let ports = matches!(proto, Some(6 | 17 | 132));
    let (sid, sig, category) = signature(a.kind);
    let detector = a.detector.as_str();
    Event {
        timestamp: timestamp_of(&a.first_seen).unwrap_or_default(),
        flow_id: flow_id(&[
            a.kind.as_str().as_bytes(),
            a.src_ip
                .map(|i| i.to_string())
                .unwrap_or_default()
                .as_bytes(),
            a.dst_ip
                .map(|i| i.to_string())
                .unwrap_or_default()
                .as_bytes(),
            a.first_seen.as_bytes(),
        ]),
        event_type: "alert",
        src_ip: a.src_ip.map(|i| i.to_string()),
        src_port: sport.filter(|_| ports),
        dest_ip: a.dst_ip.map(|i| i.to_string()),
        dest_port: dport.filter(|_| ports),
        proto: proto.map(proto_name),
        icmp_type: None,
        icmp_code: None,
        community_id: community,
        host,
        flow: None,
        tcp: None,
        alert: Some(AlertPart {
            action: "allowed",
            gid: 1,
            signature_id: sid,
            rev: 1,
            signature: sig,
            category,
            severity: severity(a.severity),
            metadata: AlertMeta {
                kind: [a.kind.as_str()],
                detector: [detector],
                sensor_severity: [a.severity.as_str()],
                direction: a
                    .direction
                    .iter()
                    .filter_map(|d| serde_json::to_value(d).ok())
                    .filter_map(|v| v.as_str().map(str::to_owned))
                    .collect(),
                hostgroup: a.hostgroup.iter().cloned().collect(),
                remote_country: a.remote.iter().filter_map(|r| r.country.clone()).collect(),
                remote_asn: a
                    .remote
                    .iter()
                    .filter_map(|r| r.asn.map(|n| n.to_string()))
                    .collect(),
                remote_as_org: a.remote.iter().filter_map(|r| r.as_org.clone()).collect(),
            },
        }),
        sensor: Some(a),
    }
}

#[cfg(test)]
mod tests;
