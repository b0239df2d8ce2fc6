//! The lab end-to-end test of mitigation (`--mitigate`): real floods between lab namespaces,
//! what reaches the victim measured on its own interface, benign clients fetching pages
//! meanwhile, entries expiring on time.
//!
//! 1. A single-source SYN flood (hping3): its alert blocks the attacker; from 2 s after the
//!    alert, the victim's interface receives almost nothing of it while the kernel counts the
//!    drops, and a client still fetches a page from the web server. Once the flood stops and
//!    the alert closes, the entry expires at its TTL (the audit log shows when).
//! 2. A SYN flood from random spoofed sources: its DDoS alert names no source, so the victim
//!    is protected by a SYN rate limit instead; what reaches it falls to about that rate.
//! 3. A block added through the API with a short TTL is gone on time, with its audit rows.

use std::{
    io::{Read as _, Write as _},
    net::{SocketAddr, TcpStream},
    path::Path,
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result};
use serde_json::{Value, json};

use crate::{
    lab::{
        self, CLIENT1, GW, WEB,
        attack::{self, Kind, Target},
        in_ns, traffic,
    },
    live::{API_PORT, Cases, LabGuard, Sensor, matches},
};

const TOKEN: &str = "lab-mitigation-token-0123456789";
/// Entry lifetime for the test: long enough to measure under, short enough to see expire.
const TTL_S: u64 = 8;
/// The rate limit the sensor is configured with, and its burst.
const LIMIT_PPS: u64 = 1000;
const BURST: u64 = 200;

/// Packets the victim host's interface received so far.
fn victim_rx() -> Result<u64> {
    let out = in_ns(WEB.ns, "cat")
        .arg(format!(
            "/sys/class/net/{}/statistics/rx_packets",
            lab::HOST_IF
        ))
        .output()
        .context("reading the victim's interface counters")?;
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .context("parsing rx_packets")
}

/// One counter from the sensor's `/metrics` (0 when absent).
fn metric(name: &str) -> u64 {
    let text = lab::http_get(GW, API_PORT, "/metrics").unwrap_or_default();
    text.lines()
        .find_map(|l| {
            l.strip_prefix(name)
                .and_then(|r| r.strip_prefix(' '))
                .and_then(|v| v.trim().parse::<f64>().ok())
        })
        .map_or(0, |v| v as u64)
}

fn blocklist() -> Value {
    lab::http(GW, API_PORT, "GET", "/api/blocklist", Some(TOKEN), None)
        .and_then(|(c, b)| (c == 200).then(|| serde_json::from_str(&b).ok()).flatten())
        .unwrap_or(Value::Null)
}

fn entry(list: &Value, target: &str) -> Option<Value> {
    list["entries"]
        .as_array()?
        .iter()
        .find(|e| e["target"] == target)
        .cloned()
}

/// A page from the web server, fetched by a benign client across the gateway (a new TCP
/// connection each time: what a flood must not stop).
fn benign_fetch() -> bool {
    let addr = SocketAddr::from((WEB.addr, 80));
    lab::with_ns(CLIENT1.ns, move || -> std::io::Result<bool> {
        let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(3))?;
        s.set_read_timeout(Some(Duration::from_secs(3)))?;
        s.write_all(b"GET / HTTP/1.0\r\nHost: web\r\n\r\n")?;
        let mut buf = Vec::new();
        s.read_to_end(&mut buf)?;
        Ok(buf.starts_with(b"HTTP/1."))
    })
    .ok()
    .and_then(Result::ok)
    .unwrap_or(false)
}

/// Waits until `f` gives something, at most `limit`.
fn wait_for<T>(limit: Duration, mut f: impl FnMut() -> Option<T>) -> Option<(T, Instant)> {
    let end = Instant::now() + limit;
    while Instant::now() < end {
        if let Some(v) = f() {
            return Some((v, Instant::now()));
        }
        thread::sleep(Duration::from_millis(50));
    }
    None
}

/// (victim packets/s, dropped packets/s) over one second.
fn rates(dropped_metric: &str) -> Result<(f64, f64)> {
    let (rx0, d0, t0) = (victim_rx()?, metric(dropped_metric), Instant::now());
    thread::sleep(Duration::from_secs(1));
    let (rx1, d1) = (victim_rx()?, metric(dropped_metric));
    let secs = t0.elapsed().as_secs_f64();
    Ok((
        rx1.saturating_sub(rx0) as f64 / secs,
        d1.saturating_sub(d0) as f64 / secs,
    ))
}

fn unix_s(ts_ns: &Value) -> Option<f64> {
    ts_ns.as_i64().map(|t| t as f64 / 1e9)
}

/// When `target`'s entry started acting for the last time (block, renew or rate_limit row)
/// and when it expired, from the audit log (seconds).
fn lifetime(list: &Value, target: &str) -> Option<(f64, f64)> {
    let audit = list["audit"].as_array()?;
    let rows: Vec<&Value> = audit.iter().filter(|a| a["target"] == target).collect();
    let expired = rows.iter().find(|a| a["action"] == "expire")?;
    let end = unix_s(&expired["ts_ns"])?;
    let start = rows
        .iter()
        .filter(|a| matches!(a["action"].as_str(), Some("block" | "renew" | "rate_limit")))
        .filter_map(|a| unix_s(&a["ts_ns"]))
        .filter(|&t| t <= end)
        .fold(f64::MIN, f64::max);
    (start > f64::MIN).then_some((start, end))
}

/// Runs the mitigation cases on a lab of their own.
pub fn run(sensor: &Path) -> Result<Cases> {
    let dir = lab::work_dir("e2e-mitigation")?;
    let data = dir.join("data");
    let _ignored = std::fs::remove_dir_all(&data);
    std::fs::create_dir_all(&data)?;
    let log = dir.join("attacks.log");
    let _ignored = std::fs::remove_file(&log);
    let config = dir.join("sensor.toml");
    // Alerts close 3 s after the attack stops, so expiry is reached within the test.
    std::fs::write(
        &config,
        format!(
            "[rules]\nquiet_close_s = 3\n[mitigation]\nrate_limit_pps = {LIMIT_PPS}\nrate_limit_burst = {BURST}\n"
        ),
    )?;
    let _guard = LabGuard::up()?;
    traffic::start(&dir)?;
    let ttl = TTL_S.to_string();
    let mut s = Sensor::start(
        sensor,
        &data,
        &[
            "--token",
            TOKEN,
            "--mitigate",
            "syn_flood,ddos",
            "--block-ttl",
            &ttl,
            "--config",
            config.to_str().context("config path")?,
        ],
        Some(&dir.join("sensor.log")),
    )?;
    let mut cases = Cases::new();
    thread::sleep(Duration::from_secs(3));

    // 1. Single-source SYN flood: the attacker is blocked.
    let t = Target {
        src: lab::attacker_alias(0),
        victim: lab::victim_alias(0),
    };
    let target = format!("{}/32", t.src);
    let started = Instant::now();
    let mut flood = attack::launch(Kind::SynFlood, t, &log)?;
    let alert = wait_for(Duration::from_secs(20), || {
        s.alerts("&kind=syn_flood")
            .into_iter()
            .find(|a| matches(a, Kind::SynFlood, t))
    });
    let blocked = alert
        .as_ref()
        .and_then(|_| wait_for(Duration::from_secs(5), || entry(&blocklist(), &target)));
    let (victim_pps, dropped_pps, fetched) = match &alert {
        Some((_, at)) => {
            thread::sleep((*at + Duration::from_secs(2)).saturating_duration_since(Instant::now()));
            let (v, d) = rates("sensor_xdp_blocked_packets_total")?;
            (v, d, benign_fetch())
        }
        None => (0.0, 0.0, false),
    };
    flood.stop();
    let stopped = Instant::now();
    let reached = victim_pps / (victim_pps + dropped_pps).max(1.0);
    cases.push((
        "syn flood: attacker blocked, victim traffic near zero within 2 s of the alert".into(),
        blocked.is_some() && dropped_pps >= 1000.0 && reached <= 0.05,
        format!(
            "alert after {}, entry {}: from alert+2 s the victim received {victim_pps:.0} \
             packets/s while XDP dropped {dropped_pps:.0}/s ({:.1}% reached it)",
            alert.as_ref().map_or("none".into(), |(_, at)| format!(
                "{:.2} s",
                at.duration_since(started).as_secs_f64()
            )),
            blocked
                .as_ref()
                .map_or("never listed".into(), |(e, _)| format!(
                    "{} (origin {}, alert {})",
                    e["target"], e["origin"], e["alert_id"]
                )),
            100.0 * reached
        ),
    ));
    cases.push((
        "syn flood: benign clients keep working while the attacker is blocked".into(),
        fetched,
        format!("page fetched across the gateway during mitigation: {fetched}"),
    ));

    // Expiry: the flood stopped, the alert closes after 3 quiet seconds, the entry ends at
    // its TTL (renewed once if the alert was still open at the first expiry).
    // Gone from the live list, and its expiry written to the audit log (the store commits
    // within 100 ms).
    let gone = wait_for(Duration::from_secs(3 * TTL_S + 10), || {
        let l = blocklist();
        (entry(&l, &target).is_none() && lifetime(&l, &target).is_some()).then_some(l)
    });
    let life = gone.as_ref().and_then(|(l, _)| lifetime(l, &target));
    let on_time = life.is_some_and(|(a, b)| {
        let lived = b - a;
        lived >= TTL_S as f64 - 0.5 && lived <= TTL_S as f64 + 2.0
    });
    cases.push((
        format!("syn flood: the block expires on time ({TTL_S} s TTL) once the attack is over"),
        on_time,
        match (&gone, life) {
            (Some((_, at)), Some((a, b))) => format!(
                "entry lived {:.2} s after its last (re)start; gone {:.1} s after the flood stopped",
                b - a,
                at.duration_since(stopped).as_secs_f64()
            ),
            _ => format!(
                "still listed, or no expire row, {} s after the flood stopped",
                3 * TTL_S + 10
            ),
        },
    ));

    // 2. Spoofed SYN flood: no single source, so a SYN rate limit protects the victim.
    let t2 = Target {
        src: lab::attacker_alias(1),
        victim: lab::victim_alias(1),
    };
    let target2 = format!("rate:{}/tcp", t2.victim);
    let started = Instant::now();
    let mut flood = attack::launch(Kind::SpoofedFlood, t2, &log)?;
    let alert = wait_for(Duration::from_secs(20), || {
        s.alerts("&kind=ddos")
            .into_iter()
            .find(|a| matches(a, Kind::SpoofedFlood, t2))
    });
    let limited = alert
        .as_ref()
        .and_then(|_| wait_for(Duration::from_secs(5), || entry(&blocklist(), &target2)));
    let (victim_pps, dropped_pps) = match &alert {
        Some((_, at)) => {
            thread::sleep((*at + Duration::from_secs(2)).saturating_duration_since(Instant::now()));
            rates("sensor_xdp_rate_limited_packets_total")?
        }
        None => (0.0, 0.0),
    };
    flood.stop();
    // What may reach the victim: the limit, its burst, and the lab's benign traffic to the
    // web host (a few hundred packets/s at most).
    let allowed = (LIMIT_PPS + BURST + 500) as f64;
    cases.push((
        "spoofed flood: the victim is rate-limited, not millions of sources blocked".into(),
        limited.is_some() && victim_pps <= allowed && dropped_pps >= 2.0 * LIMIT_PPS as f64,
        format!(
            "alert after {}, entry {}: from alert+2 s the victim received {victim_pps:.0} \
             packets/s (limit {LIMIT_PPS} SYN/s) while XDP dropped {dropped_pps:.0}/s; \
             blocked sources: {}",
            alert.as_ref().map_or("none".into(), |(_, at)| format!(
                "{:.2} s",
                at.duration_since(started).as_secs_f64()
            )),
            limited
                .as_ref()
                .map_or("never listed".into(), |(e, _)| e["target"].to_string()),
            blocklist()["entries"]
                .as_array()
                .map_or(0, |e| e.iter().filter(|e| e["kind"] == "block").count())
        ),
    ));

    // 3. By hand: add a block with a 3 s TTL, see it refused for this host's own address,
    // listed, then gone on time.
    let own = lab::http(
        GW,
        API_PORT,
        "POST",
        "/api/blocklist",
        Some(TOKEN),
        Some(&json!({"prefix": "10.77.0.1", "ttl_s": 60}).to_string()),
    );
    let added = lab::http(
        GW,
        API_PORT,
        "POST",
        "/api/blocklist",
        Some(TOKEN),
        Some(&json!({"prefix": "203.0.113.0/24", "ttl_s": 3, "reason": "e2e"}).to_string()),
    );
    let listed = entry(&blocklist(), "203.0.113.0/24").is_some();
    let gone = wait_for(Duration::from_secs(10), || {
        let l = blocklist();
        (entry(&l, "203.0.113.0/24").is_none() && lifetime(&l, "203.0.113.0/24").is_some())
            .then_some(l)
    });
    let life = gone
        .as_ref()
        .and_then(|(l, _)| lifetime(l, "203.0.113.0/24"));
    cases.push((
        "API: block with TTL listed then expired on time; the gateway's own address refused".into(),
        own.as_ref().is_some_and(|(c, _)| *c == 403)
            && added.as_ref().is_some_and(|(c, _)| *c == 201)
            && listed
            && life.is_some_and(|(a, b)| (2.5..=5.0).contains(&(b - a))),
        format!(
            "own address: {:?}; add: {:?}; listed {listed}; lived {}",
            own.map(|(c, _)| c),
            added.map(|(c, _)| c),
            life.map_or("?".into(), |(a, b)| format!("{:.2} s", b - a))
        ),
    ));

    let status = s.stop();
    cases.push((
        "mitigating sensor stops cleanly".into(),
        status.is_some_and(|st| st.success()),
        format!("exit {status:?}"),
    ));
    Ok(cases)
}
