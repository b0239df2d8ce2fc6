//! `cargo xtask corpus-check`: flow totals of `sensor replay` against nDPI's per-flow oracle.
//!
//! For every capture in `../shared/corpora/ndpi/pcap` with a `result/<name>.out`, packets and
//! bytes per canonical TCP/UDP 5-tuple (both directions, all of nDPI's splits summed) must
//! match. Mismatches are listed with a reason; kinds documented in docs/CORPUS.md are
//! expected, anything else fails the check.

use std::{
    collections::{BTreeMap, HashMap},
    fs,
    net::IpAddr,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, Result, bail};
use regex::Regex;

/// (proto, lower endpoint, higher endpoint).
type Tuple = (u8, (IpAddr, u16), (IpAddr, u16));

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Totals {
    packets: u64,
    bytes: u64,
}

fn canonical(proto: u8, a: (IpAddr, u16), b: (IpAddr, u16)) -> Tuple {
    if a <= b { (proto, a, b) } else { (proto, b, a) }
}

fn parse_endpoint(s: &str) -> Option<(IpAddr, u16)> {
    let (ip, port) = s.rsplit_once(':')?;
    let ip = ip.trim_start_matches('[').trim_end_matches(']');
    Some((ip.parse().ok()?, port.parse().ok()?))
}

/// nDPI's flow list: `N  TCP a:p <-> b:q [...][X pkts/Y bytes <-> Z pkts/W bytes]...`.
fn ndpi_flows(out: &Path) -> Result<BTreeMap<Tuple, Totals>> {
    let text = String::from_utf8_lossy(
        &fs::read(out).with_context(|| format!("reading {}", out.display()))?,
    )
    .into_owned();
    let line_re = Regex::new(r"^\s*\d+\s+(TCP|UDP) (\S+) <?-> (\S+) ")?;
    let count_re = Regex::new(r"\[(\d+) pkts/(\d+) bytes <?-> (\d+) pkts/(\d+) bytes\]")?;
    let mut flows = BTreeMap::new();
    for line in text.lines() {
        let Some(m) = line_re.captures(line) else {
            continue;
        };
        let Some(c) = count_re.captures(line) else {
            continue;
        };
        let proto = if &m[1] == "TCP" { 6 } else { 17 };
        let (Some(a), Some(b)) = (parse_endpoint(&m[2]), parse_endpoint(&m[3])) else {
            continue;
        };
        let n = |i: usize| c[i].parse::<u64>().unwrap_or(0);
        let t: &mut Totals = flows.entry(canonical(proto, a, b)).or_default();
        t.packets += n(1) + n(3);
        t.bytes += n(2) + n(4);
    }
    Ok(flows)
}

/// What the sensor made of one file.
struct SensorView {
    flows: BTreeMap<Tuple, Totals>,
    /// It saw tunnel protocols/ports that nDPI opens.
    tunnel: bool,
    non_ip: u64,
    unparsable: u64,
}

const TUNNEL_PORTS: [u16; 8] = [2152, 2123, 4789, 37008, 5246, 5247, 6081, 4500];

/// A number in the replay summary such as "12 non-IP".
fn summary_count(stderr: &str, label: &str) -> u64 {
    let Some(i) = stderr.find(label) else {
        return 0;
    };
    stderr[..i]
        .split_whitespace()
        .last()
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

/// The sensor's flows for one file; `Err` with its message when it refused the file.
fn sensor_flows(sensor: &Path, pcap: &Path, tmp: &Path) -> Result<Result<SensorView, String>> {
    let out = Command::new(sensor)
        .arg("replay")
        .arg("--no-db")
        .arg(pcap)
        .arg("--flows-jsonl")
        .arg(tmp)
        .output()
        .context("running sensor replay")?;
    if !out.status.success() {
        return Ok(Err(String::from_utf8_lossy(&out.stderr).trim().to_owned()));
    }
    let mut flows = BTreeMap::new();
    let mut tunnel = false;
    for line in fs::read_to_string(tmp)?.lines() {
        let v: serde_json::Value =
            serde_json::from_str(line).context("sensor wrote invalid JSON")?;
        let proto = v["proto"].as_u64().unwrap_or(0) as u8;
        let port = |k: &str| v[k].as_u64().unwrap_or(0) as u16;
        // Encapsulations nDPI opens and the sensor (like the XDP program) keys by outer header.
        if matches!(proto, 4 | 41 | 47 | 50)
            || (proto == 17
                && TUNNEL_PORTS
                    .iter()
                    .any(|p| port("src_port") == *p || port("dst_port") == *p))
        {
            tunnel = true;
        }
        if proto != 6 && proto != 17 {
            continue;
        }
        let ip = |k: &str| v[k].as_str().and_then(|s| s.parse::<IpAddr>().ok());
        let (Some(s), Some(d)) = (ip("src_ip"), ip("dst_ip")) else {
            continue;
        };
        let t: &mut Totals = flows
            .entry(canonical(
                proto,
                (s, port("src_port")),
                (d, port("dst_port")),
            ))
            .or_default();
        t.packets +=
            v["packets_fwd"].as_u64().unwrap_or(0) + v["packets_rev"].as_u64().unwrap_or(0);
        t.bytes += v["bytes_fwd"].as_u64().unwrap_or(0) + v["bytes_rev"].as_u64().unwrap_or(0);
    }
    let stderr = String::from_utf8_lossy(&out.stderr);
    Ok(Ok(SensorView {
        flows,
        tunnel,
        non_ip: summary_count(&stderr, " non-IP"),
        unparsable: summary_count(&stderr, " unparsable"),
    }))
}

pub fn corpus_check(sensor: &Path, corpora: &Path) -> Result<()> {
    let pcaps = corpora.join("ndpi/pcap");
    let results = corpora.join("ndpi/result");
    if !pcaps.is_dir() {
        println!("corpus-check: SKIPPED: {} is absent", pcaps.display());
        return Ok(());
    }
    let mut files: Vec<PathBuf> = fs::read_dir(&pcaps)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    files.sort();
    let tmp = std::env::temp_dir().join(format!("sensor-corpus-{}.jsonl", std::process::id()));
    let (mut compared_files, mut compared, mut matched) = (0, 0u64, 0u64);
    let mut kinds: BTreeMap<&str, u64> = BTreeMap::new();
    let mut unreadable = Vec::new();
    let mut rows = Vec::new();
    for pcap in &files {
        let name = pcap
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default();
        let oracle = results.join(format!("{name}.out"));
        if !oracle.is_file() {
            continue;
        }
        let expected = ndpi_flows(&oracle)?;
        let view = match sensor_flows(sensor, pcap, &tmp)? {
            Ok(x) => x,
            Err(msg) => {
                unreadable.push((name.to_owned(), msg));
                continue;
            }
        };
        compared_files += 1;
        let got_by_tuple: HashMap<&Tuple, &Totals> = view.flows.iter().collect();
        for (tuple, want) in &expected {
            compared += 1;
            let tunnel_port = tuple.0 == 17
                && TUNNEL_PORTS
                    .iter()
                    .any(|p| tuple.1.1 == *p || tuple.2.1 == *p);
            let kind = match got_by_tuple.get(tuple) {
                Some(have) if *have == want => {
                    matched += 1;
                    continue;
                }
                // nDPI counts the inner flows of tunnels it decapsulates, not the outer one.
                None if view.tunnel => KIND_TUNNEL,
                Some(_) if tunnel_port => KIND_TUNNEL,
                None if view.non_ip > 0 => KIND_LINK,
                None if view.unparsable > 0 => KIND_MALFORMED_MISSING,
                None => "missing in sensor",
                Some(have) if have.packets > want.packets => KIND_MORE,
                Some(have) if have.packets < want.packets => "sensor counts fewer packets",
                Some(have) if have.bytes > want.bytes => KIND_TRAILER,
                Some(_) => "same packets, fewer bytes in sensor",
            };
            *kinds.entry(kind).or_default() += 1;
            let have = got_by_tuple
                .get(tuple)
                .copied()
                .copied()
                .unwrap_or_default();
            rows.push(format!(
                "{name:40} {:>3} {}:{} <-> {}:{}  ndpi {}/{}  sensor {}/{}  {kind}",
                tuple.0,
                tuple.1.0,
                tuple.1.1,
                tuple.2.0,
                tuple.2.1,
                want.packets,
                want.bytes,
                have.packets,
                have.bytes
            ));
        }
    }
    let _ignored = fs::remove_file(&tmp);
    for r in &rows {
        println!("{r}");
    }
    for (f, msg) in &unreadable {
        println!("unreadable: {f}: {msg}");
    }
    println!("mismatches by kind:");
    for (k, n) in &kinds {
        println!("  {n:6}  {k}");
    }
    let unexplained: u64 = kinds
        .iter()
        .filter(|(k, _)| !EXPLAINED.iter().any(|e| k.starts_with(e)))
        .map(|(_, n)| n)
        .sum();
    println!(
        "corpus-check: {compared_files} captures, {compared} nDPI TCP/UDP flows compared, {matched} identical, {} \
         mismatching ({unexplained} unexplained), {} unreadable",
        compared - matched,
        unreadable.len()
    );
    if unexplained > 0 {
        bail!("{unexplained} flows mismatch nDPI for reasons docs/CORPUS.md does not explain");
    }
    Ok(())
}

const KIND_TUNNEL: &str = "tunnel: nDPI counts the decapsulated inner flows";
const KIND_LINK: &str = "encapsulation the sensor does not parse (file has non-IP frames)";
const KIND_MALFORMED_MISSING: &str = "malformed: nDPI keys a packet the sensor cannot parse";
const KIND_MORE: &str = "malformed: nDPI discards packets the sensor counts";
const KIND_TRAILER: &str = "bytes: sensor counts Ethernet trailer/padding";

/// Mismatch kinds documented in docs/CORPUS.md.
const EXPLAINED: &[&str] = &[
    KIND_TUNNEL,
    KIND_LINK,
    KIND_MALFORMED_MISSING,
    KIND_MORE,
    KIND_TRAILER,
];
