//! `cargo xtask lab record --eval --out DIR`: labelled captures for `cargo xtask eval`, each
//! made in the lab with real tools, one case per file, and `eval_truth.json` saying what each
//! is (attack family and the alert it must raise, or a benign family that must raise none).
//!
//! Attacks: nmap's stealth scans (FIN, Xmas, NULL, ACK) and an IPv6 SYN scan; DNS reflection
//! through 25 dnsmasq reflectors answering spoofed EDNS queries with a 2 KB TXT record (every
//! answer is an IP fragment pair); the same reflection low and slow (10 packets/s); SYN-ACK
//! reflection off 25 web servers, and the same low and slow (stretched to 14 minutes); a slow port
//! scan and a slow ping sweep (real nmap packets, timestamps stretched to 25 and 15 minutes:
//! nmap's own slow timings would take that long to record). Benign: a client fetching from 100
//! web servers, a client exchanging DNS with 100 servers at 1,500 queries/s, and a DNS server
//! answering 125 clients at 1,250 queries/s.
//!
//! Round three: hydra guessing passwords against a real OpenSSH server; a worm-like sweep of
//! 140 unrouted addresses over five ports (28 on each, stretched to 7 minutes); hping3's SYN
//! flood at an open web port while 25 clients keep fetching from it. Benign look-alikes: a user
//! whose ssh logins fail a dozen times in 10 minutes (stretched), an admin opening one ssh
//! session on each of 40 servers, and a monitor pinging 100 answering hosts every 2 s and
//! connecting to their ssh. Beaconing: a client fetching the same small page every 30 s with
//! 20% jitter (recorded at 0.5 s, stretched 60x), beside a scraper polling 5 targets and 5
//! hosts polling one server on the same timer (benign: fan-out and prevalence).
//!
//! Captured by tcpdump on the gateway's WAN side (both directions), without background traffic,
//! so each file holds its case alone.

use std::{
    fs,
    net::Ipv4Addr,
    path::{Path, PathBuf},
    process::Command,
    thread,
    time::Duration,
};

use anyhow::{Context as _, Result, bail};
use serde_json::{Value, json};

use super::{
    ALIASES, ATTACKER, BOTS, CLIENT1, FILES, GW, GW_IFACES, HOST_IF, WEB,
    attack::{self, Kind, Target},
    attacker_alias, in_ns,
    record::Capture,
    spawn_logged, victim_alias,
};

/// Bumped whenever a case changes, so `cargo xtask test` records the set again.
pub const VERSION: u32 = 6;

/// The truth file's name inside the set's directory.
pub const TRUTH: &str = "eval_truth.json";

/// One recorded case, as `eval_truth.json` lists it.
struct Case {
    file: String,
    family: &'static str,
    /// The alert kind the sensor must raise; `None`: benign, no attack alert allowed.
    expected: Option<&'static str>,
    attacker: Option<String>,
    victim: Option<String>,
    commands: Vec<String>,
    note: String,
}

impl Case {
    fn json(&self) -> Value {
        json!({
            "file": self.file,
            "family": self.family,
            "benign": self.expected.is_none(),
            "expected_alert": self.expected,
            "attacker": self.attacker,
            "victim": self.victim,
            "commands": self.commands,
            "note": self.note,
        })
    }
}

/// An EDNS0 query for `name` (type `qtype`), advertising a 4,096-byte UDP buffer so the
/// server answers large records without truncation, as amplification attacks ask.
fn dns_query(name: &str, qtype: u16) -> Vec<u8> {
    let mut q = vec![0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 1];
    for label in name.split('.') {
        q.push(label.len() as u8);
        q.extend(label.as_bytes());
    }
    q.push(0);
    q.extend(qtype.to_be_bytes());
    q.extend(1u16.to_be_bytes());
    // OPT pseudo-record: root name, type 41, class = UDP payload size, no flags, no data.
    q.push(0);
    q.extend(41u16.to_be_bytes());
    q.extend(4096u16.to_be_bytes());
    q.extend([0; 6]);
    q
}

/// dnsmasq answering on every address of `ns`: `lab` names resolve to the web host, and
/// `big.lab` is a ~2.2 KB TXT record (12 strings of 180 bytes).
fn dnsmasq(ns: &str, log: &Path) -> Result<()> {
    let strings: Vec<String> = (0..12)
        .map(|i| format!("\"{}\"", format!("r{i:02}").repeat(60)))
        .collect();
    let mut c = in_ns(ns, "dnsmasq");
    c.args([
        "--keep-in-foreground",
        "--conf-file=/dev/null",
        "--no-resolv",
        "--no-hosts",
        "--user=root",
        "--pid-file=",
        "--port=53",
        "--edns-packet-max=4096",
        &format!("--address=/lab/{}", WEB.addr),
        &format!("--txt-record=big.lab,{}", strings.join(",")),
        &format!("--log-facility={}", log.display()),
    ]);
    spawn_logged(c, log)?;
    Ok(())
}

/// Waits until `server` answers a DNS query sent from `ns`.
fn wait_dns(ns: &str, server: Ipv4Addr) -> Result<()> {
    let q = dns_query("www.lab", 1);
    let answered = super::with_ns(ns, move || {
        let s = std::net::UdpSocket::bind("0.0.0.0:0").ok()?;
        s.set_read_timeout(Some(Duration::from_millis(200))).ok()?;
        let mut buf = [0u8; 4096];
        (0..50).find_map(|_| {
            s.send_to(&q, (server, 53)).ok()?;
            s.recv_from(&mut buf).ok().map(|_| ())
        })
    })?;
    answered.with_context(|| format!("dnsmasq at {server} does not answer from {ns}"))
}

fn every_reflector() -> Vec<(&'static str, Ipv4Addr)> {
    BOTS.iter()
        .flat_map(|b| b.bot_addrs().map(move |a| (b.ns, a)))
        .collect()
}

/// Spoofed queries from the attacker (source: the victim) to every reflector, `interval` apart
/// from each, for `secs`. Returns the commands run.
fn reflect(interval: &str, secs: u64, query: &Path, log: &Path) -> Result<Vec<String>> {
    let victim = WEB.addr.to_string();
    let len = fs::metadata(query)?.len().to_string();
    let mut children = Vec::new();
    let mut commands = Vec::new();
    for (_, r) in every_reflector() {
        let args = [
            "-q",
            "--udp",
            "-a",
            &victim,
            "-p",
            "53",
            "-E",
            query.to_str().context("query path is not UTF-8")?,
            "-d",
            &len,
            "-i",
            interval,
            &r.to_string(),
        ];
        let mut c = in_ns(ATTACKER.ns, "hping3");
        c.args(args);
        commands.push(format!("[{}] hping3 {}", ATTACKER.ns, args.join(" ")));
        children.push(spawn_logged(c, log)?);
    }
    thread::sleep(Duration::from_secs(secs));
    stop(children);
    Ok(commands)
}

/// Starts every job at once and waits for all of them; returns their command lines.
fn run_all(jobs: impl Iterator<Item = (Command, String)>, log: &Path) -> Result<Vec<String>> {
    let mut children = Vec::new();
    let mut commands = Vec::new();
    for (c, text) in jobs {
        children.push(spawn_logged(c, log)?);
        commands.push(text);
    }
    for mut c in children {
        c.wait()?;
    }
    Ok(commands)
}

fn stop(children: Vec<std::process::Child>) {
    for mut c in children {
        // SAFETY: SIGINT to a child we own.
        unsafe { libc::kill(c.id() as i32, libc::SIGINT) };
        let _ignored = c.wait();
    }
}

/// Runs `c` to its end (at most `limit`), as a tool the case is made of.
fn run(mut c: Command, limit: Duration, log: &Path) -> Result<()> {
    let mut child = {
        let out = fs::File::options().create(true).append(true).open(log)?;
        c.stdout(out.try_clone()?).stderr(out);
        c.spawn().with_context(|| format!("starting {c:?}"))?
    };
    let end = std::time::Instant::now() + limit;
    while child.try_wait()?.is_none() {
        if std::time::Instant::now() > end {
            let _ignored = child.kill();
            let _ignored = child.wait();
            bail!("{c:?} did not end within {limit:?}");
        }
        thread::sleep(Duration::from_millis(50));
    }
    Ok(())
}

/// Rewrites a classic pcap file's timestamps so the capture lasts `secs`: every gap between
/// packets grows by the same factor, so bursts, order and reply latencies keep their shape.
pub fn stretch(src: &Path, dst: &Path, secs: f64) -> Result<()> {
    let mut b = fs::read(src).with_context(|| format!("reading {}", src.display()))?;
    if b.len() < 24 {
        bail!("{}: not a pcap file", src.display());
    }
    let magic = u32::from_le_bytes([b[0], b[1], b[2], b[3]]);
    let (le, nanos) = match magic {
        0xa1b2_c3d4 => (true, false),
        0xa1b2_3c4d => (true, true),
        0xd4c3_b2a1 => (false, false),
        0x4d3c_b2a1 => (false, true),
        _ => bail!("{}: not a classic pcap file", src.display()),
    };
    let rd = |b: &[u8], at: usize| {
        let w = [b[at], b[at + 1], b[at + 2], b[at + 3]];
        if le {
            u32::from_le_bytes(w)
        } else {
            u32::from_be_bytes(w)
        }
    };
    let unit = if nanos { 1e9 } else { 1e6 };
    let mut at = 24;
    let mut stamps = Vec::new();
    while at + 16 <= b.len() {
        let t = f64::from(rd(&b, at)) + f64::from(rd(&b, at + 4)) / unit;
        stamps.push((at, t));
        at += 16 + rd(&b, at + 8) as usize;
    }
    let (Some(&(_, first)), Some(&(_, last))) = (stamps.first(), stamps.last()) else {
        bail!("{}: no packets", src.display());
    };
    let k = secs / (last - first).max(1e-6);
    for (at, t) in stamps {
        let t2 = first + (t - first) * k;
        let s = t2.floor();
        let frac = (((t2 - s) * unit) as u32).min(unit as u32 - 1);
        for (off, v) in [(0, s as u32), (4, frac)] {
            let w = if le { v.to_le_bytes() } else { v.to_be_bytes() };
            b[at + off..at + off + 4].copy_from_slice(&w);
        }
    }
    fs::write(dst, b).with_context(|| format!("writing {}", dst.display()))
}

/// Records one case into `out/<file>` while `make` runs; `make` returns the commands it ran.
/// `only` keeps packets to or from that host alone.
fn capture(
    out: &Path,
    file: &str,
    log: &Path,
    only: Option<&str>,
    make: impl FnOnce() -> Result<Vec<String>>,
) -> Result<(PathBuf, Vec<String>)> {
    let path = out.join(file);
    let cap = match only {
        Some(h) => Capture::host(&path, log, h)?,
        None => Capture::start(&path, log)?,
    };
    let commands = make();
    // Late replies and retransmissions still land in the file.
    thread::sleep(Duration::from_millis(1500));
    cap.finish()?;
    eprintln!("lab record --eval: {file}");
    Ok((path, commands?))
}

/// Records nmap with `args` from the attacker (its packets only) into `out/NAME.pcap`,
/// stretched to last `secs`.
fn slow_nmap(
    out: &Path,
    name: &str,
    args: &[&str],
    att: &str,
    secs: f64,
    log: &Path,
) -> Result<()> {
    let raw_name = format!("{name}.raw.pcap");
    let (raw, _) = capture(out, &raw_name, log, Some(att), || {
        let mut c = in_ns(ATTACKER.ns, "nmap");
        c.args(args);
        run(c, Duration::from_secs(60), log)?;
        Ok(Vec::new())
    })?;
    stretch(&raw, &out.join(format!("{name}.pcap")), secs)?;
    fs::remove_file(&raw)?;
    Ok(())
}

/// Brings up a fresh lab (no background traffic), records every case into `out`, tears down.
pub fn record(out: &Path) -> Result<()> {
    fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let out = fs::canonicalize(out)?;
    let _ignored = fs::remove_file(out.join(TRUTH));
    let logs = super::work_dir("record-eval")?;
    let log = logs.join("tools.log");
    super::up()?;
    let result = cases(&out, &logs, &log);
    let down = super::down();
    let cases = result?;
    down?;
    let doc = json!({
        "generator": "cargo xtask lab record --eval",
        "version": VERSION,
        "capture_point": format!("{GW}:{}", GW_IFACES[0]),
        "cases": cases.iter().map(Case::json).collect::<Vec<_>>(),
    });
    let path = out.join(TRUTH);
    fs::write(&path, serde_json::to_string_pretty(&doc)? + "\n")
        .with_context(|| format!("writing {}", path.display()))?;
    eprintln!(
        "lab record --eval: {} cases in {}",
        cases.len(),
        out.display()
    );
    Ok(())
}

fn cases(out: &Path, logs: &Path, log: &Path) -> Result<Vec<Case>> {
    let mut all = Vec::new();
    let web = WEB.addr.to_string();

    // nmap's stealth scans and an IPv6 scan, as the e2e test launches them.
    for (kind, family) in [
        (Kind::FinScan, "port scan, stealth (FIN/Xmas/NULL/ACK)"),
        (Kind::XmasScan, "port scan, stealth (FIN/Xmas/NULL/ACK)"),
        (Kind::NullScan, "port scan, stealth (FIN/Xmas/NULL/ACK)"),
        (Kind::AckScan, "port scan, stealth (FIN/Xmas/NULL/ACK)"),
        (Kind::Ipv6Scan, "port scan, IPv6"),
    ] {
        let t = Target::default();
        let file = format!("{}.pcap", kind.name());
        let (_, commands) = capture(out, &file, log, None, || {
            let running = attack::launch(kind, t, log)?;
            let commands = running.commands.clone();
            running.wait(Duration::from_secs(60));
            Ok(commands)
        })?;
        let (src, dst) = kind.endpoints(t);
        all.push(Case {
            file,
            family,
            expected: Some(kind.alert()),
            attacker: Some(src.to_string()),
            victim: Some(dst.to_string()),
            commands,
            note: "1,000 ports of the web host, one retry".into(),
        });
    }

    // DNS reflection: 25 reflectors, the attacker spoofing the victim's address.
    for b in BOTS {
        dnsmasq(b.ns, &logs.join(format!("dnsmasq-{}.log", b.ns)))?;
    }
    // Every reflector answers before the attack starts (asked from a neighbour on the bridge).
    for (_, r) in every_reflector() {
        wait_dns(CLIENT1.ns, r)?;
    }
    let query = logs.join("edns-txt-query.bin");
    fs::write(&query, dns_query("big.lab", 16))?;
    let (_, commands) = capture(out, "dns-reflection.pcap", log, None, || {
        reflect("u10000", 5, &query, log)
    })?;
    all.push(Case {
        file: "dns-reflection.pcap".into(),
        family: "reflection/amplification (DNS, fragmented answers)",
        expected: Some("ddos"),
        attacker: None,
        victim: Some(web.clone()),
        commands,
        note: "25 reflectors x 100 spoofed EDNS TXT queries/s for 5 s; every 2.2 KB answer \
               arrives as two IP fragments, the second without ports"
            .into(),
    });
    let (_, commands) = capture(out, "dns-reflection-slow.pcap", log, None, || {
        reflect("5", 45, &query, log)
    })?;
    all.push(Case {
        file: "dns-reflection-slow.pcap".into(),
        family: "reflection, low and slow",
        expected: Some("ddos"),
        attacker: None,
        victim: Some(web.clone()),
        commands,
        note: "25 reflectors x one query per 5 s for 45 s: 10 packets/s at the victim".into(),
    });

    // TCP SYN-ACK reflection: web servers on the 25 bot addresses answer SYNs that carry the
    // victim's address; the victim gets SYN-ACKs it never asked for (and answers RSTs).
    let exe = std::env::current_exe().context("path of the xtask binary")?;
    let exe = exe.to_str().context("xtask path is not UTF-8")?.to_owned();
    for b in BOTS {
        let mut c = in_ns(b.ns, &exe);
        c.args(["lab-role", "http-server", "0.0.0.0:80"]);
        spawn_logged(c, &logs.join(format!("http-{}.log", b.ns)))?;
    }
    thread::sleep(Duration::from_millis(300));
    let (_, commands) = capture(out, "syn-ack-reflection.pcap", log, None, || {
        let mut children = Vec::new();
        let mut commands = Vec::new();
        for (_, r) in every_reflector() {
            let args = [
                "-q",
                "-S",
                "-a",
                &web,
                "-p",
                "80",
                "-i",
                "u2000",
                &r.to_string(),
            ];
            let mut c = in_ns(ATTACKER.ns, "hping3");
            c.args(args);
            commands.push(format!("[{}] hping3 {}", ATTACKER.ns, args.join(" ")));
            children.push(spawn_logged(c, log)?);
        }
        thread::sleep(Duration::from_secs(5));
        stop(children);
        Ok(commands)
    })?;
    all.push(Case {
        file: "syn-ack-reflection.pcap".into(),
        family: "reflection (TCP SYN-ACK)",
        expected: Some("ddos"),
        attacker: None,
        victim: Some(web.clone()),
        commands,
        note: "25 web servers x 500 spoofed SYNs/s for 5 s: SYN-ACKs (and their retransmissions) \
               to a victim that never connected"
            .into(),
    });

    // The same reflection low and slow: 2 spoofed SYNs a second to each reflector for 10 s
    // (500 SYN-ACKs at the victim), stretched to 14 minutes (about one packet a second).
    let raw = "syn-ack-reflection-slow.raw.pcap";
    let (path, commands) = capture(out, raw, log, None, || {
        let mut children = Vec::new();
        let mut commands = Vec::new();
        for (_, r) in every_reflector() {
            let args = [
                "-q",
                "-S",
                "-a",
                &web,
                "-p",
                "80",
                "-i",
                "u500000",
                "-c",
                "20",
                &r.to_string(),
            ];
            let mut c = in_ns(ATTACKER.ns, "hping3");
            c.args(args);
            commands.push(format!("[{}] hping3 {}", ATTACKER.ns, args.join(" ")));
            children.push(spawn_logged(c, log)?);
        }
        thread::sleep(Duration::from_secs(11));
        stop(children);
        Ok(commands)
    })?;
    stretch(&path, &out.join("syn-ack-reflection-slow.pcap"), 840.0)?;
    fs::remove_file(&path)?;
    all.push(Case {
        file: "syn-ack-reflection-slow.pcap".into(),
        family: "reflection (TCP SYN-ACK), low and slow",
        expected: Some("ddos"),
        attacker: None,
        victim: Some(web.clone()),
        commands,
        note: "25 web servers x 20 spoofed SYNs over 10 s, stretched to 14 minutes: SYN-ACKs \
               nobody asked for at about one a second"
            .into(),
    });

    // Slow scan and sweep: real nmap packets (only the scanner's, so the file spans the scan
    // alone), stretched in time.
    let att = ATTACKER.addr.to_string();
    let scan_args = [
        "-n",
        "-Pn",
        "-T4",
        "--max-retries",
        "0",
        "-S",
        &att,
        "-e",
        HOST_IF,
        "-sS",
        "--max-rate",
        "100",
        "-p",
        "1-250",
        &web,
    ];
    slow_nmap(out, "slow-port-scan", &scan_args, &att, 1500.0, log)?;
    all.push(Case {
        file: "slow-port-scan.pcap".into(),
        family: "slow scan (below the 60 s windows)",
        expected: Some("port_scan"),
        attacker: Some(att.clone()),
        victim: Some(web.clone()),
        commands: vec![format!("[{}] nmap {}", ATTACKER.ns, scan_args.join(" "))],
        note: "250 ports; timestamps stretched so the scan lasts 25 minutes (10 ports/min, \
               half the fast rule's 20 per minute)"
            .into(),
    });
    let lan = "10.77.1.0/24";
    // Echo requests alone, paced: stretched, they arrive evenly (nmap's default sweep sends
    // its first hundreds at once, which no stretch makes slow).
    let sweep_args = [
        "-n",
        "-sn",
        "-PE",
        "--max-rate",
        "50",
        "-S",
        &att,
        "-e",
        HOST_IF,
        lan,
    ];
    slow_nmap(out, "slow-ping-sweep", &sweep_args, &att, 900.0, log)?;
    all.push(Case {
        file: "slow-ping-sweep.pcap".into(),
        family: "slow sweep (below the 60 s windows)",
        expected: Some("host_sweep"),
        attacker: Some(att.clone()),
        victim: None,
        commands: vec![format!("[{}] nmap {}", ATTACKER.ns, sweep_args.join(" "))],
        note: "ICMP echo to 254 addresses at 50/s, about 100 answer; timestamps stretched \
               to 15 minutes (17 hosts/min, a third of the fast rule's 50)"
            .into(),
    });

    round_three(out, logs, log, &exe, &mut all)?;

    // Benign: one client, 100 web servers, every handshake completed.
    let mut http = in_ns(WEB.ns, &exe);
    http.args(["lab-role", "http-server", "0.0.0.0:80"]);
    spawn_logged(http, &logs.join("http-server.log"))?;
    thread::sleep(Duration::from_millis(300));
    let urls: Vec<String> = (0..ALIASES)
        .map(|i| format!("http://{}/", victim_alias(i)))
        .collect();
    let (_, commands) = capture(out, "http-100-servers.pcap", log, None, || {
        let mut c = in_ns(CLIENT1.ns, "curl");
        c.args(["-s", "-o", "/dev/null", "--max-time", "30"])
            .args(&urls);
        run(c, Duration::from_secs(60), log)?;
        Ok(vec![format!(
            "[{}] curl -s -o /dev/null http://10.77.1.100/ ... http://10.77.1.199/",
            CLIENT1.ns
        )])
    })?;
    all.push(Case {
        file: "http-100-servers.pcap".into(),
        family: "benign: client of 100 servers",
        expected: None,
        attacker: None,
        victim: None,
        commands,
        note: "a crawler-like client: 100 servers in a few seconds, every handshake completed"
            .into(),
    });

    // Benign: answered UDP with 100+ peers, both ways round.
    dnsmasq(WEB.ns, &logs.join("dnsmasq-web.log"))?;
    wait_dns(CLIENT1.ns, WEB.addr)?;
    let qfile = logs.join("dnsperf-queries.txt");
    fs::write(&qfile, "www.lab A\nmail.lab A\nfiles.lab A\napi.lab A\n")?;
    let q = qfile
        .to_str()
        .context("query path is not UTF-8")?
        .to_owned();
    let dnsperf = |ns: &str, server: Ipv4Addr, local: Option<Ipv4Addr>, qps: &str, secs: &str| {
        let mut args = vec![
            "-s".to_owned(),
            server.to_string(),
            "-d".into(),
            q.clone(),
            "-Q".into(),
            qps.into(),
            "-l".into(),
            secs.into(),
            "-c".into(),
            "1".into(),
        ];
        if let Some(a) = local {
            args.extend(["-a".into(), a.to_string()]);
        }
        let mut c = in_ns(ns, "dnsperf");
        c.args(&args);
        (c, format!("[{ns}] dnsperf {}", args.join(" ")))
    };
    let (_, commands) = capture(out, "udp-100-peers.pcap", log, None, || {
        run_all(
            (0..ALIASES).map(|i| dnsperf(CLIENT1.ns, victim_alias(i), None, "15", "8")),
            log,
        )
    })?;
    all.push(Case {
        file: "udp-100-peers.pcap".into(),
        family: "benign: answered UDP with 100+ peers",
        expected: None,
        attacker: None,
        victim: None,
        commands,
        note: "one host querying 100 DNS servers at 15 queries/s each (1,500/s), all answered"
            .into(),
    });
    let mut clients: Vec<(&str, Ipv4Addr)> = (0..ALIASES)
        .map(|i| (ATTACKER.ns, attacker_alias(i)))
        .collect();
    clients.extend(every_reflector());
    // The bots run reflectors on port 53 themselves; their clients only send from other ports.
    let (_, commands) = capture(out, "dns-server-125-clients.pcap", log, None, || {
        run_all(
            clients
                .iter()
                .map(|(ns, a)| dnsperf(ns, WEB.addr, Some(*a), "10", "8")),
            log,
        )
    })?;
    all.push(Case {
        file: "dns-server-125-clients.pcap".into(),
        family: "benign: busy DNS server",
        expected: None,
        attacker: None,
        victim: None,
        commands,
        note: format!(
            "a DNS server answering {} clients at 10 queries/s each ({}/s)",
            clients.len(),
            clients.len() * 10
        ),
    });
    Ok(all)
}

/// `ssh` as a script runs it: no prompt (so it gives up at the server's password question),
/// no host-key memory.
fn ssh(ns: &str, to: Ipv4Addr) -> (Command, String) {
    let args = [
        "-o",
        "BatchMode=yes",
        "-o",
        "StrictHostKeyChecking=no",
        "-o",
        "UserKnownHostsFile=/dev/null",
        "-o",
        "ConnectTimeout=5",
    ];
    let mut c = in_ns(ns, "ssh");
    c.args(args).arg(format!("admin@{to}")).arg("true");
    (c, format!("[{ns}] ssh {} admin@{to} true", args.join(" ")))
}

/// The cases of detection round three (see the module notes).
fn round_three(out: &Path, logs: &Path, log: &Path, exe: &str, all: &mut Vec<Case>) -> Result<()> {
    let web = WEB.addr.to_string();
    let att = ATTACKER.addr.to_string();
    let sshd = super::traffic::sshd_config(logs)?;
    let mut c = in_ns(WEB.ns, "/usr/sbin/sshd");
    c.args(["-D", "-e", "-f"]).arg(&sshd);
    spawn_logged(c, &logs.join("sshd.log"))?;
    thread::sleep(Duration::from_millis(500));

    let (_, commands) = capture(out, "brute-force-ssh.pcap", log, None, || {
        let running = attack::launch(Kind::BruteForce, Target::default(), log)?;
        let commands = running.commands.clone();
        thread::sleep(Duration::from_secs(25));
        drop(running);
        Ok(commands)
    })?;
    all.push(Case {
        file: "brute-force-ssh.pcap".into(),
        family: "password guessing (hydra, ssh)",
        expected: Some("brute_force"),
        attacker: Some(att.clone()),
        victim: Some(web.clone()),
        commands,
        note: "hydra, 8 tasks, against OpenSSH for 25 s: every login fails".into(),
    });

    // The same guessing spread over 15 sources (5 bot hosts, 3 addresses each in turn), a few
    // guesses each: no source reaches the one-source count, the service sees them all.
    let (_, commands) = capture(out, "brute-force-distributed.pcap", log, None, || {
        let mut commands = Vec::new();
        for round in 0..3u8 {
            let mut children = Vec::new();
            for b in BOTS {
                let src = b
                    .bot_addrs()
                    .nth(usize::from(round))
                    .context("bot address")?;
                let (c, text) = attack::hydra_from(b.ns, src, WEB.addr, 12, 2, log)?;
                children.push(spawn_logged(c, log)?);
                if round == 0 {
                    commands.push(text);
                }
            }
            thread::sleep(Duration::from_secs(20));
            for mut c in children {
                let _ignored = c.kill();
                let _ignored = c.wait();
            }
        }
        commands.push("(each bot from 3 of its addresses in turn, 20 s each)".into());
        Ok(commands)
    })?;
    all.push(Case {
        file: "brute-force-distributed.pcap".into(),
        family: "password guessing (hydra, ssh)",
        expected: Some("brute_force"),
        attacker: None,
        victim: Some(web.clone()),
        commands,
        note: "hydra from 15 sources (2 tasks, 12 guesses each) against OpenSSH: every login \
               fails, no source makes 20 attempts"
            .into(),
    });

    // A user's failing logins, a dozen in a few seconds, stretched to 10 minutes.
    let raw = "ssh-reconnects.raw.pcap";
    let (path, commands) = capture(out, raw, log, Some(&CLIENT1.addr.to_string()), || {
        let mut commands = Vec::new();
        for _ in 0..12 {
            let (c, text) = ssh(CLIENT1.ns, WEB.addr);
            run(c, Duration::from_secs(20), log).ok();
            commands.push(text);
        }
        Ok(commands)
    })?;
    stretch(&path, &out.join("ssh-reconnects.pcap"), 600.0)?;
    fs::remove_file(&path)?;
    all.push(Case {
        file: "ssh-reconnects.pcap".into(),
        family: "benign: a user reconnecting, an admin fanning out",
        expected: None,
        attacker: None,
        victim: None,
        commands: vec![commands.first().cloned().unwrap_or_default() + " (x12)"],
        note: "12 ssh logins that fail, stretched over 10 minutes".into(),
    });

    let (_, commands) = capture(out, "ssh-admin-40-servers.pcap", log, None, || {
        let mut commands = Vec::new();
        for i in 0..40 {
            let (c, text) = ssh(CLIENT1.ns, victim_alias(i));
            run(c, Duration::from_secs(20), log).ok();
            commands.push(text);
        }
        Ok(vec![format!("{} ... (40 servers)", commands[0])])
    })?;
    all.push(Case {
        file: "ssh-admin-40-servers.pcap".into(),
        family: "benign: a user reconnecting, an admin fanning out",
        expected: None,
        attacker: None,
        victim: None,
        commands,
        note: "one ssh session on each of 40 servers".into(),
    });

    // A worm: five ports, 28 unrouted addresses on each (none answers), stretched to 7 min.
    let raw = "worm-sweep.raw.pcap";
    let (path, commands) = capture(out, raw, log, Some(&att), || {
        let mut commands = Vec::new();
        for (g, port) in ["23", "2323", "8080", "80", "81"].iter().enumerate() {
            let targets: Vec<String> = (0..28)
                .map(|h| format!("10.78.{}.{}", g * 37 % 200 + h, (h * 53 + g * 11) % 250 + 1))
                .collect();
            let mut args: Vec<String> = [
                "-n",
                "-Pn",
                "-sS",
                "--max-retries",
                "0",
                "--max-rate",
                "20",
                "-S",
                &att,
                "-e",
                HOST_IF,
                "-p",
                port,
            ]
            .iter()
            .map(|s| (*s).to_owned())
            .collect();
            args.extend(targets);
            let mut c = in_ns(ATTACKER.ns, "nmap");
            c.args(&args);
            commands.push(format!("[{}] nmap {}", ATTACKER.ns, args.join(" ")));
            run(c, Duration::from_secs(60), log)?;
        }
        Ok(commands)
    })?;
    stretch(&path, &out.join("worm-sweep.pcap"), 420.0)?;
    fs::remove_file(&path)?;
    all.push(Case {
        file: "worm-sweep.pcap".into(),
        family: "sweep across a few ports (worm-like)",
        expected: Some("host_sweep"),
        attacker: Some(att.clone()),
        victim: None,
        commands,
        note: "140 unanswered SYNs to random unrouted addresses, 28 on each of 5 ports, \
               stretched to 7 minutes (one every 3 s)"
            .into(),
    });

    // A SYN flood at an open port, clients fetching beside it.
    let mut http = in_ns(WEB.ns, exe);
    http.args(["lab-role", "http-server", "0.0.0.0:80"]);
    spawn_logged(http, &logs.join("http-server-flood.log"))?;
    thread::sleep(Duration::from_millis(300));
    let (_, commands) = capture(out, "syn-flood-open-port.pcap", log, None, || {
        let mut children = Vec::new();
        let mut commands = Vec::new();
        for (ns, a) in every_reflector() {
            let mut c = in_ns(ns, "sh");
            let script = format!(
                "for i in $(seq 40); do curl -s -o /dev/null --interface {a} http://{web}/; \
                 sleep 0.1; done"
            );
            c.args(["-c", &script]);
            children.push(spawn_logged(c, log)?);
        }
        commands.push(format!(
            "[25 bot addresses] curl http://{web}/ (40 times each)"
        ));
        let args = ["-q", "-S", "-p", "80", "-i", "u1000", "-a", &att, &web];
        let mut c = in_ns(ATTACKER.ns, "hping3");
        c.args(args);
        commands.push(format!("[{}] hping3 {}", ATTACKER.ns, args.join(" ")));
        children.push(spawn_logged(c, log)?);
        thread::sleep(Duration::from_secs(5));
        stop(children);
        Ok(commands)
    })?;
    all.push(Case {
        file: "syn-flood-open-port.pcap".into(),
        family: "SYN flood at an open port, clients beside it",
        expected: Some("syn_flood"),
        attacker: Some(att.clone()),
        victim: Some(web.clone()),
        commands,
        note: "hping3 at 1,000 SYNs/s for 5 s to a listening port (the server answers SYN-ACK, \
               the flooder's stack RSTs) while 25 clients complete their fetches"
            .into(),
    });

    beacons(out, log, all)?;

    // A monitor: 100 answering hosts pinged every 2 s for a minute, their ssh tried now and
    // then.
    let hosts: Vec<String> = (0..ALIASES).map(|i| victim_alias(i).to_string()).collect();
    let (_, commands) = capture(out, "monitor-100-hosts.pcap", log, None, || {
        let mut commands = Vec::new();
        for round in 0..30 {
            let mut c = in_ns(CLIENT1.ns, "nmap");
            c.args(["-n", "-sn", "-PE", "--max-retries", "0"])
                .args(&hosts);
            if round == 0 {
                commands.push(format!(
                    "[{}] nmap -n -sn -PE (100 hosts), every 2 s",
                    CLIENT1.ns
                ));
            }
            let t = std::time::Instant::now();
            run(c, Duration::from_secs(20), log)?;
            if round % 10 == 0 {
                for h in hosts.iter().take(20) {
                    let (c, _) = ssh(CLIENT1.ns, h.parse()?);
                    run(c, Duration::from_secs(20), log).ok();
                }
            }
            thread::sleep(Duration::from_secs(2).saturating_sub(t.elapsed()));
        }
        commands.push(format!("[{}] ssh to 20 of them every 20 s", CLIENT1.ns));
        Ok(commands)
    })?;
    all.push(Case {
        file: "monitor-100-hosts.pcap".into(),
        family: "benign: a monitor revisiting its hosts",
        expected: None,
        attacker: None,
        victim: None,
        commands,
        note: "100 hosts pinged every 2 s for a minute (every echo answered), ssh to 20 of \
               them every 20 s"
            .into(),
    });
    Ok(())
}

/// Rounds of `curl` calls, one call per (namespace, source, URL) each round, about `gap_ms`
/// apart with +-20% jitter; the commands run.
fn periodic(
    calls: &[(&str, Ipv4Addr, String)],
    rounds: usize,
    gap_ms: u64,
    log: &Path,
) -> Result<Vec<String>> {
    jittered(rounds, gap_ms, || {
        for (ns, src, url) in calls {
            let mut c = in_ns(ns, "curl");
            c.args(["-s", "-o", "/dev/null", "--max-time", "5", "--interface"])
                .arg(src.to_string())
                .arg(url);
            run(c, Duration::from_secs(10), log)?;
        }
        Ok(())
    })?;
    Ok(calls
        .iter()
        .map(|(ns, src, url)| {
            format!("[{ns}] curl -s -o /dev/null --interface {src} {url} (x{rounds}, every {gap_ms} ms +-20%)")
        })
        .collect())
}

/// `each`, `rounds` times, starting every `gap_ms` +-20% (a fixed pseudo-random sequence).
fn jittered(rounds: usize, gap_ms: u64, mut each: impl FnMut() -> Result<()>) -> Result<()> {
    let mut rng = 0x9e37_79b9_7f4a_7c15u64;
    for _ in 0..rounds {
        let t = std::time::Instant::now();
        each()?;
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        let gap = gap_ms * 8 / 10 + rng % (gap_ms * 4 / 10 + 1);
        thread::sleep(Duration::from_millis(gap).saturating_sub(t.elapsed()));
    }
    Ok(())
}

/// `prog args` in `ns`, `rounds` times, every `gap_ms` +-20% (one command's beacon).
fn periodic_cmd(
    ns: &str,
    prog: &str,
    args: &[&str],
    rounds: usize,
    gap_ms: u64,
    log: &Path,
) -> Result<Vec<String>> {
    jittered(rounds, gap_ms, || {
        let mut c = in_ns(ns, prog);
        c.args(args);
        run(c, Duration::from_secs(10), log)
    })?;
    Ok(vec![format!(
        "[{ns}] {prog} {} (x{rounds}, every {gap_ms} ms +-20%)",
        args.join(" ")
    )])
}

/// Beaconing and what beacons without being command and control (the web host's HTTP server
/// runs: `round_three` started it).
fn beacons(out: &Path, log: &Path, all: &mut Vec<Case>) -> Result<()> {
    // Over DNS, hourly: dig asking a real resolver (dnsmasq on the file server) for the same
    // name, each time from a new source port, as an implant checking in over DNS does.
    dnsmasq(FILES.ns, &log.with_file_name("dnsmasq-files.log"))?;
    wait_dns(ATTACKER.ns, FILES.addr)?;
    let server = format!("@{}", FILES.addr);
    let raw = "beacon-dns.raw.pcap";
    let (path, commands) = capture(out, raw, log, Some(&ATTACKER.addr.to_string()), || {
        periodic_cmd(
            ATTACKER.ns,
            "dig",
            &[&server, "+tries=1", "+time=2", "c2.lab", "A"],
            24,
            500,
            log,
        )
    })?;
    stretch(&path, &out.join("beacon-dns-hourly.pcap"), 24.0 * 3600.0)?;
    fs::remove_file(&path)?;
    all.push(Case {
        file: "beacon-dns-hourly.pcap".into(),
        family: "beaconing (periodic check-ins with jitter)",
        expected: Some("beaconing"),
        attacker: Some(ATTACKER.addr.to_string()),
        victim: Some(FILES.addr.to_string()),
        commands,
        note: "24 DNS queries for one name over UDP, recorded every 0.5 s +-20% and stretched 7,200x: a \
               check-in every hour +-12 minutes for a day"
            .into(),
    });

    let web = WEB.addr;
    let stretched =
        |raw: &str, file: &str, calls: Vec<(&str, Ipv4Addr, String)>| -> Result<Vec<String>> {
            let (path, commands) = capture(out, raw, log, None, || periodic(&calls, 24, 500, log))?;
            stretch(&path, &out.join(file), 24.0 * 30.0)?;
            fs::remove_file(&path)?;
            Ok(commands)
        };
    let commands = stretched(
        "beacon-http.raw.pcap",
        "beacon-http.pcap",
        vec![(
            ATTACKER.ns,
            ATTACKER.addr,
            format!("http://{web}/bytes/600"),
        )],
    )?;
    all.push(Case {
        file: "beacon-http.pcap".into(),
        family: "beaconing (periodic check-ins with jitter)",
        expected: Some("beaconing"),
        attacker: Some(ATTACKER.addr.to_string()),
        victim: Some(web.to_string()),
        commands,
        note: "24 fetches of the same 600-byte page, recorded every 0.5 s +-20% and stretched \
               60x: a check-in every 30 s +-6 s"
            .into(),
    });
    let scraper: Vec<(&str, Ipv4Addr, String)> = (0..5)
        .map(|i| {
            (
                CLIENT1.ns,
                CLIENT1.addr,
                format!("http://{}/bytes/2000", victim_alias(i)),
            )
        })
        .collect();
    let commands = stretched("scraper.raw.pcap", "scraper-5-targets.pcap", scraper)?;
    all.push(Case {
        file: "scraper-5-targets.pcap".into(),
        family: "benign: pollers on a timer (scraper, shared server)",
        expected: None,
        attacker: None,
        victim: None,
        commands,
        note: "one host polling 5 targets every 30 s +-6 s (stretched 60x)".into(),
    });
    let shared: Vec<(&str, Ipv4Addr, String)> = BOTS
        .iter()
        .map(|b| (b.ns, b.addr, format!("http://{web}/bytes/300")))
        .collect();
    let commands = stretched("shared.raw.pcap", "shared-server-5-hosts.pcap", shared)?;
    all.push(Case {
        file: "shared-server-5-hosts.pcap".into(),
        family: "benign: pollers on a timer (scraper, shared server)",
        expected: None,
        attacker: None,
        victim: None,
        commands,
        note: "5 hosts polling one server every 30 s +-6 s (stretched 60x), as hosts poll an \
               update or time server"
            .into(),
    });
    Ok(())
}
