//! Real attacks with Debian's tools, only between the lab's namespaces.

use std::{
    net::{IpAddr, Ipv4Addr},
    process::{Child, Command},
    time::Duration,
};

use anyhow::{Context as _, Result, bail};

use super::{ATTACKER, BOTS, HOST_IF, WEB, in_ns, spawn_logged, v6};

/// The attacks the lab can launch, each with the alert kind the sensor must raise.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Kind {
    /// nmap TCP SYN scan of 1,000 ports.
    SynScan,
    /// nmap TCP connect() scan of 1,000 ports.
    ConnectScan,
    /// nmap UDP scan of 200 ports.
    UdpScan,
    /// nmap FIN scan (-sF) of 1,000 ports: lone FINs, closed ports answer RST.
    FinScan,
    /// nmap Xmas scan (-sX): FIN+PSH+URG probes.
    XmasScan,
    /// nmap NULL scan (-sN): probes without any flag.
    NullScan,
    /// nmap ACK scan (-sA): lone ACKs, every port answers RST.
    AckScan,
    /// nmap SYN scan of 1,000 ports over IPv6.
    Ipv6Scan,
    /// nmap ping sweep (-sn) of the server network.
    PingSweep,
    /// hping3 SYN flood to port 80 from one source.
    SynFlood,
    /// The same at full speed (`hping3 --flood`: hundreds of thousands of new flows a second).
    /// Benchmarks only: not in [`Kind::ALL`].
    FullSynFlood,
    /// hping3 UDP flood to a closed port.
    UdpFlood,
    /// hping3 ICMP echo flood.
    IcmpFlood,
    /// SYN flood from 25 addresses on 5 bot namespaces at once.
    Ddos,
    /// hping3 SYN flood from random spoofed sources (fills the flow map when it is small).
    SpoofedFlood,
    /// hydra guessing passwords against the web host's OpenSSH server.
    BruteForce,
}

impl Kind {
    pub const ALL: [Self; 15] = [
        Self::SynScan,
        Self::ConnectScan,
        Self::UdpScan,
        Self::FinScan,
        Self::XmasScan,
        Self::NullScan,
        Self::AckScan,
        Self::Ipv6Scan,
        Self::PingSweep,
        Self::SynFlood,
        Self::UdpFlood,
        Self::IcmpFlood,
        Self::Ddos,
        Self::SpoofedFlood,
        Self::BruteForce,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Self::SynScan => "syn-scan",
            Self::ConnectScan => "connect-scan",
            Self::UdpScan => "udp-scan",
            Self::FinScan => "fin-scan",
            Self::XmasScan => "xmas-scan",
            Self::NullScan => "null-scan",
            Self::AckScan => "ack-scan",
            Self::Ipv6Scan => "ipv6-scan",
            Self::PingSweep => "ping-sweep",
            Self::SynFlood => "syn-flood",
            Self::FullSynFlood => "full-syn-flood",
            Self::UdpFlood => "udp-flood",
            Self::IcmpFlood => "icmp-flood",
            Self::Ddos => "ddos",
            Self::SpoofedFlood => "spoofed-flood",
            Self::BruteForce => "brute-force",
        }
    }

    /// The alert kind (as the API names it) the sensor must raise.
    pub fn alert(self) -> &'static str {
        match self {
            Self::SynScan
            | Self::ConnectScan
            | Self::UdpScan
            | Self::FinScan
            | Self::XmasScan
            | Self::NullScan
            | Self::AckScan
            | Self::Ipv6Scan => "port_scan",
            Self::PingSweep => "host_sweep",
            Self::SynFlood | Self::FullSynFlood => "syn_flood",
            Self::UdpFlood => "udp_flood",
            Self::IcmpFlood => "icmp_flood",
            Self::Ddos | Self::SpoofedFlood => "ddos",
            Self::BruteForce => "brute_force",
        }
    }

    /// Whether the alert names the attacker (many-source attacks have none).
    pub fn names_attacker(self) -> bool {
        !matches!(self, Self::Ddos | Self::SpoofedFlood)
    }

    /// Whether the attack ends by itself (scans) or runs until stopped (floods).
    pub fn ends_by_itself(self) -> bool {
        self.alert() == "port_scan" || self == Self::PingSweep
    }

    /// Attacker and victim addresses the alert must name: the target's, or their IPv6 twins.
    pub fn endpoints(self, t: Target) -> (IpAddr, IpAddr) {
        if self == Self::Ipv6Scan {
            (IpAddr::V6(v6(t.src)), IpAddr::V6(v6(t.victim)))
        } else {
            (IpAddr::V4(t.src), IpAddr::V4(t.victim))
        }
    }
}

/// Who attacks whom. `src` is an address of the attacker namespace (its own or an alias);
/// the victim is an address of the web host (for a sweep, its network is swept).
#[derive(Clone, Copy, Debug)]
pub struct Target {
    pub src: Ipv4Addr,
    pub victim: Ipv4Addr,
}

impl Default for Target {
    fn default() -> Self {
        Self {
            src: ATTACKER.addr,
            victim: WEB.addr,
        }
    }
}

/// A launched attack: its processes, stopped on `stop` or drop.
pub struct Running {
    pub commands: Vec<String>,
    children: Vec<Child>,
}

impl Running {
    /// Processes started elsewhere, stopped the same way.
    pub fn from_children(children: Vec<Child>) -> Self {
        Self {
            commands: Vec::new(),
            children,
        }
    }

    /// Whether every process has exited (scans end by themselves).
    pub fn finished(&mut self) -> bool {
        self.children
            .iter_mut()
            .all(|c| c.try_wait().ok().flatten().is_some())
    }

    /// Waits for a self-ending attack, at most `limit`, then stops it.
    pub fn wait(mut self, limit: Duration) {
        let end = std::time::Instant::now() + limit;
        while !self.finished() && std::time::Instant::now() < end {
            std::thread::sleep(Duration::from_millis(50));
        }
        self.stop();
    }

    pub fn stop(&mut self) {
        for c in &mut self.children {
            if c.try_wait().ok().flatten().is_none() {
                // SIGINT first: hping3 and nmap exit cleanly on it.
                // SAFETY: kill on the pid of a child we own.
                unsafe { libc::kill(c.id() as i32, libc::SIGINT) };
            }
        }
        let end = std::time::Instant::now() + Duration::from_secs(2);
        while !self.finished() && std::time::Instant::now() < end {
            std::thread::sleep(Duration::from_millis(20));
        }
        for c in &mut self.children {
            let _ignored = c.kill();
            let _ignored = c.wait();
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.stop();
    }
}

fn cmd(ns: &str, program: &str, args: &[String]) -> (Command, String) {
    let mut c = in_ns(ns, program);
    c.args(args);
    (c, format!("[{ns}] {program} {}", args.join(" ")))
}

fn strings(a: &[&str]) -> Vec<String> {
    a.iter().map(|s| (*s).to_owned()).collect()
}

/// Launches `kind` against `target`; `log` collects the tools' output.
pub fn launch(kind: Kind, target: Target, log: &std::path::Path) -> Result<Running> {
    let src = target.src.to_string();
    let victim = target.victim.to_string();
    // nmap from an alias needs the source and interface; hping3 spoofs with -a.
    let nmap = |retries: &str, extra: &[&str]| {
        let mut a = strings(&[
            "-n",
            "-Pn",
            "-T4",
            "--max-retries",
            retries,
            "-S",
            &src,
            "-e",
            HOST_IF,
        ]);
        a.extend(strings(extra));
        a
    };
    let hping = |extra: &[&str]| {
        let mut a = strings(&["-q", "-a", &src]);
        a.extend(strings(extra));
        a.push(victim.clone());
        a
    };
    let mut jobs: Vec<(Command, String)> = match kind {
        Kind::SynScan => vec![cmd(
            ATTACKER.ns,
            "nmap",
            &nmap("1", &["-sS", "-p", "1-1000", &victim]),
        )],
        Kind::FinScan | Kind::XmasScan | Kind::NullScan | Kind::AckScan => {
            let flag = match kind {
                Kind::FinScan => "-sF",
                Kind::XmasScan => "-sX",
                Kind::NullScan => "-sN",
                _ => "-sA",
            };
            vec![cmd(
                ATTACKER.ns,
                "nmap",
                &nmap("1", &[flag, "-p", "1-1000", &victim]),
            )]
        }
        Kind::Ipv6Scan => {
            let (s6, v6) = kind.endpoints(target);
            vec![cmd(
                ATTACKER.ns,
                "nmap",
                &strings(&[
                    "-6",
                    "-n",
                    "-Pn",
                    "-T4",
                    "--max-retries",
                    "1",
                    "-S",
                    &s6.to_string(),
                    "-e",
                    HOST_IF,
                    "-sS",
                    "-p",
                    "1-1000",
                    &v6.to_string(),
                ]),
            )]
        }
        Kind::ConnectScan => vec![cmd(
            ATTACKER.ns,
            "nmap",
            &nmap("1", &["-sT", "-p", "1-1000", &victim]),
        )],
        // Closed UDP ports answer with rate-limited ICMP: no retries, a minimum rate.
        Kind::UdpScan => vec![cmd(
            ATTACKER.ns,
            "nmap",
            &nmap("0", &["-sU", "--min-rate", "500", "-p", "1-200", &victim]),
        )],
        Kind::PingSweep => {
            let o = target.victim.octets();
            let net = format!("{}.{}.{}.0/24", o[0], o[1], o[2]);
            vec![cmd(ATTACKER.ns, "nmap", &{
                let mut a = strings(&["-n", "-sn", "-T4", "-S", &src, "-e", HOST_IF]);
                a.push(net);
                a
            })]
        }
        Kind::SynFlood => vec![cmd(
            ATTACKER.ns,
            "hping3",
            &hping(&["-S", "-p", "80", "-i", "u200"]),
        )],
        Kind::FullSynFlood => vec![cmd(
            ATTACKER.ns,
            "hping3",
            &hping(&["-S", "-p", "80", "--flood"]),
        )],
        Kind::UdpFlood => vec![cmd(
            ATTACKER.ns,
            "hping3",
            &hping(&["--udp", "-p", "9999", "-d", "64", "-i", "u200"]),
        )],
        Kind::IcmpFlood => vec![cmd(
            ATTACKER.ns,
            "hping3",
            &hping(&["--icmp", "-d", "64", "-i", "u200"]),
        )],
        Kind::Ddos => BOTS
            .iter()
            .flat_map(|b| b.bot_addrs().map(move |a| (b.ns, a)))
            .map(|(ns, a)| {
                cmd(
                    ns,
                    "hping3",
                    &strings(&[
                        "-q",
                        "-S",
                        "-p",
                        "80",
                        "-i",
                        "u2000",
                        "-a",
                        &a.to_string(),
                        &victim,
                    ]),
                )
            })
            .collect(),
        Kind::SpoofedFlood => vec![cmd(
            ATTACKER.ns,
            "hping3",
            &strings(&[
                "-q",
                "-S",
                "-p",
                "80",
                "--rand-source",
                "-i",
                "u50",
                &victim,
            ]),
        )],
        Kind::BruteForce => vec![hydra(target, log)?],
    };
    let mut running = Running {
        commands: Vec::new(),
        children: Vec::new(),
    };
    for (c, text) in jobs.drain(..) {
        let child = spawn_logged(c, log).with_context(|| format!("launching {}", kind.name()))?;
        running.children.push(child);
        running.commands.push(text);
    }
    if running.children.is_empty() {
        bail!("no process for {}", kind.name());
    }
    Ok(running)
}

/// hydra against the web host's sshd (`traffic::start` runs it): 400 made-up passwords for
/// one user, 8 connections at a time. hydra cannot pick its source address, so a host route
/// in the attacker's namespace makes the kernel pick `target.src` toward the victim.
fn hydra(target: Target, log: &std::path::Path) -> Result<(Command, String)> {
    hydra_from(ATTACKER.ns, target.src, target.victim, 400, 8, log)
}

/// hydra in namespace `ns` guessing `guesses` passwords for `admin` over ssh at `victim` with
/// `tasks` parallel tasks, its packets leaving from `src` (a host route to the victim with that
/// source: hydra cannot bind one itself).
pub fn hydra_from(
    ns: &str,
    src: Ipv4Addr,
    victim: Ipv4Addr,
    guesses: usize,
    tasks: u32,
    log: &std::path::Path,
) -> Result<(Command, String)> {
    let dir = log
        .parent()
        .unwrap_or(std::path::Path::new("."))
        .join(format!("hydra-{src}"));
    std::fs::create_dir_all(&dir).context("hydra's directory")?;
    let words = dir.join("words.txt");
    let mut rng = 0x2545_f491_4f6c_dd1du64;
    let list: String = (0..guesses)
        .map(|_| {
            (0..8)
                .map(|_| {
                    rng ^= rng << 13;
                    rng ^= rng >> 7;
                    rng ^= rng << 17;
                    char::from(b'a' + (rng % 26) as u8)
                })
                .chain(std::iter::once('\n'))
                .collect::<String>()
        })
        .collect();
    std::fs::write(&words, list).context("writing the hydra word list")?;
    let victim = victim.to_string();
    let via = in_ns(ns, "ip")
        .args(["-o", "route", "get", &victim])
        .output()
        .context("ip route get")?;
    let route = String::from_utf8_lossy(&via.stdout).into_owned();
    let field = |name: &str| {
        let mut w = route.split_whitespace();
        w.by_ref().find(|x| *x == name);
        w.next().map(str::to_owned)
    };
    let mut add = in_ns(ns, "ip");
    add.args(["route", "replace", &format!("{victim}/32")]);
    if let Some(gw) = field("via") {
        add.args(["via", &gw]);
    }
    add.args(["dev", HOST_IF, "src", &src.to_string()]);
    let st = add.status().context("ip route replace")?;
    if !st.success() {
        bail!("cannot route {victim} from {src} ({st})");
    }
    let args = vec![
        "-l".to_owned(),
        "admin".to_owned(),
        "-P".to_owned(),
        words.display().to_string(),
        "-t".to_owned(),
        tasks.to_string(),
        "-w".to_owned(),
        "3".to_owned(),
        "-I".to_owned(),
        format!("ssh://{victim}"),
    ];
    let (mut c, text) = cmd(ns, "hydra", &args);
    // hydra writes its restore file where it runs.
    c.current_dir(dir);
    Ok((c, text))
}
