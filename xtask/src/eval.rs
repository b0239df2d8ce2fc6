//! `cargo xtask eval`: detection quality on real captures with known ground truth.
//!
//! Attack captures must raise an alert of the right kind with the right attacker and victim;
//! benign captures must raise no attack alert (traffic spikes and model anomalies are not
//! attack verdicts and are reported, not counted). Ground truth is
//! `../shared/corpora/README.md`; the table below transcribes it.

use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, Result, bail};

/// (file under the corpora, kind, attacker, victim); `None` = not checked (many or n/a).
const ATTACKS: &[(&str, &str, Option<&str>, Option<&str>)] = &[
    (
        "generated/nmap_sS_top1000.pcap",
        "port_scan",
        Some("10.99.0.1"),
        Some("10.99.0.2"),
    ),
    (
        "generated/nmap_sT_connect.pcap",
        "port_scan",
        Some("10.99.0.1"),
        Some("10.99.0.2"),
    ),
    (
        "generated/nmap_sU_udp100.pcap",
        "port_scan",
        Some("10.99.0.1"),
        Some("10.99.0.2"),
    ),
    (
        "generated/nmap_sn_sweep_arp.pcap",
        "host_sweep",
        Some("10.99.0.1"),
        None,
    ),
    (
        "generated/nmap_sn_sweep_ip.pcap",
        "host_sweep",
        Some("10.99.0.1"),
        None,
    ),
    (
        "generated/hping3_synflood_20k.pcap",
        "syn_flood",
        Some("10.99.0.1"),
        Some("10.99.0.2"),
    ),
    (
        "generated/hping3_udpflood_20k.pcap",
        "udp_flood",
        Some("10.99.0.1"),
        Some("10.99.0.2"),
    ),
    (
        "generated/hping3_icmpflood_20k.pcap",
        "icmp_flood",
        Some("10.99.0.1"),
        Some("10.99.0.2"),
    ),
    (
        "suricata-verify/firewall/tcp-session-syn-flood-drop-precedence/input.pcap",
        "syn_flood",
        Some("192.0.2.10"),
        Some("198.51.100.5"),
    ),
    (
        "suricata-verify/dhcp-request-flood/test.pcap",
        "udp_flood",
        Some("0.0.0.0"),
        Some("255.255.255.255"),
    ),
];

/// Benign captures named one by one; every zeek and nDPI capture is benign as well.
const BENIGN: &[&str] = &[
    "generated/benign_http_200req.pcap",
    "generated/iperf3_tcp_3s_20k.pcap",
    "suricata-verify/bug-4376/syn_retransmit_with_ts.pcap",
    "suricata-verify/detection_filter-distinct-dstport/input.pcap",
    "suricata-verify/detection_filter-distinct-srcport/input.pcap",
];

/// Kinds that are a verdict of attack.
const ATTACK_KINDS: &[&str] = &[
    "port_scan",
    "host_sweep",
    "syn_flood",
    "udp_flood",
    "icmp_flood",
    "ddos",
];

struct Seen {
    kind: String,
    src: Option<String>,
    dst: Option<String>,
}

fn alerts(sensor: &Path, pcap: &Path, tmp: &Path) -> Result<Vec<Seen>> {
    let out = Command::new(sensor)
        .arg("replay")
        .arg("--no-db")
        .arg(pcap)
        .arg("--alerts-jsonl")
        .arg(tmp)
        .output()
        .context("running sensor replay")?;
    if !out.status.success() {
        // Unreadable captures (unsupported link types) have nothing to detect.
        return Ok(Vec::new());
    }
    let mut v = Vec::new();
    for line in fs::read_to_string(tmp)?.lines() {
        let a: serde_json::Value = serde_json::from_str(line).context("alert JSON")?;
        let s = |k: &str| a[k].as_str().map(str::to_owned);
        v.push(Seen {
            kind: s("kind").unwrap_or_default(),
            src: s("src_ip"),
            dst: s("dst_ip"),
        });
    }
    Ok(v)
}

fn kinds(v: &[Seen]) -> String {
    let mut k: Vec<&str> = v.iter().map(|a| a.kind.as_str()).collect();
    k.sort_unstable();
    k.dedup();
    if k.is_empty() {
        "-".into()
    } else {
        k.join(",")
    }
}

pub fn eval(sensor: &Path, corpora: &Path) -> Result<()> {
    if !corpora.is_dir() {
        println!("eval: SKIPPED: {} is absent", corpora.display());
        return Ok(());
    }
    let tmp = std::env::temp_dir().join(format!("sensor-eval-{}.jsonl", std::process::id()));
    let (mut detected, mut attacks) = (0, 0);
    println!("{:70} {:12} detected", "attack capture", "expected");
    for (file, kind, src, dst) in ATTACKS {
        let path = corpora.join(file);
        if !path.is_file() {
            continue;
        }
        attacks += 1;
        let seen = alerts(sensor, &path, &tmp)?;
        let hit = seen.iter().any(|a| {
            a.kind == *kind
                && src.is_none_or(|s| a.src.as_deref() == Some(s))
                && dst.is_none_or(|d| a.dst.as_deref() == Some(d))
        });
        detected += usize::from(hit);
        println!(
            "{file:70} {kind:12} {} {}",
            kinds(&seen),
            if hit {
                "ok"
            } else {
                "MISSED (kind, attacker or victim)"
            }
        );
    }

    let mut benign: Vec<PathBuf> = BENIGN
        .iter()
        .map(|f| corpora.join(f))
        .filter(|p| p.is_file())
        .collect();
    for dir in ["zeek", "ndpi/pcap"] {
        if let Ok(rd) = fs::read_dir(corpora.join(dir)) {
            let mut files: Vec<PathBuf> = rd.filter_map(|e| e.ok().map(|e| e.path())).collect();
            files.sort();
            benign.extend(files);
        }
    }
    let mut false_alerts = 0;
    let mut other = 0;
    for path in &benign {
        let seen = alerts(sensor, path, &tmp)?;
        let bad: Vec<&Seen> = seen
            .iter()
            .filter(|a| ATTACK_KINDS.contains(&a.kind.as_str()))
            .collect();
        other += seen.len() - bad.len();
        if !bad.is_empty() {
            false_alerts += bad.len();
            for a in bad {
                println!(
                    "FALSE ALERT on benign {}: {} {:?} -> {:?}",
                    path.display(),
                    a.kind,
                    a.src,
                    a.dst
                );
            }
        }
    }
    let _ignored = fs::remove_file(&tmp);
    println!(
        "benign captures: {} ({other} non-attack alerts: traffic spikes, model anomalies)",
        benign.len()
    );
    println!(
        "eval: detected {detected}/{attacks} attack captures, false alerts {false_alerts} on {} benign captures",
        benign.len()
    );
    if detected < attacks || false_alerts > 0 {
        bail!("detection quality below the bar");
    }
    Ok(())
}
