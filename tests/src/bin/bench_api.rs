//! `cargo xtask bench-api`: wrk against `/api/alerts?limit=100` on a database of 100k alerts
//! and 1M flows while ingest keeps writing, reporting requests/s and latency percentiles.

use std::{
    net::IpAddr,
    path::PathBuf,
    process::Command,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};
use sensor::{
    api::ApiState,
    record::{AlertKind, AlertRecord, DetectorKind, FlowRecord, Severity, rfc3339_us},
    sink::store::{Retention, Store, open_ro},
};

const ALERTS: u64 = 100_000;
const FLOWS: u64 = 1_000_000;
const T0: u64 = 1_700_000_000_000_000_000;

fn flow(i: u64) -> FlowRecord {
    let ts = T0 + i * 1_000_000;
    FlowRecord {
        src_ip: format!("10.{}.{}.{}", (i >> 16) & 255, (i >> 8) & 255, i & 255),
        dst_ip: "192.0.2.1".into(),
        src_port: (1024 + i % 60_000) as u16,
        dst_port: 443,
        proto: 6,
        family: "ipv4",
        packets_fwd: 10,
        packets_rev: 8,
        bytes_fwd: 1200,
        bytes_rev: 9000,
        first_seen: rfc3339_us(ts),
        last_seen: rfc3339_us(ts + 1_000_000),
        duration_s: 0.001,
        syn: 1,
        syn_ack: 1,
        fin: 2,
        rst: 0,
        psh: 4,
        ack_only: 6,
        echo_requests: 0,
        fragments: 0,
        min_len: 60,
        max_len: 1500,
        mean_len: 566.0,
        std_len: 400.0,
        mean_iat_us: Some(100.0),
        std_iat_us: Some(50.0),
        end: sensor::flow::EndReason::Idle,
        score: None,
        anomalous: None,
    }
}

fn alert(i: u64) -> AlertRecord {
    let ts = T0 + i * 10_000_000;
    AlertRecord {
        id: i,
        state: sensor::record::AlertState::Closed,
        merged_into: None,
        kind: [
            AlertKind::PortScan,
            AlertKind::SynFlood,
            AlertKind::HostSweep,
        ][(i % 3) as usize],
        severity: Severity::High,
        detector: DetectorKind::Rule,
        src_ip: Some(IpAddr::from([10, 0, (i >> 8) as u8, i as u8])),
        dst_ip: Some("192.0.2.1".parse().expect("ip")),
        first_seen: rfc3339_us(ts),
        last_seen: rfc3339_us(ts),
        count: i % 50 + 1,
        score: None,
        summary: String::new(),
        evidence: serde_json::json!({ "ports": 25, "sample_ports": [1, 2, 3, 4, 5, 6, 7, 8, 9, 10] }),
        rate_history: Vec::new(),
        pcap: None,
        direction: None,
        hostgroup: None,
        remote: None,
    }
}

fn main() -> Result<()> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/bench/api");
    std::fs::create_dir_all(&dir)?;
    let db = dir.join("sensor.db");
    let have = |table: &str| -> u64 {
        open_ro(&db)
            .ok()
            .and_then(|c| {
                c.query_row(&format!("SELECT count(*) FROM {table}"), [], |r| {
                    r.get::<_, i64>(0)
                })
                .ok()
            })
            .unwrap_or(0) as u64
    };
    if have("alerts") < ALERTS || have("flows") < FLOWS {
        let _ignored = std::fs::remove_file(&db);
        let t = Instant::now();
        let store = Store::open(&db, Retention::default())?;
        for i in 0..FLOWS {
            store.flow(flow(i), T0 + i * 1_000_000, true)?;
        }
        for i in 0..ALERTS {
            let a = alert(i);
            store.alert(a, T0 + i * 10_000_000)?;
        }
        store.sync()?;
        println!(
            "built {} with {FLOWS} flows and {ALERTS} alerts in {:.1} s",
            db.display(),
            t.elapsed().as_secs_f64()
        );
    }
    println!(
        "database: {} flows, {} alerts",
        have("flows"),
        have("alerts")
    );

    // Ingest keeps running during the measurement, as on a live sensor.
    let stop = Arc::new(AtomicBool::new(false));
    let written = Arc::new(AtomicU64::new(0));
    let ingest = {
        let (stop, written, db) = (Arc::clone(&stop), Arc::clone(&written), db.clone());
        std::thread::spawn(move || -> Result<()> {
            let store = Store::open(&db, Retention::default())?;
            let mut i = FLOWS;
            while !stop.load(Ordering::Relaxed) {
                for _ in 0..200 {
                    store.flow(flow(i), T0 + i * 1_000_000, false)?;
                    i += 1;
                }
                store.alert(alert(i), T0 + i * 1_000_000)?;
                written.fetch_add(201, Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(100));
            }
            store.sync()?;
            Ok(())
        })
    };

    let state = Arc::new(ApiState::read_only(
        db.clone(),
        dir.clone(),
        "bench-token-0123456789abcdef".into(),
    ));
    let server = sensor_tests::TestServer::start(state);
    let url = format!("http://{}/api/alerts?limit=100", server.addr);
    let mut results = Vec::new();
    for (threads, conns) in [(1, 1), (2, 8)] {
        let out = Command::new("wrk")
            .args([
                "-t",
                &threads.to_string(),
                "-c",
                &conns.to_string(),
                "-d",
                "10s",
                "--latency",
                &url,
            ])
            .output()
            .context("running wrk (cargo xtask setup installs it)")?;
        if !out.status.success() {
            bail!("wrk failed: {}", String::from_utf8_lossy(&out.stderr));
        }
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let field = |label: &str| -> String {
            text.lines()
                .find(|l| l.trim_start().starts_with(label))
                .and_then(|l| l.split_whitespace().nth(1))
                .unwrap_or("?")
                .to_owned()
        };
        let (rps, p50, p99) = (field("Requests/sec:"), field("50%"), field("99%"));
        let non2xx = text
            .lines()
            .find(|l| l.contains("Non-2xx"))
            .unwrap_or("")
            .trim()
            .to_owned();
        println!("wrk -t{threads} -c{conns}: {rps} requests/s, p50 {p50}, p99 {p99} {non2xx}");
        results.push((conns, rps, p99));
    }
    stop.store(true, Ordering::Relaxed);
    ingest
        .join()
        .map_err(|_| anyhow::anyhow!("ingest thread panicked"))??;
    drop(server);
    println!(
        "ingest during the runs: {} rows",
        written.load(Ordering::Relaxed)
    );
    for (conns, rps, p99) in results {
        println!("api: connections={conns} rps={rps} p99={p99}");
    }
    Ok(())
}
