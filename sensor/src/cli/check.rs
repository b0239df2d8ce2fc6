//! `sensor check`: loads and verifies the XDP program with the chosen map sizes; attaches
//! nothing. Tells an operator whether this kernel and these privileges can run the sensor.

use crate::kernel::{KernelConfig, SensorProgram};

pub(super) fn run(sizes: KernelConfig) -> anyhow::Result<()> {
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
