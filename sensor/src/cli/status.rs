//! `sensor status`: where the sensor's XDP program is attached in this network namespace
//! (exit status 3 when nowhere).

use crate::kernel::attach::attached_interfaces;

pub(super) fn run() -> anyhow::Result<()> {
    let attached = attached_interfaces();
    if attached.is_empty() {
        println!("no sensor attached to any interface in this network namespace");
        std::process::exit(3);
    }
    for (iface, mode, id) in attached {
        println!("sensor attached to {iface} ({mode} mode, program id {id})");
    }
    Ok(())
}
