//! The sensor attached to a real veth inside a fresh network namespace, counting real traffic
//! sent from a peer namespace with the kernel's own stack and with `ping`.

use aya::programs::XdpMode;
use sensor_common::{FlowKey, proto};
use sensor_tests::{TEST_SIZES, key4, load_or_skip, netns::VethPair};

fn count_real_traffic(mode: XdpMode) {
    let Some(mut prog) = load_or_skip("xdp_veth", TEST_SIZES) else {
        return;
    };
    let lab = VethPair::create();
    let xdp = prog.xdp().expect("sensor program");
    let link = xdp.attach(lab.local, mode).unwrap_or_else(|e| {
        panic!(
            "attach XDP ({mode:?}) to {} in the test namespace: {e}",
            lab.local
        )
    });

    // 25 datagrams of 100 bytes: 14 + 20 + 8 + 100 = 142 bytes each on the wire.
    lab.peer
        .send_udp(lab.peer_addr, lab.local_addr, 40001, 9999, 25, 100);
    // 5 echo requests from a real tool.
    let ping = lab.peer.exec(&[
        "ping",
        "-c",
        "5",
        "-i",
        "0.05",
        "-W",
        "1",
        "-q",
        &lab.local_addr.to_string(),
    ]);
    assert!(
        ping.contains("5 received"),
        "ping across the veth failed: {ping}"
    );

    let flows = prog.flows().expect("read flows");
    let udp = flows
        .get(&key4(
            lab.peer_addr,
            lab.local_addr,
            40001,
            9999,
            proto::UDP,
        ))
        .unwrap_or_else(|| panic!("UDP flow missing ({mode:?}): {flows:#?}"));
    assert_eq!(
        (udp.packets, udp.bytes),
        (25, 25 * 142),
        "UDP flow counters ({mode:?})"
    );
    assert_eq!((udp.min_len, udp.max_len), (142, 142));

    let echo_key = |k: &FlowKey| {
        k.proto == proto::ICMP
            && k.dst_port == 8 << 8
            && k.src_addr == sensor_tests::mapped(lab.peer_addr)
    };
    let echo: Vec<_> = flows.iter().filter(|(k, _)| echo_key(k)).collect();
    assert_eq!(echo.len(), 1, "one echo-request flow expected: {flows:#?}");
    assert_eq!(echo[0].1.packets, 5, "echo requests seen by XDP ({mode:?})");
    // ping's default 56-byte payload: 14 + 20 + 8 + 56 = 98 bytes.
    assert_eq!(echo[0].1.bytes, 5 * 98);

    assert!(
        prog.dst_hosts().expect("dst hosts").is_empty(),
        "nothing should overflow a 1024-flow map"
    );
    let c = prog.counters().expect("counters");
    assert!(
        c.packets >= 30 && c.parse_errors == 0,
        "global counters ({mode:?}): {c:?}"
    );

    prog.xdp()
        .expect("sensor program")
        .detach(link)
        .expect("detach XDP");
    drop(lab);
}

#[test]
fn veth_native_mode_counts_real_traffic() {
    count_real_traffic(XdpMode::Driver);
}

#[test]
fn veth_skb_mode_counts_real_traffic() {
    count_real_traffic(XdpMode::Skb);
}

/// Flow durations from the kernel (the precise clock when a flow's slot opens, the coarse
/// clock on its later packets) against libpcap's timestamps of the same packets on the same
/// interface: ping flows of known length (10 echo requests 40 ms apart, 360 ms) agree within a
/// few ms, the coarse clock's lag.
#[test]
fn kernel_durations_agree_with_libpcap_timestamps() {
    let Some(mut prog) = load_or_skip("xdp_veth durations", TEST_SIZES) else {
        return;
    };
    if !std::path::Path::new("/usr/bin/tcpdump").exists() {
        assert!(
            !sensor_tests::kernel_tests_required(),
            "tcpdump missing (cargo xtask setup installs it)"
        );
        sensor_tests::skip("xdp_veth durations", "no tcpdump");
        return;
    }
    let lab = VethPair::create();
    let link = prog
        .xdp()
        .expect("sensor program")
        .attach(lab.local, XdpMode::Driver)
        .expect("attach XDP");
    let file = std::env::temp_dir().join(format!("sensor-durations-{}.pcap", std::process::id()));
    let mut tcpdump = std::process::Command::new("tcpdump")
        .args(["-i", lab.local, "-n", "-U", "--immediate-mode", "-w"])
        .arg(&file)
        .arg("icmp")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("start tcpdump");
    std::thread::sleep(std::time::Duration::from_millis(800));
    // Three runs of 10 requests 40 ms apart; ICMP keys carry no id, so the maps are emptied
    // before each run and its flow read after it.
    let echo = |k: &FlowKey| {
        k.proto == proto::ICMP
            && k.dst_port == 8 << 8
            && k.src_addr == sensor_tests::mapped(lab.peer_addr)
    };
    let mut kernel = Vec::new();
    for _ in 0..3 {
        prog.reset().expect("reset maps");
        lab.peer.exec(&[
            "ping",
            "-c",
            "10",
            "-i",
            "0.04",
            "-q",
            &lab.local_addr.to_string(),
        ]);
        let flows = prog.flows().expect("flows");
        let (_, s) = flows
            .iter()
            .find(|(k, _)| echo(k))
            .unwrap_or_else(|| panic!("no echo flow: {flows:#?}"));
        assert_eq!(s.packets, 10);
        kernel.push((s.last_seen_ns - s.first_seen_ns) as f64 / 1e6);
    }
    std::thread::sleep(std::time::Duration::from_millis(500));
    // SAFETY: a signal to our own child.
    unsafe { libc::kill(tcpdump.id() as i32, libc::SIGINT) };
    let _ignored = tcpdump.wait();
    // libpcap's view: first and last echo request of each run (ping id).
    let text =
        sensor_tests::netns::sh(&["tcpdump", "-r", file.to_str().expect("path"), "-n", "-tt"]);
    let mut runs: Vec<(u16, f64, f64, u32)> = Vec::new();
    for line in text.lines().filter(|l| l.contains("echo request")) {
        let ts: f64 = line
            .split_whitespace()
            .next()
            .and_then(|t| t.parse().ok())
            .expect("ts");
        let id: u16 = line
            .split("id ")
            .nth(1)
            .and_then(|r| r.split(',').next())
            .and_then(|v| v.parse().ok())
            .expect("id");
        match runs.iter_mut().find(|r| r.0 == id) {
            Some(r) => {
                r.2 = ts;
                r.3 += 1;
            }
            None => runs.push((id, ts, ts, 1)),
        }
    }
    assert_eq!(runs.len(), 3, "three ping runs in the capture: {text}");
    assert!(
        runs.iter().all(|r| r.3 == 10),
        "libpcap missed requests (the comparison needs all 10 of each run): {text}"
    );
    let mut worst = 0f64;
    for ((_, first, last, _), kernel_ms) in runs.iter().zip(&kernel) {
        let pcap_ms = (last - first) * 1e3;
        eprintln!("ping run: kernel {kernel_ms:.2} ms, libpcap {pcap_ms:.2} ms");
        assert!(
            pcap_ms > 300.0,
            "the capture's flow is {pcap_ms:.2} ms long"
        );
        worst = worst.max((kernel_ms - pcap_ms).abs());
    }
    eprintln!("largest difference: {worst:.2} ms");
    assert!(
        worst <= 12.0,
        "kernel and libpcap durations differ by {worst:.2} ms"
    );
    let _ignored = std::fs::remove_file(&file);
    prog.xdp()
        .expect("sensor program")
        .detach(link)
        .expect("detach XDP");
    drop(lab);
}
