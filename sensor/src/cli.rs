//! Command line of the `sensor` binary.

use clap::{Parser, Subcommand};

use crate::kernel::{KernelConfig, SensorProgram};

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
    }
}
