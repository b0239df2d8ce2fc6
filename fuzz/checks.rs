//! What each fuzz target asserts about one input. Shared by the libFuzzer targets
//! (`fuzz_targets/*.rs`, nightly) and by `tests/tests/fuzz_regressions.rs`, which replays the
//! kept inputs of `fuzz/regressions/` on stable in every `cargo xtask test`.

use std::{path::Path, sync::OnceLock, time::Duration};

use sensor::{
    api::{ApiState, router},
    config::Config,
    detect::ml::{features::N_FEATURES, model::Model},
    drive::replay::{ReplayOptions, replay},
    packet::Outcome,
    source::pcap::LinkLayer,
};
use sensor_common::{family, proto};

const LINKS: [LinkLayer; 6] = [
    LinkLayer::Ethernet,
    LinkLayer::LinuxSll,
    LinkLayer::LinuxSll2,
    LinkLayer::RawIp,
    LinkLayer::Null { big_endian: false },
    LinkLayer::Null { big_endian: true },
];

/// The userspace packet parser on every link layer the pcap fallback reads: never a panic,
/// and what it keys follows the kernel's conventions (ports only where the protocol has
/// them, none on later fragments, ICMP type/code in the destination port, IPv4 v4-mapped).
pub fn packet(data: &[u8]) {
    for link in LINKS {
        let Outcome::Flow(p) = link.parse(data) else {
            continue;
        };
        let k = p.key;
        let v4_mapped = k.src_addr[..12] == [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff]
            && k.dst_addr[..12] == k.src_addr[..12];
        match k.family {
            family::ARP => assert!(
                v4_mapped && k.proto == 0 && k.src_port == 0,
                "{link:?}: {p:?}"
            ),
            family::IPV4 => assert!(v4_mapped, "{link:?}: IPv4 key not v4-mapped: {p:?}"),
            family::IPV6 => {}
            f => panic!("{link:?}: family {f} keyed"),
        }
        if k.family == family::ARP {
            continue;
        }
        let ported = !p.fragment && matches!(k.proto, proto::TCP | proto::UDP);
        let icmp = !p.fragment && matches!(k.proto, proto::ICMP | proto::ICMPV6);
        if !ported {
            assert_eq!(k.src_port, 0, "{link:?}: source port on {p:?}");
        }
        if !ported && !icmp {
            assert_eq!(k.dst_port, 0, "{link:?}: destination port on {p:?}");
        }
        if k.proto != proto::TCP || p.fragment {
            assert_eq!(p.tcp_flags, 0, "{link:?}: TCP flags on {p:?}");
        }
        assert!(!p.echo || icmp, "{link:?}: echo on {p:?}");
    }
}

fn scratch_file() -> &'static Path {
    static P: OnceLock<std::path::PathBuf> = OnceLock::new();
    // libpcap reads files only: one file per process, in memory-backed /dev/shm if present.
    P.get_or_init(|| {
        let dir = if Path::new("/dev/shm").is_dir() {
            std::path::PathBuf::from("/dev/shm")
        } else {
            std::env::temp_dir()
        };
        dir.join(format!("sensor-fuzz-{}.pcap", std::process::id()))
    })
}

/// The pcap/pcapng entry of `sensor replay`: any file is replayed through libpcap, the link
/// layer parser, the flow table and the rules, or refused with an error, never a panic;
/// every packet read is counted in exactly one class.
pub fn pcap(data: &[u8]) {
    let p = scratch_file();
    std::fs::write(p, data).expect("write the input file");
    let Ok(s) = replay(
        &[p.to_path_buf()],
        ReplayOptions::new(&Config::default()),
        Vec::new(),
    ) else {
        return;
    };
    let r = &s.read;
    assert_eq!(
        r.flow_packets + r.non_ip + r.parse_errors,
        r.packets,
        "packets not classed exactly once: {r:?}"
    );
    assert!(
        s.flows <= r.flow_packets,
        "{} flows from {} packets",
        s.flows,
        r.flow_packets
    );
}

/// The TOML config: any text is a config or a `ConfigError`, never a panic; what is
/// accepted survives a write and re-read unchanged.
pub fn config(data: &[u8]) {
    // `Config::load` reads the file as UTF-8 first; other bytes are a read error there.
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(cfg) = Config::from_toml(text, Path::new("fuzz.toml")) else {
        return;
    };
    // What the sensor derives from a config must not panic either.
    let _derived = (cfg.flow.table(), cfg.model.forest(), cfg.model.volume());
    let again = toml::to_string(&cfg).expect("an accepted config serialises");
    let back = Config::from_toml(&again, Path::new("fuzz.toml"))
        .unwrap_or_else(|e| panic!("re-reading an accepted config failed: {e}\n{again}"));
    assert_eq!(back, cfg, "config changed in a write and re-read:\n{again}");
}

/// The model-file loader: any bytes are a model or a `ModelError`; what is accepted scores
/// any feature vector (zeros, huge, negative, NaN) without a panic or an endless walk, and
/// finite features score a number in [0, 1].
pub fn model(data: &[u8]) {
    let Ok(m) = Model::from_slice(data, Path::new("fuzz.model.json")) else {
        return;
    };
    for v in [0.0, 1.0, -1e300, 1e300, f64::NAN, f64::INFINITY] {
        let verdict = m.judge(&[v; N_FEATURES]);
        if v.is_finite() {
            assert!(
                (0.0..=1.0).contains(&verdict.score),
                "score {} for features all {v}",
                verdict.score
            );
        }
    }
}

/// The token the seeds carry, so inputs get past the auth check.
pub const TOKEN: &str = "fuzz-token-0123456789";

struct World {
    rt: tokio::runtime::Runtime,
    app: axum::Router,
}

fn world() -> &'static World {
    static W: OnceLock<World> = OnceLock::new();
    W.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("sensor-fuzz-api-{}", std::process::id()));
        let _gone = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("data dir");
        let db = dir.join("sensor.db");
        drop(sensor::sink::store::open_rw(&db).expect("database"));
        let state = ApiState::read_only(db, dir, TOKEN.into());
        World {
            rt: tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime"),
            app: router(std::sync::Arc::new(state)),
        }
    })
}

/// The API's request parsing: raw bytes on a connection go through hyper's HTTP/1.1 parser
/// and the router (auth, paths, query strings, JSON bodies, limits) over a real database;
/// the answer is an HTTP response within 10 s, never a panic or a 500.
pub fn api(data: &[u8]) {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let w = world();
    w.rt.block_on(async {
        let (mut client, server) = tokio::io::duplex(1 << 16);
        let service = hyper_util::service::TowerToHyperService::new(w.app.clone());
        let conn = tokio::spawn(async move {
            let _closed = hyper::server::conn::http1::Builder::new()
                .serve_connection(hyper_util::rt::TokioIo::new(server), service)
                .await;
        });
        let _ignored = client.write_all(data).await;
        let _ignored = client.shutdown().await;
        // The head of the first answer (event streams never end: stop there).
        let mut head = Vec::new();
        let mut buf = [0u8; 4096];
        let read = tokio::time::timeout(Duration::from_secs(10), async {
            while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                match client.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => head.extend_from_slice(&buf[..n]),
                }
            }
        })
        .await;
        assert!(
            read.is_ok(),
            "no answer within 10 s to {:?}",
            String::from_utf8_lossy(data)
        );
        assert!(
            !head.starts_with(b"HTTP/1.1 500"),
            "500 for {:?}",
            String::from_utf8_lossy(data)
        );
        drop(client);
        conn.abort();
    });
}
