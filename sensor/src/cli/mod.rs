//! Command line of the `sensor` binary: one file per subcommand; this one parses and
//! dispatches, and holds what several subcommands share.

mod check;
mod dry_run;
mod replay;
mod run;
mod serve;
mod status;
mod train;

use std::path::{Path, PathBuf};

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::{
    config::{Config, ConfigError},
    detect::ml::model::ModelError,
    drive::replay::ReplayError,
    kernel::KernelConfig,
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
        /// Slots per CPU of the kernel's flow cache (a power of two; 0 turns it off).
        #[arg(long, env = "SENSOR_CACHE_SLOTS", default_value_t = KernelConfig::default().cache_slots)]
        cache_slots: u32,
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
        /// TOML config file (see deploy/sensor.toml).
        #[arg(long, env = "SENSOR_CONFIG")]
        config: Option<PathBuf>,
        /// Flows only: no rules, no model (for throughput measurements).
        #[arg(long)]
        no_detect: bool,
        /// Anomaly model from `sensor train`: finished flows scoring above its threshold
        /// raise `ml_anomaly` alerts.
        #[arg(long, env = "SENSOR_MODEL")]
        model: Option<PathBuf>,
        /// Online model from `sensor train --kind kitnet`: every flow event is judged as it
        /// comes (experimental second model; see docs/DETECTION.md).
        #[arg(long, env = "SENSOR_ONLINE_MODEL")]
        online_model: Option<PathBuf>,
        /// Write no pcap file of each alert's packets (default: DATA_DIR/evidence, with a
        /// database; see [evidence] in the config).
        #[arg(long, env = "SENSOR_NO_EVIDENCE")]
        no_evidence: bool,
        /// Append Suricata-style EVE JSON events (alerts and flows) to this file, rotated by
        /// size (see [eve] in the config).
        #[arg(long, env = "SENSOR_EVE_JSON", value_name = "PATH")]
        eve_json: Option<PathBuf>,
        /// Also write what the rules saw into this directory, for `sensor dry-run` (see
        /// [history] in the config).
        #[arg(long, value_name = "DIR")]
        history: Option<PathBuf>,
        #[command(flatten)]
        db: DbArgs,
        #[command(flatten)]
        flow: FlowArgs,
    },
    /// Try changed rules on recorded traffic: the alerts they would raise and would no longer
    /// raise, beside the rules in force (the dashboard's dry run, from the command line).
    DryRun {
        /// The changed rules: a TOML file with `[rules]` and its `[[rules.custom]]` (keys left
        /// out take their defaults).
        rules: PathBuf,
        /// The config in force: its rules are the ones compared against, its networks apply.
        #[arg(long, env = "SENSOR_CONFIG")]
        config: Option<PathBuf>,
        /// The rules history (default: DATA_DIR/history, or [history] dir).
        #[arg(long)]
        history: Option<PathBuf>,
        /// Instead of a history: capture files, replayed with the rules in force to record
        /// theirs first (repeat for several, read in order as one stream).
        #[arg(long = "pcap", conflicts_with_all = ["history", "from", "to"])]
        pcaps: Vec<PathBuf>,
        #[arg(long, env = "SENSOR_DATA_DIR", default_value = "./data")]
        data_dir: PathBuf,
        /// Start of the range: RFC 3339 or Unix seconds (default: the oldest history kept).
        #[arg(long)]
        from: Option<String>,
        /// End of the range (default: the newest).
        #[arg(long)]
        to: Option<String>,
        /// The whole result as JSON on standard output.
        #[arg(long)]
        json: bool,
    },
    /// Run the live sensor: capture, detection, storage and the API in one process. Without
    /// --iface it starts idle, and interfaces are attached from the API or the dashboard.
    Run {
        /// Interface to watch from the start (repeat for several).
        #[arg(long = "iface")]
        ifaces: Vec<String>,
        /// Packet source: the XDP program, or libpcap where XDP cannot attach.
        #[arg(long, value_enum, default_value = "xdp")]
        capture: CaptureKind,
        /// XDP attach mode: auto tries driver mode, then generic (skb) mode.
        #[arg(long, value_enum, default_value = "auto")]
        xdp_mode: XdpMode,
        /// Attach even when another XDP program is attached (it is replaced).
        #[arg(long)]
        force: bool,
        /// Milliseconds between map polls.
        #[arg(long, env = "SENSOR_POLL_MS", default_value_t = 100)]
        poll_ms: u64,
        #[arg(long, env = "SENSOR_FLOW_ENTRIES", default_value_t = KernelConfig::default().flows)]
        flow_entries: u32,
        #[arg(long, env = "SENSOR_HOST_ENTRIES", default_value_t = KernelConfig::default().hosts)]
        host_entries: u32,
        #[arg(long, env = "SENSOR_COARSE_TIME")]
        coarse_time: bool,
        #[arg(long, env = "SENSOR_CACHE_SLOTS", default_value_t = KernelConfig::default().cache_slots)]
        cache_slots: u32,
        #[arg(long, env = "SENSOR_CONFIG")]
        config: Option<PathBuf>,
        /// Keep the rules in this file instead of the config file: when it exists its
        /// `[rules]` replaces the config's, and rule changes from the dashboard or the API are
        /// written here (a config file the service cannot write, under /etc, stays as it is).
        #[arg(long, env = "SENSOR_RULES_FILE")]
        rules_file: Option<PathBuf>,
        #[arg(long, env = "SENSOR_MODEL")]
        model: Option<PathBuf>,
        /// Online model from `sensor train --kind kitnet` (experimental second model).
        #[arg(long, env = "SENSOR_ONLINE_MODEL")]
        online_model: Option<PathBuf>,
        #[arg(long, env = "SENSOR_LISTEN", default_value = "127.0.0.1:8080")]
        listen: std::net::SocketAddr,
        #[arg(long, env = "SENSOR_TOKEN")]
        token: Option<String>,
        /// Act at XDP on alerts of these kinds (comma-separated: port_scan, host_sweep,
        /// syn_flood, udp_flood, icmp_flood, ddos, ml_anomaly): block the source, or
        /// rate-limit the flood toward its victim when there is no single source. Default:
        /// [mitigation] kinds in the config (none: off).
        #[arg(
            long,
            env = "SENSOR_MITIGATE",
            value_delimiter = ',',
            value_name = "KINDS"
        )]
        mitigate: Vec<String>,
        /// Seconds a mitigation entry lives (default: [mitigation] ttl_s, 600).
        #[arg(long, env = "SENSOR_BLOCK_TTL", value_name = "SECONDS")]
        block_ttl: Option<u64>,
        /// Copy no packets of alerts into pcap files (default: DATA_DIR/evidence, with a
        /// database; see [evidence] in the config).
        #[arg(long, env = "SENSOR_NO_EVIDENCE")]
        no_evidence: bool,
        /// Append Suricata-style EVE JSON events (alerts and flows) to this file, rotated by
        /// size (see [eve] in the config).
        #[arg(long, env = "SENSOR_EVE_JSON", value_name = "PATH")]
        eve_json: Option<PathBuf>,
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
        #[arg(long, env = "SENSOR_CONFIG")]
        config: Option<PathBuf>,
    },
    /// Train the anomaly model on baseline (attack-free) captures.
    Train {
        /// Baseline capture files.
        #[arg(required = true)]
        pcaps: Vec<PathBuf>,
        /// Where to write the model.
        #[arg(long)]
        model: PathBuf,
        /// Which model: the Isolation Forest over finished flows, or the online KitNET
        /// autoencoder ensemble over flow-event statistics (load it with --online-model).
        #[arg(long, value_enum, default_value = "iforest")]
        kind: ModelKind,
        /// Passes of the online model's autoencoders over the baseline (--kind kitnet).
        #[arg(long, default_value_t = 1)]
        epochs: usize,
        /// Expected share of anomalies in the baseline; sets the score threshold (default:
        /// [model] in the config, 0.1).
        #[arg(long)]
        contamination: Option<f64>,
        /// Pick the threshold so the baseline raises at most N model alerts per hour
        /// (default: [model] max_alerts_per_hour, 1; a baseline under 10 minutes falls back
        /// to the contamination quantile and says so; `--contamination` alone: the quantile).
        #[arg(long, value_name = "N")]
        max_alerts_per_hour: Option<f64>,
        /// Trees of the forest (default: [model], 100).
        #[arg(long)]
        trees: Option<usize>,
        /// Flows each tree is grown on (default: [model], 256).
        #[arg(long)]
        sample_size: Option<usize>,
        #[arg(long)]
        seed: Option<u64>,
        #[arg(long, env = "SENSOR_CONFIG")]
        config: Option<PathBuf>,
        #[command(flatten)]
        flow: FlowArgs,
    },
}

/// What `sensor train` fits.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum ModelKind {
    /// Isolation Forest over finished flows (`--model`).
    Iforest,
    /// KitNET autoencoders over incremental per-host, channel and socket statistics
    /// (`--online-model`).
    Kitnet,
}

/// Where packets come from in `sensor run`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum CaptureKind {
    /// The XDP program and its maps (the fast path).
    Xdp,
    /// libpcap on the interface, for where XDP cannot attach (slower, per packet in userspace).
    Pcap,
}

/// How XDP is attached in `sensor run`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum XdpMode {
    /// Driver (native) mode, falling back to generic (skb) mode with a log line.
    Auto,
    Driver,
    Skb,
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

/// Flow-table settings shared by every command that builds flows; each overrides `[flow]` of
/// the config file when given.
#[derive(Debug, Args)]
pub struct FlowArgs {
    /// Seconds without a packet after which a flow is finished (default 120).
    #[arg(long, env = "SENSOR_IDLE_TIMEOUT")]
    pub idle_timeout: Option<u64>,
    /// Seconds after which a long flow is reported and restarted (default 300).
    #[arg(long, env = "SENSOR_ACTIVE_TIMEOUT")]
    pub active_timeout: Option<u64>,
    /// Seconds a closed TCP connection (FIN both ways, or RST) waits for late packets
    /// (default 10).
    #[arg(long, env = "SENSOR_CLOSE_TIMEOUT")]
    pub close_timeout: Option<u64>,
    /// Most flows held at once; packets of new flows beyond it are counted and dropped
    /// (default 1,000,000).
    #[arg(long, env = "SENSOR_MAX_FLOWS")]
    pub max_flows: Option<usize>,
}

impl FlowArgs {
    /// Applies the flags that were given onto `config`.
    pub fn apply(&self, config: &mut Config) {
        let f = &mut config.flow;
        if let Some(v) = self.idle_timeout {
            f.idle_timeout_s = v.max(1);
        }
        if let Some(v) = self.active_timeout {
            f.active_timeout_s = v.max(1);
        }
        if let Some(v) = self.close_timeout {
            f.close_timeout_s = v;
        }
        if let Some(v) = self.max_flows {
            f.max_flows = v.max(1);
        }
    }
}

/// The config file (or the defaults) with the flow flags applied.
fn load_config(path: Option<&Path>, flow: Option<&FlowArgs>) -> Result<Config, ConfigError> {
    let mut c = Config::load_or_default(path)?;
    if let Some(f) = flow {
        f.apply(&mut c);
    }
    Ok(c)
}

/// The rules of `--rules-file`, when it exists, in place of the config's (checked as the
/// config is, against its networks).
fn with_rules_file(mut c: Config, path: Option<&Path>) -> anyhow::Result<Config> {
    let Some(path) = path else { return Ok(c) };
    match std::fs::read_to_string(path) {
        Ok(text) => {
            c.rules = crate::ruleset::parse(&text, &c)
                .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
            Ok(c)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(c),
        Err(e) => Err(anyhow::anyhow!("cannot read {}: {e}", path.display())),
    }
}

/// Runs one parsed command line; `main` only maps the error to an exit status.
pub fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Check {
            flow_entries,
            host_entries,
            coarse_time,
            cache_slots,
        } => check::run(KernelConfig {
            flows: flow_entries,
            hosts: host_entries,
            coarse_time,
            cache_slots,
            ..KernelConfig::default()
        }),
        Command::Serve {
            db,
            listen,
            token,
            config,
        } => serve::run(&db, listen, token, load_config(config.as_deref(), None)?),
        Command::Status => status::run(),
        Command::Run {
            ifaces,
            capture,
            xdp_mode,
            force,
            poll_ms,
            flow_entries,
            host_entries,
            coarse_time,
            cache_slots,
            config,
            rules_file,
            model,
            online_model,
            listen,
            token,
            mitigate,
            block_ttl,
            no_evidence,
            eve_json,
            db,
            flow,
        } => run::run(run::RunArgs {
            ifaces,
            capture,
            xdp_mode,
            force,
            poll_ms,
            kernel: KernelConfig {
                flows: flow_entries,
                hosts: host_entries,
                coarse_time,
                cache_slots,
                ..KernelConfig::default()
            },
            config: with_rules_file(
                with_evidence(
                    with_mitigation(
                        load_config(config.as_deref(), Some(&flow))?,
                        &mitigate,
                        block_ttl,
                    )?,
                    no_evidence,
                    eve_json,
                ),
                rules_file.as_deref(),
            )?,
            config_path: rules_file.or(config),
            model,
            online_model,
            listen,
            token,
            db,
        }),
        Command::Train {
            pcaps,
            model,
            kind,
            epochs,
            contamination,
            max_alerts_per_hour,
            trees,
            sample_size,
            seed,
            config,
            flow,
        } => {
            let mut config = load_config(config.as_deref(), Some(&flow))?;
            let m = &mut config.model;
            if let Some(c) = contamination {
                if !(0.0..=0.5).contains(&c) {
                    anyhow::bail!("--contamination must be within 0 and 0.5, not {c}");
                }
                m.contamination = c;
                // Asked for a quantile and no budget: the quantile it is.
                if max_alerts_per_hour.is_none() {
                    m.threshold = crate::config::ThresholdChoice::Contamination;
                }
            }
            if let Some(n) = max_alerts_per_hour {
                if !(n.is_finite() && n >= 0.0) {
                    anyhow::bail!("--max-alerts-per-hour must be a number >= 0, not {n}");
                }
                m.max_alerts_per_hour = Some(n);
                m.threshold = crate::config::ThresholdChoice::Budget;
            }
            m.trees = trees.unwrap_or(m.trees);
            m.sample_size = sample_size.unwrap_or(m.sample_size);
            m.seed = seed.unwrap_or(m.seed);
            match kind {
                ModelKind::Iforest => train::run(&pcaps, &model, &config),
                ModelKind::Kitnet => train::run_online(&pcaps, &model, &config, epochs),
            }
        }
        Command::Replay {
            pcaps,
            flows_jsonl,
            alerts_jsonl,
            config,
            no_detect,
            model,
            online_model,
            no_evidence,
            eve_json,
            history,
            db,
            flow,
        } => replay::run(replay::ReplayArgs {
            pcaps,
            flows_jsonl,
            alerts_jsonl,
            config: with_evidence(
                load_config(config.as_deref(), Some(&flow))?,
                no_evidence,
                eve_json,
            ),
            no_detect,
            model,
            online_model,
            history,
            db,
        }),
        Command::DryRun {
            rules,
            config,
            history,
            pcaps,
            data_dir,
            from,
            to,
            json,
        } => {
            let config = load_config(config.as_deref(), None)?;
            let history = history.unwrap_or_else(|| config.history.dir_in(&data_dir));
            dry_run::run(dry_run::DryRunArgs {
                rules,
                config,
                history,
                pcaps,
                label: None,
                from,
                to,
                json,
            })
        }
    }
}

/// SIGINT/SIGTERM set `stop` (the agent finishes cleanly); a second one exits at once.
pub(super) fn stop_on_signals(
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> anyhow::Result<()> {
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
pub(super) fn api_token(db: &DbArgs, token: Option<String>) -> anyhow::Result<String> {
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

/// Completes on the first SIGINT or SIGTERM (systemd stops services with SIGTERM).
pub(super) async fn shutdown_signal() {
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

/// Exit status for an error: 2 when the input was bad (unreadable or unsupported capture,
/// invalid config or model file).
pub fn exit_code(e: &anyhow::Error) -> u8 {
    if e.downcast_ref::<ConfigError>().is_some() || e.downcast_ref::<ModelError>().is_some() {
        return 2;
    }
    match e.downcast_ref::<ReplayError>() {
        Some(ReplayError::BadInput(_)) => 2,
        _ => 1,
    }
}

/// `--no-evidence` over the config's `[evidence] enabled`, `--eve-json` over `[eve] path`.
fn with_evidence(mut config: Config, off: bool, eve_json: Option<PathBuf>) -> Config {
    if off {
        config.evidence.enabled = false;
    }
    if eve_json.is_some() {
        config.eve.path = eve_json;
    }
    config
}

/// `--mitigate` and `--block-ttl` over the config's `[mitigation]`.
fn with_mitigation(
    mut config: Config,
    kinds: &[String],
    ttl: Option<u64>,
) -> anyhow::Result<Config> {
    if !kinds.is_empty() {
        config.mitigation.kinds = kinds
            .iter()
            .filter(|k| !k.trim().is_empty())
            .map(|k| {
                serde_json::from_value(serde_json::Value::String(k.trim().to_owned())).map_err(
                    |_| {
                        anyhow::anyhow!(
                            "--mitigate: unknown alert kind {k:?} (kinds: port_scan, host_sweep, \
                             syn_flood, udp_flood, icmp_flood, ddos, ml_anomaly)"
                        )
                    },
                )
            })
            .collect::<anyhow::Result<_>>()?;
    }
    if let Some(t) = ttl {
        config.mitigation.ttl_s = t;
    }
    config.mitigation.check().map_err(|e| match (e.key, ttl) {
        // The flag set it: name the flag.
        ("mitigation.ttl_s", Some(_)) => anyhow::anyhow!("--block-ttl {}", e.problem),
        _ => e.into(),
    })?;
    Ok(config)
}
