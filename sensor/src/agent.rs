//! `sensor run`: the live agent. Attaches the XDP program, polls its maps into the flow table,
//! runs detection, stores everything and serves the API and dashboard, in one process; on
//! SIGINT/SIGTERM it takes a last poll, flushes flows, alerts and the database, and detaches.

use std::{
    net::SocketAddr,
    path::PathBuf,
    process::Command,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use aya::programs::{XdpMode, links::FdLink};

use crate::{
    api::ApiState,
    config::Config,
    detect::{AlertRecord, Detector, model::Model},
    flow::{FlowConfig, FlowTable},
    kernel::{KernelConfig, KernelError, SensorProgram},
    poller::Poller,
    record::FlowRecord,
    store::{StatsRow, Store, StoreError},
    webhook::Webhook,
};

#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error("interface {0:?} does not exist (see `ip link`)")]
    NoInterface(String),
    #[error(
        "interface {0} already has an XDP program attached; the sensor does not replace it \
         (detach it with `ip link set dev {0} xdp off`, or pass --force)"
    )]
    Busy(String),
    #[error(transparent)]
    Kernel(#[from] KernelError),
    #[error(
        "attaching XDP to {iface} ({mode}): {source}; where XDP cannot attach, \
         `sensor run --capture pcap --iface {iface}` watches it with libpcap instead"
    )]
    Attach {
        iface: String,
        mode: &'static str,
        #[source]
        source: aya::programs::ProgramError,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("libpcap capture: {0}")]
    Capture(#[from] crate::capture::CaptureError),
    #[error("--capture pcap watches one interface; run one sensor per interface")]
    PcapOneInterface,
    #[error("API: {0}")]
    Api(#[from] std::io::Error),
}

/// How XDP is attached.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum AttachMode {
    /// Driver (native) mode, falling back to generic (skb) mode with a log line.
    Auto,
    Driver,
    Skb,
}

/// Where packets come from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum CaptureKind {
    /// The XDP program and its maps (the fast path).
    Xdp,
    /// libpcap on the interface, for where XDP cannot attach (slower, per packet in userspace).
    Pcap,
}

pub struct AgentOptions {
    pub ifaces: Vec<String>,
    pub capture: CaptureKind,
    pub mode: AttachMode,
    pub force: bool,
    pub kernel: KernelConfig,
    pub poll: Duration,
    pub flow: FlowConfig,
    pub config: Config,
    pub model: Option<Model>,
    pub db: Option<PathBuf>,
    pub data_dir: PathBuf,
    pub listen: SocketAddr,
    pub token: String,
}

/// Live numbers for `/metrics` and `/api/status`.
#[derive(Default)]
pub struct LiveMetrics {
    pub flows_active: AtomicU64,
    pub polls: AtomicU64,
    pub poll_latency_us: AtomicU64,
    pub kernel_packets: AtomicU64,
    pub kernel_bytes: AtomicU64,
    pub kernel_parse_errors: AtomicU64,
    pub kernel_insert_full: AtomicU64,
    pub kernel_insert_other: AtomicU64,
    pub kernel_overflow_lost: AtomicU64,
    pub db_queue: AtomicU64,
    pub db_dropped: AtomicU64,
}

/// Interfaces (in this network namespace) that have the sensor's XDP program attached, with
/// the mode and program id, as `ip -d -j link` reports them.
pub fn attached_interfaces() -> Vec<(String, &'static str, u64)> {
    let Ok(out) = Command::new("ip")
        .args(["-d", "-j", "link", "show"])
        .output()
    else {
        return Vec::new();
    };
    let links: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap_or_default();
    links
        .iter()
        .filter(|l| l["xdp"]["prog"]["name"] == sensor_common::XDP_PROGRAM)
        .map(|l| {
            let mode = match l["xdp"]["mode"].as_u64() {
                Some(1) => "driver",
                Some(2) => "skb",
                Some(3) => "offload",
                _ => "multiple",
            };
            (
                l["ifname"].as_str().unwrap_or_default().to_owned(),
                mode,
                l["xdp"]["prog"]["id"].as_u64().unwrap_or(0),
            )
        })
        .collect()
}

/// Asks the kernel (in this thread's network namespace; /sys may show another one).
fn iface_exists(name: &str) -> bool {
    let Ok(c) = std::ffi::CString::new(name) else {
        return false;
    };
    // SAFETY: a valid NUL-terminated string.
    unsafe { libc::if_nametoindex(c.as_ptr()) != 0 }
}

/// Whether an XDP program is attached to `iface` (from `ip -d link`).
fn xdp_attached(iface: &str) -> bool {
    Command::new("ip")
        .args(["-d", "link", "show", "dev", iface])
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("prog/xdp"))
}

/// Attaches to every interface; the links die with the process (a killed agent leaves nothing
/// attached), and are dropped on return otherwise.
fn attach(
    prog: &mut SensorProgram,
    opts: &AgentOptions,
) -> Result<Vec<(String, &'static str, FdLink)>, AgentError> {
    let mut links = Vec::new();
    for iface in &opts.ifaces {
        if !iface_exists(iface) {
            return Err(AgentError::NoInterface(iface.clone()));
        }
        if xdp_attached(iface) && !opts.force {
            return Err(AgentError::Busy(iface.clone()));
        }
        let tries: &[(XdpMode, &'static str)] = match opts.mode {
            AttachMode::Auto => &[(XdpMode::Driver, "driver"), (XdpMode::Skb, "skb")],
            AttachMode::Driver => &[(XdpMode::Driver, "driver")],
            AttachMode::Skb => &[(XdpMode::Skb, "skb")],
        };
        let mut last = None;
        for (i, (mode, name)) in tries.iter().enumerate() {
            let xdp = prog.xdp()?;
            match xdp.attach(iface, *mode) {
                Ok(id) => {
                    let link = xdp.take_link(id).map_err(|source| AgentError::Attach {
                        iface: iface.clone(),
                        mode: name,
                        source,
                    })?;
                    let link: FdLink =
                        link.try_into()
                            .map_err(|e: aya::programs::links::LinkError| AgentError::Attach {
                                iface: iface.clone(),
                                mode: name,
                                source: aya::programs::ProgramError::IOError(
                                    std::io::Error::other(e.to_string()),
                                ),
                            })?;
                    if i > 0 {
                        tracing::warn!(
                            iface,
                            "driver-mode XDP unavailable; attached in generic (skb) mode"
                        );
                    }
                    tracing::info!(iface, mode = name, "XDP attached");
                    links.push((iface.clone(), *name, link));
                    last = None;
                    break;
                }
                Err(source) => {
                    last = Some(AgentError::Attach {
                        iface: iface.clone(),
                        mode: name,
                        source,
                    })
                }
            }
        }
        if let Some(e) = last {
            return Err(e);
        }
    }
    Ok(links)
}

/// Runs until `stop` is set; returns the number of alerts raised.
pub fn run(opts: AgentOptions, stop: Arc<AtomicBool>) -> Result<u64, AgentError> {
    let mut live_pcap = None;
    let (mut prog, links, capture) = match opts.capture {
        CaptureKind::Xdp => {
            let mut prog = SensorProgram::load(opts.kernel)?;
            let links = attach(&mut prog, &opts)?;
            let what = links
                .iter()
                .map(|(i, m, _)| format!("{i} ({m})"))
                .collect::<Vec<_>>()
                .join(", ");
            (Some(prog), links, what)
        }
        CaptureKind::Pcap => {
            let [iface] = opts.ifaces.as_slice() else {
                return Err(AgentError::PcapOneInterface);
            };
            if !iface_exists(iface) {
                return Err(AgentError::NoInterface(iface.clone()));
            }
            // Open before anything reports ready: no packet after start-up is missed.
            live_pcap = Some(crate::capture::open_live(iface, 65_535)?);
            (None, Vec::new(), format!("{iface} (libpcap)"))
        }
    };

    let mut store = opts
        .db
        .as_ref()
        .map(|p| Store::open(p, opts.config.store))
        .transpose()?;
    if let Some(s) = store.as_mut() {
        s.start_session("live", &capture)?;
    }
    let webhook = Webhook::start(&opts.config.webhook);
    let metrics = Arc::new(LiveMetrics::default());

    // The API runs on its own runtime thread; it stops when `stop` is set.
    let api = match &opts.db {
        Some(db) => {
            let state = Arc::new(ApiState {
                db: db.clone(),
                data_dir: opts.data_dir.clone(),
                token: opts.token.clone(),
                started: Instant::now(),
                capture: std::sync::RwLock::new(format!("live on {capture}")),
                live: Some(Arc::clone(&metrics)),
            });
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()?;
            let listener = rt.block_on(crate::api::bind(opts.listen))?;
            eprintln!(
                "run: dashboard and API on http://{}",
                listener.local_addr()?
            );
            let stop_api = Arc::clone(&stop);
            Some(std::thread::spawn(move || {
                rt.block_on(async move {
                    let shutdown = async move {
                        while !stop_api.load(Ordering::Relaxed) {
                            tokio::time::sleep(Duration::from_millis(100)).await;
                        }
                    };
                    if let Err(e) = crate::api::serve(listener, state, shutdown).await {
                        tracing::error!(error = %e, "API server failed");
                    }
                });
            }))
        }
        None => None,
    };

    let mut table = FlowTable::new(opts.flow);
    table.record_events(true);
    let mut detector = Detector::new(opts.config.rules.clone()).with_model(opts.model.clone());
    let mut alerts = 0u64;
    let mut finished = Vec::new();
    let mut seconds = Seconds::default();
    eprintln!("run: watching {capture}; Ctrl-C to stop");
    let outcome = match prog.as_mut() {
        Some(prog) => poll_loop(
            prog,
            &mut table,
            &mut detector,
            opts.poll,
            &stop,
            store.as_ref(),
            webhook.as_ref(),
            &metrics,
            &mut alerts,
            &mut seconds,
        ),
        None => pcap_loop(
            live_pcap.take(),
            &mut table,
            &mut detector,
            &stop,
            store.as_ref(),
            webhook.as_ref(),
            &metrics,
            &mut alerts,
            &mut seconds,
        ),
    };
    // Shutdown: what the table still holds is finished, alerts are closed and stored.
    table.flush(&mut |f| finished.push(f));
    seconds.at(unix_now_ns(), store.as_ref()).flows += finished.len() as u64;
    seconds.write(store.as_ref());
    for f in finished.drain(..) {
        store_flow(store.as_ref(), &mut detector, &f);
    }
    detector.flush();
    alerts += store_alerts(store.as_ref(), webhook.as_ref(), &mut detector);
    if let Some(s) = store.as_mut() {
        s.end_session(metrics.kernel_packets.load(Ordering::Relaxed), 0)?;
        s.sync()?;
    }
    // Detach before anything else can fail.
    drop(links);
    drop(prog);
    stop.store(true, Ordering::Relaxed);
    if let Some(t) = api {
        let _ignored = t.join();
    }
    drop(webhook);
    eprintln!("run: stopped; {alerts} alert(s); XDP detached");
    outcome.map(|()| alerts)
}

/// The XDP path: drain the kernel maps every poll interval until `stop`.
#[allow(
    clippy::too_many_arguments,
    reason = "the loop's state, passed in by the owner"
)]
fn poll_loop(
    prog: &mut SensorProgram,
    table: &mut FlowTable,
    detector: &mut Detector,
    poll: Duration,
    stop: &AtomicBool,
    store: Option<&Store>,
    webhook: Option<&Webhook>,
    metrics: &LiveMetrics,
    alerts: &mut u64,
    seconds: &mut Seconds,
) -> Result<(), AgentError> {
    Poller::new().run(prog, table, poll, stop, |stats, table, finished| {
        for ev in table.take_events() {
            detector.on_event(&ev);
        }
        let now = unix_now_ns();
        for (k, h) in &stats.dst_overflow {
            detector.on_overflow(now, k, h);
        }
        detector.tick(now);
        let row = seconds.at(now, store);
        row.add_counters(&stats.counters_delta);
        row.flows += finished.len() as u64;
        for f in finished.drain(..) {
            store_flow(store, detector, &f);
        }
        *alerts += store_alerts(store, webhook, detector);
        update_metrics(metrics, stats, table, store);
    })?;
    Ok(())
}

/// The libpcap path: packets into the same table and detectors, on packet time.
#[allow(
    clippy::too_many_arguments,
    reason = "the loop's state, passed in by the owner"
)]
fn pcap_loop(
    live: Option<(pcap::Capture<pcap::Active>, crate::capture::LinkLayer)>,
    table: &mut FlowTable,
    detector: &mut Detector,
    stop: &AtomicBool,
    store: Option<&Store>,
    webhook: Option<&Webhook>,
    metrics: &LiveMetrics,
    alerts: &mut u64,
    seconds: &mut Seconds,
) -> Result<(), AgentError> {
    struct Sink<'a> {
        table: &'a mut FlowTable,
        detector: &'a mut Detector,
        store: Option<&'a Store>,
        webhook: Option<&'a Webhook>,
        metrics: &'a LiveMetrics,
        alerts: &'a mut u64,
        seconds: &'a mut Seconds,
        finished: Vec<crate::flow::Flow>,
    }
    impl crate::capture::PacketSink for Sink<'_> {
        fn packets(&mut self, batch: &[(crate::packet::Parsed, u32, u64)]) {
            for (p, len, ts) in batch {
                self.seconds.at(*ts, self.store).count(p.key.proto, *len);
            }
            let finished = &mut self.finished;
            self.table.packets(batch, &mut |f| finished.push(f));
            // A quiet link still moves time on: idle flows end, quiet alerts close.
            let now = batch.last().map_or_else(unix_now_ns, |p| p.2);
            self.table.advance_to(now, &mut |f| finished.push(f));
            for ev in self.table.take_events() {
                self.detector.on_event(&ev);
            }
            self.detector.tick(now);
            self.seconds.at(now, self.store).flows += self.finished.len() as u64;
            for f in std::mem::take(&mut self.finished) {
                store_flow(self.store, self.detector, &f);
            }
            *self.alerts += store_alerts(self.store, self.webhook, self.detector);
            self.metrics
                .flows_active
                .store(self.table.len() as u64, Ordering::Relaxed);
            self.metrics
                .kernel_packets
                .fetch_add(batch.len() as u64, Ordering::Relaxed);
        }
    }
    let Some((mut cap, link)) = live else {
        return Ok(());
    };
    let mut sink = Sink {
        table,
        detector,
        store,
        webhook,
        metrics,
        alerts,
        seconds,
        finished: Vec::new(),
    };
    let st = crate::capture::feed(
        &mut cap,
        link,
        &mut sink,
        |_| {},
        || stop.load(Ordering::Relaxed),
    );
    tracing::info!(packets = st.packets, "libpcap capture stopped");
    Ok(())
}

fn unix_now_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

fn update_metrics(
    m: &LiveMetrics,
    s: &crate::poller::PollStats,
    table: &FlowTable,
    store: Option<&Store>,
) {
    let c = &s.counters;
    m.flows_active.store(table.len() as u64, Ordering::Relaxed);
    m.polls.fetch_add(1, Ordering::Relaxed);
    m.poll_latency_us
        .store(s.duration.as_micros() as u64, Ordering::Relaxed);
    m.kernel_packets.store(c.packets, Ordering::Relaxed);
    m.kernel_bytes.store(c.bytes, Ordering::Relaxed);
    m.kernel_parse_errors
        .store(c.parse_errors, Ordering::Relaxed);
    m.kernel_insert_full
        .store(c.flow_insert_full, Ordering::Relaxed);
    m.kernel_insert_other
        .store(c.flow_insert_other, Ordering::Relaxed);
    m.kernel_overflow_lost.store(
        c.dst_insert_failures + c.src_insert_failures,
        Ordering::Relaxed,
    );
    if let Some(st) = store {
        m.db_queue.store(
            st.stats().queued.load(Ordering::Relaxed) as u64,
            Ordering::Relaxed,
        );
        m.db_dropped.store(
            st.stats().dropped.load(Ordering::Relaxed),
            Ordering::Relaxed,
        );
    }
}

/// Hands one finished flow to the detector and the store.
pub fn store_flow(store: Option<&Store>, detector: &mut Detector, f: &crate::flow::Flow) {
    detector.on_flow(f);
    if let Some(s) = store
        && let Err(e) = s.flow(FlowRecord::from(f), f.last_seen_ns, false)
    {
        tracing::error!(error = %e, "storing a flow failed");
    }
}

/// Stores and forwards alerts as they open (so the API shows them within a poll) and again as
/// they close (final counts).
pub fn store_alerts(
    store: Option<&Store>,
    webhook: Option<&Webhook>,
    detector: &mut Detector,
) -> u64 {
    let mut n = 0;
    for a in detector.book.take_opened() {
        n += 1;
        let rec = AlertRecord::from(&a);
        eprintln!(
            "ALERT {} {} {} -> {} ({})",
            a.kind.as_str(),
            format!("{:?}", a.severity).to_lowercase(),
            a.src_ip.map_or("many".into(), |i| i.to_string()),
            a.dst_ip.map_or("many".into(), |i| i.to_string()),
            a.evidence
        );
        if let Some(w) = webhook {
            w.send(&rec);
        }
        if let Some(s) = store
            && let Err(e) = s.alert(rec, a.last_seen_ns, false)
        {
            tracing::error!(error = %e, "storing an alert failed");
        }
    }
    for a in detector.book.take_closed() {
        if let Some(s) = store
            && let Err(e) = s.alert(AlertRecord::from(&a), a.last_seen_ns, false)
        {
            tracing::error!(error = %e, "storing an alert failed");
        }
    }
    n
}

/// A statistics row from one poll's counter deltas.
/// Per-second statistics rows for the charts. Both live paths add what they counted and a
/// row is written when its second ends (as `sensor replay` does), so a row never claims more
/// time than it covers.
#[derive(Default)]
struct Seconds {
    row: StatsRow,
}

impl Seconds {
    /// The row of the second holding `ts_ns`; the previous one is written once it has ended.
    fn at(&mut self, ts_ns: u64, store: Option<&Store>) -> &mut StatsRow {
        let sec = ts_ns / 1_000_000_000 * 1_000_000_000;
        if sec != self.row.ts {
            self.write(store);
            self.row = StatsRow {
                ts: sec,
                seconds: 1,
                ..StatsRow::default()
            };
        }
        &mut self.row
    }

    /// Writes the current row (if it counted anything) and empties it.
    fn write(&mut self, store: Option<&Store>) {
        let empty = StatsRow {
            ts: self.row.ts,
            seconds: 1,
            ..StatsRow::default()
        };
        let row = std::mem::replace(&mut self.row, empty);
        if let Some(s) = store
            && (row.packets > 0 || row.flows > 0)
            && let Err(e) = s.stats_row(row, false)
        {
            tracing::error!(error = %e, "storing statistics failed");
        }
    }
}
