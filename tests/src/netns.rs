//! Network namespaces and veth pairs for tests that send real traffic.
//!
//! The test thread enters a fresh namespace (aya's `NetNsGuard`) that holds one end of a veth
//! pair; the other end lives in a peer namespace made with `ip netns`. Both go away on drop,
//! also when the test panics, and names carry the pid and a counter so runs never collide.

use std::{
    fs::File,
    net::{Ipv4Addr, UdpSocket},
    process::Command,
    sync::atomic::{AtomicU32, Ordering},
};

use aya::test_helpers::NetNsGuard;
use nix::sched::{CloneFlags, setns};

/// Runs a command and panics with its output if it fails.
pub fn sh(args: &[&str]) -> String {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .unwrap_or_else(|e| panic!("cannot run {args:?}: {e}"));
    assert!(
        out.status.success(),
        "{args:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A namespace created with `ip netns add`, deleted on drop.
pub struct PeerNs {
    pub name: String,
}

impl PeerNs {
    pub fn create() -> Self {
        static N: AtomicU32 = AtomicU32::new(0);
        let name = format!(
            "sensor-peer-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        );
        sh(&["ip", "netns", "add", &name]);
        Self { name }
    }

    /// Runs `args` inside this namespace.
    pub fn exec(&self, args: &[&str]) -> String {
        let mut full = vec!["ip", "netns", "exec", &self.name];
        full.extend_from_slice(args);
        sh(&full)
    }

    /// Sends `count` UDP datagrams of `payload` bytes from inside this namespace.
    pub fn send_udp(
        &self,
        from: Ipv4Addr,
        to: Ipv4Addr,
        sport: u16,
        dport: u16,
        count: usize,
        payload: usize,
    ) {
        let path = format!("/var/run/netns/{}", self.name);
        std::thread::scope(|s| {
            s.spawn(|| {
                let ns = File::open(&path).unwrap_or_else(|e| panic!("open {path}: {e}"));
                setns(ns, CloneFlags::CLONE_NEWNET).expect("setns into the peer namespace");
                let sock = UdpSocket::bind((from, sport)).expect("bind UDP in peer namespace");
                let buf = vec![0x5au8; payload];
                for _ in 0..count {
                    sock.send_to(&buf, (to, dport))
                        .expect("send UDP from peer namespace");
                }
            })
            .join()
            .expect("sender thread panicked");
        });
    }
}

impl Drop for PeerNs {
    fn drop(&mut self) {
        let _ignored = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

/// The test thread in its own namespace with `local` (10.203.0.1/24) whose veth peer
/// (10.203.0.2/24) sits in `peer`.
pub struct VethPair {
    pub peer: PeerNs,
    pub local: &'static str,
    pub local_addr: Ipv4Addr,
    pub peer_addr: Ipv4Addr,
    // Dropped last: leaving the namespace destroys the veth and anything attached to it.
    _guard: NetNsGuard,
}

impl VethPair {
    pub fn create() -> Self {
        // `ip netns add` first: on a fresh machine it turns /run/netns into a shared bind mount,
        // which would hide (and make unremovable) a namespace NetNsGuard had mounted before.
        let peer = PeerNs::create();
        let guard = NetNsGuard::new().expect("create and enter a test network namespace");
        let local = "sxdp0";
        sh(&[
            "ip", "link", "add", local, "type", "veth", "peer", "name", "sxdp1", "netns",
            &peer.name,
        ]);
        sh(&["ip", "addr", "add", "10.203.0.1/24", "dev", local]);
        sh(&["ip", "link", "set", local, "up"]);
        peer.exec(&["ip", "addr", "add", "10.203.0.2/24", "dev", "sxdp1"]);
        peer.exec(&["ip", "link", "set", "sxdp1", "up"]);
        peer.exec(&["ip", "link", "set", "lo", "up"]);
        Self {
            peer,
            local,
            local_addr: Ipv4Addr::new(10, 203, 0, 1),
            peer_addr: Ipv4Addr::new(10, 203, 0, 2),
            _guard: guard,
        }
    }
}

impl VethPair {
    /// A real nmap SYN scan of `ports` (e.g. "1-200") from the peer to the local side.
    pub fn syn_scan(&self, ports: &str) {
        self.peer.exec(&[
            "nmap",
            "-n",
            "-Pn",
            "-sS",
            "-p",
            ports,
            "-T4",
            &self.local_addr.to_string(),
        ]);
    }
}

/// Whether nmap is installed; where kernel tests must run, its absence fails the test.
pub fn have_nmap(test: &str) -> bool {
    if std::path::Path::new("/usr/bin/nmap").exists() {
        return true;
    }
    assert!(
        !crate::kernel_tests_required(),
        "nmap missing (cargo xtask setup installs it)"
    );
    crate::skip(test, "no nmap");
    false
}
