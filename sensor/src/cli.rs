//! Command line of the `sensor` binary.

use std::{path::PathBuf, time::Duration};

use clap::{Args, Parser, Subcommand};

use crate::{
    config::{Config, ConfigError},
    flow::FlowConfig,
    kernel::{KernelConfig, SensorProgram},
    replay::{JsonlSink, ReplayError, ReplayOptions, replay},
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
        #[command(flatten)]
        flow: FlowArgs,
    },
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
    /// Most flows held at once; packets of new flows beyond it are counted and dropped.
    #[arg(long, env = "SENSOR_MAX_FLOWS", default_value_t = 1_000_000)]
    pub max_flows: usize,
}

impl FlowArgs {
    pub fn config(&self) -> FlowConfig {
        FlowConfig {
            idle_timeout: Duration::from_secs(self.idle_timeout),
            active_timeout: Duration::from_secs(self.active_timeout),
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
        Command::Replay {
            pcaps,
            flows_jsonl,
            alerts_jsonl,
            config,
            no_detect,
            flow,
        } => {
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
            let s = replay(
                &pcaps,
                ReplayOptions {
                    flow: flow.config(),
                    rules: (!no_detect).then_some(config.rules),
                    flows_out: &mut flows_out,
                    alerts_out: &mut alerts_out,
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

/// Exit status for an error: 2 when the input was bad (unreadable or unsupported capture,
/// invalid config file).
pub fn exit_code(e: &anyhow::Error) -> u8 {
    if e.downcast_ref::<ConfigError>().is_some() {
        return 2;
    }
    match e.downcast_ref::<ReplayError>() {
        Some(ReplayError::BadInput(_)) => 2,
        _ => 1,
    }
}
