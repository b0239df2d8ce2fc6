//! The built-in lab: network namespaces joined by a gateway the sensor watches.
//!
//! ```text
//!  slab-c1 slab-c2 slab-att slab-bot1..5          slab-web  slab-files
//!     \      |       |      /                         \       /
//!      [ br0 in slab-wan ] --up0--gw-wan[ slab-gw ]gw-lan--up0-- [ br0 in slab-lan ]
//!           10.77.0.0/24        (sensor attaches here)            10.77.1.0/24
//! ```
//!
//! Every interface lives in a namespace made here; nothing touches the host's own interfaces
//! and the gateway has no default route, so no packet can leave the lab. All namespaces share
//! the `slab-` prefix: `down` removes every one of them (after killing what runs inside), so a
//! lab left by a crashed run is cleaned up by the next `up`.

pub mod attack;
pub mod evalset;
pub mod record;
pub mod traffic;
pub mod upstream;

use std::{
    fs::{self, File},
    net::{Ipv4Addr, Ipv6Addr},
    os::{fd::AsRawFd as _, unix::process::CommandExt as _},
    path::Path,
    process::{Child, Command, Stdio},
    thread,
    time::Duration,
};

use anyhow::{Context as _, Result, bail};

pub const PREFIX: &str = "slab-";
pub const GW: &str = "slab-gw";
const WAN: &str = "slab-wan";
const LAN: &str = "slab-lan";
/// The gateway interfaces the sensor attaches to (XDP sees ingress, so both sides).
pub const GW_IFACES: [&str; 2] = ["gw-wan", "gw-lan"];
/// Host interface name inside each host namespace.
pub const HOST_IF: &str = "lab0";

pub const CLIENT1: Host = Host::wan("slab-c1", "c1", [10, 77, 0, 11]);
pub const CLIENT2: Host = Host::wan("slab-c2", "c2", [10, 77, 0, 12]);
pub const ATTACKER: Host = Host::wan("slab-att", "att", [10, 77, 0, 66]);
pub const BOTS: [Host; 5] = [
    Host::wan("slab-bot1", "bot1", [10, 77, 0, 100]),
    Host::wan("slab-bot2", "bot2", [10, 77, 0, 105]),
    Host::wan("slab-bot3", "bot3", [10, 77, 0, 110]),
    Host::wan("slab-bot4", "bot4", [10, 77, 0, 115]),
    Host::wan("slab-bot5", "bot5", [10, 77, 0, 120]),
];
/// Addresses per bot: 5 bots x 5 = 25 sources, above the DDoS rule's 20.
pub const BOT_ADDRS: u8 = 5;
pub const WEB: Host = Host::lan("slab-web", "web", [10, 77, 1, 10]);
pub const FILES: Host = Host::lan("slab-files", "files", [10, 77, 1, 20]);

/// Extra attacker addresses (10.77.0.130..) and victim addresses on the web host
/// (10.77.1.100..): repeated runs of one attack use fresh pairs, so each run opens its own
/// alert instead of extending the previous one.
pub const ALIASES: u8 = 100;
pub fn attacker_alias(i: u8) -> Ipv4Addr {
    Ipv4Addr::new(10, 77, 0, 130 + i % ALIASES)
}
pub fn victim_alias(i: u8) -> Ipv4Addr {
    Ipv4Addr::new(10, 77, 1, 100 + i % ALIASES)
}

#[derive(Clone, Copy, Debug)]
pub struct Host {
    pub ns: &'static str,
    /// Name of its bridge port (interface names are at most 15 bytes).
    port: &'static str,
    pub addr: Ipv4Addr,
    wan: bool,
}

impl Host {
    const fn wan(ns: &'static str, port: &'static str, a: [u8; 4]) -> Self {
        Self {
            ns,
            port,
            addr: Ipv4Addr::new(a[0], a[1], a[2], a[3]),
            wan: true,
        }
    }
    const fn lan(ns: &'static str, port: &'static str, a: [u8; 4]) -> Self {
        Self {
            wan: false,
            ..Self::wan(ns, port, a)
        }
    }
    fn gateway(&self) -> &'static str {
        if self.wan { "10.77.0.1" } else { "10.77.1.1" }
    }
    fn gateway6(&self) -> &'static str {
        if self.wan { "fd77::1" } else { "fd77:0:0:1::1" }
    }
    /// Addresses of a bot (its own and the next ones).
    pub fn bot_addrs(&self) -> impl Iterator<Item = Ipv4Addr> {
        let o = self.addr.octets();
        (0..BOT_ADDRS).map(move |i| Ipv4Addr::new(o[0], o[1], o[2], o[3] + i))
    }
}

/// The IPv6 twin of a lab address: 10.77.N.H is fd77:0:0:N::H (each side is one /64), so
/// every host, bot and alias speaks both families.
pub fn v6(a: Ipv4Addr) -> Ipv6Addr {
    let o = a.octets();
    Ipv6Addr::new(0xfd77, 0, 0, u16::from(o[2]), 0, 0, 0, u16::from(o[3]))
}

/// Adds `a` and its IPv6 twin to `dev` in `ns` (without duplicate address detection, so the
/// address works at once).
fn add_addrs(ns: &str, dev: &str, a: Ipv4Addr) -> Result<()> {
    ip(&["-n", ns, "addr", "add", &format!("{a}/24"), "dev", dev])?;
    ip(&[
        "-n",
        ns,
        "-6",
        "addr",
        "add",
        &format!("{}/64", v6(a)),
        "dev",
        dev,
        "nodad",
    ])
}

pub fn hosts() -> Vec<Host> {
    let mut h = vec![CLIENT1, CLIENT2, ATTACKER];
    h.extend(BOTS);
    h.extend([WEB, FILES]);
    h
}

/// Runs `ip ARGS`; the error carries ip's own message.
pub fn ip(args: &[&str]) -> Result<()> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .context("cannot run `ip` (iproute2; cargo xtask setup installs it)")?;
    if !out.status.success() {
        bail!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// A command run inside namespace `ns`.
pub fn in_ns(ns: &str, program: &str) -> Command {
    let mut c = Command::new("ip");
    c.args(["netns", "exec", ns, program]);
    c
}

/// Starts `cmd` in the background with output to `log`, in its own process group so a Ctrl-C
/// at the terminal does not reach it (teardown stops it, in order).
pub fn spawn_logged(mut cmd: Command, log: &Path) -> Result<Child> {
    let out = File::options()
        .create(true)
        .append(true)
        .open(log)
        .with_context(|| format!("opening {}", log.display()))?;
    let err = out.try_clone()?;
    cmd.stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .process_group(0);
    cmd.spawn()
        .with_context(|| format!("starting {cmd:?} (log {})", log.display()))
}

/// Namespaces of a lab that exist now (also one left by a crashed run).
pub fn existing() -> Vec<String> {
    let Ok(out) = Command::new("ip").args(["netns", "list"]).output() else {
        return Vec::new();
    };
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|n| n.starts_with(PREFIX))
        .map(str::to_owned)
        .collect()
}

fn pids_in(ns: &str) -> Vec<i32> {
    Command::new("ip")
        .args(["netns", "pids", ns])
        .output()
        .map(|o| {
            String::from_utf8_lossy(&o.stdout)
                .split_whitespace()
                .filter_map(|p| p.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

fn signal_all(pids: &[i32], sig: i32) {
    for &p in pids {
        // SAFETY: kill has no memory preconditions; a pid that already exited gives ESRCH.
        unsafe { libc::kill(p, sig) };
    }
}

/// Stops every process in the namespaces in `names` (TERM, then KILL after `grace`).
pub fn stop_processes(names: &[&str], grace: Duration) {
    let pids: Vec<i32> = names.iter().flat_map(|n| pids_in(n)).collect();
    if pids.is_empty() {
        return;
    }
    signal_all(&pids, libc::SIGTERM);
    let deadline = std::time::Instant::now() + grace;
    while std::time::Instant::now() < deadline {
        if names.iter().all(|n| pids_in(n).is_empty()) {
            return;
        }
        thread::sleep(Duration::from_millis(50));
    }
    let left: Vec<i32> = names.iter().flat_map(|n| pids_in(n)).collect();
    signal_all(&left, libc::SIGKILL);
    thread::sleep(Duration::from_millis(100));
}

/// Removes the lab: stops everything running inside (the sensor first, so it detaches and
/// flushes), then deletes the namespaces, which destroys their veths and bridges.
pub fn down() -> Result<()> {
    let names = existing();
    if names.is_empty() {
        return Ok(());
    }
    stop_processes(&[GW], Duration::from_secs(8));
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    stop_processes(&refs, Duration::from_secs(3));
    for n in &names {
        ip(&["netns", "del", n])?;
    }
    Ok(())
}

/// Creates the lab's namespaces and links (no traffic yet). A leftover lab is removed first.
pub fn up() -> Result<()> {
    let leftover = existing();
    if !leftover.is_empty() {
        eprintln!(
            "lab: removing a lab left by an earlier run ({} namespaces)",
            leftover.len()
        );
        down().context("removing the leftover lab")?;
    }
    let result = build();
    if result.is_err() {
        let _ignored = down();
    }
    result
}

fn build() -> Result<()> {
    let mut all = vec![GW, WAN, LAN];
    let hosts = hosts();
    all.extend(hosts.iter().map(|h| h.ns));
    for ns in &all {
        ip(&["netns", "add", ns])?;
        ip(&["-n", ns, "link", "set", "lo", "up"])?;
    }
    for (side, gw_if, gw_addr) in [
        (WAN, GW_IFACES[0], "10.77.0.1"),
        (LAN, GW_IFACES[1], "10.77.1.1"),
    ] {
        ip(&["-n", side, "link", "add", "br0", "type", "bridge"])?;
        ip(&["-n", side, "link", "set", "br0", "up"])?;
        ip(&[
            "-n", GW, "link", "add", gw_if, "type", "veth", "peer", "name", "up0", "netns", side,
        ])?;
        ip(&["-n", side, "link", "set", "up0", "master", "br0", "up"])?;
        add_addrs(GW, gw_if, gw_addr.parse()?)?;
        ip(&["-n", GW, "link", "set", gw_if, "up"])?;
    }
    for knob in ["net.ipv4.ip_forward=1", "net.ipv6.conf.all.forwarding=1"] {
        let out = in_ns(GW, "sysctl").args(["-qw", knob]).output()?;
        if !out.status.success() {
            bail!(
                "enabling forwarding in {GW} ({knob}): {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
    for h in &hosts {
        let side = if h.wan { WAN } else { LAN };
        ip(&[
            "-n", side, "link", "add", h.port, "type", "veth", "peer", "name", HOST_IF, "netns",
            h.ns,
        ])?;
        ip(&["-n", side, "link", "set", h.port, "master", "br0", "up"])?;
        add_addrs(h.ns, HOST_IF, h.addr)?;
        ip(&["-n", h.ns, "link", "set", HOST_IF, "up"])?;
        ip(&["-n", h.ns, "route", "add", "default", "via", h.gateway()])?;
        ip(&[
            "-n",
            h.ns,
            "-6",
            "route",
            "add",
            "default",
            "via",
            h.gateway6(),
        ])?;
    }
    for bot in BOTS {
        for a in bot.bot_addrs().skip(1) {
            add_addrs(bot.ns, HOST_IF, a)?;
        }
    }
    for i in 0..ALIASES {
        add_addrs(ATTACKER.ns, HOST_IF, attacker_alias(i))?;
        add_addrs(WEB.ns, HOST_IF, victim_alias(i))?;
    }
    // Wait until the gateway answers from both sides (bridges, ARP and routes in place).
    for (h, gw) in [
        (CLIENT1, CLIENT1.gateway()),
        (WEB, WEB.gateway()),
        (CLIENT1, CLIENT1.gateway6()),
        (WEB, WEB.gateway6()),
    ] {
        let ok = (0..50).any(|_| {
            let up = in_ns(h.ns, "ping")
                .args(["-c1", "-W1", "-q", gw])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success());
            if !up {
                thread::sleep(Duration::from_millis(100));
            }
            up
        });
        if !ok {
            bail!("lab: {} cannot reach its gateway {gw}", h.ns);
        }
    }
    Ok(())
}

/// Runs `f` on a thread that has entered namespace `ns` (sockets it opens live there).
pub fn with_ns<T: Send>(ns: &str, f: impl FnOnce() -> T + Send) -> Result<T> {
    let path = format!("/run/netns/{ns}");
    let file = File::open(&path).with_context(|| format!("opening {path}"))?;
    thread::scope(|s| {
        s.spawn(move || {
            // SAFETY: setns on a valid namespace fd; it changes only this thread's namespace.
            let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
            if rc != 0 {
                bail!("setns into {ns}: {}", std::io::Error::last_os_error());
            }
            Ok(f())
        })
        .join()
        .map_err(|_| anyhow::anyhow!("thread in {ns} panicked"))?
    })
}

/// One HTTP request to `port` on 127.0.0.1 inside `ns`: (status, body), or `None` when the
/// connection fails. `token` is sent as a bearer token, `body` as JSON.
pub fn http(
    ns: &str,
    port: u16,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<&str>,
) -> Option<(u16, String)> {
    with_ns(ns, || {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(120)))
            .build()
            .into();
        let url = format!("http://127.0.0.1:{port}{path}");
        let auth = token.map(|t| format!("Bearer {t}"));
        let mut resp = if method == "POST" {
            let mut r = agent.post(&url).header("Content-Type", "application/json");
            if let Some(a) = &auth {
                r = r.header("Authorization", a);
            }
            r.send(body.unwrap_or("{}")).ok()?
        } else if method == "DELETE" {
            let mut r = agent.delete(&url);
            if let Some(a) = &auth {
                r = r.header("Authorization", a);
            }
            r.call().ok()?
        } else {
            let mut r = agent.get(&url);
            if let Some(a) = &auth {
                r = r.header("Authorization", a);
            }
            r.call().ok()?
        };
        let code = resp.status().as_u16();
        Some((code, resp.body_mut().read_to_string().ok()?))
    })
    .ok()
    .flatten()
}

/// GET `path` from the sensor's API in `ns`; the body when the answer is 200.
pub fn http_get(ns: &str, port: u16, path: &str) -> Option<String> {
    http(ns, port, "GET", path, None, None).and_then(|(c, b)| (c == 200).then_some(b))
}

/// Where the lab writes its logs and data (under the target directory).
pub fn work_dir(sub: &str) -> Result<std::path::PathBuf> {
    let d = crate::target_dir().join("lab").join(sub);
    fs::create_dir_all(&d).with_context(|| format!("creating {}", d.display()))?;
    Ok(d)
}
