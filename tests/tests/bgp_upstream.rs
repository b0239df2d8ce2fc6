//! Mitigation upstream with real daemons: the sensor (XDP on a veth of the test's namespace)
//! drives gobgpd in the same namespace, which peers with FRR's bgpd in a namespace of its own
//! (the upstream router), both run from `deploy/bgp/` as they are. Floods come from real
//! hping3 in a third namespace toward addresses routed through the gateway. What the upstream
//! router's RIB holds is read with `vtysh`.

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use sensor::{
    config::Config,
    detect::AlertKind,
    kernel::KernelConfig,
    mitigate::upstream::BgpConfig,
    networks::{GroupBgp, HostgroupConfig, NetworksConfig},
    source::attached::CaptureMode,
};
use sensor_tests::{
    agent::{Agent, TOKEN},
    http, kernel_tests_required, load_or_skip,
    netns::{PeerNs, VethPair, sh},
    skip,
};
use serde_json::Value;

const FRR_BGPD: &str = "/usr/lib/frr/bgpd";

fn deploy(file: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../deploy/bgp")
        .join(file)
}

/// Whether gobgpd, gobgp, FRR's bgpd, vtysh and hping3 are here (`cargo xtask setup`).
fn have_daemons(test: &str) -> bool {
    let missing: Vec<&str> = [
        "/usr/bin/gobgpd",
        "/usr/bin/gobgp",
        FRR_BGPD,
        "/usr/bin/vtysh",
        "/usr/sbin/hping3",
    ]
    .into_iter()
    .filter(|p| !Path::new(p).exists())
    .collect();
    if missing.is_empty() {
        return true;
    }
    assert!(
        !kernel_tests_required(),
        "{missing:?} missing (cargo xtask setup installs gobgpd, frr and hping3)"
    );
    skip(test, &format!("{missing:?} missing"));
    false
}

/// FRR's bgpd in its own namespace: the upstream router.
struct Upstream {
    ns: PeerNs,
    dir: PathBuf,
}

impl Upstream {
    /// The namespace with its end of the BGP link (10.99.0.1/24; the gateway has 10.99.0.2).
    fn create(dir: &Path) -> Self {
        let ns = PeerNs::create();
        sh(&[
            "ip", "link", "add", "sbgp0", "type", "veth", "peer", "name", "sbgp1", "netns",
            &ns.name,
        ]);
        sh(&["ip", "addr", "add", "10.99.0.2/24", "dev", "sbgp0"]);
        sh(&["ip", "link", "set", "sbgp0", "up"]);
        ns.exec(&["ip", "addr", "add", "10.99.0.1/24", "dev", "sbgp1"]);
        ns.exec(&["ip", "link", "set", "sbgp1", "up"]);
        ns.exec(&["ip", "link", "set", "lo", "up"]);
        let dir = dir.join("frr");
        std::fs::create_dir_all(&dir).expect("frr dir");
        let up = Self { ns, dir };
        up.start();
        up
    }

    fn pid_file(&self) -> PathBuf {
        self.dir.join("bgpd.pid")
    }

    fn start(&self) {
        let conf = deploy("frr-upstream.conf");
        let pid = self.pid_file();
        let _ignored = std::fs::remove_file(&pid);
        self.ns.exec(&[
            FRR_BGPD,
            "-Z",
            "-S",
            "-n",
            "-d",
            "-u",
            "root",
            "-g",
            "root",
            "-f",
            conf.to_str().expect("utf-8 path"),
            "-i",
            pid.to_str().expect("utf-8 path"),
            "--vty_socket",
            self.dir.to_str().expect("utf-8 path"),
        ]);
    }

    /// SIGKILL: the router dies without a NOTIFICATION (its kernel closes the TCP session).
    fn kill(&self) {
        if let Ok(pid) = std::fs::read_to_string(self.pid_file()) {
            let _ignored = Command::new("kill").args(["-9", pid.trim()]).status();
        }
    }

    fn show(&self, cmd: &str) -> String {
        let out = Command::new("ip")
            .args(["netns", "exec", &self.ns.name, "vtysh", "--vty_socket"])
            .arg(&self.dir)
            .args(["-c", cmd])
            .output()
            .expect("vtysh");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// The FlowSpec entries of the RIB, one block of text each.
    fn flowspec(&self) -> Vec<String> {
        self.show("show bgp ipv4 flowspec detail")
            .split("BGP flowspec entry")
            .skip(1)
            .map(str::to_owned)
            .collect()
    }

    fn flowspec_for(&self, dst: &str) -> Option<String> {
        let needle = format!("Destination Address {dst}/32");
        self.flowspec().into_iter().find(|e| e.contains(&needle))
    }

    /// The host route of `dst` as FRR shows it (empty when absent).
    fn unicast(&self, dst: &str) -> String {
        let text = self.show(&format!("show bgp ipv4 unicast {dst}/32"));
        if text.contains("Network not in table") {
            String::new()
        } else {
            text
        }
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.kill();
    }
}

/// gobgpd in the test's namespace (the gateway), with its gRPC API on a free local port.
struct Gobgpd {
    child: Child,
    api: String,
}

impl Gobgpd {
    fn start(dir: &Path) -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port();
        let api = format!("127.0.0.1:{port}");
        let log = std::fs::File::create(dir.join("gobgpd.log")).expect("gobgpd log");
        let child = Command::new("gobgpd")
            .arg("-f")
            .arg(deploy("gobgpd.toml"))
            .args(["--api-hosts", &api])
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .stdin(Stdio::null())
            .spawn()
            .expect("start gobgpd");
        Self { child, api }
    }
}

impl Drop for Gobgpd {
    fn drop(&mut self) {
        let _ignored = self.child.kill();
        let _ignored = self.child.wait();
    }
}

/// hping3 from the attacker's namespace for `secs` seconds, in the background.
fn hping(ns: &PeerNs, secs: u32, args: &[&str]) -> Child {
    Command::new("ip")
        .args([
            "netns",
            "exec",
            &ns.name,
            "timeout",
            &secs.to_string(),
            "hping3",
            "-q",
        ])
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start hping3")
}

fn get(addr: SocketAddr, path: &str) -> Value {
    let (code, text) = http(addr, "GET", path, Some(TOKEN), None);
    assert_eq!(code, 200, "GET {path}: {text}");
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("GET {path}: {e}: {text}"))
}

/// Polls `f` every 100 ms until it gives a value; panics naming `what` after `limit`.
fn wait_for<T>(what: &str, limit: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(start.elapsed() < limit, "waited {limit:?} for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn alert_on(agent: &Agent, kind: AlertKind, dst: &str) -> Option<Value> {
    let v = get(agent.addr, &format!("/api/alerts?kind={}", kind.as_str()));
    v["items"]
        .as_array()?
        .iter()
        .find(|a| a["kind"] == kind.as_str() && a["dst_ip"] == dst)
        .cloned()
}

fn audit(agent: &Agent) -> Vec<(String, String, String)> {
    get(agent.addr, "/api/upstream")["audit"]
        .as_array()
        .map(|rows| {
            rows.iter()
                .map(|r| {
                    let s = |k: &str| r[k].as_str().unwrap_or("").to_owned();
                    (s("action"), s("target"), s("reason"))
                })
                .collect()
        })
        .unwrap_or_default()
}

/// A reflection flood into a home victim gets its FlowSpec rule (match fields checked in the
/// upstream's RIB) and, above the RTBH level, the victim's blackholed /32; a slower flood gets
/// the FlowSpec rule only; a victim outside `home` gets nothing. All are withdrawn after the
/// TTL once the floods stop. Then the upstream router is killed while an attack runs: the
/// session is reported down (an alert), XDP mitigation goes on, and the routes still wanted
/// come back when the router does; the sensor's stop withdraws everything.
#[test]
fn floods_are_announced_upstream_escalated_withdrawn_and_survive_a_peer_restart() {
    let test = "bgp upstream";
    if !have_daemons(test) || load_or_skip(test, KernelConfig::default()).is_none() {
        return;
    }
    let lab = VethPair::create();
    let dir = std::env::temp_dir().join(format!("sensor-bgp-{}", std::process::id()));
    let _ignored = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("test dir");
    let upstream = Upstream::create(&dir);
    let gobgpd = Gobgpd::start(&dir);
    // Home victims sit behind the gateway; 10.205.0.0/24 is someone else's.
    lab.peer
        .exec(&["ip", "route", "add", "10.204.0.0/15", "via", "10.203.0.1"]);

    let mut config = Config {
        networks: NetworksConfig {
            home: vec!["10.204.0.0/24".into()],
            // Hosts exposed to the Internet are blackholed from 1,500 pps; the rest never.
            hostgroups: vec![HostgroupConfig {
                name: "exposed".into(),
                prefixes: vec!["10.204.0.2/32".into()],
                bgp: GroupBgp {
                    rtbh_pps: Some(1_500),
                    ..GroupBgp::default()
                },
                ..HostgroupConfig::default()
            }],
        },
        bgp: BgpConfig {
            enabled: true,
            api: gobgpd.api.clone(),
            ttl_s: 2,
            session_alert_s: 2,
            check_ms: 200,
            ..BgpConfig::default()
        },
        ..Config::default()
    };
    config.rules.quiet_close_s = 2;
    config.mitigation.kinds = vec![AlertKind::IcmpFlood];
    let mut agent = Agent::start_config(
        "bgp",
        vec![lab.local.to_owned()],
        CaptureMode::Skb,
        None,
        config,
    );
    let established = |agent: &Agent| {
        get(agent.addr, "/api/upstream")["sessions"]
            .as_array()
            .and_then(|s| s.first())
            .is_some_and(|s| s["established"] == true)
    };
    wait_for("the BGP session", Duration::from_secs(60), || {
        established(&agent).then_some(())
    });

    // Three floods at once: NTP-style reflection (many forged sources, UDP from port 123) at
    // ~5,000 pps into .2 (exposed); a ~2,500 pps ICMP flood into .3 (not in the group, no RTBH
    // level); the same into a victim not ours.
    let floods = [
        hping(
            &lab.peer,
            4,
            &[
                "--udp",
                "-s",
                "123",
                "-k",
                "-p",
                "4444",
                "-i",
                "u200",
                "--rand-source",
                "-d",
                "64",
                "10.204.0.2",
            ],
        ),
        hping(&lab.peer, 4, &["--icmp", "-i", "u400", "10.204.0.3"]),
        hping(&lab.peer, 4, &["--icmp", "-i", "u400", "10.205.0.2"]),
    ];
    let alerted = wait_for(
        "the reflection flood's alert",
        Duration::from_secs(20),
        || {
            alert_on(&agent, AlertKind::Ddos, "10.204.0.2")
                .or_else(|| alert_on(&agent, AlertKind::UdpFlood, "10.204.0.2"))
                .map(|_| Instant::now())
        },
    );
    let rule = wait_for(
        "the reflection flood's FlowSpec rule upstream",
        Duration::from_secs(20),
        || upstream.flowspec_for("10.204.0.2"),
    );
    eprintln!(
        "FlowSpec rule in the upstream's RIB {} ms after the alert was readable",
        alerted.elapsed().as_millis()
    );
    for field in ["IP Protocol = 17", "Source Port = 123", "FS:rate 0.000000"] {
        assert!(
            rule.contains(field),
            "reflection rule has {field:?}: {rule}"
        );
    }
    assert!(
        !rule.contains("Destination Port") && !rule.contains("Source Address"),
        "forged sources, no port of the victim's: matched on the reflected service only: {rule}"
    );
    let rtbh = wait_for(
        "the victim's blackhole route",
        Duration::from_secs(20),
        || Some(upstream.unicast("10.204.0.2")).filter(|t| !t.is_empty()),
    );
    assert!(
        rtbh.contains("blackhole") && rtbh.contains("192.0.2.1"),
        "RFC 7999 community and the configured next hop: {rtbh}"
    );
    let icmp = wait_for(
        "the ICMP flood's FlowSpec rule",
        Duration::from_secs(20),
        || upstream.flowspec_for("10.204.0.3"),
    );
    for field in ["IP Protocol = 1", "Source Address 10.203.0.2/32"] {
        assert!(icmp.contains(field), "ICMP rule has {field:?}: {icmp}");
    }
    for mut f in floods {
        let _ignored = f.wait();
    }
    assert!(
        alert_on(&agent, AlertKind::IcmpFlood, "10.205.0.2").is_some(),
        "the flood into a victim outside home is still an alert"
    );
    let up = get(agent.addr, "/api/upstream");
    assert_eq!(
        upstream.unicast("10.204.0.3"),
        "",
        "no RTBH level outside the exposed group, no blackhole: {up}"
    );
    assert!(
        upstream.flowspec_for("10.205.0.2").is_none() && upstream.unicast("10.205.0.2").is_empty(),
        "nothing announced about a victim outside home"
    );
    let rows = audit(&agent);
    assert!(
        rows.iter().any(|(a, t, r)| a == "refuse"
            && t == "upstream:10.205.0.2/32"
            && r.contains("outside")),
        "the refusal is audited: {rows:#?}"
    );

    // Floods over: alerts close after 2 quiet seconds, announcements 2 s later.
    wait_for("every route withdrawn", Duration::from_secs(30), || {
        (upstream.flowspec().is_empty() && upstream.unicast("10.204.0.2").is_empty()).then_some(())
    });
    let rows = audit(&agent);
    for target in [
        "flowspec:10.204.0.2/32 udp src-port 123",
        "rtbh:10.204.0.2/32",
        "flowspec:10.204.0.3/32 from 10.203.0.2/32 icmp",
    ] {
        for action in ["announce", "withdraw"] {
            assert!(
                rows.iter().any(|(a, t, _)| a == action && t == target),
                "{action} {target} audited: {rows:#?}"
            );
        }
    }
    let metrics = http(agent.addr, "GET", "/metrics", None, None).1;
    assert!(
        metrics.contains("sensor_bgp_sessions_established 1")
            && metrics.contains("sensor_bgp_flowspec_announcements 0"),
        "{metrics}"
    );

    // The upstream router dies during an attack.
    let flood = hping(&lab.peer, 40, &["--icmp", "-i", "u400", "10.204.0.4"]);
    wait_for("the third flood's rule", Duration::from_secs(20), || {
        upstream.flowspec_for("10.204.0.4")
    });
    upstream.kill();
    wait_for("the session reported down", Duration::from_secs(20), || {
        (!established(&agent)).then_some(())
    });
    let down = wait_for("the session-down alert", Duration::from_secs(20), || {
        alert_on(&agent, AlertKind::BgpSessionDown, "10.99.0.1").filter(|a| a["state"] == "open")
    });
    assert!(
        down["summary"]
            .as_str()
            .is_some_and(|s| s.contains("10.99.0.1") && s.contains("XDP mitigation goes on")),
        "{down}"
    );
    let blocks = get(agent.addr, "/api/blocklist");
    assert!(
        blocks["entries"]
            .as_array()
            .is_some_and(|e| e.iter().any(|b| b["target"] == "10.203.0.2/32")),
        "XDP keeps blocking the flooder while the session is down: {blocks}"
    );
    upstream.start();
    wait_for("the rule back upstream", Duration::from_secs(60), || {
        upstream.flowspec_for("10.204.0.4")
    });
    wait_for(
        "the session-down alert closed",
        Duration::from_secs(20),
        || {
            alert_on(&agent, AlertKind::BgpSessionDown, "10.99.0.1")
                .filter(|a| a["state"] == "closed")
        },
    );
    let mut flood = flood;
    let _ignored = flood.kill();
    let _ignored = flood.wait();

    // Stopping the sensor withdraws what is still announced.
    agent.join().expect("agent stops cleanly");
    wait_for(
        "the stop's withdrawal upstream",
        Duration::from_secs(20),
        || upstream.flowspec().is_empty().then_some(()),
    );
    drop(gobgpd);
    drop(upstream);
    let _ignored = std::fs::remove_dir_all(&dir);
}
