//! Packet evidence for alerts: one pcap file per alert, in `DATA_DIR/evidence`.
//!
//! The [`Recorder`] decides which alerts are recorded (those with an attacker or a victim
//! address, while fewer than `max_open` recordings run), names each file after the store's
//! session and the alert (`alert-{session}-{id}.pcap`, so the API finds it from the alert's
//! row), writes the matching packets within the alert's window and budget, and keeps the
//! directory under its total size cap by deleting the oldest files.
//!
//! Where the packets come from depends on the path:
//!
//! - live ([`kernel`]): the alert's addresses go into the XDP program's watch map; the
//!   program copies the first bytes of matching packets into a ring buffer, with budgets and
//!   losses counted in the kernel; the live loop drains the ring every poll. The window starts
//!   when the alert opens (the packets before it are gone).
//! - replay ([`replay`]): after the detection pass, a second pass over the same files writes
//!   the packets of each alert's window, which starts at the alert's first packet.
//!
//! Matching is the same on both paths: an alert with a single source records every packet
//! from or to that source (probes and the answers to them); an alert with only a victim (a
//! spoofed or distributed flood) records the packets sent to the victim.

pub mod pcap;
pub mod second_pass;

use std::{
    collections::{BTreeMap, HashMap},
    net::IpAddr,
    path::{Path, PathBuf},
    time::SystemTime,
};

use serde::{Deserialize, Serialize};

use self::pcap::PcapWriter;
use crate::report::Report;
use crate::{
    check::Invalid,
    detect::alert::Alert,
    metrics::{Counter, Gauge, Registry},
};

const NS: u64 = 1_000_000_000;
/// Ethernet, the link type of every XDP frame.
pub const LINKTYPE_ETHERNET: u32 = 1;

/// `[evidence]` in the config file.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EvidenceConfig {
    /// Record packets for alerts (needs a data directory: the files live beside the database).
    pub enabled: bool,
    /// Bytes kept of each packet (1 to 256: the kernel copies at most 256).
    pub snaplen: u32,
    /// Packets per alert at most.
    pub max_packets: u64,
    /// Seconds of traffic recorded after an alert opens (replay adds the window its rule
    /// measured before, up to as long again).
    pub max_seconds: u64,
    /// Bytes of one alert's file at most.
    pub max_file_bytes: u64,
    /// Bytes of all evidence files at most; the oldest files are deleted beyond it.
    pub total_bytes: u64,
    /// Alerts recorded at the same time at most; later alerts get no file until one ends.
    pub max_open: usize,
    /// Bytes of the kernel's evidence ring buffer (what a poll interval can hold).
    pub ring_bytes: u32,
}

impl Default for EvidenceConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            snaplen: sensor_common::EVIDENCE_SNAPLEN as u32,
            max_packets: 10_000,
            max_seconds: 30,
            max_file_bytes: 4 << 20,
            total_bytes: 1 << 30,
            max_open: 64,
            ring_bytes: sensor_common::DEFAULT_EVIDENCE_RING,
        }
    }
}

impl EvidenceConfig {
    /// Range checks serde cannot do; the message names the key.
    pub fn check(&self) -> Result<(), Invalid> {
        let max_snap = sensor_common::EVIDENCE_SNAPLEN as u32;
        if !(1..=max_snap).contains(&self.snaplen) {
            return Err(Invalid::new(
                "evidence.snaplen",
                format!("must be within 1 and {max_snap}, not {}", self.snaplen),
            ));
        }
        for (key, v) in [
            ("evidence.max_packets", self.max_packets),
            ("evidence.max_seconds", self.max_seconds),
            ("evidence.max_open", self.max_open as u64),
        ] {
            if v == 0 {
                return Err(Invalid::new(key, "must be positive"));
            }
        }
        if self.max_file_bytes < 4096 || self.total_bytes < self.max_file_bytes {
            return Err(Invalid::new(
                "evidence.max_file_bytes",
                format!(
                    "must be at least 4096 and at most evidence.total_bytes ({} and {} given)",
                    self.max_file_bytes, self.total_bytes
                ),
            ));
        }
        if !(4096..=1 << 30).contains(&self.ring_bytes) {
            return Err(Invalid::new(
                "evidence.ring_bytes",
                format!("must be within 4096 and 1 GiB, not {}", self.ring_bytes),
            ));
        }
        Ok(())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum EvidenceError {
    #[error("{path}: cannot use as the evidence directory")]
    Dir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// The evidence file name of alert `id` under `prefix` ([`crate::sink::store::Store::evidence_prefix`]:
/// the database's tag and the session, so databases sharing a data directory never collide).
pub fn file_name(prefix: &str, id: u64) -> String {
    format!("alert-{prefix}-{id}.pcap")
}

/// Whether `name` is an evidence file name (what the API accepts before it touches the disk).
pub fn is_file_name(name: &str) -> bool {
    let Some(mid) = name
        .strip_prefix("alert-")
        .and_then(|s| s.strip_suffix(".pcap"))
    else {
        return false;
    };
    let parts: Vec<&str> = mid.split('-').collect();
    let digits = |s: &str| !s.is_empty() && s.len() <= 20 && s.bytes().all(|b| b.is_ascii_digit());
    let tag = |s: &str| s.len() == 8 && s.bytes().all(|b| b.is_ascii_hexdigit());
    match parts.as_slice() {
        // alert-{session}-{id}.pcap, as files were named before databases had a tag.
        [session, id] => digits(session) && digits(id),
        [t, session, id] => tag(t) && digits(session) && digits(id),
        _ => false,
    }
}

/// The 16-byte form the flow keys and the kernel use (IPv4 mapped into IPv6).
pub fn addr16(ip: IpAddr) -> [u8; 16] {
    match ip {
        IpAddr::V4(v4) => v4.to_ipv6_mapped().octets(),
        IpAddr::V6(v6) => v6.octets(),
    }
}

/// Which packets belong to an alert.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Target {
    /// Packets from or to this address (the alert's single source).
    pub peer: Option<[u8; 16]>,
    /// Else packets to this address (the alert's victim).
    pub victim: Option<[u8; 16]>,
}

impl Target {
    /// `None` for an alert about no single address (a traffic spike over everything).
    pub fn of(a: &Alert) -> Option<Self> {
        let t = match (a.src_ip, a.dst_ip) {
            (Some(s), _) => Self {
                peer: Some(addr16(s)),
                victim: None,
            },
            (None, Some(d)) => Self {
                peer: None,
                victim: Some(addr16(d)),
            },
            (None, None) => return None,
        };
        Some(t)
    }

    pub fn matches(&self, src: &[u8; 16], dst: &[u8; 16]) -> bool {
        match (self.peer, self.victim) {
            (Some(p), _) => &p == src || &p == dst,
            (None, Some(v)) => &v == dst,
            (None, None) => false,
        }
    }
}

/// Where an alert's window starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Window {
    /// Now (live: the packets before the alert are gone).
    FromOpen,
    /// Replay (which reads the files again): also the window the rule measured before the
    /// alert opened (its `window_s`, else one second), so the file holds the packets that
    /// raised it.
    FromFirstSeen,
}

/// What the recorder did, for `/metrics` and the replay summary.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct EvidenceStats {
    /// Recordings running now.
    pub recording: u64,
    /// Alerts given a file name.
    pub recordings: u64,
    /// Files that received at least one packet.
    pub files: u64,
    pub packets: u64,
    pub bytes: u64,
    /// Files cut short: their alert's packet or byte budget was spent.
    pub cut_short: u64,
    /// Alerts not recorded: `max_open` recordings were running.
    pub refused: u64,
    /// Old files deleted to stay under `total_bytes`.
    pub rotated: u64,
    /// Files that could not be created or written (the recording stops).
    pub errors: u64,
}

/// The recorder's numbers on `/metrics`.
pub struct EvidenceMetrics {
    recording: Gauge,
    files: Counter,
    packets: Counter,
    bytes: Counter,
    cut_short: Counter,
    refused: Counter,
    rotated: Counter,
    errors: Counter,
}

impl EvidenceMetrics {
    pub fn new(m: &Registry) -> Self {
        Self {
            recording: m.gauge(
                "sensor_evidence_recordings",
                "Alerts whose packets are being recorded.",
            ),
            files: m.counter("sensor_evidence_files_total", "Alert pcap files written."),
            packets: m.counter(
                "sensor_evidence_written_packets_total",
                "Packets written to alert pcap files.",
            ),
            bytes: m.counter(
                "sensor_evidence_written_bytes_total",
                "Bytes written to alert pcap files.",
            ),
            cut_short: m.counter(
                "sensor_evidence_cut_short_total",
                "Alert pcap files cut short by the per-alert packet or byte budget.",
            ),
            refused: m.counter(
                "sensor_evidence_refused_total",
                "Alerts not recorded: evidence.max_open recordings were running.",
            ),
            rotated: m.counter(
                "sensor_evidence_rotated_files_total",
                "Old evidence files deleted to stay under evidence.total_bytes.",
            ),
            errors: m.counter(
                "sensor_evidence_errors_total",
                "Evidence files that could not be created or written.",
            ),
        }
    }

    pub fn publish(&self, s: &EvidenceStats) {
        self.recording.set(s.recording);
        self.files.set_total(s.files);
        self.packets.set_total(s.packets);
        self.bytes.set_total(s.bytes);
        self.cut_short.set_total(s.cut_short);
        self.refused.set_total(s.refused);
        self.rotated.set_total(s.rotated);
        self.errors.set_total(s.errors);
    }
}

/// One alert's recording.
struct Recording {
    alert_id: u64,
    name: String,
    target: Target,
    start_ns: u64,
    end_ns: u64,
    packets: u64,
    writer: Option<PcapWriter>,
    linktype: u32,
    /// Budget spent or the file failed: ends at the next [`Recorder::expire`].
    done: bool,
}

/// Alerts' evidence files: which alerts, which packets, the size caps.
pub struct Recorder {
    cfg: EvidenceConfig,
    dir: PathBuf,
    /// What file names start with (see [`file_name`]).
    prefix: String,
    window: Window,
    /// Live: whether a source that can copy packets is attached (XDP); no file names are
    /// promised while none is.
    capturing: bool,
    active: Vec<Recording>,
    /// Replay: recordings whose window has not started yet in the second pass, latest first.
    pending: Vec<Recording>,
    /// File names of alerts still open (their closing record names the file too).
    names: HashMap<u64, String>,
    stats: EvidenceStats,
    /// The set of recordings changed since [`Recorder::take_changed`].
    changed: bool,
    error_logged: bool,
    /// The directory exists (made at start, or at a later alert when it could not be then).
    dir_ready: bool,
}

impl Recorder {
    /// A recorder writing into `dir` (created mode 0700), naming files with `prefix` (the
    /// store's [`crate::sink::store::Store::evidence_prefix`]). The directory is brought under
    /// the total cap at once.
    pub fn new(
        cfg: EvidenceConfig,
        dir: PathBuf,
        prefix: String,
        window: Window,
    ) -> Result<Self, EvidenceError> {
        create_private_dir(&dir).map_err(|source| EvidenceError::Dir {
            path: dir.clone(),
            source,
        })?;
        Ok(Self::with_dir(cfg, dir, prefix, window, true))
    }

    /// Like [`Recorder::new`], but a directory that cannot be made now (a read-only or full
    /// data directory) is logged and tried again at the next alert's file: the live sensor
    /// does not stop for it.
    pub fn new_or_retry(cfg: EvidenceConfig, dir: PathBuf, prefix: String, window: Window) -> Self {
        let ready = match create_private_dir(&dir) {
            Ok(()) => true,
            Err(e) => {
                tracing::error!(dir = %dir.display(), error = %Report(&e), "evidence directory unavailable; trying again at the next alert");
                false
            }
        };
        Self::with_dir(cfg, dir, prefix, window, ready)
    }

    fn with_dir(
        cfg: EvidenceConfig,
        dir: PathBuf,
        prefix: String,
        window: Window,
        dir_ready: bool,
    ) -> Self {
        let mut r = Self {
            cfg,
            dir,
            prefix,
            window,
            capturing: window == Window::FromFirstSeen,
            active: Vec::new(),
            pending: Vec::new(),
            names: HashMap::new(),
            stats: EvidenceStats::default(),
            changed: false,
            error_logged: false,
            dir_ready,
        };
        if dir_ready {
            r.rotate();
        }
        r
    }

    pub fn config(&self) -> &EvidenceConfig {
        &self.cfg
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Live: whether packets can be copied now (XDP attached).
    pub fn set_capturing(&mut self, on: bool) {
        self.capturing = on;
    }

    pub fn stats(&self) -> EvidenceStats {
        EvidenceStats {
            recording: self.active.len() as u64,
            ..self.stats
        }
    }

    /// An alert opened: the name of the file its packets will go to, or `None` when it is not
    /// recorded (no single address, no capture, `max_open` reached).
    pub fn alert_opened(&mut self, a: &Alert) -> Option<String> {
        if !self.capturing {
            return None;
        }
        let target = Target::of(a)?;
        let (start_ns, end_ns) = match self.window {
            Window::FromOpen => {
                let now = unix_now_ns();
                (now, now.saturating_add(self.cfg.max_seconds * NS))
            }
            // The alert opens when a rule's measure crosses its threshold; the packets that
            // made it cross are in the window the rule measured over (a scan's minute, a
            // flood's second), so the file starts there.
            Window::FromFirstSeen => {
                let measured = a.evidence.window_s().unwrap_or(1).min(self.cfg.max_seconds);
                (
                    a.first_seen_ns.saturating_sub(measured * NS),
                    a.first_seen_ns.saturating_add(self.cfg.max_seconds * NS),
                )
            }
        };
        // Replay admits while reading, before any packet is written: what counts is how many
        // windows overlap this one (the files the second pass holds open at once).
        let running = self.active.iter().filter(|r| r.end_ns >= start_ns).count();
        if running >= self.cfg.max_open {
            self.stats.refused += 1;
            return None;
        }
        let name = file_name(&self.prefix, a.id);
        self.active.push(Recording {
            alert_id: a.id,
            name: name.clone(),
            target,
            start_ns,
            end_ns,
            packets: 0,
            writer: None,
            linktype: 0,
            done: false,
        });
        self.names.insert(a.id, name.clone());
        self.stats.recordings += 1;
        self.changed = true;
        Some(name)
    }

    /// The file name of an open alert's recording, if it has one (its updates name it too).
    pub fn file_of(&self, id: u64) -> Option<String> {
        self.names.get(&id).cloned()
    }

    /// An alert closed: its file name, if it has one (its recording runs to the window's end).
    pub fn alert_closed(&mut self, id: u64) -> Option<String> {
        self.names.remove(&id)
    }

    /// True once since the set of recordings changed (the kernel's watch map follows it).
    pub fn take_changed(&mut self) -> bool {
        std::mem::take(&mut self.changed)
    }

    /// Whether a recording runs now.
    pub fn is_recording(&self) -> bool {
        !self.active.is_empty()
    }

    /// One packet: written to every running recording it belongs to, within its window and
    /// budget. `addrs` are the packet's (source, destination); where they could not be parsed,
    /// `hint` names the alert the kernel copied it for.
    pub fn packet(
        &mut self,
        ts_ns: u64,
        wire_len: u32,
        data: &[u8],
        linktype: u32,
        addrs: Option<(&[u8; 16], &[u8; 16])>,
        hint: Option<u64>,
    ) {
        let data = &data[..data.len().min(self.cfg.snaplen as usize)];
        let record = pcap::RECORD_HEADER + data.len() as u64;
        for i in 0..self.active.len() {
            let r = &mut self.active[i];
            if r.done || ts_ns < r.start_ns || ts_ns > r.end_ns {
                continue;
            }
            let ours = match addrs {
                Some((s, d)) => r.target.matches(s, d),
                None => hint == Some(r.alert_id),
            };
            if !ours {
                continue;
            }
            let size = r.writer.as_ref().map_or(pcap::FILE_HEADER, PcapWriter::len);
            if r.packets >= self.cfg.max_packets || size + record > self.cfg.max_file_bytes {
                self.stats.cut_short += 1;
                r.done = true;
                continue;
            }
            if r.writer.is_none() && !self.dir_ready {
                match create_private_dir(&self.dir) {
                    Ok(()) => self.dir_ready = true,
                    Err(e) => {
                        r.done = true;
                        let dir = self.dir.clone();
                        self.file_error(&dir, &e);
                        continue;
                    }
                }
            }
            if r.writer.is_none() {
                match PcapWriter::create(&self.dir.join(&r.name), linktype, self.cfg.snaplen) {
                    Ok(w) => {
                        r.writer = Some(w);
                        r.linktype = linktype;
                        self.stats.files += 1;
                    }
                    Err(e) => {
                        let path = self.dir.join(&r.name);
                        r.done = true;
                        self.file_error(&path, &e);
                        continue;
                    }
                }
            }
            if r.linktype != linktype {
                // A replay of files of different link types: one file holds one.
                continue;
            }
            let Some(w) = r.writer.as_mut() else { continue };
            if let Err(e) = w.write(ts_ns, wire_len, data) {
                let path = self.dir.join(&r.name);
                r.done = true;
                self.file_error(&path, &e);
                continue;
            }
            r.packets += 1;
            self.stats.packets += 1;
            self.stats.bytes += record;
        }
    }

    fn file_error(&mut self, path: &Path, e: &std::io::Error) {
        self.stats.errors += 1;
        if !std::mem::replace(&mut self.error_logged, true) {
            tracing::error!(file = %path.display(), error = %Report(&e),
                "writing an evidence file failed (further failures are counted in sensor_evidence_errors_total)");
        }
    }

    /// Ends the recordings whose window is over at `now_ns` (or whose budget is spent), and
    /// flushes the others so their files can be read whole.
    /// Whether a running recording ended early (its budget spent, or its file failed).
    fn any_done(&self) -> bool {
        self.active.iter().any(|r| r.done)
    }

    pub fn expire(&mut self, now_ns: u64) {
        let mut ended = false;
        let mut i = 0;
        while i < self.active.len() {
            let r = &mut self.active[i];
            if r.done || now_ns > r.end_ns {
                let r = self.active.swap_remove(i);
                self.close(r);
                ended = true;
            } else {
                if let Some(w) = r.writer.as_mut()
                    && let Err(e) = w.flush()
                {
                    let path = self.dir.join(&r.name);
                    r.done = true;
                    self.file_error(&path, &e);
                }
                i += 1;
            }
        }
        if ended {
            self.changed = true;
            self.rotate();
        }
    }

    /// Replay: the detection pass is over; the second pass starts its recordings as packet
    /// time reaches them ([`Recorder::start_due`]).
    fn begin_second_pass(&mut self) {
        self.pending = std::mem::take(&mut self.active);
        self.pending
            .sort_by_key(|r| std::cmp::Reverse((r.start_ns, r.alert_id)));
    }

    /// Replay: starts the recordings whose window begins by `ts_ns`; true if any did.
    fn start_due(&mut self, ts_ns: u64) -> bool {
        let mut started = false;
        while self.pending.last().is_some_and(|r| r.start_ns <= ts_ns) {
            if let Some(r) = self.pending.pop() {
                self.active.push(r);
                started = true;
            }
        }
        started
    }

    /// Replay: the earliest window end among running recordings.
    fn next_end(&self) -> Option<u64> {
        self.active.iter().map(|r| r.end_ns).min()
    }

    /// Ends every recording (shutdown, end of a replay).
    pub fn finish(&mut self) {
        self.pending.clear();
        for r in std::mem::take(&mut self.active) {
            self.close(r);
        }
        self.changed = true;
        self.rotate();
    }

    fn close(&mut self, r: Recording) {
        if let Some(w) = r.writer
            && let Err(e) = w.finish()
        {
            self.file_error(&self.dir.join(&r.name), &e);
        }
    }

    /// What the kernel should watch: per address, (flags, newest alert id, window end in Unix
    /// ns, packets budget, bytes budget). Budgets add up over the alerts sharing an address;
    /// the exact per-alert budget is applied here, when writing.
    pub fn watches(&self) -> BTreeMap<[u8; 16], (u32, u64, u64, u64, u64)> {
        let mut out: BTreeMap<[u8; 16], (u32, u64, u64, u64, u64)> = BTreeMap::new();
        let bytes = self.cfg.max_file_bytes;
        for r in self.active.iter().filter(|r| !r.done) {
            let (addr, flags) = match (r.target.peer, r.target.victim) {
                (Some(p), _) => (
                    p,
                    sensor_common::watch::AS_SRC | sensor_common::watch::AS_DST,
                ),
                (None, Some(v)) => (v, sensor_common::watch::AS_DST),
                (None, None) => continue,
            };
            let e = out.entry(addr).or_insert((0, 0, 0, 0, 0));
            e.0 |= flags;
            e.1 = e.1.max(r.alert_id);
            e.2 = e.2.max(r.end_ns);
            e.3 = e.3.saturating_add(self.cfg.max_packets);
            e.4 = e.4.saturating_add(bytes);
        }
        out
    }

    /// Deletes the oldest evidence files (not those being written) until the directory is
    /// under `total_bytes`.
    fn rotate(&mut self) {
        let Ok(rd) = std::fs::read_dir(&self.dir) else {
            return;
        };
        let mut files: Vec<(SystemTime, u64, PathBuf, String)> = rd
            .filter_map(Result::ok)
            .filter_map(|e| {
                let name = e.file_name().into_string().ok()?;
                if !is_file_name(&name) {
                    return None;
                }
                let m = e.metadata().ok()?;
                m.is_file().then(|| {
                    (
                        m.modified().unwrap_or(SystemTime::UNIX_EPOCH),
                        m.len(),
                        e.path(),
                        name,
                    )
                })
            })
            .collect();
        let mut total: u64 = files.iter().map(|f| f.1).sum();
        if total <= self.cfg.total_bytes {
            return;
        }
        files.sort();
        for (_, len, path, name) in files {
            if total <= self.cfg.total_bytes {
                break;
            }
            if self.active.iter().any(|r| r.name == name) {
                continue;
            }
            if std::fs::remove_file(&path).is_ok() {
                total -= len;
                self.stats.rotated += 1;
            }
        }
    }
}

fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt as _;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)?;
    if !dir.is_dir() {
        return Err(std::io::Error::other("not a directory"));
    }
    Ok(())
}

fn unix_now_ns() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

#[cfg(test)]
mod tests;
