//! Live capture sources, attached and detached while the sensor runs (`sensor run --iface`, and
//! `POST /api/capture/start|stop`): the XDP program on any number of interfaces (loaded once,
//! one `bpf_link` per interface), and libpcap captures where XDP cannot attach (a reader thread
//! each, handing parsed packets to the live loop over a bounded channel).
//!
//! Watched interfaces are supervised (every second, from the live loop): one that goes down
//! is logged and stays watched (its XDP link stays); one that is deleted is logged and waited
//! for, and when an interface of that name appears again it is attached again, in the mode
//! asked for. Nothing else stops meanwhile.

use std::{
    collections::BTreeMap,
    sync::{
        Arc, RwLock,
        atomic::{AtomicBool, Ordering},
        mpsc,
    },
    thread::JoinHandle,
    time::Duration,
};

use serde::{Deserialize, Serialize};

use crate::report::Report;
use crate::{
    kernel::{
        KernelConfig, KernelError, SensorProgram,
        attach::{self, AttachError, XdpAttachMode, XdpLink},
    },
    metrics::{Counter, Registry},
    packet::Parsed,
    record::rfc3339_us,
    source::pcap::{self, CaptureError, PacketSink},
};

/// How a live interface is watched.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum, utoipa::ToSchema,
)]
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
    /// "up", "down" (still attached; no packets), or "gone" (deleted; re-attached when an
    /// interface of this name returns).
    pub state: &'static str,
}

/// What the supervision last saw of a watched interface.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum LinkState {
    Up,
    Down,
    Gone,
}

impl LinkState {
    fn as_str(self) -> &'static str {
        match self {
            Self::Up => "up",
            Self::Down => "down",
            Self::Gone => "gone",
        }
    }
}

/// One watched interface: what was asked for and what holds it now.
struct Watch<T> {
    /// The XDP link or libpcap reader; `None` while the interface is gone.
    held: Option<T>,
    mode: CaptureMode,
    /// The mode it runs in ("driver", "skb", "pcap"): kept while it is gone.
    running: &'static str,
    since: u64,
    ifindex: u32,
    state: LinkState,
    /// The last re-attach error logged (each distinct one once).
    last_error: Option<String>,
}

/// The kernel's index of `name` in this thread's namespace (0: none).
fn ifindex(name: &str) -> u32 {
    let Ok(c) = std::ffi::CString::new(name) else {
        return 0;
    };
    // SAFETY: `c` is a valid NUL-terminated string that outlives the call.
    unsafe { libc::if_nametoindex(c.as_ptr()) }
}

/// Whether `name` is administratively up with a carrier (IFF_UP and IFF_RUNNING), asked of
/// this thread's namespace with SIOCGIFFLAGS.
fn link_up(name: &str) -> bool {
    let bytes = name.as_bytes();
    // SAFETY: ifreq is plain old data; all zeroes is a valid value.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    if bytes.len() >= req.ifr_name.len() {
        return false;
    }
    for (d, b) in req.ifr_name.iter_mut().zip(bytes) {
        *d = *b as libc::c_char;
    }
    // SAFETY: a plain datagram socket, closed below.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return false;
    }
    // SAFETY: SIOCGIFFLAGS reads the NUL-terminated name in `req` and writes its flags there.
    let r = unsafe { libc::ioctl(fd, libc::SIOCGIFFLAGS, &mut req) };
    // SAFETY: `fd` is ours and closed once.
    unsafe { libc::close(fd) };
    // SAFETY: after a successful SIOCGIFFLAGS the flags member is the one written.
    let flags = i32::from(unsafe { req.ifr_ifru.ifru_flags });
    r == 0 && flags & libc::IFF_UP != 0 && flags & libc::IFF_RUNNING != 0
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
    #[error("libpcap capture on {iface}")]
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
    packets: Counter,
}

impl PacketSink for ChannelSink {
    fn packets(&mut self, batch: &[(Parsed, u32, u64)]) {
        if batch.is_empty() {
            return;
        }
        self.packets.add(batch.len() as u64);
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
    xdp: BTreeMap<String, Watch<XdpLink>>,
    pcap: BTreeMap<String, Watch<PcapReader>>,
    packets_tx: mpsc::SyncSender<Batch>,
    /// Packets the libpcap readers handed over.
    pcap_packets: Counter,
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
        metrics: &Registry,
    ) -> Self {
        let attached = Arc::clone(&shared);
        metrics.gauge_fn(
            "sensor_attached_interfaces",
            "Interfaces watched now.",
            move || attached.read().map_or(0, |a| a.len() as u64),
        );
        Self {
            kernel,
            force,
            prog: None,
            xdp: BTreeMap::new(),
            pcap: BTreeMap::new(),
            packets_tx,
            pcap_packets: metrics.counter(
                "sensor_pcap_packets_total",
                "Packets the libpcap captures delivered.",
            ),
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
            .map(|(i, w)| (i.clone(), w.running, w.since, w.state))
            .chain(
                self.pcap
                    .iter()
                    .map(|(i, w)| (i.clone(), w.running, w.since, w.state)),
            )
            .map(|(iface, mode, t, state)| Attachment {
                iface,
                mode,
                since: rfc3339_us(t),
                state: state.as_str(),
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
            .map(|w| w.running)
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
        self.open(iface, mode)?;
        self.publish();
        let a = self.attachments();
        Ok(a.into_iter()
            .find(|a| a.iface == iface)
            .unwrap_or_else(|| Attachment {
                iface: iface.to_owned(),
                mode: "unknown",
                since: rfc3339_us(now_ns()),
                state: "up",
            }))
    }

    /// Attaches XDP or opens the libpcap capture on `iface`, replacing what was held for it.
    fn open(&mut self, iface: &str, mode: CaptureMode) -> Result<(), SourceError> {
        let index = ifindex(iface);
        let state = if link_up(iface) {
            LinkState::Up
        } else {
            LinkState::Down
        };
        fn watch<T>(
            held: T,
            mode: CaptureMode,
            running: &'static str,
            ifindex: u32,
            state: LinkState,
        ) -> Watch<T> {
            Watch {
                held: Some(held),
                mode,
                running,
                since: now_ns(),
                ifindex,
                state,
                last_error: None,
            }
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
                let running = link.mode;
                self.xdp
                    .insert(iface.to_owned(), watch(link, mode, running, index, state));
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
                    packets: self.pcap_packets.clone(),
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
                let reader = PcapReader {
                    stop,
                    join: Some(join),
                };
                self.pcap
                    .insert(iface.to_owned(), watch(reader, mode, "pcap", index, state));
            }
        }
        Ok(())
    }

    /// Checks every watched interface (the live loop calls this every second): logs one
    /// that went down or came up, lets go of one that was deleted, and attaches again when an
    /// interface of that name is back (a new index, or the libpcap reader having ended).
    pub fn supervise(&mut self) {
        let mut changed = false;
        let mut reopen = Vec::new();
        let names: Vec<(String, bool)> = self
            .xdp
            .keys()
            .map(|k| (k.clone(), true))
            .chain(self.pcap.keys().map(|k| (k.clone(), false)))
            .collect();
        for (name, xdp) in names {
            let index = ifindex(&name);
            let (state, held_index, reader_ended) = if xdp {
                let Some(w) = self.xdp.get(&name) else {
                    continue;
                };
                (w.state, w.ifindex, false)
            } else {
                let Some(w) = self.pcap.get(&name) else {
                    continue;
                };
                let ended = w
                    .held
                    .as_ref()
                    .is_some_and(|r| r.join.as_ref().is_none_or(JoinHandle::is_finished));
                (w.state, w.ifindex, ended)
            };
            if index == 0 || (reader_ended && index != held_index) {
                if state != LinkState::Gone {
                    tracing::warn!(iface = name, "interface is gone; watching for it to return");
                    self.let_go(&name, xdp);
                    changed = true;
                }
                continue;
            }
            if state == LinkState::Gone || index != held_index || reader_ended {
                reopen.push((name, xdp));
                continue;
            }
            let now = if link_up(&name) {
                LinkState::Up
            } else {
                LinkState::Down
            };
            if now != state {
                match now {
                    LinkState::Down => tracing::warn!(
                        iface = name,
                        "interface is down; still attached, no packets until it is up"
                    ),
                    _ => tracing::info!(iface = name, "interface is up again"),
                }
                self.set_state(&name, xdp, now);
                changed = true;
            }
        }
        for (name, xdp) in reopen {
            let (mode, last) = if xdp {
                self.xdp.get(&name).map(|w| (w.mode, w.last_error.clone()))
            } else {
                self.pcap.get(&name).map(|w| (w.mode, w.last_error.clone()))
            }
            .unwrap_or((CaptureMode::Auto, None));
            // Whatever was held belongs to the old interface.
            self.let_go(&name, xdp);
            match self.open(&name, mode) {
                Ok(()) => {
                    tracing::info!(iface = name, "interface is back; attached again");
                }
                Err(e) => {
                    let msg = Report(&e).to_string();
                    if last.as_deref() != Some(msg.as_str()) {
                        tracing::warn!(iface = name, error = %msg, "interface is back but cannot be attached; trying again");
                    }
                    self.set_error(&name, xdp, msg);
                }
            }
            changed = true;
        }
        if changed {
            self.publish();
        }
    }

    fn let_go(&mut self, name: &str, xdp: bool) {
        if xdp {
            if let Some(w) = self.xdp.get_mut(name) {
                w.held = None;
                w.state = LinkState::Gone;
                w.ifindex = 0;
            }
        } else if let Some(w) = self.pcap.get_mut(name) {
            // Dropping the reader stops and joins its thread.
            w.held = None;
            w.state = LinkState::Gone;
            w.ifindex = 0;
        }
    }

    fn set_state(&mut self, name: &str, xdp: bool, state: LinkState) {
        if xdp {
            if let Some(w) = self.xdp.get_mut(name) {
                w.state = state;
            }
        } else if let Some(w) = self.pcap.get_mut(name) {
            w.state = state;
        }
    }

    /// Keeps a failed re-attach's watch (gone, retried) with its error, logged once.
    fn set_error(&mut self, name: &str, xdp: bool, msg: String) {
        if xdp {
            if let Some(w) = self.xdp.get_mut(name) {
                w.last_error = Some(msg);
            }
        } else if let Some(w) = self.pcap.get_mut(name) {
            w.last_error = Some(msg);
        }
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
