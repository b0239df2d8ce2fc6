//! Benign traffic: a web server and DNS-like UDP server on `web`, clients on `c1`/`c2`, a
//! rate-limited iperf3 bulk transfer to `files`, and a once-a-second ping.
//!
//! Servers and clients are small loops in this binary (`xtask lab-role ...`) started inside
//! their namespace with `ip netns exec`, so `ip netns pids` finds them at teardown. Rates are
//! what a small office sends: every host stays well under the rules' 1,000 packets/s floors,
//! so benign traffic alone must raise no rule alert.

use std::{
    io::{Read as _, Write as _},
    net::{SocketAddr, TcpListener, TcpStream, UdpSocket},
    process::Command,
    thread,
    time::Duration,
};

use anyhow::{Context as _, Result, bail};

use super::{CLIENT1, CLIENT2, FILES, WEB, in_ns, spawn_logged};

/// Starts every benign role in the background; logs go to `log_dir`.
pub fn start(log_dir: &std::path::Path) -> Result<()> {
    let exe = std::env::current_exe().context("path of the xtask binary")?;
    let exe = exe.to_str().context("xtask path is not UTF-8")?;
    let role = |ns: &str, args: &[&str]| {
        let mut c = in_ns(ns, exe);
        c.arg("lab-role").args(args);
        c
    };
    let web = WEB.addr.to_string();
    let files = FILES.addr.to_string();
    let sshd = sshd_config(log_dir)?;
    let jobs: Vec<(&str, Command)> = vec![
        // A real OpenSSH server for the password-guessing attack (hydra); nobody can log in.
        ("web-sshd", {
            let mut c = in_ns(WEB.ns, "/usr/sbin/sshd");
            c.args(["-D", "-e", "-f"]).arg(&sshd);
            c
        }),
        ("web-http", role(WEB.ns, &["http-server", "0.0.0.0:80"])),
        ("web-dns", role(WEB.ns, &["udp-server", "0.0.0.0:53"])),
        ("files-iperf3", {
            let mut c = in_ns(FILES.ns, "iperf3");
            c.args(["-s", "-B", &files]);
            c
        }),
        (
            "c1-http",
            role(CLIENT1.ns, &["http-client", &format!("{web}:80"), "4"]),
        ),
        (
            "c2-http",
            role(CLIENT2.ns, &["http-client", &format!("{web}:80"), "2"]),
        ),
        (
            "c1-dns",
            role(CLIENT1.ns, &["udp-client", &format!("{web}:53"), "5"]),
        ),
        (
            "c2-dns",
            role(CLIENT2.ns, &["udp-client", &format!("{web}:53"), "3"]),
        ),
        ("c2-bulk", role(CLIENT2.ns, &["bulk-client", &files, "4M"])),
        ("c1-ping", {
            let mut c = in_ns(CLIENT1.ns, "ping");
            c.args(["-q", "-i", "1", &web]);
            c
        }),
    ];
    for (name, cmd) in jobs {
        spawn_logged(cmd, &log_dir.join(format!("{name}.log")))?;
    }
    Ok(())
}

/// The web host's sshd config and host key under `log_dir/sshd`: password logins on, for
/// an account that does not exist, so every guess fails.
pub(super) fn sshd_config(log_dir: &std::path::Path) -> Result<std::path::PathBuf> {
    let dir = log_dir.join("sshd");
    std::fs::create_dir_all(&dir)?;
    // sshd's privilege separation directory.
    std::fs::create_dir_all("/run/sshd")?;
    let key = dir.join("host_ed25519_key");
    if !key.exists() {
        let st = Command::new("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", "", "-f"])
            .arg(&key)
            .status()
            .context("ssh-keygen")?;
        if !st.success() {
            bail!("ssh-keygen failed ({st})");
        }
    }
    let cfg = dir.join("sshd_config");
    std::fs::write(
        &cfg,
        format!(
            "Port 22\nListenAddress 0.0.0.0\nHostKey {}\nPidFile {}\nPasswordAuthentication yes\n\
             KbdInteractiveAuthentication no\nUsePAM no\nPermitRootLogin no\n\
             MaxStartups 100:30:200\nLoginGraceTime 20\nStrictModes no\n",
            key.display(),
            dir.join("sshd.pid").display()
        ),
    )?;
    Ok(cfg)
}

/// Stops the benign roles (the lab stays up).
pub fn stop() {
    super::stop_processes(
        &[WEB.ns, FILES.ns, CLIENT1.ns, CLIENT2.ns],
        Duration::from_secs(2),
    );
}

/// Small deterministic generator (xorshift): sizes and pauses vary without a crate.
struct Rng(u64);
impl Rng {
    fn new() -> Self {
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        Self(0x9e37_79b9_7f4a_7c15 ^ u64::from(std::process::id()) ^ t)
    }
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    /// Uniform in [lo, hi).
    fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next() % (hi - lo).max(1)
    }
}

/// Sleeps about `1/per_sec` seconds, jittered by +-50% so requests do not march in step.
fn pace(rng: &mut Rng, per_sec: f64) {
    let mean_us = 1e6 / per_sec.max(0.01);
    let us = rng.range((mean_us * 0.5) as u64, (mean_us * 1.5) as u64);
    thread::sleep(Duration::from_micros(us));
}

/// Entry point of `xtask lab-role ROLE ARGS...` (runs inside a lab namespace).
pub fn role(args: &[String]) -> Result<()> {
    let arg = |i: usize| -> Result<&str> {
        args.get(i)
            .map(String::as_str)
            .with_context(|| format!("lab-role: missing argument {i}: {args:?}"))
    };
    match arg(0)? {
        "http-server" => http_server(arg(1)?.parse()?),
        "http-client" => http_client(arg(1)?.parse()?, arg(2)?.parse()?),
        "udp-server" => udp_server(arg(1)?.parse()?),
        "udp-client" => udp_client(arg(1)?.parse()?, arg(2)?.parse()?),
        "bulk-client" => bulk_client(arg(1)?, arg(2)?),
        other => bail!("lab-role: unknown role {other}"),
    }
}

/// HTTP/1.1 server: `GET /bytes/N` answers N bytes (default 4 KiB), one request per
/// connection.
fn http_server(addr: SocketAddr) -> Result<()> {
    let listener = TcpListener::bind(addr).with_context(|| format!("binding {addr}"))?;
    for conn in listener.incoming() {
        let Ok(mut s) = conn else { continue };
        thread::spawn(move || {
            let _ignored = serve_one(&mut s);
        });
    }
    Ok(())
}

fn serve_one(s: &mut TcpStream) -> std::io::Result<()> {
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    let mut req = Vec::with_capacity(512);
    let mut buf = [0u8; 1024];
    while !req.windows(4).any(|w| w == b"\r\n\r\n") && req.len() < 8192 {
        let n = s.read(&mut buf)?;
        if n == 0 {
            return Ok(());
        }
        req.extend_from_slice(&buf[..n]);
    }
    let text = String::from_utf8_lossy(&req);
    let size: usize = text
        .split_whitespace()
        .nth(1)
        .and_then(|p| p.strip_prefix("/bytes/"))
        .and_then(|n| n.parse().ok())
        .unwrap_or(4096)
        .min(4 << 20);
    write!(
        s,
        "HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nContent-Length: {size}\r\nConnection: close\r\n\r\n"
    )?;
    let chunk = [b'x'; 16384];
    let mut left = size;
    while left > 0 {
        let n = left.min(chunk.len());
        s.write_all(&chunk[..n])?;
        left -= n;
    }
    Ok(())
}

/// `per_sec` page loads a second, each a new connection fetching 500 B to 64 KiB.
fn http_client(to: SocketAddr, per_sec: f64) -> Result<()> {
    let mut rng = Rng::new();
    loop {
        let size = 500 * (1 << rng.range(0, 8));
        if let Ok(mut s) = TcpStream::connect_timeout(&to, Duration::from_secs(2)) {
            let _ignored = s.set_read_timeout(Some(Duration::from_secs(5)));
            let req = format!(
                "GET /bytes/{size} HTTP/1.1\r\nHost: {to}\r\nUser-Agent: lab\r\nConnection: close\r\n\r\n"
            );
            if s.write_all(req.as_bytes()).is_ok() {
                let mut sink = Vec::new();
                let _ignored = s.read_to_end(&mut sink);
            }
        }
        pace(&mut rng, per_sec);
    }
}

/// DNS-like responder: answers each datagram with the query plus ~80 bytes.
fn udp_server(addr: SocketAddr) -> Result<()> {
    let sock = UdpSocket::bind(addr).with_context(|| format!("binding {addr}"))?;
    let mut buf = [0u8; 1500];
    loop {
        let (n, from) = sock.recv_from(&mut buf)?;
        let mut reply = buf[..n.min(512)].to_vec();
        reply.extend_from_slice(&[0x2a; 80]);
        let _ignored = sock.send_to(&reply, from);
    }
}

/// `per_sec` queries a second, each from a new socket (a new source port, as resolvers do).
fn udp_client(to: SocketAddr, per_sec: f64) -> Result<()> {
    let mut rng = Rng::new();
    let mut buf = [0u8; 1500];
    loop {
        if let Ok(sock) = UdpSocket::bind("0.0.0.0:0") {
            let _ignored = sock.set_read_timeout(Some(Duration::from_secs(1)));
            let q = vec![0x11u8; rng.range(28, 64) as usize];
            if sock.send_to(&q, to).is_ok() {
                let _ignored = sock.recv_from(&mut buf);
            }
        }
        pace(&mut rng, per_sec);
    }
}

/// iperf3 at a fixed `rate`, restarted whenever it ends or fails (server not up yet).
fn bulk_client(server: &str, rate: &str) -> Result<()> {
    loop {
        let _ignored = Command::new("iperf3")
            .args([
                "-c",
                server,
                "-b",
                rate,
                "-t",
                "86400",
                "--connect-timeout",
                "2000",
            ])
            .stdout(std::process::Stdio::null())
            .status()
            .context("running iperf3 (cargo xtask setup installs it)")?;
        thread::sleep(Duration::from_secs(1));
    }
}
