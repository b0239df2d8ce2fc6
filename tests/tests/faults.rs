//! Storage faults under a live sensor: the data directory fills up, the database is locked by
//! another process, the data directory is read-only from the start. (Linux refuses to remount
//! a file system read-only while the sensor holds files open for writing, so a directory that
//! turns read-only under a running sensor is the start case plus the write failures the
//! full-disk case exercises.) Each time
//! detection and the API keep running (the alert of a real scan is raised and counted in
//! memory, `/api/status` says what is wrong), rows wait in memory, and once the fault clears
//! they are written: the scan's alert is in the database, nothing dropped.

use std::{
    io::Write as _,
    path::PathBuf,
    process::{Command, Stdio},
    time::Duration,
};

use sensor::{config::Config, kernel::KernelConfig, source::attached::CaptureMode};
use sensor_tests::{
    agent::Agent,
    get_json, http, load_or_skip,
    netns::{VethPair, sh},
};
use serde_json::Value;

/// A small tmpfs at a fresh directory, unmounted (and the directory removed) on drop.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(name: &str, size: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("sensor-fault-{}-{name}", std::process::id()));
        let _ignored = Command::new("umount").arg(&dir).status();
        let _ignored = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("mount point");
        let d = dir.to_str().expect("utf-8 path");
        sh(&[
            "mount",
            "-t",
            "tmpfs",
            "-o",
            &format!("size={size},mode=0700"),
            "tmpfs",
            d,
        ]);
        Self(dir)
    }

    fn remount(&self, opt: &str) {
        // Only before the sensor opens files there (see the module comment).
        let d = self.0.to_str().expect("utf-8 path");
        sh(&["mount", "-o", &format!("remount,{opt}"), d]);
    }

    /// Writes a file until the file system is full.
    fn fill(&self) -> PathBuf {
        let p = self.0.join("filler");
        let mut f = std::fs::File::create(&p).expect("filler");
        let chunk = vec![0u8; 64 * 1024];
        while f.write_all(&chunk).is_ok() {}
        let _ignored = f.sync_all();
        p
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ignored = Command::new("umount").arg("-l").arg(&self.0).status();
        let _ignored = std::fs::remove_dir(&self.0);
    }
}

fn have_tools() -> bool {
    sensor_tests::netns::have_nmap("storage faults")
}

fn syn_scan(lab: &VethPair) {
    lab.syn_scan("1-200");
}

/// The live agent on `lab`'s veth with its data directory on `fs`.
fn agent_on(fs: &Tmpfs, lab: &VethPair) -> Agent {
    Agent::start_in(
        fs.0.clone(),
        vec![lab.local.to_owned()],
        CaptureMode::Auto,
        None,
        Config::default(),
    )
}

/// Polls `/api/status` until `pred` holds (10 s at most).
fn status_until(agent: &Agent, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
    let mut last = Value::Null;
    for _ in 0..100 {
        last = get_json(agent.addr, "/api/status");
        if pred(&last) {
            return last;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("{what}: not within 10 s; last status {last}");
}

fn writes(s: &Value) -> &Value {
    &s["database_writes"]
}

fn raised(s: &Value) -> u64 {
    s["kernel"]["alerts_raised"].as_u64().unwrap_or(0)
}

/// The scan's alert in the database, read back through the API (10 s at most).
fn stored_scan_alert(agent: &Agent, lab: &VethPair) -> Value {
    for _ in 0..100 {
        let (code, body) = http(agent.addr, "GET", "/api/alerts?kind=port_scan", None, None);
        if code == 200 {
            let v: Value = serde_json::from_str(&body).expect("alerts JSON");
            if let Some(a) = v["items"].as_array().and_then(|i| i.first()) {
                assert_eq!(a["src_ip"], lab.peer_addr.to_string(), "{a}");
                return a.clone();
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("the scan's alert never reached the database");
}

/// A fault that strikes while the sensor runs: `inject` breaks storage, the scan runs,
/// `clear` repairs it; the status must name one of `reasons`.
fn fault_while_running(
    name: &str,
    reasons: &[&str],
    inject: impl FnOnce(&Tmpfs) -> Box<dyn FnOnce()>,
) {
    if load_or_skip(name, KernelConfig::default()).is_none() || !have_tools() {
        return;
    }
    let lab = VethPair::create();
    let fs = Tmpfs::mount(name, "16m");
    let mut agent = agent_on(&fs, &lab);
    status_until(&agent, "healthy writes at start", |s| {
        writes(s)["ok"] == true
    });
    let clear = inject(&fs);
    syn_scan(&lab);
    // Detection goes on: the alert is raised in memory; its rows cannot be written.
    let s = status_until(&agent, "the write failure reported", |s| {
        writes(s)["ok"] == false && raised(s) >= 1 && writes(s)["pending_rows"].as_u64() > Some(0)
    });
    let err = writes(&s)["error"].as_str().unwrap_or_default().to_owned();
    eprintln!("{name}: while failing: {}", writes(&s));
    assert!(
        reasons.iter().any(|r| err.contains(r)),
        "status names the cause ({reasons:?}): {s}"
    );
    // The API keeps answering: status and metrics always, reads with data or a clear 503.
    let (code, body) = http(agent.addr, "GET", "/metrics", None, None);
    assert_eq!(code, 200, "{body}");
    assert!(body.contains("sensor_db_failing 1"), "{body}");
    assert!(
        body.contains("sensor_alerts_raised_total 1") || raised(&s) > 1,
        "{body}"
    );
    let (code, body) = http(agent.addr, "GET", "/api/alerts", None, None);
    assert!(
        code == 200 || code == 503,
        "reads answer 200 or 503: {code} {body}"
    );
    if code == 503 {
        assert!(body.contains("\"error\""), "{body}");
    }
    // Held for a while: retries keep failing, rows keep waiting, nothing is dropped.
    std::thread::sleep(Duration::from_secs(3));
    let s = get_json(agent.addr, "/api/status");
    eprintln!("{name}: 3 s later: {}", writes(&s));
    assert!(
        writes(&s)["failed_commits"].as_u64() >= Some(2),
        "retried: {s}"
    );
    assert_eq!(writes(&s)["dropped_rows"], 0, "{s}");
    clear();
    let s = status_until(&agent, "writes recovered", |s| writes(s)["ok"] == true);
    eprintln!("{name}: recovered: {}", writes(&s));
    assert_eq!(writes(&s)["pending_rows"], 0, "{s}");
    assert_eq!(writes(&s)["dropped_rows"], 0, "nothing lost: {s}");
    stored_scan_alert(&agent, &lab);
    agent.join().expect("clean stop after the fault");
}

#[test]
fn a_full_disk_holds_rows_in_memory_until_space_returns() {
    fault_while_running("full", &["full"], |fs| {
        let filler = fs.fill();
        Box::new(move || std::fs::remove_file(&filler).expect("free the space"))
    });
}

#[test]
fn a_database_locked_by_another_process_is_retried_until_released() {
    fault_while_running("locked", &["locked"], |fs| {
        let db = fs.0.join("sensor.db");
        // Another process (Python's sqlite3) holds the write lock until its stdin closes.
        let mut holder = Command::new("python3")
            .args([
                "-c",
                "import sqlite3, sys\n\
                 c = sqlite3.connect(sys.argv[1], isolation_level=None)\n\
                 c.execute('BEGIN EXCLUSIVE')\n\
                 print('locked', flush=True)\n\
                 sys.stdin.read()\n",
            ])
            .arg(&db)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("python3");
        let mut line = String::new();
        std::io::BufRead::read_line(
            &mut std::io::BufReader::new(holder.stdout.take().expect("stdout")),
            &mut line,
        )
        .expect("lock holder output");
        assert_eq!(line.trim(), "locked", "the other process holds the lock");
        Box::new(move || {
            drop(holder.stdin.take());
            let _ignored = holder.wait();
        })
    });
}

#[test]
fn a_read_only_data_directory_at_start_does_not_stop_detection() {
    let name = "ro-start";
    if load_or_skip(name, KernelConfig::default()).is_none() || !have_tools() {
        return;
    }
    let lab = VethPair::create();
    let fs = Tmpfs::mount(name, "16m");
    fs.remount("ro");
    let mut agent = agent_on(&fs, &lab);
    let s = status_until(&agent, "the failure at start reported", |s| {
        writes(s)["ok"] == false
    });
    let err = writes(&s)["error"].as_str().unwrap_or_default().to_owned();
    assert!(err.contains("Read-only file system"), "{s}");
    syn_scan(&lab);
    status_until(&agent, "the scan detected with no database", |s| {
        raised(s) >= 1
    });
    fs.remount("rw");
    let s = status_until(&agent, "the database created once writable", |s| {
        writes(s)["ok"] == true
    });
    assert_eq!(writes(&s)["dropped_rows"], 0, "{s}");
    let alert = stored_scan_alert(&agent, &lab);
    // Filed under the live session the writer created once it could.
    let c = sensor::sink::store::open_ro(&fs.0.join("sensor.db")).expect("database");
    let (sessions, kind): (i64, String) = c
        .query_row(
            "SELECT count(*), max(kind) FROM capture_sessions",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .expect("sessions");
    assert_eq!((sessions, kind.as_str()), (1, "live"), "{alert}");
    let orphans: i64 = c
        .query_row(
            "SELECT count(*) FROM alerts WHERE session_id IS NULL",
            [],
            |r| r.get(0),
        )
        .expect("alerts");
    assert_eq!(orphans, 0, "every alert belongs to the session");
    drop(c);
    agent.join().expect("clean stop");
}
