//! The live agent end to end: `sensor::agent::run` attached to a veth in a private namespace,
//! a real nmap SYN scan from the peer namespace, the alert read back from the agent's own API
//! with attacker and victim, then a clean stop that leaves no XDP program attached.

use std::{
    io::{Read as _, Write as _},
    net::TcpStream,
    sync::{Arc, atomic::AtomicBool},
    time::Duration,
};

use sensor::{
    agent::{AgentOptions, AttachMode, run},
    config::Config,
    flow::FlowConfig,
    kernel::KernelConfig,
};
use sensor_tests::{load_or_skip, netns::VethPair, netns::sh};

fn get(port: u16, path: &str) -> Option<String> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    out.split_once("\r\n\r\n").map(|x| x.1.to_owned())
}

#[test]
fn live_agent_detects_a_real_scan_and_detaches_on_stop() {
    live(sensor::agent::CaptureKind::Xdp);
}

/// The libpcap path of `sensor run --capture pcap` (where XDP cannot attach).
#[test]
fn live_agent_on_libpcap_detects_a_real_scan() {
    live(sensor::agent::CaptureKind::Pcap);
}

fn live(capture: sensor::agent::CaptureKind) {
    let xdp = capture == sensor::agent::CaptureKind::Xdp;
    if load_or_skip("live agent", KernelConfig::default()).is_none() {
        return;
    }
    if !std::path::Path::new("/usr/bin/nmap").exists() {
        assert!(
            !sensor_tests::kernel_tests_required(),
            "nmap missing (cargo xtask setup installs it)"
        );
        eprintln!("SKIPPED live agent test: no nmap");
        return;
    }
    let lab = VethPair::create();
    let dir = std::env::temp_dir().join(format!("sensor-live-{}", std::process::id()));
    let _ignored = std::fs::remove_dir_all(&dir);
    // A free port inside the namespace (bound, then released).
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("port")
        .local_addr()
        .expect("addr")
        .port();
    let stop = Arc::new(AtomicBool::new(false));
    let opts = AgentOptions {
        ifaces: vec![lab.local.to_owned()],
        capture,
        mode: AttachMode::Auto,
        force: false,
        kernel: KernelConfig {
            flows: 65_536,
            hosts: 4096,
            coarse_time: false,
        },
        poll: Duration::from_millis(100),
        flow: FlowConfig::default(),
        config: Config::default(),
        model: None,
        db: Some(dir.join("sensor.db")),
        data_dir: dir.clone(),
        listen: ([127, 0, 0, 1], port).into(),
        token: "live-test-token-0123456789".into(),
    };
    let agent = {
        let stop = Arc::clone(&stop);
        // Spawned from the test thread, the agent's threads live in the test's namespace.
        std::thread::spawn(move || run(opts, stop))
    };
    // Wait for the API (bounded), then scan.
    let mut up = false;
    for _ in 0..100 {
        if get(port, "/api/status").is_some() {
            up = true;
            break;
        }
        if agent.is_finished() {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    if !up {
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        panic!(
            "agent API did not come up; agent returned {:?}",
            agent.join().map(|r| r.map_err(|e| e.to_string()))
        );
    }
    let attached = sensor::agent::attached_interfaces();
    assert_eq!(
        attached.iter().any(|(i, _, _)| i == lab.local),
        xdp,
        "sensor status: {attached:?}"
    );
    lab.peer.exec(&[
        "nmap",
        "-n",
        "-Pn",
        "-sS",
        "-p",
        "1-200",
        "-T4",
        &lab.local_addr.to_string(),
    ]);

    let mut found = None;
    for _ in 0..100 {
        let body = get(port, "/api/alerts?kind=port_scan").unwrap_or_default();
        let v: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
        if let Some(a) = v["items"].as_array().and_then(|i| i.first()).cloned() {
            found = Some(a);
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let alert = found.expect("no port_scan alert on the agent's API");
    assert_eq!(alert["src_ip"], lab.peer_addr.to_string());
    assert_eq!(alert["dst_ip"], lab.local_addr.to_string());
    let status: serde_json::Value =
        serde_json::from_str(&get(port, "/api/status").unwrap_or_default()).expect("status");
    assert!(
        status["kernel"]["packets"]
            .as_u64()
            .is_some_and(|n| n >= 20),
        "{status}"
    );

    // Per-second statistics rows (both paths): the scan's 200 probes (XDP sees this veth's
    // ingress only; libpcap also sees the answers) are in the totals once their second ended.
    let mut stored = 0;
    for _ in 0..50 {
        let v: serde_json::Value =
            serde_json::from_str(&get(port, "/api/stats").unwrap_or_default()).unwrap_or_default();
        stored = v["totals"]["packets"].as_u64().unwrap_or(0);
        if stored >= 200 {
            let series = v["series"].as_array().cloned().unwrap_or_default();
            assert!(!series.is_empty(), "no traffic series: {v}");
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(
        stored >= 200,
        "statistics rows hold {stored} packets; the scan alone sent 200 probes"
    );

    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let alerts = agent
        .join()
        .expect("agent thread")
        .expect("agent ran cleanly");
    assert!(alerts >= 1);
    let after = sh(&["ip", "-d", "link", "show", "dev", lab.local]);
    assert!(
        !after.contains("prog/xdp"),
        "XDP still attached after stop: {after}"
    );
    let _ignored = std::fs::remove_dir_all(&dir);
}
