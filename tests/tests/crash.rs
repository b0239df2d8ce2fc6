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

use sensor::kernel::KernelConfig;
use sensor_tests::{agent::xdp_on, load_or_skip, netns::VethPair};

/// target/debug/sensor beside the tests; where kernel tests must run, its absence fails.
fn sensor_bin(test: &str) -> Option<PathBuf> {
    let bin = std::env::current_exe()
        .ok()
        .and_then(|p| Some(p.parent()?.parent()?.join("sensor")))
        .filter(|p| p.is_file());
    if bin.is_none() {
        assert!(
            !sensor_tests::kernel_tests_required(),
            "target/debug/sensor missing (cargo xtask test builds it)"
        );
        sensor_tests::skip(test, "no sensor binary beside the tests");
    }
    bin
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
    let Some(bin) = sensor_bin("kill -9 under load") else {
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

/// A child killed (if still running) when the test ends, also by a failed assertion.
struct Killed(std::process::Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ignored = self.0.kill();
        let _ignored = self.0.wait();
    }
}

/// The capability bits of `pid` (`CapPrm`, `CapEff`, `CapBnd` from /proc).
fn cap_sets(pid: u32) -> [u64; 3] {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    let get = |k: &str| {
        s.lines()
            .find_map(|l| l.strip_prefix(k))
            .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
            .unwrap_or_else(|| panic!("{k} missing"))
    };
    [get("CapPrm:"), get("CapEff:"), get("CapBnd:")]
}

/// Started as root, `sensor run` keeps only what it uses (BPF, NET_ADMIN, PERFMON,
/// SYS_RESOURCE, NET_RAW) in its permitted, effective and bounding sets, and with those it
/// still attaches at start, detaches and attaches again from the API.
#[test]
fn sensor_run_keeps_only_the_capabilities_it_uses() {
    if load_or_skip("capabilities", KernelConfig::default()).is_none() {
        return;
    }
    let Some(bin) = sensor_bin("capabilities") else {
        return;
    };
    let lab = VethPair::create();
    let dir = std::env::temp_dir().join(format!("sensor-caps-{}", std::process::id()));
    let _ignored = std::fs::remove_dir_all(&dir);
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    let mut sensor = Killed(
        Command::new(&bin)
            .args([
                "run",
                "--iface",
                lab.local,
                "--listen",
                &format!("127.0.0.1:{port}"),
            ])
            .arg("--data-dir")
            .arg(&dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start sensor run"),
    );
    let addr: std::net::SocketAddr = ([127, 0, 0, 1], port).into();
    let up = (0..100).any(|_| {
        std::thread::sleep(Duration::from_millis(50));
        sensor_tests::try_http(addr, "GET", "/api/status", None, None).is_ok()
    });
    assert!(up, "the API did not come up");
    assert!(xdp_on(lab.local), "attached at start with the reduced sets");
    // BPF 39, PERFMON 38, SYS_RESOURCE 24, NET_ADMIN 12, NET_RAW 13.
    // What this (root) test process has of those: a container may lack some.
    let want: u64 = ((1 << 39) | (1 << 38) | (1 << 24) | (1 << 12) | (1 << 13))
        & cap_sets(std::process::id())[0];
    let [prm, eff, bnd] = cap_sets(sensor.0.id());
    assert_eq!(
        (prm, eff, bnd),
        (want, want, want),
        "permitted/effective/bounding {prm:#x}/{eff:#x}/{bnd:#x}, want {want:#x}"
    );
    let token = std::fs::read_to_string(dir.join("api-token")).expect("token");
    let body = format!("{{\"iface\": \"{}\"}}", lab.local);
    let control = |path: &str| {
        let (code, text) = sensor_tests::http(addr, "POST", path, Some(token.trim()), Some(&body));
        assert_eq!(code, 200, "{path}: {text}");
    };
    control("/api/capture/stop");
    assert!(!xdp_on(lab.local), "detached");
    control("/api/capture/start");
    assert!(xdp_on(lab.local), "attached again");
    // SAFETY: SIGTERM to our own child.
    unsafe { libc::kill(sensor.0.id() as i32, libc::SIGTERM) };
    let st = sensor.0.wait().expect("wait");
    assert!(st.success(), "clean stop: {st}");
    assert!(!xdp_on(lab.local), "XDP left after stop");
    std::fs::remove_dir_all(&dir).ok();
}

/// A mistyped interface is refused before anything is made: no data directory, no token
/// printed, a failing exit status and the interface named.
#[test]
fn a_missing_interface_is_refused_before_anything_is_created() {
    let Some(bin) = sensor_bin("missing interface") else {
        return;
    };
    let dir = std::env::temp_dir().join(format!("sensor-noiface-{}", std::process::id()));
    let _ignored = std::fs::remove_dir_all(&dir);
    let out = Command::new(&bin)
        .args(["run", "--iface", "missing0", "--data-dir"])
        .arg(&dir)
        .output()
        .expect("run the sensor");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(err.contains("\"missing0\" does not exist"), "{err}");
    assert!(!err.contains("token"), "a token was made: {err}");
    assert!(!dir.exists(), "the data directory was created");
    // Logs to a pipe carry no colour codes.
    assert!(
        !err.contains('\u{1b}'),
        "ANSI codes in piped output: {err:?}"
    );
}
