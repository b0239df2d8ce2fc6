//! Command line of the `sensor` binary.

use std::{path::PathBuf, time::Duration};

use clap::{Args, Parser, Subcommand};

use crate::{
    config::{Config, ConfigError},
    detect::{
        iforest::ForestParams,
        model::{Model, ModelError},
    },
    flow::FlowConfig,
    kernel::{KernelConfig, SensorProgram},
    replay::{JsonlSink, ReplayError, ReplayOptions, replay},
    store::Store,
};

#[derive(Debug, Parser)]
#[command(
    name = "sensor",
    version,
    about = "Gateway network security sensor (XDP + detection)"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Load the XDP program into the kernel without attaching it, and report what was loaded.
    ///
    /// Tells an operator whether this kernel and these privileges can run the sensor.
    Check {
        /// Entries of the 5-tuple flow map.
        #[arg(long, env = "SENSOR_FLOW_ENTRIES", default_value_t = KernelConfig::default().flows)]
        flow_entries: u32,
        /// Entries of each per-host overflow map.
        #[arg(long, env = "SENSOR_HOST_ENTRIES", default_value_t = KernelConfig::default().hosts)]
        host_entries: u32,
        /// Stamp flows with the kernel's coarse clock (tick resolution, cheaper per packet).
        #[arg(long, env = "SENSOR_COARSE_TIME")]
        coarse_time: bool,
    },
    /// Replay capture files (pcap, pcapng) through the flow pipeline.
    Replay {
        /// Capture files, read in order as one stream.
        #[arg(required = true)]
        pcaps: Vec<PathBuf>,
        /// Write each finished flow as one JSON object per line (`-` for standard output).
        #[arg(long, value_name = "PATH|-")]
        flows_jsonl: Option<PathBuf>,
        /// Write each alert, in its final state, as one JSON object per line.
        #[arg(long, value_name = "PATH|-")]
        alerts_jsonl: Option<PathBuf>,
        /// TOML config file (rule thresholds under [rules]).
        #[arg(long, env = "SENSOR_CONFIG")]
        config: Option<PathBuf>,
        /// Flows only: no rules, no model (for throughput measurements).
        #[arg(long)]
        no_detect: bool,
        /// Anomaly model from `sensor train`: finished flows scoring above its threshold
        /// raise `ml_anomaly` alerts.
        #[arg(long, env = "SENSOR_MODEL")]
        model: Option<PathBuf>,
        #[command(flatten)]
        db: DbArgs,
        #[command(flatten)]
        flow: FlowArgs,
    },
    /// Attach the XDP sensor to interfaces and run detection, storage and the API live.
    Run {
        /// Interface to watch (repeat for several).
        #[arg(long = "iface", required = true)]
        ifaces: Vec<String>,
        /// Packet source: the XDP program, or libpcap where XDP cannot attach.
        #[arg(long, value_enum, default_value = "xdp")]
        capture: crate::agent::CaptureKind,
        /// XDP attach mode: auto tries driver mode, then generic (skb) mode.
        #[arg(long, value_enum, default_value = "auto")]
        xdp_mode: crate::agent::AttachMode,
        /// Attach even when another XDP program is attached (it is replaced).
        #[arg(long)]
        force: bool,
        /// Milliseconds between map polls.
        #[arg(long, env = "SENSOR_POLL_MS", default_value_t = 250)]
        poll_ms: u64,
        #[arg(long, env = "SENSOR_FLOW_ENTRIES", default_value_t = KernelConfig::default().flows)]
        flow_entries: u32,
        #[arg(long, env = "SENSOR_HOST_ENTRIES", default_value_t = KernelConfig::default().hosts)]
        host_entries: u32,
        #[arg(long, env = "SENSOR_COARSE_TIME")]
        coarse_time: bool,
        #[arg(long, env = "SENSOR_CONFIG")]
        config: Option<PathBuf>,
        #[arg(long, env = "SENSOR_MODEL")]
        model: Option<PathBuf>,
        #[arg(long, env = "SENSOR_LISTEN", default_value = "127.0.0.1:8080")]
        listen: std::net::SocketAddr,
        #[arg(long, env = "SENSOR_TOKEN")]
        token: Option<String>,
        #[command(flatten)]
        db: DbArgs,
        #[command(flatten)]
        flow: FlowArgs,
    },
    /// Tell whether a sensor is attached, and where (this network namespace).
    Status,
    /// Serve the JSON API and the dashboard over a database.
    Serve {
        #[command(flatten)]
        db: DbArgs,
        /// Address to listen on (loopback by default: the read endpoints need no token).
        #[arg(long, env = "SENSOR_LISTEN", default_value = "127.0.0.1:8080")]
        listen: std::net::SocketAddr,
        /// Bearer token for the control endpoints (default: DATA_DIR/api-token, created once).
        #[arg(long, env = "SENSOR_TOKEN")]
        token: Option<String>,
    },
    /// Train the anomaly model on baseline (attack-free) captures.
    Train {
        /// Baseline capture files.
        #[arg(required = true)]
        pcaps: Vec<PathBuf>,
        /// Where to write the model.
        #[arg(long)]
        model: PathBuf,
        /// Expected share of anomalies in the baseline; sets the score threshold.
        #[arg(long, default_value_t = 0.1)]
        contamination: f64,
        #[arg(long, default_value_t = 100)]
        trees: usize,
        #[arg(long, default_value_t = 256)]
        sample_size: usize,
        #[arg(long, default_value_t = 42)]
        seed: u64,
        #[arg(long, env = "SENSOR_CONFIG")]
        config: Option<PathBuf>,
        #[command(flatten)]
        flow: FlowArgs,
    },
}

/// Where results are stored.
#[derive(Debug, Args)]
pub struct DbArgs {
    /// Directory for the database and other state.
    #[arg(long, env = "SENSOR_DATA_DIR", default_value = "./data")]
    pub data_dir: PathBuf,
    /// Database file (default: DATA_DIR/sensor.db).
    #[arg(long, env = "SENSOR_DB")]
    pub db: Option<PathBuf>,
    /// Write no database.
    #[arg(long, conflicts_with = "db")]
    pub no_db: bool,
}

impl DbArgs {
    pub fn path(&self) -> Option<PathBuf> {
        (!self.no_db).then(|| {
            self.db
                .clone()
                .unwrap_or_else(|| self.data_dir.join("sensor.db"))
        })
    }
}

/// Flow-table settings shared by every command that builds flows.
#[derive(Debug, Args)]
pub struct FlowArgs {
    /// Seconds without a packet after which a flow is finished.
    #[arg(long, env = "SENSOR_IDLE_TIMEOUT", default_value_t = 120)]
    pub idle_timeout: u64,
    /// Seconds after which a long flow is reported and restarted.
    #[arg(long, env = "SENSOR_ACTIVE_TIMEOUT", default_value_t = 300)]
    pub active_timeout: u64,
    /// Seconds a closed TCP connection (FIN both ways, or RST) waits for late packets.
    #[arg(long, env = "SENSOR_CLOSE_TIMEOUT", default_value_t = 10)]
    pub close_timeout: u64,
    /// Most flows held at once; packets of new flows beyond it are counted and dropped.
    #[arg(long, env = "SENSOR_MAX_FLOWS", default_value_t = 1_000_000)]
    pub max_flows: usize,
}

impl FlowArgs {
    pub fn config(&self) -> FlowConfig {
        FlowConfig {
            idle_timeout: Duration::from_secs(self.idle_timeout),
            active_timeout: Duration::from_secs(self.active_timeout),
            close_timeout: Duration::from_secs(self.close_timeout),
            max_flows: self.max_flows,
        }
    }
}

/// Runs one parsed command line; `main` only maps the error to an exit status.
pub fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Check {
            flow_entries,
            host_entries,
            coarse_time,
        } => {
            let sizes = KernelConfig {
                flows: flow_entries,
                hosts: host_entries,
                coarse_time,
            };
            let mut program = SensorProgram::load(sizes)?;
            let info = program.xdp()?.info()?;
            println!(
                "ok: XDP program {} loaded and verified (id {}), flow map {} entries, host maps {} \
                 entries each; nothing attached",
                sensor_common::XDP_PROGRAM,
                info.id(),
                sizes.flows,
                sizes.hosts
            );
            Ok(())
        }
        Command::Serve { db, listen, token } => serve(&db, listen, token),
        Command::Status => {
            let attached = crate::agent::attached_interfaces();
            if attached.is_empty() {
                println!("no sensor attached to any interface in this network namespace");
                std::process::exit(3);
            }
            for (iface, mode, id) in attached {
                println!("sensor attached to {iface} ({mode} mode, program id {id})");
            }
            Ok(())
        }
        Command::Run {
            ifaces,
            capture,
            xdp_mode,
            force,
            poll_ms,
            flow_entries,
            host_entries,
            coarse_time,
            config,
            model,
            listen,
            token,
            db,
            flow,
        } => {
            let config = match &config {
                Some(p) => Config::load(p)?,
                None => Config::default(),
            };
            let model = model.as_deref().map(Model::load).transpose()?;
            let token = api_token(&db, token)?;
            let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
            stop_on_signals(std::sync::Arc::clone(&stop))?;
            let opts = crate::agent::AgentOptions {
                ifaces,
                capture,
                mode: xdp_mode,
                force,
                kernel: KernelConfig {
                    flows: flow_entries,
                    hosts: host_entries,
                    coarse_time,
                },
                poll: std::time::Duration::from_millis(poll_ms.max(10)),
                flow: flow.config(),
                config,
                model,
                db: db.path(),
                data_dir: db.data_dir.clone(),
                listen,
                token,
            };
            crate::agent::run(opts, stop)?;
            Ok(())
        }
        Command::Train {
            pcaps,
            model,
            contamination,
            trees,
            sample_size,
            seed,
            config,
            flow,
        } => {
            if !(0.0..=0.5).contains(&contamination) {
                anyhow::bail!("--contamination must be within 0 and 0.5, not {contamination}");
            }
            let config = match &config {
                Some(p) => Config::load(p)?,
                None => Config::default(),
            };
            let params = ForestParams {
                trees: trees.max(1),
                sample_size: sample_size.max(2),
                seed,
            };
            train(&pcaps, &model, contamination, params, config, &flow)
        }
        Command::Replay {
            pcaps,
            flows_jsonl,
            alerts_jsonl,
            config,
            no_detect,
            model,
            db,
            flow,
        } => {
            let model = model.as_deref().map(Model::load).transpose()?;
            let config = match &config {
                Some(p) => Config::load(p)?,
                None => Config::default(),
            };
            let open = |p: &Option<PathBuf>| match p {
                Some(p) => JsonlSink::jsonl(p),
                None => Ok(JsonlSink::None),
            };
            let mut flows_out = open(&flows_jsonl)?;
            let mut alerts_out = open(&alerts_jsonl)?;
            let mut store = db
                .path()
                .map(|p| Store::open(&p, config.store))
                .transpose()?;
            let webhook = crate::webhook::Webhook::start(&config.webhook);
            let s = replay(
                &pcaps,
                ReplayOptions {
                    flow: flow.config(),
                    rules: (!no_detect).then_some(config.rules),
                    model,
                    collect_features: false,
                    flows_out: &mut flows_out,
                    alerts_out: &mut alerts_out,
                    store: store.as_mut(),
                    webhook: webhook.as_ref(),
                },
            )?;
            eprintln!(
                "replay: {} file(s), {} packets ({} bytes), {} flows, {:.0} packets/s in {:.3} s; \
                 {} non-IP, {} unparsable, {} dropped by the flow cap",
                s.files,
                s.read.packets,
                s.read.bytes,
                s.flows,
                s.packets_per_second(),
                s.elapsed.as_secs_f64(),
                s.read.non_ip,
                s.read.parse_errors,
                s.table.dropped_packets_by_cap,
            );
            if !no_detect {
                let by_kind: Vec<String> = s
                    .alerts
                    .iter()
                    .map(|(k, n)| format!("{n} {}", k.as_str()))
                    .collect();
                let total: u64 = s.alerts.values().sum();
                eprintln!(
                    "replay: {total} alert(s){}{}",
                    if by_kind.is_empty() { "" } else { ": " },
                    by_kind.join(", ")
                );
            }
            if let Some(st) = &store {
                eprintln!("replay: results stored in {}", st.path().display());
            }
            for (file, reason) in &s.truncated {
                eprintln!(
                    "replay: warning: {} ends mid-record ({reason}); its earlier packets were used",
                    file.display()
                );
            }
            Ok(())
        }
    }
}

/// SIGINT/SIGTERM set `stop` (the agent finishes cleanly); a second one exits at once.
fn stop_on_signals(stop: std::sync::Arc<std::sync::atomic::AtomicBool>) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            rt.block_on(async move {
                shutdown_signal().await;
                eprintln!("run: stopping (again to exit at once)");
                stop.store(true, std::sync::atomic::Ordering::Relaxed);
                shutdown_signal().await;
                std::process::exit(130);
            });
        })?;
    Ok(())
}

/// `--token`, or the data directory's token (created, and printed once, on first start).
fn api_token(db: &DbArgs, token: Option<String>) -> anyhow::Result<String> {
    Ok(match token {
        Some(t) if t.len() >= 16 => t,
        Some(_) => anyhow::bail!("--token must be at least 16 characters"),
        None => {
            let (t, created) = crate::api::load_or_create_token(&db.data_dir).map_err(|e| {
                anyhow::anyhow!(
                    "{}: cannot create the API token: {e}",
                    db.data_dir.display()
                )
            })?;
            if created {
                eprintln!(
                    "new API token (stored in {}/api-token, shown once): {t}",
                    db.data_dir.display()
                );
            }
            t
        }
    })
}

fn serve(db: &DbArgs, listen: std::net::SocketAddr, token: Option<String>) -> anyhow::Result<()> {
    let path = db
        .path()
        .ok_or_else(|| anyhow::anyhow!("serve needs a database (drop --no-db)"))?;
    let token = api_token(db, token)?;
    let state = std::sync::Arc::new(crate::api::ApiState {
        db: path,
        data_dir: db.data_dir.clone(),
        token,
        started: std::time::Instant::now(),
        capture: std::sync::RwLock::new("idle (sensor serve reads the database)".into()),
        live: None,
    });
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let listener = crate::api::bind(listen)
            .await
            .map_err(|e| anyhow::anyhow!("cannot listen on {listen}: {e}"))?;
        eprintln!(
            "serve: dashboard and API on http://{}",
            listener.local_addr()?
        );
        crate::api::serve(listener, state, shutdown_signal()).await?;
        eprintln!("serve: stopped");
        Ok(())
    })
}

/// Completes on the first SIGINT or SIGTERM (systemd stops services with SIGTERM).
async fn shutdown_signal() {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(s) => s,
        Err(_) => {
            let _ignored = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}

fn train(
    pcaps: &[PathBuf],
    model: &std::path::Path,
    contamination: f64,
    params: ForestParams,
    config: Config,
    flow: &FlowArgs,
) -> anyhow::Result<()> {
    let s = replay(
        pcaps,
        ReplayOptions {
            flow: flow.config(),
            rules: Some(config.rules),
            model: None,
            collect_features: true,
            flows_out: &mut JsonlSink::None,
            alerts_out: &mut JsonlSink::None,
            store: None,
            webhook: None,
        },
    )?;
    let sources = pcaps.iter().map(|p| p.display().to_string()).collect();
    let m = Model::train(&s.features, params, contamination, sources)?;
    m.save(model)?;
    eprintln!(
        "train: {} flows from {} packets; {} trees of sub-sample {}; contamination {} -> threshold {:.4}; wrote {}",
        s.features.len(),
        s.read.packets,
        params.trees,
        m.forest.psi,
        m.contamination,
        m.threshold,
        model.display()
    );
    Ok(())
}

/// Exit status for an error: 2 when the input was bad (unreadable or unsupported capture,
/// invalid config file).
pub fn exit_code(e: &anyhow::Error) -> u8 {
    if e.downcast_ref::<ConfigError>().is_some() || e.downcast_ref::<ModelError>().is_some() {
        return 2;
    }
    match e.downcast_ref::<ReplayError>() {
        Some(ReplayError::BadInput(_)) => 2,
        _ => 1,
    }
}
