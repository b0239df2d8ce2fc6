//! The lab's upstream router: FRR's bgpd in `slab-up`, peered with gobgpd on the gateway, both
//! from `deploy/bgp/` as they are (the addresses there are the lab's). The sensor in the lab
//! drives gobgpd; what the upstream holds is read with `vtysh`.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, Result};

use super::{GW, in_ns, ip, spawn_logged};

pub const UP: &str = "slab-up";
/// gobgpd's gRPC API on the gateway's loopback.
pub const API: &str = "127.0.0.1:50051";
const BGPD: &str = "/usr/lib/frr/bgpd";

/// Whether gobgpd and FRR are installed (`cargo xtask setup`).
pub fn available() -> bool {
    ["/usr/bin/gobgpd", "/usr/bin/gobgp", BGPD, "/usr/bin/vtysh"]
        .iter()
        .all(|p| Path::new(p).exists())
}

fn deploy(file: &str) -> PathBuf {
    crate::workspace_root().join("deploy/bgp").join(file)
}

/// The vtysh socket directory of the upstream's bgpd.
fn vty(dir: &Path) -> PathBuf {
    dir.join("frr")
}

/// Starts the upstream router and the gateway's speaker; `dir` holds their logs and sockets.
pub fn start(dir: &Path) -> Result<()> {
    ip(&["netns", "add", UP])?;
    ip(&["-n", UP, "link", "set", "lo", "up"])?;
    ip(&[
        "-n", GW, "link", "add", "gw-bgp", "type", "veth", "peer", "name", "up0", "netns", UP,
    ])?;
    ip(&["-n", GW, "addr", "add", "10.99.0.2/24", "dev", "gw-bgp"])?;
    ip(&["-n", GW, "link", "set", "gw-bgp", "up"])?;
    ip(&["-n", UP, "addr", "add", "10.99.0.1/24", "dev", "up0"])?;
    ip(&["-n", UP, "link", "set", "up0", "up"])?;
    let vty = vty(dir);
    std::fs::create_dir_all(&vty)?;
    let path = |p: &Path| p.to_str().map(str::to_owned).context("path is not UTF-8");
    let out = in_ns(UP, BGPD)
        .args(["-Z", "-S", "-n", "-d", "-u", "root", "-g", "root", "-f"])
        .arg(path(&deploy("frr-upstream.conf"))?)
        .arg("-i")
        .arg(path(&dir.join("bgpd.pid"))?)
        .arg("--vty_socket")
        .arg(path(&vty)?)
        .output()
        .context("starting FRR's bgpd")?;
    anyhow::ensure!(
        out.status.success(),
        "FRR's bgpd: {}",
        String::from_utf8_lossy(&out.stderr).trim()
    );
    let mut gobgpd = in_ns(GW, "gobgpd");
    gobgpd
        .arg("-f")
        .arg(deploy("gobgpd.toml"))
        .args(["--api-hosts", API]);
    spawn_logged(gobgpd, &dir.join("gobgpd.log"))?;
    Ok(())
}

/// A `show` command on the upstream router.
pub fn show(dir: &Path, cmd: &str) -> String {
    Command::new("ip")
        .args(["netns", "exec", UP, "vtysh", "--vty_socket"])
        .arg(vty(dir))
        .args(["-c", cmd])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default()
}

/// The sensor's config in the lab: the LAN side is home; floods into the web host's addresses
/// (hostgroup `web`) are announced upstream as FlowSpec rules, and blackholed from 20,000
/// packets/s; the file server (hostgroup `files`) is never announced.
/// `max` caps the announcements in flight (the benchmark's many floods must not reach it);
/// `rtbh` sets the web group's blackhole level (0: never).
pub fn sensor_config(bgp: bool, max: usize, rtbh: u64) -> String {
    format!(
        r#"[networks]
home = ["10.77.1.0/24", "fd77:0:0:1::/64"]

[[networks.hostgroups]]
name = "web"
prefixes = ["10.77.1.10/32", "10.77.1.100/30", "10.77.1.104/29", "10.77.1.112/28", "10.77.1.128/26", "10.77.1.192/27"]

[networks.hostgroups.bgp]
rtbh_pps = {rtbh}

[[networks.hostgroups]]
name = "files"
prefixes = ["10.77.1.20/32"]
[networks.hostgroups.bgp]
announce = false

[bgp]
enabled = {bgp}
api = "{API}"
ttl_s = 60
max_announcements = {max}
"#
    )
}

/// Whether FastNetMon (Debian's `fastnetmon`, the peer) is installed.
pub fn have_fastnetmon() -> bool {
    Path::new("/usr/sbin/fastnetmon").exists()
}

/// Starts FastNetMon on the gateway beside the sensor, configured as an operator would for
/// the same job: the LAN is its network, 1,000 packets/s into a host is an attack (the
/// sensor's `flood_pps`/`ddos_pps`), AF_PACKET on the WAN side (where attacks come in), RTBH
/// through the gateway's gobgpd (its community edition's only BGP action). Averaging over
/// `average_s` seconds (its default is 5; 1 is the fastest it allows).
pub fn start_fastnetmon(dir: &Path, average_s: u64) -> Result<()> {
    let d = dir.join("fastnetmon");
    std::fs::create_dir_all(&d)?;
    std::fs::write(d.join("networks_list"), "10.77.1.0/24\n")?;
    std::fs::write(d.join("networks_whitelist"), "")?;
    let conf = format!(
        "logging_level = info
logging_local_syslog_logging = off
logging_remote_syslog_logging = off
disable_usage_report = on
enable_ban = on
enable_ban_ipv6 = off
process_incoming_traffic = on
process_outgoing_traffic = on
networks_list_path = {d}/networks_list
white_list_path = {d}/networks_whitelist
ban_time = 60
unban_only_if_attack_finished = on
ban_for_pps = on
ban_for_bandwidth = off
ban_for_flows = off
threshold_pps = 1000
threshold_mbps = 1000
threshold_flows = 3500
mirror_afpacket = on
interfaces = {wan}
average_calculation_time = {average_s}
speed_calculation_delay = 1
gobgp = on
gobgp_next_hop = 192.0.2.1
gobgp_announce_host = on
gobgp_announce_whole_subnet = off
gobgp_community_host = 65535:666
pid_path = {d}/fastnetmon.pid
",
        d = d.display(),
        wan = super::GW_IFACES[0],
    );
    let path = d.join("fastnetmon.conf");
    std::fs::write(&path, conf)?;
    let mut c = in_ns(GW, "fastnetmon");
    c.arg("--configuration_file")
        .arg(&path)
        .arg("--log_file")
        .arg(d.join("fastnetmon.log"))
        .arg("--disable_pid_logic");
    spawn_logged(c, &d.join("fastnetmon.out"))?;
    Ok(())
}
