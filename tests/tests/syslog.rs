//! Syslog output against a real receiver: rsyslog (Debian's), started by the test on loopback
//! with UDP, TCP and a local socket input, writing every message it parsed as JSON of its
//! RFC 5424 fields. Alerts from a real replay and crafted ones with characters structured
//! data must escape; a dead collector costs counters, not detection.

use std::{
    net::{IpAddr, Ipv4Addr},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::atomic::Ordering,
    time::Duration,
};

use sensor::{
    config::Config,
    drive::replay::{ReplayOptions, replay},
    record::{AlertKind, AlertRecord, DetectorKind, Severity},
    sink::{
        AlertSink,
        syslog::{Syslog, SyslogConfig},
    },
};
use serde_json::Value;

/// rsyslogd in the foreground, stopped on drop.
struct Rsyslog {
    child: Child,
    dir: PathBuf,
    udp: u16,
    tcp: u16,
}

impl Rsyslog {
    fn start(name: &str) -> Option<Self> {
        if !Path::new("/usr/sbin/rsyslogd").exists() {
            assert!(
                !sensor_tests::kernel_tests_required(),
                "rsyslog missing (cargo xtask setup installs it)"
            );
            sensor_tests::skip("syslog against rsyslog", "no rsyslogd");
            return None;
        }
        let dir =
            std::env::temp_dir().join(format!("sensor-rsyslog-{}-{name}", std::process::id()));
        let _ignored = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("dir");
        let free = || {
            std::net::TcpListener::bind("127.0.0.1:0")
                .and_then(|l| l.local_addr())
                .expect("free port")
                .port()
        };
        let (udp, tcp) = (free(), free());
        let d = dir.display();
        let fields = [
            ("input", "inputname"),
            ("version", "protocol-version"),
            ("facility", "syslogfacility"),
            ("severity", "syslogseverity"),
            ("hostname", "hostname"),
            ("app", "app-name"),
            ("procid", "procid"),
            ("msgid", "msgid"),
            ("sd", "structured-data"),
            ("msg", "msg"),
        ]
        .iter()
        .map(|(o, n)| format!("property(outname=\"{o}\" name=\"{n}\" format=\"jsonf\")\n"))
        .collect::<String>();
        let conf = format!(
            "global(workDirectory=\"{d}\")\n\
             module(load=\"imudp\")\nmodule(load=\"imtcp\")\nmodule(load=\"imuxsock\" SysSock.Use=\"off\")\n\
             input(type=\"imudp\" address=\"127.0.0.1\" port=\"{udp}\")\n\
             input(type=\"imtcp\" address=\"127.0.0.1\" port=\"{tcp}\")\n\
             input(type=\"imuxsock\" Socket=\"{d}/log.sock\" UseSpecialParser=\"off\" ParseHostname=\"on\")\n\
             template(name=\"j\" type=\"list\" option.jsonf=\"on\") {{\n\
             property(outname=\"timestamp\" name=\"timereported\" dateFormat=\"rfc3339\" format=\"jsonf\")\n{fields}}}\n\
             *.* action(type=\"omfile\" file=\"{d}/out.log\" template=\"j\")\n"
        );
        std::fs::write(dir.join("rsyslog.conf"), conf).expect("conf");
        let child = Command::new("/usr/sbin/rsyslogd")
            .arg("-n")
            .arg("-f")
            .arg(dir.join("rsyslog.conf"))
            .arg("-i")
            .arg(dir.join("pid"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start rsyslogd");
        let me = Self {
            child,
            dir,
            udp,
            tcp,
        };
        for _ in 0..100 {
            if std::net::TcpStream::connect(("127.0.0.1", tcp)).is_ok()
                && me.dir.join("log.sock").exists()
            {
                return Some(me);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("rsyslogd did not start listening");
    }

    /// What it parsed, once `n` messages are in.
    fn parsed(&self, n: usize) -> Vec<Value> {
        let mut v = Vec::new();
        for _ in 0..100 {
            v = std::fs::read_to_string(self.dir.join("out.log"))
                .unwrap_or_default()
                .lines()
                .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
                .collect();
            if v.len() >= n {
                return v;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("rsyslog received {} of {n} messages: {v:?}", v.len());
    }
}

impl Drop for Rsyslog {
    fn drop(&mut self) {
        let _ignored = self.child.kill();
        let _ignored = self.child.wait();
        let _ignored = std::fs::remove_dir_all(&self.dir);
    }
}

fn config(target: String, facility: &str) -> SyslogConfig {
    SyslogConfig {
        target,
        facility: facility.into(),
        hostname: Some("gw-test".into()),
        ..SyslogConfig::default()
    }
}

#[test]
fn replayed_alerts_reach_rsyslog_as_rfc5424_over_udp() {
    let Some(c) = sensor_tests::corpora() else {
        sensor_tests::skip("syslog replay", "../shared/corpora is absent");
        return;
    };
    let Some(rs) = Rsyslog::start("udp") else {
        return;
    };
    let s = Syslog::start(&config(format!("udp://127.0.0.1:{}", rs.udp), "local0"))
        .expect("config")
        .expect("a sender");
    let sum = replay(
        &[
            c.join("generated/nmap_sS_top1000.pcap"),
            c.join("generated/hping3_icmpflood_20k.pcap"),
        ],
        ReplayOptions::new(&Config::default()),
        vec![Box::new(AlertSink {
            out: &s,
            at_close: true,
        })],
    )
    .expect("replay");
    let stats = std::sync::Arc::clone(s.stats());
    drop(s);
    let alerts: u64 = sum.alerts.values().sum();
    assert!(alerts >= 2);
    assert_eq!(stats.sent.load(Ordering::Relaxed), alerts);
    let got = rs.parsed(alerts as usize);
    assert_eq!(got.len() as u64, alerts, "{got:?}");
    for m in &got {
        assert_eq!(m["input"], "imudp");
        assert_eq!(m["version"], "1", "rsyslog parsed it as RFC 5424: {m}");
        assert_eq!(m["facility"], "16", "local0: {m}");
        assert_eq!(
            (&m["hostname"], &m["app"]),
            (&Value::from("gw-test"), &Value::from("sensor"))
        );
        assert!(
            m["sd"]
                .as_str()
                .is_some_and(|sd| sd.starts_with("[alert@32473 id=\"")),
            "{m}"
        );
        assert!(
            m["msg"]
                .as_str()
                .is_some_and(|t| t.contains(" alert: 10.99.0.1 -> 10.99.0.2")),
            "{m}"
        );
    }
    let scan = got
        .iter()
        .find(|m| m["msgid"] == "port_scan")
        .expect("the scan's message");
    // The scan's final state: 1,000 ports, critical (syslog severity 2, crit).
    assert_eq!(scan["severity"], "2", "{scan}");
    assert!(scan["sd"].as_str().is_some_and(|sd| sd.contains("kind=\"port_scan\"") && sd.contains("src=\"10.99.0.1\"")));
    assert_eq!(
        scan["timestamp"].as_str().map(|t| &t[..19]),
        Some("2026-11-27T12:00:34"),
        "{scan}"
    );
}

fn crafted(id: u64) -> AlertRecord {
    AlertRecord {
        id,
        state: sensor::record::AlertState::Closed,
        merged_into: None,
        kind: AlertKind::Ddos,
        severity: Severity::Medium,
        detector: DetectorKind::Rule,
        src_ip: None,
        dst_ip: Some(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 7))),
        first_seen: "2026-12-01T10:00:00.000001Z".into(),
        last_seen: "2026-12-01T10:00:05.000001Z".into(),
        count: 3,
        score: None,
        summary: String::new(),
        evidence: serde_json::json!({}),
        rate_history: Vec::new(),
        pcap: Some("odd\"name]\\x.pcap".into()),
        direction: None,
        hostgroup: None,
        remote: None,
    }
}

#[test]
fn tcp_and_the_local_socket_carry_escaped_structured_data() {
    let Some(rs) = Rsyslog::start("tcp") else {
        return;
    };
    for (i, target) in [
        format!("tcp://127.0.0.1:{}", rs.tcp),
        format!("unix://{}", rs.dir.join("log.sock").display()),
    ]
    .into_iter()
    .enumerate()
    {
        let s = Syslog::start(&config(target, "auth"))
            .expect("config")
            .expect("sender");
        s.send(&crafted(i as u64 + 1));
        s.send(&crafted(i as u64 + 10));
        drop(s);
    }
    let got = rs.parsed(4);
    let inputs: Vec<&str> = got.iter().filter_map(|m| m["input"].as_str()).collect();
    assert_eq!(
        inputs.iter().filter(|i| **i == "imtcp").count(),
        2,
        "{got:?}"
    );
    assert_eq!(
        inputs.iter().filter(|i| **i == "imuxsock").count(),
        2,
        "{got:?}"
    );
    for m in &got {
        assert_eq!(
            (&m["version"], &m["facility"], &m["severity"]),
            (&Value::from("1"), &Value::from("4"), &Value::from("4")),
            "{m}"
        );
        assert_eq!(m["msgid"], "ddos");
        let sd = m["sd"].as_str().unwrap_or("");
        assert!(sd.contains(r#"src="many" dst="192.0.2.7""#), "{sd}");
        assert!(
            sd.contains(r#"pcap="odd\"name\]\\x.pcap""#),
            "escaped per RFC 5424: {sd}"
        );
        assert!(sd.ends_with(']'), "{sd}");
    }
}

#[test]
fn a_dead_collector_is_counted_and_never_waited_for() {
    // A TCP port nobody listens on, and a socket path that does not exist.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("port")
        .port();
    for target in [
        format!("tcp://127.0.0.1:{closed}"),
        "unix:///nonexistent/log.sock".to_owned(),
    ] {
        let s = Syslog::start(&config(target.clone(), "local7"))
            .expect("config")
            .expect("sender");
        for i in 0..3 {
            s.send(&crafted(i));
        }
        let stats = std::sync::Arc::clone(s.stats());
        drop(s);
        assert_eq!(stats.sent.load(Ordering::Relaxed), 0, "{target}");
        assert_eq!(stats.errors.load(Ordering::Relaxed), 3, "{target}");
        assert_eq!(stats.dropped.load(Ordering::Relaxed), 3, "{target}");
    }
    for bad in ["syslog.example:514", "udp://nohostport", "tcp://:601"] {
        let e = Syslog::start(&config(bad.into(), "local0"))
            .err()
            .expect(bad);
        assert!(e.to_string().contains("syslog.target"), "{e}");
    }
    let e = Syslog::start(&config("udp://127.0.0.1:514".into(), "local9"))
        .err()
        .expect("facility");
    assert!(e.to_string().contains("syslog.facility"), "{e}");
}
