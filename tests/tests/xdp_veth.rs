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
