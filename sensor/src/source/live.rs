//! Live capture sources, attached and detached while the sensor runs (`sensor run --iface`, and
//! `POST /api/capture/start|stop`): the XDP program on any number of interfaces (loaded once,
//! one `bpf_link` per interface), and libpcap captures where XDP cannot attach (a reader thread
//! each, handing parsed packets to the live loop over a bounded channel).

use std::{
    collections::BTreeMap,
    sync::{
        Arc, RwLock,
        atomic::{AtomicBool, AtomicU64, Ordering},
        mpsc,
    },
    thread::JoinHandle,
    time::Duration,
};

use serde::{Deserialize, Serialize};

use crate::{
    record::rfc3339_us,
    source::{
        packet::Parsed,
        pcap::{self, CaptureError, PacketSink},
        xdp::{
            KernelConfig, KernelError, SensorProgram,
            attach::{self, AttachError, XdpAttachMode, XdpLink},
        },
    },
};

/// How a live interface is watched.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum CaptureMode {
    /// XDP in driver (native) mode, falling back to generic (skb) mode.
    Auto,
    /// XDP in driver mode only.
    Driver,
    /// XDP in generic (skb) mode only.
    Skb,
    /// libpcap, for where XDP cannot attach (slower: every packet is copied to userspace).
    Pcap,
}

impl CaptureMode {
    fn xdp(self) -> Option<XdpAttachMode> {
        match self {
            Self::Auto => Some(XdpAttachMode::Auto),
            Self::Driver => Some(XdpAttachMode::Driver),
            Self::Skb => Some(XdpAttachMode::Skb),
            Self::Pcap => None,
        }
    }
}

/// One watched interface, as `/api/status` and `/api/interfaces` show it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Attachment {
    pub iface: String,
    /// "driver" or "skb" (XDP), or "pcap".
    pub mode: &'static str,
    /// RFC 3339.
    pub since: String,
}

/// Why an interface could not be attached or detached.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error(transparent)]
    Attach(#[from] AttachError),
    #[error(transparent)]
    Kernel(#[from] KernelError),
    #[error("{iface} is already watched by this sensor ({mode}); stop it first")]
    AlreadyWatched { iface: String, mode: &'static str },
    #[error("{0} is not watched by this sensor")]
    NotWatched(String),
    #[error("libpcap capture on {iface}: {source}")]
    Capture {
        iface: String,
        #[source]
        source: CaptureError,
    },
}

/// Parsed packets `(packet, wire length, timestamp ns)` from a libpcap reader.
pub type Batch = Vec<(Parsed, u32, u64)>;

/// A libpcap reader thread.
struct PcapReader {
    stop: Arc<AtomicBool>,
    join: Option<JoinHandle<()>>,
}

impl Drop for PcapReader {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(j) = self.join.take() {
            let _ignored = j.join();
        }
    }
}

/// Hands batches to the live loop; waits for room (the kernel's capture buffer absorbs the
/// wait), but never past a stop request.
struct ChannelSink {
    tx: mpsc::SyncSender<Batch>,
    stop: Arc<AtomicBool>,
    packets: Arc<AtomicU64>,
}

impl PacketSink for ChannelSink {
    fn packets(&mut self, batch: &[(Parsed, u32, u64)]) {
        if batch.is_empty() {
            return;
        }
        self.packets
            .fetch_add(batch.len() as u64, Ordering::Relaxed);
        let mut b = batch.to_vec();
        loop {
            match self.tx.try_send(b) {
                Ok(()) => return,
                Err(mpsc::TrySendError::Full(back)) => {
                    if self.stop.load(Ordering::Relaxed) {
                        return;
                    }
                    b = back;
                    std::thread::sleep(Duration::from_micros(200));
                }
                Err(mpsc::TrySendError::Disconnected(_)) => return,
            }
        }
    }
}

/// Every live source of one sensor.
pub struct Sources {
    kernel: KernelConfig,
    force: bool,
    /// Loaded on the first XDP attach, kept until the sensor stops (its maps hold the counts).
    prog: Option<SensorProgram>,
    xdp: BTreeMap<String, (XdpLink, u64)>,
    pcap: BTreeMap<String, (PcapReader, u64)>,
    packets_tx: mpsc::SyncSender<Batch>,
    /// Packets the libpcap readers handed over.
    pub pcap_packets: Arc<AtomicU64>,
    shared: Arc<RwLock<Vec<Attachment>>>,
}

fn now_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

impl Sources {
    /// `packets_tx` is where libpcap readers send their batches; `shared` is kept up to date
    /// with what is attached (the API reads it).
    pub fn new(
        kernel: KernelConfig,
        force: bool,
        packets_tx: mpsc::SyncSender<Batch>,
        shared: Arc<RwLock<Vec<Attachment>>>,
    ) -> Self {
        Self {
            kernel,
            force,
            prog: None,
            xdp: BTreeMap::new(),
            pcap: BTreeMap::new(),
            packets_tx,
            pcap_packets: Arc::new(AtomicU64::new(0)),
            shared,
        }
    }

    /// The XDP program, once loaded (the live loop polls its maps).
    pub fn program(&mut self) -> Option<&mut SensorProgram> {
        self.prog.as_mut()
    }

    /// What is attached now.
    pub fn attachments(&self) -> Vec<Attachment> {
        let mut v: Vec<Attachment> = self
            .xdp
            .iter()
            .map(|(i, (l, t))| (i, l.mode, *t))
            .chain(self.pcap.iter().map(|(i, (_, t))| (i, "pcap", *t)))
            .map(|(iface, mode, t)| Attachment {
                iface: iface.clone(),
                mode,
                since: rfc3339_us(t),
            })
            .collect();
        v.sort_by(|a, b| a.iface.cmp(&b.iface));
        v
    }

    fn publish(&self) {
        if let Ok(mut s) = self.shared.write() {
            *s = self.attachments();
        }
    }

    fn watched(&self, iface: &str) -> Option<&'static str> {
        self.xdp
            .get(iface)
            .map(|(l, _)| l.mode)
            .or_else(|| self.pcap.contains_key(iface).then_some("pcap"))
    }

    /// Starts watching `iface`: the same checks and errors as `sensor run --iface`.
    pub fn start(&mut self, iface: &str, mode: CaptureMode) -> Result<Attachment, SourceError> {
        if let Some(mode) = self.watched(iface) {
            return Err(SourceError::AlreadyWatched {
                iface: iface.to_owned(),
                mode,
            });
        }
        if !attach::iface_exists(iface) {
            return Err(AttachError::NoInterface(iface.to_owned()).into());
        }
        match mode.xdp() {
            Some(xdp_mode) => {
                if self.prog.is_none() {
                    self.prog = Some(SensorProgram::load(self.kernel)?);
                }
                let Some(prog) = self.prog.as_mut() else {
                    return Err(SourceError::Kernel(KernelError::NoObject));
                };
                let link = attach::attach(prog, iface, xdp_mode, self.force)?;
                self.xdp.insert(iface.to_owned(), (link, now_ns()));
            }
            None => {
                // Opened here, before the caller reports success: no packet after that is missed.
                let (mut cap, link) =
                    pcap::open_live(iface, 65_535).map_err(|source| SourceError::Capture {
                        iface: iface.to_owned(),
                        source,
                    })?;
                let stop = Arc::new(AtomicBool::new(false));
                let mut sink = ChannelSink {
                    tx: self.packets_tx.clone(),
                    stop: Arc::clone(&stop),
                    packets: Arc::clone(&self.pcap_packets),
                };
                let flag = Arc::clone(&stop);
                let name = iface.to_owned();
                let join = std::thread::Builder::new()
                    .name(format!("pcap-{iface}"))
                    .spawn(move || {
                        let st = pcap::feed(
                            &mut cap,
                            link,
                            &mut sink,
                            |_| {},
                            || flag.load(Ordering::Relaxed),
                        );
                        tracing::info!(
                            iface = name,
                            packets = st.packets,
                            "libpcap capture stopped"
                        );
                    })
                    .map_err(|e| SourceError::Capture {
                        iface: iface.to_owned(),
                        source: CaptureError::Open {
                            path: iface.into(),
                            reason: e.to_string(),
                        },
                    })?;
                tracing::info!(iface, "libpcap capture started");
                self.pcap.insert(
                    iface.to_owned(),
                    (
                        PcapReader {
                            stop,
                            join: Some(join),
                        },
                        now_ns(),
                    ),
                );
            }
        }
        self.publish();
        let a = self.attachments();
        Ok(a.into_iter()
            .find(|a| a.iface == iface)
            .unwrap_or_else(|| Attachment {
                iface: iface.to_owned(),
                mode: "unknown",
                since: rfc3339_us(now_ns()),
            }))
    }

    /// Stops watching `iface` (detaches XDP, or stops its libpcap reader).
    pub fn stop(&mut self, iface: &str) -> Result<Attachment, SourceError> {
        let before = self
            .attachments()
            .into_iter()
            .find(|a| a.iface == iface)
            .ok_or_else(|| SourceError::NotWatched(iface.to_owned()))?;
        if self.xdp.remove(iface).is_some() {
            tracing::info!(iface, "XDP detached");
        }
        // Dropping a reader stops and joins its thread, which logs what it read.
        self.pcap.remove(iface);
        self.publish();
        Ok(before)
    }

    /// Detaches everything (shutdown).
    pub fn stop_all(&mut self) {
        self.xdp.clear();
        self.pcap.clear();
        self.publish();
    }

    pub fn is_empty(&self) -> bool {
        self.xdp.is_empty() && self.pcap.is_empty()
    }

    /// Whether any XDP link is attached (the loop polls the maps only then, and once more
    /// after the last one goes to take what it counted).
    pub fn has_xdp(&self) -> bool {
        !self.xdp.is_empty()
    }
}
