//! Email alerts against a real SMTP receiver: aiosmtpd (PyPI), started by the test on
//! loopback with STARTTLS and AUTH required and a certificate of a CA made for the test.
//! Alerts become one mail per kind at once and a digest of the rest after the interval; a
//! relay whose certificate the sensor cannot verify gets nothing.

use std::{
    net::{IpAddr, Ipv4Addr},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::atomic::Ordering,
    time::{Duration, Instant},
};

use sensor::{
    record::{AlertKind, AlertRecord, DetectorKind, Severity},
    sink::email::{Email, EmailConfig},
};
use serde_json::Value;

const RECEIVER: &str = r#"
import json, os, ssl, sys, time
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword
out, cert, key, port = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
ctx.load_cert_chain(cert, key)
class Handler:
    async def handle_DATA(self, server, session, envelope):
        n = len(os.listdir(out))
        with open(os.path.join(out, "%03d.json.tmp" % n), "w") as f:
            json.dump({"from": envelope.mail_from, "to": envelope.rcpt_tos,
                       "tls": session.ssl is not None, "auth": session.authenticated,
                       "data": envelope.content.decode("utf-8", "replace")}, f)
        os.rename(os.path.join(out, "%03d.json.tmp" % n), os.path.join(out, "%03d.json" % n))
        return "250 OK"
def check(server, session, envelope, mechanism, auth_data):
    ok = isinstance(auth_data, LoginPassword) and auth_data.login == b"sensor" and auth_data.password == b"s3cret"
    return AuthResult(success=ok)
c = Controller(Handler(), hostname="127.0.0.1", port=port, tls_context=ctx,
               require_starttls=True, authenticator=check, auth_required=True)
c.start()
print("ready", flush=True)
time.sleep(3600)
"#;

struct Receiver {
    child: Child,
    dir: PathBuf,
    port: u16,
}

impl Receiver {
    fn start(name: &str) -> Option<Self> {
        let has = Command::new("python3")
            .args(["-c", "import aiosmtpd"])
            .output()
            .is_ok_and(|o| o.status.success());
        if !has || !Path::new("/usr/bin/openssl").exists() {
            assert!(
                !sensor_tests::kernel_tests_required(),
                "aiosmtpd or openssl missing (cargo xtask setup installs them)"
            );
            sensor_tests::skip("email against aiosmtpd", "no aiosmtpd/openssl");
            return None;
        }
        let dir = std::env::temp_dir().join(format!("sensor-smtp-{}-{name}", std::process::id()));
        let _ignored = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("mail")).expect("dir");
        // A CA of the test, and the receiver's certificate for 127.0.0.1 signed by it.
        let ssl = |args: &[&str]| {
            let st = Command::new("openssl")
                .args(args)
                .current_dir(&dir)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .expect("openssl");
            assert!(st.success(), "openssl {args:?}");
        };
        ssl(&[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
            "-days",
            "2",
            "-subj",
            "/CN=sensor test CA",
        ]);
        ssl(&[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "key.pem",
            "-out",
            "req.csr",
            "-subj",
            "/CN=127.0.0.1",
        ]);
        std::fs::write(dir.join("ext.cnf"), "subjectAltName=IP:127.0.0.1\n").expect("ext");
        ssl(&[
            "x509",
            "-req",
            "-in",
            "req.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "cert.pem",
            "-days",
            "2",
            "-extfile",
            "ext.cnf",
        ]);
        std::fs::write(dir.join("receiver.py"), RECEIVER).expect("script");
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("port")
            .port();
        let child = Command::new("python3")
            .arg(dir.join("receiver.py"))
            .arg(dir.join("mail"))
            .arg(dir.join("cert.pem"))
            .arg(dir.join("key.pem"))
            .arg(port.to_string())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start the receiver");
        let me = Self { child, dir, port };
        for _ in 0..100 {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return Some(me);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("the SMTP receiver did not start");
    }

    fn mails(&self) -> Vec<Value> {
        let mut names: Vec<PathBuf> = std::fs::read_dir(self.dir.join("mail"))
            .expect("mail dir")
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|e| e == "json"))
            .collect();
        names.sort();
        names
            .iter()
            .map(|p| {
                serde_json::from_str(&std::fs::read_to_string(p).expect("mail")).expect("json")
            })
            .collect()
    }

    fn config(&self, ca: bool) -> EmailConfig {
        std::fs::write(self.dir.join("password"), "s3cret\n").expect("password");
        EmailConfig {
            relay: format!("127.0.0.1:{}", self.port),
            tls_ca: ca.then(|| self.dir.join("ca.pem")),
            username: "sensor".into(),
            password_file: Some(self.dir.join("password")),
            from: "sensor@gw.example".into(),
            to: vec!["soc@example.org".into(), "oncall@example.org".into()],
            interval_s: 2,
            ..EmailConfig::default()
        }
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        let _ignored = self.child.kill();
        let _ignored = self.child.wait();
        let _ignored = std::fs::remove_dir_all(&self.dir);
    }
}

fn alert(id: u64, kind: AlertKind, severity: Severity, last: u8) -> AlertRecord {
    AlertRecord {
        id,
        state: sensor::record::AlertState::Closed,
        merged_into: None,
        kind,
        severity,
        detector: DetectorKind::Rule,
        src_ip: Some(IpAddr::V4(Ipv4Addr::new(203, 0, 113, last))),
        dst_ip: Some(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1))),
        first_seen: "2026-12-01T10:00:00.000001Z".into(),
        last_seen: "2026-12-01T10:00:05.000001Z".into(),
        count: 4,
        score: None,
        summary: String::new(),
        evidence: serde_json::json!({}),
        rate_history: Vec::new(),
        pcap: Some(format!("alert-1-{id}.pcap")),
        direction: None,
        hostgroup: None,
        remote: None,
    }
}

#[test]
fn alerts_arrive_over_starttls_with_auth_as_one_mail_then_a_digest_per_kind() {
    let Some(rx) = Receiver::start("digest") else {
        return;
    };
    let email = Email::start(&rx.config(true))
        .expect("config")
        .expect("sender");
    email.send(&alert(1, AlertKind::PortScan, Severity::High, 1));
    email.send(&alert(2, AlertKind::SynFlood, Severity::Critical, 9));
    // Below min_severity (high): not mailed.
    email.send(&alert(3, AlertKind::TrafficSpike, Severity::Low, 3));
    let wait = |n: usize| {
        let t = Instant::now();
        while rx.mails().len() < n && t.elapsed() < Duration::from_secs(15) {
            std::thread::sleep(Duration::from_millis(50));
        }
        rx.mails()
    };
    let first = wait(2);
    assert_eq!(
        first.len(),
        2,
        "the first alert of each kind goes at once: {first:?}"
    );
    // Two more scans within the interval: one digest when it is over.
    email.send(&alert(4, AlertKind::PortScan, Severity::High, 4));
    email.send(&alert(5, AlertKind::PortScan, Severity::Critical, 5));
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(rx.mails().len(), 2, "the digest waits for the interval");
    let all = wait(3);
    let stats = std::sync::Arc::clone(email.stats());
    drop(email);
    assert_eq!(all.len(), 3, "{all:?}");
    assert_eq!(
        (
            stats.mails.load(Ordering::Relaxed),
            stats.alerts.load(Ordering::Relaxed)
        ),
        (3, 4)
    );
    for m in &all {
        assert_eq!(m["tls"], true, "STARTTLS: {m}");
        assert_eq!(m["auth"], true, "AUTH: {m}");
        assert_eq!(m["from"], "sensor@gw.example");
        assert_eq!(
            m["to"],
            serde_json::json!(["soc@example.org", "oncall@example.org"])
        );
    }
    let data = |i: usize| all[i]["data"].as_str().unwrap_or("").to_owned();
    let subjects: Vec<String> = (0..3)
        .map(|i| {
            data(i)
                .lines()
                .find_map(|l| l.strip_prefix("Subject: ").map(str::to_owned))
                .unwrap_or_default()
        })
        .collect();
    assert!(
        subjects
            .iter()
            .any(|s| s.contains("1 port_scan alert (worst: high)")),
        "{subjects:?}"
    );
    assert!(
        subjects
            .iter()
            .any(|s| s.contains("1 syn_flood alert (worst: critical)")),
        "{subjects:?}"
    );
    let digest = (0..3)
        .find(|i| subjects[*i].contains("2 port_scan alerts (worst: critical)"))
        .expect("the scans' digest");
    let body = data(digest);
    assert!(
        body.contains("#4 port_scan 203.0.113.4 -> 192.0.2.1")
            && body.contains("#5 port_scan 203.0.113.5"),
        "{body}"
    );
    assert!(body.contains("packets in alert-1-5.pcap"), "{body}");
    assert!(
        !all.iter()
            .any(|m| m["data"].as_str().unwrap_or("").contains("traffic_spike"))
    );
}

#[test]
fn a_relay_the_sensor_cannot_verify_gets_nothing_and_bad_configs_are_refused() {
    let Some(rx) = Receiver::start("verify") else {
        return;
    };
    // The system's roots do not include the test's CA.
    let email = Email::start(&rx.config(false))
        .expect("config")
        .expect("sender");
    email.send(&alert(1, AlertKind::PortScan, Severity::High, 1));
    let stats = std::sync::Arc::clone(email.stats());
    drop(email);
    assert_eq!(stats.mails.load(Ordering::Relaxed), 0);
    assert_eq!(stats.errors.load(Ordering::Relaxed), 1);
    assert_eq!(stats.dropped.load(Ordering::Relaxed), 1);
    assert!(rx.mails().is_empty());

    let base = rx.config(true);
    for (cfg, says) in [
        (
            EmailConfig {
                to: Vec::new(),
                ..base.clone()
            },
            "email.to",
        ),
        (
            EmailConfig {
                relay: "smtp.example".into(),
                ..base.clone()
            },
            "email.relay",
        ),
        (
            EmailConfig {
                relay: "smtp.example:25".into(),
                tls: sensor::sink::email::EmailTls::None,
                ..base.clone()
            },
            "in clear",
        ),
        (
            EmailConfig {
                password_file: Some("/nonexistent/pw".into()),
                ..base.clone()
            },
            "email.password_file",
        ),
        (
            EmailConfig {
                tls_ca: Some("/nonexistent/ca.pem".into()),
                ..base.clone()
            },
            "email.tls_ca",
        ),
        (
            EmailConfig {
                from: "not an address".into(),
                ..base.clone()
            },
            "not an address",
        ),
    ] {
        let e = Email::start(&cfg)
            .err()
            .unwrap_or_else(|| panic!("accepted: {cfg:?}"));
        assert!(e.to_string().contains(says), "{e}");
    }
}
