//! `cargo xtask lab record --out DIR`: the old tool's sample-data generator, from real tools.
//!
//! Writes `baseline_traffic.pcap` (benign only), `attacks_only.pcap` (each attack alone) and
//! `demo_traffic.pcap` (benign with attacks mixed in), captured by tcpdump on the gateway's WAN
//! side, where every packet between the networks passes in one direction or the other,
//! and `ground_truth.json` naming each attack's file, time window, tool command, attacker,
//! victim and the alert kind the sensor must raise.

use std::{
    fs,
    path::{Path, PathBuf},
    process::Child,
    thread,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use anyhow::{Context as _, Result, bail};
use serde_json::{Value, json};

use super::{
    GW, GW_IFACES,
    attack::{self, Kind, Target},
    in_ns, spawn_logged, traffic,
};

fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// tcpdump in the gateway namespace, stopped (and flushed) on `finish`.
pub struct Capture {
    child: Child,
    path: PathBuf,
}

impl Capture {
    /// The gateway's WAN interface, both directions: every packet between the networks once.
    pub fn start(path: &Path, log: &Path) -> Result<Self> {
        Self::start_with(path, log, &["-i", GW_IFACES[0]])
    }

    /// The WAN interface, only packets to or from `host` (a capture whose span is one tool's).
    pub fn host(path: &Path, log: &Path, host: &str) -> Result<Self> {
        Self::start_with(path, log, &["-i", GW_IFACES[0], "host", host])
    }

    /// What the sensor sees: packets arriving on any gateway interface (XDP is ingress-only),
    /// without the loopback traffic of the sensor's own API.
    pub fn ingress(path: &Path, log: &Path) -> Result<Self> {
        Self::start_with(path, log, &["-i", "any", "-Q", "in", "not net 127.0.0.0/8"])
    }

    fn start_with(path: &Path, log: &Path, args: &[&str]) -> Result<Self> {
        let mut c = in_ns(GW, "tcpdump");
        c.args(["-U", "-w"]).arg(path).args(args);
        let child = spawn_logged(c, log)?;
        // tcpdump needs a moment to open the interface; wait until it created the file.
        for _ in 0..100 {
            if path.exists() {
                thread::sleep(Duration::from_millis(200));
                return Ok(Self {
                    child,
                    path: path.to_owned(),
                });
            }
            thread::sleep(Duration::from_millis(50));
        }
        bail!("tcpdump did not start (see {})", log.display())
    }

    pub fn finish(mut self) -> Result<PathBuf> {
        // SAFETY: SIGINT to our own child; tcpdump flushes and exits on it.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGINT) };
        let status = self.child.wait()?;
        if !status.success() && status.code() != Some(130) {
            bail!("tcpdump ended with {status}");
        }
        Ok(self.path)
    }
}

/// Runs each attack in turn, `gap` apart, recording its ground truth.
fn attacks(file: &str, gap: Duration, log: &Path, truth: &mut Vec<Value>) -> Result<()> {
    for kind in Kind::ALL {
        let target = Target::default();
        let start = unix_now();
        let running = attack::launch(kind, target, log)?;
        let commands = running.commands.clone();
        if kind.ends_by_itself() {
            running.wait(Duration::from_secs(30));
        } else {
            thread::sleep(Duration::from_secs(4));
            drop(running);
        }
        let end = unix_now();
        let (src, victim) = kind.endpoints(target);
        eprintln!("lab record: {file}: {} done", kind.name());
        truth.push(json!({
            "file": file,
            "attack": kind.name(),
            "expected_alert": kind.alert(),
            "attacker": if kind.names_attacker() { Value::from(src.to_string()) } else { Value::Null },
            "victim": victim.to_string(),
            "start_unix": start,
            "end_unix": end,
            "commands": commands,
        }));
        thread::sleep(gap);
    }
    Ok(())
}

/// Brings up a fresh lab, records the three captures, tears the lab down.
pub fn record(out: &Path, baseline_secs: u64) -> Result<()> {
    fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let out = fs::canonicalize(out)?;
    let logs = super::work_dir("record")?;
    let log = logs.join("tools.log");
    super::up()?;
    let result = (|| -> Result<Vec<Value>> {
        let mut truth = Vec::new();
        traffic::start(&logs)?;
        thread::sleep(Duration::from_secs(3));

        eprintln!("lab record: baseline_traffic.pcap ({baseline_secs} s of benign traffic)");
        let cap = Capture::start(&out.join("baseline_traffic.pcap"), &log)?;
        thread::sleep(Duration::from_secs(baseline_secs));
        cap.finish()?;

        traffic::stop();
        thread::sleep(Duration::from_secs(2));
        eprintln!("lab record: attacks_only.pcap");
        let cap = Capture::start(&out.join("attacks_only.pcap"), &log)?;
        attacks(
            "attacks_only.pcap",
            Duration::from_secs(3),
            &log,
            &mut truth,
        )?;
        cap.finish()?;

        traffic::start(&logs)?;
        thread::sleep(Duration::from_secs(3));
        eprintln!("lab record: demo_traffic.pcap");
        let cap = Capture::start(&out.join("demo_traffic.pcap"), &log)?;
        thread::sleep(Duration::from_secs(10));
        attacks(
            "demo_traffic.pcap",
            Duration::from_secs(8),
            &log,
            &mut truth,
        )?;
        thread::sleep(Duration::from_secs(5));
        cap.finish()?;
        Ok(truth)
    })();
    let down = super::down();
    let truth = result?;
    down?;
    let doc = json!({
        "generator": "cargo xtask lab record",
        "capture_point": format!("{GW}:{}", GW_IFACES[0]),
        "files": {
            "baseline_traffic.pcap": "benign only: HTTP, DNS-like UDP, iperf3 bulk, ping",
            "attacks_only.pcap": "each attack alone, in order",
            "demo_traffic.pcap": "benign traffic with every attack mixed in",
        },
        "attacks": truth,
    });
    let path = out.join("ground_truth.json");
    fs::write(&path, serde_json::to_string_pretty(&doc)? + "\n")
        .with_context(|| format!("writing {}", path.display()))?;
    eprintln!("lab record: wrote {}", out.display());
    Ok(())
}
