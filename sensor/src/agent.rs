//! `sensor run`: wires a live sensor together and stops it in order.
//!
//! Start: database, webhook, the live loop with its pipeline, the interfaces given on the
//! command line (none: the sensor starts idle and the API attaches at runtime), then the API.
//! Stop (SIGINT/SIGTERM sets `stop`): a last poll; every flow and alert finished and stored;
//! the database synced; XDP detached; the API shut down gracefully; the webhook drained.

use std::{
    net::SocketAddr,
    path::PathBuf,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use crate::report::Report;
use crate::{
    api::{ApiState, LiveApi},
    config::Config,
    detect::{Detector, ml::model::Model},
    drive::live::{self, LiveError},
    evidence::{EvidenceError, Recorder, Window},
    flow::FlowTable,
    kernel::KernelConfig,
    metrics::Registry,
    pipeline::Pipeline,
    sink::{
        Outputs, Sink, SinkError,
        log::LogSink,
        store::{Store, StoreError, StoreSink},
    },
    source::attached::{CaptureMode, SourceError},
};

#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error(transparent)]
    Source(#[from] SourceError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Sink(#[from] SinkError),
    #[error(transparent)]
    Live(#[from] LiveError),
    #[error(transparent)]
    Evidence(#[from] EvidenceError),
    #[error("upstream mitigation")]
    Bgp(#[from] crate::mitigate::bgp::BgpError),
    #[error("country and AS data ([geo] dir)")]
    Geo(#[from] crate::geo::GeoError),
    #[error("API")]
    Api(#[from] std::io::Error),
}

pub struct AgentOptions {
    /// Interfaces to watch from the start; empty: start idle.
    pub ifaces: Vec<String>,
    pub mode: CaptureMode,
    /// Attach even where another XDP program is attached (it is replaced).
    pub force: bool,
    pub kernel: KernelConfig,
    pub poll: Duration,
    pub config: Config,
    /// The file `config` was read from: rule changes from the editor are written back to it.
    pub config_path: Option<PathBuf>,
    pub model: Option<Model>,
    /// The online second model (`--online-model`), judging every flow event.
    pub online: Option<crate::detect::ml::online::OnlineModel>,
    /// Where `model` was loaded from (shown by `/api/status`).
    pub model_path: Option<PathBuf>,
    pub db: Option<PathBuf>,
    pub data_dir: PathBuf,
    pub listen: SocketAddr,
    pub token: String,
}

/// Runs until `stop` is set; returns the number of alerts raised.
pub fn run(opts: AgentOptions, stop: Arc<AtomicBool>) -> Result<u64, AgentError> {
    let store = opts
        .db
        .as_ref()
        // A database that fails at start does not stop detection: rows wait in memory.
        .map(|p| Store::open_or_retry(p, opts.config.store))
        .transpose()?;
    let metrics = Registry::default();
    if let Some(s) = &store {
        s.stats().register(&metrics);
    }
    let outputs = Outputs::start(&opts.config.outputs(), &metrics)?;

    let mut sinks: Vec<Box<dyn Sink + '_>> = Vec::new();
    if let Some(s) = &store {
        let source = if opts.ifaces.is_empty() {
            "idle at start".to_owned()
        } else {
            opts.ifaces.join(" ")
        };
        sinks.push(Box::new(StoreSink::new(s, "live", &source, false)?));
    }
    sinks.extend(outputs.sinks(true));
    sinks.push(Box::new(LogSink));

    let mut table = FlowTable::with_capacity(opts.config.flow.table(), opts.kernel.flows as usize);
    table.record_events(true);
    let detector =
        Detector::new(opts.config.rules.clone())
            .with_model(opts.model.clone())
            .with_online(opts.online.clone().map(|m| {
                crate::detect::ml::online::Online::judge(m, opts.config.rules.max_tracked)
            }))
            .with_volume(opts.config.model.volume())
            .with_networks(opts.config.networks.build())
            .with_geo(crate::geo::Geo::loaded(crate::geo::load(
                &opts.config.geo.dir,
            )?));
    let mut kernel = opts.kernel;
    kernel.block_entries = opts.config.mitigation.max_entries;
    kernel.evidence_ring = opts.config.evidence.ring_bytes;
    let mut pipeline = Pipeline::new(Some(detector), sinks);
    // Evidence files sit beside the database and are named after its session.
    if let Some(s) = &store
        && opts.config.evidence.enabled
    {
        // A data directory that fails now does not stop detection (see `new_or_retry`).
        pipeline.set_recorder(Recorder::new_or_retry(
            opts.config.evidence.clone(),
            opts.data_dir.join("evidence"),
            s.evidence_prefix(),
            Window::FromOpen,
        ));
    }
    // The rules history: a directory that fails now does not stop detection (no dry runs).
    if opts.config.history.enabled {
        match crate::history::Writer::new(
            &opts.config.history,
            opts.config.history.dir_in(&opts.data_dir),
        ) {
            Ok(mut w) => {
                w.publish_metrics(&metrics);
                pipeline.set_history(w);
            }
            Err(e) => {
                tracing::error!(error = %Report(&e), "rules history off: dry runs have no data")
            }
        }
    }
    let upstream = if opts.config.bgp.enabled {
        Some(crate::mitigate::upstream::Upstream::new(
            opts.config.bgp.clone(),
            opts.config.networks.build(),
            opts.config.mitigation.allow.clone(),
        )?)
    } else {
        None
    };
    let (mut lp, control) = live::new(
        kernel,
        opts.force,
        table,
        pipeline,
        opts.poll,
        &metrics,
        opts.model_path.as_ref().map(|p| p.display().to_string()),
        opts.config.mitigation.clone(),
        upstream,
    );
    if opts.config.bgp.enabled {
        eprintln!(
            "run: upstream mitigation on through gobgpd at {} (FlowSpec from {} pps, RTBH {})",
            opts.config.bgp.api,
            opts.config.bgp.flowspec_pps,
            match opts.config.bgp.rtbh_pps {
                0 => "never".to_owned(),
                n => format!("from {n} pps"),
            }
        );
    }
    if !opts.config.mitigation.kinds.is_empty() {
        let kinds: Vec<&str> = opts
            .config
            .mitigation
            .kinds
            .iter()
            .map(|k| k.as_str())
            .collect();
        eprintln!(
            "run: mitigation on for {} (entries expire after {} s)",
            kinds.join(", "),
            opts.config.mitigation.ttl_s
        );
    }
    for iface in &opts.ifaces {
        lp.start(iface, opts.mode)?;
    }

    // The API runs on its own runtime thread; it stops when `stop` is set.
    let api = match &opts.db {
        Some(db) => {
            let state = Arc::new(ApiState {
                db: db.clone(),
                data_dir: opts.data_dir.clone(),
                token: opts.token.clone(),
                started: Instant::now(),
                config: opts.config.clone(),
                http: crate::api::HttpLimits::default(),
                jobs: crate::api::job_slot(),
                config_path: opts.config_path.clone(),
                rules: std::sync::RwLock::new(opts.config.rules.clone()),
                history_dir: opts
                    .config
                    .history
                    .enabled
                    .then(|| opts.config.history.dir_in(&opts.data_dir)),
                applying: tokio::sync::Mutex::new(()),
                live: Some(LiveApi {
                    metrics: metrics.clone(),
                    control,
                    store: store.as_ref().map(|s| Arc::clone(s.stats())),
                }),
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
                        tracing::error!(error = %Report(&e), "API server failed");
                    }
                });
            }))
        }
        None => None,
    };

    if opts.ifaces.is_empty() {
        eprintln!(
            "run: idle; attach with POST /api/capture/start or the dashboard; Ctrl-C to stop"
        );
    } else {
        eprintln!("run: watching {}; Ctrl-C to stop", opts.ifaces.join(", "));
    }
    let outcome = lp.run(&stop);
    // Shutdown order: flush and store (in `finish`), detach, then the API and the webhook.
    let totals = lp.finish();
    stop.store(true, Ordering::Relaxed);
    if let Some(t) = api {
        let _ignored = t.join();
    }
    outputs.close();
    drop(store);
    outcome?;
    let totals = totals?;
    let alerts: u64 = totals.alerts.values().sum();
    eprintln!("run: stopped; {alerts} alert(s); XDP detached");
    Ok(alerts)
}
