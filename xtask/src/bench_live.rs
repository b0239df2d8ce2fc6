//! `cargo xtask bench-live`: the sensor measured live in the lab, with real tools.
//!
//! * latency: time from launching each attack kind to its alert being readable on
//!   `/api/alerts`, p50/p99/max over `runs` runs (fresh attacker and victim per run);
//! * flood: the same for a SYN flood at full speed (`hping3 --flood`, hundreds of thousands of
//!   new flows a second), with the kernel's packet rate and the longest poll cycle;
//! * accounting: a tcpreplay at full speed through the gateway: packets sent, received by the
//!   interface and counted by the sensor; agent CPU normalised per 100k packets/s;
//! * overload: a random-source SYN flood (hping3 --flood --rand-source) against a small flow
//!   map: detection, map insert failures, agent memory;
//! * scale: 1M concurrent flows through the kernel map into the flow table: agent memory,
//!   kernel map memory, poll time;
//! * upstream: each flood kind with upstream mitigation on (gobgpd on the gateway, FRR's bgpd
//!   as the upstream router): launch -> alert, and launch -> the FlowSpec rule in the
//!   upstream router's RIB (read with vtysh every 20 ms).

use std::{
    fs,
    path::Path,
    process::Command,
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};
use serde_json::Value;

use crate::{
    bench_replay::synthetic,
    lab::{
        self, CLIENT1, GW, GW_IFACES, HOST_IF,
        attack::{self, Kind, Target},
        in_ns, traffic,
    },
    live::{LabGuard, Sensor, detect, matches},
};

const TOKEN: &str = "lab-bench-token-0123456789";

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    // Nearest rank: with 10 runs p99 is the slowest run.
    let rank = ((p / 100.0) * sorted.len() as f64).ceil().max(1.0) as usize;
    sorted[rank.min(sorted.len()) - 1]
}

/// Resident and peak resident memory of `pid`, MiB.
fn rss_mib(pid: u32) -> (f64, f64) {
    let s = fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        s.lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<f64>().ok())
            .map_or(0.0, |kb| kb / 1024.0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// User + system CPU seconds of `pid` so far.
fn cpu_seconds(pid: u32) -> f64 {
    let s = fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which may hold spaces) start at ')'.
    let rest = s.rsplit_once(')').map_or("", |x| x.1);
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    (ticks(11) + ticks(12)) / hz
}

/// Kernel memory of the sensor's BPF maps (memlock of every map fd), MiB.
fn map_memlock_mib(pid: u32) -> f64 {
    let Ok(dir) = fs::read_dir(format!("/proc/{pid}/fdinfo")) else {
        return 0.0;
    };
    let mut total = 0u64;
    for e in dir.flatten() {
        let s = fs::read_to_string(e.path()).unwrap_or_default();
        if s.contains("map_type:") {
            total += s
                .lines()
                .find_map(|l| l.strip_prefix("memlock:"))
                .and_then(|v| v.trim().parse::<u64>().ok())
                .unwrap_or(0);
        }
    }
    total as f64 / (1024.0 * 1024.0)
}

/// rx packets of the gateway interfaces (the interface counters).
fn iface_rx() -> Result<u64> {
    let mut total = 0;
    for i in GW_IFACES {
        let out = in_ns(GW, "ip")
            .args(["-s", "-j", "link", "show", "dev", i])
            .output()?;
        let v: Value = serde_json::from_slice(&out.stdout).context("ip -s -j output")?;
        total += v[0]["stats64"]["rx"]["packets"].as_u64().unwrap_or(0);
    }
    Ok(total)
}

fn kernel(s: &Sensor) -> Value {
    s.get("/api/status")
        .map(|v| v["kernel"].clone())
        .unwrap_or_default()
}

fn num(v: &Value, k: &str) -> u64 {
    v[k].as_u64().unwrap_or(0)
}

/// Waits until two consecutive polls report the same kernel packet count (all counted).
fn settle(s: &Sensor) -> Value {
    let mut last = kernel(s);
    for _ in 0..40 {
        thread::sleep(Duration::from_millis(500));
        let now = kernel(s);
        if num(&now, "packets") == num(&last, "packets") {
            return now;
        }
        last = now;
    }
    last
}

/// A capture addressed to the gateway's WAN MAC (so the bridge forwards it only there).
fn capture_for_gateway(
    dir: &Path,
    name: &str,
    flows: u32,
    per_flow: u32,
) -> Result<std::path::PathBuf> {
    let raw = dir.join(format!("{name}.raw.pcap"));
    let out = dir.join(format!("{name}.pcap"));
    if out.exists() {
        return Ok(out);
    }
    synthetic(&raw, flows, per_flow)?;
    let o = in_ns(GW, "cat")
        .arg(format!("/sys/class/net/{}/address", GW_IFACES[0]))
        .output()?;
    let mac = String::from_utf8_lossy(&o.stdout).trim().to_owned();
    if mac.len() != 17 {
        bail!("cannot read the MAC of {}", GW_IFACES[0]);
    }
    crate::setup::run(
        Command::new("tcprewrite")
            .arg(format!("--enet-dmac={mac}"))
            .arg("--enet-smac=02:00:00:00:00:01")
            .arg("-i")
            .arg(&raw)
            .arg("-o")
            .arg(&out),
    )?;
    let _ignored = fs::remove_file(&raw);
    Ok(out)
}

/// tcpreplay from client 1; (packets sent, packets/s achieved).
fn replay(pcap: &Path, rate: Option<u64>) -> Result<(u64, f64)> {
    let mut c = in_ns(CLIENT1.ns, "tcpreplay");
    c.args(["-i", HOST_IF]);
    match rate {
        Some(pps) => c.arg(format!("--pps={pps}")),
        None => c.arg("--topspeed"),
    };
    let out = c.arg(pcap).output().context("running tcpreplay")?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    if !out.status.success() {
        bail!(
            "tcpreplay failed: {text}{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    // "Actual: 1000000 packets (86000000 bytes) sent in 2.50 seconds"
    // "Rated: 34400000.0 Bps, 275.20 Mbps, 400000.00 pps"
    let sent = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("Actual: "))
        .and_then(|r| r.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .context("tcpreplay did not report packets sent")?;
    let pps = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("Rated: "))
        .and_then(|r| r.split(',').find(|p| p.trim_end().ends_with("pps")))
        .and_then(|p| p.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0.0);
    Ok((sent, pps))
}

pub fn bench_live(sensor: &Path, runs: usize, only: &[String]) -> Result<()> {
    let want = |p: &str| only.is_empty() || only.iter().any(|o| o == p);
    let dir = lab::work_dir("bench")?;
    let guard = LabGuard::up()?;
    let mut report = Vec::new();
    if want("latency") {
        latency(sensor, runs, &dir, &mut report)?;
    }
    traffic::stop();
    if want("flood") {
        full_flood(sensor, runs, &dir, &mut report)?;
    }
    if want("accounting") {
        accounting(sensor, &dir, &mut report)?;
    }
    if want("overload") {
        overload(sensor, &dir, &mut report)?;
    }
    if want("scale") {
        scale(sensor, &dir, &mut report)?;
    }
    if want("upstream") {
        upstream(sensor, runs, &dir, &mut report)?;
    }
    drop(guard);
    println!("\n{}", report.join("\n"));
    Ok(())
}

/// A sensor for one part of the benchmark: fresh data directory `dir/name`, log
/// `dir/name-sensor.log`, `extra` flags.
fn start_sensor(sensor: &Path, dir: &Path, name: &str, extra: &[&str]) -> Result<Sensor> {
    let data = dir.join(name);
    let _ignored = fs::remove_dir_all(&data);
    fs::create_dir_all(&data)?;
    let mut args = vec!["--token", TOKEN];
    args.extend_from_slice(extra);
    Sensor::start(
        sensor,
        &data,
        &args,
        Some(&dir.join(format!("{name}-sensor.log"))),
    )
}

fn latency(sensor: &Path, runs: usize, dir: &Path, report: &mut Vec<String>) -> Result<()> {
    traffic::start(dir)?;
    let s = start_sensor(sensor, dir, "latency", &[])?;
    thread::sleep(Duration::from_secs(3));
    let tools = dir.join("latency-tools.log");
    report.push(format!(
        "## Detection latency (launch -> alert on /api/alerts, {runs} runs per kind, benign traffic running, poll 250 ms)\n\n\
         | attack | alert | detected | p50 ms | p99 ms | max ms |\n|---|---|---|---|---|---|"
    ));
    let mut all = Vec::new();
    for (k, kind) in Kind::ALL.into_iter().enumerate() {
        let mut lat = Vec::new();
        for r in 0..runs {
            let i = ((k * runs + r) % usize::from(lab::ALIASES)) as u8;
            let t = Target {
                src: lab::attacker_alias(i),
                victim: lab::victim_alias(i),
            };
            if let Some(d) = detect(&s, kind, t, Duration::from_secs(20), &tools)? {
                lat.push(d.as_secs_f64() * 1000.0);
            }
            thread::sleep(Duration::from_millis(700));
        }
        lat.sort_by(f64::total_cmp);
        all.extend(lat.iter().copied());
        let line = format!(
            "| {} | {} | {}/{runs} | {:.0} | {:.0} | {:.0} |",
            kind.name(),
            kind.alert(),
            lat.len(),
            percentile(&lat, 50.0),
            percentile(&lat, 99.0),
            lat.last().copied().unwrap_or(f64::NAN)
        );
        eprintln!("bench-live: {line}");
        report.push(line);
    }
    all.sort_by(f64::total_cmp);
    report.push(format!(
        "| all | | {}/{} | {:.0} | {:.0} | {:.0} |\n",
        all.len(),
        runs * Kind::ALL.len(),
        percentile(&all, 50.0),
        percentile(&all, 99.0),
        all.last().copied().unwrap_or(f64::NAN)
    ));
    drop(s);
    traffic::stop();
    Ok(())
}

/// A value of the sensor's Prometheus text (`/metrics`).
fn metric(name: &str) -> Option<f64> {
    let text = lab::http_get(GW, crate::live::API_PORT, "/metrics")?;
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse().ok())
}

/// Launches `kind` and polls `/api/alerts` over one kept-alive connection (as a dashboard's
/// browser does) until its alert is listed. A new connection per poll measures the flooded
/// namespace's loopback instead: its SYNs wait in the same receive backlog as the flood, and
/// one dropped there costs TCP's 1 s (then 3 s) retransmission.
fn detect_kept_alive(
    s: &Sensor,
    kind: Kind,
    t: Target,
    limit: Duration,
    log: &Path,
) -> Result<Option<Duration>> {
    let before: Vec<Value> = s
        .alerts(&format!("&kind={}", kind.alert()))
        .iter()
        .filter(|a| matches(a, kind, t))
        .map(|a| a["id"].clone())
        .collect();
    let url = format!(
        "http://127.0.0.1:{}/api/alerts?limit=1000&kind={}",
        crate::live::API_PORT,
        kind.alert()
    );
    lab::with_ns(GW, || -> Result<Option<Duration>> {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(10)))
            .build()
            .into();
        let get = || -> Option<Value> {
            let body = agent
                .get(&url)
                .call()
                .ok()?
                .body_mut()
                .read_to_string()
                .ok()?;
            serde_json::from_str(&body).ok()
        };
        // The connection is open before the attack starts.
        get().context("the API does not answer")?;
        let started = Instant::now();
        let mut running = attack::launch(kind, t, log)?;
        let mut found = None;
        while started.elapsed() < limit {
            let listed = get().is_some_and(|v| {
                v["items"].as_array().is_some_and(|items| {
                    items
                        .iter()
                        .any(|a| matches(a, kind, t) && !before.contains(&a["id"]))
                })
            });
            if listed {
                found = Some(started.elapsed());
                break;
            }
            thread::sleep(Duration::from_millis(10));
        }
        running.stop();
        Ok(found)
    })?
}

/// `hping3 -S --flood` at one victim, `runs` times: launch to alert (polled over a kept-alive
/// connection), the packet rate the kernel counted while it ran, the longest poll cycle
/// (drain, rules and outputs), the longest WAL truncate.
fn full_flood(sensor: &Path, runs: usize, dir: &Path, report: &mut Vec<String>) -> Result<()> {
    traffic::start(dir)?;
    let s = start_sensor(sensor, dir, "flood", &[])?;
    thread::sleep(Duration::from_secs(3));
    let tools = dir.join("flood-tools.log");
    let mut lat = Vec::new();
    let mut rates = Vec::new();
    for r in 0..runs {
        let i = (r % usize::from(lab::ALIASES)) as u8;
        let t = Target {
            src: lab::attacker_alias(i),
            victim: lab::victim_alias(i),
        };
        let p0 = num(&kernel(&s), "packets");
        let t0 = Instant::now();
        if let Some(d) =
            detect_kept_alive(&s, Kind::FullSynFlood, t, Duration::from_secs(20), &tools)?
        {
            lat.push(d.as_secs_f64() * 1000.0);
        }
        let secs = t0.elapsed().as_secs_f64();
        rates.push((num(&settle(&s), "packets") - p0) as f64 / secs);
        thread::sleep(Duration::from_secs(2));
    }
    eprintln!("bench-live: full-syn-flood runs (ms, in order): {lat:.0?}");
    lat.sort_by(f64::total_cmp);
    rates.sort_by(f64::total_cmp);
    let line = format!(
        "| full-syn-flood (hping3 -S --flood) | syn_flood | {}/{runs} | {:.0} | {:.0} | {:.0} | {:.0}k | {:.0} ms | {:.0} ms |",
        lat.len(),
        percentile(&lat, 50.0),
        percentile(&lat, 99.0),
        lat.last().copied().unwrap_or(f64::NAN),
        percentile(&rates, 50.0) / 1000.0,
        metric("sensor_poll_cycle_max_microseconds").unwrap_or(f64::NAN) / 1000.0,
        metric("sensor_db_checkpoint_max_microseconds").unwrap_or(f64::NAN) / 1000.0,
    );
    eprintln!("bench-live: {line}");
    report.push(format!(
        "## SYN flood at full speed (launch -> alert on /api/alerts, {runs} runs, benign traffic running)\n\n\
         | attack | alert | detected | p50 ms | p99 ms | max ms | packets/s counted (median run) | longest poll cycle | longest WAL truncate |\n|---|---|---|---|---|---|---|---|---|\n{line}\n"
    ));
    drop(s);
    traffic::stop();
    Ok(())
}

fn accounting(sensor: &Path, dir: &Path, report: &mut Vec<String>) -> Result<()> {
    let s = start_sensor(sensor, dir, "accounting", &[])?;
    let pcap = capture_for_gateway(dir, "accounting-100k-flows", 100_000, 10)?;
    report.push(
        "## Accounting under load (tcpreplay of 1M packets / 100k flows from a client namespace through the gateway)\n\n\
         | rate | sent | gateway rx | sensor counted | counted/sent | agent CPU | agent CPU per 100k pps | map insert failures |\n|---|---|---|---|---|---|---|---|"
            .to_owned(),
    );
    for rate in [None, Some(100_000)] {
        let k0 = settle(&s);
        let rx0 = iface_rx()?;
        let cpu0 = cpu_seconds(s.pid());
        let t0 = Instant::now();
        let (sent, pps) = replay(&pcap, rate)?;
        let k1 = settle(&s);
        let wall = t0.elapsed().as_secs_f64();
        let cpu = cpu_seconds(s.pid()) - cpu0;
        let rx = iface_rx()? - rx0;
        let counted = num(&k1, "packets") - num(&k0, "packets");
        let fails = num(&k1, "flow_map_insert_full") + num(&k1, "flow_map_insert_other")
            - num(&k0, "flow_map_insert_full")
            - num(&k0, "flow_map_insert_other");
        let replay_s = sent as f64 / pps.max(1.0);
        // CPU over the replay and the settling polls, as a share of one core during the replay.
        let share = cpu / replay_s.max(1e-9);
        let line = format!(
            "| {} ({:.0} pps achieved) | {sent} | {rx} | {counted} | {:.4} | {cpu:.2} s over {wall:.1} s | {:.1}% of a core | {fails} |",
            rate.map_or("top speed".to_owned(), |r| format!("{r} pps")),
            pps,
            counted as f64 / sent.max(1) as f64,
            100.0 * share / (pps / 100_000.0).max(1e-9),
        );
        eprintln!("bench-live: {line}");
        report.push(line);
    }
    report.push(String::new());
    Ok(())
}

fn overload(sensor: &Path, dir: &Path, report: &mut Vec<String>) -> Result<()> {
    let entries = 4096;
    let s = start_sensor(
        sensor,
        dir,
        "overload",
        &[
            "--flow-entries",
            &entries.to_string(),
            "--max-flows",
            "200000",
        ],
    )?;
    let (rss0, _) = rss_mib(s.pid());
    let k0 = kernel(&s);
    let t = Target {
        src: lab::ATTACKER.addr,
        victim: lab::WEB.addr,
    };
    let log = dir.join("overload-tools.log");
    // hping3 --flood with random sources: as fast as one core sends.
    let mut c = in_ns(lab::ATTACKER.ns, "hping3");
    c.args([
        "-q",
        "-S",
        "-p",
        "80",
        "--rand-source",
        "--flood",
        &t.victim.to_string(),
    ]);
    let started = Instant::now();
    let mut flood = lab::spawn_logged(c, &log)?;
    let mut detected = None;
    let mut peak = rss0;
    while started.elapsed() < Duration::from_secs(15) {
        if detected.is_none()
            && s.alerts("&kind=ddos")
                .iter()
                .any(|a| matches(a, Kind::SpoofedFlood, t))
        {
            detected = Some(started.elapsed());
        }
        peak = peak.max(rss_mib(s.pid()).0);
        thread::sleep(Duration::from_millis(50));
    }
    // SAFETY: SIGINT to our own child.
    unsafe { libc::kill(flood.id() as i32, libc::SIGINT) };
    let _ignored = flood.wait();
    let k1 = settle(&s);
    let alive = s.get("/api/status").is_some();
    let (rss1, hwm) = rss_mib(s.pid());
    let packets = num(&k1, "packets") - num(&k0, "packets");
    let full = num(&k1, "flow_map_insert_full") - num(&k0, "flow_map_insert_full");
    let lost = num(&k1, "overflow_lost") - num(&k0, "overflow_lost");
    let flows = num(&k1, "flows_active");
    report.push(format!(
        "## Flow-map overload (hping3 -S --flood --rand-source for 15 s; flow map {entries} entries, flow table cap 200,000)\n\n\
         | packets counted | flow-map inserts refused (full) | per-host overflow lost | ddos alert after | flows in table | agent RSS start / peak / end (VmHWM) | sensor alive |\n|---|---|---|---|---|---|---|\n\
         | {packets} | {full} | {lost} | {} | {flows} | {rss0:.0} / {peak:.0} / {rss1:.0} ({hwm:.0}) MiB | {alive} |\n",
        detected.map_or("NOT DETECTED".to_owned(), |d| format!("{:.2} s", d.as_secs_f64())),
    ));
    eprintln!(
        "bench-live: overload: {}",
        report.last().map_or("", |s| s.as_str())
    );
    Ok(())
}

fn scale(sensor: &Path, dir: &Path, report: &mut Vec<String>) -> Result<()> {
    let s = start_sensor(
        sensor,
        dir,
        "scale",
        &["--flow-entries", "1048576", "--max-flows", "1200000"],
    )?;
    let pcap = capture_for_gateway(dir, "scale-1m-flows", 1_000_000, 1)?;
    let (rss0, _) = rss_mib(s.pid());
    let k0 = settle(&s);
    let (sent, pps) = replay(&pcap, None)?;
    let k1 = settle(&s);
    let mut polls = Vec::new();
    for _ in 0..20 {
        polls.push(num(&kernel(&s), "poll_latency_us") as f64 / 1000.0);
        thread::sleep(Duration::from_millis(250));
    }
    polls.sort_by(f64::total_cmp);
    let flows = num(&k1, "flows_active");
    let (rss, hwm) = rss_mib(s.pid());
    let maps = map_memlock_mib(s.pid());
    let counted = num(&k1, "packets") - num(&k0, "packets");
    let fails = num(&k1, "flow_map_insert_full") - num(&k0, "flow_map_insert_full");
    // The whole cycle (drain, rules, sinks) at its worst, over the replay: detection keeps up
    // while it stays under the 250 ms poll interval.
    let cycle_max = num(&k1, "poll_cycle_max_us") as f64 / 1000.0;
    let late = num(&k1, "polls_late") - num(&k0, "polls_late");
    let polls_n = num(&k1, "polls") - num(&k0, "polls");
    report.push(format!(
        "## Scale: 1M concurrent flows (tcpreplay of 1M one-packet flows at top speed, {pps:.0} pps; flow map 1,048,576 entries; rules on)\n\n\
         | sent | counted | flows in table | map inserts refused | agent RSS before / after (VmHWM) | kernel map memory | poll time p50 / max (idle) | poll cycle max (drain + rules + store, during the replay) | cycles over 250 ms |\n|---|---|---|---|---|---|---|---|---|\n\
         | {sent} | {counted} | {flows} | {fails} | {rss0:.0} / {rss:.0} ({hwm:.0}) MiB | {maps:.0} MiB | {:.1} / {:.1} ms | {cycle_max:.1} ms | {late} of {polls_n} |\n",
        percentile(&polls, 50.0),
        polls.last().copied().unwrap_or(f64::NAN),
    ));
    eprintln!(
        "bench-live: scale: {}",
        report.last().map_or("", |s| s.as_str())
    );
    Ok(())
}

/// Floods with upstream mitigation on: how long from launch to the alert, and to the FlowSpec
/// rule in the upstream router's RIB; beside it, when installed, FastNetMon on the same
/// gateway and the same floods, to its blackhole route in the same RIB.
fn upstream(sensor: &Path, runs: usize, dir: &Path, report: &mut Vec<String>) -> Result<()> {
    if !lab::upstream::available() {
        report.push("## Upstream mitigation: skipped (gobgpd or FRR missing)\n".into());
        return Ok(());
    }
    lab::upstream::start(dir)?;
    let config = dir.join("upstream.toml");
    // No RTBH of the sensor's here: a blackhole route of a victim is FastNetMon's.
    fs::write(&config, lab::upstream::sensor_config(true, 1000, 0))?;
    let s = start_sensor(
        sensor,
        dir,
        "upstream",
        &[
            "--config",
            config.to_str().context("config path is not UTF-8")?,
        ],
    )?;
    let peer = lab::upstream::have_fastnetmon();
    if peer {
        lab::upstream::start_fastnetmon(dir, 1)?;
    }
    let session = Instant::now();
    while !lab::http(
        GW,
        crate::live::API_PORT,
        "GET",
        "/api/upstream",
        Some(TOKEN),
        None,
    )
    .is_some_and(|(_, b)| b.contains("\"established\":true"))
    {
        if session.elapsed() > Duration::from_secs(60) {
            bail!("the lab's BGP session did not come up within 60 s");
        }
        thread::sleep(Duration::from_millis(200));
    }
    let tools = dir.join("upstream-tools.log");
    report.push(format!(
        "## Upstream mitigation (launch -> alert on /api/alerts; launch -> the sensor's FlowSpec rule, and FastNetMon's blackhole route, in the upstream's RIB; {runs} runs per kind; gobgpd + FRR bgpd)\n\n\
         | attack | sensor: announced | alert p50 ms | RIB p50 ms | RIB p99 ms | RIB - alert max ms | FastNetMon: announced | RIB p50 ms | RIB p99 ms | p50 ratio |\n|---|---|---|---|---|---|---|---|---|---|"
    ));
    let kinds = [
        Kind::SynFlood,
        Kind::UdpFlood,
        Kind::IcmpFlood,
        Kind::Ddos,
        Kind::SpoofedFlood,
    ];
    for (k, kind) in kinds.into_iter().enumerate() {
        let (mut alert, mut rib, mut gap, mut fnm) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for r in 0..runs {
            // Fresh pairs from the top of the alias range (the other parts use the bottom).
            let i = (99 - (k * runs + r) % 60) as u8;
            let t = Target {
                src: lab::attacker_alias(i),
                victim: lab::victim_alias(i),
            };
            let flowspec = format!("Destination Address {}/32", t.victim);
            let host_route = format!("show bgp ipv4 unicast {}/32", t.victim);
            let started = Instant::now();
            let mut running = attack::launch(kind, t, &tools)?;
            let query = format!("&kind={}", kind.alert());
            let ms = || Some(started.elapsed().as_secs_f64() * 1000.0);
            let (mut a_ms, mut r_ms, mut f_ms) = (None, None, None);
            while started.elapsed() < Duration::from_secs(20)
                && (a_ms.is_none() || r_ms.is_none() || (peer && f_ms.is_none()))
            {
                if a_ms.is_none() && s.alerts(&query).iter().any(|a| matches(a, kind, t)) {
                    a_ms = ms();
                }
                if r_ms.is_none()
                    && lab::upstream::show(dir, "show bgp ipv4 flowspec detail").contains(&flowspec)
                {
                    r_ms = ms();
                }
                if peer
                    && f_ms.is_none()
                    && lab::upstream::show(dir, &host_route).contains("192.0.2.1")
                {
                    f_ms = ms();
                }
                thread::sleep(Duration::from_millis(20));
            }
            running.stop();
            if let (Some(a), Some(r)) = (a_ms, r_ms) {
                alert.push(a);
                rib.push(r);
                gap.push(r - a);
            }
            fnm.extend(f_ms);
            thread::sleep(Duration::from_millis(700));
        }
        for v in [&mut alert, &mut rib, &mut gap, &mut fnm] {
            v.sort_by(f64::total_cmp);
        }
        let (f50, ours50) = (percentile(&fnm, 50.0), percentile(&rib, 50.0));
        let line = format!(
            "| {} | {}/{runs} | {:.0} | {:.0} | {:.0} | {:.0} | {} | {:.0} | {:.0} | {} |",
            kind.name(),
            rib.len(),
            percentile(&alert, 50.0),
            ours50,
            percentile(&rib, 99.0),
            gap.last().copied().unwrap_or(f64::NAN),
            if peer {
                format!("{}/{runs}", fnm.len())
            } else {
                "not installed".into()
            },
            f50,
            percentile(&fnm, 99.0),
            if fnm.is_empty() {
                "-".into()
            } else {
                format!("{:.1}x", f50 / ours50)
            },
        );
        eprintln!("bench-live: {line}");
        report.push(line);
    }
    report.push(String::new());
    drop(s);
    Ok(())
}
