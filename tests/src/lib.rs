//! Helpers shared by the kernel tests and the XDP benchmark: frames crafted byte by byte where
//! the layout is the point of the test (extension headers, fragments, options, tags), with
//! etherparse for the ordinary ones, and a loader that skips cleanly where BPF is unavailable.

use std::net::{Ipv4Addr, Ipv6Addr};

use aya::programs::{TestRun as _, TestRunOptions};
use etherparse::PacketBuilder;
use sensor::kernel::{KernelConfig, KernelError, SensorProgram};
use sensor_common::{FlowKey, HostKey, family};

pub mod agent;
pub mod netns;

pub const MAC_A: [u8; 6] = [0x02, 0, 0, 0, 0, 0x0a];
pub const MAC_B: [u8; 6] = [0x02, 0, 0, 0, 0, 0x0b];

/// TCP flag bits as on the wire.
pub use sensor::packet::tcp as tcp_flags;

/// A crafted frame and how many leading bytes the sensor must see to parse it fully.
#[derive(Clone, Debug)]
pub struct Frame {
    pub bytes: Vec<u8>,
    /// End of the last header the XDP program reads (L4 header, or ICMP type+code).
    pub header_len: usize,
}

fn builder_tcp(
    b: etherparse::PacketBuilderStep<etherparse::IpHeaders>,
    sport: u16,
    dport: u16,
    flags: u8,
) -> etherparse::PacketBuilderStep<etherparse::TcpHeader> {
    let mut t = b.tcp(sport, dport, 1000, 64240);
    if flags & tcp_flags::FIN != 0 {
        t = t.fin();
    }
    if flags & tcp_flags::SYN != 0 {
        t = t.syn();
    }
    if flags & tcp_flags::RST != 0 {
        t = t.rst();
    }
    if flags & tcp_flags::PSH != 0 {
        t = t.psh();
    }
    if flags & tcp_flags::ACK != 0 {
        t = t.ack(1);
    }
    if flags & tcp_flags::URG != 0 {
        t = t.urg(0);
    }
    t
}

fn written(
    size: usize,
    write: impl FnOnce(&mut Vec<u8>) -> Result<(), etherparse::err::packet::BuildWriteError>,
) -> Vec<u8> {
    let mut v = Vec::with_capacity(size);
    write(&mut v).expect("etherparse writes into a Vec");
    v
}

/// IPv4 TCP segment with `payload` zero bytes.
pub fn tcp4(
    src: Ipv4Addr,
    dst: Ipv4Addr,
    sport: u16,
    dport: u16,
    flags: u8,
    payload: usize,
) -> Frame {
    let b = builder_tcp(
        PacketBuilder::ethernet2(MAC_A, MAC_B).ipv4(src.octets(), dst.octets(), 64),
        sport,
        dport,
        flags,
    );
    let data = vec![0u8; payload];
    let bytes = written(b.size(payload), |v| b.write(v, &data));
    Frame {
        bytes,
        header_len: 14 + 20 + 20,
    }
}

/// IPv6 TCP segment.
pub fn tcp6(
    src: Ipv6Addr,
    dst: Ipv6Addr,
    sport: u16,
    dport: u16,
    flags: u8,
    payload: usize,
) -> Frame {
    let b = builder_tcp(
        PacketBuilder::ethernet2(MAC_A, MAC_B).ipv6(src.octets(), dst.octets(), 64),
        sport,
        dport,
        flags,
    );
    let data = vec![0u8; payload];
    let bytes = written(b.size(payload), |v| b.write(v, &data));
    Frame {
        bytes,
        header_len: 14 + 40 + 20,
    }
}

pub fn udp4(src: Ipv4Addr, dst: Ipv4Addr, sport: u16, dport: u16, payload: usize) -> Frame {
    let b = PacketBuilder::ethernet2(MAC_A, MAC_B)
        .ipv4(src.octets(), dst.octets(), 64)
        .udp(sport, dport);
    let data = vec![0u8; payload];
    let bytes = written(b.size(payload), |v| b.write(v, &data));
    Frame {
        bytes,
        header_len: 14 + 20 + 8,
    }
}

pub fn udp6(src: Ipv6Addr, dst: Ipv6Addr, sport: u16, dport: u16, payload: usize) -> Frame {
    let b = PacketBuilder::ethernet2(MAC_A, MAC_B)
        .ipv6(src.octets(), dst.octets(), 64)
        .udp(sport, dport);
    let data = vec![0u8; payload];
    let bytes = written(b.size(payload), |v| b.write(v, &data));
    Frame {
        bytes,
        header_len: 14 + 40 + 8,
    }
}

pub fn icmp4_echo(src: Ipv4Addr, dst: Ipv4Addr, id: u16, seq: u16) -> Frame {
    let b = PacketBuilder::ethernet2(MAC_A, MAC_B)
        .ipv4(src.octets(), dst.octets(), 64)
        .icmpv4_echo_request(id, seq);
    let data = [0u8; 56];
    let bytes = written(b.size(data.len()), |v| b.write(v, &data));
    Frame {
        bytes,
        header_len: 14 + 20 + 2,
    }
}

pub fn icmp6_echo(src: Ipv6Addr, dst: Ipv6Addr, id: u16, seq: u16) -> Frame {
    let b = PacketBuilder::ethernet2(MAC_A, MAC_B)
        .ipv6(src.octets(), dst.octets(), 64)
        .icmpv6_echo_request(id, seq);
    let data = [0u8; 56];
    let bytes = written(b.size(data.len()), |v| b.write(v, &data));
    Frame {
        bytes,
        header_len: 14 + 40 + 2,
    }
}

/// An IPv4 packet of another protocol (GRE = 47 by default) with a few payload bytes.
pub fn ipv4_proto(src: Ipv4Addr, dst: Ipv4Addr, proto: u8) -> Frame {
    let mut bytes = eth(0x0800);
    let ip = ipv4_header(src, dst, proto, 20 + 8, 0, &[]);
    bytes.extend_from_slice(&ip);
    bytes.extend_from_slice(&[0u8; 8]);
    Frame {
        bytes,
        header_len: 14 + 20,
    }
}

/// IPv4 UDP with header options (`options.len()` a multiple of 4) and/or a fragment field.
/// `frag` is the raw 16-bit flags+offset field (offset in 8-byte units).
pub fn udp4_raw(
    src: Ipv4Addr,
    dst: Ipv4Addr,
    sport: u16,
    dport: u16,
    frag: u16,
    options: &[u8],
) -> Frame {
    assert!(
        options.len().is_multiple_of(4) && options.len() <= 40,
        "bad IPv4 options length"
    );
    let mut bytes = eth(0x0800);
    let payload = 8 + 16;
    bytes.extend_from_slice(&ipv4_header(
        src,
        dst,
        17,
        20 + options.len() + payload,
        frag,
        options,
    ));
    let l4 = bytes.len();
    bytes.extend_from_slice(&sport.to_be_bytes());
    bytes.extend_from_slice(&dport.to_be_bytes());
    bytes.extend_from_slice(&(payload as u16).to_be_bytes());
    bytes.extend_from_slice(&[0, 0]);
    bytes.extend_from_slice(&[0u8; 16]);
    let non_first = frag & 0x1fff != 0;
    Frame {
        bytes,
        header_len: if non_first { l4 } else { l4 + 8 },
    }
}

/// IPv6 with the given extension headers (`(type, body)`, body including its own next-header
/// and length bytes, which are rewritten here) in front of a UDP header.
pub fn udp6_ext(
    src: Ipv6Addr,
    dst: Ipv6Addr,
    sport: u16,
    dport: u16,
    exts: &[(u8, Vec<u8>)],
) -> Frame {
    let mut chain = Vec::new();
    for (i, (_, body)) in exts.iter().enumerate() {
        let mut body = body.clone();
        body[0] = exts.get(i + 1).map_or(17, |(t, _)| *t);
        chain.extend_from_slice(&body);
    }
    let first = exts.first().map_or(17, |(t, _)| *t);
    let udp_len = 8 + 16;
    let mut bytes = eth(0x86DD);
    bytes.extend_from_slice(&[0x60, 0, 0, 0]);
    bytes.extend_from_slice(&((chain.len() + udp_len) as u16).to_be_bytes());
    bytes.push(first);
    bytes.push(64);
    bytes.extend_from_slice(&src.octets());
    bytes.extend_from_slice(&dst.octets());
    bytes.extend_from_slice(&chain);
    let l4 = bytes.len();
    bytes.extend_from_slice(&sport.to_be_bytes());
    bytes.extend_from_slice(&dport.to_be_bytes());
    bytes.extend_from_slice(&(udp_len as u16).to_be_bytes());
    bytes.extend_from_slice(&[0, 0]);
    bytes.extend_from_slice(&[0u8; 16]);
    let non_first = exts
        .iter()
        .any(|(t, b)| *t == 44 && u16::from_be_bytes([b[2], b[3]]) >> 3 != 0);
    Frame {
        bytes,
        header_len: if non_first { l4 } else { l4 + 8 },
    }
}

/// An options-style extension header (hop-by-hop, routing, destination options) of
/// `8 * (units + 1)` bytes.
pub fn ext_options(kind: u8, units: u8) -> (u8, Vec<u8>) {
    let mut b = vec![0u8; 8 * (units as usize + 1)];
    b[1] = units;
    if kind == 43 {
        b[2] = 4; // routing type: segment routing, no segments left
    } else {
        b[2] = 1; // PadN option filling the rest
        b[3] = (b.len() - 4) as u8;
    }
    (kind, b)
}

/// An IPv6 fragment header with the given offset (8-byte units) and more-fragments bit.
pub fn ext_fragment(offset: u16, more: bool) -> (u8, Vec<u8>) {
    let field = (offset << 3) | u16::from(more);
    let f = field.to_be_bytes();
    (44, vec![0, 0, f[0], f[1], 0, 0, 0x12, 0x34])
}

/// Inserts VLAN tags `(tpid, vid)` outermost first, after the MAC addresses.
pub fn with_vlans(frame: &Frame, tags: &[(u16, u16)]) -> Frame {
    let mut bytes = frame.bytes[..12].to_vec();
    for (tpid, vid) in tags {
        bytes.extend_from_slice(&tpid.to_be_bytes());
        bytes.extend_from_slice(&vid.to_be_bytes());
    }
    bytes.extend_from_slice(&frame.bytes[12..]);
    Frame {
        bytes,
        header_len: frame.header_len + 4 * tags.len(),
    }
}

/// Wraps an untagged Ethernet frame's IP packet in a PPPoE session (PPP protocol `ppp`).
pub fn with_pppoe(frame: &Frame, ppp: u16) -> Frame {
    let mut bytes = frame.bytes[..12].to_vec();
    bytes.extend_from_slice(&[0x88, 0x64, 0x11, 0x00, 0x3d, 0x6d]);
    bytes.extend_from_slice(&((frame.bytes.len() - 14 + 2) as u16).to_be_bytes());
    bytes.extend_from_slice(&ppp.to_be_bytes());
    bytes.extend_from_slice(&frame.bytes[14..]);
    Frame {
        bytes,
        header_len: frame.header_len + 8,
    }
}

/// ARP request (opcode 1) or reply (2) for Ethernet/IPv4.
pub fn arp(op: u16, sender: Ipv4Addr, target: Ipv4Addr) -> Frame {
    let mut bytes = eth(0x0806);
    bytes.extend_from_slice(&[0, 1, 0x08, 0x00, 6, 4]);
    bytes.extend_from_slice(&op.to_be_bytes());
    bytes.extend_from_slice(&MAC_A);
    bytes.extend_from_slice(&sender.octets());
    bytes.extend_from_slice(&[0u8; 6]);
    bytes.extend_from_slice(&target.octets());
    bytes.resize(60, 0);
    Frame {
        bytes,
        header_len: 14 + 28,
    }
}

/// A frame of another EtherType (LLDP by default) that carries no flow.
pub fn non_ip(ether_type: u16) -> Frame {
    let mut bytes = eth(ether_type);
    bytes.resize(60, 0);
    Frame {
        bytes,
        header_len: 14,
    }
}

fn eth(ether_type: u16) -> Vec<u8> {
    let mut v = MAC_B.to_vec();
    v.extend_from_slice(&MAC_A);
    v.extend_from_slice(&ether_type.to_be_bytes());
    v
}

fn ipv4_header(
    src: Ipv4Addr,
    dst: Ipv4Addr,
    proto: u8,
    total: usize,
    frag: u16,
    options: &[u8],
) -> Vec<u8> {
    let ihl = (20 + options.len()) / 4;
    let mut h = vec![0x40 | ihl as u8, 0];
    h.extend_from_slice(&(total as u16).to_be_bytes());
    h.extend_from_slice(&[0x12, 0x34]);
    h.extend_from_slice(&frag.to_be_bytes());
    h.extend_from_slice(&[64, proto, 0, 0]);
    h.extend_from_slice(&src.octets());
    h.extend_from_slice(&dst.octets());
    h.extend_from_slice(options);
    h
}

/// IPv4-mapped 16-byte form used in kernel keys.
pub fn mapped(a: Ipv4Addr) -> [u8; 16] {
    a.to_ipv6_mapped().octets()
}

pub fn key4(src: Ipv4Addr, dst: Ipv4Addr, sport: u16, dport: u16, proto: u8) -> FlowKey {
    FlowKey {
        src_addr: mapped(src),
        dst_addr: mapped(dst),
        src_port: sport,
        dst_port: dport,
        proto,
        family: family::IPV4,
        _pad: [0; 2],
    }
}

pub fn key6(src: Ipv6Addr, dst: Ipv6Addr, sport: u16, dport: u16, proto: u8) -> FlowKey {
    FlowKey {
        src_addr: src.octets(),
        dst_addr: dst.octets(),
        src_port: sport,
        dst_port: dport,
        proto,
        family: family::IPV6,
        _pad: [0; 2],
    }
}

pub fn host4(a: Ipv4Addr) -> HostKey {
    HostKey {
        addr: mapped(a),
        family: family::IPV4,
        _pad: [0; 3],
    }
}

/// `../shared/corpora` next to the project root, if this machine has it.
pub fn corpora() -> Option<std::path::PathBuf> {
    let dir = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/corpora");
    dir.is_dir().then_some(dir)
}

/// Reports a test that cannot run here: a `SKIPPED` line, and one line in the file named by
/// `SENSOR_SKIP_LOG` (set by `cargo xtask test`), which counts it as skipped, not passed, in
/// the closing summary.
pub fn skip(test: &str, reason: &str) {
    eprintln!("SKIPPED {test}: {reason}");
    if let Ok(path) = std::env::var("SENSOR_SKIP_LOG") {
        use std::io::Write as _;
        if let Ok(mut f) = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
        {
            let _ignored = writeln!(f, "{test}: {reason}");
        }
    }
}

/// Whether kernel tests must run rather than skip (set by `cargo xtask test` in CI).
pub fn kernel_tests_required() -> bool {
    std::env::var("SENSOR_REQUIRE_KERNEL_TESTS").is_ok_and(|v| v == "1")
}

/// Loads the sensor program, or returns `None` with a message where this machine cannot (no
/// root/CAP_BPF, no BTF). Panics instead when kernel tests are required.
pub fn load_or_skip(test: &str, sizes: KernelConfig) -> Option<SensorProgram> {
    match SensorProgram::load(sizes) {
        Ok(p) => Some(p),
        Err(e @ (KernelError::Program { .. } | KernelError::Load(_)))
            if !kernel_tests_required() =>
        {
            skip(
                test,
                &format!("cannot load the XDP program here ({e}); run as root with CAP_BPF"),
            );
            None
        }
        Err(e) => panic!("{test}: loading the XDP program failed: {e}"),
    }
}

/// Small maps so that each test's object loads fast and map-full cases are reachable.
pub const TEST_SIZES: KernelConfig = KernelConfig {
    flows: 1024,
    hosts: 1024,
    coarse_time: false,
    cache_slots: sensor_common::DEFAULT_CACHE_SLOTS,
    block_entries: 1024,
    rate_entries: 64,
    watch_entries: 64,
    evidence_ring: 1 << 16,
};

/// Runs one frame through the sensor with `BPF_PROG_TEST_RUN` and returns the XDP action.
pub fn run(prog: &mut SensorProgram, frame: &[u8]) -> u32 {
    let xdp = prog.xdp().expect("sensor program present");
    xdp.test_run(TestRunOptions {
        data_in: Some(frame),
        ..TestRunOptions::default()
    })
    .unwrap_or_else(|e| {
        panic!(
            "BPF_PROG_TEST_RUN on a {}-byte frame failed: {e}",
            frame.len()
        )
    })
    .return_value
}

/// `XDP_PASS`, the only verdict a passive sensor may return.
pub const XDP_PASS: u32 = 2;

/// Keeps the sensor program in the kernel's XDP dispatcher while the guard lives, so each
/// `BPF_PROG_TEST_RUN` call does not wait for an RCU grace period (milliseconds) to add and
/// remove it: attaches it in driver mode to a veth that is down, in a private namespace.
pub struct Dispatcher {
    // Leaving the namespace destroys the veth, which detaches the program.
    _ns: aya::test_helpers::NetNsGuard,
}

pub fn with_dispatcher(prog: &mut SensorProgram) -> Dispatcher {
    // Let `ip netns` set up /run/netns first (see netns::VethPair::create).
    drop(netns::PeerNs::create());
    let ns =
        aya::test_helpers::NetNsGuard::new().expect("private namespace for the dispatcher veth");
    netns::sh(&[
        "ip", "link", "add", "disp0", "type", "veth", "peer", "name", "disp1",
    ]);
    prog.xdp()
        .expect("sensor program")
        .attach("disp0", aya::programs::XdpMode::Driver)
        .expect("attach to the dispatcher veth");
    Dispatcher { _ns: ns }
}

/// A `sensor::api` server on 127.0.0.1:0 in a thread of its own; dropping it shuts the server
/// down gracefully and waits for it.
pub struct TestServer {
    pub addr: std::net::SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl TestServer {
    pub fn start(state: sensor::api::Shared) -> Self {
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let (addr_tx, addr_rx) = std::sync::mpsc::channel();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async move {
                let l = tokio::net::TcpListener::bind("127.0.0.1:0")
                    .await
                    .expect("bind port 0");
                addr_tx
                    .send(l.local_addr().expect("addr"))
                    .expect("send addr");
                sensor::api::serve(l, state, async move {
                    let _ignored = stop_rx.await;
                })
                .await
                .expect("serve");
            });
        });
        let addr = addr_rx.recv().expect("server address");
        Self {
            addr,
            stop: Some(stop_tx),
            thread: Some(thread),
        }
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ignored = s.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ignored = t.join();
        }
    }
}

/// A blocking HTTP client for tests: (status, body) of one request, any status accepted.
pub fn http(
    addr: std::net::SocketAddr,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<&str>,
) -> (u16, String) {
    try_http(addr, method, path, token, body)
        .unwrap_or_else(|e| panic!("{method} http://{addr}{path}: {e}"))
}

/// As [`http`], but an unreachable server is an error, not a panic (waiting for start-up).
pub fn try_http(
    addr: std::net::SocketAddr,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<&str>,
) -> Result<(u16, String), ureq::Error> {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(std::time::Duration::from_secs(30)))
        .build()
        .into();
    let url = format!("http://{addr}{path}");
    let auth = token.map(|t| format!("Bearer {t}"));
    let mut resp = match method {
        "GET" => {
            let mut r = agent.get(&url);
            if let Some(a) = &auth {
                r = r.header("Authorization", a);
            }
            r.call()?
        }
        "POST" | "PUT" | "DELETE" => {
            let mut r = match method {
                "POST" => agent.post(&url),
                "PUT" => agent.put(&url),
                _ => agent.delete(&url).force_send_body(),
            };
            if let Some(a) = &auth {
                r = r.header("Authorization", a);
            }
            match body {
                Some(b) => r.header("Content-Type", "application/json").send(b)?,
                None => r.send_empty()?,
            }
        }
        other => panic!("test client: unsupported method {other}"),
    };
    let status = resp.status().as_u16();
    let text = resp.body_mut().read_to_string()?;
    Ok((status, text))
}

/// GET `path` as JSON, asserting 200.
pub fn get_json(addr: std::net::SocketAddr, path: &str) -> serde_json::Value {
    let (code, body) = http(addr, "GET", path, None, None);
    assert_eq!(code, 200, "GET {path}: {body}");
    serde_json::from_str(&body).unwrap_or_else(|e| panic!("GET {path}: not JSON ({e}): {body}"))
}

/// Finished flows' records, as a pipeline sink sees them (a replay's flows with their scores,
/// read after the replay: hand it over as `Box::new(&mut sink)`).
#[derive(Default)]
pub struct FlowRecords(pub Vec<sensor::record::FlowRecord>);

impl sensor::sink::Sink for FlowRecords {
    fn wants_flows(&self) -> bool {
        true
    }
    fn flow(
        &mut self,
        rec: &sensor::record::FlowRecord,
        _: u64,
    ) -> Result<(), sensor::sink::SinkError> {
        self.0.push(rec.clone());
        Ok(())
    }
}

/// `GET path` with the token: status, content type and the body's bytes (downloads).
pub fn get_bytes(addr: std::net::SocketAddr, path: &str, token: &str) -> (u16, String, Vec<u8>) {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(std::time::Duration::from_secs(30)))
        .build()
        .into();
    let mut resp = agent
        .get(format!("http://{addr}{path}"))
        .header("Authorization", format!("Bearer {token}"))
        .call()
        .unwrap_or_else(|e| panic!("GET http://{addr}{path}: {e}"));
    let ctype = resp
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    let body = resp
        .body_mut()
        .with_config()
        .limit(256 << 20)
        .read_to_vec()
        .unwrap_or_else(|e| panic!("GET {path}: body: {e}"));
    (resp.status().as_u16(), ctype, body)
}

/// What tshark reads from a capture file: one line per packet with `fields` tab-separated.
/// `None` (the test skips) where tshark is missing and kernel tests are not required.
pub fn tshark_fields(file: &std::path::Path, fields: &[&str]) -> Option<Vec<String>> {
    if !std::path::Path::new("/usr/bin/tshark").exists() {
        assert!(
            !kernel_tests_required(),
            "tshark missing (cargo xtask setup installs it)"
        );
        skip("evidence read back with tshark", "no tshark");
        return None;
    }
    let mut cmd = std::process::Command::new("tshark");
    cmd.arg("-n").arg("-r").arg(file).args(["-T", "fields"]);
    for f in fields {
        cmd.args(["-e", f]);
    }
    let out = cmd.output().expect("run tshark");
    assert!(
        out.status.success(),
        "tshark -r {} failed: {}",
        file.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    Some(
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(str::to_owned)
            .collect(),
    )
}
