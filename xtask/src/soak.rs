//! `cargo xtask soak --minutes N`: the lab at the highest rate it can make, for a long time.
//! A SYN flood at hping3's full speed (`--flood`) runs throughout; every other attack kind
//! runs in turn from a fresh attacker address (each opens its own alert); one client reads
//! the API without pause (alerts, flows, stats, status, metrics). Every 10 s the sensor's
//! memory, open files, threads and counters are sampled into `target/lab/soak/samples.csv`.
//! At the end: memory must peak no higher after the warm-up (the first fifth) than in it and
//! its floor must not creep up; open files likewise (a floor that stays, peaks bounded by the
//! evidence files open at once); new alerts must keep coming in every quarter, and the API
//! must have answered every request.
//! Not part of `cargo xtask test`: it runs for as long as it is asked to.

use std::{
    fmt::Write as _,
    path::Path,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};

use crate::{
    lab::{
        self, ATTACKER, GW, WEB,
        attack::{self, Kind, Target},
        in_ns,
    },
    live::{API_PORT, LabGuard, Sensor},
};

/// One sample of the sensor process and its counters.
#[derive(Clone, Debug, Default)]
struct Sample {
    t_s: f64,
    rss_kib: u64,
    fds: u64,
    threads: u64,
    alerts: u64,
    kernel_packets: u64,
    db_dropped: u64,
    db_queue: u64,
    db_bytes: u64,
    /// Flood flows summed into their alert instead of a row each.
    flows_summed: u64,
    /// Flows the sensor's table holds (the state a flood of new flows fills, up to its cap).
    flows_active: u64,
    api_requests: u64,
    api_failures: u64,
}

fn proc_status(pid: u32, key: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix(key))
                .and_then(|v| v.split_whitespace().next().and_then(|n| n.parse().ok()))
        })
        .unwrap_or(0)
}

fn metric(text: &str, name: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name).and_then(|v| v.strip_prefix(' ')))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .map_or(0, |v| v as u64)
}

/// What the API client reads, in turn (what the dashboard reads at every refresh).
const API_PATHS: [&str; 6] = [
    "/api/alerts?limit=100",
    "/api/flows?limit=100",
    "/api/stats",
    "/api/status",
    "/metrics",
    "/api/top-talkers?limit=10",
];

/// Attacks that run in turn (the full-speed SYN flood runs beside them all the time).
const ROTATION: [Kind; 11] = [
    Kind::SynScan,
    Kind::UdpScan,
    Kind::PingSweep,
    Kind::UdpFlood,
    Kind::FinScan,
    Kind::IcmpFlood,
    Kind::XmasScan,
    Kind::Ddos,
    Kind::Ipv6Scan,
    Kind::ConnectScan,
    Kind::SpoofedFlood,
];

pub fn soak(sensor: &Path, minutes: f64) -> Result<()> {
    let total = Duration::from_secs_f64((minutes * 60.0).max(60.0));
    let dir = lab::work_dir("soak")?;
    let data = dir.join("data");
    let _ignored = std::fs::remove_dir_all(&data);
    let _lab = LabGuard::up()?;
    let s = Sensor::start(sensor, &data, &[], Some(&dir.join("sensor.log")))?;
    let pid = s.pid();
    // hping3 as fast as it can send, from the attacker's own address, all along.
    let flood = lab::spawn_logged(
        {
            let mut c = in_ns(ATTACKER.ns, "hping3");
            c.args(["-q", "-S", "-p", "80", "--flood"])
                .arg(WEB.addr.to_string());
            c
        },
        &dir.join("flood.log"),
    )?;
    let mut flood = attack::Running::from_children(vec![flood]);

    let stop = Arc::new(AtomicBool::new(false));
    let (requests, failures) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let reader = {
        let (stop, requests, failures) = (
            Arc::clone(&stop),
            Arc::clone(&requests),
            Arc::clone(&failures),
        );
        thread::spawn(move || {
            let mut times: Vec<Vec<f64>> = vec![Vec::new(); API_PATHS.len()];
            let mut i = 0usize;
            while !stop.load(Ordering::Relaxed) {
                let k = i % API_PATHS.len();
                let t = Instant::now();
                let ok = lab::http(GW, API_PORT, "GET", API_PATHS[k], None, None)
                    .is_some_and(|(c, _)| c == 200);
                times[k].push(t.elapsed().as_secs_f64() * 1e3);
                requests.fetch_add(1, Ordering::Relaxed);
                if !ok {
                    failures.fetch_add(1, Ordering::Relaxed);
                }
                i += 1;
            }
            times
        })
    };

    let start = Instant::now();
    let mut samples: Vec<Sample> = Vec::new();
    let mut next_sample = start;
    let mut round = 0u8;
    let mut current: Option<attack::Running> = None;
    let mut attack_until = start;
    let log = dir.join("attacks.log");
    while start.elapsed() < total {
        if Instant::now() >= attack_until {
            if let Some(mut r) = current.take() {
                r.stop();
            }
            let kind = ROTATION[usize::from(round) % ROTATION.len()];
            let target = Target {
                src: lab::attacker_alias(round),
                victim: lab::victim_alias(round),
            };
            current = Some(attack::launch(kind, target, &log)?);
            attack_until = Instant::now() + Duration::from_secs(15);
            round = round.wrapping_add(1);
        }
        if Instant::now() >= next_sample {
            let m = lab::http_get(GW, API_PORT, "/metrics").unwrap_or_default();
            let sample = Sample {
                t_s: start.elapsed().as_secs_f64(),
                rss_kib: proc_status(pid, "VmRSS:"),
                fds: std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count() as u64),
                threads: proc_status(pid, "Threads:"),
                alerts: metric(&m, "sensor_alerts_raised_total"),
                kernel_packets: metric(&m, "sensor_kernel_packets_total"),
                db_dropped: metric(&m, "sensor_db_dropped_total"),
                db_queue: metric(&m, "sensor_db_queue_depth"),
                flows_summed: metric(&m, "sensor_flows_summed_total"),
                flows_active: metric(&m, "sensor_flows_active"),
                db_bytes: std::fs::metadata(data.join("sensor.db")).map_or(0, |m| m.len())
                    + std::fs::metadata(data.join("sensor.db-wal")).map_or(0, |m| m.len()),
                api_requests: requests.load(Ordering::Relaxed),
                api_failures: failures.load(Ordering::Relaxed),
            };
            eprintln!(
                "soak {:>6.0} s: rss {} MiB, fds {}, threads {}, flows {}, alerts {}, kernel packets {}, db {} MiB, queue {}, dropped {}, summed {}, api {} ({} failed)",
                sample.t_s,
                sample.rss_kib / 1024,
                sample.fds,
                sample.threads,
                sample.flows_active,
                sample.alerts,
                sample.kernel_packets,
                sample.db_bytes >> 20,
                sample.db_queue,
                sample.db_dropped,
                sample.flows_summed,
                sample.api_requests,
                sample.api_failures
            );
            samples.push(sample);
            next_sample += Duration::from_secs(10);
        }
        if let Some(status) = lab_sensor_exited(pid) {
            bail!("the sensor exited during the soak: {status}");
        }
        thread::sleep(Duration::from_millis(200));
    }
    stop.store(true, Ordering::Relaxed);
    if let Some(mut r) = current.take() {
        r.stop();
    }
    flood.stop();
    let times = reader.join().unwrap_or_default();
    for (path, t) in API_PATHS.iter().zip(&times) {
        let mut t = t.clone();
        t.sort_by(f64::total_cmp);
        let q = |p: f64| {
            t.get(((t.len() as f64 - 1.0) * p) as usize)
                .copied()
                .unwrap_or(0.0)
        };
        println!(
            "soak API {path}: {} requests, p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
            t.len(),
            q(0.5),
            q(0.99),
            q(1.0)
        );
    }
    let mut s = s;
    let exit = s.stop();

    let mut csv = String::from(
        "t_s,rss_kib,fds,threads,alerts,kernel_packets,db_dropped,db_queue,db_bytes,flows_summed,flows_active,api_requests,api_failures\n",
    );
    for x in &samples {
        let _ignored = writeln!(
            csv,
            "{:.0},{},{},{},{},{},{},{},{},{},{},{},{}",
            x.t_s,
            x.rss_kib,
            x.fds,
            x.threads,
            x.alerts,
            x.kernel_packets,
            x.db_dropped,
            x.db_queue,
            x.db_bytes,
            x.flows_summed,
            x.flows_active,
            x.api_requests,
            x.api_failures
        );
    }
    let csv_path = dir.join("samples.csv");
    std::fs::write(&csv_path, csv).with_context(|| csv_path.display().to_string())?;
    judge(&samples, exit.is_some_and(|e| e.success()), &csv_path)
}

/// Whether the sensor (pid in the lab) is gone: `ps` no longer knows it.
fn lab_sensor_exited(pid: u32) -> Option<String> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .any(|l| l.starts_with("State:") && l.contains("zombie"))
        .then(|| "exited (zombie)".to_owned())
}

fn judge(samples: &[Sample], clean_exit: bool, csv: &Path) -> Result<()> {
    if samples.len() < 8 {
        bail!("too few samples ({}) to judge; run longer", samples.len());
    }
    let warm = samples.len() / 5;
    let after = &samples[warm..];
    let (first, last) = (&after[0], &samples[samples.len() - 1]);
    let rss_max = after.iter().map(|x| x.rss_kib).max().unwrap_or(0);
    let fds_min = after.iter().map(|x| x.fds).min().unwrap_or(0);
    let fds_max = after.iter().map(|x| x.fds).max().unwrap_or(0);
    let hours = (last.t_s - first.t_s) / 3600.0;
    let slope = (last.rss_kib as f64 - first.rss_kib as f64) / 1024.0 / hours.max(1e-9);
    // New alerts in every quarter of the time after the warm-up.
    let q = after.len() / 4;
    let quarters: Vec<u64> = (0..4)
        .map(|i| {
            let a = &after[i * q];
            let b = if i == 3 { last } else { &after[(i + 1) * q] };
            b.alerts.saturating_sub(a.alerts)
        })
        .collect();
    let pps = (last.kernel_packets - first.kernel_packets.min(last.kernel_packets)) as f64
        / (last.t_s - first.t_s).max(1.0);
    println!(
        "soak: {:.0} min; after the warm-up ({:.0} s): rss {} -> {} MiB (max {}, {:+.1} MiB/h), fds {}..{}, threads {}, alerts per quarter {:?} ({} in all), kernel {:.0} packets/s, db {} MiB, rows dropped {}, flows summed {}, API {} requests ({} failed); samples {}",
        last.t_s / 60.0,
        first.t_s,
        first.rss_kib / 1024,
        last.rss_kib / 1024,
        rss_max / 1024,
        slope,
        fds_min,
        fds_max,
        last.threads,
        quarters,
        last.alerts,
        pps,
        last.db_bytes >> 20,
        last.db_dropped,
        last.flows_summed,
        last.api_requests,
        last.api_failures,
        csv.display()
    );
    let mut bad = Vec::new();
    // Memory rises with each attack's state and falls once it is pruned; flat means no higher
    // than the warm-up (which saw every attack of the rotation once in a run of 14 minutes or
    // more) needed, and a floor that does not creep up from the first quarter to the last.
    let grace = |kib: u64| kib + kib / 4 + 32 * 1024;
    let rss_warm = samples[..warm].iter().map(|x| x.rss_kib).max().unwrap_or(0);
    if rss_max > grace(rss_warm) {
        bad.push(format!(
            "memory peaked at {} MiB after the warm-up, {} MiB in it",
            rss_max / 1024,
            rss_warm / 1024
        ));
    }
    let floor = |xs: &[Sample], f: fn(&Sample) -> u64| xs.iter().map(f).min().unwrap_or(0);
    let (head, tail) = (&after[..q.max(1)], &after[after.len() - q.max(1)..]);
    let (rss_head, rss_tail) = (floor(head, |x| x.rss_kib), floor(tail, |x| x.rss_kib));
    if rss_tail > grace(rss_head) {
        bad.push(format!(
            "the memory floor crept from {} to {} MiB",
            rss_head / 1024,
            rss_tail / 1024
        ));
    }
    // Open files: a floor that stays put (a leak raises it), and peaks no higher than the
    // evidence files open at once (64) and a few connections above it.
    let (fds_head, fds_tail) = (floor(head, |x| x.fds), floor(tail, |x| x.fds));
    if fds_tail > fds_head + 4 || fds_max > fds_head + 64 + 16 {
        bad.push(format!(
            "open files: floor {fds_head} -> {fds_tail}, range {fds_min}..{fds_max}"
        ));
    }
    if quarters.contains(&0) {
        bad.push(format!("no new alert in a quarter: {quarters:?}"));
    }
    if last.api_failures > 0 {
        bad.push(format!("{} API requests failed", last.api_failures));
    }
    if !clean_exit {
        bad.push("the sensor did not stop cleanly on SIGTERM".into());
    }
    if bad.is_empty() {
        println!("soak: passed");
        Ok(())
    } else {
        bail!("soak failed: {}", bad.join("; "))
    }
}
