//! `kill -9` during heavy live ingest, 20 times over the same data directory: the sensor
//! binary runs on a veth of a private namespace while hping3 floods it; once an alert is
//! committed the process is killed without warning. After each kill the database opens,
//! `PRAGMA integrity_check` is ok, no committed alert is lost, no XDP program is left on the
//! interface, and the next start on the same directory works.

use std::{
    path::PathBuf,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use sensor::source::xdp::KernelConfig;
use sensor_tests::{agent::xdp_on, load_or_skip, netns::VethPair};

fn sensor_bin() -> Option<PathBuf> {
    std::env::current_exe()
        .ok()
        .and_then(|p| Some(p.parent()?.parent()?.join("sensor")))
        .filter(|p| p.is_file())
}

/// (alerts committed, integrity_check answer) of the database, read-only.
fn db_state(db: &std::path::Path) -> (i64, String) {
    let c = sensor::sink::store::open_ro(db).expect("the database opens after a kill");
    let n: i64 = c
        .query_row("SELECT count(*) FROM alerts", [], |r| r.get(0))
        .expect("count alerts");
    let ok: String = c
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .expect("integrity_check");
    (n, ok)
}

#[test]
fn kill_9_during_ingest_loses_no_committed_alert_and_leaves_no_xdp() {
    if load_or_skip("kill -9 under load", KernelConfig::default()).is_none() {
        return;
    }
    let Some(bin) = sensor_bin() else {
        assert!(
            !sensor_tests::kernel_tests_required(),
            "target/debug/sensor missing (cargo xtask test builds it)"
        );
        sensor_tests::skip("kill -9 under load", "no sensor binary beside the tests");
        return;
    };
    if !std::path::Path::new("/usr/sbin/hping3").exists() {
        assert!(
            !sensor_tests::kernel_tests_required(),
            "hping3 missing (cargo xtask setup installs it)"
        );
        sensor_tests::skip("kill -9 under load", "no hping3");
        return;
    }
    let lab = VethPair::create();
    let dir = std::env::temp_dir().join(format!("sensor-crash-{}", std::process::id()));
    let _ignored = std::fs::remove_dir_all(&dir);
    let db = dir.join("sensor.db");
    let target = lab.local_addr.to_string();
    let mut committed = 0i64;
    for round in 0..20 {
        let mut sensor = Command::new(&bin)
            .args([
                "run",
                "--iface",
                lab.local,
                "--listen",
                "127.0.0.1:0",
                "--poll-ms",
                "100",
            ])
            .arg("--data-dir")
            .arg(&dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start sensor run");
        let mut flood = Command::new("ip")
            .args([
                "netns",
                "exec",
                &lab.peer.name,
                "hping3",
                "-S",
                "-p",
                "80",
                "--flood",
            ])
            .arg(&target)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start hping3");
        // Heavy ingest until the store holds one more alert than before (or 15 s).
        let t = Instant::now();
        let mut now = committed;
        while t.elapsed() < Duration::from_secs(15) {
            if db.exists()
                && let Ok(c) = sensor::sink::store::open_ro(&db)
                && let Ok(n) =
                    c.query_row("SELECT count(*) FROM alerts", [], |r| r.get::<_, i64>(0))
                && n > committed
            {
                now = n;
                break;
            }
            if let Some(st) = sensor.try_wait().expect("wait") {
                panic!("round {round}: sensor exited on its own: {st}");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        assert!(
            now > committed,
            "round {round}: no new alert committed under the flood"
        );
        // Mid-ingest, without warning.
        sensor.kill().expect("kill -9");
        let _ignored = sensor.wait();
        let _ignored = flood.kill();
        let _ignored = flood.wait();
        let (n, ok) = db_state(&db);
        assert_eq!(ok, "ok", "round {round}: integrity_check");
        assert!(
            n >= now,
            "round {round}: {now} alerts were committed, {n} are there"
        );
        committed = n;
        assert!(
            !xdp_on(lab.local),
            "round {round}: an XDP program is left on {}",
            lab.local
        );
    }
    eprintln!("kill -9 x20 under a SYN flood: {committed} alerts kept, integrity ok every time");
    std::fs::remove_dir_all(&dir).ok();
}
